//! Every status event says why: one test per [`Reason`] the public API can
//! cause, each checking the events of one step, in order.

mod common;

use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus, ConnectionStatus::*, Reason, StatusEvent};
use tokio::sync::broadcast::{error::TryRecvError, Receiver};

type Change = (Option<ConnectionStatus>, Option<ConnectionStatus>, Reason);

fn manager() -> ConnectionManager<TestDialer> {
    ConnectionManager::builder()
        .max_connections(8)
        .dial_timeout(Duration::from_secs(5))
        .dialer(TestDialer::default())
        .build()
        .unwrap()
}

fn drain(rx: &mut Receiver<StatusEvent>) -> Vec<Change> {
    let mut out = vec![];
    loop {
        match rx.try_recv() {
            Ok(e) => out.push((e.from, e.to, e.reason)),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_dial_says_dialed() {
    let m = manager();
    let mut rx = m.subscribe();
    m.connect(peer(OK, 1)).await.unwrap();
    assert_eq!(
        drain(&mut rx),
        [
            (None, Some(Connecting), Reason::Dialed),
            (Some(Connecting), Some(Connected), Reason::Dialed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_says_disconnected_and_a_reuse_says_pooled() {
    let m = manager();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let mut rx = m.subscribe();
    m.disconnect(&p).await;
    m.connect(p).await.unwrap();
    assert_eq!(
        drain(&mut rx),
        [
            (Some(Connected), Some(Disconnected), Reason::Disconnected),
            (Some(Disconnected), Some(Connected), Reason::Pooled)
        ]
    );
    // A live connection kept while bookkeeping moved the status: taken
    // back, also `Pooled`.
    m.update_status(p, Connecting).await;
    m.connect(p).await.unwrap();
    assert_eq!(
        drain(&mut rx),
        [
            (Some(Connected), Some(Connecting), Reason::Set),
            (Some(Connecting), Some(Connected), Reason::Pooled)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_dial_says_dial_failed() {
    let m = manager();
    let mut rx = m.subscribe();
    assert!(m.connect(peer(FAIL, 1)).await.is_err());
    assert_eq!(
        drain(&mut rx).last(),
        Some(&(Some(Connecting), Some(Failed), Reason::DialFailed))
    );
}

#[tokio::test(start_paused = true)]
async fn a_dial_past_its_timeout_says_timed_out() {
    let m = manager();
    let mut rx = m.subscribe();
    assert!(m.connect(peer(HANG, 1)).await.is_err());
    assert_eq!(
        drain(&mut rx).last(),
        Some(&(Some(Connecting), Some(Failed), Reason::TimedOut))
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connect_says_cancelled() {
    let m = manager();
    let mut rx = m.subscribe();
    let p = peer(HANG, 1);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), m.connect(p))
            .await
            .is_err(),
        "the dial hangs; the connect is dropped"
    );
    assert_eq!(
        drain(&mut rx),
        [
            (None, Some(Connecting), Reason::Dialed),
            (Some(Connecting), None, Reason::Cancelled)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn update_status_says_set() {
    let m = manager();
    let mut rx = m.subscribe();
    let p = peer(OK, 1);
    m.update_status(p, Connected).await;
    m.update_status(p, Failed).await;
    assert_eq!(
        drain(&mut rx),
        [
            (None, Some(Connected), Reason::Set),
            (Some(Connected), Some(Failed), Reason::Set)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_discarded_lease_says_discarded() {
    let m = manager();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let mut rx = m.subscribe();
    m.lease(&p).unwrap().discard();
    assert_eq!(
        drain(&mut rx),
        [(Some(Connected), Some(Failed), Reason::Discarded)]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_says_shut_down() {
    let m = manager();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let mut rx = m.subscribe();
    m.shutdown().await;
    assert_eq!(
        drain(&mut rx),
        [(Some(Connected), Some(Disconnected), Reason::ShutDown)]
    );
}

/// `forget_after` runs on real time (the status table's stamps), so this
/// test waits just over its shortest setting.
#[tokio::test]
async fn forgetting_says_forgotten() {
    let m = ConnectionManager::builder()
        .forget_after(connmgr::Config::MIN_FORGET_AFTER)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let p = peer(FAIL, 1);
    assert!(m.connect(p).await.is_err());
    let mut rx = m.subscribe();
    std::thread::sleep(connmgr::Config::MIN_FORGET_AFTER + Duration::from_millis(100));
    m.reap_now();
    assert_eq!(drain(&mut rx), [(Some(Failed), None, Reason::Forgotten)]);
}

#[test]
fn reasons_read_as_words() {
    assert_eq!(Reason::DialFailed.to_string(), "dial failed");
    assert_eq!(Reason::Set.to_string(), "set by update_status");
}
