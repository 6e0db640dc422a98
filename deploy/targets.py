"""Boards we build for: CPU architecture, the newest glibc their OS ships, the Python they run.

A wheel is installable on a board when its platform tag is ``any`` or a manylinux tag for the
board's architecture whose glibc is not newer than the board's. pip does not expand
``manylinux_2_X`` to older glibc versions for ``--platform``, so every tag is listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import DeployError

SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")


@dataclass(frozen=True)
class Target:
    name: str
    arch: str  # uname -m on the board
    glibc: tuple[int, int]  # newest glibc of the board's OS
    python: str  # the Python the board's OS ships (default --python)
    os: str  # what the numbers above were taken from
    notes: str = ""

    def platform_tags(self, glibc: tuple[int, int] | None = None) -> list[str]:
        """pip --platform values, newest first: manylinux_2_N_<arch> down to the oldest plus the legacy aliases."""
        major, minor = glibc or self.glibc
        if major != 2:
            raise DeployError(f"--glibc {major}.{minor}: only glibc 2.x is known")
        oldest = 5 if self.arch == "x86_64" else 17  # manylinux1 (2.5) for x86_64; aarch64 starts at 2.17
        tags = [f"manylinux_2_{m}_{self.arch}" for m in range(minor, oldest - 1, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.arch}" for m, name in legacy.items() if oldest <= m <= minor]
        return tags


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "rpi4",
            "aarch64",
            (2, 36),
            "3.11",
            "Raspberry Pi OS 12 (bookworm) 64-bit",
            "Raspberry Pi OS 13 (trixie) ships Python 3.13 and glibc 2.41: pass --python 3.13",
        ),
        Target(
            "rpi5",
            "aarch64",
            (2, 36),
            "3.11",
            "Raspberry Pi OS 12 (bookworm) 64-bit",
            "Raspberry Pi OS 13 (trixie) ships Python 3.13 and glibc 2.41: pass --python 3.13",
        ),
        Target(
            "jetson-orin",
            "aarch64",
            (2, 35),
            "3.10",
            "JetPack 6 (L4T r36, Ubuntu 22.04)",
            "JetPack 5 (Ubuntu 20.04) has glibc 2.31 and Python 3.8: too old for edge-runtime",
        ),
        Target(
            "coral-devboard",
            "aarch64",
            (2, 28),
            "3.11",
            "Mendel Linux 5 (Debian 10)",
            "Mendel ships Python 3.7; install a Python >= 3.10 on the board and pass its version",
        ),
        Target("x86_64", "x86_64", (2, 31), "3.11", "any x86_64 Linux with glibc >= 2.31 (Debian 11+, Ubuntu 20.04+)"),
    )
}


def get(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise DeployError(f"--target {name}: unknown; use one of {', '.join(TARGETS)}") from None


def parse_glibc(text: str) -> tuple[int, int]:
    try:
        major, minor = (int(x) for x in text.split("."))
    except ValueError:
        raise DeployError(f"--glibc {text}: give MAJOR.MINOR, e.g. 2.36") from None
    return major, minor


def check_python(version: str) -> str:
    if version not in SUPPORTED_PYTHONS:
        raise DeployError(f"--python {version}: edge-runtime runs on CPython {', '.join(SUPPORTED_PYTHONS)}")
    return version


def marker_environment(target: Target, python: str) -> dict[str, str]:
    """The PEP 508 environment of the board, to evaluate dependency markers for it (not for this host)."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": target.arch,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": "linux",
    }
