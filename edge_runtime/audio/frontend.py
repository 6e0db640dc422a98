"""The one streaming log-mel front end, used by training, conversion, evaluation and the daemon.

Frame ``k`` covers samples ``[k*hop, k*hop + win)`` (no centre padding): periodic
Hann window, zero-padded to ``n_fft``, power spectrum, HTK-mel triangles,
``log(mel + 1e-6)``. Every step is computed per frame in a fixed order (the mel
projection avoids BLAS, whose summation order depends on the batch size), so
feeding a clip in chunks of any size yields bitwise the same frames as
:func:`log_mel` on the whole clip. numpy only.
"""

from __future__ import annotations

import functools

import numpy as np

from ..manifest import AudioPreprocessing

LOG_FLOOR = 1e-6
_BLOCK = 1024  # frames per FFT batch; bounds memory on long clips, results are per frame


def _win_hop(p: AudioPreprocessing) -> tuple[int, int]:
    return round(p.sample_rate * p.window_ms / 1000), round(p.sample_rate * p.hop_ms / 1000)


def n_frames(n_samples: int, p: AudioPreprocessing) -> int:
    """Number of complete frames in ``n_samples`` samples."""
    win, hop = _win_hop(p)
    return 0 if n_samples < win else (n_samples - win) // hop + 1


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(fmin)), _hz_to_mel(np.float64(fmax)), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    rise = (freqs[:, None] - lo) / (mid - lo)
    fall = (hi - freqs[:, None]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(rise, fall)).astype(np.float32)
    fb.flags.writeable = False
    return fb


def mel_filterbank(p: AudioPreprocessing) -> np.ndarray:
    """HTK-mel triangular filters, (n_fft//2 + 1, n_mels) float32, peak 1; cached, read-only."""
    return _filterbank(p.sample_rate, p.n_fft, p.n_mels, float(p.fmin), float(p.fmax))


@functools.lru_cache(maxsize=16)
def _gather(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """The filterbank as (bin index, weight) pairs of shape (L, n_mels): row j is the j-th bin of each filter."""
    fb = _filterbank(sample_rate, n_fft, n_mels, fmin, fmax).astype(np.float64)
    nz = fb > 0
    first = np.where(nz.any(axis=0), nz.argmax(axis=0), 0)
    width = nz.sum(axis=0)
    length = max(int(width.max()), 1)
    idx = np.minimum(first + np.arange(length)[:, None], fb.shape[0] - 1)
    w = np.where(np.arange(length)[:, None] < width, fb[idx, np.arange(n_mels)], 0.0)
    idx.flags.writeable = False
    w.flags.writeable = False
    return idx, w


@functools.lru_cache(maxsize=16)
def _hann(win: int) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)  # periodic
    w.flags.writeable = False
    return w


class LogMel:
    """Streaming log-mel: feed chunks of any length, get the frames that are complete so far."""

    def __init__(self, p: AudioPreprocessing) -> None:
        self.p = p
        self.win, self.hop = _win_hop(p)
        if self.win < 1 or self.hop < 1:
            raise ValueError(f"audio preprocessing: window_ms={p.window_ms} and hop_ms={p.hop_ms} must give "
                             f"at least one sample at {p.sample_rate} Hz")
        if self.win > p.n_fft:
            raise ValueError(f"audio preprocessing: window of {self.win} samples is longer than n_fft={p.n_fft}")
        if not 0 <= p.fmin < p.fmax <= p.sample_rate / 2:
            raise ValueError(f"audio preprocessing: need 0 <= fmin < fmax <= sample_rate/2, "
                             f"got fmin={p.fmin} fmax={p.fmax} sample_rate={p.sample_rate}")
        self._key = (p.sample_rate, p.n_fft, p.n_mels, float(p.fmin), float(p.fmax))
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples; the next sample starts frame 0."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._skip = 0  # samples still to drop before the next frame (only when hop > win)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Append mono samples; return the newly complete frames, (n, n_mels) float32."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"LogMel.process takes mono 1-D samples, got shape {x.shape}")
        if self._skip:
            drop = min(self._skip, len(x))
            x, self._skip = x[drop:], self._skip - drop
        buf = np.concatenate([self._buf, x]) if len(self._buf) else x
        n = 0 if len(buf) < self.win else (len(buf) - self.win) // self.hop + 1
        out = self._frames(buf, n)
        start = n * self.hop
        self._skip += max(0, start - len(buf))
        self._buf = buf[start:].copy()
        return out

    def _frames(self, buf: np.ndarray, n: int) -> np.ndarray:
        out = np.empty((n, self.p.n_mels), dtype=np.float32)
        if n == 0:
            return out
        windows = np.lib.stride_tricks.sliding_window_view(buf, self.win)[:: self.hop][:n]
        hann = _hann(self.win)
        idx, w = _gather(*self._key)
        for s in range(0, n, _BLOCK):
            frames = windows[s : s + _BLOCK].astype(np.float64) * hann
            spec = np.fft.rfft(frames, n=self.p.n_fft, axis=-1)
            power = spec.real**2 + spec.imag**2
            mel = np.zeros((len(frames), self.p.n_mels))
            for j in range(len(idx)):  # fixed summation order per frame: bitwise chunk-invariant
                mel += power[:, idx[j]] * w[j]
            out[s : s + _BLOCK] = np.log(mel + LOG_FLOOR)
        return out


def log_mel(samples: np.ndarray, p: AudioPreprocessing) -> np.ndarray:
    """Log-mel frames of a whole clip, (n_frames, n_mels) float32; identical to streaming it."""
    return LogMel(p).process(samples)
