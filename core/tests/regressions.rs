//! Regression tests, each named after what it guards and holding a
//! minimal reproducer (some were found by the fuzz targets in `fuzz/`).

use std::collections::hash_map::RandomState;

use connmgr_core::{ConnectionStatus::*, StatusTable};

/// A hasher for keys that write one `u64`, whose low 16 bits are always 0:
/// the 19-bit fragments a bucket keeps tell only 8 classes of keys apart,
/// so keys crowd a few home buckets and lookups compare many keys.
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

/// A rebuild places every key from the hash fragment its slot keeps, and
/// never calls the key's `Hash` (or any other user code): so a `Hash` that
/// panics (or blocks) cannot leave a shard half rebuilt. Here key 0's
/// `Hash` panics while armed, and inserts of new keys grow its shard
/// several times over.
#[test]
fn a_rebuild_never_hashes_the_keys_it_moves() {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

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

    let table = StatusTable::with_shards(1, 0, NoTags::default()).unwrap();
    table.insert(Key(0), Connected);
    let start = table.shard_stats()[0].capacity;
    ARMED.store(true, SeqCst);
    let n = if cfg!(miri) { 20 } else { 1_000 };
    for k in 1..n {
        table.insert(Key(k), Connecting);
    }
    ARMED.store(false, SeqCst);
    assert!(
        table.shard_stats()[0].capacity > 4 * start,
        "the shard grew"
    );
    assert_eq!(table.get(&Key(0)), Some(Connected));
    assert_eq!(table.len() as u64, n);
}

/// `insert` of a key that is present is a transition, which must never
/// wait for the shard's writer lock. Here an insert of a new key is held
/// inside the writer lock (its key comparison under the lock blocks) while
/// another thread inserts a present key and reads it.
#[cfg(not(miri))]
#[test]
fn insert_of_a_present_key_does_not_wait_for_the_writer_lock() {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// Comparisons of key 2 with key 0 so far: the first is the insert's
    /// lock-free lookup, the second its lookup under the writer lock, which
    /// blocks until `RELEASED`.
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    static ENTERED: AtomicBool = AtomicBool::new(false);
    static RELEASED: AtomicBool = AtomicBool::new(false);
    #[derive(Debug, Clone, Copy)]
    struct Key(u64);
    impl PartialEq for Key {
        fn eq(&self, other: &Self) -> bool {
            let pair = (self.0.min(other.0), self.0.max(other.0));
            if pair == (0, 2) && SEEN.fetch_add(1, SeqCst) == 1 {
                ENTERED.store(true, SeqCst);
                while !RELEASED.load(SeqCst) {
                    std::thread::yield_now();
                }
            }
            self.0 == other.0
        }
    }
    impl Eq for Key {}
    impl Hash for Key {
        fn hash<H: Hasher>(&self, h: &mut H) {
            h.write_u64(0); // every key collides: every lookup compares keys
        }
    }

    let table = Arc::new(StatusTable::with_shards(1, 0, NoTags::default()).unwrap());
    table.insert(Key(0), Connected);
    table.insert(Key(1), Connecting); // the present key
    let writer = {
        let t = Arc::clone(&table);
        std::thread::spawn(move || t.insert(Key(2), Connecting))
    };
    while !ENTERED.load(SeqCst) {
        std::thread::yield_now();
    }
    let (done, finished) = mpsc::channel();
    let t = Arc::clone(&table);
    std::thread::spawn(move || {
        let before = t.insert(Key(1), Failed);
        done.send((before, t.get(&Key(1)))).unwrap();
    });
    let seen = finished.recv_timeout(Duration::from_secs(30));
    RELEASED.store(true, SeqCst); // let the writer finish either way
    assert_eq!(writer.join().unwrap(), None);
    assert_eq!(
        seen.expect("the insert of a present key finished while the lock was held"),
        (Some(Connecting), Some(Failed))
    );
    assert_eq!(table.len(), 3);
}

/// A capacity near `usize::MAX` panics with "capacity overflow" at once:
/// the sizing loop's arithmetic is checked (wrapping, its bucket count
/// would never reach the limit and it would loop forever in release
/// builds).
#[test]
#[should_panic(expected = "capacity overflow")]
fn usize_max_capacity_panics_with_capacity_overflow() {
    let _ = StatusTable::<u64>::with_shards(1, usize::MAX, RandomState::new());
}

/// The same through the default shard count.
#[test]
#[should_panic(expected = "capacity overflow")]
fn with_capacity_usize_max_panics_with_capacity_overflow() {
    let _ = StatusTable::<u64>::with_capacity(usize::MAX);
}

/// A capacity whose arrays fit the size arithmetic but not an allocation
/// (over `isize::MAX` bytes) panics the same way instead of trying.
#[test]
#[should_panic(expected = "capacity overflow")]
fn capacity_past_isize_max_bytes_panics_with_capacity_overflow() {
    let _ = StatusTable::<u64>::with_shards(1, usize::MAX / 64, RandomState::new());
}
