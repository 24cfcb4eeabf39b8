// Fuzz body: `Metrics` on a `ManualClock` against exact sums.
//
// Included (`include!`) by `fuzz/fuzz_targets/metrics.rs` and by
// `metrics/tests/fuzz_bodies.rs`; keep it free of inner attributes and
// crate-level items. At every snapshot: totals (messages, latency sum,
// bytes, dial outcomes, histogram count) are exact; the window figures
// follow the documented definition (crate docs, "Snapshots and the sliding
// window"): the baseline is creation or an earlier snapshot's instant, the
// window is within `[min(W, uptime), W + W / (history - 1) + gap)`, the
// window counts, rate and mean are exact for the events after the
// baseline, and p50/p90/p99 are within `Histogram::RELATIVE_ERROR` of the
// true sample of that rank. The clock may jump backwards: time as the
// aggregator sees it never does.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use connmgr_metrics::{
    prometheus_text, DialOutcome, Gauges, Histogram, ManualClock, Metrics, MetricsConfig,
};

#[derive(Arbitrary, Debug)]
pub struct Setup {
    window_ms: u16,
    history: u8,
    stripes_log2: u8,
    shared_log2: u8,
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    /// A latency in nanoseconds, spread over all magnitudes: `mantissa <<
    /// shift` (past `Histogram::MAX_TRACKED` too).
    Message(u16, u8),
    /// The same latency `n` times.
    Messages(u16, u8, u8),
    Bytes(u64, u64),
    Dial(u8),
    Advance(u16),
    /// Clock set back by this many ms (not below the start).
    Back(u16),
    Snapshot,
}

/// Byte totals kept as the aggregator widens them: per-interval sums
/// (between snapshots) wrap at 2^64 in the stripes, totals saturate. (The
/// latency sum does not wrap: the snapshot widens it with the histogram's
/// help, exactly below 2^68 ns per interval, far beyond any input here.)
#[derive(Clone, Copy, Default)]
struct Counter {
    /// Sum since the previous snapshot (exact).
    interval: u128,
    total: u64,
}

impl Counter {
    fn add(&mut self, n: u64) {
        self.interval += u128::from(n);
    }
    fn settle(&mut self) -> u64 {
        let delta = self.interval as u64; // the stripes wrap at 2^64
        self.interval = 0;
        self.total = self.total.saturating_add(delta);
        self.total
    }
}

/// Runs one input; panics on the first answer that differs from the model.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let ops = decode_ops(&mut u);
    let window = Duration::from_millis(u64::from(setup.window_ms % 30_000) + 1);
    let history = usize::from(setup.history % 20) + 2;
    let config = MetricsConfig::default().with_window(window).with_history(history).with_stripes(1 << (setup.stripes_log2 % 4)).with_shared_stripes(1 << (setup.shared_log2 % 3));
    let spacing = window / u32::try_from(history - 1).unwrap();
    let clock = ManualClock::new();
    let start = clock.now();
    let metrics = Metrics::with_config(config, clock.clone()).expect("valid config");
    let max = Histogram::MAX_TRACKED.as_nanos() as u64 - 1;

    // Model: every message as (snapshots taken before it, clamped ns).
    let mut events: Vec<(usize, u64)> = Vec::new();
    let mut latency: u128 = 0;
    let (mut sent, mut received) = (Counter::default(), Counter::default());
    let mut dials = [0u64; 5];
    // Effective snapshot instants (offsets from start); index 0 = creation.
    let mut instants = vec![Duration::ZERO];
    let mut clock_at = Duration::ZERO; // where the manual clock is
    let mut max_gap = Duration::ZERO;

    for op in ops {
        match op {
            Op::Message(mantissa, shift) => {
                let ns = latency_ns(mantissa, shift);
                metrics.record_message(Duration::from_nanos(ns));
                events.push((instants.len() - 1, ns.min(max)));
                latency += u128::from(ns.min(max));
            }
            Op::Messages(mantissa, shift, n) => {
                let ns = latency_ns(mantissa, shift);
                for _ in 0..n {
                    metrics.record_message(Duration::from_nanos(ns));
                    events.push((instants.len() - 1, ns.min(max)));
                    latency += u128::from(ns.min(max));
                }
            }
            Op::Bytes(s, r) => {
                metrics.record_bytes(s, r);
                sent.add(s);
                received.add(r);
            }
            Op::Dial(k) => {
                let k = usize::from(k) % DialOutcome::ALL.len();
                metrics.record_dial(DialOutcome::ALL[k]);
                dials[k] += 1;
            }
            Op::Advance(ms) => {
                clock_at += Duration::from_millis(u64::from(ms));
                clock.set(start + clock_at);
            }
            Op::Back(ms) => {
                clock_at = clock_at.saturating_sub(Duration::from_millis(u64::from(ms)));
                clock.set(start + clock_at);
            }
            Op::Snapshot => {
                let last = *instants.last().unwrap();
                let now = clock_at.max(last); // never goes back
                max_gap = max_gap.max(now - last);
                let s = metrics.snapshot();
                assert_eq!(s.taken_at - start, now, "taken_at");
                assert_eq!(s.uptime, now, "uptime");

                // Totals: exact.
                assert_eq!(s.messages, events.len() as u64, "messages");
                assert_eq!(s.latency.count(), events.len() as u64, "histogram count");
                assert_eq!(s.latency_sum.as_nanos(), latency, "latency sum");
                assert_eq!(s.bytes_sent, sent.settle(), "bytes sent");
                assert_eq!(s.bytes_received, received.settle(), "bytes received");
                for outcome in DialOutcome::ALL {
                    assert_eq!(s.dials.get(outcome), dials[outcome as usize], "{outcome:?}");
                }

                // The window: starts at creation or at an earlier snapshot.
                assert!(s.window <= now, "window longer than uptime");
                let base = now - s.window;
                let Some(base_index) = instants.iter().position(|&t| t == base) else {
                    panic!("window start {base:?} is no sample instant ({instants:?})");
                };
                if now < window {
                    assert_eq!(
                        s.window, now,
                        "younger than the window: it covers the uptime"
                    );
                } else {
                    assert!(s.window >= window, "window {:?} < {window:?}", s.window);
                    assert!(
                        s.window < window + spacing + max_gap,
                        "window {:?} >= {window:?} + {spacing:?} + gap {max_gap:?}",
                        s.window
                    );
                }

                // Window figures: exact over the events after the baseline.
                let mut after: Vec<u64> = events
                    .iter()
                    .filter(|e| e.0 >= base_index)
                    .map(|e| e.1)
                    .collect();
                let n = after.len() as u64;
                assert_eq!(s.window_messages, n, "window messages");
                assert_eq!(s.window_latency.count(), n, "window histogram count");
                let rate = if s.window.is_zero() {
                    0.0
                } else {
                    n as f64 / s.window.as_secs_f64()
                };
                assert_eq!(s.messages_per_second, rate, "messages per second");
                let sum: u128 = after.iter().map(|&x| u128::from(x)).sum();
                let mean = sum.checked_div(u128::from(n)).unwrap_or(0);
                assert_eq!(s.mean_latency.as_nanos(), mean, "mean latency");
                after.sort_unstable();
                for (q, got) in [(0.5, s.p50), (0.9, s.p90), (0.99, s.p99)] {
                    check_quantile(&after, q, got);
                }
                let network = s.network_metrics(3, 1234);
                assert_eq!(network.messages_per_second, s.messages_per_second);
                assert_eq!(network.avg_latency, s.mean_latency);
                assert_eq!((network.connections, network.memory_usage), (3, 1234));
                let text = prometheus_text(&s, &Gauges::default());
                assert!(text.contains(&format!("connmgr_messages_total {}\n", s.messages)));
                assert!(metrics.memory_usage() > 0);
                instants.push(now);
            }
        }
    }
}

fn latency_ns(mantissa: u16, shift: u8) -> u64 {
    u64::from(mantissa)
        .checked_shl(u32::from(shift % 48))
        .unwrap_or(u64::MAX)
}

/// `got` is within `RELATIVE_ERROR` of the sample of rank
/// `max(1, ceil(q * n))` (documented in `Histogram::quantile`).
fn check_quantile(sorted: &[u64], q: f64, got: Option<Duration>) {
    if sorted.is_empty() {
        assert_eq!(got, None, "quantile of an empty window");
        return;
    }
    let n = sorted.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let want = sorted[(rank - 1) as usize] as f64;
    let got = got.expect("non-empty window has quantiles").as_nanos() as f64;
    let tolerance = want * Histogram::RELATIVE_ERROR + 1.0;
    assert!(
        (got - want).abs() <= tolerance,
        "p{}: {got} ns, true sample {want} ns",
        q * 100.0
    );
}

include!("decode.rs");
