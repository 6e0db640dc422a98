"""How the int8 weights of ONNX artifacts round on this host, and bias correction cancelling that rounding:
7-bit matrix weights where ONNX Runtime's U8S8 kernels saturate (x86-64 without VNNI), 8-bit depthwise ones."""

from __future__ import annotations

import numpy as np
import pytest

from converters import onnx_quant


def _depthwise_then_pointwise(path) -> None:
    """x (1, 4, 8, 8) -> depthwise 3x3 conv -> Relu -> pointwise 1x1 conv to 6 channels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dw = numpy_helper.from_array(rng.normal(0, 1, (4, 1, 3, 3)).astype(np.float32), "dw_w")
    pw = numpy_helper.from_array(rng.normal(0, 1, (6, 4, 1, 1)).astype(np.float32), "pw_w")
    nodes = [
        helper.make_node("Conv", ["x", "dw_w"], ["d"], name="depthwise", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "pw_w"], ["y"], name="pointwise"),
    ]
    graph = helper.make_graph(
        nodes,
        "dw_pw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])],
        [dw, pw],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _int8_weights(path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    return {
        n.input[0]: inits[n.input[0]]
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8
    }


def test_u8s8_depthwise_weights_keep_8_bits_where_matrix_weights_get_7(tmp_path):
    src, out = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    _depthwise_then_pointwise(src)
    assert onnx_quant.depthwise_weights(src) == ["dw_w"]
    rng = np.random.default_rng(1)
    samples = [[rng.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)] for _ in range(8)]
    onnx_quant.quantize_static(src, out, ["x"], samples, activations="uint8")
    weights = {name.split("_quantized")[0]: np.abs(w.astype(int)) for name, w in _int8_weights(out).items()}
    assert set(weights) == {"dw_w", "pw_w"}
    assert weights["dw_w"].max() == 127  # per-channel symmetric: each channel's largest weight is the top level
    assert weights["pw_w"].max() == (64 if onnx_quant.u8s8_saturates() else 127)
    # S8S8 never reduces the range: only U8S8's kernels pair uint8 with int8
    onnx_quant.quantize_static(src, out, ["x"], samples, activations="int8")
    assert all(int(np.abs(w.astype(int)).max()) == 127 for w in _int8_weights(out).values())


@pytest.mark.usefixtures("tf_available")
@pytest.mark.parametrize("reduced_range", [False, True])
def test_bias_correction_cancels_the_rounding_the_weights_get(reduced_range):
    """A Dense layer on positive inputs: with its weights rounded as the artifact rounds them (8 or 7 bits),
    the corrected bias leaves no mean output shift; corrected for the other rounding, a shift remains."""
    import keras

    from converters import bias_correction

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, name="dense")])
    x = np.random.default_rng(2).uniform(0, 1, (512, 64)).astype(np.float32)
    w, b = model.get_layer("dense").get_weights()
    want = np.asarray(model(x)).mean(axis=0)
    levels = 64 if reduced_range else 127

    def shift_after(corrected_for: bool) -> float:
        m = keras.models.clone_model(model)
        m.set_weights([w, b])
        assert bias_correction.correct(m, [x], reduced_range=corrected_for).layers == 1
        bias = m.get_layer("dense").get_weights()[1]
        got = (x @ bias_correction._quantized(w.astype(np.float64), levels) + bias).mean(axis=0)
        return float(np.abs(got - want).max())

    uncorrected = float(np.abs((x @ bias_correction._quantized(w.astype(np.float64), levels) + b).mean(0) - want).max())
    assert shift_after(reduced_range) < uncorrected / 20
    assert shift_after(not reduced_range) > shift_after(reduced_range) * 5
