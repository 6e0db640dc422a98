"""converters.report.write_html: one self-contained, escaped, atomically written page."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from converters import report as report_mod
from converters.report import write_html

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
ROOT = Path(__file__).resolve().parents[1]

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    """Balanced tags (void elements aside), plus the tags and src values seen."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _check_html(text: str) -> _Checker:
    assert text.lstrip().lower().startswith("<!doctype html>")
    c = _Checker()
    c.feed(text)
    c.close()
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed: {c.stack}"
    for tag in ("html", "head", "title", "style", "body", "table"):
        assert tag in c.tags
    assert "script" not in c.tags
    # self-contained: every image inline, nothing fetched from elsewhere
    assert all(s.startswith("data:image/png;base64,") for s in c.srcs)
    for ref in ("<link", "http://", "https://", 'src="/', "url("):
        assert ref not in text
    return c


def _labeled_report() -> dict:
    labels = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "<b>nine</b>"]
    float_pc = dict(zip(labels, [1.0, 0.95, 0.972, 0.944, 0.986, 0.958, 1.0, 0.972, 0.917, 0.972]))
    tfl_pc = dict(zip(labels, [1.0, 0.95, 0.972, 0.944, 0.972, 0.958, 1.0, 0.944, 0.917, 0.972]))
    onx_pc = dict(zip(labels, [1.0, 0.975, 0.972, 0.944, 0.986, 0.958, 1.0, 0.972, 0.917, 0.972]))

    def art(aid, fmt, prec, shipped, size, ratio, med, p90, speed, agree, conf, unc, kl, acc, pc, **kw):
        return {
            "id": aid,
            "format": fmt,
            "precision": prec,
            "shipped": shipped,
            "file": f"{aid}.{fmt}",
            "size_bytes": size,
            "size_ratio": ratio,
            "latency_ms": {"median": med, "p90": p90, "runs": 200, "threads": 2},
            "speedup_vs_float": speed,
            "agreement": agree,
            "agreement_confident": conf,
            "agreement_uncertain": unc,
            "confident_fraction": 0.981,
            "kl_mean": kl,
            "accuracy": acc,
            "per_class_accuracy": pc,
            **kw,
        }

    return {
        "name": "digits-mobilenetv2",
        "created": "2026-11-27T16:40:00Z",
        "source": {
            "file": "digits.keras",
            "format": "keras",
            "sha256": "ab12f0c3e1d94b7a8c55e2f0d1b6a4c39e7f21d08b5a6c4e3f2a1b0c9d8e7f6a",
        },
        "target": "generic",
        "task": "image-classification",
        "calibration_data": "data/calib (200 images)",
        "eval_data": "data/eval (360 images)",
        "calibration_method": {"tflite": "minmax (the TFLite converter's only method)", "onnx": "minmax"},
        "labels": labels,
        "has_labels": True,
        "float": {"accuracy": 0.9667, "per_class_accuracy": float_pc},
        "artifacts": [
            art(
                "tflite-float32",
                "tflite",
                "float32",
                False,
                8_912_344,
                1.0,
                5.12,
                5.61,
                1.0,
                1.0,
                1.0,
                1.0,
                1.2e-7,
                0.9667,
                float_pc,
            ),
            art(
                "tflite-int8",
                "tflite",
                "int8",
                True,
                2_401_880,
                0.2695,
                2.74,
                3.02,
                1.869,
                0.9917,
                0.9943,
                0.8571,
                0.0031,
                0.9639,
                tfl_pc,
                placement="cpu",
            ),
            art(
                "onnx-float32",
                "onnx",
                "float32",
                False,
                8_840_112,
                1.0,
                0.35,
                0.41,
                1.0,
                1.0,
                1.0,
                1.0,
                0.0,
                0.9667,
                float_pc,
            ),
            art(
                "onnx-int8",
                "onnx",
                "int8",
                True,
                2_512_006,
                0.2842,
                0.57,
                0.66,
                0.614,
                0.9944,
                0.9972,
                0.8571,
                0.0024,
                0.9694,
                onx_pc,
                notes={"quantization": "static QDQ per-channel"},
            ),
        ],
        "fastest_on_host": "onnx-int8",
        "max_accuracy_drop_pp": 1.0,
        "accuracy_drop_pp": {"tflite-int8": 0.28, "onnx-int8": -0.28},
        "drop_basis": "labels",
        "gate": {
            "tflite-int8": {"figures": {"accuracy drop (pp)": {"value": 0.28, "limit": 1.0}}, "passed": True},
            "onnx-int8": {"figures": {"accuracy drop (pp)": {"value": -0.28, "limit": 1.0}}, "passed": True},
        },
        "passed": True,
        "warnings": ["onnx-int8 is slower than onnx-float32 on this host (0.57 ms vs 0.35 ms) & <check>"],
        "ops": {
            "tflite-int8": {
                "CONV_2D": 35,
                "DEPTHWISE_CONV_2D": 17,
                "ADD": 10,
                "MEAN": 1,
                "FULLY_CONNECTED": 1,
                "SOFTMAX": 1,
                "QUANTIZE": 1,
                "DEQUANTIZE": 1,
            },
            "onnx-int8": {
                "QuantizeLinear": 80,
                "DequantizeLinear": 160,
                "Conv": 52,
                "Add": 10,
                "GlobalAveragePool": 1,
                "Gemm": 1,
                "Softmax": 1,
            },
        },
        "edgetpu": {"compiled": False, "message": "edgetpu_compiler is not on PATH: the int8 model is Edge TPU-ready"},
        "tools": {"tensorflow": "2.21.0", "onnxruntime": "1.32.0", "edge-runtime": "0.1.0"},
    }


def _streaming_report() -> dict:
    """No labels, streaming, failed, and full of missing or None values."""

    def art(aid, fmt, prec, shipped, **kw):
        base = {
            "id": aid,
            "format": fmt,
            "precision": prec,
            "shipped": shipped,
            "size_bytes": None,
            "latency_ms": None,
            "agreement": None,
            "agreement_confident": None,
            "agreement_uncertain": None,
            "kl_mean": None,
            "step_agreement": None,
            "step_score_max_abs_diff": None,
        }
        base.update(kw)
        return base

    return {
        "name": "kws-crnn <stream>",
        "created": None,
        "source": None,
        "target": "coral",
        "task": "streaming-audio",
        "calibration_data": "data/calib (120 wav)",
        "eval_data": None,
        "calibration_method": None,
        "labels": None,
        "has_labels": False,
        "float": {},
        "artifacts": [
            art(
                "tflite-float32",
                "tflite",
                "float32",
                False,
                size_bytes=412_000,
                latency_ms={"median": 0.81, "p90": None, "runs": 300, "threads": 1},
                agreement=1.0,
                step_agreement=1.0,
                step_score_max_abs_diff=0.0,
                kl_mean=0.0,
            ),
            art(
                "tflite-int8",
                "tflite",
                "int8",
                True,
                size_bytes=118_500,
                latency_ms={"median": 0.44, "p90": 0.52, "runs": 300, "threads": 1},
                agreement=0.962,
                agreement_confident=0.981,
                agreement_uncertain=None,
                confident_fraction=0.93,
                kl_mean=0.0412,
                step_agreement=0.948,
                step_score_max_abs_diff=0.2113,
                step_score_mean_abs_diff=0.011,
            ),
            art("onnx-int8", "onnx", None, True, latency_ms={}),
            {"id": None},
        ],
        "fastest_on_host": None,
        "max_accuracy_drop_pp": 1.0,
        "accuracy_drop_pp": {"tflite-int8": 3.8, "onnx-int8": None},
        "drop_basis": "fidelity to float (no labels)",
        "gate": {
            "tflite-int8": {
                "figures": {
                    "confident predictions changed (pp)": {"value": 3.8, "limit": 1.0},
                    "top-k KL": {"value": 0.0412, "limit": 0.05},
                },
                "passed": False,
            },
            "onnx-int8": {"figures": {"top-k KL": {"value": None, "limit": 0.05}}, "passed": None},
        },
        "passed": False,
        "warnings": None,
        "ops": {"tflite-int8": None},
        "edgetpu": None,
        "tools": None,
    }


def _render(report: dict, tmp_path: Path, name: str = "report.html") -> str:
    out = tmp_path / name
    write_html(report, out)
    assert out.is_file()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != name)
    assert leftovers == [], f"temp files left behind: {leftovers}"
    return out.read_text(encoding="utf-8")


def test_labeled_report(tmp_path):
    rep = _labeled_report()
    before = copy.deepcopy(rep)
    text = _render(rep, tmp_path)
    assert rep == before, "write_html must not change the report"
    c = _check_html(text)
    for a in rep["artifacts"]:
        assert a["id"] in text
    assert "PASS" in text and "FAIL" not in text
    assert 'accuracy drop (pp) <span class="">0.28</span> (limit 1)' in text and "labels" in text
    assert "digits-mobilenetv2" in text
    # the label with markup is escaped, never raw
    assert "&lt;b&gt;nine&lt;/b&gt;" in text
    assert "<b>nine</b>" not in text
    assert "&lt;check&gt;" in text and "<check>" not in text
    assert "fastest on host" in text
    # summary numbers: size MB with 2 decimals, ratio, latency, percentages
    assert "8.91" in text and "2.40" in text and "0.27×" in text and "1.87×" in text
    assert "96.67%" in text and "99.17%" in text
    assert "static QDQ per-channel" in text
    assert "QuantizeLinear" in text and "DEPTHWISE_CONV_2D" in text
    assert rep["source"]["sha256"] in text
    assert "edgetpu_compiler is not on PATH" in text
    assert "2.21.0" in text and "minmax" in text
    if HAS_MPL:
        assert len(c.srcs) == 4, "accuracy, latency, size and per-class plots"
        assert text.count("data:image/png;base64,") == 4


def test_streaming_report_without_labels(tmp_path):
    rep = _streaming_report()
    text = _render(rep, tmp_path)
    c = _check_html(text)
    for a in rep["artifacts"]:
        if a.get("id"):
            assert a["id"] in text
    assert "FAIL" in text and "PASS" not in text
    assert "fidelity to float" in text
    assert "kws-crnn &lt;stream&gt;" in text and "<stream>" not in text
    assert "—" in text
    assert "step agreement" in text and "94.80%" in text and "0.2113" in text
    assert "No labels" in text
    assert 'confident predictions changed (pp) <span class="over">3.8</span> (limit 1)' in text
    if HAS_MPL:
        assert c.srcs, "latency, size and agreement can still be plotted"


@pytest.mark.parametrize(
    "report",
    [
        {},
        None,
        {"artifacts": None, "float": None, "passed": None},
        {
            "artifacts": [None, 3, "x", {}],
            "ops": {"a": {"X": "many"}},
            "labels": [1, 2, None],
            "float": {"per_class_accuracy": {"1": float("nan")}},
            "warnings": "one warning",
            "calibration_method": "entropy",
            "edgetpu": {
                "compiled": True,
                "file": "m_edgetpu.tflite",
                "summary": "x",
                "ops": [{"op": "CONV_2D", "count": 3, "status": "Mapped"}],
            },
        },
    ],
)
def test_sparse_or_odd_reports_never_crash(tmp_path, report):
    text = _render(report, tmp_path)
    _check_html(text)
    assert "PASS" not in text and "FAIL" not in text
    assert "—" in text


def test_overwrites_existing_file(tmp_path):
    out = tmp_path / "report.html"
    out.write_text("old")
    write_html(_labeled_report(), out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("disk full")

    import edge_runtime.fileio as fileio

    monkeypatch.setattr(fileio.os, "replace", boom)
    with pytest.raises(OSError):
        write_html(_labeled_report(), tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []


def test_page_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    text = _render(_labeled_report(), tmp_path)
    _check_html(text)
    assert "data:image/png;base64," not in text
    assert "matplotlib is not installed" in text
    assert "tflite-int8" in text and "PASS" in text


def test_matplotlib_is_imported_lazily():
    code = "import sys, converters.report; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "False"


def test_worst_classes_picks_largest_drops():
    classes = [f"c{i}" for i in range(60)]
    float_pc = {c: 1.0 for c in classes}
    q1 = {c: 1.0 - (i % 7) * 0.01 for i, c in enumerate(classes)}
    q2 = {c: 1.0 for c in classes}
    q2["c59"] = 0.5
    shown = report_mod._worst_classes(classes, float_pc, [q1, q2])
    assert len(shown) == report_mod.MAX_PLOT_CLASSES
    assert shown[0] == "c59"
    drops = {c: max(float_pc[c] - q1[c], float_pc[c] - q2[c]) for c in classes}
    assert min(drops[c] for c in shown) >= max(drops[c] for c in classes if c not in shown)
    assert report_mod._worst_classes(classes[:10], float_pc, [q1]) == classes[:10]


def test_many_classes_and_dollar_labels_plot(tmp_path):
    from conftest import require

    require(HAS_MPL, "matplotlib is not installed (pip install -e '.[convert]')")
    rep = _labeled_report()
    labels = [f"class ${i}$ <i>" if i % 9 == 0 else f"word_{i:03d}" for i in range(120)]
    pc_f = {c: 0.9 + (i % 5) * 0.02 for i, c in enumerate(labels)}
    pc_q = {c: v - (0.3 if i % 11 == 0 else 0.0) for i, (c, v) in enumerate(pc_f.items())}
    rep["labels"] = labels
    rep["float"]["per_class_accuracy"] = pc_f
    for a in rep["artifacts"]:
        a["per_class_accuracy"] = pc_q if a["precision"] == "int8" else pc_f
    text = _render(rep, tmp_path)
    _check_html(text)
    assert text.count("data:image/png;base64,") == 4
    assert "failed" not in text
    assert "40 classes (of 120)" in text
    assert "class $9$ &lt;i&gt;" in text
