"""Vision pipeline: manifest-driven preprocessing -> engine -> top-k scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engines import Acceleration, Engine, open_engine
from ..manifest import Manifest, ManifestError
from ..preprocess import image_to_input


@dataclass(frozen=True)
class Scored:
    label: str
    score: float


class ImageClassifier:
    """Classifies RGB uint8 frames with an image model's artifact."""

    def __init__(self, manifest: Manifest, folder: str | Path, engine: str = "auto", threads: int | None = None,
                 accel: Acceleration | None = None):
        if manifest.preprocessing.image is None:
            raise ManifestError(f"{manifest.name!r} is a {manifest.task} model, not an image model")
        self.manifest = manifest
        self.spec = manifest.preprocessing.image
        self.engine: Engine = open_engine(manifest, folder, engine, threads=threads, accel=accel)
        self.labels = manifest.labels

    def scores(self, rgb: np.ndarray) -> np.ndarray:
        """Class scores (dequantized) for one RGB uint8 image of any size."""
        x = image_to_input(rgb, self.spec)[None]
        return np.asarray(self.engine.run(x)[0], np.float32).reshape(-1)

    def top(self, rgb: np.ndarray, k: int = 3) -> list[Scored]:
        s = self.scores(rgb)
        idx = np.argsort(-s, kind="stable")[: max(1, k)]
        return [Scored(self.labels[i] if i < len(self.labels) else str(i), float(s[i])) for i in idx]
