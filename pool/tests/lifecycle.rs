//! Expiry, configuration, bounded memory and drop behaviour.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Conn, Tracker};
use connmgr_pool::{Error, IdlePool, ManualClock, PoolConfig};

const N: usize = if cfg!(miri) { 50 } else { 10_000 };

fn config(ttl: Duration, per_key: usize, total: usize) -> PoolConfig {
    PoolConfig::default()
        .with_ttl(ttl)
        .with_max_idle_per_key(per_key)
        .with_max_idle_total(total)
}

#[test]
fn default_config_matches_the_design() {
    let c = PoolConfig::default();
    assert_eq!(c, config(Duration::from_secs(300), 8, 65_536));
    let pool: IdlePool<u32, ()> = IdlePool::new(Duration::from_secs(300));
    assert_eq!(pool.ttl(), Duration::from_secs(300));
    assert_eq!(pool.config(), &c);
    assert!(pool.is_empty());
}

#[test]
fn invalid_config_names_the_setting() {
    let clock = ManualClock::new();
    let bad = [
        (config(Duration::ZERO, 1, 1), "ttl"),
        (config(Duration::from_secs(1), 0, 1), "max_idle_per_key"),
        (config(Duration::from_secs(1), 1, 0), "max_idle_total"),
        (
            config(Duration::from_secs(1), usize::MAX, 1),
            "max_idle_per_key",
        ),
    ];
    for (cfg, name) in bad {
        let err = IdlePool::<u8, (), _>::with_config(cfg, clock.clone()).unwrap_err();
        let Error::InvalidConfig { setting, .. } = &err else {
            panic!("unexpected {err:?}")
        };
        assert_eq!(*setting, name);
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
#[should_panic(expected = "ttl")]
fn new_with_zero_ttl_panics_with_the_setting_name() {
    let _ = IdlePool::<u8, ()>::new(Duration::ZERO);
}

/// `docs/failure-modes.md #7`: with the manual clock, the idle count is 0 once the TTL
/// has passed and the reaper (driven by `next_expiry`) ran; reaping costs
/// nothing before that.
#[test]
fn idle_count_reaches_zero_after_ttl_with_reaper_driven_by_next_expiry() {
    let clock = ManualClock::new();
    let ttl = Duration::from_secs(30);
    let pool = IdlePool::with_config(config(ttl, 16, N), clock.clone()).unwrap();
    let tracker = Tracker::new(N);
    for id in 0..N {
        pool.put(id as u32 % 1000, tracker.conn(id)).unwrap();
        if id % 100 == 99 {
            clock.advance(Duration::from_millis(10));
        }
    }
    assert_eq!(pool.reap(), 0, "nothing expired yet");
    let mut reaped = 0;
    // A reaper loop: sleep (here: jump) until the next expiry, reap.
    while let Some(due) = pool.next_expiry() {
        assert!(due > clock.now() || pool.reap() > 0);
        clock.set(due);
        reaped += pool.reap();
    }
    assert_eq!(reaped, N);
    assert_eq!(pool.len(), 0);
    assert_eq!(pool.key_entries(), 0, "per-key state freed");
    assert_eq!(pool.fifo_records(), 0);
    tracker.assert_each_dropped_once(N);
}

#[test]
fn take_never_returns_an_expired_connection_even_unreaped() {
    let clock = ManualClock::new();
    let pool = IdlePool::with_config(config(Duration::from_secs(5), 8, 64), clock.clone()).unwrap();
    let tracker = Tracker::new(3);
    pool.put(1u8, tracker.conn(0)).unwrap();
    pool.put(1u8, tracker.conn(1)).unwrap();
    clock.advance(Duration::from_secs(5));
    pool.put(1u8, tracker.conn(2)).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(pool.take(&1).map(|c| c.id), Some(2));
    // The other two expired: dropped by this take, on the way.
    assert_eq!(pool.take(&1), None);
    assert_eq!(tracker.drops(0), 1);
    assert_eq!(tracker.drops(1), 1);
    assert_eq!(pool.reap(), 0);
    tracker.assert_each_dropped_once(3);
}

/// Keys churn: per-key state for keys without idle connections is freed,
/// and memory returns to its baseline.
#[test]
fn key_churn_frees_per_key_state() {
    let clock = ManualClock::new();
    let pool = IdlePool::with_config(config(Duration::from_secs(5), 2, 1 << 20), clock).unwrap();
    let baseline = pool.memory_usage();
    for round in 0..4u64 {
        for k in 0..N as u64 {
            pool.put(round * 1_000_000 + k, k).unwrap();
        }
        assert!(pool.memory_usage() > baseline);
        for k in 0..N as u64 {
            assert_eq!(pool.take(&(round * 1_000_000 + k)), Some(k));
        }
        // Emptied keys keep their entry while their FIFO records are
        // queued; a reaper pass (next_expiry + reap) unlinks them.
        pool.next_expiry();
        assert_eq!(pool.key_entries(), 0);
    }
    pool.next_expiry(); // unlinks the records of taken connections
    assert_eq!(pool.fifo_records(), 0);
    // Bucket arrays keep their peak size; everything else is back.
    let grown = pool.memory_usage() - baseline;
    assert!(
        grown <= N * 64,
        "memory not returned: {grown} bytes over baseline"
    );
}

/// The FIFO keeps a record per put until it reaches the head; churn on
/// one key behind an old idle connection stays bounded, and the old
/// connection is not closed early: once the stripe is over its limit, it is
/// moved to the holdover queue and the records behind it go.
#[test]
fn fifo_records_stay_bounded_under_churn_behind_an_old_connection() {
    let clock = ManualClock::new();
    let pool = IdlePool::with_config(config(Duration::from_secs(60), 4, 8), clock.clone()).unwrap();
    let limit = if cfg!(miri) { 64 } else { 1024 };
    let tracker = Tracker::new(1);
    pool.put(0u32, tracker.conn(0)).unwrap();
    let churn = if cfg!(miri) { 100 } else { 5_000 };
    let mut max = 0;
    for i in 0..churn {
        let c = Tracker::new(1);
        pool.put(1, c.conn(0)).unwrap();
        assert_eq!(pool.take(&1).map(|c| c.id), Some(0), "round {i}");
        max = max.max(pool.fifo_records());
    }
    assert!(max <= limit + 2, "FIFO grew to {max}");
    assert_eq!(tracker.drops(0), 0, "the old connection was closed early");
    assert_eq!(pool.holdover_records(), 1, "it was moved, once");
    assert_eq!(pool.len(), 1);
    // Still due at its own time: the reaper finds it there.
    assert_eq!(
        pool.next_expiry(),
        Some(clock.now() + Duration::from_secs(60))
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(pool.reap(), 1);
    assert_eq!(tracker.drops(0), 1);
    assert_eq!(pool.fifo_records(), 0);
}

/// A moved connection is still taken, freshest first, like any other.
#[test]
fn a_moved_connection_can_be_taken() {
    let clock = ManualClock::new();
    let pool = IdlePool::with_config(config(Duration::from_secs(60), 4, 8), clock).unwrap();
    let limit = if cfg!(miri) { 64 } else { 1024 };
    let old = Tracker::new(1);
    pool.put(0u32, old.conn(0)).unwrap();
    for _ in 0..=limit {
        let c = Tracker::new(1);
        pool.put(1, c.conn(0)).unwrap();
        assert!(pool.take(&1).is_some());
    }
    assert_eq!(pool.holdover_records(), 1);
    let got = pool.take(&0);
    assert_eq!(got.as_ref().map(|c| c.id), Some(0));
    assert_eq!(old.drops(0), 0, "taken, not closed");
    drop(got);
    assert!(pool.is_empty());
    assert_eq!(pool.next_expiry(), None);
    assert_eq!(pool.fifo_records(), 0, "its proxy and records went");
}

/// The holdover queue has its own bound: when more connections than the
/// limit were moved there (each idle through the limit of puts) and then
/// taken while an older one stays idle, the oldest is closed early after
/// all, so memory stays bounded.
#[test]
fn the_holdover_queue_stays_bounded_too() {
    let clock = ManualClock::new();
    let pool = IdlePool::with_config(config(Duration::from_secs(60), 4, 8), clock).unwrap();
    let limit = if cfg!(miri) { 64 } else { 1024 };
    let old = Tracker::new(1);
    pool.put(0u32, old.conn(0)).unwrap();
    let mut max_held = 0;
    let mut round = 0;
    // Each round parks 6 connections (the total cap is 8: the old one, these
    // and the churning one), churns until they are moved, then takes them:
    // 6 dead proxies behind the old one.
    while old.drops(0) == 0 {
        round += 1;
        assert!(round <= limit / 6 + 4, "never evicted");
        for k in 1..=6u32 {
            pool.put(k, Tracker::new(1).conn(0)).unwrap();
        }
        for _ in 0..=limit {
            pool.put(8, Tracker::new(1).conn(0)).unwrap();
            assert!(pool.take(&8).is_some());
        }
        for k in 1..=6u32 {
            assert!(pool.take(&k).is_some(), "moved connections are taken");
        }
        max_held = max_held.max(pool.holdover_records());
    }
    assert!(max_held <= limit, "holdover queue grew to {max_held}");
    assert!(round > limit / 6 - 1, "evicted after {round} rounds only");
}

/// `docs/failure-modes.md #9`: dropping the pool inside `catch_unwind`, and while the
/// dropping thread unwinds from a panic, closes each connection once and
/// does not panic or block.
#[test]
fn drop_while_unwinding_closes_each_connection_once() {
    let tracker = Tracker::new(8);
    let pool: IdlePool<u8, Conn> = IdlePool::new(Duration::from_secs(60));
    for id in 0..8 {
        pool.put((id % 3) as u8, tracker.conn(id)).unwrap();
    }
    let taken = pool.take(&0).unwrap();
    let result = panic::catch_unwind(AssertUnwindSafe(move || {
        let _pool = pool; // dropped during the unwind
        panic!("boom");
    }));
    assert!(result.is_err());
    for id in 0..8 {
        let want = usize::from(id != taken.id);
        assert_eq!(tracker.drops(id), want);
    }
    drop(taken);
    tracker.assert_each_dropped_once(8);
}

#[test]
fn drop_on_another_thread_while_this_one_unwinds() {
    let tracker = Tracker::new(16);
    let pool: Arc<IdlePool<u8, Conn>> = Arc::new(IdlePool::new(Duration::from_secs(60)));
    for id in 0..16 {
        pool.put((id % 4) as u8, tracker.conn(id)).unwrap();
    }
    let p2 = pool.clone();
    let h = thread::spawn(move || {
        let _p = p2;
        panic!("unwinding with a pool handle");
    });
    drop(pool);
    assert!(h.join().is_err());
    tracker.assert_each_dropped_once(16);
}

/// A connection whose destructor panics during `reap` leaves the counters
/// consistent and the other connections intact.
#[test]
fn panicking_destructor_during_reap_keeps_counts_consistent() {
    #[derive(Debug)]
    struct Bomb(bool);
    impl Drop for Bomb {
        fn drop(&mut self) {
            if self.0 && !thread::panicking() {
                panic!("close failed");
            }
        }
    }
    let clock = ManualClock::new();
    let pool = IdlePool::with_config(config(Duration::from_secs(1), 4, 8), clock.clone()).unwrap();
    pool.put(1u8, Bomb(true)).unwrap();
    pool.put(2u8, Bomb(false)).unwrap();
    clock.advance(Duration::from_secs(2));
    let r = panic::catch_unwind(AssertUnwindSafe(|| pool.reap()));
    assert!(r.is_err());
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.len_for(&1), 0);
    // The unwind released the stripe's reaping claim: this reap gets in.
    assert_eq!(pool.reap(), 1);
    assert!(pool.is_empty());
}

/// `docs/failure-modes.md #9`: a destructor that panics while the pool is dropped does
/// not leak the connections queued behind it in the same FIFO stripe.
#[test]
fn a_panicking_destructor_at_pool_drop_leaves_no_connection_open() {
    /// Holds a tracked connection (closed when the bomb drops); the flag
    /// makes its destructor panic.
    #[derive(Debug)]
    struct Bomb(#[allow(dead_code)] Conn, bool);
    impl Drop for Bomb {
        fn drop(&mut self) {
            if self.1 && !thread::panicking() {
                panic!("close failed");
            }
        }
    }
    let tracker = Tracker::new(6);
    let pool = IdlePool::new(Duration::from_secs(60));
    // One thread, so one stripe; the bomb is its oldest record.
    for id in 0..6 {
        pool.put(id as u8, Bomb(tracker.conn(id), id == 0)).unwrap();
    }
    let r = panic::catch_unwind(AssertUnwindSafe(move || drop(pool)));
    assert!(r.is_err(), "the destructor's panic reaches the caller");
    tracker.assert_each_dropped_once(6);
}

/// A key whose `Hash` panics inside `put` leaves no cap reserved: the pool
/// stays empty and takes the next put (here with a total cap of 1).
#[test]
fn a_panicking_key_hash_in_put_gives_its_cap_back() {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Equal by its number; the flag arms one panicking `hash`.
    #[derive(Clone, Debug)]
    struct Key(u8, Arc<AtomicBool>);
    impl PartialEq for Key {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }
    impl Eq for Key {}
    impl Hash for Key {
        fn hash<H: Hasher>(&self, h: &mut H) {
            if self.1.swap(false, Ordering::SeqCst) {
                panic!("hash");
            }
            self.0.hash(h);
        }
    }
    let armed = Arc::new(AtomicBool::new(true));
    let pool =
        IdlePool::with_config(config(Duration::from_secs(60), 1, 1), ManualClock::new()).unwrap();
    let r = panic::catch_unwind(AssertUnwindSafe(|| pool.put(Key(1, armed.clone()), 1u32)));
    assert!(r.is_err());
    assert_eq!(pool.len(), 0);
    assert_eq!(pool.put(Key(2, armed.clone()), 2), Ok(()));
    assert_eq!(pool.take(&Key(2, armed)), Some(2));
}

/// Expired connections nobody reaped still count against the caps; a put
/// that meets a full cap while something is due reaps it and goes in,
/// closing the expired connection.
#[test]
fn a_full_pool_of_expired_connections_takes_a_put() {
    let clock = ManualClock::new();
    let tracker = Tracker::new(4);
    let pool = IdlePool::with_config(config(Duration::from_secs(1), 1, 1), clock.clone()).unwrap();
    pool.put(1u8, tracker.conn(0)).unwrap();
    // Full, nothing due: refused, handed back.
    let back = pool.put(2u8, tracker.conn(1)).unwrap_err();
    assert_eq!(back.id, 1);
    drop(back);
    clock.advance(Duration::from_secs(10));
    // The total cap is full of an expired connection.
    pool.put(2u8, tracker.conn(2)).unwrap();
    assert_eq!(tracker.drops(0), 1, "the expired connection was closed");
    // The per-key cap likewise.
    clock.advance(Duration::from_secs(10));
    pool.put(2u8, tracker.conn(3)).unwrap();
    assert_eq!(tracker.drops(2), 1);
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.take(&2).map(|c| c.id), Some(3));
    tracker.assert_each_dropped_once(4);
}

#[test]
fn debug_output_is_useful() {
    let pool: IdlePool<u8, ()> = IdlePool::new(Duration::from_secs(1));
    let s = format!("{pool:?}");
    assert!(s.contains("IdlePool") && s.contains("len"), "{s}");
}
