"""What the converter judges an int8 artifact by: the gate that refuses, and the target it aims for.

The gate (:func:`fidelity_gate`) refuses a conversion: with labels, by the accuracy drop; without,
by fidelity to float where it matters. The target is what the converter's search for a more
faithful int8 (bias correction, mixed precision, calibration methods) tries to reach before it
stops.
"""

from __future__ import annotations

from typing import Any

from .results import ArtifactResult, Figure, FloatReference, GateVerdict

# What the converter aims for before shipping int8 (beyond the gate, which only refuses): without labels,
# overall top-1 agreement with float and top-k KL, at no more than LATENCY_BUDGET x the full-integer latency.
TARGET_AGREEMENT = 0.90
TARGET_KL = 0.05
LATENCY_BUDGET = 1.25
# mixed precision leaves float only ops that each cost at most this share of the model's multiply-accumulates:
# a float op runs several times slower than its int8 form, so a few large ones would spend the latency budget
MAX_FLOAT_OP_SHARE = 1 / 32
FULL_INTEGER_TARGETS = ("coral", "android")  # the Edge TPU and NNAPI run whole graphs in integer only


def float_layer_counts(n: int, passes_at, stop_at=lambda k: False) -> Any:
    """How many ops to leave float, tried in turn: 1, 2, 4, ... up to half of them, then two halving
    steps between the last count that failed and the first that passed (``passes_at(k)``). The
    doubling ends early at a count that neither passes nor ``stop_at(k)`` allows more of (more
    float ops only cost more latency)."""
    lo, k = 0, 1
    while k <= max(1, n // 2):
        yield k
        if passes_at(k):
            break
        if stop_at(k):
            return
        lo, k = k, 2 * k
    else:
        return
    hi = k
    for _ in range(2):
        mid = (lo + hi) // 2
        if mid <= lo:
            return
        yield mid
        if passes_at(mid):
            hi = mid
        else:
            lo = mid


GATE_WITHOUT_LABELS = (
    "fidelity to float (no labels): agreement where float is confident, float's top-1 in the "
    "artifact's top-k, top-k KL; overall agreement is reported, not gated"
)


def fidelity_gate(
    rows: list[ArtifactResult], float_ref: FloatReference, labelled: bool, max_drop_pp: float, max_kl: float
) -> dict[str, GateVerdict]:
    """What the gate judged for each shipped artifact: the figures, their limits, and the verdict.

    With labels: the accuracy drop. Without: where float is confident, the share of predictions
    int8 changes; the share of examples whose float top-1 falls out of int8's top-k; and the
    top-k KL (:func:`converters.evaluate.kl_top_k`). Near-ties on out-of-domain data flip top-1
    under any rounding, so overall agreement is reported, not gated.
    """
    out = {}
    for r in rows:
        if not r.shipped:
            continue
        m = r.fidelity
        if labelled:
            figures = {"accuracy drop (pp)": Figure(100 * (float_ref.accuracy - m.accuracy), max_drop_pp)}
        else:
            figures = {
                f"float top-1 outside top-{m.top_k} (pp)": Figure(100 * (1 - m.top_k_agreement), max_drop_pp),
                "top-k KL": Figure(m.kl_top_k, max_kl),
            }
            if m.agreement_confident is not None:
                figures["confident predictions changed (pp)"] = Figure(100 * (1 - m.agreement_confident), max_drop_pp)
        out[r.id] = GateVerdict(
            figures=figures,
            passed=all(f.value <= f.limit + 1e-9 for f in figures.values()),
            drop_pp=max(f.value for k, f in figures.items() if k.endswith("(pp)")),
        )
    return out
