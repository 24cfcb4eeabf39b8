//! The machinery behind [`StatusTable`](crate::StatusTable): one shard's
//! open-addressing table of entry pointers, and how it grows.
//!
//! # Shape
//!
//! A shard owns a [`Table`]: a power-of-two array of slots probed linearly
//! from the key hash's low bits. A slot is an `AtomicPtr<Entry<K>>` that
//! moves only forward through these states:
//!
//! ```text
//! EMPTY --insert--> ENTRY(e) --remove, within budget: mark--> DEAD(e)
//!                   ENTRY(e) --remove, over budget: mark--> TOMBSTONE
//!         ENTRY(e) or DEAD(e), its key removed --insert of the same key--> ENTRY(e')
//! any state --freeze (rehash)--> same state | MOVED
//! ```
//!
//! A removed key keeps its slot, marked DEAD with the entry still there to
//! compare keys against, until the key comes back, when its new entry takes
//! that very slot, or until the shard is rehashed, which leaves dead
//! entries behind. So a peer that disconnects and reconnects again and
//! again reuses one slot instead of leaving a trail of tombstones that every
//! later probe must walk (with tens of thousands of a million peers
//! reconnecting, such trails grow to runs of hundreds of slots).
//!
//! But a dead entry costs its node (40 bytes for a peer id) until then, and
//! peers that never return would pile them up to the array's rehash limit,
//! well above the table's built size per live peer. So each
//! table counts its dead entries, and a removal that finds the table holding
//! its shard's budget already (`dead_budget`: one per 8 live keys, plus one)
//! leaves a tombstone instead: the DEAD bit and no pointer; the CAS that
//! puts it there takes the entry out of the table, and the remover then
//! retires the entry at once. A tombstone costs its slot until the next
//! rehash and is never reused (its key is gone); a key that comes back past one takes
//! a new slot like any new key.
//!
//! Entries are heap nodes shared by reference, never copied, so a status
//! transition is a CAS on the entry's own state word wherever the entry is
//! found, old table or new. The top 16 bits of a stored pointer carry a tag
//! from the hash (when the address leaves them free), so a probe skips
//! entries of other keys without dereferencing them.
//!
//! # Memory bounds
//!
//! Under churn of keys that never return, a shard holds its live entries,
//! its array, and at most one dead entry per 8 of the most keys it held
//! since its last rehash, plus one (plus one per removal racing the budget
//! check). A rehash comes when live and dead entries and tombstones fill
//! 3/4 of a shard's array, and leaves the live entries in an array at most
//! half full (and over a quarter full, above the minimum size), so a shard
//! above the minimum size holds fewer than 4 slots per key it held at its
//! last rehash. A shard's array is rehashed smaller once it is under 1/16
//! full; what stays after every key is gone is the minimum-size arrays and
//! at most one dead entry each.
//!
//! # Invariants
//!
//! 1. A slot never returns to EMPTY (only a rehash into a fresh array
//!    drops dead entries and tombstones), so a key is always placed at its
//!    own (live, dead, or removed and not yet marked) entry if one is on its
//!    probe sequence, else at the first EMPTY slot, and two inserters of one
//!    key meet at that slot: there is at most one entry per key in a table.
//! 2. An entry is removed logically first (the REMOVED bit in its state
//!    word, the linearization point of `remove`; a removed entry never
//!    comes back to life), then its slot is marked DEAD, with or without
//!    the entry. The mark is a promise that the entry is removed, so probes
//!    skip DEAD slots without touching the entry. Whoever takes the pointer
//!    out of the current table (the remover leaving a tombstone, an inserter
//!    replacing it, or the rehash that leaves a dead entry behind) retires
//!    it to the epoch collector, exactly once.
//! 3. A rehash holds the shard's grow lock, freezes every slot of the old
//!    table with the MOVED bit (after which no CAS on it can succeed), copies
//!    the pointers of undead entries into a new array, publishes it and
//!    retires the old array and the dead entries. Inserters and removers
//!    that meet MOVED wait on the grow lock, then retry on the new table;
//!    readers and status transitions never wait.

use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::ptr;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};
use crossbeam_utils::CachePadded;

use crate::status::{self, ConnectionStatus, REMOVED};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Mutex, Ordering, UnsafeCell};
use crate::thread_slot;

/// Smallest slot array of a shard.
pub(crate) const MIN_CAPACITY: usize = if cfg!(any(loom, miri)) { 2 } else { 8 };

/// A shard is rehashed smaller once fewer than 1/`SHRINK_BELOW` of its slots
/// hold live keys.
const SHRINK_BELOW: usize = if cfg!(any(loom, miri)) { 4 } else { 16 };
/// Low pointer bit marking a frozen slot (entries are 8-byte aligned).
const MOVED: usize = 0b1;
/// Low pointer bit marking a removed key's slot: with the entry's address,
/// a dead entry; with a null address, a tombstone (`DEAD` alone, plus
/// `MOVED` once frozen).
const DEAD: usize = 0b10;
/// Pointer bits that are neither tag nor flag. Tags live in the top 16
/// bits only on x86-64, where user-space heap addresses fit in 47 bits
/// (Linux hands out higher ones only to `mmap` calls that ask for them);
/// elsewhere (arm64 with top-byte tags or MTE, say) the top bits may be
/// part of the address, so no tag is stored and every probe compares keys.
#[cfg(all(target_pointer_width = "64", target_arch = "x86_64"))]
const ADDR_MASK: usize = ((1 << 48) - 1) & !0b111;
#[cfg(not(all(target_pointer_width = "64", target_arch = "x86_64")))]
const ADDR_MASK: usize = !0b111;
#[cfg(all(target_pointer_width = "64", target_arch = "x86_64"))]
const TAG_SHIFT: u32 = 48;

/// Lookups a batch call keeps in flight at once: enough to cover a memory
/// latency with the work of the others, few enough that their lines stay in
/// L1 between the prefetch and the probe.
const BATCH_WINDOW: usize = if cfg!(any(loom, miri)) { 2 } else { 16 };

/// Asks the CPU to start loading the cache line at `p` (a hint: it never
/// faults, whatever the address, and changes nothing observable). A no-op
/// off x86-64 and under the checkers.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
    // SAFETY: `prefetcht0` is part of SSE, which every x86-64 CPU has, and
    // it reads nothing: it cannot fault or race, whatever `p` is.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
    let _ = p;
}

/// One tracked key and its state word.
pub(crate) struct Entry<K> {
    pub(crate) state: AtomicU64,
    key: UnsafeCell<K>,
}

impl<K> Entry<K> {
    /// Runs `f` on the key. The key is written once, before the entry is
    /// published, and never again until the entry is freed.
    #[inline]
    pub(crate) fn with_key<R>(&self, f: impl FnOnce(&K) -> R) -> R {
        self.key.with(|p| {
            // SAFETY: the key is only written by `Entry::new`, before the
            // entry is published with a Release store/CAS that every reader's
            // Acquire load of the slot synchronizes with; it is dropped only
            // when the entry is freed, which the epoch guard the caller holds
            // (or exclusive access in `Drop`) rules out.
            f(unsafe { &*p })
        })
    }
}

/// What a slot holds, decoded.
pub(crate) struct Slot<K>(pub(crate) *mut Entry<K>);

impl<K> Clone for Slot<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Slot<K> {}

impl<K> Slot<K> {
    #[inline]
    fn bits(self) -> usize {
        self.0.addr()
    }
    #[inline]
    pub(crate) fn is_empty(self) -> bool {
        self.bits() & !MOVED == 0
    }
    #[inline]
    fn is_moved(self) -> bool {
        self.bits() & MOVED != 0
    }
    /// The slot's key was removed and the slot marked (invariant 2): a dead
    /// entry, kept for the key's return, or a tombstone.
    #[inline]
    pub(crate) fn is_dead(self) -> bool {
        self.bits() & DEAD != 0
    }
    /// The slot is a tombstone: marked dead, and its entry retired.
    #[inline]
    pub(crate) fn is_tombstone(self) -> bool {
        self.is_dead() && self.entry().is_null()
    }
    /// The slot holds a dead entry: marked dead, the entry kept.
    #[inline]
    pub(crate) fn is_dead_entry(self) -> bool {
        self.is_dead() && !self.entry().is_null()
    }
    /// The slot holds an entry not marked dead (its state word may say
    /// removed: the mark follows the removal).
    #[inline]
    pub(crate) fn is_entry(self) -> bool {
        !self.is_empty() && !self.is_dead()
    }
    /// The entry pointer with tag and flags stripped.
    #[inline]
    pub(crate) fn entry(self) -> *mut Entry<K> {
        self.0.map_addr(|a| a & ADDR_MASK)
    }
    /// The stored tag (0: unknown).
    #[inline]
    fn tag(self) -> usize {
        #[cfg(all(target_pointer_width = "64", target_arch = "x86_64"))]
        {
            self.bits() >> TAG_SHIFT
        }
        #[cfg(not(all(target_pointer_width = "64", target_arch = "x86_64")))]
        {
            0
        }
    }

    /// True when the slot may hold a key with this tag (tag 0 means unknown).
    #[inline]
    fn tag_may_match(self, tag: usize) -> bool {
        #[cfg(all(target_pointer_width = "64", target_arch = "x86_64"))]
        {
            let stored = self.bits() >> TAG_SHIFT;
            stored == 0 || stored == tag
        }
        #[cfg(not(all(target_pointer_width = "64", target_arch = "x86_64")))]
        {
            let _ = tag;
            true
        }
    }
    #[inline]
    fn with_dead(self) -> *mut Entry<K> {
        self.0.map_addr(|a| a | DEAD)
    }
    #[inline]
    fn with_moved(self) -> Self {
        Slot(self.0.map_addr(|a| a | MOVED))
    }
    #[inline]
    fn without_moved(self) -> Self {
        Slot(self.0.map_addr(|a| a & !MOVED))
    }
}

/// What a removed key's slot becomes when its entry is not kept: [`DEAD`]
/// and no entry.
#[inline]
fn tombstone<K>() -> *mut Entry<K> {
    ptr::without_provenance_mut(DEAD)
}

/// Tags `ptr` with the hash's 16-bit tag when the address leaves room for it.
#[inline]
fn tagged<K>(ptr: *mut Entry<K>, tag: usize) -> *mut Entry<K> {
    #[cfg(all(target_pointer_width = "64", target_arch = "x86_64"))]
    if ptr.addr() >> TAG_SHIFT == 0 {
        return ptr.map_addr(|a| a | tag << TAG_SHIFT);
    }
    let _ = tag;
    ptr
}

/// The 16-bit tag of a hash: its low 16 bits, which are also the low bits
/// of its home index, so a rehash into at most 2^16 slots needs no hashing.
/// A stored tag of 0 means "unknown" (a hash whose low bits are 0, or an
/// address with no room for a tag): the key is compared and, on a rehash,
/// hashed again.
#[inline]
pub(crate) fn tag_of(hash: u64) -> usize {
    hash as usize & TAG_MASK
}

/// Bits of the hash kept in a tag.
const TAG_MASK: usize = 0xffff;

/// One shard's slot array.
pub(crate) struct Table<K> {
    pub(crate) slots: Box<[AtomicPtr<Entry<K>>]>,
    mask: usize,
    /// Non-empty slots: entries, dead entries (each owning its node) and
    /// tombstones.
    pub(crate) used: AtomicUsize,
    /// Dead entries in this array (kept for their key's return): added to
    /// just before a removal marks one, taken from when a marking fails or
    /// a returning key takes one; so it may read one high per removal in
    /// flight, and is exact when quiescent. It never goes below zero: every
    /// decrement follows an increment for the same slot (the failed mark's
    /// own, or the one before the mark that the returning key undoes).
    dead: AtomicUsize,
    /// `used` at which the table is rehashed: [`limit_for`] its capacity.
    limit: usize,
}

impl<K> Table<K> {
    fn new(capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        let slots = (0..capacity)
            .map(|_| AtomicPtr::new(ptr::null_mut()))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self {
            slots,
            mask: capacity - 1,
            used: AtomicUsize::new(0),
            dead: AtomicUsize::new(0),
            limit: limit_for(capacity),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Dead entries this array holds (see `dead`).
    #[inline]
    pub(crate) fn dead_entries(&self) -> usize {
        self.dead.load(Ordering::Relaxed)
    }

    #[inline]
    fn load(&self, i: usize) -> Slot<K> {
        Slot(self.slots[i].load(Ordering::Acquire))
    }

    #[inline]
    fn cas(&self, i: usize, current: Slot<K>, new: *mut Entry<K>) -> Result<(), Slot<K>> {
        self.slots[i]
            .compare_exchange(current.0, new, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Slot)
    }
}

/// Used slots (entries and tombstones) at which an array of `capacity`
/// slots is rehashed: 3/4 of its slots (all of a 2-slot array, the smallest
/// under checkers).
const fn limit_for(capacity: usize) -> usize {
    capacity - capacity / 4
}

/// Slot array size for `live` entries right after a rehash: at most half
/// full (`2 * live` slots rounded up to a power of two), so the next rehash,
/// at 3/4, is at least `live / 2` inserts away and rehashing stays amortized
/// O(1) per insert. A growth rehash of an array that reached its limit with
/// no dead entries or tombstones doubles it. More than 1/4 full unless at
/// [`MIN_CAPACITY`], so a shrink (below 1/[`SHRINK_BELOW`] live) lands on an
/// array that neither grows nor shrinks at the next operation (see
/// `maybe_shrink`).
///
/// Why half and not less: the array is most of the table's memory after
/// the entries themselves (8 bytes a slot, so 16 to 32 bytes per live key
/// here), and an emptier array would only space out the rehashes that
/// churn of new keys needs (each removal leaves a dead slot until the next
/// one). Before dead entries had a budget, the sizing also bounded those:
/// at 31,250 live keys a shard sized 3/8 full took 131,072 slots and up to
/// 67k dead 40-byte entries.
fn capacity_for(live: usize) -> usize {
    live.saturating_mul(2)
        .max(MIN_CAPACITY)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1))
}

/// Slot array size that takes `entries` inserts of new keys before its first
/// rehash: the smallest power of two, at least [`MIN_CAPACITY`], whose
/// [`limit_for`] is at least `entries` (saturating at the largest power of
/// two, which then fails to allocate).
fn capacity_to_hold(entries: usize) -> usize {
    let mut capacity = MIN_CAPACITY;
    while limit_for(capacity) < entries {
        match capacity.checked_mul(2) {
            Some(doubled) => capacity = doubled,
            None => break,
        }
    }
    capacity
}

/// Dead entries a shard may keep for returning keys while it holds `live`
/// keys: one per 8 live keys, plus one, checked at each removal against
/// the keys the shard holds then (so an array holds at most one dead entry
/// per 8 of the most keys it held since its rehash, plus one, plus one per
/// removal racing the check). A removal beyond that leaves a
/// tombstone and retires the entry at once, so under churn of keys that
/// never return a shard holds at most `live / 8 + 1` entries it does not
/// need (5 bytes per live key with 40-byte entries), while a population of
/// returning keys up to that size reuses its slots.
#[inline]
fn dead_budget(live: isize) -> usize {
    live.max(0) as usize / 8 + 1
}

/// One shard: its table, its grow lock and its per-status counters.
pub(crate) struct Shard<K> {
    pub(crate) table: Atomic<Table<K>>,
    grow: Mutex<()>,
    /// Inserts into this shard by status, and removals from it by the
    /// status the entry had: `arrived[s] - departed[s]` is this shard's
    /// share of `count(s)` before transitions (which are counted per thread,
    /// in [`Raw::moves`]), and their sums give the shard's exact length.
    /// Each insert or removal is one atomic add; wrapping arithmetic.
    arrived: [AtomicU64; STATUSES],
    departed: [AtomicU64; STATUSES],
    /// The shard's version clock. Inserts take their generation from here;
    /// a transition takes its entry's generation plus one; a removal first
    /// moves the clock past the generation of the entry it removes, so a key
    /// inserted again starts beyond every generation its removed entry had.
    clock: AtomicU64,
}

/// Transition stripes: a power of two, 4 per available CPU, between 4 and
/// 64 (1 under checkers, where every thread shares one anyway).
fn stripes() -> usize {
    if cfg!(any(loom, miri)) {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus * 4).next_power_of_two().clamp(4, 64)
}

/// Number of statuses.
const STATUSES: usize = ConnectionStatus::ALL.len();

/// Transitions counted by the threads of one stripe: `moves[from][to]`.
/// Counting transitions per thread instead of per shard keeps a status
/// update's one bookkeeping add on a cache line its thread owns, so two
/// threads updating different peers share no line at all.
pub(crate) struct Moves([[AtomicU64; STATUSES]; STATUSES]);

impl Moves {
    fn new() -> Self {
        Self(std::array::from_fn(|_| {
            std::array::from_fn(|_| AtomicU64::new(0))
        }))
    }

    /// Transitions into `s` minus transitions out of it (wrapping).
    fn net(&self, s: usize) -> u64 {
        let mut n = 0u64;
        for other in (0..STATUSES).filter(|&o| o != s) {
            n = n
                .wrapping_add(self.0[other][s].load(Ordering::Relaxed))
                .wrapping_sub(self.0[s][other].load(Ordering::Relaxed));
        }
        n
    }
}

impl<K> Shard<K> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            table: Atomic::new(Table::new(capacity)),
            grow: Mutex::new(()),
            arrived: std::array::from_fn(|_| AtomicU64::new(0)),
            departed: std::array::from_fn(|_| AtomicU64::new(0)),
            clock: AtomicU64::new(0),
        }
    }

    /// The generation of a new entry: the next tick of the shard's clock.
    #[inline]
    fn next_generation(&self) -> u32 {
        self.clock.fetch_add(1, Ordering::Relaxed) as u32
    }

    /// Moves the clock past `generation` (the generation of an entry about
    /// to be removed), unless it is there already: entries inserted after
    /// the removal then start beyond it. Generations are compared on the
    /// 24-bit circle, so this holds while an entry's generation runs less
    /// than 2^23 ahead of its shard's clock.
    ///
    /// The caller removes the entry (a Release CAS on its state word) after
    /// this; an insert that observes the removal therefore reads the clock
    /// at or after this advance.
    #[inline]
    fn advance_clock_past(&self, generation: u32) {
        let target = generation.wrapping_add(1);
        let mut clock = self.clock.load(Ordering::Relaxed);
        loop {
            let ahead = target.wrapping_sub(clock as u32) & status::GEN_MASK;
            if ahead == 0 || ahead >= 1 << 23 {
                return; // the clock is at or past the target already
            }
            match self.clock.compare_exchange_weak(
                clock,
                clock + u64::from(ahead),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => clock = actual,
            }
        }
    }

    /// This shard's inserts minus removals with `status` (transitions are
    /// counted in [`Raw::moves`]): wrapping, so on its own it may read as a
    /// huge or negative number.
    fn arrived_net(&self, s: usize) -> u64 {
        self.arrived[s]
            .load(Ordering::Relaxed)
            .wrapping_sub(self.departed[s].load(Ordering::Relaxed))
    }

    /// Entries present in this shard: inserts minus removals (may be off
    /// while they are in flight).
    pub(crate) fn len(&self) -> isize {
        (0..STATUSES).fold(0u64, |n, s| n.wrapping_add(self.arrived_net(s))) as isize
    }

    /// Blocks until a growth that froze `table` has published its successor.
    #[cold]
    fn wait_for_growth(&self) {
        drop(self.grow.lock());
    }
}

impl<K> Drop for Shard<K> {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no other thread can reach this shard, so
        // nothing can be reading the table or its entries concurrently.
        let guard = unsafe { epoch::unprotected() };
        let table = self.table.swap(Shared::null(), Ordering::Relaxed, guard);
        if table.is_null() {
            return;
        }
        // SAFETY: the table pointer came from `Owned` and was published
        // only through `self.table`, which we just emptied with exclusive
        // access; older arrays were retired to the collector when replaced.
        let table = unsafe { table.into_owned() };
        for slot in table.slots.iter() {
            let slot = Slot(slot.load(Ordering::Relaxed));
            if !slot.entry().is_null() {
                // SAFETY: entries (live or dead) linked in the current table
                // are owned by it (invariant 2: retired entries were taken
                // out of it first, and tombstones hold none), were allocated
                // by `Box::into_raw`, and appear in one slot only.
                drop(unsafe { Box::from_raw(slot.entry()) });
            }
        }
    }
}

/// Result of looking a key up in one table.
pub(crate) struct Found<'g, K> {
    pub(crate) index: usize,
    pub(crate) slot: Slot<K>,
    pub(crate) entry: &'g Entry<K>,
}

/// The shards, the hasher and the time origin: everything an operation
/// needs.
pub(crate) struct Raw<K, S> {
    pub(crate) shards: Box<[CachePadded<Shard<K>>]>,
    shard_mask: usize,
    /// Status transitions, counted in the calling thread's stripe.
    pub(crate) moves: Box<[CachePadded<Moves>]>,
    hasher: S,
    /// The table's time zero as an `Instant` (to hand out `since`), and as
    /// a precise monotonic reading taken just after it: entries are stamped
    /// with coarse readings relative to that, so `origin + stamp` is never
    /// later than the moment the stamp was taken.
    pub(crate) origin: std::time::Instant,
    origin_nanos: u64,
    _owns: PhantomData<Box<Entry<K>>>,
}

impl<K, S> Raw<K, S> {
    pub(crate) fn new(shards: usize, capacity: usize, hasher: S) -> Self {
        debug_assert!(shards.is_power_of_two());
        // Room for `capacity` entries before the first rehash, spread evenly:
        // each shard takes its share, rounded up, below its limit.
        let per_shard = capacity_to_hold(capacity.div_ceil(shards));
        Self {
            shards: (0..shards)
                .map(|_| CachePadded::new(Shard::new(per_shard)))
                .collect(),
            shard_mask: shards - 1,
            moves: (0..stripes())
                .map(|_| CachePadded::new(Moves::new()))
                .collect(),
            hasher,
            origin: std::time::Instant::now(),
            origin_nanos: status::monotonic_nanos(false),
            _owns: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn shard(&self, hash: u64) -> &Shard<K> {
        &self.shards[(hash >> 56) as usize & self.shard_mask]
    }

    /// Keys with `status`, summed over shards and stripes (may be off, even
    /// negative, while updates are in flight; exact when quiescent).
    pub(crate) fn count(&self, status: ConnectionStatus) -> isize {
        let s = status.index();
        let shards = self.shards.iter().map(|sh| sh.arrived_net(s));
        let moves = self.moves.iter().map(|m| m.net(s));
        shards.chain(moves).fold(0u64, u64::wrapping_add) as isize
    }

    /// Counts one insert (`from` None), transition or removal (`to` None):
    /// one atomic add, on the shard's line for inserts and removals, on the
    /// calling thread's stripe for transitions.
    #[inline]
    fn moved_status(
        &self,
        shard: &Shard<K>,
        from: Option<ConnectionStatus>,
        to: Option<ConnectionStatus>,
    ) {
        match (from, to) {
            (Some(from), Some(to)) if from != to => {
                // Any stripe is correct (they only spread contention), so
                // under loom every thread uses stripe 0 and the models do
                // not explore the slot bitmap.
                let i = if cfg!(loom) {
                    0
                } else {
                    thread_slot::current() & (self.moves.len() - 1)
                };
                let stripe = &self.moves[i];
                stripe.0[from.index()][to.index()].fetch_add(1, Ordering::Relaxed);
            }
            (None, Some(to)) => {
                shard.arrived[to.index()].fetch_add(1, Ordering::Relaxed);
            }
            (Some(from), None) => {
                shard.departed[from.index()].fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Milliseconds since the table's origin, saturating at both ends.
    #[inline]
    pub(crate) fn now_millis(&self) -> u64 {
        status::millis_since_origin(self.origin_nanos)
    }
}

impl<K: Hash + Eq + Send + Sync + 'static, S: BuildHasher> Raw<K, S> {
    /// The keyed hash of `key`: shard from its top byte, home slot from its
    /// low bits, tag from its low 16 bits (see [`tag_of`]).
    #[inline]
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Finds the entry of `key` (live or logically removed) in `table`.
    ///
    /// Progress: wait-free (at most one pass over the table).
    #[inline]
    pub(crate) fn find<'g, Q>(table: &'g Table<K>, hash: u64, key: &Q) -> Option<Found<'g, K>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let tag = tag_of(hash);
        let mut i = hash as usize & table.mask;
        for _ in 0..=table.mask {
            let slot = table.load(i);
            if slot.is_empty() {
                return None;
            }
            if !slot.is_dead() && slot.tag_may_match(tag) {
                // SAFETY: a non-empty slot holds a pointer to a published
                // entry; the caller's guard keeps it from being freed (it is
                // retired only after being taken out of the table, and the
                // collector waits for every guard pinned before that).
                let entry = unsafe { &*slot.entry() };
                if entry.with_key(|k| k.borrow() == key) {
                    return Some(Found {
                        index: i,
                        slot,
                        entry,
                    });
                }
            }
            i = (i + 1) & table.mask;
        }
        None
    }

    /// The state words of `keys` (live entries only), in order, pushed
    /// through `out`, with the cache misses of up to [`BATCH_WINDOW`]
    /// lookups in flight at once: each window hashes its keys and prefetches
    /// their home slots, then loads each home slot and prefetches the entry
    /// it points to, then probes as [`find`](Self::find) does.
    ///
    /// Progress: wait-free, as `find_live` per key.
    pub(crate) fn words_many<Q>(&self, keys: &[Q], guard: &Guard, mut out: impl FnMut(Option<u64>))
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq,
    {
        for window in keys.chunks(BATCH_WINDOW) {
            let mut hashes = [0u64; BATCH_WINDOW];
            let mut tables: [Option<&Table<K>>; BATCH_WINDOW] = [None; BATCH_WINDOW];
            for (i, key) in window.iter().enumerate() {
                let hash = self.hash(key);
                let shared = self.shard(hash).table.load(Ordering::Acquire, guard);
                // SAFETY: as in `find_live`.
                let table = unsafe { shared.deref() };
                prefetch(&table.slots[hash as usize & table.mask]);
                hashes[i] = hash;
                tables[i] = Some(table);
            }
            for (&hash, table) in hashes.iter().zip(tables.iter().flatten()) {
                let slot = table.load(hash as usize & table.mask);
                if slot.is_entry() && slot.tag_may_match(tag_of(hash)) {
                    prefetch(slot.entry());
                }
            }
            for ((key, &hash), table) in window.iter().zip(&hashes).zip(tables.iter().flatten()) {
                let word = Self::find(table, hash, key)
                    .map(|found| found.entry.state.load(Ordering::Acquire))
                    .filter(|&word| !status::is_removed(word));
                out(word);
            }
        }
    }

    /// Finds the live entry of `key` in the shard's current table.
    #[inline]
    pub(crate) fn find_live<'g, Q>(
        &self,
        shard: &Shard<K>,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<(&'g Entry<K>, u64)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let table = shard.table.load(Ordering::Acquire, guard);
        // SAFETY: shard tables are never null while the shard is alive, and
        // the guard keeps a retired array alive for as long as we use it.
        let table = unsafe { table.deref() };
        let found = Self::find(table, hash, key)?;
        let word = found.entry.state.load(Ordering::Acquire);
        (!status::is_removed(word)).then_some((found.entry, word))
    }

    /// Applies `decide` to a live entry's state word with a CAS loop.
    ///
    /// `decide` gets the current word and returns the new status, or `None`
    /// to leave the entry as it is. Returns the word before and after, or
    /// `Err(word)` if the entry was removed before the CAS could land (then
    /// `word` has the REMOVED bit) or `decide` declined (then it does not).
    ///
    /// Progress: lock-free (the CAS fails only when another transition of
    /// the same entry succeeded).
    #[inline]
    pub(crate) fn transition(
        &self,
        shard: &Shard<K>,
        entry: &Entry<K>,
        mut word: u64,
        mut decide: impl FnMut(u64) -> Option<ConnectionStatus>,
    ) -> Result<(u64, u64), u64> {
        let mut now = None;
        loop {
            if status::is_removed(word) {
                return Err(word);
            }
            let Some(to) = decide(word) else {
                return Err(word);
            };
            let from = ConnectionStatus::from_bits(word);
            if from == to {
                return Ok((word, word));
            }
            let millis = *now.get_or_insert_with(|| self.now_millis());
            let generation = status::generation(word).wrapping_add(1);
            let new = status::pack(to, generation, millis);
            match entry
                .state
                .compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.moved_status(shard, Some(from), Some(to));
                    return Ok((word, new));
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Inserts `key` or updates its entry.
    ///
    /// `decide` gets the current state word (`None` when the key is absent)
    /// and returns the status to set, or `None` to leave things as they are.
    /// Returns the state word before (`None` if absent) and after (`None` if
    /// nothing was inserted).
    ///
    /// Progress: lock-free, except that it waits on the shard's grow lock
    /// while a growth of this shard is under way.
    pub(crate) fn upsert(
        &self,
        hash: u64,
        key: K,
        mut decide: impl FnMut(Option<u64>) -> Option<ConnectionStatus>,
    ) -> (Option<u64>, Option<u64>) {
        let shard = self.shard(hash);
        let tag = tag_of(hash);
        let guard = &epoch::pin();
        let mut pending = Pending::new(key);
        'retry: loop {
            let shared = shard.table.load(Ordering::Acquire, guard);
            // SAFETY: as in `find_live`.
            let table = unsafe { shared.deref() };
            let mut i = hash as usize & table.mask;
            let mut probes = 0;
            loop {
                if probes > table.mask {
                    self.rehash(shard, shared, guard);
                    continue 'retry;
                }
                // A frozen slot (a rehash is copying this array) can still
                // lead to the key's live entry, which is shared with the new
                // array: a transition on it needs no wait. Only a write to
                // the array (a new key, or one that replaces its removed
                // entry) waits for the rehash.
                let raw_slot = table.load(i);
                let frozen = raw_slot.is_moved();
                let slot = raw_slot.without_moved();
                if slot.is_empty() {
                    if frozen {
                        shard.wait_for_growth();
                        continue 'retry;
                    }
                    let Some(to) = decide(None) else {
                        return (None, None);
                    };
                    if table.used.load(Ordering::Relaxed) >= table.limit {
                        self.rehash(shard, shared, guard);
                        continue 'retry;
                    }
                    let (ptr, word) = pending.boxed(shard, to, self.now_millis());
                    match table.cas(i, slot, tagged(ptr, tag)) {
                        Ok(()) => {
                            table.used.fetch_add(1, Ordering::Relaxed);
                            self.moved_status(shard, None, Some(to));
                            pending.published();
                            return (None, Some(word));
                        }
                        Err(_) => continue, // look at slot `i` again
                    }
                }
                // Dead entries are compared too: the key's own dead entry is
                // where it goes back (invariant 1). Tombstones hold no key,
                // and are never reused.
                if slot.is_tombstone() || !slot.tag_may_match(tag) {
                    i = (i + 1) & table.mask;
                    probes += 1;
                    continue;
                }
                // SAFETY: as in `find`.
                let entry = unsafe { &*slot.entry() };
                if !entry.with_key(|k| pending.with_key(|key| k == key)) {
                    i = (i + 1) & table.mask;
                    probes += 1;
                    continue;
                }
                let word = entry.state.load(Ordering::Acquire);
                if !status::is_removed(word) {
                    match self.transition(shard, entry, word, |w| decide(Some(w))) {
                        Ok((before, after)) => return (Some(before), Some(after)),
                        Err(w) if !status::is_removed(w) => return (Some(w), None),
                        Err(_) => continue, // removed meanwhile: look again
                    }
                }
                // A removed entry of the same key, kept dead in its slot or
                // not yet marked by its remover: take the slot, once the
                // array may be written again.
                if frozen {
                    shard.wait_for_growth();
                    continue 'retry;
                }
                let Some(to) = decide(None) else {
                    return (None, None);
                };
                let (ptr, word) = pending.boxed(shard, to, self.now_millis());
                if table.cas(i, slot, tagged(ptr, tag)).is_ok() {
                    pending.published();
                    if slot.is_dead() {
                        table.dead.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.moved_status(shard, None, Some(to));
                    // SAFETY: we took the removed entry's pointer out of the
                    // current table, so we are its one retirer (invariant 2:
                    // an unmarked one's remover then fails to mark it); no
                    // new reader can reach it, and the collector waits for
                    // those that already might.
                    unsafe { guard.defer_destroy(Shared::from(slot.entry().cast_const())) };
                    return (None, Some(word));
                }
            }
        }
    }

    /// Removes the live entry of `key` if `keep` (given its state word)
    /// returns false. Returns the word it had when removed.
    ///
    /// Progress: lock-free, except that marking the slot waits on the
    /// shard's grow lock while a rehash of this shard is under way.
    /// Reclamation: within the shard's [`dead_budget`], the entry stays in
    /// its slot, marked dead, until the key is inserted again (the inserter
    /// retires it) or the shard is rehashed (the rehash retires it); beyond
    /// it, this call leaves a tombstone and retires the entry. Either way it
    /// is freed after every guard that could see it is gone.
    pub(crate) fn remove_if<Q>(
        &self,
        hash: u64,
        key: &Q,
        mut keep: impl FnMut(u64) -> bool,
    ) -> Option<u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let shard = self.shard(hash);
        let guard = &epoch::pin();
        let shared = shard.table.load(Ordering::Acquire, guard);
        // SAFETY: as in `find_live`.
        let found = Self::find(unsafe { shared.deref() }, hash, key)?;
        let entry = found.entry;
        let mut word = entry.state.load(Ordering::Acquire);
        loop {
            if status::is_removed(word) || keep(word) {
                return None;
            }
            shard.advance_clock_past(status::generation(word));
            match entry.state.compare_exchange_weak(
                word,
                word | REMOVED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        self.moved_status(shard, Some(ConnectionStatus::from_bits(word)), None);
        self.mark_dead(shard, hash, shared, found, guard);
        Some(word)
    }

    /// Marks the slot of a logically removed entry (invariant 2), in
    /// whichever table of the shard holds it, unless an inserter of the same
    /// key replaced (and retired) it already: as a dead entry, kept for the
    /// key's return, while the table's dead entries are within the shard's
    /// [`dead_budget`]; else as a tombstone, retiring the entry. `found` is
    /// where it was seen in `seen`.
    fn mark_dead<'g>(
        &self,
        shard: &Shard<K>,
        hash: u64,
        mut seen: Shared<'g, Table<K>>,
        found: Found<'g, K>,
        guard: &'g Guard,
    ) {
        // Compared by address only.
        let target = found.slot.entry();
        let (mut index, mut slot) = (found.index, found.slot);
        let mut live = shard.len();
        loop {
            // SAFETY: as in `find_live`.
            let table = unsafe { seen.deref() };
            // Counted before the mark, so a returning key that takes the
            // dead entry right after it never takes the count below zero.
            let keep = table.dead_entries() < dead_budget(live);
            if keep {
                table.dead.fetch_add(1, Ordering::Relaxed);
            }
            loop {
                if slot.is_moved() || slot.entry() != target {
                    break;
                }
                let mark = if keep { slot.with_dead() } else { tombstone() };
                match table.cas(index, slot, mark) {
                    Ok(()) => {
                        if !keep {
                            // SAFETY: our CAS took the entry's pointer out of
                            // the current table (a frozen slot fails every
                            // CAS, so no rehash copied it into a successor
                            // either), so we are its one retirer (invariant
                            // 2); no new reader can reach it, and the
                            // collector waits for those that already might.
                            // Allocated by `Box::into_raw`, as every entry.
                            unsafe { guard.defer_destroy(Shared::from(target.cast_const())) };
                        }
                        self.maybe_shrink(shard, live, seen, guard);
                        return;
                    }
                    Err(actual) => slot = actual,
                }
            }
            if keep {
                table.dead.fetch_sub(1, Ordering::Relaxed);
            }
            if !slot.is_moved() {
                return; // replaced by an inserter, who retired it
            }
            // Frozen by a rehash: find it in the new table (and read the
            // population again: the wait may have been long).
            shard.wait_for_growth();
            live = shard.len();
            seen = shard.table.load(Ordering::Acquire, guard);
            // SAFETY: as in `find_live`.
            let table = unsafe { seen.deref() };
            // Not `find`: it skips dead slots, and it must not stop at a
            // newer entry of the key that is not ours.
            match Self::locate(table, hash, target) {
                Some((i, s)) => (index, slot) = (i, s),
                None => return, // replaced and retired meanwhile
            }
        }
    }

    /// The slot of `table` that holds `target` (by address), looking along
    /// the probe sequence of `entry`'s key.
    fn locate(table: &Table<K>, hash: u64, target: *mut Entry<K>) -> Option<(usize, Slot<K>)> {
        let mut i = hash as usize & table.mask;
        for _ in 0..=table.mask {
            let slot = table.load(i);
            if slot.is_empty() {
                return None;
            }
            if slot.entry() == target {
                return Some((i, slot));
            }
            i = (i + 1) & table.mask;
        }
        None
    }

    /// Rehashes a shard that has become mostly empty (fewer than
    /// 1/[`SHRINK_BELOW`] of its slots live) so its memory follows its
    /// population down.
    ///
    /// No oscillation: the rehash sizes the array for the `live` keys left
    /// ([`capacity_for`]: `next_power_of_two(max(2 * live, MIN_CAPACITY))`
    /// slots). As `live < capacity / SHRINK_BELOW <= capacity / 4`, that is
    /// at most half the old size; it is over 1/4 live, so
    /// `live * SHRINK_BELOW` is not below it and the new array does not
    /// shrink again until keys are removed (unless it is at `MIN_CAPACITY`,
    /// which never shrinks); and it is at most half used, so it grows again
    /// only after `live / 2` inserts or more. `live` is the shard's length
    /// as its caller read it after its removal.
    fn maybe_shrink(
        &self,
        shard: &Shard<K>,
        live: isize,
        shared: Shared<'_, Table<K>>,
        guard: &Guard,
    ) {
        // SAFETY: as in `find_live`.
        let table = unsafe { shared.deref() };
        let cap = table.capacity();
        if cap > MIN_CAPACITY && (live.max(0) as usize).saturating_mul(SHRINK_BELOW) < cap {
            self.rehash(shard, shared, guard);
        }
    }

    /// Replaces `observed` (if it is still the shard's table) by a fresh
    /// array sized for the entries it holds, leaving dead entries and
    /// tombstones behind.
    ///
    /// Progress: blocking for this shard's inserters and removers, which
    /// wait on the grow lock; readers and transitions go on.
    /// Reclamation: the old array and the dead entries are retired to the
    /// collector (one deferred function for all); the other entries move by
    /// pointer and are not retired.
    #[cold]
    pub(crate) fn rehash(&self, shard: &Shard<K>, observed: Shared<'_, Table<K>>, guard: &Guard) {
        let _lock = shard.grow.lock();
        let current = shard.table.load(Ordering::Acquire, guard);
        if current != observed {
            return; // someone else rehashed while we waited
        }
        // SAFETY: as in `find_live`.
        let old = unsafe { current.deref() };
        // Freeze: after this no CAS on an old slot can succeed.
        let mut entries = 0usize;
        for cell in old.slots.iter() {
            let mut slot = Slot(cell.load(Ordering::Acquire));
            loop {
                match cell.compare_exchange_weak(
                    slot.0,
                    slot.with_moved().0,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(actual) => slot = Slot(actual),
                }
            }
            entries += usize::from(slot.is_entry());
        }
        // The copy may call the key's `Hash`, which may panic: then the
        // old array is unfrozen again (before the grow lock is released),
        // so the shard's inserters and removers go on instead of waiting
        // for a successor that never comes.
        let unfreeze = Unfreeze(Some(old));
        let new = Table::new(capacity_for(entries));
        let mut dead = Vec::new();
        for cell in old.slots.iter() {
            let slot = Slot(cell.load(Ordering::Acquire)).without_moved();
            if slot.is_dead_entry() {
                dead.push(slot.entry());
                continue;
            }
            if !slot.is_entry() {
                continue; // empty, or a tombstone
            }
            // SAFETY: frozen entries stay alive: they are retired only after
            // being unlinked from a current table, and this one is current
            // until we publish `new` below.
            let entry = unsafe { &*slot.entry() };
            // The tag holds the hash's low 16 bits: enough for the home
            // index of any array up to 2^16 slots.
            let tag = slot.tag();
            let home = if tag != 0 && new.mask <= TAG_MASK {
                tag
            } else {
                entry.with_key(|k| self.hash(k)) as usize
            };
            let mut i = home & new.mask;
            while !new.load(i).is_empty() {
                i = (i + 1) & new.mask;
            }
            new.slots[i].store(slot.0, Ordering::Relaxed);
        }
        new.used.store(entries, Ordering::Relaxed);
        unfreeze.disarm();
        shard.table.store(Owned::new(new), Ordering::Release);
        // SAFETY: the old array is unreachable for new readers now that the
        // new one is published; the collector waits for the others.
        unsafe { guard.defer_destroy(current) };
        if !dead.is_empty() {
            let dead = DeadEntries(dead);
            // SAFETY: 1. each pointer was in a frozen dead slot of the table
            // we just replaced, so no CAS could take it out before us and we
            // are its one retirer (invariant 2); 2. it is in no other slot
            // (invariant 1) and the new table does not hold it, so no new
            // reader can reach it, and the collector waits for the guards
            // that already might; 3. each was allocated by `Box::into_raw`.
            unsafe { guard.defer_unchecked(move || drop(dead)) };
        }
    }
}

/// Undoes a rehash's freeze if the copy unwinds (see `rehash`). Sound
/// because a frozen slot cannot change (every CAS on it fails), so clearing
/// its MOVED bit restores exactly what it held; the half-filled new array
/// owns no entry (entries are freed by the shard, never by a `Table`) and
/// is simply dropped.
struct Unfreeze<'a, K>(Option<&'a Table<K>>);

impl<K> Unfreeze<'_, K> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<K> Drop for Unfreeze<'_, K> {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            for cell in old.slots.iter() {
                let slot = Slot(cell.load(Ordering::Acquire));
                cell.store(slot.without_moved().0, Ordering::Release);
            }
        }
    }
}

/// Dead entries a rehash left behind, freed together once no guard can see
/// them.
struct DeadEntries<K>(Vec<*mut Entry<K>>);

impl<K> Drop for DeadEntries<K> {
    fn drop(&mut self) {
        for &entry in &self.0 {
            // SAFETY: see the retirement in `Raw::rehash`: unreachable,
            // retired once, allocated by `Box::into_raw`.
            drop(unsafe { Box::from_raw(entry) });
        }
    }
}

/// The key of an upsert in flight: owned until it is boxed into an entry,
/// then the box, until the box is published.
struct Pending<K> {
    key: Option<K>,
    /// Null until boxed; null again once published.
    boxed: *mut Entry<K>,
}

impl<K> Pending<K> {
    fn new(key: K) -> Self {
        Self {
            key: Some(key),
            boxed: ptr::null_mut(),
        }
    }

    fn with_key<R>(&self, f: impl FnOnce(&K) -> R) -> R {
        match &self.key {
            Some(k) => f(k),
            // SAFETY: `boxed` is set whenever `key` is not, and the box is
            // ours (unpublished) so it is alive.
            None => unsafe { &*self.boxed }.with_key(f),
        }
    }

    /// Boxes the key (once) into an entry with status `to`; returns the raw
    /// pointer and its state word.
    fn boxed(
        &mut self,
        shard: &Shard<K>,
        to: ConnectionStatus,
        millis: u64,
    ) -> (*mut Entry<K>, u64) {
        let word = status::pack(to, shard.next_generation(), millis);
        if let Some(key) = self.key.take() {
            self.boxed = Box::into_raw(Box::new(Entry {
                state: AtomicU64::new(word),
                key: UnsafeCell::new(key),
            }));
        } else {
            // SAFETY: unpublished, so only we can see it.
            unsafe { &*self.boxed }.state.store(word, Ordering::Relaxed);
        }
        (self.boxed, word)
    }

    /// The box now belongs to the table.
    fn published(&mut self) {
        self.boxed = ptr::null_mut();
    }
}

impl<K> Drop for Pending<K> {
    fn drop(&mut self) {
        if self.key.is_none() && !self.boxed.is_null() {
            // SAFETY: never published, so we hold the only pointer.
            drop(unsafe { Box::from_raw(self.boxed) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectionStatus::Connected, StatusTable};
    use std::collections::hash_map::RandomState;

    /// Live keys up to which the sizing is checked exhaustively.
    const UP_TO: usize = if cfg!(miri) { 2_000 } else { 1 << 20 };

    /// After a rehash an array is at most half full and, above the minimum
    /// size, more than a quarter full: the next growth is at least `live /
    /// 2` inserts away, and the array is not one a removal would shrink.
    #[test]
    fn a_rehash_leaves_the_array_between_a_quarter_and_half_full() {
        for live in 0..UP_TO {
            let cap = capacity_for(live);
            assert!(cap.is_power_of_two() && cap >= MIN_CAPACITY);
            assert!(2 * live <= cap, "{live} live in {cap} slots");
            assert!(
                cap == MIN_CAPACITY || 4 * live > cap,
                "{live} live in {cap} slots"
            );
            assert!(
                limit_for(cap) - live >= live / 2,
                "{live} live in {cap} slots"
            );
            let shrinks = cap > MIN_CAPACITY && live * SHRINK_BELOW < cap;
            assert!(!shrinks, "{live} live in {cap} slots would shrink again");
        }
    }

    /// A growth rehash (an array at its limit, every entry live) doubles
    /// the array, as it did when a rehash left it 3/8 full: insert-only
    /// tables keep their sizes.
    #[test]
    fn a_growth_rehash_doubles_the_array() {
        let mut cap = MIN_CAPACITY;
        while cap <= UP_TO {
            assert_eq!(capacity_for(limit_for(cap)), 2 * cap, "from {cap} slots");
            cap *= 2;
        }
    }

    /// A shrink rehash lands on an array at most half the size, which
    /// neither shrinks nor grows at the next operation.
    #[test]
    fn a_shrink_rehash_lands_on_a_stable_array() {
        let mut cap = 2 * MIN_CAPACITY;
        while cap <= UP_TO {
            for live in (0..cap).take_while(|live| live * SHRINK_BELOW < cap) {
                let new = capacity_for(live);
                assert!(new <= cap / 2, "{live} live: {cap} -> {new} slots");
                // One more removal does not shrink it again...
                let fewer = live.saturating_sub(1);
                assert!(
                    new == MIN_CAPACITY || fewer * SHRINK_BELOW >= new,
                    "{live} live: {cap} -> {new} slots, shrinks again at {fewer}"
                );
                // ...and one more insert does not grow it (an insert of a
                // new key rehashes first once `used` reaches the limit).
                assert!(live < limit_for(new), "{live} live: {cap} -> {new} slots");
            }
            cap *= 2;
        }
    }

    /// `with_capacity(n)` sizing: the smallest array whose limit takes its
    /// share, so it keeps the promise and allocates no more than any sizing
    /// that keeps it: 65,536 slots per shard for a million keys over 32
    /// shards.
    #[test]
    fn initial_arrays_are_the_smallest_that_hold_their_share() {
        for entries in 0..UP_TO {
            let cap = capacity_to_hold(entries);
            assert!(cap.is_power_of_two() && cap >= MIN_CAPACITY);
            assert!(limit_for(cap) >= entries, "{entries} in {cap} slots");
            assert!(
                cap == MIN_CAPACITY || limit_for(cap / 2) < entries,
                "{entries} fit in {} slots already",
                cap / 2
            );
        }
        if !cfg!(any(loom, miri)) {
            assert_eq!(capacity_to_hold(1_000_000usize.div_ceil(32)), 65_536);
        }
        assert_eq!(capacity_to_hold(usize::MAX), 1 << (usize::BITS - 1));
    }

    /// Removing keys one by one from a single shard shrinks its array
    /// exactly when fewer than 1/SHRINK_BELOW of it is live, to the size
    /// `capacity_for` gives; after each shrink an insert and a removal
    /// change nothing (no oscillation), and the last removal leaves the
    /// minimum size.
    #[test]
    fn removals_shrink_a_shard_without_oscillating() {
        let table = StatusTable::with_shards(1, 0, RandomState::new()).unwrap();
        let capacity = || table.shard_stats()[0].capacity;
        let n = if cfg!(miri) { 100 } else { 5_000 };
        for k in 0..n {
            table.insert(k, Connected);
        }
        let mut shrinks = 0;
        for k in 0..n {
            let before = capacity();
            table.remove(&k);
            let live = n - k - 1;
            let after = capacity();
            if live * SHRINK_BELOW < before && before > MIN_CAPACITY {
                assert_eq!(after, capacity_for(live), "{live} live, was {before}");
                shrinks += 1;
                // An insert and a removal right after do not rehash.
                table.insert(usize::MAX, Connected);
                assert_eq!(capacity(), after, "grew right after shrinking");
                table.remove(&usize::MAX);
                assert_eq!(capacity(), after, "shrank again at once");
            } else {
                assert_eq!(after, before, "{live} live");
            }
        }
        assert!(shrinks >= 2, "{shrinks} shrinks");
        assert_eq!(capacity(), MIN_CAPACITY);
        assert!(table.is_empty());
    }
}
