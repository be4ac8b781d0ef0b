//! What the benchmark binaries share: the table and cache arguments, where the figures go,
//! and running the benchmark on a tokio runtime.

use std::future::Future;
use std::path::{Path, PathBuf};

use crate::client::BoxError;
use crate::table;

/// The arguments that choose the table, the `paiio` binary and the cache.
#[derive(Debug, clap::Args)]
pub struct TableArgs {
    /// Size of the table in GB (10^9 bytes) of uncompressed Arrow.
    #[arg(long, default_value_t = 1.1, conflicts_with_all = ["rows", "quick"])]
    pub gb: f64,

    /// Rows of the table (instead of --gb).
    #[arg(long, conflicts_with = "quick")]
    pub rows: Option<u64>,

    /// A smoke run: a table of about 100 MB and shorter runs (client_bench: 1 s per
    /// rate-limited stream; serve_bench: 200 concurrent streams held 2 s).
    #[arg(long)]
    pub quick: bool,

    /// The paiio binary (default: $CARGO_TARGET_DIR/release/paiio, or next to this program).
    #[arg(long, value_name = "PATH")]
    pub paiio: Option<PathBuf>,

    /// The cache directory (default: $PAIIO_CACHE/bench, $PAIIO_CACHE defaulting to
    /// ~/.cache/paiio-rs).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// MaxBatchRows of every read (PyODPS's default is 4096).
    #[arg(long, default_value_t = 4096)]
    pub max_batch_rows: usize,

    /// Where to write the figures as JSON (default: CACHE/client.json or CACHE/serve.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl TableArgs {
    /// The rows of the table: `--rows`, else about 100 MB with `--quick`, else `--gb`.
    pub fn rows(&self) -> u64 {
        match (self.rows, self.quick) {
            (Some(rows), _) => rows.max(1),
            (None, true) => table::rows_for_gb(0.1),
            (None, false) => table::rows_for_gb(self.gb),
        }
    }

    /// `--cache`, else `$PAIIO_CACHE/bench`.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache
            .clone()
            .unwrap_or_else(|| cache_base().join("bench"))
    }

    /// Writes the figures to `--json`, else to `cache/default_name`, and says where.
    pub fn write_json(
        &self,
        cache: &std::path::Path,
        default_name: &str,
        figures: &serde_json::Value,
    ) -> Result<(), BoxError> {
        let path = self
            .json
            .clone()
            .unwrap_or_else(|| cache.join(default_name));
        std::fs::write(&path, serde_json::to_string_pretty(figures)? + "\n")?;
        eprintln!("bench: figures written to {}", path.display());
        Ok(())
    }
}

/// `$PAIIO_CACHE`, defaulting to `~/.cache/paiio-rs`.
pub fn cache_base() -> PathBuf {
    std::env::var_os("PAIIO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            home.join(".cache").join("paiio-rs")
        })
}

/// The python with PyODPS: `explicit`, else `$PAIIO_VENV/bin/python`, else the cache's venv.
pub fn venv_python(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("PAIIO_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_base().join("venv"))
            .join("bin")
            .join("python")
    })
}

/// An error of the `table`/`server` helpers as a [`BoxError`].
pub fn boxed(e: Box<dyn std::error::Error>) -> BoxError {
    e.to_string().into()
}

/// Runs `bench` on a multi-threaded tokio runtime; on an error prints it, prefixed by `name`,
/// and exits with status 1.
pub fn run_main(name: &str, bench: impl Future<Output = Result<(), BoxError>>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(bench) {
        eprintln!("{name}: error: {e}");
        std::process::exit(1);
    }
}

/// A rate like `10MB`, `512KB`, `10MiB` in bytes per second (decimal units unless `i`).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("/s");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a rate"))?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("`{text}`: unknown unit `{other}`")),
    };
    Ok((number * multiplier) as u64)
}
