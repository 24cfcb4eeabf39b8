//! # connmgr-core
//!
//! The status table of [connmgr]: which peers a node knows, where each
//! connection stands ([`ConnectionStatus`]), since when, and how many are in
//! each state, for a million peers at the cost of a hash and a cache miss.
//!
//! This crate has no async runtime and few dependencies (crossbeam-epoch,
//! crossbeam-utils, parking_lot): depend on it alone if all you need is the
//! table.
//!
//! * [`PeerId`]: the 32-byte identity of a peer, hex on the outside.
//! * [`StatusTable`]: a sharded map from keys to statuses whose lookups
//!   and status transitions are lock-free (inserts of new keys and removals
//!   take a short per-shard lock), with conditional transitions, batch
//!   lookups and O(shards + stripes) counts per status.
//! * [`Clock`], [`SystemClock`], [`ManualClock`]: injectable time, shared
//!   by the other connmgr crates.
//! * [`thread_slot`]: small per-thread numbers for striping, shared by the
//!   other connmgr crates.
//!
//! ```
//! use connmgr_core::{ConnectionStatus, PeerId, StatusTable};
//! use std::sync::Arc;
//!
//! let table = Arc::new(StatusTable::new());
//! let peers: Vec<PeerId> = (0..64u8).map(|i| PeerId::from_bytes([i; 32])).collect();
//! std::thread::scope(|s| {
//!     for chunk in peers.chunks(32) {
//!         let table = &table;
//!         s.spawn(move || {
//!             for &p in chunk {
//!                 table.insert(p, ConnectionStatus::Connecting);
//!                 table
//!                     .compare_and_set(&p, ConnectionStatus::Connecting, ConnectionStatus::Connected)
//!                     .unwrap();
//!             }
//!         });
//!     }
//! });
//! assert_eq!(table.count(ConnectionStatus::Connected), 64);
//! let info = table.info(&peers[0]).unwrap();
//! assert_eq!(info.status, ConnectionStatus::Connected);
//! ```
//!
//! Every method documents its **Progress** (what it may wait for) and, where
//! memory is retired, its **Reclamation**.
//!
//! [connmgr]: https://docs.rs/connmgr
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod bucket;
mod clock;
mod error;
mod peer_id;
mod status;
mod sync;
mod table;
pub mod thread_slot;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::Error;
pub use peer_id::PeerId;
pub use status::{ConnectionStatus, EntryInfo};
pub use table::{ShardStats, StatusTable, MAX_SHARDS};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The README's example, run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
