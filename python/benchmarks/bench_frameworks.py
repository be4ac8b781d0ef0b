"""TensorFlow and PyTorch feeding speed, side by side, on one table read from the embedded
warehouse and through `paiio serve`.

    python benchmarks/bench_frameworks.py [--rows 1000000] [--batch 1024] [--workers 0,2,4]
        [--shuffle both|true|false] [--strings str,fixed] [--repeat 1]

Measures:
  * tf  TableRecordDataset: elements/s of the unbatched dataset consumed inside TensorFlow
    (``Dataset.reduce``: no Python per element), and of ``.batch(B)`` iterated in eager Python;
  * torch TableDataset + paiio.torch.DataLoader: batches/s (and rows/s) per worker count, with
    shuffle=False and shuffle=True side by side: the first epoch of a new loader (workers
    started in it), and the next epoch of the same loader with ``persistent_workers=True``
    (the steady state of a long training run); with --repeat N, the median of N loaders;
    each with the text column as objects (``strings="str"``) and as numpy fixed-width bytes
    (``strings="fixed"``);
  * torch: the CPU time of the training loop's own thread per batch (``time.thread_time``),
    what a batch costs the thread that also has to train, beside the rates;
  * the limit of each row, and every row as a ratio to it:
      - tf rows: TensorFlow reading the same elements from memory (``from_tensor_slices``
        of the columns);
      - torch rows: torch's own in-memory rate, a ``torch.utils.data.DataLoader`` with the
        row's ``num_workers`` over the same batches already made (dicts of ready tensors,
        the string column as the same object arrays, or ``S<n>`` arrays for
        ``strings="fixed"``; an ``IterableDataset`` whose worker
        ``w`` yields batches ``w, w + n, ...``, torch's default transfer from workers).

The table (id bigint, x double, y double, label bigint, s string) is made with the `paiio`
CLI (PAIIO_BIN, else $CARGO_TARGET_DIR/{release,debug}/paiio).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def paiio_bin():
    if os.environ.get("PAIIO_BIN"):
        return os.environ["PAIIO_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/paiio-rs/target")
    for profile in ("release", "debug"):
        p = os.path.join(target, profile, "paiio")
        if os.path.exists(p):
            return p
    sys.exit("the paiio CLI is not built (cargo build --release -p paiio-cli) and PAIIO_BIN is unset")


def make_table(warehouse, tmp, rows):
    uri = "odps://bench/tables/frameworks"
    run = lambda *a: subprocess.run([paiio_bin(), "--warehouse", warehouse, *a], check=True,
                                    capture_output=True)
    run("table", "create", uri, "--schema", "id bigint, x double, y double, label bigint, s string")
    path = os.path.join(tmp, "rows.csv")
    i = np.arange(rows)
    with open(path, "w") as f:
        f.write("id,x,y,label,s\n")
        step = 200_000
        for a in range(0, rows, step):
            j = i[a:a + step]
            lines = [f"{k},{k * 0.5},{k * 0.25},{k % 10},item{k % 1000}" for k in j.tolist()]
            f.write("\n".join(lines) + "\n")
    run("table", "import", uri, path)
    return uri


class Server:
    def __init__(self, warehouse, tmp):
        self.proc = subprocess.Popen(
            [paiio_bin(), "serve", "--warehouse", warehouse, "--listen", "127.0.0.1:0",
             "--access-id", "bench-id", "--access-key", "bench-key"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+/api)", line)
        if not m:
            raise RuntimeError(f"paiio serve did not start: {line}")
        self.config = os.path.join(tmp, "odps_config.ini")
        with open(self.config, "w") as f:
            f.write(f"access_id=bench-id\naccess_key=bench-key\nend_point={m.group(1)}\n")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def use(backend, warehouse, server):
    for k in ("ODPS_CONFIG_FILE_PATH", "ODPS_ENDPOINT", "PAIIO_WAREHOUSE"):
        os.environ.pop(k, None)
    if backend == "embedded":
        os.environ["PAIIO_WAREHOUSE"] = warehouse
    else:
        os.environ["ODPS_CONFIG_FILE_PATH"] = server.config


DEFAULTS = [np.int64(0), 0.0, 0.0, 0, ""]


def bench_tf(uri, batch):
    import tensorflow as tf
    from paiio.data import TableRecordDataset

    out = {}
    ds = TableRecordDataset(uri, record_defaults=DEFAULTS)
    t = time.perf_counter()
    n = int(ds.reduce(np.int64(0), lambda acc, *f: acc + 1))
    out["tf elements/s (reduce)"] = n / (time.perf_counter() - t)
    ds = TableRecordDataset(uri, record_defaults=DEFAULTS).batch(batch).prefetch(4)
    t, n = time.perf_counter(), 0
    for b in ds:
        n += int(b[0].shape[0])
    out[f"tf elements/s (.batch({batch}) eager loop)"] = n / (time.perf_counter() - t)
    return out


def bench_tf_in_memory(rows, batch):
    """TensorFlow's own rate for the same elements from memory (``from_tensor_slices`` of
    the table's columns, typed as DEFAULTS asks): the limit of any tf.data source."""
    import tensorflow as tf

    k = np.arange(rows, dtype=np.int64)
    cols = (k, (k * 0.5).astype(np.float32), (k * 0.25).astype(np.float32),
            (k % 10).astype(np.int32), np.array([f"item{i}" for i in range(1000)])[k % 1000])
    out = {}
    ds = tf.data.Dataset.from_tensor_slices(cols)
    t = time.perf_counter()
    n = int(ds.reduce(np.int64(0), lambda acc, *f: acc + 1))
    out["tf elements/s (reduce)"] = n / (time.perf_counter() - t)
    ds = tf.data.Dataset.from_tensor_slices(cols).batch(batch).prefetch(4)
    t, n = time.perf_counter(), 0
    for b in ds:
        n += int(b[0].shape[0])
    out[f"tf elements/s (.batch({batch}) eager loop)"] = n / (time.perf_counter() - t)
    return out


def torch_epoch(uri, batch, workers, shuffle, strings):
    """Batches and rows per second of the first and the second epoch of a new TableDataset
    and DataLoader."""
    from paiio.torch import DataLoader, TableDataset

    ds = TableDataset(uri, record_defaults=DEFAULTS, batch_size=batch, shuffle=shuffle,
                      strings=strings)
    return timed_epochs(DataLoader, ds, workers)


def timed_epochs(loader_class, dataset, workers, **kwargs):
    """Batches and rows per second of the first two epochs of ``loader_class(dataset, ...)``
    (with workers: forked, and kept for the second epoch)."""
    extra = {"multiprocessing_context": "fork", "persistent_workers": True} if workers else {}
    loader = loader_class(dataset, num_workers=workers, **kwargs, **extra)
    out = []
    for _ in range(2):
        t, cpu, nb, rows = time.perf_counter(), time.thread_time(), 0, 0
        for b in loader:
            nb += 1
            rows += int(b["id"].shape[0])
        dt = time.perf_counter() - t
        # The training loop's own thread: what each batch costs the thread that trains.
        loop_us = 1e6 * (time.thread_time() - cpu) / max(nb, 1)
        out.append((nb / dt, rows / dt, loop_us))
    del loader
    return out


def ready_batches(rows, batch, strings):
    """The torch batches of the table, made in memory: what TableDataset yields."""
    import torch

    out = []
    for a in range(0, rows, batch):
        k = np.arange(a, min(a + batch, rows), dtype=np.int64)
        out.append({
            "id": torch.from_numpy(k),
            "x": torch.from_numpy((k * 0.5).astype(np.float32)),
            "y": torch.from_numpy((k * 0.25).astype(np.float32)),
            "label": torch.from_numpy((k % 10).astype(np.int32)),
            "s": np.array([f"item{i % 1000}" for i in k.tolist()], dtype=object)
            if strings == "str" else np.array([b"item%d" % (i % 1000) for i in k.tolist()]),
        })
    return out


def torch_in_memory_epoch(batches, workers):
    import torch

    class Ready(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            w, n = (0, 1) if info is None else (info.id, info.num_workers)
            return iter(batches[w::n])

    return timed_epochs(torch.utils.data.DataLoader, Ready(), workers, batch_size=None)


def bench_torch_in_memory(rows, batch, workers, shuffles, strings_modes, repeat):
    """torch's own rate for the same batches from memory, per worker count: the limit of
    the torch rows (shuffling costs nothing there: the same figure for both)."""
    out = {}
    for strings in strings_modes:
        batches = ready_batches(rows, batch, strings)
        for w in workers:
            runs = [torch_in_memory_epoch(batches, w) for _ in range(repeat)]
            for shuffle in shuffles:
                out.update(torch_rows(runs, w, shuffle, strings))
    return out


def torch_rows(runs, workers, shuffle, strings):
    """The figures of `runs` (each the first and the second epoch of a loader): the median
    of each epoch."""
    out = {}
    median = lambda values: sorted(values)[len(values) // 2]
    for epoch, name in ((0, "first epoch"), (1, "next epoch ")):
        label = f"workers={workers}, shuffle={shuffle}, strings={strings}, {name}"
        out[f"torch batches/s ({label})"] = median([r[epoch][0] for r in runs])
        out[f"torch rows/s    ({label})"] = median([r[epoch][1] for r in runs])
        out[f"torch loop CPU us per batch ({label})"] = median([r[epoch][2] for r in runs])
    return out


def bench_torch(uri, batch, workers, shuffles, strings_modes, repeat):
    out = {}
    for strings in strings_modes:
        for w in workers:
            for shuffle in shuffles:
                runs = [torch_epoch(uri, batch, w, shuffle, strings) for _ in range(repeat)]
                out.update(torch_rows(runs, w, shuffle, strings))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--workers", default="0,2,4")
    p.add_argument("--skip-tf", action="store_true")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--shuffle", choices=("both", "true", "false"), default="both",
                   help="torch: measure shuffle=False, shuffle=True, or both side by side")
    p.add_argument("--strings", default="str,fixed",
                   help="torch: how the text column comes (TableDataset's strings), each measured")
    p.add_argument("--repeat", type=int, default=1,
                   help="torch: epochs per measurement (the median is shown)")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w != ""]
    shuffles = {"both": (False, True), "true": (True,), "false": (False,)}[args.shuffle]
    strings_modes = [m for m in args.strings.split(",") if m]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = os.path.join(tmp, "warehouse")
        t = time.perf_counter()
        uri = make_table(warehouse, tmp, args.rows)
        print(f"table: {args.rows} rows (5 columns) made in {time.perf_counter() - t:.1f}s; "
              f"batch {args.batch}; CLI {paiio_bin()}")
        server = Server(warehouse, tmp)
        results = {}
        try:
            for backend in ("embedded", "serve"):
                use(backend, warehouse, server)
                r = {}
                if not args.skip_tf:
                    r.update(bench_tf(uri, args.batch))
                if not args.skip_torch:
                    r.update(bench_torch(uri, args.batch, workers, shuffles, strings_modes,
                                         max(args.repeat, 1)))
                results[backend] = r
        finally:
            server.stop()
    limit = {} if args.skip_tf else bench_tf_in_memory(args.rows, args.batch)
    if not args.skip_torch:
        limit.update(bench_torch_in_memory(args.rows, args.batch, workers, shuffles,
                                           strings_modes, max(args.repeat, 1)))
    keys = list(results["embedded"])
    width = max(len(k) for k in keys)
    print("limit: tf rows: TensorFlow over the same elements in memory (from_tensor_slices); "
          "torch rows: torch.utils.data.DataLoader with the same num_workers over the same "
          "batches already made (ready tensors; object or S<n> arrays). ratio: rate / limit "
          "(loop CPU: the training loop's thread's CPU time per batch, and its ratio to the "
          "limit's).")
    print(f"{'':{width}}  {'embedded':>12}  {'paiio serve':>12}  {'limit':>12}  "
          f"{'embedded/limit':>14}  {'serve/limit':>11}")
    for k in keys:
        e, s = results["embedded"][k], results["serve"][k]
        if k in limit:
            lim = f"{limit[k]:>12,.0f}  {e / limit[k]:>14.2f}  {s / limit[k]:>11.2f}"
        else:
            lim = f"{'-':>12}  {'-':>14}  {'-':>11}"
        print(f"{k:{width}}  {e:>12,.0f}  {s:>12,.0f}  {lim}")


if __name__ == "__main__":
    main()
