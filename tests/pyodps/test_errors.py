"""Failures raise the PyODPS exceptions the real service causes."""
import pytest

from conftest import ACCESS_ID, PROJECT


@pytest.fixture(scope="module")
def table(server):
    server.create_table("err_t", "id bigint")
    server.import_rows(f"odps://{PROJECT}/tables/err_t", ["id"], [(i,) for i in range(10)])
    return "err_t"


def test_wrong_key_raises_signature_not_match(server, table):
    from odps import ODPS, errors
    from odps.maxstorage import MaxStorageClient
    bad = ODPS(ACCESS_ID, "not-the-key", project=PROJECT, endpoint=server.endpoint)
    with pytest.raises(errors.SignatureNotMatch):
        MaxStorageClient(odps=bad).create_table_read_session(table)


def test_unknown_access_id_is_refused(server, table):
    from odps import ODPS, errors
    from odps.maxstorage import MaxStorageClient
    bad = ODPS("someone-else", "whatever", project=PROJECT, endpoint=server.endpoint)
    with pytest.raises(errors.SignatureNotMatch):
        MaxStorageClient(odps=bad).create_table_read_session(table)


def test_unknown_table_raises_no_such_table(odps_entry):
    from odps import errors
    from odps.maxstorage import MaxStorageClient
    with pytest.raises(errors.NoSuchTable):
        MaxStorageClient(odps=odps_entry).create_table_read_session("no_such_table")


def test_unknown_table_v1_raises_no_such_table(odps_entry):
    from odps import errors
    from odps.apis.storage_api import StorageApiArrowClient, TableBatchScanRequest
    client = StorageApiArrowClient(odps=odps_entry, table=odps_entry.get_table("no_such_table"))
    with pytest.raises(errors.NoSuchTable):
        client.create_read_session(TableBatchScanRequest())


def test_expired_session_fails_to_read(server, odps_entry, table):
    from odps import errors
    from odps.maxstorage import MaxStorageClient
    client = MaxStorageClient(odps=odps_entry)
    session = client.create_table_read_session(table)
    server.admin("POST", "/__paiio/clock/advance", {"ms": 48 * 3600 * 1000})
    with pytest.raises(errors.ODPSError) as info:
        for split in session.splits:
            list(session.open_arrow_reader(split))
    assert "expired" in str(info.value).lower()
    # A new session works.
    fresh = client.create_table_read_session(table)
    assert sum(b.num_rows for s in fresh.splits for b in fresh.open_arrow_reader(s)) == 10
