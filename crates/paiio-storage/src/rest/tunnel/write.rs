//! Tunnel writes: a write session is one upload session of a table or one full partition;
//! the streams of the trait, their versions and exactly-once offsets are kept by this
//! client, and every write request becomes one **block** (a record stream, docs/tunnel.md
//! §3), buffered, so the block can be sent again under the same block id, which replaces it:
//!
//! * a PUT whose answer was lost is repeated by the retry loop (the same bytes, the same id);
//! * a write the caller repeats at the same row offset (after an error whose outcome it could
//!   not know) reuses the block id reserved for that offset, so it replaces, never adds;
//! * a commit first replaces every block it must not publish (superseded versions, streams
//!   not listed, writes whose outcome was never known) with an empty block, reloads the
//!   session and refuses unless its block list is exactly the blocks this client wrote, then
//!   commits; a commit whose answer was lost is recognised by the session's `CLOSED` status.
//!
//! Streams live in this client: another process can read a session's state and commit what
//! the service holds, but writes to one session come from one client. Dynamic partitioning is
//! not part of the Tunnel (an upload session names one full partition).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::RecordBatch;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ObjectKind, Result};
use crate::protocol::headers;
use crate::protocol::storage::MAX_BLOCK_NUMBER;
use crate::protocol::tunnel::record::RecordEncoder;
use crate::protocol::tunnel::session::{UploadSession, UploadStatus};
use crate::service::{
    CommitInfo, SessionStatus, StreamStatus, WriteAck, WriteMode, WriteRequest, WriteSession,
    WriteSessionRequest, WriteStream,
};
use crate::types::TableSchema;
use crate::uri::{PartitionSpec, TableId};

use super::{TunnelCall, TunnelClient};

/// The prefix of Tunnel write session ids.
const WRITE_PREFIX: &str = "tunnelw.";

/// Blocks written (or emptied) at once.
const BLOCK_CONCURRENCY: usize = 8;

/// How long an upload session lives on the service.
const UPLOAD_SESSION_TTL_MS: i64 = 24 * 3600 * 1000;

/// What a write session id carries: the upload id and the target.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WriteId {
    #[serde(rename = "u")]
    upload_id: String,
    #[serde(rename = "p", default, skip_serializing_if = "String::is_empty")]
    partition: String,
    #[serde(rename = "o", default)]
    overwrite: bool,
}

impl WriteId {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{WRITE_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    fn decode(session_id: &str) -> Result<WriteId> {
        session_id
            .strip_prefix(WRITE_PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| Error::not_found(ObjectKind::WriteSession, session_id.to_string()))
    }
}

/// One version of a stream.
#[derive(Debug, Clone)]
struct Version {
    version: u64,
    closed: bool,
    exactly_once: bool,
    access_token: String,
    next_offset: u64,
    /// The blocks it wrote: (block id, rows).
    blocks: Vec<(u64, u64)>,
}

impl Version {
    fn to_stream(&self, stream_id: &str) -> WriteStream {
        WriteStream {
            stream_id: stream_id.to_string(),
            version: self.version,
            status: if self.closed {
                StreamStatus::Closed
            } else {
                StreamStatus::Open
            },
            row_offset: self.next_offset,
            access_token: self.access_token.clone(),
            exactly_once: self.exactly_once,
        }
    }
}

/// What this client knows of a write session.
pub(super) struct WriteState {
    id: WriteId,
    partition: PartitionSpec,
    mode: WriteMode,
    schema: TableSchema,
    /// Whether this client created (and so drives) the session.
    driven: bool,
    streams: BTreeMap<String, Vec<Version>>,
    next_stream: u64,
    next_block: u64,
    /// Block ids reserved for writes at (stream, version, row offset) not yet acknowledged.
    reserved: HashMap<(String, u64, u64), u64>,
    /// Every block id this client sent (or may have sent).
    sent: BTreeSet<u64>,
    committed: Option<CommitInfo>,
    aborted: bool,
    expiration_ms: i64,
}

fn invalid_state(session_id: &str, state: &str, message: impl Into<String>) -> Error {
    Error::InvalidState {
        session_id: session_id.to_string(),
        state: state.to_string(),
        message: message.into(),
    }
}

impl WriteState {
    fn check_writable(&self, session_id: &str) -> Result<()> {
        if self.aborted {
            return Err(invalid_state(
                session_id,
                "ABORTED",
                "the write session was aborted",
            ));
        }
        if self.committed.is_some() {
            return Err(invalid_state(
                session_id,
                "COMMITTED",
                "the write session is committed",
            ));
        }
        Ok(())
    }

    fn versions(&mut self, session_id: &str, stream_id: &str) -> Result<&mut Vec<Version>> {
        self.streams.get_mut(stream_id).ok_or_else(|| {
            Error::not_found(
                ObjectKind::WriteStream,
                format!("{stream_id} of session {session_id}"),
            )
        })
    }
}

/// The body of an empty block: a record stream with no records.
fn empty_block(schema: &TableSchema) -> Result<Bytes> {
    let mut out = Vec::new();
    RecordEncoder::new(&schema.columns)?.finish(&mut out);
    Ok(Bytes::from(out))
}

impl TunnelClient {
    /// The state of a write session: this client's, or (a session of another client) what
    /// its id and a reload tell.
    async fn write_state(
        &self,
        table: &TableId,
        session_id: &str,
    ) -> Result<Arc<Mutex<WriteState>>> {
        if let Some(s) = self.state.writes.lock().get(session_id) {
            return Ok(s.clone());
        }
        let id = WriteId::decode(session_id)?;
        let partition = PartitionSpec::parse(&id.partition)?;
        let session = self.reload_upload(table, &partition, &id.upload_id).await?;
        let schema = match &session.schema {
            Some(s) => s.to_table_schema()?,
            None => self.schema_of(table).await?,
        };
        let state = Arc::new(Mutex::new(WriteState {
            id,
            partition,
            mode: WriteMode::BatchCompatible,
            schema,
            driven: false,
            streams: BTreeMap::new(),
            next_stream: 0,
            next_block: 0,
            reserved: HashMap::new(),
            sent: session.block_ids().into_iter().collect(),
            committed: None,
            aborted: false,
            expiration_ms: self.rest.inner.clock.now_ms() + UPLOAD_SESSION_TTL_MS,
        }));
        Ok(self
            .state
            .writes
            .lock()
            .entry(session_id.to_string())
            .or_insert(state)
            .clone())
    }

    pub(super) async fn create_write(&self, request: &WriteSessionRequest) -> Result<WriteSession> {
        let table = &request.table;
        table.validate()?;
        let schema = self.schema_of(table).await?;
        for key in request.partition.keys() {
            if !schema.is_partition_column(key) {
                return Err(Error::invalid(
                    "partition spec",
                    format!(
                        "`{}`: `{key}` is not a partition column of {table}",
                        request.partition
                    ),
                ));
            }
        }
        if request.partition.len() != schema.partition_columns.len() {
            return Err(Error::NotSupported {
                message: format!(
                    "dynamic partitions over the Tunnel: an upload session writes one full \
                     partition of {table} (name every level of {}), got `{}`",
                    schema
                        .partition_columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    request.partition
                ),
            });
        }
        // In the table's key order.
        let partition = PartitionSpec::from_pairs(schema.partition_columns.iter().map(|c| {
            (
                c.name.clone(),
                request
                    .partition
                    .get(&c.name)
                    .unwrap_or_default()
                    .to_string(),
            )
        }))?;
        let mut call = TunnelCall::new(reqwest::Method::POST, table, "create upload session")
            .param("uploads", 1)
            .partition(&partition);
        if request.overwrite {
            call = call.param("overwrite", "true");
        }
        if !partition.is_empty() {
            call = call.param("create_partition", "true");
        }
        let session = UploadSession::from_json(&self.body(&call).await?)?;
        let schema = match &session.schema {
            Some(s) => s.to_table_schema()?,
            None => schema,
        };
        let id = WriteId {
            upload_id: session.id.clone(),
            partition: partition.to_string(),
            overwrite: request.overwrite,
        };
        let session_id = id.encode();
        let state = WriteState {
            id,
            partition,
            mode: request.mode,
            schema,
            driven: true,
            streams: BTreeMap::new(),
            next_stream: 0,
            next_block: 0,
            reserved: HashMap::new(),
            sent: BTreeSet::new(),
            committed: None,
            aborted: false,
            expiration_ms: self.rest.inner.clock.now_ms() + UPLOAD_SESSION_TTL_MS,
        };
        self.state
            .writes
            .lock()
            .insert(session_id.clone(), Arc::new(Mutex::new(state)));
        Ok(self.write_session(table, &session_id, &session))
    }

    fn write_session(
        &self,
        table: &TableId,
        session_id: &str,
        session: &UploadSession,
    ) -> WriteSession {
        let state = self.state.writes.lock().get(session_id).cloned();
        let mut out = WriteSession {
            session_id: session_id.to_string(),
            table: table.clone(),
            status: match session.status {
                UploadStatus::Unknown | UploadStatus::Normal => SessionStatus::Normal,
                UploadStatus::Closing => SessionStatus::Committing,
                UploadStatus::Closed => SessionStatus::Committed,
                UploadStatus::Expired => SessionStatus::Expired,
                UploadStatus::Canceled | UploadStatus::Critical => SessionStatus::Critical,
            },
            expiration_time_ms: 0,
            partition: PartitionSpec::empty(),
            overwrite: false,
            mode: WriteMode::BatchCompatible,
            write_schema: TableSchema::default(),
            streams: Vec::new(),
            committed_version: None,
        };
        if let Some(state) = state {
            let s = state.lock();
            out.expiration_time_ms = s.expiration_ms;
            out.partition = s.partition.clone();
            out.overwrite = s.id.overwrite;
            out.mode = s.mode;
            out.write_schema = TableSchema {
                columns: s.schema.columns.clone(),
                partition_columns: Vec::new(),
            };
            out.streams = s
                .streams
                .iter()
                .filter_map(|(id, versions)| versions.last().map(|v| v.to_stream(id)))
                .collect();
            out.committed_version = s.committed.map(|c| c.version);
            if s.aborted && out.status == SessionStatus::Normal {
                out.status = SessionStatus::Critical;
            }
        }
        out
    }

    pub(super) async fn get_write(
        &self,
        table: &TableId,
        session_id: &str,
    ) -> Result<WriteSession> {
        let state = self.write_state(table, session_id).await?;
        let (partition, upload_id) = {
            let s = state.lock();
            (s.partition.clone(), s.id.upload_id.clone())
        };
        let session = self.reload_upload(table, &partition, &upload_id).await?;
        Ok(self.write_session(table, session_id, &session))
    }

    pub(super) async fn create_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        requested: Option<u64>,
        exactly_once: bool,
    ) -> Result<WriteStream> {
        let state = self.write_state(table, session_id).await?;
        let mut s = state.lock();
        s.check_writable(session_id)?;
        let stream_id = match stream_id {
            Some(id) => {
                crate::uri::validate_name("write stream id", id)
                    .map_err(|_| Error::invalid("write stream id", format!("{id:?}")))?;
                id.to_string()
            }
            None => loop {
                let id = format!("stream-{}", s.next_stream);
                s.next_stream += 1;
                if !s.streams.contains_key(&id) {
                    break id;
                }
            },
        };
        let versions = s.streams.entry(stream_id.clone()).or_default();
        let version = match (requested, versions.last()) {
            (None, None) => 0,
            (None, Some(l)) => l.version + 1,
            (Some(v), None) => v,
            (Some(v), Some(l)) if v > l.version => v,
            (Some(v), Some(l)) if v == l.version && !l.closed && l.exactly_once == exactly_once => {
                return Ok(l.to_stream(&stream_id));
            }
            (Some(v), Some(l)) => {
                return Err(invalid_state(
                    session_id,
                    "SUPERSEDED",
                    format!(
                        "stream {stream_id} version {v} cannot be created: version {} exists{}",
                        l.version,
                        if l.closed { " and is closed" } else { "" }
                    ),
                ));
            }
        };
        let v = Version {
            version,
            closed: false,
            exactly_once,
            access_token: if exactly_once {
                uuid::Uuid::new_v4().simple().to_string()
            } else {
                String::new()
            },
            next_offset: 0,
            blocks: Vec::new(),
        };
        let out = v.to_stream(&stream_id);
        versions.push(v);
        Ok(out)
    }

    pub(super) async fn get_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<WriteStream> {
        let state = self.write_state(table, session_id).await?;
        let mut s = state.lock();
        let versions = s.versions(session_id, stream_id)?;
        versions
            .last()
            .map(|v| v.to_stream(stream_id))
            .ok_or_else(|| Error::not_found(ObjectKind::WriteStream, stream_id.to_string()))
    }

    pub(super) async fn close_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<WriteStream> {
        let state = self.write_state(table, session_id).await?;
        let mut s = state.lock();
        s.check_writable(session_id)?;
        let versions = s.versions(session_id, stream_id)?;
        let v = versions
            .iter_mut()
            .find(|v| v.version == version)
            .ok_or_else(|| {
                Error::not_found(
                    ObjectKind::WriteStreamVersion,
                    format!("{stream_id} v{version}"),
                )
            })?;
        v.closed = true;
        Ok(v.to_stream(stream_id))
    }

    /// One write request as one block.
    pub(super) async fn write_block(&self, request: WriteRequest) -> Result<WriteAck> {
        let session_id = request.session_id.as_str();
        let state = self.write_state(&request.table, session_id).await?;
        let rows: u64 = request.batches.iter().map(|b| b.num_rows() as u64).sum();
        // Check the stream and the offset, and reserve the block.
        let (block, offset, partition, upload_id, schema) = {
            let mut s = state.lock();
            s.check_writable(session_id)?;
            let stream_name = format!(
                "stream {} v{} of session {session_id}",
                request.stream_id, request.version
            );
            let versions = s.versions(session_id, &request.stream_id)?;
            let latest = versions.last().map_or(0, |v| v.version);
            let v = versions
                .iter()
                .find(|v| v.version == request.version)
                .ok_or_else(|| {
                    Error::not_found(
                        ObjectKind::WriteStreamVersion,
                        format!("{} v{}", request.stream_id, request.version),
                    )
                })?;
            if v.version != latest {
                return Err(invalid_state(
                    session_id,
                    "SUPERSEDED",
                    format!("{stream_name} is superseded by version {latest}"),
                ));
            }
            if v.closed {
                return Err(invalid_state(
                    session_id,
                    "CLOSED",
                    format!("{stream_name} is closed"),
                ));
            }
            if v.exactly_once && request.access_token.as_deref() != Some(v.access_token.as_str()) {
                return Err(Error::Unauthenticated {
                    code: "NoPermission",
                    message: format!("missing or wrong write access token for {stream_name}"),
                });
            }
            let next = v.next_offset;
            match request.row_offset {
                Some(offset) if offset < next => {
                    if offset + rows <= next {
                        return Ok(WriteAck {
                            next_row_offset: next,
                            rows_written: 0,
                            duplicate: true,
                        });
                    }
                    return Err(Error::invalid(
                        "row offset",
                        format!(
                            "{stream_name}: rows [{offset}, {}) overlap the rows already written up to {next}",
                            offset + rows
                        ),
                    ));
                }
                Some(offset) if offset > next => {
                    return Err(Error::invalid(
                        "row offset",
                        format!(
                            "{stream_name}: offset {offset} leaves a gap, the next expected row is {next}"
                        ),
                    ));
                }
                None if v.exactly_once => {
                    return Err(Error::invalid(
                        "row offset",
                        format!("{stream_name} is exactly-once: every write needs RowOffset"),
                    ));
                }
                _ => {}
            }
            if rows == 0 {
                return Ok(WriteAck {
                    next_row_offset: next,
                    rows_written: 0,
                    duplicate: false,
                });
            }
            let key = (request.stream_id.clone(), request.version, next);
            let block = match s.reserved.get(&key) {
                Some(b) => *b,
                None => {
                    if s.next_block >= MAX_BLOCK_NUMBER {
                        return Err(Error::OutOfRange {
                            message: format!(
                                "write session {session_id} has used all {MAX_BLOCK_NUMBER} \
                                 Tunnel blocks; write fewer, larger requests"
                            ),
                        });
                    }
                    let b = s.next_block;
                    s.next_block += 1;
                    s.reserved.insert(key, b);
                    b
                }
            };
            s.sent.insert(block);
            (
                block,
                next,
                s.partition.clone(),
                s.id.upload_id.clone(),
                s.schema.clone(),
            )
        };
        let body = encode_block(&request.table, &partition, &schema, request.batches).await?;
        self.put_block(&request.table, &partition, &upload_id, block, body)
            .await?;
        let mut s = state.lock();
        s.reserved
            .remove(&(request.stream_id.clone(), request.version, offset));
        let versions = s.versions(session_id, &request.stream_id)?;
        let v = versions
            .iter_mut()
            .find(|v| v.version == request.version)
            .ok_or_else(|| {
                Error::not_found(ObjectKind::WriteStreamVersion, request.stream_id.clone())
            })?;
        if v.next_offset != offset {
            // Another write of the same offset won the race: this block replaced its rows
            // with the same rows (same offset, same block).
            return Ok(WriteAck {
                next_row_offset: v.next_offset,
                rows_written: 0,
                duplicate: true,
            });
        }
        v.blocks.push((block, rows));
        v.next_offset += rows;
        Ok(WriteAck {
            next_row_offset: v.next_offset,
            rows_written: rows,
            duplicate: false,
        })
    }

    /// `PUT ?uploadid=ID&blockid=N`: a buffered block, repeated as it is on a retry (the same
    /// block id replaces the earlier one).
    async fn put_block(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        upload_id: &str,
        block: u64,
        body: Bytes,
    ) -> Result<()> {
        let mut call = TunnelCall::new(reqwest::Method::PUT, table, "write block")
            .param("uploadid", upload_id)
            .param("blockid", block)
            .partition(partition)
            .session(upload_id);
        call.body = body;
        call.headers.push((
            "Content-Type".into(),
            headers::ARROW_CONTENT_TYPE.to_string(),
        ));
        self.body(&call).await?;
        Ok(())
    }

    pub(super) async fn commit(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo> {
        let state = self.write_state(table, session_id).await?;
        // What to publish, and what to empty first.
        let (keep, empty, partition, upload_id, schema, driven) =
            {
                let s = state.lock();
                if let Some(info) = s.committed {
                    return Ok(info);
                }
                if s.aborted {
                    return Err(invalid_state(
                        session_id,
                        "ABORTED",
                        "an aborted session cannot be committed",
                    ));
                }
                let mut chosen: Vec<&Version> = Vec::new();
                match streams {
                    None => {
                        for (id, versions) in &s.streams {
                            let Some(last) = versions.last() else {
                                continue;
                            };
                            if !last.closed {
                                return Err(invalid_state(
                                    session_id,
                                    "OPEN",
                                    format!("stream {id} v{} is not closed", last.version),
                                ));
                            }
                            chosen.push(last);
                        }
                    }
                    Some(list) => {
                        let mut seen = BTreeSet::new();
                        for (id, _) in list {
                            if !seen.insert(id.as_str()) {
                                return Err(Error::invalid(
                                    "commit stream list",
                                    format!(
                                        "stream {id} is listed more than once (one version per \
                                     stream: newer versions supersede older ones)"
                                    ),
                                ));
                            }
                        }
                        for (id, version) in list {
                            let versions = s.streams.get(id).ok_or_else(|| {
                                Error::not_found(
                                    ObjectKind::WriteStream,
                                    format!("{id} of session {session_id}"),
                                )
                            })?;
                            let v = versions.iter().find(|v| v.version == *version).ok_or_else(
                                || {
                                    Error::not_found(
                                        ObjectKind::WriteStreamVersion,
                                        format!("{id} v{version}"),
                                    )
                                },
                            )?;
                            if !v.closed {
                                return Err(invalid_state(
                                    session_id,
                                    "OPEN",
                                    format!("stream {id} v{version} is not closed"),
                                ));
                            }
                            chosen.push(v);
                        }
                    }
                }
                let keep: Vec<(u64, u64)> = chosen.iter().flat_map(|v| v.blocks.clone()).collect();
                let kept: BTreeSet<u64> = keep.iter().map(|(b, _)| *b).collect();
                let empty: Vec<u64> = s.sent.difference(&kept).copied().collect();
                (
                    keep,
                    empty,
                    s.partition.clone(),
                    s.id.upload_id.clone(),
                    s.schema.clone(),
                    s.driven,
                )
            };
        let rows: u64 = keep.iter().map(|(_, r)| *r).sum();
        let session = self.reload_upload(table, &partition, &upload_id).await?;
        if session.status != UploadStatus::Closed {
            if session.status != UploadStatus::Normal {
                return Err(invalid_state(
                    session_id,
                    session.status.as_str(),
                    format!("upload session {upload_id} cannot be committed"),
                ));
            }
            if driven {
                let body = empty_block(&schema)?;
                futures::stream::iter(empty)
                    .map(|block| {
                        let body = body.clone();
                        let partition = &partition;
                        let upload_id = &upload_id;
                        async move {
                            self.put_block(table, partition, upload_id, block, body)
                                .await
                        }
                    })
                    .buffer_unordered(BLOCK_CONCURRENCY)
                    .try_collect::<Vec<()>>()
                    .await?;
                let written: BTreeSet<u64> = state.lock().sent.clone();
                let session = self.reload_upload(table, &partition, &upload_id).await?;
                let listed: BTreeSet<u64> = session.block_ids().into_iter().collect();
                if session.status == UploadStatus::Normal && listed != written {
                    return Err(Error::Conflict {
                        table: table.to_string(),
                        message: format!(
                            "blocks not match: upload session {upload_id} lists blocks \
                             {listed:?}, this client wrote {written:?}"
                        ),
                    });
                }
            }
            let call = TunnelCall::new(reqwest::Method::POST, table, "commit")
                .param("uploadid", &upload_id)
                .partition(&partition)
                .session(&upload_id);
            if let Err(e) = self.body(&call).await {
                // The answer may have been lost after the commit landed: the session tells.
                let landed = matches!(
                    self.reload_upload(table, &partition, &upload_id).await,
                    Ok(s) if s.status == UploadStatus::Closed
                );
                if !landed {
                    return Err(e);
                }
            }
        }
        let info = CommitInfo { version: 0, rows };
        state.lock().committed = Some(info);
        Ok(info)
    }

    /// The Tunnel has no abort: the written blocks are emptied (so a commit by anyone
    /// publishes nothing) and the session is refused from now on; it expires on the service.
    pub(super) async fn abort(&self, table: &TableId, session_id: &str) -> Result<()> {
        let state = self.write_state(table, session_id).await?;
        let (blocks, partition, upload_id, schema) = {
            let mut s = state.lock();
            if s.committed.is_some() {
                return Err(invalid_state(
                    session_id,
                    "COMMITTED",
                    "a committed session cannot be aborted",
                ));
            }
            s.aborted = true;
            (
                s.sent.iter().copied().collect::<Vec<_>>(),
                s.partition.clone(),
                s.id.upload_id.clone(),
                s.schema.clone(),
            )
        };
        let body = empty_block(&schema)?;
        futures::stream::iter(blocks)
            .map(|block| {
                let body = body.clone();
                let partition = &partition;
                let upload_id = &upload_id;
                async move {
                    self.put_block(table, partition, upload_id, block, body)
                        .await
                }
            })
            .buffer_unordered(BLOCK_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// Checks and converts the batches as the local warehouse does, then encodes them as one
/// record stream (on a blocking thread).
async fn encode_block(
    table: &TableId,
    partition: &PartitionSpec,
    schema: &TableSchema,
    batches: Vec<RecordBatch>,
) -> Result<Bytes> {
    let write_schema = TableSchema {
        columns: schema.columns.clone(),
        partition_columns: Vec::new(),
    };
    let storage = crate::local::storage_schema(&write_schema);
    let mut conformed = Vec::with_capacity(batches.len());
    for batch in &batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let (data, _) = crate::local::conform(table, partition, &write_schema, &storage, batch)?;
        conformed.push(data);
    }
    let columns = schema.columns.clone();
    tokio::task::spawn_blocking(move || {
        let mut encoder = RecordEncoder::new(&columns)?;
        let mut out = Vec::new();
        for batch in &conformed {
            encoder.encode(batch, &mut out)?;
        }
        encoder.finish(&mut out);
        Ok::<_, Error>(Bytes::from(out))
    })
    .await
    .map_err(|e| Error::Transient {
        message: format!("encoding task failed: {e}"),
        retryable: false,
        source: None,
    })?
}
