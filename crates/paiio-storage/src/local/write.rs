//! Write sessions of the local warehouse: streams with versions, exactly-once row offsets,
//! staged files, and the atomic commit.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_cast::CastOptions;
use serde::{Deserialize, Serialize};

use super::files::write_data_file;
use super::manifest::{self, DATA_DIR, WRITE_DIR};
use super::{Inner, Staged, check_id, check_partition_keys, new_session_id, storage_schema};
use crate::error::{Error, ObjectKind, Result};
use crate::service::*;
use crate::types::{Column, OdpsType, TableSchema};
use crate::uri::{PartitionSpec, TableId, validate_partition_value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum State {
    Normal,
    Committed { version: u64, rows: u64 },
    Aborted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WriteSessionState {
    session_id: String,
    table: TableId,
    pub(super) expiration_ms: i64,
    partition: PartitionSpec,
    overwrite: bool,
    mode: WriteMode,
    /// The table version the session was created on (a retried commit looks for itself
    /// in the versions after it).
    base_version: u64,
    /// The full table schema at creation.
    table_schema: TableSchema,
    pub(super) state: State,
    next_stream: u64,
    /// The process that created the session in-process (none for a server's sessions, or
    /// where owners are unknown): vacuum removes the session once that process is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) owner: Option<super::owner::SessionOwner>,
}

impl WriteSessionState {
    /// The columns the data carries: data columns, then the partition columns not fixed
    /// by the session's spec.
    fn write_schema(&self) -> TableSchema {
        TableSchema {
            columns: self.table_schema.columns.clone(),
            partition_columns: self.dynamic_columns().cloned().collect(),
        }
    }

    fn dynamic_columns(&self) -> impl Iterator<Item = &Column> {
        self.table_schema
            .partition_columns
            .iter()
            .filter(|c| self.partition.get(&c.name).is_none())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StreamState {
    stream_id: String,
    versions: Vec<StreamVersion>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamVersion {
    version: u64,
    closed: bool,
    row_offset: u64,
    access_token: String,
    exactly_once: bool,
    files: Staged,
}

impl StreamVersion {
    fn to_stream(&self, stream_id: &str) -> WriteStream {
        WriteStream {
            stream_id: stream_id.to_string(),
            version: self.version,
            status: if self.closed {
                StreamStatus::Closed
            } else {
                StreamStatus::Open
            },
            row_offset: self.row_offset,
            access_token: self.access_token.clone(),
            exactly_once: self.exactly_once,
        }
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::invalid("state", e.to_string()))
}

impl Inner {
    pub(super) fn session_dir(&self, table: &TableId, session_id: &str) -> PathBuf {
        self.table_dir(table).join(WRITE_DIR).join(session_id)
    }

    pub(super) fn load_write_session(
        &self,
        table: &TableId,
        session_id: &str,
    ) -> Result<WriteSessionState> {
        check_id("write session", session_id)?;
        let path = self.session_dir(table, session_id).join("session.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(
                    ObjectKind::WriteSession,
                    format!("{session_id} of table {table}"),
                ));
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            location: path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn save_write_session(&self, s: &WriteSessionState) -> Result<()> {
        manifest::replace_file(
            &self
                .session_dir(&s.table, &s.session_id)
                .join("session.json"),
            &json(s)?,
        )
    }

    fn lock_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<super::FileLock> {
        check_id("write stream", stream_id)?;
        let path = self
            .session_dir(table, session_id)
            .join("streams")
            .join(format!("{stream_id}.lock"));
        self.lock_file(&path)
    }

    fn stream_path(&self, table: &TableId, session_id: &str, stream_id: &str) -> PathBuf {
        self.session_dir(table, session_id)
            .join("streams")
            .join(format!("{stream_id}.json"))
    }

    fn load_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<Option<StreamState>> {
        check_id("write stream", stream_id)?;
        let path = self.stream_path(table, session_id, stream_id);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    location: path.display().to_string(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn save_stream(&self, table: &TableId, session_id: &str, s: &StreamState) -> Result<()> {
        manifest::replace_file(
            &self.stream_path(table, session_id, &s.stream_id),
            &json(s)?,
        )
    }

    fn all_streams(&self, table: &TableId, session_id: &str) -> Result<Vec<StreamState>> {
        let dir = self.session_dir(table, session_id).join("streams");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(s) = self.load_stream(table, session_id, id)? {
                out.push(s);
            }
        }
        // Numeric ids in numeric order, then the rest by name: the order rows are committed in.
        out.sort_by(
            |a, b| match (a.stream_id.parse::<u64>(), b.stream_id.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.stream_id.cmp(&b.stream_id),
            },
        );
        Ok(out)
    }

    /// A session that accepts writes: exists, not committed or aborted, not expired.
    fn open_session(&self, table: &TableId, session_id: &str) -> Result<WriteSessionState> {
        let s = self.load_write_session(table, session_id)?;
        match s.state {
            State::Normal if self.now() > s.expiration_ms => Err(Error::SessionExpired {
                session_id: session_id.to_string(),
            }),
            State::Normal => Ok(s),
            State::Committed { .. } => Err(Error::InvalidState {
                session_id: session_id.into(),
                state: "COMMITTED".into(),
                message: "the session is already committed".into(),
            }),
            State::Aborted => Err(Error::InvalidState {
                session_id: session_id.into(),
                state: "ABORTED".into(),
                message: "the session was aborted".into(),
            }),
        }
    }

    pub(super) fn create_write_session(&self, req: &WriteSessionRequest) -> Result<WriteSession> {
        let (_, m) = self.current(&req.table)?;
        check_partition_keys(&req.table, &m.schema, &req.partition)?;
        if m.schema.partition_columns.is_empty() && !req.partition.is_empty() {
            return Err(Error::invalid(
                "partition spec",
                format!(
                    "`{}`: table {} is not partitioned",
                    req.partition, req.table
                ),
            ));
        }
        // A static spec must give the levels in order: `pt=1` of (pt, region), not `region=x`.
        for (i, key) in req.partition.keys().enumerate() {
            let expected = &m.schema.partition_columns[i].name;
            if !key.eq_ignore_ascii_case(expected) {
                return Err(Error::invalid(
                    "partition spec",
                    format!(
                        "`{}`: level {} must be `{expected}`, not `{key}`",
                        req.partition,
                        i + 1
                    ),
                ));
            }
        }
        for (key, value) in req.partition.iter() {
            if let Some(column) = m
                .schema
                .partition_columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(key))
            {
                check_partition_value(column, value)?;
            }
        }
        let state = WriteSessionState {
            session_id: new_session_id(),
            table: req.table.clone(),
            expiration_ms: self.now() + self.session_ttl_ms,
            partition: req.partition.clone(),
            overwrite: req.overwrite,
            mode: req.mode,
            base_version: m.version,
            table_schema: m.schema.clone(),
            state: State::Normal,
            next_stream: 0,
            owner: self.session_owner.clone(),
        };
        self.save_write_session(&state)
            .map_err(|e| e.unwritable(&self.root, "record a new write session"))?;
        self.to_write_session(&state)
    }

    fn to_write_session(&self, s: &WriteSessionState) -> Result<WriteSession> {
        let streams = self
            .all_streams(&s.table, &s.session_id)?
            .into_iter()
            .filter_map(|st| st.versions.last().map(|v| v.to_stream(&st.stream_id)))
            .collect();
        let (status, committed_version) = match s.state {
            State::Normal if self.now() > s.expiration_ms => (SessionStatus::Expired, None),
            State::Normal => (SessionStatus::Normal, None),
            State::Committed { version, .. } => (SessionStatus::Committed, Some(version)),
            State::Aborted => (SessionStatus::Critical, None),
        };
        Ok(WriteSession {
            session_id: s.session_id.clone(),
            table: s.table.clone(),
            status,
            expiration_time_ms: s.expiration_ms,
            partition: s.partition.clone(),
            overwrite: s.overwrite,
            mode: s.mode,
            write_schema: s.write_schema(),
            streams,
            committed_version,
        })
    }

    /// The data files (relative to the table directory) staged by any stream version of a
    /// session.
    pub(super) fn staged_files(&self, table: &TableId, session_id: &str) -> Result<Vec<String>> {
        Ok(self
            .all_streams(table, session_id)?
            .into_iter()
            .flat_map(|s| s.versions)
            .flat_map(|v| v.files)
            .map(|(_, f)| f.path)
            .collect())
    }

    pub(super) fn get_write_session(
        &self,
        table: &TableId,
        session_id: &str,
    ) -> Result<WriteSession> {
        let s = self.load_write_session(table, session_id)?;
        self.to_write_session(&s)
    }

    pub(super) fn create_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        requested: Option<u64>,
        exactly_once: bool,
    ) -> Result<WriteStream> {
        check_id("write session", session_id)?;
        let _guard = self.lock_file(&self.session_dir(table, session_id).join(".lock"))?;
        let mut session = self.open_session(table, session_id)?;
        let stream_id = match stream_id {
            Some(id) => id.to_string(),
            None => {
                // A fresh id no stream has used.
                loop {
                    let id = session.next_stream.to_string();
                    session.next_stream += 1;
                    if self.load_stream(table, session_id, &id)?.is_none() {
                        self.save_write_session(&session)?;
                        break id;
                    }
                }
            }
        };
        check_id("write stream", &stream_id)?;
        let _stream_guard = self.lock_stream(table, session_id, &stream_id)?;
        let mut stream = self
            .load_stream(table, session_id, &stream_id)?
            .unwrap_or_else(|| StreamState {
                stream_id: stream_id.clone(),
                versions: Vec::new(),
            });
        let latest = stream.versions.last().map(|l| LatestVersion {
            version: l.version,
            closed: l.closed,
            exactly_once: l.exactly_once,
        });
        let version =
            match choose_stream_version(session_id, &stream_id, requested, latest, exactly_once)? {
                StreamVersionChoice::New(v) => v,
                StreamVersionChoice::Latest => {
                    // A retried create of the stream version that exists: answer it again.
                    if let Some(l) = stream.versions.last() {
                        return Ok(l.to_stream(&stream_id));
                    }
                    0
                }
            };
        let v = StreamVersion {
            version,
            closed: false,
            row_offset: 0,
            access_token: if exactly_once {
                uuid::Uuid::new_v4().simple().to_string()
            } else {
                String::new()
            },
            exactly_once,
            files: Vec::new(),
        };
        let out = v.to_stream(&stream_id);
        stream.versions.push(v);
        self.save_stream(table, session_id, &stream)?;
        Ok(out)
    }

    pub(super) fn get_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<WriteStream> {
        self.load_write_session(table, session_id)?;
        let stream = self
            .load_stream(table, session_id, stream_id)?
            .ok_or_else(|| {
                Error::not_found(
                    ObjectKind::WriteStream,
                    format!("{stream_id} of session {session_id}"),
                )
            })?;
        let last = stream.versions.last().ok_or_else(|| {
            Error::not_found(
                ObjectKind::WriteStream,
                format!("{stream_id} of session {session_id}"),
            )
        })?;
        Ok(last.to_stream(stream_id))
    }

    pub(super) fn write(&self, req: WriteRequest) -> Result<WriteAck> {
        let session = self.open_session(&req.table, &req.session_id)?;
        check_id("write stream", &req.stream_id)?;
        let _guard = self.lock_stream(&req.table, &req.session_id, &req.stream_id)?;
        let mut stream = self
            .load_stream(&req.table, &req.session_id, &req.stream_id)?
            .ok_or_else(|| {
                Error::not_found(
                    ObjectKind::WriteStream,
                    format!("{} of session {}", req.stream_id, req.session_id),
                )
            })?;
        let latest = stream.versions.last().map(|v| v.version).unwrap_or(0);
        let v = stream
            .versions
            .iter_mut()
            .find(|v| v.version == req.version)
            .ok_or_else(|| {
                Error::not_found(
                    ObjectKind::WriteStreamVersion,
                    format!("{} v{}", req.stream_id, req.version),
                )
            })?;
        let stream_name = format!(
            "stream {} v{} of session {}",
            req.stream_id, req.version, req.session_id
        );
        if v.version != latest {
            return Err(Error::InvalidState {
                session_id: req.session_id.clone(),
                state: "SUPERSEDED".into(),
                message: format!("{stream_name} is superseded by version {latest}"),
            });
        }
        if v.closed {
            return Err(Error::InvalidState {
                session_id: req.session_id.clone(),
                state: "CLOSED".into(),
                message: format!("{stream_name} is closed"),
            });
        }
        if v.exactly_once && req.access_token.as_deref() != Some(v.access_token.as_str()) {
            return Err(Error::Unauthenticated {
                code: "NoPermission",
                message: format!("missing or wrong write access token for {stream_name}"),
            });
        }
        let rows: u64 = req.batches.iter().map(|b| b.num_rows() as u64).sum();
        if let Some(offset) = req.row_offset {
            if offset < v.row_offset {
                if offset + rows <= v.row_offset {
                    // A replay of rows already applied: acknowledge, change nothing.
                    return Ok(WriteAck {
                        next_row_offset: v.row_offset,
                        rows_written: 0,
                        duplicate: true,
                    });
                }
                return Err(Error::invalid(
                    "row offset",
                    format!(
                        "{stream_name}: rows [{offset}, {}) overlap the rows already written up to {}",
                        offset + rows,
                        v.row_offset
                    ),
                ));
            }
            if offset > v.row_offset {
                return Err(Error::invalid(
                    "row offset",
                    format!(
                        "{stream_name}: offset {offset} leaves a gap, the next expected row is {}",
                        v.row_offset
                    ),
                ));
            }
        } else if v.exactly_once {
            return Err(Error::invalid(
                "row offset",
                format!("{stream_name} is exactly-once: every write needs RowOffset"),
            ));
        }
        let staged = self.stage(&session, &req.batches)?;
        let staged_paths: Vec<String> = staged.iter().map(|(_, f)| f.path.clone()).collect();
        v.files.extend(staged);
        v.row_offset += rows;
        let ack = WriteAck {
            next_row_offset: v.row_offset,
            rows_written: rows,
            duplicate: false,
        };
        if let Err(e) = self.save_stream(&req.table, &req.session_id, &stream) {
            // The stream does not record the files, so nothing ever would: remove them.
            self.remove_data_files(&req.table, staged_paths.iter().map(String::as_str));
            return Err(e.unwritable(
                &self.root,
                format!("record the rows written to {stream_name}"),
            ));
        }
        Ok(ack)
    }

    /// Checks and converts the batches, and writes one file per partition they touch.
    fn stage(&self, session: &WriteSessionState, batches: &[RecordBatch]) -> Result<Staged> {
        let write_schema = session.write_schema();
        let storage = storage_schema(&session.table_schema);
        let mut by_partition: BTreeMap<PartitionSpec, Vec<RecordBatch>> = BTreeMap::new();
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            let (data, parts) = conform(
                &session.table,
                &session.partition,
                &write_schema,
                &storage,
                batch,
            )?;
            match parts {
                None => by_partition
                    .entry(session.partition.clone())
                    .or_default()
                    .push(data),
                Some(groups) => {
                    for (spec, rows) in groups {
                        let idx = UInt32Array::from(rows);
                        let taken = arrow_select::take::take_record_batch(&data, &idx)
                            .map_err(|e| Error::arrow("splitting rows by partition", e))?;
                        by_partition.entry(spec).or_default().push(taken);
                    }
                }
            }
        }
        let dir = self.table_dir(&session.table);
        let mut staged: Staged = Vec::new();
        for (spec, batches) in by_partition {
            let rel = format!("{DATA_DIR}/{}.arrow", uuid::Uuid::new_v4().simple());
            match write_data_file(&dir, &rel, &storage, &batches, self.compression) {
                Ok(file) => staged.push((spec, file)),
                Err(e) => {
                    // All or nothing: the files of the other partitions go too.
                    self.remove_data_files(
                        &session.table,
                        staged.iter().map(|(_, f)| f.path.as_str()),
                    );
                    return Err(e.unwritable(
                        &self.root,
                        format!("store the rows written to table {}", session.table),
                    ));
                }
            }
        }
        Ok(staged)
    }

    /// Removes data files of `table` (paths relative to its directory) that no manifest
    /// names; one that cannot be removed is left to `vacuum`.
    pub(super) fn remove_data_files<'a>(
        &self,
        table: &TableId,
        paths: impl IntoIterator<Item = &'a str>,
    ) {
        let dir = self.table_dir(table);
        for rel in paths {
            let path = dir.join(rel);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(
                    "cannot remove {}: {e} (vacuum removes it later)",
                    path.display()
                );
            }
        }
    }

    pub(super) fn close_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<WriteStream> {
        self.open_session(table, session_id)?;
        check_id("write stream", stream_id)?;
        let _guard = self.lock_stream(table, session_id, stream_id)?;
        let mut stream = self
            .load_stream(table, session_id, stream_id)?
            .ok_or_else(|| {
                Error::not_found(
                    ObjectKind::WriteStream,
                    format!("{stream_id} of session {session_id}"),
                )
            })?;
        let v = stream
            .versions
            .iter_mut()
            .find(|v| v.version == version)
            .ok_or_else(|| {
                Error::not_found(
                    ObjectKind::WriteStreamVersion,
                    format!("{stream_id} v{version}"),
                )
            })?;
        v.closed = true;
        let out = v.to_stream(stream_id);
        self.save_stream(table, session_id, &stream)?;
        Ok(out)
    }

    pub(super) fn commit(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo> {
        // Check the session exists before creating its lock file.
        self.load_write_session(table, session_id)?;
        let _guard = self.lock_file(&self.session_dir(table, session_id).join(".lock"))?;
        // Read under the lock: another process may have committed or aborted meanwhile.
        let mut session = self.load_write_session(table, session_id)?;
        match session.state {
            State::Committed { version, rows } => return Ok(CommitInfo { version, rows }),
            State::Aborted => {
                return Err(Error::InvalidState {
                    session_id: session_id.into(),
                    state: "ABORTED".into(),
                    message: "an aborted session cannot be committed".into(),
                });
            }
            State::Normal if self.now() > session.expiration_ms => {
                return Err(Error::SessionExpired {
                    session_id: session_id.to_string(),
                });
            }
            State::Normal => {}
        }
        let all = self.all_streams(table, session_id)?;
        let mut chosen: Vec<&StreamVersion> = Vec::new();
        match streams {
            None => {
                for s in &all {
                    let Some(last) = s.versions.last() else {
                        continue;
                    };
                    if !last.closed {
                        return Err(Error::InvalidState {
                            session_id: session_id.into(),
                            state: "OPEN".into(),
                            message: format!(
                                "stream {} v{} is not closed",
                                s.stream_id, last.version
                            ),
                        });
                    }
                    chosen.push(last);
                }
            }
            Some(list) => {
                let mut seen = std::collections::HashSet::new();
                for (id, _) in list {
                    if !seen.insert(id.as_str()) {
                        return Err(Error::invalid(
                            "commit stream list",
                            format!(
                                "stream {id} is listed more than once (one version per stream: newer versions supersede older ones)"
                            ),
                        ));
                    }
                }
                for (id, version) in list {
                    let s = all.iter().find(|s| &s.stream_id == id).ok_or_else(|| {
                        Error::not_found(
                            ObjectKind::WriteStream,
                            format!("{id} of session {session_id}"),
                        )
                    })?;
                    let v = s
                        .versions
                        .iter()
                        .find(|v| v.version == *version)
                        .ok_or_else(|| {
                            Error::not_found(
                                ObjectKind::WriteStreamVersion,
                                format!("{id} v{version}"),
                            )
                        })?;
                    if !v.closed {
                        return Err(Error::InvalidState {
                            session_id: session_id.into(),
                            state: "OPEN".into(),
                            message: format!("stream {id} v{version} is not closed"),
                        });
                    }
                    chosen.push(v);
                }
            }
        }
        let files: Staged = chosen
            .iter()
            .flat_map(|v| v.files.iter().cloned())
            .collect();
        let rows: u64 = files.iter().map(|(_, f)| f.rows).sum();
        let mut by_partition: BTreeMap<PartitionSpec, Vec<manifest::DataFile>> = BTreeMap::new();
        for (spec, file) in files {
            by_partition.entry(spec).or_default().push(file);
        }
        let base_version = session.base_version;
        let sid = session_id.to_string();
        let static_full = session.dynamic_columns().next().is_none();
        let (overwrite, target) = (session.overwrite, session.partition.clone());
        let published = self
            .commit_with(table, |dir, latest| {
                // A commit whose response was lost may already be in a later version.
                // Vacuum removes old versions, but never the one a session still in NORMAL state
                // published, so a version that is gone is not this session's.
                // Each version file carries its session: a delta is read, not materialised.
                for v in base_version + 1..=latest.version {
                    match manifest::session_of(dir, v) {
                        Ok(s) if s.as_deref() == Some(sid.as_str()) => return Ok(None),
                        Ok(_) => {}
                        Err(Error::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                let mut next = latest.clone();
                next.session_id = Some(sid.clone());
                next.operation = if overwrite {
                    "overwrite".into()
                } else {
                    "append".into()
                };
                if overwrite {
                    if static_full {
                        next.remove_matching(&target);
                    } else {
                        for spec in by_partition.keys() {
                            next.partitions.retain(|p| &p.spec != spec);
                        }
                    }
                }
                for (spec, files) in &by_partition {
                    next.append(spec, files);
                }
                Ok(Some(next))
            })
            .map_err(|e| {
                e.unwritable(
                    &self.root,
                    format!("publish the commit of write session {session_id}"),
                )
            })?;
        let version = if published.session_id.as_deref() == Some(session_id) {
            published.version
        } else {
            // Already applied earlier: find the version that holds it.
            let dir = self.table_dir(table);
            (base_version + 1..=published.version)
                .find(|v| {
                    manifest::session_of(&dir, *v).is_ok_and(|s| s.as_deref() == Some(session_id))
                })
                .unwrap_or(published.version)
        };
        session.state = State::Committed { version, rows };
        self.save_write_session(&session)?;
        Ok(CommitInfo { version, rows })
    }

    pub(super) fn abort(&self, table: &TableId, session_id: &str) -> Result<()> {
        // Check the session exists before creating its lock file.
        self.load_write_session(table, session_id)?;
        let _guard = self.lock_file(&self.session_dir(table, session_id).join(".lock"))?;
        // Read under the lock: another process may have committed or aborted meanwhile.
        let mut session = self.load_write_session(table, session_id)?;
        match session.state {
            State::Committed { .. } => {
                return Err(Error::InvalidState {
                    session_id: session_id.into(),
                    state: "COMMITTED".into(),
                    message: "a committed session cannot be aborted".into(),
                });
            }
            State::Aborted => return Ok(()),
            State::Normal => {}
        }
        session.state = State::Aborted;
        let staged: Vec<String> = self
            .all_streams(table, session_id)?
            .into_iter()
            .flat_map(|s| s.versions)
            .flat_map(|v| v.files)
            .map(|(_, f)| f.path)
            .collect();
        if let Err(e) = self.save_write_session(&session) {
            // A full disk cannot take the new state, and the staged files are what fills it.
            // Under the session lock no commit can start, so the stream records (which name
            // the files) go first, then the files; with the space freed the state is saved.
            // A session whose state still cannot be saved has no files left to commit.
            let streams = self.session_dir(table, session_id).join("streams");
            for s in self.all_streams(table, session_id)? {
                let path = streams.join(format!("{}.json", s.stream_id));
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
            self.remove_data_files(table, staged.iter().map(String::as_str));
            self.save_write_session(&session).map_err(|_| {
                e.unwritable(
                    &self.root,
                    format!("record that write session {session_id} is aborted"),
                )
            })?;
            return Ok(());
        }
        self.remove_data_files(table, staged.iter().map(String::as_str));
        Ok(())
    }
}

/// Matches a batch to the write schema by column name, checks and casts every column to its
/// storage type, and (for dynamic partitioning) groups its rows by partition.
#[allow(clippy::type_complexity)]
pub(crate) fn conform(
    table: &TableId,
    partition: &PartitionSpec,
    write_schema: &TableSchema,
    storage: &arrow_schema::SchemaRef,
    batch: &RecordBatch,
) -> Result<(RecordBatch, Option<Vec<(PartitionSpec, Vec<u32>)>>)> {
    let input = batch.schema();
    let mut seen = std::collections::HashSet::new();
    for f in input.fields() {
        if !seen.insert(f.name().to_ascii_lowercase()) {
            return Err(Error::invalid(
                "arrow schema",
                format!("column `{}` appears more than once in the data", f.name()),
            ));
        }
    }
    for f in input.fields() {
        if write_schema
            .columns
            .iter()
            .chain(&write_schema.partition_columns)
            .all(|c| !c.name.eq_ignore_ascii_case(f.name()))
        {
            let fixed = partition.get(f.name()).is_some();
            return Err(Error::invalid(
                "arrow schema",
                if fixed {
                    format!(
                        "column `{}` is a partition column fixed by the session's spec `{}`; leave it out of the data",
                        f.name(),
                        partition
                    )
                } else {
                    format!("column `{}` is not in table {}", f.name(), table)
                },
            ));
        }
    }
    let find = |name: &str| -> Result<&ArrayRef> {
        input
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
            .map(|i| batch.column(i))
            .ok_or_else(|| {
                Error::invalid(
                    "arrow schema",
                    format!(
                        "column `{name}` of table {} is missing from the data",
                        table
                    ),
                )
            })
    };
    let cast_options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut columns = Vec::with_capacity(write_schema.columns.len());
    for (column, field) in write_schema.columns.iter().zip(storage.fields()) {
        let array = find(&column.name)?;
        columns.push(conform_column(
            column,
            field.data_type(),
            array,
            &cast_options,
        )?);
    }
    let data = RecordBatch::try_new(storage.clone(), columns)
        .map_err(|e| Error::arrow("building stored batch", e))?;
    if write_schema.partition_columns.is_empty() {
        return Ok((data, None));
    }
    // Dynamic partitions: the partition values of each row, as text.
    let mut values: Vec<StringArray> = Vec::new();
    for column in &write_schema.partition_columns {
        let array = find(&column.name)?;
        if !column.ty.arrow_compatible(array.data_type())
            && !matches!(
                array.data_type(),
                arrow_schema::DataType::Utf8 | arrow_schema::DataType::LargeUtf8
            )
        {
            return Err(Error::type_mismatch(
                &column.name,
                format!(
                    "partition column of type {} got Arrow {}",
                    column.ty,
                    array.data_type()
                ),
            ));
        }
        let text = arrow_cast::cast(array, &arrow_schema::DataType::Utf8)
            .map_err(|e| Error::arrow(format!("partition column `{}`", column.name), e))?;
        let text = text
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| Error::type_mismatch(&column.name, "partition values must be text"))?;
        values.push(text);
    }
    let mut groups: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
    for row in 0..batch.num_rows() {
        let mut key = Vec::with_capacity(values.len());
        for (column, arr) in write_schema.partition_columns.iter().zip(&values) {
            if arr.is_null(row) {
                return Err(Error::type_mismatch(
                    &column.name,
                    format!("row {row}: a partition value must not be NULL"),
                ));
            }
            key.push(arr.value(row).to_string());
        }
        groups.entry(key).or_default().push(row as u32);
    }
    let mut out = Vec::with_capacity(groups.len());
    for (key, rows) in groups {
        let mut pairs: Vec<(String, String)> = partition
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (column, value) in write_schema.partition_columns.iter().zip(key) {
            validate_partition_value(&column.name, &value)?;
            check_partition_value(column, &value)?;
            pairs.push((column.name.clone(), value));
        }
        out.push((PartitionSpec::from_pairs(pairs)?, rows));
    }
    Ok((data, Some(out)))
}

fn conform_column(
    column: &Column,
    storage_type: &arrow_schema::DataType,
    array: &ArrayRef,
    options: &CastOptions<'_>,
) -> Result<ArrayRef> {
    if !column.ty.arrow_compatible(array.data_type()) {
        return Err(Error::type_mismatch(
            &column.name,
            format!(
                "column of type {} cannot take Arrow {}",
                column.ty,
                array.data_type()
            ),
        ));
    }
    if !column.nullable && array.logical_null_count() > 0 {
        return Err(Error::type_mismatch(
            &column.name,
            "column is NOT NULL but the data has NULLs",
        ));
    }
    let cast = if array.data_type() == storage_type {
        array.clone()
    } else {
        arrow_cast::cast_with_options(array, storage_type, options).map_err(|e| {
            Error::type_mismatch(
                &column.name,
                format!(
                    "cannot convert Arrow {} to {}: {e}",
                    array.data_type(),
                    column.ty
                ),
            )
        })?
    };
    if let arrow_schema::DataType::Decimal128(precision, _) = storage_type
        && let Some(decimals) = cast.as_any().downcast_ref::<arrow_array::Decimal128Array>()
    {
        decimals
            .validate_decimal_precision(*precision)
            .map_err(|e| {
                Error::type_mismatch(
                    &column.name,
                    format!("value does not fit {}: {e}", column.ty),
                )
            })?;
    }
    if let OdpsType::Varchar(n) | OdpsType::Char(n) = column.ty
        && let Some(strings) = cast.as_any().downcast_ref::<StringArray>()
    {
        for (row, v) in strings.iter().enumerate() {
            if let Some(v) = v
                && v.chars().count() > n as usize
            {
                return Err(Error::type_mismatch(
                    &column.name,
                    format!(
                        "row {row}: {} characters do not fit {}",
                        v.chars().count(),
                        column.ty
                    ),
                ));
            }
        }
    }
    Ok(Arc::clone(&cast))
}

/// Checks that a partition value is valid text for its column's type (`pt=abc` on a BIGINT
/// partition column is refused, not stored as NULL), and that integers are written in their
/// canonical form (`007` and `7` would otherwise be two partitions of the same value).
fn check_partition_value(column: &Column, value: &str) -> Result<()> {
    let field = arrow_schema::Field::new(
        &column.name,
        column.ty.to_arrow(&crate::types::ArrowOptions::default()),
        true,
    );
    let typed = super::files::constant_array(value, &field, 1)?;
    if column.ty.is_integer() {
        let text = arrow_cast::cast(&typed, &arrow_schema::DataType::Utf8)
            .map_err(|e| Error::arrow("partition value", e))?;
        let canonical = text
            .as_any()
            .downcast_ref::<StringArray>()
            .map(|a| a.value(0).to_string())
            .unwrap_or_default();
        if canonical != value {
            return Err(Error::type_mismatch(
                &column.name,
                format!(
                    "partition value {value:?} of type {}: write it as {canonical:?}",
                    column.ty
                ),
            ));
        }
    }
    if let OdpsType::Varchar(n) | OdpsType::Char(n) = column.ty
        && value.chars().count() > n as usize
    {
        return Err(Error::type_mismatch(
            &column.name,
            format!("partition value {value:?} does not fit {}", column.ty),
        ));
    }
    Ok(())
}
