"""Audio files as a microphone: :class:`WavFileSource` has the same ``read()`` as :class:`MicrophoneSource`.

It is a :class:`~edge_runtime.sources.Source` without a device to lose: no supervisor thread;
``start()`` reads the whole file, ``read()`` cuts and paces it in the caller's thread.

(Image folders and video files are :class:`~edge_runtime.sources.camera.CameraSource` modes.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import AudioChunk, Source, SourceError, register_kind

MAX_WAV_SECONDS = 600.0  # a file source holds its audio in memory (10 min: 38 MB at 16 kHz)


class WavFileSource(Source):
    """A WAV file (any rate / channels, read as float32 mono at ``sample_rate``) in ``block_ms`` chunks.

    ``realtime=True`` paces the chunks to the wall clock (a 1 s file takes about 1 s), as a
    microphone would deliver them; ``realtime=False`` returns them as fast as they are read.
    ``loop=True`` starts over at the end; ``start_sample`` keeps counting across loops. The file
    is held in memory, so it may be at most ``MAX_WAV_SECONDS`` long.
    """

    def __init__(
        self,
        name: str,
        path: str | Path,
        realtime: bool = True,
        block_ms: float = 100,
        loop: bool = False,
        sample_rate: int = 16000,
    ) -> None:
        if block_ms <= 0:
            raise SourceError(f"audio file source {name!r}: block_ms must be > 0, got {block_ms}")
        super().__init__(name)
        self.path = Path(path)
        self.realtime = bool(realtime)
        self.block_ms = float(block_ms)
        self.loop = bool(loop)
        self.sample_rate = int(sample_rate)
        self.block = max(1, int(round(self.sample_rate * self.block_ms / 1000)))
        self._audio: np.ndarray | None = None
        self._pos = 0  # position in the file
        self._emitted = 0  # samples since the stream started (across loops)
        self._t0_ns: int | None = None
        self._read_lock = threading.Lock()  # read() waits holding it; the counters are under _cond

    def start(self) -> WavFileSource:
        """Read and decode the file (SourceError naming the file if unusable). Returns self."""
        if self._audio is None:
            from ..audio.wav import AudioError, read_wav

            try:
                audio = read_wav(self.path, self.sample_rate, max_seconds=MAX_WAV_SECONDS)
            except AudioError as e:
                raise SourceError(str(e)) from None
            if len(audio) == 0:
                raise SourceError(f"{self.path}: contains no audio samples; record or copy it again")
            self._audio = audio
            with self._cond:
                self._online = not self._stop.is_set()
        return self

    @property
    def live(self) -> bool:
        return self.realtime

    def read(self, timeout: float | None = 1.0) -> AudioChunk | None:
        """The next chunk; None at the end (``ended`` is then True) or if it is not due within ``timeout``."""
        if self._audio is None:
            self.start()
        assert self._audio is not None
        with self._read_lock:
            if self._stop.is_set() or self._ended:
                return None
            if self._pos >= len(self._audio):
                if not self.loop:
                    with self._cond:
                        self._ended, self._online = True, False
                    return None
                self._pos = 0
            n = min(self.block, len(self._audio) - self._pos)
            if self._t0_ns is None:
                self._t0_ns = time.monotonic_ns()
            due_ns = self._t0_ns + int((self._emitted + n) * 1e9 / self.sample_rate)
            if self.realtime:
                wait = (due_ns - time.monotonic_ns()) / 1e9
                if wait > 0:
                    if timeout is not None and wait > timeout:
                        self._stop.wait(timeout)
                        return None
                    if self._stop.wait(wait):
                        return None
                t_capture = due_ns  # the last sample "arrives" at its place on the wall clock
            else:
                t_capture = time.monotonic_ns()
            samples = self._audio[self._pos : self._pos + n].copy()
            chunk = AudioChunk(samples=samples, t_capture=t_capture, start_sample=self._emitted, source=self.name)
            self._pos += n
            self._emitted += n
            with self._cond:
                self._frames += 1
                self._rate.tick(t_capture)
            return chunk

    def __repr__(self) -> str:
        return f"WavFileSource({self.name!r}, {str(self.path)!r})"


def _claims(m: Any) -> str | None:
    """``[microphone] file``: the WAV file, which must be there (a device may come later, a file not)."""
    if not m.file:
        return None
    if not Path(m.file).is_file():
        raise SourceError(f"{m.file}: no such file")
    return str(m.file)


@register_kind("microphone", "wav file", claims=_claims, key="file", order=10)
def _open(name: str, m: Any, path: str) -> WavFileSource:
    return WavFileSource(name, path, realtime=m.realtime, block_ms=m.block_ms, loop=m.loop)
