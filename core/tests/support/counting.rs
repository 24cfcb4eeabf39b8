//! A global allocator that counts live heap bytes, for the tests that check
//! what the table really holds (each such test is its own binary, with one
//! test in it, so nothing else allocates while it measures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts live heap bytes.
struct Counting;

/// Heap bytes allocated and not yet freed, process-wide.
pub static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System::alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System::dealloc`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is `System::realloc`'s.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs the epoch collector until the heap stops shrinking: each pin of an
/// otherwise idle process can advance the global epoch, and each flush
/// seals this thread's bag and frees what two epochs have passed.
pub fn collect_garbage() -> isize {
    let mut last = LIVE.load(Ordering::Relaxed);
    let mut stable = 0;
    for _ in 0..100_000 {
        crossbeam_epoch::pin().flush();
        let now = LIVE.load(Ordering::Relaxed);
        stable = if now == last { stable + 1 } else { 0 };
        if stable == 256 {
            break;
        }
        last = now;
    }
    LIVE.load(Ordering::Relaxed)
}
