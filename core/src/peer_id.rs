//! `PeerId`: the 32-byte identity of a remote peer.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::str::FromStr;

use crate::Error;

/// The 32-byte identity of a remote peer.
///
/// Displayed and parsed as 64 lowercase hex characters (parsing also accepts
/// uppercase).
///
/// ```
/// use connmgr_core::PeerId;
///
/// let id = PeerId::from_bytes([7; 32]);
/// let text = id.to_string();
/// assert_eq!(text.len(), 64);
/// assert_eq!(text.parse::<PeerId>().unwrap(), id);
/// assert!("not hex".parse::<PeerId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PeerId([u8; 32]);

/// Feeds the 32 bytes to the hasher in one `write`, without the length
/// prefix a derived `Hash` of an array adds: the length is fixed, and the
/// keyed hash is on every table operation's path (one SipHash block less).
impl Hash for PeerId {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl PeerId {
    /// Length of a peer id in bytes.
    pub const LEN: usize = 32;

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fresh id that is unpredictable to other processes and distinct
    /// from every other id this process makes.
    ///
    /// The bytes come from SipHash keyed by std's per-process random keys
    /// (seeded from the OS) over a process-wide counter. That is enough for
    /// tests, demos and ephemeral node ids; it is **not** a source of key
    /// material, so never derive cryptographic secrets from it.
    pub fn random() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        // A plain std atomic on purpose: this counter only needs to be
        // unique, it guards no memory and is not part of any loom model.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let keys = RandomState::new();
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            let mut h = keys.build_hasher();
            h.write_u64(n);
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        Self(out)
    }
}

impl From<[u8; 32]> for PeerId {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl AsRef<[u8]> for PeerId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        // Every byte written above is an ASCII hex digit.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let len = s.chars().count();
        if len != 64 {
            return Err(Error::PeerIdLength { found: len });
        }
        // By character, so a non-ASCII character is named as the bad digit
        // it is (at its character index), not miscounted as a length error.
        if let Some((index, found)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(Error::PeerIdDigit { index, found });
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(Error::PeerIdDigit {
                index: 2 * i,
                found: char::from(pair[0]),
            })?;
            let lo = hex_value(pair[1]).ok_or(Error::PeerIdDigit {
                index: 2 * i + 1,
                found: char::from(pair[1]),
            })?;
            out[i] = hi << 4 | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 37) as u8;
        }
        let id = PeerId::from_bytes(bytes);
        let s = id.to_string();
        assert_eq!(&s[..6], "00254a");
        assert_eq!(s.parse::<PeerId>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<PeerId>().unwrap(), id);
        assert_eq!(format!("{id:?}"), format!("PeerId({s})"));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = "abc".parse::<PeerId>().unwrap_err();
        assert_eq!(err, Error::PeerIdLength { found: 3 });
        assert_eq!(
            err.to_string(),
            "a peer id is 64 hex characters (32 bytes), got 3 characters"
        );
        let mut s = "0".repeat(64);
        s.replace_range(10..11, "g");
        let err = s.parse::<PeerId>().unwrap_err();
        assert_eq!(
            err,
            Error::PeerIdDigit {
                index: 10,
                found: 'g'
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid hex digit 'g' at position 10 of a peer id"
        );
        // 64 bytes but fewer characters: counted in characters, not bytes.
        let s = format!("{}é", "0".repeat(62));
        assert_eq!(s.len(), 64);
        assert_eq!(
            s.parse::<PeerId>().unwrap_err(),
            Error::PeerIdLength { found: 63 }
        );
        // 64 characters, one of them not ASCII: a bad digit at its
        // character index, not a length error saying "got 64".
        let s = format!("{}é{}", "0".repeat(5), "0".repeat(58));
        assert_eq!(s.chars().count(), 64);
        assert_eq!(
            s.parse::<PeerId>().unwrap_err(),
            Error::PeerIdDigit {
                index: 5,
                found: 'é'
            }
        );
    }

    #[test]
    fn random_ids_differ() {
        let a = PeerId::random();
        let b = PeerId::random();
        assert_ne!(a, b);
        assert_ne!(a, PeerId::default());
    }
}
