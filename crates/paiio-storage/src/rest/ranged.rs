//! One row-range read as several requests at once: the range is cut into chunks of about
//! [`CHUNK_BYTES`], up to `read_parallelism` of them are read concurrently (each a resumable
//! row stream of its own), and their batches are handed out in row order.
//!
//! The service caps every request (about 10 MB/s on the real service), and one request is
//! served by one thread of the server, so one request is the ceiling of a stream however fast
//! the client is. A caller's one stream is therefore read as several requests, as a download
//! manager fetches one file in parallel ranges. The chunks after the one being handed out are
//! read ahead, so a stream holds at most `read_parallelism - 1` chunks it has not delivered.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};

use crate::error::Result;
use crate::service::{ReadRange, ReadRequest, RecordBatchStream};

use super::RestClient;

/// About how many bytes of Arrow data one chunk request reads.
pub(super) const CHUNK_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// Bytes per row assumed for a session whose size is unknown.
const DEFAULT_ROW_BYTES: f64 = 128.0;
/// The fewest rows of a chunk.
const MIN_CHUNK_ROWS: u64 = 4096;

/// The chunks of `offset..offset + count`, `chunk_rows` each (the last one shorter).
pub(super) fn chunks(offset: u64, count: u64, chunk_rows: u64) -> Vec<(u64, u64)> {
    let chunk_rows = chunk_rows.max(1);
    let mut out = Vec::new();
    let mut at = offset;
    let end = offset.saturating_add(count);
    while at < end {
        let n = chunk_rows.min(end - at);
        out.push((at, n));
        at += n;
    }
    out
}

impl RestClient {
    /// The rows of a chunk of `session_id`'s reads.
    pub(super) fn chunk_rows(&self, session_id: &str) -> u64 {
        let row_bytes = self
            .inner
            .row_bytes
            .lock()
            .get(session_id)
            .copied()
            .filter(|b| *b > 0.0)
            .unwrap_or(DEFAULT_ROW_BYTES);
        ((CHUNK_BYTES / row_bytes) as u64).max(MIN_CHUNK_ROWS)
    }

    /// Reads a row range as chunks, `parallelism` at once, when it is at least two chunks
    /// long; `None` otherwise (the caller reads it as one request).
    pub(super) async fn read_ranged(
        &self,
        request: &ReadRequest,
    ) -> Option<Result<RecordBatchStream>> {
        let parallelism = self.inner.read_parallelism;
        let ReadRange::Rows { offset, count } = request.range else {
            return None;
        };
        let chunk_rows = self.chunk_rows(&request.session_id);
        if parallelism < 2 || request.skip_rows > 0 || count < 2 * chunk_rows {
            return None;
        }
        let chunks = chunks(offset, count, chunk_rows);
        // The first chunk opens here, so that a refused read (a bad session, a range outside
        // it) fails the call, as a single request does.
        let mut first = request.clone();
        first.range = ReadRange::Rows {
            offset: chunks[0].0,
            count: chunks[0].1,
        };
        let first = match self.read_one(&first).await {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let permits = Arc::new(Semaphore::new(parallelism));
        // The chunk streams, in row order; at most `parallelism` are being read.
        let (order_tx, order_rx) = mpsc::channel::<mpsc::UnboundedReceiver<_>>(parallelism);
        let client = self.clone();
        let request = request.clone();
        tokio::spawn(async move {
            let mut first = Some(first);
            for (i, (offset, count)) in chunks.into_iter().enumerate() {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tx, rx) = mpsc::unbounded_channel();
                if order_tx.send(rx).await.is_err() {
                    return; // the caller went away
                }
                let (client, mut chunk) = (client.clone(), request.clone());
                chunk.range = ReadRange::Rows { offset, count };
                let opened = if i == 0 { first.take() } else { None };
                tokio::spawn(async move {
                    let _permit = permit;
                    let mut stream = match opened {
                        Some(s) => s,
                        None => match client.read_one(&chunk).await {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        },
                    };
                    while let Some(item) = stream.next().await {
                        let failed = item.is_err();
                        if tx.send(item).is_err() || failed {
                            return;
                        }
                    }
                });
            }
        });
        struct Out<T> {
            order: mpsc::Receiver<mpsc::UnboundedReceiver<T>>,
            current: Option<mpsc::UnboundedReceiver<T>>,
            delivered_any: bool,
            done: bool,
        }
        let out = Out {
            order: order_rx,
            current: None,
            delivered_any: false,
            done: false,
        };
        let stream = futures::stream::unfold(out, |mut out| async move {
            loop {
                if out.done {
                    return None;
                }
                if out.current.is_none() {
                    out.current = Some(out.order.recv().await?);
                }
                let rx = out.current.as_mut()?;
                match rx.recv().await {
                    Some(Ok(batch)) => {
                        // An empty chunk yields one empty batch; only the first one of the
                        // read is kept (it carries the schema).
                        if batch.num_rows() == 0 && out.delivered_any {
                            continue;
                        }
                        out.delivered_any = true;
                        return Some((Ok(batch), out));
                    }
                    Some(Err(e)) => {
                        // Nothing after an error: the rest of the read is dropped.
                        out.done = true;
                        out.order.close();
                        out.current = None;
                        return Some((Err(e), out));
                    }
                    None => out.current = None,
                }
            }
        });
        Some(Ok(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_range_once() {
        assert_eq!(chunks(10, 25, 10), vec![(10, 10), (20, 10), (30, 5)]);
        assert_eq!(chunks(0, 20, 10), vec![(0, 10), (10, 10)]);
        assert!(chunks(5, 0, 10).is_empty());
        assert_eq!(chunks(0, 3, 0), vec![(0, 1), (1, 1), (2, 1)]);
    }
}
