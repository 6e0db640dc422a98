"""The daemon's Prometheus metrics, on a registry of their own (never the global one)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from ..events import Decision, Event

# capture -> decision: 1 ms .. 2 s
DECISION_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
# earliest capture -> fused event: fusion windows can hold decisions a little longer
EVENT_BUCKETS = DECISION_BUCKETS + (3.0, 5.0)


FPS_WINDOW_S = 5.0  # edge_pipeline_fps: the rate over this long


class Metrics:
    """All metrics of one daemon. Each instance owns its ``CollectorRegistry``.

    Names as exported: ``edge_events_total{event}``, ``edge_decisions_total{modality,label}``,
    ``edge_decision_latency_seconds{modality}``, ``edge_event_latency_seconds``,
    ``edge_frames_total{source}``, ``edge_frames_dropped_total{source}``,
    ``edge_audio_overflows_total{source}``, ``edge_source_up{source}``,
    ``edge_pipeline_fps{pipeline}``, ``edge_engine_info{pipeline,engine,device,fallback}`` (= 1),
    ``edge_sink_dropped_total{sink}``, ``edge_spool_pending{sink}``, ``edge_spool_dropped_total{sink}``.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("edge_events_total", "Fused events published", ["event"], registry=r)
        self.decisions = Counter("edge_decisions_total", "Pipeline decisions", ["modality", "label"], registry=r)
        self.decision_latency = Histogram(
            "edge_decision_latency_seconds", "Capture to decision", ["modality"], buckets=DECISION_BUCKETS, registry=r
        )
        self.event_latency = Histogram(
            "edge_event_latency_seconds", "Earliest capture to fused event", buckets=EVENT_BUCKETS, registry=r
        )
        self.frames = Counter("edge_frames_total", "Frames / audio chunks captured", ["source"], registry=r)
        self.frames_dropped = Counter(
            "edge_frames_dropped_total", "Frames dropped because the model was busy", ["source"], registry=r
        )
        self.audio_overflows = Counter("edge_audio_overflows_total", "Audio input overflows", ["source"], registry=r)
        self.source_up_gauge = Gauge("edge_source_up", "1 while the source delivers", ["source"], registry=r)
        self.fps = Gauge(
            "edge_pipeline_fps",
            f"Inferences per second of a pipeline over the last {FPS_WINDOW_S:g} s",
            ["pipeline"],
            registry=r,
        )
        self.engine = Gauge(
            "edge_engine_info",
            "What a pipeline's engine actually runs on (value is always 1)",
            ["pipeline", "engine", "device", "fallback"],
            registry=r,
        )
        self.sink_drops = Counter(
            "edge_sink_dropped_total",
            "Events a sink had to drop, for any reason (edge_spool_dropped_total included)",
            ["sink"],
            registry=r,
        )
        self.spool_pending_gauge = Gauge(
            "edge_spool_pending",
            "Events stored in a sink's spool (on disk, or in memory without a spool file) "
            "that the broker has not acknowledged yet, in flight included",
            ["sink"],
            registry=r,
        )
        self.spool_drops = Counter(
            "edge_spool_dropped_total",
            "Events removed unsent from a sink's spool, oldest first, because it was "
            "over its size or age limit (spool_max_mb, spool_max_age_days; in memory: max_queued)",
            ["sink"],
            registry=r,
        )
        self._engine_labels: dict[str, tuple[str, str, str, str]] = {}
        self._source_totals: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    # -- observations ----------------------------------------------------------------------
    def observe_decision(self, d: Decision) -> None:
        self.decisions.labels(d.modality, d.label).inc()
        self.decision_latency.labels(d.modality).observe(max(0.0, (d.t_decided - d.t_capture) / 1e9))

    def observe_event(self, e: Event) -> None:
        self.events.labels(e.name).inc()
        if e.decisions:
            self.event_latency.observe(max(0.0, e.latency_ms / 1e3))

    def source_totals(self, source: str, frames: int, dropped: int, overflows: int) -> None:
        """Follow a source's own running totals (its ``stats()``): the counters grow by what is new.

        A source started again (reload) counts from 0: its new totals become the baseline.
        """
        now = (frames, dropped, overflows)
        with self._lock:
            last = self._source_totals.get(source, (0, 0, 0))
            for counter, a, b in zip((self.frames, self.frames_dropped, self.audio_overflows), last, now):
                if b > a:
                    counter.labels(source).inc(b - a)
                else:
                    counter.labels(source)  # the series exists from the start, at 0
            self._source_totals[source] = now

    def source_up(self, source: str, up: bool) -> None:
        self.source_up_gauge.labels(source).set(1 if up else 0)

    def pipeline_fps(self, pipeline: str, fps: float) -> None:
        self.fps.labels(pipeline).set(fps)

    def engine_info(self, pipeline: str, engine: str, device: str, fallback: str | None = None) -> None:
        """Record what ``pipeline``'s engine actually runs on; replaces the pipeline's previous series.

        ``fallback`` is the reason it fell back from what was asked ("" when it did not).
        """
        labels = (pipeline, engine, device, fallback or "")
        with self._lock:
            old = self._engine_labels.get(pipeline)
            if old is not None and old != labels:
                self.engine.remove(*old)
            self._engine_labels[pipeline] = labels
            self.engine.labels(*labels).set(1)

    def sink_dropped(self, sink: str, n: int = 1) -> None:
        self.sink_drops.labels(sink).inc(n)

    def spool_pending(self, sink: str, n: int) -> None:
        self.spool_pending_gauge.labels(sink).set(n)

    def spool_dropped(self, sink: str, n: int = 1) -> None:
        self.spool_drops.labels(sink).inc(n)

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
