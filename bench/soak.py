"""A soak of the real daemon on accelerated file sources: memory, fds and threads stay flat.

    python bench/soak.py [--minutes 60] [--warmup-minutes 5] [--interval-s 10] [--out bench/results/soak.json]

``edge-runtime run`` in its own process (after ``edge-runtime check`` on the same config): the
camera cycles the shipped sample images at ``--fps`` (20), the microphone loops the shipped
keyword recording in real time, both shipped models, fusion passthrough without cooldown and a
vision threshold of 0 (every inference is an event), a size-rotated JSON-lines file in a
temporary folder (disk use bounded by ``max_bytes`` x (``backups`` + 1)) and the HTTP side on
127.0.0.1 at a free port. Every ``--interval-s`` it samples from ``/proc/<pid>``: resident set
size (``VmRSS``), open file descriptors, threads and CPU time, and the events published so far
(``edge_events_total`` from ``/metrics``). At the end SIGTERM, which must exit 0.

Goals, judged on the samples after the warm-up:

- RSS slope (least squares) <= 1 MB/h;
- events per minute over the run >= 600;
- open fds and threads flat: max - min <= ``FLAT_TOLERANCE`` (0; each reading is the smallest of
  a few quick reads, so an fd or a thread that lives for milliseconds -- a rotated file being
  reopened, the image folder re-listed, the last scrape's connection thread ending -- is not
  mistaken for one that stays).

The same functions run the CI-short version in ``tests/test_soak.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402
from edge_runtime.defaults import SAMPLES  # noqa: E402

MB = 1e6
RSS_SLOPE_GOAL_MB_PER_H = 1.0
EVENTS_PER_MIN_GOAL = 600.0
FLAT_TOLERANCE = 0  # fds and threads: max - min after the warm-up
READS_PER_SAMPLE = 3  # fds and threads: the smallest of this many reads, READ_GAP_S apart
READ_GAP_S = 0.05
READY_TIMEOUT_S = 180.0  # models loaded and /healthz 200, on a loaded machine
STOP_TIMEOUT_S = 30.0


def soak_config(folder: Path, port: int, fps: float = 20.0, max_bytes: int = 1 << 20, backups: int = 2) -> str:
    """The daemon's TOML for a soak writing into ``folder``, its HTTP side on ``port``."""
    return f"""\
[runtime]
log_level = "info"

[camera]
uri = {json.dumps(str(SAMPLES / "images"))}
fps = {fps}
loop = true

[microphone]
file = {json.dumps(str(SAMPLES / "audio" / "keywords.wav"))}
realtime = true
loop = true

[vision]
model = "default"
threshold = 0.0

[audio]
model = "default"

[fusion]
passthrough = true
passthrough_cooldown_s = 0.0

[sinks.jsonl]
path = {json.dumps(str(folder / "events.jsonl"))}
max_bytes = {max_bytes}
backups = {backups}

[sinks.http]
host = "127.0.0.1"
port = {port}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status_fields(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU time of the process (every thread), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def events_published(metrics_url: str, timeout: float = 10.0) -> int:
    """The sum of ``edge_events_total`` over its labels, scraped from the daemon's ``/metrics``."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as r:
        text = r.read().decode("utf-8")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("edge_events_total{") or line.startswith("edge_events_total "):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def sample(pid: int, metrics_url: str, t0: float) -> dict[str, Any]:
    """One reading of the daemon: seconds since ``t0``, RSS (MB), open fds, threads, CPU seconds, events.

    fds and threads are the smallest of ``READS_PER_SAMPLE`` reads (transients lasting milliseconds
    are not counted), taken before ``/metrics`` is scraped, so the scrape's own connection (a socket
    and a thread in the daemon) is never among them.
    """
    fds, threads = [], []
    for i in range(READS_PER_SAMPLE):
        if i:
            time.sleep(READ_GAP_S)
        fds.append(len(os.listdir(f"/proc/{pid}/fd")))
        threads.append(int(_status_fields(pid)["Threads"]))
    status = _status_fields(pid)
    rss_kb = int(status["VmRSS"].split()[0])
    t = time.monotonic() - t0
    return {
        "t_s": round(t, 2),
        "rss_mb": round(rss_kb * 1024 / MB, 3),
        "fds": min(fds),
        "threads": min(threads),
        "cpu_s": round(_cpu_s(pid), 2),
        "events": events_published(metrics_url),
    }


def slope_per_hour(ts_s: list[float], values: list[float]) -> float:
    """The least-squares slope of ``values`` against ``ts_s`` (seconds), per hour."""
    n = len(ts_s)
    if n < 2:
        raise ValueError("a slope needs at least 2 samples")
    tm, vm = sum(ts_s) / n, sum(values) / n
    den = sum((t - tm) ** 2 for t in ts_s)
    if den == 0:
        raise ValueError("the samples are all at the same time")
    return sum((t - tm) * (v - vm) for t, v in zip(ts_s, values)) / den * 3600.0


def figures(
    samples: list[dict[str, Any]],
    warmup_s: float,
    rss_goal_mb_per_h: float = RSS_SLOPE_GOAL_MB_PER_H,
    events_goal_per_min: float = EVENTS_PER_MIN_GOAL,
    tolerance: int = FLAT_TOLERANCE,
) -> dict[str, Any]:
    """What the samples say, and each goal's ``passed`` flag (the samples after ``warmup_s`` are judged)."""
    after = [s for s in samples if s["t_s"] >= warmup_s]
    if len(after) < 3:
        raise ValueError(f"only {len(after)} samples after the warm-up; run longer or sample more often")
    first, last = samples[0], samples[-1]
    rate = (last["events"] - first["events"]) / ((last["t_s"] - first["t_s"]) / 60.0)
    rate_after = (after[-1]["events"] - after[0]["events"]) / ((after[-1]["t_s"] - after[0]["t_s"]) / 60.0)
    rss = [s["rss_mb"] for s in after]
    slope = slope_per_hour([s["t_s"] for s in after], rss)
    span = {k: (min(s[k] for s in after), max(s[k] for s in after)) for k in ("fds", "threads")}
    cpu = (after[-1]["cpu_s"] - after[0]["cpu_s"]) / (after[-1]["t_s"] - after[0]["t_s"])
    return {
        "samples_after_warmup": len(after),
        "measured_s": round(after[-1]["t_s"] - after[0]["t_s"], 1),
        "events_total": last["events"],
        "events_per_min": round(rate, 1),
        "events_per_min_after_warmup": round(rate_after, 1),
        "rss_slope_mb_per_h": round(slope, 3),
        "rss_mb_after_warmup": {"min": min(rss), "max": max(rss), "first": rss[0], "last": rss[-1]},
        "fds_after_warmup": {"min": span["fds"][0], "max": span["fds"][1]},
        "threads_after_warmup": {"min": span["threads"][0], "max": span["threads"][1]},
        "cpu_cores_after_warmup": round(cpu, 3),
        "goals": {
            "rss_slope_mb_per_h": f"<= {rss_goal_mb_per_h:g}",
            "events_per_min": f">= {events_goal_per_min:g}",
            "fds_flat": f"max - min <= {tolerance}",
            "threads_flat": f"max - min <= {tolerance}",
        },
        "passed": {
            "rss_slope": slope <= rss_goal_mb_per_h,
            "events_per_min": rate >= events_goal_per_min,
            "fds_flat": span["fds"][1] - span["fds"][0] <= tolerance,
            "threads_flat": span["threads"][1] - span["threads"][0] <= tolerance,
        },
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_runtime.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _tail(log: Path, n: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _wait_ready(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode} before it was ready:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the daemon was not healthy within {READY_TIMEOUT_S:g} s:\n{_tail(log)}")


def soak(
    minutes: float,
    warmup_minutes: float,
    interval_s: float,
    folder: Path,
    fps: float = 20.0,
    max_bytes: int = 1 << 20,
    backups: int = 2,
    rss_goal_mb_per_h: float = RSS_SLOPE_GOAL_MB_PER_H,
    progress=None,
) -> dict[str, Any]:
    """Run the daemon for ``minutes`` from ready, sampling every ``interval_s``; the result as ``soak.json`` holds it.

    ``folder`` holds the config, the daemon's log and its events. ``progress(sample)`` is called
    after each sample. Raises RuntimeError (with the log's tail) if ``check`` fails or the
    daemon exits or is not ready in time; the exit code on SIGTERM is in the result.
    """
    port = free_port()
    config = folder / "edge-runtime.toml"
    config.write_text(soak_config(folder, port, fps, max_bytes, backups))
    check = subprocess.run(
        _cli("check", "--config", str(config)), capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300
    )
    if check.returncode != 0:
        raise RuntimeError(f"edge-runtime check failed ({check.returncode}):\n{check.stdout}{check.stderr}")
    log = folder / "daemon.log"
    base = f"http://127.0.0.1:{port}"
    samples: list[dict[str, Any]] = []
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            _cli("run", "--config", str(config)), cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(proc, base, log)
        t0 = time.monotonic()
        k = 0
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode} during the soak:\n{_tail(log)}")
            s = sample(proc.pid, base + "/metrics", t0)
            samples.append(s)
            if progress is not None:
                progress(s)
            k += 1
            due = k * interval_s
            if due > minutes * 60.0 + 1e-9:
                break
            time.sleep(max(0.0, t0 + due - time.monotonic()))
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        stop_s = time.monotonic() - t_stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = figures(samples, warmup_minutes * 60.0, rss_goal_mb_per_h)
    result["passed"]["exit_0_on_sigterm"] = code == 0
    return {
        "host": host(platform=platform.platform(), cpus=os.cpu_count()),
        "config": {
            "minutes": minutes,
            "warmup_minutes": warmup_minutes,
            "interval_s": interval_s,
            "camera_fps": fps,
            "jsonl_max_bytes": max_bytes,
            "jsonl_backups": backups,
            "toml": config.read_text().replace(str(folder), "<tmp>"),
        },
        **result,
        "sigterm": {"exit_code": code, "stop_s": round(stop_s, 2)},
        "disk_bytes": sum(p.stat().st_size for p in folder.glob("events.jsonl*")),
        "log_tail": _tail(log, 1500).replace(str(folder), "<tmp>"),
        "samples": samples,
    }


def summary(r: dict[str, Any]) -> str:
    p = r["passed"]
    mark = lambda ok: "ok" if ok else "FAILED"  # noqa: E731
    return "\n".join(
        [
            f"soak: {r['config']['minutes']:g} min ({r['config']['warmup_minutes']:g} warm-up), "
            f"{len(r['samples'])} samples, {r['host']['cpus']} cpus",
            f"  events/min       {r['events_per_min']:>10.1f}   {r['goals']['events_per_min']:<14} "
            f"{mark(p['events_per_min'])}",
            f"  RSS slope MB/h   {r['rss_slope_mb_per_h']:>10.3f}   {r['goals']['rss_slope_mb_per_h']:<14} "
            f"{mark(p['rss_slope'])}  (RSS {r['rss_mb_after_warmup']['min']:.1f}-"
            f"{r['rss_mb_after_warmup']['max']:.1f} MB)",
            f"  fds              {r['fds_after_warmup']['min']:>4}-{r['fds_after_warmup']['max']:<5}   "
            f"{r['goals']['fds_flat']:<14} {mark(p['fds_flat'])}",
            f"  threads          {r['threads_after_warmup']['min']:>4}-{r['threads_after_warmup']['max']:<5}   "
            f"{r['goals']['threads_flat']:<14} {mark(p['threads_flat'])}",
            f"  SIGTERM exit     {str(r['sigterm']['exit_code']):>10}   == 0           {mark(p['exit_0_on_sigterm'])}",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the soak from ready (default 60)")
    ap.add_argument("--warmup-minutes", type=float, default=5.0, help="not judged (default 5)")
    ap.add_argument("--interval-s", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--fps", type=float, default=20.0, help="camera frame rate over the sample images (default 20)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = ap.parse_args()
    if not 0 <= args.warmup_minutes < args.minutes:
        ap.error("--warmup-minutes must be from 0 to less than --minutes")

    def progress(s: dict[str, Any]) -> None:
        print(json.dumps(s), flush=True)

    with tempfile.TemporaryDirectory(prefix="edge-soak-") as tmp:
        result = soak(args.minutes, args.warmup_minutes, args.interval_s, Path(tmp), args.fps, progress=progress)
    save(args.out, result)
    print(summary(result))
    return 0 if all(result["passed"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
