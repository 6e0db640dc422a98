"""The grammar language: phrases, alternatives, optional words, slots, limits and one-line errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.asr.grammar import (
    MAX_EXPANSIONS,
    MAX_WORDS,
    Expansion,
    GrammarError,
    load_grammar,
    parse_grammar,
    spoken_number,
)


def texts(text: str) -> list[str]:
    return [e.text for e in parse_grammar(text, "g.txt").expansions]


def test_alternatives_optional_words_and_comments():
    assert texts("# lights\nturn (on|off) the [kitchen] light  # both\n\n") == [
        "turn on the kitchen light",
        "turn on the light",
        "turn off the kitchen light",
        "turn off the light",
    ]


def test_nested_groups_multi_word_alternatives_and_a_top_level_bar():
    assert texts("(switch | turn) (on | off [again]) | good night") == [
        "switch on",
        "switch off again",
        "switch off",
        "turn on",
        "turn off again",
        "turn off",
        "good night",
    ]


def test_words_are_lower_cased_and_keep_apostrophes_and_hyphens():
    e = parse_grammar("What's the Wi-Fi password", "g.txt").expansions[0]
    assert e.words == ("what's", "the", "wi-fi", "password") and e.text == "what's the wi-fi password"


def test_slots_from_rule_lines_before_or_after_use_with_nesting():
    g = parse_grammar("turn on the <place> light\n<place> = <room> | hall\n<room> = kitchen | living room\n", "g.txt")
    assert [(e.text, e.slots, e.line) for e in g.expansions] == [
        ("turn on the kitchen light", {"place": "kitchen", "room": "kitchen"}, 1),
        ("turn on the living room light", {"place": "living room", "room": "living room"}, 1),
        ("turn on the hall light", {"place": "hall"}, 1),
    ]


def test_builtin_number_is_one_to_a_hundred_in_words_with_digit_values():
    g = parse_grammar("set a timer for <number> minutes", "g.txt")
    assert len(g.expansions) == 100
    by_value = {e.slots["number"]: e.words[4:-1] for e in g.expansions}
    assert by_value["1"] == ("one",) and by_value["13"] == ("thirteen",) and by_value["40"] == ("forty",)
    assert by_value["21"] == ("twenty", "one") and by_value["99"] == ("ninety", "nine")
    assert by_value["100"] == ("one", "hundred")
    assert [spoken_number(n) for n in (7, 30, 58)] == [("seven",), ("thirty",), ("fifty", "eight")]


def test_a_rule_line_replaces_the_builtin_number():
    g = parse_grammar("volume <number>\n<number> = low | high", "g.txt")
    assert [(e.text, e.slots) for e in g.expansions] == [
        ("volume low", {"number": "low"}),
        ("volume high", {"number": "high"}),
    ]


def test_the_same_words_from_two_lines_are_kept_once_with_the_first_reading():
    g = parse_grammar("turn on [the] light\nturn on the light\n", "g.txt")
    assert g.expansions == (
        Expansion("turn on the light", {}, ("turn", "on", "the", "light"), 1),
        Expansion("turn on light", {}, ("turn", "on", "light"), 1),
    )
    assert g.words == ["light", "on", "the", "turn"]


def test_load_grammar_reads_a_file(tmp_path):
    path = tmp_path / "commands.txt"
    path.write_text("good (morning|night)\n", encoding="utf-8")
    g = load_grammar(path)
    assert g.where == str(path) and [e.text for e in g.expansions] == ["good morning", "good night"]


BAD = [
    ("turn (on|) x", "g.txt:1: an alternative is empty; write [x] for an optional x instead of (x|)"),
    ("ok\nturn (on x", "g.txt:2: '(' is not closed; add ')'"),
    ("turn [on x", "g.txt:1: '[' is not closed; add ']'"),
    ("turn on ] x", "g.txt:1: ']' without its opening [; remove it or open it"),
    ("turn on) x", "g.txt:1: ')' without its opening (; remove it or open it"),
    ("turn on the <lamp>", "g.txt:1: slot <lamp> has no rule line; add '<lamp> = value | value'"),
    ("say <a>\n<a> = x | <b>\n<b> = <a> y", "g.txt:2: <a> refers to itself (through a -> b)"),
    (
        "from <number> to <number>",
        "g.txt:1: slot <number> is filled twice in one phrase; give each use its own rule line",
    ),
    ("[please]", "g.txt:1: this phrase can be said as no words at all; make a word not optional"),
    ("a = b", "g.txt:1: '=' outside a rule line; a rule line reads <name> = value | value"),
    ("say 50%", "g.txt:1: word '50%': words are letters, digits, ' and - (spell symbols out)"),
    ("say a > b", "g.txt:1: unexpected '>'; a line holds words, ( | ), [ ] and <slot>s"),
    ("caf\u00e9 au lait", "g.txt:1: word 'caf\u00e9': words are letters, digits, ' and - (spell symbols out)"),
    ("x\n<a> =", "g.txt:2: <a> = has no values; list them as <a> = one | two"),
    ("x\n<a> = b\n<a> = c", "g.txt:3: <a> is already defined on line 2; keep one rule line per slot"),
    ("say <a b>", "g.txt:1: unexpected '<'; a line holds words, ( | ), [ ] and <slot>s"),
    ("say <Bad-Name>", "g.txt:1: slot name <Bad-Name> must be letters, digits and _ (e.g. <number>)"),
    ("turn () on", "g.txt:1: empty (); put words in it or remove it"),
    ("# only a comment\n", "g.txt: no phrases; write one phrase per line, e.g. 'turn (on|off) the light'"),
    ("say " + "(" * 20 + "x" + ")" * 20, "g.txt:1: groups nest more than 16 deep; flatten them"),
    ("w " * (MAX_WORDS + 1), f"g.txt:1: a phrase of {MAX_WORDS + 1} words; at most {MAX_WORDS} are allowed"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[b[1].split(": ", 1)[1][:40] for b in BAD])
def test_bad_grammars_get_one_line_naming_file_line_and_fix(text, message):
    with pytest.raises(GrammarError) as e:
        parse_grammar(text, "g.txt")
    assert str(e.value) == message and "\n" not in str(e.value)


def test_a_grammar_expanding_past_the_limit_is_refused_before_expanding():
    """Seven 10-way groups would be 10 million phrases: refused by counting, at once."""
    group = "(" + "|".join(f"w{i}" for i in range(10)) + ")"
    with pytest.raises(GrammarError) as e:
        parse_grammar("ok\nsay " + " ".join([group] * 7), "g.txt")
    assert str(e.value) == (
        f"g.txt:2: the grammar expands to more than {MAX_EXPANSIONS} phrases by this line; "
        "use fewer alternatives or smaller slots"
    )


def test_many_lines_reaching_the_limit_together_name_the_line_that_crosses_it():
    lines = ["say <number> things"] * 100 + ["say the last thing"]
    with pytest.raises(GrammarError, match=r"^g\.txt:101: the grammar expands to more than"):
        parse_grammar("\n".join(lines), "g.txt")


def test_unreadable_too_large_and_non_utf8_files(tmp_path):
    with pytest.raises(GrammarError, match=r"missing\.txt: cannot read the grammar: No such file or directory$"):
        load_grammar(tmp_path / "missing.txt")
    big = tmp_path / "big.txt"
    big.write_bytes(b"say x\n" * 50_000)
    with pytest.raises(GrammarError, match=r"big\.txt: larger than 256 KiB; a grammar is a list of phrases$"):
        load_grammar(big)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(GrammarError, match=r"latin\.txt: not UTF-8 text \(byte 3\); save the grammar as UTF-8$"):
        load_grammar(latin)


_PIECES = ["turn", "on", "Off", "the", "(", ")", "[", "]", "|", "<number>", "<room>", "<room> =", "=", "#", "\n", " ",
           "<", ">", "what's", "wi-fi", "50%", "\u00e9", "\t"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=40).map(" ".join))
def test_any_text_is_a_grammar_or_one_line_error(text):
    try:
        g = parse_grammar(text, "g.txt")
    except GrammarError as e:
        assert str(e).startswith("g.txt") and "\n" not in str(e)
        return
    assert 1 <= len(g.expansions) <= MAX_EXPANSIONS
    assert all(1 <= len(e.words) <= MAX_WORDS and e.text == " ".join(e.words) for e in g.expansions)
    assert len({e.words for e in g.expansions}) == len(g.expansions)
