"""Reads a table with the released PyODPS `odps.maxstorage` reader and prints what it read.

Run by `client_bench` (crates/paiio-bench) as a child with the project's venv python
(pyodps 0.13.2, pyarrow): one RowOffset read session whose splits are ranges of
`--split-rows` rows (one split for the whole table by default: the same range as the
client's 1-stream run), each read with `open_arrow_reader` and iterated batch by batch, one
after the other. With `--offset O --count C` only the rows [O, O+C) are read: the session's
splits are `--split-rows` rows each (C by default), and the splits over that range are read
the same way (with O a multiple of the split size, exactly the session's own splits).
Prints one JSON line: rows, bytes (pyarrow `nbytes` of the batches), batches, splits,
seconds (session creation and reads), read_seconds, cpu_seconds, versions.
"""
import argparse
import json
import sys
import time

import pyarrow as pa

import odps
from odps import ODPS
from odps.maxstorage import MaxStorageClient, RowRangeInputSplit, SplitMode, SplitOptions


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", required=True, help="the ODPS endpoint, http://HOST:PORT/api")
    p.add_argument("--project", default="bench")
    p.add_argument("--table", default="wide")
    p.add_argument("--access-id", default="bench-id")
    p.add_argument("--access-key", default="bench-key")
    p.add_argument("--split-rows", type=int, default=0,
                   help="rows per RowOffset split (0: the whole table in one split)")
    p.add_argument("--offset", type=int, default=0,
                   help="the first row to read (with --count)")
    p.add_argument("--count", type=int, default=0,
                   help="rows to read from --offset (0: the whole table)")
    p.add_argument("--max-batch-rows", type=int, default=4096)
    p.add_argument("--compress", choices=["zstd", "lz4"], default=None)
    args = p.parse_args()

    o = ODPS(args.access_id, args.access_key, project=args.project, endpoint=args.endpoint)
    client = MaxStorageClient(odps=o)

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    split_rows = args.split_rows
    if split_rows <= 0 and args.count > 0:
        split_rows = args.count
    if split_rows <= 0:
        # A first session tells the row count; the timed one has a single split.
        probe = client.create_table_read_session(
            args.table, split_options=SplitOptions(split_mode=SplitMode.ROW_OFFSET, split_number=1 << 62))
        split_rows = max(probe.record_count, 1)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
    session = client.create_table_read_session(
        args.table, split_options=SplitOptions(split_mode=SplitMode.ROW_OFFSET, split_number=split_rows))
    t_read = time.perf_counter()
    splits = session.splits
    expected = session.record_count
    if args.count > 0:
        end = min(args.offset + args.count, session.record_count)
        splits = [RowRangeInputSplit(session.id, o, min(split_rows, end - o))
                  for o in range(args.offset, end, split_rows)]
        expected = max(end - args.offset, 0)
    rows = nbytes = batches = 0
    kwargs = {"max_batch_rows": args.max_batch_rows}
    if args.compress:
        kwargs["compress_algo"] = args.compress
    for split in splits:
        reader = session.open_arrow_reader(split, **kwargs)
        try:
            for batch in reader:
                rows += batch.num_rows
                nbytes += batch.nbytes
                batches += 1
        finally:
            close = getattr(reader, "close", None)
            if close:
                close()
    t1 = time.perf_counter()
    if rows != expected:
        print(f"pyodps_read: {rows} rows read, {expected} expected", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({
        "rows": rows,
        "bytes": nbytes,
        "batches": batches,
        "splits": len(splits),
        "split_rows": split_rows,
        "offset": args.offset,
        "count": args.count,
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
