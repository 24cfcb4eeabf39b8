//! Record housekeeping behind [`IdlePool`]: retiring the records that
//! reach the head of a FIFO stripe or holdover queue, draining stripes for
//! `reap`, `clear` and `next_expiry`, and bounding a stripe's records on
//! `put` (see the [`crate::raw`] module docs).

use std::hash::Hash;

use crossbeam_epoch::{self as epoch, Guard};

use super::{IdlePool, DEAD_SLACK, PUT_CLEANUP, REPIN_EVERY};
use crate::raw::{self, Claim, Fifo, Node, Retired};
use crate::sync::{pause, thread_index};
use crate::Clock;

impl<K, C, Clk> IdlePool<K, C, Clk>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: Send + 'static,
    Clk: Clock,
{
    /// Gives back the reservations of a node the caller just claimed and
    /// moves its connection out.
    ///
    /// # Safety
    ///
    /// The caller won `node.claim()` and calls this once for it.
    pub(super) unsafe fn finish_claim(
        &self,
        node: &Node<K, C>,
        guard: &Guard,
        batch: Option<&mut Retired<K, C>>,
    ) -> C {
        // SAFETY: we won the claim (contract).
        let conn = unsafe { raw::take_conn(node) };
        // SAFETY: claimed by us, reservation not yet given back, pinned.
        let entry = unsafe { node.entry(guard) };
        self.total.release(thread_index() & (self.fifos.len() - 1));
        if entry.unreserve() {
            // SAFETY: `entry` came from this map under `guard`.
            unsafe { self.map.close(entry, guard, batch) };
        }
        conn
    }

    /// Handles a record the caller just popped from a FIFO stripe (`hold`:
    /// a proxy from its holdover queue): claims the node if nobody has
    /// (closing its connection), then gives the record back to the node's
    /// entry (freeing the entry if that was its last count), and for a
    /// proxy the node's `IN_HOLD` link. Returns `true` if it closed a
    /// connection.
    ///
    /// # Safety
    ///
    /// The caller's `pop_if` (of the FIFO, or with `hold` of its holdover
    /// queue) just returned `node`; called once per pop.
    unsafe fn retire_record(
        &self,
        node: &Node<K, C>,
        hold: bool,
        guard: &Guard,
        mut batch: Option<&mut Retired<K, C>>,
    ) -> bool {
        // A load first: most records reaching the head in a busy pool are
        // of connections already taken, and a load is cheaper than the RMW.
        let conn = if !node.is_claimed() && node.claim() {
            // SAFETY: we just won the claim.
            Some(unsafe { self.finish_claim(node, guard, batch.as_deref_mut()) })
        } else {
            None
        };
        // SAFETY: the record we popped is still counted in the entry.
        let entry = unsafe { node.entry(guard) };
        if entry.release_record() {
            // SAFETY: `entry` came from this map under `guard`.
            unsafe { self.map.close(entry, guard, batch.as_deref_mut()) };
        }
        if hold {
            // SAFETY: we popped the proxy that held the link (contract).
            unsafe { raw::release_hold(node, guard, batch) };
        }
        // Dropped last, so a panicking destructor leaves the counts right.
        let closed = conn.is_some();
        drop(conn);
        closed
    }

    /// Pops the oldest record of `fifo` (`hold`: of its holdover queue) if
    /// `pred` accepts its node, and retires it (see `retire_record`).
    /// `Some(closed)` if it popped one.
    pub(super) fn pop_and_retire(
        &self,
        fifo: &Fifo<K, C>,
        hold: bool,
        pred: impl FnMut(&Node<K, C>) -> bool,
        guard: &Guard,
        mut batch: Option<&mut Retired<K, C>>,
    ) -> Option<bool> {
        let node = if hold {
            fifo.hold.pop_if(pred, guard)?
        } else {
            fifo.pop_if(pred, guard, batch.as_deref_mut())?
        };
        // SAFETY: just popped from the queue `hold` names.
        Some(unsafe { self.retire_record(node, hold, guard, batch) })
    }

    /// Pops records from the head of each FIFO stripe while `pred` accepts
    /// them, closing the connections it claims. Returns how many it closed.
    ///
    /// Starts at the caller's own stripe, so concurrent callers begin apart.
    /// With `one_reaper`, a stripe whose head `pred` accepts is drained only
    /// under its reaping claim: while another reaper holds it, this call
    /// waits until that reaper has drained what `pred` accepts or has let
    /// go (then it drains the rest itself). So when the call returns,
    /// nothing `pred` accepts is left at any stripe's head.
    pub(super) fn drain(
        &self,
        mut pred: impl FnMut(&Node<K, C>) -> bool,
        one_reaper: bool,
    ) -> usize {
        let mut guard = epoch::pin();
        let mut closed = 0;
        let mut steps = 0;
        let mut batch = Retired::new();
        let mask = self.fifos.len() - 1;
        let me = thread_index();
        for i in 0..self.fifos.len() {
            let fifo = &self.fifos[(me + i) & mask];
            let mut wait = 0;
            let _claim = loop {
                if !one_reaper {
                    break None;
                }
                // The stripe first, then its holdover queue (see
                // `next_expiry` for why this order).
                if !fifo.peek(&guard).is_some_and(&mut pred)
                    && !fifo.hold.peek(&guard).is_some_and(&mut pred)
                {
                    break None; // nothing (left) for us here
                }
                match fifo.claim_reaping(me) {
                    Claim::Got(claim) => break Some(claim),
                    // Our own reap, re-entered from a destructor: go on
                    // under the claim we already hold.
                    Claim::Reentrant => break None,
                    // Re-entered from a destructor while we hold another
                    // stripe: waiting could close a cycle with a reaper
                    // that waits for that stripe, so pop alongside instead.
                    Claim::Busy if self.fifos.iter().any(|f| f.reaped_by(me)) => break None,
                    Claim::Busy => {
                        // Let the holder work; unpin meanwhile so that what
                        // it retires can be freed.
                        batch.flush(&guard);
                        guard.repin();
                        pause(&mut wait);
                    }
                }
            };
            // The stripe, then its holdover queue (see `next_expiry` for
            // why this order; without the stripe's claim, as in `clear`, a
            // node moved meanwhile is met in one or the other).
            for hold in [false, true] {
                while let Some(closed_one) =
                    self.pop_and_retire(fifo, hold, &mut pred, &guard, Some(&mut batch))
                {
                    closed += usize::from(closed_one);
                    steps += 1;
                    if steps % REPIN_EVERY == 0 {
                        batch.flush(&guard);
                        guard.repin();
                    }
                }
            }
        }
        batch.flush(&guard);
        closed
    }

    /// Bounds the records queued in the caller's FIFO stripe (see
    /// [`put`](Self::put)).
    pub(super) fn housekeeping(&self, fifo: &Fifo<K, C>, guard: &Guard) {
        for (hold, queued) in [
            (false, fifo.len() > DEAD_SLACK),
            (true, fifo.hold.len() != 0),
        ] {
            if queued {
                for _ in 0..PUT_CLEANUP {
                    if self
                        .pop_and_retire(fifo, hold, |n| n.is_claimed(), guard, None)
                        .is_none()
                    {
                        break;
                    }
                }
            }
        }
        if fifo.len() > self.record_limit {
            self.move_idle_heads(fifo, guard);
        }
        // The holdover queue's own bound: only reached when more than the
        // limit of connections that each stayed idle through the limit of
        // puts were then taken, while an older one stays idle. Close the
        // oldest early.
        while fifo.hold.len() > self.record_limit
            && self
                .pop_and_retire(fifo, true, |_| true, guard, None)
                .is_some()
        {}
    }

    /// Brings the caller's FIFO stripe back to its record limit without
    /// closing anything: records of taken connections at the head are
    /// unlinked, and an idle connection at the head (due or not: the
    /// reaper closes it from there) is moved to the stripe's holdover queue
    /// (see `raw::Holdover`), which lets the records behind it go. Only
    /// under the stripe's reaping claim, so moves keep the holdover queue
    /// in deadline order; if a reaper holds it, the stripe stays over its
    /// limit until a later put.
    fn move_idle_heads(&self, fifo: &Fifo<K, C>, guard: &Guard) {
        let _claim = match fifo.claim_reaping(thread_index()) {
            Claim::Got(claim) => Some(claim),
            // A destructor run by our own reap is putting: that reap holds
            // the claim, and pushes nothing onto the holdover queue.
            Claim::Reentrant => None,
            Claim::Busy => {
                // A reaper (or another put) holds the stripe, maybe while
                // slow destructors run. Leave the moves to it or to a later
                // put, unless the stripe holds more than twice its limit:
                // then close its oldest idle connections early, so memory
                // stays bounded.
                while fifo.len() > self.record_limit.saturating_mul(2)
                    && self
                        .pop_and_retire(fifo, false, |_| true, guard, None)
                        .is_some()
                {}
                return;
            }
        };
        while fifo.len() > self.record_limit {
            let Some(head) = fifo.peek(guard) else {
                return;
            };
            if head.is_claimed() {
                self.pop_and_retire(fifo, false, |n| std::ptr::eq(n, head), guard, None);
                continue;
            }
            // SAFETY: `peek` found `head` queued under `guard`.
            let entry = unsafe { head.entry_unchecked(guard) };
            if !entry.try_add_record() {
                continue; // closed: `head` was taken and unlinked meanwhile
            }
            if !head.try_hold() {
                // Taken meanwhile: give the record back; its FIFO record
                // is unlinked as a taken one next time round.
                if entry.release_record() {
                    // SAFETY: `entry` came from this map under `guard`.
                    unsafe { self.map.close(entry, guard, None) };
                }
                continue;
            }
            // SAFETY: we hold the node's IN_HOLD link and a record for the
            // proxy.
            unsafe { fifo.hold.push(head, guard) };
            // The node is in both queues now; unlink its FIFO record (unless
            // a reaper, or `clear`, popped it meanwhile, and closed it).
            if fifo.pop_node(head, guard, None) && entry.release_record() {
                // SAFETY: `entry` came from this map under `guard`.
                unsafe { self.map.close(entry, guard, None) };
            }
        }
    }
}
