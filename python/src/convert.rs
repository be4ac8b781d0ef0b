//! Arrow batches to numpy: structured arrays (one record per row) and dicts of column arrays.
//!
//! Each column is first *prepared*: brought to one of the numpy kinds below (dates and times
//! become integer counts, decimals and nested values text, exactly as `paiio::coerce`
//! defines them), remembering where the original data was NULL. NULL becomes 0 in integer
//! and bool columns, NaN in float columns and `None` in object columns (record_defaults,
//! when given, have already replaced every NULL).
//!
//! Numeric columns are copied without the GIL (in parallel over row ranges for big
//! batches); text and binary columns become Python `str`/`bytes` objects in one pass.

use std::ffi::c_char;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;
use numpy::ndarray::ArrayView1;
use numpy::{Element, PyArray1, PyUntypedArray, PyUntypedArrayMethods};
use paiio::coerce::{self, RecordDefault};
use paiio_storage::types::OdpsType;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// The numpy kind of a prepared column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    Bool,
    /// Python `str` objects.
    Str,
    /// Python `bytes` objects.
    Bytes,
    /// Fixed-width bytes, numpy `S<n>` with `n` the batch's longest value: a text column
    /// without one Python object per value (prepared as an Arrow `FixedSizeBinary`).
    Fixed,
}

impl Kind {
    /// The numpy type string.
    pub fn numpy_format(self) -> &'static str {
        match self {
            Kind::I8 => "<i1",
            Kind::I16 => "<i2",
            Kind::I32 => "<i4",
            Kind::I64 => "<i8",
            Kind::U8 => "<u1",
            Kind::U16 => "<u2",
            Kind::U32 => "<u4",
            Kind::U64 => "<u8",
            Kind::F32 => "<f4",
            Kind::F64 => "<f8",
            Kind::Bool => "?",
            Kind::Str | Kind::Bytes => "O",
            Kind::Fixed => "S",
        }
    }

    /// Bytes per value in a record.
    pub fn size(self) -> usize {
        match self {
            Kind::I8 | Kind::U8 | Kind::Bool | Kind::Fixed => 1,
            Kind::I16 | Kind::U16 => 2,
            Kind::I32 | Kind::U32 | Kind::F32 => 4,
            Kind::I64 | Kind::U64 | Kind::F64 => 8,
            Kind::Str | Kind::Bytes => std::mem::size_of::<*mut pyo3::ffi::PyObject>(),
        }
    }

    pub fn is_object(self) -> bool {
        matches!(self, Kind::Str | Kind::Bytes)
    }

    /// Numbers or bools: what a tensor can hold.
    pub fn is_numeric(self) -> bool {
        !matches!(self, Kind::Str | Kind::Bytes | Kind::Fixed)
    }

    /// The Arrow type numeric data of this kind has.
    fn arrow_type(self) -> Option<DataType> {
        Some(match self {
            Kind::I8 => DataType::Int8,
            Kind::I16 => DataType::Int16,
            Kind::I32 => DataType::Int32,
            Kind::I64 => DataType::Int64,
            Kind::U8 => DataType::UInt8,
            Kind::U16 => DataType::UInt16,
            Kind::U32 => DataType::UInt32,
            Kind::U64 => DataType::UInt64,
            Kind::F32 => DataType::Float32,
            Kind::F64 => DataType::Float64,
            _ => return None,
        })
    }
}

/// The kind a column of MaxCompute type `ty` (and Arrow type `dt`) is delivered as; `text`
/// (`Str`, `Bytes` or `Fixed`) is the kind of text columns (binary ones are `Bytes`).
pub fn kind_of(ty: Option<&OdpsType>, dt: &DataType, text: Kind) -> Kind {
    match dt {
        DataType::Int8 => Kind::I8,
        DataType::Int16 => Kind::I16,
        DataType::Int32 => Kind::I32,
        DataType::Int64 => Kind::I64,
        DataType::UInt8 => Kind::U8,
        DataType::UInt16 => Kind::U16,
        DataType::UInt32 => Kind::U32,
        DataType::UInt64 => Kind::U64,
        DataType::Float16 | DataType::Float32 => Kind::F32,
        DataType::Float64 => Kind::F64,
        DataType::Boolean => Kind::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => text,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Kind::Bytes,
        _ => match ty {
            Some(OdpsType::Date | OdpsType::IntervalYearMonth) => Kind::I32,
            Some(
                OdpsType::DateTime
                | OdpsType::Timestamp
                | OdpsType::TimestampNtz
                | OdpsType::IntervalDayTime,
            ) => Kind::I64,
            _ => text,
        },
    }
}

/// A column ready to become numpy data.
pub struct Prepared {
    pub kind: Kind,
    /// Of the kind's Arrow type (numeric, bool), or any text/binary type (objects).
    pub array: ArrayRef,
    /// Where the original value was NULL.
    pub nulls: Option<NullBuffer>,
}

/// Prepares every column of `batch`. `types` are the MaxCompute types of the columns (when
/// known), which decide how dates, decimals and nested values are delivered.
pub fn prepare(
    batch: &RecordBatch,
    kinds: &[Kind],
    types: Option<&[OdpsType]>,
) -> paiio::Result<Vec<Prepared>> {
    let schema = batch.schema();
    (0..batch.num_columns())
        .map(|i| {
            let array = batch.column(i);
            let kind = kinds[i];
            let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
            let ty = types.map(|t| &t[i]);
            let name = schema.field(i).name();
            let array = match kind.arrow_type() {
                Some(dt) if array.data_type() == &dt => array.clone(),
                Some(dt) => match ty {
                    Some(ty) if !array.data_type().is_numeric() => {
                        let default = if dt == DataType::Int32 {
                            RecordDefault::Int32(0)
                        } else {
                            RecordDefault::Int64(0)
                        };
                        coerce::coerce_column(array, name, ty, &default, 0)?
                    }
                    _ => cast(array, &dt)?,
                },
                None if kind == Kind::Bool => array.clone(),
                None if kind == Kind::Fixed => {
                    fixed_width(&text_column(array, ty, name)?, nulls.as_ref(), name)?
                }
                None => text_column(array, ty, name)?,
            };
            Ok(Prepared { kind, array, nulls })
        })
        .collect()
}

/// A text or binary column as it is, or another column as text (`paiio::coerce`'s rules).
fn text_column(array: &ArrayRef, ty: Option<&OdpsType>, name: &str) -> paiio::Result<ArrayRef> {
    Ok(match array.data_type() {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => array.clone(),
        DataType::FixedSizeBinary(_) => cast(array, &DataType::Binary)?,
        _ => match ty {
            Some(ty) => {
                coerce::coerce_column(array, name, ty, &RecordDefault::String(String::new()), 0)?
            }
            None => cast(array, &DataType::Utf8)?,
        },
    })
}

/// The largest fixed-width column (bytes) made without a question: past it, one long value
/// may not pad a batch to more than [`FIXED_PADDING`] times its text.
const FIXED_FREE: usize = 64 << 20;
const FIXED_PADDING: usize = 8;

/// A text column as a `FixedSizeBinary` of its longest value's width (at least 1), shorter
/// values padded with zero bytes: numpy's `S<n>` layout. NULL, a value ending in a zero byte
/// (numpy would drop it) and padding out of all proportion are errors naming the column.
fn fixed_width(
    array: &ArrayRef,
    nulls: Option<&NullBuffer>,
    name: &str,
) -> paiio::Result<ArrayRef> {
    let refuse = |message: String| paiio::Error::invalid(format!("column {name}"), message);
    if let Some(nulls) = nulls {
        return Err(refuse(format!(
            "{} NULL values, which fixed-width strings (strings='fixed') cannot hold: give \
             record_defaults, or read the column as objects (strings='str')",
            nulls.null_count()
        )));
    }
    let mut width = 1;
    let mut total = 0;
    for_each_text(array, |_, v| {
        width = width.max(v.len());
        total += v.len();
    })?;
    let rows = array.len();
    let size = rows
        .checked_mul(width)
        .filter(|&n| n <= FIXED_FREE.max(FIXED_PADDING.saturating_mul(total)))
        .ok_or_else(|| {
            refuse(format!(
                "a value of {width} bytes would pad {rows} values ({total} bytes of text) to \
                 {width} bytes each: read the column as objects (strings='str')"
            ))
        })?;
    let mut out = vec![0u8; size];
    let mut bad = None;
    for_each_text(array, |i, v| {
        if v.last() == Some(&0) {
            bad.get_or_insert(i);
        }
        out[i * width..i * width + v.len()].copy_from_slice(v);
    })?;
    if let Some(i) = bad {
        return Err(refuse(format!(
            "the value of row {i} ends with a zero byte, which a fixed-width numpy string \
             drops: read the column as objects (strings='str' or 'bytes')"
        )));
    }
    let width = i32::try_from(width).map_err(|_| refuse(format!("a value of {width} bytes")))?;
    let fixed = arrow_array::FixedSizeBinaryArray::try_new(width, out.into(), None)
        .map_err(|e| paiio_storage::Error::arrow(format!("column {name} as fixed width"), e))?;
    Ok(Arc::new(fixed))
}

/// Calls `f(row, bytes)` for each value of a text or binary array (a NULL's bytes are what
/// the array holds there, usually none) until `f` fails; `None` if the array is not text.
fn try_each_text<E>(
    array: &ArrayRef,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), E>,
) -> Option<Result<(), E>> {
    macro_rules! each {
        ($a:expr) => {{
            let a = $a;
            (0..a.len()).try_for_each(|i| f(i, AsRef::<[u8]>::as_ref(a.value(i))))
        }};
    }
    Some(match array.data_type() {
        DataType::Utf8 => each!(array.as_string::<i32>()),
        DataType::LargeUtf8 => each!(array.as_string::<i64>()),
        DataType::Utf8View => each!(array.as_string_view()),
        DataType::Binary => each!(array.as_binary::<i32>()),
        DataType::LargeBinary => each!(array.as_binary::<i64>()),
        DataType::BinaryView => each!(array.as_binary_view()),
        _ => return None,
    })
}

/// [`try_each_text`] with an `f` that cannot fail.
fn for_each_text(array: &ArrayRef, mut f: impl FnMut(usize, &[u8])) -> paiio::Result<()> {
    match try_each_text(array, |i, v| {
        f(i, v);
        Ok::<(), std::convert::Infallible>(())
    }) {
        Some(_) => Ok(()),
        None => Err(paiio::Error::invalid(
            "fixed-width strings",
            format!("internal: {} is not text", array.data_type()),
        )),
    }
}

fn cast(array: &ArrayRef, to: &DataType) -> paiio::Result<ArrayRef> {
    arrow_cast::cast(array, to).map_err(|e| {
        paiio_storage::Error::arrow(format!("converting {} to {to}", array.data_type()), e).into()
    })
}

/// A raw pointer that may cross into `py.detach` (the memory is owned by a numpy array the
/// caller keeps alive).
#[derive(Clone, Copy)]
struct RawPtr(*mut u8);
// SAFETY: the pointee is a numpy buffer kept alive by the caller for the whole call, and
// every thread writes disjoint bytes of it.
unsafe impl Send for RawPtr {}
unsafe impl Sync for RawPtr {}

/// Rows per parallel task of the numeric copy.
const ROWS_PER_TASK: usize = 16384;

/// Builds a numpy structured array of `batch` with `dtype` (whose fields are the prepared
/// columns' kinds at `offsets`, records of `itemsize` bytes).
pub fn to_struct<'py>(
    py: Python<'py>,
    columns: &[Prepared],
    dtype: &Bound<'py, PyAny>,
    offsets: &[usize],
    itemsize: usize,
    rows: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let array = new_records(py, dtype, rows)?;
    if rows == 0 {
        return Ok(array);
    }
    let untyped = array.cast::<PyUntypedArray>()?;
    // SAFETY: a freshly made C-contiguous array of `rows` records of `itemsize` bytes.
    let base = RawPtr(unsafe { (*untyped.as_array_ptr()).fields.data as *mut u8 });
    debug_assert_eq!(untyped.len(), rows);

    let numeric: Vec<(usize, &Prepared)> = columns
        .iter()
        .zip(offsets)
        .filter(|(c, _)| !c.kind.is_object())
        .map(|(c, &o)| (o, c))
        .collect();
    if !numeric.is_empty() {
        py.detach(|| {
            let fill = |start: usize, end: usize| {
                for (offset, column) in &numeric {
                    // SAFETY: rows start..end of the buffer, columns at their offsets: in bounds,
                    // and no other task writes these bytes.
                    unsafe { write_numeric(base, itemsize, *offset, column, start, end) };
                }
            };
            if rows >= 2 * ROWS_PER_TASK {
                use rayon::prelude::*;
                paiio::runtime::cpu_pool().install(|| {
                    (0..rows.div_ceil(ROWS_PER_TASK))
                        .into_par_iter()
                        .for_each(|t| {
                            let start = t * ROWS_PER_TASK;
                            fill(start, (start + ROWS_PER_TASK).min(rows));
                        })
                });
            } else {
                fill(0, rows);
            }
        });
    }
    for (column, &offset) in columns.iter().zip(offsets) {
        if column.kind.is_object() {
            // SAFETY: object fields of the array, which numpy initialised to None.
            unsafe { write_objects(py, base, itemsize, offset, column, rows)? };
        }
    }
    Ok(array)
}

/// A new 1-D array of `rows` records of `dtype`, zero-filled.
///
/// Not `numpy.empty`: for a structured dtype with object fields it stores None in every
/// field of every record through a generic per-item loop, which costs more than everything
/// else a read does. Here the memory is zeroed (NULL object fields, which numpy reads and
/// frees as None) and every field is written by the caller.
fn new_records<'py>(
    py: Python<'py>,
    dtype: &Bound<'py, PyAny>,
    rows: usize,
) -> PyResult<Bound<'py, PyAny>> {
    use numpy::npyffi::{self, PY_ARRAY_API, npy_intp};
    let descr = dtype.cast::<numpy::PyArrayDescr>()?;
    let mut dims = [rows as npy_intp];
    // SAFETY: the documented constructor with a new reference to the dtype (it is stolen),
    // one dimension, default strides and numpy-allocated data. Dtypes with object fields
    // carry NPY_NEEDS_INIT, for which numpy allocates zeroed memory.
    let array = unsafe {
        pyo3::ffi::Py_INCREF(descr.as_ptr());
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type),
            descr.as_ptr() as *mut npyffi::PyArray_Descr,
            1,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, ptr)?
    };
    Ok(array)
}

/// Writes rows `start..end` of a numeric or bool column into the records.
unsafe fn write_numeric(
    base: RawPtr,
    itemsize: usize,
    offset: usize,
    column: &Prepared,
    start: usize,
    end: usize,
) {
    macro_rules! prim {
        ($t:ty, $null:expr) => {{
            let values = column.array.as_primitive::<$t>().values();
            for i in start..end {
                let v = match &column.nulls {
                    Some(n) if n.is_null(i) => $null,
                    _ => values[i],
                };
                // SAFETY: in bounds (see the caller); numpy records need not be aligned.
                unsafe {
                    (base.0.add(i * itemsize + offset) as *mut <$t as ArrowPrimitiveType>::Native)
                        .write_unaligned(v)
                };
            }
        }};
    }
    match column.kind {
        Kind::I8 => prim!(Int8Type, 0),
        Kind::I16 => prim!(Int16Type, 0),
        Kind::I32 => prim!(Int32Type, 0),
        Kind::I64 => prim!(Int64Type, 0),
        Kind::U8 => prim!(UInt8Type, 0),
        Kind::U16 => prim!(UInt16Type, 0),
        Kind::U32 => prim!(UInt32Type, 0),
        Kind::U64 => prim!(UInt64Type, 0),
        Kind::F32 => prim!(Float32Type, f32::NAN),
        Kind::F64 => prim!(Float64Type, f64::NAN),
        Kind::Bool => {
            let values = column.array.as_boolean();
            for i in start..end {
                let v = values.value(i) && column.nulls.as_ref().is_none_or(|n| n.is_valid(i));
                // SAFETY: as above.
                unsafe { *base.0.add(i * itemsize + offset) = v as u8 };
            }
        }
        Kind::Str | Kind::Bytes | Kind::Fixed => {}
    }
}

/// Calls `f(row, Some(bytes))` for each value of a text or binary column (`None` for NULL).
fn for_each_value(
    column: &Prepared,
    mut f: impl FnMut(usize, Option<&[u8]>) -> PyResult<()>,
) -> PyResult<()> {
    let valid = |i: usize| column.nulls.as_ref().is_none_or(|n| n.is_valid(i));
    try_each_text(&column.array, |i, v| f(i, valid(i).then_some(v))).unwrap_or_else(|| {
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "internal: {} is not text or binary",
            column.array.data_type()
        )))
    })
}

/// A new reference to a Python `str` (valid UTF-8 expected) or `bytes` of `value`.
pub fn new_object(
    py: Python<'_>,
    kind: Kind,
    value: Option<&[u8]>,
) -> PyResult<*mut pyo3::ffi::PyObject> {
    let Some(value) = value else {
        return Ok(py.None().into_ptr());
    };
    // SAFETY: plain C API constructors with a valid pointer and length; the GIL is held.
    let object = unsafe {
        match kind {
            Kind::Str => pyo3::ffi::PyUnicode_FromStringAndSize(
                value.as_ptr() as *const c_char,
                value.len() as pyo3::ffi::Py_ssize_t,
            ),
            _ => pyo3::ffi::PyBytes_FromStringAndSize(
                value.as_ptr() as *const c_char,
                value.len() as pyo3::ffi::Py_ssize_t,
            ),
        }
    };
    if object.is_null() {
        return Err(PyErr::fetch(py));
    }
    Ok(object)
}

/// Fills an object field of every record.
unsafe fn write_objects(
    py: Python<'_>,
    base: RawPtr,
    itemsize: usize,
    offset: usize,
    column: &Prepared,
    rows: usize,
) -> PyResult<()> {
    for_each_value(column, |i, value| {
        if i >= rows {
            return Ok(());
        }
        let object = new_object(py, column.kind, value)?;
        // SAFETY: the field holds a reference (None) owned by the array: release it and
        // store the new one.
        unsafe {
            let slot = base.0.add(i * itemsize + offset) as *mut *mut pyo3::ffi::PyObject;
            let old = slot.read_unaligned();
            slot.write_unaligned(object);
            pyo3::ffi::Py_XDECREF(old);
        }
        Ok(())
    })
}

/// Keeps Arrow memory alive for numpy arrays that borrow it.
#[pyclass(frozen, module = "paiio._native")]
pub struct ArrowOwner {
    _array: ArrayRef,
}

fn primitive_array<'py, T>(
    py: Python<'py>,
    column: &Prepared,
    null: T::Native,
) -> PyResult<Bound<'py, PyAny>>
where
    T: ArrowPrimitiveType,
    T::Native: Element,
{
    let values = column.array.as_primitive::<T>();
    match &column.nulls {
        None => {
            // Zero-copy: numpy borrows the Arrow buffer, kept alive by an owner object.
            let owner = Bound::new(
                py,
                ArrowOwner {
                    _array: column.array.clone(),
                },
            )?;
            let view = ArrayView1::from(values.values().as_ref());
            // SAFETY: the buffer is immutable and lives as long as `owner`, the array's base.
            Ok(
                unsafe { PyArray1::<T::Native>::borrow_from_array(&view, owner.into_any()) }
                    .into_any(),
            )
        }
        Some(nulls) => {
            let data: Vec<T::Native> = values
                .values()
                .iter()
                .enumerate()
                .map(|(i, &v)| if nulls.is_null(i) { null } else { v })
                .collect();
            Ok(PyArray1::from_vec(py, data).into_any())
        }
    }
}

/// A fixed-width column as a numpy `S<n>` array sharing the Arrow memory.
fn fixed_array<'py>(py: Python<'py>, column: &Prepared) -> PyResult<Bound<'py, PyAny>> {
    let a = column.array.as_fixed_size_binary();
    let width = a.value_length() as usize;
    let bytes = &a.value_data()[..a.len() * width];
    let owner = Bound::new(
        py,
        ArrowOwner {
            _array: column.array.clone(),
        },
    )?;
    let view = ArrayView1::from(bytes);
    // SAFETY: the buffer is immutable and lives as long as `owner`, the array's base.
    let raw = unsafe { PyArray1::<u8>::borrow_from_array(&view, owner.into_any()) };
    raw.call_method1("view", (format!("S{width}"),))
}

/// One column as a 1-D numpy array (zero-copy for numeric columns without NULLs, and for
/// fixed-width strings).
pub fn to_numpy<'py>(py: Python<'py>, column: &Prepared) -> PyResult<Bound<'py, PyAny>> {
    Ok(match column.kind {
        Kind::I8 => primitive_array::<Int8Type>(py, column, 0)?,
        Kind::I16 => primitive_array::<Int16Type>(py, column, 0)?,
        Kind::I32 => primitive_array::<Int32Type>(py, column, 0)?,
        Kind::I64 => primitive_array::<Int64Type>(py, column, 0)?,
        Kind::U8 => primitive_array::<UInt8Type>(py, column, 0)?,
        Kind::U16 => primitive_array::<UInt16Type>(py, column, 0)?,
        Kind::U32 => primitive_array::<UInt32Type>(py, column, 0)?,
        Kind::U64 => primitive_array::<UInt64Type>(py, column, 0)?,
        Kind::F32 => primitive_array::<Float32Type>(py, column, f32::NAN)?,
        Kind::F64 => primitive_array::<Float64Type>(py, column, f64::NAN)?,
        Kind::Bool => {
            let values = column.array.as_boolean();
            let data: Vec<bool> = (0..values.len())
                .map(|i| values.value(i) && column.nulls.as_ref().is_none_or(|n| n.is_valid(i)))
                .collect();
            PyArray1::from_vec(py, data).into_any()
        }
        Kind::Fixed => fixed_array(py, column)?,
        Kind::Str | Kind::Bytes => {
            let mut objects: Vec<Py<PyAny>> = Vec::with_capacity(column.array.len());
            for_each_value(column, |_, value| {
                let object = new_object(py, column.kind, value)?;
                // SAFETY: a new, owned reference.
                objects.push(unsafe { Bound::from_owned_ptr(py, object) }.unbind());
                Ok(())
            })?;
            PyArray1::from_vec(py, objects).into_any()
        }
    })
}

/// The columns as a dict `name -> 1-D numpy array`, in column order.
pub fn to_dict<'py>(
    py: Python<'py>,
    names: &[String],
    columns: &[Prepared],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, column) in names.iter().zip(columns) {
        dict.set_item(name, to_numpy(py, column)?)?;
    }
    Ok(dict)
}

/// The numpy dtype (and field offsets and record size) for columns of `kinds`.
pub fn struct_dtype<'py>(
    py: Python<'py>,
    names: &[String],
    kinds: &[Kind],
) -> PyResult<(Bound<'py, PyAny>, Vec<usize>, usize)> {
    if kinds.contains(&Kind::Fixed) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "structured arrays need one width per text field for the whole read: read \
             fixed-width strings as batches of columns (read_batch), or text as objects",
        ));
    }
    let mut offsets = Vec::with_capacity(kinds.len());
    // Every field at a multiple of its size, like numpy's `align=True` (and C structs):
    // numpy handles unaligned object fields on a slow path (several times slower to fill
    // and free).
    let mut at: usize = 0;
    let mut align: usize = 1;
    for k in kinds {
        at = at.next_multiple_of(k.size());
        offsets.push(at);
        at += k.size();
        align = align.max(k.size());
    }
    let at = at.next_multiple_of(align);
    let spec = PyDict::new(py);
    spec.set_item("names", PyList::new(py, names)?)?;
    spec.set_item(
        "formats",
        PyList::new(py, kinds.iter().map(|k| k.numpy_format()))?,
    )?;
    spec.set_item("offsets", PyList::new(py, &offsets)?)?;
    spec.set_item("itemsize", at.max(1))?;
    spec.set_item("aligned", true)?;
    let dtype = py.import("numpy")?.getattr("dtype")?.call1((spec,))?;
    Ok((dtype, offsets, at.max(1)))
}
