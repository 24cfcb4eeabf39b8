//! Admission: one atomic counter per limit, and the RAII permits that
//! hold a unit of one.
//!
//! A request takes the permits it needs one after the other (`connect`:
//! connections, outbound, then a pending dial and a socket; `adopt`:
//! connections, inbound, then a socket; the socket comes last because
//! taking it may close an idle connection, which a refusal cannot undo). Each counter's check and increment are
//! one CAS, so no counter ever overshoots its limit; a request refused by
//! a later counter drops the permits it took from the earlier ones, which
//! gives their units back. A refused request may so, for a moment, hold a
//! unit of an earlier counter that another request then finds taken: the
//! limits are never exceeded, at the price of such a spurious refusal
//! under a race at the very edge of two limits.

use std::fmt;

use crossbeam_utils::CachePadded;

use crate::config::Config;
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::{Error, Limit};

/// Every limit, in the order of [`Admission::counters`].
const LIMITS: [Limit; 5] = [
    Limit::Connections,
    Limit::Inbound,
    Limit::Outbound,
    Limit::PendingDials,
    Limit::Sockets,
];

fn index(limit: Limit) -> usize {
    match limit {
        Limit::Connections => 0,
        Limit::Inbound => 1,
        Limit::Outbound => 2,
        Limit::PendingDials => 3,
        Limit::Sockets => 4,
    }
}

/// One limit: units in use, and the most there may be.
struct Counter {
    used: CachePadded<AtomicUsize>,
    max: usize,
}

/// Counts the units in use of every limit.
pub(crate) struct Admission {
    counters: [Counter; 5],
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Arc<Self> {
        let max = |limit| match limit {
            Limit::Connections => config.max_connections,
            Limit::Inbound => config.max_inbound,
            Limit::Outbound => config.max_outbound,
            Limit::PendingDials => config.max_pending_dials,
            Limit::Sockets => config.max_sockets,
        };
        Arc::new(Self {
            counters: LIMITS.map(|limit| Counter {
                used: CachePadded::new(AtomicUsize::new(0)),
                max: max(limit),
            }),
        })
    }

    /// Takes a unit of `limit` if one is free: the check and the increment
    /// are one CAS, so concurrent callers never overshoot its maximum.
    ///
    /// # Errors
    ///
    /// [`Error::LimitReached`] naming `limit` when it is full.
    pub(crate) fn try_acquire(self: &Arc<Self>, limit: Limit) -> Result<Permit, Error> {
        let counter = &self.counters[index(limit)];
        counter
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < counter.max).then_some(n + 1)
            })
            .map(|_| Permit {
                admission: Arc::clone(self),
                limit,
            })
            .map_err(|_| Error::LimitReached {
                limit,
                max: counter.max,
            })
    }

    /// Units of `limit` in use.
    pub(crate) fn in_use(&self, limit: Limit) -> usize {
        self.counters[index(limit)].used.load(Ordering::Acquire)
    }

    /// The maximum of `limit`.
    pub(crate) fn max(&self, limit: Limit) -> usize {
        self.counters[index(limit)].max
    }
}

/// One unit of one limit. Dropping it gives the unit back, on every path:
/// success later undone, error, timeout, cancellation, panic.
pub(crate) struct Permit {
    admission: Arc<Admission>,
    limit: Limit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Never underflows: a permit exists only for a unit it took.
        self.admission.counters[index(self.limit)]
            .used
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Permit").field(&self.limit).finish()
    }
}

/// What a live connection holds: its unit of `max_connections` and of its
/// direction's limit (`max_inbound` or `max_outbound`), both given back
/// when the live slot is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) _connection: Permit,
    pub(crate) _direction: Permit,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize) -> Arc<Admission> {
        Admission::new(&Config {
            max_connections: max,
            max_inbound: 1,
            ..Config::default()
        })
    }

    #[test]
    fn permits_never_exceed_max_and_come_back_on_drop() {
        let a = admission(2);
        let p1 = a.try_acquire(Limit::Connections).unwrap();
        let p2 = a.try_acquire(Limit::Connections).unwrap();
        assert!(matches!(
            a.try_acquire(Limit::Connections),
            Err(Error::LimitReached {
                limit: Limit::Connections,
                max: 2
            })
        ));
        assert_eq!(a.in_use(Limit::Connections), 2);
        drop(p1);
        let p3 = a.try_acquire(Limit::Connections).unwrap();
        drop((p2, p3));
        assert_eq!(a.in_use(Limit::Connections), 0);
    }

    #[test]
    fn each_limit_counts_alone() {
        let a = admission(2);
        let inbound = a.try_acquire(Limit::Inbound).unwrap();
        assert!(a.try_acquire(Limit::Inbound).is_err());
        let _c = a.try_acquire(Limit::Connections).unwrap();
        assert_eq!(a.in_use(Limit::Inbound), 1);
        assert_eq!(a.in_use(Limit::Outbound), 0);
        drop(inbound);
        assert_eq!(a.in_use(Limit::Inbound), 0);
        assert_eq!(a.in_use(Limit::Connections), 1);
    }

    #[test]
    fn racing_threads_never_overshoot() {
        let a = admission(3);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Ok(p) = a.try_acquire(Limit::Connections) {
                            peak.fetch_max(a.in_use(Limit::Connections), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.into_inner() <= 3);
        assert_eq!(a.in_use(Limit::Connections), 0);
    }
}
