//! [`State`]: one snapshot of every gauge and limit of a manager.

use connmgr_core::ConnectionStatus;

use crate::dialer::Dialer;
use crate::limits::Limits;
use crate::{ConnectionManager, Limit};

/// Every gauge and limit of a manager, read together by
/// [`state`](crate::ConnectionManager::state).
///
/// Each figure is read with one or a few atomic loads, one after the
/// other, while the manager keeps running: under concurrent changes two
/// figures may come from slightly different moments (a peer counted
/// Connecting in `connecting` and, a moment later, in `active`). Once
/// activity stops, the figures are exact and consistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct State {
    /// Peers with status Connected.
    pub connected: usize,
    /// Peers with status Connecting.
    pub connecting: usize,
    /// Peers with status Disconnected.
    pub disconnected: usize,
    /// Peers with status Failed.
    pub failed: usize,
    /// Peers with a status entry.
    pub tracked_peers: usize,
    /// Units of `max_connections` in use: connecting and connected.
    pub active: usize,
    /// Units of `max_inbound` in use: established inbound connections.
    pub inbound: usize,
    /// Units of `max_outbound` in use: outbound connections, connecting or
    /// connected.
    pub outbound: usize,
    /// Units of `max_pending_dials` in use: dials in flight.
    pub pending_dials: usize,
    /// Units of `max_sockets` in use: connections held open.
    pub sockets: usize,
    /// Idle connections in the pool.
    pub idle: usize,
    /// `connect`s waiting for a slot
    /// ([`wait_for_slot`](crate::Builder::wait_for_slot)).
    pub waiting_for_slot: usize,
    /// Peers kept connected by
    /// [`keep_connected`](crate::ConnectionManager::keep_connected).
    pub kept: usize,
    /// Bytes held by the manager's own structures (see
    /// [`memory_usage`](crate::ConnectionManager::memory_usage)).
    pub memory_usage: usize,
    /// The limits in force.
    pub limits: Limits,
    /// Whether the manager was shut down.
    pub shut_down: bool,
}

impl<D: Dialer> ConnectionManager<D> {
    /// Every gauge and limit, in one snapshot (see [`State`] for how
    /// exact it is under concurrent changes).
    ///
    /// **Progress:** O(shards + stripes) atomic loads for the counts; the
    /// memory figure takes each shard lock of the peer records in turn
    /// (O(records), see [`memory_usage`](Self::memory_usage)).
    pub fn state(&self) -> State {
        let (t, a) = (&self.inner.table, &self.inner.admission);
        State {
            connected: t.count(ConnectionStatus::Connected),
            connecting: t.count(ConnectionStatus::Connecting),
            disconnected: t.count(ConnectionStatus::Disconnected),
            failed: t.count(ConnectionStatus::Failed),
            tracked_peers: t.len(),
            active: a.in_use(Limit::Connections),
            inbound: a.in_use(Limit::Inbound),
            outbound: a.in_use(Limit::Outbound),
            pending_dials: a.in_use(Limit::PendingDials),
            sockets: a.in_use(Limit::Sockets),
            idle: self.inner.pool.len(),
            waiting_for_slot: a.waiting(),
            kept: self.inner.kept.len(),
            memory_usage: self.memory_usage(),
            limits: a.limits(),
            shut_down: self.is_shut_down(),
        }
    }
}
