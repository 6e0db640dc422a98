"""Keyword-data synthesis speed per TTS engine on this host, one process (``--jobs 1``).

    python bench/kws_tts.py [--clips 60] [--out bench/results/kws_tts.json]

For each engine of models.tts_engines (restricted voices included, so every engine
is measured): ``utterances_per_s`` speaks one augmented keyword per call (the TTS
call alone, one process start per call for the command-line engines, Piper in
process with its model loaded once); ``clips_per_s`` renders whole data-set clips
(``models.kws_data.render_clip``: keywords, unknown words, snippets, babble noise with
3-6 talkers of the same engine, reverberation) planned from that engine's voices
only. The engines are measured one after the other in one run; absolute figures
depend on the machine and its load, their ratios less so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402


def main() -> int:
    from models import kws_data as kd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=60, help="clips (and utterances) per engine")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kws_tts.json")
    args = ap.parse_args()
    params = kd.Params(restricted_voices=True)
    kd.check_params(params)
    voices = kd.licence_filter(kd.all_voices(params), params)[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in kd.ENGINES:
            mine = [v for v in voices if v.engine == name]
            rng = np.random.default_rng(0)
            utts = [kd._utterance(rng, mine[i % len(mine)], kd.KEYWORDS[i % 10], params) for i in range(args.clips)]
            kd.synthesize(utts[0], tmp)  # warm-up: Piper loads its model once per process
            t0 = time.perf_counter()
            for u in utts:
                kd.synthesize(u, tmp)
            utt_s = time.perf_counter() - t0
            per_word = max(1, args.clips // len(kd.LABELS))
            tasks = [
                t
                for t in kd.plan_clips(Path(tmp) / name, {s: mine for s in kd.SPLITS}, per_word, 0, params)
                if t.split == "train"
            ]
            Path(tmp, name, "train").mkdir(parents=True)
            for label in kd.LABELS:
                Path(tmp, name, "train", label).mkdir()
            t0 = time.perf_counter()
            for t in tasks:
                kd.render_clip(t, tmp)
            clip_s = time.perf_counter() - t0
            results[name] = {
                "voices": len(mine),
                "utterances_per_s": round(len(utts) / utt_s, 1),
                "clips_per_s": round(len(tasks) / clip_s, 1),
                "clips": len(tasks),
            }
            print(name, results[name], flush=True)
    out = {"host": host(), "engines": kd.engine_versions(), "jobs": 1, "results": results}
    save(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
