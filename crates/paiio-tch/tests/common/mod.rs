//! Test tables: a local warehouse in a temporary directory, filled through the facade's
//! `TableWriter`; optionally served by an in-process Storage API server.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use paiio::{TableWriter, WriterOptions};
use paiio_server::{Server, ServerHandle};
use paiio_storage::auth::{Credentials, DEFAULT_CLOCK_SKEW, Verifier};
use paiio_storage::local::LocalWarehouse;
use paiio_storage::rest::{RestClient, TunnelClient};
use paiio_storage::{Column, TableSchema, TableService, TableUri};

pub const PROJECT: &str = "tch";
const ACCESS_ID: &str = "tch-id";
const ACCESS_KEY: &str = "tch-secret";

pub struct Warehouse {
    pub dir: tempfile::TempDir,
    pub warehouse: Arc<LocalWarehouse>,
}

impl Warehouse {
    pub fn new() -> Warehouse {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Arc::new(LocalWarehouse::open(dir.path().join("warehouse")).unwrap());
        Warehouse { dir, warehouse }
    }

    pub fn service(&self) -> Arc<dyn TableService> {
        self.warehouse.clone()
    }

    pub fn uri(&self, table: &str) -> String {
        format!("odps://{PROJECT}/tables/{table}")
    }

    /// Creates `table` with `columns` and writes `batches` (columns in table order).
    pub fn create(&self, table: &str, columns: Vec<Column>, batches: &[RecordBatch]) -> String {
        let uri = self.uri(table);
        let parsed = TableUri::parse(&uri).unwrap();
        let n = columns.len();
        let schema = TableSchema::new(columns, vec![]).unwrap();
        paiio::runtime::block_on(self.warehouse.create_table(
            &parsed.table,
            &schema,
            Default::default(),
        ))
        .unwrap()
        .unwrap();
        let mut writer =
            TableWriter::open_with(self.service(), &uri, 0, WriterOptions::default()).unwrap();
        let indices: Vec<usize> = (0..n).collect();
        for b in batches {
            writer.write(b, &indices).unwrap();
        }
        writer.close().unwrap();
        uri
    }

    /// A linearly separable table `(id, f1..f4, y)` of `rows` rows.
    pub fn separable(&self, table: &str, rows: usize, seed: u64) -> String {
        use paiio_storage::OdpsType as T;
        let mut columns = vec![Column::new("id", T::BigInt)];
        for i in 1..=4 {
            columns.push(Column::new(format!("f{i}"), T::Double));
        }
        columns.push(Column::new("y", T::BigInt));
        let (xs, ys) = separable_data(rows, seed);
        let mut arrays: Vec<(String, ArrayRef)> = vec![(
            "id".into(),
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        )];
        for (i, col) in xs.into_iter().enumerate() {
            arrays.push((format!("f{}", i + 1), Arc::new(Float64Array::from(col))));
        }
        arrays.push(("y".into(), Arc::new(Int64Array::from(ys))));
        let batch = RecordBatch::try_from_iter(arrays).unwrap();
        self.create(table, columns, &[batch])
    }

    /// The REST client against an in-process server over this warehouse.
    /// The warehouse served (the Storage API and the Tunnel, or the Tunnel only), and a
    /// client of it (the Storage API's, or the Tunnel's).
    pub fn serve(&self, tunnel: bool) -> (Arc<dyn TableService>, ServerHandle) {
        let server = Server::builder(self.warehouse.clone())
            .verifier(Verifier::new(DEFAULT_CLOCK_SKEW).with_key(ACCESS_ID, ACCESS_KEY))
            .storage_api(!tunnel)
            .build()
            .unwrap();
        let handle = server_runtime()
            .block_on(server.bind("127.0.0.1:0"))
            .unwrap();
        let client = RestClient::builder(handle.endpoint())
            .credentials(Credentials::new(ACCESS_ID, ACCESS_KEY))
            .project(PROJECT)
            .build()
            .unwrap();
        let client: Arc<dyn TableService> = if tunnel {
            Arc::new(TunnelClient::new(client))
        } else {
            Arc::new(client)
        };
        (client, handle)
    }
}

/// The runtime of test servers (apart from the facade's).
pub fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Feature columns (4 of `rows` values in [-1, 1)) and 0/1 labels `[w·x + b > 0]`, keeping a
/// margin of 0.05.
pub fn separable_data(rows: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<i64>) {
    let mut state = seed;
    let mut unit = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let w: Vec<f64> = (0..4).map(|_| unit()).collect();
    let b = unit() * 0.1;
    let mut xs: Vec<Vec<f64>> = (0..4).map(|_| Vec::with_capacity(rows)).collect();
    let mut ys = Vec::with_capacity(rows);
    while ys.len() < rows {
        let x: Vec<f64> = (0..4).map(|_| unit()).collect();
        let s: f64 = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + b;
        if s.abs() < 0.05 {
            continue;
        }
        for (c, v) in xs.iter_mut().zip(x) {
            c.push(v);
        }
        ys.push(i64::from(s > 0.0));
    }
    (xs, ys)
}
