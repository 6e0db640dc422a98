"""The phrase recognizer on held-out speech: what ``EVALUATION.md`` beside a phrase model reports.

    python -m models.asr_eval --model ARTIFACT --grammar GRAMMAR --phrases DIR
                              [--out-of-grammar DATA] [--noise DIR] [--real DIR] [--engines onnx,litert]
                              --out results.json
    python -m models.asr_eval --tune --model ARTIFACT --grammar GRAMMAR --phrases VAL_DIR
                              --out-of-grammar DATA [--write] --out tune.json

Everything runs the way the board does: :class:`edge_runtime.asr.recognizer.PhraseRecognizer` on each
artifact's own engine (one thread), every WAV file streamed in 100 ms chunks and flushed at its end.

* ``--phrases``: clips of ``GRAMMAR``'s phrases said by held-out voices and engines
  (``python -m models.asr_data --speak-grammar GRAMMAR``; a grammar the model never trained on).
  ``phrase_accuracy`` is the share of clips whose recognised phrases are exactly their own phrase;
  ``wrong`` the share with another phrase of the grammar; the rest recognised nothing.
* ``--out-of-grammar``: the test split of a ``models.asr_data`` set (held-out voices; none of its
  sentences is a phrase of the grammar): ``rejected`` is the share with no phrase recognised.
* ``--noise``: WAV files of noise only (e.g. a keyword set's ``test/_silence_``): phrases recognised.
* ``--real``: the real-speech set of ``models.real_speech``; its asterisk prompts of the ``test`` split
  make a closed-set test: a grammar of their transcripts (lower case, punctuation dropped; prompts
  with digits or * # in them, of more than :data:`MAX_PROMPT_WORDS` words, or with a word pocketsphinx
  or the model cannot say -- ``models.g2p.unsayable`` -- left out), which one was said. Words
  the model's lexicon lacks are added with espeak-ng (``models.g2p``) to a copy of the model folder,
  as a user would on the workstation. With the pocketsphinx peer (``models.asr_peer``) the same
  grammar runs on the same files, side by side.
* ``rtf``: process CPU time / audio duration over every file, one thread, decoding included.

``--tune`` chooses the model's operating point on **validation** data only: ``--phrases`` made with
``--split val`` and the val split of ``--out-of-grammar``. For each ``min_confidence`` of
:data:`THRESHOLDS` it measures phrase accuracy and out-of-grammar rejection, and takes the lowest
(the most phrases accepted) that rejects at least :data:`TUNE_REJECT` of the out-of-grammar
sentences; ``--write`` stores it in the manifest (``metrics.asr.min_confidence``, with the curve in
``metrics.asr.operating_point``), where the runtime takes it when ``[asr] min_confidence`` is unset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHUNK_S = 0.1
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
TUNE_REJECT = 0.99
MAX_PROMPT_WORDS = 12  # real prompts of command length
FORMAT_OF_ENGINE = {"litert": "tflite", "onnx": "onnx"}


class EvalError(Exception):
    """A problem the user has to fix; the message is one line."""


def recognize(rec, path: Path) -> list[Any]:
    """The phrases ``rec`` recognises in one WAV file, streamed as live audio and flushed."""
    from edge_runtime.audio.wav import read_wav

    x = read_wav(path, rec.p.sample_rate)
    rec.reset()
    n = round(CHUNK_S * rec.p.sample_rate)
    out = []
    for i in range(0, len(x), n):
        out += rec.process(x[i : i + n])
    return out + rec.flush()


def score_set(rec, clips: Sequence[tuple[Path, str | None]]) -> dict[str, Any]:
    """``clips``: (file, the phrase said, or None for speech or noise outside the grammar)."""

    def ours(path: Path) -> tuple[list[str], float]:
        t0 = time.process_time()
        got = [p.phrase for p in recognize(rec, path)]
        return got, time.process_time() - t0

    return score_with(ours, clips)


def peer_set(peer, clips: Sequence[tuple[Path, str | None]]) -> dict[str, Any]:
    """:func:`score_set` for pocketsphinx (``models.asr_peer.PeerRecognizer``) on the same files."""
    from edge_runtime.audio.wav import read_wav

    def theirs(path: Path) -> tuple[list[str], float]:
        phrase, cpu = peer.recognize(read_wav(path, 16000))
        return [phrase] if phrase else [], cpu

    return score_with(theirs, clips)


def score_with(hear, clips: Sequence[tuple[Path, str | None]]) -> dict[str, Any]:
    """``hear(path) -> (phrases, cpu_s)`` over ``clips``: phrase accuracy or rejection, and the RTF."""
    from edge_runtime.audio.wav import wav_info

    right = wrong = nothing = phrases_out = 0
    cpu = audio = 0.0
    misses: list[dict[str, Any]] = []
    for path, said in clips:
        got, took = hear(path)
        cpu += took
        audio += wav_info(path, 16000).seconds
        if said is None:
            phrases_out += len(got)
            nothing += not got
        elif got == [said]:
            right += 1
        else:
            wrong += bool(got)
            nothing += not got
            if len(misses) < 20:
                misses.append({"file": str(path), "said": said, "got": got})
    n = max(1, len(clips))
    res: dict[str, Any] = {"clips": len(clips), "audio_s": round(audio, 1), "rtf": round(cpu / max(audio, 1e-9), 4)}
    if any(s is not None for _, s in clips):
        res.update(phrase_accuracy=round(right / n, 4), wrong=round(wrong / n, 4), nothing=round(nothing / n, 4))
        res["misses"] = misses
    else:
        res.update(rejected=round(nothing / n, 4), phrases_recognised=phrases_out)
    return res


def normalise(transcript: str) -> str | None:
    """A prompt transcript as grammar words (``models.real_speech.words``); None if it holds digits or
    symbols said as words (``*``, ``#``)."""
    from models.real_speech import words

    if re.search(r"[\d*#]", transcript):
        return None
    return " ".join(words(transcript)) or None


def real_prompts(real: Path, model: Path, split: str = "test") -> list[tuple[Path, str]]:
    """The asterisk prompts of ``split`` whose transcript makes a phrase (:func:`normalise`, at most
    :data:`MAX_PROMPT_WORDS` words) that both recognizers can say: every word in pocketsphinx's
    dictionary, and in our ``model``'s lexicon or said by espeak-ng with the model's phonemes
    (``models.g2p.unsayable``)."""
    from models import g2p
    from models.asr_peer import unknown_words
    from models.kws_peer import sphinx_decoder

    decoder = sphinx_decoder()
    prompts = [(path, text) for path, text in _prompts(real, split) if not unknown_words(text.split(), decoder)]
    ours = set(g2p.unsayable(model, {w for _, text in prompts for w in text.split()}))
    return [(path, text) for path, text in prompts if not ours.intersection(text.split())]


def _prompts(real: Path, split: str) -> list[tuple[Path, str]]:
    rows = [json.loads(line) for line in (real / "manifest.jsonl").read_text().splitlines()]
    out = []
    for r in rows:
        if r["source"].startswith("asterisk") and r["split"] == split:
            text = normalise(r["transcript"])
            if text and len(text.split()) <= MAX_PROMPT_WORDS:
                out.append((real / r["path"], text))
    return out


def with_words(model: Path, phrases: list[str], tmp: Path) -> Path:
    """``model``, or a copy of it in ``tmp`` whose lexicon also has the words of ``phrases`` (espeak-ng, on
    this workstation: their citation forms and the forms they take in the phrases)."""
    from edge_runtime import manifest as mf
    from edge_runtime.asr.lexicon import load_lexicon
    from models import g2p

    m, folder = mf.load(model)
    lex = folder / m.metrics["asr"]["lexicon"]
    missing = load_lexicon(lex).missing({w for t in phrases for w in t.split()})
    if not missing:
        return folder
    copy = tmp / folder.name
    shutil.copytree(folder, copy)
    g2p.add_words(copy / lex.name, set(missing), phrases=[t.split() for t in phrases])
    return copy


def recognizer(model: Path, grammar, engine: str, min_confidence: float | None = None):
    from edge_runtime import manifest as mf
    from edge_runtime.asr.recognizer import PhraseRecognizer

    m, folder = mf.load(model)
    return PhraseRecognizer(m, folder, grammar, engine, threads=1, min_confidence=min_confidence)


def _clip_rows(folder: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of a models.asr_data folder's clips.jsonl, each with ``keys``."""
    path = folder / "clips.jsonl"
    try:
        rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise EvalError(f"{path}: cannot read it ({e.strerror}); pass a folder made by models.asr_data") from None
    except ValueError as e:
        raise EvalError(f"{path}: not JSON lines ({e}); make the data again with models.asr_data") from None
    if not all(isinstance(r, dict) and all(k in r for k in keys) for r in rows):
        raise EvalError(f"{path}: a line lacks {' or '.join(keys)}; make the data again with models.asr_data")
    return rows


def phrase_clips(folder: Path) -> list[tuple[Path, str | None]]:
    return [(folder / r["path"], r["text"]) for r in _clip_rows(folder, ("path", "text"))]


def out_of_grammar(data: Path, grammar, split: str, limit: int) -> list[tuple[Path, str | None]]:
    """Up to ``limit`` clips of ``data``'s ``split`` whose sentence is not a phrase of ``grammar``."""
    inside = {e.text for e in grammar.expansions}
    rows = _clip_rows(data, ("path", "text", "split"))
    return [(data / r["path"], None) for r in rows if r["split"] == split and r["text"] not in inside][:limit]


def tune(args: argparse.Namespace) -> dict[str, Any]:
    """The operating point on validation data; see the module docstring."""
    from edge_runtime import manifest as mf
    from edge_runtime.asr.grammar import load_grammar

    grammar = load_grammar(args.grammar)
    phrases = phrase_clips(args.phrases)
    if not args.out_of_grammar:
        raise EvalError("--tune needs --out-of-grammar (a models.asr_data set: its val split)")
    oog = out_of_grammar(args.out_of_grammar, grammar, "val", args.limit)
    engine = args.engines[0]
    curve = []
    with tempfile.TemporaryDirectory(prefix="asr_eval_") as tmp:
        model = with_words(args.model, [e.text for e in grammar.expansions], Path(tmp))
        for thr in THRESHOLDS:
            rec = recognizer(model, grammar, engine, thr)
            a, r = score_set(rec, phrases), score_set(rec, oog)
            curve.append({"min_confidence": thr, "phrase_accuracy": a["phrase_accuracy"], "rejected": r["rejected"]})
            print(f"min_confidence {thr}: {json.dumps(curve[-1])}", flush=True)
    ok = [c for c in curve if c["rejected"] >= TUNE_REJECT]
    chosen = ok[0] if ok else curve[-1]
    point = {
        **chosen,
        "rule": f"the lowest min_confidence rejecting at least {TUNE_REJECT:.0%} of out-of-grammar sentences",
        "chosen_on": {
            "phrases": str(args.phrases),
            "out_of_grammar": f"{args.out_of_grammar} (val)",
            "grammar": str(args.grammar),
            "engine": engine,
        },  # fmt: skip
        "curve": curve,
    }
    if args.write:
        m, folder = mf.load(args.model)
        metrics = dict(m.metrics)
        metrics["asr"] = {**metrics["asr"], "min_confidence": chosen["min_confidence"], "operating_point": point}
        mf.save(dataclasses.replace(m, metrics=metrics), folder)
        print(f"wrote min_confidence {chosen['min_confidence']} into {folder / 'manifest.json'}")
    return point


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from edge_runtime.asr.grammar import load_grammar, parse_grammar

    grammar = load_grammar(args.grammar)
    phrases = phrase_clips(args.phrases)
    oog = out_of_grammar(args.out_of_grammar, grammar, "test", args.limit) if args.out_of_grammar else []
    noise = [(p, None) for p in sorted(args.noise.glob("*.wav"))[: args.limit]] if args.noise else []
    results: dict[str, Any] = {
        "model": str(args.model),
        "grammar": str(args.grammar),
        "phrases": len(grammar.expansions),
    }
    with tempfile.TemporaryDirectory(prefix="asr_eval_") as tmp:
        prompts = real_prompts(args.real, args.model) if args.real else []
        real_grammar = parse_grammar("\n".join(sorted({t for _, t in prompts})), "<prompts>") if prompts else None
        model = with_words(args.model, [e.text for e in grammar.expansions] + [t for _, t in prompts], Path(tmp))
        sets = {"held_out_phrases": phrases, "out_of_grammar": oog, "noise": noise}
        if args.telephone:  # the synthetic sets as a telephone line passes them (the real prompts are already)
            sets = {name: telephoned(clips, Path(tmp) / name) for name, clips in sets.items()}
            results["telephone"] = "held-out, out-of-grammar and noise clips through models.kws_data.telephone_channel"
        real = (real_grammar, prompts)
        for engine in args.engines:
            rec = recognizer(model, grammar, engine)
            real_rec = recognizer(model, real_grammar, engine) if real_grammar else None
            r = {"min_confidence": rec.min_confidence, **all_sets(score_set, rec, sets, real_rec, *real)}
            results[engine] = r
            print(f"{engine}: {json.dumps({k: _brief(v) for k, v in r.items()})}", flush=True)
        from models.asr_peer import PeerRecognizer

        peer_real = PeerRecognizer(real_grammar) if real_grammar else None
        r = all_sets(peer_set, PeerRecognizer(grammar), sets, peer_real, *real)
        results["pocketsphinx"] = r  # the same grammars, as JSGF, on the same files
        print(f"pocketsphinx: {json.dumps({k: _brief(v) for k, v in r.items()})}", flush=True)
    return results


def telephoned(clips: Sequence[tuple[Path, str | None]], folder: Path) -> list[tuple[Path, str | None]]:
    """``clips`` written again into ``folder`` through the telephone channel the training data can
    take (``models.kws_data.telephone_channel``), with what each says."""
    from edge_runtime.audio.wav import read_wav, write_wav
    from models.kws_data import SAMPLE_RATE, telephone_channel

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (path, said) in enumerate(clips):
        dst = folder / f"{i:05d}_{path.name}"
        write_wav(dst, telephone_channel(read_wav(path, SAMPLE_RATE)), SAMPLE_RATE)
        out.append((dst, said))
    return out


def all_sets(score, rec, sets: dict[str, list], real_rec, real_grammar, prompts) -> dict[str, Any]:
    """``score(rec, clips)`` of each non-empty set, and ``score(real_rec, prompts)`` (the real prompts on
    their own grammar) when there are real prompts."""
    r: dict[str, Any] = {name: score(rec, clips) for name, clips in sets.items() if clips}
    if real_rec is not None:
        r["real_prompts"] = {"phrases": len(real_grammar.expansions), **score(real_rec, prompts)}
    return r


def _brief(r: Any) -> Any:
    return {k: v for k, v in r.items() if k != "misses"} if isinstance(r, dict) else r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.asr_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, required=True, help="a phrase model folder (python -m models.train_asr)")
    ap.add_argument("--grammar", type=Path, required=True, help="the grammar the --phrases clips say")
    ap.add_argument("--phrases", type=Path, required=True, help="python -m models.asr_data --speak-grammar output")
    ap.add_argument("--out-of-grammar", type=Path, help="a models.asr_data set: its test split")
    ap.add_argument("--noise", type=Path, help="a folder of noise-only WAV files")
    ap.add_argument("--real", type=Path, help="a models.real_speech set")
    ap.add_argument("--engines", default="onnx,litert", type=lambda s: s.split(","), help="comma-separated engines")
    ap.add_argument("--limit", type=int, default=200, help="clips of --out-of-grammar and --noise")
    ap.add_argument("--out", type=Path, required=True, help="results JSON to write")
    ap.add_argument(
        "--telephone",
        action="store_true",
        help="hear the held-out, out-of-grammar and noise clips through the telephone channel "
        "(models.kws_data.telephone_channel), to measure what a telephone line costs",
    )
    ap.add_argument("--tune", action="store_true", help="choose min_confidence on validation data instead")
    ap.add_argument("--write", action="store_true", help="with --tune: store it in the model's manifest")
    args = ap.parse_args(argv)
    if args.tune and args.telephone:
        ap.error("--telephone measures an evaluation; --tune chooses the operating point on clean validation clips")
    from edge_runtime.asr.grammar import GrammarError
    from edge_runtime.asr.lexicon import LexiconError
    from models.g2p import G2pError

    try:
        results = tune(args) if args.tune else evaluate(args)
    except (OSError, ValueError, KeyError, EvalError, GrammarError, LexiconError, G2pError) as e:
        print(f"asr_eval: error: {e}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
