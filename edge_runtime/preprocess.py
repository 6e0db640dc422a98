"""Image preprocessing, implemented once and driven by the manifest.

Training, conversion (calibration and evaluation) and the daemon all turn a
picture into a model input through :func:`image_to_input`, so the numbers the
converter reports are the numbers the board sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .manifest import RESIZE_FILTERS, ImagePreprocessing, Quantization

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


class ImageError(Exception):
    """An image file that cannot be decoded; the message is one line."""


MAX_IMAGE_BYTES = 100 * 1024 * 1024  # an image file is read into memory only up to this size


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3); grey and alpha are converted.

    Files over ``MAX_IMAGE_BYTES`` are not read, and headers claiming more than
    ``edge_runtime.MAX_IMAGE_PIXELS`` pixels are not decoded (ImageError, one line).
    """
    import cv2

    from . import MAX_IMAGE_PIXELS

    try:
        if os.path.getsize(path) > MAX_IMAGE_BYTES:
            raise ImageError(
                f"{path}: larger than {MAX_IMAGE_BYTES >> 20} MiB, more than any camera frame or photo needs; shrink it"
            )
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read it ({e.strerror}); check the path") from None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:
        if "validateInputImageSize" in str(e):  # OpenCV's size check on the header (OPENCV_IO_MAX_IMAGE_PIXELS)
            raise ImageError(
                f"{path}: its header claims more than {MAX_IMAGE_PIXELS / 1e6:g} megapixels; shrink it "
                "(or raise OPENCV_IO_MAX_IMAGE_PIXELS)"
            ) from None
        img = None
    if img is None:
        raise ImageError(f"{path}: not a readable image; remove it or replace it with a JPEG/PNG")
    return to_rgb(img, order="BGR")


def to_rgb(img: np.ndarray, order: str = "BGR") -> np.ndarray:
    """Grey, BGR(A) or RGB(A) uint8 arrays to RGB (H, W, 3)."""
    import cv2

    if img.dtype != np.uint8:
        img = np.clip(img / 256 if img.dtype == np.uint16 else img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if order == "BGR" else cv2.COLOR_RGBA2RGB
        return cv2.cvtColor(img, code)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if order == "BGR" else img


def resize(
    img: np.ndarray, size: tuple[int, int] | list[int], mode: str = "squash", resample: str = "area"
) -> np.ndarray:
    """Resize RGB uint8 to (height, width): squash (aspect ignored), crop (centre) or letterbox.

    ``resample``: ``area`` (see :func:`_scale`) or ``bilinear`` (OpenCV's INTER_LINEAR, shrinking too).
    """
    if resample not in RESIZE_FILTERS:
        raise ValueError(f"resize filter {resample!r} is not one of {', '.join(RESIZE_FILTERS)}")
    h, w = int(size[0]), int(size[1])
    ih, iw = img.shape[:2]
    if mode == "squash":
        out = img
    elif mode == "crop":
        scale = max(h / ih, w / iw)
        ch, cw = min(ih, round(h / scale)), min(iw, round(w / scale))
        y, x = (ih - ch) // 2, (iw - cw) // 2
        out = img[y : y + ch, x : x + cw]
    elif mode == "letterbox":
        scale = min(h / ih, w / iw)
        nh, nw = max(1, round(ih * scale)), max(1, round(iw * scale))
        inner = _scale(img, nh, nw, resample)
        out = np.zeros((h, w, 3), dtype=np.uint8)
        y, x = (h - nh) // 2, (w - nw) // 2
        out[y : y + nh, x : x + nw] = inner
        return out
    else:
        raise ValueError(f"resize mode {mode!r} is not one of squash, crop, letterbox")
    oh, ow = out.shape[:2]
    if (oh, ow) == (h, w):
        return np.ascontiguousarray(out)
    return _scale(out, h, w, resample)


def _scale(img: np.ndarray, h: int, w: int, resample: str = "area") -> np.ndarray:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging; bilinear throughout for ``bilinear``.

    OpenCV's area filter is fast for whole-number factors and slow otherwise, so
    a large shrink first goes bilinearly to the nearest whole multiple of the
    target (a step of less than 2x), then area-averages by that whole factor.
    """
    import cv2

    ih, iw = img.shape[:2]
    if resample == "bilinear" or h >= ih or w >= iw:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    k = min(ih // h, iw // w)
    if k >= 2 and (ih, iw) != (k * h, k * w):
        img = cv2.resize(img, (k * w, k * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _normalise(x: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return (x.astype(np.float32) - mean) / std


def _colour(img_rgb: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (H, W, C) uint8 in the model's colour mode and channel order."""
    if spec.color == "gray":
        import cv2

        return cv2.cvtColor(img_rgb, cv2.COLOR_RGB2GRAY)[..., None]  # ITU-R BT.601 luma
    return img_rgb[..., ::-1] if spec.channel_order.upper() == "BGR" else img_rgb


def _laid_out(x: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(2, 0, 1) if spec.layout == "nchw" else x)


def _fitted(img_rgb: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """RGB uint8 -> (h, w, C) uint8 pixels: resized with the model's mode and filter, in its colour mode."""
    return _colour(resize(img_rgb, spec.size, spec.resize, spec.resize_filter), spec)


def image_to_input(img_rgb: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 model input, normalised: (h, w, C), or (C, h, w) for NCHW."""
    return _laid_out(_normalise(_fitted(img_rgb, spec), spec), spec)


class PixelTable:
    """Pixel value -> model input value, per channel: normalisation (and quantization) without any
    per-pixel float arithmetic.

    Built by pushing every pixel value through the same normalisation as :func:`image_to_input`
    and the engine's quantization (none for a float input), so it gives exactly the tensor the
    float path gives. Applied the cheapest exact way: for 8-bit inputs nothing when the table is
    the identity (uint8 input with scale 1 and zero point 0 after normalising) and a flip of the
    top bit when it is the identity shifted by -128 (int8 input of pixel - 128, as most int8
    image models take); else one table for all channels when they share it, or a table per
    channel (cv2.LUT, whose output takes the table's type: float32 tables for float inputs).
    """

    def __init__(self, spec: ImagePreprocessing, quantization: Quantization | None, dtype: str):
        from .engines.base import Quantizer

        values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], spec.channels, axis=1)[:, None, :]  # (256,1,C)
        q = Quantizer(quantization, dtype).quantize(_normalise(values, spec))
        eight_bit = q.dtype.itemsize == 1
        self.table = np.ascontiguousarray(q.view(np.uint8) if eight_bit else q)
        self.dtype = dtype
        shared = self.table[:, 0, 0]
        if not all(np.array_equal(self.table[:, 0, c], shared) for c in range(spec.channels)):
            self.kind = "per_channel"
        elif eight_bit and np.array_equal(shared, np.arange(256)):
            self.kind = "identity"
        elif eight_bit and np.array_equal(shared, np.arange(256) ^ 0x80):
            self.kind = "flip_top_bit"
        else:
            self.kind, self.table = "shared", np.ascontiguousarray(shared)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 pixels -> (H, W, C) model input values (8-bit ones as their uint8 bytes)."""
        import cv2

        if self.kind == "identity":
            return x
        if self.kind == "flip_top_bit":
            return np.bitwise_xor(x, np.uint8(0x80))
        return cv2.LUT(x, self.table).reshape(x.shape)  # cv2 drops a single channel's axis


def image_to_table_input(img_rgb: np.ndarray, spec: ImagePreprocessing, table: PixelTable) -> np.ndarray:
    """RGB uint8 -> the model input (its dtype, layout and quantization) through a :class:`PixelTable`:
    the same tensor as :func:`image_to_input` followed by the engine's quantization."""
    return _laid_out(table.apply(np.ascontiguousarray(_fitted(img_rgb, spec))), spec).view(table.dtype)


def list_images(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
