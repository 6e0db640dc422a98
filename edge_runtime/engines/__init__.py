"""Engines: one file per inference engine behind a small registry.

Each engine module (``litert.py``, ``onnx.py``, ...) defines an :class:`Engine` subclass with its
config ``name`` and artifact ``format`` and decorates it with ``@register``; this package imports
every module beside it once, so adding an engine is adding one file. The modules import their
runtime (ONNX Runtime, LiteRT) only when an engine is opened, so a board without one of them still
imports the package and runs the others.

``open_artifact(artifact, folder)`` opens one artifact on the engine registered for its format.
``open_engine(manifest, folder, engine)`` opens one artifact of a manifest:
an engine name (``litert``, ``onnx``) names the format; ``auto`` chooses:

- a **streaming** model (explicit state, called every few tens of milliseconds
  for as long as the board runs): every artifact that loads is opened and
  probed briefly: a few calls each on zero inputs (the state is external, so
  the calls leave nothing behind), taken in turn, each after 10 ms of idle time
  as between the steps of a live stream, and timed with the **process** CPU
  clock, so a thread pool that works or spins beside the call is counted. The
  artifact with the least CPU time per step (one call, median) is kept. Wall
  latency is not the question: any of them keeps up with real time, and the CPU
  they use is the board's heat and power. The choice and the figures are
  logged (INFO); the probe adds about 0.15 s to loading the model.
- any other model: the artifact the converter measured fastest on its host
  (``fastest_on_host``), else the first that loads.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from ..manifest import Artifact, Manifest
from .base import REGISTRY, Acceleration, Delegate, Engine, EngineError, Placement

log = logging.getLogger(__name__)

for _m in pkgutil.iter_modules(__path__):  # each engine module registers its engine
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")
ENGINES = {cls.name: fmt for fmt, cls in REGISTRY.items()}  # engine name -> artifact format
PROBE_CALLS = 6  # auto on a streaming model: timed calls per artifact ...
PROBE_IDLE_S = 0.01  # ... each after this much idle time (adds calls x artifacts x this to the load)


def open_artifact(
    artifact: Artifact,
    folder: str | Path,
    threads: int | None = None,
    accel: Acceleration | None = None,
    check_io: bool = True,
) -> Engine:
    """Open one artifact of a manifest on the engine for its format; its inputs and outputs must be
    the model's own (``check_io=False``: take them from the model, as the converter does when it
    writes the manifest)."""
    cls = REGISTRY.get(artifact.format)
    if cls is None:
        raise EngineError(f"artifact {artifact.id}: no engine for format {artifact.format!r}")
    engine = cls.from_artifact(artifact, Path(folder), threads, accel or Acceleration(), check_io)
    engine.artifact = artifact
    return engine


def open_engine(
    manifest: Manifest,
    folder: str | Path,
    engine: str = "auto",
    threads: int | None = None,
    accel: Acceleration | None = None,
) -> Engine:
    """Open the manifest's artifact for ``engine`` (an engine name, or an artifact id such as
    ``tflite-int8``). ``auto``: for a streaming model the artifact with the least CPU time per step,
    probed here (:func:`cpu_per_step`); else the converter's fastest on its host, else the first that
    loads."""
    if engine != "auto":
        ids = [a.id for a in manifest.artifacts]
        if engine not in ENGINES and engine not in ids:
            raise EngineError(f"unknown engine {engine!r}; use one of: auto, {', '.join([*ENGINES, *ids])}")
        return open_artifact(manifest.artifact(ENGINES.get(engine, engine)), folder, threads, accel)
    order = sorted(manifest.artifacts, key=lambda a: a.id != manifest.fastest_on_host)
    opened: list[Engine] = []
    errors = []
    for a in order:
        try:
            opened.append(open_artifact(a, folder, threads, accel))
        except EngineError as e:
            errors.append(str(e))
        if opened and not manifest.streaming:
            return opened[0]
    if not opened:
        raise EngineError("; ".join(errors) or "manifest lists no artifacts")
    if len(opened) == 1:
        return opened[0]
    cpu = cpu_per_step(opened)
    best = min(range(len(opened)), key=cpu.__getitem__)
    log.info(
        "%s: auto engine %s (%s), %s",
        manifest.name,
        opened[best].name,
        opened[best].placement.device,
        ", ".join(f"{e.name} {c * 1e3:.3f} ms" for e, c in zip(opened, cpu)) + " CPU per step",
    )
    return opened[best]


def cpu_per_step(engines: list[Engine], calls: int = PROBE_CALLS, idle_s: float = PROBE_IDLE_S) -> list[float]:
    """Process CPU seconds of one call of each engine on zero inputs, each call after ``idle_s`` of
    blocking wait as between the steps of a live stream: the median of ``calls`` calls, taken in turn.

    The wait matters: in a tight loop caches and thread pools stay warm, and on the shipped keyword
    model that ranks the engines the other way round from a live stream."""
    feeds = [[np.zeros(t.shape, t.dtype) for t in e.inputs] for e in engines]
    for e, x in zip(engines, feeds):  # first calls allocate and warm up
        e.run_raw(*x)
    idle = threading.Event()  # never set: each wait is a blocking sleep
    samples: list[list[float]] = [[] for _ in engines]
    for _ in range(calls):
        for e, x, s in zip(engines, feeds, samples):
            idle.wait(idle_s)
            t = time.process_time()
            e.run_raw(*x)
            s.append(time.process_time() - t)
    return [statistics.median(s) for s in samples]


__all__ = [
    "ENGINES",
    "Acceleration",
    "Delegate",
    "Engine",
    "EngineError",
    "Placement",
    "cpu_per_step",
    "open_artifact",
    "open_engine",
]
