// Fuzz body: `StatusTable` against a `HashMap` model.
//
// Included (`include!`) by `fuzz/fuzz_targets/status_table.rs` and by
// `core/tests/fuzz_bodies.rs`; keep it free of inner attributes and
// crate-level items. Every answer of the table is checked: returned
// statuses, errors and the entry info they carry, generations (new per
// status change and insert, never one the key had before; unchanged by a
// no-op; a stale one never matches), `len`,
// `count` per status, `get_many` after every step, `for_each` (every key
// exactly once) and `shard_stats`.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use connmgr_core::{ConnectionStatus, EntryInfo, Error, StatusTable, MAX_SHARDS};

/// The generation field's width (documented: wraps at 2^24).
const GEN_MASK: u32 = (1 << 24) - 1;

/// Sends every key to the same shard, slot and tag.
#[derive(Default)]
pub struct Collide;
impl Hasher for Collide {
    fn finish(&self) -> u64 {
        0x5eed
    }
    fn write(&mut self, _: &[u8]) {}
}

/// A weak hash: the key byte itself, so neighbouring keys share shards
/// and probe runs.
#[derive(Default)]
pub struct Identity(u64);
impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x0101_0101_0101_0101)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0 << 8 | u64::from(b);
        }
    }
}

include!("status.rs");

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum HasherKind {
    Keyed,
    Collide,
    Identity,
}

#[derive(Arbitrary, Debug)]
pub struct Setup {
    /// log2 of the shard count (clamped to `MAX_SHARDS`).
    shard_bits: u8,
    /// Initial capacity (small, so shards grow and shrink).
    capacity: u8,
    hasher: HasherKind,
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    Insert(u8, St),
    TryInsert(u8, St),
    Set(u8, St),
    Cas(u8, St, St),
    /// `set_if_generation` with the current generation plus `delta`
    /// (0: must succeed; otherwise must conflict).
    SetIfGeneration(u8, u8, St),
    /// `set_if_generation` with the generation the key had before its last
    /// removal: a stale handle must never match a re-inserted key.
    SetIfStale(u8, St),
    Remove(u8),
    RemoveIfStatus(u8, St),
    Get(u8),
    Info(u8),
    Contains(u8),
    RetainNot(St),
    /// Keeps keys with `key % (m + 1) != 0`.
    RetainModulo(u8),
    Clear,
    ForEach,
    ShardStats,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    status: ConnectionStatus,
    generation: u32,
    since: Instant,
}

struct Model {
    map: HashMap<u8, Entry>,
    /// Generation of each key when it was last removed.
    stale: HashMap<u8, u32>,
    /// Every generation each key has had: unique within the last 2^24
    /// changes of its shard (documented), and inputs are far shorter.
    history: HashMap<u8, std::collections::HashSet<u32>>,
}

/// Runs one input; panics on the first answer that differs from the model.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let ops = decode_ops(&mut u);
    let shards = (1usize << (setup.shard_bits % 9)).min(MAX_SHARDS);
    let capacity = usize::from(setup.capacity % 64);
    match setup.hasher {
        HasherKind::Keyed => {
            // SipHash, as `RandomState`, but with fixed keys: a fuzz body
            // must be deterministic to be replayable.
            let t = StatusTable::with_shards(
                shards,
                capacity,
                BuildHasherDefault::<DefaultHasher>::default(),
            )
            .unwrap();
            check(&t, &ops);
        }
        HasherKind::Collide => {
            let t = StatusTable::with_shards(
                shards,
                capacity,
                BuildHasherDefault::<Collide>::default(),
            )
            .unwrap();
            check(&t, &ops);
        }
        HasherKind::Identity => {
            let t = StatusTable::with_shards(
                shards,
                capacity,
                BuildHasherDefault::<Identity>::default(),
            )
            .unwrap();
            check(&t, &ops);
        }
    }
}

fn check<S: BuildHasher>(table: &StatusTable<u8, S>, ops: &[Op]) {
    let mut m = Model {
        map: HashMap::new(),
        stale: HashMap::new(),
        history: HashMap::new(),
    };
    for (step, &op) in ops.iter().enumerate() {
        apply(table, &mut m, op);
        // Counters after every operation: exact (single thread).
        assert_eq!(table.len(), m.map.len(), "len after step {step} {op:?}");
        assert_eq!(table.is_empty(), m.map.is_empty());
        for s in ConnectionStatus::ALL {
            let want = m.map.values().filter(|e| e.status == s).count();
            assert_eq!(
                table.count(s),
                want,
                "count({s:?}) after step {step} {op:?}"
            );
        }
        get_many_matches(table, &m, step);
    }
    // Final full comparison.
    for_each_matches(table, &m);
    for (k, e) in &m.map {
        assert_info(table.info(k), e, "final");
    }
}

/// `get_many` over a key list that changes with `step`: every present
/// key, then up to 36 keys picked by `step` (mostly absent ones, and
/// repeats), then the first present key again; so lists run from empty
/// to past two batch windows. Each answer must be the model's.
fn get_many_matches<S: BuildHasher>(table: &StatusTable<u8, S>, m: &Model, step: usize) {
    let mut keys: Vec<u8> = m.map.keys().copied().collect();
    keys.extend((0..step % 37).map(|i| (step + i * i) as u8));
    if let Some(&first) = keys.first() {
        keys.push(first);
    }
    let mut out = vec![Some(ConnectionStatus::Failed); 3];
    table.get_many(&keys, &mut out);
    assert_eq!(out.len(), keys.len(), "get_many: one answer per key");
    for (k, got) in keys.iter().zip(&out) {
        assert_eq!(*got, m.map.get(k).map(|e| e.status), "get_many({k}) at step {step}");
    }
}

fn assert_info(got: Option<EntryInfo>, want: &Entry, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: key missing, model has {want:?}"));
    assert_eq!(got.status, want.status, "{what}: status");
    assert_eq!(got.generation, want.generation, "{what}: generation");
    assert_eq!(got.since, want.since, "{what}: since");
}

/// Checks that `generation` is new for `k` and remembers it.
fn fresh_generation(m: &mut Model, k: u8, generation: u32) {
    assert!(
        generation <= GEN_MASK,
        "generation {generation} wider than 24 bits"
    );
    assert!(
        m.history.entry(k).or_default().insert(generation),
        "key {k} got generation {generation} a second time"
    );
}

/// Records a status change the table reported as `info` for `k`, checking
/// that the generation changed and `since` did not go back.
fn changed(m: &mut Model, k: u8, before: Entry, info: EntryInfo) {
    // Generations come from the shard's version clock, so a change gets a
    // fresh one that no earlier life of the key had.
    assert_ne!(
        info.generation, before.generation,
        "a status change takes a new generation"
    );
    fresh_generation(m, k, info.generation);
    assert!(info.since >= before.since, "since went backwards");
    assert!(info.since <= Instant::now(), "since is in the future");
    m.map.insert(
        k,
        Entry {
            status: info.status,
            generation: info.generation,
            since: info.since,
        },
    );
}

/// Learns the info of a key just inserted (generation seed, since).
fn inserted<S: BuildHasher>(table: &StatusTable<u8, S>, m: &mut Model, k: u8, s: ConnectionStatus) {
    let info = table.info(&k).expect("a key just inserted is present");
    assert_eq!(info.status, s);
    if let Some(&g) = m.stale.get(&k) {
        assert_ne!(
            info.generation, g,
            "a re-inserted key must not reuse its old generation"
        );
    }
    fresh_generation(m, k, info.generation);
    m.map.insert(
        k,
        Entry {
            status: s,
            generation: info.generation,
            since: info.since,
        },
    );
}

/// The table changed `k` from `before` to `s` (or did nothing if equal).
fn transitioned<S: BuildHasher>(
    table: &StatusTable<u8, S>,
    m: &mut Model,
    k: u8,
    before: Entry,
    s: ConnectionStatus,
) {
    let info = table.info(&k).expect("present");
    if before.status == s {
        assert_info(Some(info), &before, "no-op transition changes nothing");
    } else {
        assert_eq!(info.status, s);
        changed(m, k, before, info);
    }
}

fn removed(m: &mut Model, k: u8) -> Option<Entry> {
    let e = m.map.remove(&k)?;
    m.stale.insert(k, e.generation);
    Some(e)
}

fn apply<S: BuildHasher>(table: &StatusTable<u8, S>, m: &mut Model, op: Op) {
    match op {
        Op::Insert(k, s) => {
            let s = s.get();
            let before = m.map.get(&k).copied();
            assert_eq!(table.insert(k, s), before.map(|e| e.status), "{op:?}");
            match before {
                None => inserted(table, m, k, s),
                Some(b) => transitioned(table, m, k, b, s),
            }
        }
        Op::TryInsert(k, s) => {
            let s = s.get();
            match (table.try_insert(k, s), m.map.get(&k).copied()) {
                (Ok(info), None) => {
                    assert_eq!(info.status, s);
                    inserted(table, m, k, s);
                    assert_eq!(m.map[&k].generation, info.generation);
                }
                (Err(Error::Occupied { actual }), Some(e)) => {
                    assert_info(Some(actual), &e, "try_insert Occupied");
                    assert_info(table.info(&k), &e, "try_insert leaves it");
                }
                (got, want) => panic!("{op:?}: table {got:?}, model {want:?}"),
            }
        }
        Op::Set(k, s) => {
            let s = s.get();
            match (table.set(&k, s), m.map.get(&k).copied()) {
                (None, None) => assert!(!table.contains_key(&k), "set inserted"),
                (Some(info), Some(e)) => {
                    assert_info(Some(info), &e, "set returns the previous entry");
                    transitioned(table, m, k, e, s);
                }
                (got, want) => panic!("{op:?}: table {got:?}, model {want:?}"),
            }
        }
        Op::Cas(k, from, to) => {
            let (from, to) = (from.get(), to.get());
            match (table.compare_and_set(&k, from, to), m.map.get(&k).copied()) {
                (Ok(info), Some(e)) if e.status == from => {
                    assert_eq!(info.status, to);
                    if from == to {
                        assert_info(Some(info), &e, "cas to the same status");
                    } else {
                        changed(m, k, e, info);
                    }
                }
                (Err(Error::Conflict { actual }), Some(e)) if e.status != from => {
                    assert_info(Some(actual), &e, "cas Conflict");
                }
                (Err(Error::NotFound), None) => {}
                (got, want) => panic!("{op:?}: table {got:?}, model {want:?}"),
            }
        }
        Op::SetIfGeneration(k, delta, to) => {
            let to = to.get();
            let Some(e) = m.map.get(&k).copied() else {
                assert_eq!(table.set_if_generation(&k, 0, to), Err(Error::NotFound));
                return;
            };
            let g = e.generation.wrapping_add(u32::from(delta)) & GEN_MASK;
            match table.set_if_generation(&k, g, to) {
                Ok(info) => {
                    assert_eq!(delta, 0, "{op:?}: a wrong generation matched");
                    assert_eq!(info.status, to);
                    if e.status == to {
                        assert_info(Some(info), &e, "set_if_generation, same status");
                    } else {
                        changed(m, k, e, info);
                    }
                }
                Err(Error::Conflict { actual }) => {
                    assert_ne!(delta, 0, "{op:?}: the current generation was refused");
                    assert_info(Some(actual), &e, "set_if_generation Conflict");
                }
                Err(other) => panic!("{op:?}: {other:?}"),
            }
        }
        Op::SetIfStale(k, to) => {
            let Some(&g) = m.stale.get(&k) else { return };
            let current = m.map.get(&k).copied();
            let got = table.set_if_generation(&k, g, to.get());
            match current {
                None => assert_eq!(got, Err(Error::NotFound), "{op:?}"),
                Some(e) if e.generation != g => {
                    assert!(
                        matches!(got, Err(Error::Conflict { .. })),
                        "{op:?}: stale matched: {got:?}"
                    );
                }
                // The re-inserted key's generation ran into the old one
                // (possible only after 2^24 changes); treat as a plain set.
                Some(e) => {
                    let info = got.expect("generation matches");
                    if e.status != to.get() {
                        changed(m, k, e, info);
                    }
                }
            }
        }
        Op::Remove(k) => {
            let want = removed(m, k).map(|e| e.status);
            assert_eq!(table.remove(&k), want, "{op:?}");
            assert!(!table.contains_key(&k));
        }
        Op::RemoveIfStatus(k, s) => {
            let s = s.get();
            let want = m.map.get(&k).is_some_and(|e| e.status == s);
            if want {
                removed(m, k);
            }
            assert_eq!(table.remove_if_status(&k, s), want, "{op:?}");
        }
        Op::Get(k) => assert_eq!(table.get(&k), m.map.get(&k).map(|e| e.status), "{op:?}"),
        Op::Info(k) => match m.map.get(&k) {
            Some(e) => assert_info(table.info(&k), e, "info"),
            None => assert_eq!(table.info(&k), None),
        },
        Op::Contains(k) => assert_eq!(table.contains_key(&k), m.map.contains_key(&k)),
        Op::RetainNot(s) => {
            let s = s.get();
            let mut seen = 0;
            table.retain(|_, info| {
                seen += 1;
                info.status != s
            });
            assert_eq!(seen, m.map.len(), "retain visits every key once");
            let gone: Vec<u8> = m
                .map
                .iter()
                .filter(|(_, e)| e.status == s)
                .map(|(&k, _)| k)
                .collect();
            for k in gone {
                removed(m, k);
            }
        }
        Op::RetainModulo(d) => {
            let d = d.saturating_add(1);
            table.retain(|&k, _| k % d != 0);
            let gone: Vec<u8> = m.map.keys().copied().filter(|k| k % d == 0).collect();
            for k in gone {
                removed(m, k);
            }
        }
        Op::Clear => {
            table.clear();
            let all: Vec<u8> = m.map.keys().copied().collect();
            for k in all {
                removed(m, k);
            }
        }
        Op::ForEach => for_each_matches(table, m),
        Op::ShardStats => {
            let stats = table.shard_stats();
            assert_eq!(stats.len(), table.shards());
            assert_eq!(stats.iter().map(|s| s.len).sum::<usize>(), m.map.len());
            for s in &stats {
                // Live keys and tombstones fill at most 4/5 of an array
                // (rounded down; all of a one-bucket array under Miri).
                let limit = if cfg!(miri) { s.capacity } else { s.capacity * 4 / 5 };
                assert!(s.len + s.tombstones <= limit, "{s:?}");
                // Every tombstone keeps its key for the key's return.
                assert_eq!(s.dead_entries, s.tombstones, "{s:?}");
                // Runs are counted in buckets of 3 slots.
                assert!(s.longest_run <= s.capacity / 3, "{s:?}");
            }
            assert!(table.memory_usage() > 0);
        }
    }
}

fn for_each_matches<S: BuildHasher>(table: &StatusTable<u8, S>, m: &Model) {
    let mut seen: HashMap<u8, EntryInfo> = HashMap::new();
    table.for_each(|&k, info| {
        assert!(seen.insert(k, info).is_none(), "for_each visited {k} twice");
    });
    assert_eq!(seen.len(), m.map.len(), "for_each visits every key");
    for (k, info) in seen {
        let want = m
            .map
            .get(&k)
            .unwrap_or_else(|| panic!("for_each: unknown key {k}"));
        assert_info(Some(info), want, "for_each");
    }
}

include!("decode.rs");
