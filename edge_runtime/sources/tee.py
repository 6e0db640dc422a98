"""One audio source, several pipelines: the keyword and the phrase pipeline hear the same microphone.

A sound card opened directly (ALSA ``hw:``, as on a board without a sound server) can be opened
once, and a second stream of the same device would capture the same audio again anyway. So the
daemon opens the source once and :class:`SourceTee` reads it on one thread, handing every chunk,
in order, to each of its taps. A tap is what a pipeline reads (``read``, ``ended``, ``stats``,
``close``, as a source). Each tap holds at most ``capacity`` chunks: from a live source a slow
pipeline loses its oldest chunks (counted in its ``dropped``) and never holds the other one back;
from a source that is not live (a WAV file read as fast as it goes) the tee waits for room, so no
pipeline loses a chunk. The source is closed with its last tap.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

from . import SourceStats

READ_TIMEOUT_S = 0.25  # the reading thread notices a close within this


class SourceTee:
    """Reads ``source`` on one thread and gives every chunk to each of ``taps`` taps."""

    def __init__(self, source: Any, taps: int, capacity: int) -> None:
        if taps < 1 or capacity < 1:
            raise ValueError("a source tee needs at least one tap and room for one chunk")
        self.source = source
        self.lossless = not getattr(source, "live", True)
        self._cond = threading.Condition()
        self._taps = [Tap(self, capacity) for _ in range(taps)]
        self._open = taps
        self._done = False  # the reading thread has ended: the source ended or the tee closed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name=f"{source.name}-tee", daemon=True)
        self._thread.start()

    @property
    def taps(self) -> list[Tap]:
        return list(self._taps)

    def _pump(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self.source.read(timeout=READ_TIMEOUT_S)
                if chunk is None:
                    if self.source.ended:
                        break
                    continue
                chunk.samples.setflags(write=False)  # one array for every tap: no reader may change it
                with self._cond:
                    while self.lossless and not self._stop.is_set() and any(t.full for t in self._taps if t.open):
                        self._cond.wait(READ_TIMEOUT_S)
                    for t in self._taps:
                        t.put(chunk)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _closed(self) -> None:
        with self._cond:
            self._open -= 1
            last = self._open == 0
            self._cond.notify_all()
        if last:
            self._stop.set()
            self._thread.join(timeout=2 * READ_TIMEOUT_S + 1.0)
            self.source.close()


class Tap:
    """What one pipeline reads of a :class:`SourceTee`: every chunk of the source, in order."""

    def __init__(self, tee: SourceTee, capacity: int) -> None:
        self._tee = tee
        self.name = tee.source.name
        self._queue: collections.deque[Any] = collections.deque()
        self._capacity = capacity
        self._dropped = 0
        self.open = True

    @property
    def full(self) -> bool:
        return len(self._queue) >= self._capacity

    def put(self, chunk: Any) -> None:  # under the tee's lock
        if not self.open:
            return
        if self.full:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(chunk)

    def read(self, timeout: float | None = 1.0) -> Any:
        """The next chunk (waits up to ``timeout`` s; None: forever); None if none came or the source ended."""
        tee = self._tee
        with tee._cond:
            if not tee._cond.wait_for(lambda: self._queue or tee._done or not self.open, timeout):
                return None
            if not self._queue:
                return None
            chunk = self._queue.popleft()
            tee._cond.notify_all()  # a lossless tee may be waiting for room
            return chunk

    @property
    def ended(self) -> bool:
        with self._tee._cond:
            return self._tee._done and self._tee.source.ended and not self._queue

    def stats(self) -> SourceStats:
        s = self._tee.source.stats()
        return dataclasses.replace(s, dropped=s.dropped + self._dropped)

    def close(self) -> None:
        """Stop reading; the last tap to close closes the source. Safe to call twice."""
        with self._tee._cond:
            if not self.open:
                return
            self.open = False
            self._queue.clear()
        self._tee._closed()
