#!/usr/bin/env bash
# Set up, then run the whole test suite (real TensorFlow conversions; about 5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
