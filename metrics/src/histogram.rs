//! The latency histogram as seen in a [`Snapshot`](crate::Snapshot).

use std::time::Duration;

use crate::raw::buckets::{self, BUCKETS, K, MAX_VALUE};

/// Counts of message latencies in log-linear buckets.
///
/// Every power of two of nanoseconds is split into 16 equal sub-buckets
/// (values below 16 ns get one bucket each), so a bucket is at most 1/16 of
/// its lower bound wide. A quantile is reported as the midpoint of the
/// bucket holding the sample of that rank, hence within
/// [`RELATIVE_ERROR`](Self::RELATIVE_ERROR) (1/32, about 3.1 %) of that
/// sample's true value. Latencies of [`MAX_TRACKED`](Self::MAX_TRACKED)
/// (2^40 ns, about 18.3 minutes) or more are counted as just below it
/// (2^40 - 1 ns), in the histogram and in every latency sum.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64]>,
}

impl Histogram {
    /// The largest relative error of [`quantile`](Self::quantile) for
    /// latencies below [`MAX_TRACKED`](Self::MAX_TRACKED): `2^-5`.
    pub const RELATIVE_ERROR: f64 = 1.0 / (2u64 << K) as f64;

    /// Latencies from this value up are counted as just below it.
    ///
    /// ```
    /// use connmgr_metrics::{Histogram, Metrics};
    /// use std::time::Duration;
    ///
    /// let metrics = Metrics::new();
    /// metrics.record_message(Duration::MAX);
    /// let snapshot = metrics.snapshot();
    /// assert_eq!(snapshot.latency_sum, Histogram::MAX_TRACKED - Duration::from_nanos(1));
    /// ```
    pub const MAX_TRACKED: Duration = Duration::from_nanos(MAX_VALUE + 1);

    pub(crate) fn from_counts(counts: Box<[u64]>) -> Self {
        debug_assert_eq!(counts.len(), BUCKETS);
        Self { counts }
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Number of latencies counted.
    ///
    /// **Progress:** wait-free, O(buckets).
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |sum, &c| sum.saturating_add(c))
    }

    /// Whether nothing was counted.
    ///
    /// **Progress:** wait-free, O(buckets).
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// The `q`-quantile (`q` in `0.0..=1.0`, clamped; `0.5` is the median):
    /// the latency of rank `max(1, ceil(q * count))` in ascending order,
    /// within [`RELATIVE_ERROR`](Self::RELATIVE_ERROR). `None` when the
    /// histogram is empty or `q` is NaN.
    ///
    /// **Progress:** wait-free, O(buckets).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if q.is_nan() {
            return None;
        }
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(Duration::from_nanos(buckets::representative(i)));
            }
        }
        None
    }

    /// Number of latencies strictly below `bound`.
    ///
    /// Exact when `bound` is a bucket edge: every power of two of
    /// nanoseconds is one, which is what the Prometheus export uses (as the
    /// inclusive bound `le` = `bound - 1 ns`). Otherwise the bucket holding
    /// `bound` is left out.
    ///
    /// **Progress:** wait-free, O(buckets).
    pub fn count_below(&self, bound: Duration) -> u64 {
        let bound = bound.as_nanos();
        self.counts
            .iter()
            .enumerate()
            .take_while(|&(i, _)| {
                let (lower, width) = buckets::bounds(i);
                u128::from(lower + width) <= bound
            })
            .fold(0u64, |sum, (_, &c)| sum.saturating_add(c))
    }

    /// The non-empty buckets as `(lower bound, width, count)`, in ascending
    /// order; a bucket holds the latencies in `lower..lower + width`.
    ///
    /// **Progress:** wait-free.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, Duration, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c != 0)
            .map(|(i, &c)| {
                let (lower, width) = buckets::bounds(i);
                (Duration::from_nanos(lower), Duration::from_nanos(width), c)
            })
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}
