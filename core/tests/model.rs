//! Differential tests: every answer of the table against a std `HashMap`
//! model, over random operation sequences (proptest shrinks failures).
//!
//! Small key spaces and a tiny initial capacity force rebuilds (growth and
//! shrinking) and tombstone reuse; a constant hasher puts every key in one
//! probe chain.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use connmgr_core::{ConnectionStatus, Error, StatusTable};
use proptest::prelude::*;

/// Sends every key to the same shard, slot and tag.
#[derive(Default)]
struct Collide;
impl Hasher for Collide {
    fn finish(&self) -> u64 {
        0x5eed
    }
    fn write(&mut self, _: &[u8]) {}
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, ConnectionStatus),
    TryInsert(u8, ConnectionStatus),
    Set(u8, ConnectionStatus),
    Cas(u8, ConnectionStatus, ConnectionStatus),
    SetIfStaleGeneration(u8, ConnectionStatus),
    Remove(u8),
    RemoveIfStatus(u8, ConnectionStatus),
    Get(u8),
    /// `get_many` over these keys (duplicates and absent keys included).
    GetMany(Vec<u8>),
    RetainNot(ConnectionStatus),
    Clear,
}

fn status() -> impl Strategy<Value = ConnectionStatus> {
    prop::sample::select(ConnectionStatus::ALL.to_vec())
}

fn op(keys: u8) -> impl Strategy<Value = Op> {
    let k = 0..keys;
    prop_oneof![
        6 => (k.clone(), status()).prop_map(|(k, s)| Op::Insert(k, s)),
        2 => (k.clone(), status()).prop_map(|(k, s)| Op::TryInsert(k, s)),
        2 => (k.clone(), status()).prop_map(|(k, s)| Op::Set(k, s)),
        3 => (k.clone(), status(), status()).prop_map(|(k, a, b)| Op::Cas(k, a, b)),
        1 => (k.clone(), status()).prop_map(|(k, s)| Op::SetIfStaleGeneration(k, s)),
        4 => k.clone().prop_map(Op::Remove),
        1 => (k.clone(), status()).prop_map(|(k, s)| Op::RemoveIfStatus(k, s)),
        4 => k.clone().prop_map(Op::Get),
        // Up to 40 keys: empty lists, one window, and more than two
        // windows of 16 (keys drawn from a space a little wider than the
        // table's, so some are always absent).
        2 => prop::collection::vec(0..keys.saturating_add(8), 0..40).prop_map(Op::GetMany),
        1 => status().prop_map(Op::RetainNot),
        1 => Just(Op::Clear),
    ]
}

fn check<S: BuildHasher>(table: &StatusTable<u8, S>, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model: HashMap<u8, ConnectionStatus> = HashMap::new();
    // Generations seen for removed keys: a stale generation must never match.
    let mut stale: HashMap<u8, u32> = HashMap::new();
    for op in ops {
        match *op {
            Op::Insert(k, s) => {
                let before = model.insert(k, s);
                prop_assert_eq!(table.insert(k, s), before);
            }
            Op::TryInsert(k, s) => match (table.try_insert(k, s), model.get(&k)) {
                (Ok(info), None) => {
                    prop_assert_eq!(info.status, s);
                    model.insert(k, s);
                }
                (Err(Error::Occupied { actual }), Some(&m)) => prop_assert_eq!(actual.status, m),
                (got, want) => prop_assert!(false, "try_insert {:?} vs model {:?}", got, want),
            },
            Op::Set(k, s) => {
                let got = table.set(&k, s).map(|i| i.status);
                let want = model.get_mut(&k).map(|m| std::mem::replace(m, s));
                prop_assert_eq!(got, want);
            }
            Op::Cas(k, from, to) => {
                match (table.compare_and_set(&k, from, to), model.get_mut(&k)) {
                    (Ok(info), Some(m)) if *m == from => {
                        prop_assert_eq!(info.status, to);
                        *m = to;
                    }
                    (Err(Error::Conflict { actual }), Some(m)) if *m != from => {
                        prop_assert_eq!(actual.status, *m)
                    }
                    (Err(Error::NotFound), None) => {}
                    (got, want) => prop_assert!(false, "cas {:?} vs model {:?}", got, want),
                }
            }
            Op::SetIfStaleGeneration(k, s) => {
                if let Some(&g) = stale.get(&k) {
                    let current = table.info(&k).map(|i| i.generation);
                    if current != Some(g) {
                        prop_assert!(table.set_if_generation(&k, g, s).is_err());
                    }
                }
            }
            Op::Remove(k) => {
                if let Some(info) = table.info(&k) {
                    stale.insert(k, info.generation);
                }
                prop_assert_eq!(table.remove(&k), model.remove(&k));
            }
            Op::RemoveIfStatus(k, s) => {
                let want = model.get(&k) == Some(&s);
                if want {
                    model.remove(&k);
                }
                prop_assert_eq!(table.remove_if_status(&k, s), want);
            }
            Op::Get(k) => prop_assert_eq!(table.get(&k), model.get(&k).copied()),
            Op::GetMany(ref keys) => {
                let mut out = vec![None; 5];
                table.get_many(keys, &mut out);
                let want: Vec<_> = keys.iter().map(|k| table.get(k)).collect();
                prop_assert_eq!(&out, &want);
                let model_says: Vec<_> = keys.iter().map(|k| model.get(k).copied()).collect();
                prop_assert_eq!(out, model_says);
            }
            Op::RetainNot(s) => {
                table.retain(|_, info| info.status != s);
                model.retain(|_, m| *m != s);
            }
            Op::Clear => {
                table.clear();
                model.clear();
            }
        }
        prop_assert_eq!(table.len(), model.len());
        for s in ConnectionStatus::ALL {
            prop_assert_eq!(table.count(s), model.values().filter(|&&m| m == s).count());
        }
    }
    let mut seen = HashMap::new();
    table.for_each(|k, info| {
        assert!(
            seen.insert(*k, info.status).is_none(),
            "key {k} visited twice"
        );
    });
    prop_assert_eq!(seen, model);
    Ok(())
}

// Miri interprets every instruction: a few short sequences there, the full
// search natively.
const CASES: u32 = if cfg!(miri) { 2 } else { 256 };
const OPS: usize = if cfg!(miri) { 60 } else { 400 };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn matches_hashmap_model(ops in prop::collection::vec(op(48), 1..OPS)) {
        check(&StatusTable::with_shards(2, 0, RandomState::new()).unwrap(), &ops)?;
    }

    #[test]
    fn matches_hashmap_model_with_default_layout(ops in prop::collection::vec(op(255), 1..OPS)) {
        check(&StatusTable::new(), &ops)?;
    }

    #[test]
    fn matches_hashmap_model_when_every_key_collides(ops in prop::collection::vec(op(24), 1..OPS / 2)) {
        let table = StatusTable::with_shards(1, 0, BuildHasherDefault::<Collide>::default()).unwrap();
        check(&table, &ops)?;
    }
}

#[test]
fn invalid_shard_counts_are_rejected_with_the_setting_named() {
    for bad in [0, 3, 512] {
        let err = StatusTable::<u8>::with_shards(bad, 0, RandomState::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `shards`: it must be a power of two from 1 to 256"
        );
    }
}

#[test]
fn same_status_changes_nothing_and_transitions_change_generation() {
    let table = StatusTable::new();
    table.insert(1u32, ConnectionStatus::Connecting);
    let a = table.info(&1).unwrap();
    assert_eq!(
        table.insert(1, ConnectionStatus::Connecting),
        Some(ConnectionStatus::Connecting)
    );
    assert_eq!(table.info(&1).unwrap(), a);
    table.set(&1, ConnectionStatus::Connected).unwrap();
    let b = table.info(&1).unwrap();
    assert_ne!(b.generation, a.generation);
    assert!(b.since >= a.since);
}

/// `since` is stamped from the coarse monotonic clock: it may trail the
/// change by up to a clock tick, but never lies in the future (an origin
/// anchored on the precise clock would put it up to a tick ahead).
#[test]
fn since_is_never_in_the_future() {
    let table = StatusTable::new();
    let rounds = if cfg!(miri) { 50 } else { 20_000 };
    for i in 0..rounds {
        let key = (i % 7) as u8;
        table.insert(key, ConnectionStatus::ALL[i % 4]);
        let since = table.info(&key).unwrap().since;
        assert!(since <= std::time::Instant::now(), "since is in the future");
    }
}
