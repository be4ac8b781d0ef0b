//! V2 reads: read sessions, `TableRead`, `TablePreview` (docs/storage-api.md §6.1–6.4).

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use paiio_storage::protocol::codec::BodyEncoding;
use paiio_storage::protocol::storage::{
    CreateReadSessionRequest, PreviewRequest, ReadSessionResponse, TableReadRequest,
};
use paiio_storage::{PartitionSpec, ReadRange, ReadRequest, ReadSession};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::request::{
    Params, check_column_names, flag, json_body, json_body_or_empty, json_response, opt_u64, param,
    target, with_route_token,
};
use crate::stream::{accepted_encoding, arrow_stream_body};

fn read_session_response(s: &ReadSession) -> Response {
    with_route_token(json_response(&ReadSessionResponse::from(s)), &s.session_id)
}

pub(super) async fn create_read_session(
    state: &AppState,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let body: CreateReadSessionRequest = json_body(state, body).await?;
    check_column_names(state, &body.required_data_columns, "RequiredDataColumns")?;
    check_column_names(
        state,
        &body.required_partition_columns,
        "RequiredPartitionColumns",
    )?;
    let request = body.into_request(table)?;
    let session = state.service.create_read_session(&request).await?;
    Ok(read_session_response(&session))
}

pub(super) async fn get_read_session(
    state: &AppState,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let _: serde::de::IgnoredAny = json_body_or_empty(state, body).await?;
    let id = param(params, "SessionId")?;
    let refresh = flag(params, "session_refresh");
    let session = state.service.get_read_session(&table, id, refresh).await?;
    Ok(read_session_response(&session))
}

pub(super) async fn table_read(
    state: &AppState,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let body: TableReadRequest = json_body_or_empty(state, body).await?;
    let session_id = param(params, "SessionId")?;
    check_column_names(state, &body.data_columns, "DataColumns")?;
    let range = match (
        opt_u64(params, "Index")?,
        opt_u64(params, "Offset")?,
        opt_u64(params, "Count")?,
    ) {
        (Some(i), None, _) => ReadRange::Split(i),
        (_, Some(offset), Some(count)) => ReadRange::Rows { offset, count },
        (_, Some(offset), None) => {
            // An open-ended range: up to the end of the session.
            let session = state
                .service
                .get_read_session(&table, session_id, false)
                .await?;
            let total = session.record_count.max(0) as u64;
            ReadRange::Rows {
                offset,
                count: total.saturating_sub(offset),
            }
        }
        (None, None, _) => {
            return Err(ApiError::invalid(
                "TableRead needs Index, or Offset and Count",
            ));
        }
    };
    let max_batch_rows = match body.max_batch_rows {
        None | Some(0) => ReadRequest::DEFAULT_MAX_BATCH_ROWS,
        Some(n) if n > state.limits.max_batch_rows as u64 => {
            return Err(ApiError::invalid(format!(
                "MaxBatchRows {n} is over the limit of {}",
                state.limits.max_batch_rows
            )));
        }
        Some(n) => n as usize,
    };
    let encoding = accepted_encoding(headers)?;
    let mut request = ReadRequest::new(table, session_id, range);
    request.max_batch_rows = max_batch_rows;
    request.skip_rows = body.skip_row_num.unwrap_or(0);
    request.columns = body.data_columns;
    let stream = state.service.read(&request).await?;
    arrow_stream_body(stream, encoding, None).await
}

pub(super) async fn preview(state: &AppState, params: &Params, body: Body) -> ApiResult<Response> {
    let table = target(params)?;
    let body: PreviewRequest = json_body_or_empty(state, body).await?;
    check_column_names(state, &body.columns, "Columns")?;
    let limit = match body.limit {
        Some(n) => n,
        None => opt_u64(params, "Limit")?.unwrap_or(10_000),
    };
    let partition = body
        .partition
        .or_else(|| params.get("Partition").cloned())
        .unwrap_or_default();
    let partition = PartitionSpec::parse(&partition)?;
    let stream = state
        .service
        .preview(
            &table,
            (!partition.is_empty()).then_some(&partition),
            &body.columns,
            limit,
        )
        .await?;
    arrow_stream_body(stream, BodyEncoding::Identity, None).await
}
