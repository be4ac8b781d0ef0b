//! Errors of the facade: the storage errors, plus what reading and converting rows can do.

pub use paiio_storage::error::BoxError;

/// `Result` with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of `paiio`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the storage layer (tables, sessions, I/O, auth...).
    #[error(transparent)]
    Storage(#[from] paiio_storage::Error),

    /// Reading past the end of a slice (`read` after the last row, `seek` past the end).
    #[error("out of range: {0}")]
    OutOfRange(String),

    /// An argument that can never work (both selected and excluded columns, a bad slice...).
    #[error("invalid {what}: {message}")]
    InvalidArgument { what: String, message: String },

    /// A value or column that cannot be converted to the requested type.
    #[error("cannot convert column `{column}` ({odps_type}) to {target}{}: {message}", row.map(|r| format!(" at row {r}")).unwrap_or_default())]
    Conversion {
        column: String,
        odps_type: String,
        target: String,
        /// The row (within the slice, in table order) of the value that failed, when a value
        /// failed.
        row: Option<u64>,
        message: String,
    },

    /// The reader or writer was closed.
    #[error("{0} is closed")]
    Closed(&'static str),
}

impl Error {
    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            message: message.into(),
        }
    }

    /// Whether this is the end of the data.
    pub fn is_out_of_range(&self) -> bool {
        matches!(self, Error::OutOfRange(_))
            || matches!(
                self,
                Error::Storage(paiio_storage::Error::OutOfRange { .. })
            )
    }
}
