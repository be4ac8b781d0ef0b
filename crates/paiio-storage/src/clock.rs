//! Time as the storage layer sees it, injectable so tests can expire sessions at will.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in epoch milliseconds.
pub trait Clock: Debug + Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// The system clock plus an offset that tests (and the server's fault layer) can advance.
#[derive(Debug, Default, Clone)]
pub struct ManualClock {
    offset_ms: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `ms` milliseconds for every holder of this clock. A move past
    /// [`MAX_MANUAL_CLOCK_MS`] stops there (see [`try_advance_ms`](Self::try_advance_ms)).
    pub fn advance_ms(&self, ms: i64) {
        if self.try_advance_ms(ms).is_err() {
            let _ = self
                .offset_ms
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |offset| {
                    Some(
                        MAX_MANUAL_CLOCK_MS
                            .saturating_sub(SystemClock.now_ms())
                            .max(offset),
                    )
                });
        }
    }

    /// Moves time forward by `ms` milliseconds and returns the new time, or refuses (and
    /// changes nothing) when the time would pass [`MAX_MANUAL_CLOCK_MS`] or `ms` is negative.
    pub fn try_advance_ms(&self, ms: i64) -> Result<i64, ClockError> {
        if ms < 0 {
            return Err(ClockError::Backwards { ms });
        }
        let now = SystemClock.now_ms();
        let offset = self
            .offset_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |offset| {
                let moved = offset.checked_add(ms)?;
                (now.checked_add(moved)? <= MAX_MANUAL_CLOCK_MS).then_some(moved)
            })
            .map_err(|offset| ClockError::TooFar {
                ms,
                now_ms: now.saturating_add(offset),
            })?;
        Ok(now.saturating_add(offset).saturating_add(ms))
    }
}

/// The latest time a [`ManualClock`] reaches: the end of the year 9999 UTC, far from the
/// limits of `i64` milliseconds, so expiry times computed from it cannot overflow.
pub const MAX_MANUAL_CLOCK_MS: i64 = 253_402_300_799_999;

/// Why a [`ManualClock`] did not move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("the clock only moves forward (asked to move by {ms} ms)")]
    Backwards { ms: i64 },
    #[error(
        "moving the clock by {ms} ms from {now_ms} ms would pass {MAX_MANUAL_CLOCK_MS} ms \
         (the end of the year 9999), the latest time the clock keeps"
    )]
    TooFar { ms: i64, now_ms: i64 },
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        SystemClock
            .now_ms()
            .saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_refuses_overflow_and_changes_nothing() {
        let clock = ManualClock::new();
        let before = clock.now_ms();
        assert!(matches!(
            clock.try_advance_ms(i64::MAX),
            Err(ClockError::TooFar { .. })
        ));
        assert!(matches!(
            clock.try_advance_ms(-1),
            Err(ClockError::Backwards { ms: -1 })
        ));
        let after = clock.now_ms();
        assert!(
            after >= before && after - before < 60_000,
            "{before} -> {after}"
        );
        let now = clock.try_advance_ms(1_000).unwrap();
        assert!(now >= before + 1_000);
        // Up to the limit, not past it.
        let to_limit = MAX_MANUAL_CLOCK_MS - clock.now_ms() - 60_000;
        clock.try_advance_ms(to_limit).unwrap();
        assert!(clock.try_advance_ms(120_000).is_err());
        // The infallible form stops at the limit instead of wrapping or panicking.
        clock.advance_ms(i64::MAX);
        assert!(clock.now_ms() <= MAX_MANUAL_CLOCK_MS + 60_000);
        assert!(clock.now_ms() > MAX_MANUAL_CLOCK_MS - 120_000);
    }
}
