//! The crate's error type.

use std::fmt;

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A [`PoolConfig`](crate::PoolConfig) setting is out of range.
    InvalidConfig {
        /// The name of the offending field of [`PoolConfig`](crate::PoolConfig).
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
