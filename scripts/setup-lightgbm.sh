#!/usr/bin/env bash
# Installs what the `lightgbm` cargo feature needs, and does nothing when it is there already:
# - libclang (bindgen reads LightGBM's C header) from Debian's `libclang-dev`;
# - a project-local Python venv, .venv-lightgbm, with cmake >= 3.28 (the lightgbm3 crate builds
#   LightGBM 4 with it; Debian 12's cmake is 3.25) and Python LightGBM 4 + numpy (the test loads
#   the exported models with `lightgbm.Booster(model_file=...)`; the benchmark trains beside us).
# Then prints how to build. docs/models.md.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-lightgbm

if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* > /dev/null 2>&1; then
    echo "== installing libclang-dev (Debian)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev > /dev/null
fi
if ! "$venv/bin/python" -c "import lightgbm, numpy" > /dev/null 2>&1 || [ ! -x "$venv/bin/cmake" ]; then
    echo "== making $venv (cmake, lightgbm, numpy from PyPI)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip > /dev/null
    "$venv/bin/pip" install -q "cmake>=3.28" "lightgbm>=4,<5" numpy
fi
echo "# the lightgbm feature builds with this cmake on PATH:" >&2
echo "export PATH=\"$PWD/$venv/bin:\$PATH\""
echo "# then: cargo build --release --features lightgbm   (cargo test --release --features lightgbm)" >&2
