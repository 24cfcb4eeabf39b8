//! The machinery behind [`Metrics`](crate::Metrics): stripes and the
//! histogram's bucket arithmetic. Nothing here is public API. Thread slot
//! numbers come from [`connmgr_core::thread_slot`].

pub(crate) mod buckets;
pub(crate) mod stripe;
