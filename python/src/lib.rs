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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<reader::Reader>()?;
    m.add_class::<writer::Writer>()?;
    m.add_class::<arrow_ffi::ArrowBatch>()?;
    m.add_class::<convert::ArrowOwner>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
