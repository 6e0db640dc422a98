"""Shared fixtures. Tests use real parts: real TensorFlow conversions, real engines.

A test that cannot run fails under CI=true; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
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


def run_cli(*args: str, timeout: float = 600, module: str = "converters.cli") -> subprocess.CompletedProcess:
    """edge-convert (or ``module``: ``edge_runtime.cli`` for edge-runtime) in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="session")
def tf_available():
    require(
        have("tensorflow") and have("tf2onnx") and have("onnxruntime"),
        "the convert extra is not installed (pip install -e '.[convert,test]')",
    )


@pytest.fixture(scope="session")
def digits(tf_available):
    """The shipped digits MobileNetV2 (.keras) with its calibration and labelled eval folders."""
    model = DIGITS / "digits_mobilenetv2.keras"
    require(model.is_file(), f"{model} is missing (python -m models.digits)")
    return {
        "keras": model,
        "calib": DIGITS / "data" / "calib",
        "eval": DIGITS / "data" / "eval",
        "labels": DIGITS / "labels.txt",
    }


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
    return {
        "keras": path,
        "model": model,
        "accuracy": acc,
        "calib": work / "calib.npz",
        "eval": work / "eval.npz",
        "x_eval": xe,
        "y_eval": ye,
    }


# -- real parts several test modules share: a live ffmpeg stream, a PulseAudio server, a notify socket --


FFMPEG = shutil.which("ffmpeg")


def auto_device(kind: str) -> str:
    """How the start of a shipped model's device string reads with ``engine = "auto"``: the engine of the
    artifact its manifest names fastest where it was converted (LiteRT's XNNPACK, or ONNX Runtime's CPU)."""
    from edge_runtime.defaults import model_dir
    from edge_runtime.manifest import load

    m, _ = load(model_dir(kind))
    return "cpu/xnnpack" if m.artifact(m.fastest_on_host).format == "tflite" else "CPUExecutionProvider"


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ffmpeg():
    require(FFMPEG is not None, "ffmpeg is not installed (apt install ffmpeg)")
    require(have("cv2"), "opencv-python-headless is not installed")
    return FFMPEG


class LiveStream:
    """ffmpeg serving a live MJPEG stream (multipart/x-mixed-replace over HTTP) on 127.0.0.1.

    ``-listen 1`` serves exactly one client, so nothing probes the port: the source's own
    reconnect loop connects whenever the server is ready.
    """

    def __init__(self, ffmpeg: str, port: int) -> None:
        self.ffmpeg, self.port = ffmpeg, port
        self.url = f"http://127.0.0.1:{port}/cam.mjpg"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.ffmpeg,
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=15",
                "-c:v",
                "mjpeg",
                "-q:v",
                "7",
                "-f",
                "mpjpeg",
                "-listen",
                "1",
                self.url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def ensure_running(self) -> None:
        """Restart the server if it exited (e.g. a client disconnected mid-connect)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    """A private PulseAudio server with a null sink 'virt' whose monitor is the default source."""
    missing = [t for t in ("pulseaudio", "pactl", "paplay") if shutil.which(t) is None]
    require(not missing, f"{', '.join(missing)} not installed (apt install pulseaudio pulseaudio-utils)")
    require(have("sounddevice"), "sounddevice is not installed (pip install sounddevice)")
    runtime = tmp_path_factory.mktemp("xdg")
    os.chmod(runtime, 0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("PULSE_SERVER", None)
    r = subprocess.run(
        [
            "pulseaudio",
            "--daemonize=yes",
            "--exit-idle-time=-1",
            "-n",
            "--load=module-native-protocol-unix",
            "--load=module-null-sink sink_name=virt",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    require(r.returncode == 0, f"pulseaudio did not start: {r.stderr.strip()[-300:]}")
    try:
        ok = wait_until(
            lambda: (
                subprocess.run(
                    ["pactl", "set-default-source", "virt.monitor"], env=env, capture_output=True, timeout=10
                ).returncode
                == 0
            ),
            10,
            0.2,
        )
        require(ok, "pactl could not reach the PulseAudio server")
        yield env
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True, timeout=30)


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    messages: list[tuple[float, str]] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                data = sock.recv(4096).decode()
            except TimeoutError:
                continue
            for line in data.splitlines():
                messages.append((time.monotonic(), line))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    yield path, messages
    stop.set()
    t.join(1)
    sock.close()
