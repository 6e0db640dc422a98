"""WAV files as the microphone delivers audio: float32 mono in [-1, 1] at the model's rate.

PCM 8/16/24/32-bit is read with the stdlib ``wave``; IEEE-float and other WAVs
fall back to ``soundfile`` when it is installed. Rate conversion goes through
:class:`Resampler` (``soxr``), shared by the file and the microphone paths.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write

QUALITY = "HQ"


class AudioError(Exception):
    """An audio file the user has to fix; the message is one line naming the file."""


def _convert_hint(path: Path, sample_rate: int) -> str:
    return f"convert it with 'ffmpeg -i {path.name} -ar {sample_rate} -ac 1 OUT.wav'"


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,) float32, channels averaged."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise ValueError(f"to_mono takes (frames,) or (frames, channels), got shape {x.shape}")
    if x.shape[1] == 1:
        return x[:, 0].astype(np.float32)
    return x.mean(axis=1, dtype=np.float64).astype(np.float32)


class Resampler:
    """Streaming sample-rate conversion (soxr, HQ); a pass-through when the rates are equal."""

    def __init__(self, sr_in: int, sr_out: int) -> None:
        if sr_in <= 0 or sr_out <= 0:
            raise ValueError(f"Resampler needs positive rates, got {sr_in} -> {sr_out}")
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._stream: Any = None

    def process(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next mono chunk; ``last=True`` flushes, and the next call starts a new stream."""
        x = np.ascontiguousarray(to_mono(chunk), dtype=np.float32)
        if self.sr_in == self.sr_out:
            return x
        if self._stream is None:
            import soxr

            self._stream = soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32", quality=QUALITY)
        y = self._stream.resample_chunk(x, last=last)
        if last:
            self._stream = None
        return np.asarray(y, dtype=np.float32)

    def reset(self) -> None:
        """Drop buffered samples and start a new stream."""
        self._stream = None


def _decode_pcm(raw: bytes, width: int, channels: int) -> np.ndarray:
    frame = width * channels
    raw = raw[: len(raw) - len(raw) % frame]  # a truncated last frame
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)  # sign-extend 24 bits
        x = v.astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        raise ValueError(f"{8 * width}-bit PCM")
    return x.reshape(-1, channels)


def _read_wave(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        channels, width, sr = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(w.getnframes())
    return _decode_pcm(raw, width, channels), sr


def _read_soundfile(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        raise AudioError(f"{path}: not a PCM WAV file the stdlib can read and soundfile is not installed; "
                         f"{_convert_hint(path, sample_rate)} or 'pip install soundfile'") from None
    try:
        x, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception:
        raise AudioError(f"{path}: not a readable WAV file; {_convert_hint(path, sample_rate)}") from None
    return np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), int(sr)


def read_wav(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """Read a WAV file as float32 mono in [-1, 1] at ``sample_rate``; :class:`AudioError` if unusable."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a WAV file" if path.is_dir() else "no such file"
        raise AudioError(f"{path}: {what}; check the path")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file; record or copy it again")
    try:
        x, sr = _read_wave(path)
    except (wave.Error, EOFError, ValueError):
        x, sr = _read_soundfile(path, sample_rate)
    except OSError as e:
        raise AudioError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from None
    if len(x) == 0 or sr <= 0:
        raise AudioError(f"{path}: contains no audio samples; record or copy it again")
    y = Resampler(sr, sample_rate).process(to_mono(x), last=True)
    return np.clip(y, -1.0, 1.0).astype(np.float32, copy=False)


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM mono atomically (a temp file in the same folder, renamed into place)."""
    path = Path(path)
    x = np.clip(to_mono(np.asarray(samples, dtype=np.float32)), -1.0, 1.0)
    pcm = np.round(x * 32767.0).astype("<i2")
    with atomic_write(path, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
