//! The `docs/failure-modes.md` entries owned by the facade: #1-#5, #7, #9,
//! #13, #14.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, Error, Limit, NoTransport, PeerId};

fn manager(max: usize, dial_timeout: Duration) -> (ConnectionManager<TestDialer>, TestDialer) {
    let dialer = TestDialer::default();
    let m = ConnectionManager::builder()
        .max_connections(max)
        .dial_timeout(dial_timeout)
        .pool_timeout(Duration::from_secs(30))
        .dialer(dialer.clone())
        .build()
        .unwrap();
    (m, dialer)
}

/// Everything that counts slots is back at zero.
fn assert_quiet<D: connmgr::Dialer>(m: &ConnectionManager<D>) {
    assert_eq!(m.active(), 0, "slots reserved");
    assert_eq!(m.pending_dials(), 0, "dials in flight");
    assert_eq!(m.count(Connecting), 0, "peers stuck Connecting");
    assert_eq!(m.count(Connected), 0, "peers Connected");
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `docs/failure-modes.md` #1: 10,000 `connect` futures (to 300 peers, so many share a
/// dial) are polled a random number of times and then dropped, or cut off by
/// a timeout. No slot leaks: afterwards nothing is reserved, pending or
/// stuck, and `max_connections` new connects all succeed.
#[tokio::test(start_paused = true)]
async fn dropped_connects_never_leak_slots() {
    let (m, _) = manager(64, Duration::from_secs(3600));
    let mut rng = Rng(0x5eed);
    let mut cx = Context::from_waker(Waker::noop());
    for i in 0..10_000u32 {
        let kind = if rng.below(2) == 0 { HANG } else { SLOW };
        let p = peer(kind, (i * 7919) % 300);
        if rng.below(3) == 0 {
            let _ =
                tokio::time::timeout(Duration::from_micros(rng.below(3_000)), m.connect(p)).await;
        } else {
            let mut fut = Box::pin(m.connect(p));
            for _ in 0..rng.below(4) {
                if fut.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
            }
            drop(fut);
        }
        if i % 1000 == 0 {
            // Let timers and other tasks run now and then.
            tokio::task::yield_now().await;
        }
    }
    // Slow dials that completed are Connected: disconnect them all.
    for i in 0..300 {
        m.disconnect(&peer(SLOW, i)).await;
    }
    assert_quiet(&m);
    for i in 0..64 {
        m.connect(peer(OK, 10_000 + i)).await.unwrap();
    }
    assert_eq!(m.active(), 64);
    assert!(matches!(
        m.connect(peer(OK, 1)).await,
        Err(Error::LimitReached {
            limit: Limit::Connections,
            max: 64
        })
    ));
}

/// `docs/failure-modes.md` #2: many tasks on two worker threads connect with dialers that
/// succeed, fail, hang and are slow, and disconnect again; a sampler checks
/// at every sample, not just at the end, that the slots in use (connecting +
/// connected: `active()`, one atomic) never exceed the limit.
///
/// The per-status counts are sums over shards read one after another, so a
/// sample taken while peers move can count one peer leaving and another
/// arriving both (it first failed that way, summing two counts); each count
/// alone is still checked against the limit, with one peer of slack per
/// worker thread for transitions caught mid-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_at_every_sample() {
    const MAX: usize = 8;
    let (m, _) = manager(MAX, Duration::from_millis(30));
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (m, done, samples) = (m.clone(), done.clone(), samples.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                let active = m.active();
                assert!(active <= MAX, "{active} slots in use, limit {MAX}");
                for s in [Connected, Connecting] {
                    let n = m.count(s);
                    assert!(n <= MAX + 2, "{n} peers {s:?}, limit {MAX}");
                }
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32u32 {
        let m = m.clone();
        tasks.spawn(async move {
            let mut rng = Rng(u64::from(t) + 1);
            for i in 0..40 {
                let kind = [OK, FAIL, HANG, SLOW][rng.below(4) as usize];
                let p = peer(kind, t * 1000 + i);
                if m.connect(p).await.is_ok() {
                    tokio::task::yield_now().await;
                    m.disconnect(&p).await;
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    done.store(true, Ordering::Release);
    sampler.await.unwrap();
    assert!(samples.load(Ordering::Relaxed) > 100, "the sampler ran");
    assert_quiet(&m);
}

/// `docs/failure-modes.md` #3: thousands of dials to a port that refuses free their
/// pending slots; a good dial still succeeds afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_dials_free_their_slots() {
    let refusing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // dropped: nothing listens there now
    let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good_addr = good.local_addr().unwrap();
    let good_peer = PeerId::from_bytes([0xEE; 32]);
    let m = ConnectionManager::builder()
        .max_connections(16)
        .dialer(connmgr::TcpDialer::new(move |p: &PeerId| {
            Some(if *p == good_peer { good_addr } else { refusing })
        }))
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u32 {
        let m = m.clone();
        tasks.spawn(async move {
            for i in 0..250 {
                let err = m.connect(peer(OK, t * 1000 + i)).await.unwrap_err();
                assert!(
                    matches!(err, Error::Dial { .. } | Error::LimitReached { .. }),
                    "{err}"
                );
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(m.pending_dials(), 0);
    assert_eq!(m.active(), 0);
    assert!(m.count(Failed) > 1000, "most dials were made and failed");
    let accept = tokio::spawn(async move { good.accept().await.map(|_| ()) });
    m.connect(good_peer).await.unwrap();
    accept.await.unwrap().unwrap();
}

/// `docs/failure-modes.md` #4: every exit path leaves the gauges exact and never below
/// zero (a usize gauge that underflowed would be astronomically large).
#[tokio::test(start_paused = true)]
async fn no_exit_path_underflows_a_gauge() {
    let (m, _) = manager(2, Duration::from_millis(100));
    let sane = |m: &ConnectionManager<TestDialer>| {
        for g in [
            m.active(),
            m.idle(),
            m.pending_dials(),
            m.tracked_peers(),
            m.count(Connected),
            m.count(Connecting),
        ] {
            assert!(g < 1 << 32, "a gauge underflowed: {g}");
        }
    };
    m.connect(peer(OK, 1)).await.unwrap();
    m.connect(peer(OK, 2)).await.unwrap();
    assert!(m.connect(peer(OK, 3)).await.is_err()); // limit
    sane(&m);
    m.disconnect(&peer(OK, 1)).await;
    m.disconnect(&peer(OK, 1)).await; // double disconnect
    m.disconnect(&peer(OK, 77)).await; // unknown peer
    sane(&m);
    assert!(m.connect(peer(FAIL, 1)).await.is_err()); // dial error
    assert!(m.connect(peer(HANG, 1)).await.is_err()); // timeout
    let _ = tokio::time::timeout(Duration::from_millis(10), m.connect(peer(HANG, 2))).await; // cancel
    sane(&m);
    m.update_status(peer(OK, 2), Failed).await;
    m.update_status(peer(OK, 2), Failed).await;
    m.disconnect(&peer(OK, 2)).await;
    sane(&m);
    assert_eq!(
        (m.active(), m.count(Connected), m.count(Connecting)),
        (0, 0, 0)
    );
    assert_eq!(
        m.get_status(&peer(HANG, 2)).await,
        None,
        "a cancelled first dial leaves no entry"
    );
}

/// `docs/failure-modes.md` #5 (deterministic; the loom models are in
/// `src/dial_share.rs`): a cancelled waiter never swallows the
/// wake-up of the others. The dial's leader is cancelled while two callers
/// wait on it: one of them takes the dial over and both get its outcome. A
/// cancelled follower does not disturb the leader or the other follower.
#[tokio::test(start_paused = true)]
async fn cancelled_leader_or_follower_strands_no_waiter() {
    let (m, d) = manager(4, Duration::from_secs(60));
    let p = peer(SLOW, 15); // a 16 ms dial
    let mut cx = Context::from_waker(Waker::noop());

    let mut leader = Box::pin(m.connect(p));
    assert!(leader.as_mut().poll(&mut cx).is_pending());
    let a = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    let b = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    tokio::task::yield_now().await; // both are waiting on the leader now
    assert_eq!(m.pending_dials(), 1);
    drop(leader);
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(d.dials(), 2, "the cancelled dial, then the one taken over");
    assert_eq!(m.active(), 1);

    let q = peer(SLOW, 16);
    let leader = tokio::spawn({
        let m = m.clone();
        async move { m.connect(q).await }
    });
    tokio::task::yield_now().await;
    let mut follower = Box::pin(m.connect(q));
    assert!(follower.as_mut().poll(&mut cx).is_pending());
    let other = tokio::spawn({
        let m = m.clone();
        async move { m.connect(q).await }
    });
    tokio::task::yield_now().await;
    drop(follower); // cancelled while the leader's dial is in flight
    assert_eq!(m.pending_dials(), 1, "the leader's dial goes on");
    leader.await.unwrap().unwrap();
    other.await.unwrap().unwrap();
    assert_eq!(d.dials(), 3);
}

/// `docs/failure-modes.md` #7: with paused time, idle connections are closed after the
/// TTL with no API call, and dropping the manager ends the reaper task.
#[tokio::test(start_paused = true)]
async fn idle_connections_expire_by_themselves_and_the_reaper_ends_with_the_manager() {
    let rt = tokio::runtime::Handle::current();
    let baseline = rt.metrics().num_alive_tasks();
    let (m, d) = manager(8, Duration::from_secs(5));
    for i in 0..5 {
        m.connect(peer(OK, i)).await.unwrap();
        m.disconnect(&peer(OK, i)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(m.idle(), 5);
    assert_eq!(
        rt.metrics().num_alive_tasks(),
        baseline + 1,
        "the reaper runs"
    );
    // TTL is 30 s; they went idle at 0..=4 s and it is 5 s now. No API call
    // from here on.
    tokio::time::sleep(Duration::from_millis(25_500)).await;
    assert_eq!(
        d.closed(),
        1,
        "the first one expired on time, the others not yet"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(d.closed(), 5);
    assert_eq!(m.idle(), 0);
    drop(m);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(rt.metrics().num_alive_tasks(), baseline, "the reaper ended");
}

/// `docs/failure-modes.md` #9: dropping a lease outside any runtime, after shutdown, or
/// while its thread unwinds neither panics nor blocks, and a connection
/// whose user panicked is never handed out again.
#[test]
fn lease_drops_are_safe_everywhere() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (m, d) = manager(4, Duration::from_secs(5));
    let (a, b, c) = (peer(OK, 1), peer(OK, 2), peer(OK, 3));
    rt.block_on(async {
        for p in [a, b, c] {
            m.connect(p).await.unwrap();
        }
    });
    // Outside the runtime, on another thread.
    let lease = m.lease(&a).unwrap();
    std::thread::spawn(move || drop(lease)).join().unwrap();
    assert!(m.lease(&a).is_ok(), "returned to its slot");

    // While unwinding.
    let m2 = m.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _lease = m2.lease(&b).unwrap();
        panic!("user code failed while holding the connection");
    }));
    assert!(r.is_err());
    assert_eq!(d.closed(), 1, "closed, not returned");
    assert_eq!(rt.block_on(m.get_status(&b)), Some(Failed));
    assert!(matches!(m.lease(&b), Err(Error::NotConnected { .. })));

    // After shutdown.
    let lease = m.lease(&c).unwrap();
    rt.block_on(m.shutdown());
    drop(lease);
    assert_eq!(d.closed(), 3);
    drop(rt);
    drop(m);
}

/// `docs/failure-modes.md` #13: 100 concurrent connects to one peer make one dial.
#[tokio::test(start_paused = true)]
async fn concurrent_connects_to_one_peer_share_one_dial() {
    let (m, d) = manager(4, Duration::from_secs(5));
    let p = peer(SLOW, 5);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let m = m.clone();
        tasks.spawn(async move { m.connect(p).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(d.dials(), 1);
    assert_eq!(m.active(), 1);
}

/// `docs/failure-modes.md` #14: a dial that answers after the deadline: its connection
/// is closed when it arrives, and nothing is counted.
#[tokio::test(start_paused = true)]
async fn a_late_answer_after_the_timeout_is_closed() {
    let (m, d) = manager(4, Duration::from_secs(2));
    let p = peer(LATE, 1);
    assert!(matches!(m.connect(p).await, Err(Error::Timeout { .. })));
    assert_eq!(d.opened(), 0);
    tokio::time::sleep(Duration::from_secs(30)).await; // the answer arrives
    assert_eq!(d.opened(), 1);
    assert_eq!(d.closed(), 1, "the late connection was closed");
    assert_eq!((m.active(), m.idle(), m.count(Connected)), (0, 0, 0));
    assert_eq!(m.get_status(&p).await, Some(Failed));
}

/// The transport-less default from the reference: connect registers.
#[tokio::test]
async fn transport_less_default_tracks_like_the_reference() {
    let m: ConnectionManager<NoTransport> = ConnectionManager::new(2);
    let p = PeerId::random();
    m.connect(p).await.unwrap();
    m.connect(PeerId::random()).await.unwrap();
    assert!(matches!(
        m.connect(PeerId::random()).await,
        Err(Error::LimitReached {
            limit: Limit::Connections,
            max: 2
        })
    ));
    m.disconnect(&p).await;
    assert_eq!(m.get_metrics().await.connections, 1);
}
