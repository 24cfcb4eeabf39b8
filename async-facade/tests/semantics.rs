//! Every row of the README's call-semantics table (the design's), through
//! the public API.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, Error, Limit, StatusEvent};
use tokio::sync::broadcast::error::TryRecvError;

fn manager(max: usize) -> (ConnectionManager<TestDialer>, TestDialer) {
    let dialer = TestDialer::default();
    let m = ConnectionManager::builder()
        .max_connections(max)
        .dial_timeout(Duration::from_secs(5))
        .dialer(dialer.clone())
        .build()
        .unwrap();
    (m, dialer)
}

fn drain(
    rx: &mut tokio::sync::broadcast::Receiver<StatusEvent>,
) -> Vec<(
    Option<connmgr::ConnectionStatus>,
    Option<connmgr::ConnectionStatus>,
)> {
    let mut out = vec![];
    loop {
        match rx.try_recv() {
            Ok(e) => out.push((e.from, e.to)),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fresh_dial_goes_connecting_then_connected() {
    let (m, d) = manager(4);
    let mut events = m.subscribe();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!(
        drain(&mut events),
        vec![
            (None, Some(Connecting)),
            (Some(Connecting), Some(Connected))
        ]
    );
    assert_eq!(d.dials(), 1);
    assert_eq!(m.active(), 1);

    // From Disconnected (nothing pooled) and from Failed: dials again.
    let f = peer(FAIL, 1);
    assert!(m.connect(f).await.is_err());
    assert_eq!(m.get_status(&f).await, Some(Failed));
    m.update_status(p, Disconnected).await; // pools the connection
    assert_eq!((m.idle(), d.closed()), (1, 0));
    m.update_status(p, Failed).await; // closes the pooled connection
    assert_eq!(
        (m.idle(), d.closed()),
        (0, 1),
        "a Failed peer's idle connection is closed"
    );
    drain(&mut events);
    m.connect(p).await.unwrap();
    assert_eq!(d.dials(), 3, "from Failed: a fresh dial");
    assert_eq!(
        drain(&mut events),
        vec![
            (Some(Failed), Some(Connecting)),
            (Some(Connecting), Some(Connected))
        ]
    );
    let q = peer(OK, 2);
    m.update_status(q, Disconnected).await;
    m.connect(q).await.unwrap();
    assert_eq!(m.get_status(&q).await, Some(Connected));
    assert_eq!(
        d.dials(),
        4,
        "from Disconnected with nothing pooled: a fresh dial"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_leased_when_its_peer_fails_is_closed_not_pooled() {
    let (m, d) = manager(4);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    m.update_status(p, Failed).await;
    assert_eq!((m.active(), d.closed()), (0, 0), "leased: still open");
    drop(lease);
    assert_eq!((m.idle(), d.closed()), (0, 1), "closed when the lease ends");
    m.connect(p).await.unwrap();
    assert_eq!(d.dials(), 2, "reconnecting dials afresh");
}

#[tokio::test(start_paused = true)]
async fn a_connection_leased_when_its_peer_failed_is_closed_even_after_a_reconnect() {
    let (m, d) = manager(4);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    m.update_status(p, Failed).await;
    m.connect(p).await.unwrap(); // a fresh connection, while the failed one is leased
    assert_eq!(d.dials(), 2);
    drop(lease);
    assert_eq!(
        (m.idle(), d.closed()),
        (0, 1),
        "the failed connection is closed, not pooled beside the new one"
    );
    m.disconnect(&p).await;
    assert_eq!((m.idle(), d.closed()), (1, 1), "the new one is pooled");
    m.connect(p).await.unwrap();
    assert_eq!(d.dials(), 2, "and reused");

    // Failed, then Disconnected by bookkeeping, while leased: still closed.
    let q = peer(OK, 2);
    m.connect(q).await.unwrap();
    let lease = m.lease(&q).unwrap();
    m.update_status(q, Failed).await;
    m.update_status(q, Disconnected).await;
    drop(lease);
    assert_eq!((m.idle(), d.closed()), (0, 2));
}

/// The `manager` fuzz target's finds: the peer is disconnected while its
/// connection is leased, and set Failed only after that (when the lease no
/// longer had a slot). The lease was held when the peer failed, so its
/// connection is closed when it ends, not pooled for a later connect.
#[tokio::test(start_paused = true)]
async fn a_connection_leased_when_its_disconnected_peer_fails_is_closed_even_after_a_reconnect() {
    let (m, d) = manager(4);
    // Disconnected, then Failed, then connected anew, while leased.
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    m.update_status(p, Disconnected).await;
    m.update_status(p, Failed).await;
    m.connect(p).await.unwrap(); // Failed: dials
    assert_eq!(d.dials(), 2);
    drop(lease);
    assert_eq!(
        (m.idle(), d.closed()),
        (0, 1),
        "the failed connection is closed, not pooled"
    );
    m.disconnect(&p).await;
    m.connect(p).await.unwrap();
    assert_eq!(
        (d.dials(), d.closed()),
        (2, 1),
        "the new one was pooled and reused"
    );

    // Disconnected, then Failed, then Disconnected by bookkeeping, while
    // leased: still closed.
    let q = peer(OK, 2);
    m.connect(q).await.unwrap();
    let lease = m.lease(&q).unwrap();
    m.disconnect(&q).await;
    m.update_status(q, Failed).await;
    m.update_status(q, Disconnected).await;
    drop(lease);
    assert_eq!((m.idle(), d.closed()), (0, 2));
    m.connect(q).await.unwrap();
    assert_eq!(d.dials(), 4, "nothing of the failed peer was pooled: dials");

    // Failed by another lease's discard (the newer connection's), while an
    // older lease of the peer had lost its slot: closed too.
    let r = peer(OK, 3);
    m.connect(r).await.unwrap();
    let old = m.lease(&r).unwrap();
    m.disconnect(&r).await;
    m.connect(r).await.unwrap(); // the old one is leased: dials
    m.lease(&r).unwrap().discard();
    assert_eq!(m.get_status(&r).await, Some(Failed));
    // Not Failed any more when `old` ends: only the mark closes it.
    m.update_status(r, Disconnected).await;
    drop(old);
    assert_eq!((m.idle(), d.closed()), (0, 4));
}

#[tokio::test(start_paused = true)]
async fn a_connection_leased_across_a_reconnect_idles_when_the_lease_ends() {
    let (m, d) = manager(4);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    m.disconnect(&p).await;
    m.connect(p).await.unwrap(); // nothing pooled (the old one is leased): dials
    assert_eq!((d.dials(), m.active()), (2, 1));
    drop(lease);
    assert_eq!(
        (m.idle(), d.closed(), m.active()),
        (1, 0, 1),
        "the peer has a newer connection: the leased one idles"
    );
}

#[tokio::test(start_paused = true)]
async fn a_discarded_lease_fails_its_peer_and_the_next_connect_dials() {
    let (m, d) = manager(4);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    m.disconnect(&p).await;
    m.connect(p).await.unwrap();
    assert_eq!(d.dials(), 1, "pool hit");
    m.lease(&p).unwrap().discard();
    assert_eq!(
        (m.get_status(&p).await, m.active(), d.closed()),
        (Some(Failed), 0, 1)
    );
    m.connect(p).await.unwrap();
    assert_eq!(d.dials(), 2, "from Failed: dialed");
}

#[tokio::test(start_paused = true)]
async fn pooled_alive_connection_is_reused_without_a_dial() {
    let (m, d) = manager(4);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    m.disconnect(&p).await;
    assert_eq!(m.get_status(&p).await, Some(Disconnected));
    assert_eq!(m.idle(), 1);
    assert_eq!(m.active(), 0);
    m.connect(p).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!(d.dials(), 1, "no second dial");
    assert_eq!(m.idle(), 0);
    assert_eq!(m.snapshot().dials.pool_hits, 1);
}

/// A peer set Connecting by `update_status` alone holds no connection and
/// no slot: `connect` treats it as it would an unknown or Disconnected peer
/// (README table: dial, or reuse a live pooled connection).
#[tokio::test(start_paused = true)]
async fn connecting_set_by_bookkeeping_alone_dials_or_reuses_the_pool() {
    let (m, d) = manager(1);
    let p = peer(OK, 1);
    m.update_status(p, Connecting).await;
    assert_eq!((m.get_status(&p).await, m.active()), (Some(Connecting), 0));
    m.connect(p).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!((d.dials(), m.active()), (1, 1), "nothing was held: dialed");

    // Pooled, then marked Connecting by bookkeeping: the pooled connection
    // stays, and connect takes it (the one slot is free again).
    m.disconnect(&p).await;
    m.update_status(p, Connecting).await;
    assert_eq!((m.idle(), m.active()), (1, 0));
    m.connect(p).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!(d.dials(), 1, "the pooled connection was reused");
    assert_eq!((m.idle(), m.active()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn pooled_dead_connection_is_closed_and_a_fresh_dial_made() {
    let (m, d) = manager(4);
    let p = peer(DIES, 1);
    m.connect(p).await.unwrap();
    m.disconnect(&p).await;
    assert_eq!(m.idle(), 1);
    m.connect(p).await.unwrap();
    assert_eq!(d.dials(), 2, "the dead idle connection was not handed out");
    assert_eq!(d.closed(), 1, "and it was closed");
}

#[tokio::test(start_paused = true)]
async fn connect_when_connected_changes_nothing() {
    let (m, d) = manager(4);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let mut events = m.subscribe();
    m.connect(p).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
    assert_eq!(d.dials(), 1);
    assert_eq!(m.active(), 1);
    assert!(drain(&mut events).is_empty());
}

#[tokio::test(start_paused = true)]
async fn failed_and_timed_out_dials_end_failed_with_typed_errors() {
    let (m, _) = manager(4);
    let f = peer(FAIL, 1);
    let err = m.connect(f).await.unwrap_err();
    assert!(
        matches!(err, Error::Dial { peer, .. } if peer == f),
        "{err}"
    );
    assert_eq!(err.to_string(), format!("dialing peer {f} failed"));
    let source = std::error::Error::source(&err).expect("the dialer's error");
    assert!(source.to_string().contains("refused"), "{source}");
    assert_eq!(m.get_status(&f).await, Some(Failed));

    let h = peer(HANG, 1);
    let err = m.connect(h).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after, .. } if after == Duration::from_secs(5)),
        "{err}"
    );
    assert_eq!(m.get_status(&h).await, Some(Failed));
    assert_eq!(m.active(), 0);
    let s = m.snapshot();
    assert_eq!((s.dials.failed, s.dials.timed_out), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn limit_reached_leaves_the_status_unchanged() {
    let (m, d) = manager(2);
    m.connect(peer(OK, 1)).await.unwrap();
    m.connect(peer(OK, 2)).await.unwrap();
    let p = peer(OK, 3);
    m.update_status(p, Disconnected).await;
    let err = m.connect(p).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitReached {
                limit: Limit::Connections,
                max: 2
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "`max_connections` limit reached: 2 connections are connecting or connected"
    );
    assert_eq!(m.get_status(&p).await, Some(Disconnected));
    assert_eq!(m.get_status(&peer(OK, 4)).await, None);
    assert_eq!(d.dials(), 2);
    // Freeing a slot lets the next one in.
    m.disconnect(&peer(OK, 1)).await;
    m.connect(p).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn disconnect_pools_and_is_idempotent_and_ignores_unknown_peers() {
    let (m, d) = manager(4);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let mut events = m.subscribe();
    m.disconnect(&p).await;
    m.disconnect(&p).await;
    m.disconnect(&peer(OK, 99)).await;
    assert_eq!(
        drain(&mut events),
        vec![(Some(Connected), Some(Disconnected))]
    );
    assert_eq!(m.get_status(&peer(OK, 99)).await, None);
    assert_eq!((m.active(), m.idle(), d.closed()), (0, 1, 0));
    assert_eq!(m.count(Connected), 0);
}

#[tokio::test(start_paused = true)]
async fn update_status_sets_as_given_with_exact_counts() {
    let (m, _) = manager(4);
    let peers: Vec<_> = (0..40).map(|i| peer(OK, i)).collect();
    let all = [Connected, Connecting, Disconnected, Failed];
    for (i, p) in peers.iter().enumerate() {
        m.update_status(*p, all[i % 4]).await;
    }
    for (i, p) in peers.iter().enumerate() {
        m.update_status(*p, all[(i * 7 + 1) % 4]).await;
        assert_eq!(m.get_status(p).await, Some(all[(i * 7 + 1) % 4]));
    }
    for s in all {
        let want = (0..40).filter(|i| all[(i * 7 + 1) % 4] == s).count();
        assert_eq!(m.count(s), want, "{s:?}");
    }
    assert_eq!(m.get_metrics().await.connections, m.count(Connected));
}

#[tokio::test(start_paused = true)]
async fn update_status_away_from_connected_frees_the_slot() {
    let (m, d) = manager(1);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    m.update_status(p, Failed).await;
    assert_eq!(
        (m.active(), m.idle(), d.closed()),
        (0, 0, 1),
        "Failed closes"
    );
    m.connect(p).await.unwrap();
    m.update_status(p, Disconnected).await;
    assert_eq!((m.active(), m.idle()), (0, 1), "Disconnected pools");
}

#[tokio::test(start_paused = true)]
async fn metrics_are_measured() {
    let m = ConnectionManager::builder()
        .metrics_window(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..3 {
        m.connect(peer(OK, i)).await.unwrap();
    }
    for ms in [10, 20, 30, 40] {
        m.record_message(Duration::from_millis(ms));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = m.get_metrics().await;
    assert_eq!(metrics.connections, 3);
    assert_eq!(metrics.avg_latency, Duration::from_millis(25));
    assert!(
        metrics.messages_per_second > 0.0 && metrics.messages_per_second <= 4.0,
        "{metrics:?}"
    );
    assert!(metrics.memory_usage > 0);
    let text = m.prometheus();
    assert!(text.contains("connmgr_connections 3"), "{text}");
    assert!(text.contains("connmgr_messages_total 4"), "{text}");
}

#[test]
fn new_needs_no_runtime_and_invalid_settings_name_the_setting() {
    let m = ConnectionManager::new(100);
    assert_eq!(m.config().pool_timeout, Duration::from_secs(300));
    let m = ConnectionManager::with_pool_timeout(5, Duration::from_secs(7));
    assert_eq!(m.config().pool_timeout, Duration::from_secs(7));
    for (b, name) in [
        (
            ConnectionManager::builder().max_connections(0),
            "max_connections",
        ),
        (
            ConnectionManager::builder().pool_timeout(Duration::ZERO),
            "pool_timeout",
        ),
        (
            ConnectionManager::builder().dial_timeout(Duration::ZERO),
            "dial_timeout",
        ),
        (
            ConnectionManager::builder().max_idle_per_peer(0),
            "max_idle_per_peer",
        ),
        (
            ConnectionManager::builder().metrics_window(Duration::ZERO),
            "metrics_window",
        ),
        (
            ConnectionManager::builder().event_capacity(0),
            "event_capacity",
        ),
    ] {
        let err = b.build().unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("invalid `{name}`")),
            "{err}"
        );
    }
    let panic = std::panic::catch_unwind(|| ConnectionManager::new(0)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert_eq!(msg, "invalid `max_connections`: it must be at least 1");
}

#[tokio::test(start_paused = true)]
async fn watch_follows_one_peer_and_leases_give_exclusive_use() {
    let (m, _) = manager(4);
    let p = peer(OK, 1);
    let mut w = m.watch(&p);
    assert_eq!(*w.borrow(), None);
    m.connect(p).await.unwrap();
    w.changed().await.unwrap();
    assert_eq!(*w.borrow_and_update(), Some(Connected));

    let lease = m.lease(&p).unwrap();
    assert!(lease.alive);
    assert!(matches!(m.lease(&p), Err(Error::Busy { .. })));
    assert!(matches!(
        m.lease(&peer(OK, 2)),
        Err(Error::NotConnected { .. })
    ));
    drop(lease);
    let lease = m.lease(&p).unwrap();
    // Disconnected while leased: the connection idles when the lease ends.
    m.disconnect(&p).await;
    assert_eq!(m.active(), 0);
    drop(lease);
    assert_eq!(m.idle(), 1);
}

#[tokio::test(start_paused = true)]
async fn reconnect_helper_backs_off_then_gives_up() {
    // The helper's own schedule alone: the per-peer backoff off.
    let m = ConnectionManager::builder()
        .max_connections(4)
        .dial_backoff(Duration::ZERO, Duration::ZERO)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let d = m.dialer().clone();
    let f = peer(FAIL, 1);
    let start = tokio::time::Instant::now();
    let backoff = connmgr::Backoff::new(Duration::from_millis(100), Duration::from_millis(250), 4)
        .without_jitter();
    let err = m.connect_with_backoff(f, backoff).await.unwrap_err();
    assert!(matches!(err, Error::GaveUp { attempts: 4, .. }), "{err}");
    assert_eq!(err.to_string(), "gave up connecting after 4 attempts");
    let last = std::error::Error::source(&err).expect("the last attempt's error");
    assert_eq!(last.to_string(), format!("dialing peer {f} failed"));
    assert_eq!(d.dials(), 4);
    // Delays 100 + 200 + 250 ms between the four attempts.
    assert_eq!(start.elapsed(), Duration::from_millis(550));
    m.connect_with_backoff(peer(OK, 1), connmgr::Backoff::default())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_everything_and_refuses_new_work() {
    let (m, d) = manager(4);
    m.connect(peer(OK, 1)).await.unwrap();
    m.connect(peer(OK, 2)).await.unwrap();
    m.disconnect(&peer(OK, 2)).await;
    m.shutdown().await;
    m.shutdown().await;
    assert_eq!((m.active(), m.idle(), d.closed()), (0, 0, 2));
    assert_eq!(m.get_status(&peer(OK, 1)).await, Some(Disconnected));
    assert!(matches!(m.connect(peer(OK, 3)).await, Err(Error::ShutDown)));
    assert!(matches!(m.lease(&peer(OK, 1)), Err(Error::ShutDown)));
}

/// Per-peer state is bounded: Disconnected or Failed peers with nothing
/// pooled are forgotten `forget_after` after their last change, by the
/// reaper, with an event saying so; Connected peers are kept.
#[tokio::test]
async fn stale_peers_are_forgotten_by_the_reaper() {
    let m = ConnectionManager::builder()
        .forget_after(connmgr::Config::MIN_FORGET_AFTER)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let mut events = m.subscribe();
    let (failed, kept) = (peer(FAIL, 1), peer(OK, 2));
    assert!(m.connect(failed).await.is_err());
    m.connect(kept).await.unwrap();
    assert_eq!(m.tracked_peers(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while m.tracked_peers() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.get_status(&failed).await, None, "forgotten");
    assert_eq!(m.get_status(&kept).await, Some(Connected), "kept");
    let seen = drain(&mut events);
    assert!(seen.contains(&(Some(Failed), None)), "{seen:?}");
}
