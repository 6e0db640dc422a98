"""edge-runtime: run converted models on the board."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

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
    c.add_argument("--model", type=Path, required=True, help="artifact folder (manifest.json + model files)")
    c.add_argument("--engine", choices=["auto", "litert", "onnx"], default="auto")
    c.add_argument("--top", type=int, default=3, metavar="K", help="labels to show per image (default 3)")
    c.add_argument("--threads", type=int, help="engine threads (default: the engine's own choice)")
    c.add_argument("--json", action="store_true", help="one JSON object per image")
    return p


def classify(args: argparse.Namespace) -> int:
    from .engines import EngineError, open_engine
    from .manifest import ManifestError, load
    from .preprocess import ImageError, image_to_input, read_image

    try:
        m, folder = load(args.model)
    except ManifestError as e:
        raise UserError(f"--model: {e}") from None
    if m.preprocessing.image is None:
        raise UserError(f"--model {args.model}: {m.name!r} is a {m.task} model, not an image model")
    try:
        engine = open_engine(m, folder, args.engine, threads=args.threads)
    except (EngineError, ManifestError) as e:
        raise UserError(f"--model {args.model}: {e}") from None
    logging.getLogger(__name__).info("%s on %s", m.name, engine.placement.device)
    for path in args.images:
        try:
            x = image_to_input(read_image(path), m.preprocessing.image)[None]
        except ImageError as e:
            raise UserError(str(e)) from None
        scores = np.asarray(engine.run(x)[0], np.float32).reshape(-1)
        top = np.argsort(-scores)[: max(1, args.top)]
        labels = [m.labels[i] if i < len(m.labels) else str(i) for i in top]
        if args.json:
            print(json.dumps({"image": str(path), "top": [{"label": lab, "score": round(float(scores[i]), 5)}
                                                          for lab, i in zip(labels, top)],
                              "model": m.name, "engine": engine.placement.engine}), flush=True)
        else:
            print(f"{path}: " + ", ".join(f"{lab} {scores[i]:.3f}" for lab, i in zip(labels, top)), flush=True)
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
