"""report.html: the conversion report of edge-convert as one self-contained page.

Float model vs its quantized artifacts: PASS/FAIL on the accuracy-drop limit, a
summary table (size, host latency, accuracy, agreement with float), plots as
embedded PNG, per-class accuracy, op histograms, the Edge TPU compiler result,
data sources and tool versions. No external assets and no JavaScript.

The page is rendered from the typed :class:`converters.results.Report` with the
Jinja2 template templates/report.html.j2 (autoescaped); a report.json dict is read
into one first. A figure that is None is shown as "—". matplotlib is optional:
without it the page has no plots.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edge_runtime.fileio import atomic_write

from .results import ArtifactResult, Report

__all__ = ["write_html"]

log = logging.getLogger(__name__)

DASH = "—"
MAX_PLOT_CLASSES = 40
FIG_SIZE = (6.0, 3.0)
FIG_DPI = 100
TEMPLATES = Path(__file__).resolve().parent / "templates"


# --- formatters (the template's filters) ----------------------------------------------
def _text(value: Any) -> str:
    """The text of any value; "—" for None or empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DASH
    return str(value)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return DASH if value is None else f"{value:{spec}}{suffix}"


def _pct(fraction: float | None, digits: int = 2) -> str:
    return DASH if fraction is None else f"{100 * fraction:.{digits}f}%"


def _mb(nbytes: float | None) -> str:
    return DASH if nbytes is None else f"{nbytes / 1e6:.2f}"


def _kl(value: float | None) -> str:
    if value is None:
        return DASH
    if value == 0:
        return "0"
    return f"{value:.2e}" if abs(value) < 1e-3 or abs(value) >= 1e3 else f"{value:.4f}"


def _pp(value: float | None) -> str:
    return DASH if value is None else f"{value:+.2f} pp".replace("-", "\u2212")


def _yes_no(value: bool | None) -> str:
    if value is None:
        return DASH
    return "yes" if value else "no"


def _cells(rows: Iterable[tuple], *classes: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Table rows of plain values, the i-th cell with the i-th css class."""
    return [("", [(v, c) for v, c in zip(row, classes)]) for row in rows]


def _kv_rows(items: Iterable[tuple[Any, Any]]) -> list[tuple[str, list[tuple[str, str]]]]:
    return _cells(((_text(k), _yes_no(v) if isinstance(v, bool) else _text(v)) for k, v in items), "", "")


def _histogram(hist: Mapping[str, int]) -> list[tuple[str, int]]:
    """Op counts, most frequent first."""
    return sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))


FILTERS = {
    "text": _text,
    "num": _fmt,
    "pct": _pct,
    "mb": _mb,
    "kl": _kl,
    "pp": _pp,
    "yes_no": _yes_no,
    "cells": _cells,
    "kv_rows": _kv_rows,
    "histogram": _histogram,
    "kv_rows_plain": lambda d: [(str(k), _text(v)) for k, v in d.items()],
    "edgetpu_op": lambda o: (_text(o.get("op")), _text(o.get("count")), _text(o.get("status"))),
}


# --- what the page shows, beyond the report's own fields -----------------------------------
def _labels(report: Report, arts: list[ArtifactResult]) -> list[str]:
    """Class names: the report's labels in order, then any class only the per-class figures know."""
    out: list[str] = []
    seen: set[str] = set()
    sources: list[Iterable] = [report.labels, report.float_ref.per_class_accuracy or {}]
    sources += [a.fidelity.per_class_accuracy or {} for a in arts]
    for src in sources:
        for name in src:
            if name not in seen:
                seen.add(name)
                out.append(name)
    return out


def _worst_classes(
    classes: list[str],
    float_pc: Mapping[str, float],
    quant_pcs: list[Mapping[str, float]],
    limit: int = MAX_PLOT_CLASSES,
) -> list[str]:
    """All classes if at most ``limit``; else the ``limit`` with the largest float-minus-int8 drop, worst first."""
    if len(classes) <= limit:
        return list(classes)

    def drop(c: str) -> float:
        f = float_pc.get(c)
        drops = [f - q for q in (pc.get(c) for pc in quant_pcs) if f is not None and q is not None]
        return max(drops) if drops else -math.inf

    order = sorted(range(len(classes)), key=lambda i: (-drop(classes[i]), i))
    return [classes[i] for i in order[:limit]]


# --- plots -----------------------------------------------------------------------
def _mpl_text(s: Any, width: int = 18) -> str:
    """Text safe for matplotlib: no mathtext ($), shortened."""
    t = str(s)
    if len(t) > width:
        t = t[: width - 1] + "…"
    return t.replace("$", r"\$")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def _tick_names(arts: list[ArtifactResult]) -> list[str]:
    names = []
    for a in arts:
        n = _mpl_text(a.id)
        if a.shipped:
            n += "\n(shipped)"
        names.append(n)
    return names


def _bar_labels(ax, bars, values: list[float | None], fmt: str) -> None:
    for bar, v in zip(bars, values):
        if v is not None:
            ax.annotate(
                format(v, fmt),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )


def _zoom_bottom(values: Iterable[float]) -> float:
    """Bottom of a percent axis: 0, or a multiple of 5 under the data when all of it is above 50%."""
    lo = min(values, default=0.0)
    return 0.0 if lo < 50 else max(0.0, 5 * math.floor((lo - 2) / 5))


def _legend_outside(ax, **kw) -> None:
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), **kw)


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


PRECISION_COLORS = {"float": "#8da0cb", "quant": "#66c2a5"}


def _precision_legend(ax, arts: list[ArtifactResult]) -> None:
    from matplotlib.patches import Patch

    kinds = {a.quantized for a in arts}
    handles = []
    if False in kinds:
        handles.append(Patch(color=PRECISION_COLORS["float"], label="float"))
    if True in kinds:
        handles.append(Patch(color=PRECISION_COLORS["quant"], label="quantized"))
    if handles:
        _legend_outside(ax, handles=handles)


def _plot_quality(plt, report: Report, arts: list[ArtifactResult]):
    acc = [a.fidelity.accuracy for a in arts]
    agr = [a.fidelity.agreement for a in arts]
    series = [
        (n, [None if v is None else 100 * v for v in vals], c)
        for n, vals, c in (("accuracy", acc, "#4c72b0"), ("agreement with float", agr, "#dd8452"))
        if any(v is not None for v in vals)
    ]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    width = 0.8 / len(series)
    x = list(range(len(arts)))
    for k, (name, vals, color) in enumerate(series):
        pos = [i - 0.4 + width * (k + 0.5) for i in x]
        bars = ax.bar(pos, _nan(vals), width, label=name, color=color)
        _bar_labels(ax, bars, vals, ".1f")
    ref = report.float_ref.accuracy
    if ref is not None and any(n == "accuracy" for n, _, _ in series):
        ax.axhline(100 * ref, color="#4c72b0", ls="--", lw=0.8, label="float accuracy")
    bottom = _zoom_bottom(v for _, vals, _ in series for v in vals if v is not None)
    ax.set_ylim(bottom, 101.5)
    ax.set_ylabel("%" if bottom == 0 else f"% (axis from {bottom:g})", fontsize=8)
    ax.set_xticks(x, _tick_names(arts))
    ax.set_title("Accuracy and agreement with float", fontsize=10)
    _legend_outside(ax)
    _style(ax)
    return fig


def _plot_latency(plt, arts: list[ArtifactResult]):
    med = [a.median_ms for a in arts]
    if all(v is None for v in med):
        return None
    p90 = [a.latency.p90 if a.latency else None for a in arts]
    up = [max(0.0, p - m) if (p is not None and m is not None) else 0.0 for m, p in zip(med, p90)]
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    colors = [PRECISION_COLORS["quant" if a.quantized else "float"] for a in arts]
    x = list(range(len(arts)))
    ax.bar(
        x,
        _nan(med),
        0.6,
        color=colors,
        yerr=[[0.0] * len(up), up],
        capsize=3,
        error_kw={"elinewidth": 0.8, "ecolor": "#444"},
    )
    for i, (m, u) in enumerate(zip(med, up)):  # above the p90 whisker
        if m is not None:
            ax.annotate(
                f"{m:.2f}", (i, m + u), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7
            )
    ax.margins(y=0.12)
    ax.set_xticks(x, _tick_names(arts))
    ax.set_ylabel("ms", fontsize=8)
    ax.set_title("Host latency: median, error bar to p90", fontsize=10)
    _precision_legend(ax, arts)
    _style(ax)
    return fig


def _plot_size(plt, arts: list[ArtifactResult]):
    size = [a.size_bytes for a in arts]
    if all(v is None for v in size):
        return None
    mb = [None if v is None else v / 1e6 for v in size]
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    colors = [PRECISION_COLORS["quant" if a.quantized else "float"] for a in arts]
    x = list(range(len(arts)))
    bars = ax.bar(x, _nan(mb), 0.6, color=colors)
    _bar_labels(ax, bars, mb, ".2f")
    ax.set_xticks(x, _tick_names(arts))
    ax.set_ylabel("MB", fontsize=8)
    ax.set_title("File size", fontsize=10)
    _precision_legend(ax, arts)
    _style(ax)
    return fig


def _plot_per_class(plt, report: Report, arts: list[ArtifactResult]):
    float_pc = report.float_ref.per_class_accuracy or {}
    quant = [(a, a.fidelity.per_class_accuracy or {}) for a in arts if a.quantized]
    quant = [(a, pc) for a, pc in quant if pc]
    if not float_pc and not quant:
        return None, ""
    classes = [c for c in _labels(report, arts) if c in float_pc or any(c in pc for _, pc in quant)]
    shown = _worst_classes(classes, float_pc, [pc for _, pc in quant])
    series = [("float", float_pc, "#8da0cb")] if float_pc else []
    palette = ["#66c2a5", "#fc8d62", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494"]
    series += [(a.id, pc, palette[i % len(palette)]) for i, (a, pc) in enumerate(quant)]
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    width = 0.8 / len(series)
    x = list(range(len(shown)))
    seen: list[float] = []
    for k, (name, pc, color) in enumerate(series):
        vals = [None if pc.get(c) is None else 100 * pc[c] for c in shown]
        seen += [v for v in vals if v is not None]
        ax.bar([i - 0.4 + width * (k + 0.5) for i in x], _nan(vals), width, label=_mpl_text(name, 24), color=color)
    ticks = [_mpl_text(c, 14) for c in shown]
    longest = max((len(t) for t in ticks), default=0)
    if len(shown) <= 12 and longest <= 8:
        ax.set_xticks(x, ticks)
    elif len(shown) <= 20:
        ax.set_xticks(x, ticks, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, ticks, rotation=90)
    ax.set_xlim(-0.6, len(shown) - 0.4)
    bottom = _zoom_bottom(seen)
    ax.set_ylim(bottom, 101.5)
    ax.set_ylabel("accuracy %" if bottom == 0 else f"accuracy % (axis from {bottom:g})", fontsize=8)
    _legend_outside(ax)
    title = "Per-class accuracy, float vs quantized"
    caption = "Per-class accuracy of the float model and each quantized artifact."
    if len(shown) < len(classes):
        title += f" ({len(shown)} of {len(classes)} classes)"
        caption = (
            f"The {len(shown)} classes (of {len(classes)}) with the largest float-minus-quantized drop, worst first."
        )
    ax.set_title(title, fontsize=10)
    _style(ax)
    ax.tick_params(axis="x", labelsize=7 if len(shown) > 20 else 8)
    return fig, caption


def _plots(report: Report, arts: list[ArtifactResult]) -> list[dict[str, str]] | str:
    """The plots as {name, png (base64), caption} or {name, error}; a note instead when there are none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "Plots are not included: matplotlib is not installed (pip install matplotlib)."

    jobs = [
        (
            "accuracy and agreement",
            lambda: (
                _plot_quality(plt, report, arts),
                "Top-1 accuracy on the eval data and top-1 agreement with the float model.",
            ),
        ),
        (
            "latency",
            lambda: (_plot_latency(plt, arts), "Median host latency per inference; the error bar reaches p90."),
        ),
        ("file size", lambda: (_plot_size(plt, arts), "Artifact file size.")),
        ("per-class accuracy", lambda: _plot_per_class(plt, report, arts)),
    ]
    out = []
    for name, job in jobs:
        fig = None
        try:
            fig, caption = job()
            if fig is not None:
                out.append({"name": name, "png": _png(fig), "caption": caption})
        except Exception as e:  # a plot must never cost the report
            log.warning("report.html: the %s plot failed: %s", name, e)
            out.append({"name": name, "png": None, "error": str(e)})
        finally:
            if fig is not None:
                plt.close(fig)
    return out or "No measurements to plot."


# --- page sections ------------------------------------------------------------------
def _verdict(report: Report) -> tuple[str, str]:
    """(css class, text) of the banner."""
    return {True: ("pass", "PASS"), False: ("fail", "FAIL")}.get(report.passed, ("unknown", DASH))


def _gate_items(report: Report) -> list[tuple[str, Any]]:
    """(artifact id, verdict) for the banner; without a gate, still the quantized artifacts, figures unknown."""
    if report.gate:
        return list(report.gate.items())
    return [(a.id, None) for a in report.artifacts if a.quantized]


def _summary_notes(report: Report) -> list[str]:
    arts = report.artifacts
    conf = next((a.fidelity.confident_fraction for a in arts if a.fidelity.confident_fraction is not None), None)
    notes = [
        "Agreement: the artifact's top-1 equals the float model's top-1. Confident: float top-1 probability "
        f"≥ 0.5 ({DASH if conf is None else f'{100 * conf:.1f}%'} of the eval samples); uncertain: the rest. "
        "Top-k: the float top-1 is among the artifact's k best. Mean KL: KL(float ‖ artifact) of the output "
        "probabilities; top-k KL: the same over float's k best classes plus one bin for the rest, which "
        "int8's rounding of tiny probabilities to zero does not inflate. Size and speed-up are against the "
        "float artifact of the same format."
    ]
    runs = {(a.latency.runs, a.latency.threads) for a in arts if a.latency}
    runs.discard((None, None))
    if runs:
        txt = "; ".join(
            f"{DASH if r is None else f'{r:g}'} runs, {DASH if t is None else f'{t:g}'} "
            + ("thread" if t == 1 else "threads")
            for r, t in sorted(runs, key=lambda rt: tuple(-1 if v is None else v for v in rt))
        )
        notes.append(f"Latency measured on the conversion host ({txt}); the board will differ.")
    if _is_streaming(report):
        notes.append("Streaming: step agreement and max |Δscore| compare the per-step outputs over whole utterances.")
    for a in arts:
        if a.notes:
            notes.append(f"{a.id}: " + ", ".join(f"{_text(k)}: {_text(v)}" for k, v in a.notes.items()))
        if a.placement:
            notes.append(f"{a.id} ran on: {a.placement}")
    return notes


def _is_streaming(report: Report) -> bool:
    return report.task == "streaming-audio" or any(
        a.fidelity.step_agreement is not None or a.fidelity.step_score_max_abs_diff is not None
        for a in report.artifacts
    )


def _per_class_table(report: Report) -> dict[str, list] | None:
    """Headers and rows of the per-class accuracy table; None without labels."""
    float_pc = report.float_ref.per_class_accuracy or {}
    cols = [
        (a.id, a.fidelity.per_class_accuracy, a.quantized) for a in report.artifacts if a.fidelity.per_class_accuracy
    ]
    if report.has_labels is False or (not float_pc and not cols):
        return None
    classes = [c for c in _labels(report, report.artifacts) if c in float_pc or any(c in pc for _, pc, _ in cols)]
    headers = [("class", ""), ("float", "n")] + [(aid, "n") for aid, _, _ in cols] + [("largest quantized drop", "n")]
    rows = []
    for c in classes:
        f = float_pc.get(c)
        cells = [(c, ""), (_pct(f, 1), "n")]
        drops = []
        for _, pc, quant in cols:
            v = pc.get(c)
            worse = f is not None and v is not None and v < f - 1e-12
            cells.append((_pct(v, 1), "n worse" if worse else "n"))
            if quant and f is not None and v is not None:
                drops.append(100 * (f - v))
        cells.append((_pp(max(drops)) if drops else DASH, "n"))
        rows.append(("", cells))
    return {"headers": headers, "rows": rows}


def _page(report: Report) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    arts = report.artifacts
    return env.get_template("report.html.j2").render(
        r=report,
        arts=arts,
        DASH=DASH,
        verdict=_verdict(report),
        gate_items=_gate_items(report),
        has_accuracy=any(a.fidelity.accuracy is not None for a in arts),
        streaming=_is_streaming(report),
        summary_notes=_summary_notes(report),
        plots=_plots(report, arts),
        per_class=_per_class_table(report),
    )


def write_html(report: Report | Mapping[str, Any] | None, path: Path) -> None:
    """Render ``report`` as one self-contained HTML page at ``path``, atomically.

    ``report`` is the typed report, or a report.json dict (read with :meth:`Report.from_json`).
    """
    if not isinstance(report, Report):
        report = Report.from_json(report)
    text = _page(report)
    with atomic_write(Path(path), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
