//! Property test: every reported quantile is within the stated relative
//! error of the exact sample of that rank.

use connmgr_metrics::{Histogram, ManualClock, Metrics, MetricsConfig};
use proptest::prelude::*;
use std::time::Duration;

/// Latencies spread over every magnitude up to the tracked maximum.
fn latency_nanos() -> impl Strategy<Value = u64> {
    (0u32..40, any::<u64>()).prop_map(|(bits, raw)| raw & ((1u64 << bits) - 1).max(1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn quantiles_are_within_the_stated_relative_error(
        mut values in prop::collection::vec(latency_nanos(), 1..300),
        qs in prop::collection::vec(0.0f64..=1.0, 1..8),
    ) {
        let m = Metrics::with_config(MetricsConfig::default(), ManualClock::new()).unwrap();
        for &v in &values {
            m.record_message(Duration::from_nanos(v));
        }
        let snapshot = m.snapshot();
        values.sort_unstable();
        let n = values.len() as u64;
        let check = |h: &Histogram, q: f64| -> Result<(), TestCaseError> {
            let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
            let exact = values[(rank - 1) as usize] as f64;
            let got = h.quantile(q).unwrap().as_nanos() as f64;
            prop_assert!(
                (got - exact).abs() <= exact * Histogram::RELATIVE_ERROR,
                "q={q} exact={exact} got={got}"
            );
            Ok(())
        };
        for q in qs.into_iter().chain([0.0, 0.5, 0.9, 0.99, 1.0]) {
            check(&snapshot.latency, q)?;
            check(&snapshot.window_latency, q)?;
        }
        // The named quantiles are the window histogram's.
        prop_assert_eq!(snapshot.p90, snapshot.window_latency.quantile(0.9));
        prop_assert_eq!(snapshot.latency.count(), n);
    }
}

#[test]
fn latencies_beyond_the_tracked_range_saturate() {
    let m = Metrics::new();
    m.record_message(Duration::MAX);
    m.record_message(Duration::from_secs(3600));
    let s = m.snapshot();
    let max = Histogram::MAX_TRACKED - Duration::from_nanos(1);
    assert_eq!(s.latency_sum, max * 2);
    let p = s.latency.quantile(1.0).unwrap();
    assert!(p <= Histogram::MAX_TRACKED && p >= max.mul_f64(1.0 - Histogram::RELATIVE_ERROR));
    assert_eq!(Histogram::RELATIVE_ERROR, 1.0 / 32.0);
    assert_eq!(s.latency.quantile(f64::NAN), None);
}

#[test]
fn count_below_is_exact_at_powers_of_two() {
    let m = Metrics::new();
    for v in [1023u64, 1024, 1025, 4095, 4096] {
        m.record_message(Duration::from_nanos(v));
    }
    let s = m.snapshot();
    assert_eq!(s.latency.count_below(Duration::from_nanos(1024)), 1);
    assert_eq!(s.latency.count_below(Duration::from_nanos(4096)), 4);
    assert_eq!(s.latency.buckets().map(|(_, _, c)| c).sum::<u64>(), 5);
}
