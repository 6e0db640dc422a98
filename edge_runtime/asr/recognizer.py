"""Spoken phrases on a live stream: samples in, the grammar's phrases out.

``PhraseRecognizer(manifest, folder, grammar)`` joins the pieces of this package to a phoneme model made
by ``models.train_asr`` (a streaming CTC step model whose manifest carries ``metrics["asr"]``):

1. the step model runs over the stream like the keyword spotter's
   (:class:`~edge_runtime.pipelines.audio.KeywordSpotter`: the manifest's front end, explicit state,
   chunks of any size) and gives the posteriors of the blank and the phonemes every step;
2. the grammar (:mod:`.grammar`) is spelled with the lexicon shipped beside the model (:mod:`.lexicon`)
   into a prefix tree over the model's labels (:mod:`.prefix_tree`) once, when the recognizer is made;
3. :class:`~.decoder.GrammarDecoder` turns the log-posteriors into utterances; an accepted one is a
   :class:`Phrase` (text, slots, score, its start and end in seconds of the stream). The score it needs
   (``min_confidence``) is the caller's, else the model's operating point (``metrics.asr.min_confidence``,
   chosen on validation data by ``python -m models.asr_eval --tune --write``), else 0.5.

At the end of a stream :meth:`PhraseRecognizer.flush` plays the stream's own quiet floor until the
decoder's endpoint has passed, so a phrase that ends a file is reported too. Memory is bounded by the
spotter and the decoder (see theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..manifest import Manifest, ManifestError
from .decoder import DecoderOptions, GrammarDecoder, Result
from .grammar import Grammar
from .lexicon import load_lexicon
from .prefix_tree import PrefixTree

FLOOR = 1e-30  # probabilities are clipped here before the log (an int8 softmax output can be 0)


@dataclass(frozen=True)
class Phrase:
    """One recognised phrase; times in seconds from the stream start."""

    phrase: str
    slots: dict[str, str]
    score: float
    t_start: float
    t_end: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "phrase": self.phrase,
            "slots": self.slots,
            "score": round(self.score, 4),
            "t": round(self.t_end, 3),
            "t_start": round(self.t_start, 3),
        }


def asr_metrics(manifest: Manifest) -> dict[str, Any]:
    """The manifest's ``metrics["asr"]``, checked: a phrase model's blank, phonemes, lexicon and step."""
    asr = manifest.metrics.get("asr") if isinstance(manifest.metrics, dict) else None
    if not isinstance(asr, dict) or not {"blank", "lexicon", "step_s"} <= set(asr):
        raise ManifestError(
            f"{manifest.name!r} is not a phrase model (its manifest has no metrics.asr); "
            "use a model made by python -m models.train_asr"
        )
    if asr["blank"] not in manifest.labels:
        raise ManifestError(f"{manifest.name!r}: its labels have no blank {asr['blank']!r}; re-convert the model")
    return asr


class PhraseRecognizer:
    """Streaming recognition of ``grammar``'s phrases with a phrase model; see the module docstring."""

    def __init__(self, manifest: Manifest, folder: str | Path, grammar: Grammar, engine: str = "auto",
                 threads: int | None = None, min_confidence: float | None = None,
                 accel: Any = None) -> None:  # fmt: skip
        from ..pipelines.audio import KeywordSpotter

        asr = asr_metrics(manifest)
        lexicon = load_lexicon(Path(folder) / asr["lexicon"], [x for x in manifest.labels if x != asr["blank"]])
        self.tree = PrefixTree.build(grammar.expansions, lexicon, manifest.labels, asr["blank"], grammar.where)
        self.grammar, self.manifest = grammar, manifest
        self.labels = [e.text for e in grammar.expansions]  # what its decisions can say (fusion checks these)
        self.step_s = float(asr["step_s"])
        if min_confidence is None:  # the model's operating point (models.asr_eval --tune --write), else the default
            min_confidence = float(asr.get("min_confidence", DecoderOptions.min_confidence))
        self.min_confidence = min_confidence
        self.decoder = GrammarDecoder(self.tree, DecoderOptions(min_confidence=min_confidence))
        self.spotter = KeywordSpotter(manifest, folder, engine, threads, accel=accel)
        self.engine, self.p = self.spotter.engine, self.spotter.p  # where it runs; its audio preprocessing
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self.spotter.reset()
        self.decoder.reset()
        self._t0: float | None = None  # stream time of step 0's end

    def process(self, samples: np.ndarray, t0_samples: int | None = None) -> list[Phrase]:
        """Feed float32 mono samples at the model's rate (any chunk size); the phrases they complete."""
        results: list[Result] = []

        def step(scores: np.ndarray) -> None:  # decoded at once: the lanes hold their state through a phrase
            results.extend(self.decoder.push(np.log(np.maximum(scores, FLOOR))[None]))
            self.spotter.hold_resets = self.decoder.in_utterance

        ts, _ = self.spotter.posteriors(samples, t0_samples, on_step=step)
        if len(ts) and self._t0 is None:
            self._t0 = float(ts[0])  # the stream's first step
        return self._accepted(results)

    def flush(self) -> list[Phrase]:
        """End of the stream: the phrase under way, if any. Call :meth:`reset` before another stream."""
        o = self.decoder.options
        pad = self.spotter.quiet_floor(
            (o.end_steps + self.spotter.window_frames // self.spotter.frames_per_step + 2) * self.step_s
        )
        out = self.process(pad) if len(pad) else []
        return out + self._accepted(self.decoder.flush())

    def _accepted(self, results: list[Result]) -> list[Phrase]:
        t0 = self._t0 or 0.0
        return [
            Phrase(
                r.phrase, dict(r.slots), r.score, t0 + (r.t_start - 1) * self.step_s, t0 + (r.t_end - 1) * self.step_s
            )
            for r in results
            if r.accepted and r.phrase is not None
        ]
