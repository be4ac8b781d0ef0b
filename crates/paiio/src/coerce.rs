//! `record_defaults`: one typed default per selected column, which picks the column's output
//! type and fills its NULLs (as `tf.io.decode_csv` does).
//!
//! A [`RecordDefault`] is an `int32`, `int64`, `float32`, `float64`, `bool`, `string` or
//! `bytes` value. [`check_defaults`] validates a list of defaults against the selected
//! columns before any data is read (a wrong count, or a conversion that can never work such
//! as ARRAY to int64, fails there), and [`coerce_batch`] converts each batch: every output
//! column has exactly the Arrow type of its default ([`TargetType::arrow_type`]) and no NULLs.
//! Conversions are vectorised with Arrow kernels; only text parsing and nested-to-JSON
//! formatting visit values one by one.
//!
//! Every failure is an [`Error::Conversion`] naming the column, its MaxCompute type and the
//! target type, and, when a value failed, the row (counted from the start of the slice, in
//! table order: a shuffled reader names the row where it sits before shuffling).
//!
//! # The conversion table
//!
//! [`conversion`] gives the rule for a MaxCompute type and a target; this is its table.
//! NULL always becomes the default, whatever the rule.
//!
//! | MaxCompute type | int32 | int64 | float32 | float64 | bool | string | bytes |
//! |---|---|---|---|---|---|---|---|
//! | TINYINT, SMALLINT | Widen | Widen | Widen | Widen | Narrow¹ | Format | Format |
//! | INT | Exact | Widen | Round | Widen | Narrow¹ | Format | Format |
//! | BIGINT | Narrow² | Exact | Round | Round | Narrow¹ | Format | Format |
//! | FLOAT | Narrow³ | Narrow³ | Exact | Widen | Narrow¹ | Format | Format |
//! | DOUBLE | Narrow³ | Narrow³ | Narrow⁴ | Exact | Narrow¹ | Format | Format |
//! | DECIMAL, DECIMAL(p,s) | Narrow³ | Narrow³ | Round | Round | Narrow¹ | Format⁵ | Format⁵ |
//! | BOOLEAN | Widen (0/1) | Widen (0/1) | Widen (0/1) | Widen (0/1) | Exact | Format (`true`/`false`) | Format |
//! | STRING, VARCHAR(n), CHAR(n), JSON | Parse | Parse | Parse | Parse | Parse⁶ | Exact | Exact (UTF-8 bytes) |
//! | BINARY, BLOB | Error | Error | Error | Error | Error | Parse (valid UTF-8) | Exact |
//! | DATE | Count (days since 1970-01-01) | Count (days) | Error | Error | Error | Format (`YYYY-MM-DD`) | Format |
//! | DATETIME | Error | Count (epoch milliseconds)⁷ | Error | Error | Error | Format (ISO 8601)⁸ | Format |
//! | TIMESTAMP, TIMESTAMP_NTZ | Error | Count (epoch nanoseconds)⁷ | Error | Error | Error | Format (ISO 8601)⁸ | Format |
//! | INTERVAL_DAY_TIME | Error | Count (milliseconds) | Error | Error | Error | Format (`[-]D HH:MM:SS.mmm`) | Format |
//! | INTERVAL_YEAR_MONTH | Count (months) | Count (months) | Error | Error | Error | Format (`[-]Y-M`) | Format |
//! | ARRAY, MAP, STRUCT | Error | Error | Error | Error | Error | Format (JSON)⁹ | Format (JSON) |
//!
//! The rules ([`Conversion`]):
//!
//! * **Exact**: the value as it is. **Widen**: a lossless conversion that cannot fail.
//! * **Round**: to the nearest representable value (a BIGINT above 2^24 in float32 loses
//!   digits); cannot fail.
//! * **Narrow**: checked for every value; a value that does not fit fails naming its row.
//!   ¹ to bool: only 0 and 1 (0.0 and 1.0) are accepted. ² out of the int32 range fails.
//!   ³ to an integer: the value must be a whole number within range (2.0 becomes 2; 2.5,
//!   NaN and infinities fail). ⁴ DOUBLE to float32 rounds, and fails on a finite value beyond
//!   the float32 range.
//! * **Parse**: text is parsed after trimming ASCII whitespace (CHAR(n) pads with spaces);
//!   empty text counts as missing and becomes the default, like NULL; anything else that
//!   does not parse fails naming its row. Integers take an optional sign and decimal digits
//!   only (`1.0` is not an int); floats take Rust float syntax (`1.5`, `-2e-3`, `inf`,
//!   `NaN`); ⁶ bool takes `true`/`false`/`1`/`0` in any case.
//! * **Count**: a date, time or interval as an integer count of its unit. ⁷ DATETIME is
//!   epoch milliseconds and TIMESTAMP epoch nanoseconds whatever unit the data arrives in
//!   (finer data is floored); a TIMESTAMP outside 1677..2262 does not fit and fails.
//! * **Format**: the value as text; never fails. Integers in decimal, floats in the shortest
//!   form that reads back the same, ⁵ decimals with their scale's digits (`1.50`),
//!   ⁸ `2024-05-06T07:08:09.123` (no zone; as many fractional digits as needed),
//!   ⁹ nested values as compact JSON (`[1,2]`, `{"k":1}`, `{"a":1,"b":"x"}`; map keys as
//!   text; dates, times, decimals and binary as JSON strings).
//! * **Error**: refused by [`check_defaults`] before any data is read.
//!
//! `bytes` is `string` delivered as Arrow binary instead of utf8 (what TensorFlow's string
//! tensors hold); it is the only target that takes BINARY as it is.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, DecimalType, Float64Type, Int32Type, Int64Type, IntervalDayTimeType,
    IntervalYearMonthType,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BinaryArray, BooleanArray, Float32Array, Float64Array,
    Int32Array, Int64Array, PrimitiveArray, RecordBatch, Scalar, StringArray,
};
use arrow_cast::CastOptions;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use paiio_storage::types::{Column, OdpsType};

use crate::error::{Error, Result};

/// The output type a [`RecordDefault`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetType {
    Int32,
    Int64,
    Float32,
    Float64,
    Bool,
    /// Text, as Arrow utf8.
    String,
    /// Text or bytes, as Arrow binary.
    Bytes,
}

impl TargetType {
    /// Every target, in the order of the conversion table.
    pub const ALL: [TargetType; 7] = [
        TargetType::Int32,
        TargetType::Int64,
        TargetType::Float32,
        TargetType::Float64,
        TargetType::Bool,
        TargetType::String,
        TargetType::Bytes,
    ];

    /// The dtype name (`int32`, `float64`, `bool`, `string`, `bytes`).
    pub fn name(&self) -> &'static str {
        match self {
            TargetType::Int32 => "int32",
            TargetType::Int64 => "int64",
            TargetType::Float32 => "float32",
            TargetType::Float64 => "float64",
            TargetType::Bool => "bool",
            TargetType::String => "string",
            TargetType::Bytes => "bytes",
        }
    }

    /// The Arrow type of the output column.
    pub fn arrow_type(&self) -> DataType {
        match self {
            TargetType::Int32 => DataType::Int32,
            TargetType::Int64 => DataType::Int64,
            TargetType::Float32 => DataType::Float32,
            TargetType::Float64 => DataType::Float64,
            TargetType::Bool => DataType::Boolean,
            TargetType::String => DataType::Utf8,
            TargetType::Bytes => DataType::Binary,
        }
    }
}

impl std::fmt::Display for TargetType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of `record_defaults`: the value NULLs become, whose type is the column's output
/// type. In serde, `{"int32": 0}`, `{"string": ""}`... (the [`TargetType`] names).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordDefault {
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    Bool(bool),
    String(String),
    Bytes(Vec<u8>),
}

impl RecordDefault {
    /// The output type this default asks for.
    pub fn target_type(&self) -> TargetType {
        match self {
            RecordDefault::Int32(_) => TargetType::Int32,
            RecordDefault::Int64(_) => TargetType::Int64,
            RecordDefault::Float32(_) => TargetType::Float32,
            RecordDefault::Float64(_) => TargetType::Float64,
            RecordDefault::Bool(_) => TargetType::Bool,
            RecordDefault::String(_) => TargetType::String,
            RecordDefault::Bytes(_) => TargetType::Bytes,
        }
    }

    /// `len` copies of the default, as an array of the target's Arrow type.
    pub fn to_array(&self, len: usize) -> ArrayRef {
        match self {
            RecordDefault::Int32(v) => Arc::new(Int32Array::from_value(*v, len)),
            RecordDefault::Int64(v) => Arc::new(Int64Array::from_value(*v, len)),
            RecordDefault::Float32(v) => Arc::new(Float32Array::from_value(*v, len)),
            RecordDefault::Float64(v) => Arc::new(Float64Array::from_value(*v, len)),
            RecordDefault::Bool(v) => Arc::new(BooleanArray::from(vec![*v; len])),
            RecordDefault::String(v) => {
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, len)))
            }
            RecordDefault::Bytes(v) => {
                Arc::new(BinaryArray::from_iter_values(std::iter::repeat_n(v, len)))
            }
        }
    }
}

macro_rules! default_from {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for RecordDefault {
            fn from(value: $ty) -> Self {
                RecordDefault::$variant(value.into())
            }
        })*
    };
}

default_from!(
    i32 => Int32,
    i64 => Int64,
    f32 => Float32,
    f64 => Float64,
    bool => Bool,
    String => String,
    &str => String,
    Vec<u8> => Bytes,
    &[u8] => Bytes,
);

/// How a MaxCompute type becomes a target type (see the [module docs](self) for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// The value as it is.
    Exact,
    /// Lossless; cannot fail.
    Widen,
    /// To the nearest representable value; cannot fail.
    Round,
    /// Checked for every value: one that does not fit fails, naming its row.
    Narrow,
    /// A date, time or interval as an integer count of its unit (days, epoch milliseconds,
    /// epoch nanoseconds, milliseconds, months).
    Count,
    /// Text parsed; bad text fails naming its row, empty text becomes the default.
    Parse,
    /// The value as text; cannot fail.
    Format,
    /// Never possible; the reason.
    Error(&'static str),
}

impl Conversion {
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Conversion::Error(_))
    }
}

/// The rule for converting a column of MaxCompute type `odps` to `target`.
pub fn conversion(odps: &OdpsType, target: TargetType) -> Conversion {
    use Conversion::*;
    use OdpsType as O;
    use TargetType as T;
    if matches!(target, T::String | T::Bytes) {
        return match odps {
            O::String | O::Varchar(_) | O::Char(_) | O::Json => Exact,
            O::Binary | O::Blob if target == T::Bytes => Exact,
            O::Binary | O::Blob => Parse,
            _ => Format,
        };
    }
    match odps {
        O::TinyInt | O::SmallInt | O::Int | O::BigInt => {
            let bits = match odps {
                O::TinyInt => 8,
                O::SmallInt => 16,
                O::Int => 32,
                _ => 64,
            };
            match target {
                T::Int32 if bits == 32 => Exact,
                T::Int32 if bits < 32 => Widen,
                T::Int32 => Narrow,
                T::Int64 if bits == 64 => Exact,
                T::Int64 => Widen,
                T::Float32 if bits <= 16 => Widen,
                T::Float64 if bits <= 32 => Widen,
                T::Float32 | T::Float64 => Round,
                _ => Narrow, // bool: 0 or 1
            }
        }
        O::Float => match target {
            T::Float32 => Exact,
            T::Float64 => Widen,
            _ => Narrow,
        },
        O::Double => match target {
            T::Float64 => Exact,
            _ => Narrow,
        },
        O::Decimal(_) => match target {
            T::Float32 | T::Float64 => Round,
            _ => Narrow,
        },
        O::Boolean => match target {
            T::Bool => Exact,
            _ => Widen,
        },
        O::String | O::Varchar(_) | O::Char(_) | O::Json => Parse,
        O::Binary | O::Blob => Error("binary data is not a number or a bool; read it as bytes"),
        O::Date => match target {
            T::Int32 | T::Int64 => Count,
            _ => Error("a DATE becomes days since 1970-01-01 as int32 or int64, or text"),
        },
        O::DateTime => match target {
            T::Int64 => Count,
            _ => Error("a DATETIME becomes epoch milliseconds as int64, or text"),
        },
        O::Timestamp | O::TimestampNtz => match target {
            T::Int64 => Count,
            _ => Error("a TIMESTAMP becomes epoch nanoseconds as int64, or text"),
        },
        O::IntervalDayTime => match target {
            T::Int64 => Count,
            _ => Error("an INTERVAL_DAY_TIME becomes milliseconds as int64, or text"),
        },
        O::IntervalYearMonth => match target {
            T::Int32 | T::Int64 => Count,
            _ => Error("an INTERVAL_YEAR_MONTH becomes months as int32 or int64, or text"),
        },
        O::Array(_) | O::Map(..) | O::Struct(_) => {
            Error("a nested value is not a scalar; read it as a string (JSON)")
        }
    }
}

/// Checks `record_defaults` against the selected columns before anything is read: one default
/// per column, and a conversion that can work for each.
pub fn check_defaults(columns: &[Column], defaults: &[RecordDefault]) -> Result<()> {
    if columns.len() != defaults.len() {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::invalid(
            "record_defaults",
            format!(
                "{} record_defaults for {} selected columns ({}); give one default per column",
                defaults.len(),
                columns.len(),
                names.join(", ")
            ),
        ));
    }
    for (column, default) in columns.iter().zip(defaults) {
        let target = default.target_type();
        if let Conversion::Error(reason) = conversion(&column.ty, target) {
            return Err(conversion_error(
                &column.name,
                &column.ty,
                target,
                None,
                reason,
            ));
        }
    }
    Ok(())
}

/// The schema [`coerce_batch`] produces for `columns`: the same names, the defaults' types,
/// no NULLs.
pub fn output_schema(columns: &[Column], defaults: &[RecordDefault]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .zip(defaults)
            .map(|(c, d)| Field::new(&c.name, d.target_type().arrow_type(), false))
            .collect::<Vec<_>>(),
    ))
}

/// Batches with at least this many values (rows x columns) convert their columns in parallel.
const PARALLEL_CELLS: usize = 1 << 16;

/// Converts every column of `batch` (whose MaxCompute types are `odps_types`) to the type of
/// its default, filling NULLs with it. `row_base` is the slice row of the batch's first row,
/// for error messages.
pub fn coerce_batch(
    batch: &RecordBatch,
    odps_types: &[OdpsType],
    defaults: &[RecordDefault],
    row_base: u64,
) -> Result<RecordBatch> {
    let n = batch.num_columns();
    if odps_types.len() != n || defaults.len() != n {
        return Err(Error::invalid(
            "record_defaults",
            format!(
                "{} record_defaults for {} selected columns ({} types given)",
                defaults.len(),
                n,
                odps_types.len()
            ),
        ));
    }
    let schema = batch.schema();
    let convert_one = |i: usize| {
        coerce_column(
            batch.column(i),
            schema.field(i).name(),
            &odps_types[i],
            &defaults[i],
            row_base,
        )
    };
    // Columns convert independently: big batches use the CPU pool, never the I/O runtime.
    let columns: Vec<ArrayRef> = if n > 1 && batch.num_rows() * n >= PARALLEL_CELLS {
        use rayon::prelude::*;
        crate::runtime::cpu_pool().install(|| {
            (0..n)
                .into_par_iter()
                .map(convert_one)
                .collect::<Result<_>>()
        })?
    } else {
        (0..n).map(convert_one).collect::<Result<_>>()?
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), false))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Storage(paiio_storage::Error::arrow("building the coerced batch", e)))
}

/// Converts one column; see [`coerce_batch`].
pub fn coerce_column(
    array: &ArrayRef,
    name: &str,
    odps: &OdpsType,
    default: &RecordDefault,
    row_base: u64,
) -> Result<ArrayRef> {
    let target = default.target_type();
    if let Conversion::Error(reason) = conversion(odps, target) {
        return Err(conversion_error(name, odps, target, None, reason));
    }
    if array.logical_null_count() == array.len() {
        return Ok(default.to_array(array.len()));
    }
    let converted = convert(array, odps, target).map_err(|fail| {
        conversion_error(
            name,
            odps,
            target,
            fail.row.map(|r| row_base + r as u64),
            &fail.message,
        )
    })?;
    debug_assert_eq!(converted.data_type(), &target.arrow_type());
    fill_nulls(converted, default)
        .map_err(|e| conversion_error(name, odps, target, None, &format!("filling NULLs: {e}")))
}

fn conversion_error(
    column: &str,
    odps: &OdpsType,
    target: TargetType,
    row: Option<u64>,
    message: &str,
) -> Error {
    Error::Conversion {
        column: column.to_string(),
        odps_type: odps.to_string(),
        target: target.name().to_string(),
        row,
        message: message.to_string(),
    }
}

/// A failed conversion: the row within the batch (for a value) and why.
struct Fail {
    row: Option<usize>,
    message: String,
}

impl Fail {
    fn column(message: impl Into<String>) -> Self {
        Fail {
            row: None,
            message: message.into(),
        }
    }
    fn row(row: usize, message: impl Into<String>) -> Self {
        Fail {
            row: Some(row),
            message: message.into(),
        }
    }
}

type Converted = std::result::Result<ArrayRef, Fail>;

fn cast(array: &dyn Array, to: &DataType) -> std::result::Result<ArrayRef, Fail> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(array, to, &options)
        .map_err(|e| Fail::column(format!("Arrow {} data: {e}", array.data_type())))
}

/// Maps every valid value with `f`; the first value `f` refuses fails with its row and
/// `describe(value)`. Vectorised; the failing row is searched for only after a failure.
fn try_map<I, O>(
    array: &PrimitiveArray<I>,
    f: impl Fn(I::Native) -> Option<O::Native>,
    describe: impl Fn(I::Native) -> String,
) -> std::result::Result<PrimitiveArray<O>, Fail>
where
    I: ArrowPrimitiveType,
    O: ArrowPrimitiveType,
{
    array
        .try_unary::<_, O, ()>(|x| f(x).ok_or(()))
        .map_err(|()| {
            let row = (0..array.len())
                .find(|&i| array.is_valid(i) && f(array.value(i)).is_none())
                .unwrap_or(0);
            Fail::row(row, describe(array.value(row)))
        })
}

/// Checks that every valid value maps to a bool (0 or 1), then maps them.
fn to_bool<I: ArrowPrimitiveType>(
    array: &PrimitiveArray<I>,
    f: impl Fn(I::Native) -> Option<bool>,
    describe: impl Fn(I::Native) -> String,
) -> Converted {
    if let Some(row) = (0..array.len()).find(|&i| array.is_valid(i) && f(array.value(i)).is_none())
    {
        return Err(Fail::row(row, describe(array.value(row))));
    }
    Ok(Arc::new(BooleanArray::from_unary(array, |x| {
        f(x).unwrap_or(false)
    })))
}

fn out_of_range(value: impl std::fmt::Display, target: TargetType) -> String {
    format!("value {value} does not fit {target}")
}

fn convert(array: &ArrayRef, odps: &OdpsType, target: TargetType) -> Converted {
    use OdpsType as O;
    use TargetType as T;
    if matches!(target, T::Bytes) {
        return match odps {
            O::Binary | O::Blob => cast(array, &DataType::Binary),
            _ => cast(convert(array, odps, T::String)?.as_ref(), &DataType::Binary),
        };
    }
    match odps {
        O::TinyInt | O::SmallInt | O::Int | O::BigInt => from_integers(array, target),
        O::Float | O::Double => from_floats(array, target),
        O::Decimal(_) => from_decimals(array, target),
        O::Boolean => cast(array, &target.arrow_type()),
        O::String | O::Varchar(_) | O::Char(_) | O::Json => from_text(array, target),
        O::Binary | O::Blob => from_binary(array),
        O::Date => match target {
            T::String => cast(array, &DataType::Utf8),
            _ => cast(
                cast(array, &DataType::Date32)?.as_ref(),
                &target.arrow_type(),
            ),
        },
        O::DateTime => from_timestamps(array, TimeUnit::Millisecond, target),
        O::Timestamp | O::TimestampNtz => from_timestamps(array, TimeUnit::Nanosecond, target),
        O::IntervalDayTime => from_day_time(array, target),
        O::IntervalYearMonth => from_year_month(array, target),
        O::Array(_) | O::Map(..) | O::Struct(_) => to_json(array),
    }
}

fn from_integers(array: &ArrayRef, target: TargetType) -> Converted {
    use TargetType as T;
    if target == T::String {
        return cast(array, &DataType::Utf8);
    }
    let wide = cast(array, &DataType::Int64)?;
    let values = wide.as_primitive::<Int64Type>();
    Ok(match target {
        T::Int32 => Arc::new(try_map::<_, Int32Type>(
            values,
            |x| i32::try_from(x).ok(),
            |x| out_of_range(x, target),
        )?),
        T::Int64 => wide.clone(),
        T::Float32 => Arc::new(values.unary::<_, arrow_array::types::Float32Type>(|x| x as f32)),
        T::Float64 => Arc::new(values.unary::<_, Float64Type>(|x| x as f64)),
        _ => to_bool(
            values,
            |x| match x {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            },
            |x| format!("value {x} is not 0 or 1"),
        )?,
    })
}

/// Whether a float is a whole number in `[min, max)` (NaN and infinities are not).
fn whole_in(x: f64, min: f64, max_exclusive: f64) -> bool {
    x.fract() == 0.0 && x >= min && x < max_exclusive
}

fn from_floats(array: &ArrayRef, target: TargetType) -> Converted {
    use TargetType as T;
    if target == T::String {
        return cast(array, &DataType::Utf8);
    }
    if target == T::Float32 && array.data_type() == &DataType::Float32 {
        return Ok(array.clone());
    }
    let wide = cast(array, &DataType::Float64)?;
    let values = wide.as_primitive::<Float64Type>();
    let not_whole = |x: f64| format!("value {x} is not a whole number within the {target} range");
    Ok(match target {
        T::Int32 => Arc::new(try_map::<_, Int32Type>(
            values,
            |x| whole_in(x, -2_147_483_648.0, 2_147_483_648.0).then_some(x as i32),
            not_whole,
        )?),
        T::Int64 => Arc::new(try_map::<_, Int64Type>(
            values,
            |x| {
                whole_in(x, -9_223_372_036_854_775_808.0, 9_223_372_036_854_775_808.0)
                    .then_some(x as i64)
            },
            not_whole,
        )?),
        T::Float32 => Arc::new(try_map::<_, arrow_array::types::Float32Type>(
            values,
            |x| {
                let y = x as f32;
                (!x.is_finite() || y.is_finite()).then_some(y)
            },
            |x| out_of_range(x, target),
        )?),
        T::Float64 => wide.clone(),
        _ => to_bool(
            values,
            |x| {
                if x == 0.0 {
                    Some(false)
                } else if x == 1.0 {
                    Some(true)
                } else {
                    None
                }
            },
            |x| format!("value {x} is not 0 or 1"),
        )?,
    })
}

fn from_decimals(array: &ArrayRef, target: TargetType) -> Converted {
    use TargetType as T;
    let (precision, scale) = match array.data_type() {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => ((*p).min(38), *s),
        other => return Err(Fail::column(format!("Arrow {other} data is not a decimal"))),
    };
    if matches!(target, T::String | T::Float32 | T::Float64) {
        return cast(array, &target.arrow_type());
    }
    let decimals = cast(array, &DataType::Decimal128(precision, scale))?;
    let values = decimals.as_primitive::<Decimal128Type>();
    let show = |v: i128| Decimal128Type::format_decimal(v, precision, scale);
    // Unscaled value of 1; a negative scale multiplies instead (MaxCompute has none).
    let (one, multiply) = (10i128.pow(scale.unsigned_abs() as u32), scale < 0);
    let whole = move |v: i128| -> Option<i128> {
        if multiply {
            v.checked_mul(one)
        } else {
            (v % one == 0).then_some(v / one)
        }
    };
    let not_whole = |v: i128| {
        format!(
            "value {} is not a whole number within the {target} range",
            show(v)
        )
    };
    Ok(match target {
        T::Int32 => Arc::new(try_map::<_, Int32Type>(
            values,
            |v| whole(v).and_then(|w| i32::try_from(w).ok()),
            not_whole,
        )?),
        T::Int64 => Arc::new(try_map::<_, Int64Type>(
            values,
            |v| whole(v).and_then(|w| i64::try_from(w).ok()),
            not_whole,
        )?),
        _ => to_bool(
            values,
            |v| match whole(v) {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            |v| format!("value {} is not 0 or 1", show(v)),
        )?,
    })
}

/// Parses every non-empty text with `parse`; empty text becomes NULL (then the default).
fn parse_texts<O: ArrowPrimitiveType>(
    texts: &StringArray,
    parse: impl Fn(&str) -> Option<O::Native>,
    target: TargetType,
) -> Converted {
    let mut values = Vec::with_capacity(texts.len());
    for (row, text) in texts.iter().enumerate() {
        let value = match text.map(|t| t.trim_ascii()) {
            None | Some("") => None,
            Some(t) => Some(parse(t).ok_or_else(|| {
                Fail::row(
                    row,
                    format!("cannot parse {:?} as {target}", text.unwrap_or_default()),
                )
            })?),
        };
        values.push(value);
    }
    Ok(Arc::new(values.into_iter().collect::<PrimitiveArray<O>>()))
}

fn from_text(array: &ArrayRef, target: TargetType) -> Converted {
    use TargetType as T;
    let utf8 = cast(array, &DataType::Utf8)?;
    if target == T::String {
        return Ok(utf8);
    }
    let texts = utf8.as_string::<i32>();
    match target {
        T::Int32 => parse_texts::<Int32Type>(texts, |t| t.parse().ok(), target),
        T::Int64 => parse_texts::<Int64Type>(texts, |t| t.parse().ok(), target),
        T::Float32 => {
            parse_texts::<arrow_array::types::Float32Type>(texts, |t| t.parse().ok(), target)
        }
        T::Float64 => parse_texts::<Float64Type>(texts, |t| t.parse().ok(), target),
        _ => {
            let mut values = Vec::with_capacity(texts.len());
            for (row, text) in texts.iter().enumerate() {
                values.push(match text.map(|t| t.trim_ascii()) {
                    None | Some("") => None,
                    Some(t) if t.eq_ignore_ascii_case("true") || t == "1" => Some(true),
                    Some(t) if t.eq_ignore_ascii_case("false") || t == "0" => Some(false),
                    Some(_) => {
                        return Err(Fail::row(
                            row,
                            format!(
                                "cannot parse {:?} as bool (expected true, false, 1 or 0)",
                                text.unwrap_or_default()
                            ),
                        ));
                    }
                });
            }
            Ok(Arc::new(BooleanArray::from(values)))
        }
    }
}

fn from_binary(array: &ArrayRef) -> Converted {
    let binary = cast(array, &DataType::Binary)?;
    let bytes = binary.as_binary::<i32>();
    if let Some(row) = bytes
        .iter()
        .position(|b| b.is_some_and(|b| std::str::from_utf8(b).is_err()))
    {
        return Err(Fail::row(
            row,
            "the bytes are not valid UTF-8; read the column as bytes",
        ));
    }
    cast(binary.as_ref(), &DataType::Utf8)
}

fn from_timestamps(array: &ArrayRef, unit: TimeUnit, target: TargetType) -> Converted {
    let DataType::Timestamp(from, _) = array.data_type() else {
        return Err(Fail::column(format!(
            "Arrow {} data is not a timestamp",
            array.data_type()
        )));
    };
    if target == TargetType::String {
        return cast(array, &DataType::Utf8);
    }
    let per_second = |u: TimeUnit| -> i64 {
        match u {
            TimeUnit::Second => 1,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1_000_000,
            TimeUnit::Nanosecond => 1_000_000_000,
        }
    };
    let (have, want) = (per_second(*from), per_second(unit));
    let raw = cast(array, &DataType::Int64)?;
    let values = raw.as_primitive::<Int64Type>();
    let out: Int64Array = if want >= have {
        let factor = want / have;
        try_map::<_, Int64Type>(
            values,
            |x| x.checked_mul(factor),
            |x| {
                format!(
                    "{x} {} since the epoch does not fit int64 {}",
                    unit_name(*from),
                    unit_name(unit)
                )
            },
        )?
    } else {
        let divisor = have / want;
        values.unary(|x| x.div_euclid(divisor))
    };
    Ok(Arc::new(out))
}

fn unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "seconds",
        TimeUnit::Millisecond => "milliseconds",
        TimeUnit::Microsecond => "microseconds",
        TimeUnit::Nanosecond => "nanoseconds",
    }
}

fn from_day_time(array: &ArrayRef, target: TargetType) -> Converted {
    let DataType::Interval(arrow_schema::IntervalUnit::DayTime) = array.data_type() else {
        return Err(Fail::column(format!(
            "Arrow {} data is not a day-time interval",
            array.data_type()
        )));
    };
    let values = array.as_primitive::<IntervalDayTimeType>();
    let millis = values
        .unary::<_, Int64Type>(|v| i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds));
    if target == TargetType::Int64 {
        return Ok(Arc::new(millis));
    }
    let texts: StringArray = millis
        .iter()
        .map(|v| {
            v.map(|total| {
                let sign = if total < 0 { "-" } else { "" };
                let t = total.unsigned_abs();
                let (days, rest) = (t / 86_400_000, t % 86_400_000);
                let (h, m, s, ms) = (
                    rest / 3_600_000,
                    rest / 60_000 % 60,
                    rest / 1000 % 60,
                    rest % 1000,
                );
                format!("{sign}{days} {h:02}:{m:02}:{s:02}.{ms:03}")
            })
        })
        .collect();
    Ok(Arc::new(texts))
}

fn from_year_month(array: &ArrayRef, target: TargetType) -> Converted {
    let DataType::Interval(arrow_schema::IntervalUnit::YearMonth) = array.data_type() else {
        return Err(Fail::column(format!(
            "Arrow {} data is not a year-month interval",
            array.data_type()
        )));
    };
    let months = array
        .as_primitive::<IntervalYearMonthType>()
        .reinterpret_cast::<Int32Type>();
    Ok(match target {
        TargetType::Int32 => Arc::new(months),
        TargetType::Int64 => Arc::new(months.unary::<_, Int64Type>(i64::from)),
        _ => Arc::new(
            months
                .iter()
                .map(|v| {
                    v.map(|m| {
                        let sign = if m < 0 { "-" } else { "" };
                        let m = m.unsigned_abs();
                        format!("{sign}{}-{}", m / 12, m % 12)
                    })
                })
                .collect::<StringArray>(),
        ),
    })
}

/// Nested values as compact JSON text, row by row.
fn to_json(array: &ArrayRef) -> Converted {
    let mut out = Vec::with_capacity(array.len());
    for row in 0..array.len() {
        out.push(if array.is_null(row) {
            None
        } else {
            Some(json_value(array.as_ref(), row)?.to_string())
        });
    }
    Ok(Arc::new(StringArray::from(out)))
}

fn json_value(array: &dyn Array, row: usize) -> std::result::Result<serde_json::Value, Fail> {
    use serde_json::Value as J;
    if array.is_null(row) {
        return Ok(J::Null);
    }
    let text = |array: &dyn Array| -> std::result::Result<String, Fail> {
        let formatter = ArrayFormatter::try_new(array, &FormatOptions::default())
            .map_err(|e| Fail::column(format!("formatting Arrow {}: {e}", array.data_type())))?;
        Ok(formatter.value(row).to_string())
    };
    Ok(match array.data_type() {
        DataType::Boolean => J::Bool(array.as_boolean().value(row)),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let wide = cast(&array.slice(row, 1), &DataType::Int64)?;
            J::from(wide.as_primitive::<Int64Type>().value(0))
        }
        DataType::Float32 | DataType::Float64 => {
            let wide = cast(&array.slice(row, 1), &DataType::Float64)?;
            J::from(wide.as_primitive::<Float64Type>().value(0))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => J::String(text(array)?),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let items = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                DataType::LargeList(_) => array.as_list::<i64>().value(row),
                _ => array.as_fixed_size_list().value(row),
            };
            J::Array(
                (0..items.len())
                    .map(|i| json_value(items.as_ref(), i))
                    .collect::<std::result::Result<_, _>>()?,
            )
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut object = serde_json::Map::new();
            for i in 0..entries.len() {
                let key = match json_value(keys.as_ref(), i)? {
                    J::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, json_value(values.as_ref(), i)?);
            }
            J::Object(object)
        }
        DataType::Struct(fields) => {
            let structs = array.as_struct();
            let mut object = serde_json::Map::new();
            for (field, column) in fields.iter().zip(structs.columns()) {
                object.insert(field.name().clone(), json_value(column.as_ref(), row)?);
            }
            J::Object(object)
        }
        _ => J::String(text(array)?),
    })
}

/// Replaces the NULLs of `array` with `default` (same type).
fn fill_nulls(
    array: ArrayRef,
    default: &RecordDefault,
) -> std::result::Result<ArrayRef, arrow_schema::ArrowError> {
    let Some(nulls) = array.logical_nulls().filter(|n| n.null_count() > 0) else {
        return Ok(array);
    };
    let valid = BooleanArray::new(nulls.inner().clone(), None);
    let fallback = Scalar::new(default.to_array(1));
    arrow_select::zip::zip(&valid, &array, &fallback)
}
