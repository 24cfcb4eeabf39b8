//! `block`, `unblock`, `is_blocked`: a blocked peer's connections are
//! closed, `connect` and `adopt` refuse it, and a dial in flight ends
//! without making it Connected.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, Error, Reason};

fn manager() -> ConnectionManager<TestDialer> {
    ConnectionManager::builder()
        .max_connections(8)
        .max_idle_per_peer(4)
        .forget_after(Duration::from_secs(1))
        .dialer(TestDialer::default())
        .build()
        .unwrap()
}

fn accepted(m: &ConnectionManager<TestDialer>) -> Conn {
    m.dialer()
        .opened
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Conn {
        closed: m.dialer().closed.clone(),
        alive: true,
    }
}

#[tokio::test(start_paused = true)]
async fn blocking_closes_live_and_idle_connections_and_refuses_connect_and_adopt() {
    let m = manager();
    let (p, q) = (peer(OK, 1), peer(OK, 2));
    m.connect(p).await.unwrap();
    m.disconnect(&p).await; // one idle
    m.connect(p).await.unwrap(); // reused
    m.adopt(p, accepted(&m)).await.unwrap(); // a second one, idle
    m.connect(q).await.unwrap();
    assert_eq!((m.idle(), m.active()), (1, 2));
    let mut events = m.subscribe();
    m.block(p);
    assert!(m.is_blocked(&p));
    assert!(!m.is_blocked(&q));
    assert_eq!(m.get_status(&p).await, Some(Disconnected));
    let e = events.try_recv().unwrap();
    assert_eq!(
        (e.peer, e.to, e.reason),
        (p, Some(Disconnected), Reason::Blocked)
    );
    // Its live and idle connections are closed; q's is untouched.
    assert_eq!(m.dialer().closed(), 2);
    assert_eq!((m.idle(), m.active()), (0, 1));
    assert_eq!(m.get_status(&q).await, Some(Connected));

    let dials = m.dialer().dials();
    assert!(matches!(m.connect(p).await, Err(Error::Blocked { peer }) if peer == p));
    assert_eq!(m.dialer().dials(), dials, "no dial");
    assert!(matches!(
        m.adopt(p, accepted(&m)).await,
        Err(Error::Blocked { .. })
    ));
    assert_eq!(m.dialer().closed(), 3, "the adopted connection is closed");
    assert_eq!(m.active(), 1);
    assert_eq!(
        m.connect(p).await.unwrap_err().to_string(),
        format!("peer {p} is blocked")
    );

    m.unblock(&p);
    assert!(!m.is_blocked(&p));
    m.connect(p).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
}

#[tokio::test(start_paused = true)]
async fn a_peer_blocked_before_it_connects_is_refused_and_never_forgotten() {
    let m = manager();
    let p = peer(OK, 7);
    m.block(p);
    assert!(matches!(m.connect(p).await, Err(Error::Blocked { .. })));
    assert_eq!(m.get_status(&p).await, None);
    m.update_status(p, Disconnected).await;
    let control = peer(OK, 8);
    m.update_status(control, Disconnected).await;
    // The forget sweep runs on real time: let it come due.
    std::thread::sleep(Duration::from_millis(1100));
    tokio::time::sleep(Duration::from_secs(120)).await;
    m.reap_now();
    assert_eq!(m.get_status(&control).await, None, "the sweep ran");
    assert!(m.is_blocked(&p), "still blocked after a forget sweep");
    assert_eq!(m.get_status(&p).await, Some(Disconnected));
}

#[tokio::test(start_paused = true)]
async fn a_dial_in_flight_when_its_peer_is_blocked_ends_without_connecting() {
    let m = manager();
    let p = peer(SLOW, 10); // dials sleep 11 ms
    let dial = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    while m.get_status(&p).await != Some(Connecting) {
        tokio::task::yield_now().await;
    }
    let mut events = m.subscribe();
    m.block(p);
    let outcome = dial.await.unwrap();
    assert!(matches!(outcome, Err(Error::Blocked { .. })), "{outcome:?}");
    assert_eq!(m.get_status(&p).await, Some(Disconnected));
    assert_eq!(m.dialer().opened(), 1);
    assert_eq!(m.dialer().closed(), 1, "the dialed connection is closed");
    assert_eq!((m.active(), m.idle(), m.pending_dials()), (0, 0, 0));
    while let Ok(e) = events.try_recv() {
        assert_ne!(e.to, Some(Connected), "{e:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_leased_connection_of_a_blocked_peer_is_closed_when_returned() {
    let m = manager();
    let p = peer(OK, 3);
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    m.block(p);
    assert_eq!(m.active(), 0, "the slot is freed at once");
    assert_eq!(m.dialer().closed(), 0, "the lease keeps it usable");
    drop(lease);
    assert_eq!(m.dialer().closed(), 1);
    assert_eq!(m.idle(), 0);
}

/// A dial in flight, an `adopt` taking its units over, then a block: the
/// dial lands after both and ends with `Err(Blocked)`, its connection
/// closed, the peer Disconnected (not `Ok` with the peer blocked).
#[tokio::test(start_paused = true)]
async fn a_dial_landing_after_an_adopt_and_a_block_ends_blocked() {
    let m = manager();
    let p = peer(SLOW, 10);
    let dial = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    while m.get_status(&p).await != Some(Connecting) {
        tokio::task::yield_now().await;
    }
    m.adopt(p, accepted(&m)).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    m.block(p);
    let outcome = dial.await.unwrap();
    assert!(matches!(outcome, Err(Error::Blocked { .. })), "{outcome:?}");
    assert_eq!(m.get_status(&p).await, Some(Disconnected));
    assert_eq!(m.dialer().closed(), 2, "the adopted and the dialed one");
    assert_eq!((m.active(), m.idle(), m.pending_dials()), (0, 0, 0));
}

/// A peer blocked while its `connect` waits for a slot is not dialed when
/// the slot comes.
#[tokio::test(start_paused = true)]
async fn a_peer_blocked_while_its_connect_waits_for_a_slot_is_not_dialed() {
    let m = ConnectionManager::builder()
        .max_connections(1)
        .wait_for_slot(Duration::from_secs(10))
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    m.connect(peer(OK, 0)).await.unwrap();
    let p = peer(OK, 1);
    let waiter = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    m.block(p);
    m.disconnect(&peer(OK, 0)).await;
    assert!(matches!(waiter.await.unwrap(), Err(Error::Blocked { .. })));
    assert_eq!(m.dialer().dials(), 1, "only the first peer was dialed");
    assert_eq!(m.get_status(&p).await, None);
    assert_eq!(m.active(), 0);
}
