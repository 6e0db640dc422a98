"""What every benchmark script shares: the machine description and writing the result file."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from edge_runtime.manifest import write_json_atomic


def host(**extra: Any) -> dict[str, Any]:
    """The machine a result was measured on (absolute figures mean little without it)."""
    return {"machine": platform.machine(), "python": platform.python_version(), **extra}


def save(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON to ``path`` (its folder made if missing), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
