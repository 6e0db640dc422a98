"""The board side stays light: importing it never pulls in TensorFlow or the workstation code."""

from __future__ import annotations

import subprocess
import sys


def test_board_modules_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import edge_runtime, edge_runtime.cli, edge_runtime.manifest, edge_runtime.preprocess\n"
        "import edge_runtime.engines, edge_runtime.engines.litert, edge_runtime.engines.onnx\n"
        "import edge_runtime.audio.frontend, edge_runtime.audio.wav\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'converters', 'models', 'tf2onnx'))\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "classify", "x.png", "--model", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"edge-runtime: error: --model: {tmp_path}/manifest.json: no manifest here; pass an artifact folder made by edge-convert"
    ]


def test_demo_fast_ends_by_itself_with_its_summary():
    """Both shipped models on the sample media, audio read at once, each photo played once (was: never ended)."""
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "demo", "--fast"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "# summary" in out and '"event":"stop"' in out.replace(" ", "")
    assert "Pekingese" in out  # the dog photo was seen
