"""`odps.maxstorage` (V2): read sessions in Size and RowOffset modes, the Arrow reader with no,
zstd and lz4 compression, preview, batch writes with the Arrow writer, uploads surviving a dropped
connection in the default and the exactly-once write mode, exactly-once resume, commit, abort, and
blobs."""
import pyarrow as pa
import pytest

from conftest import PROJECT

ROWS = 5000


@pytest.fixture(scope="module")
def client(odps_entry):
    from odps.maxstorage import MaxStorageClient
    return MaxStorageClient(odps=odps_entry)


@pytest.fixture(scope="module")
def table(server):
    server.create_table("ms_t", "id bigint, name string, price double, flag boolean", "pt string")
    for pt, ids in (("a", range(0, ROWS // 2)), ("b", range(ROWS // 2, ROWS))):
        server.import_rows(f"odps://{PROJECT}/tables/ms_t/pt={pt}", ["id", "name", "price", "flag"],
                           [(i, f"n{i}", i / 4, "true" if i % 2 else "false") for i in ids])
    return "ms_t"


def read_session_ids(session, **reader_options):
    ids = []
    for split in session.splits:
        for batch in session.open_arrow_reader(split, **reader_options):
            ids.extend(batch.column("id").to_pylist())
    return ids


@pytest.mark.parametrize("compress_algo", [None, "zstd", "lz4"])
def test_size_mode(client, table, compress_algo):
    from odps.maxstorage import SplitMode, SplitOptions
    session = client.create_table_read_session(
        table, split_options=SplitOptions(split_mode=SplitMode.SIZE, split_number=16 * 1024))
    assert len(session.splits) > 1, "a 16 KiB split size should give several splits"
    options = {"compress_algo": compress_algo} if compress_algo else {}
    assert sorted(read_session_ids(session, **options)) == list(range(ROWS))


@pytest.mark.parametrize("compress_algo", [None, "zstd", "lz4"])
def test_row_offset_mode(client, table, compress_algo):
    from odps.maxstorage import SplitMode, SplitOptions
    session = client.create_table_read_session(
        table, split_options=SplitOptions(split_mode=SplitMode.ROW_OFFSET, split_number=700))
    assert session.record_count == ROWS
    assert len(session.splits) == (ROWS + 699) // 700
    options = {"compress_algo": compress_algo} if compress_algo else {}
    assert sorted(read_session_ids(session, **options)) == list(range(ROWS))


def test_columns_partitions_and_batch_size(client, table):
    session = client.create_table_read_session(table, columns=["price", "id"], partitions=["pt=b"],
                                               partition_columns=["pt"])
    batches = [b for s in session.splits for b in session.open_arrow_reader(s, max_batch_rows=100)]
    assert all(b.num_rows <= 100 for b in batches)
    t = pa.Table.from_batches(batches)
    assert t.column_names == ["price", "id", "pt"]
    assert sorted(t.column("id").to_pylist()) == list(range(ROWS // 2, ROWS))
    assert set(t.column("pt").to_pylist()) == {"b"}


def test_preview(client, table):
    reader = client.preview_table(table, limit=7)
    rows = sum(b.num_rows for b in reader)
    assert rows == 7


def test_batch_write_commit_and_abort(client, server):
    server.create_table("ms_w", "id bigint, name string", "pt string")
    session = client.create_table_write_session("ms_w", partition_spec="pt=x")
    for stream in range(2):
        writer = session.open_arrow_writer(stream)
        writer.write_batch(pa.record_batch([pa.array([stream * 10 + i for i in range(10)], pa.int64()),
                                            pa.array([f"s{stream}"] * 10)], names=["id", "name"]))
        writer.close()
    before = client.create_table_read_session("ms_w")
    assert before.record_count in (0, -1) and not read_session_ids(before)
    session.commit()
    after = client.create_table_read_session("ms_w", partitions=["pt=x"])
    assert sorted(read_session_ids(after)) == list(range(10)) + list(range(10, 20))

    aborted = client.create_table_write_session("ms_w", partition_spec="pt=y")
    writer = aborted.open_arrow_writer(0)
    writer.write_batch(pa.record_batch([pa.array([99], pa.int64()), pa.array(["z"])],
                                       names=["id", "name"]))
    writer.close()
    aborted.abort()
    assert not read_session_ids(client.create_table_read_session("ms_w", partitions=["pt=y"]))


@pytest.mark.parametrize("fault", ["response_lost", "reset"])
@pytest.mark.parametrize("exactly_once", [False, True], ids=["default", "exactly_once"])
def test_write_survives_a_dropped_connection(client, server, exactly_once, fault):
    """F1/F7/F8: an upload whose connection drops is retried by PyODPS with the same
    `odps-tunnel-retry-trace-id` and a higher `odps-tunnel-retry-index`; its rows are
    committed exactly once, in the default write mode (no row offsets) as in exactly-once
    mode."""
    mode = "eo" if exactly_once else "default"
    name = f"ms_{mode}_{fault}"
    server.create_table(name, "id bigint")
    session = client.create_table_write_session(name)
    writer = session.open_arrow_writer(0, exactly_once_mode=exactly_once)
    # The 2nd upload is dropped: after the server applied it (response_lost) or before (reset).
    server.faults({"actions": ["TableWrite"], "fault": {"kind": fault}, "when": {"nth": 2}})
    for flush in range(4):
        writer.write_batch(pa.record_batch([pa.array(range(flush * 100, flush * 100 + 100), pa.int64())],
                                           names=["id"]))
        writer.flush()
    stats = server.admin("GET", "/__paiio/faults")
    assert stats["counters"].get(fault) == 1, f"the {fault} fault should have fired once: {stats}"
    assert stats["rules"][0]["seen"] == 5, f"4 uploads and one retry: {stats}"
    if exactly_once:
        assert writer.get_row_offset() == 400
    writer.close()
    session.commit()
    ids = read_session_ids(client.create_table_read_session(name))
    assert len(ids) == 400 and sorted(ids) == list(range(400)), "every row exactly once"


def test_exactly_once_resume_in_a_new_writer(client, server):
    server.create_table("ms_resume", "id bigint")
    session = client.create_table_write_session("ms_resume")
    first = session.open_arrow_writer(0, exactly_once_mode=True)
    first.write_batch(pa.record_batch([pa.array(range(50), pa.int64())], names=["id"]))
    first.flush()
    # The process "dies"; a new writer resumes the stream from the server's row offset.
    resumed = session.open_arrow_writer(0, exactly_once_mode=True, resume=True)
    assert resumed.get_row_offset() == 50
    resumed.write_batch(pa.record_batch([pa.array(range(50, 80), pa.int64())], names=["id"]))
    resumed.close()
    session.commit()
    assert sorted(read_session_ids(client.create_table_read_session("ms_resume"))) == list(range(80))


def test_commit_retried_after_lost_response(client, server):
    server.create_table("ms_commit_lost", "id bigint")
    session = client.create_table_write_session("ms_commit_lost")
    writer = session.open_arrow_writer(0)
    writer.write_batch(pa.record_batch([pa.array(range(10), pa.int64())], names=["id"]))
    writer.close()
    server.faults({"actions": ["TableCommitWriteSession"], "fault": {"kind": "response_lost"},
                   "when": {"nth": 1}})
    session.commit()
    assert sorted(read_session_ids(client.create_table_read_session("ms_commit_lost"))) == list(range(10))


@pytest.mark.parametrize("compress_algo", [None, "zstd", "lz4"])
def test_blob_upload_and_download(client, server, compress_algo):
    name = f"ms_blob_{compress_algo or 'plain'}"
    server.create_table(name, "id bigint, payload blob")
    session = client.create_table_write_session(name)
    manager = client.open_blob_manager(name)
    data = bytes(range(256)) * 1000
    options = {"compress_algo": compress_algo} if compress_algo else {}
    sw = manager.write_blob_stream(session.id, "0", column_name="payload", **options)
    sw.write(data[:100000])
    sw.write(data[100000:])
    single = sw.finish().blob_reference
    items = [manager.build_blob_write_item(f"item-{i}".encode() * (i + 1), session.id,
                                           column_name="payload") for i in range(3)]
    refs = manager.write_blob_batch(items, session.id, "1").blob_references
    assert len(refs) == 3
    assert manager.read_blob(single, **options).getvalue() == data
    got = [rec.data for rec in manager.read_blobs(refs, **options)]
    assert got == [f"item-{i}".encode() * (i + 1) for i in range(3)]
    session.abort()


def test_corrupted_blob_download_is_detected(client, server):
    """F5: a bit flipped on the wire fails the CRC32C check; corrupt data is never returned."""
    server.create_table("ms_blob_crc", "id bigint, payload blob")
    session = client.create_table_write_session("ms_blob_crc")
    manager = client.open_blob_manager("ms_blob_crc")
    items = [manager.build_blob_write_item(bytes([i]) * 5000, session.id, column_name="payload")
             for i in range(2)]
    refs = manager.write_blob_batch(items, session.id, "0").blob_references
    assert [r.data for r in manager.read_blobs(refs)] == [bytes([i]) * 5000 for i in range(2)]
    server.faults({"actions": ["BlobRead"], "fault": {"kind": "corrupt", "byte": 3000},
                   "when": {"nth": 1}})
    with pytest.raises(Exception) as info:
        got = [r.data for r in manager.read_blobs(refs)]
        assert got != [bytes([i]) * 5000 for i in range(2)], "corrupt data must not be delivered"
    assert "crc" in str(info.value).lower() or "checksum" in str(info.value).lower(), info.value
    session.abort()
