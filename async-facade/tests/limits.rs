//! Limits by kind (`max_connections`, `max_inbound`, `max_outbound`,
//! `max_pending_dials`, `max_sockets`), their validation, `adopt`, and the
//! socket budget.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use connmgr::{Builder, ConnectionManager, ConnectionStatus::*, Direction, Error, Limit, Reason};

fn builder() -> Builder<TestDialer> {
    ConnectionManager::builder()
        .dial_timeout(Duration::from_secs(5))
        .dialer(TestDialer::default())
}

/// A connection handed to `adopt`, counting its close.
fn inbound(d: &TestDialer) -> Conn {
    d.opened.fetch_add(1, Ordering::SeqCst);
    Conn {
        closed: d.closed.clone(),
        alive: true,
    }
}

fn refused(r: connmgr::Result<()>) -> (Limit, usize) {
    match r {
        Err(Error::LimitReached { limit, max }) => (limit, max),
        other => panic!("expected LimitReached, got {other:?}"),
    }
}

#[test]
fn invalid_settings_are_refused_by_name() {
    let cases: [(Builder, &str, &str); 8] = [
        (
            ConnectionManager::builder().max_inbound(0),
            "max_inbound",
            "at least 1",
        ),
        (
            ConnectionManager::builder().max_outbound(0),
            "max_outbound",
            "at least 1",
        ),
        (
            ConnectionManager::builder().max_pending_dials(0),
            "max_pending_dials",
            "at least 1",
        ),
        (
            ConnectionManager::builder()
                .max_connections(10)
                .max_sockets(9),
            "max_sockets",
            "at least max_connections",
        ),
        (
            ConnectionManager::builder().max_connections(0),
            "max_connections",
            "at least 1",
        ),
        (
            ConnectionManager::builder().watermarks(5, 5),
            "watermarks",
            "low below high",
        ),
        (
            ConnectionManager::builder().watermarks(6, 5),
            "watermarks",
            "low below high",
        ),
        (
            ConnectionManager::builder()
                .max_connections(10)
                .watermarks(5, 11),
            "watermarks",
            "high at most max_connections",
        ),
    ];
    for (b, setting, expected) in cases {
        match b.build() {
            Err(Error::InvalidConfig {
                setting: s,
                expected: e,
            }) => {
                assert_eq!(s, setting);
                assert!(e.contains(expected), "{e}");
            }
            other => panic!("{setting}: {other:?}"),
        }
    }
    // `max_sockets(0)` with the default 100 connections is below them.
    let err = ConnectionManager::builder()
        .max_sockets(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `max_sockets`: it must be at least max_connections"
    );
}

#[test]
fn limits_by_kind_default_from_max_connections() {
    let m = ConnectionManager::builder()
        .max_connections(7)
        .build()
        .unwrap();
    let c = m.config();
    assert_eq!(
        (
            c.max_inbound,
            c.max_outbound,
            c.max_pending_dials,
            c.max_sockets
        ),
        (7, 7, 7, 14)
    );
    assert_eq!(c.watermarks, None);
    assert_eq!(c.grace_period, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn max_outbound_refuses_connect_and_leaves_room_for_inbound() {
    let m = builder()
        .max_connections(3)
        .max_outbound(1)
        .build()
        .unwrap();
    m.connect(peer(OK, 1)).await.unwrap();
    let err = m.connect(peer(OK, 2)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "`max_outbound` limit reached: 1 outbound connections are connecting or connected"
    );
    assert_eq!(refused(Err(err)), (Limit::Outbound, 1));
    assert_eq!(m.get_status(&peer(OK, 2)).await, None, "status unchanged");
    // The refused connect gave back the unit of `max_connections` it took.
    assert_eq!(m.in_use(Limit::Connections), 1);
    m.adopt(peer(OK, 3), inbound(m.dialer())).await.unwrap();
    m.adopt(peer(OK, 4), inbound(m.dialer())).await.unwrap();
    assert_eq!(m.direction(&peer(OK, 1)), Some(Direction::Outbound));
    assert_eq!(m.direction(&peer(OK, 3)), Some(Direction::Inbound));
    assert_eq!(m.direction(&peer(OK, 9)), None);
    assert_eq!(m.in_use(Limit::Inbound), 2);
    assert_eq!(m.in_use(Limit::Outbound), 1);
    assert_eq!(m.in_use(Limit::Connections), 3);
}

#[tokio::test(start_paused = true)]
async fn max_inbound_refuses_adopt_and_closes_the_connection() {
    let m = builder().max_connections(4).max_inbound(1).build().unwrap();
    let d = m.dialer().clone();
    m.adopt(peer(OK, 1), inbound(&d)).await.unwrap();
    assert_eq!(
        refused(m.adopt(peer(OK, 2), inbound(&d)).await),
        (Limit::Inbound, 1)
    );
    assert_eq!(d.closed(), 1, "the refused connection is closed");
    assert_eq!(m.get_status(&peer(OK, 2)).await, None);
    assert_eq!(m.in_use(Limit::Connections), 1);
    assert_eq!(m.in_use(Limit::Sockets), 1);
    // Outbound still has room.
    m.connect(peer(OK, 3)).await.unwrap();
    // Once the inbound one is disconnected, its unit comes back.
    m.disconnect(&peer(OK, 1)).await;
    m.adopt(peer(OK, 2), inbound(&d)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn max_connections_counts_both_directions() {
    let m = builder().max_connections(2).build().unwrap();
    let d = m.dialer().clone();
    m.connect(peer(OK, 1)).await.unwrap();
    m.adopt(peer(OK, 2), inbound(&d)).await.unwrap();
    assert_eq!(
        refused(m.adopt(peer(OK, 3), inbound(&d)).await),
        (Limit::Connections, 2)
    );
    assert_eq!(
        refused(m.connect(peer(OK, 4)).await),
        (Limit::Connections, 2)
    );
    assert_eq!(d.closed(), 1);
    assert_eq!(m.in_use(Limit::Inbound), 1);
    assert_eq!(m.in_use(Limit::Outbound), 1);
}

#[tokio::test(start_paused = true)]
async fn max_pending_dials_refuses_a_dial_beyond_it() {
    let m = builder()
        .max_connections(4)
        .max_pending_dials(1)
        .build()
        .unwrap();
    let hung = tokio::spawn({
        let m = m.clone();
        async move { m.connect(peer(HANG, 1)).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(m.in_use(Limit::PendingDials), 1);
    assert_eq!(
        refused(m.connect(peer(OK, 2)).await),
        (Limit::PendingDials, 1)
    );
    assert_eq!(m.get_status(&peer(OK, 2)).await, None);
    assert_eq!(
        m.in_use(Limit::Connections),
        1,
        "the refusal gave its units back"
    );
    // A pooled reuse dials nothing, so it needs no pending unit.
    hung.abort();
    let _ = hung.await;
    assert_eq!(m.in_use(Limit::PendingDials), 0);
    m.connect(peer(OK, 2)).await.unwrap();
    m.disconnect(&peer(OK, 2)).await;
    m.connect(peer(OK, 2)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn adopt_makes_the_peer_connected_inbound() {
    let m = builder().build().unwrap();
    let d = m.dialer().clone();
    let mut rx = m.subscribe();
    let p = peer(OK, 1);
    m.adopt(p, inbound(&d)).await.unwrap();
    let e = rx.try_recv().unwrap();
    assert_eq!(
        (e.from, e.to, e.reason),
        (None, Some(Connected), Reason::Adopted)
    );
    assert_eq!(m.direction(&p), Some(Direction::Inbound));
    // Leased and returned like a dialed connection; disconnected, it idles
    // and a later `connect` reuses it (made live outbound: `connect` asked).
    drop(m.lease(&p).unwrap());
    m.disconnect(&p).await;
    assert_eq!(m.idle(), 1);
    m.connect(p).await.unwrap();
    assert_eq!(d.dials(), 0, "reused, not dialed");
    assert_eq!(m.direction(&p), Some(Direction::Outbound));
    assert_eq!(d.closed(), 0);
}

/// A second connection of a Connected peer is counted once: the live one
/// stays, the adopted one idles (go-libp2p's "double connection").
#[tokio::test(start_paused = true)]
async fn adopting_a_connected_peer_pools_the_second_connection() {
    let m = builder().max_connections(1).build().unwrap();
    let d = m.dialer().clone();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let mut rx = m.subscribe();
    m.adopt(p, inbound(&d)).await.unwrap();
    assert!(rx.try_recv().is_err(), "no status change");
    assert_eq!(
        m.direction(&p),
        Some(Direction::Outbound),
        "the live one stays"
    );
    assert_eq!(m.count(Connected), 1);
    assert_eq!(m.in_use(Limit::Connections), 1);
    assert_eq!(m.idle(), 1);
    assert_eq!(m.in_use(Limit::Sockets), 2);
    // The pool holds one per peer: a third is closed.
    m.adopt(p, inbound(&d)).await.unwrap();
    assert_eq!(m.idle(), 1);
    assert_eq!(d.closed(), 1);
    assert_eq!(m.in_use(Limit::Sockets), 2);
}

/// `adopt` while `connect` dials the peer: the adopted connection is live
/// at once; the dialed one idles when it lands; the dial's callers get
/// `Ok`.
#[tokio::test(start_paused = true)]
async fn adopt_during_a_dial_wins_and_the_dial_pools_its_connection() {
    let m = builder().build().unwrap();
    let d = m.dialer().clone();
    let p = peer(SLOW, 5); // dials for 6 ms
    let dialing: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.connect(p).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(m.get_status(&p).await, Some(Connecting));
    m.adopt(p, inbound(&d)).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!(m.direction(&p), Some(Direction::Inbound));
    for t in dialing {
        t.await.unwrap().unwrap();
    }
    assert_eq!(d.dials(), 1);
    assert_eq!(m.direction(&p), Some(Direction::Inbound));
    assert_eq!(m.idle(), 1, "the dialed connection idles");
    assert_eq!(m.in_use(Limit::Connections), 1);
    assert_eq!(m.in_use(Limit::Outbound), 0);
    assert_eq!(m.in_use(Limit::PendingDials), 0);
}

/// A dial that fails after an `adopt` made its peer Connected leaves the
/// adopted connection alone: its callers get `Ok`.
#[tokio::test(start_paused = true)]
async fn a_failed_dial_leaves_an_adopted_connection_alone() {
    let m = builder()
        .dial_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let d = m.dialer().clone();
    let p = peer(HANG, 1);
    let dialing = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    tokio::task::yield_now().await;
    m.adopt(p, inbound(&d)).await.unwrap();
    dialing.await.unwrap().unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert!(m.lease(&p).is_ok());
}

#[tokio::test(start_paused = true)]
async fn adopt_after_shutdown_closes_the_connection() {
    let m = builder().build().unwrap();
    let d = m.dialer().clone();
    m.shutdown().await;
    assert!(matches!(
        m.adopt(peer(OK, 1), inbound(&d)).await,
        Err(Error::ShutDown)
    ));
    assert_eq!(d.closed(), 1);
}

/// The socket budget: cycling many peers through connect and disconnect
/// never holds more connections open than `max_sockets`; the oldest idle
/// ones are closed to make room, and never cause a refusal.
#[tokio::test(start_paused = true)]
async fn the_socket_budget_bounds_open_connections() {
    let m = builder().max_connections(3).max_sockets(5).build().unwrap();
    let d = m.dialer().clone();
    let open = |d: &TestDialer| d.opened() - d.closed();
    let mut peak = 0;
    for round in 0..20u32 {
        for i in 0..3 {
            let p = peer(OK, round * 3 + i);
            m.connect(p).await.unwrap();
            peak = peak.max(open(&d));
            assert!(open(&d) <= 5, "round {round}: {} open", open(&d));
            assert_eq!(m.in_use(Limit::Sockets), open(&d));
        }
        // Adopted ones count too.
        m.disconnect(&peer(OK, round * 3)).await;
        m.adopt(peer(OK, 1000 + round), inbound(&d)).await.unwrap();
        assert!(open(&d) <= 5);
        for i in 0..3 {
            m.disconnect(&peer(OK, round * 3 + i)).await;
        }
        m.disconnect(&peer(OK, 1000 + round)).await;
        assert!(open(&d) <= 5);
        assert_eq!(m.in_use(Limit::Sockets), open(&d));
    }
    assert_eq!(peak, 5, "the budget was reached");
    assert_eq!(m.idle(), 5, "idle connections fill what the budget leaves");
}

/// Only live or leased connections can make the budget refuse: a lease
/// outliving its peer's disconnect holds a socket no idle close frees.
#[tokio::test(start_paused = true)]
async fn the_socket_budget_refuses_only_when_nothing_is_idle() {
    let m = builder().max_connections(1).max_sockets(1).build().unwrap();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    m.disconnect(&p).await;
    assert_eq!(refused(m.connect(peer(OK, 2)).await), (Limit::Sockets, 1));
    assert_eq!(m.get_status(&peer(OK, 2)).await, None);
    drop(lease); // idles: now it can make room
    assert_eq!(m.idle(), 1);
    m.connect(peer(OK, 2)).await.unwrap();
    assert_eq!(m.idle(), 0);
    assert_eq!(m.dialer().closed(), 1);
}

/// Counting connections whose drops are counted, from several threads: the
/// budget holds at every sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_budget_holds_under_concurrent_cycling() {
    let m = builder()
        .max_connections(8)
        .max_sockets(12)
        .build()
        .unwrap();
    let d = m.dialer().clone();
    let over = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4u32)
        .map(|t| {
            let (m, d, over) = (m.clone(), d.clone(), over.clone());
            tokio::spawn(async move {
                for i in 0..300u32 {
                    let p = peer(OK, t * 10_000 + i % 50);
                    let _ = m.connect(p).await;
                    // Opened read first: never more than were open at once.
                    let open = d.opened().saturating_sub(d.closed());
                    if open > 12 || m.in_use(Limit::Sockets) > 12 {
                        over.fetch_add(1, Ordering::SeqCst);
                    }
                    m.disconnect(&p).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(over.load(Ordering::SeqCst), 0);
    assert!(d.opened() - d.closed() <= 12);
    assert_eq!(m.in_use(Limit::Sockets), d.opened() - d.closed());
}

/// A duplicate of a Connected peer's connection, adopted with the socket
/// budget full, is closed and the call succeeds: neither a `Sockets`
/// refusal nor another peer's idle connection closed to pool it.
#[tokio::test]
async fn adopting_a_connected_peer_at_a_full_budget_closes_the_duplicate() {
    let m = builder()
        .max_connections(2)
        .max_sockets(2)
        .max_idle_per_peer(2)
        .build()
        .unwrap();
    let d = m.dialer().clone();
    let (p, q) = (peer(OK, 1), peer(OK, 2));
    m.connect(q).await.unwrap();
    m.disconnect(&q).await; // q's connection idles: one of the 2 sockets
    m.connect(p).await.unwrap();
    assert_eq!((m.active(), m.idle()), (1, 1));
    let closed = d.closed();
    m.adopt(p, inbound(&d)).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!(d.closed(), closed + 1, "the duplicate is closed");
    // The connection that idles is still q's: q reconnects without a dial.
    let dials = d.dials();
    m.disconnect(&p).await;
    m.connect(q).await.unwrap();
    assert_eq!(d.dials(), dials, "q's idle connection stayed");
}

/// An adopt refused by `max_inbound` with the socket budget full closes
/// only the adopted connection, no idle one.
#[tokio::test]
async fn a_refused_adopt_closes_no_idle_connection() {
    let m = builder()
        .max_connections(2)
        .max_inbound(1)
        .max_sockets(2)
        .build()
        .unwrap();
    let d = m.dialer().clone();
    m.adopt(peer(OK, 1), inbound(&d)).await.unwrap();
    let b = peer(OK, 2);
    m.connect(b).await.unwrap();
    m.disconnect(&b).await;
    assert_eq!(m.idle(), 1);
    let r = m.adopt(peer(OK, 3), inbound(&d)).await;
    assert_eq!(refused(r), (Limit::Inbound, 1));
    assert_eq!(m.idle(), 1, "the idle connection stays");
}

/// At `max_connections(1)`, an `adopt` during the only dial, to the same
/// peer, takes over the dial's unit: it is not refused, the peer is counted
/// once throughout, and the dial's connection idles when it lands.
#[tokio::test(start_paused = true)]
async fn adopt_during_a_dial_at_the_limit_takes_over_its_unit() {
    let m = builder().max_connections(1).build().unwrap();
    let d = m.dialer().clone();
    let p = peer(SLOW, 5); // dials for 6 ms
    let dial = {
        let m = m.clone();
        tokio::spawn(async move { m.connect(p).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(m.get_status(&p).await, Some(Connecting));
    assert_eq!(m.in_use(Limit::Connections), 1);
    m.adopt(p, inbound(&d)).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!(m.in_use(Limit::Connections), 1, "the peer counts once");
    assert_eq!(m.in_use(Limit::Outbound), 0);
    assert_eq!(m.in_use(Limit::Inbound), 1);
    // Another peer still finds the limit full.
    assert_eq!(
        refused(m.connect(peer(OK, 9)).await),
        (Limit::Connections, 1)
    );
    dial.await.unwrap().unwrap();
    assert_eq!(m.direction(&p), Some(Direction::Inbound));
    assert_eq!(m.idle(), 1, "the dialed connection idles");
    assert_eq!(m.in_use(Limit::Connections), 1);
    m.disconnect(&p).await;
    assert_eq!(m.in_use(Limit::Connections), 0);
    assert_eq!(m.in_use(Limit::Inbound), 0);
}

/// A dial cancelled after an `adopt` took over its unit gives nothing back
/// twice: the counts stay exact.
#[tokio::test(start_paused = true)]
async fn a_cancelled_dial_after_an_adopt_keeps_the_counts_exact() {
    let m = builder().max_connections(1).build().unwrap();
    let d = m.dialer().clone();
    let p = peer(SLOW, 5);
    let dial = {
        let m = m.clone();
        tokio::spawn(async move { m.connect(p).await })
    };
    tokio::task::yield_now().await;
    m.adopt(p, inbound(&d)).await.unwrap();
    dial.abort();
    let _ = dial.await;
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!(m.in_use(Limit::Connections), 1);
    assert_eq!(m.in_use(Limit::Outbound), 0);
    m.disconnect(&p).await;
    assert_eq!(m.in_use(Limit::Connections), 0);
}
