"""Events to an MQTT broker (paho-mqtt 2.x), with availability, a last will and
Home Assistant MQTT discovery.

Topics (``<prefix>`` = ``topic_prefix``, default ``edge-runtime/<hostname>``):

- ``<prefix>/event/<event>``: one JSON object per event: ``{"event_type": <event>, **event.to_dict()}``
  (``event_type`` is what Home Assistant's MQTT event entity reads; the other keys become
  the event's attributes). Not retained unless ``retain_events``.
- ``<prefix>/availability``: retained ``online`` on every (re)connect; ``offline`` as the
  retained last will (the broker publishes it when the board dies or hangs for 1.5 keepalives),
  and published by a clean :meth:`MqttSink.close`.
- ``<discovery_prefix>/event/<node_id>/<event>/config``: retained Home Assistant discovery
  config of one ``event`` entity per configured event name (see :meth:`MqttSink.discovery_payload`).

:meth:`MqttSink.publish` never blocks: the event goes into a bounded queue; the sink's own
thread hands it to paho while connected (it blocks, without polling, until an event comes, the
broker is back or the sink closes). While the broker is away, events wait in that queue
(``max_queued``); beyond it they are dropped and counted. paho reconnects by itself
(``reconnect_delay_set``), and re-sends QoS>0 messages it had in flight.

paho-mqtt is imported when a sink is made, so :class:`MqttConfig` can be imported without it.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import Sink, SinkError

if TYPE_CHECKING:
    from ..events import Event
    from .metrics import Metrics

log = logging.getLogger(__name__)

_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
_WAKE = object()  # put by close(): the worker looks at the closing flag again


def _hostname() -> str:
    name = socket.gethostname().split(".", 1)[0] or "localhost"
    return _SLUG.sub("-", name)


def slug(name: str) -> str:
    """A topic level / Home Assistant id from any name: only ``[A-Za-z0-9_-]``."""
    return _SLUG.sub("_", name).strip("_") or "_"


@dataclass
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = field(default_factory=lambda: f"edge-runtime-{_hostname()}")
    username: str | None = None
    password: str | None = None
    tls: bool = False  # also on when ca_file or cert_file is given
    ca_file: str | None = None  # None with tls: the system's CA certificates
    cert_file: str | None = None  # client certificate (mutual TLS)
    key_file: str | None = None
    tls_insecure: bool = False  # do not check that the broker's certificate matches host
    qos: int = 1
    topic_prefix: str = field(default_factory=lambda: f"edge-runtime/{_hostname()}")
    retain_events: bool = False
    keepalive: int = 30  # seconds; the broker sends the last will after 1.5x this without traffic
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    event_names: list[str] = field(default_factory=list)  # event entities announced to Home Assistant
    device_name: str = field(default_factory=lambda: f"edge-runtime {_hostname()}")
    node_id: str | None = None  # Home Assistant node id; default: slug(client_id)
    max_queued: int = 1000  # events waiting while the broker is away; more are dropped (counted)
    reconnect_min_delay: int = 1  # seconds, doubled per failed attempt ...
    reconnect_max_delay: int = 60  # ... up to this

    def __post_init__(self) -> None:
        problems = []
        if not self.host:
            problems.append("host is empty")
        if not 0 < int(self.port) < 65536:
            problems.append(f"port {self.port} is not in 1..65535")
        if self.qos not in (0, 1, 2):
            problems.append(f"qos {self.qos} is not 0, 1 or 2")
        if int(self.keepalive) < 1:
            problems.append(f"keepalive {self.keepalive} must be >= 1 second")
        for key in ("topic_prefix", "discovery_prefix"):
            v = getattr(self, key)
            if not v.strip("/") or any(c in v for c in "+#\0"):
                problems.append(f"{key} {v!r} must be a non-empty topic without + or #")
        if int(self.max_queued) < 1:
            problems.append(f"max_queued {self.max_queued} must be >= 1")
        if not 0 < int(self.reconnect_min_delay) <= int(self.reconnect_max_delay):
            problems.append("reconnect delays must satisfy 0 < reconnect_min_delay <= reconnect_max_delay")
        if self.password is not None and self.username is None:
            problems.append("password given without username")
        if problems:
            raise ValueError("mqtt: " + "; ".join(problems))
        self.topic_prefix = self.topic_prefix.strip("/")
        self.discovery_prefix = self.discovery_prefix.strip("/")

    @property
    def use_tls(self) -> bool:
        return bool(self.tls or self.ca_file or self.cert_file)


def _version() -> str:
    from .. import __version__

    return __version__


class MqttSink(Sink):
    """Publishes Events to MQTT. See the module docstring for topics and payloads."""

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, metrics: Metrics | None = None) -> None:
        super().__init__(metrics)
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.cfg = cfg
        self.node_id = slug(cfg.node_id or cfg.client_id)
        self.availability_topic = f"{cfg.topic_prefix}/availability"
        self._mqtt = mqtt
        self._q: queue.Queue[Event | object] = queue.Queue(maxsize=cfg.max_queued)
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._changed = threading.Condition()  # notified when connected or closing
        self._closed = False
        self._ever_connected = False
        self._warned: str | None = None
        self.last_error: str | None = None

        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                        clean_session=True, protocol=mqtt.MQTTv311)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.use_tls:
            try:
                c.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                raise SinkError(f"mqtt: cannot set up TLS (ca_file={cfg.ca_file}, cert_file={cfg.cert_file}, "
                                f"key_file={cfg.key_file}): {e}; check the files") from e
            if cfg.tls_insecure:
                c.tls_insecure_set(True)
        c.will_set(self.availability_topic, "offline", qos=1, retain=True)
        c.reconnect_delay_set(cfg.reconnect_min_delay, cfg.reconnect_max_delay)
        # paho's own bound, a safety net: the worker only hands events over while connected
        c.max_queued_messages_set(cfg.max_queued + 64)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        self.client = c
        try:
            c.connect_async(cfg.host, int(cfg.port), keepalive=int(cfg.keepalive))
        except (OSError, ValueError) as e:
            raise SinkError(f"mqtt: cannot connect to {cfg.host}:{cfg.port}: {e}") from e
        c.loop_start()
        self._worker = threading.Thread(target=self._run, name="edge-mqtt-sink", daemon=True)
        self._worker.start()

    # -- topics and payloads ---------------------------------------------------------------
    def event_topic(self, event_name: str) -> str:
        return f"{self.cfg.topic_prefix}/event/{slug(event_name)}"

    def discovery_topic(self, event_name: str) -> str:
        return f"{self.cfg.discovery_prefix}/event/{self.node_id}/{slug(event_name)}/config"

    def discovery_payload(self, event_name: str) -> dict[str, Any]:
        """Home Assistant MQTT discovery config of an ``event`` entity for one event name."""
        version = _version()
        return {
            "name": event_name,
            "unique_id": f"{self.node_id}_{slug(event_name)}",
            "state_topic": self.event_topic(event_name),
            "event_types": [event_name],
            "qos": self.cfg.qos,
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [self.node_id],
                "name": self.cfg.device_name,
                "manufacturer": "edge-runtime",
                "model": "edge-runtime recognition daemon",
                "sw_version": version,
            },
            "origin": {"name": "edge-runtime", "sw_version": version},
        }

    @staticmethod
    def event_payload(event: Event) -> str:
        return json.dumps({"event_type": event.name, **event.to_dict()}, separators=(",", ":"), default=str)

    # -- state -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "broker": f"{self.cfg.host}:{self.cfg.port}",
                "queued": self._q.qsize(), "dropped": self.dropped, "last_error": self.last_error}

    # -- paho callbacks (paho's network thread) --------------------------------------------
    def _warn_once(self, msg: str) -> None:
        self.last_error = msg
        if msg != self._warned:
            self._warned = msg
            log.warning("%s", msg)
        else:
            log.debug("%s", msg)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._warn_once(f"mqtt: {self.cfg.host}:{self.cfg.port} refused the connection: {reason_code}; "
                            "check username / password / client id; retrying")
            return
        q = self.cfg.qos if self.cfg.qos > 0 else 1  # availability and discovery should arrive
        client.publish(self.availability_topic, "online", qos=q, retain=True)
        if self.cfg.discovery:
            for name in dict.fromkeys(self.cfg.event_names):
                client.publish(self.discovery_topic(name), json.dumps(self.discovery_payload(name)), qos=q,
                               retain=True)
        log.info("mqtt: %s %s:%s as %s", "reconnected to" if self._ever_connected else "connected to",
                 self.cfg.host, self.cfg.port, self.cfg.client_id)
        self._ever_connected = True
        self._warned = None
        self.last_error = None
        with self._changed:
            self._connected.set()
            self._changed.notify_all()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._warn_once(f"mqtt: cannot reach {self.cfg.host}:{self.cfg.port}; retrying "
                        f"(events wait, up to {self.cfg.max_queued})")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._closing.is_set():
            self._warn_once(f"mqtt: lost the connection to {self.cfg.host}:{self.cfg.port} ({reason_code}); "
                            "reconnecting")

    # -- the sink --------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        if self._closing.is_set():
            self._drop(why="sink is closed")
            return
        try:
            self._q.put_nowait(event)
        except queue.Full:
            self._drop(why=f"{self.cfg.max_queued} events already wait for the broker at "
                           f"{self.cfg.host}:{self.cfg.port}")

    def _hand_over(self, event: Event) -> None:
        rc = self.client.publish(self.event_topic(event.name), self.event_payload(event), qos=self.cfg.qos,
                                 retain=self.cfg.retain_events).rc
        mqtt = self._mqtt
        if rc == mqtt.MQTT_ERR_QUEUE_SIZE or (self.cfg.qos == 0 and rc != mqtt.MQTT_ERR_SUCCESS):
            self._drop(why=f"paho refused the message ({mqtt.error_string(rc)})")

    def _run(self) -> None:
        while True:
            event = self._q.get()  # blocks until publish() or close() puts something
            if event is _WAKE:
                if self._closing.is_set() and self._q.empty():
                    return
                continue
            with self._changed:  # blocks while the broker is away, until it is back or the sink closes
                self._changed.wait_for(lambda: self._connected.is_set() or self._closing.is_set())
            if self._connected.is_set():
                try:
                    self._hand_over(event)
                except Exception:  # never let one bad event kill the thread
                    log.exception("mqtt: cannot publish event %r", getattr(event, "name", event))
                    self._drop()
                if self._closing.is_set() and self._q.empty():
                    return
            else:  # closing while the broker is away: what waits is lost
                self._drop(1 + self._drain(), why="closed while the broker was away")
                return

    def _drain(self) -> int:
        """Empty the queue; the number of events that were in it."""
        n = 0
        while True:
            try:
                n += self._q.get_nowait() is not _WAKE
            except queue.Empty:
                return n

    def close(self, timeout: float = 1.0) -> None:
        """Hand over what waits (while connected), publish ``offline`` (retained), disconnect.

        Returns within about ``timeout`` seconds even when the broker is away.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        with self._changed:
            self._closing.set()
            self._changed.notify_all()
        try:  # wakes a worker blocked on the empty queue (a full one keeps it busy anyway)
            self._q.put_nowait(_WAKE)
        except queue.Full:
            pass
        # the worker drains the queue while connected; what it cannot hand over, it counts as dropped
        self._worker.join(max(0.0, deadline - time.monotonic() - 0.3))
        if self._connected.is_set():
            q = self.cfg.qos if self.cfg.qos > 0 else 1
            info = self.client.publish(self.availability_topic, "offline", qos=q, retain=True)
            try:
                info.wait_for_publish(max(0.05, deadline - time.monotonic() - 0.1))
            except (ValueError, RuntimeError):
                pass
        self._connected.clear()  # the worker, if still busy, stops handing over (and counts the rest)
        self.client.disconnect()
        stopper = threading.Thread(target=self.client.loop_stop, name="edge-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))
