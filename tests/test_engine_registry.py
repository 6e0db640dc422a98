"""The engine registry: each engine module registers its class for its artifact format."""

from __future__ import annotations

import pytest

from edge_runtime import engines
from edge_runtime.defaults import model_dir
from edge_runtime.engines import base
from edge_runtime.manifest import load


def test_every_engine_module_registers_its_format():
    assert engines.ENGINES == {"litert": "tflite", "onnx": "onnx"}
    assert {fmt: cls.name for fmt, cls in base.REGISTRY.items()} == {"tflite": "litert", "onnx": "onnx"}


def test_open_artifact_uses_the_registered_engine(monkeypatch):
    opened = []

    class Fake(base.Engine):
        name, format = "fake", "onnx"

        @classmethod
        def from_artifact(cls, artifact, folder, threads, accel, check_io=True):
            opened.append((artifact.id, folder, threads, accel))
            return cls()

    monkeypatch.setitem(base.REGISTRY, "onnx", Fake)
    man, folder = load(model_dir("vision"))
    art = man.artifact("onnx")
    assert isinstance(engines.open_artifact(art, str(folder), threads=2), Fake)
    assert opened == [(art.id, folder, 2, engines.Acceleration())]


def test_a_format_without_an_engine_is_one_line(monkeypatch):
    monkeypatch.delitem(base.REGISTRY, "onnx")
    man, folder = load(model_dir("vision"))
    with pytest.raises(engines.EngineError, match="no engine for format 'onnx'"):
        engines.open_artifact(man.artifact("onnx"), folder)


def test_a_board_without_onnx_runtime_still_opens_litert():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from edge_runtime.engines import ENGINES, EngineError, open_engine\n"
        "from edge_runtime.defaults import model_dir\n"
        "from edge_runtime.manifest import load\n"
        "m, f = load(model_dir('vision'))\n"
        "assert set(ENGINES) == {'litert', 'onnx'} and open_engine(m, f).name == 'litert'\n"
        "try:\n    open_engine(m, f, 'onnx')\nexcept EngineError as e:\n    assert 'not installed' in str(e)\n"
        "else:\n    raise AssertionError('onnx opened without ONNX Runtime')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
