"""LiteRT (TensorFlow Lite) engine: ai-edge-litert, else tflite_runtime, else tensorflow.lite.

Delegates are tried in the configured order (e.g. Edge TPU, then GPU); the
first that loads wins. XNNPACK on the CPU is the default and the fallback, and
a fallback is logged as a WARNING with its reason and reported in ``placement``.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..manifest import Quantization, TensorSpec
from .base import DELEGATE_KINDS, Delegate, Engine, EngineError, Placement, check_io, register

if TYPE_CHECKING:
    from ..manifest import Artifact
    from .base import Acceleration

log = logging.getLogger(__name__)


def litert_module():
    """(Interpreter, load_delegate) from the lightest LiteRT package that is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate  # type: ignore[no-redef]
        except ImportError:
            try:
                from tensorflow.lite import Interpreter  # type: ignore[no-redef]
                from tensorflow.lite.experimental import load_delegate  # type: ignore[no-redef]
            except ImportError:
                raise EngineError(
                    "no LiteRT package installed; pip install ai-edge-litert (or tflite-runtime)"
                ) from None
    return Interpreter, load_delegate


def _spec(detail: dict, name: str) -> TensorSpec:
    qp = detail.get("quantization_parameters") or {}
    scales = [float(s) for s in np.ravel(qp.get("scales", []))]
    zps = [int(z) for z in np.ravel(qp.get("zero_points", []))]
    q = (
        Quantization(
            scale=scales, zero_point=zps, axis=int(qp.get("quantized_dimension", 0)) if len(scales) > 1 else None
        )
        if scales
        else None
    )
    return TensorSpec(
        name=name, shape=[int(s) for s in detail["shape"]], dtype=np.dtype(detail["dtype"]).name, quantization=q
    )


@register
class LiteRTEngine(Engine):
    name = "litert"
    format = "tflite"

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, folder: Path, threads: int | None, accel: Acceleration, check_io: bool = True
    ) -> LiteRTEngine:
        """An Edge TPU compilation shipped beside the model (``*_edgetpu.tflite``) is used by that delegate."""
        edgetpu = next((folder / f.path for f in artifact.extra_files if f.path.endswith("_edgetpu.tflite")), None)
        return cls(
            folder / artifact.file.path,
            threads=threads,
            input_specs=artifact.inputs,
            output_specs=artifact.outputs,
            delegates=list(accel.delegates),
            edgetpu_model=edgetpu,
            check=check_io,
        )

    def __init__(
        self,
        model_path: str | Path,
        threads: int | None = None,
        input_specs: list[TensorSpec] | None = None,
        output_specs: list[TensorSpec] | None = None,
        delegates: list[Delegate] | None = None,
        edgetpu_model: str | Path | None = None,
        check: bool = True,
    ):
        """``input_specs`` / ``output_specs``: the manifest's tensors, in its order, checked against the
        model's own (``check=False``: only their order and names are taken)."""
        model = Path(model_path)
        self._interp, self.placement = self._open(
            model, threads, delegates or [], Path(edgetpu_model) if edgetpu_model else None
        )
        sigs = self._interp.get_signature_list()
        if sigs:
            key = next(iter(sigs))
            runner = self._interp.get_signature_runner(key)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            in_details = [(n, ins[n]) for n in sigs[key]["inputs"]]
            out_details = [(n, outs[n]) for n in sigs[key]["outputs"]]
        else:  # a model converted without signatures: tensor order is the contract
            in_details = [(d["name"], d) for d in self._interp.get_input_details()]
            out_details = [(d["name"], d) for d in self._interp.get_output_details()]
        for kind, specs, details in (("input", input_specs, in_details), ("output", output_specs, out_details)):
            if specs is not None and check:
                check_io(model.name, kind, specs, [_spec(d, n) for n, d in details], by_name=bool(sigs))
            by = dict(details)
            if specs is not None and sigs and all(t.name in by for t in specs):  # the manifest's order
                details[:] = [(t.name, by[t.name]) for t in specs]
        self.inputs = [_spec(d, n) for n, d in in_details]
        self.outputs = [_spec(d, n) for n, d in out_details]
        self._in_idx = [d["index"] for _, d in in_details]
        self._out_idx = [d["index"] for _, d in out_details]

    @staticmethod
    def _open(model: Path, threads: int | None, delegates: list[Delegate], edgetpu_model: Path | None):
        Interpreter, load_delegate = litert_module()
        reasons = []
        for d in delegates:
            if d.kind == "xnnpack":
                break  # the CPU path below
            if d.kind not in DELEGATE_KINDS or not d.lib:
                reasons.append(
                    f"{d.kind}: unknown delegate (use {', '.join(DELEGATE_KINDS)}; external needs a library)"
                )
                continue
            path = model
            if d.kind == "edgetpu":
                if edgetpu_model is None:
                    reasons.append(
                        "edgetpu: the artifact has no *_edgetpu.tflite (convert with --target coral "
                        "where edgetpu_compiler is installed)"
                    )
                    continue
                path = edgetpu_model
            try:
                # A missing or foreign library fails here, before LiteRT half-builds a delegate object.
                if not hasattr(ctypes.CDLL(d.lib), "tflite_plugin_create_delegate"):
                    reasons.append(
                        f"{d.kind}: {d.lib} is not a LiteRT delegate library (no tflite_plugin_create_delegate)"
                    )
                    continue
                delegate = load_delegate(d.lib, {k: str(v) for k, v in d.options.items()})
                interp = Interpreter(model_path=str(path), experimental_delegates=[delegate], num_threads=threads)
                interp.allocate_tensors()
            except (ValueError, RuntimeError, OSError, AttributeError) as e:
                reasons.append(f"{d.kind}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
                continue
            return interp, Placement("litert", f"{d.kind} ({d.lib})")
        try:
            interp = Interpreter(model_path=str(model), num_threads=threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EngineError(f"{model}: LiteRT cannot load this model ({str(e).splitlines()[0]})") from None
        reason = "; ".join(reasons) or None
        if reason:
            log.warning("%s: running on the CPU (XNNPACK) because %s", model.name, reason)
        return interp, Placement("litert", f"cpu/xnnpack threads={threads or 'default'}", reason)

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        for idx, a in zip(self._in_idx, arrays):
            self._interp.set_tensor(idx, a)
        self._interp.invoke()
        return [self._interp.get_tensor(idx).copy() for idx in self._out_idx]
