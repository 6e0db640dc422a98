"""What one conversion found, as typed records: each artifact's measurements, the gate's verdicts, the report.

:mod:`converters.convert` builds them once. report.json is their JSON (:meth:`Report.to_json`, the
same keys as the fields, in the same order; a measurement that does not apply, such as accuracy
without labels, is left out), and report.html is rendered from them (:mod:`converters.report`).
:meth:`Report.from_json` reads a report.json back: a field that is missing or of the wrong type
becomes None (or empty), so a hand-edited or older report still renders.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Figures of each artifact the manifest keeps (manifest "metrics"), by report.json key.
METRIC_KEYS = (
    "accuracy",
    "agreement",
    "kl_mean",
    "size_bytes",
    "size_ratio",
    "latency_ms",
    "speedup_vs_float",
    "step_agreement",
    "step_score_max_abs_diff",
)


def _without_none(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in keys and v is None)}


@dataclass
class Latency:
    """Host latency of one inference, in milliseconds (:func:`converters.evaluate.latency_ms`)."""

    median: float | None = None
    p90: float | None = None
    runs: int | None = None
    threads: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Fidelity:
    """An artifact's outputs against the float model's (:func:`converters.evaluate.compare`).

    accuracy and per_class_accuracy need labels; the step figures, a streaming model.
    """

    agreement: float | None = None
    agreement_confident: float | None = None
    agreement_uncertain: float | None = None
    confident_fraction: float | None = None
    kl_mean: float | None = None
    top_k: int | None = None
    top_k_agreement: float | None = None
    kl_top_k: float | None = None
    accuracy: float | None = None
    per_class_accuracy: dict[str, float] | None = None
    step_agreement: float | None = None
    step_score_max_abs_diff: float | None = None
    step_score_mean_abs_diff: float | None = None

    OPTIONAL = (
        "accuracy",
        "per_class_accuracy",
        "step_agreement",
        "step_score_max_abs_diff",
        "step_score_mean_abs_diff",
    )

    def to_json(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), self.OPTIONAL)


@dataclass
class FloatReference:
    """The float model's own accuracy on the eval data (both None without labels)."""

    accuracy: float | None = None
    per_class_accuracy: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), ("accuracy", "per_class_accuracy"))


@dataclass
class ArtifactResult:
    """One converted model (shipped, a float reference, or a candidate tried) and what it measured."""

    id: str
    format: str | None = None
    precision: str | None = None
    shipped: bool | None = None
    file: str | None = None
    size_bytes: int | None = None
    latency: Latency | None = None
    placement: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    fidelity: Fidelity = field(default_factory=Fidelity)
    ops: dict[str, int] | None = None  # op histogram; report.json keeps it apart, under "ops"
    size_ratio: float | None = None  # against the float artifact of the same format
    speedup_vs_float: float | None = None
    candidate_file: Path | None = field(default=None, compare=False, repr=False)  # while a candidate

    @property
    def quantized(self) -> bool:
        """int8 (or int16x8): anything whose precision is not a float type."""
        if self.precision and self.precision.strip():
            return not self.precision.lower().startswith(("float", "fp"))
        return "int8" in self.id.lower()

    @property
    def median_ms(self) -> float | None:
        return self.latency.median if self.latency else None

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "format": self.format,
            "precision": self.precision,
            "shipped": self.shipped,
            "file": self.file,
            "size_bytes": self.size_bytes,
            "latency_ms": self.latency.to_json() if self.latency else None,
            "placement": self.placement,
            "notes": self.notes,
            **self.fidelity.to_json(),
        }
        if self.size_ratio is not None:
            out["size_ratio"] = self.size_ratio
        if self.speedup_vs_float is not None:
            out["speedup_vs_float"] = self.speedup_vs_float
        return out

    def metrics(self) -> dict[str, Any]:
        row = self.to_json()
        return {k: row.get(k) for k in METRIC_KEYS}


@dataclass
class Figure:
    """One figure the gate judges, and its limit."""

    value: float | None
    limit: float | None

    @property
    def over(self) -> bool:
        return self.value is not None and self.limit is not None and self.value > self.limit + 1e-9


@dataclass
class GateVerdict:
    """What the gate judged for one shipped artifact (:func:`converters.fidelity.fidelity_gate`)."""

    figures: dict[str, Figure]
    passed: bool | None
    drop_pp: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "figures": {k: {"value": f.value, "limit": f.limit} for k, f in self.figures.items()},
            "passed": self.passed,
            "drop_pp": self.drop_pp,
        }


@dataclass
class EdgeTpuResult:
    """What edgetpu_compiler made of the int8 TFLite model (--target coral)."""

    compiled: bool | None = None
    file: str | None = None
    message: str | None = None
    summary: str | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)  # {"op", "count", "status"}

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if v is not None and not (k == "ops" and not v and self.file is None)}


@dataclass
class Report:
    """The whole conversion: what went in, every artifact measured, the gate, and the tools (report.json)."""

    name: str | None = None
    created: str | None = None
    source: dict[str, Any] = field(default_factory=dict)  # file, format, sha256
    target: str | None = None
    task: str | None = None
    calibration_data: str | None = None
    eval_data: str | None = None
    calibration_method: dict[str, str] = field(default_factory=dict)  # by format
    fidelity_target: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    has_labels: bool | None = None
    float_ref: FloatReference = field(default_factory=FloatReference)
    artifacts: list[ArtifactResult] = field(default_factory=list)
    fastest_on_host: str | None = None
    max_accuracy_drop_pp: float | None = None
    accuracy_drop_pp: dict[str, float | None] = field(default_factory=dict)
    drop_basis: str | None = None
    gate: dict[str, GateVerdict] = field(default_factory=dict)
    max_kl: float | None = None
    passed: bool | None = None
    warnings: list[str] = field(default_factory=list)
    ops: dict[str, dict[str, int]] = field(default_factory=dict)
    edgetpu: EdgeTpuResult | None = None
    tools: dict[str, str] = field(default_factory=dict)

    def shipped(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.shipped]

    def first_failure(self) -> tuple[str, str, Figure] | None:
        """(artifact id, figure name, figure) of the first figure over its limit, or None."""
        for aid, g in self.gate.items():
            if g.passed is False:
                for name, f in g.figures.items():
                    if f.over:
                        return aid, name, f
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "float_ref":
                out["float"] = v.to_json()
            elif f.name == "artifacts":
                out["artifacts"] = [a.to_json() for a in v]
            elif f.name == "gate":
                out["gate"] = {aid: g.to_json() for aid, g in v.items()}
            elif f.name == "edgetpu":
                out["edgetpu"] = v.to_json() if v is not None else None
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_json(cls, data: Any) -> Report:
        """A report.json dict read back; what is missing or of the wrong type is None or empty."""
        return _Reader(data).report()


# --- reading report.json back ---------------------------------------------------------------
def _num(value: Any) -> float | None:
    """A finite number or None (bools, strings, NaN and inf are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _str(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and not value.strip()) else str(value)


def _map(value: Any) -> dict:
    return dict(value) if isinstance(value, Mapping) else {}


def _seq(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _nums(value: Any) -> dict[str, float]:
    return {str(k): v for k, v in ((k, _num(v)) for k, v in _map(value).items()) if v is not None}


class _Reader:
    def __init__(self, data: Any):
        self.d = _map(data)

    def report(self) -> Report:
        d = self.d
        cm = d.get("calibration_method")
        edgetpu = d.get("edgetpu")
        return Report(
            name=_str(d.get("name")),
            created=_str(d.get("created")),
            source=_map(d.get("source")),
            target=_str(d.get("target")),
            task=_str(d.get("task")),
            calibration_data=_str(d.get("calibration_data")),
            eval_data=_str(d.get("eval_data")),
            calibration_method=(
                {str(k): _str(v) for k, v in cm.items()}
                if isinstance(cm, Mapping)
                else {"all formats": _str(cm)}
                if cm is not None
                else {}
            ),
            fidelity_target=_map(d.get("fidelity_target")),
            labels=[str(x) for x in _seq(d.get("labels"))],
            has_labels=_bool(d.get("has_labels")),
            float_ref=self.float_ref(_map(d.get("float"))),
            artifacts=[
                self.artifact(a, i) for i, a in enumerate(a for a in _seq(d.get("artifacts")) if isinstance(a, Mapping))
            ],
            fastest_on_host=_str(d.get("fastest_on_host")),
            max_accuracy_drop_pp=_num(d.get("max_accuracy_drop_pp")),
            accuracy_drop_pp={str(k): _num(v) for k, v in _map(d.get("accuracy_drop_pp")).items()},
            drop_basis=_str(d.get("drop_basis")),
            gate={str(aid): self.verdict(_map(g)) for aid, g in _map(d.get("gate")).items()},
            max_kl=_num(d.get("max_kl")),
            passed=_bool(d.get("passed")),
            warnings=[
                str(w)
                for w in ([d["warnings"]] if isinstance(d.get("warnings"), str) else _seq(d.get("warnings")))
                if _str(w) is not None
            ],
            ops={str(aid): self.histogram(h) for aid, h in _map(d.get("ops")).items()},
            edgetpu=self.edgetpu(edgetpu) if edgetpu is not None else None,
            tools={str(k): str(v) for k, v in _map(d.get("tools")).items()},
        )

    @staticmethod
    def float_ref(d: dict) -> FloatReference:
        pc = d.get("per_class_accuracy")
        return FloatReference(
            accuracy=_num(d.get("accuracy")), per_class_accuracy=_nums(pc) if pc is not None else None
        )

    @staticmethod
    def artifact(a: Mapping, index: int) -> ArtifactResult:
        lat = a.get("latency_ms")
        fid = {f.name: _num(a.get(f.name)) for f in dataclasses.fields(Fidelity) if f.name != "per_class_accuracy"}
        pc = a.get("per_class_accuracy")
        return ArtifactResult(
            id=_str(a.get("id")) or f"artifact {index + 1}",
            format=_str(a.get("format")),
            precision=_str(a.get("precision")),
            shipped=_bool(a.get("shipped")),
            file=_str(a.get("file")),
            size_bytes=_num(a.get("size_bytes")),
            latency=Latency(**{k: _num(_map(lat).get(k)) for k in ("median", "p90", "runs", "threads")})
            if isinstance(lat, Mapping)
            else None,
            placement=_str(a.get("placement")),
            notes=_map(a.get("notes")),
            fidelity=Fidelity(**fid, per_class_accuracy=_nums(pc) if pc is not None else None),
            size_ratio=_num(a.get("size_ratio")),
            speedup_vs_float=_num(a.get("speedup_vs_float")),
        )

    @staticmethod
    def verdict(g: dict) -> GateVerdict:
        figures = {
            str(k): Figure(_num(_map(f).get("value")), _num(_map(f).get("limit")))
            for k, f in _map(g.get("figures")).items()
        }
        return GateVerdict(figures=figures, passed=_bool(g.get("passed")), drop_pp=_num(g.get("drop_pp")))

    @staticmethod
    def histogram(h: Any) -> dict[str, int]:
        return {str(op): int(n) for op, n in ((op, _num(n)) for op, n in _map(h).items()) if n is not None}

    @staticmethod
    def edgetpu(et: Any) -> EdgeTpuResult:
        e = _map(et)
        return EdgeTpuResult(
            compiled=_bool(e.get("compiled")),
            file=_str(e.get("file")),
            message=_str(e.get("message")),
            summary=_str(e.get("summary")),
            ops=[_map(o) for o in _seq(e.get("ops")) if isinstance(o, Mapping)],
        )
