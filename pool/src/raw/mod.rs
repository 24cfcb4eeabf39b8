//! The machinery behind [`IdlePool`](crate::IdlePool): nodes, the expiry
//! FIFO (one stripe of it), per-key slot indexes and the key map.
//!
//! # Ownership of a node
//!
//! Every idle connection lives in one heap [`Node`]. Its `state` word holds
//! four bits:
//!
//! * `CLAIMED`: set exactly once, by `fetch_or`. The thread whose `fetch_or`
//!   set it owns the connection: it moves it out and either returns it or
//!   drops it on the spot. Nobody else ever touches the connection.
//! * `IN_FIFO`: the node is (or was, until the head moved past it) linked
//!   into the expiry FIFO.
//! * `IN_INDEX`: the node is in a slot of its key's index.
//! * `IN_HOLD`: a [`Proxy`] in its stripe's holdover queue points to it (the
//!   node stayed idle at the head of a FIFO stripe that had too many
//!   records queued, and was moved; see [`Holdover`]).
//!
//! The link bits are references. The thread that clears the last one
//! (the node is then unreachable from the FIFO, the index and the
//! holdover queue) retires the node's
//! memory with `defer_destroy`. A node's memory holds no user value by then
//! (the connection left when it was claimed), so deferred destruction never
//! runs a connection's destructor.

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
