"""The daemon driven by injected sources and an injected clock (no camera, no real time for health)."""

from __future__ import annotations

import json
import threading
import time

from conftest import wait_until

from edge_runtime.config import (
    CameraConfig,
    Config,
    FusionConfig,
    JsonlConfig,
    RuntimeConfig,
    SinksConfig,
    VisionConfig,
)
from edge_runtime.defaults import SAMPLES
from edge_runtime.pipelines.vision_pipeline import VisionPipeline
from edge_runtime.preprocess import read_image, to_rgb
from edge_runtime.service import Daemon
from edge_runtime.sources import Frame, SourceStats


class FakeClock:
    """Monotonic time that moves only when told to."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.calls = 0

    def monotonic(self) -> float:
        self.calls += 1
        return self.t

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()  # decisions and events keep the sources' capture clock


class FakeCamera:
    """Hands out the given frames, then ends (``endless``: then has none); ``block`` makes ``latest`` wait
    (a stuck read)."""

    def __init__(self, images: list, block: threading.Event | None = None, endless: bool = False) -> None:
        self.images = list(images)
        self.block = block
        self.endless = endless
        self.reading = threading.Event()
        self.ended = False
        self.closed = False
        self.seq = 0

    def latest(self, timeout: float):
        self.reading.set()
        if self.block is not None:
            self.block.wait()
        if not self.images:
            if self.endless:
                time.sleep(min(timeout, 0.05))
            else:
                self.ended = True
            return None
        self.seq += 1
        return Frame(self.images.pop(0), time.monotonic_ns(), self.seq, "camera")

    def stats(self) -> SourceStats:
        return SourceStats(frames=self.seq, online=not self.closed)

    def close(self) -> None:
        self.closed = True


def _config(tmp_path) -> Config:
    return Config(
        runtime=RuntimeConfig(log_level="warning"),
        camera=CameraConfig(uri="fake://", stall_timeout_s=1.0),
        vision=VisionConfig(threshold=0.0),
        fusion=FusionConfig(passthrough=True, passthrough_cooldown_s=0.0),
        sinks=SinksConfig(jsonl=JsonlConfig(path=str(tmp_path / "events.jsonl"))),
        path="(test)",
    )


def test_injected_source_runs_to_its_end(tmp_path):
    dog = to_rgb(read_image(SAMPLES / "images" / "dog.jpg"))
    cam = FakeCamera([dog, dog, dog])
    d = Daemon(_config(tmp_path), sources={"camera": cam})
    d.start()
    assert d.run() == 0  # returns by itself: every source ended
    st = d.stats["vision"]
    assert cam.closed and not d.still_running
    assert st.inferences == 3  # prepared one ahead of inference: every frame handed out is classified
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(lines) == sum(d.event_counts.values()) == st.decisions == st.inferences  # threshold 0: all decide
    status = d.status()
    assert status["pipelines"]["vision"]["inferences"] == st.inferences and status["sources"]["camera"]["frames"] == 3


def test_a_stuck_read_is_seen_on_the_injected_clock(tmp_path):
    clock, block = FakeClock(), threading.Event()
    cam = FakeCamera([], block=block)
    d = Daemon(_config(tmp_path), sources={"camera": cam}, clock=clock)
    d.start()
    try:
        assert cam.reading.wait(10)
        assert d.stuck_workers() == [] and d.status()["healthy"] is True
        clock.t += d.stale_s + 1.0  # no real time passes: the prepare stage's heartbeat is now stale
        assert d.stuck_workers() == ["vision"]
        status = d.status()
        assert status["healthy"] is False and status["reason"] == "stuck: vision"
        assert status["uptime_s"] == round(d.stale_s + 1.0, 1)
    finally:
        block.set()
        d.request_stop()
        d.run()
    assert cam.closed


def test_the_run_ends_at_its_duration_on_the_injected_clock(tmp_path):
    clock = FakeClock()
    cfg = _config(tmp_path)
    cfg.runtime.duration_s = 3600.0
    cam = FakeCamera([], endless=True)
    d = Daemon(cfg, sources={"camera": cam}, clock=clock)
    d.start()
    runner = threading.Thread(target=d.run, daemon=True)
    runner.start()
    try:
        calls = clock.calls
        assert wait_until(lambda: clock.calls >= calls + 10, 30)  # the run loop goes round, reading the clock ...
        assert runner.is_alive()  # ... but an hour on the daemon's clock has not passed
        clock.t += 3600.0
        runner.join(5)
        assert not runner.is_alive() and cam.closed and not cam.ended
    finally:
        d.request_stop()
        runner.join(5)


def test_the_vision_pipeline_prepares_one_frame_ahead_of_inference():
    """A camera faster than the model: frames are prepared only when inference took the last one,
    so no preprocessing is spent on frames that are never classified."""
    from edge_runtime.defaults import model_dir
    from edge_runtime.manifest import load
    from edge_runtime.pipelines.vision import ImageClassifier

    dog = to_rgb(read_image(SAMPLES / "images" / "dog.jpg"))
    m, folder = load(model_dir("vision"))
    clf = ImageClassifier(m, folder, "litert", threads=1)
    prepared = []
    prepare = clf.prepare
    clf.prepare = lambda img: prepared.append(1) or prepare(img)
    p = VisionPipeline(FakeCamera([dog] * 1000, endless=True), clf, VisionConfig(threshold=1.0), lambda d: None)
    stop = threading.Event()
    worker = threading.Thread(target=p.run, args=(stop,))
    worker.start()
    assert wait_until(lambda: p.stats.inferences >= 20, timeout=60)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert p.stats.inferences <= len(prepared) <= p.stats.inferences + 2


def test_pipeline_names():
    assert (VisionPipeline.name, VisionPipeline.source_name) == ("vision", "camera")
