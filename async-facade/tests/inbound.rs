//! Inbound connections over real loopback TCP: a `TcpListener` accepts,
//! the manager adopts the accepted stream, and it is leased and used like
//! a dialed one; the inbound limit refuses the next, closing its socket.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

use connmgr::{ConnectionManager, ConnectionStatus, Direction, Error, Limit, PeerId, TcpDialer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn an_adopted_stream_echoes_and_the_inbound_limit_closes_the_next() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Nothing is dialed here: the resolver knows no peer.
    let m = ConnectionManager::builder()
        .max_connections(4)
        .max_inbound(1)
        .dialer(TcpDialer::new(|_: &PeerId| None))
        .build()
        .unwrap();

    // A client connects; the node accepts and adopts the stream.
    let mut client = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let p = PeerId::random();
    m.adopt(p, accepted).await.unwrap();
    assert_eq!(m.get_status(&p).await, Some(ConnectionStatus::Connected));
    assert_eq!(m.direction(&p), Some(Direction::Inbound));

    // The node leases the connection and echoes what the client sends.
    client.write_all(b"ping").await.unwrap();
    {
        let mut lease = m.lease(&p).unwrap();
        let mut buf = [0u8; 4];
        lease.read_exact(&mut buf).await.unwrap();
        lease.write_all(&buf).await.unwrap();
    }
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    // Returned from its lease, it is still the peer's live connection.
    assert!(m.lease(&p).is_ok());

    // A second client: the inbound limit (1) refuses it, and its socket
    // is closed, which the client sees as EOF.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let q = PeerId::random();
    let err = m.adopt(q, accepted).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitReached {
                limit: Limit::Inbound,
                max: 1
            }
        ),
        "{err}"
    );
    assert_eq!(m.get_status(&q).await, None);
    let mut buf = [0u8; 1];
    assert_eq!(second.read(&mut buf).await.unwrap(), 0, "EOF: closed");
    assert_eq!(m.in_use(Limit::Sockets), 1);
}
