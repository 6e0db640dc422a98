"""The grammar a user writes for spoken commands: text in, every phrase it allows out.

One phrase per line; ``#`` starts a comment; blank lines are ignored::

    turn (on|off) the [kitchen] light        # (a|b) alternatives, [x] optional
    set a timer for <number> minutes         # <name> a slot
    (switch|turn) on [the] (fan|heater)
    <room> = kitchen | living room | hall    # a slot's values: a rule line
    turn on the <room> light

* **Words** are letters, digits, ``'`` and ``-`` (``what's``, ``wi-fi``), matched case-insensitively
  (kept in lower case). Every word must be in the model's lexicon (:mod:`.lexicon`).
* **Alternatives** ``(a | b c | d)``: one of them, each a sequence of words and groups. A ``|`` outside
  any group separates alternatives of the whole line. An empty alternative is an error: ``[x]`` says
  "optional".
* **Optional** ``[x y]``: the sequence, or nothing.
* **Slots** ``<name>``: the words a rule line ``<name> = ...`` allows (alternatives separated by ``|``,
  groups and other slots allowed, never itself). The slot's value is the words spoken for it
  (``{"room": "living room"}``). Without a rule line, the built-in ``<number>`` is the numbers 1 to 100
  in English words (``one`` ... ``nineteen``, ``twenty``, ``twenty one`` ... ``ninety nine``,
  ``one hundred``), its value the digits (``{"number": "21"}``); a rule line named ``number`` replaces it.
  A slot is filled at most once per phrase (``from <number> to <number>`` is refused: give each
  its own rule).
* Groups nest (``turn (on | off [again])``) up to :data:`MAX_DEPTH` deep.

Expansion gives :class:`Expansion` (phrase text, slots, words), one per distinct word sequence; when two
lines allow the same words, the first line's reading is kept.

Limits, each refused with a one-line :class:`GrammarError` naming the file and line: a grammar of at
most :data:`MAX_GRAMMAR_BYTES` and :data:`MAX_LINES` phrase or rule lines, expanding to at most
:data:`MAX_EXPANSIONS` phrases (counted before expanding, so a grammar that would explode is refused
at once) of at most :data:`MAX_WORDS` words. Rule lines may come before or after the phrases that use
them.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import read_text

MAX_GRAMMAR_BYTES = 256 * 1024
MAX_LINES = 2000  # phrase and rule lines
MAX_EXPANSIONS = 10_000  # phrases the whole grammar may expand to
MAX_WORDS = 32  # words in one phrase
MAX_DEPTH = 16  # nested groups
MAX_LINE_CHARS = 2000

NUMBER = "number"  # the built-in slot


class GrammarError(Exception):
    """A grammar that cannot be used; the message is one line naming the file, the line and what to fix."""


@dataclass(frozen=True)
class Expansion:
    """One phrase the grammar allows."""

    text: str  # the words joined by single spaces
    slots: dict[str, str]  # slot name -> its value
    words: tuple[str, ...]
    line: int  # the grammar line it came from


# ------------------------------------------------------------------ syntax tree
# A sequence is a list of items; an item is a word, a group of alternative sequences or a slot.


@dataclass(frozen=True)
class _Word:
    text: str


@dataclass(frozen=True)
class _Group:
    options: tuple[list[_Item], ...]  # [x] is the group (x | <nothing>)


@dataclass(frozen=True)
class _Slot:
    name: str
    line: int


_Item = _Word | _Group | _Slot

_TOKEN = re.compile(r"\s*(?:(?P<punct>[()\[\]|])|<(?P<slot>[^<>\s]*)>|(?P<word>[^\s()\[\]|<>]+)|(?P<bad>\S))")
_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_RULE = re.compile(r"\s*<(?P<name>[^<>\s]*)>\s*=(?P<body>.*)")
_CLOSE = {"(": ")", "[": "]"}


class _Parser:
    """Recursive descent over one line: ``expr := seq ('|' seq)*``, ``seq := item*``,
    ``item := word | '(' expr ')' | '[' expr ']' | '<' name '>'``."""

    def __init__(self, text: str, fail) -> None:
        self.fail, self.tokens = fail, []
        for m in _TOKEN.finditer(text):
            if m.group("bad"):
                fail(f"unexpected {m.group('bad')!r}; a line holds words, ( | ), [ ] and <slot>s")
            if m.group("slot") is not None:
                name = m.group("slot").lower()
                if not _NAME.fullmatch(name):
                    fail(f"slot name <{m.group('slot')}> must be letters, digits and _ (e.g. <number>)")
                self.tokens.append(("slot", name))
            elif m.group("word"):
                word = m.group("word").lower()
                if not _WORD.fullmatch(word):
                    fail(f"word {m.group('word')!r}: words are letters, digits, ' and - (spell symbols out)")
                self.tokens.append(("word", word))
            else:
                self.tokens.append((m.group("punct"), ""))
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def expr(self, depth: int, line: int) -> list[list[_Item]]:
        options = [self.seq(depth, line)]
        while self.peek() == "|":
            self.i += 1
            options.append(self.seq(depth, line))
        if len(options) > 1 and not all(options):
            self.fail("an alternative is empty; write [x] for an optional x instead of (x|)")
        return options

    def seq(self, depth: int, line: int) -> list[_Item]:
        items: list[_Item] = []
        while (kind := self.peek()) is not None and kind not in ("|", ")", "]"):
            value = self.tokens[self.i][1]
            self.i += 1
            if kind == "word":
                items.append(_Word(value))
            elif kind == "slot":
                items.append(_Slot(value, line))
            else:  # ( or [
                if depth >= MAX_DEPTH:
                    self.fail(f"groups nest more than {MAX_DEPTH} deep; flatten them")
                options = self.expr(depth + 1, line)
                close = _CLOSE[kind]
                if self.peek() != close:
                    self.fail(f"{kind!r} is not closed; add {close!r}")
                self.i += 1
                if options == [[]]:
                    self.fail(f"empty {kind}{close}; put words in it or remove it")
                items.append(_Group(tuple(options) + (([],) if kind == "[" else ())))
        return items

    def parse(self, line: int) -> list[list[_Item]]:
        options = self.expr(0, line)
        if self.peek() is not None:
            self.fail(f"{self.peek()!r} without its opening {'(' if self.peek() == ')' else '['}; remove it or open it")
        return options


# ------------------------------------------------------------------ the grammar

_ONES = "one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def spoken_number(n: int) -> tuple[str, ...]:
    """1..100 in English words, as the built-in ``<number>`` slot says them (``21`` -> ``twenty one``)."""
    if not 1 <= n <= 100:
        raise ValueError(f"the built-in <number> slot covers 1 to 100, not {n}")
    if n == 100:
        return ("one", "hundred")
    if n < 10:
        return (_ONES[n - 1],)
    if n < 20:
        return (_TEENS[n - 10],)
    tens, ones = divmod(n, 10)
    return (_TENS[tens - 2],) + ((_ONES[ones - 1],) if ones else ())


_BUILTIN = {NUMBER: tuple((spoken_number(n), str(n)) for n in range(1, 101))}

# (words, slots) of one way to say a sequence; slots as a tuple of (name, value) pairs
_Reading = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]


@dataclass
class Grammar:
    """A parsed grammar; :attr:`expansions` lists every phrase it allows (see the module docstring)."""

    where: str
    expansions: tuple[Expansion, ...] = field(default=())

    @property
    def words(self) -> list[str]:
        """Every word the grammar uses, sorted."""
        return sorted({w for e in self.expansions for w in e.words})


def load_grammar(path: str | Path) -> Grammar:
    """Read and parse a grammar file; GrammarError (one line) if it cannot be read or used."""
    try:
        text = read_text(path, MAX_GRAMMAR_BYTES, "grammar", "a grammar is a list of phrases")
    except ValueError as e:
        raise GrammarError(str(e)) from None
    return parse_grammar(text, str(path))


def parse_grammar(text: str, where: str = "<grammar>") -> Grammar:
    """Parse grammar ``text``; ``where`` names it in errors (a file name, or e.g. a config key)."""
    if len(text.encode("utf-8", "replace")) > MAX_GRAMMAR_BYTES:
        raise GrammarError(f"{where}: larger than {MAX_GRAMMAR_BYTES // 1024} KiB; a grammar is a list of phrases")
    phrases: list[tuple[int, list[list[_Item]]]] = []
    rules: dict[str, tuple[int, list[list[_Item]]]] = {}
    for number, raw in enumerate(text.splitlines(), 1):

        def fail(msg: str, number: int = number) -> None:
            raise GrammarError(f"{where}:{number}: {msg}")

        line = raw.split("#", 1)[0]
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            fail(f"longer than {MAX_LINE_CHARS} characters; split it into several phrases")
        if len(phrases) + len(rules) >= MAX_LINES:
            fail(f"more than {MAX_LINES} phrase and rule lines; a grammar this large is not supported")
        m = _RULE.match(line)
        if m:
            name = m.group("name").lower()
            if not _NAME.fullmatch(name):
                fail(f"slot name <{m.group('name')}> must be letters, digits and _ (e.g. <number>)")
            if name in rules:
                fail(f"<{name}> is already defined on line {rules[name][0]}; keep one rule line per slot")
            body = _Parser(m.group("body"), fail).parse(number)
            if body == [[]]:
                fail(f"<{name}> = has no values; list them as <{name}> = one | two")
            rules[name] = (number, body)
        elif "=" in line:
            fail("'=' outside a rule line; a rule line reads <name> = value | value")
        else:
            phrases.append((number, _Parser(line, fail).parse(number)))
    if not phrases:
        raise GrammarError(f"{where}: no phrases; write one phrase per line, e.g. 'turn (on|off) the light'")
    return Grammar(where, tuple(_Expander(where, rules).expand_all(phrases)))


class _Expander:
    """Counts, checks and expands the phrases of one grammar against its rules."""

    def __init__(self, where: str, rules: dict[str, tuple[int, list[list[_Item]]]]) -> None:
        self.where, self.rules = where, rules
        self._counts: dict[str, int] = {}
        self._names: dict[str, frozenset[str]] = {}
        self._readings: dict[str, list[_Reading]] = {}
        self._visiting: list[str] = []

    def fail(self, line: int, msg: str) -> GrammarError:
        return GrammarError(f"{self.where}:{line}: {msg}")

    def _rule(self, slot: _Slot) -> tuple[int, list[list[_Item]]]:
        if slot.name in self._visiting:
            line = self.rules[slot.name][0]
            raise self.fail(line, f"<{slot.name}> refers to itself (through {' -> '.join(self._visiting)})")
        if slot.name not in self.rules:
            raise self.fail(slot.line, f"slot <{slot.name}> has no rule line; add '<{slot.name}> = value | value'")
        return self.rules[slot.name]

    # Each pass over the tree resolves a slot's rule once (memoised by name), in order, so the first error wins.
    def count(self, options: list[list[_Item]]) -> int:
        return sum(math.prod(self._count_item(it) for it in seq) for seq in options)

    def _count_item(self, item: _Item) -> int:
        if isinstance(item, _Word):
            return 1
        if isinstance(item, _Group):
            return self.count(list(item.options))
        if item.name not in self._counts:
            if item.name not in self.rules and item.name in _BUILTIN:
                self._counts[item.name] = len(_BUILTIN[item.name])
            else:
                _, body = self._rule(item)
                self._visiting.append(item.name)
                self._counts[item.name] = self.count(body)
                self._visiting.pop()
        return self._counts[item.name]

    def names(self, options: list[list[_Item]], line: int) -> frozenset[str]:
        """The slots a sequence can fill; a slot filled twice in one reading is refused."""
        found: set[str] = set()
        for seq in options:
            in_seq: set[str] = set()
            for item in seq:
                got = self._names_item(item, line)
                twice = in_seq & got
                if twice:
                    name = sorted(twice)[0]
                    raise self.fail(
                        line, f"slot <{name}> is filled twice in one phrase; give each use its own rule line"
                    )
                in_seq |= got
            found |= in_seq
        return frozenset(found)

    def _names_item(self, item: _Item, line: int) -> frozenset[str]:
        if isinstance(item, _Word):
            return frozenset()
        if isinstance(item, _Group):
            return self.names(list(item.options), line)
        if item.name not in self._names:
            if item.name not in self.rules and item.name in _BUILTIN:
                self._names[item.name] = frozenset([item.name])
            else:
                rule_line, body = self.rules[item.name]
                self._names[item.name] = self.names(body, rule_line) | {item.name}
        return self._names[item.name]

    def readings(self, options: list[list[_Item]]) -> list[_Reading]:
        out: list[_Reading] = []
        for seq in options:
            for parts in itertools.product(*(self._readings_item(it) for it in seq)):
                out.append((sum((w for w, _ in parts), ()), sum((s for _, s in parts), ())))
        return out

    def _readings_item(self, item: _Item) -> list[_Reading]:
        if isinstance(item, _Word):
            return [((item.text,), ())]
        if isinstance(item, _Group):
            return self.readings(list(item.options))
        if item.name not in self._readings:
            if item.name not in self.rules and item.name in _BUILTIN:
                self._readings[item.name] = [(w, ((item.name, v),)) for w, v in _BUILTIN[item.name]]
            else:
                body = self.rules[item.name][1]
                self._readings[item.name] = [(w, ((item.name, " ".join(w)),) + s) for w, s in self.readings(body)]
        return self._readings[item.name]

    def expand_all(self, phrases: list[tuple[int, list[list[_Item]]]]) -> list[Expansion]:
        total = 0
        for line, options in phrases:
            total += self.count(options)
            if total > MAX_EXPANSIONS:
                raise self.fail(
                    line,
                    f"the grammar expands to more than {MAX_EXPANSIONS} phrases by this line; "
                    "use fewer alternatives or smaller slots",
                )
        for line, options in phrases:
            self.names(options, line)
        out: dict[tuple[str, ...], Expansion] = {}
        for line, options in phrases:
            for words, slots in self.readings(options):
                if not words:
                    raise self.fail(line, "this phrase can be said as no words at all; make a word not optional")
                if len(words) > MAX_WORDS:
                    raise self.fail(line, f"a phrase of {len(words)} words; at most {MAX_WORDS} are allowed")
                if words not in out:
                    out[words] = Expansion(" ".join(words), dict(slots), words, line)
        return list(out.values())
