//! Arrow columns to tensors.
//!
//! | Arrow type | tensor kind, without a default |
//! |---|---|
//! | Int8, Int16, Int32, Int64 | `Int8`, `Int16`, `Int` (int32), `Int64` |
//! | UInt8 | `Uint8` |
//! | UInt16, UInt32 | widened to `Int` (int32), `Int64` (libtorch has no unsigned kinds past uint8) |
//! | UInt64 | `Int64`; a value above `i64::MAX` fails naming its row |
//! | Float16, Float32, Float64 | `Half`, `Float`, `Double` |
//! | Boolean | `Bool` (Arrow's bits unpacked to bytes) |
//!
//! **Copies.** [`array_to_tensor`] makes exactly one copy: libtorch allocates the tensor and
//! the Arrow values are written straight into it (NULL slots are then overwritten with the
//! default), never through an intermediate buffer. A zero-copy view is possible when the
//! layout allows it (a primitive column whose type is its tensor kind, without NULLs), but a
//! libtorch tensor made from foreign memory has no way to keep that memory alive or to stop
//! writes into it, so it is offered only as the `unsafe` [`array_as_tensor`]. The batch
//! iterator uses such views internally where it can prove the lifetime: for a CUDA device,
//! each column is copied host-to-device straight from the Arrow buffer (one copy in all).
//!
//! **NULLs and defaults.** Without a default, a column with NULLs is an error
//! ([`Error::Null`]). With a [`RecordDefault`], the rules of the core's `record_defaults` apply
//! ([`paiio::coerce`]): the default's type is the tensor's type (an `Int32(0)` default on an
//! Int64 column gives an int32 tensor, checked for range), values are converted by the
//! conversion table of the core (the column's Arrow type standing for its MaxCompute type:
//! Int8 for TINYINT, Utf8 for STRING...), and NULLs become the default. When the default's
//! type is the column's type, the conversion is the single copy plus the NULL fill.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, BooleanArray, PrimitiveArray, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;
use num_traits::AsPrimitive;
use paiio::coerce::{self, RecordDefault};
use paiio_storage::OdpsType;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// The name used in errors for an array converted without a column name.
const UNNAMED: &str = "<array>";

/// The tensor kind an Arrow type converts to without a default; `None` if it has none.
pub fn native_kind(data_type: &DataType) -> Option<Kind> {
    Some(match data_type {
        DataType::Int8 => Kind::Int8,
        DataType::Int16 => Kind::Int16,
        DataType::Int32 | DataType::UInt16 => Kind::Int,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Kind::Int64,
        DataType::UInt8 => Kind::Uint8,
        DataType::Float16 => Kind::Half,
        DataType::Float32 => Kind::Float,
        DataType::Float64 => Kind::Double,
        DataType::Boolean => Kind::Bool,
        _ => return None,
    })
}

/// The tensor kind of a default's type; `None` for text and bytes.
pub fn default_kind(default: &RecordDefault) -> Option<Kind> {
    Some(match default {
        RecordDefault::Int32(_) => Kind::Int,
        RecordDefault::Int64(_) => Kind::Int64,
        RecordDefault::Float32(_) => Kind::Float,
        RecordDefault::Float64(_) => Kind::Double,
        RecordDefault::Bool(_) => Kind::Bool,
        RecordDefault::String(_) | RecordDefault::Bytes(_) => return None,
    })
}

/// One Arrow array as a 1-D CPU tensor (one copy); see the [module docs](self) for the types,
/// copies, and how `default` fills NULLs.
pub fn array_to_tensor(array: &ArrayRef, default: Option<&RecordDefault>) -> Result<Tensor> {
    convert(array, UNNAMED, default)
}

/// The column `column` of `batch` as a 1-D CPU tensor, as [`array_to_tensor`] (errors name
/// the column).
pub fn column_to_tensor(
    batch: &RecordBatch,
    column: &str,
    default: Option<&RecordDefault>,
) -> Result<Tensor> {
    let i = column_index(batch, column)?;
    convert(batch.column(i), batch.schema().field(i).name(), default)
}

/// The tensor of `labels`: the column as [`column_to_tensor`] without a default, then as
/// `kind` when one is given (e.g. `Kind::Float` for a BCE loss, `Kind::Int64` for a
/// cross-entropy loss).
pub fn labels(batch: &RecordBatch, column: &str, kind: Option<Kind>) -> Result<Tensor> {
    let t = column_to_tensor(batch, column, None)?;
    match kind {
        Some(kind) if kind != t.kind() => Ok(t.f_to_kind(kind)?),
        _ => Ok(t),
    }
}

/// A `[rows, columns.len()]` row-major CPU matrix of `kind` from several numeric or boolean
/// columns of `batch` (each converted as by `as`; a bool is 0 or 1). Each value is written
/// once, straight into the matrix. A column with NULLs is an error; see
/// [`features_with_defaults`].
pub fn features(batch: &RecordBatch, columns: &[&str], kind: Kind) -> Result<Tensor> {
    matrix(batch, columns, None, kind)
}

/// [`features`] with one [`RecordDefault`] per column filling its NULLs (columns with NULLs
/// are converted by the core's `record_defaults` rules first, then written into the matrix;
/// the matrix kind is `kind` whatever the defaults' types).
pub fn features_with_defaults(
    batch: &RecordBatch,
    columns: &[&str],
    defaults: &[RecordDefault],
    kind: Kind,
) -> Result<Tensor> {
    if defaults.len() != columns.len() {
        return Err(Error::invalid(
            "defaults",
            format!(
                "{} defaults for {} feature columns",
                defaults.len(),
                columns.len()
            ),
        ));
    }
    matrix(batch, columns, Some(defaults), kind)
}

/// A zero-copy tensor over the values of `array`, when its layout allows it: a primitive
/// array of a type that is its own tensor kind (Int8/16/32/64, UInt8, Float16/32/64) with no
/// NULLs. `Ok(None)` when the layout does not allow it (booleans are bit-packed; widened or
/// NULL-holding columns need a conversion): use [`array_to_tensor`] then.
///
/// # Safety
///
/// The tensor points into the Arrow buffer and does not keep it alive. The caller must keep
/// `array` (or another reference to its buffer) alive for as long as the tensor, and every
/// tensor sharing its storage (views, `shallow_clone`s), may be used, and must not write
/// through any of them (Arrow buffers are immutable and may be shared). Operations that
/// produce new tensors (`to_device`, `to_kind` to another kind, arithmetic) copy and are
/// independent of the buffer.
pub unsafe fn array_as_tensor(array: &ArrayRef) -> Result<Option<Tensor>> {
    if array.null_count() > 0 || array.is_empty() {
        return Ok(None);
    }
    fn blob<T: ArrowPrimitiveType>(array: &dyn Array, kind: Kind) -> Result<Tensor> {
        let values = array.as_primitive::<T>().values();
        // SAFETY: `values` is `len` initialised, aligned values of `kind`'s element size; the
        // caller keeps them alive and unwritten for the tensor's lifetime (see above).
        let t = unsafe {
            Tensor::f_from_blob(
                values.as_ptr() as *const u8,
                &[values.len() as i64],
                &[],
                kind,
                Device::Cpu,
            )?
        };
        Ok(t)
    }
    let a = array.as_ref();
    Ok(Some(match array.data_type() {
        DataType::Int8 => blob::<Int8Type>(a, Kind::Int8)?,
        DataType::Int16 => blob::<Int16Type>(a, Kind::Int16)?,
        DataType::Int32 => blob::<Int32Type>(a, Kind::Int)?,
        DataType::Int64 => blob::<Int64Type>(a, Kind::Int64)?,
        DataType::UInt8 => blob::<UInt8Type>(a, Kind::Uint8)?,
        DataType::Float16 => blob::<Float16Type>(a, Kind::Half)?,
        DataType::Float32 => blob::<Float32Type>(a, Kind::Float)?,
        DataType::Float64 => blob::<Float64Type>(a, Kind::Double)?,
        _ => return Ok(None),
    }))
}

/// One array on `device`: for a CPU device [`convert`] (one copy); for another device, the
/// Arrow buffer is copied to the device directly when its layout allows (one copy), else
/// converted on the CPU and then copied.
pub(crate) fn convert_to_device(
    array: &ArrayRef,
    name: &str,
    default: Option<&RecordDefault>,
    device: Device,
) -> Result<Tensor> {
    if device != Device::Cpu && default.is_none() {
        // SAFETY: the view is used only for the synchronous (non-blocking = false) copy to
        // the device below and dropped before `array`, which this function borrows; nothing
        // writes through it.
        if let Some(view) = unsafe { array_as_tensor(array)? } {
            let on_device = view.f_to_device(device)?;
            drop(view);
            return Ok(on_device);
        }
    }
    let t = convert(array, name, default)?;
    if device == Device::Cpu {
        Ok(t)
    } else {
        Ok(t.f_to_device(device)?)
    }
}

pub(crate) fn column_index(batch: &RecordBatch, column: &str) -> Result<usize> {
    let schema = batch.schema();
    schema
        .index_of(column)
        .ok()
        .or_else(|| {
            schema
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(column))
        })
        .ok_or_else(|| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::invalid(
                "column",
                format!(
                    "`{column}` is not a column of the batch (its columns: {})",
                    names.join(", ")
                ),
            )
        })
}

/// Whether `default`'s type is `data_type` (the fast path: copy and fill).
fn is_native_default(data_type: &DataType, default: &RecordDefault) -> bool {
    matches!(
        (data_type, default),
        (DataType::Int32, RecordDefault::Int32(_))
            | (DataType::Int64, RecordDefault::Int64(_))
            | (DataType::Float32, RecordDefault::Float32(_))
            | (DataType::Float64, RecordDefault::Float64(_))
            | (DataType::Boolean, RecordDefault::Bool(_))
    )
}

/// The MaxCompute type an Arrow type stands for in the core's conversion table.
fn odps_type_of(data_type: &DataType) -> Option<OdpsType> {
    Some(match data_type {
        DataType::Int8 => OdpsType::TinyInt,
        DataType::Int16 | DataType::UInt8 => OdpsType::SmallInt,
        DataType::Int32 | DataType::UInt16 => OdpsType::Int,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => OdpsType::BigInt,
        DataType::Float16 | DataType::Float32 => OdpsType::Float,
        DataType::Float64 => OdpsType::Double,
        DataType::Boolean => OdpsType::Boolean,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => OdpsType::String,
        DataType::Decimal128(p, s) => OdpsType::Decimal(Some((*p, *s))),
        DataType::Date32 => OdpsType::Date,
        _ => return None,
    })
}

fn unsupported(name: &str, data_type: &DataType, hint: &str) -> Error {
    Error::Unsupported {
        column: name.to_string(),
        data_type: data_type.to_string(),
        hint: hint.to_string(),
    }
}

/// The array converted by the core's rules to `default`'s type, without NULLs.
fn coerce_with_default(array: &ArrayRef, name: &str, default: &RecordDefault) -> Result<ArrayRef> {
    if default_kind(default).is_none() {
        return Err(unsupported(
            name,
            array.data_type(),
            &format!(
                "a {} default asks for text, which is not a tensor",
                default.target_type()
            ),
        ));
    }
    let odps = odps_type_of(array.data_type()).ok_or_else(|| {
        unsupported(
            name,
            array.data_type(),
            "no record_defaults rule applies to it",
        )
    })?;
    Ok(coerce::coerce_column(array, name, &odps, default, 0)?)
}

/// One array to a CPU tensor (one copy), NULLs filled by `default`.
pub(crate) fn convert(
    array: &ArrayRef,
    name: &str,
    default: Option<&RecordDefault>,
) -> Result<Tensor> {
    let converted;
    let (array, default) = match default {
        Some(d) if !is_native_default(array.data_type(), d) => {
            converted = coerce_with_default(array, name, d)?;
            (&converted, None)
        }
        other => (array, other),
    };
    let a = array.as_ref();
    match a.data_type() {
        DataType::Int8 => primitive::<Int8Type>(a, name, None, Kind::Int8),
        DataType::Int16 => primitive::<Int16Type>(a, name, None, Kind::Int16),
        DataType::Int32 => primitive::<Int32Type>(
            a,
            name,
            match default {
                Some(RecordDefault::Int32(v)) => Some(*v),
                _ => None,
            },
            Kind::Int,
        ),
        DataType::Int64 => primitive::<Int64Type>(
            a,
            name,
            match default {
                Some(RecordDefault::Int64(v)) => Some(*v),
                _ => None,
            },
            Kind::Int64,
        ),
        DataType::UInt8 => primitive::<UInt8Type>(a, name, None, Kind::Uint8),
        DataType::UInt16 => widened::<UInt16Type, i32>(a, name, Kind::Int),
        DataType::UInt32 => widened::<UInt32Type, i64>(a, name, Kind::Int64),
        DataType::UInt64 => {
            let values = a.as_primitive::<UInt64Type>();
            if let Some(row) =
                (0..values.len()).find(|&i| values.is_valid(i) && values.value(i) > i64::MAX as u64)
            {
                return Err(Error::Value {
                    column: name.to_string(),
                    row,
                    message: format!(
                        "value {} does not fit int64 (libtorch has no uint64 tensors)",
                        values.value(row)
                    ),
                });
            }
            widened::<UInt64Type, i64>(a, name, Kind::Int64)
        }
        DataType::Float16 => primitive::<Float16Type>(a, name, None, Kind::Half),
        DataType::Float32 => primitive::<Float32Type>(
            a,
            name,
            match default {
                Some(RecordDefault::Float32(v)) => Some(*v),
                _ => None,
            },
            Kind::Float,
        ),
        DataType::Float64 => primitive::<Float64Type>(
            a,
            name,
            match default {
                Some(RecordDefault::Float64(v)) => Some(*v),
                _ => None,
            },
            Kind::Double,
        ),
        DataType::Boolean => boolean(
            a.as_boolean(),
            name,
            match default {
                Some(RecordDefault::Bool(v)) => Some(*v),
                _ => None,
            },
        ),
        other => Err(unsupported(
            name,
            other,
            "give a numeric or bool record default to convert it by the record_defaults rules",
        )),
    }
}

fn null_error(name: &str, nulls: &NullBuffer) -> Error {
    Error::Null {
        column: name.to_string(),
        count: nulls.null_count(),
        first_row: nulls.iter().position(|v| !v).unwrap_or(0),
    }
}

/// A new CPU tensor of `shape`, every element written by `fill` (given the tensor's storage
/// as a slice) before the tensor is returned.
fn alloc_with<D: tch::kind::Element>(
    shape: &[i64],
    kind: Kind,
    fill: impl FnOnce(&mut [D]),
) -> Result<Tensor> {
    debug_assert_eq!(D::KIND.elt_size_in_bytes(), kind.elt_size_in_bytes());
    let t = Tensor::f_empty(shape, (kind, Device::Cpu))?;
    let len: i64 = shape.iter().product();
    if len > 0 {
        let ptr = t.data_ptr() as *mut D;
        // SAFETY: a freshly allocated, contiguous CPU tensor of `len` elements of `D`'s size,
        // referenced by nothing else while the slice lives (it ends with `fill`).
        let slice = unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) };
        fill(slice);
    }
    Ok(t)
}

fn fill_nulls<D: Copy>(dst: &mut [D], nulls: Option<&NullBuffer>, default: Option<D>) {
    if let (Some(nulls), Some(default)) = (nulls, default) {
        for i in nulls.iter().enumerate().filter(|(_, v)| !v).map(|(i, _)| i) {
            dst[i] = default;
        }
    }
}

/// A primitive array copied into a new tensor of the same element type, NULLs overwritten
/// with `default`.
fn primitive<T>(
    array: &dyn Array,
    name: &str,
    default: Option<T::Native>,
    kind: Kind,
) -> Result<Tensor>
where
    T: ArrowPrimitiveType,
    T::Native: tch::kind::Element,
{
    let values: &PrimitiveArray<T> = array.as_primitive::<T>();
    let nulls = values.nulls().filter(|n| n.null_count() > 0);
    if let (Some(n), None) = (nulls, default) {
        return Err(null_error(name, n));
    }
    alloc_with::<T::Native>(&[values.len() as i64], kind, |dst| {
        dst.copy_from_slice(values.values());
        fill_nulls(dst, nulls, default);
    })
}

/// A primitive array widened (losslessly) into a new tensor of element `D`.
fn widened<T, D>(array: &dyn Array, name: &str, kind: Kind) -> Result<Tensor>
where
    T: ArrowPrimitiveType,
    T::Native: AsPrimitive<D>,
    D: tch::kind::Element + Copy + 'static,
{
    let values: &PrimitiveArray<T> = array.as_primitive::<T>();
    if let Some(n) = values.nulls().filter(|n| n.null_count() > 0) {
        return Err(null_error(name, n));
    }
    alloc_with::<D>(&[values.len() as i64], kind, |dst| {
        for (d, s) in dst.iter_mut().zip(values.values().iter()) {
            *d = s.as_();
        }
    })
}

fn boolean(array: &BooleanArray, name: &str, default: Option<bool>) -> Result<Tensor> {
    let nulls = array.nulls().filter(|n| n.null_count() > 0);
    if let (Some(n), None) = (nulls, default) {
        return Err(null_error(name, n));
    }
    alloc_with::<bool>(&[array.len() as i64], Kind::Bool, |dst| {
        for (d, v) in dst.iter_mut().zip(array.values().iter()) {
            *d = v;
        }
        fill_nulls(dst, nulls, default);
    })
}

/// An element type a feature matrix is built in directly.
trait MatrixElement: tch::kind::Element + Copy + 'static {}
impl MatrixElement for f32 {}
impl MatrixElement for f64 {}
impl MatrixElement for i64 {}
impl MatrixElement for i32 {}

fn matrix(
    batch: &RecordBatch,
    columns: &[&str],
    defaults: Option<&[RecordDefault]>,
    kind: Kind,
) -> Result<Tensor> {
    if columns.is_empty() {
        return Err(Error::invalid("features", "no feature column given"));
    }
    let schema = batch.schema();
    let mut arrays = Vec::with_capacity(columns.len());
    for (j, c) in columns.iter().enumerate() {
        let i = column_index(batch, c)?;
        let name = schema.field(i).name().as_str();
        let array = batch.column(i);
        let array = match defaults.map(|d| &d[j]) {
            Some(d) if array.null_count() > 0 || !is_native_default(array.data_type(), d) => {
                coerce_with_default(array, name, d)?
            }
            _ => array.clone(),
        };
        if let Some(n) = array.nulls().filter(|n| n.null_count() > 0) {
            return Err(null_error(name, n));
        }
        if native_kind(array.data_type()).is_none() {
            return Err(unsupported(
                name,
                array.data_type(),
                "feature columns must be numeric or bool (give a numeric default to parse text)",
            ));
        }
        arrays.push((name.to_string(), array));
    }
    match kind {
        Kind::Float => fill_matrix::<f32>(batch.num_rows(), &arrays, kind),
        Kind::Double => fill_matrix::<f64>(batch.num_rows(), &arrays, kind),
        Kind::Int64 => fill_matrix::<i64>(batch.num_rows(), &arrays, kind),
        Kind::Int => fill_matrix::<i32>(batch.num_rows(), &arrays, kind),
        other => Ok(fill_matrix::<f64>(batch.num_rows(), &arrays, Kind::Double)?.f_to_kind(other)?),
    }
}

fn fill_matrix<D>(rows: usize, arrays: &[(String, ArrayRef)], kind: Kind) -> Result<Tensor>
where
    D: MatrixElement,
    i8: AsPrimitive<D>,
    i16: AsPrimitive<D>,
    i32: AsPrimitive<D>,
    i64: AsPrimitive<D>,
    u8: AsPrimitive<D>,
    u16: AsPrimitive<D>,
    u32: AsPrimitive<D>,
    u64: AsPrimitive<D>,
    f32: AsPrimitive<D>,
    f64: AsPrimitive<D>,
{
    let cols = arrays.len();
    fn strided<T, D>(dst: &mut [D], cols: usize, j: usize, array: &dyn Array)
    where
        T: ArrowPrimitiveType,
        T::Native: AsPrimitive<D>,
        D: Copy + 'static,
    {
        let values = array.as_primitive::<T>().values();
        for (row, v) in dst.chunks_exact_mut(cols).zip(values.iter()) {
            row[j] = v.as_();
        }
    }
    alloc_with::<D>(&[rows as i64, cols as i64], kind, |dst| {
        for (j, (_, array)) in arrays.iter().enumerate() {
            let a = array.as_ref();
            match a.data_type() {
                DataType::Int8 => strided::<Int8Type, D>(dst, cols, j, a),
                DataType::Int16 => strided::<Int16Type, D>(dst, cols, j, a),
                DataType::Int32 => strided::<Int32Type, D>(dst, cols, j, a),
                DataType::Int64 => strided::<Int64Type, D>(dst, cols, j, a),
                DataType::UInt8 => strided::<UInt8Type, D>(dst, cols, j, a),
                DataType::UInt16 => strided::<UInt16Type, D>(dst, cols, j, a),
                DataType::UInt32 => strided::<UInt32Type, D>(dst, cols, j, a),
                DataType::UInt64 => strided::<UInt64Type, D>(dst, cols, j, a),
                DataType::Float16 => {
                    let values = a.as_primitive::<Float16Type>().values();
                    for (row, v) in dst.chunks_exact_mut(cols).zip(values.iter()) {
                        row[j] = v.to_f32().as_();
                    }
                }
                DataType::Float32 => strided::<Float32Type, D>(dst, cols, j, a),
                DataType::Float64 => strided::<Float64Type, D>(dst, cols, j, a),
                DataType::Boolean => {
                    let values = a.as_boolean().values();
                    for (row, v) in dst.chunks_exact_mut(cols).zip(values.iter()) {
                        row[j] = (v as u8).as_();
                    }
                }
                _ => unreachable!("checked by matrix()"),
            }
        }
    })
}
