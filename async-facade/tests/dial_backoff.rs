//! The per-peer dial backoff (`Builder::dial_backoff`), on tokio's paused
//! clock: a peer whose dials fail is refused with `BackingOff` until its
//! jittered delay passes; a successful dial resets it; bookkeeping does
//! not.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, Dialer, Error, PeerId};
use tokio::time::Instant;

/// A dialer whose dials fail while `failing` is set.
#[derive(Clone, Default)]
struct Flaky {
    failing: Arc<AtomicBool>,
    dials: Arc<AtomicUsize>,
}

impl Dialer for Flaky {
    type Conn = ();
    async fn dial(&self, _: &PeerId) -> io::Result<()> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
        } else {
            Ok(())
        }
    }
}

const INITIAL: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(8);

fn flaky() -> ConnectionManager<Flaky> {
    ConnectionManager::builder()
        .max_connections(4)
        .dial_backoff(INITIAL, MAX)
        .dialer(Flaky::default())
        .build()
        .unwrap()
}

/// The backoff `connect` reports, as a delay from now.
async fn backing_off<D: Dialer>(m: &ConnectionManager<D>, p: PeerId) -> Duration {
    match m.connect(p).await {
        Err(Error::BackingOff { peer, until }) => {
            assert_eq!(peer, p);
            until.saturating_duration_since(Instant::now().into_std())
        }
        other => panic!("expected BackingOff, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_peer_is_refused_until_its_doubling_jittered_delay_passes() {
    let m = flaky();
    m.dialer().failing.store(true, Ordering::SeqCst);
    let p = PeerId::random();
    let mut d = INITIAL;
    for failure in 1..=6 {
        assert!(matches!(m.connect(p).await, Err(Error::Dial { .. })));
        assert_eq!(m.dialer().dials.load(Ordering::SeqCst), failure);
        let wait = backing_off(&m, p).await;
        assert!(
            d / 2 <= wait && wait <= d,
            "failure {failure}: {wait:?} outside [{:?}, {d:?}]",
            d / 2
        );
        // Refused, no dial and no slot, until the delay passes.
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        backing_off(&m, p).await;
        assert_eq!(m.dialer().dials.load(Ordering::SeqCst), failure);
        assert_eq!(m.active(), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        d = (d * 2).min(MAX);
    }
    assert_eq!(m.get_status(&p).await, Some(Failed));
}

#[tokio::test(start_paused = true)]
async fn a_successful_dial_resets_the_backoff() {
    let m = flaky();
    let p = PeerId::random();
    m.dialer().failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(m.connect(p).await.is_err());
        tokio::time::advance(backing_off(&m, p).await).await;
    }
    m.dialer().failing.store(false, Ordering::SeqCst);
    m.connect(p).await.unwrap();
    // Failed by bookkeeping (closes the connection, no dial failure), then
    // a failing dial: the first delay again, not the fourth.
    m.update_status(p, Failed).await;
    m.dialer().failing.store(true, Ordering::SeqCst);
    assert!(m.connect(p).await.is_err());
    let wait = backing_off(&m, p).await;
    assert!(wait <= INITIAL, "{wait:?}: not reset");
}

#[tokio::test(start_paused = true)]
async fn update_status_disconnected_does_not_reset_the_backoff() {
    let m = flaky();
    let p = PeerId::random();
    m.dialer().failing.store(true, Ordering::SeqCst);
    assert!(m.connect(p).await.is_err());
    m.update_status(p, Disconnected).await;
    backing_off(&m, p).await;
    assert_eq!(m.dialer().dials.load(Ordering::SeqCst), 1);
}

/// The backoff is checked before a slot is taken: a full manager still
/// says `BackingOff`, and a backing-off peer holds no slot.
#[tokio::test(start_paused = true)]
async fn the_backoff_is_checked_before_a_slot_is_taken() {
    let m = ConnectionManager::builder()
        .max_connections(1)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let f = peer(FAIL, 0);
    assert!(m.connect(f).await.is_err());
    m.connect(peer(OK, 0)).await.unwrap();
    backing_off(&m, f).await;
    assert_eq!(m.active(), 1);
}

/// Peers that failed together are redialed spread over their jitter
/// window, not all at once.
#[tokio::test(start_paused = true)]
async fn peers_that_failed_together_spread_their_redials() {
    let m = ConnectionManager::builder()
        .max_connections(256)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let mut waits = Vec::new();
    for n in 0..200 {
        let _ = m.connect(peer(FAIL, n)).await;
        waits.push(backing_off(&m, peer(FAIL, n)).await);
    }
    waits.sort();
    let (first, last) = (waits[0], waits[waits.len() - 1]);
    assert!(first >= Duration::from_millis(500) && last <= Duration::from_secs(1));
    assert!(
        last - first > Duration::from_millis(400),
        "{first:?}..{last:?}"
    );
}

/// `connect_with_backoff` does not count a `BackingOff` as an attempt: it
/// sleeps until the peer's backoff ends, so each of its attempts dials.
#[tokio::test(start_paused = true)]
async fn the_reconnect_helper_waits_out_the_peer_backoff() {
    let m = ConnectionManager::builder()
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let f = peer(FAIL, 0);
    let helper = connmgr::Backoff::new(Duration::from_millis(10), Duration::from_millis(10), 3)
        .without_jitter();
    let start = Instant::now();
    let err = m.connect_with_backoff(f, helper).await.unwrap_err();
    assert!(matches!(err, Error::GaveUp { attempts: 3, .. }), "{err}");
    assert_eq!(m.dialer().dials(), 3, "every attempt dialed");
    // The peer's delays after failures 1 and 2: at least 0.5 s and 1 s.
    assert!(start.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn dial_backoff_zero_turns_it_off() {
    let m = ConnectionManager::builder()
        .dial_backoff(Duration::ZERO, Duration::ZERO)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            m.connect(peer(FAIL, 0)).await,
            Err(Error::Dial { .. })
        ));
    }
    let err = ConnectionManager::builder()
        .dial_backoff(Duration::from_secs(2), Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `dial_backoff`: it must be initial at most max"
    );
}
