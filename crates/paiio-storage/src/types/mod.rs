//! The MaxCompute type system: every type, type strings, table schemas, and the mapping
//! to and from Arrow.
//!
//! Three representations of a type meet here, and each conversion is total in one direction
//! and checked in the other:
//!
//! * **type strings** (`map<string,array<bigint>>`), as written in DDL and shown by the
//!   service: [`OdpsType`] implements [`FromStr`] and [`Display`](fmt::Display), and printing
//!   a parsed type always gives back a string that parses to the same type;
//! * **write-schema JSON**, the form the Storage API exchanges (numeric type codes, nested
//!   `SubTypes`): [`OdpsType::to_write_schema_json`] and [`OdpsType::from_write_schema_json`]
//!   (in [`crate::protocol::storage::schema`]);
//! * **Arrow** data types, in which data travels: [`OdpsType::to_arrow`] (every type has
//!   one), [`OdpsType::from_arrow`] (the MaxCompute type a new column gets for an Arrow type)
//!   and [`OdpsType::arrow_compatible`] (whether Arrow data may be written to a column).
//!
//! Everything read from outside (strings, JSON, Arrow schemas) is validated against the same
//! limits the service enforces, so a type that passes here is one MaxCompute accepts.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, IntervalUnit, Schema, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::uri::validate_name;

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

/// Whether `name` can be written without backquotes: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Writes a struct field or column name as MaxCompute DDL expects it: bare if it is a plain
/// identifier, else between backquotes with any backquote doubled.
fn write_identifier(out: &mut impl fmt::Write, name: &str) -> fmt::Result {
    if is_plain_identifier(name) {
        out.write_str(name)
    } else {
        out.write_char('`')?;
        out.write_str(&name.replace('`', "``"))?;
        out.write_char('`')
    }
}

/// Prints the canonical type string: lowercase, no spaces, struct field names backquoted
/// when they are not plain identifiers. Parsing it gives back the same type.
impl fmt::Display for OdpsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OdpsType::Decimal(Some((precision, scale))) => {
                write!(f, "decimal({precision},{scale})")
            }
            OdpsType::Varchar(length) => write!(f, "varchar({length})"),
            OdpsType::Char(length) => write!(f, "char({length})"),
            OdpsType::Array(element) => write!(f, "array<{element}>"),
            OdpsType::Map(key, value) => write!(f, "map<{key},{value}>"),
            OdpsType::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_identifier(f, &field.name)?;
                    write!(f, ":{}", field.ty)?;
                }
                f.write_char('>')
            }
            other => f.write_str(other.name()),
        }
    }
}

/// Parses a type string such as `map<string, array<decimal(10,2)>>`: case-insensitive,
/// whitespace allowed between any two tokens, nested to any depth, struct field names bare
/// or backquoted. Only the canonical type names are accepted (no `integer` or `bool`), as
/// MaxCompute itself accepts no aliases; `decimal(p)` means `decimal(p,0)`. Type names are
/// case-insensitive but struct field names keep their case (their uniqueness is checked
/// case-insensitively), so that a printed type parses back to the same value.
impl FromStr for OdpsType {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let mut parser = Parser::new(text);
        parser
            .parse_whole_type()
            .map_err(|e| e.into_error("type string", text))
    }
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

/// How many characters of a text a parse error quotes.
const MAX_QUOTED_TEXT: usize = 200;

/// A parse failure: what was expected, at which byte offset of the text.
struct ParseError {
    message: String,
    pos: usize,
}

impl ParseError {
    /// The user-facing error: the whole text, the message, and the position in characters
    /// (not bytes, so that it matches what an editor shows).
    fn into_error(self, what: &str, text: &str) -> Error {
        let position = text
            .get(..self.pos)
            .map_or(self.pos, |before| before.chars().count());
        // A very long text (a type nested thousands of levels deep) is shown by its start.
        let shown = if text.chars().count() > MAX_QUOTED_TEXT {
            let start: String = text.chars().take(MAX_QUOTED_TEXT).collect();
            format!("{start:?}... ({} characters)", text.chars().count())
        } else {
            format!("{text:?}")
        };
        Error::invalid(
            what,
            format!("{shown}: {} at position {position}", self.message),
        )
    }
}

type ParseResult<T> = std::result::Result<T, ParseError>;

/// A recursive-descent parser over type strings and column definitions. `pos` is a byte
/// offset that always lies on a character boundary.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// How many ARRAY, MAP and STRUCT levels enclose the type being parsed.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn fail<T>(&self, pos: usize, message: impl Into<String>) -> ParseResult<T> {
        Err(ParseError {
            message: message.into(),
            pos,
        })
    }

    /// "expected X but found 'c'" (or just "expected X" at the end) at the current position.
    fn unexpected<T>(&self, expected: &str) -> ParseResult<T> {
        match self.rest().chars().next() {
            Some(found) => self.fail(self.pos, format!("expected {expected} but found '{found}'")),
            None => self.fail(self.pos, format!("expected {expected}")),
        }
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// The next character after any whitespace, without consuming it.
    fn peek(&mut self) -> Option<char> {
        self.skip_whitespace();
        self.rest().chars().next()
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Consumes `c` if it is the next character after any whitespace.
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> ParseResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.unexpected(&format!("'{c}'"))
        }
    }

    /// Skips whitespace, then consumes the longest run of characters matching `accept`,
    /// returning it (possibly empty) and where it starts.
    fn take_while(&mut self, accept: impl Fn(char) -> bool) -> (&'a str, usize) {
        self.skip_whitespace();
        let start = self.pos;
        let rest = self.rest();
        let len = rest.find(|c: char| !accept(c)).unwrap_or(rest.len());
        self.pos += len;
        (&rest[..len], start)
    }

    /// A keyword or type name: a non-empty run of ASCII letters, digits and underscores.
    fn keyword(&mut self, expected: &str) -> ParseResult<(&'a str, usize)> {
        let (word, start) = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        if word.is_empty() {
            return self.unexpected(expected);
        }
        Ok((word, start))
    }

    /// A non-negative decimal number and where it starts.
    fn number(&mut self, expected: &str) -> ParseResult<(i64, usize)> {
        let (digits, start) = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() {
            return self.unexpected(expected);
        }
        match digits.parse() {
            Ok(n) => Ok((n, start)),
            Err(_) => self.fail(start, format!("{expected} {digits} is too large")),
        }
    }

    /// A type followed by nothing but whitespace.
    fn parse_whole_type(&mut self) -> ParseResult<OdpsType> {
        let ty = self.parse_type()?;
        if !self.at_end() {
            return self.fail(
                self.pos,
                format!("unexpected trailing text {:?}", self.rest()),
            );
        }
        Ok(ty)
    }

    /// A type; a nested one (ARRAY, MAP, STRUCT) only within [`MAX_TYPE_DEPTH`], checked
    /// before its element types are parsed.
    fn parse_type(&mut self) -> ParseResult<OdpsType> {
        let (word, start) = self.keyword("a type name")?;
        let lower = word.to_ascii_lowercase();
        if !matches!(lower.as_str(), "array" | "map" | "struct") {
            return self.parse_primitive(&lower, word, start);
        }
        if self.depth >= MAX_TYPE_DEPTH {
            return self.fail(start, too_deep());
        }
        self.depth += 1;
        let ty = self.parse_nested(&lower);
        self.depth -= 1;
        ty
    }

    fn parse_primitive(&mut self, lower: &str, word: &str, start: usize) -> ParseResult<OdpsType> {
        let ty = match lower {
            "tinyint" => OdpsType::TinyInt,
            "smallint" => OdpsType::SmallInt,
            "int" => OdpsType::Int,
            "bigint" => OdpsType::BigInt,
            "float" => OdpsType::Float,
            "double" => OdpsType::Double,
            "boolean" => OdpsType::Boolean,
            "decimal" => self.parse_decimal_arguments()?,
            "string" => OdpsType::String,
            "varchar" => OdpsType::Varchar(self.parse_length("varchar", MAX_VARCHAR_LENGTH)?),
            "char" => OdpsType::Char(self.parse_length("char", MAX_CHAR_LENGTH)?),
            "binary" => OdpsType::Binary,
            "date" => OdpsType::Date,
            "datetime" => OdpsType::DateTime,
            "timestamp" => OdpsType::Timestamp,
            "timestamp_ntz" => OdpsType::TimestampNtz,
            "interval_day_time" => OdpsType::IntervalDayTime,
            "interval_year_month" => OdpsType::IntervalYearMonth,
            "json" => OdpsType::Json,
            "blob" => OdpsType::Blob,
            "variant" => return self.fail(start, "the VARIANT type is not supported"),
            _ => return self.fail(start, format!("unknown type '{word}'")),
        };
        Ok(ty)
    }

    /// The element types of an ARRAY, MAP or STRUCT, after its name.
    fn parse_nested(&mut self, kind: &str) -> ParseResult<OdpsType> {
        let ty = match kind {
            "array" => {
                self.expect('<')?;
                let element = self.parse_type()?;
                self.expect('>')?;
                OdpsType::Array(Box::new(element))
            }
            "map" => {
                self.expect('<')?;
                self.skip_whitespace();
                let key_pos = self.pos;
                let key = self.parse_type()?;
                if !key.is_primitive() {
                    return self.fail(
                        key_pos,
                        format!("map key type must be primitive, not {key}"),
                    );
                }
                self.expect(',')?;
                let value = self.parse_type()?;
                self.expect('>')?;
                OdpsType::Map(Box::new(key), Box::new(value))
            }
            _ => self.parse_struct_fields()?,
        };
        Ok(ty)
    }

    /// The optional `(p)` or `(p,s)` after `decimal`.
    fn parse_decimal_arguments(&mut self) -> ParseResult<OdpsType> {
        if !self.eat('(') {
            return Ok(OdpsType::Decimal(None));
        }
        let (precision, precision_pos) = self.number("a decimal precision")?;
        let (scale, scale_pos) = if self.eat(',') {
            self.number("a decimal scale")?
        } else {
            (0, precision_pos)
        };
        self.expect(')')?;
        if let Err(message) = check_decimal(precision, 0) {
            return self.fail(precision_pos, message);
        }
        match check_decimal(precision, scale) {
            Ok(precision_scale) => Ok(OdpsType::Decimal(Some(precision_scale))),
            Err(message) => self.fail(scale_pos, message),
        }
    }

    /// The mandatory `(n)` after `char` or `varchar`.
    fn parse_length(&mut self, kind: &str, max: u32) -> ParseResult<u32> {
        if !self.eat('(') {
            return self.unexpected(&format!("'(' and a length, as in {kind}(10)"));
        }
        let (length, pos) = self.number(&format!("a {kind} length"))?;
        self.expect(')')?;
        check_length(kind, length, max).or_else(|message| self.fail(pos, message))
    }

    /// `<name:type, ...>` after `struct`.
    fn parse_struct_fields(&mut self) -> ParseResult<OdpsType> {
        self.expect('<')?;
        let mut fields = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let (name, name_pos) = self.field_name()?;
            if let Err(message) = check_field_name(&name, &mut seen) {
                return self.fail(name_pos, message);
            }
            self.expect(':')?;
            let ty = self.parse_type()?;
            fields.push(StructField { name, ty });
            if !self.eat(',') {
                self.expect('>')?;
                return Ok(OdpsType::Struct(fields));
            }
        }
    }

    /// A struct field name: backquoted, or a run of letters, digits and underscores.
    fn field_name(&mut self) -> ParseResult<(String, usize)> {
        if self.peek() == Some('`') {
            return self.quoted_identifier();
        }
        let (name, start) = self.take_while(|c| c.is_alphanumeric() || c == '_');
        if name.is_empty() {
            return self.unexpected("a struct field name");
        }
        Ok((name.to_string(), start))
    }

    /// A name between backquotes, in which a doubled backquote stands for one. The current
    /// character must be the opening backquote.
    fn quoted_identifier(&mut self) -> ParseResult<(String, usize)> {
        let start = self.pos;
        let mut name = String::new();
        let mut chars = self.rest().char_indices().skip(1).peekable();
        while let Some((offset, c)) = chars.next() {
            if c != '`' {
                name.push(c);
            } else if chars.next_if(|&(_, next)| next == '`').is_some() {
                name.push('`');
            } else {
                self.pos = start + offset + 1;
                return Ok((name, start));
            }
        }
        self.fail(start, "unclosed '`'")
    }

    /// A quoted comment: single or double quotes, with backslash escapes.
    fn quoted_string(&mut self) -> ParseResult<String> {
        let Some(quote @ ('\'' | '"')) = self.peek() else {
            return self.unexpected("a quoted comment");
        };
        let start = self.pos;
        let mut text = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((offset, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, 't')) => text.push('\t'),
                    Some((_, 'r')) => text.push('\r'),
                    Some((_, '0')) => text.push('\0'),
                    Some((_, escaped)) => text.push(escaped),
                    None => break,
                },
                c if c == quote => {
                    self.pos = start + offset + 1;
                    return Ok(text);
                }
                c => text.push(c),
            }
        }
        self.fail(start, format!("unclosed {quote}"))
    }

    /// `name type [NOT NULL | NULL] [COMMENT 'text']`, the options in any order.
    fn parse_column(&mut self) -> ParseResult<Column> {
        let (name, _) = if self.peek() == Some('`') {
            self.quoted_identifier()?
        } else {
            let (name, start) = self.take_while(|c| !c.is_whitespace());
            if name.is_empty() {
                return self.unexpected("a column name");
            }
            (name.to_string(), start)
        };
        let ty = self.parse_type()?;
        let mut column = Column {
            name,
            ty,
            nullable: true,
            comment: String::new(),
        };
        let mut has_comment = false;
        while !self.at_end() {
            let (word, pos) = self.keyword("NOT NULL or COMMENT")?;
            match word.to_ascii_lowercase().as_str() {
                "not" => {
                    let (null, null_pos) = self.keyword("NULL")?;
                    if !null.eq_ignore_ascii_case("null") {
                        return self.fail(null_pos, format!("expected NULL but found '{null}'"));
                    }
                    column.nullable = false;
                }
                "null" => column.nullable = true,
                "comment" if has_comment => return self.fail(pos, "duplicate COMMENT"),
                "comment" => {
                    column.comment = self.quoted_string()?;
                    has_comment = true;
                }
                _ => {
                    return self.fail(
                        pos,
                        format!("unexpected '{word}' after the type, expected NOT NULL or COMMENT"),
                    );
                }
            }
        }
        Ok(column)
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
    /// A nullable column without a comment.
    pub fn new(name: impl Into<String>, ty: OdpsType) -> Self {
        Column {
            name: name.into(),
            ty,
            nullable: true,
            comment: String::new(),
        }
    }

    /// The Arrow field data of this column is delivered in: same name and nullability.
    pub fn to_arrow_field(&self, options: &ArrowOptions) -> Field {
        Field::new(&self.name, self.ty.to_arrow(options), self.nullable)
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

    /// Parses a column list such as `id bigint, name string comment 'who', m map<string,
    /// bigint> not null`. Columns are split on commas outside `<>`, `()`, quotes and
    /// backquotes; each is a name (bare or backquoted), a type string, then optionally
    /// `NOT NULL` (or `NULL`) and `COMMENT 'text'`. Names are kept as written; [`new`]
    /// validates and lowercases them. Errors quote the bad column's text.
    ///
    /// [`new`]: Self::new
    pub fn parse_columns(text: &str) -> Result<Vec<Column>> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        split_top_level(text)
            .into_iter()
            .enumerate()
            .map(|(index, definition)| {
                let definition = definition.trim();
                if definition.is_empty() {
                    return Err(Error::invalid(
                        "column list",
                        format!("{text:?}: column {} is empty", index + 1),
                    ));
                }
                Parser::new(definition)
                    .parse_column()
                    .map_err(|e| e.into_error("column definition", definition))
            })
            .collect()
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

/// Splits a column list on the commas that are outside `<>`, `()`, quotes and backquotes.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && open != '`' {
                escaped = true;
            } else if c == open {
                quote = None;
            }
            continue;
        }
        match c {
            '`' | '\'' | '"' => quote = Some(c),
            '<' | '(' => depth += 1,
            '>' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Writes columns as [`TableSchema::parse_columns`] reads them back.
fn write_columns(f: &mut fmt::Formatter<'_>, columns: &[Column]) -> fmt::Result {
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_identifier(f, &column.name)?;
        write!(f, " {}", column.ty)?;
        if !column.nullable {
            f.write_str(" not null")?;
        }
        if !column.comment.is_empty() {
            f.write_str(" comment '")?;
            for c in column.comment.chars() {
                match c {
                    '\'' => f.write_str("\\'")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    '\0' => f.write_str("\\0")?,
                    c => f.write_char(c)?,
                }
            }
            f.write_char('\'')?;
        }
    }
    Ok(())
}

/// `id bigint, name string not null comment 'who'`, then ` partitioned by (pt string)` if
/// the table is partitioned. The column list reads back with
/// [`TableSchema::parse_columns`].
impl fmt::Display for TableSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_columns(f, &self.columns)?;
        if !self.partition_columns.is_empty() {
            f.write_str(" partitioned by (")?;
            write_columns(f, &self.partition_columns)?;
            f.write_char(')')?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn parse(text: &str) -> OdpsType {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn parse_error(text: &str) -> String {
        match text.parse::<OdpsType>() {
            Ok(ty) => panic!("{text:?} should not parse, got {ty:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn array(element: OdpsType) -> OdpsType {
        OdpsType::Array(Box::new(element))
    }

    fn map(key: OdpsType, value: OdpsType) -> OdpsType {
        OdpsType::Map(Box::new(key), Box::new(value))
    }

    fn structure(fields: &[(&str, OdpsType)]) -> OdpsType {
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
    fn parses_odd_spacing_and_case() {
        use OdpsType as T;
        assert_eq!(
            parse(" ARRAY < Map< STRING , bigint > >"),
            array(map(T::String, T::BigInt))
        );
        assert_eq!(parse("\tDecimal ( 10 , 2 )\n"), T::Decimal(Some((10, 2))));
        assert_eq!(parse("decimal(10)"), T::Decimal(Some((10, 0))));
        assert_eq!(parse("decimal(38,38)"), T::Decimal(Some((38, 38))));
        assert_eq!(parse("VarChar( 65535 )"), T::Varchar(65535));
        assert_eq!(parse("char(255)"), T::Char(255));
        assert_eq!(parse("Timestamp_NTZ"), T::TimestampNtz);
        assert_eq!(
            parse("struct< a : int , `my field` : array< struct<x:string> >, Int:int >"),
            structure(&[
                ("a", T::Int),
                ("my field", array(structure(&[("x", T::String)]))),
                ("Int", T::Int),
            ])
        );
    }

    #[test]
    fn prints_canonical_strings_and_quotes_odd_field_names() {
        let ty = parse("STRUCT<`my field`:INT, `a``b`:map<string,array<decimal(5)>>, _x1:json>");
        assert_eq!(
            ty.to_string(),
            "struct<`my field`:int,`a``b`:map<string,array<decimal(5,0)>>,_x1:json>"
        );
        assert_eq!(parse(&ty.to_string()), ty);
        assert_eq!(parse("struct<`1a`:int>").to_string(), "struct<`1a`:int>");
        assert_eq!(parse("struct<é:int>").to_string(), "struct<`é`:int>");
    }

    #[test]
    fn rejects_bad_type_strings_naming_text_and_position() {
        let cases = [
            ("bigintt", "unknown type 'bigintt' at position 0"),
            ("", "expected a type name at position 0"),
            (
                "array<bigint",
                "\"array<bigint\": expected '>' at position 12",
            ),
            (
                "array<bigint,int>",
                "expected '>' but found ',' at position 12",
            ),
            ("map<string>", "expected ',' but found '>' at position 10"),
            (
                "decimal(40,2)",
                "decimal precision 40 is out of range 1..=38 at position 8",
            ),
            ("decimal(0)", "decimal precision 0 is out of range"),
            (
                "decimal(10,11)",
                "decimal scale 11 is out of range 0..=10 at position 11",
            ),
            ("decimal(10,", "expected a decimal scale at position 11"),
            ("decimal(99999999999999999999)", "too large"),
            (
                "varchar(0)",
                "varchar length 0 is out of range 1..=65535 at position 8",
            ),
            ("varchar(65536)", "varchar length 65536 is out of range"),
            (
                "varchar",
                "expected '(' and a length, as in varchar(10) at position 7",
            ),
            ("char(256)", "char length 256 is out of range 1..=255"),
            (
                "map<array<int>,int>",
                "map key type must be primitive, not array<int> at position 4",
            ),
            ("map<struct<a:int>,int>", "map key type must be primitive"),
            (
                "struct<a:int,A:string>",
                "duplicate struct field name \"A\" at position 13",
            ),
            (
                "struct<>",
                "expected a struct field name but found '>' at position 7",
            ),
            ("struct<``:int>", "struct field names must not be empty"),
            ("struct<`a:int>", "unclosed '`' at position 7"),
            ("struct<a int>", "expected ':' but found 'i'"),
            ("bigint x", "unexpected trailing text \"x\" at position 7"),
            (
                "array<int>>",
                "unexpected trailing text \">\" at position 10",
            ),
            ("array<int> <", "unexpected trailing text"),
            ("variant", "VARIANT type is not supported"),
            ("integer", "unknown type 'integer'"),
            ("bool", "unknown type 'bool'"),
            ("(int)", "expected a type name but found '('"),
        ];
        for (text, expected) in cases {
            let message = parse_error(text);
            assert!(message.starts_with("invalid type string: "), "{message}");
            assert!(
                message.contains(expected),
                "{text:?}: {message:?} lacks {expected:?}"
            );
            assert!(message.contains(&format!("{text:?}")), "{message}");
        }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let message = parse_error("struct<`é`:int,`É`:int>");
        assert!(message.contains("at position 15"), "{message}");
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

    #[test]
    fn parses_column_lists() {
        use OdpsType as T;
        let columns = TableSchema::parse_columns(
            "id bigint, name string, tags array<string>, m map<string, bigint>",
        )
        .unwrap();
        assert_eq!(
            columns,
            vec![
                Column::new("id", T::BigInt),
                Column::new("name", T::String),
                Column::new("tags", array(T::String)),
                Column::new("m", map(T::String, T::BigInt)),
            ]
        );

        let columns = TableSchema::parse_columns(
            " `my col` decimal(10, 2) NOT NULL COMMENT 'a, \\'quoted\\' <comment>',\n\
             s struct<a:int, `b,c`:string> comment \"x\" null ,Upper INT not null",
        )
        .unwrap();
        assert_eq!(columns.len(), 3);
        assert_eq!(columns[0].name, "my col");
        assert_eq!(columns[0].ty, T::Decimal(Some((10, 2))));
        assert!(!columns[0].nullable);
        assert_eq!(columns[0].comment, "a, 'quoted' <comment>");
        assert_eq!(
            columns[1].ty,
            structure(&[("a", T::Int), ("b,c", T::String)])
        );
        assert_eq!(columns[1].comment, "x");
        assert!(columns[1].nullable);
        assert_eq!(columns[2].name, "Upper");
        assert!(!columns[2].nullable);

        assert!(TableSchema::parse_columns("  ").unwrap().is_empty());
    }

    #[test]
    fn column_list_errors_name_the_column() {
        let cases = [
            (
                "id bigint, name strin",
                "\"name strin\": unknown type 'strin' at position 5",
            ),
            ("id bigint, , x int", "column 2 is empty"),
            ("id bigint,", "column 2 is empty"),
            ("id", "\"id\": expected a type name at position 2"),
            ("id bigint primary", "unexpected 'primary' after the type"),
            ("id bigint not nul", "expected NULL but found 'nul'"),
            ("id bigint comment x", "expected a quoted comment"),
            ("id bigint comment 'x", "unclosed '"),
            ("id bigint comment 'x' comment 'y'", "duplicate COMMENT"),
            ("m map<array<int>,int>", "map key type must be primitive"),
            ("`id bigint", "unclosed '`'"),
        ];
        for (text, expected) in cases {
            let message = TableSchema::parse_columns(text).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{text:?}: {message:?} lacks {expected:?}"
            );
        }
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
    fn displays_schemas_that_parse_back() {
        let schema = sample_schema();
        let text = schema.to_string();
        assert_eq!(
            text,
            "id bigint, name string not null comment 'who\\'s who', tags array<string>, \
             m map<string,struct<x:decimal(5,1)>> partitioned by (pt string, hour tinyint)"
        );
        let data = text.split(" partitioned by ").next().unwrap();
        assert_eq!(TableSchema::parse_columns(data).unwrap(), schema.columns);

        let plain = TableSchema::new(
            vec![
                Column::new("id", OdpsType::BigInt),
                Column::new("name", OdpsType::String),
            ],
            vec![],
        )
        .unwrap();
        assert_eq!(plain.to_string(), "id bigint, name string");

        let mut odd = Column::new("a b", OdpsType::Int);
        odd.comment = "line\nbreak\\".into();
        let odd = TableSchema {
            columns: vec![odd],
            partition_columns: vec![],
        };
        assert_eq!(
            TableSchema::parse_columns(&odd.to_string()).unwrap(),
            odd.columns
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

    fn primitive_type() -> impl Strategy<Value = OdpsType> {
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

    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[A-Za-z_][A-Za-z0-9_]{0,8}",
            1 => "[a-z0-9 `:<>,()'é_]{1,6}",
        ]
    }

    /// Any valid type, nested up to four levels deep.
    fn any_type() -> impl Strategy<Value = OdpsType> {
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

    /// A small deterministic generator (splitmix64) for re-spacing and re-casing.
    struct Noise(u64);

    impl Noise {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }

        fn space(&mut self, out: &mut String) {
            out.push_str(["", "", " ", "  ", "\t", "\n "][self.below(6) as usize]);
        }

        fn keyword(&mut self, word: &str, out: &mut String) {
            out.extend(word.chars().map(|c| {
                if self.below(2) == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            }));
        }
    }

    /// Prints `ty` like [`Display`](fmt::Display) does, but with random whitespace between
    /// tokens, keywords in random case, and `decimal(p)` for some `decimal(p,0)`.
    fn print_noisy(ty: &OdpsType, noise: &mut Noise, out: &mut String) {
        noise.space(out);
        noise.keyword(ty.name(), out);
        let token = |text: &str, noise: &mut Noise, out: &mut String| {
            noise.space(out);
            out.push_str(text);
        };
        match ty {
            OdpsType::Decimal(Some((precision, scale))) => {
                token("(", noise, out);
                token(&precision.to_string(), noise, out);
                if *scale != 0 || noise.below(2) == 0 {
                    token(",", noise, out);
                    token(&scale.to_string(), noise, out);
                }
                token(")", noise, out);
            }
            OdpsType::Varchar(length) | OdpsType::Char(length) => {
                token("(", noise, out);
                token(&length.to_string(), noise, out);
                token(")", noise, out);
            }
            OdpsType::Array(element) => {
                token("<", noise, out);
                print_noisy(element, noise, out);
                token(">", noise, out);
            }
            OdpsType::Map(key, value) => {
                token("<", noise, out);
                print_noisy(key, noise, out);
                token(",", noise, out);
                print_noisy(value, noise, out);
                token(">", noise, out);
            }
            OdpsType::Struct(fields) => {
                token("<", noise, out);
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        token(",", noise, out);
                    }
                    noise.space(out);
                    write_identifier(out, &field.name).unwrap();
                    token(":", noise, out);
                    print_noisy(&field.ty, noise, out);
                }
                token(">", noise, out);
            }
            _ => {}
        }
        noise.space(out);
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

    /// The number of write-schema members a type takes: itself and all its sub types.
    fn member_count(ty: &OdpsType) -> i32 {
        1 + match ty {
            OdpsType::Array(element) => member_count(element),
            OdpsType::Map(key, value) => member_count(key) + member_count(value),
            OdpsType::Struct(fields) => fields.iter().map(|f| member_count(&f.ty)).sum(),
            _ => 0,
        }
    }

    /// `array<` × `depth`, then `leaf`, then `>` × `depth`.
    fn nested_text(depth: usize, open: &str, leaf: &str, close: &str) -> String {
        format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth))
    }

    fn nested_arrays(depth: usize) -> OdpsType {
        (0..depth).fold(OdpsType::BigInt, |ty, _| array(ty))
    }

    #[test]
    fn type_strings_nest_at_most_max_type_depth_levels() {
        let deepest = nested_text(MAX_TYPE_DEPTH, "array<", "bigint", ">");
        assert_eq!(parse(&deepest).nesting_depth(), MAX_TYPE_DEPTH);
        let mixed = nested_text(MAX_TYPE_DEPTH / 2, "map<string,struct<a:", "int", ">>");
        assert_eq!(parse(&mixed).nesting_depth(), MAX_TYPE_DEPTH);

        let limit =
            format!("more than {MAX_TYPE_DEPTH} levels deep (the limit is {MAX_TYPE_DEPTH})");
        for (text, position) in [
            (
                nested_text(MAX_TYPE_DEPTH + 1, "array<", "bigint", ">"),
                6 * MAX_TYPE_DEPTH,
            ),
            (
                nested_text(MAX_TYPE_DEPTH / 2 + 1, "map<string,struct<a:", "int", ">>"),
                20 * (MAX_TYPE_DEPTH / 2),
            ),
        ] {
            let message = parse_error(&text);
            assert!(message.contains(&limit), "{message}");
            assert!(
                message.contains(&format!("at position {position}")),
                "{message}"
            );
        }
        // Depths that exhausted the stack of the recursive parser: a clear error, no crash,
        // quoting the start of the text only.
        for depth in [1_000, 4_000, 100_000] {
            let message = parse_error(&nested_text(depth, "array<", "bigint", ">"));
            assert!(message.contains(&limit), "{message}");
            assert!(message.len() < 400, "{message}");
            assert!(
                message.contains(&format!("... ({} characters)", 7 * depth + 6)),
                "{message}"
            );
            let unclosed = "struct<a:".repeat(depth);
            assert!(parse_error(&unclosed).contains(&limit));
            let columns = format!("c {}", nested_text(depth, "array<", "int", ">"));
            let message = TableSchema::parse_columns(&columns)
                .unwrap_err()
                .to_string();
            assert!(message.contains(&limit), "{message}");
        }
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
        fn type_strings_round_trip(ty in any_type(), seed in any::<u64>()) {
            prop_assert!(ty.validate().is_ok());
            let text = ty.to_string();
            prop_assert_eq!(text.parse::<OdpsType>().unwrap(), ty.clone());

            let mut noisy = String::new();
            print_noisy(&ty, &mut Noise(seed), &mut noisy);
            let reparsed = noisy.parse::<OdpsType>();
            prop_assert!(reparsed.is_ok(), "{:?}: {:?}", noisy, reparsed);
            prop_assert_eq!(reparsed.unwrap(), ty);
        }

        #[test]
        fn arrow_round_trips_to_canonical_types(ty in any_type()) {
            let options = ArrowOptions::default();
            let arrow = ty.to_arrow(&options);
            prop_assert!(ty.arrow_compatible(&arrow), "{} vs {}", ty, arrow);
            prop_assert_eq!(OdpsType::from_arrow(&arrow).unwrap(), canonical(&ty));
            let large = ArrowOptions { large_string: true, ..options };
            prop_assert!(ty.arrow_compatible(&ty.to_arrow(&large)));
        }

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

        #[test]
        fn parser_never_panics(text in "[a-z<>(),:` 0-9_]{0,40}") {
            let _ = text.parse::<OdpsType>();
            let _ = TableSchema::parse_columns(&text);
        }
    }
}
