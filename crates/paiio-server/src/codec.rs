//! Whole-body codecs and checksums of the V2 write and blob calls (STORAGE_API.md §7.2–7.4):
//! request `Content-Encoding` decoding (bounded), response compression, the zlib CRC-32 of
//! blob upload frames and the CRC-32C blocking of BlobRead responses.

use std::io::{Read, Write};

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use paiio_storage::ipc_guard;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ApiResult};
use crate::stream::Compression;
use crate::{AppState, Limits};

/// The codec a request body was sent with, from its `Content-Encoding` header. Missing or
/// `identity` is none; `zstd` and the LZ4-frame names are decoded; anything else is a 400.
pub(crate) fn request_encoding(headers: &HeaderMap) -> ApiResult<Compression> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Compression::None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::invalid("Content-Encoding is not text"))?;
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Compression::None),
        "zstd" => Ok(Compression::Zstd),
        "x-lz4-frame" | "lz4" | "lz4-frame" | "lz4_frame" | "x-odps-lz4-frame" => {
            Ok(Compression::Lz4Frame)
        }
        other => Err(ApiError::invalid(format!(
            "Content-Encoding {other:?} is not supported (use zstd or x-lz4-frame, or none)"
        ))),
    }
}

/// Decodes a request body, failing with 413 when the decoded bytes pass `limit`. The output
/// grows by doubling but never past `limit + 1` bytes of capacity.
pub(crate) fn decode(
    codec: Compression,
    body: Bytes,
    limit: usize,
    what: &str,
) -> ApiResult<Bytes> {
    fn bounded(mut r: impl Read, limit: usize, what: &str, name: &str) -> ApiResult<Bytes> {
        let cap = limit.saturating_add(1);
        let mut out: Vec<u8> = Vec::new();
        loop {
            if out.len() == out.capacity() {
                if out.len() >= cap {
                    return Err(ApiError::too_large(
                        &format!("the decompressed {what}"),
                        limit,
                    ));
                }
                let grow = out.len().max(64 << 10).min(cap - out.len());
                out.reserve_exact(grow);
            }
            let len = out.len();
            let spare = out.capacity() - len;
            out.resize(len + spare, 0);
            match r.read(&mut out[len..]) {
                Ok(0) => {
                    out.truncate(len);
                    break;
                }
                Ok(n) => out.truncate(len + n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(len),
                Err(e) => {
                    return Err(ApiError::invalid(format!(
                        "the {what} is not valid {name} data: {e}"
                    )));
                }
            }
        }
        if out.len() > limit {
            return Err(ApiError::too_large(
                &format!("the decompressed {what}"),
                limit,
            ));
        }
        Ok(Bytes::from(out))
    }
    match codec {
        Compression::None => Ok(body),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| {
                ApiError::invalid(format!("cannot start zstd decoding of the {what}: {e}"))
            })?;
            bounded(decoder, limit, what, "zstd")
        }
        Compression::Lz4Frame => bounded(
            lz4_flex::frame::FrameDecoder::new(&body[..]),
            limit,
            what,
            "LZ4 frame",
        ),
    }
}

/// Decodes a request body into pieces of at most 1 MiB, failing with 413 once the decoded
/// bytes pass `limit`. The pieces are never joined (that would double the memory): readers
/// take them through [`PiecesReader`].
fn decode_pieces(
    codec: Compression,
    body: Bytes,
    limit: usize,
    what: &str,
) -> ApiResult<Vec<Bytes>> {
    fn pieces(mut r: impl Read, limit: usize, what: &str, name: &str) -> ApiResult<Vec<Bytes>> {
        let mut out = Vec::new();
        let mut total = 0usize;
        loop {
            let room = limit.saturating_add(1) - total;
            if room == 0 {
                return Err(ApiError::too_large(
                    &format!("the decompressed {what}"),
                    limit,
                ));
            }
            let mut piece = vec![0u8; room.min(1 << 20)];
            let mut filled = 0;
            while filled < piece.len() {
                match r.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(ApiError::invalid(format!(
                            "the {what} is not valid {name} data: {e}"
                        )));
                    }
                }
            }
            let end = filled < piece.len();
            piece.truncate(filled);
            total += filled;
            if filled > 0 {
                out.push(Bytes::from(piece));
            }
            if end {
                break;
            }
        }
        if total > limit {
            return Err(ApiError::too_large(
                &format!("the decompressed {what}"),
                limit,
            ));
        }
        Ok(out)
    }
    match codec {
        Compression::None => Ok(vec![body]),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| {
                ApiError::invalid(format!("cannot start zstd decoding of the {what}: {e}"))
            })?;
            pieces(decoder, limit, what, "zstd")
        }
        Compression::Lz4Frame => pieces(
            lz4_flex::frame::FrameDecoder::new(&body[..]),
            limit,
            what,
            "LZ4 frame",
        ),
    }
}

/// Reads a body kept in pieces.
struct PiecesReader(std::collections::VecDeque<Bytes>);

impl Read for PiecesReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(front) = self.0.front_mut() {
            if front.is_empty() {
                self.0.pop_front();
                continue;
            }
            let n = front.len().min(buf.len());
            buf[..n].copy_from_slice(&front[..n]);
            let _ = front.split_to(n);
            return Ok(n);
        }
        Ok(0)
    }
}

/// Decoded upload bytes in flight, server-wide (`Limits::max_decoding_in_flight`), counted
/// in KiB permits.
#[derive(Debug)]
pub(crate) struct DecodeBudget {
    semaphore: Arc<Semaphore>,
    total_kib: usize,
}

/// Budget held by one upload until its rows are written; released on drop.
#[derive(Debug, Default)]
pub(crate) struct UploadPermit(Vec<OwnedSemaphorePermit>);

impl DecodeBudget {
    pub fn new(limits: &Limits) -> Self {
        let per = limits.max_decoded_upload.div_ceil(1024);
        let total_kib = limits
            .max_decoding_in_flight
            .div_ceil(1024)
            .max(per)
            .clamp(1, u32::MAX as usize);
        DecodeBudget {
            semaphore: Arc::new(Semaphore::new(total_kib.min(Semaphore::MAX_PERMITS))),
            total_kib,
        }
    }

    /// Waits until `bytes` more (at most the whole budget) may be held.
    async fn reserve(&self, bytes: usize) -> ApiResult<OwnedSemaphorePermit> {
        let kib = bytes.div_ceil(1024).min(self.total_kib) as u32;
        self.semaphore
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    e.to_string(),
                )
            })
    }
}

/// Reads, decompresses, checks and decodes a row upload (a TableWrite body or a V1 block):
/// one Arrow IPC stream, bounded on the wire by `max_upload_body`, decompressed by at most
/// `max_decoded_upload`, its Arrow buffer compression checked by [`ipc_guard`] before
/// arrow-ipc decodes anything, and its memory counted against the server-wide budget. An
/// empty body is no batches when `empty_ok`, else a 400.
pub(crate) async fn decode_upload(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
    what: &'static str,
    empty_ok: bool,
) -> ApiResult<(Vec<arrow_array::RecordBatch>, UploadPermit)> {
    let codec = request_encoding(headers)?;
    let limits = state.limits;
    let raw = crate::v2::read_body(body, limits.max_upload_body, "row upload").await?;
    let cap = limits.max_decoded_upload;
    let mut permit = UploadPermit::default();
    let pieces = if codec == Compression::None {
        vec![raw]
    } else {
        // The decompressed size is unknown until it is done: hold the cap meanwhile.
        let mut held = state.decode_budget.reserve(cap).await?;
        let pieces = blocking(move || decode_pieces(codec, raw, cap, "row upload")).await?;
        let len: usize = pieces.iter().map(Bytes::len).sum();
        if let Some(kept) = held.split(len.div_ceil(1024)) {
            permit.0.push(kept);
        }
        drop(held);
        pieces
    };
    let len: usize = pieces.iter().map(Bytes::len).sum();
    if len == 0 {
        if empty_ok {
            return Ok((Vec::new(), permit));
        }
        return Err(ApiError::invalid(format!(
            "the {what} is empty: expected one Arrow IPC stream"
        )));
    }
    // Uncompressed buffers cannot exceed the body, so the cap bounds what decompression adds.
    let guard_limits =
        ipc_guard::IpcLimits::total(cap.max(len) as u64, limits.max_upload_rows as u64);
    let checked = pieces.clone();
    let declared = blocking(move || {
        let refused = |e: ipc_guard::IpcGuardError| {
            ApiError::invalid(format!("refusing the Arrow IPC stream of the {e}"))
        };
        let mut guard = ipc_guard::IpcStreamGuard::new(what, guard_limits);
        for piece in &checked {
            guard.feed(piece).map_err(refused)?;
        }
        guard.finish().map_err(refused)?;
        Ok(guard.declared_bytes())
    })
    .await?;
    permit
        .0
        .push(state.decode_budget.reserve(declared as usize).await?);
    let batches = blocking(move || decode_ipc_stream(pieces, what)).await?;
    Ok((batches, permit))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
    })?
}

/// Compresses a whole payload as one zstd or LZ4 frame stream.
#[cfg(test)]
pub(crate) fn encode(codec: Compression, data: &[u8]) -> ApiResult<Vec<u8>> {
    let internal = |e: std::io::Error| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
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
    crc32_ieee_update(0, data)
}

/// Continues a zlib CRC-32 over more data (`crc` is the CRC of what came before; 0 to start).
pub(crate) fn crc32_ieee_update(crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !crc;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The block size of the CRC-32C layer of BlobRead responses.
pub(crate) const CRC_BLOCK: usize = 4096;

/// Cuts `data` into 4096-byte blocks, each followed by its CRC-32C, little-endian (§7.4).
/// An empty payload is zero bytes.
#[cfg(test)]
pub(crate) fn crc32c_blocked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len().div_ceil(CRC_BLOCK) * 4);
    for block in data.chunks(CRC_BLOCK) {
        out.extend_from_slice(block);
        out.extend_from_slice(&crc32c::crc32c(block).to_le_bytes());
    }
    out
}

/// A writer that cuts what it is given into [`CRC_BLOCK`]-byte blocks, each followed by its
/// CRC-32C (as [`crc32c_blocked`]), and hands them on in chunks of about 64 KiB through a
/// bounded channel, so a large answer is never held whole. Fails with `BrokenPipe` once the
/// receiver is gone.
pub(crate) struct CrcBlockWriter {
    block: Vec<u8>,
    out: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
}

impl CrcBlockWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) -> Self {
        CrcBlockWriter {
            block: Vec::with_capacity(CRC_BLOCK),
            out: Vec::new(),
            tx,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.out));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    fn seal(&mut self) {
        self.out.extend_from_slice(&self.block);
        self.out
            .extend_from_slice(&crc32c::crc32c(&self.block).to_le_bytes());
        self.block.clear();
    }

    /// Seals the last (short) block and sends what is left.
    pub fn finish(mut self) -> std::io::Result<()> {
        if !self.block.is_empty() {
            self.seal();
        }
        self.send()
    }
}

impl Write for CrcBlockWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CRC_BLOCK - self.block.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == CRC_BLOCK {
            self.seal();
            if self.out.len() >= 64 << 10 {
                self.send()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes one Arrow IPC stream (buffer compression included), kept in pieces, into its
/// batches.
///
/// The body comes from the network and has passed [`ipc_guard`]: a malformed stream is a 400
/// naming the message that failed. A decoder panic on hostile bytes the guard let through is
/// caught without the panic hook's report, logged as one line and answered the same way.
pub(crate) fn decode_ipc_stream(
    pieces: Vec<Bytes>,
    what: &str,
) -> ApiResult<Vec<arrow_array::RecordBatch>> {
    let decode = || -> ApiResult<Vec<arrow_array::RecordBatch>> {
        let reader = arrow_ipc::reader::StreamReader::try_new(PiecesReader(pieces.into()), None)
            .map_err(|e| {
                ApiError::invalid(format!(
                    "malformed Arrow IPC stream in the {what} (schema message): {e}"
                ))
            })?;
        let mut batches = Vec::new();
        for (i, batch) in reader.enumerate() {
            batches.push(batch.map_err(|e| {
                ApiError::invalid(format!(
                    "malformed Arrow IPC stream in the {what} (batch {i}): {e}"
                ))
            })?);
        }
        Ok(batches)
    };
    match ipc_guard::catch_quietly(decode) {
        Ok(result) => result,
        Err(panic) => {
            tracing::warn!(
                "refused a malformed Arrow IPC stream in the {what}: the decoder failed: {panic}"
            );
            Err(ApiError::invalid(format!(
                "malformed Arrow IPC stream in the {what}: it could not be decoded"
            )))
        }
    }
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
        assert_eq!(
            &out[CRC_BLOCK..CRC_BLOCK + 4],
            &crc32c::crc32c(&data[..CRC_BLOCK]).to_le_bytes()
        );
        // The streaming writer cuts the same blocks, however the data is split.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
        let mut w = CrcBlockWriter::new(tx);
        for piece in data.chunks(999) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        let mut streamed = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            streamed.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(streamed, crc32c_blocked(&data));
        assert_eq!(
            crc32_ieee_update(crc32_ieee(&data[..10]), &data[10..]),
            crc32_ieee(&data)
        );
    }

    #[test]
    fn decode_is_bounded_and_round_trips() {
        let data = vec![1u8; 10_000];
        for c in [Compression::None, Compression::Zstd, Compression::Lz4Frame] {
            let enc = Bytes::from(encode(c, &data).unwrap());
            assert_eq!(
                decode(c, enc.clone(), 10_000, "body").unwrap(),
                Bytes::from(data.clone())
            );
            if c != Compression::None {
                assert_eq!(decode(c, enc, 9_999, "body").unwrap_err().status, 413);
            }
        }
        assert_eq!(
            decode(Compression::Zstd, Bytes::from_static(b"nope"), 100, "body")
                .unwrap_err()
                .status,
            400
        );
    }
}
