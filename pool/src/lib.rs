//! An idle-connection pool with a TTL, built from lock-free structures
//! whose memory is reclaimed by crossbeam-epoch.
//!
//! [`IdlePool<K, C>`](IdlePool) keeps connections (`C`) that are no longer
//! in use, by the key (`K`, e.g. a peer id) they lead to, so a peer that
//! disconnected recently can be reached again without dialing. Every
//! connection expires a fixed TTL after it was put; expired connections are
//! never handed out.
//!
//! # Guide
//!
//! ```
//! use connmgr_pool::{IdlePool, ManualClock, PoolConfig};
//! use std::time::Duration;
//!
//! // Time is injected: tests drive a manual clock instead of sleeping.
//! let clock = ManualClock::new();
//! let config = PoolConfig::default()
//!     .with_ttl(Duration::from_secs(30))
//!     .with_max_idle_per_key(2)
//!     .with_max_idle_total(100);
//! let pool: IdlePool<&str, String, ManualClock> =
//!     IdlePool::with_config(config, clock.clone()).unwrap();
//!
//! // Park connections as they go idle; a full cap hands the connection back.
//! pool.put("peer-a", "old".to_string()).unwrap();
//! clock.advance(Duration::from_secs(10));
//! pool.put("peer-a", "new".to_string()).unwrap();
//! assert_eq!(pool.put("peer-a", "third".to_string()), Err("third".to_string()));
//! assert_eq!(pool.len_for(&"peer-a"), 2);
//!
//! // `take` hands out the freshest; `take_if` lets you reject dead ones
//! // (they are dropped, i.e. closed, and the search goes on).
//! assert_eq!(pool.take_if(&"peer-a", |c| c != "new"), Some("old".to_string()));
//! assert!(pool.is_empty());
//!
//! // Expiry: a reaper sleeps until `next_expiry()` and calls `reap()`,
//! // which costs O(expired), never a scan.
//! pool.put("peer-b", "b".to_string()).unwrap();
//! let due = pool.next_expiry().unwrap();
//! clock.set(due);
//! assert_eq!(pool.reap(), 1);
//! assert_eq!(pool.take(&"peer-b"), None);
//!
//! // A reaper that found nothing to wait for must be woken by the next put.
//! // `watch_next_expiry` leaves a request when it returns `None`; the put
//! // that follows collects it, and no race between the two loses it.
//! assert_eq!(pool.watch_next_expiry(), None);
//! pool.put("peer-c", "c".to_string()).unwrap();
//! assert!(pool.take_wake_request()); // wake the reaper
//! assert!(!pool.take_wake_request()); // once
//! ```
//!
//! With the real clock, [`IdlePool::new`] takes just the TTL:
//!
//! ```
//! # use connmgr_pool::IdlePool;
//! # use std::time::Duration;
//! let pool: IdlePool<u64, std::net::TcpStream> = IdlePool::new(Duration::from_secs(300));
//! assert_eq!(pool.config().max_idle_per_key, 8);
//! ```
//!
//! # How it works
//!
//! * Each idle connection lives in a heap node that one atomic `fetch_or`
//!   hands to exactly one owner (`take`, `reap`, `clear` or the pool's
//!   drop): a connection is never duplicated and never lost, and its
//!   destructor runs in that call, never later from the garbage collector.
//! * One TTL per pool makes insertion order expiry order, so a lock-free
//!   FIFO, striped by thread, makes reaping O(expired), never a scan.
//! * Each key has an entry with a reservation counter (the per-key cap)
//!   and a fixed index of slots; caps are reservations taken before
//!   anything is published, so they hold exactly.
//!
//! The `raw` module's docs give the mechanics (stripes, holdover queues,
//! the bounds on memory).
//!
//! # Progress and reclamation
//!
//! * `take`, `take_if`, `len_for`: lock-free.
//! * `put`: lock-free on a key that has an entry; on a key without, a
//!   short per-shard lock creates it.
//! * `reap`, `clear`, `next_expiry`: lock-free per record, plus a short
//!   per-shard lock for each key entry they free; a `reap` may wait for
//!   another `reap` draining a stripe where it has something due.
//! * `len`, `is_empty`, `ttl`, `config`, `take_wake_request`: wait-free.
//! * Node, key-entry and bucket memory is retired through
//!   crossbeam-epoch's default collector; connections never are.
//! * Dropping the pool closes every idle connection, in the dropping
//!   thread, without blocking or needing a runtime.
//!
//! Each method's documentation states its own **Progress:** and
//! **Reclamation:**.

#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod config;
mod error;
mod pool;
mod quota;
mod raw;
mod sync;

pub use config::PoolConfig;
/// The injectable clock, shared with the other connmgr crates.
pub use connmgr_core::{Clock, ManualClock, SystemClock};
pub use error::Error;
pub use pool::IdlePool;
