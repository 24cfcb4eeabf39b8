//! A fixed workload for `valgrind --tool=callgrind`: N put+take round trips
//! on the idle pool and on a `Mutex<HashMap<K, Vec<(Instant, C)>>>`, with
//! 1k other peers idle, so instruction counts per round trip can be
//! compared repeatably (ours after a warm-up to its steady state).
//!
//! `valgrind --tool=callgrind --toggle-collect='profile_pool::ours_*' target/release/examples/profile_pool`

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use connmgr_pool::IdlePool;
use parking_lot::Mutex;

const OPS: u64 = 200_000;
const TTL: Duration = Duration::from_secs(300);

/// Round trips until the pool's FIFO reaches its steady state: the 1k
/// idle peers put first sit at the head of this thread's FIFO stripe, so
/// records of taken connections pile up behind them until the stripe's
/// record limit (2 x 65,536) evicts them; from then on each put unlinks
/// the taken records at the head.
#[inline(never)]
fn warm_up(pool: &IdlePool<u64, u64>) {
    for i in 0..3 * 65_536 {
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
    for k in 0..1_000 {
        let _ = pool.put(1_000_000 + k, k);
        map.lock()
            .entry(1_000_000 + k)
            .or_default()
            .push((Instant::now(), k));
    }
    warm_up(&pool);
    ours_put_take(&pool);
    mutex_put_take(&map);
}
