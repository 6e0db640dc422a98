"""The audio pipeline: microphone (or WAV file) chunks -> keyword spotter, every chunk in order.

The speech pipeline (``asr_pipeline.py``) runs the same loop with a phrase recognizer."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from ..events import Decision
from ..manifest import load
from .runner import READ_TIMEOUT_S, Pipeline, accel_of, model_folder, register


@register
class AudioPipeline(Pipeline):
    """Microphone (or WAV file) chunks -> keyword spotter, every chunk in order. At the end of a file that
    does not loop the spotter is flushed, so a keyword that ends the file still counts."""

    name, source_name, reads, order = "audio", "microphone", "audio", 20
    model_kind = "kws"

    @classmethod
    def load_model(cls, section: Any) -> Any:
        from .audio import KeywordSpotter

        man, folder = load(model_folder(section.model, cls.model_kind))
        return KeywordSpotter(
            man,
            folder,
            section.engine,
            section.threads,
            section.threshold,
            section.smoothing_steps,
            section.refractory_s,
            accel=accel_of(section),
            false_accepts_per_hour=section.false_accepts_per_hour,
        )

    @staticmethod
    def event_names(model: Any) -> list[str]:
        from .audio import is_keyword

        return [lab for lab in model.labels if is_keyword(lab)]

    @staticmethod
    def extra_status(model: Any) -> dict[str, Any]:
        return {"operating_point": dataclasses.asdict(model.operating_point)}

    def run(self, stop: threading.Event) -> None:
        last = None  # the last chunk read
        while not stop.is_set():
            self.stats.beat()
            chunk = self.source.read(timeout=READ_TIMEOUT_S)
            if chunk is None:
                if self.ended():  # a file that does not loop: its last keyword completes after it
                    if last is not None:
                        model = self.model
                        self._decide(model, last, model.flush(), self.clock.monotonic_ns())
                    return
                continue
            model = self.model  # one read: a reload may swap the model between chunks
            found = model.process(chunk.samples, chunk.start_sample)
            self._decide(model, chunk, found, self.observe(chunk.t_capture))
            last = chunk

    def _decide(self, model: Any, chunk: Any, found: list, t_dec: int) -> None:
        """Decisions of what the model found up to ``chunk``; capture times count back from its end."""
        end_s = (chunk.start_sample + len(chunk.samples)) / model.p.sample_rate
        for x in found:
            label, score, t, extra = self.describe(x)
            t_cap = chunk.t_capture - int(max(0.0, end_s - t) * 1e9)
            self.stats.decisions += 1
            self.emit(Decision(self.modality, label, score, t_cap, t_dec, self.source_name, extra))

    @staticmethod
    def describe(det: Any) -> tuple[str, float, float, dict[str, Any]]:
        """A detection's label, score, stream time (s) and what its decision carries beside them."""
        return det.label, det.score, det.t, {"t_stream_s": round(det.t, 3)}
