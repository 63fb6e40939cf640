#!/usr/bin/env bash
# The test command: installs what is needed, starts missing services, checks the
# smart/safe separation statically, then runs the whole test suite.
source "$(dirname "$0")/_env.sh"
bash scripts/ensure_services.sh
bash scripts/ensure_test_packages.sh
echo "[sonopolis] import contracts (import-linter)"
lint-imports --no-cache
if [ -f ../shared/tools/check_separation.py ]; then
  python ../shared/tools/check_separation.py
fi
exec python -m pytest "$@"
