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
//! let config = PoolConfig {
//!     ttl: Duration::from_secs(30),
//!     max_idle_per_key: 2,
//!     max_idle_total: 100,
//! };
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
//! # Design
//!
//! * Each idle connection lives in a heap node whose ownership is claimed
//!   **exactly once** by an atomic `fetch_or` on the node's state word:
//!   by `take`/`take_if`, by `reap`/`clear` (or the eviction in `put`), or
//!   by the pool's drop. The winner moves the connection out and returns it
//!   or drops it on the spot. A connection is therefore never duplicated
//!   and never lost, and its destructor (closing the socket) runs at that
//!   moment, never later from the garbage collector.
//! * One TTL per pool makes insertion order expiry order, so nodes are
//!   threaded, oldest first, through a lock-free FIFO (a Michael–Scott
//!   queue). The FIFO is striped by thread (a power of two of cache-padded
//!   stripes, about two per CPU): a put appends to its own thread's
//!   stripe, so threads do not fight over one tail. `reap` pops each
//!   stripe's head while it has expired: O(expired + stripes). Records of
//!   connections already taken are unlinked as they reach a head. A stripe
//!   holding more records than its limit (taken connections' records
//!   behind an old idle one) moves its idle head to the stripe's holdover
//!   queue, a second queue of small proxy records that reapers also drain,
//!   so the oldest idle connection is not closed early. It still is in
//!   two bounded cases, to keep memory bounded: a holdover queue over the
//!   limit, or a stripe over twice the limit whose reaping claim another
//!   call holds (see `IdlePool::put`).
//! * Each key has an entry with a reservation counter (the per-key cap)
//!   and an index of fixed slots written in place: a chunk of 8 node
//!   pointers, plus more chunks (appended, never moved) up to
//!   `ceil(max_idle_per_key / 8)`. `put` stores its node by CAS into a
//!   slot that is empty or holds an already-claimed node; `take` picks the
//!   unclaimed node with the highest put stamp (the freshest), claims it
//!   and empties its slot. No allocation or copy of the index per call.
//! * Caps are reservations taken by CAS before anything is published and
//!   given back once per claimed connection: they hold exactly and the
//!   counters never underflow. The total cap is striped like the FIFO:
//!   each stripe holds spare units borrowed in batches of 32 from a global
//!   pool, so a put and a take on one thread touch only that thread's
//!   stripe. A put whose stripe is empty borrows a batch, or else takes
//!   the other stripes' spare units; it is refused only after a pass that
//!   found none while no transfer of units was under way. A stripe with 64
//!   spare units gives 32 back.
//! * Keys map to entries through sharded bucket chains: lookups are
//!   lock-free; creating or removing an entry takes the shard's lock. An
//!   entry lives while it counts an idle connection or a FIFO record of one
//!   of its connections (a holdover proxy's record counts too), so a key that churns (put, take, put, ...) keeps
//!   its entry and stays off the lock; once an emptied key's records leave
//!   the FIFO (at the next `reap`/`next_expiry`, or when `put` finds more
//!   than 64 records queued in its stripe) the entry is removed and
//!   retired, so per-key state does not pile up as keys churn.
//!
//! # Progress and reclamation
//!
//! * `take`, `take_if`, `len_for`: lock-free.
//! * `put` on a key that has an entry: lock-free; on a key without, a short
//!   per-shard lock creates its entry.
//! * `reap`, `clear`, `next_expiry`: lock-free per record, plus the short
//!   per-shard lock for each key entry they free; a `reap` also waits for
//!   another `reap` that is draining a stripe where it has something due
//!   (one reaper per stripe at a time), or for a `put` moving that
//!   stripe's idle connections to its holdover queue.
//! * `watch_next_expiry`, `take_wake_request`: the reaper's wake-up
//!   handshake (as `next_expiry`; wait-free).
//! * `len`, `is_empty`: wait-free, O(stripes); exact when no call runs.
//! * `ttl`, `config`: wait-free.
//! * Memory of nodes, key entries (with their index chunks) and bucket
//!   arrays is retired through crossbeam-epoch's default collector; `reap`,
//!   `clear` and `next_expiry` retire nodes in batches of 64 per deferred
//!   call (holdover proxies one per deferred call). Connections are never retired: they are dropped by the call
//!   that claims them. A key entry holds a clone of its key, which is
//!   dropped when the entry's memory is reclaimed.
//! * Dropping the pool closes every idle connection, in the dropping thread,
//!   without blocking or needing a runtime.
//!
//! Each method's documentation states its own **Progress:** and
//! **Reclamation:**.

#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod config;
mod pool;
mod quota;
mod raw;
mod sync;

pub use config::{Error, PoolConfig};
/// The injectable clock, shared with the other connmgr crates.
pub use connmgr_core::{Clock, ManualClock, SystemClock};
pub use pool::IdlePool;
