"""Pronunciations from espeak-ng's G2P, in the phoneme set of the speech models (workstation side).

    python -m models.g2p add LEXICON WORD...            # add words espeak-ng can say
    python -m models.g2p grammar GRAMMAR LEXICON        # add every word of a grammar the lexicon lacks

The phoneme set (see :mod:`edge_runtime.asr.lexicon`): ``espeak-ng -v en-us -q -x --sep=_`` mnemonics
with the stress marks ``'`` ``,`` removed and the sound-less marks dropped (``;`` between vowels, which
espeak-ng's IPA output shows as nothing, and the ``:`` of a pause). :func:`phonemes_of` turns an
espeak-ng transcription into that set; the training labels of a phoneme model go through the same
function, so the lexicon and the model agree.

Each word is transcribed on its own (one espeak-ng run per word): in running text espeak-ng joins
unstressed words to their neighbours (``on the`` comes out as one word, ``0nD@``), so a whole phrase
cannot be split back into words. The citation form it gives (``the`` -> ``D @``) can differ from the
reduced form in a sentence (``D I2`` before a vowel); a lexicon may list both, one line each.
Words already in the lexicon are left as they are; the file is rewritten atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from edge_runtime.asr.grammar import GrammarError, load_grammar
from edge_runtime.asr.lexicon import Lexicon, LexiconError, format_entries, load_lexicon, parse_lexicon
from edge_runtime.fileio import atomic_write
from models.tts_engines import TtsError, run

VOICE = "en-us"
STRESS = str.maketrans("", "", "',")
SOUNDLESS = frozenset({"", ";", ":", "::", "|", "||"})


class G2pError(Exception):
    """A word espeak-ng cannot say, or espeak-ng missing; one line."""


def phonemes_of(transcription: str) -> list[str]:
    """The phonemes of an ``espeak-ng -x --sep=_`` transcription, stress and sound-less marks removed."""
    out = []
    for word in transcription.split():
        for token in word.split("_"):
            token = token.translate(STRESS)
            if token not in SOUNDLESS:
                out.append(token)
    return out


def transcribe(text: str, voice: str = VOICE) -> list[str]:
    """The phonemes espeak-ng says ``text`` with (``voice``'s accent)."""
    try:
        return phonemes_of(run(["espeak-ng", "-v", voice, "-q", "-x", "--sep=_", text], timeout=30))
    except TtsError as e:
        raise G2pError(f"{e}; install espeak-ng (apt-get install espeak-ng)") from None


def pronounce(words: Iterable[str], voice: str = VOICE) -> dict[str, tuple[str, ...]]:
    """Each word's espeak-ng pronunciation, transcribed on its own."""
    out = {}
    for word in words:
        phonemes = transcribe(word, voice)
        if not phonemes:
            raise G2pError(f"espeak-ng gives no phonemes for {word!r}; spell it as it is said")
        out[word] = tuple(phonemes)
    return out


def add_words(lexicon_path: Path, words: Iterable[str], voice: str = VOICE) -> list[str]:
    """Add the ``words`` the lexicon lacks (creating it if absent); the words added."""
    if lexicon_path.exists():
        lexicon = load_lexicon(lexicon_path)
        text = lexicon_path.read_text(encoding="utf-8")
    else:
        lexicon, text = Lexicon(str(lexicon_path), {}), "# word  phonemes (espeak-ng en-us mnemonics, no stress)\n"
    new = lexicon.missing(w.lower() for w in words)
    entries = pronounce(new, voice)
    text = text + ("" if not text or text.endswith("\n") else "\n") + format_entries(entries.items())
    parse_lexicon(text, str(lexicon_path))  # what is written reads back
    with atomic_write(lexicon_path, encoding="utf-8") as f:
        f.write(text)
    return new


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.g2p", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add words to a lexicon")
    add.add_argument("lexicon", type=Path)
    add.add_argument("words", nargs="+")
    gram = sub.add_parser("grammar", help="add the words of a grammar a lexicon lacks")
    gram.add_argument("grammar", type=Path)
    gram.add_argument("lexicon", type=Path)
    for p in (add, gram):
        p.add_argument("--voice", default=VOICE, help=f"espeak-ng voice whose accent to use (default {VOICE})")
    args = ap.parse_args(argv)
    try:
        words = args.words if args.cmd == "add" else load_grammar(args.grammar).words
        added = add_words(args.lexicon, words, args.voice)
    except (GrammarError, LexiconError, G2pError) as e:
        print(f"g2p: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.lexicon}: {len(added)} words added" + (f" ({' '.join(added)})" if added else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
