"""``edge-runtime bench``: how fast each model runs on this board, artifact by artifact.

For every artifact of every model (the config's models, ``--model`` folders, else the shipped
ones), opened as the daemon opens it (its engine, threads, delegates and providers):

- **raw**: the engine alone, called on a prepared input in a loop: calls per second, latency
  p50 / p99 and process CPU per call (a thread pool that works or spins beside the call counts);
- **pipeline**: what the daemon does per frame or step, measured on the daemon's own code:
  vision -- the vision pipeline (prepare thread + inference, latest frame wins) on a source that
  always has a new 640x480 frame, and the ``classify`` path (one thread: prepare, infer, top-k);
  keywords -- the keyword spotter on 20 ms chunks of the sample speech: real-time factor, streams
  per core (audio seconds per CPU second) and engine time / pipeline time;
- rounds of raw and pipeline alternate, and each ratio is the median of per-round ratios, so
  both see the same load on a busy board;
- where a manifest has a float and a quantized artifact of one format: quantized ÷ float speed;
- the process: cold start (a fresh interpreter importing edge_runtime, loading the models and
  running a first inference) and its peak resident memory.

Nothing beyond the runtime's own dependencies is needed; TensorFlow is never imported.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .defaults import SAMPLES, model_dir
from .engines import Acceleration
from .manifest import Manifest, load

CHUNK_S = 0.02  # a microphone block
FRAME_SHAPE = (480, 640, 3)  # a typical camera frame
ROUNDS = 5  # raw and pipeline alternate this many times per artifact


@dataclass
class Target:
    """One model to measure: its folder and how the daemon would open it."""

    folder: Path
    threads: int | None = None
    accel: Acceleration = field(default_factory=Acceleration)
    kind: Any = None  # a config's model: its pipeline kind and section, to build the model as the daemon does
    section: Any = None

    def model(self, artifact_id: str, default: Any) -> Any:
        """The model on ``artifact_id``: a config's as its pipeline builds it (a phrase model with its
        grammar and decoder), else ``default(artifact_id)``."""
        if self.kind is not None:
            return self.kind.load_model(replace(self.section, engine=artifact_id))
        return default(artifact_id)


@dataclass
class Timing:
    per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # process CPU per call

    @staticmethod
    def of(walls: list[float], cpu_s: float) -> Timing:
        lat = np.asarray(walls) * 1e3
        return Timing(
            len(walls) / max(1e-9, float(np.sum(walls))),
            float(np.percentile(lat, 50)),
            float(np.percentile(lat, 99)),
            cpu_s * 1e3 / len(walls),
        )


def time_calls(fn: Any, seconds: float, min_calls: int = 5) -> Timing:
    """``fn()`` in a loop for about ``seconds`` (at least ``min_calls`` times): wall per call and CPU."""
    walls: list[float] = []
    c0, end = time.process_time(), time.perf_counter() + seconds
    while len(walls) < min_calls or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
    return Timing.of(walls, time.process_time() - c0)


def _median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(num, den))


def _frame() -> np.ndarray:
    """A sample photo at camera size (noise if the samples are not installed)."""
    from .preprocess import read_image

    photos = sorted((SAMPLES / "images").glob("*.jpg"))
    if not photos:
        return np.random.default_rng(0).integers(0, 256, FRAME_SHAPE, dtype=np.uint8)
    import cv2

    return cv2.resize(read_image(photos[0]), (FRAME_SHAPE[1], FRAME_SHAPE[0]))


class _NewFrames:
    """A camera that always has a new frame: the pipeline runs as fast as it can."""

    ended = False

    def __init__(self, image: np.ndarray) -> None:
        from .sources import Frame

        self.frame, self.seq, self._frame_cls = image, 0, Frame

    def latest(self, timeout: float | None = 1.0) -> Any:
        self.seq += 1
        return self._frame_cls(image=self.frame, t_capture=time.monotonic_ns(), seq=self.seq, source="bench")

    def close(self) -> None:
        pass


def _daemon_path(clf: Any, image: np.ndarray, seconds: float) -> tuple[float, float]:
    """(inferences per second, CPU ms per inference) of the daemon's vision pipeline in its steady state.

    Timed from the first inference to the last within ``seconds``: starting the pipeline's threads and
    stopping them (a loop notices the stop within its read timeout) are not part of a frame's cost.
    With fewer than two inferences in that time, the whole run is the measure.
    """
    from .config import VisionConfig
    from .pipelines.vision_pipeline import VisionPipeline

    p = VisionPipeline(_NewFrames(image), clf, VisionConfig(threshold=1.0), lambda d: None)
    marks: list[tuple[float, float]] = []  # (wall, process CPU) at each inference
    observe = p.observe

    def marked(t_capture: int) -> int:
        t_dec = observe(t_capture)
        marks.append((time.perf_counter(), time.process_time()))
        return t_dec

    p.observe = marked  # type: ignore[method-assign]
    stop = threading.Event()
    worker = threading.Thread(target=p.run, args=(stop,), daemon=True)
    c_start, t_start = time.process_time(), time.perf_counter()
    worker.start()
    stop.wait(seconds)
    stop.set()
    worker.join()
    if len(marks) >= 2:
        (w0, c0), (w1, c1), n = marks[0], marks[-1], len(marks) - 1
    else:
        (w0, c0), (w1, c1), n = (t_start, c_start), (time.perf_counter(), time.process_time()), max(1, len(marks))
    return n / (w1 - w0), (c1 - c0) * 1e3 / n


def bench_vision(man: Manifest, target: Target, artifact_id: str, seconds: float) -> dict[str, Any]:
    from .pipelines.vision import ImageClassifier

    clf = target.model(artifact_id, lambda a: ImageClassifier(man, target.folder, a, target.threads, target.accel))
    image = _frame()
    x = clf.prepare(image)
    for _ in range(3):  # warm up
        clf.top(image)
    share = seconds / (3 * ROUNDS)
    raw, daemon, classify = [], [], []
    for _ in range(ROUNDS):
        raw.append(time_calls(lambda: clf.engine.run_raw(x), share))
        daemon.append(_daemon_path(clf, image, share))
        classify.append(time_calls(lambda: clf.top(image), share))
    raw_rates = [r.per_s for r in raw]
    return {
        "raw": _merged(raw),
        "daemon_per_s": statistics.median(d[0] for d in daemon),
        "daemon_cpu_ms": statistics.median(d[1] for d in daemon),
        "daemon_vs_raw": _median_ratio([d[0] for d in daemon], raw_rates),
        "classify": _merged(classify),
        "classify_vs_raw": _median_ratio([c.per_s for c in classify], raw_rates),
        "device": clf.engine.placement.device,
        "frame": "x".join(map(str, FRAME_SHAPE[1::-1])),
    }


def _merged(ts: list[Timing]) -> dict[str, float]:
    """Per-round timings as one row: medians over the rounds."""
    return {k: statistics.median(getattr(t, k) for t in ts) for k in ("per_s", "p50_ms", "p99_ms", "cpu_ms")}


def _speech() -> np.ndarray:
    from .audio.wav import read_wav

    path = SAMPLES / "audio" / "keywords.wav"
    if path.is_file():
        return read_wav(path, 16000)
    return (np.random.default_rng(0).standard_normal(16000 * 5) * 0.01).astype(np.float32)


def bench_keywords(man: Manifest, target: Target, artifact_id: str, seconds: float) -> dict[str, Any]:
    from .pipelines.audio import KeywordSpotter

    kws = target.model(artifact_id, lambda a: KeywordSpotter(man, target.folder, a, target.threads, accel=target.accel))
    audio, chunk = _speech(), int(16000 * CHUNK_S)
    feeds = [np.zeros(t.shape, t.dtype) for t in kws.engine.inputs]
    calls = [0]
    run_raw = kws.engine.run_raw

    def counted(*a: np.ndarray) -> list[np.ndarray]:
        calls[0] += 1
        return run_raw(*a)

    share = seconds / (2 * ROUNDS)
    raw, rtf, cpu_rtf, engine_share = [], [], [], []
    pos = 0
    for _ in range(ROUNDS):
        raw.append(time_calls(lambda: run_raw(*feeds), share))
        kws.engine.run_raw = counted  # type: ignore[method-assign]
        calls[0], fed = 0, 0
        c0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < share or fed == 0:
            kws.process(audio[pos : pos + chunk])
            pos = (pos + chunk) % (len(audio) - chunk)
            fed += chunk
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        kws.engine.run_raw = run_raw  # type: ignore[method-assign]
        rtf.append(wall / (fed / 16000))
        cpu_rtf.append(cpu / (fed / 16000))
        engine_share.append(calls[0] / raw[-1].per_s / wall)
    return {
        "raw": _merged(raw),
        "rtf": statistics.median(rtf),
        "streams_per_core": 1.0 / max(1e-9, statistics.median(cpu_rtf)),
        "engine_vs_pipeline": statistics.median(engine_share),
        "chunk_ms": CHUNK_S * 1e3,
        "device": kws.engine.placement.device,
        "decoding": hasattr(kws, "decoder"),  # a phrase model's grammar decoder is part of the time
    }


COLD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from pathlib import Path
from edge_runtime.manifest import load
from edge_runtime.pipelines.vision import ImageClassifier
from edge_runtime.pipelines.audio import KeywordSpotter
for folder in sys.argv[1:]:
    m, f = load(Path(folder))
    if m.streaming:
        KeywordSpotter(m, f).process(np.zeros(1600, np.float32))
    else:
        ImageClassifier(m, f).top(np.zeros((480, 640, 3), np.uint8))
print(json.dumps({"cold_start_s": time.perf_counter() - t0,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def cold_start(folders: list[Path], runs: int = 3) -> dict[str, Any]:
    """A fresh interpreter loading ``folders`` (engine ``auto``) and running one inference of each."""
    out = []
    for _ in range(runs):
        p = subprocess.run(
            [sys.executable, "-c", COLD, *map(str, folders)], capture_output=True, text=True, timeout=300
        )
        if p.returncode != 0:
            return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return {
        "cold_start_s": statistics.median(r["cold_start_s"] for r in out),
        "max_rss_mb": max(r["max_rss_mb"] for r in out),
        "tensorflow_imported": any(r["tensorflow_imported"] for r in out),
    }


def _quantized_vs_float(man: Manifest, rows: list[dict[str, Any]]) -> None:
    """Each quantized artifact's raw speed over the float artifact of its format, when there is one."""
    by_id = {r["artifact"]: r for r in rows}
    for a in man.artifacts:
        floats = [f for f in man.artifacts if f.format == a.format and f.precision.startswith(("float", "fp"))]
        if floats and a.id != floats[0].id and a.id in by_id and floats[0].id in by_id:
            by_id[a.id]["vs_float"] = by_id[a.id]["raw"]["per_s"] / by_id[floats[0].id]["raw"]["per_s"]


def bench(targets: list[Target], seconds: float) -> dict[str, Any]:
    """Every artifact of every target, then the process; the JSON ``--json`` prints."""
    from .engines import EngineError

    models = []
    for t in targets:
        man, folder = load(t.folder)
        t.folder = folder
        rows = []
        for a in man.artifacts:
            row: dict[str, Any] = {"artifact": a.id, "format": a.format, "precision": a.precision}
            try:
                fn = bench_keywords if man.streaming else bench_vision
                row.update(fn(man, t, a.id, seconds))
            except EngineError as e:
                row["error"] = str(e)
            rows.append(row)
        _quantized_vs_float(man, rows)
        models.append({"model": man.name, "folder": str(folder), "streaming": man.streaming, "artifacts": rows})
    return {
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": _cpus()},
        "seconds_per_artifact": seconds,
        "models": models,
        "process": cold_start([t.folder for t in targets]),
        "bench_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def table(result: dict[str, Any]) -> str:
    """The terminal table of a :func:`bench` result."""
    rows = [(m, r) for m in result["models"] for r in m["artifacts"]]
    wm = max([5, *(len(m["model"]) for m, _ in rows)])
    wa = max([8, *(len(r["artifact"]) for _, r in rows)])
    wd = max([6, *(len(r.get("device", "")) for _, r in rows)])
    lines = [
        f"{'model':<{wm}} {'artifact':<{wa}} {'device':<{wd}} {'raw/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU ms':>7}  pipeline"
    ]
    for m, r in rows:
        head = f"{m['model']:<{wm}} {r['artifact']:<{wa}} "
        if "error" in r:
            lines.append(head + f"not run: {r['error']}")
            continue
        raw = r["raw"]
        lines.append(
            head + f"{r['device']:<{wd}} {raw['per_s']:>8.1f} {raw['p50_ms']:>7.3f} {raw['p99_ms']:>7.3f} "
            f"{raw['cpu_ms']:>7.3f}  {_pipeline_text(m, r)}"
        )
    p = result["process"]
    lines.append(
        f"cold start {p['cold_start_s']:.2f} s, peak RSS {p['max_rss_mb']:.0f} MB (all models, a fresh process)"
        if "error" not in p
        else f"cold start: {p['error']}"
    )
    h = result["host"]
    lines.append(f"host: {h['machine']}, {h['cpus']} CPUs, Python {h['python']}")
    return "\n".join(lines)


def _pipeline_text(m: dict[str, Any], r: dict[str, Any]) -> str:
    speed = f", {r['vs_float']:.2f}x float" if "vs_float" in r else ""
    if m["streaming"]:
        return (
            f"RTF {r['rtf']:.4f}{' with decoding' if r.get('decoding') else ''}, {r['streams_per_core']:.0f} "
            f"streams/core, engine {r['engine_vs_pipeline']:.0%} of the time{speed}"
        )
    return (
        f"daemon {r['daemon_per_s']:.1f}/s ({r['daemon_vs_raw']:.2f} of raw), "
        f"classify {r['classify']['per_s']:.1f}/s ({r['classify_vs_raw']:.2f}){speed}"
    )


def targets_of(config: Path | None, models: list[Path] | None, grammar: Path | None = None) -> list[Target]:
    """The models of a config (as its sections open them), else the ``--model`` folders (a phrase model
    with ``grammar`` as ``[asr]`` would open it), else the shipped ones."""
    if config is not None:
        from .config import load as load_config
        from .pipelines.runner import kinds, model_folder

        cfg = load_config(config)
        return [
            Target(model_folder(s.model, k.model_kind), s.threads, s, k, s)
            for k in kinds().values()
            if (s := cfg.section(k.name)) is not None and hasattr(s, "model")
        ]
    if models:
        return [_model_target(Path(m), grammar) for m in models]
    return [Target(model_dir("vision")), Target(model_dir("kws"))]


def _model_target(folder: Path, grammar: Path | None) -> Target:
    if grammar is None or "asr" not in (load(folder)[0].metrics or {}):
        return Target(folder)
    from .pipelines.asr_pipeline import AsrConfig, AsrPipeline

    section = AsrConfig(model=str(folder), grammar=str(grammar))
    return Target(folder, None, section, AsrPipeline, section)


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
