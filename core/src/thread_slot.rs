//! Small per-thread numbers, for spreading per-thread state over stripes.
//!
//! [`current`] gives the calling thread a **slot number** on its first
//! call and the same number on every later one. Slot numbers are unique
//! among live threads (two threads that run at the same time never share
//! one), and dense: a thread takes the lowest number below [`DENSE`] that
//! no live thread holds, and gives it back when it exits (its
//! thread-local destructor clears the bit). A process whose threads come
//! and go (a runtime's blocking pool) therefore keeps using the numbers
//! 0, 1, 2, ..., and a structure with `n` stripes can give the first `n`
//! slots a stripe each.
//!
//! Once [`DENSE`] numbers are live, further threads get numbers from a
//! counter starting at [`DENSE`]: still unique, never recycled. A call made
//! while the thread's locals are being destroyed gets [`DETACHED`], which
//! is shared by every such call.
//!
//! The numbers sit in a bitmap of atomic words: a thread takes its bit
//! with an `Acquire` `fetch_or` and gives it back with a `Release`
//! `fetch_and`. So the next owner of a recycled number happens-after
//! everything its previous owner did, and a structure may let the owner of
//! slot `i` write stripe `i` with a plain load and store (the metrics
//! aggregator does).
//!
//! Users: the status table's per-thread transition counters, the idle
//! pool's FIFO and cap stripes (which also use the number to recognise a
//! reaper re-entering its own stripe), and the metrics aggregator's owned
//! stripes.
//!
//! ```
//! use connmgr_core::thread_slot;
//!
//! let here = thread_slot::current();
//! assert_eq!(here, thread_slot::current());
//! std::thread::scope(|s| {
//!     let other = s.spawn(thread_slot::current).join().unwrap();
//!     assert_ne!(other, here, "live threads never share a slot");
//! });
//! ```

use std::cell::Cell;

use crate::sync::{thread_local, AtomicU64, AtomicUsize, Ordering};

/// How many slot numbers are recycled: numbers below `DENSE` are handed
/// out lowest first and given back when their thread exits.
pub const DENSE: usize = if cfg!(loom) { 4 } else { 1024 };

/// The number of calls made while the calling thread's locals are being
/// destroyed. Not unique: every such call gets it.
pub const DETACHED: usize = usize::MAX;

const WORDS: usize = DENSE.div_ceil(64);

/// One bit per dense number: set while a live thread holds it.
#[cfg(not(loom))]
static TAKEN: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// Overflow numbers handed out so far.
#[cfg(not(loom))]
static OVERFLOW: AtomicUsize = AtomicUsize::new(0);

// Under loom: fresh for every model execution.
#[cfg(loom)]
loom::lazy_static! {
    static ref TAKEN: [AtomicU64; WORDS] = std::array::from_fn(|_| AtomicU64::new(0));
    static ref OVERFLOW: AtomicUsize = AtomicUsize::new(0);
}

/// Takes the lowest free dense number, or else a fresh overflow number.
///
/// **Progress:** lock-free: a `fetch_or` fails to take its bit only
/// because another thread took it.
fn acquire() -> usize {
    for (w, word) in TAKEN.iter().enumerate() {
        let mut seen = word.load(Ordering::Relaxed);
        loop {
            let valid = DENSE - w * 64;
            let free = !seen
                & if valid >= 64 {
                    u64::MAX
                } else {
                    (1 << valid) - 1
                };
            if free == 0 {
                break;
            }
            let bit = free & free.wrapping_neg();
            // Acquire: synchronizes with the `Release` of the thread that
            // gave the number back, so its writes are visible to the new
            // owner.
            let before = word.fetch_or(bit, Ordering::Acquire);
            if before & bit == 0 {
                return w * 64 + bit.trailing_zeros() as usize;
            }
            seen = before;
        }
    }
    DENSE + OVERFLOW.fetch_add(1, Ordering::Relaxed) % (DETACHED - DENSE)
}

/// Gives a dense number back (overflow numbers are never reused).
fn release(slot: usize) {
    if slot < DENSE {
        // Release: the next owner's `Acquire` sees every write this thread
        // made while it held the number.
        TAKEN[slot / 64].fetch_and(!(1u64 << (slot % 64)), Ordering::Release);
    }
}

/// Owns a slot number for the life of its thread.
struct SlotGuard(Cell<usize>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // Under loom, thread-local destructors run outside the model's
        // scheduler, where a modelled atomic must not be touched: models
        // give slots back with `release_current` instead.
        if !cfg!(loom) {
            release(self.0.replace(DETACHED));
        }
    }
}

thread_local! {
    static SLOT: SlotGuard = SlotGuard(Cell::new(acquire()));
}

/// The calling thread's slot number, taken on its first call.
///
/// Numbers below [`DENSE`] are unique among live threads and recycled;
/// numbers from [`DENSE`] up are unique and never recycled; [`DETACHED`]
/// is returned while the thread's locals are being destroyed.
///
/// **Progress:** wait-free after the thread's first call, which is
/// lock-free (a scan of `DENSE / 64` words).
#[inline]
pub fn current() -> usize {
    SLOT.try_with(|guard| guard.0.get()).unwrap_or(DETACHED)
}

/// Gives the calling thread's slot back now instead of in its thread-local
/// destructor; later calls on this thread return [`DETACHED`].
///
/// For loom models only: loom runs thread-local destructors outside its
/// scheduler, so a model's thread calls this as its last act to exercise
/// the same release the destructor performs.
#[cfg(loom)]
#[doc(hidden)]
pub fn release_current() {
    let _ = SLOT.try_with(|guard| release(guard.0.replace(DETACHED)));
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn live_threads_have_distinct_slots_and_exited_ones_are_reused() {
        let here = current();
        assert_eq!(here, current(), "stable within a thread");
        let other = std::thread::spawn(current).join().unwrap();
        assert_ne!(here, other);
        // The exited thread's number is free again; other tests may take it
        // first, so only check the next thread stays in the dense range.
        let again = std::thread::spawn(current).join().unwrap();
        assert!(again < DENSE);
        assert_ne!(again, here);
    }

    #[test]
    fn many_live_threads_get_unique_numbers() {
        let barrier = std::sync::Barrier::new(40);
        let mut slots: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..40)
                .map(|_| {
                    s.spawn(|| {
                        let slot = current();
                        barrier.wait(); // all hold their numbers at once
                        slot
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), 40, "no two live threads share a slot");
        assert!(slots.iter().all(|&s| s < DENSE));
    }

    #[test]
    fn release_makes_the_number_available_again() {
        let taken = acquire();
        assert!(taken < DENSE);
        release(taken);
        // Another thread may take it in between; either way acquiring again
        // succeeds and gives a dense number.
        let next = acquire();
        assert!(next < DENSE);
        release(next);
    }
}
