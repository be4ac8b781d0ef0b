//! # paiio-tch
//!
//! [tch](https://docs.rs/tch) (libtorch) bindings of `paiio`: MaxCompute table batches as
//! tensors.
//!
//! * [`convert`]: Arrow columns to tensors for every numeric and boolean type (one copy
//!   straight into libtorch's memory; a zero-copy `unsafe` view where the layout allows),
//!   NULLs filled by `record_defaults` rules, a feature matrix from several columns, labels.
//! * [`TensorBatches`]: a batch iterator over a [`paiio::TableReader`] (raw columns, or typed
//!   by its `record_defaults`) with batch size, drop-last, the reader's deterministic shuffle
//!   and epochs, exact resume state, and device placement.
//!
//! ```no_run
//! use paiio::{ReaderOptions, Shuffle, TableReader};
//! use paiio_tch::{BatchOptions, TensorBatches};
//!
//! let reader = TableReader::open(
//!     "odps://project/tables/train",
//!     ReaderOptions::default().slice(0, 2).shuffle(Shuffle::new(42, 0)),
//! )?;
//! let mut batches = TensorBatches::new(
//!     reader,
//!     BatchOptions::default().features("f1,f2,f3").label("y").batch_size(512),
//! )?;
//! for epoch in 0..3 {
//!     batches.set_epoch(epoch)?;
//!     for batch in batches.by_ref() {
//!         let batch = batch?;
//!         let _x = &batch.features; // [rows, 3] float32
//!     }
//! }
//! # Ok::<(), paiio_tch::Error>(())
//! ```
//!
//! Building this crate needs libtorch: see its README (the PyPI `torch` wheel matching the
//! tch version, linked with `LIBTORCH_USE_PYTORCH=1`). It is not a default member of the
//! workspace, so a plain `cargo build` never needs it.

pub mod batches;
pub mod convert;
pub mod error;

pub use batches::{BatchOptions, TensorBatch, TensorBatches};
pub use convert::{
    array_as_tensor, array_to_tensor, column_to_tensor, default_kind, features,
    features_with_defaults, labels, native_kind,
};
pub use error::{Error, Result};
pub use paiio::RecordDefault;
pub use tch;
