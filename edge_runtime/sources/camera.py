"""Cameras through OpenCV: V4L2 devices, network streams, video files and image folders.

A reader thread grabs continuously and keeps only the newest frame: the consumer
takes it with :meth:`CameraSource.latest`; a frame overwritten before it was
taken is counted as dropped, so a slow model drops frames instead of lagging.
A camera that fails to open, disconnects or stalls is marked offline (one
WARNING per outage, with the reason) and reopened with capped exponential
backoff until frames flow again.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..redact import redact
from . import REOPEN, Frame, Source, SourceError, register_kind

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt")
DEFAULT_FOLDER_FPS = 10.0
DEFAULT_FILE_FPS = 25.0


def classify_uri(uri: int | str) -> tuple[str, int | str]:
    """(kind, target): kind is index, device, url, file or folder; SourceError (one line) if it can be none.

    Opens no device and no stream: a device may be plugged in later and a stream come up later,
    but a missing path, a folder without images or a file that is no video stays so (`check`
    refuses them as `run` does)."""
    if isinstance(uri, bool):
        raise SourceError(f"camera uri {uri!r} is not a device index, path or URL")
    if isinstance(uri, int):
        return "index", uri
    text = str(uri).strip()
    if not text:
        raise SourceError("camera uri is empty; give a device index, /dev/videoN, a URL, a video file or a folder")
    if text.isdigit():
        return "index", int(text)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if m:
        if m.group(1).lower() == "file":
            text = text[len("file://") :]
        elif m.group(1).lower() in URL_SCHEMES:
            return "url", text
        else:
            raise SourceError(
                f"camera uri {redact(text)!r}: unsupported scheme {m.group(1)!r}; use one of {', '.join(URL_SCHEMES)}"
            )
    if text.startswith("/dev/"):
        return "device", text  # may appear later (hot-plug): opened with backoff
    path = Path(text).expanduser()
    if path.is_dir():
        from ..preprocess import IMAGE_SUFFIXES, list_images

        if not list_images(path):
            raise SourceError(f"camera uri {text!r}: the folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        return "folder", str(path)
    if path.is_file():
        if not _decodes(str(path)):
            raise SourceError(
                f"camera uri {text!r}: not a video file OpenCV can decode; give a video, an image "
                "folder, a device or a URL"
            )
        return "file", str(path)
    raise SourceError(f"camera uri {text!r}: no such file, folder or device; check the path")


def _open_file(path: str) -> Any:
    """An opened cv2.VideoCapture of a video file (FFmpeg first, then any backend), or None."""
    import cv2

    for api in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
        cap = cv2.VideoCapture(path, api)
        if cap.isOpened():
            return cap
        cap.release()
    return None


def _decodes(path: str) -> bool:
    cap = _open_file(path)
    if cap is None:
        return False
    cap.release()
    return True


class _Failed(SourceError):
    """Opening or reading failed; the message is the reason shown in the log and stats."""


class _CvReader:
    """A cv2.VideoCapture: grab() fetches a frame, retrieve() decodes it to RGB."""

    def __init__(self, cap: Any) -> None:
        self.cap = cap

    def grab(self) -> bool:
        return bool(self.cap.grab())

    def retrieve(self) -> np.ndarray | None:
        from ..preprocess import to_rgb

        ok, img = self.cap.retrieve()
        if not ok or img is None or img.size == 0:
            return None
        return to_rgb(img, order="BGR")

    def release(self) -> None:
        self.cap.release()


class _FolderReader:
    """Images of a folder (recursively, sorted by path), cycled in order; unreadable ones skipped."""

    def __init__(self, folder: str, owner: str) -> None:
        from ..preprocess import list_images

        self.folder, self.owner = folder, owner
        self.paths = list_images(folder)
        if not self.paths:
            raise _Failed(f"no images in folder {folder}")
        self.i = 0
        self.bad: set[Path] = set()
        self.img: np.ndarray | None = None

    def grab(self) -> bool:
        from ..preprocess import ImageError, list_images, read_image

        for _ in range(len(self.paths)):
            if self.i >= len(self.paths):  # one cycle done: pick up added / removed images
                self.i = 0
                self.paths = list_images(self.folder) or self.paths
            path = self.paths[self.i]
            self.i += 1
            if path in self.bad:
                continue
            try:
                self.img = read_image(path)
                return True
            except (ImageError, OSError) as e:
                self.bad.add(path)
                log.warning("camera %r: skipping %s", self.owner, e)
        return False

    def retrieve(self) -> np.ndarray | None:
        return self.img

    def release(self) -> None:
        self.img = None


class CameraSource(Source):
    """Frames from a camera, stream, video file or image folder; the latest frame wins.

    ``uri``: an int index or ``"0"``, ``/dev/videoN`` (V4L2; ``width``/``height``/``fps``/``fourcc`` are
    requested from the driver), an ``rtsp://``/``http(s)://``/``udp://``/``tcp://`` URL (FFmpeg), a video
    file (paced at ``fps`` or the file's rate; ``loop`` restarts it, else the source ends) or a folder of
    images (cycled in order at ``fps``, default 10). ``stride=N`` keeps every Nth captured frame.
    """

    noun = "camera"
    thread_prefix = "camera"

    def __init__(
        self,
        name: str,
        uri: int | str,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        stride: int = 1,
        stall_timeout_s: float = 2.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        loop: bool = False,
    ) -> None:
        if int(stride) < 1:
            raise SourceError(f"camera {name!r}: stride must be >= 1, got {stride}")
        if fps is not None and not fps > 0:
            raise SourceError(f"camera {name!r}: fps must be > 0, got {fps}")
        if fourcc is not None and len(fourcc) != 4:
            raise SourceError(f"camera {name!r}: fourcc must be 4 characters (e.g. MJPG, YUYV), got {fourcc!r}")
        if not stall_timeout_s > 0 or not backoff_initial_s > 0 or backoff_max_s < backoff_initial_s:
            raise SourceError(f"camera {name!r}: need stall_timeout_s > 0 and 0 < backoff_initial_s <= backoff_max_s")
        super().__init__(name, backoff_initial_s, backoff_max_s)
        self.uri = uri
        self.kind, self._target = classify_uri(uri)
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.stride = int(stride)
        self.stall_timeout_s = float(stall_timeout_s)
        self.loop = bool(loop)
        self._label = redact(str(uri))
        self._slot: Frame | None = None
        self._seq = 0
        self._captured = 0
        self._last_grab_ns = 0
        self._period_s: float | None = None  # pacing of files and folders
        self._described = False

    # -- public -----------------------------------------------------------------------------------------

    def start(self) -> CameraSource:
        """Start the reader thread and its watchdog (idempotent); the camera is opened there. Returns self."""
        if not self._threads:
            super().start()
            self._spawn(self._watch, "-watchdog")
        return self

    def latest(self, timeout: float | None = 1.0) -> Frame | None:
        """The newest frame not yet taken; waits up to ``timeout`` s (None: forever). None if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self._ended or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            return frame

    def __repr__(self) -> str:
        return f"CameraSource({self.name!r}, {self._label!r})"

    # -- reader thread (run by Source._supervise) -------------------------------------------------------

    def _connect(self) -> _CvReader | _FolderReader:
        if self.kind == "folder":
            self._period_s = 1.0 / (self.fps or DEFAULT_FOLDER_FPS)
            return _FolderReader(str(self._target), self.name)
        import cv2

        if self.kind in ("index", "device"):
            cap = self._open_device()
        elif self.kind == "url":
            ms = int(self.stall_timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(ms, 5000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(str(self._target), cv2.CAP_FFMPEG, params)
            if not cap.isOpened():
                cap.release()
                raise _Failed(f"cannot open stream {self._label}")
            self._period_s = None
        else:
            if not Path(str(self._target)).is_file():
                raise _Failed(f"video file {self._target} is gone")
            cap = _open_file(str(self._target))
            if cap is None:
                raise _Failed(f"cannot decode video file {self._target}")
            file_fps = cap.get(cv2.CAP_PROP_FPS)
            self._period_s = 1.0 / (self.fps or (file_fps if 0 < file_fps < 1000 else DEFAULT_FILE_FPS))
        if not self._described:
            self._described = True
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            log.info(
                "camera %r: opened %s (%s, %dx%d, %.3g fps)",
                self.name,
                self._label,
                self.kind,
                w,
                h,
                1.0 / self._period_s if self._period_s else cap.get(cv2.CAP_PROP_FPS),
            )
        return _CvReader(cap)

    def _open_device(self) -> Any:
        """A V4L2 device (or any backend off Linux) with the requested format, size and rate."""
        import cv2

        if self.kind == "device" and not Path(str(self._target)).exists():
            raise _Failed(f"{self._target} does not exist (unplugged?)")
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(self._target, api)
        if not cap.isOpened():
            cap.release()
            raise _Failed(f"cannot open camera {self._label}")
        _configure(cap, self.name, self.width, self.height, self.fps, self.fourcc)
        self._period_s = None
        return cap

    def _disconnect(self, reader: _CvReader | _FolderReader) -> None:
        reader.release()

    def _deliver(self, reader: _CvReader | _FolderReader) -> tuple[bool, str | None]:
        """Grab until failure: (frames were published, None on stop or end | REOPEN to loop a file | a reason)."""
        got = False
        period = self._period_s
        due = time.monotonic()
        while not self._stop.is_set():
            if period is not None:  # files and folders play at their frame rate, like a camera
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return got, None
                due = max(due + period, time.monotonic() - period)
            ok = reader.grab()
            t = time.monotonic_ns()
            if self._stop.is_set():
                return got, None
            if not ok:
                return got, self._no_frame(got)
            keep = self._captured % self.stride == 0
            with self._cond:
                self._captured += 1
                self._last_grab_ns = t
            if not keep:
                continue
            img = reader.retrieve()
            if img is None:
                return got, f"frame from {self._label} could not be decoded"
            self._publish(img, t)
            got = True
        return got, None

    def _no_frame(self, got: bool) -> str | None:
        """What a failed grab means: the end of a file (looped or not), else why the camera is offline."""
        if self.kind == "file":
            if self.loop and got:
                return REOPEN  # loop a video file: reopen at once
            if got or (self._ever_online and not self.loop):
                self._set_ended()
                return None
            return "video file has no readable frames"
        if self.kind == "folder":
            return f"no readable images in folder {self._target}"
        return f"no frame from {self._label} (stream ended, disconnected or no data for {self.stall_timeout_s:g} s)"

    def _publish(self, img: np.ndarray, t: int) -> None:
        with self._cond:
            if self._slot is not None:
                self._dropped += 1
            self._slot = Frame(image=img, t_capture=t, seq=self._seq, source=self.name)
            self._seq += 1
            self._frames += 1
            self._rate.tick(t)
            self._mark_online()
            self._cond.notify_all()

    # -- watchdog thread --------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Marks a stalled camera offline even while the backend is blocked inside a read."""
        tick = min(0.25, self.stall_timeout_s / 4)
        while not self._stop.wait(tick):
            with self._cond:
                limit = self.stall_timeout_s
                if self._period_s:
                    limit = max(limit, 3 * self._period_s * self.stride)
                stalled = self._online and not self._ended and time.monotonic_ns() - self._last_grab_ns > limit * 1e9
            if stalled:
                self._set_offline(f"no frame from {self._label} for {limit:g} s (stalled)")


def _configure(
    cap: Any, name: str, width: int | None, height: int | None, fps: float | None, fourcc: str | None
) -> None:
    """Request format, size and rate from a V4L2 device (fourcc first: it decides the sizes on offer)."""
    import cv2

    if fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
    if fps:
        cap.set(cv2.CAP_PROP_FPS, float(fps))
    got_w, got_h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if (width and got_w != width) or (height and got_h != height):
        log.warning("camera %r: asked for %sx%s, the device gives %dx%d", name, width, height, got_w, got_h)


# last: it claims every uri, refusing (one line) what no camera mode can read
@register_kind("camera", "camera", claims=lambda c: classify_uri(c.uri), key="uri", order=100)
def _open(name: str, c: Any, _: Any) -> CameraSource:
    return CameraSource(name, c.uri, c.width, c.height, c.fps, c.fourcc, c.stride, c.stall_timeout_s, loop=c.loop)
