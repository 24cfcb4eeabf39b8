#![allow(missing_docs)] // criterion_group! generates undocumented items
//! connmgr-metrics' striped `Metrics::record_message` side by side with
//! what a user would pick instead: one shared pair of `AtomicU64`s (count
//! and latency sum, relaxed `fetch_add`) and a `parking_lot::RwLock` around
//! a metrics struct (the reference implementation's approach), at 1 and 2
//! threads. Plus the cost of `snapshot()`.
//!
//! `cargo bench -p connmgr-benches --bench metrics`. Times are per
//! operation as each thread sees it: every thread runs the full iteration
//! count after a common start barrier, and the slowest thread's time is
//! reported, so at 2 threads a flat figure means perfect scaling.
//!
//! On a shared 2-vCPU machine other processes time-share the cores, which
//! inflates wall time at 2 threads even for code that scales perfectly. So
//! `metrics/record_message_cpu` repeats the lock-free variants timing each
//! thread's own CPU time (Linux `/proc/thread-self/schedstat`; wall time
//! where that is unavailable). The `RwLock` baseline is left out there:
//! time parked on the lock is not CPU time.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use connmgr_metrics::{Metrics, MetricsConfig, SystemClock};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use parking_lot::RwLock;

const THREADS: [usize; 2] = [1, 2];

/// Latencies cycled through, so the histogram index varies as it would.
const LATENCIES: [Duration; 8] = [
    Duration::from_micros(150),
    Duration::from_micros(420),
    Duration::from_millis(1),
    Duration::from_micros(2_300),
    Duration::from_micros(90),
    Duration::from_millis(12),
    Duration::from_micros(700),
    Duration::from_micros(5_100),
];

/// The baseline a user might write: one shared counter pair.
#[derive(Default)]
struct AtomicPair {
    messages: AtomicU64,
    latency_nanos: AtomicU64,
}

/// The reference's approach: a metrics struct behind a `RwLock`.
#[derive(Default)]
struct Locked {
    messages: u64,
    latency_total: Duration,
}

/// How a thread's time is measured.
#[derive(Clone, Copy)]
enum Timer {
    /// Wall-clock time.
    Wall,
    /// The thread's own CPU time (wall time if the OS does not say).
    ThreadCpu,
}

/// This thread's CPU time so far, from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Times `iters` calls of `op` on the current thread.
fn time_loop(iters: u64, timer: Timer, op: &impl Fn(u64)) -> Duration {
    let cpu_start = match timer {
        Timer::ThreadCpu => thread_cpu(),
        Timer::Wall => None,
    };
    let start = Instant::now();
    for i in 0..iters {
        op(i);
    }
    let wall = start.elapsed();
    match (cpu_start, thread_cpu()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => wall,
    }
}

/// Runs `op(i)` for `i in 0..iters` on each of `threads` threads, started
/// together; returns the slowest thread's time. Not the shared
/// `connmgr_benches::run_threads`: the per-thread-cost groups time each
/// thread by its own CPU clock (`Timer::ThreadCpu`), so a thread descheduled
/// on this 2-core machine does not count time it was not running.
fn run_threads(threads: usize, iters: u64, timer: Timer, op: &(impl Fn(u64) + Sync)) -> Duration {
    if threads == 1 {
        op(0); // warm-up (takes the thread's slot)
        return time_loop(iters, timer, op);
    }
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    op(0);
                    barrier.wait();
                    time_loop(iters, timer, op)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap_or_default()
    })
}

fn record_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics/record_message");
    group.measurement_time(Duration::from_secs(3));
    let ours = Metrics::new();
    let pair = AtomicPair::default();
    let locked = RwLock::new(Locked::default());
    for threads in THREADS {
        group.bench_with_input(BenchmarkId::new("connmgr", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                run_threads(t, iters, Timer::Wall, &|i| {
                    ours.record_message(black_box(LATENCIES[(i & 7) as usize]));
                })
            });
        });
        group.bench_with_input(
            BenchmarkId::new("atomic_pair", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| {
                    run_threads(t, iters, Timer::Wall, &|i| {
                        let latency = black_box(LATENCIES[(i & 7) as usize]);
                        pair.messages.fetch_add(1, Relaxed);
                        pair.latency_nanos
                            .fetch_add(latency.as_nanos() as u64, Relaxed);
                    })
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("rwlock", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                run_threads(t, iters, Timer::Wall, &|i| {
                    let latency = black_box(LATENCIES[(i & 7) as usize]);
                    let mut m = locked.write();
                    m.messages += 1;
                    m.latency_total += latency;
                })
            });
        });
    }
    group.finish();
    black_box((
        ours.snapshot().messages,
        pair.messages.load(Relaxed),
        locked.read().messages,
    ));
}

fn record_message_cpu(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics/record_message_cpu");
    group.measurement_time(Duration::from_secs(3));
    let ours = Metrics::new();
    let pair = AtomicPair::default();
    for threads in THREADS {
        group.bench_with_input(BenchmarkId::new("connmgr", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                run_threads(t, iters, Timer::ThreadCpu, &|i| {
                    ours.record_message(black_box(LATENCIES[(i & 7) as usize]));
                })
            });
        });
        group.bench_with_input(
            BenchmarkId::new("atomic_pair", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| {
                    run_threads(t, iters, Timer::ThreadCpu, &|i| {
                        let latency = black_box(LATENCIES[(i & 7) as usize]);
                        pair.messages.fetch_add(1, Relaxed);
                        pair.latency_nanos
                            .fetch_add(latency.as_nanos() as u64, Relaxed);
                    })
                });
            },
        );
    }
    group.finish();
    black_box((ours.snapshot().messages, pair.messages.load(Relaxed)));
}

fn snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics/snapshot");
    let config = MetricsConfig::default();
    let stripes = config.stripes + config.shared_stripes;
    let metrics = Metrics::with_config(config, SystemClock).unwrap();
    for (i, latency) in LATENCIES.iter().cycle().take(10_000).enumerate() {
        metrics.record_message(*latency);
        metrics.record_bytes(i as u64, 2 * i as u64);
    }
    group.bench_function(
        BenchmarkId::new("connmgr", format!("{stripes}_stripes")),
        |b| b.iter(|| black_box(metrics.snapshot())),
    );
    group.finish();
}

criterion_group!(benches, record_message, record_message_cpu, snapshot);
criterion_main!(benches);
