"""The prefix tree (trie) of a grammar's phoneme sequences, over a model's output labels.

Every phrase of the grammar (:class:`~.grammar.Expansion`) is spelled with each combination of its words'
pronunciations (:class:`~.lexicon.Lexicon`) as a path of phonemes from the root; phrases that start
alike share their first nodes. An edge is a phoneme *and* whether it starts a word, so two phrases that
sound the same but split into words differently (``turn on`` / ``turnon``) stay apart and the phrase
and its slots come back from the node a path ends at (:attr:`PrefixTree.ends`).

Nodes are numbers; node 0 is the root. Limits: :data:`MAX_PRONUNCIATIONS` spellings per phrase and
:data:`MAX_NODES` nodes, each refused with one line that says what to cut.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from .grammar import Expansion, GrammarError
from .lexicon import Lexicon, LexiconError

MAX_PRONUNCIATIONS = 64  # spellings of one phrase (the product of its words' variants)
MAX_NODES = 500_000


@dataclass(frozen=True)
class PrefixTree:
    """Nodes with their children, the label each ends with and the phrases completed there."""

    labels: tuple[str, ...]  # the model's output labels, the blank among them
    blank: int  # index of the blank label
    expansions: tuple[Expansion, ...]
    children: tuple[tuple[tuple[int, int], ...], ...]  # node -> ((child, label index), ...)
    label: tuple[int, ...]  # node -> the label index its edge carries (-1: the root)
    depth: tuple[int, ...]  # node -> phonemes from the root
    ends: tuple[tuple[int, ...], ...]  # node -> indices of the expansions whose spelling ends here

    @property
    def size(self) -> int:
        return len(self.label)

    @classmethod
    def build(
        cls, expansions: Sequence[Expansion], lexicon: Lexicon, labels: Sequence[str], blank: str, what: str
    ) -> PrefixTree:
        """The tree of ``expansions`` spelled with ``lexicon`` over ``labels`` (``blank`` among them);
        ``what`` names the grammar in errors."""
        labels = tuple(labels)
        if blank not in labels:
            raise LexiconError(f"the model's labels have no blank {blank!r}; re-convert the model")
        index = {lab: i for i, lab in enumerate(labels)}
        prons = lexicon.pronounce(sorted({w for e in expansions for w in e.words}), what)
        for word, variants in prons.items():
            for pron in variants:
                bad = [p for p in pron if p not in index or p == blank]
                if bad:
                    raise LexiconError(
                        f"{lexicon.where}: {word!r}: phoneme {bad[0]!r} is not one the model outputs; "
                        "use the lexicon shipped with the model"
                    )
        edges: list[dict[tuple[int, bool], int]] = [{}]
        label, depth = [-1], [0]
        ends: list[list[int]] = [[]]
        for e_index, e in enumerate(expansions):
            spellings = itertools.islice(itertools.product(*(prons[w] for w in e.words)), MAX_PRONUNCIATIONS + 1)
            for n_spelling, spelling in enumerate(spellings):
                if n_spelling == MAX_PRONUNCIATIONS:
                    raise GrammarError(
                        f"{what}:{e.line}: {e.text!r} has more than {MAX_PRONUNCIATIONS} pronunciations; "
                        "keep fewer variants of its words in the lexicon"
                    )
                node = 0
                for pron in spelling:
                    for k, phoneme in enumerate(pron):
                        key = (index[phoneme], k == 0)
                        child = edges[node].get(key)
                        if child is None:
                            if len(label) >= MAX_NODES:
                                raise GrammarError(
                                    f"{what}: its phrases spell out to more than {MAX_NODES} phoneme nodes; "
                                    "use fewer or shorter phrases"
                                )
                            child = len(label)
                            edges[node][key] = child
                            edges.append({})
                            label.append(key[0])
                            depth.append(depth[node] + 1)
                            ends.append([])
                        node = child
                if e_index not in ends[node]:
                    ends[node].append(e_index)
        return cls(
            labels,
            index[blank],
            tuple(expansions),
            tuple(tuple((c, k[0]) for k, c in sorted(d.items())) for d in edges),
            tuple(label),
            tuple(depth),
            tuple(tuple(x) for x in ends),
        )
