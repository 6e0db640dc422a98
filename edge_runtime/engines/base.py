"""The small base every engine implements.

An engine runs one artifact of a manifest. ``run`` takes and returns real-valued
arrays in the manifest's input / output order; quantized tensors are quantized
and dequantized here, from the artifact's own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..manifest import Quantization, TensorSpec


class EngineError(Exception):
    """An engine or artifact that cannot run; the message is one line."""


@dataclass(frozen=True)
class Placement:
    """What an engine actually runs on, and why, if it is not what was asked."""

    engine: str  # "litert" | "onnx"
    device: str  # e.g. "cpu/xnnpack", "CPUExecutionProvider"
    fallback_reason: str | None = None


def quantize(x: np.ndarray, q: Quantization | None, dtype: str) -> np.ndarray:
    if q is None or np.dtype(dtype).kind == "f":
        return np.asarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    scale = np.asarray(q.scale, dtype=np.float32)
    zp = np.asarray(q.zero_point, dtype=np.float32)
    return np.clip(np.round(np.asarray(x, np.float32) / scale + zp), info.min, info.max).astype(dtype)


def dequantize(x: np.ndarray, q: Quantization | None) -> np.ndarray:
    if q is None or x.dtype.kind == "f":
        return np.asarray(x, dtype=np.float32)
    scale = np.asarray(q.scale, dtype=np.float32)
    zp = np.asarray(q.zero_point, dtype=np.float32)
    return (x.astype(np.float32) - zp) * scale


class Engine:
    """Base class: subclasses fill ``inputs``, ``outputs``, ``placement`` and ``_invoke``."""

    name = "base"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    placement: Placement

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Real-valued inputs (manifest order) -> real-valued outputs (manifest order)."""
        if len(arrays) != len(self.inputs):
            raise EngineError(f"model takes {len(self.inputs)} inputs, got {len(arrays)}")
        raw = [quantize(a, t.quantization, t.dtype) for a, t in zip(arrays, self.inputs)]
        outs = self._invoke(raw)
        return [dequantize(o, t.quantization) for o, t in zip(outs, self.outputs)]

    def run_raw(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Inputs already in the tensors' own dtypes; outputs as the engine returns them."""
        return self._invoke(list(arrays))

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError
