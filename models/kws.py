"""Keyword-spotting LSTM: trained non-streaming on whole windows, exported as a streaming step model.

The step model follows the "external state" idea of streaming keyword spotting
(Rybakov et al., 2020): ``features chunk + (h, c) in -> scores + new (h, c) out``,
so any engine can run it and the runtime owns the state. Both graphs share the
same weights; running the step model chunk by chunk over a window gives the
scores of the whole-window model.

**Frame stacking** (``stack`` > 1): the model reshapes ``stack`` consecutive
frames into one vector before the per-frame layers, so the LSTM runs at
``100 / stack`` Hz ("low frame rate" acoustic models). With ``stack`` equal to
the step size, one streaming step is one LSTM step: a quarter of the recurrent
work, and a quarter of the sequence length for the LSTM to learn over. Each group
of ``stack`` frames is frame-local, so it streams without extra state as long as
the stream is cut into steps of ``stack`` frames (the step model's chunk).

**Cell-state clipping** (``cell_clip`` > 0), for true int8: the carried cell
state ``c`` is clipped to ``+-cell_clip`` after every LSTM step (like TensorFlow 1's
``LSTMCell(cell_clip=...)``, except that ``h`` is computed from ``c`` before the clip). Unclipped, ``c``
can reach tens while most values are below 1, which one int8 scale cannot hold;
trained with the clip, the model never relies on larger values, and the step
model applies the same clip to its ``c`` output with built-in layers only.

**Front ends** (``front_end``): ``"logmel"`` -- the LSTM reads (stacked) log-mel
frames; ``"speech-embedding"`` -- it reads one 96-dimensional vector of Google's
speech embedding (pretrained on real speech; :mod:`models.speech_embedding`) every
80 ms. The embedding is frozen: training runs the head on precomputed embeddings
(``build(..., n_mels=96)`` with ``norm``, the embeddings' per-dimension mean and
variance), and :func:`streaming_step` puts the embedding's convolutions with their
pretrained weights in front of the head, so the step model takes the last 76 mel
frames (``features[1, 76, 32]``) and is converted and quantized as one model.

``build(..., masked=True)`` puts a ``Masking`` layer in front of the LSTM for
training on sequences of different lengths in one batch: they are *pre*-padded
with :data:`MASK_VALUE` frames, which Keras' LSTM skips (the state stays at its
zero initial value), so a padded sequence scores exactly as the unpadded one
run from a zero state -- which is what the step model does. The step model has
no Masking layer (the runtime never feeds padding) and no dropout.
"""

from __future__ import annotations

import numpy as np

FEATURES = "features"
STATE_H, STATE_C = "state_h", "state_c"
MASK_VALUE = 1000.0  # a log-mel (or normalised) frame never takes this value in every bin
INPUT_SCALE = 0.25  # normalised log-mel frames have a std of about 4; the LSTM learns faster near unit scale


FRONT_ENDS = ("logmel", "speech-embedding")


def build(
    frames: int | None,
    n_mels: int,
    classes: int,
    units: int = 64,
    masked: bool = False,
    dropout: float = 0.0,
    front: int = 0,
    scale: float = 1.0,
    stack: int = 1,
    cell_clip: float = 0.0,
    norm: tuple[np.ndarray, np.ndarray] | None = None,
    per_step: bool = False,
    name: str = "kws_lstm",
):
    """Non-streaming classifier over a (frames, n_mels) log-mel window (frames=None: any length).

    ``stack`` > 1 groups that many frames into one LSTM step (frames must be a multiple
    of it); ``scale`` multiplies the features; ``front`` > 0 adds a Dense(front, relu) per
    (stacked) frame before the LSTM (frame-local, so it streams without state); ``cell_clip``
    > 0 clips the LSTM's cell state to that magnitude after every step; ``norm`` = (mean,
    variance) per feature standardises the input (speech embeddings) before the rest.
    ``per_step``: scores (logits, no softmax) at every LSTM step instead of one softmax at the end,
    for CTC training (``models.train_asr``); :func:`streaming_step` still gives a softmax per step.
    """
    import keras

    inp = keras.Input((frames, n_mels), name=FEATURES)
    x = _stack(inp, stack, n_mels)
    x = keras.layers.Masking(MASK_VALUE, name="mask")(x) if masked else x
    if norm is not None:
        x = keras.layers.Normalization(mean=norm[0], variance=norm[1], name="norm")(x)
    x = _front(x, front, scale)
    if cell_clip > 0:
        x = keras.layers.RNN(clipped_cell()(units, cell_clip=cell_clip), return_sequences=per_step, name="lstm")(x)
    else:
        x = keras.layers.LSTM(units, return_sequences=per_step, name="lstm")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    out = keras.layers.Dense(classes, activation=None if per_step else "softmax", name="scores")(x)
    return keras.Model(inp, out, name=name)


_CLIPPED_CELL = None


def clipped_cell():
    """The ``ClippedLSTMCell`` class (made on first use, so importing this module needs no Keras)."""
    global _CLIPPED_CELL
    if _CLIPPED_CELL is None:
        import keras

        @keras.saving.register_keras_serializable(package="edge_runtime")
        class ClippedLSTMCell(keras.layers.LSTMCell):
            """An LSTM cell whose carried cell state is clipped to ``+-cell_clip``."""

            def __init__(self, units, cell_clip: float = 0.0, **kwargs):
                super().__init__(units, **kwargs)
                self.cell_clip = float(cell_clip)

            def call(self, inputs, states, training=False):
                h, (h2, c2) = super().call(inputs, states, training=training)
                return h, [h2, keras.ops.clip(c2, -self.cell_clip, self.cell_clip)]

            def get_config(self):
                return {**super().get_config(), "cell_clip": self.cell_clip}

        _CLIPPED_CELL = ClippedLSTMCell
    return _CLIPPED_CELL


def custom_objects() -> dict:
    """What ``keras.models.load_model`` needs for a whole-window model from :func:`build`."""
    return {"ClippedLSTMCell": clipped_cell()}


def _stack(x, stack: int, n_mels: int):
    import keras

    return keras.layers.Reshape((-1, stack * n_mels), name="stack")(x) if stack > 1 else x


def stacking(model) -> int:
    """Frames per LSTM step of a model from :func:`build`."""
    layer = _layer(model, "stack")
    return 1 if layer is None else layer.target_shape[-1] // model.inputs[0].shape[-1]


def _front(x, front: int, scale: float):
    import keras

    if scale != 1.0:
        x = keras.layers.Rescaling(scale, name="scale")(x)
    if front:
        x = keras.layers.Dense(front, activation="relu", name="front")(x)
    return x


def _layer(model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def streaming_step(model, chunk: int = 4, front_end: str = "logmel"):
    """The step model of ``model``: (features[1, chunk, n_mels], h, c) -> (scores, h', c').

    The LSTM is unrolled over the chunk (``chunk / stack`` steps) so that every op has a
    full-integer TFLite kernel; its weights are those of the trained model. With the
    ``speech-embedding`` front end the features are the last 76 mel frames (``chunk`` is
    ignored) and the frozen embedding turns them into the head's one input vector.
    """
    import keras

    lstm = model.get_layer("lstm")
    units, n_mels = lstm.cell.units, model.inputs[0].shape[-1]
    clip = float(getattr(lstm.cell, "cell_clip", 0.0))
    stack = stacking(model)
    if front_end == "speech-embedding":
        from models import speech_embedding as se

        chunk = 1
        x = keras.Input((se.WINDOW, se.N_MELS), batch_size=1, name=FEATURES)
        z = keras.layers.Reshape((se.WINDOW, se.N_MELS, 1), name="emb_in")(x)
        z = keras.layers.Reshape((1, se.DIM), name="emb_out")(se.layers(z))
    elif front_end == "logmel":
        x = keras.Input((chunk, n_mels), batch_size=1, name=FEATURES)
        z = _stack(x, stack, n_mels)
    else:
        raise ValueError(f"front end {front_end!r} is not one of {', '.join(FRONT_ENDS)}")
    if chunk % stack:
        raise ValueError(f"step of {chunk} frames is not a multiple of the model's frame stacking ({stack})")
    if clip > 0 and chunk != stack:
        raise ValueError(f"a cell-clipped model needs one LSTM step per streaming step: stack {stack} != chunk {chunk}")
    h = keras.Input((units,), batch_size=1, name=STATE_H)
    c = keras.Input((units,), batch_size=1, name=STATE_C)
    scale = _layer(model, "scale")
    front = _layer(model, "front")
    z = _front(z, front.units if front is not None else 0, float(scale.scale) if scale is not None else 1.0)
    step_lstm = keras.layers.LSTM(units, return_state=True, unroll=True, name="lstm")
    y, h2, c2 = step_lstm(z, initial_state=[h, c])
    if clip > 0:  # clip(c, -a, a) = relu6-like min(max(c + a, 0), 2a) - a, from built-in layers
        c2 = keras.layers.Rescaling(1.0, offset=clip, name="clip_shift")(c2)
        c2 = keras.layers.ReLU(max_value=2 * clip, name="clip")(c2)
        c2 = keras.layers.Rescaling(1.0, offset=-clip, name="clip_unshift")(c2)
    dense = keras.layers.Dense(model.get_layer("scores").units, activation="softmax", name="scores")
    scores = dense(y)
    step = keras.Model([x, h, c], [scores, h2, c2], name="kws_lstm_step")
    # The input standardisation (x - mean) / std is folded into the first layer's weights (no extra ops).
    first = [front.get_weights() if front is not None else None, lstm.get_weights()]
    norm = _layer(model, "norm")
    if norm is not None:
        i = 0 if front is not None else 1
        kernel, *rest = first[i]
        mean = np.asarray(norm.mean, np.float64).reshape(-1)
        std = np.sqrt(np.asarray(norm.variance, np.float64).reshape(-1))
        w = kernel.astype(np.float64) / std[:, None]
        bias_i = 0 if front is not None else 1  # Dense: [kernel, bias]; LSTM: [kernel, recurrent, bias]
        rest[bias_i] = (rest[bias_i] - mean @ w).astype(np.float32)
        first[i] = [w.astype(np.float32), *rest]
    step_lstm.set_weights(first[1])
    if front is not None:
        step.get_layer("front").set_weights(first[0])
    dense.set_weights(model.get_layer("scores").get_weights())
    return step
