//! The Michael–Scott queue operations shared by the FIFO stripes (threaded
//! through nodes) and the holdover queues (threaded through proxies).

use crossbeam_epoch::{Atomic, Guard, Shared};

use super::*;
use crate::sync::Ordering;

/// A Michael–Scott queue link: the FIFO's nodes and the holdover queue's
/// proxies are both threaded through one.
pub(super) trait Linked: Sized {
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
pub(super) fn ms_push<T: Linked>(tail: &Atomic<T>, item: Shared<'_, T>, guard: &Guard) {
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
pub(super) fn ms_pop_if<'g, T: Linked>(
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
