//! Pool configuration and the crate's error type.

use std::fmt;
use std::time::Duration;

/// Settings of an [`IdlePool`](crate::IdlePool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// How long a connection may stay idle before it expires. Must be
    /// greater than zero.
    pub ttl: Duration,
    /// Most idle connections kept for one key. From 1 to
    /// [`MAX_CAP`](Self::MAX_CAP).
    pub max_idle_per_key: usize,
    /// Most idle connections kept in the whole pool. From 1 to
    /// [`MAX_CAP`](Self::MAX_CAP).
    pub max_idle_total: usize,
}

impl Default for PoolConfig {
    /// TTL 300 s, 8 per key, 65 536 in total.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_idle_per_key: 8,
            max_idle_total: 65_536,
        }
    }
}

impl PoolConfig {
    /// Largest accepted cap (2^30): per-key counts are packed into 32-bit
    /// fields.
    pub const MAX_CAP: usize = 1 << 30;

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.ttl.is_zero() {
            return Err(Error::InvalidConfig {
                setting: "ttl",
                reason: "must be greater than zero",
            });
        }
        for (setting, value) in [
            ("max_idle_per_key", self.max_idle_per_key),
            ("max_idle_total", self.max_idle_total),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    setting,
                    reason: "must be at least 1",
                });
            }
            if value > Self::MAX_CAP {
                return Err(Error::InvalidConfig {
                    setting,
                    reason: "must be at most 2^30",
                });
            }
        }
        Ok(())
    }
}

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A [`PoolConfig`] setting is out of range.
    InvalidConfig {
        /// The name of the offending field of [`PoolConfig`].
        setting: &'static str,
        /// What the setting must satisfy.
        reason: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { setting, reason } => {
                write!(f, "invalid pool configuration: `{setting}` {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}
