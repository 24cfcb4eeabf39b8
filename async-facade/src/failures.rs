//! How many `Failed`s each live-map shard has seen: how a call that is
//! about to pool a connection, or to hand a pooled one out, learns whether
//! a peer of its shard (possibly its own) was set Failed since it decided.
//!
//! A Failed (`update_status(p, Failed)`, a failed or timed-out dial, a
//! lease discarded or dropped while its thread panics) runs in two
//! steps. Under the peer's live-map lock it writes the status, takes the
//! live slot out and marks the leases that lost theirs, then counts itself
//! *started*. After the lock it fences and closes the peer's idle pooled
//! connections, then counts itself *finished*.
//!
//! A caller reads its shard's [`Stamp`] before deciding, and looks again
//! later:
//! - [`Failures::started_since`] after a put and a SeqCst fence: this
//!   forms a store-buffering pair with the Failed's count and fence. Either
//!   the re-check sees the count and closes what was pooled, or the
//!   Failed's drain finds the put.
//! - the same under the live-map lock, before a pooled connection is made
//!   live: this is exact, since the Failed counted itself under that lock.
//! - [`Stamp::draining`] before taking from the pool: a Failed that counted
//!   itself started but has not drained yet.
//!
//! The counts are per shard, not per peer, so a Failed of another peer in
//! the same shard looks like one of ours. That never lets a failed peer's
//! connection be reused, but it can cost a healthy peer: its idle pooled
//! connections closed after a put, a pooled connection closed and a dial
//! made instead, or the pool skipped for a dial while the other peer's
//! drain runs.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU64, Ordering};

/// Per-shard counts of started and finished `Failed`s.
pub(crate) struct Failures {
    shards: Box<[CachePadded<Counts>]>,
}

#[derive(Default)]
struct Counts {
    started: AtomicU64,
    finished: AtomicU64,
}

/// One shard's counts as read at one moment (see [`Failures::stamp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    shard: usize,
    started: u64,
    finished: u64,
}

impl Stamp {
    /// The shard the stamp was read from.
    pub(crate) fn shard(self) -> usize {
        self.shard
    }

    /// A Failed in this shard had done its locked step, but not its drain,
    /// when the stamp was read.
    pub(crate) fn draining(self) -> bool {
        self.started != self.finished
    }
}

impl Failures {
    /// Counts for `shards` shards (the live map's shard count).
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| CachePadded::default()).collect(),
        }
    }

    /// Reads shard `shard`'s counts. `finished` is read first, so a Failed
    /// that starts between the two loads shows as draining, never the
    /// other way round.
    pub(crate) fn stamp(&self, shard: usize) -> Stamp {
        let counts = &self.shards[shard];
        // Acquire: a Failed counted here has its locked step (status
        // written, leases marked) or its drain visible to what we do next.
        let finished = counts.finished.load(Ordering::Acquire);
        let started = counts.started.load(Ordering::Acquire);
        Stamp {
            shard,
            started,
            finished,
        }
    }

    /// Counts a Failed as started. Called under the peer's live-map lock,
    /// after its status is written and its detached leases are marked, and
    /// before the fence that precedes its drain. Returns the guard that
    /// counts it finished when dropped, after the drain. It counts on
    /// unwind too, so that a panicking destructor cannot leave the shard
    /// draining for good; the price is that a drain cut short by that
    /// panic counts as finished, and the failed peer may keep pooled
    /// connections until they expire.
    pub(crate) fn start(&self, shard: usize) -> Finish<'_> {
        let counts = &self.shards[shard];
        counts.started.fetch_add(1, Ordering::Release);
        Finish(&counts.finished)
    }

    /// A Failed of `stamp`'s shard started after `stamp` was read. Call it
    /// after a SeqCst fence (store-buffering with [`start`](Self::start)'s
    /// count and the Failed's fence) or under the live-map lock for a
    /// guarantee; anywhere else (the check before a put) its answer is
    /// only a shortcut, never relied on.
    pub(crate) fn started_since(&self, stamp: Stamp) -> bool {
        self.shards[stamp.shard].started.load(Ordering::Relaxed) != stamp.started
    }

    /// Bytes held: the padded per-shard counts.
    pub(crate) fn memory_usage(&self) -> usize {
        self.shards.len() * std::mem::size_of::<CachePadded<Counts>>()
    }
}

/// Counts its Failed finished when dropped (see [`Failures::start`]).
#[must_use = "dropping it at once counts the drain done before it ran"]
pub(crate) struct Finish<'a>(&'a AtomicU64);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_failed_drains_until_its_guard_drops() {
        let f = Failures::new(2);
        let before = f.stamp(1);
        assert!(!before.draining());
        let finish = f.start(1);
        assert!(f.stamp(1).draining());
        assert!(f.started_since(before));
        assert!(!f.stamp(0).draining(), "other shards are untouched");
        drop(finish);
        let after = f.stamp(1);
        assert!(!after.draining());
        assert!(!f.started_since(after));
        assert!(f.started_since(before));
    }

    #[test]
    fn an_unwinding_drain_still_counts_finished() {
        let f = Failures::new(1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _finish = f.start(0);
            panic!("a connection's destructor panicked");
        }));
        assert!(caught.is_err());
        assert!(!f.stamp(0).draining());
    }
}
