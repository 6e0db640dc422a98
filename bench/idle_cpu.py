"""CPU time of the running daemon against the engine work it does (nothing may spin between calls).

    python bench/idle_cpu.py [--rounds 3] [--out bench/results/idle_cpu.json]

- demo: ``edge-runtime demo``'s daemon (the shipped image, keyword and phrase models, engine
  ``auto`` or ``--audio-engine`` for the keywords, the sample audio in real time) in a fresh
  process; process CPU time from ready to the end, and every engine call counted.
- bare loop: a fresh process opens the same models as the demo does and makes the same number
  of calls of each engine in a tight loop; its process CPU time for the calls.
  ``ratio`` = demo CPU / bare-loop CPU (what the daemon costs beyond its
  inferences: decoding, preprocessing, the audio front end, fusion, threads --
  and any spinning). Rounds alternate demo and bare loop; medians are reported.
- per artifact: process CPU time per call at a steady small call rate, paced by
  a blocking wait -- the keyword model at 50 calls/s (its 2 state lanes at
  25 steps/s), the vision model at 5 fps -- with the thread CPU time and wall
  time inside the calls, each in a fresh process. A ratio well above 1 means
  threads burn CPU between (or beside) the calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402

DEMO = r"""
import json, sys, time
from edge_runtime.engines.base import Engine
calls = {}
raw = Engine.run_raw
def counted(self, *arrays):
    t = time.thread_time()
    out = raw(self, *arrays)
    c = calls.setdefault(id(self), [0, 0.0])
    c[0] += 1
    c[1] += time.thread_time() - t
    return out
Engine.run_raw = counted
import dataclasses
from edge_runtime.demo import demo_config
from edge_runtime.service import Daemon
cfg = demo_config()
d = Daemon(dataclasses.replace(cfg, audio=dataclasses.replace(cfg.audio, engine=sys.argv[1])))
d.start()
p0, w0 = time.process_time(), time.monotonic()
d.run()
p1, w1 = time.process_time(), time.monotonic()
out = {"cpu_s": p1 - p0, "wall_s": w1 - w0, "process_cpu_s": p1, "models": {}}
for name, model in d.models.items():
    e = model.engine
    n, cpu = calls.get(id(e), [0, 0.0])
    out["models"][name] = {"engine": e.name, "device": e.placement.device, "calls": n, "call_thread_cpu_s": cpu}
print("RESULT " + json.dumps(out))
"""

BARE = r"""
import dataclasses, json, sys, time
import numpy as np
from edge_runtime.defaults import SAMPLES
from edge_runtime.demo import demo_config
from edge_runtime.preprocess import read_image
from edge_runtime.service import Models
audio_engine, calls = sys.argv[1], json.loads(sys.argv[2])
cfg = demo_config()
models = Models.load(dataclasses.replace(cfg, audio=dataclasses.replace(cfg.audio, engine=audio_engine)))
photo = read_image(sorted((SAMPLES / "images").glob("*.jpg"))[0])
work = []
for name, model in models.items():
    e = model.engine
    feeds = [model.prepare(photo)] if name == "vision" else [np.zeros(t.shape, t.dtype) for t in e.inputs]
    e.run_raw(*feeds)
    work.append((e, feeds, calls[name]))
p0 = time.process_time()
for e, feeds, n in work:
    for _ in range(n):
        e.run_raw(*feeds)
print("RESULT " + json.dumps({"cpu_s": time.process_time() - p0,
                              "models": {name: m.engine.placement.device for name, m in models.items()}}))
"""

PACED = r"""
import json, sys, threading, time
import numpy as np
from edge_runtime.defaults import model_dir
from edge_runtime.engines import open_artifact
from edge_runtime.manifest import load
kind, fmt, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
threads = int(sys.argv[5]) or None
m, folder = load(model_dir(kind))
e = open_artifact(m.artifact(fmt), folder, threads)
x = [np.zeros(t.shape, t.dtype) for t in e.inputs]
for _ in range(10):
    e.run_raw(*x)
n, period, gate = int(rate * seconds), 1.0 / rate, threading.Event()
call_cpu = call_wall = 0.0
p0, t0 = time.process_time(), time.monotonic()
for i in range(n):
    c, w = time.thread_time(), time.perf_counter()
    e.run_raw(*x)
    call_cpu += time.thread_time() - c
    call_wall += time.perf_counter() - w
    wait = t0 + (i + 1) * period - time.monotonic()
    if wait > 0:
        gate.wait(wait)
proc = time.process_time() - p0
print("RESULT " + json.dumps({"device": e.placement.device, "calls": n, "process_cpu_ms_per_call": 1e3 * proc / n,
                              "call_thread_cpu_ms": 1e3 * call_cpu / n, "call_wall_ms": 1e3 * call_wall / n}))
"""

# (model, artifact format, calls per second, threads; 0 = the engine's default)
PACED_CASES = [
    ("kws", "tflite", 50, 0),
    ("kws", "onnx", 50, 0),
    ("vision", "tflite", 5, 0),
    ("vision", "tflite", 5, 2),
    ("vision", "onnx", 5, 0),
]


def _child(code: str, *args: str, timeout: float = 120) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        check=True,
    )
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def demo_vs_bare(rounds: int, audio_engine: str) -> dict:
    runs = []
    for _ in range(rounds):
        d = _child(DEMO, audio_engine)
        b = _child(BARE, audio_engine, json.dumps({name: m["calls"] for name, m in d["models"].items()}))
        runs.append({"demo": d, "bare": b, "ratio": d["cpu_s"] / b["cpu_s"]})

    def med(f):
        return statistics.median(f(r) for r in runs)

    return {
        "ratio_median": med(lambda r: r["ratio"]),
        "demo_cpu_s_median": med(lambda r: r["demo"]["cpu_s"]),
        "bare_cpu_s_median": med(lambda r: r["bare"]["cpu_s"]),
        "demo_wall_s_median": med(lambda r: r["demo"]["wall_s"]),
        "audio_engine": audio_engine,
        "rounds": runs,
    }


def paced(rounds: int, seconds: float) -> list[dict]:
    per_case: dict[tuple, list[dict]] = {c: [] for c in PACED_CASES}
    for _ in range(rounds):  # interleaved: every case sees the same machine load
        for kind, fmt, rate, threads in PACED_CASES:
            per_case[(kind, fmt, rate, threads)].append(_child(PACED, kind, fmt, str(rate), str(seconds), str(threads)))
    out = []
    for (kind, fmt, rate, threads), runs in per_case.items():
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in ("process_cpu_ms_per_call", "call_thread_cpu_ms", "call_wall_ms")
        }
        out.append(
            {
                "model": kind,
                "artifact": fmt,
                "calls_per_s": rate,
                "threads": threads or "default",
                "device": runs[0]["device"],
                **med,
                "process_cpu_over_call_cpu": med["process_cpu_ms_per_call"] / med["call_thread_cpu_ms"],
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "idle_cpu.json")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each paced run (default 3)")
    ap.add_argument("--part", choices=["all", "demo", "paced"], default="all")
    ap.add_argument(
        "--audio-engine",
        choices=["auto", "litert", "onnx"],
        default="auto",
        help="the demo's keyword engine (default auto, as the demo runs)",
    )
    args = ap.parse_args()
    result: dict = {"host": host(cpus=os.cpu_count())}
    if args.part in ("all", "demo"):
        result["demo_vs_bare_loop"] = demo_vs_bare(args.rounds, args.audio_engine)
    if args.part in ("all", "paced"):
        result["paced_calls"] = paced(args.rounds, args.seconds)
    if args.part == "all":
        save(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
