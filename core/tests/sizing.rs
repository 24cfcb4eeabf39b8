//! Slot-array sizing as callers see it: `with_capacity(n)` takes n evenly
//! spread keys without growing, a million keys grown from empty end in the
//! arrays they always did, and churn of new keys (insert one never seen,
//! remove the oldest) keeps memory per live key within what the
//! post-rehash sizing allows. Sizes shrink under Miri.

#[path = "support/shard_peaks.rs"]
mod shard_peaks;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::mem::size_of;

use connmgr_core::{ConnectionStatus::*, PeerId, StatusTable};
use shard_peaks::ShardPeaks;

fn id(i: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    PeerId::from_bytes(b)
}

/// A hasher for `u64` keys that spreads them exactly evenly over shards:
/// the top byte of the hash (which picks the shard) is the key's low byte,
/// so key `i` lands in shard `i % shards` for every power-of-two shard count;
/// the rest is a SplitMix64 mix, so homes within a shard are scattered.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("keys write one u64")
    }
    fn write_u64(&mut self, x: u64) {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        self.0 = (x & 0xff) << 56 | z >> 8;
    }
}

type Spreads = BuildHasherDefault<Spread>;

fn capacities<K, S>(table: &StatusTable<K, S>) -> Vec<usize>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    S: BuildHasher,
{
    table.shard_stats().iter().map(|s| s.capacity).collect()
}

/// What one entry node adds to `memory_usage`, measured on a fresh table
/// (one key does not grow a minimum-size array).
fn entry_bytes<K: std::hash::Hash + Eq + Send + Sync + 'static>(key: K) -> usize {
    let t = StatusTable::new();
    let empty = t.memory_usage();
    t.insert(key, Connected);
    t.memory_usage() - empty
}

/// `with_capacity` (here `with_shards`, to vary the shard count) promises
/// room for `capacity` keys before a shard grows when they split evenly
/// over the shards: each shard takes its share, rounded up, in the array it
/// started with.
#[test]
fn with_capacity_takes_that_many_even_keys_without_growing() {
    let sizes: &[usize] = if cfg!(miri) {
        &[0, 1, 2, 3, 5, 7, 13]
    } else {
        &[0, 1, 2, 3, 5, 6, 7, 13, 97, 1_000, 12_345, 100_000]
    };
    for &shards in &[1, 2, 32] {
        for &n in sizes {
            let table = StatusTable::with_shards(shards, n, Spreads::default()).unwrap();
            let start = capacities(&table);
            for i in 0..n as u64 {
                assert_eq!(table.insert(i, Connected), None);
            }
            assert_eq!(table.len(), n);
            assert_eq!(
                capacities(&table),
                start,
                "with_shards({shards}, {n}) grew before taking {n} keys"
            );
        }
    }
}

/// The insert-only footprint at a million keys (the figure the churn fix
/// must not make worse): over 32 shards, `with_capacity(1_000_000)`
/// allocates 65,536 slots per shard, and a table grown from empty to a
/// million evenly spread keys ends with the same.
#[test]
#[cfg_attr(miri, ignore = "a million keys")]
fn a_million_keys_fill_65536_slots_per_shard() {
    let n = 1_000_000;
    let presized = StatusTable::<u64, _>::with_shards(32, n, Spreads::default()).unwrap();
    assert!(capacities(&presized).iter().all(|&c| c == 65_536));

    let grown = StatusTable::with_shards(32, 0, Spreads::default()).unwrap();
    for i in 0..n as u64 {
        grown.insert(i, Connected);
    }
    assert!(capacities(&grown).iter().all(|&c| c == 65_536));
    assert_eq!(
        grown.memory_usage(),
        presized.memory_usage() + n * entry_bytes(0u64)
    );
}

/// Churn of new peers: the table holds n live keys while 10 n times a key
/// never seen before is inserted and the oldest one removed. A removal
/// keeps its entry in its slot, dead, only while its shard holds at most
/// one dead entry per 8 live keys (plus one); beyond that it leaves a
/// tombstone (a slot, no entry) and retires the entry. So memory per live
/// key depends on that budget and on how big a rehash leaves the array.
///
/// The bound. A rehash sizes a shard's array for the `live` keys it holds
/// at most half full: `next_power_of_two(max(2 * live, MIN))` slots. Every
/// rehash of shard s (growth or shrink) happens while it holds at most
/// `most[s]` keys, the most it has held so far, so its array has at most
/// `C(most[s]) = next_power_of_two(max(2 * most[s], MIN))` slots (it starts
/// at MIN); and it holds at most `most[s] / 8 + 1` dead entries (the
/// budget is checked against the keys the shard holds at each removal). So
/// at every step
///
/// ```text
/// memory_usage <= fixed + n * entry_bytes
///                 + sum over shards s of C(most[s]) * slot_bytes + (most[s] / 8 + 1) * entry_bytes
/// ```
///
/// where `fixed` is the table and shard headers (an empty table's usage
/// minus its arrays). `most[s]` is tracked exactly: the test hashes each key
/// with the table's own hasher and takes the shard from the hash's top byte,
/// as the table does. At 875 keys per shard (2,048 slots) that is about
/// 64 B per live key. A rehash that left the array 3/8 full (the old
/// sizing) puts the same shard in 4,096 slots: about 83 B. (What the
/// allocator sees under the same churn, retired entries included, is
/// checked in `heap_churn.rs`.)
///
/// n = 28,000 puts about 0.427 P keys in each shard for a power of two P
/// (875 of 2,048 at 32 shards, 1,750 of 4,096 at 16, and so on for every
/// power-of-two shard count), between 3/8 P and P/2: there the old sizing
/// gives 2 P slots and the new one P, so the test tells them apart. (At
/// n = 20,000, 625 of 2,048 per shard at 32 shards, both give 2,048.)
#[test]
fn churn_of_new_keys_keeps_memory_per_live_key_bounded() {
    // Under Miri: 28,000 / 256 keys over its 2 shards (0.427 of 128 each).
    let n: u64 = if cfg!(miri) { 109 } else { 28_000 };
    let cycles = 10 * n;
    let hasher = RandomState::new();
    let table = StatusTable::with_capacity_and_hasher(0, hasher.clone());
    let shards = table.shards();
    let shard_of = |i: u64| (hasher.hash_one(id(i)) >> 56) as usize & (shards - 1);

    let entry_bytes = entry_bytes(id(u64::MAX));
    let slot_bytes = size_of::<usize>();
    let start = capacities(&table);
    let min = start[0];
    let fixed = table.memory_usage() - start.iter().sum::<usize>() * slot_bytes;

    // Keys each shard holds now, the most it has held, and the bound on
    // the arrays and dead entries.
    let mut peaks = ShardPeaks::new(shards, min, entry_bytes);
    let insert = |i: u64, peaks: &mut ShardPeaks| {
        assert_eq!(table.insert(id(i), Connected), None);
        peaks.inserted(shard_of(i));
    };
    for i in 0..n {
        insert(i, &mut peaks);
    }
    let per_key = |bytes: usize| bytes as f64 / n as f64;
    let built = table.memory_usage();
    let tombstones = |t: &StatusTable<PeerId, RandomState>| -> Vec<usize> {
        t.shard_stats().iter().map(|s| s.tombstones).collect()
    };

    let (mut peak, mut last) = (built, built);
    let mut bound = 0;
    // Shards seen purging tombstones (a rehash), sampled every `every`.
    let every = (n / 28).max(1);
    let mut before = tombstones(&table);
    let mut purged = vec![false; shards];
    for i in 0..cycles {
        insert(n + i, &mut peaks);
        assert_eq!(table.remove(&id(i)), Some(Connected));
        peaks.removed(shard_of(i));
        let usage = table.memory_usage();
        bound = fixed + n as usize * entry_bytes + peaks.bound();
        assert!(
            usage <= bound,
            "after {i} cycles: {:.1} B per live key, over the bound of {:.1} \
             (built: {:.1}, peak so far {:.1})",
            per_key(usage),
            per_key(bound),
            per_key(built),
            per_key(peak),
        );
        peak = peak.max(usage);
        last = usage;
        if i % every == every - 1 {
            let now = tombstones(&table);
            for (s, (was, is)) in before.iter().zip(&now).enumerate() {
                purged[s] |= is < was;
            }
            before = now;
        }
    }
    assert_eq!(table.len(), n as usize);
    // The churn did make every shard rehash away its dead slots: the bound
    // was tested against more than a growing table.
    assert!(purged.iter().all(|&p| p), "shards seen purging: {purged:?}");
    eprintln!(
        "churn of {cycles} new keys through {n} live over {shards} shards: \
         {:.1} B per live key built, {:.1} at the end, {:.1} at peak; bound {:.1}",
        per_key(built),
        per_key(last),
        per_key(peak),
        per_key(bound),
    );
}
