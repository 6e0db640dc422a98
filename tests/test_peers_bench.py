"""bench/peers.py in its smoke mode (tiny rounds, one model): the result has every section, every
ratio is finite and positive, both sides answer the same on the photos, and the plots are written.

Real peers, as ``scripts/setup.sh`` installs them: MediaPipe (``--no-deps``), openWakeWord 0.5.1
and pocketsphinx; the MobileNetV2 is converted here by ``edge-convert --target coral``. Under
CI=true a missing one fails. No time is asserted: only that the figures exist and make sense.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT, have, require

pytestmark = pytest.mark.slow  # converts a MobileNetV2 with TensorFlow first


def test_peers_smoke(tmp_path):
    for module in ("mediapipe", "openwakeword", "pocketsphinx", "tensorflow", "matplotlib"):
        require(have(module), f"{module} is not installed (scripts/setup.sh installs the peers)")
    out = tmp_path / "results" / "peers.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "peers.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["host"]["cpus"] >= 1 and r["host"]["mediapipe"] and isinstance(r["host"]["cpu"]["simd"], list)
    assert r["rounds"] == 2 and r["photos"]

    ratios = []
    assert [m["setting"] for m in r["vision"]] == ["one_cpu", "all_cpus"]
    assert len(r["vision"][0]["cpus"]) == 1 == len(r["keywords"]["cpus"])
    for m in r["vision"]:
        ratios += vision_ratios(m)
    kw = r["keywords"]
    assert set(kw["rtf"]) == {"ours", "openwakeword", "pocketsphinx"}
    for k in ("rtf_ratio", "cpu_rtf_ratio"):
        assert set(kw[k]) == {"openwakeword/ours", "pocketsphinx/ours"}
        for v in kw[k].values():
            assert len(v["rounds"]) == 2
            ratios += [v["median"], *v["rounds"]]
    assert all(v > 0 for v in kw["rtf"].values()) and all(v > 0 for v in kw["cpu_rtf"].values())

    assert len(ratios) == 2 * (2 * 4 + 1) * 3 + 2 * 2 * 3
    assert all(math.isfinite(x) and x > 0 for x in ratios), ratios
    for name in r["plots"]:
        assert (out.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(r["plots"]) == ["peers_keywords.png", "peers_vision.png"]


def vision_ratios(m: dict) -> list[float]:
    """One model in one setting: its systems, the same scores as MediaPipe on the same input, and its ratios."""
    out: list[float] = []
    assert m["input"] == "160x160" and "uint8 I/O" in m["artifact"]
    assert set(m["per_s"]) == {"ours_raw", "ours_classify", "ours_daemon", "mediapipe_image", "mediapipe_video"}
    # the same model on both sides: identical input, identical scores; whole frames go through each
    # side's own resize, so their top-1 answers are counted, not required to match
    same, agree = m["same_scores_on_model_sized_input"], m["top1_agreement_with_mediapipe"]
    assert same["same"] == same["photos"] == agree["photos"] > 0
    assert 0 <= agree["agree"] <= agree["photos"]
    assert set(m["speed_ratio"]) == {
        f"{o}/{p}" for o in ("ours_classify", "ours_daemon") for p in m["per_s"] if "mediapipe" in p
    }
    assert isinstance(m["goal_met"], bool) if m["setting"] == "one_cpu" else m["goal_met"] is None
    assert all(n >= 1 for n in m["busy_threads"].values()) and set(m["busy_threads"]) == {
        "ours_classify",
        "mediapipe_image",
    }
    assert set(m["engine_alone_ratio"]) == {"ours_raw/mediapipe_image"}
    for k in ("speed_ratio", "cpu_ratio", "engine_alone_ratio"):
        for v in m[k].values():
            assert len(v["rounds"]) == 2
            out += [v["median"], *v["rounds"]]
    return out
