//! Tables to tensors: every MaxCompute numeric and boolean type read from a local warehouse
//! (and through the Storage API server and the Tunnel), the batch iterator's batch size,
//! drop-last, shuffle, epochs, exact resume and slices, and training on a linearly separable
//! table.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, RecordBatch,
};
use common::Warehouse;
use paiio::{ReaderOptions, RecordDefault, Shuffle, TableReader};
use paiio_storage::{Column, OdpsType as T};
use paiio_tch::{BatchOptions, Error, TensorBatches, column_to_tensor};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const N: usize = 1000;

/// A table with one column of each numeric and boolean MaxCompute type; every 7th row NULL
/// (except in `id`).
fn typed_table(w: &Warehouse, name: &str) -> String {
    fn opt<V>(i: usize, v: V) -> Option<V> {
        (i % 7 != 3).then_some(v)
    }
    let arrays: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from_iter_values(0..N as i64))),
        (
            "ti",
            Arc::new(Int8Array::from_iter(
                (0..N).map(|i| opt(i, (i % 256) as u8 as i8)),
            )),
        ),
        (
            "si",
            Arc::new(Int16Array::from_iter((0..N).map(|i| opt(i, i as i16 * -3)))),
        ),
        (
            "i",
            Arc::new(Int32Array::from_iter(
                (0..N).map(|i| opt(i, i as i32 * 1000)),
            )),
        ),
        (
            "bi",
            Arc::new(Int64Array::from_iter(
                (0..N).map(|i| opt(i, (i as i64) << 33)),
            )),
        ),
        (
            "fl",
            Arc::new(Float32Array::from_iter(
                (0..N).map(|i| opt(i, i as f32 / 4.0)),
            )),
        ),
        (
            "db",
            Arc::new(Float64Array::from_iter(
                (0..N).map(|i| opt(i, i as f64 * 0.1)),
            )),
        ),
        (
            "bo",
            Arc::new(BooleanArray::from_iter((0..N).map(|i| opt(i, i % 2 == 0)))),
        ),
    ];
    let batch = RecordBatch::try_from_iter(arrays).unwrap();
    w.create(
        name,
        vec![
            Column::new("id", T::BigInt),
            Column::new("ti", T::TinyInt),
            Column::new("si", T::SmallInt),
            Column::new("i", T::Int),
            Column::new("bi", T::BigInt),
            Column::new("fl", T::Float),
            Column::new("db", T::Double),
            Column::new("bo", T::Boolean),
        ],
        &[batch],
    )
}

fn ids(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

/// Every column of a table read from the warehouse equals its Arrow data as a tensor, and
/// NULLs are errors without defaults and defaults with them.
fn check_every_type(service: Arc<dyn paiio_storage::TableService>, uri: &str) {
    let mut reader =
        TableReader::open_with(service.clone(), uri, ReaderOptions::default()).unwrap();
    let batch = reader.read(N).unwrap();
    let kinds = [
        ("id", Kind::Int64),
        ("ti", Kind::Int8),
        ("si", Kind::Int16),
        ("i", Kind::Int),
        ("bi", Kind::Int64),
        ("fl", Kind::Float),
        ("db", Kind::Double),
        ("bo", Kind::Bool),
    ];
    for (name, kind) in kinds {
        let col = batch.column_by_name(name).unwrap();
        if name == "id" {
            let t = column_to_tensor(&batch, name, None).unwrap();
            assert_eq!(t.kind(), kind);
            assert_eq!(Vec::<i64>::try_from(&t).unwrap(), ids(&batch));
            continue;
        }
        // NULLs without a default: an error naming the column.
        let e = column_to_tensor(&batch, name, None).unwrap_err();
        assert!(
            matches!(&e, Error::Null { first_row: 3, .. }),
            "{name}: {e}"
        );
        // With a default of the column's own type (or its native kind), values are equal.
        let t = match name {
            "ti" => {
                let t = column_to_tensor(&batch, name, Some(&RecordDefault::Int32(-1))).unwrap();
                let want: Vec<i32> = col
                    .as_primitive::<arrow_array::types::Int8Type>()
                    .iter()
                    .map(|v| v.map_or(-1, i32::from))
                    .collect();
                assert_eq!(Vec::<i32>::try_from(&t).unwrap(), want);
                t
            }
            "si" => {
                let t = column_to_tensor(&batch, name, Some(&RecordDefault::Int64(-1))).unwrap();
                let want: Vec<i64> = col
                    .as_primitive::<arrow_array::types::Int16Type>()
                    .iter()
                    .map(|v| v.map_or(-1, i64::from))
                    .collect();
                assert_eq!(Vec::<i64>::try_from(&t).unwrap(), want);
                t
            }
            "i" => {
                let t = column_to_tensor(&batch, name, Some(&RecordDefault::Int32(-1))).unwrap();
                let want: Vec<i32> = col
                    .as_primitive::<arrow_array::types::Int32Type>()
                    .iter()
                    .map(|v| v.unwrap_or(-1))
                    .collect();
                assert_eq!(Vec::<i32>::try_from(&t).unwrap(), want);
                t
            }
            "bi" => {
                let t = column_to_tensor(&batch, name, Some(&RecordDefault::Int64(-1))).unwrap();
                let want: Vec<i64> = col
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|v| v.unwrap_or(-1))
                    .collect();
                assert_eq!(Vec::<i64>::try_from(&t).unwrap(), want);
                t
            }
            "fl" => {
                let t =
                    column_to_tensor(&batch, name, Some(&RecordDefault::Float32(-1.0))).unwrap();
                let want: Vec<f32> = col
                    .as_primitive::<arrow_array::types::Float32Type>()
                    .iter()
                    .map(|v| v.unwrap_or(-1.0))
                    .collect();
                assert_eq!(Vec::<f32>::try_from(&t).unwrap(), want);
                t
            }
            "db" => {
                let t =
                    column_to_tensor(&batch, name, Some(&RecordDefault::Float64(-1.0))).unwrap();
                let want: Vec<f64> = col
                    .as_primitive::<arrow_array::types::Float64Type>()
                    .iter()
                    .map(|v| v.unwrap_or(-1.0))
                    .collect();
                assert_eq!(Vec::<f64>::try_from(&t).unwrap(), want);
                t
            }
            "bo" => {
                let t = column_to_tensor(&batch, name, Some(&RecordDefault::Bool(true))).unwrap();
                let want: Vec<bool> = col.as_boolean().iter().map(|v| v.unwrap_or(true)).collect();
                assert_eq!(Vec::<bool>::try_from(&t).unwrap(), want);
                t
            }
            _ => unreachable!(),
        };
        assert_eq!(t.size(), vec![N as i64]);
    }

    // Typed and NULL-filled by record_defaults, then batched.
    let dataset = TableReader::open_with(
        service,
        uri,
        ReaderOptions::default().record_defaults(vec![
            RecordDefault::Int64(0),
            RecordDefault::Float32(-1.0),
            RecordDefault::Float32(-1.0),
            RecordDefault::Float32(-1.0),
            RecordDefault::Float64(-1.0),
            RecordDefault::Float32(-1.0),
            RecordDefault::Float64(-1.0),
            RecordDefault::Bool(false),
        ]),
    )
    .unwrap();
    let mut batches = TensorBatches::new(
        dataset,
        BatchOptions::default()
            .features("ti,si,i,fl,db,bo")
            .label("bi")
            .batch_size(300)
            .feature_kind(Kind::Double),
    )
    .unwrap();
    let mut seen = 0;
    for b in batches.by_ref() {
        let b = b.unwrap();
        let x = Vec::<Vec<f64>>::try_from(&b.features).unwrap();
        for (r, row) in x.iter().enumerate() {
            let i = b.position as usize + r;
            let null = i % 7 == 3;
            let want = if null {
                vec![-1.0, -1.0, -1.0, -1.0, -1.0, 0.0]
            } else {
                vec![
                    f64::from((i % 256) as u8 as i8),
                    f64::from(i as i16 * -3),
                    f64::from(i as i32 * 1000),
                    f64::from(i as f32 / 4.0),
                    i as f64 * 0.1,
                    if i.is_multiple_of(2) { 1.0 } else { 0.0 },
                ]
            };
            assert_eq!(row, &want, "row {i}");
        }
        let y = Vec::<f64>::try_from(b.labels.as_ref().unwrap()).unwrap();
        assert_eq!(y.len(), b.rows());
        seen += b.rows();
    }
    assert_eq!(seen, N);
}

#[test]
fn every_type_from_the_local_warehouse() {
    let w = Warehouse::new();
    let uri = typed_table(&w, "typed");
    check_every_type(w.service(), &uri);
}

#[test]
fn every_type_through_the_storage_api_server() {
    every_type_through_a_server(false);
}

#[test]
fn every_type_through_the_tunnel() {
    every_type_through_a_server(true);
}

fn every_type_through_a_server(tunnel: bool) {
    let w = Warehouse::new();
    let uri = typed_table(&w, "typed");
    let (client, server) = w.serve(tunnel);
    check_every_type(client, &uri);
    common::server_runtime().block_on(server.shutdown());
}

fn separable_reader(w: &Warehouse, uri: &str, options: ReaderOptions) -> TableReader {
    TableReader::open_with(w.service(), uri, options.selected("id,f1,f2,f3,f4,y")).unwrap()
}

fn epoch_ids(batches: &mut TensorBatches) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches.by_ref() {
        out.extend(ids(&b.unwrap().batch));
    }
    out
}

#[test]
fn batch_size_drop_last_and_every_row_once() {
    let w = Warehouse::new();
    let uri = w.separable("sep", N, 1);
    let options = BatchOptions::default().features("f1,f2,f3,f4").label("y");
    let mut batches = TensorBatches::new(
        separable_reader(&w, &uri, ReaderOptions::default()),
        options.clone().batch_size(128),
    )
    .unwrap();
    assert_eq!(batches.batches_per_epoch(), 8);
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    for b in batches.by_ref() {
        let b = b.unwrap();
        assert_eq!(b.features.size(), vec![b.rows() as i64, 4]);
        assert_eq!(b.features.kind(), Kind::Float);
        assert_eq!(b.labels.as_ref().unwrap().size(), vec![b.rows() as i64]);
        assert_eq!(b.position, all.len() as u64);
        sizes.push(b.rows());
        all.extend(ids(&b.batch));
    }
    assert_eq!(sizes, vec![128, 128, 128, 128, 128, 128, 128, 104]);
    assert_eq!(all, (0..N as i64).collect::<Vec<_>>());

    let mut batches = TensorBatches::new(
        separable_reader(&w, &uri, ReaderOptions::default()),
        options.clone().batch_size(128).drop_last(true),
    )
    .unwrap();
    assert_eq!(batches.batches_per_epoch(), 7);
    let sizes: Vec<usize> = batches.by_ref().map(|b| b.unwrap().rows()).collect();
    assert_eq!(sizes, vec![128; 7]);
    // The next epoch starts over.
    batches.set_epoch(1).unwrap();
    assert_eq!(batches.by_ref().count(), 7);

    assert!(
        TensorBatches::new(
            separable_reader(&w, &uri, ReaderOptions::default()),
            options.clone().batch_size(0)
        )
        .is_err()
    );
    let e = TensorBatches::new(
        separable_reader(&w, &uri, ReaderOptions::default()),
        BatchOptions::default().features("f1,nope"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("`nope`"), "{e}");
}

#[test]
fn deterministic_shuffle_epochs_and_exact_resume() {
    let w = Warehouse::new();
    let uri = w.separable("sep", N, 2);
    let shuffle = Shuffle {
        buffer_rows: 256,
        block_rows: 64,
        ..Shuffle::new(7, 0)
    };
    let open = || {
        TensorBatches::new(
            separable_reader(&w, &uri, ReaderOptions::default().shuffle(shuffle)),
            BatchOptions::default()
                .features("f1,f2,f3,f4")
                .batch_size(100),
        )
        .unwrap()
    };
    let mut a = open();
    let first = epoch_ids(&mut a);
    assert_eq!(
        first.iter().copied().collect::<BTreeSet<_>>().len(),
        N,
        "every row once"
    );
    assert_ne!(first, (0..N as i64).collect::<Vec<_>>(), "shuffled");
    a.set_epoch(1).unwrap();
    let second = epoch_ids(&mut a);
    assert_ne!(first, second, "another order per epoch");
    assert_eq!(
        second.iter().copied().collect::<BTreeSet<_>>(),
        first.iter().copied().collect::<BTreeSet<_>>()
    );
    // The same seed and epoch give the same order.
    let mut b = open();
    b.set_epoch(1).unwrap();
    assert_eq!(epoch_ids(&mut b), second);

    // Exact resume: save after 3 batches of epoch 1, restore in a new iterator.
    let mut c = open();
    c.set_epoch(1).unwrap();
    let mut head = Vec::new();
    for _ in 0..3 {
        head.extend(ids(&c.next().unwrap().unwrap().batch));
    }
    let state = c.state();
    assert_eq!(state.position, 300);
    let features_next = c.next().unwrap().unwrap().features;
    let mut d = open();
    d.restore(&state).unwrap();
    let resumed = d.next().unwrap().unwrap();
    assert_eq!(resumed.position, 300);
    assert!(resumed.features.equal(&features_next));
    let mut rest = ids(&resumed.batch);
    rest.extend(epoch_ids(&mut d));
    head.extend(rest);
    assert_eq!(head, second);
}

#[test]
fn two_slices_see_every_row_exactly_once() {
    let w = Warehouse::new();
    let uri = w.separable("sep", N + 1, 3);
    let mut all = Vec::new();
    for slice in 0..2 {
        let mut batches = TensorBatches::new(
            separable_reader(
                &w,
                &uri,
                ReaderOptions::default()
                    .slice(slice, 2)
                    .shuffle(Shuffle::new(1, 0)),
            ),
            BatchOptions::default()
                .features("f1,f2,f3,f4")
                .batch_size(64),
        )
        .unwrap();
        for epoch in 0..2 {
            batches.set_epoch(epoch).unwrap();
            let ids = epoch_ids(&mut batches);
            if epoch == 0 {
                all.extend(ids);
            }
        }
    }
    all.sort_unstable();
    assert_eq!(all, (0..=N as i64).collect::<Vec<_>>());
}

#[test]
fn device_placement() {
    let w = Warehouse::new();
    let uri = w.separable("sep", 100, 4);
    let device = Device::cuda_if_available();
    let mut batches = TensorBatches::new(
        separable_reader(&w, &uri, ReaderOptions::default()),
        BatchOptions::default()
            .features("f1,f2,f3,f4")
            .label("y")
            .label_kind(Kind::Float)
            .batch_size(40)
            .device(device),
    )
    .unwrap();
    let b = batches.next().unwrap().unwrap();
    assert_eq!(b.features.device(), device);
    assert_eq!(b.labels.as_ref().unwrap().device(), device);
    assert_eq!(b.labels.as_ref().unwrap().kind(), Kind::Float);
    // The same values as on the CPU.
    let cpu = paiio_tch::features(&b.batch, &["f1", "f2", "f3", "f4"], Kind::Float).unwrap();
    assert!(b.features.to_device(Device::Cpu).equal(&cpu));
}

#[test]
fn training_on_a_separable_table_reaches_95_percent() {
    tch::manual_seed(0);
    let w = Warehouse::new();
    let uri = w.separable("train", 4000, 5);
    let mut batches = TensorBatches::new(
        separable_reader(
            &w,
            &uri,
            ReaderOptions::default().shuffle(Shuffle {
                buffer_rows: 1024,
                block_rows: 256,
                ..Shuffle::new(3, 0)
            }),
        ),
        BatchOptions::default()
            .features("f1,f2,f3,f4")
            .label("y")
            .label_kind(Kind::Float)
            .batch_size(64),
    )
    .unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = nn::linear(vs.root(), 4, 1, Default::default());
    let mut opt = nn::Adam::default().build(&vs, 0.05).unwrap();
    let mut losses = Vec::new();
    let mut accuracy = 0.0;
    for epoch in 0..6 {
        batches.set_epoch(epoch).unwrap();
        let (mut sum, mut rows, mut correct) = (0.0, 0usize, 0i64);
        for b in batches.by_ref() {
            let b = b.unwrap();
            let y = b.labels.unwrap();
            let logits = model.forward(&b.features).squeeze_dim(1);
            let loss = logits.binary_cross_entropy_with_logits::<Tensor>(
                &y,
                None,
                None,
                tch::Reduction::Mean,
            );
            opt.backward_step(&loss);
            sum += loss.double_value(&[]) * b.batch.num_rows() as f64;
            rows += b.batch.num_rows();
            correct += logits
                .gt(0.0)
                .eq_tensor(&y.gt(0.5))
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        losses.push(sum / rows as f64);
        accuracy = correct as f64 / rows as f64;
    }
    eprintln!("losses {losses:?}, last-epoch accuracy {accuracy}");
    assert!(losses.last().unwrap() < &(losses[0] * 0.5), "{losses:?}");
    assert!(
        losses.windows(2).filter(|w| w[1] > w[0]).count() <= 1,
        "{losses:?}"
    );

    // Evaluated over the whole table after training.
    let _guard = tch::no_grad_guard();
    batches.set_epoch(0).unwrap();
    let (mut correct, mut rows) = (0i64, 0usize);
    for b in batches.by_ref() {
        let b = b.unwrap();
        let y = b.labels.unwrap();
        correct += model
            .forward(&b.features)
            .squeeze_dim(1)
            .gt(0.0)
            .eq_tensor(&y.gt(0.5))
            .sum(Kind::Int64)
            .int64_value(&[]);
        rows += b.batch.num_rows();
    }
    let accuracy = correct as f64 / rows as f64;
    assert!(accuracy > 0.95, "accuracy {accuracy}");
}
