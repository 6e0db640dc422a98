"""The demo's speech sample: keywords said by a voice the keyword model never heard.

    python -m models.demo_audio [--out edge_runtime/data/samples/audio/keywords.wav] [--voice ENGINE:VOICE]

The voice (default: the first American-English espeak-ng voice of the shipped
keyword model's test split, ``metrics.training.test_voices``, held out of its
training -- the same rule the ``listen`` test uses) says each word at a set time
over faint room noise; the words' times are written beside the WAV
(keywords.json) so tests can check that `edge-runtime listen` reports them at
the right moments. ``--voice flite:kal`` gives the hardest held-out speaker
(see the model's EVALUATION.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from edge_runtime.audio.wav import write_wav

RATE = 16000
SCRIPT = [("yes", 1.0), ("go", 3.0), ("stop", 5.3), ("left", 7.5), ("no", 9.5)]
LENGTH_S = 11.5


def held_out_voice() -> str:
    """The first en-us espeak-ng voice the shipped keyword model was tested (never trained) on."""
    from edge_runtime import manifest as mf
    from edge_runtime.defaults import model_dir

    m, _ = mf.load(model_dir("kws"))
    voices = [v for v in m.metrics.get("training", {}).get("test_voices", []) if v.startswith("espeak-ng:en-us")]
    if not voices:
        raise SystemExit("demo_audio: the shipped keyword manifest lists no held-out espeak-ng voice; pass --voice")
    return voices[0]


def synthesise(word: str, voice: str) -> np.ndarray:
    from models.kws_data import say

    with tempfile.TemporaryDirectory() as d:
        x = say(voice, word, d)
    return x / np.abs(x).max()


def build(voice: str, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    out = np.zeros(int(LENGTH_S * RATE), np.float32)
    marks = []
    for word, t in SCRIPT:
        w = synthesise(word, voice) * 0.5
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
    ap.add_argument("--voice", help="ENGINE:VOICE, e.g. espeak-ng:en-us+Gene or flite:kal (default: a held-out one)")
    args = ap.parse_args(argv)
    voice = args.voice or held_out_voice()
    x, marks = build(voice)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(args.out, x, RATE)
    args.out.with_suffix(".json").write_text(json.dumps({"voice": voice, "words": marks}, indent=2) + "\n")
    print(f"wrote {args.out} ({len(x) / RATE:.1f} s): " + ", ".join(f"{m['label']}@{m['start_s']}s" for m in marks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
