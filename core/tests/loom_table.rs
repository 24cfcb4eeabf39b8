//! Loom models of the status table: get and get_many vs insert vs remove
//! vs rebuild vs compare_and_set vs a removed key coming back, on a
//! one-shard table whose arrays start at one bucket of 3 slots and fill
//! completely before they are rebuilt (the crate shrinks its sizes under
//! `cfg(loom)`), so a rebuild happens within a few operations; one model
//! asks for a two-bucket array so that a key overflows its home bucket.
//!
//! Run with `.ci/loom.sh` (RUSTFLAGS="--cfg loom --cfg crossbeam_loom").
//!
//! Each model was checked once to fail with its ordering weakened or its fix
//! removed; what was changed is noted on the model.
#![cfg(loom)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasherDefault, Hash};

use connmgr_core::{ConnectionStatus::*, Error, StatusTable};
use loom::sync::Arc;
use loom::thread;

/// Loom replays each interleaving, so hashing must be the same every run:
/// SipHash with fixed keys instead of the default random ones.
type Fixed = BuildHasherDefault<DefaultHasher>;

fn one_shard<K: Copy + Hash + Eq + Send + Sync + 'static>() -> Arc<StatusTable<K, Fixed>> {
    Arc::new(StatusTable::with_shards(1, 0, Fixed::default()).unwrap())
}

/// Slots in the one shard's current array. Under loom a table starts with
/// one bucket (3 slots) and a rebuild for 3 or more live keys leaves at
/// least two, so a model that checks its array's size after the threads
/// are joined knows that the rebuild it is about took place.
fn slots<K: Copy + Hash + Eq + Send + Sync + 'static>(table: &StatusTable<K, Fixed>) -> usize {
    table.shard_stats()[0].capacity
}

/// A status transition racing the rebuild that copies its key: the key is
/// visible to `get` throughout and the transition is not lost, whether it
/// lands in the old array before the freeze (the rebuild copies the word
/// again) or meets the frozen word and carries on in the new array.
///
/// Checked to fail: with the rebuild not copying the word again when its
/// freeze CAS fails (the `copy.state.store(word)` after a failed freeze
/// removed), the transition that landed between the copy and the freeze is
/// lost: `get(&1)` right after the successful `compare_and_set` reads
/// Connecting from the new array.
#[test]
fn transition_vs_rebuild_loses_nothing() {
    loom::model(|| {
        let table = one_shard::<u32>();
        table.insert(1, Connecting);
        table.insert(2, Connecting);
        let t = table.clone();
        let grower = thread::spawn(move || {
            assert_eq!(t.insert(3, Failed), None);
            // The bucket is full: this insert rebuilds the shard.
            assert_eq!(t.insert(4, Failed), None);
        });
        assert!(table.compare_and_set(&1, Connecting, Connected).is_ok());
        assert_eq!(table.get(&1), Some(Connected));
        grower.join().unwrap();
        assert_eq!(table.get(&1), Some(Connected));
        assert_eq!(table.get(&2), Some(Connecting));
        assert_eq!(table.len(), 4);
        assert_eq!(table.count(Connected), 1);
        assert_eq!(table.count(Failed), 2);
        assert!(slots(&table) > 3, "the shard was not rebuilt");
    });
}

/// Two threads insert the same new key: exactly one insert sees it absent,
/// and the table holds one entry for it.
///
/// Checked to fail: with the control word's publishing store in `place`
/// weakened from Release to Relaxed, loom reports a causality violation on
/// the key cell (the other inserter's lock-free lookup reads a key whose
/// write it has not synchronized with).
#[test]
fn racing_inserts_of_one_key_make_one_entry() {
    loom::model(|| {
        let table = one_shard::<u32>();
        let t = table.clone();
        let other = thread::spawn(move || t.insert(5, Connected));
        let mine = table.insert(5, Failed);
        let theirs = other.join().unwrap();
        assert!(
            mine.is_none() ^ theirs.is_none(),
            "exactly one insert saw the key absent: {mine:?} {theirs:?}"
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.count(Connected) + table.count(Failed), 1);
    });
}

/// remove vs insert of the same key vs get: the final state is one of the
/// linearizable outcomes, and the counters agree with it (the returning
/// key takes its own tombstone back).
///
/// Checked to fail: with `upsert` taking a transition that lost to the
/// removal for a present key (returning the removed word instead of
/// inserting under the writer lock), the outcome is (Some(Connected),
/// Some(Connected)): "not linearizable". (Dropping the REMOVED check from
/// `find_in` does not fail it: a reader that sees the removed word before
/// the tombstone lands overlaps the removal, so either answer is allowed.)
#[test]
fn remove_vs_insert_vs_get() {
    loom::model(|| {
        let table = one_shard::<u32>();
        table.insert(1, Connected);
        let t = table.clone();
        let remover = thread::spawn(move || t.remove(&1));
        let t = table.clone();
        let inserter = thread::spawn(move || t.insert(1, Failed));
        let seen = table.get(&1);
        assert!(matches!(seen, None | Some(Connected) | Some(Failed)));
        let removed = remover.join().unwrap();
        let replaced = inserter.join().unwrap();
        let last = table.get(&1);
        match (removed, replaced) {
            // The insert updated the entry, then the remove took it.
            (Some(Failed), Some(Connected)) => assert_eq!(last, None),
            // The remove came first; the insert took the slot back.
            (Some(Connected), None) => assert_eq!(last, Some(Failed)),
            other => panic!("not linearizable: {other:?}"),
        }
        assert_eq!(table.len(), usize::from(last.is_some()));
        assert_eq!(table.count(Failed), usize::from(last.is_some()));
        assert_eq!(table.count(Connected), 0);
    });
}

/// A rebuild copies the live keys into the new array and leaves a
/// tombstone behind, while a reader looks on: the reader sees the
/// surviving key throughout, the removed key stays absent, and the new
/// array holds no tombstone.
///
/// Checked to fail: with the freeze CAS in `rebuild` weakened to Relaxed
/// (both orderings), the reader that meets the frozen word has not
/// synchronized with the store that linked `next`: it loads a null `next`
/// and the model panics dereferencing it (crossbeam-epoch's `deref`).
#[test]
fn rebuild_with_a_tombstone_vs_get() {
    loom::model(|| {
        let table = one_shard::<u32>();
        table.insert(1, Connected);
        table.insert(2, Connected);
        table.insert(3, Connected);
        assert_eq!(table.remove(&2), Some(Connected));
        let t = table.clone();
        // The bucket is full (a tombstone counts): this rebuilds.
        let inserter = thread::spawn(move || t.insert(4, Failed));
        assert_eq!(table.get(&1), Some(Connected));
        assert_eq!(inserter.join().unwrap(), None);
        assert_eq!(table.get(&2), None);
        assert_eq!(table.get(&3), Some(Connected));
        assert_eq!(table.get(&4), Some(Failed));
        assert_eq!(table.shard_stats()[0].tombstones, 0);
    });
}

/// A stale generation (read before a remove and re-insert) never overwrites
/// the newer entry, whatever the interleaving (the ABA case). The key changes
/// status once before the stale read, the shape the `status_table` fuzz
/// target found.
///
/// Checked to fail: without the removal's advance of the shard clock past
/// the removed generation (so the clock is a counter that only inserts
/// advance, while transitions add one to their entry's generation), the
/// re-inserted entry starts at the stale generation and the update lands
/// (`get(&7)` is Failed).
#[test]
fn stale_generation_never_lands_on_a_newer_entry() {
    loom::model(|| {
        let table = one_shard::<u32>();
        table.insert(7, Connecting);
        table.compare_and_set(&7, Connecting, Connected).unwrap();
        let stale = table.info(&7).unwrap().generation;
        let t = table.clone();
        let churn = thread::spawn(move || {
            t.remove(&7);
            t.insert(7, Connected);
        });
        let result = table.set_if_generation(&7, stale, Failed);
        churn.join().unwrap();
        // Either it landed on the original entry before the remove, or it
        // was refused; the re-inserted entry is never touched.
        assert!(matches!(
            result,
            Ok(_) | Err(Error::NotFound) | Err(Error::Conflict { .. })
        ));
        assert_eq!(table.get(&7), Some(Connected));
        assert_eq!(table.count(Connected), 1);
        assert_eq!(table.count(Failed), 0);
    });
}

/// Removal that shrinks a shard vs a reader and a transition: the reader
/// sees the surviving key throughout and the transition is not lost.
///
/// Four keys rebuild the shard into two buckets (6 slots); the remover's
/// third removal leaves 1 live key, under 1/4 of the slots (the checkers'
/// shrink threshold), and rebuilds the shard into one bucket while the
/// main thread reads and moves key 1.
///
/// Checked to fail: with `rebuild` publishing the new array before copying
/// into it (the store moved above the copy loop), the main thread meets
/// the half-filled new array: `compare_and_set(&1, ..)` finds no key 1.
#[test]
fn shrink_vs_get_and_transition() {
    loom::model(|| {
        let table = one_shard::<u32>();
        for k in 1..=4 {
            table.insert(k, Connecting);
        }
        assert_eq!(slots(&table), 6);
        let t = table.clone();
        let remover = thread::spawn(move || {
            t.remove(&2);
            t.remove(&3);
            t.remove(&4);
        });
        assert_eq!(table.get(&1), Some(Connecting));
        assert!(table.compare_and_set(&1, Connecting, Connected).is_ok());
        remover.join().unwrap();
        assert_eq!(table.get(&1), Some(Connected));
        assert_eq!(table.len(), 1);
        assert_eq!(table.count(Connected), 1);
        assert_eq!(slots(&table), 3, "the shard did not shrink");
    });
}

/// `get_many` racing a transition and the rebuild that copies the keys it
/// asks for, over two batch windows (2 keys each under loom): every
/// answer is one the key had, untouched keys are found throughout, the
/// absent key never is, and the answers come in the keys' order.
///
/// Checked to fail: with `find_in` answering None for a frozen word
/// instead of following `next`, an untouched key is missed while the
/// rebuild runs ("untouched key 3").
#[test]
fn get_many_vs_transition_and_rebuild() {
    loom::model(|| {
        let table = one_shard::<u32>();
        table.insert(1, Connecting);
        table.insert(2, Connecting);
        table.insert(3, Connecting);
        let t = table.clone();
        let writer = thread::spawn(move || {
            assert!(t.compare_and_set(&1, Connecting, Connected).is_ok());
            // The bucket is full: this insert rebuilds the shard.
            assert_eq!(t.insert(4, Failed), None);
        });
        let mut out = Vec::new();
        table.get_many(&[1, 2, 9, 3], &mut out);
        assert!(
            matches!(out[0], Some(Connecting) | Some(Connected)),
            "{out:?}"
        );
        assert_eq!(out[1], Some(Connecting), "untouched key 2");
        assert_eq!(out[2], None, "never-inserted key 9");
        assert_eq!(out[3], Some(Connecting), "untouched key 3");
        writer.join().unwrap();
        table.get_many(&[4, 1], &mut out);
        assert_eq!(out, [Some(Failed), Some(Connected)]);
        assert!(slots(&table) > 3, "the shard was not rebuilt");
    });
}

/// Sends every key to the same home bucket with the same fragment, so the
/// fourth key of a two-bucket array overflows into the second bucket.
#[derive(Default)]
struct SameHome;
impl std::hash::Hasher for SameHome {
    fn finish(&self) -> u64 {
        0x5eed
    }
    fn write(&mut self, _: &[u8]) {}
}

/// Lookups vs the insert that overflows a full bucket: the writer fills
/// bucket 0 (key 3), then overflows it (key 4 goes to bucket 1, and bucket
/// 0 gets the OVERFLOW bit). Readers racing it find each key or not, never
/// a wrong status, and once the writer is done both keys are found: a
/// lookup of key 4 reads its full home bucket, sees the bit and goes on.
/// `with_shards(1, 4, ..)` gives the shard two buckets under loom, so the
/// bit is reachable (tables start at one bucket there).
///
/// Checked to fail: with the OVERFLOW store in `place` removed, the
/// lookup stops at bucket 0 and `get(&4)` is None after the join.
/// Weakening that store from Release to Relaxed does NOT fail it (0.03 s,
/// passes): loom lets the writer's plain store continue the release
/// sequence of its earlier Release store of the same word (C++11 rules),
/// so a reader of the overflowed word still synchronizes with key 3's
/// publication. The store stays Release for C++20 rules, where a plain
/// store ends that sequence; this model does not prove that ordering.
#[test]
fn overflow_bit_leads_lookups_past_a_full_bucket() {
    loom::model(|| {
        let table = Arc::new(
            StatusTable::with_shards(1, 4, BuildHasherDefault::<SameHome>::default()).unwrap(),
        );
        assert_eq!(table.shard_stats()[0].capacity, 6);
        table.insert(1, Connected);
        table.insert(2, Connected);
        let t = table.clone();
        let writer = thread::spawn(move || {
            t.insert(3, Connected);
            t.insert(4, Failed);
        });
        assert!(matches!(table.get(&3), None | Some(Connected)));
        assert!(matches!(table.get(&4), None | Some(Failed)));
        writer.join().unwrap();
        assert_eq!(table.get(&3), Some(Connected));
        assert_eq!(table.get(&4), Some(Failed));
        assert_eq!(table.shard_stats()[0].longest_run, 1, "no overflow bit");
    });
}

/// A lookup racing the removal of its key and the reuse of the key's slot
/// by a new key: the lookup answers for the old key or finds it absent,
/// and never compares its key against a slot being overwritten. The
/// remover lets the epoch advance before the insert, so in the
/// interleavings where the reader is not pinned across it the new key
/// takes the tombstone (the only bucket holds both keys).
///
/// Checked to fail: with `vacancy` treating every tombstone as reusable
/// (the removal number not compared with the collector's release), loom
/// reports the insert's write of the key cell racing the lookup's read of
/// it. Not caught: the Release/Acquire pair on the shard's `reusable`
/// number weakened to Relaxed: the model still passes, so it does not
/// show that pair is needed (crossbeam-epoch's own fences around the
/// deferred call may already order the reader's unpin before the insert
/// in every execution it explores).
#[test]
fn lookup_vs_remove_and_reuse_of_its_slot() {
    // Outside the model (a std atomic): set by the executions in which
    // the new key took the tombstone, so the model is known to reach it.
    static REUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    loom::model(|| {
        let table = one_shard::<u32>();
        table.insert(1, Connected);
        let t = table.clone();
        let reader = thread::spawn(move || {
            let status = t.get(&1);
            assert!(status == Some(Connected) || status.is_none());
            // The reader collects too, so the release may run here.
            for _ in 0..2 {
                crossbeam_epoch::pin().flush();
            }
        });
        assert_eq!(table.remove(&1), Some(Connected));
        for _ in 0..3 {
            crossbeam_epoch::pin().flush();
        }
        assert_eq!(table.insert(2, Failed), None);
        if table.shard_stats()[0].tombstones == 0 {
            REUSED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        reader.join().unwrap();
        assert_eq!(table.get(&1), None);
        assert_eq!(table.get(&2), Some(Failed));
        assert_eq!(table.len(), 1);
    });
    assert!(
        REUSED.load(std::sync::atomic::Ordering::Relaxed),
        "no execution reused the slot"
    );
}
