//! The few non-storage endpoints the official clients call (docs/storage-api.md §4).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

pub(crate) async fn tenants() -> Response {
    axum::Json(serde_json::json!({
        "Tenant": {"Name": "paiio", "Parameters": {"odps.namespace.schema": "false"}}
    }))
    .into_response()
}

/// Tunnel discovery: the storage endpoint is this same server.
pub(crate) async fn tunnel(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> Response {
    if let Err(e) = paiio_storage::uri::validate_name("project name", &project) {
        return ApiError::from(e).into_response();
    }
    let addr = state.addr.read().map(|a| a.to_string()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain")], addr).into_response()
}

pub(crate) async fn logview_host(State(state): State<Arc<AppState>>) -> Response {
    let addr = state.addr.read().map(|a| a.to_string()).unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain")],
        format!("http://{addr}/logview"),
    )
        .into_response()
}

pub(crate) async fn webconsole_host(State(state): State<Arc<AppState>>) -> Response {
    let addr = state.addr.read().map(|a| a.to_string()).unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain")],
        format!("http://{addr}/webconsole"),
    )
        .into_response()
}

pub(crate) async fn unknown_route(uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NoSuchObject",
        format!("no such resource: {}", uri.path()),
    )
    .into_response()
}
