"""Reads a table through the MaxCompute Tunnel with the released PyODPS and prints what it read.

Run by `tunnel_bench` (crates/paiio-bench) as a child with the project's venv python
(pyodps 0.13.2, pyarrow): one download session (`TableTunnel.create_download_session`), then
`open_arrow_reader(offset, count)` over the rows [offset, offset + count) (the whole table by
default), iterated batch by batch, as `t.open_reader(arrow=True)` reads. PyODPS reads one
range with one request at a time. Prints one JSON line: rows, bytes (pyarrow `nbytes` of the
batches), batches, seconds (session creation and reads), read_seconds, cpu_seconds, versions.
"""
import argparse
import json
import sys
import time

import pyarrow as pa

import odps
from odps import ODPS
from odps.tunnel import CompressOption, TableTunnel


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", required=True, help="the ODPS endpoint, http://HOST:PORT/api")
    p.add_argument("--project", default="bench")
    p.add_argument("--table", default="wide")
    p.add_argument("--access-id", default="bench-id")
    p.add_argument("--access-key", default="bench-key")
    p.add_argument("--offset", type=int, default=0, help="the first row to read")
    p.add_argument("--count", type=int, default=0, help="rows to read (0: to the end)")
    p.add_argument("--compress", choices=["zstd", "lz4", "zlib"], default=None)
    # Arguments of the common runner (crates/paiio-bench/src/reads.rs) that this reader has
    # no use for: PyODPS reads a range with one request, in batches of its own size.
    p.add_argument("--split-rows", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--max-batch-rows", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()

    o = ODPS(args.access_id, args.access_key, project=args.project, endpoint=args.endpoint)
    option = CompressOption(compress_algo=args.compress.upper()) if args.compress else None
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    session = TableTunnel(o).create_download_session(args.table, compress_option=option)
    t_read = time.perf_counter()
    count = args.count or max(session.count - args.offset, 0)
    rows = nbytes = batches = 0
    with session.open_arrow_reader(args.offset, count, compress=bool(option)) as reader:
        for batch in reader:
            rows += batch.num_rows
            nbytes += batch.nbytes
            batches += 1
    t1 = time.perf_counter()
    if rows != count:
        print(f"pyodps_tunnel_read: {rows} rows read, {count} expected", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({
        "rows": rows,
        "bytes": nbytes,
        "batches": batches,
        "splits": 1,
        "offset": args.offset,
        "count": count,
        "seconds": t1 - t0,
        "read_seconds": t1 - t_read,
        "cpu_seconds": time.process_time() - cpu0,
        "compress": args.compress,
        "pyodps": getattr(odps, "__version__", "?"),
        "pyarrow": pa.__version__,
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
