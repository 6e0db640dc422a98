"""WAV files as the microphone delivers audio: float32 mono in [-1, 1] at the model's rate.

``soundfile`` (libsndfile) decodes every WAV kind (PCM 8-32 bit, float, extensible), a block at
a time; the header is checked first (:func:`wav_info`) so a broken, truncated or absurd file is one
line before anything is decoded. Rate conversion goes through :class:`Resampler` (``soxr``),
shared by the file and the microphone paths.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Iterator
from dataclasses import dataclass
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


MIN_RATE, MAX_RATE = 1000, 384_000  # Hz: what a WAV of speech can hold; outside it the header is wrong
MAX_CHANNELS = 32
BLOCK_S = 1.0  # seconds decoded at a time: a file is never decoded whole


@dataclass(frozen=True)
class WavInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


_PLAIN_FORMATS = (1, 3, 0xFFFE)  # PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE
_UNKNOWN_SIZE = 0xFFFFFFFF  # written by streaming encoders that cannot seek back
_MAX_CHUNKS = 64  # chunks before the audio (fmt, fact, LIST, ...): real files have a handful


def _riff_problem(path: Path) -> str | None:
    """What is wrong with a RIFF/WAVE header, read chunk by chunk without decoding; None if nothing.

    Checks what libsndfile lets pass: a block size that does not match channels x bits, and a data
    chunk promising more bytes than the file holds (a truncated copy). Other containers: None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        fmt = None
        for _ in range(_MAX_CHUNKS):
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            kind, length = chunk[:4], int.from_bytes(chunk[4:], "little")
            if kind == b"fmt " and length >= 16:
                fmt = f.read(16)
                f.seek(length - 16 + (length & 1), os.SEEK_CUR)
            elif kind == b"data":
                break
            else:
                f.seek(length + (length & 1), os.SEEK_CUR)
        else:
            return f"no data chunk among the first {_MAX_CHUNKS} chunks of the header"
        data_start = f.tell()
    if fmt is None:
        return None
    tag, channels = int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[2:4], "little")
    block, bits = int.from_bytes(fmt[12:14], "little"), int.from_bytes(fmt[14:16], "little")
    if tag in _PLAIN_FORMATS and (bits not in (8, 16, 24, 32, 64) or block != channels * bits // 8):
        return (
            f"the header's sample format is inconsistent ({channels} channel(s) of {bits} bits in {block}-byte frames)"
        )
    if length != _UNKNOWN_SIZE and length > size - data_start:
        return (
            f"truncated: the header promises {length} bytes of audio but the file holds "
            f"{max(0, size - data_start)}; copy it again"
        )
    return None


def wav_info(path: str | os.PathLike[str], sample_rate: int = 16000, max_seconds: float | None = None) -> WavInfo:
    """Check a WAV file from its header, decoding nothing; :class:`AudioError` (one line) if unusable.

    Refused: a missing, empty or non-audio file; a sample rate outside 1..384 kHz or more than 32
    channels (a broken header); no samples; data shorter than the header promises (a truncated
    copy); longer than ``max_seconds``.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a WAV file" if path.is_dir() else "no such file"
        raise AudioError(f"{path}: {what}; check the path")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file; record or copy it again")
    try:
        i = soundfile.info(str(path))
    except soundfile.LibsndfileError:
        raise AudioError(f"{path}: not a readable WAV file; {_convert_hint(path, sample_rate)}") from None
    except OSError as e:
        raise AudioError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from None
    if not MIN_RATE <= i.samplerate <= MAX_RATE or not 1 <= i.channels <= MAX_CHANNELS:
        raise AudioError(
            f"{path}: the header says {i.samplerate} Hz, {i.channels} channel(s), which no recording "
            f"has; {_convert_hint(path, sample_rate)}"
        )
    if i.frames <= 0:
        raise AudioError(f"{path}: contains no audio samples; record or copy it again")
    problem = _riff_problem(path)
    if problem:
        raise AudioError(f"{path}: {problem}")
    info = WavInfo(path, int(i.samplerate), int(i.channels), int(i.frames))
    if max_seconds is not None and info.seconds > max_seconds:
        raise AudioError(f"{path}: {info.seconds:.0f} s long, more than {max_seconds:g} s; cut it into shorter files")
    return info


def wav_blocks(info: WavInfo, sample_rate: int, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """The file's audio as float32 mono in [-1, 1] at ``sample_rate``, about ``block_s`` seconds at a time.

    NaN or infinite samples (a broken float WAV) are an :class:`AudioError` naming the time.
    """
    import soundfile

    block = max(1, round(block_s * info.sample_rate))
    resampler = Resampler(info.sample_rate, sample_rate)
    done = 0
    try:
        with soundfile.SoundFile(str(info.path)) as f:
            while True:
                x = f.read(block, dtype="float32", always_2d=True)
                last = len(x) < block
                if not np.isfinite(x).all():
                    t = (done + int(np.argmax(~np.isfinite(x).all(axis=1)))) / info.sample_rate
                    raise AudioError(
                        f"{info.path}: holds NaN or infinite samples (first at {t:.2f} s); re-export it as 16-bit PCM"
                    )
                done += len(x)
                y = resampler.process(to_mono(np.clip(x, -1.0, 1.0)), last=last)  # float files may hold 1e38
                if len(y):
                    yield np.clip(y, -1.0, 1.0)
                if last:
                    return
    except soundfile.LibsndfileError as e:
        raise AudioError(f"{info.path}: cannot be decoded ({e}); {_convert_hint(info.path, sample_rate)}") from None


def read_wav(path: str | os.PathLike[str], sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """A whole (short) WAV file as float32 mono in [-1, 1] at ``sample_rate``; :class:`AudioError` if unusable."""
    blocks = list(wav_blocks(wav_info(path, sample_rate, max_seconds), sample_rate))
    return np.concatenate(blocks).astype(np.float32, copy=False) if blocks else np.zeros(0, np.float32)


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
