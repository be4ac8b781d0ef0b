"""COMPAT "TableWriter": the forms of write(), atomic visibility, slice_id conflicts."""
import numpy as np
import pytest

import paiio
from paiio.python_io import TableReader, TableWriter

SCHEMA = "uid bigint, name string, price double, virtual boolean"


def rows_of(t, **kw):
    r = TableReader(t, **kw)
    n = r.get_row_count()
    return [tuple(x) for x in r.read(n)] if n else []


@pytest.fixture
def table(wh):
    return wh.create("out", SCHEMA)


def test_one_row_as_tuple_list_and_array(table):
    with TableWriter(table) as w:
        w.write((1, "a", 1.5, True), indices=[0, 1, 2, 3])
        w.write([2, "b", 2.5, False], [0, 1, 2, 3])
        w.write(np.array([3, 4]), (0, 2))  # a 1-D array: one row of same-typed values
    assert sorted(rows_of(table)) == [(1, "a", 1.5, True), (2, "b", 2.5, False),
                                     (3, None, 4.0, False)]


def test_many_rows_as_list_of_tuples_and_lists(table):
    w = TableWriter(table)
    w.write([(1, "a", 1.0, False), (2, "b", 2.0, True)], indices=[0, 1, 2, 3])
    w.write([[3, "c"], [4, "d"]], indices=np.array([0, 1]))
    w.close()
    assert sorted(r[:2] for r in rows_of(table)) == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]


def test_structured_array(table):
    arr = np.array([(10, 1.25, "x"), (11, 2.5, "y")],
                   dtype=[("id", "i4"), ("p", "f4"), ("n", "U3")])
    objs = np.array([(12, "z", None)], dtype=[("id", "i8"), ("n", "O"), ("v", "O")])
    with TableWriter(table, slice_id=3) as w:
        w.write(arr, indices=[0, 2, 1])
        w.write(objs, indices=[0, 1, 3])
    assert sorted(rows_of(table)) == [(10, "x", 1.25, False), (11, "y", 2.5, False),
                                     (12, "z", np.nan, False)] or sorted(
        rows_of(table))[:2] == [(10, "x", 1.25, False), (11, "y", 2.5, False)]
    got = TableReader(table).read_batch(10)
    assert sorted(got["uid"].tolist()) == [10, 11, 12]


def test_read_struct_round_trips_through_write(wh, table):
    with TableWriter(table) as w:
        w.write([(i, f"n{i}", i / 4, i % 2 == 0) for i in range(100)], [0, 1, 2, 3])
    data = TableReader(table).read(100)
    copy = wh.create("copy", SCHEMA)
    with TableWriter(copy) as w:
        w.write(data, [0, 1, 2, 3])
    assert sorted(rows_of(copy)) == sorted(rows_of(table))


def test_numpy_scalars_and_type_casts(table):
    with TableWriter(table) as w:
        w.write((np.int32(5), np.str_("s"), np.float32(0.5), np.bool_(True)), [0, 1, 2, 3],
                allow_type_cast=True)
        w.write((6, "t", 7, True), [0, 1, 2, 3])  # int to double
    assert sorted(rows_of(table)) == [(5, "s", 0.5, True), (6, "t", 7.0, True)]


def test_rows_are_visible_only_after_close(wh, table):
    w = TableWriter(table)
    w.write([(1, "a", 1.0, True)] * 1000, [0, 1, 2, 3])
    w.native.flush()
    assert TableReader(table).get_row_count() == 0
    w.close()
    assert TableReader(table).get_row_count() == 1000


def test_failed_with_block_writes_nothing(table):
    with pytest.raises(RuntimeError):
        with TableWriter(table) as w:
            w.write((1, "a", 1.0, True), [0, 1, 2, 3])
            raise RuntimeError("boom")
    assert TableReader(table).get_row_count() == 0


def test_abort_writes_nothing(table):
    w = TableWriter(table)
    w.write((1, "a", 1.0, True), [0, 1, 2, 3])
    w.abort()
    assert TableReader(table).get_row_count() == 0


def test_appends(table):
    for i in range(3):
        with TableWriter(table) as w:
            w.write((i, "a", 1.0, True), [0, 1, 2, 3])
    assert TableReader(table).get_row_count() == 3


def test_two_live_writers_with_one_slice_id_is_an_error(table):
    w = TableWriter(table, slice_id=0)
    with pytest.raises(paiio.PaiioError) as e:
        TableWriter(table, slice_id=0)
    assert "0" in str(e.value)
    other = TableWriter(table, slice_id=1)  # another slice is fine
    w.write((1, "a", 1.0, True), [0, 1, 2, 3])
    other.write((2, "b", 2.0, True), [0, 1, 2, 3])
    w.close()
    other.close()
    TableWriter(table, slice_id=0).close()  # free again after close
    assert TableReader(table).get_row_count() == 2


def test_partition_uri_and_dynamic_partitions(wh):
    t = wh.create("pout", "id bigint", partitioned_by="pt string")
    with TableWriter(t + "/pt=a") as w:
        w.write([(1,), (2,)], [0])
    with TableWriter(t) as w:  # dynamic: the partition column is written
        w.write([(3, "b")], [0, 1])
    assert TableReader(t + "/pt=a").get_row_count() == 2
    assert TableReader(t + "/pt=b").read()[0]["id"] == 3


def test_write_arrow(table):
    pa = pytest.importorskip("pyarrow")
    data = pa.table({"uid": [1, 2], "price": [0.5, 1.5]})
    with TableWriter(table) as w:
        w.write_arrow(data)  # by column name
        w.write_arrow(pa.record_batch([pa.array(["z"])], names=["anything"]), [1])
    got = sorted(rows_of(table), key=lambda r: (r[0], r[1] or ""))
    assert got[1:] == [(1, None, 0.5, False), (2, None, 1.5, False)]
    assert got[0][1] == "z"


def test_bad_writes_are_clear(table):
    w = TableWriter(table)
    with pytest.raises(paiio.InvalidArgumentError, match="indices"):
        w.write((1, "a"), [0, 1, 2])
    with pytest.raises(paiio.InvalidArgumentError, match="out of range"):
        w.write((1,), [9])
    with pytest.raises(paiio.ConversionError):
        w.write(("not a number",), [0])
    with pytest.raises(TypeError):
        w.write(42, [0])
    w.abort()
