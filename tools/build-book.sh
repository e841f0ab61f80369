#!/usr/bin/env bash
# Command 1 of the README: install the package and the book's dependencies into .venv, execute every
# notebook at full size (two at a time, into jupyter-cache) and write the site to _build/html (warnings are
# errors).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup-env.sh book
rm -rf _build/html _build/.doctrees _build/jupyter_execute _build/.jupyter_cache
python -m tools.execute_book --jobs 2  # every notebook, two at a time, into the build's execution cache
jupyter-book build --all -W -n --keep-going .
echo "site written to $(pwd)/_build/html"
