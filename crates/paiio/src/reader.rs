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
//! assert!(reader.read(10).unwrap_err().is_out_of_range());
//! # Ok::<(), paiio::Error>(())
//! ```
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
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::options::{AUTO_BYTES_PER_THREAD, ReaderOptions, Shuffle};
use crate::runtime;
use crate::shard;

pub use prefetch::BufferStats;
use prefetch::{Counters, Prefetch, Segment, Settings, Source};

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

#[derive(Debug)]
struct OpenTable {
    uri: TableUri,
    session_id: String,
    /// This slice's rows of the session.
    range: std::ops::Range<u64>,
    /// The session's estimated bytes per row (0 when the backend gives no estimate).
    row_bytes: u64,
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
        let i = self.starts.partition_point(|&s| s <= at).saturating_sub(1);
        let mut out = self
            .segments
            .get(i..)
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        if let Some(first) = out.first_mut() {
            let skip = at - self.starts[i];
            first.offset += skip;
            first.rows -= skip;
            if first.rows == 0 {
                out.remove(0);
            }
        }
        out
    }
}

/// What delivers batches in output order from some position.
struct Cursor {
    prefetch: Prefetch,
    /// Batches taken from the prefetch, not yet returned.
    pending: VecDeque<RecordBatch>,
    /// Shuffle state: rows read past the end of the last window (the next one's start),
    /// the next window, and the rows to drop from its start.
    carry: Option<RecordBatch>,
    window: u64,
    skip: usize,
}

/// Reads a slice of one or more tables. See the [module docs](self).
pub struct TableReader {
    service: Arc<dyn TableService>,
    options: ReaderOptions,
    tables: Vec<OpenTable>,
    sources: Arc<Vec<Source>>,
    schema: TableSchema,
    arrow_schema: SchemaRef,
    plan: Plan,
    row_count: u64,
    position: u64,
    threads: usize,
    byte_budget: usize,
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
            .field("threads", &self.threads)
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

    /// The position within the slice of the next row [`read`](Self::read) returns.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The columns read, in output order, with their MaxCompute types (partition columns
    /// that were selected appear among them, in their selected place).
    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The Arrow schema of the batches.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow_schema.clone()
    }

    /// Prefetch streams in use.
    pub fn num_threads(&self) -> usize {
        self.threads
    }

    pub fn options(&self) -> &ReaderOptions {
        &self.options
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
            byte_budget: self.byte_budget,
            capacity_rows: c.capacity_rows.load(Ordering::Relaxed),
            num_threads: self.threads,
        }
    }

    fn check_usable(&self) -> Result<()> {
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

    /// Up to `n` rows as one batch: exactly `n` unless fewer remain in the slice; after the
    /// last row, [`Error::OutOfRange`].
    pub fn read(&mut self, n: usize) -> Result<RecordBatch> {
        self.check_usable()?;
        if n == 0 {
            return Err(Error::invalid("num_records", "must be at least 1"));
        }
        if self.position >= self.row_count {
            return Err(Error::OutOfRange(format!(
                "the slice has {} rows and all were read",
                self.row_count
            )));
        }
        let want = (n as u64).min(self.row_count - self.position) as usize;
        if self.cursor.is_none() {
            self.cursor = Some(self.start_cursor());
        }
        let mut parts = Vec::new();
        let mut have = 0;
        while have < want {
            let batch = match self.cursor.as_mut().and_then(|c| c.pending.pop_front()) {
                Some(batch) => batch,
                None => match self.next_output_batch() {
                    Some(Ok(batch)) => batch,
                    Some(Err(e)) => {
                        // The position is unchanged: a retry restarts from it.
                        self.cursor = None;
                        return Err(e);
                    }
                    None => {
                        self.cursor = None;
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
                if let Some(c) = self.cursor.as_mut() {
                    c.pending
                        .push_front(batch.slice(need, batch.num_rows() - need));
                }
                batch.slice(0, need)
            } else {
                batch
            };
            have += batch.num_rows();
            parts.push(batch);
        }
        let out = if parts.len() == 1 {
            parts
                .pop()
                .unwrap_or_else(|| RecordBatch::new_empty(self.arrow_schema.clone()))
        } else {
            arrow_select::concat::concat_batches(&self.arrow_schema, &parts)
                .map_err(|e| paiio_storage::Error::arrow("concatenating batches", e))?
        };
        self.position += want as u64;
        Ok(out)
    }

    /// Moves to row `offset` of the slice (`0..=row_count`); beyond is
    /// [`Error::OutOfRange`].
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        self.check_usable()?;
        if offset > self.row_count {
            return Err(Error::OutOfRange(format!(
                "cannot seek to row {offset}: the slice has {} rows",
                self.row_count
            )));
        }
        self.cursor = None;
        self.position = offset;
        Ok(())
    }

    /// Starts another epoch of shuffling (a new order) at the start of the slice. Without
    /// shuffling, only moves to the start.
    pub fn set_epoch(&mut self, epoch: u64) -> Result<()> {
        self.check_usable()?;
        if let Some(shuffle) = self.options.shuffle.as_mut() {
            shuffle.epoch = epoch;
            self.plan = make_plan(&self.tables, &self.options, self.threads);
        }
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
            self.plan = make_plan(&self.tables, &self.options, self.threads);
        }
        self.seek(state.position)
    }

    /// Stops prefetching and releases the buffers; later calls fail with
    /// [`Error::Closed`].
    pub fn close(&mut self) {
        self.cursor = None;
        self.closed = true;
    }

    fn start_cursor(&self) -> Cursor {
        let (start, window, skip) = match &self.options.shuffle {
            Some(s) => {
                let b = s.buffer_rows as u64;
                let window = self.position / b;
                (window * b, window, (self.position - window * b) as usize)
            }
            None => (self.position, 0, 0),
        };
        let segments = self.plan.from(start);
        let settings = Settings {
            threads: self.threads,
            batch_rows: self.options.batch_rows,
            max_bytes: self.byte_budget,
            capacity_rows: self.options.capacity,
            auto_bytes: self.threads.max(1) * AUTO_BYTES_PER_THREAD,
            schema: self.arrow_schema.clone(),
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
            carry: None,
            window,
            skip,
        }
    }

    /// The next batch in output order from the cursor (a prefetched batch, or a shuffled
    /// window).
    fn next_output_batch(&mut self) -> Option<Result<RecordBatch>> {
        let shuffle = self.options.shuffle;
        let schema = self.arrow_schema.clone();
        let total = self.row_count;
        let cursor = self.cursor.as_mut()?;
        let Some(shuffle) = shuffle else {
            return cursor.prefetch.next_batch();
        };
        let b = shuffle.buffer_rows as u64;
        let window_start = cursor.window * b;
        if window_start >= total {
            return None;
        }
        let window_rows = (total - window_start).min(b) as usize;
        let mut parts = Vec::new();
        let mut have = 0;
        while have < window_rows {
            let batch = match cursor.carry.take() {
                Some(batch) => batch,
                None => match cursor.prefetch.next_batch()? {
                    Ok(batch) => batch,
                    Err(e) => return Some(Err(e)),
                },
            };
            have += batch.num_rows();
            parts.push(batch);
        }
        // Windows cut through batches: the rest belongs to the next window.
        let mut window = match arrow_select::concat::concat_batches(&schema, &parts) {
            Ok(w) => w,
            Err(e) => return Some(Err(paiio_storage::Error::arrow("shuffle window", e).into())),
        };
        if have > window_rows {
            cursor.carry = Some(window.slice(window_rows, have - window_rows));
            window = window.slice(0, window_rows);
        }
        let order =
            shard::window_permutation(window_rows, shuffle.seed, shuffle.epoch, cursor.window);
        let indices = UInt32Array::from_iter_values(order[cursor.skip..].iter().map(|&i| i as u32));
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
        match self.read(self.options.batch_rows) {
            Ok(batch) => Some(Ok(batch)),
            Err(e) if e.is_out_of_range() => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl Drop for TableReader {
    fn drop(&mut self) {
        self.cursor = None;
    }
}

fn auto_threads(service: &dyn TableService) -> usize {
    if service.name() == "local" {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 4)
    } else {
        // The service streams about 10 MB/s per request: parallel streams are the lever.
        16
    }
}

/// Bytes one prefetch request should carry when the caller gave no chunk size. Rows are
/// delivered in slice order, so a request's rows reach the caller only after the requests before
/// it: small requests let `threads` requests stream at once (the service caps each request's
/// rate, about 10 MB/s), large ones would serialise behind the first.
const AUTO_CHUNK_BYTES: u64 = 8 << 20;

/// Rows per prefetch request: at least four requests per thread, at most about
/// [`AUTO_CHUNK_BYTES`] (64K rows without a size estimate), never fewer than a batch.
fn auto_chunk_rows(rows: u64, row_bytes: u64, threads: usize, batch_rows: usize) -> u64 {
    let per_thread = rows.div_ceil((threads as u64 * 4).max(1));
    let by_bytes = if row_bytes > 0 { AUTO_CHUNK_BYTES / row_bytes } else { 64 * 1024 };
    per_thread.min(by_bytes).clamp(batch_rows.max(1) as u64, 1 << 20)
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
        let info = service.describe_table(&uri.table).await?;
        let these = resolve_columns(&info.schema, &options, &uri.table)?;
        match &columns {
            None => columns = Some(these.clone()),
            Some(first) => {
                let same = first.len() == these.len()
                    && first
                        .iter()
                        .zip(&these)
                        .all(|(a, b)| a.name == b.name && a.ty == b.ty);
                if !same {
                    let show = |cs: &[Column]| {
                        cs.iter()
                            .map(|c| format!("{} {}", c.name, c.ty))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(Error::invalid(
                        "tables",
                        format!(
                            "every table must have the same columns: {} has ({}) where the first \
                             table has ({})",
                            uri.table,
                            show(&these),
                            show(first)
                        ),
                    ));
                }
            }
        }
        let mut request = ReadSessionRequest::new(uri.table.clone());
        for c in &these {
            if info.schema.is_partition_column(&c.name) {
                request.required_partition_columns.push(c.name.clone());
            } else {
                request.required_data_columns.push(c.name.clone());
            }
        }
        if request.required_data_columns.is_empty() {
            // Only partition columns: the session still needs one data column to count rows.
            if let Some(first) = info.schema.columns.first() {
                request.required_data_columns.push(first.name.clone());
            }
        }
        if !uri.partition.is_empty() {
            request.required_partitions.push(uri.partition.clone());
        }
        request.split_options = SplitOptions::row_offset();
        request.arrow_options = options.arrow_options;
        let session = service.create_read_session(&request).await?;
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
            range,
            row_bytes,
        });
    }
    let columns = columns.unwrap_or_default();
    let arrow_schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| c.to_arrow_field(&options.arrow_options))
            .collect::<Vec<_>>(),
    ));
    let schema = TableSchema {
        columns,
        partition_columns: Vec::new(),
    };
    let threads = if options.num_threads == 0 {
        auto_threads(service.as_ref())
    } else {
        options.num_threads
    };
    let byte_budget = options
        .byte_budget
        .unwrap_or(threads * AUTO_BYTES_PER_THREAD);
    let row_count = tables.iter().map(|t| t.range.end - t.range.start).sum();
    let sources = Arc::new(
        tables
            .iter()
            .map(|t| Source {
                table: t.uri.table.clone(),
                session_id: t.session_id.clone(),
            })
            .collect(),
    );
    let plan = make_plan(&tables, &options, threads);
    Ok(TableReader {
        service,
        options,
        tables,
        sources,
        schema,
        arrow_schema,
        plan,
        row_count,
        position: 0,
        threads,
        byte_budget,
        cursor: None,
        counters: Arc::new(Counters::default()),
        pid: std::process::id(),
        closed: false,
    })
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
    }
}
