//! Upload sessions (docs/tunnel.md §2.4): a block-model write session of one table or one
//! partition. Block `N` is written as a fresh version of the backend stream of block `N`, so
//! a block sent again replaces the earlier one (a retried PUT never duplicates rows); the
//! commit makes the latest version of every block visible at once, and answers a repeated
//! commit with the committed session.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use paiio_storage::protocol::storage::{MAX_BLOCK_NUMBER, parse_block_stream_id};
use paiio_storage::protocol::tunnel::WireError;
use paiio_storage::protocol::tunnel::arrow_stream::{
    ArrowDecodeOptions, ArrowStreamDecoder, from_wire_batch,
};
use paiio_storage::protocol::tunnel::encoding::Compression;
use paiio_storage::protocol::tunnel::record::{RecordDecodeOptions, RecordDecoder};
use paiio_storage::protocol::tunnel::session::{
    TunnelSchema, UploadSession, UploadStatus, UploadedBlock,
};
use paiio_storage::{
    ArrowOptions, PartitionSpec, SessionStatus, TableId, TableSchema, WriteMode, WriteSession,
    WriteSessionRequest, service::StreamStatus,
};

use super::download::json;
use super::{partition, session_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::request::{Params, blocking, flag, read_body};

/// The largest value one field may hold, as sessions report it (`MaxFieldSize`).
const MAX_FIELD_SIZE: u64 = 8 << 20;

/// A 404 unless `spec` is an existing partition of `table`.
pub(super) async fn check_partition_exists(
    state: &AppState,
    table: &TableId,
    spec: &PartitionSpec,
) -> ApiResult<()> {
    let partitions = state.service.list_partitions(table).await?;
    if partitions.iter().any(|p| &p.spec == spec) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NoSuchPartition",
            format!("table {table} has no partition {spec}"),
        ))
    }
}

/// `POST ?uploads=1[&overwrite=true][&create_partition=true]`.
pub(super) async fn create(
    state: &AppState,
    table: TableId,
    params: &Params,
) -> ApiResult<Response> {
    let schema = state.service.table_schema(&table).await?;
    let spec = partition(params, &table, &schema)?;
    // PyODPS sends `create_partition=true`; the Java SDK a bare `create_partition`.
    let create_partition = params
        .get("create_partition")
        .is_some_and(|v| v.trim().is_empty() || v.trim().eq_ignore_ascii_case("true"));
    if !spec.is_empty() && !create_partition {
        check_partition_exists(state, &table, &spec).await?;
    }
    let mut request = WriteSessionRequest::new(table);
    request.partition = spec;
    request.overwrite = flag(params, "overwrite");
    request.mode = WriteMode::BatchCompatible;
    let session = state.service.create_write_session(&request).await?;
    Ok(json(session_answer(&session, &schema).to_json()))
}

/// `GET ?uploadid=ID`.
pub(super) async fn reload(
    state: &AppState,
    table: TableId,
    params: &Params,
) -> ApiResult<Response> {
    let id = session_id(params, "uploadid")?;
    let session = state.service.get_write_session(&table, id).await?;
    let schema = state.service.table_schema(&table).await?;
    Ok(json(session_answer(&session, &schema).to_json()))
}

fn session_answer(session: &WriteSession, schema: &TableSchema) -> UploadSession {
    let mut blocks: Vec<u64> = session
        .streams
        .iter()
        .filter(|s| s.status == StreamStatus::Closed)
        .filter_map(|s| parse_block_stream_id(&s.stream_id).map(|(block, _)| block))
        .collect();
    blocks.sort_unstable();
    blocks.dedup();
    UploadSession {
        id: session.session_id.clone(),
        status: match session.status {
            SessionStatus::Init | SessionStatus::Normal => UploadStatus::Normal,
            SessionStatus::Committing => UploadStatus::Closing,
            SessionStatus::Committed => UploadStatus::Closed,
            SessionStatus::Expired => UploadStatus::Expired,
            SessionStatus::Critical => UploadStatus::Critical,
        },
        blocks: blocks
            .into_iter()
            .map(|block_id| UploadedBlock { block_id })
            .collect(),
        schema: Some(TunnelSchema::from_table_schema(schema)),
        max_field_size: Some(MAX_FIELD_SIZE),
        quota_name: None,
    }
}

/// `PUT ?uploadid=ID&blockid=N[&arrow]`: the block's rows, a record stream (§3) or an Arrow
/// stream (§4), the whole body compressed as `Content-Encoding` says (§5). The body is read
/// and checked whole (every CRC, the footer) before anything is written, so a cut or damaged
/// upload changes nothing.
pub(super) async fn block(
    state: &AppState,
    table: TableId,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = session_id(params, "uploadid")?.to_string();
    let raw_block = params.get("blockid").map_or("", |v| v.trim());
    let block: u64 = raw_block
        .parse()
        .map_err(|_| ApiError::invalid(format!("blockid={raw_block:?} is not a block number")))?;
    if block >= MAX_BLOCK_NUMBER {
        return Err(ApiError::invalid(format!(
            "blockid {block} is not below the limit of {MAX_BLOCK_NUMBER} blocks"
        )));
    }
    let compression = match headers.get(header::CONTENT_ENCODING) {
        None => None,
        Some(v) => Compression::from_encoding(
            v.to_str()
                .map_err(|_| ApiError::invalid("Content-Encoding is not text"))?,
        )?,
    };
    let arrow = params.contains_key("arrow");
    // The session first: an unknown, expired or committed one is refused before the body.
    let session = crate::v2::write::writable_session(state, &table, &id).await?;
    if session.mode != WriteMode::BatchCompatible {
        return Err(ApiError::invalid(format!(
            "session {id} is not an upload session"
        )));
    }
    let schema = state.service.table_schema(&table).await?;
    let columns = schema.columns.clone();
    let limits = state.limits;
    let raw = read_body(body, limits.max_upload_body, "block upload").await?;
    let _permit = state
        .decode_budget
        .reserve(limits.max_decoded_upload.max(raw.len()))
        .await?;
    let batches = blocking(move || {
        let data = match compression {
            Some(c) => c.decompress(&raw, limits.max_decoded_upload)?,
            None => raw.to_vec(),
        };
        Ok(decode_block(
            &columns,
            arrow,
            &data,
            limits.max_upload_rows,
        )?)
    })
    .await?;
    crate::v2::write::write_block(state, &table, &id, block, 0, batches).await?;
    Ok(Response::new(Body::empty()))
}

/// Decodes a whole block: every record checked, the footer (or the final CRC) required.
fn decode_block(
    columns: &[paiio_storage::Column],
    arrow: bool,
    data: &[u8],
    max_rows: usize,
) -> Result<Vec<arrow_array::RecordBatch>, WireError> {
    let options = ArrowOptions::default();
    let mut batches = Vec::new();
    if arrow {
        let mut decoder = ArrowStreamDecoder::new(columns, ArrowDecodeOptions::default())?;
        batches.extend(decoder.feed(data)?);
        batches.extend(decoder.finish()?);
        batches = batches
            .iter()
            .map(|b| from_wire_batch(b, columns, &options))
            .collect::<Result<_, _>>()?;
    } else {
        let mut decoder = RecordDecoder::new(columns, &options, RecordDecodeOptions::default())?;
        batches.extend(decoder.feed(data)?);
        batches.extend(decoder.finish()?);
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > max_rows {
        return Err(WireError::Malformed {
            stream: "block upload",
            message: format!("{rows} rows is more than the limit of {max_rows} per block"),
        });
    }
    Ok(batches)
}

/// `POST ?uploadid=ID`: makes every uploaded block visible, atomically. Committing a
/// committed session answers with it again, so a commit whose answer was lost can be sent
/// again safely.
pub(super) async fn commit(
    state: &AppState,
    table: TableId,
    params: &Params,
) -> ApiResult<Response> {
    let id = session_id(params, "uploadid")?;
    let session = state.service.get_write_session(&table, id).await?;
    if session.status != SessionStatus::Committed {
        crate::v2::write::writable_session(state, &table, id).await?;
        state.service.commit_write_session(&table, id, None).await?;
    }
    let session = state.service.get_write_session(&table, id).await?;
    let schema = state.service.table_schema(&table).await?;
    Ok(json(session_answer(&session, &schema).to_json()))
}
