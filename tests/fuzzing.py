"""The fuzz harness shared by tests/test_fuzz.py (short, in the suite) and bench/fuzz.py (long).

Every generated input comes with what it must do: ``OK`` (valid by construction: accepted),
``BROKEN`` (broken by construction: refused with one line) or ``ANY`` (either, but never a
traceback or a hang). :func:`call` runs one command in-process as a user would (``main(argv)``),
with a hard time limit; :class:`Tally` counts inputs and outcomes per kind for the report.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

OK, BROKEN, ANY = "ok", "broken", "any"
HANG_S = 10.0  # an input that takes longer than this is a hang
SCALE = float(os.environ.get("EDGE_FUZZ_SCALE", "1"))  # bench/fuzz.py raises it
REPORT = os.environ.get("EDGE_FUZZ_REPORT")  # where the tally goes as JSON (bench/fuzz.py sets it)


def examples(n: int) -> int:
    """``n`` examples in the suite; ``n * EDGE_FUZZ_SCALE`` in the long run."""
    return max(1, round(n * SCALE))


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = HANG_S):
    """Raise :class:`Hang` in the main thread after ``seconds`` (a wall-clock alarm)."""

    def on_alarm(*_):
        raise Hang(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def process_state():
    """Keep what a command changes in-process (signal handlers, root logging) as it was."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        yield
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float

    def error_line(self) -> str:
        """The one error line a refusal prints (``prog: error: ...``)."""
        lines = [x for x in self.err.splitlines() if ": error: " in x]
        assert len(lines) == 1, f"exit {self.code} without exactly one error line: {self.err[-2000:]!r}"
        return lines[0]


def call(main, argv: list[str], limit: float = HANG_S) -> Result:
    """``main(argv)`` in-process with captured output: its exit code (argparse's SystemExit too).

    Any exception escaping ``main`` is a traceback the user would see: it propagates, and the
    property fails on it. So does a hang (:class:`Hang`)."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with process_state(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), time_limit(limit):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    r = Result(int(code), out.getvalue(), err.getvalue(), time.monotonic() - t0)
    assert "Traceback" not in r.err, f"{argv}: a traceback: {r.err[-3000:]}"
    assert r.code in (0, 2), f"{argv}: exit {r.code}: {r.err[-2000:]}"
    if r.code == 2:
        r.error_line()
    return r


def judge(kind: str, expect: str, accepted: bool, what: object) -> None:
    """The expectation of a generated input against what happened, counted in the tally."""
    TALLY.add(kind, expect, accepted)
    if expect == OK:
        assert accepted, f"{kind}: a valid input was refused: {what}"
    elif expect == BROKEN:
        assert not accepted, f"{kind}: a broken input was accepted (exit 0): {what}"


class Tally:
    """Inputs per kind and their outcomes; written as JSON at the end when ``EDGE_FUZZ_REPORT`` is set."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.slowest: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, kind: str, expect: str, accepted: bool) -> None:
        with self._lock:
            self.counts[kind][f"{expect}:{'accepted' if accepted else 'refused'}"] += 1

    def seconds(self, kind: str, seconds: float) -> None:
        self.slowest[kind] = max(self.slowest[kind], seconds)

    def write(self, path: str | os.PathLike[str]) -> None:
        data = {
            kind: {
                "inputs": sum(c.values()),
                "outcomes": dict(sorted(c.items())),
                "slowest_s": round(self.slowest[kind], 3),
            }
            for kind, c in sorted(self.counts.items())
        }
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


TALLY = Tally()
