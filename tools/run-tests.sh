#!/usr/bin/env bash
# Command 2 of the README: install the test dependencies into .venv and run pytest — unit tests and a
# papermill run of every notebook under book/ with QUICK=True. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup-env.sh test
rm -rf test-artifacts && mkdir -p test-artifacts
python -m pytest "$@"
