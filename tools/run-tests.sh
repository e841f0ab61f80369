#!/usr/bin/env bash
# Command 2 of the README: install the test dependencies into .venv and run pytest — unit tests and a
# papermill run of every notebook under book/ with QUICK=True. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup-env.sh test
# The browser test needs Chromium (Debian's package); without it that one test skips, saying why.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "note: could not install chromium"
fi
rm -rf test-artifacts && mkdir -p test-artifacts
python -m pytest "$@"
