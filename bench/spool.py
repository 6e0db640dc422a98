"""What the MQTT sink's durable spool costs per event, on the folder it will live in.

    python bench/spool.py [--dir /var/lib/edge-runtime] [--events 500] [--out bench/results/spool.json]

- append: wall time of :meth:`Spool.append` per event (an event-sized JSON payload), as shipped
  (WAL, ``synchronous=FULL``: one fsync per event) and, for comparison only, with
  ``synchronous=NORMAL`` (durable across a killed process, not across power loss);
  ``full_over_normal`` is their ratio, measured in the same run.
- ack: wall time to remove a batch of 64 delivered rows (one transaction).
- at capacity: the spool filled past a 4 MiB limit: how many rows it holds, the file size over
  the limit (SQLite's overhead on the counted bytes) and the time to reopen it (with its
  ``quick_check``), as a restarted daemon does.

Run it on the board's own storage (an SD card's fsync is far slower than an SSD's); the
folder's file system is recorded with the result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402
from edge_runtime.spool import MiB, Spool  # noqa: E402

TOPIC = "edge-runtime/board/event/espresso"


def payload() -> str:
    return json.dumps(
        {
            "event_type": "espresso",
            "id": uuid.uuid4().hex,
            "event": "espresso",
            "score": 0.91,
            "rule": "passthrough",
            "time": "2026-01-01T00:00:00.000Z",
            "latency_ms": 41.2,
            "decisions": [
                {
                    "modality": "vision",
                    "label": "espresso",
                    "score": 0.91,
                    "source": "camera",
                    "latency_ms": 40.8,
                    "top": [["espresso", 0.91], ["cup", 0.05], ["eggnog", 0.01]],
                }
            ],
        },
        separators=(",", ":"),
    )


def fs_type(folder: Path) -> str:
    """The file system type the folder is on (longest mount point in /proc/mounts), or "unknown"."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    target = str(folder.resolve())
    for line in mounts:
        parts = line.split()
        if (
            len(parts) > 2
            and (target == parts[1] or target.startswith(parts[1].rstrip("/") + "/"))
            and len(parts[1]) > len(best)
        ):
            best, kind = parts[1], parts[2]
    return kind


def append_ms(folder: Path, n: int, synchronous: str) -> float:
    with Spool(folder / f"append-{synchronous}.sqlite3") as sp:
        sp._db.execute(f"PRAGMA synchronous={synchronous}")  # comparison only; the spool ships with FULL
        times = []
        for _ in range(n):
            t = time.perf_counter()
            sp.append(TOPIC, payload())
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=None, help="folder to measure in (default: a temporary one here)")
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "spool.json")
    args = ap.parse_args()
    base = args.dir or Path.cwd()
    with tempfile.TemporaryDirectory(prefix="spool-bench-", dir=base) as tmp:
        folder = Path(tmp)
        full = append_ms(folder, args.events, "FULL")
        normal = append_ms(folder, args.events, "NORMAL")
        with Spool(folder / "ack.sqlite3") as sp:
            for _ in range(64 * 20):
                sp.append(TOPIC, payload())
            acks = []
            while sp.count:
                ids = [r.id for r in sp.pending(0, 64)]
                t = time.perf_counter()
                sp.ack(ids)
                acks.append(time.perf_counter() - t)
        path = folder / "capacity.sqlite3"
        with Spool(path, max_bytes=4 * MiB) as sp:
            while sp.dropped < 1000:
                sp.append(TOPIC, payload())
            rows, counted = sp.count, sp.bytes
        t = time.perf_counter()
        with Spool(path, max_bytes=4 * MiB) as sp:
            reopen = time.perf_counter() - t
        size = path.stat().st_size
        kind = fs_type(folder)
    result = {
        "host": host(file_system=kind),
        "events": args.events,
        "append_ms_median": {"full": round(full, 3), "normal": round(normal, 3)},
        "full_over_normal": round(full / normal, 2),
        "ack_64_ms_median": round(statistics.median(acks) * 1e3, 3),
        "payload_bytes": len(payload()),
        "at_capacity": {
            "max_bytes": 4 * MiB,
            "rows": rows,
            "counted_bytes": counted,
            "file_over_max": round(size / (4 * MiB), 2),
            "reopen_ms": round(reopen * 1e3, 1),
        },
    }
    print(json.dumps(result, indent=2))
    save(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
