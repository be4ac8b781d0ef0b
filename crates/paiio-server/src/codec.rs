//! Whole-body codecs and checksums of the V2 write and blob calls (STORAGE_API.md §7.2–7.4):
//! request `Content-Encoding` decoding (bounded), response compression, the zlib CRC-32 of
//! blob upload frames and the CRC-32C blocking of BlobRead responses.

use std::io::{Read, Write};

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

use crate::error::{ApiError, ApiResult};
use crate::stream::Compression;

/// The codec a request body was sent with, from its `Content-Encoding` header. Missing or
/// `identity` is none; `zstd` and the LZ4-frame names are decoded; anything else is a 400.
pub(crate) fn request_encoding(headers: &HeaderMap) -> ApiResult<Compression> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else { return Ok(Compression::None) };
    let v = v.to_str().map_err(|_| ApiError::invalid("Content-Encoding is not text"))?;
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Compression::None),
        "zstd" => Ok(Compression::Zstd),
        "x-lz4-frame" | "lz4" | "lz4-frame" | "lz4_frame" | "x-odps-lz4-frame" => Ok(Compression::Lz4Frame),
        other => Err(ApiError::invalid(format!(
            "Content-Encoding {other:?} is not supported (use zstd or x-lz4-frame, or none)"
        ))),
    }
}

/// Decodes a request body, failing with 413 when the decoded bytes pass `limit`.
pub(crate) fn decode(codec: Compression, body: Bytes, limit: usize, what: &str) -> ApiResult<Bytes> {
    fn bounded(mut r: impl Read, limit: usize, what: &str, name: &str) -> ApiResult<Bytes> {
        let mut out = Vec::new();
        (&mut r)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| ApiError::invalid(format!("the {what} is not valid {name} data: {e}")))?;
        if out.len() > limit {
            return Err(ApiError::too_large(&format!("the decompressed {what}"), limit));
        }
        Ok(Bytes::from(out))
    }
    match codec {
        Compression::None => Ok(body),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| ApiError::invalid(format!("cannot start zstd decoding of the {what}: {e}")))?;
            bounded(decoder, limit, what, "zstd")
        }
        Compression::Lz4Frame => bounded(lz4_flex::frame::FrameDecoder::new(&body[..]), limit, what, "LZ4 frame"),
    }
}

/// Compresses a whole payload as one zstd or LZ4 frame stream.
pub(crate) fn encode(codec: Compression, data: &[u8]) -> ApiResult<Vec<u8>> {
    let internal = |e: std::io::Error| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", e.to_string())
    };
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd => zstd::stream::encode_all(data, 1).map_err(internal),
        Compression::Lz4Frame => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(data).map_err(internal)?;
            enc.finish().map_err(|e| internal(std::io::Error::other(e)))
        }
    }
}

/// zlib CRC-32 (IEEE, reflected 0xEDB88320), as blob upload frame footers carry it.
pub(crate) fn crc32_ieee(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *slot = c;
        }
        t
    });
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc ^ 0xFFFF_FFFF
}

/// The block size of the CRC-32C layer of BlobRead responses.
pub(crate) const CRC_BLOCK: usize = 4096;

/// Cuts `data` into 4096-byte blocks, each followed by its CRC-32C, little-endian (§7.4).
/// An empty payload is zero bytes.
pub(crate) fn crc32c_blocked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len().div_ceil(CRC_BLOCK) * 4);
    for block in data.chunks(CRC_BLOCK) {
        out.extend_from_slice(block);
        out.extend_from_slice(&crc32c::crc32c(block).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_their_check_values() {
        assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_ieee(b"abc"), 891_568_578);
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn blocking_appends_a_crc_per_block() {
        assert!(crc32c_blocked(&[]).is_empty());
        let data = vec![7u8; CRC_BLOCK + 10];
        let out = crc32c_blocked(&data);
        assert_eq!(out.len(), CRC_BLOCK + 4 + 10 + 4);
        assert_eq!(&out[CRC_BLOCK..CRC_BLOCK + 4], &crc32c::crc32c(&data[..CRC_BLOCK]).to_le_bytes());
    }

    #[test]
    fn decode_is_bounded_and_round_trips() {
        let data = vec![1u8; 10_000];
        for c in [Compression::None, Compression::Zstd, Compression::Lz4Frame] {
            let enc = Bytes::from(encode(c, &data).unwrap());
            assert_eq!(decode(c, enc.clone(), 10_000, "body").unwrap(), Bytes::from(data.clone()));
            if c != Compression::None {
                assert_eq!(decode(c, enc, 9_999, "body").unwrap_err().status, 413);
            }
        }
        assert_eq!(decode(Compression::Zstd, Bytes::from_static(b"nope"), 100, "body").unwrap_err().status, 400);
    }
}

/// Decodes one Arrow IPC stream (buffer compression included) into its batches.
///
/// The body comes from the network: a malformed stream is a 400 naming the message that failed,
/// and a decoder panic on hostile bytes is caught and answered the same way, never propagated.
pub(crate) fn decode_ipc_stream(bytes: Bytes, what: &str) -> ApiResult<Vec<arrow_array::RecordBatch>> {
    let decode = || -> ApiResult<Vec<arrow_array::RecordBatch>> {
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| ApiError::invalid(format!("malformed Arrow IPC stream in the {what} (schema message): {e}")))?;
        let mut batches = Vec::new();
        for (i, batch) in reader.enumerate() {
            batches.push(batch.map_err(|e| {
                ApiError::invalid(format!("malformed Arrow IPC stream in the {what} (batch {i}): {e}"))
            })?);
        }
        Ok(batches)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(result) => result,
        Err(_) => Err(ApiError::invalid(format!("malformed Arrow IPC stream in the {what}: it could not be decoded"))),
    }
}
