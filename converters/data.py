"""Calibration and evaluation data: image folders, WAV folders or .npz tensors.

Class sub-folders are the labels; a flat folder is unlabeled data (fine for
calibration and for agreement with float). Image data goes through the one
preprocessing of ``edge_runtime.preprocess``; WAV data through the one audio
front end of ``edge_runtime.audio``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.manifest import AudioPreprocessing, ImagePreprocessing

from .errors import ConvertError
from .source import IOSpec

WAV_SUFFIXES = (".wav",)


@dataclass
class Dataset:
    """Model inputs, batch first, in the model's input order; labels index ``classes``."""

    inputs: list[np.ndarray]
    labels: np.ndarray | None
    classes: list[str] | None
    origin: str
    files: list[str] | None = None

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])


def progress(it, desc: str, total: int | None = None):
    """A tqdm progress bar on the terminal's stderr (kept visible while native logs are muted)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    return tqdm(
        it, desc=desc, total=total, unit="item", leave=False, dynamic_ncols=True, file=_progress_stream(), disable=None
    )  # None: only on a terminal


def _progress_stream():
    fd = os.environ.get("EDGE_PROGRESS_FD")
    return os.fdopen(int(fd), "w", closefd=False) if fd else sys.stderr


def _walk(folder: Path, suffixes: tuple[str, ...]) -> tuple[list[Path], list[str] | None, list[int] | None]:
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files_top = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
    if subdirs and not files_top:
        files, labels, classes = [], [], [d.name for d in subdirs]
        for i, d in enumerate(subdirs):
            for f in sorted(x for x in d.rglob("*") if x.is_file() and x.suffix.lower() in suffixes):
                files.append(f)
                labels.append(i)
        return files, classes, labels
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
    return files, None, None


def load(
    path: str | Path,
    flag: str,
    inputs: list[IOSpec],
    image: ImagePreprocessing | None,
    audio: AudioPreprocessing | None,
    streaming: bool = False,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load DATA for ``flag`` (--calibration / --eval), checked against the model inputs."""
    p = Path(path)
    if not p.exists():
        raise ConvertError(f"{flag} {p}: no such file or folder; pass a folder of images / WAV files or an .npz")
    if p.is_file():
        if p.suffix.lower() != ".npz":
            raise ConvertError(f"{flag} {p}: expected a folder or an .npz file of input tensors")
        return _load_npz(p, flag, inputs, streaming, limit, seed)
    from edge_runtime.preprocess import IMAGE_SUFFIXES

    if len(inputs) > 1 and not streaming:
        raise ConvertError(
            f"{flag} {p}: the model takes {len(inputs)} inputs ({', '.join(s.name for s in inputs)}) "
            "and a folder feeds one; pass an .npz with one array per input, named after it"
        )
    img_files, classes, labels = _walk(p, IMAGE_SUFFIXES)
    if img_files:
        if image is None:
            raise ConvertError(
                f"{flag} {p}: holds images but the model input {inputs[0].shape} is not an image "
                "(N, H, W, 1|3) or (N, 1|3, H, W); pass an .npz of input tensors"
            )
        return _load_images(p, flag, img_files, classes, labels, image, limit, seed)
    wav_files, classes, labels = _walk(p, WAV_SUFFIXES)
    if wav_files:
        return _load_wavs(
            p, flag, wav_files, classes, labels, inputs, audio or AudioPreprocessing(), streaming, limit, seed
        )
    raise ConvertError(f"{flag} {p}: folder holds no images (.jpg/.png/...) or .wav files; put data in it")


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    idx = np.arange(n)
    if limit is not None and n > limit:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    return idx


def _load_images(
    p: Path, flag: str, files: list[Path], classes, labels, spec: ImagePreprocessing, limit: int | None, seed: int
) -> Dataset:
    from edge_runtime.preprocess import ImageError, image_to_input, read_image

    idx = _subsample(len(files), limit, seed)
    xs = []
    for i in progress(idx, f"reading {flag.lstrip('-')} images"):
        try:
            xs.append(image_to_input(read_image(files[i]), spec))
        except ImageError as e:
            raise ConvertError(f"{flag}: {e}") from None
    y = np.asarray([labels[i] for i in idx]) if labels is not None else None
    return Dataset([np.stack(xs)], y, classes, f"{p} ({len(idx)} images)", [str(files[i]) for i in idx])


def _load_wavs(
    p: Path,
    flag: str,
    files: list[Path],
    classes,
    labels,
    inputs: list[IOSpec],
    spec: AudioPreprocessing,
    streaming: bool,
    limit: int | None,
    seed: int,
) -> Dataset:
    from edge_runtime.audio.frontend import log_mel
    from edge_runtime.audio.wav import AudioError, read_wav

    feat_shape = inputs[0].shape  # (1, T, F) or (1, T, F, 1)
    if len(feat_shape) < 3 or feat_shape[2] != spec.n_mels:
        raise ConvertError(
            f"{flag} {p}: WAV data needs a model input of shape (1, frames, {spec.n_mels}[, 1]) "
            f"(log-mel features); this model takes {feat_shape}"
        )
    idx = _subsample(len(files), limit, seed)
    feats = []
    for i in progress(idx, f"reading {flag.lstrip('-')} audio"):
        try:
            f = log_mel(read_wav(files[i], spec.sample_rate), spec)
        except AudioError as e:
            raise ConvertError(f"{flag}: {e}") from None
        feats.append(f)
    if streaming:
        # Whole utterances, cut to the shortest so they stack; states are gathered later.
        t = min(len(f) for f in feats)
        chunk = feat_shape[1]
        t -= t % chunk
        if t == 0:
            raise ConvertError(f"{flag} {p}: clips are shorter than one model step ({chunk} frames)")
        x = np.stack([f[:t] for f in feats]).astype(np.float32)
    else:
        t = feat_shape[1]
        x = np.stack([_fit(f, t) for f in feats]).astype(np.float32)
        if len(feat_shape) == 4:
            x = x[..., None]
    y = np.asarray([labels[i] for i in idx]) if labels is not None else None
    return Dataset([x], y, classes, f"{p} ({len(idx)} WAV files)", [str(files[i]) for i in idx])


def _fit(f: np.ndarray, t: int) -> np.ndarray:
    if len(f) >= t:
        start = (len(f) - t) // 2
        return f[start : start + t]
    pad = np.full((t - len(f), f.shape[1]), f.min() if f.size else 0.0, dtype=f.dtype)
    return np.concatenate([f, pad])


def _load_npz(p: Path, flag: str, inputs: list[IOSpec], streaming: bool, limit: int | None, seed: int) -> Dataset:
    try:
        z = np.load(p, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise ConvertError(f"{flag} {p}: not a readable .npz ({str(e).splitlines()[0][:120]})") from None
    labels = arrays.pop("labels", None)
    classes = None
    if "classes" in arrays:
        classes = [str(c) for c in arrays.pop("classes")]
    wanted = inputs[:1] if streaming else inputs
    if not arrays:
        raise ConvertError(f"{flag} {p}: the .npz holds no input arrays")
    xs = []
    for i, spec in enumerate(wanted):
        if spec.name in arrays:
            a = arrays[spec.name]
        elif len(arrays) == 1 and len(wanted) == 1:
            a = next(iter(arrays.values()))
        else:
            raise ConvertError(
                f"{flag} {p}: no array named {spec.name!r} (has: {', '.join(arrays)}); "
                "name the arrays after the model inputs"
            )
        a = np.asarray(a, dtype=np.float32)
        if streaming:
            ok = a.ndim == len(spec.shape) and list(a.shape[2:]) == spec.shape[2:] and a.shape[1] >= spec.shape[1]
            want = f"(N, T>={spec.shape[1]}, {', '.join(map(str, spec.shape[2:]))}) whole utterances"
        else:
            ok = list(a.shape[1:]) == spec.shape[1:]
            want = f"(N, {', '.join(map(str, spec.shape[1:]))})"
        if not ok:
            raise ConvertError(f"{flag} {p}: array {spec.name!r} has shape {tuple(a.shape)}, the model needs {want}")
        if a.shape[0] == 0:
            raise ConvertError(f"{flag} {p}: array {spec.name!r} is empty")
        xs.append(a)
    n = xs[0].shape[0]
    if any(x.shape[0] != n for x in xs) or (labels is not None and len(labels) != n):
        raise ConvertError(f"{flag} {p}: arrays (and labels) must all have the same first dimension")
    idx = _subsample(n, limit, seed)
    return Dataset(
        [x[idx] for x in xs],
        None if labels is None else np.asarray(labels)[idx].astype(int),
        classes,
        f"{p} ({len(idx)} samples)",
    )
