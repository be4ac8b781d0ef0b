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
        let Some(v) = headers.get(header::ACCEPT_ENCODING) else {
            return Ok(Compression::None);
        };
        let v = v
            .to_str()
            .map_err(|_| ApiError::invalid("Accept-Encoding is not text"))?;
        for token in v.split(',').map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        }) {
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
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Lz4(lz4_flex::frame::FrameEncoder<Vec<u8>>),
}

impl Sink {
    fn new(c: Compression) -> std::io::Result<Self> {
        Ok(match c {
            Compression::Zstd => Sink::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 1)?),
            Compression::Lz4Frame => Sink::Lz4(lz4_flex::frame::FrameEncoder::new(Vec::new())),
            Compression::None => {
                return Err(std::io::Error::other(
                    "internal: an uncompressed body has no compressing sink",
                ));
            }
        })
    }

    /// Takes the compressed bytes produced so far.
    fn drain(&mut self) -> std::io::Result<Bytes> {
        let buf = match self {
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
            Sink::Zstd(e) => e.finish()?,
            Sink::Lz4(e) => e.finish().map_err(std::io::Error::other)?,
        }))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Zstd(e) => e.write(buf),
            Sink::Lz4(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Pieces of IPC output smaller than this are copied together into one body chunk; larger
/// ones (the column buffers of a batch) go out as they are, without a copy.
const COALESCE_BELOW: usize = 8 << 10;

/// Lets a body chunk share an Arrow buffer's memory (kept alive until the chunk is sent).
struct ArrowBytes(arrow_buffer::Buffer);

impl AsRef<[u8]> for ArrowBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Encodes batches as the body chunks of one IPC stream.
enum Encoder {
    /// Uncompressed: Arrow's buffer encoder, whose output shares the batch's buffers, so the
    /// column data is copied once, by the kernel, on its way to the socket.
    Plain(arrow_ipc::writer::StreamEncoder),
    /// Whole-body compression: the IPC stream is written through the compressor.
    Compressed(StreamWriter<Sink>),
}

impl Encoder {
    fn new(schema: &arrow_schema::Schema, compression: Compression) -> std::io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::Plain(
                arrow_ipc::writer::StreamEncoder::try_new(schema).map_err(std::io::Error::other)?,
            ),
            c => Encoder::Compressed(
                StreamWriter::try_new(Sink::new(c)?, schema).map_err(std::io::Error::other)?,
            ),
        })
    }

    /// The chunks of the schema message (if not sent yet) and of `batch`.
    fn batch(&mut self, batch: &RecordBatch) -> std::io::Result<Vec<Bytes>> {
        match self {
            Encoder::Plain(e) => Ok(chunks(e.encode(batch).map_err(std::io::Error::other)?)),
            Encoder::Compressed(w) => {
                w.write(batch).map_err(std::io::Error::other)?;
                Ok(vec![w.get_mut().drain()?])
            }
        }
    }

    /// The chunks of the schema message (if not sent yet) and none of a batch.
    fn head(&mut self) -> std::io::Result<Vec<Bytes>> {
        match self {
            // The schema goes out with the first batch, or with the end of the stream.
            Encoder::Plain(_) => Ok(Vec::new()),
            Encoder::Compressed(w) => Ok(vec![w.get_mut().drain()?]),
        }
    }

    /// The end of the stream (and the schema, for a stream without batches).
    fn finish(self) -> std::io::Result<Vec<Bytes>> {
        match self {
            Encoder::Plain(e) => Ok(chunks(e.finish().map_err(std::io::Error::other)?)),
            Encoder::Compressed(mut w) => {
                w.finish().map_err(std::io::Error::other)?;
                Ok(vec![
                    w.into_inner().map_err(std::io::Error::other)?.finish()?,
                ])
            }
        }
    }
}

/// The encoder's buffers as body chunks: large ones shared, runs of small ones (message
/// headers, padding, validity bitmaps) copied together.
fn chunks(buffers: Vec<arrow_buffer::Buffer>) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(buffers.len());
    let mut small = bytes::BytesMut::new();
    for buffer in buffers {
        if buffer.len() < COALESCE_BELOW {
            small.extend_from_slice(buffer.as_slice());
            continue;
        }
        if !small.is_empty() {
            out.push(small.split().freeze());
        }
        out.push(Bytes::from_owner(ArrowBytes(buffer)));
    }
    if !small.is_empty() {
        out.push(small.freeze());
    }
    out
}

/// Encodes a batch stream as a streamed HTTP body. The first batch is awaited before the
/// status line, so an error that happens before any data is still a proper error answer;
/// an error after that can only cut the stream short (the client sees a truncated stream,
/// never a clean end).
pub(crate) async fn arrow_stream_body(
    mut stream: RecordBatchStream,
    compression: Compression,
) -> ApiResult<Response> {
    let first = stream.next().await.transpose()?;
    // Backends yield at least one (possibly empty) batch, so the schema is always known.
    let schema = match &first {
        Some(b) => b.schema(),
        None => std::sync::Arc::new(arrow_schema::Schema::empty()),
    };
    let mut encoder =
        Encoder::new(&schema, compression).map_err(|e| ApiError::invalid(e.to_string()))?;
    let head = match &first {
        Some(b) => encoder.batch(b),
        None => encoder.head(),
    }
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    let body = futures::stream::unfold(
        (Some(encoder), Some(stream), Some(head)),
        |(encoder, stream, head)| async move {
            if let Some(h) = head {
                return Some((Ok::<Vec<Bytes>, std::io::Error>(h), (encoder, stream, None)));
            }
            let mut encoder = encoder?;
            let mut stream = stream?;
            match stream.next().await {
                Some(Ok(batch)) => {
                    let chunks = encoder.batch(&batch);
                    let next_state = if chunks.is_ok() {
                        (Some(encoder), Some(stream), None)
                    } else {
                        (None, None, None)
                    };
                    Some((chunks, next_state))
                }
                Some(Err(e)) => {
                    tracing::warn!("row stream failed after the response started: {e}");
                    Some((
                        Err(std::io::Error::other(e.to_string())),
                        (None, None, None),
                    ))
                }
                None => Some((encoder.finish(), (None, None, None))),
            }
        },
    )
    .flat_map(|chunks| {
        futures::stream::iter(match chunks {
            Ok(chunks) => chunks
                .into_iter()
                .filter(|c| !c.is_empty())
                .map(Ok)
                .collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    });
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response();
    if let Some(enc) = compression.content_encoding() {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static(enc),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow_ipc::reader::StreamReader;

    use super::*;

    fn batch(rows: usize) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
        let xs: ArrayRef = Arc::new(Float64Array::from_iter(
            (0..rows).map(|i| (i % 7 != 0).then_some(i as f64 * 0.5)),
        ));
        let flags: ArrayRef =
            Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 3 == 0))));
        let names: ArrayRef = Arc::new(StringArray::from_iter(
            (0..rows).map(|i| (i % 5 != 0).then(|| format!("name-{i}"))),
        ));
        RecordBatch::try_from_iter([("id", ids), ("x", xs), ("flag", flags), ("name", names)])
            .unwrap()
    }

    /// The plain encoder's chunks, joined, are the IPC stream of the batches (sliced ones
    /// too), and column buffers go out without a copy.
    #[test]
    fn plain_chunks_make_the_stream_and_share_column_buffers() {
        let whole = batch(10_000);
        let sliced = whole.slice(4_099, 3_000);
        let mut encoder = Encoder::new(&whole.schema(), Compression::None).unwrap();
        let mut body = Vec::new();
        let first = encoder.batch(&whole).unwrap();
        let ids = whole.column(0).to_data().buffers()[0].as_ptr();
        assert!(
            first.iter().any(|c| c.as_ptr() == ids),
            "the id column was copied"
        );
        body.extend(first);
        body.extend(encoder.batch(&sliced).unwrap());
        body.extend(encoder.finish().unwrap());
        let bytes: Vec<u8> = body.iter().flat_map(|c| c.iter().copied()).collect();
        let got: Vec<RecordBatch> = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(got, vec![whole, sliced]);
    }

    #[test]
    fn a_stream_without_batches_still_has_its_schema() {
        let schema = batch(1).schema();
        for compression in [Compression::None, Compression::Zstd, Compression::Lz4Frame] {
            let mut encoder = Encoder::new(&schema, compression).unwrap();
            let mut body: Vec<u8> = encoder
                .head()
                .unwrap()
                .iter()
                .flat_map(|c| c.to_vec())
                .collect();
            body.extend(encoder.finish().unwrap().iter().flat_map(|c| c.to_vec()));
            let body = match compression {
                Compression::None => body,
                Compression::Zstd => zstd::decode_all(&body[..]).unwrap(),
                Compression::Lz4Frame => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut lz4_flex::frame::FrameDecoder::new(&body[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
            };
            let reader = StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
            assert_eq!(reader.schema(), schema);
            assert_eq!(reader.count(), 0);
        }
    }
}
