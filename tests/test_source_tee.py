"""One microphone, two audio pipelines: the source is opened once and every pipeline hears every chunk."""

from __future__ import annotations

import json
import threading

import numpy as np
from conftest import wait_until

from edge_runtime import config
from edge_runtime.audio.wav import write_wav
from edge_runtime.sources.files import WavFileSource
from edge_runtime.sources.tee import SourceTee

SR = 16000


def _wav(tmp_path, seconds: float):
    t = np.arange(int(SR * seconds)) / SR
    path = tmp_path / "tone.wav"
    write_wav(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
    return path


def _drain(tap, out: list) -> None:
    while not tap.ended:
        chunk = tap.read(timeout=1.0)
        if chunk is not None:
            out.append((chunk.start_sample, chunk.samples.copy()))


def test_every_tap_gets_every_chunk_in_order_and_a_file_read_at_once_loses_none(tmp_path):
    path = _wav(tmp_path, 3.0)
    direct = WavFileSource("mic", path, realtime=False, block_ms=80).start()
    want = []
    while (c := direct.read()) is not None:
        want.append((c.start_sample, c.samples))
    tee = SourceTee(WavFileSource("mic", path, realtime=False, block_ms=80).start(), taps=2, capacity=2)
    got: list[list] = [[], []]
    readers = [threading.Thread(target=_drain, args=(tap, out)) for tap, out in zip(tee.taps, got)]
    for r in readers:
        r.start()
    for r in readers:
        r.join(timeout=30)
    assert len(want) == 38
    for out in got:  # a tap of two chunks never dropped one: the file waits for the slower reader
        assert [s for s, _ in out] == [s for s, _ in want]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(out, want))
    assert all(tap.stats().dropped == 0 for tap in tee.taps)
    for tap in tee.taps:
        tap.close()


def test_a_pipeline_that_falls_behind_a_live_source_loses_its_oldest_chunks_not_the_others(tmp_path):
    source = WavFileSource("mic", _wav(tmp_path, 1.0), realtime=True, block_ms=100).start()
    assert source.live
    tee = SourceTee(source, taps=2, capacity=3)
    reader, idle = tee.taps
    got: list = []
    _drain(reader, got)  # about 1 s: the file is paced like a microphone
    assert [s for s, _ in got] == [i * 1600 for i in range(10)]
    assert idle.stats().dropped == 7 and reader.stats().dropped == 0
    late = [idle.read(timeout=0.1) for _ in range(3)]
    assert [c.start_sample for c in late] == [7 * 1600, 8 * 1600, 9 * 1600]
    assert idle.ended and reader.ended
    chunk = late[0].samples
    assert not chunk.flags.writeable  # one array for every tap: no reader may change it
    reader.close()
    assert not source._stop.is_set()  # the other tap still reads it
    idle.close()
    idle.close()  # twice is fine
    assert source._stop.is_set() and not tee._thread.is_alive()  # closed with its last tap


def test_the_daemon_opens_the_microphone_once_for_keywords_and_phrases(tmp_path):
    from edge_runtime.demo import DEMO_AUDIO, DEMO_PHRASES
    from edge_runtime.service import Daemon

    events = tmp_path / "events.jsonl"
    phrases = ", ".join(f"'{p}'" for p in DEMO_PHRASES)
    cfg = config.parse(
        f"[audio]\n[asr]\nphrases = [{phrases}]\n"
        f"[microphone]\nfile = '{DEMO_AUDIO}'\nrealtime = false\n"
        f"[sinks.jsonl]\npath = '{events}'\n",
        str(tmp_path / "edge.toml"),
    )
    daemon = Daemon(cfg)
    daemon.start()
    try:
        sources = [p.source for p in daemon.pipelines]
        assert [type(s).__name__ for s in sources] == ["Tap", "Tap"]
        assert sources[0]._tee is sources[1]._tee
        assert wait_until(lambda: all(p.ended() for p in daemon.pipelines), timeout=120)
        assert wait_until(lambda: events.exists() and "start the coffee machine" in events.read_text(), timeout=30)
        status = daemon.status()
    finally:
        daemon.stop()
    said = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert {"yes", "go", "stop", "left", "no"} <= set(said) and "start the coffee machine" in said
    assert status["sources"]["microphone"]["dropped"] == 0
