//! Closing connections: a connection's destructor is user code, and a
//! panic in it must never leave the manager's work half done.
//!
//! Every connection the manager holds is wrapped in a [`Closing`], whose
//! drop runs the connection's destructor under `catch_unwind`. A panic
//! there is caught and kept, per thread, as the *first caught panic*: the
//! step that closed the connection goes on (statuses set, events sent,
//! slots freed, other connections closed), and the public call that made
//! the step then re-raises it ([`reraising`]) or drops it ([`swallowing`],
//! where no caller waits on the close: the reaper, a connect closing a
//! surplus connection). The panic hook reports every such panic when it
//! happens, as it does any panic, so none goes unnoticed.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::admission::Permit;

/// A panic payload.
type Payload = Box<dyn Any + Send>;

thread_local! {
    /// The first destructor panic caught on this thread and not yet
    /// re-raised or dropped.
    static CAUGHT: RefCell<Option<Payload>> = const { RefCell::new(None) };
}

/// A connection whose destructor never unwinds into the manager, with its
/// unit of the socket budget (`max_sockets`), given back once the
/// connection is closed, and, under a `max_lifetime`, the time it was
/// made.
pub(crate) struct Closing<C>(Option<C>, Option<Permit>, Option<Instant>);

impl<C> Closing<C> {
    /// Holds `conn`, counted in the socket budget by `socket` (`None`: a
    /// connection refused before it was counted, held only to be closed).
    pub(crate) fn new(conn: C, socket: Option<Permit>) -> Self {
        Self(Some(conn), socket, None)
    }

    /// As [`new`](Self::new), for a connection made now that a
    /// `max_lifetime` applies to (`None`: no lifetime, and no clock read).
    pub(crate) fn made(conn: C, socket: Permit, max_lifetime: Option<Duration>) -> Self {
        let born = max_lifetime.map(|_| tokio::time::Instant::now().into_std());
        Self(Some(conn), Some(socket), born)
    }

    /// Whether the connection is older than `max_lifetime` at `now`.
    pub(crate) fn outlived(&self, max_lifetime: Option<Duration>, now: Instant) -> bool {
        match (max_lifetime, self.2) {
            (Some(max), Some(born)) => now.saturating_duration_since(born) >= max,
            _ => false,
        }
    }
}

impl<C> Deref for Closing<C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.0.as_ref().expect("held until dropped")
    }
}

impl<C> DerefMut for Closing<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.0.as_mut().expect("held until dropped")
    }
}

impl<C> Drop for Closing<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            catching(move || drop(conn));
        }
        // The socket is closed: its unit of the budget goes back.
        self.1 = None;
    }
}

impl<C> fmt::Debug for Closing<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closing")
    }
}

/// Runs `f` (user code: a destructor, `is_alive`); a panic in it is kept
/// as this thread's first caught panic (a later one is dropped) and
/// `None` returned.
pub(crate) fn catching<R>(f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            // While the thread's locals are being destroyed there is no
            // caller left to raise it to: it is dropped.
            let mut payload = Some(payload);
            let _ = CAUGHT.try_with(|c| {
                let mut c = c.borrow_mut();
                if c.is_none() {
                    *c = payload.take();
                }
            });
            let later = payload;
            // A payload's own destructor is user code too.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(later)));
            None
        }
    }
}

/// Takes this thread's first caught panic.
fn take() -> Option<Payload> {
    CAUGHT.try_with(|c| c.borrow_mut().take()).ok().flatten()
}

/// Runs `f`, a step of a public call, to the end; then re-raises the first
/// panic caught in user code during it, unless the thread is panicking
/// already. A panic caught earlier on this thread, by a step that had no
/// caller to raise it to, is dropped first.
pub(crate) fn reraising<R>(f: impl FnOnce() -> R) -> R {
    drop_stale();
    let r = f();
    if let Some(payload) = take() {
        if !std::thread::panicking() {
            resume_unwind(payload);
        }
        let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    }
    r
}

/// Runs `f` to the end and drops any panic caught during it (the panic
/// hook has reported it).
pub(crate) fn swallowing<R>(f: impl FnOnce() -> R) -> R {
    let r = f();
    drop_stale();
    r
}

fn drop_stale() {
    if let Some(payload) = take() {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    }
}
