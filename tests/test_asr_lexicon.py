"""Pronunciations: the lexicon file the board reads, and espeak-ng's G2P that writes it on the workstation."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from edge_runtime.asr.grammar import load_grammar
from edge_runtime.asr.lexicon import LexiconError, format_entries, load_lexicon, parse_lexicon
from tests.conftest import ROOT, require

DATA = ROOT / "tests" / "data" / "asr"


@pytest.fixture(scope="module")
def espeak():
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt-get install espeak-ng)")


def test_variants_comments_and_the_phoneme_set():
    lex = parse_lexicon("# header\nthe D @2\nthe D i:  # before a vowel\nKitchen k I tS @ n\nthe D @2\n", "lex.txt")
    assert lex.entries == {"the": (("D", "@2"), ("D", "i:")), "kitchen": (("k", "I", "tS", "@", "n"),)}
    assert lex.phonemes == ["@", "@2", "D", "I", "i:", "k", "n", "tS"]
    lines = [(w, pron) for w, prons in lex.entries.items() for pron in prons]
    assert parse_lexicon(format_entries(lines), "again.txt").entries == lex.entries  # what is written reads back


def test_a_hash_inside_a_phoneme_is_not_a_comment():
    lex = parse_lexicon("#comment\neighty eI t# i #comment\na a#\t# after a tab\n", "lex.txt")
    assert lex.entries == {"eighty": (("eI", "t#", "i"),), "a": (("a#",),)}


def test_words_missing_from_the_lexicon_are_one_line_naming_them_and_the_fix():
    lex = parse_lexicon("turn t 3: n\n", "models/asr/lexicon.txt")
    assert lex.pronounce(["turn"], "g.txt") == {"turn": (("t", "3:", "n"),)}
    with pytest.raises(LexiconError) as e:
        lex.pronounce(["turn", "on", "the", "lamp"], "g.txt")
    assert str(e.value) == (
        "g.txt: 'lamp', 'on', 'the' are not in the model's lexicon models/asr/lexicon.txt; use words it has, "
        "or add them with python -m models.g2p add LEXICON WORD... (on a workstation with espeak-ng)"
    )
    with pytest.raises(LexiconError, match=r"^g\.txt: 'a', 'b', 'c', 'd', 'e' and 2 more are not in"):
        lex.pronounce("abcdefg", "g.txt")


@pytest.mark.parametrize(
    "text, message",
    [
        ("turn\n", "lex.txt:1: 'turn' needs 1 to 48 phonemes after it, separated by spaces"),
        ("ok b a d\nca$h k a S\n", "lex.txt:2: 'ca$h' is not a word (letters, digits, ' and -)"),
        ("turn t 3: n\nlight l aI t\nbad b Q d\n", "lex.txt:3: 'bad': phoneme 'Q' is not in the model's phoneme set; "
         "use the model's phonemes (3: I a aI b d l n ...)"),
        ("".join(f"a a {'a ' * i}\n" for i in range(9)), "lex.txt:9: 'a' has more than 8 pronunciations; keep fewer"),
    ],
)  # fmt: skip
def test_bad_lexicon_lines_are_one_line_errors(text, message):
    with pytest.raises(LexiconError) as e:
        parse_lexicon(text, "lex.txt", phonemes=["t", "3:", "n", "l", "aI", "b", "d", "I", "a"])
    assert str(e.value) == message


def test_unreadable_lexicon_file(tmp_path):
    with pytest.raises(LexiconError, match=r"nope\.txt: cannot read the lexicon: No such file or directory$"):
        load_lexicon(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 k a f eI\n")
    with pytest.raises(LexiconError, match=r"bad\.txt: not UTF-8 text \(byte 3\); save the lexicon as UTF-8$"):
        load_lexicon(bad)


def test_espeak_phonemes_lose_stress_and_soundless_marks():
    from models.g2p import phonemes_of

    # espeak-ng -v en-us -q -x --sep=_ "disagreeable kitchen" (';' is a syllable break with no sound)
    assert phonemes_of("d_,I_s_a#_g_r_'i:_;_@_b_@L k_'I_tS_@_n") == ("d I s a# g r i: @ b @L k I tS @ n".split())


def test_espeak_ng_pronounces_words_one_at_a_time(espeak):
    from models.g2p import pronounce, transcribe

    prons = pronounce(["turn", "kitchen", "light", "the"])
    assert prons == {
        "turn": ("t", "3:", "n"),
        "kitchen": ("k", "I", "tS", "@", "n"),
        "light": ("l", "aI", "t"),
        "the": ("D", "@2"),
    }
    # the same words in running text: the same phonemes in a row, as the training labels will have them
    assert transcribe("turn the kitchen light") == ["t", "3:", "n", "D", "@2", "k", "I", "tS", "@", "n", "l", "aI", "t"]


def test_a_phrase_is_cut_back_into_words_against_their_citation_forms():
    from models.g2p import split_words

    # espeak-ng: "is the garage door open" -> I_z D_@2 g_3_r_'A:_Z d_'o@_r 'oU_p_@_n (a linking r after door)
    said = "I z D @2 g 3 r A: Z d o@ r oU p @ n".split()
    citations = [("I", "z"), ("D", "@2"), ("g", "3", "r", "A:", "Z"), ("d", "o@"), ("oU", "p", "@", "n")]
    assert split_words(said, citations) == [("I", "z"), ("D", "@2"), ("g", "3", "r", "A:", "Z"), ("d", "o@", "r"),
                                            ("oU", "p", "@", "n")]  # fmt: skip
    assert split_words(["k", "a", "t"], [("d", "O", "g")]) is None  # nothing like it: no guess


def test_the_forms_words_take_in_a_grammars_phrases_come_from_espeak_ng(espeak):
    from models.g2p import context_forms, pronounce

    citations = pronounce(["the", "a", "door", "set", "timer", "apple"])
    forms = context_forms([("set", "a", "timer"), ("the", "apple"), ("the", "door")], citations)
    assert forms == {"a": [("a#",)], "the": [("D", "I2")]}


def test_the_shipped_test_lexicon_is_what_espeak_ng_says_for_the_grammar(espeak, tmp_path):
    """tests/data/asr/lexicon.txt was made by `python -m models.g2p grammar`: making it again gives the same."""
    fresh = tmp_path / "lexicon.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "models.g2p", "grammar", str(DATA / "commands.txt"), str(fresh)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{fresh}: 64 words added (a back bedroom ")
    assert load_lexicon(fresh).entries == load_lexicon(DATA / "lexicon.txt").entries
    grammar_words = load_grammar(DATA / "commands.txt").words
    assert sorted(load_lexicon(fresh).entries) == grammar_words


def test_g2p_add_keeps_existing_entries_and_adds_only_new_words(espeak, tmp_path):
    lex = tmp_path / "lexicon.txt"
    lex.write_text("the D i:\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "models.g2p", "add", str(lex), "the", "Lamp", "lamp"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{lex}: 1 words added (lamp)"
    assert lex.read_text(encoding="utf-8") == "the D i:\nlamp l a m p\n"


def test_g2p_errors_are_one_line_and_leave_the_lexicon_untouched(espeak, tmp_path):
    lex = tmp_path / "lexicon.txt"
    lex.write_text("the D i:\n", encoding="utf-8")
    for args, message in [
        (["add", str(lex), "caf\u00e9"], f"g2p: error: {lex}:2: 'caf\u00e9' is not a word (letters, digits, ' and -)"),
        (["grammar", str(tmp_path / "none.txt"), str(lex)],
         f"g2p: error: {tmp_path}/none.txt: cannot read the grammar: No such file or directory"),
    ]:  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "models.g2p", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr
    assert lex.read_text(encoding="utf-8") == "the D i:\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lexicon.txt"]  # no temp file left
    # a lexicon beside a broken phrase-model manifest: the manifest's one line, not a traceback
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text("{", encoding="utf-8")
    (model / "lexicon.txt").write_text("the D i:\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "models.g2p", "add", str(model / "lexicon.txt"), "lamp"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.startswith("g2p: error: ") and "manifest.json" in err, proc.stderr
    assert "\n" not in err and "Traceback" not in err
    assert (model / "lexicon.txt").read_text(encoding="utf-8") == "the D i:\n"
