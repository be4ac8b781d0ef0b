//! `paiio._native`: the Rust core of the Python package `paiio` (see `paiio/_native.pyi`).
//!
//! The pure-Python package (`python/paiio/`) wraps these classes with PAI's API
//! (`paiio.python_io.TableReader`, `TableWriter`) and defines the exception classes
//! (`paiio/errors.py`) that this module raises.

mod arrow_ffi;
mod convert;
mod errors;
mod interrupt;
mod reader;
mod writer;

use pyo3::prelude::*;

/// The rows `(start, end)` of slice `slice_id` of `slice_count` over `total` rows: the one
/// sharding formula of the Rust reader (`paiio::shard::slice_range`).
#[pyfunction]
#[pyo3(signature = (total, slice_id, slice_count, equal = false))]
fn slice_range(
    py: Python<'_>,
    total: u64,
    slice_id: u64,
    slice_count: u64,
    equal: bool,
) -> PyResult<(u64, u64)> {
    match paiio::shard::slice_range(total, slice_id, slice_count, equal) {
        Ok(range) => Ok((range.start, range.end)),
        Err(e) => Err(errors::invalid(py, "slice", e.to_string())),
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<reader::Reader>()?;
    m.add_class::<writer::Writer>()?;
    m.add_class::<arrow_ffi::ArrowBatch>()?;
    m.add_class::<convert::ArrowOwner>()?;
    m.add_function(wrap_pyfunction!(slice_range, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
