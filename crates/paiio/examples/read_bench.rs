//! Read benchmark of `TableReader`, printed side by side in one run:
//!
//! 1. throughput of reading a table (default 1 GiB of Arrow data) into Arrow batches from the
//!    local warehouse with `num_threads` 1, 2, 4, 8, against re-batching the same Arrow data
//!    already in memory (the limit);
//! 2. scaling over HTTP with the in-process Storage API server capped at `--stream-rate`
//!    (default 10MB per request): aggregate MB/s for `num_threads` 1..64;
//! 3. peak memory while streaming a table ten times larger than the read-ahead capacity.
//!
//! ```text
//! cargo run --release -p paiio --example read_bench -- [--size-mb 1024] [--threads 1,2,4,8]
//!     [--rate 10MB] [--rate-threads 1,2,4,8,16,32,64] [--rate-seconds 5] [--warehouse DIR]
//! ```
//! A quick smoke run: `--size-mb 16 --rate-threads 1,4 --rate-seconds 1`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use paiio::options::ReaderOptions;
use paiio::{TableReader, runtime};
use paiio_server::Server;
use paiio_storage::auth::{Credentials, DEFAULT_CLOCK_SKEW, Verifier};
use paiio_storage::local::LocalWarehouse;
use paiio_storage::rest::RestClient;
use paiio_storage::{
    Column, OdpsType, TableId, TableSchema, TableService, WriteRequest, WriteSessionRequest,
};

const PAYLOAD: usize = 100;
const ACCESS_ID: &str = "bench-id";
const ACCESS_KEY: &str = "bench-secret";

struct Args {
    size_mb: u64,
    threads: Vec<usize>,
    rate: String,
    rate_threads: Vec<usize>,
    rate_seconds: f64,
    warehouse: Option<std::path::PathBuf>,
    batch_rows: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        size_mb: 1024,
        threads: vec![1, 2, 4, 8],
        rate: "10MB".into(),
        rate_threads: vec![1, 2, 4, 8, 16, 32, 64],
        rate_seconds: 5.0,
        warehouse: None,
        batch_rows: 65536,
    };
    let list = |s: &str| {
        s.split(',')
            .map(|x| x.trim().parse().expect("a number"))
            .collect::<Vec<usize>>()
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--size-mb" => a.size_mb = v().parse().expect("--size-mb N"),
            "--threads" => a.threads = list(&v()),
            "--rate" => a.rate = v(),
            "--rate-threads" => a.rate_threads = list(&v()),
            "--rate-seconds" => a.rate_seconds = v().parse().expect("--rate-seconds S"),
            "--warehouse" => a.warehouse = Some(v().into()),
            "--batch-rows" => a.batch_rows = v().parse().expect("--batch-rows N"),
            other => panic!("unknown argument {other} (see the example's doc comment)"),
        }
    }
    a
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("payload", DataType::Utf8, true),
    ]))
}

fn make_batch(start: i64, rows: usize) -> RecordBatch {
    let ids = Int64Array::from_iter_values(start..start + rows as i64);
    let xs = Float64Array::from_iter_values((0..rows).map(|i| (start + i as i64) as f64 * 0.5));
    let payload = StringArray::from_iter_values((0..rows).map(|i| {
        let c = (b'a' + ((start as usize + i) % 26) as u8) as char;
        std::iter::repeat_n(c, PAYLOAD).collect::<String>()
    }));
    let columns: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(xs), Arc::new(payload)];
    RecordBatch::try_new(schema(), columns).expect("a generated batch")
}

/// Creates and fills `table` with `rows` rows unless it already has them.
fn ensure_table(w: &Arc<LocalWarehouse>, table: &TableId, rows: u64) -> paiio::Result<()> {
    runtime::block_on(async {
        if let Ok(info) = w.describe_table(table).await {
            if info.row_count == rows {
                return Ok(());
            }
            w.drop_table(table, true).await?;
        }
        let columns = vec![
            Column::new("id", OdpsType::BigInt),
            Column::new("x", OdpsType::Double),
            Column::new("payload", OdpsType::String),
        ];
        w.create_table(
            table,
            &TableSchema::new(columns, vec![])?,
            Default::default(),
        )
        .await?;
        let session = w
            .create_write_session(&WriteSessionRequest::new(table.clone()))
            .await?;
        let stream = w
            .create_write_stream(table, &session.session_id, None, false)
            .await?;
        let mut at = 0u64;
        while at < rows {
            let n = (rows - at).min(65536) as usize;
            w.write(WriteRequest {
                table: table.clone(),
                session_id: session.session_id.clone(),
                stream_id: stream.stream_id.clone(),
                version: stream.version,
                row_offset: None,
                access_token: None,
                batches: vec![make_batch(at as i64, n)],
            })
            .await?;
            at += n as u64;
        }
        w.close_write_stream(
            table,
            &session.session_id,
            &stream.stream_id,
            stream.version,
        )
        .await?;
        w.commit_write_session(table, &session.session_id, None)
            .await?;
        Ok::<_, paiio::Error>(())
    })?
}

fn batch_bytes(b: &RecordBatch) -> usize {
    b.columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

fn checksum(b: &RecordBatch) -> i64 {
    b.column(0)
        .as_primitive::<Int64Type>()
        .values()
        .iter()
        .fold(0i64, |a, v| a.wrapping_add(*v))
}

struct Run {
    bytes: u64,
    rows: u64,
    secs: f64,
    sum: i64,
    peak_buffered: usize,
}

impl Run {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

/// Reads with a reader until the end or `limit`.
fn drain(mut reader: TableReader, limit: Option<Duration>) -> paiio::Result<Run> {
    let start = Instant::now();
    let (mut bytes, mut rows, mut sum) = (0u64, 0u64, 0i64);
    for batch in reader.by_ref() {
        let batch = batch?;
        bytes += batch_bytes(&batch) as u64;
        rows += batch.num_rows() as u64;
        sum = sum.wrapping_add(checksum(&batch));
        if limit.is_some_and(|l| start.elapsed() >= l) {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Run {
        bytes,
        rows,
        secs,
        sum,
        peak_buffered: reader.buffer_stats().peak_bytes,
    })
}

/// The limit: the same Arrow data, already in memory, assembled into the same batches with one
/// copy (what a reader must do at least once: move the bytes into the batch it hands out).
fn from_memory(batches: &[RecordBatch], batch_rows: usize) -> Run {
    let start = Instant::now();
    let (mut bytes, mut rows, mut sum) = (0u64, 0u64, 0i64);
    let mut parts: Vec<RecordBatch> = Vec::new();
    let mut have = 0;
    let mut emit = |parts: &mut Vec<RecordBatch>| {
        if parts.len() == 1 {
            // concat of a single batch is a zero-copy clone: split it so the bytes are copied.
            let b = parts.pop().expect("one part");
            let half = b.num_rows() / 2;
            parts.push(b.slice(0, half));
            parts.push(b.slice(half, b.num_rows() - half));
        }
        let out =
            arrow_select::concat::concat_batches(&parts[0].schema(), parts.iter()).expect("concat");
        bytes += batch_bytes(&out) as u64;
        rows += out.num_rows() as u64;
        sum = sum.wrapping_add(checksum(&out));
        parts.clear();
    };
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let n = (batch.num_rows() - offset).min(batch_rows - have);
            parts.push(batch.slice(offset, n));
            offset += n;
            have += n;
            if have == batch_rows {
                emit(&mut parts);
                have = 0;
            }
        }
    }
    if !parts.is_empty() {
        emit(&mut parts);
    }
    Run {
        bytes,
        rows,
        secs: start.elapsed().as_secs_f64(),
        sum,
        peak_buffered: 0,
    }
}

/// Peak resident memory (VmHWM) in bytes, and a reset of it (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mb(bytes: impl Into<f64>) -> f64 {
    bytes.into() / 1e6
}

fn main() -> paiio::Result<()> {
    let args = parse_args();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = args
        .warehouse
        .clone()
        .unwrap_or_else(|| tmp.path().join("warehouse"));
    let warehouse = Arc::new(LocalWarehouse::open(&root)?);
    let row_bytes = 8 + 8 + PAYLOAD as u64 + 4;
    let rows = (args.size_mb << 20) / row_bytes;
    let table = TableId::new("bench", None, &format!("read_bench_{}mb", args.size_mb))?;
    let uri = format!("odps://bench/tables/{}", table.table);
    let t0 = Instant::now();
    ensure_table(&warehouse, &table, rows)?;
    println!(
        "table {uri}: {rows} rows of {row_bytes} B (~{} MiB of Arrow data), ready in {:.1}s, warehouse {}",
        args.size_mb,
        t0.elapsed().as_secs_f64(),
        root.display()
    );
    let service: Arc<dyn TableService> = warehouse.clone();
    let options = |threads: usize| {
        ReaderOptions::default()
            .threads(threads)
            .batch_rows(args.batch_rows)
    };

    // 3 first, while nothing else is resident: a table ten times the read-ahead capacity.
    let capacity = (rows / 10).max(1) as usize;
    let reset = reset_peak_rss();
    let before = peak_rss().unwrap_or(0);
    let run = drain(
        TableReader::open_with(
            service.clone(),
            uri.as_str(),
            options(4).batch_rows(8192).capacity(capacity),
        )?,
        None,
    )?;
    let after = peak_rss().unwrap_or(0);
    let memory_line = format!(
        "capacity {capacity} rows ({:.0} MB), table {} rows ({:.0} MB): peak buffered {:.1} MB, \
         peak RSS {:.0} MB{} (resident before {:.0} MB)",
        mb((capacity as u64 * row_bytes) as f64),
        run.rows,
        mb(run.bytes as f64),
        mb(run.peak_buffered as f64),
        mb(after as f64),
        if reset {
            ""
        } else {
            " (peak not resettable here)"
        },
        mb(before as f64)
    );

    // 1. Local throughput against memory.
    let mut runs = Vec::new();
    for &threads in &args.threads {
        let reader = TableReader::open_with(service.clone(), uri.as_str(), options(threads))?;
        runs.push((
            format!("TableReader local, num_threads {threads}"),
            drain(reader, None)?,
        ));
    }
    let in_memory: Vec<RecordBatch> =
        TableReader::open_with(service.clone(), uri.as_str(), options(8))?
            .collect::<paiio::Result<_>>()?;
    let memory = from_memory(&in_memory, args.batch_rows);
    drop(in_memory);
    let expected_sum = memory.sum;

    println!(
        "\n1. read into Arrow (batches of {} rows), local warehouse",
        args.batch_rows
    );
    println!(
        "{:<44} {:>10} {:>12} {:>10} {:>14}",
        "source", "MB/s", "rows/s", "x memory", "peak buf MB"
    );
    println!(
        "{:<44} {:>10.0} {:>12.0} {:>10} {:>14}",
        "same Arrow data from memory (limit)",
        memory.mb_s(),
        memory.rows as f64 / memory.secs,
        "1.00",
        "-"
    );
    for (name, run) in &runs {
        assert_eq!(run.sum, expected_sum, "{name} read other rows");
        println!(
            "{:<44} {:>10.0} {:>12.0} {:>10.2} {:>14.1}",
            name,
            run.mb_s(),
            run.rows as f64 / run.secs,
            run.mb_s() / memory.mb_s(),
            mb(run.peak_buffered as f64)
        );
    }

    // 2. Scaling over HTTP under a per-request rate.
    let rate = paiio_server::parse_size(&args.rate)?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .expect("the server runtime");
    let server = Server::builder(warehouse.clone())
        .verifier(Verifier::new(DEFAULT_CLOCK_SKEW).with_key(ACCESS_ID, ACCESS_KEY))
        .stream_rate(Some(rate))
        .build()?;
    let handle = server_rt.block_on(server.bind("127.0.0.1:0"))?;
    let client: Arc<dyn TableService> = Arc::new(
        RestClient::builder(handle.endpoint())
            .credentials(Credentials::new(ACCESS_ID, ACCESS_KEY))
            .project("bench")
            .build()?,
    );
    println!(
        "\n2. over HTTP, server --stream-rate {} ({:.1} MB/s per request), {:.0}s per point",
        args.rate,
        mb(rate as f64),
        args.rate_seconds
    );
    println!(
        "{:<12} {:>12} {:>16} {:>12}",
        "num_threads", "MB/s", "ideal MB/s", "efficiency"
    );
    for &threads in &args.rate_threads {
        // The reader's automatic request size (what users get).
        let reader = TableReader::open_with(
            client.clone(),
            uri.as_str(),
            ReaderOptions::default().threads(threads).batch_rows(8192),
        )?;
        let run = drain(reader, Some(Duration::from_secs_f64(args.rate_seconds)))?;
        let ideal = mb(rate as f64) * threads as f64;
        println!(
            "{:<12} {:>12.1} {:>16.1} {:>11.0}%",
            threads,
            run.mb_s(),
            ideal,
            100.0 * run.mb_s() / ideal
        );
    }
    server_rt.block_on(handle.shutdown());

    println!("\n3. bounded memory while streaming");
    println!("{memory_line}");
    Ok(())
}
