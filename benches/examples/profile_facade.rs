//! A fixed workload for `valgrind --tool=callgrind`: `get_status` and
//! `update_status` through the facade's async API (each future polled once,
//! as in the facade bench) against the status table's own `get` and
//! `insert`, so the facade's overhead per call can be counted in
//! instructions.
//!
//! `valgrind --tool=callgrind --toggle-collect='profile_facade::facade_update'
//! target/release/examples/profile_facade 100000`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use connmgr::{ConnectionManager, ConnectionStatus, PeerId};
use connmgr_benches::{peer_ids, shuffled_indices};
use connmgr_core::StatusTable;

const OPS: usize = 200_000;
const FLIP: [ConnectionStatus; 2] = [ConnectionStatus::Disconnected, ConnectionStatus::Connected];

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected to complete in its first poll"),
    }
}

#[inline(never)]
fn facade_get(m: &ConnectionManager, walk: &[PeerId]) {
    for i in 0..OPS {
        black_box(ready(m.get_status(&walk[i % walk.len()])));
    }
}

#[inline(never)]
fn facade_update(m: &ConnectionManager, walk: &[PeerId]) {
    for i in 0..OPS {
        let s = FLIP[(i / walk.len()) & 1];
        ready(m.update_status(walk[i % walk.len()], s));
    }
}

#[inline(never)]
fn table_get(t: &StatusTable<PeerId>, walk: &[PeerId]) {
    for i in 0..OPS {
        black_box(t.get(&walk[i % walk.len()]));
    }
}

#[inline(never)]
fn table_insert(t: &StatusTable<PeerId>, walk: &[PeerId]) {
    for i in 0..OPS {
        let s = FLIP[(i / walk.len()) & 1];
        black_box(t.insert(walk[i % walk.len()], s));
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let keys = peer_ids(n, 1);
    let walk: Vec<PeerId> = shuffled_indices(n, 2)
        .iter()
        .map(|&i| keys[i as usize])
        .collect();
    let m = ConnectionManager::new(n);
    let t = StatusTable::new();
    for &k in &keys {
        ready(m.update_status(k, ConnectionStatus::Connected));
        t.insert(k, ConnectionStatus::Connected);
    }
    facade_get(&m, &walk);
    table_get(&t, &walk);
    facade_update(&m, &walk);
    table_insert(&t, &walk);
}
