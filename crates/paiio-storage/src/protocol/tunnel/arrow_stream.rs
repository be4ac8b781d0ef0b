//! The Tunnel Arrow stream: the body of `GET {table}?data&arrow` and `PUT ...&arrow=`
//! (TUNNEL.md §1.6, PyODPS's `ArrowStreamReader`, `TunnelArrowReader` and
//! `BaseArrowWriter`).
//!
//! The body (after any whole-body [`encoding`](super::encoding)) is framed:
//!
//! ```text
//! u32_be chunk_size                       (PyODPS writes 65536)
//! repeat: chunk_size bytes of data + u32_be CRC-32C of that chunk
//! last:   n < chunk_size bytes of data + u32_be CRC-32C of ALL data bytes of the stream
//! ```
//!
//! The data are encapsulated Arrow IPC **record batch messages only**: no schema message,
//! no end-of-stream marker. Both sides build the schema from the table schema
//! ([`wire_arrow_schema`], as PyODPS's `io/types.py` does) and the reader prepends it.
//!
//! [`ChunkWriter`] and [`ChunkReader`] do the framing; [`ArrowStreamEncoder`] and
//! [`ArrowStreamDecoder`] the whole stream. The reader is stricter than PyODPS: the final
//! global CRC is required (a body that ends right after a full chunk is
//! [`WireError::Truncated`], which PyODPS takes for a clean end), and every IPC message is
//! checked by [`crate::ipc_guard`] before arrow-ipc decodes it. One PyODPS quirk is kept: an
//! `ArrowWriter` that wrote nothing sends only the 4-byte global CRC of no data (`0`),
//! without a chunk size, which reads as an empty stream.
//!
//! Column types on the wire ([`wire_arrow_type`]) follow PyODPS: STRING, VARCHAR, CHAR and
//! JSON utf8, BINARY and BLOB binary, DATE date32, DATETIME timestamp\[ms\], TIMESTAMP and
//! TIMESTAMP_NTZ timestamp\[ns\], DECIMAL(p,s) decimal128(p,s) and the unbounded DECIMAL
//! decimal256(54,18), INTERVAL_DAY_TIME `struct<sec: int64, nano: int32>`, ARRAY list, MAP
//! map, STRUCT struct. PyODPS has none for JSON, INTERVAL_YEAR_MONTH and BLOB (it refuses
//! them); here they are utf8, interval(year_month) and binary. PyODPS maps DECIMAL(p,0) to
//! decimal128(p,**18**) (`scale or 18`); this crate keeps scale 0, so such a column read by
//! PyODPS's Arrow reader from a server that sends the true scale comes out divided by
//! 10^18: avoid scale-0 decimals with PyODPS Arrow readers.
//!
//! Servers have begun to send top-level TIMESTAMP columns as `struct<sec, nano>` (PyODPS
//! #318); the decoder accepts both forms ([`TimestampWire`]) and delivers timestamp\[ns\].

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int32Type, Int64Type, IntervalDayTimeType, IntervalMonthDayNanoType, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{
    Array, ArrayRef, GenericListArray, Int32Array, Int64Array, MapArray, PrimitiveArray,
    RecordBatch, RecordBatchOptions, StructArray, new_null_array,
};
use arrow_buffer::{Buffer, IntervalDayTime, IntervalMonthDayNano, OffsetBuffer, ScalarBuffer};
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_schema::{DataType, Field, Fields, IntervalUnit, Schema, SchemaRef, TimeUnit};

use super::record::{is_sec_nano_struct, record_arrow_schema, sec_nano_type};
use super::{Crc, WireError};
use crate::ipc_guard::{IpcLimits, IpcStreamGuard, MAX_METADATA_BYTES};
use crate::types::{
    ArrowOptions, Column, MAX_TYPE_DEPTH, OdpsType, UNBOUNDED_DECIMAL_PRECISION_SCALE,
};

/// The chunk size PyODPS writes (`options.chunk_size`).
pub const DEFAULT_CHUNK_SIZE: u32 = 65_536;

/// The largest chunk size a [`ChunkReader`] accepts by default.
pub const DEFAULT_MAX_CHUNK_SIZE: usize = 64 << 20;

const STREAM: &str = "Arrow stream";

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;
const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;

fn malformed(message: impl Into<String>) -> WireError {
    WireError::Malformed {
        stream: STREAM,
        message: message.into(),
    }
}

fn truncated(message: impl Into<String>) -> WireError {
    WireError::Truncated {
        stream: STREAM,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

/// Frames data bytes into chunks with CRCs (see the module docs).
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    chunk_size: usize,
    in_chunk: usize,
    chunk_crc: Crc,
    global_crc: Crc,
    started: bool,
}

impl ChunkWriter {
    /// A writer of `chunk_size`-byte chunks (at least 1).
    pub fn new(chunk_size: u32) -> Result<Self, WireError> {
        if chunk_size == 0 {
            return Err(malformed("the chunk size must be at least 1"));
        }
        Ok(ChunkWriter {
            chunk_size: chunk_size as usize,
            in_chunk: 0,
            chunk_crc: Crc::default(),
            global_crc: Crc::default(),
            started: false,
        })
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            out.extend_from_slice(&(self.chunk_size as u32).to_be_bytes());
            self.started = true;
        }
    }

    /// Appends data bytes to `out`, with a chunk CRC after every full chunk.
    pub fn write(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        self.start(out);
        while !data.is_empty() {
            let n = (self.chunk_size - self.in_chunk).min(data.len());
            let (part, rest) = data.split_at(n);
            out.extend_from_slice(part);
            self.chunk_crc.bytes(part);
            self.global_crc.bytes(part);
            self.in_chunk += n;
            data = rest;
            if self.in_chunk == self.chunk_size {
                out.extend_from_slice(&self.chunk_crc.value().to_be_bytes());
                self.chunk_crc.reset();
                self.in_chunk = 0;
            }
        }
    }

    /// Ends the stream: the global CRC (after the chunk size, if nothing was written).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.start(out);
        out.extend_from_slice(&self.global_crc.value().to_be_bytes());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the 4-byte chunk size.
    Header,
    Chunks,
    /// The chunk size was 0: PyODPS's body of an empty writer (just the CRC of nothing).
    Empty,
    Done,
    Failed,
}

/// Unframes a chunked body incrementally, checking every CRC (see the module docs).
#[derive(Debug)]
pub struct ChunkReader {
    max_chunk_size: usize,
    chunk_size: usize,
    header: Vec<u8>,
    /// The current chunk and what follows it, at most `chunk_size + 4` bytes.
    pending: Vec<u8>,
    global_crc: Crc,
    chunks: u64,
    data_bytes: u64,
    state: ChunkState,
}

impl ChunkReader {
    /// A reader that refuses chunk sizes above `max_chunk_size`.
    pub fn new(max_chunk_size: usize) -> Self {
        ChunkReader {
            max_chunk_size,
            chunk_size: 0,
            header: Vec::with_capacity(4),
            pending: Vec::new(),
            global_crc: Crc::default(),
            chunks: 0,
            data_bytes: 0,
            state: ChunkState::Header,
        }
    }

    /// The data bytes handed out so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    fn fail(&mut self, e: WireError) -> WireError {
        self.state = ChunkState::Failed;
        self.pending = Vec::new();
        e
    }

    /// Takes the next body bytes; appends the data of every chunk they complete (CRC
    /// checked) to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Failed => return Err(malformed("the stream already failed")),
                ChunkState::Done => return Err(malformed("bytes after the end of the stream")),
                ChunkState::Empty => {
                    let e = malformed(format!(
                        "the chunk size is 0, yet {} more bytes follow",
                        input.len()
                    ));
                    return Err(self.fail(e));
                }
                ChunkState::Header => {
                    let n = (4 - self.header.len()).min(input.len());
                    self.header.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.header.len() == 4 {
                        let size = u32::from_be_bytes([
                            self.header[0],
                            self.header[1],
                            self.header[2],
                            self.header[3],
                        ]) as usize;
                        if size == 0 {
                            self.state = ChunkState::Empty;
                        } else if size > self.max_chunk_size {
                            let e = malformed(format!(
                                "the chunk size {size} is more than the limit {}",
                                self.max_chunk_size
                            ));
                            return Err(self.fail(e));
                        } else {
                            self.chunk_size = size;
                            self.state = ChunkState::Chunks;
                        }
                    }
                }
                ChunkState::Chunks => {
                    let full = self.chunk_size + 4;
                    let n = (full - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.pending.len() == full {
                        let (data, crc) = self.pending.split_at(self.chunk_size);
                        let sent = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
                        let computed = crc32c::crc32c(data);
                        if sent != computed {
                            let e = WireError::Checksum {
                                stream: STREAM,
                                message: format!(
                                    "chunk {} (bytes {}..{} of the data) carries CRC \
                                     {sent:#010x}, its bytes give {computed:#010x}",
                                    self.chunks,
                                    self.data_bytes,
                                    self.data_bytes + self.chunk_size as u64
                                ),
                            };
                            return Err(self.fail(e));
                        }
                        self.global_crc.bytes(data);
                        out.extend_from_slice(data);
                        self.data_bytes += data.len() as u64;
                        self.chunks += 1;
                        self.pending.clear();
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the body: the last chunk and the global CRC must be there. Appends the last
    /// chunk's data to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self.state {
            ChunkState::Failed => Err(malformed("the stream already failed")),
            ChunkState::Done | ChunkState::Empty => {
                self.state = ChunkState::Done;
                Ok(())
            }
            ChunkState::Header => {
                let e = truncated(if self.header.is_empty() {
                    "the body is empty (no chunk size)".to_string()
                } else {
                    format!(
                        "the body ends {} bytes into the chunk size",
                        self.header.len()
                    )
                });
                Err(self.fail(e))
            }
            ChunkState::Chunks => {
                if self.pending.len() < 4 {
                    let e = truncated(if self.pending.is_empty() {
                        format!(
                            "the body ends after chunk {} without the final CRC",
                            self.chunks
                        )
                    } else {
                        format!(
                            "the body ends {} bytes into the final CRC",
                            self.pending.len()
                        )
                    });
                    return Err(self.fail(e));
                }
                let (data, crc) = self.pending.split_at(self.pending.len() - 4);
                let sent = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
                let mut global = self.global_crc;
                global.bytes(data);
                if sent != global.value() {
                    let e = WireError::Checksum {
                        stream: STREAM,
                        message: format!(
                            "the final CRC is {sent:#010x}, the {} data bytes give {:#010x} \
                             (or the body is cut inside a chunk)",
                            self.data_bytes + data.len() as u64,
                            global.value()
                        ),
                    };
                    return Err(self.fail(e));
                }
                out.extend_from_slice(data);
                self.data_bytes += data.len() as u64;
                self.pending = Vec::new();
                self.state = ChunkState::Done;
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire schema and conversions
// ---------------------------------------------------------------------------------------

/// The Arrow type a column travels as (see the module docs).
pub fn wire_arrow_type(ty: &OdpsType) -> DataType {
    match ty {
        OdpsType::TinyInt => DataType::Int8,
        OdpsType::SmallInt => DataType::Int16,
        OdpsType::Int => DataType::Int32,
        OdpsType::BigInt => DataType::Int64,
        OdpsType::Float => DataType::Float32,
        OdpsType::Double => DataType::Float64,
        OdpsType::Boolean => DataType::Boolean,
        OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_) | OdpsType::Json => {
            DataType::Utf8
        }
        OdpsType::Binary | OdpsType::Blob => DataType::Binary,
        OdpsType::Date => DataType::Date32,
        OdpsType::DateTime => DataType::Timestamp(TimeUnit::Millisecond, None),
        OdpsType::Timestamp | OdpsType::TimestampNtz => {
            DataType::Timestamp(TimeUnit::Nanosecond, None)
        }
        OdpsType::Decimal(Some((p, s))) => DataType::Decimal128(*p, *s),
        OdpsType::Decimal(None) => {
            let (p, s) = UNBOUNDED_DECIMAL_PRECISION_SCALE;
            DataType::Decimal256(p, s)
        }
        OdpsType::IntervalDayTime => sec_nano_type(),
        OdpsType::IntervalYearMonth => DataType::Interval(IntervalUnit::YearMonth),
        OdpsType::Array(element) => {
            DataType::List(Arc::new(Field::new("item", wire_arrow_type(element), true)))
        }
        OdpsType::Map(key, value) => DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", wire_arrow_type(key), false),
                    Field::new("value", wire_arrow_type(value), true),
                ])),
                false,
            )),
            false,
        ),
        OdpsType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Field::new(&f.name, wire_arrow_type(&f.ty), true))
                .collect(),
        ),
    }
}

/// The wire schema of `columns` (every field nullable, as `pa.field` makes it).
pub fn wire_arrow_schema(columns: &[Column]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, wire_arrow_type(&c.ty), true))
            .collect::<Vec<_>>(),
    )
}

/// The wire schema with top-level TIMESTAMP and TIMESTAMP_NTZ columns as
/// `struct<sec, nano>` (what PyODPS's `_build_wire_schema` reads with
/// `timestamp_as_struct`).
pub fn wire_arrow_schema_struct_timestamps(columns: &[Column]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| {
                let data_type = match c.ty {
                    OdpsType::Timestamp | OdpsType::TimestampNtz => sec_nano_type(),
                    _ => wire_arrow_type(&c.ty),
                };
                Field::new(&c.name, data_type, true)
            })
            .collect::<Vec<_>>(),
    )
}

fn unit_nanos(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => NANOS_PER_SECOND,
        TimeUnit::Millisecond => NANOS_PER_MILLI,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

fn timestamp_values(array: &dyn Array, unit: TimeUnit) -> &ScalarBuffer<i64> {
    match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().values(),
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().values(),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().values(),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().values(),
    }
}

fn timestamp_array(
    values: Vec<i64>,
    nulls: Option<arrow_buffer::NullBuffer>,
    to: &DataType,
) -> ArrayRef {
    let values = ScalarBuffer::from(values);
    match to {
        DataType::Timestamp(TimeUnit::Second, tz) => Arc::new(
            PrimitiveArray::<TimestampSecondType>::new(values, nulls).with_timezone_opt(tz.clone()),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, tz) => Arc::new(
            PrimitiveArray::<TimestampMillisecondType>::new(values, nulls)
                .with_timezone_opt(tz.clone()),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Arc::new(
            PrimitiveArray::<TimestampMicrosecondType>::new(values, nulls)
                .with_timezone_opt(tz.clone()),
        ),
        _ => {
            let tz = match to {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            Arc::new(
                PrimitiveArray::<TimestampNanosecondType>::new(values, nulls).with_timezone_opt(tz),
            )
        }
    }
}

/// Converts `array` of a `ty` column to the Arrow type `to`. Handles what `arrow-cast`
/// does not (or does differently): timestamps keep their instant whatever the time zones
/// (units change by rounding down), `struct<sec, nano>` to and from timestamps and
/// intervals, and nested types recursively; everything else goes through `arrow-cast`
/// with overflow as an error.
pub fn convert_array(
    array: &ArrayRef,
    ty: &OdpsType,
    to: &DataType,
    path: &str,
) -> Result<ArrayRef, WireError> {
    convert(array, ty, to, path, 0)
}

fn convert(
    array: &ArrayRef,
    ty: &OdpsType,
    to: &DataType,
    path: &str,
    depth: usize,
) -> Result<ArrayRef, WireError> {
    use DataType as A;
    let from = array.data_type();
    if from == to {
        return Ok(array.clone());
    }
    if depth > MAX_TYPE_DEPTH {
        return Err(WireError::value(path, "the type nests too deeply"));
    }
    if matches!(from, A::Null) {
        return Ok(new_null_array(to, array.len()));
    }
    let nulls = array.logical_nulls();
    let overflow = |what: &str| WireError::value(path, format!("{what} does not fit {to}"));
    match (from, to) {
        (A::Timestamp(from_unit, _), A::Timestamp(to_unit, _)) => {
            let (f, t) = (unit_nanos(*from_unit), unit_nanos(*to_unit));
            let values = timestamp_values(array.as_ref(), *from_unit)
                .iter()
                .map(|&v| i64::try_from((i128::from(v) * f).div_euclid(t)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| overflow("a timestamp"))?;
            Ok(timestamp_array(values, nulls, to))
        }
        (A::Timestamp(unit, _), _) if is_sec_nano_struct(to) => {
            let f = unit_nanos(*unit);
            let (sec, nano): (Vec<i64>, Vec<i32>) = timestamp_values(array.as_ref(), *unit)
                .iter()
                .map(|&v| split_nanos(i128::from(v) * f))
                .unzip();
            sec_nano_array(sec, nano, nulls, to)
        }
        (_, A::Timestamp(unit, _)) if is_sec_nano_struct(from) => {
            let (sec, nano) = sec_nano_values(array, path)?;
            let t = unit_nanos(*unit);
            let values = sec
                .iter()
                .zip(nano.iter())
                .map(|(&s, &n)| {
                    i64::try_from((i128::from(s) * NANOS_PER_SECOND + i128::from(n)).div_euclid(t))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| overflow("a timestamp"))?;
            Ok(timestamp_array(values, nulls, to))
        }
        (A::Interval(IntervalUnit::DayTime), _) if is_sec_nano_struct(to) => {
            let (sec, nano): (Vec<i64>, Vec<i32>) = array
                .as_primitive::<IntervalDayTimeType>()
                .values()
                .iter()
                .map(|v| {
                    split_nanos(
                        (i128::from(v.days) * 86_400_000 + i128::from(v.milliseconds))
                            * NANOS_PER_MILLI,
                    )
                })
                .unzip();
            sec_nano_array(sec, nano, nulls, to)
        }
        (A::Interval(IntervalUnit::MonthDayNano), _) if is_sec_nano_struct(to) => {
            let values = array.as_primitive::<IntervalMonthDayNanoType>();
            let mut sec = Vec::with_capacity(values.len());
            let mut nano = Vec::with_capacity(values.len());
            for (i, v) in values.values().iter().enumerate() {
                if v.months != 0 && values.is_valid(i) {
                    return Err(WireError::value(
                        path,
                        format!(
                            "an interval of {} months is not an INTERVAL_DAY_TIME",
                            v.months
                        ),
                    ));
                }
                let (s, n) =
                    split_nanos(i128::from(v.days) * NANOS_PER_DAY + i128::from(v.nanoseconds));
                sec.push(s);
                nano.push(n);
            }
            sec_nano_array(sec, nano, nulls, to)
        }
        (_, A::Interval(IntervalUnit::DayTime)) if is_sec_nano_struct(from) => {
            let (sec, nano) = sec_nano_values(array, path)?;
            let mut out = Vec::with_capacity(sec.len());
            for (i, (&s, &n)) in sec.iter().zip(nano.iter()).enumerate() {
                let total = i128::from(s) * NANOS_PER_SECOND + i128::from(n);
                if total % NANOS_PER_MILLI != 0 && array.is_valid(i) {
                    return Err(WireError::value(
                        path,
                        format!(
                            "the interval {s} s {n} ns has a fraction of a millisecond, which \
                             interval(day_time) cannot hold"
                        ),
                    ));
                }
                let millis = total.div_euclid(NANOS_PER_MILLI);
                let days = i32::try_from(millis.div_euclid(86_400_000))
                    .map_err(|_| overflow("an interval"))?;
                out.push(IntervalDayTime::new(
                    days,
                    millis.rem_euclid(86_400_000) as i32,
                ));
            }
            Ok(Arc::new(PrimitiveArray::<IntervalDayTimeType>::new(
                ScalarBuffer::from(out),
                nulls,
            )))
        }
        (_, A::Interval(IntervalUnit::MonthDayNano)) if is_sec_nano_struct(from) => {
            let (sec, nano) = sec_nano_values(array, path)?;
            let out = sec
                .iter()
                .zip(nano.iter())
                .map(|(&s, &n)| {
                    let total = i128::from(s) * NANOS_PER_SECOND + i128::from(n);
                    Ok(IntervalMonthDayNano::new(
                        0,
                        i32::try_from(total.div_euclid(NANOS_PER_DAY))
                            .map_err(|_| overflow("an interval"))?,
                        total.rem_euclid(NANOS_PER_DAY) as i64,
                    ))
                })
                .collect::<Result<Vec<_>, WireError>>()?;
            Ok(Arc::new(PrimitiveArray::<IntervalMonthDayNanoType>::new(
                ScalarBuffer::from(out),
                nulls,
            )))
        }
        (A::List(_) | A::LargeList(_) | A::FixedSizeList(..), A::List(f) | A::LargeList(f)) => {
            let OdpsType::Array(element) = ty else {
                return cast(array, to, path);
            };
            let (offsets, values): (Vec<i64>, ArrayRef) = match from {
                A::List(_) => {
                    let l = array.as_list::<i32>();
                    (
                        l.value_offsets().iter().map(|&o| i64::from(o)).collect(),
                        l.values().clone(),
                    )
                }
                A::LargeList(_) => {
                    let l = array.as_list::<i64>();
                    (l.value_offsets().to_vec(), l.values().clone())
                }
                _ => {
                    let l = array.as_fixed_size_list();
                    let n = i64::from(l.value_length());
                    let start = l.offset() as i64 * n;
                    (
                        (0..=l.len() as i64).map(|i| start + i * n).collect(),
                        l.values().clone(),
                    )
                }
            };
            let values = convert(
                &values,
                element,
                f.data_type(),
                &format!("{path}.element"),
                depth + 1,
            )?;
            let arrow = |e| WireError::arrow(format!("converting column `{path}`"), e);
            Ok(match to {
                A::List(_) => {
                    let offsets = offsets
                        .into_iter()
                        .map(i32::try_from)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| overflow("the element count"))?;
                    Arc::new(
                        GenericListArray::<i32>::try_new(
                            f.clone(),
                            OffsetBuffer::new(ScalarBuffer::from(offsets)),
                            values,
                            nulls,
                        )
                        .map_err(arrow)?,
                    )
                }
                _ => Arc::new(
                    GenericListArray::<i64>::try_new(
                        f.clone(),
                        OffsetBuffer::new(ScalarBuffer::from(offsets)),
                        values,
                        nulls,
                    )
                    .map_err(arrow)?,
                ),
            })
        }
        (A::Map(..), A::Map(entries_field, ordered)) => {
            let (OdpsType::Map(key, value), A::Struct(kv)) = (ty, entries_field.data_type()) else {
                return cast(array, to, path);
            };
            if kv.len() != 2 {
                return cast(array, to, path);
            }
            let map = array.as_map();
            let entries = map.entries();
            if entries.num_columns() != 2 {
                return cast(array, to, path);
            }
            let keys = convert(
                entries.column(0),
                key,
                kv[0].data_type(),
                &format!("{path}.key"),
                depth + 1,
            )?;
            let values = convert(
                entries.column(1),
                value,
                kv[1].data_type(),
                &format!("{path}.value"),
                depth + 1,
            )?;
            let arrow = |e| WireError::arrow(format!("converting column `{path}`"), e);
            let entries =
                StructArray::try_new(kv.clone(), vec![keys, values], None).map_err(arrow)?;
            Ok(Arc::new(
                MapArray::try_new(
                    entries_field.clone(),
                    map.offsets().clone(),
                    entries,
                    nulls,
                    *ordered,
                )
                .map_err(arrow)?,
            ))
        }
        (A::Struct(from_fields), A::Struct(to_fields)) if from_fields.len() == to_fields.len() => {
            let OdpsType::Struct(fields) = ty else {
                return cast(array, to, path);
            };
            if fields.len() != to_fields.len() {
                return cast(array, to, path);
            }
            let s = array.as_struct();
            let children = fields
                .iter()
                .zip(to_fields.iter())
                .zip(s.columns())
                .map(|((f, t), c)| {
                    convert(
                        c,
                        &f.ty,
                        t.data_type(),
                        &format!("{path}.{}", f.name),
                        depth + 1,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(
                StructArray::try_new(to_fields.clone(), children, s.nulls().cloned())
                    .map_err(|e| WireError::arrow(format!("converting column `{path}`"), e))?,
            ))
        }
        _ => cast(array, to, path),
    }
}

fn cast(array: &ArrayRef, to: &DataType, path: &str) -> Result<ArrayRef, WireError> {
    let options = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(array, to, &options).map_err(|e| {
        WireError::value(
            path,
            format!("cannot convert Arrow {} to {to}: {e}", array.data_type()),
        )
    })
}

fn split_nanos(total: i128) -> (i64, i32) {
    let sec = total.div_euclid(NANOS_PER_SECOND);
    let nano = total.rem_euclid(NANOS_PER_SECOND) as i32;
    (sec.clamp(i64::MIN.into(), i64::MAX.into()) as i64, nano)
}

fn sec_nano_values<'a>(
    array: &'a ArrayRef,
    path: &str,
) -> Result<(&'a ScalarBuffer<i64>, &'a ScalarBuffer<i32>), WireError> {
    let s = array.as_struct();
    let (sec, nano) = (s.column(0), s.column(1));
    for i in 0..s.len() {
        if s.is_valid(i) && (sec.is_null(i) || nano.is_null(i)) {
            return Err(WireError::value(
                path,
                format!("row {i}: a non-null struct<sec, nano> has a null sec or nano"),
            ));
        }
    }
    Ok((
        sec.as_primitive::<Int64Type>().values(),
        nano.as_primitive::<Int32Type>().values(),
    ))
}

fn sec_nano_array(
    sec: Vec<i64>,
    nano: Vec<i32>,
    nulls: Option<arrow_buffer::NullBuffer>,
    to: &DataType,
) -> Result<ArrayRef, WireError> {
    let DataType::Struct(fields) = to else {
        return Err(malformed(format!("{to} is not struct<sec, nano>")));
    };
    let children: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::new(ScalarBuffer::from(sec), None)),
        Arc::new(Int32Array::new(ScalarBuffer::from(nano), None)),
    ];
    Ok(Arc::new(
        StructArray::try_new(fields.clone(), children, nulls)
            .map_err(|e| WireError::arrow("building struct<sec, nano>", e))?,
    ))
}

fn convert_batch(
    batch: &RecordBatch,
    columns: &[Column],
    schema: SchemaRef,
) -> Result<RecordBatch, WireError> {
    if batch.num_columns() != columns.len() {
        return Err(WireError::value(
            "*",
            format!(
                "the batch has {} columns, the stream {}",
                batch.num_columns(),
                columns.len()
            ),
        ));
    }
    let arrays = columns
        .iter()
        .zip(batch.columns())
        .zip(schema.fields())
        .map(|((c, a), f)| convert(a, &c.ty, f.data_type(), &c.name, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema, arrays, &options)
        .map_err(|e| WireError::arrow("building a batch", e))
}

/// `batch` (columns matched to `columns` by position, of any type
/// [`convert_array`] can convert) in the wire types.
pub fn to_wire_batch(batch: &RecordBatch, columns: &[Column]) -> Result<RecordBatch, WireError> {
    convert_batch(batch, columns, Arc::new(wire_arrow_schema(columns)))
}

/// A wire batch of `columns` in the crate's Arrow types ([`record_arrow_schema`] with
/// `options`): e.g. INTERVAL_DAY_TIME as interval(day_time), the unbounded DECIMAL as
/// decimal128(38,18) (a value that does not fit is an error).
pub fn from_wire_batch(
    batch: &RecordBatch,
    columns: &[Column],
    options: &ArrowOptions,
) -> Result<RecordBatch, WireError> {
    convert_batch(
        batch,
        columns,
        Arc::new(record_arrow_schema(columns, options)),
    )
}

// ---------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------

/// The bytes of one encapsulated IPC message (continuation, length, metadata, body).
fn message_bytes(batch: &RecordBatch, options: &IpcWriteOptions) -> Result<Vec<u8>, WireError> {
    let generator = IpcDataGenerator::default();
    let mut tracker = DictionaryTracker::new(false);
    let (dictionaries, encoded) = generator
        .encode(
            batch,
            &mut tracker,
            options,
            &mut IpcWriteContext::default(),
        )
        .map_err(|e| WireError::arrow("encoding a record batch message", e))?;
    let mut out = Vec::new();
    for dictionary in dictionaries {
        arrow_ipc::writer::write_message(&mut out, dictionary, options)
            .map_err(|e| WireError::arrow("writing a dictionary message", e))?;
    }
    arrow_ipc::writer::write_message(&mut out, encoded, options)
        .map_err(|e| WireError::arrow("writing a record batch message", e))?;
    Ok(out)
}

fn schema_message(schema: &Schema) -> Vec<u8> {
    let options = IpcWriteOptions::default();
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        schema,
        &mut DictionaryTracker::new(false),
        &options,
    );
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = arrow_ipc::writer::write_message(&mut out, encoded, &options);
    out
}

/// Writes batches as a Tunnel Arrow stream of `columns`: each batch converted to the wire
/// types ([`to_wire_batch`]), serialized as one IPC record batch message and framed.
#[derive(Debug)]
pub struct ArrowStreamEncoder {
    columns: Vec<Column>,
    schema: SchemaRef,
    chunks: ChunkWriter,
    ipc: IpcWriteOptions,
    rows: u64,
}

impl ArrowStreamEncoder {
    /// An encoder with chunks of `chunk_size` bytes ([`DEFAULT_CHUNK_SIZE`] is PyODPS's).
    pub fn new(columns: &[Column], chunk_size: u32) -> Result<Self, WireError> {
        for c in columns {
            if c.ty.nesting_depth() > MAX_TYPE_DEPTH {
                return Err(WireError::value(&c.name, "the type nests too deeply"));
            }
        }
        Ok(ArrowStreamEncoder {
            columns: columns.to_vec(),
            schema: Arc::new(wire_arrow_schema(columns)),
            chunks: ChunkWriter::new(chunk_size)?,
            ipc: IpcWriteOptions::default(),
            rows: 0,
        })
    }

    /// Compresses the IPC buffers (what the C++ SDK expects, instead of whole-body
    /// compression; PyODPS and Java read either).
    pub fn with_ipc_compression(
        mut self,
        compression: Option<arrow_ipc::CompressionType>,
    ) -> Result<Self, WireError> {
        self.ipc = self
            .ipc
            .try_with_compression(compression)
            .map_err(|e| WireError::arrow("IPC compression", e))?;
        Ok(self)
    }

    /// The wire schema (which the stream does not carry).
    pub fn wire_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends one batch (columns matched by position).
    pub fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), WireError> {
        let wire = convert_batch(batch, &self.columns, self.schema.clone())?;
        let message = message_bytes(&wire, &self.ipc)?;
        self.chunks.write(&message, out);
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Appends the final CRC.
    pub fn finish(self, out: &mut Vec<u8>) {
        self.chunks.finish(out);
    }
}

/// Encodes `batches` as one whole Arrow stream.
pub fn encode_arrow(
    columns: &[Column],
    batches: &[RecordBatch],
    chunk_size: u32,
) -> Result<Vec<u8>, WireError> {
    let mut encoder = ArrowStreamEncoder::new(columns, chunk_size)?;
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

/// The end-of-stream marker of the IPC streaming format.
const IPC_END_OF_STREAM: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

/// How top-level TIMESTAMP and TIMESTAMP_NTZ columns travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampWire {
    /// timestamp\[ns\] (what PyODPS reads by default).
    Nanos,
    /// `struct<sec: int64, nano: int32>` (PyODPS's `timestamp_as_struct`, the preview API).
    Struct,
    /// Either, told apart by the field nodes of the first record batch (the struct form
    /// has two more per such column).
    #[default]
    Auto,
}

/// Settings of an [`ArrowStreamDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrowDecodeOptions {
    pub timestamps: TimestampWire,
    /// The largest chunk size accepted.
    pub max_chunk_size: usize,
    /// What the IPC messages may declare ([`IpcLimits::RESPONSE`] by default).
    pub limits: IpcLimits,
}

impl Default for ArrowDecodeOptions {
    fn default() -> Self {
        ArrowDecodeOptions {
            timestamps: TimestampWire::Auto,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
            limits: IpcLimits::RESPONSE,
        }
    }
}

#[derive(Debug)]
struct Ipc {
    decoder: StreamDecoder,
    guard: IpcStreamGuard,
    struct_timestamps: bool,
    /// Whether any message bytes (after the schema) were decoded.
    fed: bool,
}

/// Decodes a Tunnel Arrow stream of `columns` incrementally into batches of
/// [`wire_arrow_schema`] (top-level timestamps always timestamp\[ns\]; convert with
/// [`from_wire_batch`] for the crate's types).
#[derive(Debug)]
pub struct ArrowStreamDecoder {
    columns: Vec<Column>,
    schema: SchemaRef,
    options: ArrowDecodeOptions,
    chunks: ChunkReader,
    /// Unframed bytes held until the wire schema is chosen.
    pending: Vec<u8>,
    ipc: Option<Ipc>,
    rows: u64,
    failed: bool,
}

impl ArrowStreamDecoder {
    pub fn new(columns: &[Column], options: ArrowDecodeOptions) -> Result<Self, WireError> {
        for c in columns {
            if c.ty.nesting_depth() > MAX_TYPE_DEPTH {
                return Err(WireError::value(&c.name, "the type nests too deeply"));
            }
        }
        Ok(ArrowStreamDecoder {
            columns: columns.to_vec(),
            schema: Arc::new(wire_arrow_schema(columns)),
            options,
            chunks: ChunkReader::new(options.max_chunk_size),
            pending: Vec::new(),
            ipc: None,
            rows: 0,
            failed: false,
        })
    }

    /// The schema of the batches handed out.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The rows handed out so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether timestamps came as `struct<sec, nano>` (once known).
    pub fn struct_timestamps(&self) -> Option<bool> {
        self.ipc.as_ref().map(|i| i.struct_timestamps)
    }

    fn fail(&mut self, e: WireError) -> WireError {
        self.failed = true;
        self.pending = Vec::new();
        self.ipc = None;
        e
    }

    /// Takes the next body bytes; returns the batches they completed.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<RecordBatch>, WireError> {
        if self.failed {
            return Err(malformed("the stream already failed"));
        }
        let mut data = Vec::new();
        if let Err(e) = self.chunks.feed(input, &mut data) {
            return Err(self.fail(e));
        }
        self.push(data, false).map_err(|e| self.fail(e))
    }

    /// Ends the body: the final CRC must be there and no message may be cut short. Returns
    /// the batches the last bytes completed.
    pub fn finish(&mut self) -> Result<Vec<RecordBatch>, WireError> {
        if self.failed {
            return Err(malformed("the stream already failed"));
        }
        let mut data = Vec::new();
        if let Err(e) = self.chunks.finish(&mut data) {
            return Err(self.fail(e));
        }
        let mut batches = self.push(data, true).map_err(|e| self.fail(e))?;
        if let Some(ipc) = &self.ipc
            && let Err(e) = ipc.guard.finish()
        {
            let e = truncated(e.to_string());
            return Err(self.fail(e));
        }
        if self
            .ipc
            .as_ref()
            .is_some_and(|ipc| ipc.fed && !ipc.guard.ended())
        {
            // The data end at a message boundary (the guard says so) without the
            // end-of-stream marker. A last message without a body (a batch of no rows) is
            // only decoded once the decoder is given another byte: give it the marker.
            let last = self
                .decode(IPC_END_OF_STREAM.to_vec())
                .map_err(|e| self.fail(e))?;
            batches.extend(last);
        }
        if let Some(ipc) = &mut self.ipc
            && ipc.fed
            && ipc.decoder.finish().is_err()
        {
            let e = truncated("the data end in the middle of an IPC message");
            return Err(self.fail(e));
        }
        Ok(batches)
    }

    fn push(&mut self, data: Vec<u8>, end: bool) -> Result<Vec<RecordBatch>, WireError> {
        if self.ipc.is_none() {
            self.pending.extend_from_slice(&data);
            let struct_timestamps = match self.options.timestamps {
                TimestampWire::Nanos => false,
                TimestampWire::Struct => true,
                TimestampWire::Auto => match self.first_message_nodes()? {
                    Some(nodes) => nodes == self.node_count(true) && !self.same_node_counts(),
                    None if end => false,
                    None => return Ok(Vec::new()),
                },
            };
            let schema = if struct_timestamps {
                wire_arrow_schema_struct_timestamps(&self.columns)
            } else {
                wire_arrow_schema(&self.columns)
            };
            let mut ipc = Ipc {
                decoder: StreamDecoder::new(),
                guard: IpcStreamGuard::new("the Tunnel Arrow stream", self.options.limits),
                struct_timestamps,
                fed: false,
            };
            let header = schema_message(&schema);
            // The schema is ours: it cannot be refused, nor yield a batch.
            ipc.guard
                .feed(&header)
                .map_err(|e| malformed(format!("the wire schema: {e}")))?;
            ipc.decoder
                .decode(&mut Buffer::from(header))
                .map_err(|e| WireError::arrow("the wire schema", e))?;
            self.ipc = Some(ipc);
            let data = std::mem::take(&mut self.pending);
            return self.decode(data);
        }
        self.decode(data)
    }

    fn decode(&mut self, data: Vec<u8>) -> Result<Vec<RecordBatch>, WireError> {
        let Some(ipc) = &mut self.ipc else {
            return Ok(Vec::new());
        };
        if data.is_empty() {
            return Ok(Vec::new());
        }
        ipc.guard
            .feed(&data)
            .map_err(|e| malformed(format!("refusing an IPC message: {e}")))?;
        ipc.fed = true;
        let mut buffer = Buffer::from(data);
        let mut batches = Vec::new();
        while !buffer.is_empty() {
            let before = buffer.len();
            let decoded = crate::ipc_guard::catch_quietly(|| ipc.decoder.decode(&mut buffer))
                .map_err(|panic| malformed(format!("malformed Arrow data ({panic})")))?
                .map_err(|e| malformed(format!("malformed Arrow data: {e}")))?;
            match decoded {
                Some(batch) => batches.push(batch),
                // A message without a batch (a schema, the end marker) may leave bytes after
                // it: decode on, unless nothing was taken.
                None if buffer.len() < before => {}
                None => break,
            }
        }
        let struct_timestamps = ipc.struct_timestamps;
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
            let batch = if struct_timestamps {
                convert_batch(&batch, &self.columns, self.schema.clone())?
            } else {
                batch
            };
            self.rows += batch.num_rows() as u64;
            out.push(batch);
        }
        Ok(out)
    }

    /// The field node count of the first message, once its metadata is buffered (`None`
    /// until then); 0 for a message that is not a record batch.
    fn first_message_nodes(&self) -> Result<Option<usize>, WireError> {
        let h = &self.pending;
        if h.len() < 4 {
            return Ok(None);
        }
        let (prefix, len_bytes) = if h[..4] == [0xFF; 4] {
            if h.len() < 8 {
                return Ok(None);
            }
            (8, [h[4], h[5], h[6], h[7]])
        } else {
            (4, [h[0], h[1], h[2], h[3]])
        };
        let len = i32::from_le_bytes(len_bytes);
        if len <= 0 {
            return Ok(Some(0));
        }
        if len as u64 > MAX_METADATA_BYTES {
            return Err(malformed(format!(
                "the first message declares {len} bytes of metadata"
            )));
        }
        let len = len as usize;
        if h.len() < prefix + len {
            return Ok(None);
        }
        let message = arrow_ipc::root_as_message(&h[prefix..prefix + len])
            .map_err(|e| malformed(format!("the first message is not valid: {e}")))?;
        Ok(Some(
            message
                .header_as_record_batch()
                .and_then(|b| b.nodes())
                .map_or(0, |n| n.len()),
        ))
    }

    fn node_count(&self, struct_timestamps: bool) -> usize {
        let schema = if struct_timestamps {
            wire_arrow_schema_struct_timestamps(&self.columns)
        } else {
            wire_arrow_schema(&self.columns)
        };
        schema
            .fields()
            .iter()
            .map(|f| nodes_of(f.data_type()))
            .sum()
    }

    fn same_node_counts(&self) -> bool {
        self.node_count(true) == self.node_count(false)
    }
}

/// The IPC field nodes of a type: one, plus its children's.
fn nodes_of(data_type: &DataType) -> usize {
    1 + match data_type {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => nodes_of(f.data_type()),
        DataType::Struct(fields) => fields.iter().map(|f| nodes_of(f.data_type())).sum(),
        _ => 0,
    }
}

/// Decodes a whole Arrow stream.
pub fn decode_arrow(
    columns: &[Column],
    body: &[u8],
    options: ArrowDecodeOptions,
) -> Result<Vec<RecordBatch>, WireError> {
    let mut decoder = ArrowStreamDecoder::new(columns, options)?;
    let mut batches = decoder.feed(body)?;
    batches.extend(decoder.finish()?);
    Ok(batches)
}
