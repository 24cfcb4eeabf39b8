//! `shutdown_gracefully`: no new work is accepted; leases returned before
//! the deadline are closed as they come back; those still out at the
//! deadline are counted, and their I/O fails from then on. Paused clock.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connmgr::{ConnectionManager, ConnectionStatus::*, Dialer, Error, PeerId, Reason};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

/// Connections are in-memory pipes; the far ends are kept so the near
/// ends stay writable, and drops are counted.
#[derive(Clone, Default)]
struct Pipes {
    closed: Arc<AtomicUsize>,
    far: Arc<std::sync::Mutex<Vec<DuplexStream>>>,
}

struct Pipe {
    stream: DuplexStream,
    closed: Arc<AtomicUsize>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

impl tokio::io::AsyncWrite for Pipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Dialer for Pipes {
    type Conn = Pipe;
    async fn dial(&self, _: &PeerId) -> io::Result<Pipe> {
        let (near, far) = tokio::io::duplex(1 << 16);
        self.far.lock().unwrap().push(far);
        Ok(Pipe {
            stream: near,
            closed: self.closed.clone(),
        })
    }
}

fn closed(m: &ConnectionManager<Pipes>) -> usize {
    m.dialer().closed.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn leases_returned_in_time_close_cleanly_and_the_rest_are_cut_at_the_deadline() {
    let m = ConnectionManager::builder()
        .dialer(Pipes::default())
        .build()
        .unwrap();
    let [a, b, c, d] = [0u8, 1, 2, 3].map(|n| PeerId::from_bytes([n; 32]));
    for p in [a, b, c, d] {
        m.connect(p).await.unwrap();
    }
    m.disconnect(&d).await; // idle
    let lease_a = m.lease(&a).unwrap();
    let mut lease_b = m.lease(&b).unwrap();
    let mut events = m.subscribe();
    let start = Instant::now();
    let drain = tokio::spawn({
        let m = m.clone();
        async move { m.shutdown_gracefully(Duration::from_secs(10)).await }
    });
    tokio::task::yield_now().await;
    // At once: the idle one and c's (not leased) are closed; every
    // Connected peer is Disconnected; nothing new is accepted.
    assert_eq!(closed(&m), 2);
    for p in [a, b, c] {
        assert_eq!(m.get_status(&p).await, Some(Disconnected));
    }
    let e = events.try_recv().unwrap();
    assert_eq!(e.reason, Reason::ShutDown);
    assert!(matches!(m.connect(d).await, Err(Error::ShutDown)));
    assert!(matches!(m.lease(&c), Err(Error::ShutDown)));
    assert_eq!((m.active(), m.idle()), (0, 0));
    // The leases still work until they come back or the deadline.
    lease_b.write_all(b"still usable").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(lease_a);
    assert_eq!(closed(&m), 3, "returned in time: closed as it came back");
    assert!(!drain.is_finished());
    let forced = drain.await.unwrap();
    assert_eq!(forced, 1, "b's lease was still out");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    let err = lease_b.write_all(b"too late").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    drop(lease_b);
    assert_eq!(closed(&m), 4);
    assert_eq!(m.in_use(connmgr::Limit::Sockets), 0);
}

#[tokio::test(start_paused = true)]
async fn a_drain_with_every_lease_back_returns_at_once() {
    let m = ConnectionManager::builder()
        .dialer(Pipes::default())
        .build()
        .unwrap();
    let p = PeerId::random();
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    let drain = tokio::spawn({
        let m = m.clone();
        async move { m.shutdown_gracefully(Duration::from_secs(60)).await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let start = Instant::now();
    drop(lease);
    assert_eq!(drain.await.unwrap(), 0);
    assert_eq!(start.elapsed(), Duration::ZERO, "woken by the return");
    assert_eq!(closed(&m), 1);
    // Idle: nothing to wait for.
    assert_eq!(m.shutdown_gracefully(Duration::from_secs(60)).await, 0);
}

/// A connection whose close takes a while (its destructor sleeps).
struct Slow(Arc<AtomicUsize>);

impl Drop for Slow {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct SlowDialer(Arc<AtomicUsize>);

impl Dialer for SlowDialer {
    type Conn = Slow;
    async fn dial(&self, _: &PeerId) -> io::Result<Slow> {
        Ok(Slow(self.0.clone()))
    }
}

/// A second drain, started while the first is still closing on another
/// thread, returns only once those closes are done (not with 0 at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_drain_waits_for_the_first_ones_closes() {
    let m = ConnectionManager::builder()
        .dialer(SlowDialer::default())
        .build()
        .unwrap();
    for n in 0..6u8 {
        m.connect(PeerId::from_bytes([n; 32])).await.unwrap();
    }
    let first = std::thread::spawn({
        let m = m.clone();
        move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(m.shutdown_gracefully(Duration::from_secs(5)))
        }
    });
    while !m.is_shut_down() {
        std::hint::spin_loop();
    }
    assert_eq!(m.shutdown_gracefully(Duration::from_secs(5)).await, 0);
    assert_eq!(m.dialer().0.load(Ordering::SeqCst), 6, "all closed first");
    assert_eq!(first.join().unwrap(), 0);
}
