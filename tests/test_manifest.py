"""The artifact contract: round trip, hash verification, schema versions."""

from __future__ import annotations

import json

import pytest

from edge_runtime import manifest as mf


def _manifest(folder):
    (folder / "model.tflite").write_bytes(b"\x00model-bytes" * 100)
    art = mf.Artifact(
        id="tflite-int8",
        format="tflite",
        precision="int8",
        file=mf.file_ref(folder, "model.tflite"),
        inputs=[
            mf.TensorSpec("features", [1, 4, 40], "int8", mf.Quantization([0.05], [-3])),
            mf.TensorSpec("state_h", [1, 64], "int8", mf.Quantization([0.01], [0])),
        ],
        outputs=[
            mf.TensorSpec("output_0", [1, 12], "int8", mf.Quantization([1 / 256], [-128])),
            mf.TensorSpec("output_1", [1, 64], "int8", mf.Quantization([0.01], [0])),
        ],
        state=[mf.StatePair("state_h", "output_1", [1, 64], "int8", 0.0)],
    )
    return mf.Manifest(
        name="kws",
        task="streaming-audio",
        target="rpi",
        artifacts=[art],
        labels=["yes", "no"],
        preprocessing=mf.Preprocessing(audio=mf.AudioPreprocessing(frames_per_step=4)),
        source={"file": "kws.keras", "format": "keras", "sha256": "0" * 64},
        tools={"tensorflow": "2.21.0"},
        metrics={"agreement": 0.995},
        fastest_on_host="tflite-int8",
        created="2026-11-27T00:00:00+00:00",
    )


def test_round_trip(tmp_path):
    m = _manifest(tmp_path)
    mf.save(m, tmp_path)
    loaded, folder = mf.load(tmp_path)
    assert loaded == m
    assert folder == tmp_path
    assert loaded.streaming and loaded.artifact("tflite").state[0].output == "output_1"
    assert json.loads((tmp_path / "manifest.json").read_text())["schema_version"] == mf.SCHEMA_VERSION


def test_tampered_file_is_refused(tmp_path):
    mf.save(_manifest(tmp_path), tmp_path)
    data = bytearray((tmp_path / "model.tflite").read_bytes())
    data[5] ^= 0xFF  # same size, different content
    (tmp_path / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(mf.ManifestError, match=r"model\.tflite: sha256 does not match"):
        mf.load(tmp_path)


def test_missing_file_is_refused(tmp_path):
    mf.save(_manifest(tmp_path), tmp_path)
    (tmp_path / "model.tflite").unlink()
    with pytest.raises(mf.ManifestError, match="missing"):
        mf.load(tmp_path)


def test_unknown_schema_version_is_refused(tmp_path):
    mf.save(_manifest(tmp_path), tmp_path)
    d = json.loads((tmp_path / "manifest.json").read_text())
    d["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(mf.ManifestError, match="schema_version 99 is not supported"):
        mf.load(tmp_path)


def test_path_outside_the_folder_is_refused(tmp_path):
    m = _manifest(tmp_path)
    d = m.to_dict()
    d["artifacts"][0]["file"]["path"] = "../elsewhere.tflite"
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(mf.ManifestError, match="outside its folder"):
        mf.load(tmp_path)


def test_not_a_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text("[1, 2")
    with pytest.raises(mf.ManifestError, match="unreadable manifest"):
        mf.load(tmp_path)
    with pytest.raises(mf.ManifestError, match="no manifest here"):
        mf.load(tmp_path / "nowhere")


def test_atomic_write_leaves_no_temp_file(tmp_path):
    mf.write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"resize": "bogus"}, "resize"),
        ({"size": [0, 0]}, "size"),
        ({"size": [224]}, "size"),
        ({"size": [10**6, 224]}, "size"),
        ({"color": "cmyk"}, "color"),
        ({"layout": "nwhc"}, "layout"),
        ({"std": [0, 0, 0]}, "std"),
        ({"mean": [127.5]}, "mean"),
        ({"mean": [float("nan")] * 3}, "mean"),
        ({"color": "gray"}, "mean"),
        ({"channel_order": "GBR"}, "channel_order"),
        ({"resize_filter": "lanczos"}, "resize_filter"),
    ],
)
def test_image_preprocessing_out_of_range_is_refused(tmp_path, bad, needle):
    m = _manifest(tmp_path)
    d = m.to_dict()
    d["preprocessing"] = {"image": {"size": [224, 224], **bad}}
    with pytest.raises(mf.ManifestError, match=needle):
        mf.Manifest.from_dict(d)


def test_grey_nchw_image_preprocessing_round_trips(tmp_path):
    m = _manifest(tmp_path)
    d = m.to_dict()
    d["preprocessing"] = {"image": {"size": [28, 28], "color": "gray", "layout": "nchw", "mean": [0.0], "std": [255.0]}}
    pre = mf.Manifest.from_dict(d).preprocessing.image
    assert (pre.channels, pre.input_shape()) == (1, [1, 1, 28, 28])
    assert mf.Manifest.from_dict(mf.Manifest.from_dict(d).to_dict()).preprocessing.image == pre
    assert pre.resize_filter == "area"  # a manifest without the field was calibrated with area averaging
