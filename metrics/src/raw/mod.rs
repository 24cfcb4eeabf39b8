//! The machinery behind [`Metrics`](crate::Metrics): thread slots, stripes
//! and the histogram's bucket arithmetic. Nothing here is public API.

pub(crate) mod buckets;
pub(crate) mod slot;
pub(crate) mod stripe;
