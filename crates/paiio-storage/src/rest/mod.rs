//! [`RestClient`]: the [`TableService`] over HTTP, speaking the MaxCompute Storage API V2
//! (`POST {tunnel}/api/storage/v2?Action=...&Target=...`, docs/storage-api.md §6).
//!
//! ```no_run
//! # async fn demo() -> paiio_storage::Result<()> {
//! use paiio_storage::{TableService, config::Config, rest::RestClient};
//! let config = Config::load()?;
//! let client = RestClient::from_config(&config)?;
//! let table = paiio_storage::TableId::new("my_project", None, "my_table")?;
//! let info = client.describe_table(&table).await?;
//! println!("{} rows", info.row_count);
//! # Ok(()) }
//! ```
//!
//! What it does on the wire:
//!
//! * **Endpoints.** The ODPS endpoint (`http://host:port/api`) is only used for tunnel
//!   discovery (`GET {endpoint}/projects/{p}/tunnel?service`, cached per project) unless a
//!   tunnel endpoint is configured; every storage call goes to the tunnel endpoint.
//! * **Signing.** Every request is signed (§3): V4 when a region is known
//!   ([`Config::region_for_signing`]), legacy otherwise; anonymous without credentials.
//!   `x-odps-user-agent` is `paiio-rs/<version>`; `curr_project` is on every call.
//! * **Route tokens** (§8.7) are kept per session, sent on later calls of that session, and
//!   replaced by any token a response carries.
//! * **Reads** decode the Arrow IPC body incrementally, asking for `zstd` / `x-lz4-frame`
//!   body compression as configured or, by default, as the link calls for
//!   ([`ReadCompression::Auto`], `codec_choice.rs`), and **resume** a broken body exactly where it
//!   broke (a split with `SkipRowNum = rows delivered`, a row range with
//!   `Offset + delivered, Count - delivered`), within the retry budget.
//! * **Writes** send one Arrow IPC stream per request with LZ4_FRAME buffer compression.
//! * **Retries** follow [`retry`]: only what is safe to repeat.
//!
//! What the V2 API does not tell, and how this client copes (known gaps):
//!
//! * [`TableService::describe_table`] reads the full schema with `TableGetWriteSchema` (no
//!   session; falls back to a read session's schema) and the row count and size from a
//!   throwaway RowOffset read session (left to expire: V2 has no call to drop one).
//!   **Partitions are not listed** (empty), and the table version and last-modified time are
//!   only known when the server sends the (non-standard) `TableVersion` field.
//! * A Size session answers `RecordCount: -1` on the wire; the client reports
//!   `SessionStats.EstimatedRowCount` instead when the server gives it, else -1.
//! * `SplitMode` is echoed as `Size` for Parallelism sessions; the client reports the mode it
//!   asked for (kept per session).
//! * Write sessions do not echo their partition, overwrite flag and mode; the client keeps
//!   what it created them with (other clients' sessions report the defaults unless the
//!   server sends `PartialPartitionSpec` / `Overwrite` / `WriteMode`).
//! * Commit answers `{}`: the committed rows are summed from the session's closed streams
//!   before the commit, and the committed table version is only known when the server sends
//!   `TableVersion` (or `CommittedVersion`); otherwise it is 0.
//! * A write's `duplicate` flag: from the server's `Duplicate` field when present, else
//!   inferred from the offsets this client has seen acknowledged.
//! * Catalog calls (create/drop/list tables, drop partition) are not part of the Storage
//!   API: they answer [`Error::NotSupported`].
//!
//! Read sessions are **refreshed** by the client: it keeps each session's `ExpirationTime`
//! (from create/get), and before a `TableRead` whose session is within a margin of expiry
//! (the smaller of [`RestClientBuilder::session_refresh_margin`], default 5 minutes, and a
//! tenth of the session's lifetime, by the client's [`Clock`]) it calls
//! `TableGetReadSession` with `session_refresh=true`. A read answered `SessionExpired` is
//! refreshed once and retried; when the refresh itself answers `SessionExpired`, the read
//! fails with [`Error::SessionExpired`].
//!
//! [`RestClient::stats`] counts attempts, retries, resumes and refreshes (for tests and
//! diagnostics); one budget ([`RetryConfig`]) bounds every run of attempts without progress,
//! including the re-opens of a resumed read.
//!
//! The code is laid out by role: this module has the [`RestClient`] and its
//! [`TableService`] implementation; `builder.rs` its configuration
//! ([`RestClientBuilder`]); `transport.rs` the request machinery (signing, sending,
//! retrying, JSON calls, tunnel discovery); `session_memory.rs` what the client remembers of
//! sessions; `read_stream.rs` the resumable row stream; `stats.rs` the counters
//! ([`ClientStats`]); `body.rs` the incremental decoding of a read's body; and [`retry`] what
//! is retried, and when.

mod auto;
mod body;
mod builder;
mod codec_choice;
#[cfg(unix)]
mod direct;
mod ranged;
mod read_stream;
pub mod retry;
mod session_memory;
mod stats;
mod transport;
pub mod tunnel;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::json;

use crate::auth::{Credentials, SignatureVersion};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, ObjectKind, Result};
use crate::protocol::codec::{BodyEncoding, encode_ipc};
use crate::protocol::headers;
use crate::protocol::storage::{
    Action, CommitRequest, CreateReadSessionRequest, CreateWriteSessionRequest, PreviewRequest,
    ReadSessionResponse, StreamRequest, WriteResponse, WriteSchemaResponse, WriteSessionResponse,
    WriteStreamResponse, malformed,
};
use crate::service::{
    CommitInfo, ReadRequest, ReadSession, ReadSessionRequest, RecordBatchStream, SessionStatus,
    SplitMode, SplitOptions, StreamStatus, TableInfo, TableService, WriteAck, WriteMode,
    WriteRequest, WriteSession, WriteSessionRequest, WriteStream,
};
use crate::types::TableSchema;
use crate::uri::{PartitionSpec, TableId};

pub use auto::{AutoClient, Chosen};
pub use builder::{DEFAULT_READ_PARALLELISM, DEFAULT_REFRESH_MARGIN, RestClientBuilder};
pub use codec_choice::ReadCompression;
use read_stream::Source;
pub use retry::{Idempotency, Jitter, RetryConfig};
use session_memory::{Expiry, ReadMeta, WriteMeta};
pub use stats::ClientStats;
use stats::Stats;
pub use transport::USER_AGENT;
use transport::{Budget, Call, CallBody};
pub use tunnel::{ReadFormat, TUNNEL_SHARE_WINDOW_MS, TunnelClient};

/// The Storage API V2 client. Cheap to clone (shared state).
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("endpoint", &self.inner.endpoint)
            .field("tunnel", &self.inner.tunnel)
            .field("credentials", &self.inner.credentials)
            .field("signature", &self.inner.signature)
            .field("project", &self.inner.project)
            .finish()
    }
}

struct Inner {
    http: reqwest::Client,
    /// The connections of direct reads (`direct.rs`); `None`: reads use `http` as well.
    #[cfg(unix)]
    direct: Option<Arc<direct::DirectPool>>,
    endpoint: String,
    tunnel: Option<String>,
    credentials: Option<Credentials>,
    signature: SignatureVersion,
    project: Option<String>,
    quota_name: Option<String>,
    user_agent: String,
    request_timeout: Duration,
    retry: RetryConfig,
    read_compression: ReadCompression,
    /// The choice of [`ReadCompression::Auto`].
    codecs: Arc<codec_choice::CodecChooser>,
    /// Requests one row-range read makes at once (`ranged.rs`; 1: one request).
    read_parallelism: usize,

    init_poll_timeout: Duration,
    clock: Arc<dyn Clock>,
    refresh_margin: Duration,
    /// Read sessions' expiration times, by session id.
    expiry: Mutex<HashMap<String, Expiry>>,
    stats: Stats,
    /// Discovered tunnel endpoints by project.
    tunnels: Mutex<HashMap<String, String>>,
    /// Route tokens by session id.
    route_tokens: Mutex<HashMap<String, String>>,
    read_meta: Mutex<HashMap<String, ReadMeta>>,
    write_meta: Mutex<HashMap<String, WriteMeta>>,
    /// The highest acknowledged next-row offset per (session, stream, version).
    acked: Mutex<HashMap<(String, String, u64), u64>>,
}

impl RestClient {
    /// A builder for the ODPS endpoint `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> RestClientBuilder {
        RestClientBuilder::new(endpoint)
    }

    /// A client from a configuration (see [`RestClientBuilder::from_config`]).
    pub fn from_config(config: &Config) -> Result<Self> {
        RestClientBuilder::from_config(config)?.build()
    }

    /// The ODPS endpoint.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The route token kept for a session, if any.
    pub fn route_token(&self, session_id: &str) -> Option<String> {
        self.inner.route_tokens.lock().get(session_id).cloned()
    }

    /// The client's counters (attempts, retries, resumes, refreshes).
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.snapshot()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        self.inner.stats.reset();
    }

    /// The expiration time (epoch ms) the client knows for a read session, if any.
    pub fn read_session_expiration(&self, session_id: &str) -> Option<i64> {
        self.inner
            .expiry
            .lock()
            .get(session_id)
            .map(|e| e.expiration_ms)
    }

    /// The tunnel endpoint of `project`: the configured one, or discovered (and cached).
    pub async fn tunnel_endpoint(&self, project: &str) -> Result<String> {
        self.inner.tunnel_for(project).await
    }
}

// ---------------------------------------------------------------------------------------
// Session calls
// ---------------------------------------------------------------------------------------

impl RestClient {
    async fn get_read_session_raw(
        &self,
        table: &TableId,
        session_id: &str,
        refresh: bool,
    ) -> Result<ReadSession> {
        let mut call =
            Call::new(Action::TableGetReadSession, table, &json!({})).session(session_id);
        if refresh {
            call = call.param("session_refresh", "true");
        }
        let (answer, _) = self.inner.json(&call).await?;
        self.read_session(table, answer)
    }

    /// The full table schema: `TableGetWriteSchema` without a session (falls back to the
    /// schema of a read session when the server wants a session).
    async fn write_schema(&self, table: &TableId) -> Result<Option<TableSchema>> {
        let call = Call::new(Action::TableGetWriteSchema, table, &json!({}));
        match self.inner.json::<WriteSchemaResponse>(&call).await {
            Ok((answer, _)) => answer.schema(),
            Err(
                e @ Error::NotFound {
                    kind: ObjectKind::Table,
                    ..
                },
            ) => Err(e),
            Err(e @ (Error::Unauthenticated { .. } | Error::Transient { .. })) => Err(e),
            Err(_) => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// TableService
// ---------------------------------------------------------------------------------------

#[async_trait]
impl TableService for RestClient {
    fn name(&self) -> &'static str {
        "rest"
    }

    async fn describe_table(&self, table: &TableId) -> Result<TableInfo> {
        table.validate()?;
        let full = self.write_schema(table).await?;
        let mut request = ReadSessionRequest::new(table.clone());
        request.split_options = SplitOptions::row_offset();
        if let Some(s) = &full {
            request.required_partition_columns =
                s.partition_columns.iter().map(|c| c.name.clone()).collect();
        }
        let session = self.create_read_session(&request).await?;
        Ok(TableInfo {
            table: table.clone(),
            schema: full.unwrap_or(session.schema),
            version: session.table_version,
            row_count: session.record_count.max(0) as u64,
            size_bytes: session.estimated_size.max(0) as u64,
            // Not available over the Storage API.
            partitions: Vec::new(),
            last_modified_ms: 0,
        })
    }

    /// `TableGetWriteSchema` alone; a server without it answers through
    /// [`describe_table`](TableService::describe_table).
    async fn table_schema(&self, table: &TableId) -> Result<TableSchema> {
        table.validate()?;
        match self.write_schema(table).await? {
            Some(schema) => Ok(schema),
            None => Ok(self.describe_table(table).await?.schema),
        }
    }

    async fn create_read_session(&self, request: &ReadSessionRequest) -> Result<ReadSession> {
        request.table.validate()?;
        let opts = request.split_options;
        // The service reads SplitNumber 0 as "its default"; the trait's 0 is no size at all.
        match (opts.mode, opts.number) {
            (SplitMode::Size, 0) => return Err(Error::invalid("split size", "0 bytes")),
            (SplitMode::Parallelism, 0) => {
                return Err(Error::invalid(
                    "split number",
                    "Parallelism mode needs at least 1 split",
                ));
            }
            _ => {}
        }
        let body = CreateReadSessionRequest::from(request);
        let call = Call::new(Action::TableCreateReadSession, &request.table, &body);
        let (answer, token) = self.inner.json::<ReadSessionResponse>(&call).await?;
        let session_id = answer.session_id.clone();
        if session_id.is_empty() {
            return Err(malformed("TableCreateReadSession", "no SessionId"));
        }
        if let Some(token) = token {
            self.inner
                .route_tokens
                .lock()
                .insert(session_id.clone(), token);
        }
        self.inner.read_meta.lock().insert(
            session_id,
            ReadMeta {
                split_mode: opts.mode,
                arrow_options: request.arrow_options,
            },
        );
        let message = answer.message.clone();
        let mut session = self.read_session(&request.table, answer)?;
        // Planning is asynchronous on the real service: wait while INIT.
        let started = Instant::now();
        while session.status == SessionStatus::Init {
            if started.elapsed() > self.inner.init_poll_timeout {
                return Err(Error::Transient {
                    message: format!(
                        "read session {} still planning after {:?}",
                        session.session_id,
                        started.elapsed()
                    ),
                    retryable: true,
                    source: None,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            session = self
                .get_read_session_raw(&request.table, &session.session_id, false)
                .await?;
        }
        if session.status == SessionStatus::Critical {
            return Err(Error::Service {
                status: 200,
                code: "SessionCritical".into(),
                message: format!("read session {} failed: {message}", session.session_id),
                request_id: String::new(),
            });
        }
        Ok(session)
    }

    async fn get_read_session(
        &self,
        table: &TableId,
        session_id: &str,
        refresh: bool,
    ) -> Result<ReadSession> {
        self.get_read_session_raw(table, session_id, refresh).await
    }

    async fn read(&self, request: &ReadRequest) -> Result<RecordBatchStream> {
        match self.read_ranged(request).await {
            Some(stream) => stream,
            None => self.read_one(request).await,
        }
    }

    async fn preview(
        &self,
        table: &TableId,
        partition: Option<&PartitionSpec>,
        columns: &[String],
        limit: u64,
    ) -> Result<RecordBatchStream> {
        let source = Source::Preview {
            table: table.clone(),
            body: PreviewRequest {
                limit: Some(limit),
                partition: partition.filter(|p| !p.is_empty()).map(|p| p.to_string()),
                columns: columns.to_vec(),
            },
        };
        let mut budget = Budget::new(&self.inner.retry);
        let first = self
            .open_rows(&source, 0, BodyEncoding::Identity, &mut budget)
            .await?
            .ok_or_else(|| Error::invalid("preview", "nothing to read"))?;
        Ok(self.row_stream(source, first, budget))
    }

    async fn create_write_session(&self, request: &WriteSessionRequest) -> Result<WriteSession> {
        request.table.validate()?;
        let body = CreateWriteSessionRequest::from(request);
        let mut call = Call::new(Action::TableCreateWriteSession, &request.table, &body);
        if request.mode == WriteMode::BatchCompatible {
            call = call.param("WriteMode", "BatchCompatible");
        }
        let (answer, token) = self.inner.json::<WriteSessionResponse>(&call).await?;
        let session_id = answer
            .session_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| malformed("TableCreateWriteSession", "no SessionId"))?;
        if let Some(token) = token {
            self.inner
                .route_tokens
                .lock()
                .insert(session_id.clone(), token);
        }
        self.inner.write_meta.lock().insert(
            session_id.clone(),
            WriteMeta {
                partition: request.partition.clone(),
                overwrite: request.overwrite,
                mode: request.mode,
                committed: None,
            },
        );
        self.get_write_session(&request.table, &session_id).await
    }

    async fn get_write_session(&self, table: &TableId, session_id: &str) -> Result<WriteSession> {
        let mut call =
            Call::new(Action::TableGetWriteSession, table, &json!({})).session(session_id);
        let meta = self.write_meta(session_id);
        if meta
            .as_ref()
            .is_some_and(|m| m.mode == WriteMode::BatchCompatible)
        {
            call = call.param("WriteMode", "BatchCompatible");
        }
        let (answer, _) = self.inner.json::<WriteSessionResponse>(&call).await?;
        let meta = meta.unwrap_or_default();
        answer.into_session(WriteSession {
            session_id: session_id.to_string(),
            table: table.clone(),
            status: SessionStatus::Normal,
            expiration_time_ms: 0,
            partition: meta.partition,
            overwrite: meta.overwrite,
            mode: meta.mode,
            write_schema: TableSchema::default(),
            streams: Vec::new(),
            committed_version: meta.committed.map(|c| c.version),
        })
    }

    async fn create_write_stream_version(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        version: Option<u64>,
        exactly_once: bool,
    ) -> Result<WriteStream> {
        let body = StreamRequest {
            stream_id: stream_id.map(str::to_string),
            stream_version: version,
            exactly_once_mode: exactly_once.then_some(true),
            ..Default::default()
        };
        let mut call = Call::new(Action::TableCreateWriteStream, table, &body).session(session_id);
        // A repeated create makes another version (or, without an id, another stream that
        // would stay open): only an explicit version makes a retry harmless.
        if version.is_none() || stream_id.is_none() {
            call = call.unsafe_to_repeat();
        }
        if let Some(id) = stream_id {
            call.ctx.stream_id = Some(id.to_string());
        }
        let (answer, _) = self.inner.json::<WriteStreamResponse>(&call).await?;
        let no_status = answer.status.is_none();
        let mut stream = answer.into_stream(stream_id.zip(version))?;
        if exactly_once && stream.access_token.is_empty() {
            return Err(malformed(
                "TableCreateWriteStream",
                "exactly-once was asked for but no AccessToken came back",
            ));
        }
        stream.exactly_once = exactly_once;
        if no_status {
            stream.status = StreamStatus::Open;
        }
        Ok(stream)
    }

    async fn get_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<WriteStream> {
        let body = StreamRequest {
            stream_id: Some(stream_id.to_string()),
            ..Default::default()
        };
        let mut call = Call::new(Action::TableGetWriteStream, table, &body)
            .session(session_id)
            .param("StreamId", stream_id);
        call.ctx.stream_id = Some(stream_id.to_string());
        let (answer, _) = self.inner.json::<WriteStreamResponse>(&call).await?;
        answer.into_stream(None)
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteAck> {
        let rows: u64 = request.batches.iter().map(|b| b.num_rows() as u64).sum();
        let ipc = {
            let batches = request.batches;
            tokio::task::spawn_blocking(move || {
                encode_ipc(&batches, Some(arrow_ipc::CompressionType::LZ4_FRAME))
            })
            .await
            .map_err(|e| Error::Transient {
                message: format!("encoding task failed: {e}"),
                retryable: false,
                source: None,
            })??
        };
        let mut call = Call::new(Action::TableWrite, &request.table, &())
            .session(&request.session_id)
            .param("StreamId", &request.stream_id)
            .param("StreamVersion", request.version)
            .param("Count", rows);
        call.body = CallBody::Arrow(Bytes::from(ipc));
        call.ctx.stream_id = Some(request.stream_id.clone());
        if let Some(offset) = request.row_offset {
            call = call.param("RowOffset", offset);
        } else {
            // Without an offset the server cannot tell a replay: never repeat once sent.
            call = call.unsafe_to_repeat();
        }
        if let Some(token) = &request.access_token {
            call.headers
                .push((headers::WRITE_ACCESS_TOKEN.into(), token.clone()));
        }
        let (answer, _) = self.inner.json::<WriteResponse>(&call).await?;
        let key = (
            request.session_id.clone(),
            request.stream_id.clone(),
            request.version,
        );
        let mut acked = self.inner.acked.lock();
        let known = acked.get(&key).copied();
        let server_offset = answer
            .exactly_once_row_offset
            .filter(|n| *n >= 0)
            .map(|n| n as u64);
        let (next, duplicate) = match request.row_offset {
            Some(offset) => {
                let next = server_offset.unwrap_or(offset + rows);
                let duplicate = answer.duplicate.unwrap_or(
                    rows > 0 && (known.is_some_and(|k| offset < k) || next != offset + rows),
                );
                (next, duplicate)
            }
            None => (server_offset.unwrap_or(known.unwrap_or(0) + rows), false),
        };
        acked.insert(key, next.max(known.unwrap_or(0)));
        let rows_written = match answer.rows_written {
            Some(n) => n,
            None if duplicate => 0,
            None => rows,
        };
        Ok(WriteAck {
            next_row_offset: next,
            rows_written,
            duplicate,
        })
    }

    async fn close_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<WriteStream> {
        let body = StreamRequest {
            session_id: Some(session_id.to_string()),
            stream_id: Some(stream_id.to_string()),
            stream_version: Some(version),
            exactly_once_mode: None,
        };
        // Closing a version is idempotent (it stays closed), so a close is retried like a
        // safe call; and when the outcome is unknown (the budget ran out on failures that
        // may have happened after the close), or a retry is answered with an error (the
        // first attempt closed it, its answer was lost), the stream's state decides.
        let mut call = Call::new(Action::TableCloseWriteStream, table, &body).session(session_id);
        call.ctx.stream_id = Some(stream_id.to_string());
        let mut budget = Budget::new(&self.inner.retry);
        let result = self
            .inner
            .json_in::<serde::de::IgnoredAny>(&call, &mut budget)
            .await;
        if let Err(e) = result {
            if !(e.is_retryable() || budget.attempts > 1) {
                return Err(e);
            }
            let closed = match self.get_write_stream(table, session_id, stream_id).await {
                Ok(s) => s.version == version && s.status == StreamStatus::Closed,
                Err(_) => false,
            };
            if !closed {
                return Err(e);
            }
        }
        let mut stream = self.get_write_stream(table, session_id, stream_id).await?;
        if stream.version == version {
            stream.status = StreamStatus::Closed;
        }
        Ok(stream)
    }

    async fn commit_write_session(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo> {
        // The rows the commit makes visible, from the session's streams (the answer is `{}`).
        let before = self.get_write_session(table, session_id).await?;
        let rows_before: u64 = match streams {
            None => before
                .streams
                .iter()
                .filter(|s| s.status == StreamStatus::Closed)
                .map(|s| s.row_offset)
                .sum(),
            Some(list) => {
                let mut seen: Vec<&(String, u64)> = Vec::new();
                let mut total = 0;
                for pair in list {
                    if seen.contains(&pair) {
                        continue;
                    }
                    seen.push(pair);
                    total += before
                        .streams
                        .iter()
                        .find(|s| s.stream_id == pair.0 && s.version == pair.1)
                        .map_or(0, |s| s.row_offset);
                }
                total
            }
        };
        let body = CommitRequest::streams(streams);
        let call = Call::new(Action::TableCommitWriteSession, table, &body).session(session_id);
        let (answer, _) = self.inner.json::<WriteSessionResponse>(&call).await?;
        let known = self.write_meta(session_id).and_then(|m| m.committed);
        let info = CommitInfo {
            version: answer
                .table_version
                .or(answer.committed_version)
                .or(answer.version)
                .or(known.map(|k| k.version))
                .unwrap_or(0),
            rows: answer
                .record_count
                .or(known
                    .filter(|_| before.status == SessionStatus::Committed)
                    .map(|k| k.rows))
                .unwrap_or(rows_before),
        };
        self.inner
            .write_meta
            .lock()
            .entry(session_id.to_string())
            .or_default()
            .committed = Some(info);
        self.inner.acked.lock().retain(|k, _| k.0 != session_id);
        Ok(info)
    }

    async fn abort_write_session(&self, table: &TableId, session_id: &str) -> Result<()> {
        let call = Call::new(Action::TableAbortWriteSession, table, &json!({}))
            .session(session_id)
            .unsafe_to_repeat();
        self.inner.json::<serde::de::IgnoredAny>(&call).await?;
        self.inner.acked.lock().retain(|k, _| k.0 != session_id);
        Ok(())
    }
}
