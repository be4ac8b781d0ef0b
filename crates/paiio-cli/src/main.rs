//! `paiio`: manage and move MaxCompute-style tables.
//!
//! ```text
//! paiio [--warehouse DIR] table create URI --schema COLUMNS [--partitioned-by COLUMNS] [--if-not-exists]
//! paiio [--warehouse DIR] table ls odps://PROJECT [--schema S]
//! paiio [--warehouse DIR] table schema|count|head|partitions|checksum URI
//! paiio [--warehouse DIR] table drop URI [--if-exists]
//! paiio [--warehouse DIR] table import URI FILE [--format csv|jsonl|arrow] [--overwrite] [--batch-rows N]
//! paiio [--warehouse DIR] table export URI FILE [--format csv|jsonl|arrow]
//! paiio [--warehouse DIR] table vacuum URI|--all [--dry-run] [--retention S] [--keep-versions N] [--grace S] [--abandon-idle S]
//! paiio serve --warehouse DIR [--listen ADDR] [--config FILE] [--allow-anonymous] [--admin] ...
//! ```
//!
//! Errors are one line on standard error, `paiio: error: MESSAGE`, with exit status 2 for
//! bad input (usage, URIs, schemas, files, values) and 1 for other failures.

// A server holding many streams allocates and frees large buffers from many threads; mimalloc
// returns that memory to the system where glibc's arenas keep it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod catalog;
mod checksum;
mod cli;
mod error;
mod export;
mod format;
mod import;
mod input;
mod output;
mod read;
mod serve;
mod service;
mod vacuum;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::{Cli, Command, TableCommand};
use crate::error::{CliError, EXIT_INPUT, Result};
use crate::output::Output;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging();
    // File reads and writes run on the blocking pool. Tokio's default of 512 threads lets
    // 1,000 concurrent reads of `paiio serve` start a thread each, every one with its own
    // allocator caches, for no gain on a machine with a few cores: a few threads per core
    // keep the disks and cores busy, and the reads queue in order.
    let blocking = std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(4)
        * 8;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return report(&CliError::failure(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    let mut out = Output::new();
    let result = runtime
        .block_on(run(&cli, &mut out))
        .and_then(|()| out.flush());
    // Blocking work still running (a parser whose consumer gave up) is not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

async fn run(cli: &Cli, out: &mut Output) -> Result<()> {
    let command = match &cli.command {
        Command::Serve(args) => return serve::run(cli.warehouse.as_deref(), args).await,
        Command::Table(command) => command,
    };
    if let TableCommand::Vacuum {
        uri,
        all: _,
        dry_run,
        retention,
        keep_versions,
        grace,
        abandon_idle,
    } = command
    {
        let options = paiio_storage::local::VacuumOptions {
            dry_run: *dry_run,
            version_retention: std::time::Duration::from_secs(*retention),
            keep_versions: *keep_versions,
            grace: std::time::Duration::from_secs(*grace),
            abandon_idle: abandon_idle.map(std::time::Duration::from_secs),
        };
        return vacuum::run(cli, out, uri.as_deref(), &options).await;
    }
    let service = service::open_service(cli)?;
    match command {
        TableCommand::Create {
            uri,
            schema,
            partitioned_by,
            if_not_exists,
        } => {
            catalog::create(
                service,
                out,
                uri,
                schema,
                partitioned_by.as_deref(),
                *if_not_exists,
            )
            .await
        }
        TableCommand::Ls { project, schema } => {
            catalog::ls(service, out, project, schema.as_deref()).await
        }
        TableCommand::Schema { uri } => catalog::schema(service, out, uri).await,
        TableCommand::Count { uri } => catalog::count(service, out, uri).await,
        TableCommand::Head { uri, rows } => catalog::head(service, out, uri, *rows).await,
        TableCommand::Partitions { uri } => catalog::partitions(service, out, uri).await,
        TableCommand::Drop { uri, if_exists } => catalog::drop(service, out, uri, *if_exists).await,
        TableCommand::Import {
            uri,
            file,
            format,
            overwrite,
            batch_rows,
        } => {
            let args = import::ImportArgs {
                uri,
                file,
                format: *format,
                overwrite: *overwrite,
                batch_rows: usize::try_from(*batch_rows).unwrap_or(usize::MAX),
            };
            import::run(service, out, args).await
        }
        TableCommand::Export { uri, file, format } => {
            export::run(service, out, uri, file, *format).await
        }
        TableCommand::Checksum { uri } => checksum::run(service, out, uri).await,
        TableCommand::Vacuum { .. } => unreachable!("vacuum runs on the warehouse directly"),
    }
}

fn report(error: &CliError) -> ExitCode {
    eprintln!("paiio: error: {}", error.one_line());
    ExitCode::from(error.code)
}

/// Help and version go to standard output as clap writes them; usage errors become one line.
fn usage_error(error: clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(EXIT_INPUT)
        }
        _ => {
            // The first paragraph of clap's message (the error, and what it lists), folded.
            let rendered = error.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            let message = if message.is_empty() {
                "invalid command line"
            } else {
                message
            };
            report(&CliError::input(format!("{message} (see paiio --help)")))
        }
    }
}

/// Diagnostics from the libraries, on standard error, filtered by `PAIIO_LOG`
/// (default: warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAIIO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
