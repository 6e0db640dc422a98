"""The one streaming log-mel front end, used by training, conversion, evaluation and the daemon.

Frame ``k`` covers samples ``[k*hop, k*hop + win)`` (no centre padding): periodic
Hann window, zero-padded to ``n_fft``, power spectrum, HTK-mel triangles,
``log(mel + 1e-6)``. Every step is computed per frame in a fixed order (the mel
projection avoids BLAS, whose summation order depends on the batch size), so
feeding a clip in chunks of any size yields bitwise the same frames as
:func:`log_mel` on the whole clip. numpy only.

Optional causal normalisation (``AudioPreprocessing.normalization``):
``"running_mean"`` subtracts from every log-mel bin its exponential running mean,
``m_k = m_{k-1} + a * (x_k - m_{k-1})`` with ``a = 1 - exp(-hop / normalization_time_s)``
and ``m_0 = x_0`` (so a stream's first frame is all zeros). It removes the
microphone gain and channel colouring (additive in the log domain) using only
the past, so it works on an endless stream. :class:`FeatureNorm` applies it
frame by frame in float32 in a fixed order, so it too is bitwise chunk-invariant,
and it takes a leading batch axis (training normalises many sequences at once
with the very same arithmetic). :class:`LogMel` and :func:`log_mel` apply it when
the parameters ask for it; :func:`raw` gives the parameters without it.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ..manifest import AudioPreprocessing

LOG_FLOOR = 1e-6
NORMALIZATIONS = ("none", "running_mean")
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
        self.norm = FeatureNorm(p) if p.normalization != "none" else None
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples (and the running mean); the next sample starts frame 0."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._skip = 0  # samples still to drop before the next frame (only when hop > win)
        if self.norm is not None:
            self.norm.reset()

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
        return out if self.norm is None else self.norm.process(out)

    def _frames(self, buf: np.ndarray, n: int) -> np.ndarray:
        out = np.empty((n, self.p.n_mels), dtype=np.float32)
        if n == 0:
            return out
        buf = np.ascontiguousarray(buf)
        step = buf.strides[0]
        windows = np.lib.stride_tricks.as_strided(buf, shape=(n, self.win), strides=(self.hop * step, step),
                                                  writeable=False)
        hann = _hann(self.win)
        idx, w = _gather(*self._key)
        for s in range(0, n, _BLOCK):
            frames = windows[s : s + _BLOCK].astype(np.float64) * hann
            spec = np.fft.rfft(frames, n=self.p.n_fft, axis=-1)
            power = spec.real**2 + spec.imag**2
            # A reduction over a non-innermost axis adds the L terms one after another for every
            # frame (no pairwise or BLAS blocking): the same order for any number of frames.
            mel = np.add.reduce(power[:, idx] * w, axis=1)
            out[s : s + _BLOCK] = np.log(mel + LOG_FLOOR)
        return out


def log_mel(samples: np.ndarray, p: AudioPreprocessing) -> np.ndarray:
    """Log-mel frames of a whole clip, (n_frames, n_mels) float32; identical to streaming it."""
    return LogMel(p).process(samples)


def raw(p: AudioPreprocessing) -> AudioPreprocessing:
    """The same front end without the normalisation (plain log-mel frames)."""
    return dataclasses.replace(p, normalization="none")


class FeatureNorm:
    """Causal per-bin running-mean subtraction over log-mel frames; state carried across calls.

    ``process`` takes ``(T, n_mels)`` or ``(B, T, n_mels)`` (B independent streams); each
    frame is computed in float32 in one fixed order, so any chunking (and any batch size)
    gives bitwise the same output.
    """

    def __init__(self, p: AudioPreprocessing) -> None:
        if p.normalization not in NORMALIZATIONS:
            raise ValueError(f"audio preprocessing: normalization {p.normalization!r} is not one of "
                             f"{', '.join(NORMALIZATIONS)}; upgrade edge-runtime or re-convert the model")
        if p.normalization == "running_mean" and not p.normalization_time_s > 0:
            raise ValueError("audio preprocessing: running_mean normalization needs normalization_time_s > 0")
        self.p = p
        hop_s = p.hop_ms / 1000.0
        self.alpha = np.float32(1.0 - np.exp(-hop_s / p.normalization_time_s)) if p.normalization_time_s > 0 \
            else np.float32(0.0)
        self.reset()

    def reset(self) -> None:
        self._mean: np.ndarray | None = None

    def process(self, frames: np.ndarray) -> np.ndarray:
        x = np.asarray(frames, dtype=np.float32)
        if self.p.normalization == "none" or x.shape[-2] == 0:
            return x.copy()
        out = np.empty_like(x)
        mean = self._mean
        a = self.alpha
        for k in range(x.shape[-2]):
            xk = x[..., k, :]
            if mean is None:
                mean = xk.copy()
            else:
                mean = mean + a * (xk - mean)
            out[..., k, :] = xk - mean
        self._mean = mean
        return out
