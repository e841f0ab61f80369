# Sourced by the two README commands: create .venv (if needed) and install trustml with one extra
# ("book" or "test") under the exact pins of ci/constraints.txt. torch==2.13.0 is the CPU wheel.
extra="${1:?usage: source tools/setup-env.sh book|test}"
python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -c ci/constraints.txt "torch==2.13.0" -e ".[$extra]"
python -m ipykernel install --sys-prefix --name python3 >/dev/null
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
