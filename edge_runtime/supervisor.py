"""Supervision: worker threads with heartbeats, the systemd watchdog, signals, reload and stop.

:meth:`Supervisor.spawn` runs a worker on a daemon thread; one that raises is logged and named in
``dead_workers``. The workers it watches (:meth:`Supervisor.watched`: objects with a ``name``,
``stats.last_beat()`` and ``ended()``, i.e. the pipelines) beat a heartbeat every loop;
:meth:`Supervisor.run` pings the systemd watchdog only while no worker died and every heartbeat is
fresher than ``stale_s`` (a worker whose source has ended is not stuck), so a stuck inference
stops the pings and systemd restarts the service. Signal handlers only set flags; ``run`` acts
on them between waits of 0.25 s: SIGHUP calls :meth:`reload`, SIGTERM/SIGINT, the end of the run
(:meth:`finished`) end the loop and call :meth:`stop`. A subclass (the daemon) says what to
watch, reload, stop and report; time is read from an injected clock (the :mod:`time` module by
default).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
HEARTBEAT_STALE_S = 10.0  # a worker silent this long is stuck (or twice the watchdog interval, if shorter)
TICK_S = 0.25  # how often run() looks at the flags, the gauges and the watchdog


class Supervisor:
    def __init__(self, notifier: Any = None, clock: Any = time) -> None:
        from .observe.systemd import Notifier

        self.notifier = notifier or Notifier()
        self.clock = clock
        self.dead_workers: dict[str, str] = {}  # worker thread -> the exception it died of
        self.still_running: list[str] = []  # worker threads stop() could not join (stuck inside a model)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stuck_logged: list[str] = []  # what the watchdog loop last logged as stuck
        self._started = clock.monotonic()
        self._lock = threading.Lock()
        interval = self.notifier.watchdog_interval_s
        self.stale_s = min(HEARTBEAT_STALE_S, 4 * interval) if interval else HEARTBEAT_STALE_S

    # --- what a subclass supervises ----------------------------------------------------
    def watched(self) -> list[Any]:
        """The workers with heartbeats."""
        return []

    def reload(self) -> bool:
        return True

    def tick(self) -> None:
        """Called every loop of :meth:`run` (gauges)."""

    def finished(self, now: float) -> bool:
        """True when the run is over by itself (a duration, the end of every file)."""
        return False

    def stop(self) -> None:
        self._stop.set()
        self.join_workers()

    # --- threads, signals and the loop ---------------------------------------------------
    def install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def spawn(self, name: str, target: Callable[[], Any]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as e:  # a worker that dies is logged and makes the daemon unhealthy
                log.exception("worker %s died", name)
                with self._lock:
                    self.dead_workers[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"

        t = threading.Thread(target=guarded, name=f"edge-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def run(self) -> int:
        """Block until stopped (signal, or :meth:`finished`), then :meth:`stop`."""
        interval = self.notifier.watchdog_interval_s
        next_ping = self.clock.monotonic()
        while not self._stop.is_set():
            self._stop.wait(TICK_S)
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            self.tick()
            now = self.clock.monotonic()
            if interval and now >= next_ping:
                self._ping_watchdog()
                next_ping = now + interval
            if self.finished(now):
                break
        self.stop()
        return 0

    def _ping_watchdog(self) -> None:
        stuck = self.stuck_workers()
        if not stuck:
            self.notifier.watchdog()
            if self._stuck_logged:
                log.info("pinging the watchdog again: %s made progress", ", ".join(self._stuck_logged))
        elif stuck != self._stuck_logged:  # once per change, not at every ping interval
            log.error(
                "not pinging the watchdog (systemd restarts the service): %s (stale after %.1f s)",
                ", ".join(stuck),
                self.stale_s,
            )
        self._stuck_logged = stuck

    def join_workers(self, last: str | None = None, before_last: Callable[[], None] | None = None) -> None:
        """Join every worker but ``last`` (up to 1 s each), call ``before_last``, then join ``last``.
        Workers still alive then (stuck inside native code) are named in ``still_running``."""
        final = [t for t in self._threads if last is not None and t.name == f"edge-{last}"]
        for t in self._threads:
            if t not in final:
                t.join(timeout=1.0)
        if before_last is not None:
            before_last()
        for t in final:
            t.join(timeout=1.0)
        self.still_running = [t.name.removeprefix("edge-") for t in self._threads if t.is_alive()]
        if self.still_running:  # daemon threads: they do not hold the process, but stay inside native code
            log.warning(
                "stopping with the %s worker still busy (stuck inside its model?); not waiting for it",
                ", ".join(self.still_running),
            )

    # --- health --------------------------------------------------------------------------
    def stuck_workers(self) -> list[str]:
        """Workers that died, or made no progress for ``stale_s`` while their source still delivers."""
        now = self.clock.monotonic()
        with self._lock:
            stuck = [f"{n} (died: {why})" for n, why in self.dead_workers.items()]
        for w in self.watched():
            if now - w.stats.last_beat() > self.stale_s and not w.ended():
                stuck.append(w.name)
        return stuck

    def health(self, down: list[str], offline: list[str]) -> tuple[bool, str]:
        """(healthy, why): unhealthy with a stuck worker or a source ``down`` (offline too long); a source
        ``offline`` for less than that is only named."""
        stuck = self.stuck_workers()
        reason = (
            (f"stuck: {', '.join(stuck)}" if stuck else "")
            or (f"offline: {', '.join(down)}" if down else "")
            or (f"reconnecting: {', '.join(offline)}" if offline else "")
        )
        return not stuck and not down, reason or "ok"

    def uptime_s(self) -> float:
        return round(self.clock.monotonic() - self._started, 1)
