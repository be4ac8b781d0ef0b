//! Arrow arrays to tensors: every supported type, NULLs, offsets, feature matrices, labels,
//! zero-copy views; tensors equal the Arrow data.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float16Array, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, RecordBatch, StringArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use paiio_tch::{
    Error, RecordDefault, array_as_tensor, array_to_tensor, column_to_tensor, features,
    features_with_defaults, labels,
};
use tch::{Kind, Tensor};

fn arr(a: impl Array + 'static) -> ArrayRef {
    Arc::new(a)
}

fn values<T: tch::kind::Element + Copy>(t: &Tensor) -> Vec<T> {
    Vec::<T>::try_from(t).unwrap()
}

#[test]
fn every_numeric_and_boolean_type_without_nulls() {
    let t = array_to_tensor(&arr(Int8Array::from(vec![-128, 0, 127])), None).unwrap();
    assert_eq!((t.kind(), t.size()), (Kind::Int8, vec![3]));
    assert_eq!(values::<i8>(&t), vec![-128, 0, 127]);

    let t = array_to_tensor(&arr(Int16Array::from(vec![i16::MIN, 7, i16::MAX])), None).unwrap();
    assert_eq!(t.kind(), Kind::Int16);
    assert_eq!(values::<i16>(&t), vec![i16::MIN, 7, i16::MAX]);

    let t = array_to_tensor(&arr(Int32Array::from(vec![i32::MIN, -1, i32::MAX])), None).unwrap();
    assert_eq!(t.kind(), Kind::Int);
    assert_eq!(values::<i32>(&t), vec![i32::MIN, -1, i32::MAX]);

    let t = array_to_tensor(&arr(Int64Array::from(vec![i64::MIN, 42, i64::MAX])), None).unwrap();
    assert_eq!(t.kind(), Kind::Int64);
    assert_eq!(values::<i64>(&t), vec![i64::MIN, 42, i64::MAX]);

    let t = array_to_tensor(&arr(UInt8Array::from(vec![0, 200, 255])), None).unwrap();
    assert_eq!(t.kind(), Kind::Uint8);
    assert_eq!(values::<u8>(&t), vec![0, 200, 255]);

    let t = array_to_tensor(&arr(UInt16Array::from(vec![0, 65535])), None).unwrap();
    assert_eq!(t.kind(), Kind::Int);
    assert_eq!(values::<i32>(&t), vec![0, 65535]);

    let t = array_to_tensor(&arr(UInt32Array::from(vec![0, u32::MAX])), None).unwrap();
    assert_eq!(t.kind(), Kind::Int64);
    assert_eq!(values::<i64>(&t), vec![0, u32::MAX as i64]);

    let t = array_to_tensor(&arr(UInt64Array::from(vec![0, i64::MAX as u64])), None).unwrap();
    assert_eq!(t.kind(), Kind::Int64);
    assert_eq!(values::<i64>(&t), vec![0, i64::MAX]);

    let halves = Float16Array::from_iter_values([1.5f32, -2.0, 65504.0].map(half::f16::from_f32));
    let t = array_to_tensor(&arr(halves), None).unwrap();
    assert_eq!(t.kind(), Kind::Half);
    assert_eq!(
        values::<f32>(&t.to_kind(Kind::Float)),
        vec![1.5, -2.0, 65504.0]
    );

    let t = array_to_tensor(
        &arr(Float32Array::from(vec![1.25, f32::MIN, f32::MAX])),
        None,
    )
    .unwrap();
    assert_eq!(t.kind(), Kind::Float);
    assert_eq!(values::<f32>(&t), vec![1.25, f32::MIN, f32::MAX]);

    let t = array_to_tensor(&arr(Float64Array::from(vec![0.1, -1e300, f64::MAX])), None).unwrap();
    assert_eq!(t.kind(), Kind::Double);
    assert_eq!(values::<f64>(&t), vec![0.1, -1e300, f64::MAX]);

    // Bit-packed booleans, across a byte boundary.
    let bools: Vec<bool> = (0..19).map(|i| i % 3 == 0).collect();
    let t = array_to_tensor(&arr(BooleanArray::from(bools.clone())), None).unwrap();
    assert_eq!(t.kind(), Kind::Bool);
    assert_eq!(values::<bool>(&t), bools);

    // NaN and infinities pass through.
    let t = array_to_tensor(
        &arr(Float64Array::from(vec![f64::NAN, f64::INFINITY])),
        None,
    )
    .unwrap();
    let v = values::<f64>(&t);
    assert!(v[0].is_nan() && v[1] == f64::INFINITY);
}

#[test]
fn uint64_beyond_int64_fails_naming_the_row() {
    let e = array_to_tensor(&arr(UInt64Array::from(vec![1, u64::MAX])), None).unwrap_err();
    assert!(matches!(e, Error::Value { row: 1, .. }), "{e}");
}

#[test]
fn sliced_arrays_respect_their_offset() {
    let a = arr(Int64Array::from((0..100).collect::<Vec<i64>>())).slice(37, 5);
    assert_eq!(
        values::<i64>(&array_to_tensor(&a, None).unwrap()),
        vec![37, 38, 39, 40, 41]
    );
    let bools: Vec<bool> = (0..40).map(|i| i % 5 == 1).collect();
    let a = arr(BooleanArray::from(bools.clone())).slice(3, 17);
    assert_eq!(
        values::<bool>(&array_to_tensor(&a, None).unwrap()),
        bools[3..20].to_vec()
    );
    let a = arr(Int32Array::from(vec![
        Some(1),
        None,
        Some(3),
        None,
        Some(5),
    ]))
    .slice(1, 3);
    let t = array_to_tensor(&a, Some(&RecordDefault::Int32(-1))).unwrap();
    assert_eq!(values::<i32>(&t), vec![-1, 3, -1]);
}

#[test]
fn empty_arrays_give_empty_tensors() {
    let t = array_to_tensor(&arr(Float32Array::from(Vec::<f32>::new())), None).unwrap();
    assert_eq!((t.kind(), t.size()), (Kind::Float, vec![0]));
    let t = array_to_tensor(&arr(BooleanArray::from(Vec::<bool>::new())), None).unwrap();
    assert_eq!((t.kind(), t.size()), (Kind::Bool, vec![0]));
}

#[test]
fn nulls_without_a_default_are_an_error_naming_count_and_row() {
    let a = arr(Float64Array::from(vec![Some(1.0), Some(2.0), None, None]));
    match array_to_tensor(&a, None).unwrap_err() {
        Error::Null {
            count, first_row, ..
        } => assert_eq!((count, first_row), (2, 2)),
        e => panic!("{e}"),
    }
    let batch = RecordBatch::try_from_iter([("price", a)]).unwrap();
    let e = column_to_tensor(&batch, "price", None).unwrap_err();
    assert!(e.to_string().contains("`price`"), "{e}");
    assert!(e.to_string().contains("2 NULL"), "{e}");
    let b = arr(BooleanArray::from(vec![Some(true), None]));
    assert!(matches!(
        array_to_tensor(&b, None).unwrap_err(),
        Error::Null {
            count: 1,
            first_row: 1,
            ..
        }
    ));
}

#[test]
fn nulls_are_filled_with_a_default_of_the_same_type() {
    let cases: Vec<(ArrayRef, RecordDefault)> = vec![
        (
            arr(Int32Array::from(vec![Some(1), None, Some(3)])),
            RecordDefault::Int32(-7),
        ),
        (
            arr(Int64Array::from(vec![None, Some(2), None])),
            RecordDefault::Int64(9),
        ),
        (
            arr(Float32Array::from(vec![Some(0.5), None])),
            RecordDefault::Float32(1.5),
        ),
        (
            arr(Float64Array::from(vec![None, Some(-0.25)])),
            RecordDefault::Float64(3.0),
        ),
        (
            arr(BooleanArray::from(vec![Some(false), None, Some(true)])),
            RecordDefault::Bool(true),
        ),
    ];
    let t = array_to_tensor(&cases[0].0, Some(&cases[0].1)).unwrap();
    assert_eq!(values::<i32>(&t), vec![1, -7, 3]);
    let t = array_to_tensor(&cases[1].0, Some(&cases[1].1)).unwrap();
    assert_eq!(values::<i64>(&t), vec![9, 2, 9]);
    let t = array_to_tensor(&cases[2].0, Some(&cases[2].1)).unwrap();
    assert_eq!(values::<f32>(&t), vec![0.5, 1.5]);
    let t = array_to_tensor(&cases[3].0, Some(&cases[3].1)).unwrap();
    assert_eq!(values::<f64>(&t), vec![3.0, -0.25]);
    let t = array_to_tensor(&cases[4].0, Some(&cases[4].1)).unwrap();
    assert_eq!(values::<bool>(&t), vec![false, true, true]);
}

#[test]
fn a_default_of_another_type_follows_the_record_defaults_rules() {
    // TINYINT -> int32 (widen), NULL -> default.
    let t = array_to_tensor(
        &arr(Int8Array::from(vec![Some(-3), None])),
        Some(&RecordDefault::Int32(5)),
    )
    .unwrap();
    assert_eq!((t.kind(), values::<i32>(&t)), (Kind::Int, vec![-3, 5]));
    // BIGINT -> float32 (round).
    let t = array_to_tensor(
        &arr(Int64Array::from(vec![Some(1 << 40), None])),
        Some(&RecordDefault::Float32(0.5)),
    )
    .unwrap();
    assert_eq!(values::<f32>(&t), vec![(1i64 << 40) as f32, 0.5]);
    // BOOLEAN -> float64 (0/1).
    let t = array_to_tensor(
        &arr(BooleanArray::from(vec![Some(true), Some(false), None])),
        Some(&RecordDefault::Float64(-1.0)),
    )
    .unwrap();
    assert_eq!(values::<f64>(&t), vec![1.0, 0.0, -1.0]);
    // DOUBLE -> int64 (narrow): whole numbers only, the failing row named.
    let t = array_to_tensor(
        &arr(Float64Array::from(vec![Some(2.0), None])),
        Some(&RecordDefault::Int64(0)),
    )
    .unwrap();
    assert_eq!(values::<i64>(&t), vec![2, 0]);
    let e = array_to_tensor(
        &arr(Float64Array::from(vec![Some(2.0), Some(2.5)])),
        Some(&RecordDefault::Int64(0)),
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Paiio(paiio::Error::Conversion { row: Some(1), .. })
        ),
        "{e}"
    );
    // BIGINT -> int32 out of range fails.
    assert!(
        array_to_tensor(
            &arr(Int64Array::from(vec![1i64 << 40])),
            Some(&RecordDefault::Int32(0))
        )
        .is_err()
    );
    // STRING -> float32 (parse; empty text is missing).
    let t = array_to_tensor(
        &arr(StringArray::from(vec![Some(" 1.5"), None, Some("")])),
        Some(&RecordDefault::Float32(-1.0)),
    )
    .unwrap();
    assert_eq!(values::<f32>(&t), vec![1.5, -1.0, -1.0]);
    // Unsigned columns too: UINT8 -> int64.
    let t = array_to_tensor(
        &arr(UInt8Array::from(vec![Some(255), None])),
        Some(&RecordDefault::Int64(-1)),
    )
    .unwrap();
    assert_eq!(values::<i64>(&t), vec![255, -1]);
    // A text default is no tensor.
    assert!(matches!(
        array_to_tensor(
            &arr(Int32Array::from(vec![1])),
            Some(&RecordDefault::String("x".into()))
        )
        .unwrap_err(),
        Error::Unsupported { .. }
    ));
    // Text without a default is no tensor either.
    assert!(matches!(
        array_to_tensor(&arr(StringArray::from(vec!["1"])), None).unwrap_err(),
        Error::Unsupported { .. }
    ));
}

fn mixed_batch() -> RecordBatch {
    RecordBatch::try_from_iter([
        ("a", arr(Int8Array::from(vec![1, -2, 3]))),
        ("b", arr(Float64Array::from(vec![0.5, 1.5, -2.5]))),
        ("c", arr(BooleanArray::from(vec![true, false, true]))),
        ("d", arr(Int64Array::from(vec![10, 20, 30]))),
        ("e", arr(UInt32Array::from(vec![7, 8, 9]))),
        (
            "f",
            arr(Float16Array::from_iter_values(
                [1.0f32, 2.0, 3.0].map(half::f16::from_f32),
            )),
        ),
        (
            "n",
            arr(Float32Array::from(vec![Some(1.0), None, Some(3.0)])),
        ),
    ])
    .unwrap()
}

#[test]
fn a_feature_matrix_from_several_columns() {
    let batch = mixed_batch();
    let m = features(&batch, &["a", "b", "c", "d", "e", "f"], Kind::Float).unwrap();
    assert_eq!((m.kind(), m.size()), (Kind::Float, vec![3, 6]));
    let rows = Vec::<Vec<f32>>::try_from(&m).unwrap();
    assert_eq!(
        rows,
        vec![
            vec![1.0, 0.5, 1.0, 10.0, 7.0, 1.0],
            vec![-2.0, 1.5, 0.0, 20.0, 8.0, 2.0],
            vec![3.0, -2.5, 1.0, 30.0, 9.0, 3.0]
        ]
    );
    // Column order is the order asked for; names are case-insensitive.
    let m = features(&batch, &["D", "a"], Kind::Int64).unwrap();
    assert_eq!(
        Vec::<Vec<i64>>::try_from(&m).unwrap(),
        vec![vec![10, 1], vec![20, -2], vec![30, 3]]
    );
    let m = features(&batch, &["b"], Kind::Double).unwrap();
    assert_eq!(
        Vec::<Vec<f64>>::try_from(&m).unwrap(),
        vec![vec![0.5], vec![1.5], vec![-2.5]]
    );
    // Other kinds go through float64.
    let m = features(&batch, &["a", "c"], Kind::Half).unwrap();
    assert_eq!(m.kind(), Kind::Half);
    // NULLs need defaults; unknown columns are named.
    assert!(matches!(
        features(&batch, &["a", "n"], Kind::Float).unwrap_err(),
        Error::Null { .. }
    ));
    let e = features(&batch, &["zz"], Kind::Float).unwrap_err();
    assert!(e.to_string().contains("`zz`"), "{e}");
    let m = features_with_defaults(
        &batch,
        &["a", "n"],
        &[RecordDefault::Int32(0), RecordDefault::Float32(-1.0)],
        Kind::Float,
    )
    .unwrap();
    assert_eq!(
        Vec::<Vec<f32>>::try_from(&m).unwrap(),
        vec![vec![1.0, 1.0], vec![-2.0, -1.0], vec![3.0, 3.0]]
    );
}

#[test]
fn labels_in_the_kind_asked_for() {
    let batch = mixed_batch();
    let y = labels(&batch, "d", None).unwrap();
    assert_eq!(
        (y.kind(), values::<i64>(&y)),
        (Kind::Int64, vec![10, 20, 30])
    );
    let y = labels(&batch, "c", Some(Kind::Float)).unwrap();
    assert_eq!(values::<f32>(&y), vec![1.0, 0.0, 1.0]);
}

#[test]
fn zero_copy_views_share_the_arrow_buffer() {
    let a = arr(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0]));
    // SAFETY: `a` outlives `t`, and nothing writes through `t`.
    let t = unsafe { array_as_tensor(&a).unwrap().unwrap() };
    let ptr = a
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .values()
        .as_ptr();
    assert_eq!(t.data_ptr() as *const f32, ptr);
    assert_eq!(values::<f32>(&t), vec![1.0, 2.0, 3.0, 4.0]);
    // A slice is a view at its offset.
    let s = a.slice(1, 2);
    // SAFETY: as above.
    let t = unsafe { array_as_tensor(&s).unwrap().unwrap() };
    assert_eq!(values::<f32>(&t), vec![2.0, 3.0]);
    drop(t);
    // The one-copy conversion does not share it.
    let c = array_to_tensor(&a, None).unwrap();
    assert_ne!(c.data_ptr() as *const f32, ptr);
    // Layouts that need a conversion have no view.
    // SAFETY: nothing is created.
    unsafe {
        assert!(
            array_as_tensor(&arr(BooleanArray::from(vec![true])))
                .unwrap()
                .is_none()
        );
        assert!(
            array_as_tensor(&arr(Int32Array::from(vec![Some(1), None])))
                .unwrap()
                .is_none()
        );
        assert!(
            array_as_tensor(&arr(UInt16Array::from(vec![1])))
                .unwrap()
                .is_none()
        );
        let h = arr(Float16Array::from_iter_values([half::f16::ONE]));
        assert_eq!(array_as_tensor(&h).unwrap().unwrap().kind(), Kind::Half);
    }
}
