//! The one error type of `paiio-storage`.
//!
//! Every variant is something a caller can act on, and carries the object it is about
//! (a table, a column, a session, a file, a request id) so that the message alone tells
//! a user what went wrong.

use std::path::PathBuf;

/// A boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of object an [`Error::NotFound`] or [`Error::AlreadyExists`] is about.
///
/// Its text (`"write stream"`) is how the error displays it, and how the server's error
/// answers name it (`protocol::error`), so that a client gets the same kind back.
macro_rules! object_kinds {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ObjectKind {
            $($(#[$doc])* $variant,)*
        }

        impl ObjectKind {
            /// Every kind.
            pub const ALL: &'static [ObjectKind] = &[$(ObjectKind::$variant,)*];

            /// The kind as messages name it (`"read session"`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ObjectKind::$variant => $text,)*
                }
            }
        }

        impl std::str::FromStr for ObjectKind {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok(ObjectKind::$variant),)*
                    other => Err(format!("unknown object kind {other:?}")),
                }
            }
        }
    };
}

object_kinds! {
    Project = "project",
    Schema = "schema",
    Table = "table",
    /// A version of a table (one a read session pinned, removed by vacuum).
    TableVersion = "table version",
    Partition = "partition",
    Column = "column",
    PartitionColumn = "partition column",
    ReadSession = "read session",
    WriteSession = "write session",
    WriteStream = "write stream",
    WriteStreamVersion = "write stream version",
    /// A session of a kind the answer did not tell (a service's `NoSuchSession`).
    Session = "session",
    /// A writer slot (`slice_id`) of a table or partition, held by a live writer.
    WriterSlot = "writer slot",
    /// Anything else a service says does not exist.
    Object = "object",
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ObjectKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ObjectKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table, partition, session, stream or column does not exist.
    #[error("{kind} not found: {name}")]
    NotFound { kind: ObjectKind, name: String },

    /// Creating something that already exists.
    #[error("{kind} already exists: {name}")]
    AlreadyExists { kind: ObjectKind, name: String },

    /// A request or argument that can never succeed as given.
    #[error("invalid {what}: {message}")]
    InvalidArgument { what: String, message: String },

    /// A value or an Arrow schema that does not fit the column it is meant for.
    #[error("type mismatch for column `{column}`: {message}")]
    TypeMismatch { column: String, message: String },

    /// A configuration file, variable or key that is missing or wrong.
    #[error("configuration error in {source_name}: {message}")]
    Config {
        source_name: String,
        message: String,
    },

    /// A configuration file that cannot be read (missing, or not readable); `named_by` is
    /// the variable that named it, if one did.
    #[error(
        "configuration error in {}: cannot read the configuration file{}: {source}",
        path.display(),
        named_by.map(|v| format!(" named by {v}")).unwrap_or_default()
    )]
    ConfigFileUnreadable {
        path: PathBuf,
        named_by: Option<&'static str>,
        #[source]
        source: std::io::Error,
    },

    /// A missing, malformed or wrong signature, or a request outside the clock-skew window.
    #[error("authentication failed ({code}): {message}")]
    Unauthenticated { code: &'static str, message: String },

    /// The session existed but is past its expiration time.
    #[error("session {session_id} expired")]
    SessionExpired { session_id: String },

    /// The session or stream exists but is in a state that does not allow the operation.
    #[error("session {session_id} is {state}: {message}")]
    InvalidState {
        session_id: String,
        state: String,
        message: String,
    },

    /// A row or split index past the end.
    #[error("out of range: {message}")]
    OutOfRange { message: String },

    /// A commit lost against a concurrent commit and could not be rebased.
    #[error("commit conflict on {table}: {message}")]
    Conflict { table: String, message: String },

    /// The operation is not offered by this backend.
    #[error("not supported: {message}")]
    NotSupported { message: String },

    /// Stored data failed an integrity check (checksum, truncated file, bad manifest).
    #[error("corrupt data in {location}: {message}")]
    Corrupt { location: String, message: String },

    /// A failure that may go away if the same request is tried again.
    #[error("transient failure: {message}")]
    Transient {
        message: String,
        retryable: bool,
        #[source]
        source: Option<BoxError>,
    },

    /// An error answered by a remote service that maps to no other variant.
    #[error("service error {status} {code}: {message} (request id {request_id})")]
    Service {
        status: u16,
        code: String,
        message: String,
        request_id: String,
    },

    /// The warehouse's disk refused a write: it is full, over quota or a file size limit, or
    /// read-only. Nothing was changed; freeing space (`paiio table vacuum`) or making the
    /// disk writable lets the operation succeed.
    #[error("the warehouse at {} is {condition}: cannot {action} ({}: {source})", root.display(), path.display())]
    Unwritable {
        root: PathBuf,
        /// `out of space`, `over its disk quota`, `over the file size limit`, `read-only`.
        condition: &'static str,
        /// What could not be done, e.g. `record the read session`.
        action: String,
        /// The file that could not be written.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An I/O error on a local path.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An Arrow encoding or decoding failure.
    #[error("arrow error in {context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(kind: ObjectKind, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Arrow`].
    pub fn arrow(context: impl Into<String>, source: arrow_schema::ArrowError) -> Self {
        Error::Arrow {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`Error::TypeMismatch`].
    pub fn type_mismatch(column: impl Into<String>, message: impl Into<String>) -> Self {
        Error::TypeMismatch {
            column: column.into(),
            message: message.into(),
        }
    }

    /// Turns an [`Error::Io`] that says the disk is full or read-only into
    /// [`Error::Unwritable`] naming the warehouse and what could not be done; any other error
    /// is returned unchanged.
    pub fn unwritable(self, root: &std::path::Path, action: impl Into<String>) -> Self {
        match self {
            Error::Io { path, source } => match unwritable_condition(&source) {
                Some(condition) => Error::Unwritable {
                    root: root.to_path_buf(),
                    condition,
                    action: action.into(),
                    path,
                    source,
                },
                None => Error::Io { path, source },
            },
            Error::Arrow {
                context,
                source: arrow_schema::ArrowError::IoError(message, source),
            } => match unwritable_condition(&source) {
                Some(condition) => Error::Unwritable {
                    root: root.to_path_buf(),
                    condition,
                    action: action.into(),
                    path: PathBuf::from(context),
                    source,
                },
                None => Error::Arrow {
                    context,
                    source: arrow_schema::ArrowError::IoError(message, source),
                },
            },
            other => other,
        }
    }

    /// Whether trying the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transient { retryable, .. } => *retryable,
            Error::Service { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }
}

/// What an I/O error says about the disk, when it says the disk takes no more writes.
pub(crate) fn unwritable_condition(error: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::StorageFull => Some("out of space"),
        ErrorKind::QuotaExceeded => Some("over its disk quota"),
        ErrorKind::FileTooLarge => Some("over the file size limit"),
        ErrorKind::ReadOnlyFilesystem => Some("read-only"),
        _ => None,
    }
}
