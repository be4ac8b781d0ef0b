//! Test support for the Tunnel codecs: random batches of any column types and a canonical
//! JSON form of their values, shared with the PyODPS conformance script
//! (`tests/it/tunnel_wire_pyodps.py`).
//!
//! The canonical JSON of a value, by column type: null is `null`; integers, DATE (days),
//! DATETIME (milliseconds) and INTERVAL_YEAR_MONTH (months) are numbers; BOOLEAN a boolean;
//! FLOAT and DOUBLE the hex of their IEEE bits (`"3f800000"`); STRING, VARCHAR and CHAR the
//! string; BINARY and BLOB the hex of the bytes; DECIMAL the plain text with exactly the
//! column's scale digits (18 for the unbounded DECIMAL); JSON the parsed JSON value;
//! TIMESTAMP, TIMESTAMP_NTZ and INTERVAL_DAY_TIME `[seconds, nanoseconds]` (seconds rounded
//! down, nanoseconds in `0..1e9`); ARRAY a list; MAP a list of `[key, value]`; STRUCT the
//! list of its field values.
//!
//! Generated values stay in the ranges PyODPS can hold (dates and datetimes in years
//! 1900–2100, timestamps within pandas' range, intervals within ±30 years, unique map
//! keys, valid UTF-8 strings).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalYearMonthType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, Decimal256Array, Float32Array,
    Float64Array, GenericBinaryArray, GenericListArray, GenericStringArray, Int8Array, Int16Array,
    Int32Array, Int64Array, IntervalDayTimeArray, IntervalMonthDayNanoArray,
    IntervalYearMonthArray, MapArray, PrimitiveArray, RecordBatch, StructArray,
};
use arrow_buffer::{IntervalDayTime, IntervalMonthDayNano, NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, IntervalUnit, Schema, SchemaRef, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};

use paiio_storage::protocol::tunnel::record::{format_decimal, is_sec_nano_struct, parse_decimal};
use paiio_storage::types::{Column, OdpsType, UNBOUNDED_DECIMAL_ARROW};

/// One value in a form independent of its Arrow type (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    /// Integers, DATE days, DATETIME milliseconds, INTERVAL_YEAR_MONTH months.
    Int(i64),
    F32(u32),
    F64(u64),
    /// Plain decimal text with the column's scale.
    Dec(String),
    Str(String),
    Bytes(Vec<u8>),
    SecNanos(i64, i32),
    List(Vec<Val>),
    Map(Vec<(Val, Val)>),
    Struct(Vec<Val>),
}

/// The scale canonical decimal text of a column type has.
pub fn decimal_scale(ty: &OdpsType) -> i8 {
    match ty {
        OdpsType::Decimal(Some((_, s))) => *s,
        _ => UNBOUNDED_DECIMAL_ARROW.1,
    }
}

fn decimal_precision(ty: &OdpsType) -> u8 {
    match ty {
        OdpsType::Decimal(Some((p, _))) => *p,
        _ => UNBOUNDED_DECIMAL_ARROW.0,
    }
}

const SECONDS_1900: i64 = -2_208_988_800;
const SECONDS_2100: i64 = 4_102_444_800;
const DAYS_1900: i64 = -25_567;
const DAYS_2100: i64 = 47_482;

/// A seeded generator of values.
pub struct Gen {
    rng: StdRng,
    /// The share of nulls, at every level.
    pub null_rate: f64,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            null_rate: 0.2,
        }
    }

    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.rng.random_range(0..options.len())]
    }

    /// A value of `ty` that an array of `data_type` can hold exactly.
    pub fn value(&mut self, ty: &OdpsType, data_type: &DataType, nullable: bool) -> Val {
        if nullable && self.rng.random_bool(self.null_rate) {
            return Val::Null;
        }
        let edge = self.rng.random_bool(0.2);
        match ty {
            OdpsType::TinyInt => Val::Int(if edge {
                self.pick(&[i8::MIN, i8::MAX, 0, -1]).into()
            } else {
                self.rng.random::<i8>().into()
            }),
            OdpsType::SmallInt => Val::Int(if edge {
                self.pick(&[i16::MIN, i16::MAX, 0]).into()
            } else {
                self.rng.random::<i16>().into()
            }),
            OdpsType::Int => Val::Int(if edge {
                self.pick(&[i32::MIN, i32::MAX, 0]).into()
            } else {
                self.rng.random::<i32>().into()
            }),
            OdpsType::BigInt => Val::Int(if edge {
                self.pick(&[i64::MIN, i64::MAX, 0, 1, -1])
            } else if self.rng.random_bool(0.5) {
                self.rng.random_range(-1000..1000)
            } else {
                self.rng.random()
            }),
            OdpsType::Float => Val::F32(if edge {
                self.pick(&[
                    0.0f32,
                    -0.0,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::NAN,
                    f32::MIN_POSITIVE,
                ])
                .to_bits()
            } else {
                (self.rng.random::<f32>() * 1e6 - 5e5).to_bits()
            }),
            OdpsType::Double => Val::F64(if edge {
                self.pick(&[
                    0.0f64,
                    -0.0,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::NAN,
                    f64::MAX,
                ])
                .to_bits()
            } else {
                (self.rng.random::<f64>() * 1e12 - 5e11).to_bits()
            }),
            OdpsType::Boolean => Val::Bool(self.rng.random()),
            OdpsType::String => Val::Str(self.string(12)),
            OdpsType::Varchar(n) | OdpsType::Char(n) => {
                Val::Str(self.string((*n as usize).min(12)))
            }
            OdpsType::Binary | OdpsType::Blob => {
                let len = self.rng.random_range(0..12);
                Val::Bytes((0..len).map(|_| self.rng.random()).collect())
            }
            OdpsType::Json => Val::Str(self.json_text(0)),
            OdpsType::Decimal(_) => {
                let (p, s) = (decimal_precision(ty), decimal_scale(ty));
                let digits = self.rng.random_range(1..=usize::from(p));
                let mut text = String::new();
                if self.rng.random_bool(0.4) {
                    text.push('-');
                }
                for _ in 0..digits {
                    text.push(char::from(b'0' + self.rng.random_range(0..10u8)));
                }
                let v = parse_decimal(text.as_bytes(), p, 0)
                    .ok()
                    .and_then(|v| v.to_i128())
                    .unwrap_or(0);
                Val::Dec(format_decimal(&v.to_string(), s))
            }
            OdpsType::Date => Val::Int(self.rng.random_range(DAYS_1900..DAYS_2100)),
            OdpsType::DateTime => {
                let ms = self
                    .rng
                    .random_range(SECONDS_1900 * 1000..SECONDS_2100 * 1000);
                let step = match data_type {
                    DataType::Timestamp(TimeUnit::Second, _) => 1000,
                    _ => 1,
                };
                Val::Int(ms - ms.rem_euclid(step))
            }
            OdpsType::Timestamp | OdpsType::TimestampNtz => {
                let sec = self.rng.random_range(SECONDS_1900..SECONDS_2100);
                let nanos = self.nanos(data_type);
                Val::SecNanos(sec, nanos)
            }
            OdpsType::IntervalDayTime => {
                let sec = self.rng.random_range(-1_000_000_000i64..1_000_000_000);
                let nanos = self.nanos(data_type);
                Val::SecNanos(sec, nanos)
            }
            OdpsType::IntervalYearMonth => Val::Int(self.rng.random_range(-100_000..100_000)),
            OdpsType::Array(element) => {
                let child = child_type(data_type, 0);
                let len = self.rng.random_range(0..4);
                Val::List(
                    (0..len)
                        .map(|_| self.value(element, &child, true))
                        .collect(),
                )
            }
            OdpsType::Map(key, value) => {
                let (kt, vt) = (child_type(data_type, 0), child_type(data_type, 1));
                let len = self.rng.random_range(0..4);
                let mut entries: Vec<(Val, Val)> = Vec::new();
                for _ in 0..len {
                    let k = self.value(key, &kt, false);
                    let k = match k {
                        Val::F32(b) if f32::from_bits(b).is_nan() => continue,
                        Val::F64(b) if f64::from_bits(b).is_nan() => continue,
                        Val::F32(b) if f32::from_bits(b) == 0.0 => Val::F32(0),
                        Val::F64(b) if f64::from_bits(b) == 0.0 => Val::F64(0),
                        k => k,
                    };
                    if entries.iter().any(|(e, _)| *e == k) {
                        continue;
                    }
                    let v = self.value(value, &vt, true);
                    entries.push((k, v));
                }
                Val::Map(entries)
            }
            OdpsType::Struct(fields) => Val::Struct(
                fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| self.value(&f.ty, &child_type(data_type, i), true))
                    .collect(),
            ),
        }
    }

    fn nanos(&mut self, data_type: &DataType) -> i32 {
        let step = match data_type {
            DataType::Timestamp(unit, _) => match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            },
            DataType::Interval(IntervalUnit::DayTime) => 1_000_000,
            _ => 1,
        };
        let n = self.rng.random_range(0..1_000_000_000);
        n - n % step
    }

    fn string(&mut self, max_chars: usize) -> String {
        const CHARS: &[char] = &[
            'a', 'b', 'z', '0', ' ', ',', '"', '\'', '\\', 'é', '中', '😀', '\n',
        ];
        let len = self.rng.random_range(0..=max_chars);
        (0..len).map(|_| self.pick(CHARS)).collect()
    }

    /// JSON text as Python's `json.dumps` writes it (`, ` and `: ` separators, ASCII).
    fn json_text(&mut self, depth: usize) -> String {
        match self.rng.random_range(0..if depth > 1 { 3 } else { 5 }) {
            0 => self.rng.random_range(-1000i64..1000).to_string(),
            1 => format!("\"s{}\"", self.rng.random_range(0..100)),
            2 => self.pick(&["true", "false"]).to_string(),
            3 => {
                let n = self.rng.random_range(0..3);
                let items: Vec<String> = (0..n).map(|_| self.json_text(depth + 1)).collect();
                format!("[{}]", items.join(", "))
            }
            _ => {
                let n = self.rng.random_range(0..3);
                let items: Vec<String> = (0..n)
                    .map(|i| format!("\"k{i}\": {}", self.json_text(depth + 1)))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }
}

/// The `i`th child type of a list (0), map (0 key, 1 value) or struct.
fn child_type(data_type: &DataType, i: usize) -> DataType {
    match data_type {
        DataType::List(f) | DataType::LargeList(f) => f.data_type().clone(),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) => kv[i].data_type().clone(),
            _ => DataType::Null,
        },
        DataType::Struct(fields) => fields[i].data_type().clone(),
        _ => DataType::Null,
    }
}

fn nulls_of(values: &[Val]) -> Option<NullBuffer> {
    let valid: Vec<bool> = values.iter().map(|v| *v != Val::Null).collect();
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

fn int(v: &Val) -> i64 {
    match v {
        Val::Int(i) => *i,
        _ => 0,
    }
}

fn sec_nanos(v: &Val) -> i128 {
    match v {
        Val::SecNanos(s, n) => i128::from(*s) * 1_000_000_000 + i128::from(*n),
        _ => 0,
    }
}

fn opt<T>(v: &Val, f: impl FnOnce(&Val) -> T) -> Option<T> {
    (*v != Val::Null).then(|| f(v))
}

/// The Arrow array of `data_type` holding `values` of a `ty` column. Panics on values that
/// do not fit (test support).
pub fn to_array(ty: &OdpsType, data_type: &DataType, values: &[Val]) -> ArrayRef {
    use DataType as A;
    let nulls = nulls_of(values);
    match data_type {
        A::Int8 => Arc::new(
            values
                .iter()
                .map(|v| opt(v, |v| int(v) as i8))
                .collect::<Int8Array>(),
        ),
        A::Int16 => Arc::new(
            values
                .iter()
                .map(|v| opt(v, |v| int(v) as i16))
                .collect::<Int16Array>(),
        ),
        A::Int32 => Arc::new(
            values
                .iter()
                .map(|v| opt(v, |v| int(v) as i32))
                .collect::<Int32Array>(),
        ),
        A::Int64 => Arc::new(values.iter().map(|v| opt(v, int)).collect::<Int64Array>()),
        A::Date32 => Arc::new(
            values
                .iter()
                .map(|v| opt(v, |v| int(v) as i32))
                .collect::<Date32Array>(),
        ),
        A::Interval(IntervalUnit::YearMonth) => Arc::new(
            values
                .iter()
                .map(|v| opt(v, |v| int(v) as i32))
                .collect::<IntervalYearMonthArray>(),
        ),
        A::Float32 => Arc::new(
            values
                .iter()
                .map(|v| {
                    opt(v, |v| match v {
                        Val::F32(b) => f32::from_bits(*b),
                        _ => 0.0,
                    })
                })
                .collect::<Float32Array>(),
        ),
        A::Float64 => Arc::new(
            values
                .iter()
                .map(|v| {
                    opt(v, |v| match v {
                        Val::F64(b) => f64::from_bits(*b),
                        _ => 0.0,
                    })
                })
                .collect::<Float64Array>(),
        ),
        A::Boolean => Arc::new(
            values
                .iter()
                .map(|v| opt(v, |v| *v == Val::Bool(true)))
                .collect::<BooleanArray>(),
        ),
        A::Utf8 | A::LargeUtf8 | A::Binary | A::LargeBinary => {
            let bytes: Vec<Option<Vec<u8>>> = values
                .iter()
                .map(|v| match v {
                    Val::Str(s) => Some(s.as_bytes().to_vec()),
                    Val::Bytes(b) => Some(b.clone()),
                    _ => None,
                })
                .collect();
            match data_type {
                A::Utf8 => {
                    Arc::new(GenericStringArray::<i32>::from_iter(bytes.iter().map(
                        |b| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                    )))
                }
                A::LargeUtf8 => {
                    Arc::new(GenericStringArray::<i64>::from_iter(bytes.iter().map(
                        |b| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                    )))
                }
                A::Binary => Arc::new(GenericBinaryArray::<i32>::from_iter(bytes)),
                _ => Arc::new(GenericBinaryArray::<i64>::from_iter(bytes)),
            }
        }
        A::Decimal128(p, s) => Arc::new(
            values
                .iter()
                .map(|v| {
                    opt(v, |v| match v {
                        Val::Dec(t) => parse_decimal(t.as_bytes(), *p, *s).unwrap().as_i128(),
                        _ => 0,
                    })
                })
                .collect::<Decimal128Array>()
                .with_precision_and_scale(*p, *s)
                .unwrap(),
        ),
        A::Decimal256(p, s) => Arc::new(
            values
                .iter()
                .map(|v| {
                    opt(v, |v| match v {
                        Val::Dec(t) => parse_decimal(t.as_bytes(), *p, *s).unwrap(),
                        _ => arrow_buffer::i256::ZERO,
                    })
                })
                .collect::<Decimal256Array>()
                .with_precision_and_scale(*p, *s)
                .unwrap(),
        ),
        A::Timestamp(unit, tz) => {
            let per = match unit {
                TimeUnit::Second => 1_000_000_000i128,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            let raw: Vec<i64> = values
                .iter()
                .map(|v| {
                    let nanos = match (ty, v) {
                        (OdpsType::DateTime, Val::Int(ms)) => i128::from(*ms) * 1_000_000,
                        (_, v) => sec_nanos(v),
                    };
                    (nanos / per) as i64
                })
                .collect();
            let data = arrow_buffer::ScalarBuffer::from(raw);
            match unit {
                TimeUnit::Second => Arc::new(
                    PrimitiveArray::<TimestampSecondType>::new(data, nulls)
                        .with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Millisecond => Arc::new(
                    PrimitiveArray::<TimestampMillisecondType>::new(data, nulls)
                        .with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Microsecond => Arc::new(
                    PrimitiveArray::<TimestampMicrosecondType>::new(data, nulls)
                        .with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    PrimitiveArray::<TimestampNanosecondType>::new(data, nulls)
                        .with_timezone_opt(tz.clone()),
                ),
            }
        }
        A::Interval(IntervalUnit::DayTime) => Arc::new(
            values
                .iter()
                .map(|v| {
                    opt(v, |v| {
                        let ms = sec_nanos(v).div_euclid(1_000_000);
                        IntervalDayTime::new(
                            ms.div_euclid(86_400_000) as i32,
                            ms.rem_euclid(86_400_000) as i32,
                        )
                    })
                })
                .collect::<IntervalDayTimeArray>(),
        ),
        A::Interval(IntervalUnit::MonthDayNano) => Arc::new(
            values
                .iter()
                .map(|v| {
                    opt(v, |v| {
                        let ns = sec_nanos(v);
                        let day = 86_400_000_000_000i128;
                        IntervalMonthDayNano::new(
                            0,
                            ns.div_euclid(day) as i32,
                            ns.rem_euclid(day) as i64,
                        )
                    })
                })
                .collect::<IntervalMonthDayNanoArray>(),
        ),
        _ if is_sec_nano_struct(data_type) => {
            let DataType::Struct(fields) = data_type else {
                unreachable!()
            };
            let (sec, nano): (Vec<i64>, Vec<i32>) = values
                .iter()
                .map(|v| match v {
                    Val::SecNanos(s, n) => (*s, *n),
                    _ => (0, 0),
                })
                .unzip();
            Arc::new(StructArray::new(
                fields.clone(),
                vec![
                    Arc::new(Int64Array::from(sec)),
                    Arc::new(Int32Array::from(nano)),
                ],
                nulls,
            ))
        }
        A::List(field) | A::LargeList(field) => {
            let OdpsType::Array(element) = ty else {
                panic!("{ty} is not an array")
            };
            let mut offsets = vec![0i64];
            let mut children = Vec::new();
            for v in values {
                if let Val::List(items) = v {
                    children.extend(items.iter().cloned());
                }
                offsets.push(children.len() as i64);
            }
            let child = to_array(element, field.data_type(), &children);
            if matches!(data_type, A::List(_)) {
                let offsets: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
                Arc::new(
                    GenericListArray::<i32>::try_new(
                        field.clone(),
                        OffsetBuffer::new(offsets.into()),
                        child,
                        nulls,
                    )
                    .unwrap(),
                )
            } else {
                Arc::new(
                    GenericListArray::<i64>::try_new(
                        field.clone(),
                        OffsetBuffer::new(offsets.into()),
                        child,
                        nulls,
                    )
                    .unwrap(),
                )
            }
        }
        A::Map(entries, ordered) => {
            let (OdpsType::Map(kt, vt), DataType::Struct(kv)) = (ty, entries.data_type()) else {
                panic!("{ty} is not a map")
            };
            let mut offsets = vec![0i32];
            let (mut keys, mut vals) = (Vec::new(), Vec::new());
            for v in values {
                if let Val::Map(items) = v {
                    for (k, x) in items {
                        keys.push(k.clone());
                        vals.push(x.clone());
                    }
                }
                offsets.push(keys.len() as i32);
            }
            let entries_array = StructArray::new(
                kv.clone(),
                vec![
                    to_array(kt, kv[0].data_type(), &keys),
                    to_array(vt, kv[1].data_type(), &vals),
                ],
                None,
            );
            Arc::new(
                MapArray::try_new(
                    entries.clone(),
                    OffsetBuffer::new(offsets.into()),
                    entries_array,
                    nulls,
                    *ordered,
                )
                .unwrap(),
            )
        }
        A::Struct(fields) => {
            let OdpsType::Struct(members) = ty else {
                panic!("{ty} is not a struct")
            };
            let children = members
                .iter()
                .zip(fields.iter())
                .enumerate()
                .map(|(i, (m, f))| {
                    let column: Vec<Val> = values
                        .iter()
                        .map(|v| match v {
                            Val::Struct(items) => items[i].clone(),
                            _ => Val::Null,
                        })
                        .collect();
                    to_array(&m.ty, f.data_type(), &column)
                })
                .collect();
            Arc::new(StructArray::new(fields.clone(), children, nulls))
        }
        other => panic!("test support cannot build Arrow {other}"),
    }
}

/// The value at `row` of an array of a `ty` column.
pub fn value_at(ty: &OdpsType, array: &dyn Array, row: usize) -> Val {
    use DataType as A;
    if array.is_null(row) {
        return Val::Null;
    }
    let timestamp = |unit: &TimeUnit| -> i128 {
        let (v, per) = match unit {
            TimeUnit::Second => (
                array.as_primitive::<TimestampSecondType>().value(row),
                1_000_000_000,
            ),
            TimeUnit::Millisecond => (
                array.as_primitive::<TimestampMillisecondType>().value(row),
                1_000_000,
            ),
            TimeUnit::Microsecond => (
                array.as_primitive::<TimestampMicrosecondType>().value(row),
                1_000,
            ),
            TimeUnit::Nanosecond => (
                array.as_primitive::<TimestampNanosecondType>().value(row),
                1,
            ),
        };
        i128::from(v) * per
    };
    let split = |ns: i128| {
        Val::SecNanos(
            ns.div_euclid(1_000_000_000) as i64,
            ns.rem_euclid(1_000_000_000) as i32,
        )
    };
    match array.data_type() {
        A::Int8 => Val::Int(array.as_primitive::<Int8Type>().value(row).into()),
        A::Int16 => Val::Int(array.as_primitive::<Int16Type>().value(row).into()),
        A::Int32 => Val::Int(array.as_primitive::<Int32Type>().value(row).into()),
        A::Int64 => Val::Int(array.as_primitive::<Int64Type>().value(row)),
        A::Date32 => Val::Int(array.as_primitive::<Date32Type>().value(row).into()),
        A::Interval(IntervalUnit::YearMonth) => Val::Int(
            array
                .as_primitive::<IntervalYearMonthType>()
                .value(row)
                .into(),
        ),
        A::Float32 => Val::F32(array.as_primitive::<Float32Type>().value(row).to_bits()),
        A::Float64 => Val::F64(array.as_primitive::<Float64Type>().value(row).to_bits()),
        A::Boolean => Val::Bool(array.as_boolean().value(row)),
        A::Utf8 | A::LargeUtf8 | A::Binary | A::LargeBinary => {
            let bytes = match array.data_type() {
                A::Utf8 => array.as_string::<i32>().value(row).as_bytes().to_vec(),
                A::LargeUtf8 => array.as_string::<i64>().value(row).as_bytes().to_vec(),
                A::Binary => array.as_binary::<i32>().value(row).to_vec(),
                _ => array.as_binary::<i64>().value(row).to_vec(),
            };
            match ty {
                OdpsType::Binary | OdpsType::Blob => Val::Bytes(bytes),
                _ => Val::Str(String::from_utf8_lossy(&bytes).into_owned()),
            }
        }
        A::Decimal128(_, s) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            Val::Dec(rescale(&v.to_string(), *s, decimal_scale(ty)))
        }
        A::Decimal256(_, s) => {
            let v = array.as_primitive::<Decimal256Type>().value(row);
            Val::Dec(rescale(&v.to_string(), *s, decimal_scale(ty)))
        }
        A::Timestamp(unit, _) => {
            let ns = timestamp(unit);
            match ty {
                OdpsType::DateTime => Val::Int(ns.div_euclid(1_000_000) as i64),
                _ => split(ns),
            }
        }
        A::Interval(IntervalUnit::DayTime) => {
            let v = array.as_primitive::<IntervalDayTimeType>().value(row);
            split((i128::from(v.days) * 86_400_000 + i128::from(v.milliseconds)) * 1_000_000)
        }
        A::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            split(i128::from(v.days) * 86_400_000_000_000 + i128::from(v.nanoseconds))
        }
        dt if is_sec_nano_struct(dt) => {
            let s = array.as_struct();
            Val::SecNanos(
                s.column(0).as_primitive::<Int64Type>().value(row),
                s.column(1).as_primitive::<Int32Type>().value(row),
            )
        }
        A::List(_) | A::LargeList(_) => {
            let OdpsType::Array(element) = ty else {
                return Val::Null;
            };
            let items = match array.data_type() {
                A::List(_) => array.as_list::<i32>().value(row),
                _ => array.as_list::<i64>().value(row),
            };
            Val::List(
                (0..items.len())
                    .map(|i| value_at(element, &items, i))
                    .collect(),
            )
        }
        A::Map(..) => {
            let OdpsType::Map(kt, vt) = ty else {
                return Val::Null;
            };
            let entries = array.as_map().value(row);
            Val::Map(
                (0..entries.len())
                    .map(|i| {
                        (
                            value_at(kt, entries.column(0), i),
                            value_at(vt, entries.column(1), i),
                        )
                    })
                    .collect(),
            )
        }
        A::Struct(_) => {
            let OdpsType::Struct(fields) = ty else {
                return Val::Null;
            };
            let s = array.as_struct();
            Val::Struct(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| value_at(&f.ty, c, row))
                    .collect(),
            )
        }
        _ => Val::Null,
    }
}

/// Decimal text of an unscaled value at scale `from`, rewritten at scale `to` (exact when
/// `to >= from`, truncated otherwise; test data never needs that).
fn rescale(unscaled: &str, from: i8, to: i8) -> String {
    let text = format_decimal(unscaled, from);
    match parse_decimal(text.as_bytes(), 76, to) {
        Ok(v) => format_decimal(&v.to_string(), to),
        Err(_) => text,
    }
}

impl Val {
    /// The canonical JSON of a value of a `ty` column (see the module docs).
    pub fn to_json(&self, ty: &OdpsType) -> Json {
        match (self, ty) {
            (Val::Null, _) => Json::Null,
            (Val::Bool(b), _) => json!(b),
            (Val::Int(i), _) => json!(i),
            (Val::F32(b), _) => json!(format!("{b:08x}")),
            (Val::F64(b), _) => json!(format!("{b:016x}")),
            (Val::Dec(t), _) => json!(t),
            (Val::Str(s), OdpsType::Json) => serde_json::from_str(s).unwrap_or(json!(s)),
            (Val::Str(s), _) => json!(s),
            (Val::Bytes(b), _) => json!(hex::encode(b)),
            (Val::SecNanos(s, n), _) => json!([s, n]),
            (Val::List(items), OdpsType::Array(e)) => {
                Json::Array(items.iter().map(|v| v.to_json(e)).collect())
            }
            (Val::Map(items), OdpsType::Map(k, v)) => Json::Array(
                items
                    .iter()
                    .map(|(a, b)| json!([a.to_json(k), b.to_json(v)]))
                    .collect(),
            ),
            (Val::Struct(items), OdpsType::Struct(fields)) => Json::Array(
                items
                    .iter()
                    .zip(fields)
                    .map(|(v, f)| v.to_json(&f.ty))
                    .collect(),
            ),
            _ => json!(format!("{self:?}")),
        }
    }
}

/// The rows of `batches` as canonical JSON: a list of rows, each a list of values.
pub fn batches_to_json(columns: &[Column], batches: &[RecordBatch]) -> Json {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(Json::Array(
                columns
                    .iter()
                    .zip(batch.columns())
                    .map(|(c, a)| value_at(&c.ty, a.as_ref(), row).to_json(&c.ty))
                    .collect(),
            ));
        }
    }
    Json::Array(rows)
}

/// A batch of `rows` random rows of `columns` in `schema` (one field per column).
pub fn random_batch(columns: &[Column], schema: SchemaRef, rows: usize, seed: u64) -> RecordBatch {
    let mut g = Gen::new(seed);
    random_batch_with(&mut g, columns, schema, rows)
}

/// [`random_batch`] with a given generator.
pub fn random_batch_with(
    g: &mut Gen,
    columns: &[Column],
    schema: SchemaRef,
    rows: usize,
) -> RecordBatch {
    let arrays = columns
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            let values: Vec<Val> = (0..rows)
                .map(|_| g.value(&c.ty, f.data_type(), f.is_nullable() && c.nullable))
                .collect();
            to_array(&c.ty, f.data_type(), &values)
        })
        .collect();
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema, arrays, &options).unwrap()
}

/// A schema of one field per column of the given types (nullable as the columns).
pub fn schema_of(columns: &[Column], types: Vec<DataType>) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .zip(types)
            .map(|(c, t)| arrow_schema::Field::new(&c.name, t, c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// proptest strategies of column types and schemas.
pub mod strategies {
    use proptest::prelude::*;

    use paiio_storage::types::{Column, OdpsType, StructField};

    pub fn primitive_type() -> impl Strategy<Value = OdpsType> {
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
            (1u8..=38)
                .prop_flat_map(|p| (Just(p), 0..=p as i8))
                .prop_map(|p_s| T::Decimal(Some(p_s))),
            Just(T::String),
            (1u32..=20).prop_map(T::Varchar),
            (1u32..=20).prop_map(T::Char),
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

    /// Any type, nested up to three levels deep.
    pub fn any_type() -> impl Strategy<Value = OdpsType> {
        primitive_type().prop_recursive(3, 24, 3, |inner| {
            prop_oneof![
                inner
                    .clone()
                    .prop_map(|element| OdpsType::Array(Box::new(element))),
                (primitive_type(), inner.clone())
                    .prop_map(|(key, value)| OdpsType::Map(Box::new(key), Box::new(value))),
                prop::collection::vec(inner, 1..4).prop_map(|types| {
                    OdpsType::Struct(
                        types
                            .into_iter()
                            .enumerate()
                            .map(|(i, ty)| StructField {
                                name: format!("f{i}"),
                                ty,
                            })
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// One to five columns `c0..` of any types, some not nullable.
    pub fn columns() -> impl Strategy<Value = Vec<Column>> {
        prop::collection::vec((any_type(), prop::bool::weighted(0.8)), 1..6).prop_map(|types| {
            types
                .into_iter()
                .enumerate()
                .map(|(i, (ty, nullable))| Column {
                    nullable,
                    ..Column::new(format!("c{i}"), ty)
                })
                .collect()
        })
    }
}
