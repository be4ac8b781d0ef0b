//! The Tunnel client backend (`paiio_storage::rest::TunnelClient`) against the in-process
//! server's Tunnel: round trips of every type, partitioned tables, parallel and resumed
//! reads, replayed blocks and lost commit answers, and the choice of transport.
//!
//! Every call (the ODPS metadata calls and tunnel discovery included) goes over HTTP to the
//! real server, signed and checked.

use futures::TryStreamExt;
use paiio_conformance::datagen::{DataGen, assert_exactly_once, ids};
use paiio_server::{Fault, FaultPlan, FaultRule, When};
use paiio_storage::auth::Credentials;
use paiio_storage::rest::{ReadFormat, RestClient, RetryConfig, TunnelClient};
use paiio_storage::{
    Column, PartitionSpec, ReadRange, ReadRequest, ReadSessionRequest, SplitOptions, TableId,
    TableSchema, TableService, WriteRequest, WriteSessionRequest,
};
use paiio_tests::{
    ACCESS_ID, ACCESS_KEY, PROJECT, TestServer, fast_retry, row_offset_request, tunnel_client,
    write_request,
};

struct Env {
    server: TestServer,
    /// The server's ODPS endpoint.
    endpoint: String,
}

impl Env {
    async fn start() -> Env {
        let server = TestServer::start().await;
        let endpoint = server.handle.endpoint();
        Env { server, endpoint }
    }

    fn client_with(&self, retry: RetryConfig) -> TunnelClient {
        tunnel_client(&self.server, &self.endpoint, retry)
    }

    fn client(&self) -> TunnelClient {
        self.client_with(fast_retry())
    }

    async fn table(&self, name: &str, g: &DataGen, partitions: &[(&str, &str)]) -> TableId {
        let table = TableId::new(PROJECT, None, name).unwrap();
        let cols = partitions
            .iter()
            .map(|(n, t)| Column::new(*n, t.parse().unwrap()))
            .collect();
        self.server
            .warehouse
            .create_table(&table, &g.table_schema(cols), Default::default())
            .await
            .unwrap();
        table
    }

    fn faults(&self, rules: Vec<FaultRule>) {
        let mut plan = FaultPlan::new().seed(7);
        for r in rules {
            plan = plan.rule(r);
        }
        self.server.faults.set(plan).unwrap();
    }

    /// How many requests of a Tunnel call the server saw since `count` was set up (a rule
    /// that never fires counts them).
    fn count(&self, call: &str) {
        self.faults(vec![
            FaultRule::new(Fault::Reset, When::Nth(u64::MAX)).action(call),
        ]);
    }

    /// How often the first rule fired.
    fn seen_fired(&self) -> u64 {
        let status = self.server.faults.status();
        status["faults"]["rules"][0]["fired"]
            .as_u64()
            .or_else(|| status["rules"][0]["fired"].as_u64())
            .unwrap_or_else(|| panic!("no count in {status}"))
    }

    fn seen(&self) -> u64 {
        self.server.faults.status()["faults"]["rules"][0]["seen"]
            .as_u64()
            .or_else(|| self.server.faults.status()["rules"][0]["seen"].as_u64())
            .unwrap_or_else(|| panic!("no count in {}", self.server.faults.status()))
    }
}

/// Writes `batches` as one stream of a fresh session on `partition` and commits.
async fn write_commit(
    c: &TunnelClient,
    table: &TableId,
    partition: &str,
    batches: Vec<arrow_array::RecordBatch>,
) -> u64 {
    let mut request = WriteSessionRequest::new(table.clone());
    request.partition = PartitionSpec::parse(partition).unwrap();
    let session = c.create_write_session(&request).await.unwrap();
    let sid = &session.session_id;
    let stream = c
        .create_write_stream(table, sid, None, false)
        .await
        .unwrap();
    for batch in batches {
        c.write(write_request(table, sid, &stream, vec![batch]))
            .await
            .unwrap();
    }
    c.close_write_stream(table, sid, &stream.stream_id, stream.version)
        .await
        .unwrap();
    c.commit_write_session(table, sid, None).await.unwrap().rows
}

async fn read_range(
    c: &TunnelClient,
    table: &TableId,
    session_id: &str,
    offset: u64,
    count: u64,
    max_batch_rows: usize,
) -> paiio_storage::Result<Vec<arrow_array::RecordBatch>> {
    let mut r = ReadRequest::new(table.clone(), session_id, ReadRange::Rows { offset, count });
    r.max_batch_rows = max_batch_rows;
    c.read(&r).await?.try_collect().await
}

async fn read_all(c: &TunnelClient, table: &TableId) -> Vec<arrow_array::RecordBatch> {
    let request = row_offset_request(table);
    let s = c.create_read_session(&request).await.unwrap();
    read_range(c, table, &s.session_id, 0, s.record_count as u64, 4096)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_type_round_trips_through_the_tunnel() {
    let env = Env::start().await;
    let c = env.client();
    let g = DataGen::all_types(11);
    let table = env.table("all_types", &g, &[]).await;
    // Written over the Tunnel, read back over the Tunnel and from the warehouse.
    let rows = write_commit(&c, &table, "", g.batches(0..300, 70)).await;
    assert_eq!(rows, 300);
    for format in [ReadFormat::Auto, ReadFormat::Arrow, ReadFormat::Records] {
        let batches = read_all(&c.clone().read_format(format), &table).await;
        let what = format!("tunnel read as {format:?}");
        assert_exactly_once(&g.verified_ids(&batches, &what), 0..300, &what);
    }
    let local = paiio_conformance::Backend::new(env.server.warehouse.clone(), PROJECT)
        .read_table(&table)
        .await;
    assert_exactly_once(
        &g.verified_ids(&local, "warehouse read"),
        0..300,
        "warehouse",
    );
    // Written by the warehouse, read over the Tunnel.
    let g2 = DataGen::all_types(12);
    let t2 = env.table("all_types_local", &g2, &[]).await;
    paiio_conformance::Backend::new(env.server.warehouse.clone(), PROJECT)
        .write_and_commit(&t2, "", false, g2.batches(0..123, 50))
        .await;
    let batches = read_all(&c, &t2).await;
    assert_exactly_once(
        &g2.verified_ids(&batches, "tunnel read"),
        0..123,
        "tunnel read",
    );
    // A JSON column (not on PyODPS's Arrow path): read as records unless told otherwise.
    let mut id = Column::new("id", "bigint".parse().unwrap());
    id.nullable = false;
    let mut h = Column::new("h", "bigint".parse().unwrap());
    h.nullable = false;
    let gj = DataGen::new(vec![id, h, Column::new("j", "json".parse().unwrap())], 13);
    let tj = env.table("with_json", &gj, &[]).await;
    write_commit(&c, &tj, "", gj.batches(0..90, 40)).await;
    for format in [ReadFormat::Auto, ReadFormat::Records, ReadFormat::Arrow] {
        let batches = read_all(&c.clone().read_format(format), &tj).await;
        let what = format!("json as {format:?}");
        assert_exactly_once(&gj.verified_ids(&batches, &what), 0..90, &what);
    }
    // The metadata calls.
    let info = c.describe_table(&t2).await.unwrap();
    assert_eq!(info.row_count, 123);
    assert_eq!(info.schema, g2.table_schema(Vec::new()));
    assert_eq!(c.table_schema(&t2).await.unwrap(), info.schema);
    let missing = TableId::new(PROJECT, None, "no_such_table").unwrap();
    assert!(
        matches!(
            c.describe_table(&missing).await,
            Err(paiio_storage::Error::NotFound { .. })
        ),
        "a missing table is NotFound"
    );
}

#[tokio::test]
async fn partitioned_tables_read_as_one_row_space() {
    let env = Env::start().await;
    let c = env.client();
    let g = DataGen::simple(3);
    let table = env
        .table("parted", &g, &[("pt", "string"), ("region", "bigint")])
        .await;
    let layout = [
        ("pt=a,region=1", 0..40),
        ("pt=a,region=2", 40..45),
        ("pt=b,region=1", 45..100),
    ];
    for (spec, ids) in &layout {
        assert_eq!(
            write_commit(&c, &table, spec, vec![g.batch(ids.clone())]).await,
            ids.end as u64 - ids.start as u64
        );
    }
    let parts = c.list_partitions(&table).await.unwrap();
    assert_eq!(parts.len(), 3, "{parts:?}");
    let mut request = row_offset_request(&table);
    request.required_partition_columns = vec!["pt".into(), "region".into()];
    let s = c.create_read_session(&request).await.unwrap();
    assert_eq!(s.record_count, 100);
    assert_eq!(s.schema.partition_columns.len(), 2);
    let batches = read_range(&c, &table, &s.session_id, 0, 100, 17)
        .await
        .unwrap();
    assert!(batches.iter().all(|b| b.num_rows() <= 17));
    assert_exactly_once(&g.verified_ids(&batches, "all partitions"), 0..100, "all");
    // The partition values come with every row.
    for b in &batches {
        let pt = b.column_by_name("pt").unwrap();
        let pt = pt
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        let region = b
            .column_by_name("region")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        for (i, id) in ids(std::slice::from_ref(b)).into_iter().enumerate() {
            let (spec, _) = layout.iter().find(|(_, r)| r.contains(&id)).unwrap();
            let want = PartitionSpec::parse(spec).unwrap();
            assert_eq!(Some(pt.value(i)), want.get("pt"), "row {id}");
            assert_eq!(
                Some(region.value(i).to_string().as_str()),
                want.get("region"),
                "row {id}"
            );
        }
    }
    // A prefix filter, projection and reordering, a range across partitions.
    let mut request = row_offset_request(&table);
    request.required_partitions = vec![PartitionSpec::parse("pt=a").unwrap()];
    request.required_data_columns = vec!["s".into(), "id".into()];
    let s = c.create_read_session(&request).await.unwrap();
    assert_eq!(s.record_count, 45);
    let names: Vec<&str> = s.schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["s", "id"]);
    let batches = read_range(&c, &table, &s.session_id, 30, 15, 4096)
        .await
        .unwrap();
    assert_eq!(batches[0].schema().field(0).name(), "s");
    assert_eq!(batches[0].num_columns(), 2);
    assert_exactly_once(&ids(&batches), 30..45, "rows 30..45 of pt=a");
    // Dynamic partitions: a session on `pt=c` takes `region` from the data, one upload
    // session per partition it reaches.
    let mut request = WriteSessionRequest::new(table.clone());
    request.partition = PartitionSpec::parse("pt=c").unwrap();
    let session = c.create_write_session(&request).await.unwrap();
    let names: Vec<&str> = session
        .write_schema
        .partition_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["region"]);
    let sid = &session.session_id;
    let stream = c
        .create_write_stream(&table, sid, None, false)
        .await
        .unwrap();
    let batch = g.batch(100..130);
    let region: arrow_array::ArrayRef = std::sync::Arc::new(arrow_array::Int64Array::from(
        (100..130).map(|i| i % 3).collect::<Vec<i64>>(),
    ));
    let batch = paiio_conformance::datagen::with_columns(
        &batch,
        vec![(
            arrow_schema::Field::new("region", arrow_schema::DataType::Int64, true),
            region,
        )],
    );
    env.count("TunnelCreateUpload");
    c.write(write_request(&table, sid, &stream, vec![batch]))
        .await
        .unwrap();
    assert_eq!(env.seen(), 3, "one upload session per partition written");
    c.close_write_stream(&table, sid, &stream.stream_id, stream.version)
        .await
        .unwrap();
    assert_eq!(
        c.commit_write_session(&table, sid, None)
            .await
            .unwrap()
            .rows,
        30
    );
    let mut request = row_offset_request(&table);
    request.required_partitions = vec![PartitionSpec::parse("pt=c").unwrap()];
    request.required_partition_columns = vec!["region".into()];
    let s = c.create_read_session(&request).await.unwrap();
    let batches = read_range(&c, &table, &s.session_id, 0, 30, 4096)
        .await
        .unwrap();
    assert_exactly_once(&g.verified_ids(&batches, "pt=c"), 100..130, "pt=c");
    for b in &batches {
        let region = b
            .column_by_name("region")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        for (i, id) in ids(std::slice::from_ref(b)).into_iter().enumerate() {
            assert_eq!(region.value(i), id % 3, "row {id}");
        }
    }
    // A spec that skips a level is refused.
    let mut request = WriteSessionRequest::new(table.clone());
    request.partition = PartitionSpec::parse("region=1").unwrap();
    assert!(matches!(
        c.create_write_session(&request).await,
        Err(paiio_storage::Error::InvalidArgument { .. })
    ));
}

#[tokio::test]
async fn parallel_range_reads_and_sessions_reloaded_elsewhere() {
    let env = Env::start().await;
    let c = env.client();
    let g = DataGen::simple(5);
    let table = env.table("parallel", &g, &[("pt", "string")]).await;
    for (i, spec) in ["pt=1", "pt=2", "pt=3"].iter().enumerate() {
        let start = i as i64 * 700;
        write_commit(&c, &table, spec, g.batches(start..start + 700, 300)).await;
    }
    env.count("TunnelCreateDownload");
    let mut request = ReadSessionRequest::new(table.clone());
    request.split_options = SplitOptions::parallelism(7);
    let s = c.create_read_session(&request).await.unwrap();
    assert_eq!(env.seen(), 3, "one download session per partition");
    assert_eq!(s.splits_count, 7);
    // Another process: a fresh client reloads by DownloadID and creates no session.
    let other = env.client();
    env.count("TunnelCreateDownload");
    let again = other
        .get_read_session(&table, &s.session_id, false)
        .await
        .unwrap();
    assert_eq!(again.record_count, 2100);
    assert_eq!(again.splits_count, 7);
    let splits: Vec<_> = futures::future::join_all((0..7u64).map(|i| {
        let other = other.clone();
        let table = table.clone();
        let sid = s.session_id.clone();
        async move {
            let r = ReadRequest::new(table, sid, ReadRange::Split(i));
            other.read(&r).await?.try_collect::<Vec<_>>().await
        }
    }))
    .await;
    let all: Vec<_> = splits.into_iter().flat_map(|r| r.unwrap()).collect();
    assert_exactly_once(
        &g.verified_ids(&all, "7 splits"),
        0..2100,
        "7 parallel splits",
    );
    // Row ranges of a RowOffset session, read at once by a third client that never saw it.
    let request = row_offset_request(&table);
    let s = c.create_read_session(&request).await.unwrap();
    let third = env.client();
    let ranges: Vec<_> = (0..5u64)
        .map(|i| paiio_storage::split::balanced(2100, i, 5))
        .collect();
    let parts = futures::future::join_all(
        ranges
            .iter()
            .map(|r| read_range(&third, &table, &s.session_id, r.start, r.end - r.start, 333)),
    )
    .await;
    assert_eq!(env.seen(), 3, "only the RowOffset session created sessions");
    let all: Vec<_> = parts.into_iter().flat_map(|r| r.unwrap()).collect();
    assert_exactly_once(&ids(&all), 0..2100, "5 parallel ranges");
    // skip_rows and the bounds.
    let mut r = ReadRequest::new(
        table.clone(),
        &s.session_id,
        ReadRange::Rows {
            offset: 650,
            count: 100,
        },
    );
    r.skip_rows = 40;
    let b: Vec<_> = third.read(&r).await.unwrap().try_collect().await.unwrap();
    assert_exactly_once(&ids(&b), 690..750, "skip 40 of [650, 750)");
    assert!(matches!(
        read_range(&third, &table, &s.session_id, 2000, 101, 10).await,
        Err(paiio_storage::Error::OutOfRange { .. })
    ));
}

/// Download sessions are shared through a directory: another client (another process of the
/// job) reloads the sessions the first recorded and creates none; a commit to the table, or
/// the end of the sharing window, makes the next reader create fresh ones (with the new rows);
/// without the directory every reader creates its own.
#[tokio::test]
async fn download_sessions_are_shared_by_the_processes_of_a_job() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let shared = || env.client().share_sessions(Some(dir.path().to_path_buf()));
    let g = DataGen::simple(9);
    let table = env.table("shared", &g, &[("pt", "string")]).await;
    let writer = env.client();
    write_commit(&writer, &table, "pt=1", g.batches(0..100, 50)).await;
    write_commit(&writer, &table, "pt=2", g.batches(100..200, 50)).await;
    let later = |ms| env.server.clock.advance_ms(ms);
    later(2_000);
    let request = row_offset_request(&table);
    let rows_of = |c: TunnelClient| {
        let request = request.clone();
        let table = table.clone();
        async move {
            let s = c.create_read_session(&request).await.unwrap();
            let batches = read_range(&c, &table, &s.session_id, 0, s.record_count as u64, 64)
                .await
                .unwrap();
            ids(&batches)
        }
    };
    env.count("TunnelCreateDownload");
    assert_exactly_once(&rows_of(shared()).await, 0..200, "the first process");
    assert_eq!(env.seen(), 2, "one download session per partition");
    assert_exactly_once(&rows_of(shared()).await, 0..200, "a second process");
    assert_eq!(env.seen(), 2, "the second process creates none");
    // A commit after the sessions were made: the next reader gets fresh ones, and the rows.
    later(1_000);
    write_commit(&writer, &table, "pt=1", g.batches(200..250, 50)).await;
    later(2_000);
    assert_exactly_once(&rows_of(shared()).await, 0..250, "after a commit");
    assert_eq!(env.seen(), 4, "fresh sessions after the table changed");
    assert_exactly_once(&rows_of(shared()).await, 0..250, "shared again");
    assert_eq!(env.seen(), 4);
    // Past the window, or without the directory, sessions are created again.
    later(paiio_storage::rest::TUNNEL_SHARE_WINDOW_MS);
    assert_exactly_once(&rows_of(shared()).await, 0..250, "past the window");
    assert_eq!(env.seen(), 6);
    assert_exactly_once(&rows_of(env.client()).await, 0..250, "not shared");
    assert_eq!(env.seen(), 8);
}

#[tokio::test]
async fn cut_and_empty_bodies_resume_at_the_next_row() {
    let env = Env::start().await;
    let c = env.client_with(RetryConfig {
        max_retries: 8,
        ..fast_retry()
    });
    let g = DataGen::simple(9);
    let table = env.table("resume", &g, &[("pt", "string")]).await;
    write_commit(&c, &table, "pt=x", g.batches(0..3000, 500)).await;
    write_commit(&c, &table, "pt=y", g.batches(3000..5000, 500)).await;
    let request = row_offset_request(&table);
    let s = c.create_read_session(&request).await.unwrap();
    for (name, fault) in [
        ("reset", Fault::ResetAfter { bytes: 70_000 }),
        ("clean cut", Fault::Truncate { bytes: 90_000 }),
        ("empty 200", Fault::Truncate { bytes: 0 }),
        ("cut in the first chunk", Fault::Truncate { bytes: 1000 }),
        (
            "503",
            Fault::Status {
                status: 503,
                retry_after: None,
                code: None,
                message: None,
            },
        ),
    ] {
        env.faults(vec![
            FaultRule::new(fault, When::Next(3)).action("TunnelRead"),
        ]);
        c.rest().reset_stats();
        let batches = read_range(&c, &table, &s.session_id, 100, 4800, 1000)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_exactly_once(&g.verified_ids(&batches, name), 100..4900, name);
        let fired = env.server.faults.status()["rules"][0]["fired"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(fired, 3, "{name}: {}", env.server.faults.status());
        let stats = c.rest().stats();
        // (A cut past the end of a short body leaves it whole.)
        assert!(
            stats.retries >= 1 && stats.attempts >= 3,
            "{name}: {stats:?}"
        );
    }
    // The record stream resumes the same way.
    let records = c.clone().read_format(ReadFormat::Records);
    for fault in [
        Fault::ResetAfter { bytes: 70_000 },
        Fault::Truncate { bytes: 50_000 },
        Fault::Truncate { bytes: 0 },
    ] {
        env.faults(vec![
            FaultRule::new(fault.clone(), When::Next(2)).action("TunnelRead"),
        ]);
        let batches = read_range(&records, &table, &s.session_id, 100, 4800, 1000)
            .await
            .unwrap_or_else(|e| panic!("records, {fault:?}: {e}"));
        let what = format!("records, {fault:?}");
        assert_exactly_once(&g.verified_ids(&batches, &what), 100..4900, &what);
    }
    // A fault on every attempt exhausts the budget and fails, never ends early.
    env.faults(vec![
        FaultRule::new(Fault::Truncate { bytes: 50_000 }, When::Always).action("TunnelRead"),
    ]);
    let e = read_range(&c, &table, &s.session_id, 0, 5000, 1000).await;
    assert!(
        matches!(&e, Err(paiio_storage::Error::Transient { .. })),
        "{e:?}"
    );
    // A flipped bit is caught by the CRCs and not retried.
    env.faults(vec![
        FaultRule::new(Fault::Corrupt { byte: 5000 }, When::Nth(1)).action("TunnelRead"),
    ]);
    let e = read_range(&c, &table, &s.session_id, 0, 5000, 1000).await;
    assert!(
        matches!(&e, Err(paiio_storage::Error::Corrupt { .. })),
        "{e:?}"
    );
}

#[tokio::test]
async fn replayed_blocks_and_lost_commit_answers_land_rows_once() {
    let env = Env::start().await;
    let g = DataGen::simple(21);
    let table = env.table("blocks", &g, &[]).await;
    // The answer of a block PUT is lost after the block landed: the retry replaces it.
    env.faults(vec![
        FaultRule::new(Fault::ResponseLost, When::Nth(2)).action("TunnelWriteBlock"),
        FaultRule::new(Fault::ResponseLost, When::Nth(1)).action("TunnelCommit"),
    ]);
    let c = env.client();
    assert_eq!(
        write_commit(&c, &table, "", g.batches(0..1000, 250)).await,
        1000
    );
    let status = env.server.faults.status();
    assert_eq!(status["rules"][0]["fired"].as_u64(), Some(1), "{status}");
    assert_eq!(status["rules"][1]["fired"].as_u64(), Some(1), "{status}");
    assert_exactly_once(&ids(&read_all(&c, &table).await), 0..1000, "after replays");

    // Without retries in the client: the caller repeats a write whose answer was lost, at
    // the same row offset; and a commit whose every answer is lost still reports success.
    let t2 = env.table("blocks_caller", &g, &[]).await;
    let c = env.client_with(RetryConfig::disabled());
    let session = c
        .create_write_session(&WriteSessionRequest::new(t2.clone()))
        .await
        .unwrap();
    let sid = &session.session_id;
    let stream = c
        .create_write_stream(&t2, sid, Some("s"), true)
        .await
        .unwrap();
    env.faults(vec![
        FaultRule::new(Fault::ResponseLost, When::Nth(2)).action("TunnelWriteBlock"),
        FaultRule::new(Fault::ResponseLost, When::Always).action("TunnelCommit"),
    ]);
    let mut offset = 0u64;
    for start in (0..600).step_by(200) {
        let request = WriteRequest {
            table: t2.clone(),
            session_id: sid.clone(),
            stream_id: "s".into(),
            version: stream.version,
            row_offset: Some(offset),
            access_token: Some(stream.access_token.clone()),
            batches: vec![g.batch(start..start + 200)],
        };
        let ack = match c.write(request.clone()).await {
            Ok(ack) => ack,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                c.write(request.clone()).await.unwrap()
            }
        };
        assert_eq!(ack.next_row_offset, offset + 200);
        // A replay of an acknowledged write is a duplicate, not applied.
        let again = c.write(request).await.unwrap();
        assert!(again.duplicate && again.rows_written == 0, "{again:?}");
        offset += 200;
    }
    c.close_write_stream(&t2, sid, "s", stream.version)
        .await
        .unwrap();
    let info = c.commit_write_session(&t2, sid, None).await.unwrap();
    assert_eq!(info.rows, 600);
    env.server.faults.clear();
    assert_exactly_once(&ids(&read_all(&c, &t2).await), 0..600, "caller replays");
    // Committing again answers the same.
    assert_eq!(c.commit_write_session(&t2, sid, None).await.unwrap(), info);
    let s = c.get_write_session(&t2, sid).await.unwrap();
    assert_eq!(s.status, paiio_storage::SessionStatus::Committed);
}

#[tokio::test]
async fn superseded_versions_and_unlisted_streams_are_not_published() {
    let env = Env::start().await;
    let c = env.client();
    let g = DataGen::simple(4);
    let table = env.table("versions", &g, &[]).await;
    let session = c
        .create_write_session(&WriteSessionRequest::new(table.clone()))
        .await
        .unwrap();
    let sid = &session.session_id;
    let write = |stream: &str, version: u64, ids: std::ops::Range<i64>| WriteRequest {
        table: table.clone(),
        session_id: sid.clone(),
        stream_id: stream.into(),
        version,
        row_offset: None,
        access_token: None,
        batches: vec![g.batch(ids)],
    };
    let v0 = c
        .create_write_stream(&table, sid, Some("a"), false)
        .await
        .unwrap();
    c.write(write("a", v0.version, 0..10)).await.unwrap();
    let v1 = c
        .create_write_stream(&table, sid, Some("a"), false)
        .await
        .unwrap();
    assert!(
        c.write(write("a", v0.version, 10..20)).await.is_err(),
        "superseded"
    );
    c.write(write("a", v1.version, 100..110)).await.unwrap();
    c.close_write_stream(&table, sid, "a", v1.version)
        .await
        .unwrap();
    let b = c
        .create_write_stream(&table, sid, Some("b"), false)
        .await
        .unwrap();
    c.write(write("b", b.version, 200..205)).await.unwrap();
    c.close_write_stream(&table, sid, "b", b.version)
        .await
        .unwrap();
    let info = c
        .commit_write_session(&table, sid, Some(&[("a".to_string(), v1.version)]))
        .await
        .unwrap();
    assert_eq!(info.rows, 10);
    assert_exactly_once(&ids(&read_all(&c, &table).await), 100..110, "only a v1");
    // An aborted session publishes nothing, even when committed by another client.
    let session = c
        .create_write_session(&WriteSessionRequest::new(table.clone()))
        .await
        .unwrap();
    let sid = &session.session_id;
    let s = c
        .create_write_stream(&table, sid, None, false)
        .await
        .unwrap();
    c.write(WriteRequest {
        session_id: sid.clone(),
        stream_id: s.stream_id.clone(),
        version: s.version,
        ..write("x", 0, 500..520)
    })
    .await
    .unwrap();
    c.abort_write_session(&table, sid).await.unwrap();
    assert!(c.commit_write_session(&table, sid, None).await.is_err());
    env.client()
        .commit_write_session(&table, sid, None)
        .await
        .unwrap();
    assert_exactly_once(&ids(&read_all(&c, &table).await), 100..110, "abort");
}

/// An overwrite whose partitions come from the data replaces only the partitions it
/// publishes rows to: a partition only a superseded version wrote keeps its rows.
#[tokio::test]
async fn dynamic_overwrites_replace_only_the_partitions_published() {
    let env = Env::start().await;
    let c = env.client();
    let g = DataGen::simple(21);
    let table = env.table("overwrite_dyn", &g, &[("pt", "string")]).await;
    write_commit(&c, &table, "pt=a", g.batches(0..40, 20)).await;
    write_commit(&c, &table, "pt=b", g.batches(40..60, 20)).await;
    let mut request = WriteSessionRequest::new(table.clone());
    request.overwrite = true;
    let session = c.create_write_session(&request).await.unwrap();
    let sid = &session.session_id;
    let in_pt = |range: std::ops::Range<i64>, pt: &str| {
        let n = range.end - range.start;
        let pts: arrow_array::ArrayRef =
            std::sync::Arc::new(arrow_array::StringArray::from(vec![pt; n as usize]));
        paiio_conformance::datagen::with_columns(
            &g.batch(range),
            vec![(
                arrow_schema::Field::new("pt", arrow_schema::DataType::Utf8, true),
                pts,
            )],
        )
    };
    let write = |version: u64, batches: Vec<arrow_array::RecordBatch>| WriteRequest {
        table: table.clone(),
        session_id: sid.clone(),
        stream_id: "s0".into(),
        version,
        row_offset: None,
        access_token: None,
        batches,
    };
    // Version 0 writes pt=a and pt=b; version 1, which supersedes it, only pt=b.
    let v0 = c
        .create_write_stream_version(&table, sid, Some("s0"), None, false)
        .await
        .unwrap();
    c.write(write(
        v0.version,
        vec![in_pt(100..110, "a"), in_pt(110..120, "b")],
    ))
    .await
    .unwrap();
    let v1 = c
        .create_write_stream_version(&table, sid, Some("s0"), None, false)
        .await
        .unwrap();
    c.write(write(v1.version, vec![in_pt(200..205, "b")]))
        .await
        .unwrap();
    c.close_write_stream(&table, sid, "s0", v1.version)
        .await
        .unwrap();
    let info = c.commit_write_session(&table, sid, None).await.unwrap();
    assert_eq!(info.rows, 5);
    let rows_in = |pt: &'static str| {
        let c = c.clone();
        let table = table.clone();
        async move {
            let mut request = row_offset_request(&table);
            request.required_partitions = vec![PartitionSpec::parse(pt).unwrap()];
            let s = c.create_read_session(&request).await.unwrap();
            ids(
                &read_range(&c, &table, &s.session_id, 0, s.record_count as u64, 64)
                    .await
                    .unwrap(),
            )
        }
    };
    assert_exactly_once(&rows_in("pt=a").await, 0..40, "pt=a keeps its rows");
    assert_exactly_once(&rows_in("pt=b").await, 200..205, "pt=b is replaced");
}

/// The writes of one stream version go one at a time (a second one while the first is under
/// way is refused, and so are commit and abort), and only the client that made a session
/// writes to it: another one that reloaded it may commit it.
#[tokio::test]
async fn writes_are_serial_and_belong_to_the_session_maker() {
    let env = Env::start().await;
    let c = env.client();
    let g = DataGen::simple(23);
    let table = env.table("serial", &g, &[]).await;
    let session = c
        .create_write_session(&WriteSessionRequest::new(table.clone()))
        .await
        .unwrap();
    let sid = &session.session_id;
    let stream = c
        .create_write_stream(&table, sid, None, false)
        .await
        .unwrap();
    let write =
        |range: std::ops::Range<i64>| write_request(&table, sid, &stream, vec![g.batch(range)]);
    // The first write's block upload stalls; meanwhile a second write, a commit and an
    // abort are refused.
    env.faults(vec![
        FaultRule::new(
            Fault::Stall {
                ms: 2_000,
                after_bytes: None,
            },
            When::Nth(1),
        )
        .action("TunnelWriteBlock"),
    ]);
    let first = c.write(write(0..10));
    let others = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (
            c.write(write(10..20)).await,
            c.commit_write_session(&table, sid, None).await,
            c.abort_write_session(&table, sid).await,
        )
    };
    let (first, (second, commit, abort)) = tokio::join!(first, others);
    assert_eq!(first.unwrap().rows_written, 10);
    assert!(
        matches!(second, Err(paiio_storage::Error::Conflict { .. })),
        "{second:?}"
    );
    assert!(
        matches!(commit, Err(paiio_storage::Error::InvalidState { .. })),
        "{commit:?}"
    );
    assert!(
        matches!(abort, Err(paiio_storage::Error::InvalidState { .. })),
        "{abort:?}"
    );
    assert_eq!(c.write(write(10..20)).await.unwrap().rows_written, 10);
    c.close_write_stream(&table, sid, &stream.stream_id, stream.version)
        .await
        .unwrap();
    // Another client reloads the session: it may not write, but it may commit.
    let other = env.client();
    other.get_write_session(&table, sid).await.unwrap();
    let refused = other.create_write_stream(&table, sid, None, false).await;
    assert!(
        matches!(refused, Err(paiio_storage::Error::NotSupported { .. })),
        "{refused:?}"
    );
    let refused = other.write(write(20..30)).await;
    assert!(
        matches!(refused, Err(paiio_storage::Error::NotSupported { .. })),
        "{refused:?}"
    );
    other.commit_write_session(&table, sid, None).await.unwrap();
    assert_exactly_once(&ids(&read_all(&c, &table).await), 0..20, "one at a time");
}

/// A consumer that leaves a stream alone longer than the retry budget's time (an evaluation,
/// a checkpoint) while the service cuts it still gets its retries: the budget counts from the
/// first failure, not from the last progress.
#[tokio::test]
async fn a_stream_cut_during_a_long_pause_resumes() {
    let env = Env::start().await;
    let g = DataGen::simple(29);
    let table = env.table("paused", &g, &[]).await;
    write_commit(&env.client(), &table, "", g.batches(0..20_000, 1000)).await;
    let c = env.client_with(RetryConfig {
        retry_timeout: std::time::Duration::from_millis(300),
        ..fast_retry()
    });
    let request = row_offset_request(&table);
    let s = c.create_read_session(&request).await.unwrap();
    env.faults(vec![
        FaultRule::new(Fault::ResetAfter { bytes: 60_000 }, When::Nth(1)).action("TunnelRead"),
    ]);
    let mut r = ReadRequest::new(
        table.clone(),
        &s.session_id,
        ReadRange::Rows {
            offset: 0,
            count: 20_000,
        },
    );
    r.max_batch_rows = 500;
    // The stream is opened, then left alone longer than the budget's time.
    let stream = c.read(&r).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let batches: Vec<_> = stream.try_collect().await.unwrap();
    assert_exactly_once(&ids(&batches), 0..20_000, "after a pause");
    assert_eq!(env.seen_fired(), 1, "the stream was cut once");
}

#[tokio::test]
async fn compressed_reads_preview_and_empty_tables() {
    let env = Env::start().await;
    let g = DataGen::all_types(8);
    let table = env.table("compressed", &g, &[]).await;
    let plain = env.client();
    write_commit(&plain, &table, "", g.batches(0..500, 100)).await;
    for encoding in [
        paiio_storage::protocol::codec::BodyEncoding::Zstd,
        paiio_storage::protocol::codec::BodyEncoding::Lz4Frame,
    ] {
        let c = TunnelClient::new(
            RestClient::builder(&env.endpoint)
                .credentials(Credentials::new(ACCESS_ID, ACCESS_KEY))
                .project(PROJECT)
                .retry(fast_retry())
                .read_compression(Some(encoding))
                .build()
                .unwrap(),
        );
        env.faults(vec![
            FaultRule::new(Fault::ResetAfter { bytes: 20_000 }, When::Nth(1)).action("TunnelRead"),
        ]);
        let batches = read_all(&c, &table).await;
        assert_exactly_once(
            &g.verified_ids(&batches, "compressed"),
            0..500,
            &format!("{encoding:?}"),
        );
    }
    env.server.faults.clear();
    let preview: Vec<_> = plain
        .preview(&table, None, &[], 7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_exactly_once(&g.verified_ids(&preview, "preview"), 0..7, "preview");
    let empty = env.table("empty", &g, &[("pt", "string")]).await;
    let batches = read_all(&plain, &empty).await;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].num_rows(), 0);
    assert_eq!(
        batches[0].schema().fields().len(),
        g.columns().len(),
        "the empty batch has the schema"
    );
    let _ = TableSchema::default();
}

/// A plain paiio ini (keys and endpoint, nothing else) works against a server whose Storage
/// API does not answer: `auto` picks the Tunnel; and the Storage API when it answers.
#[tokio::test]
async fn a_plain_ini_picks_the_tunnel_when_the_storage_api_does_not_answer() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("odps_config.ini");
    std::fs::write(
        &ini,
        format!(
            "access_id={ACCESS_ID}\naccess_key={ACCESS_KEY}\nend_point={}\n",
            env.endpoint
        ),
    )
    .unwrap();
    let config = paiio_storage::config::Config::from_file(&ini).unwrap();
    assert_eq!(
        config.transport_with_env(&|_| None).unwrap(),
        paiio_storage::config::Transport::Auto
    );
    let g = DataGen::simple(30);
    let table = env.table("plain_ini", &g, &[]).await;
    let no_storage = FaultRule {
        actions: Vec::new(),
        path_contains: Some("/api/storage/".into()),
        fault: Fault::Status {
            status: 404,
            retry_after: None,
            code: Some("NoSuchObject".into()),
            message: Some("no such resource".into()),
        },
        when: When::Always,
    };
    env.faults(vec![no_storage]);
    let service = paiio_storage::open_service(&config).unwrap();
    assert_eq!(service.name(), "auto");
    let request = WriteSessionRequest::new(table.clone());
    let session = service.create_write_session(&request).await.unwrap();
    assert_eq!(service.name(), "tunnel", "the Storage API does not answer");
    let sid = &session.session_id;
    let stream = service
        .create_write_stream(&table, sid, None, false)
        .await
        .unwrap();
    service
        .write(write_request(&table, sid, &stream, g.batches(0..50, 20)))
        .await
        .unwrap();
    service
        .close_write_stream(&table, sid, &stream.stream_id, stream.version)
        .await
        .unwrap();
    service
        .commit_write_session(&table, sid, None)
        .await
        .unwrap();
    let request = row_offset_request(&table);
    let s = service.create_read_session(&request).await.unwrap();
    let mut r = ReadRequest::new(
        table.clone(),
        &s.session_id,
        ReadRange::Rows {
            offset: 0,
            count: 50,
        },
    );
    r.max_batch_rows = 7;
    let batches: Vec<_> = service.read(&r).await.unwrap().try_collect().await.unwrap();
    assert_exactly_once(&g.verified_ids(&batches, "plain ini"), 0..50, "plain ini");

    // The Storage API answers: auto keeps it.
    env.server.faults.clear();
    let service = paiio_storage::open_service(&config).unwrap();
    service.table_schema(&table).await.unwrap();
    assert_eq!(service.name(), "rest");
    // Keys the service refuses are the caller's error, whichever transport: no choice made.
    let wrong = paiio_storage::config::Config::builder()
        .base(config.clone())
        .access_key("not-the-secret")
        .build();
    let service = paiio_storage::open_service(&wrong).unwrap();
    let e = service.table_schema(&table).await.unwrap_err();
    assert!(
        matches!(e, paiio_storage::Error::Unauthenticated { .. }),
        "{e:?}"
    );
    assert_eq!(service.name(), "auto");
    // A busy service (503s on every attempt of the probe) is the caller's error too, never a
    // reason for the Tunnel: the next call asks again, and keeps the Storage API.
    env.faults(vec![
        FaultRule::new(
            Fault::Status {
                status: 503,
                retry_after: None,
                code: None,
                message: None,
            },
            When::Always,
        )
        .action("TableGetWriteSchema"),
    ]);
    let service = paiio_storage::open_service(&config).unwrap();
    let e = service.table_schema(&table).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(service.name(), "auto");
    env.server.faults.clear();
    service.table_schema(&table).await.unwrap();
    assert_eq!(service.name(), "rest");
    // An explicit transport needs no probe.
    let tunnel = paiio_storage::config::Config::builder()
        .base(config)
        .transport(paiio_storage::config::Transport::Tunnel)
        .build();
    assert_eq!(
        paiio_storage::open_service(&tunnel).unwrap().name(),
        "tunnel"
    );
}

/// Tunnel calls are signed like the Storage API's: V4 works, and a wrong key is refused at
/// once (not retried).
#[tokio::test]
async fn tunnel_calls_are_signed() {
    let env = Env::start().await;
    let g = DataGen::simple(40);
    let table = env.table("signed", &g, &[]).await;
    let v4 = TunnelClient::new(
        RestClient::builder(&env.endpoint)
            .credentials(Credentials::new(ACCESS_ID, ACCESS_KEY))
            .project(PROJECT)
            .region(Some("cn-hangzhou"))
            .retry(fast_retry())
            .build()
            .unwrap(),
    );
    assert_eq!(write_commit(&v4, &table, "", g.batches(0..20, 8)).await, 20);
    assert_exactly_once(&ids(&read_all(&v4, &table).await), 0..20, "V4-signed");
    let wrong = TunnelClient::new(
        RestClient::builder(&env.endpoint)
            .credentials(Credentials::new(ACCESS_ID, "not-the-secret"))
            .project(PROJECT)
            .retry(fast_retry())
            .build()
            .unwrap(),
    );
    // The first call of a read session (the partition listing, a metadata call) is refused.
    let request = row_offset_request(&table);
    let e = wrong.create_read_session(&request).await.unwrap_err();
    assert!(
        matches!(e, paiio_storage::Error::Unauthenticated { .. }),
        "{e:?}"
    );
    assert_eq!(
        wrong.rest().stats().retries,
        0,
        "an auth failure is not retried"
    );
}
