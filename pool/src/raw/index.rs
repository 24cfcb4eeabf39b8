//! A key's entry: its reservation counter (the per-key cap and the count
//! of FIFO records) and its index of fixed slots, written in place, that
//! points at the key's idle nodes.

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

use super::*;
use crate::sync::{AtomicU64, Ordering};

/// Top bit of [`Entry::live`]: the entry is closed (had no idle connection
/// and no FIFO record left, and is being unhooked); no reservation may be
/// taken on it any more.
pub(crate) const CLOSED: u64 = 1 << 63;
/// One idle reservation in [`Entry::live`] (low 32 bits).
pub(super) const IDLE_ONE: u64 = 1;
pub(super) const IDLE_MASK: u64 = (1 << 32) - 1;
/// One FIFO record in [`Entry::live`] (bits 32..63).
pub(super) const RECORD_ONE: u64 = 1 << 32;

/// Slots per chunk of a key's index. Tiny under loom so that a per-key cap
/// of 2 already needs a second chunk.
pub(super) const CHUNK: usize = if cfg!(loom) { 1 } else { 8 };

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
    pub(super) hash: u64,
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
    pub(super) fn new(key: K, hash: u64) -> Self {
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
    pub(super) unsafe fn release_all(&self, guard: &Guard, mut batch: Option<&mut Retired<K, C>>) {
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
