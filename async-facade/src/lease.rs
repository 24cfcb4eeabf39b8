//! [`Lease`]: exclusive use of a peer's live connection.

use std::fmt;
use std::ops::{Deref, DerefMut};

use connmgr_core::{ConnectionStatus, PeerId};

use crate::close;
use crate::dialer::Dialer;
use crate::inner::{Held, Inner};
use crate::peer::LeaseEnd;
use crate::peers::Key;
use crate::sync::{Arc, Ordering};
use crate::{Error, Result};

/// Exclusive use of a peer's live connection; see
/// [`ConnectionManager::lease`](crate::ConnectionManager::lease).
/// Dereferences to the connection.
///
/// Dropping it returns the connection (never blocks, never panics, needs
/// no runtime): into its live slot if the peer is still connected by it;
/// to the idle pool if the peer was disconnected meanwhile; closed if the
/// peer was set Failed while this lease held it (even if reconnected or
/// set Disconnected since), is Failed or forgotten now, or the manager
/// shut down. Dropped while its thread is panicking, the connection is
/// closed and, if it is still the peer's live connection, the peer marked
/// Failed: a connection whose user panicked is never handed out again.
pub struct Lease<D: Dialer> {
    inner: Arc<Inner<D>>,
    /// The peer, and where its record lives.
    key: Key,
    /// The id of the live slot the connection came from.
    slot: u64,
    /// The peer's failure generation when the lease was taken.
    generation: u64,
    conn: Option<Held<D>>,
}

impl<D: Dialer> Lease<D> {
    /// Takes `peer`'s live connection (see `ConnectionManager::lease`).
    pub(crate) fn take(inner: &Arc<Inner<D>>, peer: &PeerId) -> Result<Self> {
        if inner.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        let key = inner.peers.key(*peer);
        let (slot, conn, generation) = inner.peers.at(&key, |map| {
            let record = map
                .get_mut(peer)
                .ok_or(Error::NotConnected { peer: *peer })?;
            record.lease().map_err(|busy| match busy {
                true => Error::Busy { peer: *peer },
                false => Error::NotConnected { peer: *peer },
            })
        })?;
        Ok(Self {
            inner: Arc::clone(inner),
            key,
            slot,
            generation,
            conn: Some(conn),
        })
    }

    /// The peer this connection goes to.
    pub fn peer(&self) -> &PeerId {
        &self.key.peer
    }

    /// The connection is broken: close it and mark the peer Failed (if
    /// this connection is still the peer's: after a disconnect and a new
    /// connect, the newer connection and its status are left alone).
    ///
    /// # Panics
    ///
    /// If the connection's destructor panics: the peer is marked Failed
    /// first, then the panic is re-raised.
    pub fn discard(mut self) {
        close::reraising(|| {
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
    }
}

impl<D: Dialer> Lease<D> {
    /// Gives the connection back (see the type's docs).
    fn end(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let inner = &*self.inner;
        if std::thread::panicking() {
            drop(conn);
            inner.discard_lease(self.key.peer, self.slot);
            return;
        }
        // Decided under the record lock; acted on after it.
        let peer = self.key.peer;
        let end = inner.peers.at(&self.key, |map| {
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

impl<D: Dialer> fmt::Debug for Lease<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("peer", &self.key.peer)
            .finish_non_exhaustive()
    }
}
