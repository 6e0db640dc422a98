"""MSE calibration of ONNX activations: per tensor, the range with the least rounding and clipping error."""

from __future__ import annotations

import numpy as np
import pytest

from converters import onnx_quant
from tests.test_weight_rounding import _depthwise_then_pointwise


def _quantization_mse(x: np.ndarray, lo: float, hi: float, levels: int = 255) -> float:
    step = (hi - lo) / levels
    q = np.clip(np.round((x - lo) / step), 0, levels) * step + lo
    return float(np.mean((q - x) ** 2))


def _histogram(x: np.ndarray, bins: int = onnx_quant.HISTOGRAM_BINS):
    """As ONNX Runtime's histogram collector makes it: symmetric about zero over the largest magnitude."""
    t = np.abs(x).max()
    return (*np.histogram(x, bins, range=(-t, t)), float(x.min()), float(x.max()))


def test_a_long_tail_is_clipped_and_the_error_is_lower_than_min_max():
    x = np.maximum(np.random.default_rng(0).laplace(0, 1, 200_000), 0)  # ReLU of a long-tailed activation
    lo, hi = onnx_quant._least_error_range(*_histogram(x), levels=255, symmetric=False)
    assert lo == 0.0
    assert hi < 0.9 * x.max()
    assert _quantization_mse(x, lo, hi) < 0.95 * _quantization_mse(x, 0.0, float(x.max()))
    # with 4 levels (a 2-bit toy) the step's error dominates: far more of the tail is clipped
    lo4, hi4 = onnx_quant._least_error_range(*_histogram(x), levels=3, symmetric=False)
    assert hi4 < 0.5 * hi


def test_uniform_data_keeps_its_whole_range():
    x = np.random.default_rng(1).uniform(-3, 5, 100_000)
    lo, hi = onnx_quant._least_error_range(*_histogram(x), levels=255, symmetric=False)
    assert lo == pytest.approx(x.min(), rel=0.02) and hi == pytest.approx(x.max(), rel=0.02)


def test_symmetric_ranges_are_centred_on_zero():
    x = np.random.default_rng(2).normal(1, 1, 100_000)
    lo, hi = onnx_quant._least_error_range(*_histogram(x), levels=255, symmetric=True)
    assert lo == -hi and hi > 0


def test_an_all_zero_tensor_keeps_an_empty_range():
    x = np.zeros(1000)
    assert onnx_quant._least_error_range(*np.histogram(x, 16), 0.0, 0.0, 255, False) == (0.0, 0.0)


def _activation_step(path, tensor: str) -> tuple[float, int]:
    """The (scale, zero point) a QDQ model quantizes ``tensor`` with."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return float(inits[q.input[1]]), int(inits[q.input[2]])


def test_mse_calibration_reaches_onnx_runtime_and_rounds_held_out_data_closer(tmp_path):
    """A real ONNX Runtime QDQ model calibrated on long-tailed (Laplace) inputs: the input is quantized with the
    range mse_ranges chose, a finer step than min/max's, and held-out inputs lose less in that rounding."""
    src = tmp_path / "float.onnx"
    _depthwise_then_pointwise(src)
    rng = np.random.default_rng(3)
    samples = [[rng.laplace(0, 1, (1, 4, 8, 8)).astype(np.float32)] for _ in range(256)]
    held_out = rng.laplace(0, 1, (256, 4, 8, 8))
    lo, hi = onnx_quant.mse_ranges(src, ["x"], samples)["x"]
    steps, errors = {}, {}
    for method in ("minmax", onnx_quant.MSE):
        out = tmp_path / f"int8_{method}.onnx"
        onnx_quant.quantize_static(src, out, ["x"], samples, method=method, activations="uint8")
        scale, zero = steps[method] = _activation_step(out, "x")
        q = np.clip(np.round(held_out / scale) + zero, 0, 255)
        errors[method] = float(np.mean(((q - zero) * scale - held_out) ** 2))
    assert steps[onnx_quant.MSE][0] == pytest.approx((hi - lo) / 255, rel=1e-5)
    assert steps[onnx_quant.MSE][0] < 0.95 * steps["minmax"][0]
    assert errors[onnx_quant.MSE] < 0.95 * errors["minmax"]
