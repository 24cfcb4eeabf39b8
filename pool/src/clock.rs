//! Time sources: the pool never calls `Instant::now()` itself.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of monotonic time for an [`IdlePool`](crate::IdlePool).
///
/// The pool reads the clock once per operation that needs the time
/// (`put`, `take`, `take_if`, `reap`). Implementations may go backwards
/// (a manual clock in a test can); the pool only uses saturating
/// arithmetic on the instants it gets, so that never panics.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock: [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to, for tests that must not sleep.
///
/// Clones share one instant: advance a clone kept by the test and the pool
/// that owns the other clone sees the new time.
///
/// ```
/// use connmgr_pool::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - start, Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    // Deliberately a plain (not loom-modelled) lock: the clock is test
    // scaffolding, held for one read or write and never across a loom
    // yield point, so it never contends inside a model.
    now: Arc<parking_lot::Mutex<Instant>>,
}

impl ManualClock {
    /// A clock that starts at the current real instant and stays there.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock that starts at `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self {
            now: Arc::new(parking_lot::Mutex::new(start)),
        }
    }

    /// The clock's current instant.
    pub fn now(&self) -> Instant {
        *self.now.lock()
    }

    /// Moves the clock forward by `by`. Saturates: if the result is not
    /// representable the clock stays where it is.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// Sets the clock to `to`, which may be earlier than the current
    /// instant (out-of-order time is allowed and never panics the pool).
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
