"""Capture sources: cameras, microphones and files -> timestamped frames and audio chunks.

Time is read once, here, with :func:`time.monotonic_ns`, and carried to the end
of the pipeline. Video never queues up (the latest frame wins, overwritten
frames are counted as dropped); audio is lossless except for counted overflows.

Every source is a :class:`Source`: it owns the counters behind :meth:`Source.stats`,
``ended``, ``start()`` / ``close()`` and, for devices that can go away, the supervisor
thread that opens the device, delivers until it fails and reopens it with capped
exponential backoff (one WARNING per outage, one INFO line when data flows again).
A subclass says only how to open, read and release its device.

Which source reads a config section is a registry: each source module registers its *kind* with
:func:`register_kind` (the section it reads, a ``claims`` test of that section, and how to open
it), and :func:`open_source` opens the first kind, in ``order``, that claims the section; ``check``
resolves the section the same way. The kinds here: the camera (``camera.py``: devices, streams,
video files, image folders, by ``uri``) reads ``[camera]``; a WAV file (``files.py``, when
``file`` is set) or a sound card (``microphone.py``) reads ``[microphone]``. Adding a source is
one module here that registers its kind.

Heavy modules (``cv2``, ``sounddevice``) are imported inside the sources that
need them, so importing this package costs only numpy.
"""

from __future__ import annotations

import collections
import functools
import importlib
import logging
import pkgutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "AudioChunk",
    "CameraSource",
    "Frame",
    "MicrophoneSource",
    "RateMeter",
    "Source",
    "SourceError",
    "SourceKind",
    "SourceStats",
    "WavFileSource",
    "open_source",
    "register_kind",
    "resolve",
]

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source the user has to fix (missing device, unreadable path); the message is one line."""


@dataclass
class Frame:
    """One camera frame: RGB uint8 (H, W, 3), captured at ``t_capture`` (``time.monotonic_ns()``)."""

    image: np.ndarray
    t_capture: int
    seq: int
    source: str


@dataclass
class AudioChunk:
    """Float32 mono audio at 16 kHz (the source's ``sample_rate``).

    ``t_capture`` is the monotonic time (ns) of the chunk's LAST sample; ``start_sample`` is the
    index of its first sample since the stream started. Consecutive chunks satisfy
    ``next.start_sample == prev.start_sample + len(prev.samples)`` unless samples were lost
    (a counted overflow or a reconnect), in which case ``start_sample`` jumps by the samples missed.
    """

    samples: np.ndarray
    t_capture: int
    start_sample: int
    source: str


@dataclass
class SourceStats:
    """A snapshot of a source's counters. For audio, ``frames`` counts chunks."""

    frames: int = 0
    dropped: int = 0
    overflows: int = 0
    reconnects: int = 0
    online: bool = False
    last_error: str | None = None
    fps: float = 0.0


class RateMeter:
    """Events per second over the last ``window`` events (not thread-safe; guard it with the caller's lock)."""

    def __init__(self, window: int = 30) -> None:
        self._t: collections.deque[int] = collections.deque(maxlen=max(2, window))

    def tick(self, t_ns: int | None = None) -> None:
        self._t.append(time.monotonic_ns() if t_ns is None else t_ns)

    def rate(self, now_ns: int | None = None, idle_s: float = 2.0) -> float:
        """The recent rate; 0 when fewer than two events or the last one is older than ``idle_s``."""
        if len(self._t) < 2:
            return 0.0
        now = time.monotonic_ns() if now_ns is None else now_ns
        if now - self._t[-1] > idle_s * 1e9:
            return 0.0
        span = self._t[-1] - self._t[0]
        return (len(self._t) - 1) * 1e9 / span if span > 0 else 0.0


_S = TypeVar("_S", bound="Source")
REOPEN = "reopen"  # what Source._deliver returns to have the device reopened at once, without an outage


class Source:
    """What every source shares: counters and :meth:`stats`, ``ended``, ``start()`` / ``close()``
    (``with source:`` does both) and the supervisor that keeps a device open.

    A device source implements :meth:`_connect` (open; raise :class:`SourceError` with the reason),
    :meth:`_deliver` (read until it fails) and :meth:`_disconnect`; :meth:`start` runs them in a
    thread of its own, reopening after ``backoff_initial_s``, doubled per failed attempt up to
    ``backoff_max_s``. A source without a device to lose (a file read in the caller's thread)
    overrides :meth:`start` instead. Counters are guarded by ``_cond``, which also wakes waiting consumers.
    """

    noun = "source"  # how log lines name it: "camera 'front' offline: ..."
    thread_prefix = "source"
    retry = "reconnecting"
    _label = ""  # the device, stream or file, as the log shows it (secrets redacted)

    def __init__(self, name: str, backoff_initial_s: float = 0.5, backoff_max_s: float = 10.0) -> None:
        self.name = name
        self.backoff_initial_s, self.backoff_max_s = float(backoff_initial_s), float(backoff_max_s)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._frames = 0
        self._dropped = 0
        self._reconnects = 0
        self._online = False
        self._ever_online = False
        self._outage = False
        self._ended = False
        self._last_error: str | None = None
        self._rate = RateMeter()

    # -- public -----------------------------------------------------------------------------------------

    def start(self: _S) -> _S:
        """Open the device (what :meth:`_open_first` raises, it raises) and start the supervisor. Returns self."""
        if self._threads:
            return self
        self._stop.clear()
        first = self._open_first()
        self._spawn(self._supervise, "", first)
        return self

    @property
    def ended(self) -> bool:
        """True once a source with an end (a file without ``loop``) has delivered all of it."""
        return self._ended

    @property
    def live(self) -> bool:
        """Whether it delivers at the rate of capture (a device, a paced file): a slow reader then loses
        the oldest data; one that is not live (a file read as fast as it goes) waits for its reader."""
        return True

    def stats(self) -> SourceStats:
        with self._cond:
            return SourceStats(
                frames=self._frames,
                dropped=self._dropped,
                overflows=self._overflow_total(),
                reconnects=self._reconnects,
                online=self._online,
                last_error=self._last_error,
                fps=round(self._rate.rate(), 2),
            )

    def close(self) -> None:
        """Stop the threads and release the device; returns within about a second. Safe to call twice."""
        self._stop.set()
        with self._cond:
            self._online = False
            self._cond.notify_all()
        self._wake()
        deadline = time.monotonic() + 1.0
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():  # blocked inside the backend; it releases the device itself when it returns
                log.debug("%s %r: %s still busy in the backend", self.noun, self.name, t.name)
        self._threads = []
        self._release()

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what a device source implements ----------------------------------------------------------------

    def _open_first(self) -> Any:
        """Called by start(): a handle opened there (its errors reach the caller), or None to open it in the thread."""
        return None

    def _connect(self) -> Any:
        raise NotImplementedError

    def _deliver(self, handle: Any) -> tuple[bool, str | None]:
        """Read until the device fails or the source stops: (data flowed, the reason; None: stop or ended; REOPEN)."""
        raise NotImplementedError

    def _disconnect(self, handle: Any) -> None:
        pass

    def _release(self) -> None:
        """After close() joined the threads."""

    def _wake(self) -> None:
        """Wake a consumer waiting on something other than ``_cond``."""

    def _overflow_total(self) -> int:
        return 0

    # -- supervision ------------------------------------------------------------------------------------

    def _spawn(self, target: Any, suffix: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=f"{self.thread_prefix}-{self.name}{suffix}", daemon=True)
        self._threads.append(t)
        t.start()

    def _supervise(self, handle: Any = None) -> None:
        delay = self.backoff_initial_s
        while not self._stop.is_set():
            flowed, reason = self._session(handle)
            handle = None
            if reason is None:
                break
            if reason == REOPEN:
                continue
            self._set_offline(reason)
            if flowed:
                delay = self.backoff_initial_s
            log.debug("%s %r: next attempt in %.1f s", self.noun, self.name, delay)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2.0, self.backoff_max_s)
        with self._cond:
            self._online = False
            self._cond.notify_all()

    def _session(self, handle: Any) -> tuple[bool, str | None]:
        """Open (unless ``handle`` is open already), deliver, release; errors become the reason."""
        try:
            if handle is None:
                handle = self._connect()
        except SourceError as e:
            return False, str(e)
        except Exception as e:  # a backend error must not kill the thread
            return False, f"cannot open {self._label}: {type(e).__name__}: {e}"
        try:
            return self._deliver(handle)
        except Exception as e:
            return False, f"read error: {type(e).__name__}: {e}"
        finally:
            try:
                self._disconnect(handle)
            except Exception:
                pass

    def _mark_online(self) -> None:
        """Data flows (call with ``_cond`` held): online; an outage ends (logged, a reconnect if it flowed before)."""
        self._online = True
        if self._outage:
            self._outage = False
            if self._ever_online:
                self._reconnects += 1
            log.info("%s %r: online again (%s)", self.noun, self.name, self._label)
        self._ever_online = True

    def _set_offline(self, reason: str) -> None:
        with self._cond:
            self._online = False
            self._last_error = reason
            first = not self._outage
            self._outage = True
        if first:
            log.warning(
                "%s %r offline: %s; %s (backoff %g..%g s)",
                self.noun,
                self.name,
                reason,
                self.retry,
                self.backoff_initial_s,
                self.backoff_max_s,
            )
        else:
            log.debug("%s %r still offline: %s", self.noun, self.name, reason)

    def _set_ended(self) -> None:
        with self._cond:
            self._ended = True
            self._online = False
            self._cond.notify_all()
        log.info("%s %r: %s ended", self.noun, self.name, self._label)


Opener = Callable[[str, Any, Any], Source]  # (source name, section config, claimed target) -> an unstarted source


@dataclass(frozen=True)
class SourceKind:
    section: str  # the config section it reads: "camera", "microphone"
    name: str
    # section config -> what this kind reads (its target), or None if it does not read this section;
    # SourceError (one line) if it is this kind's but unusable (a missing file: `check` refuses it too)
    claims: Callable[[Any], Any]
    open: Opener
    order: int
    key: str  # the key of the section its claim reads (where a config error points)


_KINDS: list[SourceKind] = []  # filled by register_kind() in the source modules


def register_kind(
    section: str, name: str, claims: Callable[[Any], Any], key: str, order: int = 100
) -> Callable[[Opener], Opener]:
    """Decorator of a source module's opener: the kind ``name`` reads ``[section]`` when ``claims``
    returns a target for it (reading the section's ``key``); lower ``order`` is asked first."""

    def deco(open_: Opener) -> Opener:
        _KINDS.append(SourceKind(section, name, claims, open_, order, key))
        _KINDS.sort(key=lambda k: k.order)
        return open_

    return deco


@functools.cache
def _import_source_modules() -> None:
    """Each module of this package, once: importing one registers its kinds (cv2 and sounddevice
    are still imported only when a source opens)."""
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


class SourceConfigError(SourceError):
    """A source section no kind can read; ``key`` is the section's key at fault."""

    def __init__(self, key: str, msg: str) -> None:
        super().__init__(msg)
        self.key = key


def resolve(section: str, cfg: Any) -> tuple[SourceKind, Any]:
    """The kind that reads ``[section]`` (config ``cfg``) and its target; SourceConfigError if none does."""
    _import_source_modules()
    for kind in _KINDS:
        if kind.section == section:
            try:
                target = kind.claims(cfg)
            except SourceError as e:
                raise SourceConfigError(kind.key, str(e)) from None
            if target is not None:
                return kind, target
    raise SourceConfigError("", f"no source kind reads this [{section}] section")


def open_source(section: str, name: str, cfg: Any) -> Source:
    """The source of ``[section]``, started."""
    kind, target = resolve(section, cfg)
    return kind.open(name, cfg, target).start()


# Lazy: importing the package does not import the modules that need cv2 / sounddevice.
# (The device listing is edge_runtime.sources.devices.devices(); the submodule shares its name.)
def __getattr__(name: str):
    if name == "CameraSource":
        from .camera import CameraSource

        return CameraSource
    if name == "MicrophoneSource":
        from .microphone import MicrophoneSource

        return MicrophoneSource
    if name == "WavFileSource":
        from .files import WavFileSource

        return WavFileSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
