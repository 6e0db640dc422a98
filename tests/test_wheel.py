"""The wheel carries the default models and sample media and works outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_defaults_and_runs_outside_the_repo(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("edge_runtime-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("vision", "kws", "asr"):
        assert f"edge_runtime/data/models/{kind}/manifest.json" in names
    assert "edge_runtime/data/edge-runtime.example.toml" in names
    assert "edge_runtime/data/samples/audio/keywords.wav" in names
    assert "converters/templates/report.html.j2" in names  # edge-convert's report.html
    assert not any(n.startswith(("models/", "tests/")) for n in names)  # recipes and tests stay in the repo
    size = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist() if "/data/models/" in i.filename)
    assert size <= 20 * 1024 * 1024, f"default artifacts take {size / 1e6:.1f} MB"

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    sample = site / "edge_runtime" / "data" / "samples" / "images" / "orange.jpg"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import edge_runtime.cli as c, sys; print(c.__file__, file=sys.stderr);"
            " sys.argv[0] = 'edge-runtime'; sys.exit(c.main())",
            "classify",
            str(sample),
            "--json",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(site) in proc.stderr.splitlines()[0]  # the installed copy, not the repository
    assert json.loads(proc.stdout)["top"][0]["label"] == "orange"

    # edge-runtime bench from the wheel, both shipped models, every artifact
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import edge_runtime.cli as c, sys; sys.argv[0] = 'edge-runtime'; sys.exit(c.main())",
            "bench",
            "--json",
            "--seconds",
            "0.5",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [m["model"] for m in result["models"]] == ["efficientnet-lite0-imagenet", "kws-lstm128"]
    for m in result["models"]:
        assert [r["artifact"] for r in m["artifacts"]] == [
            a["id"] for a in json.loads((Path(m["folder"]) / "manifest.json").read_text())["artifacts"]
        ]
        assert str(site) in m["folder"]
        for r in m["artifacts"]:
            assert "error" not in r, r
            assert r["raw"]["per_s"] > 0 and 0 < r["raw"]["p50_ms"] <= r["raw"]["p99_ms"] and r["raw"]["cpu_ms"] > 0
            if m["streaming"]:
                assert r["rtf"] > 0 and r["streams_per_core"] > 0 and 0 < r["engine_vs_pipeline"] <= 1.5
            else:
                assert 0 < r["daemon_vs_raw"] <= 1.5 and 0 < r["classify_vs_raw"] <= 1.5
    assert result["process"]["cold_start_s"] > 0 and result["process"]["max_rss_mb"] > 0
    assert result["process"]["tensorflow_imported"] is False
