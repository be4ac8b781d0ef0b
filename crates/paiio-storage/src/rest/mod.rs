//! [`RestClient`]: the [`TableService`] over HTTP, speaking the MaxCompute Storage API V2
//! (`POST {tunnel}/api/storage/v2?Action=...&Target=...`, STORAGE_API.md §6).
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
//! * **Reads** decode the Arrow IPC body incrementally, optionally asking for
//!   `zstd` / `x-lz4-frame` body compression, and **resume** a broken body exactly where it
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

mod body;
pub mod retry;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::auth::{Credentials, SignatureVersion, sign_request};
use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, Config};
use crate::error::{Error, ObjectKind, Result};
use crate::protocol::codec::{BodyEncoding, StreamError, encode_ipc};
use crate::protocol::error::{ErrorContext, from_response};
use crate::protocol::headers;
use crate::protocol::storage::{
    Action, CommitRequest, CreateReadSessionRequest, CreateWriteSessionRequest, PreviewRequest,
    ReadSessionResponse, StreamRequest, TableReadRequest, WriteResponse, WriteSchemaResponse,
    WriteSessionResponse, WriteStreamResponse, malformed,
};
use crate::service::{
    CommitInfo, ReadRange, ReadRequest, ReadSession, ReadSessionRequest, RecordBatchStream,
    SessionStatus, SplitMode, SplitOptions, StreamStatus, TableInfo, TableService, WriteAck,
    WriteMode, WriteRequest, WriteSession, WriteSessionRequest, WriteStream,
};
use crate::types::{ArrowOptions, TableSchema};
use crate::uri::{PartitionSpec, TableId};

use body::BodyDecoder;
use retry::Backoff;
pub use retry::{Idempotency, Jitter, RetryConfig};

/// The user agent: `paiio-rs/<version>`.
pub const USER_AGENT: &str = concat!("paiio-rs/", env!("CARGO_PKG_VERSION"));

const MAX_ERROR_BODY: usize = 64 << 10;

/// Characters kept as they are in query values: RFC 3986 unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

// ---------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------

/// Builds a [`RestClient`].
#[derive(Debug, Clone)]
pub struct RestClientBuilder {
    endpoint: String,
    tunnel_endpoint: Option<String>,
    credentials: Option<Credentials>,
    signature: SignatureVersion,
    project: Option<String>,
    quota_name: Option<String>,
    user_agent: String,
    connect_timeout: Duration,
    read_timeout: Duration,
    request_timeout: Duration,
    retry: RetryConfig,
    read_compression: Option<BodyEncoding>,
    init_poll_timeout: Duration,
    clock: Arc<dyn Clock>,
    refresh_margin: Duration,
}

/// The default longest margin before a read session's expiry at which the client refreshes it.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl RestClientBuilder {
    /// A client of the ODPS endpoint `endpoint` (e.g. `http://host:port/api`), anonymous and
    /// with legacy signing until told otherwise.
    pub fn new(endpoint: impl Into<String>) -> Self {
        RestClientBuilder {
            endpoint: endpoint.into().trim().trim_end_matches('/').to_string(),
            tunnel_endpoint: None,
            credentials: None,
            signature: SignatureVersion::Legacy,
            project: None,
            quota_name: None,
            user_agent: USER_AGENT.to_string(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(300),
            retry: RetryConfig::default(),
            read_compression: None,
            init_poll_timeout: Duration::from_secs(3600),
            clock: Arc::new(SystemClock),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
        }
    }

    /// From a configuration: its REST endpoint, credentials (optional), tunnel endpoint,
    /// project, quota and region (V4 signing when one is known).
    pub fn from_config(config: &Config) -> Result<Self> {
        let endpoint = match config.backend()? {
            Backend::Rest { endpoint } => endpoint,
            Backend::Local { root } => {
                return Err(Error::Config {
                    source_name: config.source.clone(),
                    message: format!(
                        "the REST client needs an http(s) endpoint, but the configuration selects the local \
                         warehouse {}",
                        root.display()
                    ),
                });
            }
        };
        let mut b = RestClientBuilder::new(endpoint);
        b.credentials = config.optional_credentials()?;
        b.tunnel_endpoint = config
            .tunnel_endpoint
            .clone()
            .filter(|t| !t.trim().is_empty());
        b.project = config.project.clone();
        b.quota_name = config.quota_name.clone();
        if let Some(region) = config.region_for_signing() {
            b.signature = SignatureVersion::V4 { region };
        }
        Ok(b)
    }

    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Signs with V4 in `region` (`None`: legacy).
    pub fn region(mut self, region: Option<&str>) -> Self {
        self.signature = match region {
            Some(r) if !r.trim().is_empty() => SignatureVersion::V4 {
                region: r.trim().to_string(),
            },
            _ => SignatureVersion::Legacy,
        };
        self
    }

    /// The tunnel (storage) endpoint, skipping discovery.
    pub fn tunnel_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.tunnel_endpoint = Some(endpoint.into());
        self
    }

    /// The default project, sent as `curr_project` (else each table's project).
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    pub fn quota_name(mut self, quota: impl Into<String>) -> Self {
        self.quota_name = Some(quota.into());
        self
    }

    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// The longest wait for the next bytes of a response (a stalled body fails, and a read
    /// resumes).
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.read_timeout = t;
        self
    }

    /// The longest a JSON call may take (reads are bounded by the read timeout instead).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Asks for this body compression on reads (`Accept-Encoding`); the answer is decoded
    /// per its `Content-Encoding`.
    pub fn read_compression(mut self, compression: Option<BodyEncoding>) -> Self {
        self.read_compression = compression;
        self
    }

    /// The clock the client compares session expiration times with (default: the system
    /// clock; tests share the server's [`crate::clock::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The longest margin before a read session's expiry at which a read refreshes it first
    /// (default [`DEFAULT_REFRESH_MARGIN`]); the margin used is the smaller of this and a tenth
    /// of the session's lifetime. `Duration::ZERO` refreshes only after a `SessionExpired`.
    pub fn session_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    pub fn build(self) -> Result<RestClient> {
        let config_error = |message: String| Error::Config {
            source_name: "REST client".into(),
            message,
        };
        for (name, url) in [
            ("endpoint", Some(&self.endpoint)),
            ("tunnel endpoint", self.tunnel_endpoint.as_ref()),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(config_error(format!(
                    "the {name} {url:?} is not an http(s):// URL"
                )));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(RestClient {
            inner: Arc::new(Inner {
                http,
                tunnel: self
                    .tunnel_endpoint
                    .map(|t| t.trim().trim_end_matches('/').to_string()),
                endpoint: self.endpoint,
                credentials: self.credentials,
                signature: self.signature,
                project: self.project,
                quota_name: self.quota_name,
                user_agent: self.user_agent,
                request_timeout: self.request_timeout,
                retry: self.retry,
                read_compression: self.read_compression,
                init_poll_timeout: self.init_poll_timeout,
                clock: self.clock,
                refresh_margin: self.refresh_margin,
                expiry: Mutex::new(HashMap::new()),
                stats: Stats::default(),
                tunnels: Mutex::new(HashMap::new()),
                route_tokens: Mutex::new(HashMap::new()),
                read_meta: Mutex::new(HashMap::new()),
                write_meta: Mutex::new(HashMap::new()),
                acked: Mutex::new(HashMap::new()),
            }),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

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

/// What the client remembers of a read session it created (not echoed by the server).
#[derive(Debug, Clone, Copy)]
struct ReadMeta {
    split_mode: SplitMode,
    arrow_options: ArrowOptions,
}

/// A read session's expiration as last reported, and its lifetime then (by the client's clock).
#[derive(Debug, Clone, Copy)]
struct Expiry {
    expiration_ms: i64,
    lifetime_ms: i64,
}

/// Counters of what the client did (see [`RestClient::stats`]).
#[derive(Debug, Default)]
struct Stats {
    attempts: AtomicU64,
    retries: AtomicU64,
    resumes: AtomicU64,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    max_run_attempts: AtomicU64,
    budget_exhausted: AtomicU64,
}

/// A snapshot of the client's counters, since it was built (or [`RestClient::reset_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (every attempt of every call, re-opens of resumed reads included).
    pub attempts: u64,
    /// Sleeps before another attempt (a retried call or a resumed read).
    pub retries: u64,
    /// Row streams re-opened after a broken body (each at the rows already delivered).
    pub resumes: u64,
    /// `TableGetReadSession(session_refresh=true)` calls made by reads (ahead of expiry, or
    /// after a `SessionExpired`).
    pub refreshes: u64,
    /// Of those, the ones that failed.
    pub refresh_failures: u64,
    /// The most attempts of one run without progress (one call, or the part of a read
    /// between two delivered batches): at most `max_retries + 1`.
    pub max_run_attempts: u64,
    /// Failures surfaced because the retry budget (attempts or time) was spent.
    pub budget_exhausted: u64,
}

/// The retry budget of one run of attempts without progress.
struct Budget {
    backoff: Backoff,
    started: Instant,
    attempts: u64,
}

impl Budget {
    fn new(config: &RetryConfig) -> Self {
        Budget {
            backoff: Backoff::new(config),
            started: Instant::now(),
            attempts: 0,
        }
    }

    /// Progress was made: a new run starts.
    fn reset(&mut self) {
        self.backoff.reset();
        self.started = Instant::now();
        self.attempts = 0;
    }
}

/// What the client remembers of a write session.
#[derive(Debug, Clone, Default)]
struct WriteMeta {
    partition: PartitionSpec,
    overwrite: bool,
    mode: WriteMode,
    committed: Option<CommitInfo>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: String,
    tunnel: Option<String>,
    credentials: Option<Credentials>,
    signature: SignatureVersion,
    project: Option<String>,
    quota_name: Option<String>,
    user_agent: String,
    request_timeout: Duration,
    retry: RetryConfig,
    read_compression: Option<BodyEncoding>,
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

enum CallBody {
    Json(Bytes),
    Arrow(Bytes),
}

/// One Storage API call.
struct Call {
    action: Action,
    table: TableId,
    params: Vec<(&'static str, String)>,
    body: CallBody,
    session: Option<String>,
    headers: Vec<(String, String)>,
    idempotency: Idempotency,
    accept_encoding: Option<BodyEncoding>,
    /// Reads stream their body: no whole-request timeout.
    streaming: bool,
    ctx: ErrorContext,
}

impl Call {
    fn new(action: Action, table: &TableId, body: &impl Serialize) -> Self {
        Call {
            action,
            table: table.clone(),
            params: Vec::new(),
            body: CallBody::Json(Bytes::new()),
            session: None,
            headers: Vec::new(),
            idempotency: Idempotency::Safe,
            accept_encoding: None,
            streaming: false,
            ctx: ErrorContext {
                action: Some(action),
                table: Some(table.to_string()),
                ..Default::default()
            },
        }
        .json_body(body)
    }

    fn session(mut self, session_id: &str) -> Self {
        self.params.push(("SessionId", session_id.to_string()));
        self.session = Some(session_id.to_string());
        self.ctx.session_id = Some(session_id.to_string());
        self
    }

    fn json_body(mut self, body: &impl Serialize) -> Self {
        // The message types serialize infallibly (string keys only).
        let json = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
        self.body = CallBody::Json(Bytes::from(json));
        self
    }

    fn param(mut self, name: &'static str, value: impl ToString) -> Self {
        self.params.push((name, value.to_string()));
        self
    }

    fn unsafe_to_repeat(mut self) -> Self {
        self.idempotency = Idempotency::Unsafe;
        self
    }
}

fn transport_error(action: impl std::fmt::Display, e: reqwest::Error) -> Error {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "failed"
    };
    Error::Transient {
        message: format!("{action} {what}: {e}"),
        retryable: true,
        source: Some(Box::new(e)),
    }
}

fn header_str(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|v| !v.is_empty())
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
        let s = &self.inner.stats;
        ClientStats {
            attempts: s.attempts.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            resumes: s.resumes.load(Ordering::Relaxed),
            refreshes: s.refreshes.load(Ordering::Relaxed),
            refresh_failures: s.refresh_failures.load(Ordering::Relaxed),
            max_run_attempts: s.max_run_attempts.load(Ordering::Relaxed),
            budget_exhausted: s.budget_exhausted.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        let s = &self.inner.stats;
        for c in [
            &s.attempts,
            &s.retries,
            &s.resumes,
            &s.refreshes,
            &s.refresh_failures,
            &s.max_run_attempts,
            &s.budget_exhausted,
        ] {
            c.store(0, Ordering::Relaxed);
        }
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

impl Inner {
    fn curr_project<'a>(&'a self, table: &'a TableId) -> &'a str {
        self.project
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(&table.project)
    }

    /// Signs `headers` for `method` and the URL relative to its base.
    fn sign(&self, method: &str, relative: &str, headers: &mut Vec<(String, String)>) {
        if let Some(creds) = &self.credentials {
            sign_request(
                creds,
                &self.signature,
                method,
                relative,
                headers,
                SystemTime::now(),
            );
        }
    }

    fn base_headers(&self) -> Vec<(String, String)> {
        vec![
            ("User-Agent".into(), self.user_agent.clone()),
            (headers::ODPS_USER_AGENT.into(), self.user_agent.clone()),
        ]
    }

    async fn tunnel_for(&self, project: &str) -> Result<String> {
        if let Some(t) = &self.tunnel {
            return Ok(t.clone());
        }
        if let Some(t) = self.tunnels.lock().get(project) {
            return Ok(t.clone());
        }
        let found = self.discover(project).await?;
        self.tunnels
            .lock()
            .insert(project.to_string(), found.clone());
        Ok(found)
    }

    /// `GET {endpoint}/projects/{p}/tunnel?service&curr_project=p` (STORAGE_API.md §4.3).
    async fn discover(&self, project: &str) -> Result<String> {
        let curr = self
            .project
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(project);
        let mut relative = format!(
            "/projects/{}/tunnel?service&curr_project={}",
            enc(project),
            enc(curr)
        );
        if let Some(q) = &self.quota_name {
            relative.push_str(&format!("&quotaName={}", enc(q)));
        }
        let url = format!("{}{relative}", self.endpoint);
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.retry);
        loop {
            let mut headers = self.base_headers();
            self.sign("GET", &relative, &mut headers);
            let mut req = self.http.get(&url).timeout(self.request_timeout);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let (error, before_send, retry_after) = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let text = resp
                        .text()
                        .await
                        .map_err(|e| transport_error("tunnel discovery", e))?;
                    let text = text.trim().trim_end_matches('/');
                    if text.is_empty() {
                        return Err(Error::Service {
                            status: 200,
                            code: "EmptyTunnelEndpoint".into(),
                            message: format!(
                                "tunnel discovery for project {project} answered nothing"
                            ),
                            request_id: String::new(),
                        });
                    }
                    if text.starts_with("http://") || text.starts_with("https://") {
                        return Ok(text.to_string());
                    }
                    let scheme = if self.endpoint.starts_with("https://") {
                        "https"
                    } else {
                        "http"
                    };
                    return Ok(format!("{scheme}://{text}"));
                }
                Ok(resp) => {
                    let retry_after = header_str(resp.headers(), "retry-after")
                        .and_then(|v| retry::parse_retry_after(&v));
                    (
                        self.error_of(resp, &ErrorContext::default()).await,
                        false,
                        retry_after,
                    )
                }
                Err(e) => {
                    let before = retry::failed_before_send(&e);
                    (transport_error("tunnel discovery", e), before, None)
                }
            };
            if !retry::should_retry(&error, before_send, Idempotency::Safe) {
                return Err(error);
            }
            match backoff.next_retry(started.elapsed(), retry_after) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(error),
            }
        }
    }

    async fn error_of(&self, resp: reqwest::Response, ctx: &ErrorContext) -> Error {
        let status = resp.status().as_u16();
        let request_id = header_str(resp.headers(), headers::REQUEST_ID);
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        use futures::StreamExt;
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ERROR_BODY {
                break;
            }
        }
        from_response(status, request_id.as_deref(), &body, ctx)
    }

    /// Sends a call once.
    async fn send_once(&self, base: &str, call: &Call) -> reqwest::Result<reqwest::Response> {
        let mut query = format!(
            "Action={}&Target={}",
            call.action.as_str(),
            enc(&call.table.target())
        );
        for (k, v) in &call.params {
            query.push_str(&format!("&{k}={}", enc(v)));
        }
        query.push_str(&format!(
            "&curr_project={}",
            enc(self.curr_project(&call.table))
        ));
        if let Some(q) = &self.quota_name {
            query.push_str(&format!("&quotaName={}", enc(q)));
        }
        let relative = format!("/api/storage/v2?{query}");
        let url = format!("{base}{relative}");
        let mut headers = self.base_headers();
        let (content_type, body) = match &call.body {
            CallBody::Json(b) => (headers::JSON_CONTENT_TYPE, b.clone()),
            CallBody::Arrow(b) => (headers::ARROW_CONTENT_TYPE, b.clone()),
        };
        headers.push(("Content-Type".into(), content_type.into()));
        if let Some(session) = &call.session
            && let Some(token) = self.route_tokens.lock().get(session)
        {
            headers.push((headers::ROUTE_TOKEN.into(), token.clone()));
        }
        headers.extend(call.headers.iter().cloned());
        if let Some(c) = call.accept_encoding {
            headers.push(("Accept-Encoding".into(), c.name().into()));
        }
        self.sign("POST", &relative, &mut headers);
        let mut req = self.http.post(&url).body(body);
        if !call.streaming {
            req = req.timeout(self.request_timeout);
        }
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        req.send().await
    }

    fn keep_route_token(&self, session: Option<&str>, headers: &reqwest::header::HeaderMap) {
        if let (Some(session), Some(token)) = (session, header_str(headers, headers::ROUTE_TOKEN)) {
            self.route_tokens.lock().insert(session.to_string(), token);
        }
    }

    /// Counts one attempt of the current run.
    fn count_attempt(&self, budget: &mut Budget) {
        budget.attempts += 1;
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .max_run_attempts
            .fetch_max(budget.attempts, Ordering::Relaxed);
    }

    /// The sleep before another attempt of the run, or `None` when its budget is spent.
    fn next_retry(&self, budget: &mut Budget, retry_after: Option<Duration>) -> Option<Duration> {
        match budget
            .backoff
            .next_retry(budget.started.elapsed(), retry_after)
        {
            Some(delay) => {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                Some(delay)
            }
            None => {
                self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Sends a call with retries (per its idempotency) until a 2xx answer, within `budget`
    /// (shared with the caller's other attempts of the same run).
    async fn execute_in(&self, call: &Call, budget: &mut Budget) -> Result<reqwest::Response> {
        let base = self.tunnel_for(&call.table.project).await?;
        loop {
            self.count_attempt(budget);
            let (error, before_send, retry_after) = match self.send_once(&base, call).await {
                Ok(resp) if resp.status().is_success() => {
                    self.keep_route_token(call.session.as_deref(), resp.headers());
                    return Ok(resp);
                }
                Ok(resp) => {
                    let retry_after = header_str(resp.headers(), "retry-after")
                        .and_then(|v| retry::parse_retry_after(&v));
                    (self.error_of(resp, &call.ctx).await, false, retry_after)
                }
                Err(e) => {
                    let before = retry::failed_before_send(&e);
                    (transport_error(call.action, e), before, None)
                }
            };
            if !retry::should_retry(&error, before_send, call.idempotency) {
                return Err(error);
            }
            match self.next_retry(budget, retry_after) {
                Some(delay) => {
                    tracing::debug!(
                        action = call.action.as_str(),
                        retry = budget.backoff.retries(),
                        ?delay,
                        "retrying: {error}"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            }
        }
    }

    /// A JSON call: the answer's body (as `{}` when empty) and its route token.
    async fn json<T: DeserializeOwned>(&self, call: &Call) -> Result<(T, Option<String>)> {
        self.json_in(call, &mut Budget::new(&self.retry)).await
    }

    /// [`Self::json`] within `budget` (which tells the caller how many attempts were made).
    async fn json_in<T: DeserializeOwned>(
        &self,
        call: &Call,
        budget: &mut Budget,
    ) -> Result<(T, Option<String>)> {
        loop {
            let resp = self.execute_in(call, budget).await?;
            let token = header_str(resp.headers(), headers::ROUTE_TOKEN);
            let request_id = header_str(resp.headers(), headers::REQUEST_ID).unwrap_or_default();
            match resp.bytes().await {
                Ok(body) => {
                    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
                        Ok(json!({}))
                    } else {
                        serde_json::from_slice(&body)
                    };
                    let error = match parsed {
                        Ok(v) => {
                            return crate::protocol::from_value(v)
                                .map(|answer| (answer, token))
                                .map_err(|e| malformed(call.action.as_str(), e));
                        }
                        Err(e) => Error::Service {
                            status: 200,
                            code: "ParseError".into(),
                            message: format!(
                                "{} answered a body that is not JSON: {e}",
                                call.action
                            ),
                            request_id,
                        },
                    };
                    // A chunked body that ends early (cleanly) parses as broken JSON: a call
                    // that is safe to repeat is asked again, within the budget, and fails
                    // as a transient error when the budget is spent.
                    if call.idempotency == Idempotency::Unsafe {
                        return Err(error);
                    }
                    let error = Error::Transient {
                        message: format!("{error} (the answer may have been cut short)"),
                        retryable: true,
                        source: None,
                    };
                    match self.next_retry(budget, None) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => return Err(error),
                    }
                }
                Err(e) => {
                    // The body broke after a 2xx: the call did happen; repeat only safe ones.
                    let error = transport_error(call.action, e);
                    if call.idempotency == Idempotency::Unsafe {
                        return Err(error);
                    }
                    match self.next_retry(budget, None) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => return Err(error),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

impl RestClient {
    /// The read session an answer describes, with what the client asked it for.
    fn read_session(&self, table: &TableId, answer: ReadSessionResponse) -> Result<ReadSession> {
        let meta = self
            .inner
            .read_meta
            .lock()
            .get(&answer.session_id)
            .map(|m| (m.split_mode, m.arrow_options));
        let session = answer.into_session(table, meta)?;
        self.note_expiry(&session.session_id, session.expiration_time_ms);
        Ok(session)
    }

    /// Keeps a read session's expiration time (0: unknown, forgotten).
    fn note_expiry(&self, session_id: &str, expiration_ms: i64) {
        let mut expiry = self.inner.expiry.lock();
        if expiration_ms <= 0 {
            expiry.remove(session_id);
            return;
        }
        let now = self.inner.clock.now_ms();
        let lifetime_ms = (expiration_ms - now).max(0);
        // A plain get of a session reports the same expiration: keep the lifetime seen at
        // creation (or the last refresh) rather than the time left.
        let lifetime_ms = match expiry.get(session_id) {
            Some(e) if e.expiration_ms == expiration_ms => e.lifetime_ms,
            _ => lifetime_ms,
        };
        expiry.insert(
            session_id.to_string(),
            Expiry {
                expiration_ms,
                lifetime_ms,
            },
        );
    }

    /// Whether a read session is due for a refresh: within the margin of its expiry.
    fn refresh_due(&self, session_id: &str) -> bool {
        let Some(e) = self.inner.expiry.lock().get(session_id).copied() else {
            return false;
        };
        let margin = (self.inner.refresh_margin.as_millis() as i64).min(e.lifetime_ms / 10);
        self.inner.clock.now_ms() >= e.expiration_ms - margin
    }

    /// Refreshes a read session for a read: `SessionExpired` when the service says it has
    /// expired (an `EXPIRED` status included).
    async fn refresh_read_session(&self, table: &TableId, session_id: &str) -> Result<()> {
        self.inner.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.get_read_session_raw(table, session_id, true).await {
            Ok(s) if s.status == SessionStatus::Expired => Err(Error::SessionExpired {
                session_id: session_id.to_string(),
            }),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            self.inner
                .stats
                .refresh_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(session_id, "refreshing the read session failed: {e}");
        }
        outcome
    }

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

    fn write_meta(&self, session_id: &str) -> Option<WriteMeta> {
        self.inner.write_meta.lock().get(session_id).cloned()
    }
}

// ---------------------------------------------------------------------------------------
// The resumable read stream
// ---------------------------------------------------------------------------------------

/// What a row stream re-requests when it resumes.
#[derive(Clone)]
enum Source {
    Read(ReadRequest),
    Preview {
        table: TableId,
        body: PreviewRequest,
    },
}

struct ReadState {
    client: RestClient,
    source: Source,
    decoder: Option<BodyDecoder>,
    /// Rows handed to the caller.
    delivered: u64,
    delivered_any: bool,
    /// The budget of the current run of attempts (since the last delivered rows).
    budget: Budget,
    done: bool,
}

impl RestClient {
    /// Issues the request for the rows not yet delivered, within `budget`, refreshing the
    /// read session ahead of its expiry, or once after a `SessionExpired`.
    async fn open_rows(
        &self,
        source: &Source,
        delivered: u64,
        budget: &mut Budget,
    ) -> Result<Option<BodyDecoder>> {
        let Source::Read(request) = source else {
            return self.open_rows_once(source, delivered, budget).await;
        };
        if self.refresh_due(&request.session_id) {
            // Any other failure: the session may well still be readable; the read will tell.
            if let Err(e @ Error::SessionExpired { .. }) = self
                .refresh_read_session(&request.table, &request.session_id)
                .await
            {
                return Err(e);
            }
        }
        match self.open_rows_once(source, delivered, budget).await {
            Err(Error::SessionExpired { .. }) => {
                self.refresh_read_session(&request.table, &request.session_id)
                    .await
                    .map_err(|e| match e {
                        Error::SessionExpired { .. } => Error::SessionExpired {
                            session_id: request.session_id.clone(),
                        },
                        other => other,
                    })?;
                self.open_rows_once(source, delivered, budget).await
            }
            other => other,
        }
    }

    /// Issues the request for the rows not yet delivered once (with `execute`'s retries).
    async fn open_rows_once(
        &self,
        source: &Source,
        delivered: u64,
        budget: &mut Budget,
    ) -> Result<Option<BodyDecoder>> {
        let call = match source {
            Source::Read(request) => {
                let mut request = request.clone();
                let mut call =
                    Call::new(Action::TableRead, &request.table, &()).session(&request.session_id);
                match request.range {
                    ReadRange::Split(index) => {
                        request.skip_rows += delivered;
                        call = call.param("Index", index);
                    }
                    ReadRange::Rows { offset, count } => {
                        let wanted = count.saturating_sub(request.skip_rows);
                        if delivered > 0 && delivered >= wanted {
                            return Ok(None);
                        }
                        call = call
                            .param("Offset", offset + delivered)
                            .param("Count", count - delivered);
                    }
                }
                call = call.json_body(&TableReadRequest::from(&request));
                call.accept_encoding = self.inner.read_compression;
                call
            }
            Source::Preview { table, body } => Call::new(Action::TablePreview, table, body),
        };
        let call = Call {
            streaming: true,
            ..call
        };
        let resp = self.inner.execute_in(&call, budget).await?;
        BodyDecoder::new(resp).map(Some)
    }

    fn row_stream(&self, source: Source, first: BodyDecoder, budget: Budget) -> RecordBatchStream {
        let state = ReadState {
            client: self.clone(),
            source,
            decoder: Some(first),
            delivered: 0,
            delivered_any: false,
            budget,
            done: false,
        };
        Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        }))
    }
}

impl ReadState {
    fn resumable(&self) -> bool {
        matches!(self.source, Source::Read(_))
    }

    /// Accounts a failure; `Some(error)` when it must be surfaced.
    async fn failed(&mut self, error: Error, can_resume: bool) -> Option<Error> {
        if !can_resume || !error.is_retryable() {
            return Some(error);
        }
        match self.client.inner.next_retry(&mut self.budget, None) {
            Some(delay) => {
                tracing::debug!(
                    delivered = self.delivered,
                    ?delay,
                    "resuming a broken row stream: {error}"
                );
                self.client
                    .inner
                    .stats
                    .resumes
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                None
            }
            None => Some(error),
        }
    }

    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.done {
            return None;
        }
        loop {
            if self.decoder.is_none() {
                match self
                    .client
                    .open_rows(&self.source, self.delivered, &mut self.budget)
                    .await
                {
                    Ok(Some(d)) => self.decoder = Some(d),
                    Ok(None) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => {
                        // `execute` already retried what it could; a failure to re-open is final.
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let decoder = self.decoder.as_mut()?;
            match decoder.next().await {
                Ok(Some(batch)) => {
                    if batch.num_rows() == 0 && self.delivered_any {
                        continue;
                    }
                    if batch.num_rows() > 0 {
                        self.budget.reset();
                    }
                    self.delivered += batch.num_rows() as u64;
                    self.delivered_any = true;
                    return Some(Ok(batch));
                }
                Ok(None) => {
                    self.done = true;
                    if !self.delivered_any {
                        self.delivered_any = true;
                        let schema = decoder
                            .schema()
                            .unwrap_or_else(|| Arc::new(arrow_schema::Schema::empty()));
                        return Some(Ok(RecordBatch::new_empty(schema)));
                    }
                    return None;
                }
                Err(StreamError::Fatal(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Err(StreamError::Resumable(e)) => {
                    self.decoder = None;
                    let can_resume = self.resumable();
                    if let Some(e) = self.failed(e, can_resume).await {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
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
        let source = Source::Read(request.clone());
        let mut budget = Budget::new(&self.inner.retry);
        let first = match self.open_rows(&source, 0, &mut budget).await? {
            Some(d) => d,
            None => return Err(Error::invalid("read range", "nothing to read")),
        };
        Ok(self.row_stream(source, first, budget))
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
            .open_rows(&source, 0, &mut budget)
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
