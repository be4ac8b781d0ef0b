//! Row streams on the wire: Arrow IPC streaming format, optionally compressed as a whole
//! body with zstd or LZ4 frames (STORAGE_API.md §7).

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use paiio_storage::RecordBatchStream;

use crate::error::{ApiError, ApiResult};

/// Whole-body compression of a response, as asked for with `ACCEPT-ENCODING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Zstd,
    Lz4Frame,
}

impl Compression {
    /// `zstd` or `x-lz4-frame` in Accept-Encoding; anything else (identity, gzip...) means none.
    pub fn from_accept_encoding(headers: &HeaderMap) -> ApiResult<Self> {
        let Some(v) = headers.get(header::ACCEPT_ENCODING) else { return Ok(Compression::None) };
        let v = v.to_str().map_err(|_| ApiError::invalid("Accept-Encoding is not text"))?;
        for token in v.split(',').map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase()) {
            match token.as_str() {
                "zstd" => return Ok(Compression::Zstd),
                "x-lz4-frame" | "lz4" | "lz4-frame" => return Ok(Compression::Lz4Frame),
                _ => {}
            }
        }
        Ok(Compression::None)
    }

    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some("zstd"),
            Compression::Lz4Frame => Some("x-lz4-frame"),
        }
    }
}

/// A sink that compresses what is written into an in-memory buffer that is drained as
/// body chunks.
enum Sink {
    Plain(Vec<u8>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Lz4(lz4_flex::frame::FrameEncoder<Vec<u8>>),
}

impl Sink {
    fn new(c: Compression) -> std::io::Result<Self> {
        Ok(match c {
            Compression::None => Sink::Plain(Vec::new()),
            Compression::Zstd => Sink::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 1)?),
            Compression::Lz4Frame => Sink::Lz4(lz4_flex::frame::FrameEncoder::new(Vec::new())),
        })
    }

    /// Takes the compressed bytes produced so far.
    fn drain(&mut self) -> std::io::Result<Bytes> {
        let buf = match self {
            Sink::Plain(v) => v,
            Sink::Zstd(e) => {
                e.flush()?;
                e.get_mut()
            }
            Sink::Lz4(e) => {
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(buf)))
    }

    fn finish(self) -> std::io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Sink::Plain(v) => v,
            Sink::Zstd(e) => e.finish()?,
            Sink::Lz4(e) => e.finish().map_err(std::io::Error::other)?,
        }))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(v) => v.write(buf),
            Sink::Zstd(e) => e.write(buf),
            Sink::Lz4(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes a batch stream as a streamed HTTP body. The first batch is awaited before the
/// status line, so an error that happens before any data is still a proper error answer;
/// an error after that can only cut the stream short (the client sees a truncated stream,
/// never a clean end).
pub(crate) async fn arrow_stream_body(mut stream: RecordBatchStream, compression: Compression) -> ApiResult<Response> {
    let first = stream.next().await.transpose()?;
    // Backends yield at least one (possibly empty) batch, so the schema is always known.
    let schema = match &first {
        Some(b) => b.schema(),
        None => std::sync::Arc::new(arrow_schema::Schema::empty()),
    };
    let sink = Sink::new(compression).map_err(|e| ApiError::invalid(e.to_string()))?;
    let mut writer = StreamWriter::try_new(sink, &schema).map_err(|e| ApiError::invalid(e.to_string()))?;
    let head = {
        if let Some(b) = &first {
            writer.write(b).map_err(|e| ApiError::invalid(e.to_string()))?;
        }
        writer.get_mut().drain().map_err(|e| ApiError::invalid(e.to_string()))?
    };
    let body = futures::stream::unfold(
        (Some(writer), Some(stream), Some(head)),
        |(writer, stream, head)| async move {
            if let Some(h) = head {
                return Some((Ok::<Bytes, std::io::Error>(h), (writer, stream, None)));
            }
            let mut writer = writer?;
            let mut stream = match stream {
                Some(s) => s,
                None => return None,
            };
            match stream.next().await {
                Some(Ok(batch)) => {
                    let chunk = encode(&mut writer, &batch);
                    let next_state = if chunk.is_ok() { (Some(writer), Some(stream), None) } else { (None, None, None) };
                    Some((chunk, next_state))
                }
                Some(Err(e)) => {
                    tracing::warn!("row stream failed after the response started: {e}");
                    Some((Err(std::io::Error::other(e.to_string())), (None, None, None)))
                }
                None => {
                    let end = writer
                        .finish()
                        .map_err(std::io::Error::other)
                        .and_then(|_| writer.into_inner().map_err(std::io::Error::other))
                        .and_then(Sink::finish);
                    Some((end, (None, None, None)))
                }
            }
        },
    );
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response();
    if let Some(enc) = compression.content_encoding() {
        response.headers_mut().insert(header::CONTENT_ENCODING, header::HeaderValue::from_static(enc));
    }
    Ok(response)
}

fn encode(writer: &mut StreamWriter<Sink>, batch: &RecordBatch) -> std::io::Result<Bytes> {
    writer.write(batch).map_err(std::io::Error::other)?;
    writer.get_mut().drain()
}
