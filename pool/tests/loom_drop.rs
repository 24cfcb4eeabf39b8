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
use loom::sync::Arc;
use loom::thread;

mod loom_support;
use loom_support::{Conn, Tracker};

#[test]
fn drop_pool_vs_put_vs_take() {
    loom::model(|| {
        let clock = ManualClock::new();
        let config = PoolConfig::default()
            .with_ttl(Duration::from_secs(10))
            .with_max_idle_per_key(2)
            .with_max_idle_total(2);
        let pool: Arc<IdlePool<u8, Conn, ManualClock>> =
            Arc::new(IdlePool::with_config(config, clock).unwrap());
        let t = Tracker::new();
        pool.put(1, t.conn(0)).unwrap();
        let p1 = pool.clone();
        let t1 = t.clone();
        let a = thread::spawn(move || {
            let _ = p1.put(2, t1.conn(1));
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
        assert_eq!(t.drops(0), 1);
        assert_eq!(t.drops(1), 1);
    });
}
