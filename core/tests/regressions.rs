//! Regression tests, each named after what it guards and holding a
//! minimal reproducer (some were found by the fuzz targets in `fuzz/`).

use std::collections::hash_map::RandomState;

use connmgr_core::{ConnectionStatus::*, StatusTable};

/// A hasher for keys that write one `u64`, whose low 16 bits are always 0:
/// entries get no tag, so a rehash must call the key's `Hash` to place them.
#[derive(Default)]
struct NoTag(u64);

impl std::hash::Hasher for NoTag {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("keys write one u64")
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) << 16;
    }
}

type NoTags = std::hash::BuildHasherDefault<NoTag>;

/// A generation read before a removal never matches the key's next entry.
/// Were a new entry's generation seeded from a per-shard counter advancing
/// by one per insert, while a status change advances the entry's generation
/// by one, a key inserted (seed 0), changed once (generation 1), removed and
/// inserted again (seed 1) would be back at generation 1, and
/// `set_if_generation` with the stale view would overwrite the new entry,
/// which its docs rule out ("a stale view, including one of a removed and
/// re-inserted key, never overwrites a newer entry"). The
/// `status_table` fuzz target's reproducer.
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

/// A rehash freezes every slot of the old array, then hashes keys whose tag
/// is unknown (low hash bits 0) to place them. A panic in the key's `Hash`
/// there must not leave the shard frozen with no successor (every later
/// insert or remove on it would wait forever): the freeze is undone on
/// unwind, the panic reaches the caller, and the shard goes on.
#[test]
fn a_hash_panic_during_a_rehash_leaves_the_shard_usable() {
    use std::hash::{Hash, Hasher};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    static ARMED: AtomicBool = AtomicBool::new(false);
    /// Key 0's `Hash` panics while `ARMED`.
    #[derive(PartialEq, Eq, Debug, Clone, Copy)]
    struct Key(u64);
    impl Hash for Key {
        fn hash<H: Hasher>(&self, h: &mut H) {
            assert!(!(self.0 == 0 && ARMED.load(SeqCst)), "hash panics");
            h.write_u64(self.0);
        }
    }

    let table = Arc::new(StatusTable::with_shards(1, 0, NoTags::default()).unwrap());
    table.insert(Key(0), Connected);
    ARMED.store(true, SeqCst);
    // New keys until one grows the shard: its rehash hashes key 0.
    let mut next = 1;
    let panicked = loop {
        assert!(next < 1000, "the shard never grew");
        let k = Key(next);
        next += 1;
        if catch_unwind(AssertUnwindSafe(|| table.insert(k, Connecting))).is_err() {
            break k;
        }
    };
    ARMED.store(false, SeqCst);
    assert_eq!(table.get(&Key(0)), Some(Connected), "readers go on");

    // Off this thread, so a frozen shard fails the test instead of hanging it.
    let (done, finished) = mpsc::channel();
    let t = Arc::clone(&table);
    std::thread::spawn(move || {
        // The insert that panicked did not happen; this one does.
        t.insert(panicked, Connecting);
        for k in next..next + 100 {
            t.insert(Key(k), Connecting);
        }
        assert_eq!(t.remove(&Key(1)), Some(Connecting));
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("inserts and removes on the shard finished");
    assert_eq!(table.get(&Key(0)), Some(Connected));
    assert_eq!(table.get(&panicked), Some(Connecting));
    assert_eq!(table.get(&Key(1)), None);
    assert_eq!(table.len() as u64, next + 100 - 1);
}

/// `insert` of a key that is present is a transition, which must never
/// wait for a rehash of its shard (by meeting the frozen slot and queueing
/// on the grow lock). Here a rehash is held
/// open inside the key's `Hash` while another thread inserts a present key.
#[cfg(not(miri))]
#[test]
fn insert_of_a_present_key_does_not_wait_for_a_rehash() {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// 0: plain; 1: key 0's `Hash` blocks until 2.
    static MODE: AtomicU8 = AtomicU8::new(0);
    static ENTERED: AtomicBool = AtomicBool::new(false);
    #[derive(PartialEq, Eq, Debug, Clone, Copy)]
    struct Key(u64);
    impl Hash for Key {
        fn hash<H: Hasher>(&self, h: &mut H) {
            if self.0 == 0 && MODE.load(SeqCst) == 1 {
                ENTERED.store(true, SeqCst);
                while MODE.load(SeqCst) == 1 {
                    std::thread::yield_now();
                }
            }
            h.write_u64(self.0);
        }
    }

    let table = Arc::new(StatusTable::with_shards(1, 0, NoTags::default()).unwrap());
    table.insert(Key(0), Connected);
    table.insert(Key(1), Connecting); // the present key
    MODE.store(1, SeqCst);
    let grower = {
        let t = Arc::clone(&table);
        std::thread::spawn(move || {
            // New keys until one grows the shard; that rehash blocks in
            // key 0's `Hash` until released.
            let mut k = 2;
            while !ENTERED.load(SeqCst) {
                t.insert(Key(k), Connecting);
                k += 1;
            }
        })
    };
    while !ENTERED.load(SeqCst) {
        std::thread::yield_now();
    }
    let (done, finished) = mpsc::channel();
    let t = Arc::clone(&table);
    std::thread::spawn(move || done.send(t.insert(Key(1), Failed)).unwrap());
    let before = finished.recv_timeout(Duration::from_secs(30));
    MODE.store(2, SeqCst); // let the rehash finish either way
    grower.join().unwrap();
    assert_eq!(
        before.expect("the insert of a present key finished during the rehash"),
        Some(Connecting)
    );
    assert_eq!(table.get(&Key(1)), Some(Failed));
}
