"""Train the streaming CTC phoneme model on a models.asr_data set; export int8 (or 16x8) TFLite + ONNX step models.

    python -m models.train_asr --data DIR --out OUTDIR [--front-end logmel|speech-embedding]
                               [--epochs N] [--units U] [--front F] [--seed S] [--smoke]

DATA: what ``python -m models.asr_data`` writes (``clips.jsonl`` with each clip's phonemes,
``lexicon.txt``, ``{train,val,test}/*.wav``).

**The model** is the keyword spotter's streaming LSTM (``models.kws.build`` with ``per_step``): the same
front end, frame stacking, cell-state clipping and explicit ``(h, c)`` state, with a linear output layer
at every step trained with CTC (``tf.nn.ctc_loss``) on the phoneme sequence of each sentence.
Its outputs are the blank and the phonemes, in that order (``labels = [<blank>, phonemes...]``), the
labels the grammar decoder (``edge_runtime.asr.decoder``) takes with ``blank = "<blank>"``. One step
is 40 ms: four stacked log-mel frames (``logmel``), or the frozen pretrained speech embedding of the
last 76 mel frames every 4 frames (``speech-embedding``; its own stride is 8 frames, 12.5 steps a
second, too few for fast speech under CTC, so training interleaves the embeddings of two passes 4 frames
apart and the step model reads a 76-frame window every 4 frames). Every clip is a whole sentence with
room noise before and after, run from a zero state; the log-mel features go through the runtime's
causal running-mean normalisation from the clip's first frame (its lead-in noise).

**Training** draws batches of similar length, with the keyword recipe's mel-axis warping and SpecAugment
masks (log-mel; ``--no-augment`` turns them off), keeps the epoch with the lowest validation phoneme
error rate (val = held-out voices) and reports on validation and test:

* ``per_greedy``: phoneme error rate of greedy CTC decoding (best label per step, repeats merged,
  blanks dropped) against the labels: edit distance / label length;
* ``phrase_accuracy``: the share of clips for which ``GrammarDecoder`` on a grammar of that split's
  sentences (one phrase a line, the data set's lexicon) accepts exactly the sentence said.

**Export.** ``models.kws.streaming_step`` makes the step model ``(features, h, c) -> (posteriors, h',
c')`` (one LSTM step, softmax); the converter (``converters.convert.run``, what ``edge-convert`` runs)
makes int8 TFLite and ONNX, calibrated on real streaming states, and 16x8 when int8 loses more than
``--max-accuracy-drop`` of agreement with float (``--activations auto``), or when the int8 artifacts,
decoded through the grammar on up to 300 val clips, lose more than ``--max-accuracy-drop`` pp of phrase
accuracy against float (the converter's gate sees step outputs, not decoded phrases; the rejected try is
``metrics["training"]["rejected_activations"]``). The manifest records the
labels, the front end, ``metrics["asr"]`` (blank, phoneme set, lexicon file and its sha256, step
duration) and ``metrics["training"]``; the folder also gets ``labels.txt`` and ``lexicon.txt``. Then
each artifact runs on the board's engines and streaming loop (``KeywordSpotter.posteriors`` from the WAV
files) over up to 300 test clips, and its greedy PER and phrase accuracy beside float's on the same clips
(the quantization drop) go to ``artifacts_eval.json`` in the work folder.
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
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.manifest import AudioPreprocessing
from models.kws import FRONT_ENDS
from models.train_kws import CHUNK, PREPROCESSING, TrainError, convert_step, features, freq_warp, spec_augment

BLANK = "<blank>"
STEP_S = 0.04  # CHUNK frames of 10 ms
SPLITS = ("train", "val", "test")
EVAL_FRAMES = 300  # frames (3 s) of each clip the converter calibrates and evaluates on
LENGTH_QUANTUM = 100  # frames a batch is padded to a multiple of (few distinct shapes to trace)
PHONEME_SET = "espeak-ng -v en-us -q -x --sep=_ mnemonics without stress (models.g2p.phonemes_of)"


@dataclass(frozen=True)
class Clip:
    path: str
    text: str
    phonemes: tuple[str, ...]


def read_clips(data: Path) -> dict[str, list[Clip]]:
    """The clips of each split from ``clips.jsonl``."""
    path = data / "clips.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        out: dict[str, list[Clip]] = {s: [] for s in SPLITS}
        for r in rows:
            out[r["split"]].append(Clip(str(data / r["path"]), r["text"], tuple(r["phonemes"].split())))
    except OSError as e:
        raise TrainError(
            f"--data {data}: cannot read clips.jsonl ({e.strerror}); pass a models.asr_data folder"
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise TrainError(f"--data {path}: not a models.asr_data clip list ({e})") from None
    for s in ("train", "val"):
        if not out[s]:
            raise TrainError(f"--data {data}: the {s} split has no clips")
    return out


def front_end_preprocessing(front_end: str) -> AudioPreprocessing:
    """The runtime's front end for ``--front-end``: a step every :data:`CHUNK` frames either way."""
    if front_end == "speech-embedding":
        from edge_runtime.audio.frontend import SPEECH_EMBEDDING
        from models import speech_embedding as se

        return dataclasses.replace(SPEECH_EMBEDDING, frames_per_step=CHUNK, window_frames=se.WINDOW)
    return PREPROCESSING


def normalised_logmel(path: str) -> np.ndarray:
    """The runtime's log-mel frames of a clip (running-mean normalised from its first frame), cut to
    whole steps."""
    from edge_runtime.audio.frontend import FeatureNorm
    from models.train_kws import _long_feats

    x = FeatureNorm(PREPROCESSING).process(_long_feats(path, PREPROCESSING))
    return x[: len(x) - len(x) % CHUNK]


def embedding_mel(path: str) -> np.ndarray:
    """The speech embedding's mel frames of a clip, led by its first 10 frames (room noise) repeated so
    that the first 76-frame window ends at the clip's first step; ``76 + 4k`` frames."""
    from models import speech_embedding as se
    from models.train_kws import _long_feats

    mel = _long_feats(path, front_end_preprocessing("speech-embedding"))
    lead = np.resize(mel[:10], (se.WINDOW - CHUNK, mel.shape[1]))
    mel = np.concatenate([lead, mel[: len(mel) - len(mel) % CHUNK]])
    return mel.astype(np.float32)


def embed_every_step(mel: np.ndarray, net) -> np.ndarray:
    """``(k + 1, 96)`` embeddings of the 76-frame windows ending every 4 frames of ``76 + 4k`` mel frames:
    two passes of the embedding (stride 8) 4 frames apart, interleaved."""
    from models import speech_embedding as se

    steps = (len(mel) - se.WINDOW) // CHUNK + 1
    out = np.zeros((steps, se.DIM), np.float32)
    for offset in (0, 1):
        n = (steps - offset + 1) // 2
        if n <= 0:
            continue
        span = mel[offset * CHUNK : offset * CHUNK + se.WINDOW + se.STRIDE * (n - 1)]
        out[offset::2] = np.asarray(net(span[None], training=False))[0, :n]
    return out


def phoneme_error(refs: list[tuple[int, ...]], hyps: list[tuple[int, ...]]) -> float:
    """Edit distance summed over utterances / label length summed."""
    from models.g2p import _distance

    return sum(_distance(h, r) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))


def greedy(logits: np.ndarray) -> tuple[int, ...]:
    """Best label per step, repeats merged, blanks (0) dropped."""
    best = np.argmax(logits, axis=-1)
    return tuple(int(b) for i, b in enumerate(best) if b != 0 and (i == 0 or b != best[i - 1]))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return (x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))).astype(np.float32)


def phrase_accuracy(texts: list[str], log_posteriors: list[np.ndarray], lexicon, labels: list[str]) -> dict:
    """GrammarDecoder over a grammar of ``texts`` (their distinct sentences, one phrase a line): the
    share of clips whose accepted phrases are exactly their own sentence."""
    from edge_runtime.asr.decoder import GrammarDecoder
    from edge_runtime.asr.grammar import parse_grammar
    from edge_runtime.asr.prefix_tree import PrefixTree

    grammar = parse_grammar("\n".join(sorted(set(texts))), "<sentences>")
    tree = PrefixTree.build(grammar.expansions, lexicon, labels, BLANK, grammar.where)
    right = anything = 0
    for text, lp in zip(texts, log_posteriors):
        dec = GrammarDecoder(tree)
        got = [r.phrase for r in dec.push(lp) + dec.flush() if r.accepted]
        right += got == [text]
        anything += bool(got)
    n = max(1, len(texts))
    return {"phrase_accuracy": right / n, "accepted_share": anything / n, "phrases": len(grammar.expansions)}


# ---------------------------------------------------------------- data
@dataclass
class Split:
    clips: list[Clip]
    x: list[np.ndarray]  # per clip: (frames, n_mels) log-mel, or (steps, 96) embeddings
    y: list[np.ndarray]  # per clip: label indices (1.. = phonemes)
    mel: list[np.ndarray] | None = None  # speech-embedding: the mel frames the step model reads


def load_splits(args, clips: dict[str, list[Clip]], labels: list[str], limit: dict[str, int]) -> dict[str, Split]:
    from tqdm import tqdm

    index = {p: i for i, p in enumerate(labels)}
    out = {}
    net = None
    for s in SPLITS:
        cs = clips[s][: limit.get(s)]
        if not cs:
            continue
        y = [np.asarray([index[p] for p in c.phonemes], np.int32) for c in cs]
        if args.front_end == "logmel":
            sp = Split(cs, features([c.path for c in cs], f"features {s}", fn=normalised_logmel), y)
        else:
            from models import speech_embedding as se

            net = net or se.model(None)
            mel = features([c.path for c in cs], f"mel {s}", fn=embedding_mel)
            emb = [embed_every_step(m, net) for m in tqdm(mel, desc=f"embeddings {s}", unit="clip", file=sys.stderr)]
            sp = Split(cs, emb, y, mel)
        if s == "train":  # CTC needs a step per label and a blank between repeats: drop clips too fast for it
            keep = [i for i in range(len(cs)) if ctc_steps(y[i]) <= steps_of(sp.x[i], args.front_end)]
            sp = Split(
                [cs[i] for i in keep],
                [sp.x[i] for i in keep],
                [y[i] for i in keep],
                None if sp.mel is None else [sp.mel[i] for i in keep],
            )
        out[s] = sp
    return out


def ctc_steps(labels: np.ndarray) -> int:
    """The fewest steps CTC can emit ``labels`` in: one per label, one more between two equal ones."""
    return len(labels) + int(np.sum(labels[1:] == labels[:-1]))


def steps_of(x: np.ndarray, front_end: str) -> int:
    return len(x) // CHUNK if front_end == "logmel" else len(x)


def batches(sp: Split, batch: int, rng: np.random.Generator, quantum: int):
    """Batches of clips of similar length, in a random order: (x padded at the end, labels padded, input
    lengths, label lengths, indices)."""
    order = np.argsort([len(x) + rng.uniform(0, quantum) for x in sp.x])
    groups = [order[i : i + batch] for i in range(0, len(order), batch)]
    for k in rng.permutation(len(groups)):
        idx = groups[k]
        t = max(len(sp.x[i]) for i in idx)
        t = -(-t // quantum) * quantum
        x = np.zeros((len(idx), t, sp.x[idx[0]].shape[1]), np.float32)
        u = max(len(sp.y[i]) for i in idx)
        y = np.zeros((len(idx), u), np.int32)
        for j, i in enumerate(idx):
            x[j, : len(sp.x[i])] = sp.x[i]
            y[j, : len(sp.y[i])] = sp.y[i]
        yield x, y, np.asarray([len(sp.x[i]) for i in idx]), np.asarray([len(sp.y[i]) for i in idx]), idx


def predict(model, sp: Split, front_end: str, batch: int = 32) -> list[np.ndarray]:
    """Per-step logits of every clip of ``sp`` (its own length, from a zero state)."""
    out: list[np.ndarray | None] = [None] * len(sp.x)
    quantum = LENGTH_QUANTUM if front_end == "logmel" else LENGTH_QUANTUM // CHUNK
    for x, _, lens, _, idx in batches(sp, batch, np.random.default_rng(0), quantum):
        logits = np.asarray(model(x, training=False))
        for j, i in enumerate(idx):
            out[i] = logits[j, : steps_of(sp.x[i][: lens[j]], front_end)]
    return out  # type: ignore[return-value]


def evaluate(model, sp: Split, front_end: str, lexicon, labels: list[str], grammar: bool = True) -> dict[str, Any]:
    logits = predict(model, sp, front_end)
    m: dict[str, Any] = {
        "clips": len(sp.x),
        "per_greedy": phoneme_error([tuple(y) for y in sp.y], list(map(greedy, logits))),
    }
    if grammar:
        m.update(phrase_accuracy([c.text for c in sp.clips], [log_softmax(lg) for lg in logits], lexicon, labels))
    return m


# ---------------------------------------------------------------- training
def train(args, splits: dict[str, Split], labels: list[str], lexicon, log) -> tuple[Any, dict[str, Any]]:
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from models import kws

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng([args.seed, 7])
    tr = splits["train"]
    logmel = args.front_end == "logmel"
    norm = None
    if not logmel:
        flat = np.concatenate(tr.x)
        norm = (flat.mean(axis=0), np.maximum(flat.var(axis=0), 1e-6))
    model = kws.build(
        None,
        tr.x[0].shape[1],
        len(labels),
        args.units,
        dropout=args.dropout,
        front=args.front,
        scale=kws.INPUT_SCALE if logmel else 1.0,
        stack=CHUNK if logmel else 1,
        cell_clip=args.cell_clip,
        norm=norm,
        per_step=True,
        name="asr_lstm",
    )
    steps = args.epochs * -(-len(tr.x) // args.batch)
    lr = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=max(1, steps), alpha=0.05)
    opt = keras.optimizers.Adam(lr, clipnorm=1.0)
    stack = CHUNK if logmel else 1

    @tf.function(reduce_retracing=True)
    def step(x, y, x_len, y_len):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.ctc_loss(y, logits, y_len, x_len // stack, logits_time_major=False, blank_index=0)
                / tf.cast(tf.maximum(y_len, 1), tf.float32)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    quantum = LENGTH_QUANTUM if logmel else LENGTH_QUANTUM // CHUNK
    best, best_w, history = None, None, []
    bar = tqdm(range(args.epochs), desc="epochs", unit="epoch", file=sys.stderr)
    for ep in bar:
        losses = []
        for x, y, x_len, y_len, _ in batches(tr, args.batch, rng, quantum):
            if logmel and args.augment:
                x = spec_augment(freq_warp(x, rng), rng)
            losses.append(float(step(x, y, x_len.astype(np.int32), y_len.astype(np.int32))))
        val = evaluate(model, splits["val"], args.front_end, lexicon, labels, grammar=False)["per_greedy"]
        history.append({"epoch": ep + 1, "loss": round(float(np.mean(losses)), 4), "val_per": round(val, 4)})
        if best is None or val < best:
            best, best_w = val, model.get_weights()
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_per=f"{val:.3f}", best=f"{best:.3f}")
        log(f"epoch {ep + 1}/{args.epochs}: loss/phoneme {np.mean(losses):.4f} val PER (greedy) {val:.4f}")
    model.set_weights(best_w)
    return model, {"history": history, "best_val_per": best}


# ---------------------------------------------------------------- export
# The step model learned sentences from a zero state after 0.2-0.6 s of room noise, and it stops hearing
# speech after several seconds of anything else. So the board runs two copies of its state, each
# restarted every 0.8 s, staggered, and reads the older (it has heard 0.4-0.8 s), while no phrase is
# under way; during one the restarts wait (``KeywordSpotter.hold_resets``, set by the recognizer).
STATE_LANES = {"lanes": 2, "state_reset_s": 0.8}


def fixed_length(xs: list[np.ndarray], frames: int) -> np.ndarray:
    """Each sequence cut or padded (mirroring its end: room noise) to ``frames``."""
    out = []
    for x in xs:
        x = x[:frames]
        while len(x) < frames:
            x = np.concatenate([x, x[::-1][: frames - len(x)]])
        out.append(x)
    return np.stack(out).astype(np.float32)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(
    model, args, splits: dict[str, Split], labels: list[str], info: dict[str, Any], activations: str | None = None
) -> None:
    """The step model, calibration and eval sets into the work folder, and the artifacts into ``args.out``
    (``activations`` overrides ``--activations``)."""
    from models import kws
    from models import speech_embedding as se

    work = args.work or args.out.parent / f".{args.out.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    model.save(str(work / "asr_float.keras"))  # kept first: a failed conversion must not lose the training
    step = kws.streaming_step(model, CHUNK, front_end=args.front_end)
    step.save(str(work / "asr_step.keras"))
    (work / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    (work / "labels.txt").write_text("\n".join(labels) + "\n")
    logmel = args.front_end == "logmel"
    frames = EVAL_FRAMES if logmel else se.WINDOW - CHUNK + EVAL_FRAMES

    def feats(sp: Split) -> list[np.ndarray]:
        return sp.x if logmel else sp.mel  # type: ignore[return-value]

    rng = np.random.default_rng(5)
    tr = splits["train"]
    pick = rng.choice(len(tr.x), size=min(len(tr.x), 60 if args.smoke else 200), replace=False)
    np.savez(work / "calib.npz", features=fixed_length([feats(tr)[i] for i in pick], frames))
    ev = splits.get("test") or splits["val"]
    np.savez(work / "eval.npz", features=fixed_length(feats(ev)[: 30 if args.smoke else 200], frames))
    lexicon_src = args.data / "lexicon.txt"
    pre = front_end_preprocessing(args.front_end)
    asr = {
        "blank": BLANK,
        "phonemes": labels[1:],
        "phoneme_set": PHONEME_SET,
        "lexicon": "lexicon.txt",
        "lexicon_sha256": sha256(lexicon_src),
        "step_s": STEP_S,
    }
    convert_step(
        "train_asr",
        argparse.Namespace(**{**vars(args), "activations": activations or args.activations}),
        info,
        work,
        "asr_step.keras",
        eval_limit=30 if args.smoke else 200,
        hop_frames=CHUNK,
        audio=pre,
        extra_metrics={"asr": asr, "training": info, "detector": dict(STATE_LANES)},
    )
    (args.out / "lexicon.txt").write_bytes(lexicon_src.read_bytes())
    print(
        f"wrote {args.out}/ (manifest.json, model files, report.json, labels.txt, lexicon.txt); float models in {work}"
    )


def artifact_metrics(out: Path, sp: Split, lexicon, labels: list[str], limit: int) -> dict[str, Any]:
    """Each shipped artifact on the board's own engines and streaming loop
    (``edge_runtime.pipelines.audio.KeywordSpotter.posteriors`` from the WAV files) over the first
    ``limit`` clips of ``sp``: greedy PER and phrase accuracy, as :func:`evaluate` gives for float.
    Each clip runs one state from its start, as float does and as the recognizer holds its state lanes
    while an utterance is under way (restarting lanes every 0.8 s mid-sentence would measure the lanes,
    not the artifact: +0.09 greedy PER on a 384-unit model's test clips)."""
    from edge_runtime import manifest as mf
    from edge_runtime.audio.wav import read_wav
    from edge_runtime.engines import ENGINES
    from edge_runtime.pipelines.audio import KeywordSpotter

    m, folder = mf.load(out)
    clips, refs = sp.clips[:limit], [tuple(y) for y in sp.y[:limit]]
    formats = {a.format: a.id for a in m.artifacts}
    p = m.preprocessing.audio
    lead = max(0, p.window_frames - p.frames_per_step) * round(p.hop_ms * p.sample_rate / 1000)
    res = {}
    for engine, fmt in ENGINES.items():
        if fmt not in formats:
            continue
        ks = KeywordSpotter(m, folder, engine)
        ks.reset_steps = 0  # one state lane, never restarted
        posteriors = []
        for c in clips:
            ks.reset()
            x = read_wav(c.path, p.sample_rate)
            if lead:  # as training: the first window ends at the clip's first step
                x = np.concatenate([np.resize(x[: p.sample_rate // 10], lead), x])
            posteriors.append(ks.posteriors(x)[1])
        logs = [np.log(np.maximum(p, 1e-12)) for p in posteriors]
        r = {"clips": len(clips), "per_greedy": phoneme_error(refs, [greedy(lp) for lp in logs])}
        r.update(phrase_accuracy([c.text for c in clips], logs, lexicon, labels))
        res[formats[fmt]] = r
    return res


# ---------------------------------------------------------------- driver
def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edge_runtime.asr.lexicon import LexiconError, load_lexicon

    t0 = time.monotonic()
    if args.smoke:
        args.epochs, args.units, args.front, args.batch = min(args.epochs, 2), 16, 16, 8
        args.max_accuracy_drop = 100.0  # a smoke run checks the pipeline, not the accuracy
    try:
        lexicon = load_lexicon(args.data / "lexicon.txt")
    except LexiconError as e:
        raise TrainError(f"--data {e}") from None
    clips = read_clips(args.data)
    phonemes = sorted({p for cs in clips.values() for c in cs for p in c.phonemes} | set(lexicon.phonemes))
    labels = [BLANK, *phonemes]
    limit = {"train": 16, "val": 4, "test": 4} if args.smoke else {}
    splits = load_splits(args, clips, labels, limit)
    lines: list[str] = []

    def log(m: str) -> None:
        lines.append(m)
        print(m, flush=True)

    log(f"data {args.data}: {len(phonemes)} phonemes, " + ", ".join(f"{s} {len(sp.x)}" for s, sp in splits.items()))
    if args.export_only:
        model, info = kept_training(args, labels)
        return export_and_evaluate(model, args, splits, labels, lexicon, info, log)
    model, info = train(args, splits, labels, lexicon, log)
    results = {s: evaluate(model, sp, args.front_end, lexicon, labels) for s, sp in splits.items() if s != "train"}
    for s, m in results.items():
        log(
            f"float {s}: PER (greedy) {m['per_greedy']:.4f}, phrase accuracy {m['phrase_accuracy']:.4f} "
            f"on a grammar of its {m['phrases']} sentences ({m['clips']} clips)"
        )
    info.update(
        front_end=args.front_end,
        units=args.units,
        front=args.front,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        augment=args.augment,
        dropout=args.dropout,
        cell_clip=args.cell_clip,
        seed=args.seed,
        train_clips=len(splits["train"].x),
        data=str(args.data),
        float=results,
        train_seconds=round(time.monotonic() - t0, 1),
    )
    return export_and_evaluate(model, args, splits, labels, lexicon, info, log)


def kept_training(args: argparse.Namespace, labels: list[str]):
    """The float model and training record an earlier run kept in the work folder (``--export-only``)."""
    import keras

    from models import kws

    work = args.work or args.out.parent / f".{args.out.name}-work"
    try:
        kept = (work / "labels.txt").read_text().split()
        info = json.loads((work / "training.json").read_text())
        model = keras.models.load_model(
            str(work / "asr_float.keras"), compile=False, custom_objects=kws.custom_objects()
        )
    except (OSError, ValueError) as e:
        raise TrainError(
            f"--export-only: no kept training in {work} ({e}); train without --export-only first"
        ) from None
    if kept != labels or info.get("front_end") != args.front_end:
        raise TrainError(f"--export-only: the model kept in {work} was trained on other labels or another --front-end")
    return model, info


def export_and_evaluate(model, args, splits, labels, lexicon, info, log) -> int:
    export(model, args, splits, labels, info)
    limit = 4 if args.smoke else 300
    if args.activations == "auto" and precisions(args.out) == {"int8"}:
        # the converter's gate compares step outputs; what a user gets is the decoded phrase
        drops = phrase_drops(decoded(model, args, splits["val"], lexicon, labels, limit))
        if max(drops.values()) > args.max_accuracy_drop:
            log(
                f"int8 activations lost {max(drops.values()):.1f} pp of val phrase accuracy after decoding "
                f"(limit {args.max_accuracy_drop}); converting with 16x8"
            )
            info["rejected_activations"] = {"int8": {"val_phrase_accuracy_drop_pp": drops}}
            export(model, args, splits, labels, info, activations="int16")
    ev = "test" if "test" in splits else "val"
    arts = decoded(model, args, splits[ev], lexicon, labels, limit)
    for k, r in arts.items():
        log(
            f"{k} on {ev} ({r['clips']} clips): PER (greedy) {r['per_greedy']:.4f}, "
            f"phrase accuracy {r['phrase_accuracy']:.4f}"
        )
    work = args.work or args.out.parent / f".{args.out.name}-work"
    (work / "artifacts_eval.json").write_text(json.dumps({"split": ev, **arts}, indent=1) + "\n")
    return 0


def precisions(out: Path) -> set[str]:
    from edge_runtime import manifest as mf

    return {a.precision for a in mf.load(out)[0].artifacts}


def decoded(model, args, sp: Split, lexicon, labels: list[str], limit: int) -> dict[str, dict[str, Any]]:
    """Float and each artifact in ``args.out`` on the first ``limit`` clips of ``sp``: greedy PER and
    phrase accuracy."""
    return {
        "float": evaluate(model, _head(sp, limit), args.front_end, lexicon, labels),
        **artifact_metrics(args.out, sp, lexicon, labels, limit),
    }


def phrase_drops(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Percentage points of phrase accuracy each artifact of :func:`decoded` loses against float."""
    ref = results["float"]["phrase_accuracy"]
    return {k: round(100 * (ref - r["phrase_accuracy"]), 2) for k, r in results.items() if k != "float"}


def _head(sp: Split, n: int) -> Split:
    return Split(sp.clips[:n], sp.x[:n], sp.y[:n], None if sp.mel is None else sp.mel[:n])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.train_asr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="a models.asr_data folder")
    ap.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    ap.add_argument("--front-end", choices=FRONT_ENDS, default="logmel", help="stacked log-mel or speech embedding")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--units", type=int, default=192, help="LSTM units")
    ap.add_argument("--front", type=int, default=192, help="units of the per-step Dense(relu) before the LSTM")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay)")
    ap.add_argument("--dropout", type=float, default=0.2, help="dropout after the LSTM while training")
    ap.add_argument("--cell-clip", type=float, default=3.0, help="clip the LSTM cell state to +-this (0: none)")
    ap.add_argument("--no-augment", dest="augment", action="store_false", help="no mel warping or SpecAugment")
    ap.add_argument("--work", type=Path, help="where to keep the float models (default: OUT/../.OUT-work)")
    ap.add_argument("--name", default="asr-ctc-lstm")
    ap.add_argument("--max-accuracy-drop", type=float, default=1.0, help="edge-convert's gate (pp)")
    ap.add_argument("--activations", choices=["auto", "int8", "int16"], default="auto")
    ap.add_argument("--smoke", action="store_true", help="tiny data, model and epochs (CI)")
    ap.add_argument(
        "--export-only", action="store_true", help="convert and evaluate the float model kept in --work (no training)"
    )
    args = ap.parse_args(argv)
    try:
        return run(args)
    except TrainError as e:
        print(f"train_asr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
