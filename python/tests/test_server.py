"""The reader and writer over the Storage API (`paiio serve`): same semantics as locally."""
import numpy as np
import pytest

import paiio
from paiio.python_io import OutOfRangeException, TableReader, TableWriter


def test_read_write_round_trip(served, name):
    t = served.create(name, "id bigint, s string, x double, p binary")
    with TableWriter(t) as w:
        w.write([(i, f"s{i}", i / 2, f"b{i}".encode()) for i in range(5000)], [0, 1, 2, 3])
    r = TableReader(t, selected_cols="x,id,s,p", num_threads=4)
    assert r.get_row_count() == 5000
    rows = r.read(4096)
    assert rows.dtype.names == ("x", "id", "s", "p")
    assert rows[10]["id"] == 10 and rows[10]["s"] == "s10" and rows[10]["p"] == b"b10"
    assert len(r.read(4096)) == 904
    with pytest.raises(OutOfRangeException):
        r.read()


def test_slices_and_batches(served, name):
    t = served.table(name, "id bigint", ["id"], [(i,) for i in range(1000)])
    got = []
    for i in range(3):
        r = TableReader(t, slice_id=i, slice_count=3)
        b = r.read_batch(1000)
        got.extend(b["id"].tolist())
    assert sorted(got) == list(range(1000))


def test_pyarrow_stream(served, name):
    pa = pytest.importorskip("pyarrow")
    t = served.table(name, "id bigint, s string", ["id", "s"], [(i, str(i)) for i in range(3000)])
    table = pa.RecordBatchReader.from_stream(TableReader(t, batch_rows=1024).native).read_all()
    assert table.column("id").to_pylist() == list(range(3000))


def test_writer_conflict_over_the_service(served, name):
    t = served.create(name, "id bigint")
    w = TableWriter(t, slice_id=5)
    with pytest.raises(paiio.PaiioError):
        TableWriter(t, slice_id=5)
    w.close()


def test_record_defaults(served, name):
    t = served.table(name, "id bigint, v double", ["id", "v"], [(1, None), (None, 2.0)])
    rows = TableReader(t, record_defaults=[np.int64(-1), np.float64(-2)]).read(2)
    assert [tuple(r) for r in rows] == [(1, -2.0), (-1, 2.0)]
