//! Reclaiming space: expired write and read sessions, old manifest versions, and files no
//! retained version or live session needs.
//!
//! What is kept, whatever the options:
//!
//! - the latest version of every table, and every version a live read session pins;
//! - every version published by a write session still in NORMAL state (its commit may have
//!   been applied and its answer lost: a retried commit looks for itself in those versions);
//! - what a retained version is built on: a delta version needs the versions below it down
//!   to a snapshot, so vacuum first stores a checkpoint (a snapshot) beside the lowest
//!   retained version of each run, then removes the versions below; where it cannot write
//!   the checkpoint, those versions stay;
//! - every file a retained version lists (in its materialised manifest), and every file a
//!   live write session staged;
//! - every file younger than [`VacuumOptions::grace`] (but those a session whose process is
//!   gone staged, see below): a writer may have written a data file and not yet recorded it.
//!
//! A write session created in-process records its owner (see [`super::owner`]): one whose
//! owner ran on this host and is gone (a killed import) is removed at once, with the files it
//! staged that no retained version lists, whatever their age. Sessions without an owner (those
//! of a server, which clients resume after a restart) go when they expire.
//!
//! Write sessions are scanned before the versions are listed, so a session that commits while
//! vacuum runs has its files either among its staged files or in a version that is listed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::manifest::{self, DATA_DIR, MANIFEST_DIR, WRITE_DIR};
use super::write::State;
use super::{
    Backing, Inner, LocalWarehouse, META_DIR, READ_SESSIONS_DIR, TRASH_DIR, list_dir_names,
};
use crate::error::{Error, ObjectKind, Result};
use crate::uri::{DEFAULT_SCHEMA, TableId};

/// What [`LocalWarehouse::vacuum`] may remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VacuumOptions {
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    /// Table versions committed less than this long ago are kept (default 1 hour).
    pub version_retention: Duration,
    /// The latest versions of each table that are always kept (default 10; at least 1).
    pub keep_versions: usize,
    /// Files younger than this are kept, and sessions are removed only this long after they
    /// expire (default 1 hour). Zero is safe only while nothing else uses the warehouse.
    pub grace: Duration,
    /// Also remove write sessions that are not expired but had no write, stream or state
    /// change for this long (killed imports), with the files they staged (default: none,
    /// sessions go when they expire; a client may legitimately wait that long).
    pub abandon_idle: Option<Duration>,
}

impl Default for VacuumOptions {
    fn default() -> Self {
        VacuumOptions {
            dry_run: false,
            version_retention: Duration::from_secs(3600),
            keep_versions: 10,
            grace: Duration::from_secs(3600),
            abandon_idle: None,
        }
    }
}

/// What a vacuum removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VacuumReport {
    /// Tables looked at.
    pub tables: u64,
    /// Files removed, of every kind.
    pub files: u64,
    /// Bytes those files held.
    pub bytes: u64,
    /// Data files no retained version or live session needed (counted in `files` too).
    pub data_files: u64,
    /// Write sessions removed: expired, committed or aborted ones past their lifetime.
    pub write_sessions: u64,
    /// Read session files removed, past their lifetime.
    pub read_sessions: u64,
    /// Manifest versions removed.
    pub versions: u64,
}

impl VacuumReport {
    fn add(&mut self, other: &VacuumReport) {
        self.tables += other.tables;
        self.files += other.files;
        self.bytes += other.bytes;
        self.data_files += other.data_files;
        self.write_sessions += other.write_sessions;
        self.read_sessions += other.read_sessions;
        self.versions += other.versions;
    }
}

impl LocalWarehouse {
    /// Removes what nothing needs any more from one table, or from the whole warehouse
    /// (`None`: every table, expired read sessions, and leftovers of dropped tables).
    pub async fn vacuum(
        &self,
        table: Option<&TableId>,
        options: &VacuumOptions,
    ) -> Result<VacuumReport> {
        if let Some(t) = table {
            t.validate()?;
        }
        let (table, options) = (table.cloned(), options.clone());
        self.blocking(move |w| w.vacuum(table.as_ref(), &options))
            .await
    }
}

/// A read session's pin, read without its splits.
#[derive(Debug, Deserialize)]
struct Pin {
    table: TableId,
    table_uuid: String,
    version: u64,
    expiration_ms: i64,
}

impl Inner {
    fn vacuum(&self, table: Option<&TableId>, options: &VacuumOptions) -> Result<VacuumReport> {
        let grace_ms = options.grace.as_millis().min(i64::MAX as u128) as i64;
        let mut report = VacuumReport::default();
        // Read sessions: drop the expired ones of the scope, and gather the pins of the rest.
        let mut pins: HashMap<(TableId, String), HashSet<u64>> = HashMap::new();
        let dir = self.root.join(META_DIR).join(READ_SESSIONS_DIR);
        let now = self.now();
        let live = |expiration_ms: i64| {
            self.revive_expired_read_sessions || now <= expiration_ms.saturating_add(grace_ms)
        };
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
            else {
                if is_old_temp(&entry, options.grace) {
                    remove_file(&path, options, &mut report);
                }
                continue;
            };
            let pin: Pin = match fs::read(&path).map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(pin)) => pin,
                // Removed meanwhile, or not a session file: not ours to judge.
                _ => continue,
            };
            if live(pin.expiration_ms) {
                pins.entry((pin.table, pin.table_uuid))
                    .or_default()
                    .insert(pin.version);
            } else if table.is_none_or(|t| t == &pin.table)
                && remove_file(&path, options, &mut report)
            {
                report.read_sessions += 1;
                if !options.dry_run {
                    self.read_sessions.lock().remove(&id);
                }
            }
        }
        {
            let mut cache = self.read_sessions.lock();
            for c in cache.values().filter(|c| c.backing == Backing::Memory) {
                pins.entry((c.state.table.clone(), c.state.table_uuid.clone()))
                    .or_default()
                    .insert(c.state.version);
            }
            if !options.dry_run {
                cache.retain(|_, c| c.backing != Backing::Memory || live(c.state.expiration_ms));
            }
        }
        let tables = match table {
            Some(t) => vec![t.clone()],
            None => self.all_tables()?,
        };
        for t in &tables {
            match self.vacuum_table(t, options, &pins) {
                Ok(r) => report.add(&r),
                // Dropped meanwhile.
                Err(Error::NotFound {
                    kind: ObjectKind::Table,
                    ..
                }) if table.is_none() => {}
                Err(e) => return Err(e),
            }
        }
        if table.is_none() {
            // What a drop interrupted by a crash left behind (nothing reads the trash).
            let trash = self.root.join(META_DIR).join(TRASH_DIR);
            if let Ok(entries) = fs::read_dir(&trash) {
                for entry in entries.flatten() {
                    remove_tree(&entry.path(), options, &mut report);
                }
            }
        }
        Ok(report)
    }

    fn all_tables(&self) -> Result<Vec<TableId>> {
        let mut out = Vec::new();
        for project in list_dir_names(&self.root)? {
            for schema in list_dir_names(&self.root.join(&project))? {
                for name in list_dir_names(&self.root.join(&project).join(&schema))? {
                    let schema = (schema != DEFAULT_SCHEMA).then_some(schema.as_str());
                    let Ok(id) = TableId::new(&project, schema, &name) else {
                        continue;
                    };
                    if self.table_dir(&id).join(MANIFEST_DIR).is_dir() {
                        out.push(id);
                    }
                }
            }
        }
        Ok(out)
    }

    fn vacuum_table(
        &self,
        table: &TableId,
        options: &VacuumOptions,
        pins: &HashMap<(TableId, String), HashSet<u64>>,
    ) -> Result<VacuumReport> {
        let grace_ms = options.grace.as_millis().min(i64::MAX as u128) as i64;
        let dir = self.table_dir(table);
        let mut report = VacuumReport {
            tables: 1,
            ..VacuumReport::default()
        };
        let now = self.now();

        // 1. Write sessions: the files of live ones are needed; expired ones go.
        let mut needed: HashSet<String> = HashSet::new();
        // Files staged by sessions whose process is gone: removed without the grace period.
        let mut orphaned: HashSet<String> = HashSet::new();
        let write_dir = dir.join(WRITE_DIR);
        for id in list_dir_names(&write_dir)? {
            let session_dir = write_dir.join(&id);
            if super::check_id("write session", &id).is_err() {
                continue;
            }
            // Commits, aborts and stream creation hold this lock; one held now is in use.
            let Ok(lock) = try_lock(&session_dir.join(".lock")) else {
                continue;
            };
            let Some(_lock) = lock else {
                needed.extend(self.staged_files(table, &id).unwrap_or_default());
                continue;
            };
            let session = match self.load_write_session(table, &id) {
                Ok(s) => s,
                // A directory without a session (a request for an unknown id made its lock).
                Err(Error::NotFound { .. }) => {
                    if is_old(&session_dir, options.grace) {
                        remove_tree(&session_dir, options, &mut report);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!("vacuum: skipping write session {id} of {table}: {e}");
                    needed.extend(self.staged_files(table, &id).unwrap_or_default());
                    continue;
                }
            };
            let idle = session.state == State::Normal
                && options
                    .abandon_idle
                    .is_some_and(|idle| !tree_touched_within(&session_dir, idle));
            // Created by a process of this host that is gone (a killed import): nothing can
            // write to it any more, so it and the files it staged go now, whatever their age.
            let dead = session.state == State::Normal
                && session.owner.as_ref().is_some_and(|o| o.is_gone());
            if dead {
                orphaned.extend(self.staged_files(table, &id).unwrap_or_default());
            }
            let past = idle || dead || now > session.expiration_ms.saturating_add(grace_ms);
            if session.state == State::Normal && !past {
                needed.extend(self.staged_files(table, &id)?);
                for sub in [session_dir.clone(), session_dir.join("streams")] {
                    remove_old_temps(&sub, options, &mut report);
                }
            } else if past {
                // Expired, or committed or aborted and past the time a client retries.
                if remove_tree(&session_dir, options, &mut report) {
                    report.write_sessions += 1;
                }
            }
        }

        // 2. Versions: keep the latest ones, the young ones, the pinned ones, and those of
        //    sessions still NORMAL; remove the rest.
        let versions = manifest::list_versions(&dir)?;
        let Some(&latest) = versions.last() else {
            return Err(Error::not_found(ObjectKind::Table, table.to_string()));
        };
        let current = self.manifest(&dir, latest)?;
        let pinned = pins.get(&(table.clone(), current.table_uuid.clone()));
        let retention_ms = options.version_retention.as_millis().min(i64::MAX as u128) as i64;
        let keep_last = options.keep_versions.max(1);
        let manifest_dir = dir.join(MANIFEST_DIR);
        let mut loaded: Vec<(u64, Arc<manifest::Manifest>, bool)> = Vec::new();
        for (i, &v) in versions.iter().enumerate() {
            let m = match self.manifest(&dir, v) {
                Ok(m) => m,
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let keep = versions.len() - i <= keep_last
                || now.saturating_sub(m.committed_ms) < retention_ms
                || pinned.is_some_and(|p| p.contains(&v))
                || m.session_id
                    .as_deref()
                    .is_some_and(|sid| self.session_may_retry(table, sid));
            loaded.push((v, m, keep));
        }
        // A kept delta version needs the versions below it down to a snapshot. The lowest
        // kept version of each run gets a checkpoint (written before anything below it is
        // removed), so the versions below can go; where that fails, they stay.
        let mut keep_below = false;
        for i in (0..loaded.len()).rev() {
            let (v, keep) = (loaded[i].0, loaded[i].2);
            if !keep && !keep_below {
                continue;
            }
            loaded[i].2 = true;
            let previous_kept = i > 0 && loaded[i - 1].2 && loaded[i - 1].0 + 1 == v;
            keep_below = false;
            if previous_kept || options.dry_run || manifest::is_snapshot(&dir, v).unwrap_or(false) {
                continue;
            }
            if let Err(e) = manifest::write_checkpoint(&dir, &loaded[i].1) {
                tracing::warn!(
                    "vacuum: keeping the versions below v{v} of {table}: cannot write its checkpoint: {e}"
                );
                keep_below = true;
            }
        }
        let mut kept: Vec<Arc<manifest::Manifest>> = Vec::new();
        for (v, m, keep) in loaded {
            if keep {
                kept.push(m);
                continue;
            }
            let path = manifest_dir.join(format!("{v:020}.json"));
            if remove_file(&path, options, &mut report) {
                report.versions += 1;
                remove_file(
                    &manifest_dir.join(manifest::checkpoint_file_name(v)),
                    options,
                    &mut report,
                );
                if !options.dry_run {
                    self.manifests.lock().remove(&(dir.clone(), v));
                }
            }
        }
        // Checkpoints whose version is gone (a vacuum stopped between the two removals).
        for name in fs::read_dir(&manifest_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
        {
            if manifest::parse_checkpoint_file_name(&name)
                .is_some_and(|v| v < latest && !manifest_dir.join(format!("{v:020}.json")).exists())
            {
                remove_file(&manifest_dir.join(&name), options, &mut report);
            }
        }
        remove_old_temps(&manifest_dir, options, &mut report);

        // 3. Data files nothing retained lists and no live session staged.
        let referenced: HashSet<&str> = kept
            .iter()
            .flat_map(|m| &m.partitions)
            .flat_map(|p| &p.files)
            .map(|f| f.path.as_str())
            .collect();
        let data_dir = dir.join(DATA_DIR);
        let entries = match fs::read_dir(&data_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(Error::io(&data_dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&data_dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel = format!("{DATA_DIR}/{name}");
            if referenced.contains(rel.as_str())
                || needed.contains(&rel)
                || !(orphaned.contains(&rel) || is_old(&entry.path(), options.grace))
            {
                continue;
            }
            if remove_file(&entry.path(), options, &mut report) {
                report.data_files += 1;
            }
        }
        Ok(report)
    }

    /// Whether write session `session_id` may still retry its commit: it exists in NORMAL
    /// state (after a commit is applied, the state turns COMMITTED unless the process died
    /// or the state could not be saved).
    fn session_may_retry(&self, table: &TableId, session_id: &str) -> bool {
        match self.load_write_session(table, session_id) {
            Ok(s) => s.state == State::Normal,
            Err(Error::NotFound { .. }) => false,
            Err(_) => true,
        }
    }
}

/// Takes the lock file of a write session without waiting: `Ok(None)` when someone holds it,
/// `Err` when the session directory has gone.
fn try_lock(path: &Path) -> std::io::Result<Option<fs::File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether any file under `dir` (two levels: the session and its streams) was modified within
/// `window`.
fn tree_touched_within(dir: &Path, window: Duration) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            tree_touched_within(&e.path(), window)
        } else {
            !is_old(&e.path(), window)
        }
    })
}

/// Whether `path` was last modified longer than `grace` ago.
fn is_old(path: &Path, grace: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() >= grace)
        .unwrap_or(false)
}

fn is_old_temp(entry: &fs::DirEntry, grace: Duration) -> bool {
    entry
        .file_name()
        .to_str()
        .is_some_and(|n| n.starts_with(".tmp-"))
        && is_old(&entry.path(), grace)
}

/// Removes the temporary files (`.tmp-*`) older than the grace period in `dir`.
fn remove_old_temps(dir: &Path, options: &VacuumOptions, report: &mut VacuumReport) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_old_temp(&entry, options.grace) {
            remove_file(&entry.path(), options, report);
        }
    }
}

/// Removes one file (not in a dry run) and counts it; false if it could not be removed.
fn remove_file(path: &Path, options: &VacuumOptions, report: &mut VacuumReport) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !options.dry_run
        && let Err(e) = fs::remove_file(path)
    {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("vacuum: cannot remove {}: {e}", path.display());
        }
        return false;
    }
    report.files += 1;
    report.bytes += meta.len();
    true
}

/// Removes a directory tree (not in a dry run), counting its files; false if any of it stayed.
fn remove_tree(dir: &Path, options: &VacuumOptions, report: &mut VacuumReport) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut all = true;
    for entry in entries.flatten() {
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        all &= if is_dir {
            remove_tree(&entry.path(), options, report)
        } else {
            remove_file(&entry.path(), options, report)
        };
    }
    if !options.dry_run
        && all
        && let Err(e) = fs::remove_dir(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("vacuum: cannot remove {}: {e}", dir.display());
        return false;
    }
    all
}
