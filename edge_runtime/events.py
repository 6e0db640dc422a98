"""What flows through the daemon: Decisions from the pipelines, Events out of fusion.

Time is captured once, at the source (``time.monotonic_ns()``), and carried to
the end, so every latency is measurable without extra instrumentation. Wall
clock time (``time.time_ns()``) is added only where a human or another machine
reads it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Decision:
    """One pipeline's verdict on one frame or audio step."""

    modality: str  # "vision" | "audio"
    label: str
    score: float
    t_capture: int  # monotonic ns when the frame / the last audio sample was captured
    t_decided: int  # monotonic ns when the pipeline produced the decision
    source: str  # source name from the config, e.g. "camera", "mic"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return (self.t_decided - self.t_capture) / 1e6

    def to_dict(self) -> dict[str, Any]:
        d = {
            "modality": self.modality,
            "label": self.label,
            "score": round(self.score, 4),
            "source": self.source,
            "latency_ms": round(self.latency_ms, 3),
        }
        if self.extra:
            d.update(self.extra)
        return d


@dataclass(frozen=True)
class Event:
    """A fused outcome with the Decisions that caused it.

    ``id`` is unique per event (a random UUID, 32 hex digits) and goes out with it to every sink,
    so a consumer of an at-least-once sink (MQTT with its spool) can drop a duplicate delivery.
    """

    name: str
    score: float
    t_event: int  # monotonic ns when fusion emitted it
    decisions: tuple[Decision, ...]
    rule: str = ""
    wall_time_ns: int = field(default_factory=time.time_ns)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def latency_ms(self) -> float:
        """From the earliest capture among its decisions to the event."""
        return (self.t_event - min(d.t_capture for d in self.decisions)) / 1e6 if self.decisions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.name,
            "score": round(self.score, 4),
            "rule": self.rule,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.wall_time_ns / 1e9))
            + f".{(self.wall_time_ns // 1_000_000) % 1000:03d}Z",
            "latency_ms": round(self.latency_ms, 3),
            "decisions": [d.to_dict() for d in self.decisions],
        }
