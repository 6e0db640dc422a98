"""The systemd unit and the deploy tool's offline parts: systemd-analyze verify and security, the
unit's system call filter applied for real (libseccomp) around the engines, tmpfiles, the target
map, marker evaluation for the board, archive safety, ssh command lines. No network."""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, require

from deploy import BUNDLE_TOP, DeployError
from deploy.archive import Bundle, check_member_name, write_archive, write_sums

UNIT = ROOT / "systemd" / "edge-runtime.service"
TMPFILES_CONF = ROOT / "systemd" / "edge-runtime.conf"
SYSTEMD_README = ROOT / "systemd" / "README.md"
INSTALL_SH = ROOT / "deploy" / "install.sh"
PY = sys.executable
VENV_BIN = Path(sys.executable).parent


def unit_values(path: Path = UNIT) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            values.setdefault(k, []).append(v)
    return values


def need_systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    require(tool is not None, "systemd-analyze is missing (apt-get install systemd)")
    return tool


def verify_root(tmp: Path, unit_text: str) -> Path:
    """A throwaway root for `systemd-analyze verify --root`: the system's own units (for the
    dependencies), the unit under test, and stand-ins for the programs its Exec lines name."""
    root = tmp / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system/edge-runtime.service").write_text(unit_text)
    for key in ("ExecStartPre", "ExecStart", "ExecReload"):
        for cmd in unit_values().get(key, []):
            exe = root / shlex.split(cmd.lstrip("-+!@:"))[0].lstrip("/")
            exe.parent.mkdir(parents=True, exist_ok=True)
            exe.write_text("#!/bin/sh\n")
            exe.chmod(0o755)
    return root


# --- the unit ----------------------------------------------------------------------------------
def test_unit_has_the_required_directives():
    v = unit_values()
    one = {k: vals[-1] for k, vals in v.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main" and one["WatchdogSec"] == "30s"
    assert one["Restart"] == "on-failure" and one["RestartSec"] == "2" and one["TimeoutStopSec"] == "5"
    assert "StartLimitIntervalSec" in one and "StartLimitBurst" in one
    assert one["ExecStartPre"] == (
        "/opt/edge-runtime/current/venv/bin/edge-runtime check --config /etc/edge-runtime/edge-runtime.toml"
    )
    assert one["ExecStart"] == (
        "/opt/edge-runtime/current/venv/bin/edge-runtime run --config /etc/edge-runtime/edge-runtime.toml"
    )
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["User"] == "edge-runtime" and "DynamicUser" not in one
    assert set(one["SupplementaryGroups"].split()) >= {"video", "audio", "plugdev"}
    assert one["DevicePolicy"] == "closed"
    allow = {d.split()[0] for d in v["DeviceAllow"]}
    assert {"char-video4linux", "char-alsa", "char-usb_device", "char-apex", "char-drm"} <= allow
    for k, want in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
        "Environment": "XDG_CACHE_HOME=/var/cache/edge-runtime",
    }.items():
        assert one[k] == want, k
    assert "PYTHONUNBUFFERED=1" in v["Environment"]
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert v["SystemCallFilter"][0] == "@system-service"
    assert "MemoryMax" in one


def test_unit_passes_systemd_analyze_verify(tmp_path):
    tool = need_systemd_analyze()
    root = verify_root(tmp_path, UNIT.read_text())
    r = subprocess.run([tool, "verify", f"--root={root}", "edge-runtime.service"], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    # and verify does catch a broken unit in the same setup (the check is not vacuous)
    bad = verify_root(tmp_path / "bad", UNIT.read_text().replace("Type=notify", "Type=notifyy"))
    r = subprocess.run([tool, "verify", f"--root={bad}", "edge-runtime.service"], capture_output=True, text=True)
    assert "notifyy" in r.stderr


def security_report() -> tuple[float, list[tuple[str, float]]]:
    tool = need_systemd_analyze()
    # The C locale makes the marks ASCII ("-" for an exposed item instead of "✗") whatever the machine's locale.
    r = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_COLORS": "0", "LC_ALL": "C", "LANG": "C"},
    )
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for edge-runtime\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout[-500:]
    items = [(x.group(1), float(x.group(2))) for x in re.finditer(r"^- (\S+)\s.*\s(\d+\.\d+)$", r.stdout, re.M)]
    return float(m.group(1)), items


def test_security_exposure_is_low_and_every_remaining_item_is_explained():
    exposure, items = security_report()
    readme = SYSTEMD_README.read_text()
    documented = re.search(r"Overall exposure: \*\*(\d+\.\d+)\*\*", readme)
    assert documented, "systemd/README.md must state the exposure as 'Overall exposure: **X.Y**'"
    assert exposure <= float(documented.group(1)) <= 3.0
    assert items, "systemd-analyze listed no remaining exposure; update the README"
    for name, _ in items:
        assert f"`{name}`" in readme, f"{name} is not explained in systemd/README.md"


def test_tmpfiles_conf_creates_the_folders(tmp_path):
    tool = shutil.which("systemd-tmpfiles")
    require(tool is not None, "systemd-tmpfiles is missing (apt-get install systemd)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nedge-runtime:x:990:990::/var/lib/edge-runtime:/usr/sbin/nologin\n"
    )
    (root / "etc/group").write_text("root:x:0:\nedge-runtime:x:990:\n")
    r = subprocess.run([tool, "--create", f"--root={root}", str(TMPFILES_CONF)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    st = (root / "etc/edge-runtime").stat()
    assert oct(st.st_mode & 0o777) == "0o750" and st.st_uid == 0 and st.st_gid == 990
    assert (root / "opt/edge-runtime/releases").is_dir()


# --- the unit's system call filter, applied for real ----------------------------------------
def _expand(spec: str, seen: set[str]) -> set[str]:
    if not spec.startswith("@"):
        return {spec}
    if spec in seen:
        return set()
    seen.add(spec)
    out = subprocess.run(["systemd-analyze", "syscall-filter", spec], capture_output=True, text=True, check=True)
    names: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        s = line.strip()
        if s and not s.startswith("#"):
            names |= _expand(s, seen)
    return names


def unit_syscall_filter() -> tuple[set[str], str]:
    """The allow-list the unit's SystemCallFilter= lines produce, merged as systemd.exec(5) says: the
    first line sets the mode, later '~' lines remove, later plain lines add back."""
    v = unit_values()
    lines = v["SystemCallFilter"]
    assert not lines[0].startswith("~"), "the filter is expected to be an allow-list"
    allowed: set[str] = set()
    for line in lines:
        names: set[str] = set()
        for spec in line.lstrip("~").split():
            names |= _expand(spec, set())
        allowed = allowed - names if line.startswith("~") else allowed | names
    return allowed, v.get("SystemCallErrorNumber", ["kill"])[-1]


SECCOMP_RUNNER = r"""
import ctypes, errno, os, sys
allowed, action = sys.argv[1].split(","), sys.argv[2]
lib = ctypes.CDLL(sys.argv[3], use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
default = 0x80000000 if action == "kill" else 0x00050000 | getattr(errno, action)  # KILL_PROCESS | ERRNO(n)
ctx = lib.seccomp_init(default)
for name in allowed:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0:  # names of other architectures do not resolve here
        assert lib.seccomp_rule_add(ctx, 0x7FFF0000, nr, 0) == 0, name
assert lib.seccomp_load(ctx) == 0
os.execv(sys.argv[4], sys.argv[4:])
"""


@pytest.fixture(scope="module")
def seccomp():
    need_systemd_analyze()
    lib = ctypes.util.find_library("seccomp")
    require(lib is not None, "libseccomp is missing (apt-get install libseccomp2)")
    allowed, action = unit_syscall_filter()
    assert "sched_setaffinity" in allowed and "mbind" not in allowed and "setuid" not in allowed

    def run(*cmd: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "HOME": str(cwd or ROOT)}
        return subprocess.run(
            [PY, "-c", SECCOMP_RUNNER, ",".join(sorted(allowed)), action, lib, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
        )

    # the filter is real: a call outside the list fails (setuid is in @privileged)
    r = run(PY, "-c", "import os; os.setuid(0)")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    return run


@pytest.mark.parametrize("engine", ["litert", "onnx"])
def test_engines_run_under_the_units_syscall_filter(seccomp, engine, tmp_path):
    """numpy/OpenBLAS, OpenCV, LiteRT (XNNPACK threads) and ONNX Runtime (thread pool pinned to cores)
    under exactly the unit's filter: same answers as without it, no process killed, no affinity error."""
    from conftest import have

    if engine == "onnx":
        require(have("onnxruntime"), "onnxruntime is not installed (pip install -e '.[onnx]')")
    images = sorted(str(p) for p in (ROOT / "edge_runtime/data/samples/images").glob("*.jpg"))[:3]
    cmd = [str(VENV_BIN / "edge-runtime"), "classify", "--engine", engine, "--json", *images]
    plain = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)}
    )
    assert plain.returncode == 0, plain.stderr
    filtered = seccomp(*cmd, cwd=tmp_path)
    assert filtered.returncode == 0, f"rc={filtered.returncode}: {filtered.stderr[-2000:]}"
    assert filtered.stdout == plain.stdout
    assert "setaffinity" not in filtered.stderr and "Operation not permitted" not in filtered.stderr


def test_daemon_runs_under_the_units_syscall_filter(seccomp, tmp_path):
    """The whole daemon (camera thread, workers, HTTP server, JSON lines) for a few seconds."""
    images = ROOT / "edge_runtime/data/samples/images"
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[runtime]\nduration_s = 4.0\n\n[camera]\nuri = "{images}"\n\n'
        f'[vision]\nengine = "litert"\nthreshold = 0.0\n\n'
        f'[sinks.jsonl]\npath = "{tmp_path / "events.jsonl"}"\n\n[sinks.http]\nport = 0\n'
    )
    r = seccomp(str(VENV_BIN / "edge-runtime"), "run", "--config", str(cfg), cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ready: vision" in r.stderr
    events = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(events) >= 3, r.stderr[-2000:]


# --- targets, markers -----------------------------------------------------------------------------
def test_targets_map_to_manylinux_tags():
    from deploy.targets import TARGETS

    rpi4 = TARGETS["rpi4"].platform_tags()
    assert rpi4[0] == "manylinux_2_36_aarch64" and "manylinux2014_aarch64" in rpi4
    assert "manylinux_2_17_aarch64" in rpi4 and all(t.endswith("_aarch64") for t in rpi4)
    assert TARGETS["jetson-orin"].platform_tags()[0] == "manylinux_2_35_aarch64"
    assert TARGETS["coral-devboard"].platform_tags()[0] == "manylinux_2_28_aarch64"
    x86 = TARGETS["x86_64"].platform_tags()
    assert x86[0] == "manylinux_2_31_x86_64" and "manylinux1_x86_64" in x86 and "manylinux2014_x86_64" in x86
    assert {TARGETS[t].python for t in TARGETS} <= {"3.10", "3.11", "3.12", "3.13"}


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str], tag: str = "py3-none-any") -> Path:
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        meta += [f"Requires-Dist: {r}" for r in requires]
        z.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(meta) + "\n\n")
    return path


def test_dependency_markers_are_evaluated_for_the_board_not_this_host(tmp_path):
    """pip download --python-version evaluates markers with the host's Python; the closure does not."""
    from packaging.requirements import Requirement

    from deploy.bundle import Wheel, closure
    from deploy.targets import TARGETS, marker_environment

    wheels = {}
    for args in [
        ("app", "1.0", ["tomli>=2; python_version < '3.11'", "numpy>=1.23", "extra-a; extra == 'a'"]),
        ("numpy", "2.0", []),
        ("tomli", "2.0", []),
        ("extra_a", "1.0", []),
    ]:
        w = Wheel.read(_fake_wheel(tmp_path, *args))
        wheels[w.name] = w
    roots = [Requirement("app")]
    t = TARGETS["jetson-orin"]
    needed, missing = closure(wheels, roots, marker_environment(t, "3.10"))
    assert needed == {"app", "numpy", "tomli"} and not missing
    needed, missing = closure(wheels, roots, marker_environment(t, "3.11"))
    assert needed == {"app", "numpy"}
    needed, _ = closure(wheels, [Requirement("app[a]")], marker_environment(t, "3.11"))
    assert "extra-a" in needed
    del wheels["tomli"]
    _, missing = closure(wheels, roots, marker_environment(t, "3.10"))
    assert [m.name for m in missing] == ["tomli"]


# --- archive safety ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, why",
    [
        ("/etc/passwd", "absolute"),
        (f"{BUNDLE_TOP}/../../evil", "traversal"),
        ("elsewhere/file", "outside"),
        (f"{BUNDLE_TOP}/a\\b", "backslash"),
    ],
)
def test_member_names_are_checked(name, why):
    with pytest.raises(DeployError, match="unsafe path"):
        check_member_name(name)


def _tiny_bundle(tmp_path: Path) -> Path:
    stage = tmp_path / "stage"
    (stage / "sub").mkdir(parents=True)
    (stage / "bundle.json").write_text('{"schema": "edge-runtime/bundle"}\n')
    (stage / "sub" / "data.txt").write_text("hello\n")
    write_sums(stage)
    out = tmp_path / "tiny.tar.gz"
    write_archive(stage, out, 0)
    return out


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            for ti, payload in edit(m, data):
                tout.addfile(ti, io.BytesIO(payload) if payload is not None else None)
    return dst


def _add(ti_name: str, payload: bytes | None = None, **kw) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(ti_name)
    for k, v in kw.items():
        setattr(ti, k, v)
    if payload is not None:
        ti.size = len(payload)
    return ti, payload


def test_bundle_checks_in_python(tmp_path):
    good = _tiny_bundle(tmp_path)
    b = Bundle.open(good)
    assert b.files == ["SHA256SUMS", "bundle.json", "sub/data.txt"]

    def tamper(m, data):
        if m.name.endswith("data.txt"):
            data = b"HELLO\n"
            m.size = len(data)
        return [(m, data)]

    with pytest.raises(DeployError, match="checksum mismatch for sub/data.txt"):
        Bundle.open(_rewrite(good, tmp_path / "t.tar.gz", tamper))

    def traversal(m, data):
        return [(m, data)] + ([_add(f"{BUNDLE_TOP}/../../../tmp/evil", b"x")] if m.name.endswith("data.txt") else [])

    with pytest.raises(DeployError, match="path traversal"):
        Bundle.open(_rewrite(good, tmp_path / "p.tar.gz", traversal))

    def symlink(m, data):
        extra = [_add(f"{BUNDLE_TOP}/sub/link", type=tarfile.SYMTYPE, linkname="/etc/passwd")]
        return [(m, data)] + (extra if m.name.endswith("data.txt") else [])

    with pytest.raises(DeployError, match="symlink"):
        Bundle.open(_rewrite(good, tmp_path / "s.tar.gz", symlink))

    def unlisted(m, data):
        return [(m, data)] + ([_add(f"{BUNDLE_TOP}/sub/new.txt", b"new\n")] if m.name.endswith("data.txt") else [])

    with pytest.raises(DeployError, match="sub/new.txt is not listed"):
        Bundle.open(_rewrite(good, tmp_path / "u.tar.gz", unlisted))


def test_archive_writer_refuses_symlinks_and_leaves_nothing(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "a.txt").write_text("a")
    (stage / "link").symlink_to("/etc/passwd")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(DeployError, match="link: not a regular file"):
        write_archive(stage, out_dir / "b.tar.gz", 0)
    assert list(out_dir.iterdir()) == []


# --- install.sh, statically, and push's command lines --------------------------------------------------
def test_install_sh_is_posix_sh():
    for shell in ("dash", "sh"):
        if shutil.which(shell):
            r = subprocess.run([shell, "-n", str(INSTALL_SH)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
    assert INSTALL_SH.read_text().startswith("#!/bin/sh\n")
    r = subprocess.run(["sh", str(INSTALL_SH), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "rollback" in r.stdout and "PREFIX" in r.stdout


def test_install_sh_refuses_relative_or_odd_paths(tmp_path):
    env = {**os.environ, "PREFIX": "relative/path"}
    r = subprocess.run(["sh", str(INSTALL_SH), "status"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "PREFIX=relative/path: must be an absolute path" in r.stderr
    env = {**os.environ, "PREFIX": "/tmp/a b"}
    r = subprocess.run(["sh", str(INSTALL_SH), "status"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "only letters" in r.stderr


def test_push_command_lines():
    from deploy.push import Remote, install_command, parse_env

    r = Remote("board.local", "pi", 2222, Path("/k/id"), ["StrictHostKeyChecking=accept-new"])
    assert r.ssh("true") == [
        "ssh",
        "-p",
        "2222",
        "-i",
        "/k/id",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "pi@board.local",
        "true",
    ]
    assert r.scp([Path("/b.tar.gz")], "/tmp/x")[:4] == ["scp", "-q", "-P", "2222"]
    assert r.scp([Path("/b.tar.gz")], "/tmp/x")[-1] == "pi@board.local:/tmp/x/"
    assert Remote("fe80::1", "pi").scp([Path("/b")], "/d")[-1] == "pi@[fe80::1]:/d/"
    cmd = install_command("/tmp/edge-deploy.abc", "bundle.tar.gz", {"KEEP_RELEASES": "5"}, True, None, "auto")
    assert (
        "sudo -n" in cmd
        and "env KEEP_RELEASES=5 sh /tmp/edge-deploy.abc/install.sh --replace-config /tmp/edge-deploy.abc/bundle.tar.gz"
        in cmd
    )
    assert cmd.endswith("rm -rf /tmp/edge-deploy.abc; exit $rc")
    cmd = install_command("/tmp/d", "bundle.tar.gz", {}, False, "edge-runtime.toml", "never")
    assert cmd.startswith("sh /tmp/d/install.sh --config /tmp/d/edge-runtime.toml /tmp/d/bundle.tar.gz")
    assert parse_env(["A_B=1 2"]) == {"A_B": "1 2"}
    with pytest.raises(DeployError):
        parse_env(["lower=1"])


def test_edge_deploy_bad_arguments_are_one_line():
    r = subprocess.run(
        [PY, "-m", "deploy", "bundle", "--target", "rpi9", "--config", "x", "--out", "y"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "rpi9" in r.stderr
    r = subprocess.run(
        [PY, "-m", "deploy", "bundle", "--target", "rpi4", "--python", "3.9", "--config", "x", "--out", "y"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and r.stderr.strip() == (
        "edge-deploy: error: --python 3.9: edge-runtime runs on CPython 3.10, 3.11, 3.12, 3.13"
    )
