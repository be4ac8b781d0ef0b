//! Row streams on the wire: one Arrow IPC stream per answer (docs/storage-api.md §7), encoded by
//! [`IpcBodyEncoder`]: V2 compresses the whole body as asked with `Accept-Encoding`, V1
//! compresses the Arrow buffers instead.

use arrow_ipc::CompressionType;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use paiio_storage::RecordBatchStream;
use paiio_storage::protocol::codec::{BodyEncoding, IpcBodyEncoder};
use paiio_storage::protocol::headers;

use crate::error::{ApiError, ApiResult};

/// The body encoding asked for with `Accept-Encoding` (none when absent).
pub(crate) fn accepted_encoding(headers: &HeaderMap) -> ApiResult<BodyEncoding> {
    match headers.get(header::ACCEPT_ENCODING) {
        None => Ok(BodyEncoding::Identity),
        Some(v) => v
            .to_str()
            .map(BodyEncoding::from_accept)
            .map_err(|_| ApiError::invalid("Accept-Encoding is not text")),
    }
}

/// An answer with an octet-stream body in `encoding`.
pub(crate) fn octet_stream(body: Body, encoding: BodyEncoding) -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, headers::ARROW_CONTENT_TYPE)], body).into_response();
    if let Some(enc) = encoding.content_encoding() {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static(enc),
        );
    }
    response
}

/// Encodes a batch stream as a streamed HTTP body: one Arrow IPC stream with Arrow buffer
/// compression `buffers`, the whole body in `encoding`. The first batch is awaited before
/// the status line, so an error that happens before any data is still a proper error
/// answer; an error after that can only cut the stream short (the client sees a truncated
/// stream, never a clean end).
pub(crate) async fn arrow_stream_body(
    mut stream: RecordBatchStream,
    encoding: BodyEncoding,
    buffers: Option<CompressionType>,
) -> ApiResult<Response> {
    let first = stream.next().await.transpose()?;
    // Backends yield at least one (possibly empty) batch, so the schema is always known.
    let schema = match &first {
        Some(b) => b.schema(),
        None => std::sync::Arc::new(arrow_schema::Schema::empty()),
    };
    let mut encoder =
        IpcBodyEncoder::new(&schema, encoding, buffers).map_err(ApiError::internal)?;
    let head = match &first {
        Some(b) => encoder.batch(b).map_err(ApiError::internal)?,
        None => Vec::new(),
    };
    let body = futures::stream::unfold(
        (Some(encoder), Some(stream), Some(head)),
        |(encoder, stream, head)| async move {
            if let Some(h) = head {
                return Some((Ok(h), (encoder, stream, None)));
            }
            let mut encoder = encoder?;
            let mut stream = stream?;
            match stream.next().await {
                Some(Ok(batch)) => match encoder.batch(&batch) {
                    Ok(chunks) => Some((Ok(chunks), (Some(encoder), Some(stream), None))),
                    Err(e) => Some((Err(std::io::Error::other(e)), (None, None, None))),
                },
                Some(Err(e)) => {
                    tracing::warn!("row stream failed after the response started: {e}");
                    Some((
                        Err(std::io::Error::other(e.to_string())),
                        (None, None, None),
                    ))
                }
                None => Some((
                    encoder.finish().map_err(std::io::Error::other),
                    (None, None, None),
                )),
            }
        },
    )
    .flat_map(|chunks: std::io::Result<Vec<Bytes>>| {
        futures::stream::iter(match chunks {
            Ok(chunks) => chunks.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    });
    Ok(octet_stream(Body::from_stream(body), encoding))
}
