//! [`TableReader`]: reads this worker's slice of one or more tables as Arrow record batches,
//! with ordered multi-stream prefetch, deterministic shuffling and exact, resumable positions.
//!
//! ```
//! # use paiio::reader::TableReader;
//! # use paiio::options::ReaderOptions;
//! # use paiio_storage::{Column, OdpsType, TableSchema, TableService, TableId};
//! # use std::sync::Arc;
//! # let dir = tempfile::tempdir().unwrap();
//! # let warehouse = Arc::new(paiio_storage::local::LocalWarehouse::open(dir.path()).unwrap());
//! # let t = TableId::new("p", None, "t").unwrap();
//! # let schema = TableSchema::new(vec![Column::new("id", OdpsType::BigInt)], vec![]).unwrap();
//! # paiio::runtime::block_on(warehouse.create_table(&t, &schema, Default::default())).unwrap().unwrap();
//! let mut reader = TableReader::open_with(
//!     warehouse,
//!     "odps://p/tables/t",
//!     ReaderOptions::default().selected("id").slice(0, 2),
//! )?;
//! assert_eq!(reader.row_count(), 0);
//! assert!(reader.next_batch(10)?.is_none());
//! assert!(reader.read(10).unwrap_err().is_out_of_range());
//! # Ok::<(), paiio::Error>(())
//! ```
//!
//! With [`ReaderOptions::record_defaults`] the columns are typed and NULL-filled as
//! `TableRecordDataset` wants them (see [`crate::coerce`]); the conversion runs on the
//! prefetch threads.
//!
//! The blocking methods run on the process-wide runtime ([`crate::runtime`]) and must not be
//! called from inside an async context (they return an error there). A reader opened before
//! `fork()` cannot be used in the child: open a new one there.

mod open;
mod plan;
mod prefetch;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow_array::{RecordBatch, UInt32Array};
use arrow_schema::SchemaRef;
use paiio_storage::{TableSchema, TableService, TableUri};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::options::{AUTO_BYTES_PER_THREAD, ReaderOptions, Shuffle};
use crate::runtime;
use crate::shard;

use open::assemble;
pub use open::{IntoTables, row_counts};
use plan::{Plan, make_plan, read_indices, request_batch_rows, window_read_rows, window_reads};
pub use prefetch::BufferStats;
use prefetch::{Counters, Prefetch, Settings, Source, Typing};

/// An exact position of a reader, to save with a checkpoint and [`TableReader::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderState {
    /// Rows of the slice already delivered, in the reader's output order.
    pub position: u64,
    /// Rows in the slice (checked on restore: the tables must not have changed).
    pub row_count: u64,
    pub tables: Vec<String>,
    pub slice_id: u64,
    pub slice_count: u64,
    pub equal: bool,
    pub shuffle: Option<Shuffle>,
}

#[derive(Debug, Clone)]
struct OpenTable {
    uri: TableUri,
    session_id: String,
    /// Rows of the session (all slices).
    total: u64,
    /// This slice's rows of the session.
    range: std::ops::Range<u64>,
    /// The session's estimated bytes per row (0 when the backend gives no estimate).
    row_bytes: u64,
    /// For each output column, its index among the columns the session delivers.
    columns_at: Vec<usize>,
}

/// What every slice of a reader's tables shares: the columns and how they are delivered.
#[derive(Debug, Clone)]
struct Shape {
    /// The output columns with their MaxCompute types.
    schema: TableSchema,
    /// The output columns with their own Arrow types, as read.
    read_schema: SchemaRef,
    /// The batches delivered: `read_schema`, or the types of `record_defaults`.
    arrow_schema: SchemaRef,
    typing: Option<Arc<Typing>>,
    threads: usize,
    byte_budget: usize,
}

/// What delivers batches in output order from some position.
struct Cursor {
    prefetch: Prefetch,
    /// Batches taken from the prefetch, not yet returned: without shuffling, the rest of a
    /// prefetched batch; with shuffling, the rest of the last shuffled window.
    pending: VecDeque<RecordBatch>,
    /// Shuffle state: the next window to shuffle, and the rows to drop from its start. The
    /// prefetch reads window after window, each in [`window_reads`].
    window: u64,
    skip: usize,
}

impl Cursor {
    fn pending_rows(&self) -> u64 {
        self.pending.iter().map(|b| b.num_rows() as u64).sum()
    }

    /// Drops the first `rows` of `pending` (at most its rows).
    fn drop_pending(&mut self, mut rows: u64) {
        while rows > 0 {
            let Some(first) = self.pending.pop_front() else {
                return;
            };
            let n = first.num_rows() as u64;
            if n > rows {
                let keep = (n - rows) as usize;
                self.pending.push_front(first.slice(rows as usize, keep));
                return;
            }
            rows -= n;
        }
    }
}

/// Reads a slice of one or more tables. See the [module docs](self).
pub struct TableReader {
    service: Arc<dyn TableService>,
    options: ReaderOptions,
    tables: Vec<OpenTable>,
    sources: Arc<Vec<Source>>,
    shape: Shape,
    plan: Plan,
    row_count: u64,
    position: u64,
    cursor: Option<Cursor>,
    counters: Arc<Counters>,
    pid: u32,
    closed: bool,
}

impl std::fmt::Debug for TableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableReader")
            .field("tables", &self.tables)
            .field("row_count", &self.row_count)
            .field("position", &self.position)
            .field("threads", &self.shape.threads)
            .finish_non_exhaustive()
    }
}

impl TableReader {
    /// Opens `tables` on the backend the process is configured for
    /// ([`crate::backend::open_default_service`]; the configuration is read now).
    pub fn open(tables: impl IntoTables, options: ReaderOptions) -> Result<TableReader> {
        let service = crate::backend::open_default_service()?;
        TableReader::open_with(service, tables, options)
    }

    /// Opens `tables` on `service`.
    pub fn open_with(
        service: Arc<dyn TableService>,
        tables: impl IntoTables,
        options: ReaderOptions,
    ) -> Result<TableReader> {
        options.validate()?;
        let uris = tables.into_tables()?;
        if uris.is_empty() {
            return Err(Error::invalid("tables", "no table given"));
        }
        runtime::block_on(open::open_async(service, uris, options))?
    }

    /// Rows in this slice (all tables together).
    pub fn row_count(&self) -> u64 {
        self.row_count
    }

    /// The position within the slice of the next row [`next_batch`](Self::next_batch) returns.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The columns read, in output order, with their MaxCompute types (partition columns
    /// that were selected appear among them, in their selected place).
    pub fn schema(&self) -> &TableSchema {
        &self.shape.schema
    }

    /// The Arrow schema of the batches (with `record_defaults`: their types, no NULLs).
    pub fn arrow_schema(&self) -> SchemaRef {
        self.shape.arrow_schema.clone()
    }

    /// Prefetch streams in use.
    pub fn num_threads(&self) -> usize {
        self.shape.threads
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn options(&self) -> &ReaderOptions {
        &self.options
    }

    /// A reader of slice `slice_id` of `slice_count` of the same tables, over this reader's
    /// read sessions, with its options otherwise (shuffle and epoch included), at the start
    /// of that slice.
    ///
    /// Nothing is asked of the backend (opening a reader makes a session per table), and the
    /// slices read this way see one snapshot of the tables: what a data loader wants when it
    /// reads many slices at once.
    pub fn open_slice(&self, slice_id: u64, slice_count: u64) -> Result<TableReader> {
        self.check_usable()?;
        let options = ReaderOptions {
            slice_id,
            slice_count,
            ..self.options.clone()
        };
        options.validate()?;
        let tables = self
            .tables
            .iter()
            .map(|t| {
                Ok(OpenTable {
                    range: shard::slice_range(t.total, slice_id, slice_count, options.equal)?,
                    ..t.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(assemble(
            self.service.clone(),
            options,
            tables,
            self.shape.clone(),
        ))
    }

    /// What is buffered between the prefetch streams and the reader, and the peaks.
    pub fn buffer_stats(&self) -> BufferStats {
        let c = &self.counters;
        BufferStats {
            buffered_bytes: c.buffered_bytes.load(Ordering::Relaxed),
            buffered_rows: c.buffered_rows.load(Ordering::Relaxed),
            peak_bytes: c.peak_bytes.load(Ordering::Relaxed),
            peak_rows: c.peak_rows.load(Ordering::Relaxed),
            max_batch_bytes: c.max_batch_bytes.load(Ordering::Relaxed),
            byte_budget: self.shape.byte_budget,
            capacity_rows: c.capacity_rows.load(Ordering::Relaxed),
            num_threads: self.shape.threads,
        }
    }

    /// Fails when the reader is closed, or was opened in another process (before `fork()`).
    pub fn check_usable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed("TableReader"));
        }
        if self.pid != std::process::id() {
            return Err(Error::invalid(
                "reader",
                "this TableReader was opened before fork(); open a new one in the child process",
            ));
        }
        Ok(())
    }

    /// Up to `n` rows as one batch: exactly `n` unless fewer remain in the slice; `None`
    /// after the last row. A failed read leaves the position where it was.
    pub fn next_batch(&mut self, n: usize) -> Result<Option<RecordBatch>> {
        runtime::block_on(self.next_batch_async(n))?
    }

    /// [`next_batch`](Self::next_batch), for async callers. Dropping the future before it
    /// completes leaves the position where it was (what was read ahead is read again).
    pub async fn next_batch_async(&mut self, n: usize) -> Result<Option<RecordBatch>> {
        self.check_usable()?;
        if n == 0 {
            return Err(Error::invalid("num_records", "must be at least 1"));
        }
        if self.position >= self.row_count {
            return Ok(None);
        }
        let want = (n as u64).min(self.row_count - self.position) as usize;
        // Out of `self` until the rows are handed over: a read that fails or is dropped half
        // way drops it with the rows it took, and the next read starts again at the position.
        let mut cursor = match self.cursor.take() {
            Some(cursor) => cursor,
            None => self.start_cursor(),
        };
        let mut parts = Vec::new();
        let mut have = 0;
        while have < want {
            let batch = match cursor.pending.pop_front() {
                Some(batch) => batch,
                None => match self.next_output_batch(&mut cursor).await {
                    Some(batch) => batch?,
                    None => {
                        return Err(Error::Storage(paiio_storage::Error::Transient {
                            message: format!(
                                "the prefetch ended at row {} of {}",
                                self.position + have as u64,
                                self.row_count
                            ),
                            retryable: true,
                            source: None,
                        }));
                    }
                },
            };
            let need = want - have;
            let batch = if batch.num_rows() > need {
                cursor
                    .pending
                    .push_front(batch.slice(need, batch.num_rows() - need));
                batch.slice(0, need)
            } else {
                batch
            };
            have += batch.num_rows();
            parts.push(batch);
        }
        let out = match parts.len() {
            1 => parts.swap_remove(0),
            _ => arrow_select::concat::concat_batches(&self.shape.arrow_schema, &parts)
                .map_err(|e| paiio_storage::Error::arrow("concatenating batches", e))?,
        };
        self.cursor = Some(cursor);
        self.position += want as u64;
        Ok(Some(out))
    }

    /// [`next_batch`](Self::next_batch) as PAI's `read`: after the last row,
    /// [`Error::OutOfRange`].
    pub fn read(&mut self, n: usize) -> Result<RecordBatch> {
        runtime::block_on(self.read_async(n))?
    }

    /// [`read`](Self::read), for async callers (see
    /// [`next_batch_async`](Self::next_batch_async)).
    pub async fn read_async(&mut self, n: usize) -> Result<RecordBatch> {
        self.next_batch_async(n).await?.ok_or_else(|| {
            Error::OutOfRange(format!(
                "the slice has {} rows and all were read",
                self.row_count
            ))
        })
    }

    /// Starts reading ahead from the current position now rather than at the first
    /// [`read`](Self::read), so that the rows are on their way while the caller does other
    /// work (such as reading other slices).
    pub fn prefetch(&mut self) -> Result<()> {
        self.check_usable()?;
        if self.cursor.is_none() && self.position < self.row_count {
            self.cursor = Some(self.start_cursor());
        }
        Ok(())
    }

    /// Moves to row `offset` of the slice (`0..=row_count`); beyond is
    /// [`Error::OutOfRange`].
    ///
    /// A short move forward keeps what was read ahead: through the rows already prefetched,
    /// or, when shuffling, within the current and the next window (a window is read whole
    /// either way). Anything else starts reading again at `offset`.
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        self.check_usable()?;
        if offset > self.row_count {
            return Err(Error::OutOfRange(format!(
                "cannot seek to row {offset}: the slice has {} rows",
                self.row_count
            )));
        }
        if offset < self.position || !self.skip_ahead(offset - self.position) {
            self.cursor = None;
        }
        self.position = offset;
        Ok(())
    }

    /// Moves the cursor (if any) `rows` rows ahead without new reads, if it can: see
    /// [`seek`](Self::seek). `false`: it could not, and must start again (it may have moved
    /// part of the way).
    fn skip_ahead(&mut self, rows: u64) -> bool {
        let shuffle = self.options.shuffle;
        let target = self.position + rows;
        let buffered = self.counters.buffered_rows.load(Ordering::Relaxed) as u64;
        let Some(cursor) = self.cursor.as_mut() else {
            return true; // nothing read ahead: the next read starts at the new position
        };
        let pending = cursor.pending_rows();
        if rows <= pending {
            cursor.drop_pending(rows);
            return true;
        }
        if let Some(s) = shuffle {
            // `pending` is the rest of the last shuffled window, which ends where the next
            // one (`cursor.window`) starts: a target in the next window only moves its skip.
            let b = s.buffer_rows as u64;
            if target / b != cursor.window {
                return false;
            }
            cursor.pending.clear();
            cursor.skip = (target - cursor.window * b) as usize;
            return true;
        }
        // Without shuffling, go through the rows the prefetch already holds, not further.
        if rows > pending + buffered {
            return false;
        }
        let mut left = rows - pending;
        cursor.pending.clear();
        while left > 0 {
            let batch = match runtime::block_on(cursor.prefetch.next_batch()) {
                Ok(Some(Ok(batch))) => batch,
                _ => return false,
            };
            let n = batch.num_rows() as u64;
            if n > left {
                cursor
                    .pending
                    .push_back(batch.slice(left as usize, (n - left) as usize));
                return true;
            }
            left -= n;
        }
        true
    }

    /// Starts another epoch of shuffling (a new order) at the start of the slice. Without
    /// shuffling, only moves to the start.
    pub fn set_epoch(&mut self, epoch: u64) -> Result<()> {
        self.check_usable()?;
        if let Some(shuffle) = self.options.shuffle.as_mut() {
            shuffle.epoch = epoch;
            self.plan = make_plan(&self.tables, &self.options, self.shape.threads);
        }
        // What was read ahead belongs to the previous order.
        self.cursor = None;
        self.seek(0)
    }

    /// The exact position, to resume with [`restore`](Self::restore).
    pub fn state(&self) -> ReaderState {
        ReaderState {
            position: self.position,
            row_count: self.row_count,
            tables: self.tables.iter().map(|t| t.uri.to_string()).collect(),
            slice_id: self.options.slice_id,
            slice_count: self.options.slice_count,
            equal: self.options.equal,
            shuffle: self.options.shuffle,
        }
    }

    /// Continues from a saved [`state`](Self::state): the remaining rows, in the same order.
    /// The reader must read the same tables, slice and shuffle (the epoch is taken from the
    /// state).
    pub fn restore(&mut self, state: &ReaderState) -> Result<()> {
        self.check_usable()?;
        let mismatch = |what: &str, saved: String, now: String| {
            Err(Error::invalid(
                "reader state",
                format!("it was saved with {what} {saved}, this reader has {now}"),
            ))
        };
        let tables: Vec<String> = self.tables.iter().map(|t| t.uri.to_string()).collect();
        if state.tables != tables {
            return mismatch("tables", state.tables.join(","), tables.join(","));
        }
        if (state.slice_id, state.slice_count, state.equal)
            != (
                self.options.slice_id,
                self.options.slice_count,
                self.options.equal,
            )
        {
            return mismatch(
                "slice (id, count, equal)",
                format!(
                    "({}, {}, {})",
                    state.slice_id, state.slice_count, state.equal
                ),
                format!(
                    "({}, {}, {})",
                    self.options.slice_id, self.options.slice_count, self.options.equal
                ),
            );
        }
        if state.row_count != self.row_count {
            return mismatch(
                "row count",
                state.row_count.to_string(),
                self.row_count.to_string(),
            );
        }
        let same_shuffle = match (&state.shuffle, &self.options.shuffle) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                (a.seed, a.buffer_rows, a.block_rows) == (b.seed, b.buffer_rows, b.block_rows)
            }
            _ => false,
        };
        if !same_shuffle {
            return mismatch(
                "shuffle",
                format!("{:?}", state.shuffle),
                format!("{:?}", self.options.shuffle),
            );
        }
        if let (Some(saved), Some(shuffle)) = (state.shuffle, self.options.shuffle.as_mut())
            && saved.epoch != shuffle.epoch
        {
            shuffle.epoch = saved.epoch;
            self.plan = make_plan(&self.tables, &self.options, self.shape.threads);
        }
        self.cursor = None;
        self.seek(state.position)
    }

    /// Stops prefetching and releases the buffers; later calls fail with
    /// [`Error::Closed`].
    pub fn close(&mut self) {
        let cursor = self.cursor.take();
        if self.pid != std::process::id() {
            // Opened before fork(): its prefetch tasks belong to the parent's runtime.
            std::mem::forget(cursor);
        }
        self.closed = true;
    }

    fn start_cursor(&self) -> Cursor {
        let (threads, byte_budget) = (self.shape.threads, self.shape.byte_budget);
        let row_bytes = self.tables.iter().map(|t| t.row_bytes).max().unwrap_or(0);
        let (segments, window, skip) = match &self.options.shuffle {
            Some(s) => {
                let b = s.buffer_rows as u64;
                let window = self.position / b;
                let max_rows = window_read_rows(b, row_bytes, threads, s.block_rows);
                let mut segments = Vec::new();
                let mut start = window * b;
                while start < self.row_count {
                    let end = (start + b).min(self.row_count);
                    segments.extend(window_reads(&self.plan.range(start, end), max_rows));
                    start = end;
                }
                (segments, window, (self.position - window * b) as usize)
            }
            None => (self.plan.from(self.position), 0, 0),
        };
        let mut before = 0;
        let row_bases = self
            .tables
            .iter()
            .map(|t| {
                let base = (t.range.start, before);
                before += t.range.end - t.range.start;
                base
            })
            .collect();
        let settings = Settings {
            threads,
            batch_rows: request_batch_rows(self.options.batch_rows, row_bytes, byte_budget),
            max_bytes: byte_budget,
            capacity_rows: self.options.capacity,
            auto_bytes: threads.max(1) * AUTO_BYTES_PER_THREAD,
            read_schema: self.shape.read_schema.clone(),
            typing: self.shape.typing.clone(),
            row_bases,
        };
        let prefetch = Prefetch::start(
            self.service.clone(),
            self.sources.clone(),
            segments,
            settings,
            self.counters.clone(),
        );
        Cursor {
            prefetch,
            pending: VecDeque::new(),
            window,
            skip,
        }
    }

    /// The next batch in output order from `cursor` (a prefetched batch, or a shuffled
    /// window).
    async fn next_output_batch(&self, cursor: &mut Cursor) -> Option<Result<RecordBatch>> {
        let schema = &self.shape.arrow_schema;
        let total = self.row_count;
        let Some(shuffle) = self.options.shuffle else {
            return cursor.prefetch.next_batch().await;
        };
        let b = shuffle.buffer_rows as u64;
        let window_start = cursor.window * b;
        if window_start >= total {
            return None;
        }
        let window_end = (window_start + b).min(total);
        let window_rows = (window_end - window_start) as usize;
        // The window's reads come one after the other, and batches never cross them.
        let mut parts = Vec::new();
        let mut have = 0;
        while have < window_rows {
            match cursor.prefetch.next_batch().await? {
                Ok(batch) => {
                    have += batch.num_rows();
                    parts.push(batch);
                }
                Err(e) => return Some(Err(e)),
            }
        }
        if have != window_rows {
            return Some(Err(Error::invalid(
                "shuffle window",
                format!("its reads delivered {have} rows where it has {window_rows}"),
            )));
        }
        let window = match arrow_select::concat::concat_batches(schema, &parts) {
            Ok(w) => w,
            Err(e) => return Some(Err(paiio_storage::Error::arrow("shuffle window", e).into())),
        };
        // Output row i is the window's row `order[i]` in plan order, which was read as row
        // `read[order[i]]`: one gather does both.
        let read = read_indices(&self.plan.range(window_start, window_end));
        let order =
            shard::window_permutation(window_rows, shuffle.seed, shuffle.epoch, cursor.window);
        let indices = UInt32Array::from_iter_values(order[cursor.skip..].iter().map(|&i| read[i]));
        cursor.window += 1;
        cursor.skip = 0;
        let shuffled = runtime::cpu_pool()
            .install(|| arrow_select::take::take_record_batch(&window, &indices))
            .map_err(|e| paiio_storage::Error::arrow("shuffling a window", e).into());
        Some(shuffled)
    }
}

impl Iterator for TableReader {
    type Item = Result<RecordBatch>;

    /// Batches of `batch_rows` rows (the last may be shorter) until the end of the slice.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch(self.options.batch_rows).transpose()
    }
}

impl Drop for TableReader {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // Opened before fork(): its prefetch tasks belong to the parent's runtime.
            std::mem::forget(self.cursor.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_move_between_threads() {
        fn send<T: Send>() {}
        send::<TableReader>();
        send::<ReaderState>();
    }
}
