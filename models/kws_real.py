"""The keyword spotter on real human speech (the set ``models.real_speech`` builds): hits and false accepts.

    python -m models.kws_real --real data/kws-real [--model ARTIFACT] [--engine litert] [--out results.json]

Each file of the set is one stream: 0.5 s of low noise, the recording, 1.5 s of low
noise (so a keyword that ends the file can complete its smoothing window), with a
noise floor at -70 dBFS throughout (a real microphone never delivers digital zeros,
which the front end has never seen). ``padded`` makes it; the pocketsphinx peer
(``models.kws_peer``) gets the very same samples.

Scoring (``score``), per split: a detection of keyword K in a file whose transcript
contains K is a **hit**, at most one per occurrence (more are counted as
``repeats``); a detection of a keyword that is not in the transcript is a **false
accept**. Files whose transcript holds an exact homophone of the detected keyword
("know" for no, "write" for right) count such a detection as ``homophone`` instead:
no listener could tell. False accepts per hour are counted over the keyword-free
files only (no keyword, no homophone), divided by their duration.

Our spotter runs through ``KeywordSpotter.posteriors`` (the daemon's code path, 100 ms
chunks, one thread); the per-step scores of every file are kept, so ``sweep`` tries
thresholds x smoothing windows with ``models.kws_eval``'s detector helpers and
``choose`` picks the operating point on ``val`` (highest detection rate within a
false-accept budget per hour), to be reported on ``test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import kws_eval
from models.real_speech import SPLITS, Entry, RealSpeechError, load

SR = 16000
LEAD_S, TAIL_S = 0.5, 1.5
FLOOR_DBFS = -70.0
SHIPPED = Path(__file__).resolve().parents[1] / "edge_runtime" / "data" / "models" / "kws"
THRESHOLDS = tuple(
    float(t) for t in np.round(np.concatenate([np.arange(0.30, 0.96, 0.02), [0.96, 0.97, 0.98, 0.99]]), 3)
)
SMOOTHING = (1, 3, 5, 8, 12)


def padded(x: np.ndarray, key: str) -> np.ndarray:
    """``LEAD_S`` of low noise, ``x``, ``TAIL_S`` of low noise, with a ``FLOOR_DBFS`` white-noise floor
    throughout; the noise is seeded by ``key`` (the file id), so every run sees the same samples."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    y = np.concatenate(
        [np.zeros(int(LEAD_S * SR), np.float32), np.asarray(x, np.float32), np.zeros(int(TAIL_S * SR), np.float32)]
    )
    y = y + (10 ** (FLOOR_DBFS / 20) * rng.standard_normal(len(y))).astype(np.float32)
    return np.clip(y, -1.0, 1.0)


def audio(folder: Path, e: Entry) -> np.ndarray:
    """One file of the set, padded as every engine hears it."""
    from edge_runtime.audio.wav import read_wav

    return padded(read_wav(folder / e.path, SR), e.id)


# ---------------------------------------------------------------- scoring
def score(entries: Sequence[Entry], detections: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Hits, misses and false accepts per split (and ``all``); ``detections[id]`` are objects with a
    ``label`` (and ``t``), e.g. :class:`edge_runtime.pipelines.audio.Detection`."""

    def part(es: Sequence[Entry]) -> dict[str, Any]:
        occ, hits, fa_labels = Counter(), Counter(), Counter()
        repeats = homophone = fa_free = 0
        fas = []
        for e in es:
            got = Counter(d.label for d in detections.get(e.id, ()))
            for label, n in got.items():
                if label in e.keywords:
                    hits[label] += min(n, e.keywords[label])
                    repeats += max(0, n - e.keywords[label])
                elif label in e.homophones:
                    homophone += n
                else:
                    fa_labels[label] += n
                    fa_free += n if e.keyword_free else 0
                    fas += [
                        {"id": e.id, "label": d.label, "t": round(float(d.t), 3)}
                        for d in detections[e.id]
                        if d.label == label
                    ]
            occ.update(e.keywords)
        free_h = sum(e.duration_s for e in es if e.keyword_free) / 3600
        n_occ, n_hit = sum(occ.values()), sum(hits.values())
        return {
            "files": len(es),
            "minutes": round(sum(e.duration_s for e in es) / 60, 2),
            "keyword_occurrences": n_occ,
            "hits": n_hit,
            "detection_rate": n_hit / n_occ if n_occ else None,
            "per_keyword": {k: {"occurrences": occ[k], "hits": hits[k]} for k in sorted(occ)},
            "repeats": repeats,
            "homophone_detections": homophone,
            "false_accepts": sum(fa_labels.values()),
            "false_accept_labels": dict(sorted(fa_labels.items())),
            "keyword_free_minutes": round(free_h * 60, 2),
            "false_accepts_keyword_free": fa_free,
            "fa_per_hour": fa_free / free_h if free_h else None,
            "false_accept_list": fas,
        }

    out = {s: part([e for e in entries if e.split == s]) for s in SPLITS}
    out["all"] = part(entries)
    return out


def brief(r: Mapping[str, Any]) -> dict[str, Any]:
    """A split's score without the per-detection list (for sweep tables)."""
    return {k: v for k, v in r.items() if k not in ("false_accept_list", "per_keyword")}


def by_band(entries: Sequence[Entry], detections: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The whole set's score split into telephone-band files (8 kHz originals) and wideband ones."""
    tel = [e for e in entries if e.bandwidth_hz <= 4000]
    wide = [e for e in entries if e.bandwidth_hz > 4000]
    return {"telephone_8k": brief(score(tel, detections)["all"]), "wideband": brief(score(wide, detections)["all"])}


def choose(rows: Sequence[Mapping[str, Any]], fa_budget: float, split: str = "val") -> Mapping[str, Any]:
    """The row with the highest ``split`` detection rate whose ``split`` false accepts per hour stay within
    ``fa_budget`` (ties: fewer false accepts, then the stricter setting, i.e. the row listed later);
    the fewest false accepts if none does."""
    ok = [r for r in rows if (r[split]["fa_per_hour"] or 0.0) <= fa_budget + 1e-9]
    if not ok:
        least = min(r[split]["false_accepts"] for r in rows)
        ok = [r for r in rows if r[split]["false_accepts"] == least]
    return max(reversed(ok), key=lambda r: (r[split]["detection_rate"] or 0.0, -r[split]["false_accepts"]))


# ---------------------------------------------------------------- our spotter
@dataclasses.dataclass
class Posteriors:
    """Per-step scores of every file, and what they cost."""

    labels: list[str]
    steps: dict[str, tuple[np.ndarray, np.ndarray]]  # id -> (t, scores)
    cpu_s: float
    audio_s: float


def posteriors(spotter, folder: Path, entries: Sequence[Entry]) -> Posteriors:
    steps, cpu, dur = {}, 0.0, 0.0
    for e in entries:
        x = audio(folder, e)
        t0 = time.process_time()
        steps[e.id] = kws_eval.posteriors(spotter, x)
        cpu += time.process_time() - t0
        dur += len(x) / SR
    return Posteriors(list(spotter.labels), steps, cpu, dur)


def detections_at(p: Posteriors, threshold: float, smoothing: int, refractory_s: float) -> dict[str, list]:
    """What ``Detector`` fires on each file's scores at this setting."""
    return {
        i: kws_eval._fast_detect(p.labels, ts, kws_eval._smoothed(sc, smoothing), threshold, refractory_s)
        if len(ts)
        else []
        for i, (ts, sc) in p.steps.items()
    }


def sweep(
    p: Posteriors,
    entries: Sequence[Entry],
    refractory_s: float = 1.0,
    thresholds: Sequence[float] = THRESHOLDS,
    smoothing: Sequence[int] = SMOOTHING,
) -> list[dict[str, Any]]:
    rows = []
    for k in smoothing:
        for thr in thresholds:
            r = score(entries, detections_at(p, thr, k, refractory_s))
            rows.append({"threshold": thr, "smoothing_steps": k, **{s: brief(r[s]) for s in SPLITS}})
    return rows


def evaluate(real: Path, model_dir: Path = SHIPPED, engine: str = "litert", fa_budget: float = 0.5) -> dict[str, Any]:
    """The artifact on the real-speech set: at its own operating point, a sweep, and the val-chosen point."""
    from edge_runtime import manifest as mf
    from edge_runtime.pipelines.audio import KeywordSpotter

    entries = load(real)
    m, folder = mf.load(model_dir)
    sp = KeywordSpotter(m, folder, engine, threads=1)
    p = posteriors(sp, real, entries)
    own = {"threshold": sp.threshold, "smoothing_steps": sp.smoothing, "refractory_s": sp.refractory_s}
    own_dets = detections_at(p, sp.threshold, sp.smoothing, sp.refractory_s)
    at_own = score(entries, own_dets)
    rows = sweep(p, entries, sp.refractory_s)
    best = choose(rows, fa_budget)
    chosen = {
        "threshold": best["threshold"],
        "smoothing_steps": best["smoothing_steps"],
        "refractory_s": sp.refractory_s,
    }
    chosen_dets = detections_at(p, best["threshold"], best["smoothing_steps"], sp.refractory_s)
    return {
        "model": m.name,
        "engine": sp.engine.name,
        "operating_point": own,
        "at_operating_point": at_own,
        "by_band_at_operating_point": by_band(entries, own_dets),
        "chosen_on_val": {**chosen, "fa_budget_per_hour": fa_budget, "val": best["val"]},
        "test_at_chosen": score(entries, chosen_dets)["test"],
        "by_band_at_chosen": by_band(entries, chosen_dets),
        "sweep": rows,
        "real_time_factor": p.cpu_s / p.audio_s,
        "audio_minutes": round(p.audio_s / 60, 2),
    }


def print_summary(name: str, r: Mapping[str, Any]) -> None:
    for s in SPLITS:
        x = r[s]
        rate = "n/a" if x["detection_rate"] is None else f"{100 * x['detection_rate']:.0f}%"
        fah = "n/a" if x["fa_per_hour"] is None else f"{x['fa_per_hour']:.1f}"
        print(
            f"{name} {s}: {x['hits']}/{x['keyword_occurrences']} keyword occurrences detected ({rate}), "
            f"{x['false_accepts']} false accepts ({x['false_accepts_keyword_free']} in "
            f"{x['keyword_free_minutes']} min keyword-free speech: {fah}/h)"
        )


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.fileio import atomic_write
    from edge_runtime.manifest import ManifestError

    ap = argparse.ArgumentParser(
        prog="python -m models.kws_real", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--real", type=Path, required=True, help="a set built by python -m models.real_speech")
    ap.add_argument("--model", type=Path, default=SHIPPED, help="keyword artifact folder (default: the shipped one)")
    ap.add_argument("--engine", default="litert", choices=("litert", "onnx"))
    ap.add_argument(
        "--fa-budget",
        type=float,
        default=0.5,
        help="false accepts per hour of keyword-free val speech allowed when choosing on val",
    )
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    try:
        r = evaluate(args.real, args.model, args.engine, args.fa_budget)
    except (RealSpeechError, ManifestError) as e:
        print(f"kws_real: error: {e}", file=sys.stderr)
        return 2
    op, ch = r["operating_point"], r["chosen_on_val"]
    print_summary(f"own point (thr {op['threshold']}, {op['smoothing_steps']} steps)", r["at_operating_point"])
    print_summary(
        f"val-chosen (thr {ch['threshold']}, {ch['smoothing_steps']} steps)",
        {"val": ch["val"], "test": r["test_at_chosen"]},
    )
    print(f"real-time factor {r['real_time_factor']:.4f} (process CPU time / audio, one thread)")
    if args.out:
        with atomic_write(args.out, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
