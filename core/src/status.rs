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
    /// A version stamp of the key: an insert takes the next tick of its
    /// shard's clock, every status change adds one, and a removal moves the
    /// clock past the removed entry's stamp, so a key inserted again starts
    /// beyond every stamp its removed entry had. A stale view (even of a key
    /// removed and inserted again) therefore does not match a newer entry,
    /// within the limits of a 24-bit stamp that wraps: a stale view can
    /// match again once the key has changed about 2^23 times, or once its
    /// shard's clock (one tick per insert of any key in the shard) has run
    /// 2^24 ticks between the view and a re-insert. Compare it only for
    /// equality.
    pub generation: u32,
    /// When the status last changed, to the resolution of the coarse
    /// monotonic clock (1-4 ms on Linux, where reading it costs a few ns
    /// instead of ~20; std's `Instant` in milliseconds elsewhere). Saturates
    /// about 2.2 years after the table was created.
    pub since: Instant,
}

// State word layout (one `AtomicU64` per entry):
//   bits 0..2   status
//   bit  2      removed (the entry is logically deleted)
//   bit  3      frozen (a rebuild has copied the entry to a new array)
//   bits 4..28  generation (24 bits, wrapping)
//   bits 28..64 milliseconds since the table's origin (36 bits, saturating)
pub(crate) const STATUS_MASK: u64 = 0b11;
pub(crate) const REMOVED: u64 = 0b100;
pub(crate) const FROZEN: u64 = 0b1000;
const GEN_SHIFT: u32 = 4;
pub(crate) const GEN_MASK: u32 = (1 << 24) - 1;
const TIME_SHIFT: u32 = 28;
pub(crate) const TIME_MAX: u64 = (1 << 36) - 1;

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

/// Nanoseconds on the monotonic clock: `coarse` reads
/// `CLOCK_MONOTONIC_COARSE` (one vDSO read, ~3 ns, trails the precise clock
/// by less than a tick of 1-4 ms), otherwise `CLOCK_MONOTONIC`, the clock
/// behind `Instant`. Both share one zero, so a coarse reading is never
/// ahead of a precise one taken after it.
#[cfg(all(target_os = "linux", not(miri), not(loom)))]
pub(crate) fn monotonic_nanos(coarse: bool) -> u64 {
    let clock = if coarse {
        libc::CLOCK_MONOTONIC_COARSE
    } else {
        libc::CLOCK_MONOTONIC
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the call's duration,
    // and `clock_gettime` writes nothing else. Both clocks exist on every
    // Linux since 2.6.32; were the call to fail, `ts` stays zero and times
    // saturate to the table's origin, which is wrong but harmless.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime failed");
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Nanoseconds since a process-wide zero on std's `Instant` (used off
/// Linux and under the checkers, which do not model `clock_gettime`).
#[cfg(not(all(target_os = "linux", not(miri), not(loom))))]
pub(crate) fn monotonic_nanos(_coarse: bool) -> u64 {
    use std::sync::OnceLock;
    static ZERO: OnceLock<Instant> = OnceLock::new();
    let zero = *ZERO.get_or_init(Instant::now);
    u64::try_from(Instant::now().saturating_duration_since(zero).as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds from `origin_nanos` (a precise reading) to a coarse reading
/// now, rounded down and saturating at both ends: never ahead of real time.
pub(crate) fn millis_since_origin(origin_nanos: u64) -> u64 {
    (monotonic_nanos(true).saturating_sub(origin_nanos) / 1_000_000).min(TIME_MAX)
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
        // `docs/failure-modes.md #8`: instant arithmetic never panics, whatever the order
        // of the instants and however far apart they are.
        #[test]
        fn time_encoding_never_panics(
            back in 0u64..u64::MAX / 4,
            fwd in 0u64..u64::MAX / 4,
            gen in any::<u32>(),
            stamp in prop_oneof![0..=TIME_MAX, Just(TIME_MAX), TIME_MAX..=u64::MAX],
        ) {
            let origin = Instant::now();
            let later = origin.checked_add(Duration::from_millis(fwd)).unwrap_or(origin);
            let earlier = origin.checked_sub(Duration::from_millis(back)).unwrap_or(origin);
            // An origin in the future gives 0; any origin gives at most TIME_MAX.
            prop_assert_eq!(millis_since_origin(u64::MAX - back), 0);
            prop_assert!(millis_since_origin(fwd % 1_000) <= TIME_MAX);
            // Any stamp (over-large ones saturate when packed) decodes
            // against an origin far in the past, now or far ahead, and the
            // result compares with instants on either side.
            for base in [earlier, origin, later] {
                let info = decode(base, pack(ConnectionStatus::Failed, gen, stamp));
                prop_assert!(info.since >= base);
                prop_assert!(
                    info.since.saturating_duration_since(base)
                        <= Duration::from_millis(stamp.min(TIME_MAX))
                );
                prop_assert_eq!(info.generation, gen & GEN_MASK);
                prop_assert_eq!(info.status, ConnectionStatus::Failed);
                let _ = (
                    info.since.saturating_duration_since(earlier),
                    later.saturating_duration_since(info.since),
                );
            }
        }
    }
}
