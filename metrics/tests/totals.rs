//! Exact totals after concurrent recording: many threads at once, threads
//! that exit so their slots are recycled, and more threads than stripes so
//! the shared fallback is used.

use connmgr_metrics::{DialOutcome, Histogram, ManualClock, Metrics, MetricsConfig};
use std::sync::Barrier;
use std::time::Duration;

fn metrics(stripes: usize, shared_stripes: usize) -> Metrics<ManualClock> {
    let config = MetricsConfig::default()
        .with_stripes(stripes)
        .with_shared_stripes(shared_stripes);
    Metrics::with_config(config, ManualClock::new()).unwrap()
}

/// What one worker records; `id` varies the values so a lost or misplaced
/// add shows up in the sums.
fn work(m: &Metrics<ManualClock>, id: u64, ops: u64) {
    for i in 0..ops {
        m.record_message(Duration::from_nanos(id * 1000 + i % 1000));
        m.record_bytes(id + 1, 2 * id + 1);
        m.record_dial(DialOutcome::ALL[(i % 5) as usize]);
    }
}

fn check(m: &Metrics<ManualClock>, ids: impl Iterator<Item = u64> + Clone, ops: u64) {
    let s = m.snapshot();
    let n = ids.clone().count() as u64;
    assert_eq!(s.messages, n * ops);
    assert_eq!(s.latency.count(), n * ops, "histogram holds every message");
    let latency: u64 = ids
        .clone()
        .map(|id| (0..ops).map(|i| id * 1000 + i % 1000).sum::<u64>())
        .sum();
    assert_eq!(s.latency_sum, Duration::from_nanos(latency));
    assert_eq!(
        s.bytes_sent,
        ids.clone().map(|id| (id + 1) * ops).sum::<u64>()
    );
    assert_eq!(
        s.bytes_received,
        ids.map(|id| (2 * id + 1) * ops).sum::<u64>()
    );
    let per_outcome = n * (ops / 5);
    for outcome in DialOutcome::ALL {
        assert_eq!(s.dials.get(outcome), per_outcome, "{outcome:?}");
    }
    // A second snapshot with no activity in between changes no total.
    let again = m.snapshot();
    assert_eq!(
        (again.messages, again.bytes_sent, again.dials),
        (s.messages, s.bytes_sent, s.dials)
    );
}

#[test]
fn concurrent_threads_totals_are_exact() {
    const THREADS: u64 = 8;
    const OPS: u64 = 20_000;
    let m = metrics(8, 2);
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for id in 0..THREADS {
            let (m, barrier) = (&m, &barrier);
            s.spawn(move || {
                m.record_bytes(0, 0); // take a slot before the others start
                barrier.wait();
                work(m, id, OPS);
            });
        }
    });
    check(&m, 0..THREADS, OPS);
}

#[test]
fn exiting_threads_recycle_slots_without_losing_counts() {
    // 40 waves of 3 short-lived threads: slots are released and reused
    // many times while other waves are still recording.
    const WAVES: u64 = 40;
    const PER_WAVE: u64 = 3;
    const OPS: u64 = 1_000;
    let m = metrics(2, 1);
    std::thread::scope(|s| {
        let mut previous = Vec::new();
        for wave in 0..WAVES {
            let current: Vec<_> = (0..PER_WAVE)
                .map(|k| {
                    let m = &m;
                    s.spawn(move || work(m, wave * PER_WAVE + k, OPS))
                })
                .collect();
            // Overlap each wave with the previous one, then let it exit.
            for handle in previous.drain(..) {
                std::thread::ScopedJoinHandle::join(handle).unwrap();
            }
            previous = current;
        }
    });
    check(&m, 0..WAVES * PER_WAVE, OPS);
}

#[test]
fn more_threads_than_stripes_fall_back_to_shared_stripes_exactly() {
    const THREADS: u64 = 24;
    const OPS: u64 = 5_000;
    let m = metrics(1, 2); // one owned stripe: at least 23 threads share
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for id in 0..THREADS {
            let (m, barrier) = (&m, &barrier);
            s.spawn(move || {
                m.record_bytes(0, 0); // take a slot before the others start
                barrier.wait();
                work(m, id, OPS);
            });
        }
    });
    check(&m, 0..THREADS, OPS);
}

#[test]
fn snapshots_during_recording_never_go_backwards() {
    let m = metrics(2, 1);
    std::thread::scope(|s| {
        for id in 0..2 {
            let m = &m;
            s.spawn(move || work(m, id, 50_000));
        }
        let mut last = 0;
        for _ in 0..200 {
            let now = m.snapshot().messages;
            assert!(now >= last, "messages went from {last} to {now}");
            last = now;
        }
    });
    assert_eq!(m.snapshot().messages, 100_000);
}

/// A stripe's latency sum is a wrapping `u64` of nanoseconds: 2^24 latencies
/// at the clamp (`Duration::MAX`, ~18.3 min each) wrap it between two
/// snapshots. The snapshot must still widen it exactly, not report a sum
/// 2^64 ns short and a mean latency of a few hundred microseconds.
#[test]
fn latency_sum_past_two_to_the_64_ns_between_snapshots_stays_exact() {
    let clock = ManualClock::new();
    let m = Metrics::with_config(MetricsConfig::default(), clock.clone()).unwrap();
    let clamped = Histogram::MAX_TRACKED - Duration::from_nanos(1);
    let n: u32 = (1 << 24) + 5; // (2^24 + 5) * (2^40 - 1) ns > 2^64 ns
    for _ in 0..n {
        m.record_message(Duration::MAX);
    }
    clock.advance(Duration::from_secs(1));
    let s = m.snapshot();
    assert_eq!(s.messages, u64::from(n));
    assert_eq!(s.latency_sum, clamped * n);
    assert_eq!(s.mean_latency, clamped);
    // And once more, on top of the widened total.
    for _ in 0..n {
        m.record_message(Duration::MAX);
    }
    m.record_message(Duration::from_nanos(7));
    clock.advance(Duration::from_secs(1));
    let s = m.snapshot();
    assert_eq!(s.latency_sum, clamped * n * 2 + Duration::from_nanos(7));
    assert_eq!(s.window_messages, 2 * u64::from(n) + 1);
}
