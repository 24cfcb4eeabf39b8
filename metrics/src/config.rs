//! Configuration and the crate's error type.

use std::fmt;
use std::time::Duration;

use connmgr_core::thread_slot::DENSE as MAX_SLOTS;

/// Most shared stripes and most history samples a configuration may ask for.
const MAX_SHARED: usize = 1024;
const MAX_HISTORY: usize = 1024;

/// How a [`Metrics`](crate::Metrics) aggregator is laid out.
///
/// Build it from [`Default`] and change what you need:
///
/// ```
/// use connmgr_metrics::MetricsConfig;
/// use std::time::Duration;
///
/// let config = MetricsConfig { window: Duration::from_secs(60), ..MetricsConfig::default() };
/// assert_eq!(config.window, Duration::from_secs(60));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Length of the sliding window over which
    /// [`Snapshot::messages_per_second`](crate::Snapshot::messages_per_second),
    /// the mean latency and the windowed quantiles are computed. Default
    /// 10 s; must be non-zero.
    pub window: Duration,
    /// Stripes owned by one thread each (the threads holding the lowest
    /// slot numbers). A power of two, 1..=1024. Default: twice the
    /// available parallelism, rounded up to a power of two, at most 64.
    pub stripes: usize,
    /// Stripes shared, by hashing the slot number, by threads that own no
    /// stripe. A power of two, 1..=1024. Default: the available
    /// parallelism rounded up to a power of two, at most 64.
    pub shared_stripes: usize,
    /// Samples of cumulative totals kept for the window (2..=1024). A new
    /// sample is kept at most every `window / (history - 1)`, so the span a
    /// snapshot covers exceeds the window by less than that spacing plus
    /// the gap between snapshots. Default 11 (one sample per second for a
    /// 10 s window).
    pub history: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            window: Duration::from_secs(10),
            stripes: cpus
                .saturating_mul(2)
                .next_power_of_two()
                .min(64)
                .min(MAX_SLOTS),
            shared_stripes: cpus.next_power_of_two().min(64),
            history: 11,
        }
    }
}

impl MetricsConfig {
    /// Checks every setting, naming the first one that is out of range.
    ///
    /// **Progress:** wait-free.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |setting, reason| Err(Error::InvalidConfig { setting, reason });
        if self.window.is_zero() {
            return invalid("window", "must be greater than zero");
        }
        if !self.stripes.is_power_of_two() || self.stripes > MAX_SLOTS {
            return invalid("stripes", "must be a power of two from 1 to 1024");
        }
        if !self.shared_stripes.is_power_of_two() || self.shared_stripes > MAX_SHARED {
            return invalid("shared_stripes", "must be a power of two from 1 to 1024");
        }
        if !(2..=MAX_HISTORY).contains(&self.history) {
            return invalid("history", "must be from 2 to 1024");
        }
        Ok(())
    }
}

/// Everything that can go wrong in this crate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A [`MetricsConfig`] setting is out of range.
    InvalidConfig {
        /// The field of [`MetricsConfig`] at fault, e.g. `"window"`.
        setting: &'static str,
        /// What it must be instead.
        reason: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { setting, reason } => {
                write!(f, "invalid metrics configuration: `{setting}` {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}
