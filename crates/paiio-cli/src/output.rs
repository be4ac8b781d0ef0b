//! Standard output that a closed pipe (`paiio table ls ... | head -1`) does not turn into
//! a panic, and progress bars on standard error.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{CliError, Result};

/// Lines for standard output.
pub struct Output {
    stdout: std::io::Stdout,
    closed: bool,
}

impl Output {
    pub fn new() -> Self {
        Output {
            stdout: std::io::stdout(),
            closed: false,
        }
    }

    /// Writes one line (the text plus a newline). A reader that went away is not an error:
    /// the rest is silently dropped.
    pub fn line(&mut self, text: &str) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut lock = self.stdout.lock();
        let result = lock
            .write_all(text.as_bytes())
            .and_then(|()| lock.write_all(b"\n"));
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(CliError::failure(format!(
                "cannot write to standard output: {e}"
            ))),
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        match self.stdout.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::failure(
                format!("cannot write to standard output: {e}"),
            )),
            _ => Ok(()),
        }
    }
}

/// Files at least this large get a progress bar (when standard error is a terminal).
pub const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// A progress bar over `total` bytes on standard error, or a hidden one when standard error
/// is not a terminal or the total is small.
pub fn bytes_progress(total: u64, message: &str) -> ProgressBar {
    if total < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A progress bar over `total` rows, under the same conditions as [`bytes_progress`]
/// (a row counts as about 64 bytes for the threshold).
pub fn rows_progress(total: u64, message: &str) -> ProgressBar {
    if total.saturating_mul(64) < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {wide_bar} {human_pos}/{human_len} rows eta {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
