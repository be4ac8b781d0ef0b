//! The versioned manifest of a table.
//!
//! Each table version is one immutable JSON file `_manifest/{version:020}.json`, of one of two
//! kinds:
//!
//! - a *snapshot*: the table's schema and the data files of every partition. Version 0, every
//!   version that is a multiple of [`CHECKPOINT_INTERVAL`], and every commit that is not a
//!   plain append (an overwrite, a dropped partition) is one;
//! - a *delta* (format 2): the files an append added, by partition. The version is the
//!   previous version plus those files.
//!
//! So a commit writes bytes in proportion to its change, plus a snapshot every
//! [`CHECKPOINT_INTERVAL`] versions. Loading version V starts from the nearest snapshot at or
//! below V (or a version already materialised in memory) and applies the deltas after it in
//! order. A snapshot of a delta version may also be stored beside it as
//! `{version:020}.checkpoint.json` (vacuum writes one before it removes the versions the delta
//! is built on); it is optional: a version loads from its deltas when it is missing.
//!
//! A commit writes the next version to a temporary file, syncs it, and publishes it with
//! `link(2)`, which fails if that version already exists. So a version file is either absent
//! or complete (a process killed at any point leaves the old or the new version, never a torn
//! one), and of two concurrent commits exactly one gets each version number: the loser sees
//! `AlreadyExists` and rebases. Checkpoint files are published the same way. Files of format 1
//! (written before deltas existed) are snapshots.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ObjectKind, Result};
use crate::types::TableSchema;
use crate::uri::PartitionSpec;

pub(crate) const MANIFEST_DIR: &str = "_manifest";
pub(crate) const DATA_DIR: &str = "data";
pub(crate) const WRITE_DIR: &str = "_write";
/// The format of new version files; format 1 files (snapshots only) are read too.
const FORMAT: u32 = 2;
/// Every version that is a multiple of this is a snapshot.
pub(crate) const CHECKPOINT_INTERVAL: u64 = 32;

/// One Arrow IPC file of a partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DataFile {
    /// Path relative to the table directory.
    pub path: String,
    pub rows: u64,
    /// Size on disk.
    pub bytes: u64,
    /// Uncompressed Arrow size, an estimate used to size splits.
    pub raw_bytes: u64,
    /// Rows of each record batch, in file order (lets a reader seek to a row).
    pub batch_rows: Vec<u64>,
}

/// The files of one partition (the empty spec for an unpartitioned table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartitionEntry {
    pub spec: PartitionSpec,
    pub files: Vec<DataFile>,
}

impl PartitionEntry {
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// One version of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: u32,
    pub version: u64,
    /// Identifies one incarnation of the table: set at creation, kept by every commit.
    #[serde(default)]
    pub table_uuid: String,
    pub schema: TableSchema,
    pub committed_ms: i64,
    /// What produced this version: `create`, `append`, `overwrite`, `drop_partition`.
    pub operation: String,
    /// The write session that produced this version, so a retried commit is recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Partitions in spec order.
    pub partitions: Vec<PartitionEntry>,
}

impl Manifest {
    pub fn new_table(schema: TableSchema, now_ms: i64) -> Self {
        Manifest {
            format: FORMAT,
            version: 0,
            table_uuid: uuid::Uuid::new_v4().simple().to_string(),
            schema,
            committed_ms: now_ms,
            operation: "create".into(),
            session_id: None,
            partitions: Vec::new(),
        }
    }

    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows()).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes()).sum()
    }

    /// Adds files to partitions (creating them), keeping partitions sorted.
    pub fn append(&mut self, spec: &PartitionSpec, files: &[DataFile]) {
        match self.partitions.iter_mut().find(|p| &p.spec == spec) {
            Some(p) => p.files.extend_from_slice(files),
            None => {
                self.partitions.push(PartitionEntry {
                    spec: spec.clone(),
                    files: files.to_vec(),
                });
                self.partitions.sort_by(|a, b| a.spec.cmp(&b.spec));
            }
        }
    }

    /// Removes every partition `filter` matches (the empty filter matches all).
    pub fn remove_matching(&mut self, filter: &PartitionSpec) -> usize {
        let before = self.partitions.len();
        self.partitions.retain(|p| !filter.matches(&p.spec));
        before - self.partitions.len()
    }
}

/// A version as stored: a snapshot or a delta.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    format: u32,
    version: u64,
    #[serde(default)]
    table_uuid: String,
    committed_ms: i64,
    operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    /// A snapshot: the schema and every partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<TableSchema>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partitions: Option<Vec<PartitionEntry>>,
    /// A delta: the files added to the previous version, by partition (in spec order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    added: Option<Vec<PartitionEntry>>,
}

/// A stored version, parsed.
enum Stored {
    Snapshot(Manifest),
    Delta(Delta),
}

/// The files one append added to the previous version.
struct Delta {
    version: u64,
    table_uuid: String,
    committed_ms: i64,
    operation: String,
    session_id: Option<String>,
    added: Vec<PartitionEntry>,
}

impl Delta {
    fn apply(self, next: &mut Manifest) {
        next.format = FORMAT;
        next.version = self.version;
        next.committed_ms = self.committed_ms;
        next.operation = self.operation;
        next.session_id = self.session_id;
        for p in &self.added {
            next.append(&p.spec, &p.files);
        }
    }
}

impl Record {
    fn snapshot(m: &Manifest) -> Self {
        Record {
            format: FORMAT,
            version: m.version,
            table_uuid: m.table_uuid.clone(),
            committed_ms: m.committed_ms,
            operation: m.operation.clone(),
            session_id: m.session_id.clone(),
            schema: Some(m.schema.clone()),
            partitions: Some(m.partitions.clone()),
            added: None,
        }
    }

    /// `next` as a delta of `previous`, if `next` only adds files to it.
    fn delta(previous: &Manifest, next: &Manifest) -> Option<Self> {
        if next.version != previous.version + 1
            || next.table_uuid != previous.table_uuid
            || next.schema != previous.schema
        {
            return None;
        }
        let before: std::collections::BTreeMap<&PartitionSpec, &PartitionEntry> =
            previous.partitions.iter().map(|p| (&p.spec, p)).collect();
        let mut kept = 0;
        let mut added = Vec::new();
        for p in &next.partitions {
            let old: &[DataFile] = match before.get(&p.spec) {
                Some(old) => {
                    kept += 1;
                    &old.files
                }
                None => &[],
            };
            if p.files.len() < old.len() || p.files[..old.len()] != *old {
                return None;
            }
            if p.files.len() > old.len() || old.is_empty() {
                added.push(PartitionEntry {
                    spec: p.spec.clone(),
                    files: p.files[old.len()..].to_vec(),
                });
            }
        }
        (kept == before.len()).then(|| Record {
            format: FORMAT,
            version: next.version,
            table_uuid: next.table_uuid.clone(),
            committed_ms: next.committed_ms,
            operation: next.operation.clone(),
            session_id: next.session_id.clone(),
            schema: None,
            partitions: None,
            added: Some(added),
        })
    }

    fn into_stored(self, path: &Path, version: u64) -> Result<Stored> {
        let corrupt = |message: String| Error::Corrupt {
            location: path.display().to_string(),
            message,
        };
        if self.version != version || self.format == 0 || self.format > FORMAT {
            return Err(corrupt(format!(
                "manifest says version {} format {}, expected version {version} format 1 to {FORMAT}",
                self.version, self.format
            )));
        }
        match (self.schema, self.partitions, self.added) {
            (Some(schema), Some(partitions), None) => Ok(Stored::Snapshot(Manifest {
                format: self.format,
                version,
                table_uuid: self.table_uuid,
                schema,
                committed_ms: self.committed_ms,
                operation: self.operation,
                session_id: self.session_id,
                partitions,
            })),
            (None, None, Some(added)) if self.format >= 2 && version > 0 => {
                Ok(Stored::Delta(Delta {
                    version,
                    table_uuid: self.table_uuid,
                    committed_ms: self.committed_ms,
                    operation: self.operation,
                    session_id: self.session_id,
                    added,
                }))
            }
            _ => Err(corrupt(
                "a manifest is a snapshot (schema and partitions) or a delta (added files)".into(),
            )),
        }
    }
}

fn version_file_name(version: u64) -> String {
    format!("{version:020}.json")
}

/// The name of the optional snapshot stored beside a delta version.
pub(crate) fn checkpoint_file_name(version: u64) -> String {
    format!("{version:020}.checkpoint.json")
}

fn parse_version_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The version of a checkpoint file name.
pub(crate) fn parse_checkpoint_file_name(name: &str) -> Option<u64> {
    parse_version_file_name(&format!("{}.json", name.strip_suffix(".checkpoint.json")?))
}

/// The published versions of a table, ascending. Empty if the table does not exist.
pub(crate) fn list_versions(table_dir: &Path) -> Result<Vec<u64>> {
    let dir = table_dir.join(MANIFEST_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        if let Some(v) = entry.file_name().to_str().and_then(parse_version_file_name) {
            versions.push(v);
        }
    }
    versions.sort_unstable();
    Ok(versions)
}

/// The latest published version, if any.
pub(crate) fn latest_version(table_dir: &Path) -> Result<Option<u64>> {
    Ok(list_versions(table_dir)?.last().copied())
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        location: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Reads one version file as stored.
fn read_version(table_dir: &Path, version: u64) -> Result<Stored> {
    let path = table_dir
        .join(MANIFEST_DIR)
        .join(version_file_name(version));
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    parse::<Record>(&path, &bytes)?.into_stored(&path, version)
}

/// The checkpoint stored beside `version`, if there is a readable one (it is optional: a
/// missing or unreadable one is not an error, the version loads from its deltas).
fn read_checkpoint(table_dir: &Path, version: u64) -> Option<Manifest> {
    let path = table_dir
        .join(MANIFEST_DIR)
        .join(checkpoint_file_name(version));
    let bytes = fs::read(&path).ok()?;
    match parse::<Record>(&path, &bytes).and_then(|r| r.into_stored(&path, version)) {
        Ok(Stored::Snapshot(m)) => Some(m),
        Ok(Stored::Delta(_)) => None,
        Err(e) => {
            tracing::warn!("ignoring checkpoint: {e}");
            None
        }
    }
}

/// The write session that published `version`, read from its file alone (a delta is small,
/// so scanning the versions after a session's base costs the size of their changes).
pub(crate) fn session_of(table_dir: &Path, version: u64) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        session_id: Option<String>,
    }
    let path = table_dir
        .join(MANIFEST_DIR)
        .join(version_file_name(version));
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(parse::<Header>(&path, &bytes)?.session_id)
}

/// Whether `version` loads without the versions before it: its file is a snapshot, or a
/// checkpoint is stored beside it.
pub(crate) fn is_snapshot(table_dir: &Path, version: u64) -> Result<bool> {
    Ok(
        matches!(read_version(table_dir, version)?, Stored::Snapshot(_))
            || read_checkpoint(table_dir, version).is_some(),
    )
}

/// Materialises `version`: the nearest snapshot at or below it (a manifest `cached` already
/// holds, a checkpoint, or a snapshot version file) plus the deltas after it, in order.
/// Only the version asked for is returned (for the caller to cache), not the versions built
/// on the way: a cache of every one of them would hold up to a checkpoint interval of copies
/// of a large table. `fresh` skips `cached` for `version` itself (a cache may hold a dropped
/// incarnation's manifest of the same number; below, the table uuid a delta carries tells).
///
/// Vacuum may remove the versions below a retained one while this walks down to them, once it
/// has stored a checkpoint of that version: a version below `version` that is gone sends the
/// walk back to the top, where it finds the checkpoint.
pub(crate) fn materialise(
    table_dir: &Path,
    version: u64,
    cached: &dyn Fn(u64) -> Option<Arc<Manifest>>,
    fresh: bool,
) -> Result<Arc<Manifest>> {
    let mut attempts = 0;
    loop {
        match walk(table_dir, version, cached, fresh) {
            Err(Walk::Below(e)) if attempts < 3 => {
                attempts += 1;
                tracing::debug!("loading version {version} again: {e}");
            }
            Err(Walk::Below(e) | Walk::Other(e)) => return Err(e),
            Ok(built) => return Ok(built),
        }
    }
}

/// Why a walk failed: a version below the one asked for is gone, or anything else.
enum Walk {
    Below(Error),
    Other(Error),
}

impl From<Error> for Walk {
    fn from(e: Error) -> Self {
        Walk::Other(e)
    }
}

fn walk(
    table_dir: &Path,
    version: u64,
    cached: &dyn Fn(u64) -> Option<Arc<Manifest>>,
    fresh: bool,
) -> std::result::Result<Arc<Manifest>, Walk> {
    let mut deltas: Vec<Delta> = Vec::new();
    let mut v = version;
    let same_table =
        |deltas: &[Delta], m: &Manifest| deltas.last().is_none_or(|d| d.table_uuid == m.table_uuid);
    let base = loop {
        if (!fresh || v != version)
            && let Some(m) = cached(v).filter(|m| same_table(&deltas, m))
        {
            break m;
        }
        let stored = match read_version(table_dir, v) {
            Ok(stored) => stored,
            Err(Error::Io { path, source })
                if v < version && source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(Walk::Below(Error::Io { path, source }));
            }
            Err(e) => return Err(e.into()),
        };
        match stored {
            Stored::Snapshot(m) if same_table(&deltas, &m) => break Arc::new(m),
            Stored::Snapshot(_) => {
                return Err(Walk::Other(Error::Corrupt {
                    location: table_dir.join(MANIFEST_DIR).join(version_file_name(v)).display().to_string(),
                    message: "the snapshot belongs to another incarnation of the table than the versions after it"
                        .into(),
                }));
            }
            Stored::Delta(d) => {
                let below_cached = cached(v - 1).is_some_and(|m| m.table_uuid == d.table_uuid);
                if !below_cached
                    && let Some(m) =
                        read_checkpoint(table_dir, v).filter(|m| m.table_uuid == d.table_uuid)
                {
                    break Arc::new(m);
                }
                deltas.push(d);
                v -= 1;
            }
        }
    };
    if deltas.is_empty() {
        return Ok(base);
    }
    let mut next = Arc::unwrap_or_clone(base);
    for d in deltas.into_iter().rev() {
        d.apply(&mut next);
    }
    Ok(Arc::new(next))
}

/// Reads one version (from its snapshot and deltas, nothing cached).
#[cfg(test)]
pub(crate) fn load(table_dir: &Path, version: u64) -> Result<Manifest> {
    Ok(Arc::unwrap_or_clone(materialise(
        table_dir,
        version,
        &|_| None,
        true,
    )?))
}

/// Publishes `manifest` as its version: a delta of `previous` (the version it was made from)
/// when it only adds files to it and is not due a snapshot, else a snapshot. Returns
/// `Ok(false)` if that version already exists (a concurrent commit won it), without changing
/// anything.
///
/// Only version 0 (a new table) creates the manifest directory: a later version whose table
/// was dropped meanwhile fails instead of bringing the table back without its data.
pub(crate) fn publish(
    table_dir: &Path,
    manifest: &Manifest,
    previous: Option<&Manifest>,
) -> Result<bool> {
    let dir = table_dir.join(MANIFEST_DIR);
    if manifest.version == 0 {
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    } else if !dir.is_dir() {
        return Err(Error::not_found(
            ObjectKind::Table,
            format!("{} (dropped during the commit)", table_dir.display()),
        ));
    }
    let record = previous
        .filter(|_| !manifest.version.is_multiple_of(CHECKPOINT_INTERVAL))
        .and_then(|p| Record::delta(p, manifest))
        .unwrap_or_else(|| Record::snapshot(manifest));
    let target = dir.join(version_file_name(manifest.version));
    link_new(&dir, &target, &record)
}

/// Stores a snapshot of delta version `manifest` beside it, so the versions before it are
/// not needed to load it. A readable checkpoint already there is kept; an unreadable one is
/// replaced.
pub(crate) fn write_checkpoint(table_dir: &Path, manifest: &Manifest) -> Result<()> {
    let dir = table_dir.join(MANIFEST_DIR);
    let target = dir.join(checkpoint_file_name(manifest.version));
    let record = Record::snapshot(manifest);
    if link_new(&dir, &target, &record)? || read_checkpoint(table_dir, manifest.version).is_some() {
        return Ok(());
    }
    fs::remove_file(&target).map_err(|e| Error::io(&target, e))?;
    if link_new(&dir, &target, &record)? || read_checkpoint(table_dir, manifest.version).is_some() {
        Ok(())
    } else {
        Err(Error::Corrupt {
            location: target.display().to_string(),
            message: "cannot replace the checkpoint".into(),
        })
    }
}

/// Writes `record` to a temporary file, syncs it, and links it as `target`: `Ok(false)` if
/// `target` exists.
fn link_new(dir: &Path, target: &Path, record: &Record) -> Result<bool> {
    let body = serde_json::to_vec(record).map_err(|e| Error::Corrupt {
        location: dir.display().to_string(),
        message: format!("cannot encode manifest: {e}"),
    })?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    if let Err(e) = write_synced(&tmp, &body) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let result = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let table_dir = dir.parent().unwrap_or(dir);
            Err(Error::not_found(
                ObjectKind::Table,
                format!("{} (dropped during the commit)", table_dir.display()),
            ))
        }
        Err(e) => Err(Error::io(target, e)),
    }
}

/// Writes a whole file and syncs it to disk.
pub(crate) fn write_synced(path: &Path, body: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(body).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Replaces a small state file atomically (write a temporary file, sync, rename).
pub(crate) fn replace_file(path: &Path, body: &[u8]) -> Result<()> {
    let parent = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    if let Err(e) = write_synced(&tmp, body) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    sync_dir(&parent)
}

/// Syncs a directory so a rename or link in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    match fs::File::open(dir) {
        Ok(f) => f.sync_all().map_err(|e| Error::io(dir, e)),
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Column, OdpsType};

    fn schema() -> TableSchema {
        TableSchema {
            columns: vec![Column {
                name: "id".into(),
                ty: OdpsType::BigInt,
                nullable: true,
                comment: String::new(),
            }],
            partition_columns: vec![],
        }
    }

    fn file(name: &str) -> DataFile {
        DataFile {
            path: format!("data/{name}.arrow"),
            rows: 1,
            bytes: 10,
            raw_bytes: 8,
            batch_rows: vec![1],
        }
    }

    fn spec(s: &str) -> PartitionSpec {
        s.parse().unwrap()
    }

    #[test]
    fn publish_is_create_new() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new_table(schema(), 1);
        assert!(publish(dir.path(), &m, None).unwrap());
        assert!(
            !publish(dir.path(), &m, None).unwrap(),
            "the same version twice must lose"
        );
        let mut m1 = m.clone();
        m1.version = 1;
        assert!(publish(dir.path(), &m1, Some(&m)).unwrap());
        assert_eq!(list_versions(dir.path()).unwrap(), vec![0, 1]);
        assert_eq!(load(dir.path(), 1).unwrap(), m1);
        // Temporary files and checkpoints are never taken for versions.
        fs::write(dir.path().join(MANIFEST_DIR).join(".tmp-x"), b"{").unwrap();
        fs::write(dir.path().join(MANIFEST_DIR).join("2.json"), b"{").unwrap();
        fs::write(
            dir.path().join(MANIFEST_DIR).join(checkpoint_file_name(3)),
            b"{",
        )
        .unwrap();
        assert_eq!(latest_version(dir.path()).unwrap(), Some(1));
    }

    /// Appends are stored as deltas of the files they add, every `CHECKPOINT_INTERVAL`-th
    /// version and every other change as a snapshot; each version loads as it was committed.
    #[test]
    fn appends_are_deltas_and_load_as_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::new_table(schema(), 1);
        assert!(publish(dir.path(), &m, None).unwrap());
        let mut all = vec![m.clone()];
        for v in 1..=CHECKPOINT_INTERVAL + 3 {
            let mut next = m.clone();
            next.version = v;
            next.operation = "append".into();
            next.session_id = Some(format!("s{v}"));
            next.append(
                &spec(if v % 2 == 0 { "pt=a" } else { "pt=b" }),
                &[file(&v.to_string())],
            );
            if v == 5 {
                // Not an append: a snapshot.
                next.remove_matching(&spec("pt=a"));
                next.operation = "drop_partition".into();
            }
            assert!(publish(dir.path(), &next, Some(&m)).unwrap());
            m = next;
            all.push(m.clone());
        }
        for v in 0..=CHECKPOINT_INTERVAL + 3 {
            let stored = read_version(dir.path(), v).unwrap();
            let snapshot = v == 0 || v == 5 || v == CHECKPOINT_INTERVAL;
            assert_eq!(
                matches!(stored, Stored::Snapshot(_)),
                snapshot,
                "version {v}"
            );
            assert_eq!(load(dir.path(), v).unwrap(), all[v as usize], "version {v}");
            assert_eq!(
                session_of(dir.path(), v).unwrap(),
                all[v as usize].session_id
            );
        }
        let delta = fs::metadata(
            dir.path()
                .join(MANIFEST_DIR)
                .join(version_file_name(CHECKPOINT_INTERVAL + 3)),
        );
        let snapshot = fs::metadata(
            dir.path()
                .join(MANIFEST_DIR)
                .join(version_file_name(CHECKPOINT_INTERVAL)),
        );
        assert!(delta.unwrap().len() * 4 < snapshot.unwrap().len());

        // A checkpoint makes the versions below unnecessary; one that is torn is ignored.
        let v = CHECKPOINT_INTERVAL + 2;
        write_checkpoint(dir.path(), &all[v as usize]).unwrap();
        assert!(is_snapshot(dir.path(), v).unwrap());
        fs::remove_file(dir.path().join(MANIFEST_DIR).join(version_file_name(v - 1))).unwrap();
        assert_eq!(load(dir.path(), v + 1).unwrap(), all[v as usize + 1]);
        fs::write(
            dir.path().join(MANIFEST_DIR).join(checkpoint_file_name(v)),
            b"{\"format\":2,",
        )
        .unwrap();
        assert!(!is_snapshot(dir.path(), v).unwrap());
        assert!(
            load(dir.path(), v + 1).is_err(),
            "the delta chain is broken without the checkpoint"
        );
    }

    /// Vacuum stores a checkpoint and removes the versions below while a load walks down to
    /// them: the load starts again and finds the checkpoint.
    #[test]
    fn a_load_racing_vacuum_finds_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![Manifest::new_table(schema(), 1)];
        assert!(publish(dir.path(), &all[0], None).unwrap());
        for v in 1..=4 {
            let mut next = all[v - 1].clone();
            next.version = v as u64;
            next.append(&spec("pt=a"), &[file(&v.to_string())]);
            assert!(publish(dir.path(), &next, Some(&all[v - 1])).unwrap());
            all.push(next);
        }
        let vacuumed = std::cell::Cell::new(false);
        let vacuum = |v: u64| {
            if v == 1 && !vacuumed.replace(true) {
                write_checkpoint(dir.path(), &all[3]).unwrap();
                for gone in 0..3 {
                    fs::remove_file(dir.path().join(MANIFEST_DIR).join(version_file_name(gone)))
                        .unwrap();
                }
            }
            None
        };
        let mut loaded = Arc::unwrap_or_clone(materialise(dir.path(), 4, &vacuum, true).unwrap());
        assert!(vacuumed.get());
        loaded.format = all[4].format;
        assert_eq!(loaded, all[4]);
    }

    /// An unreadable checkpoint is replaced.
    #[test]
    fn an_unreadable_checkpoint_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let m0 = Manifest::new_table(schema(), 1);
        assert!(publish(dir.path(), &m0, None).unwrap());
        let mut m1 = m0.clone();
        m1.version = 1;
        m1.append(&spec("pt=a"), &[file("x")]);
        assert!(publish(dir.path(), &m1, Some(&m0)).unwrap());
        fs::write(
            dir.path().join(MANIFEST_DIR).join(checkpoint_file_name(1)),
            b"not json",
        )
        .unwrap();
        assert!(!is_snapshot(dir.path(), 1).unwrap());
        write_checkpoint(dir.path(), &m1).unwrap();
        assert!(is_snapshot(dir.path(), 1).unwrap());
    }

    /// Files written before deltas existed (format 1, always complete) load as snapshots.
    #[test]
    fn format_1_files_load() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(MANIFEST_DIR)).unwrap();
        let mut m = Manifest::new_table(schema(), 1);
        m.format = 1;
        m.version = 3;
        m.append(&spec("pt=a"), &[file("x")]);
        let old = serde_json::to_vec(&m).unwrap();
        fs::write(
            dir.path().join(MANIFEST_DIR).join(version_file_name(3)),
            &old,
        )
        .unwrap();
        assert_eq!(load(dir.path(), 3).unwrap(), m);
        let mut next = m.clone();
        next.version = 4;
        next.append(&spec("pt=a"), &[file("y")]);
        assert!(publish(dir.path(), &next, Some(&m)).unwrap());
        assert!(matches!(
            read_version(dir.path(), 4).unwrap(),
            Stored::Delta(_)
        ));
        let mut loaded = load(dir.path(), 4).unwrap();
        assert_eq!(loaded.format, FORMAT);
        loaded.format = next.format;
        assert_eq!(loaded, next);
    }
}
