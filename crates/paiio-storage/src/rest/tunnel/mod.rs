//! [`TunnelClient`]: the [`TableService`] over the MaxCompute **Tunnel** (docs/tunnel.md), the
//! protocol PyODPS's `open_reader` / `open_writer` speak, and the only one a public endpoint
//! reaches.
//!
//! It shares the REST client's machinery (one [`RestClient`] inside): the HTTP client, tunnel
//! discovery (`GET {endpoint}/projects/{p}/tunnel?service`, cached per project on a client of
//! one endpoint and quota), signing (legacy or V4, relative to the tunnel endpoint), error
//! parsing (XML) and the one retry loop with its budget.
//!
//! * **Metadata** (`describe_table`, `table_schema`, `list_partitions`) comes from the ODPS
//!   metadata API on the ODPS endpoint (`GET /projects/p/tables/t`, `?partitions`), see
//!   `meta.rs`.
//! * **Reads** (`read.rs`): a read session is one download session per (table, full partition
//!   spec), concatenated into one global row space. Its id encodes the download ids, the
//!   partitions, their row counts and the session's options (`layout.rs`), so
//!   [`get_read_session`](TableService::get_read_session) and
//!   [`read`](TableService::read) in another process reload by `DownloadID` and never create
//!   sessions again. Rows are fetched as the chunked Arrow stream (`?data&arrow`), every CRC
//!   checked, and a cut body (or a clean one with rows missing) resumes at the first row not
//!   yet received.
//! * **Writes** (`write.rs`): a write session is an upload session; every write request is one
//!   buffered block (a record stream), replayed under the same block id on a retry, so a
//!   block never lands twice. Streams and their versions are kept by this client; a commit
//!   empties the blocks it must not publish (superseded versions, unlisted streams), reloads
//!   the session, checks the block list and commits, and a commit whose answer was lost is
//!   recognised by the session's `CLOSED` status.

mod layout;
mod meta;
mod read;
mod shared;
mod write;

pub use shared::SHARE_WINDOW_MS as TUNNEL_SHARE_WINDOW_MS;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::protocol::error::ErrorContext;
use crate::protocol::tunnel::session::{DownloadSession, DownloadStatus, UploadSession};
use crate::service::{
    CommitInfo, PartitionInfo, ReadRequest, ReadSession, ReadSessionRequest, RecordBatchStream,
    ServiceHints, TableInfo, TableService, WriteAck, WriteRequest, WriteSession,
    WriteSessionRequest, WriteStream,
};
use crate::types::TableSchema;
use crate::uri::{PartitionSpec, TableId};

use super::RestClient;
use super::retry::Idempotency;
use super::transport::{Budget, Request, enc};

pub use layout::SESSION_PREFIX;

/// The Tunnel protocol version this client speaks (`x-odps-tunnel-version`).
pub const TUNNEL_VERSION: &str = "6";

/// How a [`TunnelClient`] asks for rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFormat {
    /// The chunked Arrow stream (`?data&arrow`), unless a column read has a type PyODPS's
    /// Arrow path refuses (JSON, INTERVAL_YEAR_MONTH, BLOB, at any depth): then records.
    #[default]
    Auto,
    /// Always the chunked Arrow stream (§4).
    Arrow,
    /// Always the protobuf record stream (§3), which every type has.
    Records,
}

/// The Tunnel client. Cheap to clone (shared state).
#[derive(Clone)]
pub struct TunnelClient {
    rest: RestClient,
    state: Arc<State>,
    format: ReadFormat,
    shared: shared::SharedSessions,
}

impl std::fmt::Debug for TunnelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelClient")
            .field("endpoint", &self.rest.inner.endpoint)
            .field("tunnel", &self.rest.inner.tunnel)
            .field("project", &self.rest.inner.project)
            .finish()
    }
}

#[derive(Default)]
struct State {
    /// Read sessions this client knows, by session id.
    reads: Mutex<HashMap<String, Arc<read::Resolved>>>,
    /// Write sessions this client drives, by session id.
    writes: Mutex<HashMap<String, Arc<Mutex<write::WriteState>>>>,
}

/// One Tunnel call on a table: `{tunnel}/projects/{p}[/schemas/{s}]/tables/{t}?{query}`.
pub(super) struct TunnelCall<'a> {
    method: reqwest::Method,
    table: &'a TableId,
    /// The query before the common parameters, in order; a `None` value is a bare key.
    params: Vec<(&'static str, Option<String>)>,
    partition: Option<&'a PartitionSpec>,
    body: Bytes,
    headers: Vec<(String, String)>,
    idempotency: Idempotency,
    streaming: bool,
    what: &'static str,
    session: Option<&'a str>,
}

impl<'a> TunnelCall<'a> {
    fn new(method: reqwest::Method, table: &'a TableId, what: &'static str) -> Self {
        TunnelCall {
            method,
            table,
            params: Vec::new(),
            partition: None,
            body: Bytes::new(),
            headers: Vec::new(),
            idempotency: Idempotency::Safe,
            streaming: false,
            what,
            session: None,
        }
    }

    fn key(mut self, key: &'static str) -> Self {
        self.params.push((key, None));
        self
    }

    fn param(mut self, key: &'static str, value: impl ToString) -> Self {
        self.params.push((key, Some(value.to_string())));
        self
    }

    fn partition(mut self, spec: &'a PartitionSpec) -> Self {
        if !spec.is_empty() {
            self.partition = Some(spec);
        }
        self
    }

    fn session(mut self, id: &'a str) -> Self {
        self.session = Some(id);
        self
    }
}

/// The Tunnel resource of a table: `/projects/{p}[/schemas/{s}]/tables/{t}`.
fn resource(table: &TableId) -> String {
    match &table.schema {
        Some(s) => format!(
            "/projects/{}/schemas/{}/tables/{}",
            enc(&table.project),
            enc(s),
            enc(&table.table)
        ),
        None => format!(
            "/projects/{}/tables/{}",
            enc(&table.project),
            enc(&table.table)
        ),
    }
}

impl TunnelClient {
    /// A Tunnel client over the machinery of `rest` (its endpoint, credentials, tunnel
    /// endpoint or discovery, project, quota and retry policy).
    pub fn new(rest: RestClient) -> Self {
        TunnelClient {
            rest,
            state: Arc::new(State::default()),
            format: ReadFormat::Auto,
            shared: shared::SharedSessions::from_env(),
        }
    }

    /// Where download sessions are shared with other processes (`None`: nowhere); by default
    /// the directory the environment names (docs/tunnel.md §11.1).
    pub fn share_sessions(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.shared = shared::SharedSessions::new(dir);
        self
    }

    /// How rows are asked for (default [`ReadFormat::Auto`]).
    pub fn read_format(mut self, format: ReadFormat) -> Self {
        self.format = format;
        self
    }

    /// A client from a configuration (the same keys as [`RestClient::from_config`]).
    pub fn from_config(config: &Config) -> Result<Self> {
        Ok(Self::new(RestClient::from_config(config)?))
    }

    /// The REST client whose machinery this client uses (its counters count Tunnel calls).
    pub fn rest(&self) -> &RestClient {
        &self.rest
    }

    fn curr_project<'a>(&'a self, table: &'a TableId) -> &'a str {
        self.rest
            .inner
            .project
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(&table.project)
    }

    /// The request of a Tunnel call (signed on every attempt by the retry loop).
    fn request(&self, call: &TunnelCall<'_>) -> Request {
        let mut query: Vec<String> = call
            .params
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={}", enc(v)),
                None => (*k).to_string(),
            })
            .collect();
        query.push(format!(
            "curr_project={}",
            enc(self.curr_project(call.table))
        ));
        if let Some(spec) = call.partition {
            query.push(format!("partition={}", enc(&spec.to_string())));
        }
        if let Some(q) = &self.rest.inner.quota_name {
            query.push(format!("quotaName={}", enc(q)));
        }
        let mut headers = vec![
            (
                "x-odps-tunnel-version".to_string(),
                TUNNEL_VERSION.to_string(),
            ),
            ("odps-tunnel-date-transform".to_string(), "v1".to_string()),
            (
                "odps-tunnel-sdk-support-schema-evolution".to_string(),
                "true".to_string(),
            ),
        ];
        headers.extend(call.headers.iter().cloned());
        Request {
            method: call.method.clone(),
            relative: format!("{}?{}", resource(call.table), query.join("&")),
            headers,
            body: call.body.clone(),
            idempotency: call.idempotency,
            streaming: call.streaming,
            retry_headers: true,
            direct: false,
            what: format!("Tunnel {}", call.what),
        }
    }

    /// Sends a Tunnel call with retries within `budget` until a 2xx answer.
    async fn execute_in(
        &self,
        call: &TunnelCall<'_>,
        budget: &mut Budget,
    ) -> Result<reqwest::Response> {
        let base = self.rest.inner.tunnel_for(&call.table.project).await?;
        let ctx = ErrorContext {
            table: Some(call.table.to_string()),
            session_id: call.session.map(str::to_string),
            ..Default::default()
        };
        let request = self.request(call);
        self.rest
            .inner
            .execute_request(&base, &request, &ctx, budget)
            .await
    }

    /// A Tunnel call whose answer is a whole (JSON) body; a body that breaks is asked again
    /// when the call is safe to repeat.
    async fn body(&self, call: &TunnelCall<'_>) -> Result<Bytes> {
        let mut budget = Budget::new(&self.rest.inner.retry);
        loop {
            let resp = self.execute_in(call, &mut budget).await?;
            match super::transport::answer_bytes(resp).await {
                Ok(body) => return Ok(body),
                Err(e) if !e.is_transport() => return Err(e.into_error(call.what)),
                Err(e) => {
                    let error = e.into_error(call.what);
                    if call.idempotency == Idempotency::Unsafe {
                        return Err(error);
                    }
                    match self.rest.inner.next_retry(&mut budget, None) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => return Err(error),
                    }
                }
            }
        }
    }

    // ---- download sessions ----

    /// `POST ?downloads=` for one table or full partition, polled while `INITIATING`.
    async fn create_download(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
    ) -> Result<DownloadSession> {
        let call = TunnelCall::new(reqwest::Method::POST, table, "create download session")
            .param("downloads", "")
            .partition(partition);
        let session = DownloadSession::from_json(&self.body(&call).await?)?;
        self.ready_download(table, partition, session).await
    }

    /// `GET ?downloadid=ID`.
    async fn reload_download(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        id: &str,
    ) -> Result<DownloadSession> {
        let call = TunnelCall::new(reqwest::Method::GET, table, "reload download session")
            .param("downloadid", id)
            .partition(partition)
            .session(id);
        DownloadSession::from_json(&self.body(&call).await?)
    }

    /// Polls a session while it is `INITIATING` (0.1 s, doubling, at most 5 s apart).
    async fn ready_download(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        mut session: DownloadSession,
    ) -> Result<DownloadSession> {
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(100);
        while session.status == DownloadStatus::Initiating {
            if started.elapsed() > self.rest.inner.init_poll_timeout {
                return Err(Error::Transient {
                    message: format!(
                        "download session {} still initiating after {:?}",
                        session.id,
                        started.elapsed()
                    ),
                    retryable: true,
                    source: None,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
            session = self.reload_download(table, partition, &session.id).await?;
        }
        Ok(session)
    }

    // ---- upload sessions ----

    async fn reload_upload(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        id: &str,
    ) -> Result<UploadSession> {
        let call = TunnelCall::new(reqwest::Method::GET, table, "reload upload session")
            .param("uploadid", id)
            .param("reload", "True")
            .partition(partition)
            .session(id);
        UploadSession::from_json(&self.body(&call).await?)
    }
}

#[async_trait]
impl TableService for TunnelClient {
    fn name(&self) -> &'static str {
        "tunnel"
    }

    fn hints(&self) -> ServiceHints {
        ServiceHints::default()
    }

    async fn describe_table(&self, table: &TableId) -> Result<TableInfo> {
        self.describe(table).await
    }

    async fn table_schema(&self, table: &TableId) -> Result<TableSchema> {
        self.schema_of(table).await
    }

    async fn list_partitions(&self, table: &TableId) -> Result<Vec<PartitionInfo>> {
        self.partitions(table, None).await
    }

    async fn create_read_session(&self, request: &ReadSessionRequest) -> Result<ReadSession> {
        self.create_read(request).await
    }

    async fn get_read_session(
        &self,
        table: &TableId,
        session_id: &str,
        refresh: bool,
    ) -> Result<ReadSession> {
        // Download sessions live their fixed time: a refresh cannot push it forward, and
        // refreshing an expired session is an error, as on the other backends.
        let session = self.get_read(table, session_id).await?;
        if refresh && session.status == crate::service::SessionStatus::Expired {
            return Err(Error::SessionExpired {
                session_id: session_id.to_string(),
            });
        }
        Ok(session)
    }

    async fn read(&self, request: &ReadRequest) -> Result<RecordBatchStream> {
        self.read_rows(request).await
    }

    async fn preview(
        &self,
        table: &TableId,
        partition: Option<&PartitionSpec>,
        columns: &[String],
        limit: u64,
    ) -> Result<RecordBatchStream> {
        self.preview_rows(table, partition, columns, limit).await
    }

    async fn create_write_session(&self, request: &WriteSessionRequest) -> Result<WriteSession> {
        self.create_write(request).await
    }

    async fn get_write_session(&self, table: &TableId, session_id: &str) -> Result<WriteSession> {
        self.get_write(table, session_id).await
    }

    async fn create_write_stream_version(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        version: Option<u64>,
        exactly_once: bool,
    ) -> Result<WriteStream> {
        self.create_stream(table, session_id, stream_id, version, exactly_once)
            .await
    }

    async fn get_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<WriteStream> {
        self.get_stream(table, session_id, stream_id).await
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteAck> {
        self.write_block(request).await
    }

    async fn close_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<WriteStream> {
        self.close_stream(table, session_id, stream_id, version)
            .await
    }

    async fn commit_write_session(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo> {
        self.commit(table, session_id, streams).await
    }

    async fn abort_write_session(&self, table: &TableId, session_id: &str) -> Result<()> {
        self.abort(table, session_id).await
    }
}
