//! # paiio-storage
//!
//! The core of paiio-rs: the MaxCompute type system ([`types`]), `odps://` URIs ([`uri`]),
//! credentials and endpoints ([`config`]), request signing ([`auth`]), and one async
//! [`TableService`] trait with its backends: the embedded [`local::LocalWarehouse`] (a
//! directory of tables, the default when no cloud endpoint is configured) and, in later
//! layers, the Storage API client.
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
pub mod rest;
pub mod service;
pub mod split;
pub mod types;
pub mod uri;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
pub use open::{open_backend, open_service};
pub use service::{
    CommitInfo, CreateTableOptions, ReadRange, ReadRequest, ReadSession, ReadSessionRequest,
    RecordBatchStream, SessionStatus, SplitMode, SplitOptions, TableInfo, TableService, WriteAck,
    WriteMode, WriteRequest, WriteSession, WriteSessionRequest, WriteStream,
};
pub use types::{ArrowOptions, Column, OdpsType, TableSchema};
pub use uri::{PartitionSpec, TableId, TableUri};
