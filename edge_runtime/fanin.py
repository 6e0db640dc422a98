"""Fan-in: every pipeline's decisions -> one bounded queue -> fusion -> events -> the sinks.

:meth:`FusionStage.emit` is called on the pipelines' threads and never blocks: a full queue
drops the decision (counted, logged). :meth:`FusionStage.run` is the fusion worker: it takes
decisions in order, feeds them to the current :class:`~edge_runtime.fusion.Fusion` (re-read per
decision, so a reload may swap it), counts the events by name and their decision->event
latency (bounded), and hands each event to ``publish`` (the sinks). :meth:`FusionStage.end`
queues the end mark behind every decision: the worker drains the queue, then returns.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .events import Decision, Event
from .fusion import Fusion

log = logging.getLogger(__name__)


class FusionStage:
    def __init__(self, fusion: Fusion, queue_size: int, metrics: Any, publish: Callable[[Event], None]) -> None:
        self.fusion = fusion
        self.decisions: queue.Queue[Decision | None] = queue.Queue(maxsize=queue_size)
        self.metrics = metrics
        self.publish = publish
        self.event_counts: dict[str, int] = {}  # per event name (bounded by the configured names and labels)
        self.event_latencies_ms: deque = deque(maxlen=5000)
        self.dropped_decisions = 0
        self._lock = threading.Lock()

    def emit(self, d: Decision) -> None:
        self.metrics.observe_decision(d)
        try:
            self.decisions.put_nowait(d)
        except queue.Full:
            with self._lock:
                self.dropped_decisions += 1
            log.warning("decision queue full: dropped %s %s (fusion is behind)", d.modality, d.label)

    def run(self) -> None:
        while True:
            d = self.decisions.get()
            if d is None:
                return
            for ev in self.fusion.add(d):  # self.fusion is re-read per decision (a reload may swap it)
                self.metrics.observe_event(ev)
                with self._lock:
                    self.event_counts[ev.name] = self.event_counts.get(ev.name, 0) + 1
                    self.event_latencies_ms.append((ev.t_event - max(x.t_decided for x in ev.decisions)) / 1e6)
                self.publish(ev)

    def end(self) -> None:
        """The end mark, behind every decision queued so far (waits up to 1 s for room)."""
        try:
            self.decisions.put(None, timeout=1.0)
        except queue.Full:
            log.warning("fusion did not drain its queue at stop: %d decisions not fused", self.decisions.qsize())

    def totals(self) -> tuple[int, int]:
        """(events so far, decisions dropped so far)."""
        with self._lock:
            return sum(self.event_counts.values()), self.dropped_decisions
