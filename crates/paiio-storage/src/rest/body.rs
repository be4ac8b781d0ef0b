//! Incremental decoding of Arrow IPC response bodies (docs/storage-api.md §7.1–7.2).
//!
//! Batches are decoded from the body chunks as they arrive (never the whole body at once)
//! with [`IpcStreamDecoder`], and handed out as each message completes, so a partial batch
//! is never surfaced. An uncompressed body is decoded in the calling task; a `zstd` or
//! `x-lz4-frame` body is decompressed and decoded on a blocking thread that pulls the body
//! through a bridge and passes batches back over a small bounded channel.
//!
//! A body must end with the end-of-stream marker: a body that ends mid-message, or at a
//! message boundary without the marker, is a truncation ([`StreamError::Resumable`]), as is
//! any transport failure (reset, read timeout). Malformed Arrow data is
//! [`StreamError::Fatal`].

use std::collections::VecDeque;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::Error;
use crate::ipc_guard::IpcLimits;
use crate::protocol::codec::{BodyEncoding, IpcStreamDecoder, StreamError};

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

/// How many decompressed bytes are handed to the Arrow decoder at a time.
const DECODED_CHUNK: usize = 256 << 10;

fn response_decoder() -> IpcStreamDecoder {
    IpcStreamDecoder::new("the response", IpcLimits::RESPONSE)
}

enum Item {
    Batch(RecordBatch),
    End(Option<SchemaRef>),
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum Inner {
    Plain {
        body: ByteStream,
        decoder: Box<IpcStreamDecoder>,
        ready: VecDeque<RecordBatch>,
    },
    Threaded {
        rx: tokio::sync::mpsc::Receiver<Result<Item, StreamError>>,
    },
    Done,
}

/// Bytes of one body so far: as they came over the wire, and as Arrow IPC once decoded.
#[derive(Debug, Default)]
pub(crate) struct BodyCounts {
    wire: AtomicU64,
    decoded: AtomicU64,
}

impl BodyCounts {
    /// (wire, decoded) bytes so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.wire.load(Ordering::Relaxed),
            self.decoded.load(Ordering::Relaxed),
        )
    }
}

/// Decodes one response body into batches.
pub(crate) struct BodyDecoder {
    inner: Inner,
    schema: Option<SchemaRef>,
    encoding: BodyEncoding,
    counts: Arc<BodyCounts>,
}

impl BodyDecoder {
    /// Starts decoding `response`'s body per its `Content-Encoding`. Must be called within a
    /// tokio runtime.
    pub fn new(response: reqwest::Response) -> Result<Self, Error> {
        let header = response
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?"));
        let encoding = BodyEncoding::from_header(header).map_err(|e| Error::NotSupported {
            message: format!("the response's {e}"),
        })?;
        let counts = Arc::new(BodyCounts::default());
        let inner = match encoding {
            BodyEncoding::Identity => Inner::Plain {
                body: Box::pin(response.bytes_stream()),
                decoder: Box::new(response_decoder()),
                ready: VecDeque::new(),
            },
            encoding => {
                let wire = counts.clone();
                let body = response.bytes_stream().map(move |chunk| {
                    if let Ok(c) = &chunk {
                        wire.wire.fetch_add(c.len() as u64, Ordering::Relaxed);
                    }
                    chunk.map_err(std::io::Error::other)
                });
                let reader = tokio_util::io::StreamReader::new(body);
                let bridge = tokio_util::io::SyncIoBridge::new(reader);
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                let decoded = counts.clone();
                tokio::task::spawn_blocking(move || {
                    decode_blocking(encoding, bridge, tx, &decoded)
                });
                Inner::Threaded { rx }
            }
        };
        Ok(BodyDecoder {
            inner,
            schema: None,
            encoding,
            counts,
        })
    }

    /// The encoding the body came in.
    pub fn encoding(&self) -> BodyEncoding {
        self.encoding
    }

    /// The body's byte counts, kept current as it is decoded.
    pub fn counts(&self) -> Arc<BodyCounts> {
        self.counts.clone()
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
                ready,
            } => loop {
                if self.schema.is_none() {
                    self.schema = decoder.schema();
                }
                if let Some(batch) = ready.pop_front() {
                    return Ok(Some(batch));
                }
                match body.next().await {
                    Some(Ok(chunk)) => {
                        let n = chunk.len() as u64;
                        self.counts.wire.fetch_add(n, Ordering::Relaxed);
                        self.counts.decoded.fetch_add(n, Ordering::Relaxed);
                        match decoder.push(Buffer::from(chunk)) {
                            Ok(batches) => ready.extend(batches),
                            Err(e) => {
                                self.inner = Inner::Done;
                                return Err(e);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        return Err(StreamError::Resumable(transient(
                            format!("the row stream broke: {e}"),
                            Some(Box::new(e)),
                        )));
                    }
                    None => {
                        decoder.finish()?;
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
    encoding: BodyEncoding,
    bridge: impl Read + Send,
    tx: tokio::sync::mpsc::Sender<Result<Item, StreamError>>,
    counts: &BodyCounts,
) {
    let mut reader = match encoding.decoder(bridge) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.blocking_send(Err(StreamError::Fatal(Error::Transient {
                message: format!("cannot start {} decoding: {e}", encoding.name()),
                retryable: false,
                source: Some(Box::new(e)),
            })));
            return;
        }
    };
    let mut decoder = response_decoder();
    loop {
        // Decoded bytes go to the decoder in the buffer they were read into (no copy).
        let mut chunk = Vec::with_capacity(DECODED_CHUNK);
        let read = (&mut reader)
            .take(DECODED_CHUNK as u64)
            .read_to_end(&mut chunk);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                let error = transient(
                    format!("the {} row stream broke: {e}", encoding.name()),
                    Some(Box::new(e)),
                );
                let _ = tx.blocking_send(Err(StreamError::Resumable(error)));
                return;
            }
        };
        if n == 0 {
            let end = decoder.finish().map(|()| Item::End(decoder.schema()));
            let _ = tx.blocking_send(end);
            return;
        }
        counts.decoded.fetch_add(n as u64, Ordering::Relaxed);
        match decoder.push(Buffer::from(chunk)) {
            Ok(batches) => {
                for batch in batches {
                    if tx.blocking_send(Ok(Item::Batch(batch))).is_err() {
                        return; // the reader went away
                    }
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}
