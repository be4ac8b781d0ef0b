//! The REST client under seeded random fault schedules (docs/reliability.md §2, F1–F9), and its
//! read-session refresh.
//!
//! `fault_schedules` runs [`SCHEDULES`] schedules (`PAIIO_FAULT_SCHEDULES` overrides the
//! number; `PAIIO_FAULT_SEED` runs one seed alone). Each schedule draws from its seed a table
//! (50–500 generated rows: unique id + content hash), a workload (a: read the whole table
//! through several splits or row ranges with a random `max_batch_rows` and body compression;
//! b: exactly-once writes of K batches in 1–3 streams + commit; c: both at once) and 1–3
//! fault rules (F1 reset before headers, F2 reset after N body bytes — at approximate message
//! boundaries, the last byte, or anywhere —, F3 truncation, F4 stall past the read timeout,
//! F6 500/502/503/504/429+Retry-After/408, F7 lost answers of commit/close/stream creation,
//! F8 lost answers of exactly-once TableWrite so the client re-sends, F9 the session clock
//! advanced past expiry mid-read), each firing `Nth`, `Next`, with a `Probability` or
//! `Always`. F5 (bit flips) is not drawn: V2 bodies (Arrow IPC, JSON) carry no checksum, so
//! a flip cannot be detected (see `corruption_of_a_read_body_is_not_detected`).
//!
//! Invariants asserted per schedule: every row id read exactly once, in order, per split or
//! range equal to what the server's warehouse declares for the same session (so every
//! resume started exactly at the rows already handed out), and every row's content verifies;
//! a read that fails has handed out only a correct prefix; a write that succeeds is visible
//! exactly once in exactly one new table version; a write that fails leaves the table exactly
//! as it was (or, when its commit was applied but every answer lost, exactly the new
//! version, never a mix); every failure is the retry budget spent (or SessionExpired of a
//! write session when F9 struck); per call/read, wall time within the budget and attempts
//! without progress at most `max_retries + 1`; the server saw exactly the attempts the client
//! counted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::StreamExt;
use paiio_conformance::datagen::{DataGen, assert_exactly_once, ids};
use paiio_server::{Fault, FaultPlan, FaultRule, When};
use paiio_storage::clock::Clock;
use paiio_storage::protocol::codec::BodyEncoding;
use paiio_storage::rest::retry::SplitMix64;
use paiio_storage::rest::{ClientStats, RestClient, RetryConfig};
use paiio_storage::{
    Error, ReadRange, ReadRequest, ReadSessionRequest, SessionStatus, SplitOptions, TableId,
    TableService, WriteRequest, WriteSessionRequest,
};
use paiio_tests::{PROJECT, TestServer, TestServerOptions, status_fault};

/// Schedules per run (`PAIIO_FAULT_SCHEDULES` overrides).
const SCHEDULES: usize = 1000;
/// Schedules run at once, each worker with its own server and clients.
const WORKERS: usize = 8;

const MAX_RETRIES: u32 = 4;
const RETRY_TIMEOUT: Duration = Duration::from_millis(1500);
const READ_TIMEOUT: Duration = Duration::from_millis(150);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// A stall outlasts both timeouts.
const STALL_MS: u64 = 700;
/// Slack on wall-time bounds (scheduling on 2 busy cores).
const SLACK: Duration = Duration::from_millis(1500);
/// Session lifetime of the warehouse (its default) and how far F9 moves the clock.
const TTL_MS: i64 = 24 * 3600 * 1000;

fn suite_retry(seed: u64) -> RetryConfig {
    RetryConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(8),
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
        seed: Some(seed),
        ..RetryConfig::default()
    }
}

/// The longest one JSON call may take with its retries.
fn call_bound() -> Duration {
    RETRY_TIMEOUT + REQUEST_TIMEOUT
}

// ---------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------

struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    F1Reset,
    F2ResetMidBody,
    F3Truncate,
    F4Stall,
    F6Status,
    F7LostAnswer,
    F8DuplicateWrite,
    F9Expiry,
}

const KINDS: [Kind; 8] = [
    Kind::F1Reset,
    Kind::F2ResetMidBody,
    Kind::F3Truncate,
    Kind::F4Stall,
    Kind::F6Status,
    Kind::F7LostAnswer,
    Kind::F8DuplicateWrite,
    Kind::F9Expiry,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Read,
    Write,
    Both,
}

#[derive(Debug, Clone)]
struct ReadSpec {
    /// `Some(k)`: a Parallelism session of k splits; `None`: a RowOffset session read as ranges.
    splits: Option<u64>,
    /// Row ranges of a RowOffset session.
    ranges: Vec<(u64, u64)>,
    max_batch_rows: usize,
    compression: Option<BodyEncoding>,
    /// F9: advance the clock past expiry after this many batches of this range.
    expire_at: Option<(usize, usize)>,
    /// Read with the client that shares the server's clock (refreshes ahead of expiry),
    /// else with the one on system time (refreshes after a `SessionExpired`).
    clock_client: bool,
}

#[derive(Debug, Clone)]
struct WriteSpec {
    streams: usize,
    /// (stream, rows) in write order.
    batches: Vec<(usize, u64)>,
}

impl WriteSpec {
    fn rows(&self) -> u64 {
        self.batches.iter().map(|b| b.1).sum()
    }
}

#[derive(Debug, Clone)]
struct Schedule {
    index: usize,
    seed: u64,
    rows: u64,
    workload: Workload,
    read: Option<ReadSpec>,
    write: Option<WriteSpec>,
    /// The rules and the kind each stands for.
    rules: Vec<(Kind, FaultRule)>,
    /// Kinds drawn (F5 and F9 included).
    drawn: Vec<Kind>,
}

impl Schedule {
    fn plan(&self) -> FaultPlan {
        let mut plan = FaultPlan::new().seed(self.seed);
        for (_, r) in &self.rules {
            plan = plan.rule(r.clone());
        }
        // Counts every request no fault fired on (`seen`), never fires.
        plan.rule(FaultRule::new(Fault::Reset, When::Nth(u64::MAX)))
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "schedule #{} seed {:#x}: {} rows, {:?}\n  read: {:?}\n  write: {:?}\n  drawn: {:?}\n  rules:",
            self.index, self.seed, self.rows, self.workload, self.read, self.write, self.drawn
        );
        for (k, r) in &self.rules {
            let _ = write!(s, "\n    {k:?}: {}", serde_json::to_string(r).unwrap());
        }
        s
    }
}

const READ_ACTIONS: [&str; 3] = ["TableRead", "TableRead", "TableCreateReadSession"];
const WRITE_ACTIONS: [&str; 8] = [
    "TableWrite",
    "TableWrite",
    "TableCommitWriteSession",
    "TableCreateWriteSession",
    "TableCreateWriteStream",
    "TableCloseWriteStream",
    "TableGetWriteSession",
    "TableGetWriteStream",
];

/// Byte offsets of interest in the body of the first read range: 0, the end of the schema
/// message, the end of each batch message, before the end-of-stream marker, the last byte,
/// and the whole body (approximate: encoded here the way the server encodes).
fn body_points(g: &DataGen, ids: std::ops::Range<i64>, max_batch_rows: usize) -> Vec<u64> {
    let batches = g.batches(ids, max_batch_rows);
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| g.arrow_schema());
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
    let mut points = vec![0, 1, w.get_ref().len() as u64];
    for b in &batches {
        w.write(b).unwrap();
        points.push(w.get_ref().len() as u64);
    }
    w.finish().unwrap();
    let total = w.get_ref().len() as u64;
    points.extend([total.saturating_sub(8), total - 1, total]);
    points
}

fn when(rng: &mut Rng, allow_always: bool) -> When {
    match rng.below(10) {
        0..=3 => When::Nth(rng.range(1, 4)),
        4..=6 => When::Next(rng.range(1, 3)),
        7 | 8 => When::Probability([0.1, 0.2, 0.3, 0.5][rng.below(4) as usize]),
        _ if allow_always => When::Always,
        _ => When::Next(rng.range(1, 6)),
    }
}

fn random_status_fault(rng: &mut Rng) -> Fault {
    let status = rng.pick(&[500u16, 502, 503, 504, 429, 408]);
    let retry_after = match status {
        // Mostly 0 s (to stay fast); sometimes 1 s, which the client must honour.
        429 => Some(if rng.chance(0.05) { 1 } else { 0 }),
        _ => None,
    };
    status_fault(status, retry_after)
}

fn draw(index: usize, seed: u64, g: &DataGen) -> Schedule {
    let mut rng = Rng::new(seed);
    let rows = rng.range(50, 500);
    let workload = match rng.below(3) {
        0 => Workload::Read,
        1 => Workload::Write,
        _ => Workload::Both,
    };
    let reads = workload != Workload::Write;
    let writes = workload != Workload::Read;
    let read = reads.then(|| {
        let max_batch_rows = rng.pick(&[7usize, 16, 50, 100, 333, 4096]);
        let compression = match rng.below(4) {
            0 => Some(BodyEncoding::Zstd),
            1 => Some(BodyEncoding::Lz4Frame),
            _ => None,
        };
        let (splits, ranges) = if rng.chance(0.5) {
            (Some(rng.range(1, 4)), Vec::new())
        } else {
            // Cut points over the rows (as of the read session: reads see at least `rows`).
            let k = rng.range(1, 4);
            let mut cuts: Vec<u64> = (0..k - 1).map(|_| rng.range(1, rows - 1)).collect();
            cuts.extend([0, rows]);
            cuts.sort_unstable();
            cuts.dedup();
            (None, cuts.windows(2).map(|w| (w[0], w[1] - w[0])).collect())
        };
        ReadSpec {
            splits,
            ranges,
            max_batch_rows,
            compression,
            expire_at: None,
            clock_client: rng.chance(0.5),
        }
    });
    let write = writes.then(|| {
        let streams = rng.range(1, 3) as usize;
        let k = rng.range(1, 6);
        let batches = (0..k)
            .map(|i| ((i as usize) % streams, rng.range(1, 80)))
            .collect();
        WriteSpec { streams, batches }
    });
    let mut read = read;
    let first_range_rows = match &read {
        Some(r) => match r.splits {
            Some(k) => rows / k + u64::from(!rows.is_multiple_of(k)),
            None => r.ranges[0].1,
        },
        None => 0,
    };
    let points = match &read {
        Some(r) if r.compression.is_none() => {
            body_points(g, 0..first_range_rows as i64, r.max_batch_rows)
        }
        _ => vec![0, 1, 100, 1000, 4000],
    };
    let n = rng.range(1, 3);
    let mut rules = Vec::new();
    let mut drawn = Vec::new();
    for _ in 0..n {
        let kind = rng.pick(&KINDS);
        drawn.push(kind);
        let action = |rng: &mut Rng| -> &'static str {
            match (reads, writes) {
                (true, false) => rng.pick(&READ_ACTIONS),
                (false, true) => rng.pick(&WRITE_ACTIONS),
                _ => {
                    if rng.chance(0.5) {
                        rng.pick(&READ_ACTIONS)
                    } else {
                        rng.pick(&WRITE_ACTIONS)
                    }
                }
            }
        };
        let body_bytes = |rng: &mut Rng, action: &str| -> u64 {
            if action == "TableRead" {
                if rng.chance(0.7) {
                    rng.pick(&points)
                } else {
                    rng.below(points.last().copied().unwrap_or(1000) + 1)
                }
            } else {
                rng.below(40)
            }
        };
        let (fault, action) = match kind {
            Kind::F1Reset => (Fault::Reset, action(&mut rng)),
            Kind::F2ResetMidBody | Kind::F3Truncate => {
                let a = if reads && (!writes || rng.chance(0.6)) {
                    "TableRead"
                } else {
                    rng.pick(&[
                        "TableWrite",
                        "TableCommitWriteSession",
                        "TableGetWriteSession",
                    ])
                };
                let bytes = body_bytes(&mut rng, a);
                let f = if kind == Kind::F2ResetMidBody {
                    Fault::ResetAfter { bytes }
                } else {
                    Fault::Truncate { bytes }
                };
                (f, a)
            }
            Kind::F4Stall => {
                let a = action(&mut rng);
                let after_bytes =
                    (a == "TableRead" && rng.chance(0.6)).then(|| body_bytes(&mut rng, a));
                (
                    Fault::Stall {
                        ms: STALL_MS,
                        after_bytes,
                    },
                    a,
                )
            }
            Kind::F6Status => (random_status_fault(&mut rng), action(&mut rng)),
            Kind::F7LostAnswer => {
                if !writes {
                    continue;
                }
                (
                    Fault::ResponseLost,
                    rng.pick(&[
                        "TableCommitWriteSession",
                        "TableCommitWriteSession",
                        "TableCloseWriteStream",
                        "TableCreateWriteStream",
                    ]),
                )
            }
            Kind::F8DuplicateWrite => {
                if !writes {
                    continue;
                }
                (Fault::ResponseLost, "TableWrite")
            }
            Kind::F9Expiry => {
                if let Some(r) = &mut read {
                    let ranges = r.splits.map_or(r.ranges.len() as u64, |k| k) as usize;
                    let range = rng.below(ranges as u64) as usize;
                    r.expire_at = Some((range, rng.range(1, 3) as usize));
                }
                continue;
            }
        };
        // `Always` only where each attempt cannot make progress (else a read could crawl).
        let no_progress = !matches!(
            fault,
            Fault::ResetAfter { .. }
                | Fault::Truncate { .. }
                | Fault::Stall {
                    after_bytes: Some(_),
                    ..
                }
        ) || action != "TableRead";
        let w = when(&mut rng, no_progress);
        rules.push((kind, FaultRule::new(fault, w).action(action)));
    }
    Schedule {
        index,
        seed,
        rows,
        workload,
        read,
        write,
        rules,
        drawn,
    }
}

// ---------------------------------------------------------------------------------------
// Running a schedule
// ---------------------------------------------------------------------------------------

struct Worker {
    server: TestServer,
    /// On system time: refreshes after `SessionExpired`.
    client: RestClient,
    /// On the server's clock: refreshes ahead of expiry.
    clock_client: RestClient,
    clock_client_zstd: RestClient,
    clock_client_lz4: RestClient,
    client_zstd: RestClient,
    client_lz4: RestClient,
}

impl Worker {
    async fn start(index: usize) -> Worker {
        let server = reviving_server().await;
        let build = |clock: bool, compression: Option<BodyEncoding>| {
            let mut b = server
                .client_builder()
                .tunnel_endpoint(server.handle.url())
                .retry(suite_retry(index as u64))
                .read_timeout(READ_TIMEOUT)
                .request_timeout(REQUEST_TIMEOUT)
                .read_compression(compression);
            if clock {
                b = b.clock(Arc::new(server.clock.clone()));
            }
            b.build().unwrap()
        };
        Worker {
            client: build(false, None),
            client_zstd: build(false, Some(BodyEncoding::Zstd)),
            client_lz4: build(false, Some(BodyEncoding::Lz4Frame)),
            clock_client: build(true, None),
            clock_client_zstd: build(true, Some(BodyEncoding::Zstd)),
            clock_client_lz4: build(true, Some(BodyEncoding::Lz4Frame)),
            server,
        }
    }

    fn reader(&self, spec: &ReadSpec) -> &RestClient {
        match (spec.clock_client, spec.compression) {
            (false, None | Some(BodyEncoding::Identity)) => &self.client,
            (false, Some(BodyEncoding::Zstd)) => &self.client_zstd,
            (false, Some(BodyEncoding::Lz4Frame)) => &self.client_lz4,
            (true, None | Some(BodyEncoding::Identity)) => &self.clock_client,
            (true, Some(BodyEncoding::Zstd)) => &self.clock_client_zstd,
            (true, Some(BodyEncoding::Lz4Frame)) => &self.clock_client_lz4,
        }
    }

    fn all_clients(&self) -> [&RestClient; 6] {
        [
            &self.client,
            &self.client_zstd,
            &self.client_lz4,
            &self.clock_client,
            &self.clock_client_zstd,
            &self.clock_client_lz4,
        ]
    }

    fn stats(&self) -> ClientStats {
        let mut t = ClientStats::default();
        for c in self.all_clients() {
            add_stats(&mut t, &c.stats());
        }
        t
    }
}

/// Adds the counts of `s` to `total` (and keeps the larger `max_run_attempts`).
fn add_stats(total: &mut ClientStats, s: &ClientStats) {
    total.attempts += s.attempts;
    total.retries += s.retries;
    total.resumes += s.resumes;
    total.refreshes += s.refreshes;
    total.refresh_failures += s.refresh_failures;
    total.max_run_attempts = total.max_run_attempts.max(s.max_run_attempts);
    total.budget_exhausted += s.budget_exhausted;
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    /// The retry budget (attempts or time) was spent.
    FailedBudget,
    /// A write session expired (F9 struck a concurrent write).
    FailedSessionExpired,
}

/// Classifies a failure; anything but a spent budget (or an expired write session) is a bug.
fn classify(e: &Error, what: &str, s: &Schedule) -> Outcome {
    match e {
        Error::SessionExpired { .. } if s.read.as_ref().is_some_and(|r| r.expire_at.is_some()) => {
            Outcome::FailedSessionExpired
        }
        e if e.is_retryable() => Outcome::FailedBudget,
        e => panic!(
            "{what}: an error that is neither the retry budget spent nor F9: {e:?}\n{}",
            s.describe()
        ),
    }
}

fn check_time(elapsed: Duration, bound: Duration, what: &str, s: &Schedule) {
    assert!(
        elapsed <= bound + SLACK,
        "{what} took {elapsed:?}, over its budget {bound:?} + {SLACK:?}\n{}",
        s.describe()
    );
}

#[derive(Debug, Default)]
struct Tally {
    schedules: u64,
    drawn: BTreeMap<Kind, u64>,
    fired: BTreeMap<Kind, u64>,
    ops: BTreeMap<(&'static str, Outcome), u64>,
    stats: ClientStats,
    expiries: u64,
    slowest: Duration,
}

/// Reads the whole table per the spec; checks each range against the warehouse's own read of
/// the same session.
async fn run_read(w: &Worker, s: &Schedule, g: &DataGen, table: &TableId) -> Outcome {
    let spec = s.read.as_ref().unwrap();
    let client = w.reader(spec);
    let mut request = ReadSessionRequest::new(table.clone());
    request.split_options = match spec.splits {
        Some(k) => SplitOptions::parallelism(k),
        None => SplitOptions::row_offset(),
    };
    let t0 = Instant::now();
    let session = match client.create_read_session(&request).await {
        Ok(session) => session,
        Err(e) => {
            check_time(t0.elapsed(), call_bound(), "TableCreateReadSession", s);
            return classify(&e, "create read session", s);
        }
    };
    check_time(t0.elapsed(), call_bound(), "TableCreateReadSession", s);
    let record_count = session.record_count as u64;
    assert!(
        record_count == s.rows || record_count == s.rows + s.write.as_ref().map_or(0, |w| w.rows()),
        "{}",
        s.describe()
    );
    let ranges: Vec<ReadRange> = match spec.splits {
        Some(_) => (0..session.splits_count as u64)
            .map(ReadRange::Split)
            .collect(),
        None => spec
            .ranges
            .iter()
            .map(|&(offset, count)| ReadRange::Rows { offset, count })
            .collect(),
    };
    // What each range holds, read from the warehouse directly (no HTTP, no faults).
    let mut expected = Vec::new();
    for range in &ranges {
        let mut req = ReadRequest::new(table.clone(), &session.session_id, *range);
        req.max_batch_rows = spec.max_batch_rows;
        let batches: Vec<RecordBatch> = w
            .server
            .warehouse
            .read(&req)
            .await
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
            .await;
        expected.push(ids(&batches));
    }
    let all: Vec<i64> = expected.iter().flatten().copied().collect();
    if spec.splits.is_some() {
        assert_exactly_once(&all, 0..record_count as i64, "the warehouse's splits");
    }
    for (i, range) in ranges.iter().enumerate() {
        let mut req = ReadRequest::new(table.clone(), &session.session_id, *range);
        req.max_batch_rows = spec.max_batch_rows;
        let what = format!("read of {range:?}");
        let t0 = Instant::now();
        let before = client.stats();
        let mut got: Vec<RecordBatch> = Vec::new();
        let mut error = None;
        match client.read(&req).await {
            Err(e) => error = Some(e),
            Ok(mut stream) => {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(b) => {
                            assert!(
                                b.num_rows() <= spec.max_batch_rows,
                                "{what}: a batch of {} rows\n{}",
                                b.num_rows(),
                                s.describe()
                            );
                            got.push(b);
                            if spec.expire_at == Some((i, got.len())) {
                                w.server.clock.advance_ms(TTL_MS + 60_000);
                            }
                        }
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        let elapsed = t0.elapsed();
        let after = client.stats();
        let progress = got.iter().filter(|b| b.num_rows() > 0).count() as u32;
        let refreshes = (after.refreshes - before.refreshes) as u32;
        // Each run without progress is bounded; progress and refreshes start new runs.
        let bound = (RETRY_TIMEOUT + READ_TIMEOUT + REQUEST_TIMEOUT) * (progress + 2)
            + call_bound() * refreshes;
        check_time(elapsed, bound, &what, s);
        let read_ids = g.verify(&got).unwrap_or_else(|e| {
            panic!(
                "{what}: rows handed out do not verify (corrupt data delivered): {e}\n{}",
                s.describe()
            )
        });
        let want = &expected[i];
        match error {
            None => {
                assert_eq!(
                    read_ids.len(),
                    want.len(),
                    "{what}: delivered count != declared count ({} resumes)\n{}",
                    after.resumes - before.resumes,
                    s.describe()
                );
                assert!(
                    read_ids == *want,
                    "{what}: rows out of order, duplicated or missing across resumes\n{}",
                    s.describe()
                );
            }
            Some(e) => {
                assert!(
                    want.starts_with(&read_ids),
                    "{what}: a failed read handed out rows that are not a prefix of the range\n{}",
                    s.describe()
                );
                return classify(&e, &what, s);
            }
        }
    }
    Outcome::Ok
}

/// Exactly-once writes and a commit; the table is checked afterwards by the caller.
async fn run_write(
    w: &Worker,
    s: &Schedule,
    g: &DataGen,
    table: &TableId,
    sid_out: &mut Option<String>,
    committing: &mut bool,
) -> Outcome {
    let spec = s.write.as_ref().unwrap();
    let client = &w.client;
    let timed = |t0: Instant, calls: u32, what: &str| {
        check_time(t0.elapsed(), call_bound() * calls, what, s)
    };
    macro_rules! step {
        ($what:expr, $calls:expr, $e:expr) => {{
            let t0 = Instant::now();
            let r = $e.await;
            timed(t0, $calls, $what);
            match r {
                Ok(v) => v,
                Err(e) => return classify(&e, $what, s),
            }
        }};
    }
    let session = step!(
        "create write session",
        2,
        client.create_write_session(&WriteSessionRequest::new(table.clone()))
    );
    let sid = session.session_id.clone();
    *sid_out = Some(sid.clone());
    let mut streams = Vec::new();
    for i in 0..spec.streams {
        let id = format!("s{i}");
        let st = step!(
            "create write stream",
            1,
            client.create_write_stream_version(table, &sid, Some(&id), Some(0), true)
        );
        assert!(
            st.exactly_once && !st.access_token.is_empty(),
            "{}",
            s.describe()
        );
        streams.push((id, st.version, st.access_token, 0u64));
    }
    let mut next_id = s.rows as i64;
    for &(i, n) in &spec.batches {
        let (id, version, token, offset) = streams[i].clone();
        let ack = step!(
            "TableWrite",
            1,
            client.write(WriteRequest {
                table: table.clone(),
                session_id: sid.clone(),
                stream_id: id,
                version,
                row_offset: Some(offset),
                access_token: Some(token),
                batches: vec![g.batch(next_id..next_id + n as i64)],
            })
        );
        assert_eq!(
            ack.next_row_offset,
            offset + n,
            "exactly-once ack\n{}",
            s.describe()
        );
        streams[i].3 += n;
        next_id += n as i64;
    }
    for (id, version, _, _) in &streams {
        step!(
            "close write stream",
            3,
            client.close_write_stream(table, &sid, id, *version)
        );
    }
    let list: Vec<(String, u64)> = streams
        .iter()
        .map(|(id, v, _, _)| (id.clone(), *v))
        .collect();
    *committing = true;
    let info = step!(
        "commit",
        2,
        client.commit_write_session(table, &sid, Some(&list))
    );
    assert_eq!(info.rows, spec.rows(), "committed rows\n{}", s.describe());
    Outcome::Ok
}

async fn table_ids(w: &Worker, table: &TableId) -> (u64, Vec<i64>) {
    let b = paiio_conformance::Backend::new(w.server.warehouse.clone(), PROJECT);
    let version = w
        .server
        .warehouse
        .describe_table(table)
        .await
        .unwrap()
        .version;
    (version, ids(&b.read_table(table).await))
}

async fn run_schedule(w: &Worker, s: &Schedule, tally: &mut Tally) {
    let g = DataGen::simple(s.seed);
    let table = TableId::new(PROJECT, None, &format!("t{}", s.index)).unwrap();
    let wh = &w.server.warehouse;
    wh.create_table(&table, &g.table_schema(Vec::new()), Default::default())
        .await
        .unwrap();
    let b = paiio_conformance::Backend::new(wh.clone(), PROJECT);
    b.write_and_commit(&table, "", false, vec![g.batch(0..s.rows as i64)])
        .await;
    let (version_before, _) = table_ids(w, &table).await;
    for c in w.all_clients() {
        c.reset_stats();
    }
    w.server.faults.clear();
    w.server.faults.set(s.plan()).unwrap();
    let started = Instant::now();

    let mut sid = None;
    let mut committing = false;
    let (read, write) = match s.workload {
        Workload::Read => (Some(run_read(w, s, &g, &table).await), None),
        Workload::Write => (
            None,
            Some(run_write(w, s, &g, &table, &mut sid, &mut committing).await),
        ),
        Workload::Both => {
            let (r, wr) = tokio::join!(
                run_read(w, s, &g, &table),
                run_write(w, s, &g, &table, &mut sid, &mut committing)
            );
            (Some(r), Some(wr))
        }
    };
    tally.slowest = tally.slowest.max(started.elapsed());
    let status = w.server.faults.status();
    w.server.faults.clear();

    // Attempts: the server saw exactly what the client counted, and no run went past the cap.
    let stats = w.stats();
    let rules = status["rules"].as_array().unwrap();
    let fired: u64 = rules.iter().map(|r| r["fired"].as_u64().unwrap()).sum();
    let unfaulted = rules.last().unwrap()["seen"].as_u64().unwrap();
    assert_eq!(
        fired + unfaulted,
        stats.attempts,
        "requests the server saw vs attempts the client counted {stats:?}\n{status}\n{}",
        s.describe()
    );
    assert!(
        stats.max_run_attempts <= u64::from(MAX_RETRIES) + 1,
        "{stats:?}\n{}",
        s.describe()
    );
    for ((kind, _), r) in s.rules.iter().zip(rules) {
        *tally.fired.entry(*kind).or_default() += r["fired"].as_u64().unwrap();
    }
    for k in &s.drawn {
        *tally.drawn.entry(*k).or_default() += 1;
    }
    if s.read.as_ref().is_some_and(|r| r.expire_at.is_some()) {
        tally.expiries += 1;
    }

    // Visibility of the write.
    if let Some(outcome) = write {
        let total = s.write.as_ref().unwrap().rows();
        let (version, got) = table_ids(w, &table).await;
        let committed = match (&sid, outcome) {
            (_, Outcome::Ok) => true,
            (Some(sid), _) if committing => wh
                .get_write_session(&table, sid)
                .await
                .map(|ws| ws.status == SessionStatus::Committed)
                .unwrap_or(false),
            _ => false,
        };
        if committed {
            assert_eq!(
                version,
                version_before + 1,
                "one commit, applied once\n{}",
                s.describe()
            );
            assert_exactly_once(
                &got,
                0..(s.rows + total) as i64,
                &format!("after the commit\n{}", s.describe()),
            );
        } else {
            assert_eq!(
                version,
                version_before,
                "a failed write changed the table version\n{}",
                s.describe()
            );
            assert_exactly_once(
                &got,
                0..s.rows as i64,
                &format!("after a failed write\n{}", s.describe()),
            );
            if let Some(sid) = &sid {
                let _ = wh.abort_write_session(&table, sid).await;
            }
        }
        *tally.ops.entry(("write", outcome)).or_default() += 1;
    }
    if let Some(outcome) = read {
        *tally.ops.entry(("read", outcome)).or_default() += 1;
    }
    // Every call of these workloads is safe to repeat: a failure is a spent budget.
    if read == Some(Outcome::FailedBudget) || write == Some(Outcome::FailedBudget) {
        assert!(
            stats.budget_exhausted >= 1,
            "a failure without a spent budget {stats:?}\n{}",
            s.describe()
        );
    }
    let t = &mut tally.stats;
    t.attempts += stats.attempts;
    t.retries += stats.retries;
    t.resumes += stats.resumes;
    t.refreshes += stats.refreshes;
    t.refresh_failures += stats.refresh_failures;
    t.budget_exhausted += stats.budget_exhausted;
    t.max_run_attempts = t.max_run_attempts.max(stats.max_run_attempts);
    tally.schedules += 1;
    let _ = wh.drop_table(&table, true).await;
}

fn seed_of(index: usize) -> u64 {
    SplitMix64::new(0x9A11_0F4A_u64 ^ index as u64).next_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_schedules() {
    let count: usize = std::env::var("PAIIO_FAULT_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SCHEDULES);
    let only: Option<u64> = std::env::var("PAIIO_FAULT_SEED").ok().and_then(|v| {
        let v = v.trim();
        v.strip_prefix("0x")
            .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
    });
    let schedules: Vec<Schedule> = match only {
        Some(seed) => vec![draw(0, seed, &DataGen::simple(seed))],
        None => (0..count)
            .map(|i| draw(i, seed_of(i), &DataGen::simple(seed_of(i))))
            .collect(),
    };
    let schedules = Arc::new(schedules);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for wi in 0..WORKERS.min(schedules.len()) {
        let schedules = schedules.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let worker = Worker::start(wi).await;
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(s) = schedules.get(i) else { break };
                let run = std::panic::AssertUnwindSafe(run_schedule(&worker, s, &mut tally));
                if let Err(panic) = futures::FutureExt::catch_unwind(run).await {
                    eprintln!(
                        "FAILED {}\nreproduce: PAIIO_FAULT_SEED={:#x} cargo test -p paiio-tests --test fault_suite fault_schedules",
                        s.describe(),
                        s.seed
                    );
                    std::panic::resume_unwind(panic);
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        let t = t
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        total.schedules += t.schedules;
        for (k, v) in t.drawn {
            *total.drawn.entry(k).or_default() += v;
        }
        for (k, v) in t.fired {
            *total.fired.entry(k).or_default() += v;
        }
        for (k, v) in t.ops {
            *total.ops.entry(k).or_default() += v;
        }
        total.expiries += t.expiries;
        total.slowest = total.slowest.max(t.slowest);
        add_stats(&mut total.stats, &t.stats);
    }
    let mut out = format!(
        "fault suite: {} schedules in {:.1?} ({} workers; slowest schedule {:.1?})\n  kind: drawn / fired\n",
        total.schedules,
        started.elapsed(),
        WORKERS,
        total.slowest
    );
    let _ = writeln!(
        out,
        "  F5Corrupt: not drawn (no checksum in V2 Arrow or JSON bodies to detect a flip)"
    );
    for k in KINDS {
        let fired = match k {
            Kind::F9Expiry => format!("{} clock advances armed", total.expiries),
            _ => total.fired.get(&k).copied().unwrap_or(0).to_string(),
        };
        let _ = writeln!(
            out,
            "  {k:?}: {} / {fired}",
            total.drawn.get(&k).copied().unwrap_or(0)
        );
    }
    for ((what, outcome), n) in &total.ops {
        let _ = writeln!(out, "  {what} {outcome:?}: {n}");
    }
    let _ = write!(out, "  client: {:?}", total.stats);
    println!("{out}");
    assert_eq!(total.schedules as usize, schedules.len());
}

// ---------------------------------------------------------------------------------------
// Session refresh
// ---------------------------------------------------------------------------------------

/// A server whose warehouse revives expired read sessions when they are refreshed.
async fn reviving_server() -> TestServer {
    TestServer::start_with(TestServerOptions {
        revive_expired_read_sessions: true,
        ..Default::default()
    })
    .await
}

/// A client of `server`, on the server's clock or on system time.
fn client_on(server: &TestServer, on_server_clock: bool) -> RestClient {
    let mut b = server.client_builder();
    if on_server_clock {
        b = b.clock(Arc::new(server.clock.clone()));
    }
    b.build().unwrap()
}

async fn filled(server: &TestServer, name: &str, rows: i64) -> (TableId, DataGen) {
    let g = DataGen::simple(11);
    let table = server.create_table(name, &g).await;
    let b = paiio_conformance::Backend::new(server.warehouse.clone(), PROJECT);
    b.write_and_commit(&table, "", false, vec![g.batch(0..rows)])
        .await;
    (table, g)
}

/// Reads splits `0..n` of a session, calling `between(split, batches so far)` after each batch.
async fn read_splits(
    client: &RestClient,
    table: &TableId,
    session_id: &str,
    n: u64,
    max_batch_rows: usize,
    mut between: impl FnMut(u64, usize),
) -> Result<Vec<RecordBatch>, Error> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut req = ReadRequest::new(table.clone(), session_id, ReadRange::Split(i));
        req.max_batch_rows = max_batch_rows;
        let mut stream = client.read(&req).await?;
        let mut k = 0;
        while let Some(b) = stream.next().await {
            out.push(b?);
            k += 1;
            between(i, k);
        }
    }
    Ok(out)
}

fn parallel(table: &TableId, k: u64) -> ReadSessionRequest {
    ReadSessionRequest {
        split_options: SplitOptions::parallelism(k),
        ..ReadSessionRequest::new(table.clone())
    }
}

/// The clock moves past expiry in the middle of a split whose body then breaks: the resume
/// is answered `SessionExpired`, the client refreshes (the server revives the session) and
/// the read completes, every row once.
#[tokio::test]
async fn session_expires_mid_read_and_is_refreshed() {
    let server = reviving_server().await;
    let (table, g) = filled(&server, "expire_mid_read", 3000).await;
    let client = server.client();
    let session = client
        .create_read_session(&parallel(&table, 2))
        .await
        .unwrap();
    assert!(
        client
            .read_session_expiration(&session.session_id)
            .is_some()
    );
    // The first body breaks after its first few batches.
    server.inject(Fault::ResetAfter { bytes: 6000 }, When::Nth(1), "TableRead");
    let clock = server.clock.clone();
    let batches = read_splits(&client, &table, &session.session_id, 2, 100, |split, k| {
        if split == 0 && k == 1 {
            clock.advance_ms(TTL_MS + 60_000);
        }
    })
    .await
    .unwrap();
    assert_eq!(server.faults.status()["fired"], 1);
    assert_exactly_once(
        &g.verified_ids(&batches, "expired mid-read"),
        0..3000,
        "expired mid-read",
    );
    let stats = client.stats();
    assert!(
        stats.resumes >= 1 && stats.refreshes >= 1 && stats.refresh_failures == 0,
        "{stats:?}"
    );
    // The session lives again, past the new clock.
    let now = server.clock.now_ms();
    assert!(client.read_session_expiration(&session.session_id).unwrap() > now);
}

/// The clock moves past expiry before reading: the first TableRead is answered
/// `SessionExpired`, the client refreshes and reads. With the client on the server's clock,
/// it refreshes before reading instead.
#[tokio::test]
async fn session_expired_before_reading_is_refreshed() {
    let server = reviving_server().await;
    let (table, g) = filled(&server, "expire_before", 500).await;
    for on_server_clock in [false, true] {
        let client = client_on(&server, on_server_clock);
        let session = client
            .create_read_session(&parallel(&table, 3))
            .await
            .unwrap();
        server.clock.advance_ms(TTL_MS + 60_000);
        let batches = read_splits(&client, &table, &session.session_id, 3, 64, |_, _| {})
            .await
            .unwrap();
        assert_exactly_once(
            &g.verified_ids(&batches, "expired before"),
            0..500,
            "expired before reading",
        );
        let stats = client.stats();
        // One refresh, then the session is good for the rest of the read.
        assert_eq!(
            (stats.refreshes, stats.refresh_failures),
            (1, 0),
            "on the server clock: {on_server_clock}"
        );
    }
}

/// Ahead of expiry (within a tenth of the lifetime), a client on the server's clock refreshes
/// before reading, and the service's expiration moves forward; a strict server refuses
/// nothing.
#[tokio::test]
async fn session_is_refreshed_ahead_of_expiry() {
    let server = TestServer::start().await;
    let (table, g) = filled(&server, "refresh_ahead", 100).await;
    let client = client_on(&server, true);
    let session = client
        .create_read_session(&parallel(&table, 1))
        .await
        .unwrap();
    let e0 = session.expiration_time_ms;
    // Not yet due: no refresh.
    read_splits(&client, &table, &session.session_id, 1, 4096, |_, _| {})
        .await
        .unwrap();
    assert_eq!(client.stats().refreshes, 0);
    // Within the margin (5 minutes of a 24-hour session), still before expiry.
    server.clock.advance_ms(e0 - server.clock.now_ms() - 60_000);
    let batches = read_splits(&client, &table, &session.session_id, 1, 4096, |_, _| {})
        .await
        .unwrap();
    assert_exactly_once(
        &g.verified_ids(&batches, "refreshed"),
        0..100,
        "read after refresh",
    );
    assert_eq!(client.stats().refreshes, 1);
    let e1 = server
        .warehouse
        .get_read_session(&table, &session.session_id, false)
        .await
        .unwrap()
        .expiration_time_ms;
    assert!(e1 > e0, "{e1} > {e0}");
    assert_eq!(
        client.read_session_expiration(&session.session_id),
        Some(e1)
    );
}

/// A server that does not revive expired sessions: the read fails with a clear
/// `SessionExpired` after one refresh attempt.
#[tokio::test]
async fn expired_session_fails_clearly_when_refresh_is_refused() {
    let server = TestServer::start().await;
    let (table, _) = filled(&server, "expire_strict", 100).await;
    for on_server_clock in [false, true] {
        let client = client_on(&server, on_server_clock);
        let session = client
            .create_read_session(&parallel(&table, 1))
            .await
            .unwrap();
        server.clock.advance_ms(TTL_MS + 60_000);
        let err = read_splits(&client, &table, &session.session_id, 1, 4096, |_, _| {})
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::SessionExpired { ref session_id } if *session_id == session.session_id),
            "{err:?}"
        );
        let stats = client.stats();
        assert_eq!(
            (stats.refreshes, stats.refresh_failures),
            (1, 1),
            "on the server clock: {on_server_clock}"
        );
    }
}

/// F5 on Arrow read bodies, measured rather than asserted: V2 bodies carry no checksum, so a
/// flipped bit is caught only when it breaks the IPC framing. Prints how many flips (every
/// 193rd byte of the body) ended in an error, in a wrong row count, in wrong values, or
/// changed nothing visible. Asserts only that a malformed body is an error, not a panic (the
/// Arrow decoder panics on some of them).
#[tokio::test]
async fn corruption_of_a_read_body_is_not_detected() {
    let server = TestServer::start().await;
    let (table, g) = filled(&server, "corrupt_probe", 200).await;
    let client = server.client();
    let session = client
        .create_read_session(&parallel(&table, 1))
        .await
        .unwrap();
    let body_len = *body_points(&g, 0..200, 50).last().unwrap();
    let (mut errors, mut wrong_count, mut wrong_values, mut unseen) = (0, 0, 0, 0);
    for byte in (0..body_len).step_by(193) {
        server.inject(Fault::Corrupt { byte }, When::Nth(1), "TableRead");
        match read_splits(&client, &table, &session.session_id, 1, 50, |_, _| {}).await {
            Err(_) => errors += 1,
            Ok(batches) => {
                let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                match g.verify(&batches) {
                    _ if n != 200 => wrong_count += 1,
                    Ok(ids) if ids == (0..200).collect::<Vec<_>>() => unseen += 1,
                    _ => wrong_values += 1,
                }
            }
        }
    }
    println!(
        "F5 probe over {body_len} body bytes: {errors} errors, {wrong_count} wrong row counts, \
         {wrong_values} wrong values, {unseen} unseen"
    );
}

/// 429 with `Retry-After: 1`: the retry waits at least that long, within the time budget.
#[tokio::test]
async fn retry_after_is_honoured() {
    let server = TestServer::start().await;
    let (table, _) = filled(&server, "retry_after", 10).await;
    let client = server
        .client_builder()
        .retry(suite_retry(1))
        .build()
        .unwrap();
    let fault = status_fault(429, Some(1));
    server.inject(fault, When::Nth(1), "TableCreateReadSession");
    let t0 = Instant::now();
    client
        .create_read_session(&parallel(&table, 1))
        .await
        .unwrap();
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < RETRY_TIMEOUT + SLACK,
        "{elapsed:?}"
    );
    assert_eq!(client.stats().retries, 1);
    // Past the time budget (1.5 s), a 2 s Retry-After is not waited for: the call fails at once.
    let fault = status_fault(429, Some(2));
    server.inject(fault, When::Nth(1), "TableCreateReadSession");
    let t0 = Instant::now();
    let err = client
        .create_read_session(&parallel(&table, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Service { status: 429, .. }), "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

/// A server whose answers are capped at `rate` bytes per second each.
async fn capped_server(rate: u64) -> TestServer {
    TestServer::start_with(TestServerOptions {
        stream_rate: Some(rate),
        ..Default::default()
    })
    .await
}

/// Reads rows `offset..offset + count` of a session in batches of at most 4,096 rows.
async fn read_rows(
    client: &RestClient,
    table: &TableId,
    session_id: &str,
    offset: u64,
    count: u64,
) -> Vec<RecordBatch> {
    let mut request =
        ReadRequest::new(table.clone(), session_id, ReadRange::Rows { offset, count });
    request.max_batch_rows = 4096;
    let mut stream = client.read(&request).await.unwrap();
    let mut batches = Vec::new();
    while let Some(b) = stream.next().await {
        batches.push(b.unwrap());
    }
    batches
}

/// The automatic body compression on a capped link: a stream measures its first segment
/// uncompressed, then stops its body at a batch boundary to read the rest compressed, and
/// every row arrives exactly once, in order, with its content; a fixed codec never changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compression_changes_codec_mid_read_without_losing_rows() {
    let server = capped_server(4 << 20).await;
    let rows = 60_000;
    let (table, g) = filled(&server, "auto_codec", rows).await;
    for (compression, changes) in [
        (paiio_storage::rest::ReadCompression::Auto, true),
        (Some(BodyEncoding::Zstd).into(), false),
    ] {
        let client = server
            .client_builder()
            .read_compression(compression)
            .build()
            .unwrap();
        let session = client
            .create_read_session(&parallel(&table, 2))
            .await
            .unwrap();
        let batches = read_splits(&client, &table, &session.session_id, 2, 1024, |_, _| {})
            .await
            .unwrap();
        let got = g.verify(&batches).unwrap();
        assert_eq!(got, (0..rows).collect::<Vec<_>>(), "{compression}");
        let stats = client.stats();
        assert_eq!(stats.resumes, 0, "{compression}: {stats:?}");
        if changes {
            assert!(stats.codec_changes >= 1, "{compression}: {stats:?}");
        } else {
            assert_eq!(stats.codec_changes, 0, "{compression}: {stats:?}");
        }
    }
}

/// A row range of several chunks is read as several requests at once, and its batches come
/// in row order, every row once, even when a chunk's body breaks and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_row_range_is_read_as_parallel_chunks_in_order() {
    let server = TestServer::start().await;
    let rows = 200_000;
    let (table, g) = filled(&server, "ranged", rows).await;
    for parallelism in [1, 3] {
        let client = server
            .client_builder()
            .read_parallelism(parallelism)
            .read_compression(None)
            .build()
            .unwrap();
        let session = client
            .create_read_session(&paiio_tests::row_offset_request(&table))
            .await
            .unwrap();
        // A TableRead (the read's only one, or its second chunk) breaks after 5 kB of its
        // body.
        let nth = if parallelism == 1 { 1 } else { 2 };
        server.inject(
            Fault::ResetAfter { bytes: 5_000 },
            When::Nth(nth),
            "TableRead",
        );
        let batches = read_rows(
            &client,
            &table,
            &session.session_id,
            1_000,
            (rows - 2_000) as u64,
        )
        .await;
        let got = g.check_values(&batches).unwrap();
        assert_eq!(
            got,
            (1_000..rows - 1_000).collect::<Vec<_>>(),
            "x{parallelism}"
        );
        let stats = client.stats();
        assert_eq!(stats.resumes, 1, "x{parallelism}: {stats:?}");
        // One request (and its resume), or one per chunk (and the resume).
        if parallelism == 1 {
            assert_eq!(stats.attempts, 3, "x{parallelism}: {stats:?}");
        } else {
            assert!(stats.attempts > 3, "x{parallelism}: {stats:?}");
        }
    }
}

/// The automatic compression and the parallel chunks of a long row range together: every
/// chunk measures and changes codec on its own, and the rows still come in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compression_across_parallel_chunks() {
    let server = capped_server(10 << 20).await;
    let rows = 600_000;
    let (table, g) = filled(&server, "auto_ranged", rows).await;
    let client = server.client();
    let session = client
        .create_read_session(&paiio_tests::row_offset_request(&table))
        .await
        .unwrap();
    let batches = read_rows(&client, &table, &session.session_id, 0, rows as u64).await;
    assert_eq!(
        g.check_values(&batches).unwrap(),
        (0..rows).collect::<Vec<_>>()
    );
    let stats = client.stats();
    // A session, a first chunk of 16,384 rows, chunks of about 8 MiB, and the changes of codec.
    assert!(stats.codec_changes >= 1, "{stats:?}");
    assert!((4..=20).contains(&stats.attempts), "{stats:?}");
}
