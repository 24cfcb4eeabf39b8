//! The map from keys to their entries: sharded bucket chains with
//! lock-free lookups and a per-shard lock for creating and removing
//! entries.

use std::hash::{BuildHasher, Hash};
use std::mem::size_of;
use std::ptr;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};
use crossbeam_utils::CachePadded;

use super::*;
use crate::sync::{AtomicUsize, Mutex, Ordering};

/// One link of a bucket chain; owned by the table it is reachable from.
pub(super) struct Cell<K, C> {
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
pub(super) struct Table<K, C> {
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

pub(super) struct Shard<K, C> {
    table: Atomic<Table<K, C>>,
    /// Serialises writers (insert, remove, grow) of this shard.
    write: Mutex<()>,
    len: AtomicUsize,
}

#[cfg(loom)]
pub(super) type HashBuilder =
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
#[cfg(not(loom))]
pub(super) type HashBuilder = std::collections::hash_map::RandomState;

pub(super) const INITIAL_BUCKETS: usize = if cfg!(any(loom, miri)) { 2 } else { 16 };

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
pub(super) type CellEntry<'g, K, C> = (Shared<'g, Cell<K, C>>, &'g Entry<K, C>);

pub(super) fn find<'g, K: Eq, C>(
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
pub(super) unsafe fn unlink<K, C>(
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
