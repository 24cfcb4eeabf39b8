//! Forwarding to the [`metrics`](::metrics) crate facade (feature `metrics`).

use crate::raw::buckets;
use crate::{DialOutcome, Gauges, Snapshot};

/// Forwards snapshots to whatever recorder the `metrics` crate has
/// installed (global, or thread-local via `metrics::with_local_recorder`),
/// under the same names as [`prometheus_text`](crate::prometheus_text).
///
/// Counters are forwarded with `absolute`, gauges with `set`. The latency
/// histogram is forwarded as the latencies recorded since the previous
/// [`export`](Self::export): each bucket's new count is replayed with
/// `record_many` at the bucket's representative value, in seconds (within
/// [`Histogram::RELATIVE_ERROR`](crate::Histogram::RELATIVE_ERROR)). Use one
/// exporter per aggregator, so the deltas are meaningful. Recording itself
/// never touches the facade, keeping the hot path free of it.
///
/// ```
/// use connmgr_metrics::{FacadeExporter, Gauges, Metrics};
///
/// let metrics = Metrics::new();
/// let mut exporter = FacadeExporter::new();
/// metrics.record_message(std::time::Duration::from_millis(2));
/// exporter.export(&metrics.snapshot(), &Gauges::default()); // no recorder: a no-op
/// ```
#[derive(Debug, Default)]
pub struct FacadeExporter {
    previous: Option<Box<[u64]>>,
}

impl FacadeExporter {
    /// An exporter that has forwarded nothing yet.
    ///
    /// **Progress:** wait-free.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forwards `snapshot` and `gauges` to the current recorder. The first
    /// call also describes every metric.
    ///
    /// **Progress:** as the installed recorder's; O(buckets) calls into it
    /// at most.
    pub fn export(&mut self, snapshot: &Snapshot, gauges: &Gauges) {
        if self.previous.is_none() {
            describe();
        }
        metrics::gauge!("connmgr_connections").set(gauges.connections as f64);
        metrics::gauge!("connmgr_connecting").set(gauges.connecting as f64);
        metrics::gauge!("connmgr_idle_connections").set(gauges.idle as f64);
        metrics::gauge!("connmgr_tracked_peers").set(gauges.tracked_peers as f64);
        metrics::gauge!("connmgr_memory_bytes").set(gauges.memory_usage as f64);
        metrics::gauge!("connmgr_messages_per_second").set(snapshot.messages_per_second);
        metrics::gauge!("connmgr_message_window_seconds").set(snapshot.window.as_secs_f64());
        metrics::counter!("connmgr_messages_total").absolute(snapshot.messages);
        metrics::counter!("connmgr_bytes_sent_total").absolute(snapshot.bytes_sent);
        metrics::counter!("connmgr_bytes_received_total").absolute(snapshot.bytes_received);
        for outcome in [DialOutcome::Ok, DialOutcome::Failed, DialOutcome::TimedOut] {
            metrics::counter!("connmgr_dials_total", "outcome" => outcome.as_str())
                .absolute(snapshot.dials.get(outcome));
        }
        metrics::counter!("connmgr_pool_hits_total").absolute(snapshot.dials.pool_hits);
        metrics::counter!("connmgr_pool_misses_total").absolute(snapshot.dials.pool_misses);

        let counts = snapshot.latency.counts();
        let histogram = metrics::histogram!("connmgr_message_latency_seconds");
        for (i, &count) in counts.iter().enumerate() {
            let before = self
                .previous
                .as_ref()
                .and_then(|p| p.get(i).copied())
                .unwrap_or(0);
            let new = count.saturating_sub(before);
            if new != 0 {
                let secs = buckets::representative(i) as f64 / 1e9;
                histogram.record_many(secs, usize::try_from(new).unwrap_or(usize::MAX));
            }
        }
        self.previous = Some(counts.into());
    }
}

fn describe() {
    use metrics::Unit;
    metrics::describe_gauge!("connmgr_connections", "Active (Connected) connections.");
    metrics::describe_gauge!(
        "connmgr_connecting",
        "Connections being dialed (Connecting)."
    );
    metrics::describe_gauge!(
        "connmgr_idle_connections",
        "Idle connections held in the pool."
    );
    metrics::describe_gauge!("connmgr_tracked_peers", "Peers with a status entry.");
    metrics::describe_gauge!(
        "connmgr_memory_bytes",
        Unit::Bytes,
        "Bytes held by the connection manager's own structures."
    );
    metrics::describe_gauge!(
        "connmgr_messages_per_second",
        "Message throughput over the sliding window."
    );
    metrics::describe_gauge!(
        "connmgr_message_window_seconds",
        Unit::Seconds,
        "Span the sliding-window figures actually cover."
    );
    metrics::describe_counter!("connmgr_messages_total", "Messages recorded.");
    metrics::describe_counter!("connmgr_bytes_sent_total", Unit::Bytes, "Bytes sent.");
    metrics::describe_counter!(
        "connmgr_bytes_received_total",
        Unit::Bytes,
        "Bytes received."
    );
    metrics::describe_counter!("connmgr_dials_total", "Dials by outcome.");
    metrics::describe_counter!(
        "connmgr_pool_hits_total",
        "Connects served by the idle pool."
    );
    metrics::describe_counter!(
        "connmgr_pool_misses_total",
        "Connects the idle pool could not serve."
    );
    metrics::describe_histogram!(
        "connmgr_message_latency_seconds",
        Unit::Seconds,
        "Message latency."
    );
}
