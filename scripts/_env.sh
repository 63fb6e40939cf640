# Shared by scripts/demo.sh and scripts/test.sh: a project venv with everything installed.
# Idempotent and quick when nothing changed (re-installs only when pyproject.toml changes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[sonopolis] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# soundcard: sounddevice for the live source (its test drives PortAudio over ALSA)
EXTRAS="dev,train,soundcard"
stamp=".venv/.installed-$( (cat pyproject.toml; echo "$EXTRAS") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[sonopolis] installing Sonopolis and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
