#!/usr/bin/env bash
# Set up, lint, then run the whole test suite (real TensorFlow conversions, broker, audio server, camera
# stream; under 20 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Lint, format and types first: quick, and a style slip fails here, not after 20 minutes of tests.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy edge_runtime
exec .venv/bin/python -m pytest "$@"
