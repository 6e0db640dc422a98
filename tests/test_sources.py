"""Capture sources with real parts: a live ffmpeg HTTP stream, a PulseAudio null sink read through
PortAudio, real video / image / WAV files. Under CI=true a missing part fails instead of skipping.
The supervisor they share (the Source base) is also driven by a scripted device, without threads.

No wall-clock performance is asserted; deadlines only bound how long a test waits.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, LiveStream, free_port, wait_until

from edge_runtime.sources import REOPEN, Source, SourceError
from edge_runtime.sources.camera import CameraSource
from edge_runtime.sources.files import WavFileSource


@pytest.fixture(scope="module")
def test_video(ffmpeg, tmp_path_factory) -> Path:
    """2 s of testsrc, 320x240 at 15 fps: 30 frames."""
    path = tmp_path_factory.mktemp("video") / "testsrc.mp4"
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=15",
            "-t",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "mpeg4",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


def test_camera_live_stream_latest_wins_and_reconnects(ffmpeg, caplog):
    caplog.set_level(logging.INFO, logger="edge_runtime.sources")
    server = LiveStream(ffmpeg, free_port())
    server.start()
    cam = CameraSource("net", server.url, stall_timeout_s=1.5, backoff_initial_s=0.2, backoff_max_s=1.0)
    try:
        cam.start()
        # frames flow: RGB uint8, increasing seq and capture times
        frames = []
        deadline = time.monotonic() + 20
        while len(frames) < 5 and time.monotonic() < deadline:
            server.ensure_running()
            f = cam.latest(timeout=0.5)
            if f is not None:
                frames.append(f)
        assert len(frames) == 5, f"no frames from the live stream: {cam.stats()}"
        assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
        assert all(f.source == "net" for f in frames)
        assert all(b.seq > a.seq and b.t_capture > a.t_capture for a, b in zip(frames, frames[1:]))
        assert cam.stats().online

        # latest frame wins: a slow consumer gets a recent frame, the ones in between are dropped
        dropped_before = cam.stats().dropped
        time.sleep(0.8)
        f = cam.latest(timeout=2)
        assert f is not None and f.seq > frames[-1].seq + 1
        assert cam.stats().dropped > dropped_before
        assert time.monotonic_ns() - f.t_capture < 1.0e9  # the newest frame, not one queued 0.8 s ago

        # the server dies: offline, with one warning naming the stream
        n_records = len(caplog.records)
        server.kill()
        assert wait_until(lambda: not cam.stats().online, 10), cam.stats()
        assert cam.stats().last_error

        def warnings():  # logged by the camera's threads, just after the state flips
            return [
                r.getMessage()
                for r in caplog.records[n_records:]
                if r.levelno == logging.WARNING and "offline" in r.getMessage()
            ]

        assert wait_until(lambda: len(warnings()) > 0, 5)
        time.sleep(0.5)  # reconnect attempts fail meanwhile: still one warning for the whole outage
        assert len(warnings()) == 1 and server.url in warnings()[0]

        # the server comes back on the same port: the source reconnects by itself
        server.start()
        assert wait_until(lambda: (server.ensure_running() or True) and cam.stats().online, 20), cam.stats()
        st = cam.stats()
        assert st.reconnects >= 1
        g = cam.latest(timeout=5)
        assert g is not None and g.seq > f.seq and g.t_capture > f.t_capture

        # a stalled server (connected, but no data) is offline after stall_timeout_s, too
        n_records = len(caplog.records)
        server.proc.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: not cam.stats().online, 10), cam.stats()
        assert wait_until(lambda: len(warnings()) == 1, 5)
        server.kill()  # SIGKILL works on a stopped process
        server.start()
        assert wait_until(lambda: (server.ensure_running() or True) and cam.stats().online, 20), cam.stats()
        assert cam.stats().reconnects >= 2
    finally:
        cam.close()
        server.kill()


def test_camera_video_file_plays_ends_and_loops(test_video):
    cam = CameraSource("file", str(test_video), fps=100).start()  # paced fast for the test
    got = []
    try:
        assert wait_until(lambda: got.append(cam.latest(timeout=0.2)) or cam.ended, 20)
        while (f := cam.latest(timeout=0)) is not None:
            got.append(f)
    finally:
        cam.close()
    frames = [f for f in got if f is not None]
    st = cam.stats()
    assert cam.ended and not st.online
    assert st.frames == 30  # every frame of the file was captured once
    assert len(frames) + st.dropped == 30
    assert [f.seq for f in frames] == sorted({f.seq for f in frames})
    assert frames[0].image.shape == (240, 320, 3)

    looped = CameraSource("loop", str(test_video), fps=100, stride=3, loop=True).start()
    try:
        assert wait_until(lambda: looped.stats().frames > 15, 20), looped.stats()
        assert not looped.ended and looped.stats().online
    finally:
        looped.close()


def test_camera_image_folder_cycles_in_order(tmp_path, caplog):
    import cv2

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]  # RGB
    for i, rgb in enumerate(colours):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:] = rgb[::-1]  # cv2 writes BGR
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), img)
    (tmp_path / "99.jpg").write_bytes(b"not an image")  # skipped with a warning, never fatal
    cam = CameraSource("demo", str(tmp_path), fps=30).start()
    frames = []
    try:
        deadline = time.monotonic() + 20
        while len(frames) < 7 and time.monotonic() < deadline:
            f = cam.latest(timeout=0.5)
            if f is not None:
                frames.append(f)
    finally:
        cam.close()
    assert len(frames) == 7
    for f in frames:  # the folder plays in order, so the colour follows the sequence number
        assert tuple(int(v) for v in f.image[10, 10]) == colours[f.seq % 3]
    assert any("99.jpg" in r.getMessage() for r in caplog.records)
    assert cam.stats().reconnects == 0


def test_camera_bad_uri_is_one_line_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        CameraSource("x", str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="no images"):
        CameraSource("x", str(tmp_path))
    with pytest.raises(SourceError, match="scheme"):
        CameraSource("x", "ftp://example.com/cam")
    with pytest.raises(SourceError, match="stride"):
        CameraSource("x", 0, stride=0)


# -- microphone through a real PulseAudio server ---------------------------------------------------------


def tone_wav(path: Path, sr: int = 16000) -> Path:
    t = np.arange(int(0.8 * sr)) / sr
    silence = np.zeros(sr // 5, np.float32)
    x = np.concatenate([silence, 0.5 * np.sin(2 * np.pi * 1000 * t), silence]).astype(np.float32)
    from edge_runtime.audio.wav import write_wav

    write_wav(path, x, sr)
    return path


# Runs in a fresh interpreter so PortAudio initialises with the PulseAudio environment set.
MIC_SCRIPT = r"""
import json, subprocess, sys, time
import numpy as np
from edge_runtime.sources import REOPEN, Source, SourceError
from edge_runtime.sources.microphone import MicrophoneSource

device, device_rate, wav = sys.argv[1], (int(sys.argv[2]) or None), sys.argv[3]
out = {}
try:
    MicrophoneSource("bad", "no-such-mic-xyz").start()
except SourceError as e:
    out["missing"] = str(e)
mic = MicrophoneSource("mic", device, device_rate=device_rate).start()
chunks, player, played_at = [], None, None
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    c = mic.read(timeout=1.0)
    if c is not None:
        chunks.append(c)
    have = sum(len(c.samples) for c in chunks)
    if player is None and have >= 8000:  # 0.5 s of the idle sink first
        out["before_play"] = len(chunks)
        player = subprocess.Popen(["paplay", "--device=virt", wav])
    if player is not None and played_at is None and player.poll() is not None:
        played_at = time.monotonic()
    if played_at is not None and time.monotonic() - played_at > 0.5:
        break
st = mic.stats()
out.update(device_rate=mic.device_rate, stats=st.__dict__, counts=mic.overflow_counts,
           paplay_rc=None if player is None else player.wait(10))
mic.close()
x = np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)
out["dtype"] = str(x.dtype)
out["ndim"] = [int(c.samples.ndim) for c in chunks[:3]]
out["continuous"] = all(b.start_sample == a.start_sample + len(a.samples) for a, b in zip(chunks, chunks[1:]))
out["first_start"] = chunks[0].start_sample if chunks else None
out["monotonic"] = all(b.t_capture > a.t_capture for a, b in zip(chunks, chunks[1:]))
out["n"] = len(x)
if len(chunks) > 1:
    a, b = chunks[0], chunks[-1]  # samples between the two stamps / the time between them
    out["rate_est"] = (b.start_sample + len(b.samples) - a.start_sample - len(a.samples)) / (
        (b.t_capture - a.t_capture) / 1e9)
pre = np.concatenate([c.samples for c in chunks[: out.get("before_play", 0)]] or [np.zeros(1, np.float32)])
out["rms_before"] = float(np.sqrt(np.mean(pre ** 2)))
win = 1600
rms = np.array([np.sqrt(np.mean(x[i:i + win] ** 2)) for i in range(0, len(x) - win + 1, win)])
out["rms_max"] = float(rms.max()) if len(rms) else 0.0
if len(rms) and rms.max() > 0.05:
    loud = np.flatnonzero(rms > 0.5 * rms.max())
    seg = x[loud[0] * win:(loud[-1] + 1) * win]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    out["peak_hz"] = float(np.argmax(spec) * 16000 / len(seg))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("device,device_rate", [("pulse", 0), ("default", 48000)], ids=["pulse-16k", "default-48k"])
def test_microphone_hears_a_tone_through_pulseaudio(pulse, tmp_path, device, device_rate):
    wav = tone_wav(tmp_path / "tone.wav")
    env = {**pulse, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", MIC_SCRIPT, device, str(device_rate), str(wav)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"rc={r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT ") :])
    # a missing device names itself and lists the inputs there are
    assert "no-such-mic-xyz" in out["missing"] and "pulse" in out["missing"] and "\n" not in out["missing"]
    assert out["paplay_rc"] == 0
    assert out["device_rate"] == (device_rate or 16000)
    assert out["dtype"] == "float32" and out["ndim"] == [1, 1, 1]
    assert out["first_start"] == 0 and out["continuous"] and out["monotonic"]
    assert out["stats"]["overflows"] == 0 and out["counts"] == {"portaudio": 0, "queue": 0}
    assert out["stats"]["online"] and out["stats"]["reconnects"] == 0
    assert 8000 < out["rate_est"] < 32000  # 16 kHz, loosely (48 kHz mislabelled would be ~48000)
    # the tone makes the energy rise and the spectrum peak at 1 kHz (so the 16 kHz labelling is right)
    assert out["rms_before"] < 0.01 and out["rms_max"] > 0.2, out
    assert abs(out["peak_hz"] - 1000) < 20, out


# -- WAV files --------------------------------------------------------------------------------------------


def stereo_wav(path: Path, seconds: float = 1.0, sr: int = 44100) -> Path:
    """A 44.1 kHz stereo 16-bit file: a ramp of tones, so misordered chunks would show."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (300 + 500 * t) * t)
    pcm = (np.stack([x, x], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def read_all(src: WavFileSource, limit: int = 1000):
    chunks = []
    while len(chunks) < limit and (c := src.read(timeout=5)) is not None:
        chunks.append(c)
    return chunks


def test_wav_file_source_paces_and_is_continuous(tmp_path):
    path = stereo_wav(tmp_path / "ramp.wav")
    t0 = time.monotonic()
    with WavFileSource("wav", path, realtime=True, block_ms=100) as src:
        rt = read_all(src)
        assert src.ended and src.read(timeout=0) is None
    rt_elapsed = time.monotonic() - t0
    t0 = time.monotonic()
    with WavFileSource("wav", path, realtime=False, block_ms=100) as src:
        fast = read_all(src)
    fast_elapsed = time.monotonic() - t0

    for chunks in (rt, fast):
        assert len(chunks) == 10 and all(len(c.samples) == 1600 for c in chunks)
        assert all(c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in chunks)
        assert [c.start_sample for c in chunks] == [1600 * i for i in range(10)]
        assert all(b.t_capture >= a.t_capture for a, b in zip(chunks, chunks[1:]))
    np.testing.assert_array_equal(np.concatenate([c.samples for c in rt]), np.concatenate([c.samples for c in fast]))
    # loose sanity only: real time takes about the file's length, as fast as possible much less
    assert 0.6 < rt_elapsed < 5.0
    assert fast_elapsed < rt_elapsed / 2
    # real-time chunks are stamped 100 ms apart on the monotonic clock
    assert rt[-1].t_capture - rt[0].t_capture == pytest.approx(0.9e9, abs=1e3)


def test_wav_file_source_loops_and_reports_errors(tmp_path):
    path = stereo_wav(tmp_path / "short.wav", seconds=0.25)  # 4000 samples at 16 kHz
    with WavFileSource("loop", path, realtime=False, block_ms=100, loop=True) as src:
        chunks = [src.read() for _ in range(8)]
        assert not src.ended and src.stats().online
    starts = [c.start_sample for c in chunks]
    assert all(b == a + len(c.samples) for a, b, c in zip(starts, starts[1:], chunks))
    assert sum(len(c.samples) for c in chunks[:3]) == 4000  # 1600 + 1600 + 800, then it starts over
    np.testing.assert_array_equal(chunks[3].samples, chunks[0].samples)
    with pytest.raises(SourceError, match="missing.wav"):
        WavFileSource("x", tmp_path / "missing.wav").start()


def test_devices_lists_plain_json():
    from edge_runtime.sources.devices import devices

    d = devices()
    json.dumps(d)
    assert set(d) == {"cameras", "microphones", "errors"}
    for cam in d["cameras"]:
        assert cam["path"].startswith("/dev/video")


# -- the Source supervisor, on a scripted device ---------------------------------------------------------


class _NoSleep:
    """A stop event that records the backoff waits and never sleeps."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False


class ScriptedSource(Source):
    """Each step: an exception _connect raises, or what _deliver returns (after data flowed, if it says so)."""

    noun = "fake"
    _label = "fake://device"

    def __init__(self, steps: list) -> None:
        super().__init__("x", backoff_initial_s=0.25, backoff_max_s=1.0)
        self._stop = _NoSleep()  # type: ignore[assignment]
        self.steps, self.released = steps, 0

    def _connect(self):
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def _deliver(self, step):
        flowed, reason = step
        if flowed:
            with self._cond:
                self._frames += 1
                self._mark_online()
        return flowed, reason

    def _disconnect(self, step) -> None:
        self.released += 1


def test_source_supervisor_backs_off_and_warns_once_per_outage(caplog):
    caplog.set_level(logging.DEBUG, logger="edge_runtime.sources")
    src = ScriptedSource(
        [
            SourceError("no device"),
            RuntimeError("boom"),
            SourceError("no device"),
            SourceError("no device"),
            (True, "stalled"),
            (False, REOPEN),
            (False, "still stalled"),
            (True, None),
        ]
    )
    src._supervise()
    assert src._stop.waits == [0.25, 0.5, 1.0, 1.0, 0.25, 0.5]  # doubled, capped; reset once data flowed
    assert src.released == 4 and not src.steps
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in msgs if level == logging.WARNING]
    assert warnings == [
        "fake 'x' offline: no device; reconnecting (backoff 0.25..1 s)",
        "fake 'x' offline: stalled; reconnecting (backoff 0.25..1 s)",
    ]
    assert "fake 'x' still offline: cannot open fake://device: RuntimeError: boom" in [m for _, m in msgs]
    assert [m for _, m in msgs if "online again" in m] == ["fake 'x': online again (fake://device)"] * 2
    st = src.stats()
    assert st.reconnects == 1 and st.frames == 2 and not st.online and st.last_error == "still stalled"
