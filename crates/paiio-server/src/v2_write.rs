//! Storage API V2/V3 write and blob actions.

use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::v2::Params;

pub(crate) async fn dispatch(
    state: &Arc<AppState>,
    action: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let _ = (state, params, headers, body);
    Err(ApiError::invalid(format!("unknown Action {action:?}")))
}
