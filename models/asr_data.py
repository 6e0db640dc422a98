"""A phoneme-labelled sentence set for the streaming CTC acoustic model, synthesised with every TTS engine.

    python -m models.asr_data --out DIR [--sentences 4000] [--seed 0] [--jobs 2]
        [--engines espeak-ng,flite,rhvoice,pico,festival,piper] [--hold-out-engines pico]
        [--hold-out-grammar FILE]... [--words FILE] [--restricted-voices]

writes::

    DIR/{train,val,test}/<voice>_<n>.wav   one sentence each, 16 kHz mono 16-bit PCM
    DIR/clips.jsonl    one line per clip: path, split, text, phonemes (the CTC label sequence),
                       word_phonemes (the same cut into words), voice, engine and augmentation
    DIR/lexicon.txt    every word spoken: its citation form and the forms it takes in the sentences
    DIR/voices.json    voices with their engine, speaker group, licence and split; engine versions,
                       generation parameters, counts (as models.kws_data writes it)

**Sentences** (:func:`sentences`): half short commands from templates (``turn off the garage
heater``, ``set the brightness to seven``, ``what is the humidity in the attic``), half general word
sequences of 3-8 common English words (the word list ``models.kws_data`` speaks as non-keywords, its
keywords, and with ``--words`` a dictionary such as Debian's wamerican). ``--hold-out-grammar``
(a grammar file of ``edge_runtime.asr.grammar``, e.g. a test grammar) removes every phrase it allows,
so that a grammar evaluated later is never heard in training. Val and test sentences are not
train sentences.

**Labels** are espeak-ng's own transcription of the whole sentence in the phoneme set of the lexicon
(``models.g2p.transcribe``, through ``models.g2p.phonemes_of``): exact for the espeak-ng voices, the
reference pronunciation for the others. ``word_phonemes`` cuts them into words by
``models.g2p.split_words`` (null where the cut is a guess); ``lexicon.txt`` is written by
``models.g2p.add_words`` from the same sentences, so the lexicon shipped with the model holds the forms
it was trained on.

**Voices, augmentation and splits** are those of ``models.kws_data`` (its ``Params``): engines and voices
picked by weight, TTS pitch and rate, speed perturbation, room reverberation, volume, background noise
(white, pink, brown, hum, babble) at 5-30 dB SNR; train, val and test hold out whole speakers, and the
held-out engines (default Pico) speak in test only. Each sentence has 0.2-0.6 s of lead-in and
0.3-0.8 s of trailing room noise, the silence a stream has between utterances. Deterministic for a seed
and the installed engines.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import g2p
from models import kws_data as kd
from models.tts_engines import TtsError, Voice

SAMPLE_RATE = kd.SAMPLE_RATE
SPLITS = kd.SPLITS
MAX_SPEECH_S = 8.0  # a sentence said slower than this is sped up to fit
LEAD_S, TAIL_S = (0.2, 0.6), (0.3, 0.8)
GENERAL_WORDS = (3, 8)
COMMAND_SHARE = 0.5
MAX_DRAWS = 50  # tries per sentence before a split's sentence space counts as exhausted

# Command templates: {slot} is drawn from COMMAND_WORDS; anything else is said as written.
TEMPLATES = (
    "{switch} {onoff} the {room} {device}",
    "{switch} the {room} {device} {onoff}",
    "{switch} {onoff} the {device}",
    "{switch} {onoff} all the {device}s",
    "{act} the {room} {opening}",
    "{act} the {opening} in the {room}",
    "set the {setting} to {number}",
    "set the {room} {setting} to {number} percent",
    "{updown} the {setting} in the {room}",
    "what is the {quantity} in the {room}",
    "what is the {quantity} {when}",
    "how {adj} is it {when}",
    "remind me to {chore} {when}",
    "play some {genre} music in the {room}",
    "{media} the {thing}",
    "call {person} {when}",
    "wake me up at {number} {ampm}",
    "set a timer for {number} {unit}",
    "is the {room} {opening} {state}",
    "show me the {room} camera",
)
COMMAND_WORDS = {
    "switch": ("turn", "switch", "put"),
    "onoff": ("on", "off"),
    "room": (
        "kitchen", "bedroom", "bathroom", "garden", "garage", "office", "hall", "attic", "basement",
        "nursery", "porch", "cellar", "study", "lounge", "dining",
    ),
    "device": (
        "light", "lamp", "fan", "heater", "radio", "television", "oven", "kettle", "printer", "speaker",
        "computer", "dishwasher", "boiler", "sprinkler", "humidifier", "projector", "fountain", "charger",
    ),
    "act": ("open", "close", "lock", "unlock", "check", "shut"),
    "opening": ("door", "window", "curtains", "blinds", "gate", "shutters", "hatch", "skylight"),
    "setting": ("volume", "brightness", "temperature", "thermostat", "speed", "bass", "alarm"),
    "number": (
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "fifteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred",
    ),
    "updown": ("raise", "lower", "increase", "decrease"),
    "quantity": ("humidity", "temperature", "noise level", "air quality", "pressure"),
    "when": ("today", "tonight", "tomorrow", "now", "this morning", "this evening", "later"),
    "adj": ("cold", "warm", "hot", "windy", "busy", "late"),
    "chore": ("water the plants", "feed the cat", "take the bins out", "buy some milk", "call the bank"),
    "genre": ("jazz", "rock", "classical", "country", "piano", "relaxing"),
    "media": ("play", "pause", "stop", "skip", "resume", "repeat"),
    "thing": ("song", "track", "album", "podcast", "video", "movie", "playlist"),
    "person": ("grandma", "the plumber", "my brother", "my sister", "the doctor", "my friend", "home"),
    "ampm": ("am", "pm", "o'clock"),
    "unit": ("seconds", "minutes", "hours"),
    "state": ("open", "closed", "locked", "shut"),
}  # fmt: skip


class AsrDataError(kd.KwsDataError):
    """A problem the user has to fix; the message is one line."""


@dataclass(frozen=True)
class SentenceTask:
    """One clip: a sentence spoken by a voice, and how it is augmented; drawn up front."""

    path: str
    split: str
    text: str
    seed: int  # noise samples and impulse response
    speech: kd.Utterance
    speed: float = 1.0
    gain_db: float = 0.0
    lead_s: float = 0.3
    tail_s: float = 0.5
    rt60: float = 0.0
    drr_db: float = 0.0
    noise: str = ""
    noise_db: float = 0.0
    babble: tuple[kd.Utterance, ...] = field(default_factory=tuple)
    telephone: bool = False  # heard through kd.telephone_channel, noise and all


# ---------------------------------------------------------------- sentences


def command(rng: np.random.Generator) -> str:
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    slots = {k: v[int(rng.integers(len(v)))] for k, v in COMMAND_WORDS.items()}
    return template.format(**slots)


def general(rng: np.random.Generator, words: Sequence[str]) -> str:
    n = int(rng.integers(GENERAL_WORDS[0], GENERAL_WORDS[1] + 1))
    return " ".join(words[int(rng.integers(len(words)))] for _ in range(n))


def held_out_phrases(grammars: Sequence[Path]) -> frozenset[str]:
    """Every phrase the ``grammars`` allow (``edge_runtime.asr.grammar``), as word strings."""
    from edge_runtime.asr.grammar import GrammarError, load_grammar

    out: set[str] = set()
    for path in grammars:
        try:
            out.update(" ".join(e.words) for e in load_grammar(path).expansions)
        except GrammarError as e:
            raise AsrDataError(f"--hold-out-grammar {e}") from None
    return frozenset(out)


def sentences(
    n: int, rng: np.random.Generator, words: Sequence[str], banned: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    """``n`` sentences (commands and general word sequences, :data:`COMMAND_SHARE` commands), none in
    ``banned``; repeats allowed."""
    out = []
    for _ in range(n):
        for _ in range(MAX_DRAWS):
            s = command(rng) if rng.random() < COMMAND_SHARE else general(rng, words)
            if s not in banned:
                break
        else:
            raise AsrDataError("could not draw a sentence outside the held-out phrases; pass a longer --words list")
        out.append(s)
    return out


# ---------------------------------------------------------------- labels (run in the workers)


@functools.lru_cache(maxsize=20_000)
def _citation(word: str) -> tuple[str, ...]:
    return g2p.pronounce([word])[word]


def label(text: str) -> tuple[list[str], list[list[str]] | None]:
    """espeak-ng's phonemes of ``text`` said whole, and the same cut into words (None: no sure cut)."""
    try:
        phonemes = g2p.transcribe(text)
        pieces = g2p.split_words(phonemes, [_citation(w) for w in text.split()])
    except g2p.G2pError as e:
        raise AsrDataError(str(e)) from None
    if not phonemes:
        raise AsrDataError(f"espeak-ng gives no phonemes for {text!r}")
    return phonemes, None if pieces is None else [list(p) for p in pieces]


# ---------------------------------------------------------------- rendering (runs in the workers)


def render(task: SentenceTask, tmp: str) -> dict[str, Any]:
    """Speak, augment and write one clip (atomically); its record for clips.jsonl."""
    from edge_runtime.audio.wav import write_wav

    rng = np.random.default_rng(task.seed)
    x = kd.resample_speed(kd.synthesize(task.speech, tmp), task.speed)
    x = kd.fit_length(x, int(MAX_SPEECH_S * SAMPLE_RATE))
    x = x / (float(np.max(np.abs(x))) or 1.0)
    lead, tail = round(task.lead_s * SAMPLE_RATE), round(task.tail_s * SAMPLE_RATE)
    dry = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(tail, np.float32)])
    y = dry
    if task.rt60 > 0:
        y = kd.convolve(dry, kd.room_impulse(rng, task.rt60, task.drr_db))[: len(dry)]
        y = y / (float(np.max(np.abs(y))) or 1.0)
    y = y * kd.db_to_amp(task.gain_db)
    if task.noise:
        e = kd.frame_rms(dry)
        active = np.repeat(e > e.max() * kd.db_to_amp(-40.0), SAMPLE_RATE // 100)
        level = kd.rms(y[: len(active)][active]) * kd.db_to_amp(-task.noise_db)
        y = y + level * kd.make_noise(task, rng, tmp, len(y))  # type: ignore[arg-type]  # noise fields alike
    if task.telephone:
        y = kd.telephone_channel(y)
    peak = float(np.max(np.abs(y)))
    if peak > 0.99:
        y = y * (0.99 / peak)
    write_wav(task.path, y.astype(np.float32), SAMPLE_RATE)
    phonemes, pieces = label(task.text)
    rec = dataclasses.asdict(task)
    rec.update(
        engine=task.speech.voice.engine,
        speech={"voice": task.speech.voice.id, "text": task.text, "args": list(task.speech.args)},
        babble=[{"voice": u.voice.id, "text": u.text, "args": list(u.args)} for u in task.babble],
        phonemes=" ".join(phonemes),
        word_phonemes=None if pieces is None else [" ".join(p) for p in pieces],
        seconds=round(len(y) / SAMPLE_RATE, 3),
    )
    return rec


# ---------------------------------------------------------------- planning and driver


def plan(
    out: Path, voices: dict[str, list[Voice]], n: int, seed: int, params: kd.Params, words: Sequence[str], banned
) -> list[SentenceTask]:
    """Every clip of every split, drawn from ``seed`` in a fixed order; val/test sentences are not train's."""
    counts = kd.split_counts(n, params.split_fractions)
    tasks: list[SentenceTask] = []
    seen: set[str] = set(banned)
    for s, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 11, s])
        texts = sentences(counts[split], rng, words, seen)
        tasks += [_task(out, split, i, text, voices[split], rng, params) for i, text in enumerate(texts)]
        if split == "train":
            seen |= set(texts)
    return tasks


def _task(
    out: Path, split: str, i: int, text: str, voices: list[Voice], rng: np.random.Generator, params: kd.Params
) -> SentenceTask:
    """``text`` said by a voice drawn from ``voices``, with its augmentation drawn from ``rng``."""
    voice = kd._pick_voice(rng, voices, params)
    f: dict[str, Any] = {
        "speed": kd._uniform(rng, params.speed),
        "gain_db": kd._uniform(rng, params.gain_db, 2),
        "lead_s": kd._uniform(rng, LEAD_S),
        "tail_s": kd._uniform(rng, TAIL_S),
    }
    if rng.random() < params.reverb_prob:
        f.update(rt60=kd._uniform(rng, params.rt60), drr_db=kd._uniform(rng, params.drr_db, 2))
    f.update(kd._noise_fields(rng, voices, params, silence=False))
    f.update(kd.channel_fields(rng, params))
    return SentenceTask(
        path=str(out / split / f"{voice.tag}_{i:05d}.wav"),
        split=split,
        text=text,
        seed=int(rng.integers(2**62)),
        speech=kd._utterance(rng, voice, text, params),
        **f,
    )


def render_all(out: Path, tasks: list[SentenceTask], jobs: int, progress: bool, desc: str) -> list[dict[str, Any]]:
    """Render every task (``jobs`` processes) and write their records to ``out / clips.jsonl``."""
    with tempfile.TemporaryDirectory(prefix="asr_tts_") as tmp:
        records = list(kd.run_tasks(tasks, tmp, jobs, progress, render=render, desc=desc))
    kd._write_jsonl(out / "clips.jsonl", [{**r, "path": Path(r["path"]).relative_to(out).as_posix()} for r in records])
    return records


def generate_phrases(
    out: str | os.PathLike[str],
    grammar: Path,
    per_phrase: int = 2,
    seed: int = 0,
    jobs: int = 2,
    params: kd.Params | None = None,
    progress: bool = True,
    split: str = "test",
) -> dict[str, Any]:
    """An evaluation set of a grammar (``--speak-grammar``): each of its phrases said ``per_phrase`` times
    by the ``split`` voices (val: to choose settings on; test: to report) of a data set made with the same
    ``seed`` and ``params`` (held-out voices, and for test held-out engines, which no model trained on it
    heard), augmented like its clips. Writes ``out/<split>/*.wav``, ``clips.jsonl`` and ``voices.json``;
    no lexicon (the model's own is used)."""
    from edge_runtime.asr.grammar import GrammarError, load_grammar

    params = params or kd.Params()
    out = Path(out)
    if per_phrase < 1 or jobs < 1:
        raise AsrDataError("--per-phrase and --jobs must be at least 1")
    if (out / "clips.jsonl").exists():
        raise AsrDataError(f"{out} already holds a data set; choose a new --out or remove it")
    try:
        phrases = [" ".join(e.words) for e in load_grammar(grammar).expansions]
    except GrammarError as e:
        raise AsrDataError(f"--speak-grammar {e}") from None
    kd.check_params(params)
    used, _ = kd.licence_filter(kd.all_voices(params), params)
    if split not in ("val", "test"):
        raise AsrDataError(f"--split {split!r}: give val or test (train voices are not held out)")
    voices = kd.split_voices(used, seed, params.split_fractions, params.held_out_engines)[split]
    rng = np.random.default_rng([seed, 13, SPLITS.index(split)])
    texts = [t for t in phrases for _ in range(per_phrase)]
    tasks = [_task(out, split, i, text, voices, rng, params) for i, text in enumerate(texts)]
    (out / split).mkdir(parents=True, exist_ok=True)
    render_all(out, tasks, jobs, progress, "asr_data phrases")
    meta = {
        "layout": f"{split}/<voice>_<n>.wav, one phrase each; labels in clips.jsonl",
        "split": split,
        "grammar": str(grammar),
        "phrases": len(phrases),
        "per_phrase": per_phrase,
        "seed": seed,
        "engines": kd.engine_versions(params.engines),
        "voices": sorted({t.speech.voice.id for t in tasks}),
    }
    kd._write_json(out / "voices.json", meta)
    return meta


def generate(
    out: str | os.PathLike[str],
    n: int = 4000,
    seed: int = 0,
    jobs: int = 2,
    params: kd.Params | None = None,
    hold_out_grammars: Sequence[Path] = (),
    words_file: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the data set under ``out`` (``n`` train sentences, val and test in proportion); returns
    the contents of voices.json."""
    params = params or kd.Params()
    if n < 1 or jobs < 1:
        raise AsrDataError("--sentences and --jobs must be at least 1")
    out = Path(out)
    taken = [p.name for p in (*(out / s for s in SPLITS), out / "voices.json") if p.exists()]
    if taken:
        raise AsrDataError(f"{out} already holds a data set ({', '.join(taken)}); choose a new --out or remove it")
    kd.check_params(params)
    banned = held_out_phrases(hold_out_grammars)
    words = list(dict.fromkeys([*kd.UNKNOWN_WORDS, *kd.KEYWORDS]))
    if words_file is not None:
        words = list(dict.fromkeys([*words, *kd.read_word_list(words_file, 5000, seed)]))
    used, left_out = kd.licence_filter(kd.all_voices(params), params)
    voices = kd.split_voices(used, seed, params.split_fractions, params.held_out_engines)
    tasks = plan(out, voices, n, seed, params, words, banned)
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    records = render_all(out, tasks, jobs, progress, "asr_data")
    texts = sorted({r["text"] for r in records})
    try:  # one espeak-ng run per word and per phrase (at most g2p.MAX_CONTEXT_PHRASES): minutes for a large set
        g2p.add_words(out / "lexicon.txt", {w for t in texts for w in t.split()}, phrases=[t.split() for t in texts])
    except (g2p.G2pError, g2p.LexiconError) as e:
        raise AsrDataError(f"lexicon: {e}") from None
    table = kd.voice_table(voices)
    meta = {
        "layout": "<split>/<voice>_<n>.wav, one sentence each; labels in clips.jsonl",
        "sample_rate": SAMPLE_RATE,
        "seed": seed,
        "sentences": n,
        "counts": {s: sum(t.split == s for t in tasks) for s in SPLITS},
        "seconds": {s: round(sum(r["seconds"] for r in records if r["split"] == s), 1) for s in SPLITS},
        "engines": kd.engine_versions(params.engines),
        "debian_packages": kd.debian_versions(params.engines),
        "held_out_engines": list(params.held_out_engines),
        "held_out_grammars": [str(p) for p in hold_out_grammars],
        "held_out_phrases": len(banned),
        "shippable": all(r["shippable"] for r in table),
        "splits": {s: [v.id for v in voices[s]] for s in SPLITS},
        "held_out_groups": {s: sorted({v.group for v in voices[s]}) for s in SPLITS},
        "voice_counts": kd.voice_counts(voices),
        "voices": table,
        "left_out_voices": [
            {"id": v.id, "licence": kd.engine(v.engine).licence(v).name, "why": "licence does not allow shipping"}
            for v in left_out
        ],
        "params": dataclasses.asdict(params),
    }
    kd._write_json(out / "voices.json", meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.asr_data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True, help="new folder for the data set")
    ap.add_argument("--sentences", type=int, default=4000, help="train clips (val and test get 1/8 each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="TTS/augmentation processes (default 2)")
    ap.add_argument("--engines", type=kd._names, default=kd.Params.engines, help="comma-separated TTS engines")
    ap.add_argument(
        "--hold-out-engines",
        type=kd._names,
        default=kd.Params.held_out_engines,
        help="engines that speak in the test split only ('none' for none)",
    )
    ap.add_argument(
        "--hold-out-grammar",
        type=Path,
        action="append",
        default=[],
        help="a grammar file whose phrases are never spoken (repeatable), e.g. a test grammar",
    )
    ap.add_argument("--words", type=Path, help="a word list (one word a line) to draw general sentences from too")
    ap.add_argument("--restricted-voices", action="store_true", help="also voices a shipped model may not learn from")
    ap.add_argument(
        "--speak-grammar",
        type=Path,
        metavar="GRAMMAR",
        help="instead: an evaluation set, each phrase of GRAMMAR said by the test voices (--per-phrase times)",
    )
    ap.add_argument("--per-phrase", type=int, help="with --speak-grammar: clips per phrase (default 2)")
    ap.add_argument("--split", help="with --speak-grammar: whose voices, val or test (default test)")
    kd.add_telephone_flag(ap)
    args = ap.parse_args(argv)
    if args.speak_grammar is None and (args.per_phrase, args.split) != (None, None):
        ap.error("--per-phrase and --split only apply with --speak-grammar")
    params = dataclasses.replace(
        kd.Params(),
        engines=args.engines,
        held_out_engines=args.hold_out_engines,
        restricted_voices=args.restricted_voices,
        telephone=args.telephone,
    )
    t0 = time.monotonic()
    if args.speak_grammar is not None:
        args.per_phrase = 2 if args.per_phrase is None else args.per_phrase
        args.split = "test" if args.split is None else args.split
        try:
            meta = generate_phrases(
                args.out, args.speak_grammar, args.per_phrase, args.seed, args.jobs, params, split=args.split
            )
        except TtsError as e:
            print(f"asr_data: error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {meta['phrases'] * args.per_phrase} phrase clips to {args.out} in {time.monotonic() - t0:.0f} s")
        return 0
    try:
        meta = generate(args.out, args.sentences, args.seed, args.jobs, params, args.hold_out_grammar, args.words)
    except TtsError as e:
        print(f"asr_data: error: {e}", file=sys.stderr)
        return 2
    c, sec = meta["counts"], meta["seconds"]
    print(
        f"wrote {sum(c.values())} clips ({sum(sec.values()) / 3600:.2f} h) to {args.out} "
        f"(train {c['train']}, val {c['val']}, test {c['test']}) in {time.monotonic() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
