//! Memory under churn as the allocator sees it: a table holds n live peers
//! while 10 n never-seen peers come and go (insert a new one, remove the
//! oldest), and at every step the heap holds no more than the n live
//! entries, the slot arrays the sizing allows, the dead entries the budget
//! allows (one per 8 live keys of a shard, plus one), and a constant for the
//! epoch collector's backlog. Removed peers' entries beyond the budget must
//! be freed as the churn goes, not kept until their shard's next rehash:
//! when every removal left its entry in its slot until then, this test
//! failed with the heap 68 B per live key over the bound (peak 132.4 B per
//! live key; 32 shards; see the test's message for today's figures).
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
use std::mem::size_of;
use std::sync::atomic::Ordering;

use connmgr_core::{ConnectionStatus::Connected, PeerId, StatusTable};

fn id(i: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    PeerId::from_bytes(b)
}

/// The epoch collector's backlog the bound allows for: removed entries and
/// replaced arrays retired but not yet freed, and the sealed bags holding
/// them. A single thread that pins for every call lets the collector run
/// every 128 pins and free up to 8 bags of 64 retirements each time, so the
/// backlog stays at a few bags' worth. Removed entries kept until their
/// shard's next rehash cost several times this at n = 28,000 (up to 661 of
/// 40 bytes per shard, 32 shards).
const BACKLOG: isize = 192 * 1024;

/// An entry node: the state word and the key (what `Box<Entry>` requests).
const ENTRY_BYTES: usize = size_of::<u64>() + size_of::<PeerId>();

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
    let mut peaks = ShardPeaks::new(shards, min, ENTRY_BYTES);
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
        let allowed = (n as usize * ENTRY_BYTES + peaks.bound()) as isize;
        peak = peak.max(heap);
        peak_over = peak_over.max(heap - allowed);
    }
    let per_key = |b: isize| b as f64 / n as f64;
    eprintln!(
        "heap peak {:.1} B per live key; at most {:.1} B per live key over the live entries, \
         arrays and dead-entry budget (backlog allowance {:.1})",
        per_key(peak),
        per_key(peak_over),
        per_key(BACKLOG)
    );
    assert!(
        peak_over <= BACKLOG,
        "the heap went {peak_over} B ({:.1} B per live key) over the live entries, arrays \
         and dead-entry budget; the collector's backlog allows {BACKLOG} B",
        per_key(peak_over)
    );
    assert_eq!(table.len(), n as usize);
}
