#!/usr/bin/env bash
# Builds and tests paiio-tch and examples/train_tch against libtorch from the PyPI torch
# wheel that matches the tch crate (tch 0.26 <-> torch 2.13.0).
#
#   [TORCH_VENV=DIR] crates/paiio-tch/scripts/test-with-libtorch.sh [CARGO TEST ARGS...]
#
# TORCH_VENV (default: ~/.cache/paiio-rs/venv-torch) is created if missing and gets
# torch==2.13.0 from PyPI (on Linux x86_64 the CUDA build: ~3 GB with its nvidia-* wheels;
# it links and runs on a machine without a GPU). Set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the ~200 MB CPU-only wheel where
# that index is reachable.
# The tests and binaries get libtorch's directory as an rpath (build.rs), so they run without
# LD_LIBRARY_PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
venv="${TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/paiio-rs/venv-torch}"
torch_version=2.13.0
index_url="${TORCH_INDEX_URL:-}"

if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
    python3 -m venv "$venv"
    if [ -n "$index_url" ]; then
        "$venv/bin/pip" install --quiet "torch==$torch_version" --index-url "$index_url"
    else
        "$venv/bin/pip" install --quiet "torch==$torch_version"
    fi
fi

# torch-sys runs `python` when VIRTUAL_ENV is set (else `python3`) from PATH to find
# libtorch inside the installed torch package.
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
cd "$root"
cargo test -p paiio-tch -p train_tch "$@"
