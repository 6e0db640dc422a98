#!/usr/bin/env bash
# Set up, then convert the MobileNetV2 that ships with the repo to int8 TFLite and
# int8 ONNX and print its float-vs-int8 report (out/digits-mobilenetv2/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/edge-convert models/digits/digits_mobilenetv2.keras \
  --out out/digits-mobilenetv2 \
  --calibration models/digits/data/calib \
  --eval models/digits/data/eval \
  --labels models/digits/labels.txt \
  --name digits-mobilenetv2 "$@"
