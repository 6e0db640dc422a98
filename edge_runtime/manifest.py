"""The artifact contract between the converters and the runtime.

One ``manifest.json`` sits beside the model files of an artifact folder. It
holds everything the runtime needs and nothing it must guess: the files with
their sha256 and size, each artifact's inputs and outputs with quantization
parameters, the preprocessing, the labels, the streaming state pairs, the
target, the source model's hash, the tool versions and the measured metrics.

Loading verifies every file hash and refuses a mismatch or an unknown schema
version with a one-line :class:`ManifestError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fileio import atomic_write
from .schema import SchemaError, build, check, choice

SCHEMA = "edge-runtime/manifest"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20

RESIZE_MODES = ("squash", "crop", "letterbox")
RESIZE_FILTERS = ("area", "bilinear")
COLOR_MODES = ("rgb", "gray")  # gray: ITU-R BT.601 luma, one channel
LAYOUTS = ("nhwc", "nchw")
MAX_IMAGE_SIDE = 8192  # a model input side; camera frames and files have their own caps
TARGETS = ("generic", "rpi", "coral", "jetson", "android")
TENSOR_DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")


class ManifestError(Exception):
    """A manifest or artifact folder the runtime cannot trust; the message is one line."""


@dataclass(frozen=True)
class FileRef:
    path: str = field(
        metadata=check(lambda v: v.strip() not in ("", "."), "must name a file")
    )  # relative to the folder
    sha256: str = field(
        metadata=check(
            lambda v: len(v) == 64 and all(c in "0123456789abcdef" for c in v), "must be 64 lowercase hex digits"
        )
    )
    size: int = field(metadata=check(lambda v: v >= 0, "must be 0 or more"))


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point); per tensor or per axis."""

    scale: list[float]
    zero_point: list[int]
    axis: int | None = None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[int] = field(
        metadata=check(
            lambda v: len(v) <= 8 and all(1 <= d <= 1 << 24 for d in v), "must be up to 8 sizes, each 1 or more"
        )
    )
    dtype: str = field(metadata=choice(*TENSOR_DTYPES))  # numpy dtype name
    quantization: Quantization | None = None


@dataclass(frozen=True)
class StatePair:
    """A streaming state: ``output`` of one step feeds ``input`` of the next."""

    input: str
    output: str
    shape: list[int] = field(
        metadata=check(
            lambda v: len(v) <= 8 and all(1 <= d <= 1 << 24 for d in v), "must be up to 8 sizes, each 1 or more"
        )
    )
    dtype: str = field(metadata=choice(*TENSOR_DTYPES))
    initial: float = 0.0  # real-valued initial state (quantized by the runtime)


@dataclass(frozen=True)
class ImagePreprocessing:
    """pixel (0..255) -> resize -> colour (RGB in channel_order, or grey) -> (pixel - mean) / std -> layout.

    ``mean`` and ``std`` hold one value per channel: three for ``color = "rgb"``, one for ``"gray"``.
    ``resize_filter`` is how pixels are resampled when shrinking: ``area`` averages every source
    pixel (no aliasing; the default, and what manifests without the field were calibrated with) and
    ``bilinear`` samples 2x2 neighbours (what tf.image.resize and MediaPipe do; a few times faster on
    a camera frame). The converter calibrates with the filter it records, so the board sees what
    calibration saw.
    """

    size: list[int]  # [height, width]
    resize: str = "squash"
    resize_filter: str = "area"
    channel_order: str = "RGB"
    mean: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    std: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    color: str = "rgb"
    layout: str = "nhwc"

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("resize", self.resize, RESIZE_MODES),
            ("resize_filter", self.resize_filter, RESIZE_FILTERS),
            ("color", self.color, COLOR_MODES),
            ("layout", self.layout, LAYOUTS),
            ("channel_order", self.channel_order, ("RGB", "BGR")),
        ):
            if value not in allowed:
                raise ValueError(f"image {key} {value!r} is not one of {', '.join(allowed)}")
        if (
            not isinstance(self.size, list)
            or len(self.size) != 2
            or not all(isinstance(v, int) and 1 <= v <= MAX_IMAGE_SIDE for v in self.size)
        ):
            raise ValueError(f"image size {self.size!r} must be [height, width], each 1..{MAX_IMAGE_SIDE}")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if (
                not isinstance(values, list)
                or len(values) != self.channels
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            ):
                raise ValueError(
                    f"image {key} {values!r} must hold {self.channels} finite number(s), one per {self.color} channel"
                )
        if any(v == 0 for v in self.std):
            raise ValueError("image std must not be 0")

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def input_shape(self) -> list[int]:
        """The model input this preprocessing makes, batch first."""
        h, w = self.size
        return [1, self.channels, h, w] if self.layout == "nchw" else [1, h, w, self.channels]


@dataclass(frozen=True)
class AudioPreprocessing:
    """Parameters of the streaming log-mel front end (edge_runtime.audio.frontend)."""

    sample_rate: int = 16000
    n_mels: int = 40
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    fmin: float = 20.0
    fmax: float = 7600.0
    frames_per_step: int = 0  # streaming models: frames fed per step; 0 = whole window
    # Streaming models whose step sees more than the new frames: the last ``window_frames`` frames
    # (the new ``frames_per_step`` included) are fed each step; 0 = just the new frames.
    window_frames: int = 0
    # How a frame is computed (defaults: the plain log-mel of the keyword LSTM). "center" puts the
    # window in the middle of an n_fft-sample frame (frame k spans [k*hop, k*hop + n_fft)).
    window_align: str = "start"  # "start" | "center"
    mel_scale: str = "htk"  # "htk" | "slaney" (librosa's default: linear below 1 kHz)
    mel_norm: str = "none"  # "none" | "slaney" (each filter scaled to unit area)
    log: str = "ln"  # "ln": log(mel + log_floor); "db": 10*log10(max(mel, log_floor))
    log_floor: float = 1e-6
    top_db: float = 0.0  # "db" only, > 0: each frame's bins floored at its own maximum minus top_db
    input_scale: float = 1.0  # samples in [-1, 1] are multiplied by this first (32768: int16 scale)
    feature_scale: float = 1.0  # after the log: x * feature_scale + feature_offset
    feature_offset: float = 0.0
    # Causal feature normalisation applied after the log-mel (edge_runtime.audio.frontend.FeatureNorm):
    # "none", or "running_mean": subtract a per-bin exponential running mean with this time constant.
    normalization: str = "none"
    normalization_time_s: float = 0.0

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("window_align", self.window_align, ("start", "center")),
            ("mel_scale", self.mel_scale, ("htk", "slaney")),
            ("mel_norm", self.mel_norm, ("none", "slaney")),
            ("log", self.log, ("ln", "db")),
            ("normalization", self.normalization, ("none", "running_mean")),
        ):
            if value not in allowed:
                raise ValueError(f"audio {key} {value!r} is not one of {', '.join(allowed)}")
        ints = (
            ("sample_rate", 1000, 192_000),
            ("n_mels", 1, 512),
            ("n_fft", 16, 65536),
            ("frames_per_step", 0, 10_000),
            ("window_frames", 0, 100_000),
        )
        for key, lo, hi in ints:
            v = getattr(self, key)
            if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
                raise ValueError(f"audio {key} {v!r} must be a whole number from {lo} to {hi}")
        floats = (
            ("window_ms", 0.0, 1000.0),
            ("hop_ms", 0.0, 1000.0),
            ("fmin", -1.0, 96_000.0),
            ("fmax", 0.0, 96_000.0),
            ("log_floor", 0.0, 1e6),
            ("top_db", -1.0, 1000.0),
            ("input_scale", 0.0, 1e9),
            ("feature_scale", -1e9, 1e9),
            ("feature_offset", -1e9, 1e9),
            ("normalization_time_s", -1.0, 3600.0),
        )
        for key, above, most in floats:
            x = getattr(self, key)
            if not (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and above < x <= most):
                raise ValueError(f"audio {key} {x!r} must be a number above {above:g} and at most {most:g}")
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"audio fmin {self.fmin:g} / fmax {self.fmax:g} must satisfy fmin < fmax <= "
                f"sample_rate / 2 ({self.sample_rate / 2:g})"
            )


@dataclass(frozen=True)
class Preprocessing:
    image: ImagePreprocessing | None = None
    audio: AudioPreprocessing | None = None


@dataclass(frozen=True)
class Artifact:
    """One runnable model file (a format at a precision) and its I/O contract."""

    id: str  # e.g. "tflite-int8", "onnx-int8"
    format: str = field(metadata=choice("tflite", "onnx"))
    precision: str  # "int8" | "int16x8" | "float32"
    file: FileRef
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    state: list[StatePair] = field(default_factory=list)
    extra_files: list[FileRef] = field(default_factory=list)  # e.g. an Edge TPU compiled model
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ins, outs = {t.name: t for t in self.inputs}, {t.name: t for t in self.outputs}
        for s in self.state:  # each state is an input fed from an output of the same shape and dtype
            i, o = ins.get(s.input), outs.get(s.output)
            if i is None or o is None:
                raise ValueError(
                    f"state {s.input!r} <- {s.output!r} does not name an input and an output of artifact {self.id!r}"
                )
            if not (s.shape == i.shape == o.shape and s.dtype == i.dtype == o.dtype):
                raise ValueError(
                    f"state {s.input!r}: {s.dtype} {s.shape} is not its tensors' ({i.dtype} {i.shape}, "
                    f"{o.dtype} {o.shape})"
                )


@dataclass(frozen=True)
class Manifest:
    name: str
    task: str  # "image-classification" | "audio-classification" | "streaming-audio" | "classification"
    target: str
    artifacts: list[Artifact]
    labels: list[str] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    source: dict[str, Any] = field(default_factory=dict)  # file name, format, sha256
    tools: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    fastest_on_host: str | None = None
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def streaming(self) -> bool:
        return any(a.state for a in self.artifacts)

    def artifact(self, fmt: str) -> Artifact:
        """The artifact of a format ("tflite" / "onnx") or an id ("tflite-int8")."""
        for a in self.artifacts:
            if a.id == fmt:
                return a
        for a in self.artifacts:
            if a.format == fmt:
                return a
        have = ", ".join(a.id for a in self.artifacts) or "none"
        raise ManifestError(f"manifest {self.name!r} has no {fmt} artifact (has: {have})")

    # --- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("schema_version")
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> Manifest:
        """A manifest from its parsed JSON, every field type- and range-checked (one ManifestError line)."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ManifestError(f"{where}: not an edge-runtime manifest (schema must be {SCHEMA!r})")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{where}: schema_version {version!r} is not supported (this edge-runtime reads "
                f"{SCHEMA_VERSION}); re-convert the model with a matching edge-convert or upgrade edge-runtime"
            )
        try:
            return build(cls, {k: v for k, v in d.items() if k != "schema"})
        except SchemaError as e:
            raise ManifestError(f"{where}: {e.dotted() or 'manifest'}: {e.msg}; re-convert the model") from None


# --- files -------------------------------------------------------------
def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_ref(folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> FileRef:
    """A FileRef for ``path`` relative to ``folder`` (hash and size measured now)."""
    p = Path(path)
    return FileRef(
        path=str(p.relative_to(folder)) if p.is_absolute() else str(p),
        sha256=sha256_file(Path(folder) / p),
        size=(Path(folder) / p).stat().st_size,
    )


def write_json_atomic(path: str | os.PathLike[str], data: Any, default: Any = None) -> None:
    """Write JSON to a temp file in the same folder and rename it into place (``default`` as in json.dump)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=default)
        f.write("\n")


def save(manifest: Manifest, folder: str | os.PathLike[str]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    write_json_atomic(path, manifest.to_dict())
    return path


def load(folder_or_file: str | os.PathLike[str], verify: bool = True) -> tuple[Manifest, Path]:
    """Read a manifest (folder or manifest.json), verify every file; returns (manifest, folder)."""
    p = Path(folder_or_file)
    path = p / MANIFEST_NAME if p.is_dir() else p
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here; pass an artifact folder made by edge-convert")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB, which no manifest is; re-convert the model"
            )
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: unreadable manifest ({e}); re-convert the model") from None
    except RecursionError:
        raise ManifestError(f"{path}: nested too deeply to be a manifest; re-convert the model") from None
    m = Manifest.from_dict(data, where=str(path))
    if verify:
        verify_files(m, path.parent)
    return m, path.parent


def verify_files(m: Manifest, folder: str | os.PathLike[str]) -> None:
    folder = Path(folder).resolve()
    for a in m.artifacts:
        for ref in [a.file, *a.extra_files]:
            f = (folder / ref.path).resolve()
            if folder not in f.parents:
                raise ManifestError(f"{f}: manifest points outside its folder; refusing it")
            if not f.is_file():
                raise ManifestError(f"{f}: listed in the manifest but missing; copy the whole artifact folder")
            size = f.stat().st_size
            if size != ref.size or sha256_file(f) != ref.sha256:
                raise ManifestError(
                    f"{f}: sha256 does not match the manifest (file changed or corrupt); "
                    "re-copy or re-convert the artifact"
                )
