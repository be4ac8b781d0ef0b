//! The MaxCompute type system: every type, type strings, table schemas, and the mapping
//! to and from Arrow.
//!
//! Three representations of a type meet here, and each conversion is total in one direction
//! and checked in the other:
//!
//! * **type strings** (`map<string,array<bigint>>`), as written in DDL and shown by the
//!   service: [`OdpsType`] implements [`FromStr`](std::str::FromStr) and
//!   [`Display`](std::fmt::Display), and printing a parsed type always gives back a string
//!   that parses to the same type;
//! * **write-schema JSON**, the form the Storage API exchanges (numeric type codes, nested
//!   `SubTypes`): [`OdpsType::to_write_schema_json`] and [`OdpsType::from_write_schema_json`]
//!   (in [`crate::protocol::storage::schema`]);
//! * **Arrow** data types, in which data travels: [`OdpsType::to_arrow`] (every type has
//!   one), [`OdpsType::from_arrow`] (the MaxCompute type a new column gets for an Arrow type)
//!   and [`OdpsType::arrow_compatible`] (whether Arrow data may be written to a column).
//!
//! Everything read from outside (strings, JSON, Arrow schemas) is validated against the same
//! limits the service enforces, so a type that passes here is one MaxCompute accepts.
//!
//! The code is laid out by representation: this module has the types themselves, their
//! limits and their validation; `parse.rs` reads type strings and column lists (and prints
//! them back); `arrow.rs` maps types and schemas to and from Arrow.

use std::collections::HashSet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::uri::validate_name;

mod arrow;
mod parse;

pub use arrow::ArrowOptions;

/// A MaxCompute column type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OdpsType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Float,
    Double,
    Boolean,
    /// `DECIMAL` (`None`: the legacy unbounded decimal, Arrow decimal(38,18)) or
    /// `DECIMAL(precision, scale)`.
    Decimal(Option<(u8, i8)>),
    String,
    Varchar(u32),
    Char(u32),
    Binary,
    Date,
    DateTime,
    Timestamp,
    TimestampNtz,
    IntervalDayTime,
    IntervalYearMonth,
    Array(Box<OdpsType>),
    Map(Box<OdpsType>, Box<OdpsType>),
    Struct(Vec<StructField>),
    Json,
    Blob,
}

/// One field of a STRUCT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StructField {
    pub name: String,
    pub ty: OdpsType,
}

/// A table column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// Serialized as the type string (`"array<bigint>"`).
    #[serde(rename = "type", with = "type_string")]
    pub ty: OdpsType,
    #[serde(default = "default_true")]
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

fn default_true() -> bool {
    true
}

/// A table's columns: data columns, then partition columns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableSchema {
    pub columns: Vec<Column>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_columns: Vec<Column>,
}

mod type_string {
    use super::OdpsType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ty: &OdpsType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ty.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OdpsType, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How deeply ARRAY, MAP and STRUCT may nest in one type: `bigint` nests 0 levels,
/// `array<bigint>` 1, `map<string,array<bigint>>` 2. MaxCompute documents no figure; it
/// rejects absurd depths, and no real schema comes near 32. Every conversion that reads a
/// type from outside (type strings, write-schema JSON, Arrow types) refuses deeper ones
/// before recursing into them, so a hostile type cannot exhaust the stack.
pub const MAX_TYPE_DEPTH: usize = 32;

/// The largest precision of a bounded `DECIMAL(p,s)`.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// The largest length of a `VARCHAR(n)`.
pub const MAX_VARCHAR_LENGTH: u32 = 65_535;

/// The largest length of a `CHAR(n)`.
pub const MAX_CHAR_LENGTH: u32 = 255;

/// Precision and scale of the legacy unbounded `DECIMAL` as the service reports them in
/// write schemas (36 integer and 18 fractional digits).
pub const UNBOUNDED_DECIMAL_PRECISION_SCALE: (u8, i8) = (54, 18);

/// The Arrow decimal the legacy unbounded `DECIMAL` is delivered as: the widest
/// decimal128 that keeps all 18 fractional digits.
pub const UNBOUNDED_DECIMAL_ARROW: (u8, i8) = (38, 18);

impl OdpsType {
    /// The lowercase base name of the type, without parameters or element types
    /// (`"decimal"`, `"varchar"`, `"array"`).
    pub fn name(&self) -> &'static str {
        match self {
            OdpsType::TinyInt => "tinyint",
            OdpsType::SmallInt => "smallint",
            OdpsType::Int => "int",
            OdpsType::BigInt => "bigint",
            OdpsType::Float => "float",
            OdpsType::Double => "double",
            OdpsType::Boolean => "boolean",
            OdpsType::Decimal(_) => "decimal",
            OdpsType::String => "string",
            OdpsType::Varchar(_) => "varchar",
            OdpsType::Char(_) => "char",
            OdpsType::Binary => "binary",
            OdpsType::Date => "date",
            OdpsType::DateTime => "datetime",
            OdpsType::Timestamp => "timestamp",
            OdpsType::TimestampNtz => "timestamp_ntz",
            OdpsType::IntervalDayTime => "interval_day_time",
            OdpsType::IntervalYearMonth => "interval_year_month",
            OdpsType::Array(_) => "array",
            OdpsType::Map(..) => "map",
            OdpsType::Struct(_) => "struct",
            OdpsType::Json => "json",
            OdpsType::Blob => "blob",
        }
    }

    /// Whether the type is not nested (not ARRAY, MAP or STRUCT). Only primitive types may
    /// be map keys.
    pub fn is_primitive(&self) -> bool {
        !matches!(
            self,
            OdpsType::Array(_) | OdpsType::Map(..) | OdpsType::Struct(_)
        )
    }

    /// Whether the type is one of the signed integers TINYINT, SMALLINT, INT, BIGINT.
    pub fn is_integer(&self) -> bool {
        self.integer_bits().is_some()
    }

    /// Whether the type is an integer, FLOAT, DOUBLE or DECIMAL.
    pub fn is_numeric(&self) -> bool {
        self.is_integer()
            || matches!(
                self,
                OdpsType::Float | OdpsType::Double | OdpsType::Decimal(_)
            )
    }

    /// The width of an integer type in bits.
    fn integer_bits(&self) -> Option<u32> {
        match self {
            OdpsType::TinyInt => Some(8),
            OdpsType::SmallInt => Some(16),
            OdpsType::Int => Some(32),
            OdpsType::BigInt => Some(64),
            _ => None,
        }
    }

    /// Checks the limits the parser enforces on a type built some other way: decimal
    /// precision and scale, char and varchar lengths, primitive map keys, and non-empty,
    /// unique (case-insensitively) struct field names, at every depth, and a nesting depth
    /// of at most [`MAX_TYPE_DEPTH`].
    pub fn validate(&self) -> Result<()> {
        if self.nesting_depth() > MAX_TYPE_DEPTH {
            return Err(Error::invalid("type", too_deep()));
        }
        self.check()
            .map_err(|message| Error::invalid("type", format!("{self}: {message}")))
    }

    /// How many levels of ARRAY, MAP and STRUCT the type nests (0 for a primitive type),
    /// computed without recursion, so that it is safe on a type of any depth.
    pub fn nesting_depth(&self) -> usize {
        let mut deepest = 0;
        let mut pending = vec![(self, 0usize)];
        while let Some((ty, depth)) = pending.pop() {
            deepest = deepest.max(depth);
            match ty {
                OdpsType::Array(element) => pending.push((element, depth + 1)),
                OdpsType::Map(key, value) => {
                    pending.push((key, depth + 1));
                    pending.push((value, depth + 1));
                }
                OdpsType::Struct(fields) => {
                    pending.extend(fields.iter().map(|field| (&field.ty, depth + 1)));
                }
                _ => {}
            }
        }
        deepest
    }

    /// [`validate`](Self::validate) with a bare message, for callers that add their own
    /// context. The depth is checked first, without recursion; the rest recurses over a
    /// type known to be shallow.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.nesting_depth() > MAX_TYPE_DEPTH {
            return Err(too_deep());
        }
        self.check_limits()
    }

    fn check_limits(&self) -> Result<(), String> {
        match self {
            OdpsType::Decimal(Some((precision, scale))) => {
                check_decimal(i64::from(*precision), i64::from(*scale)).map(|_| ())
            }
            OdpsType::Varchar(length) => {
                check_length("varchar", i64::from(*length), MAX_VARCHAR_LENGTH).map(|_| ())
            }
            OdpsType::Char(length) => {
                check_length("char", i64::from(*length), MAX_CHAR_LENGTH).map(|_| ())
            }
            OdpsType::Array(element) => element.check_limits(),
            OdpsType::Map(key, value) => {
                if !key.is_primitive() {
                    return Err(format!("map key type must be primitive, not {key}"));
                }
                key.check_limits()?;
                value.check_limits()
            }
            OdpsType::Struct(fields) => {
                if fields.is_empty() {
                    return Err("a struct needs at least one field".to_string());
                }
                let mut seen = HashSet::new();
                for field in fields {
                    check_field_name(&field.name, &mut seen)?;
                    field.ty.check_limits()?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The error for a type that nests deeper than [`MAX_TYPE_DEPTH`].
pub(crate) fn too_deep() -> String {
    format!(
        "ARRAY, MAP and STRUCT nest more than {MAX_TYPE_DEPTH} levels deep (the limit is \
         {MAX_TYPE_DEPTH})"
    )
}

/// Checks a decimal's precision (1..=38) and scale (0..=precision).
pub(crate) fn check_decimal(precision: i64, scale: i64) -> Result<(u8, i8), String> {
    let precision = u8::try_from(precision)
        .ok()
        .filter(|p| (1..=MAX_DECIMAL_PRECISION).contains(p))
        .ok_or_else(|| {
            format!("decimal precision {precision} is out of range 1..={MAX_DECIMAL_PRECISION}")
        })?;
    let scale = i8::try_from(scale)
        .ok()
        .filter(|s| (0..=precision as i8).contains(s))
        .ok_or_else(|| format!("decimal scale {scale} is out of range 0..={precision}"))?;
    Ok((precision, scale))
}

/// Checks a char or varchar length (1..=max).
pub(crate) fn check_length(kind: &str, length: i64, max: u32) -> Result<u32, String> {
    u32::try_from(length)
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("{kind} length {length} is out of range 1..={max}"))
}

/// Checks that a struct field name is non-empty and not a case-insensitive repeat of one in
/// `seen`, and records it there.
fn check_field_name(name: &str, seen: &mut HashSet<String>) -> Result<(), String> {
    if name.is_empty() {
        return Err("struct field names must not be empty".to_string());
    }
    if !seen.insert(name.to_lowercase()) {
        return Err(format!("duplicate struct field name {name:?}"));
    }
    Ok(())
}

/// Serialized as the type string, like [`Column::ty`].
impl Serialize for OdpsType {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OdpsType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = std::string::String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Column {
    /// A nullable column without a comment.
    pub fn new(name: impl Into<String>, ty: OdpsType) -> Self {
        Column {
            name: name.into(),
            ty,
            nullable: true,
            comment: String::new(),
        }
    }
}

/// The types a partition column may have.
fn is_partition_type(ty: &OdpsType) -> bool {
    matches!(
        ty,
        OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_)
    ) || ty.is_integer()
}

impl TableSchema {
    /// A validated schema: at least one data column; every name valid (see
    /// [`validate_name`]) and unique across data and partition columns, case-insensitively;
    /// every type within MaxCompute's limits ([`OdpsType::validate`]); partition columns of
    /// type STRING, VARCHAR, CHAR, TINYINT, SMALLINT, INT or BIGINT. Names are lowercased,
    /// as MaxCompute keeps them.
    pub fn new(columns: Vec<Column>, partition_columns: Vec<Column>) -> Result<Self> {
        if columns.is_empty() {
            return Err(Error::invalid(
                "table schema",
                "a table needs at least one data column",
            ));
        }
        let mut seen = HashSet::new();
        let mut normalize = |mut column: Column, is_partition: bool| -> Result<Column> {
            validate_name("column name", &column.name)?;
            column.name = column.name.to_ascii_lowercase();
            if !seen.insert(column.name.clone()) {
                return Err(Error::invalid(
                    "table schema",
                    format!("duplicate column name `{}`", column.name),
                ));
            }
            column.ty.check().map_err(|message| {
                Error::invalid(format!("type of column `{}`", column.name), message)
            })?;
            if is_partition && !is_partition_type(&column.ty) {
                return Err(Error::invalid(
                    "partition column",
                    format!(
                        "`{}` has type {}; partition columns must be STRING, VARCHAR, CHAR, \
                         TINYINT, SMALLINT, INT or BIGINT",
                        column.name, column.ty
                    ),
                ));
            }
            Ok(column)
        };
        let columns = columns
            .into_iter()
            .map(|column| normalize(column, false))
            .collect::<Result<_>>()?;
        let partition_columns = partition_columns
            .into_iter()
            .map(|column| normalize(column, true))
            .collect::<Result<_>>()?;
        Ok(TableSchema {
            columns,
            partition_columns,
        })
    }

    /// The data or partition column named `name`, case-insensitively.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.all_columns()
            .find(|column| column.name.eq_ignore_ascii_case(name))
    }

    /// The position of the column named `name` (case-insensitively) in
    /// [`all_columns`](Self::all_columns).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.all_columns()
            .position(|column| column.name.eq_ignore_ascii_case(name))
    }

    /// Whether `name` (case-insensitively) is a partition column.
    pub fn is_partition_column(&self, name: &str) -> bool {
        self.partition_columns
            .iter()
            .any(|column| column.name.eq_ignore_ascii_case(name))
    }

    /// Data columns, then partition columns.
    pub fn all_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().chain(&self.partition_columns)
    }

    /// The names of [`all_columns`](Self::all_columns).
    pub fn column_names(&self) -> Vec<&str> {
        self.all_columns()
            .map(|column| column.name.as_str())
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Fields, IntervalUnit, TimeUnit};

    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    pub(super) fn parse(text: &str) -> OdpsType {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    pub(super) fn parse_error(text: &str) -> String {
        match text.parse::<OdpsType>() {
            Ok(ty) => panic!("{text:?} should not parse, got {ty:?}"),
            Err(e) => e.to_string(),
        }
    }

    pub(super) fn array(element: OdpsType) -> OdpsType {
        OdpsType::Array(Box::new(element))
    }

    pub(super) fn map(key: OdpsType, value: OdpsType) -> OdpsType {
        OdpsType::Map(Box::new(key), Box::new(value))
    }

    pub(super) fn structure(fields: &[(&str, OdpsType)]) -> OdpsType {
        OdpsType::Struct(
            fields
                .iter()
                .map(|(name, ty)| StructField {
                    name: name.to_string(),
                    ty: ty.clone(),
                })
                .collect(),
        )
    }

    /// Every type once, with the canonical string, the type code and the Arrow type under
    /// default options.
    pub(crate) fn every_type() -> Vec<(OdpsType, &'static str, i32, DataType)> {
        use OdpsType as T;
        let ms = TimeUnit::Millisecond;
        let ns = TimeUnit::Nanosecond;
        vec![
            (T::TinyInt, "tinyint", 6, DataType::Int8),
            (T::SmallInt, "smallint", 7, DataType::Int16),
            (T::Int, "int", 8, DataType::Int32),
            (T::BigInt, "bigint", 0, DataType::Int64),
            (T::Float, "float", 14, DataType::Float32),
            (T::Double, "double", 1, DataType::Float64),
            (T::Boolean, "boolean", 2, DataType::Boolean),
            (T::Decimal(None), "decimal", 5, DataType::Decimal128(38, 18)),
            (
                T::Decimal(Some((10, 2))),
                "decimal(10,2)",
                5,
                DataType::Decimal128(10, 2),
            ),
            (T::String, "string", 4, DataType::Utf8),
            (T::Varchar(10), "varchar(10)", 10, DataType::Utf8),
            (T::Char(3), "char(3)", 9, DataType::Utf8),
            (T::Binary, "binary", 11, DataType::Binary),
            (T::Date, "date", 12, DataType::Date32),
            (T::DateTime, "datetime", 3, DataType::Timestamp(ms, None)),
            (T::Timestamp, "timestamp", 13, DataType::Timestamp(ns, None)),
            (
                T::TimestampNtz,
                "timestamp_ntz",
                21,
                DataType::Timestamp(ns, None),
            ),
            (
                T::IntervalDayTime,
                "interval_day_time",
                16,
                DataType::Interval(IntervalUnit::DayTime),
            ),
            (
                T::IntervalYearMonth,
                "interval_year_month",
                15,
                DataType::Interval(IntervalUnit::YearMonth),
            ),
            (
                array(T::BigInt),
                "array<bigint>",
                17,
                DataType::List(Arc::new(Field::new("element", DataType::Int64, true))),
            ),
            (
                map(T::String, T::BigInt),
                "map<string,bigint>",
                18,
                DataType::Map(
                    Arc::new(Field::new(
                        "entries",
                        DataType::Struct(Fields::from(vec![
                            Field::new("key", DataType::Utf8, false),
                            Field::new("value", DataType::Int64, true),
                        ])),
                        false,
                    )),
                    false,
                ),
            ),
            (
                structure(&[("a", T::BigInt), ("b", T::String)]),
                "struct<a:bigint,b:string>",
                19,
                DataType::Struct(Fields::from(vec![
                    Field::new("a", DataType::Int64, true),
                    Field::new("b", DataType::Utf8, true),
                ])),
            ),
            (T::Json, "json", 20, DataType::Utf8),
            (T::Blob, "blob", 22, DataType::Binary),
        ]
    }

    #[test]
    fn every_type_parses_prints_and_has_its_code_and_arrow_type() {
        for (ty, text, code, arrow) in every_type() {
            assert_eq!(parse(text), ty, "{text}");
            if ty.is_primitive() {
                assert_eq!(parse(&text.to_uppercase()), ty, "{text}");
            }
            assert_eq!(ty.to_string(), text);
            assert_eq!(ty.type_code(), code, "{text}");
            assert_eq!(ty.to_arrow(&ArrowOptions::default()), arrow, "{text}");
            assert!(ty.arrow_compatible(&arrow), "{text} should accept {arrow}");
            assert!(text.starts_with(ty.name()), "{text}");
        }
    }

    #[test]
    fn classifies_types() {
        use OdpsType as T;
        for (ty, _, _, _) in every_type() {
            let nested = matches!(ty, T::Array(_) | T::Map(..) | T::Struct(_));
            assert_eq!(ty.is_primitive(), !nested, "{ty}");
        }
        assert!(T::TinyInt.is_integer() && T::BigInt.is_integer());
        assert!(!T::Float.is_integer() && !T::Decimal(None).is_integer());
        assert!(T::Int.is_numeric() && T::Double.is_numeric() && T::Decimal(None).is_numeric());
        assert!(!T::String.is_numeric() && !T::Boolean.is_numeric());
        assert_eq!(array(T::Int).name(), "array");
        assert_eq!(T::Decimal(Some((3, 1))).name(), "decimal");
        assert_eq!(T::TimestampNtz.name(), "timestamp_ntz");
    }

    #[test]
    fn validates_types_built_in_code() {
        use OdpsType as T;
        assert!(T::Decimal(Some((39, 0))).validate().is_err());
        assert!(T::Decimal(Some((10, -1))).validate().is_err());
        assert!(T::Varchar(0).validate().is_err());
        assert!(T::Char(256).validate().is_err());
        assert!(map(array(T::Int), T::Int).validate().is_err());
        assert!(T::Struct(Vec::new()).validate().is_err());
        let duplicate = structure(&[("a", T::Int), ("A", T::Int)]);
        let message = array(duplicate).validate().unwrap_err().to_string();
        assert!(
            message.contains("duplicate struct field name \"A\""),
            "{message}"
        );
        assert!(
            structure(&[("a", map(T::String, array(T::Char(5))))])
                .validate()
                .is_ok()
        );
    }

    pub(crate) fn sample_schema() -> TableSchema {
        let mut name = Column::new("Name", OdpsType::String);
        name.comment = "who's who".into();
        name.nullable = false;
        TableSchema::new(
            vec![
                Column::new("id", OdpsType::BigInt),
                name,
                Column::new("tags", parse("array<string>")),
                Column::new("m", parse("map<string,struct<x:decimal(5,1)>>")),
            ],
            vec![
                Column::new("pt", OdpsType::String),
                Column::new("hour", OdpsType::TinyInt),
            ],
        )
        .unwrap()
    }

    #[test]
    fn new_validates_and_lowercases() {
        use OdpsType as T;
        let schema = TableSchema::new(
            vec![Column::new("ID", T::BigInt)],
            vec![Column::new("Pt", T::Varchar(10))],
        )
        .unwrap();
        assert_eq!(schema.column_names(), ["id", "pt"]);

        let invalid = |columns: Vec<Column>, partitions: Vec<Column>, expected: &str| {
            let message = TableSchema::new(columns, partitions)
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        };
        invalid(
            vec![],
            vec![Column::new("pt", T::String)],
            "at least one data column",
        );
        invalid(
            vec![Column::new("a", T::Int), Column::new("A", T::Int)],
            vec![],
            "duplicate column name `a`",
        );
        invalid(
            vec![Column::new("pt", T::Int)],
            vec![Column::new("PT", T::String)],
            "duplicate column name `pt`",
        );
        invalid(vec![Column::new("a/b", T::Int)], vec![], "column name");
        invalid(vec![Column::new("", T::Int)], vec![], "column name");
        invalid(
            vec![Column::new("a", T::Int)],
            vec![Column::new("pt", T::Double)],
            "`pt` has type double; partition columns must be",
        );
        invalid(
            vec![Column::new("a", T::Int)],
            vec![Column::new("pt", T::Date)],
            "`pt` has type date",
        );
        invalid(
            vec![Column::new("a", T::Varchar(0))],
            vec![],
            "type of column `a`",
        );
        for ok in [
            T::String,
            T::Varchar(1),
            T::Char(1),
            T::TinyInt,
            T::SmallInt,
            T::Int,
            T::BigInt,
        ] {
            assert!(
                TableSchema::new(vec![Column::new("a", T::Int)], vec![Column::new("p", ok)])
                    .is_ok()
            );
        }
    }

    #[test]
    fn looks_up_columns_case_insensitively() {
        let schema = sample_schema();
        assert_eq!(
            schema.column("NAME").map(|c| &c.ty),
            Some(&OdpsType::String)
        );
        assert_eq!(schema.column("Pt").map(|c| c.name.as_str()), Some("pt"));
        assert!(schema.column("nope").is_none());
        assert_eq!(schema.index_of("TAGS"), Some(2));
        assert_eq!(schema.index_of("hour"), Some(5));
        assert_eq!(schema.index_of("nope"), None);
        assert!(schema.is_partition_column("PT") && !schema.is_partition_column("id"));
        assert_eq!(schema.all_columns().count(), 6);
        assert_eq!(
            schema.column_names(),
            ["id", "name", "tags", "m", "pt", "hour"]
        );
    }

    #[test]
    fn serde_uses_type_strings() {
        let column: Column =
            serde_json::from_str(r#"{"name": "m", "type": "MAP<string, array<int>>"}"#).unwrap();
        assert_eq!(column.ty, map(OdpsType::String, array(OdpsType::Int)));
        assert!(column.nullable && column.comment.is_empty());
        let text = serde_json::to_string(&column).unwrap();
        assert_eq!(
            text,
            r#"{"name":"m","type":"map<string,array<int>>","nullable":true}"#
        );
        assert!(serde_json::from_str::<Column>(r#"{"name": "m", "type": "array<"}"#).is_err());

        let ty: OdpsType = serde_json::from_str(r#""decimal(5, 2)""#).unwrap();
        assert_eq!(serde_json::to_string(&ty).unwrap(), r#""decimal(5,2)""#);
        let schema = sample_schema();
        let text = serde_json::to_string(&schema).unwrap();
        assert_eq!(serde_json::from_str::<TableSchema>(&text).unwrap(), schema);
    }

    // ---- property tests ----

    pub(super) fn primitive_type() -> impl Strategy<Value = OdpsType> {
        use OdpsType as T;
        prop_oneof![
            Just(T::TinyInt),
            Just(T::SmallInt),
            Just(T::Int),
            Just(T::BigInt),
            Just(T::Float),
            Just(T::Double),
            Just(T::Boolean),
            Just(T::Decimal(None)),
            (1u8..=MAX_DECIMAL_PRECISION)
                .prop_flat_map(|p| (Just(p), 0..=p as i8))
                .prop_map(|p_s| T::Decimal(Some(p_s))),
            Just(T::String),
            (1u32..=MAX_VARCHAR_LENGTH).prop_map(T::Varchar),
            (1u32..=MAX_CHAR_LENGTH).prop_map(T::Char),
            Just(T::Binary),
            Just(T::Date),
            Just(T::DateTime),
            Just(T::Timestamp),
            Just(T::TimestampNtz),
            Just(T::IntervalDayTime),
            Just(T::IntervalYearMonth),
            Just(T::Json),
            Just(T::Blob),
        ]
    }

    pub(super) fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[A-Za-z_][A-Za-z0-9_]{0,8}",
            1 => "[a-z0-9 `:<>,()'é_]{1,6}",
        ]
    }

    /// Any valid type, nested up to four levels deep.
    pub(super) fn any_type() -> impl Strategy<Value = OdpsType> {
        primitive_type().prop_recursive(4, 48, 4, |inner| {
            prop_oneof![
                inner
                    .clone()
                    .prop_map(|element| OdpsType::Array(Box::new(element))),
                (primitive_type(), inner.clone())
                    .prop_map(|(key, value)| OdpsType::Map(Box::new(key), Box::new(value))),
                prop::collection::vec((field_name(), inner), 1..4).prop_map(|fields| {
                    let mut seen = HashSet::new();
                    OdpsType::Struct(
                        fields
                            .into_iter()
                            .filter(|(name, _)| seen.insert(name.to_lowercase()))
                            .map(|(name, ty)| StructField { name, ty })
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// The number of write-schema members a type takes: itself and all its sub types.
    pub(super) fn member_count(ty: &OdpsType) -> i32 {
        1 + match ty {
            OdpsType::Array(element) => member_count(element),
            OdpsType::Map(key, value) => member_count(key) + member_count(value),
            OdpsType::Struct(fields) => fields.iter().map(|f| member_count(&f.ty)).sum(),
            _ => 0,
        }
    }

    pub(super) fn nested_arrays(depth: usize) -> OdpsType {
        (0..depth).fold(OdpsType::BigInt, |ty, _| array(ty))
    }

    #[test]
    fn deep_types_built_in_code_are_refused_without_recursion() {
        assert_eq!(nested_arrays(5_000).nesting_depth(), 5_000);
        assert!(nested_arrays(MAX_TYPE_DEPTH).validate().is_ok());
        for depth in [MAX_TYPE_DEPTH + 1, 5_000] {
            let message = nested_arrays(depth).validate().unwrap_err().to_string();
            assert!(
                message.contains(&format!("the limit is {MAX_TYPE_DEPTH}")),
                "{message}"
            );
            let schema = TableSchema::new(vec![Column::new("c", nested_arrays(depth))], Vec::new());
            let message = schema.unwrap_err().to_string();
            assert!(
                message.contains("`c`") && message.contains("the limit is"),
                "{message}"
            );
        }
    }

    #[test]
    fn write_schema_json_nests_at_most_max_type_depth_levels() {
        let deepest = nested_arrays(MAX_TYPE_DEPTH).to_write_schema_json("c", &mut 0, true);
        let (_, ty, _) = OdpsType::from_write_schema_json(&deepest).unwrap();
        assert_eq!(ty.nesting_depth(), MAX_TYPE_DEPTH);
        // Deeper than any JSON text serde_json parses (128 levels, two per member).
        for depth in [MAX_TYPE_DEPTH + 1, 100] {
            let mut member = json!({"MemberName": "element", "Type": 0});
            for _ in 0..depth {
                member = json!({"MemberName": "element", "Type": 17, "SubTypes": [member]});
            }
            let message = OdpsType::from_write_schema_json(&member)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&format!("the limit is {MAX_TYPE_DEPTH}")),
                "{message}"
            );
            let table = json!({"DataColumns": [{"columnType": member}]});
            let message = TableSchema::from_write_schema_json(&table)
                .unwrap_err()
                .to_string();
            assert!(message.contains("the limit is"), "{message}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn write_schema_json_round_trips(
            ty in any_type(),
            name in "[a-z][a-z0-9_]{0,10}",
            nullable in any::<bool>(),
            first_id in 0i32..1000,
        ) {
            let mut column_id = first_id;
            let json = ty.to_write_schema_json(&name, &mut column_id, nullable);
            prop_assert_eq!(column_id - first_id, member_count(&ty));
            let transported: Value = serde_json::from_str(&json.to_string()).unwrap();
            prop_assert_eq!(
                OdpsType::from_write_schema_json(&transported).unwrap(),
                (name, ty, nullable)
            );
        }
    }
}
