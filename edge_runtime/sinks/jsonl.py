"""One JSON object per line, to stdout or to a size-rotated file."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import Sink, SinkError

if TYPE_CHECKING:
    from ..events import Event
    from .metrics import Metrics

MiB = 1024 * 1024


class JsonlSink(Sink):
    """``event.to_dict()`` as one JSON line per event, flushed at once.

    ``path`` None or ``"-"``: standard output. Otherwise a file that is rotated like
    ``logging.handlers.RotatingFileHandler``: before a line would take it past
    ``max_bytes`` it becomes ``path.1`` (``path.1`` becomes ``path.2``... up to
    ``backups``; the oldest is removed). With ``backups=0`` the file is truncated
    instead, so it never grows without bound. ``max_bytes=0`` disables rotation.
    Thread-safe.
    """

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str] | None = None, max_bytes: int = 10 * MiB, backups: int = 3,
                 metrics: Metrics | None = None) -> None:
        super().__init__(metrics)
        if max_bytes < 0 or backups < 0:
            raise SinkError(f"jsonl sink: max_bytes and backups must be >= 0 (got {max_bytes}, {backups})")
        self.path: Path | None = None if path is None or str(path) == "-" else Path(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._size = 0
        self._closed = False
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._open()
            except OSError as e:
                raise SinkError(f"jsonl sink: cannot write {self.path}: {e.strerror or e}; "
                                "choose a writable path") from e

    def _open(self) -> None:
        assert self.path is not None
        self._file = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 (kept open)
        self._size = self._file.tell()

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
                n = len(line.encode("utf-8"))
                if self._file is None:  # a failed rotation earlier: try again
                    self._open()
                elif self.max_bytes and self._size > 0 and self._size + n > self.max_bytes:
                    self._rotate()
                assert self._file is not None
                self._file.write(line)
                self._file.flush()
                self._size += n
            except (OSError, ValueError) as e:
                self._drop(why=f"cannot write {self.path or 'stdout'}: {getattr(e, 'strerror', None) or e}")

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
