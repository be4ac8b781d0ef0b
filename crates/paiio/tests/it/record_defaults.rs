//! `ReaderOptions::record_defaults`: typing and NULL filling over the local warehouse and
//! REST, the count and conversion checks at open, failing values named by slice row.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::DataType;
use paiio::{Error, ReaderOptions, RecordDefault, TableReader};
use paiio_conformance::datagen::{DataGen, Value as V, to_array};
use paiio_storage::TableId;
use paiio_storage::types::{Column, OdpsType, TableSchema};

use crate::common::{self, TestBackend, assert_mentions, block};

const COLUMNS: &str =
    "i bigint, d double, s string, b boolean, dt date, ts datetime, arr array<bigint>";

/// Three rows: values, all NULL, edge values (an empty string).
fn mixed_table(backend: &TestBackend) -> TableId {
    let schema = TableSchema::new(TableSchema::parse_columns(COLUMNS).unwrap(), vec![]).unwrap();
    let table = block(backend.store.create_table("mixed", &schema));
    let col = |ty: &str, values: Vec<V>| -> ArrayRef {
        to_array(&ty.parse::<OdpsType>().unwrap(), &values)
    };
    let batch = RecordBatch::try_from_iter(vec![
        ("i", col("bigint", vec![V::Int(1), V::Null, V::Int(3)])),
        (
            "d",
            col("double", vec![V::Double(1.5), V::Null, V::Double(-2.0)]),
        ),
        (
            "s",
            col(
                "string",
                vec![V::Str("7".into()), V::Null, V::Str("".into())],
            ),
        ),
        (
            "b",
            col("boolean", vec![V::Bool(true), V::Null, V::Bool(false)]),
        ),
        ("dt", col("date", vec![V::Date(19000), V::Null, V::Date(0)])),
        (
            "ts",
            col(
                "datetime",
                vec![
                    V::TimestampNanos(1_700_000_000_123_000_000),
                    V::Null,
                    V::TimestampNanos(0),
                ],
            ),
        ),
        (
            "arr",
            col(
                "array<bigint>",
                vec![
                    V::List(vec![V::Int(1), V::Int(2)]),
                    V::Null,
                    V::List(vec![]),
                ],
            ),
        ),
    ])
    .unwrap();
    block(
        backend
            .store
            .write_and_commit(&table, "", false, vec![batch]),
    );
    table
}

fn defaults() -> Vec<RecordDefault> {
    vec![
        RecordDefault::Int32(-1),
        RecordDefault::Float64(9.5),
        RecordDefault::Int64(-7),
        RecordDefault::Bool(true),
        RecordDefault::from("none"),
        RecordDefault::Int64(0),
        RecordDefault::from("[]"),
    ]
}

fn open(
    backend: &TestBackend,
    table: &TableId,
    defaults: Vec<RecordDefault>,
    options: ReaderOptions,
) -> paiio::Result<TableReader> {
    TableReader::open_with(
        backend.service.clone(),
        backend.uri(table, ""),
        options.record_defaults(defaults),
    )
}

/// The error of opening `table` with `defaults` and `options`.
fn open_err(
    backend: &TestBackend,
    table: &TableId,
    defaults: Vec<RecordDefault>,
    options: ReaderOptions,
) -> Error {
    open(backend, table, defaults, options).unwrap_err()
}

/// Asserts that `err` is a conversion error of `(column, odps_type, target, row)`.
#[track_caller]
fn assert_conversion(err: &Error, want: (&str, &str, &str, Option<u64>)) {
    match err {
        Error::Conversion {
            column,
            odps_type,
            target,
            row,
            ..
        } => assert_eq!(
            (column.as_str(), odps_type.as_str(), target.as_str(), *row),
            want
        ),
        other => panic!("expected a conversion error, got {other:?}"),
    }
}

fn concat(dataset: &mut TableReader) -> RecordBatch {
    let batches = dataset.by_ref().collect::<paiio::Result<Vec<_>>>().unwrap();
    arrow_select::concat::concat_batches(&dataset.arrow_schema(), &batches).unwrap()
}

#[test]
fn record_defaults_type_the_columns_and_fill_nulls() {
    for backend in [common::local(), common::rest()] {
        let table = mixed_table(&backend);
        let mut dataset = open(&backend, &table, defaults(), ReaderOptions::default()).unwrap();
        assert_eq!(dataset.row_count(), 3);
        let schema = dataset.arrow_schema();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [
                &DataType::Int32,
                &DataType::Float64,
                &DataType::Int64,
                &DataType::Boolean,
                &DataType::Utf8,
                &DataType::Int64,
                &DataType::Utf8
            ]
        );
        let first = dataset.next_batch(2).unwrap().unwrap();
        assert_eq!(first.num_rows(), 2);
        assert_eq!(first.schema(), schema);
        let second = dataset.next_batch(2).unwrap().unwrap();
        assert_eq!(second.num_rows(), 1);
        assert!(dataset.next_batch(2).unwrap().is_none(), "{}", backend.kind);
        let all = arrow_select::concat::concat_batches(&schema, &[first, second]).unwrap();
        for column in all.columns() {
            assert_eq!(column.null_count(), 0);
        }
        assert_eq!(
            all.column(0).as_primitive::<Int32Type>().values().to_vec(),
            [1, -1, 3]
        );
        assert_eq!(
            all.column(1)
                .as_primitive::<Float64Type>()
                .values()
                .to_vec(),
            [1.5, 9.5, -2.0]
        );
        // Text parsed; NULL and the empty string become the default.
        assert_eq!(
            all.column(2).as_primitive::<Int64Type>().values().to_vec(),
            [7, -7, -7]
        );
        assert_eq!(
            all.column(3)
                .as_boolean()
                .iter()
                .flatten()
                .collect::<Vec<_>>(),
            [true, true, false]
        );
        let texts = |i: usize| {
            all.column(i)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(4), ["2022-01-08", "none", "1970-01-01"]);
        assert_eq!(
            all.column(5).as_primitive::<Int64Type>().values().to_vec(),
            [1_700_000_000_123, 0, 0]
        );
        assert_eq!(texts(6), ["[1,2]", "[]", "[]"]);
    }
}

#[test]
fn a_wrong_number_of_defaults_fails_at_open_naming_both_counts() {
    let backend = common::local();
    let table = mixed_table(&backend);
    let err = open_err(
        &backend,
        &table,
        defaults()[..2].to_vec(),
        ReaderOptions::default().selected("i,d,s"),
    );
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_mentions(&err, &["2 record_defaults for 3 selected columns"]);
    let err = open_err(
        &backend,
        &table,
        defaults()[..2].to_vec(),
        ReaderOptions::default(),
    );
    assert_mentions(&err, &["2 record_defaults for 7 selected columns"]);
    let err = open_err(
        &backend,
        &table,
        defaults(),
        ReaderOptions::default().excluded("arr"),
    );
    assert_mentions(&err, &["7 record_defaults for 6 selected columns"]);
}

#[test]
fn an_impossible_conversion_fails_at_open_naming_column_type_and_target() {
    let backend = common::local();
    let table = mixed_table(&backend);
    let err = open_err(
        &backend,
        &table,
        vec![RecordDefault::Int64(0), RecordDefault::Int64(0)],
        ReaderOptions::default().selected("i,arr"),
    );
    assert_conversion(&err, ("arr", "array<bigint>", "int64", None));
    let message = err.to_string();
    assert_mentions(&message, &["`arr`", "array<bigint>", "int64"]);
    let err = open_err(
        &backend,
        &table,
        vec![RecordDefault::Float32(0.0)],
        ReaderOptions::default().selected("dt"),
    );
    assert_mentions(&err, &["`dt` (date) to float32"]);
}

#[test]
fn output_follows_the_selected_order() {
    let backend = common::local();
    let table = mixed_table(&backend);
    let mut dataset = open(
        &backend,
        &table,
        vec![RecordDefault::from(""), RecordDefault::Int64(0)],
        ReaderOptions::default().selected("s, i"),
    )
    .unwrap();
    let schema = dataset.arrow_schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["s", "i"]);
    assert_eq!(
        dataset
            .schema()
            .columns
            .iter()
            .map(|c| c.ty.clone())
            .collect::<Vec<_>>(),
        [OdpsType::String, OdpsType::BigInt]
    );
    let all = concat(&mut dataset);
    assert_eq!(
        all.column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect::<Vec<_>>(),
        ["7", "", ""]
    );
    assert_eq!(
        all.column(1).as_primitive::<Int64Type>().values().to_vec(),
        [1, 0, 3]
    );
}

#[test]
fn a_value_that_does_not_convert_names_its_slice_row() {
    for backend in [common::local(), common::rest()] {
        let schema = TableSchema::new(vec![Column::new("v", OdpsType::String)], vec![]).unwrap();
        let table = block(backend.store.create_table("bad", &schema));
        let values: Vec<V> = (0..10)
            .map(|i| V::Str(if i == 7 { "x7".into() } else { i.to_string() }))
            .collect();
        let batch =
            RecordBatch::try_from_iter(vec![("v", to_array(&OdpsType::String, &values))]).unwrap();
        block(
            backend
                .store
                .write_and_commit(&table, "", false, vec![batch]),
        );
        // Slice 1 of 2 holds table rows 5..10: the bad value is its row 2.
        let options = ReaderOptions::default().slice(1, 2);
        let mut dataset = open(&backend, &table, vec![RecordDefault::Int64(0)], options).unwrap();
        let ok = dataset.next_batch(2).unwrap().unwrap();
        assert_eq!(
            ok.column(0).as_primitive::<Int64Type>().values().to_vec(),
            [5, 6]
        );
        let err = dataset.next_batch(2).unwrap_err();
        assert_conversion(&err, ("v", "string", "int64", Some(2)));
        let message = err.to_string();
        assert_mentions(&message, &["at row 2", "\"x7\""]);
    }
}

#[test]
fn every_type_reads_as_text_and_as_bytes() {
    for backend in [common::local(), common::rest()] {
        let gen_ = DataGen::all_types(3);
        let table = block(backend.store.create_gen_table("every", &gen_, &[]));
        backend.append(&table, &gen_, "", 0..50);
        for default in [
            RecordDefault::from("-"),
            RecordDefault::Bytes(b"-".to_vec()),
        ] {
            // BINARY (random bytes here) becomes text only when it is UTF-8: read it as bytes.
            let defaults: Vec<RecordDefault> = gen_
                .columns()
                .iter()
                .map(|c| {
                    if c.ty == OdpsType::Binary {
                        RecordDefault::Bytes(vec![])
                    } else {
                        default.clone()
                    }
                })
                .collect();
            let mut dataset = open(
                &backend,
                &table,
                defaults.clone(),
                ReaderOptions::default().batch_rows(16),
            )
            .unwrap();
            let all = concat(&mut dataset);
            assert_eq!(all.num_rows(), 50, "{}", backend.kind);
            for (i, column) in all.columns().iter().enumerate() {
                assert_eq!(column.data_type(), &defaults[i].target_type().arrow_type());
                assert_eq!(column.null_count(), 0, "column {i}");
            }
        }
        let binary_as_text = open(
            &backend,
            &table,
            vec![RecordDefault::from("")],
            ReaderOptions::default().selected("c_binary"),
        )
        .unwrap()
        .find_map(Result::err)
        .expect("random bytes are not all UTF-8");
        assert_mentions(&binary_as_text, &["UTF-8"]);
        // And every numeric column (bools as 0/1) as float64.
        let numeric =
            "id,h,c_tinyint,c_smallint,c_int,c_bigint,c_float,c_double,c_boolean,c_decimal";
        let mut dataset = open(
            &backend,
            &table,
            vec![RecordDefault::Float64(0.0); 10],
            ReaderOptions::default().selected(numeric),
        )
        .unwrap();
        assert_eq!(concat(&mut dataset).num_rows(), 50);
    }
}

#[test]
fn partition_columns_can_be_selected_and_typed() {
    let backend = common::local();
    let (table, gen_) = backend.partitioned_table("parts");
    backend.append(&table, &gen_, "pt=3", 0..4);
    let mut dataset = open(
        &backend,
        &table,
        vec![RecordDefault::Int64(0), RecordDefault::Int32(0)],
        ReaderOptions::default().selected("id,pt"),
    )
    .unwrap();
    let all = concat(&mut dataset);
    assert_eq!(
        all.column(1).as_primitive::<Int32Type>().values().to_vec(),
        [3, 3, 3, 3]
    );
}

#[test]
fn the_dataset_resumes_from_a_saved_state() {
    let backend = common::local();
    let (table, _) = backend.table("resume", 0..100);
    let options = || ReaderOptions::default().selected("id").batch_rows(10);
    let mut dataset = open(&backend, &table, vec![RecordDefault::Int64(0)], options()).unwrap();
    dataset.next_batch(25).unwrap();
    let state = dataset.state();
    let mut again = open(&backend, &table, vec![RecordDefault::Int64(0)], options()).unwrap();
    again.restore(&state).unwrap();
    assert_eq!(again.position(), 25);
    let rest = concat(&mut again);
    assert_eq!(rest.num_rows(), 75);
    let first_id = rest.column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(first_id, 25);
}
