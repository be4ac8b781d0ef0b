//! The command line, as clap reads it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Manage and move MaxCompute-style tables: a local warehouse, or (later) the Storage API.
#[derive(Debug, Parser)]
#[command(name = "paiio", version, about, propagate_version = true)]
pub struct Cli {
    /// The local warehouse directory to use, overriding the configuration
    /// (ODPS_CONFIG_FILE_PATH, ODPS_ENDPOINT, PAIIO_WAREHOUSE, ...).
    #[arg(long, global = true, value_name = "DIR")]
    pub warehouse: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, drop, import, export and checksum tables.
    #[command(subcommand)]
    Table(TableCommand),
    /// Serve the warehouse over the MaxCompute Storage API:
    /// `paiio serve --warehouse DIR --config FILE [--listen 127.0.0.1:8080]`.
    Serve(crate::serve::ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create a table: `paiio table create odps://P/tables/T --schema "id bigint, name string"`.
    Create {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE
        uri: String,
        /// The data columns: `name type [not null] [comment '...'], ...`.
        #[arg(long, value_name = "COLUMNS")]
        schema: String,
        /// The partition columns, e.g. `pt string, region string`.
        #[arg(long, value_name = "COLUMNS")]
        partitioned_by: Option<String>,
        /// Succeed without changing anything when the table already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List the tables of a project, one URI per line.
    Ls {
        /// odps://PROJECT, odps://PROJECT/tables or odps://PROJECT/schemas/SCHEMA
        project: String,
        /// Only the tables of this schema.
        #[arg(long)]
        schema: Option<String>,
    },
    /// Show the columns of a table with their types; partition columns are marked.
    Schema {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE
        uri: String,
    },
    /// Count the rows of a table, or of the partitions a partition URI names.
    Count {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE[/key=value...]
        uri: String,
    },
    /// Show the first rows of a table or partition.
    Head {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE[/key=value...]
        uri: String,
        /// How many rows to show.
        #[arg(short = 'n', long = "rows", default_value_t = 10, value_name = "N")]
        rows: u64,
    },
    /// List the partitions of a table with their row counts.
    Partitions {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE[/key=value...] (a partial spec filters)
        uri: String,
    },
    /// Drop a table, or the partitions a partition URI names.
    Drop {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE[/key=value...]
        uri: String,
        /// Succeed when there is nothing to drop.
        #[arg(long)]
        if_exists: bool,
    },
    /// Import a CSV, JSON-lines or Arrow IPC file into a table or partition.
    ///
    /// Columns are matched by name. When the URI does not name every partition level, the
    /// file carries the remaining partition columns and rows go to their partitions.
    /// Nothing is written unless the whole file imports.
    ///
    /// CSV: a header row, then one row per line; an empty field is NULL. JSON lines: one
    /// object per line, keys are column names, a missing key is NULL. Arrow: the IPC file
    /// or stream format, columns of compatible types.
    Import {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE[/key=value...]
        uri: String,
        /// The file to read.
        file: PathBuf,
        /// The file format (default: from the extension).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Replace the partitions written (or the whole unpartitioned table).
        #[arg(long)]
        overwrite: bool,
        /// Rows per parsed batch.
        #[arg(long, default_value_t = 65_536, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
        batch_rows: u64,
    },
    /// Export a table or partition (partition columns included) to a file.
    ///
    /// Every format reads back with `import` to the same rows, except that CSV writes
    /// NULL and the empty string alike, as an empty field (import reads NULL; a warning
    /// says when a column had empty strings). CSV cannot carry BINARY, interval or nested
    /// columns; JSON writes NaN and infinities as the strings "NaN", "inf", "-inf".
    Export {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE[/key=value...]
        uri: String,
        /// The file to write (replaced atomically).
        file: PathBuf,
        /// The file format (default: from the extension).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Reclaim space in the local warehouse: remove expired write sessions (abandoned
    /// imports), sessions of local imports whose process is gone (killed), old table versions
    /// no live read session pins, and data files nothing needs, then report what was freed.
    Vacuum {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE (or --all for every table)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        uri: Option<String>,
        /// Every table, expired read sessions, and leftovers of dropped tables.
        #[arg(long)]
        all: bool,
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep table versions committed less than this many seconds ago.
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        retention: u64,
        /// Always keep this many latest versions of each table (at least 1).
        #[arg(long, value_name = "N", default_value_t = 10)]
        keep_versions: usize,
        /// Keep files younger than this many seconds, and sessions until this long after they
        /// expire (a writer may have written a file and not yet recorded it). 0 only when
        /// nothing else uses the warehouse.
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        grace: u64,
        /// Also remove write sessions that have not expired but saw no write for this many
        /// seconds (imports killed on another host, or sessions of `paiio serve`), with what
        /// they staged.
        #[arg(long, value_name = "SECONDS")]
        abandon_idle: Option<u64>,
    },
    /// Print `ROWS DIGEST`: an order-independent SHA-256 based digest of all rows.
    Checksum {
        /// odps://PROJECT/tables/[SCHEMA.]TABLE[/key=value...]
        uri: String,
    },
}

/// File formats of import and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    #[value(alias = "json", alias = "ndjson")]
    Jsonl,
    /// Arrow IPC (file format; `.arrows` files use the stream format).
    #[value(alias = "ipc")]
    Arrow,
}
