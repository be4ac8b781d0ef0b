//! Errors as the Storage API answers them: a status and a JSON body whose `Code` the official
//! clients map to their exception classes (STORAGE_API.md §2.5).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use paiio_storage::Error;

use crate::REQUEST_ID_HEADER;

/// An error answer of the server.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Filled in by the request-id layer when the handler did not know it.
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            request_id: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NoSuchObject", message)
    }

    pub fn too_large(what: &str, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "InvalidArgument",
            format!("{what} is larger than the limit of {limit} bytes"),
        )
    }
}

/// Maps storage errors onto the service's status codes and error codes.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            Error::NotFound { kind: "table", .. } => (StatusCode::NOT_FOUND, "NoSuchTable"),
            Error::NotFound {
                kind: "partition", ..
            } => (StatusCode::NOT_FOUND, "NoSuchPartition"),
            Error::NotFound { kind, .. } if kind.contains("session") || kind.contains("stream") => {
                (StatusCode::NOT_FOUND, "NoSuchSession")
            }
            Error::NotFound {
                kind: "column" | "partition column",
                ..
            } => (StatusCode::BAD_REQUEST, "InvalidArgument"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "NoSuchObject"),
            Error::AlreadyExists { .. } => (StatusCode::CONFLICT, "ObjectAlreadyExists"),
            Error::InvalidArgument { .. }
            | Error::TypeMismatch { .. }
            | Error::OutOfRange { .. } => (StatusCode::BAD_REQUEST, "InvalidArgument"),
            Error::Config { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
            Error::Unauthenticated { code, .. } => {
                let status = if *code == "NoPermission" {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::UNAUTHORIZED
                };
                (status, *code)
            }
            Error::SessionExpired { .. } => (StatusCode::BAD_REQUEST, "SessionExpired"),
            Error::InvalidState { .. } => (StatusCode::CONFLICT, "InvalidStateSetting"),
            Error::Conflict { .. } => (StatusCode::CONFLICT, "TableModified"),
            Error::NotSupported { .. } => (StatusCode::BAD_REQUEST, "NotSupported"),
            Error::Transient { .. } => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            // A full or read-only disk: the message says which and what could not be done.
            Error::Unwritable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            Error::Service { status, code, .. } => {
                return ApiError::new(
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                    code.clone(),
                    message,
                );
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = self.request_id.clone().unwrap_or_default();
        let body = serde_json::json!({
            "Code": self.code,
            "Message": self.message,
            "RequestId": request_id,
            "HostId": "paiio",
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if !request_id.is_empty()
            && let Ok(v) = HeaderValue::from_str(&request_id)
        {
            response.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        // Let the request-id layer see the error (for logs) without re-parsing the body.
        response.extensions_mut().insert(self);
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_or_read_only_warehouse_is_503_with_the_reason() {
        let e = Error::Unwritable {
            root: "/wh".into(),
            condition: "read-only",
            action: "record read session abc".into(),
            path: "/wh/.paiio/read_sessions/abc.json".into(),
            source: std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
        };
        let api = ApiError::from(e);
        assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            api.message
                .contains("the warehouse at /wh is read-only: cannot record read session abc"),
            "{}",
            api.message
        );
    }
}
