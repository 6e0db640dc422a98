"""Late fusion and the TOML config: pure logic, no hardware."""

from __future__ import annotations

import pytest

from edge_runtime import config
from edge_runtime.events import Decision
from edge_runtime.fusion import Fusion

S = 1_000_000_000

RULES = """
[camera]
uri = "0"
[vision]
[microphone]
[audio]
[fusion]
passthrough = false
[[fusion.rules]]
name = "dog_stop"
within_s = 1.5
all = [{modality = "vision", label = "dog", min_score = 0.5}, {modality = "audio", label = "stop"}]
[fusion.weighted]
labels = {alarm = {vision = "smoke", audio = "fire"}}
weights = {vision = 0.4, audio = 0.6}
threshold = 0.6
"""


def _d(modality, label, score, t_s):
    t = int(t_s * S)
    return Decision(modality, label, score, t, t + 1000, "src")


def test_rule_fires_when_both_happen_within_the_window():
    f = Fusion(config.parse(RULES).fusion, clock=lambda: 0)
    assert f.add(_d("vision", "dog", 0.9, 10.0)) == []
    (ev,) = f.add(_d("audio", "stop", 0.8, 11.0))
    assert ev.name == "dog_stop" and ev.score == pytest.approx(0.8)
    assert [d.label for d in ev.decisions] == ["dog", "stop"]
    # Cooldown: the same pair again right away gives nothing.
    assert f.add(_d("audio", "stop", 0.9, 11.2)) == []


def test_rule_does_not_fire_outside_the_window_or_below_min_score():
    f = Fusion(config.parse(RULES).fusion)
    f.add(_d("vision", "dog", 0.9, 10.0))
    assert f.add(_d("audio", "stop", 0.8, 11.6)) == []  # 1.6 s apart
    f.add(_d("vision", "dog", 0.4, 20.0))  # below min_score
    assert f.add(_d("audio", "stop", 0.8, 20.1)) == []


def test_weighted_fusion_over_a_shared_label_map():
    f = Fusion(config.parse(RULES).fusion)
    assert f.add(_d("vision", "smoke", 0.9, 5.0)) == []  # 0.36 < 0.6
    (ev,) = f.add(_d("audio", "fire", 0.7, 5.5))  # 0.36 + 0.42 = 0.78
    assert ev.name == "alarm" and ev.score == pytest.approx(0.78)
    assert {d.label for d in ev.decisions} == {"smoke", "fire"}


def test_passthrough_with_cooldown():
    cfg = config.parse("[microphone]\n[audio]\n").fusion
    f = Fusion(cfg)
    assert [e.name for e in f.add(_d("audio", "go", 0.9, 1.0))] == ["go"]
    assert f.add(_d("audio", "go", 0.9, 1.5)) == []
    assert [e.name for e in f.add(_d("audio", "go", 0.9, 3.5))] == ["go"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[camera]\n[vision]\nthreshold = 1.5\n", "edge.toml:3: vision.threshold: must be between 0 and 1, got 1.5"),
        ("[camera]\n[vision]\nthreshhold = 0.5\n", "edge.toml:3: vision.threshhold: unknown key"),
        ('[microphone]\n[audio]\nengine = "tpu"\n', "edge.toml:3: audio.engine: must be one of auto, litert, onnx"),
        ('[microphone]\n[audio]\n[sinks.mqtt]\nport = "x"\n', "edge.toml:4: sinks.mqtt.port: must be an integer"),
        *[
            (
                f"[microphone]\n[audio]\nfalse_accepts_per_hour = {v}\n",
                "edge.toml:3: audio.false_accepts_per_hour: must be "
                f"a number of false accepts per hour from 0 to 1000, got {v}",
            )
            for v in ("-0.5", "inf", "nan", "1001.0")
        ],
        (
            "[microphone]\n[audio]\nfalse_accepts_per_hour = true\n",
            "edge.toml:3: audio.false_accepts_per_hour: must be a number, got True",
        ),
        ("[vision]\n", "edge.toml:1: vision: needs a [camera] section"),
        ("[runtime]\n", "edge.toml: configure at least one of [vision]"),
        ("x = [", "edge.toml: not valid TOML"),
    ],
)
def test_config_errors_name_file_line_and_key(text, message):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "edge.toml")
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_config_types():
    cfg = config.parse(RULES + "\n[sinks.http]\nport = 0\n[sinks.jsonl]\n", "edge.toml")
    assert cfg.fusion.rules[0].all[1].label == "stop"
    assert cfg.sinks.http.port == 0 and cfg.sinks.jsonl.path == "-"
    assert cfg.camera.uri == "0" and cfg.vision.threshold == 0.5
    assert cfg.audio.false_accepts_per_hour == 0.5 and cfg.audio.threshold is None
    cfg = config.parse("[microphone]\n[audio]\nfalse_accepts_per_hour = 2\n[sinks.jsonl]\n", "edge.toml")
    assert cfg.audio.false_accepts_per_hour == 2.0 and isinstance(cfg.audio.false_accepts_per_hour, float)
    assert config.parse("[microphone]\n[audio]\nfalse_accepts_per_hour = 0\n").audio.false_accepts_per_hour == 0.0


def test_the_shipped_example_config_is_valid():
    from edge_runtime.defaults import DATA

    cfg = config.load(DATA / "edge-runtime.example.toml")
    assert cfg.vision.model == "default" and cfg.audio.model == "default"
    assert cfg.fusion.rules[0].name == "cat_stop"
    assert cfg.sinks.http.host == "127.0.0.1"


def test_http_off_loopback_needs_a_token_file(tmp_path):
    base = "[microphone]\n[audio]\n[sinks.http]\n"
    for host in ("0.0.0.0", "192.168.1.20", "::", "", "edge.local"):
        with pytest.raises(config.ConfigError) as e:
            config.parse(base + f'host = "{host}"\n', "edge.toml")
        assert str(e.value).startswith("edge.toml:4: sinks.http.host: ") and "token_file" in str(e.value)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert config.parse(base + f'host = "{host}"\n').sinks.http.token_file is None
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    cfg = config.parse(base + f'host = "0.0.0.0"\ntoken_file = "{token}"\n', "edge.toml")
    assert config.read_token(cfg.sinks.http.token_file) == "s3cret-token"
    (tmp_path / "empty").write_text("\n")
    for bad, why in (
        (tmp_path / "missing", "cannot read the token file"),
        (tmp_path / "empty", "the token file must hold one token"),
    ):
        with pytest.raises(config.ConfigError) as e:
            config.parse(base + f'host = "0.0.0.0"\ntoken_file = "{bad}"\n', "edge.toml")
        assert str(e.value).startswith(f"edge.toml:5: sinks.http.token_file: {bad}: {why}"), str(e.value)
    for key, value in (("timeout_s", "0"), ("timeout_s", "inf"), ("max_connections", "0"), ("max_connections", "65")):
        with pytest.raises(config.ConfigError, match=f"^edge.toml:4: sinks.http.{key}: must be"):
            config.parse(base + f"{key} = {value}\n", "edge.toml")


def test_check_and_run_both_refuse_an_open_http_side_without_a_token(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    cfg = tmp_path / "edge.toml"
    cfg.write_text('[microphone]\n[audio]\n[sinks.http]\nhost = "0.0.0.0"\nport = 0\n')
    for cmd in ("check", "run"):
        r = subprocess.run(
            [sys.executable, "-m", "edge_runtime.cli", cmd, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert r.returncode != 0 and "Traceback" not in r.stderr, (cmd, r.stderr)
        assert f"{cfg}:4: sinks.http.host: 0.0.0.0 is not a loopback address" in r.stderr, (cmd, r.stderr)


@pytest.mark.parametrize(
    "text, needle",
    [
        (
            "[microphone]\n[audio]\nthreads = 9223372036854775807\n",
            "audio.threads: must be greater than 0 and at most 256",
        ),
        ("[microphone]\n[audio]\nsmoothing_steps = 99999999999999999999\n", "audio.smoothing_steps"),
        (
            "[microphone]\n[audio]\n[[fusion.rules]]\nname = 'r'\nwithin_s = inf\n"
            "[[fusion.rules.all]]\nmodality = 'audio'\nlabel = 'yes'\n",
            "fusion.rules[0].within_s",
        ),
        ("[microphone]\n[audio]\n[fusion]\npassthrough_cooldown_s = inf\n", "fusion.passthrough_cooldown_s"),
        ("[microphone]\n[audio]\n[fusion.weighted]\nwindow_s = 1e308\n", "fusion.weighted.window_s"),
        (
            "[microphone]\n[audio]\n[fusion.weighted]\nweights = {vision = -10.0, audio = 1.0}\n",
            "weights.vision: must be 0",
        ),
        ("[microphone]\n[audio]\n[fusion.weighted]\nweights = {vision = nan, audio = 1.0}\n", "weights.vision"),
        (
            "[microphone]\n[audio]\n[sinks.jsonl]\npath = 'x.jsonl'\nmax_bytes = 200\nbackups = 1000000000000000\n",
            "sinks.jsonl.backups: must be from 0 to 1000",
        ),
        ("[microphone]\n[audio]\n[runtime]\nqueue_size = 1e300\n", "runtime.queue_size"),
        ("[microphone]\nx = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_hostile_values_are_one_line_errors(text, needle):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "edge.toml")
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_an_endless_or_huge_file_is_refused_unread(tmp_path):
    with pytest.raises(config.ConfigError, match="/dev/zero: larger than 1024 KiB"):
        config.load("/dev/zero")
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 200_000)
    with pytest.raises(config.ConfigError, match="larger than"):
        config.load(big)


def test_a_long_line_does_not_stall_the_error_locator():
    """A multi-line string holding one line of a million spaces: the locator is linear
    (was quadratic: 54 s for 10^5)."""
    import subprocess
    import sys

    code = (
        "from edge_runtime import config\n"
        "text = '[microphone]\\n[audio]\\nnote = \"\"\"' + ' ' * 1000000 + 'x\"\"\"\\nthreads = 0\\n'\n"
        "try:\n    config.parse(text, 'edge.toml')\nexcept config.ConfigError as e:\n    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "audio.note: unknown key" in proc.stdout or "audio.threads" in proc.stdout, (proc.stdout, proc.stderr[-500:])
