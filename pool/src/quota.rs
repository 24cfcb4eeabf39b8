//! The total cap, striped: units of `max_idle_total` are lent to per-thread
//! stripes in batches, so a put and a take on one thread touch only that
//! thread's cache line.
//!
//! # Invariant
//!
//! Every unit of the cap is, at any instant, in exactly one place: the
//! global `free` pool, one stripe's `spare`, the hands of a thread that is
//! moving it (a *transfer*), or *used* (held by an idle connection or a put
//! in flight). Units move only by atomic read-modify-writes, so the used
//! count never exceeds the cap: the cap holds exactly.
//!
//! # Refusals
//!
//! A reservation takes a unit from the caller's stripe (the fast path), or
//! else borrows a batch from `free`, or else steals the spare units of the
//! other stripes. It is refused only after a pass that found all of them
//! empty while no transfer was under way, as witnessed by the counts of
//! transfers started and finished being balanced before the pass and
//! unchanged (but for the caller's own) after it. So with no concurrent operation a refusal
//! means the cap is reached; under concurrency a put near the cap can be
//! refused while a take gives a unit back, as with one counter. A pass
//! that sees a transfer is retried, at most [`PASSES`] times: a thread
//! descheduled in the middle of a transfer can make a put near the cap be
//! refused, but never block it (reservations stay lock-free).
//!
//! Transfers (borrowing, stealing, returning a surplus) are the only steps
//! that touch shared cache lines (`free`, `moves`, other stripes). A thread
//! that alternates puts and takes never transfers.

use crossbeam_utils::CachePadded;

use crate::sync::{spin_loop, AtomicU64, AtomicUsize, Ordering};

/// Units a stripe borrows from `free` at a time; a stripe holding
/// `2 × BATCH` spare units gives `BATCH` back.
const BATCH: usize = if cfg!(loom) { 2 } else { 32 };
/// Passes before a reservation is refused while transfers are under way.
pub(crate) const PASSES: usize = if cfg!(loom) { 2 } else { 16 };

/// Transfer counters. A pass is conclusive if, read before it, `finished`
/// equals `started` (nothing in flight), and, read after it, both grew by
/// exactly the caller's own transfers (nothing else started meanwhile).
#[derive(Debug)]
struct Moves {
    started: AtomicU64,
    finished: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Quota {
    cap: usize,
    /// Units not lent to any stripe.
    free: CachePadded<AtomicUsize>,
    moves: CachePadded<Moves>,
    /// Units lent to each stripe and not used.
    spare: Box<[CachePadded<AtomicUsize>]>,
}

impl Quota {
    /// A quota of `cap` units over `stripes` stripes (a power of two).
    pub(crate) fn new(cap: usize, stripes: usize) -> Self {
        Self {
            cap,
            free: CachePadded::new(AtomicUsize::new(cap)),
            moves: CachePadded::new(Moves {
                started: AtomicU64::new(0),
                finished: AtomicU64::new(0),
            }),
            spare: (0..stripes)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
        }
    }

    /// Takes one unit for the caller on `stripe`; `false` if the cap is
    /// reached (see the module docs for the exact meaning).
    #[inline]
    pub(crate) fn reserve(&self, stripe: usize) -> bool {
        take_one(&self.spare[stripe]) || self.reserve_slow(stripe)
    }

    #[cold]
    fn reserve_slow(&self, stripe: usize) -> bool {
        let own = &self.spare[stripe];
        for _ in 0..PASSES {
            let started = self.moves.started.load(Ordering::SeqCst);
            let finished = self.moves.finished.load(Ordering::SeqCst);
            let mut ours = 0;
            if take_one(own) || self.grab(&self.free, BATCH, own, &mut ours) {
                return true;
            }
            let n = self.spare.len();
            for i in 1..n {
                let other = &self.spare[(stripe + i) & (n - 1)];
                if self.grab(other, usize::MAX, own, &mut ours) {
                    return true;
                }
            }
            if started == finished
                && self.moves.started.load(Ordering::SeqCst) == started + ours
                && self.moves.finished.load(Ordering::SeqCst) == finished + ours
            {
                return false;
            }
            spin_loop();
        }
        false
    }

    /// Moves up to `max` units from `from` to the caller: one for its
    /// reservation, the rest into `own`. Counts the transfer in `moves`
    /// (and in `ours`) if there was anything to take. Returns whether the
    /// caller got a unit.
    fn grab(&self, from: &AtomicUsize, max: usize, own: &AtomicUsize, ours: &mut u64) -> bool {
        let mut cur = from.load(Ordering::SeqCst);
        if cur == 0 {
            return false;
        }
        *ours += 1;
        self.moves.started.fetch_add(1, Ordering::SeqCst);
        let got = loop {
            if cur == 0 {
                break 0;
            }
            let n = cur.min(max);
            match from.compare_exchange_weak(cur, cur - n, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break n,
                Err(now) => cur = now,
            }
        };
        if got > 1 {
            own.fetch_add(got - 1, Ordering::SeqCst);
        }
        self.moves.finished.fetch_add(1, Ordering::SeqCst);
        got > 0
    }

    /// Gives back one unit, to the caller's `stripe`. A stripe that holds
    /// `2 × BATCH` spare units returns `BATCH` of them to `free`.
    #[inline]
    pub(crate) fn release(&self, stripe: usize) {
        let own = &self.spare[stripe];
        let prev = own.fetch_add(1, Ordering::AcqRel);
        if prev + 1 >= 2 * BATCH {
            self.give_back(own);
        }
    }

    #[cold]
    fn give_back(&self, own: &AtomicUsize) {
        self.moves.started.fetch_add(1, Ordering::SeqCst);
        let mut cur = own.load(Ordering::SeqCst);
        while cur >= BATCH {
            match own.compare_exchange_weak(cur, cur - BATCH, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    self.free.fetch_add(BATCH, Ordering::SeqCst);
                    break;
                }
                Err(now) => cur = now,
            }
        }
        self.moves.finished.fetch_add(1, Ordering::SeqCst);
    }

    /// Units used (idle connections and puts in flight): exact when no
    /// operation is running; while some are, an estimate within `0..=cap`
    /// (the stripes are read one after the other). O(stripes).
    pub(crate) fn used(&self) -> usize {
        let unused = self
            .spare
            .iter()
            .fold(self.free.load(Ordering::Acquire), |sum, s| {
                sum.saturating_add(s.load(Ordering::Acquire))
            });
        self.cap.saturating_sub(unused)
    }

    /// Bytes of the stripes.
    pub(crate) fn memory_usage(&self) -> usize {
        self.spare.len() * std::mem::size_of::<CachePadded<AtomicUsize>>()
    }
}

/// Takes one unit from `spare` if it has any.
#[inline]
fn take_one(spare: &AtomicUsize) -> bool {
    let mut cur = spare.load(Ordering::Relaxed);
    while cur > 0 {
        match spare.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}
