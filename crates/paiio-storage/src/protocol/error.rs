//! Error answers (docs/storage-api.md §2.5): a status and a body `{"Code","Message","RequestId"}`
//! (JSON, or XML `<Error><Code>..`), to and from [`Error`].
//!
//! [`to_wire`] is how `paiio-server` answers an [`Error`]: the status and `Code` the
//! official clients map to their exception classes, the error's text as `Message`, and,
//! as paiio's extension, the error itself as structured fields under `"Paiio"`
//! ([`ErrorDetail`]; other clients ignore them). [`from_wire`] is how the client reads an
//! answer back: from those fields when they are there, so that `from_wire(to_wire(e))` is
//! `e` again (kind, object, names and message), and otherwise by the `Code` alone
//! ([`from_code`], for the real service).

use serde::{Deserialize, Deserializer, Serialize};

use super::lenient::{self, tolerant};
use super::storage::Action;
use crate::error::{Error, ObjectKind};

/// What a request was about, to name things in errors whose answer does not.
#[derive(Debug, Clone, Default)]
pub struct ErrorContext {
    pub action: Option<Action>,
    pub table: Option<String>,
    pub session_id: Option<String>,
    pub stream_id: Option<String>,
}

/// The body of an error answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    #[serde(default, deserialize_with = "text_or_empty")]
    pub code: String,
    pub message: String,
    #[serde(default, deserialize_with = "text_or_empty")]
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// paiio's extension: the error as structured fields. Unknown shapes (a newer server's)
    /// are ignored, and the answer is read by its `Code`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "tolerant"
    )]
    pub paiio: Option<ErrorDetail>,
}

fn text_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    lenient::opt_text(d).map(Option::unwrap_or_default)
}

macro_rules! details {
    ($($variant:ident { $($field:ident: $ty:ty),* },)*) => {
        /// An [`Error`] as fields (`{"Error": "NotFound", "Kind": "table", "Name": "p.t"}`):
        /// the variants a client acts on, with the fields they have. Others (transient
        /// failures, service errors) travel as their status and `Code` only.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "Error", rename_all_fields = "PascalCase")]
        pub enum ErrorDetail {
            $($variant { $($field: $ty),* },)*
        }

        impl ErrorDetail {
            /// The detail of `e`, when it has one.
            pub fn of(e: &Error) -> Option<Self> {
                match e {
                    $(Error::$variant { $($field),* } => {
                        Some(ErrorDetail::$variant { $($field: $field.clone()),* })
                    })*
                    _ => None,
                }
            }

            pub fn into_error(self) -> Error {
                match self {
                    $(ErrorDetail::$variant { $($field),* } => Error::$variant { $($field),* },)*
                }
            }
        }
    };
}

details! {
    NotFound { kind: ObjectKind, name: String },
    AlreadyExists { kind: ObjectKind, name: String },
    InvalidArgument { what: String, message: String },
    TypeMismatch { column: String, message: String },
    SessionExpired { session_id: String },
    InvalidState { session_id: String, state: String, message: String },
    OutOfRange { message: String },
    Conflict { table: String, message: String },
    NotSupported { message: String },
}

/// The status and the body an [`Error`] is answered with (the request id is the server's
/// to fill in, except for a service's own error, passed on with its message and request id).
pub fn to_wire(e: &Error) -> (u16, ErrorBody) {
    let (status, code): (u16, &str) = match e {
        Error::NotFound { kind, .. } => match kind {
            ObjectKind::Table => (404, "NoSuchTable"),
            ObjectKind::Partition => (404, "NoSuchPartition"),
            ObjectKind::ReadSession
            | ObjectKind::WriteSession
            | ObjectKind::WriteStream
            | ObjectKind::WriteStreamVersion
            | ObjectKind::Session => (404, "NoSuchSession"),
            // The service answers unknown columns 400 InvalidArgument.
            ObjectKind::Column | ObjectKind::PartitionColumn => (400, "InvalidArgument"),
            _ => (404, "NoSuchObject"),
        },
        Error::AlreadyExists { .. } => (409, "ObjectAlreadyExists"),
        Error::InvalidArgument { .. } | Error::TypeMismatch { .. } | Error::OutOfRange { .. } => {
            (400, "InvalidArgument")
        }
        Error::Unauthenticated { code, .. } if *code == "NoPermission" => (403, code),
        Error::Unauthenticated { code, .. } => (401, code),
        Error::SessionExpired { .. } => (400, "SessionExpired"),
        Error::InvalidState { .. } => (409, "InvalidStateSetting"),
        Error::Conflict { .. } => (409, "TableModified"),
        Error::NotSupported { .. } => (400, "NotSupported"),
        // A full or read-only disk: the message says which and what could not be done.
        Error::Transient { .. } | Error::Unwritable { .. } => (503, "ServiceUnavailable"),
        Error::Service { status, code, .. } => {
            let status = if (100..=999).contains(status) {
                *status
            } else {
                502
            };
            (status, code.as_str())
        }
        _ => (500, "InternalServerError"),
    };
    let (message, request_id) = match e {
        // A service's own answer, passed on as it came.
        Error::Service {
            message,
            request_id,
            ..
        } => (message.clone(), request_id.clone()),
        e => (e.to_string(), String::new()),
    };
    let body = ErrorBody {
        code: code.to_string(),
        message,
        request_id,
        host_id: None,
        paiio: ErrorDetail::of(e),
    };
    (status, body)
}

/// The [`Error`] an error answer stands for: its structured fields when it has them, else
/// [`from_code`].
pub fn from_wire(status: u16, body: ErrorBody, ctx: &ErrorContext) -> Error {
    match body.paiio {
        Some(detail) => detail.into_error(),
        None => from_code(status, body.code, body.message, body.request_id, ctx),
    }
}

/// Reads an error answer's body (XML first, with all of Code, Message and RequestId as
/// PyODPS requires; then JSON with at least a Message) and maps it with [`from_wire`]. The
/// `x-odps-request-id` header wins over the body's request id. A body that is neither is a
/// [`Error::Service`] with its first 512 bytes as the message.
pub fn from_response(
    status: u16,
    header_request_id: Option<&str>,
    body: &[u8],
    ctx: &ErrorContext,
) -> Error {
    let header_request_id = header_request_id.filter(|r| !r.is_empty());
    match parse_body(body) {
        Some(mut parsed) => {
            if let Some(id) = header_request_id {
                parsed.request_id = id.to_string();
            }
            from_wire(status, parsed, ctx)
        }
        None => Error::Service {
            status,
            code: match status {
                404 => "NoSuchObject",
                401 => "Unauthorized",
                _ => "",
            }
            .into(),
            message: String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string(),
            request_id: header_request_id.unwrap_or_default().to_string(),
        },
    }
}

/// An error by its `Code` alone: how answers without paiio's fields (the real service's) are
/// read, naming what the request was about from `ctx`. This is the one place that reads the
/// message text, and only to tell a stream from its session. 408, 429 and 5xx are
/// [`Error::Service`] (retryable), as is any code not listed:
///
/// | Code | Error |
/// |---|---|
/// | `NoSuchTable` | `NotFound` table |
/// | `NoSuchPartition` | `NotFound` partition |
/// | `NoSuchSession`, `NoSuchStream` | `NotFound` write stream, or the action's session |
/// | `NoSuchObject` | `NotFound` object |
/// | `InvalidArgument`, `InvalidParameter` | `InvalidArgument` |
/// | `SignatureNotMatch`, `AuthorizationRequired`, `AuthenticationRequestExpired`, `NoPermission`, `AccessDenied`, `Unauthorized` | `Unauthenticated` |
/// | `SessionExpired` | `SessionExpired` |
/// | `InvalidStateSetting`, `InvalidState` | `InvalidState` |
/// | `ObjectAlreadyExists`, `AlreadyExists`, `TableAlreadyExists` | `AlreadyExists` table |
/// | `NotSupported` | `NotSupported` |
/// | `TableModified`, `Conflict` | `Conflict` |
pub fn from_code(
    status: u16,
    code: String,
    message: String,
    request_id: String,
    ctx: &ErrorContext,
) -> Error {
    if matches!(status, 408 | 429 | 500..=599) {
        return Error::Service {
            status,
            code,
            message,
            request_id,
        };
    }
    let with_id = |m: &str| {
        if request_id.is_empty() {
            m.to_string()
        } else {
            format!("{m} (request id {request_id})")
        }
    };
    let table = ctx.table.clone().unwrap_or_default();
    let session = ctx.session_id.clone().unwrap_or_default();
    let or_message = |name: String| {
        if name.is_empty() {
            with_id(&message)
        } else {
            name
        }
    };
    let unauthenticated = |code: &'static str| Error::Unauthenticated {
        code,
        message: with_id(&message),
    };
    match code.as_str() {
        "NoSuchTable" => Error::not_found(ObjectKind::Table, or_message(table)),
        "NoSuchPartition" => Error::not_found(ObjectKind::Partition, with_id(&message)),
        "NoSuchSession" | "NoSuchStream" => match &ctx.stream_id {
            Some(stream) if code == "NoSuchStream" || message.contains("stream") => {
                Error::not_found(
                    ObjectKind::WriteStream,
                    format!("{stream} of session {session}"),
                )
            }
            _ => Error::not_found(
                ctx.action.map_or(ObjectKind::Session, Action::session_kind),
                or_message(session),
            ),
        },
        "NoSuchObject" => Error::not_found(ObjectKind::Object, with_id(&message)),
        "InvalidArgument" | "InvalidParameter" => Error::invalid("request", with_id(&message)),
        "SignatureNotMatch" => unauthenticated(crate::auth::SIGNATURE_NOT_MATCH),
        "AuthorizationRequired" => unauthenticated(crate::auth::AUTHORIZATION_REQUIRED),
        "AuthenticationRequestExpired" => {
            unauthenticated(crate::auth::AUTHENTICATION_REQUEST_EXPIRED)
        }
        "NoPermission" | "AccessDenied" | "Unauthorized" => unauthenticated("NoPermission"),
        "SessionExpired" => Error::SessionExpired {
            session_id: or_message(session),
        },
        "InvalidStateSetting" | "InvalidState" => Error::InvalidState {
            session_id: session,
            state: "unknown".into(),
            message: with_id(&message),
        },
        "ObjectAlreadyExists" | "AlreadyExists" | "TableAlreadyExists" => Error::AlreadyExists {
            kind: ObjectKind::Table,
            name: or_message(table),
        },
        "NotSupported" => Error::NotSupported { message },
        "TableModified" | "Conflict" => Error::Conflict { table, message },
        _ => Error::Service {
            status,
            code,
            message,
            request_id,
        },
    }
}

fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    let raw = body[start..end].trim();
    let raw = raw
        .strip_prefix("<![CDATA[")
        .and_then(|r| r.strip_suffix("]]>"))
        .unwrap_or(raw);
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Parses an error body: XML first (all of Code, Message, RequestId required, as PyODPS),
/// then JSON (Message required).
pub fn parse_body(body: &[u8]) -> Option<ErrorBody> {
    let text = String::from_utf8_lossy(body);
    if text.contains("<Error")
        && let (Some(code), Some(message), Some(request_id)) = (
            xml_tag(&text, "Code"),
            xml_tag(&text, "Message"),
            xml_tag(&text, "RequestId"),
        )
    {
        return Some(ErrorBody {
            code,
            message,
            request_id,
            host_id: xml_tag(&text, "HostId"),
            paiio: None,
        });
    }
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            action: None,
            table: Some("p.t".into()),
            session_id: Some("s1".into()),
            stream_id: None,
        }
    }

    #[test]
    fn xml_and_json_bodies() {
        let xml = b"<?xml version=\"1.0\"?><Error><Code>InvalidArgument</Code><Message>bad &amp; worse</Message>\
                    <RequestId>r1</RequestId><HostId>h</HostId></Error>";
        assert_eq!(
            parse_body(xml),
            Some(ErrorBody {
                code: "InvalidArgument".into(),
                message: "bad & worse".into(),
                request_id: "r1".into(),
                host_id: Some("h".into()),
                paiio: None,
            })
        );
        let json = br#"{"Code":"NoSuchSession","Message":"session not found","RequestId":null}"#;
        assert_eq!(parse_body(json).unwrap().code, "NoSuchSession");
        assert_eq!(parse_body(b"<html>oops</html>"), None);
        // An extension this version does not know is ignored, not a broken body.
        let newer = br#"{"Code":"NoSuchTable","Message":"m","Paiio":{"Error":"Teapot"}}"#;
        assert_eq!(parse_body(newer).unwrap().paiio, None);
    }

    /// Answers without paiio's fields (the real service's) map by their code alone.
    #[test]
    fn codes_map_to_variants() {
        let e = |status, body: &str| from_response(status, Some("rid"), body.as_bytes(), &ctx());
        assert!(matches!(
            e(404, r#"{"Code":"NoSuchTable","Message":"x"}"#),
            Error::NotFound { kind: ObjectKind::Table, ref name } if name == "p.t"
        ));
        assert!(matches!(
            e(404, r#"{"Code":"NoSuchSession","Message":"gone"}"#),
            Error::NotFound { kind: ObjectKind::Session, ref name } if name == "s1"
        ));
        let read = ErrorContext {
            action: Some(Action::TableRead),
            ..ctx()
        };
        assert!(matches!(
            from_response(
                404,
                None,
                br#"{"Code":"NoSuchSession","Message":"gone"}"#,
                &read
            ),
            Error::NotFound {
                kind: ObjectKind::ReadSession,
                ..
            }
        ));
        let stream = ErrorContext {
            stream_id: Some("w".into()),
            ..ctx()
        };
        assert!(matches!(
            from_response(404, None, br#"{"Code":"NoSuchStream","Message":"x"}"#, &stream),
            Error::NotFound { kind: ObjectKind::WriteStream, ref name } if name == "w of session s1"
        ));
        assert!(matches!(
            e(400, r#"{"Code":"InvalidArgument","Message":"out of range: split 9"}"#),
            Error::InvalidArgument { ref message, .. } if message == "out of range: split 9 (request id rid)"
        ));
        assert!(matches!(
            e(401, r#"{"Code":"SignatureNotMatch","Message":"x"}"#),
            Error::Unauthenticated { .. }
        ));
        assert!(
            matches!(e(400, r#"{"Code":"SessionExpired","Message":"session s9 expired"}"#),
            Error::SessionExpired { ref session_id } if session_id == "s1")
        );
        assert!(
            matches!(e(409, r#"{"Code":"InvalidStateSetting","Message":"no"}"#),
            Error::InvalidState { ref state, .. } if state == "unknown")
        );
        assert!(matches!(
            e(409, r#"{"Code":"ObjectAlreadyExists","Message":"x"}"#),
            Error::AlreadyExists { .. }
        ));
        assert!(matches!(
            e(400, r#"{"Code":"NotSupported","Message":"x"}"#),
            Error::NotSupported { .. }
        ));
        let s = e(
            503,
            r#"{"Code":"ServiceUnavailable","Message":"busy","RequestId":"body"}"#,
        );
        assert!(s.is_retryable());
        assert!(
            matches!(s, Error::Service { status: 503, ref request_id, .. } if request_id == "rid")
        );
        let s = from_response(502, None, b"<html>bad gateway</html>", &ctx());
        assert!(matches!(s, Error::Service { status: 502, .. }) && s.is_retryable());
        assert!(matches!(
            e(418, r#"{"Code":"Teapot","Message":"x"}"#),
            Error::Service { status: 418, .. }
        ));
    }

    #[test]
    fn the_server_mapping() {
        let status = |e: Error| to_wire(&e).0;
        assert_eq!(status(Error::not_found(ObjectKind::Table, "t")), 404);
        assert_eq!(status(Error::not_found(ObjectKind::Column, "c")), 400);
        assert_eq!(status(Error::not_found(ObjectKind::TableVersion, "v")), 404);
        let (s, body) = to_wire(&Error::Unwritable {
            root: "/wh".into(),
            condition: "read-only",
            action: "record read session abc".into(),
            path: "/wh/.paiio/read_sessions/abc.json".into(),
            source: std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
        });
        assert_eq!(s, 503);
        assert!(
            body.message
                .contains("the warehouse at /wh is read-only: cannot record read session abc"),
            "{}",
            body.message
        );
        assert_eq!(body.paiio, None);
        let (s, body) = to_wire(&Error::Service {
            status: 7,
            code: "X".into(),
            message: "m".into(),
            request_id: String::new(),
        });
        assert_eq!((s, body.code.as_str()), (502, "X"));
    }
}
