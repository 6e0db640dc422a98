"""The vision pipeline: camera frames -> image classifier, the latest frame wins."""

from __future__ import annotations

import queue
import threading
from typing import Any

from ..events import Decision
from ..manifest import load
from .runner import DEFAULT_STALL_S, READ_TIMEOUT_S, Pipeline, accel_of, model_folder, register


@register
class VisionPipeline(Pipeline):
    """Camera frames -> image classifier, latest frame wins. Two stages, so preprocessing of the next frame
    overlaps inference of this one: a prepare thread takes the camera's latest frame, prepares it and
    hands it over through a slot of one, waiting while inference has not taken the last one. So it
    is one frame ahead and no work is spent on frames that are never classified: a camera faster
    than the model drops frames at the source (its latest frame wins there, counted as dropped)."""

    name, source_name, reads, order = "vision", "camera", "frames", 10
    model_kind = "vision"

    @classmethod
    def load_model(cls, section: Any) -> Any:
        from .vision import ImageClassifier

        man, folder = load(model_folder(section.model, cls.model_kind))
        return ImageClassifier(man, folder, section.engine, section.threads, accel_of(section))

    @classmethod
    def stall_of(cls, cfg: Any) -> float:
        return cfg.camera.stall_timeout_s if cfg.camera else DEFAULT_STALL_S

    def run(self, stop: threading.Event) -> None:
        slot: queue.Queue = queue.Queue(maxsize=1)
        done = threading.Event()
        prep = threading.Thread(
            target=self._prepare, args=(stop, slot, done), name=f"edge-{self.name}-prepare", daemon=True
        )
        prep.start()
        while not stop.is_set():
            self.stats.beat()
            try:
                frame, clf, x = slot.get(timeout=READ_TIMEOUT_S)
            except queue.Empty:
                if done.is_set():
                    break
                continue
            self._infer(frame, clf, x)
        prep.join(timeout=1.0)

    def _prepare(self, stop: threading.Event, slot: queue.Queue, done: threading.Event) -> None:
        while not stop.is_set():
            self.stats.beat("prepare")
            frame = self.source.latest(timeout=READ_TIMEOUT_S)
            if frame is None:
                if self.ended():
                    break
                continue
            clf = self.model  # one read: a reload may swap the model between frames
            item = (frame, clf, clf.prepare(frame.image))
            while not stop.is_set():  # until inference has taken the last one
                try:
                    slot.put(item, timeout=READ_TIMEOUT_S)
                    break
                except queue.Full:
                    self.stats.beat("prepare")
        done.set()

    def _infer(self, frame: Any, clf: Any, x: Any) -> None:
        section = self.loaded[1]  # read each time: a reload may swap it
        top = clf.ranked(clf.infer(x), section.top_k)
        t_dec = self.observe(frame.t_capture)
        if top and top[0].score >= section.threshold:
            self.stats.decisions += 1
            self.emit(
                Decision(
                    self.name,
                    top[0].label,
                    top[0].score,
                    frame.t_capture,
                    t_dec,
                    self.source_name,
                    {"top": [[t.label, round(t.score, 4)] for t in top]},
                )
            )
