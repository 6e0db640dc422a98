"""The one streaming log-mel front end, used by training, conversion, evaluation and the daemon.

Frame ``k`` covers samples ``[k*hop, k*hop + win)`` (no centre padding): periodic
Hann window, zero-padded to ``n_fft``, power spectrum, HTK-mel triangles,
``log(mel + 1e-6)``. The manifest's ``AudioPreprocessing`` can change each part:
``window_align="center"`` (frame ``k`` spans ``[k*hop, k*hop + n_fft)`` with the
window in its middle), the Slaney mel scale and area normalisation (librosa's
defaults), a dB log with a floor, an input scale (int16-scale models) and an affine
map of the result. With those set as in :data:`SPEECH_EMBEDDING` it reproduces the
mel spectrogram that Google's speech embedding expects (openWakeWord's
``melspectrogram.onnx`` followed by its ``x / 10 + 2``). That model floors every
bin at 80 dB below the maximum of its whole input, which no stream can know
ahead; here the floor is 80 dB below each frame's own maximum (``top_db``), which
is what the model computes when it is given one frame at a time.

Every step is computed per frame in a fixed order (the mel projection avoids
BLAS, whose summation order depends on the batch size), so
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

NORMALIZATIONS = ("none", "running_mean")
CHOICES = {
    "window_align": ("start", "center"),
    "mel_scale": ("htk", "slaney"),
    "mel_norm": ("none", "slaney"),
    "log": ("ln", "db"),
}
# The front end of Google's speech embedding (its mel spectrogram, then x/10 + 2): 16 kHz at int16
# scale, 512-point frames every 10 ms with a centred 25 ms Hann window, 32 Slaney mel bins 60-3800 Hz.
SPEECH_EMBEDDING = AudioPreprocessing(
    n_mels=32,
    window_ms=25.0,
    hop_ms=10.0,
    n_fft=512,
    fmin=60.0,
    fmax=3800.0,
    window_align="center",
    mel_scale="slaney",
    mel_norm="slaney",
    log="db",
    log_floor=1e-10,
    top_db=80.0,
    input_scale=32768.0,
    feature_scale=0.1,
    feature_offset=2.0,
)
_BLOCK = 1024  # frames per FFT batch; bounds memory on long clips, results are per frame


def _win_hop(p: AudioPreprocessing) -> tuple[int, int]:
    return round(p.sample_rate * p.window_ms / 1000), round(p.sample_rate * p.hop_ms / 1000)


def _frame_len(p: AudioPreprocessing) -> int:
    """Samples one frame spans: the window, or the whole n_fft frame when the window is centred in it."""
    win, _ = _win_hop(p)
    return p.n_fft if p.window_align == "center" else win


def n_frames(n_samples: int, p: AudioPreprocessing) -> int:
    """Number of complete frames in ``n_samples`` samples."""
    span, (_, hop) = _frame_len(p), _win_hop(p)
    return 0 if n_samples < span else (n_samples - span) // hop + 1


def _hz_to_mel(f: np.ndarray | np.float64, scale: str) -> np.ndarray:
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney: linear (200/3 Hz per mel) below 1 kHz, logarithmic above (as librosa, htk=False)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), f / (200.0 / 3.0))


def _mel_to_hz(m: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), m * (200.0 / 3.0))


@functools.lru_cache(maxsize=16)
def _filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, scale: str = "htk", norm: str = "none"
) -> np.ndarray:
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.float64(fmin), scale), _hz_to_mel(np.float64(fmax), scale), n_mels + 2), scale
    )
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    rise = (freqs[:, None] - lo) / (mid - lo)
    fall = (hi - freqs[:, None]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(rise, fall))
    if norm == "slaney":
        fb = fb * (2.0 / (hi - lo))
    fb = fb.astype(np.float32)
    fb.flags.writeable = False
    return fb


def _fb_key(p: AudioPreprocessing) -> tuple:
    return (p.sample_rate, p.n_fft, p.n_mels, float(p.fmin), float(p.fmax), p.mel_scale, p.mel_norm)


def mel_filterbank(p: AudioPreprocessing) -> np.ndarray:
    """Triangular mel filters (HTK or Slaney scale), (n_fft//2 + 1, n_mels) float32; cached, read-only."""
    return _filterbank(*_fb_key(p))


@functools.lru_cache(maxsize=16)
def _gather(*key) -> tuple[np.ndarray, np.ndarray]:
    """The filterbank as (bin index, weight) pairs of shape (L, n_mels): row j is the j-th bin of each filter."""
    fb = _filterbank(*key).astype(np.float64)
    n_mels = fb.shape[1]
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
            raise ValueError(
                f"audio preprocessing: window_ms={p.window_ms} and hop_ms={p.hop_ms} must give "
                f"at least one sample at {p.sample_rate} Hz"
            )
        if self.win > p.n_fft:
            raise ValueError(f"audio preprocessing: window of {self.win} samples is longer than n_fft={p.n_fft}")
        if not 0 <= p.fmin < p.fmax <= p.sample_rate / 2:
            raise ValueError(
                f"audio preprocessing: need 0 <= fmin < fmax <= sample_rate/2, "
                f"got fmin={p.fmin} fmax={p.fmax} sample_rate={p.sample_rate}"
            )
        for key, allowed in CHOICES.items():
            if getattr(p, key) not in allowed:
                raise ValueError(
                    f"audio preprocessing: {key} {getattr(p, key)!r} is not one of "
                    f"{', '.join(allowed)}; upgrade edge-runtime or re-convert the model"
                )
        if not p.log_floor > 0:
            raise ValueError(f"audio preprocessing: log_floor must be > 0, got {p.log_floor}")
        self.span = _frame_len(p)
        self._offset = (self.span - self.win) // 2  # where the window starts inside the frame
        self._window = _hann(self.win) * float(p.input_scale)  # the input scale folded into the window
        self._key = _fb_key(p)
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
        n = 0 if len(buf) < self.span else (len(buf) - self.span) // self.hop + 1
        out = self._frames(buf, n)
        start = n * self.hop
        self._skip += max(0, start - len(buf))
        self._buf = buf[start:].copy()
        return out if self.norm is None else self.norm.process(out)

    def _frames(self, buf: np.ndarray, n: int) -> np.ndarray:
        out = np.empty((n, self.p.n_mels), dtype=np.float32)
        if n == 0:
            return out
        buf = np.ascontiguousarray(buf[self._offset :])
        step = buf.strides[0]
        # A centred window inside an n_fft frame gives the power spectrum of the window alone
        # (a shift only turns the phase), so each frame is its window, zero-padded to n_fft.
        windows = np.lib.stride_tricks.as_strided(
            buf, shape=(n, self.win), strides=(self.hop * step, step), writeable=False
        )
        idx, w = _gather(*self._key)
        p = self.p
        for s in range(0, n, _BLOCK):
            frames = windows[s : s + _BLOCK].astype(np.float64) * self._window
            spec = np.fft.rfft(frames, n=p.n_fft, axis=-1)
            power = spec.real**2 + spec.imag**2
            # A reduction over a non-innermost axis adds the L terms one after another for every
            # frame (no pairwise or BLAS blocking): the same order for any number of frames.
            mel = np.add.reduce(power[:, idx] * w, axis=1)
            if p.log == "db":
                y = 10.0 * np.log10(np.maximum(mel, p.log_floor))
                if p.top_db > 0:
                    y = np.maximum(y, y.max(axis=-1, keepdims=True) - p.top_db)
            else:
                y = np.log(mel + p.log_floor)
            if p.feature_scale != 1.0 or p.feature_offset != 0.0:
                y = y * p.feature_scale + p.feature_offset
            out[s : s + _BLOCK] = y
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
            raise ValueError(
                f"audio preprocessing: normalization {p.normalization!r} is not one of "
                f"{', '.join(NORMALIZATIONS)}; upgrade edge-runtime or re-convert the model"
            )
        if p.normalization == "running_mean" and not p.normalization_time_s > 0:
            raise ValueError("audio preprocessing: running_mean normalization needs normalization_time_s > 0")
        self.p = p
        hop_s = p.hop_ms / 1000.0
        self.alpha = (
            np.float32(1.0 - np.exp(-hop_s / p.normalization_time_s)) if p.normalization_time_s > 0 else np.float32(0.0)
        )
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
