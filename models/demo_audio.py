"""The demo's speech sample: keywords, then a spoken command, said by a voice the keyword model and
the phrase model never heard.

    python -m models.demo_audio [--out edge_runtime/data/samples/audio/keywords.wav] [--voice ENGINE:VOICE]

The voice (default: the first American-English espeak-ng voice of the shipped
keyword model's test split, ``metrics.training.test_voices``, held out of its
training -- the same rule the ``listen`` test uses) says each word at a set time
over faint room noise, then :data:`PHRASE` (a phrase of the demo's grammar, in
a segment of its own appended after the keywords, so the keyword part stays as
it was); the words' and the phrase's times are written beside the WAV
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
LENGTH_S = 11.5  # the keyword part
PHRASE, PHRASE_AT_S, PHRASE_PART_S = "start the coffee machine", 0.8, 3.0


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


def part(script: list[tuple[str, float]], length_s: float, voice: str, seed: int) -> tuple[np.ndarray, list[dict]]:
    """``length_s`` of faint room noise with each (text, time) of ``script`` said at its time."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(length_s * RATE), np.float32)
    marks = []
    for text, t in script:
        w = synthesise(text, voice) * 0.5
        start = int(t * RATE)
        out[start : start + len(w)] += w
        marks.append({"label": text, "start_s": round(t, 3), "end_s": round(t + len(w) / RATE, 3)})
    pink = np.cumsum(rng.normal(size=out.size)).astype(np.float32)  # brownish room rumble ...
    pink -= np.convolve(pink, np.ones(400) / 400, mode="same")  # ... without the DC drift
    noise = pink / (np.abs(pink).max() + 1e-9) * 0.01 + rng.normal(0, 0.002, out.size).astype(np.float32)
    return np.clip(out + noise, -1, 1).astype(np.float32), marks


def build(voice: str, seed: int = 0) -> tuple[np.ndarray, list[dict], list[dict]]:
    """The keywords part, then the phrase part: the samples, the words' and the phrase's times."""
    words, marks = part(SCRIPT, LENGTH_S, voice, seed)
    phrase, (mark,) = part([(PHRASE, PHRASE_AT_S)], PHRASE_PART_S, voice, seed + 1)
    mark = {**mark, "start_s": round(mark["start_s"] + LENGTH_S, 3), "end_s": round(mark["end_s"] + LENGTH_S, 3)}
    return np.concatenate([words, phrase]), marks, [mark]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("edge_runtime/data/samples/audio/keywords.wav"))
    ap.add_argument("--voice", help="ENGINE:VOICE, e.g. espeak-ng:en-us+Gene or flite:kal (default: a held-out one)")
    args = ap.parse_args(argv)
    voice = args.voice or held_out_voice()
    x, marks, phrases = build(voice)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(args.out, x, RATE)
    meta = {"voice": voice, "words": marks, "phrases": phrases}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    said = marks + phrases
    print(f"wrote {args.out} ({len(x) / RATE:.1f} s): " + ", ".join(f"{m['label']}@{m['start_s']}s" for m in said))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
