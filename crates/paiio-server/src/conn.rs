//! The accept loop and what it bounds: open connections, the time to send request headers,
//! the silence allowed inside a request body, and the idle time of a keep-alive connection.
//!
//! Each connection is served by hyper's HTTP/1 connection in its own task, watched by a
//! [`Tracker`] that knows its phase:
//!
//! - *waiting*: no request in flight and no byte of the next one yet. A fresh connection
//!   may wait `header_timeout`, a kept-alive one `keep_alive_timeout`; then it is closed.
//! - *head*: the first bytes of a request arrived; the request must reach the router within
//!   `header_timeout` of the first one, else the connection is closed (slow headers).
//! - *busy*: a request is in flight, from its headers to the end of its response body. Only
//!   the body bounds apply: when no body byte arrives for `body_idle_timeout`, or the body
//!   falls behind `body_min_rate` (after a grace period), the body read fails and the request
//!   is answered `408 RequestTimeout` with `Connection: close`, freeing its slot.
//!
//! At most `max_connections` connections are open. When all are taken, the loop accepts one
//! more, asks every waiting connection to close (they hold no request, clients reconnect),
//! and serves the new one once a connection has closed; further clients wait in the
//! listen backlog. So idle sockets can never use up the process's file descriptors.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use paiio_storage::{Error, Result};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::ServerBuilder;
use crate::chunks::Grouped;
use crate::error::ApiError;

/// The default time a client has to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The default silence allowed inside a request body.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default lowest average rate of a request body, in bytes per second, after a grace
/// period of the body-idle timeout (Apache's mod_reqtimeout uses the same rate).
pub const DEFAULT_BODY_MIN_RATE: u64 = 500;
/// The default time an idle keep-alive connection stays open.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// The default cap on open connections (`paiio serve` derives its own from the open-file
/// limit, see [`default_max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// How long shutdown waits for open requests before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A connection is closed to make room only after waiting this long, so that a client whose
/// request is on its way is not cut off (the request to make room repeats every 50 ms).
const MIN_IDLE_TO_SHED: Duration = Duration::from_millis(100);

/// The connection options a server was built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnOptions {
    pub header_timeout: Option<Duration>,
    pub body_idle_timeout: Option<Duration>,
    pub body_min_rate: Option<u64>,
    pub keep_alive_timeout: Option<Duration>,
    pub max_connections: usize,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            header_timeout: Some(DEFAULT_HEADER_TIMEOUT),
            body_idle_timeout: Some(DEFAULT_BODY_IDLE_TIMEOUT),
            body_min_rate: Some(DEFAULT_BODY_MIN_RATE),
            keep_alive_timeout: Some(DEFAULT_KEEP_ALIVE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServerBuilder {
    /// The time a client has to send a request's headers, from their first byte (and, on a
    /// fresh connection, from the connection itself); then the connection is closed.
    /// `None` disables it. Default 30 s.
    pub fn header_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.conn.header_timeout = timeout.filter(|d| !d.is_zero());
        self
    }

    /// The longest silence inside a request body: when no body byte arrives for this long,
    /// the request is answered `408 RequestTimeout` and its connection closed. `None`
    /// disables it. Default 60 s.
    pub fn body_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.conn.body_idle_timeout = timeout.filter(|d| !d.is_zero());
        self
    }

    /// The lowest average rate of a request body in bytes per second: by `t` seconds after
    /// the handler began to read it, `(t - body_idle_timeout) * rate` bytes must have arrived,
    /// else the request is answered `408 RequestTimeout`, so a client sending a byte now and
    /// then cannot hold a slot. `None` disables it. Default 500 bytes/s.
    pub fn body_min_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.conn.body_min_rate = bytes_per_second.filter(|r| *r > 0);
        self
    }

    /// How long a keep-alive connection may wait for its next request before it is closed.
    /// `None` disables it. Default 75 s.
    pub fn keep_alive_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.conn.keep_alive_timeout = timeout.filter(|d| !d.is_zero());
        self
    }

    /// The most connections open at once (at least 1; default 512). Beyond it, idle
    /// connections are closed to make room and new clients wait in the listen backlog.
    /// Keep it well below the open-file limit: the warehouse needs descriptors too.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.conn.max_connections = connections.max(1);
        self
    }
}

/// Parses a duration: a number with a unit, `500ms`, `30s`, `2m`, `1h` (a fraction is
/// allowed: `1.5s`). Zero and a missing unit are refused, so a typo cannot disable a timeout.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let bad = |why: &str| {
        Error::invalid(
            "duration",
            format!("`{text}` ({why}; e.g. 500ms, 30s, 2m, 1h)"),
        )
    };
    let (number, unit) = crate::limits::number_and_unit(text.trim()).map_err(bad)?;
    let seconds_per_unit = match unit.as_str() {
        "" => return Err(bad("no unit")),
        "ms" => 0.001,
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        _ => return Err(bad("unknown unit")),
    };
    let seconds = number * seconds_per_unit;
    if seconds <= 0.0 {
        return Err(bad("not above zero"));
    }
    // Ten years is beyond any sensible timeout and far from Duration's limits.
    if !seconds.is_finite() || seconds > 10.0 * 365.0 * 86_400.0 {
        return Err(bad("too large"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The soft limit on open files of this process (`None` where unknown).
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given, nothing else.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        if rc != 0 {
            return None;
        }
        Some(if limit.rlim_cur == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            // `rlim_t` is `u64` on Linux but not on every Unix.
            #[allow(clippy::unnecessary_cast)]
            let n = limit.rlim_cur as u64;
            n
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft limit on open files to the hard limit; returns the limit in force after
/// (`None` where unknown). Failing to raise it is not an error: the old limit stays.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given, nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        if limit.rlim_cur != limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit only reads the struct it is given.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
                tracing::debug!("cannot raise the open-file limit to {}", limit.rlim_max);
            }
        }
        open_file_limit()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// A cap on connections that leaves half of the open-file limit to the warehouse (files,
/// blobs), between 16 and 10,000; [`DEFAULT_MAX_CONNECTIONS`] where the limit is unknown.
pub fn default_max_connections() -> usize {
    match open_file_limit() {
        Some(n) => usize::try_from(n / 2)
            .unwrap_or(usize::MAX)
            .clamp(16, 10_000),
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

// ---- the accept loop ----

/// The state shared by the accept loop and the connections.
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    open: AtomicUsize,
}

impl ConnStats {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Accepts and serves connections until `shutdown` fires, then closes idle connections,
/// lets open requests finish for a while, and drops what is left.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    options: ConnOptions,
    stats: Arc<ConnStats>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (shed_tx, shed_rx) = watch::channel(0u64);
    let mut tasks = JoinSet::new();
    'accept: loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break 'accept,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue 'accept,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors (or memory): wait for connections to close, then retry.
                tracing::warn!("accepting a connection failed: {e}; retrying in 100 ms");
                tokio::select! {
                    _ = &mut shutdown => break 'accept,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue 'accept,
                }
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => loop {
                // Every connection is taken: ask the waiting ones to close, and repeat the
                // request while this client waits, for connections that become idle later.
                shed_tx.send_modify(|generation| *generation = generation.wrapping_add(1));
                tokio::select! {
                    _ = &mut shutdown => break 'accept,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => break p,
                        Err(_) => break 'accept,
                    },
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // A new connection answers only the requests to make room made after it arrived.
        let mut shed = shed_rx.clone();
        shed.borrow_and_update();
        let connection = Connection {
            router: router.clone(),
            options,
            stop: stop_rx.clone(),
            shed,
            stats: stats.clone(),
            _permit: permit,
        };
        tasks.spawn(connection.serve(stream));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still busy after {SHUTDOWN_GRACE:?}: dropping them",
            tasks.len()
        );
    }
    tasks.abort_all();
}

/// Errors of one connection that say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what it needs.
struct Connection {
    router: Router,
    options: ConnOptions,
    stop: watch::Receiver<bool>,
    shed: watch::Receiver<u64>,
    stats: Arc<ConnStats>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream) {
        let _open = OpenGuard::new(self.stats.clone());
        let tracker = Arc::new(Tracker::new());
        let io = TokioIo::new(TrackedIo {
            inner: stream,
            tracker: tracker.clone(),
        });
        let router = self.router.clone();
        let pace = BodyPace {
            idle: self.options.body_idle_timeout,
            min_rate: self.options.body_min_rate,
        };
        let service_tracker = tracker.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            handle(request, router.clone(), service_tracker.clone(), pace)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The tracker times headers and idle connections; hyper's timer would conflate the two.
        builder.keep_alive(true).header_read_timeout(None);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let mut stopping = false;
        let mut shed_open = true;
        loop {
            let deadline = tracker.deadline(&self.options);
            tokio::select! {
                biased;
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                    break;
                }
                () = tracker.changed.notified() => {}
                () = sleep_until(deadline) => {
                    if tracker.deadline(&self.options).is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!("closing a connection: {}", tracker.why_closed());
                        break;
                    }
                }
                changed = self.stop.changed(), if !stopping => {
                    let _ = changed;
                    stopping = true;
                    // Idle connections close now, busy ones after their response.
                    conn.as_mut().graceful_shutdown();
                }
                changed = self.shed.changed(), if shed_open && !stopping => {
                    if changed.is_err() {
                        shed_open = false;
                    } else if tracker.is_waiting(MIN_IDLE_TO_SHED) {
                        tracing::debug!("closing an idle connection to make room for a new one");
                        break;
                    }
                }
            }
        }
    }
}

/// Counts a connection as open for as long as its task lives (also when it is aborted).
struct OpenGuard(Arc<ConnStats>);

impl OpenGuard {
    fn new(stats: Arc<ConnStats>) -> Self {
        stats.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Serves one request: times its body, and marks the connection busy until the response
/// body has been sent (or dropped).
async fn handle(
    request: hyper::Request<Incoming>,
    mut router: Router,
    tracker: Arc<Tracker>,
    pace: BodyPace,
) -> std::result::Result<Response<Grouped<Body>>, Infallible> {
    let busy = tracker.begin();
    let timed_out = BodyTimedOut::default();
    let (mut parts, body) = request.into_parts();
    let timed_out_flag = timed_out.clone();
    parts.extensions.insert(timed_out.clone());
    let body = Body::new(PacedBody::new(body, pace, timed_out));
    let response = match router.call(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (mut parts, body) = response.into_parts();
    if timed_out_flag.reason().is_some() {
        // The rest of the body may still come: the connection cannot be reused.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let body = body.map_frame(move |frame| {
        let _busy = &busy;
        frame
    });
    Ok(Response::from_parts(parts, Grouped::new(Body::new(body))))
}

// ---- the phases of a connection ----

#[derive(Debug)]
struct Phase {
    /// Requests between their headers and the end of their response body.
    in_flight: usize,
    /// No request has been served on this connection yet.
    fresh: bool,
    /// When the connection last began to wait for a request.
    waiting_since: Instant,
    /// When the first byte of the next request arrived.
    head_since: Option<Instant>,
}

#[derive(Debug)]
struct Tracker {
    phase: Mutex<Phase>,
    /// Signalled on every change of phase, so the connection task recomputes its deadline.
    changed: Notify,
}

impl Tracker {
    fn new() -> Self {
        Tracker {
            phase: Mutex::new(Phase {
                in_flight: 0,
                fresh: true,
                waiting_since: Instant::now(),
                head_since: None,
            }),
            changed: Notify::new(),
        }
    }

    /// When the connection is to be closed unless its phase changes first.
    fn deadline(&self, options: &ConnOptions) -> Option<Instant> {
        let p = self.phase.lock();
        if p.in_flight > 0 {
            return None;
        }
        match p.head_since {
            Some(t) => options.header_timeout.map(|d| t + d),
            None if p.fresh => options.header_timeout.map(|d| p.waiting_since + d),
            None => options.keep_alive_timeout.map(|d| p.waiting_since + d),
        }
    }

    fn why_closed(&self) -> &'static str {
        let p = self.phase.lock();
        match (p.head_since, p.fresh) {
            (Some(_), _) => "the request headers did not arrive in time",
            (None, true) => "no request arrived in time",
            (None, false) => "the keep-alive connection was idle too long",
        }
    }

    /// No request in flight, and no byte of a next one for at least `min`.
    fn is_waiting(&self, min: Duration) -> bool {
        let p = self.phase.lock();
        p.in_flight == 0 && p.head_since.is_none() && p.waiting_since.elapsed() >= min
    }

    fn on_read(&self) {
        let mut p = self.phase.lock();
        if p.in_flight == 0 && p.head_since.is_none() {
            p.head_since = Some(Instant::now());
            drop(p);
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> BusyGuard {
        {
            let mut p = self.phase.lock();
            p.in_flight += 1;
            p.fresh = false;
            p.head_since = None;
        }
        self.changed.notify_one();
        BusyGuard(self.clone())
    }
}

/// A request in flight; the connection waits again once every guard is dropped.
struct BusyGuard(Arc<Tracker>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        {
            let mut p = self.0.phase.lock();
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.in_flight == 0 {
                p.waiting_since = Instant::now();
                p.head_since = None;
            }
        }
        self.0.changed.notify_one();
    }
}

/// The socket, reporting reads to the tracker.
struct TrackedIo {
    inner: TcpStream,
    tracker: Arc<Tracker>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.tracker.on_read();
        }
        result
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---- the body timeouts ----

/// Set (with the reason) when a request's body went silent, or arrived too slowly (a
/// request extension, read by [`body_timeout_layer`] and the connection).
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyTimedOut(Arc<Mutex<Option<String>>>);

impl BodyTimedOut {
    fn reason(&self) -> Option<String> {
        self.0.lock().clone()
    }
}

/// The error a request body fails with when the client stops sending it, or sends it too
/// slowly.
#[derive(Debug, Clone)]
pub(crate) struct BodyTimeout(String);

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for BodyTimeout {}

/// The bounds on how a request body arrives.
#[derive(Debug, Clone, Copy)]
struct BodyPace {
    /// The longest wait for the next frame.
    idle: Option<Duration>,
    /// The lowest average rate in bytes per second, enforced after a grace period of the
    /// idle timeout (or its default).
    min_rate: Option<u64>,
}

/// A request body that fails when no frame arrives for the idle timeout while it is read, or
/// when it falls behind the minimum rate: by `t` seconds after the first read,
/// `(t - grace) * min_rate` bytes must have arrived.
struct PacedBody {
    inner: Incoming,
    pace: BodyPace,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the reader began to wait for the current frame.
    waiting_since: Option<Instant>,
    started: Option<Instant>,
    received: u64,
    timed_out: BodyTimedOut,
    failed: Option<BodyTimeout>,
}

impl PacedBody {
    fn new(inner: Incoming, pace: BodyPace, timed_out: BodyTimedOut) -> Self {
        PacedBody {
            inner,
            pace,
            sleep: None,
            waiting_since: None,
            started: None,
            received: 0,
            timed_out,
            failed: None,
        }
    }

    /// When the body falls behind the minimum rate unless more bytes arrive.
    fn rate_deadline(&self) -> Option<Instant> {
        let rate = self.pace.min_rate.filter(|r| *r > 0)?;
        let grace = self.pace.idle.unwrap_or(DEFAULT_BODY_IDLE_TIMEOUT);
        let earned = Duration::from_secs_f64((self.received as f64 / rate as f64).min(1e9));
        Some(self.started? + grace + earned)
    }

    fn fail(
        &mut self,
        reason: String,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        *self.timed_out.0.lock() = Some(reason.clone());
        let err = BodyTimeout(reason);
        self.failed = Some(err.clone());
        Poll::Ready(Some(Err(Box::new(err))))
    }

    fn too_slow(&self, now: Instant) -> String {
        let secs = self.started.map_or(0.0, |s| (now - s).as_secs_f64());
        format!(
            "the request body arrived slower than the minimum rate of {} bytes/s ({} bytes in {secs:.1} s)",
            self.pace.min_rate.unwrap_or(0),
            self.received
        )
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl hyper::body::Body for PacedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(err) = &this.failed {
            return Poll::Ready(Some(Err(Box::new(err.clone()))));
        }
        let now = Instant::now();
        this.started.get_or_insert(now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting_since = None;
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                this.waiting_since = None;
                Poll::Ready(other.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let waiting = *this.waiting_since.get_or_insert(now);
                let idle_deadline = this.pace.idle.map(|d| waiting + d);
                let rate_deadline = this.rate_deadline();
                let deadline = match (idle_deadline, rate_deadline) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => match a.or(b) {
                        Some(d) => d,
                        None => return Poll::Pending,
                    },
                };
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let now = Instant::now();
                match (idle_deadline, this.pace.idle) {
                    (Some(d), Some(idle)) if d <= now => this.fail(format!(
                        "no request body byte arrived for {} ms (the body-idle timeout)",
                        idle.as_millis()
                    )),
                    _ => {
                        let reason = this.too_slow(now);
                        this.fail(reason)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Answers `408 RequestTimeout` for a request whose body went silent or arrived too slowly,
/// whatever the handler made of the failed read (the connection adds `Connection: close`).
pub(crate) async fn body_timeout_layer(request: Request, next: Next) -> Response {
    let Some(flag) = request.extensions().get::<BodyTimedOut>().cloned() else {
        return next.run(request).await;
    };
    let response = next.run(request).await;
    let Some(reason) = flag.reason() else {
        return response;
    };
    drop(response);
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "RequestTimeout",
        format!("{reason}; send the request again"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration(" 1h ").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2 S").unwrap(), Duration::from_secs(2));
        for bad in ["30", "", "s", "0s", "-1s", "1x", "1e400s", "99999999999h"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        assert!(
            parse_duration("30")
                .unwrap_err()
                .to_string()
                .contains("no unit")
        );
    }

    #[test]
    fn the_connection_cap_follows_the_file_limit() {
        let cap = default_max_connections();
        assert!((16..=10_000).contains(&cap), "{cap}");
    }
}
