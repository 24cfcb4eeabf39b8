//! The crate's one door to synchronization primitives.
//!
//! Under `cfg(loom)` everything comes from loom, so the models in
//! `tests/loom_*.rs` explore every interleaving of recording, slot recycling
//! and snapshots; otherwise from std and parking_lot. Code elsewhere in the
//! crate never names `std::sync` directly.

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
    pub(crate) use std::thread_local;

    /// A mutex whose `lock` cannot fail (parking_lot's).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// Declares a lazily initialised `static` (a plain `static` with a
    /// `const` initialiser on std; loom's `lazy_static!`, reset for every
    /// model execution, under loom).
    macro_rules! lazy_static {
        (static ref $name:ident : $ty:ty = $init:expr;) => {
            static $name: $ty = $init;
        };
    }
    pub(crate) use lazy_static;
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
    pub(crate) use loom::thread_local;

    /// loom's mutex behind the same infallible `lock` as the std side.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// loom's `lazy_static!`: a fresh value for every model execution.
    macro_rules! lazy_static {
        (static ref $name:ident : $ty:ty = $init:expr;) => {
            loom::lazy_static! { static ref $name: $ty = $init; }
        };
    }
    pub(crate) use lazy_static;
}

pub(crate) use imp::*;
