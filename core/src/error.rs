//! The crate's one error type.

use std::fmt;

use crate::EntryInfo;

/// Everything that can go wrong in `connmgr-core`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The key is not in the table.
    NotFound,
    /// A conditional update found the entry in another state.
    Conflict {
        /// What the entry held when the update was refused.
        actual: EntryInfo,
    },
    /// `try_insert` found the key already present.
    Occupied {
        /// The entry that is there.
        actual: EntryInfo,
    },
    /// A peer id string did not have 64 characters.
    PeerIdLength {
        /// How many characters it had.
        found: usize,
    },
    /// A peer id string had a character that is not a hex digit.
    PeerIdDigit {
        /// Zero-based character position.
        index: usize,
        /// The offending character.
        found: char,
    },
    /// A table layout setting was out of range.
    InvalidConfig {
        /// The setting's name.
        setting: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("no entry for this key"),
            Error::Conflict { actual } => write!(
                f,
                "the entry is {:?} (generation {}), not in the expected state",
                actual.status, actual.generation
            ),
            Error::Occupied { actual } => {
                write!(f, "the key is already present as {:?}", actual.status)
            }
            Error::PeerIdLength { found } => write!(
                f,
                "a peer id is 64 hex characters (32 bytes), got {found} characters"
            ),
            Error::PeerIdDigit { index, found } => {
                write!(
                    f,
                    "invalid hex digit {found:?} at position {index} of a peer id"
                )
            }
            Error::InvalidConfig { setting, expected } => {
                write!(f, "invalid `{setting}`: it must be {expected}")
            }
        }
    }
}

impl std::error::Error for Error {}
