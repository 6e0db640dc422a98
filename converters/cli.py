"""edge-convert: Keras / SavedModel / float ONNX in; validated int8 TFLite and int8 ONNX out."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from edge_runtime.manifest import RESIZE_FILTERS, RESIZE_MODES, TARGETS

from .onnx_quant import METHODS, MSE

EXAMPLES = """examples:
  edge-convert model.keras --out out/ --calibration images/ --eval eval_images/
  edge-convert kws_step.keras --out kws/ --calibration utterances.npz --activations int16 --format tflite
  edge-convert model.onnx --out out/ --calibration calib.npz --target jetson

exit codes: 0 converted; 2 bad input (message names the file or flag); 3 int8 lost more
accuracy than --max-accuracy-drop (report written, no model); 130 interrupted (SIGINT), 143
terminated (SIGTERM): nothing written, temporary files removed."""


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT, so the same cleanup runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like every other bad input
        self.exit(2, f"edge-convert: error: {message}; see edge-convert --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="edge-convert", description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("source", type=Path, help=".keras, legacy .h5, SavedModel folder or float .onnx")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="artifact folder to write (created; replaced if it is an earlier output)",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        required=True,
        metavar="DATA",
        help="folder of images / WAV files (class sub-folders = labels) or .npz of input tensors",
    )
    p.add_argument("--eval", type=Path, metavar="DATA", help="evaluation data (default: the calibration data)")
    p.add_argument("--labels", type=Path, metavar="FILE", help="text file, one label per output, in output order")
    p.add_argument(
        "--format",
        nargs="+",
        choices=["tflite", "onnx"],
        dest="formats",
        help="artifacts to make (default by target: generic both, rpi/coral/android tflite, jetson onnx)",
    )
    p.add_argument("--target", choices=TARGETS, default="generic")
    p.add_argument(
        "--size", nargs=2, type=int, metavar=("H", "W"), help="image input size (rebuilds a convolutional model)"
    )
    p.add_argument("--resize", choices=RESIZE_MODES, default="squash", help="how images are fitted to the input size")
    p.add_argument(
        "--resize-filter",
        choices=RESIZE_FILTERS,
        default="area",
        help="how images are resampled when shrinking: area (no aliasing) or bilinear (faster on the board; "
        "what tf.image.resize does). Calibration and the board use the same one",
    )
    p.add_argument(
        "--mean", nargs="+", type=float, default=[127.5], help="pixel mean, one or three values (0..255 scale)"
    )
    p.add_argument(
        "--std", nargs="+", type=float, default=[127.5], help="pixel std, one or three values (0..255 scale)"
    )
    p.add_argument("--channel-order", choices=["RGB", "BGR"], default="RGB")
    p.add_argument(
        "--calibration-method",
        choices=["auto", *METHODS, MSE],
        default="auto",
        help="ONNX calibration: ONNX Runtime's methods, or mse (each activation's range chosen for the "
        "least rounding and clipping error); auto: minmax, and when that misses the fidelity "
        "target the others too, keeping the most faithful (TFLite always uses min/max)",
    )
    p.add_argument("--activations", choices=["int8", "int16"], default="int8", help="int16 gives 16x8 models (audio)")
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        metavar="PP",
        help="fail (exit 3) when int8 loses more than this many percentage points (default 1.0): "
        "accuracy with labelled --eval data; without labels, the share of confident float "
        "predictions int8 changes and of float top-1s outside int8's top-k",
    )
    p.add_argument(
        "--max-kl",
        type=float,
        default=0.05,
        metavar="NATS",
        help="without labels, also fail when the mean top-k KL(float || int8) is over this (default 0.05)",
    )
    p.add_argument(
        "--mixed-precision",
        choices=["auto", "off"],
        default="auto",
        help="auto: when full-integer int8 misses the fidelity target, leave the fewest ops float, the "
        "classifier head first, then (TFLite) those that quantization damages most (never for --target "
        "coral/android); off: full integer only",
    )
    p.add_argument("--name", help="model name in the manifest (default: the source file name)")
    p.add_argument("--calibration-limit", type=int, default=300, metavar="N", help="at most N calibration examples")
    p.add_argument("--eval-limit", type=int, default=1000, metavar="N", help="at most N evaluation examples")
    p.add_argument(
        "--hop-frames",
        type=int,
        metavar="N",
        help="streaming models whose step takes a window of frames: N new frames per step "
        "(default: the whole input, no overlap)",
    )
    p.add_argument("--threads", type=int, help="engine threads for evaluation and latency (default: all cores)")
    p.add_argument("--json", action="store_true", help="print report.json instead of the summary")
    p.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's own logs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    from .errors import AccuracyError, ConvertError

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from .convert import Options, dumps, run, summary_lines

        for flag, v in (("--calibration-limit", args.calibration_limit), ("--eval-limit", args.eval_limit)):
            if v is not None and v < 1:
                raise ConvertError(f"{flag}: must be at least 1")
        opts = Options(
            source=args.source,
            out=args.out,
            calibration=args.calibration,
            eval=args.eval,
            labels=args.labels,
            formats=args.formats,
            target=args.target,
            size=tuple(args.size) if args.size else None,
            resize=args.resize,
            resize_filter=args.resize_filter,
            mean=args.mean,
            std=args.std,
            channel_order=args.channel_order,
            calibration_method=args.calibration_method,
            activations=args.activations,
            max_accuracy_drop=args.max_accuracy_drop,
            max_kl=args.max_kl,
            mixed_precision=args.mixed_precision == "auto",
            name=args.name,
            calibration_limit=args.calibration_limit,
            eval_limit=args.eval_limit,
            threads=args.threads,
            hop_frames=args.hop_frames,
        )
        with QuietNative(not args.verbose):
            report = run(opts)
    except ConvertError as e:
        print(f"edge-convert: error: {e}", file=sys.stderr)
        return e.exit_code
    except AccuracyError as e:
        print(f"edge-convert: accuracy check failed: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edge-convert: interrupted; nothing written", file=sys.stderr)
        return 130
    except _Terminated:
        print("edge-convert: terminated; nothing written", file=sys.stderr)
        return 128 + signal.SIGTERM
    print(dumps(report) if args.json else "\n".join(summary_lines(report)))
    if not args.json:
        print(f"  wrote {args.out}/ (manifest.json, report.json, report.html)")
    return 0


class QuietNative:
    """Silence the C++ chatter TensorFlow and LiteRT print on fd 2 (our own messages go after)."""

    def __init__(self, active: bool):
        self.active = active
        self.saved: int | None = None

    def __enter__(self):
        if self.active:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            # Progress bars still reach the terminal through a dup of the real stderr.
            os.environ["EDGE_PROGRESS_FD"] = str(self.saved)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            sys.stderr.flush()
            os.dup2(self.saved, 2)
            os.close(self.saved)
            os.environ.pop("EDGE_PROGRESS_FD", None)
        return False


if __name__ == "__main__":
    sys.exit(main())
