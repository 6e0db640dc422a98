"""The daemon: sources -> pipelines -> fusion -> sinks, on threads with bounded queues.

    camera --latest frame wins--> vision worker --Decision--+
                                                            +--> bounded queue --> fusion worker --> sinks
    microphone --lossless chunks--> audio worker --Decision-+

Each worker beats a heartbeat every loop; the systemd watchdog is pinged only
while every worker's heartbeat is fresh, so a stuck inference stops the pings
and systemd restarts the service. SIGTERM/SIGINT stop within 2 s, flushing the
sinks.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import AudioConfig, Config, VisionConfig
from .defaults import model_dir
from .engines import Acceleration, Delegate
from .events import Decision
from .fusion import Fusion
from .manifest import ManifestError, load
from .redact import redact_all
from .sinks.mqtt_settings import mqtt_config

log = logging.getLogger(__name__)
HEARTBEAT_STALE_S = 10.0  # a worker silent this long is stuck (or twice the watchdog interval, if shorter)


DEFAULT_STALL_S = 2.0  # a microphone offline longer than this makes /healthz 503


__all__ = ["Daemon", "Models", "ServiceError", "accel_of", "mqtt_config"]


class ServiceError(Exception):
    """Something the user must fix before the daemon can run; one line."""


def accel_of(cfg: VisionConfig | AudioConfig) -> Acceleration:
    """The section's delegates and providers (named providers checked even when LiteRT runs the model)."""
    from .engines.onnx import check_providers

    check_providers(list(cfg.providers) + list(cfg.provider_options))
    return Acceleration(delegates=tuple(Delegate(d.kind, d.library, dict(d.options)) for d in cfg.delegates),
                        providers=tuple(cfg.providers), provider_options=dict(cfg.provider_options))


def model_folder(spec: str, kind: str) -> Path:
    return model_dir(kind) if spec == "default" else Path(spec)


@dataclass
class Models:
    """Loaded pipelines (what `check` verifies and SIGHUP swaps atomically)."""

    vision: Any = None  # pipelines.vision.ImageClassifier
    audio: Any = None  # pipelines.audio.KeywordSpotter

    @classmethod
    def load(cls, cfg: Config) -> Models:
        from .engines import EngineError

        m = cls()
        try:
            if cfg.vision:
                from .pipelines.vision import ImageClassifier

                man, folder = load(model_folder(cfg.vision.model, "vision"))
                m.vision = ImageClassifier(man, folder, cfg.vision.engine, cfg.vision.threads, accel_of(cfg.vision))
            if cfg.audio:
                from .pipelines.audio import KeywordSpotter

                man, folder = load(model_folder(cfg.audio.model, "kws"))
                m.audio = KeywordSpotter(man, folder, cfg.audio.engine, cfg.audio.threads, cfg.audio.threshold,
                                         cfg.audio.smoothing_steps, cfg.audio.refractory_s, accel=accel_of(cfg.audio),
                                         false_accepts_per_hour=cfg.audio.false_accepts_per_hour)
        except (ManifestError, EngineError) as e:
            raise ServiceError(str(e)) from None
        m._check_fusion_labels(cfg)
        return m

    def _check_fusion_labels(self, cfg: Config) -> None:
        """Every label fusion waits for is one the configured model can say (else the rule never fires)."""
        wanted = [(f"fusion.rules[{i}].all[{j}]", c.modality, c.label)
                  for i, r in enumerate(cfg.fusion.rules) for j, c in enumerate(r.all)]
        if cfg.fusion.weighted:
            wanted += [(f"fusion.weighted.labels.{event}", modality, label)
                       for event, per in cfg.fusion.weighted.labels.items() for modality, label in per.items()]
        for where, modality, label in wanted:
            pipeline = getattr(self, modality, None) if modality in ("vision", "audio") else None
            if pipeline is None:
                raise ServiceError(f"{where}: waits for {modality} {label!r}, but no [{modality}] model is configured")
            if label not in pipeline.labels:
                close = ", ".join([x for x in pipeline.labels if label.lower() in x.lower()][:5])
                raise ServiceError(f"{where}: {label!r} is not a label of the {modality} model "
                                   f"{pipeline.manifest.name!r}" + (f" (close: {close})" if close else ""))


@dataclass
class PipelineStats:
    decisions: int = 0
    inferences: int = 0
    dropped: int = 0  # prepared frames replaced by newer ones before inference
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    beats: dict[str, float] = field(default_factory=dict)  # thread stage -> last loop time
    started: float = field(default_factory=time.monotonic)

    def beat(self, stage: str = "main") -> None:
        self.beats[stage] = time.monotonic()

    def last_beat(self) -> float:
        """The stalest stage's last beat (a pipeline is stuck if any of its threads is)."""
        return min(self.beats.values(), default=self.started)

    def snapshot(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        elapsed = max(1e-9, time.monotonic() - self.started)
        return {"inferences": self.inferences, "decisions": self.decisions, "dropped": self.dropped,
                "rate_per_s": round(self.inferences / elapsed, 2),
                "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
                               "p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None}}


class Daemon:
    def __init__(self, cfg: Config, notifier=None, metrics=None):
        from .sinks.metrics import FPS_WINDOW_S, Metrics
        from .systemd import Notifier

        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.metrics = metrics or Metrics()
        self._inference_marks: dict[str, deque] = {}  # pipeline -> (time, inferences) over the window
        self.dead_workers: dict[str, str] = {}  # worker thread -> the exception it died of
        self._offline_since: dict[str, float] = {}  # source -> when it was last seen go offline
        self._fps_window_s = FPS_WINDOW_S
        self.models: Models | None = None
        self.fusion = Fusion(cfg.fusion)
        self.decisions: queue.Queue[Decision | None] = queue.Queue(maxsize=cfg.runtime.queue_size)
        self.stats: dict[str, PipelineStats] = {}
        self.event_counts: dict[str, int] = {}  # per event name (bounded by the configured names and labels)
        self.event_latencies_ms: deque = deque(maxlen=5000)
        self.dropped_decisions = 0
        self.sinks: list[Any] = []
        self.http = None
        self.last_reload: dict[str, Any] | None = None
        self.camera = None
        self.microphone = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._threads: list[threading.Thread] = []
        self.still_running: list[str] = []  # worker threads stop() could not join (stuck inside a model)
        self._stuck_logged: list[str] = []  # what the watchdog loop last logged as stuck
        self._started = time.monotonic()
        self._lock = threading.Lock()
        interval = self.notifier.watchdog_interval_s
        self.stale_s = min(HEARTBEAT_STALE_S, 4 * interval) if interval else HEARTBEAT_STALE_S

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        # Handlers first: a SIGHUP (systemd's ExecReload) or SIGTERM may come as soon as the HTTP
        # endpoint or READY=1 is out, and SIGHUP's default action would end the process.
        self._install_signals()
        self.notifier.status("loading models")
        self.models = Models.load(self.cfg)
        self._report_engines()
        self._open_sources()  # before the sinks: "online" on MQTT and /status mean the sources are open
        self._open_sinks()
        for name, target in (("vision", self._vision_worker), ("audio", self._audio_worker)):
            if getattr(self.models, name) is not None:
                self.stats[name] = PipelineStats()
                self._spawn(name, target)
        self._spawn("fusion", self._fusion_worker)
        self.notifier.ready(self._status_line())
        log.info("ready: %s", self._status_line())

    def _spawn(self, name: str, target) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as e:  # noqa: BLE001 - a worker that dies is logged and makes the daemon unhealthy
                log.exception("worker %s died", name)
                with self._lock:
                    self.dead_workers[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"

        t = threading.Thread(target=guarded, name=f"edge-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def run(self) -> int:
        """Block until stopped (signal, duration, or every file source ended)."""
        interval = self.notifier.watchdog_interval_s
        next_ping = time.monotonic()
        while not self._stop.is_set():
            self._stop.wait(0.25)
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            self._update_gauges()
            now = time.monotonic()
            if interval and now >= next_ping:
                stuck = self.stuck_workers()
                if not stuck:
                    self.notifier.watchdog()
                    if self._stuck_logged:
                        log.info("pinging the watchdog again: %s made progress", ", ".join(self._stuck_logged))
                elif stuck != self._stuck_logged:  # once per change, not at every ping interval
                    log.error("not pinging the watchdog (systemd restarts the service): %s (stale after %.1f s)",
                              ", ".join(stuck), self.stale_s)
                self._stuck_logged = stuck
                next_ping = now + interval
            d = self.cfg.runtime.duration_s
            if d and now - self._started >= d:
                break
            if self._sources_ended():
                self._stop.wait(0.3)  # let the last decisions reach fusion
                break
        self.stop()
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def reload(self) -> bool:
        """Re-read the config and reload the models; on any failure keep serving the old ones."""
        from .config import ConfigError
        from .config import load as load_config

        self.notifier.reloading()
        try:
            new_cfg = load_config(self.cfg.path)
            changed = [k for k in ("camera", "microphone", "sinks") if getattr(new_cfg, k) != getattr(self.cfg, k)]
            if [bool(new_cfg.vision), bool(new_cfg.audio)] != [bool(self.cfg.vision), bool(self.cfg.audio)]:
                raise ConfigError("adding or removing [vision] / [audio] needs a restart")
            models = Models.load(new_cfg)
        except (ConfigError, ServiceError) as e:
            log.error("reload failed, still serving the previous config and models: %s", e)
            self.last_reload = {"ok": False, "error": str(e), "at": time.time()}
            self.notifier.ready(f"reload failed: {e}")
            return False
        old = self.models
        self.models, self.cfg, self.fusion = models, new_cfg, Fusion(new_cfg.fusion)  # one swap each, workers re-read
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
        for src in (self.camera, self.microphone):
            if src is not None:
                src.close()
        fusion = [t for t in self._threads if t.name == "edge-fusion"]
        for t in self._threads:  # the pipelines first: their last decisions (a file's final keyword) still count
            if t not in fusion:
                t.join(timeout=1.0)
        try:  # then the end mark, behind every decision: fusion drains the queue, then stops
            self.decisions.put(None, timeout=1.0)
        except queue.Full:
            log.warning("fusion did not drain its queue at stop: %d decisions not fused", self.decisions.qsize())
        for t in fusion:
            t.join(timeout=1.0)
        self.still_running = [t.name.removeprefix("edge-") for t in self._threads if t.is_alive()]
        if self.still_running:  # daemon threads: they do not hold the process, but stay inside native code
            log.warning("stopping with the %s worker still busy (stuck inside its model?); not waiting for it",
                        ", ".join(self.still_running))
        for s in self.sinks:
            s.close()
        if self.http is not None:
            self.http.close()
        self.notifier.close()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # --- parts -------------------------------------------------------------------------
    def _open_sinks(self) -> None:
        from .sinks import SinkSetup, open_sinks

        s = self.cfg.sinks
        self.sinks = open_sinks(SinkSetup(self.cfg, self.metrics, tuple(self._event_names())))
        if s.http:
            from .config import read_token
            from .sinks import SinkError
            from .sinks.http import HttpServer

            h = s.http
            try:
                token = read_token(h.token_file) if h.token_file is not None else None
            except ValueError as e:
                raise SinkError(f"sinks.http.token_file: {e}") from None  # changed since it was loaded
            self.http = HttpServer(self.status, self.metrics, h.host, h.port, token=token, timeout_s=h.timeout_s,
                                   max_connections=h.max_connections).start()

    def _event_names(self) -> list[str]:
        names = [r.name for r in self.cfg.fusion.rules]
        if self.cfg.fusion.weighted:
            names += list(self.cfg.fusion.weighted.labels)
        if self.cfg.fusion.passthrough and self.models and self.models.audio is not None:
            from .pipelines.audio import is_keyword

            names += [lab for lab in self.models.audio.labels if is_keyword(lab)]
        return list(dict.fromkeys(names))

    def _open_sources(self) -> None:
        if self.cfg.camera and self.cfg.vision:
            from .sources.camera import CameraSource

            c = self.cfg.camera
            self.camera = CameraSource("camera", c.uri, c.width, c.height, c.fps, c.fourcc, c.stride,
                                       c.stall_timeout_s, loop=c.loop).start()
        if self.cfg.microphone and self.cfg.audio:
            m = self.cfg.microphone
            if m.file:
                from .sources.files import WavFileSource

                self.microphone = WavFileSource("microphone", m.file, realtime=m.realtime, block_ms=m.block_ms,
                                                loop=m.loop).start()
            else:
                from .sources.microphone import MicrophoneSource

                self.microphone = MicrophoneSource("microphone", m.device, block_ms=m.block_ms).start()

    def _report_engines(self) -> None:
        for name in ("vision", "audio"):
            p = getattr(self.models, name)
            if p is not None:
                pl = p.engine.placement
                self.metrics.engine_info(name, pl.engine, pl.device, pl.fallback_reason or "")

    # --- workers -----------------------------------------------------------------------
    def _emit(self, d: Decision) -> None:
        self.metrics.observe_decision(d)
        try:
            self.decisions.put_nowait(d)
        except queue.Full:
            with self._lock:
                self.dropped_decisions += 1
            log.warning("decision queue full: dropped %s %s (fusion is behind)", d.modality, d.label)

    def _vision_worker(self) -> None:
        """Two stages so preprocessing of the next frame overlaps inference of this one."""
        st, cam = self.stats["vision"], self.camera
        slot: queue.Queue = queue.Queue(maxsize=1)
        done = threading.Event()

        def prepare_stage() -> None:
            while not self._stop.is_set():
                st.beat("prepare")
                frame = cam.latest(timeout=0.25)
                if frame is None:
                    if getattr(cam, "ended", False):
                        break
                    continue
                clf = self.models.vision  # one read: SIGHUP may swap the models between frames
                item = (frame, clf, clf.prepare(frame.image))
                try:
                    slot.put_nowait(item)
                except queue.Full:  # inference is behind: the newest frame wins
                    try:
                        slot.get_nowait()
                        st.dropped += 1
                    except queue.Empty:
                        pass
                    slot.put_nowait(item)
            done.set()

        prep = threading.Thread(target=prepare_stage, name="edge-vision-prepare", daemon=True)
        prep.start()
        while not self._stop.is_set():
            st.beat()
            try:
                frame, clf, x = slot.get(timeout=0.25)
            except queue.Empty:
                if done.is_set():
                    break
                continue
            vcfg = self.cfg.vision  # read each time: SIGHUP may swap config and models
            top = clf.ranked(clf.infer(x), vcfg.top_k)
            t_dec = time.monotonic_ns()
            st.inferences += 1
            st.latencies_ms.append((t_dec - frame.t_capture) / 1e6)
            if top and top[0].score >= vcfg.threshold:
                st.decisions += 1
                self._emit(Decision("vision", top[0].label, top[0].score, frame.t_capture, t_dec, "camera",
                                    {"top": [[t.label, round(t.score, 4)] for t in top]}))
        prep.join(timeout=1.0)

    def _audio_worker(self) -> None:
        st, mic = self.stats["audio"], self.microphone
        last = None  # the last chunk read
        while not self._stop.is_set():
            st.beat()
            chunk = mic.read(timeout=0.25)
            if chunk is None:
                if getattr(mic, "ended", False):  # a file that does not loop: its last keyword completes after it
                    if last is not None:
                        kws = self.models.audio
                        self._audio_decisions(kws, last, kws.flush(), time.monotonic_ns())
                    return
                continue
            kws = self.models.audio  # one read: SIGHUP may swap the models between chunks
            dets = kws.process(chunk.samples, chunk.start_sample)
            t_dec = time.monotonic_ns()
            st.inferences += 1
            st.latencies_ms.append((t_dec - chunk.t_capture) / 1e6)
            self._audio_decisions(kws, chunk, dets, t_dec)
            last = chunk

    def _audio_decisions(self, kws, chunk, dets: list, t_dec: int) -> None:
        """Decisions of detections made up to ``chunk``; capture times count back from its end."""
        end_s = (chunk.start_sample + len(chunk.samples)) / kws.p.sample_rate
        for det in dets:
            t_cap = chunk.t_capture - int(max(0.0, end_s - det.t) * 1e9)
            self.stats["audio"].decisions += 1
            self._emit(Decision("audio", det.label, det.score, t_cap, t_dec, "microphone",
                                {"t_stream_s": round(det.t, 3)}))

    def _fusion_worker(self) -> None:
        while True:
            d = self.decisions.get()
            if d is None:
                return
            for ev in self.fusion.add(d):  # self.fusion is re-read per decision (SIGHUP may swap it)
                self.metrics.observe_event(ev)
                with self._lock:
                    self.event_counts[ev.name] = self.event_counts.get(ev.name, 0) + 1
                    self.event_latencies_ms.append((ev.t_event - max(x.t_decided for x in ev.decisions)) / 1e6)
                for s in self.sinks:
                    s.publish(ev)

    # --- health --------------------------------------------------------------------------
    def stuck_workers(self) -> list[str]:
        """Workers that died, or made no progress for ``stale_s`` while their source still delivers."""
        now = time.monotonic()
        with self._lock:
            stuck = [f"{n} (died: {why})" for n, why in self.dead_workers.items()]
        for n, st in self.stats.items():
            if now - st.last_beat() > self.stale_s and not getattr(self._source_of(n), "ended", False):
                stuck.append(n)
        return stuck

    def _stall_s(self, source: str) -> float:
        """How long a source may be offline before the daemon is unhealthy: its stall timeout."""
        return self.cfg.camera.stall_timeout_s if source == "camera" and self.cfg.camera else DEFAULT_STALL_S

    def _source_of(self, pipeline: str):
        return self.camera if pipeline == "vision" else self.microphone

    def _sources_ended(self) -> bool:
        srcs = [s for s in (self.camera, self.microphone) if s is not None]
        return bool(srcs) and all(getattr(s, "ended", False) for s in srcs)

    def _update_gauges(self) -> None:
        for name, src in (("camera", self.camera), ("microphone", self.microphone)):
            if src is not None:
                st = src.stats()
                self.metrics.source_up(name, st.online)
                if st.online or getattr(src, "ended", False):
                    self._offline_since.pop(name, None)
                else:
                    self._offline_since.setdefault(name, time.monotonic())
                self.metrics.source_totals(name, st.frames, st.dropped, st.overflows)
        now = time.monotonic()
        for name, st in self.stats.items():  # the recent rate, not the lifetime average
            seen = self._inference_marks.setdefault(name, deque())
            seen.append((now, st.inferences))
            while len(seen) > 2 and now - seen[1][0] >= self._fps_window_s:
                seen.popleft()
            t0, n0 = seen[0]
            self.metrics.pipeline_fps(name, (st.inferences - n0) / (now - t0) if now > t0 else 0.0)

    def _status_line(self) -> str:
        parts = []
        for name in ("vision", "audio"):
            p = getattr(self.models, name, None)
            if p is not None:
                parts.append(f"{name} {p.manifest.name} on {p.engine.placement.device}")
        return "; ".join(parts)

    def status(self) -> dict[str, Any]:
        sources = {}
        for name, src in (("camera", self.camera), ("microphone", self.microphone)):
            if src is not None:
                s = src.stats()
                sources[name] = {"online": s.online, "frames": s.frames, "dropped": s.dropped,
                                 "overflows": s.overflows, "reconnects": s.reconnects, "fps": round(s.fps, 2),
                                 "last_error": s.last_error}
        pipelines = {}
        for name in ("vision", "audio"):
            p = getattr(self.models, name, None) if self.models else None
            if p is not None:
                pl = p.engine.placement
                pipelines[name] = {"model": p.manifest.name, "engine": pl.engine, "device": pl.device,
                                   "fallback_reason": pl.fallback_reason,
                                   **({"operating_point": dataclasses.asdict(p.operating_point)} if name == "audio"
                                      else {}),
                                   **(self.stats[name].snapshot() if name in self.stats else {})}
        stuck = self.stuck_workers()
        offline = [n for n, s in sources.items() if not s["online"]]
        now = time.monotonic()
        down = [f"{n} for {now - self._offline_since[n]:.0f} s" for n in offline
                if n in self._offline_since and now - self._offline_since[n] > self._stall_s(n)]
        healthy = bool(self.models) and not stuck and not down
        reason = ((f"stuck: {', '.join(stuck)}" if stuck else "") or (f"offline: {', '.join(down)}" if down else "")
                  or (f"reconnecting: {', '.join(offline)}" if offline else ""))
        with self._lock:
            n_events, dropped = sum(self.event_counts.values()), self.dropped_decisions
        return redact_all({"healthy": healthy, "reason": reason or "ok",
                           "uptime_s": round(time.monotonic() - self._started, 1),
                           "sources": sources, "pipelines": pipelines, "events": n_events, "dropped_decisions": dropped,
                           "last_reload": self.last_reload,
                           "sinks": [s.status() for s in self.sinks]})
