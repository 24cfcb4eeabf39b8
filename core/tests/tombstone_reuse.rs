//! Removed entries' slots taken by new keys: once no lookup can still be
//! comparing a removed key, its tombstone goes to the next new key whose
//! probe chain meets it, instead of waiting for a rebuild.
//!
//! Its own binary with one test: the epoch collector's grace period ends
//! only when no thread is pinned, and tests running in parallel threads of
//! one binary pin at any moment.

use std::hash::{BuildHasherDefault, Hasher};

use connmgr_core::{ConnectionStatus::*, StatusTable};

/// A hasher that gives every key the same hash: one shard, one home
/// bucket, one probe chain, so where a new key lands is known.
#[derive(Default)]
struct Same;

impl Hasher for Same {
    fn finish(&self) -> u64 {
        0x1234
    }
    fn write(&mut self, _: &[u8]) {}
}

/// A removed key's slot goes to a new key once no lookup can still be
/// comparing the old key, and not before: removed entries are reused in
/// place instead of piling up until a rebuild.
///
/// All keys share one probe chain, so the new keys meet the removed ones'
/// tombstones before any empty slot. Until the epoch collector has run the
/// removals' deferred release (it sits in this thread's bag until a flush),
/// they take empty slots; after it, they take the tombstones.
#[test]
fn removed_slots_are_reused_once_no_lookup_can_see_them() {
    let n: u64 = if cfg!(miri) { 8 } else { 64 };
    let table: StatusTable<u64, BuildHasherDefault<Same>> =
        StatusTable::with_shards(1, 4 * n as usize, BuildHasherDefault::default()).unwrap();
    let capacity = table.shard_stats()[0].capacity;
    for k in 0..n {
        table.insert(k, Connected);
    }
    for k in 0..n {
        assert_eq!(table.remove(&k), Some(Connected));
    }
    assert_eq!(table.shard_stats()[0].tombstones, n as usize);
    // Not released yet: the new key takes an empty slot.
    table.insert(n, Connecting);
    assert_eq!(table.shard_stats()[0].tombstones, n as usize);
    // Two epoch advances, then the deferred release runs.
    for _ in 0..3 {
        crossbeam_epoch::pin().flush();
    }
    for k in n + 1..2 * n + 1 {
        table.insert(k, Connecting);
    }
    let stats = table.shard_stats()[0];
    assert_eq!(stats.tombstones, 0, "every tombstone was reused");
    assert_eq!(stats.capacity, capacity, "no rebuild");
    assert_eq!(table.len(), n as usize + 1);
    for k in 0..n {
        assert_eq!(table.get(&k), None);
    }
    for k in n..2 * n + 1 {
        assert_eq!(table.get(&k), Some(Connecting));
    }
}
