"""The whole daemon on real parts, as a user runs it.

`edge-runtime run` reads a live camera stream that ffmpeg serves on 127.0.0.1 and a
PulseAudio null-sink monitor through PortAudio while speech with keywords is
played into the sink; events go to a real mosquitto broker and the HTTP status
endpoint is fetched. Killing and restarting ffmpeg shows the camera going
offline and reconnecting while the audio side keeps running.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import auto_device, require
from test_sinks import Subscriber, broker, free_port  # noqa: F401  (broker: fixture)

from edge_runtime.defaults import SAMPLES, model_dir

ROOT = Path(__file__).resolve().parents[1]


class Stream:
    """ffmpeg serving the sample photos as a live MJPEG stream on 127.0.0.1."""

    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cam.mjpg"

    def start(self) -> Stream:
        self.proc = subprocess.Popen(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-framerate",
                "4",
                "-pattern_type",
                "glob",
                "-i",
                str(SAMPLES / "images" / "*.jpg"),
                "-vf",
                "scale=320:240",
                "-c:v",
                "mjpeg",
                "-q:v",
                "5",
                "-f",
                "mpjpeg",
                "-listen",
                "1",
                self.url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=3) as r:
        return json.loads(r.read())


def _wait(pred, timeout: float, step: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = pred()
            if v:
                return v
        except (OSError, KeyError):
            pass
        time.sleep(step)
    return None


def test_daemon_end_to_end(pulse, broker, tmp_path):  # noqa: F811
    require(shutil.which("ffmpeg") is not None, "ffmpeg not installed (apt install ffmpeg)")
    require((model_dir("kws") / "manifest.json").is_file(), "the shipped keyword model is missing")
    http_port = free_port()
    stream = Stream(free_port()).start()
    prefix = f"e2e/{time.monotonic_ns()}"
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f"""
[runtime]
log_level = "info"
[camera]
uri = "{stream.url}"
stall_timeout_s = 2.0
[vision]
threshold = 0.5
[microphone]
device = "pulse"
[audio]
[fusion]
passthrough = true
passthrough_cooldown_s = 1.0
[sinks.jsonl]
path = "{tmp_path / "events.jsonl"}"
[sinks.http]
port = {http_port}
[sinks.mqtt]
port = {broker.port}
topic_prefix = "{prefix}"
keepalive = 5
""")
    sub = Subscriber(broker.port, [f"{prefix}/#"])
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "run", "--config", str(cfg)],
        cwd=ROOT,
        env=pulse,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sub.wait(f"{prefix}/availability", "online", timeout=60)
        st = _wait(lambda: (s := _status(http_port))["sources"]["camera"]["online"] and s, 30)
        assert st, "camera never came online"
        assert st["sources"]["microphone"]["online"]
        assert st["pipelines"]["vision"]["device"].startswith(auto_device("vision"))

        # Speech with keywords into the null sink: the daemon hears it through PortAudio.
        quiet = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert not [e for e in quiet if e["decisions"][0]["modality"] == "audio"], "audio events before any speech"
        subprocess.run(
            ["paplay", "--device=virt", str(SAMPLES / "audio" / "keywords.wav")], env=pulse, check=True, timeout=60
        )

        def heard_on_mqtt() -> set[str]:
            return {json.loads(p)["event"] for t, p, _ in _drain(sub) if t.startswith(f"{prefix}/event/")}

        def audio_named() -> set[str]:
            events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
            return {e["event"] for e in events if e["decisions"][0]["modality"] == "audio"}

        _wait(lambda: len(audio_named()) >= 3 and heard_on_mqtt() & audio_named(), 15)  # the last word ends the file
        heard = heard_on_mqtt()
        events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
        audio_events = [e for e in events if e["decisions"][0]["modality"] == "audio"]
        vision_events = {e["event"] for e in events if e["decisions"][0]["modality"] == "vision"}
        # The spoken words reach the keyword pipeline through PulseAudio and PortAudio and become events
        # naming them, at the model's own operating point (5 words, said by a held-out voice).
        spoken = [w["label"] for w in json.loads((SAMPLES / "audio" / "keywords.json").read_text())["words"]]
        named = [e["event"] for e in audio_events]
        assert set(named) <= set(spoken) and len(set(named)) >= 3, (named, spoken)
        assert all(e["decisions"][0]["source"] == "microphone" and e["latency_ms"] >= 0 for e in audio_events)
        shown = {"espresso", "tripod", "Pekingese", "orange", "baboon", "fox squirrel", "Granny Smith apple"}
        assert len(vision_events & shown) >= 3 and vision_events <= shown | {"Egyptian Mau", "tabby cat"}, vision_events
        assert heard & {e["event"] for e in audio_events}, "no keyword event reached the MQTT broker"

        # The camera goes away: offline within a few seconds, audio keeps running.
        stream.stop()
        assert _wait(lambda: not _status(http_port)["sources"]["camera"]["online"], 8), "camera not marked offline"
        chunks = _status(http_port)["sources"]["microphone"]["frames"]
        assert _wait(lambda: _status(http_port)["sources"]["microphone"]["frames"] > chunks + 10, 5)
        stream.start()
        st = _wait(lambda: (s := _status(http_port))["sources"]["camera"]["online"] and s, 30)
        assert st and st["sources"]["camera"]["reconnects"] >= 1

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
        sub.wait(f"{prefix}/availability", "offline", timeout=10)
    finally:
        stream.stop()
        if daemon.poll() is None:
            daemon.kill()
        out, err = daemon.communicate()
        sub.close()
    assert "Traceback" not in err, err[-3000:]


def _drain(sub: Subscriber) -> list[tuple[str, str, bool]]:
    """Every message the subscriber has received so far."""
    import queue

    while True:
        try:
            sub.seen.append(sub.messages.get(timeout=0.3))
        except queue.Empty:
            return list(sub.seen)
