//! The manager under hostile use: boxed resolvers, abandoned watches,
//! panicking destructors, several runtimes, paused time, a tiny
//! `forget_after`. Each test is named after what it guards.

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, Dialer, PeerId, TcpDialer};

/// A resolver boxed as real code stores it: the dial future, hence
/// `connect`'s, is `Send`, so `connect` can be spawned.
#[tokio::test]
async fn connect_with_a_boxed_resolver_is_spawnable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    type Resolver = Box<dyn Fn(&PeerId) -> Option<SocketAddr> + Send + Sync>;
    let resolve: Resolver = Box::new(move |_: &PeerId| Some(addr));
    let m = ConnectionManager::builder()
        .dialer(TcpDialer::new(resolve))
        .build()
        .unwrap();
    let p = peer(OK, 1);
    let connect = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    let (_accepted, _) = listener.accept().await.unwrap();
    connect.await.unwrap().unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
}

/// A connection whose destructor panics once `armed` is set.
struct Bomb {
    armed: Arc<AtomicBool>,
    closed: Arc<AtomicUsize>,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst) {
            panic!("a connection destructor panics");
        }
    }
}

/// Dials [`Bomb`]s.
#[derive(Clone, Default)]
struct BombDialer {
    armed: Arc<AtomicBool>,
    closed: Arc<AtomicUsize>,
}

impl Dialer for BombDialer {
    type Conn = Bomb;
    async fn dial(&self, _: &PeerId) -> io::Result<Bomb> {
        Ok(Bomb {
            armed: self.armed.clone(),
            closed: self.closed.clone(),
        })
    }
}

/// Six peers connected, two pooled, every destructor panics: `shutdown`
/// still closes all eight connections, disconnects every peer (and says
/// so on their watches), empties the pool, frees every slot, and then
/// re-raises the panic.
#[tokio::test]
async fn a_panicking_destructor_leaves_no_shutdown_half_done() {
    let d = BombDialer::default();
    let m = ConnectionManager::builder()
        .dialer(d.clone())
        .build()
        .unwrap();
    let peers: Vec<_> = (0..8).map(|i| peer(OK, i)).collect();
    for &p in &peers {
        m.connect(p).await.unwrap();
    }
    for p in &peers[6..] {
        m.disconnect(p).await;
    }
    let watches: Vec<_> = peers.iter().map(|p| m.watch(p)).collect();
    assert_eq!((m.count(Connected), m.idle()), (6, 2));
    d.armed.store(true, Ordering::SeqCst);

    let shutdown = tokio::spawn({
        let m = m.clone();
        async move { m.shutdown().await }
    });
    assert!(
        shutdown.await.unwrap_err().is_panic(),
        "the panic is re-raised"
    );
    assert!(m.is_shut_down());
    assert_eq!(
        d.closed.load(Ordering::SeqCst),
        8,
        "every connection closed"
    );
    assert_eq!(m.count(Connected), 0);
    assert_eq!((m.idle(), m.active()), (0, 0));
    for w in &watches {
        assert_ne!(*w.borrow(), Some(Connected));
    }
}

/// A destructor panicking inside `disconnect` (the pool is full, so the
/// connection is closed): the status, the watch and the event all say
/// Disconnected, the slot is free, and the panic reaches the caller.
#[tokio::test]
async fn a_panicking_destructor_in_disconnect_still_sends_its_event() {
    let d = BombDialer::default();
    let m = ConnectionManager::builder()
        .max_idle_total(1)
        .dialer(d.clone())
        .build()
        .unwrap();
    let (p, q) = (peer(OK, 1), peer(OK, 2));
    m.connect(q).await.unwrap();
    m.disconnect(&q).await; // fills the pool
    m.connect(p).await.unwrap();
    let watch = m.watch(&p);
    let mut events = m.subscribe();
    d.armed.store(true, Ordering::SeqCst);

    let disconnect = tokio::spawn({
        let m = m.clone();
        async move { m.disconnect(&p).await }
    });
    assert!(
        disconnect.await.unwrap_err().is_panic(),
        "the panic is re-raised"
    );
    assert_eq!(m.get_status(&p).await, Some(Disconnected));
    assert_eq!(*watch.borrow(), Some(Disconnected));
    let e = events.try_recv().expect("the event was sent");
    assert_eq!(
        (e.peer, e.from, e.to),
        (p, Some(Connected), Some(Disconnected))
    );
    assert_eq!(m.active(), 0);
    d.armed.store(false, Ordering::SeqCst);
}

fn runtime(paused: bool) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    if paused {
        b.start_paused(true);
    }
    b.build().unwrap()
}

/// The first call comes from runtime A, which stays alive but is never
/// driven again (a current-thread runtime runs its tasks only inside
/// `block_on`); runtime B then uses the manager: B's idle connections
/// expire by B's reaper, on B's (paused) clock.
#[test]
fn idle_connections_expire_on_the_runtime_that_uses_the_manager() {
    let (a, b) = (runtime(false), runtime(true));
    let ttl = Duration::from_secs(10);
    let d = TestDialer::default();
    let m = ConnectionManager::builder()
        .pool_timeout(ttl)
        .dialer(d.clone())
        .build()
        .unwrap();
    a.block_on(m.connect(peer(OK, 0))).unwrap();
    b.block_on(async {
        let p = peer(OK, 1);
        m.connect(p).await.unwrap();
        m.disconnect(&p).await;
        assert_eq!(m.idle(), 1);
        tokio::time::sleep(3 * ttl).await;
        assert_eq!(m.idle(), 0, "expired on B");
    });
    assert_eq!(d.closed(), 1);
    drop(a);
}

/// A destructor panics inside the reaper: the reaper survives it, and the
/// next idle connection still expires with no call made.
#[tokio::test(start_paused = true)]
async fn the_reaper_survives_a_panicking_destructor() {
    let ttl = Duration::from_secs(10);
    let d = BombDialer::default();
    let m = ConnectionManager::builder()
        .pool_timeout(ttl)
        .dialer(d.clone())
        .build()
        .unwrap();
    let (p, q) = (peer(OK, 1), peer(OK, 2));
    m.connect(p).await.unwrap();
    m.connect(q).await.unwrap();
    d.armed.store(true, Ordering::SeqCst);
    m.disconnect(&p).await;
    tokio::time::sleep(ttl / 2).await;
    m.disconnect(&q).await;
    tokio::time::sleep(ttl / 2 + Duration::from_secs(1)).await;
    assert_eq!(
        m.idle(),
        1,
        "the first expired, and its destructor panicked"
    );
    tokio::time::sleep(ttl).await;
    assert_eq!(m.idle(), 0, "the reaper still ran");
    assert_eq!(d.closed.load(Ordering::SeqCst), 2);
}

/// Paused time alone drives expiry, also when an `advance` crosses a
/// forget sweep over many tracked peers: the sweep runs on the reaper's
/// task, not on a blocking-pool thread the paused runtime would wait for.
#[tokio::test(start_paused = true)]
async fn paused_time_alone_drives_expiry_across_a_forget_sweep() {
    let ttl = Duration::from_secs(300);
    let m = ConnectionManager::builder()
        .pool_timeout(ttl)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    // Disconnected peers make every sweep run; 100k make it take a while.
    for i in 0..100_000 {
        m.update_status(peer(OK, 1_000 + i), Disconnected).await;
    }
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    m.disconnect(&p).await;
    tokio::time::advance(ttl - Duration::from_millis(1)).await;
    tokio::time::advance(Duration::from_millis(2)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(m.idle(), 0, "expired on paused time alone");
}

/// A 16 MiB `write_all` through a lease is cut short (polled once, then
/// dropped) and the lease dropped, not discarded: the connection, with
/// half a message in its send buffer, is closed (not pooled), the peer
/// Disconnected, and the next `connect` dials a fresh socket instead of
/// reusing it.
#[tokio::test]
async fn a_lease_dropped_mid_write_is_never_reused() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, mut accepts) = tokio::sync::mpsc::unbounded_channel();
    // Accepts and never reads: the write cannot finish.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
            let _ = accepted.send(());
        }
    });
    let m = ConnectionManager::builder()
        .dialer(TcpDialer::new(move |_| Some(addr)))
        .build()
        .unwrap();
    let p = peer(OK, 1);
    m.connect(p).await.unwrap();
    accepts.recv().await.unwrap();

    let mut lease = m.lease(&p).unwrap();
    let message = vec![7u8; 16 << 20];
    {
        let write = std::pin::pin!(lease.write_all(&message));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            write.poll(&mut cx).is_pending(),
            "16 MiB cannot fit in the socket buffers"
        );
    }
    drop(lease);
    assert_eq!(m.get_status(&p).await, Some(Disconnected), "closed");
    assert_eq!((m.idle(), m.active()), (0, 0), "closed, not pooled");
    m.connect(p).await.unwrap();
    let fresh = tokio::time::timeout(Duration::from_secs(5), accepts.recv()).await;
    assert!(fresh.is_ok(), "the half-written connection was reused");
}

/// A read through a lease times out and the lease is dropped: only that
/// connection is closed. The peer goes Disconnected, not Failed, and its
/// other idle connection stays pooled and is reused by the next `connect`.
#[tokio::test]
async fn a_read_cut_short_closes_only_its_own_connection() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepts);
    // Accepts, never writes: every read waits.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let m = ConnectionManager::builder()
        .dialer(TcpDialer::new(move |_| Some(addr)))
        .build()
        .unwrap();
    let p = peer(OK, 1);
    // Connection A, leased across a disconnect, goes idle when its lease
    // ends; connection B is live.
    m.connect(p).await.unwrap();
    let a = m.lease(&p).unwrap();
    m.disconnect(&p).await;
    m.connect(p).await.unwrap();
    drop(a);
    assert_eq!((m.idle(), m.active()), (1, 1));

    let mut b = m.lease(&p).unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(20), b.read(&mut buf)).await;
    assert!(read.is_err(), "nothing to read: the read times out");
    drop(b);
    assert_eq!(m.get_status(&p).await, Some(Disconnected));
    assert_eq!((m.idle(), m.active()), (1, 0), "A stays pooled");
    m.connect(p).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        accepts.load(Ordering::SeqCst),
        2,
        "A was reused, no third dial"
    );
    assert_eq!(m.idle(), 0);
}

/// A resolver that panics, then an `is_alive` that panics: the panicking
/// `connect` leaves no slot taken, no dial registered and the status as it
/// was; a panicking `is_alive` counts as dead (the pooled connection is
/// closed and the peer dialed).
#[tokio::test]
async fn panicking_user_code_in_connect_leaves_nothing_half_done() {
    // The resolver panics while `panicky` is set.
    let panicky = Arc::new(AtomicBool::new(true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let m = ConnectionManager::builder()
        .dialer(TcpDialer::new({
            let panicky = panicky.clone();
            move |_: &PeerId| {
                assert!(!panicky.load(Ordering::SeqCst), "a resolver panics");
                Some(addr)
            }
        }))
        .build()
        .unwrap();
    let p = peer(OK, 1);
    let connect = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    assert!(connect.await.unwrap_err().is_panic());
    assert_eq!(m.get_status(&p).await, None, "restored");
    assert_eq!((m.active(), m.pending_dials()), (0, 0));
    panicky.store(false, Ordering::SeqCst);
    m.connect(p).await.unwrap();

    /// Dials `Conn`s whose `is_alive` panics.
    struct PanickyAlive(TestDialer);
    impl Dialer for PanickyAlive {
        type Conn = Conn;
        fn dial(&self, p: &PeerId) -> impl Future<Output = io::Result<Conn>> + Send {
            self.0.dial(p)
        }
        fn is_alive(&self, _: &mut Conn) -> bool {
            panic!("is_alive panics")
        }
    }
    let d = TestDialer::default();
    let m = ConnectionManager::builder()
        .dialer(PanickyAlive(d.clone()))
        .build()
        .unwrap();
    m.connect(p).await.unwrap();
    m.disconnect(&p).await;
    m.connect(p).await.unwrap();
    assert_eq!((d.dials(), d.closed(), m.idle()), (2, 1, 0));
    assert_eq!(m.get_status(&p).await, Some(Connected));
}

/// Dropping a runtime whose tasks hold leases of disconnected peers: each
/// lease's drop pools its connection while the runtime shuts down, where
/// no reaper can be spawned any more; the drop must neither hang nor lose
/// the connection.
#[test]
fn dropping_a_runtime_whose_tasks_hold_leases_never_hangs() {
    const PEERS: u32 = 32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let m = ConnectionManager::builder()
            .dialer(TestDialer::default())
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..PEERS {
                let p = peer(OK, i);
                m.connect(p).await.unwrap();
                let lease = m.lease(&p).unwrap();
                tokio::spawn(async move {
                    let _held = lease;
                    std::future::pending::<()>().await
                });
            }
            tokio::task::yield_now().await;
            for i in 0..PEERS {
                m.disconnect(&peer(OK, i)).await;
            }
        });
        drop(rt);
        tx.send(m.idle()).unwrap();
    });
    let idle = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("dropping the runtime hung");
    assert_eq!(idle, PEERS as usize, "every leased connection was pooled");
}
