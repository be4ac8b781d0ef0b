//! `paiio serve`: the local warehouse behind the MaxCompute Storage API (paiio-server), so
//! jobs written for MaxCompute run against it.
//!
//! ```text
//! paiio serve --warehouse DIR [--listen 127.0.0.1:8080] [--config FILE | --access-id X --access-key Y]
//!             [--allow-anonymous] [--stream-rate 10MB] [--max-concurrency N] [--admin]
//! ```
//!
//! Prints `paiio serve: listening on http://ADDR/api (warehouse DIR)` once it accepts
//! connections, and serves until Ctrl-C or SIGTERM, then stops gracefully.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use paiio_server::Server;
use paiio_storage::auth::{Credentials, Verifier};
use paiio_storage::config::{Backend, Config};
use paiio_storage::clock::ManualClock;
use paiio_storage::local::{LocalWarehouse, VacuumOptions};

use crate::cli::Cli;
use crate::error::{CliError, Result};

/// Options of `paiio serve` (the warehouse is the global `--warehouse DIR`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// An ini file with `access_id` and `access_key` (the file a job uses): requests must be
    /// signed with that key.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The access id requests are signed with (with --access-key; overrides --config).
    #[arg(long, value_name = "ID", requires = "access_key")]
    pub access_id: Option<String>,

    /// The access key requests are signed with (with --access-id).
    #[arg(long, value_name = "KEY", requires = "access_id")]
    pub access_key: Option<String>,

    /// Accept unsigned requests (only when no keys are given).
    #[arg(long)]
    pub allow_anonymous: bool,

    /// Cap the bandwidth of each response body, per request: `10MB` is 10 MB/s
    /// (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub stream_rate: Option<u64>,

    /// The most requests served at once; beyond it the server answers 429 SlotExceeded.
    #[arg(long, value_name = "N", default_value_t = paiio_server::DEFAULT_MAX_CONCURRENCY)]
    pub max_concurrency: usize,

    /// Serve the test endpoints under /__paiio/ (fault injection; not signature-checked).
    #[arg(long)]
    pub admin: bool,

    /// Vacuum the warehouse this often (expired sessions, old versions, unreferenced files,
    /// with the defaults of `paiio table vacuum`); 0 turns it off.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub vacuum_interval: u64,
}

fn parse_rate(text: &str) -> std::result::Result<u64, String> {
    match paiio_server::parse_size(text) {
        Ok(0) => Err(format!("`{text}` is not a positive rate")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The directory the server serves: `--warehouse`, else the configured local warehouse.
fn warehouse_dir(cli: &Cli) -> Result<PathBuf> {
    if let Some(dir) = &cli.warehouse {
        return Ok(dir.clone());
    }
    match Config::load()?.backend()? {
        Backend::Local { root } => Ok(root),
        Backend::Rest { endpoint } => Err(CliError::input(format!(
            "paiio serve serves a local warehouse, but the configuration selects the endpoint \
             {endpoint}: give --warehouse DIR"
        ))),
    }
}

/// The keys requests must be signed with; `None` for anonymous access.
fn credentials(args: &ServeArgs) -> Result<Option<Credentials>> {
    if let (Some(id), Some(key)) = (&args.access_id, &args.access_key) {
        return Ok(Some(Credentials::new(id.clone(), key.clone())));
    }
    if let Some(path) = &args.config {
        let config = Config::from_file(path)?;
        return Ok(if args.allow_anonymous {
            config.optional_credentials()?
        } else {
            Some(config.credentials()?)
        });
    }
    Ok(None)
}

pub async fn run(cli: &Cli, args: &ServeArgs) -> Result<()> {
    let creds = credentials(args)?;
    if creds.is_none() && !args.allow_anonymous {
        return Err(CliError::input(
            "paiio serve needs the keys requests are signed with: give --config FILE (an ini \
             file with access_id and access_key) or --access-id and --access-key, or allow \
             unsigned requests with --allow-anonymous",
        ));
    }
    let dir = warehouse_dir(cli)?;
    // With --admin, tests can move the warehouse's clock forward to expire sessions.
    let clock = args.admin.then(ManualClock::new);
    let mut warehouse = LocalWarehouse::builder(&dir);
    if let Some(clock) = &clock {
        warehouse = warehouse.clock(Arc::new(clock.clone()));
    }
    let warehouse = Arc::new(warehouse.open()?);
    let vacuum = spawn_vacuum(&warehouse, args.vacuum_interval);
    let blob_dir = warehouse.root().join(".paiio").join("blobs");
    let mut builder = Server::builder(warehouse)
        .allow_anonymous(creds.is_none())
        .blob_dir(blob_dir)
        .stream_rate(args.stream_rate)
        .max_concurrency(args.max_concurrency)
        .admin(args.admin);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    if let Some(creds) = &creds {
        builder = builder.verifier(Verifier::default().with_credentials(creds));
    }
    let handle = builder.build()?.bind(&args.listen).await?;
    announce(&handle.endpoint(), &dir)?;
    shutdown_signal().await;
    eprintln!("paiio serve: shutting down");
    if let Some(vacuum) = vacuum {
        vacuum.abort();
    }
    handle.shutdown().await;
    Ok(())
}

/// Vacuums the warehouse every `interval_s` seconds (the first time after one interval).
fn spawn_vacuum(warehouse: &Arc<LocalWarehouse>, interval_s: u64) -> Option<tokio::task::JoinHandle<()>> {
    if interval_s == 0 {
        return None;
    }
    let warehouse = warehouse.clone();
    let interval = std::time::Duration::from_secs(interval_s);
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match warehouse.vacuum(None, &VacuumOptions::default()).await {
                Ok(r) if r.files > 0 => tracing::info!(
                    "vacuum freed {} files ({} bytes): {} write sessions, {} read sessions, {} versions, {} data files",
                    r.files, r.bytes, r.write_sessions, r.read_sessions, r.versions, r.data_files
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("vacuum of {} failed: {e}", warehouse.root().display()),
            }
        }
    }))
}

/// The line tests and scripts wait for, flushed at once.
fn announce(endpoint: &str, dir: &Path) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "paiio serve: listening on {endpoint} (warehouse {})",
        dir.display()
    )
    .and_then(|()| stdout.flush())
    .map_err(|e| CliError::failure(format!("cannot write to standard output: {e}")))
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
