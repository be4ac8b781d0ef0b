//! Reclaiming space in the local warehouse: abandoned write sessions, unreferenced data
//! files, and old manifest versions go; what a live session, a pinned snapshot or a retried
//! commit needs stays.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use futures::StreamExt;
use paiio_storage::clock::ManualClock;
use paiio_storage::error::ObjectKind;
use paiio_storage::local::{LocalWarehouse, VacuumOptions};
use paiio_storage::{
    Column, CreateTableOptions, Error, OdpsType, ReadRange, ReadRequest, ReadSessionRequest,
    SplitOptions, TableId, TableSchema, TableService, WriteRequest, WriteSessionRequest,
};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn table() -> TableId {
    TableId::new("vproj", None, "t").unwrap()
}

fn table_dir(w: &LocalWarehouse) -> PathBuf {
    w.root().join("vproj").join("default").join("t")
}

/// Vacuum everything nothing needs, at once (nothing else uses these warehouses).
fn eager() -> VacuumOptions {
    VacuumOptions {
        dry_run: false,
        version_retention: Duration::ZERO,
        keep_versions: 1,
        grace: Duration::ZERO,
        abandon_idle: None,
    }
}

async fn open(root: &Path) -> (LocalWarehouse, ManualClock) {
    let clock = ManualClock::new();
    let w = LocalWarehouse::builder(root)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let schema = TableSchema::new(vec![Column::new("id", OdpsType::BigInt)], vec![]).unwrap();
    w.create_table(
        &table(),
        &schema,
        CreateTableOptions {
            if_not_exists: true,
        },
    )
    .await
    .unwrap();
    (w, clock)
}

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(ids))]).unwrap()
}

/// A session with `ids` written to one closed stream, not committed.
async fn write(w: &LocalWarehouse, ids: std::ops::Range<i64>) -> String {
    let t = table();
    let sid = w
        .create_write_session(&WriteSessionRequest::new(t.clone()))
        .await
        .unwrap()
        .session_id;
    let stream = w.create_write_stream(&t, &sid, None, false).await.unwrap();
    let request = WriteRequest {
        table: t.clone(),
        session_id: sid.clone(),
        stream_id: stream.stream_id.clone(),
        version: stream.version,
        row_offset: None,
        access_token: None,
        batches: vec![batch(ids)],
    };
    w.write(request).await.unwrap();
    w.close_write_stream(&t, &sid, &stream.stream_id, stream.version)
        .await
        .unwrap();
    sid
}

async fn append(w: &LocalWarehouse, ids: std::ops::Range<i64>) -> u64 {
    let sid = write(w, ids).await;
    w.commit_write_session(&table(), &sid, None)
        .await
        .unwrap()
        .version
}

/// Every id of the current version, sorted.
async fn ids(w: &LocalWarehouse) -> Vec<i64> {
    let mut request = ReadSessionRequest::new(table());
    request.split_options = SplitOptions::row_offset();
    let session = w.create_read_session(&request).await.unwrap();
    read_session(w, &session.session_id, session.record_count as u64)
        .await
        .unwrap()
}

async fn read_session(w: &LocalWarehouse, sid: &str, rows: u64) -> paiio_storage::Result<Vec<i64>> {
    let range = ReadRange::Rows {
        offset: 0,
        count: rows,
    };
    let mut stream = w.read(&ReadRequest::new(table(), sid, range)).await?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend((0..col.len()).map(|i| col.value(i)));
    }
    out.sort_unstable();
    Ok(out)
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Killed imports leave sessions and staged files; vacuum removes those of expired sessions
/// and every unreferenced file, and keeps the table and a live session's files.
#[tokio::test]
async fn vacuum_reclaims_abandoned_writes_and_keeps_live_ones() {
    let root = tempfile::tempdir().unwrap();
    let (w, clock) = open(root.path()).await;
    append(&w, 0..100).await;
    let live_before = files(&table_dir(&w).join("data"));
    // Three imports killed before their commit.
    let mut killed = Vec::new();
    for k in 0..3 {
        killed.push(write(&w, 1000 * (k + 1)..1000 * (k + 1) + 500).await);
    }
    // A file a writer wrote and never recorded (killed between the two).
    std::fs::write(
        table_dir(&w).join("data").join("0123456789abcdef.arrow"),
        vec![0u8; 4096],
    )
    .unwrap();
    assert_eq!(files(&table_dir(&w).join("data")).len(), 5);
    assert_eq!(files(&table_dir(&w).join("_write")).len(), 4);

    // A dry run changes nothing, and reports what a real run frees.
    let dry = w
        .vacuum(
            None,
            &VacuumOptions {
                dry_run: true,
                ..eager()
            },
        )
        .await
        .unwrap();
    assert_eq!(files(&table_dir(&w).join("data")).len(), 5);

    // The sessions are live: only the unrecorded file goes.
    let report = w.vacuum(None, &eager()).await.unwrap();
    assert_eq!(
        (report.data_files, report.write_sessions),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(dry.data_files, 1, "{dry:?}");
    assert_eq!(files(&table_dir(&w).join("data")).len(), 4);

    // A day later the abandoned sessions have expired; a new one is live.
    clock.advance_ms(DAY_MS + 1);
    let live = write(&w, 9000..9010).await;
    let report = w.vacuum(None, &eager()).await.unwrap();
    // 4 sessions (the committed one too, past its lifetime) and 3 staged files.
    assert_eq!(
        (report.write_sessions, report.data_files),
        (4, 3),
        "{report:?}"
    );
    assert!(report.bytes > 0 && report.files >= 3 + 4 * 2, "{report:?}");
    assert_eq!(
        files(&table_dir(&w).join("_write")),
        BTreeSet::from([live.clone()])
    );
    let data = files(&table_dir(&w).join("data"));
    assert_eq!(
        data.len(),
        live_before.len() + 1,
        "the table's files and the live session's file stay"
    );
    assert!(live_before.is_subset(&data));

    // The live session still commits, and the table holds exactly what was committed.
    w.commit_write_session(&table(), &live, None).await.unwrap();
    let expected: Vec<i64> = (0..100).chain(9000..9010).collect();
    assert_eq!(ids(&w).await, expected);
    // A removed session cannot be committed: a clear answer, nothing applied.
    match w.commit_write_session(&table(), &killed[0], None).await {
        Err(Error::NotFound {
            kind: ObjectKind::WriteSession,
            ..
        }) => {}
        other => panic!("committing a vacuumed session: {other:?}"),
    }
    assert_eq!(ids(&w).await, expected);
}

/// Old versions go; the latest stays, a live read session's pinned version stays and reads
/// the same rows; once that session expired its version goes and reading it says why.
#[tokio::test]
async fn vacuum_expires_versions_but_never_a_pinned_one() {
    let root = tempfile::tempdir().unwrap();
    let (w, clock) = open(root.path()).await;
    append(&w, 0..10).await;
    let mut request = ReadSessionRequest::new(table());
    request.split_options = SplitOptions::row_offset();
    let pinned = w.create_read_session(&request).await.unwrap();
    assert_eq!(pinned.table_version, 1);
    // An overwrite replaces the rows of v1: its file is referenced by v1 only.
    let sid = w
        .create_write_session(&WriteSessionRequest {
            overwrite: true,
            ..WriteSessionRequest::new(table())
        })
        .await
        .unwrap()
        .session_id;
    let stream = w
        .create_write_stream(&table(), &sid, None, false)
        .await
        .unwrap();
    w.write(WriteRequest {
        table: table(),
        session_id: sid.clone(),
        stream_id: stream.stream_id.clone(),
        version: stream.version,
        row_offset: None,
        access_token: None,
        batches: vec![batch(100..105)],
    })
    .await
    .unwrap();
    w.close_write_stream(&table(), &sid, &stream.stream_id, stream.version)
        .await
        .unwrap();
    w.commit_write_session(&table(), &sid, None).await.unwrap();
    for k in 0..5 {
        append(&w, 200 + k * 10..200 + k * 10 + 10).await;
    }
    let report = w.vacuum(Some(&table()), &eager()).await.unwrap();
    // v0 and v2..v6 go (v7 is the latest); v1 is pinned, so its file stays.
    assert_eq!(report.versions, 6, "{report:?}");
    // v1 and v7 are deltas: each got a checkpoint, so the versions below could go.
    let manifests = files(&table_dir(&w).join("_manifest"));
    let expected = [
        "00000000000000000001.checkpoint.json",
        "00000000000000000001.json",
        "00000000000000000007.checkpoint.json",
        "00000000000000000007.json",
    ];
    assert_eq!(
        manifests,
        expected.map(String::from).into(),
        "{manifests:?}"
    );
    assert_eq!(
        read_session(&w, &pinned.session_id, 10).await.unwrap(),
        (0..10).collect::<Vec<_>>()
    );

    // The session expires: its version and the file only it needed go.
    clock.advance_ms(DAY_MS + 1);
    let report = w.vacuum(Some(&table()), &eager()).await.unwrap();
    assert_eq!((report.versions, report.data_files), (1, 1), "{report:?}");
    let expected: Vec<i64> = (100..105).chain(200..250).collect();
    assert_eq!(ids(&w).await, expected);
    let reviving = LocalWarehouse::builder(root.path())
        .clock(Arc::new(clock.clone()))
        .revive_expired_read_sessions(true)
        .open()
        .unwrap();
    // The session file was removed with its version: a clear not-found.
    match reviving
        .get_read_session(&table(), &pinned.session_id, true)
        .await
    {
        Err(Error::NotFound { kind, .. }) => {
            assert!(
                matches!(kind, ObjectKind::ReadSession | ObjectKind::TableVersion),
                "{kind}"
            )
        }
        other => panic!("refreshing a vacuumed session: {other:?}"),
    }
}

/// Where vacuum cannot store the checkpoint a retained delta needs, it keeps the version
/// below it (and checkpoints that one instead); once it can, that version goes too.
#[tokio::test]
async fn vacuum_keeps_what_a_delta_needs_when_it_cannot_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let (w, _clock) = open(root.path()).await;
    for k in 0..5 {
        append(&w, k * 10..k * 10 + 10).await;
    }
    // Something that is not a file where the checkpoint of v5 goes.
    let manifest_dir = table_dir(&w).join("_manifest");
    let name = |v: u64, kind: &str| format!("{v:020}.{kind}json");
    let blocker = manifest_dir.join(name(5, "checkpoint."));
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("x"), b"x").unwrap();
    let report = w.vacuum(Some(&table()), &eager()).await.unwrap();
    assert_eq!(report.versions, 4, "v0..v3 go, v4 stays: {report:?}");
    let left = files(&manifest_dir);
    let expected = [
        name(4, "checkpoint."),
        name(4, ""),
        name(5, "checkpoint."),
        name(5, ""),
    ];
    assert_eq!(left, expected.into(), "{left:?}");
    let fresh = LocalWarehouse::open(root.path()).unwrap();
    assert_eq!(ids(&fresh).await, (0..50).collect::<Vec<_>>());

    std::fs::remove_dir_all(&blocker).unwrap();
    let report = w.vacuum(Some(&table()), &eager()).await.unwrap();
    assert_eq!(report.versions, 1, "{report:?}");
    assert!(blocker.is_file());
    assert_eq!(files(&manifest_dir).len(), 2);
    let fresh = LocalWarehouse::open(root.path()).unwrap();
    assert_eq!(ids(&fresh).await, (0..50).collect::<Vec<_>>());
}

/// A read session whose pinned version vacuum removed (its file still there, its lifetime
/// over, revived) gets an error that says so.
#[tokio::test]
async fn reading_a_removed_version_says_why() {
    let root = tempfile::tempdir().unwrap();
    let (w, clock) = open(root.path()).await;
    append(&w, 0..10).await;
    let mut request = ReadSessionRequest::new(table());
    request.split_options = SplitOptions::row_offset();
    let session = w.create_read_session(&request).await.unwrap();
    append(&w, 10..20).await;
    let file = w
        .root()
        .join(".paiio/read_sessions")
        .join(format!("{}.json", session.session_id));
    let saved = std::fs::read(&file).unwrap();
    clock.advance_ms(DAY_MS + 1);
    w.vacuum(Some(&table()), &eager()).await.unwrap();
    // Bring the session file back (as a copy another process held) and revive it.
    std::fs::write(&file, saved).unwrap();
    let reviving = LocalWarehouse::builder(root.path())
        .clock(Arc::new(clock.clone()))
        .revive_expired_read_sessions(true)
        .open()
        .unwrap();
    let err = reviving
        .get_read_session(&table(), &session.session_id, true)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("removed by vacuum") && message.contains("version 1"),
        "{message}"
    );
}

/// A commit whose answer was lost (published, state not saved) is recognised when retried
/// after vacuum: its version is kept while its session can retry, so it applies once.
#[tokio::test]
async fn retried_commit_after_vacuum_applies_once() {
    let root = tempfile::tempdir().unwrap();
    let (w, _clock) = open(root.path()).await;
    let sid = write(&w, 0..10).await;
    let session_file = table_dir(&w).join("_write").join(&sid).join("session.json");
    let before_commit = std::fs::read(&session_file).unwrap();
    let info = w.commit_write_session(&table(), &sid, None).await.unwrap();
    // The process died after publishing, before recording the commit in the session.
    std::fs::write(&session_file, before_commit).unwrap();
    for k in 0..5 {
        append(&w, 100 + k * 10..110 + k * 10).await;
    }
    let report = w.vacuum(Some(&table()), &eager()).await.unwrap();
    assert_eq!(
        report.versions, 5,
        "v0 and v2..v5 go (v6 is the latest); v1 stays: {report:?}"
    );
    let again = w.commit_write_session(&table(), &sid, None).await.unwrap();
    assert_eq!(
        again, info,
        "the retried commit must answer the version it published"
    );
    let expected: Vec<i64> = (0..10).chain(100..150).collect();
    assert_eq!(ids(&w).await, expected, "rows applied exactly once");
    // Now recorded as committed, its version may go.
    let report = w.vacuum(Some(&table()), &eager()).await.unwrap();
    assert_eq!(report.versions, 1, "{report:?}");
    assert_eq!(
        w.commit_write_session(&table(), &sid, None).await.unwrap(),
        info
    );
    assert_eq!(ids(&w).await, expected);
}

/// 400 small commits with vacuum: it leaves a bounded number of manifests, the latest
/// versions (deltas) and the snapshots they are built on.
#[tokio::test]
async fn manifest_bytes_stay_bounded_with_retention() {
    let root = tempfile::tempdir().unwrap();
    let (w, _clock) = open(root.path()).await;
    let manifest_dir = table_dir(&w).join("_manifest");
    let options = VacuumOptions {
        keep_versions: 10,
        ..eager()
    };
    let (mut peak_after, mut without_retention) = (0, 0);
    for k in 0..400 {
        let version = append(&w, k * 3..k * 3 + 3).await;
        without_retention += std::fs::metadata(manifest_dir.join(format!("{version:020}.json")))
            .unwrap()
            .len();
        if k % 50 == 49 {
            w.vacuum(Some(&table()), &options).await.unwrap();
            peak_after = peak_after.max(dir_bytes(&manifest_dir));
        }
    }
    // v391 is the lowest version kept: it got a checkpoint, a snapshot of 400 files.
    let snapshot = std::fs::metadata(manifest_dir.join(format!("{:020}.checkpoint.json", 391)))
        .unwrap()
        .len();
    eprintln!(
        "400 commits: {without_retention} bytes of manifests without retention, at most \
         {peak_after} bytes after vacuum (a snapshot of the latest version: {snapshot} bytes)"
    );
    let names = files(&manifest_dir);
    assert_eq!(names.len(), 11, "ten versions and a checkpoint: {names:?}");
    assert!(
        peak_after <= 2 * snapshot,
        "manifests after vacuum: {peak_after} bytes (a snapshot {snapshot})"
    );
    // A fresh process loads the latest version from the checkpoint and nine deltas.
    let fresh = LocalWarehouse::open(root.path()).unwrap();
    assert_eq!(ids(&fresh).await, (0..1200).collect::<Vec<_>>());
}

/// 400 small commits without vacuum: each commit writes a delta of the files it adds (a full
/// snapshot every 32 versions), so the bytes of a commit do not grow with the table's history,
/// and loading the latest version after a commit reads that commit's delta only.
#[tokio::test]
async fn manifest_bytes_per_commit_do_not_grow_with_history() {
    let root = tempfile::tempdir().unwrap();
    let (w, _clock) = open(root.path()).await;
    let manifest_dir = table_dir(&w).join("_manifest");
    let mut written = vec![0u64; 401];
    for k in 0..400 {
        let before = dir_bytes(&manifest_dir);
        let version = append(&w, k * 3..k * 3 + 3).await;
        written[version as usize] = dir_bytes(&manifest_dir) - before;
    }
    let total = dir_bytes(&manifest_dir);
    let started = std::time::Instant::now();
    let fresh = LocalWarehouse::open(root.path()).unwrap();
    let info = fresh.describe_table(&table()).await.unwrap();
    let cold = started.elapsed();
    append(&w, 1200..1203).await;
    let started = std::time::Instant::now();
    w.describe_table(&table()).await.unwrap();
    let warm = started.elapsed();
    eprintln!(
        "400 commits: {total} bytes of manifests; commit 10 wrote {} bytes, commit 399 {}, \
         commit 400 {}, the largest {}; latest version loaded in {cold:?} by a fresh process, \
         in {warm:?} after one more commit",
        written[10],
        written[399],
        written[400],
        written.iter().max().unwrap()
    );
    assert_eq!(info.row_count, 1200);
    // Versions that are multiples of 32 are checkpoints (full snapshots): excluded.
    assert!(
        written[399] <= written[10] + 64 && written[400] <= written[10] + 64,
        "commit bytes grow with history: commit 10 {}, 399 {}, 400 {}",
        written[10],
        written[399],
        written[400]
    );
    assert!(
        total < 1 << 20,
        "{total} bytes of manifests for 400 commits"
    );
    assert_eq!(ids(&w).await, (0..1203).collect::<Vec<_>>());
}

const OWNER_CHILD_DIR: &str = "PAIIO_OWNER_CHILD_DIR";
const OWNER_CHILD_READY: &str = "PAIIO_OWNER_CHILD_READY";

/// Run as a child process by [`a_killed_writers_session_goes_at_once`] (does nothing unless
/// `PAIIO_OWNER_CHILD_DIR` is set): writes to a session, says so, and waits to be killed.
#[tokio::test]
async fn owner_child() {
    let Ok(dir) = std::env::var(OWNER_CHILD_DIR) else {
        return;
    };
    let w = LocalWarehouse::open(dir).unwrap();
    let sid = write(&w, 0..50).await;
    println!("{OWNER_CHILD_READY} {sid}");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// An import killed with SIGKILL: its session records its process, which is gone, so vacuum
/// with default options removes the session and its staged file at once. A session whose
/// process is alive stays, and so does a session without an owner (a server's) until it
/// expires.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_killed_writers_session_goes_at_once() {
    use std::io::BufRead;

    let root = tempfile::tempdir().unwrap();
    let (w, clock) = open(root.path()).await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "vacuum::owner_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(OWNER_CHILD_DIR, root.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let killed = stdout.lines().map_while(|l| l.ok()).find_map(|l| {
        let at = l.find(OWNER_CHILD_READY)?;
        l[at + OWNER_CHILD_READY.len()..]
            .split_whitespace()
            .next()
            .map(str::to_string)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = killed.expect("the child wrote to a session");

    let live = write(&w, 100..110).await;
    let server = LocalWarehouse::builder(root.path())
        .clock(Arc::new(clock.clone()))
        .record_session_owner(false)
        .open()
        .unwrap();
    let ownerless = {
        let t = table();
        let sid = server
            .create_write_session(&WriteSessionRequest::new(t.clone()))
            .await
            .unwrap()
            .session_id;
        let stream = server
            .create_write_stream(&t, &sid, None, false)
            .await
            .unwrap();
        server
            .write(WriteRequest {
                table: t.clone(),
                session_id: sid.clone(),
                stream_id: stream.stream_id.clone(),
                version: stream.version,
                row_offset: None,
                access_token: None,
                batches: vec![batch(200..210)],
            })
            .await
            .unwrap();
        sid
    };
    let sessions = files(&table_dir(&w).join("_write"));
    assert_eq!(
        sessions,
        BTreeSet::from([killed.clone(), live.clone(), ownerless.clone()])
    );
    assert_eq!(files(&table_dir(&w).join("data")).len(), 3);

    let report = w
        .vacuum(Some(&table()), &VacuumOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (report.write_sessions, report.data_files),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        files(&table_dir(&w).join("_write")),
        BTreeSet::from([live.clone(), ownerless.clone()])
    );
    assert_eq!(files(&table_dir(&w).join("data")).len(), 2);
    w.commit_write_session(&table(), &live, None).await.unwrap();
    assert_eq!(ids(&w).await, (100..110).collect::<Vec<_>>());

    // The ownerless session goes when it expires (and the grace period is over).
    clock.advance_ms(DAY_MS + 3600 * 1000 + 1);
    w.vacuum(Some(&table()), &VacuumOptions::default())
        .await
        .unwrap();
    assert!(!files(&table_dir(&w).join("_write")).contains(&ownerless));

    // --abandon-idle takes an ownerless session before it expires.
    let idle = server
        .create_write_session(&WriteSessionRequest::new(table()))
        .await
        .unwrap()
        .session_id;
    let keep = w
        .vacuum(Some(&table()), &VacuumOptions::default())
        .await
        .unwrap();
    assert_eq!(keep.write_sessions, 0, "{keep:?}");
    let abandon = VacuumOptions {
        abandon_idle: Some(Duration::ZERO),
        ..VacuumOptions::default()
    };
    let report = w.vacuum(Some(&table()), &abandon).await.unwrap();
    assert_eq!(report.write_sessions, 1, "{report:?}");
    assert!(!files(&table_dir(&w).join("_write")).contains(&idle));
}
