"""LiteRT (TensorFlow Lite) engine: ai-edge-litert, else tflite_runtime, else tensorflow.lite."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..manifest import Quantization, TensorSpec
from .base import Engine, EngineError, Placement

log = logging.getLogger(__name__)


def interpreter_class():
    """The LiteRT Interpreter class from the lightest package that is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            try:
                from tensorflow.lite import Interpreter  # type: ignore[no-redef]
            except ImportError:
                raise EngineError(
                    "no LiteRT package installed; pip install ai-edge-litert (or tflite-runtime)"
                ) from None
    return Interpreter


def _spec(detail: dict, name: str) -> TensorSpec:
    qp = detail.get("quantization_parameters") or {}
    scales = [float(s) for s in np.ravel(qp.get("scales", []))]
    zps = [int(z) for z in np.ravel(qp.get("zero_points", []))]
    q = Quantization(scale=scales, zero_point=zps, axis=int(qp.get("quantized_dimension", 0)) if len(scales) > 1 else None) if scales else None
    return TensorSpec(name=name, shape=[int(s) for s in detail["shape"]], dtype=np.dtype(detail["dtype"]).name, quantization=q)


class LiteRTEngine(Engine):
    name = "litert"

    def __init__(self, model_path: str | Path, threads: int | None = None,
                 input_names: list[str] | None = None, output_names: list[str] | None = None):
        Interpreter = interpreter_class()
        try:
            self._interp = Interpreter(model_path=str(model_path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EngineError(f"{model_path}: LiteRT cannot load this model ({str(e).splitlines()[0]})") from None
        sigs = self._interp.get_signature_list()
        if sigs:
            key = next(iter(sigs))
            runner = self._interp.get_signature_runner(key)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            in_names = input_names or list(sigs[key]["inputs"])
            out_names = output_names or list(sigs[key]["outputs"])
            in_details = [(n, ins[n]) for n in in_names]
            out_details = [(n, outs[n]) for n in out_names]
        else:  # a model converted without signatures: tensor order is the contract
            in_details = [(d["name"], d) for d in self._interp.get_input_details()]
            out_details = [(d["name"], d) for d in self._interp.get_output_details()]
        self.inputs = [_spec(d, n) for n, d in in_details]
        self.outputs = [_spec(d, n) for n, d in out_details]
        self._in_idx = [d["index"] for _, d in in_details]
        self._out_idx = [d["index"] for _, d in out_details]
        self.placement = Placement("litert", "cpu/xnnpack")

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        for idx, a in zip(self._in_idx, arrays):
            self._interp.set_tensor(idx, a)
        self._interp.invoke()
        return [self._interp.get_tensor(idx).copy() for idx in self._out_idx]

    def op_names(self) -> list[str]:
        """Names of the ops in the graph (used to check full-integer conversion)."""
        return [op["op_name"] for op in self._interp._get_ops_details()]
