//! One stripe of the expiry FIFO: a Michael–Scott queue of nodes in
//! insertion (and so expiry) order, with the claim that lets one reaper at
//! a time drain it.

use std::ptr;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

use super::*;
use crate::sync::{AtomicUsize, Ordering};

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
pub(super) struct Closer<'g, K, C> {
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
