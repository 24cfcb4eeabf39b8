//! The sliding window against hand-computed values on a manual clock.

use connmgr_metrics::{Error, ManualClock, Metrics, MetricsConfig};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn ten_second_window() -> (Metrics<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    // Default: 10 s window, 11 samples, so one sample kept per second at most.
    let m = Metrics::with_config(MetricsConfig::default(), clock.clone()).unwrap();
    (m, clock)
}

fn record(m: &Metrics<ManualClock>, n: u32, latency: Duration) {
    for _ in 0..n {
        m.record_message(latency);
    }
}

#[test]
fn rate_and_mean_match_hand_computed_values() {
    let (m, clock) = ten_second_window();

    // t = 2 s: younger than the window, so it covers creation..now.
    record(&m, 10, MS);
    clock.advance(2 * S);
    let s = m.snapshot();
    assert_eq!(s.window, 2 * S);
    assert_eq!(s.window_messages, 10);
    assert_eq!(s.messages_per_second, 5.0); // 10 / 2 s
    assert_eq!(s.mean_latency, MS);

    // t = 12 s: baseline is the sample at 2 s (= 12 - 10).
    record(&m, 20, 3 * MS);
    clock.advance(10 * S);
    let s = m.snapshot();
    assert_eq!(s.window, 10 * S);
    assert_eq!(s.window_messages, 20);
    assert_eq!(s.messages_per_second, 2.0); // 20 / 10 s
    assert_eq!(s.mean_latency, 3 * MS);
    assert_eq!(s.messages, 30);

    // t = 15 s: no sample between 2 s and 5 s, so the baseline is still
    // 2 s and the window covers 13 s: 50 messages, mean (20*3+30*5)/50.
    record(&m, 30, 5 * MS);
    clock.advance(3 * S);
    let s = m.snapshot();
    assert_eq!(s.window, 13 * S);
    assert_eq!(s.window_messages, 50);
    assert_eq!(s.messages_per_second, 50.0 / 13.0);
    assert_eq!(s.mean_latency, Duration::from_micros(4_200));

    // t = 22 s: the baseline moves to the sample at 12 s; 10 s covered, the
    // 30 messages after it: rate 3/s, mean 5 ms.
    clock.advance(7 * S);
    let s = m.snapshot();
    assert_eq!(s.window, 10 * S);
    assert_eq!(s.window_messages, 30);
    assert_eq!(s.messages_per_second, 3.0);
    assert_eq!(s.mean_latency, 5 * MS);
    assert_eq!(s.uptime, 22 * S);

    // t = 40 s, idle since: rate 0, mean zero, quantiles none.
    clock.advance(18 * S);
    let s = m.snapshot();
    assert_eq!(s.window_messages, 0);
    assert_eq!(s.messages_per_second, 0.0);
    assert_eq!(s.mean_latency, Duration::ZERO);
    assert_eq!((s.p50, s.p99), (None, None));
    assert_eq!(s.messages, 60, "totals are since creation");
}

#[test]
fn window_quantiles_cover_only_the_window() {
    let (m, clock) = ten_second_window();
    record(&m, 100, 100 * MS);
    clock.advance(S);
    m.snapshot(); // sample at 1 s
    clock.advance(10 * S);
    record(&m, 100, MS);
    let s = m.snapshot(); // t = 11 s, baseline 1 s
    assert_eq!(s.window_messages, 100);
    let p99 = s.p99.unwrap();
    assert!(
        p99 >= Duration::from_micros(968) && p99 <= Duration::from_micros(1_032),
        "{p99:?}"
    );
    assert_eq!(
        s.latency.count(),
        200,
        "the cumulative histogram keeps everything"
    );
}

#[test]
fn frequent_snapshots_keep_the_window_within_one_sample_spacing() {
    let (m, clock) = ten_second_window();
    for step in 0..5_000u32 {
        m.record_message(MS);
        clock.advance(7 * MS);
        let s = m.snapshot();
        if s.uptime >= 10 * S + S {
            assert!(
                s.window >= 10 * S && s.window <= 11 * S,
                "step {step}: {:?}",
                s.window
            );
            // One message per 7 ms: about 142.9/s, up to one spacing off.
            assert!(
                (s.messages_per_second - 1000.0 / 7.0).abs() < 1.0,
                "{}",
                s.messages_per_second
            );
        }
    }
    // The ring is bounded: memory does not grow with the number of snapshots.
    let before = m.memory_usage();
    for _ in 0..1_000 {
        clock.advance(3 * MS);
        m.snapshot();
    }
    assert_eq!(m.memory_usage(), before);
}

#[test]
fn a_clock_going_backwards_neither_panics_nor_shrinks_time() {
    let (m, clock) = ten_second_window();
    let start = clock.now();
    record(&m, 4, MS);
    clock.advance(4 * S);
    let first = m.snapshot();
    clock.set(
        start
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or(start),
    ); // before the last snapshot
    record(&m, 4, MS);
    let s = m.snapshot();
    assert_eq!(
        s.taken_at, first.taken_at,
        "now is clamped to the newest instant seen"
    );
    assert_eq!(s.messages, 8);
    assert!(s.messages_per_second.is_finite());
    clock.advance(Duration::from_secs(u64::MAX)); // overflowing Instant: ignored
    clock.set(start + 20 * S);
    let s = m.snapshot();
    assert_eq!(s.uptime, 20 * S);
}

#[test]
fn a_snapshot_at_creation_reports_a_zero_span_and_zero_rate() {
    let (m, _clock) = ten_second_window();
    m.record_message(MS);
    let s = m.snapshot();
    assert_eq!(s.window, Duration::ZERO);
    assert_eq!(s.messages_per_second, 0.0);
    assert_eq!(s.mean_latency, MS);
}

#[test]
fn network_metrics_combine_the_window_with_the_owners_figures() {
    let (m, clock) = ten_second_window();
    record(&m, 30, 2 * MS);
    clock.advance(3 * S);
    let n = m.snapshot().network_metrics(7, 12_345);
    assert_eq!(n.messages_per_second, 10.0);
    assert_eq!(n.avg_latency, 2 * MS);
    assert_eq!((n.connections, n.memory_usage), (7, 12_345));
}

#[test]
fn invalid_configs_name_the_setting() {
    let bad = |config: MetricsConfig| Metrics::with_config(config, ManualClock::new()).unwrap_err();
    let zero_window = bad(MetricsConfig::default().with_window(Duration::ZERO));
    assert!(matches!(
        zero_window,
        Error::InvalidConfig {
            setting: "window",
            ..
        }
    ));
    assert_eq!(
        zero_window.to_string(),
        "invalid metrics configuration: `window` must be greater than zero"
    );
    let stripes = bad(MetricsConfig::default().with_stripes(3));
    assert!(stripes.to_string().contains("`stripes`"));
    let shared = bad(MetricsConfig::default().with_shared_stripes(0));
    assert!(shared.to_string().contains("`shared_stripes`"));
    let history = bad(MetricsConfig::default().with_history(1));
    assert!(history.to_string().contains("`history`"));
}

#[test]
fn default_metrics_is_send_sync_and_debug() {
    fn assert_send_sync<T: Send + Sync + std::fmt::Debug>(_: &T) {}
    let m = Metrics::default();
    assert_send_sync(&m);
    assert!(format!("{m:?}").contains("window"));
    m.record_message(MS);
    assert_eq!(m.snapshot().messages, 1);
}

/// The documented bound `W <= window < W + W / (history - 1) + d` with a
/// window the spacing does not divide (7 ns over 4 gaps). The spacing is
/// rounded up: rounded down (1 ns), the full ring would span only 4 ns of
/// the 7 ns window, and snapshots taken every nanosecond would report
/// windows of 10 ns (bound: 9.75 ns).
#[test]
fn window_bound_holds_when_the_history_does_not_divide_the_window() {
    let clock = ManualClock::new();
    let w: u32 = 7;
    let gaps: u32 = 4; // history 5
    let config = MetricsConfig::default()
        .with_window(Duration::from_nanos(w.into()))
        .with_history(gaps as usize + 1);
    let m = Metrics::with_config(config, clock.clone()).unwrap();
    let d = Duration::from_nanos(1);
    for step in 1..=200u32 {
        clock.advance(d);
        let s = m.snapshot();
        if step >= w {
            let window = s.window.as_nanos();
            assert!(window >= u128::from(w), "step {step}: {window} ns");
            // window < W + W / gaps + d, multiplied through by `gaps`.
            assert!(
                window * u128::from(gaps) < u128::from(w * gaps + w + gaps),
                "step {step}: {window} ns"
            );
        }
    }
}
