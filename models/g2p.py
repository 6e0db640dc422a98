"""Pronunciations from espeak-ng's G2P, in the phoneme set of the speech models (workstation side).

    python -m models.g2p add LEXICON WORD...            # add words espeak-ng can say
    python -m models.g2p grammar GRAMMAR LEXICON        # add every word of a grammar the lexicon lacks

The phoneme set (see :mod:`edge_runtime.asr.lexicon`): ``espeak-ng -v en-us -q -x --sep=_`` mnemonics
with the stress marks ``'`` ``,`` removed and the sound-less marks dropped (``;`` between vowels, which
espeak-ng's IPA output shows as nothing, and the ``:`` of a pause). :func:`phonemes_of` turns an
espeak-ng transcription into that set; the training labels of a phoneme model go through the same
function, so the lexicon and the model agree.

Each word is transcribed on its own (one espeak-ng run per word) for its citation form. In running
speech a word can sound different (``the`` is ``D @2`` alone, ``D I2`` before a vowel; ``a`` is ``eI``
alone, ``a#`` in ``set a timer``), and the training labels are transcriptions of whole sentences, so
``grammar`` also transcribes each phrase whole and cuts its phonemes back into words (espeak-ng joins
unstressed words to their neighbours, ``O2nD@2`` for "on the", so the cut is an edit-distance
alignment against the citation forms, :func:`split_words`); the forms a word takes there that differ
from its citation form are written as further lines, the most frequent first (at most
:data:`MAX_VARIANTS_WRITTEN` lines a word). Words already in the lexicon are left as they are; the
file is rewritten atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge_runtime.asr.grammar import GrammarError, load_grammar
from edge_runtime.asr.lexicon import Lexicon, LexiconError, format_entries, load_lexicon, parse_lexicon
from edge_runtime.fileio import atomic_write
from edge_runtime.manifest import ManifestError
from models.tts_engines import TtsError, run

VOICE = "en-us"
MAX_CONTEXT_PHRASES = 2000  # phrases of a grammar transcribed whole for the forms words take in them
MAX_VARIANTS_WRITTEN = 3  # pronunciations written per word: the citation form and the most frequent others
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


def _distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Edit distance between two phoneme sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def split_words(phonemes: Sequence[str], citations: Sequence[Sequence[str]]) -> list[tuple[str, ...]] | None:
    """Cut a phrase's phonemes into one non-empty piece per word, each as close as possible (edit
    distance) to the word's citation form; None if some piece is more than half its word away from it
    (the cut is then a guess)."""
    n, k = len(phonemes), len(citations)
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    cost[0][0] = 0
    for w in range(1, k + 1):
        for j in range(w, n + 1):
            for i in range(w - 1, j):
                c = cost[w - 1][i] + _distance(phonemes[i:j], citations[w - 1])
                if c <= cost[w][j]:  # a tie gives the earlier word the phonemes (a linking r)
                    cost[w][j], cut[w][j] = c, i
    if cost[k][n] == inf:
        return None
    pieces, j = [], n
    for w in range(k, 0, -1):
        i = cut[w][j]
        pieces.append(tuple(phonemes[i:j]))
        j = i
    pieces.reverse()
    if any(_distance(p, c) > max(1, len(c) // 2) for p, c in zip(pieces, citations)):
        return None
    return pieces


def context_forms(
    phrases: Iterable[Sequence[str]], citations: dict[str, tuple[str, ...]], voice: str = VOICE
) -> dict[str, list[tuple[str, ...]]]:
    """The forms the words of ``citations`` take inside ``phrases`` (word sequences) in espeak-ng's
    running speech, other than their citation forms, most frequent first (``the`` -> ``D I2`` before
    a vowel, ``door`` -> ``d o@ r`` before one)."""
    counts: dict[str, dict[tuple[str, ...], int]] = {}
    for words in phrases:
        if not any(w in citations for w in words):
            continue
        known = {w: citations[w] if w in citations else tuple(transcribe(w, voice)) for w in words}
        pieces = split_words(transcribe(" ".join(words), voice), [known[w] for w in words])
        for w, piece in zip(words, pieces or ()):
            if w in citations and piece != citations[w]:
                counts.setdefault(w, {}).setdefault(piece, 0)
                counts[w][piece] += 1
    return {w: sorted(c, key=lambda p: (-c[p], p)) for w, c in counts.items()}


def add_words(
    lexicon_path: Path, words: Iterable[str], voice: str = VOICE, phrases: Sequence[Sequence[str]] = ()
) -> list[str]:
    """Add the ``words`` the lexicon lacks (creating it if absent), each with its citation form and,
    from ``phrases`` (word sequences, at most :data:`MAX_CONTEXT_PHRASES` used), the forms it takes in
    them; the words added. Beside a model (a ``manifest.json`` with ``metrics.asr`` in the lexicon's
    folder) only forms in the model's phoneme set are written: a form in context with another phoneme
    is left out, a citation form with one is a G2pError naming the word."""
    allowed = _model_phonemes(lexicon_path.parent)
    if lexicon_path.exists():
        lexicon = load_lexicon(lexicon_path)
        text = lexicon_path.read_text(encoding="utf-8")
    else:
        lexicon, text = Lexicon(str(lexicon_path), {}), "# word  phonemes (espeak-ng en-us mnemonics, no stress)\n"
    new = lexicon.missing(w.lower() for w in words)
    citations = pronounce(new, voice)
    in_context = context_forms(phrases[:MAX_CONTEXT_PHRASES], citations, voice) if phrases else {}
    if allowed is not None:
        bad = _outside(citations, allowed)
        if bad:
            w, b = next(iter(bad.items()))
            raise G2pError(f"espeak-ng says {w!r} with {b[0]!r}, a phoneme the model does not output; reword it")
        in_context = {w: [f for f in forms if set(f) <= allowed] for w, forms in in_context.items()}
    entries = [(w, p) for w, c in citations.items() for p in [c, *in_context.get(w, [])][:MAX_VARIANTS_WRITTEN]]
    text = text + ("" if not text or text.endswith("\n") else "\n") + format_entries(entries)
    parse_lexicon(text, str(lexicon_path))  # what is written reads back
    with atomic_write(lexicon_path, encoding="utf-8") as f:
        f.write(text)
    return new


def unsayable(folder: Path, words: Iterable[str], voice: str = VOICE) -> list[str]:
    """The ``words`` the phrase model in ``folder`` cannot say: outside its lexicon, and espeak-ng
    says them with a phoneme the model does not output (:func:`add_words` refuses such a word)."""
    from edge_runtime import manifest as mf

    m, _ = mf.load(folder)
    lexicon = load_lexicon(folder / m.metrics["asr"]["lexicon"])
    citations = pronounce(lexicon.missing(w.lower() for w in words), voice)
    return sorted(_outside(citations, _phonemes(m)))


def _outside(citations: dict[str, tuple[str, ...]], allowed: frozenset[str]) -> dict[str, list[str]]:
    """Per word, the phonemes of its form that are not in ``allowed`` (words with none left out)."""
    bad = {w: [x for x in c if x not in allowed] for w, c in citations.items()}
    return {w: b for w, b in bad.items() if b}


def _model_phonemes(folder: Path) -> frozenset[str] | None:
    """The phonemes of the phrase model in ``folder`` (its labels but the blank), None if there is none."""
    from edge_runtime import manifest as mf

    if not (folder / mf.MANIFEST_NAME).exists():
        return None
    m, _ = mf.load(folder)
    return _phonemes(m) if isinstance(m.metrics.get("asr"), dict) else None


def _phonemes(m) -> frozenset[str]:
    """A phrase model's phonemes: its labels but the blank."""
    return frozenset(x for x in m.labels if x != m.metrics["asr"]["blank"])


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
        if args.cmd == "add":
            added = add_words(args.lexicon, args.words, args.voice)
        else:
            grammar = load_grammar(args.grammar)
            added = add_words(args.lexicon, grammar.words, args.voice, [e.words for e in grammar.expansions])
    except (GrammarError, LexiconError, G2pError, ManifestError) as e:
        print(f"g2p: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.lexicon}: {len(added)} words added" + (f" ({' '.join(added)})" if added else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
