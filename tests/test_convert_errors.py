"""Bad input gets one clear line naming the file or flag, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def _fails_cleanly(proc, out, *needles: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    if out is not None:
        assert not out.exists(), f"{out} was left behind"
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "staging left behind"
    return err


def test_missing_model_file(tmp_path, digits):
    out = tmp_path / "out"
    proc = run_cli(str(tmp_path / "nope.keras"), "--out", str(out), "--calibration", str(digits["calib"]))
    _fails_cleanly(proc, out, "nope.keras", "no such file")


def test_corrupt_keras_file(tmp_path, digits):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(digits["keras"].read_bytes()[:4096])  # a truncated download
    out = tmp_path / "out"
    _fails_cleanly(
        run_cli(str(bad), "--out", str(out), "--calibration", str(digits["calib"])),
        out,
        "broken.keras",
        "cannot load this Keras model",
    )


def test_corrupt_onnx_file(tmp_path, digits):
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not protobuf")
    out = tmp_path / "out"
    _fails_cleanly(
        run_cli(str(bad), "--out", str(out), "--calibration", str(digits["calib"])),
        out,
        "model.onnx",
        "not a valid ONNX model",
    )


def test_unsupported_op(tmp_path, tf_available):
    """A SavedModel with an op that has no integer kernel: the converter names it."""
    import keras

    inp = keras.Input((16,), name="x")
    h = keras.layers.Dense(16)(inp)
    y = keras.layers.Lambda(lambda t: keras.ops.sin(t) * keras.ops.cos(t), name="trig")(h)
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(y))
    sm = tmp_path / "trig_savedmodel"
    model.export(str(sm), verbose=False)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32))
    out = tmp_path / "out"
    proc = run_cli(str(sm), "--out", str(out), "--calibration", str(tmp_path / "calib.npz"), "--format", "tflite")
    err = _fails_cleanly(proc, out, "trig_savedmodel")
    assert "SIN" in err.upper() or "COS" in err.upper(), err


def test_calibration_tensors_of_the_wrong_shape(tmp_path, digits):
    np.savez(tmp_path / "calib.npz", image=np.zeros((4, 64, 64, 3), np.float32))
    out = tmp_path / "out"
    _fails_cleanly(
        run_cli(str(digits["keras"]), "--out", str(out), "--calibration", str(tmp_path / "calib.npz")),
        out,
        "--calibration",
        "calib.npz",
        "(4, 64, 64, 3)",
        "(N, 96, 96, 3)",
    )


def test_empty_data_folder(tmp_path, digits):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    _fails_cleanly(
        run_cli(str(digits["keras"]), "--out", str(out), "--calibration", str(empty)),
        out,
        "--calibration",
        "empty",
        "no images",
    )


def test_labels_that_do_not_match_the_output_size(tmp_path, digits):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    out = tmp_path / "out"
    _fails_cleanly(
        run_cli(
            str(digits["keras"]),
            "--out",
            str(out),
            "--calibration",
            str(digits["calib"]),
            "--labels",
            str(labels),
            "--format",
            "tflite",
        ),
        out,
        "--labels",
        "3 labels",
        "10 scores",
    )


def test_unwritable_output_folder(tmp_path, digits):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "out"  # under a regular file: no one can create it, root included
    _fails_cleanly(
        run_cli(str(digits["keras"]), "--out", str(out), "--calibration", str(digits["calib"])),
        None,
        "--out",
        "cannot write there",
    )


def test_output_folder_that_is_not_ours_is_left_alone(tmp_path, digits):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    proc = run_cli(str(digits["keras"]), "--out", str(out), "--calibration", str(digits["calib"]))
    assert proc.returncode == 2 and "not an edge-convert output" in proc.stderr
    assert (out / "thesis.tex").read_text() == "precious"


def test_tflite_from_onnx_source_is_explained(tmp_path, digits_onnx, digits):
    out = tmp_path / "out"
    _fails_cleanly(
        run_cli(str(digits_onnx), "--out", str(out), "--calibration", str(digits["calib"]), "--format", "tflite"),
        out,
        "--format tflite needs a Keras or SavedModel source",
    )


def test_bad_flag_value(tmp_path, digits):
    proc = run_cli(
        str(digits["keras"]), "--out", str(tmp_path / "o"), "--calibration", str(digits["calib"]), "--target", "toaster"
    )
    _fails_cleanly(proc, tmp_path / "o", "--target")


def test_sigterm_mid_run_cleans_up_like_sigint(tmp_path, digits):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    tmp = tmp_path / "tmp"  # the converter's own temporary folder goes here
    tmp.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "converters.cli",
            str(digits["keras"]),
            "--out",
            str(out),
            "--calibration",
            str(digits["calib"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)},
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:  # mid-run: staging made, work being written
            work = [p for p in tmp.glob("edge-convert-*") if any(p.iterdir())]
            if work and list(tmp_path.glob(".out.partial-*")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the conversion ended before it could be stopped mid-run"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err[-2000:])
    assert err.strip() == "edge-convert: terminated; nothing written", err[-2000:]
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*")), "staging left behind"
    assert not list(tmp.iterdir()), f"temporary files left behind: {sorted(p.name for p in tmp.iterdir())}"


def test_a_model_with_two_inputs_and_an_image_folder(tmp_path, digits):
    """An image plus a feature vector: a folder cannot feed it (this was a traceback)."""
    import keras

    image, extra = keras.Input((32, 32, 3), name="image"), keras.Input((4,), name="extra")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    model = keras.Model(
        [image, extra], keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([x, extra]))
    )
    src = tmp_path / "two_inputs.keras"
    model.save(str(src))
    out = tmp_path / "out"
    _fails_cleanly(
        run_cli(str(src), "--out", str(out), "--calibration", str(digits["calib"])),
        out,
        "--calibration",
        "takes 2 inputs",
        ".npz",
    )
