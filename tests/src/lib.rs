//! Shared helpers for the end-to-end suites: an in-process Storage API server over a
//! temporary local warehouse, REST clients of it, and the conformance harness that runs the
//! `TableService` suite through the REST client.

use std::sync::Arc;

use paiio_conformance::datagen::DataGen;
use paiio_server::{Fault, FaultControl, FaultPlan, FaultRule, Server, ServerHandle, When};
use paiio_storage::auth::{Credentials, DEFAULT_CLOCK_SKEW, Verifier};
use paiio_storage::clock::ManualClock;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::rest::{RestClient, RestClientBuilder, RetryConfig};
use paiio_storage::service::{ReadSessionRequest, SplitOptions, TableService, WriteRequest};
use paiio_storage::{TableId, WriteStream};

/// The access id the test servers accept.
pub const ACCESS_ID: &str = "paiio-test-id";
/// Its secret.
pub const ACCESS_KEY: &str = "paiio-test-secret";
/// The project the suites use.
pub const PROJECT: &str = "conformance";

/// A running server over a temporary warehouse.
pub struct TestServer {
    pub handle: ServerHandle,
    pub warehouse: Arc<LocalWarehouse>,
    /// The warehouse's clock (sessions expire by it; signatures are checked by system time).
    pub clock: ManualClock,
    pub faults: FaultControl,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("endpoint", &self.handle.endpoint())
            .finish()
    }
}

/// Options of a [`TestServer`].
#[derive(Debug, Default, Clone)]
pub struct TestServerOptions {
    /// Serve this warehouse directory (else a new temporary one).
    pub warehouse_dir: Option<std::path::PathBuf>,
    /// `LocalWarehouseBuilder::revive_expired_read_sessions`.
    pub revive_expired_read_sessions: bool,
    /// Serve only the Tunnel and the metadata calls (`paiio serve --tunnel-only`).
    pub tunnel_only: bool,
    /// Cap every response body at this many bytes per second (`paiio serve --stream-rate`).
    pub stream_rate: Option<u64>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0` that verifies signatures with [`ACCESS_ID`] /
    /// [`ACCESS_KEY`] (legacy and V4).
    pub async fn start() -> TestServer {
        Self::start_with(TestServerOptions::default()).await
    }

    /// Starts a server with `options`.
    pub async fn start_with(options: TestServerOptions) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = ManualClock::new();
        let root = options
            .warehouse_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("warehouse"));
        let warehouse = Arc::new(
            LocalWarehouse::builder(root)
                .clock(Arc::new(clock.clone()))
                .revive_expired_read_sessions(options.revive_expired_read_sessions)
                .open()
                .expect("the warehouse opens"),
        );
        let server = Server::builder(warehouse.clone())
            .verifier(Verifier::new(DEFAULT_CLOCK_SKEW).with_key(ACCESS_ID, ACCESS_KEY))
            .clock(clock.clone())
            .storage_api(!options.tunnel_only)
            .stream_rate(options.stream_rate)
            .build()
            .expect("the server builds");
        let faults = server.fault_control();
        let handle = server.bind("127.0.0.1:0").await.expect("the server binds");
        TestServer {
            handle,
            warehouse,
            clock,
            faults,
            _dir: dir,
        }
    }

    /// A client builder for this server: right keys, legacy signing, tunnel discovery, and a
    /// fast deterministic retry policy.
    pub fn client_builder(&self) -> RestClientBuilder {
        RestClient::builder(self.handle.endpoint())
            .credentials(Credentials::new(ACCESS_ID, ACCESS_KEY))
            .project(PROJECT)
            .retry(fast_retry())
    }

    pub fn client(&self) -> RestClient {
        self.client_builder().build().expect("the client builds")
    }

    /// Creates table `name` of `g`'s columns (unpartitioned) in the warehouse.
    pub async fn create_table(&self, name: &str, g: &DataGen) -> TableId {
        let table = TableId::new(PROJECT, None, name).expect("a valid table name");
        self.warehouse
            .create_table(&table, &g.table_schema(Vec::new()), Default::default())
            .await
            .expect("the table is created");
        table
    }

    /// Makes `fault` strike calls of `action` `when` (replacing any earlier plan).
    pub fn inject(&self, fault: Fault, when: When, action: &str) {
        let plan = FaultPlan::new().rule(FaultRule::new(fault, when).action(action));
        self.faults.set(plan).expect("a valid fault plan");
    }
}

/// An HTTP error status answer, without error code or message.
pub fn status_fault(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status {
        status,
        retry_after,
        code: None,
        message: None,
    }
}

/// A plain (not exactly-once) write of `batches` to a stream version.
pub fn write_request(
    table: &TableId,
    session_id: &str,
    stream: &WriteStream,
    batches: Vec<arrow_array::RecordBatch>,
) -> WriteRequest {
    WriteRequest {
        table: table.clone(),
        session_id: session_id.to_string(),
        stream_id: stream.stream_id.clone(),
        version: stream.version,
        row_offset: None,
        access_token: None,
        batches,
    }
}

/// A RowOffset read session request of the whole table.
pub fn row_offset_request(table: &TableId) -> ReadSessionRequest {
    ReadSessionRequest {
        split_options: SplitOptions::row_offset(),
        ..ReadSessionRequest::new(table.clone())
    }
}

/// Retries with short sleeps and a fixed seed.
pub fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial_backoff: std::time::Duration::from_millis(5),
        max_backoff: std::time::Duration::from_millis(50),
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(30),
        seed: Some(42),
        ..RetryConfig::default()
    }
}

/// The service the conformance suite runs against: the REST client for everything the
/// Storage API offers, and the warehouse behind the server for what it does not.
///
/// The Storage API has no catalog: creating, dropping and listing tables and partitions
/// are not part of it, so those calls go straight to the [`LocalWarehouse`] the server
/// serves. `describe_table` and `list_partitions` go there too, because the suite checks
/// the table version and the partition list, which V2 does not report (the REST client's
/// own `describe_table` gives the schema, row count and size; it is tested separately).
/// Every session, read, write and commit call goes over HTTP through the [`RestClient`].
#[derive(Debug)]
pub struct RestHarness {
    pub rest: RestClient,
    pub catalog: Arc<LocalWarehouse>,
}

paiio_conformance::forward_table_service!(RestHarness, "rest";
    rest: hints, table_schema, create_read_session, get_read_session, read, preview,
        create_write_session, get_write_session, create_write_stream_version, get_write_stream,
        write, close_write_stream, commit_write_session, abort_write_session;
    catalog: describe_table, create_table, drop_table, list_tables, list_partitions,
        drop_partition);

/// A conformance backend: a fresh server, the REST client of it behind [`RestHarness`], the
/// warehouse's clock (expiry capabilities run), and the server kept alive by the guard.
pub async fn rest_backend() -> paiio_conformance::Backend {
    let server = TestServer::start().await;
    let harness = RestHarness {
        rest: server.client(),
        catalog: server.warehouse.clone(),
    };
    let clock = server.clock.clone();
    paiio_conformance::Backend::new(Arc::new(harness), PROJECT)
        .with_clock(clock)
        .with_guard(server)
}

/// The service the conformance suite runs against over the Tunnel: the Tunnel client for
/// sessions, reads, writes, the table schema and the partition list, and the warehouse behind
/// the server for the catalog (create, drop, list tables, drop partitions) and
/// `describe_table`, whose table version the Tunnel does not report.
#[derive(Debug)]
pub struct TunnelHarness {
    pub tunnel: paiio_storage::rest::TunnelClient,
    pub catalog: Arc<LocalWarehouse>,
}

paiio_conformance::forward_table_service!(TunnelHarness, "tunnel";
    tunnel: hints, table_schema, create_read_session, get_read_session, read, preview,
        create_write_session, get_write_session, create_write_stream_version, get_write_stream,
        write, close_write_stream, commit_write_session, abort_write_session, list_partitions;
    catalog: describe_table, create_table, drop_table, list_tables, drop_partition);

/// A Tunnel client of `endpoint` with the test keys and retries, on `server`'s clock.
pub fn tunnel_client(
    server: &TestServer,
    endpoint: &str,
    retry: RetryConfig,
) -> paiio_storage::rest::TunnelClient {
    paiio_storage::rest::TunnelClient::new(
        RestClient::builder(endpoint)
            .credentials(Credentials::new(ACCESS_ID, ACCESS_KEY))
            .project(PROJECT)
            .retry(retry)
            .clock(Arc::new(server.clock.clone()))
            .build()
            .expect("the client builds"),
    )
    // Each client its own sessions, unless a test shares them.
    .share_sessions(None)
}

/// A server and a Tunnel client of it.
pub async fn tunnel_server() -> (TestServer, paiio_storage::rest::TunnelClient) {
    let server = TestServer::start().await;
    let client = tunnel_client(&server, &server.handle.endpoint(), fast_retry());
    (server, client)
}

/// A conformance backend over the Tunnel (see [`TunnelHarness`]).
pub async fn tunnel_backend() -> paiio_conformance::Backend {
    let (server, tunnel) = tunnel_server().await;
    let harness = TunnelHarness {
        tunnel,
        catalog: server.warehouse.clone(),
    };
    let clock = server.clock.clone();
    paiio_conformance::Backend::new(Arc::new(harness), PROJECT)
        .with_clock(clock)
        .with_guard(server)
}
