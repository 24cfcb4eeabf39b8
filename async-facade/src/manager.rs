//! [`ConnectionManager`]: the documented API, on tokio.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::mem::size_of;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use connmgr_core::{ConnectionStatus, PeerId, StatusTable};
use connmgr_metrics::{DialOutcome, Gauges, Metrics, MetricsConfig, NetworkMetrics, Snapshot};
use connmgr_pool::{IdlePool, PoolConfig};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch, Notify};

use crate::admission::{Admission, Permit};
use crate::config::{Builder, Config};
use crate::dial_share::{self, Channel, DialMap, Join};
use crate::dialer::{Dialer, NoTransport};
use crate::failures::{Failures, Stamp};
use crate::sync::{fence, Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering, Weak};
use crate::{Error, Result, StatusEvent};

/// The pool's and the metrics' clock: tokio's, so that paused time in
/// tests (`tokio::time::pause`) drives expiry and windows.
#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

impl connmgr_core::Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A connection slot in the live map: the connection (absent while leased)
/// and the admission permit it holds.
struct LiveSlot<C> {
    /// Unique per connection made live, so a lease acts only on the slot
    /// its connection came from, never on a newer connection to the peer.
    id: u64,
    conn: Option<C>,
    _permit: Permit,
}

/// One shard of a [`Sharded`] map.
type Shard<V> = CachePadded<Mutex<HashMap<PeerId, V>>>;

/// Per-peer maps behind short, sharded locks. No lock is ever held across
/// an `.await`: every access is a synchronous closure.
struct Sharded<V> {
    shards: Box<[Shard<V>]>,
    hasher: RandomState,
}

impl<V> Sharded<V> {
    fn new() -> Self {
        let n = (std::thread::available_parallelism().map_or(1, |n| n.get()) * 8)
            .next_power_of_two()
            .clamp(8, 128);
        Self {
            shards: (0..n)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// The shard `peer` lives in.
    fn index(&self, peer: &PeerId) -> usize {
        self.hasher.hash_one(peer) as usize & (self.shards.len() - 1)
    }

    fn len(&self) -> usize {
        self.shards.len()
    }

    fn with<R>(&self, peer: &PeerId, f: impl FnOnce(&mut HashMap<PeerId, V>) -> R) -> R {
        self.with_at(self.index(peer), f)
    }

    /// As [`with`](Self::with), on shard `i` (from [`index`](Self::index)),
    /// for a caller that needs the index too: the key is hashed once.
    fn with_at<R>(&self, i: usize, f: impl FnOnce(&mut HashMap<PeerId, V>) -> R) -> R {
        f(&mut self.shards[i].lock())
    }

    /// Takes everything out, shard by shard.
    fn drain(&self) -> Vec<(PeerId, V)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.lock());
            out.extend(taken);
        }
        out
    }

    fn memory_usage(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                size_of::<Shard<V>>()
                    // hashbrown: one (key, value) bucket and one control byte
                    // per slot of capacity.
                    + s.lock().capacity() * (size_of::<(PeerId, V)>() + 1)
            })
            .sum()
    }
}

/// Bytes of the status event broadcast's ring, allocated up front: tokio
/// rounds the capacity up to a power of two, and each slot holds an event
/// beside its lock, position and receiver count (estimated from the event's
/// size plus three words; tokio's slot type is private).
fn event_ring_bytes(capacity: usize) -> usize {
    capacity.next_power_of_two() * (size_of::<Option<StatusEvent>>() + 3 * size_of::<usize>())
}

/// Bytes of the register of leases that lost their slot: hashbrown's
/// buckets and control bytes, and each peer's list.
fn detached_bytes(detached: &HashMap<PeerId, Vec<(u64, bool)>>) -> usize {
    detached.capacity() * (size_of::<(PeerId, Vec<(u64, bool)>)>() + 1)
        + detached
            .values()
            .map(|v| v.capacity() * size_of::<(u64, bool)>())
            .sum::<usize>()
}

/// The result of one shared dial, as its followers see it.
type DialResult = Option<Result<()>>;

struct Inner<D: Dialer> {
    config: Config,
    dialer: D,
    table: StatusTable<PeerId>,
    pool: IdlePool<PeerId, D::Conn, TokioClock>,
    metrics: Metrics<TokioClock>,
    admission: Arc<Admission>,
    live: Sharded<LiveSlot<D::Conn>>,
    /// Failed calls started and finished, per shard of `live` (see
    /// [`Failures`]): how a call that pools a connection, or takes one from
    /// the pool, learns that the peer was set Failed since it decided.
    failures: Failures,
    dials: Sharded<watch::Sender<DialResult>>,
    events: broadcast::Sender<StatusEvent>,
    /// Receivers handed out so far (only grows) and, in `silent_at`, how
    /// many had been handed out when a send last found none of them alive.
    /// While the two are equal, status changes skip the broadcast (whose
    /// `send` takes a lock even with no receiver), keeping transitions
    /// lock-free. A new subscriber makes them differ again; as neither
    /// value ever goes back, a stale emitter cannot silence it (no ABA).
    subscribers: AtomicU64,
    silent_at: AtomicU64,
    watchers: Sharded<watch::Sender<Option<ConnectionStatus>>>,
    watcher_count: AtomicUsize,
    shut_down: AtomicBool,
    /// Source of [`LiveSlot::id`]s.
    next_slot_id: AtomicU64,
    /// Leases that lost their slot (the peer was disconnected, set
    /// Disconnected or Failed, or connected anew, while they held its
    /// connection), by peer: the slot's id, and whether the peer has been
    /// set Failed since. A failed one's lease closes its connection when
    /// dropped, whatever the peer's status is by then. Entries are added and
    /// marked failed under the peer's live-map lock (so a Failed set after a
    /// slot left never misses it), and removed when their lease is dropped
    /// or discarded (after the lease's last look at its slot under that
    /// lock, so none is added after its removal): at most one per lease
    /// alive.
    detached: Mutex<HashMap<PeerId, Vec<(u64, bool)>>>,
    reaper_started: AtomicBool,
    reaper_wake: Arc<Notify>,
}

impl<D: Dialer> Drop for Inner<D> {
    fn drop(&mut self) {
        // The reaper holds only a weak reference; wake it so it sees that
        // the manager is gone and ends (it would otherwise sleep until the
        // next expiry, or forever on an empty pool).
        self.reaper_wake.notify_one();
    }
}

/// Manages connections to peers: limits, idle pooling with a TTL that
/// expires by itself, atomic status tracking and live metrics.
///
/// `ConnectionManager::new(max)` and
/// [`with_pool_timeout`](ConnectionManager::with_pool_timeout) build the
/// transport-less default ([`NoTransport`]): `connect` registers and tracks
/// the peer as the reference implementation does. Use
/// [`builder`](ConnectionManager::builder) with a [`Dialer`] such as
/// [`TcpDialer`](crate::TcpDialer) for real connections.
///
/// Cloning is cheap and shares the manager. The reaper task that closes
/// expired idle connections starts on the first call made inside a tokio
/// runtime and ends when the last clone is dropped.
///
/// # Cancellation safety
///
/// Every `async` method is cancellation safe: dropping its future at any
/// `.await` leaves no slot taken, no status stuck at `Connecting` and no
/// waiter stranded. A dropped `connect` gives its slot back, restores the
/// peer's previous status, and if other callers were waiting on its dial,
/// one of them takes the dial over.
pub struct ConnectionManager<D: Dialer = NoTransport> {
    inner: Arc<Inner<D>>,
}

impl<D: Dialer> Clone for ConnectionManager<D> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl ConnectionManager<NoTransport> {
    /// A transport-less manager allowing `max_connections` connecting or
    /// connected peers, with the default 300 s pool timeout. Needs no
    /// runtime to be built.
    ///
    /// # Panics
    ///
    /// If `max_connections` is 0; use [`builder`](Self::builder) to get an
    /// error instead.
    pub fn new(max_connections: usize) -> Self {
        Self::with_pool_timeout(max_connections, Config::default().pool_timeout)
    }

    /// As [`new`](Self::new), with idle connections kept for `pool_timeout`.
    ///
    /// # Panics
    ///
    /// If `max_connections` or `pool_timeout` is 0; use
    /// [`builder`](Self::builder) to get an error instead.
    pub fn with_pool_timeout(max_connections: usize, pool_timeout: Duration) -> Self {
        match Self::builder()
            .max_connections(max_connections)
            .pool_timeout(pool_timeout)
            .build()
        {
            Ok(manager) => manager,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a [`Builder`] with every setting at its default.
    pub fn builder() -> Builder<NoTransport> {
        Builder::new()
    }
}

impl<D: Dialer> ConnectionManager<D> {
    pub(crate) fn from_parts(config: Config, dialer: D) -> Self {
        let pool = IdlePool::with_config(
            PoolConfig::default()
                .with_ttl(config.pool_timeout)
                .with_max_idle_per_key(config.max_idle_per_peer)
                .with_max_idle_total(config.max_idle_total),
            TokioClock,
        )
        .expect("pool settings are validated by the builder");
        let metrics = Metrics::with_config(
            MetricsConfig::default().with_window(config.metrics_window),
            TokioClock,
        )
        .expect("metrics settings are validated by the builder");
        let (events, _) = broadcast::channel(config.event_capacity);
        let live = Sharded::new();
        let failures = Failures::new(live.len());
        Self {
            inner: Arc::new(Inner {
                admission: Admission::new(config.max_connections),
                table: StatusTable::new(),
                pool,
                metrics,
                live,
                failures,
                dials: Sharded::new(),
                events,
                subscribers: AtomicU64::new(0),
                silent_at: AtomicU64::new(0),
                watchers: Sharded::new(),
                watcher_count: AtomicUsize::new(0),
                shut_down: AtomicBool::new(false),
                next_slot_id: AtomicU64::new(0),
                detached: Mutex::new(HashMap::new()),
                reaper_started: AtomicBool::new(false),
                reaper_wake: Arc::new(Notify::new()),
                config,
                dialer,
            }),
        }
    }

    /// The settings this manager runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The dialer.
    pub fn dialer(&self) -> &D {
        &self.inner.dialer
    }

    /// Connects to `peer`, or makes sure it is connected.
    ///
    /// | the peer is | what happens |
    /// | --- | --- |
    /// | Connected | nothing; `Ok` |
    /// | not Connected, but its live connection is still held (bookkeeping moved the status, e.g. `update_status(p, Connecting)`) | it is taken back: Connected, no dial |
    /// | not Failed (unknown, Disconnected, or Connecting by bookkeeping alone), with a live idle connection pooled | it is reused: Connected, no dial |
    /// | unknown, Disconnected or Connecting by bookkeeping alone, with nothing alive pooled; or Failed | a slot is reserved, the peer is Connecting, then Connected (a Failed peer is always dialed afresh: its pooled connections are not reused) |
    /// | being dialed by another call | this call waits for that dial and shares its outcome |
    ///
    /// A pooled connection is not reused, and the peer is dialed instead,
    /// while a Failed of another peer that shares its live-map shard is
    /// closing that peer's pooled connections, or if one ran while this
    /// call took the connection (then it is closed): failure bookkeeping is
    /// per shard (see the crate README, "Failed connections are never
    /// reused").
    ///
    /// The status is what decides: a peer marked Connected by bookkeeping
    /// alone (`update_status(p, Connected)`) counts as connected, so this
    /// returns `Ok` without dialing, and [`lease`](Self::lease) then fails
    /// with [`Error::NotConnected`].
    ///
    /// # Errors
    ///
    /// [`Error::LimitReached`] (status unchanged) when `max_connections`
    /// slots are in use; [`Error::Dial`] or [`Error::Timeout`] (status
    /// Failed) when the dial fails or outlives the dial timeout;
    /// [`Error::ShutDown`] after [`shutdown`](Self::shutdown).
    ///
    /// # Cancellation safety
    ///
    /// Safe: dropping the future gives the slot back and restores the
    /// peer's previous status; waiters on this dial take it over.
    pub async fn connect(&self, peer_id: PeerId) -> Result<()> {
        let inner = &*self.inner;
        self.ensure_reaper();
        loop {
            if inner.shut_down.load(Ordering::Acquire) {
                return Err(Error::ShutDown);
            }
            if inner.table.get(&peer_id) == Some(ConnectionStatus::Connected) {
                return Ok(());
            }
            // Join the dial in flight, or become its leader (see
            // `dial_share` for why no waiter is stranded).
            match dial_share::join(&inner.dials, peer_id) {
                Join::Follow(mut rx) => {
                    // The leader either publishes an outcome or, if it is
                    // cancelled, drops the sender: `changed` then errs and we
                    // go round again (and may lead the next attempt).
                    if rx.changed().await.is_ok() {
                        if let Some(outcome) = rx.borrow_and_update().clone() {
                            return outcome;
                        }
                    }
                }
                Join::Lead(lead) => {
                    let outcome = self.dial_as_leader(peer_id).await;
                    lead.publish(outcome.clone());
                    return outcome;
                }
            }
        }
    }

    async fn dial_as_leader(&self, peer: PeerId) -> Result<()> {
        let inner = &*self.inner;
        if inner.table.get(&peer) == Some(ConnectionStatus::Connected) {
            return Ok(());
        }
        // A live connection whose status bookkeeping moved off Connected
        // (`update_status(p, Connecting)`, say) is still this peer's: mark
        // it Connected again instead of dialing a second one.
        let shard = inner.live.index(&peer);
        let revived = inner.live.with_at(shard, |live| {
            live.contains_key(&peer)
                .then(|| inner.table.insert(peer, ConnectionStatus::Connected))
        });
        if let Some(before) = revived {
            inner.emit(peer, before, Some(ConnectionStatus::Connected));
            return Ok(());
        }
        let permit = inner.admission.try_acquire().ok_or(Error::LimitReached {
            max: inner.admission.max(),
        })?;
        let dialer = &inner.dialer;
        // A Failed peer's pooled connections are closed when it fails
        // (`fail`), and a put that races the failure closes what it
        // pooled (`idle_or_close`); not consulting the pool here is the
        // rule itself, stated once more where it applies. Read before the
        // status, the stamp also tells a Failed whose drain is under way
        // (the pool is skipped: what is in it may be the failed peer's), and,
        // looked at again by `go_live` under the peer's lock, one that ran
        // while we took the connection (it is closed, and we dial).
        let stamp = inner.failures.stamp(shard);
        let pooled = if stamp.draining() || inner.table.get(&peer) == Some(ConnectionStatus::Failed)
        {
            None
        } else {
            inner.pool.take_if(&peer, |c| dialer.is_alive(c))
        };
        let permit = match pooled {
            Some(conn) => match inner.go_live(peer, conn, permit, Some(stamp)) {
                Ok(()) => {
                    inner.metrics.record_dial(DialOutcome::PoolHit);
                    return Ok(());
                }
                Err((conn, permit)) => {
                    drop(conn); // the peer failed while we took it: closed
                    permit
                }
            },
            None => permit,
        };
        inner.metrics.record_dial(DialOutcome::PoolMiss);
        let before = inner.table.insert(peer, ConnectionStatus::Connecting);
        inner.emit(peer, before, Some(ConnectionStatus::Connecting));
        let restore = RestoreOnDrop {
            inner,
            peer,
            before,
            armed: true,
        };
        let timeout = inner.config.dial_timeout;
        let dialed = tokio::time::timeout(timeout, dialer.dial(&peer)).await;
        restore.disarm();
        match dialed {
            Ok(Ok(conn)) if !inner.shut_down.load(Ordering::Acquire) => {
                inner.metrics.record_dial(DialOutcome::Ok);
                // A fresh dial has the last word over any status set
                // meanwhile (no stamp): `go_live` cannot refuse it.
                if inner.go_live(peer, conn, permit, None).is_err() {
                    unreachable!("go_live refuses only pooled connections");
                }
                Ok(())
            }
            Ok(Ok(conn)) => {
                drop(conn);
                inner.set_status(peer, ConnectionStatus::Disconnected);
                Err(Error::ShutDown)
            }
            Ok(Err(e)) => {
                inner.metrics.record_dial(DialOutcome::Failed);
                inner.set_status(peer, ConnectionStatus::Failed);
                Err(Error::Dial {
                    peer,
                    source: Arc::new(e),
                })
            }
            Err(_elapsed) => {
                inner.metrics.record_dial(DialOutcome::TimedOut);
                inner.set_status(peer, ConnectionStatus::Failed);
                Err(Error::Timeout {
                    peer,
                    after: timeout,
                })
            }
        }
    }

    /// Disconnects a Connected peer: its status becomes Disconnected and its
    /// live connection goes to the idle pool (closed instead if the pool is
    /// full). Does nothing for a peer that is not Connected, so calling it
    /// twice, or for an unknown peer, is harmless. That includes a peer
    /// moved off Connected by bookkeeping (`update_status(p, Connecting)`)
    /// whose live connection is still held, with its slot: `connect` takes
    /// it back, `update_status` to Disconnected or Failed retires it.
    ///
    /// # Cancellation safety
    ///
    /// Safe: it never waits; the work is done in the first poll.
    pub async fn disconnect(&self, peer_id: &PeerId) {
        self.ensure_reaper();
        let inner = &*self.inner;
        if inner.table.get(peer_id) != Some(ConnectionStatus::Connected) {
            return;
        }
        // The status change and the slot's removal happen together under
        // the peer's live-map lock, where `go_live` installs a slot and
        // sets Connected: a connect that completes meanwhile cannot have
        // its new slot taken for this older Connected.
        let shard = inner.live.index(peer_id);
        let slot = inner.live.with_at(shard, |live| {
            inner
                .table
                .compare_and_set(
                    peer_id,
                    ConnectionStatus::Connected,
                    ConnectionStatus::Disconnected,
                )
                .ok()
                .map(|_| {
                    let slot = live.remove(peer_id);
                    inner.detach_if_leased(*peer_id, slot.as_ref(), false);
                    (slot, inner.failures.stamp(shard))
                })
        });
        if let Some((slot, stamp)) = slot {
            inner.retire_slot(*peer_id, slot, Some(stamp));
            inner.emit(
                *peer_id,
                Some(ConnectionStatus::Connected),
                Some(ConnectionStatus::Disconnected),
            );
        }
    }

    /// Sets a peer's status as given (bookkeeping, as in the reference).
    /// A dial in flight for the peer still completes and sets it Connected
    /// (or Failed) afterwards: the last word is the dial's.
    ///
    /// Moving a peer to Disconnected pools its live connection, to Failed
    /// closes it, and the peer's idle pooled connections too (a leased one
    /// is closed when its lease is dropped); either frees its slot. Setting Connected or Connecting
    /// opens nothing and takes no slot: limits apply to
    /// [`connect`](Self::connect). Counts stay exact either way.
    ///
    /// # Cancellation safety
    ///
    /// Safe: it never waits.
    pub async fn update_status(&self, peer_id: PeerId, status: ConnectionStatus) {
        self.ensure_reaper();
        self.inner.set_status(peer_id, status);
    }

    /// The peer's status, if the manager knows it.
    ///
    /// Lock-free and wait-free: one hash, an epoch pin and one atomic load
    /// of the peer's state word (see `StatusTable::get`).
    pub async fn get_status(&self, peer_id: &PeerId) -> Option<ConnectionStatus> {
        self.inner.table.get(peer_id)
    }

    /// Current metrics: `connections` is the number of Connected peers
    /// (exact once status changes stop; see `StatusTable::count`),
    /// `messages_per_second` and `avg_latency` come from
    /// [`record_message`](Self::record_message) over the metrics window
    /// (which this call cuts: called less often than
    /// [`Config::metrics_window`], they cover the time since the previous
    /// call; [`snapshot`](Self::snapshot)`().window` has the exact span),
    /// and `memory_usage` is [`memory_usage`](Self::memory_usage).
    pub async fn get_metrics(&self) -> NetworkMetrics {
        let snapshot = self.inner.metrics.snapshot();
        snapshot.network_metrics(
            self.inner.table.count(ConnectionStatus::Connected),
            self.memory_usage(),
        )
    }

    /// Records one message exchanged with a peer and its latency, for
    /// `messages_per_second`, `avg_latency` and the latency histogram.
    ///
    /// Touches only the calling thread's stripe: no lock, no shared line.
    pub fn record_message(&self, latency: Duration) {
        self.inner.metrics.record_message(latency);
    }

    /// Records bytes sent and received, for the byte counters.
    pub fn record_bytes(&self, sent: u64, received: u64) {
        self.inner.metrics.record_bytes(sent, received);
    }

    /// The full metrics snapshot: totals, window figures, latency quantiles
    /// and dial outcomes.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.metrics.snapshot()
    }

    /// The gauges the manager exports beside its snapshot.
    pub fn gauges(&self) -> Gauges {
        let t = &self.inner.table;
        Gauges {
            connections: t.count(ConnectionStatus::Connected),
            connecting: t.count(ConnectionStatus::Connecting),
            idle: self.inner.pool.len(),
            tracked_peers: t.len(),
            memory_usage: self.memory_usage(),
        }
    }

    /// Everything in the Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        connmgr_metrics::prometheus_text(&self.snapshot(), &self.gauges())
    }

    /// Bytes held by the manager's own structures: the status table, the
    /// idle pool's bookkeeping, the metrics stripes, the live, dial and
    /// watcher maps, the register of leases whose peer was disconnected
    /// while they were held, the per-shard counts of Failed calls, and the
    /// status event ring (its per-slot
    /// bookkeeping estimated), each computed from its capacity (the connections
    /// themselves, and allocator overhead, are not counted).
    pub fn memory_usage(&self) -> usize {
        let i = &*self.inner;
        size_of::<Inner<D>>()
            + i.table.memory_usage()
            + i.pool.memory_usage()
            + i.metrics.memory_usage()
            + i.live.memory_usage()
            + i.dials.memory_usage()
            + i.watchers.memory_usage()
            + event_ring_bytes(i.config.event_capacity)
            + detached_bytes(&i.detached.lock())
            + i.failures.memory_usage()
    }

    /// Connections connecting or connected (slots in use).
    pub fn active(&self) -> usize {
        self.inner.admission.in_use()
    }

    /// Idle connections in the pool.
    pub fn idle(&self) -> usize {
        self.inner.pool.len()
    }

    /// Dials in flight.
    pub fn pending_dials(&self) -> usize {
        self.inner.dials.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Peers with a status entry.
    pub fn tracked_peers(&self) -> usize {
        self.inner.table.len()
    }

    /// Peers with the given status (O(shards + stripes) atomic loads,
    /// never a scan; exact once status changes stop).
    pub fn count(&self, status: ConnectionStatus) -> usize {
        self.inner.table.count(status)
    }

    /// Every status change from now on. A subscriber that falls more than
    /// the event capacity behind gets `RecvError::Lagged` and continues.
    /// Events of changes racing on one peer from two threads may arrive in
    /// either order; [`watch`](Self::watch) always ends on the current
    /// status.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        let rx = self.inner.events.subscribe();
        // Release: an emitter that reads the new count finds `rx` alive.
        self.inner.subscribers.fetch_add(1, Ordering::AcqRel);
        rx
    }

    /// The status of one peer, now and as it changes.
    pub fn watch(&self, peer: &PeerId) -> watch::Receiver<Option<ConnectionStatus>> {
        let inner = &*self.inner;
        inner.watchers.with(peer, |w| {
            w.entry(*peer)
                .or_insert_with(|| {
                    inner.watcher_count.fetch_add(1, Ordering::SeqCst);
                    // Store-buffering with `emit` (table write, fence, count
                    // read): either that emit sees our count and publishes
                    // under this shard's lock after us, or we read its
                    // status here.
                    fence(Ordering::SeqCst);
                    watch::channel(inner.table.get(peer)).0
                })
                .subscribe()
        })
    }

    /// Exclusive use of a Connected peer's live connection until the lease
    /// is dropped, when it goes back; if the peer was disconnected
    /// meanwhile, it goes to the idle pool instead, unless the peer was set
    /// Failed while this lease held it (even if reconnected or set
    /// Disconnected since), is Failed or forgotten now, or the manager shut
    /// down: then it is closed. Not async: it never waits.
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] if the peer has no live connection,
    /// [`Error::Busy`] if it is leased already, [`Error::ShutDown`].
    pub fn lease(&self, peer: &PeerId) -> Result<Lease<D>> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        let (slot, conn) = self
            .inner
            .live
            .with(peer, |live| match live.get_mut(peer) {
                Some(slot) => slot
                    .conn
                    .take()
                    .map(|conn| (slot.id, conn))
                    .ok_or(Error::Busy { peer: *peer }),
                None => Err(Error::NotConnected { peer: *peer }),
            })?;
        Ok(Lease {
            inner: Arc::clone(&self.inner),
            peer: *peer,
            slot,
            conn: Some(conn),
        })
    }

    /// [`connect`](Self::connect), retried with exponential backoff and
    /// jitter on dial errors, timeouts and a full limit. Stops at once on
    /// [`Error::ShutDown`].
    ///
    /// # Errors
    ///
    /// [`Error::GaveUp`] with the last error once `backoff.max_attempts`
    /// attempts failed.
    ///
    /// # Cancellation safety
    ///
    /// Safe, as `connect`; dropping it while it sleeps between attempts
    /// leaves nothing behind.
    pub async fn connect_with_backoff(&self, peer: PeerId, backoff: Backoff) -> Result<()> {
        let mut delay = backoff.initial.min(backoff.max);
        let mut rng = RandomState::new().hash_one(peer) | 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.connect(peer).await {
                Ok(()) => return Ok(()),
                Err(Error::ShutDown) => return Err(Error::ShutDown),
                Err(e) if attempt >= backoff.max_attempts => {
                    return Err(Error::GaveUp {
                        attempts: attempt,
                        last: Box::new(e),
                    })
                }
                Err(_) => {}
            }
            let sleep = if backoff.jitter {
                // "Equal jitter": half the delay fixed, half random, so
                // retries of many peers spread out but never collapse to 0.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let half = delay / 2;
                half + half.mul_f64((rng >> 11) as f64 / (1u64 << 53) as f64)
            } else {
                delay
            };
            tokio::time::sleep(sleep).await;
            delay = delay
                .saturating_mul(backoff.multiplier.max(1))
                .min(backoff.max);
        }
    }

    /// Closes every connection and stops the reaper. Afterwards every call
    /// that would open or lease a connection fails with
    /// [`Error::ShutDown`]; statuses and metrics stay readable. Connected
    /// peers become Disconnected; dials in flight are dropped when they
    /// complete; a leased connection is closed when its lease is dropped
    /// (the lease keeps it usable until then). Idempotent.
    ///
    /// # Cancellation safety
    ///
    /// Safe: it never waits.
    pub async fn shutdown(&self) {
        let inner = &*self.inner;
        if inner.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        for (_, slot) in inner.live.drain() {
            drop(slot); // closes the connection, frees the slot
        }
        // Every Connected peer, including those marked so by bookkeeping
        // alone (`update_status`), is Disconnected now. O(peers), once.
        inner.table.for_each(|peer, info| {
            if info.status == ConnectionStatus::Connected
                && inner
                    .table
                    .compare_and_set(
                        peer,
                        ConnectionStatus::Connected,
                        ConnectionStatus::Disconnected,
                    )
                    .is_ok()
            {
                inner.emit(
                    *peer,
                    Some(ConnectionStatus::Connected),
                    Some(ConnectionStatus::Disconnected),
                );
            }
        });
        // Store-buffering with `idle_or_close` (pool put, fence, flag
        // read): our flag store is before this fence, so either that put
        // sees the flag and closes what it pooled, or this clear finds it.
        fence(Ordering::SeqCst);
        inner.pool.clear();
        inner.reaper_wake.notify_one();
    }

    /// True once [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::Acquire)
    }

    /// Closes expired idle connections and forgets stale peers now (the
    /// reaper does this by itself; this is for callers without a runtime).
    /// Returns how many idle connections were closed. If the reaper task is
    /// reaping at the same moment, the connections it is closing are closed
    /// and counted by it, not by this call (see `IdlePool::reap`).
    pub fn reap_now(&self) -> usize {
        self.inner.reap()
    }

    /// Starts the reaper task if this runs inside a tokio runtime and it is
    /// not running yet.
    fn ensure_reaper(&self) {
        let inner = &*self.inner;
        if inner.reaper_started.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return; // not in a runtime: a later call inside one starts it
        };
        if inner
            .reaper_started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            handle.spawn(reaper(
                Arc::downgrade(&self.inner),
                Arc::clone(&inner.reaper_wake),
            ));
        }
    }
}

impl<D: Dialer> Inner<D> {
    /// Registers a live connection and marks the peer Connected.
    ///
    /// The slot goes in and the status becomes Connected under the peer's
    /// live-map lock, the lock under which `disconnect`, `set_status` and
    /// `fail_slot` take a slot out: so a slot is only ever removed for the
    /// Connected status it came with.
    ///
    /// `pooled` is the stamp read before a pooled `conn` was taken from the
    /// pool (`None` for a fresh dial). If a Failed of the peer's shard
    /// started since, which that lock makes exact, the connection may be
    /// one the Failed was to close (it was out of the pool while the Failed
    /// drained it): nothing is installed, and `conn` and `permit` are
    /// handed back.
    fn go_live(
        &self,
        peer: PeerId,
        conn: D::Conn,
        permit: Permit,
        pooled: Option<Stamp>,
    ) -> std::result::Result<(), (D::Conn, Permit)> {
        let shard = pooled.map_or_else(|| self.live.index(&peer), Stamp::shard);
        let (replaced, before) = self.live.with_at(shard, |live| {
            if pooled.is_some_and(|stamp| self.failures.started_since(stamp)) {
                return Err((conn, permit));
            }
            let replaced = live.insert(
                peer,
                LiveSlot {
                    id: self.next_slot_id.fetch_add(1, Ordering::Relaxed),
                    conn: Some(conn),
                    _permit: permit,
                },
            );
            self.detach_if_leased(peer, replaced.as_ref(), false);
            Ok((
                replaced,
                self.table.insert(peer, ConnectionStatus::Connected),
            ))
        })?;
        // A stale slot (left by bookkeeping such as `update_status(p,
        // Connecting)` over a Connected peer): closed and freed, outside
        // the lock.
        drop(replaced);
        self.emit(peer, before, Some(ConnectionStatus::Connected));
        if self.shut_down.load(Ordering::Acquire) {
            // `shutdown` drained the live map before this connection was
            // registered (it came from the pool or a dial in flight): close
            // it here so nothing outlives the shutdown.
            self.set_status(peer, ConnectionStatus::Disconnected);
        }
        Ok(())
    }

    /// The failure counts of `peer`'s live-map shard, now (see
    /// [`Failures`]).
    fn fail_stamp(&self, peer: &PeerId) -> Stamp {
        self.failures.stamp(self.live.index(peer))
    }

    /// Sets a status as given and retires the live connection if the new
    /// status is not an active one.
    ///
    /// Failed, and Disconnected while any connection is live, are written
    /// under the peer's live-map lock together with the removal of its
    /// slot: that lock is where `go_live` installs a slot (with Connected)
    /// and `connect` takes a bookkept one back, so the slot retired is the
    /// one the new status found, whatever other calls race with this one.
    fn set_status(&self, peer: PeerId, status: ConnectionStatus) {
        use ConnectionStatus::{Connected, Connecting, Disconnected, Failed};
        // The status before, the slot retired, and (to pool its connection)
        // the failure stamp read under the lock that retired it.
        type Retired<C> = (Option<ConnectionStatus>, Option<LiveSlot<C>>, Option<Stamp>);
        let (before, slot, stamp): Retired<D::Conn> = match status {
            Failed => return self.fail(peer, None),
            // Each live connection holds a unit of the limit, taken before
            // its status goes Connected.
            Disconnected if self.admission.in_use() != 0 => {
                let shard = self.live.index(&peer);
                self.live.with_at(shard, |live| {
                    let before = self.table.insert(peer, Disconnected);
                    let slot = live.remove(&peer);
                    self.detach_if_leased(peer, slot.as_ref(), false);
                    (before, slot, Some(self.failures.stamp(shard)))
                })
            }
            // None was in use when we looked: pure bookkeeping, no lock,
            // unless a connection went live between that look and our write
            // (then it holds a unit now, and `before` is Connected, or
            // Connecting by bookkeeping since). Its slot is retired if our
            // status is still the peer's (pooled), or if the peer was
            // forgotten meanwhile (closed); if a newer call replaced our
            // status, that call (or a newer `go_live`) decides.
            Disconnected => {
                let before = self.table.insert(peer, Disconnected);
                if matches!(before, Some(Connected | Connecting)) && self.admission.in_use() != 0 {
                    self.live.with(&peer, |live| match self.table.get(&peer) {
                        Some(now) if now != Disconnected => (before, None, None),
                        now => {
                            let slot = live.remove(&peer);
                            self.detach_if_leased(peer, slot.as_ref(), false);
                            // Forgotten meanwhile (`None`): closed.
                            (before, slot, now.map(|_| self.fail_stamp(&peer)))
                        }
                    })
                } else {
                    (before, None, None)
                }
            }
            Connected | Connecting => (self.table.insert(peer, status), None, None),
        };
        // An unchanged status has nothing left to do.
        if before == Some(status) && slot.is_none() {
            return;
        }
        self.retire_slot(peer, slot, stamp);
        self.emit(peer, before, Some(status));
    }

    /// Sets `peer` Failed: with `only_slot`, only if its live slot is that
    /// one (a lease's discard: a newer connection is left alone), else
    /// whatever its status (`update_status`, a failed dial).
    ///
    /// Under the peer's live-map lock: the status is written, the live
    /// slot taken out (a leased one registered, so its lease closes it),
    /// the leases that lost their slot earlier marked (they close theirs
    /// too), and the Failed counted started (see [`Failures`]). After the
    /// lock: the slot's connection is closed, then, after a SeqCst fence,
    /// the peer's idle pooled connections (store-buffering with
    /// `idle_or_close`'s put, fence and re-check: either that put sees our
    /// count and closes what it pooled, or this drain finds it), and the
    /// Failed is counted finished. A repeated Failed drains again
    /// (idempotent cleanup).
    fn fail(&self, peer: PeerId, only_slot: Option<u64>) {
        let shard = self.live.index(&peer);
        let failed = self.live.with_at(shard, |live| {
            if only_slot.is_some_and(|id| live.get(&peer).is_none_or(|slot| slot.id != id)) {
                return None;
            }
            let before = self.table.insert(peer, ConnectionStatus::Failed);
            let slot = live.remove(&peer);
            if only_slot.is_none() {
                // A discarding lease is the slot's own: not registered.
                self.detach_if_leased(peer, slot.as_ref(), true);
            }
            self.fail_detached(peer);
            Some((before, slot, self.failures.start(shard)))
        });
        let Some((before, slot, finish)) = failed else {
            return;
        };
        self.retire_slot(peer, slot, None);
        fence(Ordering::SeqCst);
        self.close_idle(peer);
        drop(finish);
        self.emit(peer, before, Some(ConnectionStatus::Failed));
    }

    /// Registers the lease of `slot` (just taken out of the live map, under
    /// `peer`'s live-map lock) if its connection is leased; `failed` if the
    /// slot was taken out for a Failed status.
    fn detach_if_leased(&self, peer: PeerId, slot: Option<&LiveSlot<D::Conn>>, failed: bool) {
        if let Some(slot) = slot.filter(|s| s.conn.is_none()) {
            self.detached
                .lock()
                .entry(peer)
                .or_default()
                .push((slot.id, failed));
        }
    }

    /// Marks every lease of `peer` that lost its slot as failed (under
    /// `peer`'s live-map lock).
    fn fail_detached(&self, peer: PeerId) {
        if let Some(leases) = self.detached.lock().get_mut(&peer) {
            for (_, failed) in leases.iter_mut() {
                *failed = true;
            }
        }
    }

    /// Whether the lease of slot `id`, which lost its slot, must close its
    /// connection (the peer was set Failed since); forgets the lease either
    /// way (a lease that kept its slot is not registered: `false`).
    fn take_detached(&self, peer: PeerId, id: u64) -> bool {
        let mut detached = self.detached.lock();
        let Some(leases) = detached.get_mut(&peer) else {
            return false;
        };
        let Some(i) = leases.iter().position(|&(slot, _)| slot == id) else {
            return false;
        };
        let (_, failed) = leases.swap_remove(i);
        if leases.is_empty() {
            detached.remove(&peer);
        }
        failed
    }

    /// Closes the idle pooled connections of a peer that failed: none of
    /// them is to be handed out again. Bounded by the per-key cap (plus
    /// one), so puts racing with it cannot keep it going.
    fn close_idle(&self, peer: PeerId) {
        for _ in 0..=self.pool.config().max_idle_per_key {
            match self.pool.take(&peer) {
                Some(conn) => drop(conn),
                None => return,
            }
        }
    }

    /// A leased connection broke (its lease was discarded, or dropped while
    /// its thread panicked): if its slot is still the peer's live slot, the
    /// slot goes (freeing its connection slot) and the peer is marked
    /// Failed, together under the live map's lock; a newer connection to
    /// the peer is left alone.
    fn fail_slot(&self, peer: PeerId, id: u64) {
        // The slot is leased (its connection is the caller's): retiring it
        // frees its permit and closes nothing.
        self.fail(peer, Some(id));
    }

    /// Frees a live slot taken out of the live map (giving its connection
    /// slot back) and pools its connection (`pool_at`: see
    /// [`idle_or_close`](Self::idle_or_close)), or closes it. Called outside
    /// the live map's lock, so a connection's destructor never runs under
    /// it. A slot whose connection is leased has none: the lease disposes
    /// of it when dropped (pools it, or closes it if the peer was set Failed
    /// while it was held, is Failed or forgotten by then, or the manager
    /// shut down).
    fn retire_slot(&self, peer: PeerId, slot: Option<LiveSlot<D::Conn>>, pool_at: Option<Stamp>) {
        if let Some(conn) = slot.and_then(|s| s.conn) {
            self.idle_or_close(peer, conn, pool_at);
        }
    }

    /// Pools `conn` if `pool_at` is `Some`: the failure stamp its caller
    /// read before deciding to pool it (see [`Failures`]); closes it on
    /// `None`. After the put, a SeqCst fence and a second look: if a Failed
    /// of the peer's shard started since the stamp (it may have drained
    /// the pool before our put landed), the peer was forgotten, or the
    /// manager shut down, the peer's idle connections are closed again.
    /// Any other status change since the decision leaves the connection
    /// pooled. A Failed already visible before the put closes `conn` at
    /// once. One window is left open: a Failed that runs whole while the
    /// put is landing (after that first look, before the put is visible),
    /// followed by a `connect` of the peer that takes the connection before
    /// our second look: it reuses it.
    fn idle_or_close(&self, peer: PeerId, conn: D::Conn, pool_at: Option<Stamp>) {
        let Some(stamp) = pool_at else {
            return; // `conn` is closed as it goes out of scope
        };
        if !self.shut_down.load(Ordering::Acquire) && !self.failures.started_since(stamp) {
            // One TTL for all: a new idle connection never expires before
            // those already idle, so the reaper (asleep until the earliest
            // expiry) needs waking only if it found nothing to wait for; the
            // pool's handshake tells us so without losing a race with it.
            // A full pool hands the connection back: it is closed here.
            if self.pool.put(peer, conn).is_ok() {
                if self.pool.take_wake_request() {
                    self.reaper_wake.notify_one();
                }
                // Store-buffering with `fail` (count, fence, drain) and
                // with `shutdown` (flag, fence, clear): a peer that failed,
                // or a manager that shut down, meanwhile gets nothing
                // pooled, by one side or the other.
                fence(Ordering::SeqCst);
                if self.failures.started_since(stamp)
                    || self.shut_down.load(Ordering::Relaxed)
                    || !self.table.contains_key(&peer)
                {
                    self.close_idle(peer);
                }
            }
        }
    }

    fn emit(&self, peer: PeerId, from: Option<ConnectionStatus>, to: Option<ConnectionStatus>) {
        if from == to {
            return;
        }
        let subscribers = self.subscribers.load(Ordering::Acquire);
        if subscribers != self.silent_at.load(Ordering::Relaxed) {
            let at = tokio::time::Instant::now().into_std();
            if self
                .events
                .send(StatusEvent { peer, from, to, at })
                .is_err()
            {
                // Every receiver of the first `subscribers` is gone: stop
                // paying for the broadcast's lock until someone subscribes.
                self.silent_at.fetch_max(subscribers, Ordering::Relaxed);
            }
        }
        // Store-buffering with `watch` (count increment, fence, table read):
        // our status write is before this fence.
        fence(Ordering::SeqCst);
        if self.watcher_count.load(Ordering::Relaxed) > 0 {
            self.watchers.with(&peer, |w| {
                if let Some(tx) = w.get(&peer) {
                    // The table's status now, not `to`: two changes racing
                    // here may take this lock in either order, and the last
                    // one in must not leave an older status behind.
                    tx.send_replace(self.table.get(&peer));
                    if tx.receiver_count() == 0 {
                        w.remove(&peer);
                        self.watcher_count.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            });
        }
    }

    /// Closes expired idle connections; forgets Disconnected or Failed
    /// peers untouched for `forget_after` with nothing pooled.
    fn reap(&self) -> usize {
        let closed = self.pool.reap();
        self.forget_stale();
        closed
    }

    /// Removes Disconnected or Failed peers untouched for `forget_after`
    /// with nothing pooled. O(peers).
    fn forget_stale(&self) {
        let now = Instant::now();
        let forget_after = self.config.forget_after;
        self.table.for_each(|peer, info| {
            let stale = matches!(
                info.status,
                ConnectionStatus::Disconnected | ConnectionStatus::Failed
            ) && now.saturating_duration_since(info.since) >= forget_after
                && self.pool.len_for(peer) == 0;
            if stale && self.table.remove_if_status(peer, info.status) {
                self.emit(*peer, Some(info.status), None);
            }
        });
    }
}

/// The reaper: sleeps until the next idle connection expires (or a new one
/// goes idle, or the forget sweep is due), closes what expired, and ends
/// when the manager is dropped or shut down. Holds the manager weakly, and
/// no strong reference across a sleep.
///
/// If the task is dropped before it ends by itself (the runtime that ran it
/// shut down), it clears `reaper_started` on the way out, so the next call
/// made inside a live runtime starts a new reaper.
/// (The guard exists from the moment the future is made, so a task dropped
/// before its first poll clears the flag too.)
fn reaper<D: Dialer>(weak: Weak<Inner<D>>, wake: Arc<Notify>) -> impl Future<Output = ()> {
    let restart = RestartOnDrop(Some(weak.clone()));
    async move {
        reap_until_gone(weak, wake).await;
        restart.disarm();
    }
}

/// Clears the manager's `reaper_started` when dropped armed (see
/// [`reaper`]).
struct RestartOnDrop<D: Dialer>(Option<Weak<Inner<D>>>);

impl<D: Dialer> RestartOnDrop<D> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<D: Dialer> Drop for RestartOnDrop<D> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take().and_then(|weak| weak.upgrade()) {
            inner.reaper_started.store(false, Ordering::Release);
        }
    }
}

async fn reap_until_gone<D: Dialer>(weak: Weak<Inner<D>>, wake: Arc<Notify>) {
    let mut next_sweep = tokio::time::Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.shut_down.load(Ordering::Acquire) {
            return;
        }
        inner.pool.reap();
        let now = tokio::time::Instant::now();
        if now >= next_sweep {
            next_sweep = now + inner.config.forget_after.min(Duration::from_secs(60));
            if inner.table.count(ConnectionStatus::Disconnected) > 0
                || inner.table.count(ConnectionStatus::Failed) > 0
            {
                // O(peers): off the async workers. The strong reference
                // lives only as long as the sweep.
                let sweeper = Arc::clone(&inner);
                drop(inner);
                let _ = tokio::task::spawn_blocking(move || sweeper.forget_stale()).await;
                continue;
            }
        }
        // Leaves a wake-up request when nothing is idle; `Notify` keeps a
        // wake-up that comes before we wait.
        let wake_at = match inner.pool.watch_next_expiry() {
            Some(at) => tokio::time::Instant::from_std(at).min(next_sweep),
            None => next_sweep,
        };
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = wake.notified() => {}
        }
    }
}

/// A dial's outcome channel for [`dial_share`]: tokio's `watch`, whose
/// `changed` reports a value sent after `subscribe`, or the sender's drop.
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

impl DialMap for Sharded<watch::Sender<DialResult>> {
    type Tx = watch::Sender<DialResult>;

    fn with<R>(&self, peer: &PeerId, f: impl FnOnce(&mut HashMap<PeerId, Self::Tx>) -> R) -> R {
        Sharded::with(self, peer, f)
    }
}

/// Puts a peer back to the status it had before a dial that was cancelled.
struct RestoreOnDrop<'a, D: Dialer> {
    inner: &'a Inner<D>,
    peer: PeerId,
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
        let t = &self.inner.table;
        let restored = match self.before {
            Some(before) => t
                .compare_and_set(&self.peer, ConnectionStatus::Connecting, before)
                .is_ok(),
            None => t.remove_if_status(&self.peer, ConnectionStatus::Connecting),
        };
        if restored {
            self.inner
                .emit(self.peer, Some(ConnectionStatus::Connecting), self.before);
        }
    }
}

/// Exclusive use of a peer's live connection; see
/// [`ConnectionManager::lease`]. Dereferences to the connection.
///
/// Dropping it returns the connection (never blocks, never panics, needs
/// no runtime). Dropped while its thread is panicking, the connection is
/// closed and the peer marked Failed: a connection whose user panicked is
/// never handed out again.
pub struct Lease<D: Dialer> {
    inner: Arc<Inner<D>>,
    peer: PeerId,
    /// The id of the live slot the connection came from.
    slot: u64,
    conn: Option<D::Conn>,
}

impl<D: Dialer> Lease<D> {
    /// The peer this connection goes to.
    pub fn peer(&self) -> &PeerId {
        &self.peer
    }

    /// The connection is broken: close it and mark the peer Failed (if
    /// this connection is still the peer's: after a disconnect and a new
    /// connect, the newer connection and its status are left alone).
    pub fn discard(mut self) {
        drop(self.conn.take());
        self.inner.fail_slot(self.peer, self.slot);
        // After `fail_slot`: its lock settled whether the slot left before
        // (and was registered) or with it (and never will be).
        self.inner.take_detached(self.peer, self.slot);
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
        let Some(conn) = self.conn.take() else { return };
        let inner = &*self.inner;
        if std::thread::panicking() {
            drop(conn);
            inner.fail_slot(self.peer, self.slot);
            // After `fail_slot`, as in `discard`.
            inner.take_detached(self.peer, self.slot);
            return;
        }
        // Back into its slot if the peer is still connected by it;
        // otherwise the peer was disconnected while leased: the connection
        // idles, unless the peer was set Failed while leased (whatever its
        // status is now), is Failed or forgotten now, or the manager shut
        // down.
        let homeless = inner
            .live
            .with(&self.peer, |live| match live.get_mut(&self.peer) {
                Some(slot) if slot.id == self.slot && slot.conn.is_none() => {
                    slot.conn = Some(conn);
                    None
                }
                _ => Some(conn),
            });
        if let Some(conn) = homeless {
            // The stamp before the register: a Failed whose locked step
            // came after our `take_detached` (so it could not mark us)
            // counted itself started after the stamp, which
            // `idle_or_close` sees; one whose locked step came before it
            // marked the lease, and `take_detached` says so.
            let stamp = inner.fail_stamp(&self.peer);
            let failed_while_held = inner.take_detached(self.peer, self.slot);
            let pool_at = match inner.table.get(&self.peer) {
                Some(status) if !failed_while_held && status != ConnectionStatus::Failed => {
                    Some(stamp)
                }
                _ => None,
            };
            // After a shutdown, closed there.
            inner.idle_or_close(self.peer, conn, pool_at);
        }
    }
}

impl<D: Dialer> fmt::Debug for Lease<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl<D: Dialer> fmt::Debug for ConnectionManager<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionManager")
            .field("max_connections", &self.inner.admission.max())
            .field("active", &self.inner.admission.in_use())
            .field("idle", &self.inner.pool.len())
            .field("tracked_peers", &self.inner.table.len())
            .field("shut_down", &self.is_shut_down())
            .finish_non_exhaustive()
    }
}

/// Retry schedule of [`ConnectionManager::connect_with_backoff`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Each delay is the previous one times this (at least 1).
    pub multiplier: u32,
    /// Attempts in all, the first included; 0 counts as 1.
    pub max_attempts: u32,
    /// Randomize each delay within its upper half.
    pub jitter: bool,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 30 s, 8 attempts, with jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2,
            max_attempts: 8,
            jitter: true,
        }
    }
}

impl Backoff {
    /// A schedule starting at `initial`, doubling up to `max`, for at most
    /// `max_attempts` attempts, with jitter.
    pub fn new(initial: Duration, max: Duration, max_attempts: u32) -> Self {
        Self {
            initial,
            max,
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// The same schedule without jitter (exact delays, for tests).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }
}
