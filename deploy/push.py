"""edge-deploy push: one board over ssh, with the system's ssh and scp.

1. The bundle is verified here first (safe members, SHA256SUMS), so a damaged file never leaves.
2. ``ssh HOST mktemp -d`` makes a private folder on the board; ``scp`` copies the bundle and its
   install.sh (and a per-board config, if given) into it.
3. ``ssh HOST sh install.sh BUNDLE`` installs (through ``sudo -n`` unless the login is root),
   then the folder is removed. install.sh's own output streams through; its exit code is ours.

One ssh connection is shared by all steps (ControlMaster), so a password or a key passphrase is
asked at most once; for fleets use keys (and Ansible, deploy/ansible/).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import DeployError
from .archive import Bundle, check_info

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass
class Remote:
    host: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    options: list[str] = field(default_factory=list)  # ssh -o values, e.g. "StrictHostKeyChecking=accept-new"
    control_dir: Path | None = None

    def _common(self) -> list[str]:
        args: list[str] = []
        if self.identity:
            args += ["-i", str(self.identity)]
        for opt in self.options:
            args += ["-o", opt]
        if self.control_dir:
            args += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={self.control_dir}/cm-%C",
                "-o",
                "ControlPersist=60",
            ]
        return args

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh(self, command: str) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *port, *self._common(), self.login, command]

    def scp(self, files: Sequence[Path], remote_dir: str) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literals
        login = f"{self.user}@{host}" if self.user else host
        return ["scp", "-q", *port, *self._common(), *map(str, files), f"{login}:{remote_dir}/"]

    def close_master(self) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *port, *self._common(), "-O", "exit", self.login]


def install_command(
    remote_dir: str, bundle_name: str, env: dict[str, str], replace_config: bool, config_name: str | None, sudo: str
) -> str:
    """The shell command run on the board: install.sh with its options and overrides, then cleanup."""
    d = shlex.quote(remote_dir)
    env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
    opts = []
    if config_name:
        opts += ["--config", f"{remote_dir}/{config_name}"]
    elif replace_config:
        opts.append("--replace-config")
    run = " ".join(
        [
            "sh",
            shlex.quote(f"{remote_dir}/install.sh"),
            *map(shlex.quote, opts),
            shlex.quote(f"{remote_dir}/{bundle_name}"),
        ]
    )
    if sudo == "never":
        prefix = ""
    elif sudo == "always":
        prefix = "sudo -n "
    else:  # auto: sudo only when the login is not root
        prefix = 'SUDO=; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"; $SUDO '
    envs = f"env {env_args} " if env_args else ""
    return f"{prefix}{envs}{run}; rc=$?; rm -rf {d}; exit $rc"


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise DeployError(f"--env {pair}: give NAME=VALUE with an upper-case NAME (e.g. KEEP_RELEASES=5)")
        env[name] = value
    return env


def push(
    bundle: Path,
    remote: Remote,
    *,
    env: dict[str, str] | None = None,
    replace_config: bool = False,
    config: Path | None = None,
    sudo: str = "auto",
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
) -> int:
    """Copy and install; returns install.sh's exit code (0 installed, 2 refused, 3 rolled back, 4 unhealthy)."""
    log = log or (lambda m: print(f"edge-deploy: {m}", file=sys.stderr, flush=True))
    b = Bundle.open(bundle)  # verify before anything leaves this machine
    check_info(b.info, str(bundle))
    if config is not None and not Path(config).is_file():
        raise DeployError(f"--config {config}: no such file")
    if config is not None:
        from edge_runtime.config import ConfigError, load

        try:
            load(config)
        except ConfigError as e:
            raise DeployError(f"--config: {e}") from None
    env = dict(env or {})
    with tempfile.TemporaryDirectory(prefix="edge-push-") as tmp:
        tmpd = Path(tmp)
        remote.control_dir = tmpd
        installer = tmpd / "install.sh"
        installer.write_bytes(b.read("install.sh"))
        files = [Path(bundle), installer] + ([Path(config)] if config else [])
        bundle_name = "bundle.tar.gz"
        link = tmpd / bundle_name  # a fixed remote name, whatever the local one
        os.symlink(Path(bundle).resolve(), link)
        files[0] = link
        config_name = "edge-runtime.toml" if config else None
        if config:
            cfg_copy = tmpd / config_name  # a fixed remote name too
            cfg_copy.write_bytes(Path(config).read_bytes())
            files[2] = cfg_copy
        if dry_run:
            rdir = "/tmp/edge-deploy.XXXXXX"
            for cmd in (
                remote.ssh("mktemp -d /tmp/edge-deploy.XXXXXX"),
                remote.scp(files, rdir),
                remote.ssh(install_command(rdir, bundle_name, env, replace_config, config_name, sudo)),
            ):
                print(shlex.join(cmd))
            return 0
        try:
            log(f"{remote.login}: copying {Path(bundle).name} ({Path(bundle).stat().st_size / 1e6:.1f} MB)")
            r = subprocess.run(
                remote.ssh("mktemp -d /tmp/edge-deploy.XXXXXX"),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            if r.returncode != 0 or not r.stdout.strip().startswith("/tmp/edge-deploy."):
                why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                raise DeployError(f"ssh {remote.login}: {why}")
            rdir = r.stdout.strip()
            r = subprocess.run(remote.scp(files, rdir), capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                subprocess.run(remote.ssh(f"rm -rf {shlex.quote(rdir)}"), capture_output=True, stdin=subprocess.DEVNULL)
                raise DeployError(f"scp to {remote.login}: {why}")
            log(f"{remote.login}: running install.sh")
            r = subprocess.run(
                remote.ssh(install_command(rdir, bundle_name, env, replace_config, config_name, sudo)),
                stdin=subprocess.DEVNULL,
            )
            if r.returncode == 255:
                raise DeployError(f"ssh {remote.login}: the connection failed while installing")
            return r.returncode
        finally:
            subprocess.run(remote.close_master(), capture_output=True, stdin=subprocess.DEVNULL)
