"""Shared fixtures. Tests use real parts: real TensorFlow conversions, real engines.

A test that cannot run fails under CI=true; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, why: str) -> None:
    """Skip (or, under CI=true, fail) when a real part this test needs is missing."""
    if not ok:
        if IN_CI:
            pytest.fail(f"cannot run under CI: {why}")
        pytest.skip(why)


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """edge-convert in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "converters.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="session")
def tf_available():
    require(have("tensorflow") and have("tf2onnx") and have("onnxruntime"),
            "the convert extra is not installed (pip install -e '.[convert,test]')")


@pytest.fixture(scope="session")
def digits(tf_available):
    """The shipped digits MobileNetV2 (.keras) with its calibration and labelled eval folders."""
    model = DIGITS / "digits_mobilenetv2.keras"
    require(model.is_file(), f"{model} is missing (python -m models.digits)")
    return {"keras": model, "calib": DIGITS / "data" / "calib", "eval": DIGITS / "data" / "eval",
            "labels": DIGITS / "labels.txt"}


@pytest.fixture(scope="session")
def digits_h5(digits, tmp_path_factory):
    """The same model saved in the legacy HDF5 format."""
    import keras

    path = tmp_path_factory.mktemp("h5") / "digits_mobilenetv2.h5"
    keras.models.load_model(str(digits["keras"]), compile=False).save(str(path))
    return path


@pytest.fixture(scope="session")
def digits_onnx(digits, tmp_path_factory):
    """The same model as a float ONNX file (tf2onnx, as the converter makes it)."""
    from converters.source import load_source

    work = tmp_path_factory.mktemp("onnx")
    src = load_source(digits["keras"])
    path = src.float_onnx(work)
    return path


def synthetic_sequences(n: int, frames: int = 48, n_mels: int = 40, seed: int = 0):
    """Four kinds of log-mel-like sequences: a rising tone, a falling tone, a steady tone, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None]
    bins = np.arange(n_mels)[None, :]
    x = np.empty((n, frames, n_mels), np.float32)
    y = rng.integers(0, 4, size=n)
    for i in range(n):
        start = rng.uniform(5, n_mels - 5)
        slope = rng.uniform(0.3, 0.6)
        centre = {0: start - 12 + slope * t, 1: start + 12 - slope * t, 2: start + 0 * t, 3: None}[int(y[i])]
        base = rng.normal(0.0, 0.6, size=(frames, n_mels))
        if centre is not None:
            base += 3.0 * np.exp(-0.5 * ((bins - np.clip(centre, 0, n_mels - 1)) / 1.5) ** 2)
        x[i] = base
    return x, y


@pytest.fixture(scope="session")
def lstm_step(tf_available, tmp_path_factory):
    """A small keyword-style LSTM trained here, exported as an explicit-state step model."""
    import keras

    from models import kws

    keras.utils.set_random_seed(0)
    x, y = synthetic_sequences(1200, seed=1)
    model = kws.build(frames=48, n_mels=40, classes=4, units=32)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=12, batch_size=64, verbose=0)
    xe, ye = synthetic_sequences(200, seed=2)
    acc = float((model.predict(xe, verbose=0).argmax(1) == ye).mean())
    step = kws.streaming_step(model, chunk=4)
    work = tmp_path_factory.mktemp("lstm")
    path = work / "kws_step.keras"
    step.save(str(path))
    np.savez(work / "calib.npz", features=synthetic_sequences(100, seed=3)[0])
    np.savez(work / "eval.npz", features=xe, labels=ye)
    return {"keras": path, "model": model, "accuracy": acc, "calib": work / "calib.npz", "eval": work / "eval.npz",
            "x_eval": xe, "y_eval": ye}
