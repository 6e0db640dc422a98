"""The source registry: each source module registers the kinds that read a config section."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, wait_until

from edge_runtime import config, sources
from edge_runtime.sources import Frame, Source, SourceError, register_kind, resolve

IMAGES = ROOT / "edge_runtime/data/samples/images"


def test_the_shipped_kinds_read_their_sections(tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    cfg = config.parse(f'[camera]\nuri = "{IMAGES}"\n[vision]\n[microphone]\n[audio]\n')
    assert resolve("camera", cfg.camera)[0].name == "camera"
    assert resolve("microphone", cfg.microphone)[0].name == "sound card"
    cfg.microphone.file = str(wav)
    kind, target = resolve("microphone", cfg.microphone)
    assert (kind.name, target) == ("wav file", str(wav))
    cfg.microphone.file = str(tmp_path / "gone.wav")
    with pytest.raises(SourceError, match="gone.wav: no such file"):
        resolve("microphone", cfg.microphone)


class StillCamera(Source):
    """A kind defined outside the package: ``uri = "still:<image>"`` serves one photo at 20 fps."""

    noun = "camera"

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        from edge_runtime.preprocess import read_image

        self.image = read_image(path)
        self.seq = 0

    def start(self) -> StillCamera:
        self._mark_online()
        return self

    def latest(self, timeout: float | None = 1.0) -> Frame | None:
        if self._stop.wait(0.05):
            return None
        self.seq += 1
        import time

        return Frame(image=np.array(self.image), t_capture=time.monotonic_ns(), seq=self.seq, source=self.name)


def _still(c) -> str | None:
    if not str(c.uri).startswith("still:"):
        return None
    path = str(c.uri)[len("still:") :]
    if not (IMAGES / path).is_file():
        raise SourceError(f"camera uri {c.uri!r}: no such image")
    return str(IMAGES / path)


def test_a_source_kind_registered_outside_the_package_is_checked_and_run(tmp_path, monkeypatch):
    from edge_runtime.service import Daemon

    photo = "dog.jpg"  # a Pekingese both engines name at over 0.5 (the section's threshold): every frame an event
    base = "[vision]\n[sinks.jsonl]\npath = '" + str(tmp_path / "ev.jsonl") + "'\n[camera]\nuri = "
    with pytest.raises(config.ConfigError, match=r"camera\.uri: .*'still:.*': no such file, folder or device"):
        config.parse(base + f'"still:{photo}"\n', "edge.toml")  # no kind reads it yet
    monkeypatch.setattr(sources, "_KINDS", list(sources._KINDS))
    register_kind("camera", "still", claims=_still, key="uri", order=10)(lambda name, c, path: StillCamera(name, path))
    with pytest.raises(config.ConfigError, match=r"^edge.toml:5: camera\.uri: camera uri 'still:nope.jpg': no such"):
        config.parse(base + '"still:nope.jpg"\n', "edge.toml")
    cfg = config.parse(base + f'"still:{photo}"\n', str(tmp_path / "edge.toml"))
    daemon = Daemon(cfg)
    daemon.start()
    try:
        assert wait_until(lambda: daemon_events(tmp_path) >= 3, timeout=60)
        assert [type(p.source) for p in daemon.pipelines] == [StillCamera]
    finally:
        daemon.stop()
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert all(e["decisions"][0]["modality"] == "vision" for e in events)


def daemon_events(tmp_path) -> int:
    p = tmp_path / "ev.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0
