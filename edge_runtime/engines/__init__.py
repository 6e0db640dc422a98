"""Engines: one file per inference engine behind a small registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..manifest import Artifact, Manifest
from .base import Engine, EngineError, Placement
from .litert import Delegate

ENGINES = {"litert": "tflite", "onnx": "onnx"}  # engine name -> artifact format


@dataclass(frozen=True)
class Acceleration:
    """Where to run: LiteRT delegates and ONNX Runtime providers, each in preference order."""

    delegates: tuple[Delegate, ...] = ()
    providers: tuple[str, ...] = ()
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)


def open_artifact(artifact: Artifact, folder: str | Path, threads: int | None = None,
                  accel: Acceleration | None = None) -> Engine:
    """Open one artifact of a manifest on the engine for its format."""
    accel = accel or Acceleration()
    path = Path(folder) / artifact.file.path
    names_in = [t.name for t in artifact.inputs]
    names_out = [t.name for t in artifact.outputs]
    if artifact.format == "tflite":
        from .litert import LiteRTEngine

        edgetpu = next((Path(folder) / f.path for f in artifact.extra_files if f.path.endswith("_edgetpu.tflite")), None)
        return LiteRTEngine(path, threads=threads, input_names=names_in, output_names=names_out,
                            delegates=list(accel.delegates), edgetpu_model=edgetpu)
    if artifact.format == "onnx":
        from .onnx import OnnxEngine

        return OnnxEngine(path, threads=threads, input_specs=artifact.inputs, output_specs=artifact.outputs,
                          providers=list(accel.providers) or None, provider_options=accel.provider_options)
    raise EngineError(f"artifact {artifact.id}: no engine for format {artifact.format!r}")


def open_engine(manifest: Manifest, folder: str | Path, engine: str = "auto", threads: int | None = None,
                accel: Acceleration | None = None) -> Engine:
    """Open the manifest's artifact for ``engine`` (auto: fastest on host, else first that loads)."""
    if engine != "auto":
        if engine not in ENGINES:
            raise EngineError(f"unknown engine {engine!r}; use one of: auto, {', '.join(ENGINES)}")
        return open_artifact(manifest.artifact(ENGINES[engine]), folder, threads, accel)
    order = sorted(manifest.artifacts, key=lambda a: a.id != manifest.fastest_on_host)
    errors = []
    for a in order:
        try:
            return open_artifact(a, folder, threads, accel)
        except EngineError as e:
            errors.append(str(e))
    raise EngineError("; ".join(errors) or "manifest lists no artifacts")


__all__ = ["ENGINES", "Acceleration", "Delegate", "Engine", "EngineError", "Placement", "open_artifact", "open_engine"]
