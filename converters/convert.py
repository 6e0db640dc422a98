"""The conversion pipeline: source -> calibrated int8 artifacts -> evaluation -> manifest and report.

Everything is built in a staging folder beside ``--out`` and renamed into place
at the end, so a failed, interrupted (SIGINT) or terminated (SIGTERM) run leaves no
partial artifact and no temporary folder behind.
"""

from __future__ import annotations

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
from .fidelity import (FULL_INTEGER_TARGETS, GATE_WITHOUT_LABELS, LATENCY_BUDGET, TARGET_AGREEMENT, TARGET_KL,
                       fidelity_gate, float_layer_counts)
from . import onnx_quant, tflite
from .errors import AccuracyError, ConvertError
from .source import SourceModel, load_source

log = logging.getLogger(__name__)

TARGET_FORMATS = {"generic": ["tflite", "onnx"], "rpi": ["tflite"], "coral": ["tflite"],
                  "jetson": ["onnx"], "android": ["tflite"]}
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
    if out.is_dir() and any(out.iterdir()) and not ((out / mf.MANIFEST_NAME).exists() or (out / "report.json").exists()):
        raise ConvertError(f"--out {out}: folder exists and is not an edge-convert output; choose a new or empty folder")
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
        raise ConvertError(f"{flag}: give one value or {channels} (one per channel of this "
                           f"{'grayscale' if channels == 1 else 'RGB'} model), got {len(values)}")
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
        return ImagePreprocessing(size=list(size), resize=opts.resize, channel_order=opts.channel_order,
                                  mean=_expand(opts.mean, "--mean", channels), std=_expand(opts.std, "--std", channels),
                                  color="gray" if channels == 1 else "rgb", layout=layout)
    except ValueError as e:
        raise ConvertError(f"{source.path}: {e}; check --mean/--std or export the model with another input size") from None


def _read_labels(path: Path) -> list[str]:
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"--labels {path}: cannot read it ({getattr(e, 'strerror', e)}); pass a text file, one label per line") from None
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
        raise ConvertError(f"{flag}: class folders {', '.join(missing[:5])} are not among the model's labels; "
                           "rename the folders or fix --labels")
    remap = np.asarray([labels.index(c) for c in ds.classes])
    ds.labels = remap[ds.labels]
    ds.classes = labels


def _examples(ds: data_mod.Dataset) -> list[list[np.ndarray]]:
    return [[x[i : i + 1] for x in ds.inputs] for i in range(len(ds))]


# --- the pipeline ------------------------------------------------------------------------
def run(opts: Options) -> dict[str, Any]:
    """Convert, evaluate, write the artifact folder; returns the report dict."""
    if opts.target not in TARGET_FORMATS:
        raise ConvertError(f"--target {opts.target}: use one of {', '.join(TARGET_FORMATS)}")
    formats = opts.formats or TARGET_FORMATS[opts.target]
    if opts.resize not in mf.RESIZE_MODES:
        raise ConvertError(f"--resize {opts.resize}: use one of {', '.join(mf.RESIZE_MODES)}")
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
            if not report["passed"]:
                for f in staging.iterdir():  # a failed conversion ships no model, only its report
                    if f.name not in ("report.json", "report.html"):
                        shutil.rmtree(f) if f.is_dir() else f.unlink()
            publish(staging, opts.out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not report["passed"]:
        aid, g = next((aid, g) for aid, g in report["gate"].items() if not g["passed"])
        figure, f = next((k, f) for k, f in g["figures"].items() if f["value"] > f["limit"] + 1e-9)
        flag = "--max-kl" if figure == "top-k KL" else "--max-accuracy-drop"
        raise AccuracyError(f"{aid}: {figure} {f['value']:.3g} is over {flag} {f['limit']:g}; no model written, "
                            f"see {opts.out / 'report.html'}")
    return report


def _convert(opts: Options, formats: list[str], labels_file: list[str] | None, staging: Path, work: Path) -> dict[str, Any]:
    source = load_source(opts.source, opts.size)
    if source.kind == "onnx" and opts.formats is None:  # TFLite is made from TensorFlow models only
        formats = [f for f in formats if f != "tflite"]
        if not formats:
            raise ConvertError(f"{source.path}: --target {opts.target} runs TFLite, which is made from a Keras or "
                               "SavedModel source; pass the model this ONNX file came from, or --target generic/jetson")
    n_out = int(np.prod(source.outputs[0].shape[1:]))
    if labels_file and len(labels_file) != n_out:
        raise ConvertError(f"--labels {opts.labels}: {len(labels_file)} labels but the model outputs {n_out} scores; "
                           "give one label per output, in output order")
    streaming = source.is_streaming
    in0 = source.inputs[0]
    image = image_preprocessing(source, opts)
    chunk = in0.shape[1]
    hop = opts.hop_frames or chunk
    if opts.hop_frames is not None and not (streaming and 1 <= hop <= chunk):
        raise ConvertError(f"--hop-frames {opts.hop_frames}: needs a streaming model and 1..{chunk} "
                           f"(the frames of its feature input)")
    audio = AudioPreprocessing(frames_per_step=hop if streaming else 0, window_frames=chunk if hop != chunk else 0)

    calib = data_mod.load(opts.calibration, "--calibration", source.inputs, image, audio, streaming,
                          limit=opts.calibration_limit)
    evald = (data_mod.load(opts.eval, "--eval", source.inputs, image, audio, streaming, limit=opts.eval_limit)
             if opts.eval else calib)
    is_wav = any(str(f).lower().endswith(".wav") for f in (calib.files or []))

    # Reference run of the float model, and (streaming) the real states for calibration.
    state_shapes = [s.shape for s in source.inputs[1:]] if streaming else []
    if streaming:
        _, seen = ev.run_streaming(ev.float_step(source), calib.inputs[0], chunk, state_shapes,
                                   "float states for calibration", collect_states=True, hop=hop)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(seen), size=min(len(seen), opts.calibration_limit), replace=False)
        samples = [seen[i] for i in sorted(pick)]
        ref_steps, _ = ev.run_streaming(ev.float_step(source), evald.inputs[0], chunk, state_shapes, "float (eval)",
                                        hop=hop)
        ref = ev.Scores(ref_steps[:, -1], ref_steps)
    else:
        samples = _examples(calib)
        batch = 16 if source.keras_model is not None else 1
        ref = ev.Scores(ev.run_classifier(ev.float_step(source), evald, "float (eval)", batch=batch))
    n_classes = ref.final.shape[-1]

    labels = labels_file or evald.classes or calib.classes or []
    if labels and len(labels) != n_classes:
        flag = "--labels" if labels_file else ("--eval" if evald.classes else "--calibration")
        raise ConvertError(f"{flag}: {len(labels)} labels but the model outputs {n_classes} scores; "
                           "give one label per output, in output order")
    if labels:
        _align_labels(evald, labels, "--eval" if opts.eval else "--calibration")

    precision = "int16x8" if opts.activations == "int16" else "int8"
    io_dtype = "uint8" if opts.target == "coral" else "int8"
    rows, artifacts = [], []
    edgetpu = None
    float_acc = ev.accuracy_metrics(ref.final, evald.labels, labels or None)
    labelled = evald.labels is not None
    onnx_method = "minmax" if opts.calibration_method == "auto" else opts.calibration_method

    def can_improve(fmt: str) -> bool:
        if precision != "int8":
            return False
        if source.keras_model is not None:  # bias correction
            return True
        if fmt == "onnx":
            return opts.calibration_method == "auto"
        return opts.mixed_precision and opts.target not in FULL_INTEGER_TARGETS and len(source.inputs) == 1

    def measure(art_id: str, fmt: str, path: Path, shipped: bool, notes: dict[str, Any]):
        folder = staging if shipped else path.parent
        art = _describe(art_id, fmt, path, folder, source, streaming, notes)
        try:
            eng = open_artifact(art, folder, threads=opts.threads)
        except EngineError as e:
            raise ConvertError(f"{path.name}: the converted model does not load ({e})") from None
        got = _run(eng, evald, streaming, chunk, state_shapes, art_id, hop)
        row: dict[str, Any] = {"id": art_id, "format": fmt, "precision": art.precision, "shipped": shipped,
                               "file": path.name, "size_bytes": path.stat().st_size,
                               "latency_ms": ev.latency_ms(eng, _latency_example(evald, streaming, chunk, state_shapes)),
                               "placement": eng.placement.device, "notes": notes}
        row.update(ev.compare(ref, got, evald.labels, labels or None))
        row["ops"] = tflite.op_histogram(path) if fmt == "tflite" else onnx_quant.op_histogram(path)
        return row, art

    def passes(row: dict[str, Any]) -> bool:
        return fidelity_gate([{**row, "shipped": True}], float_acc, labelled, opts.max_accuracy_drop,
                             opts.max_kl)[row["id"]]["passed"]

    def on_target(row: dict[str, Any]) -> bool:
        """As faithful as the converter aims for: the gate, and without labels the overall figures too."""
        return passes(row) and (labelled or (row["agreement"] >= TARGET_AGREEMENT and row["kl_top_k"] <= TARGET_KL))

    bias_work = work / "bias-corrected"

    @functools.cache
    def bias_corrected():
        """The bias-corrected copy of a Keras source, made once for every format; (None, None) otherwise."""
        if source.keras_model is None:
            return None, None
        bias_work.mkdir(exist_ok=True)
        return _bias_corrected(source, samples)

    def fidelity(row: dict[str, Any]) -> tuple:
        return passes(row), row["accuracy"] if labelled else row["agreement"], -row["kl_top_k"]

    def better(fmt: str, full: dict[str, Any], path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Candidates beyond plain full-integer minmax, tried in turn: (the one to ship, every row tried).

        Keras sources first get bias correction (full integer still). Then, on the better of the
        two, TFLite leaves the fewest ops that quantization damages most float (mixed precision; the
        float layers keep their own bias), and ONNX tries ONNX Runtime's other calibration methods.
        The candidate on target with the fewest float ops is shipped; else the most faithful one that
        fits (:func:`fits`), when it beats full integer.
        """
        names = [s.name for s in source.inputs]
        tried: list[dict[str, Any]] = []
        hit: list[int] = []

        def attempt(tag: str, notes: dict[str, Any], make) -> dict[str, Any]:
            cand = work / f"{path.stem}_{tag}{path.suffix}"
            make(cand)
            row, _ = measure(f"{fmt}-{precision}-{tag}", fmt, cand, False, notes)
            notes["latency_vs_full_integer"] = row["latency_ms"]["median"] / full["latency_ms"]["median"]
            row["candidate_file"] = cand
            tried.append(row)
            return row

        def fits(row: dict[str, Any]) -> bool:
            """Passes the gate, and costs no more than the budget: bias correction and calibration methods
            keep the full-integer graph (the same cost, whatever a noisy host measures); float layers do not."""
            return passes(row) and (not row["notes"].get("float_layers")
                                    or row["notes"]["latency_vs_full_integer"] <= LATENCY_BUDGET)

        preprocessed: dict[int, Path] = {}  # ONNX: quant_pre_process once per source model

        def quantize(src: SourceModel, wdir: Path, out: Path, layers: list[str] | None = None,
                     method: str = onnx_method) -> None:
            if fmt == "tflite":
                tflite.convert(src, wdir, out, precision, samples, io_dtype, float_layers=layers)
                return
            if id(src) not in preprocessed:
                preprocessed[id(src)] = onnx_quant.preprocess(src.float_onnx(wdir), wdir / "float_pre.onnx")
            onnx_quant.quantize_static(preprocessed[id(src)], out, names, samples, method, opts.activations,
                                       _symmetric(opts))

        src, wdir, base = source, work, full
        corrected, info = bias_corrected()
        if corrected is not None and info.layers:  # nothing to correct (e.g. only recurrent layers): no candidate
            notes = {**full["notes"], "bias_correction": f"{info.layers} layers' biases moved to cancel the mean "
                                                         "shift of int8 weight rounding"}
            row = attempt("bias-corrected", notes, lambda out: quantize(corrected, bias_work, out))
            if fidelity(row) > fidelity(full):
                src, wdir, base = corrected, bias_work, row
        on_target_now = any(on_target(r) and fits(r) for r in tried)
        if not on_target_now and fmt == "tflite" and opts.mixed_precision and opts.target not in FULL_INTEGER_TARGETS \
                and len(source.inputs) == 1:
            corrected_base = src is not source
            ranked = tflite.layer_sensitivity(src, wdir, samples, io_dtype)
            what = base["notes"]["quantization"].replace("full-integer ", "")

            def make_mixed(k: int, out: Path) -> None:
                if not corrected_base:
                    quantize(source, work, out, ranked[:k])
                    return
                # a layer left float must keep its own bias: correct again without the float ones
                wk = work / f"bias-corrected-mixed{k}"
                wk.mkdir(exist_ok=True)
                again, _ = _bias_corrected(source, samples, skip=lambda name: tflite.names_layer(ranked[:k], name))
                quantize(again, wk, out, ranked[:k])

            for k in float_layer_counts(len(ranked), passes_at=lambda k: k in hit):
                notes = {**base["notes"], "quantization": f"{what}; the {k} of {len(ranked)} ops that quantization "
                                                          "damages most left float (mixed precision)",
                         "float_layers": ranked[:k]}
                row = attempt(f"mixed{k}", notes, lambda out, k=k: make_mixed(k, out))
                if on_target(row) and fits(row):
                    hit.append(k)
        elif not on_target_now and fmt == "onnx" and opts.calibration_method == "auto":
            for method in (m for m in onnx_quant.AUTO_METHODS if m != onnx_method):
                row = attempt(method, {**base["notes"], "calibration": method},
                              lambda out, m=method: quantize(src, wdir, out, method=m))
                if on_target(row) and fits(row):
                    break
        on = [r for r in tried if on_target(r) and fits(r)]
        ok = [r for r in tried if fits(r)]
        pick = (min(on, key=lambda r: len(r["notes"].get("float_layers", []))) if on
                else max(ok, key=fidelity) if ok else None)
        chosen = full
        if pick is not None and fidelity(pick) > fidelity(full):
            pick["candidate_file"].replace(path)
            chosen = {**pick, "id": full["id"], "file": path.name, "shipped": True}
        return chosen, [{k: v for k, v in r.items() if k != "candidate_file"}
                        for r in tried if r is not pick or chosen is full]

    for fmt in formats:
        for art_id, path, shipped, notes in _make_format(fmt, source, work, staging, precision, io_dtype, samples, opts):
            row, art = measure(art_id, fmt, path, shipped, notes)
            if shipped and can_improve(fmt) and "dynamic" not in notes["quantization"] and not on_target(row):
                full_file = work / f"full_integer_{path.name}"
                shutil.copy2(path, full_file)
                chosen, tried = better(fmt, row, path)
                if chosen is not row:  # the full-integer minmax model stays in the report as a reference
                    rows.append({**row, "id": f"{art_id}-full-integer", "shipped": False, "file": full_file.name})
                    row = {k: v for k, v in chosen.items() if k != "candidate_file"}
                    art = _describe(art_id, fmt, path, staging, source, streaming, row["notes"])
                rows.extend(tried)
            rows.append(row)
            if shipped:
                artifacts.append(art)
        if fmt == "tflite" and opts.target == "coral":
            edgetpu = tflite.edgetpu_compile(staging / f"model_{precision}.tflite", staging)
            if edgetpu.get("compiled"):
                art = artifacts[-1]
                artifacts[-1] = mf.Artifact(**{**art.__dict__, "extra_files": [mf.file_ref(staging, edgetpu["file"])]})

    rows, artifacts = _keep_best_candidates(rows, artifacts, staging)
    ops = {r["id"]: r.pop("ops") for r in rows}
    # Size ratio and speed-up against the float artifact of the same format.
    for row in rows:
        base = next((r for r in rows if r["format"] == row["format"] and r["precision"] == "float32"), None)
        if base:
            row["size_ratio"] = row["size_bytes"] / base["size_bytes"]
            row["speedup_vs_float"] = base["latency_ms"]["median"] / row["latency_ms"]["median"]
    warnings = [f"{r['id']} is slower than {r['format']}-float32 on this host "
                f"({r['latency_ms']['median']:.3f} ms vs "
                f"{r['latency_ms']['median'] * r['speedup_vs_float']:.3f} ms); measure on the board before choosing it"
                for r in rows if r["shipped"] and r.get("speedup_vs_float", 1) < 1]
    fastest = min((r for r in rows if r["shipped"]), key=lambda r: r["latency_ms"]["median"])["id"]

    gate = fidelity_gate(rows, float_acc, labelled, opts.max_accuracy_drop, opts.max_kl)
    drops = {aid: g["drop_pp"] for aid, g in gate.items()}
    passed = all(g["passed"] for g in gate.values())
    basis = "labels" if labelled else GATE_WITHOUT_LABELS

    task = ("image-classification" if image else "streaming-audio" if streaming
            else "audio-classification" if is_wav else "classification")
    name = opts.name or source.path.stem
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    src_info = {"file": source.path.name, "format": source.kind, "sha256": source.sha256}
    report = {
        "name": name, "created": created, "source": src_info, "target": opts.target, "task": task,
        "calibration_data": calib.origin, "eval_data": evald.origin if opts.eval else f"{calib.origin} (no --eval given)",
        "calibration_method": {"tflite": "minmax (the TFLite converter's only method)", "onnx": opts.calibration_method},
        "fidelity_target": {"agreement": TARGET_AGREEMENT, "kl_top_k": TARGET_KL, "latency_budget": LATENCY_BUDGET},
        "labels": labels, "has_labels": evald.labels is not None, "float": float_acc,
        "artifacts": rows, "fastest_on_host": fastest, "max_accuracy_drop_pp": opts.max_accuracy_drop,
        "accuracy_drop_pp": drops, "drop_basis": basis, "gate": gate, "max_kl": opts.max_kl, "passed": passed, "warnings": warnings,
        "ops": ops, "edgetpu": edgetpu, "tools": tool_versions(),
    }
    metrics = {"eval_data": report["eval_data"], "float": float_acc, "accuracy_drop_pp": drops,
               "artifacts": {r["id"]: {k: r.get(k) for k in ("accuracy", "agreement", "kl_mean", "size_bytes",
                                                             "size_ratio", "latency_ms", "speedup_vs_float",
                                                             "step_agreement", "step_score_max_abs_diff")}
                             for r in rows}}
    man = mf.Manifest(name=name, task=task, target=opts.target, artifacts=artifacts, labels=labels,
                      preprocessing=mf.Preprocessing(image=image, audio=audio if (streaming or is_wav) else None),
                      source=src_info, tools=report["tools"], metrics=metrics, fastest_on_host=fastest, created=created)
    mf.save(man, staging)
    mf.write_json_atomic(staging / "report.json", report)
    from .report import write_html

    write_html(report, staging / "report.html")
    return report


def _keep_best_candidates(rows: list[dict[str, Any]], artifacts: list[mf.Artifact], staging: Path):
    """Where two quantizations compete for one format (ONNX static vs dynamic), keep the better agreement.

    Each keeps the id of what it is ("onnx-int16x8" static, "onnx-int8" dynamic), so the manifest
    names the winner's real precision.
    """
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        f = r["format"]
        if r["shipped"] and (f not in best or r["agreement"] > best[f]["agreement"]):
            best[f] = r
    kept_rows, kept_files = [], set()
    for r in rows:
        if not r["shipped"] or best[r["format"]] is r:
            kept_rows.append(r)
            kept_files.add(r["file"])
        else:
            best[r["format"]]["notes"]["rejected_alternative"] = (f"{r['notes'].get('quantization')}: "
                                                                 f"agreement {r['agreement']:.4f}")
            (staging / r["file"]).unlink()
    return kept_rows, [a for a in artifacts if a.file.path in kept_files]


def _make_format(fmt: str, source: SourceModel, work: Path, staging: Path, precision: str, io_dtype: str,
                 samples: list[list[np.ndarray]], opts: Options) -> list[tuple[str, Path, bool, dict[str, Any]]]:
    """(id, path, shipped, notes) for the float reference file and the quantized artifact of one format."""
    if fmt == "tflite":
        fpath = work / "model_float32.tflite"
        tflite.convert(source, work, fpath, "float32")
        qpath = staging / f"model_{precision}.tflite"
        tflite.convert(source, work, qpath, precision, samples, io_dtype)
        notes = {"quantization": f"full-integer {precision}, per-channel weights, {io_dtype} I/O",
                 "calibration": "minmax", "calibration_samples": len(samples)}
        return [("tflite-float32", fpath, False, {}), (f"tflite-{precision}", qpath, True, notes)]
    if fmt == "onnx":
        fpath = source.float_onnx(work)
        pre = onnx_quant.preprocess(fpath, work / "float_pre.onnx")
        qpath = staging / f"model_{precision}.onnx"
        symmetric = _symmetric(opts)
        method = "minmax" if opts.calibration_method == "auto" else opts.calibration_method
        onnx_quant.quantize_static(pre, qpath, [s.name for s in source.inputs], samples, method,
                                   opts.activations, symmetric)
        notes = {"quantization": f"static QDQ, per-channel int8 weights, {opts.activations} activations"
                                 + (", symmetric for TensorRT" if symmetric else ""),
                 "calibration": method, "calibration_samples": len(samples)}
        made = [("onnx-float32", fpath, False, {}), (f"onnx-{precision}", qpath, True, notes)]
        rnn = onnx_quant.recurrent_ops(pre)
        if rnn:  # static QDQ leaves LSTM/GRU float; dynamic int8 quantizes their weights. Both are evaluated.
            notes["recurrent_ops"] = rnn
            dpath = staging / "model_int8_dynamic.onnx"
            onnx_quant.quantize_dynamic(pre, dpath)
            dnotes = {"quantization": "dynamic int8 (weights int8, activations quantized at run time)",
                      "recurrent_ops": rnn}
            made.append(("onnx-int8", dpath, True, dnotes))  # int8 whatever --activations asked for
        return made
    raise ConvertError(f"--format {fmt}: use tflite and/or onnx")


def _bias_corrected(source: SourceModel, samples: list[list[np.ndarray]], skip=None):
    """A copy of a Keras source with bias correction for int8 weights (converters.bias_correction);
    ``skip(layer name)`` says which layers stay float, and so keep their bias."""
    import dataclasses

    import keras

    from . import bias_correction

    model = keras.models.clone_model(source.keras_model)
    model.set_weights(source.keras_model.get_weights())
    inputs = [np.concatenate([ex[i] for ex in samples]) for i in range(len(source.inputs))]
    info = bias_correction.correct(model, inputs, skip=skip)
    return dataclasses.replace(source, keras_model=model, _saved_model=None, _float_onnx=None), info


def _symmetric(opts: Options) -> bool:
    return opts.target == "jetson"  # TensorRT takes symmetric (zero-point 0) int8 activations


def _describe(art_id: str, fmt: str, path: Path, folder: Path, source: SourceModel, streaming: bool,
              notes: dict[str, Any]) -> mf.Artifact:
    """The manifest entry of an artifact, with I/O read from the file by its engine."""
    precision = art_id.split("-", 1)[1]
    stub = mf.Artifact(id=art_id, format=fmt, precision=precision, file=mf.file_ref(folder, path.name),
                       inputs=[mf.TensorSpec(s.name, s.shape, "float32") for s in source.inputs],
                       outputs=[mf.TensorSpec(s.name, s.shape, "float32") for s in source.outputs])
    try:
        eng = _open_to_describe(stub, folder)
    except EngineError as e:
        raise ConvertError(f"{path.name}: the converted model does not load ({e})") from None
    inputs, outputs = eng.inputs, eng.outputs
    state = []
    if streaming:
        for i, o in zip(inputs[1:], outputs[1:]):
            state.append(mf.StatePair(input=i.name, output=o.name, shape=i.shape, dtype=i.dtype, initial=0.0))
    return mf.Artifact(id=art_id, format=fmt, precision=precision, file=stub.file, inputs=inputs, outputs=outputs,
                       state=state, notes=notes)


def _open_to_describe(stub: mf.Artifact, folder: Path):
    """The engine of a file just made, to read its I/O from. A TFLite file's own tensors are what the
    manifest will say (int8 or uint8 I/O), so the stub's float32 placeholders are not checked against
    them; ONNX takes the stub's (QDQ graphs have float I/O, and the engine keeps the manifest's shapes)."""
    if stub.format == "tflite":
        from edge_runtime.engines.litert import LiteRTEngine

        return LiteRTEngine(Path(folder) / stub.file.path)
    return open_artifact(stub, folder)


def _run(eng, ds: data_mod.Dataset, streaming: bool, chunk: int, state_shapes: list[list[int]], desc: str,
         hop: int) -> ev.Scores:
    if streaming:
        steps, _ = ev.run_streaming(ev.engine_step(eng), ds.inputs[0], chunk, state_shapes, desc, hop=hop)
        return ev.Scores(steps[:, -1], steps)
    return ev.Scores(ev.run_classifier(ev.engine_step(eng), ds, desc))


def _latency_example(ds: data_mod.Dataset, streaming: bool, chunk: int, state_shapes: list[list[int]]) -> list[np.ndarray]:
    if streaming:
        return [ds.inputs[0][:1, :chunk], *[np.zeros(s, np.float32) for s in state_shapes]]
    return [x[:1] for x in ds.inputs]


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report as a few lines for the terminal."""
    lines = [f"{report['name']}: {report['task']}, target {report['target']}, eval on {report['eval_data']}"]
    if report["float"].get("accuracy") is not None:
        lines.append(f"  float accuracy {100 * report['float']['accuracy']:.2f}%")
    for r in report["artifacts"]:
        acc = f"acc {100 * r['accuracy']:.2f}%  " if r.get("accuracy") is not None else ""
        lines.append(
            f"  {r['id']:<16} {r['size_bytes'] / 1e6:7.2f} MB (x{r.get('size_ratio', 1):.2f})  "
            f"{r['latency_ms']['median']:8.3f} ms (x{r.get('speedup_vs_float', 1):.2f} vs float)  {acc}"
            f"agree {100 * r['agreement']:.2f}%  top-{r['top_k']} {100 * r['top_k_agreement']:.2f}%  "
            f"KL top-{r['top_k']} {r['kl_top_k']:.3f}" + ("  <- fastest" if r["id"] == report["fastest_on_host"] else "")
        )
    for w in report["warnings"]:
        lines.append(f"  warning: {w}")
    lines.append(f"  gate ({'labels' if report['has_labels'] else 'fidelity to float, no labels'}):")
    for aid, g in report["gate"].items():
        figures = ", ".join(f"{k} {f['value']:.3g} (limit {f['limit']:g})" for k, f in g["figures"].items())
        lines.append(f"    {'PASS' if g['passed'] else 'FAIL'} {aid}: {figures}")
    return lines


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
