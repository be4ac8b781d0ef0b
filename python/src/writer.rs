//! `paiio._native.Writer`: a [`TableWriter`] for Python. Rows (sequences of Python values),
//! numpy structured arrays (converted column by column) and Arrow data (PyCapsule
//! interface) are written; every call that may wait for the service releases the GIL.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, NullArray, RecordBatch, UInt64Array,
};
use arrow_schema::{Field, Schema};
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use paiio::writer::{TableWriter, Value};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::arrow_ffi;
use crate::errors::{self, IntoPyResult};

/// One Python value as a [`Value`]: None, bool, int, float, str, bytes, and numpy scalars.
fn value_of(py: Python<'_>, v: &Bound<'_, PyAny>, column: usize) -> PyResult<Value> {
    if v.is_none() {
        return Ok(Value::Null);
    }
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(Value::Int(v.extract()?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(v.extract()?));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::String(s.extract()?));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    // numpy scalars and other number types.
    let type_name = v.get_type().name()?.to_string();
    if type_name == "bool_" || type_name == "bool" {
        return Ok(Value::Bool(v.is_truthy()?));
    }
    if v.hasattr("__index__")? {
        return Ok(Value::Int(v.call_method0("__index__")?.extract()?));
    }
    if v.hasattr("__float__")? {
        return Ok(Value::Float(v.call_method0("__float__")?.extract()?));
    }
    if let Ok(b) = v.extract::<Vec<u8>>() {
        return Ok(Value::Bytes(b));
    }
    Err(errors::to_py(
        py,
        paiio::Error::Storage(paiio_storage::Error::type_mismatch(
            format!("#{column}"),
            format!("cannot write a Python {type_name} value"),
        )),
    ))
}

/// The natural Arrow array of Python objects: ints, floats (ints and floats mix), bools,
/// str or bytes, with None as NULL.
fn objects_to_array(py: Python<'_>, values: Vec<Value>, column: usize) -> PyResult<ArrayRef> {
    #[derive(PartialEq, Clone, Copy, Debug)]
    enum K {
        Null,
        Bool,
        Int,
        Float,
        Str,
        Bytes,
    }
    let mut kind = K::Null;
    for (row, v) in values.iter().enumerate() {
        let k = match v {
            Value::Null => K::Null,
            Value::Bool(_) => K::Bool,
            Value::Int(_) => K::Int,
            Value::Float(_) => K::Float,
            Value::String(_) => K::Str,
            Value::Bytes(_) => K::Bytes,
        };
        kind = match (kind, k) {
            (a, K::Null) => a,
            (K::Null, b) => b,
            (a, b) if a == b => a,
            (K::Int, K::Float) | (K::Float, K::Int) => K::Float,
            (a, b) => {
                return Err(errors::to_py(
                    py,
                    paiio::Error::Storage(paiio_storage::Error::type_mismatch(
                        format!("#{column}"),
                        format!("row {row} holds {b:?} among values that are {a:?}"),
                    )),
                ));
            }
        };
    }
    let n = values.len();
    Ok(match kind {
        K::Null => Arc::new(NullArray::new(n)),
        K::Bool => {
            let mut b = BooleanBuilder::with_capacity(n);
            for v in &values {
                b.append_option(if let Value::Bool(x) = v {
                    Some(*x)
                } else {
                    None
                });
            }
            Arc::new(b.finish())
        }
        K::Int => {
            let mut b = Int64Builder::with_capacity(n);
            for v in &values {
                b.append_option(if let Value::Int(x) = v {
                    Some(*x)
                } else {
                    None
                });
            }
            Arc::new(b.finish())
        }
        K::Float => {
            let mut b = Float64Builder::with_capacity(n);
            for v in &values {
                b.append_option(match v {
                    Value::Float(x) => Some(*x),
                    Value::Int(x) => Some(*x as f64),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        K::Str => {
            let mut b = StringBuilder::new();
            for v in &values {
                b.append_option(if let Value::String(x) = v {
                    Some(x)
                } else {
                    None
                });
            }
            Arc::new(b.finish())
        }
        K::Bytes => {
            let mut b = BinaryBuilder::new();
            for v in &values {
                b.append_option(if let Value::Bytes(x) = v {
                    Some(x)
                } else {
                    None
                });
            }
            Arc::new(b.finish())
        }
    })
}

/// Reads field values of a contiguous structured array.
struct Records {
    base: *const u8,
    itemsize: usize,
    rows: usize,
}

impl Records {
    /// The `size` bytes of row `i` at `offset`.
    fn bytes(&self, i: usize, offset: usize, size: usize) -> &[u8] {
        debug_assert!(i < self.rows && offset + size <= self.itemsize);
        // SAFETY: in bounds of the array's buffer, which the caller keeps alive.
        unsafe { std::slice::from_raw_parts(self.base.add(i * self.itemsize + offset), size) }
    }
}

fn field_array(
    py: Python<'_>,
    records: &Records,
    kind: char,
    size: usize,
    offset: usize,
    column: usize,
    name: &str,
) -> PyResult<ArrayRef> {
    let n = records.rows;
    let int = |i: usize| -> i64 {
        let b = records.bytes(i, offset, size);
        match size {
            1 => b[0] as i8 as i64,
            2 => i16::from_le_bytes([b[0], b[1]]) as i64,
            4 => i32::from_le_bytes(b.try_into().unwrap()) as i64,
            _ => i64::from_le_bytes(b.try_into().unwrap()),
        }
    };
    let uint = |i: usize| -> u64 {
        let b = records.bytes(i, offset, size);
        match size {
            1 => b[0] as u64,
            2 => u16::from_le_bytes([b[0], b[1]]) as u64,
            4 => u32::from_le_bytes(b.try_into().unwrap()) as u64,
            _ => u64::from_le_bytes(b.try_into().unwrap()),
        }
    };
    Ok(match (kind, size) {
        ('i', 1 | 2 | 4 | 8) => Arc::new(Int64Array::from_iter_values((0..n).map(int))),
        ('u', 1 | 2 | 4) => Arc::new(Int64Array::from_iter_values((0..n).map(|i| uint(i) as i64))),
        ('u', 8) => Arc::new(UInt64Array::from_iter_values((0..n).map(uint))),
        ('f', 4) => Arc::new(Float64Array::from_iter_values((0..n).map(|i| {
            f32::from_le_bytes(records.bytes(i, offset, 4).try_into().unwrap()) as f64
        }))),
        ('f', 8) => Arc::new(Float64Array::from_iter_values((0..n).map(|i| {
            f64::from_le_bytes(records.bytes(i, offset, 8).try_into().unwrap())
        }))),
        ('b', 1) => Arc::new(BooleanArray::from_iter(
            (0..n).map(|i| Some(records.bytes(i, offset, 1)[0] != 0)),
        )),
        ('U', _) => {
            let mut b = StringBuilder::new();
            for i in 0..n {
                let raw = records.bytes(i, offset, size);
                let text: String = raw
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .take_while(|&c| c != 0)
                    .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect();
                b.append_value(text);
            }
            Arc::new(b.finish())
        }
        ('S', _) => {
            let mut b = BinaryBuilder::new();
            for i in 0..n {
                let raw = records.bytes(i, offset, size);
                let end = raw.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
                b.append_value(&raw[..end]);
            }
            Arc::new(b.finish())
        }
        ('O', _) => {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                let raw = records.bytes(i, offset, size);
                let pointer =
                    usize::from_ne_bytes(raw.try_into().unwrap()) as *mut pyo3::ffi::PyObject;
                let value = if pointer.is_null() {
                    Value::Null
                } else {
                    // SAFETY: an object field holds a reference owned by the array, alive while
                    // we hold the GIL and the array.
                    let object = unsafe { Bound::from_borrowed_ptr(py, pointer) };
                    value_of(py, &object, column)?
                };
                values.push(value);
            }
            objects_to_array(py, values, column)?
        }
        _ => {
            return Err(errors::to_py(
                py,
                paiio::Error::Storage(paiio_storage::Error::type_mismatch(
                    name,
                    format!("numpy fields of kind '{kind}' ({size} bytes) cannot be written"),
                )),
            ));
        }
    })
}

/// Appends rows to a table or partition; visible at `close()`.
#[pyclass(frozen, module = "paiio._native")]
pub struct Writer {
    inner: Mutex<Option<TableWriter>>,
    /// `(name, MaxCompute type)` of the table columns (data, then partition).
    columns: Vec<(String, String)>,
    pid: u32,
}

impl Writer {
    fn with_writer<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut TableWriter) -> paiio::Result<T> + Send,
    ) -> PyResult<T> {
        if self.pid != std::process::id() {
            return Err(errors::invalid(
                py,
                "writer",
                "this writer was opened before fork(); open a new one in the child process",
            ));
        }
        let inner = &self.inner;
        py.detach(|| match inner.lock().as_mut() {
            Some(w) => f(w),
            None => Err(paiio::Error::Closed("TableWriter")),
        })
        .py_err(py)
    }

    fn write_batch(&self, py: Python<'_>, batch: RecordBatch, indices: Vec<usize>) -> PyResult<()> {
        self.with_writer(py, move |w| w.write(&batch, &indices))
    }
}

fn batch_of(py: Python<'_>, arrays: Vec<ArrayRef>, rows: usize) -> PyResult<RecordBatch> {
    let fields: Vec<Field> = arrays
        .iter()
        .enumerate()
        .map(|(i, a)| Field::new(format!("c{i}"), a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| errors::arrow(py, "building a batch", e))
}

#[pymethods]
impl Writer {
    #[new]
    #[pyo3(signature = (table, slice_id = 0))]
    fn new(py: Python<'_>, table: String, slice_id: u64) -> PyResult<Writer> {
        let writer = py
            .detach(move || TableWriter::open(&table, slice_id))
            .py_err(py)?;
        let columns = writer
            .schema()
            .all_columns()
            .map(|c| (c.name.clone(), c.ty.to_string()))
            .collect();
        Ok(Writer {
            inner: Mutex::new(Some(writer)),
            columns,
            pid: std::process::id(),
        })
    }

    /// Writes rows (a sequence of sequences, one value per index) to the table columns at
    /// `indices`.
    fn write_rows(
        &self,
        py: Python<'_>,
        rows: &Bound<'_, PyAny>,
        indices: Vec<usize>,
    ) -> PyResult<()> {
        let mut columns: Vec<Vec<Value>> = vec![Vec::new(); indices.len()];
        let mut count = 0;
        for (r, row) in rows.try_iter()?.enumerate() {
            let row = row?;
            let mut width = 0;
            for (j, v) in row.try_iter()?.enumerate() {
                if j >= indices.len() {
                    width = j + 1;
                    break;
                }
                columns[j].push(value_of(py, &v?, indices[j])?);
                width = j + 1;
            }
            if width != indices.len() {
                let len = row.len().unwrap_or(width);
                return Err(errors::invalid(
                    py,
                    "values",
                    format!("row {r} has {len} values for {} indices", indices.len()),
                ));
            }
            count += 1;
        }
        let arrays = columns
            .into_iter()
            .zip(&indices)
            .map(|(values, &index)| objects_to_array(py, values, index))
            .collect::<PyResult<Vec<_>>>()?;
        let batch = batch_of(py, arrays, count)?;
        self.write_batch(py, batch, indices)
    }

    /// Writes a 1-D C-contiguous numpy structured array: field `i` goes to `indices[i]`.
    fn write_struct(
        &self,
        py: Python<'_>,
        array: &Bound<'_, PyAny>,
        indices: Vec<usize>,
    ) -> PyResult<()> {
        let untyped = array.cast::<PyUntypedArray>()?;
        if untyped.ndim() != 1 || !untyped.is_c_contiguous() {
            return Err(errors::invalid(
                py,
                "values",
                "expected a 1-D C-contiguous structured array",
            ));
        }
        let dtype = array.getattr("dtype")?;
        let names: Vec<String> = match dtype.getattr("names")? {
            n if n.is_none() => {
                return Err(errors::invalid(
                    py,
                    "values",
                    "the array is not a structured array",
                ));
            }
            n => n.extract()?,
        };
        if names.len() != indices.len() {
            return Err(errors::invalid(
                py,
                "indices",
                format!(
                    "{} indices for {} fields ({})",
                    indices.len(),
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        let fields = dtype.getattr("fields")?;
        let records = Records {
            // SAFETY: the array's data pointer; the array outlives this call.
            base: unsafe { (*untyped.as_array_ptr()).fields.data as *const u8 },
            itemsize: dtype.getattr("itemsize")?.extract()?,
            rows: untyped.len(),
        };
        let mut arrays = Vec::with_capacity(names.len());
        for (name, &index) in names.iter().zip(&indices) {
            let field = fields.get_item(name)?;
            let field_dtype = field.get_item(0)?;
            let offset: usize = field.get_item(1)?.extract()?;
            let kind: String = field_dtype.getattr("kind")?.extract()?;
            let size: usize = field_dtype.getattr("itemsize")?.extract()?;
            let byteorder: String = field_dtype.getattr("byteorder")?.extract()?;
            if byteorder == ">" {
                return Err(errors::invalid(
                    py,
                    "values",
                    format!("field `{name}` is big-endian"),
                ));
            }
            let kind = kind.chars().next().unwrap_or('?');
            arrays.push(field_array(py, &records, kind, size, offset, index, name)?);
        }
        let batch = batch_of(py, arrays, records.rows)?;
        self.write_batch(py, batch, indices)
    }

    /// Writes Arrow data (an object with `__arrow_c_stream__` or `__arrow_c_array__`):
    /// column `i` goes to `indices[i]`, or, without indices, to the table column of its name.
    #[pyo3(signature = (data, indices = None))]
    fn write_arrow(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        indices: Option<Vec<usize>>,
    ) -> PyResult<()> {
        let batches = arrow_ffi::import_batches(py, data)?;
        for batch in batches {
            let indices = match &indices {
                Some(i) => i.clone(),
                None => batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        self.columns
                            .iter()
                            .position(|(n, _)| n.eq_ignore_ascii_case(f.name()))
                            .ok_or_else(|| {
                                errors::invalid(
                                    py,
                                    "columns",
                                    format!("the table has no column `{}`", f.name()),
                                )
                            })
                    })
                    .collect::<PyResult<Vec<_>>>()?,
            };
            self.write_batch(py, batch, indices)?;
        }
        Ok(())
    }

    /// Sends what is buffered (nothing becomes visible).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with_writer(py, |w| w.flush())
    }

    /// Commits: every row of this writer becomes visible at once. Returns
    /// `{"rows": ..., "version": ...}`. Closing again returns the same.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.with_writer(py, |w| w.close())?;
        let d = PyDict::new(py);
        d.set_item("rows", info.rows)?;
        d.set_item("version", info.version)?;
        Ok(d)
    }

    /// Discards every row of this writer.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.with_writer(py, |w| w.abort())
    }

    /// Rows written so far.
    #[getter]
    fn rows_written(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_writer(py, |w| Ok(w.rows_written()))
    }

    /// `[(name, MaxCompute type)]` of the table columns: data columns, then partition
    /// columns (what `indices` count).
    #[getter]
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.columns
                .iter()
                .map(|(n, t)| PyTuple::new(py, [n, t]))
                .collect::<PyResult<Vec<_>>>()?,
        )
    }
}
