//! Differential property tests against a `HashMap<K, VecDeque>` model,
//! driven by a manual clock.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use common::{Conn, Tracker};
use connmgr_pool::{IdlePool, ManualClock, PoolConfig};
use proptest::prelude::*;

const TTL: Duration = Duration::from_secs(10);
const PER_KEY: usize = 3;
const TOTAL: usize = 6;
const CASES: u32 = if cfg!(miri) { 4 } else { 256 };
const MAX_OPS: usize = if cfg!(miri) { 30 } else { 200 };

fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: CASES,
        // Miri's isolation forbids the file system (the failure record).
        failure_persistence: if cfg!(miri) {
            None
        } else {
            default.failure_persistence.clone()
        },
        ..default
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Take(u8),
    /// `take_if` rejecting connections whose id is divisible by 3.
    TakeIf(u8),
    Advance(u64),
    Reap,
    Clear,
    NextExpiry,
    EvictOldest,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4).prop_map(Op::Put),
        2 => (0u8..4).prop_map(Op::Take),
        1 => (0u8..4).prop_map(Op::TakeIf),
        2 => (0u64..8_000).prop_map(Op::Advance),
        1 => Just(Op::Reap),
        1 => Just(Op::Clear),
        1 => Just(Op::NextExpiry),
        1 => Just(Op::EvictOldest),
    ]
}

/// The std model: per-key deques of (id, deadline), oldest first.
#[derive(Default)]
struct Model {
    keys: HashMap<u8, VecDeque<(usize, Instant)>>,
    dropped: HashSet<usize>,
}

impl Model {
    fn len(&self) -> usize {
        self.keys.values().map(VecDeque::len).sum()
    }

    fn len_for(&self, k: u8) -> usize {
        self.keys.get(&k).map_or(0, VecDeque::len)
    }

    fn take(&mut self, k: u8, now: Instant, f: impl Fn(usize) -> bool) -> Option<usize> {
        let q = self.keys.get_mut(&k)?;
        while let Some((id, deadline)) = q.pop_back() {
            if now >= deadline || !f(id) {
                self.dropped.insert(id);
                continue;
            }
            return Some(id);
        }
        None
    }

    /// The connection that went idle first, of all keys (ids grow with
    /// insertion, so they order connections idle since the same instant).
    fn evict_oldest(&mut self) -> Option<usize> {
        let (&k, _) = self
            .keys
            .iter()
            .filter_map(|(k, q)| q.front().map(|&(id, d)| (k, (d, id))))
            .min_by_key(|&(_, front)| front)?;
        let (id, _) = self.keys.get_mut(&k)?.pop_front()?;
        self.dropped.insert(id);
        Some(id)
    }

    fn reap(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for q in self.keys.values_mut() {
            while q.front().is_some_and(|&(_, d)| now >= d) {
                let (id, _) = q.pop_front().unwrap();
                self.dropped.insert(id);
                n += 1;
            }
        }
        n
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pool_matches_model(ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        let clock = ManualClock::new();
        let config = PoolConfig::default().with_ttl(TTL).with_max_idle_per_key(PER_KEY).with_max_idle_total(TOTAL);
        let pool: IdlePool<u8, Conn, ManualClock> =
            IdlePool::with_config(config, clock.clone()).unwrap();
        let tracker = Tracker::new(ops.len());
        let mut model = Model::default();
        let reject = |id: usize| id % 3 != 0;

        for (id, op) in ops.iter().enumerate() {
            let now = clock.now();
            match *op {
                Op::Put(k) => {
                    let mut full = model.len() >= TOTAL || model.len_for(k) >= PER_KEY;
                    // A put at a full cap reaps first if anything is due.
                    let due = model.keys.values().flatten().any(|&(_, d)| now >= d);
                    if full && due {
                        model.reap(now);
                        full = model.len() >= TOTAL || model.len_for(k) >= PER_KEY;
                    }
                    match pool.put(k, tracker.conn(id)) {
                        Ok(()) => {
                            prop_assert!(!full, "put accepted over a cap");
                            model.keys.entry(k).or_default().push_back((id, now + TTL));
                        }
                        Err(conn) => {
                            prop_assert!(full, "put refused under the caps");
                            prop_assert_eq!(conn.id, id);
                            model.dropped.insert(id);
                        }
                    }
                }
                Op::Take(k) => {
                    let got = pool.take(&k).map(|c| c.id);
                    let want = model.take(k, now, |_| true);
                    prop_assert_eq!(got, want);
                    model.dropped.extend(got);
                }
                Op::TakeIf(k) => {
                    let got = pool.take_if(&k, |c| reject(c.id)).map(|c| c.id);
                    let want = model.take(k, now, reject);
                    prop_assert_eq!(got, want);
                    model.dropped.extend(got);
                }
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Op::Reap => prop_assert_eq!(pool.reap(), model.reap(now)),
                Op::Clear => {
                    let want = model.len();
                    for q in model.keys.values_mut() {
                        model.dropped.extend(q.drain(..).map(|(id, _)| id));
                    }
                    prop_assert_eq!(pool.clear(), want);
                }
                Op::NextExpiry => {
                    let want = model.keys.values().filter_map(|q| q.front().map(|&(_, d)| d)).min();
                    prop_assert_eq!(pool.next_expiry(), want);
                }
                Op::EvictOldest => {
                    // Which connection went is checked by the drop counts below.
                    prop_assert_eq!(pool.evict_oldest(), model.evict_oldest().is_some());
                }
            }
            model.keys.retain(|_, q| !q.is_empty());
            prop_assert_eq!(pool.len(), model.len());
            prop_assert_eq!(pool.is_empty(), model.len() == 0);
            for k in 0..4 {
                prop_assert_eq!(pool.len_for(&k), model.len_for(k));
            }
            // Every key with idle connections has an entry; emptied keys
            // keep theirs until their FIFO records leave.
            prop_assert!(pool.key_entries() >= model.keys.len());
            if matches!(op, Op::NextExpiry | Op::Clear | Op::EvictOldest) && model.keys.is_empty() {
                // Both unlink every record of a taken connection at the head.
                prop_assert_eq!(pool.key_entries(), 0);
            }
            for i in 0..=id {
                let want = usize::from(model.dropped.contains(&i));
                prop_assert_eq!(tracker.drops(i), want, "connection {} drop count", i);
            }
        }
        prop_assert_eq!(pool.clear(), model.len());
        prop_assert_eq!(pool.key_entries(), 0);
        prop_assert_eq!(pool.fifo_records(), 0);
        drop(pool);
        for (id, op) in ops.iter().enumerate() {
            let want = usize::from(matches!(op, Op::Put(_)));
            prop_assert_eq!(tracker.drops(id), want, "connection {} drop count", id);
        }
    }

    /// `docs/failure-modes.md #8`: TTLs longer than uptime, out-of-order instants from
    /// the clock, instants near the representable edge: no panic, caps and
    /// counts stay consistent, every connection dropped exactly once.
    #[test]
    fn instant_arithmetic_never_panics(
        ttl_secs in prop_oneof![Just(u64::MAX), Just(u64::MAX / 2), 1u64..1_000_000],
        steps in prop::collection::vec((0u8..6, 0u8..3, any::<i32>()), 1..MAX_OPS),
    ) {
        let base = Instant::now();
        let clock = ManualClock::starting_at(base);
        let config = PoolConfig::default().with_ttl(Duration::from_secs(ttl_secs)).with_max_idle_per_key(PER_KEY).with_max_idle_total(TOTAL);
        let pool: IdlePool<u8, Conn, ManualClock> =
            IdlePool::with_config(config, clock.clone()).unwrap();
        let tracker = Tracker::new(steps.len());
        for (id, &(op, k, jump)) in steps.iter().enumerate() {
            match op {
                0 | 1 => drop(pool.put(k, tracker.conn(id))),
                2 => drop(pool.take(&k)),
                3 => { pool.reap(); }
                4 => { pool.next_expiry(); }
                _ => {
                    // Jump forwards or backwards by up to ~68 years.
                    let d = Duration::from_secs(u64::from(jump.unsigned_abs()));
                    let to = if jump < 0 { base.checked_sub(d) } else { base.checked_add(d) };
                    clock.set(to.unwrap_or(base));
                }
            }
            let total: usize = (0..3).map(|k| pool.len_for(&k)).sum();
            prop_assert_eq!(pool.len(), total);
            prop_assert!(pool.len() <= TOTAL);
            prop_assert!((0..3).all(|k| pool.len_for(&k) <= PER_KEY));
            let _ = pool.memory_usage();
        }
        drop(pool);
        for (id, &(op, _, _)) in steps.iter().enumerate() {
            let want = usize::from(op < 2);
            prop_assert_eq!(tracker.drops(id), want, "connection {} drop count", id);
        }
    }
}
