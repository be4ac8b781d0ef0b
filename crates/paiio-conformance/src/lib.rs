//! The backend-independent conformance suite of paiio-storage (not published).
//!
//! Every [`TableService`] backend must pass the same suite (the `object_store` model). A
//! backend's test file builds a [`Backend`] and expands
//! [`conformance_tests!`](crate::conformance_tests), which makes one `#[tokio::test]` per
//! capability:
//!
//! ```ignore
//! fn backend() -> paiio_conformance::Backend { /* a fresh service, clock, guard */ }
//! paiio_conformance::conformance_tests!(backend());
//! // or, when building the backend is async:
//! paiio_conformance::conformance_tests!(async make_backend());
//! ```
//!
//! Each capability is a `pub async fn(&Backend)` here that creates its own uniquely named
//! tables, so the tests may run in parallel against one service; [`run_all`] runs them all
//! in turn. Capabilities that need to move time (session expiry) use [`Backend::clock`] and
//! are skipped, with a note on stderr, when a backend has none.
//!
//! The data comes from [`datagen`]: rows with a unique id and a content hash, so that every
//! read can be checked for lost, duplicated and corrupted rows.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use futures::TryStreamExt;

use paiio_storage::clock::{Clock, ManualClock};
use paiio_storage::error::Result;
use paiio_storage::service::{
    CommitInfo, ReadRange, ReadRequest, ReadSession, ReadSessionRequest, RecordBatchStream,
    SplitMode, TableInfo, TableService, WriteRequest, WriteSession, WriteSessionRequest,
    WriteStream,
};
use paiio_storage::types::{Column, TableSchema};
use paiio_storage::uri::{PartitionSpec, TableId};

/// Asserts that `$result` is an error matching `$pattern`; panics naming what was expected
/// otherwise. Evaluates to the error.
macro_rules! expect_err {
    ($result:expr, $pattern:pat, $($expected:tt)+) => {{
        match $result {
            Ok(value) => panic!(
                "expected {} but the call succeeded with {:?}",
                format!($($expected)+),
                value
            ),
            Err(e) => {
                if !matches!(e, $pattern) {
                    panic!("expected {} but got the error {:?} ({})", format!($($expected)+), e, e);
                }
                e
            }
        }
    }};
}

pub mod datagen;
mod forward;
mod read;
mod tables;
pub mod tunnel;
mod write;

#[doc(hidden)]
pub use forward::__fwd;
pub use read::*;
pub use tables::*;
pub use write::*;

use datagen::DataGen;

/// The name and type of every field of `schema`.
fn field_types(schema: &arrow_schema::Schema) -> Vec<(String, arrow_schema::DataType)> {
    let fields = schema.fields().iter();
    fields
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect()
}

/// A backend under test.
#[derive(Clone)]
pub struct Backend {
    pub service: Arc<dyn TableService>,
    /// The project the suite creates its tables in.
    pub project: String,
    /// The clock the backend expires sessions by; `None` skips the expiry capabilities.
    pub clock: Option<ManualClock>,
    /// Whatever must live as long as the backend (a temporary directory, a server handle).
    pub guard: Option<Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("service", &self.service)
            .field("project", &self.project)
            .field("clock", &self.clock)
            .field("guard", &self.guard.as_ref().map(|_| "..."))
            .finish()
    }
}

static TABLE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Backend {
    pub fn new(service: Arc<dyn TableService>, project: impl Into<String>) -> Self {
        Backend {
            service,
            project: project.into(),
            clock: None,
            guard: None,
        }
    }

    /// The clock the service expires sessions by.
    pub fn with_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Keeps `guard` alive as long as the backend.
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Arc::new(guard));
        self
    }

    /// A table id no other test uses: `{prefix}_{n}_{random}` in the default schema.
    pub fn table_id(&self, prefix: &str) -> TableId {
        self.table_id_in(None, prefix)
    }

    /// Like [`Self::table_id`], in `schema`.
    pub fn table_id_in(&self, schema: Option<&str>, prefix: &str) -> TableId {
        let n = TABLE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let random = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{prefix}_{n}_{}", &random[..10]);
        TableId::new(&self.project, schema, &name).expect("generated table names are valid")
    }

    /// Creates a new uniquely named table.
    pub async fn create_table(&self, prefix: &str, schema: &TableSchema) -> TableId {
        let table = self.table_id(prefix);
        self.service
            .create_table(&table, schema, Default::default())
            .await
            .unwrap_or_else(|e| panic!("expected to create table {table}: {e}"));
        table
    }

    /// Creates a table of `gen`'s columns and the given partition columns (`(name, type)`).
    pub async fn create_gen_table(
        &self,
        prefix: &str,
        gen_: &DataGen,
        partition_columns: &[(&str, &str)],
    ) -> TableId {
        let partition_columns = partition_columns
            .iter()
            .map(|(n, t)| {
                Column::new(
                    *n,
                    t.parse()
                        .unwrap_or_else(|e| panic!("partition type {t}: {e}")),
                )
            })
            .collect();
        self.create_table(prefix, &gen_.table_schema(partition_columns))
            .await
    }

    /// Creates a write session.
    pub async fn write_session(
        &self,
        table: &TableId,
        partition: &str,
        overwrite: bool,
    ) -> WriteSession {
        let request = WriteSessionRequest {
            partition: spec(partition),
            overwrite,
            ..WriteSessionRequest::new(table.clone())
        };
        self.service
            .create_write_session(&request)
            .await
            .unwrap_or_else(|e| {
                panic!("expected a write session on {table} (partition `{partition}`): {e}")
            })
    }

    /// Creates a stream (with `stream_id` or a fresh one), writes `batches` in one request
    /// each, and closes it.
    pub async fn write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        batches: Vec<RecordBatch>,
    ) -> WriteStream {
        let stream = self
            .service
            .create_write_stream(table, session_id, stream_id, false)
            .await
            .unwrap_or_else(|e| panic!("expected a write stream in session {session_id}: {e}"));
        for batch in batches {
            self.write(table, session_id, &stream, batch)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "expected a write to stream {} v{} to succeed: {e}",
                        stream.stream_id, stream.version
                    )
                });
        }
        self.service
            .close_write_stream(table, session_id, &stream.stream_id, stream.version)
            .await
            .unwrap_or_else(|e| panic!("expected to close stream {}: {e}", stream.stream_id))
    }

    /// Creates a stream (with `stream_id` or a fresh one), not exactly-once; panics on failure.
    pub async fn open_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
    ) -> WriteStream {
        self.service
            .create_write_stream(table, session_id, stream_id, false)
            .await
            .unwrap()
    }

    /// The state of the latest version of a stream; panics on failure.
    pub async fn stream_state(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> WriteStream {
        self.service
            .get_write_stream(table, session_id, stream_id)
            .await
            .unwrap()
    }

    /// Closes a stream version; panics on failure.
    pub async fn close_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
        version: u64,
    ) -> WriteStream {
        self.service
            .close_write_stream(table, session_id, stream_id, version)
            .await
            .unwrap()
    }

    /// The state of a write session; panics on failure.
    pub async fn session_state(&self, table: &TableId, session_id: &str) -> WriteSession {
        self.service
            .get_write_session(table, session_id)
            .await
            .unwrap()
    }

    /// Describes a table; panics on failure.
    pub async fn describe(&self, table: &TableId) -> TableInfo {
        self.service.describe_table(table).await.unwrap()
    }

    /// Writes one batch to a stream version, without row offset.
    pub async fn write(
        &self,
        table: &TableId,
        session_id: &str,
        stream: &WriteStream,
        batch: RecordBatch,
    ) -> Result<paiio_storage::service::WriteAck> {
        self.service
            .write(WriteRequest {
                table: table.clone(),
                session_id: session_id.to_string(),
                stream_id: stream.stream_id.clone(),
                version: stream.version,
                row_offset: None,
                access_token: None,
                batches: vec![batch],
            })
            .await
    }

    /// One session, one stream, `batches`, commit.
    pub async fn write_and_commit(
        &self,
        table: &TableId,
        partition: &str,
        overwrite: bool,
        batches: Vec<RecordBatch>,
    ) -> CommitInfo {
        let session = self.write_session(table, partition, overwrite).await;
        self.write_stream(table, &session.session_id, None, batches)
            .await;
        self.commit(table, &session.session_id).await
    }

    /// Commits every closed stream of a session; panics on failure.
    pub async fn commit(&self, table: &TableId, session_id: &str) -> CommitInfo {
        self.service
            .commit_write_session(table, session_id, None)
            .await
            .unwrap_or_else(|e| {
                panic!("expected the commit of session {session_id} to succeed: {e}")
            })
    }

    /// Closes `streams` (each at its version), in order, then commits the session as
    /// [`Self::commit`] does; panics on failure.
    pub async fn close_and_commit(
        &self,
        table: &TableId,
        session_id: &str,
        streams: &[&WriteStream],
    ) -> CommitInfo {
        for stream in streams {
            self.service
                .close_write_stream(table, session_id, &stream.stream_id, stream.version)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "expected to close stream {} v{}: {e}",
                        stream.stream_id, stream.version
                    )
                });
        }
        self.commit(table, session_id).await
    }

    /// Creates a read session; panics on failure.
    pub async fn read_session(&self, request: &ReadSessionRequest) -> ReadSession {
        self.service
            .create_read_session(request)
            .await
            .unwrap_or_else(|e| panic!("expected a read session for {request:?}: {e}"))
    }

    /// Runs a read to its end.
    pub async fn read(&self, request: &ReadRequest) -> Result<Vec<RecordBatch>> {
        collect(self.service.read(request).await?).await
    }

    /// Reads every split of a session (or its whole row range in RowOffset mode), split by
    /// split.
    pub async fn read_splits(&self, session: &ReadSession) -> Result<Vec<Vec<RecordBatch>>> {
        let ranges: Vec<ReadRange> = if session.split_mode == SplitMode::RowOffset {
            vec![ReadRange::Rows {
                offset: 0,
                count: session.record_count.max(0) as u64,
            }]
        } else {
            (0..session.splits_count.max(0) as u64)
                .map(ReadRange::Split)
                .collect()
        };
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            out.push(
                self.read(&ReadRequest::new(
                    session.table.clone(),
                    &session.session_id,
                    range,
                ))
                .await?,
            );
        }
        Ok(out)
    }

    /// Every row of a session, split after split.
    pub async fn read_session_rows(&self, session: &ReadSession) -> Result<Vec<RecordBatch>> {
        Ok(self
            .read_splits(session)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// A new read session of the whole table, with the default options.
    pub async fn table_session(&self, table: &TableId) -> ReadSession {
        self.read_session(&ReadSessionRequest::new(table.clone()))
            .await
    }

    /// Every row of a table, through a new default session.
    pub async fn read_table(&self, table: &TableId) -> Vec<RecordBatch> {
        let session = self.table_session(table).await;
        self.read_session_rows(&session)
            .await
            .unwrap_or_else(|e| panic!("expected to read every split of {table}: {e}"))
    }

    /// Every row of a table, in partitions matching `partition`, with the table's partition
    /// columns as data.
    pub async fn read_table_with_partitions(
        &self,
        table: &TableId,
        partitions: &[&str],
    ) -> Vec<RecordBatch> {
        let info = self.service.describe_table(table).await.unwrap();
        let request = ReadSessionRequest {
            required_partition_columns: info
                .schema
                .partition_columns
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            required_partitions: partitions.iter().map(|p| spec(p)).collect(),
            ..ReadSessionRequest::new(table.clone())
        };
        let session = self.read_session(&request).await;
        self.read_session_rows(&session)
            .await
            .unwrap_or_else(|e| panic!("expected to read every split of {table}: {e}"))
    }

    /// Moves the backend's clock just past `expiration_time_ms`. Returns false (and the
    /// caller should skip) when the backend has no clock.
    pub fn expire(&self, expiration_time_ms: i64) -> bool {
        match &self.clock {
            Some(clock) => {
                let now = clock.now_ms();
                clock.advance_ms((expiration_time_ms - now).max(0) + 1_000);
                true
            }
            None => false,
        }
    }

    /// Moves the backend's clock forward by `ms`.
    pub fn advance(&self, ms: i64) -> bool {
        match &self.clock {
            Some(clock) => {
                clock.advance_ms(ms);
                true
            }
            None => false,
        }
    }

    /// The backend's current time (its clock, or the system clock).
    pub fn now_ms(&self) -> i64 {
        match &self.clock {
            Some(clock) => clock.now_ms(),
            None => paiio_storage::clock::SystemClock.now_ms(),
        }
    }
}

/// A local warehouse in a new temporary directory (removed when the last clone of the
/// backend is dropped), on a [`ManualClock`], in project `conformance`.
pub fn local_backend() -> Backend {
    let dir = tempfile::tempdir().expect("a temporary directory for the warehouse");
    let clock = ManualClock::new();
    let warehouse = paiio_storage::local::LocalWarehouse::builder(dir.path().join("warehouse"))
        .clock(Arc::new(clock.clone()))
        .open()
        .expect("the local warehouse opens in a temporary directory");
    Backend::new(Arc::new(warehouse), "conformance")
        .with_clock(clock)
        .with_guard(dir)
}

/// Parses a partition spec; panics on a bad one (tests write them literally).
pub fn spec(text: &str) -> PartitionSpec {
    PartitionSpec::parse(text).unwrap_or_else(|e| panic!("partition spec {text:?}: {e}"))
}

/// Collects a batch stream, stopping at the first error.
pub async fn collect(stream: RecordBatchStream) -> Result<Vec<RecordBatch>> {
    stream.try_collect().await
}

/// The total rows of `batches`.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Notes on stderr that a capability was skipped.
pub(crate) fn skip(capability: &str, why: &str) {
    eprintln!("conformance: skipping `{capability}`: {why}");
}

/// Calls `__paiio_conformance_each!` with every capability name (the one list of them).
#[doc(hidden)]
#[macro_export]
macro_rules! __paiio_conformance_capabilities {
    ($($mode:tt)*) => {
        $crate::__paiio_conformance_each! { ($($mode)*)
            // tables and partitions
            create_table,
            create_table_rejects_invalid_schema,
            column_names_case_insensitive,
            invalid_names_rejected,
            drop_table,
            list_tables,
            describe_table,
            list_partitions,
            drop_partition,
            partitions_created_by_writes,
            // read sessions
            read_required_columns,
            read_partition_columns,
            read_required_partitions,
            split_size,
            split_parallelism,
            split_row_offset,
            split_bucket_rejected,
            read_empty_table,
            read_max_batch_rows,
            read_skip_rows,
            read_projection,
            arrow_time_units,
            arrow_large_string,
            read_session_pins_version,
            read_session_of_dropped_table,
            read_session_expiry,
            read_session_refresh,
            unknown_sessions,
            preview,
            // write sessions
            write_stream_ids,
            write_stream_versions,
            write_stream_requested_versions,
            close_and_commit_all,
            commit_explicit_streams,
            commit_explicit_duplicate_pairs,
            commit_explicit_superseded_version,
            commit_with_open_stream_fails,
            abort,
            commit_is_atomic,
            commit_idempotent,
            overwrite_table,
            overwrite_partition,
            static_partition,
            dynamic_partitions,
            partial_static_partition,
            partition_values_typed,
            exactly_once_duplicates,
            exactly_once_gap,
            exactly_once_access_token,
            exactly_once_resume,
            type_mismatch,
            unknown_extra_column,
            duplicate_data_column_rejected,
            missing_column,
            not_null_violation,
            decimal_out_of_precision_rejected,
            write_after_commit_or_abort,
            write_session_expiry,
            datagen_round_trip,
        }
    };
}

/// Expands to one `#[tokio::test]` per capability, each on a fresh backend made by the
/// expression (evaluated once per test). `async EXPR` awaits the expression. The calling
/// crate needs `tokio` (with `macros` and `rt`) among its dev-dependencies.
#[macro_export]
macro_rules! conformance_tests {
    (async $make:expr) => {
        $crate::__paiio_conformance_capabilities!(async $make);
    };
    ($make:expr) => {
        $crate::__paiio_conformance_capabilities!(sync $make);
    };
}

/// What `conformance_tests!` and [`run_all`] make of each capability.
#[doc(hidden)]
#[macro_export]
macro_rules! __paiio_conformance_each {
    ((async $make:expr) $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() {
                let backend: $crate::Backend = $make.await;
                $crate::$name(&backend).await;
            }
        )*
    };
    ((sync $make:expr) $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() {
                let backend: $crate::Backend = $make;
                $crate::$name(&backend).await;
            }
        )*
    };
    ((run $backend:expr) $($name:ident),* $(,)?) => {{
        let mut failures: Vec<String> = Vec::new();
        $(
            let run = ::futures::FutureExt::catch_unwind(::std::panic::AssertUnwindSafe($crate::$name($backend)));
            if let Err(panic) = run.await {
                failures.push(format!("{}: {}", stringify!($name), $crate::panic_message(&*panic)));
            }
        )*
        failures
    }};
}

/// Runs every capability against one backend, in turn, then panics listing every
/// capability that failed (each one's failure does not stop the others).
pub async fn run_all(backend: &Backend) {
    let failures: Vec<String> = crate::__paiio_conformance_capabilities!(run backend);
    if !failures.is_empty() {
        panic!(
            "expected every capability to pass; {} failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// The message of a caught panic.
#[doc(hidden)]
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "(a panic without a message)".to_string()
    }
}
