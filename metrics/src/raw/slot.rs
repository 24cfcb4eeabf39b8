//! Per-thread slot numbers, handed out on a thread's first recording and
//! recycled when it exits.
//!
//! A slot is a small integer unique among the live threads that have ever
//! recorded into any [`Metrics`](crate::Metrics). The registry hands out the
//! lowest free number, so the numbers stay dense (0, 1, 2, ...) and a
//! `Metrics` with `n` owned stripes gives the first `n` of them a stripe of
//! their own. When a thread exits, its thread-local guard returns the number
//! under the registry mutex; the next thread to take that number therefore
//! happens-after every write the previous owner made, which is what lets an
//! owned stripe be updated with a plain load and store.
//!
//! The registry is bounded: once `MAX_SLOTS` numbers are live, further
//! threads get an overflow number (`>= MAX_SLOTS`, never released) that no
//! stripe is owned by, so they hash onto the shared stripes.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::sync::{lazy_static, thread_local, Mutex};

/// Most slot numbers live at once; also the most owned stripes a `Metrics`
/// may have.
pub(crate) const MAX_SLOTS: usize = if cfg!(loom) { 4 } else { 1024 };

/// The slot used when the thread-local is already destroyed (a recording
/// from another thread-local's destructor). It owns no stripe.
pub(crate) const DETACHED: usize = MAX_SLOTS;

struct Registry {
    /// Next never-used number.
    next: usize,
    /// Released numbers, smallest first.
    free: BinaryHeap<Reverse<usize>>,
    /// Round-robin counter for overflow numbers.
    overflow: usize,
}

impl Registry {
    const fn new() -> Self {
        Self {
            next: 0,
            free: BinaryHeap::new(),
            overflow: 0,
        }
    }
}

lazy_static! {
    static ref REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());
}

fn acquire() -> usize {
    let mut registry = REGISTRY.lock();
    if let Some(Reverse(slot)) = registry.free.pop() {
        slot
    } else if registry.next < MAX_SLOTS {
        registry.next += 1;
        registry.next - 1
    } else {
        registry.overflow = registry.overflow.wrapping_add(1);
        MAX_SLOTS + registry.overflow % MAX_SLOTS
    }
}

fn release(slot: usize) {
    REGISTRY.lock().free.push(Reverse(slot));
}

/// Owns a slot number for the life of its thread.
struct SlotGuard(Cell<usize>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let slot = self.0.replace(DETACHED);
        if slot < MAX_SLOTS {
            release(slot);
        }
    }
}

/// Gives the calling thread's slot back now instead of in its thread-local
/// destructor; later recordings on this thread use a shared stripe.
///
/// Loom models call this as a spawned thread's last act: loom runs
/// thread-local destructors outside its scheduler's control, where taking
/// the (modelled) registry mutex breaks the model. The release itself is
/// the same code the destructor runs.
#[cfg(loom)]
pub fn release_current() {
    let _ = SLOT.try_with(|guard| {
        let slot = guard.0.replace(DETACHED);
        if slot < MAX_SLOTS {
            release(slot);
        }
    });
}

thread_local! {
    static SLOT: SlotGuard = SlotGuard(Cell::new(acquire()));
}

/// The calling thread's slot number (taken on first use).
///
/// Numbers below [`MAX_SLOTS`] are unique among live threads; numbers at or
/// above it are shared and own no stripe.
#[inline]
pub(crate) fn current() -> usize {
    SLOT.try_with(|guard| guard.0.get()).unwrap_or(DETACHED)
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
        // The exited thread's number is free again: some later thread gets
        // a number no larger than it (other tests may race for it, so only
        // check it stays within the dense range).
        let again = std::thread::spawn(current).join().unwrap();
        assert!(again < MAX_SLOTS);
        assert_ne!(again, here);
    }
}
