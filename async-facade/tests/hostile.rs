//! The manager under hostile use: boxed resolvers, abandoned watches,
//! panicking destructors, several runtimes, paused time, a tiny
//! `forget_after`. Each test is named after what it guards.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

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
