//! The public [`IdlePool`] API over the machinery in [`crate::raw`].

use std::fmt;
use std::hash::Hash;
use std::mem::size_of;
use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;
use crossbeam_utils::CachePadded;

use crate::quota::Quota;
use crate::raw::{self, Entry, Fifo, KeyMap, Node, Reserve, Retired};
use crate::sync::{fence, thread_index, AtomicBool, Ordering};
use crate::{Error, PoolConfig};

mod records;
use crate::{Clock, SystemClock};

/// Fewest FIFO records a stripe may hold before `put` moves its idle head
/// to the holdover queue (see [`IdlePool::put`]); also the fewest proxies
/// that queue holds before `put` closes its oldest early.
const MIN_RECORD_LIMIT: usize = if cfg!(miri) { 64 } else { 1024 };
/// Under loom the limit is this, whatever the caps, so that a model
/// reaches it in a few puts.
const LOOM_RECORD_LIMIT: usize = 2;
/// Dead records `put` unlinks from the FIFO head on the way out.
const PUT_CLEANUP: usize = 2;
/// `put` leaves up to this many records of taken connections queued (beyond
/// one per idle connection), so keys that churn keep their entry.
const DEAD_SLACK: usize = if cfg!(loom) { 0 } else { 64 };
/// `reap` and `clear` re-pin after this many records, so a long backlog
/// does not hold back reclamation.
const REPIN_EVERY: usize = if cfg!(any(loom, miri)) { 4 } else { 128 };

/// Idle connections by key, each expiring a fixed TTL after it went idle.
///
/// See the [crate documentation](crate) for a guide. All methods take
/// `&self`; share the pool between threads with an `Arc` (or by reference
/// in a scope).
pub struct IdlePool<K, C, Clk: Clock = SystemClock> {
    config: PoolConfig,
    clock: Clk,
    /// The total cap: reservations across all keys (idle connections,
    /// puts in flight), striped like the FIFO.
    total: Quota,
    /// The expiry FIFO's stripes (a power of two); a put appends to its
    /// thread's stripe. Declared before `map`: dropped first, they close
    /// every connection.
    fifos: Box<[CachePadded<Fifo<K, C>>]>,
    map: KeyMap<K, C>,
    record_limit: usize,
    /// Set by [`IdlePool::watch_next_expiry`] when it found nothing to wait
    /// for; cleared by the [`IdlePool::take_wake_request`] that reports it.
    /// Its own line: every put reads it.
    wake_requested: CachePadded<AtomicBool>,
}

impl<K, C> IdlePool<K, C>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: Send + 'static,
{
    /// A pool on the system clock with the given TTL and the default caps
    /// (8 per key, 65 536 in total).
    ///
    /// # Panics
    ///
    /// If `ttl` is zero. Use [`with_config`](Self::with_config) to get an
    /// error instead.
    ///
    /// **Progress:** allocates; no synchronisation.
    pub fn new(ttl: Duration) -> Self {
        let config = PoolConfig::default().with_ttl(ttl);
        match Self::with_config(config, SystemClock) {
            Ok(pool) => pool,
            Err(e) => panic!("IdlePool::new: {e}"),
        }
    }
}

impl<K, C, Clk> IdlePool<K, C, Clk>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: Send + 'static,
    Clk: Clock,
{
    /// A pool with the given settings and clock.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if the TTL is zero or a cap is zero (or
    /// larger than 2^30); the error names the setting.
    ///
    /// **Progress:** allocates; no synchronisation.
    pub fn with_config(config: PoolConfig, clock: Clk) -> Result<Self, Error> {
        config.validate()?;
        let stripes = stripes();
        let max_total = config.max_idle_total;
        let record_limit = if cfg!(loom) {
            LOOM_RECORD_LIMIT
        } else {
            config
                .max_idle_total
                .saturating_mul(2)
                .max(MIN_RECORD_LIMIT)
        };
        Ok(Self {
            config,
            clock,
            total: Quota::new(max_total, stripes),
            fifos: (0..stripes)
                .map(|_| CachePadded::new(Fifo::new()))
                .collect(),
            map: KeyMap::new(),
            record_limit,
            wake_requested: CachePadded::new(AtomicBool::new(false)),
        })
    }

    /// Parks `conn` as idle under `key`; it expires `ttl` from now.
    ///
    /// # Errors
    ///
    /// Gives `conn` back untouched if `max_idle_per_key` connections are
    /// already idle for `key`, or `max_idle_total` in the pool. Expired
    /// connections count until they are reaped, so a put that finds a cap
    /// full while something is due first reaps (as [`reap`](Self::reap))
    /// and tries once more. Caps hold exactly under any concurrency; near a
    /// cap, a concurrent put that is itself refused can make another one
    /// fail too.
    ///
    /// To keep memory bounded, a put also unlinks a few records of taken
    /// connections from its stripe's head, and in two rare cases closes the
    /// oldest idle connection of its stripe early (the bounds are in the
    /// crate's `raw` module docs).
    ///
    /// **Progress:** lock-free when `key` has an entry (it has idle
    /// connections or had some recently); otherwise the entry is created
    /// under a short per-shard lock, never held while a connection is
    /// touched. A put that finds a cap full while something is due reaps
    /// first, with [`reap`](Self::reap)'s progress.
    ///
    /// **Reclamation:** allocates one node; records unlinked on the way are
    /// retired through crossbeam-epoch (memory only). A connection closed
    /// early, or by the reap before a retry, is dropped in this call.
    ///
    /// ```
    /// use connmgr_pool::IdlePool;
    /// use std::time::Duration;
    ///
    /// let pool = IdlePool::new(Duration::from_secs(60));
    /// assert_eq!(pool.put("peer", 1), Ok(()));
    /// assert_eq!(pool.take(&"peer"), Some(1));
    /// ```
    pub fn put(&self, key: K, conn: C) -> Result<(), C> {
        let now = self.clock.now();
        match self.try_put(&key, conn, now) {
            Ok(()) => Ok(()),
            // Expired connections that nobody reaped yet still count against
            // the caps: if any is due, close what is due and try once more.
            Err(conn) if self.next_expiry().is_some_and(|at| at <= now) => {
                self.reap();
                self.try_put(&key, conn, now)
            }
            Err(conn) => Err(conn),
        }
    }

    /// One attempt of [`put`](Self::put) with the deadline counted from
    /// `now`.
    fn try_put(&self, key: &K, conn: C, now: Instant) -> Result<(), C> {
        let stripe = thread_index() & (self.fifos.len() - 1);
        // The clock (user code) was read before anything is reserved, so a
        // panicking clock leaves no reservation behind.
        let deadline = now.checked_add(self.config.ttl);
        if !self.total.reserve(stripe) {
            return Err(conn);
        }
        // `K::hash`, `K::eq` and `K::clone` run in the lookup: if one
        // panics, the unwinding gives the total-cap unit back.
        let total = TotalUnit { pool: self, stripe };
        let guard = epoch::pin();
        let entry = loop {
            if let Some(entry) = self.map.get(key, &guard) {
                match entry.reserve(self.config.max_idle_per_key) {
                    Reserve::Ok => break entry,
                    Reserve::Full => return Err(conn), // `total` gives the unit back
                    Reserve::Closed => {}
                }
            }
            // Absent or closed: create (born with our reservation), or
            // loop to reserve on an open entry someone else just made.
            if let Some(entry) = self.map.insert(key, &guard) {
                break entry;
            }
        };
        // No user code from here to the push: the reservations are the
        // node's now.
        std::mem::forget(total);
        let fifo = &self.fifos[stripe];
        let node = raw::new_node(conn, deadline, entry, &guard);
        // SAFETY: we hold a reservation on `entry` for this fresh node.
        unsafe { entry.index_push(node, self.config.max_idle_per_key, &guard) };
        fifo.push(node, &guard);
        self.housekeeping(fifo, &guard);
        Ok(())
    }

    /// Takes the freshest unexpired idle connection for `key`.
    ///
    /// Expired connections met on the way (all older than the one
    /// returned) are dropped here. `None` if the key has none.
    ///
    /// **Progress:** lock-free; in the rare case that a reaper unlinked the
    /// taken connection's record meanwhile, this call frees the key's
    /// entry under a short per-shard lock.
    ///
    /// **Reclamation:** the taken connection's node is retired through
    /// crossbeam-epoch (memory only); dropped expired connections are
    /// dropped in this call.
    pub fn take(&self, key: &K) -> Option<C> {
        self.take_if(key, |_| true)
    }

    /// Like [`take`](Self::take), but each unexpired candidate (freshest
    /// first) is offered to `f`; one it rejects is dropped and the search
    /// goes on with the next older one. Use it to skip dead connections.
    ///
    /// `f` runs with the candidate already owned by this call (removed from
    /// the pool), outside any lock, but while this call holds an epoch pin:
    /// a slow `f` (or a slow close of a rejected candidate) blocks no other
    /// call, yet holds back the freeing of retired memory process-wide
    /// until it returns.
    ///
    /// **Progress:** lock-free, plus whatever `f` does.
    ///
    /// **Reclamation:** as for [`take`](Self::take); rejected candidates are
    /// dropped immediately.
    pub fn take_if(&self, key: &K, mut f: impl FnMut(&mut C) -> bool) -> Option<C> {
        let guard = epoch::pin();
        let entry = self.map.get(key, &guard)?;
        let mut now = None;
        while let Some((slot, node_ptr)) = entry.freshest(&guard) {
            // SAFETY: loaded from a slot under `guard`: alive while pinned.
            let node = unsafe { node_ptr.deref() };
            if !node.claim() {
                continue; // lost it to another claimer: look again
            }
            // SAFETY: `node_ptr` was loaded from `slot` of `entry` under
            // `guard` and we just won its claim.
            unsafe { entry.unlink_slot(slot, node_ptr, &guard) };
            // SAFETY: we just won the claim on `node`.
            let mut conn = unsafe { self.finish_claim(node, &guard, None) };
            let now = *now.get_or_insert_with(|| self.clock.now());
            if node.expired(now) || !f(&mut conn) {
                drop(conn);
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// Closes every connection whose deadline has passed and returns how
    /// many it closed.
    ///
    /// O(expired + stripes) plus the records of taken connections it
    /// unlinks on the way: never a scan of the pool. When it returns,
    /// nothing that was due when it read the clock is left idle, except a
    /// put delayed between reading the clock and queueing its record, which
    /// is reaped late by at most that delay (`take` never returns an
    /// expired connection either way). Concurrent reapers drain each
    /// stripe one at a time; connections another reaper closed are counted
    /// by that call.
    ///
    /// **Progress:** lock-free, except that it waits (spinning, then
    /// yielding) for another `reap`, or a `put` moving idle connections,
    /// that holds a stripe where this call has something due. A `reap` run
    /// from a destructor inside a `reap` of the same pool never waits. Key
    /// entries it frees take a short per-shard lock each.
    ///
    /// **Reclamation:** expired connections are dropped in this call; node
    /// memory and freed key entries are retired through crossbeam-epoch.
    pub fn reap(&self) -> usize {
        let now = self.clock.now();
        self.drain(|n| n.is_claimed() || n.expired(now), true)
    }

    /// When the oldest idle connection expires: a reaper can sleep until
    /// then. The earliest deadline among the heads of the FIFO stripes and
    /// of their holdover queues; `None` if the pool is empty (or no such
    /// head ever expires because its deadline overflowed `Instant`). May be
    /// in the past if nobody reaped yet.
    ///
    /// **Progress:** lock-free, O(stripes + records unlinked); unlinks
    /// records of already-taken connections from the head of each stripe
    /// and of its holdover queue on the way (short per-shard lock for each key entry this frees).
    ///
    /// **Reclamation:** unlinked records and freed key entries are retired
    /// through crossbeam-epoch (memory only); no connection is dropped.
    pub fn next_expiry(&self) -> Option<Instant> {
        let guard = epoch::pin();
        let mut next: Option<Instant> = None;
        let mut batch = Retired::new();
        for fifo in self.fifos.iter() {
            // The stripe, then its holdover queue: a move pushes the proxy
            // before it unlinks the stripe's record, so a node that left
            // the stripe before we looked there is in the holdover queue
            // when we look there (the other order could miss it).
            let claimed = |n: &Node<K, C>| n.is_claimed();
            while self
                .pop_and_retire(fifo, false, claimed, &guard, Some(&mut batch))
                .is_some()
            {}
            let head = fifo.peek(&guard).and_then(|n| n.deadline);
            while self
                .pop_and_retire(fifo, true, claimed, &guard, Some(&mut batch))
                .is_some()
            {}
            let held = fifo.hold.peek(&guard).and_then(|n| n.deadline);
            for d in head.into_iter().chain(held) {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        batch.flush(&guard);
        next
    }

    /// [`next_expiry`](Self::next_expiry) for a reaper that sleeps until
    /// then: when it finds nothing that will expire, it also leaves a wake-up
    /// request, which the next successful [`put`](Self::put) collects with
    /// [`take_wake_request`](Self::take_wake_request).
    ///
    /// The two form a handshake that loses no wake-up: if a put races with
    /// this call, either this call sees the new connection's deadline, or
    /// that put's `take_wake_request` returns `true` (or both). A reaper with
    /// a deadline needs no wake-up for later puts: one TTL for all means a
    /// new connection never expires before the connections already idle
    /// (with a clock that does not go backwards, and up to the lateness
    /// described under [`reap`](Self::reap)).
    ///
    /// **Progress:** as [`next_expiry`](Self::next_expiry), plus one store
    /// and one `SeqCst` fence.
    ///
    /// **Reclamation:** as [`next_expiry`](Self::next_expiry).
    pub fn watch_next_expiry(&self) -> Option<Instant> {
        self.wake_requested.store(true, Ordering::Relaxed);
        // Pairs with the fence in `take_wake_request`: of the request store
        // here and a put's FIFO append, at least one is seen by the other
        // side's later load.
        fence(Ordering::SeqCst);
        let next = self.next_expiry();
        if next.is_some() {
            // Nothing to wake for; a put that already took the request
            // makes one spurious wake-up, which is harmless.
            self.wake_requested.store(false, Ordering::Relaxed);
        }
        next
    }

    /// Call after a successful [`put`](Self::put): `true` if a reaper asked
    /// (through [`watch_next_expiry`](Self::watch_next_expiry)) to be woken
    /// when a connection goes idle. The request is cleared: of several puts
    /// racing after one request, exactly one reports it. Meant for one
    /// reaper per pool.
    ///
    /// **Progress:** wait-free: one `SeqCst` fence and a load, plus one
    /// CAS when a request is pending.
    pub fn take_wake_request(&self) -> bool {
        // See `watch_next_expiry`: orders our put's FIFO append before the
        // load of the request.
        fence(Ordering::SeqCst);
        self.wake_requested.load(Ordering::Relaxed)
            && self
                .wake_requested
                .compare_exchange(true, false, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Idle connections in the pool (counting puts in flight): the total
    /// cap less the units spare in the global pool and in every stripe.
    /// Exact when no call is running; while some are, an estimate within
    /// `0..=max_idle_total` (the stripes are read one after the other).
    ///
    /// **Progress:** wait-free (one atomic load per stripe, O(stripes)).
    pub fn len(&self) -> usize {
        self.total.used()
    }

    /// `true` if no connection is idle (see [`len`](Self::len)).
    ///
    /// **Progress:** wait-free, O(stripes).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Idle connections for `key` (counting puts in flight).
    ///
    /// **Progress:** lock-free (a read of the key map, one atomic load).
    pub fn len_for(&self, key: &K) -> usize {
        let guard = epoch::pin();
        self.map.get(key, &guard).map_or(0, Entry::count)
    }

    /// Closes every idle connection and returns how many it closed.
    /// Connections put concurrently may stay.
    ///
    /// **Progress:** lock-free (one CAS per record); the per-shard lock is
    /// taken briefly for each key entry freed.
    ///
    /// **Reclamation:** connections are dropped in this call; memory as for
    /// [`reap`](Self::reap).
    pub fn clear(&self) -> usize {
        self.drain(|_| true, false)
    }

    /// Closes the oldest idle connection of the whole pool (the one that
    /// went idle first, so the first to expire) and returns `true`, or
    /// `false` if nothing is idle. Expired connections nobody reaped yet are
    /// the oldest, so they go first.
    ///
    /// For a caller that needs room for a new connection: a socket budget,
    /// or a dial that failed for want of file descriptors. "Oldest" is
    /// exact within a stripe and compared by deadline across stripes; of
    /// connections that went idle at the same instant, any one is taken. A
    /// connection taken concurrently is not closed: the call then moves on
    /// to the next oldest.
    ///
    /// **Progress:** lock-free; O(stripes) per attempt, plus the records of
    /// taken connections it unlinks on the way (a short per-shard lock for
    /// each key entry this frees).
    ///
    /// **Reclamation:** the closed connection is dropped in this call;
    /// memory as for [`reap`](Self::reap).
    pub fn evict_oldest(&self) -> bool {
        let guard = epoch::pin();
        let mut batch = Retired::new();
        let closed = loop {
            let Some((stripe, hold, target)) = self.oldest_head(&guard, &mut batch) else {
                break false;
            };
            let fifo = &self.fifos[stripe];
            // Pops records of taken connections still ahead of `target`, then
            // `target` itself if it is (still) the head. The node cannot be
            // freed and its address reused while `guard` pins it.
            let is_target = |n: &Node<K, C>| n.is_claimed() || std::ptr::eq(n, target);
            let mut done = false;
            while let Some(closed_one) =
                self.pop_and_retire(fifo, hold, is_target, &guard, Some(&mut batch))
            {
                if closed_one {
                    done = true;
                    break;
                }
            }
            if done {
                // Records of taken connections now at the head go too, so
                // an emptied pool holds no key entries.
                let claimed = |n: &Node<K, C>| n.is_claimed();
                while self
                    .pop_and_retire(fifo, hold, claimed, &guard, Some(&mut batch))
                    .is_some()
                {}
            }
            if done {
                break true;
            }
            // Taken, moved or unlinked meanwhile: look again.
        };
        batch.flush(&guard);
        closed
    }

    /// The stripe, queue and node of the oldest unclaimed idle connection
    /// at the head of any stripe or holdover queue, unlinking records of
    /// taken connections met at those heads.
    fn oldest_head<'g>(
        &self,
        guard: &'g epoch::Guard,
        batch: &mut Retired<K, C>,
    ) -> Option<(usize, bool, &'g Node<K, C>)> {
        let claimed = |n: &Node<K, C>| n.is_claimed();
        let mut best: Option<(usize, bool, &'g Node<K, C>)> = None;
        for (i, fifo) in self.fifos.iter().enumerate() {
            for hold in [false, true] {
                while self
                    .pop_and_retire(fifo, hold, claimed, guard, Some(&mut *batch))
                    .is_some()
                {}
                let head = if hold {
                    fifo.hold.peek(guard)
                } else {
                    fifo.peek(guard)
                };
                let Some(node) = head else { continue };
                // A deadline that overflowed `Instant` sorts last: it never
                // expires, so it went idle no earlier than any other.
                let key = |n: &Node<K, C>| (n.deadline.is_none(), n.deadline);
                if best.is_none_or(|(_, _, b)| key(node) < key(b)) {
                    best = Some((i, hold, node));
                }
            }
        }
        best
    }

    /// Approximate bytes held by the pool's own structures: nodes (one per
    /// queued record), holdover proxies, key entries with their first index
    /// chunk, FIFO and total-cap stripes, bucket arrays. Computed from counters and capacities in O(shards); does
    /// not include the connections' and keys' own heap allocations, nor
    /// memory retired and awaiting epoch reclamation.
    ///
    /// **Progress:** lock-free.
    pub fn memory_usage(&self) -> usize {
        size_of::<Self>()
            + self.fifos.len() * size_of::<CachePadded<Fifo<K, C>>>()
            + self.total.memory_usage()
            + self
                .fifos
                .iter()
                .map(|f| {
                    // A moved node stays allocated behind its proxy.
                    (f.len() + f.hold.len() + 1) * raw::node_size::<K, C>()
                        + (f.hold.len() + 1) * raw::proxy_size::<K, C>()
                })
                .sum::<usize>()
            + self.map.memory_usage()
    }

    /// The pool's TTL.
    ///
    /// **Progress:** wait-free.
    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// The pool's settings.
    ///
    /// **Progress:** wait-free.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Number of key entries currently allocated (for tests of boundedness).
    #[doc(hidden)]
    pub fn key_entries(&self) -> usize {
        self.map.len()
    }

    /// Number of records in the expiry FIFO, holdover proxies included
    /// (for tests of boundedness).
    #[doc(hidden)]
    pub fn fifo_records(&self) -> usize {
        self.fifos.iter().map(|f| f.len() + f.hold.len()).sum()
    }

    /// Number of holdover proxies: idle connections moved off a stripe's
    /// head (for tests).
    #[doc(hidden)]
    pub fn holdover_records(&self) -> usize {
        self.fifos.iter().map(|f| f.hold.len()).sum()
    }

    /// Idle connections moved off a stripe's head since the pool was made
    /// (for tests).
    #[doc(hidden)]
    pub fn holdover_moves(&self) -> usize {
        self.fifos.iter().map(|f| f.hold.moves()).sum()
    }
}

/// One unit of the total cap reserved by a `put` that has not placed its
/// node yet: given back when dropped (the put refused, or unwinding from a
/// panic in the key's `Hash`, `Eq` or `Clone`); forgotten once the node
/// holds it.
struct TotalUnit<'a, K, C, Clk: Clock> {
    pool: &'a IdlePool<K, C, Clk>,
    stripe: usize,
}

impl<K, C, Clk: Clock> Drop for TotalUnit<'_, K, C, Clk> {
    fn drop(&mut self) {
        self.pool.total.release(self.stripe);
    }
}

/// Number of stripes (of the FIFO and of the total cap): a power of two,
/// about twice the CPUs, so threads rarely share one (fewer under the
/// checkers).
fn stripes() -> usize {
    if cfg!(any(loom, miri)) {
        2
    } else {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .saturating_mul(2)
            .next_power_of_two()
            .min(64)
    }
}

impl<K, C, Clk: Clock> fmt::Debug for IdlePool<K, C, Clk> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdlePool")
            .field("len", &self.total.used())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
