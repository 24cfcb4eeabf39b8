//! `connect`'s leader: what the one call that dials for a peer does,
//! between the API and the peer's record.

use connmgr_core::ConnectionStatus;
use connmgr_metrics::DialOutcome;
use tokio::sync::watch;

use std::hash::BuildHasher;

use crate::admission::{Permit, Slot};
use crate::backoff::dial_delay;
use crate::close::{self, Closing};
use crate::dial_share::{Channel, DialMap};
use crate::dialer::Dialer;
use crate::inner::{DialResult, Inner};
use crate::inner::{GoLive, Made};
use crate::limits::Limits;
use crate::peer::Direction;
use crate::peers::Key;
use crate::sync::{Arc, Ordering};
use crate::{Error, Limit, Reason, Result};
use connmgr_core::PeerId;

impl<D: Dialer> Inner<D> {
    /// Connects `peer` as the leader of its shared dial: takes back a live
    /// connection kept by bookkeeping, or reserves a slot and reuses an
    /// alive pooled connection of the peer's current generation, or dials.
    pub(crate) async fn dial_as_leader(&self, key: Key) -> Result<()> {
        let peer = key.peer;
        if self.table.get(&peer) == Some(ConnectionStatus::Connected) {
            return Ok(());
        }
        // A live connection whose status bookkeeping moved off Connected
        // (`update_status(p, Connecting)`, say) is still this peer's.
        // Otherwise, blocked or backing off: refused before any slot is
        // taken.
        if self.revive(key)? {
            return Ok(());
        }
        let slot = self.outbound_slot().await?;
        let dialer = &self.dialer;
        // A Failed peer is dialed afresh: its pooled connections were
        // closed when it failed, and any put since carries an older
        // generation, which `go_live` refuses. `is_alive` (user code) runs
        // outside the record lock.
        let pooled = if self.table.get(&peer) == Some(ConnectionStatus::Failed) {
            None
        } else {
            // A panicking `is_alive` counts as dead: the connection is
            // closed, and the panic dropped (the hook reported it).
            // One past `max_lifetime` is closed instead of reused.
            let max_lifetime = self.config.max_lifetime;
            let now = max_lifetime.map(|_| tokio::time::Instant::now().into_std());
            close::swallowing(|| {
                self.pool.take_if(&peer, |p| {
                    if now.is_some_and(|now| p.conn.outlived(max_lifetime, now)) {
                        tracing::debug!(
                            target: "connmgr",
                            peer = %peer,
                            reason = "max_lifetime",
                            "connection expired: closed instead of reused"
                        );
                        return false;
                    }
                    close::catching(|| dialer.is_alive(&mut p.conn)).unwrap_or(false)
                })
            })
        };
        let slot = match pooled {
            Some(p) => {
                let made = Made::Pooled(p.generation);
                match self.go_live(key, p.conn, slot, Direction::Outbound, made) {
                    GoLive::Live => {
                        self.metrics.record_dial(DialOutcome::PoolHit);
                        return Ok(());
                    }
                    // An `adopt` made the peer Connected meanwhile: this
                    // connection idles again.
                    GoLive::Surplus(conn, generation) => {
                        self.pool_put(key, conn, generation);
                        return Ok(());
                    }
                    GoLive::Blocked(conn, _slot) => {
                        close::swallowing(|| drop(conn));
                        return Err(Error::Blocked { peer });
                    }
                    // The peer failed since the connection was pooled, or
                    // the manager shut down: it is closed here.
                    GoLive::Refused(conn, slot) => {
                        close::swallowing(|| drop(conn));
                        if self.shut_down.load(Ordering::Acquire) {
                            return Err(Error::ShutDown);
                        }
                        slot
                    }
                }
            }
            None => slot,
        };
        // A dial takes a unit of the dials in flight until it ends, and a
        // socket, which its connection keeps.
        let limits = self.admission.load();
        let _pending = self
            .admission
            .try_acquire_in(&limits, Limit::PendingDials)?;
        let socket = self.socket(&limits)?;
        drop(limits);
        self.metrics.record_dial(DialOutcome::PoolMiss);
        tracing::debug!(target: "connmgr", peer = %peer, "dialing");
        // The units go into the peer's record for the dial's length (see
        // `Record::dial_units`).
        // Blocked or backing off since the first look (while this call
        // waited for a slot, say): refused here, before any dial.
        let (before, watch) = self.peers.at(&key, |map| {
            let record = self.record(map, peer);
            if record.blocked {
                return Err(Error::Blocked { peer });
            }
            if record.backoff.is_some() {
                if let Some(until) = record.backing_off(tokio::time::Instant::now().into_std()) {
                    return Err(Error::BackingOff { peer, until });
                }
            }
            let before = self.table.insert(peer, ConnectionStatus::Connecting);
            record.dial_units = Some(slot);
            Ok((before, Self::watch_of(map, &peer)))
        })?;
        self.emit(
            peer,
            before,
            Some(ConnectionStatus::Connecting),
            Reason::Dialed,
            watch,
        );
        let restore = RestoreOnDrop {
            inner: self,
            key,
            before,
            armed: true,
        };
        let timeout = self.config.dial_timeout;
        let dial = async {
            match dialer.dial(&peer).await {
                // Out of descriptors, while idle connections hold some:
                // they are closed, and the dial made once more.
                Err(e) if out_of_descriptors(&e) && self.shed_idle() > 0 => {
                    dialer.dial(&peer).await
                }
                dialed => dialed,
            }
        };
        let dialed = tokio::time::timeout(timeout, dial).await;
        restore.disarm();
        let units = self.take_dial_units(key);
        match dialed {
            Ok(Ok(conn)) => {
                self.metrics.record_dial(DialOutcome::Ok);
                let conn = Closing::made(conn, socket, self.config.max_lifetime);
                // An `adopt` took the units over meanwhile: its connection
                // is (or is about to be) the live one; this one idles, and
                // every waiter gets `Ok`.
                let Some(slot) = units else {
                    return self.landed_after_adopt(key, conn);
                };
                // A fresh dial has the last word over any status set
                // meanwhile: `go_live` refuses it only after a shutdown.
                match self.go_live(key, conn, slot, Direction::Outbound, Made::Dialed) {
                    GoLive::Live => Ok(()),
                    // An `adopt` made the peer Connected while the dial was
                    // in flight: the adopted connection stays live, this
                    // one idles, and every waiter gets `Ok`.
                    GoLive::Surplus(conn, generation) => {
                        self.pool_put(key, conn, generation);
                        Ok(())
                    }
                    GoLive::Refused(conn, _slot) => {
                        close::swallowing(|| drop(conn));
                        self.set_status(peer, ConnectionStatus::Disconnected, Reason::ShutDown);
                        Err(Error::ShutDown)
                    }
                    // Blocked while the dial was in flight: the connection
                    // is closed and the peer, Connecting, goes
                    // Disconnected.
                    GoLive::Blocked(conn, _slot) => {
                        close::swallowing(|| drop(conn));
                        self.set_status(peer, ConnectionStatus::Disconnected, Reason::Blocked);
                        Err(Error::Blocked { peer })
                    }
                }
            }
            Ok(Err(e)) => {
                self.metrics.record_dial(DialOutcome::Failed);
                tracing::info!(
                    target: "connmgr",
                    peer = %peer,
                    reason = %Reason::DialFailed,
                    error = %e,
                    "dial failed"
                );
                if !self.fail_unless_adopted(peer, Reason::DialFailed) {
                    return Ok(());
                }
                Err(Error::Dial {
                    peer,
                    source: Arc::new(e),
                })
            }
            Err(_elapsed) => {
                self.metrics.record_dial(DialOutcome::TimedOut);
                tracing::info!(
                    target: "connmgr",
                    peer = %peer,
                    reason = %Reason::TimedOut,
                    after = ?timeout,
                    "dial failed"
                );
                if !self.fail_unless_adopted(peer, Reason::TimedOut) {
                    return Ok(());
                }
                Err(Error::Timeout {
                    peer,
                    after: timeout,
                })
            }
        }
    }
}

/// Whether a dial failed for want of a file descriptor: the process's
/// limit (`EMFILE`) or the system's (`ENFILE`); the same numbers on Linux,
/// the BSDs and macOS.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    const CODES: &[i32] = &[24, 23]; // EMFILE, ENFILE
    #[cfg(windows)]
    const CODES: &[i32] = &[10024]; // WSAEMFILE
    #[cfg(not(any(unix, windows)))]
    const CODES: &[i32] = &[];
    e.raw_os_error().is_some_and(|code| CODES.contains(&code))
}

/// Idle connections a dial out of descriptors closes before it tries once
/// more: enough for it and for a few dials failing at the same moment,
/// without emptying a large pool that the process may want to reuse.
pub(crate) const SHED_ON_EMFILE: usize = 16;

impl<D: Dialer> Inner<D> {
    /// A dial landed after an `adopt` took its units over: its connection
    /// idles and the dial's waiters get `Ok`, and the peer's backoff is
    /// reset (the dial succeeded). Unless a block ended the adopt: the
    /// peer is blocked now, or it is still Connecting with nothing live
    /// (a block refused the adopt after it took the units, and may have
    /// been lifted since). Then the connection is closed, the waiters get
    /// `Err(Blocked)`, and a peer still Connecting goes Disconnected.
    fn landed_after_adopt(&self, key: Key, conn: crate::inner::Held<D>) -> Result<()> {
        use ConnectionStatus::{Connecting, Disconnected};
        let peer = key.peer;
        let (blocked, generation, settled) = self.peers.at(&key, |map| {
            let record = self.record(map, peer);
            record.backoff = None;
            if !record.blocked {
                // Connecting with nothing live: the adopt that took this
                // dial's units was refused; nobody else moves the peer
                // out of Connecting.
                let stuck = record.live.is_none()
                    && self
                        .table
                        .compare_and_set(&peer, Connecting, Disconnected)
                        .is_ok();
                return if stuck {
                    (true, record.generation, Some(Self::watch_in(record)))
                } else {
                    (false, record.generation, None)
                };
            }
            let settled = (record.live.is_none()
                && self
                    .table
                    .compare_and_set(&peer, Connecting, Disconnected)
                    .is_ok())
            .then(|| Self::watch_in(record));
            (true, record.generation, settled)
        });
        if !blocked {
            self.pool_put(key, conn, generation);
            return Ok(());
        }
        close::swallowing(|| drop(conn));
        if let Some(watch) = settled {
            self.emit(
                peer,
                Some(Connecting),
                Some(Disconnected),
                Reason::Blocked,
                watch,
            );
        }
        Err(Error::Blocked { peer })
    }

    /// A slot for an outbound connection: its units of `max_connections`
    /// and `max_outbound`, taken one after the other (a refusal drops
    /// those taken before it, and names the limit that refused). With
    /// `wait_for_slot`, a full limit queues the caller (FIFO) until a unit
    /// comes back or the deadline passes.
    ///
    /// Cancellation safe: a waiter dropped at any `.await` leaves the
    /// queue (tokio's mutex forgets a dropped `lock` future, and a turn
    /// held goes to the next waiter) and its count.
    async fn outbound_slot(&self) -> Result<Slot> {
        let a = &self.admission;
        // A unit taken and given back because a later limit refused is
        // given back quietly (see `Permit::quietly`).
        let take = || -> Result<Slot> {
            let limits = a.load();
            let connection = a.try_acquire_in(&limits, Limit::Connections)?;
            match a.try_acquire_in(&limits, Limit::Outbound) {
                Ok(direction) => Ok(Slot {
                    _connection: connection,
                    _direction: direction,
                }),
                Err(refused) => {
                    connection.quietly();
                    Err(refused)
                }
            }
        };
        let wait = self.config.wait_for_slot;
        if wait.is_zero() {
            return take();
        }
        // Nobody queued: a free slot is this caller's.
        if a.waiting() == 0 {
            if let Ok(slot) = take() {
                return Ok(slot);
            }
        }
        let _waiting = a.wait();
        let deadline = tokio::time::Instant::now() + wait;
        let queued = async {
            let _turn = a.turn().await;
            loop {
                let released = a.released();
                tokio::pin!(released);
                released.as_mut().enable();
                if self.shut_down.load(Ordering::Acquire) {
                    return Err(Error::ShutDown);
                }
                if let Ok(slot) = take() {
                    return Ok(slot);
                }
                released.await;
            }
        };
        match tokio::time::timeout_at(deadline, queued).await {
            Ok(outcome) => outcome,
            // The deadline: the refusal of a last look, taken only with
            // the turn (a waiter ahead keeps its place).
            Err(_) => match a.try_turn() {
                Some(_turn) => take(),
                None => Err(Error::LimitReached {
                    limit: Limit::Connections,
                    max: a.load().max_connections,
                }),
            },
        }
    }

    /// A dial of `peer` failed: the peer fails, unless an `adopt` made it
    /// Connected meanwhile (its adopted connection stays, and the dial's
    /// waiters get `Ok`). Returns whether it failed.
    /// Either way the peer's dial backoff grows by one failure.
    fn fail_unless_adopted(&self, peer: PeerId, reason: Reason) -> bool {
        let fresh = || self.next_generation.fetch_add(1, Ordering::Relaxed);
        let now = tokio::time::Instant::now().into_std();
        self.fail_as(
            peer,
            |record| {
                if let Some((initial, max)) = self.config.dial_backoff {
                    let draw = self.draws.hash_one((peer, record.generation));
                    record.dial_failed(now, |n| dial_delay(initial, max, n, draw));
                }
                let adopted = record.live.is_some()
                    && self.table.get(&peer) == Some(ConnectionStatus::Connected);
                if adopted {
                    None
                } else {
                    record.fail(None, fresh())
                }
            },
            true,
            reason,
        )
    }

    /// A unit of the socket budget for a new connection, against `limits`
    /// as the caller loaded them. When the budget
    /// is full, the oldest idle connection of the pool (any peer's) is
    /// closed to make room, as many times as it takes: idle connections
    /// never cause a refusal.
    ///
    /// # Errors
    ///
    /// [`Error::LimitReached`] naming [`Limit::Sockets`] when every counted
    /// connection is live, leased or being dialed.
    pub(crate) fn socket(&self, limits: &Limits) -> Result<Permit> {
        loop {
            match self.admission.try_acquire_in(limits, Limit::Sockets) {
                Ok(permit) => return Ok(permit),
                Err(full) => {
                    if !close::swallowing(|| self.pool.evict_oldest()) {
                        return Err(full);
                    }
                }
            }
        }
    }

    /// Takes back the units a dial left in `key`'s record; `None` if an
    /// `adopt` took them over.
    pub(crate) fn take_dial_units(&self, key: Key) -> Option<Slot> {
        self.peers
            .at(&key, |map| map.get_mut(&key.peer)?.dial_units.take())
    }

    /// Closes up to [`SHED_ON_EMFILE`] idle pooled connections, oldest
    /// first, to give their descriptors to a dial that ran out; returns how
    /// many were closed.
    fn shed_idle(&self) -> usize {
        let mut closed = 0;
        while closed < SHED_ON_EMFILE && close::swallowing(|| self.pool.evict_oldest()) {
            closed += 1;
        }
        closed
    }
}

/// Puts a peer back to the status it had before a dial that was cancelled,
/// if it is still Connecting.
struct RestoreOnDrop<'a, D: Dialer> {
    inner: &'a Inner<D>,
    key: Key,
    before: Option<ConnectionStatus>,
    armed: bool,
}

impl<D: Dialer> RestoreOnDrop<'_, D> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl<D: Dialer> Drop for RestoreOnDrop<'_, D> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (inner, peer) = (self.inner, self.key.peer);
        let t = &inner.table;
        // The dial's units go back (unless an `adopt` took them over).
        drop(inner.take_dial_units(self.key));
        let restored = inner.peers.at(&self.key, |map| {
            let restored = match self.before {
                Some(before) => t
                    .compare_and_set(&peer, ConnectionStatus::Connecting, before)
                    .is_ok(),
                None => t.remove_if_status(&peer, ConnectionStatus::Connecting),
            };
            restored.then(|| Inner::watch_of(map, &peer))
        });
        if let Some(watch) = restored {
            inner.emit(
                peer,
                Some(ConnectionStatus::Connecting),
                self.before,
                Reason::Cancelled,
                watch,
            );
        }
    }
}

/// A dial's outcome channel for [`dial_share`](crate::dial_share): tokio's
/// `watch`, whose `changed` reports a value sent after `subscribe`, or the
/// sender's drop.
impl Channel for watch::Sender<DialResult> {
    type Outcome = Result<()>;
    type Rx = watch::Receiver<DialResult>;

    fn open() -> Self {
        watch::channel(None).0
    }

    fn subscribe(&self) -> Self::Rx {
        watch::Sender::subscribe(self)
    }

    fn publish(&self, outcome: Result<()>) {
        self.send_replace(Some(outcome));
    }
}

/// Dials in flight live in their peer's record.
impl<D: Dialer> DialMap for Inner<D> {
    type Tx = watch::Sender<DialResult>;
    type Key = Key;

    fn with<R>(&self, key: &Key, f: impl FnOnce(&mut Option<Self::Tx>) -> R) -> R {
        self.peers.at(key, |map| {
            let record = self.record(map, key.peer);
            let r = f(&mut record.dial);
            if record.is_idle(|w| !w.is_closed()) {
                self.tidy(map, &key.peer);
            }
            r
        })
    }
}
