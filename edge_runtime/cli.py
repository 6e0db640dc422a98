"""edge-runtime: run converted models on the board."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__
from .config import MAX_FALSE_ACCEPTS_PER_HOUR
from .defaults import model_dir
from .engines import ENGINES


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"edge-runtime: error: {message}; see edge-runtime --help\n")


def _in_range(cast: type, lo: float, hi: float, above: bool = False):
    """An argparse type: ``cast(text)``, finite, from ``lo`` (or above it, ``above``) to ``hi``."""
    what = "a whole number" if cast is int else "a number"

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (math.isfinite(v) and (lo < v if above else lo <= v) and v <= hi):
            raise argparse.ArgumentTypeError(
                f"{text} is not {what} {'above' if above else 'from'} {lo:g} {'and at most' if above else 'to'} {hi:g}"
            )
        return v

    return parse


THREADS = _in_range(int, 1, 256)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edge-runtime", description=__doc__)
    p.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("classify", help="classify image files with an image model")
    c.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    c.add_argument(
        "--model", type=Path, help="artifact folder (manifest.json + model files); default: the shipped model"
    )
    c.add_argument("--engine", choices=["auto", *ENGINES], default="auto")
    c.add_argument(
        "--top", type=_in_range(int, 1, 100000), default=3, metavar="K", help="labels to show per image (default 3)"
    )
    c.add_argument("--threads", type=THREADS, help="engine threads (default: the engine's own choice)")
    c.add_argument("--json", action="store_true", help="one JSON object per image")
    ls = sub.add_parser(
        "listen", help="spot keywords (or, with --grammar, recognise phrases) in WAV files, streamed as live audio"
    )
    ls.add_argument("wavs", nargs="+", type=Path, metavar="WAV")
    ls.add_argument(
        "--model",
        type=Path,
        default=None,
        help="streaming keyword artifact folder (default: the shipped edge_runtime/data/models/kws; with "
        "--grammar: a phrase model, default edge_runtime/data/models/asr)",
    )
    ls.add_argument(
        "--grammar",
        type=Path,
        metavar="FILE",
        help="recognise this grammar's phrases (one phrase a line, e.g. 'turn (on|off) the [kitchen] light')",
    )
    ls.add_argument(
        "--min-confidence",
        type=_in_range(float, 0, 1),
        metavar="S",
        help="with --grammar: the score a phrase needs (default: the model's, chosen on validation data)",
    )
    ls.add_argument("--engine", choices=["auto", *ENGINES], default="auto")
    ls.add_argument(
        "--threshold",
        type=float,
        help="detection threshold on the smoothed score (default: chosen by --false-accepts-per-hour)",
    )
    ls.add_argument(
        "--false-accepts-per-hour",
        type=float,
        metavar="X",
        help="the lowest threshold on the model's validation curve with at most X false accepts per hour "
        "(default 0.5; without a curve: the manifest's threshold)",
    )
    ls.add_argument("--threads", type=THREADS, help="engine threads (default: the engine's own choice)")
    ls.add_argument(
        "--chunk-ms",
        type=_in_range(float, 0, 10000, above=True),
        default=100.0,
        help="audio chunk fed per call, as a microphone (default 100)",
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per detection")
    r = sub.add_parser("run", help="run the daemon from a TOML config")
    r.add_argument("--config", type=Path, required=True, metavar="FILE")
    k = sub.add_parser("check", help="validate a config and load its models; open no device (exit 0 or 2)")
    k.add_argument("--config", type=Path, required=True, metavar="FILE")
    d = sub.add_parser("devices", help="cameras, microphones, LiteRT delegates and ONNX Runtime providers here")
    d.add_argument("--json", action="store_true")
    m = sub.add_parser("demo", help="the whole daemon on the shipped sample media; ends by itself")
    m.add_argument(
        "--http-port",
        type=_in_range(int, 0, 65535),
        default=0,
        help="port of the status endpoint (default: any free port)",
    )
    m.add_argument("--fast", action="store_true", help="read the sample audio as fast as possible, not in real time")
    _add_bench(sub)
    return p


def _add_bench(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="how fast each model runs here: raw engine, pipeline, CPU, cold start, memory")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--config", type=Path, metavar="FILE", help="the models of a config, opened as `run` opens them")
    src.add_argument(
        "--model",
        type=Path,
        action="append",
        metavar="DIR",
        help="an artifact folder (repeatable); default: the shipped models",
    )
    b.add_argument(
        "--seconds",
        type=_in_range(float, 0, 3600, above=True),
        default=10.0,
        metavar="N",
        help="measuring time per artifact (default 10)",
    )
    b.add_argument(
        "--grammar",
        type=Path,
        metavar="FILE",
        help="with --model: time each phrase model with this grammar and its decoder, as [asr] runs it",
    )
    b.add_argument("--json", action="store_true", help="the figures as one JSON object")


def bench(args: argparse.Namespace) -> int:
    from . import bench as b
    from .engines import EngineError
    from .manifest import ManifestError

    if args.config is not None:
        _load_config(args.config)  # one line for a config `check` would refuse
    if args.grammar is not None:
        if not args.model:
            raise UserError("--grammar goes with --model (a config's [asr] section names its own grammar)")
        from .asr.grammar import GrammarError, load_grammar

        try:
            load_grammar(args.grammar)
        except GrammarError as e:
            raise UserError(f"--grammar {e}") from None
    try:
        targets = b.targets_of(args.config, args.model, args.grammar)
        result = b.bench(targets, args.seconds)
    except (ManifestError, EngineError) as e:
        raise UserError(f"{'--config ' + str(args.config) if args.config else '--model'}: {e}") from None
    print(b.to_json(result) if args.json else b.table(result))
    return 0


def listen(args: argparse.Namespace) -> int:
    """Keywords (or, with ``--grammar``, phrases) in each file, one line (or JSON object) each."""
    from .audio.wav import AudioError, wav_info
    from .manifest import ManifestError, load

    model = args.model if args.model is not None else model_dir("asr" if args.grammar else "kws")
    try:
        m, folder = load(model)
    except ManifestError as e:
        raise UserError(f"--model: {e}") from None
    open_model = _phrase_recognizer(args) if args.grammar is not None else _keyword_spotter(args)
    sr = m.preprocessing.audio.sample_rate if m.preprocessing.audio else 16000
    try:  # every header checked before the engine loads: a bad file is one line, nothing else
        infos = [wav_info(path, sr) for path in args.wavs]
    except AudioError as e:
        raise UserError(str(e)) from None
    stream, as_dict, as_text = open_model(m, folder, model)
    logging.getLogger(__name__).info("%s on %s", m.name, stream.engine.placement.device)
    chunk = max(1, round(sr * args.chunk_ms / 1000.0))
    for info in infos:
        try:
            for found in _spot(stream, info, sr, chunk):
                if args.json:
                    d = {
                        "file": str(info.path),
                        **as_dict(found),
                        "model": m.name,
                        "engine": stream.engine.placement.engine,
                    }
                    print(json.dumps(d), flush=True)
                else:
                    print(f"{info.path}: {as_text(found)}", flush=True)
        except AudioError as e:
            raise UserError(str(e)) from None
    return 0


def _keyword_spotter(args: argparse.Namespace):
    """The keyword flags, checked; what opens the spotter, and how a detection is printed."""
    from .engines import EngineError
    from .manifest import ManifestError
    from .pipelines.audio import KeywordSpotter

    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold}: give a score in (0, 1]")
    fa = args.false_accepts_per_hour
    if fa is not None and not (math.isfinite(fa) and 0 <= fa <= MAX_FALSE_ACCEPTS_PER_HOUR):
        raise UserError(f"--false-accepts-per-hour {fa}: give a number from 0 to {MAX_FALSE_ACCEPTS_PER_HOUR:g}")
    budget = {} if fa is None else {"false_accepts_per_hour": fa}

    def open_model(m, folder, model):
        try:
            return (
                KeywordSpotter(m, folder, args.engine, threads=args.threads, threshold=args.threshold, **budget),
                lambda d: {"label": d.label, "score": round(d.score, 4), "t": round(d.t, 3)},
                lambda d: f"{d.t:7.2f} s  {d.label}  {d.score:.3f}",
            )
        except (EngineError, ManifestError) as e:
            raise UserError(f"--model {model}: {e}") from None

    return open_model


def _phrase_recognizer(args: argparse.Namespace):
    """``--grammar``: its flags and the grammar, checked; what opens the recognizer, and how a phrase is printed."""
    from .asr.grammar import GrammarError, load_grammar
    from .asr.lexicon import LexiconError
    from .asr.recognizer import PhraseRecognizer
    from .engines import EngineError
    from .manifest import ManifestError

    if args.threshold is not None or args.false_accepts_per_hour is not None:
        raise UserError(
            "--threshold and --false-accepts-per-hour are for keyword models; with --grammar give --min-confidence"
        )
    try:
        grammar = load_grammar(args.grammar)
    except GrammarError as e:
        raise UserError(f"--grammar {e}") from None

    def open_model(m, folder, model):
        try:
            rec = PhraseRecognizer(m, folder, grammar, args.engine, args.threads, args.min_confidence)
        except (EngineError, ManifestError, LexiconError, GrammarError) as e:
            raise UserError(f"--model {model}: {e}") from None
        slots = lambda ph: "  " + json.dumps(ph.slots) if ph.slots else ""  # noqa: E731
        return rec, lambda ph: ph.to_dict(), lambda ph: f"{ph.t_end:7.2f} s  {ph.phrase}  {ph.score:.3f}{slots(ph)}"

    return open_model


def _spot(spotter, info, sr: int, chunk: int):
    """The detections (or phrases) in one file, decoded a block at a time (any rate / channels -> the model's rate,
    mono) and fed ``chunk`` samples at a time, as live audio."""
    import numpy as np

    from .audio.wav import wav_blocks

    spotter.reset()
    pending = np.zeros(0, np.float32)
    for block in wav_blocks(info, sr):
        pending = np.concatenate([pending, block])
        whole = len(pending) - len(pending) % chunk
        for start in range(0, whole, chunk):
            yield from spotter.process(pending[start : start + chunk])
        pending = pending[whole:]
    if len(pending):
        yield from spotter.process(pending)
    yield from spotter.flush()  # a keyword that ends the file is only complete after it


def classify(args: argparse.Namespace) -> int:
    from .engines import EngineError
    from .manifest import ManifestError, load
    from .pipelines.vision import ImageClassifier
    from .preprocess import ImageError, read_image

    folder = args.model or model_dir("vision")
    try:
        m, folder = load(folder)
        clf = ImageClassifier(m, folder, args.engine, threads=args.threads)
    except (ManifestError, EngineError) as e:
        raise UserError(f"--model: {e}") from None
    logging.getLogger(__name__).info("%s on %s", m.name, clf.engine.placement.device)
    for path in args.images:
        try:
            top = clf.top(read_image(path), args.top)
        except ImageError as e:
            raise UserError(str(e)) from None
        if args.json:
            print(
                json.dumps(
                    {
                        "image": str(path),
                        "top": [{"label": t.label, "score": round(t.score, 5)} for t in top],
                        "model": m.name,
                        "engine": clf.engine.placement.engine,
                    }
                ),
                flush=True,
            )
        else:
            print(f"{path}: " + ", ".join(f"{t.label} {t.score:.3f}" for t in top), flush=True)
    return 0


def _load_config(path: Path):
    from .config import ConfigError, load

    try:
        return load(path)
    except ConfigError as e:
        raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    logging.getLogger().setLevel(cfg.runtime.log_level.upper())
    daemon = _start(cfg)
    code = daemon.run()
    if daemon.still_running:
        # A worker is still inside an engine's native code (a model that never returns): tearing the
        # interpreter down under it aborts the process (ONNX Runtime: "terminate called", SIGABRT).
        # Everything is flushed and closed by now, so leave without the teardown.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _start(cfg):
    """A started Daemon, or one line saying what to fix."""
    from .service import Daemon, ServiceError
    from .sinks import SinkError
    from .sources import SourceError

    daemon = Daemon(cfg)
    try:
        daemon.start()
    except (ServiceError, SourceError, SinkError) as e:
        daemon.stop()
        raise UserError(f"{cfg.path}: {e}") from None
    return daemon


def check(args: argparse.Namespace) -> int:
    from .service import Models, ServiceError
    from .sinks import SinkError
    from .sinks.mqtt_settings import mqtt_config
    from .sources import SourceError

    cfg = _load_config(args.config)
    try:
        models = Models.load(cfg)
        if cfg.microphone and not cfg.microphone.file:  # run's first open of a sound card fails loudly: the
            from .sources.microphone import import_sounddevice, resolve_input  # device must be listed now

            resolve_input(import_sounddevice(), cfg.microphone.device)
        if "mqtt" in cfg.sinks.more:  # the settings and the spool exactly as `run` takes them (it connects to nothing)
            from .sinks.mqtt import open_spool

            mq = mqtt_config(cfg)
            with open_spool(mq) as spool:
                where = "in memory (no spool file)" if spool.in_memory else spool.path
                print(f"mqtt: {mq.host}:{mq.port} qos {mq.qos}; spool {where}, {spool.count} events pending")
    except (ServiceError, SinkError, SourceError) as e:
        raise UserError(f"{cfg.path}: {e}") from None
    for name, p in models.items():
        pl = p.engine.placement
        extra = f" (fell back: {pl.fallback_reason})" if pl.fallback_reason else ""
        print(f"{name}: {p.manifest.name} on {pl.engine} {pl.device}{extra}")
        if name == "audio":
            print(f"audio: operating point: {p.operating_point.describe()}")
        if name == "asr":
            print(f"asr: {len(p.labels)} phrases from {p.grammar.where}; min_confidence {p.min_confidence:g}")
    print(f"{cfg.path}: ok")
    return 0


def devices(args: argparse.Namespace) -> int:
    from .sources.devices import devices as list_devices

    info = list_devices()
    info["litert_delegates"] = _delegates()
    try:
        import onnxruntime as ort

        info["onnx_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnx_providers"] = []
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for cam in info.get("cameras", []):
        print(f"camera      {cam.get('path')}  {cam.get('name', '')}")
    for mic in info.get("microphones", []):
        print(f"microphone  [{mic.get('index')}] {mic.get('name')}  {mic.get('default_samplerate', '')} Hz")
    for d in info["litert_delegates"]:
        print(f"delegate    {d['kind']:<8} {'available' if d['available'] else 'missing'}  {d['library']}")
    print(f"onnx        {', '.join(info['onnx_providers']) or 'onnxruntime not installed'}")
    for e in info.get("errors", []):
        print(f"note        {e}")
    return 0


def _delegates() -> list[dict]:
    import ctypes

    from .engines.base import DELEGATE_LIBRARIES

    out = []
    for kind, lib in DELEGATE_LIBRARIES.items():
        try:
            ctypes.CDLL(lib)
            ok = True
        except OSError:
            ok = False
        out.append({"kind": kind, "library": lib, "available": ok})
    return [{"kind": "xnnpack", "library": "(built in)", "available": True}, *out]


def demo(args: argparse.Namespace) -> int:
    from .demo import demo_config, summary

    daemon = _start(demo_config(http_port=args.http_port, realtime=not args.fast))
    if daemon.http is not None:
        print(f"# status: {daemon.http.url}/status  metrics: {daemon.http.url}/metrics", file=sys.stderr, flush=True)
    daemon.run()
    print(summary(daemon), flush=True)
    return 0


def setup_logging(level: int = logging.INFO) -> None:
    """Under systemd the journal adds timestamps: print priority prefixes only; else level names."""
    import os

    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        prio = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

        class _Journal(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return f"<{prio.get(record.levelno, 6)}>{record.name}: {record.getMessage()}"

        handler.setFormatter(_Journal())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.INFO if args.command in ("run", "demo") else logging.WARNING)
    commands = {
        "classify": classify,
        "listen": listen,
        "run": run,
        "check": check,
        "devices": devices,
        "demo": demo,
        "bench": bench,
    }
    try:
        return commands[args.command](args)
    except UserError as e:
        print(f"edge-runtime: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        from .fileio import stdout_closed

        return stdout_closed()


if __name__ == "__main__":
    sys.exit(main())
