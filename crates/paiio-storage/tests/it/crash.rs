//! Crash safety of the local warehouse (RELIABILITY F10, F11).
//!
//! A process killed at any point during a commit leaves the old or the new version of a
//! table, never a torn one. The tests re-execute this test binary as a child process (the
//! hidden [`crash_child`] test, which does nothing unless `PAIIO_CRASH_CHILD_DIR` is set),
//! let it commit in a loop, kill it with SIGKILL after a random delay, and check the table
//! after every kill as a restarted server would see it.
//!
//! Every row is computable from its id: `id = commit * ROW_STRIDE + row`, its hash and its
//! payload derive from the id, and its partition from the commit's plan. The child picks the
//! next commit number from the table version (commit `c` publishes version `c + 1`), so a
//! table at version `V` must hold exactly what commits `0..V` leave, each commit whole.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use futures::StreamExt;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::{
    Column, CreateTableOptions, Error, OdpsType, PartitionSpec, ReadRange, ReadRequest,
    ReadSessionRequest, SplitOptions, TableId, TableSchema, TableService, WriteRequest,
    WriteSessionRequest,
};

const ENV_DIR: &str = "PAIIO_CRASH_CHILD_DIR";
const ENV_MODE: &str = "PAIIO_CRASH_CHILD_MODE";
const ENV_TABLE: &str = "PAIIO_CRASH_CHILD_TABLE";
const ENV_SEED: &str = "PAIIO_CRASH_CHILD_SEED";
const READY: &str = "PAIIO_CRASH_CHILD_READY";
const PROJECT: &str = "crashproj";
/// Row ids of commit `c` are `c * ROW_STRIDE + i`.
const ROW_STRIDE: u64 = 1 << 20;
/// A child stops by itself after this long, in case its parent died without killing it.
const CHILD_DEADLINE: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Deterministic content
// ---------------------------------------------------------------------------------------------

/// splitmix64: a well-mixed hash of a counter.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What kind of commit number `c` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Append to the static partition `pt=a{n}`.
    Append(u8),
    /// Append with dynamic partitions: each row goes to `pt=d0` or `pt=d1`.
    Dynamic,
    /// Overwrite the static partition `pt=ow` with this commit's rows.
    Overwrite,
    /// Overwrite with dynamic partitions: replaces `pt=x0` and/or `pt=x1`, whichever rows go to.
    DynamicOverwrite,
}

/// Which commit sequence a table follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// Varied kinds, row counts, streams and batches.
    Varied,
    /// Tiny appends of many files each (so manifests grow quickly, data files stay small).
    ManyFiles,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    c: u64,
    kind: Kind,
    rows: u64,
    streams: u64,
    batches_per_stream: u64,
}

fn plan(profile: Profile, c: u64) -> Plan {
    let r = mix(c ^ 0x5eed);
    match profile {
        Profile::Varied => Plan {
            c,
            kind: match c % 7 {
                3 => Kind::Overwrite,
                5 => Kind::Dynamic,
                6 => Kind::DynamicOverwrite,
                _ => Kind::Append((r % 3) as u8),
            },
            rows: [1, 2, 17, 150, 700, 2500][((r >> 8) % 6) as usize],
            streams: 1 + (r >> 16) % 3,
            batches_per_stream: 1 + (r >> 24) % 3,
        },
        Profile::ManyFiles => Plan {
            c,
            kind: Kind::Append(0),
            rows: 12,
            streams: 6,
            batches_per_stream: 1,
        },
    }
}

fn row_hash(id: u64) -> i64 {
    mix(id ^ 0xABCD_EF01) as i64
}

fn payload(id: u64) -> String {
    let h = row_hash(id) as u64;
    let mut s = format!("{}:{}:{h:016x}", id / ROW_STRIDE, id % ROW_STRIDE);
    for _ in 0..h % 29 {
        s.push('~');
    }
    s
}

/// The partition value row `id` of commit plan `p` goes to.
fn row_partition(p: &Plan, id: u64) -> String {
    match p.kind {
        Kind::Append(n) => format!("a{n}"),
        Kind::Overwrite => "ow".to_string(),
        Kind::Dynamic => format!("d{}", mix(id) & 1),
        Kind::DynamicOverwrite => format!("x{}", mix(id) & 1),
    }
}

/// For a table after commits `0..n`: the rows each (commit, partition) must have.
fn expected_groups(profile: Profile, n: u64) -> BTreeMap<(u64, String), u64> {
    let mut groups: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for c in 0..n {
        let p = plan(profile, c);
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for i in 0..p.rows {
            *counts
                .entry(row_partition(&p, c * ROW_STRIDE + i))
                .or_default() += 1;
        }
        match p.kind {
            Kind::Overwrite | Kind::DynamicOverwrite => {
                // The commit replaces the partitions it writes.
                for pt in counts.keys() {
                    groups.retain(|(_, g), _| g != pt);
                }
            }
            Kind::Append(_) | Kind::Dynamic => {}
        }
        for (pt, count) in counts {
            groups.insert((c, pt), count);
        }
    }
    groups
}

fn table_schema() -> TableSchema {
    TableSchema::new(
        vec![
            Column::new("id", OdpsType::BigInt),
            Column::new("h", OdpsType::BigInt),
            Column::new("s", OdpsType::String),
        ],
        vec![Column::new("pt", OdpsType::String)],
    )
    .unwrap()
}

fn table_id(name: &str) -> TableId {
    TableId::new(PROJECT, None, name).unwrap()
}

fn spec(pt: &str) -> PartitionSpec {
    PartitionSpec::from_pairs([("pt", pt)]).unwrap()
}

/// The rows `ids` as a batch; with `with_pt`, carrying the partition column too.
fn batch(p: &Plan, ids: &[u64], with_pt: bool) -> RecordBatch {
    let mut fields = vec![
        Field::new("id", DataType::Int64, true),
        Field::new("h", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|&id| id as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|&id| row_hash(id)),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|&id| payload(id)),
        )),
    ];
    if with_pt {
        fields.push(Field::new("pt", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter_values(
            ids.iter().map(|&id| row_partition(p, id)),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Writes and commits one planned commit in its own write session.
async fn write_and_commit(
    w: &LocalWarehouse,
    table: &TableId,
    p: &Plan,
) -> paiio_storage::Result<(String, paiio_storage::CommitInfo)> {
    let session = write_uncommitted(w, table, p).await?;
    let info = w.commit_write_session(table, &session, None).await?;
    Ok((session, info))
}

/// Writes one planned commit in a new session and closes its streams; returns the session id.
async fn write_uncommitted(
    w: &LocalWarehouse,
    table: &TableId,
    p: &Plan,
) -> paiio_storage::Result<String> {
    let mut request = WriteSessionRequest::new(table.clone());
    let dynamic = match p.kind {
        Kind::Append(n) => {
            request.partition = spec(&format!("a{n}"));
            false
        }
        Kind::Overwrite => {
            request.partition = spec("ow");
            request.overwrite = true;
            false
        }
        Kind::Dynamic => true,
        Kind::DynamicOverwrite => {
            request.overwrite = true;
            true
        }
    };
    let session = w.create_write_session(&request).await?;
    let sid = session.session_id;
    for k in 0..p.streams {
        let (lo, hi) = (p.rows * k / p.streams, p.rows * (k + 1) / p.streams);
        let stream = w.create_write_stream(table, &sid, None, false).await?;
        let ids: Vec<u64> = (lo..hi).map(|i| p.c * ROW_STRIDE + i).collect();
        if !ids.is_empty() {
            let per = ids.len().div_ceil(p.batches_per_stream as usize).max(1);
            let batches: Vec<RecordBatch> = ids.chunks(per).map(|c| batch(p, c, dynamic)).collect();
            // Alternate between one request with all batches and one request per batch.
            let requests: Vec<Vec<RecordBatch>> = if k % 2 == 0 {
                vec![batches]
            } else {
                batches.into_iter().map(|b| vec![b]).collect()
            };
            for batches in requests {
                w.write(WriteRequest {
                    table: table.clone(),
                    session_id: sid.clone(),
                    stream_id: stream.stream_id.clone(),
                    version: stream.version,
                    row_offset: None,
                    access_token: None,
                    batches,
                })
                .await?;
            }
        }
        w.close_write_stream(table, &sid, &stream.stream_id, stream.version)
            .await?;
    }
    Ok(sid)
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

fn table_dir(root: &Path, table: &TableId) -> PathBuf {
    root.join(&table.project)
        .join(table.schema_or_default())
        .join(&table.table)
}

/// Reads every row of the table's current version with one RowOffset session.
/// Returns (version, rows as (id, h, s, pt)).
async fn read_all(w: &LocalWarehouse, table: &TableId) -> (u64, Vec<(u64, i64, String, String)>) {
    let mut request = ReadSessionRequest::new(table.clone());
    request.split_options = SplitOptions::row_offset();
    request.required_partition_columns = vec!["pt".to_string()];
    let session = w
        .create_read_session(&request)
        .await
        .unwrap_or_else(|e| panic!("creating a read session on {table} after a crash failed: {e}"));
    let count = session.record_count as u64;
    let mut read = ReadRequest::new(
        table.clone(),
        session.session_id.clone(),
        ReadRange::Rows { offset: 0, count },
    );
    read.max_batch_rows = 1000;
    let mut stream = w.read(&read).await.unwrap_or_else(|e| {
        panic!(
            "reading {table} v{} after a crash failed: {e}",
            session.table_version
        )
    });
    let mut rows = Vec::with_capacity(count as usize);
    while let Some(b) = stream.next().await {
        let b = b.unwrap_or_else(|e| {
            panic!(
                "a batch of {table} v{} failed to read after a crash: {e}",
                session.table_version
            )
        });
        let col = |name: &str| -> ArrayRef {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("column {name} missing from read"))
                .clone()
        };
        let (id, h, s, pt) = (col("id"), col("h"), col("s"), col("pt"));
        let id = id.as_any().downcast_ref::<Int64Array>().unwrap();
        let h = h.as_any().downcast_ref::<Int64Array>().unwrap();
        let s = s.as_any().downcast_ref::<StringArray>().unwrap();
        let pt = pt.as_any().downcast_ref::<StringArray>().unwrap();
        for r in 0..b.num_rows() {
            assert!(
                id.is_valid(r) && h.is_valid(r) && s.is_valid(r),
                "a row of {table} has NULLs"
            );
            rows.push((
                id.value(r) as u64,
                h.value(r),
                s.value(r).to_string(),
                pt.value(r).to_string(),
            ));
        }
    }
    assert_eq!(
        rows.len() as u64,
        count,
        "{table} v{}: the read delivered {} rows but the session declared {count}",
        session.table_version,
        rows.len()
    );
    (session.table_version, rows)
}

/// Every published manifest of the table parses, carries its own version, lists files that
/// exist with the recorded size, and versions have no gaps. Returns the published versions.
fn check_manifests(dir: &Path, profile: Profile) -> Vec<u64> {
    let manifest_dir = dir.join("_manifest");
    let mut versions = Vec::new();
    let mut sessions = HashSet::new();
    for entry in std::fs::read_dir(&manifest_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(digits) = name.strip_suffix(".json") else {
            continue;
        };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            assert!(
                name.starts_with(".tmp-"),
                "unexpected file {name} in {}",
                manifest_dir.display()
            );
            continue;
        }
        let version: u64 = digits.parse().unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "torn manifest: {} ({} bytes) does not parse: {e}",
                entry.path().display(),
                bytes.len()
            )
        });
        assert_eq!(
            m["version"].as_u64(),
            Some(version),
            "manifest {name} does not carry its own version"
        );
        if version > 0 {
            // Commit c publishes version c + 1, once: one session per version, of the right kind.
            let sid = m["session_id"].as_str().unwrap_or_default().to_string();
            if !sid.is_empty() {
                assert!(
                    sessions.insert(sid.clone()),
                    "session {sid} was committed twice (again in v{version})"
                );
            }
            let op = m["operation"].as_str().unwrap_or_default();
            let p = plan(profile, version - 1);
            let want = match p.kind {
                Kind::Overwrite | Kind::DynamicOverwrite => "overwrite",
                _ => "append",
            };
            assert_eq!(
                op, want,
                "v{version} should be commit {} ({:?}), but its operation is {op}",
                p.c, p.kind
            );
        }
        // A snapshot lists every partition, a delta the files it added.
        let listed = m["partitions"]
            .as_array()
            .into_iter()
            .chain(m["added"].as_array());
        for part in listed.flatten() {
            for f in part["files"].as_array().into_iter().flatten() {
                let path = dir.join(f["path"].as_str().unwrap());
                let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
                    panic!(
                        "manifest {name} lists {} which is unreadable: {e}",
                        path.display()
                    )
                });
                if let Some(bytes) = f["bytes"].as_u64() {
                    assert_eq!(
                        meta.len(),
                        bytes,
                        "manifest {name} lists {} with {bytes} bytes but it has {}",
                        path.display(),
                        meta.len()
                    );
                }
            }
        }
        versions.push(version);
    }
    versions.sort_unstable();
    let expected: Vec<u64> = (0..versions.len() as u64).collect();
    assert_eq!(
        versions,
        expected,
        "published versions of {} have gaps",
        dir.display()
    );
    versions
}

/// Opens the warehouse afresh (as a restarted server) and checks `table` completely.
/// Returns the table's version, or None if the table does not exist.
async fn verify_table(root: &Path, table: &TableId, profile: Profile) -> Option<u64> {
    let w = LocalWarehouse::open(root)
        .unwrap_or_else(|e| panic!("the warehouse does not open after a crash: {e}"));
    let info = match w.describe_table(table).await {
        Ok(info) => info,
        Err(Error::NotFound { .. }) => {
            let listed = w.list_tables(PROJECT, None).await.unwrap();
            assert!(
                !listed.contains(table),
                "{table} is listed but describe says it does not exist"
            );
            return None;
        }
        Err(e) => panic!("describe_table({table}) failed after a crash: {e}"),
    };
    assert_eq!(info.schema, table_schema(), "{table}: the schema changed");
    let versions = check_manifests(&table_dir(w.root(), table), profile);
    assert_eq!(
        versions.last().copied(),
        Some(info.version),
        "{table}: describe reports v{} but the latest manifest is {:?}",
        info.version,
        versions.last()
    );
    let (version, rows) = read_all(&w, table).await;
    assert_eq!(
        version, info.version,
        "{table}: a read session saw another version than describe (nothing commits now)"
    );
    assert_eq!(
        rows.len() as u64,
        info.row_count,
        "{table} v{version}: describe's row count differs from the rows read"
    );

    // Commits 0..version are applied, each whole; nothing else is visible.
    let n = version;
    let expected = expected_groups(profile, n);
    let mut seen_ids = HashSet::with_capacity(rows.len());
    let mut groups: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for (id, h, s, pt) in &rows {
        assert!(
            seen_ids.insert(*id),
            "{table} v{version}: row id {id} is visible twice"
        );
        let (c, i) = (id / ROW_STRIDE, id % ROW_STRIDE);
        assert!(
            c < n,
            "{table} v{version}: row {id} of commit {c} is visible, but only commits 0..{n} were published"
        );
        let p = plan(profile, c);
        assert!(
            i < p.rows,
            "{table}: row {id} beyond the {} rows of commit {c}",
            p.rows
        );
        assert_eq!(
            *h,
            row_hash(*id),
            "{table}: row {id} has a wrong hash (corrupt data)"
        );
        assert_eq!(
            *s,
            payload(*id),
            "{table}: row {id} has a wrong payload (corrupt data)"
        );
        assert_eq!(
            *pt,
            row_partition(&p, *id),
            "{table}: row {id} is in the wrong partition"
        );
        *groups.entry((c, pt.clone())).or_default() += 1;
    }
    for (key, count) in &groups {
        match expected.get(key) {
            None => panic!(
                "{table} v{version}: {count} rows of commit {} in pt={} are visible, but that commit's \
                 rows there were replaced or never published",
                key.0, key.1
            ),
            Some(want) => assert_eq!(
                count, want,
                "{table} v{version}: commit {} shows {count} of its {want} rows in pt={} (a partial commit)",
                key.0, key.1
            ),
        }
    }
    for key in expected.keys() {
        assert!(
            groups.contains_key(key),
            "{table} v{version}: the rows of commit {} in pt={} are missing (a published commit was lost)",
            key.0,
            key.1
        );
    }
    Some(version)
}

/// A single-threaded Tokio runtime with I/O and timers enabled.
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------------------------

/// The child side of the crash tests: does nothing unless started by them.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let mode = std::env::var(ENV_MODE).unwrap_or_default();
    let table = table_id(&std::env::var(ENV_TABLE).unwrap_or_else(|_| "t".into()));
    let seed: u64 = std::env::var(ENV_SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let w = LocalWarehouse::open(&dir).unwrap();
        println!("\n{READY}");
        let started = Instant::now();
        match mode.as_str() {
            "commits" => child_commits(&w, &table, Profile::Varied, started).await,
            "catalog" => child_catalog(&w, seed, started).await,
            "disk-full" => child_disk_full(&w, &table).await,
            "disk-full-import" => child_disk_full_import(&w, &table).await,
            "disk-full-read" => child_disk_full_read(&w, &table).await,
            other => panic!("unknown child mode {other:?}"),
        }
    });
}

/// Commits forever: each commit `c` is planned from the current version.
async fn child_commits(w: &LocalWarehouse, table: &TableId, profile: Profile, started: Instant) {
    while started.elapsed() < CHILD_DEADLINE {
        let version = match w.describe_table(table).await {
            Ok(info) => info.version,
            Err(Error::NotFound { .. }) => {
                w.create_table(
                    table,
                    &table_schema(),
                    CreateTableOptions {
                        if_not_exists: true,
                    },
                )
                .await
                .unwrap();
                continue;
            }
            Err(e) => panic!("child: describe failed: {e}"),
        };
        let p = plan(profile, version);
        let (_, info) = write_and_commit(w, table, &p).await.unwrap();
        assert_eq!(
            info.version,
            version + 1,
            "child: commit {} published an unexpected version",
            p.c
        );
    }
}

const CATALOG_TABLES: [&str; 3] = ["cat0", "cat1", "cat2"];

/// Creates (and fills with commit 0) or drops tables, forever.
async fn child_catalog(w: &LocalWarehouse, seed: u64, started: Instant) {
    let mut k = seed;
    while started.elapsed() < CHILD_DEADLINE {
        k += 1;
        let table = table_id(CATALOG_TABLES[(mix(k) % 3) as usize]);
        match w.describe_table(&table).await {
            Ok(_) => w.drop_table(&table, false).await.unwrap(),
            Err(Error::NotFound { .. }) => {
                w.create_table(&table, &table_schema(), CreateTableOptions::default())
                    .await
                    .unwrap();
                write_and_commit(w, &table, &plan(Profile::Varied, 0))
                    .await
                    .unwrap();
            }
            Err(e) => panic!("child: describe failed: {e}"),
        }
    }
}

/// Runs under a small file size limit (`ulimit -f`): first a write too big for it, then
/// commits until a manifest no longer fits. After each failure the table must be unchanged.
/// Reports on stdout for the parent.
async fn child_disk_full(w: &LocalWarehouse, table: &TableId) {
    let before = w.describe_table(table).await.unwrap();
    // 1. A data file that cannot be written.
    let big = Plan {
        c: before.version,
        kind: Kind::Append(1),
        rows: 60_000,
        streams: 1,
        batches_per_stream: 1,
    };
    match write_uncommitted(w, table, &big).await {
        Ok(sid) => println!("PAIIO_WRITE_SUCCEEDED session={sid}"),
        Err(e) => {
            let io = matches!(e, Error::Io { .. });
            let after = w.describe_table(table).await.unwrap();
            assert_eq!(
                (after.version, after.row_count),
                (before.version, before.row_count),
                "a failed write changed the table"
            );
            println!("PAIIO_WRITE_FAILED io={io} err={e}");
        }
    }
    // 2. Commits until the manifest does not fit.
    for _ in 0..1000 {
        let info = w.describe_table(table).await.unwrap();
        let p = plan(Profile::ManyFiles, info.version);
        let sid = match write_uncommitted(w, table, &p).await {
            Ok(sid) => sid,
            Err(e) => {
                println!("PAIIO_UNEXPECTED_WRITE_FAILURE c={} err={e}", p.c);
                return;
            }
        };
        match w.commit_write_session(table, &sid, None).await {
            Ok(_) => continue,
            Err(e) => {
                let io = matches!(e, Error::Io { .. } | Error::Unwritable { .. });
                let after = w.describe_table(table).await.unwrap();
                let unchanged = (after.version, after.row_count) == (info.version, info.row_count);
                // The session must still be committable (state not changed by the failure).
                let state = w
                    .get_write_session(table, &sid)
                    .await
                    .map(|s| s.status.to_string());
                println!(
                    "PAIIO_COMMIT_FAILED c={} session={sid} io={io} unchanged={unchanged} state={} err={e}",
                    p.c,
                    state.unwrap_or_else(|e| format!("error: {e}"))
                );
                return;
            }
        }
    }
    println!("PAIIO_NO_FAILURE");
}

/// An import under a small file size limit: a write that fits, one that does not, then the
/// abort an importer sends. Reports on stdout for the parent.
async fn child_disk_full_import(w: &LocalWarehouse, table: &TableId) {
    let mut request = WriteSessionRequest::new(table.clone());
    request.partition = spec("a1");
    let sid = w.create_write_session(&request).await.unwrap().session_id;
    let stream = w
        .create_write_stream(table, &sid, None, true)
        .await
        .unwrap();
    let mut offset = 0;
    for rows in [100u64, 60_000] {
        let p = Plan {
            c: 50,
            kind: Kind::Append(1),
            rows,
            streams: 1,
            batches_per_stream: 1,
        };
        let ids: Vec<u64> = (offset..offset + rows)
            .map(|i| p.c * ROW_STRIDE + i)
            .collect();
        let result = w
            .write(WriteRequest {
                table: table.clone(),
                session_id: sid.clone(),
                stream_id: stream.stream_id.clone(),
                version: stream.version,
                row_offset: Some(offset),
                access_token: Some(stream.access_token.clone()),
                batches: vec![batch(&p, &ids, false)],
            })
            .await;
        match result {
            Ok(_) => println!("PAIIO_WROTE rows={rows}"),
            Err(e) => {
                let unwritable = matches!(e, Error::Unwritable { .. });
                println!("PAIIO_WRITE_FAILED rows={rows} unwritable={unwritable} err={e}");
                break;
            }
        }
        offset += rows;
    }
    match w.abort_write_session(table, &sid).await {
        Ok(()) => println!("PAIIO_ABORTED"),
        Err(e) => println!("PAIIO_ABORT_FAILED err={e}"),
    }
}

/// A read session too large for the file size limit still reads (kept in memory).
async fn child_disk_full_read(w: &LocalWarehouse, table: &TableId) {
    let info = w.describe_table(table).await.unwrap();
    let mut request = ReadSessionRequest::new(table.clone());
    request.split_options = SplitOptions::parallelism(info.row_count);
    let session = match w.create_read_session(&request).await {
        Ok(s) => s,
        Err(e) => {
            println!("PAIIO_READ_FAILED err={e}");
            return;
        }
    };
    // A sample of the splits (each one row), the last one included.
    let count = session.splits_count as u64;
    let mut rows = 0u64;
    for split in (0..count).step_by(97).chain([count - 1]) {
        let mut request =
            ReadRequest::new(table.clone(), &session.session_id, ReadRange::Split(split));
        request.max_batch_rows = 1024;
        let mut stream = match w.read(&request).await {
            Ok(s) => s,
            Err(e) => {
                println!("PAIIO_READ_FAILED split={split} err={e}");
                return;
            }
        };
        while let Some(batch) = stream.next().await {
            rows += batch.unwrap().num_rows() as u64;
        }
    }
    println!(
        "PAIIO_READ rows={rows} sampled={} splits={}",
        count.div_ceil(97) + 1,
        session.splits_count
    );
}

// ---------------------------------------------------------------------------------------------
// The parent side
// ---------------------------------------------------------------------------------------------

/// A running child; killed when dropped so a failing parent leaves no process behind.
struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout_log: Arc<parking_lot::Mutex<Vec<String>>>,
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildProcess {
    fn spawn(
        mode: &str,
        root: &Path,
        table: &str,
        seed: u64,
        file_size_blocks: Option<u32>,
    ) -> Self {
        let exe = std::env::current_exe().unwrap();
        let harness_args = [
            "--exact",
            "crash::crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ];
        let mut command = match file_size_blocks {
            None => {
                let mut c = Command::new(&exe);
                c.args(harness_args);
                c
            }
            Some(blocks) => {
                // Ignore SIGXFSZ (inherited through exec) so an over-long write fails with EFBIG.
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "trap '' XFSZ; ulimit -f {blocks} || exit 77; exec \"$0\" \"$@\""
                    ))
                    .arg(&exe)
                    .args(harness_args);
                c
            }
        };
        command
            .env(ENV_DIR, root)
            .env(ENV_MODE, mode)
            .env(ENV_TABLE, table)
            .env(ENV_SEED, seed.to_string())
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning the crash child");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout_log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = stdout_log.clone();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                log.lock().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        ChildProcess {
            child,
            lines,
            stdout_log,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Waits for the child's READY line; panics with its output if it dies first.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(READY) => return,
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.try_wait();
                    panic!(
                        "the crash child never got ready (status {status:?})\n{}",
                        self.output()
                    );
                }
            }
        }
    }

    /// SIGKILLs the child; panics if it had already exited (a failure inside the child).
    fn kill(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the crash child exited by itself ({status}) before it was killed\n{}",
                self.output()
            );
        }
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        // It may have exited between try_wait and kill only by failing.
        if status.signal() != Some(9) {
            panic!(
                "the crash child ended with {status} instead of SIGKILL\n{}",
                self.output()
            );
        }
    }

    /// Waits for the child to exit by itself; kills it after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the child did not finish within {timeout:?}\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the child printed so far (all of it once it exited).
    fn output(&mut self) -> String {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if exited && let Some(h) = self.stdout.take() {
            let _ = h.join();
        }
        let stdout = self.stdout_log.lock().join("\n");
        let stderr = if exited {
            self.stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default()
        } else {
            String::from("(still running)")
        };
        format!("--- child stdout ---\n{stdout}\n--- child stderr ---\n{stderr}")
    }
}

/// Creates `table` in the warehouse at `root` and commits `plans` to it, in order.
fn create_with_commits(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    table: &TableId,
    plans: impl IntoIterator<Item = Plan>,
) {
    runtime.block_on(async {
        let w = LocalWarehouse::open(root).unwrap();
        w.create_table(table, &table_schema(), CreateTableOptions::default())
            .await
            .unwrap();
        for p in plans {
            write_and_commit(&w, table, &p).await.unwrap();
        }
    });
}

/// Runs a `mode` child on table `name` under a file size limit of 128 blocks (64 KiB where
/// the shell counts 512-byte blocks, as dash does, or 128 KiB where it counts KiB, as bash
/// does), waits up to `timeout` for it to exit successfully, and returns its stdout lines
/// and its output; `None` (with a note) when the shell cannot set a file size limit.
fn run_full_disk_child(
    mode: &str,
    root: &Path,
    name: &str,
    timeout: Duration,
) -> Option<(Vec<String>, String)> {
    let mut child = ChildProcess::spawn(mode, root, name, 0, Some(128));
    let status = child.wait_exit(timeout);
    let output = child.output();
    if status.code() == Some(77) {
        eprintln!("skipped: the shell cannot set a file size limit\n{output}");
        return None;
    }
    assert!(
        status.success(),
        "the {mode} child failed ({status})\n{output}"
    );
    let lines = child.stdout_log.lock().clone();
    Some((lines, output))
}

/// The first of `lines` that starts with `prefix`; panics with `missing` otherwise.
fn line_with<'a>(lines: &'a [String], prefix: &str, missing: &str) -> &'a String {
    let found = lines.iter().find(|l| l.starts_with(prefix));
    found.unwrap_or_else(|| panic!("{missing}"))
}

/// A delay before the kill: many short ones (session creation, the first writes), some long.
fn kill_delay(seed: u64) -> Duration {
    let r = mix(seed);
    let micros = match r % 10 {
        0..=2 => (r >> 8) % 5_000,
        3..=6 => 5_000 + (r >> 8) % 55_000,
        _ => 60_000 + (r >> 8) % 240_000,
    };
    Duration::from_micros(micros)
}

fn base_seed() -> u64 {
    std::env::var("PAIIO_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C0_FFEE)
}

/// F10: SIGKILL at random points of a commit loop (appends, static and dynamic overwrites,
/// dynamic partitions, several streams and batches); after every kill the table opens,
/// describes, reads completely, and holds exactly the commits its version says.
#[test]
fn killed_committer_leaves_old_or_new_version() {
    let root = tempfile::tempdir().unwrap();
    let runtime = current_thread_runtime();
    let seed = base_seed();
    let started = Instant::now();
    const ITERATIONS: u64 = 120;
    // A new table every few kills keeps the full re-read after each kill cheap.
    const KILLS_PER_TABLE: u64 = 20;
    let mut last_version: BTreeMap<String, u64> = BTreeMap::new();
    let mut commits_seen = 0u64;
    for iteration in 0..ITERATIONS {
        let name = format!("t{}", iteration / KILLS_PER_TABLE);
        let table = table_id(&name);
        let delay = kill_delay(seed ^ iteration);
        let mut child = ChildProcess::spawn("commits", root.path(), &name, seed ^ iteration, None);
        child.wait_ready();
        std::thread::sleep(delay);
        child.kill();
        drop(child);
        let version = runtime.block_on(verify_table(root.path(), &table, Profile::Varied));
        let previous = last_version.get(&name).copied();
        if let Some(v) = version {
            if let Some(prev) = previous {
                assert!(
                    v >= prev,
                    "{table} went back from v{prev} to v{v} after kill {iteration}"
                );
                commits_seen += v - prev;
            } else {
                commits_seen += v;
            }
            last_version.insert(name, v);
        } else {
            assert!(
                previous.is_none(),
                "{table} disappeared after kill {iteration} (delay {delay:?})"
            );
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "crash: {ITERATIONS} kills, {commits_seen} commits survived, tables {last_version:?}, {elapsed:?}"
    );
    assert!(
        commits_seen >= ITERATIONS / 4,
        "only {commits_seen} commits happened in {ITERATIONS} kills: the kills hit too early to test commits"
    );
}

/// F10 for the catalog: SIGKILL while tables are created, filled and dropped. Every table
/// either does not exist (and can be created again) or is a complete version 0 or 1.
#[test]
fn killed_create_and_drop_leave_whole_tables() {
    let root = tempfile::tempdir().unwrap();
    let runtime = current_thread_runtime();
    let seed = base_seed() ^ 0xCA7A_1060;
    const ITERATIONS: u64 = 40;
    for iteration in 0..ITERATIONS {
        let mut child = ChildProcess::spawn(
            "catalog",
            root.path(),
            "cat0",
            seed.wrapping_add(iteration * 7919),
            None,
        );
        child.wait_ready();
        std::thread::sleep(kill_delay(seed ^ iteration) / 2);
        child.kill();
        drop(child);
        runtime.block_on(async {
            let w = LocalWarehouse::open(root.path()).unwrap();
            let listed: BTreeSet<TableId> = w
                .list_tables(PROJECT, None)
                .await
                .unwrap_or_else(|e| {
                    panic!("list_tables fails after a kill during create/drop: {e}")
                })
                .into_iter()
                .collect();
            let mut existing = BTreeSet::new();
            for name in CATALOG_TABLES {
                let table = table_id(name);
                if let Some(version) = verify_table(root.path(), &table, Profile::Varied).await {
                    assert!(
                        version <= 1,
                        "{table} has v{version}; the catalog child commits once per table"
                    );
                    existing.insert(table);
                }
            }
            assert_eq!(
                listed, existing,
                "list_tables disagrees with the tables that exist"
            );
        });
    }
    // After all the kills, every table can be dropped and created again.
    runtime.block_on(async {
        let w = LocalWarehouse::open(root.path()).unwrap();
        for name in CATALOG_TABLES {
            let table = table_id(name);
            w.drop_table(&table, true).await.unwrap();
            w.create_table(&table, &table_schema(), CreateTableOptions::default())
                .await
                .unwrap_or_else(|e| {
                    panic!("{table} cannot be created again after the crashes: {e}")
                });
            write_and_commit(&w, &table, &plan(Profile::Varied, 0))
                .await
                .unwrap();
            assert_eq!(
                verify_table(root.path(), &table, Profile::Varied).await,
                Some(1)
            );
        }
    });
}

/// F11: writes and commits that fail for want of space (a file size limit on the child,
/// EFBIG) end in a clean error, leave the table unchanged with no torn manifest, and the
/// failed session can be committed once space is back.
#[test]
fn failed_file_writes_leave_the_table_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let runtime = current_thread_runtime();
    let table = table_id("full");
    let plans = (0..2).map(|c| plan(Profile::ManyFiles, c));
    create_with_commits(&runtime, root.path(), &table, plans);
    let timeout = Duration::from_secs(60);
    let Some((lines, output)) = run_full_disk_child("disk-full", root.path(), "full", timeout)
    else {
        return;
    };

    let missing = format!("a 60,000-row write fit in the file size limit?\n{output}");
    let write_failed = line_with(&lines, "PAIIO_WRITE_FAILED", &missing);
    // The storage layer reports EFBIG from the Arrow IPC writer as Error::Arrow (wrapping the
    // io::Error), not Error::Io; either way it must be a clean error naming the OS failure.
    assert!(
        write_failed.contains("io=true") || write_failed.contains("os error 27"),
        "a failed data file write should be an I/O error: {write_failed}"
    );

    let missing = format!("no commit failed under the file size limit\n{output}");
    let commit_failed = line_with(&lines, "PAIIO_COMMIT_FAILED", &missing);
    let field = |key: &str| -> String {
        commit_failed
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {commit_failed}"))
            .to_string()
    };
    assert_eq!(
        field("io"),
        "true",
        "a manifest that cannot be written should fail as an Io error: {commit_failed}"
    );
    assert_eq!(
        field("unchanged"),
        "true",
        "a failed commit changed the table: {commit_failed}"
    );
    assert_eq!(
        field("state"),
        "NORMAL",
        "a failed commit should leave its session committable: {commit_failed}"
    );
    let c: u64 = field("c").parse().unwrap();
    let session = field("session");

    runtime.block_on(async {
        // The table is exactly commits 0..c, nothing torn, the half-written manifest invisible.
        let version = verify_table(root.path(), &table, Profile::ManyFiles).await;
        assert_eq!(
            version,
            Some(c),
            "after the failed commit {c} the table should be at v{c}"
        );
        let manifest_dir = table_dir(root.path(), &table).join("_manifest");
        let leftovers: Vec<String> = std::fs::read_dir(&manifest_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        if !leftovers.is_empty() {
            eprintln!(
                "note: a failed commit left temporary files behind in _manifest: {leftovers:?}"
            );
        }
        // Space is back: the same session commits, once.
        let w = LocalWarehouse::open(root.path()).unwrap();
        let info = w
            .commit_write_session(&table, &session, None)
            .await
            .unwrap_or_else(|e| {
                panic!("retrying the commit that failed for want of space failed: {e}")
            });
        assert_eq!(
            info.version,
            c + 1,
            "the retried commit {c} should publish v{}",
            c + 1
        );
        let again = w
            .commit_write_session(&table, &session, None)
            .await
            .unwrap();
        assert_eq!(
            again, info,
            "committing a committed session again must answer the same"
        );
        assert_eq!(
            verify_table(root.path(), &table, Profile::ManyFiles).await,
            Some(c + 1)
        );
    });
}

/// The data files of a table that no manifest lists (snapshots list every partition, deltas
/// the files they added: together they list every file of every version).
fn unreferenced_data_files(root: &Path, table: &TableId) -> Vec<String> {
    let dir = table_dir(root, table);
    let mut listed: HashSet<String> = HashSet::new();
    for entry in std::fs::read_dir(dir.join("_manifest")).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        let parts = m["partitions"]
            .as_array()
            .into_iter()
            .chain(m["added"].as_array());
        listed.extend(
            parts
                .flatten()
                .flat_map(|p| p["files"].as_array().cloned().unwrap_or_default())
                .map(|f| f["path"].as_str().unwrap().to_string()),
        );
    }
    std::fs::read_dir(dir.join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| format!("data/{}", e.file_name().to_string_lossy()))
        .filter(|p| !listed.contains(p))
        .collect()
}

/// F11, an import on a full disk: the write that does not fit fails with an error that says
/// the warehouse is out of space, and removes what it wrote; the abort that follows removes the
/// rest. The table is unchanged and no data file is left that nothing lists.
#[test]
fn failed_import_on_a_full_disk_leaves_no_files() {
    let root = tempfile::tempdir().unwrap();
    let runtime = current_thread_runtime();
    let table = table_id("fullimport");
    create_with_commits(&runtime, root.path(), &table, [plan(Profile::ManyFiles, 0)]);
    let before = unreferenced_data_files(root.path(), &table);
    assert!(before.is_empty(), "{before:?}");
    let timeout = Duration::from_secs(60);
    let Some((lines, output)) =
        run_full_disk_child("disk-full-import", root.path(), "fullimport", timeout)
    else {
        return;
    };
    let missing = format!("a 60,000-row write fit in the file size limit?\n{output}");
    let failed = line_with(&lines, "PAIIO_WRITE_FAILED", &missing);
    assert!(
        failed.contains("unwritable=true") && failed.contains("over the file size limit"),
        "a write that does not fit should say the warehouse is full: {failed}"
    );
    assert!(
        lines.iter().any(|l| l == "PAIIO_ABORTED"),
        "the abort failed\n{output}"
    );
    let left = unreferenced_data_files(root.path(), &table);
    assert!(
        left.is_empty(),
        "the failed import left data files nothing lists: {left:?}\n{output}"
    );
    runtime.block_on(async {
        assert_eq!(
            verify_table(root.path(), &table, Profile::ManyFiles).await,
            Some(1)
        );
    });
}

/// F11 for reads: a read session whose file does not fit on the disk is kept in memory, and
/// the warehouse still serves reads.
#[test]
fn full_disk_still_serves_reads() {
    let root = tempfile::tempdir().unwrap();
    let runtime = current_thread_runtime();
    let table = table_id("fullread");
    let p = Plan {
        c: 0,
        kind: Kind::Append(0),
        rows: 20_000,
        streams: 1,
        batches_per_stream: 1,
    };
    create_with_commits(&runtime, root.path(), &table, [p]);
    let timeout = Duration::from_secs(120);
    let Some((lines, output)) =
        run_full_disk_child("disk-full-read", root.path(), "fullread", timeout)
    else {
        return;
    };
    let read = line_with(&lines, "PAIIO_READ", &format!("no read report\n{output}"));
    assert_eq!(
        read, "PAIIO_READ rows=208 sampled=208 splits=20000",
        "\n{output}"
    );
}

#[test]
fn expected_content_model_is_sane() {
    // The model the crash tests rely on: overwrites replace, appends accumulate.
    let groups = expected_groups(Profile::Varied, 14);
    let commits: BTreeSet<u64> = groups.keys().map(|(c, _)| *c).collect();
    assert!(
        !commits.contains(&3),
        "commit 3 (overwrite of pt=ow) is replaced by commit 10"
    );
    assert!(commits.contains(&10) && commits.contains(&0) && commits.contains(&5));
    let total: u64 = groups.values().sum();
    assert!(total > 0);
}
