"""`edge-runtime bench`: the table, a config's models, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

EXAMPLE = ROOT / "edge_runtime" / "data" / "edge-runtime.example.toml"


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "bench", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_the_table_for_a_config_s_models(tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f"[microphone]\nfile = '{ROOT / 'edge_runtime/data/samples/audio/keywords.wav'}'\n"
        "[audio]\nengine = 'litert'\nthreads = 1\n"
        "[asr]\nphrases = ['start the coffee machine', 'turn (on|off) the light']\n"
    )
    p = bench("--config", str(cfg), "--seconds", "0.5")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "artifact", "device", "raw/s"]
    rows = [ln for ln in lines[1:] if ln.startswith("kws-lstm128")]
    assert len(rows) == 2 and all("RTF" in r and "streams/core" in r for r in rows)
    assert any("threads=1" in r for r in rows)  # opened as the config says
    phrases = [ln for ln in lines[1:] if ln.startswith("asr-ctc-lstm")]  # its pipeline's model: grammar and decoder
    assert len(phrases) == 2 and all("RTF" in r and "with decoding" in r for r in phrases)
    assert not any("with decoding" in r for r in rows)
    assert lines[-2].startswith("cold start ") and lines[-1].startswith("host: ")


def test_a_phrase_model_folder_with_a_grammar_is_timed_with_its_decoder():
    grammar = ROOT / "tests" / "data" / "asr" / "commands.txt"
    asr, kws = ROOT / "edge_runtime/data/models/asr", ROOT / "edge_runtime/data/models/kws"
    p = bench("--model", str(asr), "--model", str(kws), "--grammar", str(grammar), "--seconds", "0.3")
    assert p.returncode == 0, p.stderr
    rows = p.stdout.splitlines()[1:]
    phrases = [ln for ln in rows if ln.startswith("asr-ctc-lstm")]
    keywords = [ln for ln in rows if ln.startswith("kws-lstm128")]
    assert len(phrases) == 2 and all("with decoding" in r for r in phrases)  # the grammar reaches the phrase model
    assert len(keywords) == 2 and not any("with decoding" in r for r in keywords)  # and only it
    without = bench("--model", str(asr), "--seconds", "0.3")
    assert without.returncode == 0 and not any("with decoding" in r for r in without.stdout.splitlines())


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    bad_grammar, asr = tmp_path / "bad.txt", str(ROOT / "edge_runtime/data/models/asr")
    bad_grammar.write_text("turn (on|off the light\n")
    for args, message in (
        (["--grammar", str(bad_grammar)], "--grammar goes with --model"),
        (["--model", asr, "--grammar", str(bad_grammar)], "--grammar "),
        (["--model", asr, "--grammar", str(tmp_path / "none.txt")], "--grammar "),
        (["--model", str(tmp_path)], "--model: "),
        (["--config", str(tmp_path / "none.toml")], "cannot read the config"),
        (["--seconds", "0"], "--seconds"),
        (["--seconds", "nan"], "--seconds"),
    ):
        p = bench(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert message in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, (
            args,
            p.stderr,
        )
