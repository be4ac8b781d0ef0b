//! What V1 and V2 handlers read requests with (query parameters, bounded bodies, JSON) and
//! answer with.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use paiio_storage::TableId;
use paiio_storage::protocol::{self, headers};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Query parameters, by their exact (case-sensitive) names.
pub(crate) type Params = HashMap<String, String>;

/// A query parameter that must be there.
pub(crate) fn param<'a>(params: &'a Params, name: &str) -> ApiResult<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::invalid(format!("the query parameter {name} is missing")))
}

/// A query parameter that must be a non-negative integer when present (an empty value counts
/// as absent).
pub(crate) fn opt_u64(params: &Params, name: &str) -> ApiResult<Option<u64>> {
    match params.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("{name}={v:?} is not a non-negative integer"))),
    }
}

/// A query flag: `true` (any case) is set, anything else is not.
pub(crate) fn flag(params: &Params, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The table a V2 call names in `Target`.
pub(crate) fn target(params: &Params) -> ApiResult<TableId> {
    Ok(TableId::parse_target(param(params, "Target")?)?)
}

/// A header's value, trimmed; `None` when absent, empty or not text.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
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

fn malformed(e: String) -> ApiError {
    ApiError::invalid(format!("malformed JSON request body: {e}"))
}

/// Reads a whole JSON body, bounded by the server's limit.
pub(crate) async fn json_body<T: DeserializeOwned>(state: &AppState, body: Body) -> ApiResult<T> {
    let bytes = read_body(body, state.limits.max_json_body, "JSON request body").await?;
    protocol::from_json(&bytes).map_err(malformed)
}

/// Like [`json_body`], but an empty body counts as `{}` (body-less calls).
pub(crate) async fn json_body_or_empty<T: DeserializeOwned + Default>(
    state: &AppState,
    body: Body,
) -> ApiResult<T> {
    let bytes = read_body(body, state.limits.max_json_body, "JSON request body").await?;
    protocol::from_json_or_default(&bytes).map_err(malformed)
}

/// Parses a JSON body already read (V1 checks its `Content-MD5` first); empty is `{}`.
pub(crate) fn parse_json_or_empty<T: DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    protocol::from_json_or_default(bytes).map_err(malformed)
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

/// A JSON answer with `status`.
pub(crate) fn json_status(status: StatusCode, value: &impl Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}

/// A 200 JSON answer.
pub(crate) fn json_response(value: &impl Serialize) -> Response {
    json_status(StatusCode::OK, value)
}

/// Puts the session's route token on an answer.
pub(crate) fn with_route_token(mut response: Response, session_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("rt-{session_id}")) {
        response.headers_mut().insert(headers::ROUTE_TOKEN, v);
    }
    response
}

/// Runs blocking work (decoding, files) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}
