//! `Builder::max_lifetime`: a connection older than it is closed instead
//! of pooled or reused (tokio's paused clock).
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*};

const LIFETIME: Duration = Duration::from_secs(60);

fn manager() -> ConnectionManager<TestDialer> {
    ConnectionManager::builder()
        .max_connections(8)
        .pool_timeout(Duration::from_secs(3600))
        .max_lifetime(LIFETIME)
        .dialer(TestDialer::default())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_old_connection_is_closed_instead_of_pooled() {
    let m = manager();
    let (young, old) = (peer(OK, 1), peer(OK, 2));
    m.connect(old).await.unwrap();
    tokio::time::advance(LIFETIME - Duration::from_secs(1)).await;
    m.connect(young).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    // Live all along: not closed for its age while live.
    assert_eq!(m.dialer().closed(), 0);
    m.disconnect(&old).await;
    m.disconnect(&young).await;
    assert_eq!(m.dialer().closed(), 1, "the old one is closed");
    assert_eq!(m.idle(), 1, "the young one idles");
    assert_eq!(m.get_status(&old).await, Some(Disconnected));
    // The old peer is dialed afresh; the young one reuses its connection.
    m.connect(old).await.unwrap();
    m.connect(young).await.unwrap();
    assert_eq!(m.dialer().dials(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_that_outlives_its_lifetime_is_not_reused() {
    let m = manager();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    m.disconnect(&p).await;
    tokio::time::advance(LIFETIME - Duration::from_millis(1)).await;
    m.connect(p).await.unwrap();
    assert_eq!(m.dialer().dials(), 1, "young enough: reused");
    m.disconnect(&p).await;
    tokio::time::advance(Duration::from_millis(1)).await;
    m.connect(p).await.unwrap();
    assert_eq!(m.dialer().dials(), 2, "too old: dialed afresh");
    assert_eq!(m.dialer().closed(), 1);
    assert_eq!((m.active(), m.idle()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_lease_returned_after_a_disconnect_closes_an_old_connection() {
    let m = manager();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    m.disconnect(&p).await;
    tokio::time::advance(LIFETIME).await;
    drop(lease);
    assert_eq!((m.idle(), m.dialer().closed()), (0, 1));
}

#[test]
fn a_zero_lifetime_is_refused() {
    let err = ConnectionManager::builder()
        .max_lifetime(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `max_lifetime`: it must be longer than zero"
    );
}
