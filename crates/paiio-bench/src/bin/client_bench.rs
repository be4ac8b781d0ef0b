//! `client_bench`: the read throughput of paiio's Storage API client, side by side with the
//! released PyODPS reader and with reading the same Arrow data from the local files.
//!
//! ```text
//! client_bench [--gb 1.1 | --rows N | --quick] [--paiio PATH] [--python PATH]
//!              [--streams 1,4,16] [--codec-streams 4] [--codec-rate-mb 200]
//!              [--max-batch-rows 4096]
//!              [--stream-rate 10MB] [--rate-streams 1,2,4,8,16,32,64] [--rate-stream-mb 20]
//!              [--rate-compare-streams 1,4,16] [--rate-compare-mb 80]
//!              [--repeat 3] [--no-pyodps] [--json FILE]
//! ```
//!
//! Every measured read runs `--repeat` times and the median run is reported; the
//! rate-limited server gets one uncounted warm-up fan-out first.
//!
//! On the cached table `bench.wide` (see `serve_bench`) and one `paiio serve` child:
//!
//! * **paiio RestClient**: `TableService::read` of a RowOffset session split into N row ranges
//!   read by N concurrent streams, every batch fully decoded (rows and Arrow bytes counted);
//!   uncompressed, and with each body codec (none, lz4, zstd) and the automatic choice set
//!   side by side (each run with a new client; the first run of `auto` is the first read of
//!   the process, later ones start with what it learnt), uncapped and under --stream-rate.
//! * **PyODPS**: `python/pyodps_read.py` with the venv python (pyodps 0.13.2 `odps.maxstorage`),
//!   the same RowOffset range as the 1-stream run, iterated batch by batch; its runs take
//!   turns with the RestClient's 1-stream runs, so that a drift of the machine's speed
//!   meanwhile hits both alike.
//! * **local files**: the same `TableService::read` on the in-process `LocalWarehouse` (no
//!   HTTP), and a raw `FileReader` decode of the warehouse's Arrow IPC data files.
//! * **--stream-rate**: a second `paiio serve --stream-rate 10MB`, read by N = 1 … 64 concurrent
//!   streams of a fixed number of bytes each; the aggregate against the ideal N × rate. On the
//!   same server, PyODPS with 1 stream (one reader over its split, as PyODPS reads) against the
//!   RestClient with 1, 4 and 16 streams, all reading the same prefix range of the table.
//!
//! Prints one table and writes the figures as JSON to `$PAIIO_CACHE/bench/client.json`.
//! Run it with `scripts/bench-client.sh`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use paiio_bench::cli::{self, TableArgs};
use paiio_bench::client::{self, BoxError};
use paiio_bench::reads::{self, PyodpsRun, ReadRun};
use paiio_bench::{proc_stats, server, table};
use paiio_storage::TableService;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::protocol::codec::BodyEncoding;
use paiio_storage::rest::{ReadCompression, RestClient, RestClientBuilder};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "client_bench",
    about = "Read throughput of the paiio client vs PyODPS and local files"
)]
struct Args {
    #[command(flatten)]
    table: TableArgs,

    /// The python with pyodps 0.13.2 and pyarrow (default: $PAIIO_VENV/bin/python, else
    /// $PAIIO_CACHE/venv/bin/python).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,

    /// The PyODPS reader script (default: this crate's python/pyodps_read.py).
    #[arg(long, value_name = "PATH")]
    pyodps_script: Option<PathBuf>,

    /// Skip the PyODPS reader.
    #[arg(long)]
    no_pyodps: bool,

    /// Runs of each measured read; the run with the median time is reported (each run of
    /// a loaded 2-core machine varies by about 10%).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,

    /// Concurrent streams of the uncompressed client reads (and of the local-file reads).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16])]
    streams: Vec<usize>,

    /// Concurrent streams of the reads that set the body codecs (none, lz4, zstd) and the
    /// automatic choice side by side, uncapped and under --stream-rate (0: skip them).
    #[arg(long, value_delimiter = ',', default_values_t = [4usize])]
    codec_streams: Vec<usize>,

    /// Megabytes (10^6) of Arrow data the codec reads under --stream-rate take: the first
    /// rows of the table (default 200; 40 with --quick).
    #[arg(long)]
    codec_rate_mb: Option<f64>,

    /// The per-stream rate of the second server (`paiio serve --stream-rate`); "0" skips it.
    #[arg(long, default_value = "10MB")]
    stream_rate: String,

    /// Concurrent streams of the rate-limited reads.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8, 16, 32, 64])]
    rate_streams: Vec<usize>,

    /// Megabytes (10^6, wire) each rate-limited stream reads.
    #[arg(long)]
    rate_stream_mb: Option<f64>,

    /// Concurrent RestClient streams set against PyODPS (1 stream) on the rate-limited server,
    /// all reading the same range (empty: skip the comparison).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16])]
    rate_compare_streams: Vec<usize>,

    /// Megabytes (10^6, wire) of that range: the first rows of the table (default 80; 20 with
    /// --quick).
    #[arg(long)]
    rate_compare_mb: Option<f64>,
}

/// One row of the results table.
#[derive(Debug, Clone)]
struct Row {
    reader: String,
    streams: String,
    streams_n: usize,
    wall_s: f64,
    rows: u64,
    bytes: u64,
    client_cpu_s: f64,
    server_cpu_s: Option<f64>,
    /// Local in-process GB/s at the same streams, to compare against.
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rest,
    /// One request at a time (`read_parallelism(1)`): how PyODPS reads a range.
    RestOneRequest,
    /// Through the general HTTP client (`direct_reads(false)`), as `https://` reads go.
    RestGeneral,
    /// One of [`CODECS`].
    RestCodec,
    Pyodps,
    Local,
    RawFiles,
    /// The bytes alone over loopback TCP: the floor of a client's and a server's CPU.
    Loopback,
}

fn main() {
    cli::run_main("client_bench", run(Args::parse()));
}

/// The body codecs set side by side, and the automatic choice.
const CODECS: [(&str, ReadCompression); 4] = [
    ("none", ReadCompression::Fixed(BodyEncoding::Identity)),
    ("lz4", ReadCompression::Fixed(BodyEncoding::Lz4Frame)),
    ("zstd", ReadCompression::Fixed(BodyEncoding::Zstd)),
    ("auto", ReadCompression::Auto),
];

fn client_builder(endpoint: &str, compression: ReadCompression) -> RestClientBuilder {
    RestClient::builder(endpoint)
        .tunnel_endpoint(endpoint.trim_end_matches("/api"))
        .project("bench")
        .read_compression(compression)
}

/// A client that reads a range as one request, as PyODPS does (the default cuts it into
/// chunks read at once).
fn one_request_client(endpoint: &str) -> Result<Arc<dyn TableService>, BoxError> {
    Ok(Arc::new(
        client_builder(endpoint, CODECS[0].1)
            .read_parallelism(1)
            .build()?,
    ))
}

/// A client as users get it, but reading through the general HTTP client (as `https://`
/// endpoints do), not on connections of its own.
fn general_http_client(endpoint: &str) -> Result<Arc<dyn TableService>, BoxError> {
    Ok(Arc::new(
        client_builder(endpoint, CODECS[0].1)
            .direct_reads(false)
            .build()?,
    ))
}

/// A client as users get it (the default read parallelism), with `compression`.
fn rest_client(
    endpoint: &str,
    compression: ReadCompression,
) -> Result<Arc<dyn TableService>, BoxError> {
    Ok(Arc::new(client_builder(endpoint, compression).build()?))
}

/// `timed_read` `repeat` times; the run with the median read time (and its server CPU).
async fn median_read(
    service: Arc<dyn TableService>,
    ranges: &[(u64, u64)],
    max_batch_rows: usize,
    server_pid: Option<u32>,
    repeat: u32,
) -> Result<(ReadRun, Option<f64>), BoxError> {
    let (median, _) = median_fresh_read(
        &|| Ok(service.clone()),
        ranges,
        max_batch_rows,
        server_pid,
        repeat,
    )
    .await?;
    Ok(median)
}

/// [`median_read`] with a new client for every run; also the first run. (With
/// [`ReadCompression::Auto`] the first read of the process measures the link from nothing;
/// later clients of the same endpoint start with what it learnt, as the readers of a
/// training process do.)
async fn median_fresh_read(
    make: &dyn Fn() -> Result<Arc<dyn TableService>, BoxError>,
    ranges: &[(u64, u64)],
    max_batch_rows: usize,
    server_pid: Option<u32>,
    repeat: u32,
) -> Result<((ReadRun, Option<f64>), ReadRun), BoxError> {
    let mut runs = Vec::with_capacity(repeat as usize);
    for _ in 0..repeat.max(1) {
        runs.push(timed_read(make()?, ranges, max_batch_rows, server_pid).await?);
    }
    let first = runs[0].0.clone();
    runs.sort_by(|a, b| a.0.read_s.total_cmp(&b.0.read_s));
    Ok((runs.swap_remove(runs.len() / 2), first))
}

/// A client read with the server's CPU time over it.
async fn timed_read(
    service: Arc<dyn TableService>,
    ranges: &[(u64, u64)],
    max_batch_rows: usize,
    server_pid: Option<u32>,
) -> Result<(ReadRun, Option<f64>), BoxError> {
    let cpu0 = server_pid.and_then(proc_stats::cpu_seconds);
    let run = reads::read_ranges(service, ranges, max_batch_rows).await?;
    let cpu = match (server_pid.and_then(proc_stats::cpu_seconds), cpu0) {
        (Some(b), Some(a)) => Some(b - a),
        _ => None,
    };
    Ok((run, cpu))
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
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let paiio = server::find_paiio(args.table.paiio.as_deref())?;
    let serve =
        server::ServeProcess::start(&paiio, &warehouse, &cache.join("client-serve.log"), &[])
            .map_err(cli::boxed)?;
    let pid = serve.pid();
    eprintln!("bench: paiio serve (pid {pid}) at {}", serve.endpoint);

    // Warm-up (page cache), and the wire size of the table: raw HTTP reads of the
    // uncompressed IPC streams, decoded to check the row count.
    let http = client::http_client()?;
    let warm = client::throughput(
        &http,
        &serve.v2_url(),
        pid,
        BodyEncoding::Identity,
        4,
        mbr,
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
    let wire_bytes = warm.wire_bytes;
    eprintln!(
        "bench: warm-up: {rows} rows, {:.3} GB of Arrow IPC in {:.2} s",
        wire_bytes as f64 / 1e9,
        warm.wall_s
    );

    let mut results: Vec<Row> = Vec::new();
    let mut pyodps_row: Option<Row> = None;
    let rest = rest_client(&serve.endpoint, CODECS[0].1)?;
    // PyODPS: the same single range as the 1-stream run, its runs taking turns with the
    // RestClient's (so that what drifts on the machine meanwhile hits both alike).
    let mut pyodps: Option<PyodpsRun> = None;
    let mut pyodps_error: Option<String> = None;
    let python = cli::venv_python(args.python.as_deref());
    let script = args.pyodps_script.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("python")
            .join("pyodps_read.py")
    });
    let mut rest_one: Option<(ReadRun, Option<f64>)> = None;
    let mut one_request_row: Option<Row> = None;
    let mut general_row: Option<Row> = None;
    if !args.no_pyodps {
        // The same range read one request at a time, as PyODPS reads it: the server's cost
        // per GB of our requests, without the concurrency of the chunked reads.
        let one_request = one_request_client(&serve.endpoint)?;
        // And through the general HTTP client: what reading on connections of our own saves.
        let general = general_http_client(&serve.endpoint)?;
        // Runs of the default client, the one-request client and the general HTTP client.
        let ours_clients = [rest.clone(), one_request, general];
        let mut ours: [Vec<(ReadRun, Option<f64>)>; 3] = Default::default();
        let mut theirs = Vec::new();
        let one_range = reads::even_ranges(rows, 1);
        for _ in 0..args.repeat.max(1) {
            for (client, runs) in ours_clients.iter().zip(&mut ours) {
                runs.push(timed_read(client.clone(), &one_range, mbr, Some(pid)).await?);
            }
            let (python, script) = (python.clone(), script.clone());
            let endpoint = serve.endpoint.clone();
            let run = tokio::task::spawn_blocking(move || {
                let cpu0 = proc_stats::cpu_seconds(pid);
                let run = reads::run_pyodps(
                    &python,
                    &script,
                    &endpoint,
                    rows,
                    mbr,
                    None,
                    Duration::from_secs(600),
                )?;
                let server_cpu = proc_stats::cpu_seconds(pid).zip(cpu0).map(|(b, a)| b - a);
                Ok::<_, BoxError>((run, server_cpu))
            })
            .await?;
            match run {
                Ok(r) => theirs.push(r),
                Err(e) => {
                    eprintln!("bench: PyODPS reader: {e}");
                    pyodps_error = Some(e.to_string());
                    break;
                }
            }
        }
        let [chunked, one_request, general] = ours.map(|mut runs| {
            runs.sort_by(|a, b| a.0.read_s.total_cmp(&b.0.read_s));
            runs.swap_remove(runs.len() / 2)
        });
        rest_one = Some(chunked);
        let (run, server_cpu) = one_request;
        check_rows("RestClient", run.rows, rows)?;
        eprintln!(
            "bench: RestClient x1, one request at a time: {:.2} s, {:.3} GB/s",
            run.wall_s,
            run.bytes as f64 / 1e9 / run.wall_s
        );
        one_request_row = Some(row(
            "paiio RestClient 1 request",
            1,
            &run,
            server_cpu,
            Kind::RestOneRequest,
        ));
        let (run, server_cpu) = general;
        check_rows("RestClient", run.rows, rows)?;
        general_row = Some(row(
            "paiio RestClient general HTTP",
            1,
            &run,
            server_cpu,
            Kind::RestGeneral,
        ));
        if pyodps_error.is_none() {
            theirs.sort_by(|a, b| a.0.read_s.total_cmp(&b.0.read_s));
            let (p, server_cpu) = theirs.swap_remove(theirs.len() / 2);
            check_rows("PyODPS", p.rows, rows)?;
            eprintln!("bench: PyODPS ({}) x1: {:.2} s", p.versions, p.wall_s);
            pyodps_row = Some(Row {
                reader: "PyODPS 0.13.2 maxstorage".into(),
                streams: "1".into(),
                streams_n: 1,
                wall_s: p.wall_s,
                rows: p.rows,
                bytes: p.bytes,
                client_cpu_s: p.cpu_s,
                server_cpu_s: server_cpu,
                kind: Kind::Pyodps,
            });
            pyodps = Some(p);
        }
    }
    // The table's logical Arrow bytes, from the first full client read.
    let mut table_bytes = 0u64;
    for &n in &args.streams {
        let ranges = reads::even_ranges(rows, n);
        let (run, server_cpu) = match rest_one.take() {
            Some(r) if n == 1 => r,
            _ => median_read(rest.clone(), &ranges, mbr, Some(pid), args.repeat).await?,
        };
        check_rows("RestClient", run.rows, rows)?;
        table_bytes = table_bytes.max(run.bytes);
        eprintln!(
            "bench: RestClient x{n}: {:.2} s, {:.3} GB/s",
            run.wall_s,
            run.bytes as f64 / 1e9 / run.wall_s
        );
        results.push(row("paiio RestClient", n, &run, server_cpu, Kind::Rest));
    }
    // The codecs and the automatic choice, each run with a new client.
    for &n in args.codec_streams.iter().filter(|n| **n > 0) {
        let ranges = reads::even_ranges(rows, n);
        for (label, codec) in CODECS {
            let endpoint = serve.endpoint.clone();
            let make = move || rest_client(&endpoint, codec);
            let ((run, server_cpu), first) =
                median_fresh_read(&make, &ranges, mbr, Some(pid), args.repeat).await?;
            check_rows("RestClient", run.rows, rows)?;
            eprintln!(
                "bench: RestClient {label} x{n}: {:.2} s (first run {:.2} s)",
                run.wall_s, first.wall_s
            );
            results.push(row(
                &format!("paiio RestClient {label}"),
                n,
                &run,
                server_cpu,
                Kind::RestCodec,
            ));
        }
    }

    results.extend(one_request_row);
    results.extend(general_row);
    results.extend(pyodps_row);
    let rss_hwm = proc_stats::memory(pid, "VmHWM").unwrap_or(0);
    drop(serve);

    // The limit: the same Arrow data read from the local files, in this process.
    let local: Arc<dyn TableService> = Arc::new(LocalWarehouse::open(&warehouse)?);
    for &n in &args.streams {
        let (run, _) = median_read(
            local.clone(),
            &reads::even_ranges(rows, n),
            mbr,
            None,
            args.repeat,
        )
        .await?;
        check_rows("local", run.rows, rows)?;
        eprintln!("bench: local TableService::read x{n}: {:.2} s", run.wall_s);
        results.push(row(
            "local files (in-process read)",
            n,
            &run,
            None,
            Kind::Local,
        ));
    }
    let table_dir = warehouse.join("bench").join("wide");
    let files = reads::data_files(if table_dir.is_dir() {
        &table_dir
    } else {
        &warehouse
    });
    let mut raw_note = None;
    for n in [1usize, cores.max(2)] {
        let f = files.clone();
        let run = tokio::task::spawn_blocking(move || reads::decode_files(&f, n)).await??;
        if run.rows != rows {
            raw_note = Some(format!(
                "the data files hold {} rows, the table {rows}",
                run.rows
            ));
        }
        eprintln!(
            "bench: raw IPC file decode x{n}: {:.2} s ({} files)",
            run.wall_s,
            files.len()
        );
        results.push(row(
            "raw Arrow IPC file decode",
            n,
            &run,
            None,
            Kind::RawFiles,
        ));
    }

    // The floor of any client (and server) here: the same bytes over loopback TCP in writes
    // of one message (MaxBatchRows rows), received into one buffer and not looked at.
    let message = (wire_bytes as f64 * mbr as f64 / rows.max(1) as f64) as usize;
    let (run, sender_cpu) =
        tokio::task::spawn_blocking(move || reads::loopback_tcp(wire_bytes, table_bytes, message))
            .await??;
    eprintln!(
        "bench: loopback TCP x1: {:.2} s ({} KB writes)",
        run.wall_s,
        message / 1000
    );
    results.push(row(
        "loopback TCP, bytes only",
        1,
        &run,
        Some(sender_cpu),
        Kind::Loopback,
    ));

    // --stream-rate: aggregate against N × rate.
    let rate = cli::parse_rate(&args.stream_rate)?;
    let mut rate_results: Vec<Value> = Vec::new();
    // The same range read by PyODPS (1 stream) and by the RestClient (N streams) at that rate.
    let mut cmp_pyodps: Option<Value> = None;
    let mut cmp_pyodps_error: Option<String> = None;
    let mut cmp_rest: Vec<Value> = Vec::new();
    let mut cmp_range = (0u64, 0u64);
    let mut codec_rate: Vec<Value> = Vec::new();
    if rate > 0 && (!args.rate_streams.is_empty() || !args.rate_compare_streams.is_empty()) {
        let per_stream_wire =
            args.rate_stream_mb
                .unwrap_or(if args.table.quick { 10.0 } else { 20.0 })
                * 1e6;
        let wire_per_row = wire_bytes as f64 / rows as f64;
        let per_stream_rows = ((per_stream_wire / wire_per_row) as u64).clamp(1, rows);
        let extra = vec!["--stream-rate".to_string(), args.stream_rate.clone()];
        let serve = server::ServeProcess::start(
            &paiio,
            &warehouse,
            &cache.join("client-serve-rate.log"),
            &extra,
        )
        .map_err(cli::boxed)?;
        let rpid = serve.pid();
        let service = rest_client(&serve.endpoint, CODECS[0].1)?;
        // The scaling runs measure the per-request cap: one request per stream.
        let one_request = one_request_client(&serve.endpoint)?;
        eprintln!(
            "bench: paiio serve --stream-rate {} (pid {rpid}); {per_stream_rows} rows (~{:.0} MB) per stream",
            args.stream_rate,
            per_stream_rows as f64 * wire_per_row / 1e6
        );
        // Warm-up, not counted: a fresh server's first wide fan-out pays for growing its
        // heap (page faults), as a long-running server does once.
        if let Some(&widest) = args.rate_streams.iter().max() {
            let ranges = reads::fixed_ranges(rows, widest, (per_stream_rows / 4).max(1));
            timed_read(one_request.clone(), &ranges, mbr, Some(rpid)).await?;
        }
        for &n in &args.rate_streams {
            let ranges = reads::fixed_ranges(rows, n, per_stream_rows);
            let (run, server_cpu) =
                median_read(one_request.clone(), &ranges, mbr, Some(rpid), args.repeat).await?;
            check_rows("rate-limited read", run.rows, per_stream_rows * n as u64)?;
            // Wire bytes: the rows' share of the measured uncompressed IPC stream.
            let wire = run.rows as f64 * wire_per_row;
            let aggregate = wire / run.read_s;
            let ideal = n as f64 * rate as f64;
            let slowest = run.stream_s.iter().cloned().fold(0.0, f64::max);
            let fastest = run.stream_s.iter().cloned().fold(f64::INFINITY, f64::min);
            eprintln!(
                "bench: rate x{n}: {:.1} MB/s of {:.0} ideal ({:.0}%), {:.2} s",
                aggregate / 1e6,
                ideal / 1e6,
                100.0 * aggregate / ideal,
                run.read_s
            );
            rate_results.push(json!({
                "streams": n,
                "rows": run.rows,
                "wire_bytes_est": wire as u64,
                "arrow_bytes": run.bytes,
                "read_s": run.read_s,
                "wall_s": run.wall_s,
                "aggregate_mb_per_s": aggregate / 1e6,
                "ideal_mb_per_s": ideal / 1e6,
                "ratio": aggregate / ideal,
                "stream_s_min": fastest,
                "stream_s_max": slowest,
                "client_cpu_s": run.self_cpu_s,
                "server_cpu_s": server_cpu,
            }));
        }

        // PyODPS 1 stream vs the RestClient with N streams over the same first rows.
        if !args.rate_compare_streams.is_empty() {
            let compare_wire =
                args.rate_compare_mb
                    .unwrap_or(if args.table.quick { 20.0 } else { 80.0 })
                    * 1e6;
            let count = ((compare_wire / wire_per_row) as u64).clamp(1, rows);
            cmp_range = (0, count);
            let wire = count as f64 * wire_per_row;
            eprintln!(
                "bench: --stream-rate {}: PyODPS vs RestClient on rows 0..{count} (~{:.0} MB)",
                args.stream_rate,
                wire / 1e6
            );
            if !args.no_pyodps {
                let (python, script) = (python.clone(), script.clone());
                let endpoint = serve.endpoint.clone();
                let cpu0 = proc_stats::cpu_seconds(rpid);
                // At the rate the read takes wire / rate seconds; leave it room.
                let timeout = Duration::from_secs_f64(120.0 + 4.0 * wire / rate as f64);
                let result = tokio::task::spawn_blocking(move || {
                    reads::run_pyodps_range(
                        &python,
                        &script,
                        &endpoint,
                        0,
                        Some((0, count)),
                        mbr,
                        None,
                        timeout,
                    )
                })
                .await?;
                match result {
                    Ok(p) => {
                        check_rows("PyODPS (rate-limited)", p.rows, count)?;
                        let server_cpu =
                            proc_stats::cpu_seconds(rpid).zip(cpu0).map(|(b, a)| b - a);
                        let mbps = wire / p.read_s / 1e6;
                        eprintln!("bench: rate PyODPS x1: {mbps:.1} MB/s, {:.2} s", p.read_s);
                        cmp_pyodps = Some(json!({
                            "streams": 1,
                            "rows": p.rows,
                            "wire_bytes_est": wire as u64,
                            "arrow_bytes": p.bytes,
                            "read_s": p.read_s,
                            "wall_s": p.wall_s,
                            "mb_per_s": mbps,
                            "splits": p.splits,
                            "client_cpu_s": p.cpu_s,
                            "server_cpu_s": server_cpu,
                        }));
                    }
                    Err(e) => {
                        eprintln!("bench: rate PyODPS reader: {e}");
                        cmp_pyodps_error = Some(e.to_string());
                    }
                }
            }
            for &n in &args.rate_compare_streams {
                let ranges = reads::even_ranges(count, n);
                let (run, server_cpu) =
                    timed_read(service.clone(), &ranges, mbr, Some(rpid)).await?;
                check_rows("rate-limited read", run.rows, count)?;
                let mbps = wire / run.read_s / 1e6;
                eprintln!(
                    "bench: rate RestClient x{n} (same rows): {mbps:.1} MB/s, {:.2} s",
                    run.read_s
                );
                cmp_rest.push(json!({
                    "streams": n,
                    "rows": run.rows,
                    "wire_bytes_est": wire as u64,
                    "arrow_bytes": run.bytes,
                    "read_s": run.read_s,
                    "wall_s": run.wall_s,
                    "mb_per_s": mbps,
                    "vs_pyodps": cmp_pyodps
                        .as_ref()
                        .and_then(|p| p["mb_per_s"].as_f64())
                        .map(|p| mbps / p),
                    "client_cpu_s": run.self_cpu_s,
                    "server_cpu_s": server_cpu,
                }));
            }
        }

        // The codecs and the automatic choice over the same first rows.
        let codec_mb = args
            .codec_rate_mb
            .unwrap_or(if args.table.quick { 40.0 } else { 200.0 });
        let count =
            ((codec_mb * 1e6 * rows as f64 / table_bytes.max(1) as f64) as u64).clamp(1, rows);
        for &n in args.codec_streams.iter().filter(|n| **n > 0) {
            let ranges = reads::even_ranges(count, n);
            let mut runs = Vec::new();
            for (label, codec) in CODECS {
                let endpoint = serve.endpoint.clone();
                let make = move || rest_client(&endpoint, codec);
                let ((run, server_cpu), first) =
                    median_fresh_read(&make, &ranges, mbr, Some(rpid), args.repeat).await?;
                check_rows("rate-limited codec read", run.rows, count)?;
                let mbps = run.bytes as f64 / run.read_s / 1e6;
                let first_mbps = first.bytes as f64 / first.read_s / 1e6;
                eprintln!(
                    "bench: rate RestClient {label} x{n}: {mbps:.1} MB/s of Arrow, {:.2} s \
                     (first run {first_mbps:.1} MB/s)",
                    run.read_s
                );
                runs.push(json!({
                    "codec": label,
                    "streams": n,
                    "rows": run.rows,
                    "arrow_bytes": run.bytes,
                    "read_s": run.read_s,
                    "mb_per_s": mbps,
                    "first_run_mb_per_s": first_mbps,
                    "client_cpu_s": run.self_cpu_s,
                    "server_cpu_s": server_cpu,
                }));
            }
            codec_rate.push(json!({"streams": n, "rows": count, "runs": runs}));
        }
        drop(serve);
    }

    // ---- report ----
    let gb = table_bytes as f64 / 1e9;
    let gbps = |r: &Row| table_bytes as f64 / 1e9 / r.wall_s;
    let pyodps_gbps = results.iter().find(|r| r.kind == Kind::Pyodps).map(gbps);
    let local_at = |n: usize| {
        results
            .iter()
            .find(|r| r.kind == Kind::Local && r.streams_n == n)
            .map(gbps)
    };
    println!(
        "client bench: table bench.wide, {:.2}M rows, {gb:.2} GB Arrow ({:.2} GB as uncompressed IPC); \
         client and server on one machine, {cores} cores; MaxBatchRows {mbr}",
        rows as f64 / 1e6,
        wire_bytes as f64 / 1e9
    );
    println!(
        "{:<30} {:>7} {:>7} {:>7} {:>11} {:>12} {:>10} {:>10}",
        "reader", "streams", "wall s", "GB/s", "vs PyODPS 1", "vs local(N)", "client", "server"
    );
    println!(
        "{:<30} {:>7} {:>7} {:>7} {:>11} {:>12} {:>10} {:>10}",
        "", "", "", "", "", "", "CPU-s/GB", "CPU-s/GB"
    );
    for r in &results {
        let g = gbps(r);
        let vs_py = pyodps_gbps
            .map(|p| format!("{:.1}x", g / p))
            .unwrap_or_else(|| "-".into());
        let vs_local = match r.kind {
            Kind::Rest
            | Kind::RestOneRequest
            | Kind::RestGeneral
            | Kind::RestCodec
            | Kind::Pyodps => { local_at(r.streams_n) }
                .map(|l| format!("{:.0}%", 100.0 * g / l))
                .unwrap_or_else(|| "-".into()),
            _ => "-".into(),
        };
        println!(
            "{:<30} {:>7} {:>7.2} {:>7.3} {:>11} {:>12} {:>10.2} {:>10}",
            r.reader,
            r.streams,
            r.wall_s,
            g,
            vs_py,
            vs_local,
            r.client_cpu_s / gb,
            r.server_cpu_s
                .map(|s| format!("{:.2}", s / gb))
                .unwrap_or_else(|| "-".into()),
        );
    }
    if let Some(e) = &pyodps_error {
        println!("PyODPS: not measured: {e}");
    }
    if let Some(n) = &raw_note {
        println!("note: {n}");
    }
    if !rate_results.is_empty() {
        let parts: Vec<String> = rate_results
            .iter()
            .map(|v| {
                format!(
                    "N={} {:.0} MB/s ({:.0}%)",
                    v["streams"],
                    v["aggregate_mb_per_s"].as_f64().unwrap_or(0.0),
                    100.0 * v["ratio"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        println!(
            "--stream-rate {} (ideal N x {:.0} MB/s, % of ideal):",
            args.stream_rate,
            rate as f64 / 1e6
        );
        for chunk in parts.chunks(4) {
            println!("  {}", chunk.join(", "));
        }
    }
    if !cmp_rest.is_empty() {
        let py = cmp_pyodps.as_ref().and_then(|p| p["mb_per_s"].as_f64());
        let py_text = match (&py, &cmp_pyodps_error) {
            (Some(p), _) => format!("PyODPS 1 stream {p:.1} MB/s"),
            (None, Some(_)) => "PyODPS 1 stream not measured".to_string(),
            (None, None) => "PyODPS skipped".to_string(),
        };
        let label: Vec<String> = cmp_rest.iter().map(|v| v["streams"].to_string()).collect();
        let mbps: Vec<f64> = cmp_rest
            .iter()
            .map(|v| v["mb_per_s"].as_f64().unwrap_or(0.0))
            .collect();
        let figures: Vec<String> = mbps.iter().map(|m| format!("{m:.1}")).collect();
        let ratios = match py {
            Some(p) => {
                let r: Vec<String> = mbps.iter().map(|m| format!("{:.1}x", m / p)).collect();
                format!(" ({} PyODPS)", r.join("/"))
            }
            None => String::new(),
        };
        println!(
            "under --stream-rate {} (rows 0..{}, ~{:.0} MB each): {py_text}; \
             paiio {} streams {} MB/s{ratios}",
            args.stream_rate,
            cmp_range.1,
            cmp_range.1 as f64 * wire_bytes as f64 / rows as f64 / 1e6,
            label.join("/"),
            figures.join("/")
        );
        if let Some(e) = &cmp_pyodps_error {
            println!("PyODPS under --stream-rate: not measured: {e}");
        }
    }
    // The codecs: the automatic choice against the best fixed one.
    let mut codec_goals = Vec::new();
    for &n in args.codec_streams.iter().filter(|n| **n > 0) {
        let at = |label: &str| {
            results
                .iter()
                .find(|r| {
                    r.kind == Kind::RestCodec && r.streams_n == n && r.reader.ends_with(label)
                })
                .map(gbps)
        };
        let fixed: Vec<(&str, f64)> = CODECS[..3]
            .iter()
            .filter_map(|(l, _)| at(l).map(|g| (*l, g)))
            .collect();
        if let (Some(auto), Some((best, g))) = (
            at("auto"),
            fixed.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)),
        ) {
            let line = format!(
                "auto vs the best fixed codec ({best}), {n} streams uncapped: {:.0}%",
                100.0 * auto / g
            );
            println!("{line}");
            codec_goals.push(line);
        }
    }
    for c in &codec_rate {
        let runs = c["runs"].as_array().cloned().unwrap_or_default();
        let mbps = |label: &str| {
            runs.iter()
                .find(|r| r["codec"] == label)
                .and_then(|r| r["mb_per_s"].as_f64())
        };
        let mut figures: Vec<String> = CODECS
            .iter()
            .map(|(l, _)| format!("{l} {:.1}", mbps(l).unwrap_or(0.0)))
            .collect();
        if let Some(first) = runs
            .iter()
            .find(|r| r["codec"] == "auto")
            .and_then(|r| r["first_run_mb_per_s"].as_f64())
        {
            figures.push(format!("auto's first read in the process {first:.1}"));
        }
        println!(
            "under --stream-rate {}, {} streams, rows 0..{} (MB/s of Arrow data): {}",
            args.stream_rate,
            c["streams"],
            c["rows"],
            figures.join(", ")
        );
        let best = CODECS[..3]
            .iter()
            .filter_map(|(l, _)| mbps(l).map(|m| (*l, m)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some(auto), Some((label, m))) = (mbps("auto"), best) {
            let line = format!(
                "auto vs the best fixed codec ({label}), {} streams under --stream-rate: {:.0}%",
                c["streams"],
                100.0 * auto / m
            );
            println!("{line}");
            codec_goals.push(line);
        }
    }

    // The goals of the issue.
    let rest1 = results
        .iter()
        .find(|r| r.kind == Kind::Rest && r.streams_n == 1)
        .map(gbps);
    let rest_best = results
        .iter()
        .filter(|r| r.kind == Kind::Rest)
        .map(gbps)
        .fold(0.0, f64::max);
    let rest4 = results
        .iter()
        .find(|r| r.kind == Kind::Rest && r.streams_n == 4)
        .map(gbps);
    let mut goals = Vec::new();
    if let Some(p) = pyodps_gbps {
        if let Some(r1) = rest1 {
            goals.push(format!(
                "1 stream vs PyODPS 1 stream: {:.2}x (goal >= 1.5x)",
                r1 / p
            ));
        }
        let server_per_gb = |kind: Kind| {
            results
                .iter()
                .find(|r| r.kind == kind && r.streams_n == 1)
                .and_then(|r| r.server_cpu_s)
                .map(|s| s / gb)
        };
        if let (Some(ours), Some(theirs)) = (server_per_gb(Kind::Rest), server_per_gb(Kind::Pyodps))
        {
            goals.push(format!(
                "server CPU-s/GB serving 1 RestClient stream vs 1 PyODPS stream: {ours:.2} vs \
                 {theirs:.2} (goal <=)"
            ));
            if let Some(one) = server_per_gb(Kind::RestOneRequest) {
                goals.push(format!(
                    "server CPU-s/GB serving 1 RestClient stream one request at a time: {one:.2}"
                ));
            }
            if let Some(general) = server_per_gb(Kind::RestGeneral) {
                goals.push(format!(
                    "server CPU-s/GB serving 1 RestClient stream through the general HTTP \
                     client: {general:.2}"
                ));
            }
        }
        if let (Some(ours), Some(theirs)) = (
            results
                .iter()
                .find(|r| r.kind == Kind::Rest && r.streams_n == 1),
            results.iter().find(|r| r.kind == Kind::Pyodps),
        ) {
            goals.push(format!(
                "client CPU-s/GB, RestClient vs PyODPS: {:.2} vs {:.2} ({:.2}x)",
                ours.client_cpu_s / gb,
                theirs.client_cpu_s / gb,
                ours.client_cpu_s / theirs.client_cpu_s.max(1e-9)
            ));
            if let Some(floor) = results.iter().find(|r| r.kind == Kind::Loopback) {
                goals.push(format!(
                    "client CPU-s/GB floor (loopback TCP, bytes only): {:.2} ({:.2}x PyODPS's)",
                    floor.client_cpu_s / gb,
                    floor.client_cpu_s / theirs.client_cpu_s.max(1e-9)
                ));
            }
        }
        goals.push(format!(
            "best streams vs PyODPS 1 stream: {:.1}x (goal >= 3x)",
            rest_best / p
        ));
    }
    if let (Some(r4), Some(l4)) = (rest4, local_at(4)) {
        goals.push(format!(
            "4 streams vs local files 4 streams: {:.0}% (goal >= 50%)",
            100.0 * r4 / l4
        ));
    }
    if !rate_results.is_empty() {
        let worst = rate_results
            .iter()
            .map(|v| v["ratio"].as_f64().unwrap_or(0.0))
            .fold(f64::INFINITY, f64::min);
        goals.push(format!(
            "--stream-rate scaling: worst {:.0}% of ideal (goal >= 90%)",
            100.0 * worst
        ));
    }
    goals.extend(codec_goals.iter().map(|g| format!("{g} (goal >= 100%)")));
    println!("goals: {}", goals.join("; "));

    let json = json!({
        "table": "bench.wide",
        "rows": rows,
        "arrow_bytes": table_bytes,
        "ipc_wire_bytes": wire_bytes,
        "cores": cores,
        "max_batch_rows": mbr,
        "server_vm_hwm": rss_hwm,
        "reads": results.iter().map(|r| json!({
            "reader": r.reader,
            "streams": r.streams_n,
            "wall_s": r.wall_s,
            "rows": r.rows,
            "bytes_reported": r.bytes,
            "gb_per_s": gbps(r),
            "vs_pyodps_1": pyodps_gbps.map(|p| gbps(r) / p),
            "vs_local_same_streams": local_at(r.streams_n).map(|l| gbps(r) / l),
            "client_cpu_s": r.client_cpu_s,
            "server_cpu_s": r.server_cpu_s,
        })).collect::<Vec<_>>(),
        "pyodps": pyodps.as_ref().map(|p| p.raw.clone()),
        "pyodps_error": pyodps_error,
        "stream_rate": if rate_results.is_empty() { Value::Null } else { json!({
            "rate": args.stream_rate,
            "bytes_per_s": rate,
            "runs": rate_results,
        }) },
        "stream_rate_vs_pyodps": if cmp_rest.is_empty() { Value::Null } else { json!({
            "rate": args.stream_rate,
            "bytes_per_s": rate,
            "offset": cmp_range.0,
            "count": cmp_range.1,
            "wire_bytes_est": (cmp_range.1 as f64 * wire_bytes as f64 / rows as f64) as u64,
            "pyodps": cmp_pyodps,
            "pyodps_error": cmp_pyodps_error,
            "paiio": cmp_rest,
        }) },
        "codecs_under_stream_rate": codec_rate,
    });
    args.table.write_json(&cache, "client.json", &json)
}

fn check_rows(what: &str, got: u64, want: u64) -> Result<(), BoxError> {
    if got != want {
        return Err(format!("{what}: {got} rows delivered, {want} expected").into());
    }
    Ok(())
}

fn row(reader: &str, n: usize, run: &ReadRun, server_cpu_s: Option<f64>, kind: Kind) -> Row {
    Row {
        reader: reader.to_string(),
        streams: n.to_string(),
        streams_n: n,
        wall_s: run.wall_s,
        rows: run.rows,
        bytes: run.bytes,
        client_cpu_s: run.self_cpu_s,
        server_cpu_s,
        kind,
    }
}
