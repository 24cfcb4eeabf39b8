//! Admission: one atomic counter per limit, and the RAII permits that
//! hold a unit of one.
//!
//! A request takes the permits it needs one after the other (`connect`:
//! connections, outbound, then a pending dial and a socket; `adopt`:
//! connections, inbound, then a socket; the socket comes last because
//! taking it may close an idle connection, which a refusal cannot undo).
//! Each counter's check and increment are one CAS, so no counter ever
//! overshoots its limit; a request refused by
//! a later counter drops the permits it took from the earlier ones, which
//! gives their units back. A refused request may so, for a moment, hold a
//! unit of an earlier counter that another request then finds taken: the
//! limits are never exceeded, at the price of such a spurious refusal
//! under a race at the very edge of two limits.
//!
//! The maxima are one [`Limits`] value behind an [`ArcSwap`], replaced
//! whole by `set_limits` and loaded by each admission (once per step of a
//! request: `connect`'s slot, then its dial's pending unit and socket;
//! `adopt`'s units): the limit *in force* for an admission is the one it
//! loaded. Its CAS takes a unit only while fewer than that maximum are in
//! use, so no admission ever overshoots the limit it checked. An admission
//! that loaded the limits before a `set_limits` lowered them may still take
//! a unit against the old value: it is ordered before the change, as are
//! the connections already open, which a lowered limit leaves alone.
//! Every admission that starts after `set_limits` returns checks the new
//! value. The high watermark is mirrored in an atomic beside it, for the
//! check every connection made live makes.

use std::fmt;

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;

use crate::config::Config;
use crate::limits::Limits;
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

/// Counts the units in use of every limit.
pub(crate) struct Admission {
    /// Units in use, per limit.
    counters: [CachePadded<AtomicUsize>; 5],
    /// The limits in force.
    limits: ArcSwap<Limits>,
    /// Their high watermark (`usize::MAX` for none), for the check every
    /// connection made live makes.
    high: AtomicUsize,
    /// `connect`s waiting for a slot (`wait_for_slot`).
    waiting: CachePadded<AtomicUsize>,
    /// The waiters' queue: FIFO (tokio's mutex is fair), so the waiter at
    /// its head is the one that takes the next free slot.
    turn: tokio::sync::Mutex<()>,
    /// Woken when a unit is given back (or the limits change) while
    /// someone waits; only the waiter at the head of the queue listens.
    released: tokio::sync::Notify,
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            counters: LIMITS.map(|_| CachePadded::new(AtomicUsize::new(0))),
            limits: ArcSwap::from_pointee(Limits::of(config)),
            high: AtomicUsize::new(high_of(&Limits::of(config))),
            waiting: CachePadded::new(AtomicUsize::new(0)),
            turn: tokio::sync::Mutex::new(()),
            released: tokio::sync::Notify::new(),
        })
    }

    /// The high watermark in force, if any.
    pub(crate) fn high(&self) -> Option<usize> {
        Some(self.high.load(Ordering::Acquire)).filter(|&h| h != usize::MAX)
    }

    /// `connect`s waiting for a slot now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Counts the caller as waiting until the guard is dropped.
    ///
    /// Store-buffering with [`Permit`]'s drop (count given back, then
    /// `waiting` read): after this increment and a fence, the waiter's
    /// next attempt either sees the unit given back, or that drop sees the
    /// waiter and wakes the queue's head.
    pub(crate) fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        crate::sync::fence(Ordering::SeqCst);
        Waiting(self)
    }

    /// The head's turn, if nobody holds it.
    pub(crate) fn try_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.turn.try_lock().ok()
    }

    /// The queue of waiters, to wait in; the guard is the head's turn.
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// A wake-up for the head of the queue: made before the head's
    /// attempt, so that a unit given back after it is not missed.
    pub(crate) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// Wakes the head of the queue, if anyone waits.
    pub(crate) fn wake_waiter(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.released.notify_one();
        }
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> Limits {
        **self.limits.load()
    }

    /// Puts `limits` in force (validated by the caller): admissions that
    /// start from now on check them.
    pub(crate) fn set_limits(&self, limits: Limits) {
        self.limits.store(std::sync::Arc::new(limits));
        self.high.store(high_of(&limits), Ordering::Release);
        // A raised limit may admit the head of the queue.
        self.wake_waiter();
    }

    /// Takes a unit of `limit` if one is free: the check and the increment
    /// are one CAS, so concurrent callers never overshoot its maximum.
    ///
    /// # Errors
    ///
    /// [`Error::LimitReached`] naming `limit` when it is full.
    pub(crate) fn try_acquire(self: &Arc<Self>, limit: Limit) -> Result<Permit, Error> {
        self.try_acquire_in(&self.limits.load(), limit)
    }

    /// The limits in force, loaded once for several admissions of one
    /// request (each load costs a few atomic operations).
    pub(crate) fn load(&self) -> arc_swap::Guard<std::sync::Arc<Limits>> {
        self.limits.load()
    }

    /// As [`try_acquire`](Self::try_acquire), against `limits` as loaded
    /// by the caller.
    pub(crate) fn try_acquire_in(
        self: &Arc<Self>,
        limits: &Limits,
        limit: Limit,
    ) -> Result<Permit, Error> {
        let max = limits.max(limit);
        self.counters[index(limit)]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Permit {
                admission: Arc::clone(self),
                limit,
                quiet: false,
            })
            .map_err(|_| Error::LimitReached { limit, max })
    }

    /// Units of `limit` in use.
    pub(crate) fn in_use(&self, limit: Limit) -> usize {
        self.counters[index(limit)].load(Ordering::Acquire)
    }
}

/// `limits`' high watermark, `usize::MAX` for none.
fn high_of(limits: &Limits) -> usize {
    limits.watermarks.map_or(usize::MAX, |(_, high)| high)
}

/// A waiting `connect`, counted until dropped (see [`Admission::wait`]).
pub(crate) struct Waiting<'a>(&'a Admission);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One unit of one limit. Dropping it gives the unit back, on every path:
/// success later undone, error, timeout, cancellation, panic.
pub(crate) struct Permit {
    admission: Arc<Admission>,
    limit: Limit,
    /// Given back without waking a waiter (see [`Permit::quietly`]).
    quiet: bool,
}

impl Permit {
    /// Gives the unit back without waking the queue's head: for a unit a
    /// waiter took itself and drops because its request was refused by a
    /// later limit. Waking would wake that very waiter, which would try,
    /// fail and wake itself again, never waiting (nor seeing its
    /// deadline).
    pub(crate) fn quietly(mut self) {
        self.quiet = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Never underflows: a permit exists only for a unit it took.
        self.admission.counters[index(self.limit)].fetch_sub(1, Ordering::SeqCst);
        if !self.quiet {
            self.admission.wake_waiter();
        }
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
