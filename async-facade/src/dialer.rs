//! How the manager opens connections: the [`Dialer`] trait, the
//! transport-less default and TCP.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use connmgr_core::PeerId;
use tokio::net::TcpStream;

/// Opens connections to peers. Implement it for your transport; an `async
/// fn dial` in the impl is fine.
///
/// ```
/// use connmgr::{Dialer, PeerId};
/// use std::io;
///
/// struct Loopback;
/// impl Dialer for Loopback {
///     type Conn = u32;
///     async fn dial(&self, _peer: &PeerId) -> io::Result<u32> {
///         Ok(7)
///     }
/// }
/// ```
pub trait Dialer: Send + Sync + 'static {
    /// A live connection.
    type Conn: Send + 'static;

    /// Opens a connection to `peer`. The manager applies its dial timeout
    /// and drops this future if the caller gives up, so a dialer needs no
    /// timeout of its own and must clean up when dropped.
    fn dial(&self, peer: &PeerId) -> impl Future<Output = io::Result<Self::Conn>> + Send;

    /// Whether an idle connection taken from the pool is still usable.
    /// Called before every reuse; a `false` closes (drops) it and the
    /// manager tries the next idle one, or dials. Must not block.
    fn is_alive(&self, conn: &mut Self::Conn) -> bool {
        let _ = conn;
        true
    }
}

/// The transport-less default: `connect` registers and tracks the peer, as
/// the reference implementation does, without opening any socket. Its
/// "connections" are `()`, and pooling, limits, events and metrics work on
/// them exactly as on real ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTransport;

impl Dialer for NoTransport {
    type Conn = ();

    async fn dial(&self, _peer: &PeerId) -> io::Result<()> {
        Ok(())
    }
}

/// Dials peers over TCP at the address a resolver gives for their id.
///
/// ```no_run
/// use connmgr::{ConnectionManager, PeerId, TcpDialer};
/// use std::collections::HashMap;
/// use std::net::SocketAddr;
///
/// let book: HashMap<PeerId, SocketAddr> = HashMap::new();
/// let manager = ConnectionManager::builder()
///     .dialer(TcpDialer::new(move |peer: &PeerId| book.get(peer).copied()))
///     .build()
///     .unwrap();
/// ```
pub struct TcpDialer<R> {
    resolve: R,
    nodelay: bool,
}

impl<R> TcpDialer<R>
where
    R: Fn(&PeerId) -> Option<SocketAddr> + Send + Sync + 'static,
{
    /// A dialer that looks peers up with `resolve`. Sets `TCP_NODELAY` on
    /// every connection (see [`nodelay`](Self::nodelay)).
    pub fn new(resolve: R) -> Self {
        Self {
            resolve,
            nodelay: true,
        }
    }

    /// Whether to set `TCP_NODELAY` (default true).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }
}

impl<R> fmt::Debug for TcpDialer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpDialer")
            .field("nodelay", &self.nodelay)
            .finish_non_exhaustive()
    }
}

impl<R> Dialer for TcpDialer<R>
where
    R: Fn(&PeerId) -> Option<SocketAddr> + Send + Sync + 'static,
{
    type Conn = TcpStream;

    async fn dial(&self, peer: &PeerId) -> io::Result<TcpStream> {
        let addr = (self.resolve)(peer).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no address known for peer {peer}"),
            )
        })?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(self.nodelay)?;
        Ok(stream)
    }

    /// Detects an idle socket that the peer closed (FIN: a read would return
    /// end of file) or reset (RST: a read would fail), by peeking one byte
    /// without blocking or consuming. Unexpected data on an idle connection
    /// also counts as dead: the protocol state is unknown.
    fn is_alive(&self, conn: &mut TcpStream) -> bool {
        socket_is_idle_and_open(conn)
    }
}

/// Peeks the socket directly with one non-blocking `recv(MSG_PEEK)` (not
/// through the runtime's readiness cache, which may not have seen a FIN
/// that just arrived).
fn socket_is_idle_and_open(conn: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(conn).peek(&mut byte) {
        Ok(_) => false, // 0: the peer closed; >0: unexpected data
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
        Err(_) => false, // reset or otherwise broken
    }
}
