//! Differential test: random operation sequences against a std model that
//! keeps every recorded event (`Vec`) and recomputes totals and window
//! figures from the documented window definition.

use connmgr_metrics::{DialOutcome, ManualClock, Metrics, MetricsConfig};
use proptest::prelude::*;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Message(u64),
    Bytes(u64, u64),
    Dial(usize),
    Advance(u64),
    /// Advance by this many ms (at least 1, so snapshot instants are
    /// distinct), then snapshot.
    Snapshot(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..50_000_000).prop_map(Op::Message),
        1 => (0u64..1 << 20, 0u64..1 << 20).prop_map(|(s, r)| Op::Bytes(s, r)),
        1 => (0usize..5).prop_map(Op::Dial),
        1 => (0u64..4_000).prop_map(Op::Advance),
        2 => (1u64..1_500).prop_map(Op::Snapshot),
    ]
}

const WINDOW: Duration = Duration::from_secs(10);
const SPACING: Duration = Duration::from_secs(1); // 10 s / (11 - 1)

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn metrics_match_the_model(ops in prop::collection::vec(op(), 1..300)) {
        let clock = ManualClock::new();
        let start = clock.now();
        let config = MetricsConfig::default().with_window(WINDOW).with_history(11);
        let m = Metrics::with_config(config, clock.clone()).unwrap();

        // Model: events as (number of snapshots before it, latency ns).
        let mut events: Vec<(usize, u64)> = Vec::new();
        let (mut sent, mut received, mut dials) = (0u64, 0u64, [0u64; 5]);
        // Snapshot instants as offsets from start; index 0 is creation.
        let mut instants = vec![Duration::ZERO];
        let mut now = Duration::ZERO;
        let mut max_gap = Duration::ZERO;

        for op in ops {
            match op {
                Op::Message(ns) => {
                    m.record_message(Duration::from_nanos(ns));
                    events.push((instants.len() - 1, ns));
                }
                Op::Bytes(s, r) => {
                    m.record_bytes(s, r);
                    sent += s;
                    received += r;
                }
                Op::Dial(k) => {
                    m.record_dial(DialOutcome::ALL[k]);
                    dials[k] += 1;
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    now += Duration::from_millis(ms);
                }
                Op::Snapshot(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    now += Duration::from_millis(ms);
                    max_gap = max_gap.max(now - *instants.last().unwrap());
                    let s = m.snapshot();
                    prop_assert_eq!(s.taken_at - start, now);
                    prop_assert_eq!(s.uptime, now);

                    // Totals.
                    prop_assert_eq!(s.messages, events.len() as u64);
                    let latency: u64 = events.iter().map(|e| e.1).sum();
                    prop_assert_eq!(s.latency_sum, Duration::from_nanos(latency));
                    prop_assert_eq!(s.latency.count(), events.len() as u64);
                    prop_assert_eq!((s.bytes_sent, s.bytes_received), (sent, received));
                    for outcome in DialOutcome::ALL {
                        prop_assert_eq!(s.dials.get(outcome), dials[outcome as usize]);
                    }

                    // The window starts at creation or at an earlier snapshot,
                    // at or before now - WINDOW unless younger than that, and
                    // exceeds WINDOW by less than one spacing plus the largest
                    // gap between snapshots.
                    let base = now - s.window;
                    let base_index = instants.iter().position(|&t| t == base);
                    prop_assert!(base_index.is_some(), "window start {:?} is a sample", base);
                    prop_assert!(s.window >= WINDOW.min(now));
                    prop_assert!(s.window < WINDOW + SPACING + max_gap);

                    // Window figures from the events after the baseline.
                    let after: Vec<u64> = events
                        .iter()
                        .filter(|e| e.0 >= base_index.unwrap())
                        .map(|e| e.1)
                        .collect();
                    let n = after.len() as u64;
                    prop_assert_eq!(s.window_messages, n);
                    prop_assert_eq!(s.window_latency.count(), n);
                    let rate = if s.window.is_zero() { 0.0 } else { n as f64 / s.window.as_secs_f64() };
                    prop_assert_eq!(s.messages_per_second, rate);
                    let mean = after.iter().sum::<u64>().checked_div(n).unwrap_or(0);
                    prop_assert_eq!(s.mean_latency, Duration::from_nanos(mean));
                    instants.push(now);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// `docs/failure-modes.md #8`: a clock that jumps back and forth (and windows longer
    /// than the uptime) never makes a snapshot panic, and time as the
    /// aggregator sees it never goes backwards.
    #[test]
    fn out_of_order_instants_never_panic(
        window_secs in 1u64..100_000,
        jumps in prop::collection::vec((-5_000i64..5_000, 0u32..5), 1..100),
    ) {
        let clock = ManualClock::new();
        let start = clock.now();
        let config = MetricsConfig::default().with_window(Duration::from_secs(window_secs));
        let m = Metrics::with_config(config, clock.clone()).unwrap();
        let mut last = start;
        let mut recorded = 0u64;
        for (offset_ms, messages) in jumps {
            let to = if offset_ms >= 0 {
                start + Duration::from_millis(offset_ms as u64)
            } else {
                start.checked_sub(Duration::from_millis(offset_ms.unsigned_abs())).unwrap_or(start)
            };
            clock.set(to);
            for _ in 0..messages {
                m.record_message(Duration::from_millis(1));
            }
            recorded += u64::from(messages);
            let s = m.snapshot();
            prop_assert!(s.taken_at >= last);
            prop_assert!(s.window <= s.uptime);
            prop_assert!(s.messages_per_second.is_finite() && s.messages_per_second >= 0.0);
            prop_assert_eq!(s.messages, recorded);
            last = s.taken_at;
        }
    }
}
