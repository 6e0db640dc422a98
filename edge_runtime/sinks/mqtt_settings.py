"""The ``[sinks.mqtt]`` table -> :class:`~edge_runtime.sinks.mqtt.MqttConfig` -> an :class:`MqttSink`.

:func:`mqtt_config` is shared by ``run`` (through the builder registered here) and ``check``, so
both take the same settings and the same spool. The MQTT sink opens first: an event is in its
spool before any other sink has it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import SinkError, SinkSetup, register

if TYPE_CHECKING:
    from ..config import Config, MqttSinkConfig
    from .mqtt import MqttConfig, MqttSink


def mqtt_config(cfg: Config, event_names: list[str] | tuple[str, ...] = (), environ=None) -> MqttConfig:
    """The MQTT sink's settings from ``[sinks.mqtt]``, for ``run`` and ``check`` alike; SinkError is one line.

    The spool is on when ``spool = true``, or unset with qos >= 1 and a folder for it:
    ``spool_dir``, else the first of ``$STATE_DIRECTORY`` (systemd sets it from ``StateDirectory=``).
    """
    from .mqtt import SPOOL_FILE, MqttConfig

    m = cfg.sinks.mqtt
    if m is None:
        raise SinkError("there is no [sinks.mqtt] table to take MQTT settings from")
    env = os.environ if environ is None else environ
    kw = {
        k: getattr(m, k)
        for k in (
            "host",
            "port",
            "username",
            "password",
            "tls",
            "ca_file",
            "cert_file",
            "key_file",
            "tls_insecure",
            "qos",
            "keepalive",
            "discovery",
            "discovery_prefix",
        )
    }
    for key in ("client_id", "topic_prefix"):  # unset: the host's; set (even empty): checked as given
        if getattr(m, key) is not None:
            kw[key] = getattr(m, key)
    folder = m.spool_dir or (env.get("STATE_DIRECTORY") or "").split(":")[0] or None
    on = m.spool if m.spool is not None else (m.qos >= 1 and folder is not None)
    if on:
        if folder is None:
            raise SinkError(
                "sinks.mqtt.spool: no folder for the spool: set [sinks.mqtt] spool_dir, or run under "
                "systemd with StateDirectory=, or set spool = false"
            )
        kw["spool_path"] = str(Path(folder) / SPOOL_FILE)
    kw.update(
        spool_max_bytes=max(1, round(m.spool_max_mb * 2**20)),
        spool_max_age_s=m.spool_max_age_days * 86400.0,
        event_names=list(event_names),
    )
    try:
        return MqttConfig(**kw)
    except ValueError as e:
        raise SinkError(f"sinks.{e}") from None


@register("mqtt", order=0)  # first: an event is in the spool before any other sink has it
def build(_: MqttSinkConfig, setup: SinkSetup) -> MqttSink:
    from .mqtt import MqttSink

    return MqttSink(mqtt_config(setup.cfg, setup.event_names), metrics=setup.metrics)
