//! `paiio table vacuum`: reclaim the space of abandoned writes, old table versions and
//! unreferenced files in the local warehouse.

use paiio_storage::config::{Backend, Config};
use paiio_storage::local::{LocalWarehouse, VacuumOptions, VacuumReport};

use crate::cli::Cli;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::service::parse_uri;

pub async fn run(
    cli: &Cli,
    out: &mut Output,
    uri: Option<&str>,
    options: &VacuumOptions,
) -> Result<()> {
    let table = match uri {
        Some(text) => {
            let uri = parse_uri(text)?;
            if !uri.partition.is_empty() {
                return Err(CliError::input(format!(
                    "vacuum takes a table URI without a partition, got {uri}"
                )));
            }
            Some(uri.table)
        }
        None => None,
    };
    let root = match &cli.warehouse {
        Some(dir) => dir.clone(),
        None => match Config::load()?.backend()? {
            Backend::Local { root } => root,
            Backend::Rest { endpoint } => {
                return Err(CliError::failure(format!(
                    "`table vacuum` works on a local warehouse, but the configuration selects \
                     the endpoint {endpoint}; run it against the warehouse with --warehouse DIR"
                )));
            }
        },
    };
    if !root.is_dir() {
        return Err(CliError::input(format!(
            "no warehouse at {}",
            root.display()
        )));
    }
    let warehouse = LocalWarehouse::open(&root)?;
    let report = warehouse.vacuum(table.as_ref(), options).await?;
    out.line(&summary(&report, options.dry_run))
}

/// One line: how many files and bytes, and of which kinds.
fn summary(r: &VacuumReport, dry_run: bool) -> String {
    let verb = if dry_run { "would free" } else { "freed" };
    format!(
        "{verb} {} files ({} bytes) in {} tables: {} write sessions expired, {} read sessions \
         expired, {} versions expired, {} unreferenced data files",
        r.files, r.bytes, r.tables, r.write_sessions, r.read_sessions, r.versions, r.data_files
    )
}
