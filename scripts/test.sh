#!/usr/bin/env bash
# Runs every test of the workspace. Installs what it needs; safe to run on a fresh machine.
# Build outputs are cached outside the checkout ($PAIIO_CACHE, default ~/.cache/paiio-rs).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ensure_rust

echo "== cargo test (workspace default members; paiio-tch and the Python crate are built below) =="
cargo test --all-features --no-fail-fast 2>&1 | tee "$PAIIO_CACHE/last-cargo-test.log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "cargo test failed (exit $status)" >&2
  exit "$status"
fi
echo "== PyODPS 0.13.2 conformance against paiio serve =="
ensure_venv tests/pyodps/requirements.txt
cargo build -q -p paiio-cli
export PAIIO_BIN="$CARGO_TARGET_DIR/debug/paiio"
(cd tests/pyodps && "$PAIIO_VENV/bin/python" -m pytest -q)

echo "all tests passed"
