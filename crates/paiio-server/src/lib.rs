//! # paiio-server
//!
//! A local MaxCompute Storage API server over any [`TableService`] (usually the embedded
//! [`LocalWarehouse`](paiio_storage::local::LocalWarehouse)). It speaks the wire protocol the
//! official clients speak (STORAGE_API.md): the control-plane calls under `/api`, Storage API
//! V2/V3 (`/api/storage/v2`, `/api/storage/v3`) and V1 (`/api/storage/v1/...`), so code
//! written for MaxCompute runs offline, against real files.
//!
//! ```no_run
//! # async fn demo() -> paiio_storage::Result<()> {
//! use std::sync::Arc;
//! use paiio_storage::local::LocalWarehouse;
//! let warehouse = Arc::new(LocalWarehouse::open("/tmp/warehouse")?);
//! let server = paiio_server::Server::builder(warehouse).allow_anonymous(true).build()?;
//! let handle = server.bind("127.0.0.1:0").await?;
//! println!("endpoint: {}", handle.endpoint());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

mod blobs;
mod codec;
mod conn;
mod control;
pub mod error;
mod faults;
mod limits;
mod middleware;
mod stream;
mod v1;
mod v2;
mod v2_write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use paiio_storage::auth::Verifier;
use paiio_storage::{Error, Result, TableService};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use conn::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_BODY_MIN_RATE, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, default_max_connections, open_file_limit,
    parse_duration, raise_open_file_limit,
};
pub use error::ApiError;
pub use faults::{Fault, FaultControl, FaultPlan, FaultRule, When};
pub use limits::{DEFAULT_MAX_CONCURRENCY, parse_size};

/// The response header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-odps-request-id";
/// The request and response header of V2 route tokens.
pub const ROUTE_TOKEN_HEADER: &str = "x-odps-max-storage-route-token";

/// Limits on what one request may carry, and on the memory requests may make the server use.
///
/// A small request must not cost a large amount of memory: decompressed uploads are capped
/// per request and share a server-wide budget, Arrow buffer compression is checked against
/// the rows it declares before anything is decoded, and lists that name things (columns,
/// blobs) refuse repeats. Beyond a limit the answer is a 4xx naming it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest JSON request body.
    pub max_json_body: usize,
    /// The largest row upload on the wire (one TableWrite or V1 block).
    pub max_upload_body: usize,
    /// The most rows per Arrow batch a reader may ask for.
    pub max_batch_rows: usize,
    /// The most bytes one upload may decode to: its `Content-Encoding` decompressed, plus the
    /// declared uncompressed lengths of its Arrow-compressed buffers (default 256 MiB).
    pub max_decoded_upload: usize,
    /// The most decoded upload bytes all requests together may hold at once (default 512 MiB);
    /// uploads beyond it wait for their turn. Never below `max_decoded_upload`.
    pub max_decoding_in_flight: usize,
    /// The most rows an uploaded Arrow batch (or any of its nested arrays) may declare
    /// (default 2^26).
    pub max_upload_rows: usize,
    /// The most column names one request may list (default 10,000); a repeated name is
    /// refused whatever the count.
    pub max_column_names: usize,
    /// The most blob references one BlobRead may name (default 1,000); a repeated reference
    /// is refused.
    pub max_blob_read_refs: usize,
    /// The most blob bytes one BlobRead may answer with (default 512 MiB). The answer is
    /// streamed, so this bounds the work, not the memory.
    pub max_blob_read_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_body: 1 << 20,
            max_upload_body: 512 << 20,
            max_batch_rows: 1 << 20,
            max_decoded_upload: 256 << 20,
            max_decoding_in_flight: 512 << 20,
            max_upload_rows: 1 << 26,
            max_column_names: 10_000,
            max_blob_read_refs: 1_000,
            max_blob_read_bytes: 512 << 20,
        }
    }
}

/// Builds a [`Server`].
#[derive(Debug)]
pub struct ServerBuilder {
    service: Arc<dyn TableService>,
    verifier: Option<Verifier>,
    allow_anonymous: bool,
    limits: Limits,
    blob_dir: Option<std::path::PathBuf>,
    /// Fault injection, admin endpoints, bandwidth and concurrency caps (faults.rs, limits.rs).
    realism: faults::RealismOptions,
    /// Connection cap and timeouts (conn.rs).
    conn: conn::ConnOptions,
}

impl ServerBuilder {
    /// Verify request signatures against these keys (legacy and V4).
    pub fn verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Accept requests without checking signatures. Off unless asked for.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where uploaded blobs are kept (`paiio serve` uses `<warehouse>/.paiio/blobs`).
    /// Without one, blob uploads and reads are refused.
    pub fn blob_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.blob_dir = Some(dir.into());
        self
    }

    pub fn build(self) -> Result<Server> {
        if self.verifier.is_none() && !self.allow_anonymous {
            return Err(Error::Config {
                source_name: "server options".into(),
                message: "no access keys to verify signatures with: give keys (or a config \
                          file), or allow anonymous access explicitly"
                    .into(),
            });
        }
        Ok(Server {
            state: Arc::new(AppState {
                service: self.service,
                verifier: self.verifier,
                decode_budget: codec::DecodeBudget::new(&self.limits),
                limits: self.limits,
                blob_dir: self.blob_dir,
                addr: parking_lot::RwLock::new(None),
                realism: faults::Realism::new(self.realism),
                replays: Default::default(),
                connections: Arc::default(),
            }),
            conn: self.conn,
        })
    }
}

/// What every handler sees.
#[derive(Debug)]
pub(crate) struct AppState {
    pub service: Arc<dyn TableService>,
    pub verifier: Option<Verifier>,
    pub limits: Limits,
    /// Decoded upload bytes in flight, server-wide (`Limits::max_decoding_in_flight`).
    pub decode_budget: codec::DecodeBudget,
    /// Where uploaded blobs are kept; `None` refuses blob calls.
    pub blob_dir: Option<std::path::PathBuf>,
    /// The address the server listens on (answers tunnel discovery).
    pub addr: parking_lot::RwLock<Option<SocketAddr>>,
    /// Fault injection, admin endpoints, bandwidth and concurrency caps.
    pub realism: faults::Realism,
    /// TableWrite attempts by retry trace id (replays get the first answer).
    pub replays: v2_write::Replays,
    /// Counters of the accept loop.
    pub connections: Arc<conn::ConnStats>,
}

/// The Storage API server.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
    conn: conn::ConnOptions,
}

impl Server {
    pub fn builder(service: Arc<dyn TableService>) -> ServerBuilder {
        ServerBuilder {
            service,
            verifier: None,
            allow_anonymous: false,
            limits: Limits::default(),
            blob_dir: None,
            realism: Default::default(),
            conn: Default::default(),
        }
    }

    /// The HTTP routes, for embedding in another server.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/api/tenants", get(control::tenants))
            .route("/api/projects/{project}/tunnel", get(control::tunnel))
            .route("/api/logview/host", get(control::logview_host))
            .route("/api/webconsole/host", get(control::webconsole_host))
            .route("/api/storage/{version}", any(v2::dispatch))
            .merge(v1::router())
            .fallback(control::unknown_route)
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                faults::fault_layer,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                middleware::authenticate,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                limits::limit_layer,
            ));
        // The admin routes (test servers only) skip the signature check and the limits.
        faults::with_admin_routes(api, &self.state)
            .layer(axum::middleware::from_fn(conn::body_timeout_layer))
            .layer(axum::middleware::from_fn(middleware::request_id))
            .with_state(self.state.clone())
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves in the background.
    pub async fn bind(self, addr: &str) -> Result<ServerHandle> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("listen address {addr}"), e))?;
        self.serve(listener).await
    }

    /// Serves on a bound listener in the background, with the connection cap and the
    /// timeouts of the builder.
    pub async fn serve(self, listener: TcpListener) -> Result<ServerHandle> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("listener", e))?;
        *self.state.addr.write() = Some(addr);
        let app = self.router();
        let (tx, rx) = oneshot::channel::<()>();
        let stats = self.state.connections.clone();
        let join = tokio::spawn(conn::accept_loop(listener, app, self.conn, stats, rx));
        Ok(ServerHandle {
            addr,
            shutdown: Some(tx),
            join: Some(join),
        })
    }
}

/// A running server: its address, and a way to stop it.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The ODPS endpoint clients are configured with: `http://HOST:PORT/api`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Stops accepting connections and waits (briefly) for open requests to finish.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), join).await;
        }
    }

    /// Waits until the server stops (for the `paiio serve` command).
    pub async fn wait(mut self) {
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
