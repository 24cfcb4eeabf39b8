//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in this crate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A [`MetricsConfig`](crate::MetricsConfig) setting is out of range.
    InvalidConfig {
        /// The field of [`MetricsConfig`](crate::MetricsConfig) at fault, e.g. `"window"`.
        setting: &'static str,
        /// What it must be instead.
        reason: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { setting, reason } => {
                write!(f, "invalid metrics configuration: `{setting}` {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}
