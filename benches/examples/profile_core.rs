//! A fixed workload for `valgrind --tool=callgrind`: N lookups, updates and
//! churn operations on the status table and on DashMap, so instruction
//! counts per operation can be compared repeatably (perf has no hardware
//! counters on this machine).
//!
//! `valgrind --tool=callgrind target/release/examples/profile_core 100000`

use std::collections::hash_map::RandomState;
use std::hint::black_box;

use connmgr_benches::{peer_ids, shuffled_indices};
use connmgr_core::{ConnectionStatus, StatusTable};
use dashmap::DashMap;

const OPS: usize = 200_000;

#[inline(never)]
fn ours_get(t: &StatusTable<connmgr_core::PeerId>, keys: &[connmgr_core::PeerId], order: &[u32]) {
    for i in 0..OPS {
        black_box(t.get(&keys[order[i % order.len()] as usize]));
    }
}

#[inline(never)]
fn dash_get(
    m: &DashMap<connmgr_core::PeerId, ConnectionStatus, RandomState>,
    keys: &[connmgr_core::PeerId],
    order: &[u32],
) {
    for i in 0..OPS {
        black_box(m.get(&keys[order[i % order.len()] as usize]).map(|r| *r));
    }
}

#[inline(never)]
fn ours_set(t: &StatusTable<connmgr_core::PeerId>, keys: &[connmgr_core::PeerId], order: &[u32]) {
    for i in 0..OPS {
        let s = if i & 1 == 0 {
            ConnectionStatus::Connected
        } else {
            ConnectionStatus::Disconnected
        };
        black_box(t.set(&keys[order[i % order.len()] as usize], s));
    }
}

#[inline(never)]
fn dash_set(
    m: &DashMap<connmgr_core::PeerId, ConnectionStatus, RandomState>,
    keys: &[connmgr_core::PeerId],
    order: &[u32],
) {
    for i in 0..OPS {
        let s = if i & 1 == 0 {
            ConnectionStatus::Connected
        } else {
            ConnectionStatus::Disconnected
        };
        if let Some(mut v) = m.get_mut(&keys[order[i % order.len()] as usize]) {
            *v = s;
        }
    }
}

#[inline(never)]
fn ours_churn(t: &StatusTable<connmgr_core::PeerId>, fresh: &[connmgr_core::PeerId]) {
    for i in 0..OPS {
        let k = fresh[i % fresh.len()];
        t.insert(k, ConnectionStatus::Connecting);
        black_box(t.remove(&k));
    }
}

#[inline(never)]
fn dash_churn(
    m: &DashMap<connmgr_core::PeerId, ConnectionStatus, RandomState>,
    fresh: &[connmgr_core::PeerId],
) {
    for i in 0..OPS {
        let k = fresh[i % fresh.len()];
        m.insert(k, ConnectionStatus::Connecting);
        black_box(m.remove(&k));
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let keys = peer_ids(n, 1);
    let order = shuffled_indices(n, 2);
    let fresh = peer_ids(OPS, 3); // never-seen peers, as `core/churn` inserts
    let t = StatusTable::new();
    let m = DashMap::with_hasher(RandomState::new());
    for &k in &keys {
        t.insert(k, ConnectionStatus::Connected);
        m.insert(k, ConnectionStatus::Connected);
    }
    ours_get(&t, &keys, &order);
    dash_get(&m, &keys, &order);
    ours_set(&t, &keys, &order);
    dash_set(&m, &keys, &order);
    ours_churn(&t, &fresh);
    dash_churn(&m, &fresh);
}
