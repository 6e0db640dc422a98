"""Runtime benchmarks, measured as ratios in one run (the machine is shared and noisy).

    python bench/runtime.py [--out bench/results/runtime.json] [--seconds 20]

The measurements are ``edge-runtime bench``'s own (:mod:`edge_runtime.bench`), on the shipped
models' LiteRT artifacts; raw and pipeline rounds alternate and each ratio is the median of
per-round ratios, so both see the same machine load:

- vision: the daemon's vision pipeline and the ``classify`` path over the engine alone.
  Goals: daemon >= 0.97, classify >= 0.90.
- keywords: the engine's share of the keyword spotter's time (engine alone over the same steps
  / the whole spotter), and the real-time factor on one thread (absolute, beside the host).
- fusion: Decision -> Event latency through Fusion.add, per event over per decision.
- process: cold start (a fresh process importing edge_runtime, loading both shipped models and
  running a first inference of each; goal <= 1.5 s) and its peak RSS (goal <= 200 MB).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402


def vision(seconds: float) -> dict:
    from edge_runtime import bench
    from edge_runtime.defaults import model_dir
    from edge_runtime.manifest import load

    man, folder = load(model_dir("vision"))
    r = bench.bench_vision(man, bench.Target(folder), man.artifact("tflite").id, seconds)
    return {
        **r,
        "daemon_goal": ">= 0.97",
        "daemon_met": r["daemon_vs_raw"] >= 0.97,
        "classify_goal": ">= 0.90",
        "classify_met": r["classify_vs_raw"] >= 0.90,
    }


def keywords(seconds: float) -> dict:
    from edge_runtime import bench
    from edge_runtime.defaults import model_dir
    from edge_runtime.manifest import load

    man, folder = load(model_dir("kws"))
    r = bench.bench_keywords(man, bench.Target(folder, threads=1), man.artifact("tflite").id, seconds)
    return {**r, "threads": 1, "rtf_goal": "<= 0.01", "rtf_met": r["rtf"] <= 0.01}


def fusion(n: int) -> dict:
    from edge_runtime.config import Condition, FusionConfig, RuleConfig
    from edge_runtime.events import Decision
    from edge_runtime.fusion import Fusion

    f = Fusion(
        FusionConfig(
            rules=[
                RuleConfig(
                    name="dog_stop", all=[Condition("vision", "dog"), Condition("audio", "stop")], cooldown_s=0.0
                )
            ],
            passthrough=True,
            passthrough_cooldown_s=0.0,
        )
    )
    lat, fired = [], []
    t_cap = time.monotonic_ns()
    for i in range(n):
        # every tenth pair completes the rule (stop, then dog); the rest only pass through
        modality, label = {0: ("audio", "stop"), 1: ("vision", "dog")}.get(i % 10, ("vision", "person"))
        t_cap += 10_000_000
        d = Decision(modality, label, 0.9, t_cap, time.monotonic_ns(), "bench")
        t0 = time.perf_counter_ns()
        events = f.add(d)
        lat.append((time.perf_counter_ns() - t0) / 1e6)
        fired.append(len(events) > 1)  # the rule's event beside the passthrough one
    lat_a, fired_a = np.asarray(lat), np.asarray(fired)
    p99 = float(np.percentile(lat_a, 99))
    return {
        "decisions": n,
        "rule_events": int(fired_a.sum()),
        "p50_ms": float(np.percentile(lat_a, 50)),
        "p99_ms": p99,
        "goal": "<= 5 ms",
        "met": p99 <= 5.0,
        # what a decision that fires the rule costs over one that only passes through
        "rule_event_vs_passthrough_p50": float(np.median(lat_a[fired_a]) / np.median(lat_a[~fired_a])),
    }


def process() -> dict:
    from edge_runtime import bench
    from edge_runtime.defaults import model_dir

    r = bench.cold_start([model_dir("vision"), model_dir("kws")])
    return {
        **r,
        "cold_goal": "<= 1.5 s",
        "cold_met": r["cold_start_s"] <= 1.5,
        "rss_goal": "<= 200 MB",
        "rss_met": r["max_rss_mb"] <= 200,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "runtime.json")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring time per model (default 20)")
    args = ap.parse_args()
    result = {
        "host": host(),
        "vision": vision(args.seconds),
        "keywords": keywords(args.seconds),
        "fusion": fusion(20000),
        "process": process(),
    }
    save(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
