"""`edge-runtime run` as a process: SIGHUP reloads (good and broken model), SIGTERM stops fast and cleanly."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import wait_until

from edge_runtime.defaults import SAMPLES, model_dir

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(path: Path, model: Path, port: int, threshold: float) -> None:
    path.write_text(f"""
[runtime]
log_level = "info"
[camera]
uri = "{SAMPLES / "images"}"
fps = 5
loop = true
[vision]
model = "{model}"
threshold = {threshold}
[sinks.http]
port = {port}
""")


def _status(port: int, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def _wait_reload(port: int, previous_at, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = _status(port)
        r = st.get("last_reload")
        if r and r["at"] != previous_at:
            return st
        time.sleep(0.2)
    raise AssertionError("no reload reported")


def test_sighup_reload_good_and_broken_then_sigterm(tmp_path):
    good = tmp_path / "vision_copy"
    shutil.copytree(model_dir("vision"), good)
    cfg = tmp_path / "edge.toml"
    port = _free_port()
    _config(cfg, model_dir("vision"), port, 0.5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        st = _status(port)
        assert st["healthy"] and st["pipelines"]["vision"]["model"] == "efficientnet-lite0-imagenet"

        # A good change: another copy of the model and a new threshold.
        _config(cfg, good, port, 0.6)
        proc.send_signal(signal.SIGHUP)
        st = _wait_reload(port, None)
        assert st["last_reload"]["ok"] is True and st["healthy"]

        # A broken model: a tampered file. The old model keeps serving and the status says why.
        model_file = good / "model_int8.tflite"
        model_file.write_bytes(model_file.read_bytes()[:-10] + b"0123456789")
        proc.send_signal(signal.SIGHUP)
        st = _wait_reload(port, st["last_reload"]["at"])
        assert st["last_reload"]["ok"] is False
        assert "sha256 does not match" in st["last_reload"]["error"]
        assert st["healthy"] and st["pipelines"]["vision"]["model"] == "efficientnet-lite0-imagenet"
        frames_before = st["pipelines"]["vision"]["inferences"]
        assert wait_until(lambda: _status(port)["pipelines"]["vision"]["inferences"] > frames_before, 30)  # serving

        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert time.monotonic() - t0 < 2.0
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert "reload failed, still serving the previous config and models" in err
    assert "Traceback" not in err
