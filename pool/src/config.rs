//! Pool configuration.

use std::time::Duration;

use crate::Error;

/// Settings of an [`IdlePool`](crate::IdlePool).
///
/// Start from [`Default`] and change what you need with the `with_*`
/// setters; [`IdlePool::with_config`](crate::IdlePool::with_config)
/// validates the result.
///
/// ```
/// use connmgr_pool::PoolConfig;
/// use std::time::Duration;
///
/// let config = PoolConfig::default()
///     .with_ttl(Duration::from_secs(30))
///     .with_max_idle_per_key(2);
/// assert_eq!(config.ttl, Duration::from_secs(30));
/// assert_eq!(config.max_idle_total, PoolConfig::default().max_idle_total);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

    /// Sets [`ttl`](Self::ttl).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`max_idle_per_key`](Self::max_idle_per_key).
    #[must_use]
    pub fn with_max_idle_per_key(mut self, max: usize) -> Self {
        self.max_idle_per_key = max;
        self
    }

    /// Sets [`max_idle_total`](Self::max_idle_total).
    #[must_use]
    pub fn with_max_idle_total(mut self, max: usize) -> Self {
        self.max_idle_total = max;
        self
    }

    /// Checks every setting, naming the first one that is out of range.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the setting.
    ///
    /// **Progress:** wait-free.
    pub fn validate(&self) -> Result<(), Error> {
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
