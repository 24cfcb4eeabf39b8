//! The block list: [`block`](ConnectionManager::block),
//! [`unblock`](ConnectionManager::unblock),
//! [`is_blocked`](ConnectionManager::is_blocked). The flag lives in the
//! peer's record; every place that makes a connection live, pools one or
//! ends a lease checks it under the record's lock.

use connmgr_core::{ConnectionStatus, PeerId};

use crate::close;
use crate::dialer::Dialer;
use crate::inner::Inner;
use crate::{ConnectionManager, Reason};

impl<D: Dialer> ConnectionManager<D> {
    /// Blocks `peer`, as libp2p's block list does: its live connection
    /// and its idle ones are closed now (a Connected peer goes
    /// Disconnected, [`Reason::Blocked`](crate::Reason::Blocked)); from now on `connect` refuses
    /// it and `adopt` closes what it is given, both with
    /// [`Error::Blocked`](crate::Error::Blocked); a dial to it in flight that lands after the
    /// block ends with `Err(Blocked)`, its connection closed and the peer
    /// Disconnected, never Connected (one that fails ends with its dial
    /// error, the peer Failed, as ever); a leased connection is closed
    /// when its lease is dropped.
    /// The block belongs to the peer, connected or not (block a peer
    /// before it ever connects), and keeps it from being forgotten, until
    /// [`unblock`](Self::unblock). Bookkeeping (`update_status`) is not
    /// refused, and a peer marked Connected by it alone makes `connect`
    /// answer `Ok` as ever (it holds no connection).
    ///
    /// **Progress:** a short hold of the peer's record lock; the closes
    /// run after it.
    ///
    /// # Panics
    ///
    /// A connection destructor's panic is caught, the block goes on to
    /// the end, then the panic is re-raised (see
    /// [Panicking destructors](Self#panicking-destructors)).
    pub fn block(&self, peer: PeerId) {
        close::reraising(|| self.inner.block(peer));
    }

    /// Lifts `peer`'s block: it may be dialed and adopted again (and a
    /// kept peer is redialed at once). An unknown or unblocked peer
    /// changes nothing.
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn unblock(&self, peer: &PeerId) {
        self.inner.with_existing(peer, |r| r.blocked = false);
        // A kept peer is redialed now.
        if self.inner.kept.contains(peer) {
            self.inner.reapers.wake_all();
        }
    }

    /// Whether `peer` is blocked.
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn is_blocked(&self, peer: &PeerId) -> bool {
        self.inner
            .with_existing(peer, |r| r.blocked)
            .unwrap_or(false)
    }
}

impl<D: Dialer> Inner<D> {
    /// Blocks `peer` (see `ConnectionManager::block`): sets the flag, takes
    /// its live slot out and moves a Connected peer to Disconnected, in one
    /// locked step; then closes the live connection and the idle ones.
    pub(crate) fn block(&self, peer: PeerId) {
        use ConnectionStatus::{Connected, Disconnected};
        let key = self.peers.key(peer);
        let (slot, change) = self.peers.at(&key, |map| {
            let record = self.record(map, peer);
            record.blocked = true;
            let slot = record.live.take();
            let change = self
                .table
                .compare_and_set(&peer, Connected, Disconnected)
                .is_ok()
                .then(|| Self::watch_in(record));
            (slot, change)
        });
        drop(slot);
        self.close_idle(peer);
        tracing::debug!(
            target: "connmgr",
            peer = %peer,
            reason = %Reason::Blocked,
            "blocked: live and idle connections closed"
        );
        if let Some(watch) = change {
            self.ensure_reaper(false);
            self.emit(
                peer,
                Some(Connected),
                Some(Disconnected),
                Reason::Blocked,
                watch,
            );
        }
    }
}
