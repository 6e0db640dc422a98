"""The durable event spool with real parts: real SQLite files, a real mosquitto broker, the real daemon.

- the spool itself: order, acknowledgement, limits by size and age (the oldest dropped and counted),
  rows and ids kept across reopening, a damaged or foreign file refused;
- the MQTT sink over a spool file: what waits while the broker is away survives the sink, and the
  spool's metrics count what they say;
- ``edge-runtime run`` as a process: SIGKILL in the middle of a broker outage, restart, broker back:
  every event id reaches a subscriber, in order; SIGTERM during an outage discards nothing;
- ``check`` and ``run`` both refuse an unusable spool folder or a damaged spool file in one line.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, require
from test_sinks import MOSQUITTO, NEED_BROKER, Broker, Subscriber, event, free_port, mqtt_cfg, samples

from edge_runtime.defaults import SAMPLES
from edge_runtime.observe.metrics import Metrics
from edge_runtime.spool import Spool, SpoolError


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_spool_order_ack_and_reopen(tmp_path):
    path = tmp_path / "state" / "spool.sqlite3"  # the folder is made
    with Spool(path) as sp:
        for i in range(10):
            assert sp.append(f"t/{i}", f"payload {i}") == 0
        rows = sp.pending(0, 4)
        assert [r.topic for r in rows] == ["t/0", "t/1", "t/2", "t/3"] and rows[0].payload == b"payload 0"
        assert [r.topic for r in sp.pending(rows[-1].id, 100)] == [f"t/{i}" for i in range(4, 10)]
        sp.ack([rows[1].id, rows[3].id, 999_999])  # unknown ids are ignored
        assert sp.count == 8 and sp.bytes == sum(len(f"t/{i}payload {i}") for i in (0, 2, 4, 5, 6, 7, 8, 9))
        last = sp.last_id
    with Spool(path) as sp:  # what was not acknowledged is still there, in order
        assert [r.topic for r in sp.pending(0, 100)] == ["t/0", "t/2"] + [f"t/{i}" for i in range(4, 10)]
        assert sp.count == 8 and sp.last_id == last
        sp.ack(r.id for r in sp.pending(0, 100))
        assert sp.count == 0 and sp.bytes == 0
        sp.append("t/new", b"x")  # ids only grow, even after the table was emptied
        assert sp.pending(0, 10)[0].id == last + 1
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_spool_capacity_by_size_and_age_drops_the_oldest_and_counts(tmp_path):
    clock = Clock()
    with Spool(tmp_path / "s.sqlite3", max_bytes=1000, max_age_s=60.0, clock=clock) as sp:
        dropped = sum(sp.append("t", f"{i:09d}" * 10) for i in range(25))  # 91 bytes each: 10 fit in 1000
        assert dropped == 15 and sp.dropped == 15 and sp.count == 10 and sp.bytes <= 1000
        assert [r.payload[:9] for r in sp.pending(0, 100)] == [f"{i:09d}".encode() for i in range(15, 25)]

        clock.t += 30
        sp.append("t", "newer")
        clock.t += 40  # the first 10 are 70 s old now, "newer" 40 s
        assert sp.prune() == 10 and sp.dropped == 25
        assert [r.payload for r in sp.pending(0, 100)] == [b"newer"]
        clock.t += 61
        assert sp.append("t", "newest") == 1  # appending applies the limits too
        assert [r.payload for r in sp.pending(0, 100)] == [b"newest"] and sp.count == 1

    with Spool(":memory:", max_rows=3) as mem:
        for i in range(5):
            mem.append("t", str(i))
        assert [r.payload for r in mem.pending(0, 10)] == [b"2", b"3", b"4"] and mem.dropped == 2


def test_spool_file_stays_bounded(tmp_path):
    path = tmp_path / "s.sqlite3"
    payload = json.dumps({"id": uuid.uuid4().hex, "event": "espresso", "decisions": [{"label": "x" * 120}]})
    with Spool(path, max_bytes=256 * 1024) as sp:
        for _ in range(4000):  # about 4x the capacity
            sp.append("edge-runtime/board/event/espresso", payload)
        assert sp.dropped > 2000 and sp.bytes <= 256 * 1024
    assert path.stat().st_size <= 2 * 256 * 1024  # SQLite's page overhead on top of the counted bytes


def test_spool_refuses_damaged_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(SpoolError, match="garbage.sqlite3: cannot use it as a spool .*move it away"):
        Spool(garbage)
    assert garbage.stat().st_size == 8192  # left as it was

    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(SpoolError, match="not an edge-runtime spool"):
        Spool(other)

    damaged = tmp_path / "damaged.sqlite3"
    with Spool(damaged) as sp:
        for i in range(400):
            sp.append("t", f"{i}" * 200)
    data = bytearray(damaged.read_bytes())
    data[4096 * 3 : 4096 * 3 + 2048] = os.urandom(2048)  # a b-tree page in the middle overwritten
    damaged.write_bytes(bytes(data))
    with pytest.raises(SpoolError, match="damaged.sqlite3: (the spool file is damaged|cannot use it as a spool)"):
        Spool(damaged)

    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match="cannot create its folder"):
        Spool(tmp_path / "file" / "spool.sqlite3")


# --------------------------------------------------------------------------------------------
# the MQTT sink over a spool file
# --------------------------------------------------------------------------------------------
def test_mqtt_sink_spool_survives_the_sink_and_counts_what_it_drops(tmp_path):
    """Broker away: events go to the spool file, beyond its size the oldest go (counted); the sink closes
    without discarding anything; a new sink over the same file delivers what is left, in order."""
    require(MOSQUITTO is not None, NEED_BROKER)
    from edge_runtime.sinks.mqtt import MqttSink

    b = Broker(tmp_path, "allow_anonymous true\npersistence false\n")
    spool = str(tmp_path / "state" / "mqtt-spool.sqlite3")
    sent = [event("person", i) for i in range(40)]
    size = len(MqttSink.event_payload(sent[0])) + len(mqtt_cfg(b.port).topic_prefix) + len("/event/person") + 8
    cfg = mqtt_cfg(
        b.port,
        discovery=False,
        spool_path=spool,
        spool_max_mb=25 * size / 2**20,  # 25 events' bytes
        reconnect_min_delay=1,
        reconnect_max_delay=1,
    )
    metrics = Metrics()
    sink = MqttSink(cfg, metrics=metrics)
    for e in sent:
        sink.publish(e)
    m = samples(metrics.render().decode())
    dropped = m[("edge_spool_dropped_total", (("sink", "mqtt"),))]
    assert 0 < dropped < 40 and m[("edge_spool_pending", (("sink", "mqtt"),))] == 40 - dropped
    assert m[("edge_sink_dropped_total", (("sink", "mqtt"),))] == dropped == sink.dropped
    t0 = time.monotonic()
    sink.close()
    assert time.monotonic() - t0 < 3  # the broker is away: close does not wait for it

    b.start()
    sub = Subscriber(b.port, [f"{cfg.topic_prefix}/event/#"])
    metrics = Metrics()
    again = MqttSink(cfg, metrics=metrics)
    try:
        ids = [
            json.loads(sub.wait(f"{cfg.topic_prefix}/event/person", timeout=15)[1])["id"]
            for _ in range(40 - int(dropped))
        ]
        assert ids == [e.id for e in sent[int(dropped) :]]  # the newest survived, in order
        deadline = time.monotonic() + 5
        while again.spool.count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert again.spool.count == 0  # removed once acknowledged
    finally:
        again.close()
        sub.close()
        b.stop()
    assert samples(metrics.render().decode())[("edge_spool_pending", (("sink", "mqtt"),))] == 0
    with Spool(spool) as sp:
        assert sp.count == 0


# --------------------------------------------------------------------------------------------
# `edge-runtime run` as a process, with a real broker
# --------------------------------------------------------------------------------------------
def _daemon_config(path: Path, tmp_path: Path, port: int, prefix: str, extra: str = "") -> Path:
    """The sample photos as a looping 10 fps camera: about one event per frame (no cooldown)."""
    path.write_text(f"""
[runtime]
log_level = "info"
[camera]
uri = "{SAMPLES / "images"}"
fps = 10
loop = true
[vision]
threshold = 0.3
[fusion]
passthrough = true
passthrough_cooldown_s = 0.0
[sinks.jsonl]
path = "{tmp_path / "events.jsonl"}"
[sinks.mqtt]
port = {port}
topic_prefix = "{prefix}"
keepalive = 5
discovery = false
{extra}
""")
    return path


class Daemon:
    """`edge-runtime run --config FILE` in its own process, its log in a file."""

    def __init__(self, config: Path, state: Path | None, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("STATE_DIRECTORY", None)
        if state is not None:
            env["STATE_DIRECTORY"] = str(state)
        self.log = log
        with open(log, "a") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_runtime.cli", "run", "--config", str(config)],
                cwd=ROOT,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def _ids(jsonl: Path) -> list[str]:
    """Event ids in the JSON-lines file, in order (a line cut off by SIGKILL at the very end is skipped)."""
    if not jsonl.exists():
        return []
    lines = jsonl.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line)["id"])
        except json.JSONDecodeError:
            assert i == len(lines) - 1, f"line {i + 1} of {jsonl} is not JSON: {line!r}"
    return out


def _wait_for(pred, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s" + (f"; daemon log:\n{log.read_text()[-3000:]}" if log else ""))


def _received(sub: Subscriber, prefix: str) -> list[str]:
    """Event ids the subscriber got so far, in arrival order (duplicates kept)."""
    import queue

    while True:
        try:
            sub.seen.append(sub.messages.get_nowait())
        except queue.Empty:
            break
    return [json.loads(p)["id"] for t, p, _ in sub.seen if t.startswith(f"{prefix}/event/")]


def _first_seen(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def test_sigkill_in_a_broker_outage_loses_no_event(tmp_path):
    """The Done-when of the spool: broker stopped, the daemon SIGKILLed in the outage and started again,
    the broker back: every event id the daemon wrote reaches the subscriber, in order."""
    require(MOSQUITTO is not None, NEED_BROKER)
    b = Broker(tmp_path, f"allow_anonymous true\npersistence true\npersistence_location {tmp_path}/\n").start()
    prefix = f"spool/{uuid.uuid4().hex[:8]}"
    cfg = _daemon_config(tmp_path / "edge.toml", tmp_path, b.port, prefix)
    jsonl, log, state = tmp_path / "events.jsonl", tmp_path / "daemon.log", tmp_path / "state"
    # a persistent session: the broker keeps what is published for the subscriber across its own restart
    sub = Subscriber(b.port, [f"{prefix}/#"], client_id=f"sub-{uuid.uuid4().hex[:8]}", clean_session=False)
    sub.c.reconnect_delay_set(1, 1)
    first = Daemon(cfg, state, log)
    second = None
    try:
        _wait_for(lambda: len(_received(sub, prefix)) >= 5, 90, "no event reached the broker", log)
        b.stop()  # the outage
        n = len(_ids(jsonl))
        _wait_for(lambda: len(_ids(jsonl)) >= n + 10, 30, "no events during the outage", log)
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        killed = _ids(jsonl)
        with Spool(state / "mqtt-spool.sqlite3") as sp:
            assert sp.count >= 10  # what waited was on disk when the process died

        second = Daemon(cfg, state, log)  # restarted while the broker is still away
        _wait_for(lambda: len(_ids(jsonl)) >= len(killed) + 5, 90, "the restarted daemon wrote no events", log)
        b.start()
        before_return = _ids(jsonl)
        got = _wait_for(
            lambda: (r := _received(sub, prefix)) and set(before_return) <= set(r) and r,
            60,
            "not every event reached the subscriber after the broker came back",
            log,
        )
        firsts = [i for i in _first_seen(got) if i in set(before_return)]
        assert firsts == before_return  # each event once at least, the first copies in the order they happened
        assert second.stop() == 0
    finally:
        for d in (first, second):
            if d is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        sub.close()
        b.stop()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "events left in the spool" in text and "sending them first" in text
    assert len(set(before_return)) == len(before_return)  # every event has an id of its own


def test_sigterm_in_a_broker_outage_discards_nothing(tmp_path):
    """SIGTERM while the broker is away: a clean, quick exit; everything waits in the spool
    (here in the folder given by spool_dir) and is delivered by the next start."""
    require(MOSQUITTO is not None, NEED_BROKER)
    b = Broker(tmp_path, "allow_anonymous true\npersistence false\n")  # not started: away from the beginning
    prefix = f"spool/{uuid.uuid4().hex[:8]}"
    state = tmp_path / "spool-folder"
    cfg = _daemon_config(tmp_path / "edge.toml", tmp_path, b.port, prefix, f'spool_dir = "{state}"')
    jsonl, log = tmp_path / "events.jsonl", tmp_path / "daemon.log"
    d = Daemon(cfg, None, log)
    try:
        _wait_for(lambda: len(_ids(jsonl)) >= 10, 90, "no events", log)
        t0 = time.monotonic()
        assert d.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 5
        written = _ids(jsonl)
        with Spool(state / "mqtt-spool.sqlite3") as sp:
            stored = [json.loads(r.payload)["id"] for r in sp.pending(0, 10_000)]
        assert stored == written  # all of them, in order
        assert "dropping events" not in log.read_text()

        b.start()
        sub = Subscriber(b.port, [f"{prefix}/event/#"])
        d = Daemon(cfg, None, log)
        got = _wait_for(
            lambda: (r := _received(sub, prefix)) and set(written) <= set(r) and r,
            60,
            "the spooled events were not delivered after the restart",
            log,
        )
        assert [i for i in _first_seen(got) if i in set(written)] == written
        assert d.stop() == 0
        sub.close()
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        b.stop()
    assert "Traceback" not in log.read_text()


def test_check_and_run_refuse_an_unusable_spool_in_one_line(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "mqtt-spool.sqlite3").write_bytes(b"this is no SQLite database" * 200)
    cfg = _daemon_config(tmp_path / "edge.toml", tmp_path, free_port(), "spool/bad")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cases = (
        (tmp_path / "a-file" / "state", "cannot create its folder"),
        (damaged, "cannot use it as a spool (file is not a database); move it away"),
    )
    for state, why in cases:
        for cmd in ("check", "run"):
            r = subprocess.run(
                [sys.executable, "-m", "edge_runtime.cli", cmd, "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=ROOT,
                env={**env, "STATE_DIRECTORY": str(state)},
            )
            last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
            assert r.returncode == 2 and "Traceback" not in r.stderr, (cmd, r.stderr)
            assert last.startswith(
                f"edge-runtime: error: {cfg}: sinks.mqtt spool: {state / 'mqtt-spool.sqlite3'}: {why}"
            ), (cmd, last)
            assert "spool_dir" in last
    assert (damaged / "mqtt-spool.sqlite3").read_bytes() == b"this is no SQLite database" * 200  # untouched
    assert not (tmp_path / "events.jsonl").exists() or not _ids(tmp_path / "events.jsonl")


def test_spool_config_keys_defaults_and_errors(tmp_path):
    from edge_runtime import config
    from edge_runtime.service import mqtt_config
    from edge_runtime.sinks import SinkError

    base = "[microphone]\n[audio]\n[sinks.mqtt]\n"
    for key, value in (
        ("spool_max_mb", "0"),
        ("spool_max_mb", "inf"),
        ("spool_max_mb", "nan"),
        ("spool_max_mb", "1e9"),
        ("spool_max_age_days", "0"),
        ("spool_max_age_days", "inf"),
        ("spool_max_age_days", "-1"),
        ("spool_max_age_days", "1e6"),
    ):
        with pytest.raises(config.ConfigError, match=f"^edge.toml:4: sinks.mqtt.{key}: must be"):
            config.parse(base + f"{key} = {value}\n", "edge.toml")
    with pytest.raises(config.ConfigError, match="^edge.toml:5: sinks.mqtt.spool: needs qos 1 or 2"):
        config.parse(base + "qos = 0\nspool = true\n", "edge.toml")
    with pytest.raises(config.ConfigError, match="^edge.toml:4: sinks.mqtt.spool_dir: is empty"):
        config.parse(base + 'spool_dir = " "\n', "edge.toml")

    def spool_path(text: str, env: dict) -> str | None:
        return mqtt_config(config.parse(base + text, "edge.toml"), environ=env).spool_path

    state = str(tmp_path / "state")
    # the default: on at qos >= 1 when there is a folder; the first of systemd's STATE_DIRECTORY list
    assert spool_path("", {"STATE_DIRECTORY": f"{state}:/var/lib/other"}) == f"{state}/mqtt-spool.sqlite3"
    assert spool_path(f'spool_dir = "{tmp_path}"\n', {"STATE_DIRECTORY": state}) == f"{tmp_path}/mqtt-spool.sqlite3"
    assert spool_path("", {}) is None  # no folder: in memory
    assert spool_path("qos = 0\n", {"STATE_DIRECTORY": state}) is None
    assert spool_path("spool = false\n", {"STATE_DIRECTORY": state}) is None
    mq = mqtt_config(config.parse(base + "spool_max_mb = 0.5\nspool_max_age_days = 2\n", "edge.toml"), environ={})
    assert (mq.spool_max_bytes, mq.spool_max_age_s) == (512 * 1024, 2 * 86400.0)
    default = mqtt_config(config.parse(base, "edge.toml"), environ={})
    assert (default.spool_max_bytes, default.spool_max_age_s) == (50 * 2**20, 7 * 86400.0)
    with pytest.raises(SinkError, match="^sinks.mqtt.spool: no folder for the spool: set .sinks.mqtt. spool_dir"):
        spool_path("spool = true\n", {})
    with pytest.raises(config.ConfigError, match="^edge.toml:4: sinks.mqtt.port: must be a port number"):
        spool_path("port = 0\n", {})  # refused when the config is loaded, for check as for run


def test_check_reports_the_spool_and_refuses_what_run_refuses(tmp_path):
    cfg = _daemon_config(tmp_path / "edge.toml", tmp_path, free_port(), "spool/check")
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    env["PYTHONPATH"] = str(ROOT)
    state = tmp_path / "state"
    with Spool(state / "mqtt-spool.sqlite3") as sp:
        sp.append("t", "left from before")
    r = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**env, "STATE_DIRECTORY": str(state)},
    )
    assert r.returncode == 0, r.stderr
    assert f"spool {state / 'mqtt-spool.sqlite3'}, 1 events pending" in r.stdout
    with Spool(state / "mqtt-spool.sqlite3") as sp:
        assert sp.count == 1  # check changed nothing

    cfg.write_text(cfg.read_text() + "spool = true\n")  # asked for, and no folder
    for cmd in ("check", "run"):
        r = subprocess.run(
            [sys.executable, "-m", "edge_runtime.cli", cmd, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=env,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, (cmd, r.stderr)
        assert (
            r.stderr.strip()
            .splitlines()[-1]
            .startswith(f"edge-runtime: error: {cfg}: sinks.mqtt.spool: no folder for the spool")
        ), (cmd, r.stderr)
