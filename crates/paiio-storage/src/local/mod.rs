//! The embedded local warehouse: a [`TableService`] over a directory.
//!
//! Layout under the root:
//!
//! ```text
//! ROOT/
//!   .paiio/read_sessions/ID.json       read sessions (any process can serve them)
//!   PROJECT/SCHEMA/TABLE/
//!     _manifest/00000000000000000007.json   one immutable file per table version: a delta
//!                                           of the files an append added, or a snapshot
//!     _manifest/00000000000000000007.checkpoint.json   optional snapshot of a delta version
//!     data/UUID.arrow                       Arrow IPC files (LZ4 or ZSTD bodies)
//!     _write/SESSION/session.json           write session state (and the process that owns it)
//!     _write/SESSION/streams/STREAM.json    per-stream versions, offsets and staged files
//! ```
//!
//! Data files are written straight into `data/` and become visible only when a manifest
//! version that lists them is published (see `manifest.rs`). A read session pins the version it
//! was created on, so it sees a consistent snapshot whatever commits follow. Parsed read
//! sessions are cached in memory, checked against their file's inode, size and modification
//! time, so a read costs one `stat` however many splits the session has.
//!
//! A write that fails removes the data files it wrote. [`LocalWarehouse::vacuum`] removes
//! expired sessions, old versions and files nothing needs (see `vacuum.rs`).

mod files;
pub(crate) mod manifest;
mod owner;
mod vacuum;
mod write;

/// The checks and conversions of written rows, shared with the Tunnel client.
#[cfg(feature = "rest")]
pub(crate) use write::conform;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use files::FileCompression;
use files::{ColumnSource, FileCache, OutputShape, Piece, RangeReader};
use manifest::{DataFile, Manifest};
pub use vacuum::{VacuumOptions, VacuumReport};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ObjectKind, Result};
use crate::service::*;
use crate::types::{ArrowOptions, Column, TableSchema};
use crate::uri::{DEFAULT_SCHEMA, PartitionSpec, TableId, validate_name};

const META_DIR: &str = ".paiio";
const READ_SESSIONS_DIR: &str = "read_sessions";
const TRASH_DIR: &str = "trash";
/// Under `.paiio/`: touched by each sweep of expired read session files.
const SWEEP_MARKER: &str = "read_sessions.swept";
/// The least time between two sweeps of expired read session files, over all processes.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// How many times a commit rebases onto concurrent commits before giving up.
const MAX_COMMIT_ATTEMPTS: usize = 1000;

/// A [`TableService`] over a directory of tables.
#[derive(Debug, Clone)]
pub struct LocalWarehouse {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    clock: Arc<dyn Clock>,
    compression: FileCompression,
    session_ttl_ms: i64,
    revive_expired_read_sessions: bool,
    /// Recorded in the write sessions this process creates (none when not recorded).
    session_owner: Option<owner::SessionOwner>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    manifests: Mutex<HashMap<(PathBuf, u64), Arc<Manifest>>>,
    /// Parsed read sessions by id, so a read does not parse a session of many splits again.
    read_sessions: Mutex<HashMap<String, CachedReadSession>>,
    /// How many times a read session file was parsed (tests check the cache with it).
    read_session_parses: std::sync::atomic::AtomicU64,
    sessions_created: std::sync::atomic::AtomicU64,
    /// Open data files and decoded edge batches, shared by the reads.
    files: Arc<FileCache>,
}

/// A parsed read session and where it lives.
#[derive(Debug, Clone)]
struct CachedReadSession {
    state: Arc<ReadSessionState>,
    backing: Backing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Backing {
    /// The session file as it was when parsed: a refresh (by any process) replaces the file,
    /// which changes its inode, size or modification time.
    File(FileStamp),
    /// The warehouse could not take the session file (a full or read-only disk): the session
    /// lives in this process only, and is lost when it ends.
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

/// The cache of parsed read sessions is emptied (but for sessions kept in memory only) when
/// it holds more sessions or splits than this.
const READ_SESSION_CACHE_ENTRIES: usize = 1024;
const READ_SESSION_CACHE_SPLITS: usize = 4 << 20;

/// Options of a [`LocalWarehouse`].
#[derive(Debug, Clone)]
pub struct LocalWarehouseBuilder {
    root: PathBuf,
    clock: Arc<dyn Clock>,
    compression: FileCompression,
    session_ttl_ms: i64,
    revive_expired_read_sessions: bool,
    record_session_owner: bool,
}

impl LocalWarehouseBuilder {
    /// The clock sessions expire by (tests inject a [`crate::clock::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Body compression of new data files (default LZ4).
    pub fn compression(mut self, compression: FileCompression) -> Self {
        self.compression = compression;
        self
    }

    /// How long sessions live without a refresh (default 24 hours).
    pub fn session_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.session_ttl_ms = ttl.as_millis() as i64;
        self
    }

    /// Whether `get_read_session(refresh = true)` revives an expired read session (default
    /// off: refreshing an expired session is `SessionExpired`, as the conformance suite
    /// expects). A read session pins its data version, which stays readable, so reviving it
    /// is safe; jobs that read for days want it, and the real service's behaviour is unknown,
    /// hence a choice (the REST client's fault suites turn it on).
    pub fn revive_expired_read_sessions(mut self, revive: bool) -> Self {
        self.revive_expired_read_sessions = revive;
        self
    }

    /// Whether write sessions record the process that creates them (default on), so vacuum
    /// removes a session as soon as its process is gone (a killed import) instead of when it
    /// expires. A server, whose sessions belong to remote clients that resume them after a
    /// restart, turns it off. Owners are known on Linux only.
    pub fn record_session_owner(mut self, record: bool) -> Self {
        self.record_session_owner = record;
        self
    }

    /// Opens the warehouse, creating the root directory if needed.
    pub fn open(self) -> Result<LocalWarehouse> {
        let meta = self.root.join(META_DIR).join(READ_SESSIONS_DIR);
        fs::create_dir_all(&meta).map_err(|e| Error::io(&meta, e))?;
        let root = fs::canonicalize(&self.root).map_err(|e| Error::io(&self.root, e))?;
        Ok(LocalWarehouse {
            inner: Arc::new(Inner {
                root,
                clock: self.clock,
                compression: self.compression,
                session_ttl_ms: self.session_ttl_ms,
                revive_expired_read_sessions: self.revive_expired_read_sessions,
                session_owner: if self.record_session_owner {
                    owner::SessionOwner::this_process()
                } else {
                    None
                },
                locks: Mutex::new(HashMap::new()),
                manifests: Mutex::new(HashMap::new()),
                read_sessions: Mutex::new(HashMap::new()),
                read_session_parses: std::sync::atomic::AtomicU64::new(0),
                sessions_created: std::sync::atomic::AtomicU64::new(0),
                files: Arc::new(FileCache::default()),
            }),
        })
    }
}

impl LocalWarehouse {
    /// Opens (creating if needed) the warehouse at `root` with default options.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::builder(root).open()
    }

    pub fn builder(root: impl Into<PathBuf>) -> LocalWarehouseBuilder {
        LocalWarehouseBuilder {
            root: root.into(),
            clock: Arc::new(SystemClock),
            compression: FileCompression::default(),
            session_ttl_ms: 24 * 3600 * 1000,
            revive_expired_read_sessions: false,
            record_session_owner: true,
        }
    }

    /// The warehouse directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs blocking file work off the async executor when there is one.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || f(&inner)).await
    }
}

/// Runs `f` on tokio's blocking pool when called inside a runtime, else inline.
async fn run_blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => match handle.spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Transient {
                message: format!("blocking task cancelled: {e}"),
                retryable: true,
                source: None,
            }),
        },
        Err(_) => f(),
    }
}

/// Session and stream ids come from the network: only plain ids are ever used in a path.
fn check_id(kind: &'static str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            kind,
            format!("{id:?}: ids are 1 to 128 letters, digits, '-' or '_'"),
        ))
    }
}

fn new_session_id() -> String {
    let date = chrono::Utc::now().format("%Y%m%d%H%M%S");
    format!("{date}{}", uuid::Uuid::new_v4().simple())
}

/// A read session as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReadSessionState {
    session_id: String,
    table: TableId,
    /// Which incarnation of the table (a dropped and re-created table is another one).
    table_uuid: String,
    version: u64,
    expiration_ms: i64,
    partitions: Vec<PartitionSpec>,
    split_mode: SplitMode,
    /// Row ranges `[start, end)` of the indexed splits (empty in RowOffset mode).
    splits: Vec<(u64, u64)>,
    record_count: u64,
    estimated_size: u64,
    /// What the session delivers: data columns then partition columns.
    schema: TableSchema,
    arrow_options: ArrowOptions,
}

impl ReadSessionState {
    fn to_session(&self, now_ms: i64) -> ReadSession {
        ReadSession {
            session_id: self.session_id.clone(),
            table: self.table.clone(),
            status: if now_ms > self.expiration_ms {
                SessionStatus::Expired
            } else {
                SessionStatus::Normal
            },
            expiration_time_ms: self.expiration_ms,
            split_mode: self.split_mode,
            splits_count: if self.split_mode == SplitMode::RowOffset {
                -1
            } else {
                self.splits.len() as i64
            },
            record_count: self.record_count as i64,
            estimated_size: self.estimated_size as i64,
            schema: self.schema.clone(),
            arrow_options: self.arrow_options,
            table_version: self.version,
            split_bucket_ids: Vec::new(),
        }
    }
}

impl Inner {
    fn table_dir(&self, table: &TableId) -> PathBuf {
        self.root
            .join(&table.project)
            .join(table.schema_or_default())
            .join(&table.table)
    }

    fn lock(&self, name: String) -> Arc<Mutex<()>> {
        self.locks.lock().entry(name).or_default().clone()
    }

    /// An exclusive lock on `path` (created if needed) that holds across threads and
    /// processes until the guard is dropped.
    fn lock_file(&self, path: &Path) -> Result<FileLock> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.lock().map_err(|e| Error::io(path, e))?;
        Ok(FileLock(file))
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Version `version` of the table in `dir`, materialised from its snapshot and deltas;
    /// cached, and built from the nearest cached version below it where there is one (loading
    /// the version after a cached one reads one delta).
    fn manifest(&self, dir: &Path, version: u64) -> Result<Arc<Manifest>> {
        let key = (dir.to_path_buf(), version);
        if let Some(m) = self.manifests.lock().get(&key) {
            return Ok(m.clone());
        }
        self.materialise(dir, version, false)
    }

    fn materialise(&self, dir: &Path, version: u64, fresh: bool) -> Result<Arc<Manifest>> {
        let cached = |v: u64| self.manifests.lock().get(&(dir.to_path_buf(), v)).cloned();
        let m = manifest::materialise(dir, version, &cached, fresh)?;
        let mut cache = self.manifests.lock();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert((dir.to_path_buf(), version), m.clone());
        Ok(m)
    }

    /// The latest version of an existing table, read from disk (not from the cache, which
    /// may hold a dropped incarnation's manifest of the same number).
    fn current(&self, table: &TableId) -> Result<(PathBuf, Arc<Manifest>)> {
        let dir = self.table_dir(table);
        let version = manifest::latest_version(&dir)?
            .ok_or_else(|| Error::not_found(ObjectKind::Table, table.to_string()))?;
        let m = self.materialise(&dir, version, true)?;
        Ok((dir, m))
    }

    /// Publishes the next version made by `change` from the latest one, rebasing onto
    /// concurrent commits. `change` returns `Ok(None)` to stop without a new version
    /// (used by idempotent commits that find themselves already applied).
    fn commit_with<F>(&self, table: &TableId, mut change: F) -> Result<Manifest>
    where
        F: FnMut(&Path, &Manifest) -> Result<Option<Manifest>>,
    {
        let dir = self.table_dir(table);
        let lock = self.lock(format!("commit:{}", dir.display()));
        let _guard = lock.lock();
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let latest = manifest::latest_version(&dir)?
                .ok_or_else(|| Error::not_found(ObjectKind::Table, table.to_string()))?;
            let base = self.manifest(&dir, latest)?;
            let Some(mut next) = change(&dir, &base)? else {
                return Ok((*base).clone());
            };
            next.version = latest + 1;
            next.committed_ms = self.now();
            if manifest::publish(&dir, &next, Some(&base))? {
                self.manifests
                    .lock()
                    .insert((dir.clone(), next.version), Arc::new(next.clone()));
                return Ok(next);
            }
            // Another process published this version first: rebase and try again.
        }
        Err(Error::Conflict {
            table: table.to_string(),
            message: format!("gave up after {MAX_COMMIT_ATTEMPTS} concurrent commits"),
        })
    }

    fn read_session_path(&self, session_id: &str) -> PathBuf {
        self.root
            .join(META_DIR)
            .join(READ_SESSIONS_DIR)
            .join(format!("{session_id}.json"))
    }

    /// A read session: from the cache while its file is unchanged (one `stat`), else parsed.
    fn load_read_session(
        &self,
        table: &TableId,
        session_id: &str,
    ) -> Result<Arc<ReadSessionState>> {
        check_id("read session", session_id)?;
        let path = self.read_session_path(session_id);
        let stamp = match fs::metadata(&path) {
            Ok(meta) => Some(FileStamp::of(&meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(path, e)),
        };
        let cached = self.read_sessions.lock().get(session_id).cloned();
        let state = match (cached, stamp) {
            (Some(c), _) if c.backing == Backing::Memory => c.state,
            (Some(c), Some(stamp)) if c.backing == Backing::File(stamp) => c.state,
            (_, None) => {
                self.read_sessions.lock().remove(session_id);
                return Err(Error::not_found(ObjectKind::ReadSession, session_id));
            }
            (_, Some(stamp)) => {
                let bytes = match fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::not_found(ObjectKind::ReadSession, session_id));
                    }
                    Err(e) => return Err(Error::io(path, e)),
                };
                self.read_session_parses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let state: ReadSessionState =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                        location: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                // A file replaced between the `stat` and the read is parsed again next time.
                self.cache_read_session(Arc::new(state), Backing::File(stamp))
            }
        };
        if &state.table != table {
            return Err(Error::not_found(
                ObjectKind::ReadSession,
                format!("{session_id} of table {table}"),
            ));
        }
        Ok(state)
    }

    fn cache_read_session(
        &self,
        state: Arc<ReadSessionState>,
        backing: Backing,
    ) -> Arc<ReadSessionState> {
        let mut cache = self.read_sessions.lock();
        let splits: usize = cache.values().map(|c| c.state.splits.len()).sum();
        if cache.len() >= READ_SESSION_CACHE_ENTRIES
            || splits + state.splits.len() > READ_SESSION_CACHE_SPLITS
        {
            cache.retain(|_, c| c.backing == Backing::Memory);
        }
        cache.insert(
            state.session_id.clone(),
            CachedReadSession {
                state: state.clone(),
                backing,
            },
        );
        state
    }

    /// Records a read session in its file. A warehouse whose disk takes no more writes (full
    /// or read-only) can still be read: the session is then kept in this process's memory.
    fn save_read_session(&self, state: ReadSessionState) -> Result<Arc<ReadSessionState>> {
        let body = serde_json::to_vec(&state)
            .map_err(|e| Error::invalid("read session", e.to_string()))?;
        let path = self.read_session_path(&state.session_id);
        let state = Arc::new(state);
        match manifest::replace_file(&path, &body) {
            Ok(()) => match fs::metadata(&path) {
                Ok(meta) => Ok(self.cache_read_session(state, Backing::File(FileStamp::of(&meta)))),
                Err(_) => Ok(state),
            },
            Err(e) => match e.unwritable(
                &self.root,
                format!("record read session {}", state.session_id),
            ) {
                e @ Error::Unwritable { .. } => {
                    tracing::warn!("{e}; the session is kept in the memory of this process only");
                    Ok(self.cache_read_session(state, Backing::Memory))
                }
                e => Err(e),
            },
        }
    }

    fn create_read_session(&self, req: &ReadSessionRequest) -> Result<ReadSession> {
        let (dir, m) = self.current(&req.table)?;
        let table_schema = &m.schema;
        let data_columns = if req.required_data_columns.is_empty() {
            table_schema.columns.clone()
        } else {
            pick_columns(
                &req.table,
                &table_schema.columns,
                &req.required_data_columns,
                ObjectKind::Column,
            )?
        };
        let partition_columns = pick_columns(
            &req.table,
            &table_schema.partition_columns,
            &req.required_partition_columns,
            ObjectKind::PartitionColumn,
        )?;
        for spec in &req.required_partitions {
            check_partition_keys(&req.table, table_schema, spec)?;
        }
        if !req.filter_predicate.trim().is_empty() && !req.filter_predicate_fallback {
            return Err(Error::NotSupported {
                message: format!(
                    "filter predicate {:?}: the local warehouse does not evaluate predicates \
                     (set FilterPredicateFallback to read unfiltered)",
                    req.filter_predicate
                ),
            });
        }
        let partitions: Vec<&manifest::PartitionEntry> =
            selected_partitions(&m, &req.required_partitions);
        let record_count: u64 = partitions.iter().map(|p| p.rows()).sum();
        let estimated_size: u64 = partitions
            .iter()
            .flat_map(|p| &p.files)
            .map(|f| f.raw_bytes)
            .sum();
        let opts = req.split_options;
        let splits = match opts.mode {
            SplitMode::RowOffset => Vec::new(),
            SplitMode::Size => {
                if opts.number < SplitOptions::MIN_SPLIT_SIZE {
                    return Err(Error::invalid(
                        "split size",
                        format!(
                            "{} bytes; the smallest accepted is {}",
                            opts.number,
                            SplitOptions::MIN_SPLIT_SIZE
                        ),
                    ));
                }
                size_splits(&partitions, opts.number, opts.cross_partition)
            }
            SplitMode::Parallelism => {
                if opts.number == 0 {
                    return Err(Error::invalid(
                        "split number",
                        "Parallelism mode needs at least 1 split",
                    ));
                }
                balanced_splits(record_count, opts.number)
            }
            SplitMode::Bucket => {
                return Err(Error::invalid(
                    "split mode",
                    format!(
                        "Bucket: table {} is not a clustered (bucketed) table",
                        req.table
                    ),
                ));
            }
        };
        let _ = dir;
        let state = ReadSessionState {
            session_id: new_session_id(),
            table: req.table.clone(),
            table_uuid: m.table_uuid.clone(),
            version: m.version,
            expiration_ms: self.now() + self.session_ttl_ms,
            partitions: req.required_partitions.clone(),
            split_mode: opts.mode,
            splits,
            record_count,
            estimated_size,
            schema: TableSchema {
                columns: data_columns,
                partition_columns,
            },
            arrow_options: req.arrow_options,
        };
        let state = self.save_read_session(state)?;
        // Every open of a reader makes a session, and often a new `LocalWarehouse` (one per
        // process, a data loader forks new ones every epoch): the counter alone would sweep
        // on nearly every session, stat-ing every session file, which made opening a reader
        // slower the longer a warehouse was used. The marker spaces sweeps across processes.
        if self
            .sessions_created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(256)
            && self.claim_sweep()
        {
            self.remove_old_read_sessions();
        }
        Ok(state.to_session(self.now()))
    }

    /// Whether this process should sweep old read sessions now: no process swept in the last
    /// [`SWEEP_INTERVAL`] (the marker file's modification time says when one did). Claims
    /// the sweep by touching the marker; two processes racing both sweep, which is harmless.
    fn claim_sweep(&self) -> bool {
        let marker = self.root.join(META_DIR).join(SWEEP_MARKER);
        let recent = fs::metadata(&marker)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < SWEEP_INTERVAL);
        if recent {
            return false;
        }
        // A marker that cannot be written (a read-only warehouse) still lets this sweep run.
        if let Ok(file) = fs::File::create(&marker) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        true
    }

    /// Deletes read session files untouched for longer than the session lifetime (a refresh
    /// rewrites the file, so these are expired), so the warehouse does not grow forever.
    fn remove_old_read_sessions(&self) {
        let dir = self.root.join(META_DIR).join(READ_SESSIONS_DIR);
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let max_age =
            std::time::Duration::from_millis(self.session_ttl_ms.max(0) as u64 + 3_600_000);
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn get_read_session(
        &self,
        table: &TableId,
        session_id: &str,
        refresh: bool,
    ) -> Result<ReadSession> {
        let lock = self.lock(format!("read:{session_id}"));
        let _guard = lock.lock();
        let mut state = self.load_read_session(table, session_id)?;
        if refresh {
            // Reviving is opt-in (see `revive_expired_read_sessions`): the session's version
            // is pinned, so its rows are still there to read, unless vacuum removed it.
            if self.now() > state.expiration_ms {
                if !self.revive_expired_read_sessions {
                    return Err(Error::SessionExpired {
                        session_id: session_id.to_string(),
                    });
                }
                self.pinned_manifest(&state)?;
            }
            let mut refreshed = (*state).clone();
            refreshed.expiration_ms = self.now() + self.session_ttl_ms;
            state = self.save_read_session(refreshed)?;
        }
        Ok(state.to_session(self.now()))
    }

    /// The table version a read session pinned, or a clear error when the table was dropped or
    /// vacuum removed that version (only versions of expired sessions are removed).
    fn pinned_manifest(&self, state: &ReadSessionState) -> Result<Arc<Manifest>> {
        let dir = self.table_dir(&state.table);
        let dropped = || {
            Error::not_found(
                ObjectKind::Table,
                format!("{} (dropped after the session was created)", state.table),
            )
        };
        let m = match self.manifest(&dir, state.version) {
            Ok(m) => m,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return match self.current(&state.table) {
                    Ok((_, latest)) if latest.table_uuid == state.table_uuid => {
                        Err(Error::not_found(
                            ObjectKind::TableVersion,
                            format!(
                                "version {} of {}, which read session {} pinned, was removed by vacuum \
                             after the session expired: create a new read session",
                                state.version, state.table, state.session_id
                            ),
                        ))
                    }
                    _ => Err(dropped()),
                };
            }
            Err(Error::Io { .. }) => return Err(dropped()),
            Err(e) => return Err(e),
        };
        if m.table_uuid != state.table_uuid {
            return Err(dropped());
        }
        Ok(m)
    }

    /// Plans the read of one request: the pieces of files and the output shape.
    fn plan_read(&self, req: &ReadRequest) -> Result<RangeReader> {
        let state = self.load_read_session(&req.table, &req.session_id)?;
        if self.now() > state.expiration_ms {
            return Err(Error::SessionExpired {
                session_id: req.session_id.clone(),
            });
        }
        let (start, end) = match req.range {
            ReadRange::Split(i) => {
                if state.split_mode == SplitMode::RowOffset {
                    return Err(Error::invalid(
                        "read",
                        format!(
                            "session {} is a RowOffset session: read it by offset and count",
                            req.session_id
                        ),
                    ));
                }
                *state
                    .splits
                    .get(i as usize)
                    .ok_or_else(|| Error::OutOfRange {
                        message: format!(
                            "split index {i} of session {} ({} splits)",
                            req.session_id,
                            state.splits.len()
                        ),
                    })?
            }
            ReadRange::Rows { offset, count } => {
                let end = offset
                    .checked_add(count)
                    .filter(|e| *e <= state.record_count)
                    .ok_or_else(|| Error::OutOfRange {
                        message: format!(
                            "rows [{offset}, {offset}+{count}) of session {} ({} rows)",
                            req.session_id, state.record_count
                        ),
                    })?;
                (offset, end)
            }
        };
        if req.skip_rows > end - start {
            return Err(Error::OutOfRange {
                message: format!(
                    "skipping {} rows of a range of {} rows",
                    req.skip_rows,
                    end - start
                ),
            });
        }
        let start = start + req.skip_rows;
        let dir = self.table_dir(&state.table);
        let m = self.pinned_manifest(&state)?;
        let shape = output_shape(&state, &req.columns)?;
        let pieces = pieces_for(
            &dir,
            &selected_partitions(&m, &state.partitions),
            start,
            end,
        );
        let max_batch_rows = if req.max_batch_rows == 0 {
            ReadRequest::DEFAULT_MAX_BATCH_ROWS
        } else {
            req.max_batch_rows
        };
        Ok(RangeReader::new(
            pieces,
            shape,
            max_batch_rows,
            self.files.clone(),
        ))
    }

    fn plan_preview(
        &self,
        table: &TableId,
        partition: Option<&PartitionSpec>,
        columns: &[String],
        limit: u64,
    ) -> Result<RangeReader> {
        let (dir, m) = self.current(table)?;
        let filters: Vec<PartitionSpec> = partition
            .filter(|p| !p.is_empty())
            .cloned()
            .into_iter()
            .collect();
        for f in &filters {
            check_partition_keys(table, &m.schema, f)?;
        }
        let partitions = selected_partitions(&m, &filters);
        let total: u64 = partitions.iter().map(|p| p.rows()).sum();
        let state = ReadSessionState {
            session_id: String::new(),
            table: table.clone(),
            table_uuid: m.table_uuid.clone(),
            version: m.version,
            expiration_ms: i64::MAX,
            partitions: filters,
            split_mode: SplitMode::RowOffset,
            splits: Vec::new(),
            record_count: total,
            estimated_size: 0,
            schema: m.schema.clone(),
            arrow_options: ArrowOptions::default(),
        };
        let columns: Vec<String> = if columns.is_empty() {
            m.schema
                .columns
                .iter()
                .chain(&m.schema.partition_columns)
                .map(|c| c.name.clone())
                .collect()
        } else {
            columns.to_vec()
        };
        let shape = output_shape(&state, &columns)?;
        let pieces = pieces_for(&dir, &partitions, 0, total.min(limit));
        Ok(RangeReader::new(
            pieces,
            shape,
            ReadRequest::DEFAULT_MAX_BATCH_ROWS,
            self.files.clone(),
        ))
    }

    fn describe(&self, table: &TableId) -> Result<TableInfo> {
        let (_, m) = self.current(table)?;
        Ok(TableInfo {
            table: table.clone(),
            schema: m.schema.clone(),
            version: m.version,
            row_count: m.rows(),
            size_bytes: m.bytes(),
            partitions: m
                .partitions
                .iter()
                .filter(|p| !p.spec.is_empty())
                .map(|p| PartitionInfo {
                    spec: p.spec.clone(),
                    row_count: p.rows(),
                    size_bytes: p.bytes(),
                })
                .collect(),
            last_modified_ms: m.committed_ms,
        })
    }

    fn create_table(
        &self,
        table: &TableId,
        schema: &TableSchema,
        options: CreateTableOptions,
    ) -> Result<()> {
        // Validates names, types of partition columns and duplicates, and lower-cases names.
        let schema = &TableSchema::new(schema.columns.clone(), schema.partition_columns.clone())?;
        let dir = self.table_dir(table);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let m = Manifest::new_table(schema.clone(), self.now());
        if manifest::latest_version(&dir)?.is_some() || !manifest::publish(&dir, &m, None)? {
            if options.if_not_exists {
                return Ok(());
            }
            return Err(Error::AlreadyExists {
                kind: ObjectKind::Table,
                name: table.to_string(),
            });
        }
        Ok(())
    }

    fn drop_table(&self, table: &TableId, if_exists: bool) -> Result<()> {
        let dir = self.table_dir(table);
        // Commits of this process wait; commits of others fail cleanly once the table is gone.
        let lock = self.lock(format!("commit:{}", dir.display()));
        let _guard = lock.lock();
        let missing = || {
            if if_exists {
                Ok(())
            } else {
                Err(Error::not_found(ObjectKind::Table, table.to_string()))
            }
        };
        if manifest::latest_version(&dir)?.is_none() {
            return missing();
        }
        // Move the table out of the way in one rename, then delete at leisure.
        let trash = self.root.join(META_DIR).join(TRASH_DIR);
        fs::create_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        let target = trash.join(uuid::Uuid::new_v4().simple().to_string());
        match fs::rename(&dir, &target) {
            Ok(()) => {}
            // Another process dropped it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return missing(),
            Err(e) => return Err(Error::io(&dir, e)),
        }
        self.manifests.lock().retain(|(d, _), _| d != &dir);
        self.manifests.lock().retain(|(d, _), _| d != &target);
        // Mapped files would keep their disk space.
        self.files.forget_under(&dir);
        let _ = fs::remove_dir_all(&target);
        Ok(())
    }

    fn list_tables(&self, project: &str, schema: Option<&str>) -> Result<Vec<TableId>> {
        validate_name("project name", project)?;
        let project_dir = self.root.join(project);
        let schemas: Vec<String> = match schema {
            Some(s) => {
                validate_name("schema name", s)?;
                vec![s.to_ascii_lowercase()]
            }
            None => list_dir_names(&project_dir)?,
        };
        let mut out = Vec::new();
        for s in schemas {
            for t in list_dir_names(&project_dir.join(&s))? {
                let schema = if s == DEFAULT_SCHEMA {
                    None
                } else {
                    Some(s.as_str())
                };
                let Ok(id) = TableId::new(project, schema, &t) else {
                    continue;
                };
                if manifest::latest_version(&self.table_dir(&id))?.is_some() {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn create_partition(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        if_not_exists: bool,
    ) -> Result<()> {
        let (_, current) = self.current(table)?;
        check_partition_keys(table, &current.schema, partition)?;
        let keys = &current.schema.partition_columns;
        if keys.is_empty() || partition.len() != keys.len() {
            return Err(Error::invalid(
                "partition spec",
                format!(
                    "`{partition}`: a new partition of {table} names every partition column ({})",
                    keys.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // In the table's key order, as writes store it.
        let spec = PartitionSpec::from_pairs(
            keys.iter()
                .map(|k| (k.name.as_str(), partition.get(&k.name).unwrap_or_default())),
        )?;
        let mut exists = false;
        self.commit_with(table, |_, base| {
            exists = base.partitions.iter().any(|p| p.spec == spec);
            if exists {
                return Ok(None);
            }
            let mut next = base.clone();
            next.operation = "create_partition".into();
            next.session_id = None;
            next.append(&spec, &[]);
            Ok(Some(next))
        })?;
        if exists && !if_not_exists {
            return Err(Error::AlreadyExists {
                kind: ObjectKind::Partition,
                name: format!("{spec} of {table}"),
            });
        }
        Ok(())
    }

    fn drop_partition(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        if_exists: bool,
    ) -> Result<()> {
        if partition.is_empty() {
            return Err(Error::invalid(
                "partition spec",
                "dropping a partition needs a non-empty spec",
            ));
        }
        let (_, current) = self.current(table)?;
        check_partition_keys(table, &current.schema, partition)?;
        let mut found = true;
        self.commit_with(table, |_, base| {
            let mut next = base.clone();
            next.operation = "drop_partition".into();
            next.session_id = None;
            found = next.remove_matching(partition) > 0;
            Ok(found.then_some(next))
        })?;
        if !found && !if_exists {
            return Err(Error::not_found(
                ObjectKind::Partition,
                format!("{partition} of {table}"),
            ));
        }
        Ok(())
    }
}

fn list_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// The named columns of `available`, in the requested order.
fn pick_columns(
    table: &TableId,
    available: &[Column],
    names: &[String],
    kind: ObjectKind,
) -> Result<Vec<Column>> {
    names
        .iter()
        .map(|n| {
            available
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(n.trim()))
                .cloned()
                .ok_or_else(|| Error::not_found(kind, format!("`{}` in table {table}", n.trim())))
        })
        .collect()
}

fn check_partition_keys(table: &TableId, schema: &TableSchema, spec: &PartitionSpec) -> Result<()> {
    for key in spec.keys() {
        if !schema
            .partition_columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(key))
        {
            return Err(Error::invalid(
                "partition spec",
                format!("`{spec}`: `{key}` is not a partition column of {table}"),
            ));
        }
    }
    Ok(())
}

fn selected_partitions<'m>(
    m: &'m Manifest,
    filters: &[PartitionSpec],
) -> Vec<&'m manifest::PartitionEntry> {
    m.partitions
        .iter()
        .filter(|p| filters.is_empty() || filters.iter().any(|f| f.matches(&p.spec)))
        .collect()
}

/// `count` balanced contiguous ranges of `rows` (fewer when there are fewer rows).
fn balanced_splits(rows: u64, count: u64) -> Vec<(u64, u64)> {
    let count = count.min(rows);
    (0..count)
        .map(|i| crate::split::balanced(rows, i, count))
        .map(|r| (r.start, r.end))
        .collect()
}

/// Splits of about `size` uncompressed bytes, cut at stored batch boundaries.
fn size_splits(
    partitions: &[&manifest::PartitionEntry],
    size: u64,
    cross_partition: bool,
) -> Vec<(u64, u64)> {
    let mut splits = Vec::new();
    let (mut start, mut row, mut bytes) = (0u64, 0u64, 0u64);
    for p in partitions {
        for f in &p.files {
            let per_row = if f.rows == 0 {
                0
            } else {
                f.raw_bytes / f.rows.max(1)
            };
            for &n in &f.batch_rows {
                row += n;
                bytes += per_row * n;
                if bytes >= size {
                    splits.push((start, row));
                    start = row;
                    bytes = 0;
                }
            }
        }
        if !cross_partition && row > start {
            splits.push((start, row));
            start = row;
            bytes = 0;
        }
    }
    if row > start {
        splits.push((start, row));
    }
    splits
}

fn output_shape(state: &ReadSessionState, columns: &[String]) -> Result<OutputShape> {
    let all: Vec<(&Column, bool)> = state
        .schema
        .columns
        .iter()
        .map(|c| (c, false))
        .chain(state.schema.partition_columns.iter().map(|c| (c, true)))
        .collect();
    let chosen: Vec<(&Column, bool)> = if columns.is_empty() {
        all
    } else {
        columns
            .iter()
            .map(|n| {
                all.iter()
                    .find(|(c, _)| c.name.eq_ignore_ascii_case(n.trim()))
                    .copied()
                    .ok_or_else(|| {
                        Error::not_found(
                            ObjectKind::Column,
                            format!("`{}` in read session of {}", n.trim(), state.table),
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    let fields: Vec<arrow_schema::Field> = chosen
        .iter()
        .map(|(c, _)| c.to_arrow_field(&state.arrow_options))
        .collect();
    let sources = chosen
        .iter()
        .map(|(c, is_partition)| {
            if *is_partition {
                ColumnSource::Partition(c.name.clone())
            } else {
                ColumnSource::Stored(c.name.clone())
            }
        })
        .collect();
    Ok(OutputShape {
        schema: Arc::new(arrow_schema::Schema::new(fields)),
        sources,
    })
}

/// The pieces of files covering rows `[start, end)` of the concatenated partitions.
fn pieces_for(
    dir: &Path,
    partitions: &[&manifest::PartitionEntry],
    start: u64,
    end: u64,
) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut file_start = 0u64;
    for p in partitions {
        for f in &p.files {
            let file_end = file_start + f.rows;
            let (lo, hi) = (start.max(file_start), end.min(file_end));
            if lo < hi {
                pieces.push(Piece {
                    path: dir.join(&f.path),
                    partition: p.spec.clone(),
                    batch_rows: f.batch_rows.clone(),
                    start: lo - file_start,
                    len: hi - lo,
                });
            }
            file_start = file_end;
        }
    }
    pieces
}

/// Turns a blocking batch iterator into a stream, one blocking step per batch.
/// Batches read ahead by all the row streams of this process together: each stream reads
/// its next batch while its current one is sent (decoding overlaps the sending) when one
/// of these is free, and one at a time otherwise, so that many slow streams never hold more
/// than this many extra batches.
const READ_AHEAD_BATCHES: usize = 64;

fn read_ahead_permits() -> Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    PERMITS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_BATCHES)))
        .clone()
}

type NextBatch = (Box<RangeReader>, Option<Result<arrow_array::RecordBatch>>);

/// A row stream's reader: idle, or reading its next batch on the blocking pool (ahead of
/// the caller when it holds a read-ahead permit).
enum Ahead {
    Idle(Box<RangeReader>),
    Reading(
        tokio::task::JoinHandle<NextBatch>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
}

fn read_next(mut reader: Box<RangeReader>) -> tokio::task::JoinHandle<NextBatch> {
    tokio::task::spawn_blocking(move || {
        let item = reader.next();
        (reader, item)
    })
}

fn into_stream(reader: RangeReader) -> RecordBatchStream {
    if tokio::runtime::Handle::try_current().is_err() {
        // No runtime to read on: read in the caller.
        return Box::pin(futures::stream::iter(reader));
    }
    let stream = futures::stream::unfold(Some(Ahead::Idle(Box::new(reader))), |state| async move {
        let (handle, permit) = match state? {
            Ahead::Idle(reader) => (read_next(reader), None),
            Ahead::Reading(handle, permit) => (handle, permit),
        };
        let (reader, item) = match handle.await {
            Ok(next) => next,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                let error = Error::Transient {
                    message: format!("blocking task cancelled: {e}"),
                    retryable: true,
                    source: None,
                };
                return Some((Err(error), None));
            }
        };
        drop(permit);
        let item = item?;
        let next = match (&item, read_ahead_permits().try_acquire_owned()) {
            (Ok(_), Ok(permit)) => Ahead::Reading(read_next(reader), Some(permit)),
            _ => Ahead::Idle(reader),
        };
        Some((item, Some(next)))
    });
    Box::pin(stream)
}

#[async_trait]
impl TableService for LocalWarehouse {
    fn name(&self) -> &'static str {
        "local"
    }

    fn hints(&self) -> ServiceHints {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ServiceHints {
            default_streams: cores.clamp(1, 4),
        }
    }

    async fn describe_table(&self, table: &TableId) -> Result<TableInfo> {
        table.validate()?;
        let table = table.clone();
        self.blocking(move |w| w.describe(&table)).await
    }

    async fn table_schema(&self, table: &TableId) -> Result<TableSchema> {
        table.validate()?;
        let table = table.clone();
        self.blocking(move |w| Ok(w.current(&table)?.1.schema.clone()))
            .await
    }

    async fn create_read_session(&self, request: &ReadSessionRequest) -> Result<ReadSession> {
        request.table.validate()?;
        let request = request.clone();
        self.blocking(move |w| w.create_read_session(&request))
            .await
    }

    async fn get_read_session(
        &self,
        table: &TableId,
        session_id: &str,
        refresh: bool,
    ) -> Result<ReadSession> {
        table.validate()?;
        let (table, id) = (table.clone(), session_id.to_string());
        self.blocking(move |w| w.get_read_session(&table, &id, refresh))
            .await
    }

    async fn read(&self, request: &ReadRequest) -> Result<RecordBatchStream> {
        request.table.validate()?;
        let request = request.clone();
        let reader = self.blocking(move |w| w.plan_read(&request)).await?;
        Ok(into_stream(reader))
    }

    async fn preview(
        &self,
        table: &TableId,
        partition: Option<&PartitionSpec>,
        columns: &[String],
        limit: u64,
    ) -> Result<RecordBatchStream> {
        table.validate()?;
        let (table, partition, columns) = (table.clone(), partition.cloned(), columns.to_vec());
        let reader = self
            .blocking(move |w| w.plan_preview(&table, partition.as_ref(), &columns, limit))
            .await?;
        Ok(into_stream(reader))
    }

    async fn create_write_session(&self, request: &WriteSessionRequest) -> Result<WriteSession> {
        request.table.validate()?;
        let request = request.clone();
        self.blocking(move |w| w.create_write_session(&request))
            .await
    }

    async fn get_write_session(&self, table: &TableId, session_id: &str) -> Result<WriteSession> {
        table.validate()?;
        let (table, id) = (table.clone(), session_id.to_string());
        self.blocking(move |w| w.get_write_session(&table, &id))
            .await
    }

    async fn create_write_stream_version(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        version: Option<u64>,
        exactly_once: bool,
    ) -> Result<WriteStream> {
        table.validate()?;
        let (table, id, stream) = (
            table.clone(),
            session_id.to_string(),
            stream_id.map(str::to_string),
        );
        self.blocking(move |w| {
            w.create_write_stream(&table, &id, stream.as_deref(), version, exactly_once)
        })
        .await
    }

    async fn get_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<WriteStream> {
        table.validate()?;
        let (table, id, stream) = (table.clone(), session_id.to_string(), stream_id.to_string());
        self.blocking(move |w| w.get_write_stream(&table, &id, &stream))
            .await
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteAck> {
        request.table.validate()?;
        self.blocking(move |w| w.write(request)).await
    }

    async fn close_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<WriteStream> {
        table.validate()?;
        let (table, id, stream) = (table.clone(), session_id.to_string(), stream_id.to_string());
        self.blocking(move |w| w.close_write_stream(&table, &id, &stream, version))
            .await
    }

    async fn commit_write_session(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo> {
        table.validate()?;
        let (table, id, streams) = (
            table.clone(),
            session_id.to_string(),
            streams.map(<[_]>::to_vec),
        );
        self.blocking(move |w| w.commit(&table, &id, streams.as_deref()))
            .await
    }

    async fn abort_write_session(&self, table: &TableId, session_id: &str) -> Result<()> {
        table.validate()?;
        let (table, id) = (table.clone(), session_id.to_string());
        self.blocking(move |w| w.abort(&table, &id)).await
    }

    async fn create_table(
        &self,
        table: &TableId,
        schema: &TableSchema,
        options: CreateTableOptions,
    ) -> Result<()> {
        table.validate()?;
        let (table, schema) = (table.clone(), schema.clone());
        self.blocking(move |w| w.create_table(&table, &schema, options))
            .await
    }

    async fn drop_table(&self, table: &TableId, if_exists: bool) -> Result<()> {
        table.validate()?;
        let table = table.clone();
        self.blocking(move |w| w.drop_table(&table, if_exists))
            .await
    }

    async fn list_tables(&self, project: &str, schema: Option<&str>) -> Result<Vec<TableId>> {
        let (project, schema) = (project.to_string(), schema.map(str::to_string));
        self.blocking(move |w| w.list_tables(&project, schema.as_deref()))
            .await
    }

    /// An OS file lock on `TABLE/_writers/PARTITION_HASH-SLOT.lock`, so a slot is exclusive
    /// across warehouse instances and processes; the OS releases it if the process dies.
    async fn lock_writer_slot(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        slot: u64,
    ) -> Result<WriterSlot> {
        table.validate()?;
        let (table, partition) = (table.clone(), partition.clone());
        self.blocking(move |w| {
            let (dir, _) = w.current(&table)?;
            // FNV-1a of the spec: a short, stable, path-safe name for any partition value.
            let hash = partition
                .to_string()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            let writers = dir.join("_writers");
            fs::create_dir_all(&writers).map_err(|e| Error::io(&writers, e))?;
            let path = writers.join(format!("{hash:016x}-{slot}.lock"));
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => Ok(WriterSlot::new(FileLock(file))),
                Err(fs::TryLockError::WouldBlock) => {
                    Err(writer_slot_taken(&table, &partition, slot))
                }
                Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
            }
        })
        .await
    }

    async fn create_partition(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        if_not_exists: bool,
    ) -> Result<()> {
        table.validate()?;
        let (table, partition) = (table.clone(), partition.clone());
        self.blocking(move |w| w.create_partition(&table, &partition, if_not_exists))
            .await
    }

    async fn drop_partition(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        if_exists: bool,
    ) -> Result<()> {
        table.validate()?;
        let (table, partition) = (table.clone(), partition.clone());
        self.blocking(move |w| w.drop_partition(&table, &partition, if_exists))
            .await
    }
}

/// Holds an OS file lock until dropped (closing the file releases it).
#[derive(Debug)]
struct FileLock(#[allow(dead_code)] fs::File);

/// Stored data files hold the data columns in their storage Arrow types.
pub(crate) fn storage_schema(schema: &TableSchema) -> arrow_schema::SchemaRef {
    Arc::new(schema.to_arrow_schema(&ArrowOptions::default(), false))
}

/// Rows and files a stream version has staged, by partition.
type Staged = Vec<(PartitionSpec, DataFile)>;

#[cfg(test)]
mod tests {
    use super::*;

    use futures::StreamExt;

    /// A read of one split costs a `stat` of the session file, not a parse of all its splits;
    /// a refresh by another process (a new file) is seen.
    #[tokio::test]
    async fn reads_parse_a_read_session_once() {
        let root = tempfile::tempdir().unwrap();
        let w = LocalWarehouse::open(root.path()).unwrap();
        let table = TableId::new("p", None, "t").unwrap();
        let schema = TableSchema::new(
            vec![Column::new("id", crate::types::OdpsType::BigInt)],
            vec![],
        )
        .unwrap();
        w.create_table(&table, &schema, CreateTableOptions::default())
            .await
            .unwrap();
        let sid = w
            .create_write_session(&WriteSessionRequest::new(table.clone()))
            .await
            .unwrap()
            .session_id;
        let stream = w
            .create_write_stream(&table, &sid, None, false)
            .await
            .unwrap();
        let ids = arrow_array::Int64Array::from_iter_values(0..2000);
        let arrow = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "id",
            arrow_schema::DataType::Int64,
            true,
        )]));
        let batch = arrow_array::RecordBatch::try_new(arrow, vec![Arc::new(ids)]).unwrap();
        w.write(WriteRequest {
            table: table.clone(),
            session_id: sid.clone(),
            stream_id: stream.stream_id.clone(),
            version: stream.version,
            row_offset: None,
            access_token: None,
            batches: vec![batch],
        })
        .await
        .unwrap();
        w.close_write_stream(&table, &sid, &stream.stream_id, stream.version)
            .await
            .unwrap();
        w.commit_write_session(&table, &sid, None).await.unwrap();

        let mut request = ReadSessionRequest::new(table.clone());
        request.split_options = SplitOptions::parallelism(2000);
        let session = w.create_read_session(&request).await.unwrap();
        let other = LocalWarehouse::open(root.path()).unwrap();
        let parses = |w: &LocalWarehouse| {
            w.inner
                .read_session_parses
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        for split in (0..2000).step_by(20) {
            for w in [&w, &other] {
                let read =
                    ReadRequest::new(table.clone(), &session.session_id, ReadRange::Split(split));
                let mut rows = 0;
                let mut stream = w.read(&read).await.unwrap();
                while let Some(b) = stream.next().await {
                    rows += b.unwrap().num_rows();
                }
                assert_eq!(rows, 1);
            }
        }
        assert_eq!(
            parses(&w),
            0,
            "the creating process parses its session never"
        );
        assert_eq!(parses(&other), 1, "another process parses it once");

        // A refresh elsewhere replaces the file: the cached copy is not used any more.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let refreshed = w
            .get_read_session(&table, &session.session_id, true)
            .await
            .unwrap();
        let seen = other
            .get_read_session(&table, &session.session_id, false)
            .await
            .unwrap();
        assert_eq!(seen.expiration_time_ms, refreshed.expiration_time_ms);
        assert_eq!(parses(&other), 2);
    }

    #[test]
    fn balanced_splits_follow_the_formula() {
        assert_eq!(balanced_splits(10, 3), vec![(0, 4), (4, 7), (7, 10)]);
        assert_eq!(balanced_splits(2, 5), vec![(0, 1), (1, 2)]);
        assert!(balanced_splits(0, 4).is_empty());
    }
}
