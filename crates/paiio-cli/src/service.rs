//! Which [`TableService`] a command talks to, and what a URI resolves to on it.

use std::sync::Arc;

use paiio_storage::config::{Backend, Config};
use paiio_storage::error::ObjectKind;
use paiio_storage::service::PartitionInfo;
use paiio_storage::{Error as StorageError, TableInfo, TableService, TableUri};

use crate::cli::{Cli, Command, TableCommand};
use crate::error::{CliError, Result};

/// The service the command line selects: `--warehouse DIR`, else the configuration
/// ([`Config::load`], [`Config::backend`]). This is the one place a backend is chosen.
pub fn open_service(cli: &Cli) -> Result<Arc<dyn TableService>> {
    let (backend, config) = match &cli.warehouse {
        Some(dir) => (Backend::Local { root: dir.clone() }, None),
        None => {
            let config = Config::load()?;
            (config.backend()?, Some(config))
        }
    };
    if let (Backend::Rest { endpoint }, Some(name)) = (&backend, catalog_command(cli)) {
        return Err(CliError::failure(format!(
            "`table {name}` is not offered by the Storage API (the configuration selects \
             the endpoint {endpoint}); run it against the warehouse with --warehouse DIR"
        )));
    }
    // `--warehouse DIR` reads no configuration: a local warehouse needs none.
    Ok(paiio_storage::open_backend(
        &backend,
        &config.unwrap_or_default(),
    )?)
}

/// The catalog commands, which the Storage API does not offer (no table creation, drop or
/// listing, and no partition list: its `describe_table` reports none).
fn catalog_command(cli: &Cli) -> Option<&'static str> {
    match &cli.command {
        Command::Table(TableCommand::Create { .. }) => Some("create"),
        Command::Table(TableCommand::Drop { .. }) => Some("drop"),
        Command::Table(TableCommand::Ls { .. }) => Some("ls"),
        Command::Table(TableCommand::Partitions { .. }) => Some("partitions"),
        Command::Table(TableCommand::Vacuum { .. }) => Some("vacuum"),
        _ => None,
    }
}

/// Parses a table URI (an input error when it does not parse).
pub fn parse_uri(text: &str) -> Result<TableUri> {
    Ok(TableUri::parse(text)?)
}

/// A table URI checked against its table: the table exists, and every key of the URI's
/// partition spec is a partition column of it.
#[derive(Debug, Clone)]
pub struct Target {
    pub uri: TableUri,
    pub info: TableInfo,
}

impl Target {
    pub async fn resolve(service: &dyn TableService, uri: &str) -> Result<Target> {
        let uri = parse_uri(uri)?;
        let info = service.describe_table(&uri.table).await?;
        let target = Target { uri, info };
        target.check_partition_keys()?;
        Ok(target)
    }

    fn check_partition_keys(&self) -> Result<()> {
        let schema = &self.info.schema;
        for key in self.uri.partition.keys() {
            if schema.partition_columns.is_empty() {
                return Err(StorageError::invalid(
                    "partition spec",
                    format!(
                        "`{}`: table {} is not partitioned",
                        self.uri.partition, self.uri.table
                    ),
                )
                .into());
            }
            if !schema.is_partition_column(key) {
                let names: Vec<&str> = schema
                    .partition_columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(StorageError::invalid(
                    "partition spec",
                    format!(
                        "`{}`: `{key}` is not a partition column of {} (partition columns: {})",
                        self.uri.partition,
                        self.uri.table,
                        names.join(", ")
                    ),
                )
                .into());
            }
        }
        Ok(())
    }

    /// The partitions the URI selects (all of them for a table URI).
    pub fn partitions(&self) -> Vec<&PartitionInfo> {
        self.info
            .partitions
            .iter()
            .filter(|p| self.uri.partition.matches(&p.spec))
            .collect()
    }

    /// Rows of the table, or of the partitions the URI selects.
    pub fn row_count(&self) -> u64 {
        if self.uri.partition.is_empty() {
            self.info.row_count
        } else {
            self.partitions().iter().map(|p| p.row_count).sum()
        }
    }

    /// For commands that read: a partition URI must select at least one partition.
    pub fn require_rows_source(&self) -> Result<()> {
        if !self.uri.partition.is_empty() && self.partitions().is_empty() {
            return Err(StorageError::not_found(
                ObjectKind::Partition,
                format!("{} of {}", self.uri.partition, self.uri.table),
            )
            .into());
        }
        Ok(())
    }

    /// The names of the table's partition columns.
    pub fn partition_column_names(&self) -> Vec<String> {
        self.info
            .schema
            .partition_columns
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }
}
