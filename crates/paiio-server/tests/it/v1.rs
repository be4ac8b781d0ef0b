//! Storage API V1 (`odps.apis.storage_api`) over HTTP, against an in-process server on a
//! LocalWarehouse: read sessions in both split modes, reads with Arrow buffer compression,
//! block / attempt writes and commits, Content-MD5, status codes.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{DataType, Field, Schema};
use md5::{Digest, Md5};
use paiio_server::{Server, ServerHandle};
use paiio_storage::local::LocalWarehouse;
use paiio_storage::{
    Column, CreateTableOptions, OdpsType, TableId, TableSchema, TableService, WriteRequest,
    WriteSessionRequest,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Env {
    _dir: tempfile::TempDir,
    wh: Arc<LocalWarehouse>,
    handle: ServerHandle,
    client: reqwest::Client,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn expect(self, status: StatusCode) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
    fn error(self, status: StatusCode, code: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.json()["Code"],
            code,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(self.headers.get("x-odps-request-id").is_some());
    }
}

/// Table `t` (a bigint, b string), partitioned table `pt` (a bigint; pt string).
async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let wh = Arc::new(LocalWarehouse::open(dir.path().join("wh")).unwrap());
    let schema = TableSchema::new(
        vec![
            Column::new("a", OdpsType::BigInt),
            Column::new("b", OdpsType::String),
        ],
        Vec::new(),
    )
    .unwrap();
    wh.create_table(&tid("t"), &schema, CreateTableOptions::default())
        .await
        .unwrap();
    let pschema = TableSchema::new(
        vec![Column::new("a", OdpsType::BigInt)],
        vec![Column::new("pt", OdpsType::String)],
    )
    .unwrap();
    wh.create_table(&tid("pt"), &pschema, CreateTableOptions::default())
        .await
        .unwrap();
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
    hex_lower(&Md5::digest(body.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Env {
    /// The table resource as PyODPS builds it (always with `/schemas/default`).
    fn tr(&self, table: &str) -> String {
        format!(
            "{}/api/storage/v1/projects/p/schemas/default/tables/{table}",
            self.handle.url()
        )
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Answer {
            status,
            headers,
            body,
        }
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
        self.send(req).await
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
        self.send(req).await
    }

    /// Python's default read parameters plus `query`, decoded to `a` values.
    async fn read_a(&self, table: &str, sid: &str, query: &str) -> Vec<i64> {
        let a = self.read(table, sid, query, Some("LZ4_FRAME")).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        column_a(&decode(&a.body))
    }

    async fn create_write(&self, table: &str, body: Value) -> String {
        let v = self
            .create(table, "batch_write", body)
            .await
            .expect(StatusCode::OK);
        v["SessionId"].as_str().unwrap().to_string()
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
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            ipc.chunks(64).map(|c| Ok(c.to_vec())).collect();
        let req = self
            .client
            .post(format!(
                "{}/sessions/{sid}/data?attempt_number={attempt}&block_number={block}&curr_project=p",
                self.tr(table)
            ))
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
        self.send(req).await
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
        self.send(req).await
    }

    /// Every `a` of a table (sorted), read through a fresh V1 row-offset session.
    async fn all_a(&self, table: &str) -> Vec<i64> {
        let s = self.create_read(table, "RowOffset", 0).await;
        let sid = s["SessionId"].as_str().unwrap();
        let mut a = self
            .read_a(table, sid, "split_index=0&row_count=0&row_index=0")
            .await;
        a.sort();
        a
    }

    /// Commits rows `range` into `t` straight through the warehouse.
    async fn seed(&self, table: &str, range: std::ops::Range<i64>) {
        let t = tid(table);
        let s = self
            .wh
            .create_write_session(&WriteSessionRequest::new(t.clone()))
            .await
            .unwrap();
        let w = self
            .wh
            .create_write_stream(&t, &s.session_id, None, false)
            .await
            .unwrap();
        let request = WriteRequest {
            table: t.clone(),
            session_id: s.session_id.clone(),
            stream_id: w.stream_id.clone(),
            version: w.version,
            row_offset: None,
            access_token: None,
            batches: vec![batch(range)],
        };
        self.wh.write(request).await.unwrap();
        self.wh
            .close_write_stream(&t, &s.session_id, &w.stream_id, w.version)
            .await
            .unwrap();
        self.wh
            .commit_write_session(&t, &s.session_id, None)
            .await
            .unwrap();
    }
}

fn batch(range: std::ops::Range<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ]));
    let a: ArrayRef = Arc::new(Int64Array::from_iter_values(range.clone()));
    let b: ArrayRef = Arc::new(StringArray::from_iter_values(
        range.map(|i| format!("s{i}")),
    ));
    RecordBatch::try_new(schema, vec![a, b]).unwrap()
}

fn ipc_with(batches: &[RecordBatch], compression: Option<CompressionType>) -> Vec<u8> {
    let options = IpcWriteOptions::default()
        .try_with_compression(compression)
        .unwrap();
    let mut w =
        StreamWriter::try_new_with_options(Vec::new(), &batches[0].schema(), options).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    w.into_inner().unwrap()
}

/// An upload as PyODPS sends it by default: LZ4_FRAME buffer compression.
fn lz4(range: std::ops::Range<i64>) -> Vec<u8> {
    ipc_with(&[batch(range)], Some(CompressionType::LZ4_FRAME))
}

fn decode(body: &[u8]) -> Vec<RecordBatch> {
    let reader =
        arrow_ipc::reader::StreamReader::try_new(Cursor::new(body.to_vec()), None).unwrap();
    reader.map(|b| b.unwrap()).collect()
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

#[tokio::test]
async fn read_sessions_in_both_modes() {
    let env = env().await;
    env.seed("t", 0..10).await;

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
    let sid = s["SessionId"].as_str().unwrap().to_string();
    // Python sends every parameter: row_index / row_count 0 are ignored in a split session.
    assert_eq!(
        env.read_a("t", &sid, "split_index=0&row_count=0&row_index=0")
            .await,
        (0..10).collect::<Vec<_>>()
    );
    // A non-zero row range narrows the split.
    assert_eq!(
        env.read_a("t", &sid, "split_index=0&row_count=3&row_index=2")
            .await,
        vec![2, 3, 4]
    );
    assert_eq!(
        env.read_a("t", &sid, "split_index=0&row_count=0&row_index=8")
            .await,
        vec![8, 9]
    );

    // Get and refresh: 200, same shape.
    let get = env.client.get(format!(
        "{}/sessions/{sid}?session_type=batch_read",
        env.tr("t")
    ));
    let g = env.send(get).await.expect(StatusCode::OK);
    assert_eq!(
        (g["SessionId"].as_str(), g["SplitsCount"].as_i64()),
        (Some(sid.as_str()), Some(1))
    );
    let refresh = env.client.get(format!(
        "{}/sessions/{sid}?session_type=batch_read&session_refresh=true",
        env.tr("t")
    ));
    let r = env.send(refresh).await.expect(StatusCode::OK);
    assert!(r["ExpirationTime"].as_i64() >= g["ExpirationTime"].as_i64());

    // Parallelism: several splits that together hold every row once.
    let s = env.create_read("t", "Parallelism", 3).await;
    assert_eq!(s["SplitsCount"], 3);
    let sid = s["SessionId"].as_str().unwrap().to_string();
    let mut all = Vec::new();
    for i in 0..3 {
        let part = env
            .read_a(
                "t",
                &sid,
                &format!("split_index={i}&row_count=0&row_index=0"),
            )
            .await;
        assert!(!part.is_empty());
        all.extend(part);
    }
    assert_eq!(all, (0..10).collect::<Vec<_>>());

    // RowOffset: SplitsCount -1, RecordCount the total; split_index is ignored.
    let s = env.create_read("t", "RowOffset", 0).await;
    assert_eq!(
        (s["SplitsCount"].as_i64(), s["RecordCount"].as_i64()),
        (Some(-1), Some(10))
    );
    let sid = s["SessionId"].as_str().unwrap().to_string();
    assert_eq!(
        env.read_a("t", &sid, "split_index=5&row_index=3&row_count=4")
            .await,
        vec![3, 4, 5, 6]
    );
    // row_count=0 reads to the end; the seed example's row_count=RecordCount reads all.
    assert_eq!(
        env.read_a("t", &sid, "split_index=0&row_index=6&row_count=0")
            .await,
        vec![6, 7, 8, 9]
    );
    assert_eq!(
        env.read_a("t", &sid, "split_index=0&row_index=0&row_count=10")
            .await,
        (0..10).collect::<Vec<_>>()
    );
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
    let a = env
        .read(
            "t",
            &sid,
            "split_index=0&row_index=0&row_count=0&max_batch_rows=3",
            None,
        )
        .await;
    let batches = decode(&a.body);
    assert!(batches.iter().all(|b| b.num_rows() <= 3));
    assert_eq!(column_a(&batches), (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn reads_use_arrow_buffer_compression() {
    let env = env().await;
    env.seed("t", 0..5000).await;
    let s = env.create_read("t", "Size", 268_435_456).await;
    let sid = s["SessionId"].as_str().unwrap().to_string();
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
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{accept:?}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(
            a.headers.get("content-type").unwrap(),
            "application/octet-stream"
        );
        // No HTTP-level compression: the body is a raw IPC stream.
        assert!(a.headers.get("content-encoding").is_none(), "{accept:?}");
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
    let sid = w["SessionId"].as_str().unwrap().to_string();

    let b0a0 = env.upload_ok("t", &sid, 0, 0, lz4(0..3)).await;
    let b0a1 = env.upload_ok("t", &sid, 0, 1, lz4(10..13)).await;
    let b1a0 = env
        .upload_ok(
            "t",
            &sid,
            1,
            0,
            ipc_with(&[batch(20..22)], Some(CompressionType::ZSTD)),
        )
        .await;
    let b1a1 = env
        .upload_ok(
            "t",
            &sid,
            1,
            1,
            ipc_with(&[batch(30..34), batch(34..35)], None),
        )
        .await;
    let m: Value = serde_json::from_str(&b1a1).unwrap();
    assert_eq!(
        (m["BlockNumber"].as_u64(), m["AttemptNumber"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(m["WriterStats"]["RecordNum"], 5);
    let _ = b0a0;

    let get = env.client.get(format!(
        "{}/sessions/{sid}?session_type=batch_write",
        env.tr("t")
    ));
    assert_eq!(
        env.send(get).await.expect(StatusCode::OK)["SessionStatus"],
        "NORMAL"
    );
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
    let get = env.client.get(format!(
        "{}/sessions/{sid}?session_type=batch_write",
        env.tr("t")
    ));
    assert_eq!(
        env.send(get).await.expect(StatusCode::OK)["SessionStatus"],
        "COMMITTED"
    );
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
    // No Overwrite field: replaces, like PyODPS' default.
    let sid = env.create_write("t", json!({"PartitionSpec": ""})).await;
    let m = env.upload_ok("t", &sid, 0, 0, lz4(10..12)).await;
    env.commit("t", &sid, json!([m]))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(env.all_a("t").await, vec![10, 11]);
    // Overwrite false appends.
    let sid = env.create_write("t", json!({"Overwrite": false})).await;
    let m = env.upload_ok("t", &sid, 0, 0, lz4(20..21)).await;
    env.commit("t", &sid, json!([m]))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(env.all_a("t").await, vec![10, 11, 20]);
    // Overwrite true replaces again.
    let sid = env.create_write("t", json!({"Overwrite": true})).await;
    let m = env.upload_ok("t", &sid, 3, 2, lz4(30..31)).await;
    env.commit("t", &sid, json!([m]))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(env.all_a("t").await, vec![30]);
}

#[tokio::test]
async fn static_and_dynamic_partitions() {
    let env = env().await;
    let sid = env
        .create_write("pt", json!({"PartitionSpec": "pt=x", "Overwrite": false}))
        .await;
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
    let b = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef],
    )
    .unwrap();
    let m = env
        .upload_ok(
            "pt",
            &sid,
            0,
            0,
            ipc_with(&[b], Some(CompressionType::LZ4_FRAME)),
        )
        .await;
    env.commit("pt", &sid, json!([m]))
        .await
        .expect(StatusCode::CREATED);

    // Dynamic: the data carries the partition column.
    let sid = env
        .create_write("pt", json!({"PartitionSpec": "", "Overwrite": false}))
        .await;
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
    let m = env.upload_ok("pt", &sid, 0, 0, ipc_with(&[b], None)).await;
    env.commit("pt", &sid, json!([m]))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(env.all_a("pt").await, vec![1, 2, 3, 4]);

    // RequiredPartitions filters (`,` or `/` separated specs).
    let body = json!({"RequiredPartitions": ["pt=y"], "RequiredPartitionColumns": ["pt"], "SplitOptions": {"SplitMode": "RowOffset", "SplitNumber": 0}});
    let s = env
        .create("pt", "batch_read", body)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(s["RecordCount"], 1);
    assert_eq!(s["DataSchema"]["PartitionColumns"][0]["Name"], "pt");
    let sid = s["SessionId"].as_str().unwrap();
    assert_eq!(
        env.read_a("pt", sid, "split_index=0&row_index=0&row_count=0")
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
        req
    };
    env.send(post(Some(md5_hex(&body))))
        .await
        .expect(StatusCode::CREATED);
    env.send(post(Some(md5_hex(&body).to_uppercase())))
        .await
        .expect(StatusCode::CREATED);
    env.send(post(None)).await.expect(StatusCode::CREATED);
    env.send(post(Some(md5_hex("something else"))))
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    // The same on write sessions.
    let wbody = json!({"Overwrite": true}).to_string();
    let req = env
        .client
        .post(format!("{}/sessions?session_type=batch_write", env.tr("t")))
        .header("content-md5", md5_hex("{}"))
        .body(wbody);
    env.send(req)
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
}

#[tokio::test]
async fn unknown_sessions_and_bad_requests() {
    let env = env().await;
    let get = |q: &str| env.client.get(format!("{}/sessions/nope?{q}", env.tr("t")));
    env.send(get("session_type=batch_read"))
        .await
        .error(StatusCode::NOT_FOUND, "NoSuchSession");
    env.send(get("session_type=batch_write"))
        .await
        .error(StatusCode::NOT_FOUND, "NoSuchSession");
    env.read("t", "nope", "split_index=0&row_index=0&row_count=0", None)
        .await
        .error(StatusCode::NOT_FOUND, "NoSuchSession");
    env.upload("t", "nope", 0, 0, lz4(0..1))
        .await
        .error(StatusCode::NOT_FOUND, "NoSuchSession");
    env.commit("t", "nope", json!([]))
        .await
        .error(StatusCode::NOT_FOUND, "NoSuchSession");
    // Unknown table, missing or wrong session_type, a malformed upload.
    env.create("nosuch", "batch_read", json!({}))
        .await
        .error(StatusCode::NOT_FOUND, "NoSuchTable");
    env.create("t", "streaming", json!({}))
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    let req = env
        .client
        .post(format!("{}/sessions", env.tr("t")))
        .body("{}");
    env.send(req)
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    let sid = env.create_write("t", json!({})).await;
    env.upload("t", &sid, 0, 0, b"not arrow".to_vec())
        .await
        .error(StatusCode::BAD_REQUEST, "InvalidArgument");
    // A read session id is no write session.
    let s = env.create_read("t", "Size", 0).await;
    let rid = s["SessionId"].as_str().unwrap();
    env.upload("t", rid, 0, 0, lz4(0..1))
        .await
        .error(StatusCode::NOT_FOUND, "NoSuchSession");
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
    let s = env.send(req).await.expect(StatusCode::CREATED);
    let sid = s["SessionId"].as_str().unwrap();
    // The session is the same table's under either shape.
    assert_eq!(
        env.read_a("t", sid, "row_index=1&row_count=2").await,
        vec![1, 2]
    );
    let a = env
        .send(env.client.get(format!(
            "{base}/data?session_id={sid}&row_index=0&row_count=0"
        )))
        .await;
    assert_eq!(column_a(&decode(&a.body)), vec![0, 1, 2, 3]);

    // A write through the schema-less shape (as Java sends data and commit without a schema).
    let sid = env.create_write("t", json!({"Overwrite": false})).await;
    let req = env
        .client
        .post(format!(
            "{base}/sessions/{sid}/data?block_number=0&attempt_number=0"
        ))
        .body(lz4(9..10));
    let m = env.send(req).await.expect(StatusCode::OK)["CommitMessage"]
        .as_str()
        .unwrap()
        .to_string();
    let req = env
        .client
        .post(format!("{base}/commit?session_id={sid}"))
        .body(json!({"CommitMessages": [m]}).to_string());
    env.send(req).await.expect(StatusCode::CREATED);
    assert_eq!(env.all_a("t").await, vec![0, 1, 2, 3, 9]);
    // The V2 path still answers its own hint for /api/storage/v1.
    let a = env
        .send(
            env.client
                .post(format!("{}/api/storage/v1", env.handle.url())),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

/// An LZ4_FRAME buffer-compressed upload whose `index`th compressed buffer declares
/// `declared` uncompressed bytes.
fn lz4_declaring(range: std::ops::Range<i64>, index: usize, declared: i64) -> Vec<u8> {
    let mut body = lz4(range);
    let p = paiio_storage::ipc_guard::compressed_prefix_positions(&body)[index];
    body[p..p + 8].copy_from_slice(&declared.to_le_bytes());
    body
}

#[tokio::test]
async fn block_with_a_huge_declared_buffer_length_is_refused() {
    // Before the guard, this upload aborted the whole process ("memory allocation failed").
    let env = env().await;
    env.seed("t", 100..103).await;
    let sid = env.create_write("t", json!({"Overwrite": true})).await;
    for index in [0, 1, 2] {
        let a = env
            .upload("t", &sid, 0, 0, lz4_declaring(0..1000, index, 1 << 62))
            .await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let message = a.json()["Message"].as_str().unwrap_or_default().to_string();
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
    let sid = env.create_write("t", json!({"Overwrite": false})).await;
    let m = env.upload_ok("t", &sid, 0, 0, lz4(0..3)).await;
    env.commit("t", &sid, json!([m]))
        .await
        .expect(StatusCode::CREATED);
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
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        assert!(String::from_utf8_lossy(&a.body).contains("more than once"));
    }
    let many: Vec<String> = (0..10_001).map(|i| format!("c{i}")).collect();
    let a = env
        .create("t", "batch_read", json!({"RequiredDataColumns": many}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&a.body).contains("at most 10000"));
    // Distinct names still work.
    let ok = env
        .create(
            "t",
            "batch_read",
            json!({"RequiredDataColumns": ["b", "a"]}),
        )
        .await;
    assert_eq!(
        ok.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
}
