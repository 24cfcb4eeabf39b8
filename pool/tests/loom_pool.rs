//! Loom models of put vs take vs reap, and of a taken connection never
//! coming back (`docs/failure-modes.md #11`). Run by `.ci/loom.sh`:
//! `RUSTFLAGS="--cfg loom --cfg crossbeam_loom -C debug-assertions"
//! LOOM_MAX_PREEMPTIONS=2 cargo test --release -p connmgr-pool --test loom_pool`.
//!
//! Each model was shown once to fail with its key ordering or fix removed
//! (done locally, then reverted); see the note on each model.
#![cfg(loom)]

use std::time::Duration;

use connmgr_pool::{Clock, IdlePool, ManualClock, PoolConfig};
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

mod loom_support;
use loom_support::{Conn, Tracker};

/// A pool with a 10 s TTL and the given caps, on `clock`.
fn pool<Clk: Clock + Clone>(
    clock: &Clk,
    per_key: usize,
    total: usize,
) -> Arc<IdlePool<u8, Conn, Clk>> {
    let config = PoolConfig::default()
        .with_ttl(Duration::from_secs(10))
        .with_max_idle_per_key(per_key)
        .with_max_idle_total(total);
    Arc::new(IdlePool::with_config(config, clock.clone()).unwrap())
}

/// A put racing a take on the same key: the take gets the connection or
/// nothing; the connection is dropped exactly once overall; the counts end
/// consistent and the key's entry is freed once empty.
///
/// Weakened once (locally, then reverted): the success ordering of the
/// publishing CAS in `Entry::index_push` (the snapshot CAS then, the slot
/// CAS since the index became in-place slots; both tried) lowered from
/// `AcqRel` to `Acquire` (no Release). Loom failed this model with
/// "Causality violation: Concurrent load and mut accesses" on the
/// connection cell.
#[test]
fn put_vs_take() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 4);
        let t = Tracker::new();
        let p = pool.clone();
        let t2 = t.clone();
        let putter = thread::spawn(move || p.put(1, t2.conn(0)).is_ok());
        let got = pool.take(&1);
        assert!(putter.join().unwrap());
        match got {
            Some(c) => {
                assert_eq!(c.0, 0);
                assert_eq!(pool.len(), 0);
                pool.next_expiry(); // unlinks the taken connection's record
                assert_eq!(pool.key_entries(), 0);
                drop(c);
            }
            None => assert_eq!(pool.len_for(&1), 1),
        }
        drop(pool);
        assert_eq!(t.drops(0), 1);
    });
}

/// Two takers race for one connection while a third thread puts a second
/// one: no connection is handed out twice (stale/ABA), each is dropped
/// exactly once, the counter never underflows (debug assertions on).
///
/// Fix removed once (locally, then reverted): `Node::claim` as a load
/// followed by a store instead of one `fetch_or`. Loom failed this model
/// with "Causality violation: Concurrent write accesses to `UnsafeCell`"
/// (two takers moving the same connection out).
#[test]
fn take_vs_take_vs_put_never_hands_out_twice() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 4);
        let t = Tracker::new();
        pool.put(1, t.conn(0)).unwrap();
        let p1 = pool.clone();
        let a = thread::spawn(move || p1.take(&1).map(|c| c.0));
        let p2 = pool.clone();
        let t2 = t.clone();
        let b = thread::spawn(move || {
            let _ = p2.put(1, t2.conn(1));
            p2.take(&1).map(|c| c.0)
        });
        let x = a.join().unwrap();
        let y = b.join().unwrap();
        if let (Some(x), Some(y)) = (x, y) {
            assert_ne!(x, y, "one connection handed out twice");
        }
        let handed = usize::from(x.is_some()) + usize::from(y.is_some());
        assert_eq!(pool.len(), 2 - handed);
        drop(pool);
        assert_eq!(t.drops(0), 1);
        assert_eq!(t.drops(1), 1);
    });
}

/// Reap racing a take of an expired connection and a put of a fresh one:
/// the expired one is closed exactly once (by whichever claims it), the
/// fresh one survives the reap, and the key entry stays consistent.
///
/// Fix removed once (locally, then reverted): `KeyMap::close` deciding to
/// close with a load (`live == 0`) followed by a store of `CLOSED` instead
/// of one CAS `0 -> CLOSED`. Loom found the put reserving in between (its
/// reservation overwritten, its connection in a closed entry) and failed
/// this model on the per-key count assertion.
#[test]
fn reap_vs_take_vs_put() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 4);
        let t = Tracker::new();
        pool.put(1, t.conn(0)).unwrap();
        clock.advance(Duration::from_secs(10)); // conn 0 expired
        let p1 = pool.clone();
        let reaper = thread::spawn(move || p1.reap());
        let p2 = pool.clone();
        let t2 = t.clone();
        let taker = thread::spawn(move || {
            let got = p2.take(&1).map(|c| c.0);
            p2.put(1, t2.conn(1)).unwrap();
            got
        });
        let reaped = reaper.join().unwrap();
        let got = taker.join().unwrap();
        assert_eq!(got, None, "an expired connection was handed out");
        assert!(reaped <= 1);
        assert_eq!(t.drops(0), 1, "expired connection not closed exactly once");
        assert_eq!(t.drops(1), 0, "fresh connection reaped");
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.len_for(&1), 1);
        assert_eq!(pool.take(&1).map(|c| c.0), Some(1));
        pool.next_expiry();
        assert_eq!(pool.key_entries(), 0);
    });
}

/// Two puts on one key race for its in-place index slots (one slot per
/// chunk under loom, so one of them appends the second chunk, racing the
/// other): both are stored, each in its own slot, and each connection is
/// then taken once and dropped once. (Publication to a concurrent taker
/// through the slot CAS is `put_vs_take`.)
///
/// Fix removed once (locally, then reverted): `Entry::index_push` storing
/// into a free slot with a load and a store instead of a CAS. Loom found
/// both puts writing the same slot (one connection lost from the index)
/// and failed this model on the take count.
#[test]
fn puts_race_for_index_slots() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 4);
        let t = Tracker::new();
        let p1 = pool.clone();
        let t1 = t.clone();
        let a = thread::spawn(move || p1.put(1, t1.conn(0)).is_ok());
        assert!(pool.put(1, t.conn(1)).is_ok());
        assert!(a.join().unwrap());
        let mut got = Vec::new();
        while let Some(c) = pool.take(&1) {
            got.push(c.0);
        }
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
        drop(pool);
        assert_eq!(t.drops(0), 1);
        assert_eq!(t.drops(1), 1);
    });
}

/// Two puts meet a total cap held by an expired connection nobody reaped:
/// each reaps before giving up, so at least one goes in; the cap still
/// holds, and every connection is dropped exactly once.
///
/// Checked to fail: with `put`'s reap-and-retry removed (refusing at once),
/// both puts are refused (`accepted` is 0).
#[test]
fn puts_at_a_cap_held_by_an_expired_connection() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 1);
        let t = Tracker::new();
        pool.put(1, t.conn(2)).unwrap();
        // Set before the threads start: they only read the clock.
        clock.advance(Duration::from_secs(20));
        let p1 = pool.clone();
        let t1 = t.clone();
        let a = thread::spawn(move || p1.put(1, t1.conn(0)).is_ok());
        let b = pool.put(2, t.conn(1)).is_ok();
        let a = a.join().unwrap();
        let accepted = usize::from(a) + usize::from(b);
        assert_eq!(accepted, 1, "one put goes in, the cap holds");
        assert_eq!(t.drops(2), 1, "the expired connection was closed");
        assert_eq!(pool.len(), 1);
        drop(pool);
        for id in 0..3 {
            assert_eq!(t.drops(id), 1);
        }
    });
}

/// Two puts race for the last unit of a total cap of 1 from threads on
/// different stripes of the total: the main thread's stripe holds the unit
/// (borrowed by an earlier put, given back by its take), the other thread
/// must steal it. At most one is accepted, and once both are done `len`
/// is exact.
///
/// Fix removed once (locally, then reverted): `quota::take_one` as a load
/// followed by a store instead of one CAS. Loom found both puts taking the
/// one unit and failed this model on the cap assertion.
#[test]
fn total_cap_holds_across_stripes() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 1);
        let t = Tracker::new();
        pool.put(1, t.conn(2)).unwrap();
        assert_eq!(pool.take(&1).map(|c| c.0), Some(2));
        let p1 = pool.clone();
        let t1 = t.clone();
        let a = thread::spawn(move || p1.put(1, t1.conn(0)).is_ok());
        let b = pool.put(1, t.conn(1)).is_ok();
        let a = a.join().unwrap();
        let accepted = usize::from(a) + usize::from(b);
        assert!(accepted <= 1, "total cap exceeded");
        assert_eq!(pool.len(), accepted);
        drop(pool);
        for id in 0..3 {
            assert_eq!(t.drops(id), 1);
        }
    });
}

/// The reaper's wake-up handshake: a reaper that found nothing to wait for
/// (`watch_next_expiry` → `None`) races a put. Either the reaper sees the
/// new connection's deadline, or the put's `take_wake_request` tells the
/// putter to wake it: the wake-up is never lost, so no idle connection
/// outlives its TTL waiting for some unrelated timer.
///
/// Weakened (locally, then reverted): both `SeqCst` fences removed, and
/// then only the one in `take_wake_request`. Loom failed this model both
/// times with "lost wake-up": the reaper read the FIFO as empty while the
/// putter read no request.
#[test]
fn a_put_never_misses_a_watching_reaper() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 4);
        let t = Tracker::new();
        let p = pool.clone();
        let t2 = t.clone();
        let putter = thread::spawn(move || {
            p.put(1, t2.conn(0)).unwrap();
            p.take_wake_request()
        });
        let next = pool.watch_next_expiry();
        let woken = putter.join().unwrap();
        assert!(
            next.is_some() || woken,
            "lost wake-up: the reaper saw no deadline and the put no request"
        );
        // Quiescent now: the reaper's next look sees the connection.
        assert!(pool.watch_next_expiry().is_some());
        assert!(!pool.take_wake_request());
        drop(pool);
        assert_eq!(t.drops(0), 1);
    });
}

/// Two reapers race over expired connections in one stripe: one may wait
/// for the other (the stripe's reaping claim), but each connection is
/// closed exactly once, the two counts add up, nothing expired is left once
/// both returned, and the claim is free again for the next reap.
///
/// Broken once (locally, then reverted): the claim's guard not releasing
/// it on drop. Loom failed this model: the next round's reap found the
/// stripe taken and waited forever (loom reported the livelock as a
/// deadlock / exceeded branch limit).
#[test]
fn concurrent_reapers_share_the_work() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 4);
        let t = Tracker::new();
        pool.put(1, t.conn(0)).unwrap();
        pool.put(2, t.conn(1)).unwrap();
        clock.advance(Duration::from_secs(11));
        let p = pool.clone();
        let other = thread::spawn(move || p.reap());
        let mine = pool.reap();
        let theirs = other.join().unwrap();
        assert_eq!(mine + theirs, 2);
        assert!(pool.is_empty());
        assert_eq!((t.drops(0), t.drops(1)), (1, 1));
        // The claim was released: a later reap gets the stripe.
        pool.put(1, t.conn(2)).unwrap();
        clock.advance(Duration::from_secs(11));
        assert_eq!(pool.reap(), 1);
        drop(pool);
        assert_eq!(t.drops(2), 1);
    });
}

/// Two reapers that read different times: the earlier one may hold the
/// stripe and stop at a connection that is due only for the later one. The
/// later reap must not leave that connection behind: it waits for the
/// holder to let go, then closes it itself. (A connection another reaper
/// has already taken off the FIFO may still be closing when a reap
/// returns; it is no longer idle.)
///
/// Broken once (locally, then reverted): a reaper that finds the stripe
/// claimed skipping it instead of waiting (the first version of the claim).
/// Loom failed this model: the later reap returned with the connection due
/// at its time still idle.
#[test]
fn a_later_reaper_leaves_nothing_due_behind() {
    loom::model(|| {
        // A clock loom can see: `ManualClock` is a plain lock, so loom could
        // never run the early reaper's read between two of its changes.
        let clock = LoomClock::new();
        let pool = pool(&clock, 2, 4);
        let t = Tracker::new();
        pool.put(1, t.conn(0)).unwrap(); // due at 10 s
        clock.advance(5);
        pool.put(2, t.conn(1)).unwrap(); // due at 15 s
        clock.advance(6); // 11 s: the first is due
        let p = pool.clone();
        let early = thread::spawn(move || p.reap()); // reads 11 s or 16 s
        clock.advance(5); // 16 s: both are due
        let late = pool.reap();
        let early = early.join().unwrap();
        // Had the late reap left the stripe to an early one that stopped at
        // the second connection, that connection would still be idle here.
        assert_eq!(early + late, 2, "a connection due at 16 s was left idle");
        assert_eq!((t.drops(0), t.drops(1)), (1, 1));
        assert!(pool.is_empty());
    });
}

/// A clock whose reads and changes are loom operations: whole seconds
/// from a fixed origin.
#[derive(Clone)]
struct LoomClock {
    origin: std::time::Instant,
    secs: Arc<AtomicU64>,
}

impl LoomClock {
    fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
            secs: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advance(&self, secs: u64) {
        self.secs.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for LoomClock {
    fn now(&self) -> std::time::Instant {
        self.origin + Duration::from_secs(self.secs.load(Ordering::SeqCst))
    }
}

/// `evict_oldest` racing a take for the only idle connection: exactly one
/// of them gets it, the connection is dropped exactly once, and the emptied
/// pool keeps no key entry.
///
/// Fix removed once (locally, then reverted): `Node::claim` as a load
/// followed by a store instead of one `fetch_or`. Loom failed this model
/// with "Causality violation: Concurrent write accesses to `UnsafeCell`"
/// (the evictor and the taker both moving the connection out).
#[test]
fn evict_oldest_vs_take() {
    loom::model(|| {
        let clock = ManualClock::new();
        let pool = pool(&clock, 2, 4);
        let t = Tracker::new();
        pool.put(1, t.conn(0)).unwrap();
        let p = pool.clone();
        let evictor = thread::spawn(move || p.evict_oldest());
        let got = pool.take(&1);
        let evicted = evictor.join().unwrap();
        assert!(evicted != got.is_some(), "exactly one gets it");
        drop(got);
        assert_eq!(t.drops(0), 1);
        assert_eq!(pool.len(), 0);
        pool.next_expiry(); // unlinks a taken connection's record
        assert_eq!(pool.key_entries(), 0);
    });
}
