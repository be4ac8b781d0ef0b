//! Test backends for the facade: a local warehouse in a temporary directory, and the REST
//! client against an in-process Storage API server over such a warehouse. Tables are created
//! and filled through the warehouse itself (the Storage API has no catalog); the service under
//! test is what readers and writers use.

#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, OnceLock};

use arrow_array::RecordBatch;
use paiio_conformance::Backend as Store;
use paiio_conformance::datagen::{self, DataGen};
use paiio_server::{FaultControl, Server, ServerHandle};
use paiio_storage::auth::{Credentials, DEFAULT_CLOCK_SKEW, Verifier};
use paiio_storage::local::LocalWarehouse;
use paiio_storage::rest::{RestClient, RetryConfig};
use paiio_storage::{TableId, TableService};

pub const ACCESS_ID: &str = "paiio-test-id";
pub const ACCESS_KEY: &str = "paiio-test-secret";
pub const PROJECT: &str = "facade";

/// A runtime for the test servers and for filling tables, apart from the facade's own
/// (so the code under test shares its runtime with nothing).
pub fn test_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-server")
            .enable_all()
            .build()
            .expect("the test runtime starts")
    })
}

/// Runs a future on the test runtime.
pub fn block<F: Future>(future: F) -> F::Output {
    test_runtime().block_on(future)
}

/// A backend under test.
pub struct TestBackend {
    pub kind: &'static str,
    /// What the code under test reads and writes through.
    pub service: Arc<dyn TableService>,
    /// The warehouse behind it, for creating and filling tables.
    pub warehouse: Arc<LocalWarehouse>,
    pub store: Store,
    pub dir: tempfile::TempDir,
    pub server: Option<ServerHandle>,
}

impl std::fmt::Debug for TestBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBackend")
            .field("kind", &self.kind)
            .finish()
    }
}

/// A fast, deterministic retry policy for the REST client.
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

fn warehouse_in(dir: &tempfile::TempDir) -> Arc<LocalWarehouse> {
    Arc::new(LocalWarehouse::open(dir.path().join("warehouse")).expect("the warehouse opens"))
}

/// A local warehouse in a new temporary directory.
pub fn local() -> TestBackend {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let warehouse = warehouse_in(&dir);
    TestBackend {
        kind: "local",
        service: warehouse.clone(),
        store: Store::new(warehouse.clone(), PROJECT),
        warehouse,
        dir,
        server: None,
    }
}

/// The REST client against an in-process server over a new temporary warehouse.
pub fn rest() -> TestBackend {
    rest_with_faults().0
}

/// [`rest`], and a handle on the server's fault layer.
pub fn rest_with_faults() -> (TestBackend, FaultControl) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let warehouse = warehouse_in(&dir);
    let server = Server::builder(warehouse.clone())
        .verifier(Verifier::new(DEFAULT_CLOCK_SKEW).with_key(ACCESS_ID, ACCESS_KEY))
        .build()
        .expect("the server builds");
    let faults = server.fault_control();
    let handle = block(server.bind("127.0.0.1:0")).expect("the server binds");
    let client = RestClient::builder(handle.endpoint())
        .credentials(Credentials::new(ACCESS_ID, ACCESS_KEY))
        .project(PROJECT)
        .retry(fast_retry())
        .build()
        .expect("the client builds");
    let backend = TestBackend {
        kind: "rest",
        service: Arc::new(client),
        store: Store::new(warehouse.clone(), PROJECT),
        warehouse,
        dir,
        server: Some(handle),
    };
    (backend, faults)
}

impl TestBackend {
    /// A table of `DataGen::simple(seed)` rows with ids `ids` (written in commits of at most
    /// `per_commit` rows).
    pub fn table(&self, prefix: &str, ids: std::ops::Range<i64>) -> (TableId, DataGen) {
        let gen_ = DataGen::simple(7);
        let table = block(self.store.create_gen_table(prefix, &gen_, &[]));
        self.append(&table, &gen_, "", ids);
        (table, gen_)
    }

    /// A table with one partition column `pt string` and no rows.
    pub fn partitioned_table(&self, prefix: &str) -> (TableId, DataGen) {
        let gen_ = DataGen::simple(7);
        let table = block(
            self.store
                .create_gen_table(prefix, &gen_, &[("pt", "string")]),
        );
        (table, gen_)
    }

    /// Commits the rows `ids` (in one write session) to `partition` ("" for none).
    pub fn append(
        &self,
        table: &TableId,
        gen_: &DataGen,
        partition: &str,
        ids: std::ops::Range<i64>,
    ) {
        if ids.is_empty() {
            return;
        }
        let batches = gen_.batches(ids, 4096);
        block(
            self.store
                .write_and_commit(table, partition, false, batches),
        );
    }

    /// `odps://project/tables/table[/partition]`.
    pub fn uri(&self, table: &TableId, partition: &str) -> String {
        if partition.is_empty() {
            format!("odps://{}/tables/{}", table.project, table.table)
        } else {
            format!(
                "odps://{}/tables/{}/{}",
                table.project, table.table, partition
            )
        }
    }
}

/// Asserts that the text of `err` contains every one of `needles`.
#[track_caller]
pub fn assert_mentions(err: &impl std::fmt::Display, needles: &[&str]) {
    let text = err.to_string();
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
}

/// The ids of batches.
pub fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    datagen::ids(batches)
}

/// Every remaining batch of a reader, panicking on an error.
pub fn read_rest(reader: &mut paiio::TableReader) -> Vec<RecordBatch> {
    reader
        .by_ref()
        .collect::<paiio::Result<Vec<_>>>()
        .expect("the reader reads to the end")
}

/// Every remaining id of a reader.
pub fn read_ids(reader: &mut paiio::TableReader) -> Vec<i64> {
    ids(&read_rest(reader))
}
