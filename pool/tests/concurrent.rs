//! Drop tracking under concurrency: every connection is dropped exactly
//! once and a connection taken is never handed out again (`docs/failure-modes.md #11`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::{Conn, Tracker};
use connmgr_pool::{IdlePool, ManualClock, PoolConfig};

const THREADS: usize = if cfg!(miri) { 2 } else { 4 };
const PER_THREAD: usize = if cfg!(miri) { 40 } else { 20_000 };
const KEYS: u64 = 8;

fn pool(clock: &ManualClock, per_key: usize, total: usize) -> IdlePool<u64, Conn, ManualClock> {
    let config = PoolConfig::default()
        .with_ttl(Duration::from_millis(50))
        .with_max_idle_per_key(per_key)
        .with_max_idle_total(total);
    IdlePool::with_config(config, clock.clone()).unwrap()
}

/// Threads put, take, take_if, reap, clear and advance the clock at once;
/// afterwards (and after the pool is dropped) each connection was dropped
/// exactly once, every taken id is distinct, and caps were never exceeded.
#[test]
fn put_take_reap_race_drops_each_connection_once() {
    let clock = ManualClock::new();
    let n = THREADS * PER_THREAD;
    let tracker = Tracker::new(n);
    let pool = pool(&clock, 4, 16);
    let taken: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let max_seen = AtomicUsize::new(0);
    let barrier = Barrier::new(THREADS + 1);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, tracker, taken, barrier) = (&pool, &tracker, &taken, &barrier);
            let (clock, max_seen) = (&clock, &max_seen);
            s.spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                for i in 0..PER_THREAD {
                    let id = t * PER_THREAD + i;
                    let key = (id as u64 * 7 + t as u64) % KEYS;
                    drop(pool.put(key, tracker.conn(id)));
                    max_seen.fetch_max(pool.len(), Ordering::Relaxed);
                    let other = (key + 1) % KEYS;
                    match i % 5 {
                        0 | 1 => mine.extend(pool.take(&other).map(|c| c.id)),
                        2 => mine.extend(pool.take_if(&key, |c| c.id % 2 == 0).map(|c| c.id)),
                        3 => {
                            pool.reap();
                        }
                        _ => {
                            if i % 97 == 0 {
                                pool.clear();
                            }
                            clock.advance(Duration::from_millis(1));
                            pool.next_expiry();
                        }
                    }
                    assert!(pool.len_for(&key) <= 4);
                }
                taken.lock().unwrap().extend(mine);
            });
        }
        barrier.wait();
    });
    assert!(max_seen.load(Ordering::Relaxed) <= 16, "total cap exceeded");
    let mut taken = taken.into_inner().unwrap();
    let count = taken.len();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), count, "a connection was handed out twice");
    for &id in &taken {
        assert_eq!(
            tracker.drops(id),
            1,
            "taken connection {id} not dropped by its taker"
        );
    }
    let remaining = pool.len();
    assert_eq!(
        remaining,
        (0..KEYS).map(|k| pool.len_for(&k)).sum::<usize>()
    );
    drop(pool);
    tracker.assert_each_dropped_once(n);
}

/// Exact caps under contention: many threads put to one key; the number
/// accepted never exceeds the cap, and refused connections come back.
#[test]
fn caps_hold_exactly_under_contention() {
    let clock = ManualClock::new();
    let tracker = Tracker::new(THREADS * 64);
    let pool = pool(&clock, 5, 7);
    let accepted = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, tracker, accepted) = (&pool, &tracker, &accepted);
            s.spawn(move || {
                for i in 0..64 {
                    let id = t * 64 + i;
                    match pool.put((i % 2) as u64, tracker.conn(id)) {
                        Ok(()) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(c) => assert_eq!(c.id, id),
                    }
                }
            });
        }
    });
    assert_eq!(accepted.load(Ordering::Relaxed), 7);
    assert_eq!(pool.len(), 7);
    assert!(pool.len_for(&0) <= 5 && pool.len_for(&1) <= 5);
    assert_eq!(pool.clear(), 7);
    drop(pool);
    tracker.assert_each_dropped_once(THREADS * 64);
}

/// Two threads race to take the single connection of a key, many times:
/// exactly one wins each round (stale/ABA guard).
#[test]
fn racing_takers_never_share_a_connection() {
    let rounds = if cfg!(miri) { 10 } else { 2_000 };
    let tracker = Tracker::new(rounds);
    let pool: Arc<IdlePool<u8, Conn>> = Arc::new(IdlePool::new(Duration::from_secs(60)));
    let barrier = Arc::new(Barrier::new(2));
    let (tx, rx) = std::sync::mpsc::channel::<Option<usize>>();
    let other = {
        let (pool, barrier, tx) = (pool.clone(), barrier.clone(), tx.clone());
        thread::spawn(move || {
            for _ in 0..rounds {
                barrier.wait();
                tx.send(pool.take(&1).map(|c| c.id)).unwrap();
                barrier.wait();
            }
        })
    };
    for id in 0..rounds {
        pool.put(1, tracker.conn(id)).unwrap();
        barrier.wait();
        let mine = pool.take(&1).map(|c| c.id);
        let theirs = rx.recv().unwrap();
        assert!(
            mine.is_some() != theirs.is_some(),
            "round {id}: {mine:?} vs {theirs:?}"
        );
        assert_eq!(mine.or(theirs), Some(id));
        barrier.wait();
    }
    other.join().unwrap();
    tracker.assert_each_dropped_once(rounds);
    pool.next_expiry(); // unlinks the records of taken connections
    assert_eq!(pool.key_entries(), 0);
}

/// Concurrent reapers split the work: expired connections in one stripe
/// (all put by one thread) and in several (put by several threads) are
/// each closed by exactly one of the reapers, their counts add up, and
/// when they have all returned nothing expired is left.
#[test]
fn concurrent_reapers_close_each_expired_connection_once() {
    let n = if cfg!(miri) { 64 } else { 20_000 };
    for putters in [1, THREADS] {
        let clock = ManualClock::new();
        let pool = pool(&clock, n, n);
        let tracker = Tracker::new(n);
        thread::scope(|s| {
            for t in 0..putters {
                let (pool, tracker) = (&pool, &tracker);
                s.spawn(move || {
                    for id in (t..n).step_by(putters) {
                        pool.put(id as u64 % KEYS, tracker.conn(id)).unwrap();
                    }
                });
            }
        });
        clock.advance(Duration::from_secs(1));
        let start = Barrier::new(THREADS);
        let closed: usize = thread::scope(|s| {
            let reapers: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        pool.reap()
                    })
                })
                .collect();
            reapers.into_iter().map(|r| r.join().unwrap()).sum()
        });
        assert_eq!(closed, n, "{putters} putter(s)");
        assert!(pool.is_empty());
        assert_eq!(pool.fifo_records(), 0);
        tracker.assert_each_dropped_once(n);
    }
}

/// Connections idle at the head of a busy stripe are moved, never closed
/// early, while their stripe churns past its record limit and other
/// threads take them, reap and look for the next expiry; once their TTL
/// has passed, one reap closes every one still idle, each exactly once.
#[test]
fn idle_connections_behind_churn_are_moved_not_closed() {
    // The pool's record limit here: max(2 x max_idle_total, 1024; 64 under
    // Miri). The neighbour takes the old connection at half the rounds,
    // after its stripe went over the limit.
    let limit = if cfg!(miri) { 128 } else { 1024 };
    let rounds = 3 * limit;
    let clock = ManualClock::new();
    let ttl = Duration::from_millis(50);
    // Per thread: one old connection (id t), then its churn (ids after all
    // the old ones).
    let n = THREADS + THREADS * rounds;
    let tracker = Tracker::new(n);
    let pool = pool(&clock, 4, 64);
    let taken: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let barrier = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, tracker, taken, barrier) = (&pool, &tracker, &taken, &barrier);
            s.spawn(move || {
                pool.put(1_000 + t as u64, tracker.conn(t)).unwrap();
                barrier.wait();
                for i in 0..rounds {
                    let id = THREADS + t * rounds + i;
                    pool.put(t as u64, tracker.conn(id)).unwrap();
                    assert_eq!(pool.take(&(t as u64)).map(|c| c.id), Some(id));
                    if i == rounds / 2 {
                        // The neighbour's old connection, moved or not.
                        let other = 1_000 + ((t + 1) % THREADS) as u64;
                        taken
                            .lock()
                            .unwrap()
                            .extend(pool.take(&other).map(|c| c.id));
                    }
                    if i % 64 == 0 {
                        assert_eq!(pool.reap(), 0, "nothing is due");
                        pool.next_expiry();
                    }
                }
            });
        }
    });
    let taken = taken.into_inner().unwrap();
    for old in 0..THREADS {
        let want = usize::from(taken.contains(&old));
        assert_eq!(tracker.drops(old), want, "old connection {old}");
    }
    assert!(pool.holdover_moves() >= 1, "no stripe went over its limit");
    assert!(pool.fifo_records() <= THREADS * (limit + 2));
    assert_eq!(pool.len(), THREADS - taken.len());
    clock.advance(ttl);
    assert_eq!(pool.reap(), THREADS - taken.len());
    assert_eq!(pool.fifo_records(), 0);
    drop(pool);
    tracker.assert_each_dropped_once(n);
}

/// `evict_oldest` across stripes: threads alive at once (so on different
/// stripes) put in turn, the clock moving between puts; evictions then come
/// out in the order the connections went idle, whatever stripe holds them.
#[test]
fn evict_oldest_is_oldest_across_stripes() {
    const PUTTERS: usize = 3;
    const ROUNDS: usize = if cfg!(miri) { 2 } else { 8 };
    let clock = ManualClock::new();
    let n = PUTTERS * ROUNDS;
    let tracker = Tracker::new(n);
    let pool = pool(&clock, n, n);
    // Turn `k` belongs to thread `k % PUTTERS`.
    let turn = Mutex::new(0usize);
    let alive = Barrier::new(PUTTERS);
    thread::scope(|s| {
        for t in 0..PUTTERS {
            let (pool, tracker, clock, turn, alive) = (&pool, &tracker, &clock, &turn, &alive);
            s.spawn(move || {
                alive.wait();
                for r in 0..ROUNDS {
                    let id = r * PUTTERS + t;
                    loop {
                        let mut k = turn.lock().unwrap();
                        if *k == id {
                            pool.put(id as u64, tracker.conn(id)).unwrap();
                            clock.advance(Duration::from_micros(1));
                            *k += 1;
                            break;
                        }
                        drop(k);
                        thread::yield_now();
                    }
                }
                // Hold the thread (and its stripe) until everyone has put.
                alive.wait();
            });
        }
    });
    for oldest in 0..n {
        assert!(pool.evict_oldest());
        assert_eq!(
            tracker.drops(oldest),
            1,
            "connection {oldest} not evicted in turn"
        );
        for later in oldest + 1..n {
            assert_eq!(tracker.drops(later), 0, "connection {later} evicted early");
        }
    }
    assert!(!pool.evict_oldest());
    assert_eq!((pool.len(), pool.key_entries()), (0, 0));
}

/// `evict_oldest` racing `take` and `put`: a connection is either taken or
/// evicted, never both, and each is dropped exactly once.
#[test]
fn evict_oldest_racing_take_closes_each_once() {
    let per_thread = if cfg!(miri) { 40 } else { 20_000 };
    let clock = ManualClock::new();
    let n = THREADS * per_thread;
    let tracker = Tracker::new(n);
    let pool = pool(&clock, 4, 16);
    let taken: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let evicted = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, tracker, taken, evicted) = (&pool, &tracker, &taken, &evicted);
            s.spawn(move || {
                let mut mine = Vec::new();
                for i in 0..per_thread {
                    let id = t * per_thread + i;
                    drop(pool.put(id as u64 % KEYS, tracker.conn(id)));
                    if i % 2 == 0 {
                        mine.extend(pool.take(&((id as u64 + 1) % KEYS)).map(|c| c.id));
                    } else if pool.evict_oldest() {
                        evicted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                taken.lock().unwrap().extend(mine);
            });
        }
    });
    let mut taken = taken.into_inner().unwrap();
    let count = taken.len();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), count, "a connection was handed out twice");
    for &id in &taken {
        assert_eq!(
            tracker.drops(id),
            1,
            "taken connection {id} dropped by the pool"
        );
    }
    let left = pool.len();
    let mut evicts = 0;
    while pool.evict_oldest() {
        evicts += 1;
    }
    assert_eq!(
        evicts, left,
        "evict_oldest stopped before the pool was empty"
    );
    assert_eq!((pool.len(), pool.key_entries()), (0, 0));
    assert!(evicted.load(Ordering::Relaxed) > 0);
    drop(pool);
    tracker.assert_each_dropped_once(n);
}
