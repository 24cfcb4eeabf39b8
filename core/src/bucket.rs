//! The machinery behind [`StatusTable`](crate::StatusTable): one shard's
//! array of buckets with keys and state words inline, and how it is
//! rebuilt.
//!
//! # Shape
//!
//! A shard owns an [`Array`] of [`Bucket`]s. A bucket is two cache lines
//! (128 bytes, 128-aligned, so the adjacent-line prefetcher brings the pair
//! together): a control word and [`SLOTS`] slots, each a key and its state
//! word side by side (3 x (32 + 8) + 8 = 128 bytes for a [`PeerId`]). A
//! lookup hashes the key once, reads its home bucket's control word, and
//! compares only the keys whose field there carries the hash's 19-bit
//! fragment: for a table larger than the caches that is one memory miss
//! per lookup, where a table of pointers to entry nodes takes two.
//!
//! The control word holds a 21-bit field per slot: 2 state bits ([`EMPTY`]:
//! never used in this array; [`TOMB`]: its key was removed; [`LIVE`]) and
//! the fragment of the key's hash (its low 19 bits; the shard comes from
//! the top byte); its top bit is the bucket's [`OVERFLOW`] flag. The home
//! bucket is the fragment scaled to the bucket count (a multiply and a
//! shift, so arrays need not be powers of two and grow by 1.14x, not 2x,
//! and a rebuild finds every key's home from its field without hashing it
//! again); overflowing keys go to the next bucket with a free slot,
//! wrapping around.
//!
//! # Who writes what
//!
//! * A slot's key is written before its field is published (Release),
//!   and never while a reader may compare it: readers compare keys without
//!   any check. So a removed key's slot is a tombstone that keeps the old
//!   key object: an equal key takes the slot back at once (it may differ
//!   in its bytes; equal keys answer alike), and another key only once no
//!   lookup can still be comparing the old one. The `n`-th removal from a
//!   shard writes `n` into the tombstone's state word; every
//!   [`REUSE_BATCH`]-th removal defers to the epoch collector a call that
//!   raises the shard's `reusable` number to `n`, which the collector runs
//!   once every thread pinned at that removal has unpinned. A lookup
//!   pinned since then reads the tombstone's field, never its key; so an
//!   insert (under the writer lock) may overwrite the key of a tombstone
//!   numbered up to `reusable` (Acquire, pairing with the call's Release).
//!   Rebuilding the shard into a fresh array drops every tombstone.
//! * Control words change only under the shard's writer lock: inserts of
//!   new keys, removals and rebuilds take it; lookups and status
//!   transitions never do.
//! * A state word changes by CAS: transitions (lock-free, from any thread),
//!   the removal mark, and the rebuild's freeze.
//!
//! A key goes to the first bucket of its probe sequence with a reusable
//! tombstone or an empty slot (a reusable tombstone first: it costs no
//! room, so taking one never calls for a rebuild); every bucket it passes
//! on the way gets the control word's
//! [`OVERFLOW`] bit (set before the key is published, never cleared in an
//! array). So a lookup stops at the first bucket without that bit: most
//! lookups, of absent keys too, read their home bucket and nothing else,
//! however full the array or however many tombstones it holds.
//!
//! # Rebuilds
//!
//! When live keys and tombstones fill 4/5 of an array's slots, the next
//! insert of a new key that meets no reusable tombstone rebuilds the shard
//! into an array sized for the live keys (`buckets_for`: 7/10 full, 1.14x
//! the old array, after growth; half full after churn); when live keys
//! fall under 1/8 of the slots (1/4 under the checkers), a removal
//! rebuilds it smaller, never below the bucket count the table was created
//! with (`Shard::floor`, its share of `with_capacity`). Under the writer
//! lock, the rebuild
//!
//! 1. collects the live slots and their fragments,
//! 2. links the new array as the old one's `next`,
//! 3. for each live slot: copies the key's bytes and state word into the
//!    new array and publishes its field there, then freezes the old state
//!    word (sets [`FROZEN`] by CAS), copying the word again if a transition
//!    changed it meanwhile,
//! 4. publishes the new array as the shard's, retires the old one and
//!    flushes the thread's epoch garbage.
//!
//! A lookup or transition that meets a frozen word follows `next`, where
//! the key and its current word are already published (the freeze CAS
//! releases them), so neither ever waits for the rebuild. Keys are `Copy`
//! because a rebuild copies them bitwise while readers may still be
//! comparing the old copy (readers never wait for it): a `Copy` type holds
//! no `UnsafeCell` inline, so both copies are the same immutable value and
//! no write can be lost between them, and keys own nothing, so a retired
//! array frees no key. A rebuild runs no user code: homes come from the
//! stored fragments (no `Hash`), the copy is bitwise (no `Clone`), and
//! nothing is dropped (no `Drop`), so it cannot unwind halfway or re-enter
//! the table.
//!
//! [`PeerId`]: crate::PeerId

use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::mem::{size_of, MaybeUninit};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

use crate::status::{self, ConnectionStatus, FROZEN, REMOVED};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, Ordering, UnsafeCell};
use crate::thread_slot;
use crossbeam_utils::CachePadded;

/// Slots per bucket.
pub(crate) const SLOTS: usize = 3;

/// Bits of a slot's field in its bucket's control word.
const FIELD_BITS: u32 = 21;
/// Bits of the hash a field keeps: the hash's low 19 bits, its fragment.
const FRAG_BITS: u32 = 19;
const FRAG_MASK: u32 = (1 << FRAG_BITS) - 1;
/// The state bits of a field, above the fragment.
const STATE: u32 = 3 << FRAG_BITS;
/// Field of a slot never used in its array (all zero).
const EMPTY: u32 = 0;
/// State of a removed key's slot (its key stays until the array is
/// reclaimed).
const TOMB: u32 = 1 << FRAG_BITS;
/// State of a live slot.
const LIVE: u32 = 2 << FRAG_BITS;
/// The control word's top bit: some key went past this bucket, full when
/// it was placed, to a later one. Set, never cleared, within an array.
const OVERFLOW: u64 = 1 << 63;

/// Every `REUSE_BATCH`-th removal from a shard (every one under the
/// checkers, so that models reach reuse within a few operations) defers
/// the call that makes the shard's tombstones up to it reusable. The call
/// waits in the removing thread's bag of deferred calls until the bag
/// fills (64 calls, 4 under the checkers) or is flushed (as every rebuild
/// does), then for the grace period; until then new keys take empty
/// slots.
const REUSE_BATCH: u64 = if cfg!(any(loom, miri)) { 1 } else { 8 };

/// Where a tombstone's state word keeps its removal number (above the
/// REMOVED and FROZEN bits; the word is REMOVED, so nothing else reads it).
const SEQ_SHIFT: u32 = 4;

/// The state word of the tombstone left by the shard's `seq`-th removal.
#[inline]
const fn tomb_word(seq: u64) -> u64 {
    REMOVED | seq << SEQ_SHIFT
}

/// Smallest bucket count of a shard's array.
const MIN_BUCKETS: usize = if cfg!(any(loom, miri)) { 1 } else { 4 };

/// A removal rebuilds its shard smaller once fewer than
/// 1/`SHRINK_BELOW` of the slots hold live keys.
const SHRINK_BELOW: usize = if cfg!(any(loom, miri)) { 4 } else { 8 };

/// Live keys and tombstones at which an array is rebuilt: 4/5 of its
/// slots (all of them under the checkers' one-bucket arrays). Lookups of
/// absent keys (every insert of a new one) read buckets up to the first
/// with an empty slot, and under linear probing those runs grow steeply
/// past this load (at 17/20, runs of 60 full buckets occur in arrays of
/// 300).
const fn limit_for(slots: usize) -> usize {
    if cfg!(any(loom, miri)) {
        slots
    } else {
        slots * 4 / 5
    }
}

/// Buckets for `live` keys right after a rebuild that found `tombs`
/// tombstones.
///
/// A growth (few tombstones) leaves the array 7/10 full: it grows by
/// (4/5) / (7/10) = 1.14x, so an array that grew by inserts is between
/// 7/10 and 4/5 full, 53 to 61 bytes per `PeerId` (128-byte buckets of 3),
/// where doubling would leave it at 44 to 88. Copies are cheap (no key is
/// hashed again), so growing often costs little.
///
/// A rebuild forced by tombstones (churn: keys removed and others
/// inserted; more than one per 8 live keys) leaves it half full instead:
/// every rebuild copies every live key, and the next one comes after
/// `limit - live` more new keys, 3/5 of the live count at half load
/// against 1/7 at 7/10, so churn pays 1.7 copies per new key instead of 7.
fn buckets_for(live: usize, tombs: usize) -> usize {
    let slots = if tombs.saturating_mul(8) > live {
        live.saturating_mul(2)
    } else {
        live.saturating_mul(10) / 7
    };
    let mut buckets = slots.div_ceil(SLOTS).max(MIN_BUCKETS);
    // Small arrays round down to no room at all: always leave room for
    // the insert that asked for the rebuild.
    while limit_for(buckets * SLOTS) <= live {
        buckets += 1;
    }
    buckets
}

/// Buckets that take `keys` inserts of new keys before the first rebuild.
///
/// # Panics
///
/// "capacity overflow" if that many buckets cannot be counted in a
/// `usize` (`keys` near `usize::MAX`).
fn buckets_to_hold(keys: usize) -> usize {
    const OVERFLOW_MSG: &str = "capacity overflow";
    let mut buckets = keys.div_ceil(SLOTS).max(MIN_BUCKETS);
    loop {
        // `limit_for` with checked arithmetic: its `slots * 4` wraps for
        // arrays near `usize::MAX / 4` slots.
        let slots = buckets.checked_mul(SLOTS).expect(OVERFLOW_MSG);
        let limit = if cfg!(any(loom, miri)) {
            slots
        } else {
            slots.checked_mul(4).expect(OVERFLOW_MSG) / 5
        };
        if limit >= keys {
            return buckets;
        }
        buckets = buckets.checked_add(buckets / 8 + 1).expect(OVERFLOW_MSG);
    }
}

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

/// One key and its state word.
pub(crate) struct Slot<K> {
    state: AtomicU64,
    key: UnsafeCell<MaybeUninit<K>>,
}

impl<K> Slot<K> {
    /// Runs `f` on the slot's key.
    ///
    /// # Safety
    ///
    /// The slot's field in its bucket's control word was read as live or
    /// tombstone with Acquire (or under the writer lock) in an array the
    /// caller's guard keeps alive: the key was written before that field
    /// was published and is never written again while the array can be
    /// reached.
    #[inline]
    unsafe fn with_key<R>(&self, f: impl FnOnce(&K) -> R) -> R {
        // SAFETY: by the caller's contract the key is initialized and no
        // one writes it while this array can be reached.
        self.key.with(|p| f(unsafe { (*p).assume_init_ref() }))
    }
}

/// Two cache lines: a control word and [`SLOTS`] slots.
#[repr(C, align(128))]
pub(crate) struct Bucket<K> {
    control: AtomicU64,
    slots: [Slot<K>; SLOTS],
}

impl<K> Bucket<K> {
    fn new() -> Self {
        Self {
            control: AtomicU64::new(0),
            slots: std::array::from_fn(|_| Slot {
                state: AtomicU64::new(0),
                key: UnsafeCell::new(MaybeUninit::uninit()),
            }),
        }
    }
}

/// Slot `i`'s field of a control word.
#[inline]
fn field(control: u64, i: usize) -> u32 {
    (control >> (FIELD_BITS as usize * i)) as u32 & (STATE | FRAG_MASK)
}

/// `control` with slot `i`'s field set to `f`.
#[inline]
fn with_field(control: u64, i: usize, f: u32) -> u64 {
    let shift = FIELD_BITS as usize * i;
    control & !(u64::from(STATE | FRAG_MASK) << shift) | u64::from(f) << shift
}

/// The field of a live slot holding a key with this hash.
#[inline]
fn live_field(hash: u64) -> u32 {
    LIVE | hash as u32 & FRAG_MASK
}

/// One shard's bucket array.
pub(crate) struct Array<K> {
    buckets: Box<[Bucket<K>]>,
    /// The array a rebuild copies this one into, set before any word of
    /// this one is frozen.
    next: Atomic<Array<K>>,
    /// Live and tombstone slots (changed under the writer lock only).
    used: AtomicUsize,
    /// Tombstone slots (changed under the writer lock only).
    tombs: AtomicUsize,
}

impl<K: Copy> Array<K> {
    /// An array of `buckets` empty buckets. Keys are `Copy` (so they own
    /// nothing and have no `Drop`): an array frees no key when it is
    /// reclaimed, and a rebuild's bitwise copy of a key is a plain
    /// duplicate.
    fn new(buckets: usize) -> Self {
        Self {
            buckets: (0..buckets).map(|_| Bucket::new()).collect(),
            next: Atomic::null(),
            used: AtomicUsize::new(0),
            tombs: AtomicUsize::new(0),
        }
    }
}

impl<K> Array<K> {
    /// Slots in the array.
    pub(crate) fn capacity(&self) -> usize {
        self.buckets.len() * SLOTS
    }

    /// The home bucket of a hash: its fragment scaled to the bucket count
    /// (a multiply and a shift; up to 2^19 buckets a shard, 1.5 million
    /// keys, every bucket is some fragment's home).
    #[inline]
    fn home(&self, hash: u64) -> usize {
        ((u64::from(hash as u32 & FRAG_MASK) * self.buckets.len() as u64) >> FRAG_BITS) as usize
    }

    /// The slot of `key` in this array, live or tombstone, with its field:
    /// the hash's fragment is matched against live slots, and against
    /// tombstones too when `tombs` is set (under the writer lock).
    ///
    /// Progress: wait-free (at most one pass over the array).
    #[inline(always)]
    fn find<Q>(&self, hash: u64, key: &Q, tombs: bool) -> Option<(&Slot<K>, u32)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let live = live_field(hash);
        let tomb = live ^ LIVE ^ TOMB;
        let n = self.buckets.len();
        let mut b = self.home(hash);
        for _ in 0..n {
            let bucket = &self.buckets[b];
            // The control word and slot 0 share the bucket's first line;
            // slots 1 and 2 are on its second: ask for it now, so its miss
            // overlaps the first one's instead of following it.
            prefetch((bucket as *const Bucket<K>).cast::<u8>().wrapping_add(64));
            let control = bucket.control.load(Ordering::Acquire);
            for i in 0..SLOTS {
                let c = field(control, i);
                if c == live || (tombs && c == tomb) {
                    let slot = &bucket.slots[i];
                    // SAFETY: the field is live or tombstone, read with
                    // Acquire; the caller's guard keeps the array alive.
                    if unsafe { slot.with_key(|k| k.borrow() == key) } {
                        return Some((slot, c));
                    }
                }
            }
            if control & OVERFLOW == 0 {
                return None; // no key ever went past this bucket
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
        None
    }
}

/// One shard: its array, its writer lock and its per-status counters.
pub(crate) struct Shard<K> {
    pub(crate) array: Atomic<Array<K>>,
    /// Held by inserts of new keys, removals and rebuilds.
    writer: Mutex<()>,
    /// The bucket count the table was created with (its share of
    /// `with_capacity`): rebuilds never make the array smaller, so removals
    /// do not throw away room the caller asked for.
    floor: usize,
    /// Inserts into this shard by status, and removals from it by the
    /// status the entry had: `arrived[s] - departed[s]` is this shard's
    /// share of `count(s)` before transitions (which are counted per thread,
    /// in [`Raw::moves`]), and their sums give the shard's exact length.
    /// Changed under the writer lock only; wrapping arithmetic.
    arrived: [AtomicU64; STATUSES],
    departed: [AtomicU64; STATUSES],
    /// Removals from this shard so far (changed under the writer lock
    /// only): the `n`-th removal's tombstone carries `n` in its state word.
    removals: AtomicU64,
    /// Tombstones with a removal number up to this one may take another
    /// key: every lookup that could have seen their keys live has ended.
    /// Raised by a call deferred to the epoch collector, which may run on
    /// any thread and after the table is dropped, hence the `Arc`.
    reusable: Arc<AtomicU64>,
    /// The shard's version clock. Inserts take their generation from here;
    /// a transition takes its entry's generation plus one; a removal first
    /// moves the clock past the generation of the entry it removes, so a key
    /// inserted again starts beyond every generation its removed entry had.
    clock: AtomicU64,
}

/// Adds one to a counter that only writers holding their shard's lock
/// change: a load and a store, no read-modify-write (readers of the
/// counter only load it).
#[inline]
fn bump(counter: &AtomicU64) {
    let n = counter.load(Ordering::Relaxed);
    counter.store(n.wrapping_add(1), Ordering::Relaxed);
}

/// Owned transition stripes: a power of two, 4 per available CPU, between
/// 4 and 64 (none under loom, where every thread takes the shared one; 1
/// under Miri).
fn stripes() -> usize {
    if cfg!(loom) {
        return 0;
    }
    if cfg!(miri) {
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

impl<K: Copy> Shard<K> {
    fn new(buckets: usize) -> Self {
        Self {
            array: Atomic::new(Array::new(buckets)),
            writer: Mutex::new(()),
            floor: buckets,
            arrived: std::array::from_fn(|_| AtomicU64::new(0)),
            departed: std::array::from_fn(|_| AtomicU64::new(0)),
            removals: AtomicU64::new(0),
            reusable: Arc::new(AtomicU64::new(0)),
            clock: AtomicU64::new(0),
        }
    }
}

impl<K> Shard<K> {
    /// The generation of a new entry: the next tick of the shard's clock.
    /// The caller holds the writer lock.
    #[inline]
    fn next_generation(&self) -> u32 {
        let now = self.clock.load(Ordering::Relaxed);
        self.clock.store(now.wrapping_add(1), Ordering::Relaxed);
        now as u32
    }

    /// Moves the clock past `generation` (the generation of an entry about
    /// to be removed), unless it is there already: entries inserted after
    /// the removal then start beyond it. Generations are compared on the
    /// 24-bit circle, so this holds while an entry's generation runs less
    /// than 2^23 ahead of its shard's clock. The caller holds the writer
    /// lock.
    #[inline]
    fn advance_clock_past(&self, generation: u32) {
        let target = generation.wrapping_add(1);
        let clock = self.clock.load(Ordering::Relaxed);
        let ahead = target.wrapping_sub(clock as u32) & status::GEN_MASK;
        if ahead != 0 && ahead < 1 << 23 {
            self.clock
                .store(clock.wrapping_add(u64::from(ahead)), Ordering::Relaxed);
        }
    }

    /// This shard's inserts minus removals with `status` (transitions are
    /// counted in [`Raw::moves`]): wrapping.
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

    /// The shard's current array.
    #[inline]
    pub(crate) fn current<'g>(&self, guard: &'g Guard) -> &'g Array<K> {
        // SAFETY: a shard's array is never null while the shard is alive,
        // and the guard keeps a retired array alive while it is used.
        unsafe { self.array.load(Ordering::Acquire, guard).deref() }
    }
}

impl<K> Drop for Shard<K> {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no other thread can reach this shard.
        let guard = unsafe { epoch::unprotected() };
        let array = self.array.swap(Shared::null(), Ordering::Relaxed, guard);
        if !array.is_null() {
            // SAFETY: the array came from `Owned` and was published only
            // through `self.array`, which we just emptied with exclusive
            // access; older arrays were retired when replaced.
            drop(unsafe { array.into_owned() });
        }
    }
}

/// A live slot found for a key.
pub(crate) struct Found<'g, K> {
    slot: &'g Slot<K>,
}

/// Where a new key goes: slot `slot` of bucket `bucket`, a reusable
/// tombstone if `tomb`, else an empty slot.
#[derive(Clone, Copy)]
struct Vacancy {
    bucket: usize,
    slot: usize,
    tomb: bool,
}

/// The shards, the hasher and the time origin: everything an operation
/// needs.
pub(crate) struct Raw<K, S> {
    pub(crate) shards: Box<[CachePadded<Shard<K>>]>,
    shard_mask: usize,
    /// Status transitions, counted in the calling thread's stripe.
    moves: Box<[CachePadded<Moves>]>,
    hasher: S,
    /// The table's time zero as an `Instant` (to hand out `since`), and as
    /// a precise monotonic reading taken just after it: entries are stamped
    /// with coarse readings relative to that, so `origin + stamp` is never
    /// later than the moment the stamp was taken.
    pub(crate) origin: std::time::Instant,
    origin_nanos: u64,
    _owns: PhantomData<K>,
}

impl<K, S> Raw<K, S> {
    pub(crate) fn new(shards: usize, capacity: usize, hasher: S) -> Self
    where
        K: Copy,
    {
        debug_assert!(shards.is_power_of_two());
        let per_shard = buckets_to_hold(capacity.div_ceil(shards));
        // An allocation may not exceed `isize::MAX` bytes: refuse sizes
        // past that with the documented panic rather than a wrapped size.
        let bytes = per_shard
            .checked_mul(size_of::<Bucket<K>>())
            .and_then(|b| b.checked_mul(shards))
            .filter(|&b| b <= isize::MAX as usize);
        assert!(bytes.is_some(), "capacity overflow");
        Self {
            shards: (0..shards)
                .map(|_| CachePadded::new(Shard::new(per_shard)))
                .collect(),
            shard_mask: shards - 1,
            // One stripe per owned slot number, and one shared by the rest.
            moves: (0..=stripes())
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
    /// on the shard's line for inserts and removals (which hold the writer
    /// lock, so a load and a store do), with one atomic add on the calling
    /// thread's stripe for transitions.
    #[inline]
    fn moved_status(
        &self,
        shard: &Shard<K>,
        from: Option<ConnectionStatus>,
        to: Option<ConnectionStatus>,
    ) {
        match (from, to) {
            (Some(from), Some(to)) if from != to => {
                // The thread holding slot number `i` owns stripe `i`
                // (slot numbers are unique among live threads, and a
                // recycled one happens-after its last owner), so it counts
                // with a load and a store; threads past the owned stripes
                // share the last one with an atomic add. Under loom every
                // thread takes the shared one.
                let shared = self.moves.len() - 1;
                let i = if cfg!(loom) {
                    shared
                } else {
                    thread_slot::current().min(shared)
                };
                let counter = &self.moves[i].0[from.index()][to.index()];
                if i < shared {
                    counter.store(
                        counter.load(Ordering::Relaxed).wrapping_add(1),
                        Ordering::Relaxed,
                    );
                } else {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            (None, Some(to)) => bump(&shard.arrived[to.index()]),
            (Some(from), None) => bump(&shard.departed[from.index()]),
            _ => {}
        }
    }

    /// Milliseconds since the table's origin, saturating at both ends.
    #[inline]
    fn now_millis(&self) -> u64 {
        status::millis_since_origin(self.origin_nanos)
    }

    /// Bytes of every shard's current array.
    pub(crate) fn array_bytes(&self, guard: &Guard) -> usize {
        self.shards
            .iter()
            .map(|s| {
                size_of::<Array<K>>() + s.current(guard).buckets.len() * size_of::<Bucket<K>>()
            })
            .sum()
    }
}

/// Shape of one shard's array: `(capacity, tombstones, longest_run)`,
/// where a run is consecutive buckets with the overflow bit (the most a
/// lookup reads, less one).
pub(crate) struct ArrayShape {
    pub(crate) capacity: usize,
    pub(crate) tombstones: usize,
    pub(crate) longest_run: usize,
}

impl<K: Copy + Hash + Eq + Send + Sync + 'static, S: BuildHasher> Raw<K, S> {
    /// The keyed hash of `key`: shard from its top byte, fragment (home
    /// bucket and filter) from its low 19 bits.
    #[inline]
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The live slot of `key` in the shard's newest array that holds it,
    /// with its state word (never frozen, never removed).
    ///
    /// Progress: lock-free: a frozen word sends it to the array a rebuild
    /// copies into, where the key is already published; it never waits.
    #[inline]
    pub(crate) fn find_live<'g, Q>(
        &self,
        shard: &Shard<K>,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<(Found<'g, K>, u64)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized,
    {
        Self::find_in(shard.current(guard), hash, key, guard)
    }

    #[inline(always)]
    fn find_in<'g, Q>(
        mut array: &'g Array<K>,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<(Found<'g, K>, u64)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized,
    {
        loop {
            let (slot, _) = array.find(hash, key, false)?;
            let word = slot.state.load(Ordering::Acquire);
            if word & FROZEN == 0 {
                return (!status::is_removed(word)).then_some((Found { slot }, word));
            }
            array = Self::next(array, guard);
        }
    }

    /// The array a rebuild is copying `array` into.
    #[inline]
    fn next<'g>(array: &Array<K>, guard: &'g Guard) -> &'g Array<K> {
        let next = array.next.load(Ordering::Acquire, guard);
        // SAFETY: a word is frozen only after `next` is set (invariant of
        // `rebuild`), and the freeze that we observed (Acquire) was
        // released after it; arrays are retired after their successor is
        // published, and the guard keeps them alive.
        unsafe { next.deref() }
    }

    /// The state words of `keys` (live entries only), in order, pushed
    /// through `out`, with the cache misses of up to [`BATCH_WINDOW`]
    /// lookups in flight at once: each window hashes its keys and
    /// prefetches both lines of their home buckets, then probes.
    ///
    /// Progress: lock-free, as `find_live` per key.
    pub(crate) fn words_many<Q>(&self, keys: &[Q], guard: &Guard, mut out: impl FnMut(Option<u64>))
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq,
    {
        for window in keys.chunks(BATCH_WINDOW) {
            let mut hashes = [0u64; BATCH_WINDOW];
            let mut arrays: [Option<&Array<K>>; BATCH_WINDOW] = [None; BATCH_WINDOW];
            for (i, key) in window.iter().enumerate() {
                let hash = self.hash(key);
                let array = self.shard(hash).current(guard);
                let bucket: *const Bucket<K> = &array.buckets[array.home(hash)];
                prefetch(bucket);
                prefetch(bucket.cast::<u8>().wrapping_add(64));
                hashes[i] = hash;
                arrays[i] = Some(array);
            }
            for ((key, &hash), array) in window.iter().zip(&hashes).zip(arrays.iter().flatten()) {
                out(Self::find_in(array, hash, key, guard).map(|(_, word)| word));
            }
        }
    }

    /// Applies `decide` to a live entry's state word with a CAS loop,
    /// following the entry into a rebuild's new array if its word is
    /// frozen.
    ///
    /// `decide` gets the current word and returns the new status, or `None`
    /// to leave the entry as it is. Returns the word before and after, or
    /// `Err(word)` if the entry was removed before the CAS could land (then
    /// `word` has the REMOVED bit) or `decide` declined (then it does not).
    ///
    /// Progress: lock-free (the CAS fails only when another transition of
    /// the same entry, a removal or a freeze succeeded).
    pub(crate) fn transition<Q>(
        &self,
        hash: u64,
        key: &Q,
        found: Found<'_, K>,
        mut word: u64,
        guard: &Guard,
        mut decide: impl FnMut(u64) -> Option<ConnectionStatus>,
    ) -> Result<(u64, u64), u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let shard = self.shard(hash);
        let mut slot = found.slot;
        let mut now = None;
        loop {
            if word & FROZEN != 0 {
                // A rebuild moved the entry: carry on in its new array (the
                // key is there, published before the freeze).
                let array = shard.current(guard);
                match Self::find_in(array, hash, key, guard) {
                    Some((found, w)) => (slot, word) = (found.slot, w),
                    None => return Err(REMOVED),
                }
                continue;
            }
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
            match slot
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
    /// Progress: a present key is updated as by `transition`, without a
    /// lock; an absent one is inserted under the shard's writer lock.
    pub(crate) fn upsert(
        &self,
        hash: u64,
        key: K,
        mut decide: impl FnMut(Option<u64>) -> Option<ConnectionStatus>,
    ) -> (Option<u64>, Option<u64>) {
        let shard = self.shard(hash);
        let guard = &epoch::pin();
        if let Some((found, word)) = self.find_live(shard, hash, &key, guard) {
            match self.transition(hash, &key, found, word, guard, |w| decide(Some(w))) {
                Ok((before, after)) => return (Some(before), Some(after)),
                Err(w) if !status::is_removed(w) => return (Some(w), None),
                Err(_) => {} // removed meanwhile: insert below
            }
        }
        let lock = shard.writer.lock();
        loop {
            let array = shard.current(guard);
            // Under the lock the array is the shard's latest and no other
            // writer changes a control word: a live entry here can still
            // change status (lock-free transitions), nothing else.
            match array.find(hash, &key, true) {
                Some((slot, c)) if c & STATE == LIVE => {
                    // Inserted by another writer since the lookup above.
                    // Holding the lock, nothing can remove or freeze it.
                    let word = slot.state.load(Ordering::Acquire);
                    let found = Found { slot };
                    let result =
                        self.transition(hash, &key, found, word, guard, |w| decide(Some(w)));
                    drop(lock);
                    return match result {
                        Ok((before, after)) => (Some(before), Some(after)),
                        Err(w) => (Some(w), None),
                    };
                }
                Some((slot, _)) => {
                    // The key's own tombstone (an equal key): it takes the
                    // slot back, which keeps the old key object (readers
                    // may be comparing it; equal keys answer alike).
                    let Some(to) = decide(None) else {
                        return (None, None);
                    };
                    let word = status::pack(to, shard.next_generation(), self.now_millis());
                    slot.state.store(word, Ordering::Release);
                    self.set_control(array, slot, live_field(hash));
                    let tombs = array.tombs.load(Ordering::Relaxed);
                    array.tombs.store(tombs - 1, Ordering::Relaxed);
                    self.moved_status(shard, None, Some(to));
                    return (None, Some(word));
                }
                None => {}
            }
            let Some(to) = decide(None) else {
                return (None, None);
            };
            let fits = array.used.load(Ordering::Relaxed) < limit_for(array.capacity());
            if array.tombs.load(Ordering::Relaxed) == 0 {
                if !fits {
                    self.rebuild(shard, guard);
                    continue;
                }
                let word = status::pack(to, shard.next_generation(), self.now_millis());
                Self::place(array, hash, key, word);
                let used = array.used.load(Ordering::Relaxed);
                array.used.store(used + 1, Ordering::Relaxed);
                self.moved_status(shard, None, Some(to));
                return (None, Some(word));
            }
            // Reusable tombstones first: taking one costs no room, so it
            // needs no rebuild however full the array is.
            let reusable = shard.reusable.load(Ordering::Acquire);
            let vacancy = Self::vacancy(array, hash, reusable);
            let reuse = matches!(vacancy, Some(Vacancy { tomb: true, .. }));
            let Some(vacancy) = vacancy.filter(|_| reuse || fits) else {
                self.rebuild(shard, guard);
                continue;
            };
            let word = status::pack(to, shard.next_generation(), self.now_millis());
            Self::fill(array, hash, vacancy, key, word);
            if reuse {
                let tombs = array.tombs.load(Ordering::Relaxed);
                array.tombs.store(tombs - 1, Ordering::Relaxed);
            } else {
                let used = array.used.load(Ordering::Relaxed);
                array.used.store(used + 1, Ordering::Relaxed);
            }
            self.moved_status(shard, None, Some(to));
            return (None, Some(word));
        }
    }

    /// The slot a new key with this hash goes to: in the first bucket of
    /// its probe sequence that has one, a tombstone whose removal number is
    /// at most `reusable` (so no lookup can still be comparing its key), or
    /// else an empty slot. `None` if no bucket has either. The caller holds
    /// the writer lock (or owns the array).
    fn vacancy(array: &Array<K>, hash: u64, reusable: u64) -> Option<Vacancy> {
        let n = array.buckets.len();
        let mut b = array.home(hash);
        for _ in 0..n {
            let bucket = &array.buckets[b];
            let control = bucket.control.load(Ordering::Relaxed);
            let mut empty = None;
            for i in 0..SLOTS {
                match field(control, i) & STATE {
                    EMPTY => empty = empty.or(Some(i)),
                    // The writer lock orders this read after the store of
                    // the removal number.
                    TOMB if bucket.slots[i].state.load(Ordering::Relaxed) >> SEQ_SHIFT
                        <= reusable =>
                    {
                        return Some(Vacancy {
                            bucket: b,
                            slot: i,
                            tomb: true,
                        });
                    }
                    _ => {}
                }
            }
            if let Some(i) = empty {
                return Some(Vacancy {
                    bucket: b,
                    slot: i,
                    tomb: false,
                });
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
        None
    }

    /// Writes `key` and `word` into the slot `vacancy` names (found by
    /// [`vacancy`](Self::vacancy) under the same writer lock) and publishes
    /// it, after setting the overflow bit of every bucket the key's probe
    /// sequence passes on the way there.
    fn fill(array: &Array<K>, hash: u64, vacancy: Vacancy, key: K, word: u64) -> &Slot<K> {
        let n = array.buckets.len();
        let mut b = array.home(hash);
        while b != vacancy.bucket {
            let bucket = &array.buckets[b];
            let control = bucket.control.load(Ordering::Relaxed);
            if control & OVERFLOW == 0 {
                // Published before the key is, further on: a lookup that
                // sees the key's field has passed this bit on its way.
                bucket.control.store(control | OVERFLOW, Ordering::Release);
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
        let bucket = &array.buckets[b];
        let slot = &bucket.slots[vacancy.slot];
        slot.key.with_mut(|p| {
            // SAFETY: no reader looks at this key until its field below is
            // published: an empty slot's key was never published, and a
            // reusable tombstone's field has not been live since before
            // every lookup still running began (its removal number is at
            // most the one the epoch collector released, which it does
            // only once every thread pinned at the removal has unpinned).
            // A key is `Copy`: overwriting the old one drops nothing.
            unsafe { (*p).write(key) };
        });
        slot.state.store(word, Ordering::Relaxed);
        let control = bucket.control.load(Ordering::Relaxed);
        bucket.control.store(
            with_field(control, vacancy.slot, live_field(hash)),
            Ordering::Release,
        );
        slot
    }

    /// Writes `key` and `word` into the first empty slot of `hash`'s probe
    /// sequence and publishes it, setting the overflow bit of every full
    /// bucket it passes: one pass, for arrays without reusable tombstones
    /// (a rebuild's fresh array; an insert's array without tombstones).
    /// The caller holds the writer lock (or owns the array), and the array
    /// has an empty slot.
    fn place(array: &Array<K>, hash: u64, key: K, word: u64) -> &Slot<K> {
        let n = array.buckets.len();
        let mut b = array.home(hash);
        loop {
            let bucket = &array.buckets[b];
            let control = bucket.control.load(Ordering::Relaxed);
            if let Some(i) = (0..SLOTS).find(|&i| field(control, i) == EMPTY) {
                let slot = &bucket.slots[i];
                slot.key.with_mut(|p| {
                    // SAFETY: an empty slot's key is unwritten and no reader
                    // looks at it until its field below is published.
                    unsafe { (*p).write(key) };
                });
                slot.state.store(word, Ordering::Relaxed);
                bucket
                    .control
                    .store(with_field(control, i, live_field(hash)), Ordering::Release);
                return slot;
            }
            if control & OVERFLOW == 0 {
                // Published before the key is, further on: a lookup that
                // sees the key's field has passed this bit on its way.
                bucket.control.store(control | OVERFLOW, Ordering::Release);
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
    }

    /// Sets the field of `slot` (a slot of `array`) to `f`. The caller holds
    /// the writer lock.
    fn set_control(&self, array: &Array<K>, slot: &Slot<K>, f: u32) {
        let addr = slot as *const Slot<K> as usize;
        let base = array.buckets.as_ptr() as usize;
        let b = (addr - base) / size_of::<Bucket<K>>();
        let bucket = &array.buckets[b];
        let i = (0..SLOTS)
            .find(|&i| std::ptr::eq(&bucket.slots[i], slot))
            .expect("the slot is in this bucket");
        let control = bucket.control.load(Ordering::Relaxed);
        bucket
            .control
            .store(with_field(control, i, f), Ordering::Release);
    }

    /// Removes the live entry of `key` if `keep` (given its state word)
    /// returns false. Returns the word it had when removed.
    ///
    /// Progress: takes the shard's writer lock. Reclamation: the slot
    /// becomes a tombstone that keeps the key until the shard is rebuilt;
    /// a removal that leaves the shard mostly empty rebuilds it smaller and
    /// retires the old array.
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
        let _lock = shard.writer.lock();
        let array = shard.current(guard);
        let (slot, _) = array.find(hash, key, false)?;
        let seq = shard.removals.load(Ordering::Relaxed) + 1;
        let mut word = slot.state.load(Ordering::Acquire);
        loop {
            debug_assert_eq!(word & FROZEN, 0, "frozen outside a rebuild");
            if status::is_removed(word) || keep(word) {
                return None;
            }
            shard.advance_clock_past(status::generation(word));
            match slot.state.compare_exchange_weak(
                word,
                tomb_word(seq),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        shard.removals.store(seq, Ordering::Relaxed);
        self.set_control(array, slot, live_field(hash) ^ LIVE ^ TOMB);
        let tombs = array.tombs.load(Ordering::Relaxed);
        array.tombs.store(tombs + 1, Ordering::Relaxed);
        if seq % REUSE_BATCH == 0 {
            // Once every thread pinned now has unpinned, no lookup can
            // still be comparing the keys of this shard's tombstones up to
            // this one: the collector then lets inserts reuse them. The
            // call waits in this thread's bag of deferred calls (no flush:
            // a flush per batch costs more than the rebuilds it saves).
            let reusable = Arc::clone(&shard.reusable);
            guard.defer(move || reusable.fetch_max(seq, Ordering::Release));
        }
        self.moved_status(shard, Some(ConnectionStatus::from_bits(word)), None);
        let live = shard.len().max(0) as usize;
        if array.buckets.len() > shard.floor && live.saturating_mul(SHRINK_BELOW) < array.capacity()
        {
            self.rebuild(shard, guard);
        }
        Some(word)
    }

    /// Rebuilds the shard into a fresh array sized for its live keys (see
    /// the module docs). The caller holds the writer lock.
    ///
    /// Progress: blocking for this shard's writers (they wait on the lock
    /// the caller holds); lookups and transitions go on, in the old array
    /// or, for keys already moved, in the new one. Reclamation: the old
    /// array is retired to the collector with its tombstones' keys.
    #[cold]
    fn rebuild(&self, shard: &Shard<K>, guard: &Guard) {
        let old_shared = shard.array.load(Ordering::Acquire, guard);
        // SAFETY: never null while the shard is alive; the guard keeps it.
        let old = unsafe { old_shared.deref() };
        // 1. Collect the live slots with their fragments (all a key's home
        //    needs: no key is hashed again, so no user code runs here).
        let mut moving = Vec::with_capacity(old.used.load(Ordering::Relaxed));
        for bucket in old.buckets.iter() {
            let control = bucket.control.load(Ordering::Relaxed);
            for (i, slot) in bucket.slots.iter().enumerate() {
                let f = field(control, i);
                if f & STATE == LIVE {
                    moving.push((slot, u64::from(f & FRAG_MASK)));
                }
            }
        }
        let tombs = old.tombs.load(Ordering::Relaxed);
        let buckets = buckets_for(moving.len(), tombs).max(shard.floor);
        let new = Owned::new(Array::new(buckets)).into_shared(guard);
        // 2. Link it, before any word is frozen.
        old.next.store(new, Ordering::Release);
        // SAFETY: just allocated, kept alive by `shard` or `old.next` and
        // the guard.
        let new_ref = unsafe { new.deref() };
        // 3. Copy each key and word, then freeze the old word.
        for &(slot, hash) in &moving {
            let key = slot.key.with(|p| {
                // SAFETY: a live slot's key is initialized and never
                // written while the array can be reached; readers only
                // read it too. `K: Copy`, so this is a plain duplicate:
                // the key holds no `UnsafeCell` another thread could be
                // writing through, and neither copy owns anything.
                unsafe { (*p).assume_init() }
            });
            let mut word = slot.state.load(Ordering::Acquire);
            let copy = Self::place(new_ref, hash, key, word);
            loop {
                match slot.state.compare_exchange_weak(
                    word,
                    word | FROZEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(actual) => {
                        word = actual;
                        copy.state.store(word, Ordering::Relaxed);
                    }
                }
            }
        }
        new_ref.used.store(moving.len(), Ordering::Relaxed);
        // 4. Publish and retire.
        shard.array.store(new, Ordering::Release);
        // SAFETY: the old array is unreachable for new readers now that
        // the new one is published (only `next` pointers of older retired
        // arrays lead to it, and those are reached only under guards that
        // the collector waits for); it is retired once, here.
        unsafe { guard.defer_destroy(old_shared) };
        guard.flush();
    }

    /// Calls `f` with every live key of the shard and its current word.
    pub(crate) fn walk_shard(&self, shard: &Shard<K>, guard: &Guard, mut f: impl FnMut(&K, u64)) {
        let array = shard.current(guard);
        for bucket in array.buckets.iter() {
            let control = bucket.control.load(Ordering::Acquire);
            for (i, slot) in bucket.slots.iter().enumerate() {
                let fld = field(control, i);
                if fld & STATE != LIVE {
                    continue;
                }
                let word = slot.state.load(Ordering::Acquire);
                let word = if word & FROZEN == 0 {
                    Some(word).filter(|&w| !status::is_removed(w))
                } else {
                    // Moved by a rebuild: its current word is in the new
                    // array.
                    // SAFETY: a live byte read with Acquire; the guard
                    // keeps the array.
                    unsafe {
                        slot.with_key(|k| {
                            let hash = u64::from(fld & FRAG_MASK);
                            Self::find_in(Self::next(array, guard), hash, k, guard).map(|(_, w)| w)
                        })
                    }
                };
                if let Some(word) = word {
                    // SAFETY: as above.
                    unsafe { slot.with_key(|k| f(k, word)) };
                }
            }
        }
    }

    /// The shape of the shard's current array.
    pub(crate) fn shape(&self, shard: &Shard<K>, guard: &Guard) -> ArrayShape {
        let array = shard.current(guard);
        let full = |b: &Bucket<K>| b.control.load(Ordering::Acquire) & OVERFLOW != 0;
        let n = array.buckets.len();
        let start = array
            .buckets
            .iter()
            .position(|b| !full(b))
            .map_or(0, |i| i + 1);
        let (mut run, mut longest, mut tombstones) = (0, 0, 0);
        for k in 0..n {
            let bucket = &array.buckets[(start + k) % n];
            let c = bucket.control.load(Ordering::Acquire);
            tombstones += (0..SLOTS).filter(|&i| field(c, i) & STATE == TOMB).count();
            if full(bucket) {
                run += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        ArrayShape {
            capacity: array.capacity(),
            tombstones,
            longest_run: longest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `PeerId` bucket is exactly two cache lines.
    #[test]
    fn a_peer_id_bucket_is_two_cache_lines() {
        assert_eq!(size_of::<Bucket<crate::PeerId>>(), 128);
        assert_eq!(std::mem::align_of::<Bucket<crate::PeerId>>(), 128);
    }

    /// Growth without tombstones is by about 1.14x, and an array that has
    /// grown stays at least 2/3 full until its next rebuild: 64 bytes per
    /// `PeerId` at most (128-byte buckets of 3).
    #[test]
    fn grown_arrays_stay_two_thirds_full() {
        if cfg!(any(loom, miri)) {
            return;
        }
        for live in 0..10_000 {
            assert!(limit_for(buckets_for(live, 0) * SLOTS) > live, "{live}");
            assert!(limit_for(buckets_for(live, live) * SLOTS) > live, "{live}");
        }
        let mut buckets = MIN_BUCKETS;
        for _ in 0..60 {
            let limit = limit_for(buckets * SLOTS);
            let next = buckets_for(limit + 1, 0);
            assert!(next > buckets, "{buckets} buckets do not grow");
            let load = (limit + 1) as f64 / (next * SLOTS) as f64;
            if buckets > 64 {
                assert!(load >= 2.0 / 3.0, "{buckets} -> {next}: load {load}");
                assert!((next as f64) / (buckets as f64) < 1.3);
            }
            buckets = next;
        }
    }
}
