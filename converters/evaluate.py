"""Float vs quantized: accuracy, agreement, KL divergence, per-class accuracy, size, host latency.

The artifacts run on the board's own engines (``edge_runtime.engines``), so the
numbers here come from the code paths the daemon uses.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.engines.base import Engine, quantize

from .data import Dataset, progress
from .source import SourceModel

CONFIDENT = 0.5  # float top-1 probability at or above which a prediction counts as confident
TOP_K = 5  # "float's top-1 inside the artifact's top-k" and the top-k KL (fewer for models with few classes)


def top_k(n_classes: int) -> int:
    return max(1, min(TOP_K, n_classes // 2))


def kl_top_k(pr: np.ndarray, pg: np.ndarray, k: int) -> np.ndarray:
    """KL(float || artifact) over float's top-k classes plus one bin holding all the others.

    Quantized softmax outputs round small probabilities to zero, and the plain KL then
    measures those rounding floors over hundreds of classes; merging the tail keeps the
    figure about the classes that decide the prediction.
    """
    idx = np.argsort(-pr, axis=1)[:, :k]
    rows = np.arange(len(pr))[:, None]
    top_r, top_g = pr[rows, idx], pg[rows, idx]
    br = np.concatenate([top_r, np.clip(1 - top_r.sum(1, keepdims=True), 0, 1)], axis=1)
    bg = np.concatenate([top_g, np.clip(1 - top_g.sum(1, keepdims=True), 0, 1)], axis=1)
    br, bg = np.clip(br, 1e-8, 1), np.clip(bg, 1e-8, 1)
    return np.sum(br * (np.log(br) - np.log(bg)), axis=1)


def probabilities(x: np.ndarray) -> np.ndarray:
    """Rows of scores as probabilities.

    Softmax outputs stay probabilities: an int8 softmax loses a little mass to
    values below its quantization step, so rows summing to a bit less than 1
    are renormalised, never pushed through softmax a second time. Anything
    else (logits) goes through softmax.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    sums = x.sum(axis=1)
    if x.min() >= 0 and x.max() <= 1 and np.all((sums > 0.5) & (sums < 1.5)):
        p = x / sums[:, None]
    else:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    p = np.clip(p, 1e-8, 1.0)
    return p / p.sum(axis=1, keepdims=True)


# --- running models over a dataset ---------------------------------------------
StepFn = Callable[[list[np.ndarray]], list[np.ndarray]]


def float_step(source: SourceModel) -> StepFn:
    return lambda arrays: source.predict(arrays)


def engine_step(engine: Engine) -> StepFn:
    return lambda arrays: engine.run(*arrays)


def run_classifier(step: StepFn, data: Dataset, desc: str, batch: int = 1) -> np.ndarray:
    """First output for every example, shape (N, classes)."""
    n = len(data)
    outs = []
    for start in progress(range(0, n, batch), desc, total=(n + batch - 1) // batch):
        arrays = [x[start : start + batch] for x in data.inputs]
        outs.append(np.asarray(step(arrays)[0], dtype=np.float32).reshape(len(arrays[0]), -1))
    return np.concatenate(outs)


def run_streaming(
    step: StepFn,
    utterances: np.ndarray,
    chunk: int,
    state_shapes: list[list[int]],
    desc: str,
    collect_states: bool = False,
    hop: int | None = None,
) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """Chunk-by-chunk over whole utterances with the state carried across steps.

    Step ``k`` sees frames ``[k*hop, k*hop + chunk)`` (``hop`` defaults to ``chunk``: no
    overlap; a smaller hop gives each step a window that reaches back before its new frames).
    Returns the scores of every step, shape (N, steps, classes), and (when
    ``collect_states``) each step's inputs: the chunk with the states it saw,
    i.e. the real states a streaming model meets, for calibration.
    """
    n, t = utterances.shape[:2]
    hop = hop or chunk
    steps = 0 if t < chunk else (t - chunk) // hop + 1
    scores, seen = [], []
    for u in progress(range(n), desc):
        states = [np.zeros(s, np.float32) for s in state_shapes]
        per = []
        for k in range(steps):
            x = utterances[u : u + 1, k * hop : k * hop + chunk]
            if collect_states:
                seen.append([x, *[s.copy() for s in states]])
            out = step([x, *states])
            per.append(np.asarray(out[0], np.float32).reshape(-1))
            states = [np.asarray(o, np.float32).reshape(s) for o, s in zip(out[1:], state_shapes)]
        scores.append(np.stack(per))
    return np.stack(scores), seen


# --- metrics -------------------------------------------------------------------
@dataclass
class Scores:
    """Per-example class scores of one model, plus streaming traces when there are steps."""

    final: np.ndarray  # (N, classes)
    steps: np.ndarray | None = None  # (N, steps, classes) for streaming models
    extra: dict[str, Any] = field(default_factory=dict)


def compare(ref: Scores, got: Scores, labels: np.ndarray | None, classes: list[str] | None) -> dict[str, Any]:
    pr, pg = probabilities(ref.final), probabilities(got.final)
    top_r, top_g = pr.argmax(1), pg.argmax(1)
    agree = top_r == top_g
    confident = pr.max(1) >= CONFIDENT
    k = top_k(pr.shape[1])
    in_top_k = (np.argsort(-pg, axis=1)[:, :k] == top_r[:, None]).any(axis=1)
    m: dict[str, Any] = {
        "agreement": float(agree.mean()),
        "agreement_confident": float(agree[confident].mean()) if confident.any() else None,
        "agreement_uncertain": float(agree[~confident].mean()) if (~confident).any() else None,
        "confident_fraction": float(confident.mean()),
        "kl_mean": float(np.mean(np.sum(pr * (np.log(pr) - np.log(pg)), axis=1))),
        "top_k": k,
        "top_k_agreement": float(in_top_k.mean()),
        "kl_top_k": float(np.mean(kl_top_k(pr, pg, k))),
    }
    m.update(accuracy_metrics(got.final, labels, classes))
    if ref.steps is not None and got.steps is not None:
        sr, sg = (
            probabilities(ref.steps.reshape(-1, ref.steps.shape[-1])),
            probabilities(got.steps.reshape(-1, got.steps.shape[-1])),
        )
        m["step_agreement"] = float((sr.argmax(1) == sg.argmax(1)).mean())
        m["step_score_max_abs_diff"] = float(np.abs(sr - sg).max())
        m["step_score_mean_abs_diff"] = float(np.abs(sr - sg).mean())
    return m


def accuracy_metrics(scores: np.ndarray, labels: np.ndarray | None, classes: list[str] | None) -> dict[str, Any]:
    if labels is None:
        return {}
    pred = np.asarray(scores).reshape(len(scores), -1).argmax(1)
    names = classes or [str(i) for i in range(int(labels.max()) + 1)]
    per_class = {}
    for i, name in enumerate(names):
        sel = labels == i
        if sel.any():
            per_class[name] = float((pred[sel] == i).mean())
    return {"accuracy": float((pred == labels).mean()), "per_class_accuracy": per_class}


def latency_ms(
    engine: Engine, example: list[np.ndarray], min_runs: int = 20, max_runs: int = 300, budget_s: float = 1.5
) -> dict[str, float]:
    """Host latency of one inference (engine invoke with inputs set), after warm-up."""
    raw = [quantize(np.asarray(a), t.quantization, t.dtype) for a, t in zip(example, engine.inputs)]
    for _ in range(5):
        engine.run_raw(*raw)
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < end):
        t0 = time.perf_counter_ns()
        engine.run_raw(*raw)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    return {
        "median": statistics.median(times),
        "p90": times[int(0.9 * (len(times) - 1))],
        "runs": len(times),
        "threads": os.cpu_count() or 1,
    }


def latency_ratio(
    engine: Engine, reference: Engine, example: list[np.ndarray], rounds: int = 15, runs: int = 20
) -> float:
    """How many times ``reference``'s latency ``engine`` takes, measured in interleaved rounds.

    Each round times ``runs`` inferences of one, then of the other, and takes the ratio of their
    medians; the result is the median over rounds, so load that comes and goes on a shared host
    slows both sides of most rounds alike instead of whichever model happened to run then.
    """
    raws = [
        [quantize(np.asarray(a), t.quantization, t.dtype) for a, t in zip(example, e.inputs)]
        for e in (engine, reference)
    ]
    pairs = list(zip((engine, reference), raws))
    for eng, raw in pairs:
        for _ in range(5):
            eng.run_raw(*raw)
    ratios = []
    for _ in range(rounds):
        medians = []
        for eng, raw in pairs:
            times = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                eng.run_raw(*raw)
                times.append(time.perf_counter_ns() - t0)
            medians.append(statistics.median(times))
        ratios.append(medians[0] / medians[1])
    return statistics.median(ratios)
