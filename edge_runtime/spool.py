"""A durable, bounded queue of outgoing messages in one SQLite file (stdlib ``sqlite3``, WAL).

    sink.publish --append(topic, payload)--> spool      (one row, durable once append returns)
    sink worker  --pending(after_id)-------> the network, oldest first
    broker ack   --ack(ids)----------------> rows removed

A network sink writes each message here before it hands it on and removes it only when the
receiver has acknowledged it, so a message survives the process being killed (SIGKILL, the
OOM killer, a watchdog restart) and, with the synchronous level below, a power cut; the next
start delivers what is left, in order, first. Delivery is at least once: a message whose
acknowledgement was lost is sent again.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``. WAL alone (``NORMAL``) already
survives SIGKILL, since a commit is in the operating system's cache once ``append`` returns, but
on power loss it may roll back the last commits. Boards lose power (unplugged, brown-outs), so
every commit is also synced to the medium: an ``append`` that returned is on disk. The cost is
one fsync per message (events are at most a few per second, thanks to fusion's cooldowns;
``bench/spool.py`` measures it on the board's storage); acknowledgements are applied in batches,
one fsync per batch.

Capacity: the stored bytes (topic + payload) are kept within ``max_bytes``, rows older than
``max_age_s`` go, and optionally at most ``max_rows`` stay; beyond any of them the oldest rows
are deleted and counted in :attr:`Spool.dropped` (and returned by :meth:`append` and
:meth:`prune`). The file stays within about ``max_bytes`` plus SQLite's page overhead; the WAL
is truncated back to ``journal_size_limit`` (4 MiB) after each checkpoint.

Threads: one connection (``check_same_thread=False``) used only under one lock, in
autocommit mode (``isolation_level=None``) with explicit ``BEGIN IMMEDIATE`` / ``COMMIT``
around the statements that must go together. Ids come from ``AUTOINCREMENT``, so they only grow,
even after the table was emptied, and a reader can page with ``id > last``.

``path=":memory:"`` gives the same queue in memory (lost with the process), for sinks without a
state directory.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 50 * MiB
DEFAULT_MAX_AGE_S = 7 * 86400.0
SCHEMA_VERSION = 1
_PRUNE_BATCH = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t REAL NOT NULL,          -- wall-clock seconds when appended (for max_age_s)
    n INTEGER NOT NULL,       -- bytes counted against max_bytes: UTF-8 topic + payload
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
)"""


class SpoolError(Exception):
    """A spool that cannot be opened or written; the message is one line naming the file."""


@dataclass(frozen=True)
class Row:
    id: int
    topic: str
    payload: bytes


class Spool:
    def __init__(
        self,
        path: str | Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        max_rows: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (max_bytes >= 1 and math.isfinite(max_age_s) and max_age_s > 0 and (max_rows is None or max_rows >= 1)):
            raise ValueError(f"spool: bad limits (max_bytes={max_bytes}, max_age_s={max_age_s}, max_rows={max_rows})")
        self.path = str(path)
        self.max_bytes, self.max_age_s, self.max_rows = int(max_bytes), float(max_age_s), max_rows
        self.clock = clock
        self.dropped = 0  # rows deleted unsent by the limits, since this object was made
        self._lock = threading.Lock()
        self._db = self._open()
        self.count, self.bytes, self.last_id = self._totals()

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    def _open(self) -> sqlite3.Connection:
        if not self.in_memory:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SpoolError(f"{self.path}: cannot create its folder ({e.strerror or e})") from None
        try:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise SpoolError(f"{self.path}: cannot open ({e})") from None
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != ("memory" if self.in_memory else "wal"):
                raise SpoolError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put it on a local file system")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA journal_size_limit={4 * MiB}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables - {"spool", "sqlite_sequence"} or (tables and version != SCHEMA_VERSION):
                raise SpoolError(
                    f"{self.path}: not an edge-runtime spool (schema {version}, tables "
                    f"{', '.join(sorted(tables))}); move it away or choose another folder"
                )
            if not tables:
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            check = [r[0] for r in db.execute("PRAGMA quick_check(3)")]
            if check != ["ok"]:
                raise SpoolError(
                    f"{self.path}: the spool file is damaged ({'; '.join(check)}); move it away "
                    "(its unsent events are lost) and start again"
                )
        except SpoolError:
            db.close()
            raise
        except sqlite3.Error as e:
            db.close()
            raise SpoolError(
                f"{self.path}: cannot use it as a spool ({e}); move it away (its unsent events "
                "are lost) or make it and its folder writable"
            ) from None
        return db

    def _totals(self) -> tuple[int, int, int]:
        count, size = self._db.execute("SELECT count(*), coalesce(sum(n), 0) FROM spool").fetchone()
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
        return int(count), int(size), int(seq[0]) if seq else 0

    # -- writing ---------------------------------------------------------------------------
    def append(self, topic: str, payload: bytes | str) -> int:
        """Store one message (durable when this returns); the number of old rows the limits removed.

        Raises SpoolError when SQLite cannot write (disk full, I/O error, closed).
        """
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        n = len(topic.encode("utf-8")) + len(data)
        with self._transaction("store the message"):
            cur = self._db.execute(
                "INSERT INTO spool (t, n, topic, payload) VALUES (?, ?, ?, ?)", (self.clock(), n, topic, data)
            )
            self.count += 1
            self.bytes += n
            dropped = self._prune_locked()
        self.last_id = int(cur.lastrowid or 0)
        return dropped

    def prune(self) -> int:
        """Apply the limits now (e.g. at start, to rows left from before); the number of rows removed."""
        with self._transaction("remove old messages"):
            dropped = self._prune_locked()
        return dropped

    def _prune_locked(self) -> int:
        """Delete the oldest rows while over a limit (inside the caller's transaction)."""
        cutoff = self.clock() - self.max_age_s
        dropped = 0
        while self.count and (
            self.bytes > self.max_bytes or (self.max_rows and self.count > self.max_rows) or self._oldest_t() < cutoff
        ):
            last, size, k = None, 0, 0
            for rid, t, n in self._db.execute("SELECT id, t, n FROM spool ORDER BY id LIMIT ?", (_PRUNE_BATCH,)):
                if not (
                    self.bytes - size > self.max_bytes
                    or (self.max_rows and self.count - k > self.max_rows)
                    or t < cutoff
                ):
                    break
                last, size, k = rid, size + n, k + 1
            if last is None:
                break
            self._db.execute("DELETE FROM spool WHERE id <= ?", (last,))
            self.count -= k
            self.bytes -= size
            dropped += k
        self.dropped += dropped
        return dropped

    def _oldest_t(self) -> float:
        row = self._db.execute("SELECT t FROM spool ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else math.inf

    def ack(self, ids: Iterable[int]) -> None:
        """Remove delivered rows (ids that are gone already are ignored), in one transaction."""
        ids = list(ids)
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self._transaction("remove delivered messages"):
            k, size = self._db.execute(
                f"SELECT count(*), coalesce(sum(n), 0) FROM spool WHERE id IN ({marks})", ids
            ).fetchone()
            self._db.execute(f"DELETE FROM spool WHERE id IN ({marks})", ids)
            self.count -= int(k)
            self.bytes -= int(size)

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        """One write transaction under the lock; on any failure it rolls back, the running totals are
        read again, and an SQLite error becomes a one-line SpoolError (``cannot <what>``)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    self.count, self.bytes, _ = self._totals()
                    raise
            except sqlite3.Error as e:
                raise SpoolError(f"{self.path}: cannot {what} ({e})") from None

    # -- reading ---------------------------------------------------------------------------
    def pending(self, after_id: int = 0, limit: int = 100) -> list[Row]:
        """Up to ``limit`` stored rows with ``id > after_id``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, topic, payload FROM spool WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
                ).fetchall()
            except sqlite3.Error as e:
                raise SpoolError(f"{self.path}: cannot read ({e})") from None
        return [Row(int(i), t, bytes(p)) for i, t, p in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
