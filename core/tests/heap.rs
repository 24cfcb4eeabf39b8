//! RELIABILITY 12 as the allocator sees it: after a million peers are
//! cycled through a table and the epoch collector has run, the heap holds
//! what `memory_usage` reports and nothing more. `concurrent.rs` checks the
//! table's own accounting; this binary counts every live heap byte, so
//! retired slot arrays or dead entries that were never freed (which
//! `memory_usage` cannot see) fail it.
//!
//! Its own binary because it installs a counting global allocator; one
//! test, so no other test allocates while it measures.
#![cfg(not(miri))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use connmgr_core::{ConnectionStatus::Connected, PeerId, StatusTable};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

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
fn collect_garbage() -> isize {
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

#[test]
fn cycling_a_million_peers_frees_every_retired_byte() {
    let id = |i: u64| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&i.to_le_bytes());
        PeerId::from_bytes(b)
    };
    // This thread's epoch registration and the table, before any peer.
    collect_garbage();
    let table = StatusTable::new();
    table.insert(id(u64::MAX), Connected);
    table.remove(&id(u64::MAX));
    let heap_before = collect_garbage();
    let usage_before = table.memory_usage() as isize;

    let window = 1_000u64;
    let mut peak = 0;
    for start in (0..1_000_000u64).step_by(window as usize) {
        for i in start..start + window {
            table.insert(id(i), Connected);
        }
        peak = peak.max(LIVE.load(Ordering::Relaxed));
        for i in start..start + window {
            assert_eq!(table.remove(&id(i)), Some(Connected));
        }
    }
    assert!(table.is_empty());
    let heap_after = collect_garbage();
    let usage_after = table.memory_usage() as isize;

    // The table's structures changed by exactly what `memory_usage` says
    // (the dead entries minimum-size arrays keep, see `concurrent.rs`);
    // anything beyond is memory retired and never freed. The slack covers
    // the collector's own bookkeeping: sealed bags of deferred calls (about
    // 2 KiB each) waiting in its global queue; here it is two of them
    // (4,144 B) against 37-51 MB when arrays or dead entries are leaked.
    let unexplained = (heap_after - heap_before) - (usage_after - usage_before);
    assert!(
        unexplained.abs() <= 16 * 1024,
        "heap grew by {} B while memory_usage grew by {} B: {unexplained} B unexplained \
         (peak {} B above the start)",
        heap_after - heap_before,
        usage_after - usage_before,
        peak - heap_before
    );
    // Each peer of a window holds at least its 32-byte id on the heap.
    assert!(
        peak - heap_before >= window as isize * 32,
        "the windows did allocate: peak +{} B",
        peak - heap_before
    );
    eprintln!(
        "heap +{} B, memory_usage +{} B, unexplained {unexplained} B, peak +{} B",
        heap_after - heap_before,
        usage_after - usage_before,
        peak - heap_before
    );
}
