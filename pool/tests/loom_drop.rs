//! Loom model of the pool being dropped (last `Arc` released) while other
//! threads put and take: every connection is closed exactly once, by
//! whichever thread ends up owning it. Run by `.ci/loom.sh`.
//!
//! Fix removed once (locally, then reverted): `Fifo::drop` moving out the
//! connection of every record without winning its `CLAIMED` bit. Loom
//! failed this model with "connection 0 dropped twice" (a taker had
//! claimed it before the last handle went away).
#![cfg(loom)]

use std::time::Duration;

use connmgr_pool::{IdlePool, ManualClock, PoolConfig};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

#[derive(Clone)]
struct Tracker(Arc<[AtomicUsize; 2]>);

struct Conn(usize, Tracker);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.0)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let prev = (self.1).0[self.0].fetch_add(1, Ordering::SeqCst);
        assert_eq!(prev, 0, "connection {} dropped twice", self.0);
    }
}

#[test]
fn drop_pool_vs_put_vs_take() {
    loom::model(|| {
        let clock = ManualClock::new();
        let config = PoolConfig {
            ttl: Duration::from_secs(10),
            max_idle_per_key: 2,
            max_idle_total: 2,
        };
        let pool: Arc<IdlePool<u8, Conn, ManualClock>> =
            Arc::new(IdlePool::with_config(config, clock).unwrap());
        let t = Tracker(Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]));
        pool.put(1, Conn(0, t.clone())).unwrap();
        let p1 = pool.clone();
        let t1 = t.clone();
        let a = thread::spawn(move || {
            let _ = p1.put(2, Conn(1, t1));
            drop(p1); // may be the last handle: the pool drops here
        });
        let p2 = pool.clone();
        let b = thread::spawn(move || {
            let got = p2.take(&1);
            drop(p2);
            got.map(|c| c.0) // the taken connection drops here
        });
        drop(pool);
        a.join().unwrap();
        let got = b.join().unwrap();
        assert!(got.is_none() || got == Some(0));
        assert_eq!(t.0[0].load(Ordering::SeqCst), 1);
        assert_eq!(t.0[1].load(Ordering::SeqCst), 1);
    });
}
