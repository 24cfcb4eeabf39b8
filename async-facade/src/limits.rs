//! [`Limits`]: the limits a manager enforces, changeable at runtime.

use crate::config::Config;
use crate::dialer::Dialer;
use crate::ConnectionManager;
use crate::Result;
use crate::{Error, Limit};

/// The limits a manager enforces: read with
/// [`limits`](crate::ConnectionManager::limits), changed at runtime with
/// [`set_limits`](crate::ConnectionManager::set_limits). A plain struct:
/// build it whole, or start from the limits in force or from
/// [`Limits::new`] and change the fields you need:
///
/// ```
/// use connmgr::{ConnectionManager, Limits};
///
/// let manager = ConnectionManager::new(100);
/// let mut limits = manager.limits();
/// limits.max_connections = 50;
/// manager.set_limits(limits).unwrap();
/// assert_eq!(manager.limits().max_connections, 50);
/// assert_eq!(Limits::new(8).max_sockets, 16);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections connecting or connected at once, either direction.
    pub max_connections: usize,
    /// Most established inbound connections (made live by `adopt`).
    pub max_inbound: usize,
    /// Most outbound connections, connecting or connected.
    pub max_outbound: usize,
    /// Most dials in flight.
    pub max_pending_dials: usize,
    /// Most connections held open (live, leased, idle, being dialed); at
    /// least `max_connections`.
    pub max_sockets: usize,
    /// `(low, high)` trimming watermarks, `low < high <= max_connections`;
    /// `None`: no trimming.
    pub watermarks: Option<(usize, usize)>,
}

impl Limits {
    /// `max_connections`, with every limit by kind at the builder's
    /// default: inbound, outbound and pending dials at `max_connections`,
    /// sockets at twice it, no watermarks.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            max_inbound: max_connections,
            max_outbound: max_connections,
            max_pending_dials: max_connections,
            max_sockets: max_connections.saturating_mul(2),
            watermarks: None,
        }
    }

    /// The limits a [`Config`] sets.
    pub(crate) fn of(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections,
            max_inbound: config.max_inbound,
            max_outbound: config.max_outbound,
            max_pending_dials: config.max_pending_dials,
            max_sockets: config.max_sockets,
            watermarks: config.watermarks,
        }
    }

    /// The maximum of `limit`.
    pub fn max(&self, limit: Limit) -> usize {
        match limit {
            Limit::Connections => self.max_connections,
            Limit::Inbound => self.max_inbound,
            Limit::Outbound => self.max_outbound,
            Limit::PendingDials => self.max_pending_dials,
            Limit::Sockets => self.max_sockets,
        }
    }

    /// The checks `Builder::build` makes of these settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the first setting out of range.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let (low, high) = self.watermarks.unwrap_or((0, 1));
        let checks: [(bool, &'static str, &'static str); 7] = [
            (self.max_connections > 0, "max_connections", "at least 1"),
            (self.max_inbound > 0, "max_inbound", "at least 1"),
            (self.max_outbound > 0, "max_outbound", "at least 1"),
            (
                self.max_pending_dials > 0,
                "max_pending_dials",
                "at least 1",
            ),
            (
                self.max_sockets >= self.max_connections,
                "max_sockets",
                "at least max_connections",
            ),
            (low < high, "watermarks", "low below high"),
            (
                high <= self.max_connections,
                "watermarks",
                "high at most max_connections",
            ),
        ];
        match checks.iter().find(|(ok, _, _)| !ok) {
            Some(&(_, setting, expected)) => Err(Error::InvalidConfig { setting, expected }),
            None => Ok(()),
        }
    }
}

impl<D: Dialer> ConnectionManager<D> {
    /// The limits in force: those of the build until
    /// [`set_limits`](Self::set_limits) changes them.
    ///
    /// **Progress:** wait-free (an `ArcSwap` load).
    pub fn limits(&self) -> Limits {
        self.inner.admission.limits()
    }

    /// Puts new limits in force, at runtime.
    ///
    /// The limit in force for an admission (a `connect`'s slot, its dial's
    /// pending unit and socket, an `adopt`) is the one it loads as it
    /// takes its units: every
    /// admission that starts after this call returns checks the new
    /// limits, and none ever takes a unit beyond the limit it checked. A
    /// lowered limit refuses new work at once and closes nothing: the
    /// connections open above it stay until they close by themselves (or
    /// trimming closes them, if the new watermarks say so: a trim is due
    /// at once). A raised limit admits at once, and wakes the first
    /// [`wait_for_slot`](crate::Builder::wait_for_slot) waiter to look.
    ///
    /// [`config`](Self::config) keeps the limits of the build.
    ///
    /// **Progress:** lock-free (an `ArcSwap` store); waking the reapers
    /// takes a short lock.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the first setting out of range, as
    /// [`Builder::build`](crate::Builder::build) checks it: the limits in
    /// force are then left as they were.
    pub fn set_limits(&self, limits: Limits) -> Result<()> {
        limits.validate()?;
        self.inner.admission.set_limits(limits);
        if self.inner.over_high() {
            self.inner.reapers.wake_all();
        }
        Ok(())
    }
}
