#!/usr/bin/env bash
# Command 3 of the README: the reader's two other environments, each built from scratch in .envs/ and running
# every notebook at QUICK size with the stock papermill command (python -m tools.envs; results and resolved
# versions in test-artifacts/envs/):
#   colab   Colab's preinstalled versions, then each part installed exactly as its notebooks' Colab cell does;
#   latest  the "Run it yourself" page's commands (newest releases above the package's lower bounds).
# Arguments choose the environments (default: both, built and run at the same time to keep CI within its
# budget: installs wait on the network while the other environment's notebooks use the cores). The workshop
# plan's times come from a run of the colab environment alone: bash tools/test-envs.sh colab.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup-env.sh test
if [ $# -eq 0 ]; then set -- colab latest --jobs 2; fi
python -m tools.envs "$@"
