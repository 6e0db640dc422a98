"""What can be captured on this machine: cameras (V4L2) and microphones (PortAudio), as plain dicts."""

from __future__ import annotations

import fcntl
import os
import re
import struct
from pathlib import Path
from typing import Any

from . import SourceError

VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_DEVICE_CAPS = 0x80000000


def _querycap(path: str) -> dict[str, Any] | None:
    """driver, card, bus and whether the node captures video (VIDIOC_QUERYCAP); None if it cannot be asked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = bytearray(104)
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    driver, card, bus, _version, caps, device_caps = struct.unpack_from("16s32s32sIII", buf)
    effective = device_caps if caps & V4L2_CAP_DEVICE_CAPS else caps

    def text(b: bytes) -> str:
        return b.split(b"\0", 1)[0].decode("utf-8", "replace")

    return {
        "driver": text(driver),
        "card": text(card),
        "bus": text(bus),
        "capture": bool(effective & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE)),
    }


def cameras(dev: str | Path = "/dev", sysfs: str | Path = "/sys/class/video4linux") -> list[dict[str, Any]]:
    """``/dev/video*`` nodes with their names; ``capture`` is None when the node could not be queried."""
    out = []
    nodes = [p for p in Path(dev).glob("video*") if re.fullmatch(r"video\d+", p.name)]
    for node in sorted(nodes, key=lambda p: int(p.name[5:])):
        sys_dir = Path(sysfs) / node.name
        try:
            name = (sys_dir / "name").read_text().strip()
        except OSError:
            name = None
        cap = _querycap(str(node))
        out.append(
            {
                "path": str(node),
                "index": int(node.name[5:]),
                "name": name or (cap or {}).get("card"),
                "driver": (cap or {}).get("driver"),
                "bus": (cap or {}).get("bus"),
                "capture": None if cap is None else cap["capture"],
            }
        )
    return out


def microphones() -> list[dict[str, Any]]:
    """PortAudio input devices (SourceError if sounddevice / PortAudio is missing)."""
    from .microphone import default_input, import_sounddevice, input_devices

    sd = import_sounddevice()
    default = default_input(sd)
    apis = [a["name"] for a in sd.query_hostapis()]
    return [
        {
            "index": i,
            "name": d["name"],
            "channels": int(d["max_input_channels"]),
            "default_samplerate": float(d["default_samplerate"]),
            "hostapi": apis[d["hostapi"]] if 0 <= d["hostapi"] < len(apis) else None,
            "default": i == default,
        }
        for i, d in input_devices(sd)
    ]


def devices() -> dict[str, Any]:
    """``{"cameras": [...], "microphones": [...], "errors": [...]}``: JSON-ready, never raises."""
    result: dict[str, Any] = {"cameras": [], "microphones": [], "errors": []}
    try:
        result["cameras"] = cameras()
    except OSError as e:
        result["errors"].append(f"cameras: {e}")
    try:
        result["microphones"] = microphones()
    except SourceError as e:
        result["errors"].append(str(e))
    except Exception as e:  # PortAudio can fail to initialise without a sound system
        result["errors"].append(f"microphones: {type(e).__name__}: {e}")
    return result
