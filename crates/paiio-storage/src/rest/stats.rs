//! What the client counts: attempts, retries, resumes and refreshes ([`RestClient::stats`]).

use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(doc)]
use super::RestClient;

/// Counters of what the client did (see [`RestClient::stats`]).
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) attempts: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) resumes: AtomicU64,
    pub(super) refreshes: AtomicU64,
    pub(super) refresh_failures: AtomicU64,
    pub(super) max_run_attempts: AtomicU64,
    pub(super) budget_exhausted: AtomicU64,
    pub(super) codec_changes: AtomicU64,
}

/// A snapshot of the client's counters, since it was built (or [`RestClient::reset_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (every attempt of every call, re-opens of resumed reads included).
    pub attempts: u64,
    /// Sleeps before another attempt (a retried call or a resumed read).
    pub retries: u64,
    /// Row streams re-opened after a broken body (each at the rows already delivered).
    pub resumes: u64,
    /// `TableGetReadSession(session_refresh=true)` calls made by reads (ahead of expiry, or
    /// after a `SessionExpired`).
    pub refreshes: u64,
    /// Of those, the ones that failed.
    pub refresh_failures: u64,
    /// The most attempts of one run without progress (one call, or the part of a read
    /// between two delivered batches): at most `max_retries + 1`.
    pub max_run_attempts: u64,
    /// Failures surfaced because the retry budget (attempts or time) was spent.
    pub budget_exhausted: u64,
    /// Row streams that stopped at a batch boundary to read on in another body compression
    /// ([`super::ReadCompression::Auto`]).
    pub codec_changes: u64,
}

impl Stats {
    /// The counters now.
    pub(super) fn snapshot(&self) -> ClientStats {
        ClientStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            resumes: self.resumes.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
            max_run_attempts: self.max_run_attempts.load(Ordering::Relaxed),
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            codec_changes: self.codec_changes.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the counters.
    pub(super) fn reset(&self) {
        for c in [
            &self.attempts,
            &self.retries,
            &self.resumes,
            &self.refreshes,
            &self.refresh_failures,
            &self.max_run_attempts,
            &self.budget_exhausted,
            &self.codec_changes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}
