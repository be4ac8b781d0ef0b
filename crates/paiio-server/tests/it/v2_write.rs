//! Storage API V2 writes and blobs over HTTP, against an in-process server on a LocalWarehouse.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_ipc::CompressionType;
use arrow_schema::{DataType, Field, Schema};
use md5::{Digest, Md5};
use paiio_server::{Limits, Server, ServerHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    Answer, batch, chunked, declaring, decode, ipc_with, only_a, send, warehouse_t_and_pt,
};

const TABLE: &str = "projects.p.tables.t";
const PTABLE: &str = "projects.p.tables.pt";
const OCTETS: &str = "application/octet-stream";

struct Env {
    _dir: tempfile::TempDir,
    handle: ServerHandle,
    client: reqwest::Client,
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn env() -> Env {
    env_with(Limits::default()).await
}

async fn env_with(limits: Limits) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse_t_and_pt(dir.path()).await;
    let server = Server::builder(wh)
        .allow_anonymous(true)
        .limits(limits)
        .blob_dir(dir.path().join("blobs"))
        .build()
        .unwrap();
    let handle = server.bind("127.0.0.1:0").await.unwrap();
    Env {
        _dir: dir,
        handle,
        client: reqwest::Client::new(),
    }
}

impl Env {
    fn url(&self, action: &str, target: &str, extra: &[(&str, &str)]) -> String {
        let mut u = format!(
            "{}/api/storage/v2?Action={action}&Target={}",
            self.handle.url(),
            enc(target)
        );
        for (k, v) in extra {
            u.push_str(&format!("&{k}={}", enc(v)));
        }
        u
    }

    async fn post_json(
        &self,
        action: &str,
        target: &str,
        extra: &[(&str, &str)],
        body: Value,
    ) -> Answer {
        let req = self
            .client
            .post(self.url(action, target, extra))
            .header("content-type", "application/json")
            .body(body.to_string());
        send(req).await
    }

    async fn post_bytes(
        &self,
        action: &str,
        target: &str,
        extra: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut req = self.client.post(self.url(action, target, extra)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(req).await
    }

    /// A call that names the session `sid` in its query.
    async fn session_call(&self, action: &str, target: &str, sid: &str, body: Value) -> Answer {
        self.post_json(action, target, &[("SessionId", sid)], body)
            .await
    }

    async fn create_session(&self, target: &str, body: Value) -> String {
        let a = self
            .post_json("TableCreateWriteSession", target, &[], body)
            .await;
        assert!(a.header("x-odps-max-storage-route-token").is_some());
        let v = a.ok();
        assert_eq!(v["WarningMessage"], Value::Null);
        v["SessionId"].as_str().unwrap().to_string()
    }

    async fn create_stream(&self, target: &str, sid: &str, body: Value) -> Value {
        let a = self
            .session_call("TableCreateWriteStream", target, sid, body)
            .await;
        assert!(a.header("x-odps-max-storage-route-token").is_some());
        a.ok()
    }

    /// A new write session on `TABLE` with the stream `id` open at `version`.
    async fn session_with_stream(&self, id: &str, version: u64) -> String {
        let sid = self.create_session(TABLE, json!({})).await;
        let stream = json!({"StreamId": id, "StreamVersion": version});
        self.create_stream(TABLE, &sid, stream).await;
        sid
    }

    async fn write(
        &self,
        target: &str,
        sid: &str,
        stream: &str,
        version: &str,
        ipc: Vec<u8>,
    ) -> Answer {
        let q = [
            ("SessionId", sid),
            ("StreamId", stream),
            ("StreamVersion", version),
            ("Count", "0"),
        ];
        let h = [("content-type", OCTETS)];
        self.post_bytes("TableWrite", target, &q, &h, ipc).await
    }

    /// A TableWrite of `body` to stream 0 version 1 of `TABLE`, with a Content-Encoding.
    async fn write_encoded(&self, sid: &str, encoding: &str, body: Vec<u8>) -> Answer {
        let q = stream_0(sid);
        let h = [("content-encoding", encoding)];
        self.post_bytes("TableWrite", TABLE, &q, &h, body).await
    }

    /// A TableWrite of `ipc` to stream 0 version 1 of `TABLE`, chunked, `size` bytes a chunk.
    async fn write_chunked(&self, sid: &str, ipc: &[u8], size: usize) -> Answer {
        let q = stream_0(sid);
        let req = self.client.post(self.url("TableWrite", TABLE, &q));
        send(req.header("content-type", OCTETS).body(chunked(ipc, size))).await
    }

    /// Creates the stream `id` at `version`, writes `ipc` to it and closes it.
    async fn write_stream(&self, target: &str, sid: &str, id: &str, version: u64, ipc: Vec<u8>) {
        let stream = json!({"StreamId": id, "StreamVersion": version});
        self.create_stream(target, sid, stream).await;
        self.write(target, sid, id, &version.to_string(), ipc)
            .await
            .ok();
        self.close(target, sid, id, version).await;
    }

    async fn close(&self, target: &str, sid: &str, stream: &str, version: u64) {
        let body = json!({"SessionId": sid, "StreamId": stream, "StreamVersion": version});
        let v = self
            .session_call("TableCloseWriteStream", target, sid, body)
            .await
            .ok();
        assert_eq!(v, json!({"WarningMessage": null}));
    }

    async fn commit(&self, target: &str, sid: &str, body: Value) -> Answer {
        self.session_call("TableCommitWriteSession", target, sid, body)
            .await
    }

    /// Closes stream 0 version 1 of the session `sid` on `TABLE` and commits the session;
    /// the commit's answer.
    async fn close_and_commit(&self, sid: &str) -> Value {
        self.close(TABLE, sid, "0", 1).await;
        self.commit(TABLE, sid, json!({})).await.ok()
    }

    /// The RecordCount of stream 0 of the session `sid` on `TABLE`.
    async fn record_count(&self, sid: &str) -> i64 {
        let body = json!({"SessionId": sid, "StreamId": "0"});
        let v = self
            .session_call("TableGetWriteStream", TABLE, sid, body)
            .await
            .ok();
        v["RecordCount"].as_i64().unwrap()
    }

    /// All rows of a table as (a, b) pairs, sorted.
    async fn read_all(&self, target: &str) -> Vec<(i64, Option<String>)> {
        let s = self
            .post_json("TableCreateReadSession", target, &[], json!({}))
            .await
            .ok();
        let sid = s["SessionId"].as_str().unwrap().to_string();
        let splits = s["SplitsCount"].as_i64().unwrap();
        let mut rows = Vec::new();
        for i in 0..splits {
            let q = [("SessionId", sid.as_str()), ("Index", &i.to_string())];
            let a = self.post_json("TableRead", target, &q, json!({})).await;
            for batch in decode(&a.assert_status(StatusCode::OK).body) {
                let a = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                let b = batch
                    .column_by_name("b")
                    .map(|c| c.as_any().downcast_ref::<StringArray>().unwrap());
                for r in 0..batch.num_rows() {
                    let bv = b.and_then(|b| (!b.is_null(r)).then(|| b.value(r).to_string()));
                    rows.push((a.value(r), bv));
                }
            }
        }
        rows.sort();
        rows
    }
}

fn ipc(range: std::ops::Range<i64>) -> Vec<u8> {
    ipc_with(&[batch(range)], None)
}

fn expected(range: std::ops::Range<i64>) -> Vec<(i64, Option<String>)> {
    range.map(|i| (i, Some(format!("s{i}")))).collect()
}

#[tokio::test]
async fn full_write_flow_reads_back() {
    let env = env().await;
    let sid = env
        .create_session(TABLE, json!({"PartialPartitionSpec": "", "Flags": {}}))
        .await;
    let s = env
        .create_stream(TABLE, &sid, json!({"StreamId": "0", "StreamVersion": 1}))
        .await;
    assert_eq!(s["SchemaVersion"], 0);
    assert!(s["TableId"].is_string());
    let cols = s["TableSchema"]["DataColumns"].as_array().unwrap();
    assert_eq!(cols.len(), 2);
    assert_eq!(cols[0]["columnType"]["MemberName"], "a");

    // A chunked (storage_api_v2 style) upload, uncompressed.
    let a = env.write_chunked(&sid, &ipc(0..5), 7).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("x-odps-max-storage-route-token").is_some());
    assert_eq!(
        a.json(),
        json!({"CommitMessage": null, "WarningMessage": null, "ExactlyOnceRowOffset": 5,
               "RowsWritten": 5, "Duplicate": false})
    );
    // ZSTD and LZ4_FRAME Arrow buffer compression, with Content-Length.
    let zstd = ipc_with(&[batch(5..8), batch(8..10)], Some(CompressionType::ZSTD));
    let v = env.write(TABLE, &sid, "0", "1", zstd).await.ok();
    assert_eq!(v["ExactlyOnceRowOffset"], 10);
    let lz4 = ipc_with(&[batch(10..12)], Some(CompressionType::LZ4_FRAME));
    env.write(TABLE, &sid, "0", "1", lz4).await.ok();

    let get_session = || env.session_call("TableGetWriteSession", TABLE, &sid, json!({}));
    let g = get_session().await.ok();
    assert_eq!(g["WarningMessage"], Value::Null);
    assert_eq!(g["MinUncommittedStagingId"], Value::Null);
    assert_eq!(g["Streams"][0]["StreamId"], "0");
    assert_eq!(g["Streams"][0]["Status"], "OPEN");

    // Nothing is visible before the commit.
    assert!(env.read_all(TABLE).await.is_empty());
    env.close(TABLE, &sid, "0", 1).await;
    // The commit, then the same commit retried after a lost answer: it succeeds again,
    // without adding rows.
    for _ in 0..2 {
        assert_eq!(
            env.commit(TABLE, &sid, json!({})).await.ok(),
            json!({"TableVersion": 1, "RecordCount": 12})
        );
        assert_eq!(env.read_all(TABLE).await, expected(0..12));
    }
    assert_eq!(get_session().await.ok()["SessionStatus"], "COMMITTED");

    let ws = env
        .session_call("TableGetWriteSchema", TABLE, &sid, json!({}))
        .await
        .ok();
    assert_eq!(
        ws["TableSchema"]["DataColumns"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn overwrite_flag_and_static_partition() {
    let env = env().await;
    for (flags, range) in [
        (json!({}), 0..3),
        (json!({"overwrite": "true"}), 3..5),
        (json!({"overwrite": true}), 5..6),
    ] {
        let sid = env
            .create_session(TABLE, json!({"PartialPartitionSpec": "", "Flags": flags}))
            .await;
        env.write_stream(TABLE, &sid, "s", 0, ipc(range)).await;
        env.commit(TABLE, &sid, json!({})).await.ok();
    }
    assert_eq!(env.read_all(TABLE).await, expected(5..6));

    // A static partition of a partitioned table: the data carries only `a`.
    let sid = env
        .create_session(PTABLE, json!({"PartialPartitionSpec": "pt=x", "Flags": {}}))
        .await;
    let data = ipc_with(&[only_a(vec![1, 2])], None);
    env.write_stream(PTABLE, &sid, "0", 1, data).await;
    env.commit(PTABLE, &sid, json!({})).await.ok();
    assert_eq!(env.read_all(PTABLE).await, vec![(1, None), (2, None)]);
}

#[tokio::test]
async fn exactly_once_offsets_and_tokens() {
    let env = env().await;
    let sid = env.create_session(TABLE, json!({})).await;
    let stream = json!({"StreamId": "0", "StreamVersion": 1, "ExactlyOnceMode": true});
    let s = env.create_stream(TABLE, &sid, stream.clone()).await;
    let token = s["AccessToken"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    // A retried create of the same open version answers the same stream.
    let again = env.create_stream(TABLE, &sid, stream).await;
    assert_eq!(again["AccessToken"], token);

    let write = |offset: &'static str, body: Vec<u8>, tok: Option<String>| {
        let env = &env;
        let sid = sid.clone();
        async move {
            let q = [
                ("SessionId", sid.as_str()),
                ("StreamId", "0"),
                ("StreamVersion", "1"),
                ("RowOffset", offset),
            ];
            let mut h = vec![("content-type", OCTETS)];
            if let Some(t) = &tok {
                h.push(("x-odps-max-storage-write-access-token", t.as_str()));
            }
            env.post_bytes("TableWrite", TABLE, &q, &h, body).await
        }
    };
    let a = write("0", ipc(0..3), Some(token.clone())).await.ok();
    assert_eq!(
        a,
        json!({"CommitMessage": null, "WarningMessage": null, "ExactlyOnceRowOffset": 3,
               "RowsWritten": 3, "Duplicate": false})
    );
    // The replay is acknowledged once, not applied again.
    let a = write("0", ipc(0..3), Some(token.clone())).await.ok();
    assert_eq!(a["ExactlyOnceRowOffset"], 3);
    assert_eq!(
        (a["RowsWritten"].clone(), a["Duplicate"].clone()),
        (json!(0), json!(true))
    );
    // A gap is refused.
    let gap = write("10", ipc(10..12), Some(token.clone())).await;
    gap.assert_status(StatusCode::BAD_REQUEST);
    // A wrong or missing token is refused.
    let wrong = write("3", ipc(3..5), Some("nope".into())).await;
    assert!(
        wrong.status.is_client_error() && wrong.status != StatusCode::NOT_FOUND,
        "{}",
        wrong.status
    );
    let missing = write("3", ipc(3..5), None).await;
    assert!(missing.status.is_client_error(), "{}", missing.status);
    let a = write("3", ipc(3..5), Some(token.clone())).await.ok();
    assert_eq!(a["ExactlyOnceRowOffset"], 5);

    // GetWriteStream (GET, storage_api_v2 style) reports the offset and the token.
    let q = [
        ("SessionId", sid.as_str()),
        ("StreamId", "0"),
        ("StreamVersion", "1"),
        ("ExactlyOnceMode", "true"),
    ];
    let get = env.client.get(env.url("TableGetWriteStream", TABLE, &q));
    let g = send(get.header("content-type", "application/json"))
        .await
        .ok();
    assert_eq!(g["RowOffset"], 5);
    assert_eq!(g["AccessToken"], token);

    env.close_and_commit(&sid).await;
    assert_eq!(env.read_all(TABLE).await, expected(0..5));
}

/// The query of a call on stream 0 version 1 of the session `sid`.
fn stream_0(sid: &str) -> [(&str, &str); 3] {
    [
        ("SessionId", sid),
        ("StreamId", "0"),
        ("StreamVersion", "1"),
    ]
}

/// The query of a TableWrite of 5 rows to stream 0 version 1.
fn five_rows_to_stream_0(sid: &str) -> [(&str, &str); 4] {
    [
        ("SessionId", sid),
        ("StreamId", "0"),
        ("StreamVersion", "1"),
        ("Count", "5"),
    ]
}

/// The headers of an upload of `content_type` sent as attempt `index` of the retry
/// sequence `trace`.
fn retry_headers<'a>(
    content_type: &'a str,
    trace: &'a str,
    index: &'a str,
) -> [(&'a str, &'a str); 3] {
    [
        ("content-type", content_type),
        ("odps-tunnel-retry-trace-id", trace),
        ("odps-tunnel-retry-index", index),
    ]
}

/// A TableWrite retried by PyODPS after its answer was lost (the same
/// `odps-tunnel-retry-trace-id`, `odps-tunnel-retry-index` above 0) gets the first answer
/// and is not applied again, in the default (not exactly-once) mode, which sends no
/// RowOffset. A new trace id is a new write, and a retry index 0 is never a replay.
#[tokio::test]
async fn retried_write_is_applied_once() {
    let env = env().await;
    let sid = env.session_with_stream("0", 1).await;
    let q = five_rows_to_stream_0(&sid);
    let upload = |trace: &'static str, index: &'static str, range: std::ops::Range<i64>| {
        let h = retry_headers(OCTETS, trace, index);
        let body = ipc(range);
        let env = &env;
        async move { env.post_bytes("TableWrite", TABLE, &q, &h, body).await.ok() }
    };
    let first = upload("trace-a", "0", 0..5).await;
    assert_eq!(first["RowsWritten"], 5);
    // The retries of the same sequence: the first answer, nothing written.
    assert_eq!(upload("trace-a", "1", 0..5).await, first);
    assert_eq!(upload("trace-a", "2", 0..5).await, first);
    // Another sequence writes; so does an index 0, which is always a first attempt.
    let second = upload("trace-b", "0", 5..10).await;
    assert_eq!(second["ExactlyOnceRowOffset"], 10);
    let third = upload("trace-b", "0", 10..12).await;
    assert_eq!(third["ExactlyOnceRowOffset"], 12);
    assert_eq!(env.close_and_commit(&sid).await["RecordCount"], 12);
    assert_eq!(env.read_all(TABLE).await, expected(0..12));
}

/// A retry that arrives while its first attempt is still being received (the client gave up
/// waiting, as after a timeout) waits for that attempt instead of being applied beside it,
/// and gets its answer: the rows are committed once.
#[tokio::test]
async fn a_retry_racing_its_first_attempt_is_applied_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = env().await;
    let sid = env.session_with_stream("0", 1).await;
    let q = five_rows_to_stream_0(&sid);
    let body = ipc(0..5);
    // The first attempt, by hand: headers and half of the body, then a pause.
    let url = env.url("TableWrite", TABLE, &q);
    let path = url.strip_prefix(&env.handle.url()).unwrap().to_string();
    let mut first = tokio::net::TcpStream::connect(env.handle.addr())
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/octet-stream\r\n\
         odps-tunnel-retry-trace-id: race-1\r\nodps-tunnel-retry-index: 0\r\ncontent-length: {}\r\n\r\n",
        env.handle.addr(),
        body.len()
    );
    first.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    first.write_all(&body[..half]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The retry, complete, while the first attempt is still arriving.
    let h = retry_headers(OCTETS, "race-1", "1");
    let retry = env.post_bytes("TableWrite", TABLE, &q, &h, body.clone());
    let finish_first = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.write_all(&body[half..]).await.unwrap();
        first.flush().await.unwrap();
        // Its answer comes, but too late: the client had retried already.
        let mut answer = vec![0u8; 4096];
        let n = first.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    let (retried, late) = tokio::join!(retry, finish_first);
    assert!(late.starts_with("HTTP/1.1 200"), "{late}");
    let retried = retried.ok();
    assert_eq!(retried["RowsWritten"], 5, "{retried}");
    assert_eq!(retried["ExactlyOnceRowOffset"], 5, "{retried}");
    assert_eq!(env.close_and_commit(&sid).await["RecordCount"], 5);
    assert_eq!(env.read_all(TABLE).await, expected(0..5));
}

#[tokio::test]
async fn get_write_stream_answers_both_casings() {
    let env = env().await;
    let sid = env.session_with_stream("w", 1).await;
    env.write(TABLE, &sid, "w", "1", ipc(0..4)).await.ok();
    // storage_api_v2: GET, no body.
    let q = [
        ("SessionId", sid.as_str()),
        ("StreamId", "w"),
        ("StreamVersion", "1"),
    ];
    let url = env.url("TableGetWriteStream", TABLE, &q);
    let g = send(env.client.get(url)).await.ok();
    for (k, v) in [
        ("Status", json!("OPEN")),
        ("status", json!("OPEN")),
        ("RecordCount", json!(4)),
        ("recordCount", json!(4)),
    ] {
        assert_eq!(g[k], v, "{k}: {g}");
    }
    assert_eq!(g["SchemaVersion"], 0);
    assert!(g["TableSchema"]["DataColumns"].is_array());
    assert!(g["TableId"].is_string());
    // maxstorage: POST with a JSON body.
    env.close(TABLE, &sid, "w", 1).await;
    let body = json!({"StreamId": "w", "StreamVersion": 1});
    let g = env
        .post_json("TableGetWriteStream", TABLE, &q, body)
        .await
        .ok();
    assert_eq!(g["status"], "CLOSED");
    assert_eq!(g["Status"], "CLOSED");
    assert_eq!(g["recordCount"], 4);
    // Unknown stream: 404.
    let body = json!({"StreamId": "nope", "StreamVersion": 1});
    let a = env
        .session_call("TableGetWriteStream", TABLE, &sid, body)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn commit_with_stream_lists_and_abort() {
    let env = env().await;
    let sid = env.create_session(TABLE, json!({})).await;
    env.write_stream(TABLE, &sid, "0", 1, ipc(0..2)).await;
    env.write_stream(TABLE, &sid, "1", 1, ipc(2..4)).await;
    // Version 2 of stream 1 supersedes version 1.
    env.write_stream(TABLE, &sid, "1", 2, ipc(7..8)).await;

    let bad = json!({"StreamIds": ["0", "1"], "StreamVersions": [1]});
    let bad = env.commit(TABLE, &sid, bad).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let good = json!({"StreamIds": ["0", "1"], "StreamVersions": [1, 2]});
    env.commit(TABLE, &sid, good).await.ok();
    let mut want = expected(0..2);
    want.extend(expected(7..8));
    assert_eq!(env.read_all(TABLE).await, want);

    // Abort discards everything; an aborted session cannot be committed.
    let sid = env.create_session(TABLE, json!({})).await;
    env.write_stream(TABLE, &sid, "0", 1, ipc(100..110)).await;
    let a = env
        .session_call("TableAbortWriteSession", TABLE, &sid, json!({}))
        .await
        .ok();
    assert_eq!(a, json!({}));
    let c = env.commit(TABLE, &sid, json!({})).await;
    assert!(c.status.is_client_error(), "{}", c.status);
    assert_eq!(env.read_all(TABLE).await, want);
}

#[tokio::test]
async fn batch_compatible_blocks_and_commit_messages() {
    let env = env().await;
    let q = [
        ("WriteMode", "BatchCompatible"),
        ("enableQuotaToken", "true"),
    ];
    let body = json!({"PartitionSpec": "", "Overwrite": false,
        "DynamicPartitionOptions": {"InvalidStrategy": "Exception", "InvalidLimit": -1, "DynamicPartitionLimit": -1},
        "ArrowOptions": {"TimestampUnit": "nano", "DatetimeUnit": "milli"},
        "SupportWriteCluster": false, "MaxFieldSize": 0, "EnhanceWriteCheck": true, "SupportSaveToPangu": false});
    let a = env
        .post_json("TableCreateWriteSession", TABLE, &q, body)
        .await;
    assert!(a.header("x-odps-max-storage-route-token").is_some());
    let s = a.ok();
    let sid = s["SessionId"].as_str().unwrap().to_string();
    assert_eq!(s["DataSchema"]["DataColumns"][0]["Name"], "a");
    assert_eq!(s["SessionStatus"], "NORMAL");
    assert!(s["MaxBlockNumber"].as_u64().unwrap() > 0);

    let mut messages = Vec::new();
    for (block, attempt, range, keep) in
        [(0, 0, 0..3, true), (1, 0, 3..5, false), (1, 1, 5..9, true)]
    {
        let stream_id = format!("block-{block}-attempt-{attempt}");
        let r = env
            .create_stream(
                TABLE,
                &sid,
                json!({"StreamId": stream_id, "StreamVersion": 1}),
            )
            .await;
        let qt = r["QuotaToken"].as_str().unwrap().to_string();
        let (b, at) = (block.to_string(), attempt.to_string());
        let q = [
            ("WriteMode", "BatchCompatible"),
            ("SessionId", sid.as_str()),
            ("BlockNumber", &b),
            ("AttemptNumber", &at),
            ("quotaToken", &qt),
        ];
        let rows = range.end - range.start;
        let upload = |index| {
            let h = retry_headers("application/vnd.apache.arrow.stream", "trace-1", index);
            let (env, q, body) = (&env, &q, ipc(range.clone()));
            async move { env.post_bytes("TableWrite", TABLE, q, &h, body).await }
        };
        let w = upload("0").await.ok();
        assert_eq!(w["RecordCount"], rows);
        let cm: Value = serde_json::from_str(w["CommitMessage"].as_str().unwrap()).unwrap();
        assert_eq!(cm["BlockNumber"], block);
        assert_eq!(cm["AttemptNumber"], attempt);
        assert_eq!(cm["WriterStats"]["RecordNum"], rows);
        if block == 0 {
            // A replay of the same upload (retry index 1) answers the first answer again.
            assert_eq!(upload("1").await.ok(), w);
        }
        if keep {
            messages.push(w["CommitMessage"].clone());
        }
    }
    messages.push(Value::Null);
    let c = env
        .post_json(
            "TableCommitWriteSession",
            TABLE,
            &[("WriteMode", "BatchCompatible"), ("SessionId", &sid)],
            json!({"CommitMessages": messages}),
        )
        .await
        .ok();
    assert_eq!(c["SessionStatus"], "COMMITTED");
    let mut want = expected(0..3);
    want.extend(expected(5..9));
    assert_eq!(env.read_all(TABLE).await, want);
}

// ---- blobs ----

/// Strips and verifies the CRC-32C trailer of each 4096-byte block, then decompresses.
fn unblock(a: &Answer) -> Vec<u8> {
    let mut data = Vec::new();
    for block in a.body.chunks(4100) {
        assert!(block.len() > 4, "a final block of {} bytes", block.len());
        let (d, crc) = block.split_at(block.len() - 4);
        assert_eq!(crc32c::crc32c(d).to_le_bytes(), crc, "CRC mismatch");
        data.extend_from_slice(d);
    }
    match a.header("content-encoding") {
        None => data,
        Some("zstd") => zstd::stream::decode_all(&data[..]).unwrap(),
        Some("x-lz4-frame") => {
            let mut out = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&data[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
}

fn parse_download_frames(mut p: &[u8], n: usize) -> Vec<(Value, Vec<u8>, Value)> {
    let mut take = || {
        let len = i64::from_le_bytes(p[..8].try_into().unwrap()) as usize;
        let part = p[8..8 + len].to_vec();
        p = &p[8 + len..];
        part
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let h: Value = serde_json::from_slice(&take()).unwrap();
        let d = take();
        let f: Value = serde_json::from_slice(&take()).unwrap();
        out.push((h, d, f));
    }
    out
}

fn upload_frame(header: Value, data: &[u8], footer: Value) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [
        header.to_string().into_bytes(),
        data.to_vec(),
        footer.to_string().into_bytes(),
    ] {
        out.extend_from_slice(&(part.len() as i64).to_le_bytes());
        out.extend_from_slice(&part);
    }
    out
}

fn b64(s: &str) -> String {
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

async fn blob_read(env: &Env, refs: &[String], accept: Option<&str>) -> Answer {
    let mut req = env
        .client
        .post(env.url("BlobRead", "generic.blob", &[]))
        .header("content-type", "application/json")
        .body(json!({"BlobReferences": refs}).to_string());
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    send(req).await
}

#[tokio::test]
async fn blobs_single_batch_and_read() {
    let env = env().await;
    let sid = env.create_session(TABLE, json!({})).await;
    let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let q = [
        ("SessionId", sid.as_str()),
        ("StreamId", "0"),
        ("StreamVersion", "1"),
        ("PartitionValues", ""),
        ("ColumnIndex", "1"),
    ];
    let mut refs = Vec::new();
    let zstd_body = zstd::stream::encode_all(&big[..], 3).unwrap();
    let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
    lz4.write_all(b"hello lz4").unwrap();
    let lz4_body = lz4.finish().unwrap();
    for (body, enc, plain) in [
        (big.clone(), None, big.clone()),
        (zstd_body, Some("zstd"), big.clone()),
        (lz4_body, Some("x-lz4-frame"), b"hello lz4".to_vec()),
    ] {
        let mut h = vec![("content-type", OCTETS)];
        if let Some(e) = enc {
            h.push(("content-encoding", e));
        }
        let a = env.post_bytes("TableWriteBlob", TABLE, &q, &h, body).await;
        assert_eq!(a.status, StatusCode::OK);
        let v = a.json();
        assert_eq!(v["Size"], plain.len());
        assert_eq!(v["MD5Value"], hex::encode(Md5::digest(&plain)));
        assert_eq!(v["WarningMessage"], Value::Null);
        let r = b64(v["BlobReference"].as_str().unwrap());
        refs.push((r, plain));
    }

    // One reference: the raw bytes, CRC-blocked (10 000 bytes = 3 blocks, 12 CRC bytes).
    let a = blob_read(&env, &[refs[0].0.clone()], None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.len(), 10_012);
    assert_eq!(unblock(&a), big);
    for accept in ["zstd", "x-lz4-frame"] {
        let a = blob_read(&env, &[refs[2].0.clone()], Some(accept)).await;
        assert_eq!(a.header("content-encoding"), Some(accept));
        assert_eq!(unblock(&a), b"hello lz4");
    }

    // Batch upload: three frames with CRC-32, MD5 and no checksum.
    let mut body = upload_frame(
        json!({"PartitionValues": [], "ColumnIndex": 1, "ContentType": "text/plain", "CustomFileName": "x.txt"}),
        b"abc",
        json!({"Checksum": {"Type": 1, "Crc32": 891568578u32}}),
    );
    body.extend(upload_frame(
        json!({"PartitionValues": [], "ColumnIndex": 1}),
        &big,
        json!({"Checksum": {"Type": 2, "MD5": hex::encode(Md5::digest(&big))}}),
    ));
    body.extend(upload_frame(
        json!({"PartitionValues": [], "ColumnIndex": 1}),
        b"",
        json!({"Checksum": {"Type": 0}}),
    ));
    let bq = [
        ("SessionId", sid.as_str()),
        ("StreamId", "0"),
        ("StreamVersion", "1"),
        ("Mode", "Batch"),
    ];
    let zbody = zstd::stream::encode_all(&body[..], 1).unwrap();
    let h = [("content-encoding", "zstd")];
    let v = env
        .post_bytes("TableWriteBlob", TABLE, &bq, &h, zbody)
        .await
        .ok();
    let batch_refs: Vec<String> = v["BlobReferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| b64(r.as_str().unwrap()))
        .collect();
    assert_eq!(batch_refs.len(), 3);

    // Several references: frames, in request order, under every compression.
    let mut all: Vec<String> = batch_refs.clone();
    all.push(refs[1].0.clone());
    for accept in [None, Some("zstd"), Some("x-lz4-frame")] {
        let a = blob_read(&env, &all, accept).await;
        assert_eq!(a.status, StatusCode::OK);
        let frames = parse_download_frames(&unblock(&a), 4);
        assert_eq!(frames[0].0["ContentType"], "text/plain");
        assert_eq!(frames[0].0["CustomFileName"], "x.txt");
        assert_eq!(frames[0].1, b"abc");
        assert_eq!(frames[1].1, big);
        assert!(frames[2].1.is_empty());
        assert_eq!(frames[3].1, big);
    }

    // Bad references: 400; a well-formed unknown one: 404.
    let a = blob_read(&env, &["../../etc/passwd".to_string()], None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = blob_read(&env, &[format!("paiio-blob:{}", "0".repeat(32))], None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // Malformed frames and checksum mismatches: 400.
    let bad_crc = upload_frame(
        json!({"ColumnIndex": 1}),
        b"abc",
        json!({"Checksum": {"Type": 1, "Crc32": 1}}),
    );
    let truncated = body[..body.len() - 3].to_vec();
    for b in [bad_crc, truncated, vec![0xff; 8]] {
        let a = env.post_bytes("TableWriteBlob", TABLE, &bq, &[], b).await;
        a.assert_status(StatusCode::BAD_REQUEST);
    }
    // An unsupported Content-Encoding: 400. An unknown session: 404.
    let h = [("content-encoding", "gzip")];
    let a = env
        .post_bytes("TableWriteBlob", TABLE, &q, &h, b"x".to_vec())
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let q = [("SessionId", "nosuchsession")];
    let a = env
        .post_bytes("TableWriteBlob", TABLE, &q, &[], b"x".to_vec())
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_is_refused() {
    let env = env_with(Limits {
        max_upload_body: 4096,
        ..Limits::default()
    })
    .await;
    let sid = env.session_with_stream("0", 1).await;
    let write = |body: Vec<u8>| env.write(TABLE, &sid, "0", "1", body);

    // Malformed Arrow: 400 naming the problem.
    let a = write(b"definitely not arrow".to_vec()).await;
    a.refused(StatusCode::BAD_REQUEST, "Arrow");
    let mut cut = ipc(0..3);
    cut.truncate(cut.len() - 20);
    assert_eq!(write(cut).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(write(Vec::new()).await.status, StatusCode::BAD_REQUEST);

    // The wrong schema: `a` as a string.
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
    let b = RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(vec!["x"])) as ArrayRef],
    )
    .unwrap();
    let a = write(ipc_with(&[b], None)).await;
    a.assert_status(StatusCode::BAD_REQUEST);

    // Unknown session: 404.
    assert_eq!(
        env.write(TABLE, "nosuchsession", "0", "1", ipc(0..1))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let a = env
        .session_call("TableGetWriteSession", TABLE, "nosuchsession", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // Over the upload limit: 413 (Content-Length and chunked).
    let big = ipc(0..2000);
    assert!(big.len() > 4096);
    assert_eq!(
        write(big.clone()).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let a = env.write_chunked(&sid, &big, 1000).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    // An unsupported Content-Encoding on TableWrite: 400.
    let a = env.write_encoded(&sid, "gzip", ipc(0..1)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // Unknown actions and streaming modes: 400.
    let a = env
        .post_json("TableFrobnicate", TABLE, &[], json!({}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let q = [("WriteMode", "Streaming")];
    let a = env
        .post_json("TableCreateWriteSession", TABLE, &q, json!({}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // The stream still works after all that.
    assert_eq!(write(ipc(0..3)).await.ok()["ExactlyOnceRowOffset"], 3);
}

#[tokio::test]
async fn table_write_with_a_huge_declared_buffer_length_is_refused() {
    // Before the guard, the LZ4 case aborted the whole process ("memory allocation failed").
    let env = env().await;
    let sid = env.session_with_stream("0", 1).await;
    for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
        for index in [0, 1, 2] {
            for declared in [1i64 << 62, i64::MAX, 1 << 40, -7] {
                // The `index`th compressed buffer declares `declared` uncompressed bytes.
                let body = ipc_with(&[batch(0..1000)], Some(codec));
                let body = declaring(body, index, declared);
                let a = env.write(TABLE, &sid, "0", "1", body).await;
                let a = a.expect(StatusCode::BAD_REQUEST);
                let message = a["Message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("record batch 0") && message.contains(&declared.to_string()),
                    "{message}"
                );
            }
        }
    }
    assert_eq!(env.record_count(&sid).await, 0);
    // The server is up and the stream still takes a good upload.
    let good = ipc_with(&[batch(0..3)], Some(CompressionType::LZ4_FRAME));
    assert_eq!(
        env.write(TABLE, &sid, "0", "1", good).await.ok()["ExactlyOnceRowOffset"],
        3
    );
}

#[tokio::test]
async fn decompression_bombs_are_refused_at_the_decoded_limit() {
    let env = env().await;
    let sid = env.session_with_stream("0", 1).await;
    // A few hundred KB of zstd that decompresses to 300 MiB of zeros.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..300 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let a = env.write_encoded(&sid, "zstd", bomb).await;
    a.refused(StatusCode::PAYLOAD_TOO_LARGE, &(256usize << 20).to_string());
    assert_eq!(env.record_count(&sid).await, 0);
    // A small limit applies the same way, and a good compressed upload still passes.
    let env = env_with(Limits {
        max_decoded_upload: 4096,
        ..Limits::default()
    })
    .await;
    let sid = env.session_with_stream("0", 1).await;
    let big = zstd::stream::encode_all(&ipc(0..2000)[..], 3).unwrap();
    let a = env.write_encoded(&sid, "zstd", big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Arrow buffer compression counts against the same limit.
    let lz4 = ipc_with(&[batch(0..2000)], Some(CompressionType::LZ4_FRAME));
    let a = env.write(TABLE, &sid, "0", "1", lz4).await;
    a.refused(StatusCode::BAD_REQUEST, "decoded bytes, over the limit of");
    let small = zstd::stream::encode_all(&ipc(0..3)[..], 3).unwrap();
    let a = env.write_encoded(&sid, "zstd", small).await;
    assert_eq!(a.ok()["ExactlyOnceRowOffset"], 3);
}

#[tokio::test]
async fn blob_read_refuses_repeats_and_oversized_answers() {
    let env = env_with(Limits {
        max_blob_read_bytes: 3 << 20,
        ..Limits::default()
    })
    .await;
    let sid = env.create_session(TABLE, json!({})).await;
    let q = [("SessionId", sid.as_str())];
    let mut refs = Vec::new();
    for i in 0..3u8 {
        let a = env
            .post_bytes("TableWriteBlob", TABLE, &q, &[], vec![i; 1 << 20])
            .await;
        refs.push(a.ok()["BlobReference"].as_str().unwrap().to_string());
    }
    // The same 1 MiB blob 400 times: refused before anything is read.
    let a = blob_read(&env, &vec![refs[0].clone(); 400], None).await;
    a.refused(StatusCode::BAD_REQUEST, "more than once");
    // Too many references.
    let fake: Vec<String> = (0..1001u32)
        .map(|i| format!("paiio-blob:{i:032x}"))
        .collect();
    let a = blob_read(&env, &fake, None).await;
    a.refused(StatusCode::BAD_REQUEST, "at most 1000");
    // Three 1 MiB blobs in frames are over a 3 MiB answer.
    let a = blob_read(&env, &refs, None).await;
    a.assert_status(StatusCode::PAYLOAD_TOO_LARGE);
    // Two are fine, streamed, compressed or not, and come back intact.
    for accept in [None, Some("zstd"), Some("x-lz4-frame")] {
        let a = blob_read(&env, &refs[..2], accept).await;
        assert_eq!(a.status, StatusCode::OK);
        let frames = parse_download_frames(&unblock(&a), 2);
        assert_eq!(frames[0].1, vec![0u8; 1 << 20]);
        assert_eq!(frames[1].1, vec![1u8; 1 << 20]);
    }
}

#[tokio::test]
async fn repeated_column_names_are_refused_in_reads() {
    let env = env().await;
    let names: Vec<&str> = std::iter::repeat_n("a", 5000).collect();
    let a = env
        .post_json(
            "TableCreateReadSession",
            TABLE,
            &[],
            json!({"RequiredDataColumns": names}),
        )
        .await;
    a.refused(StatusCode::BAD_REQUEST, "more than once");
    let s = env
        .post_json(
            "TableCreateReadSession",
            TABLE,
            &[],
            json!({"RequiredDataColumns": ["a", "b"]}),
        )
        .await
        .ok();
    let sid = s["SessionId"].as_str().unwrap();
    let q = [("SessionId", sid), ("Index", "0")];
    let a = env
        .post_json("TableRead", TABLE, &q, json!({"DataColumns": ["b", "b"]}))
        .await;
    let v = a.expect(StatusCode::BAD_REQUEST);
    let message = v["Message"].as_str().unwrap();
    assert!(
        message.contains("DataColumns names the column \"b\" more than once"),
        "{message}"
    );
    // Distinct names pass the check (the empty table has no split 0 to read).
    let a = env
        .post_json("TableRead", TABLE, &q, json!({"DataColumns": ["b", "a"]}))
        .await;
    assert!(!a.text().contains("more than once"), "{}", a.text());
}

// ---- hostile requests (fuzz-style) ----

/// One hostile request.
#[derive(Debug, Clone)]
enum Hostile {
    /// A mutated upload, as a TableWrite (V2) or a V1 block.
    Upload {
        v1: bool,
        base: u8,
        mutation: Mutation,
        encoding: u8,
    },
    /// A random JSON body for a session-creating call.
    Session { call: u8, body: String },
    /// A read session naming columns, possibly repeated.
    Columns { names: Vec<String> },
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Flip {
        at: usize,
        bit: u8,
    },
    Truncate {
        at: usize,
    },
    /// A compressed buffer's uncompressed-length prefix set to a value.
    Declare {
        which: usize,
        value: i64,
    },
    /// A message's metadata length (bytes 4..8 of a message prefix) set to a value.
    MetaLength {
        value: i32,
    },
    Garbage {
        bytes: Vec<u8>,
    },
}

fn hostile() -> impl proptest::strategy::Strategy<Value = Hostile> {
    use proptest::prelude::*;
    let huge = prop_oneof![
        Just(1i64 << 62),
        Just(i64::MAX),
        Just(-1i64),
        Just(-2i64),
        Just(1i64 << 33),
        0i64..100_000
    ];
    let mutation = prop_oneof![
        Just(Mutation::None),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), huge).prop_map(|(which, value)| Mutation::Declare { which, value }),
        prop_oneof![Just(i32::MAX), Just(-5), Just(1 << 30), 0i32..4096]
            .prop_map(|value| Mutation::MetaLength { value }),
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|bytes| Mutation::Garbage { bytes }),
    ];
    let json_text = prop_oneof![
        "[ -~]{0,80}",
        Just("{\"RequiredDataColumns\": [\"a\", \"a\"]}".to_string()),
        Just("{\"SplitOptions\": {\"SplitMode\": 7, \"SplitNumber\": -1}}".to_string()),
        Just("{\"PartitionSpec\": \"pt=../../x\", \"Overwrite\": \"maybe\"}".to_string()),
        Just("[1, 2, {\"a\": null}]".to_string()),
        Just("{\"ArrowOptions\": {\"TimestampUnit\": \"eon\"}}".to_string()),
    ];
    prop_oneof![
        4 => (any::<bool>(), 0u8..3, mutation, 0u8..5)
            .prop_map(|(v1, base, mutation, encoding)| Hostile::Upload { v1, base, mutation, encoding }),
        1 => (0u8..3, json_text).prop_map(|(call, body)| Hostile::Session { call, body }),
        1 => proptest::collection::vec(prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("A".to_string())], 0..6)
            .prop_map(|names| Hostile::Columns { names }),
    ]
}

fn mutate(mut body: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    match mutation {
        Mutation::None => {}
        Mutation::Flip { at, bit } => {
            let i = at % body.len();
            body[i] ^= 1 << bit;
        }
        Mutation::Truncate { at } => body.truncate(at % body.len()),
        Mutation::Declare { which, value } => {
            let positions = paiio_storage::ipc_guard::compressed_prefix_positions(&body);
            if !positions.is_empty() {
                let p = positions[which % positions.len()];
                body[p..p + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        // The record batch message follows the schema message; set the schema's length.
        Mutation::MetaLength { value } => body[4..8].copy_from_slice(&value.to_le_bytes()),
        Mutation::Garbage { bytes } => {
            let at = bytes.len() % body.len();
            body.splice(at..at, bytes.iter().copied());
        }
    }
    body
}

/// Random and mutated bodies and headers never get a 5xx or a dropped connection, the
/// server stays up, and nothing is staged or committed unless the request succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_and_change_nothing() {
    tokio::task::block_in_place(|| hostile_requests(tokio::runtime::Handle::current()));
}

fn hostile_requests(rt: tokio::runtime::Handle) {
    use proptest::test_runner::{Config, TestRunner};
    let env = rt.block_on(env());
    let (sid, v1_url) = rt.block_on(async {
        let sid = env.session_with_stream("0", 1).await;
        let v1 = format!("{}/api/storage/v1/projects/p/tables/t", env.handle.url());
        let create = env
            .client
            .post(format!("{v1}/sessions?session_type=batch_write"));
        let created = send(create.body("{}")).await.ok();
        let v1_sid = created["SessionId"].as_str().unwrap().to_string();
        (
            sid,
            format!("{v1}/sessions/{v1_sid}/data?block_number=0&attempt_number=0"),
        )
    });
    let bases = [
        ipc_with(&[batch(0..50), batch(50..60)], None),
        ipc_with(
            &[batch(0..50), batch(50..60)],
            Some(CompressionType::LZ4_FRAME),
        ),
        ipc_with(&[batch(0..50)], Some(CompressionType::ZSTD)),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&hostile(), |case| {
            rt.block_on(async {
                let before = env.record_count(&sid).await;
                let request = match &case {
                    Hostile::Upload { v1, base, mutation, encoding } => {
                        let body = mutate(bases[*base as usize].clone(), mutation);
                        let (body, header) = match encoding {
                            0 => (body, None),
                            1 => (zstd::stream::encode_all(&body[..], 1).unwrap(), Some("zstd")),
                            2 => {
                                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                                e.write_all(&body).unwrap();
                                (e.finish().unwrap(), Some("x-lz4-frame"))
                            }
                            3 => (body, Some("zstd")),
                            _ => (body, Some("br")),
                        };
                        let mut req = if *v1 {
                            env.client.post(&v1_url)
                        } else {
                            let q = [("SessionId", sid.as_str()), ("StreamId", "0"), ("StreamVersion", "1")];
                            env.client.post(env.url("TableWrite", TABLE, &q))
                        };
                        if let Some(h) = header {
                            req = req.header("content-encoding", h);
                        }
                        req.body(body)
                    }
                    Hostile::Session { call, body } => {
                        let url = match call {
                            0 => env.url("TableCreateReadSession", TABLE, &[]),
                            1 => env.url("TableCreateWriteSession", TABLE, &[]),
                            _ => format!("{}/api/storage/v1/projects/p/tables/t/sessions?session_type=batch_read", env.handle.url()),
                        };
                        env.client.post(url).body(body.clone())
                    }
                    Hostile::Columns { names } => env
                        .client
                        .post(env.url("TableCreateReadSession", TABLE, &[]))
                        .body(json!({"RequiredDataColumns": names}).to_string()),
                };
                let response = request.send().await.map_err(|e| format!("{case:?}: the connection failed: {e}"))?;
                let status = response.status();
                let text = response.text().await.map_err(|e| format!("{case:?}: the body broke: {e}"))?;
                if status.is_server_error() {
                    return Err(format!("{case:?}: {status} {text}"));
                }
                if let Hostile::Columns { names } = &case {
                    let mut lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
                    lower.sort();
                    lower.dedup();
                    if (lower.len() == names.len()) != status.is_success() {
                        return Err(format!("{case:?}: {status} {text}"));
                    }
                }
                // The server is up, and a refused upload staged nothing.
                let after = env.record_count(&sid).await;
                if !status.is_success() && after != before {
                    return Err(format!("{case:?}: refused with {status}, but the stream went from {before} to {after} rows"));
                }
                Ok(())
            })
            .map_err(proptest::test_runner::TestCaseError::fail)
        })
        .unwrap();
    // Nothing was committed.
    assert!(rt.block_on(env.read_all(TABLE)).is_empty());
}
