#!/usr/bin/env bash
# Headless Chromium for tests/api/test_transparency_page.py (Debian's package; no CDN needed by the page).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  echo "[sonopolis] installing chromium (Debian package) for the built-in page test"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
