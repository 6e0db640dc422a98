"""Nothing spins on the board: while audio streams in real time, the process's CPU time stays a
small multiple of the CPU time spent inside engine calls.

Real engines on the shipped models; audio paced to the wall clock by blocking waits, as a
microphone delivers it. Only CPU times are compared, never wall-clock times:

- the process's (``time.process_time``: every thread, engine pools included),
- the calling thread's inside every engine call (``time.thread_time`` around ``run_raw``),
- each Python thread's (``time.pthread_getcpuclockid``), so what is left is the CPU of the
  threads Python did not start: engine and BLAS pools.

Two bounds. The process may use at most ``MAX_RATIO`` times the CPU of its engine calls: the
pipelines' own work (the audio front end, image decoding, the daemon's threads) measured 2.7x to
5.6x of it at a live cadence here, an ONNX Runtime pool that busy-waits between calls 21x to 86x.
And the threads Python did not start may use at most what the other cores could do beside each
call (``POOL_SHARE``): a pool that works in parallel with the caller stays below that, one that
spins does not.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import numpy as np
import pytest
from conftest import have, require

from edge_runtime.engines.base import Engine

MAX_RATIO = 8.0  # process CPU / CPU inside engine calls
POOL_SHARE = max(1, (os.cpu_count() or 1) - 1)  # CPU of non-Python threads / CPU inside engine calls
SECONDS = 3.0  # measured streaming
WARMUP_S = 1.0  # before measuring: first calls, pools and BLAS threads settle


class CallMeter:
    """Counts engine calls and the calling thread's CPU time inside them (every engine's run_raw)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls, self.cpu_s = 0, 0.0
        self._lock = threading.Lock()
        run_raw = Engine.run_raw

        def timed(engine: Engine, *arrays: np.ndarray) -> list[np.ndarray]:
            t = time.thread_time()
            out = run_raw(engine, *arrays)
            dt = time.thread_time() - t
            with self._lock:
                self.calls += 1
                self.cpu_s += dt
            return out

        monkeypatch.setattr(Engine, "run_raw", timed)

    def snapshot(self) -> tuple[int, float]:
        with self._lock:
            return self.calls, self.cpu_s


@dataclasses.dataclass
class CpuSample:
    process_s: float
    python_threads_s: dict[int, float]  # thread ident -> its CPU seconds

    @classmethod
    def now(cls) -> CpuSample:
        threads = {}
        for t in threading.enumerate():
            try:
                threads[t.ident] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except (OSError, TypeError):  # ended in between
                pass
        return cls(time.process_time(), threads)


def check(what: str, calls: int, call_cpu: float, before: CpuSample, after: CpuSample) -> None:
    process = after.process_s - before.process_s
    python = sum(c - before.python_threads_s.get(i, 0.0) for i, c in after.python_threads_s.items())
    pools = max(0.0, process - python)
    ratio, pool_ratio = process / call_cpu, pools / call_cpu
    print(
        f"{what}: {calls} engine calls, {call_cpu * 1e3:.1f} ms CPU in them; process {process * 1e3:.1f} ms "
        f"(ratio {ratio:.2f}), threads Python did not start {pools * 1e3:.1f} ms (ratio {pool_ratio:.2f})"
    )
    assert ratio <= MAX_RATIO, (
        f"{what}: the process used {ratio:.1f}x the CPU time of its {calls} engine calls "
        f"({process * 1e3:.0f} ms vs {call_cpu * 1e3:.0f} ms): something spins"
    )
    assert pool_ratio <= POOL_SHARE, (
        f"{what}: threads Python did not start (engine or BLAS pools) used "
        f"{pool_ratio:.1f}x the CPU time of the engine calls ({pools * 1e3:.0f} ms): "
        "a pool spins between calls"
    )


def test_keyword_stream_on_onnx_does_not_spin(monkeypatch):
    require(have("onnxruntime"), "onnxruntime is not installed (pip install 'edge-runtime[onnx]')")
    from edge_runtime.audio.wav import read_wav
    from edge_runtime.defaults import SAMPLES, model_dir
    from edge_runtime.manifest import load
    from edge_runtime.pipelines.audio import KeywordSpotter

    m, folder = load(model_dir("kws"))
    kws = KeywordSpotter(m, folder, engine="onnx")  # threads unset: ONNX Runtime's own pool
    sr = m.preprocessing.audio.sample_rate
    audio = read_wav(SAMPLES / "audio" / "keywords.wav", sr)
    chunk = sr // 50  # 20 ms, as the microphone delivers it
    meter = CallMeter(monkeypatch)
    gate = threading.Event()  # never set: a blocking wait until the next chunk is due
    warmup, n = int(WARMUP_S * 50), int((WARMUP_S + SECONDS) * 50)
    t0 = time.monotonic()
    for i in range(n):
        if i == warmup:
            before, (calls0, cpu0) = CpuSample.now(), meter.snapshot()
        start = (i * chunk) % (len(audio) - chunk)
        kws.process(audio[start : start + chunk])
        wait = t0 + (i + 1) * 0.02 - time.monotonic()
        if wait > 0:
            gate.wait(wait)
    after, (calls1, cpu1) = CpuSample.now(), meter.snapshot()
    assert calls1 - calls0 >= ((n - warmup) // 2 - 1) * kws.lanes  # a step per 2 chunks, on every lane
    check(f"keywords on {kws.engine.placement.device}", calls1 - calls0, cpu1 - cpu0, before, after)


@pytest.mark.parametrize("engine", ["auto", "onnx"])
def test_demo_daemon_does_not_spin(tmp_path, monkeypatch, engine):
    if engine == "onnx":
        require(have("onnxruntime"), "onnxruntime is not installed (pip install 'edge-runtime[onnx]')")
    from edge_runtime.config import JsonlConfig
    from edge_runtime.demo import demo_config
    from edge_runtime.service import Daemon

    cfg = demo_config()  # the sample photos at 1 fps, the keyword recording in real time, HTTP status on
    cfg = dataclasses.replace(
        cfg,
        runtime=dataclasses.replace(cfg.runtime, duration_s=None),
        vision=dataclasses.replace(cfg.vision, engine=engine),
        audio=dataclasses.replace(cfg.audio, engine=engine),
        sinks=dataclasses.replace(cfg.sinks, jsonl=JsonlConfig(path=str(tmp_path / "events.jsonl"))),
    )
    meter = CallMeter(monkeypatch)
    d = Daemon(cfg)
    d.start()
    runner = threading.Thread(target=d.run, name="daemon-main-loop")  # its watchdog / gauges loop counts too
    runner.start()
    idle = threading.Event()  # never set: blocking waits
    try:
        idle.wait(WARMUP_S)
        before, (calls0, cpu0) = CpuSample.now(), meter.snapshot()
        idle.wait(SECONDS)
        after, (calls1, cpu1) = CpuSample.now(), meter.snapshot()
    finally:
        d.request_stop()
        runner.join(5.0)
    chunks = (WARMUP_S + SECONDS) * 1000 / cfg.microphone.block_ms  # the microphone blocks of the run, in real time
    assert d.stats["vision"].inferences >= 2 and d.stats["audio"].inferences >= chunks / 2
    check(
        f"demo daemon ({engine}): vision on {d.models.vision.engine.placement.device}, keywords on "
        f"{d.models.audio.engine.placement.device}",
        calls1 - calls0,
        cpu1 - cpu0,
        before,
        after,
    )


def test_auto_picks_the_streaming_artifact_with_the_least_cpu_per_step(caplog):
    require(have("onnxruntime"), "onnxruntime is not installed (pip install 'edge-runtime[onnx]')")
    import logging
    import re

    from edge_runtime.defaults import model_dir
    from edge_runtime.engines import ENGINES, open_engine
    from edge_runtime.manifest import load

    m, folder = load(model_dir("kws"))
    with caplog.at_level(logging.INFO, logger="edge_runtime.engines"):
        chosen = open_engine(m, folder, "auto")
    probe = [r.getMessage() for r in caplog.records if r.getMessage().endswith("CPU per step")]
    assert len(probe) == 1, caplog.text
    figures = {name: float(ms) for name, ms in re.findall(r"\b(litert|onnx) ([0-9.]+) ms", probe[0])}
    assert set(figures) == {"litert", "onnx"} and all(v > 0 for v in figures.values()), probe[0]
    assert chosen.name == min(figures, key=figures.__getitem__), probe[0]

    vm, vfolder = load(model_dir("vision"))  # not streaming: the converter's fastest, nothing probed
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge_runtime.engines"):
        vision = open_engine(vm, vfolder, "auto")
    assert ENGINES[vision.name] == vm.artifact(vm.fastest_on_host).format
    assert not any("CPU per step" in r.getMessage() for r in caplog.records)
