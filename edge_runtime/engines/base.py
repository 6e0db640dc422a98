"""The small base every engine implements.

An engine runs one artifact of a manifest. ``run`` takes and returns real-valued
arrays in the manifest's input / output order; quantized tensors are quantized
and dequantized here, from the artifact's own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..manifest import Quantization, TensorSpec
from ..schema import check, choice

if TYPE_CHECKING:
    from ..manifest import Artifact

# Default shared libraries of the LiteRT delegates on Linux boards.
DELEGATE_LIBRARIES = {
    "edgetpu": "libedgetpu.so.1",
    "gpu": "libtensorflowlite_gpu_delegate.so",
    "nnapi": "libnnapi_delegate.so",
}
DELEGATE_KINDS = ("xnnpack", *DELEGATE_LIBRARIES, "external")


@dataclass
class Delegate:
    """A LiteRT delegate to try: its kind, its library (default per kind) and its options; the
    ``[[<model section>.delegates]]`` tables of the config."""

    kind: str = field(default="xnnpack", metadata=choice(*DELEGATE_KINDS))
    library: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind == "external" and not self.library:
            raise ValueError('an external delegate needs library = "/path/to/libdelegate.so"')

    @property
    def lib(self) -> str | None:
        return self.library or DELEGATE_LIBRARIES.get(self.kind)


@dataclass
class Acceleration:
    """Where a model runs: LiteRT delegates and ONNX Runtime providers, each in preference order.
    Every model section of the config is one (its ``delegates``, ``providers`` and
    ``provider_options`` keys), and every engine is opened with one."""

    delegates: list[Delegate] = field(default_factory=list)
    providers: list[str] = field(
        default_factory=list,
        metadata=check(
            lambda v: all(p.endswith("ExecutionProvider") for p in v),
            "must be ONNX Runtime execution provider names, e.g. CUDAExecutionProvider",
        ),
    )
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)


class EngineError(Exception):
    """An engine or artifact that cannot run; the message is one line."""


def check_io(model: str, kind: str, wanted: list[TensorSpec], have: list[TensorSpec], by_name: bool = True) -> None:
    """The manifest's ``wanted`` tensors (inputs or outputs) are the model's own ``have``: the same
    count, dtypes and sizes (-1: a size the model leaves open), matched by name (``by_name=False``:
    by position, for a model whose tensor order is the contract)."""
    names = {t.name: t for t in have}
    if len(wanted) != len(have):
        raise EngineError(
            f"{model}: the manifest lists {len(wanted)} {kind}(s), the model has {len(have)} "
            f"({', '.join(names)}); re-convert the model"
        )
    for want, own in zip(wanted, have):
        own = names.get(want.name, own) if by_name else own
        if by_name and want.name not in names:
            raise EngineError(
                f"{model}: the manifest names {kind} {want.name!r}, which the model does not have "
                f"(has: {', '.join(names)}); re-convert the model"
            )
        if (
            want.dtype != own.dtype
            or len(want.shape) != len(own.shape)
            or any(o not in (-1, w) for w, o in zip(want.shape, own.shape))
        ):
            raise EngineError(
                f"{model}: {kind} {want.name!r} is {own.dtype} {own.shape} in the model but "
                f"{want.dtype} {want.shape} in the manifest; re-convert the model"
            )


@dataclass(frozen=True)
class Placement:
    """What an engine actually runs on, and why, if it is not what was asked."""

    engine: str  # "litert" | "onnx"
    device: str  # e.g. "cpu/xnnpack", "CPUExecutionProvider"
    fallback_reason: str | None = None


class Quantizer:
    """A tensor's real <-> stored conversion, its parameters as arrays once (streaming models call
    this for every input and output at every step)."""

    __slots__ = ("dtype", "real", "scale", "zero_point", "lo", "hi")

    def __init__(self, q: Quantization | None, dtype: str | np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.real = q is None or self.dtype.kind == "f"
        if q is not None and not self.real:
            info = np.iinfo(self.dtype)
            self.scale = np.asarray(q.scale, dtype=np.float32)
            self.zero_point = np.asarray(q.zero_point, dtype=np.float32)
            self.lo, self.hi = np.float32(info.min), np.float32(info.max)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if self.real:
            return np.asarray(x, dtype=self.dtype)
        y = np.round(np.asarray(x, np.float32) / self.scale + self.zero_point)
        return np.minimum(np.maximum(y, self.lo), self.hi).astype(self.dtype)

    def dequantize(self, x: np.ndarray) -> np.ndarray:
        if self.real or x.dtype.kind == "f":
            return np.asarray(x, dtype=np.float32)
        return (x.astype(np.float32) - self.zero_point) * self.scale


def quantize(x: np.ndarray, q: Quantization | None, dtype: str) -> np.ndarray:
    return Quantizer(q, dtype).quantize(x)


def dequantize(x: np.ndarray, q: Quantization | None) -> np.ndarray:
    return Quantizer(q, x.dtype).dequantize(x)


class Engine:
    """Base class: subclasses fill ``inputs``, ``outputs``, ``placement`` and ``_invoke``, and
    open an artifact of their ``format`` in :meth:`from_artifact`."""

    name = "base"  # the engine's name in the config (``engine = "..."``)
    format = ""  # the artifact format it runs (the manifest's ``format``)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    placement: Placement
    artifact: Artifact | None = None  # the manifest's artifact it runs (set when opened from a manifest)
    _quantizers: tuple[list[Quantizer], list[Quantizer]] | None = None

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, folder: Path, threads: int | None, accel: Acceleration, check_io: bool = True
    ) -> Engine:
        """Open ``artifact`` (its files below ``folder``) with the given threads and acceleration; its
        inputs and outputs checked against the model's own (``check_io=False``: taken from the model)."""
        raise NotImplementedError

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Real-valued inputs (manifest order) -> real-valued outputs (manifest order)."""
        if len(arrays) != len(self.inputs):
            raise EngineError(f"model takes {len(self.inputs)} inputs, got {len(arrays)}")
        if self._quantizers is None:
            self._quantizers = (
                [Quantizer(t.quantization, t.dtype) for t in self.inputs],
                [Quantizer(t.quantization, t.dtype) for t in self.outputs],
            )
        qin, qout = self._quantizers
        outs = self._invoke([q.quantize(a) for q, a in zip(qin, arrays)])
        return [q.dequantize(o) for q, o in zip(qout, outs)]

    def run_raw(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Inputs already in the tensors' own dtypes; outputs as the engine returns them."""
        return self._invoke(list(arrays))

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


E = TypeVar("E", bound=type[Engine])
REGISTRY: dict[str, type[Engine]] = {}  # artifact format -> engine class; filled by @register in each engine module


def register(cls: E) -> E:
    """Class decorator of an engine module: its engine opens every artifact of ``cls.format``."""
    REGISTRY[cls.format] = cls
    return cls
