//! What the server tests share: answers read whole, Arrow batches and streams, and the
//! warehouses and servers they run against.

use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{DataType, Field, Schema};
use paiio_server::{Server, ServerBuilder, ServerHandle};
use paiio_storage::clock::ManualClock;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::{
    Column, CreateTableOptions, OdpsType, TableId, TableSchema, TableService, WriteRequest,
    WriteSessionRequest,
};
use reqwest::StatusCode;
use serde_json::Value;

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, with the body as the message.
    pub fn assert_status(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{}", self.text());
        self
    }

    /// Asserts the status and that the body says `needle`.
    pub fn refused(&self, status: StatusCode, needle: &str) {
        self.assert_status(status);
        assert!(self.text().contains(needle), "{}", self.text());
    }

    /// Asserts the status; the body as JSON.
    pub fn expect(self, status: StatusCode) -> Value {
        self.assert_status(status).json()
    }

    /// Asserts a 200; the body as JSON.
    pub fn ok(self) -> Value {
        self.expect(StatusCode::OK)
    }

    /// Asserts an error answer: the status, the error `Code` and a request id.
    pub fn error(self, status: StatusCode, code: &str) {
        assert!(self.headers.get("x-odps-request-id").is_some());
        let v = self.expect(status);
        assert_eq!(v["Code"], code, "{v}");
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Answer {
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

/// The body of a response as JSON.
pub async fn json_of(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// `body` sent chunked, `size` bytes a chunk.
pub fn chunked(body: &[u8], size: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(size).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// Rows `range` of (a bigint, b string), with `b` = `s{a}`.
pub fn batch(range: Range<i64>) -> RecordBatch {
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

/// A batch of a single column `a`.
pub fn only_a(values: Vec<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values)) as ArrayRef]).unwrap()
}

pub fn ipc_with(batches: &[RecordBatch], compression: Option<CompressionType>) -> Vec<u8> {
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

/// `body` with the uncompressed-length prefix of its `index`th compressed buffer set to
/// `declared`.
pub fn declaring(mut body: Vec<u8>, index: usize, declared: i64) -> Vec<u8> {
    let p = paiio_storage::ipc_guard::compressed_prefix_positions(&body)[index];
    body[p..p + 8].copy_from_slice(&declared.to_le_bytes());
    body
}

pub fn decode(body: &[u8]) -> Vec<RecordBatch> {
    let reader =
        arrow_ipc::reader::StreamReader::try_new(Cursor::new(body.to_vec()), None).unwrap();
    reader.map(|b| b.unwrap()).collect()
}

/// A warehouse in `dir` with table `p.t` (a bigint, b string) and the partitioned table
/// `p.pt` (a bigint; pt string).
pub async fn warehouse_t_and_pt(dir: &std::path::Path) -> Arc<LocalWarehouse> {
    let wh = Arc::new(LocalWarehouse::open(dir.join("wh")).unwrap());
    let column = |name, ty| Column::new(name, ty);
    let t = vec![column("a", OdpsType::BigInt), column("b", OdpsType::String)];
    let pt = vec![column("a", OdpsType::BigInt)];
    for (name, columns, partitions) in [
        ("t", t, vec![]),
        ("pt", pt, vec![column("pt", OdpsType::String)]),
    ] {
        let schema = TableSchema::new(columns, partitions).unwrap();
        let table = TableId::new("p", None, name).unwrap();
        wh.create_table(&table, &schema, CreateTableOptions::default())
            .await
            .unwrap();
    }
    wh
}

/// Writes `batches` through the service: a session, one stream, closed; commits when asked.
/// The session id.
pub async fn stage(
    service: &LocalWarehouse,
    table: &TableId,
    batches: Vec<RecordBatch>,
    commit: bool,
) -> String {
    let session = service
        .create_write_session(&WriteSessionRequest::new(table.clone()))
        .await
        .unwrap();
    let sid = session.session_id;
    let stream = service
        .create_write_stream(table, &sid, None, false)
        .await
        .unwrap();
    service
        .write(WriteRequest {
            table: table.clone(),
            session_id: sid.clone(),
            stream_id: stream.stream_id.clone(),
            version: stream.version,
            row_offset: None,
            access_token: None,
            batches,
        })
        .await
        .unwrap();
    service
        .close_write_stream(table, &sid, &stream.stream_id, stream.version)
        .await
        .unwrap();
    if commit {
        service
            .commit_write_session(table, &sid, None)
            .await
            .unwrap();
    }
    sid
}

/// A server on a warehouse with a manual clock and one table `p.t`.
pub struct Served {
    pub _dir: tempfile::TempDir,
    pub service: Arc<LocalWarehouse>,
    pub clock: ManualClock,
    pub table: TableId,
    pub handle: ServerHandle,
    pub http: reqwest::Client,
}

/// Table `p.t` of `schema` holding `rows` (when there are any), served anonymously with the
/// admin endpoints and a manual clock, configured further by `configure`.
pub async fn serve(
    schema: TableSchema,
    rows: Option<RecordBatch>,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let service = Arc::new(
        LocalWarehouse::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap(),
    );
    let table = TableId::new("p", None, "t").unwrap();
    service
        .create_table(&table, &schema, Default::default())
        .await
        .unwrap();
    if let Some(rows) = rows {
        stage(&service, &table, vec![rows], true).await;
    }
    let builder = Server::builder(service.clone())
        .allow_anonymous(true)
        .admin(true)
        .clock(clock.clone());
    let handle = configure(builder)
        .build()
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    Served {
        _dir: dir,
        service,
        clock,
        table,
        handle,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl Served {
    /// A GET of `path` (from the root of the server).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.handle.url()))
            .send()
            .await
            .unwrap()
    }

    /// A POST of `body` to `path` (from the root of the server).
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.handle.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A call of an admin endpoint under `/__paiio/`, which must succeed; its JSON answer.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/__paiio/{path}", self.handle.url()));
        if let Some(b) = body {
            request = request
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "admin {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The fault and limit status of the admin endpoint.
    pub async fn faults(&self) -> Value {
        self.admin(reqwest::Method::GET, "faults", None).await
    }
}
