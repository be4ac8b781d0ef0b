//! Storage API V1 (`odps.apis.storage_api`) over HTTP, against an in-process server on a
//! LocalWarehouse: read sessions in both split modes, reads with Arrow buffer compression,
//! block / attempt writes and commits, Content-MD5, status codes.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_ipc::CompressionType;
use arrow_schema::{DataType, Field, Schema};
use md5::{Digest, Md5};
use paiio_server::{Server, ServerHandle};
use paiio_storage::TableId;
use paiio_storage::local::LocalWarehouse;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    Answer, batch, chunked, declaring, decode, ipc_with, only_a, send, stage, warehouse_t_and_pt,
};

struct Env {
    _dir: tempfile::TempDir,
    wh: Arc<LocalWarehouse>,
    handle: ServerHandle,
    client: reqwest::Client,
}

/// Table `t` (a bigint, b string), partitioned table `pt` (a bigint; pt string).
async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse_t_and_pt(dir.path()).await;
    let server = Server::builder(wh.clone())
        .allow_anonymous(true)
        .build()
        .unwrap();
    let handle = server.bind("127.0.0.1:0").await.unwrap();
    Env {
        _dir: dir,
        wh,
        handle,
        client: reqwest::Client::new(),
    }
}

fn tid(name: &str) -> TableId {
    TableId::new("p", None, name).unwrap()
}

fn md5_hex(body: &str) -> String {
    hex::encode(Md5::digest(body.as_bytes()))
}

fn session_id(v: &Value) -> String {
    v["SessionId"].as_str().unwrap().to_string()
}

impl Env {
    /// The table resource as PyODPS builds it (always with `/schemas/default`).
    fn tr(&self, table: &str) -> String {
        format!(
            "{}/api/storage/v1/projects/p/schemas/default/tables/{table}",
            self.handle.url()
        )
    }

    /// A create-session POST as PyODPS sends it: JSON with a hex Content-MD5.
    async fn create(&self, table: &str, session_type: &str, body: Value) -> Answer {
        let text = body.to_string();
        let req = self
            .client
            .post(format!(
                "{}/sessions?session_type={session_type}&curr_project=p",
                self.tr(table)
            ))
            .header("content-type", "application/json")
            .header("content-md5", md5_hex(&text))
            .body(text);
        send(req).await
    }

    /// A GET of the session `sid`, with `query`.
    async fn get_session(&self, table: &str, sid: &str, query: &str) -> Answer {
        send(
            self.client
                .get(format!("{}/sessions/{sid}?{query}", self.tr(table))),
        )
        .await
    }

    async fn create_read(&self, table: &str, mode: &str, split_number: i64) -> Value {
        let body = json!({"RequiredDataColumns": [], "RequiredPartitionColumns": [], "RequiredPartitions": [],
            "RequiredBucketIds": [],
            "SplitOptions": {"SplitMode": mode, "SplitNumber": split_number, "CrossPartition": true},
            "ArrowOptions": {"TimestampUnit": "nano", "DatetimeUnit": "milli"},
            "FilterPredicate": "", "EnableEstimateStats": false});
        self.create(table, "batch_read", body)
            .await
            .expect(StatusCode::CREATED)
    }

    async fn read(&self, table: &str, sid: &str, query: &str, accept: Option<&str>) -> Answer {
        let mut req = self
            .client
            .get(format!(
                "{}/data?session_id={sid}&max_batch_rows=4096&{query}&curr_project=p",
                self.tr(table)
            ))
            .header("connection", "Keep-Alive");
        if let Some(a) = accept {
            req = req.header("accept-encoding", a);
        }
        send(req).await
    }

    /// Python's default read parameters plus `query`, decoded to `a` values.
    async fn read_a(&self, table: &str, sid: &str, query: &str) -> Vec<i64> {
        let a = self.read(table, sid, query, Some("LZ4_FRAME")).await;
        column_a(&decode(&a.assert_status(StatusCode::OK).body))
    }

    async fn create_write(&self, table: &str, body: Value) -> String {
        let v = self
            .create(table, "batch_write", body)
            .await
            .expect(StatusCode::OK);
        session_id(&v)
    }

    /// One block attempt, chunked like RequestsIO, LZ4-buffer-compressed like PyODPS.
    async fn upload(
        &self,
        table: &str,
        sid: &str,
        block: u64,
        attempt: u64,
        ipc: Vec<u8>,
    ) -> Answer {
        let req = self
            .client
            .post(format!(
                "{}/sessions/{sid}/data?attempt_number={attempt}&block_number={block}&curr_project=p",
                self.tr(table)
            ))
            .header("content-type", "application/octet-stream")
            .body(chunked(&ipc, 64));
        send(req).await
    }

    async fn upload_ok(
        &self,
        table: &str,
        sid: &str,
        block: u64,
        attempt: u64,
        ipc: Vec<u8>,
    ) -> String {
        let v = self
            .upload(table, sid, block, attempt, ipc)
            .await
            .expect(StatusCode::OK);
        v["CommitMessage"].as_str().unwrap().to_string()
    }

    async fn commit(&self, table: &str, sid: &str, messages: Value) -> Answer {
        let req = self
            .client
            .post(format!(
                "{}/commit?session_id={sid}&curr_project=p",
                self.tr(table)
            ))
            .header("content-type", "application/json")
            .body(json!({"CommitMessages": messages}).to_string());
        send(req).await
    }

    /// A write session created with `body`, `ipc` uploaded as block 0 attempt 0, committed.
    async fn write_committed(&self, table: &str, body: Value, ipc: Vec<u8>) {
        let sid = self.create_write(table, body).await;
        let m = self.upload_ok(table, &sid, 0, 0, ipc).await;
        self.commit(table, &sid, json!([m]))
            .await
            .expect(StatusCode::CREATED);
    }

    /// Every `a` of a table (sorted), read through a fresh V1 row-offset session.
    async fn all_a(&self, table: &str) -> Vec<i64> {
        let s = self.create_read(table, "RowOffset", 0).await;
        let mut a = self
            .read_a(
                table,
                &session_id(&s),
                "split_index=0&row_count=0&row_index=0",
            )
            .await;
        a.sort();
        a
    }

    /// Commits rows `range` into `table` straight through the warehouse.
    async fn seed(&self, table: &str, range: std::ops::Range<i64>) {
        stage(&self.wh, &tid(table), vec![batch(range)], true).await;
    }
}

/// An upload as PyODPS sends it by default: LZ4_FRAME buffer compression.
fn lz4(range: std::ops::Range<i64>) -> Vec<u8> {
    ipc_with(&[batch(range)], Some(CompressionType::LZ4_FRAME))
}

fn column_a(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend((0..a.len()).map(|i| a.value(i)));
    }
    out
}

/// The buffer compression codec of the first record batch message of an IPC stream.
fn batch_codec(body: &[u8]) -> Option<CompressionType> {
    let mut p = 0;
    loop {
        assert_eq!(&body[p..p + 4], &[0xff; 4], "continuation marker");
        let len = u32::from_le_bytes(body[p + 4..p + 8].try_into().unwrap()) as usize;
        assert!(len > 0, "no record batch before the end of the stream");
        let message = arrow_ipc::root_as_message(&body[p + 8..p + 8 + len]).unwrap();
        if let Some(rb) = message.header_as_record_batch() {
            return rb.compression().map(|c| c.codec());
        }
        p += 8 + len + message.bodyLength() as usize;
    }
}

/// Reads of the session `sid` of `t`: each query and the `a` values it reads.
async fn assert_reads(env: &Env, sid: &str, reads: &[(&str, Vec<i64>)]) {
    for (query, want) in reads {
        assert_eq!(&env.read_a("t", sid, query).await, want, "{query}");
    }
}

#[tokio::test]
async fn read_sessions_in_both_modes() {
    let env = env().await;
    env.seed("t", 0..10).await;
    let all: Vec<i64> = (0..10).collect();

    // Size (the default): indexed splits, RecordCount -1.
    let s = env.create_read("t", "Size", 268_435_456).await;
    assert_eq!(s["SessionType"], "batch_read");
    assert_eq!(s["SessionStatus"], "NORMAL");
    assert_eq!(s["SplitsCount"], 1);
    assert_eq!(s["RecordCount"], -1);
    assert!(s["ExpirationTime"].as_i64().unwrap() > 0);
    assert_eq!(
        s["SupportedDataFormat"],
        json!([{"Type": "ARROW", "Version": "V5"}])
    );
    let cols = s["DataSchema"]["DataColumns"].as_array().unwrap();
    assert_eq!(
        (cols[0]["Name"].as_str(), cols[0]["Type"].as_str()),
        (Some("a"), Some("bigint"))
    );
    let sid = session_id(&s);
    let reads = [
        // Python sends every parameter: row_index / row_count 0 are ignored in a split session.
        ("split_index=0&row_count=0&row_index=0", all.clone()),
        // A non-zero row range narrows the split.
        ("split_index=0&row_count=3&row_index=2", vec![2, 3, 4]),
        ("split_index=0&row_count=0&row_index=8", vec![8, 9]),
    ];
    assert_reads(&env, &sid, &reads).await;

    // Get and refresh: 200, same shape.
    let g = env.get_session("t", &sid, "session_type=batch_read").await;
    let g = g.expect(StatusCode::OK);
    assert_eq!(
        (g["SessionId"].as_str(), g["SplitsCount"].as_i64()),
        (Some(sid.as_str()), Some(1))
    );
    let refresh = "session_type=batch_read&session_refresh=true";
    let r = env.get_session("t", &sid, refresh).await;
    let r = r.expect(StatusCode::OK);
    assert!(r["ExpirationTime"].as_i64() >= g["ExpirationTime"].as_i64());

    // Parallelism: several splits that together hold every row once.
    let s = env.create_read("t", "Parallelism", 3).await;
    assert_eq!(s["SplitsCount"], 3);
    let sid = session_id(&s);
    let mut parts = Vec::new();
    for i in 0..3 {
        let query = format!("split_index={i}&row_count=0&row_index=0");
        let part = env.read_a("t", &sid, &query).await;
        assert!(!part.is_empty());
        parts.extend(part);
    }
    assert_eq!(parts, all);

    // RowOffset: SplitsCount -1, RecordCount the total; split_index is ignored.
    let s = env.create_read("t", "RowOffset", 0).await;
    assert_eq!(
        (s["SplitsCount"].as_i64(), s["RecordCount"].as_i64()),
        (Some(-1), Some(10))
    );
    let sid = session_id(&s);
    let reads = [
        ("split_index=5&row_index=3&row_count=4", vec![3, 4, 5, 6]),
        // row_count=0 reads to the end; the seed example's row_count=RecordCount reads all.
        ("split_index=0&row_index=6&row_count=0", vec![6, 7, 8, 9]),
        ("split_index=0&row_index=0&row_count=10", all.clone()),
    ];
    assert_reads(&env, &sid, &reads).await;
    // At the end: an empty stream that still carries the schema.
    let a = env
        .read("t", &sid, "split_index=0&row_index=10&row_count=0", None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(column_a(&decode(&a.body)).is_empty());
    env.read("t", &sid, "split_index=0&row_index=11&row_count=0", None)
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");

    // max_batch_rows caps the batches.
    let query = "split_index=0&row_index=0&row_count=0&max_batch_rows=3";
    let a = env.read("t", &sid, query, None).await;
    let batches = decode(&a.body);
    assert!(batches.iter().all(|b| b.num_rows() <= 3));
    assert_eq!(column_a(&batches), all);
}

#[tokio::test]
async fn reads_use_arrow_buffer_compression() {
    let env = env().await;
    env.seed("t", 0..5000).await;
    let s = env.create_read("t", "Size", 268_435_456).await;
    let sid = session_id(&s);
    let mut sizes = Vec::new();
    for (accept, codec) in [
        (Some("LZ4_FRAME"), Some(CompressionType::LZ4_FRAME)),
        (Some("ZSTD"), Some(CompressionType::ZSTD)),
        (Some(""), None),
        (Some("identity"), None),
        (None, None),
    ] {
        let a = env
            .read("t", &sid, "split_index=0&row_count=0&row_index=0", accept)
            .await;
        a.assert_status(StatusCode::OK);
        assert_eq!(
            a.header("content-type"),
            Some("application/octet-stream"),
            "{accept:?}"
        );
        // No HTTP-level compression: the body is a raw IPC stream.
        assert!(a.header("content-encoding").is_none(), "{accept:?}");
        assert_eq!(batch_codec(&a.body), codec, "{accept:?}");
        assert_eq!(
            column_a(&decode(&a.body)),
            (0..5000).collect::<Vec<_>>(),
            "{accept:?}"
        );
        sizes.push(a.body.len());
    }
    assert!(sizes[0] < sizes[2] && sizes[1] < sizes[2], "{sizes:?}");
}

#[tokio::test]
async fn blocks_attempts_and_commit_of_a_subset() {
    let env = env().await;
    env.seed("t", 100..103).await;
    // PyODPS' default body: Overwrite true, LZ4 uploads.
    let body = json!({"DynamicPartitionOptions": {"InvalidStrategy": "Exception", "InvalidLimit": 1,
        "DynamicPartitionLimit": 512}, "ArrowOptions": {"TimestampUnit": "nano", "DatetimeUnit": "milli"},
        "Overwrite": true, "PartitionSpec": "", "SupportWriteCluster": false, "EnhanceWriteCheck": true});
    let w = env
        .create("t", "batch_write", body)
        .await
        .expect(StatusCode::OK);
    assert_eq!(w["SessionType"], "batch_write");
    assert_eq!(w["SessionStatus"], "NORMAL");
    assert_eq!(w["MaxBlockNumber"], 20000);
    assert_eq!(w["RequiredDistribution"]["Type"], "UNSPECIFIED");
    assert_eq!(w["RequiredOrdering"], json!([]));
    assert_eq!(w["DataSchema"]["DataColumns"].as_array().unwrap().len(), 2);
    assert!(w["ExpirationTime"].as_i64().unwrap() > 0);
    let sid = session_id(&w);

    let b0a0 = env.upload_ok("t", &sid, 0, 0, lz4(0..3)).await;
    let b0a1 = env.upload_ok("t", &sid, 0, 1, lz4(10..13)).await;
    let zstd = ipc_with(&[batch(20..22)], Some(CompressionType::ZSTD));
    let b1a0 = env.upload_ok("t", &sid, 1, 0, zstd).await;
    let plain = ipc_with(&[batch(30..34), batch(34..35)], None);
    let b1a1 = env.upload_ok("t", &sid, 1, 1, plain).await;
    let m: Value = serde_json::from_str(&b1a1).unwrap();
    assert_eq!(
        (m["BlockNumber"].as_u64(), m["AttemptNumber"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(m["WriterStats"]["RecordNum"], 5);

    let status = || async {
        let g = env.get_session("t", &sid, "session_type=batch_write").await;
        g.expect(StatusCode::OK)["SessionStatus"].clone()
    };
    assert_eq!(status().await, "NORMAL");
    // Nothing is visible before the commit.
    assert_eq!(env.all_a("t").await, vec![100, 101, 102]);

    // Two attempts of one block cannot both be committed.
    env.commit("t", &sid, json!([b0a0, b0a1]))
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    env.commit("t", &sid, json!(["not a message"]))
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");

    let c = env
        .commit("t", &sid, json!([b0a1, null, b1a0]))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(c["SessionId"], sid);
    assert_eq!(c["SessionStatus"], "COMMITTED");
    assert_eq!(c["SessionType"], "batch_write");
    // Exactly the listed attempts; Overwrite replaced the old rows.
    assert_eq!(env.all_a("t").await, vec![10, 11, 12, 20, 21]);
    // A retried commit is still 201 and changes nothing.
    env.commit("t", &sid, json!([b0a1, b1a0]))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(env.all_a("t").await, vec![10, 11, 12, 20, 21]);
    assert_eq!(status().await, "COMMITTED");
}

#[tokio::test]
async fn reupload_of_an_attempt_supersedes_and_messages_stay_in_their_session() {
    let env = env().await;
    let sid = env.create_write("t", json!({"Overwrite": false})).await;
    let first = env.upload_ok("t", &sid, 7, 0, lz4(0..4)).await;
    let second = env.upload_ok("t", &sid, 7, 0, lz4(50..52)).await;
    assert_ne!(first, second);
    let other = env.create_write("t", json!({"Overwrite": false})).await;
    env.commit("t", &other, json!([second]))
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    env.commit("t", &sid, json!([second]))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(env.all_a("t").await, vec![50, 51]);
    // Block numbers are bounded by MaxBlockNumber.
    env.upload("t", &other, 20_000, 0, lz4(0..1))
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    // An empty commit of an append session adds nothing.
    env.commit("t", &other, json!([]))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(env.all_a("t").await, vec![50, 51]);
}

#[tokio::test]
async fn overwrite_defaults_to_true() {
    let env = env().await;
    env.seed("t", 0..3).await;
    for (body, rows, want) in [
        // No Overwrite field: replaces, like PyODPS' default.
        (json!({"PartitionSpec": ""}), 10..12, vec![10, 11]),
        // Overwrite false appends.
        (json!({"Overwrite": false}), 20..21, vec![10, 11, 20]),
        // Overwrite true replaces again.
        (json!({"Overwrite": true}), 30..31, vec![30]),
    ] {
        env.write_committed("t", body, lz4(rows)).await;
        assert_eq!(env.all_a("t").await, want);
    }
}

#[tokio::test]
async fn static_and_dynamic_partitions() {
    let env = env().await;
    let static_pt = json!({"PartitionSpec": "pt=x", "Overwrite": false});
    let data = ipc_with(&[only_a(vec![1, 2])], Some(CompressionType::LZ4_FRAME));
    env.write_committed("pt", static_pt, data).await;

    // Dynamic: the data carries the partition column.
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("pt", DataType::Utf8, true),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![3, 4])) as ArrayRef,
            Arc::new(StringArray::from(vec!["y", "z"])) as ArrayRef,
        ],
    )
    .unwrap();
    let dynamic = json!({"PartitionSpec": "", "Overwrite": false});
    env.write_committed("pt", dynamic, ipc_with(&[b], None))
        .await;
    assert_eq!(env.all_a("pt").await, vec![1, 2, 3, 4]);

    // RequiredPartitions filters (`,` or `/` separated specs).
    let body = json!({"RequiredPartitions": ["pt=y"], "RequiredPartitionColumns": ["pt"], "SplitOptions": {"SplitMode": "RowOffset", "SplitNumber": 0}});
    let s = env
        .create("pt", "batch_read", body)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(s["RecordCount"], 1);
    assert_eq!(s["DataSchema"]["PartitionColumns"][0]["Name"], "pt");
    assert_eq!(
        env.read_a(
            "pt",
            &session_id(&s),
            "split_index=0&row_index=0&row_count=0"
        )
        .await,
        vec![3]
    );
}

#[tokio::test]
async fn content_md5_is_verified() {
    let env = env().await;
    let body =
        json!({"SplitOptions": {"SplitMode": "Size", "SplitNumber": 268_435_456}}).to_string();
    let url = format!("{}/sessions?session_type=batch_read", env.tr("t"));
    let post = |md5: Option<String>| {
        let mut req = env
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(m) = md5 {
            req = req.header("content-md5", m);
        }
        send(req)
    };
    for md5 in [
        Some(md5_hex(&body)),
        Some(md5_hex(&body).to_uppercase()),
        None,
    ] {
        post(md5).await.expect(StatusCode::CREATED);
    }
    post(Some(md5_hex("something else")))
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    // The same on write sessions.
    let wbody = json!({"Overwrite": true}).to_string();
    let req = env
        .client
        .post(format!("{}/sessions?session_type=batch_write", env.tr("t")))
        .header("content-md5", md5_hex("{}"))
        .body(wbody);
    send(req)
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
}

#[tokio::test]
async fn unknown_sessions_and_bad_requests() {
    let env = env().await;
    let no_session = |a: Answer| a.error(StatusCode::NOT_FOUND, "NoSuchSession");
    let invalid = |a: Answer| a.error(StatusCode::BAD_REQUEST, "InvalidArgument");
    no_session(
        env.get_session("t", "nope", "session_type=batch_read")
            .await,
    );
    no_session(
        env.get_session("t", "nope", "session_type=batch_write")
            .await,
    );
    no_session(
        env.read("t", "nope", "split_index=0&row_index=0&row_count=0", None)
            .await,
    );
    no_session(env.upload("t", "nope", 0, 0, lz4(0..1)).await);
    no_session(env.commit("t", "nope", json!([])).await);
    // Unknown table, missing or wrong session_type, a malformed upload.
    env.create("nosuch", "batch_read", json!({}))
        .await
        .error(StatusCode::NOT_FOUND, "NoSuchTable");
    invalid(env.create("t", "streaming", json!({})).await);
    let req = env
        .client
        .post(format!("{}/sessions", env.tr("t")))
        .body("{}");
    invalid(send(req).await);
    let sid = env.create_write("t", json!({})).await;
    invalid(env.upload("t", &sid, 0, 0, b"not arrow".to_vec()).await);
    // A read session id is no write session.
    let s = env.create_read("t", "Size", 0).await;
    no_session(env.upload("t", &session_id(&s), 0, 0, lz4(0..1)).await);
}

#[tokio::test]
async fn both_path_shapes() {
    let env = env().await;
    env.seed("t", 0..4).await;
    let base = format!("{}/api/storage/v1/projects/p/tables/t", env.handle.url());
    let body = json!({"SplitOptions": {"SplitMode": "RowOffset", "SplitNumber": 0}}).to_string();
    let req = env
        .client
        .post(format!("{base}/sessions?session_type=batch_read"))
        .body(body);
    let sid = session_id(&send(req).await.expect(StatusCode::CREATED));
    // The session is the same table's under either shape.
    assert_eq!(
        env.read_a("t", &sid, "row_index=1&row_count=2").await,
        vec![1, 2]
    );
    let url = format!("{base}/data?session_id={sid}&row_index=0&row_count=0");
    let a = send(env.client.get(url)).await;
    assert_eq!(column_a(&decode(&a.body)), vec![0, 1, 2, 3]);

    // A write through the schema-less shape (as Java sends data and commit without a schema).
    let sid = env.create_write("t", json!({"Overwrite": false})).await;
    let req = env
        .client
        .post(format!(
            "{base}/sessions/{sid}/data?block_number=0&attempt_number=0"
        ))
        .body(lz4(9..10));
    let m = send(req).await.expect(StatusCode::OK)["CommitMessage"]
        .as_str()
        .unwrap()
        .to_string();
    let req = env
        .client
        .post(format!("{base}/commit?session_id={sid}"))
        .body(json!({"CommitMessages": [m]}).to_string());
    send(req).await.expect(StatusCode::CREATED);
    assert_eq!(env.all_a("t").await, vec![0, 1, 2, 3, 9]);
    // The V2 path still answers its own hint for /api/storage/v1.
    let url = format!("{}/api/storage/v1", env.handle.url());
    let a = send(env.client.post(url)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn block_with_a_huge_declared_buffer_length_is_refused() {
    // Before the guard, this upload aborted the whole process ("memory allocation failed").
    let env = env().await;
    env.seed("t", 100..103).await;
    let sid = env.create_write("t", json!({"Overwrite": true})).await;
    for index in [0, 1, 2] {
        // The `index`th compressed buffer declares 2^62 uncompressed bytes.
        let body = declaring(lz4(0..1000), index, 1 << 62);
        let a = env.upload("t", &sid, 0, 0, body).await;
        let a = a.expect(StatusCode::BAD_REQUEST);
        let message = a["Message"].as_str().unwrap_or_default();
        assert!(
            message.contains("record batch 0") && message.contains("4611686018427387904"),
            "{message}"
        );
    }
    // Nothing was staged (a commit message naming block 0 names no upload), and the table
    // is unchanged.
    let m = json!({"BlockNumber": 0, "AttemptNumber": 0, "StreamVersion": 1, "SessionId": sid})
        .to_string();
    env.commit("t", &sid, json!([m]))
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    assert_eq!(env.all_a("t").await, vec![100, 101, 102]);
    // The server is up and a good upload still works.
    env.write_committed("t", json!({"Overwrite": false}), lz4(0..3))
        .await;
    assert_eq!(env.all_a("t").await, vec![0, 1, 2, 100, 101, 102]);
}

#[tokio::test]
async fn repeated_column_names_are_refused() {
    let env = env().await;
    let names: Vec<&str> = std::iter::repeat_n("a", 5000).collect();
    for (field, list) in [
        ("RequiredDataColumns", json!(names)),
        ("RequiredDataColumns", json!(["a", "b", "A"])),
    ] {
        let body = json!({field: list, "SplitOptions": {"SplitMode": "Size", "SplitNumber": 0}});
        let a = env.create("t", "batch_read", body).await;
        a.refused(StatusCode::BAD_REQUEST, "more than once");
    }
    let many: Vec<String> = (0..10_001).map(|i| format!("c{i}")).collect();
    let a = env
        .create("t", "batch_read", json!({"RequiredDataColumns": many}))
        .await;
    a.refused(StatusCode::BAD_REQUEST, "at most 10000");
    // Distinct names still work.
    let ok = env
        .create(
            "t",
            "batch_read",
            json!({"RequiredDataColumns": ["b", "a"]}),
        )
        .await;
    ok.assert_status(StatusCode::CREATED);
}
