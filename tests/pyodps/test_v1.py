"""V1 (`odps.apis.storage_api`): the guide's complete example in both split modes, then a
write session, `write_rows_arrow`, commit, and read-back of what was written."""
import os
import re
import subprocess
import sys

import pyarrow as pa
import pytest

from conftest import ACCESS_ID, ACCESS_KEY, PROJECT

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python",
                       "storage_api_v1_example.py")
ROWS = 2500


@pytest.fixture(scope="module")
def seed_table(server):
    server.create_table("seed_t", "id bigint, name string, price double", "pt string")
    server.import_rows(f"odps://{PROJECT}/tables/seed_t/pt=test_write_1", ["id", "name", "price"],
                       [(i, f"name-{i}", i * 0.25) for i in range(ROWS)])
    server.import_rows(f"odps://{PROJECT}/tables/seed_t/pt=other", ["id", "name", "price"],
                       [(i, "x", 1.0) for i in range(7)])
    return "seed_t"


@pytest.mark.parametrize("mode", ["size", "row"])
def test_guide_example_runs_unchanged(server, seed_table, tmp_path, mode):
    with open(EXAMPLE) as f:
        text = f.read()
    for placeholder, value in {"<your-project>": PROJECT, "<your-endpoint>": server.endpoint,
                               "<table-name>": seed_table, "<quota-name>": ""}.items():
        assert placeholder in text
        text = text.replace(placeholder, value)
    script = tmp_path / "example.py"
    script.write_text(text)
    env = dict(os.environ, ALIBABA_CLOUD_ACCESS_KEY_ID=ACCESS_ID,
               ALIBABA_CLOUD_ACCESS_KEY_SECRET=ACCESS_KEY)
    out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    total = re.search(r"Total rows read: (\d+)", out.stderr)
    assert total, out.stderr
    # Row mode reads the whole partition; size mode reads split 0, which is all of this
    # small partition.
    assert int(total.group(1)) == ROWS


def _client(odps_entry, table):
    from odps.apis.storage_api import StorageApiArrowClient
    return StorageApiArrowClient(odps=odps_entry, table=odps_entry.get_table(table))


def _read_all(client, partitions=None):
    from odps.apis.storage_api import (ReadRowsRequest, SessionRequest, SplitOptions,
                                       Status, TableBatchScanRequest)
    req = TableBatchScanRequest(required_partitions=partitions or [])
    req.split_options = SplitOptions.get_default_options(SplitOptions.SplitMode.ROW_OFFSET)
    resp = client.create_read_session(req)
    assert resp.status == Status.OK
    reader = client.read_rows_arrow(ReadRowsRequest(session_id=resp.session_id, row_index=0,
                                                    row_count=resp.record_count))
    batches = []
    while True:
        b = reader.read()
        if b is None:
            break
        batches.append(b)
    assert reader.get_status() == Status.OK
    return pa.Table.from_batches(batches) if batches else None


def test_write_commit_and_read_back(server, odps_entry):
    from odps.apis.storage_api import (SessionRequest, SessionStatus, Status,
                                       TableBatchWriteRequest, WriteRowsRequest)
    server.create_table("v1_written", "id bigint, name string", "pt string")
    client = _client(odps_entry, "v1_written")
    resp = client.create_write_session(TableBatchWriteRequest(partition_spec="pt=w"))
    assert resp.status == Status.OK and resp.session_status == SessionStatus.NORMAL
    sid = resp.session_id
    messages = []
    for block in range(2):
        writer = client.write_rows_arrow(WriteRowsRequest(session_id=sid, block_number=block))
        batch = pa.record_batch([pa.array([block * 100 + i for i in range(50)], pa.int64()),
                                 pa.array([f"b{block}-{i}" for i in range(50)])],
                                names=["id", "name"])
        assert writer.write(batch)
        message, ok = writer.finish()
        assert ok, "finish() reported failure"
        messages.append(message)
    # Nothing is visible before the commit.
    assert _read_all(client, ["pt=w"]) is None or _read_all(client, ["pt=w"]).num_rows == 0
    commit = client.commit_write_session(SessionRequest(session_id=sid), messages)
    assert commit.status == Status.OK
    assert commit.session_status == SessionStatus.COMMITTED
    table = _read_all(client, ["pt=w"])
    assert sorted(table.column("id").to_pylist()) == sorted(
        [b * 100 + i for b in range(2) for i in range(50)])
    assert set(table.column("name").to_pylist()) == {f"b{b}-{i}" for b in range(2) for i in range(50)}


def test_only_listed_attempts_become_visible(server, odps_entry):
    from odps.apis.storage_api import (SessionRequest, Status, TableBatchWriteRequest,
                                       WriteRowsRequest)
    server.create_table("v1_attempts", "id bigint")
    client = _client(odps_entry, "v1_attempts")
    sid = client.create_write_session(TableBatchWriteRequest()).session_id
    chosen = []
    for attempt in range(2):
        writer = client.write_rows_arrow(
            WriteRowsRequest(session_id=sid, block_number=0, attempt_number=attempt))
        writer.write(pa.record_batch([pa.array([attempt * 10 + i for i in range(3)], pa.int64())],
                                     names=["id"]))
        message, ok = writer.finish()
        assert ok
        if attempt == 1:
            chosen.append(message)
    assert client.commit_write_session(SessionRequest(session_id=sid), chosen).status == Status.OK
    assert sorted(_read_all(client).column("id").to_pylist()) == [10, 11, 12]
