//! `train_tch`: trains a small model (logistic regression, or an MLP with `--hidden N`) on this
//! worker's shard of a MaxCompute table with tch, and writes its predictions back.
//!
//! ```text
//! # once: a linearly separable table (id BIGINT, f1..fk DOUBLE, y BIGINT), then exit
//! train_tch --generate 100000 --table odps://p/tables/train --features f1,f2,f3,f4
//! # each worker (RANK/WORLD_SIZE, or --slice-id/--slice-count):
//! RANK=0 WORLD_SIZE=2 train_tch --table odps://p/tables/train --features f1,f2,f3,f4 \
//!     --label y --output odps://p/tables/predictions --epochs 5
//! ```
//!
//! The backend is the one configured by `ODPS_CONFIG_FILE_PATH` (a MaxCompute / Storage API
//! endpoint, or `warehouse=DIR` for the embedded local warehouse). Every epoch prints the
//! mean loss, the training accuracy and the throughput; predictions `(id, prediction)` are
//! written to `--output` with a `TableWriter` whose slice id is this worker's slice id (the
//! output table is created if the backend has a catalog and it does not exist).

use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use clap::Parser;
use paiio::{ReaderOptions, RecordDefault, Shuffle, TableReader, TableWriter, WriterOptions};
use paiio_storage::{Column, CreateTableOptions, OdpsType, TableSchema, TableService, TableUri};
use paiio_tch::{BatchOptions, TensorBatches};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
#[command(about = "Train a small tch model on a MaxCompute table shard and write predictions")]
struct Args {
    /// The training table.
    #[arg(long)]
    table: String,
    /// Feature columns (numeric), comma-separated.
    #[arg(long, default_value = "f1,f2,f3,f4")]
    features: String,
    /// The label column (0/1).
    #[arg(long, default_value = "y")]
    label: String,
    /// The row id column, written with each prediction.
    #[arg(long, default_value = "id")]
    id_column: String,
    /// Where predictions go: `(id BIGINT, prediction DOUBLE)`.
    #[arg(long)]
    output: Option<String>,
    /// Create `--table` with this many linearly separable rows, then exit.
    #[arg(long)]
    generate: Option<u64>,
    /// This worker's slice (default: $RANK, else 0).
    #[arg(long)]
    slice_id: Option<u64>,
    /// Number of slices (default: $WORLD_SIZE, else 1).
    #[arg(long)]
    slice_count: Option<u64>,
    #[arg(long, default_value_t = 5)]
    epochs: u64,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Hidden units of a one-hidden-layer MLP; 0 = logistic regression.
    #[arg(long, default_value_t = 0)]
    hidden: i64,
    /// Seed of the shuffle and of the model's initialisation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Do not shuffle.
    #[arg(long)]
    no_shuffle: bool,
    /// Prefetch streams (0 = automatic).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// cpu, cuda, or auto (cuda when available).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the ids each epoch saw to DIR/epoch-E-slice-S.txt (one per line), to check
    /// sharding.
    #[arg(long)]
    ids_out: Option<std::path::PathBuf>,
}

fn env_u64(name: &str) -> BoxResult<Option<u64>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            Ok(Some(v.trim().parse().map_err(|e| {
                format!("${name}={v:?} is not a number: {e}")
            })?))
        }
        _ => Ok(None),
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("train_tch: error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> BoxResult<()> {
    let features: Vec<String> = args
        .features
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if features.is_empty() {
        return Err("--features names no column".into());
    }
    if let Some(rows) = args.generate {
        let service = paiio::backend::open_default_service()?;
        generate(
            service,
            &args.table,
            &features,
            &args.label,
            &args.id_column,
            rows,
            args.seed,
        )?;
        println!("generated {rows} rows in {}", args.table);
        return Ok(());
    }
    let slice_id = args.slice_id.or(env_u64("RANK")?).unwrap_or(0);
    let slice_count = args.slice_count.or(env_u64("WORLD_SIZE")?).unwrap_or(1);
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        "auto" => Device::cuda_if_available(),
        other => return Err(format!("--device {other}: expected cpu, cuda or auto").into()),
    };
    tch::manual_seed(args.seed as i64);

    // The typed reader: features as float32, the label as float32, the id as int64
    // (NULLs become 0 by the record_defaults rules).
    let mut selected = features.clone();
    selected.push(args.label.clone());
    selected.push(args.id_column.clone());
    let mut defaults = vec![RecordDefault::Float32(0.0); features.len() + 1];
    defaults.push(RecordDefault::Int64(0));
    let mut options = ReaderOptions::default()
        .selected(&selected.join(","))
        .slice(slice_id, slice_count)
        .threads(args.threads)
        .record_defaults(defaults);
    if !args.no_shuffle {
        options = options.shuffle(Shuffle {
            buffer_rows: 16384,
            block_rows: 1024,
            ..Shuffle::new(args.seed, 0)
        });
    }
    let reader = TableReader::open(args.table.as_str(), options)?;
    let mut batches = TensorBatches::new(
        reader,
        BatchOptions::default()
            .features(&features.join(","))
            .label(&args.label)
            .batch_size(args.batch_size)
            .device(device),
    )?;
    println!(
        "slice {slice_id}/{slice_count}: {} rows of {} ({} features), device {device:?}, \
         {} prefetch threads",
        batches.row_count(),
        args.table,
        features.len(),
        batches.reader().num_threads()
    );

    let vs = nn::VarStore::new(device);
    let n_in = features.len() as i64;
    let model: Box<dyn Module> = if args.hidden > 0 {
        Box::new(
            nn::seq()
                .add(nn::linear(
                    vs.root() / "l1",
                    n_in,
                    args.hidden,
                    Default::default(),
                ))
                .add_fn(|x| x.relu())
                .add(nn::linear(
                    vs.root() / "l2",
                    args.hidden,
                    1,
                    Default::default(),
                )),
        )
    } else {
        Box::new(nn::linear(vs.root() / "l1", n_in, 1, Default::default()))
    };
    let mut opt = nn::Adam::default().build(&vs, args.lr)?;

    for epoch in 0..args.epochs {
        batches.set_epoch(epoch)?;
        let start = Instant::now();
        let (mut rows, mut n_batches, mut loss_sum, mut correct) = (0usize, 0usize, 0.0f64, 0i64);
        let mut seen: Vec<i64> = Vec::new();
        for batch in batches.by_ref() {
            let batch = batch?;
            if args.ids_out.is_some() {
                let ids = column(&batch.batch, &args.id_column)?;
                seen.extend(ids.as_primitive::<Int64Type>().values().iter());
            }
            let y = batch.labels.as_ref().ok_or("no labels")?;
            let logits = model.forward(&batch.features).squeeze_dim(1);
            let loss = logits.binary_cross_entropy_with_logits::<Tensor>(
                y,
                None,
                None,
                tch::Reduction::Mean,
            );
            opt.backward_step(&loss);
            let n = batch.rows();
            loss_sum += loss.double_value(&[]) * n as f64;
            correct += logits
                .detach()
                .gt(0.0)
                .eq_tensor(&y.gt(0.5))
                .sum(Kind::Int64)
                .int64_value(&[]);
            rows += n;
            n_batches += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        if let Some(dir) = &args.ids_out {
            std::fs::create_dir_all(dir)?;
            let text: String = seen.iter().map(|id| format!("{id}\n")).collect();
            std::fs::write(
                dir.join(format!("epoch-{epoch}-slice-{slice_id}.txt")),
                text,
            )?;
        }
        println!(
            "epoch {}/{} slice {slice_id}: loss {:.4} accuracy {:.2}% rows {rows} batches \
             {n_batches} {:.0} rows/s {:.1} batches/s ({secs:.2} s)",
            epoch + 1,
            args.epochs,
            loss_sum / rows.max(1) as f64,
            100.0 * correct as f64 / rows.max(1) as f64,
            rows as f64 / secs,
            n_batches as f64 / secs,
        );
    }

    if let Some(output) = &args.output {
        let service = paiio::backend::open_default_service()?;
        let written = predict(
            service,
            &mut batches,
            model.as_ref(),
            output,
            slice_id,
            &args.id_column,
        )?;
        println!("slice {slice_id}: wrote {written} predictions to {output}");
    }
    Ok(())
}

/// Writes `(id, sigmoid(logit))` for every row of the slice to `output` under `slice_id`.
fn predict(
    service: Arc<dyn TableService>,
    batches: &mut TensorBatches,
    model: &dyn Module,
    output: &str,
    slice_id: u64,
    id_column: &str,
) -> BoxResult<u64> {
    let uri = TableUri::parse(output)?;
    let schema = TableSchema::new(
        vec![
            Column::new("id", OdpsType::BigInt),
            Column::new("prediction", OdpsType::Double),
        ],
        vec![],
    )?;
    // A backend with a catalog (the local warehouse) creates the table if it is missing;
    // elsewhere it must exist.
    let created = paiio::runtime::block_on(service.create_table(
        &uri.table,
        &schema,
        CreateTableOptions {
            if_not_exists: true,
        },
    ))?;
    if let Err(e) = created {
        eprintln!("note: the output table was not created ({e}); writing to it as it is");
    }
    let mut writer = TableWriter::open_uri(service, uri, slice_id, WriterOptions::default())?;
    let id_index = column_position(writer.schema(), "id")?;
    let prediction_index = column_position(writer.schema(), "prediction")?;
    let _guard = tch::no_grad_guard();
    batches.set_epoch(0)?;
    for batch in batches.by_ref() {
        let batch = batch?;
        let p = model.forward(&batch.features).squeeze_dim(1).sigmoid();
        let p: Vec<f32> = Vec::try_from(p.to_device(Device::Cpu).to_kind(Kind::Float))?;
        let ids = column(&batch.batch, id_column)?;
        let ids: Int64Array = ids.as_primitive::<Int64Type>().clone();
        let predictions = Float64Array::from_iter_values(p.into_iter().map(f64::from));
        let out = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("prediction", Arc::new(predictions) as ArrayRef),
        ])?;
        writer.write(&out, &[id_index, prediction_index])?;
    }
    let rows = writer.rows_written();
    writer.close()?;
    Ok(rows)
}

fn column_position(schema: &TableSchema, name: &str) -> BoxResult<usize> {
    schema
        .all_columns()
        .position(|c| c.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("the output table has no column `{name}`").into())
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> BoxResult<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("the batch has no column `{name}`").into())
}

/// splitmix64: a small deterministic generator for the synthetic table.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// Creates `table` with `rows` rows `(id, f1..fk, y)` where `y = [w·x + b > 0]` for a fixed
/// random `w`, `b`, keeping a margin of 0.05 so the classes are linearly separable.
fn generate(
    service: Arc<dyn TableService>,
    table: &str,
    features: &[String],
    label: &str,
    id_column: &str,
    rows: u64,
    seed: u64,
) -> BoxResult<()> {
    let uri = TableUri::parse(table)?;
    let mut columns = vec![Column::new(id_column, OdpsType::BigInt)];
    columns.extend(features.iter().map(|f| Column::new(f, OdpsType::Double)));
    columns.push(Column::new(label, OdpsType::BigInt));
    let schema = TableSchema::new(columns, vec![])?;
    paiio::runtime::block_on(service.create_table(&uri.table, &schema, Default::default()))??;
    let mut writer = TableWriter::open_uri(service, uri, 0, WriterOptions::default())?;
    let mut rng = SplitMix(seed);
    let k = features.len();
    let w: Vec<f64> = (0..k).map(|_| rng.unit()).collect();
    let b = rng.unit() * 0.1;
    let indices: Vec<usize> = (0..k + 2).collect();
    let chunk = 65536u64;
    let mut id = 0u64;
    while id < rows {
        let n = chunk.min(rows - id) as usize;
        let mut xs: Vec<Vec<f64>> = (0..k).map(|_| Vec::with_capacity(n)).collect();
        let mut ys = Vec::with_capacity(n);
        for _ in 0..n {
            loop {
                let x: Vec<f64> = (0..k).map(|_| rng.unit()).collect();
                let s: f64 = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + b;
                if s.abs() >= 0.05 {
                    for (col, v) in xs.iter_mut().zip(x) {
                        col.push(v);
                    }
                    ys.push(i64::from(s > 0.0));
                    break;
                }
            }
        }
        let mut arrays: Vec<(String, ArrayRef)> = vec![(
            id_column.to_string(),
            Arc::new(Int64Array::from_iter_values(
                id as i64..(id as i64 + n as i64),
            )),
        )];
        for (f, col) in features.iter().zip(xs) {
            arrays.push((f.clone(), Arc::new(Float64Array::from(col))));
        }
        arrays.push((label.to_string(), Arc::new(Int64Array::from(ys))));
        writer.write(&RecordBatch::try_from_iter(arrays)?, &indices)?;
        id += n as u64;
    }
    writer.close()?;
    Ok(())
}
