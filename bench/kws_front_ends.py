"""Streaming cost of keyword artifacts side by side: the shipped one and any others, in one run.

    python bench/kws_front_ends.py MODEL_DIR... [--seconds 60] [--rounds 5] [--out bench/results/kws_front_ends.json]

Each artifact runs the daemon's code path (``KeywordSpotter.process``: front end, step
model on LiteRT with one thread, state lanes, detector) over the demo's keyword
recording fed in 20 ms chunks, as the microphone delivers it. Rounds alternate the
models so that the shared machine's noise hits all alike; the figure per model is
the median over rounds of process CPU time / audio time (real-time factor), and the
ratio of each to the shipped model's within the same round.
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


def spotter(folder: Path):
    from edge_runtime.manifest import load
    from edge_runtime.pipelines.audio import KeywordSpotter

    m, f = load(folder)
    return m.name, KeywordSpotter(m, f, engine="litert", threads=1)


def rtf(kws, audio: np.ndarray, chunk: int = 320) -> float:
    kws.reset()
    t = time.process_time()
    for i in range(0, len(audio), chunk):
        kws.process(audio[i : i + chunk])
    return (time.process_time() - t) / (len(audio) / 16000)


def main() -> int:
    from edge_runtime.audio.wav import read_wav
    from edge_runtime.defaults import SAMPLES, model_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="*", help="keyword artifact folders to compare with the shipped one")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kws_front_ends.json")
    args = ap.parse_args()
    folders = [model_dir("kws"), *args.models]
    spotters = [spotter(f) for f in folders]
    x = read_wav(SAMPLES / "audio" / "keywords.wav", 16000)
    audio = np.tile(x, int(np.ceil(args.seconds * 16000 / len(x))))
    runs = [[rtf(kws, audio) for _, kws in spotters] for _ in range(args.rounds)]
    rows = []
    for j, ((name, kws), folder) in enumerate(zip(spotters, folders)):
        p = kws.manifest.preprocessing.audio
        rows.append(
            {
                "model": name,
                "folder": folder.name,
                "front_end": f"{p.n_mels} mel bins, "
                f"{p.frames_per_step} frames per step"
                + (f", {p.window_frames}-frame window" if p.window_frames else ""),
                "precision": kws.artifact.precision,
                "rtf_median": float(np.median([r[j] for r in runs])),
                "ratio_to_shipped_median": float(np.median([r[j] / r[0] for r in runs])),
                "goal": "rtf <= 0.02 per stream on one core",
            }
        )
    result = {
        "host": host(),
        "audio_s": len(audio) / 16000,
        "rounds": args.rounds,
        "chunk_ms": 20,
        "threads": 1,
        "models": rows,
    }
    save(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
