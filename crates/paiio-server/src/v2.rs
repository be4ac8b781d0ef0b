//! Storage API V2/V3: `POST /api/storage/v{2,3}?Action=...&Target=...` (STORAGE_API.md §6).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use paiio_storage::service::parse_time_unit;
use paiio_storage::types::ArrowOptions;
use paiio_storage::{
    PartitionSpec, ReadRange, ReadRequest, ReadSession, ReadSessionRequest, SplitMode,
    SplitOptions, TableId, TableSchema,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::stream::{Compression, arrow_stream_body};
use crate::{AppState, ROUTE_TOKEN_HEADER};

/// Query parameters, by their exact (case-sensitive) names.
pub(crate) type Params = HashMap<String, String>;

pub(crate) async fn dispatch(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(version): axum::extract::Path<String>,
    method: Method,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&state, &version, &method, &params, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &Arc<AppState>,
    version: &str,
    method: &Method,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if !matches!(version, "v2" | "v3") {
        if version == "v1" {
            return Err(ApiError::not_found(
                "V1 calls are addressed as /api/storage/v1/projects/...",
            ));
        }
        return Err(ApiError::not_found(format!(
            "no storage API version {version:?}"
        )));
    }
    let action = param(params, "Action")?;
    if action.starts_with("Instance") {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "NotSupported",
            format!(
                "{action}: SQL instances are not supported by this server; read tables instead"
            ),
        ));
    }
    let _ = method;
    match action {
        "TableCreateReadSession" => {
            let table = target(params)?;
            let body: CreateReadSessionBody = json_body(state, body).await?;
            create_read_session(state, table, body).await
        }
        "TableGetReadSession" => {
            let table = target(params)?;
            let _: Value = json_body_or_empty(state, body).await?;
            let refresh = params
                .get("session_refresh")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let id = param(params, "SessionId")?;
            let session = state.service.get_read_session(&table, id, refresh).await?;
            Ok(read_session_response(&session))
        }
        "TableRead" => {
            let table = target(params)?;
            let body: ReadBody = json_body_or_empty(state, body).await?;
            table_read(state, table, params, headers, body).await
        }
        "TablePreview" => {
            let table = target(params)?;
            let body: PreviewBody = json_body_or_empty(state, body).await?;
            preview(state, table, params, body).await
        }
        other => crate::v2_write::dispatch(state, other, params, headers, body).await,
    }
}

pub(crate) fn param<'a>(params: &'a Params, name: &str) -> ApiResult<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::invalid(format!("the query parameter {name} is missing")))
}

pub(crate) fn opt_u64(params: &Params, name: &str) -> ApiResult<Option<u64>> {
    params
        .get(name)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::invalid(format!("{name}={v:?} is not a non-negative integer"))
            })
        })
        .transpose()
}

pub(crate) fn target(params: &Params) -> ApiResult<TableId> {
    Ok(TableId::parse_target(param(params, "Target")?)?)
}

/// Reads a whole JSON body, bounded by the server's limit.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> ApiResult<T> {
    let bytes = read_body(body, state.limits.max_json_body, "JSON request body").await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("malformed JSON request body: {e}")))
}

/// Like [`json_body`], but an empty body counts as `{}` (body-less GETs).
pub(crate) async fn json_body_or_empty<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    body: Body,
) -> ApiResult<T> {
    let bytes = read_body(body, state.limits.max_json_body, "JSON request body").await?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("malformed JSON request body: {e}")))
}

/// Collects a request body, failing with 413 past `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize, what: &str) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(what, limit))
        }
        Err(e) => Err(ApiError::invalid(format!("cannot read the {what}: {e}"))),
    }
}

/// Refuses a list of column names that repeats a name (MaxCompute names are
/// case-insensitive) or lists more than `Limits::max_column_names`.
pub(crate) fn check_column_names(state: &AppState, names: &[String], what: &str) -> ApiResult<()> {
    let max = state.limits.max_column_names;
    if names.len() > max {
        return Err(ApiError::invalid(format!(
            "{what} lists {} column names; at most {max} are allowed",
            names.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    for name in names {
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(ApiError::invalid(format!(
                "{what} names the column {name:?} more than once"
            )));
        }
    }
    Ok(())
}

pub(crate) fn json_response(value: Value) -> Response {
    axum::Json(value).into_response()
}

pub(crate) fn with_route_token(mut response: Response, session_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("rt-{session_id}")) {
        response.headers_mut().insert(ROUTE_TOKEN_HEADER, v);
    }
    response
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct CreateReadSessionBody {
    required_data_columns: Vec<String>,
    required_partition_columns: Vec<String>,
    required_partitions: Vec<String>,
    required_bucket_ids: Vec<u32>,
    split_options: Option<SplitOptionsBody>,
    arrow_options: Option<ArrowOptionsBody>,
    filter_predicate: Option<String>,
    filter_predicate_fallback: Option<bool>,
    enable_large_string: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct SplitOptionsBody {
    split_mode: Option<String>,
    split_number: Option<i64>,
    cross_partition: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ArrowOptionsBody {
    timestamp_unit: Option<String>,
    datetime_unit: Option<String>,
}

async fn create_read_session(
    state: &AppState,
    table: TableId,
    body: CreateReadSessionBody,
) -> ApiResult<Response> {
    check_column_names(state, &body.required_data_columns, "RequiredDataColumns")?;
    check_column_names(
        state,
        &body.required_partition_columns,
        "RequiredPartitionColumns",
    )?;
    let split = body.split_options.unwrap_or_default();
    let mode: SplitMode = split.split_mode.as_deref().unwrap_or("Size").parse()?;
    let number = split.split_number.unwrap_or(0);
    if number < 0 {
        return Err(ApiError::invalid(format!(
            "SplitNumber {number} is negative"
        )));
    }
    let number = match (mode, number) {
        (SplitMode::Size, 0) => SplitOptions::DEFAULT_SPLIT_SIZE,
        (SplitMode::Parallelism, 0) => 32,
        (_, n) => n as u64,
    };
    let mut arrow_options = ArrowOptions::default();
    if let Some(a) = body.arrow_options {
        if let Some(u) = a.timestamp_unit {
            arrow_options.timestamp_unit = parse_time_unit(&u)?;
        }
        if let Some(u) = a.datetime_unit {
            arrow_options.datetime_unit = parse_time_unit(&u)?;
        }
    }
    arrow_options.large_string = body.enable_large_string.unwrap_or(false);
    let required_partitions = body
        .required_partitions
        .iter()
        .map(|p| PartitionSpec::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let request = ReadSessionRequest {
        table,
        required_data_columns: body.required_data_columns,
        required_partition_columns: body.required_partition_columns,
        required_partitions,
        required_bucket_ids: body.required_bucket_ids,
        split_options: SplitOptions {
            mode,
            number,
            cross_partition: split.cross_partition.unwrap_or(true),
        },
        arrow_options,
        filter_predicate: body.filter_predicate.unwrap_or_default(),
        filter_predicate_fallback: body.filter_predicate_fallback.unwrap_or(false),
    };
    let session = state.service.create_read_session(&request).await?;
    Ok(read_session_response(&session))
}

/// The read-schema format: `{"DataColumns":[{"Name","Type","Comment","Nullable","ColumnId"}],...}`.
pub(crate) fn read_schema_json(schema: &TableSchema) -> Value {
    let mut id = 0;
    let mut column = |c: &paiio_storage::Column| {
        id += 1;
        json!({"Name": c.name, "Type": c.ty.to_string(), "Comment": c.comment, "Nullable": c.nullable, "ColumnId": id.to_string()})
    };
    let data: Vec<Value> = schema.columns.iter().map(&mut column).collect();
    let partitions: Vec<Value> = schema.partition_columns.iter().map(&mut column).collect();
    json!({"DataColumns": data, "PartitionColumns": partitions, "SystemColumns": []})
}

pub(crate) fn read_session_json(s: &ReadSession) -> Value {
    let row_offset = s.split_mode == SplitMode::RowOffset;
    json!({
        "SessionId": s.session_id,
        "SessionType": "batch_read",
        "SessionStatus": s.status.as_str(),
        "ExpirationTime": s.expiration_time_ms,
        "SplitsCount": s.splits_count,
        "RecordCount": if row_offset { s.record_count } else { -1 },
        "SplitMode": if row_offset { "RowOffset" } else { "Size" },
        "SplitBucketId": s.split_bucket_ids,
        "DataSchema": read_schema_json(&s.schema),
        "SupportedDataFormat": [{"Type": "ARROW", "Version": "V5"}],
        "SessionStats": {"EstimatedSize": s.estimated_size, "EstimatedRowCount": s.record_count},
        "Message": "",
        "EnableLargeString": s.arrow_options.large_string,
        "TableVersion": s.table_version,
    })
}

fn read_session_response(s: &ReadSession) -> Response {
    with_route_token(json_response(read_session_json(s)), &s.session_id)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ReadBody {
    max_batch_rows: Option<i64>,
    skip_row_num: Option<i64>,
    data_columns: Vec<String>,
}

async fn table_read(
    state: &AppState,
    table: TableId,
    params: &Params,
    headers: &HeaderMap,
    body: ReadBody,
) -> ApiResult<Response> {
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
        Some(n) if n < 0 => return Err(ApiError::invalid(format!("MaxBatchRows {n} is negative"))),
        Some(n) if n as usize > state.limits.max_batch_rows => {
            return Err(ApiError::invalid(format!(
                "MaxBatchRows {n} is over the limit of {}",
                state.limits.max_batch_rows
            )));
        }
        Some(n) => n as usize,
    };
    let skip_rows = match body.skip_row_num {
        None => 0,
        Some(n) if n < 0 => return Err(ApiError::invalid(format!("SkipRowNum {n} is negative"))),
        Some(n) => n as u64,
    };
    let compression = Compression::from_accept_encoding(headers)?;
    let mut request = ReadRequest::new(table, session_id, range);
    request.max_batch_rows = max_batch_rows;
    request.skip_rows = skip_rows;
    request.columns = body.data_columns;
    let stream = state.service.read(&request).await?;
    arrow_stream_body(stream, compression).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PreviewBody {
    limit: Option<i64>,
    partition: Option<String>,
    columns: Vec<String>,
}

async fn preview(
    state: &AppState,
    table: TableId,
    params: &Params,
    body: PreviewBody,
) -> ApiResult<Response> {
    check_column_names(state, &body.columns, "Columns")?;
    let limit = match body.limit {
        Some(n) if n < 0 => return Err(ApiError::invalid(format!("Limit {n} is negative"))),
        Some(n) => n as u64,
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
    arrow_stream_body(stream, Compression::None).await
}
