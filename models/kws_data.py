"""An offline keyword-spotting training set, synthesised with Debian's and PyPI's TTS engines.

    python -m models.kws_data --out data/kws [--per-word 400] [--seed 0] [--jobs 2]
        [--engines espeak-ng,flite,rhvoice,pico,festival,piper] [--hold-out-engines pico]
        [--restricted-voices] [--in-sentence FRACTION] [--short-words FRACTION] [--telephone FRACTION]

writes the Speech Commands folder layout, one folder per split and label::

    DIR/train/<label>/<voice>_nohash_<n>.wav   1.0 s, 16 kHz, mono, 16-bit PCM
    DIR/val/<label>/...
    DIR/test/<label>/...
    DIR/voices.json    every voice with its engine, speaker group, licence and split; engine
                       versions, voices left out (and why), generation parameters, counts
    DIR/clips.jsonl    one line per clip: how it was made (engine, voice, text, speed, noise, ...)

The labels follow the 12-class Speech Commands convention: ten keywords (yes,
no, up, down, left, right, on, off, stop, go), ``_silence_`` and ``_unknown_``.

Speech comes from the engines of ``models.tts_engines``: ``espeak-ng`` (its English
accents x its voice variants, e.g. ``en-us+m3``), ``flite`` (kal, kal16, awb, rms,
slt), RHVoice (alan, bdl, clb, slt), SVOX Pico (en-US, en-GB), festival (ked, slt)
and Piper (whose one packaged voice is left out by licence, see below). An engine
is picked per utterance by ``Params.engine_weights`` among those with voices in
the split (espeak-ng 0.30, Piper 0.25, RHVoice 0.20, flite 0.15, Pico 0.15,
festival 0.10), then one of its voices at random. Every clip is
augmented: TTS pitch and rate (and Piper's noise), speed perturbation (resampling
with soxr, 0.85-1.15), room reverberation (synthetic exponentially decaying
noise impulse responses, RT60 0.1-0.6 s), volume (-20..0 dB), a random time
shift (a keyword always lies wholly inside the window) and background noise at
5-30 dB SNR: white, pink, brown, 50/60 Hz mains hum with harmonics, or babble
(several TTS talkers saying unknown words).

``_unknown_`` holds common English words (with near-misses of the keywords such as
"yet", "town", "lift", "bright", "top", "so") and, as negatives that otherwise cause
false alarms, keywords cut short, keywords cut by the edge of the window and
two-word snippets that catch only part of a keyword. Exact homophones of a
keyword ("know", "write") are left out: TTS renders them with the very phonemes
of "no" and "right", so they would be keywords labelled ``_unknown_``.
``--short-words F`` adds F x the per-label count of further ``_unknown_`` clips,
each one word of ``SHORT_WORDS``: digits, letter names, short everyday and
telephone words, and words that start with or contain a keyword's sound
("yesterday", "pound", "often", "gopher", "uptown"), the single words that real
voices most often mistook for keywords. ``--in-sentence F`` speaks that share of
the keyword clips after 1-4 ``_unknown_`` words in one utterance ("cold green
stop"), half of them followed by one more word after a short pause, and cuts the
window to end 50-250 ms after the keyword, as a keyword said inside running speech
reaches a streaming detector. clips.jsonl records each clip's kind (``sentence``,
``short``), its text, the word after (``other``) and ``tail``.
``_silence_`` is noise alone at levels from near-digital silence to loud.
``--telephone F`` passes that share of the clips, noise included, through
:func:`telephone_channel` (clips.jsonl: ``telephone``), for telephone speech.

Splits hold out whole speakers: train, val and test use disjoint sets of voice
groups. A group is a recorded speaker across engines (CMU ARCTIC's slt speaks in
flite, RHVoice and festival; RHVoice's alan is flite's awb; kal16 is kal) or an
espeak-ng variant, so a test speaker was never heard in training through any
engine. Held-out engines (default: Pico) speak in the test split only, to measure
how the model does on an engine it never heard. The output is deterministic for
a given seed and the same installed engines (their versions are recorded in
voices.json).

Licences (details in ``edge_runtime/data/models/kws/LICENSES.md``): espeak-ng
GPL-3.0-or-later, flite CMU BSD-style, RHVoice's alan/bdl/clb/slt LGPL-2.1+,
Pico Apache-2.0, festival's ked and slt CSTR/CMU X11-style, Piper GPL-3.0-or-later.
Program licences cover the programs, not the audio they produce: the clips are
ours to use and ship. A voice whose own licence does not allow a shipped model to
learn from it is left out (``--restricted-voices`` takes it in for local
experiments, and voices.json then says ``"shippable": false``): festival's rab
(OALD lexicon, non-commercial) and Piper's joe (fine-tuned from lessac, whose
Blizzard 2013 data is research-only). RHVoice's evgeniy-eng and lyubov
(CC-BY-NC-ND-4.0) are never used. Nothing is downloaded: the engines come from
Debian (``apt-get install espeak-ng flite rhvoice rhvoice-english libttspico-utils
festival festvox-kdlpc16k festvox-us-slt-hts``, RHVoice and Pico from non-free) and
PyPI (``pip install 'edge-runtime[voices]'``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from models import process_pool
from models.tts_engines import (  # noqa: F401  (re-exported: the voices of the data set)
    ENGINES,
    ESPEAK,
    FESTIVAL,
    FLITE,
    PICO,
    PIPER,
    RHVOICE,
    TtsError,
    Voice,
    check_engines,
    debian_version,
    engine,
)
from models.tts_engines import uniform as _uniform

SAMPLE_RATE = 16000
CLIP = SAMPLE_RATE  # samples in one 1.0 s clip
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
LABELS = (*KEYWORDS, SILENCE, UNKNOWN)
SPLITS = ("train", "val", "test")

# Spellings that TTS pronounces exactly like a keyword: never used as _unknown_.
HOMOPHONES = MappingProxyType({"no": ("know", "noh"), "right": ("write", "rite", "wright")})
MAX_SPEECH = int(0.96 * CLIP)  # a keyword or word longer than this is sped up to fit the window

# ~300 common short English words for _unknown_; near-misses of the keywords first.
_WORDS = """
    yet yeah yell yen less mess guess dress bless chess
    now new nor nose note snow low though toe
    cup pup cop hop pop cut but hut us bus
    town gown brown crown frown dawn done noun loud found round sound ground clown
    lift loft lent lend theft west felt list laughed let bet
    bright light night fight kite ride white rice ripe wide site might tight ice
    one in an own at and odd yawn john
    of cough often if soft half
    top stock step shop drop spot stuck chop stomp mop
    so goat show glow grow row dough gold ghost gone
    zero two three four five six seven eight nine ten
    bed bird cat dog happy house tree wow learn follow forward backward visual marvin sheila
    the a is it to was for that with as his they be this have from or had by word
    what all were we when your can said there use each which she do how will
    about out many then them some her would make like him into time has look more
    see way could my than first water call who find long day
    get come made may part over take work place year live me back give
    most very after thing our just name good man think say great where help much
    line mean old same tell came want form small put
    well large must big such here why ask went men
    read need land move try kind hand play spell air away point
    page study should world high near add food
    plant last school keep eye start city earth head
    saw few while close seem next hard open begin
    life both got group side feet
    car mile walk sea took river state once hear
    miss idea eat face watch far girl cool talk
    song leave sun moon star rain wind cold warm hot fish milk bread
    door box game red blue green black pink slow sit jump swim sleep wake push
    pull drink cook wash clean full rich poor
"""


def _word_list(text: str) -> tuple[str, ...]:
    """Unique words of ``text`` in order, without keywords and their homophones."""
    banned = set(KEYWORDS).union(*HOMOPHONES.values())
    return tuple(w for w in dict.fromkeys(text.split()) if w not in banned)


UNKNOWN_WORDS = _word_list(_WORDS)

# Single words of the kind that set off false accepts on real speech: digits, letter names,
# short words of everyday and telephone speech, and words that start with or contain a
# keyword's sound ("yesterday", "pound", "often", "gopher", "uptown"). Never a keyword, an exact
# homophone of one or an inflection of one ("goes", "stopped").
_SHORT_WORDS = """
    zero oh one two three four five six seven eight nine ten eleven twelve twenty hundred
    ay bee see dee ee ef gee aitch eye jay kay el em en pee cue ar ess tee you vee ex why zed zee
    yeah okay hello hi bye please thanks sorry press key star hash pound enter number again
    message call phone hold line menu option cancel repeat next
    yesterday yellow yeast yet yeti yesteryear
    nobody notice noble nowhere nomad nose note
    uptown upper upon upset update upward puppy supper
    pound round found mound gown drown doubt dowel towel
    lettuce leather lesson lever theft deft clef lift
    rider rhyme ripe bright fright writer ride
    honest onion onset option pond donkey bond wanted
    often offer office coffee cough awful officer
    stomach stocking stock stubble staple stomp top
    gopher goal gold ghost goat golf gosh gone
"""
SHORT_WORDS = _word_list(_SHORT_WORDS)
SOUNDS_LIKE_EXTRA = 2  # phoneme characters a word may add to a keyword's and still be taken for it


def _phonemes(words: Sequence[str]) -> list[str]:
    """espeak-ng's en-us phonemes of each word, stress marks dropped ("stop" -> "st0p")."""
    import subprocess

    def run(ws: Sequence[str]) -> list[str]:
        out = subprocess.run(
            ["espeak-ng", "-q", "-x", "-v", "en-us", "\n".join(ws)], capture_output=True, text=True, check=True
        ).stdout.split()
        return [t.translate(str.maketrans("", "", "',2")) for t in out]

    def each(ws: Sequence[str]) -> list[str]:  # a word said as two (or none) splits its chunk in halves
        got = run(ws)
        if len(got) == len(ws):
            return got
        if len(ws) == 1:
            return [" ".join(got)]
        return each(ws[: len(ws) // 2]) + each(ws[len(ws) // 2 :])

    return [p for i in range(0, len(words), 500) for p in each(list(words[i : i + 500]))]


def sounds_like_keyword(words: Sequence[str]) -> list[bool]:
    """Per word: does espeak-ng say it as a keyword, or as a keyword plus at most
    ``SOUNDS_LIKE_EXTRA`` phoneme characters before or after ("stops", "goat", "upped")?
    Such words are left out of negative text: a listener might take them for the keyword."""
    keys = _phonemes(KEYWORDS)
    return [
        any(p == k or (len(p) - len(k) <= SOUNDS_LIKE_EXTRA and (p.startswith(k) or p.endswith(k))) for k in keys)
        for p in _phonemes(words)
    ]


def read_word_list(path: str | os.PathLike[str], n: int, seed: int = 0) -> tuple[str, ...]:
    """``n`` words drawn (seeded) from a word list of one word per line (e.g. Debian's wamerican,
    ``/usr/share/dict/american-english``) to speak as non-keyword text: lowercase a-z words of
    2..12 letters only (no names, no possessives), never a keyword, a homophone of one or a word
    that :func:`sounds_like_keyword`."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").split()
    except OSError as e:
        raise KwsDataError(f"--words {path}: cannot read it ({e.strerror}); pass a file of one word per line") from None
    pool = [w for w in _word_list(" ".join(lines)) if w.isascii() and w.isalpha() and w.islower() and 2 <= len(w) <= 12]
    rng = np.random.default_rng([seed, 21])
    pool = [pool[i] for i in rng.permutation(len(pool))[: int(1.3 * n)]]  # some are dropped below
    kept = tuple(w for w, bad in zip(pool, sounds_like_keyword(pool)) if not bad)[:n]
    if len(kept) < min(n, 50):
        raise KwsDataError(
            f"--words {path}: only {len(kept)} usable words (lowercase a-z, not like a keyword); "
            "pass a longer word list"
        )
    return kept


class KwsDataError(TtsError):
    """A problem the user has to fix; the message is one line."""


@dataclass(frozen=True)
class Params:
    """Generation parameters; recorded in voices.json."""

    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    engines: tuple[str, ...] = tuple(ENGINES)  # the engines whose voices speak the data set
    held_out_engines: tuple[str, ...] = (PICO,)  # every voice of these goes to the test split only
    restricted_voices: bool = False  # also voices a shipped model may not learn from (local experiments)
    # Share of the clips each engine speaks, among the engines present in a split. Piper is the
    # most natural; espeak-ng has the most timbres but sounds the least human; flite, RHVoice
    # and festival bring recorded speakers (CMU ARCTIC and others). Pico only speaks in test.
    engine_weights: tuple[tuple[str, float], ...] = (
        (ESPEAK, 0.30),
        (FLITE, 0.15),
        (RHVOICE, 0.20),
        (PICO, 0.15),
        (FESTIVAL, 0.10),
        (PIPER, 0.25),
    )
    exclude_variants: tuple[str, ...] = ("fast",)  # espeak-ng's speed-test variant, not a voice
    espeak_pitch: tuple[int, int] = (20, 80)  # espeak-ng -p
    espeak_rate: tuple[int, int] = (130, 210)  # espeak-ng -s, words per minute
    flite_stretch: tuple[float, float] = (0.8, 1.25)  # flite duration_stretch
    flite_f0_shift: tuple[float, float] = (0.8, 1.25)  # flite f0_shift (rms ignores it)
    rhvoice_rate: tuple[int, int] = (80, 125)  # RHVoice-test -r, percent of normal
    rhvoice_pitch: tuple[int, int] = (85, 120)  # RHVoice-test -t, percent of normal
    pico_speed: tuple[int, int] = (80, 120)  # SVOX <speed level>, percent
    pico_pitch: tuple[int, int] = (85, 120)  # SVOX <pitch level>, percent
    festival_stretch: tuple[float, float] = (0.85, 1.2)  # diphone voices: Duration_Stretch
    festival_f0: tuple[float, float] = (0.85, 1.2)  # diphone voices: factor on the intonation's target mean
    festival_rate: tuple[float, float] = (0.85, 1.2)  # HTS voices: hts_engine -r (> 1 faster)
    piper_length: tuple[float, float] = (0.8, 1.25)  # Piper length_scale (> 1 slower)
    piper_noise: tuple[float, float] = (0.4, 0.9)  # Piper noise_scale (voice quality variation)
    piper_noise_w: tuple[float, float] = (0.5, 1.0)  # Piper noise_w (phoneme-duration variation)
    speed: tuple[float, float] = (0.85, 1.15)  # speed perturbation by resampling
    gain_db: tuple[float, float] = (-20.0, 0.0)
    reverb_prob: float = 0.5
    rt60: tuple[float, float] = (0.1, 0.6)
    drr_db: tuple[float, float] = (0.0, 12.0)  # direct-to-reverberant energy ratio
    noise_prob: float = 0.85  # the others get only a faint microphone floor
    noise_types: tuple[str, ...] = ("white", "pink", "brown", "hum", "babble")
    snr_db: tuple[float, float] = (5.0, 30.0)
    floor_snr_db: tuple[float, float] = (40.0, 60.0)  # the faint white floor of otherwise clean clips
    babble_snr_db: tuple[float, float] = (10.0, 30.0)  # babble stays a low-level background
    babble_talkers: tuple[int, int] = (3, 6)
    silence_db: tuple[float, float] = (-75.0, -20.0)  # noise RMS of _silence_ clips, dBFS
    unknown_mix: tuple[tuple[str, float], ...] = (
        ("word", 0.55),
        ("truncated", 0.15),
        ("edge", 0.15),
        ("snippet", 0.15),
    )
    cut: tuple[float, float] = (0.25, 0.55)  # share of a keyword kept / inside the window
    snippet_gap: tuple[float, float] = (0.0, 0.1)  # pause between the words of a snippet, s
    in_sentence: float = 0.0  # share of keyword clips spoken at the end of a sentence of other words
    sentence_words: tuple[int, int] = (1, 4)  # words before the keyword in such a sentence
    sentence_tail: tuple[float, float] = (0.05, 0.25)  # s of the window after the keyword's end
    sentence_next: float = 0.5  # share of those sentences going on with another word after the keyword
    short_words: float = 0.0  # extra _unknown_ clips of one SHORT_WORDS word, as a share of per-label clips
    telephone: float = 0.0  # share of the clips heard through a telephone channel (telephone_channel)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Params:
        """The parameters a voices.json recorded (lists back to tuples; unknown keys ignored)."""

        def tup(v: Any) -> Any:
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tup(v) for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Utterance:
    """A text spoken by a voice with engine-specific arguments (pitch, rate)."""

    voice: Voice
    text: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClipTask:
    """Everything needed to render one clip; drawn up front so that rendering is order-free."""

    path: str
    split: str
    label: str
    kind: str  # keyword | sentence | word | short | truncated | edge | snippet | silence
    seed: int  # noise samples and impulse response
    speech: Utterance | None = None
    other: Utterance | None = None  # snippet: the word next to the keyword; sentence: the word after it
    keyword_first: bool = True  # snippet: "<keyword> <word>" (else "<word> <keyword>")
    gap: float = 0.0  # snippet, sentence: pause before the second word, seconds
    speed: float = 1.0
    gain_db: float = 0.0
    shift: float = 0.5  # where the speech sits in the window's free room, 0..1
    tail: float = 0.0  # sentence: seconds of the window after the keyword's end
    cut: float = 1.0  # truncated: share kept; edge/snippet: share inside the window
    keep_start: bool = True  # truncated/edge: the keyword's start is what remains
    rt60: float = 0.0  # 0: no reverberation
    drr_db: float = 0.0
    noise: str = ""  # white, pink, brown, hum, babble ("" none)
    noise_db: float = 0.0  # SNR for speech clips, RMS dBFS for silence
    babble: tuple[Utterance, ...] = field(default_factory=tuple)
    telephone: bool = False  # heard through telephone_channel, noise and all


# ---------------------------------------------------------------- engines and voices


def check_params(params: Params) -> None:
    """One-line :class:`KwsDataError` for engines that are unknown, unweighted or missing."""
    for name in (*params.engines, *params.held_out_engines):
        engine(name)
    weights = dict(params.engine_weights)
    if not params.engines:
        raise KwsDataError("--engines names no engine")
    unweighted = [e for e in params.engines if weights.get(e, 0.0) <= 0.0]
    if unweighted:
        raise KwsDataError(f"engine_weights gives no weight to {', '.join(unweighted)}")
    stray = [e for e in params.held_out_engines if e not in params.engines]
    if stray:
        raise KwsDataError(f"--hold-out-engines names {', '.join(stray)}, which --engines does not use")
    if set(params.engines) <= set(params.held_out_engines):
        raise KwsDataError("--hold-out-engines holds out every engine: nothing is left to train on")
    if not 0.0 <= params.telephone <= 1.0:
        raise KwsDataError(f"--telephone {params.telephone}: give a share of the clips, 0..1")
    check_engines(params.engines)


def engine_versions(engines: Iterable[str] = tuple(ENGINES)) -> dict[str, str]:
    return {e: engine(e).version() for e in engines}


def all_voices(params: Params) -> list[Voice]:
    """Every English voice of the chosen engines, in a fixed order (never-usable ones not listed)."""
    voices = []
    for name in params.engines:
        found = engine(name).voices(params)
        if not found:
            raise KwsDataError(f"{name} has no English voice installed: install with '{engine(name).install_hint()}'")
        voices += found
    return voices


def licence_filter(voices: Iterable[Voice], params: Params) -> tuple[list[Voice], list[Voice]]:
    """(used, left out): voices a shipped model may not learn from are left out unless
    ``params.restricted_voices`` asks for them."""
    used, left = [], []
    for v in voices:
        (used if params.restricted_voices or engine(v.engine).licence(v).shippable else left).append(v)
    return used, left


def discover_voices(params: Params) -> list[Voice]:
    """The voices that speak the data set: :func:`all_voices` after the :func:`licence_filter`."""
    return licence_filter(all_voices(params), params)[0]


def split_voices(
    voices: Sequence[Voice], seed: int, fractions: Sequence[float], held_out_engines: Iterable[str] = ()
) -> dict[str, list[Voice]]:
    """Disjoint voice sets per split, holding out whole groups (speakers across engines,
    espeak-ng variants): a group's voices all land in one split, whatever their engine.

    Every voice of a held-out engine goes to test, with its groups. Then engine by engine
    (in name order), groups not yet placed fill that engine's val and test shares (rounded,
    at least one each while the engine keeps at least one group for train); the rest train.
    """
    rng = np.random.default_rng([seed, 0])
    held = set(held_out_engines)
    where: dict[str, str] = {v.group: "test" for v in voices if v.engine in held}
    for name in sorted({v.engine for v in voices} - held):
        groups = sorted({v.group for v in voices if v.engine == name})
        want = {"val": max(1, round(len(groups) * fractions[1])), "test": max(1, round(len(groups) * fractions[2]))}
        free = [g for g in groups if g not in where]
        free = [free[i] for i in rng.permutation(len(free))]
        reserve = 0 if any(where.get(g) == "train" for g in groups) else 1  # keep one group to train on
        for split in ("val", "test"):
            n = want[split] - sum(where.get(g) == split for g in groups)
            for g in free[: max(0, min(n, len(free) - reserve))]:
                where[g] = split
            free = [g for g in free if g not in where]
        where.update({g: "train" for g in free})
    out: dict[str, list[Voice]] = {s: [v for v in voices if where[v.group] == s] for s in SPLITS}
    for name in sorted({v.engine for v in voices} - held):
        if not any(v.engine == name for v in out["train"]):
            raise KwsDataError(
                f"{name}: all its speakers are held out through other engines; "
                "hold it out too (--hold-out-engines) or leave it out (--engines)"
            )
    return out


def voice_table(voices: dict[str, list[Voice]]) -> list[dict[str, Any]]:
    """One record per voice for voices.json: engine, speaker group, licence, split."""
    rows = []
    for split in SPLITS:
        for v in voices[split]:
            lic = engine(v.engine).licence(v)
            rows.append(
                {
                    "id": v.id,
                    "engine": v.engine,
                    "group": v.group,
                    "licence": lic.name,
                    "shippable": lic.shippable,
                    "licence_source": lic.source,
                    "split": split,
                }
            )
    return rows


def voice_counts(voices: dict[str, list[Voice]]) -> dict[str, dict[str, int]]:
    """Voices per split and engine."""
    return {s: {e: n for e in ENGINES if (n := sum(v.engine == e for v in voices[s]))} for s in SPLITS}


# ---------------------------------------------------------------- planning


def split_counts(per_word: int, fractions: Sequence[float]) -> dict[str, int]:
    """Clips per label: ``per_word`` in train, val and test in proportion (at least one)."""
    return {
        "train": per_word,
        "val": max(1, math.ceil(per_word * fractions[1] / fractions[0])),
        "test": max(1, math.ceil(per_word * fractions[2] / fractions[0])),
    }


def short_count(clips_per_label: int, params: Params) -> int:
    """Extra single-word _unknown_ clips of a split with ``clips_per_label`` clips per label."""
    return round(clips_per_label * params.short_words)


def _choose(rng: np.random.Generator, weighted: Sequence[tuple[str, float]]) -> str:
    p = np.asarray([w for _, w in weighted], dtype=float)
    return weighted[int(rng.choice(len(weighted), p=p / p.sum()))][0]


def _pick_voice(rng: np.random.Generator, voices: Sequence[Voice], params: Params) -> Voice:
    """An engine by :attr:`Params.engine_weights` (among those in ``voices``), then one of its voices."""
    present = {v.engine for v in voices}
    name = _choose(rng, [(e, w) for e, w in params.engine_weights if e in present])
    pool = [v for v in voices if v.engine == name]
    return pool[int(rng.integers(len(pool)))]


def _utterance(rng: np.random.Generator, voice: Voice, text: str, params: Params) -> Utterance:
    return Utterance(voice, text, engine(voice.engine).augment(rng, voice, params))


def _word(rng: np.random.Generator, words: Sequence[str] = UNKNOWN_WORDS) -> str:
    return words[int(rng.integers(len(words)))]


def _keyword(rng: np.random.Generator) -> str:
    return KEYWORDS[int(rng.integers(len(KEYWORDS)))]


def _babble(rng: np.random.Generator, voices: Sequence[Voice], params: Params) -> tuple[Utterance, ...]:
    n = int(rng.integers(params.babble_talkers[0], params.babble_talkers[1] + 1))
    return tuple(
        _utterance(rng, _pick_voice(rng, voices, params), " ".join(_word(rng) for _ in range(3)), params)
        for _ in range(n)
    )


def _noise_fields(rng: np.random.Generator, voices: Sequence[Voice], params: Params, silence: bool) -> dict[str, Any]:
    if not silence and rng.random() >= params.noise_prob:
        return {"noise": "white", "noise_db": _uniform(rng, params.floor_snr_db, 2)}
    kind = params.noise_types[int(rng.integers(len(params.noise_types)))]
    span = params.silence_db if silence else (params.babble_snr_db if kind == "babble" else params.snr_db)
    babble = _babble(rng, voices, params) if kind == "babble" else ()
    return {"noise": kind, "noise_db": _uniform(rng, span, 2), "babble": babble}


def channel_fields(rng: np.random.Generator, params: Params) -> dict[str, Any]:
    """Whether a clip goes through the telephone channel (drawn only when ``params.telephone`` is
    above 0, so that sets made without it draw the same numbers as before)."""
    return {"telephone": True} if params.telephone > 0 and rng.random() < params.telephone else {}


def _speech_fields(
    rng: np.random.Generator, label: str, voices: Sequence[Voice], params: Params, short: bool = False
) -> dict[str, Any]:
    """The speech of one clip of ``label``; ``short``: an extra _unknown_ clip of one SHORT_WORDS word."""
    voice = _pick_voice(rng, voices, params)
    if short:
        kind = "short"
    elif label != UNKNOWN:
        kind = "sentence" if params.in_sentence > 0 and rng.random() < params.in_sentence else "keyword"
    else:
        kind = _choose(rng, params.unknown_mix)
    f: dict[str, Any] = {"kind": kind}
    if kind == "keyword":
        f["speech"] = _utterance(rng, voice, label, params)
    elif kind == "sentence":  # "<word> ... <keyword>": the window ends just after the keyword
        n = int(rng.integers(params.sentence_words[0], params.sentence_words[1] + 1))
        text = " ".join([*(_word(rng) for _ in range(n)), label])
        f.update(speech=_utterance(rng, voice, text, params), tail=_uniform(rng, params.sentence_tail))
        if rng.random() < params.sentence_next:  # the next word begins in the window's tail
            f.update(other=Utterance(voice, _word(rng), f["speech"].args), gap=_uniform(rng, params.snippet_gap))
    elif kind in ("word", "short"):
        f["speech"] = _utterance(rng, voice, _word(rng, SHORT_WORDS if short else UNKNOWN_WORDS), params)
    elif kind in ("truncated", "edge"):
        f["speech"] = _utterance(rng, voice, _keyword(rng), params)
    else:  # snippet: a keyword and a neighbouring word, the window catching only part of the keyword
        kw = _utterance(rng, voice, _keyword(rng), params)
        f.update(
            speech=kw,
            other=Utterance(voice, _word(rng), kw.args),
            keyword_first=bool(rng.random() < 0.5),
            gap=_uniform(rng, params.snippet_gap),
        )
    if kind in ("truncated", "edge", "snippet"):
        f.update(cut=_uniform(rng, params.cut), keep_start=bool(rng.random() < 0.5))
    f.update(
        speed=_uniform(rng, params.speed), gain_db=_uniform(rng, params.gain_db, 2), shift=_uniform(rng, (0.0, 1.0))
    )
    if rng.random() < params.reverb_prob:
        f.update(rt60=_uniform(rng, params.rt60), drr_db=_uniform(rng, params.drr_db, 2))
    return f


def plan_clips(out: Path, voices: dict[str, list[Voice]], per_word: int, seed: int, params: Params) -> list[ClipTask]:
    """Every clip of every split, drawn from ``seed`` in a fixed order."""
    tasks = []
    counts = split_counts(per_word, params.split_fractions)
    for s, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 1, s])
        for label in LABELS:
            n = counts[split] + (short_count(counts[split], params) if label == UNKNOWN else 0)
            for i in range(n):
                silence = label == SILENCE
                short = i >= counts[split]  # the extra _unknown_ clips come after the usual ones
                f = {"kind": "silence"} if silence else _speech_fields(rng, label, voices[split], params, short)
                f.update(_noise_fields(rng, voices[split], params, silence))
                f.update(channel_fields(rng, params))
                tag = "noise" if silence else f["speech"].voice.tag
                path = out / split / label / f"{tag}_nohash_{i:05d}.wav"
                tasks.append(ClipTask(path=str(path), split=split, label=label, seed=int(rng.integers(2**62)), **f))
    return tasks


# ---------------------------------------------------------------- signals


def db_to_amp(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def frame_rms(x: np.ndarray, frame: int = SAMPLE_RATE // 100) -> np.ndarray:
    n = len(x) // frame
    return np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))


def trim_silence(x: np.ndarray, threshold_db: float = -40.0, margin: int = SAMPLE_RATE // 100) -> np.ndarray:
    """Drop leading/trailing frames more than ``threshold_db`` below the loudest 10 ms frame."""
    e = frame_rms(x)
    if len(e) == 0 or e.max() <= 0:
        return x
    active = np.flatnonzero(e > e.max() * db_to_amp(threshold_db))
    frame = SAMPLE_RATE // 100
    return x[max(0, active[0] * frame - margin) : min(len(x), (active[-1] + 1) * frame + margin)]


def resample_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (tempo and pitch together, as Kaldi's speed perturbation)."""
    import soxr

    if abs(factor - 1.0) < 1e-6:
        return x
    return np.asarray(soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ"), dtype=np.float32)


def fit_length(x: np.ndarray, max_len: int) -> np.ndarray:
    """Speed ``x`` up just enough to last at most ``max_len`` samples."""
    return x if len(x) <= max_len else resample_speed(x, len(x) / (max_len - 8))


def fade(x: np.ndarray, n: int = SAMPLE_RATE // 200) -> np.ndarray:
    """Short raised-cosine fades at both ends, so that cuts do not click."""
    y = x.astype(np.float32, copy=True)
    n = min(n, len(y) // 2)
    if n > 0:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))).astype(np.float32)
        y[:n] *= ramp
        y[-n:] *= ramp[::-1]
    return y


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum 1/f**exponent (0 white, 1 pink, 2 brown), no content below 20 Hz."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    shape = np.zeros_like(f)
    keep = f >= 20.0
    shape[keep] = f[keep] ** (-exponent / 2.0)
    x = np.fft.irfft(spec * shape, n)
    return (x / (rms(x) or 1.0)).astype(np.float32)


def hum_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS 50 or 60 Hz mains hum with harmonics (buzz) and a faint hiss."""
    f0 = (50.0 if rng.random() < 0.5 else 60.0) * (1.0 + rng.uniform(-0.003, 0.003))
    t = np.arange(n) / SAMPLE_RATE
    x = np.zeros(n)
    tilt = rng.uniform(0.3, 1.5)
    for h in range(1, int(rng.integers(3, 16)) + 1):
        x += rng.uniform(0.2, 1.0) * h**-tilt * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    x = x / (rms(x) or 1.0) + 0.01 * rng.standard_normal(n)
    return (x / rms(x)).astype(np.float32)


def room_impulse(rng: np.random.Generator, rt60: float, drr_db: float) -> np.ndarray:
    """A synthetic room: a direct path, then noise decaying by 60 dB over ``rt60`` seconds."""
    n = max(2, int(rt60 * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[0] = 0.0
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / max(float(np.sum(tail**2)), 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]
    return y.astype(np.float32)


TELEPHONE_RATE = 8000
TELEPHONE_LOW_HZ = 300.0
MU = 255.0


def telephone_channel(x: np.ndarray) -> np.ndarray:
    """``x`` (16 kHz; scaled into [-1, 1] if it peaks above) as a telephone line passes it and the runtime reads it:
    the voice band's 300 Hz high-pass, 8 kHz sampling, mu-law (mu = 255, as G.711) 8-bit companding,
    and back to 16 kHz with soxr, as the runtime reads every WAV (the real 8 kHz prompts too): on white
    noise, 3.4-4 kHz ends 9 dB and everything above 4 kHz over 130 dB below the voice band."""
    import soxr
    from scipy.signal import butter, sosfilt

    x = x / max(1.0, float(np.max(np.abs(x), initial=0.0)))
    sos = butter(4, TELEPHONE_LOW_HZ, btype="highpass", fs=SAMPLE_RATE, output="sos")
    y = np.clip(soxr.resample(sosfilt(sos, x), SAMPLE_RATE, TELEPHONE_RATE), -1.0, 1.0)
    code = np.round(np.sign(y) * np.log1p(MU * np.abs(y)) / np.log1p(MU) * 127.0)  # 8 bits: -127..127
    y = np.sign(code) * np.expm1(np.abs(code) / 127.0 * np.log1p(MU)) / MU
    y = soxr.resample(y, TELEPHONE_RATE, SAMPLE_RATE).astype(np.float32)[: len(x)]
    return np.pad(y, (0, len(x) - len(y)))


def window(x: np.ndarray, start: int, n: int = CLIP) -> np.ndarray:
    """``x[start:start+n]`` with zeros where it runs past either end (``start`` may be negative)."""
    out = np.zeros(n, dtype=np.float32)
    lo, hi = max(start, 0), min(start + n, len(x))
    if hi > lo:
        out[lo - start : hi - start] = x[lo:hi]
    return out


# ---------------------------------------------------------------- rendering (runs in the workers)


def synthesize(utt: Utterance, tmp: str) -> np.ndarray:
    """Speak ``utt`` (temp files under ``tmp``); float32 at 16 kHz, leading/trailing silence trimmed."""
    try:
        x = engine(utt.voice.engine).speak(utt.voice, utt.text, utt.args, tmp)
    except TtsError as e:
        raise KwsDataError(f"{utt.voice.id} gave no usable audio for '{utt.text}': {e}") from None
    x = trim_silence(x)
    if rms(x) < 1e-4:
        raise KwsDataError(f"{utt.voice.id} gave silence for '{utt.text}'")
    return x


def say(voice_id: str, text: str, tmp: str) -> np.ndarray:
    """``text`` said by the voice ``voice_id`` (a :attr:`Voice.id`) at an ordinary rate, with no
    augmentation: the demo's and the tests' sentences."""
    v = Voice.from_id(voice_id)
    return synthesize(Utterance(v, text, engine(v.engine).plain_args(v)), tmp)


def babble_noise(rng: np.random.Generator, talkers: Sequence[Utterance], tmp: str, n: int) -> np.ndarray:
    """Unit-RMS babble: several talkers, each looped and shifted at random, summed."""
    x = np.zeros(n, dtype=np.float32)
    for utt in talkers:
        s = synthesize(utt, tmp)
        s = np.tile(s, n // len(s) + 2)
        start = int(rng.integers(len(s) - n))
        x += db_to_amp(rng.uniform(-6.0, 0.0)) * s[start : start + n] / (rms(s) or 1.0)
    return x / (rms(x) or 1.0)


def make_noise(task: ClipTask, rng: np.random.Generator, tmp: str, n: int = CLIP) -> np.ndarray:
    if task.noise == "babble":
        return babble_noise(rng, task.babble, tmp, n)
    if task.noise == "hum":
        return hum_noise(rng, n)
    return colored_noise(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[task.noise])


def arrange(task: ClipTask, x: np.ndarray, other: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Cut and join the (speed-perturbed) speech ``x`` for ``task.kind``.

    Returns the segment and the sample of it at the window's start (negative: silence
    first). keyword, word, short and truncated lie wholly inside the window; a sentence's
    keyword ends ``task.tail`` seconds before the window does (its first words may start
    before the window, the next word, if any, runs past its end); edge and snippet leave
    only ``task.cut`` of the keyword inside.
    """
    if task.kind == "sentence":
        end = len(x)  # the keyword's end
        if other is not None:  # the next word, after a pause
            x = np.concatenate([x, np.zeros(round(task.gap * SAMPLE_RATE), dtype=np.float32), other])
        return x, end + round(task.tail * SAMPLE_RATE) - CLIP
    if task.kind == "truncated":
        keep = max(1, round(len(x) * task.cut))
        x = fade(x[:keep] if task.keep_start else x[-keep:])
    if task.kind in ("keyword", "word", "short", "truncated"):
        x = fit_length(x, MAX_SPEECH)
        return x, -round(task.shift * (CLIP - len(x)))
    inside = round(len(x) * task.cut)
    if task.kind == "edge":  # the keyword's start at the window's end, or its end at the window's start
        return x, (inside - CLIP if task.keep_start else len(x) - inside)
    if other is None:
        raise ValueError(f"a {task.kind} clip needs the neighbouring word")
    gap = np.zeros(round(task.gap * SAMPLE_RATE), dtype=np.float32)
    if task.keyword_first:  # "<keyword> <word>": the window starts inside the keyword's end
        return np.concatenate([x, gap, other]), len(x) - inside
    # "<word> <keyword>": the window ends inside the keyword's start
    return np.concatenate([other, gap, x]), len(other) + len(gap) + inside - CLIP


def speech_segment(task: ClipTask, tmp: str) -> tuple[np.ndarray, int]:
    """Synthesise, speed-perturb and :func:`arrange` the speech of ``task``."""
    assert task.speech is not None
    x = resample_speed(synthesize(task.speech, tmp), task.speed)
    other = None if task.other is None else resample_speed(synthesize(task.other, tmp), task.speed)
    return arrange(task, x, other)


def render_speech(task: ClipTask, rng: np.random.Generator, tmp: str) -> np.ndarray:
    seg, start = speech_segment(task, tmp)
    seg = seg / (float(np.max(np.abs(seg))) or 1.0)
    dry = window(seg, start)
    if task.rt60 > 0:
        seg = convolve(seg, room_impulse(rng, task.rt60, task.drr_db))
        seg = seg / (float(np.max(np.abs(seg))) or 1.0)
    x = window(seg, start) * db_to_amp(task.gain_db)
    if task.noise:
        e = frame_rms(dry)
        active = np.repeat(e > e.max() * db_to_amp(-40.0), SAMPLE_RATE // 100)
        level = rms(x[: len(active)][active]) * db_to_amp(-task.noise_db)
        x = x + level * make_noise(task, rng, tmp)
    return x


def render_clip(task: ClipTask, tmp: str) -> dict[str, Any]:
    """Render and write one clip (atomically); returns its record for clips.jsonl."""
    from edge_runtime.audio.wav import write_wav

    rng = np.random.default_rng(task.seed)
    if task.kind == "silence":
        x = make_noise(task, rng, tmp) * db_to_amp(task.noise_db)
    else:
        x = render_speech(task, rng, tmp)
    if task.telephone:
        x = telephone_channel(x)
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:
        x = x * (0.99 / peak)
    write_wav(task.path, x.astype(np.float32), SAMPLE_RATE)
    return clip_record(task)


def clip_record(task: ClipTask) -> dict[str, Any]:
    rec = dataclasses.asdict(task)
    rec["engine"] = None if task.speech is None else task.speech.voice.engine
    for key in ("speech", "other"):
        utt = getattr(task, key)
        rec[key] = None if utt is None else {"voice": utt.voice.id, "text": utt.text, "args": list(utt.args)}
    rec["babble"] = [{"voice": u.voice.id, "text": u.text, "args": list(u.args)} for u in task.babble]
    return rec


# ---------------------------------------------------------------- driver


def run_tasks(
    tasks: Sequence[Any], tmp: str, jobs: int, progress: bool, render=render_clip, desc: str = "kws_data"
) -> Iterator[dict[str, Any]]:
    """Render ``tasks`` with ``render(task, tmp)`` (a module-level function) in ``jobs`` processes, in
    order, with a tqdm bar."""
    from tqdm import tqdm

    work = partial(render, tmp=tmp)
    bar = tqdm(total=len(tasks), unit="clip", desc=desc, disable=not progress, file=sys.stderr)
    with bar:
        if jobs <= 1:
            for t in tasks:
                yield work(t)
                bar.update()
            return
        with process_pool(jobs) as pool:
            for rec in pool.imap(work, tasks, chunksize=4):
                yield rec
                bar.update()


def _check_out(out: Path) -> None:
    taken = [p.name for p in (*(out / s for s in SPLITS), out / "voices.json") if p.exists()]
    if taken:
        raise KwsDataError(f"{out} already holds a data set ({', '.join(taken)}); choose a new --out or remove it")


def _write_json(path: Path, obj: Any) -> None:
    from edge_runtime.fileio import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    from edge_runtime.fileio import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def debian_versions(engines: Iterable[str] = tuple(ENGINES)) -> dict[str, str]:
    """Versions of the Debian packages providing the engines and their voices, where dpkg knows them."""
    pkgs = dict.fromkeys(p for e in engines for p in engine(e).apt)
    return {p: v for p in pkgs if (v := debian_version(p))}


def generate(
    out: str | os.PathLike[str],
    per_word: int = 400,
    seed: int = 0,
    jobs: int = 2,
    params: Params | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the data set under ``out``; returns the contents of voices.json."""
    params = params or Params()
    if per_word < 1 or jobs < 1:
        raise KwsDataError("--per-word and --jobs must be at least 1")
    if not 0.0 <= params.in_sentence <= 1.0:
        raise KwsDataError(f"--in-sentence {params.in_sentence}: give a share of the keyword clips, 0..1")
    if params.short_words < 0.0:
        raise KwsDataError(f"--short-words {params.short_words}: give a share of per-label clips, 0 or more")
    check_params(params)
    out = Path(out)
    _check_out(out)
    used, left_out = licence_filter(all_voices(params), params)
    voices = split_voices(used, seed, params.split_fractions, params.held_out_engines)
    tasks = plan_clips(out, voices, per_word, seed, params)
    for split in SPLITS:
        for label in LABELS:
            (out / split / label).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kws_tts_") as tmp:
        records = list(run_tasks(tasks, tmp, jobs, progress))
    _write_jsonl(out / "clips.jsonl", [{**r, "path": Path(r["path"]).relative_to(out).as_posix()} for r in records])
    counts = split_counts(per_word, params.split_fractions)
    table = voice_table(voices)
    meta = {
        "layout": "speech-commands: <split>/<label>/<voice>_nohash_<n>.wav",
        "sample_rate": SAMPLE_RATE,
        "clip_seconds": CLIP / SAMPLE_RATE,
        "labels": list(LABELS),
        "seed": seed,
        "per_word": per_word,
        "counts": {
            s: {label: counts[s] + (short_count(counts[s], params) if label == UNKNOWN else 0) for label in LABELS}
            for s in SPLITS
        },
        "engines": engine_versions(params.engines),
        "debian_packages": debian_versions(params.engines),
        "held_out_engines": list(params.held_out_engines),
        "shippable": all(r["shippable"] for r in table),  # may a model trained on this set be shipped
        "splits": {s: [v.id for v in voices[s]] for s in SPLITS},
        "held_out_groups": {s: sorted({v.group for v in voices[s]}) for s in SPLITS},
        "voice_counts": voice_counts(voices),
        "voices": table,
        "left_out_voices": [
            {
                "id": v.id,
                "licence": engine(v.engine).licence(v).name,
                "why": "its licence does not allow training a model we ship",
            }
            for v in left_out
        ],
        "unknown_words": list(UNKNOWN_WORDS),
        "short_words": list(SHORT_WORDS),
        "params": dataclasses.asdict(params),
    }
    _write_json(out / "voices.json", meta)
    return meta


def add_telephone_flag(ap: argparse.ArgumentParser, what: str = "clips") -> None:
    ap.add_argument(
        "--telephone",
        type=float,
        default=Params.telephone,
        metavar="FRACTION",
        help=f"share of the {what} heard through a telephone channel (300 Hz-4 kHz, 8 kHz mu-law), as the "
        "real telephone recordings the models are validated on (default 0)",
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(n for n in (x.strip() for x in text.split(",")) if n and n != "none")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.kws_data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True, help="new folder for the data set")
    ap.add_argument(
        "--per-word",
        type=int,
        default=400,
        help="training clips per label (val and test get 1/8 of it each); default 400",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="TTS/augmentation processes (default 2)")
    ap.add_argument(
        "--engines",
        type=_names,
        default=Params.engines,
        help=f"comma-separated TTS engines to speak with (default: {','.join(Params.engines)})",
    )
    ap.add_argument(
        "--hold-out-engines",
        type=_names,
        default=Params.held_out_engines,
        help="comma-separated engines whose voices all go to the test split only, never heard "
        f"in training (default: {','.join(Params.held_out_engines)}; 'none' for none)",
    )
    ap.add_argument(
        "--restricted-voices",
        action="store_true",
        help="also use voices whose licence does not allow shipping a model trained on them "
        '(local experiments only; voices.json then says "shippable": false)',
    )
    ap.add_argument(
        "--in-sentence",
        type=float,
        default=Params.in_sentence,
        metavar="FRACTION",
        help="share of the keyword clips spoken at the end of a sentence of 1-4 other words, the "
        "window ending just after the keyword (default 0)",
    )
    ap.add_argument(
        "--short-words",
        type=float,
        default=Params.short_words,
        metavar="FRACTION",
        help="extra _unknown_ clips of one single word (digits, letter names, short everyday words, "
        "words that start with or contain a keyword's sound), as a share of the clips per label (default 0)",
    )
    add_telephone_flag(ap)
    args = ap.parse_args(argv)
    params = dataclasses.replace(
        Params(),
        engines=args.engines,
        held_out_engines=args.hold_out_engines,
        restricted_voices=args.restricted_voices,
        in_sentence=args.in_sentence,
        short_words=args.short_words,
        telephone=args.telephone,
    )
    t0 = time.monotonic()
    try:
        meta = generate(args.out, args.per_word, args.seed, args.jobs, params)
    except TtsError as e:
        print(f"kws_data: error: {e}", file=sys.stderr)
        return 2
    total = {s: sum(c.values()) for s, c in meta["counts"].items()}
    print(
        f"wrote {sum(total.values())} clips to {args.out} (train {total['train']}, val {total['val']}, "
        f"test {total['test']}) in {time.monotonic() - t0:.0f} s"
    )
    for s, by_engine in meta["voice_counts"].items():
        print(f"  {s} voices: " + ", ".join(f"{e} {n}" for e, n in by_engine.items()))
    for v in meta["left_out_voices"]:
        print(f"  left out {v['id']}: {v['licence']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
