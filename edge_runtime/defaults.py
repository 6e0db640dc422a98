"""The default models and sample media that ship inside the package."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MODELS = {"vision": DATA / "models" / "vision", "kws": DATA / "models" / "kws"}
SAMPLES = DATA / "samples"


def model_dir(kind: str) -> Path:
    """Folder of the shipped default model of ``kind`` ("vision" or "kws")."""
    return MODELS[kind]
