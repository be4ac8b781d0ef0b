//! Error answers of the Storage API (STORAGE_API.md §2.5) mapped onto [`Error`].
//!
//! The body is XML (`<Error><Code>..`) or JSON (`{"Code","Message","RequestId"}`); the
//! `x-odps-request-id` header wins over the body's request id. Codes map as follows:
//! `NoSuchTable` → `NotFound{table}`, `NoSuchSession` → `NotFound{session/stream}`,
//! `NoSuchPartition` → `NotFound{partition}`, `InvalidArgument` → `InvalidArgument`
//! (or, when the message is one this project's server renders, `OutOfRange` /
//! `TypeMismatch`), `SignatureNotMatch` / `AuthorizationRequired` /
//! `AuthenticationRequestExpired` / `NoPermission` → `Unauthenticated`, `SessionExpired`,
//! `InvalidStateSetting` → `InvalidState`, `ObjectAlreadyExists` → `AlreadyExists`,
//! `NotSupported`, `TableModified` → `Conflict`; 408, 429 and 5xx → `Service` (retryable);
//! anything else → `Service`.

use serde_json::Value;

use crate::error::Error;

/// What the request was about, to name it in errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorContext {
    pub table: Option<String>,
    pub session_id: Option<String>,
    pub stream_id: Option<String>,
}

/// The parsed parts of an error body.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ErrorBody {
    pub code: String,
    pub message: String,
    pub request_id: String,
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
pub(crate) fn parse_body(body: &[u8]) -> Option<ErrorBody> {
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
        });
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let message = s("Message")?;
    Some(ErrorBody {
        code: s("Code").unwrap_or_default(),
        message,
        request_id: s("RequestId").unwrap_or_default(),
    })
}

/// `{kind} not found: {name}` as this project's server renders `NotFound`.
fn parse_not_found(message: &str) -> Option<(&'static str, String)> {
    const KINDS: &[&str] = &[
        "write stream version",
        "write stream",
        "write session",
        "read session",
        "partition column",
        "partition",
        "column",
        "table",
        "session",
        "stream",
        "schema",
        "project",
    ];
    let (kind, name) = message.split_once(" not found: ")?;
    let kind = *KINDS.iter().find(|k| **k == kind)?;
    Some((kind, name.to_string()))
}

/// Maps an error answer onto [`Error`].
pub(crate) fn to_error(
    status: u16,
    header_request_id: Option<&str>,
    body: &[u8],
    ctx: &ErrorContext,
) -> Error {
    let parsed = parse_body(body);
    let request_id = header_request_id
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .or_else(|| parsed.as_ref().map(|p| p.request_id.clone()))
        .unwrap_or_default();
    let Some(ErrorBody { code, message, .. }) = parsed else {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)])
            .trim()
            .to_string();
        let code = match status {
            404 => "NoSuchObject",
            401 => "Unauthorized",
            _ => "",
        };
        return Error::Service {
            status,
            code: code.into(),
            message: text,
            request_id,
        };
    };
    let with_id = |m: &str| {
        if request_id.is_empty() {
            m.to_string()
        } else {
            format!("{m} (request id {request_id})")
        }
    };
    if matches!(status, 408 | 429 | 500..=599) {
        return Error::Service {
            status,
            code,
            message,
            request_id,
        };
    }
    let table = ctx.table.clone().unwrap_or_default();
    let session = ctx.session_id.clone().unwrap_or_default();
    match code.as_str() {
        "NoSuchTable" => Error::NotFound {
            kind: "table",
            name: parse_not_found(&message).map_or(table, |(_, n)| n),
        },
        "NoSuchPartition" => Error::NotFound {
            kind: "partition",
            name: parse_not_found(&message).map_or_else(|| with_id(&message), |(_, n)| n),
        },
        "NoSuchSession" | "NoSuchObject" | "NoSuchStream" => match parse_not_found(&message) {
            Some((kind, name)) => Error::NotFound { kind, name },
            None if code == "NoSuchObject" => Error::NotFound {
                kind: "object",
                name: with_id(&message),
            },
            None => match &ctx.stream_id {
                Some(stream) if message.contains("stream") => Error::NotFound {
                    kind: "stream",
                    name: format!("{stream} of session {session}"),
                },
                _ => Error::NotFound {
                    kind: "session",
                    name: if session.is_empty() {
                        with_id(&message)
                    } else {
                        session
                    },
                },
            },
        },
        "InvalidArgument" | "InvalidParameter" => {
            if let Some(rest) = message.strip_prefix("out of range: ") {
                return Error::OutOfRange {
                    message: rest.to_string(),
                };
            }
            if let Some(rest) = message.strip_prefix("type mismatch for column `")
                && let Some((column, detail)) = rest.split_once("`: ")
            {
                return Error::TypeMismatch {
                    column: column.to_string(),
                    message: detail.to_string(),
                };
            }
            if let Some(rest) = message.strip_prefix("invalid ")
                && let Some((what, detail)) = rest.split_once(": ")
            {
                return Error::InvalidArgument {
                    what: what.to_string(),
                    message: detail.to_string(),
                };
            }
            if let Some((kind, name)) = parse_not_found(&message) {
                // Unknown columns are answered 400 InvalidArgument.
                return Error::NotFound { kind, name };
            }
            Error::InvalidArgument {
                what: "request".into(),
                message: with_id(&message),
            }
        }
        "SignatureNotMatch" => Error::Unauthenticated {
            code: crate::auth::SIGNATURE_NOT_MATCH,
            message: with_id(&message),
        },
        "AuthorizationRequired" => Error::Unauthenticated {
            code: crate::auth::AUTHORIZATION_REQUIRED,
            message: with_id(&message),
        },
        "AuthenticationRequestExpired" => Error::Unauthenticated {
            code: crate::auth::AUTHENTICATION_REQUEST_EXPIRED,
            message: with_id(&message),
        },
        "NoPermission" | "AccessDenied" | "Unauthorized" => Error::Unauthenticated {
            code: "NoPermission",
            message: with_id(&message),
        },
        "SessionExpired" => Error::SessionExpired {
            session_id: message
                .strip_prefix("session ")
                .and_then(|m| m.strip_suffix(" expired"))
                .map_or(session, str::to_string),
        },
        "InvalidStateSetting" | "InvalidState" => {
            // `session {id} is {state}: {message}`
            if let Some(rest) = message.strip_prefix("session ")
                && let Some((id, rest)) = rest.split_once(" is ")
                && let Some((state, detail)) = rest.split_once(": ")
            {
                return Error::InvalidState {
                    session_id: id.to_string(),
                    state: state.to_string(),
                    message: detail.to_string(),
                };
            }
            Error::InvalidState {
                session_id: session,
                state: "unknown".into(),
                message: with_id(&message),
            }
        }
        "ObjectAlreadyExists" | "AlreadyExists" | "TableAlreadyExists" => {
            let name = message.split_once(" already exists: ").map_or_else(
                || {
                    if table.is_empty() {
                        with_id(&message)
                    } else {
                        table.clone()
                    }
                },
                |(_, n)| n.to_string(),
            );
            Error::AlreadyExists {
                kind: "table",
                name,
            }
        }
        "NotSupported" => Error::NotSupported {
            message: message
                .strip_prefix("not supported: ")
                .unwrap_or(&message)
                .to_string(),
        },
        "TableModified" | "Conflict" => Error::Conflict {
            table,
            message: message
                .split_once(": ")
                .map_or(message.as_str(), |(_, m)| m)
                .to_string(),
        },
        _ => Error::Service {
            status,
            code,
            message,
            request_id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
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
                request_id: "r1".into()
            })
        );
        let json = br#"{"Code":"NoSuchSession","Message":"session not found"}"#;
        assert_eq!(parse_body(json).unwrap().code, "NoSuchSession");
        assert_eq!(parse_body(b"<html>oops</html>"), None);
    }

    #[test]
    fn codes_map_to_variants() {
        let e = |status, body: &str| to_error(status, Some("rid"), body.as_bytes(), &ctx());
        assert!(matches!(
            e(404, r#"{"Code":"NoSuchTable","Message":"x"}"#),
            Error::NotFound { kind: "table", .. }
        ));
        assert!(matches!(
            e(
                404,
                r#"{"Code":"NoSuchSession","Message":"write stream not found: a"}"#
            ),
            Error::NotFound {
                kind: "write stream",
                ..
            }
        ));
        assert!(matches!(
            e(404, r#"{"Code":"NoSuchSession","Message":"gone"}"#),
            Error::NotFound { kind: "session", ref name } if name == "s1"
        ));
        assert!(matches!(
            e(
                400,
                r#"{"Code":"InvalidArgument","Message":"out of range: split 9"}"#
            ),
            Error::OutOfRange { .. }
        ));
        assert!(matches!(
            e(400, r#"{"Code":"InvalidArgument","Message":"type mismatch for column `a`: int"}"#),
            Error::TypeMismatch { ref column, .. } if column == "a"
        ));
        assert!(matches!(
            e(401, r#"{"Code":"SignatureNotMatch","Message":"x"}"#),
            Error::Unauthenticated { .. }
        ));
        assert!(
            matches!(e(400, r#"{"Code":"SessionExpired","Message":"session s9 expired"}"#),
            Error::SessionExpired { ref session_id } if session_id == "s9")
        );
        assert!(
            matches!(e(409, r#"{"Code":"InvalidStateSetting","Message":"session s is COMMITTED: no"}"#),
            Error::InvalidState { ref state, .. } if state == "COMMITTED")
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
        let s = to_error(502, None, b"<html>bad gateway</html>", &ctx());
        assert!(matches!(s, Error::Service { status: 502, .. }) && s.is_retryable());
        assert!(matches!(
            e(418, r#"{"Code":"Teapot","Message":"x"}"#),
            Error::Service { status: 418, .. }
        ));
    }
}
