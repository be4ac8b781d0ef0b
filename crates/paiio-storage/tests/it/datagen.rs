//! The data generator checks what it claims to: deterministic rows, and any corrupted,
//! lost or duplicated value is caught.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use paiio_conformance::datagen::{
    DataGen, Value, assert_exactly_once, ids, reversed_columns, to_array, value_at,
};

#[test]
fn rows_are_deterministic_and_seeded() {
    let a = DataGen::all_types(7);
    assert_eq!(
        a.batch(0..50),
        DataGen::all_types(7).batch(0..50),
        "expected the same seed to give the same rows"
    );
    assert_ne!(
        a.batch(0..50),
        DataGen::all_types(8).batch(0..50),
        "expected another seed to give other rows"
    );
    assert_eq!(
        a.row(42),
        a.row(42),
        "expected a row to be a function of its id"
    );
    assert_eq!(
        a.batch_of(&[5, 3]).num_rows(),
        2,
        "expected a batch of the given ids"
    );
    assert_eq!(
        ids(&[a.batch_of(&[5, 3, 9])]),
        vec![5, 3, 9],
        "expected ids in the given order"
    );
}

#[test]
fn generated_rows_verify() {
    for g in [DataGen::all_types(1), DataGen::simple(1)] {
        let batches = g.batches(0..300, 64);
        assert_eq!(
            g.verify(&batches),
            Ok((0..300).collect()),
            "expected generated rows to verify"
        );
        assert_eq!(
            g.verify(&[reversed_columns(&batches[0])]),
            Ok((0..64).collect()),
            "expected column order not to matter"
        );
    }
}

#[test]
fn all_types_cover_nulls_and_nested_values() {
    let g = DataGen::all_types(3);
    let batch = g.batch(0..400);
    for (i, field) in batch.schema().fields().iter().enumerate() {
        let nulls = batch.column(i).null_count();
        if field.name() == "id" || field.name() == "h" {
            assert_eq!(nulls, 0, "expected no NULL in {}", field.name());
        } else {
            assert!(
                nulls > 0 && nulls < 400,
                "expected some but not all NULLs in {}, got {nulls}",
                field.name()
            );
        }
    }
    let rows: Vec<Vec<Value>> = (0..400).map(|id| g.row(id)).collect();
    let idx = |name: &str| g.columns().iter().position(|c| c.name == name).unwrap();
    assert!(rows.iter().any(|r| matches!(&r[idx("c_array")], Value::List(v) if v.len() > 1 && v.contains(&Value::Null))), "expected arrays with NULL elements");
    assert!(
        rows.iter()
            .any(|r| matches!(&r[idx("c_map")], Value::Map(v) if v.len() > 1)),
        "expected maps of several entries"
    );
    assert!(
        rows.iter()
            .any(|r| matches!(&r[idx("c_struct")], Value::Struct(v) if v[1].1 == Value::Null)),
        "expected structs with NULL fields"
    );
    assert!(
        rows.iter()
            .any(|r| matches!(&r[idx("c_string")], Value::Str(s) if !s.is_ascii())),
        "expected non-ASCII strings"
    );
}

/// Every value survives Arrow and back.
#[test]
fn values_round_trip_through_arrow() {
    let g = DataGen::all_types(4);
    for (i, column) in g.columns().iter().enumerate() {
        let values: Vec<Value> = (0..200).map(|id| g.row(id)[i].clone()).collect();
        let array = to_array(&column.ty, &values);
        let back: Vec<Value> = (0..200)
            .map(|r| value_at(array.as_ref(), r).unwrap())
            .collect();
        assert_eq!(
            back, values,
            "expected column {} to round-trip through Arrow",
            column.name
        );
    }
}

fn replace(batch: &RecordBatch, name: &str, array: ArrayRef) -> RecordBatch {
    let i = batch.schema().index_of(name).unwrap();
    let mut columns = batch.columns().to_vec();
    columns[i] = array;
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// Replacing any one column with other rows' values is caught: by the hash, and by the
/// comparison with the generator.
#[test]
fn any_corrupted_column_is_caught() {
    let g = DataGen::all_types(5);
    let good = g.batch(0..50);
    let other = g.batch(1000..1050);
    for field in good.schema().fields() {
        let name = field.name();
        let bad = replace(&good, name, other.column_by_name(name).unwrap().clone());
        let e = g
            .verify(std::slice::from_ref(&bad))
            .expect_err(&format!("expected corrupted column {name} to be caught"));
        if name != "id" && name != "h" {
            assert!(
                e.contains("hash"),
                "expected a hash mismatch for corrupted {name}: {e}"
            );
        }
        if name != "h" {
            assert!(
                g.check_values(&[bad]).is_err(),
                "expected check_values to catch corrupted column {name}"
            );
        }
    }
    // One value of one row, deep inside a struct.
    let mut values: Vec<Value> = (0..50)
        .map(|id| {
            g.row(id)[g
                .columns()
                .iter()
                .position(|c| c.name == "c_struct")
                .unwrap()]
            .clone()
        })
        .collect();
    let target = values
        .iter()
        .position(|v| matches!(v, Value::Struct(f) if f[0].1 != Value::Null))
        .unwrap();
    if let Value::Struct(f) = &mut values[target] {
        f[0].1 = Value::Int(12345678);
    }
    let ty = g
        .columns()
        .iter()
        .find(|c| c.name == "c_struct")
        .unwrap()
        .ty
        .clone();
    let bad = replace(&good, "c_struct", to_array(&ty, &values));
    let e = g
        .verify(&[bad])
        .expect_err("expected one corrupted struct field to be caught");
    assert!(
        e.contains(&format!("(id {target})")),
        "expected the error to name row id {target}: {e}"
    );
}

/// Lossless unit changes verify; lossy ones (or wrong values) do not.
#[test]
fn timestamps_compare_across_units() {
    let g = DataGen::all_types(6);
    let batch = g.batch(0..40);
    let cast = |name: &str, unit: TimeUnit| {
        let column = batch.column_by_name(name).unwrap();
        let cast = arrow_cast::cast(column, &DataType::Timestamp(unit, None)).unwrap();
        let i = batch.schema().index_of(name).unwrap();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[i] = Field::new(name, cast.data_type().clone(), true);
        let mut columns = batch.columns().to_vec();
        columns[i] = cast;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    };
    assert!(
        g.verify(&[cast("c_datetime", TimeUnit::Microsecond)])
            .is_ok(),
        "expected DATETIME in micro to verify"
    );
    assert!(
        g.verify(&[cast("c_datetime", TimeUnit::Nanosecond)])
            .is_ok(),
        "expected DATETIME in nano to verify"
    );
    assert!(
        g.verify(&[cast("c_timestamp", TimeUnit::Microsecond)])
            .is_err(),
        "expected TIMESTAMP truncated to micro to fail"
    );
    let large = arrow_cast::cast(
        batch.column_by_name("c_string").unwrap(),
        &DataType::LargeUtf8,
    )
    .unwrap();
    let i = batch.schema().index_of("c_string").unwrap();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[i] = Field::new("c_string", DataType::LargeUtf8, true);
    let mut columns = batch.columns().to_vec();
    columns[i] = large;
    let large = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    assert!(
        g.verify(&[large]).is_ok(),
        "expected large_utf8 strings to verify"
    );
}

#[test]
fn exactly_once_accepts_any_order() {
    assert_exactly_once(&[3, 1, 2], 1..4, "shuffled");
    assert_exactly_once(&[], std::iter::empty(), "empty");
}

#[test]
#[should_panic(expected = "missing 1 [2]")]
fn exactly_once_catches_a_lost_row() {
    assert_exactly_once(&[1, 3], 1..4, "lost");
}

#[test]
#[should_panic(expected = "duplicated 1 [3]")]
fn exactly_once_catches_a_duplicate() {
    assert_exactly_once(&[1, 2, 3, 3], 1..4, "duplicate");
}

#[test]
#[should_panic(expected = "unexpected 1 [9]")]
fn exactly_once_catches_an_extra_row() {
    assert_exactly_once(&[1, 2, 3, 9], 1..4, "extra");
}
