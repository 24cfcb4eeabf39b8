//! Injectable time.

use std::time::{Duration, Instant};

use crate::sync::{Arc, Mutex};

/// A source of [`Instant`]s.
///
/// [`Metrics`](crate::Metrics) reads its clock only in
/// [`snapshot`](crate::Metrics::snapshot), never while recording. The clock
/// need not be monotonic: the aggregator never lets its own notion of "now"
/// go backwards (see [`Snapshot::taken_at`](crate::Snapshot::taken_at)).
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    ///
    /// **Progress:** an implementation should return promptly: it is called
    /// once per snapshot, under the aggregator's snapshot mutex (never by
    /// recorders).
    fn now(&self) -> Instant;
}

/// The real clock, [`Instant::now`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock moved by hand, for tests. Clones share one time.
///
/// ```
/// use connmgr_metrics::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// let shared = clock.clone();
/// shared.advance(Duration::from_secs(3));
/// assert_eq!(clock.now() - start, Duration::from_secs(3));
/// clock.set(start); // going back is allowed
/// assert_eq!(clock.now(), start);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock stopped at the current real instant.
    ///
    /// **Progress:** may block briefly (allocates).
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock stopped at `start`.
    ///
    /// **Progress:** may block briefly (allocates).
    pub fn starting_at(start: Instant) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
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
    fn now(&self) -> Instant {
        *self.now.lock()
    }
}
