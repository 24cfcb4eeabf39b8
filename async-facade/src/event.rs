//! Status change notifications.

use std::time::Instant;

use connmgr_core::{ConnectionStatus, PeerId};

/// One status change made by the manager, as broadcast to
/// [`subscribe`](crate::ConnectionManager::subscribe)rs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    /// The peer whose status changed.
    pub peer: PeerId,
    /// Its status before (`None`: the manager did not know the peer).
    pub from: Option<ConnectionStatus>,
    /// Its status after (`None`: the manager forgot the peer, or a
    /// cancelled first `connect` removed the entry it had created).
    pub to: Option<ConnectionStatus>,
    /// When the change was made (the runtime's clock, so paused time in
    /// tests shows here).
    pub at: Instant,
}
