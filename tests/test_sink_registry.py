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


def test_a_sink_in_one_file_with_its_own_table_gets_the_daemon_s_events(tmp_path):
    """[sinks.webhook] (edge_runtime/sinks/webhook.py): declared, checked and built from that one file;
    the daemon on the sample photos POSTs its events to a real HTTP server on 127.0.0.1."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from conftest import ROOT, wait_until

    from edge_runtime import config
    from edge_runtime.service import Daemon

    got: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f'[camera]\nuri = "{ROOT / "edge_runtime/data/samples/images"}"\nfps = 20\nloop = true\n[vision]\n'
        with pytest.raises(config.ConfigError, match=r"sinks\.webhook\.url: must be an http\(s\) URL"):
            config.parse(base + '[sinks.webhook]\nurl = "ftp://x"\n', "edge.toml")
        with pytest.raises(config.ConfigError, match=r"sinks\.webhook\.queue_size: must be from 1 to 100000"):
            config.parse(base + '[sinks.webhook]\nurl = "http://x"\nqueue_size = 0\n', "edge.toml")
        cfg = config.parse(
            base + f'[sinks.webhook]\nurl = "http://127.0.0.1:{server.server_port}/events"\n',
            str(tmp_path / "edge.toml"),
        )
        daemon = Daemon(cfg)
        daemon.start()
        try:
            assert wait_until(lambda: len(got) >= 3, timeout=60), got
        finally:
            daemon.stop()
        labels = json.loads((ROOT / "edge_runtime/data/models/vision/manifest.json").read_text())["labels"]
        assert all(e["event"] in labels and e["decisions"][0]["modality"] == "vision" for e in got), got[:3]
    finally:
        server.shutdown()
