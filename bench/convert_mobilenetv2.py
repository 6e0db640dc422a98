"""MobileNetV2 1.0 at 224x224: float vs int8 TFLite and ONNX on this host.

The digits MobileNetV2 recipe trained at 224x224 (the shipped model is 96x96;
a model trained at one scale does not transfer to another), converted with
edge-convert; the measured agreement, size ratio and latency go to
bench/results/. Latencies are medians of repeated single-image inferences in one
run, so the ratios are comparable; absolute times depend on the machine and its load.

    python -m models.digits --size 224 --full-epochs 8 --out build/digits224
    python bench/convert_mobilenetv2.py --model-dir build/digits224 [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True, help="output folder of python -m models.digits --size 224")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mobilenetv2_224.json")
    args = ap.parse_args()
    from converters.cli import main as convert

    digits = args.model_dir
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mnv2_224"
        argv = [
            str(digits / "digits_mobilenetv2.keras"),
            "--out",
            str(out),
            "--calibration",
            str(digits / "data" / "calib"),
            "--eval",
            str(digits / "data" / "eval"),
            "--labels",
            str(digits / "labels.txt"),
            "--name",
            "mobilenetv2-1.0-224",
        ]
        if args.threads:
            argv += ["--threads", str(args.threads)]
        code = convert(argv)
        report = json.loads((out / "report.json").read_text())
    rows = {r["id"]: r for r in report["artifacts"]}
    result = {
        "model": "MobileNetV2 1.0, 224x224, 10 classes (digits)",
        "eval": report["eval_data"],
        "host": host(tools=report["tools"]),
        "float_accuracy": report["float"].get("accuracy"),
        "artifacts": {
            k: {
                "accuracy": r.get("accuracy"),
                "agreement": r["agreement"],
                "kl_mean": r["kl_mean"],
                "size_bytes": r["size_bytes"],
                "size_ratio": r.get("size_ratio"),
                "latency_ms_median": r["latency_ms"]["median"],
                "latency_ms_p90": r["latency_ms"]["p90"],
                "threads": r["latency_ms"]["threads"],
                "speedup_vs_float": r.get("speedup_vs_float"),
            }
            for k, r in rows.items()
        },
        "fastest_on_host": report["fastest_on_host"],
    }
    save(args.out, result)
    print(json.dumps(result["artifacts"], indent=2))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
