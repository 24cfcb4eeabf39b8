//! Connection slots: an atomic counter and the RAII permit that holds one.

use std::fmt;

use crate::sync::{Arc, AtomicUsize, Ordering};

/// Counts slots in use (connecting + connected) against the limit.
pub(crate) struct Admission {
    used: AtomicUsize,
    max: usize,
}

impl Admission {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes a slot if one is free: the check and the increment are one CAS,
    /// so concurrent callers can never overshoot `max`.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit {
                admission: Arc::clone(self),
            })
    }

    pub(crate) fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// One slot. Dropping it gives the slot back, on every path: success later
/// undone, error, timeout, cancellation, panic.
pub(crate) struct Permit {
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Never underflows: a permit exists only for a slot it took.
        self.admission.used.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_never_exceed_max_and_come_back_on_drop() {
        let a = Admission::new(2);
        let p1 = a.try_acquire().unwrap();
        let p2 = a.try_acquire().unwrap();
        assert!(a.try_acquire().is_none());
        assert_eq!(a.in_use(), 2);
        drop(p1);
        let p3 = a.try_acquire().unwrap();
        drop((p2, p3));
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn racing_threads_never_overshoot() {
        let a = Admission::new(3);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Some(p) = a.try_acquire() {
                            peak.fetch_max(a.in_use(), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.into_inner() <= 3);
        assert_eq!(a.in_use(), 0);
    }
}
