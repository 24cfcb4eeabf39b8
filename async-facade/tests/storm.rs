//! Limits by kind under a storm: many concurrent connects, adopts and
//! disconnects over a few peers; at every sample each limit holds, and
//! afterwards the gauges match the statuses exactly.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, Direction, Limit};

const MAX_CONNECTIONS: usize = 16;
const MAX_INBOUND: usize = 8;
const MAX_OUTBOUND: usize = 10;
const MAX_PENDING: usize = 4;
const MAX_SOCKETS: usize = 24;
const PEERS: u32 = 40;
/// Tasks running connects, adopts and disconnects; each has at most one
/// call in flight.
const WORKERS: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_holds_under_a_storm_and_the_gauges_match_after() {
    let m = ConnectionManager::builder()
        .max_connections(MAX_CONNECTIONS)
        .max_inbound(MAX_INBOUND)
        .max_outbound(MAX_OUTBOUND)
        .max_pending_dials(MAX_PENDING)
        .max_sockets(MAX_SOCKETS)
        .dial_timeout(Duration::from_secs(5))
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let d = m.dialer().clone();
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));

    // The sampler: every limit, and what they stand for, at every sample.
    let sampler = {
        let (m, d, done, samples) = (m.clone(), d.clone(), done.clone(), samples.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                for (limit, max) in [
                    (Limit::Connections, MAX_CONNECTIONS),
                    (Limit::Inbound, MAX_INBOUND),
                    (Limit::Outbound, MAX_OUTBOUND),
                    (Limit::PendingDials, MAX_PENDING),
                    (Limit::Sockets, MAX_SOCKETS),
                ] {
                    let n = m.in_use(limit);
                    assert!(n <= max, "{limit}: {n} in use");
                }
                // Opened read first: never more than were open at once. A
                // connection handed to `adopt` was opened by the caller
                // before the manager sees it (and is closed by it if
                // refused): up to one per worker is in the caller's hands.
                let open = d.opened().saturating_sub(d.closed());
                let slack = WORKERS as usize;
                assert!(open <= MAX_SOCKETS + slack, "{open} connections open");
                assert!(m.pending_dials() <= MAX_PENDING);
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };

    // Peers of kind SLOW dial for 1..20 ms, so dials overlap.
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (m, d, refused) = (m.clone(), d.clone(), refused.clone());
            tokio::spawn(async move {
                let count = |r: connmgr::Result<()>| {
                    if matches!(r, Err(connmgr::Error::LimitReached { .. })) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                };
                for i in 0..150u32 {
                    let n = (w * 7 + i * 13) % PEERS;
                    match (w + i) % 4 {
                        0 | 1 => {
                            count(m.connect(peer(SLOW, n)).await);
                        }
                        2 => {
                            d.opened.fetch_add(1, Ordering::SeqCst);
                            let conn = Conn {
                                closed: d.closed.clone(),
                                alive: true,
                            };
                            count(m.adopt(peer(SLOW, n), conn).await);
                        }
                        _ => m.disconnect(&peer(SLOW, n)).await,
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    assert!(samples.load(Ordering::Relaxed) > 10);
    let refused = refused.load(Ordering::Relaxed);
    eprintln!("{refused} refusals");
    assert!(refused > 0, "the storm reached the limits");

    // Afterwards, exactly: every unit of a limit is a status.
    let connected: Vec<_> = (0..PEERS)
        .map(|n| peer(SLOW, n))
        .filter(|p| futures_ready(m.get_status(p)) == Some(Connected))
        .collect();
    let inbound = connected
        .iter()
        .filter(|p| m.direction(p) == Some(Direction::Inbound))
        .count();
    let outbound = connected
        .iter()
        .filter(|p| m.direction(p) == Some(Direction::Outbound))
        .count();
    assert_eq!(inbound + outbound, connected.len(), "each has a direction");
    assert_eq!(m.count(Connecting), 0);
    assert_eq!(m.in_use(Limit::Connections), connected.len());
    assert_eq!(m.in_use(Limit::Inbound), inbound);
    assert_eq!(m.in_use(Limit::Outbound), outbound);
    assert_eq!(m.in_use(Limit::PendingDials), 0);
    assert_eq!(m.pending_dials(), 0);
    let gauges = m.gauges();
    assert_eq!(gauges.connections, connected.len());
    assert_eq!(gauges.connecting, 0);
    assert_eq!(gauges.idle, m.idle());
    assert_eq!(
        m.in_use(Limit::Sockets),
        connected.len() + m.idle(),
        "every open connection is live or idle"
    );
    assert_eq!(d.opened() - d.closed(), m.in_use(Limit::Sockets));
}

/// `get_status` never waits: its future is ready at its first poll.
fn futures_ready<T>(f: impl std::future::Future<Output = T>) -> T {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("get_status waited"),
    }
}
