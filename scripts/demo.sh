#!/usr/bin/env bash
# Set up, then run the whole daemon on the sample media that ships with the package:
# both default models, fusion, JSON-lines events, the HTTP status endpoint. Ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/edge-runtime demo "$@"
