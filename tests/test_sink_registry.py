"""The sink registry: each sink module registers a builder for its [sinks.<table>]."""

from __future__ import annotations

import pytest

from edge_runtime import sinks
from edge_runtime.config import Config, JsonlConfig, SinksConfig
from edge_runtime.sinks import Sink, SinkError, SinkSetup, open_sinks, register
from edge_runtime.sinks.jsonl import JsonlSink


def test_builders_are_registered_by_their_modules_mqtt_first():
    tables = [t for t, _ in sinks.builders()]
    assert tables[:2] == ["mqtt", "jsonl"]


def test_only_the_configured_tables_are_built(tmp_path):
    cfg = Config(sinks=SinksConfig(jsonl=JsonlConfig(path=str(tmp_path / "ev.jsonl"))))
    opened = open_sinks(SinkSetup(cfg))
    try:
        assert [type(s) for s in opened] == [JsonlSink]
    finally:
        for s in opened:
            s.close()


def test_a_failing_builder_closes_the_sinks_already_open(tmp_path, monkeypatch):
    closed = []

    class Probe(Sink):
        name = "probe"

        def close(self) -> None:
            closed.append(self.name)

    monkeypatch.setattr(sinks, "_BUILDERS", dict(sinks._BUILDERS))
    register("jsonl", order=1)(lambda c, setup: Probe())

    def broken(c, setup):
        raise SinkError("sinks.http: broken")

    register("http", order=2)(broken)
    sinks.builders()  # the modules are imported already: nothing re-registers
    cfg = Config(sinks=SinksConfig(jsonl=JsonlConfig(path="-")))
    cfg.sinks.http = object()
    with pytest.raises(SinkError, match="broken"):
        open_sinks(SinkSetup(cfg))
    assert closed == ["probe"]
