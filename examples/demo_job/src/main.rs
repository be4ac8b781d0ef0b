//! `demo-job`: the main job of paiio-rs, on the embedded local warehouse.
//!
//! The coordinator (`demo-job`, no `--worker`):
//! 1. creates `odps://demo/tables/train` (`id bigint, f1..f8 double, label bigint`) with
//!    `--rows` rows whose label is linearly separable, and an empty
//!    `odps://demo/tables/predictions` (`id bigint, prediction double`);
//! 2. starts `--workers` copies of itself (`--worker N`), each reading slice N of the table with
//!    prefetch into a logistic regression trained by SGD, and writing a prediction for every
//!    row it reads with a `TableWriter` under its slice id;
//! 3. shows a progress bar per worker, then the throughput of each worker and in total;
//! 4. reads the predictions back and checks that every input row was read once and written
//!    once, and that the accuracy is above `--min-accuracy`.
//!
//! The warehouse is `--warehouse DIR` (else `$PAIIO_WAREHOUSE`); the workers get it as
//! `PAIIO_WAREHOUSE` and open the table with `TableReader::open`, as a training script would.
//! With `--tunnel`, the coordinator serves the warehouse in-process as a public endpoint does
//! (the MaxCompute Tunnel only, signatures checked) and the workers reach it through an ini
//! file of `access_id`, `access_key` and `end_point` alone (`ODPS_CONFIG_FILE_PATH`), as a job
//! outside a VPC does.
//!
//! Predictions are *progressive*: each row is predicted with the model as it stands before the
//! row updates it (online SGD), so one pass both trains and predicts and every row is read once.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use paiio::{ReaderOptions, TableReader, TableWriter, WriterOptions};
use paiio_storage::local::LocalWarehouse;
use paiio_storage::{Column, CreateTableOptions, OdpsType, TableSchema, TableService, TableUri};

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const FEATURES: usize = 8;
const TRAIN: &str = "odps://demo/tables/train";
const PREDICTIONS: &str = "odps://demo/tables/predictions";
/// Bytes of one input row as decoded (10 eight-byte columns), for MB/s.
const ROW_BYTES: u64 = 8 * (FEATURES as u64 + 2);

/// Configuration variables that would point the workers at another backend.
const CONFIG_VARS: &[&str] = &[
    "ODPS_CONFIG_FILE_PATH",
    "ODPS_ENDPOINT",
    "ODPS_PROJECT",
    "ODPS_TUNNEL_ENDPOINT",
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
];

#[derive(Debug, Parser)]
#[command(about = "Two workers train on their slices of a table and write predictions back")]
struct Args {
    /// The warehouse directory (created if missing).
    #[arg(long, env = "PAIIO_WAREHOUSE")]
    warehouse: PathBuf,
    /// Rows of the generated training table.
    #[arg(long, default_value_t = 4_000_000)]
    rows: u64,
    /// Worker processes (slices).
    #[arg(long, default_value_t = 2)]
    workers: u64,
    /// Prefetch threads of each worker's reader.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rows per read.
    #[arg(long, default_value_t = 8192)]
    batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 0.5)]
    lr: f64,
    /// The job fails below this accuracy of the predictions.
    #[arg(long, default_value_t = 0.95)]
    min_accuracy: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Serve the warehouse over the Tunnel only and let the workers read and write through it.
    #[arg(long)]
    tunnel: bool,
    /// Run as worker N (started by the coordinator).
    #[arg(long, hide = true)]
    worker: Option<u64>,
}

fn main() {
    let args = Args::parse();
    let result = match args.worker {
        Some(slice) => worker(&args, slice),
        None => coordinate(&args),
    };
    if let Err(e) = result {
        eprintln!("demo-job: error: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// The coordinator.

fn coordinate(args: &Args) -> BoxResult<()> {
    if args.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let job_start = Instant::now();
    std::fs::create_dir_all(&args.warehouse)?;
    let service: Arc<dyn TableService> = Arc::new(LocalWarehouse::open(&args.warehouse)?);
    println!(
        "demo-job: {} rows, {} workers, warehouse {}",
        args.rows,
        args.workers,
        args.warehouse.display()
    );

    // 1. The tables.
    let start = Instant::now();
    generate(service.clone(), args)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "created {TRAIN}: {} rows (id, f1..f8 double, label bigint) in {secs:.1} s \
         ({:.0} rows/s, {:.1} MB/s)",
        args.rows,
        args.rows as f64 / secs,
        (args.rows * ROW_BYTES) as f64 / secs / 1e6
    );
    let predictions = TableUri::parse(PREDICTIONS)?;
    let schema = TableSchema::new(
        vec![
            Column::new("id", OdpsType::BigInt),
            Column::new("prediction", OdpsType::Double),
        ],
        vec![],
    )?;
    block(service.drop_table(&predictions.table, true))?;
    block(service.create_table(&predictions.table, &schema, CreateTableOptions::default()))?;
    println!("created {PREDICTIONS}: (id bigint, prediction double)");

    // 2. The workers, on the warehouse or through a Tunnel-only server of it.
    let served = if args.tunnel {
        Some(TunnelServer::start(&args.warehouse)?)
    } else {
        None
    };
    println!(
        "starting {} workers (slice i of {}, {} prefetch threads each)",
        args.workers, args.workers, args.threads
    );
    let exe = std::env::current_exe()?;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "worker {prefix} [{bar:30}] {human_pos}/{human_len} rows {rate} {msg}",
    )?
    .with_key("rate", rows_per_sec)
    .progress_chars("=> ");
    let train_start = Instant::now();
    let mut handles = Vec::new();
    for slice in 0..args.workers {
        let mut cmd = Command::new(&exe);
        cmd.arg("--worker")
            .arg(slice.to_string())
            .arg("--workers")
            .arg(args.workers.to_string())
            .arg("--warehouse")
            .arg(&args.warehouse)
            .arg("--rows")
            .arg(args.rows.to_string())
            .arg("--threads")
            .arg(args.threads.to_string())
            .arg("--batch-size")
            .arg(args.batch_size.to_string())
            .arg("--lr")
            .arg(args.lr.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for var in CONFIG_VARS {
            cmd.env_remove(var);
        }
        match &served {
            Some(s) => cmd
                .env_remove("PAIIO_WAREHOUSE")
                .env("ODPS_CONFIG_FILE_PATH", &s.ini),
            None => cmd.env("PAIIO_WAREHOUSE", &args.warehouse),
        };
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or("no worker stdout")?;
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(style.clone());
        bar.set_prefix(slice.to_string());
        handles.push(std::thread::spawn(move || {
            follow(slice, child, stdout, bar)
        }));
    }
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for h in handles {
        match h.join().map_err(|_| "a worker thread panicked")? {
            Ok(r) => reports.push(r),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if let Some(s) = served {
        s.stop();
    }
    if !failed.is_empty() {
        return Err(failed.join("; ").into());
    }
    let wall = train_start.elapsed().as_secs_f64();

    // 3. Throughput.
    let mut total_rows = 0;
    for r in &reports {
        println!(
            "worker {}: read {} rows in {:.2} s: {:.0} rows/s, {:.1} MB/s; wrote {} predictions; \
             progressive accuracy {:.3}%",
            r.slice,
            r.rows,
            r.secs,
            r.rows as f64 / r.secs,
            (r.rows * ROW_BYTES) as f64 / r.secs / 1e6,
            r.written,
            100.0 * r.correct as f64 / r.rows.max(1) as f64
        );
        total_rows += r.rows;
    }
    println!(
        "total: {total_rows} rows in {wall:.2} s: {:.0} rows/s, {:.1} MB/s",
        total_rows as f64 / wall,
        (total_rows * ROW_BYTES) as f64 / wall / 1e6
    );

    // 4. Checks.
    verify(service, args, &reports)?;
    println!(
        "main job done in {:.1} s: every row read once, written once",
        job_start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What a worker reports when it is done (its last stdout line).
#[derive(Debug)]
struct Report {
    slice: u64,
    rows: u64,
    secs: f64,
    written: u64,
    correct: u64,
    id_sum: u64,
}

/// Follows a worker's stdout (`rows N` once, `progress N` lines, a final `done ...`) on `bar`.
fn follow(
    slice: u64,
    mut child: std::process::Child,
    stdout: std::process::ChildStdout,
    bar: ProgressBar,
) -> BoxResult<Report> {
    let mut report = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match words.next() {
            Some("rows") => bar.set_length(num(words.next())?),
            Some("progress") => bar.set_position(num(words.next())?),
            Some("done") => {
                let v: Vec<&str> = words.collect();
                if v.len() != 5 {
                    return Err(format!("worker {slice}: bad report {line:?}").into());
                }
                report = Some(Report {
                    slice,
                    rows: v[0].parse()?,
                    secs: v[1].parse()?,
                    written: v[2].parse()?,
                    correct: v[3].parse()?,
                    id_sum: v[4].parse()?,
                });
            }
            _ => bar.println(format!("worker {slice}: {line}")),
        }
    }
    let status = child.wait()?;
    bar.finish_with_message("done");
    if !status.success() {
        return Err(format!("worker {slice} failed ({status})").into());
    }
    report.ok_or_else(|| format!("worker {slice} exited without a report").into())
}

fn num(word: Option<&str>) -> BoxResult<u64> {
    Ok(word.ok_or("missing number")?.parse()?)
}

fn block<T>(f: impl std::future::Future<Output = paiio_storage::Result<T>>) -> BoxResult<T> {
    Ok(paiio::runtime::block_on(f)??)
}

/// splitmix64: a small deterministic generator.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// (Re)creates the training table: `label = [w·x + b > 0]` for a fixed random `w`, `b`, with
/// `x` uniform in [-1, 1)^8 and a margin of 0.05 around the boundary (linearly separable).
fn generate(service: Arc<dyn TableService>, args: &Args) -> BoxResult<()> {
    let uri = TableUri::parse(TRAIN)?;
    let mut columns = vec![Column::new("id", OdpsType::BigInt)];
    columns.extend((1..=FEATURES).map(|i| Column::new(format!("f{i}"), OdpsType::Double)));
    columns.push(Column::new("label", OdpsType::BigInt));
    let schema = TableSchema::new(columns, vec![])?;
    block(service.drop_table(&uri.table, true))?;
    block(service.create_table(&uri.table, &schema, CreateTableOptions::default()))?;
    let mut writer = TableWriter::open_uri(service, uri, 0, WriterOptions::default())?;
    let mut rng = SplitMix(args.seed);
    let w: Vec<f64> = (0..FEATURES).map(|_| rng.unit()).collect();
    let b = rng.unit() * 0.1;
    let indices: Vec<usize> = (0..FEATURES + 2).collect();
    let bar = ProgressBar::new(args.rows).with_style(
        ProgressStyle::with_template("generate [{bar:30}] {human_pos}/{human_len} rows {rate}")?
            .with_key("rate", rows_per_sec)
            .progress_chars("=> "),
    );
    let chunk = 65536u64;
    let mut id = 0u64;
    while id < args.rows {
        let n = chunk.min(args.rows - id) as usize;
        let mut xs: Vec<Vec<f64>> = (0..FEATURES).map(|_| Vec::with_capacity(n)).collect();
        let mut ys = Vec::with_capacity(n);
        let mut x = [0.0f64; FEATURES];
        for _ in 0..n {
            // Rows within 0.05 of the boundary are drawn again: a margin between the classes.
            let s = loop {
                x.iter_mut().for_each(|v| *v = rng.unit());
                let s = b + x.iter().zip(&w).map(|(v, wi)| v * wi).sum::<f64>();
                if s.abs() >= 0.05 {
                    break s;
                }
            };
            for (col, v) in xs.iter_mut().zip(x) {
                col.push(v);
            }
            ys.push(i64::from(s > 0.0));
        }
        let mut arrays: Vec<(String, ArrayRef)> = vec![(
            "id".into(),
            Arc::new(Int64Array::from_iter_values(
                id as i64..(id as i64 + n as i64),
            )),
        )];
        for (i, col) in xs.into_iter().enumerate() {
            arrays.push((format!("f{}", i + 1), Arc::new(Float64Array::from(col))));
        }
        arrays.push(("label".into(), Arc::new(Int64Array::from(ys))));
        writer.write(&RecordBatch::try_from_iter(arrays)?, &indices)?;
        id += n as u64;
        bar.set_position(id);
    }
    writer.close()?;
    bar.finish_and_clear();
    Ok(())
}

/// Reads the labels and the predictions back: every id once on each side, and the accuracy.
fn verify(service: Arc<dyn TableService>, args: &Args, reports: &[Report]) -> BoxResult<()> {
    let n = args.rows as usize;
    // The ids the workers read: counts and sums (each worker's slice is disjoint).
    let read: u64 = reports.iter().map(|r| r.rows).sum();
    let id_sum: u64 = reports.iter().map(|r| r.id_sum).sum();
    let expected_sum = args.rows * args.rows.saturating_sub(1) / 2;
    if read != args.rows || id_sum != expected_sum {
        return Err(format!(
            "the workers read {read} rows (id sum {id_sum}); the table has {} (id sum \
             {expected_sum})",
            args.rows
        )
        .into());
    }

    let mut labels = vec![-1i8; n];
    let mut reader = TableReader::open_with(
        service.clone(),
        TRAIN,
        ReaderOptions::default()
            .selected("id,label")
            .threads(args.threads),
    )?;
    while reader.position() < reader.row_count() {
        let batch = reader.read(65536)?;
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let ys = batch.column(1).as_primitive::<Int64Type>();
        for (id, y) in ids.values().iter().zip(ys.values()) {
            let slot = labels
                .get_mut(*id as usize)
                .ok_or_else(|| format!("input id {id} out of range"))?;
            if *slot != -1 {
                return Err(format!("input id {id} appears twice").into());
            }
            *slot = *y as i8;
        }
    }
    if let Some(missing) = labels.iter().position(|l| *l == -1) {
        return Err(format!("input id {missing} is missing").into());
    }

    let mut seen = vec![false; n];
    let (mut written, mut correct) = (0u64, 0u64);
    let mut reader = TableReader::open_with(
        service,
        PREDICTIONS,
        ReaderOptions::default().threads(args.threads),
    )?;
    while reader.position() < reader.row_count() {
        let batch = reader.read(65536)?;
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let ps = batch.column(1).as_primitive::<Float64Type>();
        for (id, p) in ids.values().iter().zip(ps.values()) {
            let i = usize::try_from(*id)
                .ok()
                .filter(|i| *i < n)
                .ok_or_else(|| format!("prediction for unknown id {id}"))?;
            if seen[i] {
                return Err(format!("id {id} was written twice").into());
            }
            seen[i] = true;
            written += 1;
            correct += u64::from((*p > 0.5) == (labels[i] == 1));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(format!("no prediction was written for id {missing}").into());
    }
    let accuracy = correct as f64 / written.max(1) as f64;
    println!(
        "check: {read} rows read by the workers = {} input rows; {written} predictions, \
         ids = input ids, each once",
        args.rows
    );
    println!(
        "check: accuracy of the predictions {:.3}% (threshold {:.2}%)",
        100.0 * accuracy,
        100.0 * args.min_accuracy
    );
    if accuracy < args.min_accuracy {
        return Err(format!(
            "accuracy {:.4} is below --min-accuracy {}",
            accuracy, args.min_accuracy
        )
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A worker.

// Rows index the feature columns (column-major batches): plain index loops read best here.
/// `paiio serve --tunnel-only` of the warehouse, in this process, with fresh keys, and the ini
/// file that names it.
struct TunnelServer {
    handle: paiio_server::ServerHandle,
    ini: PathBuf,
}

impl TunnelServer {
    fn start(warehouse: &std::path::Path) -> BoxResult<TunnelServer> {
        // The server runs on the process-wide runtime of the paiio crate.
        let runtime = paiio::runtime::runtime();
        let (id, key) = ("demo-job", uuid::Uuid::new_v4().simple().to_string());
        let verifier = paiio_storage::auth::Verifier::default().with_key(id, key.clone());
        let server = paiio_server::Server::builder(Arc::new(LocalWarehouse::open(warehouse)?))
            .verifier(verifier)
            .storage_api(false)
            .build()?;
        let handle = runtime.block_on(server.bind("127.0.0.1:0"))?;
        let ini = std::env::temp_dir().join(format!("demo-job-{}.ini", std::process::id()));
        std::fs::write(
            &ini,
            format!(
                "access_id={id}\naccess_key={key}\nend_point={}\n",
                handle.endpoint()
            ),
        )?;
        println!(
            "serving the warehouse over the Tunnel only at {}; the workers read {}",
            handle.endpoint(),
            ini.display()
        );
        Ok(TunnelServer { handle, ini })
    }

    fn stop(self) {
        let _ = std::fs::remove_file(&self.ini);
        paiio::runtime::runtime().block_on(self.handle.shutdown());
    }
}

#[allow(clippy::needless_range_loop)]
fn worker(args: &Args, slice: u64) -> BoxResult<()> {
    let options = ReaderOptions::default()
        .selected("id,f1,f2,f3,f4,f5,f6,f7,f8,label")
        .slice(slice, args.workers)
        .threads(args.threads);
    // The configured backend: $PAIIO_WAREHOUSE or $ODPS_CONFIG_FILE_PATH, set by the
    // coordinator.
    let mut reader = TableReader::open(TRAIN, options)?;
    let mut writer = TableWriter::open(PREDICTIONS, slice)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "rows {}", reader.row_count())?;
    out.flush()?;

    let start = Instant::now();
    let mut w = [0.0f64; FEATURES];
    let mut b = 0.0f64;
    let (mut rows, mut correct, mut id_sum) = (0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    while reader.position() < reader.row_count() {
        let batch = reader.read(args.batch_size)?;
        let n = batch.num_rows();
        let ids = batch.column(0).as_primitive::<Int64Type>().clone();
        let xs: Vec<&[f64]> = (1..=FEATURES)
            .map(|i| &batch.column(i).as_primitive::<Float64Type>().values()[..])
            .collect();
        let ys = batch.column(FEATURES + 1).as_primitive::<Int64Type>();
        let mut predictions = Vec::with_capacity(n);
        // Online SGD: predict each row with the current model, then learn from it.
        for r in 0..n {
            let z: f64 = b + (0..FEATURES).map(|j| w[j] * xs[j][r]).sum::<f64>();
            let p = sigmoid(z);
            predictions.push(p);
            let y = ys.value(r) as f64;
            correct += u64::from((p > 0.5) == (y > 0.5));
            let g = args.lr * (p - y);
            for j in 0..FEATURES {
                w[j] -= g * xs[j][r];
            }
            b -= g;
        }
        id_sum += ids.values().iter().map(|v| *v as u64).sum::<u64>();
        let out_batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            (
                "prediction",
                Arc::new(Float64Array::from(predictions)) as ArrayRef,
            ),
        ])?;
        writer.write(&out_batch, &[0, 1])?;
        rows += n as u64;
        if last_report.elapsed() >= Duration::from_millis(100) {
            writeln!(out, "progress {rows}")?;
            out.flush()?;
            last_report = Instant::now();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let written = writer.rows_written();
    writer.close()?;
    writeln!(out, "progress {rows}")?;
    writeln!(out, "done {rows} {secs} {written} {correct} {id_sum}")?;
    out.flush()?;
    Ok(())
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The progress bars' rate, in whole rows per second.
fn rows_per_sec(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.0} rows/s", state.per_sec());
}
