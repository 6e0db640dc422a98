"""Deploy for real: bundles cross-built here from PyPI wheels, installed offline by install.sh into a
fake root (a stand-in systemctl starts the installed unit's commands as systemd would for
Type=notify), health checks on 127.0.0.1, rollback, ssh through a local sshd, and the Ansible
playbook against localhost. No real systemd, nothing outside temp folders is touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, require

from deploy import BUNDLE_TOP, DeployError
from deploy.archive import write_archive, write_sums

VISION = ROOT / "edge_runtime/data/models/vision"
KWS = ROOT / "edge_runtime/data/models/kws"
IMAGES = ROOT / "edge_runtime/data/samples/images"
INSTALL_SH = ROOT / "deploy/install.sh"
PLAYBOOK = ROOT / "deploy/ansible/playbook.yml"
PY = sys.executable
HOST_PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def edge_deploy(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "deploy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, port: int, duration_s: float | None = None, model: str = "models/vision") -> Path:
    """The daemon without hardware: the camera reads the sample images in a loop, no microphone."""
    runtime = f"duration_s = {duration_s}\n" if duration_s else ""
    path.write_text(
        f'[runtime]\nlog_level = "info"\n{runtime}\n'
        f'[camera]\nuri = "{IMAGES}"\nloop = true\n\n'
        f'[vision]\nmodel = "{model}"\nengine = "litert"\n\n'
        f'[sinks.jsonl]\npath = "-"\n\n'
        f'[sinks.http]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    return path


def healthz(port: int) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return -1


def models() -> list[Path]:
    """The shipped models: vision, and the keyword model when it is there and verifies."""
    from edge_runtime.manifest import ManifestError, load

    out = [VISION]
    try:
        load(KWS)
        out.append(KWS)
    except ManifestError:
        pass
    return out


# --- bundles, built once per session ---------------------------------------------------------------
@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def x86_bundle(bundle_dir):
    """x86_64 for this machine's CPython, so it can really be installed here."""
    cfg = write_config(bundle_dir / "x86.toml", free_port())
    out = bundle_dir / "edge-runtime-x86_64.tar.gz"
    r = edge_deploy(
        "bundle",
        "--target",
        "x86_64",
        "--python",
        HOST_PY,
        "--models",
        *map(str, models()),
        "--config",
        str(cfg),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def rpi4_bundle(bundle_dir):
    cfg = write_config(bundle_dir / "rpi4.toml", 8080)
    out = bundle_dir / "edge-runtime-rpi4.tar.gz"
    r = edge_deploy(
        "bundle",
        "--target",
        "rpi4",
        "--python",
        "3.11",
        "--models",
        *map(str, models()),
        "--config",
        str(cfg),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    return out


# --- a fake root with a stand-in systemctl -------------------------------------------------------------
FAKE_SYSTEMCTL = r'''
"""systemctl for a fake root: runs the installed unit's ExecStartPre=/ExecStart= (with its
WorkingDirectory= and Environment=) as systemd does for Type=notify: waits for READY=1 on a
NOTIFY_SOCKET, tracks the main PID, stops it with SIGTERM."""
import os, shlex, signal, socket, subprocess, sys, time
from pathlib import Path

STATE = Path(os.environ["FAKE_SYSTEMD_STATE"])
UNIT_DIR = Path(os.environ["UNIT_DIR"])
STATE.mkdir(parents=True, exist_ok=True)
with open(STATE / "calls.log", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")


def unit(name):
    keys = {}
    for path in [UNIT_DIR / name] + sorted((UNIT_DIR / f"{name}.d").glob("*.conf")):
        if path.is_file():
            for line in path.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith(("#", "[")):
                    k, v = line.split("=", 1)
                    keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def main_pid(name):
    try:
        pid = int((STATE / f"{name}.pid").read_text())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    return None if state in ("Z", "X") else pid


def stop(name):
    pid = main_pid(name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if main_pid(name) is None:
                return 0
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    return 0


def start(name):
    u = unit(name)
    env = dict(os.environ)
    for e in u.get("Environment", []):
        k, v = e.split("=", 1)
        if k not in ("HOME", "XDG_CACHE_HOME"):  # the board's folders, not this machine's
            env[k] = v
    cwd = u.get("WorkingDirectory", ["/"])[-1]
    log = open(STATE / f"{name}.log", "ab")
    for pre in u.get("ExecStartPre", []):
        if subprocess.run(shlex.split(pre), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
            print(f"Job for {name} failed: ExecStartPre failed", file=sys.stderr)
            return 1
    path = STATE / "notify.sock"
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    env["NOTIFY_SOCKET"] = str(path)
    p = subprocess.Popen(shlex.split(u["ExecStart"][-1]), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    (STATE / f"{name}.pid").write_text(str(p.pid))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if b"READY=1" in sock.recv(4096):
                return 0
        except socket.timeout:
            pass
        if p.poll() is not None:
            print(f"Job for {name} failed: main process exited, code={p.returncode}", file=sys.stderr)
            return 1
    print(f"Job for {name} failed: no READY=1", file=sys.stderr)
    return 1


args = [a for a in sys.argv[1:] if not a.startswith("-")]
cmd, names = args[0], args[1:]
if cmd in ("daemon-reload", "enable", "disable"):
    sys.exit(0)
if cmd == "is-active":
    up = main_pid(names[0]) is not None
    if "--quiet" not in sys.argv:
        print("active" if up else "inactive")
    sys.exit(0 if up else 3)
if cmd == "stop":
    sys.exit(stop(names[0]))
if cmd in ("start", "restart"):
    stop(names[0])
    sys.exit(start(names[0]))
sys.exit(f"fake systemctl: {cmd} is not supported")
'''


@dataclass
class FakeRoot:
    path: Path

    @property
    def prefix(self) -> Path:
        return self.path / "opt/edge-runtime"

    @property
    def config(self) -> Path:
        return self.path / "etc/edge-runtime/edge-runtime.toml"

    @property
    def env(self) -> dict[str, str]:
        p = self.path
        return {
            "PREFIX": str(self.prefix),
            "ETC_DIR": str(p / "etc/edge-runtime"),
            "UNIT_DIR": str(p / "etc/systemd/system"),
            "TMPFILES_DIR": str(p / "etc/tmpfiles.d"),
            "SYSTEMCTL": str(p / "bin/systemctl"),
            "FAKE_SYSTEMD_STATE": str(p / "run/systemd"),
            "TMPFILES": "true",
            "USERADD": "false",
            "GROUPADD": "false",
            "SERVICE_USER": "nobody",
            "SERVICE_GROUP": "nogroup",
            "DEV_DIR": str(p / "dev"),
            "PYTHON": PY,
            "HEALTH_INTERVAL": "1",
            "HEALTH_PASSES": "2",
            "HEALTH_TIMEOUT": "90",
            "TMPDIR": str(p / "tmp"),
        }

    def sh(
        self, *args: str, wrap: tuple[str, ...] = (), extra: dict[str, str] | None = None, script: Path = INSTALL_SH
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*wrap, "sh", str(script), *args],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **self.env, **(extra or {})},
        )

    def link(self, name: str) -> str:
        p = self.prefix / name
        return os.readlink(p) if p.is_symlink() else ""

    def releases(self) -> list[str]:
        return sorted(p.name for p in (self.prefix / "releases").iterdir())

    def stop(self) -> None:
        subprocess.run(
            [str(self.path / "bin/systemctl"), "stop", "edge-runtime.service"],
            env={**os.environ, **self.env},
            capture_output=True,
        )


def make_fake_root(path: Path) -> FakeRoot:
    for d in ("bin", "dev", "tmp", "etc", "run"):
        (path / d).mkdir(parents=True, exist_ok=True)
    ctl = path / "bin/systemctl"
    ctl.write_text(f"#!{PY}\n{FAKE_SYSTEMCTL}")
    ctl.chmod(0o755)
    return FakeRoot(path)


@pytest.fixture
def fake_root(tmp_path):
    require(shutil.which("sha256sum") is not None and shutil.which("tar") is not None, "coreutils / tar missing")
    root = make_fake_root(tmp_path / "root")
    yield root
    root.stop()


def assert_untouched_system():
    """What install.sh would write on a real board must not exist on this machine."""
    for p in (
        "/opt/edge-runtime",
        "/etc/edge-runtime",
        "/etc/systemd/system/edge-runtime.service",
        "/etc/tmpfiles.d/edge-runtime.conf",
    ):
        assert not os.path.lexists(p), f"{p} was written on this machine"


# --- the bundles ----------------------------------------------------------------------------------------
def test_rpi4_bundle_holds_only_aarch64_or_pure_python_wheels_for_cp311(rpi4_bundle):
    from packaging.utils import parse_wheel_filename

    from deploy.archive import Bundle

    b = Bundle.open(rpi4_bundle)  # paths and every checksum
    info = b.info
    assert (info["target"], info["arch"], info["python"]) == ("rpi4", "aarch64", "3.11")
    wheels = [f for f in b.files if f.startswith("wheelhouse/") and f.endswith(".whl")]
    names = set()
    for f in wheels:
        name, _, _, tags = parse_wheel_filename(f.split("/", 1)[1])
        names.add(name)
        for t in tags:
            assert t.platform == "any" or (t.platform.startswith("manylinux") and t.platform.endswith("_aarch64")), f
            # CPython 3.11's own ABI, the stable ABI of an older CPython 3, or no Python ABI at all
            # (pure Python, or a library loaded through ctypes/cffi such as soundfile's libsndfile)
            assert t.abi in ("cp311", "abi3", "none"), f
            if t.abi == "abi3":
                assert t.interpreter.startswith("cp3") and int(t.interpreter[3:]) <= 11, f
            else:
                assert t.interpreter in ("cp311", "py3", "py2"), f
        assert "x86_64" not in f
    base = {
        "numpy",
        "ai-edge-litert",
        "opencv-python-headless",
        "soxr",
        "soundfile",
        "sounddevice",
        "paho-mqtt",
        "prometheus-client",
        "edge-runtime",
    }
    assert base <= names
    assert "onnxruntime" not in names  # only with --with-onnx
    pins = b.read("wheelhouse/requirements.txt").decode().split()
    assert {p.split("==")[0] for p in pins if not p.startswith("#") and "==" in p} == names - {"edge-runtime"}
    assert "models/vision/manifest.json" in b.files and "config/edge-runtime.toml" in b.files
    assert {"install.sh", "systemd/edge-runtime.service", "systemd/edge-runtime.conf", "SHA256SUMS"} <= set(b.files)
    print(f"rpi4 bundle: {rpi4_bundle.stat().st_size / 1e6:.1f} MB, {len(wheels)} wheels")


def test_bundle_bad_input_is_one_line_and_writes_nothing(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "b.tar.gz"
    good_cfg = write_config(tmp_path / "ok.toml", 8080)

    def fails(*args: str, want: str) -> None:
        r = edge_deploy("bundle", "--target", "rpi4", *args)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edge-deploy: error:") and want in lines[0], r.stderr
        assert list(out_dir.iterdir()) == []

    fails("--models", str(tmp_path / "nope"), "--config", str(good_cfg), "--out", str(out), want="nope: no such folder")
    tampered = tmp_path / "vision"
    shutil.copytree(VISION, tampered)
    data = bytearray((tampered / "model_int8.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "model_int8.tflite").write_bytes(bytes(data))
    fails("--models", str(tampered), "--config", str(good_cfg), "--out", str(out), want="model_int8.tflite")
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text(good_cfg.read_text().replace("[vision]", "[vision]\nthreshhold = 0.5"))
    fails("--models", str(VISION), "--config", str(bad_cfg), "--out", str(out), want="bad.toml:")
    fails(
        "--models",
        str(VISION),
        "--config",
        str(write_config(tmp_path / "m.toml", 8080, model="models/kws9")),
        "--out",
        str(out),
        want="models/kws9",
    )
    fails(
        "--models",
        str(VISION),
        "--config",
        str(good_cfg),
        "--out",
        "/proc/edge-runtime.tar.gz",
        want="/proc/edge-runtime.tar.gz",
    )
    fails(
        "--models",
        str(VISION),
        "--config",
        str(good_cfg),
        "--out",
        str(tmp_path / "no/such/dir/b.tar.gz"),
        want="does not exist",
    )


def test_a_dependency_without_a_wheel_for_the_board_is_one_clear_line(tmp_path):
    """tflite-runtime publishes aarch64 wheels up to CPython 3.11 only."""
    out = tmp_path / "b.tar.gz"
    r = edge_deploy(
        "bundle",
        "--target",
        "rpi4",
        "--python",
        "3.12",
        "--tflite-runtime",
        "--models",
        str(VISION),
        "--config",
        str(write_config(tmp_path / "c.toml", 8080)),
        "--out",
        str(out),
    )
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("edge-deploy: error: tflite-runtime has no wheel for rpi4 (linux aarch64"), err
    assert "CPython 3.12" in err and "--python 3.11" in err
    assert not out.exists() and list(tmp_path.glob(".b.tar.gz*")) == []


# --- install.sh -----------------------------------------------------------------------------------------
def test_x86_bundle_installs_offline_into_a_fresh_root_and_checks(fake_root, x86_bundle):
    require(
        shutil.which("unshare") is not None and shutil.which("ip") is not None,
        "unshare / ip (util-linux, iproute2) missing",
    )
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    require(probe.returncode == 0, f"cannot make a network namespace: {probe.stderr.decode().strip()}")
    nvmap = fake_root.path / "dev/nvmap"  # a Jetson node, to see the drop-in allow it by path
    os.mknod(nvmap, 0o600 | stat.S_IFCHR, os.makedev(10, 125))
    # No network at all for the install: a fresh network namespace with only loopback up.
    wrap = ("unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "offline")
    r = fake_root.sh(str(x86_bundle), wrap=wrap)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("installed ") and "healthy" in r.stdout
    rel = fake_root.link("current")
    assert rel.startswith("releases/0.1.0-") and fake_root.link("previous") == ""
    current = fake_root.prefix / "current"
    assert (current / ".complete").is_file() and (current / "models/vision/manifest.json").is_file()
    check = subprocess.run(
        [str(current / "venv/bin/edge-runtime"), "check", "--config", str(fake_root.config)],
        capture_output=True,
        text=True,
        cwd=current,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().splitlines()[-1] == f"{fake_root.config}: ok"
    assert "vision: efficientnet-lite0-imagenet on litert" in check.stdout
    # the bundle's config was installed (none was there), readable by the service's group only
    st = fake_root.config.stat()
    assert oct(st.st_mode & 0o777) == "0o640" and st.st_gid == 65534
    unit = (fake_root.path / "etc/systemd/system/edge-runtime.service").read_text()
    assert f"ExecStart={fake_root.prefix}/current/venv/bin/edge-runtime run --config {fake_root.config}" in unit
    dropin = (fake_root.path / "etc/systemd/system/edge-runtime.service.d/10-board.conf").read_text()
    assert "User=nobody" in dropin and f"DeviceAllow={nvmap} rw" in dropin
    tmpfiles = (fake_root.path / "etc/tmpfiles.d/edge-runtime.conf").read_text()
    assert f"d     {fake_root.path}/etc/edge-runtime           0750 root nogroup -" in tmpfiles
    calls = (fake_root.path / "run/systemd/calls.log").read_text().splitlines()
    assert calls[:3] == ["daemon-reload", "enable edge-runtime.service", "restart edge-runtime.service"]
    # the installed unit verifies too, with the real venv behind its ExecStart
    tool = shutil.which("systemd-analyze")
    require(tool is not None, "systemd-analyze is missing (apt-get install systemd)")
    v = subprocess.run(
        [tool, "verify", str(fake_root.path / "etc/systemd/system/edge-runtime.service")],
        capture_output=True,
        text=True,
    )
    assert v.returncode == 0, v.stderr
    assert_untouched_system()


def test_rollback_restores_the_previous_release(fake_root, x86_bundle, tmp_path):
    """A healthy install, a second one, a manual rollback, then a release that dies right after starting:
    install.sh puts `current` and the config back and the old release serves again."""
    first = fake_root.sh(str(x86_bundle))
    assert first.returncode == 0, first.stderr
    a = fake_root.link("current")
    a_config = fake_root.config.read_text()
    a_port = int(a_config.rsplit("port = ", 1)[1].split()[0])
    assert healthz(a_port) == 200

    b_port = free_port()
    r = fake_root.sh("--config", str(write_config(tmp_path / "b.toml", b_port)), str(x86_bundle))
    assert r.returncode == 0, r.stderr
    b = fake_root.link("current")
    assert b != a and fake_root.link("previous") == a and healthz(b_port) == 200

    r = fake_root.sh("rollback")
    assert r.returncode == 0 and "rolled back to" in r.stdout, r.stderr
    assert fake_root.link("current") == a and fake_root.link("previous") == b
    assert fake_root.config.read_text() == a_config and healthz(a_port) == 200

    broken = write_config(tmp_path / "c.toml", free_port(), duration_s=1.0)  # ready, then gone after 1 s
    # Three passes 1 s apart need the release up for 2 s: it cannot pass by answering just before it exits.
    r = fake_root.sh("--config", str(broken), str(x86_bundle), extra={"KEEP_RELEASES": "1", "HEALTH_PASSES": "3"})
    assert r.returncode == 3, r.stderr
    assert "is unhealthy" in r.stderr and "rolled back to" in r.stderr
    assert fake_root.link("current") == a
    assert fake_root.link("previous") == ""  # a failed release is no rollback target
    assert fake_root.config.read_text() == a_config
    assert healthz(a_port) == 200
    failed = [x for x in fake_root.releases() if (fake_root.prefix / "releases" / x / ".failed").exists()]
    assert len(failed) == 1
    # KEEP_RELEASES=1: current and one more (the failed one, newest) are kept, B is pruned
    assert sorted(fake_root.releases()) == sorted([a.split("/")[1], failed[0]])
    status = fake_root.sh("status").stdout
    assert "failed its health check" in status
    r = fake_root.sh("rollback")
    assert r.returncode == 2 and "no previous release" in r.stderr
    assert_untouched_system()


def _synthetic_bundle(tmp_path: Path) -> tuple[Path, Path]:
    """A small bundle with the real install.sh: install.sh's checks come before anything is installed."""
    stage = tmp_path / "stage"
    (stage / "config").mkdir(parents=True)
    shutil.copy2(INSTALL_SH, stage / "install.sh")
    (stage / "bundle.json").write_text(json.dumps({"schema": "edge-runtime/bundle", "arch": "x86_64"}))
    (stage / "config/edge-runtime.toml").write_text("# config\n")
    write_sums(stage)
    out = tmp_path / "small.tar.gz"
    write_archive(stage, out, 0)
    return stage, out


def _craft(dst: Path, stage: Path, *extra: tarfile.TarInfo, replace: dict[str, bytes] | None = None) -> Path:
    import io

    with tarfile.open(dst, "w:gz") as tar:
        for p in sorted(stage.rglob("*")):
            if p.is_file():
                name = f"{BUNDLE_TOP}/{p.relative_to(stage).as_posix()}"
                data = (replace or {}).get(p.relative_to(stage).as_posix(), p.read_bytes())
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
        for ti in extra:
            tar.addfile(ti, io.BytesIO(b"x" * ti.size) if ti.isfile() else None)
    return dst


def _member(name: str, **kw) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def test_install_refuses_tampered_and_unsafe_bundles(fake_root, tmp_path):
    stage, good = _synthetic_bundle(tmp_path)
    victim = tmp_path / "victim"
    cases = {
        "tampered": (
            _craft(tmp_path / "t.tar.gz", stage, replace={"config/edge-runtime.toml": b"# changed\n"}),
            "checksum mismatch: config/edge-runtime.toml",
        ),
        "traversal": (
            _craft(tmp_path / "p.tar.gz", stage, _member(f"{BUNDLE_TOP}/../victim/evil", size=1)),
            "(path traversal)",
        ),
        "absolute": (_craft(tmp_path / "a.tar.gz", stage, _member(f"{victim}/evil", size=1)), "(absolute path)"),
        "symlink": (
            _craft(
                tmp_path / "s.tar.gz",
                stage,
                _member(f"{BUNDLE_TOP}/config/link", type=tarfile.SYMTYPE, linkname=str(victim)),
            ),
            "link or special file",
        ),
        "hardlink": (
            _craft(
                tmp_path / "h.tar.gz",
                stage,
                _member(f"{BUNDLE_TOP}/config/hl", type=tarfile.LNKTYPE, linkname=f"{BUNDLE_TOP}/install.sh"),
            ),
            "link or special file",
        ),
        "unlisted": (
            _craft(tmp_path / "u.tar.gz", stage, _member(f"{BUNDLE_TOP}/config/extra.toml", size=1)),
            "config/extra.toml is not listed in SHA256SUMS",
        ),
    }
    for what, (bundle, want) in cases.items():
        r = fake_root.sh(str(bundle))
        assert r.returncode == 2, (what, r.stderr)
        assert want in r.stderr, (what, r.stderr)
        assert r.stderr.count("\n") == 1, (what, r.stderr)  # one line
        v = edge_deploy("verify", str(bundle))
        assert v.returncode == 2 and len(v.stderr.strip().splitlines()) == 1, (what, v.stderr)
    assert not victim.exists() and not (tmp_path / "evil").exists()
    assert not (fake_root.prefix / "releases").exists() or fake_root.releases() == []
    # the untouched small bundle passes every check and is refused only for what it lacks
    r = fake_root.sh(str(good))
    assert r.returncode == 2 and r.stderr.strip() == "install.sh: error: bundle.json: no python", r.stderr


def test_verify_refuses_a_damaged_gzip_stream_and_a_malformed_bundle_json(tmp_path):
    info = {
        "schema": "edge-runtime/bundle",
        "schema_version": 1,
        "target": "x86_64-debian12",
        "arch": "x86_64",
        "python": HOST_PY,
        "edge_runtime": "0.0.0",
        "project_wheel": "edge_runtime-0.0.0-py3-none-any.whl",
        "config": "config/edge-runtime.toml",
        "wheels": [{"file": "a.whl", "name": "a", "version": "1"}],
        "models": [{"folder": "models/vision", "name": "m", "formats": ["tflite"]}],
    }

    def bundle(name: str, text: str) -> Path:
        stage = tmp_path / name
        (stage / "config").mkdir(parents=True)
        (stage / "config/edge-runtime.toml").write_text("# config\n")
        (stage / "wheels").mkdir()  # a last member after which tarfile stops before the gzip trailer
        (stage / "wheels/a.whl").write_bytes(bytes(range(256)) * 64)
        (stage / "bundle.json").write_text(text)
        write_sums(stage)
        try:
            write_archive(stage, tmp_path / f"{name}.tar.gz", 0)
        except DeployError:  # refused at build already (too deep to parse): archive it by hand
            _craft(tmp_path / f"{name}.tar.gz", stage)
        return tmp_path / f"{name}.tar.gz"

    good = bundle("good", json.dumps(info))
    v = edge_deploy("verify", str(good))
    assert v.returncode == 0 and json.loads(v.stdout)["target"] == "x86_64-debian12", v.stderr

    raw = good.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(raw[:-20])
    bad_crc = tmp_path / "crc.tar.gz"
    bad_crc.write_bytes(raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:-4]) + raw[-4:])
    cases = {
        truncated: "damaged gzip stream",
        bad_crc: "damaged gzip stream",
        bundle("list", "[1, 2]"): "bundle.json must be a JSON object, got list",
        bundle("missing", json.dumps({k: v for k, v in info.items() if k != "python"})): "bundle.json has no 'python'",
        bundle("type", json.dumps({**info, "schema_version": "1"})): "schema_version must be an integer",
        bundle("bool", json.dumps({**info, "schema_version": True})): "schema_version must be an integer",
        bundle("wheels", json.dumps({**info, "wheels": [1]})): "wheels[0] must be an object",
        bundle("schema", json.dumps({**info, "schema": "other"})): "not an edge-runtime bundle",
        bundle("deep", "[" * 100_000 + "]" * 100_000): "damaged bundle",
    }
    for path, want in cases.items():
        v = edge_deploy("verify", str(path))
        assert v.returncode == 2 and "Traceback" not in v.stderr, (path.name, v.stderr[-2000:])
        assert len(v.stderr.strip().splitlines()) == 1 and want in v.stderr, (path.name, v.stderr)
        assert v.stderr.startswith(f"edge-deploy: error: {path}: "), (path.name, v.stderr)


# --- push over ssh ---------------------------------------------------------------------------------------
@pytest.fixture
def sshd(tmp_path):
    exe = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    require(exe is not None, "sshd is missing (apt-get install openssh-server)")
    require(shutil.which("ssh") is not None and shutil.which("scp") is not None, "ssh/scp missing (openssh-client)")
    d = tmp_path / "ssh"
    d.mkdir()
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    port = free_port()
    sftp = next(
        (p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server") if os.path.exists(p)),
        "internal-sftp",
    )
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\nSubsystem sftp {sftp}\nLogLevel ERROR\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    proc = subprocess.Popen(
        [exe, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb")
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
    yield {"port": port, "key": d / "client"}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_push_installs_over_ssh(sshd, fake_root, x86_bundle, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "board.toml", port)
    envs = [f"--env={k}={v}" for k, v in fake_root.env.items()]
    r = edge_deploy(
        "push",
        "127.0.0.1",
        str(x86_bundle),
        "--user",
        "root",
        "--port",
        str(sshd["port"]),
        "-i",
        str(sshd["key"]),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "--config",
        str(cfg),
        *envs,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "installed " in r.stdout and "healthy" in r.stdout
    assert fake_root.link("current").startswith("releases/")
    assert fake_root.config.read_text() == cfg.read_text()
    assert healthz(port) == 200
    # the upload folder on the "board" is gone
    assert not any(
        p.name.startswith("edge-deploy.") for p in Path("/tmp").iterdir() if p.is_dir() and (p / "install.sh").exists()
    )
    assert_untouched_system()


# --- the fleet playbook -------------------------------------------------------------------------------
def test_playbook_rolls_out_in_batches_and_rolls_back(x86_bundle, tmp_path):
    """Two boards (local connections, each its own fake root). Rollout 1, both in one batch: both
    healthy. Rollout 2 moves /healthz to another port than the fleet checks: the first board of the
    first batch fails the check and is rolled back, and max_fail_percentage=0 stops the rollout
    before the second board is touched."""
    exe = shutil.which("ansible-playbook", path=f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    require(exe is not None, "ansible-playbook is missing (pip install ansible-core; it is in the test extra)")
    boards = {name: make_fake_root(tmp_path / name) for name in ("board1", "board2")}
    ports = {name: free_port() for name in boards}
    hosts = {}
    for name, root in boards.items():
        hosts[name] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": PY,
            "edge_remote_dir": str(root.path / "upload"),
            "edge_config": str(write_config(root.path / "board.toml", ports[name])),
            "edge_health_url": f"http://127.0.0.1:{ports[name]}/healthz",
            "edge_env": root.env,
        }
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"edge": {"hosts": hosts}}))
    # Belt and braces: were edge_env ever not applied, install.sh would land in this guard root.
    guard = make_fake_root(tmp_path / "guard")
    env = {
        **os.environ,
        **guard.env,
        "SYSTEMCTL": "false",
        "HEALTH_TIMEOUT": "3",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def play(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                exe,
                "-i",
                str(inventory),
                str(PLAYBOOK),
                "-e",
                f"bundle={x86_bundle}",
                "-e",
                "edge_become=false",
                "-e",
                "edge_health_delay=1",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tmp_path,
        )

    try:
        r = play("-e", "edge_serial=2")
        assert r.returncode == 0, r.stdout[-4000:]
        first = {name: root.link("current") for name, root in boards.items()}
        assert all(v.startswith("releases/") for v in first.values())
        assert all(healthz(p) == 200 for p in ports.values())

        moved = write_config(tmp_path / "moved.toml", free_port())
        r = play(
            "-e",
            "edge_serial=1",
            "-e",
            "edge_max_fail_percentage=0",
            "-e",
            "edge_health_retries=2",
            "-e",
            f"edge_config={moved}",
        )
        assert r.returncode != 0
        out = r.stdout
        assert "board1: health check" in out and "rolled back to" in out, out[-4000:]
        b1, b2 = boards["board1"], boards["board2"]
        assert b1.link("current") == first["board1"] and len(b1.releases()) == 2
        failed = [x for x in b1.releases() if (b1.prefix / "releases" / x / ".failed").exists()]
        assert len(failed) == 1 and b1.link("previous") == ""  # --mark-failed
        assert b1.config.read_text() == Path(hosts["board1"]["edge_config"]).read_text()
        assert healthz(ports["board1"]) == 200
        assert b2.link("current") == first["board2"] and len(b2.releases()) == 1  # never reached
        assert not (tmp_path / "guard/opt").exists()
        assert_untouched_system()
    finally:
        for root in boards.values():
            root.stop()
