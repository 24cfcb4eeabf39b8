//! Shared helpers for the connmgr criterion benchmarks: reproducible keys,
//! a runner that times the same work on N threads, and a counting global
//! allocator for bytes-per-entry figures. The benchmarks live in `benches/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use connmgr_core::PeerId;
use criterion::measurement::Measurement;
use criterion::{BenchmarkGroup, BenchmarkId};

/// `n` distinct peer ids, reproducible from `seed`, in random order.
pub fn peer_ids(n: usize, seed: u64) -> Vec<PeerId> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n as u64)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&i.to_le_bytes());
            b[8..16].copy_from_slice(&seed.to_le_bytes());
            for chunk in b[16..].chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            PeerId::from_bytes(b)
        })
        .collect()
}

/// A random permutation of `0..n` (Fisher-Yates with xorshift), so lookups
/// visit keys in an order unrelated to their insertion (and so to where
/// their memory was allocated).
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut s = seed | 1;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// Runs `op(thread, iters)` on `threads` threads started together and
/// returns the wall time from the first thread's start to the last one's
/// end. Each thread does `iters` operations, so criterion's time per
/// iteration is the time per operation as each thread sees it: equal
/// figures at 1 and 2 threads mean perfect scaling.
///
/// Each thread stamps its own start (after the barrier releases it) and
/// end: on a 2-CPU machine a third thread that started the clock itself
/// would often get a CPU back only after the workers had run, or finished,
/// and would time its own wake-up and the joins too. Thread spawns are not
/// timed either way.
pub fn run_threads<F>(threads: usize, iters: u64, op: F) -> Duration
where
    F: Fn(usize, u64) + Sync,
{
    if threads == 1 {
        let start = Instant::now();
        op(0, iters);
        return start.elapsed();
    }
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    op(t, iters);
                    (start, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a benchmark thread panicked"))
            .collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("threads > 1");
    let last = spans.iter().map(|s| s.1).max().expect("threads > 1");
    last - first
}

/// Benchmarks `run(thread, iters)` as contender `name` at `threads` threads
/// (id `name/{threads}t`) in group `g`, timed by [`run_threads`]: `run`
/// does `iters` operations for thread `thread`, so criterion's time per
/// iteration is the time per operation as each thread sees it. Every bench
/// file times its multi-threaded contenders through this, so they all mean
/// the same by "per operation".
pub fn bench_threads<M: Measurement<Value = Duration>>(
    g: &mut BenchmarkGroup<'_, M>,
    name: &str,
    threads: usize,
    run: impl Fn(usize, u64) + Sync,
) {
    g.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
        b.iter_custom(|iters| run_threads(threads, iters, &run))
    });
}

/// Like [`bench_threads`] for an operation `op(thread, i)`, called for
/// `i` in `0..iters` on each thread.
pub fn bench_op<M: Measurement<Value = Duration>>(
    g: &mut BenchmarkGroup<'_, M>,
    name: &str,
    threads: usize,
    op: impl Fn(usize, u64) + Sync,
) {
    bench_threads(g, name, threads, |t, iters| {
        for i in 0..iters {
            op(t, i);
        }
    });
}

/// Tracked keys in a random order unrelated to their insertion, walked
/// sequentially (so fetching the next key costs no cache miss and no
/// division, and every contender pays the same for it).
///
/// With `threads` threads, thread `t` walks its own slice (`t`-th of
/// `threads`) in passes; each walk resumes where the previous one of the
/// same [`Cursor`] stopped, so across criterion's samples the pass number
/// keeps counting. Benches that update pick the status from the pass's
/// parity: every call then really changes its key's status.
#[derive(Debug)]
pub struct KeyWalk<K> {
    keys: Vec<K>,
}

/// Where each thread's walk stands; one per contender, so contenders do not
/// shift each other's passes.
#[derive(Debug, Default)]
pub struct Cursor([AtomicU64; 2]);

impl Cursor {
    /// Reserves the next `n` positions of thread `t` (at most 2 threads) and
    /// returns the first: successive calls (criterion's samples) continue
    /// where the previous one stopped.
    pub fn advance(&self, t: usize, n: u64) -> u64 {
        self.0[t].fetch_add(n, Ordering::Relaxed)
    }
}

impl<K> KeyWalk<K> {
    /// Walks `keys` in `order` (indices into `keys`).
    pub fn new(keys: &[K], order: &[u32]) -> Self
    where
        K: Clone,
    {
        Self {
            keys: order.iter().map(|&i| keys[i as usize].clone()).collect(),
        }
    }

    /// Calls `op(key, odd_pass)` for the next `iters` keys of thread `t` of
    /// `threads` (at most 2).
    #[inline]
    pub fn walk(
        &self,
        t: usize,
        threads: usize,
        cursor: &Cursor,
        iters: u64,
        mut op: impl FnMut(&K, bool),
    ) {
        let len = self.keys.len() / threads;
        let slice = &self.keys[t * len..(t + 1) * len];
        let start = cursor.0[t].fetch_add(iters, Ordering::Relaxed);
        let mut pos = (start % len as u64) as usize;
        let mut pass = start / len as u64;
        for _ in 0..iters {
            op(&slice[pos], pass & 1 == 1);
            pos += 1;
            if pos == len {
                pos = 0;
                pass += 1;
            }
        }
    }
}

impl<K> KeyWalk<K> {
    /// Like [`walk`](Self::walk), `iters` keys of thread `t`, handed to
    /// `op` as consecutive slices of at most `batch` keys (shorter where
    /// the thread's slice wraps around, and for the last one).
    #[inline]
    pub fn walk_batches(
        &self,
        t: usize,
        threads: usize,
        cursor: &Cursor,
        iters: u64,
        batch: usize,
        mut op: impl FnMut(&[K]),
    ) {
        let len = self.keys.len() / threads;
        let slice = &self.keys[t * len..(t + 1) * len];
        let start = cursor.0[t].fetch_add(iters, Ordering::Relaxed);
        let mut pos = (start % len as u64) as usize;
        let mut left = iters as usize;
        while left > 0 {
            let n = batch.min(left).min(len - pos);
            op(&slice[pos..pos + n]);
            left -= n;
            pos += n;
            if pos == len {
                pos = 0;
            }
        }
    }
}

/// A global allocator that counts live heap bytes, for memory-per-entry
/// figures: install it with `#[global_allocator]` in a bench binary and read
/// [`CountingAlloc::live`] before and after building a structure.
#[derive(Debug)]
pub struct CountingAlloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Off except while a figure is being measured (see
/// [`CountingAlloc::counting`]), so timed benchmarks in the same binary
/// pay one relaxed load per allocation, not two shared atomic adds.
static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_CHUNKS: AtomicIsize = AtomicIsize::new(0);

/// What glibc's malloc takes for a request of `size` bytes: an 8-byte
/// header, rounded up to 16, at least 32 (an estimate of allocator
/// overhead; large blocks are mmapped with a page of slack, ignored here).
fn chunk(size: usize) -> isize {
    ((size + 8).div_ceil(16) * 16).max(32) as isize
}

impl CountingAlloc {
    /// Turns counting on or off. Only deltas taken while it is on mean
    /// anything: memory allocated before and freed while counting pulls
    /// the count down, so flush garbage from earlier work first (as
    /// [`bytes_per_entry`] does).
    pub fn counting(on: bool) {
        COUNTING.store(on, Ordering::SeqCst);
    }

    /// Bytes currently allocated through this allocator (as requested).
    pub fn live() -> isize {
        LIVE.load(Ordering::Relaxed)
    }

    /// Bytes currently allocated, each request rounded to the chunk glibc's
    /// malloc would use for it.
    pub fn live_with_overhead() -> isize {
        LIVE_CHUNKS.load(Ordering::Relaxed)
    }
}

#[inline]
fn count(add: Option<usize>, sub: Option<usize>) {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    if let Some(n) = add {
        LIVE.fetch_add(n as isize, Ordering::Relaxed);
        LIVE_CHUNKS.fetch_add(chunk(n), Ordering::Relaxed);
    }
    if let Some(n) = sub {
        LIVE.fetch_sub(n as isize, Ordering::Relaxed);
        LIVE_CHUNKS.fetch_sub(chunk(n), Ordering::Relaxed);
    }
}

// SAFETY: defers every call to the system allocator unchanged; the counter
// is a side effect that never affects the returned memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(Some(layout.size()), None);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(None, Some(layout.size()));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(Some(layout.size()), None);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(Some(new_size), Some(layout.size()));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap bytes per entry that `build` leaves allocated, divided by `n`:
/// `(requested, with malloc overhead)`. The structure it returns is kept
/// alive until measured, then dropped.
///
/// Memory retired to crossbeam-epoch's collector while building (slot
/// arrays replaced by growth) is flushed first, so the figure is what the
/// structure holds, not garbage awaiting collection.
pub fn bytes_per_entry<T>(n: usize, build: impl FnOnce() -> T) -> (f64, f64) {
    flush_epoch();
    CountingAlloc::counting(true);
    let before = (CountingAlloc::live(), CountingAlloc::live_with_overhead());
    let value = build();
    flush_epoch();
    let after = (CountingAlloc::live(), CountingAlloc::live_with_overhead());
    CountingAlloc::counting(false);
    drop(value);
    (
        (after.0 - before.0) as f64 / n as f64,
        (after.1 - before.1) as f64 / n as f64,
    )
}

/// Runs crossbeam-epoch's collector until garbage retired so far by this
/// thread (and, with no other thread pinned, by any) has been freed.
pub fn flush_epoch() {
    for _ in 0..4096 {
        crossbeam_epoch::pin().flush();
    }
}
