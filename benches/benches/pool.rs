#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Idle pool benchmarks: `connmgr_pool::IdlePool` side by side with the
//! baselines a user would pick instead:
//!
//! * `mutex_map`: `Mutex<HashMap<K, Vec<(Instant, C)>>>` (parking_lot),
//!   reaped by a full `retain` scan;
//! * `dashmap_retain`: the reference's approach, `DashMap<K, (C, Instant)>`
//!   with a `retain` scan of every entry on every return.
//!
//! Groups: put+take round trip and take miss (with 1k other peers idle,
//! put from another thread), and reaping N expired entries (N = 1k and 1M,
//! one per key and 16 per key; per-entry cost reported as throughput, the
//! reclamation of freed memory included), each at 1 and 2 threads; plus a
//! reap pass when nothing is due among 1M idle entries (a periodic
//! reaper's usual wake-up). Under `cargo test --benches` (no `--bench`
//! flag) only the small sizes run, once each.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use connmgr_benches::{bench_op, run_threads};
use connmgr_pool::{Clock, IdlePool, ManualClock, PoolConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use parking_lot::Mutex;

const TTL: Duration = Duration::from_secs(300);
const IDLE_PEERS: u64 = 1_000;

fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The operations every contender offers.
trait Contender: Sync {
    fn put(&self, key: u64, conn: u64);
    fn take(&self, key: u64) -> Option<u64>;
    fn reap(&self) -> usize;
    /// Idle connections held (expired or not).
    fn idle(&self) -> usize;
    /// Finishes the memory reclamation a reap of `n` connections started:
    /// ours retires node and key-entry memory to crossbeam-epoch, which
    /// frees it later on whichever thread collects; the baselines free
    /// inside `reap`. Timed with the reap, so every contender pays for its
    /// frees.
    fn reclaim(&self, _n: u64) {}
}

/// Ours, on any clock: the system clock for the hot-path benches, a manual
/// one (see `manual_pool`) so the reap benches can expire everything at once.
impl<Clk: Clock> Contender for IdlePool<u64, u64, Clk> {
    fn put(&self, key: u64, conn: u64) {
        let _ = IdlePool::put(self, key, conn);
    }
    fn take(&self, key: u64) -> Option<u64> {
        IdlePool::take(self, &key)
    }
    fn reap(&self) -> usize {
        IdlePool::reap(self)
    }
    fn idle(&self) -> usize {
        IdlePool::len(self)
    }
    fn reclaim(&self, n: u64) {
        // One deferred call per key entry freed and per 64 nodes, 64 calls
        // per epoch bag, up to 8 bags per collection. Measured with a
        // counting allocator: n / 64 + 16 collections return a 1M-entry
        // reap's memory down to the empty pool's (n / 256 + 16 left 80 MB
        // of 184 MB behind, one entry per key); idle ones cost ~40 ns.
        for _ in 0..n / 64 + 16 {
            crossbeam_epoch::pin().flush();
        }
    }
}

/// Ours on a manual clock, and the clock.
fn manual_pool(per_key: usize, total: usize) -> (IdlePool<u64, u64, ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let config = PoolConfig::default()
        .with_ttl(TTL)
        .with_max_idle_per_key(per_key)
        .with_max_idle_total(total);
    (IdlePool::with_config(config, clock.clone()).unwrap(), clock)
}

struct MutexMap(Mutex<HashMap<u64, Vec<(Instant, u64)>>>);

impl Contender for MutexMap {
    fn put(&self, key: u64, conn: u64) {
        self.0
            .lock()
            .entry(key)
            .or_default()
            .push((Instant::now(), conn));
    }
    fn take(&self, key: u64) -> Option<u64> {
        let mut map = self.0.lock();
        let list = map.get_mut(&key)?;
        let now = Instant::now();
        while let Some((at, c)) = list.pop() {
            if now.saturating_duration_since(at) < TTL {
                return Some(c);
            }
        }
        None
    }
    fn reap(&self) -> usize {
        let mut n = 0;
        let now = Instant::now() + TTL;
        self.0.lock().retain(|_, list| {
            let before = list.len();
            list.retain(|&(at, _)| now.saturating_duration_since(at) < TTL);
            n += before - list.len();
            !list.is_empty()
        });
        n
    }
    fn idle(&self) -> usize {
        self.0.lock().values().map(Vec::len).sum()
    }
}

/// The reference (qudag-network 0.3.1): one `(C, Instant)` per key and a
/// full `retain` scan on every return to the pool.
struct DashRetain(DashMap<u64, (u64, Instant)>);

impl Contender for DashRetain {
    fn put(&self, key: u64, conn: u64) {
        let now = Instant::now();
        self.0
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < TTL);
        self.0.insert(key, (conn, now));
    }
    fn take(&self, key: u64) -> Option<u64> {
        let (_, (c, at)) = self.0.remove(&key)?;
        (Instant::now().saturating_duration_since(at) < TTL).then_some(c)
    }
    fn reap(&self) -> usize {
        let now = Instant::now() + TTL;
        let before = self.0.len();
        self.0
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < TTL);
        before - self.0.len()
    }
    fn idle(&self) -> usize {
        self.0.len()
    }
}

/// Puts the `IDLE_PEERS` other peers' connections from a thread of their
/// own: ours keeps an expiry FIFO per thread stripe, and a connection that
/// stays idle at the head of the benchmark thread's stripe would hold the
/// records of every connection put and taken behind it until the stripe's
/// record limit closed it early. Parked elsewhere, they stay idle
/// throughout, as in the baselines.
fn preload(pool: &dyn Contender) {
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..IDLE_PEERS {
                pool.put(1_000_000 + k, k);
            }
        });
    });
    assert_eq!(pool.idle(), IDLE_PEERS as usize);
}

/// Prints how many of the `IDLE_PEERS` other connections are still idle
/// after a round-trip benchmark. Ours can close some early: when the
/// benchmark threads share the FIFO stripe the preload went to (threads
/// are striped by index, and each sample spawns new ones), the records of
/// the connections put and taken pile up behind them until the stripe's
/// record limit (2 x `max_idle_total`) evicts the oldest idle connection,
/// as `IdlePool::put` documents. The baselines never close anything.
fn report_idle(name: &str, threads: usize, pool: &dyn Contender) {
    println!(
        "pool/put_take/{name}/{threads}t: {} of {IDLE_PEERS} other peers still idle",
        pool.idle()
    );
}

fn contenders() -> Vec<(&'static str, Box<dyn Contender>)> {
    vec![
        ("ours", Box::new(IdlePool::<u64, u64>::new(TTL))),
        ("mutex_map", Box::new(MutexMap(Mutex::new(HashMap::new())))),
        ("dashmap_retain", Box::new(DashRetain(DashMap::new()))),
    ]
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool/put_take");
    for threads in [1, 2] {
        for (name, pool) in contenders() {
            preload(&*pool);
            bench_op(&mut group, name, threads, |t, i| {
                let key = t as u64 * 64 + (i % 64);
                pool.put(key, i);
                black_box(pool.take(key));
            });
            report_idle(name, threads, &*pool);
        }
    }
    group.finish();
}

fn take_miss(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool/take_miss");
    for threads in [1, 2] {
        for (name, pool) in contenders() {
            preload(&*pool);
            bench_op(&mut group, name, threads, |t, i| {
                black_box(pool.take(t as u64 * 1_000 + (i % 1_000)));
            });
        }
    }
    group.finish();
}

fn reap(c: &mut Criterion) {
    let sizes: &[u64] = if benchmarking() {
        &[1_000, 1_000_000]
    } else {
        &[1_000]
    };
    let mut group = c.benchmark_group("pool/reap_expired");
    group.sample_size(10);
    // Two shapes at each size: one connection per peer (the facade's
    // default `max_idle_per_peer`), and 16 per peer (`dense_`), so the
    // 1k and 1M figures compare like with like. The reference's
    // one-per-key `DashMap` holds distinct keys in both.
    for (dense, per_key) in [(false, 1), (true, 16)] {
        for &n in sizes {
            group.throughput(Throughput::Elements(n));
            let keys = n.div_ceil(per_key);
            for threads in [1, 2] {
                for name in ["ours", "mutex_map", "dashmap_retain"] {
                    let param = if dense {
                        format!("dense_{n}/{threads}t")
                    } else {
                        format!("{n}/{threads}t")
                    };
                    group.bench_function(BenchmarkId::new(name, param), |b| {
                        b.iter_custom(|iters| {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                let pool = expired_pool(name, n, keys);
                                total += run_threads(threads, 1, |_, _| {
                                    black_box(pool.reap());
                                    pool.reclaim(n);
                                });
                                assert_eq!(pool.idle(), 0, "{name}: everything reaped");
                                drop(pool);
                            }
                            total
                        })
                    });
                }
            }
        }
    }
    group.finish();
}

/// A contender holding `n` connections on `keys` keys, all past their TTL
/// (filled untimed; ours then has its epoch garbage from filling flushed).
fn expired_pool(name: &str, n: u64, keys: u64) -> Box<dyn Contender> {
    match name {
        "ours" => {
            let (ours, clock) = manual_pool(16, 1 << 21);
            for i in 0..n {
                let _ = ours.put(i % keys, i);
            }
            clock.advance(TTL);
            Contender::reclaim(&ours, n);
            Box::new(ours)
        }
        "mutex_map" => {
            let m = MutexMap(Mutex::new(HashMap::new()));
            for i in 0..n {
                m.put(i % keys, i);
            }
            Box::new(m)
        }
        _ => {
            // Bulk fill without the per-put scan.
            let d = DashRetain(DashMap::new());
            let now = Instant::now();
            for i in 0..n {
                d.0.insert(i, (i, now));
            }
            Box::new(d)
        }
    }
}

/// Reaping when nothing has expired yet among `n` idle connections: what a
/// periodic reaper pays on most wake-ups. Ours is O(expired) = O(1); the
/// baselines scan all `n`.
fn reap_nothing_due(c: &mut Criterion) {
    let n: u64 = if benchmarking() { 1_000_000 } else { 1_000 };
    let mut group = c.benchmark_group("pool/reap_nothing_due");
    group.sample_size(10);
    let (ours, _clock) = manual_pool(16, 1 << 21);
    let mutex = MutexMap(Mutex::new(HashMap::new()));
    let dash = DashRetain(DashMap::new());
    let now = Instant::now();
    for i in 0..n {
        let _ = ours.put(i % 65_536, i);
        mutex.0.lock().entry(i % 65_536).or_default().push((now, i));
        dash.0.insert(i, (i, now));
    }
    // The baselines' `reap` pretends TTL has passed; scan "nothing due"
    // instead with the real instant.
    let scans: [(&str, &dyn Fn() -> usize); 3] = [
        ("ours", &|| ours.reap()),
        ("mutex_map", &|| {
            let now = Instant::now();
            let mut k = 0;
            mutex.0.lock().retain(|_, l| {
                let before = l.len();
                l.retain(|&(at, _)| now.saturating_duration_since(at) < TTL);
                k += before - l.len();
                !l.is_empty()
            });
            k
        }),
        ("dashmap_retain", &|| {
            let now = Instant::now();
            let before = dash.0.len();
            dash.0
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < TTL);
            before - dash.0.len()
        }),
    ];
    for (name, scan) in scans {
        group.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| assert_eq!(black_box(scan()), 0))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = round_trip, take_miss, reap, reap_nothing_due
}
criterion_main!(benches);
