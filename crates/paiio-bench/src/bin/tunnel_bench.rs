//! `tunnel_bench`: paiio's Tunnel reader (`TunnelClient`) side by side with the released
//! PyODPS's `open_reader(arrow=True)`, on the same `paiio serve --tunnel-only` and table.
//!
//! ```text
//! tunnel_bench [--gb 1.1 | --rows N | --quick] [--paiio PATH] [--python PATH]
//!              [--streams 1,4] [--stream-rate 10MB] [--compare-ranges 4] [--compare-mb 80]
//!              [--rate-ranges 1,2,4,8,16,32,64] [--rate-range-mb 20] [--repeat 3]
//!              [--no-pyodps] [--json FILE]
//! ```
//!
//! On the cached table `bench.wide` (see `serve_bench`):
//!
//! * **uncapped** (`paiio serve --tunnel-only`): the whole table read by the Tunnel client with
//!   1 and 4 parallel row ranges of one download session (every batch fully decoded), and by
//!   PyODPS (`crates/paiio-bench/python/pyodps_tunnel_read.py`: one download session, one
//!   `open_arrow_reader` over the table, iterated batch by batch). Reported: GB/s, and the
//!   client's CPU seconds per GB of table data (this process for ours, the child for PyODPS;
//!   the GB are the table's Arrow bytes, the same for both).
//! * **capped** (`paiio serve --tunnel-only --stream-rate 10MB`, a cap per request as the
//!   service has): the same rows (`--compare-mb` of wire bytes) read by PyODPS and by the
//!   Tunnel client with `--compare-ranges` ranges; then the client with N = 1 … 64 ranges of
//!   `--rate-range-mb` each, the aggregate against the ideal N × rate.
//!
//! Wire rates count the bytes of the Tunnel Arrow stream (measured once from a raw read of the
//! whole table), so they compare with the cap. Every measured read runs `--repeat` times and
//! the median is reported. Prints one table and writes JSON to `$PAIIO_CACHE/bench/tunnel.json`.
//! Run it with `scripts/bench-tunnel.sh`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use paiio_bench::client::BoxError;
use paiio_bench::reads::{self, PyodpsRun, ReadRun};
use paiio_bench::{cli, proc_stats, server, table};
use paiio_storage::TableService;
use paiio_storage::rest::{RestClient, TunnelClient};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "paiio's Tunnel reader vs PyODPS open_reader(arrow=True), uncapped and capped")]
struct Args {
    #[command(flatten)]
    table: cli::TableArgs,

    /// The venv python with pyodps 0.13.2 and pyarrow (default: $PAIIO_VENV/bin/python).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,

    /// Skip the PyODPS reads.
    #[arg(long)]
    no_pyodps: bool,

    /// Runs of each measured read (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,

    /// Parallel ranges of the uncapped reads of the whole table.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4])]
    streams: Vec<usize>,

    /// The per-request rate of the capped server; "0" skips the capped runs.
    #[arg(long, default_value = "10MB")]
    stream_rate: String,

    /// Parallel ranges of the Tunnel client set against PyODPS on the capped server.
    #[arg(long, default_value_t = 4)]
    compare_ranges: usize,

    /// Megabytes (10^6, wire) of the capped comparison (default 80, 20 with --quick).
    #[arg(long)]
    compare_mb: Option<f64>,

    /// Parallel ranges of the capped fan-out.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8, 16, 32, 64])]
    rate_ranges: Vec<usize>,

    /// Megabytes (wire) each range of the capped fan-out reads (default 20, 10 with --quick).
    #[arg(long)]
    rate_range_mb: Option<f64>,
}

fn main() {
    cli::run_main("tunnel_bench", run(Args::parse()));
}

/// A Tunnel client of `endpoint` (anonymous: the bench servers accept unsigned calls).
fn tunnel_client(endpoint: &str) -> Result<Arc<dyn TableService>, BoxError> {
    let rest = RestClient::builder(endpoint).project("bench").build()?;
    Ok(Arc::new(TunnelClient::new(rest)))
}

/// The bytes of the Tunnel Arrow stream of the whole table, read raw (also warms the cache).
async fn wire_bytes(endpoint: &str, rows: u64) -> Result<u64, BoxError> {
    let http = paiio_bench::client::http_client()?;
    let base = endpoint.trim_end_matches("/api");
    let table = format!("{base}/projects/bench/tables/wide");
    let session = http
        .post(format!("{table}?downloads="))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let session: Value = serde_json::from_slice(&session)?;
    let id = session["DownloadID"].as_str().ok_or("no DownloadID")?;
    let response = http
        .get(format!(
            "{table}?data&arrow&downloadid={id}&rowrange=(0,{rows})"
        ))
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        total += chunk?.len() as u64;
    }
    Ok(total)
}

async fn median_read(
    service: &Arc<dyn TableService>,
    ranges: &[(u64, u64)],
    max_batch_rows: usize,
    repeat: u32,
) -> Result<ReadRun, BoxError> {
    let mut runs = Vec::with_capacity(repeat as usize);
    for _ in 0..repeat {
        let run = reads::read_ranges(service.clone(), ranges, max_batch_rows).await?;
        let want: u64 = ranges.iter().map(|r| r.1).sum();
        if run.rows != want {
            return Err(format!("{} rows read, {want} expected", run.rows).into());
        }
        runs.push(run);
    }
    runs.sort_by(|a, b| a.read_s.total_cmp(&b.read_s));
    Ok(runs.swap_remove(runs.len() / 2))
}

fn median_pyodps(
    python: &Path,
    script: &Path,
    endpoint: &str,
    range: Option<(u64, u64)>,
    timeout: Duration,
    repeat: u32,
) -> Result<PyodpsRun, BoxError> {
    let mut runs = Vec::with_capacity(repeat as usize);
    for _ in 0..repeat {
        runs.push(reads::run_pyodps_range(
            python, script, endpoint, 0, range, 4096, None, timeout,
        )?);
    }
    runs.sort_by(|a, b| a.read_s.total_cmp(&b.read_s));
    Ok(runs.swap_remove(runs.len() / 2))
}

async fn run(args: Args) -> Result<(), BoxError> {
    proc_stats::raise_nofile_limit();
    let rows = args.table.rows();
    let cache = args.table.cache_dir();
    let warehouse = cache.join("warehouse");
    table::ensure_table(&warehouse, rows)
        .await
        .map_err(cli::boxed)?;
    let mbr = args.table.max_batch_rows;
    let paiio = server::find_paiio(args.table.paiio.as_deref())?;
    let python = cli::venv_python(args.python.as_deref());
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("pyodps_tunnel_read.py");
    let tunnel_only = vec!["--tunnel-only".to_string()];

    // Uncapped.
    let mut serve = server::ServeProcess::start(
        &paiio,
        &warehouse,
        &cache.join("tunnel-serve.log"),
        &tunnel_only,
    )
    .map_err(cli::boxed)?;
    let wire = wire_bytes(&serve.endpoint, rows).await?;
    let wire_per_row = wire as f64 / rows as f64;
    eprintln!(
        "bench: paiio serve --tunnel-only (pid {}); {rows} rows, {:.3} GB on the wire",
        serve.pid(),
        wire as f64 / 1e9
    );
    let client = tunnel_client(&serve.endpoint)?;
    let mut uncapped = Vec::new();
    let mut table_bytes = 0u64;
    for &n in &args.streams {
        let run = median_read(&client, &reads::even_ranges(rows, n), mbr, args.repeat).await?;
        table_bytes = table_bytes.max(run.bytes);
        let gb = run.bytes as f64 / 1e9;
        eprintln!(
            "bench: Tunnel client x{n}: {:.2} s, {:.3} GB/s, {:.2} CPU-s/GB",
            run.read_s,
            gb / run.read_s,
            run.self_cpu_s / gb
        );
        uncapped.push(json!({
            "reader": "paiio TunnelClient", "ranges": n, "read_s": run.read_s,
            "gb_per_s": gb / run.read_s, "cpu_s_per_gb": run.self_cpu_s / gb,
        }));
    }
    let table_gb = table_bytes as f64 / 1e9;
    let ours_cpu = uncapped
        .first()
        .and_then(|v| v["cpu_s_per_gb"].as_f64())
        .unwrap_or(f64::NAN);
    let mut pyodps_cpu = None;
    if !args.no_pyodps {
        let timeout = Duration::from_secs(1800);
        match median_pyodps(
            &python,
            &script,
            &serve.endpoint,
            None,
            timeout,
            args.repeat,
        ) {
            Ok(p) => {
                let cpu = p.cpu_s / table_gb;
                eprintln!(
                    "bench: PyODPS open_reader(arrow=True): {:.2} s, {:.3} GB/s, {cpu:.2} CPU-s/GB ({})",
                    p.read_s,
                    table_gb / p.read_s,
                    p.versions
                );
                uncapped.push(json!({
                    "reader": "PyODPS open_reader(arrow=True)", "ranges": 1, "read_s": p.read_s,
                    "gb_per_s": table_gb / p.read_s, "cpu_s_per_gb": cpu, "versions": p.versions,
                }));
                pyodps_cpu = Some(cpu);
            }
            Err(e) => eprintln!("bench: PyODPS reader: {e}"),
        }
    }
    serve.stop();

    // Capped.
    let rate = cli::parse_rate(&args.stream_rate)?;
    let mut compare = json!(null);
    let mut fan_out = Vec::new();
    if rate > 0 {
        let mut capped = server::ServeProcess::start(
            &paiio,
            &warehouse,
            &cache.join("tunnel-serve-rate.log"),
            &[
                tunnel_only.clone(),
                vec!["--stream-rate".into(), args.stream_rate.clone()],
            ]
            .concat(),
        )
        .map_err(cli::boxed)?;
        let client = tunnel_client(&capped.endpoint)?;
        let rate_mb = rate as f64 / 1e6;
        let mb = |default: f64, quick: f64, given: Option<f64>| {
            given.unwrap_or(if args.table.quick { quick } else { default })
        };
        let rows_for = |mb: f64| ((mb * 1e6 / wire_per_row) as u64).clamp(1, rows);
        let count = rows_for(mb(80.0, 20.0, args.compare_mb));
        let wire_mb = count as f64 * wire_per_row / 1e6;
        let ours = median_read(
            &client,
            &reads::even_ranges(count, args.compare_ranges),
            mbr,
            args.repeat,
        )
        .await?;
        let ours_rate = wire_mb / ours.read_s;
        eprintln!(
            "bench: capped, rows 0..{count} (~{wire_mb:.0} MB): Tunnel client x{}: {ours_rate:.1} MB/s",
            args.compare_ranges
        );
        let mut py_rate = None;
        if !args.no_pyodps {
            let timeout = Duration::from_secs_f64(120.0 + 4.0 * wire_mb / rate_mb);
            match median_pyodps(
                &python,
                &script,
                &capped.endpoint,
                Some((0, count)),
                timeout,
                args.repeat,
            ) {
                Ok(p) => {
                    let r = wire_mb / p.read_s;
                    eprintln!("bench: capped: PyODPS x1: {r:.1} MB/s");
                    py_rate = Some(r);
                }
                Err(e) => eprintln!("bench: capped PyODPS reader: {e}"),
            }
        }
        compare = json!({
            "rows": count, "wire_mb": wire_mb, "ranges": args.compare_ranges,
            "tunnel_client_mb_s": ours_rate, "pyodps_mb_s": py_rate,
            "ratio": py_rate.map(|p| ours_rate / p),
        });
        let per_range = rows_for(mb(20.0, 10.0, args.rate_range_mb));
        for &n in &args.rate_ranges {
            let ranges = reads::fixed_ranges(rows, n, per_range);
            let run = median_read(&client, &ranges, mbr, args.repeat).await?;
            let got = (per_range * n as u64) as f64 * wire_per_row / 1e6 / run.read_s;
            let ideal = n as f64 * rate_mb;
            eprintln!(
                "bench: capped x{n}: {got:.1} MB/s of {ideal:.0} ({:.0}%)",
                100.0 * got / ideal
            );
            fan_out
                .push(json!({"ranges": n, "mb_s": got, "ideal_mb_s": ideal, "share": got / ideal}));
        }
        capped.stop();
    }

    // The table.
    println!(
        "\ntunnel_bench: {rows} rows ({table_gb:.3} GB of Arrow, {:.3} GB on the wire)",
        wire as f64 / 1e9
    );
    println!("\nuncapped (paiio serve --tunnel-only):");
    println!(
        "  {:<34} {:>6} {:>9} {:>11}",
        "reader", "ranges", "GB/s", "CPU-s/GB"
    );
    for v in &uncapped {
        println!(
            "  {:<34} {:>6} {:>9.3} {:>11.2}",
            v["reader"].as_str().unwrap_or(""),
            v["ranges"],
            v["gb_per_s"].as_f64().unwrap_or(f64::NAN),
            v["cpu_s_per_gb"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let Some(p) = pyodps_cpu {
        println!(
            "  client CPU per GB, Tunnel client x1 / PyODPS: {:.2} (goal: at most 0.5)",
            ours_cpu / p
        );
    }
    if rate > 0 {
        println!("\ncapped (--stream-rate {} per request):", args.stream_rate);
        let ours = compare["tunnel_client_mb_s"].as_f64().unwrap_or(f64::NAN);
        match compare["pyodps_mb_s"].as_f64() {
            Some(p) => println!(
                "  same {:.0} MB: Tunnel client x{} {ours:.1} MB/s vs PyODPS {p:.1} MB/s: {:.2}x (goal: at least 3x)",
                compare["wire_mb"].as_f64().unwrap_or(0.0),
                args.compare_ranges,
                ours / p
            ),
            None => println!(
                "  Tunnel client x{}: {ours:.1} MB/s (PyODPS not measured)",
                args.compare_ranges
            ),
        }
        let parts: Vec<String> = fan_out
            .iter()
            .map(|v| {
                format!(
                    "x{} {:.0}%",
                    v["ranges"],
                    100.0 * v["share"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        println!(
            "  N ranges, share of N x rate (goal: at least 90%): {}",
            parts.join(", ")
        );
    }
    let figures = json!({
        "rows": rows, "table_gb": table_gb, "wire_bytes": wire,
        "uncapped": uncapped, "capped_compare": compare, "capped_fan_out": fan_out,
        "stream_rate": args.stream_rate,
    });
    args.table.write_json(&cache, "tunnel.json", &figures)
}
