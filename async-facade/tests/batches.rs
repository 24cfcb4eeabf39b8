//! The batch calls and listings: `get_statuses`, `update_statuses`,
//! `peers(status)`.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus, ConnectionStatus::*, PeerId};
use tokio::sync::broadcast;

fn manager() -> ConnectionManager<TestDialer> {
    ConnectionManager::builder()
        .max_connections(64)
        .dialer(TestDialer::default())
        .build()
        .unwrap()
}

/// Peers of every kind of past: connected, disconnected (pooled), failed,
/// set by bookkeeping, unknown.
async fn populate(m: &ConnectionManager<TestDialer>) -> Vec<PeerId> {
    let mut peers = Vec::new();
    for n in 0..8 {
        let p = peer(OK, n);
        m.connect(p).await.unwrap();
        if n % 2 == 0 {
            m.disconnect(&p).await;
        }
        peers.push(p);
    }
    for n in 0..3 {
        let p = peer(FAIL, n);
        let _ = m.connect(p).await;
        peers.push(p);
    }
    m.update_status(peer(OK, 100), Connecting).await;
    peers.push(peer(OK, 100));
    peers.push(peer(OK, 200)); // unknown
    peers
}

#[tokio::test]
async fn get_statuses_answers_what_get_status_would() {
    let m = manager();
    let mut peers = populate(&m).await;
    peers.extend(peers.clone()); // duplicates answer twice
    let batch = m.get_statuses(&peers).await;
    let mut one_by_one = Vec::new();
    for p in &peers {
        one_by_one.push(m.get_status(p).await);
    }
    assert_eq!(batch, one_by_one);
    assert!(batch.contains(&None));
    assert!(m.get_statuses(&[]).await.is_empty());
}

fn drain(rx: &mut broadcast::Receiver<connmgr::StatusEvent>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(format!("{} {:?} {:?} {:?}", e.peer, e.from, e.to, e.reason));
    }
    out
}

/// Two managers in the same state; one gets a batch, the other the same
/// changes one call at a time: same events, same order, same statuses,
/// same pool.
#[tokio::test]
async fn update_statuses_emits_the_same_events_as_the_calls_one_by_one() {
    let (a, b) = (manager(), manager());
    let peers = populate(&a).await;
    populate(&b).await;
    let cycle = [Disconnected, Failed, Connected, Connecting, Disconnected];
    let batch: Vec<(PeerId, ConnectionStatus)> = peers
        .iter()
        .enumerate()
        .flat_map(|(i, p)| [(*p, cycle[i % 5]), (*p, cycle[(i + 2) % 5])])
        .collect();
    let (mut ra, mut rb) = (a.subscribe(), b.subscribe());
    a.update_statuses(batch.clone()).await;
    for (p, s) in batch {
        b.update_status(p, s).await;
    }
    let (ea, eb) = (drain(&mut ra), drain(&mut rb));
    assert!(ea.len() > peers.len(), "the batch changed statuses");
    assert_eq!(ea, eb);
    assert_eq!(a.get_statuses(&peers).await, b.get_statuses(&peers).await);
    assert_eq!((a.idle(), a.active()), (b.idle(), b.active()));
}

#[tokio::test]
async fn peers_lists_the_peers_of_a_status() {
    let m = manager();
    let all = populate(&m).await;
    for status in [Connected, Connecting, Disconnected, Failed] {
        let mut listed = m.peers(status);
        listed.sort();
        let mut expected: Vec<PeerId> = Vec::new();
        for p in &all {
            if m.get_status(p).await == Some(status) {
                expected.push(*p);
            }
        }
        expected.sort();
        assert_eq!(listed, expected, "{status:?}");
        assert_eq!(listed.len(), m.count(status));
    }
}
