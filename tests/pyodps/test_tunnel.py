"""The MaxCompute Tunnel as the released PyODPS (0.13.2) uses it, against `paiio serve
--tunnel-only` (a public endpoint: no Storage API): table metadata, `o.read_table`,
`t.open_reader` (records and Arrow, columns, ranges, partitions), `o.write_table`,
`t.open_writer` (records and Arrow, blocks, partitions, create_partition), the sessions of
`TableTunnel` directly, every compression PyODPS offers, its errors, and faults: lost answers
on a block upload and on the commit leave the rows committed exactly once, and a download cut
mid-stream is resumed without losing or repeating a row."""
import decimal
import os

import pyarrow as pa
import pytest

from conftest import ACCESS_ID, ACCESS_KEY, PROJECT, Server

ROWS = 1200
COMPRESSIONS = ["ZLIB", "ZSTD", "LZ4", "SNAPPY"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("pyodps-tunnel"))
    s = Server(os.path.join(tmp, "warehouse"), tmp, "--tunnel-only")
    s.create_table("tt", "id bigint, name string, price double, flag boolean")
    s.import_rows(f"odps://{PROJECT}/tables/tt", ["id", "name", "price", "flag"],
                  [(i, f"name-{i}", i * 0.5, "true" if i % 2 else "false") for i in range(ROWS)])
    s.create_table("pt", "id bigint, name string", "pt string, region string")
    for pt, region, n in [("1", "a", 5), ("1", "b", 3), ("2", "a", 4)]:
        s.import_rows(f"odps://{PROJECT}/tables/pt/pt={pt}/region={region}", ["id", "name"],
                      [(i, f"{pt}{region}{i}") for i in range(n)])
    yield s
    s.stop()


@pytest.fixture
def odps(server):
    from odps import ODPS
    return ODPS(ACCESS_ID, ACCESS_KEY, project=PROJECT, endpoint=server.endpoint)


def tunnel(odps, algo=None):
    from odps.tunnel import CompressOption, TableTunnel
    option = CompressOption(compress_algo=algo) if algo else None
    return TableTunnel(odps), option


def rows_of(odps, table, partition=None):
    with odps.get_table(table).open_reader(partition=partition, reopen=True) as r:
        return sorted(tuple(rec.values) for rec in r)


def test_the_storage_api_is_not_served(server, odps):
    from odps import errors
    from odps.apis.storage_api import StorageApiArrowClient, TableBatchScanRequest
    client = StorageApiArrowClient(odps=odps, table=odps.get_table("tt"))
    with pytest.raises(errors.ODPSError):
        client.create_read_session(TableBatchScanRequest())


def test_table_metadata(odps):
    t = odps.get_table("pt")
    schema = t.table_schema
    assert [c.name for c in schema.simple_columns] == ["id", "name"]
    assert [str(c.type).lower() for c in schema.simple_columns] == ["bigint", "string"]
    assert [c.name for c in schema.partitions] == ["pt", "region"]
    assert odps.exist_table("pt") and odps.exist_table("tt")
    assert not odps.exist_table("no_such_table")
    assert sorted(str(p.partition_spec) for p in t.partitions) == [
        "pt='1',region='a'", "pt='1',region='b'", "pt='2',region='a'"]
    # The listing is filtered by a prefix on the server.
    assert sorted(str(p.partition_spec) for p in t.iterate_partitions("pt=1")) == [
        "pt='1',region='a'", "pt='1',region='b'"]
    assert t.exist_partition("pt=1,region=b")
    assert not t.exist_partition("pt=9,region=b")
    assert t.get_partition("pt=2,region=a").record_num == 4
    assert odps.exist_project(PROJECT)


def test_read_table_and_open_reader(odps):
    got = list(odps.read_table("tt"))
    assert [r["id"] for r in got] == list(range(ROWS))
    assert got[7].values == [7, "name-7", 3.5, True]
    t = odps.get_table("tt")
    with t.open_reader() as r:
        assert r.count == ROWS
        assert [rec["id"] for rec in r[100:105]] == list(range(100, 105))
        assert [rec.values for rec in r.read(start=3, count=2, columns=["price", "id"])] == [
            [1.5, 3], [2.0, 4]]
    # Partitions: the data columns come from the server, the partition values from PyODPS.
    assert rows_of(odps, "pt", "pt=1,region=b") == [(i, f"1b{i}", "1", "b") for i in range(3)]


def test_open_reader_arrow(odps):
    t = odps.get_table("tt")
    with t.open_reader(arrow=True, columns=["name", "id"]) as r:
        table = pa.Table.from_batches(list(r))
    assert table.num_rows == ROWS
    assert sorted(table.column_names) == ["id", "name"]
    assert table.column("id").to_pylist() == list(range(ROWS))
    with t.open_reader(arrow=True) as r:
        part = r.read_all() if hasattr(r, "read_all") else pa.Table.from_batches(list(r))
    assert part.column("flag").to_pylist()[:3] == [False, True, False]
    with odps.get_table("pt").open_reader(partition="pt=2,region=a", arrow=True) as r:
        assert pa.Table.from_batches(list(r)).column("name").to_pylist() == [
            f"2a{i}" for i in range(4)]


@pytest.mark.parametrize("algo", COMPRESSIONS)
def test_every_compression_reads_and_writes(server, odps, algo):
    tt, option = tunnel(odps, algo)
    session = tt.create_download_session("tt", compress_option=option)
    with session.open_record_reader(0, session.count, compress=True) as r:
        assert [rec[0] for rec in r] == list(range(ROWS))
    with session.open_arrow_reader(10, 20, compress=True) as r:
        assert pa.Table.from_batches(list(r)).column("id").to_pylist() == list(range(10, 30))
    name = f"w_{algo.lower()}"
    odps.create_table(name, "id bigint, name string", if_not_exists=True)
    up = tt.create_upload_session(name, compress_option=option)
    with up.open_record_writer(0, compress=True) as w:
        for i in range(50):
            w.write(up.new_record([i, f"r{i}"]))
    with up.open_arrow_writer(1, compress=True) as w:
        w.write(pa.record_batch([pa.array(range(50, 80), pa.int64()),
                                 pa.array([f"r{i}" for i in range(50, 80)])], names=["id", "name"]))
    up.commit([0, 1])
    assert rows_of(odps, name) == [(i, f"r{i}") for i in range(80)]


def test_write_table_creates_the_partition(odps):
    t = odps.get_table("pt")
    assert not t.exist_partition("pt=3,region=z")
    odps.write_table("pt", [[1, "x"], [2, "y"]], partition="pt=3,region=z", create_partition=True)
    assert t.exist_partition("pt=3,region=z")
    assert rows_of(odps, "pt", "pt=3,region=z") == [(1, "x", "3", "z"), (2, "y", "3", "z")]
    # Without create_partition a missing partition is refused, and nothing is written.
    from odps import errors
    with pytest.raises(errors.ODPSError) as info:
        odps.write_table("pt", [[1, "x"]], partition="pt=4,region=z")
    assert "NoSuchPartition" in str(info.value) or "no partition" in str(info.value)
    assert not t.exist_partition("pt=4,region=z")


def test_open_writer_blocks_arrow_and_overwrite(server, odps):
    server.create_table("wb", "id bigint, name string")
    t = odps.get_table("wb")
    with t.open_writer(blocks=[0, 1]) as w:
        w.write(0, [[0, "a"], [1, "b"]])
        w.write(1, [[2, "c"]])
    with t.open_writer(arrow=True) as w:
        w.write(pa.record_batch([pa.array([3, 4], pa.int64()), pa.array(["d", "e"])],
                                names=["id", "name"]))
    assert rows_of(odps, "wb") == [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")]
    with t.open_writer(overwrite=True) as w:
        w.write([[9, "z"]])
    assert rows_of(odps, "wb") == [(9, "z")]


def test_partitions_are_created_and_dropped(odps):
    t = odps.get_table("pt")
    t.create_partition("pt=7,region=q")
    assert t.exist_partition("pt=7,region=q")
    assert rows_of(odps, "pt", "pt=7,region=q") == []
    t.create_partition("pt=7,region=q", if_not_exists=True)
    from odps import errors
    with pytest.raises(errors.ODPSError):
        t.create_partition("pt=7,region=q")
    t.delete_partition("pt=7,region=q")
    assert not t.exist_partition("pt=7,region=q")
    with pytest.raises(errors.ODPSError):
        t.delete_partition("pt=7,region=q")
    t.delete_partition("pt=7,region=q", if_exists=True)


def test_tables_are_created_and_dropped(odps):
    from odps import errors
    from odps.models import Column, Partition, TableSchema
    schema = TableSchema(columns=[Column(name="id", type="bigint", comment="the id"),
                                  Column(name="tags", type="array<string>"),
                                  Column(name="price", type="decimal(10,2)")],
                         partitions=[Partition(name="ds", type="string")])
    t = odps.create_table("made", schema, lifecycle=7, comment="made by PyODPS")
    assert odps.exist_table("made")
    t = odps.get_table("made")
    assert [c.name for c in t.table_schema.simple_columns] == ["id", "tags", "price"]
    assert str(t.table_schema.columns[1].type).lower() == "array<string>"
    assert [c.name for c in t.table_schema.partitions] == ["ds"]
    odps.write_table("made", [[1, ["a"], decimal.Decimal("1.25")]], partition="ds=x",
                     create_partition=True)
    assert rows_of(odps, "made", "ds=x") == [(1, ["a"], decimal.Decimal("1.25"), "x")]
    with pytest.raises(errors.ODPSError):
        odps.create_table("made", "id bigint")
    odps.create_table("made", "id bigint", if_not_exists=True)
    odps.delete_table("made")
    assert not odps.exist_table("made")
    odps.delete_table("made", if_exists=True)
    with pytest.raises(errors.ODPSError) as info:
        odps.execute_sql("SELECT 1")
    assert "runs only" in str(info.value)


def test_tunnel_sessions_directly(odps):
    tt, _ = tunnel(odps)
    up = tt.create_upload_session("pt", partition_spec="pt=8,region=n", create_partition=True)
    with up.open_record_writer(0) as w:
        w.write(up.new_record([1, "n1"]))
    up.commit([0])
    down = tt.create_download_session("pt", partition_spec="pt=8,region=n")
    assert down.count == 1
    again = tt.create_download_session("pt", partition_spec="pt=8,region=n", download_id=down.id)
    with again.open_record_reader(0, 1) as r:
        assert [rec.values[:2] for rec in r] == [[1, "n1"]]


def test_errors(server, odps):
    from odps import ODPS, errors
    from odps.tunnel import TableTunnel
    with pytest.raises(errors.NoSuchTable):
        list(odps.read_table("no_such_table"))
    tt = TableTunnel(odps)
    with pytest.raises(errors.ODPSError) as info:
        tt.create_download_session("pt", partition_spec="pt=9,region=none")
    assert "NoSuchPartition" in str(info.value) or "no partition" in str(info.value)
    with pytest.raises(errors.ODPSError) as info:
        tt.create_download_session("pt")
    assert "partitioned" in str(info.value)
    session = tt.create_download_session("tt")
    with pytest.raises(errors.ODPSError) as info:
        with session.open_record_reader(ROWS - 1, 5) as r:
            list(r)
    assert "rowrange" in str(info.value)
    bad = ODPS(ACCESS_ID, "not-the-key", project=PROJECT, endpoint=server.endpoint)
    with pytest.raises(errors.ODPSError):
        TableTunnel(bad).create_download_session("tt")
    server.admin("POST", "/__paiio/clock/advance", {"ms": 48 * 3600 * 1000})
    with pytest.raises(errors.ODPSError) as info:
        with session.open_record_reader(0, 5) as r:
            list(r)
    assert "expired" in str(info.value).lower()


@pytest.mark.parametrize("call", ["TunnelWriteBlock", "TunnelCommit"])
def test_lost_answers_commit_rows_exactly_once(server, odps, call):
    name = f"lost_{call.lower()}"
    server.create_table(name, "id bigint")
    server.faults({"actions": [call], "fault": {"kind": "response_lost"}, "when": {"nth": 1}})
    with odps.get_table(name).open_writer() as w:
        w.write([[i] for i in range(100)])
    stats = server.admin("GET", "/__paiio/faults")
    assert stats["counters"].get("response_lost") == 1, stats
    assert rows_of(odps, name) == [(i,) for i in range(100)]


def test_a_cut_download_is_resumed_or_refused_never_short(server, odps):
    cut = {"actions": ["TunnelRead"], "fault": {"kind": "reset_after", "bytes": 5000},
           "when": {"nth": 1}}
    # PyODPS's Arrow reader reopens the range at the next row: every row, once.
    server.faults(cut)
    with odps.get_table("tt").open_reader(arrow=True, reopen=True) as r:
        ids = pa.Table.from_batches(list(r)).column("id").to_pylist()
    assert server.admin("GET", "/__paiio/faults")["counters"].get("reset_after") == 1
    assert ids == list(range(ROWS))
    # Its record reader gives up, with an error: the cut is never taken for the end.
    server.faults(cut)
    got = []
    with pytest.raises(Exception) as info:
        with odps.get_table("tt").open_reader(reopen=True) as r:
            for rec in r:
                got.append(rec["id"])
    assert "IncompleteRead" in repr(info.value) or "Connection" in repr(info.value), info.value
    assert got == list(range(len(got))) and len(got) < ROWS
