//! Capabilities of read sessions: projections, partitions, split modes, resumption, Arrow
//! options, snapshots, expiry and preview.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, TimeUnit};

use paiio_storage::error::Error;
use paiio_storage::service::{
    ReadRange, ReadRequest, ReadSession, ReadSessionRequest, SplitMode, SplitOptions,
};
use paiio_storage::types::ArrowOptions;
use paiio_storage::uri::TableId;

use super::datagen::{DataGen, Value, assert_exactly_once, ids, value_at};
use super::tables::{PT_REGION, fill};
use super::{Backend, field_types, row_count, skip, spec};

/// The standard partition layout: ids 0..10 in `pt=a,region=1`, 10..25 in `pt=a,region=2`,
/// 25..33 in `pt=b,region=1`.
const LAYOUT: &[(&str, &str, i64, std::ops::Range<i64>)] = &[
    ("pt=a,region=1", "a", 1, 0..10),
    ("pt=a,region=2", "a", 2, 10..25),
    ("pt=b,region=1", "b", 1, 25..33),
];

async fn fill_layout(b: &Backend, table: &TableId, g: &DataGen) {
    for (partition, _, _, range) in LAYOUT {
        fill(b, table, g, partition, range.clone()).await;
    }
}

fn layout_of(id: i64) -> (&'static str, i64) {
    LAYOUT
        .iter()
        .find(|l| l.3.contains(&id))
        .map(|l| (l.1, l.2))
        .expect("id of the layout")
}

/// Checks that the columns `pt` (and `region`, when present) hold each row's partition.
fn check_layout_values(batches: &[RecordBatch], context: &str) {
    for batch in batches {
        let id_col = batch
            .column_by_name("id")
            .unwrap_or_else(|| panic!("{context}: expected an id column"));
        for row in 0..batch.num_rows() {
            let Ok(Value::Int(id)) = value_at(id_col.as_ref(), row) else {
                panic!("{context}: expected a BIGINT id")
            };
            let (pt, region) = layout_of(id);
            if let Some(c) = batch.column_by_name("pt") {
                assert_eq!(
                    value_at(c.as_ref(), row),
                    Ok(Value::Str(pt.into())),
                    "{context}: expected pt of id {id} to be {pt:?}"
                );
            }
            if let Some(c) = batch.column_by_name("region") {
                assert_eq!(
                    value_at(c.as_ref(), row),
                    Ok(Value::Int(region)),
                    "{context}: expected region of id {id} to be {region}"
                );
            }
        }
    }
}

fn field_names(batches: &[RecordBatch]) -> Vec<String> {
    let first = batches.first().expect("expected at least one batch");
    for b in batches {
        assert_eq!(
            b.schema(),
            first.schema(),
            "expected every batch of a read to have the same schema"
        );
    }
    first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn column_names(session: &ReadSession) -> (Vec<String>, Vec<String>) {
    (
        session
            .schema
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect(),
        session
            .schema
            .partition_columns
            .iter()
            .map(|c| c.name.clone())
            .collect(),
    )
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A read session request for the given data and partition columns of `table`.
fn columns_request(table: &TableId, data: &[&str], partition: &[&str]) -> ReadSessionRequest {
    ReadSessionRequest {
        required_data_columns: strings(data),
        required_partition_columns: strings(partition),
        ..ReadSessionRequest::new(table.clone())
    }
}

async fn simple_table(b: &Backend, prefix: &str, seed: u64, rows: i64) -> (TableId, DataGen) {
    let g = DataGen::simple(seed);
    let table = b.create_gen_table(prefix, &g, &[]).await;
    if rows > 0 {
        fill(b, &table, &g, "", 0..rows).await;
    }
    (table, g)
}

/// Required data columns: the order follows the request; names are case-insensitive; an
/// unknown column is `NotFound`.
pub async fn read_required_columns(b: &Backend) {
    let (table, g) = simple_table(b, "req_cols", 10, 20).await;
    let session = b
        .read_session(&columns_request(&table, &["s", "id", "h"], &[]))
        .await;
    assert_eq!(
        column_names(&session),
        (strings(&["s", "id", "h"]), vec![]),
        "expected the session schema in request order"
    );
    let batches = b.read_session_rows(&session).await.unwrap();
    assert_eq!(
        field_names(&batches),
        strings(&["s", "id", "h"]),
        "expected batches in request order"
    );
    let got = g
        .check_values(&batches)
        .unwrap_or_else(|e| panic!("expected the projected values to match: {e}"));
    assert_exactly_once(&got, 0..20, "projected read");

    let session = b
        .read_session(&columns_request(&table, &["D", "Id"], &[]))
        .await;
    let batches = b.read_session_rows(&session).await.unwrap();
    assert_eq!(
        field_names(&batches),
        strings(&["d", "id"]),
        "expected column names matched case-insensitively, as in the table"
    );
    g.check_values(&batches)
        .unwrap_or_else(|e| panic!("expected the projected values to match: {e}"));

    let all = b.table_session(&table).await;
    assert_eq!(
        column_names(&all).0,
        strings(&["id", "h", "s", "d"]),
        "expected all data columns in table order when none are required"
    );

    let request = columns_request(&table, &["id", "nope"], &[]);
    let e = expect_err!(
        b.service.create_read_session(&request).await,
        Error::NotFound { .. },
        "NotFound for unknown column `nope`"
    );
    assert!(
        e.to_string().contains("nope"),
        "expected the error to name column `nope`: {e}"
    );
}

/// Required partition columns are delivered as data, after the data columns, with each
/// row's partition values typed as the columns.
pub async fn read_partition_columns(b: &Backend) {
    let g = DataGen::simple(11);
    let table = b.create_gen_table("part_cols", &g, PT_REGION).await;
    fill_layout(b, &table, &g).await;

    let request = columns_request(&table, &["id", "h", "s", "d"], &["region", "pt"]);
    let session = b.read_session(&request).await;
    assert_eq!(
        column_names(&session),
        (strings(&["id", "h", "s", "d"]), strings(&["region", "pt"])),
        "expected the session to list the partition columns in request order"
    );
    let batches = b.read_session_rows(&session).await.unwrap();
    assert_eq!(
        field_names(&batches),
        strings(&["id", "h", "s", "d", "region", "pt"]),
        "expected partition columns after data columns"
    );
    let schema = batches[0].schema();
    assert_eq!(
        schema.field(4).data_type(),
        &DataType::Int64,
        "expected region (bigint) as Int64"
    );
    assert_eq!(
        schema.field(5).data_type(),
        &DataType::Utf8,
        "expected pt (string) as Utf8"
    );
    assert_exactly_once(
        &g.verified_ids(&batches, "partition column read"),
        0..33,
        "read with partition columns",
    );
    check_layout_values(&batches, "partition columns as data");

    let plain = b.table_session(&table).await;
    let batches = b.read_session_rows(&plain).await.unwrap();
    assert_eq!(
        field_names(&batches),
        strings(&["id", "h", "s", "d"]),
        "expected no partition columns unless required"
    );

    for (what, data, partition) in [
        ("an unknown partition column", vec![], vec!["nope"]),
        (
            "a data column required as a partition column",
            vec![],
            vec!["s"],
        ),
        (
            "a partition column required as a data column",
            vec!["pt"],
            vec![],
        ),
    ] {
        expect_err!(
            b.service
                .create_read_session(&columns_request(&table, &data, &partition))
                .await,
            Error::NotFound { .. },
            "NotFound for {what}"
        );
    }
}

/// Required partitions: full and prefix specs, in `,` and `/` form; an unknown key is
/// `InvalidArgument`; a missing partition reads nothing.
pub async fn read_required_partitions(b: &Backend) {
    let g = DataGen::simple(12);
    let table = b.create_gen_table("req_parts", &g, PT_REGION).await;
    fill_layout(b, &table, &g).await;
    let cases: Vec<(Vec<&str>, Vec<i64>)> = vec![
        (vec!["pt=a,region=2"], (10..25).collect()),
        (vec!["pt=a/region=2"], (10..25).collect()),
        (vec!["pt=a"], (0..25).collect()),
        (vec!["pt=b"], (25..33).collect()),
        (
            vec!["pt=a,region=1", "pt=b/region=1"],
            (0..10).chain(25..33).collect(),
        ),
        (vec!["pt=zz"], vec![]),
        (vec!["pt=a,region=99"], vec![]),
        (vec![], (0..33).collect()),
    ];
    for (partitions, expected) in cases {
        let request = ReadSessionRequest {
            required_partitions: partitions.iter().map(|p| spec(p)).collect(),
            required_partition_columns: strings(&["pt", "region"]),
            ..ReadSessionRequest::new(table.clone())
        };
        let session = b.read_session(&request).await;
        assert_eq!(
            session.record_count,
            expected.len() as i64,
            "expected record_count {} for partitions {partitions:?}",
            expected.len()
        );
        let batches = b.read_session_rows(&session).await.unwrap();
        let got = g.verified_ids(&batches, "partition-filtered read");
        assert_exactly_once(
            &got,
            expected,
            &format!("read of partitions {partitions:?}"),
        );
        check_layout_values(&batches, "partition-filtered read");
    }
    let request = ReadSessionRequest {
        required_partitions: vec![spec("nope=1")],
        ..ReadSessionRequest::new(table.clone())
    };
    expect_err!(
        b.service.create_read_session(&request).await,
        Error::InvalidArgument { .. },
        "InvalidArgument for a partition spec with key `nope`, which is no partition column"
    );
}

/// Writes `batches` batches of `rows` rows each, in one write request per batch.
async fn many_batches(
    b: &Backend,
    prefix: &str,
    seed: u64,
    batches: i64,
    rows: i64,
) -> (TableId, DataGen) {
    let g = DataGen::simple(seed);
    let table = b.create_gen_table(prefix, &g, &[]).await;
    let session = b.write_session(&table, "", false).await;
    b.write_stream(
        &table,
        &session.session_id,
        None,
        g.batches(0..batches * rows, rows as usize),
    )
    .await;
    b.commit(&table, &session.session_id).await;
    (table, g)
}

fn with_split(table: &TableId, options: SplitOptions) -> ReadSessionRequest {
    ReadSessionRequest {
        split_options: options,
        ..ReadSessionRequest::new(table.clone())
    }
}

/// Size splits: a small size makes several splits whose union is every row exactly once; a
/// size below the minimum is refused; `cross_partition: false` keeps splits in one
/// partition.
pub async fn split_size(b: &Backend) {
    let (table, g) = many_batches(b, "split_size", 13, 20, 100).await;
    let session = b
        .read_session(&with_split(
            &table,
            SplitOptions::size(SplitOptions::MIN_SPLIT_SIZE),
        ))
        .await;
    assert_eq!(
        session.split_mode,
        SplitMode::Size,
        "expected a Size session"
    );
    assert!(
        session.splits_count >= 2,
        "expected several splits of {} bytes for 2000 rows in 20 writes, got {}",
        SplitOptions::MIN_SPLIT_SIZE,
        session.splits_count
    );
    let splits = b.read_splits(&session).await.unwrap();
    let all: Vec<RecordBatch> = splits.iter().flatten().cloned().collect();
    assert_exactly_once(
        &g.verified_ids(&all, "Size splits"),
        0..2000,
        "union of all Size splits",
    );
    expect_err!(
        b.read(&ReadRequest::new(
            table.clone(),
            &session.session_id,
            ReadRange::Split(session.splits_count as u64)
        ))
        .await,
        Error::OutOfRange { .. },
        "OutOfRange reading split {} of {}",
        session.splits_count,
        session.splits_count
    );

    let big = b
        .read_session(&with_split(&table, SplitOptions::default()))
        .await;
    assert!(
        big.splits_count >= 1 && big.splits_count < session.splits_count,
        "expected fewer splits at the default size ({}) than at the minimum ({})",
        big.splits_count,
        session.splits_count
    );
    assert_exactly_once(
        &ids(&b.read_session_rows(&big).await.unwrap()),
        0..2000,
        "union of default Size splits",
    );

    for bytes in [0, 1, SplitOptions::MIN_SPLIT_SIZE - 1] {
        expect_err!(
            b.service
                .create_read_session(&with_split(&table, SplitOptions::size(bytes)))
                .await,
            Error::InvalidArgument { .. },
            "InvalidArgument for a split size of {bytes} bytes"
        );
    }

    // Without cross_partition, no split spans two partitions.
    let gp = DataGen::simple(14);
    let parted = b.create_gen_table("split_size_parts", &gp, PT_REGION).await;
    fill_layout(b, &parted, &gp).await;
    let request = ReadSessionRequest {
        split_options: SplitOptions {
            cross_partition: false,
            ..SplitOptions::default()
        },
        required_partition_columns: strings(&["pt", "region"]),
        ..ReadSessionRequest::new(parted.clone())
    };
    let session = b.read_session(&request).await;
    assert!(
        session.splits_count >= 3,
        "expected at least one split per partition (3), got {}",
        session.splits_count
    );
    let splits = b.read_splits(&session).await.unwrap();
    for (i, split) in splits.iter().enumerate() {
        let parts: std::collections::BTreeSet<(&str, i64)> =
            ids(split).into_iter().map(layout_of).collect();
        assert!(
            parts.len() <= 1,
            "expected split {i} to hold one partition without cross_partition, got {parts:?}"
        );
        check_layout_values(split, "split without cross_partition");
    }
    let all: Vec<RecordBatch> = splits.into_iter().flatten().collect();
    assert_exactly_once(&ids(&all), 0..33, "union of single-partition splits");
}

/// Parallelism: N balanced splits; more splits than rows; zero refused.
pub async fn split_parallelism(b: &Backend) {
    let (table, g) = simple_table(b, "split_par", 15, 103).await;
    for n in [1u64, 4, 7] {
        let session = b
            .read_session(&with_split(&table, SplitOptions::parallelism(n)))
            .await;
        assert_eq!(
            session.splits_count, n as i64,
            "expected {n} splits for Parallelism({n}) over 103 rows"
        );
        let splits = b.read_splits(&session).await.unwrap();
        let sizes: Vec<usize> = splits.iter().map(|s| row_count(s)).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(
            max - min <= 1,
            "expected Parallelism({n}) splits balanced within one row, got sizes {sizes:?}"
        );
        let all: Vec<RecordBatch> = splits.into_iter().flatten().collect();
        assert_exactly_once(
            &g.verified_ids(&all, "Parallelism splits"),
            0..103,
            &format!("union of Parallelism({n}) splits"),
        );
    }

    let (small, g) = simple_table(b, "split_par_small", 16, 5).await;
    let session = b
        .read_session(&with_split(&small, SplitOptions::parallelism(8)))
        .await;
    assert!(
        (5..=8).contains(&session.splits_count),
        "expected between 5 and 8 splits for Parallelism(8) over 5 rows, got {}",
        session.splits_count
    );
    let splits = b.read_splits(&session).await.unwrap();
    assert!(
        splits.iter().all(|s| row_count(s) <= 1),
        "expected at most one row per split when splits outnumber rows"
    );
    let all: Vec<RecordBatch> = splits.into_iter().flatten().collect();
    assert_exactly_once(
        &g.verified_ids(&all, "Parallelism(8) splits"),
        0..5,
        "union of Parallelism(8) splits over 5 rows",
    );

    expect_err!(
        b.service
            .create_read_session(&with_split(&table, SplitOptions::parallelism(0)))
            .await,
        Error::InvalidArgument { .. },
        "InvalidArgument for Parallelism(0)"
    );
}

/// RowOffset: `splits_count` -1, `record_count` the rows; any `(offset, count)` range reads
/// those rows of the session's order; past the end is `OutOfRange`.
pub async fn split_row_offset(b: &Backend) {
    let (table, g) = many_batches(b, "split_rows", 17, 4, 25).await;
    let session = b
        .read_session(&with_split(&table, SplitOptions::row_offset()))
        .await;
    assert_eq!(
        session.split_mode,
        SplitMode::RowOffset,
        "expected a RowOffset session"
    );
    assert_eq!(
        session.splits_count, -1,
        "expected splits_count -1 for a RowOffset session"
    );
    assert_eq!(session.record_count, 100, "expected record_count 100");
    let rows = |offset: u64, count: u64| {
        ReadRequest::new(
            table.clone(),
            &session.session_id,
            ReadRange::Rows { offset, count },
        )
    };
    let full = ids(&b.read(&rows(0, 100)).await.unwrap());
    assert_exactly_once(&full, 0..100, "RowOffset read of [0, 100)");
    for (offset, count) in [
        (0u64, 1u64),
        (99, 1),
        (17, 33),
        (24, 2),
        (50, 50),
        (100, 0),
        (0, 0),
    ] {
        let batches = b.read(&rows(offset, count)).await.unwrap();
        let got = g.verified_ids(&batches, "RowOffset range");
        assert_eq!(
            got,
            full[offset as usize..(offset + count) as usize].to_vec(),
            "expected rows [{offset}, {}) to be that slice of the whole session",
            offset + count
        );
    }
    let mut chunked = Vec::new();
    for offset in (0..100).step_by(7) {
        chunked.extend(ids(&b
            .read(&rows(offset, 7.min(100 - offset)))
            .await
            .unwrap()));
    }
    assert_eq!(
        chunked, full,
        "expected chunks of 7 rows to concatenate to the whole session"
    );
    for (offset, count) in [(99u64, 2u64), (100, 1), (101, 0), (0, 101), (u64::MAX, 2)] {
        expect_err!(
            b.read(&rows(offset, count)).await,
            Error::OutOfRange { .. },
            "OutOfRange reading rows [{offset}, +{count}) of 100"
        );
    }
    expect_err!(
        b.read(&ReadRequest::new(
            table.clone(),
            &session.session_id,
            ReadRange::Split(0)
        ))
        .await,
        Error::InvalidArgument { .. } | Error::OutOfRange { .. },
        "an error reading split 0 of a RowOffset session (it has no indexed splits)"
    );
}

/// Bucket splits on a table without buckets are a clear error.
pub async fn split_bucket_rejected(b: &Backend) {
    let (table, _) = simple_table(b, "split_bucket", 18, 3).await;
    let options = SplitOptions {
        mode: SplitMode::Bucket,
        number: 0,
        cross_partition: true,
    };
    let e = expect_err!(
        b.service
            .create_read_session(&with_split(&table, options))
            .await,
        Error::InvalidArgument { .. } | Error::NotSupported { .. },
        "InvalidArgument or NotSupported for Bucket splits of a table without buckets"
    );
    assert!(
        e.to_string().to_lowercase().contains("bucket"),
        "expected the error to mention buckets: {e}"
    );
}

/// An empty table reads nothing, in every mode.
pub async fn read_empty_table(b: &Backend) {
    let (table, _) = simple_table(b, "empty", 19, 0).await;
    for options in [
        SplitOptions::default(),
        SplitOptions::parallelism(4),
        SplitOptions::row_offset(),
    ] {
        let session = b.read_session(&with_split(&table, options)).await;
        assert_eq!(
            session.record_count, 0,
            "expected record_count 0 for an empty table ({:?})",
            options.mode
        );
        let batches = b.read_session_rows(&session).await.unwrap();
        assert_eq!(
            row_count(&batches),
            0,
            "expected no rows from an empty table ({:?})",
            options.mode
        );
    }
    let session = b
        .read_session(&with_split(&table, SplitOptions::row_offset()))
        .await;
    expect_err!(
        b.read(&ReadRequest::new(
            table.clone(),
            &session.session_id,
            ReadRange::Rows {
                offset: 0,
                count: 1
            }
        ))
        .await,
        Error::OutOfRange { .. },
        "OutOfRange reading a row of an empty table"
    );
}

/// `max_batch_rows` caps every delivered batch, without changing the rows.
pub async fn read_max_batch_rows(b: &Backend) {
    let g = DataGen::simple(20);
    let table = b.create_gen_table("max_batch", &g, &[]).await;
    b.write_and_commit(
        &table,
        "",
        false,
        vec![g.batch(0..20), g.batch(20..40), g.batch(40..50)],
    )
    .await;
    for options in [SplitOptions::parallelism(1), SplitOptions::row_offset()] {
        let session = b.read_session(&with_split(&table, options)).await;
        let range = if options.mode == SplitMode::RowOffset {
            ReadRange::Rows {
                offset: 0,
                count: 50,
            }
        } else {
            ReadRange::Split(0)
        };
        let full = ids(&b
            .read(&ReadRequest::new(table.clone(), &session.session_id, range))
            .await
            .unwrap());
        assert_exactly_once(&full, 0..50, &format!("uncapped read ({:?})", options.mode));
        for max in [1usize, 7, 20, 64] {
            let request = ReadRequest {
                max_batch_rows: max,
                ..ReadRequest::new(table.clone(), &session.session_id, range)
            };
            let batches = b.read(&request).await.unwrap();
            for batch in &batches {
                assert!(
                    batch.num_rows() <= max,
                    "expected no batch over max_batch_rows {max} ({:?}), got one of {}",
                    options.mode,
                    batch.num_rows()
                );
            }
            assert_eq!(
                g.verified_ids(&batches, "capped read"),
                full,
                "expected the same rows with max_batch_rows {max}"
            );
        }
    }
}

/// `skip_rows` resumes a split: reading with skip k gives the split minus its first k rows.
pub async fn read_skip_rows(b: &Backend) {
    let (table, g) = many_batches(b, "skip", 21, 6, 30).await;
    let session = b
        .read_session(&with_split(
            &table,
            SplitOptions::size(SplitOptions::MIN_SPLIT_SIZE),
        ))
        .await;
    assert!(
        session.splits_count >= 2,
        "expected several splits to resume, got {}",
        session.splits_count
    );
    let mut union = Vec::new();
    for i in 0..session.splits_count as u64 {
        let request = ReadRequest::new(table.clone(), &session.session_id, ReadRange::Split(i));
        let full = ids(&b.read(&request).await.unwrap());
        union.extend(full.iter().copied());
        let len = full.len() as u64;
        for k in [0, 1, len / 2, len.saturating_sub(1), len] {
            let batches = b
                .read(&ReadRequest {
                    skip_rows: k,
                    max_batch_rows: 7,
                    ..request.clone()
                })
                .await
                .unwrap();
            assert_eq!(
                g.verified_ids(&batches, "resumed split"),
                full[k as usize..].to_vec(),
                "expected split {i} read with skip_rows {k} to be the split minus its first {k} rows"
            );
        }
        expect_err!(
            b.read(&ReadRequest {
                skip_rows: len + 1,
                ..request.clone()
            })
            .await,
            Error::OutOfRange { .. } | Error::InvalidArgument { .. },
            "an error skipping {} rows of a split of {len}",
            len + 1
        );
    }
    assert_exactly_once(&union, 0..180, "union of the splits read without skipping");
    let rows = b
        .read_session(&with_split(&table, SplitOptions::row_offset()))
        .await;
    let range = |offset, count| {
        ReadRequest::new(
            table.clone(),
            &rows.session_id,
            ReadRange::Rows { offset, count },
        )
    };
    let skipped = ids(&b
        .read(&ReadRequest {
            skip_rows: 7,
            ..range(5, 100)
        })
        .await
        .unwrap());
    let direct = ids(&b.read(&range(12, 93)).await.unwrap());
    assert_eq!(
        skipped, direct,
        "expected rows [5, 105) skipping 7 to equal rows [12, 105)"
    );
}

/// `ReadRequest::columns` projects the session's columns further, in the given order.
pub async fn read_projection(b: &Backend) {
    let g = DataGen::simple(22);
    let table = b.create_gen_table("projection", &g, PT_REGION).await;
    fill_layout(b, &table, &g).await;
    let session = b.read_session(&columns_request(&table, &[], &["pt"])).await;
    let read = |columns: &[&str]| ReadRequest {
        columns: strings(columns),
        ..ReadRequest::new(table.clone(), &session.session_id, ReadRange::Split(0))
    };
    assert!(session.splits_count >= 1, "expected a split");
    let mut all = Vec::new();
    for i in 0..session.splits_count as u64 {
        let batches = b
            .read(&ReadRequest {
                range: ReadRange::Split(i),
                ..read(&["d", "pt", "id"])
            })
            .await
            .unwrap();
        if !batches.is_empty() {
            assert_eq!(
                field_names(&batches),
                strings(&["d", "pt", "id"]),
                "expected the projection's order"
            );
        }
        g.check_values(&batches)
            .unwrap_or_else(|e| panic!("expected projected values to match: {e}"));
        check_layout_values(&batches, "projection with a partition column");
        all.extend(batches);
    }
    assert_exactly_once(&ids(&all), 0..33, "projected read");
    let only_h = b.read(&read(&["h"])).await.unwrap();
    assert_eq!(
        field_names(&only_h),
        strings(&["h"]),
        "expected a single projected column"
    );
    for (what, columns) in [
        ("an unknown column", vec!["nope"]),
        (
            "a partition column the session did not require",
            vec!["region"],
        ),
    ] {
        expect_err!(
            b.read(&read(&columns)).await,
            Error::NotFound { .. } | Error::InvalidArgument { .. },
            "NotFound or InvalidArgument projecting {what}"
        );
    }
}

fn nanos_per(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// `{id: {column: value}}` of the named columns.
fn values_by_id(batches: &[RecordBatch], columns: &[&str]) -> HashMap<i64, Vec<Value>> {
    let mut out = HashMap::new();
    for batch in batches {
        let id_col = batch.column_by_name("id").expect("an id column");
        for row in 0..batch.num_rows() {
            let Ok(Value::Int(id)) = value_at(id_col.as_ref(), row) else {
                panic!("expected a BIGINT id")
            };
            let values = columns
                .iter()
                .map(|c| {
                    value_at(
                        batch
                            .column_by_name(c)
                            .unwrap_or_else(|| panic!("expected column {c}"))
                            .as_ref(),
                        row,
                    )
                    .unwrap()
                })
                .collect();
            out.insert(id, values);
        }
    }
    out
}

/// Checks that every delivered batch has exactly the session's Arrow schema.
fn check_delivered_schema(session: &ReadSession, batches: &[RecordBatch], options: &ArrowOptions) {
    let want = field_types(&session.schema.to_arrow_schema(options, true));
    for batch in batches {
        assert_eq!(
            field_types(batch.schema_ref()),
            want,
            "expected batches in the session's schema under {options:?}"
        );
    }
}

/// Timestamp and datetime units change the Arrow type, and the values consistently.
pub async fn arrow_time_units(b: &Backend) {
    let g = DataGen::all_types(23);
    let table = b.create_gen_table("time_units", &g, &[]).await;
    fill(b, &table, &g, "", 0..60).await;
    let base = values_by_id(&b.read_table(&table).await, &["c_datetime", "c_timestamp"]);
    assert_eq!(base.len(), 60, "expected 60 rows");
    let units = [
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ];
    let mut combos: Vec<(TimeUnit, TimeUnit)> = units.iter().map(|u| (*u, *u)).collect();
    combos.extend([
        (TimeUnit::Microsecond, TimeUnit::Second),
        (TimeUnit::Second, TimeUnit::Nanosecond),
    ]);
    for (ts_unit, dt_unit) in combos {
        let options = ArrowOptions {
            timestamp_unit: ts_unit,
            datetime_unit: dt_unit,
            large_string: false,
        };
        let session = b
            .read_session(&ReadSessionRequest {
                arrow_options: options,
                ..ReadSessionRequest::new(table.clone())
            })
            .await;
        assert_eq!(
            session.arrow_options, options,
            "expected the session to echo its Arrow options"
        );
        let batches = b.read_session_rows(&session).await.unwrap();
        check_delivered_schema(&session, &batches, &options);
        let schema = batches[0].schema();
        assert_eq!(
            schema.field_with_name("c_timestamp").unwrap().data_type(),
            &DataType::Timestamp(ts_unit, None),
            "expected TIMESTAMP as Timestamp({ts_unit:?})"
        );
        assert_eq!(
            schema.field_with_name("c_datetime").unwrap().data_type(),
            &DataType::Timestamp(dt_unit, None),
            "expected DATETIME as Timestamp({dt_unit:?})"
        );
        let got = values_by_id(&batches, &["c_datetime", "c_timestamp"]);
        assert_eq!(got.len(), 60, "expected 60 rows");
        for (id, want) in &base {
            for (i, unit) in [dt_unit, ts_unit].into_iter().enumerate() {
                let expected = match &want[i] {
                    Value::TimestampNanos(n) => {
                        Value::TimestampNanos(n / nanos_per(unit) * nanos_per(unit))
                    }
                    other => other.clone(),
                };
                assert_eq!(
                    got[id][i],
                    expected,
                    "expected id {id}'s {} in {unit:?} to be the default value truncated to that unit",
                    ["c_datetime", "c_timestamp"][i]
                );
            }
        }
        let lossless = nanos_per(ts_unit) == 1 && nanos_per(dt_unit) <= 1_000_000;
        if lossless {
            assert_exactly_once(
                &g.verified_ids(&batches, "lossless units"),
                0..60,
                "read in lossless units",
            );
        }
    }
}

/// `large_string` delivers strings (nested ones and partition columns included) as
/// large_utf8, with the same values.
pub async fn arrow_large_string(b: &Backend) {
    let g = DataGen::all_types(24);
    let table = b
        .create_gen_table("large_string", &g, &[("pt", "string")])
        .await;
    fill(b, &table, &g, "pt=p1", 0..40).await;
    let options = ArrowOptions {
        large_string: true,
        ..ArrowOptions::default()
    };
    let request = ReadSessionRequest {
        arrow_options: options,
        required_partition_columns: strings(&["pt"]),
        ..ReadSessionRequest::new(table.clone())
    };
    let session = b.read_session(&request).await;
    let batches = b.read_session_rows(&session).await.unwrap();
    check_delivered_schema(&session, &batches, &options);
    let schema = batches[0].schema();
    assert_eq!(
        schema.field_with_name("c_string").unwrap().data_type(),
        &DataType::LargeUtf8,
        "expected STRING as LargeUtf8"
    );
    assert_eq!(
        schema.field_with_name("pt").unwrap().data_type(),
        &DataType::LargeUtf8,
        "expected the string partition column as LargeUtf8"
    );
    let DataType::Struct(fields) = schema.field_with_name("c_struct").unwrap().data_type() else {
        panic!("expected a struct")
    };
    assert_eq!(
        fields[1].data_type(),
        &DataType::LargeUtf8,
        "expected the struct's string field as LargeUtf8"
    );
    assert_exactly_once(
        &g.verified_ids(&batches, "large_string read"),
        0..40,
        "large_string read",
    );
    for batch in &batches {
        let pt = batch.column_by_name("pt").unwrap();
        for row in 0..batch.num_rows() {
            assert_eq!(
                value_at(pt.as_ref(), row),
                Ok(Value::Str("p1".into())),
                "expected pt = p1 as a large string"
            );
        }
    }
}

/// A session reads the version it was created on, whatever commits follow.
pub async fn read_session_pins_version(b: &Backend) {
    let (table, g) = simple_table(b, "pin", 25, 10).await;
    let v1 = b.describe(&table).await.version;
    let sized = b.table_session(&table).await;
    let rows = b
        .read_session(&with_split(&table, SplitOptions::row_offset()))
        .await;
    assert_eq!(
        sized.table_version, v1,
        "expected the session to report the table's version {v1}"
    );
    assert_eq!(rows.record_count, 10, "expected 10 rows in the session");

    fill(b, &table, &g, "", 10..20).await;
    b.write_and_commit(&table, "", true, vec![g.batch(100..105)])
        .await;
    for session in [&sized, &rows] {
        let batches = b.read_session_rows(session).await.unwrap_or_else(|e| {
            panic!("expected a session to stay readable after later commits: {e}")
        });
        assert_exactly_once(
            &g.verified_ids(&batches, "pinned read"),
            0..10,
            "session created before an append and an overwrite",
        );
        let again = b
            .service
            .get_read_session(&table, &session.session_id, false)
            .await
            .unwrap();
        assert_eq!(
            again.table_version, v1,
            "expected the session to stay on version {v1}"
        );
        assert_eq!(
            again.record_count, 10,
            "expected the session's record count unchanged"
        );
    }
    let fresh = b.table_session(&table).await;
    assert!(
        fresh.table_version > v1,
        "expected a new session on a newer version than {v1}"
    );
    assert_exactly_once(
        &ids(&b.read_session_rows(&fresh).await.unwrap()),
        100..105,
        "new session after the overwrite",
    );
}

/// A session of a dropped table fails, or reads its snapshot; it never reads a table
/// created later under the same name.
pub async fn read_session_of_dropped_table(b: &Backend) {
    let (table, g) = simple_table(b, "dropped_session", 26, 10).await;
    let session = b.table_session(&table).await;
    b.service.drop_table(&table, false).await.unwrap();
    let check = |result: paiio_storage::error::Result<Vec<RecordBatch>>, when: &str| match result {
        Err(Error::NotFound { .. })
        | Err(Error::SessionExpired { .. })
        | Err(Error::InvalidState { .. }) => {}
        Err(e) => panic!(
            "expected NotFound (or the old rows) reading a session of a dropped table {when}, got {e:?}"
        ),
        Ok(batches) => {
            let got = g.verified_ids(&batches, "session of a dropped table");
            assert_exactly_once(
                &got,
                0..10,
                &format!("a session of a dropped table {when} (NotFound or its own snapshot)"),
            );
        }
    };
    check(b.read_session_rows(&session).await, "after the drop");
    b.service
        .create_table(&table, &g.table_schema(vec![]), Default::default())
        .await
        .unwrap();
    fill(b, &table, &g, "", 1000..1010).await;
    check(
        b.read_session_rows(&session).await,
        "after a new table of the same name was written",
    );
}

/// Advancing the clock past the expiration time expires a session: reads fail with
/// `SessionExpired`.
pub async fn read_session_expiry(b: &Backend) {
    if b.clock.is_none() {
        return skip("read_session_expiry", "the backend has no ManualClock");
    }
    let (table, _) = simple_table(b, "expiry", 27, 10).await;
    let sized = b.table_session(&table).await;
    let rows = b
        .read_session(&with_split(&table, SplitOptions::row_offset()))
        .await;
    assert!(
        sized.expiration_time_ms > b.now_ms(),
        "expected a new session to expire in the future"
    );
    assert_eq!(
        b.read_session_rows(&sized)
            .await
            .map(|r| row_count(&r))
            .ok(),
        Some(10),
        "expected 10 rows before expiry"
    );
    b.expire(sized.expiration_time_ms.max(rows.expiration_time_ms));
    for session in [&sized, &rows] {
        expect_err!(
            b.read_session_rows(session).await,
            Error::SessionExpired { .. },
            "SessionExpired reading an expired session"
        );
        match b
            .service
            .get_read_session(&table, &session.session_id, false)
            .await
        {
            Ok(s) => assert_eq!(
                s.status,
                paiio_storage::service::SessionStatus::Expired,
                "expected an expired session's status EXPIRED"
            ),
            Err(Error::SessionExpired { .. }) => {}
            Err(e) => panic!(
                "expected status EXPIRED or SessionExpired for an expired session, got {e:?}"
            ),
        }
        expect_err!(
            b.service
                .get_read_session(&table, &session.session_id, true)
                .await,
            Error::SessionExpired { .. },
            "SessionExpired refreshing an already expired session"
        );
    }
    let fresh = b.table_session(&table).await;
    assert_eq!(
        row_count(&b.read_session_rows(&fresh).await.unwrap()),
        10,
        "expected a new session to read after an old one expired"
    );
}

/// `get_read_session(refresh = true)` before expiry pushes the expiration time forward.
pub async fn read_session_refresh(b: &Backend) {
    if b.clock.is_none() {
        return skip("read_session_refresh", "the backend has no ManualClock");
    }
    let (table, _) = simple_table(b, "refresh", 28, 10).await;
    let session = b.table_session(&table).await;
    let e0 = session.expiration_time_ms;
    let ttl = e0 - b.now_ms();
    assert!(
        ttl > 4_000,
        "expected a session to live more than a few seconds, got {ttl} ms"
    );
    b.advance(ttl / 2);
    let refreshed = b
        .service
        .get_read_session(&table, &session.session_id, true)
        .await
        .unwrap();
    assert!(
        refreshed.expiration_time_ms > e0,
        "expected refresh to push expiration past {e0}, got {}",
        refreshed.expiration_time_ms
    );
    assert_eq!(
        refreshed.status,
        paiio_storage::service::SessionStatus::Normal,
        "expected a refreshed session to be NORMAL"
    );
    let plain = b
        .service
        .get_read_session(&table, &session.session_id, false)
        .await
        .unwrap();
    assert_eq!(
        plain.expiration_time_ms, refreshed.expiration_time_ms,
        "expected get without refresh to keep the expiration time"
    );
    // Past the old expiration time, before the new one: still readable.
    b.advance(e0 - b.now_ms() + 1_000);
    assert!(
        b.now_ms() > e0 && b.now_ms() < refreshed.expiration_time_ms,
        "test setup: between the two expiration times"
    );
    let batches = b.read_session_rows(&session).await.unwrap_or_else(|e| {
        panic!("expected a refreshed session to be readable past its original expiration: {e}")
    });
    assert_eq!(row_count(&batches), 10, "expected 10 rows");
    b.expire(refreshed.expiration_time_ms);
    expect_err!(
        b.read_session_rows(&session).await,
        Error::SessionExpired { .. },
        "SessionExpired past the refreshed expiration"
    );
}

/// Unknown sessions, streams and versions are `NotFound`, as are sessions of another table.
pub async fn unknown_sessions(b: &Backend) {
    let (table, g) = simple_table(b, "unknown", 29, 3).await;
    let (other, _) = simple_table(b, "unknown_other", 29, 0).await;
    let read = b.table_session(&table).await;
    let split_0 = |id: &str| ReadRequest::new(table.clone(), id, ReadRange::Split(0));
    for id in ["nosuchsession0", "../etc", "x/y", ""] {
        let s = &b.service;
        for (what, result) in [
            (
                "reading unknown read session",
                b.read(&split_0(id)).await.map(drop),
            ),
            (
                "getting unknown read session",
                s.get_read_session(&table, id, false).await.map(drop),
            ),
            (
                "getting unknown write session",
                s.get_write_session(&table, id).await.map(drop),
            ),
            (
                "creating a stream in unknown write session",
                s.create_write_stream(&table, id, None, false)
                    .await
                    .map(drop),
            ),
            (
                "committing unknown write session",
                s.commit_write_session(&table, id, None).await.map(drop),
            ),
            (
                "aborting unknown write session",
                s.abort_write_session(&table, id).await,
            ),
        ] {
            expect_err!(
                result,
                Error::NotFound { .. } | Error::InvalidArgument { .. },
                "NotFound {what} {id:?}"
            );
        }
    }
    expect_err!(
        b.read(&ReadRequest::new(
            other.clone(),
            &read.session_id,
            ReadRange::Split(0)
        ))
        .await,
        Error::NotFound { .. },
        "NotFound reading a session through another table"
    );
    expect_err!(
        b.service
            .get_read_session(&other, &read.session_id, false)
            .await,
        Error::NotFound { .. },
        "NotFound getting a session through another table"
    );
    let write = b.write_session(&table, "", false).await;
    expect_err!(
        b.service.get_write_session(&other, &write.session_id).await,
        Error::NotFound { .. },
        "NotFound getting a write session through another table"
    );
    let stream = b.open_stream(&table, &write.session_id, None).await;
    for stream_id in ["nostream", "../x"] {
        expect_err!(
            b.service
                .get_write_stream(&table, &write.session_id, stream_id)
                .await,
            Error::NotFound { .. } | Error::InvalidArgument { .. },
            "NotFound getting unknown stream {stream_id:?}"
        );
        let unknown = paiio_storage::service::WriteStream {
            stream_id: stream_id.into(),
            ..stream.clone()
        };
        expect_err!(
            b.write(&table, &write.session_id, &unknown, g.batch(0..1))
                .await,
            Error::NotFound { .. } | Error::InvalidArgument { .. },
            "NotFound writing to unknown stream {stream_id:?}"
        );
        expect_err!(
            b.service
                .close_write_stream(&table, &write.session_id, stream_id, 0)
                .await,
            Error::NotFound { .. } | Error::InvalidArgument { .. },
            "NotFound closing unknown stream {stream_id:?}"
        );
    }
    let future = paiio_storage::service::WriteStream {
        version: stream.version + 5,
        ..stream.clone()
    };
    expect_err!(
        b.write(&table, &write.session_id, &future, g.batch(0..1))
            .await,
        Error::NotFound { .. } | Error::InvalidArgument { .. } | Error::InvalidState { .. },
        "an error writing to a stream version never created"
    );
    expect_err!(
        b.service
            .commit_write_session(
                &table,
                &write.session_id,
                Some(&[("nostream".to_string(), 0)])
            )
            .await,
        Error::NotFound { .. } | Error::InvalidArgument { .. },
        "NotFound committing an unknown stream"
    );
}

/// Preview: a limit, one partition, some columns; no session needed.
pub async fn preview(b: &Backend) {
    let g = DataGen::simple(30);
    let table = b.create_gen_table("preview", &g, PT_REGION).await;
    fill_layout(b, &table, &g).await;
    let preview = |partition: Option<&str>, columns: &[&str], limit: u64| {
        let partition = partition.map(spec);
        let columns = strings(columns);
        let table = table.clone();
        async move {
            super::collect(
                b.service
                    .preview(&table, partition.as_ref(), &columns, limit)
                    .await?,
            )
            .await
        }
    };
    let five = preview(None, &[], 5).await.unwrap();
    let got = g.verified_ids(&five, "preview");
    assert_eq!(got.len(), 5, "expected 5 rows from a preview with limit 5");
    let distinct: std::collections::BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        5,
        "expected distinct rows in a preview, got {got:?}"
    );
    assert!(
        got.iter().all(|id| (0..33).contains(id)),
        "expected rows of the table, got {got:?}"
    );
    check_layout_values(&five, "preview");

    assert_exactly_once(
        &g.verified_ids(&preview(None, &[], 1000).await.unwrap(), "preview"),
        0..33,
        "preview with a large limit",
    );
    assert_exactly_once(
        &g.verified_ids(
            &preview(Some("pt=a,region=2"), &[], 1000).await.unwrap(),
            "preview of a partition",
        ),
        10..25,
        "preview of pt=a,region=2",
    );
    let projected = preview(Some("pt=b"), &["s", "id", "pt"], 1000)
        .await
        .unwrap();
    assert_eq!(
        field_names(&projected),
        strings(&["s", "id", "pt"]),
        "expected the preview's columns in the given order"
    );
    g.check_values(&projected)
        .unwrap_or_else(|e| panic!("expected previewed values to match: {e}"));
    check_layout_values(&projected, "projected preview");
    assert_exactly_once(&ids(&projected), 25..33, "preview of pt=b");
    assert_eq!(
        row_count(&preview(None, &[], 0).await.unwrap()),
        0,
        "expected no rows from a preview with limit 0"
    );
    assert_eq!(
        row_count(&preview(Some("pt=zz"), &[], 10).await.unwrap()),
        0,
        "expected no rows from a preview of a missing partition"
    );

    expect_err!(
        preview(None, &["nope"], 10).await,
        Error::NotFound { .. },
        "NotFound previewing unknown column `nope`"
    );
    expect_err!(
        preview(Some("nope=1"), &[], 10).await,
        Error::InvalidArgument { .. },
        "InvalidArgument previewing a partition spec with an unknown key"
    );
    let missing = b.table_id("preview_missing");
    let result = match b.service.preview(&missing, None, &[], 10).await {
        Ok(stream) => super::collect(stream).await,
        Err(e) => Err(e),
    };
    expect_err!(
        result,
        Error::NotFound { .. },
        "NotFound previewing a table never created"
    );
}
