//! [`Lease`]: exclusive use of a peer's live connection.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use connmgr_core::{ConnectionStatus, PeerId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::close;
use crate::dialer::Dialer;
use crate::inner::{AbortCell, Held, Inner};
use crate::peer::LeaseEnd;
use crate::peers::Key;
use crate::sync::{Arc, Ordering};
use crate::{Error, Result};

/// Exclusive use of a peer's live connection; see
/// [`ConnectionManager::lease`](crate::ConnectionManager::lease).
/// Dereferences to the connection, and reads and writes it
/// ([`AsyncRead`], [`AsyncWrite`]) when it is a tokio stream.
///
/// Dropping it returns the connection (never waits on anything but short
/// locks, never panics, needs no runtime), unless a read or write through
/// it was cut short (see below): into its live slot if the peer is still
/// connected by it;
/// to the idle pool if the peer was disconnected meanwhile; closed if the
/// peer was set Failed while this lease held it (even if reconnected or
/// set Disconnected since), is Failed or forgotten now, or the manager
/// shut down. Dropped while its thread is panicking, the connection is
/// closed and, if it is still the peer's live connection, the peer marked
/// Failed: a connection whose user panicked is never handed out again.
///
/// After [`shutdown_gracefully`](crate::ConnectionManager::shutdown_gracefully)'s
/// deadline passed with this lease out, its reads and writes fail with
/// `ConnectionAborted`, and if the dialer gave the connection an abort
/// handle ([`Dialer::abort_handle`]; [`TcpDialer`](crate::TcpDialer)
/// does) the connection is shut down at the deadline: a TCP socket gets
/// `shutdown(Both)`, so the remote end reads end of file while the lease
/// still holds the socket. Without a handle, the connection stays open
/// (reachable through `&*lease`) until the lease is dropped.
///
/// # A lease dropped in the middle of an operation must be discarded
///
/// A read or write cut short (its future dropped by a timeout, a
/// `select!`, a cancelled task) leaves the connection in the middle of a
/// message: half a request in its send buffer, half a reply unread. Given
/// back, the next user of the connection would send or read garbage. So:
///
/// - I/O through the lease itself (`lease.write_all(..)`,
///   `lease.read_exact(..)`: the lease's own [`AsyncRead`] and
///   [`AsyncWrite`]) is tracked: if the last poll of a read, or of a write,
///   flush or shutdown, returned `Pending` and nothing of the same
///   direction completed since, the operation was cut short, and dropping
///   the lease closes the connection. If it was the peer's live
///   connection, the peer goes Disconnected; its failure record and its
///   other pooled connections are left alone (a timed-out read is not the
///   peer's fault), and the next `connect` reuses one of those or dials.
///   A read timed out before any byte arrived is closed the same way: the
///   lease cannot tell it from a `read_exact` cut in the middle.
/// - What the lease cannot see: I/O through the connection itself
///   (`&mut *lease`, or a connection type that is not a tokio stream), and
///   a message written by several calls that is cut off between two of
///   them (each call completed). After such an interruption, call
///   [`discard`](Self::discard) yourself.
///
/// ```no_run
/// use connmgr::{ConnectionManager, PeerId, TcpDialer};
/// use std::time::Duration;
/// use tokio::io::AsyncWriteExt;
///
/// # async fn run(manager: ConnectionManager<TcpDialer>, peer: PeerId) -> connmgr::Result<()> {
/// let mut lease = manager.lease(&peer)?;
/// let message = vec![0u8; 1 << 20];
/// match tokio::time::timeout(Duration::from_secs(1), lease.write_all(&message)).await {
///     // Whole: dropping the lease gives the connection back for reuse.
///     Ok(Ok(())) => drop(lease),
///     // Broken, or cut short by the timeout: never reused. (Dropping the
///     // lease after the timeout would close the connection too, as the
///     // write went through the lease; `discard` also marks the peer
///     // Failed, which a broken connection calls for.)
///     Ok(Err(_)) | Err(_) => lease.discard(),
/// }
/// # Ok(())
/// # }
/// ```
pub struct Lease<D: Dialer> {
    inner: Arc<Inner<D>>,
    /// The peer, and where its record lives.
    key: Key,
    /// The id of the live slot the connection came from.
    slot: u64,
    /// The peer's failure generation when the lease was taken.
    generation: u64,
    conn: Option<Held<D>>,
    /// The connection's abort handle, shared with the peer's record, if
    /// the dialer gave one.
    abort: Option<Arc<AbortCell>>,
    /// A read through the lease returned `Pending` last: cut short if the
    /// lease is dropped now.
    reading: bool,
    /// As `reading`, for a write, flush or shutdown.
    writing: bool,
}

impl<D: Dialer> Lease<D> {
    /// Takes `peer`'s live connection (see `ConnectionManager::lease`).
    pub(crate) fn take(inner: &Arc<Inner<D>>, peer: &PeerId) -> Result<Self> {
        // Counted out before the shutdown flag is read (store-buffering
        // with `shutdown_gracefully`: flag set, then count read): either
        // the drain sees this lease, or this call sees the flag.
        inner.leases_out.fetch_add(1, Ordering::SeqCst);
        let taken = if inner.shut_down.load(Ordering::SeqCst) {
            Err(Error::ShutDown)
        } else {
            Ok(inner.peers.key(*peer))
        }
        .and_then(|key| {
            inner.peers.at(&key, |map| {
                let record = map
                    .get_mut(peer)
                    .ok_or(Error::NotConnected { peer: *peer })?;
                let (slot, conn, generation) = record.lease().map_err(|busy| match busy {
                    true => Error::Busy { peer: *peer },
                    false => Error::NotConnected { peer: *peer },
                })?;
                // Registered in the same locked step that takes the
                // connection: a drain that finds the lease counted finds
                // its handle too. (A panicking hook counts as no handle.)
                let abort = close::swallowing(|| {
                    close::catching(|| inner.dialer.abort_handle(&conn)).flatten()
                })
                .map(|handle| {
                    let cell = Arc::new(AbortCell::new(Some(handle)));
                    record.aborts.push(Arc::clone(&cell));
                    cell
                });
                Ok((key, slot, conn, generation, abort))
            })
        });
        let (key, slot, conn, generation, abort) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                returned(inner);
                return Err(e);
            }
        };
        Ok(Self {
            inner: Arc::clone(inner),
            key,
            slot,
            generation,
            conn: Some(conn),
            abort,
            reading: false,
            writing: false,
        })
    }

    /// The peer this connection goes to.
    pub fn peer(&self) -> &PeerId {
        &self.key.peer
    }

    /// The connection is broken, or an operation on it was cut short: close
    /// it and mark the peer Failed (if this connection is still the peer's:
    /// after a disconnect and a new connect, the newer connection and its
    /// status are left alone).
    ///
    /// # Panics
    ///
    /// If the connection's destructor panics: the peer is marked Failed
    /// first, then the panic is re-raised.
    pub fn discard(mut self) {
        close::reraising(|| {
            self.disarm();
            drop(self.conn.take());
            self.inner.discard_lease(self.key.peer, self.slot);
        });
    }
}

impl<D: Dialer> Deref for Lease<D> {
    type Target = D::Conn;
    fn deref(&self) -> &D::Conn {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl<D: Dialer> DerefMut for Lease<D> {
    fn deref_mut(&mut self) -> &mut D::Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl<D: Dialer> Drop for Lease<D> {
    fn drop(&mut self) {
        // A destructor panic is caught and dropped (the hook reported it):
        // dropping a lease never panics.
        close::swallowing(|| self.end());
        returned(&self.inner);
    }
}

impl<D: Dialer> Lease<D> {
    /// Gives the connection back (see the type's docs).
    fn end(&mut self) {
        self.disarm();
        let Some(conn) = self.conn.take() else { return };
        let inner = &*self.inner;
        // Panicking: the connection's state is unknown and its user
        // failed, so it is never reused and the peer is marked Failed.
        if std::thread::panicking() {
            drop(conn);
            inner.discard_lease(self.key.peer, self.slot);
            return;
        }
        // A read or write through it cut short: the connection is
        // mid-message, so it is closed; the peer is not at fault.
        if self.reading || self.writing {
            drop(conn);
            inner.cut_lease(self.key, self.slot);
            return;
        }
        // Decided under the record lock; acted on after it.
        let peer = self.key.peer;
        let end = inner.peers.at(&self.key, |map| {
            // (A blocked peer's record refuses the pool in `end_lease`.)
            let may_pool = !inner.shut_down.load(Ordering::Acquire)
                && !matches!(
                    inner.table.get(&peer),
                    None | Some(ConnectionStatus::Failed)
                );
            let end = match map.get_mut(&peer) {
                Some(record) => record.end_lease(self.slot, self.generation, conn, may_pool),
                // Unreachable: a lease keeps its record. Closed.
                None => LeaseEnd::Close(conn),
            };
            inner.tidy(map, &peer);
            end
        });
        match end {
            LeaseEnd::Home | LeaseEnd::Close(_) => {}
            LeaseEnd::Pool(conn, generation) => inner.pool_put(self.key, conn, generation),
        }
    }
}

impl<D: Dialer> Lease<D> {
    /// Takes the abort handle out of its cell, unrun, before the
    /// connection is given back or dropped: the drain runs handles under
    /// the cell's lock, so once this returns no handle of this lease runs
    /// (and one running now finishes first, while the connection is still
    /// held here). Then unregisters the cell from the peer's record.
    fn disarm(&mut self) {
        let Some(cell) = self.abort.take() else {
            return;
        };
        // Dropped after the lock, and caught: the closure is user code,
        // and a panic here would skip the lease's bookkeeping below and in
        // its callers.
        let handle = cell.lock().take();
        close::catching(|| drop(handle));
        let peer = self.key.peer;
        self.inner.peers.at(&self.key, |map| {
            if let Some(record) = map.get_mut(&peer) {
                record.aborts.retain(|c| !Arc::ptr_eq(c, &cell));
            }
        });
    }
}

/// A lease (or an attempt at one) is over: no longer counted out, and a
/// graceful shutdown waiting for the leases hears of it.
fn returned<D: Dialer>(inner: &Inner<D>) {
    inner.leases_out.fetch_sub(1, Ordering::SeqCst);
    // SeqCst: store-buffering with the drain (flag, then count), so a
    // drain that still counted this lease is woken.
    if inner.shut_down.load(Ordering::SeqCst) {
        inner.lease_returned.notify_waiters();
    }
}

/// Records whether an operation of one direction was left pending.
fn track<T>(pending: &mut bool, poll: Poll<T>) -> Poll<T> {
    *pending = poll.is_pending();
    poll
}

impl<D: Dialer> Lease<D> {
    /// `Err` once a graceful shutdown's deadline passed with this lease
    /// out (see `ConnectionManager::shutdown_gracefully`).
    fn check_cut_off(&self) -> io::Result<()> {
        if self.inner.cut_off.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection manager shut down and its drain deadline passed",
            ));
        }
        Ok(())
    }
}

/// Reads the connection, noting a read cut short (see [`Lease`]).
impl<D: Dialer> AsyncRead for Lease<D>
where
    D::Conn: AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_cut_off()?;
        let poll = Pin::new(&mut **this).poll_read(cx, buf);
        track(&mut this.reading, poll)
    }
}

/// Writes the connection, noting a write, flush or shutdown cut short
/// (see [`Lease`]).
impl<D: Dialer> AsyncWrite for Lease<D>
where
    D::Conn: AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_cut_off()?;
        let poll = Pin::new(&mut **this).poll_write(cx, buf);
        track(&mut this.writing, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_cut_off()?;
        let poll = Pin::new(&mut **this).poll_write_vectored(cx, bufs);
        track(&mut this.writing, poll)
    }

    fn is_write_vectored(&self) -> bool {
        (**self).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_cut_off()?;
        let poll = Pin::new(&mut **this).poll_flush(cx);
        track(&mut this.writing, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_cut_off()?;
        let poll = Pin::new(&mut **this).poll_shutdown(cx);
        track(&mut this.writing, poll)
    }
}

impl<D: Dialer> fmt::Debug for Lease<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("peer", &self.key.peer)
            .finish_non_exhaustive()
    }
}
