//! How the manager opens connections: the [`Dialer`] trait, the
//! transport-less default and TCP.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

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

    /// A handle that shuts `conn` down from outside, for transports that
    /// can be closed through a shared handle (a socket's `shutdown`, a
    /// session's cancel token). Asked for when `conn` is leased; run (at
    /// most once) if the lease is still out at
    /// [`shutdown_gracefully`](crate::ConnectionManager::shutdown_gracefully)'s
    /// deadline, so the remote end sees the connection close while the
    /// lease's user still holds it. The manager never runs it once the
    /// lease has begun to give the connection back: a lease's drop takes
    /// the handle out, under the lock the drain runs it under, before the
    /// connection is dropped, so a handle never acts on a connection its
    /// lease no longer holds. That holds for the connection the lease was
    /// given: a user who swaps another in through `&mut *lease` and drops
    /// the original leaves a handle that names the original by a raw
    /// descriptor number acting on whatever socket reuses it. So a handle
    /// should hold its own reference to the transport, as
    /// [`TcpDialer`]'s does (a duplicated descriptor, which also keeps a
    /// swapped-out socket open until the lease ends).
    ///
    /// Called under a lock of the manager while the lease is taken: it
    /// must be quick and must not call the manager. The handle runs under
    /// the lease's own lock, which the lease's drop waits for: it must be
    /// quick too, and must not drop the lease it belongs to. A panic in
    /// the hook counts as `None`; one in the handle is caught and dropped
    /// once the panic hook reported it, and the other handles still run.
    /// `None` (the default): at the deadline the lease is only cut off
    /// (its reads and writes through the lease fail), and the connection
    /// closes when the lease is dropped.
    fn abort_handle(&self, conn: &Self::Conn) -> Option<AbortHandle> {
        let _ = conn;
        None
    }
}

/// Shuts a leased connection down from outside; see
/// [`Dialer::abort_handle`]. Runs at most once; dropping it unrun does
/// nothing but drop the closure.
pub struct AbortHandle(Box<dyn FnOnce() + Send>);

impl AbortHandle {
    /// A handle that runs `abort` to shut the connection down.
    pub fn new(abort: impl FnOnce() + Send + 'static) -> Self {
        Self(Box::new(abort))
    }

    /// Runs the handle.
    pub(crate) fn run(self) {
        (self.0)();
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle").finish_non_exhaustive()
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
///
/// The resolver is stored boxed, so the dialer's type (and the manager's)
/// names no closure or `dyn` type: `connect`'s future is `Send`, and can be
/// spawned, whatever the resolver is, including a resolver the caller
/// boxed itself (a `dyn Fn(&PeerId)` in a type argument makes the
/// compiler's `Send` check of an `async` block holding the manager fail
/// with "implementation of `Send` is not general enough").
pub struct TcpDialer {
    resolve: Box<Resolver>,
    nodelay: bool,
    keepalive: Option<Duration>,
}

/// What [`TcpDialer`] asks for a peer's address.
type Resolver = dyn Fn(&PeerId) -> Option<SocketAddr> + Send + Sync;

impl TcpDialer {
    /// A dialer that looks peers up with `resolve`. Sets `TCP_NODELAY` on
    /// every connection (see [`nodelay`](Self::nodelay)).
    pub fn new<R>(resolve: R) -> Self
    where
        R: Fn(&PeerId) -> Option<SocketAddr> + Send + Sync + 'static,
    {
        Self {
            resolve: Box::new(resolve),
            nodelay: true,
            keepalive: None,
        }
    }

    /// Whether to set `TCP_NODELAY` (default true).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Turns TCP keepalive on for every dialed socket: after `idle` without
    /// traffic the kernel probes the peer (`SO_KEEPALIVE`, with the idle
    /// time as `TCP_KEEPIDLE`, or `TCP_KEEPALIVE` on macOS), so a pooled or
    /// leased connection whose peer vanished without a FIN or RST (a
    /// powered-off host, a NAT that dropped the mapping) is found broken
    /// by the kernel instead of hanging on the next write; and a NAT or
    /// firewall sees traffic on a connection that would otherwise idle for
    /// minutes. The probe interval and count stay the system's. Off by
    /// default. An `idle` of zero is taken as one second (the kernel's
    /// smallest).
    pub fn keepalive(mut self, idle: Duration) -> Self {
        self.keepalive = Some(idle.max(Duration::from_secs(1)));
        self
    }
}

impl fmt::Debug for TcpDialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpDialer")
            .field("nodelay", &self.nodelay)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

impl Dialer for TcpDialer {
    type Conn = TcpStream;

    /// Resolves the address before the returned future starts: the future
    /// holds the address, not the resolver.
    fn dial(&self, peer: &PeerId) -> impl Future<Output = io::Result<TcpStream>> + Send {
        let addr = (self.resolve)(peer).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no address known for peer {peer}"),
            )
        });
        let (nodelay, keepalive) = (self.nodelay, self.keepalive);
        async move {
            let stream = TcpStream::connect(addr?).await?;
            stream.set_nodelay(nodelay)?;
            if let Some(idle) = keepalive {
                let params = socket2::TcpKeepalive::new().with_time(idle);
                socket2::SockRef::from(&stream).set_tcp_keepalive(&params)?;
            }
            Ok(stream)
        }
    }

    /// Detects an idle socket that the peer closed (FIN: a read would return
    /// end of file) or reset (RST: a read would fail), by peeking one byte
    /// without blocking or consuming. Unexpected data on an idle connection
    /// also counts as dead: the protocol state is unknown.
    fn is_alive(&self, conn: &mut TcpStream) -> bool {
        socket_is_idle_and_open(conn)
    }

    /// `shutdown(Both)` through a duplicate of the socket's descriptor
    /// (one `dup` per lease, closed when the lease ends): the remote end
    /// reads end of file, and reads and writes through the lease fail.
    /// The duplicate names the socket itself, never a descriptor number,
    /// so it cannot reach another socket. `None` if the descriptor cannot
    /// be duplicated (at the process's descriptor limit).
    fn abort_handle(&self, conn: &TcpStream) -> Option<AbortHandle> {
        let socket = socket2::SockRef::from(conn).try_clone().ok()?;
        Some(AbortHandle::new(move || {
            // Already shut down or reset by the peer: nothing to do.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }))
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
