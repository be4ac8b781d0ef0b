//! record_defaults: the whole conversion table (every MaxCompute type against every target),
//! NULL filling, value failures naming the row, and the count check.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Int8Array, Int32Array, Int64Array, IntervalDayTimeArray,
    IntervalYearMonthArray, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_buffer::IntervalDayTime;
use arrow_schema::DataType;
use paiio::Error;
use paiio::coerce::{
    Conversion, RecordDefault, TargetType, check_defaults, coerce_batch, coerce_column, conversion,
};
use paiio_conformance::datagen::{Value as V, to_array};
use paiio_storage::types::{ArrowOptions, Column, OdpsType, StructField};

use crate::common::assert_mentions;

fn ty(text: &str) -> OdpsType {
    text.parse().unwrap()
}

/// Every MaxCompute type (one of each kind, decimals both bounded and unbounded).
const TYPES: [&str; 24] = [
    "tinyint",
    "smallint",
    "int",
    "bigint",
    "float",
    "double",
    "decimal(10,2)",
    "decimal",
    "boolean",
    "string",
    "varchar(10)",
    "char(5)",
    "json",
    "binary",
    "blob",
    "date",
    "datetime",
    "timestamp",
    "timestamp_ntz",
    "interval_day_time",
    "interval_year_month",
    "array<bigint>",
    "map<string,bigint>",
    "struct<a:bigint,b:string>",
];

/// The documented table, row by row: int32 int64 float32 float64 bool string bytes.
/// W widen, E exact, R round, N narrow, C count, P parse, F format, x error.
fn expected_rules(odps: &str) -> &'static str {
    match odps {
        "tinyint" | "smallint" => "W W W W N F F",
        "int" => "E W R W N F F",
        "bigint" => "N E R R N F F",
        "float" => "N N E W N F F",
        "double" => "N N N E N F F",
        "decimal(10,2)" | "decimal" => "N N R R N F F",
        "boolean" => "W W W W E F F",
        "string" | "varchar(10)" | "char(5)" | "json" => "P P P P P E E",
        "binary" | "blob" => "x x x x x P E",
        "date" => "C C x x x F F",
        "datetime" | "timestamp" | "timestamp_ntz" => "x C x x x F F",
        "interval_day_time" => "x C x x x F F",
        "interval_year_month" => "C C x x x F F",
        _ => "x x x x x F F", // array, map, struct
    }
}

fn rule_letter(c: Conversion) -> &'static str {
    match c {
        Conversion::Exact => "E",
        Conversion::Widen => "W",
        Conversion::Round => "R",
        Conversion::Narrow => "N",
        Conversion::Count => "C",
        Conversion::Parse => "P",
        Conversion::Format => "F",
        Conversion::Error(_) => "x",
    }
}

#[test]
fn the_conversion_table_is_the_documented_one() {
    for odps in TYPES {
        let got: Vec<&str> = TargetType::ALL
            .iter()
            .map(|t| rule_letter(conversion(&ty(odps), *t)))
            .collect();
        assert_eq!(
            got.join(" "),
            expected_rules(odps),
            "conversion rules of {odps}"
        );
    }
}

fn default_for(target: TargetType) -> RecordDefault {
    match target {
        TargetType::Int32 => RecordDefault::Int32(-1),
        TargetType::Int64 => RecordDefault::Int64(-1),
        TargetType::Float32 => RecordDefault::Float32(-1.5),
        TargetType::Float64 => RecordDefault::Float64(-2.5),
        TargetType::Bool => RecordDefault::Bool(true),
        TargetType::String => RecordDefault::String("dflt".into()),
        TargetType::Bytes => RecordDefault::Bytes(b"dflt".to_vec()),
    }
}

/// A sample column of each type: a value, NULL, and another value (text also has an empty
/// string, which numeric targets treat as missing).
fn sample(odps: &str) -> ArrayRef {
    let t = ty(odps);
    let opts = ArrowOptions::default();
    match odps {
        "tinyint" | "smallint" | "int" | "bigint" => to_array(&t, &[V::Int(1), V::Null, V::Int(0)]),
        "float" => to_array(&t, &[V::Float(1.0), V::Null, V::Float(0.0)]),
        "double" => to_array(&t, &[V::Double(1.0), V::Null, V::Double(0.0)]),
        "decimal(10,2)" => to_array(&t, &[V::Decimal(100, 2), V::Null, V::Decimal(0, 2)]),
        "decimal" => to_array(
            &t,
            &[
                V::Decimal(1_000_000_000_000_000_000, 18),
                V::Null,
                V::Decimal(0, 18),
            ],
        ),
        "boolean" => to_array(&t, &[V::Bool(true), V::Null, V::Bool(false)]),
        "string" | "varchar(10)" | "char(5)" | "json" => to_array(
            &t,
            &[
                V::Str(" 1 ".into()),
                V::Null,
                V::Str("0".into()),
                V::Str("".into()),
            ],
        ),
        "binary" | "blob" => to_array(
            &t,
            &[V::Bytes(b"1".to_vec()), V::Null, V::Bytes(b"0".to_vec())],
        ),
        "date" => to_array(&t, &[V::Date(19000), V::Null, V::Date(0)]),
        "datetime" => Arc::new(TimestampMillisecondArray::from(vec![
            Some(1_700_000_000_123),
            None,
            Some(-1),
        ])),
        "timestamp" | "timestamp_ntz" => {
            let a = to_array(
                &t,
                &[
                    V::TimestampNanos(1_700_000_000_123_456_789),
                    V::Null,
                    V::TimestampNanos(0),
                ],
            );
            assert_eq!(a.data_type(), &t.to_arrow(&opts));
            a
        }
        "interval_day_time" => Arc::new(IntervalDayTimeArray::from(vec![
            Some(IntervalDayTime::new(1, 3_723_004)),
            None,
            Some(IntervalDayTime::new(0, -1)),
        ])),
        "interval_year_month" => {
            Arc::new(IntervalYearMonthArray::from(vec![Some(14), None, Some(-1)]))
        }
        "array<bigint>" => to_array(
            &t,
            &[
                V::List(vec![V::Int(1), V::Int(2)]),
                V::Null,
                V::List(vec![]),
            ],
        ),
        "map<string,bigint>" => to_array(
            &t,
            &[
                V::Map(vec![(V::Str("a".into()), V::Int(1))]),
                V::Null,
                V::Map(vec![]),
            ],
        ),
        "struct<a:bigint,b:string>" => to_array(
            &t,
            &[
                V::Struct(vec![
                    ("a".into(), V::Int(1)),
                    ("b".into(), V::Str("x".into())),
                ]),
                V::Null,
                V::Struct(vec![
                    ("a".into(), V::Null),
                    ("b".into(), V::Str("y".into())),
                ]),
            ],
        ),
        other => panic!("no sample for {other}"),
    }
}

/// What the sample becomes, as text per row (`D` marks the default).
fn expected_values(odps: &str, target: TargetType) -> Vec<&'static str> {
    use TargetType as T;
    let numeric = matches!(target, T::Int32 | T::Int64 | T::Float32 | T::Float64);
    match (odps, target) {
        (_, T::Bool) if odps != "boolean" && !is_text(odps) => vec!["true", "D", "false"],
        ("boolean", T::Bool) => vec!["true", "D", "false"],
        ("boolean", T::String | T::Bytes) => vec!["true", "D", "false"],
        (o, _) if is_text(o) && (numeric || target == T::Bool) => {
            if target == T::Bool {
                vec!["true", "D", "false", "D"]
            } else {
                vec!["1", "D", "0", "D"]
            }
        }
        (o, T::String | T::Bytes) if is_text(o) => vec![" 1 ", "D", "0", ""],
        ("float" | "double", T::String | T::Bytes) => vec!["1.0", "D", "0.0"],
        ("decimal(10,2)", T::String | T::Bytes) => vec!["1.00", "D", "0.00"],
        ("decimal", T::String | T::Bytes) => {
            vec!["1.000000000000000000", "D", "0.000000000000000000"]
        }
        ("date", T::String | T::Bytes) => vec!["2022-01-08", "D", "1970-01-01"],
        ("date", _) => vec!["19000", "D", "0"],
        ("datetime", T::String | T::Bytes) => {
            vec!["2023-11-14T22:13:20.123", "D", "1969-12-31T23:59:59.999"]
        }
        ("datetime", _) => vec!["1700000000123", "D", "-1"],
        ("timestamp" | "timestamp_ntz", T::String | T::Bytes) => {
            vec!["2023-11-14T22:13:20.123456789", "D", "1970-01-01T00:00:00"]
        }
        ("timestamp" | "timestamp_ntz", _) => vec!["1700000000123456789", "D", "0"],
        ("interval_day_time", T::String | T::Bytes) => {
            vec!["1 01:02:03.004", "D", "-0 00:00:00.001"]
        }
        ("interval_day_time", _) => vec!["90123004", "D", "-1"],
        ("interval_year_month", T::String | T::Bytes) => vec!["1-2", "D", "-0-1"],
        ("interval_year_month", _) => vec!["14", "D", "-1"],
        ("array<bigint>", _) => vec!["[1,2]", "D", "[]"],
        ("map<string,bigint>", _) => vec![r#"{"a":1}"#, "D", "{}"],
        ("struct<a:bigint,b:string>", _) => {
            vec![r#"{"a":1,"b":"x"}"#, "D", r#"{"a":null,"b":"y"}"#]
        }
        (_, _) => vec!["1", "D", "0"],
    }
}

fn is_text(odps: &str) -> bool {
    matches!(odps, "string" | "varchar(10)" | "char(5)" | "json")
}

/// The text of row `i` of an output array, for comparison with the expected table.
fn show(array: &dyn Array, i: usize) -> String {
    assert!(array.is_valid(i), "output row {i} is NULL");
    match array.data_type() {
        DataType::Int32 => array.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float32 => format!("{}", array.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => format!("{}", array.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => array.as_boolean().value(i).to_string(),
        DataType::Utf8 => array.as_string::<i32>().value(i).to_string(),
        DataType::Binary => String::from_utf8(array.as_binary::<i32>().value(i).to_vec()).unwrap(),
        other => panic!("unexpected output type {other}"),
    }
}

fn default_text(target: TargetType) -> String {
    let array = default_for(target).to_array(1);
    show(array.as_ref(), 0)
}

/// Numbers compare by value (`1` and `1.0` are the same float).
fn same(target: TargetType, got: &str, want: &str) -> bool {
    match target {
        TargetType::Float32 | TargetType::Float64 => {
            got.parse::<f64>().ok() == want.parse::<f64>().ok()
        }
        _ => got == want,
    }
}

#[test]
fn every_allowed_conversion_gives_the_documented_values_and_fills_nulls() {
    for odps in TYPES {
        let t = ty(odps);
        let input = sample(odps);
        for target in TargetType::ALL {
            let default = default_for(target);
            let result = coerce_column(&input, "c", &t, &default, 0);
            if !conversion(&t, target).is_allowed() {
                let err = result.expect_err(&format!("{odps} -> {target} must fail"));
                let message = err.to_string();
                assert!(
                    matches!(&err, Error::Conversion { column, odps_type, target: tg, row: None, .. }
                        if column == "c" && odps_type == &t.to_string() && tg == target.name()),
                    "{odps} -> {target}: {err:?}"
                );
                assert!(
                    message.contains("`c`")
                        && message.contains(&t.to_string())
                        && message.contains(target.name()),
                    "{message}"
                );
                continue;
            }
            let output = result.unwrap_or_else(|e| panic!("{odps} -> {target}: {e}"));
            assert_eq!(
                output.data_type(),
                &target.arrow_type(),
                "{odps} -> {target}"
            );
            assert_eq!(output.null_count(), 0, "{odps} -> {target} left NULLs");
            let expected = expected_values(odps, target);
            assert_eq!(output.len(), expected.len(), "{odps} -> {target}");
            for (i, want) in expected.iter().enumerate() {
                let got = show(output.as_ref(), i);
                let want = if *want == "D" {
                    default_text(target)
                } else {
                    want.to_string()
                };
                assert!(
                    same(target, &got, &want),
                    "{odps} -> {target}, row {i}: got {got:?}, want {want:?}"
                );
            }
        }
    }
}

#[test]
fn impossible_conversions_fail_before_reading_naming_column_type_and_target() {
    let columns = vec![
        Column::new("id", OdpsType::BigInt),
        Column::new("tags", ty("array<bigint>")),
    ];
    let defaults = vec![RecordDefault::Int64(0), RecordDefault::Int64(0)];
    let err = check_defaults(&columns, &defaults).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, Error::Conversion { row: None, .. }),
        "{err:?}"
    );
    assert_mentions(&message, &["`tags`", "array<bigint>", "int64"]);

    for odps in TYPES {
        for target in TargetType::ALL {
            let t = ty(odps);
            let result = check_defaults(&[Column::new("x", t.clone())], &[default_for(target)]);
            assert_eq!(
                result.is_ok(),
                conversion(&t, target).is_allowed(),
                "{odps} -> {target}"
            );
        }
    }
    // Every target is reachable from every type as text.
    let all: Vec<Column> = TYPES
        .iter()
        .map(|t| Column::new(format!("c_{}", t.len()), ty(t)))
        .collect();
    let strings = vec![RecordDefault::from(""); all.len()];
    check_defaults(&all, &strings).unwrap();
}

#[test]
fn a_wrong_number_of_defaults_names_both_counts() {
    let columns: Vec<Column> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| Column::new(*n, OdpsType::BigInt))
        .collect();
    let defaults = vec![RecordDefault::Int64(0); 3];
    let err = check_defaults(&columns, &defaults).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let message = err.to_string();
    assert_mentions(&message, &["3 record_defaults for 4 selected columns"]);
    let err = check_defaults(&columns[..1], &defaults)
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["3 record_defaults for 1 selected columns"]);
}

/// A value that does not convert fails naming the column, its type, the target and the row
/// (counted from the slice start: `row_base` + the row in the batch).
fn value_failure(odps: &str, input: ArrayRef, default: RecordDefault, row: u64, text: &str) {
    let t = ty(odps);
    let err = coerce_column(&input, "col", &t, &default, 100).unwrap_err();
    let message = err.to_string();
    match &err {
        Error::Conversion {
            column,
            odps_type,
            target,
            row: got,
            ..
        } => {
            assert_eq!(column, "col");
            assert_eq!(odps_type, &t.to_string());
            assert_eq!(target, default.target_type().name());
            assert_eq!(*got, Some(100 + row), "{message}");
        }
        other => panic!("{odps}: expected a conversion error, got {other:?}"),
    }
    assert!(message.contains(text), "{message:?} lacks {text:?}");
    assert_mentions(&message, &[&format!("at row {}", 100 + row)]);
}

#[test]
fn values_that_do_not_fit_fail_naming_the_row() {
    let ints = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
    let texts = |v: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let doubles =
        |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(arrow_array::Float64Array::from(v)) };
    value_failure(
        "bigint",
        ints(vec![Some(1), None, Some(3_000_000_000)]),
        0i32.into(),
        2,
        "3000000000",
    );
    value_failure(
        "bigint",
        ints(vec![Some(-2_147_483_649)]),
        0i32.into(),
        0,
        "-2147483649",
    );
    value_failure(
        "int",
        Arc::new(Int32Array::from(vec![0, 1, 2])),
        false.into(),
        2,
        "not 0 or 1",
    );
    value_failure(
        "tinyint",
        Arc::new(Int8Array::from(vec![None, Some(-1)])),
        true.into(),
        1,
        "not 0 or 1",
    );
    value_failure(
        "double",
        doubles(vec![Some(2.0), Some(2.5)]),
        0i64.into(),
        1,
        "2.5",
    );
    value_failure(
        "double",
        doubles(vec![Some(f64::NAN)]),
        0i32.into(),
        0,
        "NaN",
    );
    value_failure(
        "double",
        doubles(vec![Some(1.0), None, Some(1e300)]),
        0f32.into(),
        2,
        "float32",
    );
    value_failure(
        "double",
        doubles(vec![Some(3e9)]),
        0i32.into(),
        0,
        "3000000000",
    );
    value_failure(
        "double",
        doubles(vec![Some(0.5)]),
        false.into(),
        0,
        "not 0 or 1",
    );
    let decimals = to_array(
        &ty("decimal(10,2)"),
        &[V::Decimal(100, 2), V::Decimal(150, 2)],
    );
    value_failure("decimal(10,2)", decimals.clone(), 0i64.into(), 1, "1.50");
    value_failure("decimal(10,2)", decimals, false.into(), 1, "1.50");
    value_failure(
        "string",
        texts(vec![Some("1"), Some("x1")]),
        0i64.into(),
        1,
        "\"x1\"",
    );
    value_failure(
        "string",
        texts(vec![Some("1.0")]),
        0i32.into(),
        0,
        "\"1.0\"",
    );
    value_failure(
        "string",
        texts(vec![None, Some("abc")]),
        0f64.into(),
        1,
        "\"abc\"",
    );
    value_failure(
        "string",
        texts(vec![Some("yes")]),
        false.into(),
        0,
        "\"yes\"",
    );
    let bad_utf8 = to_array(
        &OdpsType::Binary,
        &[V::Bytes(b"ok".to_vec()), V::Bytes(vec![0xff, 0xfe])],
    );
    value_failure("binary", bad_utf8, "".into(), 1, "UTF-8");
    // TIMESTAMP data in milliseconds that does not fit epoch nanoseconds in an int64.
    let far: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![0, i64::MAX / 10]));
    value_failure("timestamp", far, 0i64.into(), 1, "does not fit");
}

#[test]
fn parsing_trims_accepts_signs_exponents_and_bool_words() {
    let t = OdpsType::String;
    let texts: ArrayRef = Arc::new(StringArray::from(vec!["+7", "-3 ", "\t12"]));
    let out = coerce_column(&texts, "s", &t, &0i64.into(), 0).unwrap();
    assert_eq!(
        out.as_primitive::<Int64Type>().values().to_vec(),
        vec![7, -3, 12]
    );
    let texts: ArrayRef = Arc::new(StringArray::from(vec!["1e3", "-2.5", "inf"]));
    let out = coerce_column(&texts, "s", &t, &0f64.into(), 0).unwrap();
    assert_eq!(
        out.as_primitive::<Float64Type>().values().to_vec(),
        vec![1000.0, -2.5, f64::INFINITY]
    );
    let texts: ArrayRef = Arc::new(StringArray::from(vec!["TRUE", "false", "1", "0", " True "]));
    let out = coerce_column(&texts, "s", &t, &false.into(), 0).unwrap();
    let got: Vec<bool> = out.as_boolean().iter().map(Option::unwrap).collect();
    assert_eq!(got, vec![true, false, true, false, true]);
}

#[test]
fn widening_and_rounding_keep_values() {
    let big: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX, i64::MIN, 16_777_217]));
    let out = coerce_column(&big, "b", &OdpsType::BigInt, &0f32.into(), 0).unwrap();
    let got = out.as_primitive::<Float32Type>().values().to_vec();
    assert_eq!(got, vec![i64::MAX as f32, i64::MIN as f32, 16_777_216.0]);
    let out = coerce_column(&big, "b", &OdpsType::BigInt, &0f64.into(), 0).unwrap();
    assert_eq!(out.as_primitive::<Float64Type>().value(2), 16_777_217.0);
    let whole = to_array(
        &OdpsType::Double,
        &[V::Double(-2.0), V::Double(9.007_199_254_740_992e15)],
    );
    let out = coerce_column(&whole, "d", &OdpsType::Double, &0i64.into(), 0).unwrap();
    assert_eq!(
        out.as_primitive::<Int64Type>().values().to_vec(),
        vec![-2, 9_007_199_254_740_992]
    );
    let nan = to_array(&OdpsType::Double, &[V::Double(f64::NAN), V::Double(1e-50)]);
    let out = coerce_column(&nan, "d", &OdpsType::Double, &0f32.into(), 0).unwrap();
    let got = out.as_primitive::<Float32Type>();
    assert!(got.value(0).is_nan() && got.value(1) == 0.0);
}

#[test]
fn timestamps_of_any_unit_count_in_the_documented_unit() {
    // DATETIME delivered in nanoseconds still counts milliseconds (floored).
    let nanos: ArrayRef = Arc::new(arrow_array::TimestampNanosecondArray::from(vec![
        1_500_000, -1,
    ]));
    let out = coerce_column(&nanos, "t", &OdpsType::DateTime, &0i64.into(), 0).unwrap();
    assert_eq!(
        out.as_primitive::<Int64Type>().values().to_vec(),
        vec![1, -1]
    );
    // TIMESTAMP delivered in milliseconds counts nanoseconds.
    let millis: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![2]));
    let out = coerce_column(&millis, "t", &OdpsType::Timestamp, &0i64.into(), 0).unwrap();
    assert_eq!(out.as_primitive::<Int64Type>().value(0), 2_000_000);
    // Large strings and views read as text too.
    let large: ArrayRef = Arc::new(arrow_array::LargeStringArray::from(vec!["5"]));
    let out = coerce_column(&large, "s", &OdpsType::String, &0i32.into(), 0).unwrap();
    assert_eq!(out.as_primitive::<Int32Type>().value(0), 5);
}

#[test]
fn coerce_batch_types_every_column_and_keeps_names() {
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from(vec![None, Some("b")])) as ArrayRef,
        ),
        (
            "score",
            to_array(&OdpsType::Double, &[V::Null, V::Double(0.5)]),
        ),
    ])
    .unwrap();
    let types = [OdpsType::BigInt, OdpsType::String, OdpsType::Double];
    let defaults = vec![
        RecordDefault::Int32(-1),
        RecordDefault::from("?"),
        RecordDefault::Float32(9.0),
    ];
    let out = coerce_batch(&batch, &types, &defaults, 0).unwrap();
    let schema = out.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "name", "score"]);
    assert!(schema.fields().iter().all(|f| !f.is_nullable()));
    assert_eq!(
        out.column(0).as_primitive::<Int32Type>().values().to_vec(),
        vec![1, -1]
    );
    assert_eq!(
        out.column(1).as_string::<i32>().iter().collect::<Vec<_>>(),
        vec![Some("?"), Some("b")]
    );
    assert_eq!(
        out.column(2)
            .as_primitive::<Float32Type>()
            .values()
            .to_vec(),
        vec![9.0, 0.5]
    );

    let err = coerce_batch(&batch, &types, &defaults[..2], 0)
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["2 record_defaults for 3 selected columns"]);
}

#[test]
fn defaults_come_from_rust_values() {
    assert_eq!(RecordDefault::from(0i32).target_type(), TargetType::Int32);
    assert_eq!(RecordDefault::from(0i64).target_type(), TargetType::Int64);
    assert_eq!(RecordDefault::from(0f32).target_type(), TargetType::Float32);
    assert_eq!(RecordDefault::from(0f64).target_type(), TargetType::Float64);
    assert_eq!(RecordDefault::from(false).target_type(), TargetType::Bool);
    assert_eq!(RecordDefault::from("").target_type(), TargetType::String);
    assert_eq!(
        RecordDefault::from(&b""[..]).target_type(),
        TargetType::Bytes
    );
    // A nested type inside a struct is fine as JSON, whatever its depth.
    let deep = OdpsType::Struct(vec![StructField {
        name: "m".into(),
        ty: ty("map<string,array<double>>"),
    }]);
    assert_eq!(conversion(&deep, TargetType::String), Conversion::Format);
}
