//! Tags, protection and trimming: go-libp2p's connection-manager tests
//! (`p2p/net/connmgr/connmgr_test.go`), ported to this API where they
//! apply, plus what is particular to it (leases, reasons, the background
//! trim on tokio time).

mod common;

use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, PeerId, Reason};

fn manager(low: usize, high: usize, grace: Duration) -> ConnectionManager<TestDialer> {
    ConnectionManager::builder()
        .max_connections(1000)
        .watermarks(low, high)
        .grace_period(grace)
        .dialer(TestDialer::default())
        .build()
        .unwrap()
}

async fn connect_all(m: &ConnectionManager<TestDialer>, from: u32, n: u32) -> Vec<PeerId> {
    let mut peers = vec![];
    for i in from..from + n {
        let p = peer(OK, i);
        m.connect(p).await.unwrap();
        peers.push(p);
    }
    peers
}

async fn is_connected(m: &ConnectionManager<TestDialer>, p: &PeerId) -> bool {
    m.get_status(p).await == Some(Connected)
}

/// go: TestConnTrimming. 300 connected over (200, 300); the 100 tagged
/// +10 survive the trim, the one tagged -5 is closed, 100 are closed.
#[tokio::test(start_paused = true)]
async fn trimming_closes_the_lowest_scores_first() {
    let m = manager(200, 300, Duration::ZERO);
    let peers = connect_all(&m, 0, 300).await;
    for p in &peers[..100] {
        m.tag_peer(p, "foo", 10);
    }
    m.tag_peer(&peers[299], "badfoo", -5);
    assert_eq!(m.count(Connected), 300, "nothing closed before the trim");
    assert_eq!(m.trim_now().await, 100);
    for p in &peers[..100] {
        assert!(is_connected(&m, p).await);
    }
    assert!(!is_connected(&m, &peers[299]).await);
    assert_eq!(m.count(Connected), 200);
    assert_eq!(m.idle(), 0, "trimmed connections are closed, not pooled");
    assert_eq!(m.dialer().closed(), 100);
    assert_eq!(m.active(), 200);
}

/// go: TestConnsToClose. Nothing to close at or below the low watermark,
/// within the grace period, or with no watermarks at all.
#[tokio::test(start_paused = true)]
async fn nothing_to_close_below_the_watermarks_or_in_grace() {
    let m = manager(5, 10, Duration::ZERO);
    connect_all(&m, 0, 5).await;
    assert_eq!(m.trim_now().await, 0, "at low");
    let m = manager(1, 2, Duration::from_secs(600));
    connect_all(&m, 0, 2).await;
    assert_eq!(m.trim_now().await, 0, "in grace");
    let m = ConnectionManager::builder()
        .dialer(TestDialer::default())
        .grace_period(Duration::ZERO)
        .build()
        .unwrap();
    m.connect(peer(OK, 1)).await.unwrap();
    assert_eq!(m.trim_now().await, 0, "no watermarks");
}

/// go: TestGracePeriod. One connection past its grace period and 30 new
/// ones over (10, 20): nothing is trimmed (only one is past grace), by
/// `trim_now` or in the background; once all are past it, 21 are
/// (31 -> 10).
#[tokio::test(start_paused = true)]
async fn new_connections_are_spared_for_the_grace_period() {
    let grace = Duration::from_millis(100);
    let m = ConnectionManager::builder()
        .max_connections(100)
        .watermarks(10, 20)
        .grace_period(grace)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    m.connect(peer(OK, 0)).await.unwrap();
    tokio::time::advance(2 * grace).await;
    connect_all(&m, 1, 30).await;
    assert_eq!(m.trim_now().await, 0);
    // The background trim (31 > high) is bound by the same rule.
    tokio::task::yield_now().await;
    assert_eq!(m.dialer().closed(), 0);
    tokio::time::advance(Duration::from_millis(200)).await;
    // Trimmed now, by this call or by the background trim woken first.
    m.trim_now().await;
    assert_eq!(m.dialer().closed(), 21);
    assert_eq!(m.count(Connected), 10);
}

/// go: TestPeerProtectionSingleTag. Protected peers do not count toward
/// the watermarks and are never trimmed, even with the lowest score;
/// unprotected, they are trimmed first.
#[tokio::test(start_paused = true)]
async fn protected_peers_survive_and_do_not_count() {
    let m = manager(19, 20, Duration::ZERO);
    let peers = connect_all(&m, 0, 20).await;
    for p in &peers {
        m.tag_peer(p, "test", 20);
    }
    for p in &peers[..5] {
        m.protect(p, "global");
        m.tag_peer(p, "test", -100);
    }
    // 16 unprotected: under low.
    let one = connect_all(&m, 100, 1).await;
    m.tag_peer(&one[0], "test", 20);
    assert_eq!(m.trim_now().await, 0);
    // 21 unprotected: 2 closed, no protected one.
    for p in connect_all(&m, 200, 5).await {
        m.tag_peer(&p, "test", 20);
    }
    assert_eq!(m.trim_now().await, 2);
    for p in &peers[..5] {
        assert!(is_connected(&m, p).await);
    }
    // Unprotect the first: its -100 makes it the first to go.
    assert!(!m.unprotect(&peers[0], "global"));
    for p in connect_all(&m, 300, 2).await {
        m.tag_peer(&p, "test", 20);
    }
    // 19 + 1 unprotected + 2 new: 3 closed, down to low.
    assert_eq!(m.trim_now().await, 3);
    assert!(!is_connected(&m, &peers[0]).await);
    for p in &peers[1..5] {
        assert!(is_connected(&m, p).await);
    }
}

/// go: TestPeerProtectionMultipleTags. Unprotecting one of two tags
/// answers that the peer is still protected, and it survives; removing the
/// second answers `false`, and the next trim closes it.
#[tokio::test(start_paused = true)]
async fn protection_under_several_tags() {
    let m = manager(19, 20, Duration::ZERO);
    let peers = connect_all(&m, 0, 20).await;
    for p in &peers {
        m.tag_peer(p, "test", 20);
    }
    for p in &peers[..5] {
        m.protect(p, "tag1");
        m.protect(p, "tag2");
        m.tag_peer(p, "test", -100);
    }
    connect_all(&m, 100, 1).await;
    m.trim_now().await;
    for p in &peers[..5] {
        assert!(is_connected(&m, p).await);
        assert!(m.unprotect(p, "tag1"), "still protected by tag2");
        assert!(m.is_protected(p));
    }
    for p in connect_all(&m, 200, 2).await {
        m.tag_peer(&p, "test", 20);
    }
    m.trim_now().await;
    for p in &peers[..5] {
        assert!(is_connected(&m, p).await);
    }
    assert!(!m.unprotect(&peers[0], "tag2"));
    assert!(!m.is_protected(&peers[0]));
    for p in connect_all(&m, 300, 2).await {
        m.tag_peer(&p, "test", 20);
    }
    m.trim_now().await;
    assert!(!is_connected(&m, &peers[0]).await);
    for p in &peers[1..5] {
        assert!(is_connected(&m, p).await);
    }
}

/// go: TestPeerProtectionIdempotent.
#[tokio::test(start_paused = true)]
async fn protection_is_idempotent() {
    let m = manager(10, 20, Duration::ZERO);
    let p = peer(OK, 1);
    for _ in 0..4 {
        m.protect(&p, "global");
    }
    assert!(m.unprotect(&p, "other"));
    assert!(m.unprotect(&p, "another"));
    assert!(!m.unprotect(&p, "global"));
    assert!(!m.is_protected(&p));
    assert!(!m.unprotect(&peer(OK, 2), "global"), "unknown peer");
}

/// go: TestTagPeerNonExistant, TestUpsertTag. Tags belong to the peer
/// whether or not it is connected, and are kept until removed.
#[tokio::test(start_paused = true)]
async fn tags_on_a_peer_that_is_not_connected() {
    let m = manager(10, 20, Duration::ZERO);
    let p = peer(OK, 1);
    m.tag_peer(&p, "test", 1);
    assert_eq!(m.peer_score(&p), 1);
    assert_eq!(m.get_status(&p).await, None, "tagging connects nothing");
    m.upsert_tag(&p, "up", |v| v + 1);
    assert_eq!(m.peer_score(&p), 2);
    m.upsert_tag(&p, "up", |v| v + 1);
    m.upsert_tag(&p, "up", |v| v - 1);
    assert_eq!(m.peer_score(&p), 2);
    m.connect(p).await.unwrap();
    assert_eq!(m.peer_score(&p), 2, "kept across the connection");
    assert_eq!(m.peer_score(&peer(OK, 9)), 0);
}

/// go: TestUntagPeer.
#[tokio::test(start_paused = true)]
async fn untagging() {
    let m = manager(10, 20, Duration::ZERO);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    m.tag_peer(&p, "tag", 5);
    m.tag_peer(&p, "tag two", 5);
    m.untag_peer(&peer(OK, 2), "test");
    m.untag_peer(&p, "test");
    assert_eq!(m.peer_score(&p), 10);
    m.untag_peer(&p, "tag");
    assert_eq!(m.peer_score(&p), 5);
}

/// go: TestDoubleConnection. A second connection of a Connected peer is
/// counted once, and the peer's score is kept.
#[tokio::test(start_paused = true)]
async fn a_double_connection_counts_once() {
    let m = manager(1, 5, Duration::ZERO);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    m.tag_peer(&p, "foo", 10);
    let d = m.dialer().clone();
    d.opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    m.adopt(
        p,
        Conn {
            closed: d.closed.clone(),
            alive: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(m.count(Connected), 1);
    assert_eq!(m.active(), 1);
    assert_eq!(m.peer_score(&p), 10);
    assert_eq!(m.trim_now().await, 0, "one peer, under low");
}

/// go: TestDisconnected. Disconnecting an unknown peer changes nothing;
/// the real one drops the count.
#[tokio::test(start_paused = true)]
async fn disconnecting_an_unknown_peer_changes_nothing() {
    let m = manager(1, 5, Duration::ZERO);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    m.tag_peer(&p, "foo", 10);
    m.disconnect(&peer(OK, 2)).await;
    assert_eq!(m.count(Connected), 1);
    assert_eq!(m.peer_score(&p), 10);
    m.disconnect(&p).await;
    assert_eq!(m.count(Connected), 0);
}

/// go: TestQuickBurstRespectsSilencePeriod. A burst over `high` is trimmed
/// in the background, once (at most once a second), down to `low`; what
/// was closed and what is open add up.
#[tokio::test(start_paused = true)]
async fn the_background_trim_runs_over_high_at_most_once_a_second() {
    let m = manager(10, 20, Duration::ZERO);
    let mut rx = m.subscribe();
    connect_all(&m, 0, 30).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut trimmed = || {
        let mut n = 0;
        while let Ok(e) = rx.try_recv() {
            n += usize::from(e.reason == Reason::Trimmed);
        }
        n
    };
    let mut closed = trimmed();
    assert_eq!(closed, 20, "trimmed down to low in the background");
    assert_eq!(closed + m.count(Connected), 30);
    // Over high again right away: the next trim waits for the second.
    connect_all(&m, 100, 15).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    closed += trimmed();
    assert_eq!(closed, 20, "not within the second");
    tokio::time::sleep(Duration::from_millis(600)).await;
    closed += trimmed();
    assert_eq!(closed, 35);
    assert_eq!(m.count(Connected), 10);
}

/// Not in go: a leased connection is in use, so it is never trimmed; it
/// still counts toward the watermarks.
#[tokio::test(start_paused = true)]
async fn a_leased_connection_is_not_trimmed() {
    let m = manager(1, 3, Duration::ZERO);
    let peers = connect_all(&m, 0, 3).await;
    m.tag_peer(&peers[0], "low", -10);
    let lease = m.lease(&peers[0]).unwrap();
    assert_eq!(m.trim_now().await, 2);
    assert!(is_connected(&m, &peers[0]).await);
    drop(lease);
}

/// Trimming says why, and a tagged or protected peer is never forgotten.
#[tokio::test(start_paused = true)]
async fn a_trim_says_trimmed() {
    let m = manager(0, 1, Duration::ZERO);
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    let mut rx = m.subscribe();
    assert_eq!(m.trim_now().await, 1);
    let e = rx.try_recv().unwrap();
    assert_eq!(
        (e.from, e.to, e.reason),
        (Some(Connected), Some(Disconnected), Reason::Trimmed)
    );
}

/// go: TrimBlocks/TrimJoin. Concurrent trims never close below `low`
/// together: their counts add up to exactly the excess. Two threads start
/// at one barrier and trim over and over, over enough peers that a trim's
/// pass meets the other's closes.
#[test]
fn concurrent_trims_never_close_below_low() {
    const N: u32 = 20_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let m = ConnectionManager::builder()
        .max_connections(N as usize)
        .watermarks(N as usize / 2, N as usize)
        .grace_period(Duration::ZERO)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    rt.block_on(connect_all(&m, 0, N));
    let barrier = std::sync::Barrier::new(2);
    let total: usize = std::thread::scope(|s| {
        let trims: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    (0..20)
                        .map(|_| rt.handle().block_on(m.trim_now()))
                        .sum::<usize>()
                })
            })
            .collect();
        trims.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(total, N as usize / 2);
    assert_eq!(m.count(Connected), N as usize / 2);
}

/// go: TestTrimClosed.
#[tokio::test(start_paused = true)]
async fn trim_after_shutdown_does_nothing() {
    let m = manager(0, 1, Duration::ZERO);
    m.connect(peer(OK, 1)).await.unwrap();
    m.shutdown().await;
    assert_eq!(m.trim_now().await, 0);
}

/// go: TestConcurrentCleanupAndTagging. Tagging many peers that are not
/// connected while trims run: no deadlock, every tag kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagging_while_trimming() {
    let m = manager(5, 10, Duration::ZERO);
    connect_all(&m, 0, 20).await;
    let trimmer = {
        let m = m.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                m.trim_now().await;
                tokio::task::yield_now().await;
            }
        })
    };
    for i in 0..1000 {
        m.tag_peer(&peer(OK, 10_000 + i), "t", 1);
    }
    trimmer.await.unwrap();
    for i in 0..1000 {
        assert_eq!(m.peer_score(&peer(OK, 10_000 + i)), 1);
    }
}

/// A tagged or protected peer is never forgotten (`forget_after` runs on
/// real time: this test waits just over its shortest setting).
#[tokio::test]
async fn tagged_and_protected_peers_are_never_forgotten() {
    let m = ConnectionManager::builder()
        .forget_after(connmgr::Config::MIN_FORGET_AFTER)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let (tagged, protected, plain) = (peer(FAIL, 1), peer(FAIL, 2), peer(FAIL, 3));
    for p in [tagged, protected, plain] {
        assert!(m.connect(p).await.is_err());
    }
    m.tag_peer(&tagged, "t", 1);
    m.protect(&protected, "p");
    std::thread::sleep(connmgr::Config::MIN_FORGET_AFTER + Duration::from_millis(100));
    m.reap_now();
    assert_eq!(m.get_status(&plain).await, None);
    assert_eq!(m.get_status(&tagged).await, Some(Failed));
    assert_eq!(m.get_status(&protected).await, Some(Failed));
    assert_eq!(m.peer_score(&tagged), 1);
    assert!(m.is_protected(&protected));
}
