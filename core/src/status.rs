//! `ConnectionStatus` and the one-word encoding of an entry's state.

use std::time::{Duration, Instant};

/// Where a connection to a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionStatus {
    /// The connection is up and usable.
    Connected,
    /// A dial is in progress.
    Connecting,
    /// The connection was closed or lost.
    Disconnected,
    /// The last attempt to connect failed.
    Failed,
}

impl ConnectionStatus {
    /// All statuses, in encoding order.
    pub const ALL: [ConnectionStatus; 4] = [
        ConnectionStatus::Connected,
        ConnectionStatus::Connecting,
        ConnectionStatus::Disconnected,
        ConnectionStatus::Failed,
    ];

    /// Dense index 0..4, the status's position in [`ConnectionStatus::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Lowercase name, as used in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Connected => "connected",
            ConnectionStatus::Connecting => "connecting",
            ConnectionStatus::Disconnected => "disconnected",
            ConnectionStatus::Failed => "failed",
        }
    }

    pub(crate) const fn from_bits(bits: u64) -> Self {
        Self::ALL[(bits & STATUS_MASK) as usize]
    }
}

/// Everything the table knows about one entry, read in a single atomic load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The current status.
    pub status: ConnectionStatus,
    /// A version stamp from the shard's version clock, taken at the insert
    /// and at every status change: unique among the last 2^24 changes in
    /// its shard, so a stale view (even of a key removed and inserted again)
    /// never matches a newer entry within that horizon. Compare it only for
    /// equality.
    pub generation: u32,
    /// When the status last changed (millisecond resolution; saturates about
    /// 4.3 years after the table was created).
    pub since: Instant,
}

// State word layout (one `AtomicU64` per entry):
//   bits 0..2   status
//   bit  2      removed (the entry is logically deleted)
//   bits 3..27  generation (24 bits, wrapping)
//   bits 27..64 milliseconds since the table's origin (37 bits, saturating)
pub(crate) const STATUS_MASK: u64 = 0b11;
pub(crate) const REMOVED: u64 = 0b100;
const GEN_SHIFT: u32 = 3;
pub(crate) const GEN_MASK: u32 = (1 << 24) - 1;
const TIME_SHIFT: u32 = 27;
pub(crate) const TIME_MAX: u64 = (1 << 37) - 1;

pub(crate) const fn pack(status: ConnectionStatus, generation: u32, millis: u64) -> u64 {
    let millis = if millis > TIME_MAX { TIME_MAX } else { millis };
    status as u64 | ((generation & GEN_MASK) as u64) << GEN_SHIFT | millis << TIME_SHIFT
}

pub(crate) const fn is_removed(word: u64) -> bool {
    word & REMOVED != 0
}

pub(crate) const fn generation(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32 & GEN_MASK
}

pub(crate) const fn millis(word: u64) -> u64 {
    word >> TIME_SHIFT
}

/// Milliseconds from `origin` to `now`, saturating at both ends (an earlier
/// `now` gives 0, a far one gives `TIME_MAX`).
pub(crate) fn millis_since(origin: Instant, now: Instant) -> u64 {
    let ms = now.saturating_duration_since(origin).as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX).min(TIME_MAX)
}

pub(crate) fn decode(origin: Instant, word: u64) -> EntryInfo {
    EntryInfo {
        status: ConnectionStatus::from_bits(word),
        generation: generation(word),
        since: origin
            .checked_add(Duration::from_millis(millis(word)))
            .unwrap_or(origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pack_round_trips() {
        let origin = Instant::now();
        for s in ConnectionStatus::ALL {
            let w = pack(s, 12345, 678);
            let info = decode(origin, w);
            assert_eq!(info.status, s);
            assert_eq!(info.generation, 12345);
            assert_eq!(info.since, origin + Duration::from_millis(678));
            assert!(!is_removed(w));
            assert!(is_removed(w | REMOVED));
        }
    }

    proptest! {
        // RELIABILITY 8: instant arithmetic never panics, whatever the order
        // of the instants and however far apart they are.
        #[test]
        fn time_encoding_never_panics(back in 0u64..u64::MAX / 4, fwd in 0u64..u64::MAX / 4, gen in any::<u32>()) {
            let origin = Instant::now();
            let later = origin.checked_add(Duration::from_millis(fwd)).unwrap_or(origin);
            let earlier = origin.checked_sub(Duration::from_millis(back)).unwrap_or(origin);
            prop_assert_eq!(millis_since(origin, earlier), 0);
            let ms = millis_since(origin, later);
            prop_assert!(ms <= TIME_MAX);
            let info = decode(origin, pack(ConnectionStatus::Failed, gen, ms));
            prop_assert!(info.since >= origin);
            prop_assert_eq!(info.generation, gen & GEN_MASK);
            prop_assert_eq!(info.status, ConnectionStatus::Failed);
        }
    }
}
