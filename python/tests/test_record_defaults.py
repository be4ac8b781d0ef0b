"""COMPAT "record_defaults" typing (the native reader; TableRecordDataset is built on it)."""
import numpy as np
import pytest

from paiio import _native
from paiio.python_io import TableReader

SCHEMA = "i bigint, d double, s string, b boolean"
HEADER = ["i", "d", "s", "b"]


@pytest.fixture
def t(wh):
    return wh.table("rd", SCHEMA, HEADER, [(1, 1.5, "x", True), (None, None, None, None)])


@pytest.mark.parametrize("default, kind", [
    (0, "int32"),
    (0.0, "float32"),
    (np.int64(0), "int64"),
    (np.array(0, np.int64), "int64"),
    (np.int32(0), "int32"),
    (np.float64(0), "float64"),
    (np.float32(0), "float32"),
    ("", "string"),
    (b"", "bytes"),
    (True, "bool"),
    (np.bool_(False), "bool"),
    ([0], "int32"),
    ([np.int64(0)], "int64"),
    ([""], "string"),
])
def test_the_default_type_picks_the_kind(default, kind):
    assert _native.record_defaults([default])[0][0] == kind


@pytest.mark.parametrize("defaults, dtypes", [
    ([0, 0.0, "", False], [np.int32, np.float32, object, np.bool_]),
    ([np.int64(0), np.float64(0), b"", True], [np.int64, np.float64, object, np.bool_]),
    ([[np.array(0, np.int64)], [np.float32(0)], [""], [0]], [np.int64, np.float32, object, np.int32]),
])
def test_output_dtypes(t, defaults, dtypes):
    for read in ("read", "read_batch"):
        r = TableReader(t, record_defaults=defaults)
        out = getattr(r, read)(2)
        for name, dtype in zip(["i", "d", "s", "b"], dtypes):
            assert out[name].dtype == np.dtype(dtype), (read, name)


def test_nulls_become_the_defaults(t):
    rows = TableReader(t, record_defaults=[7, 2.5, "none", True]).read(2)
    assert tuple(rows[0]) == (1, 1.5, "x", True)
    assert tuple(rows[1]) == (7, 2.5, "none", True)
    rows = TableReader(t, record_defaults=[7, 2.5, b"none", 1]).read(2)
    assert rows[0]["s"] == b"x" and rows[1]["s"] == b"none"
    assert rows[1]["b"] == 1  # bool column read as int32


def test_selected_order_with_defaults(t):
    rows = TableReader(t, selected_cols="s,i", record_defaults=["", np.int64(-1)]).read(2)
    assert rows.dtype.names == ("s", "i")
    assert tuple(rows[1]) == ("", -1)


def test_pyarrow_types_follow_defaults(t):
    pa = pytest.importorskip("pyarrow")
    r = TableReader(t, record_defaults=[0, np.float64(0), b"", False])
    table = pa.RecordBatchReader.from_stream(r.native).read_all()
    assert [f.type for f in table.schema] == [pa.int32(), pa.float64(), pa.binary(), pa.bool_()]
    assert table.column("i").to_pylist() == [1, 0]
