//! Loom models of the status table: get vs insert vs remove vs growth vs
//! compare_and_set vs a removed key coming back, on a one- or two-shard table with 2-slot arrays (the
//! crate shrinks its sizes under `cfg(loom)`), so growth happens within a
//! few operations.
//!
//! Run with `.ci/loom.sh` (RUSTFLAGS="--cfg loom --cfg crossbeam_loom").
//!
//! Each model was checked once to fail with its ordering weakened or its fix
//! removed; what was changed is noted on the model.
#![cfg(loom)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc as StdArc, Mutex};

use connmgr_core::{ConnectionStatus::*, Error, StatusTable};
use loom::sync::Arc;
use loom::thread;

/// Loom replays each interleaving, so hashing must be the same every run:
/// SipHash with fixed keys instead of the default random ones.
type Fixed = BuildHasherDefault<DefaultHasher>;

fn one_shard<K: Hash + Eq + Send + Sync + 'static>() -> Arc<StatusTable<K, Fixed>> {
    Arc::new(StatusTable::with_shards(1, 0, Fixed::default()).unwrap())
}

/// Slots in the one shard's current array. Under loom a table starts with
/// 2 and a rehash leaves its array at most half full (3 keys: 8 slots), so
/// a model that checks its array's size after the threads are joined knows
/// that the rehash it is about took place.
fn slots<K: Hash + Eq + Send + Sync + 'static>(table: &StatusTable<K, Fixed>) -> usize {
    table.shard_stats()[0].capacity
}

/// Inserts keys 2 (Connected) and 3 (Failed) on another thread: with key 1
/// present, the second insert grows the shard.
fn spawn_grower(table: &Arc<StatusTable<u32, Fixed>>) -> thread::JoinHandle<()> {
    let t = table.clone();
    thread::spawn(move || {
        assert_eq!(t.insert(2, Connected), None);
        assert_eq!(t.insert(3, Failed), None);
    })
}

/// The keys one model execution made, each with its own drop count. Once
/// the execution is over, every key must have been dropped exactly once: a
/// second drop is a double retire (or a use after free of the key), none a
/// leak. (A single total, checked against the number made, could not see a
/// double retire of one key together with a leak of another.)
///
/// The count is checked after the execution, not inside it: garbage retired
/// to crossbeam-epoch is freed when loom drops the collector at the end of
/// each execution (flushing it from the model would take more steps than
/// loom allows).
#[derive(Clone, Default)]
struct Ledger(StdArc<Mutex<Vec<usize>>>);

impl Ledger {
    /// A new key `id`, entered in the ledger.
    fn key(&self, id: u32) -> Tracked {
        let mut drops = self.0.lock().unwrap();
        drops.push(0);
        Tracked {
            id,
            serial: drops.len() - 1,
            ledger: self.clone(),
        }
    }

    /// Checks that every key of a finished execution was dropped once.
    fn check(&self, execution: usize) {
        let drops = self.0.lock().unwrap();
        for (serial, &n) in drops.iter().enumerate() {
            assert!(
                n <= 1,
                "execution {execution}: key #{serial} was dropped {n} times"
            );
            assert!(
                n == 1,
                "execution {execution}: key #{serial} was never dropped (leaked)"
            );
        }
    }
}

/// `loom::model` with a fresh [`Ledger`] for each execution, each checked
/// once its execution is over (at the start of the next one, and after the
/// last).
fn model_with_ledger(f: impl Fn(&Ledger) + Send + Sync + 'static) {
    let finished: StdArc<Mutex<(usize, Vec<Ledger>)>> = StdArc::default();
    let record = finished.clone();
    loom::model(move || {
        let ledger = Ledger::default();
        {
            let mut done = record.lock().unwrap();
            let (checked, pending) = &mut *done;
            for l in pending.drain(..) {
                l.check(*checked);
                *checked += 1;
            }
            pending.push(ledger.clone());
        }
        f(&ledger);
    });
    let (checked, pending) = &*finished.lock().unwrap();
    for l in pending {
        l.check(*checked);
    }
}

/// A key that records its drop in its [`Ledger`].
struct Tracked {
    id: u32,
    serial: usize,
    ledger: Ledger,
}
impl PartialEq for Tracked {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for Tracked {}
impl Hash for Tracked {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.id.hash(h)
    }
}
impl std::borrow::Borrow<u32> for Tracked {
    fn borrow(&self) -> &u32 {
        &self.id
    }
}
impl Drop for Tracked {
    fn drop(&mut self) {
        self.ledger.0.lock().unwrap()[self.serial] += 1;
    }
}

/// A key that is present throughout stays visible to `get` and to
/// `compare_and_set` while both threads insert and one of them grows the
/// shard, and no insert or transition is lost across the growth.
///
/// Checked to fail: with the freeze step of `rehash` removed (old slots not
/// marked MOVED before copying), the other thread's insert lands in the old
/// array after its slot was copied and is lost (`get(&4)` is None).
#[test]
fn growth_loses_nothing() {
    loom::model(|| {
        let table = one_shard::<u32>();
        table.insert(1, Connecting);
        let writer = spawn_grower(&table);
        assert_eq!(table.insert(4, Failed), None);
        assert!(table.compare_and_set(&1, Connecting, Connected).is_ok());
        assert_eq!(table.get(&1), Some(Connected));
        writer.join().unwrap();
        assert_eq!(table.get(&4), Some(Failed));
        assert_eq!(table.get(&2), Some(Connected));
        assert_eq!(table.get(&3), Some(Failed));
        assert_eq!(table.len(), 4);
        assert_eq!(table.count(Connected), 2);
        assert_eq!(table.count(Failed), 2);
        assert!(slots(&table) > 2, "the shard did not grow");
    });
}

/// An insert of a present key, then a removal and a re-insert of it, while
/// the other thread grows the shard: the insert of the present key is a
/// transition even when its slot is frozen (the entry is shared with the new
/// array), the re-insert waits for the rehash only if it meets a frozen dead
/// slot (its own: the shard's one dead entry the budget allows at this
/// size), and nothing is lost or counted twice.
///
/// Checked to fail: with the re-insert not waiting on a frozen dead slot
/// (its CAS on the frozen slot can never succeed), loom reports the model
/// exceeding its branch limit: the insert spins on the old array forever.
/// (Checked again after the dead-entry budget came in.)
#[test]
fn present_key_transitions_through_a_frozen_slot() {
    loom::model(|| {
        let table = one_shard::<u32>();
        table.insert(1, Connecting);
        let writer = spawn_grower(&table);
        assert_eq!(table.insert(1, Connected), Some(Connecting));
        assert_eq!(table.remove(&1), Some(Connected));
        assert_eq!(table.insert(1, Failed), None);
        writer.join().unwrap();
        assert_eq!(table.get(&1), Some(Failed));
        assert_eq!(table.len(), 3);
        assert_eq!(table.count(Connected), 1);
        assert_eq!(table.count(Failed), 2);
        assert_eq!(table.count(Connecting), 0);
        assert!(slots(&table) > 2, "the shard did not grow");
    });
}

/// Two threads insert the same new key: exactly one insert sees it absent,
/// and the table holds one entry for it.
///
/// Checked to fail: with the insert CAS's success ordering weakened from
/// AcqRel to Relaxed, loom reports a causality violation on the key cell
/// (the loser reads a key whose write it has not synchronized with).
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
/// linearizable outcomes, the counters agree with it, and no key is dropped
/// twice (including when the insert replaces the removed entry in place).
///
/// Checked to fail: with the pointer-identity check dropped from
/// `mark_dead` (the remover marks whatever entry its slot holds by the time
/// its CAS retries), the remover marks the inserter's new entry dead (this
/// model's removal is within the dead-entry budget) and `get` after both
/// finished returns None where Failed is due. (Before removed keys kept
/// their slots, the mutation checked was the REMOVED-bit check in
/// `find_live`.)
#[test]
fn remove_vs_insert_vs_get() {
    remove_vs_insert_vs_get_with(false);
}

/// A removal over the dead-entry budget (the shard keeps one dead entry at
/// this size, and another key's holds it) leaves a tombstone and retires the
/// entry itself, racing an insert of the same key and a reader: the final
/// state is linearizable, the counters agree, and every key is dropped
/// exactly once (the remover and the inserter that replaced the removed
/// entry before the tombstone landed must not both retire it, nor neither).
///
/// Checked to fail: with the pointer-identity check dropped from
/// `mark_dead` (the remover marks whatever entry its slot holds by the time
/// its CAS retries), the remover makes a tombstone of the inserter's new
/// entry and retires its own entry a second time: `get` after both
/// finished returns None where Failed is due. With the tombstone path's
/// retirement of the entry removed (a leak, which the earlier check of
/// total drops against keys made could not see), the ledger fails in the
/// first execution: key #0 never dropped.
#[test]
fn remove_to_tombstone_vs_insert_vs_get() {
    remove_vs_insert_vs_get_with(true);
}

/// The body of the two remove-vs-insert models: key 1 is removed by one
/// thread and inserted again by another while the main thread reads it.
/// With `budget_taken`, key 2's dead entry first takes the shard's one
/// dead-entry slot of budget, so the removal of key 1 leaves a tombstone.
fn remove_vs_insert_vs_get_with(budget_taken: bool) {
    model_with_ledger(move |ledger| {
        let key = |id| ledger.key(id);
        {
            let table = one_shard::<Tracked>();
            table.insert(key(1), Connected);
            if budget_taken {
                table.insert(key(2), Connected);
                // Key 2's dead entry takes the budget (one, below 8 live keys).
                assert_eq!(table.remove(&2u32), Some(Connected));
            }
            let t = table.clone();
            let remover = thread::spawn(move || t.remove(&1u32));
            let t = table.clone();
            let k1 = key(1);
            let inserter = thread::spawn(move || t.insert(k1, Failed));
            let seen = table.get(&1u32);
            assert!(matches!(seen, None | Some(Connected) | Some(Failed)));
            let removed = remover.join().unwrap();
            let replaced = inserter.join().unwrap();
            let last = table.get(&1u32);
            match (removed, replaced) {
                // The insert updated the entry, then the remove took it.
                (Some(Failed), Some(Connected)) => assert_eq!(last, None),
                // The remove came first; the insert made a new entry.
                (Some(Connected), None) => assert_eq!(last, Some(Failed)),
                other => panic!("not linearizable: {other:?}"),
            }
            assert_eq!(table.len(), usize::from(last.is_some()));
            assert_eq!(table.count(Failed), usize::from(last.is_some()));
            assert_eq!(table.count(Connected), 0);
            assert!(table.get(&2u32).is_none());
        }
    });
}

/// A removal over the dead-entry budget (its CAS to a tombstone, then the
/// entry's retirement) racing a rehash that freezes and copies the same
/// slot: whichever lands first, the removed entry is retired exactly once
/// and never reachable from the new array as live, the new key survives,
/// and the counters agree.
///
/// Checked to fail: with `mark_dead` no longer stopping at a frozen slot
/// (the `is_moved` test dropped from its loop, so its CAS lands on the
/// frozen slot of the old array after the rehash copied the entry), the
/// entry is retired while the new array still holds it: the model process
/// dies with SIGSEGV (a use after free of that entry).
#[test]
fn remove_to_tombstone_vs_rehash() {
    model_with_ledger(|ledger| {
        let key = |id| ledger.key(id);
        {
            let table = one_shard::<Tracked>();
            // Key 2's dead entry takes the shard's one unit of dead-entry
            // budget; key 1 fills the 2-slot array to its limit.
            table.insert(key(2), Connected);
            assert_eq!(table.remove(&2u32), Some(Connected));
            table.insert(key(1), Connected);
            assert_eq!(slots(&table), 2);
            let t = table.clone();
            let remover = thread::spawn(move || t.remove(&1u32));
            let t = table.clone();
            let k3 = key(3);
            // The array is at its limit: this insert rehashes first.
            let inserter = thread::spawn(move || t.insert(k3, Failed));
            assert_eq!(remover.join().unwrap(), Some(Connected));
            assert_eq!(inserter.join().unwrap(), None);
            assert_eq!(table.get(&1u32), None);
            assert_eq!(table.get(&2u32), None);
            assert_eq!(table.get(&3u32), Some(Failed));
            assert_eq!(table.len(), 1);
            assert_eq!(table.count(Connected), 0);
            assert_eq!(table.count(Failed), 1);
            // Key 1 is dead in the new array (frozen first: the remover
            // marked it again there, within budget) or gone (tombstone
            // first: the rehash dropped it).
            assert!(table.shard_stats()[0].dead_entries <= 1);
        }
    });
}

/// A stale generation (read before a remove and re-insert) never overwrites
/// the newer entry, whatever the interleaving (the ABA case). The key changes
/// status once before the stale read, the shape the `status_table` fuzz
/// target found.
///
/// Checked to fail: without the removal's advance of the shard clock past
/// the removed generation (so the clock is a counter that only inserts
/// advance, while transitions add one to their entry's generation: the
/// scheme the fuzz target broke), the re-inserted entry starts at the stale
/// generation and the update lands (`get(&7)` is Failed).
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

/// Removal that shrinks a shard vs a reader: the reader sees the surviving
/// key throughout.
///
/// Four keys grow the shard to 8 slots (a rehash at 3 keys leaves 4 slots,
/// at most half full; the 4th key grows them to 8); one removal leaves 3
/// live, and the remover's second removal leaves 1 live, under 1/4 of 8:
/// that removal shrinks the shard to 2 slots while the reader looks.
///
/// Checked to fail: with `rehash` publishing the new array before copying
/// into it (store moved above the copy loop), `get(&1)` returns None.
#[test]
fn shrink_vs_get() {
    loom::model(|| {
        let table = one_shard::<u32>();
        for k in 1..=4 {
            table.insert(k, Connecting);
        }
        table.remove(&4);
        assert_eq!(slots(&table), 8);
        let t = table.clone();
        let remover = thread::spawn(move || {
            t.remove(&2);
            t.remove(&3);
        });
        assert_eq!(table.get(&1), Some(Connecting));
        remover.join().unwrap();
        assert_eq!(table.get(&1), Some(Connecting));
        assert_eq!(table.len(), 1);
        assert_eq!(slots(&table), 2, "the shard did not shrink");
    });
}

/// A removed key returning to its dead slot (the shard's one dead entry
/// its budget allows at this size) vs a rehash that drops dead entries: the
/// returning key lands in the table that survives, exactly one entry for it
/// is kept, and no key is dropped twice.
///
/// Checked to fail: with `rehash` leaving DEAD slots unfrozen (skipping the
/// freeze CAS for them, since they are not copied), the returning insert's
/// CAS lands in the old array after the rehash read it, so the insert is lost
/// (`get(&1)` is None) and the dead entry is retired twice. (Checked again
/// after the dead-entry budget came in.)
#[test]
fn returning_key_vs_rehash_of_its_dead_slot() {
    model_with_ledger(|ledger| {
        let key = |id| ledger.key(id);
        {
            let table = one_shard::<Tracked>();
            table.insert(key(1), Connected);
            assert_eq!(table.remove(&1u32), Some(Connected));
            let t = table.clone();
            let k1 = key(1);
            let returning = thread::spawn(move || t.insert(k1, Failed));
            let t = table.clone();
            let (k2, k3) = (key(2), key(3));
            let grower = thread::spawn(move || {
                t.insert(k2, Connecting);
                t.insert(k3, Connecting);
            });
            assert_eq!(returning.join().unwrap(), None);
            grower.join().unwrap();
            assert_eq!(table.get(&1u32), Some(Failed));
            assert_eq!(table.get(&2u32), Some(Connecting));
            assert_eq!(table.get(&3u32), Some(Connecting));
            assert_eq!(table.len(), 3);
            assert_eq!(table.count(Failed), 1);
            assert!(slots(&table) > 2, "the shard was not rehashed");
        }
    });
}
