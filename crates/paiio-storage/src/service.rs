//! The [`TableService`] trait: one async interface over every place tables live.
//!
//! The required core is what the Storage API offers: read sessions with splits, row streams,
//! write sessions with streams, commit and abort. Catalog operations (create, drop, list) are
//! provided methods that backends without a catalog answer with [`Error::NotSupported`].
//! The backends are [`crate::local::LocalWarehouse`] (a directory) and the HTTP clients of the
//! Storage API (`rest::RestClient`) and of the Tunnel (`rest::TunnelClient`), both in the
//! `rest` feature and alone in retrying; decorators that are themselves services can wrap any.

use std::fmt::Debug;
use std::pin::Pin;

use arrow_array::RecordBatch;
use arrow_schema::TimeUnit;
use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ObjectKind, Result};
use crate::types::{ArrowOptions, TableSchema};
use crate::uri::{PartitionSpec, TableId};

/// A stream of Arrow record batches, as a backend delivers a split or a row range.
///
/// A stream yields at least one batch (an empty one when there are no rows), so a consumer
/// always learns the schema.
pub type RecordBatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send + 'static>>;

/// How a read session divides its rows into splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitMode {
    /// Splits of about `split_size` bytes each (addressed by index).
    Size,
    /// A wanted number of splits (addressed by index).
    Parallelism,
    /// No splits: the caller reads any row range `[offset, offset + count)`.
    RowOffset,
    /// One split per bucket of a bucketed table.
    Bucket,
}

impl std::fmt::Display for SplitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitMode::Size => "Size",
            SplitMode::Parallelism => "Parallelism",
            SplitMode::RowOffset => "RowOffset",
            SplitMode::Bucket => "Bucket",
        })
    }
}

impl std::str::FromStr for SplitMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "size" => Ok(SplitMode::Size),
            "parallelism" => Ok(SplitMode::Parallelism),
            "rowoffset" | "row_offset" => Ok(SplitMode::RowOffset),
            "bucket" => Ok(SplitMode::Bucket),
            _ => Err(Error::invalid(
                "split mode",
                format!("`{s}` (expected Size, Parallelism, RowOffset or Bucket)"),
            )),
        }
    }
}

/// Split options of a read session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitOptions {
    pub mode: SplitMode,
    /// Size: bytes per split; Parallelism: number of splits; RowOffset: ignored.
    pub number: u64,
    /// Whether one split may span several partitions.
    pub cross_partition: bool,
}

impl SplitOptions {
    /// Default split size of the service: 256 MiB.
    pub const DEFAULT_SPLIT_SIZE: u64 = 256 << 20;
    /// The smallest byte size the service accepts for Size splits.
    pub const MIN_SPLIT_SIZE: u64 = 1 << 10;

    pub fn size(bytes: u64) -> Self {
        SplitOptions {
            mode: SplitMode::Size,
            number: bytes,
            cross_partition: true,
        }
    }
    pub fn parallelism(splits: u64) -> Self {
        SplitOptions {
            mode: SplitMode::Parallelism,
            number: splits,
            cross_partition: true,
        }
    }
    pub fn row_offset() -> Self {
        SplitOptions {
            mode: SplitMode::RowOffset,
            number: 0,
            cross_partition: true,
        }
    }
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions::size(Self::DEFAULT_SPLIT_SIZE)
    }
}

/// What a read session is asked to cover.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadSessionRequest {
    pub table: TableId,
    /// Data columns to read, in this order; empty means all data columns in table order.
    pub required_data_columns: Vec<String>,
    /// Partition columns to deliver as data; empty means none.
    pub required_partition_columns: Vec<String>,
    /// Partitions to read (each may be a prefix, e.g. `pt=1` of `pt=1/region=x`);
    /// empty means all.
    pub required_partitions: Vec<PartitionSpec>,
    /// Bucket ids to read in Bucket mode; empty means all.
    pub required_bucket_ids: Vec<u32>,
    pub split_options: SplitOptions,
    pub arrow_options: ArrowOptions,
    /// A server-side SQL predicate. Backends that cannot evaluate it fail unless
    /// `filter_predicate_fallback` allows ignoring it.
    pub filter_predicate: String,
    pub filter_predicate_fallback: bool,
}

impl ReadSessionRequest {
    pub fn new(table: TableId) -> Self {
        ReadSessionRequest {
            table,
            ..Default::default()
        }
    }
}

/// Status of a session, as the service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SessionStatus {
    Init,
    Normal,
    Critical,
    Expired,
    Committing,
    Committed,
}

impl SessionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionStatus::Init => "INIT",
            SessionStatus::Normal => "NORMAL",
            SessionStatus::Critical => "CRITICAL",
            SessionStatus::Expired => "EXPIRED",
            SessionStatus::Committing => "COMMITTING",
            SessionStatus::Committed => "COMMITTED",
        }
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A planned read session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadSession {
    pub session_id: String,
    pub table: TableId,
    pub status: SessionStatus,
    /// Epoch milliseconds after which the session is expired unless refreshed.
    pub expiration_time_ms: i64,
    pub split_mode: SplitMode,
    /// Number of indexed splits, or -1 in RowOffset mode.
    pub splits_count: i64,
    /// Rows in the session (all splits together).
    pub record_count: i64,
    /// Estimated uncompressed bytes of the session.
    pub estimated_size: i64,
    /// The schema of what the session delivers: the required data columns, in order,
    /// then the required partition columns (both lists as table columns).
    pub schema: TableSchema,
    /// Arrow options the session was created with.
    pub arrow_options: ArrowOptions,
    /// The table version the session reads.
    pub table_version: u64,
    /// Bucket ids of the splits, in Bucket mode.
    pub split_bucket_ids: Vec<u32>,
}

/// Which rows of a session to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRange {
    /// An indexed split (Size, Parallelism, Bucket sessions).
    Split(u64),
    /// Rows `[offset, offset + count)` of the whole session (RowOffset sessions, and any
    /// session the backend can address by row).
    Rows { offset: u64, count: u64 },
}

/// A request for the rows of one split or range.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequest {
    pub table: TableId,
    pub session_id: String,
    pub range: ReadRange,
    /// Rows to skip at the start of the range (to resume a partly read split).
    pub skip_rows: u64,
    /// The most rows per delivered batch.
    pub max_batch_rows: usize,
    /// Further projection of the session's columns; empty means all, in session order.
    pub columns: Vec<String>,
}

impl ReadRequest {
    pub const DEFAULT_MAX_BATCH_ROWS: usize = 4096;

    pub fn new(table: TableId, session_id: impl Into<String>, range: ReadRange) -> Self {
        ReadRequest {
            table,
            session_id: session_id.into(),
            range,
            skip_rows: 0,
            max_batch_rows: Self::DEFAULT_MAX_BATCH_ROWS,
            columns: Vec::new(),
        }
    }
}

/// How a write session writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WriteMode {
    /// Session / stream / version, commit of closed streams.
    #[default]
    Batch,
    /// The block / attempt / commit-message model carried over V2.
    BatchCompatible,
}

/// What a write session is asked to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteSessionRequest {
    pub table: TableId,
    /// Static partition (all levels), a prefix (the rest comes from the data), or empty
    /// (every partition column comes from the data).
    pub partition: PartitionSpec,
    /// Replace the target (the partitions written, or the whole unpartitioned table).
    pub overwrite: bool,
    pub mode: WriteMode,
}

impl WriteSessionRequest {
    pub fn new(table: TableId) -> Self {
        WriteSessionRequest {
            table,
            ..Default::default()
        }
    }
}

/// A write session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteSession {
    pub session_id: String,
    pub table: TableId,
    pub status: SessionStatus,
    pub expiration_time_ms: i64,
    pub partition: PartitionSpec,
    pub overwrite: bool,
    pub mode: WriteMode,
    /// The columns the data must carry: the table's data columns, then the partition
    /// columns not fixed by the session's partition spec (dynamic partitioning).
    pub write_schema: TableSchema,
    pub streams: Vec<WriteStream>,
    /// The table version a commit produced, once committed.
    pub committed_version: Option<u64>,
}

/// Status of one write stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamStatus {
    Open,
    Closed,
}

/// One stream of a write session. A stream is identified by its id; re-creating the id
/// makes a new version that supersedes the older ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStream {
    pub stream_id: String,
    pub version: u64,
    pub status: StreamStatus,
    /// Exactly-once: the offset of the next row the stream expects.
    pub row_offset: u64,
    /// Exactly-once: the token every write must carry (empty when not in exactly-once mode).
    pub access_token: String,
    pub exactly_once: bool,
}

/// Rows for one stream.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub table: TableId,
    pub session_id: String,
    pub stream_id: String,
    pub version: u64,
    /// Exactly-once: the offset of the first row in `batches`. A request below the
    /// stream's offset is a replay and is acknowledged without being applied; above it,
    /// a gap, and rejected.
    pub row_offset: Option<u64>,
    pub access_token: Option<String>,
    pub batches: Vec<RecordBatch>,
}

/// The answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAck {
    /// The stream's next expected row offset after this write.
    pub next_row_offset: u64,
    /// Rows that this request added (0 for a replayed request).
    pub rows_written: u64,
    /// Whether the request was recognised as a replay and not applied again.
    pub duplicate: bool,
}

/// The result of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The table version that holds the committed rows.
    pub version: u64,
    /// Rows made visible.
    pub rows: u64,
}

/// Everything known about a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub table: TableId,
    pub schema: TableSchema,
    /// The current version (0 for a new, empty table).
    pub version: u64,
    pub row_count: u64,
    pub size_bytes: u64,
    pub partitions: Vec<PartitionInfo>,
    /// Epoch milliseconds of the last commit.
    pub last_modified_ms: i64,
}

/// One partition of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub spec: PartitionSpec,
    pub row_count: u64,
    pub size_bytes: u64,
}

/// Options of [`TableService::create_table`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateTableOptions {
    pub if_not_exists: bool,
}

/// How to use a backend well, for callers that choose on its behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHints {
    /// Concurrent read streams a reader uses when not told: a remote service caps each
    /// request's rate (about 10 MB/s), so parallel streams are the lever; a local one is
    /// bound by its disk and cores.
    pub default_streams: usize,
}

impl Default for ServiceHints {
    fn default() -> Self {
        ServiceHints {
            default_streams: 16,
        }
    }
}

/// One async interface over every place tables live.
///
/// All methods take `&self` and may be called concurrently. Sessions are identified by
/// their id together with their table, as on the wire.
#[async_trait]
pub trait TableService: Debug + Send + Sync + 'static {
    /// A short name of the backend, for messages ("local", "rest").
    fn name(&self) -> &'static str;

    /// What callers may want to know to use this backend well.
    fn hints(&self) -> ServiceHints {
        ServiceHints::default()
    }

    /// The current schema, version, size and partitions of a table.
    async fn describe_table(&self, table: &TableId) -> Result<TableInfo>;

    /// The current schema of a table (data and partition columns), by the cheapest call the
    /// backend has; by default from [`describe_table`](Self::describe_table).
    async fn table_schema(&self, table: &TableId) -> Result<TableSchema> {
        Ok(self.describe_table(table).await?.schema)
    }

    // ---- read sessions ----

    /// Plans a read session on the current version of the table.
    async fn create_read_session(&self, request: &ReadSessionRequest) -> Result<ReadSession>;

    /// The session's state; with `refresh`, pushes its expiration time forward.
    async fn get_read_session(
        &self,
        table: &TableId,
        session_id: &str,
        refresh: bool,
    ) -> Result<ReadSession>;

    /// Streams the rows of a split or row range of a session.
    async fn read(&self, request: &ReadRequest) -> Result<RecordBatchStream>;

    /// Up to `limit` rows of a table (or one partition), without a session.
    async fn preview(
        &self,
        table: &TableId,
        partition: Option<&PartitionSpec>,
        columns: &[String],
        limit: u64,
    ) -> Result<RecordBatchStream>;

    // ---- write sessions ----

    async fn create_write_session(&self, request: &WriteSessionRequest) -> Result<WriteSession>;

    async fn get_write_session(&self, table: &TableId, session_id: &str) -> Result<WriteSession>;

    /// Creates a stream version; the older versions of the stream are superseded.
    ///
    /// Without `stream_id` the backend picks a fresh id. With `version: None` the next version
    /// is created; with `Some(v)`: a `v` above the latest version creates `v`, the latest
    /// version itself (still open) is returned as it is (a retried create), and anything
    /// lower is refused.
    async fn create_write_stream_version(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        version: Option<u64>,
        exactly_once: bool,
    ) -> Result<WriteStream>;

    /// Creates the next version of a stream, or a fresh stream without `stream_id`.
    async fn create_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        exactly_once: bool,
    ) -> Result<WriteStream> {
        self.create_write_stream_version(table, session_id, stream_id, None, exactly_once)
            .await
    }

    /// The state of the latest version of a stream.
    async fn get_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<WriteStream>;

    /// Appends rows to a stream version.
    async fn write(&self, request: WriteRequest) -> Result<WriteAck>;

    /// Marks a stream version finished; only closed streams are committed.
    async fn close_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<WriteStream>;

    /// Makes the session's rows visible, atomically. Without `streams`, commits the latest
    /// version of every closed stream; with it, exactly the listed (id, version) pairs.
    /// Committing a session that is already committed returns the same result again.
    async fn commit_write_session(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo>;

    /// Discards everything the session wrote.
    async fn abort_write_session(&self, table: &TableId, session_id: &str) -> Result<()>;

    // ---- writer slots (provided) ----

    /// Claims writer slot `slot` (a `TableWriter`'s `slice_id`) of a table partition (empty:
    /// the whole table) until the returned guard is dropped, so that two live writers with
    /// the same slot fail instead of silently writing the same rows twice. A slot that is
    /// held is [`Error::AlreadyExists`] of kind `"writer slot"`.
    ///
    /// The provided implementation guards within this process (per backend name); backends
    /// that can do better (the local warehouse: an OS file lock, across processes) override it.
    async fn lock_writer_slot(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        slot: u64,
    ) -> Result<WriterSlot> {
        WriterSlot::in_process(self.name(), table, partition, slot)
    }

    // ---- catalog (provided; backends without a catalog refuse) ----

    async fn create_table(
        &self,
        table: &TableId,
        schema: &TableSchema,
        options: CreateTableOptions,
    ) -> Result<()> {
        let _ = (schema, options);
        Err(Error::NotSupported {
            message: format!("creating {table} on the {} backend", self.name()),
        })
    }

    async fn drop_table(&self, table: &TableId, if_exists: bool) -> Result<()> {
        let _ = if_exists;
        Err(Error::NotSupported {
            message: format!("dropping {table} on the {} backend", self.name()),
        })
    }

    async fn list_tables(&self, project: &str, schema: Option<&str>) -> Result<Vec<TableId>> {
        let _ = schema;
        Err(Error::NotSupported {
            message: format!("listing tables of {project} on the {} backend", self.name()),
        })
    }

    /// The partitions of a table (from [`Self::describe_table`]).
    async fn list_partitions(&self, table: &TableId) -> Result<Vec<PartitionInfo>> {
        Ok(self.describe_table(table).await?.partitions)
    }

    /// Adds an empty partition (every level named). An existing one is an `AlreadyExists`
    /// error unless `if_not_exists`.
    async fn create_partition(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        if_not_exists: bool,
    ) -> Result<()> {
        let _ = (partition, if_not_exists);
        Err(Error::NotSupported {
            message: format!(
                "creating partitions of {table} on the {} backend",
                self.name()
            ),
        })
    }

    async fn drop_partition(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        if_exists: bool,
    ) -> Result<()> {
        let _ = (partition, if_exists);
        Err(Error::NotSupported {
            message: format!(
                "dropping partitions of {table} on the {} backend",
                self.name()
            ),
        })
    }
}

/// The latest version of a write stream, as [`choose_stream_version`] weighs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatestVersion {
    pub version: u64,
    pub closed: bool,
    pub exactly_once: bool,
}

/// What creating a write stream version means, by the rules every backend shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamVersionChoice {
    /// Create this version.
    New(u64),
    /// A retried create of the latest version, still open: answer it again.
    Latest,
}

/// The version a create of `stream_id` makes: `requested`, else the one after `latest`. A
/// requested version at or below the latest is refused (`SUPERSEDED`), except a retried
/// create of the open latest version with the same exactly-once setting.
pub(crate) fn choose_stream_version(
    session_id: &str,
    stream_id: &str,
    requested: Option<u64>,
    latest: Option<LatestVersion>,
    exactly_once: bool,
) -> Result<StreamVersionChoice> {
    Ok(StreamVersionChoice::New(match (requested, latest) {
        (None, None) => 0,
        (None, Some(l)) => l.version.saturating_add(1),
        (Some(v), None) => v,
        (Some(v), Some(l)) if v > l.version => v,
        (Some(v), Some(l)) if v == l.version && !l.closed && l.exactly_once == exactly_once => {
            return Ok(StreamVersionChoice::Latest);
        }
        (Some(v), Some(l)) => {
            return Err(Error::InvalidState {
                session_id: session_id.into(),
                state: "SUPERSEDED".into(),
                message: format!(
                    "stream {stream_id} version {v} cannot be created: version {} exists{}",
                    l.version,
                    if l.closed { " and is closed" } else { "" }
                ),
            });
        }
    }))
}

/// Converts an Arrow time unit to the service's option string.
pub fn time_unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "second",
        TimeUnit::Millisecond => "milli",
        TimeUnit::Microsecond => "micro",
        TimeUnit::Nanosecond => "nano",
    }
}

/// Parses the service's time unit option string (`second`, `milli`, `micro`, `nano`).
pub fn parse_time_unit(s: &str) -> Result<TimeUnit> {
    match s.to_ascii_lowercase().as_str() {
        "second" | "s" => Ok(TimeUnit::Second),
        "milli" | "ms" | "millisecond" => Ok(TimeUnit::Millisecond),
        "micro" | "us" | "microsecond" => Ok(TimeUnit::Microsecond),
        "nano" | "ns" | "nanosecond" => Ok(TimeUnit::Nanosecond),
        _ => Err(Error::invalid(
            "time unit",
            format!("`{s}` (expected second, milli, micro or nano)"),
        )),
    }
}

/// A claimed writer slot (see [`TableService::lock_writer_slot`]); dropping it releases the
/// slot.
pub struct WriterSlot(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>);

impl Debug for WriterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterSlot")
    }
}

impl WriterSlot {
    /// A slot held by `guard`, whatever releases it when dropped (a file lock...).
    pub fn new(guard: impl std::any::Any + Send + Sync) -> Self {
        WriterSlot(Box::new(guard))
    }

    /// Claims a slot in a registry of this process, keyed by backend name, table, partition
    /// and slot.
    pub fn in_process(
        backend: &str,
        table: &TableId,
        partition: &PartitionSpec,
        slot: u64,
    ) -> Result<WriterSlot> {
        static HELD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        struct Held(String);
        impl Drop for Held {
            fn drop(&mut self) {
                let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
                held.retain(|k| k != &self.0);
            }
        }
        let key = format!("{backend}\u{0}{table}\u{0}{partition}\u{0}{slot}");
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(&key) {
            return Err(writer_slot_taken(table, partition, slot));
        }
        held.push(key.clone());
        Ok(WriterSlot::new(Held(key)))
    }
}

/// The error for a writer slot another live writer holds.
pub fn writer_slot_taken(table: &TableId, partition: &PartitionSpec, slot: u64) -> Error {
    let place = if partition.is_empty() {
        format!("table {table}")
    } else {
        format!("partition {partition} of table {table}")
    };
    Error::AlreadyExists {
        kind: ObjectKind::WriterSlot,
        name: format!(
            "slice_id {slot} of {place} is held by another live TableWriter; give each \
             concurrent writer its own slice_id"
        ),
    }
}
