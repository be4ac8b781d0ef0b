//! Row uploads (a TableWrite body, a V1 block): read bounded, decoded per their
//! `Content-Encoding` (bounded), checked by [`ipc_guard`] and decoded as one Arrow IPC
//! stream, with their memory counted against a server-wide budget.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use paiio_storage::ipc_guard;
use paiio_storage::protocol::codec::{BodyEncoding, decode_ipc_pieces};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ApiResult};
use crate::request::{blocking, read_body};
use crate::{AppState, Limits};

/// The encoding a request body was sent with, from its `Content-Encoding` header: missing or
/// `identity` is none, `zstd` and the LZ4-frame names are decoded, anything else is a 400.
pub(crate) fn request_encoding(headers: &HeaderMap) -> ApiResult<BodyEncoding> {
    let value = match headers.get(header::CONTENT_ENCODING) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Content-Encoding is not text"))?,
        ),
    };
    BodyEncoding::from_header(value).map_err(|e| ApiError::invalid(e.to_string()))
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
    pub(crate) async fn reserve(&self, bytes: usize) -> ApiResult<OwnedSemaphorePermit> {
        let kib = bytes.div_ceil(1024).min(self.total_kib) as u32;
        self.semaphore
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(ApiError::internal)
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
    let raw = read_body(body, limits.max_upload_body, "row upload").await?;
    let cap = limits.max_decoded_upload;
    let mut permit = UploadPermit::default();
    let pieces = if codec == BodyEncoding::Identity {
        vec![raw]
    } else {
        // The decompressed size is unknown until it is done: hold the cap meanwhile.
        let mut held = state.decode_budget.reserve(cap).await?;
        let pieces = blocking(move || Ok(codec.decode_pieces(raw, cap, "row upload")?)).await?;
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
    let batches =
        blocking(move || decode_ipc_pieces(pieces, what).map_err(ApiError::invalid)).await?;
    Ok((batches, permit))
}
