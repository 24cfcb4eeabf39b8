//! [`State`]: one snapshot of every gauge and limit of a manager.

use crate::limits::Limits;

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
