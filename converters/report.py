"""report.html: the conversion report of edge-convert as one self-contained page.

Float model vs its quantized artifacts: PASS/FAIL on the accuracy-drop limit, a
summary table (size, host latency, accuracy, agreement with float), plots as
embedded PNG, per-class accuracy, op histograms, the Edge TPU compiler result,
data sources and tool versions. No external assets and no JavaScript.

The report dict is the one written as report.json; any key may be missing or
None (shown as "—"). matplotlib is optional: without it the page has no plots.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Mapping

from edge_runtime.fileio import atomic_write

__all__ = ["write_html"]

log = logging.getLogger(__name__)

DASH = "—"
MAX_PLOT_CLASSES = 40
FIG_SIZE = (6.0, 3.0)
FIG_DPI = 100

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       font-size: 14px; line-height: 1.4; color: #222; background: #fff; margin: 0; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 3px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
.meta { color: #555; margin: 0 0 12px; }
.banner { padding: 10px 14px; border-radius: 4px; margin: 8px 0 4px; border: 1px solid; }
.banner .verdict { font-size: 20px; font-weight: 700; margin-right: 10px; }
.banner.pass { background: #e9f6ec; border-color: #7cc08d; }
.banner.fail { background: #fdecea; border-color: #e08a80; }
.banner.unknown { background: #f4f4f4; border-color: #bbb; }
.banner ul { margin: 6px 0 0; padding-left: 20px; }
.over { color: #b3261e; font-weight: 600; }
.better { color: #1e7b34; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0; }
th, td { border: 1px solid #d5d5d5; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fastest td { background: #fff8df; }
.badge { display: inline-block; font-size: 11px; padding: 0 5px; border-radius: 3px; margin-left: 4px;
         background: #f0c94a; color: #222; white-space: nowrap; }
td.worse { color: #b3261e; }
.note { color: #555; font-size: 12.5px; margin: 4px 0; }
.warnings li { margin: 2px 0; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 12.5px; color: #555; }
.ops { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
code.hash { word-break: break-all; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 8px; white-space: pre-wrap; overflow-x: auto; }
"""


# --- small safe accessors and formatters ------------------------------------------
def _e(value: Any) -> str:
    """Escaped text of any value; "—" for None or empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DASH
    return html.escape(str(value))


def _dict(value: Any) -> dict:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return []


def _num(value: Any) -> float | None:
    """A finite number or None (bools, strings, NaN and inf are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    v = _num(value)
    return DASH if v is None else f"{v:{spec}}{suffix}"


def _pct(fraction: Any, digits: int = 2) -> str:
    v = _num(fraction)
    return DASH if v is None else f"{100 * v:.{digits}f}%"


def _mb(nbytes: Any) -> str:
    v = _num(nbytes)
    return DASH if v is None else f"{v / 1e6:.2f}"


def _kl(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    if v == 0:
        return "0"
    return f"{v:.2e}" if abs(v) < 1e-3 or abs(v) >= 1e3 else f"{v:.4f}"


def _pp(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    return f"{v:+.2f} pp".replace("-", "\u2212")


def _yes_no(value: Any) -> str:
    if value is None:
        return DASH
    return "yes" if value else "no"


def _is_quantized(art: Mapping) -> bool:
    """int8 (or int16x8) artifacts: anything whose precision is not a float type."""
    prec = art.get("precision")
    if isinstance(prec, str) and prec.strip():
        return not prec.lower().startswith(("float", "fp"))
    return "int8" in str(art.get("id", "")).lower()


def _art_id(art: Mapping, index: int) -> str:
    aid = art.get("id")
    return str(aid) if aid is not None and str(aid).strip() else f"artifact {index + 1}"


def _artifacts(report: Mapping) -> list[dict]:
    return [_dict(a) for a in _list(report.get("artifacts")) if isinstance(a, Mapping)]


def _float_twin(art: Mapping, arts: list[dict]) -> dict | None:
    fmt = art.get("format")
    if fmt is None:
        return None
    for other in arts:
        if other.get("format") == fmt and not _is_quantized(other) and other is not art:
            return other
    return None


def _size_ratio(art: Mapping, arts: list[dict]) -> float | None:
    v = _num(art.get("size_ratio"))
    if v is not None:
        return v
    if not _is_quantized(art):
        return 1.0 if _num(art.get("size_bytes")) is not None and art.get("format") is not None else None
    base = _float_twin(art, arts)
    a, b = _num(art.get("size_bytes")), _num(base.get("size_bytes")) if base else None
    return a / b if a is not None and b else None


def _speedup(art: Mapping, arts: list[dict]) -> float | None:
    v = _num(art.get("speedup_vs_float"))
    if v is not None:
        return v
    a = _num(_dict(art.get("latency_ms")).get("median"))
    if not _is_quantized(art):
        return 1.0 if a and art.get("format") is not None else None
    base = _float_twin(art, arts)
    b = _num(_dict(base.get("latency_ms")).get("median")) if base else None
    return b / a if a and b is not None else None


def _labels(report: Mapping, arts: list[dict]) -> list[str]:
    """Class names: report["labels"] in order, then any class only the per-class dicts know."""
    out: list[str] = []
    seen: set[str] = set()
    sources: list[Iterable] = [_list(report.get("labels")), _dict(_dict(report.get("float")).get("per_class_accuracy"))]
    sources += [_dict(a.get("per_class_accuracy")) for a in arts]
    for src in sources:
        for name in src:
            s = str(name)
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def _per_class(d: Any) -> dict[str, float]:
    return {str(k): v for k, v in _dict(d).items() if _num(v) is not None}


def _worst_classes(classes: list[str], float_pc: Mapping[str, float], quant_pcs: list[Mapping[str, float]],
                   limit: int = MAX_PLOT_CLASSES) -> list[str]:
    """All classes if at most ``limit``; else the ``limit`` with the largest float-minus-int8 drop, worst first."""
    if len(classes) <= limit:
        return list(classes)

    def drop(c: str) -> float:
        f = _num(float_pc.get(c))
        drops = [f - q for q in (_num(pc.get(c)) for pc in quant_pcs) if f is not None and q is not None]
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


def _tick_names(arts: list[dict]) -> list[str]:
    names = []
    for i, a in enumerate(arts):
        n = _mpl_text(_art_id(a, i))
        if a.get("shipped"):
            n += "\n(shipped)"
        names.append(n)
    return names


def _bar_labels(ax, bars, values: list[float | None], fmt: str) -> None:
    for bar, v in zip(bars, values):
        if v is not None:
            ax.annotate(format(v, fmt), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7)


def _zoom_bottom(values: Iterable[float]) -> float:
    """Bottom of a percent axis: 0, or a multiple of 5 under the data when all of it is above 50%."""
    lo = min(values, default=0.0)
    return 0.0 if lo < 50 else max(0.0, 5 * math.floor((lo - 2) / 5))


def _legend_outside(ax, **kw) -> None:
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), **kw)


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


PRECISION_COLORS = {"float": "#8da0cb", "quant": "#66c2a5"}


def _precision_legend(ax, arts: list[dict]) -> None:
    from matplotlib.patches import Patch

    kinds = {_is_quantized(a) for a in arts}
    handles = []
    if False in kinds:
        handles.append(Patch(color=PRECISION_COLORS["float"], label="float"))
    if True in kinds:
        handles.append(Patch(color=PRECISION_COLORS["quant"], label="quantized"))
    if handles:
        _legend_outside(ax, handles=handles)


def _plot_quality(plt, report: Mapping, arts: list[dict]):
    acc = [_num(a.get("accuracy")) for a in arts]
    agr = [_num(a.get("agreement")) for a in arts]
    series = [(n, [None if v is None else 100 * v for v in vals], c)
              for n, vals, c in (("accuracy", acc, "#4c72b0"), ("agreement with float", agr, "#dd8452"))
              if any(v is not None for v in vals)]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    width = 0.8 / len(series)
    x = list(range(len(arts)))
    for k, (name, vals, color) in enumerate(series):
        pos = [i - 0.4 + width * (k + 0.5) for i in x]
        bars = ax.bar(pos, _nan(vals), width, label=name, color=color)
        _bar_labels(ax, bars, vals, ".1f")
    ref = _num(_dict(report.get("float")).get("accuracy"))
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


def _plot_latency(plt, arts: list[dict]):
    med = [_num(_dict(a.get("latency_ms")).get("median")) for a in arts]
    if all(v is None for v in med):
        return None
    p90 = [_num(_dict(a.get("latency_ms")).get("p90")) for a in arts]
    up = [max(0.0, p - m) if (p is not None and m is not None) else 0.0 for m, p in zip(med, p90)]
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    colors = [PRECISION_COLORS["quant" if _is_quantized(a) else "float"] for a in arts]
    x = list(range(len(arts)))
    ax.bar(x, _nan(med), 0.6, color=colors, yerr=[[0.0] * len(up), up], capsize=3,
           error_kw={"elinewidth": 0.8, "ecolor": "#444"})
    for i, (m, u) in enumerate(zip(med, up)):  # above the p90 whisker
        if m is not None:
            ax.annotate(f"{m:.2f}", (i, m + u), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)
    ax.margins(y=0.12)
    ax.set_xticks(x, _tick_names(arts))
    ax.set_ylabel("ms", fontsize=8)
    ax.set_title("Host latency: median, error bar to p90", fontsize=10)
    _precision_legend(ax, arts)
    _style(ax)
    return fig


def _plot_size(plt, arts: list[dict]):
    size = [_num(a.get("size_bytes")) for a in arts]
    if all(v is None for v in size):
        return None
    mb = [None if v is None else v / 1e6 for v in size]
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    colors = [PRECISION_COLORS["quant" if _is_quantized(a) else "float"] for a in arts]
    x = list(range(len(arts)))
    bars = ax.bar(x, _nan(mb), 0.6, color=colors)
    _bar_labels(ax, bars, mb, ".2f")
    ax.set_xticks(x, _tick_names(arts))
    ax.set_ylabel("MB", fontsize=8)
    ax.set_title("File size", fontsize=10)
    _precision_legend(ax, arts)
    _style(ax)
    return fig


def _plot_per_class(plt, report: Mapping, arts: list[dict]):
    float_pc = _per_class(_dict(report.get("float")).get("per_class_accuracy"))
    quant = [(a, _per_class(a.get("per_class_accuracy"))) for a in arts if _is_quantized(a)]
    quant = [(a, pc) for a, pc in quant if pc]
    if not float_pc and not quant:
        return None, ""
    classes = [c for c in _labels(report, arts) if c in float_pc or any(c in pc for _, pc in quant)]
    shown = _worst_classes(classes, float_pc, [pc for _, pc in quant])
    series = [("float", float_pc, "#8da0cb")] if float_pc else []
    palette = ["#66c2a5", "#fc8d62", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494"]
    series += [(_art_id(a, i), pc, palette[i % len(palette)]) for i, (a, pc) in enumerate(quant)]
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    width = 0.8 / len(series)
    x = list(range(len(shown)))
    seen: list[float] = []
    for k, (name, pc, color) in enumerate(series):
        vals = [None if _num(pc.get(c)) is None else 100 * _num(pc.get(c)) for c in shown]
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
        caption = (f"The {len(shown)} classes (of {len(classes)}) with the largest float-minus-quantized drop, "
                   "worst first.")
    ax.set_title(title, fontsize=10)
    _style(ax)
    ax.tick_params(axis="x", labelsize=7 if len(shown) > 20 else 8)
    return fig, caption


def _plots_html(report: Mapping, arts: list[dict]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return '<p class="note">Plots are not included: matplotlib is not installed (pip install matplotlib).</p>'

    jobs = [
        ("accuracy and agreement", lambda: (_plot_quality(plt, report, arts),
                                            "Top-1 accuracy on the eval data and top-1 agreement with the float model.")),
        ("latency", lambda: (_plot_latency(plt, arts), "Median host latency per inference; the error bar reaches p90.")),
        ("file size", lambda: (_plot_size(plt, arts), "Artifact file size.")),
        ("per-class accuracy", lambda: _plot_per_class(plt, report, arts)),
    ]
    parts = []
    for name, job in jobs:
        fig = None
        try:
            fig, caption = job()
            if fig is None:
                continue
            data = _png(fig)
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)} plot">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        except Exception as e:  # a plot must never cost the report
            log.warning("report.html: the %s plot failed: %s", name, e)
            parts.append(f'<p class="note">The {html.escape(name)} plot failed: {html.escape(str(e))}</p>')
        finally:
            if fig is not None:
                plt.close(fig)
    if not parts:
        return '<p class="note">No measurements to plot.</p>'
    return '<div class="plots">' + "".join(parts) + "</div>"


# --- page sections ------------------------------------------------------------------
def _table(headers: list[tuple[str, str]], rows: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """headers: (escaped text, css class); rows: (tr class, [(escaped cell html, td class)])."""
    th = "".join(f'<th class="{c}">{h}</th>' if c else f"<th>{h}</th>" for h, c in headers)
    body = []
    for tr_cls, cells in rows:
        tds = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for v, c in cells)
        body.append(f'<tr class="{tr_cls}">{tds}</tr>' if tr_cls else f"<tr>{tds}</tr>")
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv_table(items: Iterable[tuple[Any, Any]]) -> str:
    rows = [("", [(_e(k), ""), (_e(v) if not isinstance(v, bool) else _yes_no(v), "")]) for k, v in items]
    if not rows:
        return f"<p>{DASH}</p>"
    return _table([("name", ""), ("value", "")], rows)


def _banner(report: Mapping, arts: list[dict]) -> str:
    passed = report.get("passed")
    cls, verdict = ("pass", "PASS") if passed is True else ("fail", "FAIL") if passed is False else ("unknown", DASH)
    gate = _dict(report.get("gate"))
    if not gate:  # still name the quantized artifacts, with unknown figures
        gate = {_art_id(a, i): {} for i, a in enumerate(arts) if _is_quantized(a)}
    items = []
    for aid, g in gate.items():
        figures = []
        for name, f in _dict(_dict(g).get("figures")).items():
            v, lim = _num(_dict(f).get("value")), _num(_dict(f).get("limit"))
            text = DASH if v is None else f"{v:.3g}"
            over = v is not None and lim is not None and v > lim + 1e-9
            figures.append(f"{_e(name)} <span class=\"{'over' if over else ''}\">{html.escape(text)}</span>"
                           f" (limit {DASH if lim is None else f'{lim:g}'})")
        items.append(f"<li>{_e(aid)}: {' · '.join(figures) or DASH}</li>")
    return (f'<div class="banner {cls}"><span class="verdict">{verdict}</span>'
            f"gate basis: {_e(report.get('drop_basis'))}"
            f"<ul>{''.join(items) or f'<li>{DASH}</li>'}</ul>"
            f'<div class="note">pp: percentage points against the float model; positive = worse.</div></div>')


def _summary(report: Mapping, arts: list[dict]) -> str:
    fl = _dict(report.get("float"))
    ref = f"<p>Float reference accuracy: <strong>{_pct(fl.get('accuracy'))}</strong>"
    if _num(fl.get("accuracy")) is None:
        ref += " (no labels: quality is agreement with the float model)" if report.get("has_labels") is False else ""
    ref += "</p>"
    if not arts:
        return ref + f"<p>No artifacts. {DASH}</p>"
    has_acc = any(_num(a.get("accuracy")) is not None for a in arts)
    streaming = report.get("task") == "streaming-audio" or any(
        _num(a.get(k)) is not None for a in arts for k in ("step_agreement", "step_score_max_abs_diff"))
    fastest = report.get("fastest_on_host")

    headers = [("artifact", ""), ("shipped", ""), ("size MB", "n"), ("size vs float", "n"), ("median ms", "n"),
               ("p90 ms", "n"), ("speed-up vs float", "n")]
    if has_acc:
        headers.append(("accuracy", "n"))
    headers += [("agreement", "n"), ("agreement confident", "n"), ("agreement uncertain", "n"),
                ("float top-1 in top-k", "n"), ("mean KL", "n"), ("top-k KL", "n")]
    if streaming:
        headers += [("step agreement", "n"), ("max |Δscore|", "n")]

    rows = []
    for i, a in enumerate(arts):
        aid = _art_id(a, i)
        lat = _dict(a.get("latency_ms"))
        is_fast = fastest is not None and str(fastest) == aid
        name = html.escape(aid) + ('<span class="badge">fastest on host</span>' if is_fast else "")
        ratio, spd = _size_ratio(a, arts), _speedup(a, arts)
        cells = [(name, ""), (_yes_no(a.get("shipped")), ""), (_mb(a.get("size_bytes")), "n"),
                 (_fmt(ratio, ".2f", "×"), "n"), (_fmt(lat.get("median"), ".3f"), "n"), (_fmt(lat.get("p90"), ".3f"), "n"),
                 (_fmt(spd, ".2f", "×"), "n")]
        if has_acc:
            cells.append((_pct(a.get("accuracy")), "n"))
        cells += [(_pct(a.get("agreement")), "n"), (_pct(a.get("agreement_confident")), "n"),
                  (_pct(a.get("agreement_uncertain")), "n"), (_pct(a.get("top_k_agreement")), "n"),
                  (_kl(a.get("kl_mean")), "n"), (_kl(a.get("kl_top_k")), "n")]
        if streaming:
            cells += [(_pct(a.get("step_agreement")), "n"), (_fmt(a.get("step_score_max_abs_diff"), ".4f"), "n")]
        rows.append(("fastest" if is_fast else "", cells))

    notes = []
    conf = next((_num(a.get("confident_fraction")) for a in arts if _num(a.get("confident_fraction")) is not None), None)
    notes.append("Agreement: the artifact's top-1 equals the float model's top-1. Confident: float top-1 probability "
                 f"≥ 0.5 ({DASH if conf is None else f'{100 * conf:.1f}%'} of the eval samples); uncertain: the rest. "
                 "Top-k: the float top-1 is among the artifact's k best. Mean KL: KL(float ‖ artifact) of the output "
                 "probabilities; top-k KL: the same over float's k best classes plus one bin for the rest, which "
                 "int8's rounding of tiny probabilities to zero does not inflate. Size and speed-up are against the "
                 "float artifact of the same format.")
    runs = {(_num(_dict(a.get("latency_ms")).get("runs")), _num(_dict(a.get("latency_ms")).get("threads"))) for a in arts}
    runs.discard((None, None))
    if runs:
        txt = "; ".join(f"{DASH if r is None else f'{r:g}'} runs, {DASH if t is None else f'{t:g}'} "
                        + ("thread" if t == 1 else "threads")
                        for r, t in sorted(runs, key=lambda rt: tuple(-1 if v is None else v for v in rt)))
        notes.append(f"Latency measured on the conversion host ({txt}); the board will differ.")
    if streaming:
        notes.append("Streaming: step agreement and max |Δscore| compare the per-step outputs over whole utterances.")
    for i, a in enumerate(arts):
        extra = _dict(a.get("notes"))
        if extra:
            kv = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in extra.items())
            notes.append(f"{html.escape(_art_id(a, i))}: {kv}")
        if a.get("placement") not in (None, ""):
            notes.append(f"{html.escape(_art_id(a, i))} ran on: {_e(a.get('placement'))}")
    notes_html = "".join(f'<p class="note">{n}</p>' for n in notes)
    return ref + _table(headers, rows) + notes_html


def _warnings(report: Mapping) -> str:
    w = report.get("warnings")
    items = [w] if isinstance(w, str) else _list(w)
    items = [x for x in items if x is not None and str(x).strip()]
    if not items:
        return ""
    return ("<h2>Warnings</h2><ul class=\"warnings\">" + "".join(f"<li>{_e(x)}</li>" for x in items) + "</ul>")


def _per_class_table(report: Mapping, arts: list[dict]) -> str:
    float_pc = _per_class(_dict(report.get("float")).get("per_class_accuracy"))
    cols = [(_art_id(a, i), _per_class(a.get("per_class_accuracy")), _is_quantized(a)) for i, a in enumerate(arts)]
    cols = [c for c in cols if c[1]]
    if report.get("has_labels") is False or (not float_pc and not cols):
        return '<p class="note">No labels: per-class accuracy is not available.</p>'
    classes = [c for c in _labels(report, arts) if c in float_pc or any(c in pc for _, pc, _ in cols)]
    headers = [("class", ""), ("float", "n")] + [(html.escape(aid), "n") for aid, _, _ in cols]
    headers.append(("largest quantized drop", "n"))
    rows = []
    for c in classes:
        f = _num(float_pc.get(c))
        cells = [(html.escape(c), ""), (_pct(f, 1), "n")]
        drops = []
        for _, pc, quant in cols:
            v = _num(pc.get(c))
            worse = f is not None and v is not None and v < f - 1e-12
            cells.append((_pct(v, 1), "n worse" if worse else "n"))
            if quant and f is not None and v is not None:
                drops.append(100 * (f - v))
        cells.append((_pp(max(drops)) if drops else DASH, "n"))
        rows.append(("", cells))
    return (_table(headers, rows)
            + '<p class="note">Red: below the float model on that class. Drop in percentage points, positive = worse.</p>')


def _ops(report: Mapping) -> str:
    ops = _dict(report.get("ops"))
    if not ops:
        return f"<p>{DASH}</p>"
    blocks = []
    for aid, hist in ops.items():
        h = _dict(hist)
        items = sorted(h.items(), key=lambda kv: (-(_num(kv[1]) or 0), str(kv[0])))
        total = sum(_num(v) or 0 for v in h.values())
        rows = [("", [(_e(op), ""), (_e(n), "n")]) for op, n in items]
        body = _table([("op", ""), ("count", "n")], rows) if rows else f"<p>{DASH}</p>"
        count = f' <span class="note">({total:g} ops)</span>' if rows else ""
        blocks.append(f"<div><h3>{_e(aid)}{count}</h3>{body}</div>")
    return '<div class="ops">' + "".join(blocks) + "</div>"


def _edgetpu(report: Mapping) -> str:
    et = report.get("edgetpu")
    if et is None:
        why = "no result recorded" if report.get("target") == "coral" else "runs for --target coral only"
        return f"<p>{DASH} ({why})</p>"
    et = _dict(et)
    out = [f"<p>Compiled: <strong>{_yes_no(et.get('compiled'))}</strong>"]
    if et.get("file"):
        out.append(f" · file: <code>{_e(et.get('file'))}</code>")
    out.append("</p>")
    if et.get("message"):
        out.append(f"<p>{_e(et.get('message'))}</p>")
    op_rows = [_dict(o) for o in _list(et.get("ops")) if isinstance(o, Mapping)]
    if op_rows:
        out.append(_table([("op", ""), ("count", "n"), ("status", "")],
                          [("", [(_e(o.get("op")), ""), (_e(o.get("count")), "n"), (_e(o.get("status")), "")])
                           for o in op_rows]))
    if et.get("summary"):
        out.append(f"<pre>{_e(et.get('summary'))}</pre>")
    rest = [(k, v) for k, v in et.items() if k not in ("compiled", "file", "message", "ops", "summary")]
    if rest:
        out.append(_kv_table(rest))
    return "".join(out)


def _sources(report: Mapping) -> str:
    """Data sources, calibration method, tools and versions, and the source model with its sha256."""
    def rows_table(rows: list[tuple[str, str]]) -> str:  # (plain label, escaped value html)
        return _table([("item", ""), ("value", "")], [("", [(html.escape(k), ""), (v, "")]) for k, v in rows])

    data = rows_table([
        ("calibration data", _e(report.get("calibration_data"))), ("eval data", _e(report.get("eval_data"))),
        ("eval labels", _yes_no(report.get("has_labels"))), ("target", _e(report.get("target"))),
        ("task", _e(report.get("task"))),
    ])
    cm = report.get("calibration_method")
    cm_items = list(_dict(cm).items()) if isinstance(cm, Mapping) else [("all formats", cm)]
    calib = rows_table([(str(k), _e(v)) for k, v in cm_items] or [("all formats", DASH)])
    src = _dict(report.get("source"))
    sha = src.get("sha256")
    source = rows_table([
        ("file", _e(src.get("file"))), ("format", _e(src.get("format"))),
        ("sha256", f'<code class="hash">{_e(sha)}</code>' if sha not in (None, "") else DASH),
    ])
    tools = _dict(report.get("tools"))
    return (f"<h2>Data sources</h2>{data}"
            f"<h2>Calibration method</h2>{calib}"
            f"<h2>Tools and versions</h2>{_kv_table(tools.items())}"
            f"<h2>Source model</h2>{source}")


def _page(report: Mapping) -> str:
    arts = _artifacts(report)
    name = report.get("name")
    title = f"edge-convert report: {name}" if name not in (None, "") else "edge-convert report"
    meta = " · ".join([f"created {_e(report.get('created'))}", f"target {_e(report.get('target'))}",
                       f"task {_e(report.get('task'))}"])
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
        f"<h1>{html.escape('edge-convert report: ')}{_e(name)}</h1>", f'<p class="meta">{meta}</p>',
        _banner(report, arts),
        "<h2>Artifacts</h2>", _summary(report, arts),
        _warnings(report),
        "<h2>Plots</h2>", _plots_html(report, arts),
        "<h2>Per-class accuracy</h2>", _per_class_table(report, arts),
        "<h2>Ops per artifact</h2>", _ops(report),
        "<h2>Edge TPU compiler</h2>", _edgetpu(report),
        _sources(report),
        "</main>", "</body>", "</html>", "",
    ]
    return "\n".join(parts)


def write_html(report: dict, path: Path) -> None:
    """Render ``report`` (the report.json dict) as one self-contained HTML page at ``path``, atomically."""
    from .results import Report

    if isinstance(report, Report):
        report = report.to_json()
    rep = report if isinstance(report, Mapping) else {}
    with atomic_write(Path(path), "w", encoding="utf-8", newline="\n") as f:
        f.write(_page(rep))
