"""COMPAT "TableReader" and "Table URIs": read semantics on the local warehouse."""
import numpy as np
import pytest

import paiio
from paiio.python_io import OutOfRangeException, TableReader

from conftest import uri

SCHEMA = "uid bigint, name string, price double, virtual boolean"
HEADER = ["uid", "name", "price", "virtual"]
ROWS = [(25, "Apple", 5.0, False), (38, "Pear", 4.5, False), (17, "Watermelon", 2.2, True)]


@pytest.fixture
def test_table(wh):
    return wh.table("test", SCHEMA, HEADER, ROWS)


def numbered(wh, name, n, partitioned_by=None):
    rows = [(i, f"s{i}", i * 0.5) for i in range(n)]
    return wh.table(name, "id bigint, s string, x double", ["id", "s", "x"], rows, partitioned_by)


def test_read_one_row_indexed_by_name_and_position(test_table):
    r = TableReader(test_table)
    rows = r.read()
    assert len(rows) == 1
    assert rows[0]["uid"] == 25 and rows[0][0] == 25
    assert rows[0]["name"] == "Apple" and rows[0][1] == "Apple"
    assert rows[0]["price"] == 5.0 and rows[0][3] == np.False_
    assert rows.dtype.names == ("uid", "name", "price", "virtual")


def test_read_n_then_smaller_final_batch_then_out_of_range(test_table):
    r = TableReader(test_table, selected_cols="uid,name,price")
    assert r.get_row_count() == 3
    a = r.read(2)
    assert [tuple(x) for x in a] == [(25, "Apple", 5.0), (38, "Pear", 4.5)]
    b = r.read(2)
    assert [tuple(x) for x in b] == [(17, "Watermelon", 2.2)]
    with pytest.raises(OutOfRangeException):
        r.read(2)
    with pytest.raises(EOFError):  # the builtin base
        r.read()
    r.close()


def test_allow_smaller_final_batch(test_table):
    r = TableReader(test_table)
    r.read(2)
    with pytest.raises(OutOfRangeException):
        r.read(2, allow_smaller_final_batch=False)
    assert len(r.read(2, allow_smaller_final_batch=True)) == 1


def test_dtypes_and_selected_order(test_table):
    rows = TableReader(test_table, selected_cols="price, uid,name").read(3)
    assert rows.dtype.names == ("price", "uid", "name")
    assert rows.dtype["price"] == np.float64
    assert rows.dtype["uid"] == np.int64
    assert rows.dtype["name"] == object
    assert list(rows["uid"]) == [25, 38, 17]
    assert rows.price.tolist() == [5.0, 4.5, 2.2]  # recarray attribute access


def test_excluded_cols(test_table):
    rows = TableReader(test_table, excluded_cols="name,virtual").read(3)
    assert rows.dtype.names == ("uid", "price")


def test_seek_is_relative_to_the_slice_and_past_end_raises(wh):
    t = numbered(wh, "n10", 10)
    r = TableReader(t, slice_id=1, slice_count=2)
    assert r.get_row_count() == 5
    r.seek(2)
    assert r.read(1)[0]["id"] == 7
    r.seek(5)  # the end itself is fine; reading there is out of range
    with pytest.raises(OutOfRangeException):
        r.read()
    with pytest.raises(OutOfRangeException):
        r.seek(6)
    r.seek(0)
    assert r.read(10)["id"].tolist() == [5, 6, 7, 8, 9]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 11])
def test_slices_cover_every_row_exactly_once(wh, count):
    t = numbered(wh, f"cover{count}", 10)
    seen = []
    sizes = []
    for i in range(count):
        r = TableReader(t, slice_id=i, slice_count=count)
        sizes.append(r.get_row_count())
        try:
            while True:
                seen.extend(r.read(3)["id"].tolist())
        except OutOfRangeException:
            pass
    assert sorted(seen) == list(range(10))
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == 10


def test_get_schema_format(test_table):
    s = TableReader(test_table, selected_cols="name,uid,price,virtual").get_schema()
    assert s.dtype.names == ("colname", "typestr", "pytype")
    assert s[0][0] == "name" and s[1][0] == "uid"
    assert list(s["colname"]) == ["name", "uid", "price", "virtual"]
    assert list(s["typestr"]) == ["string", "bigint", "double", "boolean"]
    assert list(s["pytype"]) == [object, int, float, bool]


def test_context_manager_and_iteration(test_table):
    with TableReader(test_table, selected_cols="uid") as r:
        assert [row["uid"] for row in r] == [25, 38, 17]
    assert r.closed
    with pytest.raises(paiio.ClosedError):
        r.read()
    r.close()  # twice is fine


def test_strings_are_str_by_default_and_bytes_on_request(wh):
    t = wh.create("texts", "s string, b binary")
    with paiio.TableWriter(t) as w:  # CSV cannot carry BINARY
        w.write(("héllo", b"raw"), [0, 1])
    row = TableReader(t).read()[0]
    assert row["s"] == "héllo" and isinstance(row["s"], str)
    assert row["b"] == b"raw" and isinstance(row["b"], bytes)  # BINARY is always bytes
    row = TableReader(t, strings_as_bytes=True).read()[0]
    assert row["s"] == "héllo".encode() and isinstance(row["s"], bytes)
    assert row["b"] == b"raw"


def test_nulls(wh):
    t = wh.table("nulls", "i bigint, d double, b boolean, s string",
                 ["i", "d", "b", "s"], [(None, None, None, None), (1, 1.5, True, "x")])
    rows = TableReader(t).read(2)
    assert rows[0]["i"] == 0 and np.isnan(rows[0]["d"]) and not rows[0]["b"]
    assert rows[0]["s"] is None
    assert tuple(rows[1]) == (1, 1.5, True, "x")
    batch = TableReader(t).read_batch(2)
    assert batch["i"].tolist() == [0, 1] and batch["s"].tolist() == [None, "x"]


def test_more_types(wh):
    t = wh.table(
        "types", "a tinyint, b smallint, c int, d float, e datetime, f decimal(10,2), g date",
        list("abcdefg"), [(1, 2, 3, 1.5, "2024-01-02 03:04:05", "1.50", "1970-01-03")])
    row = TableReader(t).read()[0]
    assert row.dtype["a"] == np.int8 and row.dtype["b"] == np.int16 and row.dtype["c"] == np.int32
    assert row.dtype["d"] == np.float32
    assert row["e"] == 1704164645000  # DATETIME: epoch milliseconds
    assert row["f"] == "1.50"  # DECIMAL: its text
    assert row["g"] == 2  # DATE: days
    s = TableReader(t).get_schema()
    assert list(s["typestr"]) == ["tinyint", "smallint", "int", "float", "datetime",
                                  "decimal(10,2)", "date"]


def test_partition_uris(wh):
    t = wh.create("parts", "id bigint, s string, x double", partitioned_by="pt string, region string")
    wh.load(t + "/pt=1/region=x", ["id", "s", "x"], [(1, "a", 1.0), (2, "b", 2.0)])
    wh.load(t + "/pt=1/region=y", ["id", "s", "x"], [(3, "c", 3.0)])
    wh.load(t + "/pt=2/region=x", ["id", "s", "x"], [(4, "d", 4.0)])
    assert TableReader(t + "/pt=1/region=x").read(10)["id"].tolist() == [1, 2]
    assert sorted(TableReader(t + "/pt=1").read(10)["id"].tolist()) == [1, 2, 3]
    assert TableReader(t).get_row_count() == 4
    rows = TableReader(t + "/pt=1/region=y", selected_cols="id,pt,region").read(10)
    assert tuple(rows[0]) == (3, "1", "y")


def test_schema_qualified_uri(wh):
    t = wh.table("analytics.events", "id bigint", ["id"], [(1,), (2,)])
    assert t == uri("analytics.events")
    assert TableReader(t).read(5)["id"].tolist() == [1, 2]


def test_several_tables_as_list_and_comma_string(wh):
    a = numbered(wh, "ta", 3)
    b = numbered(wh, "tb", 2)
    for tables in ([a, b], f"{a},{b}", (a, b)):
        r = TableReader(tables)
        assert r.get_row_count() == 5
        assert r.read(10)["id"].tolist() == [0, 1, 2, 0, 1]
    # The same table twice is read twice.
    assert TableReader([a, a]).get_row_count() == 6


def test_read_batch_dict_of_arrays(wh):
    t = numbered(wh, "nb", 100)
    r = TableReader(t)
    b = r.read_batch(64)
    assert list(b) == ["id", "s", "x"]
    assert b["id"].dtype == np.int64 and b["id"].tolist() == list(range(64))
    assert b["x"].dtype == np.float64 and b["s"].dtype == object
    assert b["s"][3] == "s3"
    assert len(r.read_batch(64)["id"]) == 36
    with pytest.raises(OutOfRangeException):
        r.read_batch(1)


def test_pyarrow_stream_and_batches(wh):
    pa = pytest.importorskip("pyarrow")
    t = numbered(wh, "na", 1000)
    r = TableReader(t, batch_rows=300)
    r.seek(100)
    table = pa.RecordBatchReader.from_stream(r.native).read_all()
    assert table.num_rows == 900
    assert table.column("id").to_pylist() == list(range(100, 1000))
    assert table.schema.field("s").type == pa.string()
    r.seek(0)
    batch = r.read_arrow(10)
    assert isinstance(batch, pa.RecordBatch) and batch.num_rows == 10
    r.seek(0)
    assert r.to_arrow_reader().read_all().num_rows == 1000
    # The capsule interface on the reader itself.
    r.seek(998)
    assert pa.table(r).num_rows == 2


def test_state_and_restore(wh):
    t = numbered(wh, "ns", 50)
    r = TableReader(t)
    r.read(17)
    state = r.state()
    rest = r.read(100)["id"].tolist()
    r2 = TableReader(t)
    r2.restore(state)
    assert r2.read(100)["id"].tolist() == rest == list(range(17, 50))
    assert r2.tell() == 50


def test_shuffle_is_deterministic(wh):
    t = numbered(wh, "shuf", 200)
    a = TableReader(t, shuffle_seed=7, epoch=1, shuffle_buffer=64, shuffle_block=16).read(200)["id"].tolist()
    b = TableReader(t, shuffle_seed=7, epoch=1, shuffle_buffer=64, shuffle_block=16).read(200)["id"].tolist()
    c = TableReader(t, shuffle_seed=7, epoch=2, shuffle_buffer=64, shuffle_block=16).read(200)["id"].tolist()
    assert a == b and a != c and sorted(a) == list(range(200))


def test_big_read_struct_matches_read_batch(wh):
    n = 50_000
    t = numbered(wh, "big", n)
    s = TableReader(t).read(n)
    b = TableReader(t).read_batch(n)
    assert len(s) == n
    np.testing.assert_array_equal(s["id"], b["id"])
    np.testing.assert_array_equal(s["x"], b["x"])
    assert s["s"][n - 1] == b["s"][n - 1] == f"s{n - 1}"


def test_equal_slices(wh):
    t = numbered(wh, "eq", 10)
    counts = [TableReader(t, slice_id=i, slice_count=3, equal=True).get_row_count() for i in range(3)]
    assert counts == [3, 3, 3]


def test_read_batch_numeric_columns_are_zero_copy(wh):
    from paiio import _native

    t = numbered(wh, "zc", 10)
    b = TableReader(t).read_batch(10)
    assert isinstance(b["id"].base, _native.ArrowOwner)  # a view of the Arrow buffer
    assert b["id"].flags.c_contiguous
    b2 = TableReader(t, record_defaults=[0, "", 0.0]).read_batch(10)
    assert b2["id"].dtype == np.int32 and b2["x"].dtype == np.float32


@pytest.mark.parametrize("defaults", [None, [np.int64(0), "", np.float32(0)]])
def test_open_slice_shares_the_sessions_of_a_reader(wh, defaults):
    from paiio import _native

    t = numbered(wh, "os", 1000)
    base = _native.Reader([t], record_defaults=defaults, shuffle_seed=3, epoch=1,
                          shuffle_buffer=64, shuffle_block=16)
    for slice_id in range(3):
        derived = base.open_slice(slice_id, 3)
        direct = _native.Reader([t], record_defaults=defaults, slice_id=slice_id, slice_count=3,
                                shuffle_seed=3, epoch=1, shuffle_buffer=64, shuffle_block=16)
        assert derived.row_count == direct.row_count
        assert derived.columns == direct.columns
        a, b = derived.read_batch(1000), direct.read_batch(1000)
        assert a["id"].tolist() == b["id"].tolist() and a["s"].tolist() == b["s"].tolist()
        assert a["x"].dtype == b["x"].dtype
    # The sessions outlive the reader's own reading, not its closing.
    base.close()
    with pytest.raises(paiio.ClosedError):
        base.open_slice(0, 3)


def test_forward_seeks_skip_what_was_read_ahead(wh):
    # seek() ahead keeps what the reader holds; the rows are those of a fresh reader.
    t = numbered(wh, "fs", 3000)
    for shuffle in ({}, dict(shuffle_seed=5, shuffle_buffer=512, shuffle_block=64)):
        full = TableReader(t, **shuffle).read(3000)["id"].tolist()
        r = TableReader(t, batch_rows=100, capacity=400, num_threads=1, **shuffle)
        for at, n in [(0, 10), (50, 10), (300, 20), (700, 50), (2000, 10), (100, 5), (2999, 1)]:
            r.seek(at)
            assert r.read(n)["id"].tolist() == full[at:at + n], (at, shuffle)


def test_table_lists_and_row_counts(wh):
    from paiio import _native

    t = numbered(wh, "rc", 7)
    assert _native.table_uris(f"{t} , {t}".encode()) == [t, t]
    assert _native.table_uris(["odps://p/tables/a/pt=1,x=2, odps://p/tables/b"]) == [
        "odps://p/tables/a/pt=1,x=2", "odps://p/tables/b"]
    with pytest.raises(paiio.InvalidArgumentError):
        _native.table_uris([])
    assert _native.row_counts([t, t]) == [7, 7]
