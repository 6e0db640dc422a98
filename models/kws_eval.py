"""Continuous-audio evaluation of a keyword artifact: false accepts per hour and false rejects.

    python -m models.kws_eval synth --data DATA --out STREAMS [--minutes 35] [--val-minutes 30] [--keywords 400]
                                    [--context 480] [--context-only] [--words FILE [--vocabulary 8000]]
                                    [--telephone FRACTION] [--seed 0]
    python -m models.kws_eval evaluate --model ARTIFACT --streams STREAMS [--write] [--engines litert,onnx]
                                       [--out RESULTS.json]

``synth`` speaks random sentences of non-keyword words (``models.kws_data.UNKNOWN_WORDS``:
common words and near-misses such as "yet", "town", "top", "so"; never a keyword
or its homophone) with the data set's voices of each split and writes:

* ``STREAMS/context/{train,val,test}/*.wav`` -- single sentences (``--context`` of them
  in train, 1/8 as many in val and test), used by ``models.train_kws --context`` as
  context audio before training clips and, with ``--context-negatives``, as
  negatives; ``--context-only`` writes only these (hours of negative speech need
  thousands of sentences, not new streams); ``--words FILE`` speaks them from a
  word list (``models.kws_data.read_word_list``: thousands of words instead of the
  ~300, none a keyword or like one), recorded in ``context/words.txt``;
  ``--telephone F`` passes that share of them through the telephone channel
  (``models.kws_data.telephone_channel``), like ``kws_data --telephone``;
* ``STREAMS/{val,test}_negative.wav`` -- continuous non-keyword speech: sentences
  separated by 0.2-1.5 s pauses, each at a random level (-20..0 dB), half of
  them in a synthetic room (RT60 0.1-0.6 s), each with background noise (white,
  pink, brown or mains hum) at 5-30 dB SNR;
* ``STREAMS/{val,test}_keywords.wav`` + ``.json`` -- the same kind of audio with a
  held-out-voice keyword utterance after each sentence (0.3-0.8 s pauses around
  it), and where each keyword lies.

Voices come from the data set's own split (``voices.json``): the ``test`` streams
use only test voices, never heard in training; ``val`` streams use validation voices
and are used to choose the detector's operating point.

``evaluate`` streams the files through ``edge_runtime.pipelines.audio.KeywordSpotter``
(the daemon's code path) in 100 ms chunks and sweeps threshold and smoothing on the
val streams: the smoothing with the lowest val false-reject rate within the
false-accept budget (``--fa-budget``, per hour) is kept, with its whole val
trade-off curve (false accepts per hour and false-reject rate per threshold), and
the threshold is the one the runtime picks from that curve for the budget. It then
measures on the test streams with that operating point: false accepts per hour on
the negative stream (every detection is one), and on the keyword stream the share
of keywords not detected with their label between their start and 1.2 s after
their end (false rejects). It also measures test-split accuracy of the float and
int8 models. ``--write`` stores everything in the manifest's ``metrics`` (the
operating point and the curve as ``metrics["detector"]``, from which the runtime
chooses its threshold by ``[audio] false_accepts_per_hour``) and writes
``EVALUATION.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models import process_pool

SR = 16000
HIT_AFTER_END_S = 1.2  # a detection up to this long after a keyword's end counts as hitting it
CHUNK_S = 0.1
ENGINES = ("litert", "onnx")
NOISES = ("white", "pink", "brown", "hum")


# ---------------------------------------------------------------- synthesis
def _voices(data: Path):
    """The data set's voices per split and its generation parameters (voices.json): the streams
    speak with the same voices, engine weights and TTS augmentation as the clips."""
    from models import kws_data as kd

    path = data / "voices.json"
    try:
        meta = json.loads(path.read_text())
        params = kd.Params.from_json(meta.get("params", {}))
        voices = {s: [kd.Voice.from_id(i) for i in meta["splits"][s]] for s in kd.SPLITS}
    except OSError as e:
        raise kd.KwsDataError(
            f"--data {data}: no voices.json ({e.strerror}); pass a folder made by models.kws_data"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise kd.KwsDataError(
            f"{path}: not a voices.json written by models.kws_data ({e!r:.120}); make the data again"
        ) from None
    kd.check_engines(sorted({v.engine for vs in voices.values() for v in vs}))
    return voices, params


def _say(job: tuple) -> np.ndarray:
    from models import kws_data as kd

    utt, speed, tmp = job
    try:
        return kd.resample_speed(kd.synthesize(utt, tmp), speed).astype(np.float32)
    except kd.TtsError:
        return np.zeros(0, np.float32)


def _sentence_jobs(rng, voices, params, n, tmp, words=(3, 9), vocabulary=None):
    from models import kws_data as kd

    vocabulary = vocabulary or kd.UNKNOWN_WORDS
    jobs = []
    for _ in range(n):
        v = kd._pick_voice(rng, voices, params)
        text = " ".join(kd._word(rng, vocabulary) for _ in range(int(rng.integers(words[0], words[1] + 1))))
        jobs.append((kd._utterance(rng, v, text, params), kd._uniform(rng, params.speed), tmp))
    return jobs


def _keyword_jobs(rng, voices, params, n, tmp):
    from models import kws_data as kd

    jobs, labels = [], []
    for i in range(n):
        kw = kd.KEYWORDS[i % len(kd.KEYWORDS)]
        v = kd._pick_voice(rng, voices, params)
        jobs.append((kd._utterance(rng, v, kw, params), kd._uniform(rng, params.speed), tmp))
        labels.append(kw)
    return jobs, labels


def _render(jobs, desc):
    from tqdm import tqdm

    with process_pool(2) as pool:
        return list(tqdm(pool.imap(_say, jobs, chunksize=8), total=len(jobs), desc=desc, file=sys.stderr))


def _segment(rng, speech: np.ndarray, pre: float, post: float) -> np.ndarray:
    """Level, room and background noise for one piece of speech with pauses around it."""
    from models import kws_data as kd

    x = speech / (float(np.max(np.abs(speech))) or 1.0)
    if rng.random() < 0.5:
        x = kd.convolve(x, kd.room_impulse(rng, rng.uniform(0.1, 0.6), rng.uniform(0.0, 12.0)))
        x = x / (float(np.max(np.abs(x))) or 1.0)
    x = x * kd.db_to_amp(rng.uniform(-20.0, 0.0))
    seg = np.concatenate([np.zeros(int(pre * SR), np.float32), x, np.zeros(int(post * SR), np.float32)])
    kind = NOISES[int(rng.integers(len(NOISES)))]
    noise = (
        kd.hum_noise(rng, len(seg))
        if kind == "hum"
        else kd.colored_noise(rng, len(seg), {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    )
    level = kd.rms(x[np.abs(x) > 1e-4]) * kd.db_to_amp(-rng.uniform(5.0, 30.0))
    return (seg + level * noise).astype(np.float32), len(np.zeros(int(pre * SR)))


def synth(
    data: Path,
    out: Path,
    minutes: float,
    val_minutes: float,
    n_kw: int,
    n_context: int,
    seed: int,
    context_only: bool = False,
    vocabulary: tuple[str, ...] | None = None,
    telephone: float = 0.0,
) -> None:
    """Write the streams and context sentences (see the module docstring); ``vocabulary``: the
    context sentences' words instead of ``models.kws_data.UNKNOWN_WORDS`` (the streams keep those);
    ``telephone``: the share of context sentences heard through ``models.kws_data.telephone_channel``
    (drawn from its own generator, so the sentences stay those of the same seed)."""
    from edge_runtime.audio.wav import write_wav
    from models import kws_data as kd

    if not 0.0 <= telephone <= 1.0:
        raise kd.KwsDataError(f"--telephone {telephone}: give a share of the context sentences, 0..1")
    voices, params = _voices(data)
    out.mkdir(parents=True, exist_ok=True)
    if vocabulary:
        (out / "context").mkdir(exist_ok=True)
        (out / "context" / "words.txt").write_text("\n".join(vocabulary) + "\n")
    with tempfile.TemporaryDirectory(prefix="kws_eval_") as tmp:
        for s, count in (("train", n_context), ("val", n_context // 8), ("test", n_context // 8)):
            rng = np.random.default_rng([seed, 11, len(s)])
            phone_rng = np.random.default_rng([seed, 13, len(s)])
            d = out / "context" / s
            d.mkdir(parents=True, exist_ok=True)
            seconds = 0.0
            jobs = _sentence_jobs(rng, voices[s], params, count, tmp, vocabulary=vocabulary)
            for i, x in enumerate(_render(jobs, f"context {s}")):
                if len(x):
                    seg, _ = _segment(rng, x, rng.uniform(0.1, 0.8), rng.uniform(0.1, 0.8))
                    if telephone > 0 and phone_rng.random() < telephone:
                        seg = kd.telephone_channel(seg)
                    write_wav(d / f"sentence_{i:05d}.wav", np.clip(seg, -1, 1), SR)
                    seconds += len(seg) / SR
            print(f"context {s}: {count} sentences, {seconds / 60:.1f} min", flush=True)
        if context_only:
            return
        for s, mins, kws in (("val", val_minutes, n_kw // 2), ("test", minutes, n_kw)):
            rng = np.random.default_rng([seed, 12, len(s)])
            n_sent = int(mins * 60 / 2.0)
            sents = [x for x in _render(_sentence_jobs(rng, voices[s], params, n_sent, tmp), f"{s} negative") if len(x)]
            parts, total = [], 0
            for x in sents:
                seg, _ = _segment(rng, x, rng.uniform(0.2, 1.5), 0.0)
                parts.append(seg)
                total += len(seg)
                if total >= mins * 60 * SR:
                    break
            neg = np.concatenate(parts)
            write_wav(out / f"{s}_negative.wav", np.clip(neg, -1, 1), SR)
            jobs, labels = _keyword_jobs(rng, voices[s], params, kws, tmp)
            kw_audio = _render(jobs, f"{s} keywords")
            fill = _render(_sentence_jobs(rng, voices[s], params, kws, tmp, words=(2, 6)), f"{s} fillers")
            parts, spans, pos = [], [], 0
            for lab, k, f in zip(labels, kw_audio, fill):
                if not len(k):
                    continue
                if len(f):
                    seg, _ = _segment(rng, f, rng.uniform(0.3, 0.8), 0.0)
                    parts.append(seg)
                    pos += len(seg)
                seg, off = _segment(rng, k, rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8))
                spans.append({"label": lab, "start": (pos + off) / SR, "end": (pos + off + len(k)) / SR})
                parts.append(seg)
                pos += len(seg)
            write_wav(out / f"{s}_keywords.wav", np.clip(np.concatenate(parts), -1, 1), SR)
            (out / f"{s}_keywords.json").write_text(json.dumps(spans, indent=0) + "\n")
            print(
                f"{s}: negative {len(neg) / SR / 60:.1f} min, keyword stream {pos / SR / 60:.1f} min "
                f"with {len(spans)} keywords",
                flush=True,
            )


# ---------------------------------------------------------------- evaluation
def posteriors(spotter, x: np.ndarray, chunk_s: float = CHUNK_S) -> tuple[np.ndarray, np.ndarray]:
    spotter.reset()
    chunk = int(chunk_s * SR)
    ts, ss = [], []
    for i in range(0, len(x), chunk):
        t, s = spotter.posteriors(x[i : i + chunk])
        ts.append(t)
        ss.append(s)
    return np.concatenate(ts), np.concatenate(ss)


def detect(labels, ts, scores, threshold, smoothing, refractory_s):
    from edge_runtime.pipelines.audio import Detector

    d = Detector(labels, threshold, smoothing, refractory_s)
    return [x for x in (d.update(float(t), s) for t, s in zip(ts, scores)) if x is not None]


def score_keywords(dets, spans) -> dict[str, Any]:
    """Hits (right label within [start, end + HIT_AFTER_END_S]), misses, wrong labels, detections outside."""
    hit = [False] * len(spans)
    wrong, outside = 0, 0
    for d in dets:
        matched = False
        for i, s in enumerate(spans):
            if s["start"] <= d.t <= s["end"] + HIT_AFTER_END_S:
                matched = True
                if d.label == s["label"] and not hit[i]:
                    hit[i] = True
                elif d.label != s["label"]:
                    wrong += 1
                break
        if not matched:
            outside += 1
    n = len(spans)
    per = {}
    for lab in sorted({s["label"] for s in spans}):
        idx = [i for i, s in enumerate(spans) if s["label"] == lab]
        per[lab] = 1 - sum(hit[i] for i in idx) / len(idx)
    return {
        "keywords": n,
        "detected": int(sum(hit)),
        "frr": 1 - sum(hit) / n if n else None,
        "wrong_label": wrong,
        "outside": outside,
        "frr_per_keyword": per,
    }


def _load_stream(streams: Path, split: str):
    from edge_runtime.audio.wav import read_wav

    neg = read_wav(streams / f"{split}_negative.wav", SR)
    kw = read_wav(streams / f"{split}_keywords.wav", SR)
    spans = json.loads((streams / f"{split}_keywords.json").read_text())
    return neg, kw, spans


def _smoothed(scores: np.ndarray, k: int) -> np.ndarray:
    """Moving average over the last k steps (fewer at the start), as ``Detector`` computes it."""
    c = np.cumsum(np.asarray(scores, np.float64), axis=0)
    out = c.copy()
    out[k:] = c[k:] - c[:-k]
    n = np.minimum(np.arange(1, len(c) + 1), k)[:, None]
    return out / n


def _fast_detect(labels, ts, sm, thr, refractory_s):
    """``Detector`` over precomputed smoothed scores (for sweeping thresholds quickly)."""
    from edge_runtime.pipelines.audio import Detection, is_keyword

    kw = np.asarray([i for i, lab in enumerate(labels) if is_keyword(lab)])
    best = kw[np.argmax(sm[:, kw], axis=1)]
    val = sm[np.arange(len(sm)), best]
    out, last = [], -np.inf
    for i in np.flatnonzero(val >= thr):
        if ts[i] - last >= refractory_s - 1e-9:
            last = ts[i]
            out.append(Detection(labels[best[i]], float(val[i]), float(ts[i])))
    return out


def _curve(rows: list[dict[str, Any]], hours: float) -> list[dict[str, float]]:
    """One smoothing's val sweep as the runtime reads it (``metrics["detector"]["curve"]``): sorted by
    threshold, at most ``MAX_CURVE_POINTS`` points (evenly thinned, both ends kept)."""
    from edge_runtime.pipelines.audio import MAX_CURVE_POINTS

    rows = sorted(rows, key=lambda r: r["threshold"])
    keep = np.unique(np.round(np.linspace(0, len(rows) - 1, min(len(rows), MAX_CURVE_POINTS))).astype(int))
    return [
        {
            "threshold": rows[i]["threshold"],
            "false_accepts_per_hour": round(rows[i]["fa"] / hours, 4),
            "false_reject_rate": round(rows[i]["frr"], 4),
        }
        for i in keep
    ]


def tune(
    m, folder, streams: Path, refractory_s: float = 1.0, fa_budget: float = 0.5, engine: str = "litert"
) -> dict[str, Any]:
    from edge_runtime.pipelines.audio import KeywordSpotter, read_curve, within_budget

    neg, kw, spans = _load_stream(streams, "val")
    sp = KeywordSpotter(m, folder, engine)
    tn, sn = posteriors(sp, neg)
    tk, sk = posteriors(sp, kw)
    hours = (len(neg) + len(kw)) / SR / 3600
    rows = []
    # int8 scores step by 1/256 (top 0.996): the finest thresholds sit between 0.99 and that
    thresholds = np.round(np.concatenate([np.arange(0.40, 0.985, 0.01), [0.99, 0.992, 0.994, 0.995]]), 3)
    for k in (1, 2, 3, 5, 8, 12):
        smn, smk = _smoothed(sn, k), _smoothed(sk, k)
        for thr in thresholds:
            fa = len(_fast_detect(m.labels, tn, smn, thr, refractory_s))
            r = score_keywords(_fast_detect(m.labels, tk, smk, thr, refractory_s), spans)
            rows.append(
                {
                    "smoothing_steps": k,
                    "threshold": float(thr),
                    "fa": fa + r["outside"] + r["wrong_label"],
                    "frr": r["frr"],
                }
            )
    allowed = int(np.floor(fa_budget * hours + 1e-9))
    ok = [r for r in rows if r["fa"] <= allowed] or sorted(rows, key=lambda r: r["fa"])[:1]
    k = min(ok, key=lambda r: (r["frr"], -r["threshold"]))["smoothing_steps"]
    curve = _curve([r for r in rows if r["smoothing_steps"] == k], hours)
    # the threshold the runtime picks from this curve for this budget (the highest if none is within it)
    pick = within_budget(read_curve({"curve": curve}, m.name), fa_budget)
    thr = pick.threshold if pick is not None else curve[-1]["threshold"]
    best = next(r for r in rows if r["smoothing_steps"] == k and r["threshold"] == thr)
    tradeoff = []
    for budget in (0.5, 2.0, 5.0, 10.0, 20.0):
        cand = [r for r in rows if r["fa"] <= int(np.floor(budget * hours + 1e-9))]
        if cand:
            b = min(cand, key=lambda r: (r["frr"], -r["threshold"]))
            tradeoff.append({"fa_budget_per_hour": budget, **b, "fa_per_hour": b["fa"] / hours})
    return {
        "threshold": best["threshold"],
        "smoothing_steps": best["smoothing_steps"],
        "refractory_s": refractory_s,
        "tuned_on": f"val streams ({hours * 60:.1f} min, validation voices): the smoothing with the lowest val FRR "
        f"within {allowed} val false accepts ({fa_budget}/h), the lowest threshold on its val curve "
        "within that budget",
        "fa_budget_per_hour": fa_budget,
        "val_frr": best["frr"],
        "val_false_accepts": best["fa"],
        "val_hours": round(hours, 3),
        "val_tradeoff": tradeoff,
        "curve": curve,
    }


def measure(m, folder, streams: Path, engine: str, fa_budget: float = 0.5) -> dict[str, Any]:
    """The runtime's operating point for ``fa_budget`` (from the manifest's curve) on the test streams,
    through KeywordSpotter.process."""
    from edge_runtime.pipelines.audio import KeywordSpotter

    neg, kw, spans = _load_stream(streams, "test")
    out: dict[str, Any] = {"engine": engine}
    sp = KeywordSpotter(m, folder, engine, false_accepts_per_hour=fa_budget)
    out["threshold"] = sp.threshold
    chunk = int(CHUNK_S * SR)
    t0 = time.perf_counter()
    dets = [d for i in range(0, len(neg), chunk) for d in sp.process(neg[i : i + chunk])]
    wall = time.perf_counter() - t0
    hours = len(neg) / SR / 3600
    out["negative_minutes"] = round(hours * 60, 2)
    out["false_accepts"] = len(dets)
    out["fa_per_hour"] = len(dets) / hours
    out["false_accept_labels"] = [{"label": d.label, "t": d.t, "score": d.score} for d in dets]
    out["real_time_factor"] = wall / (len(neg) / SR)
    sp.reset()
    kd = [d for i in range(0, len(kw), chunk) for d in sp.process(kw[i : i + chunk])]
    r = score_keywords(kd, spans)
    out.update({"keyword_stream_minutes": round(len(kw) / SR / 60, 2), **r})
    return out


def _test_speakers(work: Path, n: int) -> list[tuple[str, str]] | None:
    """(engine, speaker group) of every test sequence (``("noise", "noise")`` for ``_silence_``, the
    group ``espeak-ng`` for all espeak-ng variants), from the training data's ``clips.jsonl`` and
    ``voices.json``; None if the data is not at hand."""
    from models.kws_data import TtsError, Voice
    from models.train_kws import TrainError, find_data

    try:
        data = Path(json.loads((work / "training.json").read_text())["data"])
        meta = json.loads((data / "voices.json").read_text())
        groups = {r["id"]: r["group"] for r in meta.get("voices", [])}
        made = {}
        for line in (data / "clips.jsonl").read_text().splitlines():
            r = json.loads(line)
            v = (r.get("speech") or {}).get("voice")
            engine = "noise" if v is None else v.split(":")[0]
            if engine in ("noise", "espeak-ng"):  # espeak-ng: its many test variants on one row
                made[r["path"]] = (engine, engine)
            else:
                made[r["path"]] = (engine, groups.get(v) or Voice.from_id(v).group)
        files = find_data(data)[1]["test"][0]
        out = [made[Path(f).relative_to(data).as_posix()] for f in files]
    except (OSError, KeyError, ValueError, TrainError, TtsError):
        return None
    return out if len(out) == n else None


def accuracy(m, folder, work: Path, engines: tuple[str, ...] = ENGINES) -> dict[str, Any]:
    """Test-split accuracy: float (Keras) and int8 (each engine, chunk by chunk from a zero state)."""
    import keras

    from edge_runtime.engines import open_engine
    from models import kws

    z = np.load(work / "test_sequences.npz")
    x, y = z["features"], z["labels"]
    head_x = z["head_inputs"] if "head_inputs" in z.files else x  # speech embedding: the head reads embeddings
    model = keras.models.load_model(str(work / "kws_float.keras"), compile=False, custom_objects=kws.custom_objects())
    pf = model.predict(head_x, batch_size=256, verbose=0)
    res: dict[str, Any] = {"examples": int(len(y)), "float": float((pf.argmax(1) == y).mean())}
    preds_by = {"float": pf.argmax(1)}
    f = m.preprocessing.audio.frames_per_step
    w = max(f, m.preprocessing.audio.window_frames)
    for eng_name in engines:
        eng = open_engine(m, folder, eng_name)
        art = m.artifact({"litert": "tflite", "onnx": "onnx"}[eng_name])
        names = [t.name for t in eng.inputs]
        outn = [t.name for t in eng.outputs]
        preds, diffs = [], []
        for i in range(len(x)):
            st = {s.input: np.zeros(s.shape, np.float32) for s in art.state}
            for k in range(0, x.shape[1] - w + 1, f):
                feeds = {"features": x[i : i + 1, k : k + w], **st}
                outs = eng.run(*[feeds[n] for n in names])
                by = dict(zip(outn, outs))
                st = {s.input: by[s.output] for s in art.state}
            sc = [o for n, o in by.items() if n not in {s.output for s in art.state}][0].reshape(-1)
            preds.append(int(sc.argmax()))
            diffs.append(float(np.abs(sc - pf[i]).max()))
        preds_by[f"{eng_name}_int8"] = np.asarray(preds)
        acc = float((np.asarray(preds) == y).mean())
        res[f"{eng_name}_int8"] = acc
        res[f"{eng_name}_int8_drop_pp"] = 100 * (res["float"] - acc)
        res[f"{eng_name}_int8_agreement_with_float"] = float((np.asarray(preds) == pf.argmax(1)).mean())
        res[f"{eng_name}_int8_max_abs_score_diff"] = float(np.max(diffs))
        res[f"{eng_name}_precision"] = art.precision
        res[f"{eng_name}_int8_mean_max_abs_score_diff"] = float(np.mean(diffs))
    speakers = _test_speakers(work, len(y))
    if speakers is not None:  # how each engine (held-out ones included) and each held-out speaker fares
        for key, col in (("by_engine", 0), ("by_speaker", 1)):
            sp = np.asarray([s[col] for s in speakers])
            res[key] = {
                v: {
                    "clips": int((sp == v).sum()),
                    **{k: float((p[sp == v] == y[sp == v]).mean()) for k, p in preds_by.items()},
                }
                for v in sorted(set(sp))
            }
    return res


def evaluate(
    model_dir: Path,
    streams: Path,
    write: bool,
    work: Path | None = None,
    fa_budget: float = 0.5,
    engines: tuple[str, ...] = ENGINES,
) -> dict[str, Any]:
    """Tune on the val streams (with the first of ``engines``), then measure with each of them;
    ``write`` (which reports on both engines) needs all of :data:`ENGINES`."""
    from edge_runtime import manifest as mf

    if write and tuple(engines) != ENGINES:
        raise ValueError(f"--write reports on {', '.join(ENGINES)}: measure with all of them")
    m, folder = mf.load(model_dir)
    work = work or folder.parent / f".{folder.name}-work"
    det = dict(m.metrics.get("detector") or {})
    tuned = tune(m, folder, streams, fa_budget=fa_budget, engine=engines[0])
    det.update({k: tuned[k] for k in ("threshold", "smoothing_steps", "refractory_s", "curve")})
    det["source"] = tuned["tuned_on"]
    metrics = dict(m.metrics)
    metrics["detector"] = det
    m = dataclasses.replace(m, metrics=metrics)
    results = {
        "tuning": tuned,
        "accuracy": accuracy(m, folder, work, engines) if work.is_dir() else None,
        "stream": {e: measure(m, folder, streams, e, fa_budget) for e in engines},
        "sizes": {a.id: a.file.size for a in m.artifacts},
    }
    print(json.dumps({k: v for k, v in results.items()}, indent=1, default=str)[:4000])
    if write:
        s = results["stream"]["litert"]
        metrics["keyword_evaluation"] = {
            "accuracy_test": results["accuracy"],
            "tuning": tuned,
            "stream_test": {
                e: {k: v for k, v in r.items() if k != "false_accept_labels"} for e, r in results["stream"].items()
            },
            "fa_per_hour": s["fa_per_hour"],
            "frr": s["frr"],
        }
        m = dataclasses.replace(m, metrics=metrics)
        mf.save(m, folder)
        (folder / "EVALUATION.md").write_text(evaluation_md(m, results, streams))
    return results


def _stacking(stack: int) -> str:
    if stack <= 1:
        return "per-frame "
    return f"{stack} frames stacked per LSTM step ({100 // stack} Hz), "


def _accuracy_table(title: str, what: str, rows: dict[str, Any] | None) -> list[str]:
    if not rows:
        return []
    return [
        title,
        "",
        f"| {what} | clips | float | litert | onnx |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {v} | {r['clips']} | {100 * r['float']:.2f}% | {100 * r['litert_int8']:.2f}% | "
            f"{100 * r['onnx_int8']:.2f}% |"
            for v, r in rows.items()
        ],
        "",
    ]


def evaluation_md(m, r: dict[str, Any], streams: Path) -> str:
    a, t, det = r["accuracy"], r["tuning"], m.metrics["detector"]
    tr = m.metrics.get("training", {})
    s, so = r["stream"]["litert"], r["stream"]["onnx"]

    def goal(ok):
        return "met" if ok else "**not met**"

    kb = {k: v / 1024 for k, v in r["sizes"].items()}
    lines = [
        f"# {m.name}: evaluation",
        "",
        "All numbers measured on this workstation (2 cores) by `python -m models.kws_eval evaluate "
        "--model edge_runtime/data/models/kws --streams STREAMS --write`, on synthetic TTS speech only "
        "(the TTS engines of `models/kws_data.py`); whole speakers are held out, but no real human "
        "recording was used, so expect real-microphone numbers to differ.",
        "",
        "## Model",
        "",
        f"{_stacking(tr.get('stack', 1))}Dense({tr.get('front')}, relu) + LSTM({tr.get('units')}) over 40 log-mel bins "
        "with causal running-mean normalisation (2 s), "
        f"step model of {m.preprocessing.audio.frames_per_step} frames (40 ms) + (h, c)"
        + (f", cell state clipped to +-{tr['cell_clip']:g}" if tr.get("cell_clip") else "")
        + "; "
        f"trained {tr.get('epochs')} epochs x {len(tr.get('seeds', []))} seed(s) on {tr.get('train_clips')} clips"
        + (
            f" (the data set's clips plus {tr['context_negatives']:.0%} as many 1 s windows of context sentences, "
            "labelled _unknown_)"
            if tr.get("context_negatives")
            else ""
        )
        + (", with mel-axis warping and SpecAugment masks" if tr.get("augment") else "")
        + f"; seed {tr.get('picked_seed')} picked on validation accuracy "
        + ", ".join(f"{r['seed']}: {100 * r['val_accuracy']:.2f}%" for r in tr.get("seeds", []))
        + "."
        + (
            " Full int8 activations were tried first and rejected: "
            + ", ".join(f"{k} lost {v:.2f} pp" for k, v in tr["rejected_activations"].get("int8", {}).items())
            + " on 200 test sequences (limit 1 pp), so the artifacts are 16x8 (int8 weights, int16 activations)."
            if isinstance(tr.get("rejected_activations", {}).get("int8"), dict)
            else ""
        ),
        "",
        "| artifact | size |",
        "| --- | --- |",
        *[f"| {k} | {v:.1f} KiB |" for k, v in kb.items()],
        "",
        "## Accuracy on the held-out-voice test split",
        "",
        f"{a['examples']} test clips (12 classes, test voices only). Each clip is preceded by 1 s of context "
        "audio from the test split (other clips, sentences) -- the 2 s the runtime's oldest state lane has heard -- "
        "and run from a zero state; the label is the top score at the clip's end. Float: the Keras model; quantized: "
        "the shipped artifacts run chunk by chunk (4 frames per step) through the board's engines.",
        "",
        "| model | accuracy | drop vs float | top-1 agreement with float | max abs score diff |",
        "| --- | --- | --- | --- | --- |",
        f"| float (Keras) | {100 * a['float']:.2f}% | | | |",
        *[
            f"| {e} {a[f'{e}_precision']} | {100 * a[f'{e}_int8']:.2f}% | {a[f'{e}_int8_drop_pp']:.2f} pp | "
            f"{100 * a[f'{e}_int8_agreement_with_float']:.2f}% | {a[f'{e}_int8_max_abs_score_diff']:.3f} |"
            for e in ("litert", "onnx")
        ],
        "",
        *_accuracy_table(
            "By engine (an engine held out of training, such as pico, speaks in test only):",
            "engine",
            a.get("by_engine"),
        ),
        *_accuracy_table(
            "By held-out speaker (one speaker across engines is one row; espeak-ng: all its test variants together):",
            "speaker",
            a.get("by_speaker"),
        ),
        f"Goal >= 90% (MLPerf Tiny KWS bar): {goal(min(a['litert_int8'], a['onnx_int8']) >= 0.9)} "
        f"(int8 {100 * a['litert_int8']:.2f}% / {100 * a['onnx_int8']:.2f}%). "
        f"Goal int8 drop <= 1 pp: {goal(max(a['litert_int8_drop_pp'], a['onnx_int8_drop_pp']) <= 1.0)}.",
        "",
        "## Continuous audio: false accepts and false rejects",
        "",
        f"Operating point (stored in `manifest.json` `metrics.detector`, the runtime's defaults): threshold "
        f"{det['threshold']}, moving average over {det['smoothing_steps']} steps, refractory {det['refractory_s']} s, "
        f"{det['lanes']} state lanes reset every {det['state_reset_s']} s. Chosen on *validation-voice* streams "
        f"({t['val_hours'] * 60:.0f} min): lowest val false-reject rate ({100 * t['val_frr']:.1f}%) with "
        f"{t['val_false_accepts']} val false accepts (budget {t['fa_budget_per_hour']}/h); the test streams below "
        "were not used to choose it. The whole val curve of this smoothing "
        f"({len(det.get('curve', []))} thresholds) is stored as `metrics.detector.curve`: the runtime takes the lowest "
        "threshold on it within `[audio] false_accepts_per_hour` (default 0.5).",
        "",
        "Validation trade-off (best val FRR for a val false-accept budget; val streams only):",
        "",
        "| FA budget per hour | threshold | smoothing steps | val FA per hour | val FRR |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {r['fa_budget_per_hour']} | {r['threshold']} | {r['smoothing_steps']} | {r['fa_per_hour']:.2f} | "
            f"{100 * r['frr']:.1f}% |"
            for r in t["val_tradeoff"]
        ],
        "",
        "Streams (`python -m models.kws_eval synth`, test voices only): random sentences of non-keyword words "
        "(common words and near-misses such as yet/town/top/so/lift/one) separated by 0.2-1.5 s pauses, each at "
        "-20..0 dB, half with synthetic room reverberation, with white/pink/brown noise or mains hum at 5-30 dB SNR. "
        "The keyword stream puts one keyword utterance (0.3-0.8 s pauses around it) after each short sentence. "
        "Both are streamed through `KeywordSpotter.process` (the daemon's code path) in 100 ms chunks with the "
        "shipped quantized artifact.",
        "",
        "| engine | non-keyword audio | false accepts | FA per hour | keywords | false-reject rate | "
        "wrong-label detections |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *[
            f"| {x['engine']} {a[x['engine'] + '_precision']} | {x['negative_minutes']:.1f} min | "
            f"{x['false_accepts']} | {x['fa_per_hour']:.2f} | "
            f"{x['keywords']} | {100 * x['frr']:.2f}% | {x['wrong_label']} |"
            for x in (s, so)
        ],
        "",
        f"A keyword counts as detected when a detection with its label fires between its start and "
        f"{HIT_AFTER_END_S} s after its end. Goal FA <= 0.5/h: {goal(s['fa_per_hour'] <= 0.5)}. "
        f"Goal FRR <= 5%: {goal(s['frr'] <= 0.05)}.",
        "",
        "Per-keyword false-reject rate (LiteRT): "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in s["frr_per_keyword"].items()),
        "",
        f"False accepts on the negative stream (LiteRT): {s['false_accept_labels'] or 'none'}.",
        "",
        f"Host speed: the whole chain (front end + 2 lanes of the LiteRT quantized step model + detector) ran at "
        f"{s['real_time_factor']:.4f} x real time on one stream.",
        "",
    ]
    return "\n".join(lines)


def _engines(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in ENGINES]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: name one or more of {', '.join(ENGINES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    from models.kws_data import add_telephone_flag

    ap = argparse.ArgumentParser(
        prog="python -m models.kws_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--minutes", type=float, default=35.0)
    s.add_argument("--val-minutes", type=float, default=30.0)
    s.add_argument("--keywords", type=int, default=400)
    s.add_argument(
        "--context",
        type=int,
        default=480,
        help="train-voice context sentences (val and test get 1/8 as many, spoken by their voices)",
    )
    s.add_argument(
        "--context-only",
        action="store_true",
        help="write only the context sentences, no val/test streams (more negative speech for "
        "train_kws --context; a new --seed gives new sentences)",
    )
    s.add_argument(
        "--words",
        type=Path,
        help="speak the context sentences with words of this list (one per line, e.g. Debian's "
        "wamerican /usr/share/dict/american-english) instead of the data set's _unknown_ words; "
        "keywords and words that sound like one are left out",
    )
    s.add_argument("--vocabulary", type=int, default=8000, help="words drawn from --words (default 8000)")
    add_telephone_flag(s, "context sentences")
    s.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("evaluate")
    e.add_argument("--model", type=Path, required=True)
    e.add_argument("--streams", type=Path, required=True)
    e.add_argument("--write", action="store_true")
    e.add_argument(
        "--fa-budget",
        type=float,
        default=0.5,
        help="false accepts per hour allowed on the val streams when choosing the operating point",
    )
    e.add_argument("--work", type=Path, help="train_kws --work folder (float model, test sequences)")
    e.add_argument(
        "--engines",
        type=_engines,
        default=ENGINES,
        help="comma-separated engines to measure with, the first also tunes (default litert,onnx; --write needs both)",
    )
    e.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.cmd == "evaluate" and args.write and args.engines != ENGINES:
        ap.error("--write reports on both engines: leave out --engines")
    from edge_runtime.audio.wav import AudioError
    from edge_runtime.manifest import ManifestError, write_json_atomic
    from models.kws_data import KwsDataError, read_word_list

    try:
        if args.cmd == "synth":
            vocabulary = read_word_list(args.words, args.vocabulary, args.seed) if args.words else None
            synth(
                args.data,
                args.out,
                args.minutes,
                args.val_minutes,
                args.keywords,
                args.context,
                args.seed,
                args.context_only,
                vocabulary,
                args.telephone,
            )
        else:
            r = evaluate(args.model, args.streams, args.write, args.work, args.fa_budget, args.engines)
            if args.out:
                write_json_atomic(args.out, r, default=str)
    except (KwsDataError, ManifestError, AudioError) as err:  # each names its file or flag
        print(f"kws_eval: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
