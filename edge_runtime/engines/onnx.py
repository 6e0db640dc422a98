"""ONNX Runtime engine with execution providers in a preference order.

Sessions never spin: ONNX Runtime's thread pools busy-wait for the next piece
of work by default, which on a board that calls a small model every 20-40 ms
(or a camera model at a few frames per second) keeps a core pegged between the
calls. ``session.intra_op.allow_spinning`` and ``session.inter_op.allow_spinning``
are set to ``"0"``, so idle worker threads block. Measured on the shipped
models (2 cores, ``bench/idle_cpu.py``): the keyword model at 50 calls/s went
from 9-20 ms of process CPU per 0.4 ms call (the worker spun through most of
each 20 ms gap) to 0.5 ms, and the vision model at 5 fps from about 50 ms to
10 ms per frame. Spinning did not make the calls faster (vision at 5 and
15 fps: median call 13.5 and 14.9 ms spinning, 10.3 and 7.6 ms not), so
there is no setting to turn it back on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..manifest import TensorSpec
from .base import Engine, EngineError, Placement, check_io, register

if TYPE_CHECKING:
    from ..manifest import Artifact
    from .base import Acceleration

log = logging.getLogger(__name__)

ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(bool)": "bool",
}
DEFAULT_PROVIDERS = [
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "NnapiExecutionProvider",
    "CoreMLExecutionProvider",
    "XnnpackExecutionProvider",
    "CPUExecutionProvider",
]


def check_providers(names: list[str]) -> None:
    """Every name is an execution provider ONNX Runtime knows (built here or not); else EngineError.
    Without ONNX Runtime installed nothing can be checked (nor run on it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    unknown = [p for p in names if p not in ort.get_all_providers()]
    if unknown:
        raise EngineError(
            f"{unknown[0]!r} is not an ONNX Runtime execution provider (known: {', '.join(ort.get_all_providers())})"
        )


@register
class OnnxEngine(Engine):
    name = "onnx"
    format = "onnx"

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, folder: Path, threads: int | None, accel: Acceleration, check_io: bool = True
    ) -> OnnxEngine:
        return cls(
            folder / artifact.file.path,
            threads=threads,
            input_specs=artifact.inputs,
            output_specs=artifact.outputs,
            providers=list(accel.providers) or None,
            provider_options=accel.provider_options,
            check=check_io,
        )

    def __init__(
        self,
        model_path: str | Path,
        threads: int | None = None,
        providers: list[str] | None = None,
        input_specs: list[TensorSpec] | None = None,
        output_specs: list[TensorSpec] | None = None,
        provider_options: dict[str, dict[str, str]] | None = None,
        check: bool = True,
    ):
        self._sess, self.placement = _session(Path(model_path), threads, providers, provider_options or {})
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        if check:  # else (the converter describing a new file) only the names are taken
            for kind, specs, args in (("input", input_specs, ins), ("output", output_specs, outs)):
                if specs is not None:
                    check_io(Path(model_path).name, kind, specs, [_model_spec(a, -1) for a in args])
        # Quantization of the I/O lives in the manifest for ONNX (QDQ graphs take float I/O).
        by_name = {t.name: t for t in [*(input_specs or []), *(output_specs or [])]}
        self.inputs = [by_name.get(i.name) or _model_spec(i, 1) for i in ins]
        self.outputs = [by_name.get(o.name) or _model_spec(o, 1) for o in outs]
        self._in_names = [i.name for i in ins]
        self._out_names = [o.name for o in outs]

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self._sess.run(self._out_names, dict(zip(self._in_names, arrays)))


def _model_spec(arg, open_size: int) -> TensorSpec:
    """A session input or output as a TensorSpec; sizes the model leaves open become ``open_size``."""
    shape = [d if isinstance(d, int) and d > 0 else open_size for d in arg.shape]
    return TensorSpec(arg.name, shape, ORT_DTYPES.get(arg.type, arg.type))


def _session(model_path: Path, threads: int | None, providers: list[str] | None,
             provider_options: dict[str, dict[str, str]]):  # fmt: skip
    """An InferenceSession on the first of ``providers`` (default: the accelerators, then the CPU)
    that works here, never spinning, and where it ended up."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineError("ONNX Runtime is not installed; pip install 'edge-runtime[onnx]'") from None
    wanted = list(providers or DEFAULT_PROVIDERS)
    check_providers(wanted)
    available = ort.get_available_providers()
    use = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in use:
        use.append("CPUExecutionProvider")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    for pool in ("intra_op", "inter_op"):  # no busy-waiting between calls (module docstring)
        opts.add_session_config_entry(f"session.{pool}.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(
            str(model_path),
            sess_options=opts,
            providers=use,
            provider_options=[provider_options.get(p, {}) for p in use],
        )
    except Exception as e:  # onnxruntime raises its own exception types
        raise EngineError(f"{model_path}: ONNX Runtime cannot load this model ({str(e).splitlines()[0]})") from None
    actual = sess.get_providers()[0]
    reason = None
    if actual != wanted[0]:
        missing = wanted[: wanted.index(actual)] if actual in wanted else wanted
        why = ", ".join(
            f"{p} ({'not in this onnxruntime build' if p not in available else 'failed to initialise'})"
            for p in missing
        )
        reason = f"preferred providers unavailable: {why}"
        # Asked-for providers that are missing are a warning; the built-in preference list is only informative.
        level = logging.WARNING if providers else logging.INFO
        log.log(level, "%s: running on %s because %s", model_path.name, actual, reason)
    return sess, Placement("onnx", actual, reason)
