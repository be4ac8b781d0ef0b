#!/usr/bin/env bash
# The Tunnel benchmark (crates/paiio-bench, tunnel_bench): paiio's Tunnel client (TunnelClient,
# fully decoded Arrow batches, parallel row ranges of one download session) and the released
# PyODPS 0.13.2 `open_reader(arrow=True)` reading the cached table bench.wide from
# `paiio serve --tunnel-only`: uncapped (GB/s and client CPU-s per GB), and with
# --stream-rate 10MB per request (the same rows by PyODPS and by 4 ranges; then 1 to 64 ranges
# against N x 10 MB/s). Builds in release mode and makes the Python venv first; safe to run on
# a fresh machine (Linux). Arguments go to the bench: e.g. `--quick`, `--no-pyodps`,
# `--rate-ranges 1,4,16`, `--stream-rate 0` to skip the capped runs.
# The table is cached under $PAIIO_CACHE/bench/warehouse (shared with the other benches), the
# figures written to $PAIIO_CACHE/bench/tunnel.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ensure_rust
echo "== python venv (pyodps 0.13.2, pyarrow) ==" >&2
ensure_venv tests/pyodps/requirements.txt

echo "== cargo build --release (paiio, tunnel_bench) ==" >&2
cargo build --release -q -p paiio-cli -p paiio-bench
exec "$CARGO_TARGET_DIR/release/tunnel_bench" --paiio "$CARGO_TARGET_DIR/release/paiio" \
  --python "$PAIIO_VENV/bin/python" "$@"
