"""Cross-layer equalization of residual streams: exact in float, finer int8 steps, nothing behind an activation."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("tf_available")


def _residual_model(seed: int = 0):
    """conv -> BN -> ReLU6 -> project conv -> BN (a stream) + a second projection, summed, read by convs."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = inp = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    p1 = L.BatchNormalization(name="p1_bn")(L.Conv2D(6, 1, use_bias=False, name="p1")(x))
    h = L.ReLU(6.0, name="e_relu")(L.BatchNormalization(name="e_bn")(L.Conv2D(12, 1, use_bias=False, name="e")(p1)))
    h = L.ReLU(6.0, name="d_relu")(L.BatchNormalization(name="d_bn")(L.DepthwiseConv2D(3, padding="same", name="d")(h)))
    p2 = L.BatchNormalization(name="p2_bn")(L.Conv2D(6, 1, use_bias=False, name="p2")(h))
    s = L.Add(name="add")([p1, p2])
    y = L.Conv2D(10, 1, activation="relu6", name="head")(s)
    y = L.Dense(4, name="dense")(L.GlobalAveragePooling2D()(y))
    model = keras.Model(inp, y)
    rng = np.random.default_rng(seed)
    for bn in (la for la in model.layers if isinstance(la, L.BatchNormalization)):  # trained-looking statistics
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        bn.beta.assign(rng.normal(0, 0.3, c).astype(np.float32))
        bn.moving_mean.assign(rng.normal(0, 0.2, c).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.5, 2, c).astype(np.float32))
    wide = model.get_layer("p1_bn")
    g = wide.gamma.numpy()
    g[0] *= 20.0  # one channel of the stream far wider than the others
    wide.gamma.assign(g)
    return model


def _stream_range(model, x: np.ndarray) -> np.ndarray:
    import keras

    probe = keras.Model(model.inputs, model.get_layer("add").output)
    return np.abs(np.asarray(probe(x))).reshape(-1, 6).max(axis=0)


def test_residual_stream_equalized_exactly_and_nothing_behind_relu6():
    from converters import equalization

    model = _residual_model()
    rng = np.random.default_rng(1)
    calib = rng.uniform(-1, 1, (32, 12, 12, 3)).astype(np.float32)
    other = rng.uniform(-3, 3, (16, 12, 12, 3)).astype(np.float32)  # wider than calibration: still exact
    before, before_other = np.asarray(model(calib)), np.asarray(model(other))
    r0 = _stream_range(model, calib)
    untouched = {n: model.get_layer(n).get_weights() for n in ("stem", "stem_bn", "e_bn", "d", "d_bn")}

    info = equalization.equalize(model, [calib])

    assert info.streams == 1 and info.names == ["p1_bn+p2_bn"], info
    assert np.abs(np.asarray(model(calib)) - before).max() < 1e-4
    assert np.abs(np.asarray(model(other)) - before_other).max() < 1e-4
    r1 = _stream_range(model, calib)
    # the shared int8 step (the widest channel) is finer, relative to the typical channel
    assert r1.max() / np.median(r1) < 0.5 * r0.max() / np.median(r0)
    for name, weights in untouched.items():  # ReLU6 sits behind these: not scale-equivariant, left alone
        for a, b in zip(weights, model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_stream_read_by_an_activation_is_left_alone():
    import keras

    from converters import equalization

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    a = L.BatchNormalization(name="a_bn")(L.Conv2D(4, 1, name="a")(inp))
    b = L.BatchNormalization(name="b_bn")(L.Conv2D(4, 1, name="b")(inp))
    s = L.ReLU(6.0)(L.Add()([a, b]))  # the sum goes through ReLU6: rescaling it would move the clip
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(s)))
    x = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    weights = model.get_weights()
    info = equalization.equalize(model, [x])
    assert info.streams == 0
    for w0, w1 in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_mobilenetv2_streams_are_its_projections_and_sums():
    import keras

    from converters import equalization

    keras.utils.set_random_seed(0)
    inner = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, include_top=False)
    inp = keras.Input((64, 64, 3))
    model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(inner(inp))))
    rng = np.random.default_rng(0)
    for bn in (la for la in inner.layers if isinstance(la, keras.layers.BatchNormalization)):
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.lognormal(0, 0.7, c).astype(np.float32))
    x = rng.uniform(-1, 1, (8, 64, 64, 3)).astype(np.float32)
    before = np.asarray(model(x))
    info = equalization.equalize(model, [x])
    assert info.names == [
        "expanded_conv_project_BN",
        "block_1_project_BN+block_2_project_BN",
        "block_3_project_BN+block_4_project_BN+block_5_project_BN",
        "block_6_project_BN+block_7_project_BN+block_8_project_BN+block_9_project_BN",
        "block_10_project_BN+block_11_project_BN+block_12_project_BN",
        "block_13_project_BN+block_14_project_BN+block_15_project_BN",
        "block_16_project_BN",
    ]
    assert np.abs(np.asarray(model(x)) - before).max() < 1e-4
