"""The converter's gate and search schedule, and the top-k KL, on hand-made figures (no TensorFlow)."""

from __future__ import annotations

import numpy as np

from converters.evaluate import kl_top_k, probabilities
from converters.fidelity import fidelity_gate, float_layer_counts
from converters.results import ArtifactResult, Fidelity, FloatReference


def _schedule(n: int, threshold: float, too_slow: float = float("inf")) -> list[int]:
    tried: list[int] = []
    for k in float_layer_counts(n, passes_at=lambda k: k >= threshold, stop_at=lambda k: k >= too_slow):
        tried.append(k)
    return tried


def test_float_layer_counts_double_then_halve_back():
    assert _schedule(65, 13) == [1, 2, 4, 8, 16, 12, 14]
    assert _schedule(65, 1) == [1]
    assert _schedule(65, float("inf")) == [1, 2, 4, 8, 16, 32]  # never more than half the ops
    assert _schedule(1, float("inf")) == [1]


def test_float_layer_counts_stop_doubling_past_the_latency_budget():
    assert _schedule(65, float("inf"), too_slow=8) == [1, 2, 4, 8]  # more float ops would only be slower
    assert _schedule(65, 7, too_slow=8) == [1, 2, 4, 8, 6, 7]  # faithful but slow: halved back towards fewer


def _row(id="tflite-int8", shipped=True, **kw):
    base = {"top_k": 5, "top_k_agreement": 1.0, "kl_top_k": 0.01, "agreement_confident": 1.0, "accuracy": 0.9}
    return ArtifactResult(id=id, shipped=shipped, fidelity=Fidelity(**{**base, **kw}))


def test_gate_without_labels_judges_confident_top_k_and_kl_not_overall_agreement():
    ok = fidelity_gate([_row(agreement=0.5)], FloatReference(), False, 1.0, 0.05)["tflite-int8"]
    assert ok.passed and set(ok.figures) == {
        "float top-1 outside top-5 (pp)",
        "top-k KL",
        "confident predictions changed (pp)",
    }
    for bad in (dict(top_k_agreement=0.98), dict(kl_top_k=0.06), dict(agreement_confident=0.95)):
        assert not fidelity_gate([_row(**bad)], FloatReference(), False, 1.0, 0.05)["tflite-int8"].passed, bad
    no_confident = fidelity_gate([_row(agreement_confident=None)], FloatReference(), False, 1.0, 0.05)["tflite-int8"]
    assert no_confident.passed and "confident predictions changed (pp)" not in no_confident.figures


def test_gate_with_labels_is_the_accuracy_drop():
    g = fidelity_gate(
        [_row(accuracy=0.885), _row(id="onnx-int8", accuracy=0.9)], FloatReference(accuracy=0.9), True, 1.0, 0.05
    )
    assert not g["tflite-int8"].passed and g["onnx-int8"].passed
    assert abs(g["tflite-int8"].drop_pp - 1.5) < 1e-9
    assert fidelity_gate([_row(shipped=False)], FloatReference(accuracy=0.9), True, 1.0, 0.05) == {}


def test_top_k_kl_ignores_the_tail_that_int8_rounds_to_zero():
    rng = np.random.default_rng(0)
    ref = probabilities(rng.normal(size=(50, 1000)) * 3)
    rounded = np.round(ref * 256) / 256  # an int8 softmax: most of the 1000 probabilities become 0
    full_kl = np.sum(ref * (np.log(ref) - np.log(probabilities(rounded))), axis=1).mean()
    top = kl_top_k(ref, probabilities(rounded), 5).mean()
    assert top < full_kl / 10
    assert kl_top_k(ref, ref, 5).max() < 1e-12
