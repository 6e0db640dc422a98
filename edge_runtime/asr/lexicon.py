"""Pronunciations: the lexicon file shipped with a speech model, word -> phoneme sequences.

A lexicon is UTF-8 text, one pronunciation a line; a ``#`` at the start of a line or after a space starts
a comment (the ``#`` inside a phoneme such as ``a#`` or ``t#`` does not)::

    # word  phonemes (the model's phoneme set, separated by spaces)
    kitchen  k I tS @ n
    the      D @
    the      D i:          # a word on several lines: each line is one way to say it

**The phoneme set** is espeak-ng's phoneme mnemonics for American English (``espeak-ng -v en-us -x``),
with the stress marks (``'`` ``,``) and the sound-less marks (``;`` syllable breaks, ``_`` pauses)
removed: ``t 3: n`` for "turn", ``k I tS @ n`` for "kitchen". The training labels come from the same
espeak-ng transcription, so the lexicon, the labels and the model's outputs share one alphabet; the
model's manifest records it. On a workstation, ``python -m models.g2p`` writes entries for new words
with espeak-ng; the board only reads the file (no TTS needed).

Limits: :data:`MAX_LEXICON_BYTES` per file, :data:`MAX_VARIANTS` pronunciations per word, each of
1 to :data:`MAX_PHONEMES` phonemes. Every problem is a one-line :class:`LexiconError` naming the
file and line, or the grammar's words that are missing and how to add them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..fileio import read_text

MAX_LEXICON_BYTES = 16 * 1024 * 1024
MAX_VARIANTS = 8
MAX_PHONEMES = 48
ADD_HINT = "python -m models.g2p add LEXICON WORD... (on a workstation with espeak-ng)"

_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")  # as the grammar spells words
_COMMENT = re.compile(r"(?:^|\s)#.*")  # not the '#' inside a phoneme (a#, t#)


class LexiconError(Exception):
    """A lexicon that cannot be used, or words missing from it; the message is one line."""


@dataclass(frozen=True)
class Lexicon:
    """Word -> its pronunciations (tuples of phonemes), in file order."""

    where: str
    entries: dict[str, tuple[tuple[str, ...], ...]]

    @property
    def phonemes(self) -> list[str]:
        """Every phoneme the lexicon uses, sorted."""
        return sorted({p for prons in self.entries.values() for pron in prons for p in pron})

    def missing(self, words: Iterable[str]) -> list[str]:
        return sorted({w for w in words if w not in self.entries})

    def pronounce(self, words: Iterable[str], what: str) -> dict[str, tuple[tuple[str, ...], ...]]:
        """The pronunciations of ``words`` (e.g. a grammar's); LexiconError naming ``what`` and the words
        the lexicon lacks."""
        words = list(words)
        missing = self.missing(words)
        if missing:
            shown = ", ".join(repr(w) for w in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise LexiconError(
                f"{what}: {shown} {'is' if len(missing) == 1 else 'are'} not in the model's lexicon {self.where}; "
                f"use words it has, or add them with {ADD_HINT}"
            )
        return {w: self.entries[w] for w in words}


def parse_lexicon(text: str, where: str = "<lexicon>", phonemes: Sequence[str] | None = None) -> Lexicon:
    """Parse lexicon ``text``; with ``phonemes`` (the model's set), a phoneme outside it is an error."""
    allowed = None if phonemes is None else frozenset(phonemes)
    entries: dict[str, list[tuple[str, ...]]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        fields = _COMMENT.sub("", raw).split()
        if not fields:
            continue
        where_line = f"{where}:{number}"
        word, pron = fields[0].lower(), tuple(fields[1:])
        if not _WORD.fullmatch(word):
            raise LexiconError(f"{where_line}: {fields[0]!r} is not a word (letters, digits, ' and -)")
        if not 1 <= len(pron) <= MAX_PHONEMES:
            raise LexiconError(
                f"{where_line}: {word!r} needs 1 to {MAX_PHONEMES} phonemes after it, separated by spaces"
            )
        if allowed is not None:
            bad = [p for p in pron if p not in allowed]
            if bad:
                raise LexiconError(
                    f"{where_line}: {word!r}: phoneme {bad[0]!r} is not in the model's phoneme set; "
                    f"use the model's phonemes ({' '.join(sorted(allowed)[:8])} ...)"
                )
        variants = entries.setdefault(word, [])
        if pron in variants:
            continue
        if len(variants) >= MAX_VARIANTS:
            raise LexiconError(f"{where_line}: {word!r} has more than {MAX_VARIANTS} pronunciations; keep fewer")
        variants.append(pron)
    return Lexicon(where, {w: tuple(v) for w, v in entries.items()})


def load_lexicon(path: str | Path, phonemes: Sequence[str] | None = None) -> Lexicon:
    """Read and parse a lexicon file (see :func:`parse_lexicon`)."""
    try:
        text = read_text(path, MAX_LEXICON_BYTES, "lexicon", "is this a lexicon?")
    except ValueError as e:
        raise LexiconError(str(e)) from None
    return parse_lexicon(text, str(path), phonemes)


def format_entries(entries: Iterable[tuple[str, Sequence[str]]]) -> str:
    """Lexicon lines for ``(word, phonemes)`` pairs, as :func:`parse_lexicon` reads them."""
    return "".join(f"{w} {' '.join(p)}\n" for w, p in entries)
