//! [`shutdown_gracefully`](ConnectionManager::shutdown_gracefully): a
//! shutdown that gives the leases out time to come back.

use std::time::Duration;

use crate::close;
use crate::dialer::Dialer;
use crate::sync::Ordering;
use crate::ConnectionManager;

impl<D: Dialer> ConnectionManager<D> {
    /// Shuts down with a drain: no new work is accepted from the first
    /// poll on (as [`shutdown`](Self::shutdown): `connect`, `adopt` and
    /// `lease` fail with [`Error::ShutDown`](crate::Error::ShutDown), waiters for a slot give up,
    /// kept peers are no longer redialed), idle connections and live ones
    /// not leased are closed at once, and their Connected peers go
    /// Disconnected ([`Reason::ShutDown`](crate::Reason::ShutDown)). Then it waits, up to
    /// `deadline`, for the leases still out to be dropped: each
    /// connection returned meanwhile is closed as it comes back (cleanly:
    /// its user finished with it). Returns the number of leases still
    /// out at the deadline (0 if all came back), the forced closes: the
    /// manager cannot take a connection out of its user's hands, so from
    /// the deadline on every read and write through such a lease fails
    /// with `ConnectionAborted`, and its connection is closed when the
    /// lease is dropped. Dials in flight are not waited for: each is
    /// closed when it lands.
    ///
    /// Called again, or after `shutdown`, it first waits for the closes of
    /// the call that shut the manager down to be done (they run whole, on
    /// that call's thread), then for the leases out in the same way.
    ///
    /// **Progress:** what `shutdown` does, then waits (an async wait, no
    /// thread blocked) for the leases or the deadline.
    ///
    /// # Panics
    ///
    /// As [`shutdown`](Self::shutdown), for the closes it makes itself.
    ///
    /// # Cancellation safety
    ///
    /// Dropped while it waits, the manager stays shut down and the
    /// leases still out are not cut off (their I/O goes on until they are
    /// dropped).
    pub async fn shutdown_gracefully(&self, deadline: Duration) -> usize {
        let inner = &*self.inner;
        // SeqCst: store-buffering with `Lease::take` (count, then flag).
        if !inner.shut_down.swap(true, Ordering::SeqCst) {
            close::reraising(|| inner.close_all());
        }
        // Another call (this one, or `shutdown`, on another thread) may
        // still be closing: its closes run whole; wait for them.
        loop {
            let closed = inner.lease_returned.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if inner.closed.load(Ordering::SeqCst) {
                break;
            }
            closed.await;
        }
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let returned = inner.lease_returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if inner.leases_out.load(Ordering::SeqCst) == 0 {
                return 0;
            }
            if tokio::time::timeout_at(until, returned).await.is_err() {
                break;
            }
        }
        inner.cut_off.store(true, Ordering::Release);
        inner.leases_out.load(Ordering::SeqCst)
    }
}
