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
mod close;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod connect;
#[cfg(not(loom))]
mod dialer;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod inner;
#[cfg(not(loom))]
mod lease;
#[cfg(not(loom))]
mod manager;
#[cfg(not(loom))]
mod peers;
#[cfg(not(loom))]
mod reaper;
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
pub use dialer::{Dialer, NoTransport, TcpDialer};
#[cfg(not(loom))]
pub use error::{Error, Limit, Result};
#[cfg(not(loom))]
pub use event::{Reason, StatusEvent};
#[cfg(not(loom))]
pub use lease::Lease;
#[cfg(not(loom))]
pub use manager::ConnectionManager;
pub use peer::Direction;

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
