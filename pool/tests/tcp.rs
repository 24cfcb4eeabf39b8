//! `docs/failure-modes.md #6`: an idle connection that the peer closed (FIN) or reset
//! (RST) is never handed out: `take_if` with a liveness check rejects it
//! (and closes it), and the search goes on to an older live one.
//!
//! Real sockets on 127.0.0.1, std only. The RST comes without SO_LINGER:
//! the server drops a socket whose receive buffer still holds unread data,
//! which makes the kernel abort the connection (RFC 2525 §2.17; Linux,
//! macOS and Windows all send RST then).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use connmgr_pool::{IdlePool, ManualClock, PoolConfig};

/// Liveness check for an idle connection: nothing to read yet means alive;
/// EOF (peer sent FIN), an error (RST) or unexpected data means dead.
fn is_alive(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let alive = match stream.peek(&mut [0u8; 1]) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => true,
        Ok(_) | Err(_) => false,
    };
    alive && stream.set_nonblocking(false).is_ok()
}

/// Waits (bounded) until the client side observes the peer's close.
fn wait_until_dead(stream: &TcpStream) {
    let mut probe = stream.try_clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(&mut probe) {
        assert!(Instant::now() < deadline, "peer close never observed");
        thread::sleep(Duration::from_millis(5));
    }
}

struct Server {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Server {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        Self { listener, addr }
    }

    /// A connected (client, server-side) pair.
    fn pair(&self) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(self.addr).unwrap();
        let (server, _) = self.listener.accept().unwrap();
        (client, server)
    }
}

fn pool(clock: &ManualClock) -> IdlePool<&'static str, TcpStream, ManualClock> {
    let config = PoolConfig::default().with_ttl(Duration::from_secs(90));
    IdlePool::with_config(config, clock.clone()).unwrap()
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn idle_connection_closed_by_peer_with_fin_is_not_reused() {
    let server = Server::new();
    let clock = ManualClock::new();
    let pool = pool(&clock);
    let (live, _live_server) = server.pair();
    let live_addr = live.local_addr().unwrap();
    let (closed, closed_server) = server.pair();
    drop(closed_server); // FIN
    wait_until_dead(&closed);
    pool.put("peer", live).unwrap();
    pool.put("peer", closed).unwrap(); // freshest: plain `take` would hand it out

    let mut rejected = 0;
    let got = pool
        .take_if(&"peer", |s| {
            let ok = is_alive(s);
            rejected += usize::from(!ok);
            ok
        })
        .expect("the live connection");
    assert_eq!(got.local_addr().unwrap(), live_addr);
    assert_eq!(rejected, 1);
    assert!(pool.is_empty(), "the dead connection was closed, not kept");
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn idle_connection_reset_by_peer_is_not_reused() {
    let server = Server::new();
    let clock = ManualClock::new();
    let pool = pool(&clock);
    let (live, _live_server) = server.pair();
    let live_addr = live.local_addr().unwrap();
    let (mut reset, reset_server) = server.pair();
    // Unread data in the server's receive buffer, then close: RST.
    reset.write_all(b"unread").unwrap();
    let mut buf = [0u8; 6];
    let deadline = Instant::now() + Duration::from_secs(10);
    while reset_server.peek(&mut buf).unwrap() < buf.len() {
        assert!(Instant::now() < deadline);
    }
    drop(reset_server);
    wait_until_dead(&reset);
    // The client now sees ECONNRESET (or EOF on platforms that report it so).
    let err = reset.try_clone().unwrap().read(&mut buf);
    assert!(
        matches!(&err, Err(e) if e.kind() == ErrorKind::ConnectionReset) || matches!(err, Ok(0)),
        "{err:?}"
    );

    pool.put("peer", live).unwrap();
    pool.put("peer", reset).unwrap(); // freshest
    let got = pool
        .take_if(&"peer", is_alive)
        .expect("the live connection");
    assert_eq!(got.local_addr().unwrap(), live_addr);
    assert!(pool.is_empty());
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn live_idle_connection_is_reused_and_still_works() {
    let server = Server::new();
    let clock = ManualClock::new();
    let pool = pool(&clock);
    let (client, mut server_side) = server.pair();
    pool.put("peer", client).unwrap();
    clock.advance(Duration::from_secs(60));
    let mut client = pool.take_if(&"peer", is_alive).unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server_side.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // Expired: dropped (closed) on the way, never handed out.
    pool.put("peer", client).unwrap();
    clock.advance(Duration::from_secs(90));
    assert!(pool.take_if(&"peer", is_alive).is_none());
    assert_eq!(
        server_side.read(&mut buf).unwrap(),
        0,
        "pool closed it (FIN)"
    );
}
