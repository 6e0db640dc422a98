"""Spoken commands on the board: the [asr] section, `listen --grammar` and the speech pipeline in the daemon,
with the shipped phrase model and phrases said by a voice it never heard (Pico, an engine held out of its
training)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT, require, run_cli, wait_until

from edge_runtime import config
from edge_runtime.defaults import SAMPLES, model_dir

COMMANDS = ROOT / "tests" / "data" / "asr" / "commands.txt"
PHRASE = "turn on the kitchen light"  # a phrase of COMMANDS; no phrase of it was ever trained on
SR = 16000


@pytest.fixture(scope="module")
def said(tmp_path_factory):
    """PHRASE and an out-of-grammar sentence, said by Pico with a second of room noise around them."""
    require(shutil.which("pico2wave") is not None, "pico2wave is not installed (apt-get install libttspico-utils)")
    from edge_runtime.audio.wav import read_wav, write_wav

    d = tmp_path_factory.mktemp("said")
    rng = np.random.default_rng(0)
    out = {}
    for name, text in (("phrase", PHRASE), ("other", "the weather report said it would rain all weekend")):
        raw = d / f"{name}-raw.wav"
        subprocess.run(["pico2wave", "-l", "en-US", "-w", str(raw), text], check=True, timeout=60)
        x = read_wav(raw, SR)
        x = 0.5 * x / np.abs(x).max()
        pad = np.zeros(SR, np.float32)
        y = np.concatenate([pad, x, pad]) + rng.normal(0, 0.003, len(x) + 2 * SR).astype(np.float32)
        write_wav(d / f"{name}.wav", y.astype(np.float32), SR)
        out[name] = d / f"{name}.wav"
    return out


def _listen(*args: str) -> subprocess.CompletedProcess:
    return run_cli("listen", *args, module="edge_runtime.cli")


@pytest.mark.parametrize("engine", ["litert", "onnx"])
def test_listen_grammar_recognises_a_held_out_voice_and_rejects_other_speech(said, engine):
    proc = _listen(str(said["phrase"]), str(said["other"]), "--grammar", str(COMMANDS), "--engine", engine, "--json")
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(g["file"], g["phrase"]) for g in got] == [(str(said["phrase"]), PHRASE)], got
    (g,) = got
    assert g["slots"] == {} and 0.5 <= g["score"] <= 1 and 1.0 <= g["t_start"] < g["t"] <= 1.0 + 3.0


def test_listen_grammar_errors_are_one_line(tmp_path, said):
    bad = tmp_path / "bad.txt"
    bad.write_text("turn (on the light\n")
    proc = _listen(str(said["phrase"]), "--grammar", str(bad))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"edge-runtime: error: --grammar {bad}:1: " + proc.stderr.split(f"{bad}:1: ", 1)[1].strip()
    ]
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("turn on the flux capacitor\n")
    proc = _listen(str(said["phrase"]), "--grammar", str(unknown))
    err = _error(proc)
    assert proc.returncode == 2 and "'capacitor'" in err and "models.g2p" in err, err
    proc = _listen(str(said["phrase"]), "--grammar", str(COMMANDS), "--threshold", "0.5")
    assert proc.returncode == 2 and "--min-confidence" in proc.stderr and "\n" not in proc.stderr.strip()
    proc = _listen(str(said["phrase"]), "--grammar", str(COMMANDS), "--model", str(model_dir("kws")))
    err = _error(proc)
    assert proc.returncode == 2 and "not a phrase model" in err, err


def test_the_asr_section_is_checked_like_every_other(tmp_path):
    mic = f"[microphone]\nfile = '{SAMPLES / 'audio' / 'keywords.wav'}'\n"
    with pytest.raises(config.ConfigError, match=r"^edge.toml:1: asr: needs a \[microphone\] section"):
        config.parse(f"[asr]\ngrammar = '{COMMANDS}'\n", "edge.toml")
    with pytest.raises(config.ConfigError, match=r"^edge.toml:\d+: asr.grammar: give a grammar file .* one of the two"):
        config.parse(f"[asr]\ngrammar = '{COMMANDS}'\nphrases = ['stop']\n{mic}", "edge.toml")
    with pytest.raises(config.ConfigError, match=r"asr.min_confidence: must be between 0 and 1"):
        config.parse(f"[asr]\nphrases = ['stop']\nmin_confidence = 2\n{mic}", "edge.toml")
    with pytest.raises(config.ConfigError, match=r"fusion.rules\[0\].all\[0\].phrase: give label or phrase, not both"):
        config.parse(
            f"[asr]\nphrases = ['stop']\n{mic}"
            "[[fusion.rules]]\nname = 'x'\nall = [{ modality = 'speech', label = 'a', phrase = 'b' }]\n",
            "edge.toml",
        )
    cfg = config.parse(
        f"[asr]\nphrases = ['turn (on|off) the light']\n{mic}"
        "[[fusion.rules]]\nname = 'x'\nall = [{ modality = 'speech', phrase = 'Turn  ON the light' }]\n",
        "edge.toml",
    )
    assert cfg.fusion.rules[0].all[0].label == "turn on the light"


def _error(proc: subprocess.CompletedProcess) -> str:
    """The one error line (after the inference engine's own INFO lines, if it loaded)."""
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("INFO: ") for line in lines[:-1]), proc.stderr
    return lines[-1]


def _check(tmp_path, body: str) -> subprocess.CompletedProcess:
    path = tmp_path / "edge.toml"
    path.write_text(body)
    return run_cli("check", "--config", str(path), module="edge_runtime.cli")


def test_check_refuses_what_run_would_refuse(tmp_path):
    mic = f"[microphone]\nfile = '{SAMPLES / 'audio' / 'keywords.wav'}'\n"
    proc = _check(tmp_path, f"[asr]\nphrases = ['turn on the flux capacitor']\n{mic}")
    err = _error(proc)
    assert proc.returncode == 2 and "asr.phrases" in err and "'capacitor'" in err, err
    proc = _check(
        tmp_path,
        f"[asr]\nphrases = ['turn (on|off) the light']\n{mic}"
        "[[fusion.rules]]\nname = 'x'\nall = [{ modality = 'speech', phrase = 'turn on the lights' }]\n",
    )
    err = _error(proc)
    assert proc.returncode == 2 and "fusion.rules[0].all[0]: 'turn on the lights'" in err and "speech" in err, err
    proc = _check(tmp_path, f"[asr]\ngrammar = '{COMMANDS}'\n{mic}")
    assert proc.returncode == 0, proc.stderr
    from edge_runtime.manifest import load

    own = load(model_dir("asr"))[0].metrics["asr"]["min_confidence"]  # the model's operating point
    assert f"asr: 50 phrases from {COMMANDS}; min_confidence {own:g}" in proc.stdout


def test_the_daemon_fuses_a_spoken_command_with_a_vision_event(tmp_path, said):
    from edge_runtime.service import Daemon

    events = tmp_path / "events.jsonl"
    cfg = config.parse(
        f"[asr]\ngrammar = '{COMMANDS}'\n"
        f"[microphone]\nfile = '{said['phrase']}'\nrealtime = false\n"
        f"[vision]\n[camera]\nuri = '{SAMPLES / 'images'}'\nfps = 20.0\nloop = true\n"
        "[fusion]\npassthrough = false\n"
        "[[fusion.rules]]\nname = 'kitchen_light'\nwithin_s = 60.0\ncooldown_s = 60.0\n"
        f"all = [{{ modality = 'vision', label = 'Pekingese', min_score = 0.3 }}, "
        f"{{ modality = 'speech', phrase = '{PHRASE}' }}]\n"
        f"[sinks.jsonl]\npath = '{events}'\n",
        str(tmp_path / "edge.toml"),
    )
    daemon = Daemon(cfg)
    daemon.start()
    try:
        assert wait_until(lambda: events.exists() and "kitchen_light" in events.read_text(), timeout=120)
        status = daemon.status()
    finally:
        daemon.stop()
    (ev,) = [json.loads(line) for line in events.read_text().splitlines()]
    speech = [d for d in ev["decisions"] if d["modality"] == "speech"]
    assert ev["event"] == "kitchen_light" and [d["phrase"] for d in speech] == [PHRASE]
    assert speech[0]["label"] == PHRASE and speech[0]["slots"] == {} and speech[0]["source"] == "microphone"
    assert status["pipelines"]["asr"]["phrases"] == 50 and status["pipelines"]["asr"]["decisions"] == 1


def test_phrases_do_not_depend_on_how_the_stream_is_cut(said):
    from edge_runtime.asr.grammar import load_grammar
    from edge_runtime.asr.recognizer import PhraseRecognizer
    from edge_runtime.audio.wav import read_wav
    from edge_runtime.manifest import load

    m, folder = load(model_dir("asr"))
    rec = PhraseRecognizer(m, folder, load_grammar(COMMANDS), "litert")
    x = np.concatenate([read_wav(said["other"], SR), read_wav(said["phrase"], SR), read_wav(said["phrase"], SR)])
    runs = []
    for chunk in (160, 1600, 999, len(x)):
        rec.reset()
        runs.append([p for i in range(0, len(x), chunk) for p in rec.process(x[i : i + chunk])] + rec.flush())
    assert [p.phrase for p in runs[0]] == [PHRASE, PHRASE], runs[0]  # the model's state carries on across both
    assert runs[0] == runs[1] == runs[2] == runs[3]
    assert runs[0][0].t_end < runs[0][1].t_start
