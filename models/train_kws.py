"""Train the keyword spotter on a Speech-Commands-layout folder; export int8 TFLite + ONNX step models.

    python -m models.train_kws --data DIR --out OUTDIR [--epochs N] [--seed S] [--seeds K] [--units U]
                               [--front F] [--stack S] [--context WAVDIR] [--smoke]

DATA: ``DIR/{train,val,test}/<label>/*.wav`` (what ``python -m models.kws_data`` writes),
or Speech Commands itself: ``DIR/<label>/*.wav`` with ``validation_list.txt`` /
``testing_list.txt`` (else split by the ``<speaker>_nohash_`` prefix hash); a
``_background_noise_`` folder is used as context audio, never as a class. Clips
of any rate / channels are read as the microphone delivers them (16 kHz mono).

**Streaming vs training -- the state problem.** Trained on 1 s clips from a zero
state, an LSTM whose state then runs on forever sees sequences it never met in
training: after minutes of audio its state drifts and it false-fires or goes deaf.
This recipe closes the gap from both sides:

* *Training sees what streaming sees.* Each training sequence is a 1 s clip
  preceded by 0-1 s of **random context** (a span of other clips of the split --
  keywords, words, noise -- and of ``--context`` audio such as sentences), and
  labelled with the clip's label. So the LSTM learns to forget what came before
  the last second, including a keyword that has passed. Sequences of different
  lengths share a batch by pre-padding with masked frames (``models.kws``),
  which is exactly "start from a zero state".
* *Running speech is a negative too.* In a stream the window mostly ends inside
  a sentence, not after an isolated word: ``--context-negatives`` adds 1 s windows
  of the train context sentences (which hold no keyword) labelled ``_unknown_``.
* *Streaming never leaves the training distribution.* The runtime
  (``edge_runtime.pipelines.audio.KeywordSpotter``) runs two state lanes, each
  reset to zero every 2 s, staggered by 1 s, and reads the scores from the lane
  with the older state: it has heard between 1 and 2 s, the very lengths trained
  on. The cost is a second step-model call per step (tens of microseconds). The
  manifest records this (``metrics["detector"]["lanes"]``, ``["state_reset_s"]``),
  and every streaming number we report is measured through that code.

**Normalisation.** Log-mel features go through the front end's causal per-bin
running-mean subtraction (``AudioPreprocessing.normalization="running_mean"``,
2 s time constant; ``edge_runtime.audio.frontend.FeatureNorm``). It removes
microphone gain and colouring (additive in the log domain) using only the past,
so it runs unchanged on an endless stream. Training runs the normaliser over 3 s
of extra preceding audio ("warm-up") before each sequence, so that its running
mean is in the same steady state as on a long stream.

**Seeds.** Results swing with the random seed: ``--seeds K`` trains K seeds and keeps
the one with the best validation accuracy (val = held-out voices); the test split
is only used for the final report.

**Frame stacking.** ``--stack 4`` (default) feeds the LSTM one vector of 4 stacked
frames per step (``models.kws``): it runs at 25 Hz, so a 2 s lane is 50 LSTM steps
instead of 200 -- easier to learn and a quarter of the recurrent work on the board.
Contexts are then whole groups of frames, so every training sequence splits into
groups exactly where the runtime's steps split the stream.

**Augmentation.** Every epoch draws new sequences (random contexts), then warps each
one's mel axis by up to +-12% (vocal-tract-length perturbation: one TTS voice stands
for speakers with shorter or longer vocal tracts) and applies SpecAugment time and
frequency masks (``--no-augment`` turns both off). Held-out speakers, not held-out
clips, are what the model has to generalise to.

**int8.** Unclipped, the LSTM cell state ``c`` can reach tens while most values are
below 1, and one int8 scale cannot hold both. ``--cell-clip 3`` (default) clips ``c``
after every step in training and in the step model alike (``models.kws``), so full
int8 calibration covers its whole range.

**Front end** (``--front-end``). ``logmel`` (above) learns every layer from the
synthetic speech. ``speech-embedding`` puts the LSTM head on Google's speech
embedding (``models.speech_embedding``), which was pretrained on a large amount of
real speech and is kept frozen: one 96-dimensional embedding of the last 76 mel
frames every 80 ms. Each training clip is preceded by 1.7 s of context audio from
the split's bank, the embeddings of the whole span are computed once in one
convolutional pass (25 steps = 2 s, the lane length, the last ending at the clip's
end), for ``--variants`` draws of context (all but the first with mel-axis warping);
every epoch then starts each sequence at a random step between 2 s and 1 s before
its end (masking the rest), which is what the runtime's two lanes see. The step
model is embedding + head, fed the last 76 mel frames every 8 frames.

The exported step model takes 4 frames (40 ms) + (h, c) per call (log-mel). The converter
(``converters.convert.run``, what ``edge-convert`` runs) turns it into int8 TFLite and int8 ONNX, calibrated on
real streaming states. With ``--activations auto`` (default), when int8 activations
lose more than ``--max-accuracy-drop`` (default 1 pp, on 200 test sequences) the
recipe converts again with 16x8 (int8 weights, int16 activations) and records the
rejected int8 drop in the manifest. The converter writes the manifest with the
front end's ``preprocessing.audio`` (the normalisation), ``metrics["training"]``
and ``metrics["detector"]``, the detector's operating point (defaults here;
``models.kws_eval`` tunes them on held-out streams); the folder also gets ``labels.txt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.audio.wav import AudioError
from edge_runtime.manifest import AudioPreprocessing
from models import process_pool
from models.kws import FRONT_ENDS

CLIP_FRAMES = 98  # frames of a 1 s clip: (16000 - 400) // 160 + 1
CHUNK = 4  # frames per streaming step (40 ms)
MAX_CONTEXT = 102  # context frames before a clip: sequences are 98..200 frames, 200 = 2 s = lane reset
SEQ = CLIP_FRAMES + MAX_CONTEXT  # 200, a multiple of CHUNK
WARMUP = 300  # frames of extra audio the normaliser runs over before a sequence (3 s)
NORM_TIME_S = 2.0
LANES, STATE_RESET_S = 2, 2.0
PREPROCESSING = AudioPreprocessing(
    frames_per_step=CHUNK, normalization="running_mean", normalization_time_s=NORM_TIME_S
)
# The speech-embedding front end: 76 mel frames per embedding, one embedding (step) per 8 frames.
EMB_STEPS = 25  # steps per training sequence: 2 s, one lane reset
EMB_MIN_STEPS = 12  # the oldest lane has heard 1..2 s: 12..25 steps
EMB_VARIANTS = 2  # context draws per training clip
DEFAULT_DETECTOR = {
    "threshold": 0.8,
    "smoothing_steps": 3,
    "refractory_s": 1.0,
    "lanes": LANES,
    "state_reset_s": STATE_RESET_S,
}
SPLITS = ("train", "val", "test")
BACKGROUND = "_background_noise_"
UNKNOWN = "_unknown_"


class TrainError(Exception):
    """A problem the user has to fix; one line."""


# ---------------------------------------------------------------- data
@dataclass
class Split:
    files: list[str]
    labels: np.ndarray  # index into the label list
    feats: np.ndarray | None = None  # (N, CLIP_FRAMES, n_mels) raw log-mel


def _speaker(f: Path) -> str:
    return f.name.split("_nohash_")[0]


def find_data(data: Path) -> tuple[list[str], dict[str, tuple[list[str], list[str]]], list[str]]:
    """(labels, split -> (files, label names), background files) from a Speech Commands layout."""
    if not data.is_dir():
        raise TrainError(f"--data {data}: no such folder; pass a Speech-Commands-layout folder")

    def wav(d):
        return sorted(str(f) for f in d.rglob("*") if f.suffix.lower() == ".wav")

    background: list[str] = []
    out: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in SPLITS}
    if (data / "train").is_dir():
        labels = sorted(d.name for d in (data / "train").iterdir() if d.is_dir() and d.name != BACKGROUND)
        for s in SPLITS:
            for lab in labels:
                d = data / s / lab
                if d.is_dir():
                    fs = wav(d)
                    out[s][0].extend(fs)
                    out[s][1].extend([lab] * len(fs))
            if (data / s / BACKGROUND).is_dir():
                background += wav(data / s / BACKGROUND)
    else:
        labels = sorted(
            d.name for d in data.iterdir() if d.is_dir() and d.name != BACKGROUND and not d.name.startswith(".")
        )
        lists = {}
        for s, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
            if (data / name).is_file():
                lists[s] = {ln.strip() for ln in (data / name).read_text().splitlines() if ln.strip()}
        for lab in labels:
            for f in wav(data / lab):
                rel = Path(f).relative_to(data).as_posix()
                if lists:
                    s = "val" if rel in lists.get("val", ()) else "test" if rel in lists.get("test", ()) else "train"
                else:  # as Speech Commands: a speaker's clips all land in one split
                    h = int(hashlib.sha1(_speaker(Path(f)).encode()).hexdigest(), 16) % 100
                    s = "val" if h < 10 else "test" if h < 20 else "train"
                out[s][0].append(f)
                out[s][1].append(lab)
        if (data / BACKGROUND).is_dir():
            background = wav(data / BACKGROUND)
    if len(labels) < 2:
        raise TrainError(f"--data {data}: found {len(labels)} label folders; need at least two classes")
    for s in ("train", "val"):
        if not out[s][0]:
            raise TrainError(f"--data {data}: the {s} split has no WAV files")
    return labels, out, background


def front_end_preprocessing(front_end: str) -> AudioPreprocessing:
    """The front end the runtime runs for a recipe front end (``--front-end``)."""
    if front_end == "speech-embedding":
        from edge_runtime.audio.frontend import SPEECH_EMBEDDING
        from models import speech_embedding as se

        return dataclasses.replace(SPEECH_EMBEDDING, frames_per_step=se.STRIDE, window_frames=se.WINDOW)
    return PREPROCESSING


def _clip_feats(path: str, p: AudioPreprocessing | None = None) -> np.ndarray:
    from edge_runtime.audio.frontend import log_mel, raw
    from edge_runtime.audio.wav import read_wav

    p = raw(p or PREPROCESSING)
    x = read_wav(path, p.sample_rate)
    n = p.sample_rate
    x = x[:n] if len(x) >= n else np.concatenate([x, np.zeros(n - len(x), np.float32)])
    return log_mel(x, p)


def _long_feats(path: str, p: AudioPreprocessing | None = None) -> np.ndarray:
    from edge_runtime.audio.frontend import log_mel, raw
    from edge_runtime.audio.wav import read_wav

    p = raw(p or PREPROCESSING)
    return log_mel(read_wav(path, p.sample_rate), p)


def features(files: list[str], desc: str, fn=_clip_feats, jobs: int = 2) -> list[np.ndarray]:
    from tqdm import tqdm

    if not files:
        return []
    with process_pool(jobs) as pool:
        return list(
            tqdm(
                pool.imap(fn, files, chunksize=16),
                total=len(files),
                desc=desc,
                unit="wav",
                file=sys.stderr,
                mininterval=2.0,
            )
        )


# ---------------------------------------------------------------- sequences
def context_bank(clips: np.ndarray, extra: list[np.ndarray], seed, min_frames: int) -> np.ndarray:
    """A split's clips and context audio in a random order, as one run of frames; tiled when
    shorter than ``min_frames + 1`` so that spans of ``min_frames`` can always be drawn from it."""
    rng = np.random.default_rng(seed)
    parts = [clips[i] for i in rng.permutation(len(clips))] + list(extra)
    order = rng.permutation(len(parts))
    bank = np.concatenate([parts[i] for i in order]).astype(np.float32)
    if len(bank) < min_frames + 1:
        bank = np.tile(bank, ((min_frames + 1) // max(1, len(bank)) + 1, 1))
    return bank


class Sequences:
    """Training/eval sequences: ``[warm-up | context | clip]`` frames from a split's context bank."""

    def __init__(self, clips: np.ndarray, extra: list[np.ndarray], seed: int) -> None:
        from edge_runtime.audio.frontend import FeatureNorm

        self.bank = context_bank(clips, extra, seed, WARMUP + MAX_CONTEXT)
        self.norm = lambda: FeatureNorm(PREPROCESSING)

    def make(
        self, clips: np.ndarray, rng: np.random.Generator, context: int | None = None, stack: int = 1
    ) -> np.ndarray:
        """(N, SEQ, n_mels) normalised sequences, pre-padded with MASK_VALUE where shorter than SEQ.

        Random context lengths are rounded up so that context + clip is a whole number of
        ``stack``-frame groups (SEQ is one): the padding then fills whole groups.
        """
        from models.kws import MASK_VALUE

        n = len(clips)
        ctx = np.full(n, context) if context is not None else rng.integers(0, MAX_CONTEXT + 1, size=n)
        ctx = ctx + (-(ctx + CLIP_FRAMES)) % stack
        span = WARMUP + MAX_CONTEXT
        starts = rng.integers(0, len(self.bank) - span, size=n)
        idx = starts[:, None] + np.arange(span)[None, :]
        full = np.concatenate([self.bank[idx], clips], axis=1)  # (N, WARMUP+MAX_CONTEXT+98, F)
        # Shorter contexts: the normaliser and LSTM see the bank span end at the clip start.
        out = np.full((n, SEQ, clips.shape[2]), MASK_VALUE, dtype=np.float32)
        for c in np.unique(ctx):
            sel = np.flatnonzero(ctx == c)
            x = np.concatenate([full[sel, MAX_CONTEXT - c : WARMUP + MAX_CONTEXT], clips[sel]], axis=1)
            y = self.norm().process(x)  # warm-up + context + clip through the one normaliser
            out[sel, SEQ - (c + CLIP_FRAMES) :] = y[:, WARMUP:]
        return out


def spec_augment(
    x: np.ndarray, rng: np.random.Generator, masks: int = 2, max_bins: int = 6, max_frames: int = 10
) -> np.ndarray:
    """SpecAugment (Park et al., 2019) on normalised sequences: per sequence, ``masks`` bands of up
    to ``max_bins`` mel bins and ``masks`` spans of up to ``max_frames`` frames set to 0 (the
    normalised mean); padding frames stay as they are. A new draw every epoch."""
    from models.kws import MASK_VALUE

    n, frames, bins = x.shape
    drop = np.zeros((n, frames, bins), dtype=bool)
    for size, axis in ((bins, 2), (frames, 1)):
        width = max_bins if axis == 2 else max_frames
        pos = np.arange(size)[None, :]
        for _ in range(masks):
            w = rng.integers(0, width + 1, size=n)[:, None]
            start = rng.integers(0, size - w[:, 0] + 1)[:, None]
            band = (pos >= start) & (pos < start + w)  # (n, size)
            drop |= band[:, None, :] if axis == 2 else band[:, :, None]
    return np.where(drop & (x != MASK_VALUE), np.float32(0.0), x)


def freq_warp(x: np.ndarray, rng: np.random.Generator, max_warp: float = 0.12) -> np.ndarray:
    """Vocal-tract-length perturbation in the mel domain: every sequence's bins are resampled at
    ``k * a`` (linear interpolation, clamped at the top), ``a`` uniform in ``1 +- max_warp``, so one
    TTS voice sounds like speakers with shorter or longer vocal tracts. Linear across bins with
    weights fixed over time, it commutes with the per-bin running-mean normalisation, so it can
    run on normalised sequences. Padding frames are kept exact (the LSTM's mask)."""
    from models.kws import MASK_VALUE

    n, _, bins = x.shape
    pos = np.clip(np.arange(bins)[None, :] * rng.uniform(1 - max_warp, 1 + max_warp, size=(n, 1)), 0, bins - 1)
    lo = np.minimum(pos.astype(np.int64), bins - 2)
    w = (pos - lo).astype(np.float32)
    interp = np.zeros((n, bins, bins), np.float32)  # (source bin, output bin) weights per sequence
    seq, out_bin = np.arange(n)[:, None], np.arange(bins)[None, :]
    interp[seq, lo, out_bin] = 1 - w
    interp[seq, lo + 1, out_bin] += w
    warped = np.matmul(x, interp)
    pad = x[:, :, :1] == MASK_VALUE
    return np.where(pad, x, warped)


class EmbeddingSequences:
    """Speech-embedding sequences: ``EMB_STEPS`` embeddings every 80 ms, the last ending at the clip's end.

    ``mel(clips)`` prefixes every 1 s clip of raw mel frames with context frames from the
    split's bank (other clips and context audio, as :class:`Sequences`) so that the span
    holds exactly the ``76 + 8 * (EMB_STEPS - 1)`` frames the embeddings need;
    ``embed`` runs the frozen embedding over it in one pass.
    """

    def __init__(self, clips: np.ndarray, extra: list[np.ndarray], seed) -> None:
        from models import speech_embedding as se

        self.span = se.WINDOW + se.STRIDE * (EMB_STEPS - 1)
        self.bank = context_bank(clips, extra, seed, self.span - clips.shape[1])
        self.net = None

    def mel(self, clips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        need = self.span - clips.shape[1]
        starts = rng.integers(0, len(self.bank) - need, size=len(clips))
        return np.concatenate([self.bank[starts[:, None] + np.arange(need)[None, :]], clips], axis=1)

    def embed(self, mel: np.ndarray, desc: str) -> np.ndarray:
        from tqdm import tqdm

        from models import speech_embedding as se

        if self.net is None:
            self.net = se.model(None)
        out = []
        for i in tqdm(range(0, len(mel), 512), desc=desc, unit="x512", file=sys.stderr, mininterval=2.0):
            out.append(se.embed_frames(mel[i : i + 512], self.net))
        return np.concatenate(out) if out else np.zeros((0, EMB_STEPS, se.DIM), np.float32)


def random_starts(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Embedding sequences that start (from a zero state) between 2 s and 1 s before their end:
    the first 0..``EMB_STEPS - EMB_MIN_STEPS`` steps of each are masked; a new draw every epoch."""
    from models.kws import MASK_VALUE

    drop = rng.integers(0, EMB_STEPS - EMB_MIN_STEPS + 1, size=len(x))
    masked = np.arange(x.shape[1])[None, :] < drop[:, None]
    return np.where(masked[:, :, None], np.float32(MASK_VALUE), x)


# ---------------------------------------------------------------- training
def train_one(
    seed: int,
    build,
    epoch_data,
    epochs: int,
    y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    batch: int = 32,
    log=print,
):
    """Train ``build()`` for ``epochs`` epochs on ``epoch_data(rng)`` (new sequences every epoch),
    keeping the weights of the epoch with the best accuracy on ``val_x``."""
    import keras
    from tqdm import tqdm

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng([seed, 7])
    model = build()
    steps = epochs * int(np.ceil(len(y) / batch))
    lr = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=max(1, steps), alpha=0.05)
    model.compile(keras.optimizers.Adam(lr, clipnorm=1.0), "sparse_categorical_crossentropy", metrics=["accuracy"])
    best, best_w = -1.0, None
    bar = tqdm(range(epochs), desc=f"seed {seed}", unit="epoch", file=sys.stderr)
    for ep in bar:
        h = model.fit(epoch_data(rng), y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
        acc = float((model.predict(val_x, batch_size=256, verbose=0).argmax(1) == val_y).mean())
        if acc > best:
            best, best_w = acc, model.get_weights()
        bar.set_postfix(loss=f"{h.history['loss'][-1]:.3f}", val=f"{acc:.3f}", best=f"{best:.3f}")
        log(
            f"seed {seed} epoch {ep + 1}/{epochs}: loss {h.history['loss'][-1]:.4f} "
            f"train acc {h.history['accuracy'][-1]:.4f} val acc {acc:.4f}"
        )
    model.set_weights(best_w)
    return model, best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.train_kws", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="Speech-Commands-layout folder")
    ap.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--seeds", type=int, default=3, help="seeds to train; the best on validation is kept")
    ap.add_argument("--units", type=int, default=128, help="LSTM units")
    ap.add_argument(
        "--front", type=int, default=128, help="units of the per-step Dense(relu) before the LSTM (0: none)"
    )
    ap.add_argument(
        "--stack",
        type=int,
        default=CHUNK,
        choices=[1, 2, 4],
        help=f"frames stacked into one LSTM step (divides the {CHUNK}-frame streaming step; default {CHUNK})",
    )
    ap.add_argument("--batch", type=int, default=64, help="batch size")
    ap.add_argument(
        "--cell-clip",
        type=float,
        default=3.0,
        help="clip the LSTM cell state to +-this after every step, so int8 can hold it (0: no clip)",
    )
    ap.add_argument("--dropout", type=float, default=0.3, help="dropout after the LSTM while training")
    ap.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="train without feature augmentation (mel-axis warping and SpecAugment masks)",
    )
    ap.add_argument(
        "--work",
        type=Path,
        help="where to keep the float models and test sequences for evaluation (default: OUT/../.OUT-work)",
    )
    ap.add_argument(
        "--context",
        type=Path,
        help="folder of long WAVs (e.g. sentences) used as context audio; "
        "train/ and val/ sub-folders go to those splits; must hold no keyword",
    )
    ap.add_argument(
        "--context-negatives",
        type=float,
        default=0.15,
        help="add this many 1 s windows of train context audio, as a share of the train clips, "
        "labelled _unknown_ (default 0.15)",
    )
    ap.add_argument(
        "--front-end",
        choices=FRONT_ENDS,
        default="logmel",
        help="what the LSTM reads: stacked log-mel frames, or the frozen pretrained speech embedding "
        "every 80 ms (default logmel)",
    )
    ap.add_argument(
        "--variants",
        type=int,
        default=EMB_VARIANTS,
        help=f"speech-embedding: context draws per training clip, computed once (default {EMB_VARIANTS})",
    )
    ap.add_argument("--name", default="kws-lstm")
    ap.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        help="edge-convert refuses int8 models losing more than this (pp); default 1",
    )
    ap.add_argument(
        "--activations",
        choices=["auto", "int8", "int16"],
        default="auto",
        help="int8, int16 (16x8), or auto: int8 unless it loses more than --max-accuracy-drop, then 16x8",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny data, model and epochs (CI)")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except (TrainError, AudioError) as e:  # an AudioError names the WAV file
        print(f"train_kws: error: {e}", file=sys.stderr)
        return 2


def context_windows(
    long_feats: list[np.ndarray], n: int, rng: np.random.Generator, frames: int = CLIP_FRAMES
) -> np.ndarray:
    """``n`` random 1 s windows (``frames`` frames) of the context audio, to train as ``_unknown_``.

    In a stream the window mostly ends inside running speech, not an isolated word; without
    these the model never sees "the end of some sentence" labelled as not-a-keyword, and
    false-fires on continuous speech. Context audio must therefore hold no keyword.
    """
    usable = [f for f in long_feats if len(f) >= frames]
    if not usable or n <= 0:
        return np.zeros((0, frames, long_feats[0].shape[1] if long_feats else 40), np.float32)
    spans = np.asarray([len(f) - frames + 1 for f in usable], np.float64)
    which = rng.choice(len(usable), size=n, p=spans / spans.sum())
    starts = (rng.random(n) * spans[which]).astype(np.int64)
    return np.stack([usable[w][s : s + frames] for w, s in zip(which, starts)]).astype(np.float32)


def _limit(files: list[str], names: list[str], per_label: int | None, seed: int) -> tuple[list[str], list[str]]:
    if per_label is None:
        return files, names
    rng = np.random.default_rng(seed)
    keep = []
    for lab in sorted(set(names)):
        idx = [i for i, n in enumerate(names) if n == lab]
        keep += sorted(rng.permutation(idx)[:per_label].tolist())
    keep.sort()
    return [files[i] for i in keep], [names[i] for i in keep]


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, low in (
        ("--epochs", args.epochs, 1),
        ("--seeds", args.seeds, 1),
        ("--units", args.units, 1),
        ("--front", args.front, 0),
        ("--batch", args.batch, 1),
        ("--variants", args.variants, 1),
    ):
        if value < low:
            raise TrainError(f"{flag} {value}: must be at least {low}")
    if not 0 <= args.dropout < 1:
        raise TrainError(f"--dropout {args.dropout}: must be at least 0 and below 1")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t_start = time.monotonic()
    _check_numbers(args)
    if args.smoke:
        args.epochs, args.seeds, args.units, args.front = min(args.epochs, 2), 1, 16, 16
        args.max_accuracy_drop = 100.0  # a smoke run checks the pipeline, not the accuracy
    labels, split_files, background = find_data(args.data)
    pre = front_end_preprocessing(args.front_end)
    clip_fn, long_fn = partial(_clip_feats, p=pre), partial(_long_feats, p=pre)
    per_label = {"train": 12, "val": 4, "test": 4} if args.smoke else {}
    splits: dict[str, Split] = {}
    for s in SPLITS:
        files, names = _limit(*split_files[s], per_label.get(s), args.seed)
        if not files:
            continue
        feats = features(files, f"features {s}", fn=clip_fn)
        splits[s] = Split(files, np.asarray([labels.index(n) for n in names]), np.stack(feats))
    extra: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for f in background:
        extra["train"].append(long_fn(f))
    if args.context and not args.smoke:
        for s in ("train", "val", "test"):
            d = args.context / s
            files = sorted(str(f) for f in d.glob("*.wav")) if d.is_dir() else []
            if s == "train" and not files and args.context.is_dir():
                files = sorted(str(f) for f in args.context.glob("*.wav"))
            extra[s] += features(files, f"context {s}", fn=long_fn)
    if args.context and not args.smoke and args.context_negatives > 0 and UNKNOWN in labels:
        tr = splits["train"]
        windows = context_windows(
            extra["train"][len(background) :],
            int(args.context_negatives * len(tr.labels)),
            np.random.default_rng([args.seed, 3]),
            frames=tr.feats.shape[1],
        )
        splits["train"] = Split(
            tr.files + ["<context>"] * len(windows),
            np.concatenate([tr.labels, np.full(len(windows), labels.index(UNKNOWN))]),
            np.concatenate([tr.feats, windows]) if len(windows) else tr.feats,
        )
    lines: list[str] = []

    def log(m: str) -> None:
        lines.append(m)
        print(m, flush=True)

    log(f"data {args.data}: {len(labels)} labels, " + ", ".join(f"{s} {len(sp.labels)}" for s, sp in splits.items()))
    if args.front_end == "speech-embedding":
        build, epoch_data, fixed, head_in = _embedding_setup(args, labels, splits, extra)
    else:
        build, epoch_data, fixed = _logmel_setup(args, labels, splits, extra)
        head_in = fixed

    results = []
    best = None
    for seed in range(args.seed, args.seed + args.seeds):
        model, acc = train_one(
            seed,
            build,
            epoch_data,
            args.epochs,
            splits["train"].labels,
            head_in["val"],
            splits["val"].labels,
            batch=args.batch,
            log=log,
        )
        results.append({"seed": seed, "val_accuracy": acc})
        if best is None or acc > best[1]:
            best = (model, acc, seed)
    model, val_acc, seed = best
    log(f"picked seed {seed} (val accuracy {val_acc:.4f}; all: {results})")
    test_acc = None
    if "test" in splits:
        test_acc = float(
            (model.predict(head_in["test"], batch_size=256, verbose=0).argmax(1) == splits["test"].labels).mean()
        )
        log(f"float test accuracy (non-streaming model, 1 s context): {test_acc:.4f}")
    export(
        model,
        args,
        labels,
        splits,
        fixed,
        head_in,
        {
            "seeds": results,
            "picked_seed": seed,
            "val_accuracy": val_acc,
            "float_test_accuracy": test_acc,
            "front_end": args.front_end,
            "variants": args.variants if args.front_end == "speech-embedding" else None,
            "epochs": args.epochs,
            "units": args.units,
            "front": args.front,
            "stack": args.stack,
            "augment": args.augment,
            "dropout": args.dropout,
            "cell_clip": args.cell_clip,
            "context_negatives": args.context_negatives,
            "train_clips": len(splits["train"].labels),
            "train_seconds": round(time.monotonic() - t_start, 1),
            "data": str(args.data),
            "batch": args.batch,
            **_voices(args.data),
        },
    )
    return 0


def _logmel_setup(args, labels: list[str], splits: dict[str, Split], extra: dict[str, list[np.ndarray]]):
    """Model factory, per-epoch training data and fixed (1 s context) sequences for the log-mel LSTM."""
    from models import kws

    banks = {
        s: Sequences(sp.feats, extra[s] or extra["train"], seed=[args.seed, i])
        for i, (s, sp) in enumerate(splits.items())
    }
    fixed = {
        s: banks[s].make(sp.feats, np.random.default_rng([args.seed, 99, i]), context=MAX_CONTEXT)
        for i, (s, sp) in enumerate(splits.items())
    }
    train = splits["train"]

    def build():
        return kws.build(
            None,
            train.feats.shape[2],
            len(labels),
            args.units,
            masked=True,
            dropout=args.dropout,
            front=args.front,
            scale=kws.INPUT_SCALE,
            stack=args.stack,
            cell_clip=args.cell_clip,
        )

    def epoch_data(rng):
        x = banks["train"].make(train.feats, rng, stack=args.stack)
        return spec_augment(freq_warp(x, rng), rng) if args.augment else x

    return build, epoch_data, fixed


def _embedding_setup(args, labels: list[str], splits: dict[str, Split], extra: dict[str, list[np.ndarray]]):
    """The same for the speech-embedding head: embeddings are computed once per clip and context draw.

    Returns the mel-frame sequences (``fixed``, what the step model and the converter are fed)
    and the embeddings of the same sequences (``head_in``, what the head trained on).
    """
    from models import kws
    from models import speech_embedding as se

    banks = {
        s: EmbeddingSequences(sp.feats, extra[s] or extra["train"], seed=[args.seed, i])
        for i, (s, sp) in enumerate(splits.items())
    }
    fixed = {
        s: banks[s].mel(sp.feats, np.random.default_rng([args.seed, 99, i])) for i, (s, sp) in enumerate(splits.items())
    }
    head_in = {s: banks[s].embed(x, f"embeddings {s}") for s, x in fixed.items()}
    train = splits["train"]
    variants = [head_in["train"]]
    for v in range(1, args.variants):
        rng = np.random.default_rng([args.seed, 50, v])
        mel = banks["train"].mel(train.feats, rng)
        variants.append(banks["train"].embed(freq_warp(mel, rng) if args.augment else mel, f"embeddings train v{v}"))
    flat = head_in["train"].reshape(-1, se.DIM)
    norm = (flat.mean(axis=0), np.maximum(flat.var(axis=0), 1e-6))
    stacked = np.stack(variants)

    def build():
        return kws.build(
            None,
            se.DIM,
            len(labels),
            args.units,
            masked=True,
            dropout=args.dropout,
            front=args.front,
            cell_clip=args.cell_clip,
            norm=norm,
        )

    def epoch_data(rng):
        pick = rng.integers(0, len(stacked), size=stacked.shape[1])
        return random_starts(stacked[pick, np.arange(stacked.shape[1])], rng)

    return build, epoch_data, fixed, head_in


def _voices(data: Path) -> dict[str, Any]:
    """The held-out voices of a models.kws_data set (voices.json), so tests can speak with unseen voices."""
    try:
        meta = json.loads((data / "voices.json").read_text())
        return {"val_voices": meta["splits"]["val"], "test_voices": meta["splits"]["test"]}
    except (OSError, KeyError, ValueError):
        return {}


def convert_step(
    tool: str, args: argparse.Namespace, info: dict[str, Any], work: Path, step_file: str, **options: Any
) -> None:
    """The converter's Python API on the step model ``work / step_file``: int8 activations, then 16x8
    (``--activations auto``) until one passes the accuracy gate (a rejected try is recorded in ``info``,
    the manifest's training metrics); prints the converter's summary. It reads the work folder as the
    recipes write it (``calib.npz``, ``eval.npz``, ``labels.txt``) and writes ``args.out`` (named
    ``args.name``) with its ``labels.txt``. ``options`` are the rest of its Options."""
    options = dict(
        source=work / step_file,
        out=args.out,
        calibration=work / "calib.npz",
        eval=work / "eval.npz",
        labels=work / "labels.txt",
        name=args.name,
        calibration_limit=1000,
        **options,
    )
    from converters.cli import QuietNative
    from converters.convert import Options, run, summary_lines
    from converters.errors import AccuracyError, ConvertError

    tries = ["int8", "int16"] if args.activations == "auto" else [args.activations]
    for i, act in enumerate(tries):
        opts = Options(
            max_accuracy_drop=args.max_accuracy_drop,
            activations=act,
            # a smoke run checks the pipeline: one calibration, no search for a more faithful int8
            **({"calibration_method": "minmax", "mixed_precision": False} if args.smoke else {}),
            **options,
        )
        try:
            with QuietNative(True):
                report = run(opts)
        except ConvertError as e:
            raise TrainError(f"edge-convert: {e}") from None
        except AccuracyError as e:
            if i + 1 == len(tries):
                raise TrainError(f"edge-convert: accuracy check failed: {e}") from None
            print(
                f"{tool}: {act} activations lost more than {args.max_accuracy_drop} pp; trying {tries[i + 1]}",
                file=sys.stderr,
            )
            info["rejected_activations"] = {act: e.report.accuracy_drop_pp}
            continue
        print("\n".join(summary_lines(report)))
        (args.out / "labels.txt").write_bytes((work / "labels.txt").read_bytes())
        return


def export(model, args, labels, splits, fixed, head_in, info: dict[str, Any]) -> None:
    from models import kws

    work = args.work or args.out.parent / f".{args.out.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    model.save(str(work / "kws_float.keras"))  # kept first: a failed conversion must not lose the training
    step = kws.streaming_step(model, CHUNK, front_end=args.front_end)
    step.save(str(work / "kws_step.keras"))
    ev = "test" if "test" in splits else "val"
    pre = front_end_preprocessing(args.front_end)
    # features: what the step model is fed; head_inputs: what the float (whole-window) model takes
    np.savez_compressed(
        work / "test_sequences.npz", features=fixed[ev], head_inputs=head_in[ev], labels=splits[ev].labels
    )
    (work / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    (work / "labels.txt").write_text("\n".join(labels) + "\n")
    rng = np.random.default_rng(5)
    tr = splits["train"]
    pick = rng.choice(len(tr.labels), size=min(len(tr.labels), 60 if args.smoke else 200), replace=False)
    np.savez(work / "calib.npz", features=fixed["train"][pick])
    np.savez(work / "eval.npz", features=fixed[ev], labels=splits[ev].labels)
    detector = dict(DEFAULT_DETECTOR, source="defaults (not tuned; run python -m models.kws_eval)")
    convert_step(
        "train_kws",
        args,
        info,
        work,
        "kws_step.keras",
        eval_limit=60 if args.smoke else 200,
        hop_frames=pre.frames_per_step,
        audio=pre,
        extra_metrics={"detector": detector, "training": info},
    )
    print(
        f"wrote {args.out}/ (manifest.json, model files, report.json, report.html, labels.txt); float models in {work}"
    )


if __name__ == "__main__":
    sys.exit(main())
