//! The machinery behind [`IdlePool`](crate::IdlePool): nodes, the expiry
//! FIFO (one stripe of it), per-key slot indexes and the key map.
//!
//! # Ownership of a node
//!
//! Every idle connection lives in one heap [`Node`]. Its `state` word holds
//! four bits:
//!
//! * `CLAIMED`: set exactly once, by `fetch_or`. The thread whose `fetch_or`
//!   set it owns the connection: it moves it out and either returns it or
//!   drops it on the spot. Nobody else ever touches the connection.
//! * `IN_FIFO`: the node is (or was, until the head moved past it) linked
//!   into the expiry FIFO.
//! * `IN_INDEX`: the node is in a slot of its key's index.
//! * `IN_HOLD`: a [`Proxy`] in its stripe's holdover queue points to it (the
//!   node stayed idle at the head of a FIFO stripe that had too many
//!   records queued, and was moved; see [`Holdover`]).
//!
//! The link bits are references. The thread that clears the last one
//! (the node is then unreachable from the FIFO, the index and the
//! holdover queue) retires the node's
//! memory with `defer_destroy`. A node's memory holds no user value by then
//! (the connection left when it was claimed), so deferred destruction never
//! runs a connection's destructor.

use std::hash::{BuildHasher, Hash};
use std::mem::{size_of, MaybeUninit};
use std::ptr;
use std::time::Instant;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};
use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, UnsafeCell};

const CLAIMED: usize = 1;
const IN_FIFO: usize = 2;
const IN_INDEX: usize = 4;
const IN_HOLD: usize = 8;
const LINKS: usize = IN_FIFO | IN_INDEX | IN_HOLD;

/// Top bit of [`Entry::live`]: the entry is closed (had no idle connection
/// and no FIFO record left, and is being unhooked); no reservation may be
/// taken on it any more.
pub(crate) const CLOSED: u64 = 1 << 63;
/// One idle reservation in [`Entry::live`] (low 32 bits).
const IDLE_ONE: u64 = 1;
const IDLE_MASK: u64 = (1 << 32) - 1;
/// One FIFO record in [`Entry::live`] (bits 32..63).
const RECORD_ONE: u64 = 1 << 32;

/// One idle connection, linked into its key's index and into the FIFO or,
/// once moved, its stripe's holdover queue (see [`Holdover`]).
pub(crate) struct Node<K, C> {
    state: AtomicUsize,
    /// `None`: never expires (`now + ttl` overflowed `Instant`).
    pub(crate) deadline: Option<Instant>,
    /// Put stamp: higher is fresher (see [`Entry::next_stamp`]).
    stamp: u64,
    /// The key entry holding this node's reservation. Valid while the node
    /// is unclaimed (the entry cannot close while it holds a reservation)
    /// and, after that, for as long as the claimer stays pinned.
    entry: *const Entry<K, C>,
    conn: UnsafeCell<MaybeUninit<C>>,
    /// FIFO link towards newer nodes.
    next: Atomic<Node<K, C>>,
}

// SAFETY: a `Node` is shared between threads through the FIFO and the
// index. Its connection is only ever accessed by the unique thread that won
// the `CLAIMED` bit, which moves it out: that is a transfer of `C` between
// threads, so `C: Send` suffices (no `&C` is ever shared). The `entry`
// pointer gives shared access to `Entry<K, C>` (which holds a `K` that is
// compared from many threads and dropped on whichever thread reclaims it),
// hence `K: Send + Sync`.
unsafe impl<K: Send + Sync, C: Send> Send for Node<K, C> {}
// SAFETY: see the `Send` impl; every other field is atomic or immutable.
unsafe impl<K: Send + Sync, C: Send> Sync for Node<K, C> {}

impl<K, C> Node<K, C> {
    fn new(conn: C, deadline: Option<Instant>, entry: &Entry<K, C>) -> Self {
        Self {
            state: AtomicUsize::new(IN_FIFO | IN_INDEX),
            deadline,
            stamp: entry.next_stamp(),
            entry,
            conn: UnsafeCell::new(MaybeUninit::new(conn)),
            next: Atomic::null(),
        }
    }

    /// The FIFO's dummy: born claimed, never indexed, holds no connection.
    fn sentinel() -> Self {
        Self {
            state: AtomicUsize::new(CLAIMED | IN_FIFO),
            deadline: None,
            stamp: 0,
            entry: ptr::null(),
            conn: UnsafeCell::new(MaybeUninit::uninit()),
            next: Atomic::null(),
        }
    }

    #[inline]
    pub(crate) fn is_claimed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLAIMED != 0
    }

    /// `true` if the deadline has passed at `now` (a deadline equal to
    /// `now` has passed).
    #[inline]
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Tries to become the node's unique owner. `true` exactly once over the
    /// node's life.
    #[inline]
    pub(crate) fn claim(&self) -> bool {
        // AcqRel: Acquire so the connection written before the node was
        // published is visible to the winner (it was also published with
        // Release/Acquire through the index or FIFO); Release so the
        // claim is ordered before the link releases that follow.
        self.state.fetch_or(CLAIMED, Ordering::AcqRel) & CLAIMED == 0
    }

    /// Takes an `IN_HOLD` link on the node if it is unclaimed (so still in
    /// its key's index, hence not retired); `false` if it is claimed.
    pub(crate) fn try_hold(&self) -> bool {
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            if cur & CLAIMED != 0 {
                return false;
            }
            debug_assert!(cur & IN_HOLD == 0, "a node is moved at most once");
            match self.state.compare_exchange_weak(
                cur,
                cur | IN_HOLD,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Moves the connection out.
    ///
    /// # Safety
    ///
    /// The caller won [`claim`](Self::claim) on this node and calls this at
    /// most once; the node is not the sentinel.
    #[inline]
    unsafe fn take_conn(&self) -> C {
        self.conn.with_mut(|p| {
            // SAFETY: the caller is the unique claimer (contract above), so
            // nobody else reads or writes the cell; the cell was initialised
            // in `Node::new` and is read exactly once, here.
            unsafe { ptr::read(p).assume_init() }
        })
    }

    /// The key entry of this node.
    ///
    /// # Safety
    ///
    /// The caller holds, on behalf of this node, either its idle reservation
    /// (it just won [`claim`](Self::claim) and has not given it back) or its
    /// FIFO record (it just popped the node and has not given that back),
    /// and stays pinned while using the result.
    #[inline]
    pub(crate) unsafe fn entry<'g>(&self, _guard: &'g Guard) -> &'g Entry<K, C> {
        // SAFETY: an entry cannot close while any reservation or record is
        // counted in it, so it has not been retired; the guard keeps it
        // alive after that (contract above).
        unsafe { &*self.entry }
    }

    /// The key entry of this node, which may be closed by now.
    ///
    /// # Safety
    ///
    /// The caller found the node queued (its FIFO record counted in the
    /// entry, so the entry open) at some moment since it pinned `guard`,
    /// and stays pinned while using the result.
    #[inline]
    pub(crate) unsafe fn entry_unchecked<'g>(&self, _guard: &'g Guard) -> &'g Entry<K, C> {
        // SAFETY: the entry was open after the pin began, so its
        // retirement, if any, came later: the guard keeps it alive.
        unsafe { &*self.entry }
    }
}

/// Clears `bit` (one of the link bits) and retires the node if it was the
/// last link.
///
/// # Safety
///
/// The caller has just unlinked `node` from the structure that `bit` stands
/// for, and is the only thread that does so for that structure.
unsafe fn release<K, C>(
    node: Shared<'_, Node<K, C>>,
    bit: usize,
    guard: &Guard,
    batch: Option<&mut Retired<K, C>>,
) {
    // SAFETY: the node is still linked through `bit` (contract), so it is
    // alive.
    let n = unsafe { node.deref() };
    let prev = n.state.fetch_and(!bit, Ordering::AcqRel);
    debug_assert!(prev & bit != 0, "link released twice");
    if prev & LINKS == bit {
        debug_assert!(prev & CLAIMED != 0, "retiring an unclaimed node");
        match batch {
            Some(batch) => batch.add(node, guard),
            // SAFETY: all links are gone, so no new reference to the node
            // can be made; threads pinned now keep it alive until they
            // unpin. The node's connection was moved out when it was
            // claimed, so freeing it drops no user value.
            None => unsafe { guard.defer_destroy(node) },
        }
    }
}

/// Nodes retired together: one deferred call frees up to [`RETIRE_BATCH`]
/// of them, instead of one epoch-bag slot each. Used by the calls that
/// unlink many records at once (`reap`, `clear`, `next_expiry`).
pub(crate) struct Retired<K, C> {
    nodes: Vec<*mut Node<K, C>>,
}

/// Nodes per deferred call (small under the checkers).
const RETIRE_BATCH: usize = if cfg!(any(loom, miri)) { 2 } else { 64 };

impl<K, C> Retired<K, C> {
    pub(crate) fn new() -> Self {
        Self { nodes: Vec::new() }
    }

    /// Adds a node whose last link was just released.
    fn add(&mut self, node: Shared<'_, Node<K, C>>, guard: &Guard) {
        if self.nodes.capacity() == 0 {
            self.nodes.reserve_exact(RETIRE_BATCH);
        }
        self.nodes.push(node.as_raw().cast_mut());
        if self.nodes.len() >= RETIRE_BATCH {
            self.flush(guard);
        }
    }

    /// Defers freeing every node added so far.
    pub(crate) fn flush(&mut self, guard: &Guard) {
        if self.nodes.is_empty() {
            return;
        }
        let nodes = std::mem::take(&mut self.nodes);
        // SAFETY: every node here had all links released (see `release`),
        // so it is unreachable for threads that pin from now on; threads
        // pinned now keep it alive until they unpin, which the deferral
        // waits for. Its connection was moved out when it was claimed, so
        // freeing it drops no user value. The closure owns the only
        // pointers to the nodes; nodes are `Send` (see their impls), so
        // freeing them on whichever thread runs the closure is fine.
        unsafe {
            guard.defer_unchecked(move || {
                for n in nodes {
                    drop(Owned::from_raw(n));
                }
            });
        }
    }
}

impl<K, C> Drop for Retired<K, C> {
    fn drop(&mut self) {
        // Reached with nodes only on unwinding (callers flush): defer them
        // anyway rather than leak.
        if !self.nodes.is_empty() {
            let guard = epoch::pin();
            self.flush(&guard);
        }
    }
}

/// Slots per chunk of a key's index. Tiny under loom so that a per-key cap
/// of 2 already needs a second chunk.
const CHUNK: usize = if cfg!(loom) { 1 } else { 8 };

/// A fixed run of index slots, plus the link to the next run. Slots are
/// written in place: a slot holds null or a node that holds its `IN_INDEX`
/// link. Chunks are only ever appended (at most
/// `ceil(max_idle_per_key / CHUNK)` per entry) and are freed with their
/// entry.
pub(crate) struct Chunk<K, C> {
    slots: [Atomic<Node<K, C>>; CHUNK],
    next: Atomic<Chunk<K, C>>,
}

impl<K, C> Chunk<K, C> {
    fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| Atomic::null()),
            next: Atomic::null(),
        }
    }
}

impl<K, C> Drop for Chunk<K, C> {
    fn drop(&mut self) {
        // SAFETY: a chunk is dropped only with its entry, which is then
        // unreachable (retired through the epoch, or the map is being
        // dropped); the chunks after it belong to it alone.
        let guard = unsafe { epoch::unprotected() };
        let mut next = self.next.load(Ordering::Relaxed, guard);
        while !next.is_null() {
            // SAFETY: exclusively owned (see above); each freed once. Its
            // own `next` is detached first so the drop is not recursive.
            let owned = unsafe { next.into_owned() };
            next = owned.next.swap(Shared::null(), Ordering::Relaxed, guard);
            drop(owned);
        }
    }
}

/// Per-key state: a reservation counter and an in-place slot index.
///
/// An entry lives while it counts an idle connection or a record of one
/// of its nodes (a FIFO record, or a holdover proxy's): keys that churn (put, take, put, ...) keep their entry
/// and never touch the shard lock; once the records of an emptied key have
/// left the FIFO, whoever gives back the last count closes the entry.
pub(crate) struct Entry<K, C> {
    pub(crate) key: K,
    /// The map's hash of `key`, kept so closing the entry need not rehash.
    hash: u64,
    /// Idle reservations (connections counted for this key, puts in flight
    /// included) in bits 0..32, FIFO records in bits 32..63, [`CLOSED`] in
    /// the top bit.
    pub(crate) live: AtomicU64,
    /// Put stamp, for "freshest first". A plain load and store, not an
    /// RMW: puts racing on one key may get equal stamps (their order is
    /// not defined anyway); sequential puts get increasing ones.
    stamp: AtomicU64,
    /// The index: slots holding null, an unclaimed node (idle), or a
    /// claimed node not yet unlinked (free for the next put to overwrite).
    slots: Chunk<K, C>,
}

/// An index slot and the node loaded from it.
pub(crate) type Found<'g, K, C> = (&'g Atomic<Node<K, C>>, Shared<'g, Node<K, C>>);

/// Outcome of a per-key reservation attempt.
pub(crate) enum Reserve {
    Ok,
    Full,
    Closed,
}

impl<K, C> Entry<K, C> {
    fn new(key: K, hash: u64) -> Self {
        Self {
            key,
            hash,
            // Born with one reservation and one record, for the put that
            // creates it.
            live: AtomicU64::new(IDLE_ONE | RECORD_ONE),
            stamp: AtomicU64::new(0),
            slots: Chunk::new(),
        }
    }

    /// Takes one idle reservation (and the record that goes with it) if the
    /// entry is open and below `cap`.
    pub(crate) fn reserve(&self, cap: usize) -> Reserve {
        let mut cur = self.live.load(Ordering::Relaxed);
        loop {
            if cur & CLOSED != 0 {
                return Reserve::Closed;
            }
            if cur & IDLE_MASK >= cap as u64 {
                return Reserve::Full;
            }
            let next = cur + IDLE_ONE + RECORD_ONE;
            match self
                .live
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Reserve::Ok,
                Err(now) => cur = now,
            }
        }
    }

    /// Counts one more FIFO record (a holdover proxy) unless the entry is
    /// closed.
    ///
    /// Acquire on every read: a caller that finds the entry closed then
    /// sees what happened before the close (its node's records unlinked),
    /// so it does not look at a stale queue head again and again.
    pub(crate) fn try_add_record(&self) -> bool {
        let mut cur = self.live.load(Ordering::Acquire);
        loop {
            if cur & CLOSED != 0 {
                return false;
            }
            match self.live.compare_exchange_weak(
                cur,
                cur + RECORD_ONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// The next put stamp (see [`Entry::stamp`]).
    pub(crate) fn next_stamp(&self) -> u64 {
        let s = self.stamp.load(Ordering::Relaxed).wrapping_add(1);
        self.stamp.store(s, Ordering::Relaxed);
        s
    }

    /// Number of idle connections counted for this key.
    pub(crate) fn count(&self) -> usize {
        let v = self.live.load(Ordering::Acquire);
        if v & CLOSED != 0 {
            0
        } else {
            (v & IDLE_MASK) as usize
        }
    }

    /// Gives back one idle reservation. Returns `true` if nothing is
    /// counted any more, in which case the caller must try
    /// [`KeyMap::close`].
    pub(crate) fn unreserve(&self) -> bool {
        let prev = self.live.fetch_sub(IDLE_ONE, Ordering::AcqRel);
        debug_assert!(prev & IDLE_MASK != 0, "per-key count underflow");
        prev == IDLE_ONE
    }

    /// Gives back one FIFO record. Returns `true` if nothing is counted any
    /// more, in which case the caller must try [`KeyMap::close`].
    pub(crate) fn release_record(&self) -> bool {
        let prev = self.live.fetch_sub(RECORD_ONE, Ordering::AcqRel);
        debug_assert!(prev & !CLOSED >= RECORD_ONE, "record count underflow");
        prev == RECORD_ONE
    }

    /// The chunks of the index, first to last.
    fn chunks<'g>(&'g self, guard: &'g Guard) -> impl Iterator<Item = &'g Chunk<K, C>> + 'g {
        std::iter::successors(Some(&self.slots), move |c| {
            // SAFETY: chunks are freed only with their entry, which the
            // caller keeps alive (it is pinned and holds or found the entry
            // under `guard`).
            unsafe { c.next.load(Ordering::Acquire, guard).as_ref() }
        })
    }

    /// Stores `node` in a free slot of the index: a null one, or one whose
    /// node is claimed (that node's `IN_INDEX` link is released). Appends
    /// a chunk if every slot is taken and fewer than
    /// `ceil(cap / CHUNK)` chunks exist.
    ///
    /// Lock-free: the caller's reservation means at most `cap - 1` other
    /// nodes are unclaimed, so a free slot exists at every instant; a pass
    /// that finds none lost each slot to a concurrent put or saw it freed
    /// only after passing it, i.e. others made progress.
    ///
    /// # Safety
    ///
    /// The caller holds a reservation on this entry for `node` (so it is
    /// not closed), and `node` is a fresh node, not yet in any slot.
    pub(crate) unsafe fn index_push(
        &self,
        node: Shared<'_, Node<K, C>>,
        cap: usize,
        guard: &Guard,
    ) {
        let max_chunks = cap.div_ceil(CHUNK);
        loop {
            let mut chunk = &self.slots;
            let mut chunks = 1;
            loop {
                for slot in &chunk.slots {
                    let cur = slot.load(Ordering::Acquire, guard);
                    // SAFETY: a node in a slot holds its IN_INDEX link, so it
                    // is alive under `guard`.
                    if let Some(n) = unsafe { cur.as_ref() } {
                        if !n.is_claimed() {
                            continue;
                        }
                    }
                    // Release publishes the node (and its connection) to
                    // takers, which load the slot with Acquire.
                    if slot
                        .compare_exchange(cur, node, Ordering::AcqRel, Ordering::Relaxed, guard)
                        .is_ok()
                    {
                        if !cur.is_null() {
                            // SAFETY: our CAS unlinked the claimed `cur` from
                            // its slot; only one CAS can do that.
                            unsafe { release(cur, IN_INDEX, guard, None) };
                        }
                        return;
                    }
                }
                let next = chunk.next.load(Ordering::Acquire, guard);
                // SAFETY: see `chunks`.
                if let Some(c) = unsafe { next.as_ref() } {
                    chunk = c;
                    chunks += 1;
                    continue;
                }
                if chunks >= max_chunks {
                    break; // every slot we may use was taken: rescan
                }
                // Release publishes the new chunk's (null) slots.
                chunk = match chunk.next.compare_exchange(
                    Shared::null(),
                    Owned::new(Chunk::new()),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                    guard,
                ) {
                    // SAFETY: just published; freed only with the entry.
                    Ok(c) => unsafe { c.deref() },
                    // SAFETY: as for `chunks` (ours is dropped unpublished).
                    Err(e) => unsafe { e.current.deref() },
                };
                chunks += 1;
            }
        }
    }

    /// The freshest (highest stamp) unclaimed node of the index and its
    /// slot, if any. O(slots).
    pub(crate) fn freshest<'g>(&'g self, guard: &'g Guard) -> Option<Found<'g, K, C>> {
        let mut best: Option<(Found<'g, K, C>, u64)> = None;
        for chunk in self.chunks(guard) {
            for slot in &chunk.slots {
                // Acquire: pairs with the publishing CAS in `index_push`.
                let cur = slot.load(Ordering::Acquire, guard);
                // SAFETY: a node in a slot holds its IN_INDEX link, so it is
                // alive under `guard`.
                let Some(n) = (unsafe { cur.as_ref() }) else {
                    continue;
                };
                if n.is_claimed() {
                    continue;
                }
                if best.is_none_or(|(_, s)| n.stamp > s) {
                    best = Some(((slot, cur), n.stamp));
                }
            }
        }
        best.map(|(found, _)| found)
    }

    /// Unlinks the claimed `node` from `slot` unless a put or the entry's
    /// close already did.
    ///
    /// # Safety
    ///
    /// `node` was loaded from `slot` of this entry under `guard`, and the
    /// caller won its claim.
    pub(crate) unsafe fn unlink_slot(
        &self,
        slot: &Atomic<Node<K, C>>,
        node: Shared<'_, Node<K, C>>,
        guard: &Guard,
    ) {
        if slot
            .compare_exchange(
                node,
                Shared::null(),
                Ordering::AcqRel,
                Ordering::Relaxed,
                guard,
            )
            .is_ok()
        {
            // SAFETY: our CAS unlinked `node` from its slot; a node is in
            // at most one slot and only one CAS can take it out.
            unsafe { release(node, IN_INDEX, guard, None) };
        }
    }

    /// Empties every slot, releasing the nodes' `IN_INDEX` links.
    ///
    /// # Safety
    ///
    /// No put can store into the index any more (the entry is closed, or
    /// the map is being dropped), and every node left in it is claimed.
    unsafe fn release_all(&self, guard: &Guard, mut batch: Option<&mut Retired<K, C>>) {
        for chunk in self.chunks(guard) {
            for slot in &chunk.slots {
                // A null slot stays null (no put stores any more), so only
                // occupied ones need the swap.
                if slot.load(Ordering::Relaxed, guard).is_null() {
                    continue;
                }
                let cur = slot.swap(Shared::null(), Ordering::AcqRel, guard);
                if !cur.is_null() {
                    // SAFETY: our swap unlinked it (a racing `unlink_slot`
                    // CAS then fails); claimed (contract).
                    unsafe { release(cur, IN_INDEX, guard, batch.as_deref_mut()) };
                }
            }
        }
    }
}

/// One link of a bucket chain; owned by the table it is reachable from.
struct Cell<K, C> {
    entry: *const Entry<K, C>,
    next: Atomic<Cell<K, C>>,
}

// SAFETY: a cell is a pointer to an entry plus a link; entries are shared
// under `K: Send + Sync`, and nothing about `C` is reachable through a cell
// except via nodes, which are `Send + Sync` under `C: Send`.
unsafe impl<K: Send + Sync, C: Send> Send for Cell<K, C> {}
// SAFETY: as for `Send`; cells are immutable except for the atomic link.
unsafe impl<K: Send + Sync, C: Send> Sync for Cell<K, C> {}

/// A bucket array. Its cells belong to it: dropping a table frees the
/// cells still reachable from it (not the entries).
struct Table<K, C> {
    buckets: Box<[Atomic<Cell<K, C>>]>,
}

impl<K, C> Table<K, C> {
    fn new(n: usize) -> Self {
        Self {
            buckets: (0..n).map(|_| Atomic::null()).collect(),
        }
    }

    fn bucket(&self, hash: u64) -> &Atomic<Cell<K, C>> {
        &self.buckets[(hash >> 32) as usize & (self.buckets.len() - 1)]
    }
}

impl<K, C> Drop for Table<K, C> {
    fn drop(&mut self) {
        // SAFETY: a table is dropped only when unreachable (replaced and
        // retired through the epoch, or the map is being dropped), so no
        // other thread can reach its cells.
        let guard = unsafe { epoch::unprotected() };
        for b in self.buckets.iter() {
            let mut cur = b.load(Ordering::Relaxed, guard);
            while !cur.is_null() {
                // SAFETY: cells reachable from this table belong to it and
                // are freed exactly once, here.
                let cell = unsafe { cur.into_owned() };
                cur = cell.next.load(Ordering::Relaxed, guard);
            }
        }
    }
}

struct Shard<K, C> {
    table: Atomic<Table<K, C>>,
    /// Serialises writers (insert, remove, grow) of this shard.
    write: Mutex<()>,
    len: AtomicUsize,
}

#[cfg(loom)]
type HashBuilder = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
#[cfg(not(loom))]
type HashBuilder = std::collections::hash_map::RandomState;

const INITIAL_BUCKETS: usize = if cfg!(any(loom, miri)) { 2 } else { 16 };

/// Key → entry map: lock-free lookups, per-shard lock for writers.
pub(crate) struct KeyMap<K, C> {
    shards: Box<[CachePadded<Shard<K, C>>]>,
    hasher: HashBuilder,
}

impl<K, C> KeyMap<K, C> {
    pub(crate) fn new() -> Self {
        let shards = if cfg!(loom) {
            1
        } else if cfg!(miri) {
            2
        } else {
            std::thread::available_parallelism()
                .map_or(4, |n| n.get())
                .saturating_mul(4)
                .next_power_of_two()
                .min(256)
        };
        Self {
            shards: (0..shards)
                .map(|_| {
                    CachePadded::new(Shard {
                        table: Atomic::new(Table::new(INITIAL_BUCKETS)),
                        write: Mutex::new(()),
                        len: AtomicUsize::new(0),
                    })
                })
                .collect(),
            hasher: HashBuilder::default(),
        }
    }

    /// Number of entries (open or not yet unhooked).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.len.load(Ordering::Relaxed))
            .sum()
    }

    /// Bytes held by the map's own structures (bucket arrays, cells,
    /// entries), from counters and capacities.
    pub(crate) fn memory_usage(&self) -> usize {
        let guard = epoch::pin();
        let mut bytes = self.shards.len() * size_of::<CachePadded<Shard<K, C>>>();
        for s in self.shards.iter() {
            let t = s.table.load(Ordering::Acquire, &guard);
            // SAFETY: a shard's table is never null and is retired only
            // after being replaced; we are pinned.
            let t = unsafe { t.deref() };
            bytes += size_of::<Table<K, C>>() + t.buckets.len() * size_of::<Atomic<Cell<K, C>>>();
            bytes += s.len.load(Ordering::Relaxed)
                * (size_of::<Cell<K, C>>() + size_of::<Entry<K, C>>());
        }
        bytes
    }
}

impl<K: Hash + Eq, C> KeyMap<K, C> {
    fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &Shard<K, C> {
        &self.shards[hash as usize & (self.shards.len() - 1)]
    }

    /// Finds the entry for `key` (possibly closed). Lock-free.
    pub(crate) fn get<'g>(&self, key: &K, guard: &'g Guard) -> Option<&'g Entry<K, C>> {
        let hash = self.hash(key);
        let table = self.shard(hash).table.load(Ordering::Acquire, guard);
        // SAFETY: never null; retired only after replacement; pinned.
        let table = unsafe { table.deref() };
        find(table, hash, key, guard).map(|(_, e)| e)
    }

    /// Returns an open entry for `key` holding a fresh reservation, or
    /// `None` if an open entry already exists (the caller then reserves on
    /// it). Takes the shard's write lock.
    pub(crate) fn insert<'g>(&self, key: &K, guard: &'g Guard) -> Option<&'g Entry<K, C>>
    where
        K: Clone,
    {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        let _w = shard.write.lock();
        let table_ptr = shard.table.load(Ordering::Acquire, guard);
        // SAFETY: never null; only writers (we hold the lock) replace it.
        let mut table = unsafe { table_ptr.deref() };
        if let Some((cell, entry)) = find(table, hash, key, guard) {
            if entry.live.load(Ordering::Acquire) & CLOSED == 0 {
                return None;
            }
            // A closed entry still hooked in: unhook it for its closer
            // (which retires the entry after its own `remove`).
            // SAFETY: we hold the write lock and `cell` is in `table`.
            unsafe { unlink(table, hash, cell, guard) };
            shard.len.fetch_sub(1, Ordering::Relaxed);
        }
        let len = shard.len.load(Ordering::Relaxed);
        if len >= table.buckets.len() {
            // Grow: a new table with new cells for the same entries.
            let bigger = Table::new(table.buckets.len() * 2);
            for b in table.buckets.iter() {
                let mut cur = b.load(Ordering::Acquire, guard);
                // SAFETY: cells of the current table, which we (the only
                // writer) keep alive; pinned.
                while let Some(c) = unsafe { cur.as_ref() } {
                    // SAFETY: entries reachable from the table are alive.
                    let h = unsafe { (*c.entry).hash };
                    let slot = bigger.bucket(h);
                    let head = slot.load(Ordering::Relaxed, guard);
                    slot.store(
                        Owned::new(Cell {
                            entry: c.entry,
                            next: Atomic::from(head),
                        }),
                        Ordering::Relaxed,
                    );
                    cur = c.next.load(Ordering::Acquire, guard);
                }
            }
            let bigger = Owned::new(bigger).into_shared(guard);
            shard.table.store(bigger, Ordering::Release);
            // SAFETY: the old table is unreachable for new readers; readers
            // pinned now keep it (and its cells) alive.
            unsafe { guard.defer_destroy(table_ptr) };
            // SAFETY: just published, never null.
            table = unsafe { bigger.deref() };
        }
        let entry = Owned::new(Entry::new(key.clone(), hash)).into_shared(guard);
        let slot = table.bucket(hash);
        let head = slot.load(Ordering::Acquire, guard);
        // Release publishes the entry and the cell to lock-free readers.
        slot.store(
            Owned::new(Cell {
                entry: entry.as_raw(),
                next: Atomic::from(head),
            }),
            Ordering::Release,
        );
        shard.len.fetch_add(1, Ordering::Relaxed);
        // SAFETY: just published; retired only after close + remove, which
        // needs our reservation back first.
        Some(unsafe { entry.deref() })
    }

    /// Tries to close `entry` (it just dropped to zero reservations). On
    /// success unhooks it, releases its index and retires it.
    ///
    /// # Safety
    ///
    /// `entry` was obtained under `guard` from this map.
    pub(crate) unsafe fn close(
        &self,
        entry: &Entry<K, C>,
        guard: &Guard,
        batch: Option<&mut Retired<K, C>>,
    ) {
        if entry
            .live
            .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // a put reserved it again
        }
        // Zero reservations: every node ever indexed here is claimed (and
        // its record gone), and no put can index a new one.
        // SAFETY: closed, so no put stores into the index any more; every
        // node in it is claimed (zero reservations).
        unsafe { entry.release_all(guard, batch) };
        let hash = entry.hash;
        let shard = self.shard(hash);
        {
            let _w = shard.write.lock();
            let table = shard.table.load(Ordering::Acquire, guard);
            // SAFETY: never null; we hold the write lock.
            let table = unsafe { table.deref() };
            let mut cur = table.bucket(hash).load(Ordering::Acquire, guard);
            // SAFETY: cells of the current table under the write lock.
            while let Some(c) = unsafe { cur.as_ref() } {
                if ptr::eq(c.entry, entry) {
                    // SAFETY: write lock held; `cur` is in `table`.
                    unsafe { unlink(table, hash, cur, guard) };
                    shard.len.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                cur = c.next.load(Ordering::Acquire, guard);
            }
        }
        // SAFETY: closed (no reservation can be taken) and unhooked from the
        // map (by us or by an `insert` that found it closed), so it is
        // unreachable for threads that pin from now on; only the closer,
        // which won the CAS above, retires it.
        unsafe { guard.defer_destroy(Shared::from(entry as *const Entry<K, C>)) };
    }
}

/// A cell and the entry it points to.
type CellEntry<'g, K, C> = (Shared<'g, Cell<K, C>>, &'g Entry<K, C>);

fn find<'g, K: Eq, C>(
    table: &Table<K, C>,
    hash: u64,
    key: &K,
    guard: &'g Guard,
) -> Option<CellEntry<'g, K, C>> {
    let mut cur = table.bucket(hash).load(Ordering::Acquire, guard);
    // SAFETY: cells are retired only after being unlinked (or with their
    // table); we are pinned, so those we reach are alive.
    while let Some(c) = unsafe { cur.as_ref() } {
        // SAFETY: an entry is retired only after its cell is unlinked, so
        // an entry reached through a cell under `guard` is alive.
        let e = unsafe { &*c.entry };
        if e.key == *key {
            return Some((cur, e));
        }
        cur = c.next.load(Ordering::Acquire, guard);
    }
    None
}

/// Unlinks `cell` from its bucket in `table` and retires it.
///
/// # Safety
///
/// The caller holds the shard's write lock, `table` is the shard's current
/// table and `cell` is linked in it.
unsafe fn unlink<K, C>(
    table: &Table<K, C>,
    hash: u64,
    cell: Shared<'_, Cell<K, C>>,
    guard: &Guard,
) {
    // SAFETY: linked in the table (contract), alive under `guard`.
    let next = unsafe { cell.deref() }.next.load(Ordering::Acquire, guard);
    let mut link = table.bucket(hash);
    loop {
        let cur = link.load(Ordering::Acquire, guard);
        if cur == cell {
            // Readers standing on `cell` still see its `next`, unchanged.
            link.store(next, Ordering::Release);
            // SAFETY: unreachable from the table now; single writer (lock).
            unsafe { guard.defer_destroy(cell) };
            return;
        }
        // SAFETY: `cell` is further down this chain (contract), so `cur` is
        // a live cell of the table.
        link = &unsafe { cur.deref() }.next;
    }
}

impl<K, C> Drop for KeyMap<K, C> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no other thread can reach the map.
        let guard = unsafe { epoch::unprotected() };
        for s in self.shards.iter() {
            let table = s.table.load(Ordering::Relaxed, guard);
            // SAFETY: never null.
            let t = unsafe { table.deref() };
            for b in t.buckets.iter() {
                let mut cur = b.load(Ordering::Relaxed, guard);
                // SAFETY: cells of the (exclusively owned) table.
                while let Some(c) = unsafe { cur.as_ref() } {
                    let e = Shared::from(c.entry);
                    // SAFETY: entries reachable from the table are alive
                    // and owned by the map; the index slots hold the entry's
                    // remaining IN_INDEX links, all of claimed nodes (the
                    // FIFO, dropped first, claimed every node). With
                    // `unprotected` every retirement below happens
                    // immediately.
                    unsafe {
                        e.deref().release_all(guard, None);
                        drop(e.into_owned());
                    }
                    cur = c.next.load(Ordering::Relaxed, guard);
                }
            }
            // SAFETY: exclusively owned; frees the remaining cells.
            drop(unsafe { table.into_owned() });
        }
    }
}

/// A reaper's claim on one FIFO stripe, from [`Fifo::claim_reaping`].
pub(crate) struct ReapingClaim<'a>(&'a AtomicUsize);

impl Drop for ReapingClaim<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// What [`Fifo::claim_reaping`] found.
pub(crate) enum Claim<'a> {
    /// The stripe is ours until the guard is dropped.
    Got(ReapingClaim<'a>),
    /// Another reaper holds it.
    Busy,
    /// This very thread holds it: a connection's destructor, run by our
    /// own reap, is reaping again.
    Reentrant,
}

/// One stripe of the expiry FIFO: a Michael–Scott queue threaded through
/// the nodes themselves. A put appends to the stripe of its thread, so
/// threads do not share a tail; insertion order within a stripe is expiry
/// order (one TTL per pool). Used whole inside a `CachePadded`: head, tail
/// and length share the owning thread's cache line.
pub(crate) struct Fifo<K, C> {
    head: Atomic<Node<K, C>>,
    tail: Atomic<Node<K, C>>,
    /// Records queued (claimed ones included); incremented before linking,
    /// decremented after unlinking, so it never underflows.
    len: AtomicUsize,
    /// The reaper draining this stripe (its thread index + 1), or 0 (see
    /// [`Fifo::claim_reaping`]).
    reaper: AtomicUsize,
    /// Idle nodes moved off this stripe's head (see [`Holdover`]).
    pub(crate) hold: Holdover<K, C>,
}

impl<K, C> Fifo<K, C> {
    pub(crate) fn new() -> Self {
        // SAFETY: not yet shared.
        let guard = unsafe { epoch::unprotected() };
        let sentinel = Owned::new(Node::sentinel()).into_shared(guard);
        Self {
            head: Atomic::from(sentinel),
            tail: Atomic::from(sentinel),
            len: AtomicUsize::new(0),
            reaper: AtomicUsize::new(0),
            hold: Holdover::new(),
        }
    }

    /// Unlinks the oldest record if it is `node` (compared by address), and
    /// returns whether it did.
    pub(crate) fn pop_node(
        &self,
        node: &Node<K, C>,
        guard: &Guard,
        batch: Option<&mut Retired<K, C>>,
    ) -> bool {
        self.pop_if(|n| ptr::eq(n, node), guard, batch).is_some()
    }

    /// Claims the stripe for the reaper on thread `me` (its thread index);
    /// the claim ends when the returned guard is dropped (unwinding
    /// included).
    ///
    /// Only reapers take it, and it protects no memory (every pop is still
    /// a CAS): it keeps two reapers from popping the same head in turns, each
    /// pop a cache-line transfer, which made two reapers slower than one.
    pub(crate) fn claim_reaping(&self, me: usize) -> Claim<'_> {
        let tag = me.wrapping_add(1).max(1);
        // A CAS rather than a swap: loom 0.7 lets a plain store land inside
        // a concurrent swap (tokio-rs/loom#254).
        match self
            .reaper
            .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Claim::Got(ReapingClaim(&self.reaper)),
            Err(holder) if holder == tag => Claim::Reentrant,
            Err(_) => Claim::Busy,
        }
    }

    /// Whether the reaper on thread `me` holds this stripe's claim.
    pub(crate) fn reaped_by(&self, me: usize) -> bool {
        self.reaper.load(Ordering::Relaxed) == me.wrapping_add(1).max(1)
    }

    /// Records queued (claimed ones included).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Appends a fresh node (lock-free).
    pub(crate) fn push(&self, node: Shared<'_, Node<K, C>>, guard: &Guard) {
        self.len.fetch_add(1, Ordering::Relaxed);
        ms_push(&self.tail, node, guard);
    }

    /// The oldest record (claimed or not), without unlinking it.
    pub(crate) fn peek<'g>(&self, guard: &'g Guard) -> Option<&'g Node<K, C>> {
        let head = self.head.load(Ordering::Acquire, guard);
        // SAFETY: the head (the dummy) is alive while it is the head and,
        // after, until threads pinned now unpin; the same holds for its
        // successor, which cannot be unlinked before the head moves to it.
        unsafe { head.deref().next.load(Ordering::Acquire, guard).as_ref() }
    }

    /// Unlinks the oldest record if `pred` accepts it and returns it; the
    /// caller then tries to claim it. Lock-free.
    pub(crate) fn pop_if<'g>(
        &self,
        mut pred: impl FnMut(&Node<K, C>) -> bool,
        guard: &'g Guard,
        batch: Option<&mut Retired<K, C>>,
    ) -> Option<&'g Node<K, C>> {
        let (old, n) = ms_pop_if(&self.head, &self.tail, |n| pred(n), guard)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: our CAS moved the head past the old dummy: we alone
        // unlinked it from the FIFO.
        unsafe { release(old, IN_FIFO, guard, batch) };
        Some(n)
    }
}

/// A Michael–Scott queue link: the FIFO's nodes and the holdover queue's
/// proxies are both threaded through one.
trait Linked: Sized {
    fn next(&self) -> &Atomic<Self>;
}

impl<K, C> Linked for Node<K, C> {
    fn next(&self) -> &Atomic<Self> {
        &self.next
    }
}

impl<K, C> Linked for Proxy<K, C> {
    fn next(&self) -> &Atomic<Self> {
        &self.next
    }
}

/// Appends `item` at `tail` of a Michael–Scott queue (lock-free): links it
/// after the last item with a Release CAS (publishing it), then swings the
/// tail, helping a lagging tail first.
fn ms_push<T: Linked>(tail: &Atomic<T>, item: Shared<'_, T>, guard: &Guard) {
    loop {
        let last = tail.load(Ordering::Acquire, guard);
        // SAFETY: the tail never lags behind the head (pops help it first),
        // so it is linked and alive under `guard`.
        let t = unsafe { last.deref() };
        let next = t.next().load(Ordering::Acquire, guard);
        if !next.is_null() {
            let _ = tail.compare_exchange(last, next, Ordering::Release, Ordering::Relaxed, guard);
            continue;
        }
        if t.next()
            .compare_exchange(
                Shared::null(),
                item,
                Ordering::Release,
                Ordering::Relaxed,
                guard,
            )
            .is_ok()
        {
            let _ = tail.compare_exchange(last, item, Ordering::Release, Ordering::Relaxed, guard);
            return;
        }
    }
}

/// Moves the head of a Michael–Scott queue past its oldest item if `pred`
/// accepts that item (lock-free). Returns the old dummy, which the caller
/// alone unlinked and must dispose of, and the item, the new dummy.
fn ms_pop_if<'g, T: Linked>(
    head: &Atomic<T>,
    tail: &Atomic<T>,
    mut pred: impl FnMut(&T) -> bool,
    guard: &'g Guard,
) -> Option<(Shared<'g, T>, &'g T)> {
    loop {
        let first = head.load(Ordering::Acquire, guard);
        // SAFETY: the head (the dummy) is alive while it is the head and,
        // after, until threads pinned now unpin; the same holds for its
        // successor, which cannot be unlinked before the head moves to it.
        let next = unsafe { first.deref() }
            .next()
            .load(Ordering::Acquire, guard);
        // SAFETY: as above.
        let item = unsafe { next.as_ref() }?;
        if !pred(item) {
            return None;
        }
        let last = tail.load(Ordering::Acquire, guard);
        if last == first {
            // Help the tail past the head before moving the head.
            let _ = tail.compare_exchange(last, next, Ordering::Release, Ordering::Relaxed, guard);
        }
        if head
            .compare_exchange(first, next, Ordering::AcqRel, Ordering::Relaxed, guard)
            .is_ok()
        {
            return Some((first, item));
        }
    }
}

/// A holdover record: points to an idle node that was moved off the head
/// of its FIFO stripe. The sentinel (the queue's first dummy) points to
/// nothing.
struct Proxy<K, C> {
    target: *const Node<K, C>,
    next: Atomic<Proxy<K, C>>,
}

// SAFETY: a proxy is a pointer to a node plus a link; nodes are shared under
// these same bounds (see their impls).
unsafe impl<K: Send + Sync, C: Send> Send for Proxy<K, C> {}
// SAFETY: as for `Send`; `target` is immutable, `next` atomic.
unsafe impl<K: Send + Sync, C: Send> Sync for Proxy<K, C> {}

/// A stripe's holdover queue: a Michael–Scott queue of [`Proxy`] records
/// for idle nodes moved off the stripe's FIFO head.
///
/// Why: a FIFO record stays queued until it reaches the head, so while an
/// old connection idles at the head, the records of connections put and
/// taken after it pile up behind it. Once a stripe holds more records than
/// its limit, `put` moves the idle head here instead of closing it early;
/// the records behind it can then leave. Moves are made in FIFO order, one
/// stripe at a time (under the stripe's reaping claim), so this queue is in
/// deadline order too.
///
/// A moved node is in both queues for a moment: the proxy is pushed before
/// the FIFO record is popped. So a reader that looks at the stripe and then
/// at this queue (never the other way round) meets every node idle
/// throughout its look, in one or the other. A proxy
/// holds the node's `IN_HOLD` link and one record of its entry; whoever
/// pops the proxy gives both back (and claims the node if it pops it for
/// closing). The proxy's own memory is retired once the queue's head has
/// moved past it (it is the dummy until then).
pub(crate) struct Holdover<K, C> {
    head: Atomic<Proxy<K, C>>,
    tail: Atomic<Proxy<K, C>>,
    /// Proxies queued (of claimed nodes too); incremented before linking,
    /// decremented after unlinking.
    len: AtomicUsize,
    /// Proxies ever pushed (for tests).
    moves: AtomicUsize,
}

impl<K, C> Holdover<K, C> {
    fn new() -> Self {
        // SAFETY: not yet shared.
        let guard = unsafe { epoch::unprotected() };
        let sentinel = Owned::new(Proxy {
            target: ptr::null(),
            next: Atomic::null(),
        })
        .into_shared(guard);
        Self {
            head: Atomic::from(sentinel),
            tail: Atomic::from(sentinel),
            len: AtomicUsize::new(0),
            moves: AtomicUsize::new(0),
        }
    }

    /// Proxies ever pushed.
    pub(crate) fn moves(&self) -> usize {
        self.moves.load(Ordering::Relaxed)
    }

    /// Proxies queued.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Moves `node`'s hold onto this queue: appends a proxy for it.
    /// Lock-free (allocates the proxy).
    ///
    /// # Safety
    ///
    /// The caller took `node`'s `IN_HOLD` link ([`Node::try_hold`]) and one
    /// record on its entry ([`Entry::try_add_record`]) for this proxy.
    pub(crate) unsafe fn push(&self, node: &Node<K, C>, guard: &Guard) {
        let proxy = Owned::new(Proxy {
            target: node,
            next: Atomic::null(),
        })
        .into_shared(guard);
        self.len.fetch_add(1, Ordering::Relaxed);
        self.moves.fetch_add(1, Ordering::Relaxed);
        ms_push(&self.tail, proxy, guard);
    }

    /// The node of the oldest proxy, without unlinking it.
    pub(crate) fn peek<'g>(&self, guard: &'g Guard) -> Option<&'g Node<K, C>> {
        let head = self.head.load(Ordering::Acquire, guard);
        // SAFETY: the head (the dummy) is alive while it is the head and,
        // after, until threads pinned now unpin; the same holds for its
        // successor. A queued proxy holds its node's IN_HOLD link, and a
        // node is retired only after that is given back (by the proxy's
        // popper, after the head moved past it), so the node is alive under
        // `guard` too.
        let next = unsafe { head.deref() }.next.load(Ordering::Acquire, guard);
        // SAFETY: see above.
        unsafe { next.as_ref().map(|p| &*p.target) }
    }

    /// Unlinks the oldest proxy if `pred` accepts its node and returns the
    /// node; the caller then owns the proxy's `IN_HOLD` link and entry
    /// record and must give them back ([`release_hold`]). Lock-free.
    pub(crate) fn pop_if<'g>(
        &self,
        mut pred: impl FnMut(&Node<K, C>) -> bool,
        guard: &'g Guard,
    ) -> Option<&'g Node<K, C>> {
        let target = |p: &Proxy<K, C>| {
            // SAFETY: see `peek`.
            unsafe { &*p.target }
        };
        let (old, p) = ms_pop_if(&self.head, &self.tail, |p| pred(target(p)), guard)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: our CAS moved the head past the old dummy: we alone
        // unlinked it; readers that reached it are pinned.
        unsafe { guard.defer_destroy(old) };
        Some(target(p))
    }
}

/// Gives back the `IN_HOLD` link of a node whose proxy the caller popped
/// (after it gave back the proxy's entry record). A pointer, not a
/// reference: with an `unprotected` guard (the pool's drop) the node may be
/// freed inside this call.
///
/// # Safety
///
/// The caller's [`Holdover::pop_if`] returned `node` (or the caller owns a
/// holdover queue being dropped, and `node` is a proxy's target); called
/// once per proxy.
pub(crate) unsafe fn release_hold<K, C>(
    node: *const Node<K, C>,
    guard: &Guard,
    batch: Option<&mut Retired<K, C>>,
) {
    // SAFETY: the popped proxy held the link (contract).
    unsafe { release(Shared::from(node), IN_HOLD, guard, batch) };
}

impl<K, C> Drop for Holdover<K, C> {
    fn drop(&mut self) {
        // Dropped after the stripe's FIFO records (it is a field of the
        // stripe): closes the connections only this queue still reaches,
        // gives back every link its proxies hold and frees the proxies. The
        // head is the dummy, whose node (if any) its popper gave back.
        // SAFETY: `&mut self`: exclusive; `unprotected` frees at once.
        let guard = unsafe { epoch::unprotected() };
        let head = self.head.load(Ordering::Relaxed, guard);
        // SAFETY: exclusively owned; the head is never null.
        let next = unsafe { head.deref() }.next.load(Ordering::Relaxed, guard);
        // SAFETY: as above; freed once, here.
        drop(unsafe { head.into_owned() });
        let mut rest = HoldCloser { cur: next, guard };
        rest.close_all();
    }
}

/// The proxies of a holdover queue being dropped, from `cur` on; as
/// [`Closer`], it goes on closing if a connection's destructor panics.
struct HoldCloser<'g, K, C> {
    cur: Shared<'g, Proxy<K, C>>,
    guard: &'g Guard,
}

impl<K, C> HoldCloser<'_, K, C> {
    fn close_all(&mut self) {
        while !self.cur.is_null() {
            // SAFETY: the queue is being dropped, so we own its proxies
            // exclusively; `cur` is linked, hence alive, and freed once,
            // here.
            let proxy = unsafe { self.cur.into_owned() };
            self.cur = proxy.next.load(Ordering::Relaxed, self.guard);
            // SAFETY: a queued proxy's node is alive (it holds IN_HOLD).
            let node = unsafe { &*proxy.target };
            // SAFETY: we just won the claim (if we did).
            let conn = node.claim().then(|| unsafe { node.take_conn() });
            // SAFETY: the proxy's link, given back once, here; `node` is
            // not used after this (the call may free it).
            unsafe { release_hold(proxy.target, self.guard, None) };
            drop(conn); // may panic: `cur` already points past this proxy
        }
    }
}

impl<K, C> Drop for HoldCloser<'_, K, C> {
    fn drop(&mut self) {
        // Reached with proxies left only when a destructor panicked.
        self.close_all();
    }
}

impl<K, C> Drop for Fifo<K, C> {
    fn drop(&mut self) {
        // Every unclaimed node is in a FIFO stripe (possibly as its dummy,
        // after a move) or its holdover queue (puts finish before the pool
        // can be dropped); this closes those in the stripe, and the
        // holdover queue's drop, which runs next, the rest.
        // SAFETY: `&mut self`: exclusive; `unprotected` frees at once.
        let guard = unsafe { epoch::unprotected() };
        let mut rest = Closer {
            cur: self.head.load(Ordering::Relaxed, guard),
            guard,
        };
        rest.close_all();
    }
}

/// The records of a stripe being dropped, from `cur` on. If a connection's
/// destructor panics, the unwinding drops this and the rest are closed all
/// the same (a second panic aborts, as in `Vec`'s drop), so one bad
/// destructor does not leak the sockets behind it.
struct Closer<'g, K, C> {
    cur: Shared<'g, Node<K, C>>,
    guard: &'g Guard,
}

impl<K, C> Closer<'_, K, C> {
    fn close_all(&mut self) {
        while !self.cur.is_null() {
            // SAFETY: the stripe is being dropped, so we own its records
            // exclusively; `cur` is linked, hence alive. Read `next` before
            // releasing.
            let node = unsafe { self.cur.deref() };
            let next = node.next.load(Ordering::Relaxed, self.guard);
            // SAFETY: we just won the claim (if we did).
            let conn = node.claim().then(|| unsafe { node.take_conn() });
            // SAFETY: exclusive owner, each record released once; the
            // connection is already out of the node.
            unsafe { release(self.cur, IN_FIFO, self.guard, None) };
            self.cur = next;
            drop(conn); // may panic: `cur` already points past this record
        }
    }
}

impl<K, C> Drop for Closer<'_, K, C> {
    fn drop(&mut self) {
        // Reached with records left only when a destructor panicked.
        self.close_all();
    }
}

/// Allocates a node and returns it unpublished.
pub(crate) fn new_node<'g, K, C>(
    conn: C,
    deadline: Option<Instant>,
    entry: &Entry<K, C>,
    guard: &'g Guard,
) -> Shared<'g, Node<K, C>> {
    Owned::new(Node::new(conn, deadline, entry)).into_shared(guard)
}

/// Moves the connection out of a node the caller has just claimed.
///
/// # Safety
///
/// The caller won `node.claim()` and calls this once.
pub(crate) unsafe fn take_conn<K, C>(node: &Node<K, C>) -> C {
    // SAFETY: forwarded contract.
    unsafe { node.take_conn() }
}

/// Size of one node, for memory accounting.
pub(crate) const fn node_size<K, C>() -> usize {
    size_of::<Node<K, C>>()
}

/// Bytes of one holdover proxy (for `memory_usage`).
pub(crate) const fn proxy_size<K, C>() -> usize {
    size_of::<Proxy<K, C>>()
}
