"""edge-deploy: offline bundles for Raspberry Pi / Jetson / Coral boards, installed over ssh.

  edge-deploy bundle --target rpi4 --models DIR... --config FILE --out FILE   build on the workstation
  edge-deploy verify BUNDLE                                                   check a bundle here
  edge-deploy push HOST [--user U] [--port P] BUNDLE                          install on one board
  edge-deploy targets                                                         boards and their wheel tags

Fleets: deploy/ansible/playbook.yml. Exit codes: 0 done; 2 bad input (one line, nothing written);
push returns install.sh's code (3 = the new release failed its health check and was rolled back,
4 = unhealthy and nothing to roll back to).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import DeployError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"edge-deploy: error: {message}; see edge-deploy --help\n")


def build_parser() -> argparse.ArgumentParser:
    from .targets import SUPPORTED_PYTHONS, TARGETS

    p = _Parser(prog="edge-deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("bundle", help="build an offline bundle for one kind of board")
    b.add_argument("--target", required=True, choices=list(TARGETS))
    b.add_argument(
        "--python",
        help=f"the board's CPython, one of {', '.join(SUPPORTED_PYTHONS)} (default: what the target's OS ships)",
    )
    b.add_argument(
        "--models",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR",
        help="artifact folders (manifest.json + files); each installs as models/<folder name>",
    )
    b.add_argument("--config", type=Path, required=True, metavar="FILE", help="the daemon's TOML config")
    b.add_argument("--out", type=Path, required=True, metavar="FILE", help="the bundle to write (.tar.gz)")
    b.add_argument("--with-onnx", action="store_true", help="add ONNX Runtime (the [onnx] extra)")
    b.add_argument(
        "--tflite-runtime",
        action="store_true",
        help="use tflite-runtime instead of ai-edge-litert (for boards LiteRT has no wheel for)",
    )
    b.add_argument("--glibc", metavar="X.Y", help="the board's glibc, if newer or older than the target's default")
    b.add_argument("--project", type=Path, metavar="DIR", help="the edge-runtime source tree (default: this one)")

    v = sub.add_parser(
        "verify",
        help="check a bundle: intact gzip, safe paths, every checksum, bundle.json's keys; print its bundle.json",
    )
    v.add_argument("bundle", type=Path, metavar="BUNDLE")

    s = sub.add_parser("push", help="copy a bundle to a board over ssh and run its install.sh there")
    s.add_argument("host", metavar="HOST")
    s.add_argument("bundle", type=Path, metavar="BUNDLE")
    s.add_argument("--user", help="ssh login (default: ssh's own choice); not root: install.sh runs under sudo -n")
    s.add_argument("--port", type=int, help="ssh port")
    s.add_argument("--identity", "-i", type=Path, metavar="KEY", help="ssh private key")
    s.add_argument(
        "--ssh-option",
        "-o",
        action="append",
        default=[],
        metavar="OPT",
        help="an ssh -o option, e.g. StrictHostKeyChecking=accept-new (repeatable)",
    )
    s.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="install this config instead of the bundle's (replaces the board's; a per-board config)",
    )
    s.add_argument(
        "--replace-config",
        action="store_true",
        help="replace the board's config with the bundle's (default: keep the board's)",
    )
    s.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an install.sh setting, e.g. KEEP_RELEASES=5 or HEALTH_TIMEOUT=300 (repeatable)",
    )
    s.add_argument("--sudo", choices=["auto", "always", "never"], default="auto")
    s.add_argument("--dry-run", action="store_true", help="print the ssh and scp commands, run nothing")

    sub.add_parser("targets", help="the boards, their CPU, glibc, Python and wheel platform tags")
    return p


def _bundle(args: argparse.Namespace) -> int:
    from . import bundle, targets

    target = targets.get(args.target)
    python = targets.check_python(args.python or target.python)
    glibc = targets.parse_glibc(args.glibc) if args.glibc else None
    if not args.models:
        print(
            "edge-deploy: note: no --models; the config can only use the models shipped in the wheel", file=sys.stderr
        )
    info = bundle.build(
        target,
        python,
        args.models,
        args.config,
        args.out,
        project=args.project,
        with_onnx=args.with_onnx,
        tflite_runtime=args.tflite_runtime,
        glibc=glibc,
    )
    from .archive import sha256_file

    size = args.out.stat().st_size
    print(
        f"{args.out}: {size / 1e6:.1f} MB, {info['target']} ({info['arch']}, CPython {info['python']}), "
        f"edge-runtime {info['edge_runtime']}, {len(info['wheels'])} wheels, "
        f"models: {', '.join(m['folder'] for m in info['models']) or 'none'}; sha256 {sha256_file(args.out)}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .archive import Bundle, check_info

    b = Bundle.open(args.bundle)
    check_info(b.info, str(args.bundle))
    print(json.dumps({"bundle": str(args.bundle), "files": len(b.files), **b.info}, indent=2))
    return 0


def _push(args: argparse.Namespace) -> int:
    from .push import Remote, parse_env, push

    if args.config and args.replace_config:
        raise DeployError("--config already replaces the board's config; drop --replace-config")
    remote = Remote(args.host, args.user, args.port, args.identity, list(args.ssh_option))
    return push(
        args.bundle,
        remote,
        env=parse_env(args.env),
        replace_config=args.replace_config,
        config=args.config,
        sudo=args.sudo,
        dry_run=args.dry_run,
    )


def _targets(args: argparse.Namespace) -> int:
    from .targets import TARGETS

    for t in TARGETS.values():
        print(f"{t.name:<15} {t.arch:<8} glibc<={t.glibc[0]}.{t.glibc[1]}  python {t.python}  {t.os}")
        print(f"{'':<15} --platform {' '.join(t.platform_tags())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"bundle": _bundle, "verify": _verify, "push": _push, "targets": _targets}
    try:
        return commands[args.command](args)
    except DeployError as e:
        print(f"edge-deploy: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        from edge_runtime.fileio import stdout_closed

        return stdout_closed()


if __name__ == "__main__":
    sys.exit(main())
