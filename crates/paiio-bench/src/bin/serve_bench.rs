//! `serve_bench`: the serving cost of `paiio serve`.
//!
//! ```text
//! serve_bench [--gb 1.1 | --rows N | --quick] [--paiio PATH] [--readers 1,4,16]
//!             [--streams 1000] [--hold-secs 5] [--repeat 1] [--server-arg ARG]...
//! ```
//!
//! Creates (once, cached under `$PAIIO_CACHE/bench/warehouse`) the table `bench.wide`, starts
//! `paiio serve` on it as a child process, and reports per compression (none, lz4, zstd) and
//! number of concurrent readers: wall time, GB/s of Arrow data and of wire bytes, the
//! server's CPU-seconds per GB of Arrow data, and the compression ratio; then in-process
//! `TableService::read` for comparison, and 1,000 concurrent streaming reads with the
//! server's peak RSS. The figures are also written as JSON to `$PAIIO_CACHE/bench/serve.json`.

use std::time::Duration;

use clap::Parser;
use paiio_bench::cli::{self, TableArgs};
use paiio_bench::client::{self, BodyEncoding, BoxError, ManyStreams, Throughput};
use paiio_bench::{proc_stats, server, table};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "serve_bench",
    about = "Serving cost and concurrency of `paiio serve`"
)]
struct Args {
    #[command(flatten)]
    table: TableArgs,

    /// Numbers of concurrent readers to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16])]
    readers: Vec<usize>,

    /// Concurrent streaming reads to hold open at once (0: skip that test).
    #[arg(long)]
    streams: Option<usize>,

    /// About how long the concurrent streams are held open, in seconds.
    #[arg(long)]
    hold_secs: Option<f64>,

    /// Runs of each throughput scenario; the fastest counts.
    #[arg(long, default_value_t = 1)]
    repeat: usize,

    /// An extra argument for `paiio serve` (repeatable), e.g. `--server-arg=--max-concurrency=1100`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    server_arg: Vec<String>,
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn main() {
    cli::run_main("serve_bench", run(Args::parse()));
}

async fn run(args: Args) -> Result<(), BoxError> {
    let nofile = proc_stats::raise_nofile_limit();
    let rows = args.table.rows();
    let streams = args
        .streams
        .unwrap_or(if args.table.quick { 200 } else { 1000 });
    let hold =
        Duration::from_secs_f64(
            args.hold_secs
                .unwrap_or(if args.table.quick { 2.0 } else { 5.0 }),
        );
    if streams + 64 > nofile as usize {
        eprintln!(
            "serve_bench: warning: the open-files limit is {nofile}, low for {streams} streams"
        );
    }
    let cache = args.table.cache_dir();
    let warehouse = cache.join("warehouse");
    table::ensure_table(&warehouse, rows)
        .await
        .map_err(cli::boxed)?;

    let paiio = server::find_paiio(args.table.paiio.as_deref())?;
    let log = cache.join("serve.log");
    let serve = server::ServeProcess::start(&paiio, &warehouse, &log, &args.server_arg)
        .map_err(cli::boxed)?;
    let pid = serve.pid();
    let v2 = serve.v2_url();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = proc_stats::memory(pid, "VmRSS").unwrap_or(0);
    eprintln!(
        "bench: paiio serve (pid {pid}) at {}, idle RSS {}",
        serve.endpoint,
        mb(rss_idle)
    );

    let http = client::http_client()?;
    // Warm-up (page cache, allocator), and the Arrow size of the table: the bytes of the
    // uncompressed IPC streams, decoded to check the row count.
    let warm = client::throughput(
        &http,
        &v2,
        pid,
        BodyEncoding::Identity,
        4,
        args.table.max_batch_rows,
        true,
    )
    .await?;
    if warm.rows != rows {
        return Err(format!(
            "the warm-up read delivered {} rows, the table has {rows}",
            warm.rows
        )
        .into());
    }
    let arrow_bytes = warm.wire_bytes;
    let arrow_gb = arrow_bytes as f64 / 1e9;
    eprintln!(
        "bench: warm-up read {} rows, {arrow_gb:.3} GB of Arrow in {:.2} s",
        warm.rows, warm.wall_s
    );

    let mut results: Vec<Throughput> = Vec::new();
    for encoding in BodyEncoding::ALL {
        for &readers in &args.readers {
            let mut best: Option<Throughput> = None;
            for _ in 0..args.repeat.max(1) {
                let t = client::throughput(
                    &http,
                    &v2,
                    pid,
                    encoding,
                    readers,
                    args.table.max_batch_rows,
                    false,
                )
                .await?;
                eprintln!(
                    "bench: {:<4} x{readers:<2} {:.2} s, {:.3} GB/s, server {:.2} CPU-s",
                    client::label(encoding),
                    t.wall_s,
                    arrow_gb / t.wall_s,
                    t.server_cpu_s
                );
                if best.as_ref().is_none_or(|b| t.wall_s < b.wall_s) {
                    best = Some(t);
                }
            }
            results.extend(best);
        }
    }

    let mut limits = Vec::new();
    for n in [1u64, 4] {
        let (wall, got, cpu) = table::read_in_process(&warehouse, n, args.table.max_batch_rows)
            .await
            .map_err(cli::boxed)?;
        if got != rows {
            return Err(format!("in-process read delivered {got} rows, {rows} expected").into());
        }
        eprintln!("bench: in-process x{n}: {wall:.2} s");
        limits.push((n, wall, cpu));
    }

    let many = if streams > 0 {
        let options = client::ManyStreamsOptions {
            streams,
            table_rows: rows,
            table_bytes: arrow_bytes,
            hold,
            max_batch_rows: args.table.max_batch_rows,
        };
        Some(client::many_streams(&http, &v2, pid, &options).await?)
    } else {
        None
    };
    let rss_hwm = proc_stats::memory(pid, "VmHWM").unwrap_or(0);
    drop(serve);

    // ---- report ----
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "paiio serve: table bench.wide, {:.1}M rows, {arrow_gb:.2} GB Arrow (uncompressed); \
         client and server on one machine, {cores} cores",
        rows as f64 / 1e6
    );
    println!(
        "{:<12} {:>7} {:>8} {:>13} {:>12} {:>16} {:>16} {:>6}",
        "compression",
        "readers",
        "wall s",
        "GB/s (Arrow)",
        "GB/s (wire)",
        "server CPU-s/GB",
        "client CPU-s/GB",
        "ratio"
    );
    for t in &results {
        let wire_gb = t.wire_bytes as f64 / 1e9;
        println!(
            "{:<12} {:>7} {:>8.2} {:>13.3} {:>12.3} {:>16.2} {:>16.2} {:>6.2}",
            client::label(t.encoding),
            t.readers,
            t.wall_s,
            arrow_gb / t.wall_s,
            wire_gb / t.wall_s,
            t.server_cpu_s / arrow_gb,
            t.client_cpu_s / arrow_gb,
            arrow_bytes as f64 / t.wire_bytes.max(1) as f64,
        );
    }
    let limit_text: Vec<String> = limits
        .iter()
        .map(|(n, wall, cpu)| {
            format!(
                "{n} stream{}: {:.3} GB/s ({:.2} CPU-s/GB)",
                if *n == 1 { "" } else { "s" },
                arrow_gb / wall,
                cpu / arrow_gb
            )
        })
        .collect();
    println!(
        "limit: in-process TableService::read, {}",
        limit_text.join(", ")
    );
    if let Some(m) = &many {
        print_many(m, rss_idle);
    }
    println!(
        "server peak RSS over the whole run (VmHWM): {}",
        mb(rss_hwm)
    );

    let json = json!({
        "table": "bench.wide",
        "rows": rows,
        "arrow_bytes": arrow_bytes,
        "cores": cores,
        "max_batch_rows": args.table.max_batch_rows,
        "throughput": results.iter().map(|t| json!({
            "compression": client::label(t.encoding),
            "readers": t.readers,
            "splits": t.splits,
            "wall_s": t.wall_s,
            "wire_bytes": t.wire_bytes,
            "arrow_gb_per_s": arrow_gb / t.wall_s,
            "wire_gb_per_s": t.wire_bytes as f64 / 1e9 / t.wall_s,
            "server_cpu_s": t.server_cpu_s,
            "server_cpu_s_per_gb": t.server_cpu_s / arrow_gb,
            "client_cpu_s": t.client_cpu_s,
            "client_cpu_s_per_gb": t.client_cpu_s / arrow_gb,
            "ratio": arrow_bytes as f64 / t.wire_bytes.max(1) as f64,
        })).collect::<Vec<_>>(),
        "in_process": limits.iter().map(|(n, wall, cpu)| json!({
            "streams": n,
            "wall_s": wall,
            "arrow_gb_per_s": arrow_gb / wall,
            "cpu_s_per_gb": cpu / arrow_gb,
        })).collect::<Vec<_>>(),
        "concurrent_streams": many.as_ref().map(|m| json!({
            "streams": m.streams,
            "ok": m.ok,
            "errors": m.errors,
            "error_samples": m.error_samples,
            "max_open_at_once": m.max_open,
            "rows": m.rows,
            "wire_bytes": m.wire_bytes,
            "wall_s": m.wall_s,
            "server_cpu_s": m.server_cpu_s,
            "server_rss_idle": rss_idle,
            "server_rss_before": m.rss_before,
            "server_rss_peak_sampled": m.rss_peak,
            "server_rss_after": m.rss_after,
            "server_open_fds_peak": m.fds_peak,
        })),
        "server_rss_idle": rss_idle,
        "server_vm_hwm": rss_hwm,
    });
    args.table.write_json(&cache, "serve.json", &json)?;
    if many.as_ref().is_some_and(|m| m.errors > 0) {
        return Err("some concurrent streams failed".into());
    }
    Ok(())
}

fn print_many(m: &ManyStreams, rss_idle: u64) {
    println!(
        "{} concurrent streaming reads: {} ok, {} errors, {} open at once, {:.1} s; \
         server RSS idle {}, before {}, peak {} (sampled every 50 ms), after {}; {} fds at peak",
        m.streams,
        m.ok,
        m.errors,
        m.max_open,
        m.wall_s,
        mb(rss_idle),
        mb(m.rss_before),
        mb(m.rss_peak),
        mb(m.rss_after),
        m.fds_peak,
    );
    for e in &m.error_samples {
        println!("  error: {e}");
    }
}
