//! The heap node that holds one idle connection, its ownership word
//! (claim bit and link counts), and batched retirement of nodes.

use std::mem::{size_of, MaybeUninit};
use std::ptr;
use std::time::Instant;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

use super::*;
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

pub(super) const CLAIMED: usize = 1;
pub(super) const IN_FIFO: usize = 2;
pub(super) const IN_INDEX: usize = 4;
pub(super) const IN_HOLD: usize = 8;
pub(super) const LINKS: usize = IN_FIFO | IN_INDEX | IN_HOLD;

/// One idle connection, linked into its key's index and into the FIFO or,
/// once moved, its stripe's holdover queue (see [`Holdover`]).
pub(crate) struct Node<K, C> {
    state: AtomicUsize,
    /// `None`: never expires (`now + ttl` overflowed `Instant`).
    pub(crate) deadline: Option<Instant>,
    /// Put stamp: higher is fresher (see [`Entry::next_stamp`]).
    pub(super) stamp: u64,
    /// The key entry holding this node's reservation. Valid while the node
    /// is unclaimed (the entry cannot close while it holds a reservation)
    /// and, after that, for as long as the claimer stays pinned.
    entry: *const Entry<K, C>,
    conn: UnsafeCell<MaybeUninit<C>>,
    /// FIFO link towards newer nodes.
    pub(super) next: Atomic<Node<K, C>>,
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
    pub(super) fn new(conn: C, deadline: Option<Instant>, entry: &Entry<K, C>) -> Self {
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
    pub(super) fn sentinel() -> Self {
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
    pub(super) unsafe fn take_conn(&self) -> C {
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
pub(super) unsafe fn release<K, C>(
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
pub(super) const RETIRE_BATCH: usize = if cfg!(any(loom, miri)) { 2 } else { 64 };

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
