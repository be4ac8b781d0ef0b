//! The conversions of [`TableWriter`](super::TableWriter): rows of [`Value`]s to Arrow
//! arrays, and Arrow data to the Arrow type of the table column it is written to, where that
//! is safe (the rules are in the [writer's docs](super)).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, NullArray, StringArray,
};
use arrow_cast::CastOptions;
use arrow_schema::DataType;
use paiio_storage::types::{Column, OdpsType};

use super::Value;
use crate::error::{Error, Result};

pub(super) fn type_mismatch(column: &str, message: impl Into<String>) -> Error {
    Error::Storage(paiio_storage::Error::type_mismatch(column, message))
}

/// Converts `array` to `want`, the Arrow type of `column`, where that is safe (see the
/// [writer's docs](super)).
pub(super) fn cast_for_column(
    column: &Column,
    want: &DataType,
    array: &ArrayRef,
) -> Result<ArrayRef> {
    use DataType as A;
    let have = array.data_type();
    if have == want {
        return Ok(array.clone());
    }
    let refuse = || {
        type_mismatch(
            &column.name,
            format!(
                "a column of type {} cannot take {}",
                column.ty,
                describe_arrow(have)
            ),
        )
    };
    let integer_data = matches!(
        have,
        A::Int8 | A::Int16 | A::Int32 | A::Int64 | A::UInt8 | A::UInt16 | A::UInt32 | A::UInt64
    );
    let float_data = matches!(have, A::Float16 | A::Float32 | A::Float64);
    let decimal_data = matches!(
        have,
        A::Decimal32(..) | A::Decimal64(..) | A::Decimal128(..) | A::Decimal256(..)
    );
    let text_data = matches!(have, A::Utf8 | A::LargeUtf8 | A::Utf8View);
    let binary_data = matches!(
        have,
        A::Binary | A::LargeBinary | A::BinaryView | A::FixedSizeBinary(_)
    );
    let allowed = matches!(have, A::Null)
        || column.ty.arrow_compatible(have)
        || match &column.ty {
            OdpsType::TinyInt | OdpsType::SmallInt | OdpsType::Int | OdpsType::BigInt => {
                integer_data || float_data || decimal_data || matches!(have, A::Boolean)
            }
            OdpsType::Float | OdpsType::Double | OdpsType::Decimal(_) => {
                integer_data
                    || float_data
                    || decimal_data
                    || (text_data && matches!(column.ty, OdpsType::Decimal(_)))
            }
            OdpsType::Binary | OdpsType::Blob => text_data,
            OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_) | OdpsType::Json => {
                binary_data
            }
            OdpsType::Date | OdpsType::DateTime | OdpsType::Timestamp | OdpsType::TimestampNtz => {
                text_data
            }
            _ => false,
        };
    if !allowed {
        return Err(refuse());
    }
    if column.ty.is_integer() && (float_data || decimal_data) {
        // Only whole numbers: 2.0 is 2, 2.5 is refused rather than truncated.
        let floats = arrow_cast::cast(array, &A::Float64).map_err(|_| refuse())?;
        let floats = floats.as_primitive::<Float64Type>();
        if let Some(row) =
            (0..floats.len()).find(|&i| floats.is_valid(i) && floats.value(i).fract() != 0.0)
        {
            return Err(type_mismatch(
                &column.name,
                format!(
                    "row {row}: {} is not a whole number for a column of type {}",
                    floats.value(row),
                    column.ty
                ),
            ));
        }
    }
    if matches!(column.ty, OdpsType::Float) && float_data {
        let floats = arrow_cast::cast(array, &A::Float64).map_err(|_| refuse())?;
        let floats = floats.as_primitive::<Float64Type>();
        if let Some(row) = (0..floats.len()).find(|&i| {
            floats.is_valid(i)
                && floats.value(i).is_finite()
                && !(floats.value(i) as f32).is_finite()
        }) {
            return Err(type_mismatch(
                &column.name,
                format!(
                    "row {row}: {} does not fit a column of type float",
                    floats.value(row)
                ),
            ));
        }
    }
    if matches!(
        column.ty,
        OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_) | OdpsType::Json
    ) && binary_data
    {
        let bytes = arrow_cast::cast(array, &A::Binary).map_err(|_| refuse())?;
        if let Some(row) = bytes
            .as_binary::<i32>()
            .iter()
            .position(|b| b.is_some_and(|b| std::str::from_utf8(b).is_err()))
        {
            return Err(type_mismatch(
                &column.name,
                format!(
                    "row {row}: the bytes are not valid UTF-8 for a column of type {}",
                    column.ty
                ),
            ));
        }
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(array, want, &options).map_err(|e| {
        type_mismatch(
            &column.name,
            format!(
                "cannot convert {} to {}: {e}",
                describe_arrow(have),
                column.ty
            ),
        )
    })
}

/// `string data (Arrow Utf8)`: the kind of value first, for users who never saw Arrow.
fn describe_arrow(data_type: &DataType) -> String {
    use DataType as A;
    let kind = match data_type {
        A::Utf8 | A::LargeUtf8 | A::Utf8View => "string",
        A::Binary | A::LargeBinary | A::BinaryView | A::FixedSizeBinary(_) => "bytes",
        A::Int8 | A::Int16 | A::Int32 | A::Int64 | A::UInt8 | A::UInt16 | A::UInt32 | A::UInt64 => {
            "int"
        }
        A::Float16 | A::Float32 | A::Float64 => "float",
        A::Boolean => "bool",
        _ => return format!("Arrow {data_type} data"),
    };
    format!("{kind} data (Arrow {data_type})")
}

/// The natural Arrow array of one column of row values.
pub(super) fn values_to_array<'a>(
    values: impl Iterator<Item = &'a Value> + Clone,
    column: &str,
) -> Result<ArrayRef> {
    #[derive(PartialEq, Clone, Copy)]
    enum Kind {
        Null,
        Bool,
        Int,
        Float,
        String,
        Bytes,
    }
    let kind_of = |v: &Value| match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::String(_) => Kind::String,
        Value::Bytes(_) => Kind::Bytes,
    };
    let name = |k: Kind| match k {
        Kind::Null => "NULL",
        Kind::Bool => "a bool",
        Kind::Int => "an int",
        Kind::Float => "a float",
        Kind::String => "a string",
        Kind::Bytes => "bytes",
    };
    let mut kind = Kind::Null;
    for (row, value) in values.clone().enumerate() {
        let k = kind_of(value);
        kind = match (kind, k) {
            (a, Kind::Null) => a,
            (Kind::Null, b) => b,
            (a, b) if a == b => a,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            (a, b) => {
                return Err(type_mismatch(
                    column,
                    format!(
                        "row {row} holds {} among values that are {}",
                        name(b),
                        name(a)
                    ),
                ));
            }
        };
    }
    let n = values.clone().count();
    Ok(match kind {
        Kind::Null => Arc::new(NullArray::new(n)),
        Kind::Bool => Arc::new(
            values
                .map(|v| {
                    if let Value::Bool(b) = v {
                        Some(*b)
                    } else {
                        None
                    }
                })
                .collect::<BooleanArray>(),
        ),
        Kind::Int => Arc::new(
            values
                .map(|v| {
                    if let Value::Int(i) = v {
                        Some(*i)
                    } else {
                        None
                    }
                })
                .collect::<Int64Array>(),
        ),
        Kind::Float => Arc::new(
            values
                .map(|v| match v {
                    Value::Float(f) => Some(*f),
                    Value::Int(i) => Some(*i as f64),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ),
        Kind::String => Arc::new(
            values
                .map(|v| {
                    if let Value::String(s) = v {
                        Some(s.as_str())
                    } else {
                        None
                    }
                })
                .collect::<StringArray>(),
        ),
        Kind::Bytes => Arc::new(
            values
                .map(|v| {
                    if let Value::Bytes(b) = v {
                        Some(b.as_slice())
                    } else {
                        None
                    }
                })
                .collect::<BinaryArray>(),
        ),
    })
}
