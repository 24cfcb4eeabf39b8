//! Injectable time: the pool, the metrics aggregator and the manager read
//! "now" through [`Clock`], so tests drive time by hand instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of [`Instant`]s.
///
/// Users: `connmgr_pool::IdlePool` reads it once per operation that needs
/// the time (`put`, `take`, `reap`); `connmgr_metrics::Metrics` only in
/// `snapshot`, never while recording; the `connmgr` manager hands them a
/// clock that follows tokio's (pausable) time. Implementations may go
/// backwards (a manual clock in a test can): every user does only
/// saturating arithmetic on the instants it gets, so that never panics.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    ///
    /// **Progress:** should return promptly; it may be called under a
    /// short internal lock (the metrics snapshot's).
    fn now(&self) -> Instant;
}

/// The real clock: [`Instant::now`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to, for tests that must not sleep.
///
/// Clones share one instant: advance a clone kept by the test and the
/// structure that owns the other clone sees the new time.
///
/// ```
/// use connmgr_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// let shared = clock.clone();
/// shared.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - start, Duration::from_secs(5));
/// clock.set(start); // going back is allowed
/// assert_eq!(clock.now(), start);
/// ```
#[derive(Clone)]
pub struct ManualClock {
    // Deliberately a plain lock, also under loom: the clock is test
    // scaffolding, held for one read or write and never across a loom yield
    // point, so it never contends inside a model.
    now: Arc<parking_lot::Mutex<Instant>>,
}

impl ManualClock {
    /// A clock stopped at the current real instant.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock stopped at `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self {
            now: Arc::new(parking_lot::Mutex::new(start)),
        }
    }

    /// The clock's current instant.
    ///
    /// **Progress:** takes a short mutex shared by the clones.
    pub fn now(&self) -> Instant {
        *self.now.lock()
    }

    /// Moves the clock forward by `by`. If that would overflow `Instant`,
    /// the clock stays where it is.
    ///
    /// **Progress:** takes a short mutex shared by the clones.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// Sets the clock to `to`, forwards or backwards.
    ///
    /// **Progress:** takes a short mutex shared by the clones.
    pub fn set(&self, to: Instant) {
        *self.now.lock() = to;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Instant {
        ManualClock::now(self)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// `docs/failure-modes.md #8`: moving a manual clock by any amount, either way, never
    /// panics; an advance that would overflow leaves it where it was.
    #[test]
    fn a_manual_clock_never_panics_on_extreme_moves() {
        let clock = ManualClock::new();
        let start = clock.now();
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), start, "an overflowing advance is ignored");
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), start + Duration::from_secs(5));
        let earlier = start
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or(start);
        clock.set(earlier);
        assert_eq!(clock.now(), earlier);
        assert_eq!(clock.now().saturating_duration_since(start), Duration::ZERO);
        let copy = clock.clone();
        copy.advance(Duration::from_millis(1));
        assert_eq!(
            clock.now(),
            earlier + Duration::from_millis(1),
            "clones share one time"
        );
    }
}
