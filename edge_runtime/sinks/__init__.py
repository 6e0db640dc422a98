"""Where Events go: JSON lines, MQTT (with Home Assistant discovery), a webhook.

Every sink implements the small :class:`Sink` base: ``publish(event)`` never blocks the
caller for long (network sinks hand the event to their own bounded queue and thread, and
count what they have to drop), ``close()`` flushes within about a second.

Sinks are built from their ``[sinks.<table>]`` config table by a builder that the sink's
module registers with :func:`register` (``jsonl.py``; ``mqtt_settings.py`` for ``mqtt.py``);
:func:`open_sinks` imports every module of this package and builds the sinks whose table is
set. Adding a sink is one new file here that declares its table's config dataclass where it
registers (``webhook.py``, the README's worked example); the config loader checks that table
like any other.
The HTTP status server and the metrics are not sinks (they serve, they do not write events
out): they live in :mod:`edge_runtime.observe`, and the daemon starts the server itself.

Importing this package alone pulls in neither paho-mqtt nor prometheus-client.
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config
    from ..events import Event
    from ..observe.metrics import Metrics

log = logging.getLogger(__name__)


class SinkError(Exception):
    """A sink that cannot be set up (bad path, port in use...); the message is one line."""


class Sink:
    """Base class of every event sink.

    Subclasses implement :meth:`publish` and, when they hold resources, :meth:`close`.
    Drops (a full queue, a failed write) are reported through :meth:`_drop`, which counts
    them in :attr:`dropped` and, when a :class:`~edge_runtime.observe.metrics.Metrics` was
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


@dataclass(frozen=True)
class SinkSetup:
    """What a sink builder gets: the whole config, the metrics, and the event names fusion can emit."""

    cfg: Config
    metrics: Metrics | None = None
    event_names: tuple[str, ...] = ()


Builder = Callable[[Any, SinkSetup], Sink]  # (the sink's config table, setup) -> an open sink


@dataclass(frozen=True)
class _Entry:
    table: str
    build: Builder
    order: int
    config: type | None  # the dataclass of its table, when the sink declares it (else a field of SinksConfig)


_BUILDERS: dict[str, _Entry] = {}  # [sinks.<table>] -> its builder; filled by register() in the sink modules


def register(table: str, config: type | None = None, order: int = 100) -> Callable[[Builder], Builder]:
    """Decorator of a sink module's builder for ``[sinks.<table>]``. ``config``: the dataclass of the
    table (checked by the config loader like every other table); lower ``order`` opens (and
    publishes) first."""

    def deco(build: Builder) -> Builder:
        _BUILDERS[table] = _Entry(table, build, order, config)
        return build

    return deco


@functools.cache
def _import_sink_modules() -> None:
    """Each module of this package, once: importing one registers its sink."""
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


def _entries() -> list[_Entry]:
    _import_sink_modules()
    return sorted(_BUILDERS.values(), key=lambda e: e.order)


def builders() -> list[tuple[str, Builder]]:
    """Every registered (table, builder), in opening order."""
    return [(e.table, e.build) for e in _entries()]


def config_tables() -> dict[str, type]:
    """The ``[sinks.<table>]`` tables that sinks declare themselves, with their config dataclasses."""
    return {e.table: e.config for e in _entries() if e.config is not None}


def open_sinks(setup: SinkSetup) -> list[Sink]:
    """The sinks of every ``[sinks.<table>]`` that is set, in opening order; if one fails, those
    already open are closed again and its SinkError propagates."""
    sinks: list[Sink] = []
    try:
        for table, build in builders():
            section = getattr(setup.cfg.sinks, table, None) or setup.cfg.sinks.more.get(table)
            if section is not None:
                sinks.append(build(section, setup))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


__all__ = ["Sink", "SinkError", "SinkSetup", "builders", "config_tables", "open_sinks", "register"]
