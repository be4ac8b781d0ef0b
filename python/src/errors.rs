//! Maps [`paiio::Error`] onto the exception classes of `paiio/errors.py`.
//!
//! The classes are defined in Python (so that they can derive from builtins such as
//! `FileNotFoundError` and be documented and pickled like any other class); the native
//! module imports `paiio.errors` when it raises. The message is the error's display text
//! followed by every source in its chain that does not already appear in it.

use paiio::Error;
use paiio_storage::{Error as StorageError, ObjectKind};
use pyo3::prelude::*;

/// The name of the class in `paiio.errors` for `error`.
pub fn class_name(error: &Error) -> &'static str {
    match error {
        Error::OutOfRange(_) => "OutOfRangeException",
        Error::InvalidArgument { .. } => "InvalidArgumentError",
        Error::Conversion { .. } => "ConversionError",
        Error::Closed(_) => "ClosedError",
        Error::Storage(e) => storage_class_name(e),
        _ => "PaiioError",
    }
}

fn storage_class_name(error: &StorageError) -> &'static str {
    match error {
        StorageError::NotFound { kind, .. } => match kind {
            ObjectKind::Column | ObjectKind::PartitionColumn => "InvalidArgumentError",
            ObjectKind::Project
            | ObjectKind::Schema
            | ObjectKind::Table
            | ObjectKind::TableVersion
            | ObjectKind::Partition => "TableNotFoundError",
            _ => "PaiioError",
        },
        StorageError::OutOfRange { .. } => "OutOfRangeException",
        StorageError::InvalidArgument { .. } => "InvalidArgumentError",
        StorageError::TypeMismatch { .. } => "ConversionError",
        StorageError::ConfigFileUnreadable { .. } => "ConfigFileNotFoundError",
        StorageError::Config { .. } => "ConfigError",
        StorageError::Unauthenticated { .. } => "AuthError",
        StorageError::SessionExpired { .. } => "SessionExpiredError",
        StorageError::Conflict { .. } | StorageError::AlreadyExists { .. } => "ConflictError",
        StorageError::Transient { .. } => "TransientError",
        e if e.is_retryable() => "TransientError",
        _ => "PaiioError",
    }
}

/// The display text of `error` and of every source not already part of it.
pub fn full_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A Python exception of `paiio.errors.<name>` with `message`.
pub fn py_error(py: Python<'_>, name: &str, message: String) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let class = py.import("paiio.errors")?.getattr(name)?;
        Ok(PyErr::from_value(class.call1((message.clone(),))?))
    })();
    match made {
        Ok(err) => err,
        // The Python package is missing (the bare extension module was imported): still a
        // readable error.
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
    }
}

/// The Python exception for `error`.
pub fn to_py(py: Python<'_>, error: Error) -> PyErr {
    let name = class_name(&error);
    let message = full_message(&error);
    let err = py_error(py, name, message);
    // Structured details for programs that handle the error.
    if let Error::Conversion {
        column,
        odps_type,
        target,
        row,
        ..
    } = &error
    {
        let value = err.value(py);
        let _ = value.setattr("column", column);
        let _ = value.setattr("odps_type", odps_type);
        let _ = value.setattr("target", target);
        let _ = value.setattr("row", *row);
    }
    err
}

/// Converts a facade result, attaching to the GIL to build the exception.
pub trait IntoPyResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for paiio::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

impl<T> IntoPyResult<T> for paiio_storage::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, Error::Storage(e)))
    }
}

/// An [`paiio::Error::InvalidArgument`] as a Python exception.
pub fn invalid(py: Python<'_>, what: &str, message: impl Into<String>) -> PyErr {
    to_py(py, Error::invalid(what, message))
}

/// An Arrow error as a Python `PaiioError`.
pub fn arrow(py: Python<'_>, context: &str, error: arrow_schema::ArrowError) -> PyErr {
    to_py(py, Error::Storage(StorageError::arrow(context, error)))
}
