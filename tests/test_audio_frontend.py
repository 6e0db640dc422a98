"""The streaming log-mel front end and WAV input."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.audio.frontend import LogMel, log_mel, mel_filterbank, n_frames
from edge_runtime.audio.wav import AudioError, Resampler, read_wav, to_mono, write_wav
from edge_runtime.manifest import AudioPreprocessing

P = AudioPreprocessing()
SR = P.sample_rate


def _noise(n: int = SR, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(round(sr * seconds)) / sr)


def _stream(x: np.ndarray, sizes: list[int] | int, p: AudioPreprocessing = P) -> np.ndarray:
    m, out, i, k = LogMel(p), [], 0, 0
    while i < len(x):
        c = sizes if isinstance(sizes, int) else sizes[k % len(sizes)]
        out.append(m.process(x[i : i + c]))
        i, k = i + c, k + 1
    return np.concatenate(out)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def _write_pcm(path: Path, x: np.ndarray, sr: int, width: int = 2) -> None:
    """x: (frames,) or (frames, channels) floats in [-1, 1]."""
    x = np.atleast_2d(x.T).T if x.ndim == 1 else x
    if width == 1:
        raw = np.round(x * 127 + 128).astype(np.uint8).tobytes()
    elif width == 3:
        v = np.round(x * (2**23 - 1)).astype("<i4")
        raw = v.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = np.round(x * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(width)
        w.setframerate(sr)
        w.writeframes(raw)


# --- front end --------------------------------------------------------------


@pytest.mark.parametrize("sizes", [1, 7, 160, 161, 399, 400, 1000, SR, [3, 500, 1, 97, 2000]])
def test_chunked_equals_whole_clip(sizes):
    x = _noise()
    whole = log_mel(x, P)
    assert whole.shape == (n_frames(len(x), P), P.n_mels) and whole.dtype == np.float32
    assert np.array_equal(_stream(x, sizes), whole)


def test_chunked_equals_whole_clip_with_hop_longer_than_window():
    p = AudioPreprocessing(window_ms=20.0, hop_ms=30.0, n_mels=24, n_fft=320)
    x = _noise(5000, seed=3)
    whole = log_mel(x, p)
    assert len(whole) == n_frames(len(x), p) == (5000 - 320) // 480 + 1
    for sizes in (1, 7, 333, [1, 479, 2, 1000]):
        assert np.array_equal(_stream(x, sizes, p), whole)


def test_reset_and_empty_chunks():
    x = _noise(4000, seed=1)
    m = LogMel(P)
    m.process(_noise(1234, seed=2))
    m.reset()
    assert m.process(np.zeros(0, np.float32)).shape == (0, P.n_mels)
    assert np.array_equal(m.process(x), log_mel(x, P))


def test_frame_count_formula():
    win, hop = 400, 160
    for n in (0, 1, win - 1, win, win + hop - 1, win + hop, SR, SR + 17):
        expect = 0 if n < win else (n - win) // hop + 1
        assert n_frames(n, P) == expect
        assert log_mel(np.zeros(n, np.float32), P).shape == (expect, P.n_mels)
    assert n_frames(SR, P) == 98


def test_matches_dense_reference():
    x = _noise(3000, seed=4)
    win, hop = 400, 160
    n = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)
    frames = np.stack([x[k * hop : k * hop + win] for k in range(n_frames(len(x), P))]).astype(np.float64)
    power = np.abs(np.fft.rfft(frames * hann, n=P.n_fft)) ** 2
    ref = np.log(power @ mel_filterbank(P).astype(np.float64) + 1e-6)
    np.testing.assert_allclose(log_mel(x, P), ref, rtol=0, atol=1e-5)


def test_filterbank_shape_cache_and_peaks():
    fb = mel_filterbank(P)
    assert fb.shape == (P.n_fft // 2 + 1, P.n_mels) and fb.dtype == np.float32
    assert mel_filterbank(AudioPreprocessing(frames_per_step=4)) is fb  # cached per parameter set
    assert not fb.flags.writeable
    assert np.all(fb.max(axis=0) > 0.5) and fb.min() >= 0
    centres = fb.argmax(axis=0)
    assert np.all(np.diff(centres) >= 0)
    freqs = np.arange(fb.shape[0]) * SR / P.n_fft
    assert not fb[(freqs < P.fmin) | (freqs > P.fmax)].any()


def test_sine_energy_peaks_in_its_mel_band():
    feats = log_mel(_sine(1000.0, SR, 0.5).astype(np.float32), P)
    band_1k = int(mel_filterbank(P)[round(1000 * P.n_fft / SR)].argmax())
    energy = feats.mean(axis=0)
    assert int(energy.argmax()) == band_1k
    assert energy[band_1k] - np.median(energy) > 10  # far above the leakage floor


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="mono"):
        LogMel(P).process(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="n_fft"):
        LogMel(AudioPreprocessing(window_ms=64.0))


# --- WAV input ----------------------------------------------------------------


@pytest.mark.parametrize("sr_in", [44100, 8000])
def test_read_wav_stereo_pcm16_resamples_to_16k_mono(tmp_path, sr_in):
    seconds, freq = 0.5, 1000.0
    left = _sine(freq, sr_in, seconds, 0.6)
    stereo = np.stack([left, 0.5 * left], axis=1)
    path = tmp_path / f"s{sr_in}.wav"
    _write_pcm(path, stereo, sr_in)
    y = read_wav(path, SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - round(seconds * SR)) <= 1
    assert abs(_peak_hz(y, SR) - freq) <= 2 * SR / len(y)
    assert abs(np.abs(y).max() - 0.45) < 0.02  # channels averaged
    assert np.abs(y).max() <= 1.0


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_pcm_widths(tmp_path, width):
    x = np.array([0.0, 0.5, -0.5, 0.99, -0.99, 0.25])
    path = tmp_path / f"w{width}.wav"
    _write_pcm(path, x, SR, width)
    np.testing.assert_allclose(read_wav(path, SR), x, atol=2.0 / 2 ** (8 * width - 1) + 1e-6)


def test_read_float_wav_through_soundfile(tmp_path):
    import soundfile as sf  # a dependency of edge-runtime itself

    x = _sine(440.0, 22050, 0.25, 0.7).astype(np.float32)
    path = tmp_path / "float.wav"
    sf.write(str(path), np.stack([x, x], axis=1), 22050, subtype="FLOAT")
    with pytest.raises(wave.Error):  # proves the fallback is the path under test
        wave.open(str(path)).close()
    y = read_wav(path, SR)
    assert abs(len(y) - round(0.25 * SR)) <= 1
    assert abs(_peak_hz(y, SR) - 440.0) <= 2 * SR / len(y)
    assert abs(np.abs(y).max() - 0.7) < 0.02


def test_write_wav_round_trip(tmp_path):
    x = _sine(300.0, SR, 0.1).astype(np.float32)
    path = tmp_path / "out.wav"
    write_wav(path, x, SR)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    np.testing.assert_allclose(read_wav(path, SR), x, atol=1.0 / 32767)


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=re.escape(str(missing))):
        read_wav(missing)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 10)
    with pytest.raises(AudioError, match=re.escape(str(text)) + ".*ffmpeg") as e:
        read_wav(text)
    assert "\n" not in str(e.value)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=re.escape(str(empty)) + ": empty"):
        read_wav(empty)


# --- resampling -----------------------------------------------------------------


def test_to_mono():
    x = np.array([[1.0, 0.0], [0.5, -0.5]])
    assert np.array_equal(to_mono(x), np.array([0.5, 0.0], np.float32))
    assert to_mono(x[:, 0]).dtype == np.float32


def test_streaming_resampler_matches_one_shot_length():
    import soxr  # a dependency of edge-runtime itself

    x = _sine(1000.0, 44100, 1.0).astype(np.float32)
    one = soxr.resample(x, 44100, SR, quality="HQ")
    r = Resampler(44100, SR)
    parts = [r.process(x[i : i + 441]) for i in range(0, len(x), 441)]
    parts.append(r.process(np.zeros(0, np.float32), last=True))
    streamed = np.concatenate(parts)
    assert abs(len(streamed) - len(one)) <= 3
    n = min(len(streamed), len(one))
    assert np.abs(streamed[100 : n - 100] - one[100 : n - 100]).max() < 1e-3
    # a finished stream starts afresh
    again = r.process(x, last=True)
    assert abs(len(again) - len(one)) <= 3


def test_resampler_pass_through():
    x = _noise(100)
    assert np.array_equal(Resampler(SR, SR).process(x), x)


def _riff(path, data: bytes, sr: int = SR, channels: int = 1, width: int = 2, declared: int | None = None) -> None:
    """A PCM WAV written byte by byte, so its header can say what the data is not."""
    import struct

    n = len(data) if declared is None else declared
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * channels * width, channels * width, 8 * width)
    path.write_bytes(
        b"RIFF"
        + struct.pack("<I", 36 + n)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", n)
        + data
    )


@pytest.mark.parametrize(
    "case, needle",
    [
        ("truncated", "truncated"),
        ("huge header", "truncated"),
        ("1 Hz", "1 Hz"),
        ("too long", "more than 60 s"),
    ],
)
def test_broken_headers_are_one_line_before_decoding(tmp_path, case, needle):
    path = tmp_path / "bad.wav"
    pcm = (np.zeros(1600, "<i2")).tobytes()
    if case == "truncated":
        _riff(path, pcm, declared=2 * len(pcm))
    elif case == "huge header":  # 4 GB promised over 0.1 s of data
        _riff(path, pcm, declared=0xFFFFFF00)
    elif case == "1 Hz":
        _riff(path, pcm, sr=1)
    else:
        _riff(path, np.zeros(SR * 61, "<i2").tobytes())
    with pytest.raises(AudioError, match=re.escape(str(path)) + ".*" + needle) as e:
        read_wav(path, SR, max_seconds=60)
    assert "\n" not in str(e.value)


def test_nan_samples_are_refused_with_their_time(tmp_path):
    import soundfile

    x = np.zeros(SR, np.float32)
    x[SR // 2] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(str(path), x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite samples .first at 0.50 s"):
        read_wav(path, SR)


def test_blocks_stream_a_long_file_in_pieces_equal_to_the_whole(tmp_path):
    from edge_runtime.audio.wav import wav_blocks, wav_info

    x = _sine(440.0, 44100, 3.3, 0.5)
    path = tmp_path / "long.wav"
    _write_pcm(path, x, 44100)
    blocks = list(wav_blocks(wav_info(path, SR), SR, block_s=0.5))
    assert len(blocks) >= 6 and max(len(b) for b in blocks) <= 0.6 * SR
    np.testing.assert_allclose(np.concatenate(blocks), read_wav(path, SR), atol=1e-6)
