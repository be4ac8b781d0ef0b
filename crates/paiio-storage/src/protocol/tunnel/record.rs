//! The Tunnel record stream: the protobuf-style body of `GET {table}?data` (without
//! `arrow`) and `PUT {table}?uploadid=&blockid=` (TUNNEL.md §1.5, PyODPS's
//! `tunnel/io/reader.py` and `writer.py`).
//!
//! A stream is a sequence of records, then a footer; there is no outer length.
//!
//! * A record is `tag(field, wire type) value` pairs, one per **non-null** column (a null is
//!   an absent field), fields numbered `1..=k` after the columns of the request, in order;
//!   then `tag(TUNNEL_END_RECORD, varint) varint(crc)`, the CRC-32C of the record.
//! * Values: integers, DATE (days), DATETIME (milliseconds) and INTERVAL_YEAR_MONTH (months)
//!   are zigzag varints; BOOLEAN a varint 0/1; FLOAT and DOUBLE little-endian fixed32 and
//!   fixed64; STRING, VARCHAR, CHAR, BINARY, JSON (its text) and DECIMAL (its text) a varint
//!   length and the bytes; TIMESTAMP, TIMESTAMP_NTZ and INTERVAL_DAY_TIME **no length**,
//!   zigzag seconds then zigzag 32-bit nanoseconds. ARRAY is a varint count, then per
//!   element a varint null flag and, when not null, the element; MAP is the ARRAY of its
//!   keys then the ARRAY of its values; STRUCT is per field a null flag and, when not null,
//!   the value (no count).
//! * The record's CRC-32C covers, per field, the field number (LE int32) then the value:
//!   integers and the like as LE int64, booleans as one byte, floats as their LE bytes,
//!   byte strings as they are, seconds/nanoseconds as LE int64 then LE int32; nested values
//!   contribute their leaf values only (no counts, no null flags).
//! * Footer: `tag(TUNNEL_META_COUNT, varint) zigzag(records)`, then optionally a metrics
//!   block (`tag(1, length-delimited)` JSON text, `tag(TUNNEL_END_METRICS, varint)
//!   varint(crc)`, the CRC-32C of the field number 1 as LE int32 and the text), then
//!   `tag(TUNNEL_META_CHECKSUM, varint) varint(crc)`: the CRC-32C of every record's CRC (LE
//!   int32, in order).
//!
//! [`RecordEncoder`] writes Arrow batches as a stream: byte for byte what PyODPS's C writer
//! writes for the same values (with [`RecordEncoder::with_sign_extended_crcs`]), except
//! DECIMAL text, which PyODPS writes as Python's `str(Decimal)`, in scientific notation for
//! small values (`-8.3916E-14`, `0E-18`), and this encoder (like the Java SDK's
//! `toPlainString`) as plain text; the decoder reads both. [`RecordDecoder`] reads a stream
//! incrementally into Arrow batches.
//!
//! The decoder is stricter than PyODPS, so that no damage to a stream goes
//! unnoticed (the CRCs cover values, not the tags, counts and null flags around them): the
//! footer is **always** required (a stream that just ends is [`WireError::Truncated`], which
//! PyODPS only raises with `options.tunnel.require_stream_footer`); field numbers must
//! increase within a record; a tag's wire type must be the column type's (PyODPS ignores
//! it); a tag of field number 0 is refused (PyODPS skips it); booleans and null flags must
//! be 0 or 1 (PyODPS takes any non-zero value as true); nothing may follow the footer.
//! Every writer (PyODPS's, this encoder) meets these rules.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, IntervalDayTimeType, IntervalMonthDayNanoType,
    IntervalYearMonthType, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, BooleanArray, MapArray, RecordBatch, StructArray, make_array};
use arrow_buffer::{
    BooleanBufferBuilder, Buffer, IntervalDayTime, IntervalMonthDayNano, NullBufferBuilder,
    OffsetBuffer, ScalarBuffer, i256,
};
use arrow_data::ArrayData;
use arrow_schema::{DataType, Field, Fields, IntervalUnit, Schema, SchemaRef, TimeUnit};

use super::{Crc, WireError};
use crate::types::{ArrowOptions, Column, MAX_TYPE_DEPTH, OdpsType};

/// The tag field number that ends a record (followed by its CRC).
pub const TUNNEL_END_RECORD: u32 = 33_553_408;
/// The tag field number of the footer's record count.
pub const TUNNEL_META_COUNT: u32 = 33_554_430;
/// The tag field number of the footer's crc of crcs (the last field of a stream).
pub const TUNNEL_META_CHECKSUM: u32 = 33_554_431;
/// The tag field number that ends the optional metrics block (followed by its CRC).
pub const TUNNEL_END_METRICS: u32 = 33_554_176;
/// The field number of the metrics text (the Java SDK's `METRICS_TAG`); PyODPS accepts any
/// length-delimited field there.
pub const TUNNEL_METRICS: u32 = 1;

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LENGTH_DELIMITED: u32 = 2;
const WIRE_FIXED32: u32 = 5;

const STREAM: &str = "record stream";

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;
const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;
const MILLIS_PER_DAY: i64 = 86_400_000;

fn malformed(message: impl Into<String>) -> WireError {
    WireError::Malformed {
        stream: STREAM,
        message: message.into(),
    }
}

fn checksum(message: impl Into<String>) -> WireError {
    WireError::Checksum {
        stream: STREAM,
        message: message.into(),
    }
}

/// The protobuf wire type a column's tag carries.
pub fn wire_type(ty: &OdpsType) -> u32 {
    match ty {
        OdpsType::TinyInt
        | OdpsType::SmallInt
        | OdpsType::Int
        | OdpsType::BigInt
        | OdpsType::Boolean
        | OdpsType::DateTime
        | OdpsType::Date
        | OdpsType::IntervalYearMonth => WIRE_VARINT,
        OdpsType::Float => WIRE_FIXED32,
        OdpsType::Double => WIRE_FIXED64,
        _ => WIRE_LENGTH_DELIMITED,
    }
}

fn check_depth(columns: &[Column]) -> Result<(), WireError> {
    for column in columns {
        if column.ty.nesting_depth() > MAX_TYPE_DEPTH {
            return Err(WireError::value(
                &column.name,
                format!("the type nests more than {MAX_TYPE_DEPTH} levels deep"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Writing primitives
// ---------------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from(field << 3 | wire));
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn unzigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// A decimal's unscaled value as plain text with exactly `scale` fractional digits
/// (`-12.50` for -1250 at scale 2; a negative scale appends zeros).
pub fn format_decimal(unscaled: &str, scale: i8) -> String {
    let (negative, digits) = match unscaled.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, unscaled),
    };
    let mut text = String::with_capacity(digits.len() + 4);
    if negative {
        text.push('-');
    }
    if scale <= 0 {
        text.push_str(digits);
        if digits != "0" {
            text.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        }
        return text;
    }
    let scale = scale as usize;
    if digits.len() <= scale {
        text.push_str("0.");
        text.extend(std::iter::repeat_n('0', scale - digits.len()));
        text.push_str(digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        text.push_str(int);
        text.push('.');
        text.push_str(frac);
    }
    text
}

// ---------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------

/// Where the values of one Arrow array come from when writing.
enum Src<'a> {
    /// A `null`-typed array: every value is null.
    AllNull,
    /// Written as a zigzag varint.
    Long(Long<'a>),
    Bool(&'a BooleanArray),
    F32(&'a [f32]),
    F64(&'a [f64]),
    F32AsF64(&'a [f32]),
    Bytes(&'a dyn Array),
    Decimal128(&'a [i128], i8),
    Decimal256(&'a [i256], i8),
    SecNanos(SecNanos<'a>),
    List {
        offsets: Offsets<'a>,
        child: Box<Node<'a>>,
    },
    Map {
        offsets: &'a [i32],
        keys: Box<Node<'a>>,
        values: Box<Node<'a>>,
    },
    Struct(Vec<Node<'a>>),
}

enum Long<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    /// date64 milliseconds, written as days.
    Date64(&'a [i64]),
    /// A timestamp in `unit`, written as milliseconds (DATETIME).
    Millis(&'a [i64], TimeUnit),
}

enum SecNanos<'a> {
    Timestamp(&'a [i64], TimeUnit),
    DayTime(&'a [IntervalDayTime]),
    MonthDayNano(&'a [IntervalMonthDayNano]),
    Struct(&'a [i64], &'a [i32], &'a dyn Array, &'a dyn Array),
}

enum Offsets<'a> {
    Small(&'a [i32]),
    Large(&'a [i64]),
    Fixed(usize),
}

impl Offsets<'_> {
    fn range(&self, row: usize) -> (usize, usize) {
        match self {
            Offsets::Small(o) => (o[row] as usize, o[row + 1] as usize),
            Offsets::Large(o) => (o[row] as usize, o[row + 1] as usize),
            Offsets::Fixed(n) => (row * n, row * n + n),
        }
    }
}

struct Node<'a> {
    array: &'a dyn Array,
    src: Src<'a>,
    /// The column, or `column.element.key`, for messages.
    path: String,
}

fn unit_nanos(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => NANOS_PER_SECOND,
        TimeUnit::Millisecond => NANOS_PER_MILLI,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

fn timestamp_values(array: &dyn Array, unit: TimeUnit) -> &[i64] {
    match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().values(),
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().values(),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().values(),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().values(),
    }
}

/// Whether an Arrow type is `struct<sec: int64, nano: int32>` (by position and types).
pub fn is_sec_nano_struct(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Struct(fields)
        if fields.len() == 2
            && fields[0].data_type() == &DataType::Int64
            && fields[1].data_type() == &DataType::Int32)
}

fn compile<'a>(ty: &OdpsType, array: &'a dyn Array, path: String) -> Result<Node<'a>, WireError> {
    use DataType as A;
    let data_type = array.data_type();
    let mismatch = || {
        Err(WireError::value(
            &path,
            format!("Arrow {data_type} cannot be written to a {ty} column"),
        ))
    };
    if matches!(data_type, A::Null) {
        return Ok(Node {
            array,
            src: Src::AllNull,
            path,
        });
    }
    let src = match ty {
        OdpsType::TinyInt | OdpsType::SmallInt | OdpsType::Int | OdpsType::BigInt => {
            let bits = match ty {
                OdpsType::TinyInt => 8,
                OdpsType::SmallInt => 16,
                OdpsType::Int => 32,
                _ => 64,
            };
            let (long, width) = match data_type {
                A::Int8 => (Long::I8(array.as_primitive::<Int8Type>().values()), 8),
                A::Int16 => (Long::I16(array.as_primitive::<Int16Type>().values()), 16),
                A::Int32 => (Long::I32(array.as_primitive::<Int32Type>().values()), 32),
                A::Int64 => (Long::I64(array.as_primitive::<Int64Type>().values()), 64),
                _ => return mismatch(),
            };
            if width > bits {
                return mismatch();
            }
            Src::Long(long)
        }
        OdpsType::Float => match data_type {
            A::Float32 => Src::F32(array.as_primitive::<Float32Type>().values()),
            _ => return mismatch(),
        },
        OdpsType::Double => match data_type {
            A::Float64 => Src::F64(array.as_primitive::<Float64Type>().values()),
            A::Float32 => Src::F32AsF64(array.as_primitive::<Float32Type>().values()),
            _ => return mismatch(),
        },
        OdpsType::Boolean => match data_type {
            A::Boolean => Src::Bool(array.as_boolean()),
            _ => return mismatch(),
        },
        OdpsType::String
        | OdpsType::Varchar(_)
        | OdpsType::Char(_)
        | OdpsType::Json
        | OdpsType::Binary
        | OdpsType::Blob => match data_type {
            A::Utf8
            | A::LargeUtf8
            | A::Utf8View
            | A::Binary
            | A::LargeBinary
            | A::BinaryView
            | A::FixedSizeBinary(_) => Src::Bytes(array),
            _ => return mismatch(),
        },
        OdpsType::Decimal(_) => match data_type {
            A::Decimal128(_, s) => {
                Src::Decimal128(array.as_primitive::<Decimal128Type>().values(), *s)
            }
            A::Decimal256(_, s) => {
                Src::Decimal256(array.as_primitive::<Decimal256Type>().values(), *s)
            }
            _ => return mismatch(),
        },
        OdpsType::Date => match data_type {
            A::Date32 => Src::Long(Long::I32(array.as_primitive::<Date32Type>().values())),
            A::Date64 => Src::Long(Long::Date64(array.as_primitive::<Date64Type>().values())),
            _ => return mismatch(),
        },
        OdpsType::DateTime => match data_type {
            A::Timestamp(unit, _) => Src::Long(Long::Millis(timestamp_values(array, *unit), *unit)),
            _ => return mismatch(),
        },
        OdpsType::Timestamp | OdpsType::TimestampNtz | OdpsType::IntervalDayTime => match data_type
        {
            A::Timestamp(unit, _) if !matches!(ty, OdpsType::IntervalDayTime) => {
                Src::SecNanos(SecNanos::Timestamp(timestamp_values(array, *unit), *unit))
            }
            A::Interval(IntervalUnit::DayTime) if matches!(ty, OdpsType::IntervalDayTime) => {
                Src::SecNanos(SecNanos::DayTime(
                    array.as_primitive::<IntervalDayTimeType>().values(),
                ))
            }
            A::Interval(IntervalUnit::MonthDayNano) if matches!(ty, OdpsType::IntervalDayTime) => {
                Src::SecNanos(SecNanos::MonthDayNano(
                    array.as_primitive::<IntervalMonthDayNanoType>().values(),
                ))
            }
            _ if is_sec_nano_struct(data_type) => {
                let s = array.as_struct();
                let (sec, nano) = (s.column(0).as_ref(), s.column(1).as_ref());
                Src::SecNanos(SecNanos::Struct(
                    sec.as_primitive::<Int64Type>().values(),
                    nano.as_primitive::<Int32Type>().values(),
                    sec,
                    nano,
                ))
            }
            _ => return mismatch(),
        },
        OdpsType::IntervalYearMonth => match data_type {
            A::Interval(IntervalUnit::YearMonth) => Src::Long(Long::I32(
                array.as_primitive::<IntervalYearMonthType>().values(),
            )),
            _ => return mismatch(),
        },
        OdpsType::Array(element) => {
            let (offsets, child) = match data_type {
                A::List(_) => {
                    let list = array.as_list::<i32>();
                    (Offsets::Small(list.value_offsets()), list.values())
                }
                A::LargeList(_) => {
                    let list = array.as_list::<i64>();
                    (Offsets::Large(list.value_offsets()), list.values())
                }
                A::FixedSizeList(_, n) => {
                    let list = array.as_fixed_size_list();
                    // A sliced fixed-size list starts at its offset in the values.
                    let start = list.offset();
                    let size = usize::try_from(*n).unwrap_or(0);
                    if start != 0 {
                        return Err(WireError::value(
                            &path,
                            "a sliced fixed_size_list cannot be written; cast it to a list",
                        ));
                    }
                    (Offsets::Fixed(size), list.values())
                }
                _ => return mismatch(),
            };
            Src::List {
                offsets,
                child: Box::new(compile(element, child.as_ref(), format!("{path}.element"))?),
            }
        }
        OdpsType::Map(key, value) => match data_type {
            A::Map(..) => {
                let map = array.as_map();
                let entries = map.entries();
                if entries.num_columns() != 2 {
                    return mismatch();
                }
                Src::Map {
                    offsets: map.value_offsets(),
                    keys: Box::new(compile(
                        key,
                        entries.column(0).as_ref(),
                        format!("{path}.key"),
                    )?),
                    values: Box::new(compile(
                        value,
                        entries.column(1).as_ref(),
                        format!("{path}.value"),
                    )?),
                }
            }
            _ => return mismatch(),
        },
        OdpsType::Struct(fields) => match data_type {
            A::Struct(arrow_fields) if arrow_fields.len() == fields.len() => {
                let s = array.as_struct();
                Src::Struct(
                    fields
                        .iter()
                        .zip(s.columns())
                        .map(|(f, c)| compile(&f.ty, c.as_ref(), format!("{path}.{}", f.name)))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => return mismatch(),
        },
    };
    Ok(Node { array, src, path })
}

impl Node<'_> {
    fn is_null(&self, row: usize) -> bool {
        matches!(self.src, Src::AllNull) || self.array.is_null(row)
    }

    /// Writes the value at `row` (not null) and feeds the record CRC.
    fn write(&self, row: usize, out: &mut Vec<u8>, crc: &mut Crc) -> Result<(), WireError> {
        match &self.src {
            Src::AllNull => Ok(()),
            Src::Long(long) => {
                let v = match long {
                    Long::I8(v) => i64::from(v[row]),
                    Long::I16(v) => i64::from(v[row]),
                    Long::I32(v) => i64::from(v[row]),
                    Long::I64(v) => v[row],
                    Long::Date64(v) => v[row].div_euclid(MILLIS_PER_DAY),
                    Long::Millis(v, unit) => {
                        let nanos = i128::from(v[row]) * unit_nanos(*unit);
                        i64::try_from(nanos.div_euclid(NANOS_PER_MILLI)).map_err(|_| {
                            WireError::value(&self.path, "the timestamp overflows milliseconds")
                        })?
                    }
                };
                crc.long(v);
                put_varint(out, zigzag64(v));
                Ok(())
            }
            Src::Bool(array) => {
                let v = array.value(row);
                crc.boolean(v);
                put_varint(out, u64::from(v));
                Ok(())
            }
            Src::F32(v) => {
                let bytes = v[row].to_le_bytes();
                crc.bytes(&bytes);
                out.extend_from_slice(&bytes);
                Ok(())
            }
            Src::F64(v) => {
                let bytes = v[row].to_le_bytes();
                crc.bytes(&bytes);
                out.extend_from_slice(&bytes);
                Ok(())
            }
            Src::F32AsF64(v) => {
                let bytes = f64::from(v[row]).to_le_bytes();
                crc.bytes(&bytes);
                out.extend_from_slice(&bytes);
                Ok(())
            }
            Src::Bytes(array) => {
                let bytes = bytes_at(*array, row);
                let len = u32::try_from(bytes.len()).map_err(|_| {
                    WireError::value(&self.path, "a value of 4 GiB or more cannot be written")
                })?;
                crc.bytes(bytes);
                put_varint(out, u64::from(len));
                out.extend_from_slice(bytes);
                Ok(())
            }
            Src::Decimal128(v, scale) => {
                let text = format_decimal(&v[row].to_string(), *scale);
                crc.bytes(text.as_bytes());
                put_varint(out, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
                Ok(())
            }
            Src::Decimal256(v, scale) => {
                let text = format_decimal(&v[row].to_string(), *scale);
                crc.bytes(text.as_bytes());
                put_varint(out, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
                Ok(())
            }
            Src::SecNanos(src) => {
                let (sec, nanos) = match src {
                    SecNanos::Timestamp(v, unit) => {
                        split_nanos(i128::from(v[row]) * unit_nanos(*unit))
                    }
                    SecNanos::DayTime(v) => {
                        let total = i64::from(v[row].days) * MILLIS_PER_DAY
                            + i64::from(v[row].milliseconds);
                        split_nanos(i128::from(total) * NANOS_PER_MILLI)
                    }
                    SecNanos::MonthDayNano(v) => {
                        let x = v[row];
                        if x.months != 0 {
                            return Err(WireError::value(
                                &self.path,
                                format!(
                                    "an interval of {} months cannot be written as \
                                     INTERVAL_DAY_TIME",
                                    x.months
                                ),
                            ));
                        }
                        split_nanos(i128::from(x.days) * NANOS_PER_DAY + i128::from(x.nanoseconds))
                    }
                    SecNanos::Struct(sec, nano, sec_array, nano_array) => {
                        if sec_array.is_null(row) || nano_array.is_null(row) {
                            return Err(WireError::value(
                                &self.path,
                                "a non-null struct<sec, nano> has a null sec or nano",
                            ));
                        }
                        (sec[row], nano[row])
                    }
                };
                crc.long(sec);
                put_varint(out, zigzag64(sec));
                crc.int(nanos);
                put_varint(out, zigzag32(nanos));
                Ok(())
            }
            Src::List { offsets, child } => {
                let (start, end) = offsets.range(row);
                write_elements(child, start..end, out, crc)
            }
            Src::Map {
                offsets,
                keys,
                values,
            } => {
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                write_elements(keys, start..end, out, crc)?;
                write_elements(values, start..end, out, crc)
            }
            Src::Struct(children) => {
                for child in children {
                    if child.is_null(row) {
                        put_varint(out, 1);
                    } else {
                        put_varint(out, 0);
                        child.write(row, out, crc)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// `(seconds, nanoseconds)` of a count of nanoseconds: seconds rounded down, nanoseconds
/// in `0..1e9` (what PyODPS's C writer sends for a negative pandas Timestamp).
fn split_nanos(total: i128) -> (i64, i32) {
    let sec = total.div_euclid(NANOS_PER_SECOND);
    let nanos = total.rem_euclid(NANOS_PER_SECOND) as i32;
    // |total| < 2^63 * 1e9, so the seconds fit.
    (sec.clamp(i64::MIN.into(), i64::MAX.into()) as i64, nanos)
}

fn write_elements(
    node: &Node<'_>,
    rows: std::ops::Range<usize>,
    out: &mut Vec<u8>,
    crc: &mut Crc,
) -> Result<(), WireError> {
    let count = u32::try_from(rows.len())
        .map_err(|_| WireError::value(&node.path, "more than 2^32 elements in one value"))?;
    put_varint(out, u64::from(count));
    for row in rows {
        if node.is_null(row) {
            put_varint(out, 1);
        } else {
            put_varint(out, 0);
            node.write(row, out, crc)?;
        }
    }
    Ok(())
}

fn bytes_at(array: &dyn Array, row: usize) -> &[u8] {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).as_bytes(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).as_bytes(),
        DataType::Utf8View => array.as_string_view().value(row).as_bytes(),
        DataType::Binary => array.as_binary::<i32>().value(row),
        DataType::LargeBinary => array.as_binary::<i64>().value(row),
        DataType::BinaryView => array.as_binary_view().value(row),
        DataType::FixedSizeBinary(_) => array.as_fixed_size_binary().value(row),
        _ => &[],
    }
}

/// Writes Arrow batches as a Tunnel record stream.
///
/// Column `i` of every batch is written as field `i + 1` of the columns given to
/// [`new`](Self::new) (by position; names are not compared). Accepted Arrow types, per
/// column type: integers of the column's width or narrower; FLOAT float32; DOUBLE float32 or
/// float64; BOOLEAN boolean; STRING, VARCHAR, CHAR, JSON, BINARY and BLOB any utf8 or binary
/// type (the bytes are sent as they are); DECIMAL decimal128 or decimal256 (sent as plain
/// text with the array's scale); DATE date32 or date64; DATETIME a timestamp of any unit
/// (sent as milliseconds, rounded down); TIMESTAMP and TIMESTAMP_NTZ a timestamp of any unit
/// or `struct<sec: int64, nano: int32>`; INTERVAL_DAY_TIME interval(day_time),
/// interval(month_day_nano) without months, or `struct<sec, nano>`; INTERVAL_YEAR_MONTH
/// interval(year_month); ARRAY list, large_list or fixed_size_list; MAP map; STRUCT a
/// struct with as many fields (by position). An array of the `null` type writes nulls.
#[derive(Debug, Clone)]
pub struct RecordEncoder {
    columns: Vec<Column>,
    record_crc: Crc,
    crc_of_crcs: Crc,
    count: u64,
    sign_extend: bool,
}

impl RecordEncoder {
    /// An encoder of a stream of `columns` (the request's columns, in order).
    pub fn new(columns: &[Column]) -> Result<Self, WireError> {
        check_depth(columns)?;
        Ok(RecordEncoder {
            columns: columns.to_vec(),
            record_crc: Crc::default(),
            crc_of_crcs: Crc::default(),
            count: 0,
            sign_extend: false,
        })
    }

    /// Writes CRCs of 2^31 and more as PyODPS's C writer does: sign-extended to 10-byte
    /// varints (every reader takes their low 32 bits, except PyODPS's pure-Python fallback,
    /// which refuses them). Off by default: CRCs are plain unsigned varints (at most 5
    /// bytes), which every reader takes. With it, the stream is byte for byte PyODPS's.
    pub fn with_sign_extended_crcs(mut self, on: bool) -> Self {
        self.sign_extend = on;
        self
    }

    fn put_crc(&self, out: &mut Vec<u8>, crc: u32) {
        if self.sign_extend {
            put_varint(out, crc as i32 as i64 as u64);
        } else {
            put_varint(out, u64::from(crc));
        }
    }

    /// The records written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends the records of `batch` to `out`. On an error, `out` holds the records before
    /// the one that failed (whole records only).
    pub fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), WireError> {
        if batch.num_columns() != self.columns.len() {
            return Err(WireError::value(
                "*",
                format!(
                    "the batch has {} columns, the stream {}",
                    batch.num_columns(),
                    self.columns.len()
                ),
            ));
        }
        let nodes = self
            .columns
            .iter()
            .zip(batch.columns())
            .map(|(c, a)| compile(&c.ty, a.as_ref(), c.name.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let start = out.len();
            if let Err(e) = self.encode_row(&nodes, row, out) {
                out.truncate(start);
                self.record_crc.reset();
                return Err(e);
            }
        }
        Ok(())
    }

    fn encode_row(
        &mut self,
        nodes: &[Node<'_>],
        row: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        for (i, (node, column)) in nodes.iter().zip(&self.columns).enumerate() {
            if node.is_null(row) {
                continue;
            }
            let field = i as u32 + 1;
            self.record_crc.int(field as i32);
            put_tag(out, field, wire_type(&column.ty));
            node.write(row, out, &mut self.record_crc)?;
        }
        let crc = self.record_crc.value();
        put_tag(out, TUNNEL_END_RECORD, WIRE_VARINT);
        self.put_crc(out, crc);
        self.record_crc.reset();
        self.crc_of_crcs.int(crc as i32);
        self.count += 1;
        Ok(())
    }

    /// Appends the footer: the record count and the crc of crcs.
    pub fn finish(self, out: &mut Vec<u8>) {
        self.finish_inner(None, out);
    }

    /// Appends the footer with a metrics block (the JSON a server reports) between the
    /// count and the crc of crcs.
    pub fn finish_with_metrics(self, metrics: &[u8], out: &mut Vec<u8>) {
        self.finish_inner(Some(metrics), out);
    }

    fn finish_inner(self, metrics: Option<&[u8]>, out: &mut Vec<u8>) {
        put_tag(out, TUNNEL_META_COUNT, WIRE_VARINT);
        put_varint(out, zigzag64(self.count as i64));
        if let Some(metrics) = metrics {
            let mut crc = Crc::default();
            crc.int(TUNNEL_METRICS as i32);
            crc.bytes(metrics);
            put_tag(out, TUNNEL_METRICS, WIRE_LENGTH_DELIMITED);
            put_varint(out, metrics.len() as u64);
            out.extend_from_slice(metrics);
            put_tag(out, TUNNEL_END_METRICS, WIRE_VARINT);
            self.put_crc(out, crc.value());
        }
        put_tag(out, TUNNEL_META_CHECKSUM, WIRE_VARINT);
        self.put_crc(out, self.crc_of_crcs.value());
    }
}

/// Encodes `batches` of `columns` as one whole stream, footer included.
pub fn encode_records(columns: &[Column], batches: &[RecordBatch]) -> Result<Vec<u8>, WireError> {
    let mut encoder = RecordEncoder::new(columns)?;
    let mut out = Vec::new();
    for batch in batches {
        encoder.encode(batch, &mut out)?;
    }
    encoder.finish(&mut out);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------

/// Why a parse stopped.
enum Stop {
    /// The buffer must hold at least this many bytes (from the record's start) to go on.
    More(usize),
    Fail(WireError),
}

impl From<WireError> for Stop {
    fn from(e: WireError) -> Self {
        Stop::Fail(e)
    }
}

type Step<T> = Result<T, Stop>;

/// A cursor over the bytes buffered from the start of a record.
struct Cur<'b> {
    buf: &'b [u8],
    pos: usize,
    max_value_bytes: usize,
}

impl<'b> Cur<'b> {
    fn take(&mut self, n: usize) -> Step<&'b [u8]> {
        let end = self.pos.checked_add(n).ok_or(Stop::More(usize::MAX))?;
        if end > self.buf.len() {
            return Err(Stop::More(end));
        }
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn varint(&mut self) -> Step<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos + i) else {
                return Err(Stop::More(self.pos + i + 1));
            };
            if i == 9 && b > 1 {
                return Err(
                    malformed(format!("a varint at byte {} overflows 64 bits", self.pos)).into(),
                );
            }
            value |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(value);
            }
        }
        Err(malformed(format!(
            "a varint at byte {} is longer than 10 bytes",
            self.pos
        ))
        .into())
    }

    /// An unsigned 32-bit varint. PyODPS's C writer sign-extends values of 2^31 and more
    /// to 64 bits (10 bytes, as protobuf writes a negative int32): those are taken as their
    /// low 32 bits; any other value over 32 bits is malformed.
    fn u32(&mut self, what: &str) -> Step<u32> {
        let at = self.pos;
        let v = self.varint()?;
        match u32::try_from(v) {
            Ok(v) => Ok(v),
            Err(_) if v >> 31 == (1 << 33) - 1 => Ok(v as u32),
            Err(_) => {
                Err(malformed(format!("{what} at byte {at} is {v}, more than 32 bits")).into())
            }
        }
    }

    /// A boolean or null flag: the varint 0 or 1 (PyODPS reads any non-zero value as true;
    /// no writer sends one, and refusing them leaves no bit of the stream unchecked).
    fn flag(&mut self, what: &str) -> Step<bool> {
        let at = self.pos;
        match self.varint()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(malformed(format!("{what} at byte {at} is {v}, not 0 or 1")).into()),
        }
    }

    fn sint64(&mut self) -> Step<i64> {
        Ok(unzigzag64(self.varint()?))
    }

    fn sint32(&mut self) -> Step<i32> {
        Ok(unzigzag32(self.u32("a 32-bit integer")?))
    }

    fn length_delimited(&mut self, path: &str) -> Step<&'b [u8]> {
        let at = self.pos;
        let len = self.u32("a length")? as usize;
        if len > self.max_value_bytes {
            return Err(malformed(format!(
                "a value of column `{path}` at byte {at} declares {len} bytes (the limit is {})",
                self.max_value_bytes
            ))
            .into());
        }
        self.take(len)
    }
}

/// How the values of one column (or nested field) are read and kept.
#[derive(Debug)]
enum Data {
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// DATE (wire: days).
    Date32(Vec<i32>),
    /// DATETIME (wire: milliseconds) as a timestamp of the unit.
    DateTime(Vec<i64>, TimeUnit),
    /// INTERVAL_YEAR_MONTH (wire: months).
    YearMonth(Vec<i32>),
    Bool(BooleanBufferBuilder),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes {
        offsets: Vec<i64>,
        values: Vec<u8>,
        utf8: bool,
    },
    Decimal128(Vec<i128>, u8, i8),
    Decimal256(Vec<i256>, u8, i8),
    /// TIMESTAMP, TIMESTAMP_NTZ (wire: seconds, nanoseconds) as a timestamp of the unit.
    Timestamp(Vec<i64>, TimeUnit),
    /// Seconds and nanoseconds as they are, for `struct<sec, nano>`.
    SecNano(Vec<i64>, Vec<i32>),
    DayTime(Vec<IntervalDayTime>),
    MonthDayNano(Vec<IntervalMonthDayNano>),
    List {
        offsets: Vec<i64>,
        child: Box<Col>,
    },
    Map {
        offsets: Vec<i64>,
        keys: Box<Col>,
        values: Box<Col>,
    },
    Struct(Vec<Col>),
}

/// The values decoded so far of one column (or nested field), for the Arrow type it is
/// delivered as.
#[derive(Debug)]
struct Col {
    data_type: DataType,
    path: String,
    nulls: NullBufferBuilder,
    data: Data,
}

fn sec_nano_fields() -> Fields {
    Fields::from(vec![
        Field::new("sec", DataType::Int64, true),
        Field::new("nano", DataType::Int32, true),
    ])
}

impl Col {
    /// The reader of `ty` delivered as `data_type`; an error names the column if the pair
    /// is not supported.
    fn new(ty: &OdpsType, data_type: &DataType, path: String) -> Result<Col, WireError> {
        use DataType as A;
        let mismatch = || {
            Err(WireError::value(
                &path,
                format!("a {ty} column cannot be decoded as Arrow {data_type}"),
            ))
        };
        let data = match (ty, data_type) {
            (
                OdpsType::TinyInt | OdpsType::SmallInt | OdpsType::Int | OdpsType::BigInt,
                A::Int8,
            ) => Data::I8(Vec::new()),
            (
                OdpsType::TinyInt | OdpsType::SmallInt | OdpsType::Int | OdpsType::BigInt,
                A::Int16,
            ) => Data::I16(Vec::new()),
            (
                OdpsType::TinyInt | OdpsType::SmallInt | OdpsType::Int | OdpsType::BigInt,
                A::Int32,
            ) => Data::I32(Vec::new()),
            (
                OdpsType::TinyInt | OdpsType::SmallInt | OdpsType::Int | OdpsType::BigInt,
                A::Int64,
            ) => Data::I64(Vec::new()),
            (OdpsType::Float, A::Float32) => Data::F32(Vec::new()),
            (OdpsType::Double, A::Float64) => Data::F64(Vec::new()),
            (OdpsType::Boolean, A::Boolean) => Data::Bool(BooleanBufferBuilder::new(0)),
            (
                OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_) | OdpsType::Json,
                A::Utf8 | A::LargeUtf8,
            ) => Data::Bytes {
                offsets: vec![0],
                values: Vec::new(),
                utf8: true,
            },
            (
                OdpsType::String
                | OdpsType::Varchar(_)
                | OdpsType::Char(_)
                | OdpsType::Json
                | OdpsType::Binary
                | OdpsType::Blob,
                A::Binary | A::LargeBinary,
            ) => Data::Bytes {
                offsets: vec![0],
                values: Vec::new(),
                utf8: false,
            },
            (OdpsType::Decimal(_), A::Decimal128(p, s)) => Data::Decimal128(Vec::new(), *p, *s),
            (OdpsType::Decimal(_), A::Decimal256(p, s)) => Data::Decimal256(Vec::new(), *p, *s),
            (OdpsType::Date, A::Date32) => Data::Date32(Vec::new()),
            (OdpsType::DateTime, A::Timestamp(unit, _)) => Data::DateTime(Vec::new(), *unit),
            (OdpsType::Timestamp | OdpsType::TimestampNtz, A::Timestamp(unit, _)) => {
                Data::Timestamp(Vec::new(), *unit)
            }
            (OdpsType::IntervalDayTime, A::Interval(IntervalUnit::DayTime)) => {
                Data::DayTime(Vec::new())
            }
            (OdpsType::IntervalDayTime, A::Interval(IntervalUnit::MonthDayNano)) => {
                Data::MonthDayNano(Vec::new())
            }
            (OdpsType::Timestamp | OdpsType::TimestampNtz | OdpsType::IntervalDayTime, _)
                if is_sec_nano_struct(data_type) =>
            {
                Data::SecNano(Vec::new(), Vec::new())
            }
            (OdpsType::IntervalYearMonth, A::Interval(IntervalUnit::YearMonth)) => {
                Data::YearMonth(Vec::new())
            }
            (OdpsType::Array(element), A::List(field) | A::LargeList(field)) => Data::List {
                offsets: vec![0],
                child: Box::new(Col::new(
                    element,
                    field.data_type(),
                    format!("{path}.element"),
                )?),
            },
            (OdpsType::Map(key, value), A::Map(entries, _)) => match entries.data_type() {
                A::Struct(kv) if kv.len() == 2 => Data::Map {
                    offsets: vec![0],
                    keys: Box::new(Col::new(key, kv[0].data_type(), format!("{path}.key"))?),
                    values: Box::new(Col::new(value, kv[1].data_type(), format!("{path}.value"))?),
                },
                _ => return mismatch(),
            },
            (OdpsType::Struct(fields), A::Struct(arrow_fields))
                if fields.len() == arrow_fields.len() =>
            {
                Data::Struct(
                    fields
                        .iter()
                        .zip(arrow_fields.iter())
                        .map(|(f, a)| Col::new(&f.ty, a.data_type(), format!("{path}.{}", f.name)))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => return mismatch(),
        };
        Ok(Col {
            data_type: data_type.clone(),
            path,
            nulls: NullBufferBuilder::new(0),
            data,
        })
    }

    fn len(&self) -> usize {
        self.nulls.len()
    }

    fn push_null(&mut self) {
        match &mut self.data {
            Data::I8(v) => v.push(0),
            Data::I16(v) => v.push(0),
            Data::I32(v) | Data::Date32(v) | Data::YearMonth(v) => v.push(0),
            Data::I64(v) | Data::DateTime(v, _) | Data::Timestamp(v, _) => v.push(0),
            Data::Bool(b) => b.append(false),
            Data::F32(v) => v.push(0.0),
            Data::F64(v) => v.push(0.0),
            Data::Bytes {
                offsets, values, ..
            } => offsets.push(values.len() as i64),
            Data::Decimal128(v, ..) => v.push(0),
            Data::Decimal256(v, ..) => v.push(i256::ZERO),
            Data::SecNano(s, n) => {
                s.push(0);
                n.push(0);
            }
            Data::DayTime(v) => v.push(IntervalDayTime::ZERO),
            Data::MonthDayNano(v) => v.push(IntervalMonthDayNano::ZERO),
            Data::List { offsets, .. } | Data::Map { offsets, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
            }
            Data::Struct(children) => children.iter_mut().for_each(Col::push_null),
        }
        self.nulls.append_null();
    }

    /// Drops everything after the first `len` values (undoing a record cut short).
    fn truncate(&mut self, len: usize) {
        self.nulls.truncate(len);
        match &mut self.data {
            Data::I8(v) => v.truncate(len),
            Data::I16(v) => v.truncate(len),
            Data::I32(v) | Data::Date32(v) | Data::YearMonth(v) => v.truncate(len),
            Data::I64(v) | Data::DateTime(v, _) | Data::Timestamp(v, _) => v.truncate(len),
            Data::Bool(b) => b.truncate(len),
            Data::F32(v) => v.truncate(len),
            Data::F64(v) => v.truncate(len),
            Data::Bytes {
                offsets, values, ..
            } => {
                offsets.truncate(len + 1);
                values.truncate(offsets.last().copied().unwrap_or(0) as usize);
            }
            Data::Decimal128(v, ..) => v.truncate(len),
            Data::Decimal256(v, ..) => v.truncate(len),
            Data::SecNano(s, n) => {
                s.truncate(len);
                n.truncate(len);
            }
            Data::DayTime(v) => v.truncate(len),
            Data::MonthDayNano(v) => v.truncate(len),
            Data::List { offsets, child } => {
                offsets.truncate(len + 1);
                child.truncate(offsets.last().copied().unwrap_or(0) as usize);
            }
            Data::Map {
                offsets,
                keys,
                values,
            } => {
                offsets.truncate(len + 1);
                let end = offsets.last().copied().unwrap_or(0) as usize;
                keys.truncate(end);
                values.truncate(end);
            }
            Data::Struct(children) => children.iter_mut().for_each(|c| c.truncate(len)),
        }
    }

    /// Reads one (non-null) value, feeding the record CRC.
    fn read(&mut self, cur: &mut Cur<'_>, crc: &mut Crc) -> Step<()> {
        let Col {
            data_type,
            path,
            nulls,
            data,
        } = self;
        let fit = |v: i128, what: &str| -> Stop {
            WireError::value(
                path.as_str(),
                format!("{what} {v} does not fit Arrow {data_type}"),
            )
            .into()
        };
        match data {
            Data::I8(out) => {
                let v = cur.sint64()?;
                crc.long(v);
                out.push(i8::try_from(v).map_err(|_| fit(v.into(), "the value"))?);
            }
            Data::I16(out) => {
                let v = cur.sint64()?;
                crc.long(v);
                out.push(i16::try_from(v).map_err(|_| fit(v.into(), "the value"))?);
            }
            Data::I32(out) => {
                let v = cur.sint64()?;
                crc.long(v);
                out.push(i32::try_from(v).map_err(|_| fit(v.into(), "the value"))?);
            }
            Data::I64(out) => {
                let v = cur.sint64()?;
                crc.long(v);
                out.push(v);
            }
            Data::Date32(out) => {
                let v = cur.sint64()?;
                crc.long(v);
                out.push(i32::try_from(v).map_err(|_| fit(v.into(), "the date (days)"))?);
            }
            Data::YearMonth(out) => {
                let v = cur.sint64()?;
                crc.long(v);
                out.push(i32::try_from(v).map_err(|_| fit(v.into(), "the interval (months)"))?);
            }
            Data::DateTime(out, unit) => {
                let v = cur.sint64()?;
                crc.long(v);
                let nanos = i128::from(v) * NANOS_PER_MILLI;
                out.push(in_unit(nanos, *unit).ok_or_else(|| fit(nanos, "the time (ns)"))?);
            }
            Data::Bool(out) => {
                let v = cur.flag("a boolean")?;
                crc.boolean(v);
                out.append(v);
            }
            Data::F32(out) => {
                let raw = cur.take(4)?;
                crc.bytes(raw);
                out.push(f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]));
            }
            Data::F64(out) => {
                let raw = cur.take(8)?;
                crc.bytes(raw);
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(raw);
                out.push(f64::from_le_bytes(bytes));
            }
            Data::Bytes {
                offsets,
                values,
                utf8,
            } => {
                let raw = cur.length_delimited(path)?;
                crc.bytes(raw);
                if *utf8 && std::str::from_utf8(raw).is_err() {
                    return Err(WireError::value(
                        path.as_str(),
                        "a value is not valid UTF-8; decode the column as binary",
                    )
                    .into());
                }
                values.extend_from_slice(raw);
                offsets.push(values.len() as i64);
            }
            Data::Decimal128(out, precision, scale) => {
                let raw = cur.length_delimited(path)?;
                crc.bytes(raw);
                let v = parse_decimal(raw, *precision, *scale)
                    .map_err(|m| WireError::value(path.as_str(), m))?;
                out.push(v.as_i128());
            }
            Data::Decimal256(out, precision, scale) => {
                let raw = cur.length_delimited(path)?;
                crc.bytes(raw);
                let v = parse_decimal(raw, *precision, *scale)
                    .map_err(|m| WireError::value(path.as_str(), m))?;
                out.push(v);
            }
            Data::Timestamp(..) | Data::SecNano(..) | Data::DayTime(_) | Data::MonthDayNano(_) => {
                let sec = cur.sint64()?;
                crc.long(sec);
                let nanos = cur.sint32()?;
                crc.int(nanos);
                let total = i128::from(sec) * NANOS_PER_SECOND + i128::from(nanos);
                match data {
                    Data::Timestamp(out, unit) => {
                        out.push(in_unit(total, *unit).ok_or_else(|| fit(total, "the time (ns)"))?);
                    }
                    Data::SecNano(s, n) => {
                        s.push(sec);
                        n.push(nanos);
                    }
                    Data::DayTime(out) => {
                        if total % NANOS_PER_MILLI != 0 {
                            return Err(WireError::value(
                                path.as_str(),
                                format!(
                                    "the interval {sec} s {nanos} ns has a fraction of a \
                                     millisecond, which interval(day_time) cannot hold; decode \
                                     it as interval(month_day_nano) or struct<sec, nano>"
                                ),
                            )
                            .into());
                        }
                        let millis = total / NANOS_PER_MILLI;
                        let days = millis.div_euclid(i128::from(MILLIS_PER_DAY));
                        let days =
                            i32::try_from(days).map_err(|_| fit(days, "the interval (days)"))?;
                        let ms = millis.rem_euclid(i128::from(MILLIS_PER_DAY)) as i32;
                        out.push(IntervalDayTime::new(days, ms));
                    }
                    Data::MonthDayNano(out) => {
                        let days = total.div_euclid(NANOS_PER_DAY);
                        let days =
                            i32::try_from(days).map_err(|_| fit(days, "the interval (days)"))?;
                        let nanos_of_day = total.rem_euclid(NANOS_PER_DAY) as i64;
                        out.push(IntervalMonthDayNano::new(0, days, nanos_of_day));
                    }
                    _ => unreachable!("matched above"),
                }
            }
            Data::List { offsets, child } => {
                let count = cur.u32("an array count")?;
                read_elements(child, count, cur, crc, true)?;
                offsets.push(child.len() as i64);
            }
            Data::Map {
                offsets,
                keys,
                values,
            } => {
                let key_count = cur.u32("a map key count")?;
                read_elements(keys, key_count, cur, crc, false)?;
                let value_count = cur.u32("a map value count")?;
                if value_count != key_count {
                    return Err(malformed(format!(
                        "a value of column `{path}` has {key_count} map keys but {value_count} \
                         values"
                    ))
                    .into());
                }
                read_elements(values, value_count, cur, crc, true)?;
                offsets.push(keys.len() as i64);
            }
            Data::Struct(children) => {
                for child in children {
                    if cur.flag("a null flag")? {
                        child.push_null();
                    } else {
                        child.read(cur, crc)?;
                    }
                }
            }
        }
        nulls.append_non_null();
        Ok(())
    }

    /// The Arrow array of the values so far; the column starts over empty.
    fn finish(&mut self) -> Result<ArrayRef, WireError> {
        let len = self.len();
        let nulls = self.nulls.finish();
        let arrow = |e| WireError::arrow(format!("building column `{}`", self.path), e);
        let fixed = |buffer: Buffer| -> Result<ArrayRef, WireError> {
            let data = ArrayData::builder(self.data_type.clone())
                .len(len)
                .add_buffer(buffer)
                .nulls(nulls.clone())
                .build()
                .map_err(arrow)?;
            Ok(make_array(data))
        };
        let array: ArrayRef = match &mut self.data {
            Data::I8(v) => fixed(Buffer::from_vec(std::mem::take(v)))?,
            Data::I16(v) => fixed(Buffer::from_vec(std::mem::take(v)))?,
            Data::I32(v) | Data::Date32(v) | Data::YearMonth(v) => {
                fixed(Buffer::from_vec(std::mem::take(v)))?
            }
            Data::I64(v) | Data::DateTime(v, _) | Data::Timestamp(v, _) => {
                fixed(Buffer::from_vec(std::mem::take(v)))?
            }
            Data::F32(v) => fixed(Buffer::from_vec(std::mem::take(v)))?,
            Data::F64(v) => fixed(Buffer::from_vec(std::mem::take(v)))?,
            Data::Decimal128(v, ..) => fixed(Buffer::from_vec(std::mem::take(v)))?,
            Data::Decimal256(v, ..) => fixed(Buffer::from_vec(std::mem::take(v)))?,
            Data::DayTime(v) => fixed(Buffer::from_vec(std::mem::take(v)))?,
            Data::MonthDayNano(v) => fixed(Buffer::from_vec(std::mem::take(v)))?,
            Data::Bool(b) => Arc::new(BooleanArray::new(b.finish(), nulls.clone())),
            Data::Bytes {
                offsets, values, ..
            } => {
                let offsets = std::mem::replace(offsets, vec![0]);
                let values = std::mem::take(values);
                let large = matches!(self.data_type, DataType::LargeUtf8 | DataType::LargeBinary);
                let offsets = if large {
                    Buffer::from_vec(offsets)
                } else {
                    Buffer::from_vec(small_offsets(offsets, &self.path, "bytes")?)
                };
                let data = ArrayData::builder(self.data_type.clone())
                    .len(len)
                    .add_buffer(offsets)
                    .add_buffer(Buffer::from_vec(values))
                    .nulls(nulls.clone())
                    .build()
                    .map_err(arrow)?;
                make_array(data)
            }
            Data::SecNano(s, n) => {
                let DataType::Struct(fields) = &self.data_type else {
                    unreachable!()
                };
                let children: Vec<ArrayRef> = vec![
                    Arc::new(arrow_array::Int64Array::new(
                        ScalarBuffer::from(std::mem::take(s)),
                        None,
                    )),
                    Arc::new(arrow_array::Int32Array::new(
                        ScalarBuffer::from(std::mem::take(n)),
                        None,
                    )),
                ];
                Arc::new(
                    StructArray::try_new(fields.clone(), children, nulls.clone()).map_err(arrow)?,
                )
            }
            Data::List { offsets, child } => {
                let offsets = std::mem::replace(offsets, vec![0]);
                let values = child.finish()?;
                let data = match &self.data_type {
                    DataType::LargeList(_) => ArrayData::builder(self.data_type.clone())
                        .len(len)
                        .add_buffer(Buffer::from_vec(offsets)),
                    _ => ArrayData::builder(self.data_type.clone())
                        .len(len)
                        .add_buffer(Buffer::from_vec(small_offsets(
                            offsets,
                            &self.path,
                            "array elements",
                        )?)),
                }
                .add_child_data(values.to_data())
                .nulls(nulls.clone())
                .build()
                .map_err(arrow)?;
                make_array(data)
            }
            Data::Map {
                offsets,
                keys,
                values,
            } => {
                let offsets = small_offsets(
                    std::mem::replace(offsets, vec![0]),
                    &self.path,
                    "map entries",
                )?;
                let DataType::Map(entries_field, ordered) = &self.data_type else {
                    unreachable!()
                };
                let DataType::Struct(kv) = entries_field.data_type() else {
                    unreachable!()
                };
                let entries =
                    StructArray::try_new(kv.clone(), vec![keys.finish()?, values.finish()?], None)
                        .map_err(arrow)?;
                Arc::new(
                    MapArray::try_new(
                        entries_field.clone(),
                        OffsetBuffer::new(ScalarBuffer::from(offsets)),
                        entries,
                        nulls.clone(),
                        *ordered,
                    )
                    .map_err(arrow)?,
                )
            }
            Data::Struct(children) => {
                let DataType::Struct(fields) = &self.data_type else {
                    unreachable!()
                };
                let arrays = children
                    .iter_mut()
                    .map(Col::finish)
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(
                    StructArray::try_new(fields.clone(), arrays, nulls.clone()).map_err(arrow)?,
                )
            }
        };
        Ok(array)
    }
}

fn small_offsets(offsets: Vec<i64>, path: &str, what: &str) -> Result<Vec<i32>, WireError> {
    offsets
        .into_iter()
        .map(|o| {
            i32::try_from(o).map_err(|_| {
                WireError::value(
                    path,
                    format!("more than 2^31 {what} in one batch; decode it with a large type or smaller batches"),
                )
            })
        })
        .collect()
}

/// Reads `count` elements, each a null flag and (when not null) a value. Map keys
/// (`nullable` false) must not be null: Arrow maps cannot hold a null key.
fn read_elements(
    col: &mut Col,
    count: u32,
    cur: &mut Cur<'_>,
    crc: &mut Crc,
    nullable: bool,
) -> Step<()> {
    for _ in 0..count {
        if cur.flag("a null flag")? {
            if !nullable {
                return Err(WireError::value(
                    col.path.as_str(),
                    "a map has a null key, which Arrow maps cannot hold",
                )
                .into());
            }
            col.push_null();
        } else {
            col.read(cur, crc)?;
        }
    }
    Ok(())
}

/// Parses a decimal's text (`-12.5`, `1E+5`, `0.000`) into its unscaled value at `scale`,
/// rounding half away from zero (as MaxCompute does), and checks that it has at most
/// `precision` digits.
pub fn parse_decimal(text: &[u8], precision: u8, scale: i8) -> Result<i256, String> {
    let shown = || String::from_utf8_lossy(&text[..text.len().min(64)]).into_owned();
    let bad = || format!("{:?} is not a decimal", shown());
    let s = text.trim_ascii();
    let (negative, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match s.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => {
            let e = std::str::from_utf8(&s[i + 1..])
                .ok()
                .and_then(|e| e.parse::<i64>().ok())
                .ok_or_else(bad)?;
            (&s[..i], e)
        }
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &mantissa[..0]),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    // The value is digits * 10^-own_scale.
    let mut digits: Vec<u8> = int_part.iter().chain(frac_part).map(|b| b - b'0').collect();
    let own_scale = (frac_part.len() as i64).saturating_sub(exponent);
    let first = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
    digits.drain(..first);
    let target = i64::from(scale);
    // At most 76 digits fit an i256 with room for the rounding carry.
    const MAX_DIGITS: i64 = 76;
    let too_big = || {
        format!(
            "{} has more than {precision} digits with {scale} after the point",
            shown()
        )
    };
    let kept: &[u8];
    let mut round_up = false;
    let mut shift = 0i64;
    if own_scale <= target {
        shift = target - own_scale;
        if !digits.is_empty() && digits.len() as i64 + shift > MAX_DIGITS {
            return Err(too_big());
        }
        kept = &digits;
    } else {
        let drop = own_scale - target;
        if drop >= digits.len() as i64 {
            round_up = drop == digits.len() as i64 && digits.first().is_some_and(|&d| d >= 5);
            kept = &[];
        } else {
            let cut = digits.len() - drop as usize;
            round_up = digits[cut] >= 5;
            kept = &digits[..cut];
        }
        if kept.len() as i64 > MAX_DIGITS {
            return Err(too_big());
        }
    }
    let ten = i256::from_i128(10);
    let mut v = i256::ZERO;
    for &d in kept {
        v = v
            .checked_mul(ten)
            .and_then(|v| v.checked_add(i256::from_i128(i128::from(d))))
            .ok_or_else(too_big)?;
    }
    for _ in 0..shift {
        v = v.checked_mul(ten).ok_or_else(too_big)?;
    }
    if round_up {
        v = v.checked_add(i256::ONE).ok_or_else(too_big)?;
    }
    let limit = ten.checked_pow(u32::from(precision)).ok_or_else(too_big)?;
    if v >= limit {
        return Err(too_big());
    }
    Ok(if negative { v.wrapping_neg() } else { v })
}

/// Settings of a [`RecordDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordDecodeOptions {
    /// Rows per decoded batch (the last batch may be shorter).
    pub batch_rows: usize,
    /// The longest string, binary or decimal text a record may declare.
    pub max_value_bytes: usize,
    /// The most bytes one record (or the footer) may take; a record still incomplete past
    /// this is refused rather than buffered.
    pub max_record_bytes: usize,
}

impl Default for RecordDecodeOptions {
    fn default() -> Self {
        RecordDecodeOptions {
            batch_rows: 4096,
            max_value_bytes: 256 << 20,
            max_record_bytes: 1 << 30,
        }
    }
}

/// The Arrow schema records of `columns` are decoded into by default: each column as
/// [`Column::to_arrow_field`] gives it.
pub fn record_arrow_schema(columns: &[Column], options: &ArrowOptions) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| c.to_arrow_field(options))
            .collect::<Vec<_>>(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Records,
    Done,
    Failed,
}

/// Decodes a Tunnel record stream incrementally into Arrow batches (see the module docs).
///
/// Feed the body's bytes as they arrive with [`feed`](Self::feed), which returns every
/// complete batch of [`RecordDecodeOptions::batch_rows`] rows; then call
/// [`finish`](Self::finish) at the end of the body for the last rows. Each record is checked
/// against its CRC before it is added, so the rows handed out are sound even if the body
/// later turns out to be cut short (re-request from the rows delivered).
///
/// Values are delivered as the Arrow schema given to [`with_schema`](Self::with_schema),
/// by default [`record_arrow_schema`]. Besides those types, a column may be delivered as:
/// any integer type (values must fit), large_utf8 or (large_)binary for strings (utf8
/// refuses invalid UTF-8), decimal256, a timestamp of any unit for DATETIME and TIMESTAMP
/// (rounded down to the unit), `struct<sec: int64, nano: int32>` for TIMESTAMP,
/// TIMESTAMP_NTZ and INTERVAL_DAY_TIME, interval(month_day_nano) for INTERVAL_DAY_TIME
/// (interval(day_time) refuses a fraction of a millisecond), large_list for ARRAY.
#[derive(Debug)]
pub struct RecordDecoder {
    columns: Vec<Column>,
    schema: SchemaRef,
    cols: Vec<Col>,
    options: RecordDecodeOptions,
    buf: Vec<u8>,
    pos: usize,
    /// Don't parse again until `buf[pos..]` holds this many bytes.
    need: usize,
    rows: u64,
    crc_of_crcs: Crc,
    metrics: Option<Vec<u8>>,
    state: State,
}

/// What one parse of the bytes at a record's start found.
enum Parsed {
    Record(usize),
    Footer(usize),
}

impl RecordDecoder {
    /// A decoder of a stream of `columns` (the request's columns, in order) into
    /// [`record_arrow_schema`] with `arrow` options.
    pub fn new(
        columns: &[Column],
        arrow: &ArrowOptions,
        options: RecordDecodeOptions,
    ) -> Result<Self, WireError> {
        let schema = Arc::new(record_arrow_schema(columns, arrow));
        Self::with_schema(columns, schema, options)
    }

    /// A decoder of a stream of `columns` into `schema` (one field per column, by position;
    /// see the type docs for the Arrow types each column may take).
    pub fn with_schema(
        columns: &[Column],
        schema: SchemaRef,
        options: RecordDecodeOptions,
    ) -> Result<Self, WireError> {
        check_depth(columns)?;
        if schema.fields().len() != columns.len() {
            return Err(WireError::value(
                "*",
                format!(
                    "the Arrow schema has {} fields for {} columns",
                    schema.fields().len(),
                    columns.len()
                ),
            ));
        }
        let cols = columns
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| Col::new(&c.ty, f.data_type(), c.name.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordDecoder {
            columns: columns.to_vec(),
            schema,
            cols,
            options: RecordDecodeOptions {
                batch_rows: options.batch_rows.max(1),
                ..options
            },
            buf: Vec::new(),
            pos: 0,
            need: 0,
            rows: 0,
            crc_of_crcs: Crc::default(),
            metrics: None,
            state: State::Records,
        })
    }

    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The records decoded so far (all checked against their CRCs).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether the footer was read (and checked).
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// The metrics text of the footer, if the stream had one.
    pub fn metrics(&self) -> Option<&[u8]> {
        self.metrics.as_deref()
    }

    /// Takes the next bytes of the body; returns the batches they completed. After an error
    /// the decoder refuses everything.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<RecordBatch>, WireError> {
        let mut batches = Vec::new();
        match self.state {
            State::Failed => return Err(malformed("the stream already failed")),
            State::Done if !input.is_empty() => {
                self.state = State::Failed;
                return Err(malformed(format!(
                    "{} bytes follow the footer",
                    input.len()
                )));
            }
            _ => {}
        }
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(input);
        while self.state == State::Records && self.buf.len() - self.pos >= self.need.max(1) {
            let rows_before = self.cols.first().map_or(0, Col::len);
            match self.parse() {
                Ok(Parsed::Record(used)) => {
                    self.pos += used;
                    self.need = 0;
                    if self.cols.first().map_or(0, Col::len) >= self.options.batch_rows {
                        match self.flush() {
                            Ok(batch) => batches.push(batch),
                            Err(e) => return Err(self.fail(e)),
                        }
                    }
                }
                Ok(Parsed::Footer(used)) => {
                    self.pos += used;
                    self.state = State::Done;
                    let left = self.buf.len() - self.pos;
                    if left > 0 {
                        return Err(self.fail(malformed(format!("{left} bytes follow the footer"))));
                    }
                }
                Err(Stop::More(need)) => {
                    for col in &mut self.cols {
                        col.truncate(rows_before);
                    }
                    if need > self.options.max_record_bytes {
                        return Err(self.fail(malformed(format!(
                            "record {} needs more than {} bytes (the limit)",
                            self.rows, self.options.max_record_bytes
                        ))));
                    }
                    self.need = need;
                }
                Err(Stop::Fail(e)) => return Err(self.fail(e)),
            }
        }
        Ok(batches)
    }

    fn fail(&mut self, e: WireError) -> WireError {
        self.state = State::Failed;
        self.buf = Vec::new();
        self.pos = 0;
        e
    }

    /// Ends the body: the footer must have been read. Returns the rows not yet handed out.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, WireError> {
        match self.state {
            State::Failed => Err(malformed("the stream already failed")),
            State::Records => {
                let left = self.buf.len() - self.pos;
                let e = WireError::Truncated {
                    stream: STREAM,
                    message: if left == 0 {
                        format!(
                            "the body ended after {} records without the footer",
                            self.rows
                        )
                    } else {
                        format!(
                            "the body ended {left} bytes into record {} (after {} complete \
                             records), without the footer",
                            self.rows, self.rows
                        )
                    },
                };
                Err(self.fail(e))
            }
            State::Done => {
                if self.cols.first().map_or(0, Col::len) == 0 && !self.cols.is_empty() {
                    return Ok(None);
                }
                match self.flush() {
                    Ok(batch) => Ok((batch.num_rows() > 0).then_some(batch)),
                    Err(e) => Err(self.fail(e)),
                }
            }
        }
    }

    fn flush(&mut self) -> Result<RecordBatch, WireError> {
        let rows = self.cols.first().map_or(0, Col::len);
        let arrays = self
            .cols
            .iter_mut()
            .map(Col::finish)
            .collect::<Result<Vec<_>, _>>()?;
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .map_err(|e| WireError::arrow("building a batch of the record stream", e))
    }

    /// Parses one record or the footer from `buf[pos..]`.
    fn parse(&mut self) -> Step<Parsed> {
        let buf = std::mem::take(&mut self.buf);
        let parsed = self.parse_from(&buf[self.pos..]);
        self.buf = buf;
        parsed
    }

    fn parse_from(&mut self, bytes: &[u8]) -> Step<Parsed> {
        let mut cur = Cur {
            buf: bytes,
            pos: 0,
            max_value_bytes: self.options.max_value_bytes,
        };
        let mut crc = Crc::default();
        let mut next_column = 0usize;
        let rows = self.rows;
        loop {
            let tag_at = cur.pos;
            let tag = cur.u32("a tag")?;
            let field = tag >> 3;
            let wire = tag & 7;
            let expect_wire = |expected: u32, what: &str| -> Step<()> {
                if wire == expected {
                    Ok(())
                } else {
                    Err(malformed(format!(
                        "record {rows}: the tag at byte {tag_at} gives {what} wire type {wire}, not \
                         {expected}"
                    ))
                    .into())
                }
            };
            match field {
                0 => {
                    return Err(malformed(format!(
                        "record {rows}: the tag at byte {tag_at} has field number 0"
                    ))
                    .into());
                }
                TUNNEL_END_RECORD => {
                    expect_wire(WIRE_VARINT, "the record end")?;
                    let at = cur.pos;
                    let sent = cur.u32("a record CRC")?;
                    if sent != crc.value() {
                        return Err(checksum(format!(
                            "record {} (byte {at} of it) carries CRC {sent:#010x}, its bytes \
                             give {:#010x}",
                            self.rows,
                            crc.value()
                        ))
                        .into());
                    }
                    for col in &mut self.cols[next_column..] {
                        col.push_null();
                    }
                    self.crc_of_crcs.int(sent as i32);
                    self.rows += 1;
                    return Ok(Parsed::Record(cur.pos));
                }
                TUNNEL_META_COUNT => {
                    expect_wire(WIRE_VARINT, "the record count")?;
                    if next_column > 0 {
                        return Err(malformed(format!(
                            "the footer starts inside record {}",
                            self.rows
                        ))
                        .into());
                    }
                    return self.parse_footer(&mut cur).map(Parsed::Footer);
                }
                _ => {}
            }
            let index = field as usize;
            if index > self.cols.len() {
                return Err(malformed(format!(
                    "record {} has field {field}, but the stream has {} columns",
                    self.rows,
                    self.cols.len()
                ))
                .into());
            }
            if index <= next_column {
                return Err(malformed(format!(
                    "record {} has field {field} after field {next_column} (fields must \
                     increase)",
                    self.rows
                ))
                .into());
            }
            expect_wire(
                wire_type(&self.columns[index - 1].ty),
                &format!("column `{}`", self.columns[index - 1].name),
            )?;
            for col in &mut self.cols[next_column..index - 1] {
                col.push_null();
            }
            crc.int(field as i32);
            self.cols[index - 1].read(&mut cur, &mut crc)?;
            next_column = index;
        }
    }

    fn parse_footer(&mut self, cur: &mut Cur<'_>) -> Step<usize> {
        let count = cur.sint64()?;
        let mut tag = cur.u32("a tag")?;
        let mut metrics = None;
        if tag >> 3 != TUNNEL_META_CHECKSUM || tag & 7 != WIRE_VARINT {
            if tag & 7 != WIRE_LENGTH_DELIMITED {
                return Err(malformed(format!(
                    "the footer has field {} where the metrics or the crc of crcs belong",
                    tag >> 3
                ))
                .into());
            }
            let mut crc = Crc::default();
            crc.int((tag >> 3) as i32);
            let text = cur.length_delimited("metrics")?;
            crc.bytes(text);
            let end = cur.u32("a tag")?;
            if end != TUNNEL_END_METRICS << 3 | WIRE_VARINT {
                return Err(malformed(format!(
                    "the footer's metrics end with field {} instead of {TUNNEL_END_METRICS}",
                    end >> 3
                ))
                .into());
            }
            let sent = cur.u32("the metrics CRC")?;
            if sent != crc.value() {
                return Err(checksum(format!(
                    "the footer's metrics carry CRC {sent:#010x}, their bytes give {:#010x}",
                    crc.value()
                ))
                .into());
            }
            metrics = Some(text.to_vec());
            tag = cur.u32("a tag")?;
            if tag != TUNNEL_META_CHECKSUM << 3 | WIRE_VARINT {
                return Err(malformed(format!(
                    "the footer has field {} where the crc of crcs belongs",
                    tag >> 3
                ))
                .into());
            }
        }
        let sent = cur.u32("the crc of crcs")?;
        if u64::try_from(count).ok() != Some(self.rows) {
            return Err(checksum(format!(
                "the footer counts {count} records, the stream has {}",
                self.rows
            ))
            .into());
        }
        if sent != self.crc_of_crcs.value() {
            return Err(checksum(format!(
                "the footer's crc of crcs is {sent:#010x}, the records give {:#010x}",
                self.crc_of_crcs.value()
            ))
            .into());
        }
        self.metrics = metrics;
        Ok(cur.pos)
    }

    /// The columns of the stream.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }
}

/// Decodes a whole stream into batches (footer required).
pub fn decode_records(
    columns: &[Column],
    schema: SchemaRef,
    body: &[u8],
    options: RecordDecodeOptions,
) -> Result<Vec<RecordBatch>, WireError> {
    let mut decoder = RecordDecoder::with_schema(columns, schema, options)?;
    let mut batches = decoder.feed(body)?;
    batches.extend(decoder.finish()?);
    Ok(batches)
}

/// `struct<sec: int64, nano: int32>`, the lossless Arrow form of TIMESTAMP and
/// INTERVAL_DAY_TIME values.
pub fn sec_nano_type() -> DataType {
    DataType::Struct(sec_nano_fields())
}

/// A count of nanoseconds in `unit`, rounded down; `None` if it does not fit.
fn in_unit(nanos: i128, unit: TimeUnit) -> Option<i64> {
    i64::try_from(nanos.div_euclid(unit_nanos(unit))).ok()
}
