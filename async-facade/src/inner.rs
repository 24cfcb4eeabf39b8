//! The manager's state and the transitions of a peer, each a walk from the
//! API to the peer's record (under its lock) and back.
//!
//! Every write of a peer's status, live slot, generation, lease count,
//! dial or watch happens under that peer's record lock (see
//! [`Peers`]), which orders a peer's transitions; other peers are never
//! touched. What a locked step takes out (a live slot, a connection) is
//! dropped after the lock, as is every status event sent.

use std::collections::hash_map::{Entry, HashMap};
use std::marker::PhantomData;
use std::mem::size_of;
use std::time::Instant;

use connmgr_core::{ConnectionStatus, PeerId, StatusTable};
use connmgr_metrics::Metrics;
use connmgr_pool::IdlePool;
use tokio::sync::{broadcast, watch};

use crate::admission::{Admission, Slot};
use crate::close::{self, Closing};
use crate::config::Config;
use crate::dialer::Dialer;
use crate::peer::{Direction, Live, Parts, Pooled, Record};
use crate::peers::{Key, Peers};
use crate::reaper::Reapers;
use crate::sync::{fence, Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering, Weak};
use crate::{Error, Limit, Reason, Result, StatusEvent};

/// The pool's and the metrics' clock: tokio's, so that paused time in
/// tests (`tokio::time::pause`) drives expiry and windows.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioClock;

impl connmgr_core::Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// The result of one shared dial, as its followers see it.
pub(crate) type DialResult = Option<Result<()>>;

/// A peer's status watch.
pub(crate) type WatchTx = watch::Sender<Option<ConnectionStatus>>;

/// The types a manager's records hold.
pub(crate) struct Tokio<D>(PhantomData<D>);

impl<D: Dialer> Parts for Tokio<D> {
    type Conn = Held<D>;
    type Permit = Slot;
    type Dial = watch::Sender<DialResult>;
    type Watch = WatchTx;
    type Abort = Arc<AbortCell>;
}

/// A lease's abort handle, shared by the lease and its record: the lease
/// takes it out before giving its connection back, the drain runs it
/// under the same lock (see `Dialer::abort_handle`).
pub(crate) type AbortCell = parking_lot::Mutex<Option<crate::dialer::AbortHandle>>;

/// Where a connection [`Inner::go_live`] installs comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Made {
    /// A fresh dial of `connect`.
    Dialed,
    /// The idle pool, where it was put with this generation.
    Pooled(u64),
    /// `adopt`.
    Adopted,
}

/// What [`Inner::go_live`] did.
pub(crate) enum GoLive<D: Dialer> {
    /// The connection is the peer's live one.
    Live,
    /// The peer is Connected with another live connection: this one is
    /// handed back, to be pooled with the generation given.
    Surplus(Held<D>, u64),
    /// Refused (shut down, or a pooled connection from before a Failed):
    /// handed back with its slot.
    Refused(Held<D>, Slot),
    /// The peer is blocked: handed back with its slot.
    Blocked(Held<D>, Slot),
}

/// A connection as the manager holds it: its destructor's panics caught,
/// and its unit of the socket budget (see [`close`](crate::close)).
pub(crate) type Held<D> = Closing<<D as Dialer>::Conn>;

pub(crate) type Rec<D> = Record<Tokio<D>>;
/// A live slot taken out of a record, the record's generation, its watch.
type Retired<D> = (Option<Live<Tokio<D>>>, u64, Option<WatchTx>);
pub(crate) type Map<D> = HashMap<PeerId, Rec<D>>;

/// Bytes of one tokio `watch` channel's shared state (a value behind a
/// lock, a version, receiver and sender counts, and its notifiers): an
/// estimate, as tokio's type is private.
const WATCH_BYTES: usize = 48 * size_of::<usize>();

/// Fewest new watches in a shard before it sweeps abandoned ones (see
/// [`Inner::watch`]).
const WATCH_SWEEP_MIN: usize = 16;

/// Bytes of the status event broadcast's ring, allocated up front: tokio
/// rounds the capacity up to a power of two, and each slot holds an event
/// beside its lock, position and receiver count (estimated from the event's
/// size plus three words; tokio's slot type is private).
pub(crate) fn event_ring_bytes(capacity: usize) -> usize {
    capacity.next_power_of_two() * (size_of::<Option<StatusEvent>>() + 3 * size_of::<usize>())
}

pub(crate) struct Inner<D: Dialer> {
    pub(crate) config: Config,
    pub(crate) dialer: D,
    pub(crate) table: StatusTable<PeerId>,
    pub(crate) pool: IdlePool<PeerId, Pooled<Held<D>>, TokioClock>,
    pub(crate) metrics: Metrics<TokioClock>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) peers: Peers<Tokio<D>>,
    /// Records in `peers`. While there are none, no peer has anything but
    /// a status, and a bookkeeping status write needs no record lock (see
    /// [`set_status`](Self::set_status)).
    pub(crate) records: AtomicUsize,
    pub(crate) events: broadcast::Sender<StatusEvent>,
    /// Receivers handed out so far (only grows) and, in `silent_at`, how
    /// many had been handed out when a send last found none of them alive.
    /// While the two are equal, status changes skip the broadcast (whose
    /// `send` takes a lock even with no receiver). A new subscriber makes
    /// them differ again; as neither value ever goes back, a stale emitter
    /// cannot silence it (no ABA).
    pub(crate) subscribers: AtomicU64,
    pub(crate) silent_at: AtomicU64,
    pub(crate) shut_down: AtomicBool,
    /// Source of [`Live::id`]s.
    pub(crate) next_slot_id: AtomicU64,
    /// Source of failure generations: a new record and every Failed take
    /// the next one, so a generation is never given twice, even to a
    /// record made again after its peer's earlier record was freed.
    pub(crate) next_generation: AtomicU64,
    pub(crate) reapers: Reapers,
    /// Held by the one trim that runs at a time.
    pub(crate) trimming: parking_lot::Mutex<()>,
    /// This manager, weakly, for the reapers it starts.
    pub(crate) me: Weak<Inner<D>>,
    /// Random keys for the dial backoff's jitter draws.
    pub(crate) draws: std::collections::hash_map::RandomState,
    /// The peers kept connected.
    pub(crate) kept: crate::keep::Kept,
    /// Leases not yet dropped.
    pub(crate) leases_out: AtomicUsize,
    /// Woken when a lease is dropped after a shutdown (a graceful drain
    /// waits on it).
    pub(crate) lease_returned: tokio::sync::Notify,
    /// Set once `shutdown`'s closes are all done (`close_all` ran whole).
    pub(crate) closed: AtomicBool,
    /// Set when a graceful shutdown's deadline passed with leases out:
    /// their I/O fails from then on.
    pub(crate) cut_off: AtomicBool,
}

impl<D: Dialer> Drop for Inner<D> {
    fn drop(&mut self) {
        // The reaper holds only a weak reference; wake it so it sees that
        // the manager is gone and ends (it would otherwise sleep until the
        // next expiry, or forever on an empty pool).
        self.reapers.wake_all();
        // Close what is held here rather than in the fields' drops, so a
        // destructor panic caught on the way is dropped now (the hook
        // reported it) instead of staying with this thread. No lease is
        // left: each holds the manager.
        close::swallowing(|| {
            self.retire_all();
            self.pool.clear();
        });
    }
}

/// Whether a watch still has receivers.
fn watched(w: &WatchTx) -> bool {
    !w.is_closed()
}

impl<D: Dialer> Inner<D> {
    /// Removes `peer`'s record if it holds nothing that needs it and the
    /// peer has neither a status nor pooled connections (which keep the
    /// record for its generation). Under the record lock.
    pub(crate) fn tidy(&self, map: &mut Map<D>, peer: &PeerId) {
        if map.get(peer).is_some_and(|r| r.is_idle(watched))
            && !self.table.contains_key(peer)
            && self.pool.len_for(peer) == 0
        {
            map.remove(peer);
            self.records.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A generation no record was given before. Drawn under the peer's
    /// record lock, so one peer's generations only grow.
    fn fresh_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// `peer`'s record, made if it has none. Under the record lock.
    pub(crate) fn record<'m>(&self, map: &'m mut Map<D>, peer: PeerId) -> &'m mut Rec<D> {
        match map.entry(peer) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.records.fetch_add(1, Ordering::SeqCst);
                // Store-buffering with `set_status`'s lock-free path
                // (status write, fence, count read): either that write is
                // visible to what this record's maker reads next, or that
                // path sees the count and settles under this lock.
                fence(Ordering::SeqCst);
                e.insert(Record {
                    generation: self.fresh_generation(),
                    ..Record::default()
                })
            }
        }
    }

    /// The peer's watch, if it has receivers, to publish to after the lock.
    /// One whose receivers are all gone is freed here (its sender wakes
    /// nobody).
    pub(crate) fn watch_of(map: &mut Map<D>, peer: &PeerId) -> Option<WatchTx> {
        Self::watch_in(map.get_mut(peer)?)
    }

    /// As [`watch_of`](Self::watch_of), for a record at hand.
    pub(crate) fn watch_in(record: &mut Rec<D>) -> Option<WatchTx> {
        if record.watch.as_ref().is_some_and(|w| !watched(w)) {
            record.watch = None;
        }
        record.watch.clone()
    }

    /// Makes `conn` the peer's live connection and marks it Connected, in
    /// one locked step.
    ///
    /// `made` says where `conn` comes from: a pooled one carries the
    /// generation it was pooled with; if the peer failed since, or the
    /// manager shut down, nothing is installed and `conn` and `slot` are
    /// handed back. If the peer is Connected with a live connection already
    /// (an `adopt` made it live while this dial was in flight, say), that
    /// one stays and `conn` is handed back as surplus, to be pooled.
    pub(crate) fn go_live(
        &self,
        key: Key,
        conn: Held<D>,
        slot: Slot,
        direction: Direction,
        made: Made,
    ) -> GoLive<D> {
        let peer = key.peer;
        let done = self.peers.at(&key, |map| {
            // `shutdown` sets its flag before it takes each record lock to
            // retire live slots: a slot installed here after that is
            // refused, one installed before is retired by it.
            if self.shut_down.load(Ordering::Acquire) {
                return Err(GoLive::Refused(conn, slot));
            }
            let record = self.record(map, peer);
            if record.blocked {
                return Err(GoLive::Blocked(conn, slot));
            }
            if let Made::Pooled(g) = made {
                if !record.admits(g) {
                    return Err(GoLive::Refused(conn, slot));
                }
            }
            // A dial that got this far succeeded: the backoff is reset
            // whether its connection goes live or idles.
            if let Made::Dialed = made {
                record.backoff = None;
            }
            if record.live.is_some() && self.table.get(&peer) == Some(ConnectionStatus::Connected) {
                return Err(GoLive::Surplus(conn, record.generation));
            }
            let replaced = record.install(Live {
                id: self.next_slot_id.fetch_add(1, Ordering::Relaxed),
                conn: Some(conn),
                direction,
                since: tokio::time::Instant::now().into_std(),
                _permit: slot,
            });
            let before = self.table.insert(peer, ConnectionStatus::Connected);
            Ok((replaced, before, Self::watch_in(record)))
        });
        let (replaced, before, watch) = match done {
            Ok(done) => done,
            Err(other) => return other,
        };
        // A stale slot (left by bookkeeping such as `update_status(p,
        // Connecting)` over a Connected peer): closed and freed here.
        drop(replaced);
        let reason = match made {
            Made::Dialed => Reason::Dialed,
            Made::Pooled(_) => Reason::Pooled,
            Made::Adopted => Reason::Adopted,
        };
        self.emit(
            peer,
            before,
            Some(ConnectionStatus::Connected),
            reason,
            watch,
        );
        // Above the high watermark: the reapers trim soon (at most once a
        // second each).
        if self.over_high() {
            self.reapers.wake_all();
        }
        GoLive::Live
    }

    /// `adopt`'s body (see `ConnectionManager::adopt`).
    pub(crate) fn adopt(&self, peer: PeerId, conn: D::Conn) -> Result<()> {
        if self.shut_down.load(Ordering::Acquire) {
            drop(Closing::new(conn, None));
            tracing::debug!(
                target: "connmgr",
                peer = %peer,
                reason = %Error::ShutDown,
                "adopt refused"
            );
            return Err(Error::ShutDown);
        }
        let key = self.peers.key(peer);
        // Connected with a live connection: that one stays, and the adopted
        // one idles if a socket is free. A duplicate never closes another
        // peer's idle connection to make room: it is closed instead.
        let surplus = self.peers.at(&key, |map| {
            let Some(record) = map.get(&peer) else {
                return Ok(None);
            };
            if record.blocked {
                return Err(Error::Blocked { peer });
            }
            let connected = self.table.get(&peer) == Some(ConnectionStatus::Connected);
            Ok((connected && record.live.is_some()).then_some(record.generation))
        });
        let surplus = match surplus {
            Ok(surplus) => surplus,
            Err(blocked) => {
                close::swallowing(|| drop(Closing::new(conn, None)));
                tracing::debug!(
                    target: "connmgr",
                    peer = %peer,
                    reason = %blocked,
                    "adopt refused"
                );
                return Err(blocked);
            }
        };
        if let Some(generation) = surplus {
            match self.admission.try_acquire(Limit::Sockets) {
                Ok(socket) => {
                    let conn = Closing::made(conn, socket, self.config.max_lifetime);
                    self.pool_put(key, conn, generation);
                }
                Err(_) => close::swallowing(|| drop(Closing::new(conn, None))),
            }
            return Ok(());
        }
        // The limits first, the socket last (as `connect` does): a refused
        // adopt closes no idle connection. During a dial to the peer, the
        // adopt takes over the dial's unit of `max_connections` (the peer
        // is counted once), after its other units, so that nothing can
        // refuse it once it has. A refusal closes `conn`.
        let dialing = self.peers.at(&key, |map| {
            map.get(&peer).is_some_and(|r| r.dial_units.is_some())
        });
        let limits = self.admission.load();
        let units = (|| {
            let slot = if dialing {
                let inbound = self.admission.try_acquire_in(&limits, Limit::Inbound)?;
                let socket = self.socket(&limits)?;
                let connection = match self.take_dial_units(key) {
                    // The dial's outbound unit goes back here.
                    Some(dial) => dial._connection,
                    // The dial landed meanwhile.
                    None => self.admission.try_acquire_in(&limits, Limit::Connections)?,
                };
                return Ok((
                    Slot {
                        _connection: connection,
                        _direction: inbound,
                    },
                    socket,
                ));
            } else {
                Slot {
                    _connection: self.admission.try_acquire_in(&limits, Limit::Connections)?,
                    _direction: self.admission.try_acquire_in(&limits, Limit::Inbound)?,
                }
            };
            Ok((slot, self.socket(&limits)?))
        })();
        drop(limits);
        let (slot, socket) = match units {
            Ok(units) => units,
            Err(refused) => {
                close::swallowing(|| drop(Closing::new(conn, None)));
                tracing::debug!(
                    target: "connmgr",
                    peer = %peer,
                    reason = %refused,
                    "adopt refused"
                );
                return Err(refused);
            }
        };
        let conn = Closing::made(conn, socket, self.config.max_lifetime);
        match self.go_live(key, conn, slot, Direction::Inbound, Made::Adopted) {
            GoLive::Live => Ok(()),
            GoLive::Surplus(conn, generation) => {
                self.pool_put(key, conn, generation);
                Ok(())
            }
            refused @ (GoLive::Refused(..) | GoLive::Blocked(..)) => {
                let e = match refused {
                    GoLive::Blocked(..) => Error::Blocked { peer },
                    _ => Error::ShutDown,
                };
                tracing::debug!(
                    target: "connmgr",
                    peer = %peer,
                    reason = %e,
                    "adopt refused"
                );
                Err(e)
            }
        }
    }

    /// A live connection whose status bookkeeping moved off Connected is
    /// still the peer's: marks it Connected again. `false` if the peer has
    /// no live connection.
    ///
    /// In the same locked step, a peer with no live connection that is
    /// blocked, or backing off, is refused with the error saying so
    /// (`connect` checks both before it takes a slot).
    pub(crate) fn revive(&self, key: Key) -> Result<bool> {
        let peer = key.peer;
        let revived = self.peers.at(&key, |map| {
            let Some(record) = map.get_mut(&peer) else {
                return Ok(None);
            };
            if record.live.is_none() {
                if record.blocked {
                    return Err(Error::Blocked { peer });
                }
                // The clock is read only for a peer with a backoff.
                if record.backoff.is_some() {
                    let now = tokio::time::Instant::now().into_std();
                    if let Some(until) = record.backing_off(now) {
                        return Err(Error::BackingOff { peer, until });
                    }
                }
                return Ok(None);
            }
            let before = self.table.insert(peer, ConnectionStatus::Connected);
            Ok(Some((before, Self::watch_in(record))))
        })?;
        match revived {
            Some((before, watch)) => {
                self.emit(
                    peer,
                    before,
                    Some(ConnectionStatus::Connected),
                    Reason::Pooled,
                    watch,
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Disconnects a Connected peer: Disconnected, and its live connection
    /// pooled, in one locked step; nothing if it is not Connected.
    pub(crate) fn disconnect(&self, key: Key) {
        use ConnectionStatus::{Connected, Disconnected};
        let peer = key.peer;
        let done = self.peers.at(&key, |map| {
            self.table
                .compare_and_set(&peer, Connected, Disconnected)
                .ok()?;
            Some(match map.get_mut(&peer) {
                Some(r) => (r.live.take(), r.generation, Self::watch_in(r)),
                None => (None, 0, None),
            })
        });
        if let Some((slot, generation, watch)) = done {
            self.retire(key, slot, Some(generation));
            self.emit(
                peer,
                Some(Connected),
                Some(Disconnected),
                Reason::Disconnected,
                watch,
            );
        }
    }

    /// Sets a status as given. Failed fails the peer ([`fail`](Self::fail));
    /// Disconnected retires its live connection to the pool; Connected and
    /// Connecting are bookkeeping alone (a live connection stays).
    ///
    /// While the manager holds no record at all (bookkeeping alone, as in
    /// the transport-less default), a status other than Failed is written
    /// without the record lock: no peer has a live connection, lease, dial
    /// or watch for it to act on. A record made meanwhile (by a `connect`
    /// or a `watch` of any peer) is the one case to settle: after the
    /// write, a fence and a second look at the record count; if any record
    /// appeared, the side effects are done under the lock, as on the
    /// locked path, provided our status is still the peer's (else the call
    /// that replaced it decides).
    pub(crate) fn set_status(&self, peer: PeerId, status: ConnectionStatus, reason: Reason) {
        if status == ConnectionStatus::Failed {
            self.fail(peer, None, reason);
            return;
        }
        if status == ConnectionStatus::Disconnected {
            // Forgotten in time by this runtime's reaper.
            self.ensure_reaper(false);
        }
        if self.records.load(Ordering::Acquire) == 0 {
            let before = self.table.insert(peer, status);
            // Store-buffering with `record` (count, fence, reads).
            fence(Ordering::SeqCst);
            if self.records.load(Ordering::Relaxed) == 0 {
                if before != Some(status) {
                    self.emit(peer, before, Some(status), reason, None);
                }
                return;
            }
            let key = self.peers.key(peer);
            let (slot, generation, watch) = self.peers.at(&key, |map| {
                if self.table.get(&peer) != Some(status) {
                    return (None, 0, None);
                }
                Self::take_for(map, &peer, status)
            });
            self.retire(key, slot, Some(generation));
            if before != Some(status) {
                self.emit(peer, before, Some(status), reason, watch);
            } else if let Some(tx) = watch {
                self.publish(peer, &tx);
            }
            return;
        }
        let key = self.peers.key(peer);
        let (before, (slot, generation, watch)) = self.peers.at(&key, |map| {
            let before = self.table.insert(peer, status);
            (before, Self::take_for(map, &peer, status))
        });
        if before == Some(status) && slot.is_none() {
            return;
        }
        self.retire(key, slot, Some(generation));
        self.emit(peer, before, Some(status), reason, watch);
    }

    /// What a bookkeeping `status` takes out of `peer`'s record, under its
    /// lock: the live slot if Disconnected, the generation to pool its
    /// connection with, and the watch to publish to.
    fn take_for(map: &mut Map<D>, peer: &PeerId, status: ConnectionStatus) -> Retired<D> {
        match map.get_mut(peer) {
            Some(r) => {
                let slot = match status {
                    ConnectionStatus::Disconnected => r.live.take(),
                    _ => None,
                };
                (slot, r.generation, Self::watch_in(r))
            }
            None => (None, 0, None),
        }
    }

    /// Sets `peer` Failed: with `only_slot`, only if its live slot is that
    /// one (a lease's discard: a newer connection is left alone), else
    /// whatever its status. In one locked step the status is written, the
    /// peer's generation moves on and its live slot is taken out; after
    /// the lock the slot's connection is closed and so are the peer's idle
    /// pooled connections. No other peer is touched.
    pub(crate) fn fail(&self, peer: PeerId, only_slot: Option<u64>, reason: Reason) {
        self.fail_as(
            peer,
            |record| record.fail(only_slot, self.fresh_generation()),
            only_slot.is_none(),
            reason,
        );
    }

    /// A lease of slot `slot` ended with its connection broken.
    pub(crate) fn discard_lease(&self, peer: PeerId, slot: u64) {
        self.fail_as(
            peer,
            |record| record.discard_lease(slot, self.fresh_generation()),
            false,
            Reason::Discarded,
        );
    }

    /// A lease of slot `slot` ended with an operation through it cut
    /// short; its connection is already closed. If it was the peer's live
    /// connection, the slot goes (its unit of the limit back) and a
    /// Connected peer becomes Disconnected. The generation stays and the
    /// pool is left alone: the peer did nothing wrong.
    pub(crate) fn cut_lease(&self, key: Key, slot: u64) {
        let peer = key.peer;
        let cut = self.peers.at(&key, |map| {
            let live = map.get_mut(&peer)?.cut_lease(slot);
            let change = match live {
                Some(_) => self
                    .table
                    .compare_and_set(
                        &peer,
                        ConnectionStatus::Connected,
                        ConnectionStatus::Disconnected,
                    )
                    .is_ok()
                    .then(|| Self::watch_of(map, &peer)),
                None => None,
            };
            self.tidy(map, &peer);
            Some((live, change))
        });
        let Some((live, change)) = cut else { return };
        drop(live);
        if let Some(watch) = change {
            // Forgotten in time by this runtime's reaper.
            self.ensure_reaper(false);
            self.emit(
                peer,
                Some(ConnectionStatus::Connected),
                Some(ConnectionStatus::Disconnected),
                Reason::Discarded,
                watch,
            );
        }
    }

    /// `fail`'s body: `step` is the record's transition (`None`: nothing
    /// to do); `unknown` whether a peer without a record fails too.
    /// Returns whether the peer failed.
    pub(crate) fn fail_as(
        &self,
        peer: PeerId,
        step: impl FnOnce(&mut Rec<D>) -> Option<Option<Live<Tokio<D>>>>,
        unknown: bool,
        reason: Reason,
    ) -> bool {
        let failed = self.peers.with(&peer, |map| {
            let (slot, drain) = match map.get_mut(&peer) {
                Some(record) => (step(record)?, true),
                None if unknown => (None, false),
                None => return None,
            };
            let before = self.table.insert(peer, ConnectionStatus::Failed);
            Some((before, slot, drain, Self::watch_of(map, &peer)))
        });
        let Some((before, slot, drain, watch)) = failed else {
            return false;
        };
        // Forgotten in time by this runtime's reaper.
        self.ensure_reaper(false);
        drop(slot);
        if drain {
            self.close_idle(peer);
        }
        self.emit(peer, before, Some(ConnectionStatus::Failed), reason, watch);
        true
    }

    /// Closes the idle pooled connections of `peer` (after a Failed).
    /// Bounded by the per-key cap (plus one), so puts racing with it cannot
    /// keep it going.
    pub(crate) fn close_idle(&self, peer: PeerId) {
        for _ in 0..=self.pool.config().max_idle_per_key {
            match self.pool.take(&peer) {
                Some(pooled) => drop(pooled),
                None => return,
            }
        }
    }

    /// Frees a live slot taken out of its record (giving its unit of the
    /// limit back) and pools its connection with `generation`, or closes it
    /// on `None`. A slot whose connection is leased has none: the lease
    /// disposes of it when it ends.
    pub(crate) fn retire(&self, key: Key, slot: Option<Live<Tokio<D>>>, pool: Option<u64>) {
        if let Some(conn) = slot.and_then(|s| s.conn) {
            match pool {
                Some(generation) => self.pool_put(key, conn, generation),
                None => drop(conn),
            }
        }
    }

    /// Pools `conn`, decided under the record lock at `generation`, unless
    /// it is past `max_lifetime` (then it is closed). The
    /// put runs after that lock (the pool may close connections in it);
    /// then the record lock is taken again: if the peer failed since the
    /// decision (its `Failed` may have drained the pool before this put
    /// landed), was forgotten, or the manager shut down, the peer's idle
    /// connections are closed. Either the `Failed`'s locked step comes
    /// before that second look, which then sees the new generation, or
    /// after it, and then its drain finds this connection.
    pub(crate) fn pool_put(&self, key: Key, conn: Held<D>, generation: u64) {
        let peer = key.peer;
        if self.shut_down.load(Ordering::Acquire) {
            return; // closed as it goes out of scope
        }
        if self.config.max_lifetime.is_some()
            && conn.outlived(
                self.config.max_lifetime,
                tokio::time::Instant::now().into_std(),
            )
        {
            tracing::debug!(
                target: "connmgr",
                peer = %peer,
                reason = "max_lifetime",
                "connection expired: closed instead of pooled"
            );
            return; // closed as it goes out of scope
        }
        // A full pool hands the connection back: it is closed here.
        if self.pool.put(peer, Pooled { generation, conn }).is_err() {
            return;
        }
        // One TTL for all: a new idle connection never expires before
        // those already idle, so the reaper (asleep until the earliest
        // expiry) needs waking only if it found nothing to wait for.
        if self.pool.take_wake_request() {
            self.reapers.wake_all();
        }
        // The idle connection expires on this runtime's reaper, whichever
        // runtime started the first one.
        self.ensure_reaper(false);
        let stale = self.peers.at(&key, |map| {
            self.shut_down.load(Ordering::Acquire)
                || !self.table.contains_key(&peer)
                || map
                    .get(&peer)
                    .is_none_or(|r| r.generation != generation || r.blocked)
        });
        if stale {
            self.close_idle(peer);
        }
    }

    /// Announces a status change: to the broadcast's subscribers, and to
    /// the peer's watch (`watch`, taken under the record lock with the
    /// change). The watch is given the table's status as read under the
    /// watch's own lock, not `to`: two changes of one peer racing here may
    /// publish in either order, and the last one must not leave an older
    /// status behind.
    pub(crate) fn emit(
        &self,
        peer: PeerId,
        from: Option<ConnectionStatus>,
        to: Option<ConnectionStatus>,
        reason: Reason,
        watch: Option<WatchTx>,
    ) {
        if from == to {
            return;
        }
        tracing::debug!(
            target: "connmgr",
            peer = %peer,
            from = ?from,
            to = ?to,
            reason = %reason,
            "status changed"
        );
        // A kept peer off Connected: a reaper redials it.
        if to != Some(ConnectionStatus::Connected) && self.is_kept_connected(&peer) {
            self.reapers.wake_all();
        }
        let subscribers = self.subscribers.load(Ordering::Acquire);
        if subscribers != self.silent_at.load(Ordering::Relaxed) {
            let at = tokio::time::Instant::now().into_std();
            if self
                .events
                .send(StatusEvent {
                    peer,
                    from,
                    to,
                    reason,
                    at,
                })
                .is_err()
            {
                // Every receiver of the first `subscribers` is gone: stop
                // paying for the broadcast's lock until someone subscribes.
                self.silent_at.fetch_max(subscribers, Ordering::Relaxed);
            }
        }
        if let Some(tx) = watch {
            self.publish(peer, &tx);
        }
    }

    /// Gives `peer`'s watch the table's status, read under the watch's
    /// lock (so the last publisher leaves the current status).
    fn publish(&self, peer: PeerId, tx: &WatchTx) {
        tx.send_if_modified(|status| {
            let now = self.table.get(&peer);
            std::mem::replace(status, now) != now
        });
    }

    /// A receiver of `peer`'s status watch; the watch lives in the peer's
    /// record until a sweep finds it has no receivers.
    ///
    /// A receiver's drop cannot reach the manager (it is tokio's type), so
    /// the watches whose receivers are all gone are freed by sweeps: a
    /// shard sweeps its records once the watches made in it since its last
    /// sweep are more than half its records (and at least
    /// [`WATCH_SWEEP_MIN`]). A sweep costs O(records of the shard), and the
    /// watches made since the last one pay for it, so it is amortized O(1)
    /// per call however many records the shard holds; and records of
    /// abandoned watches never outnumber the shard's other records by more
    /// than that margin.
    pub(crate) fn watch(&self, peer: PeerId) -> watch::Receiver<Option<ConnectionStatus>> {
        let key = self.peers.key(peer);
        self.peers.at_watching(&key, |shard| {
            let record = self.record(&mut shard.map, peer);
            let rx = match record.watch.as_ref().filter(|w| watched(w)) {
                Some(tx) => return tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(self.table.get(&peer));
                    record.watch = Some(tx);
                    rx
                }
            };
            shard.made += 1;
            if shard.made.saturating_mul(2) > shard.map.len().max(WATCH_SWEEP_MIN) {
                self.sweep_watches(&mut shard.map, &peer);
                shard.made = 0;
            }
            rx
        })
    }

    /// Frees the watches of `map` whose receivers are all gone, and the
    /// records left holding nothing (`keep`'s record stays: its watch was
    /// just made). Under the shard's lock.
    fn sweep_watches(&self, map: &mut Map<D>, keep: &PeerId) {
        let abandoned: Vec<PeerId> = map
            .iter_mut()
            .filter(|(p, r)| *p != keep && r.watch.as_ref().is_some_and(|w| !watched(w)))
            .map(|(p, r)| {
                r.watch = None;
                *p
            })
            .collect();
        for peer in abandoned {
            self.tidy(map, &peer);
        }
    }

    /// Bytes of the records: the map, and the channels they hold.
    pub(crate) fn records_memory(&self) -> usize {
        self.peers.memory_usage(|r| {
            WATCH_BYTES * (usize::from(r.dial.is_some()) + usize::from(r.watch.is_some()))
                + r.tags.capacity() * size_of::<(Box<str>, i32)>()
                + r.tags.iter().map(|(t, _)| t.len()).sum::<usize>()
                + r.protections.capacity() * size_of::<Box<str>>()
                + r.protections.iter().map(|t| t.len()).sum::<usize>()
                + r.aborts.capacity() * size_of::<Arc<AbortCell>>()
                + r.aborts.len() * size_of::<AbortCell>()
        })
    }

    /// Retires every live slot, closing its connection (`shutdown`).
    pub(crate) fn retire_all(&self) {
        let mut slots = Vec::new();
        self.peers
            .for_each_shard(|map| slots.extend(map.values_mut().filter_map(|r| r.live.take())));
        drop(slots);
    }
}
