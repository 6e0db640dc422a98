"""Property-based fuzzing (Hypothesis) of everything a user or an attacker hands the tools:
configs (``check`` against ``run`` on each), manifests (``classify`` / ``listen``), WAV and image
files (the readers), CLI arguments and bundles (``edge-deploy verify``).

Each input is generated valid, broken or arbitrary by construction (tests/fuzzing.py): a valid
one must be accepted, a broken one refused with one line and exit 2, and none may give a
traceback or run longer than 10 s. The suite runs a few hundred inputs; ``bench/fuzz.py`` runs
the same properties on many thousands and writes ``bench/results/fuzz.json``.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import socket
import struct
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from conftest import ROOT
from fuzzing import ANY, BROKEN, OK, REPORT, TALLY, call, examples, judge, process_state, time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODELS = ROOT / "edge_runtime/data/models"
IMAGES = ROOT / "edge_runtime/data/samples/images"
AUDIO = ROOT / "edge_runtime/data/samples/audio/keywords.wav"
VISION_LABELS = json.loads((MODELS / "vision/manifest.json").read_text())["labels"]
KWS_LABELS = json.loads((MODELS / "kws/manifest.json").read_text())["labels"]

FUZZ = settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=os.environ.get("EDGE_FUZZ_RANDOM") != "1",
    print_blob=True,
)


@pytest.fixture(scope="module", autouse=True)
def tally_report():
    yield
    if REPORT:
        TALLY.write(REPORT)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- generic mutation of nested data ------------------------------------------------
NAME = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=10)
SCALAR = st.one_of(
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.text(max_size=12),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 1e308, -0.0, "", " ", "0", "-", "../x"]),
)
VALUE = st.recursive(SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(NAME, c, max_size=3), max_leaves=6)


def paths(d, prefix=()) -> list[tuple]:
    """Every key path in nested dicts and lists (containers too)."""
    out = []
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out += paths(v, (*prefix, k))
    return out


def tables(d, prefix=()) -> list[tuple]:
    return [()] * (prefix == ()) + [p for p in paths(d, prefix) if isinstance(get(d, p), dict)]


def get(d, path):
    for k in path:
        d = d[k]
    return d


def put(d, path, value) -> None:
    get(d, path[:-1])[path[-1]] = value


def drop(d, path) -> None:
    del get(d, path[:-1])[path[-1]]


def mutate_text(data, text: bytes) -> bytes:
    """One byte-level edit: cut, delete a slice, insert bytes, duplicate a line, flip a byte."""
    n = len(text)
    op = data.draw(st.sampled_from(["cut", "delete", "insert", "duplicate", "flip"]))
    i = data.draw(st.integers(0, max(0, n - 1)))
    if op == "cut":
        return text[:i]
    if op == "delete":
        return text[:i] + text[i + data.draw(st.integers(1, 64)) :]
    if op == "insert":
        return (
            text[:i]
            + data.draw(
                st.binary(min_size=1, max_size=16)
                | st.sampled_from([b"[", b"]", b'"', b"=", b"\n", b"{", b"\x00", b"\xff", b"#", b"[[x]]\n", b" " * 300])
            )
            + text[i:]
        )
    if op == "duplicate":
        lines = text.splitlines(keepends=True) or [b""]
        j = data.draw(st.integers(0, len(lines) - 1))
        return b"".join(lines[: j + 1] + [lines[j]] + lines[j + 1 :])
    return text[:i] + bytes([text[i] ^ data.draw(st.integers(1, 255))]) + text[i + 1 :] if n else text


# --- configs: check against run --------------------------------------------------------
def base_config(work: Path) -> dict:
    """A config `run` starts here with no hardware: the sample photos and recording as the sources."""
    return {
        "runtime": {"log_level": "warning", "queue_size": 64},
        "camera": {"uri": str(IMAGES), "fps": 30.0, "loop": True, "stall_timeout_s": 2.0, "stride": 1},
        "vision": {"model": "default", "engine": "litert", "top_k": 3, "threshold": 0.5},
        "microphone": {"file": str(AUDIO), "realtime": False, "loop": True, "block_ms": 20},
        "audio": {"model": "default", "engine": "onnx", "false_accepts_per_hour": 0.5},
        "fusion": {
            "passthrough": True,
            "passthrough_cooldown_s": 2.0,
            "rules": [
                {
                    "name": "dog_stop",
                    "within_s": 2.5,
                    "cooldown_s": 2.0,
                    "all": [
                        {"modality": "vision", "label": "Pekingese", "min_score": 0.5},
                        {"modality": "audio", "label": "stop"},
                    ],
                }
            ],
            "weighted": {
                "labels": {"go_dog": {"vision": "Pekingese", "audio": "go"}},
                "weights": {"vision": 0.5, "audio": 0.5},
                "threshold": 0.6,
            },
        },
        "sinks": {
            "jsonl": {"path": str(work / "events.jsonl"), "max_bytes": 1 << 20, "backups": 2},
            "http": {"host": "127.0.0.1", "port": 0},
            "mqtt": {"host": "127.0.0.1", "port": closed_port(), "qos": 1, "spool_dir": str(work / "spool")},
        },
    }


def unit(lo=0.0, hi=1.0):
    return st.floats(lo, hi)


# Valid values, key by key (the documented ranges; a few kept small so a run stays quick).
VALID = {
    ("runtime", "log_level"): st.sampled_from(["debug", "info", "warning", "error"]),
    ("runtime", "queue_size"): st.integers(1, 100000),
    ("camera", "fps"): st.floats(0.5, 1000),
    ("camera", "stride"): st.integers(1, 1000),
    ("camera", "stall_timeout_s"): st.floats(0.01, 86400),
    ("camera", "loop"): st.booleans(),
    ("camera", "width"): st.integers(1, 16384),
    ("vision", "engine"): st.sampled_from(["auto", "litert", "onnx"]),
    ("vision", "threads"): st.integers(1, 4),
    ("vision", "top_k"): st.integers(1, 1000),
    ("vision", "threshold"): unit(),
    ("microphone", "block_ms"): st.integers(1, 10000),
    ("microphone", "realtime"): st.just(False),
    ("audio", "engine"): st.sampled_from(["auto", "litert", "onnx"]),
    ("audio", "threads"): st.integers(1, 4),
    ("audio", "threshold"): unit(),
    ("audio", "false_accepts_per_hour"): st.floats(0, 1000),
    ("audio", "smoothing_steps"): st.integers(1, 1000),
    ("audio", "refractory_s"): st.floats(0, 86400),
    ("fusion", "passthrough"): st.booleans(),
    ("fusion", "passthrough_cooldown_s"): st.floats(0, 86400),
    ("fusion", "rules", 0, "within_s"): st.floats(1e-3, 86400),
    ("fusion", "rules", 0, "cooldown_s"): st.floats(0, 86400),
    ("fusion", "rules", 0, "all", 0, "label"): st.sampled_from(VISION_LABELS),
    ("fusion", "rules", 0, "all", 0, "min_score"): unit(),
    ("fusion", "rules", 0, "all", 1, "label"): st.sampled_from(KWS_LABELS),
    ("fusion", "weighted", "weights", "vision"): st.floats(0.01, 1e6),
    ("fusion", "weighted", "threshold"): unit(),
    ("fusion", "weighted", "window_s"): st.floats(1e-3, 86400),
    ("sinks", "jsonl", "max_bytes"): st.integers(1, 1 << 40),
    ("sinks", "jsonl", "backups"): st.integers(0, 1000),
    ("sinks", "http", "timeout_s"): st.floats(0.001, 300),
    ("sinks", "http", "max_connections"): st.integers(1, 64),
    ("sinks", "mqtt", "port"): st.integers(1, 65535),
    ("sinks", "mqtt", "qos"): st.sampled_from([1, 2]),
    ("sinks", "mqtt", "keepalive"): st.integers(1, 65535),
    ("sinks", "mqtt", "topic_prefix"): st.text("abcxyz/_-0123456789", min_size=1, max_size=20).filter(
        lambda s: not s.startswith("/") and not s.endswith("/") and "//" not in s
    ),
    ("sinks", "mqtt", "spool_max_mb"): st.floats(0.001, 100000),
    ("sinks", "mqtt", "spool_max_age_days"): st.floats(0.001, 3650),
}
OPTIONAL = [
    ("sinks", "mqtt"),
    ("sinks", "http"),
    ("sinks", "jsonl"),
    ("fusion", "weighted"),
    ("fusion", "rules"),
    ("runtime",),
    ("camera", "fps"),
    ("camera", "stride"),
    ("vision", "top_k"),
    ("audio", "false_accepts_per_hour"),
]
NOT_A_NUMBER = st.sampled_from([math.nan, math.inf, -math.inf, "1", True, [1], {"a": 1}])
# Broken values, key by key: out of range, wrong type, not finite, or a value the models cannot meet.
BROKEN_VALUES = {
    ("runtime", "log_level"): st.sampled_from(["verbose", "", "INFO ", 3]),
    ("runtime", "queue_size"): st.integers(max_value=0) | st.integers(100001, 2**70) | NOT_A_NUMBER,
    ("camera", "uri"): st.sampled_from([str(ROOT / "no-such-folder"), str(AUDIO), ""]),
    ("camera", "fps"): st.floats(max_value=0) | st.floats(1000.001, 1e300) | NOT_A_NUMBER,
    ("camera", "stride"): st.integers(max_value=0) | st.integers(1001, 2**64),
    ("camera", "stall_timeout_s"): st.floats(max_value=0) | st.floats(86400.1, 1e308) | NOT_A_NUMBER,
    ("camera", "fourcc"): st.text(max_size=3) | st.text(min_size=5, max_size=9),
    ("vision", "model"): st.sampled_from([str(ROOT / "no-such-model"), str(IMAGES), "", "../../etc"]),
    ("vision", "engine"): st.sampled_from(["tpu", "", "LITERT", 1]),
    ("vision", "threads"): st.integers(max_value=0) | st.integers(257, 2**64),
    ("vision", "top_k"): st.integers(max_value=0) | st.integers(1001, 2**63),
    ("vision", "threshold"): st.floats(max_value=-1e-9) | st.floats(1.000001, 1e300) | NOT_A_NUMBER,
    ("vision", "providers"): st.sampled_from([[1, 2], ["NoSuchExecutionProvider"], "CPU"]),
    ("vision", "delegates"): st.sampled_from([[{"kind": "tpu"}], [{"kind": "external"}], [1]]),
    ("microphone", "file"): st.sampled_from([str(ROOT / "missing.wav"), str(IMAGES)]),
    ("microphone", "block_ms"): st.integers(max_value=0) | st.integers(10001, 2**64),
    ("audio", "threshold"): st.floats(max_value=-1e-9) | st.floats(1.000001, 1e300) | NOT_A_NUMBER,
    ("audio", "false_accepts_per_hour"): st.floats(max_value=-1e-9) | st.floats(1000.001, 1e300) | NOT_A_NUMBER,
    ("audio", "smoothing_steps"): st.integers(max_value=0) | st.integers(1001, 10**20),
    ("audio", "refractory_s"): st.floats(max_value=-1e-9) | st.floats(86400.1, 1e308) | NOT_A_NUMBER,
    ("fusion", "passthrough_cooldown_s"): st.floats(max_value=-1e-9) | st.floats(86400.1, 1e308) | NOT_A_NUMBER,
    ("fusion", "rules", 0, "name"): st.just(""),
    ("fusion", "rules", 0, "all"): st.just([]),
    ("fusion", "rules", 0, "within_s"): st.floats(max_value=0) | st.floats(86400.1, 1e308) | NOT_A_NUMBER,
    ("fusion", "rules", 0, "all", 0, "label"): st.sampled_from(["dog", "tabby", "", "Pekingese "]),
    ("fusion", "rules", 0, "all", 0, "modality"): st.sampled_from(["smell", "", "VISION"]),
    ("fusion", "rules", 0, "all", 1, "label"): st.sampled_from(["stop!", "Stop", "hello"]),
    ("fusion", "rules", 0, "all", 0, "min_score"): st.floats(1.0001, 10) | NOT_A_NUMBER,
    ("fusion", "weighted", "weights", "vision"): st.floats(max_value=-1e-9) | NOT_A_NUMBER,
    ("fusion", "weighted", "weights", "smell"): st.floats(0, 1),
    ("fusion", "weighted", "labels", "go_dog", "vision"): st.sampled_from(["dog", "nope"]),
    ("fusion", "weighted", "window_s"): st.floats(86400.1, 1e308) | NOT_A_NUMBER,
    ("sinks", "jsonl", "max_bytes"): st.integers(max_value=0) | st.integers(2**40 + 1, 2**70),
    ("sinks", "jsonl", "backups"): st.integers(max_value=-1) | st.integers(1001, 10**15),
    ("sinks", "http", "host"): st.sampled_from(["0.0.0.0", "", "192.0.2.1", "::"]),
    ("sinks", "http", "port"): st.integers(max_value=-1) | st.integers(65536, 2**64),
    ("sinks", "http", "token_file"): st.sampled_from([str(ROOT / "no-token"), str(IMAGES), "/dev/null"]),
    ("sinks", "http", "timeout_s"): st.floats(max_value=0) | st.floats(300.01, 1e308) | NOT_A_NUMBER,
    ("sinks", "mqtt", "port"): st.integers(max_value=0) | st.integers(65536, 2**64),
    ("sinks", "mqtt", "qos"): st.integers(3, 100) | st.integers(max_value=-1),
    ("sinks", "mqtt", "topic_prefix"): st.sampled_from(["+", "#", "a/+/b", "", "a\x00b", "/a", "a/"]),
    ("sinks", "mqtt", "discovery_prefix"): st.sampled_from(["", "+", "ha/#"]),
    ("sinks", "mqtt", "password"): st.just("secret"),
    ("sinks", "mqtt", "keepalive"): st.integers(max_value=0) | st.integers(65536, 2**64),
    ("sinks", "mqtt", "spool_max_mb"): st.floats(max_value=0) | st.floats(100001, 1e308) | NOT_A_NUMBER,
    ("sinks", "mqtt", "ca_file"): st.sampled_from([str(ROOT / "no-ca.pem"), str(IMAGES)]),
}


def start_and_stop(path: Path) -> tuple[bool, str]:
    """What `run` does at start (load, open models, sources and sinks, start the workers), then stop.

    Accepted when it started and every worker is alive after its first steps; refused with
    its one line otherwise."""
    from edge_runtime.cli import UserError, _load_config, _start

    with process_state(), time_limit():
        try:
            daemon = _start(_load_config(path))
        except UserError as e:
            assert "\n" not in str(e), str(e)
            return False, str(e)
        try:
            deadline = time.monotonic() + 3.0
            while (
                time.monotonic() < deadline
                and not daemon.dead_workers
                and not all(s.inferences for s in daemon.stats.values())
            ):
                time.sleep(0.02)
            time.sleep(0.05)  # fusion and the sinks see the first decisions
            dead = dict(daemon.dead_workers)
        finally:
            daemon.stop()
    assert not dead, f"{path}: a worker died in run: {dead}"
    return True, ""


@settings(FUZZ, max_examples=examples(50))
@given(data=st.data())
def test_config_check_refuses_what_run_refuses(data, work):
    from edge_runtime.cli import main

    cfg = base_config(work)
    op = data.draw(
        st.sampled_from(["valid", "valid", "broken", "broken", "any", "drop", "unknown", "text", "garbage"]), label="op"
    )
    expect = {"valid": OK, "broken": BROKEN, "unknown": BROKEN, "garbage": BROKEN}.get(op, ANY)
    if op == "valid":
        for key in data.draw(st.lists(st.sampled_from(sorted(VALID, key=str)), max_size=4, unique=True)):
            put(cfg, key, data.draw(VALID[key], label=str(key)))
        for key in data.draw(st.lists(st.sampled_from(OPTIONAL), max_size=2, unique=True), label="dropped"):
            drop(cfg, key)
    elif op == "broken":
        key = data.draw(st.sampled_from(sorted(BROKEN_VALUES, key=str)), label="key")
        put(cfg, key, data.draw(BROKEN_VALUES[key], label="value"))
        if key == ("sinks", "mqtt", "password"):
            cfg["sinks"]["mqtt"].pop("username", None)
    elif op == "any":
        for key in data.draw(st.lists(st.sampled_from(paths(cfg)), min_size=1, max_size=2), label="keys"):
            try:  # (a first change may have replaced the table of the second key)
                get(cfg, key)
            except (KeyError, IndexError, TypeError):
                continue
            put(cfg, key, data.draw(VALUE, label="value"))
    elif op == "drop":
        drop(cfg, data.draw(st.sampled_from(paths(cfg)), label="key"))
    elif op == "unknown":
        table = data.draw(st.sampled_from([t for t in tables(cfg) if t[-1:] not in (("labels",), ("weights",))]))
        name = data.draw(NAME.filter(lambda k: k not in get(cfg, table)))
        get(cfg, table)[name] = data.draw(SCALAR)
    text = (
        tomli_w.dumps(cfg).encode()
        if op != "garbage"
        else data.draw(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
    )
    if op == "text":
        text = mutate_text(data, text)
    path = work / "fuzz.toml"
    path.write_bytes(text)
    checked = call(main, ["check", "--config", str(path)])
    started, why = start_and_stop(path)
    TALLY.seconds("config", checked.seconds)
    assert (checked.code == 0) == started, (
        f"check {'accepted' if checked.code == 0 else 'refused'} but run "
        f"{'started' if started else 'refused: ' + why}:\n{text.decode(errors='replace')}"
    )
    judge("config", expect, started, text.decode(errors="replace"))


# --- manifests: classify and listen on a tampered copy ---------------------------------
def manifest_broken(m: dict, data) -> str | None:
    """One change that makes a manifest unusable (or dishonest) by construction; the format of the one
    artifact it breaks, or None when it breaks the whole manifest."""
    art = data.draw(st.sampled_from(m["artifacts"]), label="artifact")
    image = (m["preprocessing"] or {}).get("image")
    audio = (m["preprocessing"] or {}).get("audio")
    choices = [
        lambda: m.update(schema="edge-runtime/other"),
        lambda: m.update(schema_version=data.draw(st.sampled_from([0, 2, "1", None]))),
        lambda: m.update(labels=m["labels"][:-1]),
        lambda: m.update(labels=m["labels"] + ["extra"]),
        lambda: m["labels"].__setitem__(0, data.draw(st.sampled_from([5, None, ["x"]]))),
        lambda: m.update(artifacts=[]),
        lambda: m.update(artifacts=data.draw(st.sampled_from([None, {}, "x"]))),
        # every artifact's files are verified on load, whichever engine runs
        lambda: art["file"].update(
            path=data.draw(st.sampled_from(["../x", "/etc/passwd", None, "missing.tflite", "", "."]))
        ),
        lambda: art["file"].update(sha256="0" * 64),
        lambda: art["file"].update(size=data.draw(st.sampled_from([1, -1, "x", 2**70]))),
        lambda: art.update(extra_files=[{"path": "../../x", "sha256": "0" * 64, "size": 1}]),
        # and every field is type- and range-checked
        lambda: art["inputs"][0].update(dtype=data.draw(st.sampled_from(["int7", "complex64", "", 8]))),
        lambda: art["inputs"][0].update(shape=data.draw(st.sampled_from([[0], "x", [1e9], [-1, 3]]))),
        lambda: art.update(format=data.draw(st.sampled_from(["tflite2", "", None]))),
    ]
    per_artifact = [
        lambda: art["inputs"][0].update(name="no_such_tensor"),
        lambda: art["outputs"][0].update(name="no_such_tensor"),
        lambda: art["inputs"][0].update(shape=data.draw(st.sampled_from([[1, 2, 3], [], [1, 224, 224, 4]]))),
        lambda: art["outputs"][0].update(shape=[1, 7]),
    ]
    if image:
        choices += [
            lambda: image.update(size=data.draw(st.sampled_from([[0, 0], [224], [-1, 224], [224, 224.5], [10**6, 2]]))),
            lambda: image.update(std=data.draw(st.sampled_from([[0, 0, 0], [1], [math.nan] * 3]))),
            lambda: image.update(mean=data.draw(st.sampled_from([[1], ["a", "b", "c"], [math.inf] * 3]))),
            lambda: image.update(resize=data.draw(st.sampled_from(["bogus", "", 1]))),
            lambda: image.update(color="cmyk"),
            lambda: image.update(layout="nwhc"),
        ]
    if audio:
        choices += [
            lambda: audio.update(sample_rate=data.draw(st.sampled_from([0, -16000, 1, 10**9, 16000.5, "16000"]))),
            lambda: audio.update(hop_ms=data.draw(st.sampled_from([0, -10, math.nan, 1e9]))),
            lambda: audio.update(n_fft=data.draw(st.sampled_from([0, 1, 10**9]))),
            lambda: audio.update(n_mels=data.draw(st.sampled_from([0, 41, 10**6]))),
            lambda: audio.update(fmax=1e9),
            lambda: audio.update(frames_per_step=data.draw(st.sampled_from([0, 3, 5, 10**6]))),
            lambda: (
                m["metrics"]
                .setdefault("detector", {})
                .update(
                    data.draw(
                        st.sampled_from(
                            [
                                {"threshold": 5},
                                {"lanes": 10**6},
                                {"smoothing_steps": "x"},
                                {"threshold": math.nan},
                                {"refractory_s": -1},
                                {"lanes": 0},
                            ]
                        )
                    )
                )
            ),
        ]
    if data.draw(st.booleans(), label="one artifact"):
        fmt = art["format"]
        data.draw(st.sampled_from(per_artifact), label="change")()
        return fmt
    data.draw(st.sampled_from(choices), label="change")()
    return None


def manifest_folder(work: Path, kind: str, text: bytes) -> Path:
    """A copy of a shipped model folder (model files linked, not copied) with ``text`` as its manifest."""
    folder = work / f"model-{kind}"
    if not folder.exists():
        folder.mkdir()
        for f in (MODELS / kind).iterdir():
            if f.name != "manifest.json":
                os.link(f, folder / f.name)
    (folder / "manifest.json").write_bytes(text)
    return folder


@settings(FUZZ, max_examples=examples(40))
@given(data=st.data())
def test_manifests_are_refused_in_one_line_or_run(data, work):
    from edge_runtime.cli import main

    kind = data.draw(st.sampled_from(["vision", "kws"]), label="model")
    m = json.loads((MODELS / kind / "manifest.json").read_text())
    op = data.draw(
        st.sampled_from(["valid", "broken", "broken", "broken", "any", "drop", "text", "garbage"]), label="op"
    )
    expect = {"valid": OK, "broken": BROKEN, "garbage": BROKEN}.get(op, ANY)
    if op == "valid":  # what a manifest may say differently and still be the same model
        m["name"] = data.draw(st.text(min_size=1, max_size=40))
        m["created"] = data.draw(st.text(max_size=40))
        m["metrics"].pop(data.draw(st.sampled_from(sorted(m["metrics"]))), None)
    elif op == "broken":
        broken_format = manifest_broken(m, data)
    elif op in ("any", "drop"):
        key = data.draw(st.sampled_from(paths(m)), label="key")
        if op == "any":
            put(m, key, data.draw(VALUE, label="value"))
        else:
            drop(m, key)
    text = json.dumps(m, indent=1, allow_nan=True).encode()
    if op == "text":
        text = mutate_text(data, text)
    elif op == "garbage":
        text = data.draw(st.binary(max_size=300) | st.sampled_from([b"[" * 100000, b"{}", b"null", b'"x"']))
    folder = manifest_folder(work, kind, text)
    engine = data.draw(st.sampled_from(["auto", "litert", "onnx"]), label="engine")
    if op == "broken" and broken_format and {"litert": "tflite", "onnx": "onnx"}.get(engine) != broken_format:
        expect = ANY  # the broken artifact is not the one this engine opens (auto: the first that loads)
    # a manifest without labels (or a label list that is not one) names classes by their index
    labels = m.get("labels") if isinstance(m, dict) and isinstance(m.get("labels"), list) and m["labels"] else None
    said = labels if labels is not None else [str(i) for i in range(1000)]
    if kind == "vision":
        r = call(main, ["classify", str(IMAGES / "dog.jpg"), "--model", str(folder), "--engine", engine, "--json"])
        accepted = r.code == 0
        if accepted:  # what it said is a classification of the photo
            top = json.loads(r.out)["top"]
            assert top and all(t["label"] in said and 0 <= t["score"] <= 1 for t in top), r.out
    else:
        r = call(main, ["listen", str(AUDIO), "--model", str(folder), "--engine", engine, "--json"])
        accepted = r.code == 0
        if accepted:
            assert all(json.loads(line)["label"] in said for line in r.out.splitlines()), r.out
    TALLY.seconds("manifest", r.seconds)
    judge("manifest", expect, accepted, text[:3000].decode(errors="replace"))


# --- WAV files: the reader --------------------------------------------------------------
WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]


def wav_bytes(path: Path, data, subtype: str | None = None) -> tuple[int, int, int]:
    """A valid WAV at ``path``; returns (rate, channels, frames)."""
    import soundfile

    rate = data.draw(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]), label="rate")
    channels = data.draw(st.integers(1, 4), label="channels")
    frames = data.draw(st.integers(1, 3 * rate), label="frames")
    subtype = subtype or data.draw(st.sampled_from(WAV_SUBTYPES), label="subtype")
    seed = data.draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).uniform(-1, 1, (frames, channels)).astype(np.float32)
    soundfile.write(str(path), x, rate, subtype=subtype, format="WAV")
    return rate, channels, frames


def riff_patch(raw: bytes, field: str, value: int) -> bytes:
    """``raw`` with one field of its fmt chunk (or the data chunk's size) set to ``value``."""
    fmt = raw.index(b"fmt ") + 8
    offset, size = {
        "channels": (fmt + 2, 2),
        "rate": (fmt + 4, 4),
        "bits": (fmt + 14, 2),
        "data_size": (raw.index(b"data") + 4, 4),
        "format": (fmt, 2),
    }[field]
    return raw[:offset] + value.to_bytes(size, "little") + raw[offset + size :]


def read_all_wav(path: Path, rate: int = 16000):
    """The reader as `listen` and the microphone's file source use it: header, then blocks."""
    from edge_runtime.audio.wav import AudioError, wav_blocks, wav_info

    t0 = time.monotonic()
    with time_limit():
        try:
            info = wav_info(path, rate, max_seconds=600)
            blocks = list(wav_blocks(info, rate))
        except AudioError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)
            return None, time.monotonic() - t0
    out = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    assert out.dtype == np.float32 and out.ndim == 1 and np.isfinite(out).all() and np.all(np.abs(out) <= 1.0)
    return (info, out), time.monotonic() - t0


@settings(FUZZ, max_examples=examples(150))
@given(data=st.data())
def test_wav_reader_decodes_or_refuses_in_one_line(data, work):
    path = work / "fuzz.wav"
    op = data.draw(st.sampled_from(["valid", "broken", "broken", "any", "garbage"]), label="op")
    expect = {"valid": OK, "broken": BROKEN, "garbage": BROKEN}.get(op, ANY)
    if op == "valid":
        rate, channels, frames = wav_bytes(path, data)
    elif op == "broken":
        how = data.draw(
            st.sampled_from(
                [
                    "truncated",
                    "rate",
                    "channels",
                    "nan",
                    "empty",
                    "no_data",
                    "bits",
                    "header_only",
                    "promises_gigabytes",
                    "long",
                ]
            ),
            label="how",
        )
        if how == "nan":
            wav_bytes(path, data, "FLOAT")
            raw = bytearray(path.read_bytes())
            start = raw.index(b"data") + 8
            i = start + 4 * data.draw(st.integers(0, (len(raw) - start) // 4 - 1))
            raw[i : i + 4] = struct.pack("<f", data.draw(st.sampled_from([math.nan, math.inf, -math.inf])))
            path.write_bytes(bytes(raw))
        elif how == "long":  # an 11-minute file: longer than a file source takes
            import soundfile

            soundfile.write(str(path), np.zeros((8000 * 660, 1), np.int16), 8000, subtype="PCM_16")
        else:
            wav_bytes(path, data, data.draw(st.sampled_from(WAV_SUBTYPES)) if how != "bits" else "PCM_16")
            raw = path.read_bytes()
            header = raw.index(b"data") + 8
            raw = {
                "truncated": lambda: (
                    raw[: data.draw(st.integers(header, len(raw) - 1))] if len(raw) - header > 16 else raw[:header]
                ),
                "rate": lambda: riff_patch(raw, "rate", data.draw(st.sampled_from([0, 1, 999, 400_000, 2**32 - 1]))),
                "channels": lambda: riff_patch(raw, "channels", data.draw(st.sampled_from([0, 33, 65535]))),
                "empty": lambda: b"",
                "no_data": lambda: riff_patch(raw[:header], "data_size", 0),
                "bits": lambda: riff_patch(raw, "bits", data.draw(st.sampled_from([0, 1, 7, 13, 65535]))),
                "header_only": lambda: raw[: data.draw(st.integers(1, header - 1))],
                "promises_gigabytes": lambda: riff_patch(raw, "data_size", 2**32 - 2),
            }[how]()
            path.write_bytes(raw)
    elif op == "any":
        wav_bytes(path, data)
        raw = path.read_bytes()
        for _ in range(data.draw(st.integers(1, 4))):
            raw = mutate_text(data, raw)
        path.write_bytes(raw)
    else:
        path.write_bytes(data.draw(st.binary(max_size=2000) | st.binary(max_size=60).map(lambda b: b"RIFF" + b)))
    got, seconds = read_all_wav(path)
    TALLY.seconds("wav", seconds)
    judge("wav", expect, got is not None, op)
    if op == "valid":  # all of it, resampled to 16 kHz
        info, out = got
        assert (info.sample_rate, info.channels, info.frames) == (rate, channels, frames)
        assert abs(len(out) - frames * 16000 / rate) <= 2


# --- images: the reader -------------------------------------------------------------------
def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header (with a right CRC) claims ``width`` x ``height`` over one tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def image_bytes(data) -> tuple[bytes, int, int]:
    import cv2

    h, w = data.draw(st.integers(1, 64), label="h"), data.draw(st.integers(1, 64), label="w")
    channels = data.draw(st.sampled_from([1, 3, 4]), label="channels")
    ext = data.draw(
        st.sampled_from([".png", ".jpg", ".bmp", ".webp", ".tiff"])
        if channels != 4
        else st.sampled_from([".png", ".webp", ".tiff"]),
        label="format",
    )
    dtype = np.uint16 if ext in (".png", ".tiff") and data.draw(st.booleans()) else np.uint8
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    img = rng.integers(0, np.iinfo(dtype).max, (h, w, channels) if channels > 1 else (h, w), dtype=dtype)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes(), h, w


def read_any_image(path: Path):
    from edge_runtime.preprocess import ImageError, read_image

    t0 = time.monotonic()
    with time_limit():
        try:
            img = read_image(path)
        except ImageError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)
            return None, time.monotonic() - t0
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size
    return img, time.monotonic() - t0


@settings(FUZZ, max_examples=examples(150))
@given(data=st.data())
def test_image_reader_decodes_or_refuses_in_one_line(data, work):
    path = work / "fuzz-image"
    op = data.draw(st.sampled_from(["valid", "broken", "any", "garbage"]), label="op")
    expect = {"valid": OK, "broken": BROKEN, "garbage": BROKEN}.get(op, ANY)
    if op == "valid":
        raw, h, w = image_bytes(data)
    elif op == "broken":
        how = data.draw(st.sampled_from(["huge_header", "header_only", "empty", "text"]), label="how")
        if how == "huge_header":
            raw = png_claiming(data.draw(st.integers(8000, 2**31 - 1)), data.draw(st.integers(8000, 2**31 - 1)))
        elif how == "header_only":
            raw, _, _ = image_bytes(data)
            raw = raw[: data.draw(st.integers(1, 16))]
        else:
            raw = b"" if how == "empty" else data.draw(st.text(max_size=200)).encode()
            raw = b"" if raw.startswith((b"P", b"#?")) else raw  # not a PNM or Radiance header by chance
    elif op == "any":
        raw, _, _ = image_bytes(data)
        for _ in range(data.draw(st.integers(1, 4))):
            raw = mutate_text(data, raw)
    else:
        raw = data.draw(st.binary(max_size=2000).filter(lambda b: not b.startswith((b"BM", b"P", b"\xff\xd8"))))
    path.write_bytes(raw)
    img, seconds = read_any_image(path)
    TALLY.seconds("image", seconds)
    judge("image", expect, img is not None, op)
    if op == "valid":
        assert img.shape[:2] == (h, w)


# --- command lines ---------------------------------------------------------------------------
def cli_files(work: Path) -> dict[str, Path]:
    files = {
        "image": IMAGES / "cat.jpg",
        "wav": AUDIO,
        "vision": MODELS / "vision",
        "kws": MODELS / "kws",
        "folder": work,
        "missing": work / "missing",
        "devnull": Path("/dev/null"),
        "text": work / "notes.txt",
        "toml": work / "broken.toml",
    }
    files["text"].write_text("not an image, a WAV or a model\n")
    files["toml"].write_text("[vision]\nthreshold = 2\n")
    return files


NUMBER = st.sampled_from(
    [
        "0",
        "-1",
        "1",
        "3",
        "nan",
        "inf",
        "-inf",
        "1e308",
        "1e-300",
        "0.5",
        "x",
        "",
        "2**64",
        "99999999999999999999",
        "256",
        "257",
    ]
)


def bad_number(flag: str, text: str) -> bool:
    """Whether ``text`` is outside what ``flag`` takes (the documented ranges)."""
    try:
        x = float(text)
    except ValueError:
        return True
    if flag in ("--top", "--threads"):
        try:
            return not 1 <= int(text) <= (256 if flag == "--threads" else 100000)
        except ValueError:
            return True
    low_open, high = {"--chunk-ms": (True, 10000), "--threshold": (True, 1), "--false-accepts-per-hour": (False, 1000)}[
        flag
    ]
    return not (math.isfinite(x) and (0 < x if low_open else 0 <= x) and x <= high)


GOOD_NUMBERS = {
    "--top": ["1", "5"],
    "--threads": ["1", "2"],
    "--chunk-ms": ["10", "100", "1000"],
    "--threshold": ["0.5", "1"],
    "--false-accepts-per-hour": ["0", "0.5", "10"],
    "--bogus": ["1"],
}


LAST_COUNTS = ("--threshold", "--false-accepts-per-hour")


def is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def argv_for(data, files: dict[str, Path]) -> tuple[list[str], bool]:
    """A command line a user might type (a real command, flags in any order, values of any kind) and
    whether it is broken by construction; every other one must work."""
    key = st.sampled_from(sorted(files))
    engines = st.sampled_from(["auto", "litert", "onnx", "gpu", ""])
    command = data.draw(
        st.sampled_from(
            ["classify", "listen", "check", "run", "devices", "demo --help", "--version", "--help", "bogus", ""]
        ),
        label="command",
    )
    if command not in ("classify", "listen", "check", "run", "devices"):
        return command.split(), command in ("bogus", "")
    argv, broken = [command], False
    if command in ("classify", "listen"):
        good, model = ("image", "vision") if command == "classify" else ("wav", "kws")
        inputs = data.draw(st.lists(st.just(good) | key, max_size=2), label="inputs")
        argv += [str(files[k]) for k in inputs]
        broken, wrong_model, last = not inputs or any(k != good for k in inputs), False, {}
        flags = ["--model", "--engine", "--threads", "--json", "--bogus"] + (
            ["--top"] if command == "classify" else ["--threshold", "--false-accepts-per-hour", "--chunk-ms"]
        )
        for flag in data.draw(st.lists(st.sampled_from(flags), max_size=4), label="flags"):
            if flag == "--json":
                argv.append(flag)
            elif flag == "--model":
                k = data.draw(st.just(model) | key)
                argv += [flag, str(files[k])]
                wrong_model = k != model  # the last --model given counts
            elif flag == "--engine":
                e = data.draw(st.sampled_from(["auto", "litert", "onnx"]) | engines)
                argv += [flag, e]
                broken |= e not in ("auto", "litert", "onnx")
            else:
                v = data.draw(st.sampled_from(GOOD_NUMBERS[flag]) | NUMBER)
                argv += [flag, v]
                if flag in LAST_COUNTS:  # parsed as a number each time, its range checked on the last one
                    broken |= not is_float(v)
                    last[flag] = v
                else:
                    broken |= flag == "--bogus" or bad_number(flag, v)  # argparse checks every one given
        broken |= wrong_model or any(bad_number(flag, v) for flag, v in last.items())
    elif command in ("check", "run"):  # no file here is a config that starts
        argv += ["--config", str(files[data.draw(key)])]
        broken = True
    elif data.draw(st.booleans()):
        argv.append(data.draw(st.sampled_from(["--json", "--bogus"])))
        broken = argv[-1] == "--bogus"
    return argv, broken


@settings(FUZZ, max_examples=examples(120))
@given(data=st.data())
def test_command_lines_end_in_exit_0_or_one_line(data, work):
    from edge_runtime.cli import main

    argv, broken = argv_for(data, cli_files(work))
    r = call(main, argv)
    TALLY.seconds("cli", r.seconds)
    judge("cli", BROKEN if broken else OK, r.code == 0, argv)
    if r.code == 0 and "--json" in argv and argv[0] in ("classify", "listen"):  # every line is one JSON object
        assert all(isinstance(json.loads(line), dict) for line in r.out.splitlines()), r.out


# --- bundles: edge-deploy verify -------------------------------------------------------------
def stage_bundle(root: Path, info: dict) -> Path:
    from deploy import BUNDLE_TOP
    from deploy.archive import write_sums

    stage = root / BUNDLE_TOP
    shutil.rmtree(root, ignore_errors=True)
    (stage / "models/vision").mkdir(parents=True)
    (stage / "install.sh").write_text("#!/bin/sh\necho install\n")
    (stage / "models/vision/manifest.json").write_text('{"name": "x"}\n')
    (stage / "bundle.json").write_text(json.dumps(info, allow_nan=True) + "\n")
    write_sums(stage)
    return stage


BUNDLE_INFO = {
    "schema": "edge-runtime/bundle",
    "schema_version": 1,
    "target": "rpi4-bookworm",
    "arch": "aarch64",
    "python": "3.11",
    "edge_runtime": "0.1.0",
    "project_wheel": "edge_runtime-0.1.0-py3-none-any.whl",
    "config": "edge-runtime.toml.dist",
    "wheels": [{"file": "a.whl", "name": "a", "version": "1"}],
    "models": [{"folder": "models/vision", "name": "x"}],
}


def tar_of(stage: Path, out: Path, data, how: str | None) -> None:
    """The bundle archive of ``stage``, with one member-level tampering ``how`` (or none)."""
    from deploy import BUNDLE_TOP
    from deploy.archive import write_archive

    if how is None:
        write_archive(stage, out, mtime=0)
        return
    if how == "content":  # a file changed after SHA256SUMS was written
        (stage / "install.sh").write_text("#!/bin/sh\nrm -rf /\n")
    elif how == "unlisted":
        (stage / "extra.sh").write_text("echo extra\n")
    elif how == "missing":
        (stage / "install.sh").unlink()
    elif how == "sums":
        (stage / "SHA256SUMS").write_text(
            data.draw(st.sampled_from(["", "x\n", "0" * 64 + "  ../../etc/passwd\n", "0" * 63 + "  install.sh\n"]))
        )
    with tarfile.open(out, "w:gz") as tar:  # by hand: write_archive itself refuses all of these
        for f in sorted(stage.rglob("*")):
            tar.add(f, arcname=f"{BUNDLE_TOP}/{f.relative_to(stage)}", recursive=False)
        if how in ("content", "unlisted", "missing", "sums"):
            return
        member = tarfile.TarInfo(
            {
                "symlink": f"{BUNDLE_TOP}/link",
                "hardlink": f"{BUNDLE_TOP}/hard",
                "traversal": f"{BUNDLE_TOP}/../evil",
                "absolute": "/tmp/evil",
                "outside": "elsewhere/file",
                "device": f"{BUNDLE_TOP}/dev",
                "twice": f"{BUNDLE_TOP}/install.sh",
            }[how]
        )
        member.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}.get(
            how, tarfile.REGTYPE
        )
        member.linkname = "/etc/passwd" if how in ("symlink", "hardlink") else ""
        tar.addfile(member, io.BytesIO(b"") if member.type == tarfile.REGTYPE else None)


@settings(FUZZ, max_examples=examples(80))
@given(data=st.data())
def test_bundles_are_verified_or_refused_in_one_line(data, work):
    from deploy.cli import main

    info = copy.deepcopy(BUNDLE_INFO)
    op = data.draw(st.sampled_from(["valid", "member", "member", "info", "info_any", "bytes", "garbage"]), label="op")
    expect = {"valid": OK, "member": BROKEN, "info": BROKEN, "garbage": BROKEN}.get(op, ANY)
    how = None
    if op == "member":
        how = data.draw(
            st.sampled_from(
                [
                    "content",
                    "unlisted",
                    "missing",
                    "sums",
                    "symlink",
                    "hardlink",
                    "traversal",
                    "absolute",
                    "outside",
                    "device",
                    "twice",
                ]
            ),
            label="how",
        )
    elif op == "info":
        key = data.draw(st.sampled_from(sorted(BUNDLE_INFO)), label="key")
        if data.draw(st.booleans()):
            del info[key]
        else:
            info[key] = data.draw(
                st.sampled_from([None, 1.5, True, {}, "x", -1]).filter(
                    lambda v: type(v) is not type(BUNDLE_INFO[key]) or key in ("schema", "wheels", "models")
                ),
                label="value",
            )
            if key in ("wheels", "models"):
                info[key] = [info[key]]  # an item that is not an object with string fields
    elif op == "info_any":
        put(info, data.draw(st.sampled_from(paths(info)), label="key"), data.draw(VALUE, label="value"))
    out = work / "bundle.tar.gz"
    tar_of(stage_bundle(work / "stage", info), out, data, how)
    if op == "bytes":
        raw = out.read_bytes()
        for _ in range(data.draw(st.integers(1, 3))):
            raw = mutate_text(data, raw)
        out.write_bytes(raw)
    elif op == "garbage":
        out.write_bytes(data.draw(st.binary(max_size=500) | st.just(b"\x1f\x8b" + b"\0" * 20)))
    r = call(main, ["verify", str(out)])
    TALLY.seconds("bundle", r.seconds)
    judge("bundle", expect, r.code == 0, (op, how))
    if r.code == 0:  # what verify vouched for is what was built
        shown = json.loads(r.out)
        assert json.dumps({k: shown[k] for k in info}, sort_keys=True) == json.dumps(info, sort_keys=True), r.out
        assert shown["files"] == 4, r.out
