//! Tunnel writes. A write session is one upload session per full partition it writes (one
//! for a table without partitions or a session on a full partition spec; for a partial spec
//! or none, one per partition the data names, created on the first write that reaches it).
//! The streams of the trait, their versions and exactly-once offsets are kept by this client,
//! and every write request becomes one **block** per partition it touches (a record stream,
//! docs/tunnel.md §3), buffered, so a block can be sent again under the same block id, which
//! replaces it:
//!
//! * a PUT whose answer was lost is repeated by the retry loop (the same bytes, the same id);
//! * a write the caller repeats at the same row offset (after an error whose outcome it could
//!   not know) reuses the block ids reserved for that offset, so it replaces, never adds;
//! * a commit first replaces every block it must not publish (superseded versions, streams
//!   not listed, writes whose outcome was never known) with an empty block, reloads each
//!   upload session and refuses unless its block list is exactly the blocks this client
//!   wrote, then commits; a commit whose answer was lost is recognised by the session's
//!   `CLOSED` status.
//!
//! Streams live in this client: another process can read a session on one full partition
//! and commit what the service holds, but writes to a session come from one client, and a
//! session with dynamic partitions is known only to the client that made it. With several
//! partitions a commit is one Tunnel commit per partition, not atomic across them.

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
    CommitInfo, LatestVersion, SessionStatus, StreamStatus, StreamVersionChoice, WriteAck,
    WriteMode, WriteRequest, WriteSession, WriteSessionRequest, WriteStream, choose_stream_version,
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

/// What a write session id carries: the upload id of a single-partition session (empty for
/// dynamic partitions, whose sessions are made as the data comes), the spec and the flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WriteId {
    #[serde(rename = "u", default, skip_serializing_if = "String::is_empty")]
    upload_id: String,
    #[serde(rename = "p", default, skip_serializing_if = "String::is_empty")]
    partition: String,
    #[serde(rename = "o", default)]
    overwrite: bool,
    /// A nonce that makes dynamic sessions' ids unique.
    #[serde(rename = "n", default, skip_serializing_if = "String::is_empty")]
    nonce: String,
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

/// One block: its partition (the key of its upload session), its id and rows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    partition: String,
    id: u64,
    rows: u64,
}

/// One version of a stream.
#[derive(Debug, Clone)]
struct Version {
    version: u64,
    closed: bool,
    exactly_once: bool,
    access_token: String,
    next_offset: u64,
    blocks: Vec<Block>,
    /// A write of this version is under way (writes of one version go one at a time, so
    /// two never share a block).
    in_flight: bool,
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

/// The upload session of one full partition.
#[derive(Debug, Clone)]
struct Target {
    spec: PartitionSpec,
    upload_id: String,
    /// Every block id sent to it (or that may have been).
    sent: BTreeSet<u64>,
    next_block: u64,
}

/// What this client knows of a write session.
pub(super) struct WriteState {
    id: WriteId,
    /// The session's spec (full, a prefix, or empty).
    prefix: PartitionSpec,
    mode: WriteMode,
    /// The table's schema.
    schema: TableSchema,
    /// Whether this client created (and so drives) the session.
    driven: bool,
    streams: BTreeMap<String, Vec<Version>>,
    next_stream: u64,
    /// The upload sessions, by partition (`k=v,...`, empty for an unpartitioned table).
    targets: BTreeMap<String, Target>,
    /// Block ids reserved for writes at (stream, version, row offset, partition) not yet
    /// acknowledged.
    reserved: HashMap<(String, u64, u64, String), u64>,
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
    /// Refuses a session that was aborted, committed, or has expired by `now_ms`.
    fn check_writable(&self, session_id: &str, now_ms: i64) -> Result<()> {
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
        if now_ms > self.expiration_ms {
            return Err(Error::SessionExpired {
                session_id: session_id.to_string(),
            });
        }
        Ok(())
    }

    /// Refuses writes through a client that did not create the session: the Tunnel keeps no
    /// streams, so they live in the client that made the session.
    fn check_driven(&self, session_id: &str) -> Result<()> {
        if self.driven {
            return Ok(());
        }
        Err(Error::NotSupported {
            message: format!(
                "write session {session_id} was created by another client: over the Tunnel its \
                 streams live in that client, so write through it (this one can read the \
                 session and commit it)"
            ),
        })
    }

    /// Whether a write of any stream is under way.
    fn writing(&self) -> bool {
        self.streams.values().flatten().any(|v| v.in_flight)
    }

    fn versions(&mut self, session_id: &str, stream_id: &str) -> Result<&mut Vec<Version>> {
        self.streams.get_mut(stream_id).ok_or_else(|| {
            Error::not_found(
                ObjectKind::WriteStream,
                format!("{stream_id} of session {session_id}"),
            )
        })
    }

    /// The columns the data carries: the data columns, then the partition columns the
    /// session's spec leaves open.
    fn write_schema(&self) -> TableSchema {
        TableSchema {
            columns: self.schema.columns.clone(),
            partition_columns: self
                .schema
                .partition_columns
                .iter()
                .filter(|c| self.prefix.get(&c.name).is_none())
                .cloned()
                .collect(),
        }
    }
}

/// The body of an empty block: a record stream with no records.
fn empty_block(schema: &TableSchema) -> Result<Bytes> {
    let mut out = Vec::new();
    RecordEncoder::new(&schema.columns)?.finish(&mut out);
    Ok(Bytes::from(out))
}

impl TunnelClient {
    /// The state of a write session: this client's, or (a single-partition session of
    /// another client) what its id and a reload tell.
    async fn write_state(
        &self,
        table: &TableId,
        session_id: &str,
    ) -> Result<Arc<Mutex<WriteState>>> {
        if let Some(s) = self.state.writes.lock().get(session_id) {
            return Ok(s.clone());
        }
        let id = WriteId::decode(session_id)?;
        if id.upload_id.is_empty() {
            return Err(Error::not_found(
                ObjectKind::WriteSession,
                format!(
                    "{session_id} (a Tunnel write session with dynamic partitions is known only \
                     to the client that created it)"
                ),
            ));
        }
        let partition = PartitionSpec::parse(&id.partition)?;
        let session = self.reload_upload(table, &partition, &id.upload_id).await?;
        let schema = match &session.schema {
            Some(s) => s.to_table_schema()?,
            None => self.schema_of(table).await?,
        };
        let target = Target {
            spec: partition.clone(),
            upload_id: id.upload_id.clone(),
            sent: session.block_ids().into_iter().collect(),
            next_block: session
                .block_ids()
                .into_iter()
                .max()
                .map_or(0, |b| b.saturating_add(1)),
        };
        let state = Arc::new(Mutex::new(WriteState {
            id,
            prefix: partition.clone(),
            mode: WriteMode::BatchCompatible,
            schema,
            driven: false,
            streams: BTreeMap::new(),
            next_stream: 0,
            targets: BTreeMap::from([(partition.to_string(), target)]),
            reserved: HashMap::new(),
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

    /// `POST ?uploads=1`: an upload session on one full partition (or the whole table).
    async fn create_upload(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        overwrite: bool,
    ) -> Result<UploadSession> {
        let mut call = TunnelCall::new(reqwest::Method::POST, table, "create upload session")
            .param("uploads", 1)
            .partition(partition);
        if overwrite {
            call = call.param("overwrite", "true");
        }
        if !partition.is_empty() {
            call = call.param("create_partition", "true");
        }
        UploadSession::from_json(&self.body(&call).await?)
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
        let is_prefix = request.partition.keys().enumerate().all(|(i, k)| {
            schema
                .partition_columns
                .get(i)
                .is_some_and(|c| c.name.eq_ignore_ascii_case(k))
        });
        if !is_prefix {
            return Err(Error::invalid(
                "partition spec",
                format!(
                    "`{}` does not name the leading levels of the partition columns of {table}",
                    request.partition
                ),
            ));
        }
        // In the table's key order and spelling.
        let prefix =
            PartitionSpec::from_pairs(schema.partition_columns.iter().filter_map(|c| {
                Some((c.name.clone(), request.partition.get(&c.name)?.to_string()))
            }))?;
        let full = prefix.len() == schema.partition_columns.len();
        let mut targets = BTreeMap::new();
        let mut id = WriteId {
            upload_id: String::new(),
            partition: prefix.to_string(),
            overwrite: request.overwrite,
            nonce: String::new(),
        };
        let mut schema = schema;
        if full {
            let session = self
                .create_upload(table, &prefix, request.overwrite)
                .await?;
            if let Some(s) = &session.schema {
                schema = s.to_table_schema()?;
            }
            id.upload_id = session.id.clone();
            targets.insert(
                prefix.to_string(),
                Target {
                    spec: prefix.clone(),
                    upload_id: session.id,
                    sent: BTreeSet::new(),
                    next_block: 0,
                },
            );
        } else {
            id.nonce = uuid::Uuid::new_v4().simple().to_string();
        }
        let session_id = id.encode();
        let state = WriteState {
            id,
            prefix,
            mode: request.mode,
            schema,
            driven: true,
            streams: BTreeMap::new(),
            next_stream: 0,
            targets,
            reserved: HashMap::new(),
            committed: None,
            aborted: false,
            expiration_ms: self.rest.inner.clock.now_ms() + UPLOAD_SESSION_TTL_MS,
        };
        self.state
            .writes
            .lock()
            .insert(session_id.clone(), Arc::new(Mutex::new(state)));
        self.get_write(table, &session_id).await
    }

    pub(super) async fn get_write(
        &self,
        table: &TableId,
        session_id: &str,
    ) -> Result<WriteSession> {
        let state = self.write_state(table, session_id).await?;
        let targets: Vec<Target> = state.lock().targets.values().cloned().collect();
        // The worst status of its upload sessions (none yet: a new session).
        let mut status = SessionStatus::Normal;
        let rank = |s: SessionStatus| match s {
            SessionStatus::Normal | SessionStatus::Init => 0,
            SessionStatus::Committed => 1,
            SessionStatus::Committing => 2,
            SessionStatus::Expired => 3,
            SessionStatus::Critical => 4,
        };
        let mut all_closed = !targets.is_empty();
        for t in &targets {
            let s = self.reload_upload(table, &t.spec, &t.upload_id).await?;
            let mapped = match s.status {
                UploadStatus::Unknown | UploadStatus::Normal => SessionStatus::Normal,
                UploadStatus::Closing => SessionStatus::Committing,
                UploadStatus::Closed => SessionStatus::Committed,
                UploadStatus::Expired => SessionStatus::Expired,
                UploadStatus::Canceled | UploadStatus::Critical => SessionStatus::Critical,
            };
            all_closed &= mapped == SessionStatus::Committed;
            if mapped != SessionStatus::Committed && rank(mapped) > rank(status) {
                status = mapped;
            }
        }
        let s = state.lock();
        if all_closed || s.committed.is_some() {
            status = SessionStatus::Committed;
        }
        if s.aborted && status == SessionStatus::Normal {
            status = SessionStatus::Critical;
        }
        if status == SessionStatus::Normal && self.rest.inner.clock.now_ms() > s.expiration_ms {
            status = SessionStatus::Expired;
        }
        Ok(WriteSession {
            session_id: session_id.to_string(),
            table: table.clone(),
            status,
            expiration_time_ms: s.expiration_ms,
            partition: s.prefix.clone(),
            overwrite: s.id.overwrite,
            mode: s.mode,
            write_schema: s.write_schema(),
            streams: s
                .streams
                .iter()
                .filter_map(|(id, versions)| versions.last().map(|v| v.to_stream(id)))
                .collect(),
            committed_version: s.committed.map(|c| c.version),
        })
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
        let now = self.rest.inner.clock.now_ms();
        let mut s = state.lock();
        s.check_writable(session_id, now)?;
        s.check_driven(session_id)?;
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
        let latest = versions.last().map(|l| LatestVersion {
            version: l.version,
            closed: l.closed,
            exactly_once: l.exactly_once,
        });
        let version =
            match choose_stream_version(session_id, &stream_id, requested, latest, exactly_once)? {
                StreamVersionChoice::New(v) => v,
                StreamVersionChoice::Latest => {
                    if let Some(l) = versions.last() {
                        return Ok(l.to_stream(&stream_id));
                    }
                    0
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
            in_flight: false,
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
        let now = self.rest.inner.clock.now_ms();
        let mut s = state.lock();
        s.check_writable(session_id, now)?;
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

    /// One write request as one block per partition it touches.
    pub(super) async fn write_block(&self, request: WriteRequest) -> Result<WriteAck> {
        let session_id = request.session_id.as_str();
        let table = &request.table;
        let state = self.write_state(table, session_id).await?;
        let rows: u64 = request.batches.iter().map(|b| b.num_rows() as u64).sum();
        let now = self.rest.inner.clock.now_ms();
        // Check the stream and the offset.
        let (offset, prefix, write_schema, overwrite) = {
            let mut s = state.lock();
            s.check_writable(session_id, now)?;
            s.check_driven(session_id)?;
            let stream_name = format!(
                "stream {} v{} of session {session_id}",
                request.stream_id, request.version
            );
            let versions = s.versions(session_id, &request.stream_id)?;
            let latest = versions.last().map_or(0, |v| v.version);
            let v = versions
                .iter_mut()
                .find(|v| v.version == request.version)
                .ok_or_else(|| {
                    Error::not_found(
                        ObjectKind::WriteStreamVersion,
                        format!("{} v{}", request.stream_id, request.version),
                    )
                })?;
            if v.in_flight {
                return Err(Error::Conflict {
                    table: table.to_string(),
                    message: format!(
                        "another write to {stream_name} is under way: the writes of one stream \
                         go one at a time"
                    ),
                });
            }
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
            v.in_flight = true;
            (next, s.prefix.clone(), s.write_schema(), s.id.overwrite)
        };
        let _in_flight = InFlight {
            state: state.as_ref(),
            stream_id: &request.stream_id,
            version: request.version,
        };
        // The rows of each partition, checked and converted as the local warehouse does.
        let parts = split_rows(table, &prefix, &write_schema, &request.batches)?;
        // The upload session of every partition the rows reach.
        for spec in parts.keys() {
            let missing = !state.lock().targets.contains_key(&spec.to_string());
            if missing {
                let session = self.create_upload(table, spec, overwrite).await?;
                state
                    .lock()
                    .targets
                    .entry(spec.to_string())
                    .or_insert_with(|| Target {
                        spec: spec.clone(),
                        upload_id: session.id,
                        sent: BTreeSet::new(),
                        next_block: 0,
                    });
            }
        }
        // Reserve a block per partition (the same ones when this offset is written again).
        let mut planned = Vec::new();
        {
            let mut s = state.lock();
            for (spec, batches) in parts {
                let key_spec = spec.to_string();
                let key = (
                    request.stream_id.clone(),
                    request.version,
                    offset,
                    key_spec.clone(),
                );
                let reserved = s.reserved.get(&key).copied();
                let Some(target) = s.targets.get_mut(&key_spec) else {
                    continue;
                };
                let block = match reserved {
                    Some(b) => b,
                    None => {
                        if target.next_block >= MAX_BLOCK_NUMBER {
                            return Err(Error::OutOfRange {
                                message: format!(
                                    "write session {session_id} has used all {MAX_BLOCK_NUMBER} \
                                     Tunnel blocks of partition `{key_spec}`; write fewer, \
                                     larger requests"
                                ),
                            });
                        }
                        let b = target.next_block;
                        target.next_block += 1;
                        b
                    }
                };
                target.sent.insert(block);
                let upload_id = target.upload_id.clone();
                s.reserved.insert(key, block);
                let n: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                planned.push((spec, upload_id, block, n, batches));
            }
        }
        let columns = write_schema.columns.clone();
        let blocks: Vec<Block> = futures::stream::iter(planned)
            .map(|(spec, upload_id, block, n, batches)| {
                let columns = columns.clone();
                async move {
                    let body = encode(columns, batches).await?;
                    self.put_block(table, &spec, &upload_id, block, body)
                        .await?;
                    Ok::<_, Error>(Block {
                        partition: spec.to_string(),
                        id: block,
                        rows: n,
                    })
                }
            })
            .buffer_unordered(BLOCK_CONCURRENCY)
            .try_collect()
            .await?;
        let mut s = state.lock();
        s.reserved
            .retain(|k, _| !(k.0 == request.stream_id && k.1 == request.version && k.2 == offset));
        let versions = s.versions(session_id, &request.stream_id)?;
        let v = versions
            .iter_mut()
            .find(|v| v.version == request.version)
            .ok_or_else(|| {
                Error::not_found(ObjectKind::WriteStreamVersion, request.stream_id.clone())
            })?;
        if v.next_offset != offset {
            // Another write of the same offset won the race: these blocks replaced its rows
            // with the same rows (same offset, same blocks).
            return Ok(WriteAck {
                next_row_offset: v.next_offset,
                rows_written: 0,
                duplicate: true,
            });
        }
        v.blocks.extend(blocks);
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

    /// Empties `blocks` of `target` (an empty record stream under each id).
    async fn empty_blocks(
        &self,
        table: &TableId,
        target: &Target,
        blocks: Vec<u64>,
        body: &Bytes,
    ) -> Result<()> {
        futures::stream::iter(blocks)
            .map(|block| {
                self.put_block(table, &target.spec, &target.upload_id, block, body.clone())
            })
            .buffer_unordered(BLOCK_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    pub(super) async fn commit(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo> {
        let state = self.write_state(table, session_id).await?;
        // What to publish.
        let (kept, targets, schema, driven, dynamic_overwrite) =
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
                if self.rest.inner.clock.now_ms() > s.expiration_ms {
                    return Err(Error::SessionExpired {
                        session_id: session_id.to_string(),
                    });
                }
                if s.writing() {
                    return Err(invalid_state(
                        session_id,
                        "WRITING",
                        "a write is under way: commit once every write has answered",
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
                let kept: Vec<Block> = chosen.iter().flat_map(|v| v.blocks.clone()).collect();
                (
                    kept,
                    s.targets.values().cloned().collect::<Vec<_>>(),
                    s.schema.clone(),
                    s.driven,
                    // An overwrite whose partitions come from the data replaces only the
                    // partitions it publishes rows to, as on the other backends.
                    s.id.overwrite && s.prefix.len() < s.schema.partition_columns.len(),
                )
            };
        let rows: u64 = kept.iter().map(|b| b.rows).sum();
        let empty = empty_block(&schema)?;
        // Every upload session first: empty what is not published and check the block list.
        let mut to_commit = Vec::new();
        for target in &targets {
            let key = target.spec.to_string();
            let session = self
                .reload_upload(table, &target.spec, &target.upload_id)
                .await?;
            match session.status {
                UploadStatus::Closed => continue, // an earlier attempt committed it
                UploadStatus::Expired => {
                    return Err(Error::SessionExpired {
                        session_id: session_id.to_string(),
                    });
                }
                UploadStatus::Normal | UploadStatus::Unknown => {}
                other => {
                    return Err(invalid_state(
                        session_id,
                        other.as_str(),
                        format!("upload session {} cannot be committed", target.upload_id),
                    ));
                }
            }
            if driven {
                let keep: BTreeSet<u64> = kept
                    .iter()
                    .filter(|b| b.partition == key)
                    .map(|b| b.id)
                    .collect();
                let drop: Vec<u64> = target.sent.difference(&keep).copied().collect();
                self.empty_blocks(table, target, drop, &empty).await?;
                let session = self
                    .reload_upload(table, &target.spec, &target.upload_id)
                    .await?;
                let listed: BTreeSet<u64> = session.block_ids().into_iter().collect();
                if session.status == UploadStatus::Normal && listed != target.sent {
                    return Err(Error::Conflict {
                        table: table.to_string(),
                        message: format!(
                            "blocks not match: upload session {} lists blocks {listed:?}, this \
                             client wrote {:?}",
                            target.upload_id, target.sent
                        ),
                    });
                }
                if dynamic_overwrite && keep.is_empty() {
                    // Committing it would empty a partition this commit publishes nothing to;
                    // the upload session expires unused.
                    continue;
                }
            }
            to_commit.push(target);
        }
        for target in to_commit {
            let call = TunnelCall::new(reqwest::Method::POST, table, "commit")
                .param("uploadid", &target.upload_id)
                .partition(&target.spec)
                .session(&target.upload_id);
            if let Err(e) = self.body(&call).await {
                // The answer may have been lost after the commit landed: the session tells.
                let landed = matches!(
                    self.reload_upload(table, &target.spec, &target.upload_id).await,
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
        let (targets, schema) = {
            let mut s = state.lock();
            if s.committed.is_some() {
                return Err(invalid_state(
                    session_id,
                    "COMMITTED",
                    "a committed session cannot be aborted",
                ));
            }
            if s.writing() {
                return Err(invalid_state(
                    session_id,
                    "WRITING",
                    "a write is under way: abort once every write has answered",
                ));
            }
            s.aborted = true;
            (
                s.targets.values().cloned().collect::<Vec<_>>(),
                s.schema.clone(),
            )
        };
        let body = empty_block(&schema)?;
        for target in &targets {
            let blocks = target.sent.iter().copied().collect();
            self.empty_blocks(table, target, blocks, &body).await?;
        }
        Ok(())
    }
}

/// Marks a stream version's write as finished when dropped (also when the write fails or
/// its caller stops waiting).
struct InFlight<'a> {
    state: &'a Mutex<WriteState>,
    stream_id: &'a str,
    version: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if let Some(v) = s
            .streams
            .get_mut(self.stream_id)
            .and_then(|vs| vs.iter_mut().find(|v| v.version == self.version))
        {
            v.in_flight = false;
        }
    }
}

/// Checks and converts the batches as the local warehouse does (names, types, NOT NULL,
/// precision, partition values), and groups their rows by full partition.
fn split_rows(
    table: &TableId,
    prefix: &PartitionSpec,
    write_schema: &TableSchema,
    batches: &[RecordBatch],
) -> Result<BTreeMap<PartitionSpec, Vec<RecordBatch>>> {
    let data_schema = TableSchema {
        columns: write_schema.columns.clone(),
        partition_columns: Vec::new(),
    };
    let storage = crate::local::storage_schema(&data_schema);
    let mut out: BTreeMap<PartitionSpec, Vec<RecordBatch>> = BTreeMap::new();
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let (data, groups) = crate::local::conform(table, prefix, write_schema, &storage, batch)?;
        match groups {
            None => out.entry(prefix.clone()).or_default().push(data),
            Some(groups) => {
                for (spec, rows) in groups {
                    let indices = arrow_array::UInt32Array::from(rows);
                    let part = arrow_select::take::take_record_batch(&data, &indices)
                        .map_err(|e| Error::arrow("splitting rows by partition", e))?;
                    out.entry(spec).or_default().push(part);
                }
            }
        }
    }
    Ok(out)
}

/// Encodes batches as one record stream, on a blocking thread.
async fn encode(columns: Vec<crate::types::Column>, batches: Vec<RecordBatch>) -> Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut encoder = RecordEncoder::new(&columns)?;
        let mut out = Vec::new();
        for batch in &batches {
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
