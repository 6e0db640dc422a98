"""What every benchmark script shares: the machine description and writing the result file."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from edge_runtime.manifest import write_json_atomic

# the CPU features int8 speed depends on (ONNX Runtime's U8S8 kernels, XNNPACK's): what `host` reports
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")


def cpu() -> dict[str, Any]:
    """The CPU's model name and its int8-relevant SIMD features, from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "simd": [f for f in SIMD_FLAGS if f in flags]}


def host(**extra: Any) -> dict[str, Any]:
    """The machine a result was measured on (absolute figures mean little without it)."""
    return {"machine": platform.machine(), "cpu": cpu(), "python": platform.python_version(), **extra}


def save(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON to ``path`` (its folder made if missing), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
