"""The speech pipeline: microphone (or WAV file) chunks -> phrase recognizer, every chunk in order.

Its config section is ``[asr]`` (:class:`AsrConfig`); its decisions have ``modality = "speech"``, the
phrase as their label and ``phrase``, ``slots`` and ``t_stream_s`` beside it, so a fusion rule waits for
``{ modality = "speech", phrase = "turn on the light" }``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig
from ..manifest import load
from ..schema import SchemaError, check
from .audio_pipeline import AudioPipeline
from .runner import accel_of, model_folder, register

MAX_INLINE_PHRASES = 2000


@dataclass
class AsrConfig(ModelConfig):
    """``[asr]``: the phrase model, and the grammar as a file or inline phrases (one of the two)."""

    grammar: str | None = None  # a grammar file (edge_runtime.asr.grammar)
    phrases: list[str] = field(
        default_factory=list,
        metadata=check(lambda v: len(v) <= MAX_INLINE_PHRASES, f"at most {MAX_INLINE_PHRASES} phrases inline"),
    )
    # unset: the model's operating point (metrics.asr.min_confidence), else 0.5
    min_confidence: float | None = field(
        default=None, metadata=check(lambda v: v is None or 0 <= v <= 1, "must be between 0 and 1")
    )

    def __post_init__(self) -> None:
        if (self.grammar is None) == (not self.phrases):
            raise SchemaError(
                ("grammar",), 'give a grammar file (grammar = "commands.txt") or inline phrases, one of the two'
            )


def load_recognizer_grammar(section: AsrConfig) -> Any:
    from ..asr.grammar import load_grammar, parse_grammar

    if section.grammar is not None:
        return load_grammar(section.grammar)
    return parse_grammar("\n".join(section.phrases), "asr.phrases")


@register
class AsrPipeline(AudioPipeline):
    """Microphone (or WAV file) chunks -> phrase recognizer, every chunk in order (the audio pipeline's
    loop). At the end of a file that does not loop the recognizer is flushed, so a phrase that ends the
    file still counts."""

    name, modality, source_name, reads, order = "asr", "speech", "microphone", "audio", 30
    model_kind = "asr"
    config = AsrConfig

    @classmethod
    def load_model(cls, section: Any) -> Any:
        from ..asr.recognizer import PhraseRecognizer

        man, folder = load(model_folder(section.model, cls.model_kind))
        return PhraseRecognizer(
            man,
            folder,
            load_recognizer_grammar(section),
            section.engine,
            section.threads,
            section.min_confidence,
            accel_of(section),
        )

    @staticmethod
    def event_names(model: Any) -> list[str]:
        return []  # a grammar may allow thousands of phrases: none is announced as its own event

    @staticmethod
    def extra_status(model: Any) -> dict[str, Any]:
        return {"grammar": model.grammar.where, "phrases": len(model.labels), "min_confidence": model.min_confidence}

    @staticmethod
    def describe(ph: Any) -> tuple[str, float, float, dict[str, Any]]:
        return ph.phrase, ph.score, ph.t_end, {"phrase": ph.phrase, "slots": ph.slots, "t_stream_s": round(ph.t_end, 3)}
