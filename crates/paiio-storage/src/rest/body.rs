//! Incremental decoding of Arrow IPC response bodies (STORAGE_API.md §7.1–7.2).
//!
//! Batches are decoded from the body chunks as they arrive (never the whole body at once)
//! with Arrow's push [`StreamDecoder`], and handed out as each message completes, so a
//! partial batch is never surfaced. An uncompressed body is decoded in the calling task; a
//! `zstd` or `x-lz4-frame` body is decompressed and decoded on a blocking thread that pulls
//! the body through a bridge and passes batches back over a small bounded channel.
//!
//! A body must end with the end-of-stream marker: a body that ends mid-message, or at a
//! message boundary without the marker, is a truncation ([`StreamError::Resumable`]), as is
//! any transport failure (reset, read timeout). Malformed Arrow data is
//! [`StreamError::Fatal`].

use std::io::Read;
use std::pin::Pin;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::error::Error;
use crate::ipc_guard::{IpcLimits, IpcStreamGuard};

/// Body compression of a read (`Accept-Encoding` asked, `Content-Encoding` answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCompression {
    Zstd,
    Lz4Frame,
}

impl ReadCompression {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ReadCompression::Zstd => "zstd",
            ReadCompression::Lz4Frame => "x-lz4-frame",
        }
    }

    /// Parses a response `Content-Encoding`; `None` for identity.
    pub(crate) fn from_content_encoding(v: &str) -> Result<Option<Self>, Error> {
        match v.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(None),
            "zstd" => Ok(Some(ReadCompression::Zstd)),
            "x-lz4-frame" | "x-odps-lz4-frame" | "lz4_frame" | "lz4-frame" | "lz4" => {
                Ok(Some(ReadCompression::Lz4Frame))
            }
            other => Err(Error::NotSupported {
                message: format!("response Content-Encoding {other:?}"),
            }),
        }
    }
}

/// Why a body stopped early.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The body broke or ended short: re-request the rest.
    Resumable(Error),
    /// The data itself is bad: retrying will not help.
    Fatal(Error),
}

pub(crate) fn transient(
    message: impl Into<String>,
    source: Option<crate::error::BoxError>,
) -> Error {
    Error::Transient {
        message: message.into(),
        retryable: true,
        source,
    }
}

/// Checks the end of a body: no partial message, and the end-of-stream marker seen.
fn check_end(decoder: &mut StreamDecoder) -> Result<(), StreamError> {
    if decoder.finish().is_err() {
        return Err(StreamError::Resumable(transient(
            "the row stream ended in the middle of a message",
            None,
        )));
    }
    // After the marker the decoder refuses any further byte; before it, it takes one.
    match decoder.decode(&mut Buffer::from(vec![0xFFu8])) {
        Err(_) => Ok(()),
        Ok(_) => Err(StreamError::Resumable(transient(
            "the row stream ended without its end-of-stream marker",
            None,
        ))),
    }
}

fn arrow_fatal(e: arrow_schema::ArrowError) -> StreamError {
    StreamError::Fatal(Error::arrow("the row stream of the response", e))
}

/// Decodes the next message of `buf`. The guard has checked every byte of it first; Arrow's
/// decoder may still panic on other malformed input (found by flipping bits of a body): that
/// is malformed data, a fatal error, never a crash of the caller, and no panic report.
fn decode_guarded(
    decoder: &mut StreamDecoder,
    buf: &mut Buffer,
) -> Result<Option<RecordBatch>, StreamError> {
    match crate::ipc_guard::catch_quietly(|| decoder.decode(buf)) {
        Ok(r) => r.map_err(arrow_fatal),
        Err(what) => Err(StreamError::Fatal(Error::Transient {
            message: format!("the row stream of the response is malformed Arrow data ({what})"),
            retryable: false,
            source: None,
        })),
    }
}

/// Checks response bytes before the decoder sees them (declared sizes against
/// [`IpcLimits::RESPONSE`]); a refusal is fatal.
fn guard_chunk(guard: &mut IpcStreamGuard, chunk: &[u8]) -> Result<(), StreamError> {
    guard.feed(chunk).map_err(|e| {
        StreamError::Fatal(Error::Transient {
            message: format!("refusing the row stream of the response: {e}"),
            retryable: false,
            source: None,
        })
    })
}

fn response_guard() -> IpcStreamGuard {
    IpcStreamGuard::new("the response", IpcLimits::RESPONSE)
}

enum Item {
    Batch(RecordBatch),
    End(Option<SchemaRef>),
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum Inner {
    Plain {
        body: ByteStream,
        decoder: StreamDecoder,
        buf: Buffer,
        guard: Box<IpcStreamGuard>,
    },
    Threaded {
        rx: tokio::sync::mpsc::Receiver<Result<Item, StreamError>>,
    },
    Done,
}

/// Decodes one response body into batches.
pub(crate) struct BodyDecoder {
    inner: Inner,
    schema: Option<SchemaRef>,
}

impl BodyDecoder {
    /// Starts decoding `response`'s body per its `Content-Encoding`. Must be called within a
    /// tokio runtime.
    pub fn new(response: reqwest::Response) -> Result<Self, Error> {
        let codec = match response.headers().get(reqwest::header::CONTENT_ENCODING) {
            None => None,
            Some(v) => ReadCompression::from_content_encoding(v.to_str().unwrap_or("?"))?,
        };
        let body: ByteStream = Box::pin(response.bytes_stream());
        let inner = match codec {
            None => Inner::Plain {
                body,
                decoder: StreamDecoder::new(),
                buf: Buffer::from(Vec::<u8>::new()),
                guard: Box::new(response_guard()),
            },
            Some(codec) => {
                let reader = tokio_util::io::StreamReader::new(body.map_err(std::io::Error::other));
                let bridge = tokio_util::io::SyncIoBridge::new(reader);
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                tokio::task::spawn_blocking(move || decode_blocking(codec, bridge, tx));
                Inner::Threaded { rx }
            }
        };
        Ok(BodyDecoder {
            inner,
            schema: None,
        })
    }

    /// The schema, once the schema message was decoded.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    /// The next complete batch; `Ok(None)` at a clean end (marker seen).
    pub async fn next(&mut self) -> Result<Option<RecordBatch>, StreamError> {
        match &mut self.inner {
            Inner::Done => Ok(None),
            Inner::Plain {
                body,
                decoder,
                buf,
                guard,
            } => loop {
                if !buf.is_empty() {
                    let batch = match decode_guarded(decoder, buf) {
                        Ok(b) => b,
                        Err(e) => {
                            self.inner = Inner::Done;
                            return Err(e);
                        }
                    };
                    if self.schema.is_none() {
                        self.schema = decoder.schema();
                    }
                    if let Some(batch) = batch {
                        return Ok(Some(batch));
                    }
                    continue;
                }
                match body.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = guard_chunk(guard, &chunk) {
                            self.inner = Inner::Done;
                            return Err(e);
                        }
                        *buf = Buffer::from(chunk)
                    }
                    Some(Err(e)) => {
                        return Err(StreamError::Resumable(transient(
                            format!("the row stream broke: {e}"),
                            Some(Box::new(e)),
                        )));
                    }
                    None => {
                        check_end(decoder)?;
                        self.inner = Inner::Done;
                        return Ok(None);
                    }
                }
            },
            Inner::Threaded { rx } => match rx.recv().await {
                Some(Ok(Item::Batch(b))) => {
                    if self.schema.is_none() {
                        self.schema = Some(b.schema());
                    }
                    Ok(Some(b))
                }
                Some(Ok(Item::End(schema))) => {
                    if self.schema.is_none() {
                        self.schema = schema;
                    }
                    self.inner = Inner::Done;
                    Ok(None)
                }
                Some(Err(e)) => {
                    self.inner = Inner::Done;
                    Err(e)
                }
                None => {
                    self.inner = Inner::Done;
                    Err(StreamError::Resumable(transient(
                        "the row stream decoder stopped",
                        None,
                    )))
                }
            },
        }
    }
}

/// Decompresses and decodes a body on a blocking thread.
fn decode_blocking(
    codec: ReadCompression,
    bridge: impl Read,
    tx: tokio::sync::mpsc::Sender<Result<Item, StreamError>>,
) {
    let mut reader: Box<dyn Read> = match codec {
        ReadCompression::Lz4Frame => Box::new(lz4_flex::frame::FrameDecoder::new(bridge)),
        ReadCompression::Zstd => match zstd::stream::read::Decoder::new(bridge) {
            Ok(d) => Box::new(d),
            Err(e) => {
                let _ = tx.blocking_send(Err(StreamError::Fatal(Error::Transient {
                    message: format!("cannot start zstd decoding: {e}"),
                    retryable: false,
                    source: Some(Box::new(e)),
                })));
                return;
            }
        },
    };
    let mut decoder = StreamDecoder::new();
    let mut guard = response_guard();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let error = transient(
                    format!("the {} row stream broke: {e}", codec.name()),
                    Some(Box::new(e)),
                );
                let _ = tx.blocking_send(Err(StreamError::Resumable(error)));
                return;
            }
        };
        if n == 0 {
            let end = check_end(&mut decoder).map(|()| Item::End(decoder.schema()));
            let _ = tx.blocking_send(end);
            return;
        }
        if let Err(e) = guard_chunk(&mut guard, &chunk[..n]) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut buf = Buffer::from(chunk[..n].to_vec());
        while !buf.is_empty() {
            match decode_guarded(&mut decoder, &mut buf) {
                Ok(Some(batch)) => {
                    if tx.blocking_send(Ok(Item::Batch(batch))).is_err() {
                        return; // the reader went away
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    }
}

/// Encodes batches as one Arrow IPC stream with LZ4_FRAME buffer compression (TableWrite).
pub(crate) fn encode_ipc(batches: &[RecordBatch]) -> Result<Vec<u8>, Error> {
    use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => std::sync::Arc::new(arrow_schema::Schema::empty()),
    };
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))
        .map_err(|e| Error::arrow("IPC write options", e))?;
    let mut writer = StreamWriter::try_new_with_options(Vec::new(), &schema, options)
        .map_err(|e| Error::arrow("encoding the rows to write", e))?;
    for b in batches {
        writer
            .write(b)
            .map_err(|e| Error::arrow("encoding the rows to write", e))?;
    }
    writer
        .finish()
        .map_err(|e| Error::arrow("encoding the rows to write", e))?;
    writer
        .into_inner()
        .map_err(|e| Error::arrow("encoding the rows to write", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use std::sync::Arc;

    fn ipc(rows: i64) -> Vec<u8> {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "a",
            arrow_schema::DataType::Int64,
            false,
        )]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap();
        encode_ipc(&[b.clone(), b]).unwrap()
    }

    fn decode_all(bytes: &[u8]) -> Result<usize, StreamError> {
        let mut d = StreamDecoder::new();
        let mut rows = 0;
        for chunk in bytes.chunks(7) {
            let mut buf = Buffer::from(chunk.to_vec());
            while let Some(b) = d.decode(&mut buf).map_err(arrow_fatal)? {
                rows += b.num_rows();
            }
        }
        check_end(&mut d)?;
        Ok(rows)
    }

    #[test]
    fn declared_lengths_are_checked_before_decoding() {
        let mut bytes = ipc(10);
        let p = crate::ipc_guard::compressed_prefix_positions(&bytes)[1];
        bytes[p..p + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
        let mut guard = response_guard();
        let e = guard_chunk(&mut guard, &bytes).unwrap_err();
        assert!(
            matches!(&e, StreamError::Fatal(e) if e.to_string().contains("4611686018427387904")),
            "{e:?}"
        );
    }

    #[test]
    fn end_of_stream_marker_is_required() {
        let full = ipc(10);
        assert_eq!(decode_all(&full).unwrap(), 20);
        assert!(full.ends_with(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]));
        // Without the marker (at a message boundary), and cut inside a message.
        assert!(matches!(
            decode_all(&full[..full.len() - 8]),
            Err(StreamError::Resumable(_))
        ));
        assert!(matches!(
            decode_all(&full[..full.len() - 20]),
            Err(StreamError::Resumable(_))
        ));
        assert!(matches!(decode_all(&[]), Err(StreamError::Resumable(_))));
    }
}
