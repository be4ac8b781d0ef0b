//! Writers and readers racing on the local warehouse (RELIABILITY F12).
//!
//! Every row carries a unique id `key * STRIDE + i`, where `key` names the commit that wrote
//! it, and a hash of the id. A reader groups what it reads by commit: each commit is either
//! entirely visible or entirely absent, nothing is visible twice, and a read delivers exactly
//! the rows its session declared.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use futures::StreamExt;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::{
    Column, CommitInfo, CreateTableOptions, Error, OdpsType, PartitionSpec, ReadRange, ReadRequest,
    ReadSession, ReadSessionRequest, SessionStatus, SplitOptions, TableId, TableSchema,
    TableService, WriteAck, WriteRequest, WriteSessionRequest, WriteStream,
};

/// Row ids of commit `key` are `key * STRIDE + i`.
const STRIDE: u64 = 1 << 16;

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn row_hash(id: u64) -> i64 {
    mix(id ^ 0x1234_5678) as i64
}

fn schema() -> TableSchema {
    schema_with(&[], true)
}

/// Columns `id` and `h` (bigint), then string columns `extra`; partitioned by `pt` or not.
fn schema_with(extra: &[&str], partitioned: bool) -> TableSchema {
    let mut columns = vec![
        Column::new("id", OdpsType::BigInt),
        Column::new("h", OdpsType::BigInt),
    ];
    columns.extend(extra.iter().map(|c| Column::new(*c, OdpsType::String)));
    let partitions = partitioned.then(|| Column::new("pt", OdpsType::String));
    TableSchema::new(columns, partitions.into_iter().collect()).unwrap()
}

fn spec(pt: &str) -> PartitionSpec {
    PartitionSpec::from_pairs([("pt", pt)]).unwrap()
}

/// Where a commit's rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// One static partition.
    Static(String),
    /// Dynamic partitioning: each row to one of two partitions, by its id.
    Dynamic(String, String),
}

/// One commit: its key, its rows and where they go.
#[derive(Debug, Clone)]
struct Commit {
    key: u64,
    rows: u64,
    target: Target,
    overwrite: bool,
    streams: u64,
}

impl Commit {
    fn new(key: u64, rows: u64, target: Target) -> Self {
        Commit {
            key,
            rows,
            target,
            overwrite: false,
            streams: 1 + mix(key) % 2,
        }
    }

    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.rows).map(move |i| self.key * STRIDE + i)
    }

    fn partition_of(&self, id: u64) -> String {
        match &self.target {
            Target::Static(pt) => pt.clone(),
            Target::Dynamic(a, b) => {
                if mix(id) & 1 == 0 {
                    a.clone()
                } else {
                    b.clone()
                }
            }
        }
    }
}

fn batch(commit: &Commit, ids: &[u64]) -> RecordBatch {
    let dynamic = matches!(commit.target, Target::Dynamic(..));
    rows_batch(ids, dynamic.then_some(|id| commit.partition_of(id)))
}

/// The rows `ids` (id and hash), with a `pt` column of `pt(id)` when given.
fn rows_batch(ids: &[u64], pt: Option<impl Fn(u64) -> String>) -> RecordBatch {
    let mut fields = vec![
        Field::new("id", DataType::Int64, true),
        Field::new("h", DataType::Int64, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|&id| id as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|&id| row_hash(id)),
        )),
    ];
    if let Some(pt) = pt {
        fields.push(Field::new("pt", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter_values(
            ids.iter().map(|&id| pt(id)),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Writes `batch` to a stream version in one request.
async fn write_batch(
    w: &LocalWarehouse,
    table: &TableId,
    sid: &str,
    stream: &WriteStream,
    batch: RecordBatch,
) -> paiio_storage::Result<WriteAck> {
    w.write(WriteRequest {
        table: table.clone(),
        session_id: sid.to_string(),
        stream_id: stream.stream_id.clone(),
        version: stream.version,
        row_offset: None,
        access_token: None,
        batches: vec![batch],
    })
    .await
}

/// Writes `batch` in a new session (overwriting or not) of one stream, and commits it.
async fn commit_batch(
    w: &LocalWarehouse,
    request: &WriteSessionRequest,
    batch: RecordBatch,
) -> CommitInfo {
    let table = &request.table;
    let s = w.create_write_session(request).await.unwrap();
    let sid = &s.session_id;
    let st = w
        .create_write_stream(table, sid, None, false)
        .await
        .unwrap();
    write_batch(w, table, sid, &st, batch).await.unwrap();
    w.close_write_stream(table, sid, &st.stream_id, st.version)
        .await
        .unwrap();
    w.commit_write_session(table, sid, None).await.unwrap()
}

/// The ids of rows `0..count` of a RowOffset session.
async fn read_row_ids(
    w: &LocalWarehouse,
    table: &TableId,
    session_id: &str,
    count: u64,
) -> paiio_storage::Result<Vec<u64>> {
    let range = ReadRange::Rows { offset: 0, count };
    let mut stream = w
        .read(&ReadRequest::new(table.clone(), session_id, range))
        .await?;
    let mut ids = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        let col = b.column_by_name("id").unwrap();
        let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
        ids.extend(col.values().iter().map(|&v| v as u64));
    }
    Ok(ids)
}

/// Writes a commit's rows in a new session and closes its streams; returns the session id.
async fn prepare(w: &LocalWarehouse, table: &TableId, commit: &Commit) -> String {
    let mut request = WriteSessionRequest::new(table.clone());
    request.overwrite = commit.overwrite;
    if let Target::Static(pt) = &commit.target {
        request.partition = spec(pt);
    }
    let session = w
        .create_write_session(&request)
        .await
        .unwrap_or_else(|e| panic!("creating a write session for commit {}: {e}", commit.key));
    let sid = session.session_id;
    let ids: Vec<u64> = commit.ids().collect();
    for k in 0..commit.streams {
        let part = &ids[ids.len() * k as usize / commit.streams as usize
            ..ids.len() * (k as usize + 1) / commit.streams as usize];
        let stream = w
            .create_write_stream(table, &sid, None, false)
            .await
            .unwrap();
        if !part.is_empty() {
            write_batch(w, table, &sid, &stream, batch(commit, part))
                .await
                .unwrap_or_else(|e| panic!("writing commit {}: {e}", commit.key));
        }
        w.close_write_stream(table, &sid, &stream.stream_id, stream.version)
            .await
            .unwrap();
    }
    sid
}

async fn write_and_commit(w: &LocalWarehouse, table: &TableId, commit: &Commit) -> CommitInfo {
    let sid = prepare(w, table, commit).await;
    let info = w
        .commit_write_session(table, &sid, None)
        .await
        .unwrap_or_else(|e| panic!("committing commit {} (session {sid}): {e}", commit.key));
    assert_eq!(
        info.rows, commit.rows,
        "commit {} reports {} rows, it wrote {}",
        commit.key, info.rows, commit.rows
    );
    info
}

/// One row as read: id, hash, partition.
type Row = (u64, i64, String);

fn row_session_request(table: &TableId) -> ReadSessionRequest {
    let mut request = ReadSessionRequest::new(table.clone());
    request.split_options = SplitOptions::row_offset();
    request.required_partition_columns = vec!["pt".into()];
    request
}

/// Reads every row of a session: all its splits, or (RowOffset) all rows in `chunks` ranges.
/// Asserts every range delivers exactly the rows it covers.
async fn read_session(w: &LocalWarehouse, session: &ReadSession, chunks: u64) -> Vec<Row> {
    let count = session.record_count as u64;
    let ranges: Vec<ReadRange> = if session.splits_count < 0 {
        let chunks = chunks.clamp(1, count.max(1));
        (0..chunks)
            .map(|i| {
                let (lo, hi) = (count * i / chunks, count * (i + 1) / chunks);
                ReadRange::Rows {
                    offset: lo,
                    count: hi - lo,
                }
            })
            .collect()
    } else {
        (0..session.splits_count as u64)
            .map(ReadRange::Split)
            .collect()
    };
    let mut rows = Vec::with_capacity(count as usize);
    for range in ranges {
        let mut request =
            ReadRequest::new(session.table.clone(), session.session_id.clone(), range);
        request.max_batch_rows = 257;
        let before = rows.len();
        let mut stream = w.read(&request).await.unwrap_or_else(|e| {
            panic!(
                "reading {range:?} of session {} (v{}): {e}",
                session.session_id, session.table_version
            )
        });
        while let Some(b) = stream.next().await {
            let b = b.unwrap_or_else(|e| {
                panic!(
                    "a batch of {range:?} of session v{} failed: {e}",
                    session.table_version
                )
            });
            let id = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            let h = b
                .column_by_name("h")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            let pt = b
                .column_by_name("pt")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            for r in 0..b.num_rows() {
                rows.push((id.value(r) as u64, h.value(r), pt.value(r).to_string()));
            }
        }
        if let ReadRange::Rows { count, .. } = range {
            assert_eq!(
                (rows.len() - before) as u64,
                count,
                "range {range:?} of a v{} session delivered {} rows",
                session.table_version,
                rows.len() - before
            );
        }
    }
    assert_eq!(
        rows.len() as u64,
        count,
        "a v{} session declared {count} rows but delivered {}",
        session.table_version,
        rows.len()
    );
    rows
}

/// A fresh RowOffset session over the whole table, read completely.
async fn read_table(w: &LocalWarehouse, table: &TableId, chunks: u64) -> (ReadSession, Vec<Row>) {
    let session = w
        .create_read_session(&row_session_request(table))
        .await
        .unwrap_or_else(|e| panic!("creating a read session on {table}: {e}"));
    let rows = read_session(w, &session, chunks).await;
    (session, rows)
}

/// Checks that `rows` are whole commits of `known` (by key), each row intact and in its
/// partition, none twice. Returns the keys present.
fn check_whole_commits(
    rows: &[Row],
    known: &BTreeMap<u64, Commit>,
    context: &str,
) -> BTreeSet<u64> {
    let mut seen = HashSet::with_capacity(rows.len());
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for (id, h, pt) in rows {
        assert!(seen.insert(*id), "{context}: row {id} is visible twice");
        let key = id / STRIDE;
        let commit = known.get(&key).unwrap_or_else(|| {
            panic!("{context}: row {id} belongs to no known commit (key {key})")
        });
        assert!(
            id % STRIDE < commit.rows,
            "{context}: row {id} beyond the rows of commit {key}"
        );
        assert_eq!(*h, row_hash(*id), "{context}: row {id} has a wrong hash");
        assert_eq!(
            *pt,
            commit.partition_of(*id),
            "{context}: row {id} of commit {key} is in the wrong partition"
        );
        *counts.entry(key).or_default() += 1;
    }
    for (key, count) in &counts {
        let want = known[key].rows;
        assert_eq!(
            *count, want,
            "{context}: commit {key} is partly visible: {count} of its {want} rows (a torn commit)"
        );
    }
    counts.into_keys().collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Spawns `first` and `second` as tasks that start their work together, behind one barrier,
/// and waits for both.
async fn race_pair<A, B>(first: A, second: B) -> (A::Output, B::Output)
where
    A: Future + Send + 'static,
    A::Output: Send + 'static,
    B: Future + Send + 'static,
    B::Output: Send + 'static,
{
    async fn after<F: Future>(barrier: Arc<tokio::sync::Barrier>, work: F) -> F::Output {
        barrier.wait().await;
        work.await
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let first = tokio::spawn(after(barrier.clone(), first));
    let second = tokio::spawn(after(barrier, second));
    (first.await.unwrap(), second.await.unwrap())
}

async fn create_table(w: &LocalWarehouse, name: &str) -> TableId {
    let table = TableId::new("conc", None, name).unwrap();
    w.create_table(&table, &schema(), CreateTableOptions::default())
        .await
        .unwrap();
    table
}

// ---------------------------------------------------------------------------------------------
// Writers and readers
// ---------------------------------------------------------------------------------------------

const WRITERS: u64 = 4;

/// The j-th commit of writer w: writers 0 and 1 share partition `shared`, writer 2 has its own,
/// writer 3 writes dynamically to `shared` and its own.
fn writer_commit(w: u64, j: u64) -> Commit {
    let key = (w + 1) * 1000 + j;
    let rows = 1 + mix(key) % 60;
    let target = match w {
        0 | 1 => Target::Static("shared".into()),
        2 => Target::Static("w2".into()),
        _ => Target::Dynamic("shared".into(), format!("w{w}")),
    };
    Commit::new(key, rows, target)
}

/// Writers commit while readers read, each writer and reader on a service of its own from the
/// lists (the same instance, or separate instances of one directory as separate processes).
async fn race(
    writers: Vec<LocalWarehouse>,
    readers: Vec<LocalWarehouse>,
    table: TableId,
    commits_per_writer: u64,
) {
    let known: Arc<BTreeMap<u64, Commit>> = Arc::new(
        (0..WRITERS)
            .flat_map(|w| (0..commits_per_writer).map(move |j| writer_commit(w, j)))
            .map(|c| (c.key, c))
            .collect(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut reader_tasks = Vec::new();
    for (r, service) in readers.into_iter().enumerate() {
        let (table, known, done, reads) =
            (table.clone(), known.clone(), done.clone(), reads.clone());
        reader_tasks.push(tokio::spawn(async move {
            let mut last_version = 0u64;
            let mut last_prefix = vec![0u64; WRITERS as usize];
            let mut round = 0u64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                round += 1;
                let (session, rows) = read_table(&service, &table, 1 + (r as u64 + round) % 4).await;
                let context = format!("reader {r} round {round} at v{}", session.table_version);
                let present = check_whole_commits(&rows, &known, &context);
                assert!(
                    session.table_version >= last_version,
                    "{context}: the table went back from v{last_version}"
                );
                // Each writer commits in order: what is visible of it is a prefix, and grows.
                for w in 0..WRITERS {
                    let mine: Vec<u64> = present.iter().filter(|k| *k / 1000 == w + 1).map(|k| k % 1000).collect();
                    let prefix = mine.len() as u64;
                    assert_eq!(
                        mine,
                        (0..prefix).collect::<Vec<_>>(),
                        "{context}: writer {w}'s commits visible out of order (a later commit without an earlier one)"
                    );
                    assert!(
                        prefix >= last_prefix[w as usize],
                        "{context}: writer {w} had {} commits visible before, now {prefix} (a commit vanished)",
                        last_prefix[w as usize]
                    );
                    last_prefix[w as usize] = prefix;
                }
                last_version = session.table_version;
                reads.fetch_add(1, Ordering::Relaxed);
                if finished {
                    return last_prefix;
                }
            }
        }));
    }
    let mut writer_tasks = Vec::new();
    for (w, service) in writers.into_iter().enumerate() {
        let table = table.clone();
        writer_tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for j in 0..commits_per_writer {
                let info = write_and_commit(&service, &table, &writer_commit(w as u64, j)).await;
                versions.push(info.version);
            }
            versions
        }));
    }
    let mut all_versions = Vec::new();
    for t in writer_tasks {
        all_versions.extend(t.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    for t in reader_tasks {
        let prefix = t.await.unwrap();
        assert_eq!(
            prefix,
            vec![commits_per_writer; WRITERS as usize],
            "a reader's final read (after all commits returned) misses commits"
        );
    }
    // Every commit got its own version: no commit lost, none applied twice.
    all_versions.sort_unstable();
    let total = WRITERS * commits_per_writer;
    assert_eq!(
        all_versions,
        (1..=total).collect::<Vec<_>>(),
        "the {total} commits should have published versions 1..={total}, one each"
    );
    eprintln!(
        "race: {total} commits, {} consistent reads",
        reads.load(Ordering::Relaxed)
    );
}

#[test]
fn writers_and_readers_race_on_one_warehouse() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let w = LocalWarehouse::open(root.path()).unwrap();
        let table = create_table(&w, "race").await;
        race(
            vec![w.clone(); WRITERS as usize],
            vec![w.clone(); 3],
            table.clone(),
            12,
        )
        .await;
        let (_, rows) = read_table(&w, &table, 1).await;
        assert_eq!(
            rows.len() as u64,
            (0..WRITERS)
                .flat_map(|w| (0..12).map(move |j| writer_commit(w, j).rows))
                .sum::<u64>()
        );
    });
}

#[test]
fn separate_instances_commit_to_one_table() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        // As separate processes would: one instance per writer and per reader.
        let open = || LocalWarehouse::open(root.path()).unwrap();
        let table = create_table(&open(), "instances").await;
        let writers: Vec<_> = (0..WRITERS).map(|_| open()).collect();
        let readers: Vec<_> = (0..2).map(|_| open()).collect();
        race(writers, readers, table.clone(), 10).await;
        let info = open().describe_table(&table).await.unwrap();
        assert_eq!(info.version, WRITERS * 10, "one version per commit");
    });
}

// ---------------------------------------------------------------------------------------------
// Abort racing commit
// ---------------------------------------------------------------------------------------------

/// Commit and abort of the same session started together: exactly one wins. A won commit
/// has all its rows visible and abort answers InvalidState; a won abort leaves the table as it
/// was and commit answers InvalidState.
async fn abort_races_commit(
    committer: LocalWarehouse,
    aborter: LocalWarehouse,
    table: TableId,
    rounds: u64,
) {
    let mut known = BTreeMap::new();
    let mut committed = BTreeSet::new();
    let (mut commits_won, mut aborts_won) = (0, 0);
    for round in 0..rounds {
        let commit = Commit::new(
            round,
            1 + mix(round) % 40,
            Target::Static(format!("p{}", round % 3)),
        );
        known.insert(commit.key, commit.clone());
        let sid = prepare(&committer, &table, &commit).await;
        let before = committer.describe_table(&table).await.unwrap();
        let delay = mix(round ^ 77) % 40;
        // One side or the other first yields `delay` times.
        let yields = |n: u64| async move {
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
        };
        let (w, t, s) = (committer.clone(), table.clone(), sid.clone());
        let commit_delay = if round % 2 == 0 { delay } else { 0 };
        let commit_task = async move {
            yields(commit_delay).await;
            w.commit_write_session(&t, &s, None).await
        };
        let (w, t, s) = (aborter.clone(), table.clone(), sid.clone());
        let abort_delay = if round % 2 == 1 { delay } else { 0 };
        let abort_task = async move {
            yields(abort_delay).await;
            w.abort_write_session(&t, &s).await
        };
        let (commit_result, abort_result) = race_pair(commit_task, abort_task).await;
        let after = committer.describe_table(&table).await.unwrap();
        let status = aborter
            .get_write_session(&table, &sid)
            .await
            .unwrap()
            .status;
        match (&commit_result, &abort_result) {
            (Ok(info), Err(Error::InvalidState { state, .. })) if state == "COMMITTED" => {
                commits_won += 1;
                committed.insert(commit.key);
                assert_eq!(
                    info.rows, commit.rows,
                    "round {round}: the commit reports wrong rows"
                );
                assert_eq!(
                    after.version,
                    before.version + 1,
                    "round {round}: the won commit published no version"
                );
                assert_eq!(
                    info.version, after.version,
                    "round {round}: commit reports v{} but the table is at v{}",
                    info.version, after.version
                );
                assert_eq!(
                    status,
                    SessionStatus::Committed,
                    "round {round}: committed session shows {status}"
                );
                // Committing again answers the same; aborting again still refuses.
                let again = committer
                    .commit_write_session(&table, &sid, None)
                    .await
                    .unwrap();
                assert_eq!(
                    &again, info,
                    "round {round}: a repeated commit answers differently"
                );
                assert!(
                    aborter.abort_write_session(&table, &sid).await.is_err(),
                    "round {round}: a committed session was aborted later"
                );
            }
            (Err(Error::InvalidState { state, .. }), Ok(())) if state == "ABORTED" => {
                aborts_won += 1;
                assert_eq!(
                    (after.version, after.row_count),
                    (before.version, before.row_count),
                    "round {round}: the aborted session changed the table"
                );
                assert_eq!(
                    status,
                    SessionStatus::Critical,
                    "round {round}: aborted session shows {status}"
                );
                assert!(
                    committer
                        .commit_write_session(&table, &sid, None)
                        .await
                        .is_err(),
                    "round {round}: an aborted session committed later"
                );
            }
            _ => panic!(
                "round {round}: commit and abort of one session must have exactly one winner, got commit \
                 {commit_result:?} and abort {abort_result:?}; table v{} -> v{}",
                before.version, after.version
            ),
        }
        if round % 8 == 7 || round + 1 == rounds {
            // Every won commit is there, whole; no aborted one; data files of commits intact.
            let (session, rows) = read_table(&aborter, &table, 3).await;
            let present = check_whole_commits(
                &rows,
                &known,
                &format!("after round {round} (v{})", session.table_version),
            );
            assert_eq!(
                present, committed,
                "after round {round}: visible commits differ from those that won"
            );
        }
    }
    eprintln!("abort vs commit: {commits_won} commits won, {aborts_won} aborts won");
}

#[test]
fn abort_racing_commit_has_one_winner() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let w = LocalWarehouse::open(root.path()).unwrap();
        let table = create_table(&w, "abort_same").await;
        abort_races_commit(w.clone(), w, table, 48).await;
    });
}

#[test]
fn abort_racing_commit_from_another_instance_has_one_winner() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let a = LocalWarehouse::open(root.path()).unwrap();
        let b = LocalWarehouse::open(root.path()).unwrap();
        let table = create_table(&a, "abort_other").await;
        abort_races_commit(a, b, table, 48).await;
    });
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

/// Read sessions opened before appends, static and dynamic overwrites and partition drops
/// keep reading exactly their snapshot, while those changes commit and after.
#[test]
fn read_sessions_keep_their_snapshot_while_the_table_changes() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let w = LocalWarehouse::open(root.path()).unwrap();
        let table = create_table(&w, "snap").await;
        let mut known = BTreeMap::new();
        let mut key = 0u64;
        let mut next = |target: Target, overwrite: bool| {
            key += 1;
            let mut c = Commit::new(key, 5 + mix(key) % 300, target);
            c.overwrite = overwrite;
            c
        };
        for i in 0..9 {
            let c = next(Target::Static(format!("p{}", i % 3)), false);
            known.insert(c.key, c.clone());
            write_and_commit(&w, &table, &c).await;
        }
        // Three sessions on this version: row offsets, small Size splits, one partition.
        let all = w.create_read_session(&row_session_request(&table)).await.unwrap();
        let mut split_request = row_session_request(&table);
        split_request.split_options = SplitOptions::size(SplitOptions::MIN_SPLIT_SIZE);
        let splits = w.create_read_session(&split_request).await.unwrap();
        assert!(splits.splits_count > 1, "expected several 1 KiB splits, got {}", splits.splits_count);
        let mut part_request = row_session_request(&table);
        part_request.required_partitions = vec![spec("p1")];
        let part = w.create_read_session(&part_request).await.unwrap();
        let baseline = [
            read_session(&w, &all, 1).await,
            read_session(&w, &splits, 1).await,
            read_session(&w, &part, 1).await,
        ];
        check_whole_commits(&baseline[0], &known, "baseline");
        assert_eq!(
            baseline[0].iter().collect::<BTreeSet<_>>(),
            baseline[1].iter().collect::<BTreeSet<_>>(),
            "the split session and the row session of one version read different rows"
        );
        assert!(baseline[2].iter().all(|r| r.2 == "p1") && !baseline[2].is_empty());

        // Changes: appends, a static overwrite, dynamic overwrites, partition drops.
        let mut changes = Vec::new();
        for i in 0..12u64 {
            let change = match i % 4 {
                0 => next(Target::Static("p0".into()), false),
                1 => next(Target::Static("p1".into()), true),
                2 => next(Target::Dynamic("p2".into(), "p3".into()), true),
                _ => next(Target::Static(format!("new{i}")), false),
            };
            changes.push(change);
        }
        for c in &changes {
            known.insert(c.key, c.clone());
        }
        let known = Arc::new(known);
        let done = Arc::new(AtomicBool::new(false));
        let mutator = {
            let (w, table, done) = (w.clone(), table.clone(), done.clone());
            tokio::spawn(async move {
                for (i, c) in changes.iter().enumerate() {
                    write_and_commit(&w, &table, c).await;
                    if i % 5 == 4 {
                        w.drop_partition(&table, &spec("p0"), true).await.unwrap();
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut rereads = 0;
        let mut fresh_versions = BTreeSet::new();
        loop {
            let finished = done.load(Ordering::SeqCst);
            for (session, base) in [&all, &splits, &part].into_iter().zip(&baseline) {
                let rows = read_session(&w, session, 1 + rereads % 3).await;
                assert!(
                    &rows == base,
                    "a session of v{} read {} rows that differ from its snapshot ({} rows) while the table changed",
                    session.table_version,
                    rows.len(),
                    base.len()
                );
            }
            // A fresh session is a consistent snapshot of some version.
            let (fresh, rows) = read_table(&w, &table, 2).await;
            check_whole_commits(&rows, &known, &format!("fresh session at v{}", fresh.table_version));
            let refreshed = w.get_read_session(&table, &all.session_id, true).await.unwrap();
            assert_eq!(refreshed.table_version, all.table_version, "refreshing a session moved its version");
            fresh_versions.insert(fresh.table_version);
            rereads += 1;
            if finished {
                break;
            }
        }
        mutator.await.unwrap();
        eprintln!("snapshot: {rereads} re-reads, fresh sessions saw versions {fresh_versions:?}");
        // The final state: p0 dropped, p1 replaced by its last overwrite, p2/p3 by theirs.
        let (_, rows) = read_table(&w, &table, 1).await;
        let present = check_whole_commits(&rows, &known, "final");
        assert!(rows.iter().all(|r| r.2 != "p0"), "p0 was dropped after its last append but still has rows");
        let last_p1 = known.values().filter(|c| c.overwrite && c.target == Target::Static("p1".into())).map(|c| c.key).max().unwrap();
        assert!(present.contains(&last_p1), "the last overwrite of p1 is missing");
        assert!(
            rows.iter().filter(|r| r.2 == "p1").all(|r| r.0 / STRIDE == last_p1),
            "p1 holds rows of commits other than its last overwrite {last_p1}"
        );
    });
}

/// An unpartitioned table overwritten while a session reads it: the session still reads its
/// snapshot, row for row.
#[test]
fn overwriting_an_unpartitioned_table_keeps_open_sessions_readable() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let w = LocalWarehouse::open(root.path()).unwrap();
        let table = TableId::new("conc", None, "flat").unwrap();
        w.create_table(
            &table,
            &schema_with(&[], false),
            CreateTableOptions::default(),
        )
        .await
        .unwrap();
        let write = {
            let (w, table) = (w.clone(), table.clone());
            move |key: u64, overwrite: bool| {
                let (w, table) = (w.clone(), table.clone());
                async move {
                    let mut request = WriteSessionRequest::new(table.clone());
                    request.overwrite = overwrite;
                    let ids: Vec<u64> = (0..100).map(|i| key * STRIDE + i).collect();
                    let no_pt: Option<fn(u64) -> String> = None;
                    commit_batch(&w, &request, rows_batch(&ids, no_pt)).await
                }
            }
        };
        write(1, false).await;
        write(2, false).await;
        let mut request = ReadSessionRequest::new(table.clone());
        request.split_options = SplitOptions::row_offset();
        let session = w.create_read_session(&request).await.unwrap();
        assert_eq!(session.record_count, 200);
        let read_ids = |session: ReadSession| {
            let w = w.clone();
            async move {
                let count = session.record_count as u64;
                let ids = read_row_ids(&w, &session.table, &session.session_id, count);
                ids.await.unwrap()
            }
        };
        let before = read_ids(session.clone()).await;
        let overwrite = tokio::spawn(async move {
            for k in 3..8 {
                write(k, true).await;
            }
        });
        let mut rounds = 0;
        while !overwrite.is_finished() || rounds == 0 {
            assert_eq!(
                read_ids(session.clone()).await,
                before,
                "an open session's rows changed while the table was overwritten"
            );
            rounds += 1;
        }
        overwrite.await.unwrap();
        assert_eq!(
            read_ids(session.clone()).await,
            before,
            "an open session's rows changed after the table was overwritten"
        );
        let info = w.describe_table(&table).await.unwrap();
        assert_eq!(
            info.row_count, 100,
            "after overwrites the table holds the last overwrite only"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Partition drops and table drops racing commits
// ---------------------------------------------------------------------------------------------

/// drop_partition of some partitions while other partitions get appends: no append is lost,
/// every dropped partition is gone, readers see whole commits throughout.
#[test]
fn drop_partition_races_appends_to_other_partitions() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let w = LocalWarehouse::open(root.path()).unwrap();
        let other = LocalWarehouse::open(root.path()).unwrap();
        let table = create_table(&w, "drops").await;
        let mut known = BTreeMap::new();
        for i in 0..8u64 {
            let c = Commit::new(9000 + i, 10, Target::Static(format!("old{i}")));
            write_and_commit(&w, &table, &c).await;
            known.insert(c.key, c);
        }
        let appenders: Vec<Vec<Commit>> = (0..3u64)
            .map(|a| {
                (0..10u64)
                    .map(|j| {
                        Commit::new(
                            a * 100 + j,
                            1 + mix(a * 100 + j) % 30,
                            Target::Static(format!("keep{a}")),
                        )
                    })
                    .collect()
            })
            .collect();
        for c in appenders.iter().flatten() {
            known.insert(c.key, c.clone());
        }
        let churn: Vec<Commit> = (0..6u64)
            .map(|j| Commit::new(8000 + j, 7, Target::Static("churn".into())))
            .collect();
        for c in &churn {
            known.insert(c.key, c.clone());
        }
        let known = Arc::new(known);
        // 8 old partitions, 30 appends, 6 churn commits, 8 old drops, 6 churn drops.
        const FINAL_VERSION: u64 = 8 + 30 + 6 + 8 + 6;
        let mut tasks = Vec::new();
        for (a, commits) in appenders.clone().into_iter().enumerate() {
            // Two appenders on the shared instance, one on another instance.
            let (service, table) = (
                if a == 2 { other.clone() } else { w.clone() },
                table.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for c in &commits {
                    write_and_commit(&service, &table, c).await;
                }
            }));
        }
        {
            let (w, table) = (other.clone(), table.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..8u64 {
                    w.drop_partition(&table, &spec(&format!("old{i}")), false)
                        .await
                        .unwrap_or_else(|e| panic!("dropping old{i}: {e}"));
                }
            }));
        }
        {
            let (w, table) = (w.clone(), table.clone());
            tasks.push(tokio::spawn(async move {
                for c in &churn {
                    write_and_commit(&w, &table, c).await;
                    w.drop_partition(&table, &spec("churn"), false)
                        .await
                        .unwrap_or_else(|e| panic!("dropping churn after commit {}: {e}", c.key));
                }
            }));
        }
        let reader = {
            let (w, table, known) = (w.clone(), table.clone(), known.clone());
            tokio::spawn(async move {
                let mut reads = 0;
                loop {
                    let (s, rows) = read_table(&w, &table, 2).await;
                    check_whole_commits(&rows, &known, &format!("reader at v{}", s.table_version));
                    reads += 1;
                    if s.table_version >= FINAL_VERSION {
                        return reads;
                    }
                }
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        let reads = tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .expect("the reader never saw the final version")
            .unwrap();
        let (session, rows) = read_table(&w, &table, 1).await;
        let present = check_whole_commits(&rows, &known, "final");
        let want: BTreeSet<u64> = appenders.iter().flatten().map(|c| c.key).collect();
        assert_eq!(
            present, want,
            "after the race the table should hold exactly the appends to keep*: none lost to a drop"
        );
        assert_eq!(
            session.table_version, FINAL_VERSION,
            "one version per commit and per drop"
        );
        let partitions: BTreeSet<String> = w
            .list_partitions(&table)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.spec.to_string())
            .collect();
        assert_eq!(
            partitions,
            ["pt=keep0", "pt=keep1", "pt=keep2"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        eprintln!("drop_partition race: {reads} consistent reads");
    });
}

const TEMPLATE_PARTITIONS: u64 = 1500;

/// Copies a table directory: its manifests, and its data files as hard links.
fn copy_table_dir(from: &std::path::Path, to: &std::path::Path) {
    for sub in ["_manifest", "data"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if sub == "data" {
                std::fs::hard_link(entry.path(), to.join(sub).join(&name)).unwrap();
            } else {
                std::fs::copy(entry.path(), to.join(sub).join(&name)).unwrap();
            }
        }
    }
}

/// drop_table racing a commit of the same table: afterwards the table is gone (the drop came
/// last) or whole; a commit never brings back a dropped table with files that are gone.
#[test]
fn drop_table_racing_a_commit_leaves_no_torn_table() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let w = LocalWarehouse::open(root.path()).unwrap();
        let mut outcomes = BTreeMap::<String, u32>::new();
        let started = Instant::now();
        let other = LocalWarehouse::open(root.path()).unwrap();
        // A table of many partitions: the commit spends longer between its look at the
        // latest version and its publication (copying and extending the manifest). Each
        // round works on a copy of it (the documented layout: manifests and data files).
        let template = create_table(&w, "template").await;
        let ids: Vec<u64> = (0..TEMPLATE_PARTITIONS).map(|i| 7000 * STRIDE + i).collect();
        let b = rows_batch(&ids, Some(|id| format!("t{}", id % STRIDE)));
        commit_batch(&w, &WriteSessionRequest::new(template.clone()), b).await;
        let template_dir = w.root().join("conc").join("default").join("template");
        let rounds: u64 = std::env::var("PAIIO_DROP_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(80);
        for round in 0..rounds {
            let table = TableId::new("conc", None, &format!("dropped{round}")).unwrap();
            copy_table_dir(&template_dir, &w.root().join("conc").join("default").join(&table.table));
            assert_eq!(w.describe_table(&table).await.unwrap().row_count, TEMPLATE_PARTITIONS);
            let commit = Commit::new(2, 20, Target::Static("b".into()));
            let sid = prepare(&w, &table, &commit).await;
            // Drop at some point of the commit: from before it starts to after it ends.
            let delay = Duration::from_micros(mix(round) % 6000);
            let (committer, t, s) = (w.clone(), table.clone(), sid.clone());
            let commit_task = async move { committer.commit_write_session(&t, &s, None).await };
            let dropper = if round % 4 < 2 { w.clone() } else { other.clone() };
            let t = table.clone();
            let drop_task = async move {
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                dropper.drop_table(&t, false).await
            };
            let (committed, dropped) = race_pair(commit_task, drop_task).await;
            dropped.unwrap_or_else(|e| panic!("round {round}: dropping an existing table failed: {e}"));
            let outcome = match &committed {
                Ok(_) => "commit ok".to_string(),
                Err(e) => format!("commit failed: {}", format!("{e:?}").split([' ', '{', '(']).next().unwrap_or("")),
            };
            *outcomes.entry(outcome).or_default() += 1;
            for service in [w.clone(), LocalWarehouse::open(root.path()).unwrap()] {
                match service.describe_table(&table).await {
                    Err(Error::NotFound { .. }) => {}
                    Ok(info) => {
                        let read = tokio::time::timeout(Duration::from_secs(10), async {
                            let s = service.create_read_session(&row_session_request(&table)).await?;
                            read_row_ids(&service, &table, &s.session_id, s.record_count as u64).await.map(drop)
                        })
                        .await
                        .unwrap();
                        panic!(
                            "round {round}: {table} was dropped (drop returned Ok) yet exists again at v{} with {} rows \
                             after a racing commit ({committed:?}); reading it: {read:?}",
                            info.version, info.row_count
                        );
                    }
                    Err(e) => panic!("round {round}: describing a dropped table: {e}"),
                }
            }
        }
        eprintln!("drop vs commit: {outcomes:?} in {:?}", started.elapsed());
    });
}

/// A read session pins a table version. If the table is dropped and created again and reaches
/// the same version number, the old session must fail, not read the new table's rows as if
/// they were its snapshot (and never fewer rows than it declared, without an error).
#[test]
fn session_of_a_dropped_table_does_not_read_its_successor() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let w = LocalWarehouse::open(root.path()).unwrap();
        let table = create_table(&w, "reborn").await;
        for k in 1..=3 {
            write_and_commit(&w, &table, &Commit::new(k, 10, Target::Static("a".into()))).await;
        }
        let session = w.create_read_session(&row_session_request(&table)).await.unwrap();
        assert_eq!((session.table_version, session.record_count), (3, 30));
        w.drop_table(&table, false).await.unwrap();
        w.create_table(&table, &schema(), CreateTableOptions::default()).await.unwrap();
        for k in 11..=13 {
            write_and_commit(&w, &table, &Commit::new(k, 1, Target::Static("a".into()))).await;
        }
        let outcome = read_row_ids(&w, &table, &session.session_id, 30).await;
        if let Ok(ids) = outcome {
            let keys: BTreeSet<u64> = ids.iter().map(|id| id / STRIDE).collect();
            assert!(
                ids.len() == 30 && keys == BTreeSet::from([1, 2, 3]),
                "a session of the dropped table (v3, 30 rows of commits 1..=3) read {} rows of commits {keys:?} \
                 from the table created in its place, without an error",
                ids.len()
            );
        }
    });
}

/// Two instances of one directory (two processes): after one drops and re-creates a table
/// with another schema, the other sees the new table, not a cached manifest of the old one.
#[test]
fn another_instance_sees_a_recreated_table() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let a = LocalWarehouse::open(root.path()).unwrap();
        let b = LocalWarehouse::open(root.path()).unwrap();
        let table = create_table(&a, "recreated").await;
        for k in 1..=2 {
            write_and_commit(&a, &table, &Commit::new(k, 10, Target::Static("a".into()))).await;
        }
        let seen = b.describe_table(&table).await.unwrap();
        assert_eq!((seen.version, seen.row_count), (2, 20));
        a.drop_table(&table, false).await.unwrap();
        let wider = schema_with(&["extra"], true);
        a.create_table(&table, &wider, CreateTableOptions::default())
            .await
            .unwrap();
        let fresh = LocalWarehouse::open(root.path())
            .unwrap()
            .describe_table(&table)
            .await
            .unwrap();
        assert_eq!(
            (fresh.version, fresh.row_count, &fresh.schema),
            (0, 0, &wider)
        );
        let info = b.describe_table(&table).await.unwrap();
        assert_eq!(
            (info.version, info.row_count, &info.schema),
            (0, 0, &wider),
            "instance b still describes the dropped table after it was re-created by instance a"
        );
        // Reach the old version numbers again with other content.
        let mut request = WriteSessionRequest::new(table.clone());
        request.partition = spec("z");
        for _ in 0..2 {
            let s = a.create_write_session(&request).await.unwrap();
            a.commit_write_session(&table, &s.session_id, None)
                .await
                .unwrap();
        }
        let info = b.describe_table(&table).await.unwrap();
        assert_eq!(
            (info.version, info.row_count, &info.schema),
            (2, 0, &wider),
            "instance b describes v2 of the re-created table with the old table's cached manifest"
        );
    });
}

/// Two instances (processes) creating one table with different schemas, then dropping it,
/// at the same moment: exactly one create wins (the other answers AlreadyExists) and the table
/// has the winner's schema; exactly one drop wins (the other answers NotFound, or Ok with
/// `if_exists`); no other error.
#[test]
fn racing_creates_and_drops_of_one_table_have_one_winner() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let a = LocalWarehouse::open(root.path()).unwrap();
        let b = LocalWarehouse::open(root.path()).unwrap();
        let narrow = schema();
        let wide = schema_with(&["w"], true);
        let table = TableId::new("conc", None, "contested").unwrap();
        let mut outcomes = BTreeMap::<String, u32>::new();
        for round in 0..120u32 {
            let if_exists = round % 2 == 1;
            let create = |w: &LocalWarehouse, schema: &TableSchema| {
                let (w, schema, table) = (w.clone(), schema.clone(), table.clone());
                async move { w.create_table(&table, &schema, CreateTableOptions::default()).await }
            };
            let (ra, rb) = race_pair(create(&a, &narrow), create(&b, &wide)).await;
            let winner = match (&ra, &rb) {
                (Ok(()), Err(Error::AlreadyExists { .. })) => &narrow,
                (Err(Error::AlreadyExists { .. }), Ok(())) => &wide,
                _ => panic!("round {round}: two creates of one table: expected one Ok and one AlreadyExists, got {ra:?} and {rb:?}"),
            };
            // (Through a fresh instance: a and b may hold a cached manifest of the table an
            // earlier round dropped; see another_instance_sees_a_recreated_table.)
            let fresh = LocalWarehouse::open(root.path()).unwrap();
            assert_eq!(&fresh.describe_table(&table).await.unwrap().schema, winner, "round {round}: the table lacks the winning create's schema");
            let drop = |w: &LocalWarehouse| {
                let (w, table) = (w.clone(), table.clone());
                async move { w.drop_table(&table, if_exists).await }
            };
            let (da, db) = race_pair(drop(&a), drop(&b)).await;
            let ok = |r: &paiio_storage::Result<()>| r.is_ok();
            let lost = |r: &paiio_storage::Result<()>| if if_exists { r.is_ok() } else { matches!(r, Err(Error::NotFound { .. })) };
            assert!(
                (ok(&da) && lost(&db)) || (lost(&da) && ok(&db)),
                "round {round}: two drop_table(if_exists={if_exists}) of one table: expected one Ok and the other {}, got {da:?} and {db:?}",
                if if_exists { "Ok" } else { "NotFound" }
            );
            assert!(matches!(fresh.describe_table(&table).await, Err(Error::NotFound { .. })), "round {round}: the table survived its drop");
            *outcomes.entry(format!("{} created", if std::ptr::eq(winner, &narrow) { "a" } else { "b" })).or_default() += 1;
        }
        eprintln!("create/drop races: {outcomes:?}");
    });
}
