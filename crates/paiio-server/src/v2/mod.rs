//! Storage API V2/V3: `POST /api/storage/v{2,3}?Action=...&Target=...` (docs/storage-api.md §6),
//! one handler per [`Action`].

mod blob;
mod read;
pub(crate) mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use paiio_storage::protocol::storage::Action;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::request::{Params, param};

pub(crate) async fn dispatch(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(version): axum::extract::Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&state, &version, &params, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &Arc<AppState>,
    version: &str,
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
    let name = param(params, "Action")?;
    if name.starts_with("Instance") {
        return Err(ApiError::not_supported(format!(
            "{name}: SQL instances are not supported by this server; read tables instead"
        )));
    }
    let action: Action =
        name.parse()
            .map_err(|e: paiio_storage::protocol::storage::UnknownAction| {
                ApiError::invalid(e.to_string())
            })?;
    match action {
        Action::TableCreateReadSession => read::create_read_session(state, params, body).await,
        Action::TableGetReadSession => read::get_read_session(state, params, body).await,
        Action::TableRead => read::table_read(state, params, headers, body).await,
        Action::TablePreview => read::preview(state, params, body).await,
        Action::TableCreateWriteSession => write::create_write_session(state, params, body).await,
        Action::TableGetWriteSession => write::get_write_session(state, params, body).await,
        Action::TableCreateWriteStream => write::create_write_stream(state, params, body).await,
        Action::TableGetWriteStream => write::get_write_stream(state, params, body).await,
        Action::TableWrite => write::table_write(state, params, headers, body).await,
        Action::TableCloseWriteStream => write::close_write_stream(state, params, body).await,
        Action::TableCommitWriteSession => write::commit(state, params, body).await,
        Action::TableAbortWriteSession => write::abort(state, params, body).await,
        Action::TableGetWriteSchema => write::get_write_schema(state, params, body).await,
        Action::TableWriteBlob => blob::write_blob(state, params, headers, body).await,
        Action::BlobRead => blob::blob_read(state, headers, body).await,
    }
}
