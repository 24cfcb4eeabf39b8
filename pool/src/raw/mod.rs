//! The machinery behind [`IdlePool`](crate::IdlePool): nodes, their key
//! entries and the key map, the expiry FIFO stripes and their holdover
//! queues. One file per structure:
//!
//! * `node`: the heap node holding one idle connection and its ownership
//!   word; batched retirement.
//! * `index`: a key's entry (reservation counter, slot index).
//! * `key_map`: keys to entries, sharded bucket chains.
//! * `fifo`: one stripe of the expiry FIFO and its reaping claim.
//! * `ms_queue`: the Michael–Scott push and pop both queues use.
//! * `holdover`: proxies for idle nodes moved off a crowded stripe's head.
//!
//! # Ownership of a node
//!
//! Every idle connection lives in one heap [`Node`]. Its `state` word holds
//! four bits:
//!
//! * `CLAIMED`: set exactly once, by `fetch_or`. The thread whose `fetch_or`
//!   set it owns the connection: it moves it out and either returns it or
//!   drops it on the spot. Nobody else ever touches the connection. The
//!   claimer is `take`/`take_if`, `reap`/`clear` (or an early close in
//!   `put`), or the pool's drop: a connection is never duplicated and never
//!   lost, and its destructor runs at that moment, never later from the
//!   garbage collector.
//! * `IN_FIFO`: the node is (or was, until the head moved past it) linked
//!   into the expiry FIFO.
//! * `IN_INDEX`: the node is in a slot of its key's index.
//! * `IN_HOLD`: a [`Proxy`] in its stripe's holdover queue points to it (the
//!   node stayed idle at the head of a FIFO stripe that had too many
//!   records queued, and was moved; see [`Holdover`]).
//!
//! The link bits are references. The thread that clears the last one
//! (the node is then unreachable from the FIFO, the index and the
//! holdover queue) retires the node's memory with `defer_destroy`. A
//! node's memory holds no user value by then (the connection left when it
//! was claimed), so deferred destruction never runs a connection's
//! destructor. `reap`, `clear` and `next_expiry` retire nodes in batches of
//! 64 per deferred call ([`Retired`]); holdover proxies go one per call. A
//! key entry holds a clone of its key, dropped when the entry's memory is
//! reclaimed.
//!
//! # The expiry FIFO
//!
//! One TTL per pool makes insertion order expiry order, so nodes are
//! threaded, oldest first, through a lock-free FIFO (a Michael–Scott
//! queue). The FIFO is striped by thread slot (a power of two of
//! cache-padded stripes, about two per CPU): a put appends to its own
//! thread's stripe, so threads do not fight over one tail. `reap` pops each
//! stripe's head while it has expired: O(expired + stripes). Within a
//! stripe, records are in expiry order except that two puts from threads
//! sharing a stripe append in the order they reach the FIFO, not the order
//! they read the clock: a put delayed between the two sits behind a
//! younger connection and is reaped late, by at most that delay. The same
//! holds with a clock that goes backwards.
//!
//! A stripe is drained by one reaper at a time, under its reaping claim
//! ([`Fifo::claim_reaping`]); each `reap` starts at its own thread's
//! stripe. A `reap` that finds another reaper on a stripe where it has
//! something due waits until that reaper has drained it or let go, then
//! closes what is still due. A `reap` re-entered from a destructor on the
//! thread holding the claim goes on under it; one re-entered while its
//! thread holds another stripe's claim pops alongside instead of waiting,
//! so no cycle of waiting reapers can form.
//!
//! # Housekeeping on `put`, and the holdover queues
//!
//! The FIFO keeps one record per put until the record reaches its stripe's
//! head, also for connections already taken. Once the caller's stripe
//! holds more than 64 records (`DEAD_SLACK`), `put` unlinks up to two
//! records of taken connections from its head, and from its holdover
//! queue's head whenever that queue is not empty.
//!
//! If more than `max(2 × max_idle_total, 1024)` records are queued in the
//! stripe (the record limit: many connections put and taken while an older
//! one stays idle), `put` moves the idle connections at the stripe's head
//! to the stripe's holdover queue, a second Michael–Scott queue of small
//! [`Proxy`] records that reapers also drain (after the stripe), so the
//! records behind them can go. Moves are made under the stripe's reaping
//! claim, which keeps the holdover queue in deadline order; a put that
//! finds the claim held leaves the moves to a later put.
//!
//! An idle connection is closed early, to keep memory bounded, in two
//! cases only: the holdover queue itself holds more than the record limit
//! (more than that many connections, each idle through that many puts,
//! were moved and then taken while an older one stays idle), or a put finds
//! the stripe's reaping claim held by another call while the stripe holds
//! more than twice the limit.
//!
//! `next_expiry` (and a reaper) looks at a stripe before its holdover
//! queue: a move pushes the proxy before it unlinks the stripe's record, so
//! a node that left the stripe before the stripe was read is in the
//! holdover queue when that is read.
//!
//! # Keys: entries, indexes and the map
//!
//! Each key has an [`Entry`] with a reservation counter (the per-key cap,
//! and the count of FIFO records and proxies of its nodes) and an index of
//! fixed slots written in place: a chunk of 8 node pointers, plus more
//! chunks (appended, never moved) up to `ceil(max_idle_per_key / 8)`.
//! `put` stores its node by CAS into a slot that is empty or holds an
//! already-claimed node; `take` picks the unclaimed node with the highest
//! put stamp (the freshest), claims it and empties its slot. No allocation
//! or copy of the index per call.
//!
//! Keys map to entries through sharded bucket chains ([`KeyMap`]): lookups
//! are lock-free; creating or removing an entry takes the shard's lock. An
//! entry lives while it counts an idle connection or a record of one of its
//! connections, so a key that churns (put, take, put, ...) keeps its entry
//! and stays off the lock. Once an emptied key's records leave the FIFO
//! (at the next `reap`/`next_expiry`, or through `put`'s housekeeping),
//! whoever gives back the last count closes the entry, which is unhooked
//! and retired, so per-key state does not pile up as keys churn. A `take`
//! whose node's record a reaper unlinked meanwhile is the one that frees
//! the entry.
//!
//! # Caps
//!
//! Caps are reservations taken by CAS before anything is published and
//! given back once per claimed connection: they hold exactly and the
//! counters never underflow. The total cap is striped like the FIFO (see
//! `crate::quota`): each stripe holds spare units borrowed in batches of
//! 32 from a global pool, so a put and a take on one thread touch only that
//! thread's stripe. A put whose stripe is empty borrows a batch, or else
//! takes the other stripes' spare units; it is refused only after a pass
//! that found none while no transfer of units was under way. A stripe with
//! 64 spare units gives 32 back. Near the cap, a put refused while another
//! holds a unit in transfer can fail although a unit is about to be free.

mod fifo;
mod holdover;
mod index;
mod key_map;
mod ms_queue;
mod node;

pub(crate) use fifo::*;
pub(crate) use holdover::*;
pub(crate) use index::*;
pub(crate) use key_map::*;
use ms_queue::*;
pub(crate) use node::*;
