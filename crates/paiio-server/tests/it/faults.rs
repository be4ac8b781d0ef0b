//! The fault layer and the limits, observed over real HTTP: every fault kind happens as the
//! client sees it, the bandwidth cap paces bodies, the concurrency cap answers 429.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::Schema;
use futures::StreamExt;
use paiio_server::{Server, ServerBuilder};
use paiio_storage::auth::Verifier;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::types::ArrowOptions;
use paiio_storage::{Column, TableId, TableSchema, TableService};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Served, json_of, serve, stage};

/// A server on table `p.t` of `rows` rows.
struct Env {
    served: Served,
    rows: usize,
}

impl Deref for Env {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

fn schema() -> TableSchema {
    TableSchema::new(
        vec![
            Column::new("id", "bigint".parse().unwrap()),
            Column::new("payload", "string".parse().unwrap()),
        ],
        vec![],
    )
    .unwrap()
}

/// Rows `ids`, each with a `payload_len`-byte string.
fn batch(ids: std::ops::Range<i64>, payload_len: usize) -> RecordBatch {
    let options = ArrowOptions::default();
    let fields: Vec<_> = schema()
        .columns
        .iter()
        .map(|c| c.to_arrow_field(&options))
        .collect();
    let payloads: Vec<String> = ids
        .clone()
        .map(|i| format!("{i:0>width$}", width = payload_len))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.collect::<Vec<_>>())),
        Arc::new(StringArray::from(payloads)),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// A warehouse with table `p.t` of `rows` rows of `payload_len`-byte payloads, served
/// anonymously with the admin endpoints on and a manual clock.
async fn start(
    rows: usize,
    payload_len: usize,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Env {
    let data = (rows > 0).then(|| batch(0..rows as i64, payload_len));
    let served = serve(schema(), data, configure).await;
    Env { served, rows }
}

impl Env {
    fn storage_url(&self, action: &str, extra: &str) -> String {
        format!(
            "{}/api/storage/v2?Action={action}&Target={}{extra}",
            self.handle.url(),
            self.table.target()
        )
    }

    async fn set_faults(&self, plan: Value) -> Value {
        self.admin(Method::POST, "faults", Some(plan)).await
    }

    async fn create_read_session(&self) -> reqwest::Response {
        self.http
            .post(self.storage_url("TableCreateReadSession", ""))
            .body("{}")
            .send()
            .await
            .unwrap()
    }

    async fn read_session(&self) -> String {
        let response = self.create_read_session().await;
        assert_eq!(response.status(), 200);
        json_of(response).await["SessionId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn read_request(&self, session: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.storage_url("TableRead", &format!("&SessionId={session}&Index=0")))
            .body("{}")
    }

    /// The status of a read of split 0 of `session`.
    async fn read_status(&self, session: &str) -> reqwest::StatusCode {
        self.read_request(session).send().await.unwrap().status()
    }

    /// The rows of split 0 of a new read session.
    async fn read_rows(&self) -> usize {
        let session = self.read_session().await;
        let response = self.read_request(&session).send().await.unwrap();
        assert_eq!(response.status(), 200);
        arrow_rows(&response.bytes().await.unwrap()).unwrap()
    }
}

/// Rows of an Arrow IPC stream; an error when it is broken or has no end-of-stream marker.
fn arrow_rows(bytes: &[u8]) -> Result<usize, String> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| e.to_string())?;
    let mut rows = 0;
    for b in reader {
        rows += b.map_err(|e| e.to_string())?.num_rows();
    }
    // A clean end has the end-of-stream marker: continuation + zero length.
    if !bytes.ends_with(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]) {
        return Err(format!(
            "no end-of-stream marker ({} bytes, {rows} rows)",
            bytes.len()
        ));
    }
    Ok(rows)
}

/// Sends one request over a fresh TCP connection; everything the server sent back.
async fn raw_request(
    addr: std::net::SocketAddr,
    method: &str,
    path_and_query: &str,
    body: &str,
) -> Vec<u8> {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut out))
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn status_faults_answer_with_the_json_error_body() {
    let env = start(10, 10, |b| b).await;
    for (status, code, retry_after) in [
        (500, "InternalServerError", None),
        (502, "BadGateway", None),
        (503, "ServiceUnavailable", Some(2)),
        (504, "GatewayTimeout", None),
        (429, "SlotExceeded", Some(7)),
        (408, "RequestTimeout", None),
    ] {
        let mut fault = json!({"kind": "status", "status": status});
        if let Some(s) = retry_after {
            fault["retry_after"] = json!(s);
        }
        env.set_faults(json!({"actions": ["TableCreateReadSession"], "fault": fault}))
            .await;
        let response = env.create_read_session().await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
            retry_after.map(|s| s.to_string()),
            "Retry-After of {status}"
        );
        let request_id = response.headers()["x-odps-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let body = json_of(response).await;
        assert_eq!(body["Code"], code);
        assert_eq!(body["RequestId"], request_id.as_str());
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains(&status.to_string())
        );
        // Fired once: the next request is served.
        assert_eq!(env.create_read_session().await.status(), 200);
    }
    // 429 without an explicit Retry-After still carries one.
    env.set_faults(json!({"fault": {"kind": "status", "status": 429}}))
        .await;
    let response = env.create_read_session().await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");

    let status = env.faults().await;
    assert_eq!(status["counters"]["status"], 7);
    assert_eq!(status["rules"][0]["fired"], 1);
    let cleared = env.admin(reqwest::Method::DELETE, "faults", None).await;
    assert_eq!(cleared["rules"], json!([]));
    assert_eq!(cleared["counters"], json!({}));
}

#[tokio::test]
async fn schedules_select_by_action_and_count() {
    let env = start(10, 10, |b| b).await;
    // The 2nd TableRead fails; read sessions are untouched.
    env.set_faults(json!({"rules": [
        {"actions": ["TableRead"], "fault": {"kind": "status", "status": 503}, "when": {"nth": 2}},
    ]}))
    .await;
    let session = env.read_session().await;
    assert_eq!(env.read_status(&session).await, 200);
    assert_eq!(env.read_status(&session).await, 503);
    assert_eq!(env.read_status(&session).await, 200);
    // The next 2 requests of any action.
    env.set_faults(json!({"fault": {"kind": "status", "status": 500}, "when": {"next": 2}}))
        .await;
    assert_eq!(env.create_read_session().await.status(), 500);
    assert_eq!(env.read_status(&session).await, 500);
    assert_eq!(env.read_status(&session).await, 200);
    // Seeded probability: the same seed fires on the same requests.
    let mut runs = Vec::new();
    for _ in 0..2 {
        env.set_faults(json!({"seed": 9, "rules": [
            {"fault": {"kind": "status", "status": 503}, "when": {"probability": 0.5}}
        ]}))
        .await;
        let mut fired = Vec::new();
        for _ in 0..16 {
            fired.push(env.create_read_session().await.status() == 503);
        }
        runs.push(fired);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].iter().any(|f| *f) && runs[0].iter().any(|f| !*f),
        "{:?}",
        runs[0]
    );
    // Malformed plans are refused and change nothing.
    for plan in [
        r#"{"fault": {"kind": "status", "status": 200}}"#,
        r#"{"fault": {"kind": "explode"}}"#,
    ] {
        assert_eq!(
            env.post("/__paiio/faults", plan).await.status(),
            400,
            "{plan}"
        );
    }
}

#[tokio::test]
async fn reset_before_headers_sends_nothing() {
    let env = start(100, 10, |b| b).await;
    let session = env.read_session().await;
    env.set_faults(
        json!({"actions": ["TableRead"], "fault": {"kind": "reset"}, "when": {"next": 2}}),
    )
    .await;
    // Not a single byte comes back, not even a status line.
    let path = format!(
        "/api/storage/v2?Action=TableRead&Target={}&SessionId={session}&Index=0",
        env.table.target()
    );
    let raw = raw_request(env.handle.addr(), "POST", &path, "{}").await;
    assert!(raw.is_empty(), "got {:?}", String::from_utf8_lossy(&raw));
    // An HTTP client sees a connection error.
    let err = env.read_request(&session).send().await.unwrap_err();
    assert!(!err.is_status(), "{err}");
    // Then reads work again.
    let response = env.read_request(&session).send().await.unwrap();
    assert_eq!(
        arrow_rows(&response.bytes().await.unwrap()).unwrap(),
        env.rows
    );
}

#[tokio::test]
async fn reset_mid_body_breaks_the_stream_after_n_bytes() {
    let env = start(1000, 100, |b| b).await;
    let session = env.read_session().await;
    env.set_faults(
        json!({"actions": ["TableRead"], "fault": {"kind": "reset_after", "bytes": 5000}}),
    )
    .await;
    let response = env.read_request(&session).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = 0;
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => received += b.len(),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert!(
        error.is_some(),
        "the body ended cleanly after {received} bytes"
    );
    assert_eq!(received, 5000);

    // Past the end of the body: the whole body arrives, but never its clean end.
    env.set_faults(
        json!({"actions": ["TableRead"], "fault": {"kind": "reset_after", "bytes": 100_000_000}}),
    )
    .await;
    let response = env.read_request(&session).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
    // Unfaulted, the same read is whole.
    assert_eq!(env.read_rows().await, env.rows);
}

#[tokio::test]
async fn truncation_is_a_clean_short_body() {
    let env = start(1000, 100, |b| b).await;
    let session = env.read_session().await;
    env.set_faults(json!({"actions": ["TableRead"], "fault": {"kind": "truncate", "bytes": 5000}}))
        .await;
    let response = env.read_request(&session).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response
        .bytes()
        .await
        .expect("a truncated body ends without a transport error");
    assert_eq!(body.len(), 5000);
    assert!(
        arrow_rows(&body).is_err(),
        "a truncated Arrow stream must not parse as complete"
    );
    assert_eq!(env.faults().await["counters"]["truncate"], 1);
}

#[tokio::test]
async fn stalls_delay_headers_or_the_body() {
    let env = start(1000, 100, |b| b).await;
    let session = env.read_session().await;
    env.set_faults(json!({"actions": ["TableRead"], "fault": {"kind": "stall", "ms": 400}}))
        .await;
    let started = Instant::now();
    let response = env.read_request(&session).send().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "headers after {:?}",
        started.elapsed()
    );
    assert_eq!(
        arrow_rows(&response.bytes().await.unwrap()).unwrap(),
        env.rows
    );

    env.set_faults(json!({"actions": ["TableRead"], "fault": {"kind": "stall", "ms": 400, "after_bytes": 1000}})).await;
    let started = Instant::now();
    let response = env.read_request(&session).send().await.unwrap();
    let headers_after = started.elapsed();
    assert!(
        headers_after < Duration::from_millis(300),
        "headers after {headers_after:?}"
    );
    let body = response.bytes().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "body after {:?}",
        started.elapsed()
    );
    assert_eq!(arrow_rows(&body).unwrap(), env.rows);

    // A client with a read timeout gives up on the stall.
    env.set_faults(json!({"actions": ["TableRead"], "fault": {"kind": "stall", "ms": 2000, "after_bytes": 10}})).await;
    let response = env
        .read_request(&session)
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .unwrap();
    let err = response.bytes().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn commit_applied_but_response_lost() {
    let env = start(0, 10, |b| b).await;
    let session = stage(&env.service, &env.table, vec![batch(0..25, 10)], false).await;
    env.set_faults(
        json!({"actions": ["TableCommitWriteSession"], "fault": {"kind": "commit_lost"}}),
    )
    .await;
    let commit = || {
        env.http
            .post(env.storage_url("TableCommitWriteSession", &format!("&SessionId={session}")))
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    let err = commit().await.unwrap_err();
    assert!(!err.is_status(), "{err}");
    // The commit was applied: a new read session sees the rows.
    assert_eq!(env.read_rows().await, 25);
    // The client's retry of the commit is harmless: the rows are there once.
    let response = commit().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(env.read_rows().await, 25);
    assert_eq!(env.faults().await["counters"]["response_lost"], 1);
}

#[tokio::test]
async fn advancing_the_clock_expires_sessions() {
    let env = start(10, 10, |b| b).await;
    let session = env.read_session().await;
    assert_eq!(env.read_status(&session).await, 200);
    let before = now_ms();
    let v = env
        .admin(
            Method::POST,
            "clock/advance",
            Some(json!({"ms": 48 * 3600 * 1000})),
        )
        .await;
    assert!(v["now_ms"].as_i64().unwrap() >= before + 48 * 3600 * 1000);
    let response = env.read_request(&session).send().await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["Code"], "SessionExpired", "{body}");
    // New sessions work on the new time.
    assert_eq!(env.read_rows().await, 10);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn the_bandwidth_cap_paces_bodies() {
    // About 5 MB of Arrow at 10 MB/s: at least ~0.45 s (one 64 KiB piece of burst).
    let env = start(5000, 1000, |b| {
        b.stream_rate(Some(paiio_server::parse_size("10MB").unwrap()))
    })
    .await;
    let session = env.read_session().await;
    let started = Instant::now();
    let response = env.read_request(&session).send().await.unwrap();
    let body = response.bytes().await.unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(body.len() > 5_000_000, "{} bytes", body.len());
    let expected = body.len() as f64 / 10_000_000.0;
    assert!(
        took >= expected * 0.95 - 0.01,
        "{} bytes in {took:.3} s (expected {expected:.3} s)",
        body.len()
    );
    assert!(
        took < expected * 1.5 + 0.3,
        "{} bytes in {took:.3} s (expected {expected:.3} s)",
        body.len()
    );
    assert_eq!(arrow_rows(&body).unwrap(), env.rows);
}

#[tokio::test]
async fn the_concurrency_cap_answers_429_until_bodies_finish() {
    let env = start(1000, 100, |b| b.max_concurrency(2)).await;
    let session = env.read_session().await;
    // Two reads stall in the middle of their bodies: their headers are out, their slots held.
    env.set_faults(json!({"actions": ["TableRead"], "fault": {"kind": "stall", "ms": 1000, "after_bytes": 100}, "when": {"next": 2}})).await;
    let first = env.read_request(&session).send().await.unwrap();
    let second = env.read_request(&session).send().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = env.read_request(&session).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = serde_json::from_slice(&third.bytes().await.unwrap()).unwrap();
    assert_eq!(body["Code"], "SlotExceeded");
    // The admin endpoints are not limited.
    let status = env.faults().await;
    assert_eq!(status["limits"]["active"], 2);
    assert_eq!(status["limits"]["rejected"], 1);
    // Once the bodies are done, the slots are free again.
    assert_eq!(arrow_rows(&first.bytes().await.unwrap()).unwrap(), env.rows);
    assert_eq!(
        arrow_rows(&second.bytes().await.unwrap()).unwrap(),
        env.rows
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(env.read_rows().await, env.rows);
    assert_eq!(env.faults().await["limits"]["active"], 0);
}

#[tokio::test]
async fn admin_routes_need_admin_and_skip_signatures() {
    // Without admin(true) there are no admin routes.
    let env = start(0, 10, |b| b.admin(false)).await;
    assert_eq!(env.get("/__paiio/faults").await.status(), 404);

    // With keys and admin: storage calls need a signature, admin calls do not.
    let env = start(0, 10, |b| {
        b.allow_anonymous(false)
            .verifier(Verifier::new(Duration::from_secs(900)).with_key("id", "key"))
    })
    .await;
    assert_eq!(env.get("/api/tenants").await.status(), 401);
    let status = env.faults().await;
    assert_eq!(
        status["limits"]["max_concurrency"],
        paiio_server::DEFAULT_MAX_CONCURRENCY
    );

    // The clock endpoint needs a manual clock.
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(LocalWarehouse::open(dir.path()).unwrap());
    let handle = Server::builder(service)
        .allow_anonymous(true)
        .admin(true)
        .build()
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let response = env
        .http
        .post(format!("{}/__paiio/clock/advance", handle.url()))
        .body(r#"{"ms": 1000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
}

#[tokio::test]
async fn faults_set_at_build_time_and_from_rust() {
    use paiio_server::{Fault, FaultPlan, FaultRule, When};
    let plan = FaultPlan::new().rule(
        FaultRule::new(
            Fault::Status {
                status: 503,
                retry_after: Some(3),
                code: None,
                message: None,
            },
            When::Next(1),
        )
        .action("TableCreateReadSession"),
    );
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(LocalWarehouse::open(dir.path()).unwrap());
    let table = TableId::new("p", None, "t").unwrap();
    service
        .create_table(&table, &schema(), Default::default())
        .await
        .unwrap();
    let server = Server::builder(service)
        .allow_anonymous(true)
        .faults(plan)
        .build()
        .unwrap();
    let control = server.fault_control();
    let handle = server.bind("127.0.0.1:0").await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!(
        "{}/api/storage/v2?Action=TableCreateReadSession&Target={}",
        handle.url(),
        table.target()
    );
    let create = || http.post(&url).body("{}").send();
    let response = create().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(create().await.unwrap().status(), 200);
    control
        .set(FaultPlan::new().rule(FaultRule::new(Fault::Reset, When::Always)))
        .unwrap();
    assert!(create().await.is_err());
    assert_eq!(control.status()["counters"]["reset"], 1);
    control.clear();
    assert_eq!(create().await.unwrap().status(), 200);
}
