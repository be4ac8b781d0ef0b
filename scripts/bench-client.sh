#!/usr/bin/env bash
# The client benchmark (crates/paiio-bench, client_bench): paiio's Storage API client
# (RestClient, fully decoded Arrow batches) reading the cached table bench.wide (at least 1 GB,
# 8 numeric columns and 1 string column) from `paiio serve` with 1, 4 and 16 concurrent streams;
# the released PyODPS 0.13.2 odps.maxstorage reader on the same range; the same data read from
# the local files in-process (the limit); a second server with --stream-rate 10MB read by 1 to
# 64 concurrent streams (aggregate vs N x 10 MB/s); and, on both servers, the body codecs
# (none, lz4, zstd) against the automatic choice (read_compression=auto).
# Builds in release mode and makes the Python venv (pyodps, pyarrow) first; safe to run on a
# fresh machine (Linux). Arguments go to the bench: e.g. `--quick` for a ~100 MB smoke run,
# `--no-pyodps`, `--streams 1,2,4`, `--stream-rate 0` to skip the rate runs.
# The table is cached under $PAIIO_CACHE/bench/warehouse (shared with bench-serve.sh), the
# figures written to $PAIIO_CACHE/bench/client.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ensure_rust
echo "== python venv (pyodps 0.13.2, pyarrow) ==" >&2
ensure_venv tests/pyodps/requirements.txt

echo "== cargo build --release (paiio, client_bench) ==" >&2
cargo build --release -q -p paiio-cli -p paiio-bench
exec "$CARGO_TARGET_DIR/release/client_bench" --paiio "$CARGO_TARGET_DIR/release/paiio" \
  --python "$PAIIO_VENV/bin/python" \
  --pyodps-script "$PWD/crates/paiio-bench/python/pyodps_read.py" "$@"
