"""Keyword-spotting LSTM: trained non-streaming on whole windows, exported as a streaming step model.

The step model follows the "external state" idea of streaming keyword spotting
(Rybakov et al., 2020): ``features chunk + (h, c) in -> scores + new (h, c) out``,
so any engine can run it and the runtime owns the state. Both graphs share the
same weights; running the step model chunk by chunk over a window gives the
scores of the whole-window model.

``build(..., masked=True)`` puts a ``Masking`` layer in front of the LSTM for
training on sequences of different lengths in one batch: they are *pre*-padded
with :data:`MASK_VALUE` frames, which Keras' LSTM skips (the state stays at its
zero initial value), so a padded sequence scores exactly as the unpadded one
run from a zero state -- which is what the step model does. The step model has
no Masking layer (the runtime never feeds padding) and no dropout.
"""

from __future__ import annotations

FEATURES = "features"
STATE_H, STATE_C = "state_h", "state_c"
MASK_VALUE = 1000.0  # a log-mel (or normalised) frame never takes this value in every bin
INPUT_SCALE = 0.25  # normalised log-mel frames have a std of about 4; the LSTM learns faster near unit scale


def build(frames: int | None, n_mels: int, classes: int, units: int = 64, masked: bool = False,
          dropout: float = 0.0, front: int = 0, scale: float = 1.0):
    """Non-streaming classifier over a (frames, n_mels) log-mel window (frames=None: any length).

    ``scale`` multiplies the features first; ``front`` > 0 adds a per-frame Dense(front, relu)
    before the LSTM (frame-local, so it streams without state).
    """
    import keras

    inp = keras.Input((frames, n_mels), name=FEATURES)
    x = keras.layers.Masking(MASK_VALUE, name="mask")(inp) if masked else inp
    x = _front(x, front, scale)
    x = keras.layers.LSTM(units, name="lstm")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    out = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inp, out, name="kws_lstm")


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


def streaming_step(model, chunk: int = 4):
    """The step model of ``model``: (features[1, chunk, n_mels], h, c) -> (scores, h', c').

    The LSTM is unrolled over the chunk so that every op has a full-integer
    TFLite kernel; its weights are those of the trained model.
    """
    import keras

    lstm = model.get_layer("lstm")
    units, n_mels = lstm.units, model.inputs[0].shape[-1]
    x = keras.Input((chunk, n_mels), batch_size=1, name=FEATURES)
    h = keras.Input((units,), batch_size=1, name=STATE_H)
    c = keras.Input((units,), batch_size=1, name=STATE_C)
    scale = _layer(model, "scale")
    front = _layer(model, "front")
    z = _front(x, front.units if front is not None else 0, float(scale.scale) if scale is not None else 1.0)
    step_lstm = keras.layers.LSTM(units, return_state=True, unroll=True, name="lstm")
    y, h2, c2 = step_lstm(z, initial_state=[h, c])
    dense = keras.layers.Dense(model.get_layer("scores").units, activation="softmax", name="scores")
    scores = dense(y)
    step = keras.Model([x, h, c], [scores, h2, c2], name="kws_lstm_step")
    step_lstm.set_weights(lstm.get_weights())
    if front is not None:
        step.get_layer("front").set_weights(front.get_weights())
    dense.set_weights(model.get_layer("scores").get_weights())
    return step
