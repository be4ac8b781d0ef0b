//! Service-like limits: a per-request bandwidth cap on response bodies, and a cap on the
//! requests served at once (beyond it: `429 SlotExceeded` with `Retry-After: 1`).
//!
//! A request counts as active from the moment it enters the layer until its response body
//! has finished streaming (or the client went away), not just until the headers are sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use paiio_storage::{Error, Result};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::{AppState, ServerBuilder};

/// The default cap on requests served at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 1000;

/// Parses a byte size: `512`, `512B`, `512KB` (10^3), `10MB` (10^6), `1GB` (10^9), `1TB`,
/// `512KiB` (2^10), `10MiB` (2^20), `1GiB`, `1TiB`; `K`/`M`/`G`/`T` alone are decimal too.
/// Units are case-insensitive, a fraction is allowed (`1.5MB`), and a trailing `/s` is
/// ignored so a rate can be written `10MB/s`.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = |why: &str| {
        Error::invalid(
            "size",
            format!("`{text}` ({why}; e.g. 512KB, 10MB, 10MiB, 1GB)"),
        )
    };
    let t = text.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t)
        .trim();
    let (number, unit) = number_and_unit(t).map_err(bad)?;
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(bad("unknown unit")),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes.round() as u64)
}

/// Splits `1.5MB` into the number and its unit (lowercase, trimmed; empty when none), or says
/// what is wrong (for the caller's message).
pub(crate) fn number_and_unit(text: &str) -> std::result::Result<(f64, String), &'static str> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("no number");
    }
    let number: f64 = number.parse().map_err(|_| "not a number")?;
    Ok((number, unit.trim().to_ascii_lowercase()))
}

/// The limits a server was built with, and their counters.
#[derive(Debug)]
pub(crate) struct LimitState {
    /// Bytes per second of each response body; `None`: unlimited.
    pub stream_rate: Option<u64>,
    pub max_concurrency: usize,
    active: Arc<AtomicUsize>,
    rejected: AtomicU64,
}

impl LimitState {
    pub fn new(stream_rate: Option<u64>, max_concurrency: usize) -> Self {
        LimitState {
            stream_rate: stream_rate.filter(|r| *r > 0),
            max_concurrency: max_concurrency.max(1),
            active: Arc::new(AtomicUsize::new(0)),
            rejected: AtomicU64::new(0),
        }
    }

    /// Takes a slot, or `None` when all are taken.
    fn try_acquire(&self) -> Option<SlotGuard> {
        let mut current = self.active.load(Ordering::SeqCst);
        loop {
            if current >= self.max_concurrency {
                return None;
            }
            match self.active.compare_exchange(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(SlotGuard(self.active.clone())),
                Err(now) => current = now,
            }
        }
    }

    /// `{"stream_rate": B|null, "max_concurrency": N, "active": N, "rejected": N}`
    pub fn stats_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stream_rate": self.stream_rate,
            "max_concurrency": self.max_concurrency,
            "active": self.active.load(Ordering::SeqCst),
            "rejected": self.rejected.load(Ordering::SeqCst),
        })
    }
}

/// One occupied request slot; freed on drop.
#[derive(Debug)]
struct SlotGuard(Arc<AtomicUsize>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ServerBuilder {
    /// Caps the bandwidth of every response body at `bytes_per_second` (per request);
    /// `None` (the default) means unlimited. See [`parse_size`] for `10MB`-style values.
    pub fn stream_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.realism.stream_rate = bytes_per_second;
        self
    }

    /// The most requests served at once (default 1000); beyond it the server answers
    /// `429 SlotExceeded` with `Retry-After: 1`. A request holds its slot until its response
    /// body has been sent.
    pub fn max_concurrency(mut self, requests: usize) -> Self {
        self.realism.max_concurrency = requests;
        self
    }
}

/// The answer when every slot is taken.
fn slot_exceeded(request: &Request, max: usize) -> Response {
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "SlotExceeded",
        format!("too many concurrent requests (the limit is {max}); retry later"),
    );
    err.request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
    let mut response = err.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The concurrency cap and the bandwidth cap.
pub(crate) async fn limit_layer(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.realism.limits;
    let Some(slot) = limits.try_acquire() else {
        limits.rejected.fetch_add(1, Ordering::SeqCst);
        return slot_exceeded(&request, limits.max_concurrency);
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let data = body.into_data_stream();
    let body = match limits.stream_rate {
        Some(rate) => Body::from_stream(paced(data, rate).map(move |chunk| {
            let _slot = &slot;
            chunk
        })),
        None => Body::from_stream(data.map(move |chunk| {
            let _slot = &slot;
            chunk
        })),
    };
    Response::from_parts(parts, body)
}

/// Paces a body stream to `rate` bytes per second with a token bucket of one piece: large
/// chunks are split into pieces of at most 64 KiB (and at most 1/50 s worth of bytes), and each
/// piece waits until the bytes sent so far are within the rate since the first poll.
pub(crate) fn paced<S, E>(
    stream: S,
    rate: u64,
) -> impl Stream<Item = std::result::Result<Bytes, E>> + Send
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
    E: Send + 'static,
{
    let rate = rate.max(1);
    let piece = (rate / 50).clamp(1, 64 << 10) as usize;
    struct Pace<S> {
        inner: S,
        pending: Bytes,
        start: Option<Instant>,
        sent: u64,
    }
    let state = Pace {
        inner: stream,
        pending: Bytes::new(),
        start: None,
        sent: 0,
    };
    futures::stream::unfold(state, move |mut st| async move {
        if st.pending.is_empty() {
            match st.inner.next().await? {
                Ok(b) => st.pending = b,
                Err(e) => return Some((Err(e), st)),
            }
            if st.pending.is_empty() {
                return Some((Ok(Bytes::new()), st));
            }
        }
        let start = *st.start.get_or_insert_with(Instant::now);
        let n = st.pending.len().min(piece);
        let out = st.pending.split_to(n);
        // The bucket holds one piece: this piece may go once `sent + n - piece` bytes are due.
        let due = (st.sent + n as u64).saturating_sub(piece as u64);
        let at = start + Duration::from_secs_f64(due as f64 / rate as f64);
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        st.sent += n as u64;
        Some((Ok(out), st))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("512KB").unwrap(), 512_000);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("10mib").unwrap(), 10 << 20);
        assert_eq!(parse_size("1.5MB").unwrap(), 1_500_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 10MB/s ").unwrap(), 10_000_000);
        assert_eq!(parse_size("2 KiB").unwrap(), 2048);
        assert!(parse_size("MB").is_err());
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[tokio::test]
    async fn pacing_is_close_to_the_rate() {
        let chunks: Vec<std::result::Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(vec![0u8; 700_000])),
            Ok(Bytes::from(vec![0u8; 300_000])),
        ];
        let started = std::time::Instant::now();
        let total: usize = paced(futures::stream::iter(chunks), 4_000_000)
            .map(|c| c.unwrap().len())
            .fold(0, |a, b| async move { a + b })
            .await;
        let took = started.elapsed().as_secs_f64();
        assert_eq!(total, 1_000_000);
        // 1 MB at 4 MB/s: 0.25 s, less one 64 KiB piece of burst.
        assert!((0.22..0.32).contains(&took), "took {took} s");
    }
}
