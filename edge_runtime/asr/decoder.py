"""Grammar-constrained CTC decoding of a stream of per-step log-posteriors into phrases.

``GrammarDecoder(tree, options)`` takes the step model's output, ``(steps, labels)`` natural-log
posteriors over the phonemes and the blank (the labels of the :class:`~.prefix_tree.PrefixTree`; each
step's probabilities must sum to 1 within :data:`LOG_SUM_TOLERANCE` nats, so probabilities or logits
passed by mistake are refused), in chunks of any size, and returns a :class:`Result` for every
utterance that ends:

1. **Utterances.** Between utterances the decoder idles on steps whose best label is the blank. The
   first step whose best label is a phoneme starts an utterance (``t_start``).
2. **Grammar paths.** A CTC prefix beam search whose prefixes are nodes of the prefix tree: each
   keeps the log-probability of all alignments of its phonemes so far ending in a blank and ending in
   its last phoneme; a step extends a prefix only along the tree's edges (a repeated phoneme needs a
   blank between), so only the grammar's phoneme sequences are ever scored. The best
   :attr:`DecoderOptions.beam` prefixes are kept each step.
3. **Out-of-grammar path.** The same prefix beam search without the tree -- a free phoneme loop,
   extending by the :attr:`DecoderOptions.loop_tokens` most likely phonemes of each step, keeping
   :attr:`DecoderOptions.loop_beam` prefixes -- scores the most likely phoneme sequence of any kind.
4. **Endpointing.** An utterance ends after :attr:`DecoderOptions.end_steps` blank steps, unless the
   best grammar path is a phrase begun and not completed that still scores ``min_confidence`` (a pause
   inside a phrase): then after :attr:`DecoderOptions.abandon_steps` blank steps. It ends at the latest
   after :attr:`DecoderOptions.max_steps` steps; :meth:`flush` ends it at the end of the stream.
5. **Decision.** The phrase is the grammar's most likely completed one (its spellings' probabilities
   summed). Its score compares it with the loop: with ``margin = log P(phrase) - log P(loop's best)``
   and ``n`` the phrase's phonemes, ``score = exp(min(margin, 0) / n)``, the geometric mean over its
   phonemes of how much less likely the phrase is than the best free sequence: 1 when the loop finds
   nothing better, falling for each phoneme the grammar had to force onto the audio. The utterance is
   ``accepted`` when a phrase completed and ``score >= min_confidence``; otherwise it is speech outside
   the grammar (``phrase`` still names the nearest phrase, if any completed, for evaluation).

Bounded: at most ``beam`` grammar and ``loop_beam`` loop prefixes live between steps, and the loop's
prefix table holds at most ``loop_beam * loop_tokens * max_steps`` entries, cleared with each
utterance; nothing else grows with the stream. Decoding is deterministic and step by step, so the
results do not depend on how the stream is cut into chunks. Times are step indices from the stream
start (the decoder knows no step duration); ``t_end`` is one past the utterance's last phoneme step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .prefix_tree import PrefixTree

NEG = -math.inf
MAX_BEAM = 256
MAX_LOOP_TOKENS = 16
MAX_UTTERANCE_STEPS = 10_000
LOG_SUM_TOLERANCE = 0.5  # nats a step's log-posteriors may sum away from 0 (quantized softmax outputs)


def _lae(a: float, b: float) -> float:
    """log(exp(a) + exp(b))."""
    if a < b:
        a, b = b, a
    if b == NEG:
        return a
    return a + math.log1p(math.exp(b - a))


@dataclass(frozen=True)
class DecoderOptions:
    beam: int = 64  # grammar prefixes kept per step
    loop_beam: int = 4  # free-loop prefixes kept per step
    loop_tokens: int = 3  # the loop extends by this many most likely phonemes of a step
    end_steps: int = 8  # blank steps that end an utterance (0.32 s at 25 steps/s) ...
    abandon_steps: int = 25  # ... or these many inside a phrase begun but not completed
    max_steps: int = 500  # steps an utterance may last (20 s at 25 steps/s)
    min_confidence: float = 0.5  # the score an utterance's phrase needs to be accepted

    def __post_init__(self) -> None:
        bounds = {
            "beam": (1, MAX_BEAM),
            "loop_beam": (1, MAX_BEAM),
            "loop_tokens": (1, MAX_LOOP_TOKENS),
            "end_steps": (1, MAX_UTTERANCE_STEPS),
            "abandon_steps": (1, MAX_UTTERANCE_STEPS),
            "max_steps": (1, MAX_UTTERANCE_STEPS),
        }
        for name, (lo, hi) in bounds.items():
            v = getattr(self, name)
            if not (isinstance(v, int) and lo <= v <= hi):
                raise ValueError(f"decoder option {name} must be a whole number from {lo} to {hi}, got {v!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"decoder option min_confidence must be from 0 to 1, got {self.min_confidence!r}")


@dataclass(frozen=True)
class Result:
    """One utterance: the nearest phrase of the grammar and whether it is accepted."""

    phrase: str | None  # the most likely completed phrase; None: no grammar path completed one
    slots: dict[str, str]
    score: float  # 0..1, see the module docstring
    accepted: bool  # phrase is not None and score >= min_confidence
    t_start: int  # step of the utterance's first phoneme
    t_end: int  # one past its last phoneme step
    margin: float = field(default=NEG)  # log P(phrase) - log P(loop's best), nats
    words: tuple[str, ...] = ()


_Beams = dict[int, tuple[float, float]]  # prefix -> (log P ending in blank, log P ending in its last label)


def _advance(
    beams: _Beams,
    lp: list[float],
    blank: int,
    last: Callable[[int], int],
    expand: Callable[[int], Iterable[tuple[int, int]]],
    keep: int,
) -> _Beams:
    """One CTC prefix-beam step: every prefix stays (blank, or its last label repeated) or grows by a
    label along ``expand``; the ``keep`` most likely prefixes are returned."""
    nb: dict[int, list[float]] = {}
    p_blank = lp[blank]
    for prefix, (pb, pnb) in beams.items():
        total = _lae(pb, pnb)
        k = last(prefix)
        cur = nb.setdefault(prefix, [NEG, NEG])
        cur[0] = _lae(cur[0], total + p_blank)
        if k >= 0:
            cur[1] = _lae(cur[1], pnb + lp[k])
        for child, label in expand(prefix):
            p = (pb if label == k else total) + lp[label]
            if p == NEG:
                continue
            nxt = nb.setdefault(child, [NEG, NEG])
            nxt[1] = _lae(nxt[1], p)
    scored = sorted(((_lae(pb, pnb), prefix) for prefix, (pb, pnb) in nb.items()), reverse=True)[:keep]
    return {prefix: (nb[prefix][0], nb[prefix][1]) for _, prefix in scored}


def _confidence(margin: float, phonemes: int) -> float:
    """exp(min(margin, 0) / phonemes): see the module docstring."""
    return math.exp(min(margin, 0.0) / max(1, phonemes))


def _best(beams: _Beams) -> tuple[float, int]:
    return max((_lae(pb, pnb), prefix) for prefix, (pb, pnb) in beams.items())


class GrammarDecoder:
    """Streaming decoding of log-posteriors into the grammar's phrases; see the module docstring."""

    def __init__(self, tree: PrefixTree, options: DecoderOptions | None = None) -> None:
        self.tree, self.options = tree, options or DecoderOptions()
        self.n_labels = len(tree.labels)
        self._phonemes = np.asarray([i for i in range(self.n_labels) if i != tree.blank])
        self._loop_k = min(self.options.loop_tokens, len(self._phonemes))
        self.reset()

    def reset(self) -> None:
        """Start a new stream: no utterance, the step clock at 0."""
        self._step = 0
        self._active = False
        self._grammar: _Beams = {}
        self._loop: _Beams = {}
        self._loop_last: list[int] = []
        self._loop_child: dict[tuple[int, int], int] = {}
        self._t_start = self._t_end = 0
        self._blank_run = 0

    @property
    def in_utterance(self) -> bool:
        return self._active

    @property
    def held(self) -> tuple[int, int, int]:
        """What the decoder holds now: grammar prefixes, loop prefixes and loop prefix-table entries."""
        return len(self._grammar), len(self._loop), len(self._loop_last)

    # ------------------------------------------------------------------ streaming
    def push(self, logprobs: np.ndarray) -> list[Result]:
        """Decode ``(steps, labels)`` log-posteriors (any number of steps); the utterances they end."""
        x = np.asarray(logprobs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_labels:
            raise ValueError(f"log-posteriors must be (steps, {self.n_labels}), got {x.shape}")
        if np.isnan(x).any():
            raise ValueError("log-posteriors contain NaN")
        if len(x):
            sums = np.logaddexp.reduce(x, axis=1)
            worst = float(sums[np.argmax(np.abs(sums))])
            if not abs(worst) <= LOG_SUM_TOLERANCE:
                raise ValueError(
                    f"log-posteriors must be natural logs of probabilities summing to 1 at each step (their "
                    f"log-sum-exp 0, got {worst:.3g}); pass the log of the model's softmax output"
                )
        out = []
        best = np.argmax(x, axis=1)
        for row, top in zip(x, best):
            r = self._one(row, int(top) == self.tree.blank)
            if r is not None:
                out.append(r)
        return out

    def flush(self) -> list[Result]:
        """End of the stream: the utterance under way, if any. Call :meth:`reset` before another stream."""
        return [self._end()] if self._active else []

    # ------------------------------------------------------------------ one step
    def _one(self, row: np.ndarray, is_blank: bool) -> Result | None:
        o = self.options
        if not self._active:
            if is_blank:
                self._step += 1
                return None
            self._start()
        lp = row.tolist()
        tree = self.tree
        self._grammar = _advance(
            self._grammar, lp, tree.blank, tree.label.__getitem__, tree.children.__getitem__, o.beam
        )
        k = self._loop_k
        top = self._phonemes[np.argpartition(-row[self._phonemes], k - 1)[:k]].tolist()
        self._loop = _advance(
            self._loop, lp, tree.blank, self._loop_last.__getitem__, lambda p: self._loop_grow(p, top), o.loop_beam
        )
        if is_blank:
            self._blank_run += 1
        else:
            self._blank_run, self._t_end = 0, self._step + 1
        self._step += 1
        if self._step - self._t_start >= o.max_steps:
            return self._end()
        if self._blank_run >= o.abandon_steps or (self._blank_run >= o.end_steps and not self._unfinished()):
            return self._end()
        return None

    def _unfinished(self) -> bool:
        """Whether the best grammar path is a phrase begun but not completed, and as likely as a phrase
        must be (a pause inside a phrase): then the end waits for ``abandon_steps``."""
        score, node = _best(self._grammar)
        if self.tree.ends[node]:
            return False
        return _confidence(score - _best(self._loop)[0], self.tree.depth[node]) >= self.options.min_confidence

    def _start(self) -> None:
        self._active = True
        self._grammar = {0: (0.0, NEG)}
        self._loop = {0: (0.0, NEG)}
        self._loop_last = [-1]
        self._loop_child = {}
        self._t_start = self._t_end = self._step
        self._blank_run = 0

    def _loop_grow(self, prefix: int, labels: list[int]) -> Iterable[tuple[int, int]]:
        for label in labels:
            child = self._loop_child.get((prefix, label))
            if child is None:
                child = self._loop_child[(prefix, label)] = len(self._loop_last)
                self._loop_last.append(label)
            yield child, label

    def _end(self) -> Result:
        tree, o = self.tree, self.options
        per_phrase: dict[int, float] = {}
        node_of: dict[int, int] = {}
        for node, (pb, pnb) in self._grammar.items():
            for e in tree.ends[node]:
                per_phrase[e] = _lae(per_phrase.get(e, NEG), _lae(pb, pnb))
                if e not in node_of or tree.depth[node] < tree.depth[node_of[e]]:
                    node_of[e] = node
        loop_best = _best(self._loop)[0]
        t_start, t_end = self._t_start, self._t_end
        self._active = False
        self._grammar, self._loop, self._loop_last, self._loop_child = {}, {}, [], {}
        if not per_phrase:
            return Result(None, {}, 0.0, False, t_start, t_end)
        score_g, e_best = max((s, -e) for e, s in per_phrase.items())
        e_best = -e_best
        margin = score_g - loop_best
        score = _confidence(margin, tree.depth[node_of[e_best]])
        exp = tree.expansions[e_best]
        return Result(
            exp.text, dict(exp.slots), round(score, 6), score >= o.min_confidence, t_start, t_end, margin, exp.words
        )
