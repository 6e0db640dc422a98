"""The daemon: sources -> pipelines -> fusion -> sinks, on threads with bounded queues.

    camera --latest frame wins--> vision pipeline --Decision--+
                                                              +--> bounded queue --> fusion worker --> sinks
    microphone --lossless chunks--> audio pipeline --Decision-+

:class:`Daemon` builds the parts from the config and hands them to its :class:`Supervisor` side:
:class:`Models` (one per configured modality, loaded and checked against the fusion rules), one
:class:`~edge_runtime.pipelines.runner.Pipeline` per model (:mod:`edge_runtime.pipelines.runner`:
its source, read policy and stats), the :class:`~edge_runtime.fanin.FusionStage` (the queue, fusion
and event counts), the sinks (:func:`edge_runtime.sinks.open_sinks`) and the HTTP status server.
Each pipeline beats a heartbeat every loop; the systemd watchdog is pinged only while every
heartbeat is fresh, so a stuck inference stops the pings and systemd restarts the service
(:mod:`edge_runtime.supervisor`). SIGHUP reloads the config and models (the old ones keep serving
when that fails); SIGTERM/SIGINT stop within 2 s, flushing the sinks.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from .config import Config
from .events import Event
from .fanin import FusionStage
from .fusion import Fusion
from .manifest import ManifestError
from .pipelines.runner import Pipeline, PipelineStats, build_pipelines, kinds
from .redact import redact_all
from .sinks.mqtt_settings import mqtt_config
from .supervisor import Supervisor

if TYPE_CHECKING:
    from .observe.http import HttpServer

log = logging.getLogger(__name__)

__all__ = ["Daemon", "Models", "PipelineStats", "ServiceError", "mqtt_config"]


class ServiceError(Exception):
    """Something the user must fix before the daemon can run; one line."""


class Models:
    """Loaded models by modality (what `check` verifies and SIGHUP swaps atomically): ``models.vision``
    (an :class:`~edge_runtime.pipelines.vision.ImageClassifier`), ``models.audio`` (a
    :class:`~edge_runtime.pipelines.audio.KeywordSpotter`)..., None when that section is not configured."""

    def __init__(self, by_modality: dict[str, Any] | None = None) -> None:
        self.by_modality = dict(by_modality or {})

    def __getattr__(self, name: str) -> Any:  # only names the normal lookup did not find
        if name in kinds():
            return self.by_modality.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def load(cls, cfg: Config) -> Models:
        from .asr.grammar import GrammarError
        from .asr.lexicon import LexiconError
        from .engines import EngineError

        try:
            m = cls({k.name: k.load_model(cfg.section(k.name)) for k in kinds().values() if cfg.section(k.name)})
        except (ManifestError, EngineError, GrammarError, LexiconError) as e:
            raise ServiceError(str(e)) from None
        m._check_fusion_labels(cfg)
        return m

    def items(self) -> list[tuple[str, Any]]:
        """(modality, model) of each loaded model, in pipeline order."""
        return [(name, self.by_modality[name]) for name in kinds() if name in self.by_modality]

    def _check_fusion_labels(self, cfg: Config) -> None:
        """Every label fusion waits for is one the configured model can say (else the rule never fires)."""
        wanted = [
            (f"fusion.rules[{i}].all[{j}]", c.modality, c.label)
            for i, r in enumerate(cfg.fusion.rules)
            for j, c in enumerate(r.all)
        ]
        if cfg.fusion.weighted:
            wanted += [
                (f"fusion.weighted.labels.{event}", modality, label)
                for event, per in cfg.fusion.weighted.labels.items()
                for modality, label in per.items()
            ]
        section = {k.modality: k.name for k in kinds().values()}
        for where, modality, label in wanted:
            pipeline = self.by_modality.get(section[modality]) if modality in section else None
            if pipeline is None:
                raise ServiceError(
                    f"{where}: waits for {modality} {label!r}, but no [{section.get(modality, modality)}] model "
                    "is configured"
                )
            if label not in pipeline.labels:
                close = ", ".join([x for x in pipeline.labels if label.lower() in x.lower()][:5])
                raise ServiceError(
                    f"{where}: {label!r} is not a label of the {modality} model "
                    f"{pipeline.manifest.name!r}" + (f" (close: {close})" if close else "")
                )


class Daemon(Supervisor):
    """The whole board side; see the module docstring. ``sources`` (by source name: ``camera``,
    ``microphone``; already started) replace the ones the config describes; the daemon closes them at
    stop. ``clock`` (``monotonic()``, ``monotonic_ns()``) replaces :mod:`time` for heartbeats, health,
    rates and fusion."""

    def __init__(
        self, cfg: Config, notifier=None, metrics=None, *, sources: dict[str, Any] | None = None, clock: Any = time
    ) -> None:
        from .observe.metrics import FPS_WINDOW_S, Metrics

        super().__init__(notifier, clock)
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self._fps_window_s = FPS_WINDOW_S
        self._sources = dict(sources or {})
        self.models: Models | None = None
        self.pipelines: list[Pipeline] = []
        self.fusion_stage = FusionStage(
            Fusion(cfg.fusion, clock.monotonic_ns), cfg.runtime.queue_size, self.metrics, self._publish
        )
        self.sinks: list[Any] = []
        self.http: HttpServer | None = None
        self.last_reload: dict[str, Any] | None = None
        self._ready_at: float | None = None  # when start() had every part running

    # the parts, by the names the daemon has always had
    fusion = property(lambda self: self.fusion_stage.fusion)
    event_counts = property(lambda self: self.fusion_stage.event_counts)
    event_latencies_ms = property(lambda self: self.fusion_stage.event_latencies_ms)
    dropped_decisions = property(lambda self: self.fusion_stage.dropped_decisions)

    @property
    def stats(self) -> dict[str, PipelineStats]:
        return {p.name: p.stats for p in self.pipelines}

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        # Handlers first: a SIGHUP (systemd's ExecReload) or SIGTERM may come as soon as the HTTP
        # endpoint or READY=1 is out, and SIGHUP's default action would end the process.
        self.install_signals()
        self.notifier.status("loading models")
        self.models = Models.load(self.cfg)
        self._report_engines()
        # the sources before the sinks: "online" on MQTT and /status mean the sources are open
        self.pipelines = build_pipelines(self.cfg, self.models, self.fusion_stage.emit, self._sources, self.clock)
        self._open_sinks()
        for p in self.pipelines:
            self.spawn(p.name, functools.partial(p.run, self._stop))
        self.spawn("fusion", self.fusion_stage.run)
        self.notifier.ready(self._status_line())
        log.info("ready: %s", self._status_line())
        self._ready_at = self.clock.monotonic()  # duration_s counts from here, not from loading the models

    def reload(self) -> bool:
        """Re-read the config and reload the models; on any failure keep serving the old ones."""
        from .config import ConfigError
        from .config import load as load_config

        self.notifier.reloading()
        try:
            new_cfg = load_config(self.cfg.path)
            if [new_cfg.section(n) is None for n in kinds()] != [self.cfg.section(n) is None for n in kinds()]:
                raise ConfigError(f"adding or removing {' / '.join(f'[{n}]' for n in kinds())} needs a restart")
            models = Models.load(new_cfg)
        except (ConfigError, ServiceError) as e:
            log.error("reload failed, still serving the previous config and models: %s", e)
            self.last_reload = {"ok": False, "error": str(e), "at": time.time()}
            self.notifier.ready(f"reload failed: {e}")
            return False
        sections = (*dict.fromkeys(p.source_name for p in kinds().values()), "sinks")
        changed = [k for k in sections if new_cfg.section(k) != self.cfg.section(k)]
        old = self.models
        self.models, self.cfg = models, new_cfg  # one swap each: the workers re-read them
        self.fusion_stage.fusion = Fusion(new_cfg.fusion, self.clock.monotonic_ns)
        for p in self.pipelines:
            p.swap(getattr(models, p.name), new_cfg.section(p.name))
        self._report_engines()
        if changed:
            log.warning("reloaded models and fusion; %s changes take effect after a restart", ", ".join(changed))
        log.info("reloaded: %s", self._status_line())
        self.last_reload = {"ok": True, "error": None, "at": time.time()}
        self.notifier.ready(self._status_line())
        del old
        return True

    def stop(self) -> None:
        self._stop.set()
        self.notifier.stopping()
        for p in self.pipelines:
            p.close()
        # the pipelines first: their last decisions (a file's final keyword) still count; then the
        # end mark, behind every decision: fusion drains the queue, then stops
        self.join_workers(last="fusion", before_last=self.fusion_stage.end)
        for s in self.sinks:
            s.close()
        if self.http is not None:
            self.http.close()
        self.notifier.close()

    def finished(self, now: float) -> bool:
        d = self.cfg.runtime.duration_s
        since = self._started if self._ready_at is None else self._ready_at
        if d and now - since >= d:
            return True
        if self.pipelines and all(p.ended() for p in self.pipelines):  # every file source ended
            self._stop.wait(0.3)  # let the last decisions reach fusion
            return True
        return False

    # --- parts -------------------------------------------------------------------------
    def _open_sinks(self) -> None:
        from .sinks import SinkSetup, open_sinks

        self.sinks = open_sinks(SinkSetup(self.cfg, self.metrics, tuple(self._event_names())))
        if self.cfg.sinks.http:
            from .observe.http import HttpServer

            self.http = HttpServer.from_config(self.cfg.sinks.http, self.status, self.metrics).start()

    def _event_names(self) -> list[str]:
        names = [r.name for r in self.cfg.fusion.rules]
        if self.cfg.fusion.weighted:
            names += list(self.cfg.fusion.weighted.labels)
        if self.cfg.fusion.passthrough and self.models:
            for name, model in self.models.items():
                names += kinds()[name].event_names(model)
        return list(dict.fromkeys(names))

    def _report_engines(self) -> None:
        assert self.models is not None
        for name, p in self.models.items():
            pl = p.engine.placement
            self.metrics.engine_info(name, pl.engine, pl.device, pl.fallback_reason or "")

    def _publish(self, ev: Event) -> None:
        for s in self.sinks:
            s.publish(ev)

    # --- health --------------------------------------------------------------------------
    def watched(self) -> list[Pipeline]:
        return self.pipelines

    def tick(self) -> None:
        now = self.clock.monotonic()
        for p in self.pipelines:
            p.update_gauges(self.metrics, now, self._fps_window_s)

    def _status_line(self) -> str:
        return "; ".join(
            f"{name} {p.manifest.name} on {p.engine.placement.device}"
            for name, p in (self.models.items() if self.models else [])
        )

    def status(self) -> dict[str, Any]:
        sources = {p.source_name: p.source_status() for p in self.pipelines}
        offline = [n for n, s in sources.items() if not s["online"]]
        now = self.clock.monotonic()
        down = [
            f"{p.source_name} for {now - p.offline_since:.0f} s"
            for p in self.pipelines
            if p.source_name in offline and p.offline_since is not None and now - p.offline_since > p.stall_s
        ]
        healthy, reason = self.health(down, offline)
        n_events, dropped = self.fusion_stage.totals()
        return redact_all(
            {
                "healthy": bool(self.models) and healthy,
                "reason": reason,
                "uptime_s": self.uptime_s(),
                "sources": sources,
                "pipelines": {p.name: p.status() for p in self.pipelines},
                "events": n_events,
                "dropped_decisions": dropped,
                "last_reload": self.last_reload,
                "sinks": [s.status() for s in self.sinks],
            }
        )
