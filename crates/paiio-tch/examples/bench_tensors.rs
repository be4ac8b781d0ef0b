//! Batches per second from a table to tensors, against building the same tensors from
//! in-memory vectors (the limit).
//!
//! ```text
//! cargo run --release -p paiio-tch --example bench_tensors -- [ROWS] [BATCH] [FEATURES]
//! ```
//!
//! A table of ROWS rows (default 1,000,000) of FEATURES DOUBLE columns (default 16) and a
//! BIGINT label is written to a temporary local warehouse; then, for each source, every row
//! is turned into `[BATCH, FEATURES]` float32 feature matrices and int64 labels (BATCH
//! default 1024):
//!
//! * `local`: `TensorBatches` over a `TableReader` on the warehouse (files, prefetch);
//! * `server`: the same through an in-process Storage API server (HTTP + Arrow IPC);
//! * `arrow-in-memory`: `paiio_tch::features` on in-memory Arrow batches (conversion only);
//! * `vec-limit`: `Tensor::from_slice` of a pre-interleaved row-major `Vec<f32>` (one memcpy
//!   per batch: the limit).

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use paiio::{ReaderOptions, TableReader, TableWriter, WriterOptions};
use paiio_server::Server;
use paiio_storage::auth::{Credentials, DEFAULT_CLOCK_SKEW, Verifier};
use paiio_storage::local::LocalWarehouse;
use paiio_storage::rest::RestClient;
use paiio_storage::{Column, OdpsType, TableSchema, TableService, TableUri};
use paiio_tch::{BatchOptions, TensorBatches};
use tch::{Kind, Tensor};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

struct Run {
    name: &'static str,
    batches: usize,
    rows: usize,
    secs: f64,
}

impl Run {
    fn print(&self, limit: Option<f64>) {
        let bps = self.batches as f64 / self.secs;
        println!(
            "{:<16} {:>8} batches {:>9} rows {:>8.3} s {:>10.1} batches/s {:>12.0} rows/s{}",
            self.name,
            self.batches,
            self.rows,
            self.secs,
            bps,
            self.rows as f64 / self.secs,
            limit
                .map(|l| format!("  ({:.1}% of the limit)", 100.0 * bps / l))
                .unwrap_or_default()
        );
    }
}

fn drain(name: &'static str, mut batches: TensorBatches) -> Run {
    let start = Instant::now();
    let (mut n, mut rows, mut check) = (0, 0, 0.0);
    for b in batches.by_ref() {
        let b = b.expect("a batch");
        rows += b.rows();
        n += 1;
        // Touch the tensors so nothing is optimised away.
        check += b.features.size()[0] as f64 + b.labels.map_or(0, |l| l.size()[0]) as f64;
    }
    assert_eq!(check as usize, 2 * rows);
    Run {
        name,
        batches: n,
        rows,
        secs: start.elapsed().as_secs_f64(),
    }
}

fn main() {
    let rows = arg(1, 1_000_000);
    let batch = arg(2, 1024);
    let k = arg(3, 16);
    tch::set_num_threads(1);
    println!(
        "{rows} rows, {k} DOUBLE features + BIGINT label, batches of {batch} -> [{batch}, {k}] \
         float32 + [{batch}] int64; {} CPUs",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // The data, in memory and in a table.
    let names: Vec<String> = (0..k).map(|i| format!("f{i}")).collect();
    let columns: Vec<Vec<f64>> = (0..k)
        .map(|j| {
            (0..rows)
                .map(|i| ((i * 31 + j * 7) % 1000) as f64 / 1000.0)
                .collect()
        })
        .collect();
    let labels: Vec<i64> = (0..rows as i64).map(|i| i % 2).collect();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Arc::new(LocalWarehouse::open(dir.path().join("wh")).unwrap());
    let uri = "odps://bench/tables/features";
    let mut schema: Vec<Column> = names
        .iter()
        .map(|n| Column::new(n, OdpsType::Double))
        .collect();
    schema.push(Column::new("y", OdpsType::BigInt));
    let table = TableUri::parse(uri).unwrap().table;
    paiio::runtime::block_on(warehouse.create_table(
        &table,
        &TableSchema::new(schema, vec![]).unwrap(),
        Default::default(),
    ))
    .unwrap()
    .unwrap();
    let start = Instant::now();
    let mut writer =
        TableWriter::open_with(warehouse.clone(), uri, 0, WriterOptions::default()).unwrap();
    let chunk = 65536;
    let mut in_memory = Vec::new();
    for s in (0..rows).step_by(chunk) {
        let e = (s + chunk).min(rows);
        let mut arrays: Vec<(String, ArrayRef)> = names
            .iter()
            .zip(&columns)
            .map(|(n, c)| {
                (
                    n.clone(),
                    Arc::new(Float64Array::from(c[s..e].to_vec())) as ArrayRef,
                )
            })
            .collect();
        arrays.push((
            "y".into(),
            Arc::new(Int64Array::from(labels[s..e].to_vec())),
        ));
        let b = RecordBatch::try_from_iter(arrays).unwrap();
        writer.write(&b, &(0..=k).collect::<Vec<_>>()).unwrap();
        in_memory.push(b);
    }
    writer.close().unwrap();
    println!("wrote the table in {:.2} s", start.elapsed().as_secs_f64());

    let options = BatchOptions::default()
        .features(&names.join(","))
        .label("y")
        .batch_size(batch);

    // The limit: the same tensors from in-memory vectors (row-major f32 already interleaved,
    // so one memcpy per batch).
    let row_major: Vec<f32> = (0..rows)
        .flat_map(|i| columns.iter().map(move |c| c[i] as f32))
        .collect();
    let start = Instant::now();
    let (mut n, mut check) = (0, 0i64);
    for s in (0..rows).step_by(batch) {
        let e = (s + batch).min(rows);
        let x = Tensor::from_slice(&row_major[s * k..e * k]).view([(e - s) as i64, k as i64]);
        let y = Tensor::from_slice(&labels[s..e]);
        check += x.size()[0] + y.size()[0];
        n += 1;
    }
    assert_eq!(check as usize, 2 * rows);
    let limit = Run {
        name: "vec-limit",
        batches: n,
        rows,
        secs: start.elapsed().as_secs_f64(),
    };

    // Conversion only: the same matrices from in-memory Arrow batches (column-major f64).
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let start = Instant::now();
    let mut n = 0;
    for b in &in_memory {
        for s in (0..b.num_rows()).step_by(batch) {
            let part = b.slice(s, batch.min(b.num_rows() - s));
            let x = paiio_tch::features(&part, &name_refs, Kind::Float).unwrap();
            let y = paiio_tch::labels(&part, "y", None).unwrap();
            assert_eq!(x.size()[0], y.size()[0]);
            n += 1;
        }
    }
    let arrow = Run {
        name: "arrow-in-memory",
        batches: n,
        rows,
        secs: start.elapsed().as_secs_f64(),
    };

    let local: Arc<dyn TableService> = warehouse.clone();
    let reader = TableReader::open_with(local, uri, ReaderOptions::default()).unwrap();
    let threads = reader.num_threads();
    let local_run = drain(
        "local",
        TensorBatches::new(reader, options.clone()).unwrap(),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = Server::builder(warehouse.clone())
        .verifier(Verifier::new(DEFAULT_CLOCK_SKEW).with_key("id", "key"))
        .build()
        .unwrap();
    let handle = rt.block_on(server.bind("127.0.0.1:0")).unwrap();
    let client = RestClient::builder(handle.endpoint())
        .credentials(Credentials::new("id", "key"))
        .project("bench")
        .build()
        .unwrap();
    let reader =
        TableReader::open_with(Arc::new(client), uri, ReaderOptions::default().threads(4)).unwrap();
    let server_run = drain("server", TensorBatches::new(reader, options).unwrap());
    rt.block_on(handle.shutdown());

    let l = limit.batches as f64 / limit.secs;
    limit.print(None);
    arrow.print(Some(l));
    local_run.print(Some(l));
    server_run.print(Some(l));
    println!("(local reader: {threads} prefetch threads; server reader: 4)");
}
