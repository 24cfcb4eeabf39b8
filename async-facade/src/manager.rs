//! [`ConnectionManager`]: the documented API, a thin layer over the
//! peers' records (`inner`, `peer`, `peers`) and the dial, lease, backoff
//! and reaper modules.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::mem::size_of;
use std::time::Duration;

use connmgr_core::{ConnectionStatus, PeerId, StatusTable};
use connmgr_metrics::{Gauges, Metrics, MetricsConfig, NetworkMetrics, Snapshot};
use connmgr_pool::{IdlePool, PoolConfig};
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use crate::admission::Admission;
use crate::backoff::Backoff;
use crate::close;
use crate::config::{Builder, Config};
use crate::dial_share::{self, Join};
use crate::dialer::{Dialer, NoTransport};
use crate::inner::{event_ring_bytes, Inner, TokioClock};
use crate::lease::Lease;
use crate::peers::Peers;
use crate::reaper::Reapers;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::{Direction, Error, Limit, Reason, Result, StatusEvent};

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
/// expired idle connections and forgets stale peers starts on the first
/// call made inside a tokio runtime, and ends when the last clone is
/// dropped. A manager used from several runtimes runs one reaper on each
/// runtime that pools a connection or sets a peer Disconnected or Failed,
/// so expiry never waits for a runtime that is no longer driven; each
/// sleeps on its own runtime's clock, so paused time drives it.
///
/// # Panicking destructors
///
/// A connection's destructor (and [`Dialer::is_alive`]) is user code. A
/// panic in it never leaves the manager's work half done: it is caught
/// where the manager closes the connection, and the step goes on to the
/// end (statuses set, an event sent for every change, slots freed, the
/// other connections closed). Then [`shutdown`](Self::shutdown),
/// [`disconnect`](Self::disconnect), [`update_status`](Self::update_status),
/// [`reap_now`](Self::reap_now) and [`Lease::discard`] re-raise the first
/// such panic to their caller (`std::panic::resume_unwind`). Where no
/// caller waits on the close (the reaper, a `connect` closing a surplus or
/// stale connection, a [`Lease`]'s drop, the manager's own drop) the panic
/// is dropped after the panic hook has reported it, as it reports any
/// panic; the reaper keeps running. A panicking `is_alive` counts as
/// `false`: the pooled connection is closed and the peer dialed.
///
/// # Cancellation safety
///
/// Every `async` method is cancellation safe: dropping its future at any
/// `.await` leaves no slot taken, no status stuck at `Connecting` and no
/// waiter stranded. A dropped `connect` gives its slot back, restores the
/// peer's previous status, and if other callers were waiting on its dial,
/// one of them takes the dial over.
pub struct ConnectionManager<D: Dialer = NoTransport> {
    pub(crate) inner: Arc<Inner<D>>,
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
        Self {
            inner: Arc::new_cyclic(|me| Inner {
                admission: Admission::new(&config),
                table: StatusTable::new(),
                pool,
                metrics,
                peers: Peers::new(),
                records: AtomicUsize::new(0),
                events,
                subscribers: AtomicU64::new(0),
                silent_at: AtomicU64::new(0),
                shut_down: AtomicBool::new(false),
                next_slot_id: AtomicU64::new(0),
                next_generation: AtomicU64::new(1),
                reapers: Reapers::new(),
                trimming: parking_lot::Mutex::new(()),
                me: me.clone(),
                draws: RandomState::new(),
                kept: Default::default(),
                leases_out: AtomicUsize::new(0),
                lease_returned: tokio::sync::Notify::new(),
                cut_off: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                config,
                dialer,
            }),
        }
    }

    /// A handle on a manager's shared state (a reaper's redial).
    pub(crate) fn from_inner(inner: Arc<Inner<D>>) -> Self {
        Self { inner }
    }

    /// The settings this manager was built with. Its limits are those of
    /// the build; [`limits`](Self::limits) has the limits in force.
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
    /// | adopted while this dial is in flight | the adopted connection is live at once; the dialed one idles in the pool when it lands; `Ok` |
    ///
    /// With [`Builder::wait_for_slot`](crate::Builder::wait_for_slot), a
    /// `connect` that finds `max_connections` or `max_outbound` full
    /// waits for a slot, first come first served, up to that long.
    ///
    /// What `connect` makes live is outbound ([`Direction::Outbound`]),
    /// a reused idle connection included, and counts in `max_connections`
    /// and `max_outbound`; a dial also holds a unit of `max_pending_dials`
    /// until it ends, and its connection a unit of `max_sockets` until it
    /// is closed.
    ///
    /// A dial that fails for want of a file descriptor (`EMFILE`,
    /// `ENFILE`) while idle connections hold some closes the oldest idle
    /// connections (up to 16, of any peer) and dials once more, within the
    /// same dial timeout.
    ///
    /// A pooled connection is reused only if the peer has not failed since
    /// it was pooled: one put before a `Failed` of the peer is closed when
    /// taken, and the peer is dialed. Other peers' failures never affect
    /// it.
    ///
    /// The status is what decides: a peer marked Connected by bookkeeping
    /// alone (`update_status(p, Connected)`) counts as connected, so this
    /// returns `Ok` without dialing, and [`lease`](Self::lease) then fails
    /// with [`Error::NotConnected`].
    ///
    /// **Progress:** waits for the dial (or for the dial another call leads);
    /// every step on the peer's record is a short lock, never held across
    /// an `.await`, and a slot is reserved with one CAS.
    ///
    /// # Errors
    ///
    /// Before anything else, status unchanged: [`Error::Blocked`] for a
    /// blocked peer ([`block`](Self::block)), [`Error::BackingOff`] for a
    /// peer whose last dials failed and whose backoff has not passed
    /// ([`Builder::dial_backoff`](crate::Builder::dial_backoff)). Then
    /// [`Error::LimitReached`] (status unchanged) naming the limit that
    /// refused: [`Limit::Connections`] or [`Limit::Outbound`] before
    /// anything else, then, for a dial, [`Limit::PendingDials`] or
    /// [`Limit::Sockets`] (only when no idle connection is left to close to
    /// make room); [`Error::Dial`] or [`Error::Timeout`] (status Failed)
    /// when the dial fails or outlives the dial timeout, unless an
    /// [`adopt`](Self::adopt) made the peer Connected meanwhile (then
    /// `Ok`); [`Error::ShutDown`] after [`shutdown`](Self::shutdown).
    ///
    /// # Cancellation safety
    ///
    /// Safe: dropping the future gives the slot back and restores the
    /// peer's previous status; waiters on this dial take it over.
    pub async fn connect(&self, peer_id: PeerId) -> Result<()> {
        let span = tracing::debug_span!(target: "connmgr", "connect", peer = %peer_id);
        // With no subscriber interested the span is disabled: the body runs
        // bare, without the span's enter and exit on every poll.
        let outcome = if span.is_disabled() {
            self.connect_in_span(peer_id).await
        } else {
            self.connect_in_span(peer_id).instrument(span.clone()).await
        };
        if let Err(
            e @ (Error::LimitReached { .. }
            | Error::BackingOff { .. }
            | Error::Blocked { .. }
            | Error::ShutDown),
        ) = &outcome
        {
            span.in_scope(|| {
                tracing::debug!(
                    target: "connmgr",
                    peer = %peer_id,
                    reason = %e,
                    "connect refused"
                );
            });
        }
        outcome
    }

    /// `connect`'s body, in its span.
    async fn connect_in_span(&self, peer_id: PeerId) -> Result<()> {
        let inner = &*self.inner;
        self.ensure_reaper();
        let mut key = None;
        loop {
            if inner.shut_down.load(Ordering::Acquire) {
                return Err(Error::ShutDown);
            }
            if inner.table.get(&peer_id) == Some(ConnectionStatus::Connected) {
                return Ok(());
            }
            let key = *key.get_or_insert_with(|| inner.peers.key(peer_id));
            // Join the dial in flight, or become its leader (see
            // `dial_share` for why no waiter is stranded).
            match dial_share::join(inner, key) {
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
                    let outcome = inner.dial_as_leader(key).await;
                    lead.publish(outcome.clone());
                    return outcome;
                }
            }
        }
    }

    /// Takes over a connection the peer opened: the caller accepted it
    /// (and identified the peer), and from now on the manager holds it as
    /// it holds a dialed one (lease it, disconnect it, pool it, trim it).
    ///
    /// | the peer is | what happens |
    /// | --- | --- |
    /// | Connected, with a live connection | `Ok`: that connection stays live; `conn` goes to the idle pool (closed if the pool is full, or if the socket budget is: a duplicate never closes another peer's idle connection) |
    /// | anything else (unknown, Disconnected, Failed, Connecting by bookkeeping) | `conn` becomes the live connection, inbound: Connected, [`Reason::Adopted`] |
    /// | being dialed by `connect` | as above, at once; the dial's connection, when it lands, goes to the idle pool, and the dial's waiters get `Ok` |
    ///
    /// It takes a unit of `max_connections`, then one of `max_inbound`,
    /// then a socket ([`Builder::max_sockets`](crate::Builder::max_sockets):
    /// closing the oldest idle connection when the budget is full), so a
    /// refused adopt closes no idle connection. During a dial to the peer,
    /// the adopt takes over that dial's unit of `max_connections` (so the
    /// peer is counted once, and the adopt is not refused for it); it takes
    /// its `max_inbound` unit and its socket first.
    ///
    /// **Progress:** short holds of the peer's record lock, a CAS per
    /// limit; it never waits.
    ///
    /// # Errors
    ///
    /// `conn` is closed in each case: [`Error::LimitReached`] naming the
    /// limit that refused ([`Limit::Sockets`] when no idle connection is
    /// left to close, [`Limit::Connections`], [`Limit::Inbound`]; the
    /// status is unchanged); [`Error::ShutDown`].
    ///
    /// # Cancellation safety
    ///
    /// Safe: it never waits; the work is done in the first poll.
    pub async fn adopt(&self, peer: PeerId, conn: D::Conn) -> Result<()> {
        self.ensure_reaper();
        close::reraising(|| self.inner.adopt(peer, conn))
    }

    /// Who opened the peer's live connection: `None` if it has none
    /// (a status set by bookkeeping alone has none).
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn direction(&self, peer: &PeerId) -> Option<Direction> {
        self.inner.peers.with(peer, |map| {
            map.get(peer)?.live.as_ref().map(|l| l.direction)
        })
    }

    /// Protects `peer` under `tag`: while any tag protects it, trimming
    /// never closes its connection, and it does not count toward the
    /// watermarks. Protection belongs to the peer, connected or not
    /// (protect a bootstrap peer before dialing it), and keeps it from
    /// being forgotten. Protecting again under the same tag changes
    /// nothing.
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn protect(&self, peer: &PeerId, tag: &str) {
        self.inner.with_record(peer, |r| r.protect(tag));
    }

    /// Removes `peer`'s protection under `tag`; returns whether another tag
    /// still protects it. An unknown peer or tag changes nothing.
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn unprotect(&self, peer: &PeerId, tag: &str) -> bool {
        self.inner
            .with_existing(peer, |r| r.unprotect(tag))
            .unwrap_or(false)
    }

    /// Whether any tag protects `peer`.
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn is_protected(&self, peer: &PeerId) -> bool {
        self.inner
            .with_existing(peer, |r| !r.protections.is_empty())
            .unwrap_or(false)
    }

    /// Sets `peer`'s tag `tag` to `value`. Its [`peer_score`](Self::peer_score)
    /// is the sum of its tags; trimming closes the lowest scores first.
    /// Tags belong to the peer, connected or not, and keep it from being
    /// forgotten until they are removed.
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn tag_peer(&self, peer: &PeerId, tag: &str, value: i32) {
        self.inner.with_record(peer, |r| r.tag(tag, value));
    }

    /// Removes `peer`'s tag `tag`. An unknown peer or tag changes nothing.
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn untag_peer(&self, peer: &PeerId, tag: &str) {
        self.inner.with_existing(peer, |r| r.untag(tag));
    }

    /// Sets `peer`'s tag `tag` to `f(its value)`, `f(0)` if it has none, in
    /// one step: concurrent upserts of a tag never lose one another.
    ///
    /// **Progress:** runs `f` under the peer's record lock, so `f` must be
    /// short and must not call the manager (a call on a peer of the same
    /// shard would deadlock); if it panics, the tag is left as it was.
    pub fn upsert_tag(&self, peer: &PeerId, tag: &str, f: impl FnOnce(i32) -> i32) {
        self.inner.with_record(peer, |r| r.upsert(tag, f));
    }

    /// The sum of `peer`'s tags (0 if it has none).
    ///
    /// **Progress:** a short hold of the peer's record lock.
    pub fn peer_score(&self, peer: &PeerId) -> i64 {
        self.inner.with_existing(peer, |r| r.score).unwrap_or(0)
    }

    /// Trims now, down to the low watermark; returns how many connections
    /// it closed. Nothing without [`Builder::watermarks`](crate::Builder::watermarks),
    /// or after [`shutdown`](Self::shutdown).
    ///
    /// Counted toward the watermarks are Connected peers with a live
    /// connection that no tag protects. Of them, those past their
    /// [`grace_period`](crate::Builder::grace_period) beyond `low` are
    /// closed, lowest [`peer_score`](Self::peer_score) first, skipping
    /// any whose connection is leased right now: each goes Disconnected
    /// ([`Reason::Trimmed`]), and its connection is closed, not pooled.
    /// Connections still in their grace period neither count toward the
    /// excess nor are closed, as in go-libp2p. The background trim does
    /// the same, at most once a second (and at least 20 times its own cost
    /// apart), when more than `high` unprotected peers with a live
    /// connection are Connected (it looks only when more than `high` peers
    /// in all are). One trim runs at a time, so concurrent calls never
    /// close below `low` together.
    ///
    /// **Progress:** waits for a trim in progress; then one pass over the
    /// peer records, each shard's lock held for its pass, a selection of
    /// the lowest scores (O(candidates), no lock held), and a short hold
    /// of each closed peer's record lock. O(records).
    ///
    /// # Cancellation safety
    ///
    /// Safe: it never waits at an `.await`; the work is done in the first
    /// poll.
    pub async fn trim_now(&self) -> usize {
        close::reraising(|| self.inner.trim(false))
    }

    /// Disconnects a Connected peer: its status becomes Disconnected and its
    /// live connection goes to the idle pool (closed instead if the pool is
    /// full). Does nothing for a peer that is not Connected, so calling it
    /// twice, or for an unknown peer, is harmless. That includes a peer
    /// moved off Connected by bookkeeping (`update_status(p, Connecting)`)
    /// whose live connection is still held, with its slot: `connect` takes
    /// it back, `update_status` to Disconnected or Failed retires it.
    ///
    /// **Progress:** one lock-free status read for a peer that is not
    /// Connected; otherwise two short holds of the peer's record lock
    /// around a lock-free pool put.
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
        close::reraising(|| inner.disconnect(inner.peers.key(*peer_id)));
    }

    /// Sets a peer's status as given (bookkeeping, as in the reference).
    /// A dial in flight for the peer still completes and sets it Connected
    /// (or Failed) afterwards: the last word is the dial's.
    ///
    /// Moving a peer to Disconnected pools its live connection, to Failed
    /// closes it, and the peer's idle pooled connections too (a leased one
    /// is closed when its lease is dropped); either frees its slot. Setting
    /// Connected or Connecting opens nothing and takes no slot: limits
    /// apply to [`connect`](Self::connect). Counts stay exact either way.
    /// A Failed touches only this peer: other peers' pooled connections
    /// stay pooled and reusable.
    ///
    /// **Progress:** a short hold of the peer's record lock around one CAS
    /// of its status word; to Disconnected, a pool put and a second short
    /// hold follow it, and to Failed, a drain of the peer's idle
    /// connections. While the manager holds no peer record at all
    /// (bookkeeping alone), a status other than Failed is written
    /// lock-free.
    ///
    /// # Cancellation safety
    ///
    /// Safe: it never waits.
    pub async fn update_status(&self, peer_id: PeerId, status: ConnectionStatus) {
        self.ensure_reaper();
        close::reraising(|| self.inner.set_status(peer_id, status, Reason::Set));
    }

    /// Sets each peer's status as given, in order: exactly what
    /// [`update_status`](Self::update_status) called once per pair does,
    /// with the same events in the same order, in one call.
    ///
    /// **Progress:** as `update_status`, per pair.
    ///
    /// # Panics
    ///
    /// A connection destructor's panic is caught, the batch goes on to
    /// the end, then the first such panic is re-raised (see
    /// [Panicking destructors](Self#panicking-destructors)).
    ///
    /// # Cancellation safety
    ///
    /// Safe: it never waits; the whole batch is applied in the first poll.
    pub async fn update_statuses(
        &self,
        batch: impl IntoIterator<Item = (PeerId, ConnectionStatus)>,
    ) {
        self.ensure_reaper();
        close::reraising(|| {
            for (peer, status) in batch {
                self.inner.set_status(peer, status, Reason::Set);
            }
        });
    }

    /// The status of each of `peers`, in order: what
    /// [`get_status`](Self::get_status) answers for each, in one pass
    /// (`StatusTable::get_many`: one epoch pin for the batch, the lookups
    /// interleaved so their cache misses overlap).
    ///
    /// **Progress:** wait-free, no lock, as `get_status`.
    pub async fn get_statuses(&self, peers: &[PeerId]) -> Vec<Option<ConnectionStatus>> {
        let mut out = Vec::with_capacity(peers.len());
        self.inner.table.get_many(peers, &mut out);
        out
    }

    /// The peers whose status is `status` now, in no particular order.
    ///
    /// **Progress:** lock-free: one walk of the status table, O(tracked
    /// peers). A peer whose status changes during the walk may be listed
    /// or not.
    pub fn peers(&self, status: ConnectionStatus) -> Vec<PeerId> {
        let mut out = Vec::with_capacity(self.inner.table.count(status));
        self.inner.table.for_each(|peer, info| {
            if info.status == status {
                out.push(*peer);
            }
        });
        out
    }

    /// The peer's status, if the manager knows it.
    ///
    /// **Progress:** wait-free, no lock: one hash, an epoch pin and one
    /// atomic load of the peer's state word (see `StatusTable::get`).
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
    /// idle pool's bookkeeping, the metrics stripes, the peer records (the
    /// map's capacity, and each record's dial and watch channels,
    /// estimated), and the status event ring (its per-slot bookkeeping
    /// estimated), each computed from its capacity (the connections
    /// themselves, and allocator overhead, are not counted).
    ///
    /// **Progress:** takes each shard lock of the peer records in turn,
    /// O(records).
    pub fn memory_usage(&self) -> usize {
        let i = &*self.inner;
        size_of::<Inner<D>>()
            + i.table.memory_usage()
            + i.pool.memory_usage()
            + i.metrics.memory_usage()
            + i.records_memory()
            + event_ring_bytes(i.config.event_capacity)
    }

    /// Connections connecting or connected (slots in use).
    pub fn active(&self) -> usize {
        self.inner.admission.in_use(Limit::Connections)
    }

    /// Units of `limit` in use now: connecting and connected peers
    /// ([`Limit::Connections`]), established inbound connections,
    /// outbound ones connecting or connected, dials in flight, or open
    /// connections (live, leased, idle, being dialed: [`Limit::Sockets`]).
    /// Never above the limit's setting.
    ///
    /// **Progress:** wait-free, one atomic load.
    pub fn in_use(&self, limit: Limit) -> usize {
        self.inner.admission.in_use(limit)
    }

    /// Idle connections in the pool.
    pub fn idle(&self) -> usize {
        self.inner.pool.len()
    }

    /// Dials in flight: calls to the dialer not yet returned (a dial
    /// shared by several `connect`s counts once), the units of
    /// [`Limit::PendingDials`] in use.
    ///
    /// **Progress:** wait-free, one atomic load.
    pub fn pending_dials(&self) -> usize {
        self.inner.admission.in_use(Limit::PendingDials)
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

    /// The status of one peer, now and as it changes. The watch lives in
    /// the peer's record until its receivers are all gone and a sweep of
    /// its shard frees it.
    ///
    /// **Progress:** a short hold of the peer's record lock; now and then
    /// (once the watches made since the last sweep are more than half the
    /// shard's records) the call also sweeps the shard's records for
    /// abandoned watches under the same lock, O(records of the shard), so
    /// amortized O(1) per call.
    pub fn watch(&self, peer: &PeerId) -> watch::Receiver<Option<ConnectionStatus>> {
        self.inner.watch(*peer)
    }

    /// Exclusive use of a Connected peer's live connection until the lease
    /// is dropped, when it goes back; if the peer was disconnected
    /// meanwhile, it goes to the idle pool instead, unless the peer was set
    /// Failed while this lease held it (even if reconnected or set
    /// Disconnected since), is Failed or forgotten now, or the manager shut
    /// down: then it is closed. Not async: it never waits.
    ///
    /// A lease dropped in the middle of an operation must not give its
    /// connection back: the connection is mid-message. Reads and writes
    /// through the lease itself are tracked, and a lease dropped with one
    /// cut short closes its connection (the peer goes Disconnected); see
    /// [`Lease`] for what the lease cannot see, and the cancellation-safe
    /// pattern.
    ///
    /// **Progress:** a short hold of the peer's record lock (dropping the
    /// lease takes it once more, and puts in the pool lock-free).
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] if the peer has no live connection,
    /// [`Error::Busy`] if it is leased already, [`Error::ShutDown`].
    pub fn lease(&self, peer: &PeerId) -> Result<Lease<D>> {
        Lease::take(&self.inner, peer)
    }

    /// [`connect`](Self::connect), retried with exponential backoff and
    /// jitter on dial errors, timeouts and a full limit. Stops at once on
    /// [`Error::ShutDown`] and on [`Error::Blocked`].
    ///
    /// It combines with the manager's own per-peer dial backoff
    /// ([`Builder::dial_backoff`](crate::Builder::dial_backoff)) this way:
    /// a `connect` refused with [`Error::BackingOff`] is not an attempt
    /// (nothing was dialed); the helper sleeps until the peer's backoff
    /// ends and tries again. So every attempt is a dial (or a pool hit, or
    /// a limit refusal), made no sooner than both schedules allow: the
    /// helper's sleeps bound how fast this caller retries, the peer's
    /// backoff how fast all callers together redial the peer.
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
        let mut sleeps = backoff.sleeps(RandomState::new().hash_one(peer));
        let mut attempt = 0;
        loop {
            let sleep = match self.connect(peer).await {
                Ok(()) => return Ok(()),
                Err(e @ (Error::ShutDown | Error::Blocked { .. })) => return Err(e),
                Err(Error::BackingOff { until, .. }) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
                    continue;
                }
                Err(e) if attempt + 1 >= backoff.max_attempts => {
                    return Err(Error::GaveUp {
                        attempts: attempt + 1,
                        last: Box::new(e),
                    })
                }
                Err(_) => sleeps.next().unwrap_or(backoff.max),
            };
            attempt += 1;
            tokio::time::sleep(sleep).await;
        }
    }

    /// Closes every connection and stops the reaper (see
    /// [`shutdown_gracefully`](Self::shutdown_gracefully) to let the
    /// leases out finish first). Afterwards every call
    /// that would open or lease a connection fails with
    /// [`Error::ShutDown`]; statuses and metrics stay readable. Connected
    /// peers become Disconnected; dials in flight are dropped when they
    /// complete; a leased connection is closed when its lease is dropped
    /// (the lease keeps it usable until then). Idempotent.
    ///
    /// # Panics
    ///
    /// If a connection's destructor panics, the panic is caught and
    /// shutdown goes on to the end: every other connection is closed, every
    /// Connected peer is Disconnected (with its event), the pool is empty.
    /// Then the first such panic is re-raised to the caller. See
    /// [Panicking destructors](Self#panicking-destructors).
    ///
    /// # Cancellation safety
    ///
    /// Safe: it never waits.
    pub async fn shutdown(&self) {
        let inner = &*self.inner;
        if inner.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        close::reraising(|| inner.close_all());
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
        close::reraising(|| self.inner.reap())
    }

    /// Starts a reaper on the runtime this runs in, unless it has one
    /// (see `Inner::ensure_reaper`).
    fn ensure_reaper(&self) {
        self.inner.ensure_reaper(true);
    }
}

impl<D: Dialer> fmt::Debug for ConnectionManager<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionManager")
            .field(
                "max_connections",
                &self.inner.admission.limits().max_connections,
            )
            .field("active", &self.inner.admission.in_use(Limit::Connections))
            .field("idle", &self.inner.pool.len())
            .field("tracked_peers", &self.inner.table.len())
            .field("shut_down", &self.is_shut_down())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
#[path = "manager_tests.rs"]
mod tests;
