#!/usr/bin/env bash
# The main job on the embedded warehouse (examples/demo_job): create a table of ROWS rows
# (default 4,000,000: id, f1..f8 double, a linearly separable label), start two worker processes
# that each read their slice with prefetch into a logistic regression trained by SGD and write
# their predictions back, show progress and throughput, then check that every row was read
# once and written once and that the predictions are accurate.
# The CLI walk-through that used to be here is scripts/cli-tour.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_rust

ROWS="${ROWS:-4000000}"
WORK="${PAIIO_DEMO_DIR:-$PAIIO_CACHE/demo}"
rm -rf "$WORK" && mkdir -p "$WORK"
export PAIIO_WAREHOUSE="$WORK/warehouse"
unset ODPS_CONFIG_FILE_PATH

echo "== building demo-job =="
cargo build -q -p demo-job
echo "== running the main job =="
"$CARGO_TARGET_DIR/debug/demo-job" --rows "$ROWS" "$@"
