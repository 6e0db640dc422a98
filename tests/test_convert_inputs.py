"""Inputs as the model wants them: a grayscale Keras model and an NCHW float ONNX model, both
converted from folders of RGB JPEGs, then classified on the board side with the engines that run them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import DIGITS

from converters.cli import main
from edge_runtime import manifest as mf
from edge_runtime.manifest import ImagePreprocessing
from edge_runtime.preprocess import image_to_input, read_image

pytestmark = pytest.mark.slow
SIDE = 32


def _tinted(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey digit as a colour photo: coloured ink on tinted paper (BGR, for cv2.imwrite)."""
    ink, paper = rng.uniform(0, 90, 3), rng.uniform(170, 255, 3)
    t = grey.astype(np.float32)[..., None] / 255.0
    return np.clip(ink + t * (paper - ink), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def rgb_digits(tf_available, tmp_path_factory):
    """The digits as RGB JPEGs: train/ (not in the shipped eval set), a flat calib/ and eval/<digit>/."""
    import cv2
    from sklearn.datasets import load_digits

    held_out = {int(p.stem) for p in (DIGITS / "data" / "eval").rglob("*.png")}
    d = load_digits()
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("rgb-digits")
    files: dict[str, list] = {"train": [], "eval": []}
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        split = "eval" if i in held_out else "train"
        grey = cv2.resize((255 - img * 255 / 16).astype(np.uint8), (48, 40), interpolation=cv2.INTER_LINEAR)
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:04d}.jpg"
        cv2.imwrite(str(path), _tinted(grey, rng), [cv2.IMWRITE_JPEG_QUALITY, 90])
        files[split].append((path, int(label)))
    (root / "calib").mkdir()
    for path, _ in files["train"][:150]:
        (root / "calib" / path.name).write_bytes(path.read_bytes())
    (root / "labels.txt").write_text("".join(f"{k}\n" for k in range(10)))
    return {
        "root": root,
        "train": files["train"],
        "calib": root / "calib",
        "eval": root / "eval",
        "labels": root / "labels.txt",
    }


def _train(files, spec: ImagePreprocessing, rescaling: bool):
    """A small CNN trained on the digits through the board's own preprocessing."""
    import keras

    keras.utils.set_random_seed(0)
    x = np.stack([image_to_input(read_image(p), spec) for p, _ in files])
    y = np.array([label for _, label in files])
    layers = [keras.Input((SIDE, SIDE, spec.channels))]
    if rescaling:  # a model that takes raw 0..255 pixels (converted with --mean 0 --std 1)
        layers.append(keras.layers.Rescaling(1 / 127.5, offset=-1))
    layers += [
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=25, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def grey_keras(rgb_digits, tmp_path_factory):
    """Trained on bilinearly resampled digits (as tf.image.resize gives them): converted with that filter."""
    spec = ImagePreprocessing(size=[SIDE, SIDE], color="gray", mean=[0.0], std=[1.0], resize_filter="bilinear")
    model = _train(rgb_digits["train"], spec, rescaling=True)
    path = tmp_path_factory.mktemp("grey") / "grey_digits.keras"
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def nchw_onnx(rgb_digits, tmp_path_factory):
    """An RGB model exported channels-first, as PyTorch models are."""
    import tensorflow as tf
    import tf2onnx

    spec = ImagePreprocessing(size=[SIDE, SIDE])
    model = _train(rgb_digits["train"], spec, rescaling=False)
    path = tmp_path_factory.mktemp("nchw") / "rgb_digits_nchw.onnx"
    sig = [tf.TensorSpec([None, SIDE, SIDE, 3], tf.float32, name="pixels")]
    fn = tf.function(lambda x: model(x, training=False))
    tf2onnx.convert.from_function(fn, input_signature=sig, opset=17, output_path=str(path), inputs_as_nchw=["pixels"])
    return path


def _classify(folder, images, engine):
    code = (
        "import sys; sys.argv = ['edge-runtime', *sys.argv[1:]]; from edge_runtime.cli import main; rc = main(); "
        "assert 'tensorflow' not in sys.modules, 'the board side imported TensorFlow'; sys.exit(rc)"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "classify",
            *map(str, images),
            "--model",
            str(folder),
            "--engine",
            engine,
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(ln)["top"][0]["label"] for ln in proc.stdout.splitlines()]


def _eval_images(rgb_digits, per_class=3):
    return [(p, d.name) for d in sorted(rgb_digits["eval"].iterdir()) for p in sorted(d.iterdir())[:per_class]]


def test_grayscale_keras_model_from_rgb_photos(grey_keras, rgb_digits, tmp_path):
    out = tmp_path / "grey"
    assert (
        main(
            [
                str(grey_keras),
                "--out",
                str(out),
                "--calibration",
                str(rgb_digits["calib"]),
                "--eval",
                str(rgb_digits["eval"]),
                "--labels",
                str(rgb_digits["labels"]),
                "--mean",
                "0",
                "--std",
                "1",
                "--resize-filter",
                "bilinear",
            ]
        )
        == 0
    )
    m, _ = mf.load(out)
    pre = m.preprocessing.image
    assert (pre.color, pre.layout, pre.mean, pre.std, pre.resize_filter) == ("gray", "nhwc", [0.0], [1.0], "bilinear")
    report = json.loads((out / "report.json").read_text())
    assert report["float"]["accuracy"] > 0.9
    images = _eval_images(rgb_digits)
    want = [label for _, label in images]
    for engine in ("litert", "onnx"):
        got = _classify(out, [p for p, _ in images], engine)
        assert np.mean([g == w for g, w in zip(got, want)]) >= 0.85, (engine, got, want)


def test_nchw_onnx_model_from_rgb_photos(nchw_onnx, rgb_digits, tmp_path):
    out = tmp_path / "nchw"
    assert (
        main(
            [
                str(nchw_onnx),
                "--out",
                str(out),
                "--calibration",
                str(rgb_digits["calib"]),
                "--eval",
                str(rgb_digits["eval"]),
                "--labels",
                str(rgb_digits["labels"]),
            ]
        )
        == 0
    )
    m, _ = mf.load(out)
    pre = m.preprocessing.image
    assert (pre.color, pre.layout, pre.input_shape()) == ("rgb", "nchw", [1, 3, SIDE, SIDE])
    assert [a.format for a in m.artifacts] == ["onnx"]
    report = json.loads((out / "report.json").read_text())
    assert report["float"]["accuracy"] > 0.9
    images = _eval_images(rgb_digits)
    got = _classify(out, [p for p, _ in images], "onnx")
    assert np.mean([g == w for g, w in zip(got, [label for _, label in images])]) >= 0.85, got


def test_a_model_whose_input_is_not_an_image_is_told_to_use_npz(rgb_digits, tmp_path, tf_available):
    import keras

    model = keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 5)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    path = tmp_path / "five_channels.keras"
    model.save(str(path))
    from conftest import run_cli

    proc = run_cli(str(path), "--out", str(tmp_path / "out"), "--calibration", str(rgb_digits["calib"]))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not an image" in proc.stderr and ".npz" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_broken_int8_is_stopped_by_the_default_gate_without_labels(grey_keras, rgb_digits, tmp_path):
    """Calibrated on one blank page, int8 clips every real digit: the unlabelled gate refuses it."""
    import cv2
    from conftest import run_cli

    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "page.jpg"), np.full((40, 48, 3), 235, np.uint8))
    out = tmp_path / "out"
    proc = run_cli(
        str(grey_keras),
        "--out",
        str(out),
        "--calibration",
        str(blank),
        "--eval",
        str(rgb_digits["calib"]),
        "--mean",
        "0",
        "--std",
        "1",
    )
    assert proc.returncode == 3, proc.stderr
    assert "is over --max" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert not report["has_labels"] and report["passed"] is False
    assert any(not g["passed"] for g in report["gate"].values())
