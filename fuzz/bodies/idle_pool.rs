// Fuzz body: `IdlePool` on a `ManualClock` against a
// `HashMap<K, VecDeque<(deadline, id)>>` model.
//
// Included (`include!`) by `fuzz/fuzz_targets/idle_pool.rs` and by
// `pool/tests/fuzz_bodies.rs`; keep it free of inner attributes and
// crate-level items. Checked after every operation: what `put`, `take`,
// `take_if` and `reap`/`clear` return, `len`, `len_for`, `is_empty`,
// `next_expiry`, and which connections were dropped by the call (exactly
// the ones the model closes, at that moment, each once). Time only moves
// forward here: with one TTL, put order is expiry order.
//
// FIFO records (`fifo_records`, a hidden boundedness hook): how many
// records of taken connections `put` unlinks is housekeeping policy, so
// the model keeps an upper bound (it unlinks only where the docs promise:
// `next_expiry`, `reap`, `clear`, moves and eviction) and checks equality
// right after those calls. A stripe over its record limit moves its oldest
// idle connections to the holdover queue (the pool counts the moves, a
// hidden hook: the model moves as many, oldest first); eviction by `put`
// must close the oldest idle connections of the holdover queue, and only
// when even the model's upper bound of it exceeds the limit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use connmgr_pool::{IdlePool, ManualClock, PoolConfig};

/// Keys are `0..KEYS`.
const KEYS: u8 = 5;
/// Documented in `IdlePool::put`: a stripe holding more than
/// `max(2 * max_idle_total, 1024)` FIFO records moves its oldest idle
/// connection to the holdover queue, and eviction of the oldest idle
/// connection starts when that queue holds more (the pool shrinks the 1024
/// to 64 under Miri, as its sizes under checkers).
const MIN_RECORD_LIMIT: usize = if cfg!(miri) { 64 } else { 1024 };

/// A connection that logs its drop.
#[derive(Debug)]
pub struct Conn {
    id: usize,
    log: Arc<Mutex<Vec<usize>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.log.lock().unwrap().push(self.id);
    }
}

#[derive(Arbitrary, Debug)]
pub struct Setup {
    ttl_ms: u16,
    per_key: u8,
    total: u8,
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    Put(u8),
    Take(u8),
    /// `take_if` rejecting ids with `(id + salt) % 3 == 0`.
    TakeIf(u8, u8),
    Advance(u16),
    /// Advance to exactly the oldest deadline (the `now >= deadline` edge).
    AdvanceToNextExpiry,
    Reap,
    Clear,
    NextExpiry,
    /// `n` rounds of put + take on one key: grows the FIFO backlog behind
    /// an older idle connection, up to the eviction limit.
    Churn(u8, u8),
}

/// One FIFO record of the model: the connection id and whether that
/// connection is still idle in the pool.
struct Model {
    now: Instant,
    ttl: Duration,
    per_key: usize,
    total: usize,
    record_limit: usize,
    keys: HashMap<u8, VecDeque<(Instant, usize)>>,
    /// Records in put order, (id, key): a superset of the pool's FIFO
    /// (which may have unlinked more dead records from its head).
    fifo: VecDeque<(usize, u8)>,
    /// Connections moved to the holdover queue, in move order: a superset
    /// of the pool's holdover queue, as `fifo` is of its FIFO.
    hold: VecDeque<(usize, u8)>,
    /// Moves the pool reported so far (`holdover_moves`).
    moves: usize,
    /// Ids of connections idle in the pool.
    idle: HashMap<usize, u8>,
}

impl Model {
    fn len(&self) -> usize {
        self.idle.len()
    }

    fn len_for(&self, k: u8) -> usize {
        self.keys.get(&k).map_or(0, VecDeque::len)
    }

    fn remove_idle(&mut self, id: usize) {
        let k = self.idle.remove(&id).expect("idle");
        let q = self.keys.get_mut(&k).unwrap();
        q.retain(|&(_, i)| i != id);
        if q.is_empty() {
            self.keys.remove(&k);
        }
    }

    fn head_is_dead(&self) -> bool {
        self.fifo
            .front()
            .is_some_and(|(id, _)| !self.idle.contains_key(id))
    }

    fn hold_head_is_dead(&self) -> bool {
        self.hold
            .front()
            .is_some_and(|(id, _)| !self.idle.contains_key(id))
    }

    /// Unlinks the dead records at the head of both queues.
    fn pop_dead_heads(&mut self) {
        while self.hold_head_is_dead() {
            self.hold.pop_front();
        }
        while self.head_is_dead() {
            self.fifo.pop_front();
        }
    }

    /// `put` moved `n` idle connections off the FIFO's head: the oldest
    /// idle ones in it (the dead records before each are unlinked).
    fn moved(&mut self, n: usize) {
        for _ in 0..n {
            while self.head_is_dead() {
                self.fifo.pop_front();
            }
            assert!(
                self.fifo.len() > self.record_limit,
                "put moved an idle connection with at most {} FIFO records (limit {})",
                self.fifo.len(),
                self.record_limit
            );
            let head = self.fifo.pop_front().expect("an idle connection to move");
            self.hold.push_back(head);
        }
    }

    /// `put`: `Ok(())` or `Err(())` when a cap is full.
    /// `put` as the pool does it: refused at a full cap, unless something
    /// is due, in which case the pool is reaped first and the put tried
    /// once more. Returns the outcome and the ids the reap closed (sorted).
    fn put(&mut self, k: u8, id: usize) -> (Result<(), ()>, Vec<usize>) {
        if self.try_put(k, id).is_ok() {
            return (Ok(()), Vec::new());
        }
        if self.next_expiry().is_none_or(|at| at > self.now) {
            return (Err(()), Vec::new());
        }
        let reaped = sorted(self.reap());
        (self.try_put(k, id), reaped)
    }

    fn try_put(&mut self, k: u8, id: usize) -> Result<(), ()> {
        if self.len() >= self.total || self.len_for(k) >= self.per_key {
            return Err(());
        }
        let deadline = self.now.checked_add(self.ttl).expect("no overflow here");
        self.keys.entry(k).or_default().push_back((deadline, id));
        self.idle.insert(id, k);
        self.fifo.push_back((id, k));
        Ok(())
    }

    /// `put` closed `evicted` (sorted) early: they must be the oldest idle
    /// connections of the holdover queue, and that must have been over its
    /// limit.
    fn evicted(&mut self, evicted: &[usize]) {
        if evicted.is_empty() {
            return;
        }
        assert!(
            self.hold.len() > self.record_limit,
            "put evicted {evicted:?} with at most {} holdover records (limit {})",
            self.hold.len(),
            self.record_limit
        );
        let oldest: Vec<usize> = self
            .hold
            .iter()
            .filter(|(id, _)| self.idle.contains_key(id))
            .map(|&(id, _)| id)
            .take(evicted.len())
            .collect();
        assert_eq!(
            sorted(oldest.clone()),
            evicted,
            "put evicts the oldest idle connections"
        );
        let last = *oldest.last().unwrap();
        while let Some((id, _)) = self.hold.pop_front() {
            if self.idle.contains_key(&id) {
                self.remove_idle(id);
            }
            if id == last {
                break;
            }
        }
    }

    /// `take_if`: (returned id, ids dropped on the way, ids offered to `f`).
    fn take(
        &mut self,
        k: u8,
        f: impl Fn(usize) -> bool,
    ) -> (Option<usize>, Vec<usize>, Vec<usize>) {
        let (mut dropped, mut offered) = (Vec::new(), Vec::new());
        let mut found = None;
        if let Some(q) = self.keys.get_mut(&k) {
            while let Some((deadline, id)) = q.pop_back() {
                self.idle.remove(&id);
                if self.now >= deadline {
                    dropped.push(id);
                    continue;
                }
                offered.push(id);
                if f(id) {
                    found = Some(id);
                    break;
                }
                dropped.push(id);
            }
            if q.is_empty() {
                self.keys.remove(&k);
            }
        }
        (found, dropped, offered)
    }

    fn expired(&self) -> Vec<usize> {
        self.keys
            .values()
            .flatten()
            .filter(|&&(d, _)| self.now >= d)
            .map(|&(_, id)| id)
            .collect()
    }

    fn reap(&mut self) -> Vec<usize> {
        let expired = self.expired();
        for &id in &expired {
            self.remove_idle(id);
        }
        // Both queues: pop while the head is dead (taken, or just reaped).
        self.pop_dead_heads();
        expired
    }

    fn clear(&mut self) -> Vec<usize> {
        let all: Vec<usize> = self.idle.keys().copied().collect();
        self.keys.clear();
        self.idle.clear();
        self.fifo.clear();
        self.hold.clear();
        all
    }

    fn next_expiry(&mut self) -> Option<Instant> {
        self.pop_dead_heads();
        let deadline = |&(id, k): &(usize, u8)| {
            self.keys[&k]
                .iter()
                .find(|&&(_, i)| i == id)
                .map(|&(d, _)| d)
        };
        let hold = self.hold.front().and_then(deadline);
        let fifo = self.fifo.front().and_then(deadline);
        hold.into_iter().chain(fifo).min()
    }
}

struct Harness {
    pool: IdlePool<u8, Conn, ManualClock>,
    clock: ManualClock,
    log: Arc<Mutex<Vec<usize>>>,
    next_id: usize,
    /// How many times each id was dropped.
    drops: Vec<u32>,
}

impl Harness {
    fn conn(&mut self) -> Conn {
        let id = self.next_id;
        self.next_id += 1;
        self.drops.push(0);
        Conn {
            id,
            log: Arc::clone(&self.log),
        }
    }

    /// The ids dropped since the last call, sorted; counted in `drops`.
    fn dropped(&mut self) -> Vec<usize> {
        let mut ids = std::mem::take(&mut *self.log.lock().unwrap());
        for &id in &ids {
            self.drops[id] += 1;
        }
        ids.sort_unstable();
        ids
    }

    /// Drops a connection the pool handed back and checks that was its
    /// first and only drop.
    fn close(&mut self, conn: Conn) {
        let id = conn.id;
        drop(conn);
        assert_eq!(self.dropped(), [id], "dropping a returned connection");
    }
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

/// Runs one input; panics on the first answer that differs from the model.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let ops = decode_ops(&mut u);
    let config = PoolConfig::default().with_ttl(Duration::from_millis(u64::from(setup.ttl_ms % 20_000) + 1)).with_max_idle_per_key(usize::from(setup.per_key % 4) + 1).with_max_idle_total(usize::from(setup.total % 8) + 1);
    let clock = ManualClock::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let pool = IdlePool::with_config(config.clone(), clock.clone()).expect("valid config");
    let mut m = Model {
        now: clock.now(),
        ttl: config.ttl,
        per_key: config.max_idle_per_key,
        total: config.max_idle_total,
        record_limit: (2 * config.max_idle_total).max(MIN_RECORD_LIMIT),
        keys: HashMap::new(),
        fifo: VecDeque::new(),
        hold: VecDeque::new(),
        moves: 0,
        idle: HashMap::new(),
    };
    let mut h = Harness {
        pool,
        clock,
        log,
        next_id: 0,
        drops: Vec::new(),
    };

    for (step, &op) in ops.iter().enumerate() {
        apply(&mut h, &mut m, op);
        assert_eq!(h.pool.len(), m.len(), "len after step {step} {op:?}");
        assert_eq!(h.pool.is_empty(), m.len() == 0);
        for k in 0..KEYS {
            assert_eq!(
                h.pool.len_for(&k),
                m.len_for(k),
                "len_for({k}) after step {step} {op:?}"
            );
        }
        let records = h.pool.fifo_records();
        let held = h.pool.holdover_records();
        assert!(
            records - held <= m.fifo.len() && held <= m.hold.len(),
            "FIFO records {records} ({held} held) > model bound after step {step} {op:?}"
        );
        assert!(
            records >= m.len(),
            "fewer FIFO records than idle connections after step {step} {op:?}"
        );
        assert!(
            records - held <= m.record_limit && held <= m.record_limit,
            "FIFO or holdover queue over its limit after step {step} {op:?}"
        );
        if let Op::Reap | Op::Clear | Op::NextExpiry | Op::AdvanceToNextExpiry = op {
            assert_eq!(
                (records - held, held),
                (m.fifo.len(), m.hold.len()),
                "FIFO and holdover records after step {step} {op:?}"
            );
            // A key keeps its entry while it has an idle connection or a
            // record in either queue; then the entry is freed.
            let keys: std::collections::HashSet<u8> = m
                .idle
                .values()
                .copied()
                .chain(m.fifo.iter().chain(m.hold.iter()).map(|&(_, k)| k))
                .collect();
            assert_eq!(
                h.pool.key_entries(),
                keys.len(),
                "key entries after step {step} {op:?}"
            );
        }
        assert_eq!(
            h.dropped(),
            Vec::<usize>::new(),
            "stray drop after step {step} {op:?}"
        );
    }

    // The pool's drop closes every idle connection, once.
    let still_idle = sorted(m.idle.keys().copied().collect());
    let Harness {
        pool,
        log,
        mut drops,
        ..
    } = h;
    drop(pool);
    let mut at_drop = std::mem::take(&mut *log.lock().unwrap());
    for &id in &at_drop {
        drops[id] += 1;
    }
    at_drop.sort_unstable();
    assert_eq!(
        at_drop, still_idle,
        "the pool's drop closes exactly the idle connections"
    );
    for (id, &n) in drops.iter().enumerate() {
        assert_eq!(n, 1, "connection {id} dropped {n} times");
    }
}

fn apply(h: &mut Harness, m: &mut Model, op: Op) {
    match op {
        Op::Put(k) => put(h, m, k % KEYS),
        Op::Take(k) => take(h, m, k % KEYS, None),
        Op::TakeIf(k, salt) => take(h, m, k % KEYS, Some(salt)),
        Op::Advance(ms) => {
            let by = Duration::from_millis(u64::from(ms));
            h.clock.advance(by);
            m.now += by;
        }
        Op::AdvanceToNextExpiry => {
            if let Some(d) = m.next_expiry() {
                if d > m.now {
                    h.clock.set(d);
                    m.now = d;
                }
            }
            // The model unlinked dead head records; so must the pool.
            let _ = h.pool.next_expiry();
        }
        Op::Reap => {
            let want = sorted(m.reap());
            assert_eq!(h.pool.reap(), want.len(), "reap count");
            assert_eq!(h.dropped(), want, "reap closes exactly the expired ones");
        }
        Op::Clear => {
            let want = sorted(m.clear());
            assert_eq!(h.pool.clear(), want.len(), "clear count");
            assert_eq!(h.dropped(), want, "clear closes every idle connection");
        }
        Op::NextExpiry => {
            assert_eq!(h.pool.next_expiry(), m.next_expiry(), "next_expiry");
        }
        Op::Churn(k, n) => {
            let k = k % KEYS;
            for _ in 0..n {
                put(h, m, k);
                take(h, m, k, None);
            }
        }
    }
}

fn put(h: &mut Harness, m: &mut Model, k: u8) {
    let conn = h.conn();
    let id = conn.id;
    let got = h.pool.put(k, conn);
    let (want, reaped) = m.put(k, id);
    // What the put closed: the expired connections its reap closed (if a
    // cap was full while something was due), then any it evicted.
    let dropped = h.dropped();
    let evicted: Vec<usize> = dropped
        .iter()
        .copied()
        .filter(|d| !reaped.contains(d))
        .collect();
    assert_eq!(
        dropped.len() - evicted.len(),
        reaped.len(),
        "put({k}) reaped {dropped:?}, the model {reaped:?}"
    );
    // Moves happen in the put's housekeeping, before any eviction.
    let moves = h.pool.holdover_moves();
    m.moved(moves - m.moves);
    m.moves = moves;
    match (got, want) {
        (Ok(()), Ok(())) => m.evicted(&evicted),
        (Err(back), Err(())) => {
            assert_eq!(back.id, id, "put hands back the same connection");
            assert_eq!(
                evicted,
                Vec::<usize>::new(),
                "a refused put drops nothing but what its reap closed"
            );
            h.close(back);
        }
        (got, want) => panic!(
            "put({k}): pool {:?}, model {want:?} (len {}, len_for {})",
            got.map_err(|c| c.id),
            m.len(),
            m.len_for(k)
        ),
    }
}

fn take(h: &mut Harness, m: &mut Model, k: u8, salt: Option<u8>) {
    let accept = |id: usize| salt.is_none_or(|s| (id + usize::from(s)) % 3 != 0);
    let (want, want_dropped, want_offered) = m.take(k, accept);
    let mut offered = Vec::new();
    let got = match salt {
        None => h.pool.take(&k),
        Some(_) => h.pool.take_if(&k, |c| {
            offered.push(c.id);
            accept(c.id)
        }),
    };
    assert_eq!(got.as_ref().map(|c| c.id), want, "take({k}) / take_if");
    if salt.is_some() {
        assert_eq!(
            offered, want_offered,
            "take_if offers unexpired ones, freshest first"
        );
    }
    assert_eq!(
        h.dropped(),
        sorted(want_dropped),
        "take drops exactly the expired/rejected ones"
    );
    if let Some(conn) = got {
        h.close(conn);
    }
}

include!("decode.rs");
