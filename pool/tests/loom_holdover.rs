//! Loom models of an idle connection moved off the head of a FIFO stripe
//! that went over its record limit (to the holdover queue), racing
//! `next_expiry`, a take of that connection, and `clear`. A reap that has
//! something due takes the stripe's claim, as moves do, and so waits for a
//! move; one that pops without the claim (nothing due when it looked, or
//! re-entered from a destructor) pops as `clear` does, which the last model
//! covers. Under loom the limit is 2 records, so the
//! third record of a stripe moves its idle head. Run by `.ci/loom.sh`.
//!
//! Each model was shown once to fail with its fix removed (done locally,
//! then reverted); see the note on each.
#![cfg(loom)]

use std::time::{Duration, Instant};

use connmgr_pool::{IdlePool, ManualClock, PoolConfig};
use loom::sync::Arc;
use loom::thread;

mod loom_support;
use loom_support::{Conn, Tracker};

const TTL: Duration = Duration::from_secs(10);

/// A pool with a 10 s TTL, 2 per key and 4 in total, whose main-thread
/// stripe holds an idle connection 0 (key 1) followed, 1 s later, by the
/// record of connection 1 (key 2), already taken and dropped: one more put
/// on that stripe takes it over its limit. Returns the pool and connection
/// 0's deadline.
fn pool_with_an_idle_head(
    clock: &ManualClock,
    t: &Tracker,
) -> (Arc<IdlePool<u8, Conn, ManualClock>>, Instant) {
    let config = PoolConfig::default()
        .with_ttl(TTL)
        .with_max_idle_per_key(2)
        .with_max_idle_total(4);
    let pool = Arc::new(IdlePool::with_config(config, clock.clone()).unwrap());
    let first = clock.now() + TTL;
    pool.put(1, t.conn(0)).unwrap();
    clock.advance(Duration::from_secs(1));
    pool.put(2, t.conn(1)).unwrap();
    drop(pool.take(&2));
    clock.advance(Duration::from_secs(1));
    (pool, first)
}

/// The move (by a put on the main thread) vs `next_expiry`: connection 0
/// stays idle throughout, so `next_expiry` reports its deadline whatever
/// the interleaving (a moved connection is in one of the two queues at
/// every moment).
///
/// Checked to fail: with the move unlinking the FIFO record before pushing
/// the proxy (so the connection is in neither queue for a moment),
/// `next_expiry` returns a later deadline while connection 0 is idle. The
/// first version of the holdover queue failed it too: `next_expiry` (and
/// `reap`) looked at the holdover queue before the stripe, so a move
/// between the two looks hid the connection from both.
#[test]
fn move_vs_next_expiry() {
    loom::model(|| {
        let clock = ManualClock::new();
        let t = Tracker::new();
        let (pool, first) = pool_with_an_idle_head(&clock, &t);
        let p = pool.clone();
        let watcher = thread::spawn(move || p.next_expiry());
        pool.put(2, t.conn(2)).unwrap();
        assert_eq!(watcher.join().unwrap(), Some(first), "connection 0 missed");
        assert_eq!(pool.holdover_moves(), 1);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.next_expiry(), Some(first));
        drop(pool);
        for id in 0..3 {
            assert_eq!(t.drops(id), 1);
        }
    });
}

/// The move vs a take of the moved connection: the take finds it whatever
/// the interleaving (a move never hides it from its key's index), and
/// afterwards the counts, records and drops add up.
///
/// Checked to fail, twice:
/// - with `Node::try_hold` as a load then a store instead of a CAS (the
///   race itself: the store lands after the taker's claim and wipes its
///   `CLAIMED` bit), loom finds that interleaving and a debug assertion
///   fails ("link released twice");
/// - with the proxy pushed without the node's `IN_HOLD` link, the same
///   assertion fails, but in every interleaving: that mistake needs no
///   race to show.
#[test]
fn move_vs_take() {
    loom::model(|| {
        let clock = ManualClock::new();
        let t = Tracker::new();
        let (pool, _) = pool_with_an_idle_head(&clock, &t);
        let second = clock.now() + TTL;
        let p = pool.clone();
        let taker = thread::spawn(move || p.take(&1).map(|c| c.0));
        pool.put(2, t.conn(2)).unwrap();
        assert_eq!(taker.join().unwrap(), Some(0), "the move hid it");
        assert_eq!(t.drops(0), 1, "taken, then dropped by the taker");
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.next_expiry(), Some(second));
        assert_eq!(pool.fifo_records(), 1, "only connection 2's record is left");
        assert_eq!(pool.key_entries(), 1, "key 1's entry was freed");
        drop(pool);
        for id in 0..3 {
            assert_eq!(t.drops(id), 1);
        }
    });
}

/// The move vs `clear`, which, unlike a reaper, takes no stripe claim and
/// so runs alongside it: connection 0, idle when `clear` starts, is closed
/// by it exactly once (met in the stripe or in the holdover queue), and the
/// records and links of both queues are given back exactly once (the
/// pool's counters would underflow, and fail a debug assertion, if a record
/// were released twice).
///
/// Checked to fail: with the move releasing the FIFO record whether or not
/// its own pop unlinked it (`clear` may have popped and released it
/// first), a debug assertion fails ("record count underflow"). And with
/// `Entry::try_add_record` reading the entry with `Relaxed` (as its first
/// version did), a move that finds the entry closed can read the same
/// stale stripe head again and again: loom reports the branch limit
/// exceeded (the model found that first version's livelock).
#[test]
fn move_vs_clear() {
    loom::model(|| {
        let clock = ManualClock::new();
        let t = Tracker::new();
        let (pool, _) = pool_with_an_idle_head(&clock, &t);
        let p = pool.clone();
        let clearer = thread::spawn(move || p.clear());
        pool.put(2, t.conn(2)).unwrap();
        let cleared = clearer.join().unwrap();
        assert_eq!(t.drops(0), 1, "connection 0 was idle when clear began");
        let left = pool.len();
        assert_eq!(cleared + left, 2, "closed {cleared}, left {left}");
        assert_eq!(pool.next_expiry().is_some(), left == 1);
        assert_eq!(pool.fifo_records(), left);
        assert_eq!(pool.key_entries(), left, "emptied keys' entries were freed");
        drop(pool);
        for id in 0..3 {
            assert_eq!(t.drops(id), 1);
        }
    });
}
