//! # paiio-server
//!
//! A local MaxCompute Storage API and Tunnel server over any [`TableService`] (usually the embedded
//! [`LocalWarehouse`](paiio_storage::local::LocalWarehouse)). It speaks the wire protocol the
//! official clients speak (docs/storage-api.md): the control-plane calls under `/api`, Storage API
//! V2/V3 (`/api/storage/v2`, `/api/storage/v3`) and V1 (`/api/storage/v1/...`), the Tunnel
//! (`/projects/...`, docs/tunnel.md) and the table metadata calls around it, so code
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
mod chunks;
mod conn;
mod control;
pub mod error;
mod faults;
mod limits;
mod meta;
mod middleware;
mod replay;
mod request;
mod state;
mod stream;
mod tunnel;
mod upload;
mod v1;
mod v2;

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
pub use state::Limits;

use state::AppState;

/// Builds a [`Server`].
#[derive(Debug)]
pub struct ServerBuilder {
    service: Arc<dyn TableService>,
    verifier: Option<Verifier>,
    allow_anonymous: bool,
    limits: Limits,
    blob_dir: Option<std::path::PathBuf>,
    /// Whether the Storage API (V1, V2) is served besides the Tunnel.
    storage_api: bool,
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

    /// Serve the Storage API (V1 and V2) besides the Tunnel and the metadata calls (the
    /// default). Without it the server answers as a public endpoint does: Storage API calls
    /// get 404.
    pub fn storage_api(mut self, serve: bool) -> Self {
        self.storage_api = serve;
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
                decode_budget: upload::DecodeBudget::new(&self.limits),
                limits: self.limits,
                blob_dir: self.blob_dir,
                addr: parking_lot::RwLock::new(None),
                realism: faults::Realism::new(self.realism),
                replays: Default::default(),
                instances: Default::default(),
                connections: Arc::default(),
            }),
            conn: self.conn,
            storage_api: self.storage_api,
        })
    }
}

/// The Storage API server.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
    conn: conn::ConnOptions,
    storage_api: bool,
}

impl Server {
    pub fn builder(service: Arc<dyn TableService>) -> ServerBuilder {
        ServerBuilder {
            service,
            verifier: None,
            allow_anonymous: false,
            limits: Limits::default(),
            blob_dir: None,
            storage_api: true,
            realism: Default::default(),
            conn: Default::default(),
        }
    }

    /// The HTTP routes, for embedding in another server.
    pub fn router(&self) -> Router {
        let mut api = Router::new()
            .route("/api/tenants", get(control::tenants))
            .route("/api/projects/{project}/tunnel", get(control::tunnel))
            .route("/api/logview/host", get(control::logview_host))
            .route("/api/webconsole/host", get(control::webconsole_host))
            .merge(tunnel::router())
            .merge(meta::router());
        if self.storage_api {
            api = api
                .route("/api/storage/{version}", any(v2::dispatch))
                .merge(v1::router());
        }
        let api = api
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
