"""Vision pipeline: manifest-driven preprocessing -> engine -> top-k scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engines import Acceleration, Engine, open_engine
from ..engines.base import Quantizer
from ..manifest import Manifest, ManifestError
from ..preprocess import PixelTable, image_to_input, image_to_table_input


@dataclass(frozen=True)
class Scored:
    label: str
    score: float


class ImageClassifier:
    """Classifies RGB uint8 frames with an image model's artifact."""

    def __init__(
        self,
        manifest: Manifest,
        folder: str | Path,
        engine: str = "auto",
        threads: int | None = None,
        accel: Acceleration | None = None,
    ):
        if manifest.preprocessing.image is None:
            raise ManifestError(f"{manifest.name!r} is a {manifest.task} model, not an image model")
        self.manifest = manifest
        self.spec = manifest.preprocessing.image
        self.engine: Engine = open_engine(manifest, folder, engine, threads=threads, accel=accel)
        self.labels = manifest.labels
        n_scores = int(np.prod(self.engine.outputs[0].shape))
        if self.labels and len(self.labels) != n_scores:
            raise ManifestError(
                f"{manifest.name!r}: {len(self.labels)} labels for {n_scores} scores; re-convert "
                "the model with one label per output"
            )
        want, got = self.spec.input_shape(), list(self.engine.inputs[0].shape)
        if got != want:
            raise ManifestError(
                f"{manifest.name!r}: its image preprocessing makes {want} but the model takes {got}; "
                "re-convert the model"
            )
        # 8-bit or float32 input: a pixel table replaces normalise (+ quantize), the same numbers
        t = self.engine.inputs[0]
        q = t.quantization
        per_tensor = q is None or len(q.scale) == 1
        self._table = (
            PixelTable(self.spec, q, t.dtype) if per_tensor and t.dtype in ("int8", "uint8", "float32") else None
        )
        self._q_in = Quantizer(t.quantization, t.dtype)
        self._q_out = Quantizer(self.engine.outputs[0].quantization, self.engine.outputs[0].dtype)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 image of any size -> the engine's input tensor (batch 1, the engine's own dtype)."""
        if self._table is not None:
            return image_to_table_input(rgb, self.spec, self._table)[None]
        return self._q_in.quantize(image_to_input(rgb, self.spec)[None])

    def infer(self, x: np.ndarray) -> np.ndarray:
        """A prepared input -> class scores (dequantized)."""
        return self._q_out.dequantize(self.engine.run_raw(x)[0]).reshape(-1)

    def scores(self, rgb: np.ndarray) -> np.ndarray:
        """Class scores (dequantized) for one RGB uint8 image of any size."""
        return self.infer(self.prepare(rgb))

    def ranked(self, s: np.ndarray, k: int = 3) -> list[Scored]:
        k = max(1, min(k, s.size))
        part = np.argpartition(-s, k - 1)[:k]
        idx = part[np.argsort(-s[part], kind="stable")]
        return [Scored(self.labels[i] if i < len(self.labels) else str(i), float(s[i])) for i in idx]

    def top(self, rgb: np.ndarray, k: int = 3) -> list[Scored]:
        return self.ranked(self.scores(rgb), k)
