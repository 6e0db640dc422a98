"""Structured pruning of the digits MobileNetV2: prune fraction vs accuracy, size and int8 latency.

For every fraction the shipped digits model (MobileNetV2 1.0, 96x96) is pruned
and fine-tuned by the recipe, with the same budget for every fraction (0 only
fine-tunes, the baseline), on the digits' training images (regenerated with the
shipped split: the held-out eval folder is never trained on), then converted by
edge-convert, calibrated on the shipped calib folder and evaluated on the held-out
eval folder. Then the int8 artifacts of all fractions are timed in this one
process on LiteRT and ONNX Runtime, in interleaved rounds (every round times every
artifact, in a fresh random order); a speed-up is the unpruned int8 latency over
the pruned one within a round, and the median over the rounds is reported. The
machine may be shared: ratios from one run are what to compare, not the
absolute times.

    python bench/pruning.py [--fractions 0 0.375 0.5 0.75] [--recipe "--prune-steps 3 --prune-epochs 3 --teacher ..."]
        [--threads 1]
        [--rounds 15] [--work DIR] [--out bench/results/pruning.json]

bench/results/pruning.json is the default; pruning_one_step.json is
``--fractions 0 0.25 0.5 0.75 --recipe "--prune-epochs 5 --teacher models/digits/digits_mobilenetv2.keras"``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402

DIGITS = ROOT / "models" / "digits"
SHIPPED = DIGITS / "digits_mobilenetv2.keras"
INT8 = ("tflite-int8", "onnx-int8")


def training_images(work: Path) -> Path:
    """The digits' training folder, written with the shipped split (checked against the shipped folders)."""
    from models.digits import export_images

    paths = export_images(work)
    for name in ("eval", "calib"):
        cmp = filecmp.dircmp(paths[name], DIGITS / "data" / name)
        if cmp.left_only or cmp.right_only or cmp.diff_files or any(c.diff_files for c in cmp.subdirs.values()):
            raise SystemExit(f"pruning bench: the regenerated {name} split differs from {DIGITS / 'data' / name}")
    return paths["train"]


def prune_and_convert(fraction: float, train: Path, work: Path, recipe: list[str]) -> dict:
    """The recipe at one fraction, then edge-convert on the held-out digits: the training info and the report."""
    import keras

    from converters.cli import main as convert
    from models import mobilenet

    out = work / f"prune-{fraction:g}"
    code = mobilenet.main(
        ["--data", str(train), "--out", str(out), "--init", str(SHIPPED), "--prune", str(fraction), *recipe]
    )
    if code:
        raise SystemExit(f"pruning bench: the recipe failed at --prune {fraction:g} (exit code {code})")
    code = convert(
        [
            str(out / "model.keras"),
            "--out",
            str(out / "artifacts"),
            "--calibration",
            str(DIGITS / "data" / "calib"),
            "--eval",
            str(DIGITS / "data" / "eval"),
            "--labels",
            str(DIGITS / "labels.txt"),
            "--name",
            f"digits-mobilenetv2-pruned-{fraction:g}",
            "--max-accuracy-drop",
            "100",
        ]
    )
    if code:
        raise SystemExit(f"pruning bench: edge-convert failed at --prune {fraction:g} (exit code {code})")
    keras.backend.clear_session()
    return {
        "folder": out / "artifacts",
        "training": json.loads((out / "training.json").read_text()),
        "report": json.loads((out / "artifacts" / "report.json").read_text()),
    }


def interleaved_latency(
    folders: dict[float, Path], threads: int, rounds: int, seed: int = 0
) -> dict[tuple, list[float]]:
    """Median latency (ms) per round of every (fraction, int8 artifact), all engines open at once, order shuffled."""
    from converters.evaluate import latency_ms
    from edge_runtime.engines import open_artifact
    from edge_runtime.manifest import load
    from models.mobilenet import load_folder

    x = load_folder(DIGITS / "data" / "eval", 96)[0][:1]
    engines = {}
    for fraction, folder in folders.items():
        manifest, where = load(folder)
        for art in manifest.artifacts:
            if art.id in INT8:
                engines[(fraction, art.id)] = open_artifact(art, where, threads=threads)
    times: dict[tuple, list[float]] = {k: [] for k in engines}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(engines)
        rng.shuffle(order)
        for key in order:
            times[key].append(latency_ms(engines[key], [x], min_runs=30, max_runs=200, budget_s=0.4)["median"])
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.0, 0.375, 0.5, 0.75])
    ap.add_argument(
        "--recipe",
        default=f"--prune-steps 3 --prune-epochs 3 --teacher {SHIPPED.relative_to(ROOT)}",
        help="further python -m models.mobilenet flags, the same for every fraction (paths relative to "
        "the repository; default: 3 steps of 3 epochs each, distilled from the unpruned model)",
    )
    ap.add_argument("--threads", type=int, default=1, help="engine threads for the latency rounds (default 1)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pruning.json")
    args = ap.parse_args()
    os.chdir(ROOT)  # --recipe's paths are the repository's
    fractions = sorted(set([0.0, *args.fractions]))
    recipe = shlex.split(args.recipe)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        train = training_images(work / "digits")
        runs = {f: prune_and_convert(f, train, work, recipe) for f in fractions}
        times = interleaved_latency({f: r["folder"] for f, r in runs.items()}, args.threads, args.rounds)

    rows = []
    for f, r in runs.items():
        rep, tr = r["report"], r["training"]
        arts = {a["id"]: a for a in rep["artifacts"]}
        row = {
            "fraction": f,
            "params": tr["prune"]["params_after"],
            "expansion_widths": tr["prune"]["widths_after"],
            "val_accuracy_pruned": tr["prune"]["schedule"][-1].get("val_accuracy_pruned"),
            "val_accuracy": tr.get("val_accuracy"),
            "float_accuracy": rep["float"].get("accuracy"),
        }
        for art_id in INT8:
            a, t = arts[art_id], times[(f, art_id)]
            base = times[(0.0, art_id)]
            row[art_id] = {
                "accuracy": a.get("accuracy"),
                "agreement": a["agreement"],
                "size_bytes": a["size_bytes"],
                "latency_ms_median": statistics.median(t),
                "speedup_vs_unpruned": statistics.median(b / v for b, v in zip(base, t)),
            }
        rows.append(row)
    base = rows[0]
    for row in rows:
        for art_id in INT8:
            row[art_id]["accuracy_loss_pp"] = 100 * (base[art_id]["accuracy"] - row[art_id]["accuracy"])
    result = {
        "model": "MobileNetV2 1.0, 96x96, 10 classes (the shipped digits model), pruned and fine-tuned per fraction",
        "method": "python -m models.mobilenet --init SHIPPED --prune F "
        + args.recipe
        + "; edge-convert (calib: models/digits/data/calib); accuracy on the held-out eval folder",
        "eval": "models/digits/data/eval (360 held-out digits)",
        "train_images": runs[0.0]["training"]["train_images"],
        "val_images": runs[0.0]["training"]["val_images"],
        "latency": {
            "threads": args.threads,
            "rounds": args.rounds,
            "input": "one eval image",
            "how": "all artifacts open in one process, every round times each in a random order; "
            "medians over rounds; speed-up = median over rounds of unpruned / pruned in the same round",
        },
        "host": host(tools=runs[0.0]["report"]["tools"]),
        "rows": rows,
    }
    save(args.out, result)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
