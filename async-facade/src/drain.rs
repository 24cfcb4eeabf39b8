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
    /// its user finished with it). At the deadline, the leases still out
    /// are closed by force, without being taken out of their users' hands:
    ///
    /// - every read and write through such a lease (its [`AsyncRead`] and
    ///   [`AsyncWrite`]) fails with `ConnectionAborted` from then on;
    /// - if the dialer gave the connection an abort handle
    ///   ([`Dialer::abort_handle`]), it runs at the deadline: with
    ///   [`TcpDialer`](crate::TcpDialer) the socket is shut down
    ///   (`shutdown(Both)`), so the remote end reads end of file at once,
    ///   and I/O through `&mut *lease` fails too;
    /// - with a dialer that gives no handle (the default), the connection
    ///   itself stays open, reachable through `&*lease`, until the lease
    ///   is dropped.
    ///
    /// Either way the connection is closed (its descriptor released) when
    /// the lease is dropped. Returns the number of leases still out once
    /// the handles ran (0 if all came back): the forced closes. Dials in
    /// flight are not waited for: each is closed when it lands.
    ///
    /// [`AsyncRead`]: tokio::io::AsyncRead
    /// [`AsyncWrite`]: tokio::io::AsyncWrite
    ///
    /// Called again, or after `shutdown`, it first waits for the closes of
    /// the call that shut the manager down to be done (they run whole, on
    /// that call's thread), then for the leases out in the same way.
    ///
    /// **Progress:** what `shutdown` does, then waits (an async wait, no
    /// thread blocked) for the leases or the deadline; at the deadline it
    /// visits every peer record once (each under its lock, briefly) and
    /// runs the abort handles, each under its lease's abort lock, which a
    /// lease being dropped at that moment waits for.
    ///
    /// # Panics
    ///
    /// As [`shutdown`](Self::shutdown), for the closes it makes itself.
    ///
    /// # Cancellation safety
    ///
    /// Dropped while it waits, the manager stays shut down and the
    /// leases still out are neither cut off nor aborted (their I/O goes
    /// on until they are dropped). The deadline's work has no await: once
    /// begun, it runs whole.
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
        // The handles of the leases still out, gathered under each record
        // lock (a lease registers its handle in the step that takes it)
        // and run after it: a handle is user code, and a lease ending
        // meanwhile needs the record lock.
        let mut cells = Vec::new();
        inner.peers.for_each_shard(|map| {
            for record in map.values() {
                cells.extend(record.aborts.iter().cloned());
            }
        });
        // A panicking handle is caught and dropped (the panic hook
        // reported it): the other handles still run.
        close::swallowing(|| {
            for cell in cells {
                // Run under the cell's lock: a lease ending now takes its
                // handle out under this lock before it drops its
                // connection, so the handle acts on a connection still
                // held, or not at all. Taken out: it runs once.
                let mut slot = cell.lock();
                if let Some(handle) = slot.take() {
                    close::catching(|| handle.run());
                }
            }
        });
        inner.leases_out.load(Ordering::SeqCst)
    }
}
