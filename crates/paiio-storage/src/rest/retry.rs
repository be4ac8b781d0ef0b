//! Retries of the Storage API client: the policy ([`RetryConfig`]), the backoff with jitter
//! ([`Backoff`], deterministic under a seed), and which failures may be retried.
//!
//! What is retried (docs/reliability.md §4):
//!
//! * failures before the request was sent (connection refused, connect timeout) — for every
//!   call, since the server never saw it;
//! * resets, read timeouts, 408, 429 (honouring `Retry-After`) and 5xx — only for calls that
//!   are safe to repeat ([`Idempotency::Safe`]): reads (resumable), session creation, the get
//!   calls, commit (committing a committed session answers the same), stream creation with an
//!   explicit stream id, and `TableWrite` with an exactly-once row offset (the server
//!   deduplicates by offset), and closing a stream version (idempotent: a version stays
//!   closed; an error answered to a retry is checked against the stream's state). A plain
//!   `TableWrite` and abort are not repeated once the request may have reached the server.
//!
//! Every retry is bounded by both `max_retries` and `retry_timeout` (wall time since the first
//! attempt, including the next sleep).

use std::time::{Duration, SystemTime};

pub use crate::rng::SplitMix64;

use crate::error::Error;

/// How backoff delays are randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// `random(0, min(max, initial * 2^n))` (AWS "full jitter").
    #[default]
    Full,
    /// `min(max, random(initial, previous * 3))` (AWS "decorrelated jitter").
    Decorrelated,
    /// `min(max, initial * 2^n)`, no randomness.
    None,
}

/// The retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// The first backoff (and the floor of decorrelated jitter).
    pub initial_backoff: Duration,
    /// The largest single sleep.
    pub max_backoff: Duration,
    /// The most retries of one call (attempts = retries + 1); 0 disables retries.
    pub max_retries: u32,
    /// The most wall time one call may take with its retries, sleeps included.
    pub retry_timeout: Duration,
    pub jitter: Jitter,
    /// Seed of the jitter RNG; `None` seeds from the clock. Tests set it to be deterministic.
    pub seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            jitter: Jitter::Full,
            seed: None,
        }
    }
}

impl RetryConfig {
    /// No retries at all.
    pub fn disabled() -> Self {
        RetryConfig {
            max_retries: 0,
            ..Self::default()
        }
    }
}

/// Whether a call may be repeated after it may have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it cannot change the outcome (reads, gets, commit, exactly-once writes...).
    Safe,
    /// Repeat only when the request was certainly not sent (connect failures).
    Unsafe,
}

/// The backoff of one call: successive delays per the policy.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: RetryConfig,
    rng: SplitMix64,
    retries: u32,
    previous: Duration,
}

impl Backoff {
    pub fn new(config: &RetryConfig) -> Self {
        let seed = config.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0x5EED, |d| d.as_nanos() as u64)
        });
        Backoff {
            config: config.clone(),
            rng: SplitMix64::new(seed),
            retries: 0,
            previous: config.initial_backoff,
        }
    }

    /// Retries taken so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The delay before the next retry (and counts it).
    pub fn next_delay(&mut self) -> Duration {
        let c = &self.config;
        let cap = c.max_backoff.as_nanos();
        let initial = c.initial_backoff.as_nanos();
        let exp = initial
            .saturating_mul(1u128 << self.retries.min(64))
            .min(cap);
        let nanos = match c.jitter {
            Jitter::None => exp,
            Jitter::Full => self.rng.between(0, exp),
            Jitter::Decorrelated => {
                let hi = self.previous.as_nanos().saturating_mul(3).max(initial);
                self.rng.between(initial, hi).min(cap)
            }
        };
        self.retries += 1;
        let delay = Duration::from_nanos(nanos.min(u64::MAX as u128) as u64);
        self.previous = delay;
        delay
    }

    /// Resets the count after progress (a resumed read that delivered rows).
    pub fn reset(&mut self) {
        self.retries = 0;
        self.previous = self.config.initial_backoff;
    }

    /// The sleep before one more retry of a call that started `elapsed` ago, at least
    /// `at_least` (a `Retry-After`); `None` when the retry would exceed `max_retries` or, with
    /// its sleep, `retry_timeout`.
    pub fn next_retry(
        &mut self,
        elapsed: Duration,
        at_least: Option<Duration>,
    ) -> Option<Duration> {
        if self.retries >= self.config.max_retries {
            return None;
        }
        let delay = self.next_delay().max(at_least.unwrap_or(Duration::ZERO));
        (elapsed + delay <= self.config.retry_timeout).then_some(delay)
    }

    /// The policy.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }
}

/// Whether an HTTP status may go away on retry: 408, 429 and 5xx.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// A transport failure: whether it certainly happened before the request was sent.
pub fn failed_before_send(e: &reqwest::Error) -> bool {
    e.is_connect()
}

/// Whether a failure of a call with `idempotency` may be retried.
pub fn should_retry(error: &Error, before_send: bool, idempotency: Idempotency) -> bool {
    if before_send {
        return true;
    }
    idempotency == Idempotency::Safe && error.is_retryable()
}

/// Parses `Retry-After`: delta seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: Jitter) -> RetryConfig {
        RetryConfig {
            jitter,
            seed: Some(7),
            ..RetryConfig::default()
        }
    }

    #[test]
    fn exponential_without_jitter_is_capped() {
        let mut b = Backoff::new(&config(Jitter::None));
        let delays: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 15000, 15000]
        );
    }

    #[test]
    fn jitter_is_bounded_and_deterministic_under_a_seed() {
        for jitter in [Jitter::Full, Jitter::Decorrelated] {
            let run = || {
                let mut b = Backoff::new(&config(jitter));
                (0..50).map(|_| b.next_delay()).collect::<Vec<_>>()
            };
            let a = run();
            assert_eq!(a, run(), "{jitter:?} must repeat under the same seed");
            assert!(
                a.iter().all(|d| *d <= Duration::from_secs(15)),
                "{jitter:?}: {a:?}"
            );
            if jitter == Jitter::Decorrelated {
                assert!(a.iter().all(|d| *d >= Duration::from_millis(100)), "{a:?}");
            }
            let distinct: std::collections::HashSet<_> = a.iter().collect();
            assert!(
                distinct.len() > 10,
                "{jitter:?} should spread delays: {a:?}"
            );
        }
    }

    #[test]
    fn budget_counts_retries_and_time() {
        let c = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(1),
            ..config(Jitter::None)
        };
        let mut b = Backoff::new(&c);
        assert_eq!(
            b.next_retry(Duration::from_millis(950), None),
            None,
            "the sleep would pass the timeout"
        );
        let mut b = Backoff::new(&c);
        assert_eq!(
            b.next_retry(Duration::ZERO, None),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            b.next_retry(Duration::ZERO, Some(Duration::from_millis(700))),
            Some(Duration::from_millis(700))
        );
        assert_eq!(
            b.next_retry(Duration::ZERO, None),
            None,
            "two retries at most"
        );
        b.reset();
        assert!(b.next_retry(Duration::ZERO, None).is_some());
    }

    #[test]
    fn retry_after() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn only_safe_calls_retry_after_sending() {
        let e = Error::Service {
            status: 503,
            code: "x".into(),
            message: "m".into(),
            request_id: "r".into(),
        };
        assert!(should_retry(&e, false, Idempotency::Safe));
        assert!(!should_retry(&e, false, Idempotency::Unsafe));
        assert!(should_retry(&e, true, Idempotency::Unsafe));
        let e = Error::invalid("x", "y");
        assert!(!should_retry(&e, false, Idempotency::Safe));
    }
}
