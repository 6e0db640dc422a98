"""pocketsphinx as a peer of our keyword spotter: the same audio, the same scoring, side by side.

    python -m models.kws_peer --real data/kws-real [--streams STREAMS] [--model ARTIFACT] --out results.json

pocketsphinx (PyPI ``pocketsphinx``, BSD; its wheel ships the CMU en-us acoustic model and
dictionary) runs in keyword-list mode: a keyphrase file with the ten keywords, each with
the same threshold (``yes /1e-20/``). It hears exactly what our spotter hears: 16 kHz
int16 in 100 ms chunks, one utterance per file or stream, and its detections pass the
same refractory rule as our ``Detector`` (a detection less than ``refractory_s`` after
the previous one, of any keyword, is dropped). It is not tuned per keyword: one sweep
of the common threshold over ``THRESHOLDS``, chosen on validation data only.
pocketsphinx fires when (keyphrase score - best phone-loop score) >= log(threshold),
both in its integer units (log base 1.0001, shifted right by 10 bits): thresholds from
about 0.9 up to just below 1 are the same setting, and 1.0 itself fired on none of the
real files tried, so 0.9 is the strictest useful value.

* ``--real``: the real-speech set (``models.real_speech``), padded and scored by
  ``models.kws_real`` (hits per keyword occurrence, false accepts per hour of
  keyword-free speech); the threshold is chosen on ``val`` (highest detection rate
  within ``--fa-budget`` false accepts per hour), reported on ``test``. Our artifact
  runs through ``models.kws_real.evaluate`` on the same files.
* ``--streams``: the synthetic continuous streams of ``python -m models.kws_eval synth``;
  as ``models.kws_eval`` scores ours: the threshold with the lowest val false-reject
  rate whose val false accepts (negative stream, plus wrong-label and outside detections
  on the keyword stream) stay within the budget, then on the test streams false accepts
  per hour on the negative stream and false rejects on the keyword stream
  (``kws_eval.score_keywords``). Ours runs through ``KeywordSpotter.process`` with the same
  measures, at its shipped operating point and at the one ``kws_eval.tune`` picks on the
  same val streams.

Real-time factor: process CPU time / audio duration, one thread (pocketsphinx is
single-threaded; our spotter runs with ``threads=1``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import kws_eval, kws_real
from models.kws_data import KEYWORDS
from models.real_speech import SPLITS, Entry, RealSpeechError, load

SR = 16000
CHUNK = int(kws_eval.CHUNK_S * SR)
THRESHOLDS = (1e-30, 1e-20, 1e-10, 1e-5, 1e-3, 1e-1, 0.5, 0.9)
REFRACTORY_S = 1.0


class PeerError(Exception):
    """A problem the user has to fix; the message is one line."""


@dataclasses.dataclass(frozen=True)
class PeerDetection:
    label: str
    score: float  # pocketsphinx's posterior of the keyphrase
    t: float  # seconds from the stream start: end of the keyphrase's last frame


def refractory(dets: Sequence[PeerDetection], refractory_s: float = REFRACTORY_S) -> list[PeerDetection]:
    """The detections ``Detector`` would let through: none within ``refractory_s`` of the previous one."""
    out, last = [], -np.inf
    for d in sorted(dets, key=lambda d: d.t):
        if d.t - last >= refractory_s - 1e-9:
            out.append(d)
            last = d.t
    return out


def sphinx_decoder(**config: Any) -> Any:
    """A pocketsphinx ``Decoder`` at 16 kHz with its bundled en-us model and dictionary, quiet, no
    language model unless ``config`` sets one (``kws=``, ``jsgf=``...); PeerError if it is not installed."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise PeerError("pocketsphinx is not installed; pip install -e '.[peers]'") from None
    return Decoder(**{"lm": None, **config}, samprate=SR, loglevel="FATAL")


def utterance(decoder: Any, x: np.ndarray) -> None:
    """One utterance over ``x`` (float32 at 16 kHz): 16-bit PCM fed in 100 ms chunks as live audio."""
    pcm = (np.clip(np.asarray(x, np.float32), -1.0, 1.0) * 32767).astype("<i2")
    decoder.start_utt()
    for i in range(0, len(pcm), CHUNK):
        decoder.process_raw(pcm[i : i + CHUNK].tobytes(), False, False)
    decoder.end_utt()


class SphinxSpotter:
    """pocketsphinx in keyword-list mode, every keyword at one threshold."""

    def __init__(
        self, threshold: float, keywords: Sequence[str] = KEYWORDS, refractory_s: float = REFRACTORY_S
    ) -> None:
        self.threshold, self.keywords, self.refractory_s = float(threshold), tuple(keywords), refractory_s
        with tempfile.TemporaryDirectory(prefix="kws_peer_") as tmp:
            kws = Path(tmp) / "keywords.list"
            kws.write_text("".join(f"{k} /{self.threshold:g}/\n" for k in self.keywords))
            self.decoder = sphinx_decoder(kws=str(kws))
        self.frame_rate = int(self.decoder.config["frate"])

    def detect(self, x: np.ndarray) -> list[PeerDetection]:
        """One utterance over ``x`` (float32 at 16 kHz), fed in 100 ms chunks as live audio."""
        d = self.decoder
        utterance(d, x)
        dets = [
            PeerDetection(s.word.strip(), float(s.prob), (s.end_frame + 1) / self.frame_rate) for s in (d.seg() or ())
        ]
        return refractory([x for x in dets if x.label in self.keywords], self.refractory_s)


def timed(detect, x: np.ndarray) -> tuple[list, float]:
    t0 = time.process_time()
    dets = detect(x)
    return dets, time.process_time() - t0


# ---------------------------------------------------------------- the real-speech set
def peer_real(
    real: Path, entries: Sequence[Entry], fa_budget: float, thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, Any]:
    audio = {e.id: kws_real.audio(real, e) for e in entries}
    seconds = sum(len(x) for x in audio.values()) / SR
    rows, full, dets_at, cpu = [], {}, {}, 0.0
    for thr in thresholds:
        sp = SphinxSpotter(thr)
        dets = {}
        for i, x in audio.items():
            dets[i], c = timed(sp.detect, x)
            cpu += c
        r = kws_real.score(entries, dets)
        full[thr], dets_at[thr] = r, dets
        rows.append({"threshold": thr, **{s: kws_real.brief(r[s]) for s in SPLITS}})
        print(
            f"pocketsphinx real {thr:g}: val {r['val']['hits']}/{r['val']['keyword_occurrences']} hits, "
            f"{r['val']['false_accepts']} false accepts",
            file=sys.stderr,
            flush=True,
        )
    best = kws_real.choose(rows, fa_budget)
    return {
        "chosen_on_val": {"threshold": best["threshold"], "fa_budget_per_hour": fa_budget, "val": best["val"]},
        "test_at_chosen": full[best["threshold"]]["test"],
        "by_band_at_chosen": kws_real.by_band(entries, dets_at[best["threshold"]]),
        "sweep": rows,
        "real_time_factor": cpu / (seconds * len(thresholds)),
        "audio_minutes": round(seconds / 60, 2),
    }


# ---------------------------------------------------------------- synthetic streams
def stream_scores(detect, streams: Path, split: str) -> dict[str, Any]:
    """``kws_eval``'s stream measures for any detector: FA on the negative stream, FRR on the keyword stream."""
    neg, kw, spans = kws_eval._load_stream(streams, split)
    dn, cn = timed(detect, neg)
    dk, ck = timed(detect, kw)
    r = kws_eval.score_keywords(dk, spans)
    hours = len(neg) / SR / 3600
    return {
        "negative_minutes": round(hours * 60, 2),
        "false_accepts": len(dn),
        "fa_per_hour": len(dn) / hours,
        "false_accept_labels": [{"label": d.label, "t": d.t} for d in dn],
        "keyword_stream_minutes": round(len(kw) / SR / 60, 2),
        **r,
        "real_time_factor": (cn + ck) / ((len(neg) + len(kw)) / SR),
    }


def peer_streams(streams: Path, fa_budget: float, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    rows = []
    for thr in thresholds:
        v = stream_scores(SphinxSpotter(thr).detect, streams, "val")
        hours = (v["negative_minutes"] + v["keyword_stream_minutes"]) / 60
        rows.append(
            {
                "threshold": thr,
                "fa": v["false_accepts"] + v["outside"] + v["wrong_label"],
                "frr": v["frr"],
                "val_hours": hours,
            }
        )
        print(
            f"pocketsphinx streams {thr:g}: val FRR {v['frr']:.2f}, {rows[-1]['fa']} false accepts",
            file=sys.stderr,
            flush=True,
        )
    allowed = int(np.floor(fa_budget * rows[0]["val_hours"] + 1e-9))
    ok = [r for r in rows if r["fa"] <= allowed] or sorted(rows, key=lambda r: r["fa"])[:1]
    best = min(ok, key=lambda r: (r["frr"], -r["threshold"]))
    test = stream_scores(SphinxSpotter(best["threshold"]).detect, streams, "test")
    return {"chosen_on_val": {**best, "allowed_val_false_accepts": allowed}, "sweep": rows, "test": test}


def spotter_detect(model_dir: Path, threshold: float | None = None, smoothing: int | None = None):
    """Our artifact as a ``detect(x)`` function: ``KeywordSpotter.process`` in 100 ms chunks, one thread."""
    from edge_runtime import manifest as mf
    from edge_runtime.pipelines.audio import KeywordSpotter

    m, folder = mf.load(model_dir)
    sp = KeywordSpotter(m, folder, "litert", threads=1, threshold=threshold, smoothing=smoothing)

    def detect(x: np.ndarray) -> list:
        sp.reset()
        return [d for i in range(0, len(x), CHUNK) for d in sp.process(x[i : i + CHUNK])]

    return detect, sp


def ours_streams(model_dir: Path, streams: Path, fa_budget: float) -> dict[str, Any]:
    from edge_runtime import manifest as mf

    m, folder = mf.load(model_dir)
    tuned = kws_eval.tune(m, folder, streams, fa_budget=fa_budget)
    shipped, sp = spotter_detect(model_dir)
    retuned, _ = spotter_detect(model_dir, tuned["threshold"], tuned["smoothing_steps"])
    return {
        "shipped_operating_point": {"threshold": sp.threshold, "smoothing_steps": sp.smoothing},
        "test_at_shipped": stream_scores(shipped, streams, "test"),
        "tuned_on_these_val_streams": {
            k: tuned[k] for k in ("threshold", "smoothing_steps", "val_frr", "val_false_accepts", "val_hours")
        },
        "test_at_tuned": stream_scores(retuned, streams, "test"),
    }


# ---------------------------------------------------------------- report
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def table(results: dict[str, Any]) -> str:
    lines = []
    if "real" in results:
        lines += [
            "real speech, test split (operating point chosen on val):",
            "| system | setting | detected | detection rate | false accepts | FA/h keyword-free | RTF |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        o, p = results["real"]["ours"], results["real"]["pocketsphinx"]
        for name, setting, t, rtf in (
            (
                "ours",
                f"own point thr {o['operating_point']['threshold']}, {o['operating_point']['smoothing_steps']} steps",
                o["at_operating_point"]["test"],
                o["real_time_factor"],
            ),
            (
                "ours",
                f"val-chosen thr {o['chosen_on_val']['threshold']}, {o['chosen_on_val']['smoothing_steps']} steps",
                o["test_at_chosen"],
                o["real_time_factor"],
            ),
            (
                "pocketsphinx",
                f"val-chosen thr {p['chosen_on_val']['threshold']:g}",
                p["test_at_chosen"],
                p["real_time_factor"],
            ),
        ):
            lines.append(
                f"| {name} | {setting} | {t['hits']}/{t['keyword_occurrences']} | {_pct(t['detection_rate'])} "
                f"| {t['false_accepts']} | {_rate(t['fa_per_hour'])} | {rtf:.4f} |"
            )
    if "streams" in results:
        o, p = results["streams"]["ours"], results["streams"]["pocketsphinx"]
        lines += [
            "",
            "synthetic streams, test split:",
            "| system | setting | FRR | FA/h | wrong label | RTF |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, setting, t in (
            ("ours", f"shipped thr {o['shipped_operating_point']['threshold']}", o["test_at_shipped"]),
            ("ours", f"val-tuned thr {o['tuned_on_these_val_streams']['threshold']}", o["test_at_tuned"]),
            ("pocketsphinx", f"val-chosen thr {p['chosen_on_val']['threshold']:g}", p["test"]),
        ):
            lines.append(
                f"| {name} | {setting} | {_pct(t['frr'])} | {t['fa_per_hour']:.1f} | {t['wrong_label']} | "
                f"{t['real_time_factor']:.4f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.manifest import ManifestError, write_json_atomic

    ap = argparse.ArgumentParser(
        prog="python -m models.kws_peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--real", type=Path, help="a set built by python -m models.real_speech")
    ap.add_argument("--streams", type=Path, help="streams written by python -m models.kws_eval synth")
    ap.add_argument("--model", type=Path, default=kws_real.SHIPPED, help="our keyword artifact (default: shipped)")
    ap.add_argument("--fa-budget", type=float, default=0.5, help="false accepts per hour allowed when choosing on val")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    args = ap.parse_args(argv)
    if not args.real and not args.streams:
        ap.error("give --real, --streams or both")
    if args.streams and not (args.streams / "val_negative.wav").is_file():
        print(
            f"kws_peer: error: --streams {args.streams}: no val_negative.wav; write the streams with "
            "'python -m models.kws_eval synth'",
            file=sys.stderr,
        )
        return 2
    from importlib.metadata import PackageNotFoundError, version

    try:
        peer_version = version("pocketsphinx")
    except PackageNotFoundError:
        print("kws_peer: error: pocketsphinx is not installed; pip install -e '.[peers]'", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "pocketsphinx": {
            "version": peer_version,
            "model": "en-us (shipped in the pocketsphinx wheel)",
            "thresholds_swept": list(THRESHOLDS),
            "refractory_s": REFRACTORY_S,
        }
    }
    try:
        if args.real:
            entries = load(args.real)
            results["real"] = {
                "pocketsphinx": peer_real(args.real, entries, args.fa_budget),
                "ours": kws_real.evaluate(args.real, args.model, "litert", args.fa_budget),
            }
        if args.streams:
            results["streams"] = {
                "pocketsphinx": peer_streams(args.streams, args.fa_budget),
                "ours": ours_streams(args.model, args.streams, args.fa_budget),
            }
    except (RealSpeechError, ManifestError, PeerError) as e:
        print(f"kws_peer: error: {e}", file=sys.stderr)
        return 2
    print(table(results))
    write_json_atomic(args.out, results, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
