//! TableWriter: indices, type checks, atomic close, abort on drop, slice_id slots, partitions,
//! over the local warehouse and over REST.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use paiio::Error;
use paiio::writer::{TableWriter, Value, WriterOptions};
use paiio_storage::error::ObjectKind;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::types::{Column, OdpsType, TableSchema};
use paiio_storage::{SessionStatus, TableId, TableService};

use crate::common::{self, TestBackend, assert_mentions, block};

fn schema(columns: &str, partitions: &str) -> TableSchema {
    TableSchema::new(
        TableSchema::parse_columns(columns).unwrap(),
        TableSchema::parse_columns(partitions).unwrap(),
    )
    .unwrap()
}

/// Creates the table `name` of those columns and partition columns.
fn create(backend: &TestBackend, name: &str, columns: &str, partitions: &str) -> TableId {
    block(
        backend
            .store
            .create_table(name, &schema(columns, partitions)),
    )
}

/// `id bigint, name string, score double, flag boolean`.
fn people(backend: &TestBackend) -> TableId {
    create(
        backend,
        "people",
        "id bigint, name string, score double, flag boolean",
        "",
    )
}

fn open(backend: &TestBackend, uri: &str, slice_id: u64) -> paiio::Result<TableWriter> {
    TableWriter::open_with(
        backend.service.clone(),
        uri,
        slice_id,
        WriterOptions::default(),
    )
}

/// A writer on the whole of `table` with `options`.
fn open_table(
    backend: &TestBackend,
    table: &TableId,
    slice_id: u64,
    options: WriterOptions,
) -> TableWriter {
    TableWriter::open_with(
        backend.service.clone(),
        &backend.uri(table, ""),
        slice_id,
        options,
    )
    .unwrap()
}

/// A batch of the named columns.
fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

/// Asserts that `result` failed with a message containing every one of `needles`.
#[track_caller]
fn check(result: paiio::Result<()>, needles: &[&str]) {
    let message = result.unwrap_err().to_string();
    for needle in needles {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
}

fn small_batches() -> WriterOptions {
    WriterOptions {
        flush_rows: 3,
        ..WriterOptions::default()
    }
}

/// Every committed row of `table` (partition columns included), as `a|b|c` text, sorted.
fn rows(backend: &TestBackend, table: &TableId) -> Vec<String> {
    let batches = block(backend.store.read_table_with_partitions(table, &[]));
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in &batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out.sort();
    out
}

fn row_count(backend: &TestBackend, table: &TableId) -> u64 {
    block(backend.service.describe_table(table))
        .unwrap()
        .row_count
}

fn both_backends() -> Vec<TestBackend> {
    vec![common::local(), common::rest()]
}

#[test]
fn rows_go_to_the_listed_columns_and_the_rest_are_null() {
    for backend in both_backends() {
        let table = people(&backend);
        let uri = backend.uri(&table, "");
        let mut writer = open(&backend, &uri, 0).unwrap();
        writer
            .write_rows(
                &[
                    vec![Value::Float(1.5), Value::Int(7)],
                    vec![Value::Null, Value::Int(8)],
                ],
                &[2, 0],
            )
            .unwrap();
        writer
            .write_rows(&[vec!["x".into(), true.into(), 9.into()]], &[1, 3, 0])
            .unwrap();
        assert_eq!(writer.rows_written(), 3);
        let info = writer.close().unwrap();
        assert_eq!(info.rows, 3, "{}", backend.kind);
        assert_eq!(
            rows(&backend, &table),
            ["7|NULL|1.5|NULL", "8|NULL|NULL|NULL", "9|x|NULL|true"],
            "{}",
            backend.kind
        );
    }
}

#[test]
fn batches_map_by_indices_and_convert_safe_types() {
    let backend = common::local();
    let table = create(&backend, "typed", "a int, b bigint, c float, d string", "");
    let mut writer = open(&backend, &backend.uri(&table, ""), 0).unwrap();
    let batch = batch(vec![
        ("x", Arc::new(StringArray::from(vec!["p", "q"])) as ArrayRef),
        ("y", Arc::new(Int64Array::from(vec![1, -2])) as ArrayRef), // into INT: checked narrowing
        ("z", Arc::new(Int32Array::from(vec![10, 20])) as ArrayRef), // into BIGINT: widening
        (
            "w",
            Arc::new(Float64Array::from(vec![0.5, 2.0])) as ArrayRef,
        ), // into FLOAT
    ]);
    writer.write(&batch, &[3, 0, 1, 2]).unwrap();
    writer.close().unwrap();
    assert_eq!(rows(&backend, &table), ["-2|20|2.0|q", "1|10|0.5|p"]);
}

#[test]
fn type_errors_name_the_column_and_write_nothing() {
    let backend = common::local();
    let table = create(
        &backend,
        "strict",
        "id bigint not null, small int, name string, score double, ok boolean",
        "",
    );
    let mut writer = open(&backend, &backend.uri(&table, ""), 0).unwrap();
    // Text into a BIGINT column.
    check(
        writer.write_rows(&[vec!["abc".into()]], &[0]),
        &["`id`", "bigint", "string data"],
    );
    // Overflow into INT.
    check(
        writer.write_rows(&[vec![1.into(), 3_000_000_000i64.into()]], &[0, 1]),
        &["`small`", "3000000000"],
    );
    // A fraction into an integer column.
    check(
        writer.write_rows(&[vec![2.5.into()]], &[0]),
        &["`id`", "2.5", "whole"],
    );
    // A number into a BOOLEAN column, an int into a STRING column.
    check(
        writer.write_rows(&[vec![1.into(), 1.into()]], &[0, 4]),
        &["`ok`", "boolean"],
    );
    check(
        writer.write_rows(&[vec![1.into(), 5.into()]], &[0, 2]),
        &["`name`", "string"],
    );
    // Mixed kinds in one column name the row.
    check(
        writer.write_rows(&[vec![1.into()], vec!["x".into()]], &[0]),
        &["`id`", "row 1", "string"],
    );
    // NOT NULL: left out, or given a NULL.
    check(
        writer.write_rows(&[vec![1.5.into()]], &[3]),
        &["`id`", "NOT NULL"],
    );
    check(
        writer.write_rows(&[vec![Value::Null]], &[0]),
        &["`id`", "NOT NULL"],
    );
    // Indices: out of range, repeated, a count that does not match, a row of the wrong size.
    check(
        writer.write_rows(&[vec![1.into()]], &[5]),
        &["index 5", "5 columns"],
    );
    check(
        writer.write_rows(&[vec![1.into(), 2.into()]], &[0, 0]),
        &["`id`", "twice"],
    );
    check(
        writer.write_rows(&[vec![1.into(), 2.into()]], &[0]),
        &["row 0", "2 values for 1 indices"],
    );
    let batch = batch(vec![("a", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
    check(writer.write(&batch, &[0, 1]), &["2 indices for 1 columns"]);
    // The failures wrote nothing; the writer is still usable.
    writer
        .write_rows(&[vec![1.into(), true.into()]], &[0, 4])
        .unwrap();
    writer.close().unwrap();
    assert_eq!(rows(&backend, &table), ["1|NULL|NULL|NULL|true"]);
}

#[test]
fn nothing_is_visible_before_close_and_everything_after() {
    for backend in both_backends() {
        let table = people(&backend);
        let mut writer = open_table(&backend, &table, 0, small_batches());
        for i in 0..10 {
            writer
                .write_rows(&[vec![i.into(), format!("n{i}").into()]], &[0, 1])
                .unwrap();
        }
        // Nine rows have been sent in three requests; none is visible.
        assert_eq!(row_count(&backend, &table), 0, "{}", backend.kind);
        assert!(rows(&backend, &table).is_empty());
        let info = writer.close().unwrap();
        assert_eq!(info.rows, 10);
        assert_eq!(row_count(&backend, &table), 10, "{}", backend.kind);
        // Closing again answers the same; writing after close is refused.
        assert_eq!(writer.close().unwrap(), info);
        let err = writer.write_rows(&[vec![1.into()]], &[0]).unwrap_err();
        assert!(matches!(err, Error::Closed(_)), "{err:?}");
    }
}

#[test]
fn many_flushes_keep_every_row_in_order() {
    let backend = common::local();
    let table = people(&backend);
    let options = WriterOptions {
        flush_rows: 100,
        ..WriterOptions::default()
    };
    let mut writer = open_table(&backend, &table, 3, options);
    let ids: Vec<i64> = (0..1050).collect();
    let batch = batch(vec![(
        "id",
        Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
    )]);
    writer.write(&batch, &[0]).unwrap();
    writer.write(&batch.slice(0, 7), &[0]).unwrap();
    assert_eq!(writer.close().unwrap().rows, 1057);
    let batches = block(backend.store.read_table(&table));
    let got: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    let mut want = ids;
    want.extend(0..7);
    assert_eq!(got, want);
}

#[test]
fn dropping_an_unclosed_writer_aborts_it() {
    for backend in both_backends() {
        let table = people(&backend);
        let uri = backend.uri(&table, "");
        let mut writer =
            TableWriter::open_with(backend.service.clone(), &uri, 0, small_batches()).unwrap();
        for i in 0..5 {
            writer.write_rows(&[vec![i.into()]], &[0]).unwrap();
        }
        let session_id = writer.session_id().to_string();
        drop(writer);
        assert_eq!(row_count(&backend, &table), 0, "{}", backend.kind);
        let session = block(backend.warehouse.get_write_session(&table, &session_id)).unwrap();
        assert_ne!(session.status, SessionStatus::Committed, "{}", backend.kind);
        assert!(
            block(
                backend
                    .warehouse
                    .commit_write_session(&table, &session_id, None)
            )
            .is_err(),
            "an aborted session cannot be committed ({})",
            backend.kind
        );
        // The slot is free again.
        let mut again = open(&backend, &uri, 0).unwrap();
        again.write_rows(&[vec![42.into()]], &[0]).unwrap();
        again.close().unwrap();
        assert_eq!(rows(&backend, &table), ["42|NULL|NULL|NULL"]);
    }
}

#[test]
fn explicit_abort_discards_everything() {
    let backend = common::local();
    let table = people(&backend);
    let mut writer = open_table(&backend, &table, 0, small_batches());
    writer
        .write_rows(
            &(0..7).map(|i| vec![Value::Int(i)]).collect::<Vec<_>>(),
            &[0],
        )
        .unwrap();
    writer.abort().unwrap();
    assert!(matches!(writer.close().unwrap_err(), Error::Closed(_)));
    assert_eq!(row_count(&backend, &table), 0);
}

#[test]
fn writers_with_different_slice_ids_write_one_table_at_once() {
    for backend in both_backends() {
        let table = people(&backend);
        let uri = backend.uri(&table, "");
        let handles: Vec<_> = (0..4u64)
            .map(|slice| {
                let (service, uri) = (backend.service.clone(), uri.clone());
                std::thread::spawn(move || {
                    let mut writer =
                        TableWriter::open_with(service, &uri, slice, small_batches()).unwrap();
                    for i in 0..10 {
                        let id = slice as i64 * 100 + i;
                        writer
                            .write_rows(&[vec![id.into(), format!("s{slice}").into()]], &[0, 1])
                            .unwrap();
                    }
                    writer.close().unwrap()
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap().rows, 10);
        }
        let got = rows(&backend, &table);
        assert_eq!(got.len(), 40, "{}", backend.kind);
        for slice in 0..4 {
            assert_eq!(
                got.iter()
                    .filter(|r| r.contains(&format!("|s{slice}|")))
                    .count(),
                10
            );
        }
    }
}

fn assert_slot_taken(result: paiio::Result<TableWriter>, slice: u64, table: &TableId) {
    let err = result.expect_err("a second live writer with the same slice_id must fail");
    assert!(
        matches!(
            &err,
            Error::Storage(paiio_storage::Error::AlreadyExists {
                kind: ObjectKind::WriterSlot,
                ..
            })
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert_mentions(&message, &[&format!("slice_id {slice}")]);
    assert!(message.contains(&table.table), "{message}");
}

#[test]
fn two_live_writers_with_one_slice_id_fail_clearly() {
    for backend in both_backends() {
        let table = people(&backend);
        let uri = backend.uri(&table, "");
        let mut first = open(&backend, &uri, 5).unwrap();
        assert_slot_taken(open(&backend, &uri, 5), 5, &table);
        // Other slots are free, and the slot is free again once the first writer closes.
        let mut other = open(&backend, &uri, 6).unwrap();
        first.write_rows(&[vec![1.into()]], &[0]).unwrap();
        first.close().unwrap();
        other.close().unwrap();
        let mut again = open(&backend, &uri, 5).unwrap();
        again.write_rows(&[vec![2.into()]], &[0]).unwrap();
        again.close().unwrap();
        assert_eq!(row_count(&backend, &table), 2, "{}", backend.kind);
    }
}

#[test]
fn the_slot_lock_holds_across_warehouse_instances() {
    let backend = common::local();
    let table = people(&backend);
    let uri = backend.uri(&table, "");
    let _first = open(&backend, &uri, 0).unwrap();
    // Another instance over the same directory (as another process would open it).
    let other: Arc<dyn TableService> =
        Arc::new(LocalWarehouse::open(backend.dir.path().join("warehouse")).unwrap());
    assert_slot_taken(
        TableWriter::open_with(other.clone(), &uri, 0, WriterOptions::default()),
        0,
        &table,
    );
    let mut second = TableWriter::open_with(other, &uri, 1, WriterOptions::default()).unwrap();
    second.write_rows(&[vec![1.into()]], &[0]).unwrap();
    second.close().unwrap();
}

#[test]
fn a_missing_table_is_not_found_and_leaves_no_trace() {
    let backend = common::local();
    let uri = format!("odps://{}/tables/nope", common::PROJECT);
    let err = open(&backend, &uri, 0).unwrap_err();
    assert!(
        matches!(err, Error::Storage(paiio_storage::Error::NotFound { .. })),
        "{err:?}"
    );
    assert!(
        !backend
            .dir
            .path()
            .join("warehouse")
            .join(common::PROJECT)
            .join("default")
            .join("nope")
            .exists()
    );
}

#[test]
fn writing_to_a_static_partition() {
    for backend in both_backends() {
        let table = create(
            &backend,
            "parted",
            "id bigint, name string",
            "pt string, region string",
        );
        let mut writer = open(&backend, &backend.uri(&table, "pt=a/region=x"), 0).unwrap();
        writer
            .write_rows(
                &[vec![1.into(), "one".into()], vec![2.into(), Value::Null]],
                &[0, 1],
            )
            .unwrap();
        // The partition columns are fixed by the URI: writing them is refused.
        check(
            writer.write_rows(&[vec![3.into(), "b".into()]], &[0, 2]),
            &["`pt`", "fixed by the URI"],
        );
        writer.close().unwrap();
        // A writer on another partition with the same slice_id is another slot.
        let mut other = open(&backend, &backend.uri(&table, "pt=b/region=x"), 0).unwrap();
        other.write_rows(&[vec![3.into()]], &[0]).unwrap();
        other.close().unwrap();
        assert_eq!(
            rows(&backend, &table),
            ["1|one|a|x", "2|NULL|a|x", "3|NULL|b|x"],
            "{}",
            backend.kind
        );
    }
}

#[test]
fn dynamic_partitions_come_from_indices_past_the_data_columns() {
    let backend = common::local();
    let table = create(
        &backend,
        "dyn",
        "id bigint, name string",
        "pt string, region string",
    );
    // The URI fixes the first level; `region` (column 3) comes from the data.
    let mut writer = open(&backend, &backend.uri(&table, "pt=a"), 0).unwrap();
    writer
        .write_rows(
            &[
                vec![1.into(), "x".into()],
                vec![2.into(), "y".into()],
                vec![3.into(), "x".into()],
            ],
            &[0, 3],
        )
        .unwrap();
    writer.close().unwrap();
    // No partition in the URI: both levels from the data.
    let mut writer = open(&backend, &backend.uri(&table, ""), 1).unwrap();
    let batch = batch(vec![
        ("region", Arc::new(StringArray::from(vec!["z"])) as ArrayRef),
        ("pt", Arc::new(StringArray::from(vec!["c"])) as ArrayRef),
        ("id", Arc::new(Int64Array::from(vec![4])) as ArrayRef),
    ]);
    writer.write(&batch, &[3, 2, 0]).unwrap();
    writer.close().unwrap();
    assert_eq!(
        rows(&backend, &table),
        ["1|NULL|a|x", "2|NULL|a|y", "3|NULL|a|x", "4|NULL|c|z"]
    );
    let partitions = block(backend.service.list_partitions(&table)).unwrap();
    assert_eq!(partitions.len(), 3);
}

#[test]
fn bools_and_bytes_round_trip() {
    let backend = common::local();
    let table = create(&backend, "bin", "b binary, s string, f boolean", "");
    let mut writer = open(&backend, &backend.uri(&table, ""), 0).unwrap();
    writer
        .write_rows(
            &[vec![
                Value::Bytes(vec![0, 255]),
                Value::Bytes(b"ok".to_vec()),
                false.into(),
            ]],
            &[0, 1, 2],
        )
        .unwrap();
    // Text into BINARY is its UTF-8 bytes; bytes that are not UTF-8 cannot go to STRING.
    writer.write_rows(&[vec!["hi".into()]], &[0]).unwrap();
    check(
        writer.write_rows(&[vec![Value::Bytes(vec![0xff])]], &[1]),
        &["`s`", "UTF-8"],
    );
    let batch = batch(vec![(
        "f",
        Arc::new(BooleanArray::from(vec![true])) as ArrayRef,
    )]);
    writer.write(&batch, &[2]).unwrap();
    writer.close().unwrap();
    assert_eq!(
        rows(&backend, &table),
        ["00ff|ok|false", "6869|NULL|NULL", "NULL|NULL|true"]
    );
}

#[test]
fn columns_are_named_in_any_type_error() {
    let backend = common::local();
    let table = create(
        &backend,
        "cols",
        "d date, t datetime, m map<string,bigint>",
        "",
    );
    let mut writer = open(&backend, &backend.uri(&table, ""), 0).unwrap();
    // Text parses into DATE and DATETIME.
    writer
        .write_rows(
            &[vec!["2024-05-06".into(), "2024-05-06T07:08:09".into()]],
            &[0, 1],
        )
        .unwrap();
    check(
        writer.write_rows(&[vec!["not a date".into()]], &[0]),
        &["`d`"],
    );
    check(
        writer.write_rows(&[vec![1.into()]], &[2]),
        &["`m`", "map<string,bigint>"],
    );
    writer.close().unwrap();
    assert_eq!(row_count(&backend, &table), 1);
}

#[test]
fn the_schema_and_columns_are_visible() {
    let backend = common::local();
    let table = create(&backend, "meta", "id bigint", "pt string");
    let writer = open(&backend, &backend.uri(&table, "pt=1"), 9).unwrap();
    assert_eq!(writer.slice_id(), 9);
    assert_eq!(writer.schema().column_names(), ["id", "pt"]);
    assert_eq!(
        writer.schema().columns,
        vec![Column::new("id", OdpsType::BigInt)]
    );
    assert_eq!(writer.uri().partition.to_string(), "pt=1");
}

#[test]
fn flush_sends_at_exactly_once_offsets_without_committing() {
    for backend in both_backends() {
        let table = people(&backend);
        let mut writer = open(&backend, &backend.uri(&table, ""), 4).unwrap();
        writer
            .write_rows(&[vec![1.into()], vec![2.into()]], &[0])
            .unwrap();
        writer.flush().unwrap();
        writer.write_rows(&[vec![3.into()]], &[0]).unwrap();
        writer.flush().unwrap();
        let stream = block(
            backend
                .warehouse
                .get_write_stream(&table, writer.session_id(), "4"),
        )
        .unwrap();
        assert!(stream.exactly_once, "{}", backend.kind);
        assert_eq!(stream.row_offset, 3, "{}", backend.kind);
        assert_eq!(row_count(&backend, &table), 0);
        writer.close().unwrap();
        assert_eq!(
            rows(&backend, &table),
            ["1|NULL|NULL|NULL", "2|NULL|NULL|NULL", "3|NULL|NULL|NULL"]
        );
    }
}
