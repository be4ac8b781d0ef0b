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

mod prefetch;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow_array::{RecordBatch, UInt32Array};
use arrow_schema::{Schema, SchemaRef};
use paiio_storage::{
    Column, ReadSessionRequest, SplitOptions, TableId, TableSchema, TableService, TableUri,
};

use crate::coerce;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::options::{AUTO_BYTES_PER_THREAD, ReaderOptions, Shuffle};
use crate::runtime;
use crate::shard;

pub use prefetch::BufferStats;
use prefetch::{Counters, Prefetch, Segment, Settings, Source, Typing};

/// Tables to read: one URI, a comma-separated list of URIs, or a list of either.
pub trait IntoTables {
    fn into_tables(self) -> Result<Vec<TableUri>>;
}

impl IntoTables for &str {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        Ok(TableUri::parse_list(self)?)
    }
}

impl IntoTables for String {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        self.as_str().into_tables()
    }
}

impl IntoTables for &String {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        self.as_str().into_tables()
    }
}

impl<S: AsRef<str>> IntoTables for &[S] {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        let mut out = Vec::new();
        for s in self {
            out.extend(s.as_ref().into_tables()?);
        }
        Ok(out)
    }
}

impl<S: AsRef<str>> IntoTables for Vec<S> {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        self.as_slice().into_tables()
    }
}

impl<S: AsRef<str>, const N: usize> IntoTables for [S; N] {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        self.as_slice().into_tables()
    }
}

impl IntoTables for TableUri {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        Ok(vec![self])
    }
}

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

/// The order of the slice's rows before the in-window shuffle: segments with their start
/// positions.
#[derive(Debug)]
struct Plan {
    segments: Vec<Segment>,
    starts: Vec<u64>,
}

impl Plan {
    fn new(segments: Vec<Segment>) -> Plan {
        let mut starts = Vec::with_capacity(segments.len());
        let mut at = 0;
        for s in &segments {
            starts.push(at);
            at += s.rows;
        }
        Plan { segments, starts }
    }

    /// The segments from position `at` on (the first one trimmed).
    fn from(&self, at: u64) -> Vec<Segment> {
        self.range(at, u64::MAX)
    }

    /// The segments of positions `start..end`, in plan order (the first and last trimmed).
    fn range(&self, start: u64, end: u64) -> Vec<Segment> {
        let i = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let mut out = Vec::new();
        for (segment, &at) in self.segments.iter().zip(&self.starts).skip(i) {
            if at >= end {
                break;
            }
            let skip = start.saturating_sub(at);
            let rows = segment.rows.min(end - at).saturating_sub(skip);
            if rows > 0 {
                out.push(Segment {
                    offset: segment.offset + skip,
                    rows,
                    ..*segment
                });
            }
        }
        out
    }
}

/// The order in which the rows of one shuffle window are read: its pieces (in plan order) by
/// table and offset. The rows a window holds do not depend on the order they are read in, and
/// the blocks of a slice are often neighbours in the table (a slice smaller than the window
/// is one contiguous range): read in plan order, each block is a request of its own and a
/// backend decodes every stored batch a block touches once per block.
fn storage_order(pieces: &[Segment]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_unstable_by_key(|&i| (pieces[i].table, pieces[i].offset));
    order
}

/// The reads of a shuffle window: its pieces in [`storage_order`], neighbours merged into
/// reads of at most `max_rows` rows (a single piece may be longer).
fn window_reads(pieces: &[Segment], max_rows: u64) -> Vec<Segment> {
    let mut reads: Vec<Segment> = Vec::new();
    for i in storage_order(pieces) {
        let piece = pieces[i];
        match reads.last_mut() {
            Some(last)
                if last.table == piece.table
                    && last.offset + last.rows == piece.offset
                    && last.rows + piece.rows <= max_rows =>
            {
                last.rows += piece.rows;
            }
            _ => reads.push(piece),
        }
    }
    reads
}

/// For each row of a shuffle window in plan order, its index among the window's rows as
/// read ([`window_reads`]: pieces in [`storage_order`]).
fn read_indices(pieces: &[Segment]) -> Vec<u32> {
    let mut read_start = vec![0u64; pieces.len()];
    let mut at = 0;
    for i in storage_order(pieces) {
        read_start[i] = at;
        at += pieces[i].rows;
    }
    let mut out = Vec::with_capacity(at as usize);
    for (piece, &start) in pieces.iter().zip(&read_start) {
        out.extend((start..start + piece.rows).map(|r| r as u32));
    }
    out
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
        runtime::block_on(open_async(service, uris, options))?
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

/// Bytes one prefetch request should carry when the caller gave no chunk size. Rows are
/// delivered in slice order, so a request's rows reach the caller only after the requests before
/// it: small requests let `threads` requests stream at once (the service caps each request's
/// rate, about 10 MB/s), large ones would serialise behind the first.
const AUTO_CHUNK_BYTES: u64 = 8 << 20;

/// Rows per prefetch request: at least four requests per thread (so that the threads share
/// the work evenly), at most about [`AUTO_CHUNK_BYTES`] (64K rows without a size estimate),
/// never fewer than a batch. A single thread reads its requests one after the other, so
/// cutting its range finer gains nothing and costs a request each (and a backend decodes
/// the stored batches at a cut twice).
fn auto_chunk_rows(rows: u64, row_bytes: u64, threads: usize, batch_rows: usize) -> u64 {
    let requests = if threads <= 1 { 1 } else { threads as u64 * 4 };
    let per_thread = rows.div_ceil(requests);
    per_thread
        .min(chunk_rows_by_bytes(row_bytes))
        .clamp(batch_rows.max(1) as u64, 1 << 20)
}

/// Rows per batch asked of the backend: `batch_rows`, but by the row size estimate no more
/// than an eighth of the byte budget, which the prefetch may exceed by one batch (reads
/// return `batch_rows` all the same, joining smaller batches).
fn request_batch_rows(batch_rows: usize, row_bytes: u64, byte_budget: usize) -> usize {
    let cap = (byte_budget as u64 / 8)
        .checked_div(row_bytes)
        .unwrap_or(u64::MAX);
    (batch_rows as u64).min(cap).max(1) as usize
}

/// Rows of about [`AUTO_CHUNK_BYTES`] (64K rows without a size estimate).
fn chunk_rows_by_bytes(row_bytes: u64) -> u64 {
    AUTO_CHUNK_BYTES.checked_div(row_bytes).unwrap_or(64 * 1024)
}

/// Rows per read of a shuffle window of `window_rows`: the window split evenly over the
/// prefetch streams (the whole window is needed before any of its rows is delivered), at most
/// about [`AUTO_CHUNK_BYTES`] per read, and never less than a block.
fn window_read_rows(window_rows: u64, row_bytes: u64, threads: usize, block_rows: usize) -> u64 {
    let per_thread = window_rows.div_ceil(threads.max(1) as u64);
    per_thread
        .min(chunk_rows_by_bytes(row_bytes))
        .max(block_rows.max(1) as u64)
}

fn make_plan(tables: &[OpenTable], options: &ReaderOptions, threads: usize) -> Plan {
    let mut segments = Vec::new();
    match &options.shuffle {
        None => {
            for (i, t) in tables.iter().enumerate() {
                let rows = t.range.end - t.range.start;
                let chunk = if options.chunk_rows > 0 {
                    options.chunk_rows as u64
                } else {
                    auto_chunk_rows(rows, t.row_bytes, threads, options.batch_rows)
                };
                segments.extend(shard::chunks(t.range.clone(), chunk).into_iter().map(|r| {
                    Segment {
                        table: i,
                        offset: r.start,
                        rows: r.end - r.start,
                    }
                }));
            }
        }
        Some(s) => {
            let mut blocks = Vec::new();
            for (i, t) in tables.iter().enumerate() {
                blocks.extend(
                    shard::chunks(t.range.clone(), s.block_rows as u64)
                        .into_iter()
                        .map(|r| Segment {
                            table: i,
                            offset: r.start,
                            rows: r.end - r.start,
                        }),
                );
            }
            let order =
                shard::permutation(blocks.len(), s.seed, s.epoch, shard::BLOCK_ORDER_STREAM);
            segments = order.into_iter().map(|i| blocks[i]).collect();
        }
    }
    Plan::new(segments)
}

/// The output columns of `schema` for the options: names resolved case-insensitively,
/// in selected order (or table order).
fn resolve_columns(
    schema: &TableSchema,
    options: &ReaderOptions,
    table: &TableId,
) -> Result<Vec<Column>> {
    let unknown = |name: &str, which: &str| {
        Error::invalid(
            which,
            format!(
                "`{name}` is not a column of {table} (its columns: {})",
                schema.column_names().join(", ")
            ),
        )
    };
    if let Some(selected) = options.selected_list() {
        let mut out: Vec<Column> = Vec::new();
        for name in selected {
            let column = schema
                .column(name)
                .ok_or_else(|| unknown(name, "selected_cols"))?;
            if out.iter().any(|c| c.name == column.name) {
                return Err(Error::invalid(
                    "selected_cols",
                    format!("`{name}` is selected twice"),
                ));
            }
            out.push(column.clone());
        }
        return Ok(out);
    }
    if let Some(excluded) = options.excluded_list() {
        for name in excluded {
            schema
                .column(name)
                .ok_or_else(|| unknown(name, "excluded_cols"))?;
        }
        let out: Vec<Column> = schema
            .columns
            .iter()
            .filter(|c| !excluded.iter().any(|e| e.eq_ignore_ascii_case(&c.name)))
            .cloned()
            .collect();
        if out.is_empty() {
            return Err(Error::invalid(
                "excluded_cols",
                format!("every column of {table} is excluded"),
            ));
        }
        return Ok(out);
    }
    Ok(schema.columns.clone())
}

async fn open_async(
    service: Arc<dyn TableService>,
    uris: Vec<TableUri>,
    options: ReaderOptions,
) -> Result<TableReader> {
    let mut columns: Option<Vec<Column>> = None;
    let mut tables = Vec::new();
    for uri in uris {
        let table_schema = service.table_schema(&uri.table).await?;
        let these = resolve_columns(&table_schema, &options, &uri.table)?;
        match &columns {
            None => columns = Some(these.clone()),
            Some(first) => check_same_columns(first, &these, &uri.table)?,
        }
        let mut request = ReadSessionRequest::new(uri.table.clone());
        for c in &these {
            if table_schema.is_partition_column(&c.name) {
                request.required_partition_columns.push(c.name.clone());
            } else {
                request.required_data_columns.push(c.name.clone());
            }
        }
        if request.required_data_columns.is_empty() {
            // Only partition columns: the session still needs one data column to count rows.
            if let Some(first) = table_schema.columns.first() {
                request.required_data_columns.push(first.name.clone());
            }
        }
        if !uri.partition.is_empty() {
            request.required_partitions.push(uri.partition.clone());
        }
        request.split_options = SplitOptions::row_offset();
        request.arrow_options = options.arrow_options;
        let session = service.create_read_session(&request).await?;
        // The session delivers its columns in its own order (data, then partition columns):
        // where each output column is, found once.
        let delivered: Vec<&Column> = session.schema.all_columns().collect();
        let columns_at = these
            .iter()
            .map(|c| {
                delivered
                    .iter()
                    .position(|d| d.name.eq_ignore_ascii_case(&c.name))
                    .ok_or_else(|| {
                        Error::invalid(
                            "table data",
                            format!(
                                "the read session of {} has no column `{}`",
                                uri.table, c.name
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let total = u64::try_from(session.record_count).unwrap_or(0);
        let range =
            shard::slice_range(total, options.slice_id, options.slice_count, options.equal)?;
        let row_bytes = match (u64::try_from(session.estimated_size), total) {
            (Ok(size), rows) if rows > 0 => size / rows,
            _ => 0,
        };
        tables.push(OpenTable {
            uri,
            session_id: session.session_id,
            total,
            range,
            row_bytes,
            columns_at,
        });
    }
    let columns = columns.unwrap_or_default();
    let read_schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| c.to_arrow_field(&options.arrow_options))
            .collect::<Vec<_>>(),
    ));
    let (arrow_schema, typing) = match &options.record_defaults {
        None => (read_schema.clone(), None),
        Some(defaults) => {
            coerce::check_defaults(&columns, defaults)?;
            let typing = Typing {
                types: columns.iter().map(|c| c.ty.clone()).collect(),
                defaults: defaults.clone(),
            };
            (
                coerce::output_schema(&columns, defaults),
                Some(Arc::new(typing)),
            )
        }
    };
    let threads = match options.num_threads {
        0 => service.hints().default_streams,
        n => n,
    };
    let shape = Shape {
        schema: TableSchema {
            columns,
            partition_columns: Vec::new(),
        },
        read_schema,
        arrow_schema,
        typing,
        threads,
        byte_budget: options
            .byte_budget
            .unwrap_or(threads * AUTO_BYTES_PER_THREAD),
    };
    Ok(assemble(service, options, tables, shape))
}

/// Checks that a table has the columns of the first one.
fn check_same_columns(first: &[Column], these: &[Column], table: &TableId) -> Result<()> {
    let same = first.len() == these.len()
        && first
            .iter()
            .zip(these)
            .all(|(a, b)| a.name == b.name && a.ty == b.ty);
    if same {
        return Ok(());
    }
    let show = |cs: &[Column]| {
        cs.iter()
            .map(|c| format!("{} {}", c.name, c.ty))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Error::invalid(
        "tables",
        format!(
            "every table must have the same columns: {table} has ({}) where the first table \
             has ({})",
            show(these),
            show(first)
        ),
    ))
}

/// A reader at the start of its slice of `tables` (whose sessions are open).
fn assemble(
    service: Arc<dyn TableService>,
    options: ReaderOptions,
    tables: Vec<OpenTable>,
    shape: Shape,
) -> TableReader {
    let row_count = tables.iter().map(|t| t.range.end - t.range.start).sum();
    let sources = Arc::new(
        tables
            .iter()
            .map(|t| Source {
                table: t.uri.table.clone(),
                session_id: t.session_id.clone(),
                columns_at: t.columns_at.clone(),
            })
            .collect(),
    );
    let plan = make_plan(&tables, &options, shape.threads);
    TableReader {
        service,
        options,
        tables,
        sources,
        shape,
        plan,
        row_count,
        position: 0,
        cursor: None,
        counters: Arc::new(Counters::default()),
        pid: std::process::id(),
        closed: false,
    }
}

/// The rows of each table (one read session each, nothing read): what a reader of all of
/// them would count, without opening one.
pub fn row_counts(service: Arc<dyn TableService>, tables: impl IntoTables) -> Result<Vec<u64>> {
    let uris = tables.into_tables()?;
    runtime::block_on(async move {
        let mut counts = Vec::with_capacity(uris.len());
        for uri in uris {
            let mut request = ReadSessionRequest::new(uri.table);
            if !uri.partition.is_empty() {
                request.required_partitions.push(uri.partition);
            }
            request.split_options = SplitOptions::row_offset();
            let session = service.create_read_session(&request).await?;
            counts.push(u64::try_from(session.record_count).unwrap_or(0));
        }
        Ok(counts)
    })?
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

    #[test]
    fn plan_from_trims_the_first_segment() {
        let plan = Plan::new(vec![
            Segment {
                table: 0,
                offset: 10,
                rows: 5,
            },
            Segment {
                table: 1,
                offset: 0,
                rows: 3,
            },
        ]);
        assert_eq!(plan.from(0), plan.segments);
        assert_eq!(
            plan.from(2),
            vec![
                Segment {
                    table: 0,
                    offset: 12,
                    rows: 3
                },
                Segment {
                    table: 1,
                    offset: 0,
                    rows: 3
                }
            ]
        );
        assert_eq!(
            plan.from(5),
            vec![Segment {
                table: 1,
                offset: 0,
                rows: 3
            }]
        );
        assert_eq!(
            plan.from(7),
            vec![Segment {
                table: 1,
                offset: 2,
                rows: 1
            }]
        );
        assert!(plan.from(8).is_empty());
        assert_eq!(
            plan.range(3, 6),
            vec![
                Segment {
                    table: 0,
                    offset: 13,
                    rows: 2
                },
                Segment {
                    table: 1,
                    offset: 0,
                    rows: 1
                }
            ]
        );
        assert_eq!(
            plan.range(1, 2),
            vec![Segment {
                table: 0,
                offset: 11,
                rows: 1
            }]
        );
        assert!(plan.range(5, 5).is_empty());
    }

    #[test]
    fn window_reads_merge_neighbours_in_storage_order() {
        let seg = |table, offset, rows| Segment {
            table,
            offset,
            rows,
        };
        // Plan order: blocks of a table shuffled, and a block of another table.
        let pieces = vec![
            seg(0, 20, 10),
            seg(1, 0, 5),
            seg(0, 0, 10),
            seg(0, 10, 10),
            seg(0, 40, 10),
        ];
        assert_eq!(
            window_reads(&pieces, 100),
            vec![seg(0, 0, 30), seg(0, 40, 10), seg(1, 0, 5)]
        );
        assert_eq!(
            window_reads(&pieces, 20),
            vec![seg(0, 0, 20), seg(0, 20, 10), seg(0, 40, 10), seg(1, 0, 5)]
        );
        // Rows as read: table 0 rows 0..30 are read rows 0..30, 40..50 are 30..40, and
        // table 1 is 40..45. In plan order:
        let read = read_indices(&pieces);
        let expected: Vec<u32> = (20..30).chain(40..45).chain(0..20).chain(30..40).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn request_batches_stay_well_within_the_byte_budget() {
        assert_eq!(request_batch_rows(8192, 40, 64 << 20), 8192);
        assert_eq!(request_batch_rows(8192, 10_000, 64 << 20), 838);
        assert_eq!(request_batch_rows(8192, 0, 64 << 20), 8192);
        assert_eq!(request_batch_rows(8192, 1 << 30, 64 << 20), 1);
    }

    #[test]
    fn window_reads_split_over_threads() {
        assert_eq!(window_read_rows(65536, 40, 1, 4096), 65536);
        assert_eq!(window_read_rows(65536, 40, 4, 4096), 16384);
        assert_eq!(window_read_rows(65536, 40, 64, 4096), 4096);
        // At most about 8 MB a read.
        assert_eq!(window_read_rows(65536, 1024, 1, 16), 8192);
    }
}
