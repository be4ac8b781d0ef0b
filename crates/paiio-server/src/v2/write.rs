//! V2 writes (docs/storage-api.md §6.5–6.13, §8.5–8.8).
//!
//! Batch mode maps one to one onto the [`TableService`](paiio_storage::TableService) write
//! sessions and stream versions. BatchCompatible mode (the V1 block / attempt model carried
//! over V2) maps block `B`, attempt `A` onto the backend stream `block-B-attempt-A`: each
//! upload writes a version of that stream and closes it, its commit message names the
//! version, and the commit commits exactly the listed versions.

use std::sync::Arc;

use arrow_array::RecordBatch;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use paiio_storage::protocol::headers;
use paiio_storage::protocol::storage::{
    BlockCommitMessage, CommitRequest, CreateWriteSessionRequest, MAX_BLOCK_NUMBER, StreamRequest,
    WriteResponse, WriteSchemaResponse, WriteSessionResponse, WriteStreamResponse, block_stream_id,
    parse_block_stream_id,
};
use paiio_storage::service::{SessionStatus, StreamStatus};
use paiio_storage::{Error as StorageError, TableId, WriteMode, WriteRequest, WriteSession};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::replay::{Claim, FinishGuard, Outcome};
use crate::request::{
    Params, header_str, json_body_or_empty, json_response, opt_u64, param, read_body, target,
    with_route_token,
};
use crate::upload::{UploadPermit, decode_upload};

// ---- helpers ----

/// The `WriteMode` query parameter; streaming modes are refused.
fn write_mode(params: &Params) -> ApiResult<Option<WriteMode>> {
    let Some(m) = params.get("WriteMode") else {
        return Ok(None);
    };
    match m.trim().to_ascii_lowercase().as_str() {
        "" | "batch" => Ok(Some(WriteMode::Batch)),
        "batchcompatible" | "batch_compatible" => Ok(Some(WriteMode::BatchCompatible)),
        "streaming" | "streamingrealtime" | "streaming_realtime" => Err(ApiError::not_supported(
            format!("WriteMode={m}: streaming writes are not supported by this server; use Batch"),
        )),
        _ => Err(ApiError::invalid(format!(
            "WriteMode={m:?} (expected Batch or BatchCompatible)"
        ))),
    }
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

pub(super) async fn create_write_session(
    state: &AppState,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let mode = write_mode(params)?.unwrap_or_default();
    let body: CreateWriteSessionRequest = json_body_or_empty(state, body).await?;
    let enhance = body.enhance_write_check.unwrap_or(false);
    let request = body.into_request(table, mode, false)?;
    let session = state.service.create_write_session(&request).await?;
    let answer = if mode == WriteMode::BatchCompatible {
        block_model_session(state, &session, enhance).await?
    } else {
        WriteSessionResponse::created(&session.session_id)
    };
    Ok(with_route_token(
        json_response(&answer),
        &session.session_id,
    ))
}

/// The session as the BatchCompatible client reads it: the V1 write-session fields.
async fn block_model_session(
    state: &AppState,
    s: &WriteSession,
    enhance: bool,
) -> ApiResult<WriteSessionResponse> {
    let schema = state.service.describe_table(&s.table).await?.schema;
    Ok(WriteSessionResponse::block_model(s, &schema, Some(enhance)))
}

pub(super) async fn get_write_session(
    state: &AppState,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let mode = write_mode(params)?;
    let _: serde::de::IgnoredAny = json_body_or_empty(state, body).await?;
    let session_id = param(params, "SessionId")?;
    let s = state.service.get_write_session(&table, session_id).await?;
    let answer = if mode == Some(WriteMode::BatchCompatible) || s.mode == WriteMode::BatchCompatible
    {
        block_model_session(state, &s, false).await?
    } else {
        WriteSessionResponse::batch(&s)
    };
    Ok(with_route_token(
        json_response(&answer.with_streams(&s)),
        &s.session_id,
    ))
}

pub(super) async fn abort(state: &AppState, params: &Params, body: Body) -> ApiResult<Response> {
    let table = target(params)?;
    let _: serde::de::IgnoredAny = json_body_or_empty(state, body).await?;
    let session_id = param(params, "SessionId")?;
    state
        .service
        .abort_write_session(&table, session_id)
        .await?;
    Ok(with_route_token(
        json_response(&serde_json::json!({})),
        session_id,
    ))
}

pub(super) async fn get_write_schema(
    state: &AppState,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let _: serde::de::IgnoredAny = json_body_or_empty(state, body).await?;
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
    Ok(json_response(&WriteSchemaResponse::from(&schema)))
}

// ---- streams ----

pub(super) async fn create_write_stream(
    state: &AppState,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let _ = write_mode(params)?;
    let session_id = param(params, "SessionId")?.to_string();
    let body: StreamRequest = json_body_or_empty(state, body).await?;
    let stream_id = body.stream_id().map(str::to_string);
    let in_query = match params
        .get("ExactlyOnceMode")
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) => match v.as_str() {
            "true" | "1" => true,
            "false" | "0" | "" => false,
            _ => {
                return Err(ApiError::invalid(format!(
                    "ExactlyOnceMode={v:?} is not a boolean"
                )));
            }
        },
    };
    let exactly_once = body.exactly_once_mode.unwrap_or(false) || in_query;
    let session = state.service.get_write_session(&table, &session_id).await?;
    let block = stream_id.as_deref().and_then(parse_block_stream_id);
    let created = state
        .service
        .create_write_stream_version(
            &table,
            &session_id,
            stream_id.as_deref(),
            body.stream_version,
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
    let mut answer = WriteStreamResponse::of(&table, &session, &stream);
    if block.is_some() || session.mode == WriteMode::BatchCompatible {
        answer.quota_token = Some(quota_token(&session_id, &stream.stream_id));
    }
    Ok(with_route_token(json_response(&answer), &session_id))
}

/// The stream a stream call names: in its body, else in the query.
fn stream_id_of(body: &StreamRequest, params: &Params) -> ApiResult<String> {
    match body.stream_id() {
        Some(id) => Ok(id.to_string()),
        None => Ok(param(params, "StreamId")?.to_string()),
    }
}

/// The stream version a stream call names, if any: in its body, else in the query.
fn stream_version_of(body: &StreamRequest, params: &Params) -> ApiResult<Option<u64>> {
    match body.stream_version {
        Some(v) => Ok(Some(v)),
        None => opt_u64(params, "StreamVersion"),
    }
}

pub(super) async fn get_write_stream(
    state: &AppState,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let _ = write_mode(params)?;
    let body: StreamRequest = json_body_or_empty(state, body).await?;
    let session_id = param(params, "SessionId")?.to_string();
    let stream_id = stream_id_of(&body, params)?;
    let session = state.service.get_write_session(&table, &session_id).await?;
    let stream = state
        .service
        .get_write_stream(&table, &session_id, &stream_id)
        .await?;
    let requested = stream_version_of(&body, params)?;
    // An older version than the latest is superseded: report it closed, with no rows.
    let superseded = requested.is_some_and(|v| v < stream.version);
    let (status, rows) = if superseded {
        (StreamStatus::Closed, 0)
    } else {
        (stream.status, stream.row_offset)
    };
    let mut answer = WriteStreamResponse::of(&table, &session, &stream).with_state(
        status,
        rows,
        stream.row_offset,
    );
    if let Some(v) = requested {
        answer.stream_version = Some(v);
    }
    Ok(with_route_token(json_response(&answer), &session_id))
}

pub(super) async fn close_write_stream(
    state: &AppState,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let _ = write_mode(params)?;
    let body: StreamRequest = json_body_or_empty(state, body).await?;
    let session_id = match (&body.session_id, params.get("SessionId")) {
        (Some(s), _) if !s.is_empty() => s.clone(),
        (_, Some(s)) => s.clone(),
        _ => return Err(ApiError::invalid("TableCloseWriteStream needs a SessionId")),
    };
    let stream_id = stream_id_of(&body, params)?;
    let version = match stream_version_of(&body, params)? {
        Some(v) => v,
        None => {
            state
                .service
                .get_write_stream(&table, &session_id, &stream_id)
                .await?
                .version
        }
    };
    state
        .service
        .close_write_stream(&table, &session_id, &stream_id, version)
        .await?;
    Ok(json_response(&WriteResponse {
        warning_message: Some(None),
        ..Default::default()
    }))
}

// ---- rows ----

/// Reads, decodes and checks a TableWrite body: one Arrow IPC stream. The permit holds the
/// upload's share of the decode budget until its rows are written.
async fn upload_batches(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Vec<RecordBatch>, UploadPermit)> {
    decode_upload(state, headers, body, "TableWrite body", false).await
}

/// The trace id of a request, and whether it says it is a retry.
fn retry_trace(headers: &HeaderMap) -> Option<(String, bool)> {
    let id = header_str(headers, headers::RETRY_TRACE_ID)?;
    let index = header_str(headers, headers::RETRY_INDEX)
        .and_then(|i| i.parse::<i64>().ok())
        .unwrap_or(0);
    Some((id.to_string(), index > 0))
}

pub(super) async fn table_write(
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
            return Ok(with_route_token(json_response(&answer), &session_id));
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
            Ok::<WriteResponse, ApiError>(answer)
        })
    };
    let answer = task.await.map_err(ApiError::internal)??;
    Ok(with_route_token(json_response(&answer), &session_id))
}

async fn stream_write(
    state: &AppState,
    table: &TableId,
    session_id: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<WriteResponse> {
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
    let access_token = header_str(headers, headers::WRITE_ACCESS_TOKEN).map(str::to_string);
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
    Ok(WriteResponse {
        commit_message: Some(None),
        warning_message: Some(None),
        exactly_once_row_offset: Some(ack.next_row_offset as i64),
        rows_written: Some(ack.rows_written),
        duplicate: Some(ack.duplicate),
        ..Default::default()
    })
}

/// A BatchCompatible block upload: the V1 commit message of [`write_block`].
async fn block_write(
    state: &AppState,
    table: &TableId,
    session_id: &str,
    block: u64,
    attempt: u64,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<WriteResponse> {
    if block >= MAX_BLOCK_NUMBER {
        return Err(ApiError::invalid(format!(
            "BlockNumber {block} is not below MaxBlockNumber {MAX_BLOCK_NUMBER}"
        )));
    }
    let (batches, _permit) = upload_batches(state, headers, body).await?;
    let message = write_block(state, table, session_id, block, attempt, batches).await?;
    Ok(WriteResponse {
        record_count: message.writer_stats.as_ref().and_then(|s| s.record_num),
        commit_message: Some(Some(message.to_text())),
        warning_message: Some(None),
        ..Default::default()
    })
}

/// Writes one upload of the block / attempt model (BatchCompatible, V1): a fresh version of
/// the block attempt's stream (or the reserved one, while still empty), closed after the
/// rows, so that a repeated upload of the same attempt supersedes the earlier one instead of
/// adding to it. Its commit message names that version.
pub(crate) async fn write_block(
    state: &AppState,
    table: &TableId,
    session_id: &str,
    block: u64,
    attempt: u64,
    batches: Vec<RecordBatch>,
) -> ApiResult<BlockCommitMessage> {
    let stream_id = block_stream_id(block, attempt);
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
    Ok(BlockCommitMessage::new(
        block,
        attempt,
        stream.version,
        ack.rows_written,
    ))
}

// ---- commit ----

pub(super) async fn commit(state: &AppState, params: &Params, body: Body) -> ApiResult<Response> {
    let table = target(params)?;
    let mode = write_mode(params)?;
    let session_id = param(params, "SessionId")?.to_string();
    let body: CommitRequest = json_body_or_empty(state, body).await?;
    if mode == Some(WriteMode::BatchCompatible) || body.commit_messages.is_some() {
        let list = commit_message_streams(state, &table, &session_id, &body).await?;
        let info = state
            .service
            .commit_write_session(&table, &session_id, Some(&list))
            .await?;
        return Ok(json_response(&WriteSessionResponse {
            session_id: Some(session_id),
            session_status: Some(SessionStatus::Committed.as_str().into()),
            ..WriteSessionResponse::committed(info)
        }));
    }
    let list = body.stream_pairs().map_err(ApiError::invalid)?;
    let streams = (!list.is_empty()).then_some(&list[..]);
    let info = state
        .service
        .commit_write_session(&table, &session_id, streams)
        .await?;
    // Clients ignore the body; TableVersion and RecordCount are for clients that want them.
    Ok(with_route_token(
        json_response(&WriteSessionResponse::committed(info)),
        &session_id,
    ))
}

/// The (stream, version) pairs that BatchCompatible commit messages name, each once. A
/// message without a version commits the attempt's latest.
async fn commit_message_streams(
    state: &AppState,
    table: &TableId,
    session_id: &str,
    body: &CommitRequest,
) -> ApiResult<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for message in body.block_messages().map_err(ApiError::invalid)? {
        let (block, attempt) = message.block().map_err(ApiError::invalid)?;
        let stream_id = block_stream_id(block, attempt);
        let version = match message.stream_version {
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
