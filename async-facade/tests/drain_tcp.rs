//! `shutdown_gracefully` over real loopback TCP: a lease still out at the
//! deadline has its socket shut down (the server reads end of file while
//! the lease is held), one returned in time is closed by its return, and
//! an abort handle never runs once its lease has ended, even when the
//! lease ends while the drain is running the handles and its descriptor
//! number is reused at once.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connmgr::{AbortHandle, ConnectionManager, Dialer, Lease, PeerId, TcpDialer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The tests of this file run one at a time: one of them watches a
/// descriptor number being reused, which a socket opened by another test
/// running at the same moment could take first.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A loopback server that hands every accepted socket to the test.
async fn holding_server() -> (SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let _ = tx.send(sock);
        }
    });
    (addr, rx)
}

/// A loopback server that echoes what each connection sends.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn tcp_manager(addr: SocketAddr) -> ConnectionManager<TcpDialer> {
    ConnectionManager::builder()
        .dialer(TcpDialer::new(move |_: &PeerId| Some(addr)))
        .build()
        .unwrap()
}

/// Reads the server side to end of file; a guard turns a socket left open
/// (a read that would wait forever) into a failure.
async fn reads_eof(server: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), server.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_lease_out_at_the_deadline_has_its_socket_shut_down_while_held() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (addr, mut accepted) = holding_server().await;
    let m = tcp_manager(addr);
    let peer = PeerId::random();
    m.connect(peer).await.unwrap();
    let mut server = accepted.recv().await.unwrap();
    let mut lease = m.lease(&peer).unwrap();
    lease.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hi");

    let forced = m.shutdown_gracefully(Duration::from_millis(50)).await;
    assert_eq!(forced, 1, "the lease was still out");
    // The lease is still held, and its socket is shut down: the server
    // reads end of file, and a write through the raw stream fails.
    assert!(reads_eof(&mut server).await, "the server saw no close");
    assert!(lease.try_write(b"late").is_err());
    let err = lease.write_all(b"late").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    drop(lease);
}

#[tokio::test]
async fn a_lease_returned_before_the_deadline_is_closed_by_its_return() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (addr, mut accepted) = holding_server().await;
    let m = tcp_manager(addr);
    let peer = PeerId::random();
    m.connect(peer).await.unwrap();
    let mut server = accepted.recv().await.unwrap();
    let lease = m.lease(&peer).unwrap();
    let drain = tokio::spawn({
        let m = m.clone();
        async move { m.shutdown_gracefully(Duration::from_secs(60)).await }
    });
    while !m.is_shut_down() {
        tokio::task::yield_now().await;
    }
    assert!(!drain.is_finished(), "waits for the lease");
    drop(lease);
    assert_eq!(drain.await.unwrap(), 0, "nothing forced");
    assert!(reads_eof(&mut server).await, "closed as it came back");
}

/// Abort handles that stage the race: the first lease taken (`B`) gets a
/// handle that, when the drain runs it, drops the other lease (`A`,
/// parked here) and opens sockets until one reuses `A`'s descriptor
/// number; `A` gets a handle that shuts its descriptor down by number,
/// the kind of handle the manager must never run after its lease ended.
#[derive(Clone)]
struct Staged {
    addr: SocketAddr,
    /// Lease `A`, for `B`'s handle to drop.
    parked: Arc<Mutex<Option<Lease<Staged>>>>,
    /// Sockets `B`'s handle opened; the last reuses `A`'s number.
    opened: Arc<Mutex<Vec<std::net::TcpStream>>>,
    /// The descriptors whose handle ran.
    ran: Arc<Mutex<Vec<RawFd>>>,
    /// `A`'s descriptor number.
    a_fd: Arc<AtomicI32>,
    /// Handles given so far.
    given: Arc<AtomicUsize>,
}

impl Dialer for Staged {
    type Conn = TcpStream;

    async fn dial(&self, _: &PeerId) -> std::io::Result<TcpStream> {
        TcpStream::connect(self.addr).await
    }

    fn abort_handle(&self, conn: &TcpStream) -> Option<AbortHandle> {
        let fd = conn.as_raw_fd();
        let ran = self.ran.clone();
        if self.given.fetch_add(1, Ordering::SeqCst) == 0 {
            let (parked, opened, a_fd, addr) = (
                self.parked.clone(),
                self.opened.clone(),
                self.a_fd.clone(),
                self.addr,
            );
            return Some(AbortHandle::new(move || {
                ran.lock().unwrap().push(fd);
                // `A` ends while the drain is between gathering the
                // handles and running `A`'s.
                drop(parked.lock().unwrap().take());
                let a_fd = a_fd.load(Ordering::SeqCst);
                let mut opened = opened.lock().unwrap();
                for _ in 0..64 {
                    let s = std::net::TcpStream::connect(addr).unwrap();
                    let reused = s.as_raw_fd() == a_fd;
                    opened.push(s);
                    if reused {
                        break;
                    }
                }
            }));
        }
        self.a_fd.store(fd, Ordering::SeqCst);
        Some(AbortHandle::new(move || {
            ran.lock().unwrap().push(fd);
            // SAFETY: `shutdown` takes no pointer; on a descriptor that is
            // not (or no longer) this socket it acts on whatever socket
            // has the number now, which is what this test watches for.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }))
    }
}

#[tokio::test]
async fn a_lease_ending_during_the_drain_never_has_its_handle_run() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let addr = echo_server().await;
    let dialer = Staged {
        addr,
        parked: Arc::default(),
        opened: Arc::default(),
        ran: Arc::default(),
        a_fd: Arc::new(AtomicI32::new(-1)),
        given: Arc::default(),
    };
    let m = ConnectionManager::builder()
        .dialer(dialer.clone())
        .build()
        .unwrap();
    let peer = PeerId::random();
    // Two leases of one peer, so one record holds both handles, `B`'s
    // first: lease `B`, disconnect (its slot goes, the lease stays out),
    // connect anew (a fresh dial), lease `A`.
    m.connect(peer).await.unwrap();
    let lease_b = m.lease(&peer).unwrap();
    let b_fd = lease_b.as_raw_fd();
    m.disconnect(&peer).await;
    m.connect(peer).await.unwrap();
    let lease_a = m.lease(&peer).unwrap();
    let a_fd = lease_a.as_raw_fd();
    *dialer.parked.lock().unwrap() = Some(lease_a);

    let forced = m.shutdown_gracefully(Duration::from_millis(50)).await;
    assert_eq!(forced, 1, "`A` came back during the drain, `B` did not");
    assert_eq!(
        *dialer.ran.lock().unwrap(),
        [b_fd],
        "`A`'s handle never ran"
    );
    let reused = dialer.opened.lock().unwrap().pop().unwrap();
    assert_eq!(reused.as_raw_fd(), a_fd, "the number was reused");
    // The socket now holding `A`'s old number was left alone.
    reused.set_nonblocking(true).unwrap();
    let mut reused = TcpStream::from_std(reused).unwrap();
    reused.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    reused.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    drop(lease_b);
}

/// Gives every lease a handle; the first panics, the others count runs.
#[derive(Clone, Default)]
struct Panicky {
    given: Arc<AtomicUsize>,
    ran: Arc<AtomicUsize>,
}

impl Dialer for Panicky {
    type Conn = ();

    async fn dial(&self, _: &PeerId) -> std::io::Result<()> {
        Ok(())
    }

    fn abort_handle(&self, _: &()) -> Option<AbortHandle> {
        if self.given.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(AbortHandle::new(|| panic!("a handle that panics")));
        }
        let ran = self.ran.clone();
        Some(AbortHandle::new(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }))
    }
}

#[tokio::test]
async fn a_panicking_handle_neither_escapes_the_drain_nor_stops_the_others() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dialer = Panicky::default();
    let m = ConnectionManager::builder()
        .dialer(dialer.clone())
        .build()
        .unwrap();
    let [a, b, c] = [1u8, 2, 3].map(|n| PeerId::from_bytes([n; 32]));
    let mut leases = Vec::new();
    for p in [a, b, c] {
        m.connect(p).await.unwrap();
        leases.push(m.lease(&p).unwrap());
    }
    assert_eq!(m.shutdown_gracefully(Duration::from_millis(20)).await, 3);
    assert_eq!(dialer.ran.load(Ordering::SeqCst), 2);
    drop(leases);
}
