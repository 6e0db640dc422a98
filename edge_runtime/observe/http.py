"""The daemon's small HTTP side: ``/healthz``, ``/status`` (JSON) and ``/metrics`` (Prometheus).

stdlib ``HTTPServer``: one accept thread, and one short-lived worker thread per connection, at
most ``max_connections`` at a time; a connection beyond that gets ``503 busy`` and is closed at
once. Every socket read has ``timeout_s``, so idle or slow clients cannot hold threads for long.
With a ``token``, ``/status`` and ``/metrics`` need ``Authorization: Bearer TOKEN`` (compared in
constant time) or get 401; ``/healthz`` stays open (ok or a one-line reason) for health checks such
as install.sh's. No request logging to stderr.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any

from ..sinks import SinkError

if TYPE_CHECKING:
    from ..config import HttpConfig
    from .metrics import Metrics

log = logging.getLogger(__name__)


_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
)


class _Server(HTTPServer):
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: a burst waits in the kernel, not in SYN retries (stdlib: 5)
    status_fn: Callable[[], dict[str, Any]]
    metrics: Metrics
    token: bytes | None = None
    conn_timeout_s: float = 5.0
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # every worker busy: refuse now, never queue
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        threading.Thread(target=self._work, args=(request, client_address), name="edge-http-conn", daemon=True).start()

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http %s: connection failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edge-runtime"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.conn_timeout_s)  # every read on this connection, request line included

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, code: int, text: str) -> None:
        self._send(code, (text.rstrip("\n") + "\n").encode("utf-8"), "text/plain; charset=utf-8")

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        got = self.headers.get("Authorization", "")
        scheme, _, value = got.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode("utf-8", "replace"), token)
        if not ok:
            self._send(
                401,
                b"unauthorized: send Authorization: Bearer <token from [sinks.http] token_file>\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": 'Bearer realm="edge-runtime"'},
            )
        return ok

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path != "/healthz" and not self._authorized():
                return
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
    ``token`` set: every request but ``/healthz`` needs it as a bearer token. At most ``max_connections``
    connections are served at once, each socket read waiting at most ``timeout_s``.
    """

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        metrics: Metrics,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        timeout_s: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        self.status = status
        self.metrics = metrics
        self.host = host
        self.port = port
        self.token = token
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, h: HttpConfig, status: Callable[[], dict[str, Any]], metrics: Metrics) -> HttpServer:
        """The server ``[sinks.http]`` describes (not started); its token file is read again here."""
        from ..config import read_token

        try:
            token = read_token(h.token_file) if h.token_file is not None else None
        except ValueError as e:
            raise SinkError(f"sinks.http.token_file: {e}") from None  # changed since it was loaded
        return cls(
            status, metrics, h.host, h.port, token=token, timeout_s=h.timeout_s, max_connections=h.max_connections
        )

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
            raise SinkError(
                f"http: cannot listen on {self.host}:{self.port}: {e.strerror or e}; choose another [http] port or host"
            ) from e
        server.status_fn = self.status
        server.metrics = self.metrics
        server.token = self.token.encode("utf-8") if self.token is not None else None
        server.conn_timeout_s = self.timeout_s
        server.slots = threading.BoundedSemaphore(self.max_connections)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="edge-http", daemon=True
        )
        self._thread.start()
        log.info(
            "http: serving /healthz /status /metrics on %s (%s)",
            self.url,
            "bearer token required" if self.token is not None else "no token",
        )
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
