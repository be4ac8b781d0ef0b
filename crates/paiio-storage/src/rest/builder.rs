//! [`RestClientBuilder`]: the client's configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::auth::{Credentials, SignatureVersion};
use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, Config};
use crate::error::{Error, Result};

use super::codec_choice::{CodecChooser, ReadCompression};
use super::retry::RetryConfig;
use super::stats::Stats;
use super::transport::USER_AGENT;
use super::{Inner, RestClient};

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
    read_compression: ReadCompression,
    read_parallelism: usize,
    direct_reads: bool,
    init_poll_timeout: Duration,
    clock: Arc<dyn Clock>,
    refresh_margin: Duration,
}

/// Requests one row-range read makes at once by default.
pub const DEFAULT_READ_PARALLELISM: usize = 3;

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
            read_compression: ReadCompression::Auto,
            read_parallelism: DEFAULT_READ_PARALLELISM,
            direct_reads: true,
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
        b.read_compression = config.read_compression()?;
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

    /// The body compression reads ask for (`Accept-Encoding`; the answer is decoded per its
    /// `Content-Encoding`): [`ReadCompression::Auto`] (the default) chooses it per read by
    /// what the link and the cores allow; a fixed encoding (or `None`, `Some(encoding)`) is
    /// always asked for.
    pub fn read_compression(mut self, compression: impl Into<ReadCompression>) -> Self {
        self.read_compression = compression.into();
        self
    }

    /// How many requests one row-range read makes at once (default
    /// [`DEFAULT_READ_PARALLELISM`]; 1: one request per read). The service caps each request
    /// (about 10 MB/s), so a stream read as several chunk requests reads several times as
    /// fast; the chunks (about 8 MiB each) are handed out in row order, and a stream reads at
    /// most this many ahead.
    pub fn read_parallelism(mut self, requests: usize) -> Self {
        self.read_parallelism = requests.max(1);
        self
    }

    /// Whether row reads over plain `http://` go on the client's own connections, each
    /// Arrow message read straight into a buffer of its own (default `true`; on Unix, and
    /// when no `http_proxy`/`all_proxy` is set). `false`: through the general HTTP client,
    /// as every other call and every `https://` read.
    pub fn direct_reads(mut self, on: bool) -> Self {
        self.direct_reads = on;
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
        // What the reads learn of the link is shared with the other clients of the endpoint
        // the rows come from.
        let codecs = CodecChooser::shared(
            self.tunnel_endpoint
                .as_deref()
                .unwrap_or(&self.endpoint)
                .trim()
                .trim_end_matches('/'),
        );
        #[cfg(unix)]
        let direct = (self.direct_reads && !super::direct::proxy_in_env())
            .then(|| super::direct::DirectPool::new(self.connect_timeout, self.read_timeout));
        Ok(RestClient {
            inner: Arc::new(Inner {
                http,
                #[cfg(unix)]
                direct,
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
                codecs,
                read_parallelism: self.read_parallelism,
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
