//! Status change notifications, and why each change was made.

use std::fmt;
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
    /// Why the status changed.
    pub reason: Reason,
    /// When the change was made (the runtime's clock, so paused time in
    /// tests shows here).
    pub at: Instant,
}

/// Why a peer's status changed: every [`StatusEvent`] carries one. An
/// idle connection's expiry changes no status, so it has no event and no
/// reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// `connect` started a dial (Connecting), or its dial landed
    /// (Connected).
    Dialed,
    /// `connect` made a connection the manager already held live again:
    /// an idle pooled one, or a live one kept while bookkeeping had moved
    /// the status off Connected.
    Pooled,
    /// `adopt` made a connection the peer opened live (Connected, inbound).
    Adopted,
    /// `disconnect` pooled the live connection.
    Disconnected,
    /// Trimming (`trim_now`, or the background trim above the high
    /// watermark) closed the live connection.
    Trimmed,
    /// The dial failed (Failed).
    DialFailed,
    /// The dial outlived the dial timeout (Failed).
    TimedOut,
    /// The `connect` that dialed was dropped mid-dial: the status it had
    /// before is restored (or the peer's entry removed, if it had none).
    Cancelled,
    /// `update_status` set it.
    Set,
    /// A lease was discarded, or dropped while its thread panicked: the
    /// connection is closed, the peer Failed. Or a lease was dropped with a
    /// read or write through it cut short: the connection is closed, the
    /// peer Disconnected.
    Discarded,
    /// `shutdown` closed the live connection, or a dial that landed after
    /// it found the manager shut down.
    ShutDown,
    /// `block` closed the live connection, or a dial that landed after it
    /// found the peer blocked.
    Blocked,
    /// The reaper forgot a peer Disconnected or Failed for
    /// `forget_after` (the status goes to `None`).
    Forgotten,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Dialed => "dialed",
            Reason::Pooled => "reused a held connection",
            Reason::Adopted => "adopted an inbound connection",
            Reason::Disconnected => "disconnected",
            Reason::Trimmed => "trimmed",
            Reason::DialFailed => "dial failed",
            Reason::TimedOut => "dial timed out",
            Reason::Cancelled => "connect cancelled",
            Reason::Set => "set by update_status",
            Reason::Discarded => "lease discarded",
            Reason::ShutDown => "shut down",
            Reason::Blocked => "blocked",
            Reason::Forgotten => "forgotten",
        })
    }
}
