"""pocketsphinx with our grammar as JSGF (models.asr_peer): the grammar it accepts, real speech, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, have, require

from edge_runtime.asr.grammar import load_grammar, parse_grammar, spoken_number
from models.real_speech import ALSA_CHANNELS, ALSA_SOUNDS

COMMANDS = ROOT / "tests" / "data" / "asr" / "commands.txt"
CHANNELS = "front (left|right|center)\nrear (left|right|center)\nside (left|right)\n"


@pytest.fixture(scope="module")
def asr_peer():
    require(have("pocketsphinx"), "pocketsphinx is not installed (pip install -e '.[peers]')")
    from models import asr_peer

    return asr_peer


@pytest.fixture(scope="module")
def alsa_prompts() -> Path:
    require(
        all((ALSA_SOUNDS / f"{c}.wav").is_file() for c in ALSA_CHANNELS),
        f"the channel prompts in {ALSA_SOUNDS} are missing (apt-get install alsa-utils)",
    )
    return ALSA_SOUNDS


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "models.asr_peer", *args], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )


def phrase_log_priors(fsg, tmp_path: Path) -> dict[tuple[str, ...], float]:
    """Every word sequence pocketsphinx's compiled grammar accepts, with its most likely path's log
    probability, read from the FSG file it writes (start to final state; arcs without a word are empty)."""
    path = tmp_path / "grammar.fsg"
    fsg.writefile(str(path))
    arcs: dict[int, list[tuple[int, float, str | None]]] = {}
    start = final = None
    for line in path.read_text().splitlines():
        t = line.split()
        if t[:1] == ["START_STATE"]:
            start = int(t[1])
        elif t[:1] == ["FINAL_STATE"]:
            final = int(t[1])
        elif t[:1] == ["TRANSITION"]:
            arcs.setdefault(int(t[1]), []).append((int(t[2]), math.log(float(t[3])), t[4] if len(t) > 4 else None))
    best: dict[tuple[str, ...], float] = {}

    def walk(state: int, words: tuple[str, ...], logp: float) -> None:
        if state == final:
            best[words] = max(best.get(words, -math.inf), logp)
        for to, lp, word in arcs.get(state, ()):
            walk(to, words + ((word,) if word else ()), logp + lp)

    walk(start, (), 0.0)
    return best


def test_jsgf_accepts_exactly_the_grammars_phrases_each_as_likely(asr_peer, tmp_path: Path) -> None:
    grammar = load_grammar(COMMANDS)
    decoder = asr_peer.sphinx_decoder()
    jsgf = asr_peer.to_jsgf(grammar, decoder)
    fsg = decoder.parse_jsgf(jsgf)
    assert len(grammar.expansions) == 50
    for e in grammar.expansions:
        assert fsg.accept(e.text), e.text
    for text in ("turn on the", "open the light", "set the volume to six", "cancel the the timer", "light"):
        assert not fsg.accept(text), text
    priors = phrase_log_priors(fsg, tmp_path)
    assert set(priors) == {e.words for e in grammar.expansions}
    flat = f"#JSGF V1.0;\ngrammar flat;\npublic <cmd> = {' | '.join(e.text for e in grammar.expansions)} ;\n"
    flat_priors = phrase_log_priors(decoder.parse_jsgf(flat), tmp_path)
    for words, logp in priors.items():  # the FSG file rounds probabilities to 6 decimals
        assert logp == pytest.approx(flat_priors[words], abs=1e-3), words


def test_jsgf_factors_a_large_grammar(asr_peer, tmp_path: Path) -> None:
    """10,000 phrases (``set <a> to <b>``, both 1..100): the JSGF names each number list a few times, not 10,000."""
    numbers = " | ".join(" ".join(spoken_number(n)) for n in range(1, 101))
    grammar = parse_grammar(f"set <a> to <b>\n<a> = {numbers}\n<b> = {numbers}\n", "numbers")
    decoder = asr_peer.sphinx_decoder()
    jsgf = asr_peer.to_jsgf(grammar, decoder)
    assert len(grammar.expansions) == 10_000
    assert len(jsgf) < sum(len(e.text) + 3 for e in grammar.expansions) / 20
    fsg = decoder.parse_jsgf(jsgf)
    for text in (
        "set one to one",
        "set one hundred to ninety nine",
        "set twenty one to one hundred",
        "set seven to ten",
    ):
        assert fsg.accept(text), text
    for text in ("set one to", "set one hundred hundred to one", "set twenty ten to one", "set to one"):
        assert not fsg.accept(text), text
    assert set(phrase_log_priors(fsg, tmp_path)) == {e.words for e in grammar.expansions}


def test_real_prompts_are_recognised_among_the_channel_names(asr_peer, alsa_prompts: Path) -> None:
    from edge_runtime.audio.wav import read_wav

    peer = asr_peer.PeerRecognizer(parse_grammar(CHANNELS, "channels"))
    for name in ALSA_CHANNELS:
        x = read_wav(alsa_prompts / f"{name}.wav", 16000)
        phrase, cpu = peer.recognize(x)
        assert phrase == name.replace("_", " ").lower(), name
        assert cpu > 0
    heard = peer.hear(read_wav(alsa_prompts / "Noise.wav", 16000))  # noise: no path reaches a phrase's end
    assert heard.phrase is None and heard.hypothesis is None


def test_a_phrase_cut_short_is_no_phrase(asr_peer, alsa_prompts: Path) -> None:
    """Against the home commands "front left" ends inside a phrase: pocketsphinx's words are not a phrase."""
    from edge_runtime.audio.wav import read_wav

    peer = asr_peer.PeerRecognizer(load_grammar(COMMANDS))
    heard = peer.hear(read_wav(alsa_prompts / "Front_Left.wav", 16000))
    assert heard.hypothesis is not None and heard.hypothesis not in peer.phrases
    assert heard.phrase is None


def test_cli_prints_one_json_line_per_file(asr_peer, alsa_prompts: Path, tmp_path: Path) -> None:
    grammar = tmp_path / "channels.txt"
    grammar.write_text(CHANNELS)
    wavs = [alsa_prompts / "Front_Left.wav", alsa_prompts / "Rear_Right.wav"]
    r = run("--grammar", str(grammar), *map(str, wavs))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(row["file"], row["phrase"]) for row in rows] == [
        (str(wavs[0]), "front left"),
        (str(wavs[1]), "rear right"),
    ]
    for row in rows:
        assert row["cpu_s"] > 0 and 1.0 < row["audio_s"] < 2.0 and row["hypothesis"] == row["phrase"]


def test_unknown_words_are_named_in_one_line(asr_peer, alsa_prompts: Path, tmp_path: Path) -> None:
    grammar = parse_grammar("turn on the flurbix light\nopen the zzyzx\ngood night\n", "words.txt")
    with pytest.raises(asr_peer.PeerError, match=r"words.txt: .* lacks 2 word\(s\): flurbix zzyzx; reword"):
        asr_peer.to_jsgf(grammar)
    path = tmp_path / "words.txt"
    path.write_text("turn on the flurbix light\n")
    r = run("--grammar", str(path), str(alsa_prompts / "Front_Left.wav"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"asr_peer: error: {path}: pocketsphinx's dictionary lacks 1 word(s): flurbix; reword the phrases that use them"
    ]


def test_a_bad_file_is_refused_before_any_line(asr_peer, alsa_prompts: Path, tmp_path: Path) -> None:
    grammar = tmp_path / "channels.txt"
    grammar.write_text(CHANNELS)
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    r = run("--grammar", str(grammar), str(alsa_prompts / "Front_Left.wav"), str(bad))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and str(bad) in r.stderr and "Traceback" not in r.stderr
    r = run("--grammar", str(tmp_path / "missing.txt"), str(alsa_prompts / "Front_Left.wav"))
    assert r.returncode == 2 and r.stdout == "" and "missing.txt" in r.stderr and "Traceback" not in r.stderr
