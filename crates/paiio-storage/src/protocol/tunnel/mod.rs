//! The MaxCompute **Tunnel** wire codecs: what PyODPS's `t.open_reader()`, `o.read_table`
//! and `t.open_writer()` send and receive (see `shared/protocol/TUNNEL.md` §1.4–1.6), as a
//! pure library with no HTTP, shared by the Tunnel client and by `paiio serve`.
//!
//! - [`record`]: the protobuf record stream (`GET ?data`, `PUT ?blockid=`): an encoder from
//!   Arrow [`RecordBatch`](arrow_array::RecordBatch)es and an incremental decoder that checks
//!   every record's CRC-32C, the record count and the crc of crcs, and always requires the
//!   footer.
//! - [`arrow_stream`]: the chunked Arrow stream (`?arrow`): the `u32 chunk_size` framing with
//!   a CRC-32C per chunk and a global one at the end, the wire Arrow schema built from the
//!   table schema (the server sends record batch messages only), an encoder and an
//!   incremental decoder.
//! - [`session`]: the download and upload session JSON, and the Tunnel schema JSON.
//! - [`encoding`]: the whole-body compressions a `Content-Encoding` names.
//!
//! The released PyODPS 0.13.2 is the reference for every detail; where it is lax (a stream
//! without its footer, a body that ends after a full chunk) these codecs are strict, and
//! say so in their docs. Every decoder takes bytes from the network: it never panics, never
//! allocates more than the bytes it was given (plus the rows it decoded) and never recurses
//! deeper than the column types, which are at most [`MAX_TYPE_DEPTH`](crate::types::MAX_TYPE_DEPTH)
//! levels deep.

pub mod arrow_stream;
pub mod encoding;
pub mod record;
pub mod session;

use crate::error::Error;

/// What a Tunnel body was refused for. Converts into the crate's [`Error`]: a truncation
/// into a retryable [`Error::Transient`] (re-request the rest), a checksum mismatch or
/// malformed bytes into [`Error::Corrupt`], a value that does not fit its column into
/// [`Error::TypeMismatch`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The body ended before its footer (or inside a value, chunk or message): the bytes so
    /// far are sound, the rest can be re-requested.
    #[error("the Tunnel {stream} is truncated: {message}")]
    Truncated {
        /// `record stream`, `Arrow stream`.
        stream: &'static str,
        message: String,
    },
    /// A CRC-32C, the record count or the crc of crcs does not match.
    #[error("checksum mismatch in the Tunnel {stream}: {message}")]
    Checksum {
        stream: &'static str,
        message: String,
    },
    /// Bytes that are not a valid stream: a bad tag, an oversized length, an overlong
    /// varint, data after the footer, an Arrow message that does not fit the schema.
    #[error("malformed Tunnel {stream}: {message}")]
    Malformed {
        stream: &'static str,
        message: String,
    },
    /// A value (or an Arrow type) that does not fit its column.
    #[error("column `{column}`: {message}")]
    Value { column: String, message: String },
    /// A compressed body that cannot be decompressed, or a codec that is not known.
    #[error("Tunnel body encoding {encoding}: {message}")]
    Encoding { encoding: String, message: String },
    /// Arrow refused to build or encode something.
    #[error("arrow error in {context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
}

impl WireError {
    /// Whether the body was cut short (re-requesting the rest may succeed).
    pub fn is_truncation(&self) -> bool {
        matches!(self, WireError::Truncated { .. })
    }

    pub(crate) fn value(column: impl Into<String>, message: impl Into<String>) -> Self {
        WireError::Value {
            column: column.into(),
            message: message.into(),
        }
    }

    pub(crate) fn arrow(context: impl Into<String>, source: arrow_schema::ArrowError) -> Self {
        WireError::Arrow {
            context: context.into(),
            source,
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated { .. } => Error::Transient {
                message: e.to_string(),
                retryable: true,
                source: Some(Box::new(e)),
            },
            WireError::Checksum { stream, .. } | WireError::Malformed { stream, .. } => {
                Error::Corrupt {
                    location: format!("the Tunnel {stream}"),
                    message: e.to_string(),
                }
            }
            WireError::Value { column, message } => Error::TypeMismatch { column, message },
            WireError::Encoding { encoding, message } => Error::InvalidArgument {
                what: format!("Tunnel body encoding {encoding}"),
                message,
            },
            WireError::Arrow { context, source } => Error::Arrow { context, source },
        }
    }
}

/// A running CRC-32C with the update rules of PyODPS's `Checksum`: integers and floats as
/// their little-endian bytes, booleans as one byte, byte strings as they are. `value()` is
/// the CRC-32C of everything fed since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Crc(u32);

impl Crc {
    pub fn bytes(&mut self, data: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, data);
    }
    pub fn int(&mut self, v: i32) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn long(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn boolean(&mut self, v: bool) {
        self.bytes(&[u8::from(v)]);
    }
    pub fn value(&self) -> u32 {
        self.0
    }
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

#[cfg(test)]
mod crc_tests {
    use super::*;

    #[test]
    fn crc_is_crc32c_of_the_concatenation() {
        let mut crc = Crc::default();
        crc.bytes(b"1234");
        crc.bytes(b"56789");
        assert_eq!(crc.value(), 0xE306_9283, "CRC-32C check value of 123456789");
        crc.reset();
        crc.int(1);
        crc.long(-2);
        crc.boolean(true);
        let mut whole = Vec::new();
        whole.extend(1i32.to_le_bytes());
        whole.extend((-2i64).to_le_bytes());
        whole.push(1);
        assert_eq!(crc.value(), crc32c::crc32c(&whole));
    }

    #[test]
    fn errors_convert_to_crate_errors() {
        let truncated: Error = WireError::Truncated {
            stream: "record stream",
            message: "no footer".into(),
        }
        .into();
        assert!(truncated.is_retryable(), "{truncated}");
        let corrupt: Error = WireError::Checksum {
            stream: "record stream",
            message: "record 3".into(),
        }
        .into();
        assert!(
            matches!(corrupt, Error::Corrupt { .. }) && !corrupt.is_retryable(),
            "{corrupt:?}"
        );
        let value: Error = WireError::value("c", "too big").into();
        assert!(matches!(value, Error::TypeMismatch { .. }), "{value:?}");
    }
}
