//! Layers every request passes through: the request id, and signature verification.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paiio_storage::auth::is_signed_header;
use paiio_storage::protocol::headers;

use crate::AppState;
use crate::error::ApiError;

/// The id of the request being served, as a request extension.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// Gives every request an id and puts it on every response (success or error).
/// Tunnel calls (docs/tunnel.md) get their errors as XML, the only form PyODPS's Tunnel error
/// parser reads; every other call as JSON.
pub(crate) async fn request_id(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tunnel = crate::tunnel::is_tunnel_path(request.uri().path());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Some(err) = response.extensions().get::<ApiError>().cloned()
        && (err.request_id.is_none() || tunnel)
    {
        // Re-render the error body with the request id in it.
        let err = ApiError {
            request_id: Some(id.clone()),
            ..err
        };
        tracing::debug!(code = %err.code, status = %err.status, "{}", err.message);
        response = if tunnel {
            err.into_xml_response()
        } else {
            err.into_response()
        };
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(headers::REQUEST_ID, v);
    }
    response
}

/// Headers the server acts on besides the signed ones.
const ACTED_ON: &[&str] = &[
    "content-encoding",
    headers::RETRY_TRACE_ID,
    headers::RETRY_INDEX,
];

/// The first header that is signed or acted on and occurs more than once. The signature
/// covers the last value of a header while a handler reads the first, so such a request is
/// ambiguous, signed or not.
fn repeated_header(headers: &HeaderMap) -> Option<&str> {
    headers.keys().map(|k| k.as_str()).find(|name| {
        (is_signed_header(name) || ACTED_ON.contains(name))
            && headers.get_all(*name).iter().nth(1).is_some()
    })
}

/// Verifies the request's signature (legacy or V4) unless the server allows anonymous access.
/// A request that repeats a signed header (or one the server acts on) is refused either way.
pub(crate) async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(name) = repeated_header(request.headers()) {
        return ApiError::invalid(format!(
            "the header {name} occurs more than once; it is signed or acted on, so send it once"
        ))
        .into_response();
    }
    let Some(verifier) = &state.verifier else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect();
    // Storage calls are signed relative to the tunnel endpoint (no prefix); REST calls relative
    // to the ODPS endpoint `.../api`.
    match verifier.verify_with_prefixes(
        &method,
        &path_and_query,
        &headers,
        SystemTime::now(),
        &["/api"],
    ) {
        Ok(_) => next.run(request).await,
        Err(e) => {
            let mut err = ApiError::from(e);
            if err.status == StatusCode::INTERNAL_SERVER_ERROR {
                err.status = StatusCode::UNAUTHORIZED;
            }
            err.into_response()
        }
    }
}
