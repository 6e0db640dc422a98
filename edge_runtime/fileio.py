"""Writing files so that nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success it is flushed, synced and renamed over ``path``.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 10 << 20 else f"{n >> 10} KiB" if n >= 1 << 10 else f"{n} bytes"


def read_text(path: str | os.PathLike[str], max_bytes: int, noun: str, too_large: str) -> str:
    """The UTF-8 text of a file that is read only up to ``max_bytes``; ValueError with one line:
    ``<path>: cannot read the <noun>: <reason>``, ``<path>: larger than <size>; <too_large>`` or
    ``<path>: not UTF-8 text (byte N); save the <noun> as UTF-8``."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the {noun}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {_size(max_bytes)}; {too_large}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save the {noun} as UTF-8") from None


def stdout_closed() -> int:
    """After a BrokenPipeError (output piped into ``head``): point stdout at /dev/null so Python's
    exit flush does not raise again, and return the exit code 0."""
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
