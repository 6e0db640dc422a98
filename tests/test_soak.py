"""A short soak of the real daemon (``bench/soak.py``, the same code): memory, fds and threads stay
flat while events flow at well over 600 a minute, and SIGTERM exits 0.

``edge-runtime run`` in its own process on the shipped samples (camera cycling the images at 20 fps,
the keyword recording looped in real time), both shipped models, passthrough without cooldown,
JSON-lines rotated every 256 KiB (several rotations in the run), the HTTP side on a free port.
About 45 s warm-up + 1 min measured, sampled every 3 s. The one-hour run of ``bench/soak.py``
carries the 1 MB/h goal.
"""

from __future__ import annotations

from bench.soak import EVENTS_PER_MIN_GOAL, soak, summary

WARMUP_MIN = 0.75
MEASURED_MIN = 1.0
INTERVAL_S = 3.0
MAX_BYTES, BACKUPS = 256 * 1024, 2
# RSS slope bound for a 60 s window: a short window is noisy. After the warm-up the resident set
# still moves in steps of a few hundred kB (the allocator taking another arena chunk, the daemon's
# bounded latency rings -- 2,000 and 5,000 entries -- still filling at 20 events/s), and one such
# step in 60 s reads as tens of MB/h. 100 MB/h is 1.7 MB over the window: far above that noise,
# far below a real leak at this rate (one decoded 640x480 frame kept per second is over 3 GB/h;
# 1.5 kB kept per event, 100 MB/h). The one-hour bench run judges the 1 MB/h goal.
SHORT_RSS_SLOPE_MB_PER_H = 100.0


def test_short_soak_stays_flat_and_stops_cleanly(tmp_path):
    r = soak(
        WARMUP_MIN + MEASURED_MIN,
        WARMUP_MIN,
        INTERVAL_S,
        tmp_path,
        fps=20.0,
        max_bytes=MAX_BYTES,
        backups=BACKUPS,
        rss_goal_mb_per_h=SHORT_RSS_SLOPE_MB_PER_H,
    )
    print(summary(r))  # the figures, with pytest -s
    text = summary(r) + "\nlast samples: " + repr(r["samples"][-3:]) + "\nlog:\n" + r["log_tail"]
    assert r["sigterm"]["exit_code"] == 0, text
    assert r["events_per_min"] >= EVENTS_PER_MIN_GOAL, text
    assert r["fds_after_warmup"]["max"] == r["fds_after_warmup"]["min"], text
    assert r["threads_after_warmup"]["max"] == r["threads_after_warmup"]["min"], text
    assert r["rss_slope_mb_per_h"] <= SHORT_RSS_SLOPE_MB_PER_H, text
    assert all(r["passed"].values()), text
    # the rotation keeps the events' disk use within its bound (and did rotate: the run writes more)
    assert r["disk_bytes"] <= MAX_BYTES * (BACKUPS + 1), text
    assert (tmp_path / "events.jsonl.1").exists(), text
