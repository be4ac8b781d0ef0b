//! Storage API V1 (`odps.apis.storage_api`, STORAGE_API.md §5): REST paths under
//! `/api/storage/v1/projects/{p}[/schemas/{s}]/tables/{t}/...`.
//!
//! - Read sessions map onto the backend's read sessions. Reads take `split_index` in Size /
//!   Parallelism / Bucket sessions (a non-zero `row_index` / `row_count` then narrows the
//!   split) and `row_index` + `row_count` in RowOffset sessions (`row_count=0`: to the end).
//!   Rows go out as an Arrow IPC stream with Arrow *buffer* compression chosen by
//!   `Accept-Encoding: LZ4_FRAME | ZSTD | ""` (§7.2), never HTTP body compression.
//! - Write sessions use the block / attempt model (§8.4): block `B`, attempt `A` is written as
//!   a fresh version of the backend stream `block-B-attempt-A`, closed after the upload; its
//!   commit message names that version, and the commit makes exactly the listed uploads
//!   visible.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_ipc::CompressionType;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use md5::{Digest, Md5};
use paiio_storage::service::{StreamStatus, parse_time_unit};
use paiio_storage::types::ArrowOptions;
use paiio_storage::{
    Error as StorageError, PartitionSpec, ReadRange, ReadRequest, ReadSession, ReadSessionRequest,
    RecordBatchStream, SplitMode, SplitOptions, TableId, WriteMode, WriteRequest, WriteSession,
    WriteSessionRequest,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::codec;
use crate::error::{ApiError, ApiResult};
use crate::v2::{Params, check_column_names, read_body, read_schema_json, read_session_json};

/// Valid block numbers are `[0, MAX_BLOCK_NUMBER)`.
const MAX_BLOCK_NUMBER: u64 = 20_000;

type Shared = Arc<AppState>;
type PathParams = Path<HashMap<String, String>>;

/// The V1 routes, in both table shapes (with and without `/schemas/{schema}`).
pub(crate) fn router() -> Router<Shared> {
    let mut r = Router::new();
    for table in [
        "/api/storage/v1/projects/{project}/schemas/{schema}/tables/{table}",
        "/api/storage/v1/projects/{project}/tables/{table}",
    ] {
        r = r
            .route(&format!("{table}/sessions"), post(create_session))
            .route(
                &format!("{table}/sessions/{{session_id}}"),
                get(get_session),
            )
            .route(
                &format!("{table}/sessions/{{session_id}}/data"),
                post(write_rows),
            )
            .route(&format!("{table}/data"), get(read_rows))
            .route(&format!("{table}/commit"), post(commit));
    }
    r
}

fn reply(result: ApiResult<Response>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

// ---- helpers ----

fn table_id(path: &HashMap<String, String>) -> ApiResult<TableId> {
    let get = |k: &str| {
        path.get(k)
            .map(String::as_str)
            .ok_or_else(|| ApiError::invalid(format!("no {k} in the path")))
    };
    Ok(TableId::new(
        get("project")?,
        path.get("schema").map(String::as_str),
        get("table")?,
    )?)
}

fn param<'a>(params: &'a Params, name: &str) -> ApiResult<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::invalid(format!("the query parameter {name} is missing")))
}

/// A query parameter that must be a non-negative integer when present (an empty value counts
/// as absent).
fn opt_u64(params: &Params, name: &str) -> ApiResult<Option<u64>> {
    match params.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("{name}={v:?} is not a non-negative integer"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionType {
    Read,
    Write,
}

fn session_type(params: &Params) -> ApiResult<Option<SessionType>> {
    match params
        .get("session_type")
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => Ok(None),
        Some(v) if v == "batch_read" => Ok(Some(SessionType::Read)),
        Some(v) if v == "batch_write" => Ok(Some(SessionType::Write)),
        Some(v) => Err(ApiError::invalid(format!(
            "session_type={v:?} (expected batch_read or batch_write)"
        ))),
    }
}

/// Checks `Content-MD5` (lowercase hex as PyODPS sends it; base64 is accepted too) against
/// the body.
fn check_content_md5(headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    let Some(v) = headers.get("content-md5") else {
        return Ok(());
    };
    let given = v
        .to_str()
        .map_err(|_| ApiError::invalid("Content-MD5 is not text"))?
        .trim();
    if given.is_empty() {
        return Ok(());
    }
    let digest = Md5::digest(body);
    let hex = hex::encode(digest);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
    if given.eq_ignore_ascii_case(&hex) || given == b64 {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Content-MD5 {given:?} does not match the request body (MD5 {hex})"
        )))
    }
}

/// Reads a JSON body (bounded), verifying `Content-MD5` when present. An empty body is `{}`.
async fn json_request<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    let bytes = read_body(body, state.limits.max_json_body, "JSON request body").await?;
    check_content_md5(headers, &bytes)?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("malformed JSON request body: {e}")))
}

/// A JSON flag sent as a bool, a string or a number; null means `default`.
fn flag(v: &Value, name: &str, default: bool) -> ApiResult<bool> {
    match v {
        Value::Null => Ok(default),
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            "" => Ok(default),
            _ => Err(ApiError::invalid(format!("{name} {s:?} is not a boolean"))),
        },
        Value::Number(n) => Ok(n.as_i64() != Some(0)),
        other => Err(ApiError::invalid(format!(
            "{name} {other} is not a boolean"
        ))),
    }
}

/// A JSON integer sent as a number or a string; null means absent.
fn json_int(v: &Value, name: &str) -> ApiResult<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{name} {n} is not an integer"))),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("{name} {s:?} is not an integer"))),
        other => Err(ApiError::invalid(format!(
            "{name} {other} is not an integer"
        ))),
    }
}

fn json_u64(v: &Value, name: &str) -> ApiResult<Option<u64>> {
    match json_int(v, name)? {
        None => Ok(None),
        Some(n) if n < 0 => Err(ApiError::invalid(format!("{name} {n} is negative"))),
        Some(n) => Ok(Some(n as u64)),
    }
}

fn json_strings(v: &Value, name: &str) -> ApiResult<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::invalid(format!(
                    "{name} holds {other}, not a string"
                ))),
            })
            .collect(),
        other => Err(ApiError::invalid(format!(
            "{name} {other} is not a list of strings"
        ))),
    }
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, axum::Json(value)).into_response()
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

// ---- sessions ----

async fn create_session(
    State(state): State<Shared>,
    Path(path): PathParams,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    reply(
        async {
            let table = table_id(&path)?;
            match session_type(&params)? {
                Some(SessionType::Read) => {
                    let body: Value = json_request(&state, &headers, body).await?;
                    create_read_session(&state, table, &body).await
                }
                Some(SessionType::Write) => {
                    let body: Value = json_request(&state, &headers, body).await?;
                    create_write_session(&state, table, &body).await
                }
                None => Err(ApiError::invalid(
                    "the query parameter session_type (batch_read or batch_write) is missing",
                )),
            }
        }
        .await,
    )
}

async fn get_session(
    State(state): State<Shared>,
    Path(path): PathParams,
    Query(params): Query<Params>,
) -> Response {
    reply(
        async {
            let table = table_id(&path)?;
            let id = path
                .get("session_id")
                .map(String::as_str)
                .unwrap_or_default();
            let refresh = params
                .get("session_refresh")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            let kind = session_type(&params)?;
            if kind != Some(SessionType::Write) {
                match state.service.get_read_session(&table, id, refresh).await {
                    Ok(s) => return Ok(ok(read_session_value(&s))),
                    // Without a session type, a write session of that id answers.
                    Err(StorageError::NotFound { .. }) if kind.is_none() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let s = state.service.get_write_session(&table, id).await?;
            Ok(ok(write_session_value(&state, &s, None).await?))
        }
        .await,
    )
}

fn read_session_value(s: &ReadSession) -> Value {
    let mut v = read_session_json(s);
    if s.split_mode == SplitMode::RowOffset {
        // Clients switch to row ranges on SplitsCount == -1 (§8.1).
        v["SplitsCount"] = json!(-1);
        v["RecordCount"] = json!(s.record_count);
    } else {
        v["RecordCount"] = json!(-1);
    }
    v
}

async fn create_read_session(
    state: &AppState,
    table: TableId,
    body: &Value,
) -> ApiResult<Response> {
    let split = body.get("SplitOptions").cloned().unwrap_or(Value::Null);
    let mode: SplitMode = match split.get("SplitMode") {
        None | Some(Value::Null) => SplitMode::Size,
        Some(Value::String(m)) => m.parse()?,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "SplitMode {other} is not a string"
            )));
        }
    };
    let number = json_int(
        split.get("SplitNumber").unwrap_or(&Value::Null),
        "SplitNumber",
    )?
    .unwrap_or(0);
    if number < 0 {
        return Err(ApiError::invalid(format!(
            "SplitNumber {number} is negative"
        )));
    }
    let number = match (mode, number) {
        (SplitMode::Size | SplitMode::Bucket, 0) => SplitOptions::DEFAULT_SPLIT_SIZE,
        (SplitMode::Parallelism, 0) => 32,
        (_, n) => n as u64,
    };
    let cross_partition = flag(
        split.get("CrossPartition").unwrap_or(&Value::Null),
        "CrossPartition",
        true,
    )?;
    let mut arrow_options = ArrowOptions::default();
    if let Some(a) = body.get("ArrowOptions").filter(|a| !a.is_null()) {
        if let Some(Value::String(u)) = a.get("TimestampUnit") {
            arrow_options.timestamp_unit = parse_time_unit(u)?;
        }
        if let Some(Value::String(u)) = a.get("DatetimeUnit") {
            arrow_options.datetime_unit = parse_time_unit(u)?;
        }
    }
    let field = |k: &str| body.get(k).unwrap_or(&Value::Null);
    let required_partitions = json_strings(field("RequiredPartitions"), "RequiredPartitions")?
        .iter()
        .map(|p| PartitionSpec::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let required_bucket_ids = match field("RequiredBucketIds") {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                let n = json_u64(i, "RequiredBucketIds entry")?
                    .ok_or_else(|| ApiError::invalid("RequiredBucketIds holds null"))?;
                u32::try_from(n)
                    .map_err(|_| ApiError::invalid(format!("bucket id {n} is too large")))
            })
            .collect::<ApiResult<_>>()?,
        other => {
            return Err(ApiError::invalid(format!(
                "RequiredBucketIds {other} is not a list"
            )));
        }
    };
    let filter_predicate = match field("FilterPredicate") {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => {
            return Err(ApiError::invalid(format!(
                "FilterPredicate {other} is not a string"
            )));
        }
    };
    let required_data_columns = json_strings(field("RequiredDataColumns"), "RequiredDataColumns")?;
    check_column_names(state, &required_data_columns, "RequiredDataColumns")?;
    let required_partition_columns = json_strings(
        field("RequiredPartitionColumns"),
        "RequiredPartitionColumns",
    )?;
    check_column_names(
        state,
        &required_partition_columns,
        "RequiredPartitionColumns",
    )?;
    let request = ReadSessionRequest {
        table,
        required_data_columns,
        required_partition_columns,
        required_partitions,
        required_bucket_ids,
        split_options: SplitOptions {
            mode,
            number,
            cross_partition,
        },
        arrow_options,
        filter_predicate,
        filter_predicate_fallback: false,
    };
    let session = state.service.create_read_session(&request).await?;
    let value = read_session_value(&session);
    // 201 means ready; any other 2xx makes the client poll (§5.1).
    Ok(if session.status == paiio_storage::SessionStatus::Init {
        (StatusCode::ACCEPTED, axum::Json(value)).into_response()
    } else {
        created(value)
    })
}

async fn create_write_session(
    state: &AppState,
    table: TableId,
    body: &Value,
) -> ApiResult<Response> {
    let field = |k: &str| body.get(k).unwrap_or(&Value::Null);
    let spec = match field("PartitionSpec") {
        Value::Null => "",
        Value::String(s) => s.as_str(),
        other => {
            return Err(ApiError::invalid(format!(
                "PartitionSpec {other} is not a string"
            )));
        }
    };
    // PyODPS sends Overwrite=true by default; an absent flag means the same.
    let overwrite = flag(field("Overwrite"), "Overwrite", true)?;
    let enhance = flag(field("EnhanceWriteCheck"), "EnhanceWriteCheck", false)?;
    if let Some(d) = body.get("DynamicPartitionOptions").filter(|d| !d.is_null()) {
        if let Some(s) = d.get("InvalidStrategy").filter(|s| !s.is_null()) {
            let ok = s.as_str().is_some_and(|s| {
                matches!(
                    s.trim().to_ascii_lowercase().as_str(),
                    "exception" | "drop" | "limit" | ""
                )
            });
            if !ok {
                return Err(ApiError::invalid(format!(
                    "InvalidStrategy {s} (expected Exception, Drop or Limit)"
                )));
            }
        }
        json_u64(
            d.get("InvalidLimit").unwrap_or(&Value::Null),
            "InvalidLimit",
        )?;
        json_u64(
            d.get("DynamicPartitionLimit").unwrap_or(&Value::Null),
            "DynamicPartitionLimit",
        )?;
    }
    if let Some(a) = body.get("ArrowOptions").filter(|a| !a.is_null()) {
        for k in ["TimestampUnit", "DatetimeUnit"] {
            if let Some(Value::String(u)) = a.get(k) {
                parse_time_unit(u)?;
            }
        }
    }
    let request = WriteSessionRequest {
        table,
        partition: PartitionSpec::parse(spec)?,
        overwrite,
        mode: WriteMode::BatchCompatible,
    };
    let session = state.service.create_write_session(&request).await?;
    Ok(ok(
        write_session_value(state, &session, Some(enhance)).await?
    ))
}

/// The V1 write-session answer (§5.4, §9).
async fn write_session_value(
    state: &AppState,
    s: &WriteSession,
    enhance: Option<bool>,
) -> ApiResult<Value> {
    let schema = state.service.describe_table(&s.table).await?.schema;
    let mut v = json!({
        "SessionId": s.session_id,
        "SessionType": "batch_write",
        "SessionStatus": s.status.as_str(),
        "ExpirationTime": s.expiration_time_ms,
        "DataSchema": read_schema_json(&schema),
        "SupportedDataFormat": [{"Type": "ARROW", "Version": "V5"}],
        "MaxBlockNumber": MAX_BLOCK_NUMBER,
        "RequiredOrdering": [],
        "RequiredDistribution": {"Type": "UNSPECIFIED", "ClusterKeys": []},
        "Message": "",
    });
    if let Some(e) = enhance {
        v["EnhanceWriteCheck"] = json!(e);
    }
    Ok(v)
}

// ---- reads ----

/// The Arrow buffer codec asked for with V1's `Accept-Encoding` (§5.3, §7.2): `LZ4_FRAME`,
/// `ZSTD`, or anything else (empty, absent, `identity`) for none.
fn buffer_codec(headers: &HeaderMap) -> Option<CompressionType> {
    let v = headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
    for token in v.split(',').map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase()
    }) {
        match token.as_str() {
            "LZ4_FRAME" | "LZ4" => return Some(CompressionType::LZ4_FRAME),
            "ZSTD" => return Some(CompressionType::ZSTD),
            _ => {}
        }
    }
    None
}

async fn read_rows(
    State(state): State<Shared>,
    Path(path): PathParams,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    reply(read_rows_inner(&state, &path, &params, &headers).await)
}

async fn read_rows_inner(
    state: &AppState,
    path: &HashMap<String, String>,
    params: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let table = table_id(path)?;
    let session_id = param(params, "session_id")?;
    if let Some(t) = params
        .get("data_format_type")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        && !t.eq_ignore_ascii_case("ARROW")
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NotSupported",
            format!("data_format_type={t}: this server delivers ARROW only"),
        ));
    }
    let max_batch_rows = match opt_u64(params, "max_batch_rows")? {
        None | Some(0) => ReadRequest::DEFAULT_MAX_BATCH_ROWS,
        Some(n) if n as usize > state.limits.max_batch_rows => {
            return Err(ApiError::invalid(format!(
                "max_batch_rows {n} is over the limit of {}",
                state.limits.max_batch_rows
            )));
        }
        Some(n) => n as usize,
    };
    let split_index = opt_u64(params, "split_index")?.unwrap_or(0);
    let row_index = opt_u64(params, "row_index")?.unwrap_or(0);
    let row_count = opt_u64(params, "row_count")?.unwrap_or(0);
    let session = state
        .service
        .get_read_session(&table, session_id, false)
        .await?;
    // Python sends all three parameters on every read; the session's mode says which count.
    let (range, skip, limit) = if session.split_mode == SplitMode::RowOffset {
        let total = session.record_count.max(0) as u64;
        if row_index > total {
            return Err(ApiError::invalid(format!(
                "row_index {row_index} is past the session's {total} rows"
            )));
        }
        let count = if row_count == 0 {
            total - row_index
        } else {
            row_count
        };
        (
            ReadRange::Rows {
                offset: row_index,
                count,
            },
            0,
            None,
        )
    } else {
        // A non-zero row_index / row_count narrows the split to that row range within it.
        (
            ReadRange::Split(split_index),
            row_index,
            (row_count > 0).then_some(row_count),
        )
    };
    let mut request = ReadRequest::new(table, session_id, range);
    request.max_batch_rows = max_batch_rows;
    request.skip_rows = skip;
    let mut stream = state.service.read(&request).await?;
    if let Some(n) = limit {
        stream = limit_rows(stream, n);
    }
    arrow_buffer_compressed_body(stream, buffer_codec(headers)).await
}

/// At most `n` rows of a stream (always at least one batch, possibly empty).
fn limit_rows(stream: RecordBatchStream, n: u64) -> RecordBatchStream {
    Box::pin(futures::stream::unfold(
        (stream, n, true),
        |(mut stream, left, first)| async move {
            if left == 0 && !first {
                return None;
            }
            match stream.next().await? {
                Ok(b) => {
                    let take = (b.num_rows() as u64).min(left) as usize;
                    let b = if take < b.num_rows() {
                        b.slice(0, take)
                    } else {
                        b
                    };
                    Some((Ok(b), (stream, left - take as u64, false)))
                }
                Err(e) => Some((Err(e), (stream, 0, false))),
            }
        },
    ))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        e.to_string(),
    )
}

/// Encodes a batch stream as an Arrow IPC stream body whose record batches carry Arrow buffer
/// compression `codec`. The first batch is awaited before the status line, so an early error
/// is a proper error answer; a later one cuts the stream short.
async fn arrow_buffer_compressed_body(
    mut stream: RecordBatchStream,
    codec: Option<CompressionType>,
) -> ApiResult<Response> {
    let first = stream.next().await.transpose()?;
    let schema = match &first {
        Some(b) => b.schema(),
        None => Arc::new(arrow_schema::Schema::empty()),
    };
    let options = IpcWriteOptions::default()
        .try_with_compression(codec)
        .map_err(internal)?;
    let mut writer =
        StreamWriter::try_new_with_options(Vec::new(), &schema, options).map_err(internal)?;
    if let Some(b) = &first {
        writer.write(b).map_err(internal)?;
    }
    let head = Bytes::from(std::mem::take(writer.get_mut()));
    let body = futures::stream::unfold(
        (Some(writer), Some(stream), Some(head)),
        |(writer, stream, head)| async move {
            if let Some(h) = head {
                return Some((Ok::<Bytes, std::io::Error>(h), (writer, stream, None)));
            }
            let mut writer = writer?;
            let mut stream = stream?;
            match stream.next().await {
                Some(Ok(batch)) => match writer.write(&batch) {
                    Ok(()) => {
                        let chunk = Bytes::from(std::mem::take(writer.get_mut()));
                        Some((Ok(chunk), (Some(writer), Some(stream), None)))
                    }
                    Err(e) => Some((Err(std::io::Error::other(e)), (None, None, None))),
                },
                Some(Err(e)) => {
                    tracing::warn!("row stream failed after the response started: {e}");
                    Some((
                        Err(std::io::Error::other(e.to_string())),
                        (None, None, None),
                    ))
                }
                None => {
                    let end = writer
                        .finish()
                        .map_err(std::io::Error::other)
                        .map(|_| Bytes::from(std::mem::take(writer.get_mut())));
                    Some((end, (None, None, None)))
                }
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

// ---- writes ----

fn block_stream_id(block: u64, attempt: u64) -> String {
    format!("block-{block}-attempt-{attempt}")
}

async fn write_rows(
    State(state): State<Shared>,
    Path(path): PathParams,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    reply(write_rows_inner(&state, &path, &params, &headers, body).await)
}

async fn write_rows_inner(
    state: &AppState,
    path: &HashMap<String, String>,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let table = table_id(path)?;
    let session_id = path.get("session_id").cloned().unwrap_or_default();
    let block = opt_u64(params, "block_number")?.unwrap_or(0);
    let attempt = opt_u64(params, "attempt_number")?.unwrap_or(0);
    if let Some(t) = params
        .get("data_format_type")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        && !t.eq_ignore_ascii_case("ARROW")
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NotSupported",
            format!("data_format_type={t}: this server accepts ARROW only"),
        ));
    }
    if block >= MAX_BLOCK_NUMBER {
        return Err(ApiError::invalid(format!(
            "block_number {block} is not below MaxBlockNumber {MAX_BLOCK_NUMBER}"
        )));
    }
    // The session first: an unknown, expired or finished one is refused before the body.
    let session = crate::v2_write::writable_session(state, &table, &session_id).await?;
    if session.mode != WriteMode::BatchCompatible {
        return Err(ApiError::invalid(format!(
            "session {session_id} is a V2 batch write session; V1 uploads need a V1 write session"
        )));
    }
    // Read the whole body before answering (§2.2), bounded by the upload limits. An empty
    // body is no rows.
    let (batches, _permit) =
        codec::decode_upload(state, headers, body, "block upload", true).await?;
    let stream_id = block_stream_id(block, attempt);
    // Each upload is a fresh version of the attempt's stream, so a repeated upload of the same
    // block attempt supersedes the earlier one instead of adding to it.
    let stream = state
        .service
        .create_write_stream_version(&table, &session_id, Some(&stream_id), None, false)
        .await?;
    let request = WriteRequest {
        table: table.clone(),
        session_id: session_id.clone(),
        stream_id: stream_id.clone(),
        version: stream.version,
        row_offset: None,
        access_token: None,
        batches,
    };
    let ack = state.service.write(request).await?;
    let closed = state
        .service
        .close_write_stream(&table, &session_id, &stream_id, stream.version)
        .await?;
    debug_assert_eq!(closed.status, StreamStatus::Closed);
    let message = json!({
        "BlockNumber": block,
        "AttemptNumber": attempt,
        "WriterStats": {"RecordNum": ack.rows_written},
        "SessionId": session_id,
        "StreamVersion": stream.version,
    });
    // Exactly 200: any other status makes the writer's finish() report failure.
    Ok(ok(json!({"CommitMessage": message.to_string()})))
}

// ---- commit ----

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct CommitBody {
    commit_messages: Option<Vec<Value>>,
    wait_flying_writers_timeout_seconds: Value,
}

async fn commit(
    State(state): State<Shared>,
    Path(path): PathParams,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    reply(
        async {
            let table = table_id(&path)?;
            let session_id = param(&params, "session_id")?.to_string();
            let body: CommitBody = json_request(&state, &headers, body).await?;
            // Uploads answer only once their rows are staged, so there are never writers in
            // flight to wait for; the value is only checked.
            json_int(&body.wait_flying_writers_timeout_seconds, "WaitFlyingWritersTimeoutSeconds")?;
            let session = state.service.get_write_session(&table, &session_id).await?;
            let list = commit_list(&session_id, body.commit_messages.as_deref().unwrap_or(&[]))?;
            if session.status != paiio_storage::SessionStatus::Committed {
                // Every listed upload must exist and be complete.
                for (stream_id, version) in &list {
                    let s = session.streams.iter().find(|s| &s.stream_id == stream_id);
                    let known = match s {
                        // Only the latest version of a stream is listed; older ones were
                        // superseded by a repeated upload of the same block attempt.
                        Some(s) => s.version >= *version,
                        None => false,
                    };
                    if !known {
                        return Err(ApiError::invalid(format!(
                            "commit message for {stream_id} (version {version}) names no upload of session {session_id}"
                        )));
                    }
                }
            }
            match state.service.commit_write_session(&table, &session_id, Some(&list)).await {
                Ok(_) => {}
                Err(StorageError::NotFound { kind, name }) if kind.starts_with("write stream") => {
                    return Err(ApiError::invalid(format!(
                        "a commit message names an upload that does not exist ({kind} {name})"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            let s = state.service.get_write_session(&table, &session_id).await?;
            let mut v = write_session_value(&state, &s, None).await?;
            v["SessionStatus"] = json!(s.status.as_str());
            // 201 means committed; any other 2xx makes the client poll.
            Ok(if s.status == paiio_storage::SessionStatus::Committed { created(v) } else { ok(v) })
        }
        .await,
    )
}

/// The (stream, version) pairs the commit messages name: one upload per block. Null and empty
/// entries are dropped (as Java does) and repeated messages count once.
fn commit_list(session_id: &str, messages: &[Value]) -> ApiResult<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut blocks: HashMap<u64, u64> = HashMap::new();
    for m in messages {
        let obj = match m {
            Value::Null => continue,
            Value::String(s) if s.trim().is_empty() => continue,
            Value::String(s) => serde_json::from_str::<Value>(s).map_err(|_| {
                ApiError::invalid(format!(
                    "commit message {s:?} was not issued by this server"
                ))
            })?,
            Value::Object(_) => m.clone(),
            other => {
                return Err(ApiError::invalid(format!(
                    "commit message {other} is not a string"
                )));
            }
        };
        let field = |k: &str| json_u64(obj.get(k).unwrap_or(&Value::Null), k);
        let block = field("BlockNumber")?
            .ok_or_else(|| ApiError::invalid(format!("commit message {obj} has no BlockNumber")))?;
        let attempt = field("AttemptNumber")?.unwrap_or(0);
        let version = field("StreamVersion")?.ok_or_else(|| {
            ApiError::invalid(format!(
                "commit message {obj} was not issued by this server"
            ))
        })?;
        if let Some(Value::String(sid)) = obj.get("SessionId")
            && sid != session_id
        {
            return Err(ApiError::invalid(format!(
                "a commit message of session {sid} was given to session {session_id}"
            )));
        }
        let stream_id = block_stream_id(block, attempt);
        if out.iter().any(|(id, v)| *id == stream_id && *v == version) {
            continue;
        }
        if let Some(other) = blocks.insert(block, attempt) {
            return Err(ApiError::invalid(format!(
                "block {block} is listed twice (attempts {other} and {attempt}); commit one attempt per block"
            )));
        }
        out.push((stream_id, version));
    }
    Ok(out)
}
