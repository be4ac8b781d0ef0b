//! Storage API V1 (`odps.apis.storage_api`, docs/storage-api.md §5): REST paths under
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
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use md5::{Digest, Md5};
use paiio_storage::protocol::codec::BodyEncoding;
use paiio_storage::protocol::storage::{
    BlockCommitMessage, CommitRequest, CreateReadSessionRequest, CreateWriteSessionRequest,
    MAX_BLOCK_NUMBER, ReadSessionResponse, WriteResponse, WriteSessionResponse, block_stream_id,
};
use paiio_storage::{
    Error as StorageError, ObjectKind, ReadRange, ReadRequest, RecordBatchStream, SessionStatus,
    SplitMode, TableId, WriteMode, WriteSession,
};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::request::{
    Params, check_column_names, flag, json_status, opt_u64, param, parse_json_or_empty, read_body,
};
use crate::stream::arrow_stream_body;
use crate::upload::decode_upload;

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

pub(crate) fn table_id(path: &HashMap<String, String>) -> ApiResult<TableId> {
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
async fn json_request<T: DeserializeOwned + Default>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    let bytes = read_body(body, state.limits.max_json_body, "JSON request body").await?;
    check_content_md5(headers, &bytes)?;
    parse_json_or_empty(&bytes)
}

fn created(value: &impl serde::Serialize) -> Response {
    json_status(StatusCode::CREATED, value)
}

fn ok(value: &impl serde::Serialize) -> Response {
    json_status(StatusCode::OK, value)
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
                    let body = json_request(&state, &headers, body).await?;
                    create_read_session(&state, table, body).await
                }
                Some(SessionType::Write) => {
                    let body = json_request(&state, &headers, body).await?;
                    create_write_session(&state, table, body).await
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
            let refresh = flag(&params, "session_refresh");
            let kind = session_type(&params)?;
            if kind != Some(SessionType::Write) {
                match state.service.get_read_session(&table, id, refresh).await {
                    Ok(s) => return Ok(ok(&ReadSessionResponse::from(&s))),
                    // Without a session type, a write session of that id answers.
                    Err(StorageError::NotFound { .. }) if kind.is_none() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let s = state.service.get_write_session(&table, id).await?;
            Ok(ok(&write_session_value(&state, &s, None).await?))
        }
        .await,
    )
}

async fn create_read_session(
    state: &AppState,
    table: TableId,
    body: CreateReadSessionRequest,
) -> ApiResult<Response> {
    check_column_names(state, &body.required_data_columns, "RequiredDataColumns")?;
    check_column_names(
        state,
        &body.required_partition_columns,
        "RequiredPartitionColumns",
    )?;
    let request = body.into_request(table)?;
    let session = state.service.create_read_session(&request).await?;
    let answer = ReadSessionResponse::from(&session);
    // 201 means ready; any other 2xx makes the client poll (§5.1).
    Ok(if session.status == SessionStatus::Init {
        json_status(StatusCode::ACCEPTED, &answer)
    } else {
        created(&answer)
    })
}

async fn create_write_session(
    state: &AppState,
    table: TableId,
    body: CreateWriteSessionRequest,
) -> ApiResult<Response> {
    let enhance = body.enhance_write_check.unwrap_or(false);
    // PyODPS sends Overwrite=true by default; an absent flag means the same.
    let request = body.into_request(table, WriteMode::BatchCompatible, true)?;
    let session = state.service.create_write_session(&request).await?;
    Ok(ok(
        &write_session_value(state, &session, Some(enhance)).await?
    ))
}

/// The V1 write-session answer (§5.4).
async fn write_session_value(
    state: &AppState,
    s: &WriteSession,
    enhance: Option<bool>,
) -> ApiResult<WriteSessionResponse> {
    let schema = state.service.describe_table(&s.table).await?.schema;
    Ok(WriteSessionResponse::block_model(s, &schema, enhance))
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
    arrow_stream_body(stream, BodyEncoding::Identity, buffer_codec(headers)).await
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

// ---- writes ----

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
    let session = crate::v2::write::writable_session(state, &table, &session_id).await?;
    if session.mode != WriteMode::BatchCompatible {
        return Err(ApiError::invalid(format!(
            "session {session_id} is a V2 batch write session; V1 uploads need a V1 write session"
        )));
    }
    // Read the whole body before answering (§2.2), bounded by the upload limits. An empty
    // body is no rows.
    let (batches, _permit) = decode_upload(state, headers, body, "block upload", true).await?;
    let message = BlockCommitMessage {
        session_id: Some(session_id.clone()),
        ..crate::v2::write::write_block(state, &table, &session_id, block, attempt, batches).await?
    };
    // Exactly 200: any other status makes the writer's finish() report failure.
    Ok(ok(&WriteResponse {
        commit_message: Some(Some(message.to_text())),
        ..Default::default()
    }))
}

// ---- commit ----

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
            // Uploads answer only once their rows are staged, so there are never writers in
            // flight to wait for: WaitFlyingWritersTimeoutSeconds is only checked.
            let body: CommitRequest = json_request(&state, &headers, body).await?;
            let session = state.service.get_write_session(&table, &session_id).await?;
            let list = commit_list(&session_id, &body)?;
            if session.status != SessionStatus::Committed {
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
                Err(StorageError::NotFound {
                    kind: kind @ (ObjectKind::WriteStream | ObjectKind::WriteStreamVersion),
                    name,
                }) => {
                    return Err(ApiError::invalid(format!(
                        "a commit message names an upload that does not exist ({kind} {name})"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            let s = state.service.get_write_session(&table, &session_id).await?;
            let answer = write_session_value(&state, &s, None).await?;
            // 201 means committed; any other 2xx makes the client poll.
            Ok(if s.status == SessionStatus::Committed { created(&answer) } else { ok(&answer) })
        }
        .await,
    )
}

/// The (stream, version) pairs the commit messages name: one upload per block. Null and empty
/// entries are dropped (as Java does) and repeated messages count once.
fn commit_list(session_id: &str, body: &CommitRequest) -> ApiResult<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut blocks: HashMap<u64, u64> = HashMap::new();
    for message in body.block_messages().map_err(ApiError::invalid)? {
        let (block, attempt) = message.block().map_err(ApiError::invalid)?;
        let version = message.stream_version.ok_or_else(|| {
            ApiError::invalid(format!(
                "commit message {} was not issued by this server",
                message.to_text()
            ))
        })?;
        if let Some(sid) = &message.session_id
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
