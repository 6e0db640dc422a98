"""The demo's speech sample: keywords said by a voice the keyword model never heard.

    python -m models.demo_audio [--out edge_runtime/data/samples/audio/keywords.wav]

flite's "kal" voice (held out of keyword training: it is in the test split of
models.kws_data) says each word at a set time over faint room noise; the
words' times are written beside the WAV (keywords.json) so tests can check that
`edge-runtime listen` reports them at the right moments.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edge_runtime.audio.wav import read_wav, write_wav

RATE = 16000
SCRIPT = [("yes", 1.0), ("go", 3.0), ("stop", 5.3), ("left", 7.5), ("no", 9.5)]
LENGTH_S = 11.5
VOICE = "kal"


def synthesise(word: str, voice: str = VOICE) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "w.wav"
        subprocess.run(["flite", "-voice", voice, "-t", word, "-o", str(path)], check=True, capture_output=True)
        x = read_wav(path, RATE)
    idx = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())  # trim the engine's own silence
    return x[idx[0] : idx[-1] + 1]


def build(seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    out = np.zeros(int(LENGTH_S * RATE), np.float32)
    marks = []
    for word, t in SCRIPT:
        w = synthesise(word) * 0.5
        start = int(t * RATE)
        out[start : start + len(w)] += w
        marks.append({"label": word, "start_s": round(t, 3), "end_s": round(t + len(w) / RATE, 3)})
    pink = np.cumsum(rng.normal(size=out.size)).astype(np.float32)  # brownish room rumble ...
    pink -= np.convolve(pink, np.ones(400) / 400, mode="same")  # ... without the DC drift
    noise = pink / (np.abs(pink).max() + 1e-9) * 0.01 + rng.normal(0, 0.002, out.size).astype(np.float32)
    return np.clip(out + noise, -1, 1).astype(np.float32), marks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("edge_runtime/data/samples/audio/keywords.wav"))
    args = ap.parse_args(argv)
    x, marks = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(args.out, x, RATE)
    args.out.with_suffix(".json").write_text(json.dumps({"voice": f"flite:{VOICE}", "words": marks}, indent=2) + "\n")
    print(f"wrote {args.out} ({len(x) / RATE:.1f} s): " + ", ".join(f"{m['label']}@{m['start_s']}s" for m in marks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
