//! `paiio table checksum`: an order-independent digest of the rows of a table or partition.
//!
//! # Definition
//!
//! Each row is encoded canonically, column by column in table order (data columns, then
//! partition columns), each value as one tag byte and a payload:
//!
//! | value                          | tag    | payload                                          |
//! |--------------------------------|--------|--------------------------------------------------|
//! | NULL                           | `0x00` | none                                             |
//! | TINYINT, SMALLINT, INT, BIGINT | `0x01` | the value as i64, 8 bytes little-endian          |
//! | BOOLEAN                        | `0x02` | 1 byte, 0 or 1                                   |
//! | FLOAT                          | `0x03` | IEEE bits, 4 bytes LE (every NaN as `0x7fc00000`)|
//! | DOUBLE                         | `0x04` | IEEE bits, 8 bytes LE (every NaN as `0x7ff8…0`)  |
//! | DECIMAL                        | `0x05` | scale (1 byte), unscaled i128, 16 bytes LE       |
//! | STRING, VARCHAR, CHAR, JSON    | `0x06` | length as u64 LE, then the UTF-8 bytes           |
//! | BINARY, BLOB                   | `0x07` | length as u64 LE, then the bytes                 |
//! | DATE                           | `0x08` | days since 1970-01-01 as i32 LE                  |
//! | DATETIME, TIMESTAMP(_NTZ)      | `0x09` | nanoseconds since the epoch as i128 LE           |
//! | INTERVAL_DAY_TIME              | `0x0a` | days i32 LE, milliseconds i32 LE                 |
//! | INTERVAL_YEAR_MONTH            | `0x0b` | months i32 LE                                    |
//! | ARRAY                          | `0x0c` | element count as u64 LE, then each element       |
//! | MAP                            | `0x0d` | entry count as u64 LE, then key, value, ...      |
//! | STRUCT                         | `0x0e` | field count as u64 LE, then each field's value   |
//!
//! The row's hash is SHA-256 of its encoding, read as a 256-bit big-endian unsigned integer.
//! The digest is the sum of the row hashes modulo 2^256 (so it does not depend on the order
//! of rows, files, batches or partitions, and every duplicate row counts), printed as
//! 64 hex digits after the number of rows: `ROWS DIGEST`. An empty selection is
//! `0 000…0`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryViewArray, BooleanArray, Date32Array,
    Decimal128Array, FixedSizeBinaryArray, Float32Array, Float64Array, GenericListArray, Int8Array,
    Int16Array, Int32Array, Int64Array, IntervalDayTimeArray, IntervalYearMonthArray,
    LargeBinaryArray, LargeStringArray, MapArray, RecordBatch, StringArray, StringViewArray,
    StructArray, TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray,
};
use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use futures::StreamExt;
use paiio_storage::TableService;
use sha2::{Digest as _, Sha256};

use crate::error::{CliError, Result};
use crate::output::{Output, rows_progress};
use crate::read::FullRead;
use crate::service::Target;

/// Rows and the sum of their hashes (little-endian 64-bit limbs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowDigest {
    pub rows: u64,
    sum: [u64; 4],
}

impl RowDigest {
    /// Adds a 32-byte hash, read as a big-endian 256-bit integer.
    fn add_hash(&mut self, hash: &[u8]) {
        let limb = |i: usize| {
            // hash[0..8] is the most significant limb.
            let start = (3 - i) * 8;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&hash[start..start + 8]);
            u64::from_be_bytes(bytes)
        };
        self.add_limbs(&[limb(0), limb(1), limb(2), limb(3)]);
        self.rows += 1;
    }

    fn add_limbs(&mut self, limbs: &[u64; 4]) {
        let mut carry = false;
        for (a, b) in self.sum.iter_mut().zip(limbs) {
            let (s1, c1) = a.overflowing_add(*b);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *a = s2;
            carry = c1 || c2;
        }
    }

    pub fn merge(&mut self, other: &RowDigest) {
        self.add_limbs(&other.sum);
        self.rows += other.rows;
    }

    pub fn hex(&self) -> String {
        self.sum
            .iter()
            .rev()
            .map(|limb| format!("{limb:016x}"))
            .collect()
    }
}

/// An encoder of one column's values.
enum Enc<'a> {
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    Bool(&'a BooleanArray),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Dec(&'a Decimal128Array, i8),
    Str(&'a StringArray),
    LargeStr(&'a LargeStringArray),
    ViewStr(&'a StringViewArray),
    Bin(&'a BinaryArray),
    LargeBin(&'a LargeBinaryArray),
    ViewBin(&'a BinaryViewArray),
    FixedBin(&'a FixedSizeBinaryArray),
    Date(&'a Date32Array),
    TsS(&'a TimestampSecondArray),
    TsMs(&'a TimestampMillisecondArray),
    TsUs(&'a TimestampMicrosecondArray),
    TsNs(&'a TimestampNanosecondArray),
    DayTime(&'a IntervalDayTimeArray),
    YearMonth(&'a IntervalYearMonthArray),
    List(&'a GenericListArray<i32>, Box<Enc<'a>>),
    LargeList(&'a GenericListArray<i64>, Box<Enc<'a>>),
    Map(&'a MapArray, Box<Enc<'a>>, Box<Enc<'a>>),
    Struct(&'a StructArray, Vec<Enc<'a>>),
}

const NULL: u8 = 0x00;

fn put_len(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    put_len(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_i64(out: &mut Vec<u8>, tag: u8, v: i64) {
    out.push(tag);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_nanos(out: &mut Vec<u8>, v: i64, per_unit: i128) {
    out.push(0x09);
    out.extend_from_slice(&(i128::from(v) * per_unit).to_le_bytes());
}

impl<'a> Enc<'a> {
    fn new(array: &'a dyn Array) -> Result<Enc<'a>> {
        use DataType as D;
        Ok(match array.data_type() {
            D::Int8 => Enc::I8(array.as_primitive()),
            D::Int16 => Enc::I16(array.as_primitive()),
            D::Int32 => Enc::I32(array.as_primitive()),
            D::Int64 => Enc::I64(array.as_primitive()),
            D::Boolean => Enc::Bool(array.as_boolean()),
            D::Float32 => Enc::F32(array.as_primitive()),
            D::Float64 => Enc::F64(array.as_primitive()),
            D::Decimal128(_, scale) => Enc::Dec(array.as_primitive(), *scale),
            D::Utf8 => Enc::Str(array.as_string()),
            D::LargeUtf8 => Enc::LargeStr(array.as_string()),
            D::Utf8View => Enc::ViewStr(array.as_string_view()),
            D::Binary => Enc::Bin(array.as_binary()),
            D::LargeBinary => Enc::LargeBin(array.as_binary()),
            D::BinaryView => Enc::ViewBin(array.as_binary_view()),
            D::FixedSizeBinary(_) => Enc::FixedBin(array.as_fixed_size_binary()),
            D::Date32 => Enc::Date(array.as_primitive()),
            D::Timestamp(TimeUnit::Second, _) => Enc::TsS(array.as_primitive()),
            D::Timestamp(TimeUnit::Millisecond, _) => Enc::TsMs(array.as_primitive()),
            D::Timestamp(TimeUnit::Microsecond, _) => Enc::TsUs(array.as_primitive()),
            D::Timestamp(TimeUnit::Nanosecond, _) => Enc::TsNs(array.as_primitive()),
            D::Interval(IntervalUnit::DayTime) => Enc::DayTime(array.as_primitive()),
            D::Interval(IntervalUnit::YearMonth) => Enc::YearMonth(array.as_primitive()),
            D::List(_) => {
                let list = array.as_list::<i32>();
                Enc::List(list, Box::new(Enc::new(list.values().as_ref())?))
            }
            D::LargeList(_) => {
                let list = array.as_list::<i64>();
                Enc::LargeList(list, Box::new(Enc::new(list.values().as_ref())?))
            }
            D::Map(..) => {
                let map = array.as_map();
                Enc::Map(
                    map,
                    Box::new(Enc::new(map.keys().as_ref())?),
                    Box::new(Enc::new(map.values().as_ref())?),
                )
            }
            D::Struct(_) => {
                let s = array.as_struct();
                let children = s
                    .columns()
                    .iter()
                    .map(|c| Enc::new(c.as_ref()))
                    .collect::<Result<_>>()?;
                Enc::Struct(s, children)
            }
            other => {
                return Err(CliError::failure(format!(
                    "checksum: no canonical encoding for Arrow type {other}"
                )));
            }
        })
    }

    fn is_null(&self, i: usize) -> bool {
        let array: &dyn Array = match self {
            Enc::I8(a) => *a,
            Enc::I16(a) => *a,
            Enc::I32(a) => *a,
            Enc::I64(a) => *a,
            Enc::Bool(a) => *a,
            Enc::F32(a) => *a,
            Enc::F64(a) => *a,
            Enc::Dec(a, _) => *a,
            Enc::Str(a) => *a,
            Enc::LargeStr(a) => *a,
            Enc::ViewStr(a) => *a,
            Enc::Bin(a) => *a,
            Enc::LargeBin(a) => *a,
            Enc::ViewBin(a) => *a,
            Enc::FixedBin(a) => *a,
            Enc::Date(a) => *a,
            Enc::TsS(a) => *a,
            Enc::TsMs(a) => *a,
            Enc::TsUs(a) => *a,
            Enc::TsNs(a) => *a,
            Enc::DayTime(a) => *a,
            Enc::YearMonth(a) => *a,
            Enc::List(a, _) => *a,
            Enc::LargeList(a, _) => *a,
            Enc::Map(a, ..) => *a,
            Enc::Struct(a, _) => *a,
        };
        array.is_null(i)
    }

    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        if self.is_null(i) {
            out.push(NULL);
            return;
        }
        match self {
            Enc::I8(a) => put_i64(out, 0x01, i64::from(a.value(i))),
            Enc::I16(a) => put_i64(out, 0x01, i64::from(a.value(i))),
            Enc::I32(a) => put_i64(out, 0x01, i64::from(a.value(i))),
            Enc::I64(a) => put_i64(out, 0x01, a.value(i)),
            Enc::Bool(a) => {
                out.push(0x02);
                out.push(u8::from(a.value(i)));
            }
            Enc::F32(a) => {
                let v = a.value(i);
                let bits = if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() };
                out.push(0x03);
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Enc::F64(a) => {
                let v = a.value(i);
                let bits = if v.is_nan() {
                    0x7ff8_0000_0000_0000
                } else {
                    v.to_bits()
                };
                out.push(0x04);
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Enc::Dec(a, scale) => {
                out.push(0x05);
                out.push(*scale as u8);
                out.extend_from_slice(&a.value(i).to_le_bytes());
            }
            Enc::Str(a) => put_bytes(out, 0x06, a.value(i).as_bytes()),
            Enc::LargeStr(a) => put_bytes(out, 0x06, a.value(i).as_bytes()),
            Enc::ViewStr(a) => put_bytes(out, 0x06, a.value(i).as_bytes()),
            Enc::Bin(a) => put_bytes(out, 0x07, a.value(i)),
            Enc::LargeBin(a) => put_bytes(out, 0x07, a.value(i)),
            Enc::ViewBin(a) => put_bytes(out, 0x07, a.value(i)),
            Enc::FixedBin(a) => put_bytes(out, 0x07, a.value(i)),
            Enc::Date(a) => {
                out.push(0x08);
                out.extend_from_slice(&a.value(i).to_le_bytes());
            }
            Enc::TsS(a) => put_nanos(out, a.value(i), 1_000_000_000),
            Enc::TsMs(a) => put_nanos(out, a.value(i), 1_000_000),
            Enc::TsUs(a) => put_nanos(out, a.value(i), 1_000),
            Enc::TsNs(a) => put_nanos(out, a.value(i), 1),
            Enc::DayTime(a) => {
                let v = a.value(i);
                out.push(0x0a);
                out.extend_from_slice(&v.days.to_le_bytes());
                out.extend_from_slice(&v.milliseconds.to_le_bytes());
            }
            Enc::YearMonth(a) => {
                out.push(0x0b);
                out.extend_from_slice(&a.value(i).to_le_bytes());
            }
            Enc::List(a, element) => {
                let offsets = a.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                put_len(out, 0x0c, end - start);
                for j in start..end {
                    element.encode(j, out);
                }
            }
            Enc::LargeList(a, element) => {
                let offsets = a.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                put_len(out, 0x0c, end - start);
                for j in start..end {
                    element.encode(j, out);
                }
            }
            Enc::Map(a, keys, values) => {
                let offsets = a.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                put_len(out, 0x0d, end - start);
                for j in start..end {
                    keys.encode(j, out);
                    values.encode(j, out);
                }
            }
            Enc::Struct(_, children) => {
                put_len(out, 0x0e, children.len());
                for child in children {
                    child.encode(i, out);
                }
            }
        }
    }
}

/// The digest of one batch (columns in table order).
pub fn digest_batch(batch: &RecordBatch) -> Result<RowDigest> {
    let columns: Vec<ArrayRef> = batch.columns().to_vec();
    let encoders = columns
        .iter()
        .map(|c| Enc::new(c.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let mut digest = RowDigest::default();
    let mut buf = Vec::with_capacity(256);
    // One hasher and one output buffer for all rows (cheaper than `Sha256::digest`).
    let mut hasher = Sha256::new();
    let mut hash = sha2::digest::Output::<Sha256>::default();
    for row in 0..batch.num_rows() {
        buf.clear();
        for encoder in &encoders {
            encoder.encode(row, &mut buf);
        }
        hasher.update(&buf);
        hasher.finalize_into_reset(&mut hash);
        digest.add_hash(hash.as_slice());
    }
    Ok(digest)
}

/// The digest of everything `read` covers, reading and hashing ranges in parallel.
pub async fn digest_all(read: Arc<FullRead>) -> Result<RowDigest> {
    let parallelism = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(8);
    let ranges = read.ranges(parallelism, 128 * 1024);
    let progress = rows_progress(read.rows, "checksum");
    let mut tasks = tokio::task::JoinSet::new();
    for (offset, count) in ranges {
        let read = read.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut stream = read.stream(offset, count).await?;
            let mut digest = RowDigest::default();
            // Hash one batch on the blocking pool while the next one is decoded.
            let mut hashing: Option<tokio::task::JoinHandle<Result<RowDigest>>> = None;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if let Some(previous) = hashing.take() {
                    digest.merge(&join_hash(previous).await?);
                }
                progress.inc(batch.num_rows() as u64);
                hashing = Some(tokio::task::spawn_blocking(move || digest_batch(&batch)));
            }
            if let Some(previous) = hashing.take() {
                digest.merge(&join_hash(previous).await?);
            }
            Ok::<_, CliError>(digest)
        });
    }
    let mut total = RowDigest::default();
    while let Some(joined) = tasks.join_next().await {
        let digest =
            joined.map_err(|_| CliError::failure("a checksum task failed unexpectedly"))??;
        total.merge(&digest);
    }
    progress.finish_and_clear();
    if total.rows != read.rows {
        return Err(CliError::failure(format!(
            "read {} rows of {} but the read session has {}",
            total.rows, read.target.uri, read.rows
        )));
    }
    Ok(total)
}

async fn join_hash(handle: tokio::task::JoinHandle<Result<RowDigest>>) -> Result<RowDigest> {
    handle
        .await
        .map_err(|_| CliError::failure("a checksum task failed unexpectedly"))?
}

pub async fn run(service: Arc<dyn TableService>, out: &mut Output, uri: &str) -> Result<()> {
    let target = Target::resolve(service.as_ref(), uri).await?;
    target.require_rows_source()?;
    let read = Arc::new(FullRead::plan(service, target).await?);
    let digest = digest_all(read).await?;
    out.line(&format!("{} {}", digest.rows, digest.hex()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn batch(ids: Vec<Option<i64>>, names: Vec<Option<&str>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn order_and_batching_do_not_matter_but_duplicates_do() {
        let a = digest_batch(&batch(
            vec![Some(1), Some(2), None],
            vec![Some("x"), None, Some("")],
        ))
        .unwrap();
        let mut b = digest_batch(&batch(vec![None, Some(1)], vec![Some(""), Some("x")])).unwrap();
        b.merge(&digest_batch(&batch(vec![Some(2)], vec![None])).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.rows, 3);
        let mut c = a;
        c.merge(&digest_batch(&batch(vec![Some(1)], vec![Some("x")])).unwrap());
        assert_ne!(c.hex(), a.hex());
        // NULL and the empty string differ; so do swapped values across columns.
        let n = digest_batch(&batch(vec![Some(1)], vec![None])).unwrap();
        let e = digest_batch(&batch(vec![Some(1)], vec![Some("")])).unwrap();
        assert_ne!(n, e);
    }

    #[test]
    fn sum_carries_across_limbs() {
        let mut d = RowDigest::default();
        d.add_hash(&[0xff; 32][..]);
        let mut one = [0u8; 32];
        one[31] = 1;
        d.add_hash(&one);
        assert_eq!(d.hex(), "0".repeat(64));
        assert_eq!(d.rows, 2);
    }
}
