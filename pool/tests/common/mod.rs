//! Shared test helpers: a connection that counts its drops.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Drop counters, one per connection id.
#[derive(Clone)]
pub struct Tracker(Arc<Vec<AtomicUsize>>);

impl Tracker {
    pub fn new(n: usize) -> Self {
        Self(Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect()))
    }

    pub fn conn(&self, id: usize) -> Conn {
        Conn {
            id,
            drops: self.clone(),
        }
    }

    pub fn drops(&self, id: usize) -> usize {
        self.0[id].load(Ordering::SeqCst)
    }

    /// Every id below `n` dropped exactly once.
    pub fn assert_each_dropped_once(&self, n: usize) {
        for id in 0..n {
            assert_eq!(
                self.drops(id),
                1,
                "connection {id} dropped {} times",
                self.drops(id)
            );
        }
    }
}

/// A connection that records its drop.
pub struct Conn {
    pub id: usize,
    drops: Tracker,
}

impl PartialEq for Conn {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.drops.0[self.id].fetch_add(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.id)
    }
}
