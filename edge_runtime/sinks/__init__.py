"""Where Events go: JSON lines, MQTT (with Home Assistant discovery), and the HTTP side
(health, status, Prometheus metrics).

Every sink implements the small :class:`Sink` base: ``publish(event)`` never blocks the
caller for long (network sinks hand the event to their own bounded queue and thread, and
count what they have to drop), ``close()`` flushes within about a second.

The submodules are imported by whoever needs them, so importing this package pulls in
neither paho-mqtt nor prometheus-client.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..events import Event
    from .metrics import Metrics

log = logging.getLogger(__name__)


class SinkError(Exception):
    """A sink that cannot be set up (bad path, port in use...); the message is one line."""


class Sink:
    """Base class of every event sink.

    Subclasses implement :meth:`publish` and, when they hold resources, :meth:`close`.
    Drops (a full queue, a failed write) are reported through :meth:`_drop`, which counts
    them in :attr:`dropped` and, when a :class:`~edge_runtime.sinks.metrics.Metrics` was
    given, in ``edge_sink_dropped_total{sink=<name>}``.
    """

    name: str = "sink"

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._drop_lock = threading.Lock()
        self._dropped = 0

    def publish(self, event: Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release resources, within about a second. Safe to call twice."""

    @property
    def dropped(self) -> int:
        """Events this sink had to drop so far."""
        return self._dropped

    def status(self) -> dict[str, Any]:
        """A small JSON-able summary for ``/status``."""
        return {"dropped": self._dropped}

    def _drop(self, n: int = 1, why: str = "") -> None:
        with self._drop_lock:
            self._dropped += n
            first = self._dropped == n
        if first and why:
            log.warning("%s sink: dropping events (%s); further drops are only counted", self.name, why)
        if self._metrics is not None:
            self._metrics.sink_dropped(self.name, n)

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Sink", "SinkError"]
