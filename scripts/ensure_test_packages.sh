#!/usr/bin/env bash
# Debian packages some tests drive for real, installed once when missing:
#   chromium       tests/api/test_transparency_page.py (headless; the page needs no CDN)
#   libportaudio2  tests/detectors/test_soundcard.py (PortAudio over ALSA for the live source)
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2' || missing+=(libportaudio2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[sonopolis] installing Debian packages for the tests: ${missing[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
