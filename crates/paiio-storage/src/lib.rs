//! # paiio-storage
//!
//! The core of paiio-rs: the MaxCompute type system ([`types`]), `odps://` URIs ([`uri`]),
//! credentials and endpoints ([`config`]), request signing ([`auth`]), the wire format of the
//! Storage API ([`protocol`], shared with `paiio-server`), and one async [`TableService`]
//! trait with its backends: the embedded [`local::LocalWarehouse`] (a directory of tables,
//! the default when no cloud endpoint is configured) and, with the `rest` feature, the
//! Storage API client `rest::RestClient`, chosen from a configuration by [`open_service`].
//!
//! This crate never creates an async runtime; callers bring their own.

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod ipc_guard;
pub mod local;
mod open;
pub mod protocol;
#[cfg(feature = "rest")]
pub mod rest;
pub mod rng;
pub mod service;
pub mod split;
pub mod types;
pub mod uri;

pub use error::{Error, ObjectKind, Result};
pub use open::{open_backend, open_service};
pub use service::{
    CommitInfo, CreateTableOptions, ReadRange, ReadRequest, ReadSession, ReadSessionRequest,
    RecordBatchStream, ServiceHints, SessionStatus, SplitMode, SplitOptions, TableInfo,
    TableService, WriteAck, WriteMode, WriteRequest, WriteSession, WriteSessionRequest,
    WriteStream,
};
pub use types::{ArrowOptions, Column, OdpsType, TableSchema};
pub use uri::{PartitionSpec, TableId, TableUri};
