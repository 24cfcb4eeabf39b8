//! Aggregator configuration.

use std::time::Duration;

use crate::Error;

use connmgr_core::thread_slot::DENSE as MAX_SLOTS;

/// Most shared stripes and most history samples a configuration may ask for.
const MAX_SHARED: usize = 1024;
const MAX_HISTORY: usize = 1024;

/// How a [`Metrics`](crate::Metrics) aggregator is laid out.
///
/// Start from [`Default`] and change what you need with the `with_*`
/// setters; [`Metrics::with_config`](crate::Metrics::with_config)
/// validates the result.
///
/// ```
/// use connmgr_metrics::MetricsConfig;
/// use std::time::Duration;
///
/// let config = MetricsConfig::default().with_window(Duration::from_secs(60));
/// assert_eq!(config.window, Duration::from_secs(60));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Sets [`window`](Self::window).
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets [`stripes`](Self::stripes).
    #[must_use]
    pub fn with_stripes(mut self, stripes: usize) -> Self {
        self.stripes = stripes;
        self
    }

    /// Sets [`shared_stripes`](Self::shared_stripes).
    #[must_use]
    pub fn with_shared_stripes(mut self, shared_stripes: usize) -> Self {
        self.shared_stripes = shared_stripes;
        self
    }

    /// Sets [`history`](Self::history).
    #[must_use]
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history;
        self
    }

    /// Checks every setting, naming the first one that is out of range.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the setting.
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
