//! V2 blob actions: `TableWriteBlob` and `BlobRead` (docs/storage-api.md §6.13, §8.10).

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use paiio_storage::protocol::codec::{BodyEncoding, Compressor, CrcBlockWriter};
use paiio_storage::protocol::storage::{BlobReadRequest, WriteBlobResponse};

use crate::AppState;
use crate::blobs::{self, BlobMeta};
use crate::error::{ApiError, ApiResult};
use crate::request::{Params, blocking, json_body, json_response, param, read_body, target};
use crate::stream::{accepted_encoding, octet_stream};
use crate::upload::request_encoding;

fn blob_dir(state: &AppState) -> ApiResult<std::path::PathBuf> {
    state.blob_dir.clone().ok_or_else(|| {
        ApiError::not_supported("blobs are not enabled on this server (no blob directory)")
    })
}

pub(super) async fn write_blob(
    state: &AppState,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let table = target(params)?;
    let dir = blob_dir(state)?;
    let session_id = param(params, "SessionId")?.to_string();
    // The session must exist (404 otherwise).
    state.service.get_write_session(&table, &session_id).await?;
    let encoding = request_encoding(headers)?;
    let limit = state.limits.max_upload_body;
    let raw = read_body(body, limit, "blob upload").await?;
    let batch = params
        .get("Mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("batch"));
    let table_name = table.to_string();
    if batch {
        let answer = blocking(move || {
            let bytes = encoding.decode(raw, limit, "blob upload")?;
            let frames = blobs::parse_frames(&bytes)?;
            let mut refs = Vec::with_capacity(frames.len());
            let mut size = 0u64;
            for f in &frames {
                let mut meta = f.meta()?;
                meta.table = table_name.clone();
                meta.session_id = session_id.clone();
                size += meta.size;
                let id = blobs::store(&dir, &f.data, &meta)?;
                refs.push(blobs::reference_b64(&id));
            }
            Ok(WriteBlobResponse {
                blob_references: Some(refs),
                size: Some(size),
                warning_message: Some(None),
                ..Default::default()
            })
        })
        .await?;
        return Ok(json_response(&answer));
    }
    let column_index = match params
        .get("ColumnIndex")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| ApiError::invalid(format!("ColumnIndex={v:?} is not an integer")))?,
        ),
    };
    let partition_values: Vec<String> = params
        .get("PartitionValues")
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let content_type = params.get("ContentType").cloned();
    let custom_file_name = params.get("CustomFileName").cloned();
    let answer = blocking(move || {
        let data = encoding.decode(raw, limit, "blob upload")?;
        let mut meta = BlobMeta::new(&data);
        meta.column_index = column_index;
        meta.partition_values = partition_values;
        meta.content_type = content_type;
        meta.custom_file_name = custom_file_name;
        meta.table = table_name;
        meta.session_id = session_id;
        let id = blobs::store(&dir, &data, &meta)?;
        Ok(WriteBlobResponse {
            blob_reference: Some(blobs::reference_b64(&id)),
            size: Some(meta.size),
            md5_value: Some(meta.md5.clone()),
            warning_message: Some(None),
            ..Default::default()
        })
    })
    .await?;
    Ok(json_response(&answer))
}

pub(super) async fn blob_read(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let dir = blob_dir(state)?;
    let body: BlobReadRequest = json_body(state, body).await?;
    let limits = state.limits;
    let refs = &body.blob_references;
    if refs.len() > limits.max_blob_read_refs {
        return Err(ApiError::invalid(format!(
            "BlobReferences names {} blobs; one BlobRead may name at most {}",
            refs.len(),
            limits.max_blob_read_refs
        )));
    }
    let ids = refs
        .iter()
        .map(|r| blobs::parse_reference(r))
        .collect::<ApiResult<Vec<_>>>()?;
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (id, r) in ids.iter().zip(refs) {
        if !seen.insert(id.as_str()) {
            return Err(ApiError::invalid(format!(
                "BlobReferences names {r:?} more than once"
            )));
        }
    }
    let encoding = accepted_encoding(headers)?;
    let max_bytes = limits.max_blob_read_bytes;
    // Every blob must exist, and the answer fit the limit, before anything is sent.
    let (found, total) = blocking(move || {
        let found = ids
            .iter()
            .map(|id| blobs::find(&dir, id))
            .collect::<ApiResult<Vec<_>>>()?;
        let mut total = 0u64;
        for f in &found {
            total = total.saturating_add(f.size);
            if found.len() > 1 {
                total = total.saturating_add(blobs::frame_overhead(&f.meta));
            }
        }
        if total > max_bytes as u64 {
            return Err(ApiError::too_large(
                &format!("the BlobRead answer ({total} bytes)"),
                max_bytes,
            ));
        }
        Ok((found, total))
    })
    .await?;
    // An empty payload is zero bytes on the wire, uncompressed.
    let encoding = if total == 0 {
        BodyEncoding::Identity
    } else {
        encoding
    };
    // Streamed: blob pieces go through the compressor and the CRC-32C blocking into a small
    // channel, so the answer is never held whole.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        let blocks = CrcBlockWriter::new(move |chunk| {
            tx.blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        });
        let written = Compressor::new(encoding, blocks).and_then(|mut w| {
            blobs::write_payload(&found, &mut w)?;
            w.finish()?.finish()
        });
        if let Err(e) = written
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            tracing::warn!("BlobRead answer failed after it started: {e}");
            let _ = errors.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(octet_stream(Body::from_stream(stream), encoding))
}
