//! The mapping between MaxCompute types and Arrow: the Arrow type data of each type is
//! delivered as ([`OdpsType::to_arrow`], under [`ArrowOptions`]), the MaxCompute type an
//! Arrow type becomes ([`OdpsType::from_arrow`]), and whether Arrow data may be written to
//! a column ([`OdpsType::arrow_compatible`]); the same for whole schemas.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, IntervalUnit, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

use super::{
    Column, MAX_TYPE_DEPTH, OdpsType, StructField, TableSchema, UNBOUNDED_DECIMAL_ARROW,
    UNBOUNDED_DECIMAL_PRECISION_SCALE, check_decimal, too_deep,
};
use crate::error::{Error, Result};

/// How timestamps are delivered as Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrowOptions {
    /// Unit of TIMESTAMP and TIMESTAMP_NTZ columns (default nanoseconds).
    pub timestamp_unit: TimeUnit,
    /// Unit of DATETIME columns (default milliseconds).
    pub datetime_unit: TimeUnit,
    /// STRING, VARCHAR, CHAR and JSON as large_utf8 instead of utf8.
    pub large_string: bool,
}

impl Default for ArrowOptions {
    fn default() -> Self {
        ArrowOptions {
            timestamp_unit: TimeUnit::Nanosecond,
            datetime_unit: TimeUnit::Millisecond,
            large_string: false,
        }
    }
}

impl OdpsType {
    /// The Arrow type data of this type is delivered as.
    ///
    /// Strings (STRING, VARCHAR, CHAR, JSON) are utf8, or large_utf8 with
    /// `options.large_string`; the unbounded decimal is decimal128(38,18); DATETIME uses
    /// `options.datetime_unit` and TIMESTAMP/TIMESTAMP_NTZ `options.timestamp_unit`, all
    /// without a time zone; an ARRAY's element field is `element`, a MAP's entries are
    /// `entries: struct<key (not null), value>`; nested fields are nullable.
    pub fn to_arrow(&self, options: &ArrowOptions) -> DataType {
        match self {
            OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_) | OdpsType::Json => {
                if options.large_string {
                    DataType::LargeUtf8
                } else {
                    DataType::Utf8
                }
            }
            OdpsType::Binary | OdpsType::Blob => DataType::Binary,
            OdpsType::TinyInt => DataType::Int8,
            OdpsType::SmallInt => DataType::Int16,
            OdpsType::Int => DataType::Int32,
            OdpsType::BigInt => DataType::Int64,
            OdpsType::Boolean => DataType::Boolean,
            OdpsType::Float => DataType::Float32,
            OdpsType::Double => DataType::Float64,
            OdpsType::Decimal(precision_scale) => {
                let (precision, scale) = precision_scale.unwrap_or(UNBOUNDED_DECIMAL_ARROW);
                DataType::Decimal128(precision, scale)
            }
            OdpsType::Date => DataType::Date32,
            OdpsType::DateTime => DataType::Timestamp(options.datetime_unit, None),
            OdpsType::Timestamp | OdpsType::TimestampNtz => {
                DataType::Timestamp(options.timestamp_unit, None)
            }
            OdpsType::IntervalDayTime => DataType::Interval(IntervalUnit::DayTime),
            OdpsType::IntervalYearMonth => DataType::Interval(IntervalUnit::YearMonth),
            OdpsType::Array(element) => DataType::List(Arc::new(Field::new(
                "element",
                element.to_arrow(options),
                true,
            ))),
            OdpsType::Map(key, value) => {
                let entries = Fields::from(vec![
                    Field::new("key", key.to_arrow(options), false),
                    Field::new("value", value.to_arrow(options), true),
                ]);
                DataType::Map(
                    Arc::new(Field::new("entries", DataType::Struct(entries), false)),
                    false,
                )
            }
            OdpsType::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|field| Field::new(&field.name, field.ty.to_arrow(options), true))
                    .collect(),
            ),
        }
    }

    /// The MaxCompute type a new column gets for Arrow data of type `data_type`.
    ///
    /// Signed integers, floats, booleans, utf8 and binary (all variants), decimals, dates,
    /// year-month and day-time intervals, lists, maps and structs have one. Second and
    /// millisecond timestamps become DATETIME, micro- and nanosecond ones TIMESTAMP, whatever
    /// their time zone. Unsigned integers, float16, null, times, durations and other types
    /// have none and are errors naming the type. A decimal128(38,18) becomes DECIMAL(38,18),
    /// never the legacy unbounded DECIMAL.
    pub fn from_arrow(data_type: &DataType) -> Result<OdpsType> {
        checked_type_from_arrow(data_type).map_err(|message| Error::invalid("Arrow type", message))
    }

    /// Whether Arrow data of type `data_type` can be written to a column of this type without
    /// loss of meaning.
    ///
    /// Null data fits any column. Integer columns take signed integers of the same width or
    /// narrower; DOUBLE takes float32 and float64, FLOAT only float32; DECIMAL(p,s) takes
    /// decimals whose scale is at most `s` and whose integer digits fit in `p - s` (the
    /// unbounded decimal counts as 54,18); string columns take utf8, large_utf8 and
    /// utf8_view; BINARY and BLOB any binary; DATE only date32; DATETIME, TIMESTAMP and
    /// TIMESTAMP_NTZ a timestamp of any unit and time zone. Nested types must match in
    /// shape, recursively; struct fields match by position and by name, case-insensitively.
    pub fn arrow_compatible(&self, data_type: &DataType) -> bool {
        use DataType as A;
        if matches!(data_type, A::Null) {
            return true;
        }
        match self {
            OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_) | OdpsType::Json => {
                matches!(data_type, A::Utf8 | A::LargeUtf8 | A::Utf8View)
            }
            OdpsType::Binary | OdpsType::Blob => matches!(
                data_type,
                A::Binary | A::LargeBinary | A::BinaryView | A::FixedSizeBinary(_)
            ),
            OdpsType::TinyInt | OdpsType::SmallInt | OdpsType::Int | OdpsType::BigInt => {
                let arrow_bits = match data_type {
                    A::Int8 => 8,
                    A::Int16 => 16,
                    A::Int32 => 32,
                    A::Int64 => 64,
                    _ => return false,
                };
                self.integer_bits().is_some_and(|bits| arrow_bits <= bits)
            }
            OdpsType::Boolean => matches!(data_type, A::Boolean),
            OdpsType::Float => matches!(data_type, A::Float32),
            OdpsType::Double => matches!(data_type, A::Float32 | A::Float64),
            OdpsType::Decimal(precision_scale) => {
                let (precision, scale) =
                    precision_scale.unwrap_or(UNBOUNDED_DECIMAL_PRECISION_SCALE);
                match data_type {
                    A::Decimal32(p, s)
                    | A::Decimal64(p, s)
                    | A::Decimal128(p, s)
                    | A::Decimal256(p, s) => {
                        *s >= 0
                            && *s <= scale
                            && i16::from(*p) - i16::from(*s)
                                <= i16::from(precision) - i16::from(scale)
                    }
                    _ => false,
                }
            }
            OdpsType::Date => matches!(data_type, A::Date32),
            OdpsType::DateTime | OdpsType::Timestamp | OdpsType::TimestampNtz => {
                matches!(data_type, A::Timestamp(..))
            }
            OdpsType::IntervalDayTime => matches!(data_type, A::Interval(IntervalUnit::DayTime)),
            OdpsType::IntervalYearMonth => {
                matches!(data_type, A::Interval(IntervalUnit::YearMonth))
            }
            OdpsType::Array(element) => match data_type {
                A::List(field) | A::LargeList(field) | A::FixedSizeList(field, _) => {
                    element.arrow_compatible(field.data_type())
                }
                _ => false,
            },
            OdpsType::Map(key, value) => match map_key_value(data_type) {
                Some((key_field, value_field)) => {
                    key.arrow_compatible(key_field.data_type())
                        && value.arrow_compatible(value_field.data_type())
                }
                None => false,
            },
            OdpsType::Struct(fields) => match data_type {
                A::Struct(arrow_fields) => {
                    fields.len() == arrow_fields.len()
                        && fields
                            .iter()
                            .zip(arrow_fields.iter())
                            .all(|(field, arrow_field)| {
                                field.name.to_lowercase() == arrow_field.name().to_lowercase()
                                    && field.ty.arrow_compatible(arrow_field.data_type())
                            })
                }
                _ => false,
            },
        }
    }
}

/// The key and value fields of an Arrow map whose entries are a two-field struct.
fn map_key_value(data_type: &DataType) -> Option<(&Field, &Field)> {
    let DataType::Map(entries, _) = data_type else {
        return None;
    };
    match entries.data_type() {
        DataType::Struct(fields) if fields.len() == 2 => Some((&fields[0], &fields[1])),
        _ => None,
    }
}

/// Whether an Arrow type nests more than [`MAX_TYPE_DEPTH`] levels, counted as for the
/// MaxCompute type it would become (a map's entries struct is not a level of its own).
/// Computed without recursion, and without looking below the limit, so that it is safe on
/// a type of any depth.
fn arrow_too_deep(data_type: &DataType) -> bool {
    use DataType as A;
    let mut pending = vec![(data_type, 0usize)];
    while let Some((data_type, depth)) = pending.pop() {
        let children: Vec<&DataType> = match data_type {
            A::List(field)
            | A::LargeList(field)
            | A::ListView(field)
            | A::LargeListView(field)
            | A::FixedSizeList(field, _) => vec![field.data_type()],
            A::Map(entries, _) => match entries.data_type() {
                A::Struct(fields) => fields.iter().map(|f| f.data_type()).collect(),
                other => vec![other],
            },
            A::Struct(fields) => fields.iter().map(|f| f.data_type()).collect(),
            A::Union(fields, _) => fields.iter().map(|(_, f)| f.data_type()).collect(),
            A::Dictionary(key, value) => vec![key.as_ref(), value.as_ref()],
            A::RunEndEncoded(run_ends, values) => vec![run_ends.data_type(), values.data_type()],
            _ => Vec::new(),
        };
        if children.is_empty() {
            continue;
        }
        if depth >= MAX_TYPE_DEPTH {
            return true;
        }
        pending.extend(children.into_iter().map(|child| (child, depth + 1)));
    }
    false
}

/// [`OdpsType::from_arrow`] with a bare message, including the limits checks. A type too
/// deep is refused before anything recurses into it (or prints it).
fn checked_type_from_arrow(data_type: &DataType) -> Result<OdpsType, String> {
    if arrow_too_deep(data_type) {
        return Err(format!("an Arrow type in which {}", too_deep()));
    }
    let ty = type_from_arrow(data_type)?;
    ty.check()
        .map_err(|message| format!("{data_type}: {message}"))?;
    Ok(ty)
}

fn type_from_arrow(data_type: &DataType) -> Result<OdpsType, String> {
    use DataType as A;
    let no_equivalent = |hint: &str| Err(format!("{data_type} has no MaxCompute equivalent{hint}"));
    Ok(match data_type {
        A::Boolean => OdpsType::Boolean,
        A::Int8 => OdpsType::TinyInt,
        A::Int16 => OdpsType::SmallInt,
        A::Int32 => OdpsType::Int,
        A::Int64 => OdpsType::BigInt,
        A::UInt8 | A::UInt16 | A::UInt32 | A::UInt64 => {
            return no_equivalent(
                " (MaxCompute integers are signed); cast it to a wider signed integer",
            );
        }
        A::Float16 => return no_equivalent("; cast it to float32"),
        A::Float32 => OdpsType::Float,
        A::Float64 => OdpsType::Double,
        A::Utf8 | A::LargeUtf8 | A::Utf8View => OdpsType::String,
        A::Binary | A::LargeBinary | A::BinaryView | A::FixedSizeBinary(_) => OdpsType::Binary,
        A::Decimal32(precision, scale)
        | A::Decimal64(precision, scale)
        | A::Decimal128(precision, scale)
        | A::Decimal256(precision, scale) => OdpsType::Decimal(Some(
            check_decimal(i64::from(*precision), i64::from(*scale))
                .map_err(|message| format!("{data_type}: {message}"))?,
        )),
        A::Date32 | A::Date64 => OdpsType::Date,
        A::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, _) => OdpsType::DateTime,
        A::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, _) => OdpsType::Timestamp,
        A::Interval(IntervalUnit::DayTime) => OdpsType::IntervalDayTime,
        A::Interval(IntervalUnit::YearMonth) => OdpsType::IntervalYearMonth,
        A::List(field) | A::LargeList(field) | A::FixedSizeList(field, _) => {
            OdpsType::Array(Box::new(type_from_arrow(field.data_type())?))
        }
        A::Map(..) => {
            let (key, value) = map_key_value(data_type).ok_or_else(|| {
                format!("{data_type}: map entries must be a struct of a key and a value")
            })?;
            OdpsType::Map(
                Box::new(type_from_arrow(key.data_type())?),
                Box::new(type_from_arrow(value.data_type())?),
            )
        }
        A::Struct(fields) => OdpsType::Struct(
            fields
                .iter()
                .map(|field| {
                    Ok(StructField {
                        name: field.name().clone(),
                        ty: type_from_arrow(field.data_type())?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        A::Null => return no_equivalent("; give the column a concrete type"),
        _ => return no_equivalent(""),
    })
}

impl Column {
    /// The Arrow field data of this column is delivered in: same name and nullability.
    pub fn to_arrow_field(&self, options: &ArrowOptions) -> Field {
        Field::new(&self.name, self.ty.to_arrow(options), self.nullable)
    }
}

impl TableSchema {
    /// The Arrow schema of the data columns, followed by the partition columns if
    /// `include_partition_columns`.
    pub fn to_arrow_schema(
        &self,
        options: &ArrowOptions,
        include_partition_columns: bool,
    ) -> Schema {
        let partition_columns: &[Column] = if include_partition_columns {
            &self.partition_columns
        } else {
            &[]
        };
        Schema::new(
            self.columns
                .iter()
                .chain(partition_columns)
                .map(|column| column.to_arrow_field(options))
                .collect::<Vec<_>>(),
        )
    }

    /// A schema whose data columns are the fields of an Arrow schema, typed as
    /// [`OdpsType::from_arrow`] says, validated as by [`new`](Self::new). A field with no
    /// MaxCompute type is a type mismatch naming it.
    pub fn from_arrow_schema(schema: &Schema) -> Result<TableSchema> {
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let ty = checked_type_from_arrow(field.data_type())
                    .map_err(|message| Error::type_mismatch(field.name(), message))?;
                Ok(Column {
                    name: field.name().clone(),
                    ty,
                    nullable: field.is_nullable(),
                    comment: String::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        TableSchema::new(columns, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::tests::*;
    use proptest::prelude::*;

    #[test]
    fn arrow_types_follow_options() {
        use OdpsType as T;
        let options = ArrowOptions {
            timestamp_unit: TimeUnit::Microsecond,
            datetime_unit: TimeUnit::Second,
            large_string: true,
        };
        let cases = [
            (T::String, DataType::LargeUtf8),
            (T::Varchar(3), DataType::LargeUtf8),
            (T::Char(3), DataType::LargeUtf8),
            (T::Json, DataType::LargeUtf8),
            (T::Binary, DataType::Binary),
            (T::DateTime, DataType::Timestamp(TimeUnit::Second, None)),
            (
                T::Timestamp,
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            (
                T::TimestampNtz,
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            (
                array(T::Json),
                DataType::List(Arc::new(Field::new("element", DataType::LargeUtf8, true))),
            ),
        ];
        for (ty, arrow) in cases {
            assert_eq!(ty.to_arrow(&options), arrow, "{ty}");
            assert!(ty.arrow_compatible(&arrow), "{ty}");
        }
        let millis = ArrowOptions {
            timestamp_unit: TimeUnit::Millisecond,
            ..Default::default()
        };
        assert_eq!(
            T::Timestamp.to_arrow(&millis),
            DataType::Timestamp(TimeUnit::Millisecond, None)
        );
    }

    #[test]
    fn arrow_types_map_to_odps_types() {
        use DataType as A;
        use OdpsType as T;
        let tz: Option<Arc<str>> = Some("UTC".into());
        let element = |dt: A| Arc::new(Field::new("item", dt, true));
        let cases = [
            (A::Boolean, T::Boolean),
            (A::Int8, T::TinyInt),
            (A::Int16, T::SmallInt),
            (A::Int32, T::Int),
            (A::Int64, T::BigInt),
            (A::Float32, T::Float),
            (A::Float64, T::Double),
            (A::Utf8, T::String),
            (A::LargeUtf8, T::String),
            (A::Utf8View, T::String),
            (A::Binary, T::Binary),
            (A::LargeBinary, T::Binary),
            (A::BinaryView, T::Binary),
            (A::FixedSizeBinary(16), T::Binary),
            (A::Decimal128(38, 18), T::Decimal(Some((38, 18)))),
            (A::Decimal128(7, 0), T::Decimal(Some((7, 0)))),
            (A::Date32, T::Date),
            (A::Date64, T::Date),
            (A::Timestamp(TimeUnit::Second, None), T::DateTime),
            (A::Timestamp(TimeUnit::Millisecond, tz.clone()), T::DateTime),
            (A::Timestamp(TimeUnit::Microsecond, None), T::Timestamp),
            (A::Timestamp(TimeUnit::Nanosecond, tz), T::Timestamp),
            (A::Interval(IntervalUnit::DayTime), T::IntervalDayTime),
            (A::Interval(IntervalUnit::YearMonth), T::IntervalYearMonth),
            (A::List(element(A::Int64)), array(T::BigInt)),
            (A::LargeList(element(A::Utf8)), array(T::String)),
            (A::FixedSizeList(element(A::Float64), 3), array(T::Double)),
            (
                A::new_list(
                    A::Struct(Fields::from(vec![Field::new("Aa", A::Int32, true)])),
                    true,
                ),
                array(structure(&[("Aa", T::Int)])),
            ),
        ];
        for (arrow, ty) in cases {
            assert_eq!(OdpsType::from_arrow(&arrow).unwrap(), ty, "{arrow}");
            // A date64 may hold a time of day, which a DATE column would drop: it makes a
            // DATE column, but data must come as date32.
            if arrow != A::Date64 {
                assert!(ty.arrow_compatible(&arrow), "{ty} should accept {arrow}");
            }
        }
        let arrow_map = map(T::String, T::Int).to_arrow(&ArrowOptions::default());
        assert_eq!(
            OdpsType::from_arrow(&arrow_map).unwrap(),
            map(T::String, T::Int)
        );
    }

    #[test]
    fn arrow_types_without_odps_type_are_errors_naming_them() {
        use DataType as A;
        let bad_map = A::Map(Arc::new(Field::new("entries", A::Int32, false)), false);
        let nested_key = map(OdpsType::Int, OdpsType::Int).to_arrow(&ArrowOptions::default());
        let map_with_nested_key = A::Map(
            Arc::new(Field::new(
                "entries",
                A::Struct(Fields::from(vec![
                    Field::new("key", nested_key, false),
                    Field::new("value", A::Int32, true),
                ])),
                false,
            )),
            false,
        );
        let duplicate_fields = A::Struct(Fields::from(vec![
            Field::new("a", A::Int32, true),
            Field::new("A", A::Int32, true),
        ]));
        let cases = [
            (A::UInt8, "UInt8"),
            (A::UInt64, "UInt64"),
            (A::Float16, "Float16"),
            (A::Null, "Null"),
            (A::Time32(TimeUnit::Second), "Time32"),
            (A::Duration(TimeUnit::Second), "Duration"),
            (A::Interval(IntervalUnit::MonthDayNano), "Interval"),
            (A::Decimal128(10, -2), "decimal scale -2"),
            (A::Decimal256(50, 2), "decimal precision 50"),
            (A::Struct(Fields::empty()), "at least one field"),
            (
                A::List(Arc::new(Field::new("item", A::UInt16, true))),
                "UInt16",
            ),
            (bad_map, "map entries must be a struct"),
            (map_with_nested_key, "map key type must be primitive"),
            (duplicate_fields, "duplicate struct field name"),
        ];
        for (arrow, expected) in cases {
            let message = OdpsType::from_arrow(&arrow).unwrap_err().to_string();
            assert!(message.starts_with("invalid Arrow type: "), "{message}");
            assert!(
                message.contains(expected),
                "{arrow}: {message:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn arrow_compatibility() {
        use DataType as A;
        use OdpsType as T;
        let compatible = [
            (T::BigInt, A::Int8),
            (T::BigInt, A::Int32),
            (T::Int, A::Int16),
            (T::Double, A::Float32),
            (T::Decimal(Some((10, 2))), A::Decimal128(10, 2)),
            (T::Decimal(Some((10, 2))), A::Decimal128(9, 1)),
            (T::Decimal(Some((10, 2))), A::Decimal128(4, 0)),
            (T::Decimal(None), A::Decimal128(38, 18)),
            (T::Decimal(None), A::Decimal128(36, 0)),
            (
                T::DateTime,
                A::Timestamp(TimeUnit::Nanosecond, Some("Asia/Shanghai".into())),
            ),
            (T::TimestampNtz, A::Timestamp(TimeUnit::Second, None)),
            (T::Varchar(5), A::Utf8View),
            (T::Json, A::LargeUtf8),
            (T::Blob, A::LargeBinary),
            (T::Date, A::Null),
            (array(T::Int), A::Null),
            (
                array(T::BigInt),
                A::LargeList(Arc::new(Field::new("item", A::Int32, true))),
            ),
            (
                array(T::BigInt),
                A::List(Arc::new(Field::new("item", A::Null, true))),
            ),
            (
                structure(&[("a", T::BigInt), ("b", T::String)]),
                A::Struct(Fields::from(vec![
                    Field::new("A", A::Int64, false),
                    Field::new("b", A::LargeUtf8, true),
                ])),
            ),
        ];
        for (ty, arrow) in compatible {
            assert!(ty.arrow_compatible(&arrow), "{ty} should accept {arrow}");
        }
        let incompatible = [
            (T::Int, A::Int64),
            (T::TinyInt, A::UInt8),
            (T::BigInt, A::UInt32),
            (T::BigInt, A::Float64),
            (T::Float, A::Float64),
            (T::Decimal(Some((10, 2))), A::Decimal128(10, 3)),
            (T::Decimal(Some((10, 2))), A::Decimal128(10, 1)),
            (T::Decimal(Some((10, 2))), A::Decimal128(5, -1)),
            (T::Decimal(None), A::Decimal128(38, 0)),
            (T::Decimal(Some((10, 2))), A::Float64),
            (T::Date, A::Date64),
            (T::Date, A::Timestamp(TimeUnit::Second, None)),
            (T::String, A::Binary),
            (T::Binary, A::Utf8),
            (T::Boolean, A::Int8),
            (T::IntervalDayTime, A::Interval(IntervalUnit::YearMonth)),
            (array(T::Int), A::Int32),
            (
                array(T::Int),
                A::List(Arc::new(Field::new("item", A::Int64, true))),
            ),
            (map(T::String, T::Int), A::Utf8),
            (
                structure(&[("a", T::BigInt)]),
                A::Struct(Fields::from(vec![Field::new("b", A::Int64, true)])),
            ),
            (
                structure(&[("a", T::BigInt)]),
                A::Struct(Fields::from(vec![
                    Field::new("a", A::Int64, true),
                    Field::new("b", A::Int64, true),
                ])),
            ),
        ];
        for (ty, arrow) in incompatible {
            assert!(
                !ty.arrow_compatible(&arrow),
                "{ty} should not accept {arrow}"
            );
        }
    }

    #[test]
    fn arrow_schemas() {
        let schema = sample_schema();
        let options = ArrowOptions::default();
        let arrow = schema.to_arrow_schema(&options, false);
        let names: Vec<&str> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", "tags", "m"]);
        assert!(!arrow.field(1).is_nullable());
        assert_eq!(
            arrow.field(2).data_type(),
            &schema.columns[2].ty.to_arrow(&options)
        );
        let with_partitions = schema.to_arrow_schema(&options, true);
        assert_eq!(with_partitions.fields().len(), 6);
        assert_eq!(with_partitions.field(5).data_type(), &DataType::Int8);

        // Arrow fields carry no comments.
        let back = TableSchema::from_arrow_schema(&arrow).unwrap();
        let mut uncommented = schema.columns.clone();
        uncommented
            .iter_mut()
            .for_each(|column| column.comment.clear());
        assert_eq!(back.columns, uncommented);
        assert!(back.partition_columns.is_empty());

        let bad = Schema::new(vec![
            Field::new("ok", DataType::Int64, true),
            Field::new("u", DataType::UInt32, true),
        ]);
        let error = TableSchema::from_arrow_schema(&bad).unwrap_err();
        assert!(
            matches!(&error, Error::TypeMismatch { column, .. } if column == "u"),
            "{error}"
        );
        assert!(TableSchema::from_arrow_schema(&Schema::empty()).is_err());
    }

    /// The type `from_arrow(to_arrow(ty))` gives: Arrow has one string, one binary and one
    /// timestamp family, and the unbounded decimal travels as decimal(38,18).
    fn canonical(ty: &OdpsType) -> OdpsType {
        use OdpsType as T;
        match ty {
            T::Varchar(_) | T::Char(_) | T::Json => T::String,
            T::Blob => T::Binary,
            T::Decimal(None) => T::Decimal(Some(UNBOUNDED_DECIMAL_ARROW)),
            T::TimestampNtz => T::Timestamp,
            T::Array(element) => T::Array(Box::new(canonical(element))),
            T::Map(key, value) => T::Map(Box::new(canonical(key)), Box::new(canonical(value))),
            T::Struct(fields) => T::Struct(
                fields
                    .iter()
                    .map(|f| StructField {
                        name: f.name.clone(),
                        ty: canonical(&f.ty),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    #[test]
    fn arrow_types_nest_at_most_max_type_depth_levels() {
        let list =
            |data_type: DataType| DataType::List(Arc::new(Field::new("element", data_type, true)));
        let nested = |depth: usize| (0..depth).fold(DataType::Int64, |t, _| list(t));
        assert_eq!(
            OdpsType::from_arrow(&nested(MAX_TYPE_DEPTH)).unwrap(),
            nested_arrays(MAX_TYPE_DEPTH)
        );
        // A map counts one level, like MAP: its entries struct is not a level of its own.
        let options = ArrowOptions::default();
        let maps = (0..MAX_TYPE_DEPTH).fold(OdpsType::Int, |ty, _| map(OdpsType::String, ty));
        assert_eq!(
            OdpsType::from_arrow(&maps.to_arrow(&options)).unwrap(),
            maps
        );
        let too_deep = map(OdpsType::String, maps);
        assert!(OdpsType::from_arrow(&too_deep.to_arrow(&options)).is_err());
        for depth in [MAX_TYPE_DEPTH + 1, 1_000] {
            let message = OdpsType::from_arrow(&nested(depth))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&format!("the limit is {MAX_TYPE_DEPTH}")),
                "{message}"
            );
            let schema = Schema::new(vec![Field::new("deep", nested(depth), true)]);
            let message = TableSchema::from_arrow_schema(&schema)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains("deep") && message.contains("the limit is"),
                "{message}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arrow_round_trips_to_canonical_types(ty in any_type()) {
            let options = ArrowOptions::default();
            let arrow = ty.to_arrow(&options);
            prop_assert!(ty.arrow_compatible(&arrow), "{} vs {}", ty, arrow);
            prop_assert_eq!(OdpsType::from_arrow(&arrow).unwrap(), canonical(&ty));
            let large = ArrowOptions { large_string: true, ..options };
            prop_assert!(ty.arrow_compatible(&ty.to_arrow(&large)));
        }
    }
}
