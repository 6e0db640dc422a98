"""edge-runtime: run converted models on the board."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"edge-runtime: error: {message}; see edge-runtime --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edge-runtime", description=__doc__)
    p.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("classify", help="classify image files with an image model")
    c.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    c.add_argument("--model", type=Path, help="artifact folder (manifest.json + model files); default: the shipped model")
    c.add_argument("--engine", choices=["auto", "litert", "onnx"], default="auto")
    c.add_argument("--top", type=int, default=3, metavar="K", help="labels to show per image (default 3)")
    c.add_argument("--threads", type=int, help="engine threads (default: the engine's own choice)")
    c.add_argument("--json", action="store_true", help="one JSON object per image")
    return p


def classify(args: argparse.Namespace) -> int:
    from .defaults import model_dir
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
            print(json.dumps({"image": str(path), "top": [{"label": t.label, "score": round(t.score, 5)} for t in top],
                              "model": m.name, "engine": clf.engine.placement.engine}), flush=True)
        else:
            print(f"{path}: " + ", ".join(f"{t.label} {t.score:.3f}" for t in top), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return {"classify": classify}[args.command](args)
    except UserError as e:
        print(f"edge-runtime: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
