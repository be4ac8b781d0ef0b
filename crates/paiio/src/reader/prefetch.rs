//! Ordered prefetch: `threads` tasks on the I/O runtime stream row ranges (segments)
//! concurrently; the consumer receives their batches strictly in segment order.
//!
//! Each segment has its own channel. Memory is bounded by a shared budget of bytes and rows
//! that covers every batch delivered but not yet taken by the consumer: a task waits before
//! handing over a batch that does not fit. The one exception keeps the reader live: the
//! segment the consumer is waiting on (the head) may always hand over a batch when its own
//! channel is empty, so the buffered total never exceeds the budget by more than one batch
//! (the budget alone can deadlock when tasks ahead of the consumer hold all of it).
//!
//! The tasks also put each batch in its final shape (the output columns in order, converted
//! by `record_defaults`), so that this work runs on as many threads as there are streams. They
//! do not retry: the Storage API client retries and resumes by itself, within its own
//! budget, and the local warehouse has nothing to retry.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use paiio_storage::{OdpsType, ReadRange, ReadRequest, TableId, TableService};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::coerce::{self, RecordDefault};
use crate::error::{Error, Result};
use crate::runtime;

/// Rows `[offset, offset + rows)` of one table's read session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub table: usize,
    pub offset: u64,
    pub rows: u64,
}

/// What the tasks need to read one table.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub table: TableId,
    pub session_id: String,
    /// For each output column, its index among the columns the session delivers.
    pub columns_at: Vec<usize>,
}

/// `record_defaults` and the MaxCompute types of the columns they convert.
#[derive(Debug)]
pub(crate) struct Typing {
    pub types: Vec<OdpsType>,
    pub defaults: Vec<RecordDefault>,
}

/// Counters of what is buffered between the prefetch tasks and the consumer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub buffered_bytes: AtomicUsize,
    pub buffered_rows: AtomicUsize,
    pub peak_bytes: AtomicUsize,
    pub peak_rows: AtomicUsize,
    pub max_batch_bytes: AtomicUsize,
    /// The row capacity in force (the automatic one once estimated; 0 before).
    pub capacity_rows: AtomicUsize,
}

/// A snapshot of a reader's buffer counters (for tests and monitoring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferStats {
    /// Bytes delivered by the prefetch tasks and not yet taken by the reader.
    pub buffered_bytes: usize,
    pub buffered_rows: usize,
    /// The most bytes ever buffered at once.
    pub peak_bytes: usize,
    pub peak_rows: usize,
    /// The largest single batch seen (the budget may be exceeded by at most one batch).
    pub max_batch_bytes: usize,
    pub byte_budget: usize,
    /// Rows of read-ahead (the automatic estimate once known; 0 before the first batch).
    pub capacity_rows: usize,
    pub num_threads: usize,
}

/// Settings of one prefetch run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub threads: usize,
    pub batch_rows: usize,
    pub max_bytes: usize,
    /// Rows of read-ahead; 0 = estimate from the first batch and `auto_bytes`.
    pub capacity_rows: usize,
    pub auto_bytes: usize,
    /// The output columns with their own Arrow types (before `typing`).
    pub read_schema: SchemaRef,
    pub typing: Option<Arc<Typing>>,
    /// Per table: the first table row of the slice, and its slice row (in table order, before
    /// any shuffling), to name the row of a value that fails to convert.
    pub row_bases: Vec<(u64, u64)>,
}

struct Budget {
    bytes: usize,
    rows: usize,
    max_bytes: usize,
    max_rows: usize,
    /// Rows buffered per segment (only segments with something buffered).
    per_segment: HashMap<usize, usize>,
}

struct Shared {
    service: Arc<dyn TableService>,
    sources: Arc<Vec<Source>>,
    segments: Vec<Segment>,
    settings: Settings,
    budget: Mutex<Budget>,
    space: Notify,
    head: AtomicUsize,
    next: AtomicUsize,
    counters: Arc<Counters>,
}

type Item = Result<(RecordBatch, usize)>;

/// A running prefetch; dropping it stops the tasks.
pub(crate) struct Prefetch {
    shared: Arc<Shared>,
    receivers: Vec<Option<mpsc::UnboundedReceiver<Item>>>,
    current: usize,
    delivered: u64,
    tasks: Vec<JoinHandle<()>>,
}

impl Prefetch {
    pub fn start(
        service: Arc<dyn TableService>,
        sources: Arc<Vec<Source>>,
        segments: Vec<Segment>,
        settings: Settings,
        counters: Arc<Counters>,
    ) -> Prefetch {
        let (senders, receivers): (Vec<_>, Vec<_>) = segments
            .iter()
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel::<Item>();
                (Some(tx), Some(rx))
            })
            .unzip();
        let threads = settings.threads.clamp(1, segments.len().max(1));
        let max_rows = if settings.capacity_rows == 0 {
            usize::MAX
        } else {
            settings.capacity_rows
        };
        if settings.capacity_rows > 0 {
            counters
                .capacity_rows
                .store(settings.capacity_rows, Ordering::Relaxed);
        }
        counters.buffered_bytes.store(0, Ordering::Relaxed);
        counters.buffered_rows.store(0, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            service,
            sources,
            segments,
            budget: Mutex::new(Budget {
                bytes: 0,
                rows: 0,
                max_bytes: settings.max_bytes,
                max_rows,
                per_segment: HashMap::new(),
            }),
            settings,
            space: Notify::new(),
            head: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            counters,
        });
        let senders = Arc::new(Mutex::new(senders));
        let tasks = (0..threads)
            .map(|_| {
                let shared = shared.clone();
                let senders = senders.clone();
                runtime::spawn(async move { worker(shared, senders).await })
            })
            .collect();
        Prefetch {
            shared,
            receivers,
            current: 0,
            delivered: 0,
            tasks,
        }
    }

    /// The next batch in segment order; `None` after the last segment. Cancel-safe: a batch
    /// is taken only when this returns it.
    pub async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            let segment = *self.shared.segments.get(self.current)?;
            let rx = self.receivers[self.current].as_mut()?;
            match rx.recv().await {
                Some(Ok((batch, bytes))) => {
                    self.release(self.current, bytes, batch.num_rows());
                    self.delivered += batch.num_rows() as u64;
                    return Some(Ok(batch));
                }
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    if self.delivered != segment.rows {
                        let source = &self.shared.sources[segment.table];
                        return Some(Err(ended_early(&segment, source, self.delivered)));
                    }
                    self.receivers[self.current] = None;
                    self.current += 1;
                    self.delivered = 0;
                    self.shared.head.store(self.current, Ordering::SeqCst);
                    self.shared.space.notify_waiters();
                }
            }
        }
    }

    fn release(&self, segment: usize, bytes: usize, rows: usize) {
        let mut b = self.shared.budget.lock();
        b.bytes -= bytes;
        b.rows -= rows;
        if let Some(r) = b.per_segment.get_mut(&segment) {
            *r -= rows;
            if *r == 0 {
                b.per_segment.remove(&segment);
            }
        }
        let c = &self.shared.counters;
        c.buffered_bytes.store(b.bytes, Ordering::Relaxed);
        c.buffered_rows.store(b.rows, Ordering::Relaxed);
        drop(b);
        self.shared.space.notify_waiters();
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let c = &self.shared.counters;
        c.buffered_bytes.store(0, Ordering::Relaxed);
        c.buffered_rows.store(0, Ordering::Relaxed);
    }
}

type Senders = Arc<Mutex<Vec<Option<mpsc::UnboundedSender<Item>>>>>;

async fn worker(shared: Arc<Shared>, senders: Senders) {
    loop {
        let index = shared.next.fetch_add(1, Ordering::SeqCst);
        if index >= shared.segments.len() {
            return;
        }
        let Some(tx) = senders.lock()[index].take() else {
            return;
        };
        if let Err(e) = read_segment(&shared, index, &tx).await {
            let _ = tx.send(Err(e));
            return;
        }
        if tx.is_closed() {
            return;
        }
    }
}

async fn read_segment(
    shared: &Shared,
    index: usize,
    tx: &mpsc::UnboundedSender<Item>,
) -> Result<()> {
    let segment = shared.segments[index];
    let source = &shared.sources[segment.table];
    let (first, first_row) = shared.settings.row_bases[segment.table];
    let row_base = first_row + (segment.offset - first);
    let mut request = ReadRequest::new(
        source.table.clone(),
        source.session_id.clone(),
        ReadRange::Rows {
            offset: segment.offset,
            count: segment.rows,
        },
    );
    request.max_batch_rows = shared.settings.batch_rows;
    let mut stream = shared.service.read(&request).await?;
    let mut done = 0u64;
    while done < segment.rows {
        let Some(batch) = stream.next().await.transpose()? else {
            return Err(ended_early(&segment, source, done));
        };
        if batch.num_rows() == 0 {
            continue;
        }
        let left = (segment.rows - done) as usize;
        let batch = if batch.num_rows() > left {
            batch.slice(0, left)
        } else {
            batch
        };
        let base = row_base + done;
        let (batch, failure) = match shape(&batch, &shared.settings, source, base) {
            Ok(shaped) => (shaped, None),
            // The rows before a value that does not convert are delivered first: the error
            // belongs to the read that reaches it.
            Err(e @ Error::Conversion { row: Some(bad), .. }) if bad > base => {
                let good = batch.slice(0, (bad - base) as usize);
                (shape(&good, &shared.settings, source, base)?, Some(e))
            }
            Err(e) => return Err(e),
        };
        let rows = batch.num_rows();
        let bytes = batch_bytes(&batch);
        admit(shared, index, bytes, rows).await;
        if tx.send(Ok((batch, bytes))).is_err() {
            return Ok(());
        }
        if let Some(e) = failure {
            return Err(e);
        }
        done += rows as u64;
    }
    Ok(())
}

/// A read that delivered fewer rows than its segment has.
fn ended_early(segment: &Segment, source: &Source, delivered: u64) -> Error {
    Error::Storage(paiio_storage::Error::Transient {
        message: format!(
            "the read of rows [{}, {}) of {} (session {}) ended after {delivered} rows",
            segment.offset,
            segment.offset + segment.rows,
            source.table,
            source.session_id,
        ),
        retryable: true,
        source: None,
    })
}

/// The bytes of a batch's rows (its slice of the buffers, not whole shared buffers, which a
/// backend may slice many batches from).
pub(crate) fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// A batch as the reader delivers it: the output columns in order, converted by
/// `record_defaults` when given (`row_base` is the slice row of its first row).
fn shape(
    batch: &RecordBatch,
    settings: &Settings,
    source: &Source,
    row_base: u64,
) -> Result<RecordBatch> {
    let columns = source
        .columns_at
        .iter()
        .map(|&i| batch.columns().get(i).cloned())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            Error::invalid(
                "table data",
                format!(
                    "{} delivered {} columns, fewer than its read session has",
                    source.table,
                    batch.num_columns()
                ),
            )
        })?;
    let batch = RecordBatch::try_new(settings.read_schema.clone(), columns).map_err(|e| {
        paiio_storage::Error::arrow(
            format!(
                "rows of {} do not match the schema of the first table",
                source.table
            ),
            e,
        )
    })?;
    match &settings.typing {
        None => Ok(batch),
        Some(t) => coerce::coerce_batch(&batch, &t.types, &t.defaults, row_base),
    }
}

/// Waits until `bytes`/`rows` fit in the budget (or segment `index` is the head and has
/// nothing buffered), then accounts for them.
async fn admit(shared: &Shared, index: usize, bytes: usize, rows: usize) {
    loop {
        let notified = shared.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut b = shared.budget.lock();
            if b.max_rows == usize::MAX && shared.settings.capacity_rows == 0 {
                // Automatic capacity: rows worth `auto_bytes`, from this first batch.
                let per_row = (bytes / rows.max(1)).max(1);
                b.max_rows = (shared.settings.auto_bytes / per_row).max(shared.settings.batch_rows);
                shared
                    .counters
                    .capacity_rows
                    .store(b.max_rows, Ordering::Relaxed);
            }
            let fits = b.bytes + bytes <= b.max_bytes && b.rows + rows <= b.max_rows;
            let head = shared.head.load(Ordering::SeqCst);
            let starving = index == head && !b.per_segment.contains_key(&index);
            if fits || starving {
                b.bytes += bytes;
                b.rows += rows;
                *b.per_segment.entry(index).or_default() += rows;
                let c = &shared.counters;
                c.buffered_bytes.store(b.bytes, Ordering::Relaxed);
                c.buffered_rows.store(b.rows, Ordering::Relaxed);
                c.peak_bytes.fetch_max(b.bytes, Ordering::Relaxed);
                c.peak_rows.fetch_max(b.rows, Ordering::Relaxed);
                c.max_batch_bytes.fetch_max(bytes, Ordering::Relaxed);
                return;
            }
        }
        notified.await;
    }
}
