"""edge-deploy bundle: an offline install for one board, cross-built on this workstation.

    edge-runtime-bundle/
      bundle.json            target, arch, Python, glibc, versions, wheels, models
      install.sh             runs on the board as root (POSIX sh)
      SHA256SUMS             every other file, sha256sum -c format
      wheelhouse/*.whl       the board's CPU and CPython only (or pure Python), + requirements.txt (pinned)
      models/<name>/         artifact folders, hashes verified before and after copying
      config/edge-runtime.toml
      systemd/edge-runtime.service, systemd/edge-runtime.conf (tmpfiles.d)
      README.md              deploy/README.md: what install.sh does, rollback, logs

pip evaluates environment markers against the Python running pip, not the one given with
``--python-version``; so the dependency closure is computed here with the board's marker
environment and completed with further downloads until nothing is missing.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import BUNDLE_SCHEMA, BUNDLE_SCHEMA_VERSION, PACKAGE_DIR, DeployError
from .archive import write_archive, write_sums
from .targets import SUPPORTED_PYTHONS, Target, marker_environment

try:  # packaging ships with pip; use the installed one when there is one
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pragma: no cover
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.tags import compatible_tags, cpython_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT = "edge-runtime"
LITERT = "ai-edge-litert"
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"edge-deploy: {msg}", file=sys.stderr, flush=True)


# --- the project ------------------------------------------------------------------------
def project_root(explicit: Path | None) -> Path:
    root = Path(explicit) if explicit else PACKAGE_DIR.parent
    pp = root / "pyproject.toml"
    try:
        name = tomllib.loads(pp.read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        name = None
    if name != PROJECT:
        raise DeployError(f"{root}: not the edge-runtime source tree (no pyproject.toml naming it); pass --project DIR")
    return root


def _source_copy(root: Path, dest: Path) -> Path:
    """The files a wheel is built from (pyproject, README, the packages setuptools includes), nothing else:
    the build then writes its build/ and egg-info into a temp folder, never into the working tree."""
    meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    include = meta.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("include", ["*"])
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "setup.cfg", "setup.py", "MANIFEST.in"):
        if (root / name).is_file():
            shutil.copy2(root / name, src / name)
    for lic in root.glob("LICENSE*"):
        if lic.is_file():
            shutil.copy2(lic, src / lic.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for d in sorted(root.iterdir()):
        if d.is_dir() and (d / "__init__.py").is_file() and any(fnmatch.fnmatch(d.name, pat) for pat in include):
            shutil.copytree(d, src / d.name, ignore=ignore)
    return src


def build_project_wheel(root: Path, work: Path, log: Log) -> Path:
    log(f"building the {PROJECT} wheel from {root}")
    src = _source_copy(root, work)
    out = work / "project-wheel"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(out.glob("*.whl"))
    if r.returncode != 0 or len(wheels) != 1:
        raise DeployError(f"building the {PROJECT} wheel failed: {_last_error(r.stderr) or r.returncode}")
    return wheels[0]


# --- wheel metadata -----------------------------------------------------------------------
@dataclass
class Wheel:
    path: Path
    name: str  # canonical
    version: Version
    tags: frozenset
    requires: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Wheel:
        name, version, _, tags = parse_wheel_filename(path.name)
        requires: list[str] = []
        with zipfile.ZipFile(path) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1), None)
            if meta is None:
                raise DeployError(f"{path.name}: no METADATA in the wheel")
            for line in z.read(meta).decode("utf-8", "replace").splitlines():
                if not line.strip():
                    break  # headers end at the first blank line
                if line.startswith("Requires-Dist:"):
                    requires.append(line.split(":", 1)[1].strip())
        return cls(path, canonicalize_name(name), version, frozenset(tags), requires)


def _wanted(req: Requirement, env: dict[str, str], extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in ({""} | extras))


def _plain(req: Requirement) -> str:
    """The requirement without its marker (already evaluated for the board), for pip's command line."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def closure(
    wheels: dict[str, Wheel], roots: list[Requirement], env: dict[str, str]
) -> tuple[set[str], list[Requirement]]:
    """Names of the wheels the board needs, and requirements nothing in ``wheels`` satisfies."""
    needed: set[str] = set()
    missing: list[Requirement] = []
    seen: set[tuple[str, frozenset]] = set()
    queue = list(roots)
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        w = wheels.get(name)
        if w is None or not req.specifier.contains(w.version, prereleases=True):
            missing.append(req)
            continue
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        needed.add(name)
        for line in w.requires:
            try:
                sub = Requirement(line)
            except InvalidRequirement:
                raise DeployError(f"{w.path.name}: unreadable requirement {line!r}") from None
            if _wanted(sub, env, set(req.extras)):
                queue.append(sub)
    return needed, missing


# --- pip ------------------------------------------------------------------------------------
def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or [""])[-1].removeprefix("ERROR: ")


def _platform_args(tags: list[str], python: str) -> list[str]:
    args = ["--only-binary=:all:"]
    for t in tags:
        args += ["--platform", t]
    return args + ["--python-version", python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}"]


_NO_MATCH = re.compile(
    r"(?:No matching distribution found for|satisfies the requirement)\s+([A-Za-z0-9][A-Za-z0-9._-]*)"
)
_WRONG_PY = re.compile(r"Package '([^']+)' requires a different Python")


def _unavailable(stderr: str) -> str | None:
    for rx in (_NO_MATCH, _WRONG_PY):
        m = rx.search(stderr)
        if m:
            return m.group(1)
    return None


def _has_wheel(package: str, tags: list[str], python: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--no-deps",
                "--ignore-installed",
                "--disable-pip-version-check",
                "-q",
                "--target",
                tmp,
                *_platform_args(tags, python),
                package,
            ],
            capture_output=True,
            text=True,
        )
    return r.returncode == 0


def _no_wheel_error(package: str, target: Target, python: str, tags: list[str], tflite: bool) -> DeployError:
    others = [p for p in SUPPORTED_PYTHONS if p != python and _has_wheel(package, tags, p)]
    where = f"{target.name} (linux {target.arch}, glibc <= {tags[0].split('_')[1]}.{tags[0].split('_')[2]})"
    hints = []
    if others:
        hints.append(f"it has wheels for CPython {', '.join(others)}: pass --python {others[-1]}")
    else:
        hints.append("no supported CPython has one for this board")
    if canonicalize_name(package) == LITERT and not tflite:
        hints.append("or --tflite-runtime (LiteRT's predecessor) if it has a wheel")
    elif canonicalize_name(package) == "tflite-runtime":
        hints.append("or drop --tflite-runtime (ai-edge-litert is the default)")
    elif canonicalize_name(package) == "onnxruntime":
        hints.append("or drop --with-onnx")
    return DeployError(f"{package} has no wheel for {where} and CPython {python}; {'; '.join(hints)}")


def pip_download(reqs: list[str], dest: Path, tags: list[str], python: str, target: Target, tflite: bool) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-q",
            "-d",
            str(dest),
            *_platform_args(tags, python),
            *reqs,
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        package = _unavailable(r.stderr)
        if package:
            raise _no_wheel_error(package, target, python, tags, tflite)
        raise DeployError(f"pip download for {target.name} failed: {_last_error(r.stderr)}")


def supported_tags(python: str, tags: list[str]) -> set:
    v = tuple(int(x) for x in python.split("."))
    interp = f"cp{python.replace('.', '')}"
    return set(cpython_tags(v, abis=[interp], platforms=tags)) | set(compatible_tags(v, interp, tags))


# --- the bundle -----------------------------------------------------------------------------
def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise DeployError(f"--out {out}: is a folder; give a file name such as {out / 'edge-runtime.tar.gz'}")
    if not out.parent.is_dir():
        raise DeployError(f"--out {out}: folder {out.parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
    except OSError as e:
        raise DeployError(f"--out {out}: cannot write in {out.parent} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return out


def _load_models(models: list[Path]) -> list[tuple[str, Path, object]]:
    from edge_runtime.manifest import ManifestError, load

    out: list[tuple[str, Path, object]] = []
    names: dict[str, Path] = {}
    for d in models:
        d = Path(d)
        if not d.is_dir():
            raise DeployError(f"--models {d}: no such folder")
        try:
            m, folder = load(d)  # verifies every file's sha256
        except ManifestError as e:
            raise DeployError(f"--models {d}: {e}") from None
        name = Path(folder).resolve().name
        if name in names:
            raise DeployError(f"--models {d}: a model folder named {name!r} is already bundled (from {names[name]})")
        names[name] = d
        out.append((name, Path(folder), m))
    return out


def _load_config(path: Path, bundled: list[str], log: Log):
    from edge_runtime.config import ConfigError, load

    try:
        cfg = load(path)
    except ConfigError as e:
        raise DeployError(f"--config: {e}") from None
    for kind in ("vision", "audio"):
        section = getattr(cfg, kind)
        if section is None or section.model == "default":
            continue
        p = PurePosixPath(section.model)
        if p.is_absolute():
            log(f"note: {kind}.model = {section.model} must exist on the board (it is not in the bundle)")
        elif not (len(p.parts) == 2 and p.parts[0] == "models" and p.parts[1] in bundled):
            have = ", ".join(f"models/{n}" for n in bundled) or "none"
            raise DeployError(
                f"--config {path}: {kind}.model = {section.model!r} is not a bundled model "
                f'(bundled: {have}); add its folder to --models, or use "default" or an absolute path'
            )
    return cfg


def build(
    target: Target,
    python: str,
    models: list[Path],
    config: Path,
    out: Path,
    *,
    project: Path | None = None,
    with_onnx: bool = False,
    tflite_runtime: bool = False,
    glibc: tuple[int, int] | None = None,
    log: Log = _stderr,
) -> dict:
    """Build the bundle; returns its bundle.json. Raises DeployError (one line) on anything the user can fix."""
    # Everything cheap is checked before anything is downloaded.
    out = _check_out(out)
    root = project_root(project)
    loaded = _load_models(models)
    _load_config(config, [n for n, _, _ in loaded], log)
    tags = target.platform_tags(glibc)
    env = marker_environment(target, python)
    extras = {"onnx"} if with_onnx else set()
    if tflite_runtime:
        extras.add("tflite-runtime")

    with tempfile.TemporaryDirectory(prefix="edge-deploy-") as tmp:
        work = Path(tmp)
        stage = work / "bundle"
        wheelhouse = stage / "wheelhouse"
        wheelhouse.mkdir(parents=True)
        project_wheel = Wheel.read(build_project_wheel(root, work, log))

        roots: list[Requirement] = []
        for line in project_wheel.requires:
            req = Requirement(line)
            if not _wanted(req, env, extras):
                continue
            if tflite_runtime and canonicalize_name(req.name) == LITERT:
                continue
            roots.append(req)
        log(
            f"downloading wheels for {target.name} (linux {target.arch}, CPython {python}): "
            f"{', '.join(sorted({r.name for r in roots}))}"
        )
        pip_download([_plain(r) for r in roots], wheelhouse, tags, python, target, tflite_runtime)
        for _ in range(5):  # complete what pip's host-evaluated markers left out
            wheels = {w.name: w for w in map(Wheel.read, wheelhouse.glob("*.whl"))}
            needed, missing = closure(wheels, roots, env)
            if not missing:
                break
            pip_download([_plain(r) for r in missing], wheelhouse, tags, python, target, tflite_runtime)
        else:
            raise DeployError(f"cannot complete the wheelhouse for {target.name}: {missing[0]} stays unresolved")

        ok_tags = supported_tags(python, tags)
        for name in sorted(wheels):
            w = wheels[name]
            if name not in needed:
                w.path.unlink()  # pulled in by markers true on this host but not on the board
            elif not (w.tags & ok_tags):
                raise DeployError(f"{w.path.name} does not run on {target.name} (CPython {python}, {target.arch})")
        shutil.copy2(project_wheel.path, wheelhouse / project_wheel.path.name)
        pins = sorted(f"{n}=={wheels[n].version}" for n in needed)
        (wheelhouse / "requirements.txt").write_text(
            "# the board's dependency closure, pinned; installed with --no-index from this folder\n"
            + "".join(p + "\n" for p in pins),
            encoding="utf-8",
        )

        from edge_runtime.manifest import ManifestError, load

        model_info = []
        for name, folder, m in loaded:
            dst = stage / "models" / name
            shutil.copytree(folder, dst, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
            try:
                load(dst)  # the copy is what ships: verify it too
            except ManifestError as e:
                raise DeployError(f"--models {folder}: the copy does not verify: {e}") from None
            model_info.append(
                {"folder": f"models/{name}", "name": m.name, "formats": sorted({a.format for a in m.artifacts})}
            )
        (stage / "config").mkdir()
        shutil.copy2(config, stage / "config" / "edge-runtime.toml")
        (stage / "systemd").mkdir()
        for f in ("edge-runtime.service", "edge-runtime.conf"):
            src = root / "systemd" / f
            if not src.is_file():
                raise DeployError(f"{src}: missing from the source tree")
            shutil.copy2(src, stage / "systemd" / f)
        shutil.copy2(PACKAGE_DIR / "install.sh", stage / "install.sh")
        if (PACKAGE_DIR / "README.md").is_file():
            shutil.copy2(PACKAGE_DIR / "README.md", stage / "README.md")

        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        info = {
            "schema": BUNDLE_SCHEMA,
            "schema_version": BUNDLE_SCHEMA_VERSION,
            "target": target.name,
            "arch": target.arch,
            "python": python,
            "glibc_max": "{}.{}".format(*(glibc or target.glibc)),
            "os": target.os,
            "platform_tags": tags,
            "edge_runtime": str(project_wheel.version),
            "project_wheel": project_wheel.path.name,
            "extras": sorted(extras),
            "litert": "tflite-runtime" if tflite_runtime else LITERT,
            "wheels": [
                {"file": wheels[n].path.name, "name": n, "version": str(wheels[n].version)} for n in sorted(needed)
            ],
            "models": model_info,
            "config": "config/edge-runtime.toml",
            "created": now.isoformat().replace("+00:00", "Z"),
            "built_with": {
                "host": f"{platform.system()} {platform.machine()}",
                "python": platform.python_version(),
                "pip": _pip_version(),
            },
        }
        (stage / "bundle.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        write_sums(stage)
        log(f"writing {out}")
        write_archive(stage, out, int(now.timestamp()))
    return info


def _pip_version() -> str:
    try:
        from importlib.metadata import version

        return version("pip")
    except Exception:  # pragma: no cover
        return "unknown"
