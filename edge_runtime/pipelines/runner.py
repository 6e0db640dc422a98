"""Running pipelines: each one a source, the model that reads it, a read policy and its stats.

    camera --latest frame wins--> VisionPipeline: prepare thread --slot of one, newest wins--> inference
    microphone --every chunk, in order--> AudioPipeline: keyword spotter, chunk by chunk

and both --Decision--> ``emit`` (the daemon's fusion stage). Each pipeline is one ``*_pipeline``
module of this package that registers its class (:func:`register`; ``vision_pipeline.py``,
``audio_pipeline.py``); the class names its config section (also the modality and its worker's
name), its source section, and how to load its model; a pipeline declared outside
:mod:`edge_runtime.config` brings the dataclasses of its sections (``config``,
``source_config``). :func:`build_pipelines` makes one pipeline per loaded model, on an injected
source or the one its config describes.

``Pipeline.run(stop)`` loops on the worker thread the supervisor gives it until ``stop`` is set or
its source has ended (a file that does not loop), beating its heartbeat every loop. The model and
its config section are one pair (``loaded``), swapped whole on a reload (``swap``); a loop reads the
pair once per frame or chunk. Time is read from an injected clock (anything with ``monotonic()``
and ``monotonic_ns()``; the :mod:`time` module by default), the sources' capture times with
``time.monotonic_ns``.
"""

from __future__ import annotations

import collections
import functools
import importlib
import math
import pkgutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..defaults import model_dir
from ..engines import Acceleration
from ..events import Decision
from ..sources import open_source

DEFAULT_STALL_S = 2.0  # a source offline longer than this (a camera: its stall_timeout_s) makes /healthz 503
P = TypeVar("P", bound=type["Pipeline"])
READ_TIMEOUT_S = 0.25  # a loop waits this long for a frame or chunk before it beats again
TAP_SECONDS = 5.0  # audio a pipeline sharing its source with another may fall behind before it loses the oldest


def accel_of(section: Acceleration) -> Acceleration:
    """A model section (an Acceleration itself), its named providers checked even when LiteRT runs the model."""
    from ..engines.onnx import check_providers

    check_providers(list(section.providers) + list(section.provider_options))
    return section


def model_folder(spec: str, kind: str) -> Path:
    return model_dir(kind) if spec == "default" else Path(spec)


@dataclass
class PipelineStats:
    """One pipeline's counters and heartbeats (the last 2000 latencies)."""

    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    decisions: int = 0
    inferences: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    beats: dict[str, float] = field(default_factory=dict)  # thread stage -> last loop time
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def beat(self, stage: str = "main") -> None:
        self.beats[stage] = self.clock()

    def last_beat(self) -> float:
        """The stalest stage's last beat (a pipeline is stuck if any of its threads is)."""
        return min(self.beats.values(), default=self.started)

    def snapshot(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        elapsed = max(1e-9, self.clock() - self.started)
        return {
            "inferences": self.inferences,
            "decisions": self.decisions,
            "rate_per_s": round(self.inferences / elapsed, 2),
            "latency_ms": {
                "p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
                "p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
            },
        }


class Pipeline:
    """One modality: a source, the model reading it, a read policy (``run``) and stats.

    Subclasses set ``name`` (the config section and worker name; also the modality unless they set
    ``modality``) and ``source_name``, and
    implement :meth:`load_model` and :meth:`run`; the source is opened from the registry of source kinds.
    A model has ``labels`` (what its decisions can say), ``manifest`` and the ``engine`` it runs on."""

    name: ClassVar[str]
    modality: ClassVar[str] = ""  # what its decisions and fusion conditions call it; "" = its name
    source_name: ClassVar[str]
    reads: ClassVar[str] = "data"  # what its source gives, for messages: "frames", "audio"
    model_kind: ClassVar[str] = ""  # its shipped model (edge_runtime.defaults.model_dir) for model = "default"
    order: ClassVar[int] = 100  # lower loads, starts and reports first
    # the dataclasses of its [name] and [source_name] sections, when not fields of edge_runtime.config.Config
    config: ClassVar[type | None] = None
    source_config: ClassVar[type | None] = None

    def __init__(
        self,
        source: Any,
        model: Any,
        section: Any,
        emit: Callable[[Decision], None],
        clock: Any = time,
        stall_s: float = DEFAULT_STALL_S,
    ) -> None:
        self.source = source
        self.loaded = (model, section)  # one pair: a reload swaps both at once
        self.emit = emit
        self.clock = clock
        self.stall_s = stall_s  # offline this long: unhealthy
        self.stats = PipelineStats(clock.monotonic)
        self.offline_since: float | None = None  # when the source was last seen go offline
        self._marks: deque = deque()  # (time, inferences) over the fps window

    @classmethod
    def build(
        cls, cfg: Any, model: Any, emit: Callable[[Decision], None], source: Any = None, clock: Any = time
    ) -> Pipeline:
        """The pipeline of ``model`` on ``source``, else on the source its config describes (opened here)."""
        return cls(
            source if source is not None else cls.open_source(cfg),
            model,
            cfg.section(cls.name),
            emit,
            clock,
            cls.stall_of(cfg),
        )

    # --- per modality ------------------------------------------------------------------
    @classmethod
    def load_model(cls, section: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def open_source(cls, cfg: Any) -> Any:
        """The source of the pipeline's config section, of the registered kind that reads it, started."""
        return open_source(cls.source_name, cls.source_name, cfg.section(cls.source_name))

    @classmethod
    def stall_of(cls, cfg: Any) -> float:
        return DEFAULT_STALL_S

    @staticmethod
    def event_names(model: Any) -> list[str]:
        """Names of the passthrough events of this model's decisions that sinks announce (MQTT discovery)."""
        return []

    @staticmethod
    def extra_status(model: Any) -> dict[str, Any]:
        return {}

    def run(self, stop: threading.Event) -> None:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        return self.loaded[0]

    def swap(self, model: Any, section: Any) -> None:
        self.loaded = (model, section)

    def ended(self) -> bool:
        return self.source.ended

    def close(self) -> None:
        self.source.close()

    def observe(self, t_capture: int) -> int:
        """Count one inference of what was captured at ``t_capture``; the decision time (ns)."""
        t_dec = self.clock.monotonic_ns()
        self.stats.inferences += 1
        self.stats.latencies_ms.append((t_dec - t_capture) / 1e6)
        return t_dec

    def status(self) -> dict[str, Any]:
        m = self.model
        pl = m.engine.placement
        return {
            "model": m.manifest.name,
            "engine": pl.engine,
            "device": pl.device,
            "fallback_reason": pl.fallback_reason,
            **self.extra_status(m),
            **self.stats.snapshot(),
        }

    def source_status(self) -> dict[str, Any]:
        s = self.source.stats()
        return {
            "online": s.online,
            "frames": s.frames,
            "dropped": s.dropped,
            "overflows": s.overflows,
            "reconnects": s.reconnects,
            "fps": round(s.fps, 2),
            "last_error": s.last_error,
        }

    def update_gauges(self, metrics: Any, now: float, window_s: float) -> None:
        """The source's gauges, when it went offline, and the recent inference rate (not the lifetime average)."""
        st = self.source.stats()
        metrics.source_up(self.source_name, st.online)
        if st.online or self.ended():
            self.offline_since = None
        elif self.offline_since is None:
            self.offline_since = now
        metrics.source_totals(self.source_name, st.frames, st.dropped, st.overflows)
        self._marks.append((now, self.stats.inferences))
        while len(self._marks) > 2 and now - self._marks[1][0] >= window_s:
            self._marks.popleft()
        t0, n0 = self._marks[0]
        metrics.pipeline_fps(self.name, (self.stats.inferences - n0) / (now - t0) if now > t0 else 0.0)


_REGISTERED: list[type[Pipeline]] = []  # filled by @register in the pipeline modules


def register(cls: P) -> P:
    """Class decorator of a pipeline module: the daemon runs ``cls`` when its config section is set."""
    cls.modality = cls.__dict__.get("modality") or cls.name  # not a registered base class's
    _REGISTERED.append(cls)
    _REGISTERED.sort(key=lambda k: k.order)
    return cls


@functools.cache
def _import_pipeline_modules() -> None:
    """Each ``*_pipeline`` module of this package, once: importing one registers its pipeline."""
    from .. import pipelines

    for m in pkgutil.iter_modules(pipelines.__path__):
        if m.name.endswith("_pipeline"):
            importlib.import_module(f"{pipelines.__name__}.{m.name}")


def kinds() -> dict[str, type[Pipeline]]:
    """Every registered pipeline by name (its config section and modality), in the order they load,
    start and report."""
    _import_pipeline_modules()
    return {k.name: k for k in _REGISTERED}


def build_pipelines(
    cfg: Any, models: Any, emit: Callable[[Decision], None], sources: dict[str, Any] | None = None, clock: Any = time
) -> list[Pipeline]:
    """One pipeline per loaded model, in registry order, each on its source from ``sources`` (by source
    name) or the one its config describes, opened here; if one fails, those already open are closed again.

    Audio pipelines of one source (keywords and phrases on the microphone) share it: it is opened once
    and each reads a tap of a :class:`~edge_runtime.sources.tee.SourceTee`, every chunk in order."""
    from ..sources.tee import SourceTee

    loaded = [(kind, model) for kind in kinds().values() if (model := getattr(models, kind.name)) is not None]
    readers = collections.Counter(kind.source_name for kind, _ in loaded if kind.reads == "audio")
    taps: dict[str, list[Any]] = {}
    built: list[Pipeline] = []
    try:
        for kind, model in loaded:
            source = (sources or {}).get(kind.source_name)
            if kind.reads == "audio" and readers[kind.source_name] > 1:
                if kind.source_name not in taps:
                    shared = source if source is not None else kind.open_source(cfg)
                    block_ms = getattr(cfg.section(kind.source_name), "block_ms", 80)
                    taps[kind.source_name] = SourceTee(
                        shared, readers[kind.source_name], max(1, math.ceil(TAP_SECONDS * 1000 / block_ms))
                    ).taps
                source = taps[kind.source_name].pop(0)
            built.append(kind.build(cfg, model, emit, source, clock))
    except BaseException:
        for p in built:
            p.close()
        for left in taps.values():
            for tap in left:
                tap.close()
        raise
    return built
