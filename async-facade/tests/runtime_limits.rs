//! Limits changed at runtime (`set_limits`), and `state()`, the one
//! snapshot of every gauge and limit.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, Error, Limit, Limits};

fn manager(max: usize) -> ConnectionManager<TestDialer> {
    ConnectionManager::builder()
        .max_connections(max)
        .dialer(TestDialer::default())
        .build()
        .unwrap()
}

fn with_max(m: &ConnectionManager<TestDialer>, max: usize) -> Limits {
    let mut l = m.limits();
    l.max_connections = max;
    l
}

#[tokio::test]
async fn lowering_refuses_new_work_at_once_and_closes_nothing() {
    let m = manager(3);
    for n in 0..3 {
        m.connect(peer(OK, n)).await.unwrap();
    }
    m.set_limits(with_max(&m, 1)).unwrap();
    assert_eq!(m.limits().max_connections, 1);
    assert_eq!(m.config().max_connections, 3, "the build's limits stay");
    // Nothing closed: the three stay Connected above the new limit.
    assert_eq!(m.count(Connected), 3);
    assert_eq!(m.dialer().closed(), 0);
    let err = m.connect(peer(OK, 9)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitReached {
                limit: Limit::Connections,
                max: 1
            }
        ),
        "{err}"
    );
    // Down to one in use: still full.
    m.disconnect(&peer(OK, 0)).await;
    m.disconnect(&peer(OK, 1)).await;
    assert!(m.connect(peer(OK, 9)).await.is_err());
    m.disconnect(&peer(OK, 2)).await;
    m.connect(peer(OK, 9)).await.unwrap();
}

#[tokio::test]
async fn raising_admits_at_once() {
    let m = manager(1);
    m.connect(peer(OK, 0)).await.unwrap();
    assert!(m.connect(peer(OK, 1)).await.is_err());
    // Every limit by kind follows, as `Limits::new` sets them.
    let l = Limits::new(2);
    m.set_limits(l).unwrap();
    m.connect(peer(OK, 1)).await.unwrap();
    assert_eq!(m.active(), 2);
    assert_eq!(m.state().limits, l);
}

#[tokio::test]
async fn an_invalid_limit_is_refused_with_its_setting_named_and_changes_nothing() {
    let m = manager(4);
    let before = m.limits();
    type Change = fn(&mut Limits);
    let cases: [(Change, &str); 4] = [
        (|l| l.max_connections = 0, "max_connections"),
        (|l| l.max_sockets = l.max_connections - 1, "max_sockets"),
        (|l| l.watermarks = Some((3, 3)), "watermarks"),
        (|l| l.watermarks = Some((1, 5)), "watermarks"),
    ];
    for (change, setting) in cases {
        let mut l = m.limits();
        change(&mut l);
        match m.set_limits(l) {
            Err(Error::InvalidConfig { setting: s, .. }) => assert_eq!(s, setting),
            other => panic!("{setting}: {other:?}"),
        }
        assert_eq!(m.limits(), before);
    }
}

#[tokio::test]
async fn lowered_watermarks_trim_down_to_the_new_low() {
    let m = ConnectionManager::builder()
        .max_connections(10)
        .grace_period(std::time::Duration::ZERO)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    for n in 0..6 {
        m.connect(peer(OK, n)).await.unwrap();
    }
    let mut l = m.limits();
    l.watermarks = Some((2, 4));
    m.set_limits(l).unwrap();
    assert_eq!(m.trim_now().await, 4);
    assert_eq!(m.count(Connected), 2);
}

/// Rounds of connects racing one `set_limits` that lowers
/// `max_connections` from `HIGH` to `LOW` (nothing disconnects, so the
/// count in use only grows): a sampler sees at most `HIGH` in use at every
/// moment, and the connects that started after `set_limits` returned
/// succeed only while fewer than `LOW` are in use, so at most `LOW` of them
/// ever succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_set_limits_and_connects_never_overshoot_the_limit_in_force() {
    const HIGH: usize = 8;
    const LOW: usize = 3;
    const TASKS: u32 = 24;
    for round in 0..50u32 {
        let m = manager(HIGH);
        let lowered = Arc::new(AtomicBool::new(false));
        let after_ok = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (m, peak, done) = (m.clone(), peak.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    peak.fetch_max(m.active(), Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            })
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|n| {
                let (m, lowered, after_ok) = (m.clone(), lowered.clone(), after_ok.clone());
                tokio::spawn(async move {
                    for _ in 0..(n % 3) {
                        tokio::task::yield_now().await;
                    }
                    let after = lowered.load(Ordering::SeqCst);
                    let ok = m.connect(peer(OK, round * 1000 + n)).await.is_ok();
                    if ok && after {
                        after_ok.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        m.set_limits(with_max(&m, LOW)).unwrap();
        lowered.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
        sampler.await.unwrap();
        assert!(peak.load(Ordering::SeqCst) <= HIGH, "round {round}");
        assert!(m.active() <= HIGH, "round {round}");
        assert!(
            after_ok.load(Ordering::SeqCst) <= LOW,
            "round {round}: {} connects started after the limit fell to {LOW} succeeded",
            after_ok.load(Ordering::SeqCst)
        );
        assert_eq!(m.active(), m.count(Connected));
    }
}

#[tokio::test]
async fn state_reads_every_gauge_and_limit() {
    let m = ConnectionManager::builder()
        .max_connections(4)
        .max_inbound(2)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    m.connect(peer(OK, 0)).await.unwrap();
    m.connect(peer(OK, 1)).await.unwrap();
    m.disconnect(&peer(OK, 1)).await;
    let _ = m.connect(peer(FAIL, 0)).await;
    let accepted = Conn {
        closed: m.dialer().closed.clone(),
        alive: true,
    };
    m.adopt(peer(OK, 2), accepted).await.unwrap();
    m.update_status(peer(OK, 3), Connecting).await;
    let s = m.state();
    assert_eq!(
        (s.connected, s.connecting, s.disconnected, s.failed),
        (2, 1, 1, 1)
    );
    assert_eq!(s.tracked_peers, 5);
    assert_eq!((s.active, s.inbound, s.outbound), (2, 1, 1));
    assert_eq!((s.pending_dials, s.sockets, s.idle), (0, 3, 1));
    assert_eq!(s.limits, m.limits());
    assert_eq!(s.limits.max_inbound, 2);
    assert!(!s.shut_down);
    assert!(s.memory_usage > 0);
    m.shutdown().await;
    let s = m.state();
    assert!(s.shut_down);
    assert_eq!((s.connected, s.active, s.sockets, s.idle), (0, 0, 0, 0));
}

/// `Limits` is a plain struct: built whole, it is put in force as is.
#[tokio::test]
async fn limits_built_whole_are_put_in_force() {
    let m = manager(4);
    let limits = Limits {
        max_connections: 3,
        max_inbound: 1,
        max_outbound: 2,
        max_pending_dials: 1,
        max_sockets: 6,
        watermarks: Some((1, 3)),
    };
    m.set_limits(limits).unwrap();
    assert_eq!(m.limits(), limits);
    m.connect(peer(OK, 0)).await.unwrap();
    m.connect(peer(OK, 1)).await.unwrap();
    assert!(matches!(
        m.connect(peer(OK, 2)).await,
        Err(Error::LimitReached {
            limit: Limit::Outbound,
            max: 2
        })
    ));
}
