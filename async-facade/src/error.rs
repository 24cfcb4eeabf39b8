//! The crate's one error type.

use std::fmt;
use std::io;
use std::time::Duration;

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
    /// `max_connections` (connecting + connected) are in use.
    LimitReached {
        /// The configured limit.
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
            Error::LimitReached { max } => {
                write!(
                    f,
                    "connection limit reached: {max} connections are connecting or connected"
                )
            }
            Error::Dial { peer, .. } => write!(f, "dialing peer {peer} failed"),
            Error::Timeout { peer, after } => {
                write!(f, "dialing peer {peer} timed out after {after:?}")
            }
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

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
