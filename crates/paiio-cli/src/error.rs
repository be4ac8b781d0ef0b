//! The error of a command: one line of text and an exit status.

use std::fmt;
use std::path::Path;

use paiio_storage::Error as StorageError;

/// Exit status for bad input: usage, URIs, schemas, files, values.
pub const EXIT_INPUT: u8 = 2;
/// Exit status for everything else.
pub const EXIT_FAILURE: u8 = 1;

/// What a command failed with.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// Bad input (exit status 2).
    pub fn input(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_INPUT,
        }
    }

    /// Any other failure (exit status 1).
    pub fn failure(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }

    /// An I/O error on a local file the user named.
    pub fn file(path: &Path, action: &str, error: &std::io::Error) -> Self {
        let code = match error.kind() {
            std::io::ErrorKind::NotFound
            | std::io::ErrorKind::PermissionDenied
            | std::io::ErrorKind::IsADirectory
            | std::io::ErrorKind::InvalidData => EXIT_INPUT,
            _ => EXIT_FAILURE,
        };
        CliError {
            message: format!("cannot {action} {}: {error}", path.display()),
            code,
        }
    }

    /// The message as one line (newlines of wrapped messages folded).
    pub fn one_line(&self) -> String {
        let mut out = String::with_capacity(self.message.len());
        for (i, line) in self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            if i > 0 {
                out.push_str("; ");
            }
            out.push_str(line);
        }
        out
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<StorageError> for CliError {
    fn from(error: StorageError) -> Self {
        let code = match &error {
            StorageError::InvalidArgument { .. } | StorageError::TypeMismatch { .. } => EXIT_INPUT,
            _ => EXIT_FAILURE,
        };
        CliError {
            message: error.to_string(),
            code,
        }
    }
}
