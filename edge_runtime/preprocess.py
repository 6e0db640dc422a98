"""Image preprocessing, implemented once and driven by the manifest.

Training, conversion (calibration and evaluation) and the daemon all turn a
picture into a model input through :func:`image_to_input`, so the numbers the
converter reports are the numbers the board sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .manifest import ImagePreprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


class ImageError(Exception):
    """An image file that cannot be decoded; the message is one line."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3); grey and alpha are converted."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read it ({e.strerror}); check the path") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
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


def resize(img: np.ndarray, size: tuple[int, int] | list[int], mode: str = "squash") -> np.ndarray:
    """Resize RGB uint8 to (height, width): squash (aspect ignored), crop (centre) or letterbox."""
    import cv2

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
        inner = cv2.resize(img, (nw, nh), interpolation=_interp(ih, iw, nh, nw))
        out = np.zeros((h, w, 3), dtype=np.uint8)
        y, x = (h - nh) // 2, (w - nw) // 2
        out[y : y + nh, x : x + nw] = inner
        return out
    else:
        raise ValueError(f"resize mode {mode!r} is not one of squash, crop, letterbox")
    oh, ow = out.shape[:2]
    if (oh, ow) == (h, w):
        return np.ascontiguousarray(out)
    return cv2.resize(out, (w, h), interpolation=_interp(oh, ow, h, w))


def _interp(ih: int, iw: int, oh: int, ow: int) -> int:
    import cv2

    # Area averaging when shrinking avoids aliasing; bilinear when enlarging.
    return cv2.INTER_AREA if oh < ih and ow < iw else cv2.INTER_LINEAR


def image_to_input(img_rgb: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 model input (size[0], size[1], 3), normalised."""
    x = resize(img_rgb, spec.size, spec.resize)
    if spec.channel_order.upper() == "BGR":
        x = x[..., ::-1]
    x = x.astype(np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return (x - mean) / std


def list_images(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
