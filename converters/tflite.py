"""int8 (and 16x8) TFLite through the TFLite converter's full-integer post-training quantization."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .data import progress
from .errors import ConvertError
from .source import SourceModel, _quiet_tf

log = logging.getLogger(__name__)

BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


def convert(source: SourceModel, workdir: Path, out: Path, precision: str,
            samples: list[list[np.ndarray]] | None = None, io_dtype: str = "int8") -> None:
    """Write ``out``: float32, full-integer int8 or 16x8 TFLite of ``source``.

    ``samples`` are calibration examples, each a list of arrays (batch 1) in the
    source's input order; they are fed as dicts keyed by the signature's input
    names, never positionally.
    """
    _quiet_tf()
    import tensorflow as tf

    saved = source.saved_model(workdir)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if precision != "float32":
        names = [s.name for s in source.inputs]
        data = samples or []

        def representative():
            for ex in progress(data, f"calibrating TFLite {precision}"):
                yield {n: np.asarray(a, np.float32) for n, a in zip(names, ex)}

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        if precision == "int16x8":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int16
        else:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            dt = tf.uint8 if io_dtype == "uint8" else tf.int8
            conv.inference_input_type = conv.inference_output_type = dt
    try:
        blob = conv.convert()
    except Exception as e:  # ConverterError, ValueError, RuntimeError...
        raise ConvertError(f"{source.path}: the TFLite converter failed for {precision}: {_converter_reason(e)}") from None
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out)
    if precision != "float32":
        float_ops = float_compute_ops(out)
        if float_ops:
            out.unlink()
            raise ConvertError(f"{source.path}: full-integer {precision} was asked but these ops stay float: "
                               f"{', '.join(float_ops)}; replace them in the model or use --format onnx")


def _converter_reason(e: Exception) -> str:
    text = str(e)
    ops = sorted(set(re.findall(r"'(?:tf|tfl)\.(\w+)' op", text)))
    if ops:
        hint = "replace them with built-in layers"
        if any(o.startswith("TensorList") for o in ops):
            hint = "a recurrent layer left as a loop: unroll it (LSTM(unroll=True)) or export its streaming step model"
        return f"unsupported ops {', '.join(ops)}; {hint}"
    m = re.search(r"error: ([^\n]+)", text)
    reason = m.group(1) if m else (text.strip().splitlines() or [type(e).__name__])[0]
    return reason[:240]


def float_compute_ops(path: Path) -> list[str]:
    """Ops other than QUANTIZE / DEQUANTIZE that read or write float32 tensors."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    bad = set()
    for op in it._get_ops_details():
        if op["op_name"] in BOUNDARY_OPS:
            continue
        tensors = [i for i in [*op["inputs"], *op["outputs"]] if i >= 0]
        if any(dtypes.get(i) == np.float32 for i in tensors):
            bad.add(op["op_name"])
    return sorted(bad)


def op_histogram(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    counts: dict[str, int] = {}
    for op in it._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


def edgetpu_compile(model: Path, outdir: Path) -> dict:
    """Run edgetpu_compiler when it is on PATH; the summary says what maps to the Edge TPU."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        msg = ("edgetpu_compiler is not on PATH: the int8 model is Edge TPU-ready but not compiled; install "
               "the Edge TPU compiler (x86_64 Debian/Ubuntu package edgetpu-compiler) and re-run, or compile on the board's host")
        log.warning(msg)
        return {"compiled": False, "message": msg}
    proc = subprocess.run([exe, "-s", "-o", str(outdir), str(model)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConvertError(f"{model.name}: edgetpu_compiler failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    compiled = outdir / (model.stem + "_edgetpu.tflite")
    summary = proc.stdout
    mapped = re.findall(r"^(\w+)\s+(\d+)\s+(.*)$", summary, flags=re.M)
    return {"compiled": compiled.is_file(), "file": compiled.name, "summary": summary.strip(),
            "ops": [{"op": o, "count": int(c), "status": s.strip()} for o, c, s in mapped]}
