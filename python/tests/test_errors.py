"""Bad input gives clear exceptions of the right classes (COMPAT, STYLE "Exceptions")."""
import numpy as np
import pytest

import paiio
from paiio import _native
from paiio.python_io import TableReader


@pytest.fixture
def t(wh):
    return wh.table("t", "a bigint, b string", ["a", "b"], [(1, "x")])


def test_unknown_column(t):
    with pytest.raises(paiio.InvalidArgumentError, match="`nope` is not a column") as e:
        TableReader(t, selected_cols="a,nope")
    assert isinstance(e.value, ValueError)
    assert "a, b" in str(e.value)  # lists the columns


def test_both_selected_and_excluded(t):
    with pytest.raises(ValueError, match="selected_cols.*excluded_cols"):
        TableReader(t, selected_cols="a", excluded_cols="b")


def test_bad_uri(wh):
    with pytest.raises(paiio.InvalidArgumentError, match="odps://"):
        TableReader("oss://bucket/x")


def test_missing_table(wh):
    with pytest.raises(paiio.TableNotFoundError) as e:
        TableReader("odps://myproject/tables/absent")
    assert isinstance(e.value, FileNotFoundError)
    assert "absent" in str(e.value)


def test_bad_slice(t):
    with pytest.raises(ValueError, match="slice"):
        TableReader(t, slice_id=2, slice_count=2)
    with pytest.raises(ValueError, match="num_threads"):
        TableReader(t, num_threads=65)


def test_missing_config_file(wh, monkeypatch, tmp_path):
    path = str(tmp_path / "absent.ini")
    monkeypatch.setenv("ODPS_CONFIG_FILE_PATH", path)
    with pytest.raises(FileNotFoundError) as e:
        TableReader("odps://myproject/tables/t")
    assert isinstance(e.value, paiio.ConfigError)
    assert path in str(e.value) and "ODPS_CONFIG_FILE_PATH" in str(e.value)


def test_bad_config_file(wh, monkeypatch, tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("access_id=x\nend_point=http://127.0.0.1:1/api\n")
    monkeypatch.setenv("ODPS_CONFIG_FILE_PATH", str(path))
    with pytest.raises(paiio.ConfigError, match="access_key"):
        TableReader("odps://myproject/tables/t")


def test_wrong_record_defaults_count_names_both_counts(t):
    with pytest.raises(paiio.InvalidArgumentError, match=r"3 record_defaults for 2 selected"):
        TableReader(t, record_defaults=[0, "", 0.0])


def test_impossible_record_default_names_column_and_types(wh):
    t = wh.create("bin", "raw binary")
    with paiio.TableWriter(t) as w:
        w.write((b"x",), [0])
    with pytest.raises(paiio.ConversionError) as e:
        TableReader(t, record_defaults=[0])
    m = str(e.value)
    assert "raw" in m and "binary" in m and "int32" in m
    assert e.value.column == "raw" and e.value.target == "int32"


def test_unconvertible_value_names_column_row_and_types(wh):
    t = wh.table("txt", "v string", ["v"], [("1",), ("2",), ("x",)])
    r = TableReader(t, record_defaults=[np.int64(0)])
    with pytest.raises(paiio.ConversionError) as e:
        r.read(3)
    m = str(e.value)
    assert "`v`" in m and "string" in m and "int64" in m and "row 2" in m
    assert e.value.row == 2


def test_bad_record_default_type(t):
    with pytest.raises(paiio.InvalidArgumentError, match="entry 1"):
        TableReader(t, record_defaults=[0, object()])
    with pytest.raises(paiio.InvalidArgumentError, match="one-element"):
        TableReader(t, record_defaults=[0, [1, 2]])


def test_native_reader_arguments(t):
    with pytest.raises(TypeError):
        _native.Reader(t, no_such_option=1)
    with pytest.raises(paiio.InvalidArgumentError):
        _native.Reader(t, record_defaults=[("int8", 0), ("string", "")])
    with pytest.raises(paiio.InvalidArgumentError, match="not a saved state"):
        _native.Reader(t).restore("{}")


def test_restore_checks_the_table(wh, t):
    other = wh.table("other", "a bigint, b string", ["a", "b"], [(1, "x"), (2, "y")])
    state = TableReader(t).state()
    with pytest.raises(paiio.InvalidArgumentError, match="tables"):
        TableReader(other).restore(state)
