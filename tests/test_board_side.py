"""The board side stays light: importing it never pulls in TensorFlow or the workstation code."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_board_modules_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import edge_runtime, edge_runtime.cli, edge_runtime.manifest, edge_runtime.preprocess\n"
        "import edge_runtime.engines, edge_runtime.engines.litert, edge_runtime.engines.onnx\n"
        "import edge_runtime.audio.frontend, edge_runtime.audio.wav\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('tensorflow', 'keras', 'converters', 'models', 'tf2onnx'))\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "classify", "x.png", "--model", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"edge-runtime: error: --model: {tmp_path}/manifest.json: no manifest here; "
        "pass an artifact folder made by edge-convert"
    ]


def test_demo_fast_ends_by_itself_with_its_summary():
    """Both shipped models on the sample media, audio read at once, each photo played once (was: never ended)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "demo", "--fast"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "# summary" in out and '"event":"stop"' in out.replace(" ", "")
    assert "Pekingese" in out  # the dog photo was seen


def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with (almost) no data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_an_image_header_claiming_too_many_pixels_is_refused_before_decoding(tmp_path):
    """100,000 x 100,000 pixels (30 GB decoded) in a 100-byte file: one line, exit 2, no allocation."""
    forged = tmp_path / "huge.png"
    forged.write_bytes(_png(100_000, 100_000))
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "classify", str(forged)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    ours = [ln for ln in proc.stderr.splitlines() if not ln.startswith("INFO: Created TensorFlow Lite")]  # LiteRT's own
    assert len(ours) == 1 and "huge.png: its header claims more than 50 megapixels" in ours[0], proc.stderr


def _tampered_kws(tmp_path, change):
    """A copy of the shipped keyword model whose manifest ``change(dict)`` edits (model files untouched)."""
    import json
    import shutil

    from edge_runtime.defaults import model_dir

    folder = tmp_path / "kws"
    shutil.copytree(model_dir("kws"), folder)
    d = json.loads((folder / "manifest.json").read_text())
    change(d)
    (folder / "manifest.json").write_text(json.dumps(d))
    return folder


def _detector(**kw):
    return lambda d: d["metrics"].setdefault("detector", {}).update(kw)


def _audio(**kw):
    return lambda d: d["preprocessing"]["audio"].update(kw)


@pytest.mark.parametrize(
    "change, needle",
    [
        (_detector(lanes=1_000_000), "metrics.detector.lanes"),  # was a hang
        (_detector(threshold=5), "metrics.detector.threshold"),  # was silently never firing
        (_detector(smoothing_steps="x"), "metrics.detector.smoothing_steps"),
        (_audio(hop_ms=0), "audio hop_ms"),  # was ZeroDivisionError
        (_audio(n_fft=0), "audio n_fft"),
        (_audio(sample_rate=0), "audio sample_rate"),
        (_audio(fmax=1e9), "audio fmax"),
        (lambda d: d.update(labels=d["labels"][:-1]), "labels for 12 scores"),  # was silently wrong
        (lambda d: d.update(labels=[1, 2]), "labels[0]: must be a string"),
    ],
)
def test_a_tampered_keyword_manifest_is_one_line(tmp_path, change, needle):
    from edge_runtime.defaults import SAMPLES

    folder = _tampered_kws(tmp_path, change)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_runtime.cli",
            "listen",
            str(SAMPLES / "audio" / "keywords.wav"),
            "--model",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    ours = [ln for ln in proc.stderr.splitlines() if not ln.startswith("INFO: Created TensorFlow Lite")]
    assert proc.returncode == 2 and len(ours) == 1 and needle in ours[0], proc.stderr[-2000:]


def test_a_deeply_nested_manifest_is_one_line(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "classify", "x.jpg", "--model", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "nested too deeply" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_check_refuses_a_fusion_label_the_model_cannot_say_and_passes_the_example(tmp_path, pulse):
    from edge_runtime.defaults import SAMPLES

    data = SAMPLES.parent
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[camera]\nuri = "{SAMPLES / "images"}"\n[vision]\n'
        f'[microphone]\nfile = "{SAMPLES / "audio" / "keywords.wav"}"\n'
        '[audio]\n[[fusion.rules]]\nname = "dog_stop"\n[[fusion.rules.all]]\nmodality = "vision"\nlabel = "dog"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "fusion.rules[0].all[0]: 'dog' is not a label of the vision model" in proc.stderr
    assert "Traceback" not in proc.stderr
    example = [sys.executable, "-m", "edge_runtime.cli", "check", "--config", str(data / "edge-runtime.example.toml")]
    # its [microphone] is the default sound card, which check lists as run opens it: a PulseAudio null sink
    proc = subprocess.run(example, capture_output=True, text=True, timeout=120, env=pulse)
    assert proc.returncode == 0, proc.stderr  # it named 'tabby', which no shipped model says
