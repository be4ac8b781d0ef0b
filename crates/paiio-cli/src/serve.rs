//! `paiio serve`: the local warehouse behind the MaxCompute Storage API (paiio-server), so
//! jobs written for MaxCompute run against it.
//!
//! ```text
//! paiio serve --warehouse DIR [--listen 127.0.0.1:8080] [--config FILE | --access-id X --access-key Y]
//!             [--allow-anonymous] [--stream-rate 10MB] [--max-concurrency N] [--admin]
//!             [--tunnel-only]
//!             [--header-timeout 30s] [--body-idle-timeout 60s] [--body-min-rate 500B]
//!             [--keep-alive-timeout 75s] [--max-connections N]
//! ```
//!
//! At start the soft limit on open files is raised to the hard limit, and the cap on open
//! connections defaults to half of it (16 to 10,000), so idle sockets cannot take every
//! descriptor.
//!
//! Prints `paiio serve: listening on http://ADDR/api (warehouse DIR)` once it accepts
//! connections, and serves until Ctrl-C or SIGTERM, then stops gracefully.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use paiio_server::Server;
use paiio_storage::auth::{Credentials, Verifier};
use paiio_storage::clock::ManualClock;
use paiio_storage::config::{Backend, Config};
use paiio_storage::local::{LocalWarehouse, VacuumOptions};

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

    /// Serve only the MaxCompute Tunnel and the metadata calls, as a public endpoint does:
    /// the Storage API (V1 and V2) answers 404.
    #[arg(long)]
    pub tunnel_only: bool,

    /// The time a client has to send a request's headers (and a new connection its first
    /// request), e.g. 500ms, 30s, 2m; `off` disables it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub header_timeout: Timeout,

    /// The longest silence inside a request body; then the request is answered 408 and its
    /// slot freed. `off` disables it.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub body_idle_timeout: Timeout,

    /// The lowest average rate of a request body once the body-idle timeout has passed
    /// (e.g. 500B, 10KB); slower uploads are answered 408 and their slot freed. `off`
    /// disables it.
    #[arg(long, value_name = "RATE", default_value = "500B", value_parser = parse_min_rate)]
    pub body_min_rate: MinRate,

    /// How long an idle keep-alive connection stays open. `off` disables it.
    #[arg(long, value_name = "DURATION", default_value = "75s", value_parser = parse_timeout)]
    pub keep_alive_timeout: Timeout,

    /// The most connections open at once; beyond it idle connections are closed to make room
    /// and new clients wait. Default: half the open-file limit, between 16 and 10,000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Vacuum the warehouse this often (expired sessions, old versions, unreferenced files,
    /// with the defaults of `paiio table vacuum`), e.g. 5m, 1h; `off` turns it off.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub vacuum_interval: Timeout,
}

/// A rate option: bytes per second, or `None` for `off` (an alias, so clap does not take the
/// option for an optional `u64`).
pub type MinRate = Option<u64>;

fn parse_min_rate(text: &str) -> std::result::Result<MinRate, String> {
    if ["off", "none"]
        .iter()
        .any(|w| text.trim().eq_ignore_ascii_case(w))
    {
        return Ok(None);
    }
    parse_rate(text).map(Some)
}

/// A timeout option: a duration, or `None` for `off` (an alias, as for [`MinRate`]).
pub type Timeout = Option<Duration>;

fn parse_timeout(text: &str) -> std::result::Result<Timeout, String> {
    if ["off", "none"]
        .iter()
        .any(|w| text.trim().eq_ignore_ascii_case(w))
    {
        return Ok(None);
    }
    paiio_server::parse_duration(text)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn parse_rate(text: &str) -> std::result::Result<u64, String> {
    match paiio_server::parse_size(text) {
        Ok(0) => Err(format!("`{text}` is not a positive rate")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The directory the server serves: `--warehouse`, else the configured local warehouse.
fn warehouse_dir(warehouse: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = warehouse {
        return Ok(dir.to_path_buf());
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

/// Runs `paiio serve` over `warehouse` (the global `--warehouse`) or the configured one.
pub async fn run(warehouse: Option<&Path>, args: &ServeArgs) -> Result<()> {
    let creds = credentials(args)?;
    if creds.is_none() && !args.allow_anonymous {
        return Err(CliError::input(
            "paiio serve needs the keys requests are signed with: give --config FILE (an ini \
             file with access_id and access_key) or --access-id and --access-key, or allow \
             unsigned requests with --allow-anonymous",
        ));
    }
    let dir = warehouse_dir(warehouse)?;
    // Cheap insurance against descriptor exhaustion; the cap below follows the new limit.
    let open_files = paiio_server::raise_open_file_limit();
    let max_connections = match args.max_connections {
        Some(n) => n as usize,
        None => paiio_server::default_max_connections(),
    };
    if let Some(limit) = open_files
        && max_connections as u64 + 64 > limit
    {
        eprintln!(
            "paiio serve: warning: --max-connections {max_connections} leaves little of the \
             open-file limit ({limit}) to the warehouse"
        );
    }
    // With --admin, tests can move the warehouse's clock forward to expire sessions.
    let clock = args.admin.then(ManualClock::new);
    // Sessions belong to remote clients, which resume them after a restart of the server:
    // they go when they expire, not when this process does.
    let mut warehouse = LocalWarehouse::builder(&dir).record_session_owner(false);
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
        .header_timeout(args.header_timeout)
        .body_idle_timeout(args.body_idle_timeout)
        .body_min_rate(args.body_min_rate)
        .keep_alive_timeout(args.keep_alive_timeout)
        .max_connections(max_connections)
        .admin(args.admin)
        .storage_api(!args.tunnel_only);
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

/// Vacuums the warehouse every `interval` (the first time after one interval); `None`: never.
fn spawn_vacuum(
    warehouse: &Arc<LocalWarehouse>,
    interval: Timeout,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = interval?;
    let warehouse = warehouse.clone();
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match warehouse.vacuum(None, &VacuumOptions::default()).await {
                Ok(r) if r.files > 0 => tracing::info!(
                    "vacuum freed {} files ({} bytes): {} write sessions, {} read sessions, {} versions, {} data files",
                    r.files,
                    r.bytes,
                    r.write_sessions,
                    r.read_sessions,
                    r.versions,
                    r.data_files
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_with_clear_errors() {
        assert_eq!(parse_timeout("30s").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_timeout("500ms").unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_timeout("2m").unwrap(), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("off").unwrap(), None);
        assert_eq!(parse_min_rate("10KB").unwrap(), Some(10_000));
        assert_eq!(parse_min_rate("off").unwrap(), None);
        assert!(parse_min_rate("0").unwrap_err().contains("`0`"));
        for bad in ["30", "0s", "soon", "-5s"] {
            let err = parse_timeout(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }
}
