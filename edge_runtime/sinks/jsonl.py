"""One JSON object per line, to stdout or to a size-rotated file (``[sinks.jsonl]``)."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import Sink, SinkError, SinkSetup, register

if TYPE_CHECKING:
    from ..config import JsonlConfig
    from ..events import Event
    from ..observe.metrics import Metrics

log = logging.getLogger(__name__)

MiB = 1024 * 1024
WARN_EVERY_S = 60.0  # a file that cannot be written (disk full...): at most one warning this often


class JsonlSink(Sink):
    """``event.to_dict()`` as one JSON line per event, flushed at once.

    ``path`` None or ``"-"``: standard output. Otherwise a file that is rotated like
    ``logging.handlers.RotatingFileHandler``: before a line would take it past
    ``max_bytes`` it becomes ``path.1`` (``path.1`` becomes ``path.2``... up to
    ``backups``; the oldest is removed). With ``backups=0`` the file is truncated
    instead, so it never grows without bound. ``max_bytes=0`` disables rotation.
    Thread-safe.

    A line the file cannot take (disk full, I/O error) is dropped whole: what was written of it is
    cut off again, so the file only ever holds complete lines. Drops are counted
    (``edge_sink_dropped_total{sink="jsonl"}``) and logged at most once per ``WARN_EVERY_S``;
    writing resumes by itself when the file takes lines again.
    """

    name = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        max_bytes: int = 10 * MiB,
        backups: int = 3,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(metrics)
        if max_bytes < 0 or backups < 0:
            raise SinkError(f"jsonl sink: max_bytes and backups must be >= 0 (got {max_bytes}, {backups})")
        self.path: Path | None = None if path is None or str(path) == "-" else Path(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0
        self._closed = False
        self._last_warn = -WARN_EVERY_S  # monotonic time of the last "cannot write" warning
        self._warned = False  # a warning went out since writing last worked
        self._failed = 0  # lines dropped since writing last worked
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._open()
            except OSError as e:
                raise SinkError(
                    f"jsonl sink: cannot write {self.path}: {e.strerror or e}; choose a writable path"
                ) from e

    def _open(self) -> None:
        assert self.path is not None
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open); unbuffered: a line is
        self._size = self._file.tell()  # in the file when write returns, or not at all (_append)

    def _append(self, data: bytes) -> None:
        """All of ``data`` at the end of the file, or none of it: a partial write is cut off again."""
        assert self._file is not None
        done = 0
        try:
            while done < len(data):
                n = self._file.write(data[done:])
                if not n:
                    raise OSError(f"the file took {done} of {len(data)} bytes")
                done += n
        except OSError:
            if done:
                fd = self._file.fileno()
                os.ftruncate(fd, os.fstat(fd).st_size - done)
            raise

    def _rotate(self) -> None:
        assert self.path is not None and self._file is not None
        self._file.close()
        self._file = None
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def publish(self, event: Event) -> None:
        self.write(event.to_dict())

    def write(self, obj: dict[str, Any]) -> None:
        """Write any JSON-able mapping as one line (used for events, handy for tests and tools)."""
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._closed:
                self._drop(why="sink is closed")
                return
            try:
                if self.path is None:
                    out = sys.stdout  # looked up each time, so a redirected stdout is honoured
                    out.write(line)
                    out.flush()
                    return
                data = line.encode("utf-8")
                if self._file is None:  # a failed rotation earlier: try again
                    self._open()
                elif self.max_bytes and self._size > 0 and self._size + len(data) > self.max_bytes:
                    self._rotate()
                self._append(data)
                self._size += len(data)
            except (OSError, ValueError) as e:
                if self.path is None:
                    self._drop(why=f"cannot write stdout: {getattr(e, 'strerror', None) or e}")
                else:
                    self._write_failed(f"{getattr(e, 'strerror', None) or e}")
                return
            if self._failed:
                self._write_worked()

    def _write_failed(self, why: str) -> None:
        self._drop()
        self._failed += 1
        now = time.monotonic()
        if now - self._last_warn >= WARN_EVERY_S:
            self._last_warn, self._warned = now, True
            log.warning(
                "jsonl sink: cannot write %s: %s; dropping events (%d so far, counted in "
                "edge_sink_dropped_total), at most one such warning per %g s",
                self.path,
                why,
                self.dropped,
                WARN_EVERY_S,
            )

    def _write_worked(self) -> None:
        if self._warned:
            log.info("jsonl sink: writing again to %s (%d events dropped meanwhile)", self.path, self._failed)
        self._failed, self._warned = 0, False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._file is not None:
                    self._file.close()
                elif self.path is None:
                    sys.stdout.flush()
            except (OSError, ValueError):
                pass
            self._file = None


@register("jsonl")
def build(c: JsonlConfig, setup: SinkSetup) -> JsonlSink:
    return JsonlSink(c.path, c.max_bytes, c.backups, metrics=setup.metrics)
