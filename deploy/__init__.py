"""edge-deploy: offline bundles for the boards, pushed over ssh or rolled out with Ansible.

Workstation side. Imports only the standard library, ``packaging`` (from pip when not installed)
and edge_runtime (to verify the models and the config it bundles); never TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLE_TOP = "edge-runtime-bundle"  # the one top-level folder of every bundle archive
BUNDLE_SCHEMA = "edge-runtime/bundle"
BUNDLE_SCHEMA_VERSION = 1


class DeployError(Exception):
    """A mistake the user can fix (bad input, missing wheel, unreachable board); one line, exit 2."""
