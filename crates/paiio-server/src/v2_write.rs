//! Storage API V2/V3 write and blob actions (STORAGE_API.md §6.5–6.14, §8.5–8.8, §8.10).
//!
//! Batch mode maps one to one onto the [`TableService`](paiio_storage::TableService) write
//! sessions and stream versions. BatchCompatible mode (the V1 block / attempt model carried
//! over V2) maps block `B`, attempt `A` onto the backend stream `block-B-attempt-A`: each
//! upload writes a version of that stream and closes it, its commit message names the
//! version, and the commit commits exactly the listed versions.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paiio_storage::service::{SessionStatus, StreamStatus};
use paiio_storage::{
    Error as StorageError, PartitionSpec, TableId, WriteMode, WriteRequest, WriteSession,
    WriteSessionRequest, WriteStream,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::blobs::{self, BlobMeta};
use crate::codec;
use crate::error::{ApiError, ApiResult};
use crate::stream::Compression;
use crate::v2::{
    Params, json_body, json_body_or_empty, json_response, opt_u64, param, read_body,
    read_schema_json, target, with_route_token,
};

/// The request header of the exactly-once write token.
const ACCESS_TOKEN_HEADER: &str = "x-odps-max-storage-write-access-token";
/// The retry correlation headers PyODPS (`odps/tunnel/retry.py`) puts on every Storage API
/// request: one trace id per retry sequence (a call and its retries), and the zero-based
/// index of the attempt within it (0 for the first, 1 for the first retry, ...).
const RETRY_TRACE_ID: &str = "odps-tunnel-retry-trace-id";
const RETRY_INDEX: &str = "odps-tunnel-retry-index";
/// The most blocks a BatchCompatible session accepts.
const MAX_BLOCK_NUMBER: u64 = 20_000;

pub(crate) async fn dispatch(
    state: &Arc<AppState>,
    action: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    match action {
        "TableCreateWriteSession" => create_write_session(state, params, body).await,
        "TableGetWriteSession" => get_write_session(state, params, body).await,
        "TableCreateWriteStream" => create_write_stream(state, params, body).await,
        "TableGetWriteStream" => get_write_stream(state, params, body).await,
        "TableWrite" => table_write(state, params, headers, body).await,
        "TableCloseWriteStream" => close_write_stream(state, params, body).await,
        "TableCommitWriteSession" => commit(state, params, body).await,
        "TableAbortWriteSession" => {
            let table = target(params)?;
            let _: Value = json_body_or_empty(state, body).await?;
            let session_id = param(params, "SessionId")?;
            state
                .service
                .abort_write_session(&table, session_id)
                .await?;
            Ok(with_route_token(json_response(json!({})), session_id))
        }
        "TableGetWriteSchema" => {
            let table = target(params)?;
            let _: Value = json_body_or_empty(state, body).await?;
            let schema = match params.get("SessionId") {
                Some(id) => {
                    state
                        .service
                        .get_write_session(&table, id)
                        .await?
                        .write_schema
                }
                None => state.service.describe_table(&table).await?.schema,
            };
            Ok(json_response(
                json!({"TableSchema": schema.to_write_schema_json(), "WarningMessage": null}),
            ))
        }
        "TableWriteBlob" => write_blob(state, params, headers, body).await,
        "BlobRead" => blob_read(state, headers, body).await,
        other => Err(ApiError::invalid(format!("unknown Action {other:?}"))),
    }
}

// ---- helpers ----

/// The `WriteMode` query parameter; streaming modes are refused.
fn write_mode(params: &Params) -> ApiResult<Option<WriteMode>> {
    let Some(m) = params.get("WriteMode") else {
        return Ok(None);
    };
    match m.trim().to_ascii_lowercase().as_str() {
        "" | "batch" => Ok(Some(WriteMode::Batch)),
        "batchcompatible" | "batch_compatible" => Ok(Some(WriteMode::BatchCompatible)),
        "streaming" | "streamingrealtime" | "streaming_realtime" => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NotSupported",
            format!("WriteMode={m}: streaming writes are not supported by this server; use Batch"),
        )),
        _ => Err(ApiError::invalid(format!(
            "WriteMode={m:?} (expected Batch or BatchCompatible)"
        ))),
    }
}

/// A JSON flag sent as a bool, a string or a number.
fn truthy(v: &Value) -> ApiResult<bool> {
    match v {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            _ => Err(ApiError::invalid(format!("{s:?} is not a boolean"))),
        },
        Value::Number(n) => Ok(n.as_i64() != Some(0)),
        other => Err(ApiError::invalid(format!("{other} is not a boolean"))),
    }
}

/// A JSON integer sent as a number or a string; null means absent.
fn json_u64(v: &Value, name: &str) -> ApiResult<Option<u64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{name} {n} is not a non-negative integer"))),
        Value::String(s) => {
            s.trim().parse::<u64>().map(Some).map_err(|_| {
                ApiError::invalid(format!("{name} {s:?} is not a non-negative integer"))
            })
        }
        other => Err(ApiError::invalid(format!(
            "{name} {other} is not an integer"
        ))),
    }
}

fn stream_status(s: &WriteStream) -> &'static str {
    match s.status {
        StreamStatus::Open => "OPEN",
        StreamStatus::Closed => "CLOSED",
    }
}

/// The id of the backend stream of a BatchCompatible block attempt.
fn block_stream_id(block: u64, attempt: u64) -> String {
    format!("block-{block}-attempt-{attempt}")
}

fn parse_block_stream_id(id: &str) -> Option<(u64, u64)> {
    let rest = id.strip_prefix("block-")?;
    let (b, a) = rest.split_once("-attempt-")?;
    Some((b.parse().ok()?, a.parse().ok()?))
}

fn quota_token(session_id: &str, stream_id: &str) -> String {
    format!("qt-{session_id}-{stream_id}")
}

/// The session an upload writes to, refused (before its body is read) unless it exists,
/// has not expired, and is still open for writes.
pub(crate) async fn writable_session(
    state: &AppState,
    table: &TableId,
    session_id: &str,
) -> ApiResult<WriteSession> {
    let session = state.service.get_write_session(table, session_id).await?;
    match session.status {
        SessionStatus::Init | SessionStatus::Normal => Ok(session),
        SessionStatus::Expired => Err(StorageError::SessionExpired {
            session_id: session_id.to_string(),
        }
        .into()),
        other => Err(StorageError::InvalidState {
            session_id: session_id.to_string(),
            state: other.as_str().to_string(),
            message: "the session no longer accepts uploads".to_string(),
        }
        .into()),
    }
}

// ---- sessions ----

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct CreateWriteSessionBody {
    /// Batch: the (partial) partition spec.
    partial_partition_spec: Option<String>,
    flags: Option<serde_json::Map<String, Value>>,
    /// BatchCompatible (V1-style body).
    partition_spec: Option<String>,
    overwrite: Value,
    enhance_write_check: Value,
}

async fn create_write_session(
    state: &Arc<AppState>,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let mode = write_mode(params)?.unwrap_or_default();
    let body: CreateWriteSessionBody = json_body_or_empty(state, body).await?;
    let spec = body
        .partial_partition_spec
        .as_deref()
        .or(body.partition_spec.as_deref())
        .unwrap_or("");
    let mut overwrite = truthy(&body.overwrite)?;
    if let Some(flags) = &body.flags
        && let Some(v) = flags.get("overwrite").or_else(|| flags.get("Overwrite"))
    {
        overwrite = truthy(v)?;
    }
    let request = WriteSessionRequest {
        table: table.clone(),
        partition: PartitionSpec::parse(spec)?,
        overwrite,
        mode,
    };
    let session = state.service.create_write_session(&request).await?;
    let value = if mode == WriteMode::BatchCompatible {
        let enhance = truthy(&body.enhance_write_check)?;
        batch_compatible_session_json(state, &session, enhance).await?
    } else {
        json!({"SessionId": session.session_id, "WarningMessage": null})
    };
    Ok(with_route_token(json_response(value), &session.session_id))
}

/// The session as the BatchCompatible client reads it: the V1 write-session fields.
async fn batch_compatible_session_json(
    state: &AppState,
    s: &WriteSession,
    enhance: bool,
) -> ApiResult<Value> {
    let schema = state.service.describe_table(&s.table).await?.schema;
    Ok(json!({
        "SessionId": s.session_id,
        "SessionType": "batch_write",
        "SessionStatus": s.status.as_str(),
        "ExpirationTime": s.expiration_time_ms,
        "DataSchema": read_schema_json(&schema),
        "MaxBlockNumber": MAX_BLOCK_NUMBER,
        "EnhanceWriteCheck": enhance,
        "SupportedDataFormat": [{"Type": "ARROW", "Version": "V5"}],
        "RequiredOrdering": [],
        "RequiredDistribution": {"Type": "UNSPECIFIED"},
        "Message": "",
        "WarningMessage": null,
    }))
}

async fn get_write_session(
    state: &Arc<AppState>,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let mode = write_mode(params)?;
    let _: Value = json_body_or_empty(state, body).await?;
    let session_id = param(params, "SessionId")?;
    let s = state.service.get_write_session(&table, session_id).await?;
    let streams: Vec<Value> = s
        .streams
        .iter()
        .map(|w| {
            json!({"StreamId": w.stream_id, "StreamVersion": w.version, "Status": stream_status(w),
                   "RecordCount": w.row_offset})
        })
        .collect();
    let mut value = if mode == Some(WriteMode::BatchCompatible)
        || s.mode == WriteMode::BatchCompatible
    {
        batch_compatible_session_json(state, &s, false).await?
    } else {
        json!({"SessionId": s.session_id, "SessionStatus": s.status.as_str(), "ExpirationTime": s.expiration_time_ms,
               "WarningMessage": null})
    };
    if let Value::Object(m) = &mut value {
        m.insert("Streams".into(), Value::Array(streams));
        m.insert("MinUncommittedStagingId".into(), Value::Null);
        if let Some(v) = s.committed_version {
            m.insert("CommittedVersion".into(), json!(v));
        }
        m.insert("TableSchema".into(), s.write_schema.to_write_schema_json());
    }
    Ok(with_route_token(json_response(value), &s.session_id))
}

// ---- streams ----

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct StreamBody {
    session_id: Option<String>,
    stream_id: Value,
    stream_version: Value,
    exactly_once_mode: Value,
}

impl StreamBody {
    fn stream_id(&self) -> ApiResult<Option<String>> {
        match &self.stream_id {
            Value::Null => Ok(None),
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(ApiError::invalid(format!(
                "StreamId {other} is not a string"
            ))),
        }
    }
}

/// The fields every stream answer carries.
fn stream_json(
    table: &TableId,
    session: &WriteSession,
    s: &WriteStream,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("StreamId".into(), json!(s.stream_id));
    m.insert("StreamVersion".into(), json!(s.version));
    m.insert(
        "TableSchema".into(),
        session.write_schema.to_write_schema_json(),
    );
    m.insert("TableId".into(), json!(table.to_string()));
    m.insert("SchemaVersion".into(), json!(0));
    m.insert("WarningMessage".into(), Value::Null);
    if s.exactly_once {
        m.insert("AccessToken".into(), json!(s.access_token));
    }
    m
}

async fn create_write_stream(
    state: &Arc<AppState>,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let _ = write_mode(params)?;
    let session_id = param(params, "SessionId")?.to_string();
    let body: StreamBody = json_body_or_empty(state, body).await?;
    let stream_id = body.stream_id()?;
    let version = json_u64(&body.stream_version, "StreamVersion")?;
    let exactly_once = truthy(&body.exactly_once_mode)?
        || params
            .get("ExactlyOnceMode")
            .map(|v| truthy(&Value::String(v.clone())))
            .transpose()?
            .unwrap_or(false);
    let session = state.service.get_write_session(&table, &session_id).await?;
    let block = stream_id.as_deref().and_then(parse_block_stream_id);
    let created = state
        .service
        .create_write_stream_version(
            &table,
            &session_id,
            stream_id.as_deref(),
            version,
            exactly_once,
        )
        .await;
    let stream = match (created, &stream_id, block) {
        (Ok(s), _, _) => s,
        // A repeated block reservation after the block was uploaded: the reservation is
        // advisory, uploads make their own versions.
        (Err(StorageError::InvalidState { .. }), Some(id), Some(_)) => {
            state
                .service
                .get_write_stream(&table, &session_id, id)
                .await?
        }
        (Err(e), _, _) => return Err(e.into()),
    };
    let mut m = stream_json(&table, &session, &stream);
    if block.is_some() || session.mode == WriteMode::BatchCompatible {
        m.insert(
            "QuotaToken".into(),
            json!(quota_token(&session_id, &stream.stream_id)),
        );
    }
    Ok(with_route_token(
        json_response(Value::Object(m)),
        &session_id,
    ))
}

async fn get_write_stream(
    state: &Arc<AppState>,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let _ = write_mode(params)?;
    let body: StreamBody = json_body_or_empty(state, body).await?;
    let session_id = param(params, "SessionId")?.to_string();
    let stream_id = match body.stream_id()? {
        Some(id) => id,
        None => param(params, "StreamId")?.to_string(),
    };
    let session = state.service.get_write_session(&table, &session_id).await?;
    let stream = state
        .service
        .get_write_stream(&table, &session_id, &stream_id)
        .await?;
    let requested = match json_u64(&body.stream_version, "StreamVersion")? {
        Some(v) => Some(v),
        None => opt_u64(params, "StreamVersion")?,
    };
    // An older version than the latest is superseded: report it closed, with no rows.
    let superseded = requested.is_some_and(|v| v < stream.version);
    let status = if superseded {
        "CLOSED"
    } else {
        stream_status(&stream)
    };
    let count = if superseded { 0 } else { stream.row_offset };
    let mut m = stream_json(&table, &session, &stream);
    if let Some(v) = requested {
        m.insert("StreamVersion".into(), json!(v));
    }
    m.insert("Status".into(), json!(status));
    m.insert("status".into(), json!(status));
    m.insert("RecordCount".into(), json!(count));
    m.insert("recordCount".into(), json!(count));
    m.insert("RowOffset".into(), json!(stream.row_offset));
    m.insert("ByteSize".into(), json!(0));
    m.insert("ErrorCode".into(), Value::Null);
    m.insert("ErrorMessage".into(), Value::Null);
    m.insert("LatestSchemaVersion".into(), json!(0));
    if stream.exactly_once {
        m.insert("AccessToken".into(), json!(stream.access_token));
    }
    Ok(with_route_token(
        json_response(Value::Object(m)),
        &session_id,
    ))
}

async fn close_write_stream(
    state: &Arc<AppState>,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let _ = write_mode(params)?;
    let body: StreamBody = json_body_or_empty(state, body).await?;
    let session_id = match (&body.session_id, params.get("SessionId")) {
        (Some(s), _) if !s.is_empty() => s.clone(),
        (_, Some(s)) => s.clone(),
        _ => return Err(ApiError::invalid("TableCloseWriteStream needs a SessionId")),
    };
    let stream_id = match body.stream_id()? {
        Some(id) => id,
        None => param(params, "StreamId")?.to_string(),
    };
    let version = match json_u64(&body.stream_version, "StreamVersion")? {
        Some(v) => v,
        None => match opt_u64(params, "StreamVersion")? {
            Some(v) => v,
            None => {
                state
                    .service
                    .get_write_stream(&table, &session_id, &stream_id)
                    .await?
                    .version
            }
        },
    };
    state
        .service
        .close_write_stream(&table, &session_id, &stream_id, version)
        .await?;
    Ok(json_response(json!({"WarningMessage": null})))
}

// ---- rows ----

/// Reads, decodes and checks a TableWrite body: one Arrow IPC stream. The permit holds the
/// upload's share of the decode budget until its rows are written.
async fn upload_batches(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Vec<RecordBatch>, codec::UploadPermit)> {
    codec::decode_upload(state, headers, body, "TableWrite body", false).await
}

/// Uploads by retry trace id, so a replayed TableWrite (the same trace id and request, with an
/// index above 0) gets the first attempt's answer instead of being applied twice: also when
/// it arrives while the first attempt is still being applied (it waits for that outcome).
#[derive(Debug, Default)]
pub(crate) struct Replays {
    inner: parking_lot::Mutex<ReplayMap>,
}

#[derive(Debug, Default)]
struct ReplayMap {
    by_id: HashMap<String, Arc<ReplayEntry>>,
    /// Trace ids, oldest first, to forget the oldest beyond [`MAX_REPLAYS`].
    order: std::collections::VecDeque<String>,
}

#[derive(Debug)]
struct ReplayEntry {
    /// The request the trace id was first seen with.
    identity: String,
    outcome: tokio::sync::watch::Sender<Outcome>,
}

/// What became of the attempt a trace id was first seen with.
#[derive(Debug, Clone)]
enum Outcome {
    Running,
    Applied(Value),
    /// It failed: a retry is applied as a new attempt.
    Failed,
}

/// The most trace ids remembered (the oldest are forgotten first).
const MAX_REPLAYS: usize = 10_000;

/// What a request with a trace id is to do.
enum Claim {
    /// Apply it, then report the outcome through the entry.
    Apply(Arc<ReplayEntry>),
    /// An earlier attempt of the same request was applied: answer with its answer.
    Replay(Value),
}

impl Replays {
    /// Finds or registers the attempt of `id`. A retry (`is_retry`) of a request whose first
    /// attempt is still running waits for it; one whose attempt failed is applied anew.
    async fn claim(&self, id: &str, identity: &str, is_retry: bool) -> Claim {
        loop {
            let mut waiting = {
                let mut map = self.inner.lock();
                match map.by_id.get(id) {
                    Some(entry) if is_retry && entry.identity == identity => {
                        let rx = entry.outcome.subscribe();
                        let outcome = rx.borrow().clone();
                        match outcome {
                            Outcome::Applied(answer) => return Claim::Replay(answer),
                            Outcome::Running => rx,
                            Outcome::Failed => return Claim::Apply(map.register(id, identity)),
                        }
                    }
                    _ => return Claim::Apply(map.register(id, identity)),
                }
            };
            // The first attempt is still running (it finishes even if its client left).
            if waiting
                .wait_for(|o| !matches!(o, Outcome::Running))
                .await
                .is_err()
            {
                // Its entry was dropped unfinished (forgotten): look again.
                continue;
            }
        }
    }
}

impl ReplayMap {
    fn register(&mut self, id: &str, identity: &str) -> Arc<ReplayEntry> {
        let (tx, _) = tokio::sync::watch::channel(Outcome::Running);
        let entry = Arc::new(ReplayEntry {
            identity: identity.to_string(),
            outcome: tx,
        });
        if self.by_id.insert(id.to_string(), entry.clone()).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > MAX_REPLAYS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        entry
    }
}

impl ReplayEntry {
    fn finish(&self, outcome: Outcome) {
        self.outcome.send_replace(outcome);
    }
}

/// Reports `Failed` for an attempt that ends without an outcome (an error, or a panic).
struct FinishGuard(Option<Arc<ReplayEntry>>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.0.take() {
            entry.finish(Outcome::Failed);
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The trace id of a request, and whether it says it is a retry.
fn retry_trace(headers: &HeaderMap) -> Option<(String, bool)> {
    let id = header_str(headers, RETRY_TRACE_ID)?;
    let index = header_str(headers, RETRY_INDEX)
        .and_then(|i| i.parse::<i64>().ok())
        .unwrap_or(0);
    Some((id.to_string(), index > 0))
}

async fn table_write(
    state: &Arc<AppState>,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let mode = write_mode(params)?;
    let session_id = param(params, "SessionId")?.to_string();
    let block = match (
        opt_u64(params, "BlockNumber")?,
        opt_u64(params, "AttemptNumber")?,
    ) {
        (Some(b), a) => Some((b, a.unwrap_or(0))),
        (None, Some(_)) => return Err(ApiError::invalid("AttemptNumber without BlockNumber")),
        (None, None) => None,
    };
    if mode == Some(WriteMode::BatchCompatible) && block.is_none() {
        return Err(ApiError::invalid(
            "a BatchCompatible TableWrite needs BlockNumber and AttemptNumber",
        ));
    }
    // The identity of the request, for replay detection.
    let identity = format!(
        "{table}\n{session_id}\n{:?}\n{:?}\n{:?}\n{:?}",
        params.get("StreamId"),
        params.get("StreamVersion"),
        params.get("RowOffset"),
        block
    );
    let claim = match retry_trace(headers) {
        Some((id, is_retry)) => Some(state.replays.claim(&id, &identity, is_retry).await),
        None => None,
    };
    let entry = match claim {
        Some(Claim::Replay(answer)) => {
            // Drain the replayed body; the first answer stands.
            let _ = read_body(body, state.limits.max_upload_body, "row upload").await;
            return Ok(with_route_token(json_response(answer), &session_id));
        }
        Some(Claim::Apply(entry)) => Some(entry),
        None => None,
    };
    // The upload is applied on its own task, so that a client that goes away (a lost
    // response, a timeout) cannot cancel it between applying the rows and recording the
    // answer a retry is to get.
    let task = {
        let (state, params, headers) = (state.clone(), params.clone(), headers.clone());
        let (table, session_id) = (table.clone(), session_id.clone());
        tokio::spawn(async move {
            let mut guard = FinishGuard(entry);
            // Refuse an unknown, expired or finished session before reading megabytes of body.
            writable_session(&state, &table, &session_id).await?;
            let answer = match block {
                Some((b, a)) => {
                    block_write(&state, &table, &session_id, b, a, &headers, body).await?
                }
                None => stream_write(&state, &table, &session_id, &params, &headers, body).await?,
            };
            if let Some(entry) = guard.0.take() {
                entry.finish(Outcome::Applied(answer.clone()));
            }
            Ok::<Value, ApiError>(answer)
        })
    };
    let answer = task.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
    })??;
    Ok(with_route_token(json_response(answer), &session_id))
}

async fn stream_write(
    state: &Arc<AppState>,
    table: &TableId,
    session_id: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Value> {
    let stream_id = param(params, "StreamId")?.to_string();
    let row_offset = match params.get("RowOffset") {
        None => None,
        Some(v) => {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid(format!("RowOffset={v:?} is not an integer")))?;
            u64::try_from(n).ok()
        }
    };
    let access_token = header_str(headers, ACCESS_TOKEN_HEADER).map(str::to_string);
    let version = match opt_u64(params, "StreamVersion")? {
        Some(v) => v,
        None => {
            state
                .service
                .get_write_stream(table, session_id, &stream_id)
                .await?
                .version
        }
    };
    let (batches, _permit) = upload_batches(state, headers, body).await?;
    let request = WriteRequest {
        table: table.clone(),
        session_id: session_id.to_string(),
        stream_id,
        version,
        row_offset,
        access_token,
        batches,
    };
    let ack = state.service.write(request).await?;
    Ok(
        json!({"CommitMessage": null, "WarningMessage": null, "ExactlyOnceRowOffset": ack.next_row_offset,
              "RowsWritten": ack.rows_written, "Duplicate": ack.duplicate}),
    )
}

/// A BatchCompatible block upload: writes a fresh (or the reserved, still empty) version of
/// the block attempt's stream, closes it, and answers the V1 commit message.
async fn block_write(
    state: &Arc<AppState>,
    table: &TableId,
    session_id: &str,
    block: u64,
    attempt: u64,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Value> {
    if block >= MAX_BLOCK_NUMBER {
        return Err(ApiError::invalid(format!(
            "BlockNumber {block} is not below MaxBlockNumber {MAX_BLOCK_NUMBER}"
        )));
    }
    let stream_id = block_stream_id(block, attempt);
    let (batches, _permit) = upload_batches(state, headers, body).await?;
    let existing = match state
        .service
        .get_write_stream(table, session_id, &stream_id)
        .await
    {
        Ok(s) => Some(s),
        Err(StorageError::NotFound { .. }) => {
            // The session itself must exist (a 404 naming it); the stream may not.
            state.service.get_write_session(table, session_id).await?;
            None
        }
        Err(e) => return Err(e.into()),
    };
    let stream = match existing {
        Some(s) if s.status == StreamStatus::Open && s.row_offset == 0 && !s.exactly_once => s,
        _ => {
            state
                .service
                .create_write_stream_version(table, session_id, Some(&stream_id), None, false)
                .await?
        }
    };
    let request = WriteRequest {
        table: table.clone(),
        session_id: session_id.to_string(),
        stream_id: stream_id.clone(),
        version: stream.version,
        row_offset: None,
        access_token: None,
        batches,
    };
    let ack = state.service.write(request).await?;
    state
        .service
        .close_write_stream(table, session_id, &stream_id, stream.version)
        .await?;
    let rows = ack.rows_written;
    let message = json!({
        "BlockNumber": block,
        "AttemptNumber": attempt,
        "StreamVersion": stream.version,
        "WriterStats": {"RecordNum": rows},
    });
    Ok(json!({"CommitMessage": message.to_string(), "RecordCount": rows, "WarningMessage": null}))
}

// ---- commit ----

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct CommitBody {
    stream_ids: Option<Vec<Value>>,
    stream_versions: Option<Vec<Value>>,
    commit_messages: Option<Vec<Value>>,
}

async fn commit(state: &Arc<AppState>, params: &Params, body: Body) -> ApiResult<Response> {
    let table = target(params)?;
    let mode = write_mode(params)?;
    let session_id = param(params, "SessionId")?.to_string();
    let body: CommitBody = json_body_or_empty(state, body).await?;
    if mode == Some(WriteMode::BatchCompatible) || body.commit_messages.is_some() {
        let list = commit_message_streams(
            state,
            &table,
            &session_id,
            body.commit_messages.as_deref().unwrap_or(&[]),
        )
        .await?;
        let info = state
            .service
            .commit_write_session(&table, &session_id, Some(&list))
            .await?;
        return Ok(json_response(
            json!({"SessionId": session_id, "SessionStatus": "COMMITTED",
                                       "TableVersion": info.version, "RecordCount": info.rows}),
        ));
    }
    let ids = body.stream_ids.unwrap_or_default();
    let versions = body.stream_versions.unwrap_or_default();
    if ids.len() != versions.len() {
        return Err(ApiError::invalid(format!(
            "StreamIds has {} entries but StreamVersions has {}",
            ids.len(),
            versions.len()
        )));
    }
    let list: Vec<(String, u64)> = ids
        .iter()
        .zip(&versions)
        .map(|(id, v)| {
            let id = match id {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(ApiError::invalid(format!(
                        "StreamIds holds {other}, not a string"
                    )));
                }
            };
            let v = json_u64(v, "StreamVersions entry")?
                .ok_or_else(|| ApiError::invalid("StreamVersions holds null"))?;
            Ok((id, v))
        })
        .collect::<ApiResult<_>>()?;
    let streams = (!list.is_empty()).then_some(&list[..]);
    let info = state
        .service
        .commit_write_session(&table, &session_id, streams)
        .await?;
    // Clients ignore the body; TableVersion and RecordCount are for clients that want them.
    Ok(with_route_token(
        json_response(json!({"TableVersion": info.version, "RecordCount": info.rows})),
        &session_id,
    ))
}

/// The (stream, version) pairs that BatchCompatible commit messages name. Null entries are
/// dropped; a message may be the JSON text of the upload answer or the object itself.
async fn commit_message_streams(
    state: &AppState,
    table: &TableId,
    session_id: &str,
    messages: &[Value],
) -> ApiResult<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for m in messages {
        let obj = match m {
            Value::Null => continue,
            Value::String(s) if s.trim().is_empty() => continue,
            Value::String(s) => serde_json::from_str::<Value>(s)
                .map_err(|e| ApiError::invalid(format!("commit message {s:?} is not JSON: {e}")))?,
            Value::Object(_) => m.clone(),
            other => {
                return Err(ApiError::invalid(format!(
                    "commit message {other} is not a string"
                )));
            }
        };
        let field =
            |k: &str| -> ApiResult<Option<u64>> { json_u64(obj.get(k).unwrap_or(&Value::Null), k) };
        let block = field("BlockNumber")?
            .ok_or_else(|| ApiError::invalid(format!("commit message {obj} has no BlockNumber")))?;
        let attempt = field("AttemptNumber")?.unwrap_or(0);
        let stream_id = block_stream_id(block, attempt);
        let version = match field("StreamVersion")? {
            Some(v) => v,
            None => {
                state
                    .service
                    .get_write_stream(table, session_id, &stream_id)
                    .await?
                    .version
            }
        };
        if !out.iter().any(|(id, v)| *id == stream_id && *v == version) {
            out.push((stream_id, version));
        }
    }
    Ok(out)
}

// ---- blobs ----

fn blob_dir(state: &AppState) -> ApiResult<std::path::PathBuf> {
    state.blob_dir.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "NotSupported",
            "blobs are not enabled on this server (no blob directory)",
        )
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
    })?
}

async fn write_blob(
    state: &Arc<AppState>,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let dir = blob_dir(state)?;
    let session_id = param(params, "SessionId")?.to_string();
    // The session must exist (404 otherwise).
    state.service.get_write_session(&table, &session_id).await?;
    let codec = codec::request_encoding(headers)?;
    let limit = state.limits.max_upload_body;
    let raw = read_body(body, limit, "blob upload").await?;
    let batch = params
        .get("Mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("batch"));
    let table_name = table.to_string();
    if batch {
        let value = blocking(move || {
            let bytes = codec::decode(codec, raw, limit, "blob upload")?;
            let frames = blobs::parse_frames(&bytes)?;
            let mut refs = Vec::with_capacity(frames.len());
            let mut size = 0u64;
            for f in &frames {
                let mut meta = f.meta()?;
                meta.table = table_name.clone();
                meta.session_id = session_id.clone();
                size += meta.size;
                let id = blobs::store(&dir, &f.data, &meta)?;
                refs.push(blobs::reference_b64(&id));
            }
            Ok(json!({"BlobReferences": refs, "Size": size, "WarningMessage": null}))
        })
        .await?;
        return Ok(json_response(value));
    }
    let column_index = match params
        .get("ColumnIndex")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| ApiError::invalid(format!("ColumnIndex={v:?} is not an integer")))?,
        ),
    };
    let partition_values: Vec<String> = params
        .get("PartitionValues")
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let content_type = params.get("ContentType").cloned();
    let custom_file_name = params.get("CustomFileName").cloned();
    let value = blocking(move || {
        let data = codec::decode(codec, raw, limit, "blob upload")?;
        let mut meta = BlobMeta::new(&data);
        meta.column_index = column_index;
        meta.partition_values = partition_values;
        meta.content_type = content_type;
        meta.custom_file_name = custom_file_name;
        meta.table = table_name;
        meta.session_id = session_id;
        let id = blobs::store(&dir, &data, &meta)?;
        Ok(json!({"BlobReference": blobs::reference_b64(&id), "Size": meta.size, "MD5Value": meta.md5,
                  "WarningMessage": null}))
    })
    .await?;
    Ok(json_response(value))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct BlobReadBody {
    blob_references: Vec<String>,
}

async fn blob_read(state: &Arc<AppState>, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let dir = blob_dir(state)?;
    let body: BlobReadBody = json_body(state, body).await?;
    let limits = state.limits;
    let refs = &body.blob_references;
    if refs.len() > limits.max_blob_read_refs {
        return Err(ApiError::invalid(format!(
            "BlobReferences names {} blobs; one BlobRead may name at most {}",
            refs.len(),
            limits.max_blob_read_refs
        )));
    }
    let ids = refs
        .iter()
        .map(|r| blobs::parse_reference(r))
        .collect::<ApiResult<Vec<_>>>()?;
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (id, r) in ids.iter().zip(refs) {
        if !seen.insert(id.as_str()) {
            return Err(ApiError::invalid(format!(
                "BlobReferences names {r:?} more than once"
            )));
        }
    }
    let compression = Compression::from_accept_encoding(headers)?;
    let max_bytes = limits.max_blob_read_bytes;
    // Every blob must exist, and the answer fit the limit, before anything is sent.
    let found = blocking(move || {
        let found = ids
            .iter()
            .map(|id| blobs::find(&dir, id))
            .collect::<ApiResult<Vec<_>>>()?;
        let mut total = 0u64;
        for f in &found {
            total = total.saturating_add(f.size);
            if found.len() > 1 {
                total = total.saturating_add(blobs::frame_overhead(&f.meta));
            }
        }
        if total > max_bytes as u64 {
            return Err(ApiError::too_large(
                &format!("the BlobRead answer ({total} bytes)"),
                max_bytes,
            ));
        }
        Ok((found, total))
    })
    .await?;
    let (found, total) = found;
    // An empty payload is zero bytes on the wire, uncompressed.
    let compression = if total == 0 {
        Compression::None
    } else {
        compression
    };
    // Streamed: blob pieces go through the compressor and the CRC-32C blocking into a small
    // channel, so the answer is never held whole.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        let blocks = codec::CrcBlockWriter::new(tx);
        let written = match compression {
            Compression::None => {
                let mut w = blocks;
                blobs::write_payload(&found, &mut w).and_then(|()| w.finish())
            }
            Compression::Zstd => zstd::stream::write::Encoder::new(blocks, 1).and_then(|mut w| {
                blobs::write_payload(&found, &mut w)?;
                w.finish()?.finish()
            }),
            Compression::Lz4Frame => {
                let mut w = lz4_flex::frame::FrameEncoder::new(blocks);
                blobs::write_payload(&found, &mut w)
                    .and_then(|()| w.finish().map_err(std::io::Error::other))
                    .and_then(|w| w.finish())
            }
        };
        if let Err(e) = written
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            tracing::warn!("BlobRead answer failed after it started: {e}");
            let _ = errors.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response();
    if let Some(enc) = compression.content_encoding() {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static(enc),
        );
    }
    Ok(response)
}
