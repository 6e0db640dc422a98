"""The real-speech evaluation set (built from the installed Debian packages), its scoring, and the pocketsphinx peer."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, have, require

from models import kws_real
from models import real_speech as rs

SHIPPED = ROOT / "edge_runtime" / "data" / "models" / "kws"
LOCAL_SOURCES = ("asterisk", "codec2", "alsa")  # Debian packages; the pocketsphinx sdist would need a download
PACKAGES = {
    rs.ASTERISK_SOUNDS: "asterisk-core-sounds-en-wav",
    rs.ASTERISK_TRANSCRIPTS: "asterisk-core-sounds-en",
    rs.CODEC2_RAW: "codec2-examples",
    rs.ALSA_SOUNDS: "alsa-utils",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, rs.Entry], dict]:
    missing = [pkg for path, pkg in PACKAGES.items() if not path.exists()]
    require(not missing, f"Debian packages missing: apt-get install {' '.join(missing)}")
    out = tmp_path_factory.mktemp("real") / "kws-real"
    summary = rs.build(out, LOCAL_SOURCES)
    return out, {e.id: e for e in rs.load(out)}, summary


def test_set_has_real_speech_with_transcripts(built) -> None:
    out, entries, summary = built
    assert len(entries) > 500
    assert {e.id.split("/")[0] for e in entries.values()} == set(LOCAL_SOURCES)
    for e in entries.values():
        assert rs.words(e.transcript), e.id
        assert e.licence and e.source and e.duration_s > 0.2
    for e in list(entries.values())[::25]:
        with wave.open(str(out / e.path), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            assert abs(w.getnframes() / 16000 - e.duration_s) < 0.01
    assert entries["asterisk/vm-no"].original_rate == 8000 and entries["asterisk/vm-no"].bandwidth_hz == 4000
    occ = summary["all"]["keyword_occurrences"]
    assert all(occ[k] > 0 for k in ("no", "on", "left", "right", "up")), occ
    assert summary["all"]["keyword_free_minutes"] > 15
    assert any("silence/1.wav" in x["file"] for x in summary["left_out"])  # annotations only: not speech
    assert "CC-BY-SA-3.0" in (out / "LICENSES.md").read_text()


def test_keywords_are_whole_words_of_the_transcript(built) -> None:
    _, entries, _ = built
    assert rs.keyword_counts("That is not a valid conference number.") == {}
    assert rs.keyword_counts("No more messages. no, NO") == {"no": 3}
    assert rs.keyword_counts("Call-Forward on No Answer.") == {"no": 1, "on": 1}
    assert rs.keyword_counts("gone stopped upon online offer goes lefty") == {}
    assert rs.keyword_counts("hang up or press the pound key (simple tone sound plays) [go]") == {"up": 1}
    assert rs.keyword_counts("If you know your party's extension") == {}
    assert rs.homophone_counts("If you know your party's extension") == {"no": 1}
    assert entries["asterisk/vm-no"].keywords == {"no": 1}
    assert entries["asterisk/conf-invalid"].keywords == {}  # "That is not a valid conference number"
    assert entries["asterisk/call-fwd-no-ans"].keywords == {"no": 1, "on": 1}
    assert entries["alsa/Front_Left"].keywords == {"left": 1}
    assert not entries["asterisk/basic-pbx-ivr-main"].keyword_free  # "know" sounds like "no"


def test_splits_are_deterministic_and_about_half(built, tmp_path: Path) -> None:
    out, entries, summary = built
    n = {s: summary["splits"][s]["files"] for s in rs.SPLITS}
    assert 0.4 < n["val"] / sum(n.values()) < 0.6
    assert all(e.split == rs.split_of(e.id) for e in entries.values())
    again = tmp_path / "again"
    rs.build(again, LOCAL_SOURCES)
    assert (again / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text()


def test_existing_output_and_bad_source_are_one_line_errors(built, capsys, tmp_path: Path) -> None:
    out, _, _ = built
    assert rs.main(["--out", str(out), "--sources", "alsa"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "\n" not in err
    assert rs.main(["--out", str(tmp_path / "x"), "--sources", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown source 'nope'" in err and "\n" not in err and not (tmp_path / "x").exists()


def _entry(i: str, split: str, dur: float, transcript: str) -> rs.Entry:
    return rs.Entry(
        i,
        f"{i}.wav",
        "test",
        "none",
        transcript,
        "test",
        dur,
        16000,
        8000,
        split,
        rs.keyword_counts(transcript),
        rs.homophone_counts(transcript),
    )


def test_scoring_a_known_case() -> None:
    entries = [
        _entry("a", "val", 2.0, "no more messages"),
        _entry("b", "val", 360.0, "please hold the line"),
        _entry("c", "val", 3.0, "I don't know"),
        _entry("d", "test", 4.0, "left brace, left"),
    ]

    def det(label, t):
        return SimpleNamespace(label=label, t=t)

    dets = {
        "a": [det("no", 1.0), det("no", 1.9), det("up", 2.5)],
        "b": [det("left", 10.0)],
        "c": [det("no", 1.0)],
        "d": [det("left", 1.0)],
    }
    r = kws_real.score(entries, dets)
    v, t = r["val"], r["test"]
    assert (v["keyword_occurrences"], v["hits"], v["detection_rate"]) == (1, 1, 1.0)
    assert (v["repeats"], v["homophone_detections"], v["false_accepts"]) == (1, 1, 2)
    assert v["false_accepts_keyword_free"] == 1 and v["keyword_free_minutes"] == 6.0
    assert v["fa_per_hour"] == pytest.approx(10.0)
    assert v["false_accept_labels"] == {"left": 1, "up": 1}
    assert (t["keyword_occurrences"], t["hits"], t["detection_rate"], t["false_accepts"]) == (2, 1, 0.5, 0)
    assert t["fa_per_hour"] is None  # no keyword-free audio in that split
    assert r["all"]["hits"] == 2
    rows = [
        {"threshold": 0.5, "val": {"detection_rate": 1.0, "fa_per_hour": 10.0, "false_accepts": 2}},
        {"threshold": 0.7, "val": {"detection_rate": 0.5, "fa_per_hour": 0.0, "false_accepts": 0}},
        {"threshold": 0.9, "val": {"detection_rate": 0.5, "fa_per_hour": 0.0, "false_accepts": 0}},
    ]
    assert kws_real.choose(rows, 0.5)["threshold"] == 0.9  # ties go to the stricter setting
    assert kws_real.choose(rows, 20.0)["threshold"] == 0.5


def test_padding_is_low_noise_not_zeros() -> None:
    x = np.full(1600, 0.1, np.float32)
    y = kws_real.padded(x, "some/id")
    assert len(y) == len(x) + int((kws_real.LEAD_S + kws_real.TAIL_S) * 16000)
    tail = y[-int(kws_real.TAIL_S * 16000) :]
    assert np.all(tail != 0.0) and 20 * np.log10(np.sqrt(np.mean(tail**2))) == pytest.approx(-70, abs=1)
    np.testing.assert_array_equal(y, kws_real.padded(x, "some/id"))


def test_our_spotter_on_real_files_matches_the_daemon_path(built) -> None:
    """The sweep's detections at the artifact's own operating point are what KeywordSpotter.process fires."""
    from edge_runtime import manifest as mf
    from edge_runtime.pipelines.audio import KeywordSpotter

    require((SHIPPED / "manifest.json").is_file(), f"{SHIPPED} is missing")
    out, entries, _ = built
    some = [entries[i] for i in ("asterisk/vm-no", "alsa/Front_Left", "asterisk/dir-nomatch", "codec2/speech_orig_16k")]
    m, folder = mf.load(SHIPPED)
    for thr in (0.5, None):
        sp = KeywordSpotter(m, folder, "litert", threads=1, threshold=thr)
        p = kws_real.posteriors(sp, out, some)
        swept = kws_real.detections_at(p, sp.threshold, sp.smoothing, sp.refractory_s)
        for e in some:
            sp.reset()
            x = kws_real.audio(out, e)
            live = [d for i in range(0, len(x), 1600) for d in sp.process(x[i : i + 1600])]
            assert [(d.label, round(d.t, 3)) for d in swept[e.id]] == [(d.label, round(d.t, 3)) for d in live], e.id
    assert p.cpu_s > 0 and p.audio_s == pytest.approx(sum(e.duration_s + 2.0 for e in some), abs=0.01)
    r = kws_real.score(some, swept)
    assert r["all"]["keyword_occurrences"] == 4  # no, left, no, on
    json.dumps(r)


def test_pocketsphinx_hears_keywords_in_real_prompts(built) -> None:
    require(have("pocketsphinx"), "pocketsphinx is not installed (pip install -e '.[peers]')")
    from models.kws_peer import SphinxSpotter

    out, entries, _ = built
    sp = SphinxSpotter(1e-3)
    for i, kw in (("asterisk/vm-no", "no"), ("asterisk/dir-nomatch", "no")):
        e = entries[i]
        dets = sp.detect(kws_real.audio(out, e))
        assert kw in [d.label for d in dets], (i, dets)
        hit = [d for d in dets if d.label == kw][0]
        assert kws_real.LEAD_S < hit.t < kws_real.LEAD_S + e.duration_s + 0.5


def test_peer_detections_pass_the_same_refractory_rule() -> None:
    from models.kws_peer import PeerDetection, refractory

    d = [
        PeerDetection("up", 0.8, 2.5),
        PeerDetection("no", 0.9, 1.0),
        PeerDetection("on", 0.8, 1.5),
        PeerDetection("go", 0.8, 2.0),
    ]
    assert [(x.label, x.t) for x in refractory(d, 1.0)] == [("no", 1.0), ("go", 2.0)]
