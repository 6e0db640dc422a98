"""The daemon's small HTTP side: ``/healthz``, ``/status`` (JSON) and ``/metrics`` (Prometheus).

stdlib ``ThreadingHTTPServer`` in a daemon thread; no request logging to stderr.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from . import SinkError

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    status_fn: Callable[[], dict[str, Any]]
    metrics: Metrics


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edge-runtime"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, code: int, text: str) -> None:
        self._send(code, (text.rstrip("\n") + "\n").encode("utf-8"), "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/healthz":
                st = self.server.status_fn()
                if st.get("healthy"):
                    self._text(200, "ok")
                else:
                    self._text(503, str(st.get("reason") or "unhealthy"))
            elif path == "/status":
                body = json.dumps(self.server.status_fn(), indent=2, default=str, sort_keys=True).encode("utf-8")
                self._send(200, body + b"\n", "application/json")
            elif path == "/metrics":
                self._send(200, self.server.metrics.render(), self.server.metrics.content_type)
            else:
                self._text(404, f"not found: {path} (try /healthz, /status, /metrics)")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a failing status() must not kill the server; say why
            log.exception("http: %s failed", path)
            try:
                self._text(500, f"internal error: {type(e).__name__}: {e}")
            except OSError:
                pass

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.address_string(), *args)


class HttpServer:
    """``GET /healthz`` (200 ``ok`` / 503 reason), ``/status`` (JSON of ``status()``),
    ``/metrics`` (Prometheus text of ``metrics``); 404 otherwise.

    ``status()`` returns a JSON-able dict with at least ``healthy`` (bool) and, when not
    healthy, ``reason`` (one line). Port 0 binds a free port; see :attr:`server_port`.
    """

    def __init__(self, status: Callable[[], dict[str, Any]], metrics: Metrics, host: str = "127.0.0.1",
                 port: int = 8080) -> None:
        self.status = status
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def server_port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is None:
            raise RuntimeError("HttpServer is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.server_port}"

    def start(self) -> HttpServer:
        if self._server is not None:
            return self
        cls = _Server6 if ":" in self.host else _Server
        try:
            server = cls((self.host, self.port), _Handler)
        except OSError as e:
            raise SinkError(f"http: cannot listen on {self.host}:{self.port}: {e.strerror or e}; "
                            "choose another [http] port or host") from e
        server.status_fn = self.status
        server.metrics = self.metrics
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="edge-http", daemon=True)
        self._thread.start()
        log.info("http: serving /healthz /status /metrics on %s", self.url)
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has stopped (within one poll interval)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
