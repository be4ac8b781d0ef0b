//! The benchmark table `bench.wide`: 8 numeric columns and a string column of deterministic
//! data, written once through the [`TableService`] API of a [`LocalWarehouse`] and reused.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::SchemaRef;
use futures::StreamExt;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::{
    ArrowOptions, Column, CreateTableOptions, OdpsType, ReadRange, ReadRequest, ReadSessionRequest,
    SplitOptions, TableId, TableSchema, TableService, WriteMode, WriteRequest, WriteSessionRequest,
};

/// Rows per written batch.
pub const BATCH_ROWS: u64 = 65_536;
/// Estimated bytes of one row as uncompressed Arrow: 8 × 8 bytes of numbers, a 4-byte string
/// offset and a string of 30 characters on average.
pub const EST_ROW_BYTES: f64 = 98.0;
/// Concurrent write streams when creating the table.
const WRITE_STREAMS: u64 = 4;

pub fn table_id() -> TableId {
    TableId::new("bench", None, "wide").expect("a valid table name")
}

pub fn schema() -> TableSchema {
    let mut columns = vec![Column::new("id", OdpsType::BigInt)];
    for i in 1..=4 {
        columns.push(Column::new(format!("f{i}"), OdpsType::Double));
    }
    for i in 1..=3 {
        columns.push(Column::new(format!("i{i}"), OdpsType::BigInt));
    }
    columns.push(Column::new("s", OdpsType::String));
    TableSchema::new(columns, vec![]).expect("a valid schema")
}

/// Rows for about `gb` × 10^9 bytes of uncompressed Arrow, rounded up to whole batches.
pub fn rows_for_gb(gb: f64) -> u64 {
    let rows = (gb * 1e9 / EST_ROW_BYTES).ceil() as u64;
    rows.div_ceil(BATCH_ROWS).max(1) * BATCH_ROWS
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// Rows `[start, start + n)`: a mix of sequential, repetitive and random values, so the
/// compressed sizes are neither trivial nor incompressible.
pub fn make_batch(schema: &SchemaRef, start: u64, n: u64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n).map(|i| i as i64).collect();
    let hash: Vec<u64> = (start..start + n).map(splitmix64).collect();
    let f1 = Float64Array::from_iter_values(ids.iter().map(|&i| i as f64 * 0.25));
    let f2 = Float64Array::from_iter_values(ids.iter().map(|&i| (i % 1000) as f64 / 8.0));
    let f3 = Float64Array::from_iter_values(
        hash.iter().map(|&h| (h >> 11) as f64 / (1u64 << 53) as f64),
    );
    let f4 = Float64Array::from_iter_values(ids.iter().map(|&i| (i % 86_400) as f64 * 1.5));
    let i1 = Int64Array::from_iter_values(ids.iter().map(|&i| i % 100));
    let i2 = Int64Array::from_iter_values(ids.iter().map(|&i| i / 7));
    let i3 = Int64Array::from_iter_values(hash.iter().map(|&h| (h >> 40) as i64));
    let mut s = StringBuilder::with_capacity(n as usize, n as usize * 32);
    let mut text = String::with_capacity(64);
    for (&i, &h) in ids.iter().zip(&hash) {
        use std::fmt::Write;
        text.clear();
        // 20 to 40 characters: a word, the id, and part of the hash.
        let _ = write!(
            text,
            "{}-{:010}-{:016x}{:016x}",
            WORDS[(h & 15) as usize],
            i,
            h,
            h.rotate_left(17)
        );
        let len = 20 + ((h >> 8) % 21) as usize;
        s.append_value(&text[..len.min(text.len())]);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(f1),
        Arc::new(f2),
        Arc::new(f3),
        Arc::new(f4),
        Arc::new(i1),
        Arc::new(i2),
        Arc::new(i3),
        Arc::new(s.finish()),
    ];
    RecordBatch::try_new(schema.clone(), columns).expect("batch matches the schema")
}

/// Makes sure `bench.wide` exists in the warehouse at `dir` with exactly `rows` rows,
/// (re)creating it otherwise. Returns whether it was written now.
pub async fn ensure_table(dir: &Path, rows: u64) -> Result<bool, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let warehouse = Arc::new(LocalWarehouse::open(dir)?);
    let table = table_id();
    let wanted = schema();
    if let Ok(info) = warehouse.describe_table(&table).await {
        if info.row_count == rows && info.schema == wanted {
            return Ok(false);
        }
        eprintln!(
            "bench: the cached table has {} rows, {rows} wanted: re-creating it",
            info.row_count
        );
        warehouse.drop_table(&table, true).await?;
    }
    let started = Instant::now();
    eprintln!(
        "bench: writing {rows} rows into bench.wide under {}",
        dir.display()
    );
    warehouse
        .create_table(
            &table,
            &wanted,
            CreateTableOptions {
                if_not_exists: false,
            },
        )
        .await?;
    let session = warehouse
        .create_write_session(&WriteSessionRequest {
            table: table.clone(),
            mode: WriteMode::Batch,
            ..WriteSessionRequest::new(table.clone())
        })
        .await?;
    let arrow_schema: SchemaRef = Arc::new(
        session
            .write_schema
            .to_arrow_schema(&ArrowOptions::default(), true),
    );
    let batches = rows.div_ceil(BATCH_ROWS);
    let mut tasks = Vec::new();
    for w in 0..WRITE_STREAMS.min(batches) {
        let (warehouse, table, schema) = (warehouse.clone(), table.clone(), arrow_schema.clone());
        let session_id = session.session_id.clone();
        tasks.push(tokio::spawn(async move {
            let stream = warehouse
                .create_write_stream(&table, &session_id, None, false)
                .await?;
            let mut b = w;
            while b < batches {
                let start = b * BATCH_ROWS;
                let n = BATCH_ROWS.min(rows - start);
                let schema2 = schema.clone();
                let batch = tokio::task::spawn_blocking(move || make_batch(&schema2, start, n))
                    .await
                    .expect("batch generation does not panic");
                warehouse
                    .write(WriteRequest {
                        table: table.clone(),
                        session_id: session_id.clone(),
                        stream_id: stream.stream_id.clone(),
                        version: stream.version,
                        row_offset: None,
                        access_token: None,
                        batches: vec![batch],
                    })
                    .await?;
                b += WRITE_STREAMS;
            }
            warehouse
                .close_write_stream(&table, &session_id, &stream.stream_id, stream.version)
                .await?;
            Ok::<(), paiio_storage::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let info = warehouse
        .commit_write_session(&table, &session.session_id, None)
        .await?;
    eprintln!(
        "bench: wrote {} rows (version {}) in {:.1} s",
        info.rows,
        info.version,
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}

/// In-process reads straight from the warehouse (no HTTP, no IPC encoding): the table read
/// as `streams` Parallelism splits at once. Returns (wall seconds, rows, process CPU seconds).
pub async fn read_in_process(
    dir: &Path,
    streams: u64,
    max_batch_rows: usize,
) -> Result<(f64, u64, f64), Box<dyn std::error::Error>> {
    let warehouse = Arc::new(LocalWarehouse::open(dir)?);
    let table = table_id();
    let mut request = ReadSessionRequest::new(table.clone());
    request.split_options = SplitOptions::parallelism(streams);
    let session = warehouse.create_read_session(&request).await?;
    let splits = session.splits_count.max(0) as u64;
    let cpu0 = crate::proc_stats::self_cpu_seconds();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (warehouse, table, next) = (warehouse.clone(), table.clone(), next.clone());
        let session_id = session.session_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut rows = 0u64;
            loop {
                let split = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if split >= splits {
                    break;
                }
                let mut request =
                    ReadRequest::new(table.clone(), session_id.clone(), ReadRange::Split(split));
                request.max_batch_rows = max_batch_rows;
                let mut stream = warehouse.read(&request).await?;
                while let Some(batch) = stream.next().await {
                    rows += batch?.num_rows() as u64;
                }
            }
            Ok::<u64, paiio_storage::Error>(rows)
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await??;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = crate::proc_stats::self_cpu_seconds() - cpu0;
    Ok((wall, rows, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_deterministic_and_about_the_estimated_size() {
        let schema: SchemaRef = Arc::new(schema().to_arrow_schema(&ArrowOptions::default(), true));
        let a = make_batch(&schema, 1000, 4096);
        assert_eq!(a, make_batch(&schema, 1000, 4096));
        let bytes: usize = a
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap())
            .sum();
        let per_row = bytes as f64 / 4096.0;
        assert!(
            (EST_ROW_BYTES * 0.9..EST_ROW_BYTES * 1.1).contains(&per_row),
            "{per_row} bytes per row"
        );
    }

    #[test]
    fn row_counts_are_whole_batches() {
        assert_eq!(rows_for_gb(0.0001) % BATCH_ROWS, 0);
        assert!(rows_for_gb(1.1) as f64 * EST_ROW_BYTES >= 1.1e9);
    }
}
