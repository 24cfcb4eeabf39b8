//! What the manager holds, measured by a counting global allocator (this
//! binary's own, so other tests' allocations stay out of its figures).
//! The tests take one lock, so their measurements never overlap.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;

use common::*;
use connmgr::ConnectionManager;

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter
// only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System::dealloc`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System::alloc_zeroed`'s.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract is `System::realloc`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Abandoned watches (every receiver dropped) are freed, not kept until
/// their peer's status changes, and `memory_usage` stays within a factor
/// of two of the bytes the manager really holds.
#[test]
fn abandoned_watches_are_freed_and_counted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const CALLS: u32 = 100_000;
    let base = live();
    let m = ConnectionManager::new(10);
    let built = live();
    for i in 0..CALLS {
        drop(m.watch(&peer(OK, i)));
    }
    let held = (live() - base) as usize;
    let grown = (live() - built) as usize;
    let reported = m.memory_usage();
    eprintln!("{CALLS} abandoned watches: +{grown} B ({} B per call); held {held} B, memory_usage {reported} B", grown / CALLS as usize);
    assert!(
        grown < CALLS as usize * 40,
        "{grown} B still held after {CALLS} abandoned watches"
    );
    assert!(
        held <= 2 * reported && reported <= 2 * held,
        "memory_usage {reported} B, but the manager holds {held} B"
    );
    // A watch with a receiver still works and is kept.
    let p = peer(OK, 0);
    let rx = m.watch(&p);
    for i in 0..CALLS / 10 {
        drop(m.watch(&peer(OK, CALLS + i)));
    }
    block_on(m.update_status(p, connmgr::ConnectionStatus::Connected));
    assert_eq!(*rx.borrow(), Some(connmgr::ConnectionStatus::Connected));
}

/// Runs a future that never waits (the manager's bookkeeping calls).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// The memory of forgotten peers comes back without help from unrelated
/// code: once they are forgotten the manager holds no more than it did
/// while tracking them (the table keeps its capacity; the removed
/// entries, retired through crossbeam-epoch, are collected), and once
/// the manager is dropped almost nothing is left.
#[test]
fn forgotten_peers_give_their_memory_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const PEERS: u32 = 100_000;
    let base = live();
    let m = ConnectionManager::builder()
        .forget_after(connmgr::Config::MIN_FORGET_AFTER)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..PEERS {
            m.update_status(peer(OK, i), connmgr::ConnectionStatus::Disconnected)
                .await;
        }
    });
    let tracking = live() - base;
    // Stale by real time (the table's stamps), then swept.
    std::thread::sleep(connmgr::Config::MIN_FORGET_AFTER + std::time::Duration::from_millis(50));
    m.reap_now();
    assert_eq!(m.tracked_peers(), 0);
    let forgotten = live() - base;
    drop(m);
    drop(rt);
    let dropped = live() - base;
    eprintln!(
        "{PEERS} peers: tracking +{tracking} B, forgotten +{forgotten} B, dropped +{dropped} B"
    );
    assert!(
        forgotten <= tracking,
        "forgotten: +{forgotten} B, more than tracking them (+{tracking} B)"
    );
    assert!(
        dropped < tracking / 20,
        "+{dropped} B left after the manager is dropped (tracking took +{tracking} B)"
    );
}
