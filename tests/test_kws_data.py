"""models.kws_data: a tiny synthetic Speech Commands set from espeak-ng and flite."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from models import kws_data as kd

HAVE_ENGINES = shutil.which("espeak-ng") is not None and shutil.which("flite") is not None
WHY = "espeak-ng or flite is missing (apt-get install espeak-ng flite)"


def _read(path: Path) -> tuple[np.ndarray, int, int, int]:
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return x, rate, channels, width


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(HAVE_ENGINES, WHY)
    out = tmp_path_factory.mktemp("kws") / "set"
    assert kd.main(["--out", str(out), "--per-word", "2", "--seed", "7", "--jobs", "2"]) == 0
    return out


def test_layout_and_labels(tiny: Path) -> None:
    meta = json.loads((tiny / "voices.json").read_text())
    assert meta["labels"] == list(kd.LABELS) and len(kd.LABELS) == 12
    for split in kd.SPLITS:
        labels = sorted(p.name for p in (tiny / split).iterdir())
        assert labels == sorted(kd.LABELS), split
        for label in kd.LABELS:
            wavs = list((tiny / split / label).glob("*.wav"))
            assert len(wavs) == meta["counts"][split][label] >= 1, (split, label)
            assert not list((tiny / split / label).glob(".*.tmp")), "a temp file was left behind"
    assert {"espeak-ng", "flite"} <= set(meta["engines"])


def test_every_clip_is_one_second_16k_mono_16bit(tiny: Path) -> None:
    wavs = sorted(tiny.rglob("*.wav"))
    assert len(wavs) == 12 * (2 + 1 + 1)
    for p in wavs:
        x, rate, channels, width = _read(p)
        assert (rate, channels, width, len(x)) == (16000, 1, 2, 16000), p
        assert np.abs(x).max() < 1.0, f"{p} clips"


def test_keywords_stand_out_of_the_noise(tiny: Path) -> None:
    for split in kd.SPLITS:
        for kw in kd.KEYWORDS:
            for p in (tiny / split / kw).glob("*.wav"):
                x = _read(p)[0]
                e = 20 * np.log10(kd.frame_rms(x, 320) + 1e-9)  # 20 ms frames, dB
                assert e.max() > -40.0, f"{p}: speech too quiet ({e.max():.1f} dBFS)"
                assert e.max() - np.percentile(e, 10) > 6.0, f"{p}: speech not above the noise floor"


def test_silence_is_noise_only(tiny: Path) -> None:
    recs = [json.loads(line) for line in (tiny / "clips.jsonl").read_text().splitlines()]
    silence = [r for r in recs if r["label"] == kd.SILENCE]
    assert silence and all(r["kind"] == "silence" and r["speech"] is None and r["noise"] for r in silence)
    for r in silence:
        assert kd.rms(_read(tiny / r["path"])[0]) > 0.0


def test_splits_hold_out_whole_voices(tiny: Path) -> None:
    meta = json.loads((tiny / "voices.json").read_text())
    sets = {s: set(meta["splits"][s]) for s in kd.SPLITS}
    assert all(sets.values())
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    groups = {s: set(meta["held_out_groups"][s]) for s in kd.SPLITS}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    for s in kd.SPLITS:  # both engines in every split (and others: test_every_engine_speaks_in_training)
        assert {"espeak-ng", "flite"} <= {v.split(":")[0] for v in sets[s]}, s
    for line in (tiny / "clips.jsonl").read_text().splitlines():
        r = json.loads(line)
        used = [u["voice"] for u in [r["speech"], r["other"], *r["babble"]] if u]
        assert set(used) <= sets[r["split"]], r["path"]
        assert r["path"].startswith(f"{r['split']}/{r['label']}/")


def test_same_seed_same_files(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert kd.main(["--out", str(again), "--per-word", "2", "--seed", "7", "--jobs", "1"]) == 0
    first = sorted(p.relative_to(tiny) for p in tiny.rglob("*.wav"))
    assert first == sorted(p.relative_to(again) for p in again.rglob("*.wav"))
    for rel in first[::5]:
        assert _sha(tiny / rel) == _sha(again / rel), rel
    assert (tiny / "clips.jsonl").read_text() == (again / "clips.jsonl").read_text()


def test_existing_output_is_refused(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kd.main(["--out", str(tiny), "--per-word", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a data set" in err and "\n" not in err


def test_missing_engines_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert kd.main(["--out", str(tmp_path / "out"), "--per-word", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "apt-get install espeak-ng flite" in err
    assert not (tmp_path / "out").exists()


def test_unknown_words_hold_no_keyword_or_homophone() -> None:
    words = kd.UNKNOWN_WORDS
    assert 250 <= len(words) <= 400 and len(set(words)) == len(words)
    assert not set(words) & set(kd.KEYWORDS)
    for near in ("yet", "cup", "town", "lift", "bright", "one", "of", "top", "so"):
        assert near in words
    require(HAVE_ENGINES, WHY)
    phonemes = {kw: _phonemes(kw) for kw in kd.KEYWORDS}
    clashes = [w for w in words if _phonemes(w) in phonemes.values()]
    assert not clashes, f"pronounced exactly like a keyword: {clashes}"


def _phonemes(word: str) -> str:
    out = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en-us", word], capture_output=True, text=True, check=True)
    return out.stdout.strip().replace("'", "").replace(",", "")


def test_voice_listings_are_parsed() -> None:
    langs = """Pty Language       Age/Gender VoiceName          File                 Other Languages
 2  en-gb           --/M      English_(Great_Britain) gmw/en               (en 2)
 3  en-uk           --/M      english-mb-en1     mb/mb-en1            (en-gb 3)(en 2)
 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)
 5  en-us           --/M      us-mbrola-2        mb/mb-us2            (en 7)
"""
    assert kd.parse_espeak_languages(langs) == ["en-gb", "en-us"]
    variants = """Pty Language       Age/Gender VoiceName          File                 Other Languages
 5  variant         --/M      Mr_Serious         !v/Mr serious
 5  variant         --/M      Storm              !v/Storm             (en-us 5)
 5  variant         --/M      fast_test          !v/fast
 5  variant         --/M      male3              !v/m3
"""
    assert kd.parse_espeak_variants(variants, exclude=("fast",)) == ["Storm", "m3"]
    assert kd.parse_flite_voices("Voices available: kal awb_time kal16 awb rms slt \n") == [
        "awb", "kal", "kal16", "rms", "slt"]
    assert kd.Voice("flite", "kal16").group == kd.Voice("flite", "kal").group


def test_split_voices_is_disjoint_and_seeded() -> None:
    voices = [kd.Voice("espeak-ng", lang, var) for lang in ("en-gb", "en-us") for var in "abcdefghijklmnopqrst"]
    voices += [kd.Voice("flite", n) for n in ("kal", "kal16", "awb", "rms", "slt")]
    a = kd.split_voices(voices, 3, (0.8, 0.1, 0.1))
    assert a == kd.split_voices(voices, 3, (0.8, 0.1, 0.1))
    ids = {s: {v.id for v in a[s]} for s in kd.SPLITS}
    assert sum(len(x) for x in ids.values()) == len(voices) == len(set().union(*ids.values()))
    kal = [s for s in kd.SPLITS if "flite:kal" in ids[s]]
    assert kal and "flite:kal16" in ids[kal[0]]  # one speaker, one split


@pytest.mark.parametrize("n", [4000, 15000])
def test_keywords_lie_inside_the_window_and_cuts_leave_a_part(n: int) -> None:
    x = np.ones(n, dtype=np.float32)
    for shift in (0.0, 0.5, 1.0):
        seg, start = kd.arrange(kd.ClipTask("", "train", "yes", "keyword", 0, shift=shift), x)
        assert kd.window(seg, start).sum() == pytest.approx(n)
    for keep_start in (True, False):
        task = kd.ClipTask("", "train", kd.UNKNOWN, "edge", 0, cut=0.4, keep_start=keep_start)
        seg, start = kd.arrange(task, x)
        w = kd.window(seg, start)
        assert w.sum() == pytest.approx(0.4 * n, abs=1)
        assert (w[-1] if keep_start else w[0]) == 1.0  # the keyword runs over that edge
        task = kd.ClipTask("", "train", kd.UNKNOWN, "snippet", 0, cut=0.4, keyword_first=keep_start)
        seg, start = kd.arrange(task, x, other=2 * np.ones(3000, dtype=np.float32))
        w = kd.window(seg, start)
        assert (w == 1.0).sum() == pytest.approx(0.4 * n, abs=1) and (w == 2.0).sum() > 0
    long = kd.arrange(kd.ClipTask("", "train", "yes", "keyword", 0), np.ones(20000, dtype=np.float32))[0]
    assert len(long) <= kd.MAX_SPEECH
