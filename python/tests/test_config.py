"""COMPAT "Configuration": ODPS_CONFIG_FILE_PATH read lazily, its spellings, the variables."""
import subprocess
import sys

import pytest

from paiio.python_io import TableReader

from conftest import ACCESS_ID, ACCESS_KEY


@pytest.fixture(scope="module")
def served_table(server):
    server.table("cfg", "id bigint", ["id"], [(1,), (2,), (3,)])
    return "odps://myproject/tables/cfg"


def test_config_is_read_when_the_reader_is_created(served_table, served, monkeypatch):
    # A script sets the variable right before creating the reader, after `import paiio`.
    code = (
        "import os, paiio\n"
        "os.environ['ODPS_CONFIG_FILE_PATH'] = {path!r}\n"
        "r = paiio.python_io.TableReader({table!r})\n"
        "assert r.get_row_count() == 3, r.get_row_count()\n"
        "print('ok')\n"
    ).format(path=served.config, table=served_table)
    monkeypatch.delenv("ODPS_CONFIG_FILE_PATH")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_config_changes_between_readers(served_table, served, wh, monkeypatch):
    # wh made the local warehouse the default (and cleared the variable); no table there.
    with pytest.raises(FileNotFoundError):
        TableReader(served_table)
    monkeypatch.setenv("ODPS_CONFIG_FILE_PATH", served.config)
    assert TableReader(served_table).get_row_count() == 3


@pytest.mark.parametrize("text", [
    "access_id={id}\naccess_key={key}\nend_point={ep}\n",
    "[odps]\naccess_id = {id}\naccess_key = {key}\nend_point = {ep}\n",
    "access_id={id}\naccess_key={key}\nodps_endpoint={ep}\n",
])
def test_config_file_spellings(served_table, served, tmp_path, monkeypatch, text):
    path = tmp_path / "odps.ini"
    path.write_text(text.format(id=ACCESS_ID, key=ACCESS_KEY, ep=served.endpoint))
    monkeypatch.setenv("ODPS_CONFIG_FILE_PATH", str(path))
    assert TableReader(served_table).read(3)["id"].tolist() == [1, 2, 3]


def test_environment_variables_without_a_file(served_table, served, monkeypatch):
    monkeypatch.delenv("ODPS_CONFIG_FILE_PATH")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", ACCESS_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ACCESS_KEY)
    monkeypatch.setenv("ODPS_ENDPOINT", served.endpoint)
    assert TableReader(served_table).get_row_count() == 3


def test_wrong_key_is_an_auth_error(served_table, served, tmp_path, monkeypatch):
    import paiio

    path = tmp_path / "bad.ini"
    path.write_text(f"access_id={ACCESS_ID}\naccess_key=wrong\nend_point={served.endpoint}\n")
    monkeypatch.setenv("ODPS_CONFIG_FILE_PATH", str(path))
    with pytest.raises(paiio.AuthError) as e:
        TableReader(served_table)
    assert isinstance(e.value, PermissionError)


def test_local_warehouse_through_the_config_file(wh, tmp_path, monkeypatch):
    wh.table("loc", "id bigint", ["id"], [(5,)])
    path = tmp_path / "local.ini"
    path.write_text(f"end_point={wh.root}\n")
    monkeypatch.delenv("PAIIO_WAREHOUSE")
    monkeypatch.setenv("ODPS_CONFIG_FILE_PATH", str(path))
    assert TableReader("odps://myproject/tables/loc").read()[0]["id"] == 5
