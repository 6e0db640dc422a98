"""The bundle archive: safe members only, SHA256SUMS over every file, atomic writes.

A bundle is ``edge-runtime-bundle/`` holding regular files and folders only. Anything else —
an absolute path, a ``..`` component, a symlink, a hard link, a device — is refused before a
single byte is extracted (here at build and push time, and again by install.sh on the board).
The gzip stream is read to its end, so a truncated or corrupted download is refused too, and
:func:`check_info` checks the shape of ``bundle.json`` before ``verify`` or ``push`` use it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from . import BUNDLE_SCHEMA, BUNDLE_SCHEMA_VERSION, BUNDLE_TOP, DeployError

SUMS = "SHA256SUMS"


def _sha256_stream(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_stream(f)


def files_under(root: Path) -> Iterator[Path]:
    """Every regular file below ``root``, sorted, as relative paths; a symlink or special file is an error."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                raise DeployError(f"{p}: not a regular file (symlinks and special files are not bundled)")
            yield p.relative_to(root)


def write_sums(root: Path) -> Path:
    """SHA256SUMS in ``sha256sum -c`` format over every file below ``root`` except itself."""
    lines = [f"{sha256_file(root / rel)}  {rel.as_posix()}\n" for rel in files_under(root) if rel.as_posix() != SUMS]
    out = root / SUMS
    out.write_text("".join(lines), encoding="utf-8")
    return out


def parse_sums(text: str, where: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise DeployError(f"{where}:{n}: not a sha256sum line")
        check_member_name(f"{BUNDLE_TOP}/{name}")
        sums[name] = digest
    return sums


def check_member_name(name: str) -> None:
    """Refuse absolute paths, '..' components and anything outside the bundle's top folder."""
    if "\\" in name or "\n" in name or "\r" in name:
        raise DeployError(f"unsafe path in bundle: {name!r} (control characters or backslashes)")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/"):
        raise DeployError(f"unsafe path in bundle: {name} (absolute)")
    if ".." in p.parts:
        raise DeployError(f"unsafe path in bundle: {name} (path traversal)")
    if not p.parts or p.parts[0] != BUNDLE_TOP:
        raise DeployError(f"unsafe path in bundle: {name} (outside {BUNDLE_TOP}/)")


def check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member checked before anything is extracted; returns them."""
    members = tar.getmembers()
    seen: set[str] = set()
    for m in members:
        check_member_name(m.name)
        kind = (
            "symlink"
            if m.issym()
            else "hard link"
            if m.islnk()
            else "device"
            if m.isdev()
            else "fifo"
            if m.isfifo()
            else None
        )
        if kind or not (m.isfile() or m.isdir()):
            raise DeployError(f"unsafe member in bundle: {m.name} ({kind or 'special file'})")
        key = m.name.rstrip("/")
        if key in seen:
            raise DeployError(f"unsafe member in bundle: {m.name} (appears twice)")
        seen.add(key)
    return members


def check_gzip(path: Path) -> None:
    """Decompress ``path`` to its end: a truncated stream or a bad CRC is one DeployError line.

    tarfile stops at the end-of-archive blocks and never reads the gzip trailer, so without this
    a bundle cut short by a few bytes would pass."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DeployError(f"{path}: damaged gzip stream ({e}); copy or download the bundle again") from None


# bundle.json: the keys edge-deploy and install.sh read, and their types
_INFO_KEYS: dict[str, type] = {
    "schema": str,
    "schema_version": int,
    "target": str,
    "arch": str,
    "python": str,
    "edge_runtime": str,
    "project_wheel": str,
    "config": str,
    "wheels": list,
    "models": list,
}
_ITEM_KEYS = {"wheels": ("file", "name", "version"), "models": ("folder", "name")}
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list"}


def check_info(info: object, where: str) -> dict:
    """``info`` (a parsed bundle.json) if it has every key with its type; else one DeployError line."""
    if not isinstance(info, dict):
        raise DeployError(f"{where}: bundle.json must be a JSON object, got {type(info).__name__}; rebuild the bundle")
    for key, tp in _INFO_KEYS.items():
        if key not in info:
            raise DeployError(f"{where}: bundle.json has no {key!r}; rebuild the bundle with edge-deploy bundle")
        v = info[key]
        if not isinstance(v, tp) or isinstance(v, bool):
            raise DeployError(
                f"{where}: bundle.json: {key} must be {_TYPE_NAMES[tp]}, got {v!r:.60}; rebuild the bundle"
            )
    if info["schema"] != BUNDLE_SCHEMA:
        raise DeployError(
            f"{where}: bundle.json: schema is {info['schema']!r:.60}, not {BUNDLE_SCHEMA!r}; not an edge-runtime bundle"
        )
    if info["schema_version"] > BUNDLE_SCHEMA_VERSION:
        raise DeployError(
            f"{where}: bundle.json: schema_version {info['schema_version']} is newer than this "
            f"edge-deploy reads ({BUNDLE_SCHEMA_VERSION}); upgrade edge-deploy"
        )
    for key, fields in _ITEM_KEYS.items():
        for i, item in enumerate(info[key]):
            if not isinstance(item, dict) or not all(isinstance(item.get(f), str) for f in fields):
                raise DeployError(
                    f"{where}: bundle.json: {key}[{i}] must be an object with string "
                    f"{', '.join(fields)}, got {item!r:.60}; rebuild the bundle"
                )
    return info


class Bundle:
    """A bundle archive, verified: an intact gzip stream, safe members, every file listed in
    SHA256SUMS and matching it, a bundle.json that parses (its shape: :func:`check_info`)."""

    def __init__(self, path: Path, info: Any, files: list[str]):
        self.path = path
        self.info = info
        self.files = files

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Bundle:
        path = Path(path)
        try:
            tar = tarfile.open(path, "r:gz")
        except FileNotFoundError:
            raise DeployError(f"{path}: no such bundle") from None
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DeployError(f"{path}: not a bundle (.tar.gz): {e}") from None
        with tar:
            check_gzip(path)
            try:
                members = check_members(tar)
                files = {m.name[len(BUNDLE_TOP) + 1 :]: m for m in members if m.isfile()}
                if SUMS not in files:
                    raise DeployError(f"{path}: no {SUMS} in the bundle")
                sums = parse_sums(tar.extractfile(files[SUMS]).read().decode("utf-8"), f"{path}:{SUMS}")
                for name in sorted(files):
                    if name == SUMS:
                        continue
                    if name not in sums:
                        raise DeployError(f"{path}: {name} is not listed in {SUMS}; refusing the bundle")
                    if _sha256_stream(tar.extractfile(files[name])) != sums[name]:
                        raise DeployError(f"{path}: checksum mismatch for {name}; refusing the bundle")
                missing = sorted(set(sums) - set(files))
                if missing:
                    raise DeployError(f"{path}: {missing[0]} is listed in {SUMS} but missing from the bundle")
                if "bundle.json" not in files:
                    raise DeployError(f"{path}: no bundle.json in the bundle")
                info = json.loads(tar.extractfile(files["bundle.json"]).read())
            except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise DeployError(f"{path}: damaged bundle: {e}") from None
        return cls(path, info, sorted(files))

    def read(self, name: str) -> bytes:
        with tarfile.open(self.path, "r:gz") as tar:
            f = tar.extractfile(f"{BUNDLE_TOP}/{name}")
            if f is None:
                raise DeployError(f"{self.path}: {name} is not a file in the bundle")
            return f.read()


def _normalize(ti: tarfile.TarInfo, mtime: int) -> tarfile.TarInfo:
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = mtime
    if ti.isdir():
        ti.mode = 0o755
    else:
        ti.mode = 0o755 if ti.name.endswith(".sh") else 0o644
    return ti


def write_archive(root: Path, out: Path, mtime: int, compresslevel: int = 6) -> None:
    """``root``'s files as ``BUNDLE_TOP/...`` in a .tar.gz written to a temp file beside ``out``, checked,
    then renamed."""
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w:gz", compresslevel=compresslevel, format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.addfile(_dir(BUNDLE_TOP, mtime))
            dirs: set[str] = set()
            for rel in files_under(root):
                for parent in reversed(rel.parents[:-1]):
                    key = parent.as_posix()
                    if key not in dirs:
                        dirs.add(key)
                        tar.addfile(_dir(f"{BUNDLE_TOP}/{key}", mtime))
                ti = tar.gettarinfo(str(root / rel), arcname=f"{BUNDLE_TOP}/{rel.as_posix()}")
                with open(root / rel, "rb") as f:
                    tar.addfile(_normalize(ti, mtime), f)
        Bundle.open(tmp)  # what we wrote must pass the same checks the board applies
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _dir(name: str, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    return _normalize(ti, mtime)
