#!/usr/bin/env bash
# The serving benchmark of `paiio serve` (crates/paiio-bench, serve_bench): CPU-seconds per GB
# served uncompressed, lz4 and zstd; GB/s with 1, 4 and 16 concurrent readers on a table of
# at least 1 GB; 1,000 concurrent streaming reads with the server's peak RSS.
# Builds in release mode first; safe to run on a fresh machine (Linux). Arguments go to the
# bench: e.g. `scripts/bench-serve.sh --quick` for a ~100 MB smoke run, `--gb 2`, `--repeat 3`.
# The table is cached under $PAIIO_CACHE/bench/warehouse, the figures written to
# $PAIIO_CACHE/bench/serve.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ensure_rust

echo "== cargo build --release (paiio, serve_bench) ==" >&2
cargo build --release -q -p paiio-cli -p paiio-bench
exec "$CARGO_TARGET_DIR/release/serve_bench" --paiio "$CARGO_TARGET_DIR/release/paiio" "$@"
