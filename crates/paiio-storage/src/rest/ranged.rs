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
pub(super) const CHUNK_BYTES: u64 = 8 << 20;
/// The rows of a read's first chunk, read before the others are planned: its first batch
/// tells the size of a row (the service's size estimates are not reliable enough to size
/// what a stream reads ahead).
const FIRST_CHUNK_ROWS: u64 = 16 * 1024;
/// The fewest rows of the other chunks.
const MIN_CHUNK_ROWS: u64 = 4096;

/// The bytes per row of a batch (its buffers' bytes as sliced, not their allocations).
fn row_bytes(batch: &arrow_array::RecordBatch) -> Option<u64> {
    let rows = batch.num_rows() as u64;
    let bytes: usize = batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum();
    (rows > 0).then(|| (bytes as u64).div_ceil(rows).max(1))
}

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
        if parallelism < 2 || request.skip_rows > 0 || count < 2 * FIRST_CHUNK_ROWS {
            return None;
        }
        // The first chunk opens here, so that a refused read (a bad session, a range outside
        // it) fails the call, as a single request does; its first batch sizes the others.
        let mut first = request.clone();
        first.range = ReadRange::Rows {
            offset,
            count: FIRST_CHUNK_ROWS,
        };
        let mut first = match self.read_one(&first).await {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let head = first.next().await;
        let size = match &head {
            Some(Ok(batch)) => row_bytes(batch),
            _ => None,
        };
        let first: RecordBatchStream = Box::pin(futures::stream::iter(head).chain(first));
        let chunk_rows = size.map_or(MIN_CHUNK_ROWS, |b| (CHUNK_BYTES / b).max(MIN_CHUNK_ROWS));
        let mut chunks = vec![(offset, FIRST_CHUNK_ROWS)];
        chunks.extend(self::chunks(
            offset + FIRST_CHUNK_ROWS,
            count - FIRST_CHUNK_ROWS,
            chunk_rows,
        ));
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
