//! The Arrow PyCapsule interface, both ways: export batches (`__arrow_c_array__`) and
//! streams (`__arrow_c_stream__`), import any object that offers either.

use std::ffi::CStr;

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{Array, RecordBatch, RecordBatchReader, StructArray};
use arrow_schema::{ArrowError, SchemaRef};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods, PyTuple};

use crate::errors;

pub const SCHEMA_NAME: &CStr = c"arrow_schema";
pub const ARRAY_NAME: &CStr = c"arrow_array";
pub const STREAM_NAME: &CStr = c"arrow_array_stream";

/// A record batch that Arrow libraries (pyarrow, polars, ...) import without copying:
/// `pyarrow.record_batch(batch)`.
#[pyclass(frozen, module = "paiio._native", name = "ArrowBatch")]
pub struct ArrowBatch {
    pub batch: RecordBatch,
}

#[pymethods]
impl ArrowBatch {
    #[getter]
    fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    #[getter]
    fn num_columns(&self) -> usize {
        self.batch.num_columns()
    }

    fn __len__(&self) -> usize {
        self.batch.num_rows()
    }

    /// The schema as an `arrow_schema` capsule.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, &self.batch.schema())
    }

    /// `(schema capsule, array capsule)` of the batch as a struct array.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema; // The batch is offered as it is.
        let data = StructArray::from(self.batch.clone()).into_data();
        let (array, schema) = arrow_array::ffi::to_ffi(&data)
            .map_err(|e| errors::arrow(py, "exporting a batch", e))?;
        let schema = PyCapsule::new_with_value(py, schema, SCHEMA_NAME)?;
        let array = PyCapsule::new_with_value(py, array, ARRAY_NAME)?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }

    fn __repr__(&self) -> String {
        format!(
            "ArrowBatch(num_rows={}, schema={})",
            self.batch.num_rows(),
            self.batch.schema()
        )
    }
}

pub fn schema_capsule<'py>(py: Python<'py>, schema: &SchemaRef) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi = FFI_ArrowSchema::try_from(schema.as_ref())
        .map_err(|e| errors::arrow(py, "exporting a schema", e))?;
    PyCapsule::new_with_value(py, ffi, SCHEMA_NAME)
}

/// Wraps a batch reader in an `arrow_array_stream` capsule (the consumer moves the stream
/// out; an unconsumed stream is released with the capsule).
pub fn stream_capsule<'py>(
    py: Python<'py>,
    reader: Box<dyn RecordBatchReader + Send>,
) -> PyResult<Bound<'py, PyCapsule>> {
    PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(reader), STREAM_NAME)
}

/// A boxed iterator of batches with a schema.
pub struct BatchIter<I> {
    pub schema: SchemaRef,
    pub iter: I,
}

impl<I: Iterator<Item = Result<RecordBatch, ArrowError>>> Iterator for BatchIter<I> {
    type Item = Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.iter.next()
    }
}

impl<I: Iterator<Item = Result<RecordBatch, ArrowError>>> RecordBatchReader for BatchIter<I> {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

fn capsule_pointer<'py>(
    capsule: &Bound<'py, PyAny>,
    name: &CStr,
) -> PyResult<*mut std::ffi::c_void> {
    let capsule = capsule.cast::<PyCapsule>()?;
    let pointer = capsule.pointer_checked(Some(name))?;
    Ok(pointer.as_ptr())
}

/// The batches of an object with `__arrow_c_stream__` or `__arrow_c_array__` (a pyarrow
/// Table, RecordBatch, RecordBatchReader, a polars DataFrame, an [`ArrowBatch`]...).
pub fn import_batches(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Vec<RecordBatch>> {
    if data.hasattr("__arrow_c_stream__")? {
        let capsule = data.call_method0("__arrow_c_stream__")?;
        let pointer = capsule_pointer(&capsule, STREAM_NAME)? as *mut FFI_ArrowArrayStream;
        // SAFETY: a valid stream owned by the capsule: move it out, leaving a released one.
        let stream = unsafe { std::ptr::replace(pointer, FFI_ArrowArrayStream::empty()) };
        let reader = RecordBatchStreamReader::try_new(stream)
            .map_err(|e| errors::arrow(py, "importing an Arrow stream", e))?;
        return reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| errors::arrow(py, "reading an Arrow stream", e));
    }
    if data.hasattr("__arrow_c_array__")? {
        let pair = data.call_method0("__arrow_c_array__")?;
        let pair = pair.cast::<PyTuple>()?;
        let schema_capsule = pair.get_item(0)?;
        let array_capsule = pair.get_item(1)?;
        let schema = capsule_pointer(&schema_capsule, SCHEMA_NAME)? as *const FFI_ArrowSchema;
        let array = capsule_pointer(&array_capsule, ARRAY_NAME)? as *mut FFI_ArrowArray;
        // SAFETY: valid structures owned by the capsules; the array is moved out.
        let data = unsafe {
            let array = std::ptr::replace(array, FFI_ArrowArray::empty());
            arrow_array::ffi::from_ffi(array, &*schema)
        }
        .map_err(|e| errors::arrow(py, "importing an Arrow array", e))?;
        let array = arrow_array::make_array(data);
        let Some(structs) = array.as_any().downcast_ref::<StructArray>() else {
            return Err(errors::invalid(
                py,
                "data",
                format!(
                    "an Arrow array of {} is not a record batch (expected a struct array)",
                    array.data_type()
                ),
            ));
        };
        return Ok(vec![RecordBatch::from(structs.clone())]);
    }
    Err(errors::invalid(
        py,
        "data",
        format!(
            "{} has neither __arrow_c_stream__ nor __arrow_c_array__",
            data.get_type().name()?
        ),
    ))
}
