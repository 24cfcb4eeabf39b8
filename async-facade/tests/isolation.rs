#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)
//! One peer's trouble never touches another peer: 64 peers "A", whose
//! connections take 2 ms to close, are connected, disconnected and set
//! Failed over and over while 64 healthy peers "B" cycle `connect` and
//! `disconnect` 256 times each. Every B connect after the first reuses B's
//! pooled connection: B dials once per peer and none of B's connections is
//! closed.
//!
//! The manager's record map has at most 128 shards, so the 64 A peers and
//! the 64 B peers share shards (with 16 shards, nearly every shard holds
//! several of each).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connmgr::{ConnectionManager, ConnectionStatus, Dialer, PeerId};

const A: u8 = 0xA;
const B: u8 = 0xB;
const PEERS: u32 = 64;
const CYCLES: usize = 256;

fn peer(kind: u8, n: u32) -> PeerId {
    let mut b = [0u8; 32];
    b[0] = kind;
    b[1..5].copy_from_slice(&n.to_le_bytes());
    PeerId::from_bytes(b)
}

/// Dials and closes, counted per kind of peer (A, B).
#[derive(Debug, Default)]
struct Counts {
    dials: [AtomicUsize; 2],
    closed: [AtomicUsize; 2],
}

fn kind(p: &PeerId) -> usize {
    usize::from(p.as_bytes()[0] == B)
}

/// A connection; an A connection takes 2 ms to close.
#[derive(Debug)]
struct SlowConn {
    kind: usize,
    counts: Arc<Counts>,
}

impl Drop for SlowConn {
    fn drop(&mut self) {
        if self.kind == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.counts.closed[self.kind].fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Debug, Default)]
struct CountingDialer(Arc<Counts>);

impl Dialer for CountingDialer {
    type Conn = SlowConn;

    async fn dial(&self, peer: &PeerId) -> io::Result<SlowConn> {
        let kind = kind(peer);
        self.0.dials[kind].fetch_add(1, Ordering::SeqCst);
        Ok(SlowConn {
            kind,
            counts: self.0.clone(),
        })
    }
}

#[test]
fn failures_of_some_peers_never_close_or_bypass_the_pooled_connections_of_others() {
    // A's slow closes block the threads they run on: A gets a runtime of
    // its own, so that B's cycles are not starved of workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let a_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dialer = CountingDialer::default();
    let counts = dialer.0.clone();
    let m = ConnectionManager::builder()
        .max_connections(2 * PEERS as usize)
        .pool_timeout(Duration::from_secs(600))
        .dialer(dialer)
        .build()
        .unwrap();
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let troubled: Vec<_> = (0..PEERS)
            .map(|i| {
                let (m, stop) = (m.clone(), stop.clone());
                a_rt.spawn(async move {
                    let a = peer(A, i);
                    while !stop.load(Ordering::Acquire) {
                        let _ = m.connect(a).await;
                        m.disconnect(&a).await;
                        m.update_status(a, ConnectionStatus::Failed).await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let healthy: Vec<_> = (0..PEERS)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move {
                    let b = peer(B, i);
                    for _ in 0..CYCLES {
                        m.connect(b).await.unwrap();
                        m.disconnect(&b).await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in healthy {
            t.await.unwrap();
        }
        stop.store(true, Ordering::Release);
        for t in troubled {
            t.await.unwrap();
        }
    });
    let a_dials = counts.dials[0].load(Ordering::SeqCst);
    let b_dials = counts.dials[1].load(Ordering::SeqCst);
    let b_closed = counts.closed[1].load(Ordering::SeqCst);
    eprintln!("A dials {a_dials}; B dials {b_dials}, B closed {b_closed}");
    assert!(a_dials >= PEERS as usize, "the A peers did cycle");
    assert_eq!(
        (b_dials, b_closed),
        (PEERS as usize, 0),
        "B dials and B connections closed"
    );
    assert!(m.idle() >= PEERS as usize, "every B peer idles in the pool");
}
