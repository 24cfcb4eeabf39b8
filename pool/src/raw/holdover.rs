//! A stripe's holdover queue: proxy records for idle nodes moved off the
//! head of a FIFO stripe that holds too many records, so the oldest idle
//! connection is kept without holding back the records behind it.

use std::mem::size_of;
use std::ptr;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

use super::*;
use crate::sync::{AtomicUsize, Ordering};

/// A holdover record: points to an idle node that was moved off the head
/// of its FIFO stripe. The sentinel (the queue's first dummy) points to
/// nothing.
pub(super) struct Proxy<K, C> {
    target: *const Node<K, C>,
    pub(super) next: Atomic<Proxy<K, C>>,
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
    pub(super) fn new() -> Self {
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
pub(super) struct HoldCloser<'g, K, C> {
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

/// Bytes of one holdover proxy (for `memory_usage`).
pub(crate) const fn proxy_size<K, C>() -> usize {
    size_of::<Proxy<K, C>>()
}
