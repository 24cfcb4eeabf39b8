//! Prometheus text exposition (format 0.0.4).

use std::fmt::Write;
use std::time::Duration;

use crate::{DialOutcome, Gauges, Snapshot};

/// The exported latency buckets end just below powers of four of
/// nanoseconds, from 2^10 ns (1.024 µs) to 2^36 ns (about 68.7 s). Each
/// power is an exact edge of the internal histogram, and latencies are whole
/// nanoseconds, so "at most `2^p - 1` ns" (the inclusive bound `le` means)
/// is exactly "below `2^p` ns": the exported cumulative counts are exact.
const LE_POWERS: [u32; 14] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36];

/// Renders `snapshot` and the owner's `gauges` in the Prometheus text
/// exposition format, version 0.0.4 (`Content-Type: text/plain;
/// version=0.0.4`).
///
/// Metrics, each preceded by `# HELP` and `# TYPE`:
///
/// | name | type | value |
/// | --- | --- | --- |
/// | `connmgr_connections` | gauge | [`Gauges::connections`] |
/// | `connmgr_connecting` | gauge | [`Gauges::connecting`] |
/// | `connmgr_idle_connections` | gauge | [`Gauges::idle`] |
/// | `connmgr_tracked_peers` | gauge | [`Gauges::tracked_peers`] |
/// | `connmgr_memory_bytes` | gauge | [`Gauges::memory_usage`] |
/// | `connmgr_messages_total` | counter | [`Snapshot::messages`] |
/// | `connmgr_messages_per_second` | gauge | [`Snapshot::messages_per_second`] |
/// | `connmgr_message_window_seconds` | gauge | [`Snapshot::window`] |
/// | `connmgr_message_latency_seconds` | histogram | [`Snapshot::latency`], buckets `le` = 4^k ns - 1 ns for 4^k from 2^10 to 2^36 ns, and `+Inf` |
/// | `connmgr_bytes_sent_total` | counter | [`Snapshot::bytes_sent`] |
/// | `connmgr_bytes_received_total` | counter | [`Snapshot::bytes_received`] |
/// | `connmgr_dials_total{outcome="ok\|failed\|timed_out"}` | counter | [`Snapshot::dials`] |
/// | `connmgr_pool_hits_total` | counter | [`DialCounts::pool_hits`](crate::DialCounts::pool_hits) |
/// | `connmgr_pool_misses_total` | counter | [`DialCounts::pool_misses`](crate::DialCounts::pool_misses) |
///
/// The histogram's `_count` and `+Inf` bucket are the histogram's own
/// count (equal to `connmgr_messages_total` once recording has stopped);
/// `_sum` is [`Snapshot::latency_sum`]. Each bucket's `le` is, as the
/// format defines it, an inclusive upper bound: `le="0.000001023"` counts
/// the latencies of at most 1023 ns, i.e. those below 2^10 ns, so every
/// exported count is exact (a latency of exactly 2^10 ns is in the next).
///
/// **Progress:** wait-free (allocates the string).
pub fn prometheus_text(snapshot: &Snapshot, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    // Writing to a String cannot fail.
    let _ = write_text(&mut out, snapshot, gauges);
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

fn write_text(out: &mut String, s: &Snapshot, g: &Gauges) -> std::fmt::Result {
    let gauges: [(&str, &str, usize); 5] = [
        (
            "connmgr_connections",
            "Active (Connected) connections.",
            g.connections,
        ),
        (
            "connmgr_connecting",
            "Connections being dialed (Connecting).",
            g.connecting,
        ),
        (
            "connmgr_idle_connections",
            "Idle connections held in the pool.",
            g.idle,
        ),
        (
            "connmgr_tracked_peers",
            "Peers with a status entry.",
            g.tracked_peers,
        ),
        (
            "connmgr_memory_bytes",
            "Bytes held by the connection manager's own structures.",
            g.memory_usage,
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help)?;
        writeln!(out, "{name} {value}")?;
    }

    header(
        out,
        "connmgr_messages_total",
        "counter",
        "Messages recorded.",
    )?;
    writeln!(out, "connmgr_messages_total {}", s.messages)?;
    header(
        out,
        "connmgr_messages_per_second",
        "gauge",
        "Message throughput over the sliding window.",
    )?;
    writeln!(
        out,
        "connmgr_messages_per_second {}",
        float(s.messages_per_second)
    )?;
    header(
        out,
        "connmgr_message_window_seconds",
        "gauge",
        "Span the sliding-window figures actually cover.",
    )?;
    writeln!(out, "connmgr_message_window_seconds {}", seconds(s.window))?;

    let name = "connmgr_message_latency_seconds";
    header(out, name, "histogram", "Message latency.")?;
    for power in LE_POWERS {
        let edge: u64 = 1 << power;
        let count = s.latency.count_below(Duration::from_nanos(edge));
        let le = seconds(Duration::from_nanos(edge - 1));
        writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}")?;
    }
    let count = s.latency.count();
    writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}")?;
    writeln!(out, "{name}_sum {}", seconds(s.latency_sum))?;
    writeln!(out, "{name}_count {count}")?;

    header(out, "connmgr_bytes_sent_total", "counter", "Bytes sent.")?;
    writeln!(out, "connmgr_bytes_sent_total {}", s.bytes_sent)?;
    header(
        out,
        "connmgr_bytes_received_total",
        "counter",
        "Bytes received.",
    )?;
    writeln!(out, "connmgr_bytes_received_total {}", s.bytes_received)?;

    header(out, "connmgr_dials_total", "counter", "Dials by outcome.")?;
    for outcome in [DialOutcome::Ok, DialOutcome::Failed, DialOutcome::TimedOut] {
        let label = outcome.as_str();
        writeln!(
            out,
            "connmgr_dials_total{{outcome=\"{label}\"}} {}",
            s.dials.get(outcome)
        )?;
    }
    header(
        out,
        "connmgr_pool_hits_total",
        "counter",
        "Connects served by the idle pool.",
    )?;
    writeln!(out, "connmgr_pool_hits_total {}", s.dials.pool_hits)?;
    header(
        out,
        "connmgr_pool_misses_total",
        "counter",
        "Connects the idle pool could not serve.",
    )?;
    writeln!(out, "connmgr_pool_misses_total {}", s.dials.pool_misses)
}

/// A duration in seconds, exactly, in plain decimal (`0.000001024`).
fn seconds(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return d.as_secs().to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
}

/// A float as Prometheus reads it (`NaN`, `+Inf`, `-Inf` spelled out).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(Duration::from_nanos(1 << 10)), "0.000001024");
        assert_eq!(seconds(Duration::from_secs(3)), "3");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(2.5), "2.5");
    }
}
