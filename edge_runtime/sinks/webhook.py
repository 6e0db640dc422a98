"""``[sinks.webhook]`` (``url = "http://host:8000/events"``): each event POSTed as JSON, in order.
One file holds the table's config, the sink and its builder: how a sink plugs in."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from ..redact import redact
from ..schema import check
from . import Sink, SinkSetup, register


@dataclass
class WebhookConfig:
    url: str = field(metadata=check(lambda v: v.startswith(("http://", "https://")), "must be an http(s) URL"))
    timeout_s: float = field(default=5.0, metadata=check(lambda v: 0 < v <= 60, "must be more than 0 and at most 60"))
    queue_size: int = field(default=1000, metadata=check(lambda v: 1 <= v <= 100_000, "must be from 1 to 100000"))


class WebhookSink(Sink):
    """Events wait in a bounded queue (full: dropped and counted) for one thread that POSTs them in order."""

    name = "webhook"

    def __init__(self, cfg: WebhookConfig, metrics: Any = None) -> None:
        super().__init__(metrics)
        self.cfg, self._queue = cfg, queue.Queue[dict | None](cfg.queue_size)
        self._thread = threading.Thread(target=self._run, name="edge-webhook", daemon=True)
        self._thread.start()

    def publish(self, event: Any) -> None:
        try:
            self._queue.put_nowait(event.to_dict())
        except queue.Full:
            self._drop(why=f"{redact(self.cfg.url)} takes events slower than they come")

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            req = urllib.request.Request(self.cfg.url, json.dumps(item).encode(), {"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=self.cfg.timeout_s).close()
            except (OSError, ValueError) as e:  # urllib.error.URLError and HTTPError are OSErrors
                self._drop(why=f"POST {redact(self.cfg.url)}: {redact(str(e))}")

    def close(self) -> None:
        with contextlib.suppress(queue.Full):  # behind the queued events; what is not sent in a second is left
            self._queue.put(None, timeout=1.0)
        self._thread.join(timeout=1.0)


@register("webhook", config=WebhookConfig)
def build(cfg: WebhookConfig, setup: SinkSetup) -> WebhookSink:
    return WebhookSink(cfg, setup.metrics)
