//! Memory under churn as the allocator sees it: a table holds n live peers
//! while 10 n never-seen peers come and go (insert a new one, remove the
//! oldest), and at every step the heap holds no more than the bucket
//! arrays the sizing allows (keys and state words are inline), one more
//! array retired by a rebuild and not yet freed, and a constant for the
//! epoch collector's bookkeeping. Removed peers' keys must be freed as
//! their shards are rebuilt, not piled up.
//!
//! Its own binary because it installs a counting global allocator; one
//! test, so no other test allocates while it measures.
#![cfg(not(miri))]

#[path = "support/counting.rs"]
mod counting;
#[path = "support/shard_peaks.rs"]
mod shard_peaks;

use counting::{collect_garbage, LIVE};
use shard_peaks::ShardPeaks;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;

use connmgr_core::{ConnectionStatus::Connected, PeerId, StatusTable};

fn id(i: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    PeerId::from_bytes(b)
}

/// The epoch collector's own bookkeeping the bound allows for (sealed bags
/// of deferred calls), and the array headers.
const BACKLOG: isize = 64 * 1024;

/// A bucket: three peer ids and their state words, and a control word.
const BUCKET_BYTES: usize = 128;

#[test]
fn churn_of_new_peers_keeps_the_heap_within_live_entries_and_arrays() {
    let n: u64 = 28_000;
    let cycles = 10 * n;
    let hasher = RandomState::new();
    let table = StatusTable::with_capacity_and_hasher(0, hasher.clone());
    let shards = table.shards();
    let shard_of = |i: u64| (hasher.hash_one(id(i)) >> 56) as usize & (shards - 1);
    let min = table.shard_stats()[0].capacity;
    // Every vector the test itself uses is allocated before the baseline;
    // the empty table's arrays count against the bound, not the baseline.
    let mut peaks = ShardPeaks::new(shards, min, BUCKET_BYTES);
    let base = collect_garbage() - peaks.bound() as isize;

    let insert = |i: u64, peaks: &mut ShardPeaks| {
        assert_eq!(table.insert(id(i), Connected), None);
        peaks.inserted(shard_of(i));
    };
    for i in 0..n {
        insert(i, &mut peaks);
    }
    let (mut peak_over, mut peak) = (isize::MIN, 0);
    for i in 0..cycles {
        insert(n + i, &mut peaks);
        assert_eq!(table.remove(&id(i)), Some(Connected));
        peaks.removed(shard_of(i));
        let heap = LIVE.load(Ordering::Relaxed) - base;
        // A rebuild retires the old array; it is freed a few epochs later.
        let allowed = (peaks.bound() + peaks.largest()) as isize;
        peak = peak.max(heap);
        peak_over = peak_over.max(heap - allowed);
    }
    let per_key = |b: isize| b as f64 / n as f64;
    eprintln!(
        "heap peak {:.1} B per live key; at most {:.1} B per live key over the arrays the \
         sizing allows (backlog allowance {:.1})",
        per_key(peak),
        per_key(peak_over),
        per_key(BACKLOG)
    );
    assert!(
        peak_over <= BACKLOG,
        "the heap went {peak_over} B ({:.1} B per live key) over the arrays the sizing \
         allows and one retired array; the collector's backlog allows {BACKLOG} B",
        per_key(peak_over)
    );
    assert_eq!(table.len(), n as usize);
}
