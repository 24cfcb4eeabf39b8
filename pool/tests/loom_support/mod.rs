//! Drop-tracked connections for the pool's loom models (shared by
//! `loom_pool.rs` and `loom_drop.rs`; per-model counters, no globals).

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;

/// Per-model drop counters, one per connection id (0..3).
#[derive(Clone)]
pub struct Tracker(Arc<[AtomicUsize; 3]>);

impl Tracker {
    pub fn new() -> Self {
        Self(Arc::new([
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ]))
    }
    pub fn conn(&self, id: usize) -> Conn {
        Conn(id, self.clone())
    }
    pub fn drops(&self, id: usize) -> usize {
        self.0[id].load(Ordering::SeqCst)
    }
}

/// A connection that counts its drops and fails the model on a second one.
pub struct Conn(pub usize, Tracker);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.0)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let prev = (self.1).0[self.0].fetch_add(1, Ordering::SeqCst);
        assert_eq!(prev, 0, "connection {} dropped twice", self.0);
    }
}
