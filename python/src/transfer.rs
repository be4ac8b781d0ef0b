//! Column batches packed into one flat buffer (a shared-memory slot, or bytes), for
//! `paiio.torch.DataLoader` workers: a worker packs the prepared Arrow columns without making
//! a single Python object ([`PackedBatch::write`]), the training process makes the batch
//! from the buffer: [`receive`] (a worker's shared-memory slots, a bundle of batches in one
//! call) leaves numeric columns where they are, as arrays that lease the slot until the last
//! of them is dropped; [`unpack`] (bytes) copies them. Text columns become Python objects
//! built from Arrow-style offsets and bytes; fixed-width ones (numpy `S<n>`) are passed like
//! numeric columns.
//!
//! Layout (little-endian `u64` words; every section starts at a multiple of 8 bytes from
//! the start of the packed batch):
//!
//! ```text
//! magic, rows, columns, total bytes
//! per column: kind, a, b, c, d
//!     numeric, bool: a = values at, b = bytes (bool: one byte per row, 0 or 1)
//!     fixed-width:   a = values at, b = bytes (rows * c), c = width (at least 1)
//!     str, bytes:    a = offsets at (rows + 1 i64, from 0), b = data at, c = data bytes,
//!                    d = validity at (one byte per row, 0: NULL) or u64::MAX (no NULL)
//! sections
//! ```
//!
//! [`unpack`] and [`receive`] read a buffer another process wrote: every offset and length is
//! checked, and a bad one is a `ValueError`, never a read out of bounds.

use std::sync::atomic::{AtomicU32, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrowPrimitiveType, OffsetSizeTrait};
use arrow_schema::DataType;
use numpy::ndarray::ArrayView1;
use numpy::{Element, PyArray1, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::convert::{self, Kind, Prepared};

const MAGIC: u64 = u64::from_le_bytes(*b"PAIIOPB1");
const HEADER_WORDS: usize = 4;
const COLUMN_WORDS: usize = 5;
const NO_VALIDITY: u64 = u64::MAX;
/// At most this many columns in a packed batch (a bad header cannot make us allocate more).
const MAX_COLUMNS: u64 = 1 << 16;

const KINDS: [Kind; 14] = [
    Kind::I8,
    Kind::I16,
    Kind::I32,
    Kind::I64,
    Kind::U8,
    Kind::U16,
    Kind::U32,
    Kind::U64,
    Kind::F32,
    Kind::F64,
    Kind::Bool,
    Kind::Str,
    Kind::Bytes,
    Kind::Fixed,
];

fn kind_code(kind: Kind) -> u64 {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u64
}

fn align8(n: usize) -> usize {
    n.next_multiple_of(8)
}

/// Where a text column's values come from.
enum Text<'a> {
    /// Offset-based Arrow data: the offsets (rebased when written) and the bytes they cover.
    Offsets { offsets: Vec<u64>, data: &'a [u8] },
    /// Any other text or binary array, value by value.
    Values(Vec<Option<&'a [u8]>>),
}

fn offsets_of<O: OffsetSizeTrait>(offsets: &[O]) -> (Vec<u64>, usize, usize) {
    let first = offsets.first().map_or(0, |o| o.as_usize());
    let last = offsets.last().map_or(0, |o| o.as_usize());
    let rebased = offsets
        .iter()
        .map(|o| (o.as_usize() - first) as u64)
        .collect();
    (rebased, first, last)
}

fn text_of(column: &Prepared) -> PyResult<Text<'_>> {
    let array = &column.array;
    let valid = |i: usize| column.nulls.as_ref().is_none_or(|n| n.is_valid(i));
    macro_rules! offsets {
        ($a:expr) => {{
            let a = $a;
            let data = a.values().as_slice();
            let (offsets, first, last) = offsets_of(a.value_offsets());
            Text::Offsets {
                offsets,
                data: &data[first..last],
            }
        }};
    }
    Ok(match array.data_type() {
        DataType::Utf8 => offsets!(array.as_string::<i32>()),
        DataType::LargeUtf8 => offsets!(array.as_string::<i64>()),
        DataType::Binary => offsets!(array.as_binary::<i32>()),
        DataType::LargeBinary => offsets!(array.as_binary::<i64>()),
        DataType::Utf8View => {
            let a = array.as_string_view();
            Text::Values(
                (0..a.len())
                    .map(|i| valid(i).then(|| a.value(i).as_bytes()))
                    .collect(),
            )
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            Text::Values((0..a.len()).map(|i| valid(i).then(|| a.value(i))).collect())
        }
        other => {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "internal: {other} is not text or binary"
            )));
        }
    })
}

impl Text<'_> {
    fn data_len(&self) -> usize {
        match self {
            Text::Offsets { data, .. } => data.len(),
            Text::Values(values) => values.iter().map(|v| v.map_or(0, <[u8]>::len)).sum(),
        }
    }
}

/// One column's place in the packed batch.
struct Section {
    kind: Kind,
    words: [u64; 4],
}

/// A batch read and prepared (sliced, coerced) by a [`crate::stream::BatchStream`], not yet
/// made into Python objects: `write` packs it into a buffer.
#[pyclass(frozen, module = "paiio._native")]
pub struct PackedBatch {
    columns: Vec<Prepared>,
    rows: usize,
    /// The packed size, and where each column goes.
    nbytes: usize,
    sections: Vec<Section>,
}

impl PackedBatch {
    pub fn new(columns: Vec<Prepared>, rows: usize) -> PyResult<PackedBatch> {
        let mut at = align8((HEADER_WORDS + COLUMN_WORDS * columns.len()) * 8);
        let mut sections = Vec::with_capacity(columns.len());
        for column in &columns {
            let kind = column.kind;
            let words = if kind.is_object() {
                let text = text_of(column)?;
                let offsets_at = at;
                at += align8((rows + 1) * 8);
                let data_at = at;
                let data_len = text.data_len();
                at += align8(data_len);
                let validity = match &column.nulls {
                    Some(_) => {
                        let v = at;
                        at += align8(rows);
                        v as u64
                    }
                    None => NO_VALIDITY,
                };
                [offsets_at as u64, data_at as u64, data_len as u64, validity]
            } else if kind == Kind::Fixed {
                let width = column.array.as_fixed_size_binary().value_length() as usize;
                let values_at = at;
                at += align8(rows * width);
                [values_at as u64, (rows * width) as u64, width as u64, 0]
            } else {
                let bytes = rows * kind.size();
                let values_at = at;
                at += align8(bytes);
                [values_at as u64, bytes as u64, 0, 0]
            };
            sections.push(Section { kind, words });
        }
        Ok(PackedBatch {
            columns,
            rows,
            nbytes: at,
            sections,
        })
    }
}

/// A contiguous `uint8` numpy array's memory.
fn bytes_of(array: &Bound<'_, PyAny>, writable: bool) -> PyResult<(*mut u8, usize)> {
    let array = array
        .cast::<PyArray1<u8>>()
        .map_err(|_| PyValueError::new_err("expected a 1-D uint8 numpy array"))?;
    let untyped: &Bound<'_, PyUntypedArray> = array.as_untyped();
    if !untyped.is_c_contiguous() {
        return Err(PyValueError::new_err("expected a contiguous uint8 array"));
    }
    if writable {
        // SAFETY: reading the flags of a live array.
        let flags = unsafe { (*untyped.as_array_ptr()).fields.flags };
        if flags & numpy::npyffi::NPY_ARRAY_WRITEABLE == 0 {
            return Err(PyValueError::new_err("the buffer is read-only"));
        }
    }
    Ok((array.data(), array.len()))
}

/// `at..at + len` within a buffer of `size` bytes, or an error.
fn within(at: usize, len: usize, size: usize, what: &str) -> PyResult<()> {
    match at.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(PyValueError::new_err(format!(
            "packed batch: {what} ({len} bytes at {at}) is outside the buffer ({size} bytes)"
        ))),
    }
}

/// Writes `len` bytes at `dst + at`.
///
/// # Safety
/// `dst` points to a buffer in which `at..at + src.len()` is in bounds and that nothing else
/// reads or writes meanwhile.
unsafe fn put(dst: *mut u8, at: usize, src: &[u8]) {
    // SAFETY: see above.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.add(at), src.len()) };
}

fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: plain numeric values (no padding), viewed as their bytes.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

#[pymethods]
impl PackedBatch {
    /// Bytes the packed batch takes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.nbytes
    }

    #[getter]
    fn rows(&self) -> usize {
        self.rows
    }

    /// Packs the batch into `buffer` (a writable 1-D uint8 numpy array, such as a view of a
    /// shared-memory mapping) at byte `offset` (a multiple of 8); returns the bytes written.
    fn write(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, offset: usize) -> PyResult<usize> {
        let (base, size) = bytes_of(buffer, true)?;
        if !offset.is_multiple_of(8) {
            return Err(PyValueError::new_err("offset must be a multiple of 8"));
        }
        within(offset, self.nbytes, size, "the batch")?;
        let dst = RawPtr(base);
        py.detach(|| self.write_at(dst, offset))?;
        Ok(self.nbytes)
    }

    /// The packed batch as bytes (where no shared memory is at hand).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let mut out = vec![0u8; self.nbytes];
        let dst = RawPtr(out.as_mut_ptr());
        py.detach(|| self.write_at(dst, 0))?;
        Ok(pyo3::types::PyBytes::new(py, &out))
    }
}

#[derive(Clone, Copy)]
struct RawPtr(*mut u8);
// SAFETY: the pointee is a buffer the caller keeps alive (and owns the writing of) for the
// whole call.
unsafe impl Send for RawPtr {}
unsafe impl Sync for RawPtr {}

impl PackedBatch {
    /// Writes the packed batch at `base + offset` (in bounds: checked by the caller).
    fn write_at(&self, base: RawPtr, offset: usize) -> PyResult<()> {
        let dst = base.0;
        let mut header = Vec::with_capacity(HEADER_WORDS + COLUMN_WORDS * self.sections.len());
        header.extend([
            MAGIC,
            self.rows as u64,
            self.sections.len() as u64,
            self.nbytes as u64,
        ]);
        for s in &self.sections {
            header.push(kind_code(s.kind));
            header.extend(s.words);
        }
        let header: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
        // SAFETY (every `put` below): sections lie within `nbytes`, checked against the
        // buffer by the caller.
        unsafe { put(dst, offset, &header) };
        for (column, s) in self.columns.iter().zip(&self.sections) {
            let at = |w: u64| offset + w as usize;
            if column.kind.is_object() {
                let text = text_of(column)?;
                let (offsets, data): (Vec<u64>, Vec<u8>) = match text {
                    Text::Offsets { offsets, data } => {
                        unsafe { put(dst, at(s.words[1]), data) };
                        (offsets, Vec::new())
                    }
                    Text::Values(values) => {
                        let mut offsets = Vec::with_capacity(values.len() + 1);
                        let mut data = Vec::with_capacity(text_len(&values));
                        offsets.push(0u64);
                        for v in &values {
                            data.extend_from_slice(v.unwrap_or_default());
                            offsets.push(data.len() as u64);
                        }
                        (offsets, data)
                    }
                };
                if !data.is_empty() {
                    unsafe { put(dst, at(s.words[1]), &data) };
                }
                let offsets: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
                unsafe { put(dst, at(s.words[0]), &offsets) };
                if let Some(nulls) = &column.nulls {
                    let validity: Vec<u8> =
                        (0..self.rows).map(|i| nulls.is_valid(i) as u8).collect();
                    unsafe { put(dst, at(s.words[3]), &validity) };
                }
            } else if column.kind == Kind::Fixed {
                let a = column.array.as_fixed_size_binary();
                let bytes = &a.value_data()[..s.words[1] as usize];
                unsafe { put(dst, at(s.words[0]), bytes) };
            } else {
                write_values(column, self.rows, dst, at(s.words[0]));
            }
        }
        Ok(())
    }
}

fn text_len(values: &[Option<&[u8]>]) -> usize {
    values.iter().map(|v| v.map_or(0, <[u8]>::len)).sum()
}

/// Writes a numeric or bool column's values (NULL as 0, NaN or false) at `dst + at`.
fn write_values(column: &Prepared, rows: usize, dst: *mut u8, at: usize) {
    fn prim<T: ArrowPrimitiveType>(
        column: &Prepared,
        rows: usize,
        null: T::Native,
        dst: *mut u8,
        at: usize,
    ) {
        let values = &column.array.as_primitive::<T>().values()[..rows];
        match &column.nulls {
            // SAFETY: in bounds (see `write_at`).
            None => unsafe { put(dst, at, as_bytes(values)) },
            Some(n) => {
                let data: Vec<T::Native> = values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| if n.is_null(i) { null } else { v })
                    .collect();
                unsafe { put(dst, at, as_bytes(&data)) }
            }
        }
    }
    match column.kind {
        Kind::I8 => prim::<Int8Type>(column, rows, 0, dst, at),
        Kind::I16 => prim::<Int16Type>(column, rows, 0, dst, at),
        Kind::I32 => prim::<Int32Type>(column, rows, 0, dst, at),
        Kind::I64 => prim::<Int64Type>(column, rows, 0, dst, at),
        Kind::U8 => prim::<UInt8Type>(column, rows, 0, dst, at),
        Kind::U16 => prim::<UInt16Type>(column, rows, 0, dst, at),
        Kind::U32 => prim::<UInt32Type>(column, rows, 0, dst, at),
        Kind::U64 => prim::<UInt64Type>(column, rows, 0, dst, at),
        Kind::F32 => prim::<Float32Type>(column, rows, f32::NAN, dst, at),
        Kind::F64 => prim::<Float64Type>(column, rows, f64::NAN, dst, at),
        Kind::Bool => {
            let values = column.array.as_boolean();
            let data: Vec<u8> = (0..rows)
                .map(|i| {
                    (values.value(i) && column.nulls.as_ref().is_none_or(|n| n.is_valid(i))) as u8
                })
                .collect();
            unsafe { put(dst, at, &data) }
        }
        Kind::Str | Kind::Bytes | Kind::Fixed => {}
    }
}

/// Reads the `u64` word `i` of the batch at `base + offset`.
///
/// # Safety
/// `offset + 8 * (i + 1)` is within the buffer.
unsafe fn word(base: *const u8, offset: usize, i: usize) -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: see above.
    unsafe { std::ptr::copy_nonoverlapping(base.add(offset + 8 * i), b.as_mut_ptr(), 8) };
    u64::from_le_bytes(b)
}

fn to_usize(v: u64, what: &str) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("packed batch: bad {what}")))
}

/// A numpy array of `rows` values of `T` at `src` (`rows * size_of::<T>()` bytes, checked by
/// the caller): a view whose base is `lease` (which keeps the memory, and the slot, for the
/// array), or a new array copied from `src`.
fn numeric_array<'py, T: Element + Copy>(
    py: Python<'py>,
    src: *const u8,
    rows: usize,
    lease: Option<&Bound<'py, SlotLease>>,
) -> Bound<'py, PyAny> {
    if let Some(lease) = lease
        && (src as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        // SAFETY: `rows` aligned values in bounds of the mapping the lease keeps mapped; the
        // writer leaves the slot alone until the lease is dropped, which the array (its
        // base) prevents while it lives.
        let view = unsafe { ArrayView1::from_shape_ptr(rows, src as *const T) };
        // SAFETY: the memory outlives the array (see above).
        return unsafe { PyArray1::<T>::borrow_from_array(&view, lease.clone().into_any()) }
            .into_any();
    }
    // SAFETY: a new, uninitialised C-contiguous array, filled completely right below.
    let array = unsafe { PyArray1::<T>::new(py, rows, false) };
    if rows > 0 {
        // SAFETY: `rows * size_of::<T>()` bytes from `src` (in bounds) into the new array.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src,
                array.data() as *mut u8,
                rows * std::mem::size_of::<T>(),
            )
        };
    }
    array.into_any()
}

/// A shared-memory slot lent to the arrays of one received batch: it holds the buffer the
/// slot is in (so the mapping stays), and when the last array is dropped, sets the slot's
/// `u32` state to 0 (a release store), which gives the slot back to the worker. It is the
/// only thing that frees the slot, so a slot is freed exactly once.
#[pyclass(frozen, module = "paiio._native")]
pub struct SlotLease {
    /// The slot's state word (an aligned, in-bounds `u32` of `_buffer`'s memory).
    flag: usize,
    _buffer: Py<PyAny>,
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        // SAFETY: the state word is in the memory `_buffer` keeps alive (dropped after this),
        // and is shared with the writer through atomics only.
        unsafe { (*(self.flag as *const AtomicU32)).store(0, Ordering::Release) };
    }
}

/// The columns of the packed batch at byte `offset` of `buffer` (a 1-D uint8 numpy array),
/// as a list of numpy arrays in column order, copied out of the buffer. With `release`, the
/// `u32` at that byte offset of `buffer` is then set to 0 (a release store): the writer may
/// reuse the memory.
#[pyfunction]
#[pyo3(signature = (buffer, offset = 0, release = None))]
pub fn unpack<'py>(
    py: Python<'py>,
    buffer: &Bound<'py, PyAny>,
    offset: usize,
    release: Option<usize>,
) -> PyResult<Bound<'py, PyList>> {
    let (base, size) = bytes_of(buffer, release.is_some())?;
    if let Some(flag) = release {
        within(flag, 4, size, "the slot flag")?;
        if !(base as usize + flag).is_multiple_of(4) {
            return Err(PyValueError::new_err(
                "the slot flag must be 4-byte aligned",
            ));
        }
    }
    let out = unpack_at(py, base, size, offset, None);
    if let Some(flag) = release {
        // SAFETY: an aligned, in-bounds u32 of a live buffer, shared with the writer through
        // atomics only.
        unsafe { (*(base.add(flag) as *const AtomicU32)).store(0, Ordering::Release) };
    }
    PyList::new(py, out?.into_iter().map(|(_, array)| array))
}

/// The batches of a bundle from a worker's shared-memory ring `buffer` (a writable 1-D uint8
/// numpy array), in one call: `items` are, per batch, the byte offset of the packed batch
/// and of its slot's `u32` state word. Each batch is a dict `names[i] -> column` (a tuple
/// when `names` is `None`) whose numeric and bool columns are passed through `tensor` (such
/// as `torch.from_numpy`) when given.
///
/// Numeric and fixed-width columns stay in the slot: they are views that lease it
/// ([`SlotLease`]) until the last of them is dropped; text columns are made into objects and
/// bool columns copied. A slot none of whose columns is kept (text only, or a batch that is
/// malformed or does not have `names`' columns, which is a `ValueError`) is given back before
/// this returns.
#[pyfunction]
#[pyo3(signature = (buffer, items, names = None, tensor = None))]
pub fn receive<'py>(
    py: Python<'py>,
    buffer: &Bound<'py, PyAny>,
    items: Vec<(usize, usize)>,
    names: Option<Vec<Bound<'py, PyString>>>,
    tensor: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let (base, size) = bytes_of(buffer, true)?;
    for &(_, flag) in &items {
        within(flag, 4, size, "the slot flag")?;
        // The address itself: a buffer may start anywhere.
        if !(base as usize + flag).is_multiple_of(4) {
            return Err(PyValueError::new_err(
                "the slot flag must be 4-byte aligned",
            ));
        }
    }
    // Every slot is leased before any is read: whatever fails below, each is given back
    // (by its lease, once no array holds it).
    let leases = items
        .iter()
        .map(|&(_, flag)| {
            Bound::new(
                py,
                SlotLease {
                    // SAFETY: checked in bounds above.
                    flag: unsafe { base.add(flag) } as usize,
                    _buffer: buffer.clone().unbind(),
                },
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    let batches = PyList::empty(py);
    for (&(offset, _), lease) in items.iter().zip(&leases) {
        let columns = unpack_at(py, base, size, offset, Some(lease))?;
        if let Some(names) = &names
            && names.len() != columns.len()
        {
            return Err(PyValueError::new_err(format!(
                "packed batch: {} columns, expected {}",
                columns.len(),
                names.len()
            )));
        }
        let mut values = Vec::with_capacity(columns.len());
        for (kind, array) in columns {
            values.push(match &tensor {
                Some(tensor) if kind.is_numeric() => tensor.call1((array,))?,
                _ => array,
            });
        }
        match &names {
            Some(names) => {
                let batch = PyDict::new(py);
                for (name, value) in names.iter().zip(values) {
                    batch.set_item(name, value)?;
                }
                batches.append(batch)?;
            }
            None => batches.append(PyTuple::new(py, values)?)?,
        }
    }
    Ok(batches)
}

/// The columns of the batch at `offset`, as numpy arrays; numeric ones are views leasing
/// the slot with `lease` (bool columns are always copied: numpy's bools are 0 or 1).
fn unpack_at<'py>(
    py: Python<'py>,
    base: *mut u8,
    size: usize,
    offset: usize,
    lease: Option<&Bound<'py, SlotLease>>,
) -> PyResult<Vec<(Kind, Bound<'py, PyAny>)>> {
    let base = base as *const u8;
    within(offset, HEADER_WORDS * 8, size, "the header")?;
    // SAFETY: the header is in bounds (checked above).
    let (magic, rows, ncols, total) = unsafe {
        (
            word(base, offset, 0),
            word(base, offset, 1),
            word(base, offset, 2),
            word(base, offset, 3),
        )
    };
    if magic != MAGIC {
        return Err(PyValueError::new_err("not a packed batch (bad magic)"));
    }
    if ncols > MAX_COLUMNS {
        return Err(PyValueError::new_err("packed batch: too many columns"));
    }
    let rows = to_usize(rows, "row count")?;
    let total = to_usize(total, "size")?;
    within(offset, total, size, "the batch")?;
    let ncols = ncols as usize;
    within(
        0,
        (HEADER_WORDS + COLUMN_WORDS * ncols) * 8,
        total,
        "the column table",
    )?;
    let mut out = Vec::with_capacity(ncols);
    for c in 0..ncols {
        let w = |k: usize| unsafe { word(base, offset, HEADER_WORDS + COLUMN_WORDS * c + k) };
        let kind = *KINDS
            .get(to_usize(w(0), "kind")?)
            .ok_or_else(|| PyValueError::new_err("packed batch: unknown column kind"))?;
        let (a, b, cc, d) = (w(1), w(2), w(3), w(4));
        let array = if kind.is_object() {
            let offsets_at = to_usize(a, "offsets")?;
            let data_at = to_usize(b, "data")?;
            let data_len = to_usize(cc, "data length")?;
            let n = rows
                .checked_add(1)
                .and_then(|n| n.checked_mul(8))
                .ok_or_else(|| PyValueError::new_err("packed batch: bad row count"))?;
            within(offsets_at, n, total, "text offsets")?;
            within(data_at, data_len, total, "text data")?;
            let validity = if d == NO_VALIDITY {
                None
            } else {
                let v = to_usize(d, "validity")?;
                within(v, rows, total, "validity")?;
                Some(v)
            };
            // SAFETY: the ranges were checked against the batch, which is in the buffer.
            let (offs, data, valid) = unsafe {
                let o = base.add(offset + offsets_at);
                let offs: Vec<u64> = (0..=rows).map(|i| word(o, 0, i)).collect();
                let data = std::slice::from_raw_parts(base.add(offset + data_at), data_len);
                let valid = validity
                    .map(|v| std::slice::from_raw_parts(base.add(offset + v), rows).to_vec());
                (offs, data.to_vec(), valid)
            };
            text_array(py, kind, rows, &offs, &data, valid.as_deref())?
        } else if kind == Kind::Fixed {
            let at = to_usize(a, "values")?;
            let bytes = to_usize(b, "values length")?;
            let width = to_usize(cc, "width")?;
            if width == 0 || width > i32::MAX as usize || Some(bytes) != rows.checked_mul(width) {
                return Err(PyValueError::new_err(
                    "packed batch: a fixed-width column's size does not match its rows",
                ));
            }
            within(at, bytes, total, "values")?;
            // SAFETY: in bounds (checked above).
            let src = unsafe { base.add(offset + at) };
            numeric_array::<u8>(py, src, bytes, lease)
                .call_method1("view", (format!("S{width}"),))?
        } else {
            let at = to_usize(a, "values")?;
            let bytes = to_usize(b, "values length")?;
            if Some(bytes) != rows.checked_mul(kind.size()) {
                return Err(PyValueError::new_err(
                    "packed batch: a column's size does not match its rows",
                ));
            }
            within(at, bytes, total, "values")?;
            // SAFETY: in bounds (checked above).
            let src = unsafe { base.add(offset + at) };
            match kind {
                Kind::I8 => numeric_array::<i8>(py, src, rows, lease),
                Kind::I16 => numeric_array::<i16>(py, src, rows, lease),
                Kind::I32 => numeric_array::<i32>(py, src, rows, lease),
                Kind::I64 => numeric_array::<i64>(py, src, rows, lease),
                Kind::U8 => numeric_array::<u8>(py, src, rows, lease),
                Kind::U16 => numeric_array::<u16>(py, src, rows, lease),
                Kind::U32 => numeric_array::<u32>(py, src, rows, lease),
                Kind::U64 => numeric_array::<u64>(py, src, rows, lease),
                Kind::F32 => numeric_array::<f32>(py, src, rows, lease),
                Kind::F64 => numeric_array::<f64>(py, src, rows, lease),
                _ => {
                    // SAFETY: in bounds (checked above).
                    let raw = unsafe { std::slice::from_raw_parts(src, rows) };
                    let data: Vec<bool> = raw.iter().map(|&b| b != 0).collect();
                    PyArray1::from_vec(py, data).into_any()
                }
            }
        };
        out.push((kind, array));
    }
    Ok(out)
}

/// A numpy object array of `str` (or `bytes`) from Arrow-style offsets and bytes.
fn text_array<'py>(
    py: Python<'py>,
    kind: Kind,
    rows: usize,
    offsets: &[u64],
    data: &[u8],
    valid: Option<&[u8]>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut objects: Vec<Py<PyAny>> = Vec::with_capacity(rows);
    for i in 0..rows {
        let (s, e) = (offsets[i] as usize, offsets[i + 1] as usize);
        let value = if valid.is_some_and(|v| v[i] == 0) {
            None
        } else {
            Some(data.get(s..e).ok_or_else(|| {
                PyValueError::new_err("packed batch: text offsets out of order or out of bounds")
            })?)
        };
        let object = convert::new_object(py, kind, value)?;
        // SAFETY: a new, owned reference.
        objects.push(unsafe { Bound::from_owned_ptr(py, object) }.unbind());
    }
    Ok(PyArray1::from_vec(py, objects).into_any())
}

/// The `u32` at byte `offset` of `buffer` (a 1-D uint8 numpy array), read with acquire
/// ordering: the state of a shared-memory slot.
#[pyfunction]
pub fn slot_state(buffer: &Bound<'_, PyAny>, offset: usize) -> PyResult<u32> {
    let (base, size) = bytes_of(buffer, false)?;
    within(offset, 4, size, "the slot flag")?;
    if !(base as usize + offset).is_multiple_of(4) {
        return Err(PyValueError::new_err(
            "the slot flag must be 4-byte aligned",
        ));
    }
    // SAFETY: an aligned, in-bounds u32 of a live buffer, shared through atomics only.
    Ok(unsafe { (*(base.add(offset) as *const AtomicU32)).load(Ordering::Acquire) })
}

/// Sets the `u32` at byte `offset` of `buffer` with release ordering.
#[pyfunction]
pub fn set_slot_state(buffer: &Bound<'_, PyAny>, offset: usize, value: u32) -> PyResult<()> {
    let (base, size) = bytes_of(buffer, true)?;
    within(offset, 4, size, "the slot flag")?;
    if !(base as usize + offset).is_multiple_of(4) {
        return Err(PyValueError::new_err(
            "the slot flag must be 4-byte aligned",
        ));
    }
    // SAFETY: as in `slot_state`.
    unsafe { (*(base.add(offset) as *const AtomicU32)).store(value, Ordering::Release) };
    Ok(())
}
