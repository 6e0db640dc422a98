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
  config of one ``event`` entity per configured event name (see :meth:`Topics.discovery_payload`).

Every event is first stored in the sink's spool (:mod:`edge_runtime.spool`): an SQLite file in
the state directory (``spool_path``), or the same queue in memory when there is none.
:meth:`MqttSink.publish` only appends to it (durable when it returns, one fsync) and wakes the
sink's own thread (a :class:`Relay`), which hands stored events to paho oldest first, at most
``INFLIGHT`` at a time, while connected (it blocks, without polling, until an event, an acknowledgement, the broker
or close() wakes it). A row is deleted only when paho reports the broker's acknowledgement
(``on_publish``: PUBACK at QoS 1, PUBCOMP at QoS 2) for its message id. paho reconnects by itself
(``reconnect_delay_set``) and re-sends what it had in flight; a restarted daemon sends what its
spool still holds, in order, before anything newer. So delivery is at least once: consumers drop
duplicates by the event's ``id``. Beyond the spool's size, age or (in memory) ``max_queued``
limit the oldest events are dropped and counted (``edge_spool_dropped_total``, also in
``edge_sink_dropped_total``). Closing never discards a stored event; without a spool file, what
waits in memory when the sink closes is lost and counted.

The pieces: :class:`Topics` (names and payloads, no network), :func:`make_client` (the paho
client: credentials, TLS, last will, reconnect delays), :class:`Relay` (spool to paho and the
in-flight bookkeeping) and :class:`MqttSink`, which ties them to paho's connection callbacks.
paho-mqtt is imported when a sink is made, so :class:`MqttConfig` can be imported without it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..spool import Spool, SpoolError
from . import Sink, SinkError
from .mqtt_settings import MqttConfig

if TYPE_CHECKING:
    from ..events import Event
    from ..observe.metrics import Metrics

log = logging.getLogger(__name__)

_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
INFLIGHT = 64  # events handed to paho and not yet acknowledged, at most


def slug(name: str) -> str:
    """A topic level / Home Assistant id from any name: only ``[A-Za-z0-9_-]``."""
    return _SLUG.sub("_", name).strip("_") or "_"


def open_spool(cfg: MqttConfig) -> Spool:
    """The sink's spool: the file at ``cfg.spool_path`` (made if missing), else one in memory.

    ``edge-runtime check`` opens it the same way ``run`` does; SinkError is one line.
    """
    try:
        if cfg.spool_path is None:
            return Spool(":memory:", cfg.spool_max_bytes, cfg.spool_max_age_s, max_rows=cfg.max_queued)
        return Spool(cfg.spool_path, cfg.spool_max_bytes, cfg.spool_max_age_s)
    except SpoolError as e:
        raise SinkError(
            f"sinks.mqtt spool: {e} (the folder is [sinks.mqtt] spool_dir, else $STATE_DIRECTORY; "
            "spool = false turns the spool off)"
        ) from None


def _version() -> str:
    from .. import __version__

    return __version__


def event_payload(event: Event) -> str:
    """The JSON of one event: ``{"event_type": <event>, **event.to_dict()}``."""
    return json.dumps({"event_type": event.name, **event.to_dict()}, separators=(",", ":"), default=str)


class Topics:
    """The sink's topics and what it announces on them (Home Assistant discovery included); no network."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.cfg = cfg
        self.node_id = slug(cfg.node_id or cfg.client_id)
        self.availability = f"{cfg.topic_prefix}/availability"

    def event(self, event_name: str) -> str:
        return f"{self.cfg.topic_prefix}/event/{slug(event_name)}"

    def discovery(self, event_name: str) -> str:
        return f"{self.cfg.discovery_prefix}/event/{self.node_id}/{slug(event_name)}/config"

    def discovery_payload(self, event_name: str) -> dict[str, Any]:
        """Home Assistant MQTT discovery config of an ``event`` entity for one event name."""
        version = _version()
        return {
            "name": event_name,
            "unique_id": f"{self.node_id}_{slug(event_name)}",
            "state_topic": self.event(event_name),
            "event_types": [event_name],
            "qos": self.cfg.qos,
            "availability_topic": self.availability,
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

    def announcements(self) -> list[tuple[str, str]]:
        """(topic, payload) published retained on every connect: ``online``, then each discovery config."""
        out = [(self.availability, "online")]
        if self.cfg.discovery:
            names = dict.fromkeys(self.cfg.event_names)
            out += [(self.discovery(n), json.dumps(self.discovery_payload(n))) for n in names]
        return out


def make_client(cfg: MqttConfig, will_topic: str) -> Any:
    """A paho client for ``cfg`` (credentials, TLS, ``offline`` as the retained last will, reconnect delays)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=cfg.client_id,
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    if cfg.username is not None:
        c.username_pw_set(cfg.username, cfg.password)
    if cfg.use_tls:
        try:
            c.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise SinkError(
                f"mqtt: cannot set up TLS (ca_file={cfg.ca_file}, cert_file={cfg.cert_file}, "
                f"key_file={cfg.key_file}): {e}; check the files"
            ) from e
        if cfg.tls_insecure:
            c.tls_insecure_set(True)
    c.will_set(will_topic, "offline", qos=1, retain=True)
    c.reconnect_delay_set(cfg.reconnect_min_delay, cfg.reconnect_max_delay)
    # no paho queue bound: the relay keeps at most INFLIGHT events in paho (plus the few
    # availability / discovery messages of each connect)
    return c


class Relay:
    """The sink's thread: stored events to paho, oldest first, at most ``INFLIGHT`` unacknowledged.

    It blocks, without polling, on ``changed`` until an event is stored or acknowledged, the
    connection comes or goes, or :meth:`stop` (then it ends once nothing more can or need be sent,
    or at the deadline). A spool row is deleted only when paho reports the broker's acknowledgement
    of its message id (:meth:`acked`). ``publish(topic, payload)`` hands one message to paho;
    ``warn`` (a message), ``drop`` (the sink's count) and ``gauge`` (the spool's size) report.
    """

    def __init__(
        self,
        spool: Spool,
        publish: Callable[[str, bytes], Any],
        warn: Callable[[str], None],
        drop: Callable[..., None],
        gauge: Callable[[], None],
    ) -> None:
        self.spool = spool
        self._publish, self._warn, self._drop, self._gauge = publish, warn, drop, gauge
        self.connected = threading.Event()
        self.closing = threading.Event()
        # notified when connected, closing, an event is stored or acknowledged; guards _acked
        self.changed = threading.Condition()
        self._acked: list[int] = []  # message ids paho reported acknowledged (paho's thread appends)
        self._inflight: dict[int, int] = {}  # message id -> spool row id (the relay's thread only)
        self._sent_upto = 0  # the last spool row id handed to paho (the relay's thread only)
        self._close_by = math.inf  # monotonic deadline for stop()
        self.thread = threading.Thread(target=self._run, name="edge-mqtt-sink", daemon=True)

    def wake(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def acked(self, mid: int) -> None:
        # paho's thread, holding paho's message lock: record and wake, nothing that could wait on the sink
        with self.changed:
            self._acked.append(mid)
            self.changed.notify_all()

    def stop(self, close_by: float) -> None:
        """Hand over what is stored (while connected) and wait for its acknowledgements until ``close_by``."""
        with self.changed:
            self._close_by = close_by
            self.closing.set()
            self.changed.notify_all()

    def apply_acks(self) -> None:
        """Delete the rows acknowledged so far (SpoolError: they stay, sent again after a restart)."""
        with self.changed:
            mids, self._acked = self._acked, []
        rows = [r for r in (self._inflight.pop(m, None) for m in mids) if r is not None]  # others: availability...
        if rows:
            self.spool.ack(rows)
            self._gauge()

    def _unsent(self) -> bool:
        return self.spool.last_id > self._sent_upto

    def _done(self) -> bool:
        """Closing, and nothing more can or need be sent."""
        return self.closing.is_set() and (
            not self.connected.is_set()
            or time.monotonic() >= self._close_by
            or (not self._inflight and not self._unsent())
        )

    def _ready(self) -> bool:
        """Whether the relay's thread has something to do (called under ``changed``)."""
        if self._acked or self._done():
            return True
        return self.connected.is_set() and len(self._inflight) < INFLIGHT and self._unsent()

    def _run(self) -> None:
        while True:
            with self.changed:  # blocks until there is something to do
                timeout = max(0.0, self._close_by - time.monotonic()) if self.closing.is_set() else None
                self.changed.wait_for(self._ready, timeout)
            try:
                self.apply_acks()
            except SpoolError as e:  # those rows stay: sent again after a restart (at least once)
                self._warn(f"mqtt: {e}")
            if self._done():
                return
            if not self.connected.is_set():
                continue
            try:
                self._hand_over()
            except Exception as e:  # never let the thread die: say why, try again in a second (or on close)
                if isinstance(e, SpoolError):
                    self._warn(f"mqtt: {e}")
                else:
                    log.exception("mqtt: cannot publish from the spool")
                self.closing.wait(1.0)

    def _hand_over(self) -> None:
        """Hand the next stored events to paho, oldest first, up to INFLIGHT unacknowledged."""
        room = INFLIGHT - len(self._inflight)
        if room <= 0:
            return
        last = self.spool.last_id  # every row up to here is committed (or removed by the limits)
        rows = self.spool.pending(self._sent_upto, room)
        for row in rows:
            self._sent_upto = row.id
            try:  # paho keeps a message it could not send yet (rc NO_CONN) and sends it on reconnect
                info = self._publish(row.topic, row.payload)
            except (ValueError, TypeError) as e:  # a row paho will never take (it would block all behind it)
                self.spool.ack([row.id])
                self._drop(why=f"paho refused a stored event ({e})")
                continue
            self._inflight[info.mid] = row.id
        if len(rows) < room:  # nothing else is stored up to `last`: ids the limits removed are skipped
            self._sent_upto = max(self._sent_upto, last)


class MqttSink(Sink):
    """Publishes Events to MQTT. See the module docstring for topics and payloads."""

    name = "mqtt"
    event_payload = staticmethod(event_payload)

    def __init__(self, cfg: MqttConfig, metrics: Metrics | None = None) -> None:
        super().__init__(metrics)
        self.cfg = cfg
        self.topics = Topics(cfg)
        self.node_id, self.availability_topic = self.topics.node_id, self.topics.availability
        self._closed = False
        self._ever_connected = False
        self._warned: str | None = None
        self.last_error: str | None = None
        c = self.client = make_client(cfg, self.availability_topic)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self.spool = open_spool(cfg)
        self._relay = Relay(
            self.spool,
            lambda topic, payload: c.publish(topic, payload, qos=cfg.qos, retain=cfg.retain_events),
            self._warn_once,
            self._drop,
            self._gauge,
        )
        self._connected = self._relay.connected
        try:
            self._spool_dropped(self.spool.prune())  # rows left from before that are over the limits now
            c.connect_async(cfg.host, int(cfg.port), keepalive=int(cfg.keepalive))
        except SpoolError as e:
            self.spool.close()
            raise SinkError(f"sinks.mqtt spool: {e}") from None
        except (OSError, ValueError) as e:
            self.spool.close()
            raise SinkError(f"mqtt: cannot connect to {cfg.host}:{cfg.port}: {e}") from e
        if self.spool.count:
            log.info(
                "mqtt: %d events left in the spool %s from before; sending them first",
                self.spool.count,
                self.spool.path,
            )
        self._gauge()
        c.loop_start()
        self._relay.thread.start()

    # -- state -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "spool": None if self.spool.in_memory else self.spool.path,
            "queued": self.spool.count,
            "spool_dropped": self.spool.dropped,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

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
            self._warn_once(
                f"mqtt: {self.cfg.host}:{self.cfg.port} refused the connection: {reason_code}; "
                "check username / password / client id; retrying"
            )
            return
        q = self.cfg.qos if self.cfg.qos > 0 else 1  # availability and discovery should arrive
        for topic, payload in self.topics.announcements():
            client.publish(topic, payload, qos=q, retain=True)
        log.info(
            "mqtt: %s %s:%s as %s",
            "reconnected to" if self._ever_connected else "connected to",
            self.cfg.host,
            self.cfg.port,
            self.cfg.client_id,
        )
        self._ever_connected = True
        self._warned = None
        self.last_error = None
        with self._relay.changed:
            self._connected.set()
            self._relay.changed.notify_all()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        where = (
            f"in memory, up to {self.cfg.max_queued}"
            if self.spool.in_memory
            else f"in {self.spool.path}, up to {self.cfg.spool_max_bytes / 2**20:g} MiB"
        )
        self._warn_once(f"mqtt: cannot reach {self.cfg.host}:{self.cfg.port}; retrying (events wait {where})")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._relay.closing.is_set():
            self._warn_once(
                f"mqtt: lost the connection to {self.cfg.host}:{self.cfg.port} ({reason_code}); reconnecting"
            )
        self._relay.wake()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._relay.acked(mid)

    # -- the sink --------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        if self._relay.closing.is_set():
            self._drop(why="sink is closed")
            return
        try:
            dropped = self.spool.append(self.topics.event(event.name), event_payload(event))
        except SpoolError as e:
            self._drop(why=f"cannot store it: {e}")
            return
        self._spool_dropped(dropped)
        self._gauge()
        self._relay.wake()

    def _spool_dropped(self, n: int) -> None:
        if n:
            limits = (
                f"max_queued {self.cfg.max_queued} in memory"
                if self.spool.in_memory
                else f"spool_max_mb {self.cfg.spool_max_bytes / 2**20:g}, spool_max_age_days "
                f"{self.cfg.spool_max_age_s / 86400:g}"
            )
            self._drop(n, why=f"the spool is over its limits ({limits}): the oldest events go")
            if self._metrics is not None:
                self._metrics.spool_dropped(self.name, n)

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.spool_pending(self.name, self.spool.count)

    def close(self, timeout: float = 1.0) -> None:
        """Hand over what is stored (while connected) and wait for its acknowledgements, publish ``offline``
        (retained), disconnect. With a spool file, what is not acknowledged stays in it for the next start.

        Returns within about ``timeout`` seconds even when the broker is away.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        self._relay.stop(deadline - 0.3)
        self._relay.thread.join(max(0.0, deadline - time.monotonic()))
        if self._connected.is_set():
            q = self.cfg.qos if self.cfg.qos > 0 else 1
            info = self.client.publish(self.availability_topic, "offline", qos=q, retain=True)
            try:
                info.wait_for_publish(max(0.05, deadline - time.monotonic() - 0.1))
            except (ValueError, RuntimeError):
                pass
        self._connected.clear()
        self.client.disconnect()
        stopper = threading.Thread(target=self.client.loop_stop, name="edge-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))
        if not self._relay.thread.is_alive():
            self._close_spool()

    def _close_spool(self) -> None:
        """After the relay ended: apply the acknowledgements that came while closing, say what is left, close."""
        try:
            self._relay.apply_acks()
        except SpoolError as e:
            log.warning("mqtt: %s", e)
        left = self.spool.count
        if left and self.spool.in_memory:
            self._drop(left, why="closed while the broker was away (no spool file: set [sinks.mqtt] spool_dir)")
        elif left:
            log.info("mqtt: %d events stay in the spool %s for the next start", left, self.spool.path)
        self.spool.close()
