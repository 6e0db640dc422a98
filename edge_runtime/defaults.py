"""The default models and sample media that ship inside the package."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MODELS = {"vision": DATA / "models" / "vision", "kws": DATA / "models" / "kws", "asr": DATA / "models" / "asr"}
SAMPLES = DATA / "samples"


def model_dir(kind: str) -> Path:
    """Folder of the shipped default model of ``kind`` ("vision", "kws" or "asr")."""
    return MODELS[kind]
