"""Read throughput, side by side on one table served by `paiio serve`:

* paiio ``TableReader.read(4096)`` into numpy structured arrays (PAI's API),
* paiio ``read_batch(4096)``: dicts of numpy column arrays,
* paiio Arrow stream (``pyarrow.RecordBatchReader.from_stream``),
* PyODPS ``odps.maxstorage`` (Arrow batches from the same Storage API) converted to numpy
  columns and to the same structured array,
* numpy alone assembling the structured array from in-memory columns (the limit of any
  reader that delivers structured arrays).

    python benchmarks/bench_read.py --rows 2000000 [--threads 4] [--keep DIR]

Needs the ``paiio`` CLI (``$PAIIO_BIN`` or ``$CARGO_TARGET_DIR/{release,debug}/paiio``),
pyarrow and pyodps. Build paiio with ``--release`` for meaningful numbers.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ACCESS_ID = "bench-id"
ACCESS_KEY = "bench-secret"
PROJECT = "bench"
SCHEMA = "id bigint, a double, b double, c bigint, d float, flag boolean, tag string"


def paiio_bin():
    if os.environ.get("PAIIO_BIN"):
        return os.environ["PAIIO_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/paiio-rs/target")
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "paiio")
        if os.path.exists(path):
            return path
    sys.exit(f"no paiio CLI under {target}; build it or set PAIIO_BIN")


def make_table(warehouse, rows, tmp):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    rng = np.random.default_rng(1)
    table = pa.table({
        "id": np.arange(rows, dtype=np.int64),
        "a": rng.random(rows),
        "b": rng.random(rows),
        "c": rng.integers(0, 1 << 40, rows, dtype=np.int64),
        "d": rng.random(rows, dtype=np.float32),
        "flag": rng.random(rows) < 0.5,
        "tag": pa.array([f"t{i % 1000}" for i in range(rows)]),
    })
    path = os.path.join(tmp, "data.arrow")
    with ipc.new_file(path, table.schema) as w:
        w.write_table(table, max_chunksize=65536)
    uri = f"odps://{PROJECT}/tables/bench_{rows}"
    run = lambda *a: subprocess.run([paiio_bin(), "--warehouse", warehouse, *a], check=True,
                                    capture_output=True)
    run("table", "create", uri, "--schema", SCHEMA)
    run("table", "import", uri, path)
    return uri, table


def serve(warehouse):
    proc = subprocess.Popen(
        [paiio_bin(), "serve", "--warehouse", warehouse, "--listen", "127.0.0.1:0",
         "--access-id", ACCESS_ID, "--access-key", ACCESS_KEY],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m = re.search(r"listening on (http://\S+/api)", proc.stdout.readline())
    if not m:
        proc.kill()
        sys.exit("paiio serve did not start")
    return proc, m.group(1)


def timed(fn, repeat):
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        t = time.perf_counter() - start
        best = t if best is None else min(best, t)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=0, help="paiio prefetch streams (0 = auto)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", help="warehouse directory to reuse")
    args = ap.parse_args()

    import paiio
    from paiio.python_io import OutOfRangeException, TableReader

    tmp = tempfile.mkdtemp(prefix="paiio-bench-")
    warehouse = args.keep or os.path.join(tmp, "warehouse")
    uri = f"odps://{PROJECT}/tables/bench_{args.rows}"
    if not os.path.exists(os.path.join(warehouse, PROJECT)):
        t0 = time.perf_counter()
        uri, _ = make_table(warehouse, args.rows, tmp)
        print(f"made {uri} ({args.rows} rows) in {time.perf_counter() - t0:.1f}s")
    proc, endpoint = serve(warehouse)
    config = os.path.join(tmp, "odps.ini")
    with open(config, "w") as f:
        f.write(f"access_id={ACCESS_ID}\naccess_key={ACCESS_KEY}\nend_point={endpoint}\n")
    os.environ["ODPS_CONFIG_FILE_PATH"] = config
    results = []

    def report(name, seconds, nbytes, rows):
        results.append((name, rows / seconds, nbytes / seconds / 1e9, seconds))
        print(f"{name:<58} {rows / seconds / 1e6:8.2f} M rows/s {nbytes / seconds / 1e9:7.3f} GB/s "
              f"{seconds:7.2f} s", flush=True)

    try:
        # paiio: structured arrays through PAI's API.
        def paiio_struct():
            r = TableReader(uri, num_threads=args.threads)
            n = nbytes = 0
            try:
                while True:
                    a = r.read(args.batch)
                    n += len(a)
                    nbytes += a.nbytes
            except OutOfRangeException:
                pass
            r.close()
            return n, nbytes
        t, (n, nbytes) = timed(paiio_struct, args.repeat)
        assert n == args.rows, n
        report(f"paiio TableReader.read({args.batch}) -> structured array", t, nbytes, n)
        struct_bytes = nbytes

        def paiio_batches():
            r = TableReader(uri, num_threads=args.threads)
            n = nbytes = 0
            try:
                while True:
                    d = r.read_batch(args.batch)
                    n += len(d["id"])
                    nbytes += sum(v.nbytes for v in d.values())
            except OutOfRangeException:
                pass
            return n, nbytes
        t, (n, nbytes) = timed(paiio_batches, args.repeat)
        report(f"paiio read_batch({args.batch}) -> dict of numpy columns", t, nbytes, n)

        def paiio_arrow():
            import pyarrow as pa

            r = TableReader(uri, num_threads=args.threads, batch_rows=65536)
            table = pa.RecordBatchReader.from_stream(r.native).read_all()
            return table.num_rows, table.nbytes
        t, (n, nbytes) = timed(paiio_arrow, args.repeat)
        report("paiio Arrow stream -> pyarrow.Table", t, nbytes, n)

        # PyODPS maxstorage over the same Storage API.
        from odps import ODPS
        from odps.maxstorage import MaxStorageClient

        client = MaxStorageClient(odps=ODPS(ACCESS_ID, ACCESS_KEY, project=PROJECT, endpoint=endpoint))
        name = uri.rsplit("/", 1)[1]
        dtype = None

        def pyodps(to_struct):
            nonlocal dtype
            session = client.create_table_read_session(name)
            n = nbytes = 0
            for split in session.splits:
                for batch in session.open_arrow_reader(split):
                    cols = {f.name: batch.column(i).to_numpy(zero_copy_only=False)
                            for i, f in enumerate(batch.schema)}
                    if to_struct:
                        if dtype is None:
                            dtype = np.dtype([(k, v.dtype) for k, v in cols.items()])
                        out = np.empty(batch.num_rows, dtype)
                        for k, v in cols.items():
                            out[k] = v
                        nbytes += out.nbytes
                    else:
                        nbytes += sum(v.nbytes for v in cols.values())
                    n += batch.num_rows
            return n, nbytes
        t, (n, nbytes) = timed(lambda: pyodps(False), args.repeat)
        report("PyODPS maxstorage Arrow -> numpy columns", t, nbytes, n)
        t, (n, nbytes) = timed(lambda: pyodps(True), args.repeat)
        report("PyODPS maxstorage Arrow -> structured array", t, nbytes, n)

        # numpy alone: the same structured arrays from columns already in memory.
        r = TableReader(uri, num_threads=args.threads)
        cols = r.read_batch(args.rows)
        dt = r.native.dtype

        def assemble():
            nbytes = 0
            for start in range(0, args.rows, args.batch):
                out = np.empty(min(args.batch, args.rows - start), dt)
                for k, v in cols.items():
                    out[k] = v[start:start + args.batch]
                nbytes += out.nbytes
            return args.rows, nbytes
        t, (n, nbytes) = timed(assemble, args.repeat)
        report(f"numpy: structured arrays of {args.batch} from in-memory columns", t, nbytes, n)
    finally:
        proc.terminate()
        proc.wait()
    print(f"(paiio {paiio.__version__}; {args.rows} rows, {struct_bytes / args.rows:.0f} bytes/row "
          f"as a structured array; best of {args.repeat})")


if __name__ == "__main__":
    main()
