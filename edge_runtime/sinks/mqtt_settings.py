"""The ``[sinks.mqtt]`` table: :class:`MqttConfig`, declared once, and the builder of an :class:`MqttSink`.

The table is loaded into :class:`MqttConfig` like every other config table (its checks name the
key and line); the daemon then adds what the file does not say (:func:`mqtt_config`: the spool's
file, the event names to announce). :func:`mqtt_config` is shared by ``run`` (through the builder
registered here) and ``check``, so both take the same settings and the same spool. The MQTT
sink opens first: an event is in its spool before any other sink has it.

Nothing here imports paho-mqtt.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..schema import SchemaError
from . import SinkError, SinkSetup, register

if TYPE_CHECKING:
    from ..config import Config
    from .mqtt import MqttSink

SPOOL_FILE = "mqtt-spool.sqlite3"  # in the state directory
MAX_SPOOL_MB = 100_000
MAX_SPOOL_DAYS = 3650
INTERNAL = {"internal": True}  # set by the daemon or by code, not a key of the table
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


def hostname() -> str:
    name = socket.gethostname().split(".", 1)[0] or "localhost"
    return _SLUG.sub("-", name)


def _topic_problem(v: str) -> str | None:
    if not v.strip("/") or any(c in v for c in "+#\0") or v != v.strip("/") or "//" in v:
        return f"must be a non-empty topic without + or #, empty levels, or a leading or trailing /, got {v!r:.80}"
    return None


@dataclass
class MqttConfig:
    """The MQTT sink's settings. A key left out of the table takes the default here (``client_id``
    and ``topic_prefix``: from the host's name); a key that is set is checked as given."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = field(default_factory=lambda: f"edge-runtime-{hostname()}")
    username: str | None = None
    password: str | None = None
    tls: bool = False  # also on when ca_file or cert_file is given
    ca_file: str | None = None  # None with tls: the system's CA certificates
    cert_file: str | None = None  # client certificate (mutual TLS)
    key_file: str | None = None
    tls_insecure: bool = False  # do not check that the broker's certificate matches host
    qos: int = 1
    topic_prefix: str = field(default_factory=lambda: f"edge-runtime/{hostname()}")
    keepalive: int = 30  # seconds; the broker sends the last will after 1.5x this without traffic
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    # the on-disk spool (SQLite): unset = on when qos >= 1 and there is a folder for it
    spool: bool | None = None
    spool_dir: str | None = None  # unset: $STATE_DIRECTORY, which systemd sets from StateDirectory=
    spool_max_mb: float = 50.0  # stored topic + payload; beyond it the oldest events are dropped
    spool_max_age_days: float = 7.0  # older events are dropped
    # not keys of the table:
    spool_path: str | None = field(default=None, metadata=INTERNAL)  # None: the spool is in memory
    event_names: list[str] = field(default_factory=list, metadata=INTERNAL)  # announced to Home Assistant
    retain_events: bool = field(default=False, metadata=INTERNAL)
    device_name: str = field(default_factory=lambda: f"edge-runtime {hostname()}", metadata=INTERNAL)
    node_id: str | None = field(default=None, metadata=INTERNAL)  # Home Assistant node id; default: slug(client_id)
    max_queued: int = field(default=1000, metadata=INTERNAL)  # in-memory spool: beyond it the oldest are dropped
    reconnect_min_delay: int = field(default=1, metadata=INTERNAL)  # seconds, doubled per failed attempt ...
    reconnect_max_delay: int = field(default=60, metadata=INTERNAL)  # ... up to this

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise SchemaError((problem[0],), problem[1])

    @property
    def use_tls(self) -> bool:
        return bool(self.tls or self.ca_file or self.cert_file)

    @property
    def spool_max_bytes(self) -> int:
        return max(1, round(self.spool_max_mb * 2**20))

    @property
    def spool_max_age_s(self) -> float:
        return self.spool_max_age_days * 86400.0

    def _problem(self) -> tuple[str, str] | None:
        """(key, what is wrong with it) for the first problem, else None."""
        checks: list[tuple[str, bool, str]] = [
            ("host", not self.host, "is empty: give the broker's host name or address"),
            ("port", not 0 < self.port < 65536, f"must be a port number from 1 to 65535, got {self.port}"),
            ("qos", self.qos not in (0, 1, 2), f"must be 0, 1 or 2, got {self.qos}"),
            ("keepalive", not 1 <= self.keepalive <= 65535, f"must be from 1 to 65535 seconds, got {self.keepalive}"),
            (
                "spool_max_mb",
                not (math.isfinite(self.spool_max_mb) and 0.001 <= self.spool_max_mb <= MAX_SPOOL_MB),
                f"must be a size in MiB from 0.001 to {MAX_SPOOL_MB}, got {self.spool_max_mb}",
            ),
            (
                "spool_max_age_days",
                not (math.isfinite(self.spool_max_age_days) and 0 < self.spool_max_age_days <= MAX_SPOOL_DAYS),
                f"must be a number of days, more than 0 and at most {MAX_SPOOL_DAYS}, got {self.spool_max_age_days}",
            ),
            (
                "spool",
                self.qos == 0 and (self.spool or self.spool_path is not None),
                "needs qos 1 or 2 (at QoS 0 the broker acknowledges nothing): set qos = 1 or spool = false",
            ),
            (
                "spool_dir",
                self.spool_dir is not None and not self.spool_dir.strip(),
                "is empty: give a folder, or leave it out",
            ),
            ("password", self.password is not None and self.username is None, "is given without username"),
            ("max_queued", self.max_queued < 1, f"must be 1 or more, got {self.max_queued}"),
            (
                "reconnect_min_delay",
                not 0 < self.reconnect_min_delay <= self.reconnect_max_delay,
                "must be more than 0 and at most reconnect_max_delay",
            ),
        ]
        for key in ("topic_prefix", "discovery_prefix"):
            msg = _topic_problem(getattr(self, key))
            checks.append((key, msg is not None, msg or ""))
        for key, bad, msg in checks:
            if bad:
                return key, msg
        return self._tls_problem() if self.use_tls else None

    def _tls_problem(self) -> tuple[str, str] | None:
        """The CA and client certificate files loaded as the connection will load them (no network)."""
        import ssl

        if self.key_file and not self.cert_file:
            return "key_file", "is given without cert_file"
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            return (
                "ca_file" if self.ca_file else "cert_file",
                f"cannot set up TLS from ca_file={self.ca_file}, cert_file={self.cert_file}, "
                f"key_file={self.key_file} ({getattr(e, 'strerror', None) or e}); check the files",
            )
        return None


def mqtt_config(cfg: Config, event_names: list[str] | tuple[str, ...] = (), environ: Any = None) -> MqttConfig:
    """The ``[sinks.mqtt]`` settings with what the daemon adds, for ``run`` and ``check`` alike; SinkError is one line.

    The spool is on when ``spool = true``, or unset with qos >= 1 and a folder for it:
    ``spool_dir``, else the first of ``$STATE_DIRECTORY`` (systemd sets it from ``StateDirectory=``).
    """
    m = cfg.sinks.more.get("mqtt")
    if m is None:
        raise SinkError("there is no [sinks.mqtt] table to take MQTT settings from")
    env = os.environ if environ is None else environ
    folder = m.spool_dir or (env.get("STATE_DIRECTORY") or "").split(":")[0] or None
    on = m.spool if m.spool is not None else (m.qos >= 1 and folder is not None)
    if on and folder is None:
        raise SinkError(
            "sinks.mqtt.spool: no folder for the spool: set [sinks.mqtt] spool_dir, or run under "
            "systemd with StateDirectory=, or set spool = false"
        )
    spool_path = str(Path(folder) / SPOOL_FILE) if on and folder else None
    return dataclasses.replace(m, spool_path=spool_path, event_names=list(event_names))


@register("mqtt", config=MqttConfig, order=0)  # first: an event is in the spool before any other sink has it
def build(cfg: MqttConfig, setup: SinkSetup) -> MqttSink:
    from .mqtt import MqttSink

    return MqttSink(mqtt_config(setup.cfg, setup.event_names), metrics=setup.metrics)
