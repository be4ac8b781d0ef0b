//! Capabilities of write sessions: streams and versions, commit and abort, overwrite,
//! partitions, exactly-once offsets, type checks, expiry, and the all-types round trip.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Decimal128Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, StructArray,
};
use arrow_schema::{DataType, Field, Fields};

use paiio_storage::error::{Error, Result};
use paiio_storage::service::{
    ReadSessionRequest, SessionStatus, SplitOptions, StreamStatus, WriteAck, WriteRequest,
    WriteSession, WriteSessionRequest, WriteStream,
};
use paiio_storage::uri::TableId;

use super::datagen::{
    DataGen, Value, assert_exactly_once, constant_string, ids, reversed_columns, value_at,
    with_columns, without_columns,
};
use super::tables::{PT_REGION, fill};
use super::{Backend, field_types, row_count, skip, spec};

async fn simple(b: &Backend, prefix: &str, seed: u64) -> (TableId, DataGen) {
    let g = DataGen::simple(seed);
    (b.create_gen_table(prefix, &g, &[]).await, g)
}

async fn table_ids(b: &Backend, table: &TableId) -> Vec<i64> {
    ids(&b.read_table(table).await)
}

/// Checks that reading `table` gives each of `expected` ids exactly once, and no other.
async fn assert_table_ids(
    b: &Backend,
    table: &TableId,
    expected: impl IntoIterator<Item = i64>,
    context: &str,
) {
    assert_exactly_once(&table_ids(b, table).await, expected, context);
}

/// Checks that column `name` holds `value` in every row.
fn check_constant(batches: &[RecordBatch], name: &str, value: Value, context: &str) {
    for batch in batches {
        let column = batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("{context}: expected a `{name}` column"));
        for row in 0..batch.num_rows() {
            assert_eq!(
                value_at(column.as_ref(), row).as_ref(),
                Ok(&value),
                "{context}: expected `{name}` = {value:?}"
            );
        }
    }
}

/// `batch` with a bigint `region` column.
fn with_region(batch: &RecordBatch, region: impl Fn(i64) -> i64) -> RecordBatch {
    let values: Vec<i64> = ids(std::slice::from_ref(batch))
        .into_iter()
        .map(region)
        .collect();
    with_columns(
        batch,
        vec![(
            Field::new("region", DataType::Int64, true),
            Arc::new(Int64Array::from(values)) as ArrayRef,
        )],
    )
}

/// `batch` with a utf8 `pt` column.
fn with_pt(batch: &RecordBatch, pt: impl Fn(i64) -> Option<String>) -> RecordBatch {
    let values: Vec<Option<String>> = ids(std::slice::from_ref(batch))
        .into_iter()
        .map(pt)
        .collect();
    with_columns(
        batch,
        vec![(
            Field::new("pt", DataType::Utf8, true),
            Arc::new(StringArray::from(values)) as ArrayRef,
        )],
    )
}

/// `batch` with the partition columns `pt` and `region` set to `pt` and `region` in every row.
fn in_partition(batch: &RecordBatch, pt: &str, region: i64) -> RecordBatch {
    with_region(&with_pt(batch, |_| Some(pt.to_owned())), |_| region)
}

/// Each partition of `table` and its row count, sorted.
async fn partition_counts(b: &Backend, table: &TableId) -> Vec<(String, u64)> {
    let partitions = b.service.list_partitions(table).await.unwrap();
    let mut counts: Vec<(String, u64)> = partitions
        .into_iter()
        .map(|p| (p.spec.to_string(), p.row_count))
        .collect();
    counts.sort();
    counts
}

/// The partition columns a write session expects in its data.
fn partition_column_names(session: &WriteSession) -> Vec<&str> {
    let columns = &session.write_schema.partition_columns;
    columns.iter().map(|c| c.name.as_str()).collect()
}

/// A write session request for `partition` of `table`.
fn session_request(table: &TableId, partition: &str) -> WriteSessionRequest {
    WriteSessionRequest {
        partition: spec(partition),
        ..WriteSessionRequest::new(table.clone())
    }
}

/// Streams are created with a chosen id or a fresh one; each id is distinct.
pub async fn write_stream_ids(b: &Backend) {
    let (table, g) = simple(b, "stream_ids", 40).await;
    let session = b.write_session(&table, "", false).await;
    assert_eq!(
        session.status,
        SessionStatus::Normal,
        "expected a new write session to be NORMAL"
    );
    assert!(
        session.streams.is_empty(),
        "expected a new session to have no streams"
    );
    let sid = &session.session_id;
    let s1 = b.open_stream(&table, sid, None).await;
    let s2 = b.open_stream(&table, sid, None).await;
    let named = b.open_stream(&table, sid, Some("named_1")).await;
    assert_ne!(
        s1.stream_id, s2.stream_id,
        "expected fresh stream ids to differ"
    );
    assert!(
        !s1.stream_id.is_empty(),
        "expected a non-empty fresh stream id"
    );
    assert_eq!(named.stream_id, "named_1", "expected the chosen stream id");
    for s in [&s1, &s2, &named] {
        assert_eq!(
            s.status,
            StreamStatus::Open,
            "expected a new stream to be open"
        );
        assert!(
            !s.exactly_once,
            "expected a stream created without exactly-once not to be exactly-once"
        );
        assert_eq!(s.row_offset, 0, "expected a new stream at row offset 0");
    }
    let got = b.stream_state(&table, sid, "named_1").await;
    assert_eq!(
        (got.version, got.status),
        (named.version, StreamStatus::Open),
        "expected get_write_stream to return the stream"
    );
    let listed = b.session_state(&table, sid).await;
    let mut listed_ids: Vec<&str> = listed
        .streams
        .iter()
        .map(|s| s.stream_id.as_str())
        .collect();
    listed_ids.sort_unstable();
    let mut want = vec![s1.stream_id.as_str(), s2.stream_id.as_str(), "named_1"];
    want.sort_unstable();
    assert_eq!(
        listed_ids, want,
        "expected the session to list its three streams"
    );

    for (i, s) in [&s1, &s2, &named].into_iter().enumerate() {
        let start = i as i64 * 10;
        b.write(&table, sid, s, g.batch(start..start + 10))
            .await
            .unwrap();
        b.close_stream(&table, sid, &s.stream_id, s.version).await;
    }
    b.commit(&table, sid).await;
    assert_table_ids(b, &table, 0..30, "three streams committed").await;
}

/// Re-creating a stream id makes the next version; the old one is superseded (writes to it
/// fail); a commit takes only the latest version.
/// Clients name stream versions themselves (maxstorage starts at 1): a requested version above
/// the latest is created, the open latest one is returned again (a retried create), lower or
/// closed ones are refused; the latest version is what a commit takes.
pub async fn write_stream_requested_versions(b: &Backend) {
    let (table, g) = simple(b, "stream_requested_versions", 43).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    let version = |v: u64| {
        b.service
            .create_write_stream_version(&table, sid, Some("0"), Some(v), false)
    };
    let v1 = version(1).await.unwrap();
    assert_eq!(
        v1.version, 1,
        "expected the requested version 1 to be created"
    );
    let again = version(1).await.unwrap();
    assert_eq!(
        again, v1,
        "expected a retried create of the open version to return it unchanged"
    );
    b.write(&table, sid, &v1, g.batch(0..5)).await.unwrap();
    let v3 = version(3).await.unwrap();
    assert_eq!(
        (v3.version, v3.row_offset),
        (3, 0),
        "expected version 3 to start empty"
    );
    expect_err!(
        version(2).await,
        Error::InvalidState { .. },
        "InvalidState creating version 2 below the latest version 3"
    );
    b.write(&table, sid, &v3, g.batch(10..13)).await.unwrap();
    b.close_stream(&table, sid, "0", 3).await;
    expect_err!(
        version(3).await,
        Error::InvalidState { .. },
        "InvalidState re-creating the closed version 3"
    );
    b.commit(&table, sid).await;
    let context = "only the latest committed version of stream 0";
    assert_table_ids(b, &table, 10..13, context).await;
}

pub async fn write_stream_versions(b: &Backend) {
    let (table, g) = simple(b, "stream_versions", 41).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    let v0 = b.open_stream(&table, sid, Some("s")).await;
    b.write(&table, sid, &v0, g.batch(0..10)).await.unwrap();
    let v1 = b.open_stream(&table, sid, Some("s")).await;
    assert_eq!(v1.stream_id, "s", "expected the same stream id");
    assert_eq!(
        v1.version,
        v0.version + 1,
        "expected re-creating stream `s` to make version {}",
        v0.version + 1
    );
    assert_eq!(v1.row_offset, 0, "expected a new version to start at row 0");
    let latest = b.stream_state(&table, sid, "s").await;
    assert_eq!(
        latest.version, v1.version,
        "expected get_write_stream to return the latest version"
    );
    expect_err!(
        b.write(&table, sid, &v0, g.batch(10..11)).await,
        Error::InvalidState { .. },
        "InvalidState writing to superseded version {} of stream `s`",
        v0.version
    );
    b.write(&table, sid, &v1, g.batch(100..110)).await.unwrap();
    b.close_stream(&table, sid, "s", v1.version).await;
    let listed = b.session_state(&table, sid).await;
    assert_eq!(
        listed.streams.len(),
        1,
        "expected one stream listed for all versions of `s`, got {:?}",
        listed.streams
    );
    assert_eq!(
        listed.streams[0].version, v1.version,
        "expected the session to list the latest version"
    );
    let info = b.commit(&table, sid).await;
    assert_eq!(
        info.rows, 10,
        "expected only the latest version's 10 rows committed"
    );
    assert_table_ids(b, &table, 100..110, "only the latest version of stream `s`").await;
}

/// Close marks streams finished; commit without a list commits every closed stream.
pub async fn close_and_commit_all(b: &Backend) {
    let (table, g) = simple(b, "commit_all", 42).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    let a = b
        .write_stream(&table, sid, None, vec![g.batch(0..10)])
        .await;
    assert_eq!(
        a.status,
        StreamStatus::Closed,
        "expected close to return a closed stream"
    );
    let got = b.stream_state(&table, sid, &a.stream_id).await;
    assert_eq!(
        got.status,
        StreamStatus::Closed,
        "expected get_write_stream to report the stream closed"
    );
    assert_eq!(
        got.row_offset, 10,
        "expected the closed stream at row offset 10"
    );
    expect_err!(
        b.write(&table, sid, &a, g.batch(50..51)).await,
        Error::InvalidState { .. },
        "InvalidState writing to a closed stream"
    );
    b.write_stream(&table, sid, None, vec![g.batch(10..20), g.batch(20..25)])
        .await;
    let info = b.commit(&table, sid).await;
    assert_eq!(info.rows, 25, "expected 25 rows committed");
    let described = b.describe(&table).await;
    assert_eq!(
        described.version, info.version,
        "expected the table at the committed version"
    );
    assert_eq!(described.row_count, 25, "expected 25 rows in the table");
    assert_exactly_once(
        &g.verified_ids(&b.read_table(&table).await, "committed rows"),
        0..25,
        "two closed streams",
    );
    let state = b.session_state(&table, sid).await;
    assert_eq!(
        state.status,
        SessionStatus::Committed,
        "expected a committed session to be COMMITTED"
    );
    assert_eq!(
        state.committed_version,
        Some(info.version),
        "expected the session to report its committed version"
    );
}

/// A commit with an explicit (id, version) list makes only those streams visible.
pub async fn commit_explicit_streams(b: &Backend) {
    let (table, g) = simple(b, "commit_list", 43).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    let a = b
        .write_stream(&table, sid, Some("a"), vec![g.batch(0..10)])
        .await;
    b.write_stream(&table, sid, Some("b"), vec![g.batch(10..20)])
        .await;
    let c = b
        .write_stream(&table, sid, Some("c"), vec![g.batch(20..30)])
        .await;
    let list = vec![
        (a.stream_id.clone(), a.version),
        (c.stream_id.clone(), c.version),
    ];
    let info = b
        .service
        .commit_write_session(&table, sid, Some(&list))
        .await
        .unwrap();
    assert_eq!(
        info.rows, 20,
        "expected the 20 rows of streams a and c committed"
    );
    assert_table_ids(
        b,
        &table,
        (0..10).chain(20..30),
        "commit of streams a and c only",
    )
    .await;
}

/// Listing the same (id, version) twice in a commit does not commit its rows twice.
pub async fn commit_explicit_duplicate_pairs(b: &Backend) {
    let (table, g) = simple(b, "commit_dup_pairs", 44).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    let a = b
        .write_stream(&table, sid, Some("a"), vec![g.batch(0..10)])
        .await;
    let list = vec![
        (a.stream_id.clone(), a.version),
        (a.stream_id.clone(), a.version),
    ];
    match b
        .service
        .commit_write_session(&table, sid, Some(&list))
        .await
    {
        Err(Error::InvalidArgument { .. }) => {
            assert!(
                table_ids(b, &table).await.is_empty(),
                "expected a refused commit to make nothing visible"
            );
        }
        Err(e) => panic!(
            "expected a commit listing stream `a` twice to commit it once or be InvalidArgument, got {e:?}"
        ),
        Ok(info) => {
            assert_eq!(
                info.rows, 10,
                "expected a commit listing stream `a` twice to commit its 10 rows once"
            );
            assert_table_ids(b, &table, 0..10, "commit listing stream `a` twice").await;
        }
    }
}

/// An explicit commit list naming a superseded version next to its successor does not make
/// both visible: a superseded version is a retried attempt, and committing both would
/// duplicate the rows.
pub async fn commit_explicit_superseded_version(b: &Backend) {
    let (table, g) = simple(b, "commit_superseded", 69).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    let v0 = b
        .write_stream(&table, sid, Some("s"), vec![g.batch(0..5)])
        .await;
    let v1 = b
        .write_stream(&table, sid, Some("s"), vec![g.batch(0..5)])
        .await;
    assert_eq!(
        v1.version,
        v0.version + 1,
        "test setup: two versions of stream `s`"
    );
    let list = vec![("s".to_string(), v0.version), ("s".to_string(), v1.version)];
    let result = b
        .service
        .commit_write_session(&table, sid, Some(&list))
        .await;
    let got = table_ids(b, &table).await;
    expect_err!(
        result,
        Error::InvalidState { .. } | Error::InvalidArgument { .. },
        "InvalidState or InvalidArgument committing superseded version {} of stream `s` with version {} (rows now {got:?})",
        v0.version,
        v1.version
    );
    assert!(
        got.is_empty(),
        "expected a refused commit to make nothing visible, got {got:?}"
    );
}

/// A commit while a stream is open fails (and changes nothing); after closing, it works.
pub async fn commit_with_open_stream_fails(b: &Backend) {
    let (table, g) = simple(b, "commit_open", 45).await;
    let before = b.describe(&table).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    b.write_stream(&table, sid, None, vec![g.batch(0..10)])
        .await;
    let open = b.open_stream(&table, sid, None).await;
    b.write(&table, sid, &open, g.batch(10..20)).await.unwrap();
    expect_err!(
        b.service.commit_write_session(&table, sid, None).await,
        Error::InvalidState { .. },
        "InvalidState committing a session with an open stream"
    );
    expect_err!(
        b.service
            .commit_write_session(&table, sid, Some(&[(open.stream_id.clone(), open.version)]))
            .await,
        Error::InvalidState { .. },
        "InvalidState committing an explicitly listed open stream"
    );
    let after = b.describe(&table).await;
    assert_eq!(
        (after.version, after.row_count),
        (before.version, 0),
        "expected a failed commit to change nothing"
    );
    b.close_stream(&table, sid, &open.stream_id, open.version)
        .await;
    let info = b
        .service
        .commit_write_session(&table, sid, None)
        .await
        .unwrap_or_else(|e| {
            panic!("expected the commit to succeed once every stream is closed: {e}")
        });
    assert_eq!(info.rows, 20, "expected 20 rows committed");
    assert_table_ids(b, &table, 0..20, "commit after closing the open stream").await;
}

/// Abort: nothing becomes visible; the session refuses commit and writes; a committed
/// session cannot be aborted.
pub async fn abort(b: &Backend) {
    let (table, g) = simple(b, "abort", 46).await;
    fill(b, &table, &g, "", 0..5).await;
    let before = b.describe(&table).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    b.write_stream(&table, sid, None, vec![g.batch(100..110)])
        .await;
    let open = b.open_stream(&table, sid, None).await;
    b.write(&table, sid, &open, g.batch(110..115))
        .await
        .unwrap();
    b.service
        .abort_write_session(&table, sid)
        .await
        .unwrap_or_else(|e| panic!("expected abort to succeed: {e}"));
    let after = b.describe(&table).await;
    assert_eq!(
        (after.version, after.row_count),
        (before.version, 5),
        "expected an abort to leave the table unchanged"
    );
    assert_table_ids(b, &table, 0..5, "table after an abort").await;
    expect_err!(
        b.service.commit_write_session(&table, sid, None).await,
        Error::InvalidState { .. },
        "InvalidState committing an aborted session"
    );
    expect_err!(
        b.write(&table, sid, &open, g.batch(120..121)).await,
        Error::InvalidState { .. },
        "InvalidState writing to an aborted session"
    );
    expect_err!(
        b.service
            .create_write_stream(&table, sid, None, false)
            .await,
        Error::InvalidState { .. },
        "InvalidState creating a stream in an aborted session"
    );
    assert_table_ids(
        b,
        &table,
        0..5,
        "table after commit attempts on an aborted session",
    )
    .await;

    let committed = b.write_session(&table, "", false).await;
    b.write_stream(&table, &committed.session_id, None, vec![g.batch(200..203)])
        .await;
    b.commit(&table, &committed.session_id).await;
    expect_err!(
        b.service
            .abort_write_session(&table, &committed.session_id)
            .await,
        Error::InvalidState { .. },
        "InvalidState aborting a committed session"
    );
    assert_table_ids(
        b,
        &table,
        (0..5).chain(200..203),
        "rows of a committed session after an abort attempt",
    )
    .await;
}

/// Nothing written is visible before the commit; the commit makes it all visible at once,
/// as one new version.
pub async fn commit_is_atomic(b: &Backend) {
    let g = DataGen::simple(47);
    let table = b.create_gen_table("atomic", &g, PT_REGION).await;
    fill(b, &table, &g, "pt=old,region=1", 0..5).await;
    let before = b.describe(&table).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    let batch = with_region(
        &with_pt(&g.batch(10..40), |id| {
            Some(if id < 25 { "old" } else { "new" }.into())
        }),
        |_| 1,
    );
    b.write_stream(&table, sid, None, vec![batch]).await;
    let open = b.open_stream(&table, sid, None).await;
    b.write(
        &table,
        sid,
        &open,
        in_partition(&g.batch(40..45), "other", 2),
    )
    .await
    .unwrap();
    b.close_stream(&table, sid, &open.stream_id, open.version)
        .await;

    let during = b.describe(&table).await;
    assert_eq!(
        (during.version, during.row_count),
        (before.version, 5),
        "expected nothing visible before the commit"
    );
    assert_eq!(
        during.partitions, before.partitions,
        "expected no new partition before the commit"
    );
    assert_table_ids(b, &table, 0..5, "read before the commit").await;
    let preview = super::collect(b.service.preview(&table, None, &[], 1000).await.unwrap())
        .await
        .unwrap();
    assert_exactly_once(&ids(&preview), 0..5, "preview before the commit");

    let info = b.commit(&table, sid).await;
    assert_eq!(
        info.version,
        before.version + 1,
        "expected one commit to make exactly one new version"
    );
    assert_eq!(info.rows, 35, "expected 35 rows committed");
    let after = b.describe(&table).await;
    assert_eq!(
        (after.version, after.row_count),
        (info.version, 40),
        "expected every row visible after the commit"
    );
    let session = b.table_session(&table).await;
    assert_eq!(
        session.table_version, info.version,
        "expected a new read session on the committed version"
    );
    assert_table_ids(b, &table, (0..5).chain(10..45), "read after the commit").await;
}

/// A retried commit returns the same result and never applies the rows twice, even after
/// another session committed in between.
pub async fn commit_idempotent(b: &Backend) {
    let (table, g) = simple(b, "commit_twice", 48).await;
    let first = b.write_session(&table, "", false).await;
    b.write_stream(&table, &first.session_id, None, vec![g.batch(0..10)])
        .await;
    let c1 = b.commit(&table, &first.session_id).await;
    let c2 = b
        .service
        .commit_write_session(&table, &first.session_id, None)
        .await
        .unwrap_or_else(|e| panic!("expected a retried commit to succeed: {e}"));
    assert_eq!(
        c2, c1,
        "expected a retried commit to return the first commit's result"
    );
    assert_table_ids(b, &table, 0..10, "rows after a retried commit").await;

    let second = b.write_session(&table, "", false).await;
    b.write_stream(&table, &second.session_id, None, vec![g.batch(10..20)])
        .await;
    let c3 = b.commit(&table, &second.session_id).await;
    assert!(
        c3.version > c1.version,
        "expected the second session's commit on a newer version"
    );
    let c4 = b.commit(&table, &first.session_id).await;
    assert_eq!(
        c4, c1,
        "expected a commit retried after another commit to return the first result"
    );
    assert_eq!(
        b.describe(&table).await.version,
        c3.version,
        "expected the retry to make no new version"
    );
    assert_table_ids(b, &table, 0..20, "rows after retrying an earlier commit").await;
    let state = b.session_state(&table, &first.session_id).await;
    assert_eq!(
        state.committed_version,
        Some(c1.version),
        "expected the session to keep its committed version"
    );
}

/// Overwrite of an unpartitioned table replaces every row (an empty overwrite empties it).
pub async fn overwrite_table(b: &Backend) {
    let (table, g) = simple(b, "overwrite", 49).await;
    fill(b, &table, &g, "", 0..10).await;
    fill(b, &table, &g, "", 10..20).await;
    let session = b.write_session(&table, "", true).await;
    assert!(
        session.overwrite,
        "expected the session to report overwrite"
    );
    b.write_stream(&table, &session.session_id, None, vec![g.batch(100..105)])
        .await;
    assert_table_ids(b, &table, 0..20, "rows before the overwrite commits").await;
    b.commit(&table, &session.session_id).await;
    assert_exactly_once(
        &g.verified_ids(&b.read_table(&table).await, "overwritten"),
        100..105,
        "rows after an overwrite",
    );
    assert_eq!(
        b.describe(&table).await.row_count,
        5,
        "expected 5 rows after the overwrite"
    );

    let empty = b.write_session(&table, "", true).await;
    b.commit(&table, &empty.session_id).await;
    assert!(
        table_ids(b, &table).await.is_empty(),
        "expected an overwrite with no rows to empty the table"
    );
}

/// Overwrite of one partition replaces only it, statically or dynamically.
pub async fn overwrite_partition(b: &Backend) {
    let g = DataGen::simple(50);
    let table = b.create_gen_table("overwrite_part", &g, PT_REGION).await;
    fill(b, &table, &g, "pt=a,region=1", 0..10).await;
    fill(b, &table, &g, "pt=a,region=2", 10..20).await;
    fill(b, &table, &g, "pt=b,region=1", 20..30).await;
    b.write_and_commit(&table, "pt=a,region=1", true, vec![g.batch(100..103)])
        .await;
    assert_table_ids(
        b,
        &table,
        (100..103).chain(10..30),
        "after overwriting pt=a,region=1",
    )
    .await;
    let counts = partition_counts(b, &table).await;
    assert!(
        counts.contains(&(spec("pt=a,region=1").to_string(), 3)),
        "expected pt=a,region=1 to hold 3 rows, got {counts:?}"
    );

    // Dynamic overwrite: only the partitions the data names are replaced.
    let batch = in_partition(&g.batch(200..202), "b", 1);
    b.write_and_commit(&table, "", true, vec![batch]).await;
    assert_table_ids(
        b,
        &table,
        (100..103).chain(10..20).chain(200..202),
        "after a dynamic overwrite of pt=b,region=1",
    )
    .await;
}

/// A static partition: the data carries no partition columns; rows land in that partition.
pub async fn static_partition(b: &Backend) {
    let g = DataGen::simple(51);
    let table = b.create_gen_table("static_part", &g, PT_REGION).await;
    let session = b.write_session(&table, "pt=s/region=5", false).await;
    assert_eq!(
        session.partition,
        spec("pt=s,region=5"),
        "expected the session to report its partition"
    );
    assert!(
        session.write_schema.partition_columns.is_empty(),
        "expected no partition columns in a static session's write schema"
    );
    assert_eq!(
        session.write_schema.columns,
        g.table_schema(vec![]).columns,
        "expected the data columns in the write schema"
    );
    let sid = &session.session_id;
    let stream = b.open_stream(&table, sid, None).await;
    let carrying = with_columns(&g.batch(50..52), vec![constant_string("pt", "s", 2)]);
    expect_err!(
        b.write(&table, sid, &stream, carrying).await,
        Error::InvalidArgument { .. },
        "InvalidArgument writing a partition column the session's spec fixes"
    );
    b.write(&table, sid, &stream, g.batch(0..8)).await.unwrap();
    b.close_and_commit(&table, sid, &[&stream]).await;
    let batches = b.read_table_with_partitions(&table, &[]).await;
    assert_exactly_once(
        &g.verified_ids(&batches, "static partition"),
        0..8,
        "rows of the static partition",
    );
    check_constant(&batches, "pt", Value::Str("s".into()), "static partition");
    check_constant(&batches, "region", Value::Int(5), "static partition");

    for (what, partition) in [
        ("an unknown key", "nope=1"),
        ("a spec skipping the first level", "region=5"),
    ] {
        expect_err!(
            b.service
                .create_write_session(&session_request(&table, partition))
                .await,
            Error::InvalidArgument { .. },
            "InvalidArgument for a write session with {what}"
        );
    }
    let (plain, _) = simple(b, "static_plain", 51).await;
    expect_err!(
        b.service
            .create_write_session(&session_request(&plain, "pt=1"))
            .await,
        Error::InvalidArgument { .. },
        "InvalidArgument for a partition spec on an unpartitioned table"
    );
}

/// Dynamic partitions: the data carries the partition columns; one batch may fill several
/// partitions; NULL or invalid partition values are refused.
pub async fn dynamic_partitions(b: &Backend) {
    let g = DataGen::simple(52);
    let table = b.create_gen_table("dynamic", &g, PT_REGION).await;
    let session = b.write_session(&table, "", false).await;
    assert_eq!(
        partition_column_names(&session),
        vec!["pt", "region"],
        "expected both partition columns in a dynamic session's write schema"
    );
    let sid = &session.session_id;
    let stream = b.open_stream(&table, sid, None).await;
    let pt_of = |id: i64| ["a", "b", "c"][(id % 3) as usize].to_string();
    let batch = with_region(&with_pt(&g.batch(0..30), |id| Some(pt_of(id))), |id| id % 2);
    b.write(&table, sid, &stream, batch).await.unwrap();
    for (what, bad) in [
        (
            "a NULL partition value",
            with_region(
                &with_pt(&g.batch(30..32), |id| (id == 31).then(|| "a".to_string())),
                |_| 0,
            ),
        ),
        (
            "a partition value with a slash",
            in_partition(&g.batch(30..32), "x/y", 0),
        ),
        (
            "a partition value `..`",
            in_partition(&g.batch(30..32), "..", 0),
        ),
        (
            "a missing partition column",
            with_pt(&g.batch(30..32), |_| Some("a".into())),
        ),
    ] {
        expect_err!(
            b.write(&table, sid, &stream, bad).await,
            Error::InvalidArgument { .. } | Error::TypeMismatch { .. },
            "InvalidArgument or TypeMismatch writing {what}"
        );
    }
    let info = b.close_and_commit(&table, sid, &[&stream]).await;
    assert_eq!(info.rows, 30, "expected only the 30 valid rows committed");
    let parts = partition_counts(b, &table).await;
    let mut want: Vec<(String, u64)> = ["a", "b", "c"]
        .iter()
        .flat_map(|pt| [0, 1].map(|r| (spec(&format!("pt={pt},region={r}")).to_string(), 5)))
        .collect();
    want.sort();
    assert_eq!(
        parts, want,
        "expected six partitions of five rows from one batch"
    );
    let batches = b.read_table_with_partitions(&table, &[]).await;
    assert_exactly_once(
        &g.verified_ids(&batches, "dynamic partitions"),
        0..30,
        "rows of the dynamic partitions",
    );
    for batch in &batches {
        let (pt, region) = (
            batch.column_by_name("pt").unwrap(),
            batch.column_by_name("region").unwrap(),
        );
        for (row, id) in ids(std::slice::from_ref(batch)).into_iter().enumerate() {
            assert_eq!(
                value_at(pt.as_ref(), row),
                Ok(Value::Str(pt_of(id))),
                "expected id {id} in pt={}",
                pt_of(id)
            );
            assert_eq!(
                value_at(region.as_ref(), row),
                Ok(Value::Int(id % 2)),
                "expected id {id} in region={}",
                id % 2
            );
        }
    }
}

/// A partial static spec: the first level fixed, the rest from the data.
pub async fn partial_static_partition(b: &Backend) {
    let g = DataGen::simple(53);
    let table = b.create_gen_table("partial_static", &g, PT_REGION).await;
    let session = b.write_session(&table, "pt=p1", false).await;
    assert_eq!(
        partition_column_names(&session),
        vec!["region"],
        "expected only the dynamic partition column in the write schema"
    );
    let sid = &session.session_id;
    let stream = b.open_stream(&table, sid, None).await;
    expect_err!(
        b.write(&table, sid, &stream, in_partition(&g.batch(0..2), "p1", 1))
            .await,
        Error::InvalidArgument { .. },
        "InvalidArgument writing the partition column the spec fixes"
    );
    b.write(
        &table,
        sid,
        &stream,
        with_region(&g.batch(0..20), |id| 1 + id % 2),
    )
    .await
    .unwrap();
    b.close_and_commit(&table, sid, &[&stream]).await;
    let parts = partition_counts(b, &table).await;
    assert_eq!(
        parts,
        vec![
            (spec("pt=p1,region=1").to_string(), 10),
            (spec("pt=p1,region=2").to_string(), 10)
        ],
        "expected two partitions under pt=p1"
    );
    let batches = b
        .read_table_with_partitions(&table, &["pt=p1,region=2"])
        .await;
    assert_exactly_once(
        &g.verified_ids(&batches, "partial static"),
        (0..20).filter(|id| id % 2 == 1),
        "rows of pt=p1,region=2",
    );
    check_constant(
        &batches,
        "pt",
        Value::Str("p1".into()),
        "partial static partition",
    );
    check_constant(
        &batches,
        "region",
        Value::Int(2),
        "partial static partition",
    );
}

/// Partition values must fit their column's type: a non-integer value for a BIGINT partition
/// column is refused (statically or dynamically), and the table stays readable.
pub async fn partition_values_typed(b: &Backend) {
    let g = DataGen::simple(66);
    let table = b.create_gen_table("partition_types", &g, PT_REGION).await;
    // Static: refused at session creation, at the write or at the commit.
    let request = session_request(&table, "pt=a,region=abc");
    let outcome = match b.service.create_write_session(&request).await {
        Err(e) => Err(e),
        Ok(session) => {
            let sid = session.session_id.clone();
            let stream = b.open_stream(&table, &sid, None).await;
            match b.write(&table, &sid, &stream, g.batch(0..3)).await {
                Err(e) => Err(e),
                Ok(_) => {
                    b.close_stream(&table, &sid, &stream.stream_id, stream.version)
                        .await;
                    b.service
                        .commit_write_session(&table, &sid, None)
                        .await
                        .map(|_| ())
                }
            }
        }
    };
    expect_err!(
        outcome,
        Error::InvalidArgument { .. } | Error::TypeMismatch { .. },
        "InvalidArgument or TypeMismatch for the static value `abc` of BIGINT partition column region"
    );
    // Dynamic: a text value that is no integer.
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    let stream = b.open_stream(&table, sid, None).await;
    let text_region = with_columns(
        &with_pt(&g.batch(3..6), |_| Some("a".into())),
        vec![(
            Field::new("region", DataType::Utf8, true),
            Arc::new(StringArray::from(vec!["abc", "1", "2"])) as ArrayRef,
        )],
    );
    expect_err!(
        b.write(&table, sid, &stream, text_region).await,
        Error::InvalidArgument { .. } | Error::TypeMismatch { .. },
        "InvalidArgument or TypeMismatch for the dynamic value `abc` of BIGINT partition column region"
    );
    b.write(&table, sid, &stream, in_partition(&g.batch(6..9), "a", 4))
        .await
        .unwrap();
    b.close_and_commit(&table, sid, &[&stream]).await;
    let batches = b.read_table_with_partitions(&table, &[]).await;
    assert_exactly_once(
        &g.verified_ids(&batches, "typed partitions"),
        6..9,
        "rows after refused partition values",
    );
    check_constant(&batches, "region", Value::Int(4), "typed partitions");
}

/// An exactly-once stream in a new session of a new simple table.
struct EoStream<'a> {
    b: &'a Backend,
    table: TableId,
    g: DataGen,
    sid: String,
    stream: WriteStream,
}

impl EoStream<'_> {
    /// Writes rows `ids` to `stream` at row offset `offset`, with access token `token`.
    async fn write_to(
        &self,
        stream: &WriteStream,
        offset: Option<u64>,
        token: Option<&str>,
        ids: Range<i64>,
    ) -> Result<WriteAck> {
        self.b
            .service
            .write(WriteRequest {
                table: self.table.clone(),
                session_id: self.sid.clone(),
                stream_id: stream.stream_id.clone(),
                version: stream.version,
                row_offset: offset,
                access_token: token.map(str::to_string),
                batches: vec![self.g.batch(ids)],
            })
            .await
    }

    /// Writes rows `ids` to the stream at `offset`, with `token`.
    async fn write_with(
        &self,
        offset: Option<u64>,
        token: Option<&str>,
        ids: Range<i64>,
    ) -> Result<WriteAck> {
        self.write_to(&self.stream, offset, token, ids).await
    }

    /// Writes rows `ids` to the stream at `offset` with its own token; panics on failure.
    async fn write(&self, offset: u64, ids: Range<i64>) -> WriteAck {
        self.write_with(Some(offset), Some(&self.stream.access_token), ids)
            .await
            .unwrap_or_else(|e| panic!("expected the exactly-once write at offset {offset}: {e}"))
    }

    /// The stream's next row offset, as the service reports it.
    async fn row_offset(&self) -> u64 {
        let state = self
            .b
            .stream_state(&self.table, &self.sid, &self.stream.stream_id);
        state.await.row_offset
    }
}

async fn exactly_once_stream<'a>(b: &'a Backend, prefix: &str, seed: u64) -> EoStream<'a> {
    let (table, g) = simple(b, prefix, seed).await;
    let session = b.write_session(&table, "", false).await;
    let stream = b
        .service
        .create_write_stream(&table, &session.session_id, None, true)
        .await
        .unwrap();
    assert!(stream.exactly_once, "expected an exactly-once stream");
    assert!(
        !stream.access_token.is_empty(),
        "expected an exactly-once stream to have an access token"
    );
    assert_eq!(
        stream.row_offset, 0,
        "expected a new exactly-once stream at row offset 0"
    );
    EoStream {
        b,
        table,
        g,
        sid: session.session_id,
        stream,
    }
}

fn ack(next_row_offset: u64, rows_written: u64, duplicate: bool) -> WriteAck {
    WriteAck {
        next_row_offset,
        rows_written,
        duplicate,
    }
}

/// A replayed write (an offset below the stream's) is acknowledged as a duplicate and not
/// applied.
pub async fn exactly_once_duplicates(b: &Backend) {
    let eo = exactly_once_stream(b, "eo_dup", 54).await;
    let (table, sid) = (&eo.table, &eo.sid);
    let first = eo.write(0, 0..10).await;
    assert_eq!(
        first,
        ack(10, 10, false),
        "expected the first write applied"
    );
    let replay = eo.write(0, 0..10).await;
    assert_eq!(
        replay,
        ack(10, 0, true),
        "expected a replay acknowledged as duplicate"
    );
    let next = eo.write(10, 10..15).await;
    assert_eq!(next, ack(15, 5, false), "expected the next write applied");
    for (offset, range) in [(10, 10..15), (0, 0..10)] {
        let replay = eo.write(offset, range).await;
        assert!(
            replay.duplicate && replay.rows_written == 0,
            "expected the replay at offset {offset} to be a duplicate, got {replay:?}"
        );
        assert_eq!(
            replay.next_row_offset, 15,
            "expected a replay to report the current offset 15"
        );
    }
    assert_eq!(eo.row_offset().await, 15, "expected offset 15");
    let info = b.close_and_commit(table, sid, &[&eo.stream]).await;
    assert_eq!(
        info.rows, 15,
        "expected 15 rows committed despite the replays"
    );
    assert_exactly_once(
        &eo.g
            .verified_ids(&b.read_table(table).await, "exactly-once"),
        0..15,
        "rows after replays",
    );
}

/// A write whose offset leaves a gap (or overlaps partly) is refused and changes nothing.
pub async fn exactly_once_gap(b: &Backend) {
    let eo = exactly_once_stream(b, "eo_gap", 55).await;
    let token = Some(eo.stream.access_token.as_str());
    eo.write(0, 0..10).await;
    for (what, offset, range) in [("a gap", 11, 11..15), ("a partial overlap", 5, 5..15)] {
        expect_err!(
            eo.write_with(Some(offset), token, range).await,
            Error::InvalidArgument { .. } | Error::OutOfRange { .. },
            "InvalidArgument or OutOfRange for {what} at offset {offset} (expected offset 10)"
        );
    }
    expect_err!(
        eo.write_with(None, token, 10..12).await,
        Error::InvalidArgument { .. },
        "InvalidArgument for an exactly-once write without a row offset"
    );
    let offset = eo.row_offset().await;
    assert_eq!(offset, 10, "expected offset 10 after refused writes");
    eo.write(10, 10..12).await;
    b.close_and_commit(&eo.table, &eo.sid, &[&eo.stream]).await;
    assert_table_ids(b, &eo.table, 0..12, "rows after refused gaps").await;
}

/// Exactly-once writes without the stream's access token, or with a wrong one, are refused.
pub async fn exactly_once_access_token(b: &Backend) {
    let eo = exactly_once_stream(b, "eo_token", 56).await;
    for (what, token) in [
        ("no access token", None),
        ("a wrong access token", Some("wrong-token")),
        ("an empty access token", Some("")),
    ] {
        expect_err!(
            eo.write_with(Some(0), token, 0..5).await,
            Error::Unauthenticated { .. } | Error::InvalidArgument { .. },
            "Unauthenticated or InvalidArgument for an exactly-once write with {what}"
        );
    }
    let other = b
        .service
        .create_write_stream(&eo.table, &eo.sid, None, true)
        .await
        .unwrap();
    assert_ne!(
        other.access_token, eo.stream.access_token,
        "expected streams to have distinct access tokens"
    );
    expect_err!(
        eo.write_with(Some(0), Some(&other.access_token), 0..5)
            .await,
        Error::Unauthenticated { .. } | Error::InvalidArgument { .. },
        "Unauthenticated or InvalidArgument for a write with another stream's access token"
    );
    let offset = eo.row_offset().await;
    assert_eq!(offset, 0, "expected refused writes to apply nothing");
    eo.write(0, 0..5).await;
    b.close_and_commit(&eo.table, &eo.sid, &[&eo.stream, &other])
        .await;
    assert_table_ids(b, &eo.table, 0..5, "rows of the authorised write only").await;
}

/// `get_write_stream` returns the offset and token to resume an exactly-once stream from.
pub async fn exactly_once_resume(b: &Backend) {
    let eo = exactly_once_stream(b, "eo_resume", 57).await;
    eo.write(0, 0..7).await;
    eo.write(7, 7..13).await;
    // A writer that lost its state asks where to resume.
    let state = b
        .stream_state(&eo.table, &eo.sid, &eo.stream.stream_id)
        .await;
    assert_eq!(
        state.row_offset, 13,
        "expected the stream's next row offset 13"
    );
    assert_eq!(
        state.access_token, eo.stream.access_token,
        "expected get_write_stream to return the access token"
    );
    assert_eq!(
        state.version, eo.stream.version,
        "expected the same version"
    );
    assert!(
        state.exactly_once,
        "expected the stream reported exactly-once"
    );
    let ack = eo
        .write_to(
            &state,
            Some(state.row_offset),
            Some(&state.access_token),
            13..20,
        )
        .await
        .unwrap();
    assert_eq!(ack.next_row_offset, 20, "expected offset 20 after resuming");
    b.close_and_commit(&eo.table, &eo.sid, &[&state]).await;
    assert_table_ids(b, &eo.table, 0..20, "rows of a resumed stream").await;
}

/// Replaces column `name` of `batch` by `array` (with a matching field).
fn replace_column(batch: &RecordBatch, name: &str, array: ArrayRef) -> RecordBatch {
    let schema = batch.schema();
    let i = schema.index_of(name).unwrap();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = Field::new(name, array.data_type().clone(), true);
    let mut columns = batch.columns().to_vec();
    columns[i] = array;
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap()
}

/// For each `(what, column, array)`, `base` with `column` replaced by `array`: the bad
/// writes of [`refused_writes`].
fn replaced_columns<'a>(
    base: &RecordBatch,
    changes: Vec<(&'a str, &'a str, ArrayRef)>,
) -> Vec<(&'a str, RecordBatch, &'a str)> {
    let replace = |(what, column, array)| (what, replace_column(base, column, array), column);
    changes.into_iter().map(replace).collect()
}

/// Opens a stream, runs `bad` writes expecting each refused, then writes `good`, commits and
/// checks that only `good` is visible.
async fn refused_writes(
    b: &Backend,
    table: &TableId,
    g: &DataGen,
    bad: Vec<(&str, RecordBatch, &str)>,
    good: std::ops::Range<i64>,
) {
    let session = b.write_session(table, "", false).await;
    let sid = &session.session_id;
    let stream = b.open_stream(table, sid, None).await;
    for (what, batch, column) in bad {
        let e = match b.write(table, sid, &stream, batch).await {
            Ok(ack) => {
                panic!("expected writing {what} to be refused, but it was accepted: {ack:?}")
            }
            Err(e) => e,
        };
        match &e {
            Error::TypeMismatch { column: c, .. } => {
                assert!(
                    c.eq_ignore_ascii_case(column),
                    "expected the TypeMismatch for {what} to name column `{column}`, got `{c}`"
                )
            }
            Error::InvalidArgument { .. } => {
                assert!(
                    e.to_string().contains(column),
                    "expected the error for {what} to name column `{column}`: {e}"
                )
            }
            other => panic!(
                "expected TypeMismatch or InvalidArgument naming `{column}` for {what}, got {other:?}"
            ),
        }
    }
    assert_eq!(
        b.stream_state(table, sid, &stream.stream_id)
            .await
            .row_offset,
        0,
        "expected refused writes to add no rows"
    );
    b.write(table, sid, &stream, g.batch(good.clone()))
        .await
        .unwrap();
    let info = b.close_and_commit(table, sid, &[&stream]).await;
    assert_eq!(
        info.rows,
        (good.end - good.start) as u64,
        "expected only the valid rows committed"
    );
    assert_exactly_once(
        &g.verified_ids(&b.read_table(table).await, "after refused writes"),
        good,
        "rows after refused writes",
    );
}

/// A column of the wrong Arrow type is a `TypeMismatch` naming the column.
pub async fn type_mismatch(b: &Backend) {
    let (table, g) = simple(b, "type_mismatch", 58).await;
    let base = g.batch(0..3);
    let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let texts: ArrayRef = Arc::new(StringArray::from(vec!["1", "2", "3"]));
    let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
    let bad = replaced_columns(
        &base,
        vec![
            ("Int64 data for STRING column s", "s", ints.clone()),
            ("Utf8 data for DOUBLE column d", "d", texts),
            ("Float64 data for BIGINT column id", "id", floats),
        ],
    );
    refused_writes(b, &table, &g, bad, 10..20).await;

    let all = DataGen::all_types(59);
    let wide = b.create_gen_table("type_mismatch_all", &all, &[]).await;
    let wrong_struct = StructArray::new(
        Fields::from(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Utf8, true),
        ]),
        vec![
            ints.clone(),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
        ],
        None,
    );
    let wide_decimal = Decimal128Array::from(vec![1i128, 2, 3])
        .with_precision_and_scale(20, 2)
        .unwrap();
    let bad = replaced_columns(
        &all.batch(0..3),
        vec![
            (
                "a struct with other field names for c_struct",
                "c_struct",
                Arc::new(wrong_struct),
            ),
            (
                "Int32 data for DATE column c_date",
                "c_date",
                Arc::new(Int32Array::from(vec![1, 2, 3])),
            ),
            (
                "decimal(20,2) data for DECIMAL(10,2) column c_decimal",
                "c_decimal",
                Arc::new(wide_decimal),
            ),
            ("Int64 data for TINYINT column c_tinyint", "c_tinyint", ints),
            (
                "Utf8 data for ARRAY<BIGINT> column c_array",
                "c_array",
                Arc::new(StringArray::from(vec!["[1]", "[2]", "[3]"])),
            ),
        ],
    );
    refused_writes(b, &wide, &all, bad, 10..20).await;
}

/// A column the table does not have is `InvalidArgument` naming it.
pub async fn unknown_extra_column(b: &Backend) {
    let (table, g) = simple(b, "extra_column", 60).await;
    let extra = with_columns(&g.batch(0..3), vec![constant_string("zzz_extra", "v", 3)]);
    refused_writes(
        b,
        &table,
        &g,
        vec![("an unknown column zzz_extra", extra, "zzz_extra")],
        5..9,
    )
    .await;
}

/// A column given twice in the data is `InvalidArgument` naming it (not silently resolved).
pub async fn duplicate_data_column_rejected(b: &Backend) {
    let (table, g) = simple(b, "duplicate_column", 67).await;
    let twice = with_columns(&g.batch(0..3), vec![constant_string("s", "other", 3)]);
    refused_writes(b, &table, &g, vec![("column s twice", twice, "s")], 5..9).await;
}

/// Decimal data whose values exceed the column's precision is refused, even when its Arrow
/// type claims that precision.
pub async fn decimal_out_of_precision_rejected(b: &Backend) {
    let g = DataGen::all_types(68);
    let table = b.create_gen_table("decimal_precision", &g, &[]).await;
    let too_big = Decimal128Array::from(vec![
        Some(100_000_000_000i128),
        Some(1),
        Some(-1_000_000_000_000),
    ])
    .with_precision_and_scale(10, 2)
    .unwrap();
    let bad = replace_column(&g.batch(0..3), "c_decimal", Arc::new(too_big));
    refused_writes(
        b,
        &table,
        &g,
        vec![(
            "values of 13 digits in a DECIMAL(10,2) column",
            bad,
            "c_decimal",
        )],
        5..9,
    )
    .await;
}

/// A table column missing from the data is refused, naming it.
pub async fn missing_column(b: &Backend) {
    let (table, g) = simple(b, "missing_column", 61).await;
    let bad = vec![
        (
            "data without column d",
            without_columns(&g.batch(0..3), &["d"]),
            "d",
        ),
        (
            "data without column id",
            without_columns(&g.batch(0..3), &["id"]),
            "id",
        ),
    ];
    refused_writes(b, &table, &g, bad, 5..9).await;
}

/// NULLs in a NOT NULL column are refused, naming it.
pub async fn not_null_violation(b: &Backend) {
    let (table, g) = simple(b, "not_null", 62).await;
    let ids_with_null: ArrayRef = Arc::new(Int64Array::from(vec![Some(0), None, Some(2)]));
    let bad = replace_column(&g.batch(0..3), "id", ids_with_null);
    assert_eq!(
        bad.column(bad.schema().index_of("id").unwrap())
            .null_count(),
        1,
        "test setup: one NULL id"
    );
    let null_typed = replace_column(
        &g.batch(0..3),
        "id",
        Arc::new(arrow_array::NullArray::new(3)),
    );
    let bad = vec![
        ("a NULL in NOT NULL column id", bad, "id"),
        ("a Null-typed NOT NULL column id", null_typed, "id"),
    ];
    refused_writes(b, &table, &g, bad, 5..9).await;
}

/// Committed and aborted sessions refuse streams, writes and closes.
pub async fn write_after_commit_or_abort(b: &Backend) {
    let (table, g) = simple(b, "after_end", 63).await;
    for end in ["committed", "aborted"] {
        let session = b.write_session(&table, "", false).await;
        let sid = &session.session_id;
        let open = b.open_stream(&table, sid, None).await;
        b.close_stream(&table, sid, &open.stream_id, open.version)
            .await;
        let reopened = b.open_stream(&table, sid, Some(&open.stream_id)).await;
        b.close_stream(&table, sid, &reopened.stream_id, reopened.version)
            .await;
        if end == "committed" {
            b.commit(&table, sid).await;
        } else {
            b.service.abort_write_session(&table, sid).await.unwrap();
        }
        expect_err!(
            b.service
                .create_write_stream(&table, sid, None, false)
                .await,
            Error::InvalidState { .. },
            "InvalidState creating a stream in a {end} session"
        );
        expect_err!(
            b.service
                .create_write_stream(&table, sid, Some(&open.stream_id), false)
                .await,
            Error::InvalidState { .. },
            "InvalidState re-creating a stream in a {end} session"
        );
        expect_err!(
            b.write(&table, sid, &reopened, g.batch(0..2)).await,
            Error::InvalidState { .. },
            "InvalidState writing to a {end} session"
        );
        expect_err!(
            b.service
                .close_write_stream(&table, sid, &reopened.stream_id, reopened.version)
                .await,
            Error::InvalidState { .. },
            "InvalidState closing a stream of a {end} session"
        );
    }
    assert!(
        table_ids(b, &table).await.is_empty(),
        "expected no rows from refused writes"
    );
}

/// Past its expiration time, a write session refuses writes and commits with
/// `SessionExpired`, and nothing becomes visible.
pub async fn write_session_expiry(b: &Backend) {
    if b.clock.is_none() {
        return skip("write_session_expiry", "the backend has no ManualClock");
    }
    let (table, g) = simple(b, "write_expiry", 64).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    assert!(
        session.expiration_time_ms > b.now_ms(),
        "expected a new write session to expire in the future"
    );
    let closed = b.write_stream(&table, sid, None, vec![g.batch(0..5)]).await;
    let open = b.open_stream(&table, sid, None).await;
    b.expire(session.expiration_time_ms);
    expect_err!(
        b.write(&table, sid, &open, g.batch(5..6)).await,
        Error::SessionExpired { .. },
        "SessionExpired writing to an expired session"
    );
    expect_err!(
        b.service
            .create_write_stream(&table, sid, None, false)
            .await,
        Error::SessionExpired { .. },
        "SessionExpired creating a stream in an expired session"
    );
    expect_err!(
        b.service
            .commit_write_session(
                &table,
                sid,
                Some(&[(closed.stream_id.clone(), closed.version)])
            )
            .await,
        Error::SessionExpired { .. },
        "SessionExpired committing an expired session"
    );
    match b.service.get_write_session(&table, sid).await {
        Ok(s) => assert_eq!(
            s.status,
            SessionStatus::Expired,
            "expected an expired write session's status EXPIRED"
        ),
        Err(Error::SessionExpired { .. }) => {}
        Err(e) => panic!(
            "expected status EXPIRED or SessionExpired for an expired write session, got {e:?}"
        ),
    }
    assert!(
        table_ids(b, &table).await.is_empty(),
        "expected nothing visible from an expired session"
    );
}

/// Every type round-trips: written in batches of several sizes (columns in any order, an
/// empty batch among them), read back with every hash verified and every value equal to
/// the generator's.
pub async fn datagen_round_trip(b: &Backend) {
    let g = DataGen::all_types(65);
    let table = b.create_gen_table("round_trip", &g, &[]).await;
    let session = b.write_session(&table, "", false).await;
    let sid = &session.session_id;
    b.write_stream(
        &table,
        sid,
        None,
        vec![
            g.batch(0..1),
            reversed_columns(&g.batch(1..101)),
            g.batch(101..101),
            g.batch(101..351),
        ],
    )
    .await;
    b.write_stream(&table, sid, None, g.batches(351..400, 16))
        .await;
    let info = b.commit(&table, sid).await;
    assert_eq!(info.rows, 400, "expected 400 rows committed");

    let read = b.table_session(&table).await;
    let expected_types = field_types(&g.arrow_schema());
    assert_eq!(
        field_types(&read.schema.to_arrow_schema(&read.arrow_options, true)),
        expected_types,
        "expected the session's Arrow schema to be the written one"
    );
    let batches = b.read_session_rows(&read).await.unwrap();
    for batch in &batches {
        assert_eq!(
            field_types(&batch.schema()),
            expected_types,
            "expected every read batch in the table's Arrow types"
        );
    }
    assert_exactly_once(
        &g.verified_ids(&batches, "all-types round trip"),
        0..400,
        "all-types round trip",
    );
    let nulls: usize = batches
        .iter()
        .map(|b| b.column_by_name("c_string").unwrap().null_count())
        .sum();
    assert!(
        nulls > 0,
        "test setup: expected some NULL strings among 400 generated rows"
    );

    let rows = b
        .read_session(&ReadSessionRequest {
            split_options: SplitOptions::row_offset(),
            ..ReadSessionRequest::new(table.clone())
        })
        .await;
    let request = paiio_storage::service::ReadRequest {
        max_batch_rows: 33,
        ..paiio_storage::service::ReadRequest::new(
            table.clone(),
            &rows.session_id,
            paiio_storage::service::ReadRange::Rows {
                offset: 0,
                count: 400,
            },
        )
    };
    let batches = b.read(&request).await.unwrap();
    assert_eq!(row_count(&batches), 400, "expected 400 rows by row offset");
    assert_exactly_once(
        &g.verified_ids(&batches, "all-types round trip by row offset"),
        0..400,
        "all-types round trip by row offset",
    );
}
