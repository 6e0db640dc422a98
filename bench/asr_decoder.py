"""What the grammar decoder costs per step, as a share of real time.

    python bench/asr_decoder.py [--steps-per-s 25] [--repeat 3] [--out bench/results/asr_decoder.json]

The decoder (:mod:`edge_runtime.asr.decoder`) runs on synthetic CTC posteriors (``models/ctc_synth.py``,
noise 0.3) of a stream that says every phrase of the 50-phrase test grammar
(``tests/data/asr/commands.txt``) and ten phrases outside it, 12 blank steps apart, fed in chunks of
4 steps. Measured: process CPU time per step (median of ``--repeat`` runs) over the whole stream, and
the same CPU time over the steps inside utterances only (``us_per_speech_step_at_most``: as if the idle
steps between utterances cost nothing, which they almost do), for several beam widths;
``rtf_share`` is the CPU time per second of audio at ``--steps-per-s`` model steps per second (25:
one step per 40 ms), the decoder's part of the issue's real-time-factor budget of 0.05. A second
grammar adds ``set a timer for <number> minutes`` (100 phrases more) to show how the cost grows with
the grammar. The phrases recognised and rejected on the way are reported too, and at the noisier
posteriors of ``NOISIER``: they test the decoder on idealised posteriors, not a model on audio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402
from edge_runtime.asr.decoder import DecoderOptions, GrammarDecoder  # noqa: E402
from edge_runtime.asr.grammar import load_grammar, parse_grammar  # noqa: E402
from edge_runtime.asr.lexicon import load_lexicon, parse_lexicon  # noqa: E402
from edge_runtime.asr.prefix_tree import PrefixTree  # noqa: E402
from models.ctc_synth import OUT_OF_GRAMMAR, alignment, posteriors  # noqa: E402

DATA = ROOT / "tests" / "data" / "asr"
BLANK = "<blank>"
CHUNK = 4
NOISIER = (0.5, 0.6)  # posterior noise levels at which recognition and rejection are counted too
GAP = 12
# the words the timer line adds to the test lexicon, as python -m models.g2p (espeak-ng 1.51, en-us) wrote them
NUMBER_WORDS = """\
six s I k s
seven s E v @ n
eight eI t
nine n aI n
eleven I# l E v @ n
twelve t w E l v
thirteen T 3: t i: n
fourteen f o@ t i: n
sixteen s I k s t i: n
seventeen s E v @ n t i: n
eighteen eI t i: n
nineteen n aI n t i: n
fifty f I f t i
sixty s I k s t i
seventy s E v @ n t i
eighty eI t# i
ninety n aI n t i
hundred h V n d r I2 d
"""


def stream(grammar, lexicon, labels, rng, noise: float = 0.3) -> tuple[np.ndarray, list[tuple[str, bool]]]:
    """Posteriors of every phrase and the out-of-grammar ones, shuffled; with what each is."""
    index = {lab: i for i, lab in enumerate(labels)}
    said = [(e.text, True) for e in grammar.expansions] + [(t, False) for t in OUT_OF_GRAMMAR]
    said = [said[i] for i in rng.permutation(len(said))]
    frames: list[int] = []
    for text, _ in said:
        frames += alignment([index[p] for w in text.split() for p in lexicon.entries[w][0]], 0, rng, lead=GAP, tail=0)
    frames += [0] * GAP
    return posteriors(frames, len(labels), rng, noise=noise), said


def run(tree, x: np.ndarray, options: DecoderOptions) -> tuple[float, list, int]:
    """CPU seconds to decode ``x`` in chunks, the results, and the steps spent inside utterances."""
    d = GrammarDecoder(tree, options)
    results = []
    t0 = time.process_time()
    for i in range(0, len(x), CHUNK):
        results += d.push(x[i : i + CHUNK])
    results += d.flush()
    cpu = time.process_time() - t0
    return cpu, results, sum(r.t_end - r.t_start for r in results)


def counts(results, said) -> dict:
    """Phrases recognised and rejected against what was said, and every error."""
    assert len(results) == len(said), "one result per utterance said"
    right = sum(r.accepted and r.phrase == text for r, (text, ok) in zip(results, said) if ok)
    rejected = sum(not r.accepted for r, (text, ok) in zip(results, said) if not ok)
    return {
        "in_grammar_recognised": f"{right}/{sum(ok for _, ok in said)}",
        "out_of_grammar_rejected": f"{rejected}/{sum(not ok for _, ok in said)}",
        "errors": [
            {"said": text, "heard": r.phrase, "score": r.score, "accepted": r.accepted}
            for r, (text, ok) in zip(results, said)
            if (ok and not (r.accepted and r.phrase == text)) or (not ok and r.accepted)
        ],
    }


def measure(name: str, grammar, lexicon, beams: list[int], repeat: int, steps_per_s: float) -> dict:
    labels = [BLANK, *lexicon.phonemes]
    tree = PrefixTree.build(grammar.expansions, lexicon, labels, BLANK, grammar.where)
    rng = np.random.default_rng(0)
    x, said = stream(grammar, lexicon, labels, rng)
    out: dict = {"phrases": len(grammar.expansions), "tree_nodes": tree.size, "labels": len(labels)}
    out["stream_steps"] = len(x)
    out["beams"] = {}
    for beam in beams:
        options = DecoderOptions(beam=beam)
        runs = [run(tree, x, options) for _ in range(repeat)]
        cpu = statistics.median(r[0] for r in runs)
        results, speech_steps = runs[0][1], runs[0][2]
        per_step = cpu / len(x)
        out["beams"][str(beam)] = {
            "us_per_step": round(1e6 * per_step, 1),
            "us_per_speech_step_at_most": round(1e6 * cpu / speech_steps, 1),
            "rtf_share": round(per_step * steps_per_s, 5),
            "speech_steps": speech_steps,
            "utterances": len(results),
            **counts(results, said),
        }
        print(f"{name}: beam {beam}: {1e6 * per_step:.1f} us/step, rtf share {per_step * steps_per_s:.5f}", flush=True)
    out["noisier_posteriors_beam_16"] = {}
    for noise in NOISIER:
        x, said = stream(grammar, lexicon, labels, np.random.default_rng(1), noise)
        out["noisier_posteriors_beam_16"][str(noise)] = counts(run(tree, x, DecoderOptions(beam=16))[1], said)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps-per-s", type=float, default=25.0, help="model steps per second of audio")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "asr_decoder.json")
    args = ap.parse_args()
    grammar, lexicon = load_grammar(DATA / "commands.txt"), load_lexicon(DATA / "lexicon.txt")
    text = (DATA / "commands.txt").read_text(encoding="utf-8") + "set a timer for <number> minutes\n"
    bigger = parse_grammar(text, "commands.txt + timer <number>")
    lexicon_plus = parse_lexicon((DATA / "lexicon.txt").read_text(encoding="utf-8") + NUMBER_WORDS, "lexicon+")
    result = {
        "host": host(),
        "steps_per_s": args.steps_per_s,
        "chunk_steps": CHUNK,
        "grammars": {
            "commands_50": measure("commands_50", grammar, lexicon, [8, 16, 32, 64], args.repeat, args.steps_per_s),
            "commands_50_plus_timer_number": measure(
                "commands_50+timer", bigger, lexicon_plus, [16], args.repeat, args.steps_per_s
            ),
        },
    }
    save(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
