//! Errors of `paiio-tch`: the facade's, libtorch's, and what cannot become a tensor.

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of `paiio-tch`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the facade (reading, converting with `record_defaults`, storage).
    #[error(transparent)]
    Paiio(#[from] paiio::Error),

    /// From libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),

    /// A column whose Arrow type has no tensor form (text, nested, temporal...).
    #[error(
        "column `{column}` has Arrow type {data_type}, which has no tensor form{}",
        if hint.is_empty() { String::new() } else { format!(": {hint}") }
    )]
    Unsupported {
        column: String,
        data_type: String,
        hint: String,
    },

    /// NULLs in a column converted without a default.
    #[error(
        "column `{column}` has {count} NULL(s) (the first at row {first_row}) and no default \
         to fill them; give a record default for it (the reader's record_defaults)"
    )]
    Null {
        column: String,
        count: usize,
        first_row: usize,
    },

    /// A value that does not fit the tensor type (a UInt64 above i64::MAX).
    #[error("column `{column}` at row {row}: {message}")]
    Value {
        column: String,
        row: usize,
        message: String,
    },

    /// An argument that can never work (an unknown column, a zero batch size...).
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },
}

impl Error {
    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            message: message.into(),
        }
    }
}
