"""`edge-runtime demo`: the whole daemon on sample media that ships with the package.

The sample photos play as a 1 fps video stream (looping) while a recording of
speech with keywords and then a spoken command plays as the microphone; the three
shipped models run (vision, keywords, and the phrase recognizer on a small
inline grammar), fusion applies two rules ("a dog on camera and 'stop' said
within 2.5 s", "an espresso on camera and 'start the coffee machine' said"),
events go to standard output as JSON lines and the HTTP status endpoint serves
while it runs.
It ends by itself when the recording ends (``--fast``: when each photo has played once).
"""

from __future__ import annotations

import wave

import numpy as np

from .config import (
    AudioConfig,
    CameraConfig,
    Condition,
    Config,
    FusionConfig,
    HttpConfig,
    JsonlConfig,
    MicrophoneConfig,
    RuleConfig,
    RuntimeConfig,
    SinksConfig,
    VisionConfig,
)
from .defaults import SAMPLES
from .pipelines.asr_pipeline import AsrConfig

DEMO_AUDIO = SAMPLES / "audio" / "keywords.wav"
DEMO_IMAGES = SAMPLES / "images"
DEMO_FPS = 1.0
DEMO_PHRASES = [  # an inline grammar: what the [asr] section's phrases key takes
    "start the coffee machine",
    "what is the (temperature|time|weather)",
    "(open|close) the (door|window|curtains)",
]


def demo_config(http_port: int = 0, realtime: bool = True) -> Config:
    from .preprocess import list_images

    with wave.open(str(DEMO_AUDIO)) as w:
        seconds = w.getnframes() / w.getframerate()
    if not realtime:  # the audio is read at once; the photos (a folder cycles for ever) each play once
        seconds = len(list_images(DEMO_IMAGES)) / DEMO_FPS
    return Config(
        runtime=RuntimeConfig(log_level="warning", duration_s=seconds + 1.0),
        camera=CameraConfig(uri=str(DEMO_IMAGES), fps=DEMO_FPS, loop=realtime),
        vision=VisionConfig(threshold=0.5, top_k=3),
        microphone=MicrophoneConfig(file=str(DEMO_AUDIO), realtime=realtime),
        audio=AudioConfig(),
        more={"asr": AsrConfig(phrases=DEMO_PHRASES)},
        fusion=FusionConfig(
            rules=[
                RuleConfig(
                    name="dog_stop",
                    within_s=2.5,  # the camera and the recording start a few 100 ms apart
                    all=[
                        Condition(modality="vision", label="Pekingese", min_score=0.5),
                        Condition(modality="audio", label="stop"),
                    ],
                ),
                RuleConfig(
                    name="coffee_time",
                    within_s=3.0,  # a phrase's time is its end; the espresso photo shows while it begins
                    all=[
                        Condition(modality="vision", label="espresso", min_score=0.5),
                        Condition(modality="speech", phrase="start the coffee machine"),
                    ],
                ),
            ],
            passthrough=True,
            passthrough_cooldown_s=2.0,
        ),
        sinks=SinksConfig(jsonl=JsonlConfig(path="-"), http=HttpConfig(host="127.0.0.1", port=http_port)),
        path="(demo)",
    )


def summary(daemon) -> str:
    """Events and a latency / throughput summary of a finished run."""
    status = daemon.status()
    names = dict(daemon.event_counts)
    lines = [
        "",
        "# summary",
        f"events: {sum(names.values())}  " + ", ".join(f"{k} x{v}" for k, v in sorted(names.items())),
    ]
    for name, p in status["pipelines"].items():
        lat = p.get("latency_ms", {})
        lines.append(
            f"{name}: {p['model']} on {p['engine']} {p['device']}; {p.get('inferences', 0)} steps "
            f"({p.get('rate_per_s', 0)}/s), {p.get('decisions', 0)} decisions, capture->decision "
            f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms"
        )
    for name, s in status["sources"].items():
        lines.append(f"{name}: {s['frames']} frames/chunks, {s['dropped']} dropped, {s['overflows']} overflows")
    lat = np.asarray(daemon.event_latencies_ms, dtype=np.float64)
    if lat.size:
        lines.append(f"decision->event: p50 {np.percentile(lat, 50):.3f} ms, p99 {np.percentile(lat, 99):.3f} ms")
    return "\n".join(lines)
