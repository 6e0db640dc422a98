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
# Two workers (TEST_WORKERS), each taking whole test files: most tests use one core, and a file's
# fixtures (trained models, brokers, audio servers) stay in one process.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
