"""Event sinks with real parts: a real mosquitto broker, a real HTTP server, real files.

The MQTT tests need Debian's ``mosquitto`` (broker, ``mosquitto_passwd``) and fail under CI=true
when it is missing.
"""

from __future__ import annotations

import getpass
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, require
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.events import Decision, Event
from edge_runtime.observe.http import HttpServer
from edge_runtime.observe.metrics import Metrics
from edge_runtime.sinks import Sink, SinkError
from edge_runtime.sinks.jsonl import JsonlSink


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/usr/bin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )


MOSQUITTO = _which("mosquitto")
MOSQUITTO_PASSWD = _which("mosquitto_passwd")
NEED_BROKER = "mosquitto is not installed (apt-get install mosquitto mosquitto-clients)"


def decision(
    label: str = "person",
    modality: str = "vision",
    score: float = 0.9,
    latency_ms: float = 12.0,
    source: str = "camera",
) -> Decision:
    now = time.monotonic_ns()
    return Decision(modality, label, score, now - int(latency_ms * 1e6), now, source)


def event(name: str = "person", n: int = 0) -> Event:
    return Event(name=name, score=0.8, t_event=time.monotonic_ns(), decisions=(decision(name),), rule=f"r{n}")


# --------------------------------------------------------------------------------------------
# a real broker
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:<free port> with a temp config; restartable on the same port."""

    def __init__(self, workdir: Path, extra: str = "", port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"  # as root: do not drop to 'mosquitto'
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n" + extra
        )
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        with open(self.log, "ab") as log:  # the broker keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log, cwd=self.workdir
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    require(MOSQUITTO is not None, NEED_BROKER)
    b = Broker(tmp_path_factory.mktemp("mosquitto"), "allow_anonymous true\npersistence false\n").start()
    yield b
    b.stop()


USER, PASSWORD = "edge", "s3cret pass"


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory):
    require(MOSQUITTO is not None and MOSQUITTO_PASSWD is not None, NEED_BROKER)
    work = tmp_path_factory.mktemp("mosquitto-auth")
    pw = work / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(pw), USER, PASSWORD], check=True, capture_output=True)
    pw.chmod(0o600)
    b = Broker(work, f"allow_anonymous false\npassword_file {pw}\npersistence false\n").start()
    yield b
    b.stop()


class Subscriber:
    """A plain paho client that records every message it receives."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        clean_session: bool = True,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: queue.Queue = queue.Queue()
        self.seen: list = []
        self.subscribed = threading.Event()
        self.topics = topics
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        if username:
            self.c.username_pw_set(username, password)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics]) if not rc.is_failure else None
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload.decode(), m.retain))
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert self.subscribed.wait(5), "subscriber could not subscribe"

    def wait(self, topic: str, payload: str | None = None, timeout: float = 5.0) -> tuple[str, str, bool]:
        """The next message on ``topic`` (with ``payload``, when given); earlier ones are kept in seen."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (t, p, r) in enumerate(self.seen):
                if t == topic and (payload is None or p == payload):
                    return self.seen.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no message on {topic} ({payload=}) within {timeout} s; got {self.seen}")
            try:
                self.seen.append(self.messages.get(timeout=left))
            except queue.Empty:
                pass

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def mqtt_cfg(port: int, **kw):
    from edge_runtime.sinks.mqtt import MqttConfig

    tag = uuid.uuid4().hex[:8]
    kw.setdefault("topic_prefix", f"test/{tag}")
    kw.setdefault("discovery_prefix", f"ha-{tag}")
    kw.setdefault("client_id", f"edge-test-{tag}")
    return MqttConfig(host="127.0.0.1", port=port, keepalive=5, **kw)


# --------------------------------------------------------------------------------------------
# MQTT
# --------------------------------------------------------------------------------------------
def test_mqtt_availability_discovery_event_and_clean_close(broker):
    from edge_runtime.sinks.mqtt import MqttSink

    cfg = mqtt_cfg(broker.port, event_names=["person", "yes & person"], device_name="Test board")
    sub = Subscriber(broker.port, [f"{cfg.topic_prefix}/#", f"{cfg.discovery_prefix}/#"])
    metrics = Metrics()
    sink = MqttSink(cfg, metrics=metrics)
    try:
        assert sink.wait_connected(5), sink.status()
        sub.wait(f"{cfg.topic_prefix}/availability", "online")

        node = sink.node_id
        assert node == cfg.client_id  # already a valid HA id
        configs = {}
        for name, obj in (("person", "person"), ("yes & person", "yes_person")):
            _, p, r = sub.wait(f"{cfg.discovery_prefix}/event/{node}/{obj}/config")
            assert r is False  # live delivery; the retain flag is checked below with a fresh subscriber
            configs[name] = json.loads(p)
        c = configs["yes & person"]
        assert c["state_topic"] == f"{cfg.topic_prefix}/event/yes_person"
        assert c["event_types"] == ["yes & person"]
        assert c["availability_topic"] == f"{cfg.topic_prefix}/availability"
        assert c["payload_available"] == "online" and c["payload_not_available"] == "offline"
        assert c["unique_id"] == f"{node}_yes_person" and c["unique_id"] != configs["person"]["unique_id"]
        assert c["device"]["identifiers"] == [node] and c["device"]["name"] == "Test board"

        e = event("person", 1)
        sink.publish(e)
        _, p, r = sub.wait(f"{cfg.topic_prefix}/event/person")
        got = json.loads(p)
        assert r is False
        assert got["event_type"] == "person" and got["event"] == "person" and got["rule"] == "r1"
        assert got["decisions"][0]["label"] == "person" and got["decisions"][0]["latency_ms"] == pytest.approx(12.0)
        assert sink.status()["connected"] is True and sink.dropped == 0

        # retained: a subscriber that comes later still gets availability and discovery
        late = Subscriber(broker.port, [f"{cfg.topic_prefix}/availability", f"{cfg.discovery_prefix}/#"])
        assert late.wait(f"{cfg.topic_prefix}/availability", "online")[2] is True
        assert late.wait(f"{cfg.discovery_prefix}/event/{node}/person/config")[2] is True
        late.close()
    finally:
        t0 = time.monotonic()
        sink.close()
        closing = time.monotonic() - t0
    sub.wait(f"{cfg.topic_prefix}/availability", "offline")
    assert closing < 3  # generous: close() is meant to take about a second at most
    assert not sink.connected
    sink.publish(event())  # after close: dropped and counted, never raised
    assert sink.dropped == 1
    sub.close()
    fams = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert [s.value for s in fams["edge_sink_dropped"].samples if s.name.endswith("_total")] == [1.0]


def test_mqtt_username_password(auth_broker):
    from edge_runtime.sinks.mqtt import MqttSink

    bad = MqttSink(mqtt_cfg(auth_broker.port, username=USER, password="wrong"))
    cfg = mqtt_cfg(auth_broker.port, username=USER, password=PASSWORD, event_names=["yes"])
    sub = Subscriber(auth_broker.port, [f"{cfg.topic_prefix}/#"], username=USER, password=PASSWORD)
    good = MqttSink(cfg)
    try:
        assert good.wait_connected(5), good.status()
        sub.wait(f"{cfg.topic_prefix}/availability", "online")
        good.publish(event("yes"))
        assert json.loads(sub.wait(f"{cfg.topic_prefix}/event/yes")[1])["event_type"] == "yes"
        deadline = time.monotonic() + 5
        while not bad.last_error and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bad.connected
        assert bad.last_error and "refused" in bad.last_error, bad.status()
    finally:
        good.close()
        bad.close()
    sub.wait(f"{cfg.topic_prefix}/availability", "offline")
    sub.close()


WILL_CHILD = """
import sys, time
from edge_runtime.sinks.mqtt import MqttConfig, MqttSink
sink = MqttSink(MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), topic_prefix=sys.argv[2],
                           client_id=sys.argv[3], keepalive=2, discovery=False))
assert sink.wait_connected(10), sink.status()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_mqtt_last_will_when_the_process_dies(broker, how):
    """kill -9: the socket closes without DISCONNECT; hang (SIGSTOP): the broker gives up after 1.5 keepalives.
    Either way the broker publishes the retained will ``offline``."""
    cfg = mqtt_cfg(broker.port)
    sub = Subscriber(broker.port, [f"{cfg.topic_prefix}/availability"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", WILL_CHILD, str(broker.port), cfg.topic_prefix, cfg.client_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "ready", child.stderr.read() if child.poll() is not None else line
        sub.wait(f"{cfg.topic_prefix}/availability", "online")
        os.kill(child.pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        sub.wait(f"{cfg.topic_prefix}/availability", "offline", timeout=10)
    finally:
        child.kill()
        child.wait(5)
        child.stdout.close()
        child.stderr.close()
    late = Subscriber(broker.port, [f"{cfg.topic_prefix}/availability"])
    assert late.wait(f"{cfg.topic_prefix}/availability", "offline")[2] is True  # the will is retained
    late.close()
    sub.close()


def test_mqtt_queues_while_the_broker_is_away_reconnects_and_counts_drops(tmp_path):
    """Without a spool file, events published while the broker is down wait in memory (bounded: the
    oldest are dropped and counted), the rest arrive after the broker comes back; the sink reconnects by itself."""
    require(MOSQUITTO is not None, NEED_BROKER)
    from edge_runtime.sinks.mqtt import MqttSink

    # a persistent broker session holds the subscription (and what is published to it) across restarts
    b = Broker(tmp_path, f"allow_anonymous true\npersistence true\npersistence_location {tmp_path}/\n").start()
    cfg = mqtt_cfg(b.port, max_queued=3, reconnect_min_delay=1, reconnect_max_delay=1, discovery=False)
    sub_id = f"sub-{uuid.uuid4().hex[:8]}"
    Subscriber(b.port, [f"{cfg.topic_prefix}/event/#"], client_id=sub_id, clean_session=False).close()
    b.stop()

    metrics = Metrics()
    sink = MqttSink(cfg, metrics=metrics)
    try:
        time.sleep(0.2)  # the first connection attempt fails
        assert not sink.connected
        sent = [event("person", i) for i in range(6)]
        for e in sent:
            sink.publish(e)  # never blocks, never raises
        assert sink.dropped == 3 and sink.status()["queued"] == 3 and sink.status()["spool"] is None
        assert sink.status()["last_error"] and "cannot reach" in sink.status()["last_error"]

        b.start()
        assert sink.wait_connected(10), sink.status()
        sub = Subscriber(b.port, [f"{cfg.topic_prefix}/event/#"], client_id=sub_id, clean_session=False)
        got = [json.loads(sub.wait(f"{cfg.topic_prefix}/event/person")[1]) for _ in range(3)]
        assert [g["rule"] for g in got] == ["r3", "r4", "r5"]  # the newest wait, the oldest were dropped
        assert [g["id"] for g in got] == [e.id for e in sent[3:]]
        sub.close()
    finally:
        sink.close()
        b.stop()
    s = samples(metrics.render().decode())
    assert s[("edge_sink_dropped_total", (("sink", "mqtt"),))] == 3
    assert s[("edge_spool_dropped_total", (("sink", "mqtt"),))] == 3
    assert s[("edge_spool_pending", (("sink", "mqtt"),))] == 0  # all acknowledged


def test_mqtt_import_is_lazy_and_config_validates():
    code = (
        "import sys, edge_runtime.sinks, edge_runtime.sinks.mqtt as m, edge_runtime.sinks.jsonl;"
        "assert 'paho' not in sys.modules and 'prometheus_client' not in sys.modules, sorted(sys.modules);"
        "c = m.MqttConfig(); assert c.client_id.startswith('edge-runtime-') and c.qos == 1"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    from edge_runtime.sinks.mqtt import MqttConfig

    with pytest.raises(ValueError, match="^qos: must be 0, 1 or 2, got 3"):
        MqttConfig(qos=3)
    with pytest.raises(ValueError, match="^topic_prefix: must be a non-empty topic"):
        MqttConfig(topic_prefix="a/+/b")


# --------------------------------------------------------------------------------------------
# HTTP + metrics
# --------------------------------------------------------------------------------------------
def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_http_healthz_status_metrics():
    state = {"healthy": True, "uptime_s": 1.5, "engines": {"vision": {"device": "cpu/xnnpack"}}}
    metrics = Metrics()
    server = HttpServer(lambda: dict(state), metrics, port=0).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert server.server_port > 0
        assert fetch(base + "/healthz")[::2] == (200, "ok\n")

        state.update(healthy=False, reason="camera: no frame for 5.0 s")
        code, _, body = fetch(base + "/healthz")
        assert (code, body.strip()) == (503, "camera: no frame for 5.0 s")

        code, ctype, body = fetch(base + "/status")
        assert code == 200 and ctype.startswith("application/json")
        assert json.loads(body) == state

        assert fetch(base + "/nope")[0] == 404

        for d in (
            decision("person", latency_ms=5),
            decision("person", latency_ms=40),
            decision("yes", "audio", latency_ms=150, source="mic"),
        ):
            metrics.observe_decision(d)
        metrics.observe_event(event("person"))
        metrics.observe_event(event("person"))
        metrics.source_totals("camera", 20, 1, 0)
        metrics.source_totals("camera", 30, 4, 0)  # running totals: the counters grow by what is new
        metrics.source_totals("mic", 5, 0, 1)
        metrics.source_up("camera", True)
        metrics.pipeline_fps("vision", 14.5)
        metrics.engine_info("vision", "litert", "gpu", None)
        metrics.engine_info("vision", "litert", "cpu/xnnpack", "GPU delegate failed to load")  # replaces
        metrics.sink_dropped("mqtt", 2)

        code, ctype, body = fetch(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain") and "version=" in ctype
        s = samples(body)
        assert s[("edge_decisions_total", (("label", "person"), ("modality", "vision")))] == 2
        assert s[("edge_decisions_total", (("label", "yes"), ("modality", "audio")))] == 1
        assert s[("edge_events_total", (("event", "person"),))] == 2
        assert s[("edge_decision_latency_seconds_count", (("modality", "vision"),))] == 2
        assert s[("edge_decision_latency_seconds_bucket", (("le", "0.01"), ("modality", "vision")))] == 1
        assert s[("edge_decision_latency_seconds_bucket", (("le", "0.2"), ("modality", "audio")))] == 1
        assert s[("edge_decision_latency_seconds_bucket", (("le", "0.1"), ("modality", "audio")))] == 0
        assert s[("edge_event_latency_seconds_count", ())] == 2
        assert s[("edge_frames_total", (("source", "camera"),))] == 30
        assert s[("edge_frames_dropped_total", (("source", "camera"),))] == 4
        assert s[("edge_audio_overflows_total", (("source", "mic"),))] == 1
        assert s[("edge_source_up", (("source", "camera"),))] == 1
        assert s[("edge_pipeline_fps", (("pipeline", "vision"),))] == 14.5
        engines = {k: v for k, v in s.items() if k[0] == "edge_engine_info"}
        assert engines == {
            (
                "edge_engine_info",
                (
                    ("device", "cpu/xnnpack"),
                    ("engine", "litert"),
                    ("fallback", "GPU delegate failed to load"),
                    ("pipeline", "vision"),
                ),
            ): 1.0
        }
        assert s[("edge_sink_dropped_total", (("sink", "mqtt"),))] == 2

        # a second daemon's metrics in the same process: its own registry, nothing shared
        other = Metrics()
        assert "edge_events_total{" not in other.render().decode()

        # a second server on port 0 gets its own port; a taken port is one clear error
        with HttpServer(lambda: {"healthy": True}, other, port=0) as second:
            assert second.server_port != server.server_port
            assert fetch(f"http://127.0.0.1:{second.server_port}/healthz")[0] == 200
        with pytest.raises(SinkError, match=f"cannot listen on 127.0.0.1:{server.server_port}"):
            HttpServer(dict, other, port=server.server_port).start()

        def broken() -> dict:
            raise RuntimeError("boom")

        with HttpServer(broken, other, port=0) as third:
            code, _, body = fetch(f"http://127.0.0.1:{third.server_port}/status")
            assert code == 500 and "boom" in body
        port = server.server_port
    finally:
        server.close()
    with pytest.raises(OSError):  # closed: nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def _threads() -> int:
    return threading.active_count()


def test_http_300_idle_connections_leave_threads_bounded_and_it_keeps_serving():
    server = HttpServer(lambda: {"healthy": True}, Metrics(), port=0, timeout_s=1.0, max_connections=8).start()
    idle: list[socket.socket] = []
    try:
        base_threads = _threads()
        for _ in range(300):  # half-sent requests: a request line, never the blank line that ends the headers
            s = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
            s.sendall(b"GET /status HTTP/1.0\r\nHost: x\r\n")
            idle.append(s)
        time.sleep(0.3)
        peak = _threads()
        assert peak - base_threads <= 8, (base_threads, peak)
        # while every one of them is still open on our side, /healthz is answered (at once: 200, or 503 busy
        # while the 8 workers wait out their 1 s read timeout), and answered 200 within that timeout
        t0 = time.monotonic()
        codes = []
        while time.monotonic() - t0 < 5:
            code, _, body = fetch(f"http://127.0.0.1:{server.server_port}/healthz")
            codes.append((code, body.strip()))
            if code == 200:
                break
            time.sleep(0.1)
        assert codes[-1] == (200, "ok") and set(codes[:-1]) <= {(503, "busy")}, codes
        assert time.monotonic() - t0 < 3.0
        assert _threads() - base_threads <= 8
        # the server closed the idle connections it took (read timeout) and refused the rest
        closed = 0
        for s in idle:
            s.settimeout(3)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            closed += data == b"" or data.startswith(b"HTTP/1.0 503")
        assert closed == 300
        deadline = time.monotonic() + 5
        while _threads() > base_threads and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _threads() <= base_threads
    finally:
        for s in idle:
            s.close()
        server.close()


def test_http_bearer_token_required_accepted_refused():
    server = HttpServer(lambda: {"healthy": True, "x": 1}, Metrics(), port=0, token="t0ken-123").start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"

        def get(path: str, auth: str | None) -> tuple[int, str, str]:
            req = urllib.request.Request(base + path, headers={"Authorization": auth} if auth else {})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.headers.get("WWW-Authenticate", ""), r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("WWW-Authenticate", ""), e.read().decode()

        for path in ("/status", "/metrics", "/nope"):
            code, challenge, body = get(path, None)
            assert (code, challenge) == (401, 'Bearer realm="edge-runtime"') and "unauthorized" in body
            for wrong in ("Bearer t0ken-12", "Bearer t0ken-1234", "Basic dDBrZW4tMTIz", "t0ken-123", "Bearer "):
                assert get(path, wrong)[0] == 401, (path, wrong)
        assert get("/status", "bearer t0ken-123")[0] == 200  # the scheme is case-insensitive
        code, _, body = get("/status", "Bearer t0ken-123")
        assert code == 200 and json.loads(body) == {"healthy": True, "x": 1}
        assert get("/metrics", "Bearer t0ken-123")[0] == 200
        # /healthz answers without the token (install.sh's health check), and says no more than ok / a reason
        assert get("/healthz", None)[::2] == (200, "ok\n")
        assert get("/healthz", "Bearer wrong")[0] == 200
    finally:
        server.close()


# --------------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------------
def test_jsonl_rotates_and_every_line_parses(tmp_path):
    path = tmp_path / "logs" / "events.jsonl"  # the folder is made
    sink = JsonlSink(str(path), max_bytes=4000, backups=2)
    n = 120
    threads = [
        threading.Thread(target=lambda k=k: [sink.publish(event("person", k * 1000 + i)) for i in range(n // 4)])
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]  # rotated, at most 2 backups
    lines = 0
    for name in files:
        text = (path.parent / name).read_text()
        assert len(text.encode()) <= 4000 and text.endswith("\n")
        for line in text.splitlines():
            obj = json.loads(line)  # every line is a whole object
            assert obj["event"] == "person" and obj["decisions"][0]["label"] == "person"
            lines += 1
    assert 0 < lines < n  # older files were rotated away
    sink.publish(event())
    assert sink.dropped == 1  # after close: counted, not raised

    # backups=0: truncated in place, never grows past max_bytes
    small = JsonlSink(tmp_path / "small.jsonl", max_bytes=1000, backups=0)
    for i in range(30):
        small.publish(event("yes", i))
    small.close()
    assert sorted(p.name for p in tmp_path.glob("small*")) == ["small.jsonl"]
    assert (tmp_path / "small.jsonl").stat().st_size <= 1000
    # appending to an existing file keeps its lines
    again = JsonlSink(tmp_path / "small.jsonl", max_bytes=0)
    before = len((tmp_path / "small.jsonl").read_text().splitlines())
    again.publish(event("yes", 99))
    again.close()
    assert len((tmp_path / "small.jsonl").read_text().splitlines()) == before + 1


def test_jsonl_stdout_and_bad_path(tmp_path, capsys):
    with JsonlSink("-") as sink:
        assert isinstance(sink, Sink)
        sink.publish(event("yes", 7))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["rule"] == "r7"
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match="cannot write"):
        JsonlSink(tmp_path / "file" / "events.jsonl")
