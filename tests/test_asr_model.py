"""The streaming CTC phoneme model: data synthesis, the step model's streaming exactness, and a smoke run of
the recipe end to end (synthesise, train, convert, run the artifact on the board's engines, decode)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import ROOT, have, require

SR = 16000
TEST_GRAMMAR = ROOT / "tests" / "data" / "asr" / "commands.txt"


def _need_convert() -> None:
    require(
        have("tensorflow") and have("tf2onnx") and have("onnxruntime"),
        "the convert extra is not installed (pip install -e '.[convert,test]')",
    )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    require(
        shutil.which("espeak-ng") is not None and shutil.which("flite") is not None,
        "espeak-ng and flite are not installed (apt-get install espeak-ng flite)",
    )
    from models import asr_data
    from models import kws_data as kd

    data = tmp_path_factory.mktemp("asr") / "data"
    params = dataclasses.replace(kd.Params(), telephone=0.5)  # half the clips as a telephone line passes them
    asr_data.generate(data, n=16, jobs=2, params=params, hold_out_grammars=[TEST_GRAMMAR], progress=False)
    return data


def test_clips_carry_espeak_phonemes_and_the_lexicon_holds_every_word(tiny_data):
    from edge_runtime.asr.grammar import load_grammar
    from edge_runtime.asr.lexicon import load_lexicon
    from edge_runtime.audio.wav import read_wav
    from models import g2p

    rows = [json.loads(line) for line in (tiny_data / "clips.jsonl").read_text().splitlines()]
    assert [sum(r["split"] == s for r in rows) for s in ("train", "val", "test")] == [16, 2, 2]
    meta = json.loads((tiny_data / "voices.json").read_text())
    assert not {r["engine"] for r in rows if r["split"] != "test"} & set(meta["held_out_engines"])
    train_voices = {r["speech"]["voice"] for r in rows if r["split"] == "train"}
    assert not train_voices & {r["speech"]["voice"] for r in rows if r["split"] != "train"}
    held_out = {" ".join(e.words) for e in load_grammar(TEST_GRAMMAR).expansions}
    assert not held_out & {r["text"] for r in rows}
    train_texts = {r["text"] for r in rows if r["split"] == "train"}
    assert not train_texts & {r["text"] for r in rows if r["split"] != "train"}
    lexicon = load_lexicon(tiny_data / "lexicon.txt")
    for r in rows[:4]:  # the labels are espeak-ng's transcription of the sentence, cut into the words said
        assert r["phonemes"].split() == g2p.transcribe(r["text"])
        if r["word_phonemes"] is not None:
            assert " ".join(r["word_phonemes"]).split() == r["phonemes"].split()
            assert len(r["word_phonemes"]) == len(r["text"].split())
        assert not lexicon.missing(r["text"].split())
        x = read_wav(tiny_data / r["path"], SR)
        assert abs(len(x) / SR - r["seconds"]) < 0.01 and 0 < np.abs(x).max() <= 1.0
    phone = [r for r in rows if r["telephone"]]
    assert 0 < len(phone) < len(rows)
    for r in phone[:3]:  # nothing of a telephone clip lies above 4 kHz
        x = read_wav(tiny_data / r["path"], SR)
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        f = np.fft.rfftfreq(len(x), 1 / SR)
        assert spec[f > 4100].sum() < 1e-6 * spec[(f > 300) & (f < 3400)].sum()


def test_a_data_set_is_not_written_over(tiny_data):
    from models import asr_data

    with pytest.raises(asr_data.AsrDataError, match="already holds a data set"):
        asr_data.generate(tiny_data, n=2, progress=False)


def _build(n_in: int, front_end: str, rng: np.random.Generator):
    from models import kws
    from models.train_asr import CHUNK

    logmel = front_end == "logmel"
    norm = None if logmel else (rng.normal(0, 3, n_in).astype(np.float32), rng.uniform(5, 50, n_in).astype(np.float32))
    return kws.build(
        None,
        n_in,
        7,
        units=24,
        front=16,
        scale=kws.INPUT_SCALE if logmel else 1.0,
        stack=CHUNK if logmel else 1,
        cell_clip=3.0,
        norm=norm,
        per_step=True,
    )


def test_step_model_chunk_by_chunk_equals_whole_sequence():
    """The per-step CTC model and its step model give the same posteriors, step by step (float, <= 1e-4)."""
    require(have("tensorflow"), "TensorFlow is not installed (pip install -e '.[convert,test]')")
    import keras

    from models import kws
    from models.train_asr import CHUNK, log_softmax

    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(0)
    model = _build(40, "logmel", rng)
    steps = 30
    x = rng.normal(0, 2, size=(2, steps * CHUNK, 40)).astype(np.float32)
    whole = np.exp(log_softmax(np.asarray(model(x, training=False))))
    assert whole.shape == (2, steps, 7)
    step = kws.streaming_step(model, CHUNK)
    for i in range(2):
        h = c = np.zeros((1, 24), np.float32)
        for k in range(steps):
            p, h, c = (np.asarray(o) for o in step([x[i : i + 1, k * CHUNK : (k + 1) * CHUNK], h, c], training=False))
            assert np.abs(p[0] - whole[i, k]).max() <= 1e-4


def test_speech_embedding_step_model_equals_the_head_on_embeddings_every_four_frames():
    """The speech-embedding step model, fed the last 76 mel frames every 4 frames, gives the posteriors the
    trained head gives on the interleaved embeddings training computes (float, <= 1e-4)."""
    require(have("tensorflow") and have("onnx"), "TensorFlow and onnx are not installed")
    import keras

    from models import kws
    from models import speech_embedding as se
    from models.train_asr import CHUNK, embed_every_step, log_softmax

    try:
        net = se.model(None)
    except se.EmbeddingError as e:
        require(False, str(e))
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(2)
    steps = 9
    mel = rng.normal(0, 1, (se.WINDOW + CHUNK * (steps - 1), se.N_MELS)).astype(np.float32)
    emb = embed_every_step(mel, net)
    assert emb.shape == (steps, se.DIM)
    model = _build(se.DIM, "speech-embedding", rng)
    whole = np.exp(log_softmax(np.asarray(model(emb[None], training=False))))[0]
    step = kws.streaming_step(model, CHUNK, front_end="speech-embedding")
    h = c = np.zeros((1, 24), np.float32)
    for k in range(steps):
        p, h, c = (np.asarray(o) for o in step([mel[None, CHUNK * k : CHUNK * k + se.WINDOW], h, c], training=False))
        assert np.abs(p[0] - whole[k]).max() <= 1e-4


def test_smoke_run_makes_an_artifact_the_board_decodes(tmp_path, tiny_data):
    _need_convert()
    from edge_runtime import manifest as mf
    from edge_runtime.asr.decoder import LOG_SUM_TOLERANCE, GrammarDecoder
    from edge_runtime.asr.grammar import parse_grammar
    from edge_runtime.asr.lexicon import load_lexicon
    from edge_runtime.asr.prefix_tree import PrefixTree
    from edge_runtime.audio.wav import read_wav
    from edge_runtime.pipelines.audio import KeywordSpotter
    from models import train_asr

    out = tmp_path / "art"
    assert train_asr.main(["--data", str(tiny_data), "--out", str(out), "--smoke"]) == 0
    m, folder = mf.load(out)
    asr = m.metrics["asr"]
    assert m.labels[0] == asr["blank"] == train_asr.BLANK and m.labels[1:] == asr["phonemes"] == sorted(m.labels[1:])
    assert (folder / "labels.txt").read_text().split("\n")[:-1] == m.labels
    assert {a.id for a in m.artifacts} == {"tflite-int8", "onnx-int8"}
    p = m.preprocessing.audio
    assert (p.frames_per_step, p.normalization) == (train_asr.CHUNK, "running_mean")
    lexicon = load_lexicon(folder / asr["lexicon"], m.labels[1:])  # every phoneme it uses is one the model outputs
    assert train_asr.sha256(folder / asr["lexicon"]) == asr["lexicon_sha256"]
    assert m.metrics["training"]["float"]["val"]["per_greedy"] >= 0
    ev = json.loads((tmp_path / ".art-work" / "artifacts_eval.json").read_text())  # the drop int8 costs
    assert set(ev) == {"split", "float", "tflite-int8", "onnx-int8"}
    assert all(
        ev[k]["clips"] == ev["float"]["clips"] and 0 <= ev[k]["phrase_accuracy"] <= 1 for k in ev if k != "split"
    )
    drops = train_asr.phrase_drops({k: r for k, r in ev.items() if k != "split"})  # what the decoding gate reads
    assert set(drops) == {"tflite-int8", "onnx-int8"} and all(-100 <= d <= 100 for d in drops.values())
    assert "rejected_activations" not in m.metrics["training"]  # a smoke run's gate is 100 pp: int8 stays
    rows = [json.loads(line) for line in (tiny_data / "clips.jsonl").read_text().splitlines()]
    row = rows[-1]  # a test clip: a held-out voice
    grammar = parse_grammar(f"{row['text']}\n{rows[0]['text']}\n", "<test>")
    tree = PrefixTree.build(grammar.expansions, lexicon, m.labels, asr["blank"], grammar.where)
    x = read_wav(tiny_data / row["path"], SR)
    for engine in ("litert", "onnx"):
        ks = KeywordSpotter(m, folder, engine)
        _, scores = ks.posteriors(x)
        assert scores.shape[1] == len(m.labels) and abs(len(scores) - len(x) / (SR * train_asr.STEP_S)) <= 2
        assert np.all(np.abs(np.log(scores.sum(axis=1))) < LOG_SUM_TOLERANCE)  # int8 softmax: a decoder input
        dec = GrammarDecoder(tree)
        results = dec.push(np.log(np.maximum(scores, 1e-30))) + dec.flush()
        assert all(r.phrase in (None, *(e.text for e in grammar.expansions)) for r in results)


def test_bad_input_is_one_line(tmp_path, capsys):
    from models import asr_data, train_asr

    assert train_asr.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_asr: error: --data ") and "lexicon" in err and "\n" not in err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "lexicon.txt").write_text("yes j E s\n")
    (tmp_path / "d" / "clips.jsonl").write_text('{"split": "train"}\n')
    assert train_asr.main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a models.asr_data clip list" in err and "\n" not in err
    bad = tmp_path / "bad.txt"
    bad.write_text("turn (on the light\n")
    assert asr_data.main(["--out", str(tmp_path / "data"), "--hold-out-grammar", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"asr_data: error: --hold-out-grammar {bad}:1") and "\n" not in err
    with pytest.raises(SystemExit) as stop:  # a phrase-set flag without --speak-grammar: not a 5,000-clip set
        asr_data.main(["--out", str(tmp_path / "data"), "--per-phrase", "-2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("error: --per-phrase and --split only apply with --speak-grammar")
    assert not (tmp_path / "data").exists() and not (tmp_path / "art").exists()
