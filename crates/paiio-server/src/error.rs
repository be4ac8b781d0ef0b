//! Errors as the Storage API answers them: a status and a JSON body whose `Code` the official
//! clients map to their exception classes (docs/storage-api.md §2.5). Storage errors are mapped
//! by [`paiio_storage::protocol::error::to_wire`], which also carries them as structured
//! fields for paiio's own client.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use paiio_storage::Error;
use paiio_storage::protocol::error::{ErrorBody, ErrorDetail, to_wire};
use paiio_storage::protocol::headers;

/// An error answer of the server.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Filled in by the request-id layer when the handler did not know it.
    pub request_id: Option<String>,
    /// The storage error as fields, when the answer is one (boxed: errors travel in every
    /// `Result`).
    pub detail: Option<Box<ErrorDetail>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            request_id: None,
            detail: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NoSuchObject", message)
    }

    /// A 400 `NotSupported`.
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "NotSupported", message)
    }

    /// A 500 for what went wrong inside the server (a task that failed).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
    }

    pub fn too_large(what: &str, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "InvalidArgument",
            format!("{what} is larger than the limit of {limit} bytes"),
        )
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, body) = to_wire(&e);
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            code: body.code,
            message: body.message,
            request_id: None,
            detail: body.paiio.map(Box::new),
        }
    }
}

impl From<paiio_storage::protocol::codec::DecodeError> for ApiError {
    fn from(e: paiio_storage::protocol::codec::DecodeError) -> Self {
        use paiio_storage::protocol::codec::DecodeError;
        match e {
            DecodeError::TooLarge { what, limit } => ApiError::too_large(&what, limit),
            DecodeError::Invalid(message) => ApiError::invalid(message),
        }
    }
}

impl ApiError {
    /// The error as the Tunnel answers it: `<Error><Code/><Message/><RequestId/><HostId/>`.
    pub(crate) fn into_xml_response(self) -> Response {
        let request_id = self.request_id.clone().unwrap_or_default();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
             <RequestId>{}</RequestId><HostId>paiio</HostId></Error>",
            xml_escape(&self.code),
            xml_escape(&self.message),
            xml_escape(&request_id)
        );
        let mut response = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/xml")],
            body,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(headers::REQUEST_ID, v);
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// Text as XML character data.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = self.request_id.clone().unwrap_or_default();
        let body = ErrorBody {
            code: self.code.clone(),
            message: self.message.clone(),
            request_id: request_id.clone(),
            host_id: Some("paiio".into()),
            paiio: self.detail.as_deref().cloned(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if !request_id.is_empty()
            && let Ok(v) = HeaderValue::from_str(&request_id)
        {
            response.headers_mut().insert(headers::REQUEST_ID, v);
        }
        // Let the request-id layer see the error (for logs) without re-parsing the body.
        response.extensions_mut().insert(self);
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
