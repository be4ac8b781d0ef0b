#!/usr/bin/env bash
# Runs every test of the project. Installs what it needs; safe to run on a fresh machine.
# Build outputs are cached outside the checkout ($PAIIO_CACHE, default ~/.cache/paiio-rs).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_rust

step() { echo; echo "== $* =="; }

step "cargo fmt --check"
cargo fmt --all --check

# First, because cargo test checks the Tunnel codecs' bytes against PyODPS too.
step "Python environment (PyODPS 0.13.2, pyarrow, numpy, TensorFlow, torch 2.13.0, maturin)"
ensure_venv scripts/requirements-test.txt
export VIRTUAL_ENV="$PAIIO_VENV"
export PATH="$PAIIO_VENV/bin:$PATH"

step "cargo test (workspace default members)"
cargo test --all-features --no-fail-fast

step "cargo clippy (workspace default members, warnings are errors)"
cargo clippy --all-targets --all-features -- -D warnings


step "building the paiio CLI"
cargo build -q -p paiio-cli
export PAIIO_BIN="$CARGO_TARGET_DIR/debug/paiio"

step "PyODPS 0.13.2 conformance against paiio serve"
(cd tests/pyodps && python -m pytest -q)

step "paiio-tch and examples/train_tch (libtorch from the torch wheel)"
LIBTORCH_USE_PYTORCH=1 cargo test -p paiio-tch -p train_tch

step "Python package paiio (maturin develop) and its tests"
(cd python && maturin develop --profile dev -q)
(cd python && python -m pytest -q)

echo
echo "all tests passed"
