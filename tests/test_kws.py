"""The keyword spotter: streaming exactness, the shipped int8 artifact, `edge-runtime listen`, training smoke run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest
from conftest import ROOT, have, require

SHIPPED = ROOT / "edge_runtime" / "data" / "models" / "kws"
SR = 16000
# Quantized vs float, chunk by chunk over 200 held-out utterances x 50 steps (edge-convert's report.json):
INT8_MEAN_SCORE_TOL = 0.005  # mean abs per-step score difference
INT8_MAX_SCORE_TOL = 0.6  # worst single step (a near-tie between two classes can swap)
INT8_STEP_AGREEMENT = 0.98  # per-step top-1 agreement
INT8_FINAL_AGREEMENT = 0.97  # top-1 agreement at the utterance end


def _shipped():
    from edge_runtime import manifest as mf

    require((SHIPPED / "manifest.json").is_file(), f"{SHIPPED} is missing (python -m models.train_kws)")
    return mf.load(SHIPPED)


# ---------------------------------------------------------------- exactness of the step model
@pytest.mark.parametrize("stack, clip", [(1, 0.0), (4, 0.0), (4, 0.3)])
def test_step_model_chunk_by_chunk_equals_whole_window(stack, clip):
    require(have("tensorflow"), "TensorFlow is not installed (pip install -e '.[convert,test]')")
    import keras

    from models import kws

    keras.utils.set_random_seed(3)
    model = kws.build(
        None, 40, 6, units=24, masked=True, dropout=0.2, front=16, scale=kws.INPUT_SCALE, stack=stack, cell_clip=clip
    )
    assert kws.stacking(model) == stack
    step = kws.streaming_step(model, chunk=4)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, size=(3, 48, 40)).astype(np.float32)
    whole = model.predict(x, verbose=0)
    # Pre-padding with masked frames == starting from a zero state (how training mixes lengths).
    padded = np.concatenate([np.full((3, 20, 40), kws.MASK_VALUE, np.float32), x], axis=1)
    np.testing.assert_allclose(model.predict(padded, verbose=0), whole, atol=1e-5)
    for i in range(3):
        h = np.zeros((1, 24), np.float32)
        c = np.zeros((1, 24), np.float32)
        for k in range(0, 48, 4):
            scores, h, c = (np.asarray(o) for o in step([x[i : i + 1, k : k + 4], h, c], training=False))
        assert np.abs(scores[0] - whole[i]).max() <= 1e-4
        if clip:
            assert np.abs(c).max() <= clip + 1e-6
    if clip:  # the clip is live on this input: without it the scores differ
        plain = kws.build(None, 40, 6, units=24, front=16, scale=kws.INPUT_SCALE, stack=stack)
        plain.set_weights(model.get_weights())
        assert np.abs(plain.predict(x, verbose=0) - whole).max() > 1e-3


def test_feature_norm_is_chunk_invariant_and_batched():
    from edge_runtime.audio.frontend import FeatureNorm, LogMel, log_mel
    from edge_runtime.manifest import AudioPreprocessing

    p = AudioPreprocessing(normalization="running_mean", normalization_time_s=2.0)
    x = np.random.default_rng(1).normal(0, 0.1, 24000).astype(np.float32)
    whole = log_mel(x, p)
    lm = LogMel(p)
    parts = np.concatenate([lm.process(x[i : i + 333]) for i in range(0, len(x), 333)])
    assert np.array_equal(parts, whole)
    assert np.all(whole[0] == 0)
    raw = log_mel(x, AudioPreprocessing())
    batched = FeatureNorm(p).process(np.stack([raw, raw[::-1]]))
    assert np.array_equal(batched[0], whole)


# ---------------------------------------------------------------- the shipped artifact
def test_shipped_artifact_int8_tracks_float_chunk_by_chunk():
    m, folder = _shipped()
    assert m.preprocessing.audio.frames_per_step == 4
    assert m.preprocessing.audio.normalization == "running_mean"
    report = json.loads((folder / "report.json").read_text())
    sizes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    assert sizes <= 3 * 1024 * 1024
    assert {a.format for a in m.artifacts} == {"tflite", "onnx"}
    assert all(a.precision in ("int8", "int16x8") for a in m.artifacts)
    for art_id in (a.id for a in m.artifacts):
        row = next(r for r in report["artifacts"] if r["id"] == art_id)
        # Measured by edge-convert: the int8 step model run chunk by chunk over whole
        # held-out utterances vs the float step model, scores compared at every step.
        assert row["step_score_mean_abs_diff"] <= INT8_MEAN_SCORE_TOL, (art_id, row["step_score_mean_abs_diff"])
        assert row["step_score_max_abs_diff"] <= INT8_MAX_SCORE_TOL, (art_id, row["step_score_max_abs_diff"])
        assert row["step_agreement"] >= INT8_STEP_AGREEMENT, (art_id, row["step_agreement"])
        assert row["agreement"] >= INT8_FINAL_AGREEMENT, (art_id, row["agreement"])
        assert [s.input for s in m.artifact(art_id).state] == ["state_h", "state_c"]
    det = m.metrics["detector"]
    assert {"threshold", "smoothing_steps", "refractory_s", "lanes", "state_reset_s"} <= set(det)


# ---------------------------------------------------------------- a held-out sentence
def _held_out_voice() -> str:
    """The first en-us espeak-ng voice of the shipped model's test split (never heard in training)."""
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt-get install espeak-ng)")
    m, _ = _shipped()
    voices = [v for v in m.metrics["training"]["test_voices"] if v.startswith("espeak-ng:en-us")]
    require(bool(voices), "the shipped manifest lists no held-out espeak-ng test voice")
    return voices[0]


@pytest.fixture(scope="module")
def sentence(tmp_path_factory):
    """'please go now and then stop' from a test-split voice, written at 22.05 kHz stereo; keyword spans."""
    from models.kws_data import say

    voices = [_held_out_voice()]
    tmp = tmp_path_factory.mktemp("sentence")
    pieces = [("please", None), ("go", "go"), ("now and then", None), ("stop", "stop")]
    rng = np.random.default_rng(0)
    audio, spans, pos = [np.zeros(int(0.8 * SR), np.float32)], [], int(0.8 * SR)
    for text, kw in pieces:
        x = say(voices[0], text, str(tmp))
        x = 0.5 * x / np.abs(x).max()
        if kw:
            spans.append((kw, pos / SR, (pos + len(x)) / SR))
        gap = np.zeros(int(0.7 * SR), np.float32)
        audio += [x, gap]
        pos += len(x) + len(gap)
    x = np.concatenate(audio + [np.zeros(int(0.5 * SR), np.float32)])
    x = x + rng.normal(0, 1e-3, len(x)).astype(np.float32)  # a quiet microphone floor
    import soxr

    y = soxr.resample(x, SR, 22050)
    stereo = np.clip(np.stack([y, 0.9 * y], axis=1), -1, 1)
    path = tmp / "sentence_22k_stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(np.round(stereo * 32767).astype("<i2").tobytes())
    return {"path": path, "spans": spans, "voice": voices[0], "samples16k": x}


def _listen(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "listen", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("engine", ["litert", "onnx"])
def test_listen_finds_keywords_at_the_right_times(sentence, engine):
    if engine == "onnx":
        require(have("onnxruntime"), "onnxruntime is not installed (pip install 'edge-runtime[onnx]')")
    proc = _listen(str(sentence["path"]), "--engine", engine, "--json")  # no --model: the shipped default
    assert proc.returncode == 0, proc.stderr
    dets = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["label"] for d in dets] == [kw for kw, _, _ in sentence["spans"]], (dets, sentence["spans"])
    for d, (kw, start, end) in zip(dets, sentence["spans"]):
        assert start - 0.5 <= d["t"] <= end + 0.5, (d, start, end)
        assert 0 < d["score"] <= 1


def test_listen_errors_are_one_line(tmp_path):
    proc = _listen(str(tmp_path / "missing.wav"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"edge-runtime: error: {tmp_path / 'missing.wav'}: no such file; check the path"
    ]
    proc = _listen("x.wav", "--model", str(tmp_path))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_detections_do_not_depend_on_chunk_size(sentence):
    from edge_runtime.pipelines.audio import KeywordSpotter

    m, folder = _shipped()
    x = np.concatenate([sentence["samples16k"]] * 3)  # > 2 s: the state lanes reset and hand over
    runs = []
    for chunk in (160, 1600, 999):
        ks = KeywordSpotter(m, folder, "litert")
        runs.append([d for i in range(0, len(x), chunk) for d in ks.process(x[i : i + chunk])])
    assert runs[0] and runs[0] == runs[1] == runs[2]
    ks.reset()
    assert ks.process(x) == runs[0]  # reset starts a new stream


# ---------------------------------------------------------------- a keyword that ends the file
# Keywords the shipped model hears from the held-out voice at its own operating point (it misses
# "no", "up" and "right" from this voice even mid-stream: that is accuracy, not end of stream).
ENDING = ("yes", "left", "off", "go")


@pytest.fixture(scope="module")
def endings(tmp_path_factory):
    """Speech Commands-style 1 s clips (16 kHz) whose last sample ends the keyword, and clips of noise
    and digital silence: {name: (path, samples, keyword or None)}."""
    from edge_runtime.audio.wav import write_wav
    from models import kws_data as kd

    voice = _held_out_voice()
    tmp = tmp_path_factory.mktemp("endings")
    rng = np.random.default_rng(7)
    clips = {}
    for kw in ENDING:
        x = kd.say(voice, kw, str(tmp))  # trimmed: the speech runs to its last sample
        clip = rng.normal(0, 1e-3, SR).astype(np.float32)  # a quiet microphone floor
        clip[-len(x) :] += 0.5 * x / np.abs(x).max()
        clips[kw] = (clip, kw)
    clips["noise"] = ((0.05 * kd.colored_noise(rng, SR, 1.0)).astype(np.float32), None)
    clips["floor"] = (rng.normal(0, 1e-3, SR).astype(np.float32), None)
    clips["silence"] = (np.zeros(SR, np.float32), None)
    out = {}
    for name, (x, kw) in clips.items():
        write_wav(tmp / f"{name}.wav", x, SR)
        out[name] = (tmp / f"{name}.wav", np.clip(x, -1, 1), kw)
    return out


@pytest.mark.parametrize("engine", ["litert", "onnx"])
def test_listen_reports_a_keyword_that_ends_the_file(endings, engine):
    from edge_runtime.pipelines.audio import KeywordSpotter

    if engine == "onnx":
        require(have("onnxruntime"), "onnxruntime is not installed (pip install 'edge-runtime[onnx]')")
    m, folder = _shipped()
    window = KeywordSpotter(m, folder, engine).flush_s
    proc = _listen(*(str(p) for p, _, _ in endings.values()), "--engine", engine, "--json")
    assert proc.returncode == 0, proc.stderr
    dets = [json.loads(line) for line in proc.stdout.splitlines()]
    for name, (path, x, kw) in endings.items():
        got = [d for d in dets if d["file"] == str(path)]
        assert [d["label"] for d in got] == ([kw] if kw else []), (name, got)
        for d in got:
            assert len(x) / SR < d["t"] <= len(x) / SR + window + 1e-6, (d, window)


def test_flush_completes_what_the_stream_would_have_heard(endings):
    """Without flush the clip's keyword is lost; flushed, it is what a stream that went on with the same
    microphone floor reports, at the same time; flush is deterministic and needs reset() for a new stream."""
    from edge_runtime.pipelines.audio import KeywordSpotter

    m, folder = _shipped()
    ks = KeywordSpotter(m, folder, "litert")
    assert ks.flush_s == max(ks.smoothing * 4 * 0.01, ks.refractory_s)
    rng = np.random.default_rng(3)
    for name, (_, x, kw) in endings.items():
        ks.reset()
        assert [d for i in range(0, len(x), 1600) for d in ks.process(x[i : i + 1600])] == [], name
        flushed = ks.flush()
        ks.reset()
        went_on = ks.process(np.concatenate([x, rng.normal(0, 1e-3, 2 * SR).astype(np.float32)]))
        if name == "noise":  # a louder floor than the continuation's: no like-for-like comparison
            assert flushed == []
            continue
        assert [d.label for d in flushed] == [d.label for d in went_on] == ([kw] if kw else []), name
        for a, b in zip(flushed, went_on):
            assert abs(a.t - b.t) <= 0.04 + 1e-6, (a, b)  # within one step
        ks.reset()
        ks.process(x[:5000])
        ks.process(x[5000:])
        assert ks.flush() == flushed  # the same padding whatever the chunking
    ks.reset()
    assert ks.flush() == []  # nothing fed: nothing to complete


def test_daemon_reports_the_keyword_that_ends_a_wav_file(endings, tmp_path):
    from edge_runtime.config import (
        AudioConfig,
        Config,
        FusionConfig,
        JsonlConfig,
        MicrophoneConfig,
        RuntimeConfig,
        SinksConfig,
    )
    from edge_runtime.service import Daemon

    path, _, kw = endings["go"]
    events = tmp_path / "events.jsonl"
    cfg = Config(
        runtime=RuntimeConfig(log_level="warning"),
        microphone=MicrophoneConfig(file=str(path), realtime=False, loop=False),
        audio=AudioConfig(engine="litert"),
        fusion=FusionConfig(passthrough=True),
        sinks=SinksConfig(jsonl=JsonlConfig(path=str(events))),
        path="(test)",
    )
    d = Daemon(cfg)
    d.start()
    assert d.run() == 0  # returns when the file has ended
    got = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in got] == [kw], got


# ---------------------------------------------------------------- operating point by false-accept budget
# A validation curve for the tests: false accepts per hour fall with the threshold, except one lucky
# dip at 0.80 that the choice must not trust (above it the curve goes back over 0.5 per hour).
CURVE = [
    {
        "threshold": t,
        "false_accepts_per_hour": 0.2 if t == 0.80 else round(60 * (1 - t) ** 2, 4),
        "false_reject_rate": round(0.1 + 0.5 * (t - 0.5), 4),
    }
    for t in np.round(np.arange(0.50, 0.995, 0.01), 2)
]


@pytest.fixture(scope="module")
def curve_model(tmp_path_factory):
    """A copy of the shipped keyword model whose manifest carries CURVE (shuffled: the runtime sorts it)."""
    import dataclasses

    from edge_runtime import manifest as mf

    m, folder = _shipped()
    out = tmp_path_factory.mktemp("curve") / "kws"
    shutil.copytree(folder, out)
    det = {**m.metrics["detector"], "curve": [CURVE[i] for i in np.random.default_rng(0).permutation(len(CURVE))]}
    mf.save(dataclasses.replace(m, metrics={**m.metrics, "detector": det}), out)
    return mf.load(out)


def _point(t: float) -> dict:
    return next(p for p in CURVE if p["threshold"] == t)


def test_operating_point_by_false_accept_budget(curve_model, caplog):
    from edge_runtime.pipelines.audio import KeywordSpotter

    m, folder = curve_model
    assert len(CURVE) == 50 and _point(0.9)["false_accepts_per_hour"] > 0.5 >= _point(0.91)["false_accepts_per_hour"]
    op = KeywordSpotter(m, folder, "litert").operating_point  # default budget 0.5 per hour
    assert (op.threshold, op.source, op.budget) == (0.91, "false_accepts_per_hour", 0.5)
    assert (op.false_accepts_per_hour, op.false_reject_rate) == (
        _point(0.91)["false_accepts_per_hour"],
        _point(0.91)["false_reject_rate"],
    )
    ks = KeywordSpotter(m, folder, "litert", false_accepts_per_hour=2.0)
    assert ks.threshold == ks.detector.threshold == 0.82  # 60 * 0.18^2 = 1.94
    # a given threshold overrides the budget; the curve's figures at it are interpolated
    op = KeywordSpotter(m, folder, "litert", threshold=0.935, false_accepts_per_hour=2.0).operating_point
    assert (op.threshold, op.source, op.budget) == (0.935, "threshold", None)
    assert op.false_accepts_per_hour == pytest.approx(
        (_point(0.93)["false_accepts_per_hour"] + _point(0.94)["false_accepts_per_hour"]) / 2
    )
    assert KeywordSpotter(m, folder, "litert", threshold=0.3).operating_point.false_accepts_per_hour is None
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    # no threshold within budget: the highest, with a warning that says so
    op = KeywordSpotter(m, folder, "litert", false_accepts_per_hour=0.0).operating_point
    assert op.threshold == 0.99 and "none is within 0 false accepts per hour" in op.describe()
    (w,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "no threshold on the validation curve keeps within 0 false accepts per hour" in w.getMessage()
    assert "highest, 0.99" in w.getMessage()
    caplog.clear()
    # a curve measured with other smoothing does not describe this detector: the manifest's threshold
    op = KeywordSpotter(m, folder, "litert", smoothing=3).operating_point
    assert (op.threshold, op.source) == (m.metrics["detector"]["threshold"], "manifest")
    assert "does not apply" in caplog.records[-1].getMessage()
    # no curve (the shipped manifest today): the manifest's threshold, as before
    sm, sfolder = _shipped()
    op = KeywordSpotter(sm, sfolder, "litert").operating_point
    assert (op.threshold, op.source, op.false_accepts_per_hour) == (
        sm.metrics["detector"]["threshold"],
        "manifest",
        None,
    )


@pytest.mark.parametrize(
    "curve",
    [
        [],
        "x",
        [{"threshold": 0.5}],
        [{"threshold": 1.5, "false_accepts_per_hour": 1, "false_reject_rate": 0.1}],
        [{"threshold": 0.5, "false_accepts_per_hour": float("nan"), "false_reject_rate": 0}],
        CURVE * 2,
    ],
)
def test_a_malformed_curve_is_one_manifest_error(curve):
    from edge_runtime.manifest import ManifestError
    from edge_runtime.pipelines.audio import read_curve

    with pytest.raises(ManifestError, match=r"^'kws': metrics.detector.curve must be a list of 1 to 64 points"):
        read_curve({"curve": curve}, "kws")


def test_listen_false_accepts_per_hour(curve_model, endings):
    """The 'go' clip scores about 0.986: heard at the 0.5/h point (0.91), not at the 0/h one (0.99)."""
    folder = str(curve_model[1])
    path = str(endings["go"][0])

    def heard(proc):
        return [json.loads(line)["label"] for line in proc.stdout.splitlines()]

    assert heard(_listen(path, "--model", folder, "--json")) == ["go"]
    proc = _listen(path, "--model", folder, "--json", "--false-accepts-per-hour", "0")
    assert proc.returncode == 0 and heard(proc) == []
    assert "using the highest, 0.99" in proc.stderr
    assert heard(_listen(path, "--model", folder, "--json", "--false-accepts-per-hour", "0", "--threshold", "0.9")) == [
        "go"
    ]
    for bad in ("-1", "nan", "inf", "1e6"):
        proc = _listen(path, "--model", folder, "--false-accepts-per-hour", bad)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"edge-runtime: error: --false-accepts-per-hour {float(bad)}: give a number from 0 to 1000"
        ], proc.stderr


def _check(tmp_path, audio: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[microphone]\nfile = "{tmp_path / "x.wav"}"\n[audio]\n{audio}\n')
    (tmp_path / "x.wav").write_bytes(b"")  # check opens no device: the file only has to exist
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def test_check_prints_the_operating_point(curve_model, tmp_path):
    folder = curve_model[1]
    proc = _check(tmp_path, f'model = "{folder}"')
    assert proc.returncode == 0, proc.stderr
    assert (
        "audio: operating point: threshold 0.91 (the lowest on the validation curve within 0.5 false accepts "
        "per hour); validation curve: 0.49 false accepts per hour, 30.5% false rejects"
    ) in proc.stdout.splitlines()
    proc = _check(tmp_path, f'model = "{folder}"\nthreshold = 0.93\nfalse_accepts_per_hour = 2.0')
    assert (
        "audio: operating point: threshold 0.93 (given as threshold, overriding the false-accept budget); "
        "validation curve: 0.29 false accepts per hour, 31.5% false rejects"
    ) in proc.stdout.splitlines()
    proc = _check(tmp_path, f'model = "{folder}"\nfalse_accepts_per_hour = 0')
    assert proc.returncode == 0
    assert (
        "audio: operating point: threshold 0.99 (the highest on the validation curve: none is within 0 false "
        "accepts per hour)" in proc.stdout
    )
    assert "WARNING" in proc.stderr and "using the highest, 0.99" in proc.stderr
    proc = _check(tmp_path, "")  # the shipped model has no curve yet
    m, _ = _shipped()
    assert (
        f"audio: operating point: threshold {m.metrics['detector']['threshold']:g} (the model's manifest); "
        "no validation figures at it"
    ) in proc.stdout.splitlines()
    proc = _check(tmp_path, "false_accepts_per_hour = inf")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"edge-runtime: error: {tmp_path / 'edge.toml'}:4: "
        "audio.false_accepts_per_hour: must be a number of false accepts per "
        "hour from 0 to 1000, got inf"
    ]


def test_status_shows_the_operating_point(curve_model, endings, tmp_path):
    import urllib.request

    from edge_runtime.config import (
        AudioConfig,
        Config,
        FusionConfig,
        HttpConfig,
        JsonlConfig,
        MicrophoneConfig,
        RuntimeConfig,
        SinksConfig,
    )
    from edge_runtime.service import Daemon

    path, _, kw = endings["go"]
    cfg = Config(
        runtime=RuntimeConfig(log_level="warning"),
        microphone=MicrophoneConfig(file=str(path), realtime=True, loop=False),
        audio=AudioConfig(model=str(curve_model[1]), engine="litert", false_accepts_per_hour=2.0),
        fusion=FusionConfig(passthrough=True),
        sinks=SinksConfig(jsonl=JsonlConfig(path=str(tmp_path / "events.jsonl")), http=HttpConfig(port=0)),
        path="(test)",
    )
    d = Daemon(cfg)
    d.start()
    try:
        with urllib.request.urlopen(d.http.url + "/status", timeout=5) as r:
            status = json.loads(r.read())
    finally:
        d.run()
    assert status["pipelines"]["audio"]["operating_point"] == {
        "threshold": 0.82,
        "source": "false_accepts_per_hour",
        "detail": "the lowest on the validation curve within 2 false accepts per hour",
        "false_accepts_per_hour": _point(0.82)["false_accepts_per_hour"],
        "false_reject_rate": _point(0.82)["false_reject_rate"],
        "budget": 2.0,
    }
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == [kw]


@pytest.fixture(scope="module")
def val_streams(tmp_path_factory):
    """Small validation streams in the layout of ``models.kws_eval synth``, spoken by validation voices:
    non-keyword sentences, and each keyword after a short sentence (with where it lies)."""
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt-get install espeak-ng)")
    from edge_runtime.audio.wav import write_wav
    from models import kws_data as kd

    m, _ = _shipped()
    voices = [v for v in m.metrics["training"]["val_voices"] if v.startswith("espeak-ng:en-")][::7]
    out = tmp_path_factory.mktemp("streams")
    rng = np.random.default_rng(11)
    tmp = str(out)

    def gap():
        return np.zeros(int(rng.uniform(0.3, 0.8) * SR), np.float32)

    def words(n):
        return " ".join(kd.UNKNOWN_WORDS[i] for i in rng.integers(len(kd.UNKNOWN_WORDS), size=n))

    neg = [x for i in range(16) for x in (gap(), 0.3 * kd.say(voices[i % len(voices)], words(5), tmp))]
    parts, spans, pos = [], [], 0
    for i, kw in enumerate(kd.KEYWORDS * 2):
        v = voices[i % len(voices)]
        for x in (gap(), 0.3 * kd.say(v, words(2), tmp), gap()):
            parts.append(x)
            pos += len(x)
        x = 0.3 * kd.say(v, kw, tmp)
        spans.append({"label": kw, "start": pos / SR, "end": (pos + len(x)) / SR})
        parts.append(x)
        pos += len(x)

    def floor(x):
        return (x + rng.normal(0, 1e-3, len(x))).astype(np.float32)

    write_wav(out / "val_negative.wav", floor(np.concatenate(neg)), SR)
    write_wav(out / "val_keywords.wav", floor(np.concatenate(parts + [gap()])), SR)
    (out / "val_keywords.json").write_text(json.dumps(spans))
    return out


def test_tune_stores_the_validation_curve_the_runtime_chooses_from(val_streams, tmp_path):
    import dataclasses

    from edge_runtime import manifest as mf
    from edge_runtime.audio.wav import read_wav
    from edge_runtime.pipelines.audio import KeywordSpotter
    from models import kws_eval

    require(have("onnxruntime"), "onnxruntime is not installed (pip install 'edge-runtime[onnx]')")
    m, folder = _shipped()
    budget = 20.0  # the streams are minutes long: a budget of a few false accepts in them
    tuned = kws_eval.tune(m, folder, val_streams, fa_budget=budget)
    curve = tuned["curve"]
    assert 1 < len(curve) <= 64
    assert [p["threshold"] for p in curve] == sorted(p["threshold"] for p in curve)
    assert all(set(p) == {"threshold", "false_accepts_per_hour", "false_reject_rate"} for p in curve)
    # one point measured again through the runtime's own Detector
    k = tuned["smoothing_steps"]
    sp = KeywordSpotter(m, folder, "litert")
    streams = {n: read_wav(val_streams / f"val_{n}.wav", SR) for n in ("negative", "keywords")}
    hours = sum(len(x) for x in streams.values()) / SR / 3600
    spans = json.loads((val_streams / "val_keywords.json").read_text())
    labels = m.labels
    for p in (curve[0], curve[len(curve) // 2]):
        fa = len(kws_eval.detect(labels, *kws_eval.posteriors(sp, streams["negative"]), p["threshold"], k, 1.0))
        r = kws_eval.score_keywords(
            kws_eval.detect(labels, *kws_eval.posteriors(sp, streams["keywords"]), p["threshold"], k, 1.0), spans
        )
        fa += r["outside"] + r["wrong_label"]
        assert p["false_accepts_per_hour"] == pytest.approx(fa / hours, rel=1e-3, abs=1e-3), p
        assert p["false_reject_rate"] == pytest.approx(r["frr"], abs=1e-4), p
    assert curve[0]["false_accepts_per_hour"] > curve[-1]["false_accepts_per_hour"]  # fewer as the threshold rises
    # the tuned threshold is the one the runtime picks from this curve for the same budget
    det = {**m.metrics["detector"], "curve": curve, "smoothing_steps": k, "threshold": tuned["threshold"]}
    out = tmp_path / "kws"
    shutil.copytree(folder, out)
    mf.save(dataclasses.replace(m, metrics={**m.metrics, "detector": det}), out)
    op = KeywordSpotter(*mf.load(out), "litert", false_accepts_per_hour=budget).operating_point
    assert op.threshold == tuned["threshold"] and op.false_reject_rate == pytest.approx(tuned["val_frr"], abs=1e-4)
    # evaluate measures the test streams (here: the same audio) at that very operating point, on both engines
    for f in val_streams.iterdir():
        shutil.copy(f, tmp_path / f.name.replace("val_", "test_"))
        shutil.copy(f, tmp_path / f.name)
    res = kws_eval.evaluate(out, tmp_path, write=False, work=tmp_path / "no-work", fa_budget=budget)
    assert res["tuning"]["curve"] == curve
    assert {e: r["threshold"] for e, r in res["stream"].items()} == {
        "litert": tuned["threshold"],
        "onnx": tuned["threshold"],
    }
    # one engine (the other may be too slow for a 16x8 artifact on this host): it tunes and measures
    one = kws_eval.evaluate(out, tmp_path, write=False, work=tmp_path / "no-work", fa_budget=budget, engines=("onnx",))
    assert list(one["stream"]) == ["onnx"] and one["stream"]["onnx"]["threshold"] == one["tuning"]["threshold"]


# ---------------------------------------------------------------- the training recipe
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    require(
        shutil.which("espeak-ng") is not None and shutil.which("flite") is not None,
        "espeak-ng and flite are not installed (apt-get install espeak-ng flite)",
    )
    from models import kws_data

    data = tmp_path_factory.mktemp("kws") / "data"
    kws_data.generate(data, per_word=8, jobs=2, progress=False)
    return data


def test_recipe_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    from models import kws_eval, train_kws

    bad_wav = tmp_path / "data" / "train" / "yes" / "a.wav"  # a truncated header, in both splits
    for f in (bad_wav, tmp_path / "data" / "val" / "yes" / "b.wav"):
        f.parent.mkdir(parents=True)
        f.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
    (tmp_path / "data" / "train" / "no").mkdir()
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "voices.json").write_text('{"splits": 3}')
    out = tmp_path / "out"
    for call, message in [
        (lambda: train_kws.main(["--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "0"]),
         "train_kws: error: --epochs 0: must be at least 1"),
        (lambda: train_kws.main(["--data", str(tmp_path / "data"), "--out", str(out), "--dropout", "1"]),
         "train_kws: error: --dropout 1.0: must be at least 0 and below 1"),
        (lambda: train_kws.main(["--data", str(tmp_path / "data"), "--out", str(out)]),
         f"train_kws: error: {bad_wav}: "),
        (lambda: kws_eval.main(["evaluate", "--model", str(tmp_path), "--streams", str(tmp_path)]),
         f"kws_eval: error: {tmp_path / 'manifest.json'}: no manifest here"),
        (lambda: kws_eval.main(["synth", "--data", str(tmp_path), "--out", str(out)]),
         f"kws_eval: error: --data {tmp_path}: no voices.json"),
        (lambda: kws_eval.main(["synth", "--data", str(voices), "--out", str(out)]),
         f"kws_eval: error: {voices / 'voices.json'}: not a voices.json written by models.kws_data"),
        (lambda: kws_eval.main(["synth", "--data", str(voices), "--out", str(out), "--telephone", "1.5"]),
         "kws_eval: error: --telephone 1.5: give a share of the context sentences, 0..1"),
    ]:  # fmt: skip
        assert call() == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "%|" not in ln]  # no bars
        assert len(err) == 1 and err[0].startswith(message), err
        assert not out.exists()


def test_synth_context_only_writes_sentences_per_split(tiny_data, tmp_path):
    from edge_runtime.audio.wav import read_wav
    from models import kws_eval

    kws_eval.synth(tiny_data, tmp_path, minutes=1, val_minutes=1, n_kw=2, n_context=16, seed=1, context_only=True)
    found = {s: sorted((tmp_path / "context" / s).glob("*.wav")) for s in ("train", "val", "test")}
    assert [len(found[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["context"]  # no streams
    x = read_wav(found["train"][0], SR)
    assert len(x) > SR // 2 and 0.0 < float(np.abs(x).max()) <= 1.0
    # --telephone 1: the same sentences, each as a telephone line passes it (nothing above 4.1 kHz)
    phone = tmp_path / "phone"
    kws_eval.synth(
        tiny_data, phone, minutes=1, val_minutes=1, n_kw=2, n_context=16, seed=1, context_only=True, telephone=1.0
    )
    for a, b in zip(found["train"], sorted((phone / "context" / "train").glob("*.wav"))):
        wide, narrow = read_wav(a, SR), read_wav(b, SR)
        assert len(wide) == len(narrow)
        spec = np.abs(np.fft.rfft(narrow * np.hanning(len(narrow)))) ** 2
        f = np.fft.rfftfreq(len(narrow), 1 / SR)
        assert spec[f > 4100].sum() < 1e-6 * spec[(f > 300) & (f < 3400)].sum()


@pytest.mark.parametrize("front_end", ["logmel", "speech-embedding"])
def test_smoke_training_makes_a_loadable_artifact(tmp_path, tiny_data, front_end):
    require(
        have("tensorflow") and have("tf2onnx") and have("onnxruntime"),
        "the convert extra is not installed (pip install -e '.[convert,test]')",
    )
    from edge_runtime import manifest as mf
    from edge_runtime.pipelines.audio import KeywordSpotter
    from models import train_kws

    out = tmp_path / "art"
    assert train_kws.main(["--data", str(tiny_data), "--out", str(out), "--smoke", "--front-end", front_end]) == 0
    m, folder = mf.load(out)
    assert (folder / "labels.txt").read_text().split() == m.labels == sorted(m.labels)
    assert {a.id for a in m.artifacts} == {"tflite-int8", "onnx-int8"}
    p = m.preprocessing.audio
    if front_end == "logmel":
        assert p.normalization == "running_mean" and p.frames_per_step == 4 and p.window_frames == 0
    else:  # one embedding of the last 76 mel frames every 8 frames
        assert (p.n_mels, p.frames_per_step, p.window_frames, p.mel_scale) == (32, 8, 76, "slaney")
        assert m.artifact("tflite").inputs[0].shape == [1, 76, 32]
    x = np.random.default_rng(1).normal(0, 0.05, 3 * SR).astype(np.float32)
    runs = []
    for chunk in (160, 1600, 999):  # the runtime's windows do not depend on how audio arrives
        ks = KeywordSpotter(m, folder, "litert", threshold=0.0)
        runs.append([d for i in range(0, len(x), chunk) for d in ks.process(x[i : i + chunk])])
    assert runs[0] and runs[0] == runs[1] == runs[2]
    assert all(d.label in m.labels for d in runs[0])
