//! # connmgr
//!
//! Connection management for P2P nodes and networked services: the
//! `ConnectionManager` API documented by qudag-network 0.3.1, built for
//! real. It holds real connections (TCP out of the box, any transport
//! through [`Dialer`]), enforces its limit exactly under concurrency and
//! cancellation, reuses idle connections from a pool whose TTL expires by
//! itself, measures its metrics, and tracks the status of a million peers
//! in a lock-free table.
//!
//! ```
//! use connmgr::{ConnectionManager, ConnectionStatus, PeerId};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> connmgr::Result<()> {
//! let manager = ConnectionManager::new(100); // up to 100 concurrent connections
//! let peer = PeerId::random();
//! manager.connect(peer).await?;
//! assert_eq!(manager.get_status(&peer).await, Some(ConnectionStatus::Connected));
//!
//! manager.record_message(Duration::from_millis(3));
//! let metrics = manager.get_metrics().await;
//! assert_eq!(metrics.connections, 1);
//!
//! manager.disconnect(&peer).await; // the connection idles in the pool
//! manager.connect(peer).await?;     // and is reused: no dial
//! # Ok(())
//! # }
//! ```
//!
//! Real connections come from a [`Dialer`]; [`TcpDialer`] dials the
//! address a resolver gives for each peer id, and checks pooled sockets
//! alive before reuse:
//!
//! ```no_run
//! use connmgr::{ConnectionManager, PeerId, TcpDialer};
//! use std::time::Duration;
//!
//! # async fn run(addr: std::net::SocketAddr) -> connmgr::Result<()> {
//! let manager = ConnectionManager::builder()
//!     .max_connections(1_000)
//!     .pool_timeout(Duration::from_secs(60))
//!     .dial_timeout(Duration::from_secs(3))
//!     .dialer(TcpDialer::new(move |_peer: &PeerId| Some(addr)))
//!     .build()?;
//! let peer = PeerId::random();
//! manager.connect(peer).await?;
//! let mut stream = manager.lease(&peer)?; // exclusive use of the TcpStream
//! # drop(stream);
//! # Ok(())
//! # }
//! ```
//!
//! ## The peer manager
//!
//! Beyond dialing, the manager takes over connections the peer opened and
//! sheds the least useful peers when it holds too many:
//!
//! - [`adopt`](ConnectionManager::adopt) makes a connection the caller
//!   accepted the peer's live connection ([`Direction::Inbound`]);
//!   [`direction`](ConnectionManager::direction) tells who opened it.
//! - Limits by kind, each named by the [`Error::LimitReached`] it causes
//!   ([`Limit`]): `max_connections` (both directions), `max_inbound`,
//!   `max_outbound`, `max_pending_dials`, and `max_sockets`, which bounds
//!   every connection held open (live, leased, idle, being dialed) and
//!   makes room by closing the oldest idle one: idle connections never
//!   cause a refusal. [`in_use`](ConnectionManager::in_use) reads each.
//! - Tags ([`tag_peer`](ConnectionManager::tag_peer),
//!   [`upsert_tag`](ConnectionManager::upsert_tag),
//!   [`peer_score`](ConnectionManager::peer_score)) and protection
//!   ([`protect`](ConnectionManager::protect)) belong to the peer,
//!   connected or not, and keep it from being forgotten.
//! - With [`Builder::watermarks`], more than `high` unprotected Connected
//!   peers are trimmed down to `low` in the background (at most once a
//!   second), lowest score first, sparing protected peers, leased
//!   connections and those younger than the grace period;
//!   [`trim_now`](ConnectionManager::trim_now) trims at once.
//! - Every [`StatusEvent`] carries the [`Reason`] of its change.
//!
//! ```
//! use connmgr::{ConnectionManager, Direction, Error, Limit, PeerId};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> connmgr::Result<()> {
//! let node = ConnectionManager::builder()
//!     .max_connections(10)
//!     .max_inbound(1)
//!     .watermarks(3, 10)
//!     .grace_period(Duration::ZERO)
//!     .build()?;
//! let caller = PeerId::random();
//! node.adopt(caller, ()).await?; // the transport-less connection is `()`
//! assert_eq!(node.direction(&caller), Some(Direction::Inbound));
//! let err = node.adopt(PeerId::random(), ()).await.unwrap_err();
//! assert!(matches!(err, Error::LimitReached { limit: Limit::Inbound, .. }));
//!
//! let (keep, drop_first) = (PeerId::random(), PeerId::random());
//! node.protect(&keep, "bootstrap");
//! node.tag_peer(&drop_first, "useful", -1);
//! for p in [keep, drop_first, PeerId::random(), PeerId::random()] {
//!     node.connect(p).await?;
//! }
//! // 4 unprotected (the caller too), low is 3: the lowest score goes.
//! assert_eq!(node.trim_now().await, 1);
//! assert!(node.direction(&drop_first).is_none());
//! assert!(node.direction(&keep).is_some());
//! # Ok(())
//! # }
//! ```
//!
//! ## Resilience and operability
//!
//! - A peer whose dials fail backs off, per peer
//!   ([`Builder::dial_backoff`], on by default): `connect` refuses it
//!   with [`Error::BackingOff`] until its jittered, doubling delay passes;
//!   a successful dial resets it.
//! - [`block`](ConnectionManager::block) closes a peer's connections and
//!   refuses it ([`Error::Blocked`]) until
//!   [`unblock`](ConnectionManager::unblock).
//! - [`keep_connected`](ConnectionManager::keep_connected) redials a peer
//!   whenever it is not Connected, with its backoff between tries.
//! - [`Builder::wait_for_slot`] makes a full `connect` wait, first come
//!   first served, up to a deadline.
//! - [`shutdown_gracefully`](ConnectionManager::shutdown_gracefully)
//!   drains: no new work, leases given time to come back, the rest cut
//!   off at the deadline (and shut down, with [`TcpDialer`] or any
//!   dialer that gives an [`AbortHandle`]).
//! - [`Builder::max_lifetime`] closes old connections instead of pooling
//!   or reusing them; [`TcpDialer::keepalive`] sets TCP keepalive.
//! - [`set_limits`](ConnectionManager::set_limits) changes the
//!   [`Limits`] at runtime; [`state`](ConnectionManager::state) reads
//!   every gauge and limit at once ([`State`]);
//!   [`peers`](ConnectionManager::peers),
//!   [`get_statuses`](ConnectionManager::get_statuses) and
//!   [`update_statuses`](ConnectionManager::update_statuses) list and
//!   batch.
//! - `tracing` events (target `connmgr`) on every status change, dial,
//!   refusal, trim and expiry, with the peer and the reason; a span per
//!   `connect`.
//!
//! ```
//! use connmgr::{ConnectionManager, Error, Limits, PeerId};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> connmgr::Result<()> {
//! let node = ConnectionManager::builder()
//!     .max_connections(1)
//!     .wait_for_slot(Duration::from_millis(20))
//!     .build()?;
//! let (a, b) = (PeerId::random(), PeerId::random());
//! node.connect(a).await?;
//! // Full: waits 20 ms, then gives up.
//! assert!(matches!(node.connect(b).await, Err(Error::LimitReached { .. })));
//! node.set_limits(Limits::new(2))?;
//! node.connect(b).await?;
//! node.block(b); // closes b's connection; b is refused from now on
//! assert!(matches!(node.connect(b).await, Err(Error::Blocked { .. })));
//! assert_eq!(node.state().connected, 1);
//! assert_eq!(node.shutdown_gracefully(Duration::from_secs(1)).await, 0);
//! # Ok(())
//! # }
//! ```
//!
//! ## Crates
//!
//! This facade re-exports what it needs from [`connmgr_core`] (the status
//! table and [`PeerId`]), [`connmgr_pool`] (the idle pool) and
//! [`connmgr_metrics`] (the per-CPU metrics aggregator). Depend on those
//! directly if you need only one of them; only this crate needs tokio.
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

// Under `--cfg loom` (`.ci/loom.sh`) only the tokio-free parts are built
// (the dial-sharing protocol and the peer record), for their loom models:
// tokio does not build under loom.
#[cfg_attr(loom, allow(dead_code))]
mod dial_share;
#[cfg_attr(loom, allow(dead_code))]
mod peer;

#[cfg(not(loom))]
mod admission;
#[cfg(not(loom))]
mod backoff;
#[cfg(not(loom))]
mod block;
#[cfg(not(loom))]
mod close;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod connect;
#[cfg(not(loom))]
mod dialer;
#[cfg(not(loom))]
mod drain;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod inner;
#[cfg(not(loom))]
mod keep;
#[cfg(not(loom))]
mod lease;
#[cfg(not(loom))]
mod limits;
#[cfg(not(loom))]
mod manager;
#[cfg(not(loom))]
mod peers;
#[cfg(not(loom))]
mod reaper;
#[cfg(not(loom))]
mod state;
#[cfg(not(loom))]
mod sync;
#[cfg(not(loom))]
mod trim;

#[cfg(not(loom))]
pub use backoff::Backoff;
#[cfg(not(loom))]
pub use config::{Builder, Config};
pub use connmgr_core::{ConnectionStatus, PeerId};
pub use connmgr_metrics::{DialCounts, Gauges, Histogram, NetworkMetrics, Snapshot};
#[cfg(not(loom))]
pub use dialer::{AbortHandle, Dialer, NoTransport, TcpDialer};
#[cfg(not(loom))]
pub use error::{Error, Limit, Result};
#[cfg(not(loom))]
pub use event::{Reason, StatusEvent};
#[cfg(not(loom))]
pub use lease::Lease;
#[cfg(not(loom))]
pub use limits::Limits;
#[cfg(not(loom))]
pub use manager::ConnectionManager;
pub use peer::Direction;
#[cfg(not(loom))]
pub use state::State;

/// The README's examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The crates this facade is built from, for users who need their full
/// APIs.
pub mod crates {
    pub use connmgr_core as core;
    pub use connmgr_metrics as metrics;
    pub use connmgr_pool as pool;
}
