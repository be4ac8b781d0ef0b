//! The versioned manifest of a table.
//!
//! Each table version is one immutable JSON file `_manifest/{version:020}.json` that lists the
//! table's schema and the data files of every partition. A commit writes the next version to a
//! temporary file, syncs it, and publishes it with `link(2)`, which fails if that version
//! already exists. So a version file is either absent or complete (a process killed at any
//! point leaves the old or the new version, never a torn one), and of two concurrent commits
//! exactly one gets each version number: the loser sees `AlreadyExists` and rebases.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::TableSchema;
use crate::uri::PartitionSpec;

pub(crate) const MANIFEST_DIR: &str = "_manifest";
pub(crate) const DATA_DIR: &str = "data";
pub(crate) const WRITE_DIR: &str = "_write";
const FORMAT: u32 = 1;

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
                self.partitions.push(PartitionEntry { spec: spec.clone(), files: files.to_vec() });
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

fn version_file_name(version: u64) -> String {
    format!("{version:020}.json")
}

fn parse_version_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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

/// Reads one version.
pub(crate) fn load(table_dir: &Path, version: u64) -> Result<Manifest> {
    let path = table_dir.join(MANIFEST_DIR).join(version_file_name(version));
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        location: path.display().to_string(),
        message: e.to_string(),
    })?;
    if manifest.version != version || manifest.format != FORMAT {
        return Err(Error::Corrupt {
            location: path.display().to_string(),
            message: format!(
                "manifest says version {} format {}, expected version {version} format {FORMAT}",
                manifest.version, manifest.format
            ),
        });
    }
    Ok(manifest)
}

/// Publishes `manifest` as its version. Returns `Ok(false)` if that version already exists
/// (a concurrent commit won it), without changing anything.
///
/// Only version 0 (a new table) creates the manifest directory: a later version whose table
/// was dropped meanwhile fails instead of bringing the table back without its data.
pub(crate) fn publish(table_dir: &Path, manifest: &Manifest) -> Result<bool> {
    let dir = table_dir.join(MANIFEST_DIR);
    if manifest.version == 0 {
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    } else if !dir.is_dir() {
        return Err(Error::not_found("table", format!("{} (dropped during the commit)", table_dir.display())));
    }
    let body = serde_json::to_vec(manifest).map_err(|e| Error::Corrupt {
        location: dir.display().to_string(),
        message: format!("cannot encode manifest: {e}"),
    })?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    if let Err(e) = write_synced(&tmp, &body) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let target = dir.join(version_file_name(manifest.version));
    let result = fs::hard_link(&tmp, &target);
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            sync_dir(&dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::not_found("table", format!("{} (dropped during the commit)", table_dir.display())))
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
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
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

    #[test]
    fn publish_is_create_new() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new_table(schema(), 1);
        assert!(publish(dir.path(), &m).unwrap());
        assert!(!publish(dir.path(), &m).unwrap(), "the same version twice must lose");
        let mut m1 = m.clone();
        m1.version = 1;
        assert!(publish(dir.path(), &m1).unwrap());
        assert_eq!(list_versions(dir.path()).unwrap(), vec![0, 1]);
        assert_eq!(load(dir.path(), 1).unwrap(), m1);
        // Temporary files are never taken for versions.
        fs::write(dir.path().join(MANIFEST_DIR).join(".tmp-x"), b"{").unwrap();
        fs::write(dir.path().join(MANIFEST_DIR).join("2.json"), b"{").unwrap();
        assert_eq!(latest_version(dir.path()).unwrap(), Some(1));
    }
}
