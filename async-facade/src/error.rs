//! The crate's one error type.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use connmgr_core::PeerId;

use crate::sync::Arc;

/// Everything a [`ConnectionManager`](crate::ConnectionManager) call can fail
/// with. Cloneable, so the outcome of one shared dial reaches every caller
/// that waited on it.
///
/// `Display` describes this error alone; the error that caused it (the
/// dialer's, or the last attempt's) is its
/// [`source`](std::error::Error::source), so a reporter that prints the
/// chain (anyhow's `{:#}`, say) shows each cause once.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// A limit refused the connection: `limit` names which, `max` is its
    /// value in force (see
    /// [`set_limits`](crate::ConnectionManager::set_limits)). A refused [`adopt`](crate::ConnectionManager::adopt)
    /// closes the connection it was given.
    LimitReached {
        /// The limit that refused.
        limit: Limit,
        /// Its value in force, as the refused admission loaded it.
        max: usize,
    },
    /// The dialer failed to open a connection.
    Dial {
        /// The peer being dialed.
        peer: PeerId,
        /// What the dialer reported.
        source: Arc<io::Error>,
    },
    /// The dial did not finish within the dial timeout.
    Timeout {
        /// The peer being dialed.
        peer: PeerId,
        /// The timeout that expired.
        after: Duration,
    },
    /// The peer's last dials failed and its backoff has not passed yet
    /// (see [`Builder::dial_backoff`](crate::Builder::dial_backoff)):
    /// `connect` did not dial, and took no slot.
    BackingOff {
        /// The peer asked for.
        peer: PeerId,
        /// When the peer may be dialed again (the runtime's clock).
        until: Instant,
    },
    /// The peer is blocked ([`block`](crate::ConnectionManager::block)):
    /// it is not dialed, and a connection it opened is not adopted.
    Blocked {
        /// The peer asked for.
        peer: PeerId,
    },
    /// The manager was shut down.
    ShutDown,
    /// The peer has no live connection to lease.
    NotConnected {
        /// The peer asked for.
        peer: PeerId,
    },
    /// The peer's connection is leased to someone else right now.
    Busy {
        /// The peer asked for.
        peer: PeerId,
    },
    /// A builder setting was out of range.
    InvalidConfig {
        /// The setting's name, as the builder method is called.
        setting: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The reconnect helper ran out of attempts.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<Error>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LimitReached { limit, max } => {
                let what = match limit {
                    Limit::Connections => "connections are connecting or connected",
                    Limit::Inbound => "inbound connections are established",
                    Limit::Outbound => "outbound connections are connecting or connected",
                    Limit::PendingDials => "dials are in flight",
                    Limit::Sockets => "connections are open and none of them is idle",
                };
                write!(f, "{limit} limit reached: {max} {what}")
            }
            Error::Dial { peer, .. } => write!(f, "dialing peer {peer} failed"),
            Error::Timeout { peer, after } => {
                write!(f, "dialing peer {peer} timed out after {after:?}")
            }
            Error::BackingOff { peer, .. } => {
                write!(f, "peer {peer} is backing off after failed dials")
            }
            Error::Blocked { peer } => write!(f, "peer {peer} is blocked"),
            Error::ShutDown => f.write_str("the connection manager has been shut down"),
            Error::NotConnected { peer } => write!(f, "peer {peer} has no live connection"),
            Error::Busy { peer } => {
                write!(f, "the connection to peer {peer} is leased to another task")
            }
            Error::InvalidConfig { setting, expected } => {
                write!(f, "invalid `{setting}`: it must be {expected}")
            }
            Error::GaveUp { attempts, .. } => {
                let s = if *attempts == 1 { "" } else { "s" };
                write!(f, "gave up connecting after {attempts} attempt{s}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Dial { source, .. } => Some(&**source),
            Error::GaveUp { last, .. } => Some(&**last),
            _ => None,
        }
    }
}

/// The limit a [`Error::LimitReached`] names: each is a builder setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// `max_connections`: connecting and connected peers, either direction.
    Connections,
    /// `max_inbound`: established inbound connections (made live by
    /// `adopt`).
    Inbound,
    /// `max_outbound`: outbound connections, connecting or connected (made
    /// live by `connect`).
    Outbound,
    /// `max_pending_dials`: dials in flight.
    PendingDials,
    /// `max_sockets`: every connection the manager holds open (live,
    /// leased, idle, being dialed).
    Sockets,
}

impl Limit {
    /// The builder setting that sets this limit.
    pub fn setting(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::Inbound => "max_inbound",
            Limit::Outbound => "max_outbound",
            Limit::PendingDials => "max_pending_dials",
            Limit::Sockets => "max_sockets",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.setting())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
