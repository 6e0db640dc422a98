"""Microphones through PortAudio (``sounddevice``): continuous float32 mono chunks at 16 kHz.

The PortAudio callback never blocks: it copies the block into a bounded
``collections.deque`` (append/popleft are atomic, no lock), stamps it with
``time.monotonic_ns()`` and counts overflows. Mixing down, resampling (when the
device cannot capture at the model's rate) and timestamp bookkeeping happen in
the consumer's thread inside :meth:`MicrophoneSource.read`. Lost audio is never
silent: PortAudio input overflows and our own queue overflows are counted,
logged as WARNINGs and visible as a jump in ``AudioChunk.start_sample``. A
stream that stops delivering (device gone, sound server restarted) is reopened
with capped exponential backoff by the :class:`~edge_runtime.sources.Source`
supervisor thread, which also reports the overflows.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import AudioChunk, Source, SourceError, register_kind

log = logging.getLogger(__name__)


def import_sounddevice() -> Any:
    """``sounddevice`` (a dependency), or a one-line SourceError when the PortAudio library is missing."""
    try:
        import sounddevice
    except OSError:  # the module is there but libportaudio is not
        raise SourceError(
            "PortAudio library not found: install it (Debian/Raspberry Pi OS: apt install libportaudio2)"
        ) from None
    return sounddevice


def input_devices(sd: Any) -> list[tuple[int, dict]]:
    """(index, info) of every device with input channels."""
    return [(i, dict(d)) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def default_input(sd: Any) -> int:
    """The index of the default input device (sounddevice's setting, else PortAudio's); -1 if none."""
    try:
        index = int(sd.default.device[0])
    except (TypeError, ValueError, IndexError):
        index = -1
    if index < 0:
        try:
            index = int(sd.query_devices(kind="input")["index"])
        except Exception:
            index = -1
    return index


def resolve_input(sd: Any, device: int | str | None, owner: str = "microphone") -> tuple[int, dict]:
    """An input device by index, name (exact, else case-insensitive substring) or None (the default).

    Raises a one-line :class:`SourceError` naming the device and listing the available inputs.
    """
    inputs = input_devices(sd)
    listing = ", ".join(f"{i} {d['name']!r}" for i, d in inputs) or "none"
    if not inputs:
        raise SourceError(
            f"{owner}: no audio input devices found; plug in a microphone, check 'arecord -l' "
            f"and that the user is in the 'audio' group"
        )
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        device = int(device.strip())
    if device is None or device == "":
        default = default_input(sd)
        for i, d in inputs:
            if i == default:
                return i, d
        return inputs[0]
    if isinstance(device, int):
        for i, d in inputs:
            if i == device:
                return i, d
        raise SourceError(f"{owner}: audio device {device} is not an input device; available inputs: {listing}")
    want = str(device).strip().lower()
    exact = [(i, d) for i, d in inputs if d["name"].strip().lower() == want]
    found = exact or [(i, d) for i, d in inputs if want in d["name"].lower()]
    if not found:
        raise SourceError(f"{owner}: no audio input device matches {device!r}; available inputs: {listing}")
    if len(found) > 1:
        log.info("%s: %r matches %d inputs, using %d %r", owner, device, len(found), found[0][0], found[0][1]["name"])
    return found[0]


def capture_rate(sd: Any, index: int, info: dict, channels: int, want: int) -> int:
    """``want`` if the device captures at that rate, else its default rate (the source then resamples)."""
    try:
        sd.check_input_settings(device=index, samplerate=want, channels=channels, dtype="float32")
        return want
    except Exception:
        return int(round(info["default_samplerate"]))


@dataclass
class _Block:
    data: np.ndarray  # (frames, channels) float32 at the device rate
    t_ns: int  # monotonic time the callback received it (~ its last sample)
    index: int  # device-rate index of its first sample within its stream
    epoch: int  # which stream (a reopen starts a new one)
    rate: int


class _StreamState:
    """Counters one stream's callback writes; no locks (only the callback writes them)."""

    def __init__(self, epoch: int, rate: int) -> None:
        self.epoch, self.rate = epoch, rate
        self.index = 0
        self.last_ns = time.monotonic_ns()
        self.calls = 0
        self.finished = False

    def finish(self) -> None:  # PortAudio's finished_callback
        self.finished = True


class _Timeline:
    """The consumer side: device blocks to mono samples at ``sample_rate``, with their place and capture time.

    A segment is a run of blocks without a gap, resampled by one :class:`~edge_runtime.audio.wav.Resampler`.
    A reopened stream (a new epoch) or blocks lost to a queue overflow start a new segment, skipped
    ahead on the output timeline by the samples missed (the wall-clock gap, or the lost blocks).
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._resampler: Any = None
        self._seg_epoch: int | None = None
        self._seg_in0 = 0  # device index where the current segment starts
        self._seg_out0 = 0  # output sample position of that start
        self._seg_in = 0  # device samples consumed in the segment
        self._seg_out = 0  # output samples produced in the segment
        self._expect_index = 0
        self._t_last_ns = 0
        self._t_prev_chunk_ns = 0

    def _end(self) -> int:
        """Output position just after the current segment's consumed input, by the rate ratio."""
        if self._seg_epoch is None:
            return 0
        rate = self._resampler.sr_in
        return self._seg_out0 + int(round(self._seg_in * self.sample_rate / rate))

    def _new_segment(self, block: _Block, out0: int) -> None:
        from ..audio.wav import Resampler

        self._resampler = Resampler(block.rate, self.sample_rate)
        self._seg_epoch = block.epoch
        self._seg_in0, self._seg_out0 = block.index, out0
        self._seg_in = self._seg_out = 0
        self._expect_index = block.index

    def place(self, block: _Block) -> tuple[int, tuple[np.ndarray, int, int] | None]:
        """(blocks lost before this one, (samples, start_sample, t_capture) or None while the resampler fills)."""
        frames, lost = len(block.data), 0
        if self._seg_epoch is None:
            self._new_segment(block, 0)
        elif block.epoch != self._seg_epoch:  # a reopened stream: skip ahead by the wall-clock gap
            first_ns = block.t_ns - int(frames * 1e9 / block.rate)
            gap = max(0, int(round((first_ns - self._t_last_ns) * 1e-9 * self.sample_rate)))
            self._new_segment(block, self._end() + gap)
        elif block.index != self._expect_index:  # blocks lost to a queue overflow: skip them on the timeline
            lost = max(1, int(round((block.index - self._expect_index) / frames)))
            out0 = self._seg_out0 + int(round((block.index - self._seg_in0) * self.sample_rate / block.rate))
            self._new_segment(block, out0)
        y = self._resampler.process(block.data)  # mixes channels down (to_mono) and resamples
        self._expect_index = block.index + frames
        self._seg_in += frames
        self._t_last_ns = block.t_ns
        if len(y) == 0:
            return lost, None
        start = self._seg_out0 + self._seg_out
        self._seg_out += len(y)
        # The last output sample maps to device sample seg_in0 + (seg_out - 1) * rate / sr; the block's last
        # sample arrived at t_ns, so subtract the resampler's hold-back.
        behind = (self._seg_in - 1) - (self._seg_out - 1) * block.rate / self.sample_rate
        t_last = block.t_ns - int(max(0.0, behind) * 1e9 / block.rate)
        # Callbacks arrive with scheduling jitter (in bursts under load): keep capture times strictly increasing.
        t_last = max(t_last, self._t_prev_chunk_ns + 1)
        self._t_prev_chunk_ns = t_last
        return lost, (np.ascontiguousarray(y, dtype=np.float32), start, t_last)


class MicrophoneSource(Source):
    """Continuous audio from an input device as :class:`AudioChunk` (float32 mono at ``sample_rate``).

    ``device``: None (the system default input), an index, or a name or name substring
    (``"pulse"``, ``"USB"``). If the device cannot capture at ``sample_rate`` it is opened at its
    default rate (or ``device_rate``) and resampled. ``queue_seconds`` of audio are buffered for a
    slow consumer; beyond that the oldest blocks are dropped and counted.
    """

    noun = "microphone"
    thread_prefix = "mic"
    retry = "reopening"

    def __init__(self, name: str, device: int | str | None = None, sample_rate: int = 16000, block_ms: float = 80,
                 channels: int = 1, queue_seconds: float = 5.0, *, device_rate: int | None = None,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 10.0,
                 stall_timeout_s: float = 2.0) -> None:  # fmt: skip
        if sample_rate <= 0 or block_ms <= 0 or channels < 1 or queue_seconds <= 0:
            raise SourceError(f"microphone {name!r}: sample_rate, block_ms, channels and queue_seconds must be > 0")
        super().__init__(name, backoff_initial_s, backoff_max_s)
        self.device = device
        self.sample_rate = int(sample_rate)
        self.block_ms = float(block_ms)
        self.channels = int(channels)
        self.queue_seconds = float(queue_seconds)
        self.device_rate_request = device_rate
        self.stall_timeout_s = max(float(stall_timeout_s), 10 * self.block_ms / 1000)

        self.device_index: int | None = None
        self.device_name: str | None = None
        self.device_rate: int | None = None
        self._sd: Any = None
        self._stream: Any = None
        self._epoch = 0
        self._ring: collections.deque[_Block] = collections.deque(maxlen=1)
        self._data = threading.Event()
        # counters written by the callback (plain ints: one writer, the GIL makes += safe enough to read)
        self._pa_overflows = 0
        self._ring_overflows = 0
        self._reported = (0, 0)
        self._last_warn = 0.0
        # consumer side
        self._read_lock = threading.Lock()
        self._timeline = _Timeline(self.sample_rate)

    # -- public -----------------------------------------------------------------------------------------

    def read(self, timeout: float | None = 1.0) -> AudioChunk | None:
        """The next chunk in order (waits up to ``timeout`` s; None: forever). None if no audio came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._read_lock:
            while True:
                try:
                    block = self._ring.popleft()
                except IndexError:
                    if self._stop.is_set():
                        return None
                    self._data.clear()
                    if self._ring:
                        continue
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    self._data.wait(remaining)
                    continue
                lost, placed = self._timeline.place(block)
                with self._cond:
                    self._dropped += lost
                    if placed is not None:
                        self._frames += 1
                        self._rate.tick(placed[2])
                if placed is not None:
                    y, start, t_last = placed
                    return AudioChunk(samples=y, t_capture=t_last, start_sample=start, source=self.name)

    @property
    def overflow_counts(self) -> dict[str, int]:
        """Overflows by origin: ``portaudio`` (the driver lost input) and ``queue`` (the consumer was too slow)."""
        return {"portaudio": self._pa_overflows, "queue": self._ring_overflows}

    def __repr__(self) -> str:
        return f"MicrophoneSource({self.name!r}, device={self.device!r})"

    @property
    def _label(self) -> str:  # type: ignore[override]
        return repr(self.device_name if self.device_name is not None else self.device)

    def _overflow_total(self) -> int:
        return self._pa_overflows + self._ring_overflows

    def _wake(self) -> None:
        self._data.set()

    # -- stream (run by Source._supervise) --------------------------------------------------------------

    def _open_first(self) -> _StreamState:
        """start() opens the device: SourceError if it is missing or refuses."""
        self._sd = import_sounddevice()
        return self._connect()  # the first open fails loudly; later reopens retry with backoff

    def _connect(self) -> _StreamState:
        sd = self._sd
        index, info = resolve_input(sd, self.device, owner=f"microphone {self.name!r}")
        channels = min(self.channels, int(info["max_input_channels"]))
        rate = int(self.device_rate_request or capture_rate(sd, index, info, channels, self.sample_rate))
        blocksize = max(1, int(round(rate * self.block_ms / 1000)))
        self._epoch += 1
        state = _StreamState(self._epoch, rate)
        try:
            stream = sd.InputStream(device=index, samplerate=rate, channels=channels, dtype="float32",
                                    blocksize=blocksize, callback=self._callback(state, rate, blocksize),
                                    finished_callback=state.finish)  # fmt: skip
            stream.start()
        except Exception as e:
            raise SourceError(
                f"microphone {self.name!r}: cannot open input {index} {info['name']!r} at {rate} Hz "
                f"x {channels} ch: {e}"
            ) from None
        with self._cond:
            self._stream = stream
            self.device_index, self.device_name, self.device_rate = index, info["name"], rate
            self._online = True  # open; the outage (if any) ends once audio flows
        how = "" if rate == self.sample_rate else f", resampled to {self.sample_rate} Hz"
        log.info("microphone %r: input %d %r at %d Hz x %d ch, %d-frame blocks%s",
                 self.name, index, info["name"], rate, channels, blocksize, how)  # fmt: skip
        return state

    def _callback(self, state: _StreamState, rate: int, blocksize: int) -> Any:
        """PortAudio's callback for one stream, writing into the ring (resized to ``queue_seconds`` at ``rate``)."""
        ring = self._ring
        maxlen = max(2, math.ceil(self.queue_seconds * rate / blocksize))
        if ring.maxlen != maxlen:
            ring = self._ring = collections.deque(ring, maxlen=maxlen)
        data_ready = self._data

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            # Runs on PortAudio's thread: copy, stamp, count; no locks, no logging, no allocation beyond the copy.
            t = time.monotonic_ns()
            if status.input_overflow:
                self._pa_overflows += 1
            if len(ring) == maxlen:  # the deque drops the oldest block on append
                self._ring_overflows += 1
            ring.append(_Block(indata.copy(), t, state.index, state.epoch, state.rate))
            state.index += frames
            state.last_ns = t
            state.calls += 1
            data_ready.set()

        return callback

    def _deliver(self, state: _StreamState) -> tuple[bool, str | None]:
        """Watch the stream every 0.2 s until it stops or stalls; report overflows meanwhile."""
        while not self._stop.wait(0.2):
            self._report_overflows()
            with self._cond:
                stream = self._stream
            reason = None
            if state.finished or stream is None or not stream.active:
                reason = "the audio stream stopped (device gone?)"
            else:
                # PortAudio through ALSA's pulse plugin takes ~1.5 s to deliver the first block: allow more
                limit = self.stall_timeout_s if state.calls else max(self.stall_timeout_s, 5.0)
                if time.monotonic_ns() - state.last_ns > limit * 1e9:
                    reason = f"no audio for {limit:g} s (device gone or sound server down?)"
            if reason is not None:
                return bool(state.calls), f"microphone input {self.device_name!r}: {reason}"
            if state.calls:
                with self._cond:
                    self._mark_online()
        return bool(state.calls), None

    def _disconnect(self, state: _StreamState) -> None:
        self._release()

    def _release(self) -> None:
        with self._cond:
            stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
        except Exception:
            pass
        try:
            stream.close(ignore_errors=True)
        except Exception:
            pass

    def _report_overflows(self) -> None:
        counts = (self._pa_overflows, self._ring_overflows)
        if counts != self._reported and time.monotonic() - self._last_warn >= 1.0:
            self._reported = counts
            self._last_warn = time.monotonic()
            log.warning("microphone %r: audio lost: %d PortAudio input overflow(s) (the system could not keep up), "
                        "%d queue overflow(s) (the consumer read too slowly; queue %g s) so far",
                        self.name, counts[0], counts[1], self.queue_seconds)  # fmt: skip


# after the WAV file kind: [microphone] without a file is a sound card (the default input when no device)
@register_kind("microphone", "sound card", claims=lambda m: m.device or "default", key="device", order=100)
def _open(name: str, m: Any, _: Any) -> MicrophoneSource:
    return MicrophoneSource(name, m.device, block_ms=m.block_ms)
