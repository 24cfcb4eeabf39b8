//! One cache-padded stripe of cumulative counters.

use crossbeam_utils::CachePadded;

use super::buckets::{self, BUCKETS};
use crate::sync::{AtomicU64, Ordering::Relaxed};

/// Number of dial outcomes counted per stripe.
pub(crate) const OUTCOMES: usize = 5;

/// Cumulative counters of one stripe, histogram inline so the stripe's
/// cache padding covers all of it. Counters wrap (`u64`); the snapshot
/// side widens their deltas into saturating totals.
#[derive(Debug)]
pub(crate) struct Stripe {
    pub(crate) messages: AtomicU64,
    pub(crate) latency_nanos: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) dials: [AtomicU64; OUTCOMES],
    pub(crate) buckets: [AtomicU64; BUCKETS],
}

/// Adds `value` to `counter`.
///
/// `exclusive` says the caller is the only thread that ever writes this
/// stripe (it owns the stripe through its slot), so a relaxed load and store
/// is an exact add without a locked read-modify-write; otherwise a relaxed
/// `fetch_add`.
#[inline(always)]
fn add(counter: &AtomicU64, value: u64, exclusive: bool) {
    if exclusive {
        counter.store(counter.load(Relaxed).wrapping_add(value), Relaxed);
    } else {
        counter.fetch_add(value, Relaxed);
    }
}

impl Stripe {
    pub(crate) fn new() -> CachePadded<Self> {
        CachePadded::new(Self {
            messages: AtomicU64::new(0),
            latency_nanos: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            dials: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }

    #[inline(always)]
    pub(crate) fn record_message(&self, nanos: u64, exclusive: bool) {
        add(&self.messages, 1, exclusive);
        add(&self.latency_nanos, nanos, exclusive);
        add(&self.buckets[buckets::index(nanos)], 1, exclusive);
    }

    #[inline(always)]
    pub(crate) fn record_bytes(&self, sent: u64, received: u64, exclusive: bool) {
        if sent != 0 {
            add(&self.bytes_sent, sent, exclusive);
        }
        if received != 0 {
            add(&self.bytes_received, received, exclusive);
        }
    }

    #[inline(always)]
    pub(crate) fn record_dial(&self, outcome: usize, exclusive: bool) {
        add(&self.dials[outcome], 1, exclusive);
    }
}
