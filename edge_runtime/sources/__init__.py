"""Capture sources: cameras, microphones and files -> timestamped frames and audio chunks.

Time is read once, here, with :func:`time.monotonic_ns`, and carried to the end
of the pipeline. Video never queues up (the latest frame wins, overwritten
frames are counted as dropped); audio is lossless except for counted overflows.

Heavy modules (``cv2``, ``sounddevice``) are imported inside the sources that
need them, so importing this package costs only numpy.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AudioChunk",
    "CameraSource",
    "Frame",
    "MicrophoneSource",
    "RateMeter",
    "Source",
    "SourceError",
    "SourceStats",
    "WavFileSource",
]


class SourceError(Exception):
    """A source the user has to fix (missing device, unreadable path); the message is one line."""


class Source:
    """What every source shares: ``with source:`` starts it and closes it."""

    def start(self):
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


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
