"""Keyword spotting on a live stream: samples in, keyword detections out.

``KeywordSpotter(manifest, folder)`` runs a streaming artifact (an explicit-state
step model, see ``models/kws.py``) over audio fed in chunks of any size:

1. **Front end**: :class:`~edge_runtime.audio.frontend.LogMel` with the manifest's
   ``preprocessing.audio`` (including its causal normalisation), carried across chunks.
2. **Step model**: every ``frames_per_step`` frames, one engine call
   ``(features, state...) -> (scores, state'...)``; the state pairs come from the
   manifest, quantization is done by the engine's ``run``. A model whose step reads
   a longer window (``window_frames``, e.g. the 76 mel frames of a speech embedding
   every 8 frames) gets the last ``window_frames`` frames; its first step runs once
   that many frames have been heard.
3. **State lanes**: an LSTM whose state runs on forever meets inputs it never saw
   in training (it was trained on sequences of 1-2 s from a zero state). The
   manifest's ``metrics["detector"]`` names ``lanes`` and ``state_reset_s``: ``lanes``
   copies of the state are run side by side, each reset to its initial value
   every ``state_reset_s`` seconds, staggered evenly. The scores come from the lane
   with the oldest state, which has always heard between
   ``state_reset_s * (1 - 1/lanes)`` and ``state_reset_s`` of audio -- exactly the
   sequence lengths of training. Without these keys one state runs forever. A caller may hold
   the resets (:attr:`KeywordSpotter.hold_resets`, e.g. while a spoken phrase is under way): then
   no lane restarts and every lane keeps its state until the hold ends.
4. **Detector**: moving average of the scores over the last ``smoothing`` steps;
   the best keyword class (not ``_silence_`` / ``_unknown_`` / other ``_x_`` labels)
   fires when its smoothed score reaches ``threshold``, unless a detection fired
   less than ``refractory_s`` seconds before. Defaults from ``metrics["detector"]``.
5. **Operating point**: with a validation trade-off curve in ``metrics["detector"]["curve"]``
   (``models.kws_eval`` writes it), the threshold is the lowest on the curve within a budget of
   false accepts per hour (``false_accepts_per_hour``, default 0.5); a given ``threshold``
   overrides it; without a curve, the manifest's threshold. :attr:`KeywordSpotter.operating_point`
   says which, and what the curve expects of it.
6. **End of stream**: :meth:`KeywordSpotter.flush` plays the recording's own quiet floor for as
   long as the detector's window needs, so a keyword that ends a file is reported too.

Times are counted in samples from the stream start (``t0_samples`` lets a source
say where a chunk really starts, e.g. after an overflow); a detection's ``t`` is
the end of the last frame of the step that fired, in seconds.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.frontend import LogMel, _frame_len, _win_hop
from ..config import DEFAULT_FALSE_ACCEPTS_PER_HOUR
from ..engines import ENGINES, Acceleration, EngineError, open_engine
from ..engines.base import Quantizer
from ..manifest import Manifest, ManifestError

DEFAULT_THRESHOLD = 0.8
DEFAULT_SMOOTHING = 3
DEFAULT_REFRACTORY_S = 1.0
MAX_CURVE_POINTS = 64
FLUSH_BLOCK_S = 0.1  # flush() loops the quietest this-long stretch ...
FLUSH_HISTORY_S = 2.0  # ... of this much recent audio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    label: str
    score: float  # smoothed score of the label when it fired
    t: float  # seconds from the stream start: end of the step that fired


def is_keyword(label: str) -> bool:
    """Keyword classes are all labels but the Speech Commands fillers ``_silence_``, ``_unknown_``..."""
    return not (label.startswith("_") and label.endswith("_"))


class Detector:
    """Smoothing, threshold and refractory period over per-step scores (no model, no audio)."""

    def __init__(self, labels: list[str], threshold: float, smoothing: int, refractory_s: float) -> None:
        if smoothing < 1:
            raise ValueError(f"smoothing must be at least 1 step, got {smoothing}")
        self.labels = list(labels)
        self.keywords = np.asarray([i for i, lab in enumerate(self.labels) if is_keyword(lab)], dtype=int)
        if len(self.keywords) == 0:
            raise ValueError("the model has no keyword labels (all are _silence_/_unknown_ style)")
        self.threshold, self.smoothing, self.refractory_s = float(threshold), int(smoothing), float(refractory_s)
        self.reset()

    def reset(self) -> None:
        self._hist: deque[np.ndarray] = deque(maxlen=self.smoothing)
        self._last_t = -np.inf

    def update(self, t: float, scores: np.ndarray) -> Detection | None:
        self._hist.append(np.asarray(scores, dtype=np.float64).reshape(-1))
        smoothed = np.mean(self._hist, axis=0)
        kw = self.keywords[int(np.argmax(smoothed[self.keywords]))]
        score = float(smoothed[kw])
        if score >= self.threshold and t - self._last_t >= self.refractory_s - 1e-9:
            self._last_t = t
            return Detection(self.labels[kw], round(score, 5), round(float(t), 4))
        return None


@dataclass(frozen=True)
class CurvePoint:
    """One threshold of the validation trade-off curve, ``metrics["detector"]["curve"]``."""

    threshold: float
    false_accepts_per_hour: float
    false_reject_rate: float


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold in use, where it came from, and what the validation curve expects at it."""

    threshold: float
    source: str  # "threshold" (given), "false_accepts_per_hour" (chosen on the curve) or "manifest"
    detail: str  # the same in words
    false_accepts_per_hour: float | None = None  # expected at the threshold (validation curve); None: not measured
    false_reject_rate: float | None = None
    budget: float | None = None  # false accepts per hour asked for (source "false_accepts_per_hour")

    def describe(self) -> str:
        expected = (
            "; no validation figures at it"
            if self.false_accepts_per_hour is None
            else f"; validation curve: {self.false_accepts_per_hour:.2f} false accepts per hour, "
            + (
                f"{100 * self.false_reject_rate:.1f}% false rejects"
                if self.false_reject_rate is not None
                else "false rejects not measured"
            )
        )
        return f"threshold {self.threshold:g} ({self.detail}){expected}"


def read_curve(det: dict[str, Any], name: str) -> list[CurvePoint]:
    """``det["curve"]`` sorted by threshold ([] if absent); a malformed curve is a ManifestError."""
    raw = det.get("curve")
    if raw is None:
        return []
    bad = ManifestError(
        f"{name!r}: metrics.detector.curve must be a list of 1 to {MAX_CURVE_POINTS} points "
        "{threshold, false_accepts_per_hour, false_reject_rate}; re-run python -m models.kws_eval "
        "evaluate --write"
    )
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CURVE_POINTS:
        raise bad
    try:
        curve = [
            CurvePoint(float(p["threshold"]), float(p["false_accepts_per_hour"]), float(p["false_reject_rate"]))
            for p in raw
        ]
    except (TypeError, KeyError, ValueError):
        raise bad from None
    if not all(
        0 <= p.threshold <= 1 and 0 <= p.false_reject_rate <= 1 and 0 <= p.false_accepts_per_hour < math.inf
        for p in curve
    ):
        raise bad
    return sorted(curve, key=lambda p: p.threshold)


def within_budget(curve: list[CurvePoint], budget: float) -> CurvePoint | None:
    """The lowest threshold from which on the curve stays within ``budget`` false accepts per hour (on a
    curve that falls with the threshold: the lowest within the budget); None if not even the highest is."""
    best = None
    for p in reversed(curve):
        if p.false_accepts_per_hour > budget + 1e-9:
            break
        best = p
    return best


DETECTOR_BOUNDS = {
    "smoothing_steps": (1, 1000),
    "refractory_s": (0, 3600),
    "lanes": (1, 16),
    "state_reset_s": (0, 3600),
    "threshold": (0, 1),
}


def detector_settings(manifest: Manifest) -> dict[str, Any]:
    """``metrics["detector"]`` of a manifest, each setting checked to be a number in its range."""
    det = manifest.metrics.get("detector") or {}
    if not isinstance(det, dict):
        raise ManifestError(f"{manifest.name!r}: metrics.detector must be a table; re-convert the model")
    for key, (lo, hi) in DETECTOR_BOUNDS.items():
        v = det.get(key)
        if v is not None and not (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi
        ):
            raise ManifestError(
                f"{manifest.name!r}: metrics.detector.{key} {v!r} must be a number from {lo} to "
                f"{hi}; re-run python -m models.kws_eval or re-convert the model"
            )
    return dict(det)


def operating_point(
    det: dict[str, Any], name: str, threshold: float | None, budget: float, smoothing: int, refractory_s: float
) -> OperatingPoint:
    """A given ``threshold``, else the lowest within ``budget`` on the validation curve, else the manifest's."""
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"false_accepts_per_hour must be a finite number >= 0, got {budget}")
    curve = read_curve(det, name)
    measured = (int(det.get("smoothing_steps", smoothing)), float(det.get("refractory_s", refractory_s)))
    if curve and measured != (smoothing, refractory_s):
        log.warning(
            "%s: the validation curve was measured with smoothing_steps %d and refractory_s %g, not %d and "
            "%g: it does not apply",
            name,
            *measured,
            smoothing,
            refractory_s,
        )
        curve = []
    if threshold is not None:  # the curve's figures at it, interpolated, where it was measured
        t, ts = float(threshold), [p.threshold for p in curve]
        at = (lambda ys: float(np.interp(t, ts, ys))) if curve and ts[0] <= t <= ts[-1] else (lambda ys: None)
        return OperatingPoint(
            t,
            "threshold",
            "given as threshold, overriding the false-accept budget",
            at([p.false_accepts_per_hour for p in curve]),
            at([p.false_reject_rate for p in curve]),
        )
    if not curve:
        return OperatingPoint(float(det.get("threshold", DEFAULT_THRESHOLD)), "manifest", "the model's manifest")
    p = within_budget(curve, budget)
    detail = f"the lowest on the validation curve within {budget:g} false accepts per hour"
    if p is None:
        p = curve[-1]
        detail = f"the highest on the validation curve: none is within {budget:g} false accepts per hour"
        log.warning(
            "%s: no threshold on the validation curve keeps within %g false accepts per hour; using the "
            "highest, %g (%.2f per hour, %.1f%% false rejects)",
            name,
            budget,
            p.threshold,
            p.false_accepts_per_hour,
            100 * p.false_reject_rate,
        )
    return OperatingPoint(
        p.threshold, "false_accepts_per_hour", detail, p.false_accepts_per_hour, p.false_reject_rate, budget
    )


def lane_ages(n: int, lanes: int, reset_steps: int) -> list[int | None]:
    """Each lane's state age (steps already in its state) before step ``n``; None = not started.
    Lane ``i`` starts at step ``i * reset_steps // lanes`` and restarts every ``reset_steps``."""
    if reset_steps <= 0:
        return [n] + [None] * (lanes - 1)
    ages: list[int | None] = []
    for i in range(lanes):
        start = i * reset_steps // lanes
        ages.append(None if n < start else (n - start) % reset_steps)
    return ages


class KeywordSpotter:
    """Streaming keyword spotting with a manifest's step model; see the module docstring."""

    def __init__(self, manifest: Manifest, folder: str | Path, engine: str = "auto", threads: int | None = None,
                 threshold: float | None = None, smoothing: int | None = None, refractory_s: float | None = None,
                 accel: Acceleration | None = None,
                 false_accepts_per_hour: float = DEFAULT_FALSE_ACCEPTS_PER_HOUR) -> None:  # fmt: skip
        p = manifest.preprocessing.audio
        if p is None or not manifest.streaming or p.frames_per_step < 1:
            raise ManifestError(
                f"{manifest.name!r} is a {manifest.task} model, not a streaming audio model "
                "(needs preprocessing.audio.frames_per_step and state pairs)"
            )
        self.manifest, self.p = manifest, p
        self.engine = open_engine(manifest, folder, engine, threads=threads, accel=accel)
        self.artifact = self.engine.artifact or manifest.artifact(ENGINES[self.engine.name])
        spec = self._bind_tensors()
        labels = manifest.labels or [str(i) for i in range(int(np.prod(self.engine.outputs[self._score_idx].shape)))]
        n_scores = int(np.prod(self.engine.outputs[self._score_idx].shape))
        if manifest.labels and len(manifest.labels) != n_scores:
            raise ManifestError(
                f"{manifest.name!r}: {len(manifest.labels)} labels for {n_scores} scores; "
                "re-convert the model with one label per output"
            )
        det = detector_settings(manifest)
        self.smoothing = int(smoothing if smoothing is not None else det.get("smoothing_steps", DEFAULT_SMOOTHING))
        self.refractory_s = float(
            refractory_s if refractory_s is not None else det.get("refractory_s", DEFAULT_REFRACTORY_S)
        )
        self.operating_point = operating_point(
            det, manifest.name, threshold, false_accepts_per_hour, self.smoothing, self.refractory_s
        )
        self.threshold = self.operating_point.threshold
        self.lanes = max(1, int(det.get("lanes", 1)))
        self.frames_per_step = p.frames_per_step
        self.window_frames = max(p.window_frames, p.frames_per_step)
        feat_shape = spec[self._feat_name].shape
        if list(feat_shape) != [1, self.window_frames, p.n_mels]:
            raise ManifestError(
                f"{manifest.name!r}: the front end makes {self.window_frames} frames of {p.n_mels} "
                f"mel bins per step, the model's {self._feat_name!r} takes {feat_shape}; "
                "re-convert the model"
            )
        step_s = p.frames_per_step * p.hop_ms / 1000.0
        self.reset_steps = round(float(det.get("state_reset_s", 0.0)) / step_s)
        self.flush_s = max(self.smoothing * step_s, self.refractory_s)  # flush() pads this long
        self._history = round(FLUSH_HISTORY_S * p.sample_rate)
        self.detector = Detector(labels, self.threshold, self.smoothing, self.refractory_s)
        self.labels = labels
        self._span, (_, self._hop) = _frame_len(p), _win_hop(p)
        self._frontend = LogMel(p)
        self.reset()

    def _bind_tensors(self) -> dict:
        """Which engine tensor is the features, the scores and each state; their quantizers. Returns the
        engine's tensor specs by name."""
        manifest = self.manifest
        in_names = [t.name for t in self.engine.inputs]
        out_names = [t.name for t in self.engine.outputs]
        pairs = self.artifact.state
        missing = [n for s in pairs for n in (s.input, s.output) if n not in in_names + out_names]
        if missing:
            raise ManifestError(f"{manifest.name!r}: state tensors {', '.join(missing)} are not in the model")
        state_in = {s.input for s in pairs}
        state_out = {s.output for s in pairs}
        feats = [n for n in in_names if n not in state_in]
        scores = [i for i, n in enumerate(out_names) if n not in state_out]
        if len(feats) != 1 or not scores:
            raise EngineError(f"{manifest.name!r}: expected one feature input and a scores output beside the state")
        self._in_names, self._feat_name = in_names, feats[0]
        self._score_idx = scores[0]
        self._out_idx = {s.input: out_names.index(s.output) for s in pairs}
        self._pairs = pairs
        # The state stays in the engine's stored form (int16 for a 16x8 model) from one step to the
        # next; it is only converted where an output's quantization differs from its input's.
        spec = {t.name: t for t in [*self.engine.inputs, *self.engine.outputs]}

        def q(name: str) -> Quantizer:
            return Quantizer(spec[name].quantization, spec[name].dtype)

        def stored(name: str) -> tuple:
            return spec[name].dtype, spec[name].quantization

        self._q_feat, self._q_scores = q(feats[0]), q(out_names[scores[0]])
        self._q_state = {s.input: q(s.input) for s in pairs}
        self._requantize = {
            s.input: None if stored(s.input) == stored(s.output) else q(s.output) for s in pairs
        }  # None: carried as is
        return spec

    # ------------------------------------------------------------------ state
    def _initial(self) -> dict[str, np.ndarray]:
        return {
            s.input: self._q_state[s.input].quantize(np.full(s.shape, s.initial, dtype=np.float32)) for s in self._pairs
        }

    def _carry(self, name: str, out: np.ndarray) -> np.ndarray:
        """An output state, stored as the matching input expects it."""
        q_out = self._requantize[name]
        return out if q_out is None else self._q_state[name].quantize(q_out.dequantize(out))

    def reset(self) -> None:
        """Start a new stream: front end, states, smoothing, refractory and the clock."""
        self._frontend.reset()
        self.detector.reset()
        self._pending = np.zeros((0, self.p.n_mels), dtype=np.float32)
        self._states = [self._initial() for _ in range(self.lanes)]
        self._step = 0  # steps run since the stream start
        self._reset_clock = 0  # steps run while the lane resets were not held
        self.hold_resets = False  # a caller's "not now" (an utterance under way): no lane restarts, all age on
        self._frames = 0  # stream index of the first frame in _pending
        self._fed = 0  # samples fed
        self._offset = 0  # stream position of sample 0 minus samples fed (t0_samples)
        # the last FLUSH_HISTORY_S of samples for flush(), kept as chunks (no copy of the whole span per chunk)
        self._recent: deque[np.ndarray] = deque()
        self._recent_n = 0

    # ------------------------------------------------------------------ running

    def _run_step(self, chunk: np.ndarray) -> np.ndarray:
        ages = lane_ages(self._reset_clock, self.lanes, self.reset_steps)
        best_age, best_scores = -1, None
        x = self._q_feat.quantize(chunk[None])
        for i, age in enumerate(ages):
            if age is None:
                continue
            if age == 0 and self.reset_steps > 0:
                self._states[i] = self._initial()
            st = self._states[i]
            feeds = [x if n == self._feat_name else st[n] for n in self._in_names]
            outs = self.engine.run_raw(*feeds)
            self._states[i] = {
                name: self._carry(name, outs[j]).reshape(st[name].shape) for name, j in self._out_idx.items()
            }
            if age > best_age:
                best_age, best_scores = age, outs[self._score_idx]
        self._step += 1
        self._reset_clock += not self.hold_resets
        assert best_scores is not None  # lane 0 starts at step 0, so some lane always runs
        return self._q_scores.dequantize(best_scores).reshape(-1)

    def posteriors(
        self, samples: np.ndarray, t0_samples: int | None = None, on_step: Callable[[np.ndarray], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance the stream; the raw per-step scores ``(t (steps,), scores (steps, classes))``, no detection.
        ``on_step(scores)`` is called after each step, before the next (e.g. to set :attr:`hold_resets`)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if t0_samples is not None:
            self._offset = int(t0_samples) - self._fed
        self._fed += len(x)
        self._remember(x)
        frames = self._frontend.process(x)
        pending = np.concatenate([self._pending, frames]) if len(self._pending) else frames
        f, w = self.frames_per_step, self.window_frames
        n = 0 if len(pending) < w else (len(pending) - w) // f + 1
        ts, scores = [], []
        for k in range(n):
            scores.append(self._run_step(pending[k * f : k * f + w]))
            if on_step is not None:
                on_step(scores[-1])
            end = (self._frames + k * f + w - 1) * self._hop + self._span + self._offset
            ts.append(end / self.p.sample_rate)
        self._frames += n * f
        self._pending = pending[n * f :].copy()
        n_cls = len(self.labels)
        return np.asarray(ts, np.float64), (np.stack(scores) if scores else np.zeros((0, n_cls), np.float32))

    def process(self, samples: np.ndarray, t0_samples: int | None = None) -> list[Detection]:
        """Feed float32 mono samples at the model's rate (any chunk size); the detections they complete."""
        ts, scores = self.posteriors(samples, t0_samples)
        out = []
        for t, s in zip(ts, scores):
            d = self.detector.update(float(t), s)
            if d is not None:
                out.append(d)
        return out

    def _remember(self, x: np.ndarray) -> None:
        tail = x[-self._history :].copy()
        self._recent.append(tail)
        self._recent_n += len(tail)
        while self._recent_n - len(self._recent[0]) >= self._history:
            self._recent_n -= len(self._recent.popleft())

    def flush(self) -> list[Detection]:
        """End of the stream: the detections it completes. Call :meth:`reset` before another stream.

        A word is only reported once the model has answered it and the smoothing window has
        filled, a few hundred ms after the word ends, so a keyword that ends the stream (a 1 s
        Speech Commands clip) would never be. This plays ``flush_s`` seconds more (the smoothing
        window, at least the refractory period) of the recording's own floor -- its quietest
        ``FLUSH_BLOCK_S`` of the last ``FLUSH_HISTORY_S``, forwards and backwards in turn so the
        joins do not click -- which is what the microphone would have gone on to hear: same
        level and spectrum, so the running-mean normalisation sees no step. (Digital zeros sit
        at the log floor, far below any real room, and a fixed noise floor louder than a quiet
        recording's own is a new sound that drowns its keyword.) Detection times are at most
        ``flush_s`` past the end.
        """
        return self.process(self.quiet_floor(self.flush_s)) if self._recent_n else []

    def quiet_floor(self, seconds: float) -> np.ndarray:
        """``seconds`` of the stream's own quiet floor (see :meth:`flush`); empty before any audio."""
        if not self._recent_n:
            return np.zeros(0, np.float32)
        x = np.concatenate(self._recent)[-self._history :]
        b = min(len(x), round(FLUSH_BLOCK_S * self.p.sample_rate))
        energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
        start = int(np.argmin(energy[b:] - energy[:-b]))
        quiet = x[start : start + b]
        n = math.ceil(seconds * self.p.sample_rate)
        return np.resize(np.concatenate([quiet, quiet[::-1]]), n)
