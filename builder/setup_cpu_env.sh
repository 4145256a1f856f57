#!/usr/bin/env bash
# Creates the CPU virtual environment from the pinned lock; run by `make` on first use.
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
torch_pin=$(grep -E '^torch==' "$here/requirements-cpu.lock")

step() { printf '\n==> %s\n' "$*"; }

step "creating $venv"
"$python" -m venv "$venv"
pip=("$venv/bin/pip" install --no-deps --progress-bar on)

# The CPU build of torch is not on PyPI. Take it from a local wheel folder when pip is set up
# with one; else from PyTorch's CPU index. Trying local first avoids pip's long retries of an
# index that a machine may not reach.
step "installing $torch_pin"
if ! "${pip[@]}" --no-index "$torch_pin" 2>/dev/null; then
  "${pip[@]}" --index-url https://download.pytorch.org/whl/cpu "$torch_pin"
fi

step "installing the pinned environment (vLLM CPU build, runpod SDK, test tools)"
"${pip[@]}" -r "$here/requirements-cpu.lock"

step "installing the worker"
"${pip[@]}" --no-build-isolation --editable "$here/.."
