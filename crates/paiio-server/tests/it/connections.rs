//! Connection handling over raw TCP: the header, body-idle and keep-alive timeouts, the cap
//! on open connections, uploads refused before their body, repeated signed headers, and the
//! admin clock refusing to overflow.

use std::time::{Duration, Instant, SystemTime};

use paiio_server::ServerBuilder;
use paiio_storage::auth::{Credentials, SignatureVersion, Verifier, sign_request};
use paiio_storage::clock::Clock;
use paiio_storage::{Column, TableSchema, TableService, WriteSessionRequest};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Served, json_of, serve};

/// A warehouse with an empty table `p.t` (id bigint), served anonymously with the admin
/// endpoints and a manual clock, configured further by `configure`.
async fn start(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Served {
    let schema =
        TableSchema::new(vec![Column::new("id", "bigint".parse().unwrap())], vec![]).unwrap();
    serve(schema, None, configure).await
}

/// The head of a TableCreateReadSession POST announcing `length` bytes, and the body's
/// first byte.
fn create_read_session_head(env: &Served, length: usize) -> String {
    let path = format!(
        "/api/storage/v2?Action=TableCreateReadSession&Target={}",
        env.table.target()
    );
    format!(
        "POST {path} HTTP/1.1\r\nHost: paiio\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{"
    )
}

/// A response read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response (a `Content-Length` or chunked body) from `socket`, within 5 s.
async fn read_response(socket: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let rest = &buf[end + 4..];
            let lower = head.to_ascii_lowercase();
            let complete = if let Some(len) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                (rest.len() >= len).then(|| rest[..len].to_vec())
            } else if lower.contains("transfer-encoding: chunked") {
                rest.windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                    .map(|_| dechunk(rest))
            } else {
                Some(rest.to_vec())
            };
            if let Some(body) = complete {
                return Raw { status, head, body };
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, socket.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no complete response within 5 s; got {:?}",
                    String::from_utf8_lossy(&buf)
                )
            })
            .unwrap_or(0);
        assert!(
            n > 0,
            "the connection closed before a complete response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let len =
            usize::from_str_radix(std::str::from_utf8(&rest[..i]).unwrap().trim(), 16).unwrap();
        if len == 0 {
            break;
        }
        out.extend_from_slice(&rest[i + 2..i + 2 + len]);
        rest = &rest[i + 2 + len + 2..];
    }
    out
}

/// How long until the server closes `socket` (reads return 0 or fail), at most `limit`.
async fn time_to_close(socket: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            socket.read(&mut chunk),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

const TENANTS: &[u8] = b"GET /api/tenants HTTP/1.1\r\nHost: paiio\r\n\r\n";

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_timeout() {
    let env = start(|b| {
        b.keep_alive_timeout(Some(Duration::from_millis(300)))
            .header_timeout(Some(Duration::from_secs(10)))
    })
    .await;
    let mut socket = TcpStream::connect(env.handle.addr()).await.unwrap();
    socket.write_all(TENANTS).await.unwrap();
    assert_eq!(read_response(&mut socket).await.status, 200);
    // A request within the timeout keeps the connection.
    tokio::time::sleep(Duration::from_millis(150)).await;
    socket.write_all(TENANTS).await.unwrap();
    assert_eq!(read_response(&mut socket).await.status, 200);
    // Then, idle, it is closed after about 300 ms.
    let closed = time_to_close(&mut socket, Duration::from_secs(3)).await;
    let closed = closed.expect("the idle keep-alive connection was still open after 3 s");
    assert!(
        closed >= Duration::from_millis(250),
        "closed after {closed:?}"
    );
    // The server itself is fine.
    assert_eq!(env.get("/api/tenants").await.status(), 200);
}

#[tokio::test]
async fn trickled_headers_are_cut_off() {
    let env = start(|b| {
        b.header_timeout(Some(Duration::from_millis(300)))
            .keep_alive_timeout(Some(Duration::from_secs(10)))
    })
    .await;
    let socket = TcpStream::connect(env.handle.addr()).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    let started = Instant::now();
    // One header line every 50 ms, for up to 3 s: never a complete head.
    let trickle = tokio::spawn(async move {
        if write
            .write_all(b"GET /api/tenants HTTP/1.1\r\nHost: paiio\r\n")
            .await
            .is_err()
        {
            return;
        }
        for i in 0..60 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write
                .write_all(format!("x-trickle-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut chunk = [0u8; 1024];
    let answer = tokio::time::timeout(Duration::from_secs(3), read.read(&mut chunk)).await;
    let took = started.elapsed();
    trickle.abort();
    match answer {
        Err(_) => panic!("the connection trickling headers was still open after 3 s"),
        Ok(Ok(n)) => assert_eq!(
            n,
            0,
            "expected the connection closed, got {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Ok(Err(_)) => {}
    }
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
    // A fresh connection that sends nothing is closed as well.
    let mut silent = TcpStream::connect(env.handle.addr()).await.unwrap();
    assert!(
        time_to_close(&mut silent, Duration::from_secs(3))
            .await
            .is_some(),
        "a silent connection stayed open"
    );
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_frees_its_slot() {
    let env = start(|b| {
        b.max_concurrency(1)
            .body_idle_timeout(Some(Duration::from_millis(300)))
            .body_min_rate(None)
    })
    .await;
    let mut slow = TcpStream::connect(env.handle.addr()).await.unwrap();
    let head = create_read_session_head(&env, 100);
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // A byte every 100 ms keeps the body alive; meanwhile the only slot is taken.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        slow.write_all(b" ").await.unwrap();
    }
    let busy = env.get("/api/tenants").await;
    assert_eq!(
        busy.status(),
        429,
        "the trickling upload holds the only slot"
    );
    // Then silence: the upload is answered 408 about 300 ms after its last byte.
    let response = read_response(&mut slow).await;
    let took = started.elapsed();
    assert_eq!(response.status, 408, "{response:?}");
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["Code"], "RequestTimeout");
    assert!(
        body["RequestId"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        response.head
    );
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    // The slot is free again at once.
    assert_eq!(env.get("/api/tenants").await.status(), 200);
    assert_eq!(env.faults().await["limits"]["active"], 0);
}

#[tokio::test]
async fn a_body_below_the_minimum_rate_gets_408() {
    let env = start(|b| {
        b.max_concurrency(1)
            .body_idle_timeout(Some(Duration::from_millis(300)))
            .body_min_rate(Some(100))
    })
    .await;
    let mut slow = TcpStream::connect(env.handle.addr()).await.unwrap();
    let head = create_read_session_head(&env, 1000);
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = slow.into_split();
    // A byte every 100 ms: never idle for 300 ms, but 10 bytes/s, below the 100 bytes/s.
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    // The head and the JSON error body (whole, with a Content-Length).
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}")) {
        let n = tokio::time::timeout(Duration::from_secs(3), read.read(&mut chunk))
            .await
            .expect("no answer within 3 s while the body trickled")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&chunk[..n]);
    }
    let took = started.elapsed();
    trickle.abort();
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("RequestTimeout") && text.contains("minimum rate of 100 bytes/s"),
        "{text}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "answered after {took:?}"
    );
    assert_eq!(
        env.get("/api/tenants").await.status(),
        200,
        "the slot is free again"
    );
}

#[tokio::test]
async fn idle_connections_at_the_cap_make_room_for_new_clients() {
    let env = start(|b| {
        b.max_connections(4)
            .header_timeout(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Some(Duration::from_secs(30)))
    })
    .await;
    // Ten idle connections, more than the cap, none of them sending anything.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(env.handle.addr()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A new client is served within moments, not after the 30 s timeouts.
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), env.get("/api/tenants"))
        .await
        .expect("a new client was not served within 5 s");
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "served after {:?}",
        started.elapsed()
    );
    // The idle connections made room: most were closed, and never more than the cap are open.
    let mut closed = 0;
    for socket in &mut idle {
        if time_to_close(socket, Duration::from_millis(200))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 7,
        "only {closed} of 10 idle connections were closed"
    );
    let open = env.faults().await["limits"]["open_connections"]
        .as_u64()
        .unwrap();
    assert!((1..=4).contains(&open), "{open} connections open");
}

#[tokio::test]
async fn uploads_to_an_unknown_or_expired_session_are_refused_before_the_body() {
    let env = start(|b| b).await;
    let target = env.table.target();
    let v2 = |session: &str| {
        format!(
            "POST /api/storage/v2?Action=TableWrite&Target={target}&SessionId={session}&StreamId=0 HTTP/1.1\r\n"
        )
    };
    let v1 = |session: &str| {
        format!(
            "POST /api/storage/v1/projects/p/tables/t/sessions/{session}/data?block_number=0 HTTP/1.1\r\n"
        )
    };
    let expired = env
        .service
        .create_write_session(&WriteSessionRequest::new(env.table.clone()))
        .await
        .unwrap();
    env.clock.advance_ms(30 * 86_400_000);
    for (line, code) in [
        (v2("no-such-session"), "NoSuchSession"),
        (v1("no-such-session"), "NoSuchSession"),
        (v2(&expired.session_id), "SessionExpired"),
        (v1(&expired.session_id), "SessionExpired"),
    ] {
        for expect_continue in [false, true] {
            let mut socket = TcpStream::connect(env.handle.addr()).await.unwrap();
            // 50 MB announced, none sent: the answer must come from the headers alone.
            let expect = if expect_continue {
                "Expect: 100-continue\r\n"
            } else {
                ""
            };
            let head = format!(
                "{line}Host: paiio\r\nContent-Type: application/octet-stream\r\n{expect}Content-Length: 50000000\r\n\r\n"
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            let response = read_response(&mut socket).await;
            assert_ne!(
                response.status, 100,
                "{line}: the server asked for the body"
            );
            assert!(
                response.status == 404 || response.status == 400,
                "{line}: {response:?}"
            );
            let body: Value = serde_json::from_slice(&response.body).unwrap();
            assert_eq!(body["Code"], code, "{line}: {body}");
        }
    }
}

#[tokio::test]
async fn a_repeated_signed_header_is_refused() {
    let creds = Credentials::new("id", "secret");
    let env = start(|b| {
        b.allow_anonymous(false)
            .verifier(Verifier::default().with_credentials(&creds))
    })
    .await;
    let url = "/api/tenants";
    let mut headers = vec![("x-odps-user-agent".to_string(), "signed".to_string())];
    sign_request(
        &creds,
        &SignatureVersion::Legacy,
        "GET",
        url,
        &mut headers,
        SystemTime::now(),
    );
    let send = |extra: Option<(&'static str, &'static str)>| {
        let mut request = env.http.get(format!("{}{url}", env.handle.url()));
        // The repeat goes first: the signature covers the last value, a handler reads the first.
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        request.send()
    };
    assert_eq!(
        send(None).await.unwrap().status(),
        200,
        "the request as signed"
    );
    for name in ["x-odps-user-agent", "date", "authorization"] {
        let value = if name == "date" {
            "Thu, 01 Jan 2026 00:00:00 GMT"
        } else {
            "unsigned"
        };
        let r = send(Some((name, value))).await.unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let body = json_of(r).await;
        assert_eq!(body["Code"], "InvalidArgument");
        let message = body["Message"].as_str().unwrap();
        assert!(
            message.contains(name) && message.contains("more than once"),
            "{message}"
        );
    }
    // Anonymous servers refuse repeats of the headers they act on as well.
    let anonymous = start(|b| b).await;
    let twice = |name| {
        anonymous
            .http
            .get(format!("{}/api/tenants", anonymous.handle.url()))
            .header(name, "a")
            .header(name, "b")
            .send()
    };
    assert_eq!(twice("x-odps-user-agent").await.unwrap().status(), 400);
    let r = twice("accept").await.unwrap();
    assert_eq!(r.status(), 200, "unsigned headers may repeat");
}

#[tokio::test]
async fn advancing_the_clock_past_its_range_is_refused() {
    let env = start(|b| b).await;
    let advance = |ms: Value| env.post("/__paiio/clock/advance", json!({ "ms": ms }).to_string());
    let before = env.clock.now_ms();
    for ms in [
        json!(i64::MAX),
        json!(i64::MAX - before),
        json!(253_402_300_799_999_i64),
    ] {
        let r = advance(ms.clone()).await;
        assert_eq!(r.status(), 400, "ms {ms}");
        let body = json_of(r).await;
        assert_eq!(body["Code"], "InvalidArgument", "{body}");
        assert!(
            body["Message"].as_str().unwrap().contains("year 9999"),
            "{body}"
        );
    }
    // Nothing moved, and the clock still works.
    assert!(env.clock.now_ms() - before < 60_000);
    let r = advance(json!(1000)).await;
    assert_eq!(r.status(), 200);
    let body = json_of(r).await;
    assert!(body["now_ms"].as_i64().unwrap() >= before + 1000);
    assert_eq!(advance(json!(-1)).await.status(), 400);
    assert_eq!(env.get("/api/tenants").await.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_open_requests_finish_and_closes_idle_connections() {
    let env = start(|b| b).await;
    let addr = env.handle.addr();
    // An idle kept-alive connection, and a request stalled 300 ms before its handler.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(TENANTS).await.unwrap();
    assert_eq!(read_response(&mut idle).await.status, 200);
    let plan = json!({"fault": {"kind": "stall", "ms": 300}, "when": "always"});
    env.admin(Method::POST, "faults", Some(plan)).await;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(TENANTS).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let Served { handle, _dir, .. } = env;
    let started = Instant::now();
    let shutdown = tokio::spawn(handle.shutdown());
    // The idle connection is closed at once; the stalled request still gets its answer.
    let closed = time_to_close(&mut idle, Duration::from_secs(2)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_millis(250)),
        "{closed:?}"
    );
    assert_eq!(read_response(&mut busy).await.status, 200);
    shutdown.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
