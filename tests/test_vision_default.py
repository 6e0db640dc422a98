"""The shipped default vision model (EfficientNet-Lite0, ImageNet) and the torch-free .pth reader."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, have, require

from edge_runtime.manifest import load
from edge_runtime.preprocess import image_to_input, read_image

ARTIFACT = ROOT / "edge_runtime" / "data" / "models" / "vision"
SAMPLES = ROOT / "edge_runtime" / "data" / "samples" / "images"
ARTIFACT_BUDGET = 12 * 1024 * 1024
SAMPLES_BUDGET = 300 * 1024

# What each photo shows, as ImageNet-1k labels. Chelsea is a tabby; ImageNet's domestic-cat
# classes overlap (tabby / tiger cat / Egyptian Mau), so any striped-cat label is right.
STRIPED_CAT = {"tabby cat", "a cat having a striped coat", "Egyptian Mau"}
EXPECTED = {
    "coffee.jpg": {"espresso"},
    "cat.jpg": STRIPED_CAT,
    "cameraman.jpg": {"tripod"},
    "orange.jpg": {"orange"},
    "apple.jpg": {"Granny Smith apple"},  # ImageNet-1k's only apple class
    "baboon.jpg": {"baboon"},  # the mandrill test picture; ImageNet-1k has no mandrill class
    "squirrel.jpg": {"fox squirrel"},  # ImageNet-1k's only squirrel class
    "dog.jpg": {"Pekingese"},
}
MIN_SCORE = 0.3  # the right label is also a clear top-1, not a near-tie


def _engine_available(engine: str) -> tuple[bool, str]:
    if engine == "onnx":
        return have("onnxruntime"), "onnxruntime is not installed (pip install 'edge-runtime[onnx]')"
    return (
        have("ai_edge_litert") or have("tflite_runtime") or have("tensorflow"),
        "no LiteRT package is installed (pip install ai-edge-litert)",
    )


# --- the shipped artifact ---------------------------------------------------------------------
def test_artifact_loads_with_verified_hashes():
    m, folder = load(ARTIFACT)  # verifies every file's sha256
    assert folder == ARTIFACT
    assert m.name == "efficientnet-lite0-imagenet"
    assert m.preprocessing.image is not None
    pre = m.preprocessing.image
    assert list(pre.size) == [224, 224] and pre.resize == "crop" and pre.channel_order == "RGB"
    assert list(pre.mean) == [127.0] * 3 and list(pre.std) == [128.0] * 3
    assert len(m.labels) == 1000 and len(set(m.labels)) == 1000
    assert m.labels[281] == "tabby cat" and m.labels[967] == "espresso"
    assert sorted(a.format for a in m.artifacts) == ["onnx", "tflite"]
    for a in m.artifacts:
        assert a.inputs[0].shape == [1, 224, 224, 3]
        assert a.outputs[0].shape == [1, 1000]


def test_artifact_folder_size_budget():
    files = {f.name: f.stat().st_size for f in ARTIFACT.iterdir() if f.is_file()}
    for name in ("manifest.json", "model_int8.tflite", "model_int8.onnx", "report.json", "report.html", "LICENSES.md"):
        assert name in files, f"{ARTIFACT}/{name} is missing"
    assert sum(files.values()) <= ARTIFACT_BUDGET, files
    licences = (ARTIFACT / "LICENSES.md").read_text(encoding="utf-8")
    assert "Apache License 2.0" in licences and "MIT License" in licences


def test_sample_photos_are_small_and_documented():
    photos = sorted(p.name for p in SAMPLES.glob("*.jpg"))
    assert photos == sorted(EXPECTED)
    assert sum(p.stat().st_size for p in SAMPLES.iterdir() if p.is_file()) <= SAMPLES_BUDGET
    sources = (SAMPLES / "SOURCES.md").read_text(encoding="utf-8")
    for name in photos:
        assert f"`{name}`" in sources, f"{name} is not listed in SOURCES.md"
        assert max(read_image(SAMPLES / name).shape[:2]) <= 320


@pytest.mark.parametrize("engine", ["litert", "onnx"])
def test_sample_photos_are_recognised(engine):
    from edge_runtime.engines import open_engine

    ok, why = _engine_available(engine)
    require(ok, why)
    m, folder = load(ARTIFACT)
    eng = open_engine(m, folder, engine)
    got = {}
    for name, want in EXPECTED.items():
        x = image_to_input(read_image(SAMPLES / name), m.preprocessing.image)[None]
        scores = np.asarray(eng.run(x)[0], np.float32).reshape(-1)
        top = int(scores.argmax())
        got[name] = (m.labels[top], round(float(scores[top]), 3))
        assert m.labels[top] in want, f"{engine}: {name} -> {got[name]}, expected one of {sorted(want)}"
        assert scores[top] >= MIN_SCORE, f"{engine}: {name} -> {got[name]} is not a clear top-1"


# --- the torch-free .pth reader ---------------------------------------------------------------
class _Storage:
    """Stands in for a torch storage while pickling: flat data under a key."""

    def __init__(self, key: str, data: np.ndarray, type_name: str):
        self.key, self.data, self.type_name = key, np.ascontiguousarray(data).reshape(-1), type_name


class _Tensor:
    """Pickles like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of torch's names for pickle to write the references torch.save writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _pickle_state_dict(sd: dict, torch, legacy: bool) -> bytes:
    buf = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                pid = ("storage", getattr(torch, obj.type_name), obj.key, "cpu", obj.data.size)
                return pid + (None,) if legacy else pid
            return None

    P(buf, protocol=2).dump(sd)
    return buf.getvalue()


def _example(torch):
    """A state dict with a conv weight, a transposed view sharing its storage, fp16, int64 and a scalar."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    fc = rng.normal(size=(5, 6)).astype(np.float32)
    shared = _Storage("0", np.concatenate([w.reshape(-1), fc.reshape(-1)]), "FloatStorage")
    half = _Storage("1", rng.normal(size=7).astype(np.float16), "HalfStorage")
    longs = _Storage("2", np.array([3, 1, 4, 1, 5], np.int64), "LongStorage")
    sd = collections.OrderedDict(
        [
            ("conv.weight", _Tensor(shared, 0, (4, 3, 3, 3), (27, 9, 3, 1))),
            ("fc.weight", _Tensor(shared, w.size, (5, 6), (6, 1))),
            ("fc.weight_t", _Tensor(shared, w.size, (6, 5), (1, 6))),  # non-contiguous view
            ("bn.running_var", _Tensor(half, 0, (7,), (1,))),
            ("ids", _Tensor(longs, 1, (2, 2), (2, 1))),
            ("bn.num_batches_tracked", _Tensor(longs, 4, (), ())),
        ]
    )
    expected = {
        "conv.weight": w,
        "fc.weight": fc,
        "fc.weight_t": fc.T,
        "bn.running_var": half.data,
        "ids": np.array([[1, 4], [1, 5]], np.int64),
        "bn.num_batches_tracked": np.array(5, np.int64),
    }
    return sd, [shared, half, longs], expected


def _check(loaded: dict, expected: dict) -> None:
    assert list(loaded) == list(expected)
    for k, want in expected.items():
        assert loaded[k].dtype == want.dtype, k
        assert loaded[k].shape == want.shape, k
        np.testing.assert_array_equal(loaded[k], want, err_msg=k)


def test_reads_zip_checkpoint(tmp_path, fake_torch):
    from models.torch_weights import load_state_dict

    sd, storages, expected = _example(fake_torch)
    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/data.pkl", _pickle_state_dict(sd, fake_torch, legacy=False))
        zf.writestr("model/byteorder", "little")
        for s in storages:
            zf.writestr(f"model/data/{s.key}", s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
        zf.writestr("model/version", "3\n")
    _check(load_state_dict(path), expected)


def test_reads_legacy_checkpoint(tmp_path, fake_torch):
    from models.torch_weights import LEGACY_MAGIC, LEGACY_PROTOCOL, load_state_dict

    sd, storages, expected = _example(fake_torch)
    path = tmp_path / "legacy.pth"
    with open(path, "wb") as f:
        for obj in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(_pickle_state_dict(sd, fake_torch, legacy=True))
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", s.data.size))
            f.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    _check(load_state_dict(path), expected)


def test_refuses_code_and_junk(tmp_path):
    from models.torch_weights import TorchWeightsError, load_state_dict

    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"x": Path("/")}, protocol=2))  # a class no state dict holds
    with pytest.raises(TorchWeightsError, match="pathlib"):
        load_state_dict(evil)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TorchWeightsError, match="neither a zip nor a legacy"):
        load_state_dict(junk)


def test_tf_same_padding_of_the_port():
    from models.efficientnet_lite import same_padding

    assert same_padding(224, 3, 2) == (0, 1)  # stem: PyTorch's symmetric (1, 1) would shift every pixel
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(14, 5, 1) == (2, 2)
