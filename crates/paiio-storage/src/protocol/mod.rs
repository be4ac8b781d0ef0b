//! The wire format of the MaxCompute services paiio speaks, shared by the client
//! ([`crate::rest::RestClient`], behind the `rest` feature) and by `paiio-server`: what goes
//! over the wire is defined once, here, and both sides convert it to and from the
//! [`crate::service`] types.
//!
//! * [`storage`]: the Storage API (V2 actions, V1 paths): one serde type per JSON request
//!   and answer, the [`Action`](storage::Action) names, the read-schema and write-schema
//!   JSON, the block / attempt stream ids;
//! * [`codec`]: body encodings (`Content-Encoding` / `Accept-Encoding`), the Arrow IPC
//!   stream encoder and decoder, CRC-32C blocking;
//! * [`error`]: error answers (`{"Code","Message","RequestId"}` plus paiio's structured
//!   extension) to and from [`crate::Error`];
//! * [`headers`]: header names;
//! * [`lenient`]: serde helpers for fields clients send as a number, a string or null.
//!
//! * [`tunnel`]: the MaxCompute Tunnel's wire codecs (the protobuf record stream, the
//!   chunked Arrow stream, session JSON, body compression), beside [`storage`].

pub mod codec;
pub mod error;
pub mod headers;
pub mod lenient;
pub mod storage;
#[cfg(test)]
mod tests;
pub mod tunnel;

use serde::de::DeserializeOwned;

/// Parses a JSON document into `T`. An error names the field that was wrong
/// (`SplitOptions.SplitNumber: ...`) and where.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Converts a parsed JSON value into `T`, naming the field that was wrong.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Like [`from_json`], but an empty (or all-whitespace) document is `T::default()`.
pub fn from_json_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    from_json(bytes)
}
