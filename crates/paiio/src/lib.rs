//! # paiio
//!
//! Feed ML training from MaxCompute (ODPS) tables: each worker reads its shard
//! (`slice_id`/`slice_count`) of one or more tables with prefetch, typed by `record_defaults`,
//! and writes results back. Works over the MaxCompute Storage API and over the embedded local
//! warehouse (the default when no cloud endpoint is configured).

pub mod backend;
pub mod error;
pub mod runtime;

pub use error::{Error, Result};
