//! A fixed workload for `valgrind --tool=callgrind`: N put+take round trips
//! on the idle pool and on a `Mutex<HashMap<K, Vec<(Instant, C)>>>`, with
//! 1k other peers idle, so instruction counts per round trip can be
//! compared repeatably (ours after a warm-up to its steady state).
//! The 1k other peers' connections are put from another thread, as in
//! `benches/pool.rs`.
//!
//! `valgrind --tool=callgrind --toggle-collect='profile_pool::ours_*' target/release/examples/profile_pool`

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use connmgr_pool::IdlePool;
use parking_lot::Mutex;

const OPS: u64 = 200_000;
const TTL: Duration = Duration::from_secs(300);

/// Round trips until the pool's FIFO stripe settles at its steady state
/// (about 64 records of taken connections kept, two unlinked per put).
#[inline(never)]
fn warm_up(pool: &IdlePool<u64, u64>) {
    for i in 0..10_000 {
        let key = i % 64;
        let _ = pool.put(key, i);
        black_box(pool.take(&key));
    }
}

#[inline(never)]
fn ours_put_take(pool: &IdlePool<u64, u64>) {
    for i in 0..OPS {
        let key = i % 64;
        let _ = pool.put(key, i);
        black_box(pool.take(&key));
    }
}

type MutexMap = Mutex<HashMap<u64, Vec<(Instant, u64)>>>;

#[inline(never)]
fn mutex_put_take(map: &MutexMap) {
    for i in 0..OPS {
        let key = i % 64;
        map.lock().entry(key).or_default().push((Instant::now(), i));
        let mut m = map.lock();
        let list = m.get_mut(&key);
        let now = Instant::now();
        black_box(list.and_then(|l| {
            while let Some((at, c)) = l.pop() {
                if now.saturating_duration_since(at) < TTL {
                    return Some(c);
                }
            }
            None
        }));
    }
}

fn main() {
    let pool = IdlePool::<u64, u64>::new(TTL);
    let map = MutexMap::default();
    // The other peers' connections are put from another thread, as in the
    // criterion bench: in this thread's FIFO stripe they would sit at the
    // head and hold back the cleanup of every record behind them.
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..1_000 {
                let _ = pool.put(1_000_000 + k, k);
            }
        });
    });
    for k in 0..1_000 {
        map.lock()
            .entry(1_000_000 + k)
            .or_default()
            .push((Instant::now(), k));
    }
    warm_up(&pool);
    assert_eq!(pool.len(), 1_000);
    ours_put_take(&pool);
    mutex_put_take(&map);
}
