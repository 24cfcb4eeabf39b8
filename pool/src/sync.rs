//! Sync shim: the one place that chooses between `std`/`parking_lot` and
//! `loom`. Everything else in the crate imports its atomics, cells and locks
//! from here, so `--cfg loom` swaps every synchronisation point at once.

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::hint::spin_loop;

    /// Waits a little for another thread (here: lets loom run another).
    pub(crate) fn pause(_step: &mut u32) {
        loom::thread::yield_now();
    }
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

    /// `loom::sync::Mutex` with the `parking_lot` calling convention.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            // Poisoning only happens if a model already panicked.
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::Mutex;
    pub(crate) use std::hint::spin_loop;

    /// Waits a little for another thread: spins, doubling up to 64 spins,
    /// then yields the CPU on every call.
    pub(crate) fn pause(step: &mut u32) {
        if *step < 6 {
            for _ in 0..1u32 << *step {
                spin_loop();
            }
            *step += 1;
        } else {
            std::thread::yield_now();
        }
    }
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

    /// `std::cell::UnsafeCell` with loom's closure-based access API, so the
    /// same code checks causality under loom.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(data: T) -> Self {
            Self(std::cell::UnsafeCell::new(data))
        }

        /// Runs `f` with a shared raw pointer to the contents.
        #[allow(dead_code)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a mutable raw pointer to the contents.
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

pub(crate) use imp::*;

/// The calling thread's slot number, for striping and for telling a
/// reaper that re-enters its own stripe from another one: unique among
/// live threads (see [`connmgr_core::thread_slot`]).
#[inline]
pub(crate) fn thread_index() -> usize {
    connmgr_core::thread_slot::current()
}
