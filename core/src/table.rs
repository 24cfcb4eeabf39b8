//! [`StatusTable`]: the public face of the sharded status table.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::mem::size_of;

use crossbeam_epoch as epoch;
use crossbeam_utils::CachePadded;

use crate::bucket::{Raw, Shard};
use crate::status::{self, ConnectionStatus, EntryInfo};
use crate::Error;

/// Largest number of shards a table may have (shard bits come from the top
/// byte of the hash).
pub const MAX_SHARDS: usize = 256;

/// A concurrent map from keys (peer ids) to [`ConnectionStatus`], built for
/// many readers, frequent status changes and a million keys.
///
/// Keys are `Copy` (a [`PeerId`](crate::PeerId) is 32 bytes): they live
/// inline in the bucket arrays, and a rebuild copies them bitwise into a
/// fresh array while lock-free readers may still be comparing the old
/// copy. A `Copy` type cannot hold an `UnsafeCell` inline, so the two
/// copies are the same immutable value; a key with interior mutability
/// (an atomic or a mutex field) is rejected at compile time:
///
/// ```compile_fail
/// use std::hash::{Hash, Hasher};
/// use std::sync::atomic::AtomicU64;
/// use connmgr_core::StatusTable;
///
/// struct Key { id: u64, hits: AtomicU64 }
/// impl PartialEq for Key { fn eq(&self, o: &Self) -> bool { self.id == o.id } }
/// impl Eq for Key {}
/// impl Hash for Key { fn hash<H: Hasher>(&self, h: &mut H) { self.id.hash(h) } }
/// let table: StatusTable<Key> = StatusTable::new();
/// ```
///
/// # Progress
///
/// * [`get`](Self::get), [`get_many`](Self::get_many), [`info`](Self::info)
///   and every status transition of a key that is present
///   ([`compare_and_set`](Self::compare_and_set), [`set`](Self::set),
///   [`set_if_generation`](Self::set_if_generation), [`insert`](Self::insert)
///   of a present key) take no lock and never wait for another thread, not
///   even for a rebuild of their shard: a lookup reads one bucket (two
///   cache lines) in the common case, and a transition is one CAS on the
///   entry's state word, retried only when another transition of the same
///   key, or a rebuild's freeze, landed first. A key that a rebuild has
///   frozen is found, and changed, in the new array at once (it is
///   published there before it is frozen), so both are lock-free: each
///   retry follows a rebuild that overlaps the call.
/// * [`insert`](Self::insert) of a new key and [`remove`](Self::remove) take
///   their shard's writer lock for a probe and a store (and, now and then,
///   a rebuild of the shard, which copies its live keys into a fresh
///   array). Readers and transitions never wait on it. A rebuild runs no
///   user code (it never hashes, clones or drops a key: homes come from
///   the stored hash fragments and keys are `Copy`), so it cannot panic
///   halfway; the key's `Hash` and `Eq` run only in the calling operation
///   before anything changes, or while it compares keys.
///
/// # Reclamation
///
/// Keys and state words live inline in each shard's bucket array. A
/// removed key's slot becomes a tombstone that keeps the key (so a peer
/// that reconnects takes its own slot back) until a new key takes the
/// slot, which it may once no lookup can still be comparing the old key
/// (the epoch collector says when), or the shard is rebuilt into a fresh
/// array, which happens when live keys and tombstones fill 4/5 of the
/// slots, or when live keys fall under 1/8 (the array shrinks,
/// so memory follows the population down, but never below the room asked
/// for with [`with_capacity`](StatusTable::with_capacity)). Replaced arrays are retired to
/// [crossbeam-epoch](crossbeam_epoch)'s collector and freed once no
/// thread can still be reading them (keys are `Copy`: freeing an array
/// runs no user code); a
/// rebuild flushes the calling thread's garbage at once, so a large
/// removal returns its memory without help from other calls. Every
/// operation pins the epoch only for its own duration (a batch for the
/// whole batch); no guard or reference into the table is ever handed out,
/// so no caller can hold one across an `.await` or deadlock on it. (The
/// mechanics are in the module docs of `src/bucket.rs`.)
///
/// # Hashing
///
/// The default hasher is std's keyed SipHash ([`RandomState`]): peer ids come
/// from the network, and an unkeyed hash would let a peer grind ids that all
/// land in one shard and one probe chain. The shard is chosen from the same
/// keyed hash. A custom hasher is opt-in through
/// [`with_capacity_and_hasher`](Self::with_capacity_and_hasher).
///
/// # Example
///
/// ```
/// use connmgr_core::{ConnectionStatus::*, PeerId, StatusTable};
///
/// let table = StatusTable::new();
/// let peer = PeerId::from_bytes([1; 32]);
/// assert_eq!(table.insert(peer, Connecting), None);
/// // Only the one who sees `Connecting` may complete the dial.
/// table.compare_and_set(&peer, Connecting, Connected).unwrap();
/// assert!(table.compare_and_set(&peer, Connecting, Failed).is_err());
/// assert_eq!(table.get(&peer), Some(Connected));
/// assert_eq!(table.count(Connected), 1);
/// assert_eq!(table.remove(&peer), Some(Connected));
/// assert!(table.is_empty());
/// ```
pub struct StatusTable<K, S = RandomState> {
    raw: Raw<K, S>,
    // Keys are shared between threads and copied by whichever thread
    // rebuilds a shard, so the table's auto traits must not come from `AtomicPtr`
    // (always Send + Sync); the impls below state the real requirements.
    _not_auto: PhantomData<*const K>,
}

// SAFETY: the table owns its keys (moved in, copied by whichever thread
// rebuilds a shard), so moving the table needs `K: Send`; references to
// keys are handed to callbacks on any thread, so it also needs `K: Sync`.
// The hasher moves with the table.
unsafe impl<K: Send + Sync, S: Send> Send for StatusTable<K, S> {}
// SAFETY: through `&StatusTable` threads read keys concurrently (`K: Sync`)
// and copy keys inserted by other threads into new arrays (`K: Send`); the
// hasher is used from every thread through `&S` (`S: Sync`).
unsafe impl<K: Send + Sync, S: Sync> Sync for StatusTable<K, S> {}

impl<K: Copy + Hash + Eq + Send + Sync + 'static> StatusTable<K> {
    /// An empty table with the default shard count and keyed hashing.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty table with room for about `capacity` keys before its
    /// shards first grow (each shard gets the smallest array with room for
    /// its even share; keys never split exactly evenly, so a shard may grow
    /// a little earlier).
    ///
    /// # Panics
    ///
    /// With "capacity overflow" if the bucket arrays for `capacity` keys
    /// would exceed `isize::MAX` bytes (or their size cannot be computed
    /// in a `usize`); allocating smaller ones may still abort the process
    /// when memory runs out.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, RandomState::new())
    }
}

impl<K: Copy + Hash + Eq + Send + Sync + 'static> Default for StatusTable<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Hash + Eq + Send + Sync + 'static, S: BuildHasher> StatusTable<K, S> {
    /// An empty table using `hasher`, with room for `capacity` keys.
    ///
    /// Use an unkeyed hasher only for keys an adversary cannot choose.
    ///
    /// # Panics
    ///
    /// As [`with_capacity`](StatusTable::with_capacity).
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        Self::from_raw(Raw::new(default_shards(), capacity, hasher))
    }

    /// An empty table with exactly `shards` shards.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `shards` is a power of two from 1 to
    /// [`MAX_SHARDS`].
    ///
    /// # Panics
    ///
    /// As [`with_capacity`](StatusTable::with_capacity).
    pub fn with_shards(shards: usize, capacity: usize, hasher: S) -> Result<Self, Error> {
        if !shards.is_power_of_two() || shards > MAX_SHARDS {
            return Err(Error::InvalidConfig {
                setting: "shards",
                expected: "a power of two from 1 to 256",
            });
        }
        Ok(Self::from_raw(Raw::new(shards, capacity, hasher)))
    }

    fn from_raw(raw: Raw<K, S>) -> Self {
        Self {
            raw,
            _not_auto: PhantomData,
        }
    }

    /// The status of `key`, if present.
    ///
    /// **Progress:** lock-free; takes no lock and never waits for a writer.
    /// **Reclamation:** like every call here it pins crossbeam-epoch, and a
    /// pin now and then frees replaced arrays on this thread (plain
    /// deallocations: keys are `Copy`, so no user code runs).
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<ConnectionStatus>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.word(key).map(ConnectionStatus::from_bits)
    }

    /// The statuses of many keys at once: `out` is cleared, then holds one
    /// answer per key, `out[i]` for `keys[i]`, as [`get`](Self::get) would
    /// give it.
    ///
    /// Faster per key than `get` in a loop once the table is larger than the
    /// CPU's caches: it pins the epoch once for the whole batch and keeps the
    /// cache misses of several lookups in flight at once (it hashes a window
    /// of 16 keys and prefetches both cache lines of each key's home bucket,
    /// where its control word, key and state word sit, before probing).
    /// Each answer is read on its own: the batch is not one atomic snapshot.
    ///
    /// **Progress:** lock-free, as `get` per key. **Reclamation:** the batch
    /// holds one epoch guard from start to end, so a very long batch delays
    /// the freeing (not the removal) of arrays retired meanwhile.
    ///
    /// ```
    /// use connmgr_core::{ConnectionStatus::*, PeerId, StatusTable};
    ///
    /// let table = StatusTable::new();
    /// let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
    /// table.insert(a, Connected);
    /// let mut out = Vec::new();
    /// table.get_many(&[a, b], &mut out);
    /// assert_eq!(out, [Some(Connected), None]);
    /// ```
    pub fn get_many<Q>(&self, keys: &[Q], out: &mut Vec<Option<ConnectionStatus>>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq,
    {
        out.clear();
        out.reserve(keys.len());
        let guard = &epoch::pin();
        self.raw.words_many(keys, guard, |word| {
            out.push(word.map(ConnectionStatus::from_bits));
        });
    }

    /// Status, generation and time of the last change of `key`, read in one
    /// atomic load.
    ///
    /// **Progress:** lock-free, as [`get`](Self::get).
    pub fn info<Q>(&self, key: &Q) -> Option<EntryInfo>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.word(key).map(|w| self.decode(w))
    }

    /// True if `key` is present.
    ///
    /// **Progress:** lock-free, as [`get`](Self::get).
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.word(key).is_some()
    }

    #[inline]
    fn word<Q>(&self, key: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.raw.hash(key);
        let guard = &epoch::pin();
        self.raw
            .find_live(self.raw.shard(hash), hash, key, guard)
            .map(|(_, word)| word)
    }

    /// Sets the status of `key`, inserting it if absent. Returns the
    /// previous status.
    ///
    /// Setting the status a key already has changes nothing (neither its
    /// generation nor its `since`).
    ///
    /// **Progress:** for a present key, one CAS as for
    /// [`set`](Self::set), never waiting; for a new key, takes the shard's
    /// writer lock (and may rebuild the shard under it). **Reclamation:** a
    /// rebuild retires the replaced array (see [`remove`](Self::remove)).
    pub fn insert(&self, key: K, status: ConnectionStatus) -> Option<ConnectionStatus> {
        let hash = self.raw.hash(&key);
        let (before, _) = self.raw.upsert(hash, key, |_| Some(status));
        before.map(ConnectionStatus::from_bits)
    }

    /// Inserts `key` with `status` only if it is absent.
    ///
    /// # Errors
    ///
    /// [`Error::Occupied`] with the present entry, which is left unchanged.
    ///
    /// **Progress:** as [`insert`](Self::insert).
    pub fn try_insert(&self, key: K, status: ConnectionStatus) -> Result<EntryInfo, Error> {
        let hash = self.raw.hash(&key);
        match self
            .raw
            .upsert(hash, key, |present| present.is_none().then_some(status))
        {
            (None, Some(new)) => Ok(self.decode(new)),
            (Some(word), _) => Err(Error::Occupied {
                actual: self.decode(word),
            }),
            (None, None) => unreachable!("an absent key is always inserted"),
        }
    }

    /// Sets the status of a key that is present. Returns the previous entry
    /// info, or `None` (and inserts nothing) if the key is absent.
    ///
    /// **Progress:** lock-free: one CAS on the entry's state word, retried
    /// only if another transition of the same key landed first.
    pub fn set<Q>(&self, key: &Q, status: ConnectionStatus) -> Option<EntryInfo>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.transition(key, |_| Some(status))
            .ok()
            .map(|(before, _)| self.decode(before))
    }

    /// Moves `key` from `from` to `to` if, and only if, its status is `from`.
    /// Returns the new entry info.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the key is absent, [`Error::Conflict`] with the
    /// current info if its status is not `from`.
    ///
    /// **Progress:** lock-free, as [`set`](Self::set).
    pub fn compare_and_set<Q>(
        &self,
        key: &Q,
        from: ConnectionStatus,
        to: ConnectionStatus,
    ) -> Result<EntryInfo, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.transition(key, |word| {
            (ConnectionStatus::from_bits(word) == from).then_some(to)
        })
        .map(|(_, after)| self.decode(after))
    }

    /// Sets `key` to `to` only if its generation is still `generation` (as
    /// read earlier from [`info`](Self::info)): a stale view, including one
    /// of a removed and re-inserted key, never overwrites a newer entry.
    ///
    /// # Errors
    ///
    /// As [`compare_and_set`](Self::compare_and_set).
    ///
    /// **Progress:** lock-free, as [`set`](Self::set).
    pub fn set_if_generation<Q>(
        &self,
        key: &Q,
        generation: u32,
        to: ConnectionStatus,
    ) -> Result<EntryInfo, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.transition(key, |word| {
            (status::generation(word) == generation & status::GEN_MASK).then_some(to)
        })
        .map(|(_, after)| self.decode(after))
    }

    fn transition<Q>(
        &self,
        key: &Q,
        decide: impl FnMut(u64) -> Option<ConnectionStatus>,
    ) -> Result<(u64, u64), Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.raw.hash(key);
        let shard = self.raw.shard(hash);
        let guard = &epoch::pin();
        let (found, word) = self
            .raw
            .find_live(shard, hash, key, guard)
            .ok_or(Error::NotFound)?;
        self.raw
            .transition(hash, key, found, word, guard, decide)
            .map_err(|word| {
                if status::is_removed(word) {
                    Error::NotFound
                } else {
                    Error::Conflict {
                        actual: self.decode(word),
                    }
                }
            })
    }

    /// Removes `key`. Returns the status it had.
    ///
    /// **Progress:** takes the shard's writer lock for a probe and a store;
    /// a removal may also rebuild the shard smaller under it (when it has
    /// become mostly empty and is larger than its share of the capacity
    /// the table was created with). **Reclamation:** the slot
    /// becomes a tombstone that keeps the key until the key is inserted
    /// again (it takes the slot back), a new key takes the slot (once no
    /// lookup can still be comparing the old key) or the shard is rebuilt;
    /// a rebuild retires the old array, which is freed once no thread can
    /// still be reading it.
    pub fn remove<Q>(&self, key: &Q) -> Option<ConnectionStatus>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.raw.hash(key);
        self.raw
            .remove_if(hash, key, |_| false)
            .map(ConnectionStatus::from_bits)
    }

    /// Removes `key` only if its status is `status`.
    ///
    /// **Progress** and **Reclamation:** as [`remove`](Self::remove).
    pub fn remove_if_status<Q>(&self, key: &Q, status: ConnectionStatus) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.raw.hash(key);
        self.raw
            .remove_if(hash, key, |word| {
                ConnectionStatus::from_bits(word) != status
            })
            .is_some()
    }

    /// Number of keys present.
    ///
    /// **Progress:** wait-free, O(shards). Exact once updates stop. While
    /// they run, the shards' counters are read one at a time, so the sum can
    /// be off by as many inserts and removals as complete during the call
    /// (clamped at 0, never negative).
    pub fn len(&self) -> usize {
        clamp(self.raw.shards.iter().map(|s| s.len()).sum())
    }

    /// True if no key is present (same consistency as [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys with `status`.
    ///
    /// **Progress:** wait-free, O(shards + stripes): inserts and removals
    /// are counted per shard, status transitions per thread stripe (4 per
    /// CPU), never a scan. Exact once updates stop. While they run, the
    /// counters are read one at a time, and one key's insert, transitions
    /// and removal land in different counters, so the sum can be off by as
    /// many updates as complete during the call (clamped at 0, never
    /// negative).
    pub fn count(&self, status: ConnectionStatus) -> usize {
        clamp(self.raw.count(status))
    }

    /// Calls `f` for every key present, with its info.
    ///
    /// Weakly consistent: every key present for the whole call is visited
    /// exactly once; keys inserted or removed meanwhile may or may not be.
    /// `f` may call back into the table (no lock is held).
    ///
    /// **Progress:** lock-free; O(capacity). **Reclamation:** each shard is
    /// walked under one epoch guard, so a long walk delays the freeing of
    /// memory retired meanwhile (not its logical removal).
    pub fn for_each(&self, mut f: impl FnMut(&K, EntryInfo)) {
        self.walk(|k, word| f(k, self.decode(word)));
    }

    /// Removes every key for which `keep` returns false.
    ///
    /// Each removal is conditional on the entry being unchanged since `keep`
    /// looked at it; an entry that changed meanwhile is looked at again.
    /// Weakly consistent as [`for_each`](Self::for_each).
    ///
    /// **Progress** and **Reclamation:** as [`for_each`](Self::for_each) and
    /// [`remove`](Self::remove).
    pub fn retain(&self, mut keep: impl FnMut(&K, EntryInfo) -> bool) {
        // `keep` runs outside the shard's writer lock (it may call back into
        // the table); the removal then checks that the word is still the one
        // it judged.
        self.walk(|k, mut word| {
            let hash = self.raw.hash(k);
            loop {
                if keep(k, self.decode(word)) {
                    return;
                }
                if self.raw.remove_if(hash, k, |now| now != word).is_some() {
                    return;
                }
                match self.word(k) {
                    Some(now) => word = now,
                    None => return,
                }
            }
        });
    }

    /// Removes every key.
    pub fn clear(&self) {
        self.retain(|_, _| false);
    }

    fn walk(&self, mut f: impl FnMut(&K, u64)) {
        for shard in self.raw.shards.iter() {
            let guard = &epoch::pin();
            self.raw.walk_shard(shard, guard, &mut f);
        }
    }

    /// Bytes held by the table's own structures: the table header, the
    /// cache-padded shards and every shard's bucket array (keys and state
    /// words are inline: 128 bytes per 3 slots for a [`PeerId`](crate::PeerId),
    /// 43 bytes a slot, arrays between 7/10 and 4/5 full as they grow).
    ///
    /// Not included: allocator overhead, heap memory owned by the keys
    /// themselves, and arrays retired by a rebuild but not yet freed by the
    /// epoch collector.
    ///
    /// **Progress:** lock-free, O(shards).
    pub fn memory_usage(&self) -> usize {
        let guard = &epoch::pin();
        size_of::<Self>()
            + self.raw.shards.len() * size_of::<CachePadded<Shard<K>>>()
            + self.raw.array_bytes(guard)
    }

    /// Per-shard diagnostics: population and bucket-array shape.
    /// O(capacity).
    ///
    /// Useful to check that keys spread evenly over shards (the HashDoS
    /// defence) and how full the arrays are.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.raw
            .shards
            .iter()
            .map(|shard| {
                let guard = &epoch::pin();
                let shape = self.raw.shape(shard, guard);
                ShardStats {
                    len: clamp(shard.len()),
                    capacity: shape.capacity,
                    tombstones: shape.tombstones,
                    dead_entries: shape.tombstones,
                    longest_run: shape.longest_run,
                }
            })
            .collect()
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.raw.shards.len()
    }

    fn decode(&self, word: u64) -> EntryInfo {
        status::decode(self.raw.origin, word)
    }
}

/// Shape of one shard, from [`StatusTable::shard_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// Keys present.
    pub len: usize,
    /// Slots in the current array.
    pub capacity: usize,
    /// Slots of removed keys (tombstones). Each keeps its key, which takes
    /// the slot back if it is inserted again, until a new key takes the
    /// slot (once no lookup can still be comparing the old key) or the
    /// shard's next rebuild drops them all; with live keys they fill at
    /// most 4/5 of the array.
    pub tombstones: usize,
    /// Slots still holding a removed key: every tombstone does, so this
    /// equals `tombstones`.
    pub dead_entries: usize,
    /// Longest run of consecutive buckets that keys went past when they
    /// were full (their overflow bit set): the most buckets a lookup reads,
    /// less one.
    pub longest_run: usize,
}

impl<K, S> fmt::Debug for StatusTable<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len: isize = self.raw.shards.iter().map(|s| s.len()).sum();
        f.debug_struct("StatusTable")
            .field("len", &clamp(len))
            .field("shards", &self.raw.shards.len())
            .finish_non_exhaustive()
    }
}

fn clamp(n: isize) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// Default shard count: a power of two, 16 per available CPU (so two threads
/// rarely touch the same shard's counters), between 16 and [`MAX_SHARDS`].
/// Checkers get 2 so that models stay small.
fn default_shards() -> usize {
    if cfg!(any(loom, miri)) {
        return 2;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus * 16).next_power_of_two().clamp(16, MAX_SHARDS)
}
