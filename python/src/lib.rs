//! `paiio._native`: the Rust core of the Python package `paiio` (see `paiio/_native.pyi`).
//!
//! The pure-Python package (`python/paiio/`) wraps these classes with PAI's API
//! (`paiio.python_io.TableReader`, `TableWriter`) and defines the exception classes
//! (`paiio/errors.py`) that this module raises.

mod arrow_ffi;
mod convert;
mod defaults;
mod errors;
mod reader;
mod stream;
mod transfer;
mod writer;

use errors::IntoPyResult;
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

/// The batches of a rank's epoch over virtual shards, `[(shard, batch of the shard, rows)]`
/// in order (`paiio::shard::epoch_batches`): the plan of `paiio.torch.TableDataset`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn epoch_batches(
    py: Python<'_>,
    table_rows: Vec<u64>,
    rank: u64,
    world: u64,
    shards: u64,
    batch: u64,
    drop_last: bool,
    equal: bool,
) -> PyResult<Vec<(u64, u64, u64)>> {
    py.detach(|| {
        paiio::shard::epoch_batches(&table_rows, rank, world, shards, batch, drop_last, equal)
    })
    .py_err(py)
}

/// The virtual shard count of `paiio::shard::auto_shards`.
#[pyfunction]
fn auto_shards(table_rows: Vec<u64>, world: u64, batch: u64) -> u64 {
    paiio::shard::auto_shards(&table_rows, world, batch)
}

/// The rows of each table of `tables` (URIs as the reader takes them), counted by a read
/// session each, without opening a reader.
#[pyfunction]
fn row_counts(py: Python<'_>, tables: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    let tables = reader::tables_arg(tables)?;
    py.detach(move || {
        let service = paiio::backend::open_default_service()?;
        paiio::reader::row_counts(service, tables)
    })
    .py_err(py)
}

/// The table URIs of `tables` (a URI, a comma-separated list of URIs, or a list of either),
/// one per table, as written; each is checked.
#[pyfunction]
fn table_uris(py: Python<'_>, tables: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let mut out = Vec::new();
    for text in reader::tables_arg(tables)? {
        for uri in paiio_storage::TableUri::split_list(&text) {
            paiio_storage::TableUri::parse(&uri).py_err(py)?;
            out.push(uri);
        }
    }
    if out.is_empty() {
        return Err(errors::invalid(py, "tables", "no table given"));
    }
    Ok(out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<reader::Reader>()?;
    m.add_class::<writer::Writer>()?;
    m.add_class::<arrow_ffi::ArrowBatch>()?;
    m.add_class::<convert::ArrowOwner>()?;
    m.add_class::<stream::BatchStream>()?;
    m.add_class::<transfer::PackedBatch>()?;
    m.add_class::<transfer::SlotLease>()?;
    m.add_function(wrap_pyfunction!(transfer::unpack, m)?)?;
    m.add_function(wrap_pyfunction!(transfer::receive, m)?)?;
    m.add_function(wrap_pyfunction!(transfer::slot_state, m)?)?;
    m.add_function(wrap_pyfunction!(transfer::set_slot_state, m)?)?;
    m.add_function(wrap_pyfunction!(slice_range, m)?)?;
    m.add_function(wrap_pyfunction!(row_counts, m)?)?;
    m.add_function(wrap_pyfunction!(epoch_batches, m)?)?;
    m.add_function(wrap_pyfunction!(auto_shards, m)?)?;
    m.add_function(wrap_pyfunction!(table_uris, m)?)?;
    m.add_function(wrap_pyfunction!(defaults::record_defaults, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
