//! What a snapshot reports, and the figures its owner adds to it.

use std::time::{Duration, Instant};

use crate::{DialOutcome, Histogram};

/// Cumulative count of each [`DialOutcome`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DialCounts {
    /// [`DialOutcome::Ok`]: dials that connected.
    pub ok: u64,
    /// [`DialOutcome::Failed`]: dials that failed.
    pub failed: u64,
    /// [`DialOutcome::TimedOut`]: dials that hit their deadline.
    pub timed_out: u64,
    /// [`DialOutcome::PoolHit`]: connects served from the idle pool.
    pub pool_hits: u64,
    /// [`DialOutcome::PoolMiss`]: connects the idle pool could not serve.
    pub pool_misses: u64,
}

impl DialCounts {
    /// The count of one outcome.
    ///
    /// **Progress:** wait-free.
    pub fn get(&self, outcome: DialOutcome) -> u64 {
        match outcome {
            DialOutcome::Ok => self.ok,
            DialOutcome::Failed => self.failed,
            DialOutcome::TimedOut => self.timed_out,
            DialOutcome::PoolHit => self.pool_hits,
            DialOutcome::PoolMiss => self.pool_misses,
        }
    }

    pub(crate) fn from_array(counts: [u64; 5]) -> Self {
        let [ok, failed, timed_out, pool_hits, pool_misses] = counts;
        Self {
            ok,
            failed,
            timed_out,
            pool_hits,
            pool_misses,
        }
    }
}

/// A point-in-time reading of a [`Metrics`](crate::Metrics) aggregator.
///
/// Totals count everything recorded since the aggregator was created; they
/// are exact once recording has stopped (every recording that
/// happened-before the `snapshot()` call is counted). While threads are
/// still recording, each total lies between its values at the start and at
/// the end of the call, and never decreases from one snapshot to the next;
/// but the stripes are read one after another, so it need not be a value
/// the total ever had at one instant, and different totals may be read at
/// slightly different moments (e.g. `messages` may include a message whose
/// latency bucket is not yet in `latency`).
///
/// The **window** fields cover the span from a stored sample of the totals
/// up to [`taken_at`](Self::taken_at); see [`window`](Self::window) for
/// exactly which span.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// When the snapshot was taken: the clock's reading, or, if the clock
    /// went back behind it, the newest instant seen before (the previous
    /// snapshot's `taken_at`, or the aggregator's creation), so it never
    /// decreases.
    pub taken_at: Instant,
    /// Time since the aggregator was created.
    pub uptime: Duration,
    /// Messages recorded.
    pub messages: u64,
    /// Sum of the recorded message latencies (each clamped to just below
    /// [`Histogram::MAX_TRACKED`]), saturating at [`Duration::MAX`]. Exact
    /// while less than 2^68 ns of latency arrives between two snapshots
    /// (see the [crate docs](crate#snapshots-and-the-sliding-window)).
    pub latency_sum: Duration,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Dial outcomes.
    pub dials: DialCounts,
    /// Every recorded message latency.
    pub latency: Histogram,
    /// The span the window fields cover: from the newest stored sample
    /// taken at or before `taken_at - window_length` (the configured
    /// [`MetricsConfig::window`](crate::MetricsConfig::window)) to
    /// `taken_at`. If no sample is that old (the aggregator is younger than
    /// the window) it is the time since creation. With snapshots at least
    /// every `d`, it is shorter than `window_length + window_length /
    /// (history - 1) + d` (nothing finer than the stored samples is known).
    pub window: Duration,
    /// Messages recorded during [`window`](Self::window).
    pub window_messages: u64,
    /// `window_messages / window` in messages per second (0 when the window
    /// is empty in time).
    pub messages_per_second: f64,
    /// Mean latency of the messages recorded during the window (zero when
    /// there were none).
    pub mean_latency: Duration,
    /// Latencies of the messages recorded during the window.
    pub window_latency: Histogram,
    /// Median latency over the window (within [`Histogram::RELATIVE_ERROR`]).
    pub p50: Option<Duration>,
    /// 90th percentile latency over the window.
    pub p90: Option<Duration>,
    /// 99th percentile latency over the window.
    pub p99: Option<Duration>,
}

impl Snapshot {
    /// The documented `NetworkMetrics`: this snapshot's window rate and
    /// mean latency, plus the two figures only the owner knows: the number
    /// of active (Connected) connections and the bytes its structures hold.
    ///
    /// **Progress:** wait-free.
    pub fn network_metrics(&self, connections: usize, memory_usage: usize) -> NetworkMetrics {
        NetworkMetrics {
            messages_per_second: self.messages_per_second,
            connections,
            avg_latency: self.mean_latency,
            memory_usage,
        }
    }
}

/// The metrics the connection manager's documented API returns.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetworkMetrics {
    /// Message throughput over the sliding window: the aggregator's
    /// [`MetricsConfig::window`](crate::MetricsConfig::window) (10 s by
    /// default), stretched by at most one sample spacing and the gap between
    /// snapshots; [`Snapshot::window`] has the exact span.
    pub messages_per_second: f64,
    /// Active (Connected) connection count.
    pub connections: usize,
    /// Mean message latency over the same window as
    /// [`messages_per_second`](Self::messages_per_second) (zero when no
    /// message was recorded in it).
    pub avg_latency: Duration,
    /// Bytes held by the manager's own structures.
    pub memory_usage: usize,
}

/// Gauges the aggregator cannot know, supplied by its owner for export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gauges {
    /// Active (Connected) connections.
    pub connections: usize,
    /// Connections being dialed (Connecting).
    pub connecting: usize,
    /// Idle connections held in the pool.
    pub idle: usize,
    /// Peers with a status entry.
    pub tracked_peers: usize,
    /// Bytes held by the owner's structures (including the aggregator's
    /// [`memory_usage`](crate::Metrics::memory_usage)).
    pub memory_usage: usize,
}
