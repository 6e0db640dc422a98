"""The daemon end to end on real parts: shipped models, sample media, HTTP, JSON lines, sd_notify."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request

from conftest import auto_device, wait_until

from edge_runtime.config import (
    CameraConfig,
    Config,
    FusionConfig,
    HttpConfig,
    JsonlConfig,
    RuntimeConfig,
    SinksConfig,
    VisionConfig,
)
from edge_runtime.defaults import SAMPLES
from edge_runtime.observe.systemd import Notifier
from edge_runtime.service import Daemon


def _vision_config(tmp_path, **runtime) -> Config:
    return Config(
        runtime=RuntimeConfig(log_level="warning", **runtime),
        camera=CameraConfig(uri=str(SAMPLES / "images"), fps=8.0, loop=True),
        vision=VisionConfig(threshold=0.5),
        fusion=FusionConfig(passthrough=True, passthrough_cooldown_s=0.0),
        sinks=SinksConfig(jsonl=JsonlConfig(path=str(tmp_path / "events.jsonl")), http=HttpConfig(port=0)),
        path="(test)",
    )


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def test_vision_daemon_serves_status_and_writes_events(tmp_path):
    d = Daemon(_vision_config(tmp_path, duration_s=3.0))
    d.start()
    try:
        assert wait_until(lambda: d.stats["vision"].inferences > 0 and d.status()["healthy"], 30)
        code, body = _get(d.http.url + "/healthz")
        assert code == 200 and body.strip() == "ok"
        status = json.loads(_get(d.http.url + "/status")[1])
        assert status["healthy"] and status["sources"]["camera"]["online"]
        assert status["pipelines"]["vision"]["model"] == "efficientnet-lite0-imagenet"
        assert status["pipelines"]["vision"]["device"].startswith(auto_device("vision"))
        metrics = _get(d.http.url + "/metrics")[1]
        assert "edge_engine_info{" in metrics and "edge_decisions_total" in metrics
    finally:
        d.run()  # returns when duration_s is reached, then stops and flushes
    final = d.metrics.render().decode()  # the counters follow the sources; fps is the recent rate
    frames = float(re.search(r'edge_frames_total\{source="camera"\} (\S+)', final).group(1))
    fps = float(re.search(r'edge_pipeline_fps\{pipeline="vision"\} (\S+)', final).group(1))
    assert frames >= 1 and fps > 0, (frames, fps)
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    labels = {ev["event"] for ev in lines}
    ids = [ev["id"] for ev in lines]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)  # an id of its own per event
    assert d.status()["events"] == len(lines) == sum(d.event_counts.values())  # counted, not kept
    assert set(d.event_counts) == labels
    assert {"espresso", "orange", "Pekingese"} <= labels
    for ev in lines:
        assert ev["decisions"][0]["modality"] == "vision" and ev["latency_ms"] >= 0


def test_sd_notify_ready_watchdog_stall_and_stopping(tmp_path, notify_socket):
    path, messages = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})  # ping every 0.2 s
    d = Daemon(_vision_config(tmp_path), notifier=notifier)
    t0 = time.monotonic()
    d.start()
    runner = threading.Thread(target=d.run, daemon=True)
    runner.start()

    def pings() -> list[float]:
        return [t for t, m in messages if m == "WATCHDOG=1"]

    assert wait_until(lambda: len(pings()) >= 3, 30)
    ready = [t for t, m in messages if m == "READY=1"]
    assert len(ready) == 1 and d.models.vision is not None  # READY only after models are loaded
    assert all(b - a < 0.5 for a, b in zip(pings(), pings()[1:]))

    # A stuck inference: the vision worker blocks inside the model; the pings must stop.
    release = threading.Event()
    clf = d.models.vision
    original = clf.infer
    clf.infer = lambda *a, **k: (release.wait(), original(*a, **k))[1]
    assert wait_until(lambda: not d.status()["healthy"], d.stale_s + 30)
    assert wait_until(lambda: time.monotonic() - max(pings()) > 0.8, 30), "watchdog still pinged while stuck"
    last_ping = max(pings())
    assert d.status()["healthy"] is False and "stuck: vision" in d.status()["reason"]
    release.set()
    clf.infer = original
    assert wait_until(lambda: max(pings()) > last_ping, 30)  # pings resume with progress

    t_stop = time.monotonic()
    d.request_stop()
    runner.join(5)
    assert not runner.is_alive() and time.monotonic() - t_stop < 2.0
    assert any(m == "STOPPING=1" for _, m in messages)
    assert t0 < ready[0]
    os.environ.pop("NOTIFY_SOCKET", None)


def test_status_never_shows_a_url_s_user_name_or_password(tmp_path):
    from edge_runtime.redact import redact

    assert (
        redact("cannot open rtsp://admin:s3cret@10.0.0.9:554/live: refused")
        == "cannot open rtsp://***@10.0.0.9:554/live: refused"
    )
    assert redact("http://cam/a@b and rtsp://u@h/x") == "http://cam/a@b and rtsp://***@h/x"
    assert redact("no url here: a@b, ://") == "no url here: a@b, ://"
    t0 = time.monotonic()
    redact("://" + " " * 100_000 + "a" * 100_000 + "@")  # linear: no backtracking over user text
    assert time.monotonic() - t0 < 1.0

    with socket.socket() as s:  # a port nothing listens on: the camera stays offline with an error naming its URL
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _vision_config(tmp_path)
    cfg.camera = CameraConfig(uri=f"rtsp://admin:s3cret@127.0.0.1:{port}/live", stall_timeout_s=0.5)
    d = Daemon(cfg)
    d.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not d.status()["sources"]["camera"]["last_error"]:
            time.sleep(0.2)
        with urllib.request.urlopen(d.http.url + "/status", timeout=5) as r:
            body = r.read().decode()
        err = json.loads(body)["sources"]["camera"]["last_error"]
        assert f"rtsp://***@127.0.0.1:{port}/live" in err, err
        assert "admin" not in body and "s3cret" not in body
    finally:
        d.stop()


def test_a_worker_that_dies_makes_health_503_and_stops_the_watchdog(tmp_path, caplog):
    """A fusion thread killed by an exception: logged with it, /healthz 503 naming it, no more watchdog pings."""
    import logging

    d = Daemon(_vision_config(tmp_path, duration_s=30.0))

    def broken(_decision):
        raise OverflowError("cannot convert float infinity to integer")

    d.fusion.add = broken
    with caplog.at_level(logging.ERROR):
        d.start()
        try:
            deadline = time.monotonic() + 20
            while not d.dead_workers and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "fusion" in d.dead_workers, d.dead_workers
            try:
                _get(d.http.url + "/healthz")
                code = 200
            except urllib.error.HTTPError as e:
                code, body = e.code, e.read().decode()
            assert code == 503 and "fusion (died: OverflowError" in body, (code, body)
            assert "fusion (died: OverflowError" in d.stuck_workers()[0]  # what the watchdog loop checks
        finally:
            d.request_stop()
            d.run()
    assert any("worker fusion died" in r.getMessage() and r.exc_info for r in caplog.records)
