"""The long fuzz run: tests/test_fuzz.py's properties on many more inputs, with fresh random seeds.

    python bench/fuzz.py [--scale 20] [--out bench/results/fuzz.json]

The suite runs each property on a fixed, small set of inputs; here each runs ``--scale`` times as
many, drawn at random (a failing input is printed by Hypothesis with a line that reproduces it).
Every input is counted by kind and outcome: ``ok`` / ``broken`` / ``any`` is what it was made to
be, ``accepted`` / ``refused`` what the tool did with it. The goals: no property fails (no
traceback, no hang over 10 s, no broken input accepted, no config that ``check`` accepts and
``run`` refuses, or the other way round) over at least 10,000 inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402

GOAL_INPUTS = 10_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=20.0, help="inputs per property, as a multiple of the suite's")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/fuzz.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tally = Path(tmp) / "tally.json"
        env = {
            **os.environ,
            "EDGE_FUZZ_SCALE": str(args.scale),
            "EDGE_FUZZ_RANDOM": "1",
            "EDGE_FUZZ_REPORT": str(tally),
            "CI": "true",
        }
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:logging", "tests/test_fuzz.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - t0
        kinds = json.loads(tally.read_text()) if tally.exists() else {}
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    inputs = sum(k["inputs"] for k in kinds.values())
    result = {
        "what": "tests/test_fuzz.py with fresh random inputs: configs (check and run on each), manifests "
        "(classify / listen), WAV and image files (the readers), command lines, bundles (edge-deploy verify)",
        "host": host(cpus=os.cpu_count()),
        "command": f"python bench/fuzz.py --scale {args.scale:g}",
        "scale": args.scale,
        "seconds": round(seconds, 1),
        "inputs": inputs,
        "kinds": kinds,
        "failures": failures,
        "slowest_input_s": max((k["slowest_s"] for k in kinds.values()), default=None),
        "goals": {
            "inputs_at_least": GOAL_INPUTS,
            "inputs_met": inputs >= GOAL_INPUTS,
            "no_failure": proc.returncode == 0 and not failures,
        },
    }
    save(args.out, result)
    print(
        f"{inputs} inputs in {seconds / 60:.1f} min; {len(failures)} failing properties "
        f"({'exit ' + str(proc.returncode)}); written to {args.out}"
    )
    if proc.returncode != 0:
        print(proc.stdout[-20000:])
    return 0 if result["goals"]["no_failure"] and result["goals"]["inputs_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
