#!/usr/bin/env bash
# Idempotent: a project-local Python venv, .venv-rl, with h5py and numpy, in which the RL tests
# read the buffer's d3rlpy HDF5 export back (tests/it/rl.rs). Prints nothing on success when the
# venv is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-rl
if ! "$venv/bin/python" -c "import h5py, numpy" > /dev/null 2>&1; then
    echo "== making $venv (h5py, numpy from PyPI)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip > /dev/null
    "$venv/bin/pip" install -q "h5py>=3" numpy
fi
