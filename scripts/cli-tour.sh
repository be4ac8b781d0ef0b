#!/usr/bin/env bash
# A walk through the paiio CLI on the embedded warehouse: create a partitioned table, import a
# generated CSV into two partitions, inspect it, checksum it, export it and re-import the export.
# (The main job is scripts/main-job.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_rust

ROWS="${ROWS:-1000000}"
WORK="${PAIIO_DEMO_DIR:-$PAIIO_CACHE/cli-tour}"
rm -rf "$WORK" && mkdir -p "$WORK"
export PAIIO_WAREHOUSE="$WORK/warehouse"
unset ODPS_CONFIG_FILE_PATH

echo "== building paiio =="
cargo build -q -p paiio-cli
paiio() { echo "\$ paiio $*" >&2; "$CARGO_TARGET_DIR/debug/paiio" "$@"; }

echo "== generating $ROWS rows of CSV =="
python3 - "$WORK/orders.csv" "$ROWS" <<'PY'
import random, sys
path, rows = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
with open(path, "w") as f:
    f.write("id,name,price,flag,ts\n")
    for i in range(rows):
        f.write(f"{i},item-{rng.randrange(10**6)},{rng.random()*100:.4f},{'true' if i % 3 else 'false'},"
                f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00\n")
PY
half=$(( ROWS / 2 + 1 ))
head -n "$half" "$WORK/orders.csv" > "$WORK/part-a.csv"
{ head -n 1 "$WORK/orders.csv"; tail -n +"$(( half + 1 ))" "$WORK/orders.csv"; } > "$WORK/part-b.csv"

paiio table create odps://demo/tables/orders \
  --schema "id bigint, name string, price double, flag boolean, ts datetime" \
  --partitioned-by "pt string"
paiio table import odps://demo/tables/orders/pt=a "$WORK/part-a.csv"
paiio table import odps://demo/tables/orders/pt=b "$WORK/part-b.csv"
paiio table ls odps://demo
paiio table schema odps://demo/tables/orders
paiio table partitions odps://demo/tables/orders
paiio table count odps://demo/tables/orders
paiio table count odps://demo/tables/orders/pt=b
paiio table head odps://demo/tables/orders -n 5
paiio table export odps://demo/tables/orders "$WORK/export.csv"
paiio table create odps://demo/tables/orders_copy \
  --schema "id bigint, name string, price double, flag boolean, ts datetime" \
  --partitioned-by "pt string"
paiio table import odps://demo/tables/orders_copy "$WORK/export.csv"
a=$("$CARGO_TARGET_DIR/debug/paiio" table checksum odps://demo/tables/orders)
b=$("$CARGO_TARGET_DIR/debug/paiio" table checksum odps://demo/tables/orders_copy)
echo "checksum orders:      $a"
echo "checksum orders_copy: $b"
if [ "$a" != "$b" ]; then echo "checksums differ" >&2; exit 1; fi
echo "CLI tour done: the export re-imported has the same checksum"
