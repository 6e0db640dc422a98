"""Keyword-spotting LSTM: trained non-streaming on whole windows, exported as a streaming step model.

The step model follows the "external state" idea of streaming keyword spotting
(Rybakov et al., 2020): ``features chunk + (h, c) in -> scores + new (h, c) out``,
so any engine can run it and the runtime owns the state. Both graphs share the
same weights; running the step model chunk by chunk over a window gives the
scores of the whole-window model.
"""

from __future__ import annotations

FEATURES = "features"
STATE_H, STATE_C = "state_h", "state_c"


def build(frames: int, n_mels: int, classes: int, units: int = 64):
    """Non-streaming classifier over a (frames, n_mels) log-mel window."""
    import keras

    inp = keras.Input((frames, n_mels), name=FEATURES)
    x = keras.layers.LSTM(units, name="lstm")(inp)
    out = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inp, out, name="kws_lstm")


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
    step_lstm = keras.layers.LSTM(units, return_state=True, unroll=True, name="lstm")
    y, h2, c2 = step_lstm(x, initial_state=[h, c])
    dense = keras.layers.Dense(model.get_layer("scores").units, activation="softmax", name="scores")
    scores = dense(y)
    step = keras.Model([x, h, c], [scores, h2, c2], name="kws_lstm_step")
    step_lstm.set_weights(lstm.get_weights())
    dense.set_weights(model.get_layer("scores").get_weights())
    return step
