//! Bucket-array sizing as callers see it: `with_capacity(n)` takes n evenly
//! spread keys without growing, a million keys take at most 64 bytes each,
//! and churn of new keys (insert one never seen, remove the oldest) keeps
//! memory per live key within what the post-rebuild sizing allows. Sizes
//! shrink under Miri.

#[path = "support/shard_peaks.rs"]
mod shard_peaks;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

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
    K: Copy + std::hash::Hash + Eq + Send + Sync + 'static,
    S: BuildHasher,
{
    table.shard_stats().iter().map(|s| s.capacity).collect()
}

/// A bucket of three `PeerId` slots: two cache lines.
const BUCKET_BYTES: usize = 128;

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

/// The footprint at a million peers: grown from empty (arrays grow by
/// 1.14x, so each ends between 7/10 and 4/5 full) or presized, a million
/// peer ids with their state words take at most 64 bytes each, table and
/// shard headers included.
#[test]
#[cfg_attr(miri, ignore = "a million keys")]
fn a_million_peers_take_at_most_64_bytes_each() {
    let n = 1_000_000u64;
    let presized = StatusTable::with_capacity(n as usize);
    let grown = StatusTable::new();
    for i in 0..n {
        presized.insert(id(i), Connected);
        grown.insert(id(i), Connected);
    }
    for table in [&presized, &grown] {
        let per_peer = table.memory_usage() as f64 / n as f64;
        assert!(per_peer <= 64.0, "{per_peer:.1} B per peer");
        for s in table.shard_stats() {
            let load = s.len as f64 / s.capacity as f64;
            assert!((0.66..=0.8).contains(&load), "{s:?}");
        }
    }
}

/// Churn of new peers: the table holds n live keys while 10 n times a key
/// never seen before is inserted and the oldest one removed. A removal
/// leaves a tombstone (the key stays until the shard's next rebuild), so
/// memory per live key depends on how big a rebuild leaves the array.
///
/// The bound. A rebuild sizes a shard's array for the `live` keys it holds
/// at 7/10 load after growth and half load after tombstones, never below
/// the minimum: at most `max(ceil(2 * live / 3), MIN)` buckets. Every
/// rebuild of shard s happens while it holds at most `most[s]` keys, the
/// most it has held so far, so at every step
///
/// ```text
/// memory_usage <= fixed + sum over shards s of max(ceil(2 * most[s] / 3), MIN) * 128
/// ```
///
/// where `fixed` is the table, shard and array headers (an empty table's
/// usage minus its buckets). `most[s]` is tracked exactly: the test hashes
/// each key with the table's own hasher and takes the shard from the hash's
/// top byte, as the table does. (What the allocator sees under the same
/// churn, retired arrays included, is checked in `heap_churn.rs`.)
#[test]
fn churn_of_new_keys_keeps_memory_per_live_key_bounded() {
    // Under Miri: 28,000 / 256 keys over its 2 shards (0.427 of 128 each).
    let n: u64 = if cfg!(miri) { 109 } else { 28_000 };
    let cycles = if cfg!(miri) { 4 * n } else { 10 * n };
    let hasher = RandomState::new();
    let table = StatusTable::with_capacity_and_hasher(0, hasher.clone());
    let shards = table.shards();
    let shard_of = |i: u64| (hasher.hash_one(id(i)) >> 56) as usize & (shards - 1);

    let start = capacities(&table);
    let min = start[0];
    let fixed = table.memory_usage() - start.iter().sum::<usize>() / 3 * BUCKET_BYTES;

    // Keys each shard holds now, the most it has held, and the bound on
    // their arrays.
    let mut peaks = ShardPeaks::new(shards, min, BUCKET_BYTES);
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
    // Shards seen purging tombstones (a rebuild), sampled every `every`.
    let every = (n / 28).max(1);
    let mut before = tombstones(&table);
    let mut purged = vec![false; shards];
    for i in 0..cycles {
        insert(n + i, &mut peaks);
        assert_eq!(table.remove(&id(i)), Some(Connected));
        peaks.removed(shard_of(i));
        let usage = table.memory_usage();
        bound = fixed + peaks.bound();
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
    // The churn did make every shard rebuild away its tombstones: the bound
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

/// Removals never shrink a shard below the room `with_capacity` asked for:
/// ten keys in a table sized for a million, one removed, leave every
/// shard's array and the table's memory as they were, and so do removing
/// them all and churning through more. A table created without capacity
/// still shrinks after a large removal.
#[test]
fn removals_keep_the_capacity_asked_for() {
    // Under Miri, which interprets every step, a few hundred keys.
    let n = if cfg!(miri) { 256 } else { 1_000_000 };
    let churn: u64 = if cfg!(miri) { 60 } else { 200 };
    let grow: u64 = if cfg!(miri) { 200 } else { 1_000 };
    let table = StatusTable::with_capacity(n);
    let before = (capacities(&table), table.memory_usage());
    for i in 0..10 {
        table.insert(id(i), Connected);
    }
    table.remove(&id(3));
    assert_eq!((capacities(&table), table.memory_usage()), before);
    for i in 0..10 {
        table.remove(&id(i));
    }
    for i in 10..churn {
        table.insert(id(i), Connecting);
        table.remove(&id(i));
    }
    assert!(table.is_empty());
    assert_eq!((capacities(&table), table.memory_usage()), before);

    let grown = StatusTable::with_shards(1, 0, RandomState::new()).unwrap();
    let small = capacities(&grown);
    for i in 0..grow {
        grown.insert(id(i), Connected);
    }
    assert!(capacities(&grown)[0] > small[0]);
    for i in 0..grow {
        grown.remove(&id(i));
    }
    assert_eq!(
        capacities(&grown),
        small,
        "an uncapacitated table shrinks back"
    );
}
