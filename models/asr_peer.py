"""pocketsphinx as a peer of our phrase recognizer: the same grammar, the same audio, side by side.

    python -m models.asr_peer --grammar GRAMMAR WAV...

prints one JSON line per file: ``{"file", "phrase", "cpu_s", "audio_s", "hypothesis"}``;
``phrase`` is the grammar phrase pocketsphinx heard (lower-case words joined by single spaces, as
``Expansion.text``) or null, ``hypothesis`` its raw words (null when it returned none), which
differ from ``phrase`` when its best path stopped short of a whole phrase (see
:class:`PeerRecognizer`).

pocketsphinx (PyPI ``pocketsphinx``, BSD; its wheel ships the CMU en-us acoustic model and
dictionary) decodes with a JSGF grammar (:func:`to_jsgf`) that accepts exactly the phrases our
grammar expands to (``edge_runtime.asr.grammar``), each with the same prior, as one public rule
listing them all would; the phrases are factored (shared beginnings once, alternatives that go
on alike grouped) because pocketsphinx searches a flat list of 10,000 phrases hundreds of times
slower. It hears what the keyword peer (``models.kws_peer``) hears: 16 kHz int16 in 100 ms
chunks, one utterance per file, one thread. Nothing is tuned: pocketsphinx's default beams and
language weight. A closed grammar makes it force the best-scoring phrase onto whatever it
hears, unless no path through the grammar reaches the end of the utterance (as on noise).
Words its dictionary lacks are refused with one line naming them (pocketsphinx has no
grapheme-to-phoneme converter of its own): reword those phrases.

Real-time factor: process CPU time of the decode / audio duration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.asr.grammar import Grammar, GrammarError, load_grammar
from models.kws_peer import SR, PeerError, sphinx_decoder, timed, utterance

SEARCH = "cmds"
MAX_LISTED = 20  # unknown words named in the error


def unknown_words(words: Iterable[str], decoder: Any) -> list[str]:
    """The ``words`` (e.g. a grammar's) pocketsphinx's dictionary has no pronunciation for, sorted."""
    return sorted({w for w in words if decoder.lookup_word(w) is None})


def to_jsgf(grammar: Grammar, decoder: Any | None = None) -> str:
    """A JSGF grammar accepting exactly ``grammar``'s phrases; PeerError naming words the dictionary
    lacks (looked up in ``decoder``'s, else in a fresh decoder's: the wheel's cmudict)."""
    missing = unknown_words(grammar.words, decoder if decoder is not None else sphinx_decoder())
    if missing:
        listed = " ".join(missing[:MAX_LISTED]) + (
            f" and {len(missing) - MAX_LISTED} more" if missing[MAX_LISTED:] else ""
        )
        raise PeerError(
            f"{grammar.where}: pocketsphinx's dictionary lacks {len(missing)} word(s): {listed}; "
            "reword the phrases that use them"
        )
    expression, _ = _factored([e.words for e in grammar.expansions], {})
    return f"#JSGF V1.0;\ngrammar {SEARCH};\npublic <cmd> = {expression} ;\n"


def _alternatives(options: list[tuple[str, int]]) -> str:
    """``(a | b)`` in JSGF; weighted by the phrases each holds when they differ, so every phrase
    keeps the same prior (pocketsphinx splits a group's probability by the weights, else evenly)."""
    if len(options) == 1:
        return options[0][0]
    even = len({n for _, n in options}) == 1
    return "(" + " | ".join(x if even else f"/{n}/ {x}" for x, n in options) + ")"


def _factored(phrases: list[tuple[str, ...]], memo: dict) -> tuple[str, int]:
    """A JSGF expression accepting exactly ``phrases`` (distinct word tuples; ``()`` is saying
    nothing more) and how many they are: the phrases grouped by their first word, and first words
    whose continuations are the same set grouped as alternatives before one shared continuation."""
    key = frozenset(phrases)
    if key == {()}:
        return "", 1
    if key not in memo:
        rests: dict[str, list[tuple[str, ...]]] = {}
        for words in phrases:
            if words:
                rests.setdefault(words[0], []).append(words[1:])
        firsts: dict[frozenset, list[str]] = {}
        for word, rest in rests.items():
            firsts.setdefault(frozenset(rest), []).append(word)
        options = [("<NULL>", 1)] if () in key else []
        for words in firsts.values():
            rest, n = _factored(rests[words[0]], memo)
            head = _alternatives([(w, 1) for w in words])
            options.append((f"{head} {rest}" if rest else head, n * len(words)))
        memo[key] = (_alternatives(options), sum(n for _, n in options))
    return memo[key]


@dataclass(frozen=True)
class Heard:
    """What pocketsphinx made of one utterance."""

    phrase: str | None  # a phrase of the grammar, or None
    hypothesis: str | None  # pocketsphinx's words, also when they are only the start of a phrase
    cpu_s: float


class PeerRecognizer:
    """pocketsphinx decoding one utterance at a time with :func:`to_jsgf` of ``grammar``.

    When no path through the grammar reaches the end of the utterance, pocketsphinx returns either
    no hypothesis or the words of the best unfinished path (``turn`` for "front left" against the
    home commands): neither is a phrase, so :attr:`Heard.phrase` is None for both."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self.phrases = frozenset(e.text for e in grammar.expansions)
        self.decoder = sphinx_decoder()
        self.jsgf = to_jsgf(grammar, self.decoder)
        self.decoder.add_jsgf_string(SEARCH, self.jsgf)
        self.decoder.activate_search(SEARCH)

    def _decode(self, x: np.ndarray) -> str | None:
        utterance(self.decoder, x)
        hyp = self.decoder.hyp()
        words = hyp.hypstr.lower().split() if hyp is not None else []
        return " ".join(words) or None

    def hear(self, x: np.ndarray) -> Heard:
        """One utterance over ``x`` (float32 at 16 kHz)."""
        hypothesis, cpu = timed(self._decode, x)
        return Heard(hypothesis if hypothesis in self.phrases else None, hypothesis, cpu)

    def recognize(self, x: np.ndarray) -> tuple[str | None, float]:
        """The phrase heard in ``x`` or None, and the CPU seconds the decode took."""
        heard = self.hear(x)
        return heard.phrase, heard.cpu_s


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.audio.wav import AudioError, read_wav, wav_info

    ap = argparse.ArgumentParser(
        prog="python -m models.asr_peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--grammar", type=Path, required=True, help="a phrase grammar (edge_runtime.asr.grammar)")
    ap.add_argument("wavs", nargs="+", type=Path, metavar="WAV", help="recordings, one utterance each")
    args = ap.parse_args(argv)
    try:
        grammar = load_grammar(args.grammar)
        for wav in args.wavs:  # every file is checked before the first line is printed
            wav_info(wav, SR)
        peer = PeerRecognizer(grammar)
        for wav in args.wavs:
            x = read_wav(wav, SR)
            heard = peer.hear(x)
            row = {
                "file": str(wav),
                "phrase": heard.phrase,
                "cpu_s": round(heard.cpu_s, 6),
                "audio_s": round(len(x) / SR, 6),
                "hypothesis": heard.hypothesis,
            }
            print(json.dumps(row), flush=True)
    except (GrammarError, PeerError, AudioError) as e:
        print(f"asr_peer: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
