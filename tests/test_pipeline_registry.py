"""The pipeline registry: a modality is one module that registers its pipeline, with its own config
sections; the daemon loads, checks, runs, fuses and reports it like the shipped ones."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import wait_until

from edge_runtime import config, sources
from edge_runtime.events import Decision
from edge_runtime.pipelines import runner
from edge_runtime.schema import check
from edge_runtime.sources import Source, register_kind


def test_the_shipped_pipelines_are_registered_by_their_modules():
    assert [(k.name, k.modality, k.source_name) for k in runner.kinds().values()] == [
        ("vision", "vision", "camera"),
        ("audio", "audio", "microphone"),
        ("asr", "speech", "microphone"),
    ]


@dataclass
class TickerConfig:
    period_s: float = field(default=0.02, metadata=check(lambda v: 0 < v <= 1, "must be more than 0 and at most 1"))


@dataclass
class ClockConfig:
    every: int = field(default=3, metadata=check(lambda v: v >= 1, "must be 1 or more"))


class Ticker(Source):
    """Counts up every period_s: a source with the microphone's read(timeout)."""

    noun = "ticker"

    def __init__(self, name: str, period_s: float) -> None:
        super().__init__(name)
        self.period_s, self.n = period_s, 0

    def start(self) -> Ticker:
        self._mark_online()
        return self

    def read(self, timeout: float | None = 1.0) -> int | None:
        if self._stop.wait(self.period_s):
            return None
        self.n += 1
        return self.n


class Counter:
    """The "model": says "tick" on every Nth count. A pipeline's model has ``labels``, ``manifest``
    and the ``engine`` it runs on; this one holds the shipped keyword model's engine, for the
    daemon's report of where each model runs."""

    labels = ["tick"]

    def __init__(self, every: int) -> None:
        from edge_runtime.defaults import model_dir
        from edge_runtime.engines import open_engine
        from edge_runtime.manifest import load

        self.every = every
        self.manifest, folder = load(model_dir("kws"))
        self.engine = open_engine(self.manifest, folder, "litert")


class ClockPipeline(runner.Pipeline):
    name, source_name, reads, order = "clock", "ticker", "ticks", 50
    config, source_config = ClockConfig, TickerConfig

    @staticmethod
    def load_model(section: Any) -> Any:
        return Counter(section.every)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.stats.beat()
            n = self.source.read(timeout=runner.READ_TIMEOUT_S)
            if n is None or n % self.model.every:
                continue
            t = time.monotonic_ns()
            self.observe(t)
            self.stats.decisions += 1
            self.emit(Decision(self.name, "tick", 1.0, t, t, self.source_name, {"n": n}))


@pytest.fixture
def clock_registered(monkeypatch):
    runner.kinds()  # the shipped modules are imported first: what they register outlives the test
    sources._import_source_modules()
    monkeypatch.setattr(runner, "_REGISTERED", list(runner._REGISTERED))
    monkeypatch.setattr(sources, "_KINDS", list(sources._KINDS))
    runner.register(ClockPipeline)
    register_kind("ticker", "ticker", claims=lambda c: c.period_s, key="period_s")(
        lambda name, c, period: Ticker(name, period)
    )


def test_a_pipeline_with_its_own_sections_is_checked_run_and_fused(tmp_path, clock_registered):
    from edge_runtime.service import Daemon

    with pytest.raises(config.ConfigError, match=r"^edge.toml:1: clock: needs a \[ticker\] section to read ticks from"):
        config.parse("[clock]\n", "edge.toml")
    with pytest.raises(config.ConfigError, match=r"^edge.toml:2: clock.every: must be 1 or more"):
        config.parse("[clock]\nevery = 0\n[ticker]\n", "edge.toml")
    with pytest.raises(config.ConfigError, match=r"one of \[vision\] .* or \[clock\] \(with \[ticker\]\)"):
        config.parse("[runtime]\n", "edge.toml")
    events = tmp_path / "ev.jsonl"
    cfg = config.parse(
        "[clock]\nevery = 2\n[ticker]\nperiod_s = 0.02\n"
        '[[fusion.rules]]\nname = "tock"\nall = [{ modality = "clock", label = "tick" }]\nwithin_s = 1.0\n'
        "cooldown_s = 0.0\n"
        f"[sinks.jsonl]\npath = '{events}'\n",
        str(tmp_path / "edge.toml"),
    )
    daemon = Daemon(cfg)
    daemon.start()
    try:
        assert wait_until(lambda: events.exists() and events.read_text().count('"event":"tock"') >= 3, timeout=30)
        status = daemon.status()
    finally:
        daemon.stop()
    assert status["pipelines"]["clock"]["decisions"] >= 3 and status["sources"]["ticker"]["online"]
    got = [json.loads(line) for line in events.read_text().splitlines()]
    assert {e["event"] for e in got} == {"tock", "tick"}  # the rule's event, and the decision passed through
    assert all(d["modality"] == "clock" and d["n"] % 2 == 0 for e in got for d in e["decisions"])
