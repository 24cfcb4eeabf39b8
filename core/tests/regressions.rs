//! Regression tests for bugs found by the fuzz targets (`fuzz/`), each
//! named after what it guards and holding the minimized reproducer.

use std::collections::hash_map::RandomState;

use connmgr_core::{ConnectionStatus::*, StatusTable};

/// Found by `fuzz/fuzz_targets/status_table.rs`: a new entry's generation
/// seed comes from a per-shard counter that advances by one per insert,
/// while a status change also advances the entry's generation by one. A key
/// inserted (seed 0), changed once (generation 1), removed and inserted
/// again (seed 1) is back at generation 1, so a stale generation read
/// before the removal matches the new entry and `set_if_generation`
/// overwrites it, which its docs rule out ("a stale view, including one of
/// a removed and re-inserted key, never overwrites a newer entry"; and
/// `EntryInfo::generation`: "a key removed and inserted again starts at a
/// different value").
#[test]
fn stale_generation_of_a_reinserted_key_never_matches() {
    let table = StatusTable::with_shards(1, 0, RandomState::new()).unwrap();
    let peer = 7u8;
    table.insert(peer, Connecting);
    table.compare_and_set(&peer, Connecting, Connected).unwrap();
    let stale = table.info(&peer).unwrap().generation;
    assert_eq!(table.remove(&peer), Some(Connected));

    table.insert(peer, Connecting);
    assert_ne!(
        table.info(&peer).unwrap().generation,
        stale,
        "the re-inserted key starts at the generation of the removed one"
    );
    assert!(
        table.set_if_generation(&peer, stale, Failed).is_err(),
        "a stale generation overwrote the re-inserted entry"
    );
    assert_eq!(table.get(&peer), Some(Connecting));
}
