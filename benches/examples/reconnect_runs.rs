//! What reconnecting peers do to a status table's probe runs: builds a
//! table of N peers (default 1,000,000), then runs rounds of 500,000
//! reconnects (insert and remove again) over 32,768 recurring ids, printing
//! the time per reconnect, the longest run of non-empty slots in any shard
//! (the worst probe length) and the number of slots of removed keys.
//!
//! `cargo run --release -p connmgr-benches --example reconnect_runs [N]`
//!
//! Removed keys' entries are kept for their return (within the dead-entry
//! budget), so the runs stay at their built length; were every removal to
//! leave a tombstone, each reconnect would take a new slot past its own
//! earlier ones and runs would grow to hundreds of slots.

use std::time::Instant;

use connmgr_benches::peer_ids;
use connmgr_core::{ConnectionStatus, PeerId, StatusTable};

fn runs(table: &StatusTable<PeerId>) -> (usize, usize) {
    let stats = table.shard_stats();
    let longest = stats.iter().map(|s| s.longest_run).max().unwrap_or(0);
    let removed = stats.iter().map(|s| s.tombstones).sum();
    (longest, removed)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let keys = peer_ids(n, 1);
    let recurring = peer_ids(1 << 16, 3);
    let table = StatusTable::new();
    for &k in &keys {
        table.insert(k, ConnectionStatus::Connected);
    }
    let (longest, _) = runs(&table);
    println!("{n} peers built: longest run {longest} slots");
    let ops = 500_000u64;
    for round in 0..6 {
        let start = Instant::now();
        for i in 0..ops {
            let k = recurring[(i as usize * 2) & 0xffff];
            table.insert(k, ConnectionStatus::Connecting);
            table.remove(&k);
        }
        let ns = start.elapsed().as_nanos() as f64 / ops as f64;
        let (longest, removed) = runs(&table);
        println!(
            "round {round}: {ns:.1} ns per reconnect, longest run {longest} slots, \
             {removed} slots of removed keys"
        );
    }
}
