//! Loom models of recording against snapshots, stripe sharing, slot
//! recycling and concurrent snapshots.
//!
//! Tiny configuration: one owned stripe, one shared stripe, history 2, and
//! under `cfg(loom)` the crate shrinks the histogram to 8 buckets and
//! `connmgr_core::thread_slot` to 4 recycled numbers. A fresh aggregator
//! per model; the slot bitmap is a loom `lazy_static`, fresh per execution.
//!
//! Two loom constraints shape the models: loom drops lazy statics before
//! the main thread's thread-locals, so the main thread only snapshots and
//! never records; and loom runs thread-local destructors outside its
//! scheduler, so each spawned thread gives its slot back explicitly as its
//! last act (`loom_hooks::release_thread_slot`, the same code the
//! destructor runs).
//!
//! Weakenings tried once, each making a model fail as it should:
//! * The shared-stripe path using the owned path's plain load + store
//!   instead of `fetch_add` (`add` in `src/raw/stripe.rs` ignoring
//!   `exclusive`): `threads_sharing_a_stripe_lose_nothing` fails, loom
//!   finding the interleaving where two threads both load 0 and store 1
//!   (total 2 instead of 3).
//! * `snapshot` skipping the shared stripes (iterating `owned` only):
//!   all three models fail their exact totals after the joins.
//! * Slot numbers not unique among live threads (`acquire` in
//!   `core/src/thread_slot.rs` always handing out 0, so two live threads "own" one
//!   stripe and both use load + store): all three models fail with lost
//!   adds, `recycled_slot_keeps_the_previous_owners_counts` among them.
//!
//! * The slot handoff without happens-before: `release` and `acquire` in
//!   `core/src/thread_slot.rs` clearing and taking the bit with `Relaxed`
//!   instead of `Release`/`Acquire`: the first three models fail, a thread
//!   that reuses an exited thread's slot loading its owned stripe's stale
//!   0. With `Release`/`Acquire` they pass. (`a` and `b` of
//!   `recycled_slot_keeps_the_previous_owners_counts` overlap, so the
//!   handoff is exercised there even though the join orders `c` after `a`.)
//! * `snapshot` summing the stripes before taking its mutex (instead of
//!   under it): `concurrent_snapshots_never_wrap_the_totals` fails, the
//!   snapshot that locks second widening an older reading into a delta of
//!   about 2^64 (a latency sum of 2^64 ns + 1 ns). The other three models
//!   pass, as their snapshots all run on one thread.
//!
//! (The first weakening leaves `record_vs_snapshot` passing, as expected:
//! with one owned and one shared stripe its two threads never share one.)
#![cfg(loom)]

use connmgr_metrics::loom_hooks::release_thread_slot;
use connmgr_metrics::{DialOutcome, ManualClock, Metrics, MetricsConfig};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

fn tiny() -> Arc<Metrics<ManualClock>> {
    let config = MetricsConfig::default()
        .with_window(Duration::from_secs(1))
        .with_stripes(1)
        .with_shared_stripes(1)
        .with_history(2);
    Arc::new(Metrics::with_config(config, ManualClock::new()).unwrap())
}

/// Spawns a thread that runs `f` on the aggregator, then gives its slot back.
fn worker(
    m: &Arc<Metrics<ManualClock>>,
    f: impl FnOnce(&Metrics<ManualClock>) + Send + 'static,
) -> thread::JoinHandle<()> {
    let m = m.clone();
    thread::spawn(move || {
        f(&m);
        release_thread_slot();
    })
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(2);
    builder.check(f);
}

/// Two recording threads against two concurrent snapshots: every total a
/// snapshot reads is within what was recorded (never above the final value,
/// never decreasing between snapshots), and once both threads are joined
/// the totals are exact.
#[test]
fn record_vs_snapshot() {
    model(|| {
        let m = tiny();
        let workers: Vec<_> = (0..2u64)
            .map(|id| {
                worker(&m, move |m| {
                    m.record_message(Duration::from_nanos(id + 1));
                    m.record_bytes(1, 0);
                    m.record_dial(DialOutcome::Ok);
                })
            })
            .collect();
        let first = m.snapshot();
        let second = m.snapshot();
        assert!(first.messages <= 2 && first.bytes_sent <= 2 && first.dials.ok <= 2);
        assert!(second.messages >= first.messages);
        assert!(second.bytes_sent >= first.bytes_sent);
        assert!(second.dials.ok >= first.dials.ok);
        assert!(second.latency.count() >= first.latency.count());
        for w in workers {
            w.join().unwrap();
        }
        let last = m.snapshot();
        assert_eq!(last.messages, 2);
        assert_eq!(last.latency.count(), 2);
        assert_eq!(last.latency_sum, Duration::from_nanos(3));
        assert_eq!(last.bytes_sent, 2);
        assert_eq!(last.dials.ok, 2);
    });
}

/// Three threads, one owned stripe: whenever they overlap, at least two
/// hash onto the one shared stripe and race their adds there.
#[test]
fn threads_sharing_a_stripe_lose_nothing() {
    model(|| {
        let m = tiny();
        let workers: Vec<_> = (0..3)
            .map(|_| worker(&m, |m| m.record_bytes(1, 0)))
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(m.snapshot().bytes_sent, 3);
    });
}

/// A thread exits while others start: a later thread may take its
/// recycled slot (and owned stripe, written with plain load + store) and
/// must build on all of its adds.
#[test]
fn recycled_slot_keeps_the_previous_owners_counts() {
    model(|| {
        let m = tiny();
        let a = worker(&m, |m| m.record_bytes(1, 0));
        let b = worker(&m, |m| m.record_bytes(1, 0));
        a.join().unwrap();
        let c = worker(&m, |m| m.record_bytes(1, 0));
        b.join().unwrap();
        c.join().unwrap();
        assert_eq!(m.snapshot().bytes_sent, 3);
    });
}

/// Two threads snapshot while a third records. The snapshot mutex orders
/// the two sums: the one that takes it second must not read a stripe older
/// than the first did, or the wrapping delta it widens would be about 2^64
/// and every total would saturate at `u64::MAX` for good.
#[test]
fn concurrent_snapshots_never_wrap_the_totals() {
    model(|| {
        let m = tiny();
        let recorder = worker(&m, |m| m.record_message(Duration::from_nanos(1)));
        let snapshotters: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                thread::spawn(move || {
                    let s = m.snapshot();
                    assert!(s.messages <= 1, "{} messages", s.messages);
                })
            })
            .collect();
        recorder.join().unwrap();
        for s in snapshotters {
            s.join().unwrap();
        }
        let last = m.snapshot();
        assert_eq!(last.messages, 1);
        assert_eq!(last.latency_sum, Duration::from_nanos(1));
    });
}
