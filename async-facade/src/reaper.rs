//! Closing what the manager holds: the reaper task and the sweeps it runs
//! (expiry, forgetting), and shutdown.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use connmgr_core::ConnectionStatus;
use parking_lot::Mutex;
use tokio::runtime;
use tokio::sync::Notify;
use tokio::task;

use crate::close;
use crate::dialer::Dialer;
use crate::event::Reason;
use crate::inner::Inner;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering, Weak};

impl<D: Dialer> Inner<D> {
    /// `shutdown`'s work, once its flag is set: closes every live and idle
    /// connection and disconnects every Connected peer.
    pub(crate) fn close_all(&self) {
        // Every live slot is retired under its record lock, after the flag
        // is set: a `go_live` that takes a record lock later sees the flag
        // and installs nothing.
        self.retire_all();
        // Every Connected peer, including those marked so by bookkeeping
        // alone (`update_status`), is Disconnected now, each under its
        // record lock. O(peers), once.
        self.table.for_each(|peer, info| {
            if info.status != ConnectionStatus::Connected {
                return;
            }
            let done = self.peers.with(peer, |map| {
                self.table
                    .compare_and_set(
                        peer,
                        ConnectionStatus::Connected,
                        ConnectionStatus::Disconnected,
                    )
                    .is_ok()
                    .then(|| Inner::watch_of(map, peer))
            });
            if let Some(watch) = done {
                self.emit(
                    *peer,
                    Some(ConnectionStatus::Connected),
                    Some(ConnectionStatus::Disconnected),
                    Reason::ShutDown,
                    watch,
                );
            }
        });
        // A put that lands after this clear takes its peer's record lock
        // afterwards, sees the flag and closes what it pooled.
        self.pool.clear();
        self.reapers.wake_all();
        // `connect`s waiting for a slot give up with `ShutDown`.
        self.admission.wake_waiter();
        // Done: a drain waiting for this close (a second call) goes on.
        self.closed.store(true, Ordering::SeqCst);
        self.lease_returned.notify_waiters();
    }

    /// Closes expired idle connections; forgets Disconnected or Failed
    /// peers untouched for `forget_after` with nothing pooled.
    pub(crate) fn reap(&self) -> usize {
        let closed = self.pool.reap();
        self.forget_stale();
        closed
    }

    /// Removes Disconnected or Failed peers untouched for `forget_after`
    /// with nothing pooled, live or leased, each under its record lock, and
    /// the records left holding nothing. O(peers).
    ///
    /// The table retires removed entries through crossbeam-epoch, whose
    /// collector frees a few bags of garbage per pin of *any* epoch user:
    /// after a large sweep the memory would come back only as unrelated
    /// code pinned. So a sweep that forgot peers flushes the collector
    /// itself ([`flush_epoch`]).
    pub(crate) fn forget_stale(&self) {
        let now = Instant::now();
        // Backoffs run on the runtime's clock (paused in tests).
        let tnow = tokio::time::Instant::now().into_std();
        let forget_after = self.config.forget_after;
        let mut forgot = 0;
        self.table.for_each(|peer, info| {
            let stale = matches!(
                info.status,
                ConnectionStatus::Disconnected | ConnectionStatus::Failed
            ) && now.saturating_duration_since(info.since) >= forget_after
                && self.pool.len_for(peer) == 0;
            if !stale {
                return;
            }
            let forgotten = self.peers.with(peer, |map| {
                // A tagged or protected peer is kept: the user asked for it.
                // So is one backing off: forgetting it would lift the
                // backoff.
                let busy = map.get(peer).is_some_and(|r| {
                    r.live.is_some()
                        || r.leases != 0
                        || r.dial.is_some()
                        || r.is_kept()
                        || r.backing_off(tnow).is_some()
                });
                // The sweep's view may be stale by now: forget the peer only
                // if its entry is the one judged stale (no change since, by
                // its generation stamp) and nothing was pooled meanwhile.
                let unchanged = self
                    .table
                    .info(peer)
                    .is_some_and(|now| now.generation == info.generation);
                if busy
                    || !unchanged
                    || self.pool.len_for(peer) != 0
                    || !self.table.remove_if_status(peer, info.status)
                {
                    return None;
                }
                let watch = Self::watch_of(map, peer);
                if let Some(r) = map.get_mut(peer) {
                    r.drop_expired_backoff(tnow);
                }
                self.tidy(map, peer);
                Some(watch)
            });
            if let Some(watch) = forgotten {
                forgot += 1;
                self.emit(*peer, Some(info.status), None, Reason::Forgotten, watch);
            }
        });
        flush_epoch(forgot);
        // Records whose peer has no status left (a cancelled first
        // `connect`, a watch whose receivers are gone).
        self.peers.for_each_shard(|map| {
            let idle: Vec<_> = map.keys().copied().collect();
            for peer in idle {
                if !self.table.contains_key(&peer) {
                    if let Some(r) = map.get_mut(&peer) {
                        r.drop_expired_backoff(tnow);
                    }
                }
                self.tidy(map, &peer);
            }
        });
    }
}

/// Objects the epoch collector frees per flush: up to 8 sealed bags of up
/// to 64 (crossbeam-epoch's `COLLECT_STEPS` and bag size).
const FREED_PER_FLUSH: usize = 8 * 64;

/// Makes crossbeam-epoch free what `retired` removals left in its garbage
/// queues: the calling thread's bag is sealed into the global queue, the
/// epoch advanced (once no thread is pinned in an older one) and the
/// expired bags freed, a few per flush; twice as many flushes as that
/// needs, for the records beside the entries, plus a few to advance the
/// epoch twice. About 100 ns per flush; nothing for `retired == 0`.
pub(crate) fn flush_epoch(retired: usize) {
    if retired == 0 {
        return;
    }
    for _ in 0..2 * retired.div_ceil(FREED_PER_FLUSH) + 4 {
        crossbeam_epoch::pin().flush();
    }
}

/// How many times its own cost a forget sweep waits before the next one:
/// sweeping takes at most 1/20 of a core, however many peers are tracked.
const SWEEP_COST_FACTOR: u32 = 20;

/// The manager's reapers: one per tokio runtime that has used it, so that
/// expiry never depends on a runtime that is no longer driven (a
/// current-thread runtime runs its tasks only inside `block_on`).
pub(crate) struct Reapers {
    /// Whether any reaper runs: the cheap check of most calls.
    any: AtomicBool,
    /// The runtimes that have a reaper, with each reaper's wake-up.
    running: Mutex<Vec<(runtime::Id, Arc<Notify>)>>,
    /// Bumped whenever a reaper leaves `running`: checks cached in
    /// [`CHECKED`] before that are stale.
    generation: AtomicU64,
    /// Real time before which no reaper sweeps for stale peers again.
    next_sweep: Mutex<Instant>,
    /// tokio time before which no reaper trims again: one pace for the
    /// manager, whichever runtimes run its reapers.
    next_trim: Mutex<tokio::time::Instant>,
    /// Distinguishes this manager in [`CHECKED`].
    id: u64,
}

/// Source of [`Reapers::id`].
static NEXT_MANAGER: AtomicU64 = AtomicU64::new(0);

/// What a thread last found: manager `manager` had a reaper on runtime
/// `runtime` at reaper generation `generation`, checked from task `task`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Checked {
    manager: u64,
    generation: u64,
    runtime: runtime::Id,
    task: Option<task::Id>,
}

thread_local! {
    /// The last check this thread made (see [`Inner::ensure_reaper`]).
    static CHECKED: Cell<Option<Checked>> = const { Cell::new(None) };
}

impl Reapers {
    pub(crate) fn new() -> Self {
        Self {
            any: AtomicBool::new(false),
            running: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            next_sweep: Mutex::new(Instant::now()),
            next_trim: Mutex::new(tokio::time::Instant::now()),
            id: NEXT_MANAGER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Wakes every reaper (a first idle connection, a shutdown, the
    /// manager's drop).
    pub(crate) fn wake_all(&self) {
        for (_, wake) in self.running.lock().iter() {
            wake.notify_one();
        }
    }
}

impl<D: Dialer> Inner<D> {
    /// Makes sure a reaper runs: with `anywhere`, on any runtime (one
    /// atomic load once one runs: the check of every call); else on the
    /// runtime this runs in (a pool put, a status that may be forgotten:
    /// the idle connection must expire, and the peer be forgotten, even if
    /// the runtime that started the first reaper is no longer driven).
    /// Outside a runtime it does nothing: a later call inside one starts
    /// it.
    ///
    /// The check "on this runtime" is cached per thread, valid until a
    /// reaper leaves: a call from the task that made the last check costs
    /// two thread-local reads and one atomic load; one from another task
    /// also looks up the current runtime's handle. Only a thread that has
    /// not checked this runtime since the last leave takes the short lock
    /// on the list of reapers. (tokio may give a finished task's id to a
    /// new task, even on another runtime; such a task skips the check, and
    /// the next call from any other task makes it.)
    ///
    /// The reaper is spawned after the lock is released: on a runtime that
    /// is shutting down, `spawn` drops the new task at once, and its drop
    /// takes that lock to leave the list again.
    pub(crate) fn ensure_reaper(&self, anywhere: bool) {
        let reapers = &self.reapers;
        if anywhere && reapers.any.load(Ordering::Acquire) {
            return;
        }
        let generation = reapers.generation.load(Ordering::Acquire);
        let task = task::try_id();
        let cached = CHECKED
            .try_with(Cell::get)
            .ok()
            .flatten()
            .filter(|c| c.manager == reapers.id && c.generation == generation);
        if !anywhere && task.is_some() && cached.is_some_and(|c| c.task == task) {
            return;
        }
        let Ok(handle) = runtime::Handle::try_current() else {
            return;
        };
        let here = handle.id();
        if cached.is_none_or(|c| c.runtime != here) {
            let wake = {
                let mut running = reapers.running.lock();
                if running.iter().any(|(id, _)| *id == here) {
                    None
                } else {
                    let wake = Arc::new(Notify::new());
                    running.push((here, Arc::clone(&wake)));
                    reapers.any.store(true, Ordering::Release);
                    Some(wake)
                }
            };
            if let Some(wake) = wake {
                handle.spawn(reaper(self.me.clone(), wake, here));
            }
        }
        let checked = Checked {
            manager: reapers.id,
            generation,
            runtime: here,
            task,
        };
        let _ = CHECKED.try_with(|c| c.set(Some(checked)));
    }

    /// Sweeps for stale peers if one is due by real time and no other
    /// reaper is sweeping; returns how long until the next sweep may run.
    /// The sweep is O(peers), so the wait after it is at least
    /// [`SWEEP_COST_FACTOR`] times what it cost, and at least the sweep
    /// interval (`forget_after`, at most 60 s). It runs on the reaper's
    /// task, with no blocking-pool round trip, so tokio time alone drives
    /// the reaper; the factor bounds the share of a worker it takes.
    fn sweep_if_due(&self) -> Duration {
        let interval = self.config.forget_after.min(Duration::from_secs(60));
        if self.table.count(ConnectionStatus::Disconnected) == 0
            && self.table.count(ConnectionStatus::Failed) == 0
        {
            return interval;
        }
        let Some(mut next) = self.reapers.next_sweep.try_lock() else {
            return interval; // another reaper sweeps now
        };
        let start = Instant::now();
        if start < *next {
            return *next - start;
        }
        close::swallowing(|| self.forget_stale());
        let spacing = interval.max(start.elapsed() * SWEEP_COST_FACTOR);
        *next = Instant::now() + spacing;
        spacing
    }
}

/// A reaper: sleeps until the next idle connection expires (or a new one
/// goes idle, or the forget sweep is due), closes what expired, and ends
/// when the manager is dropped or shut down. Holds the manager weakly, and
/// no strong reference across a sleep. One runs on each runtime that used
/// the manager ([`Inner::ensure_reaper`]); they share the pool, whose
/// reaping is safe to race.
///
/// If the task is dropped before it ends by itself (its runtime shut
/// down), it leaves the manager's list of reapers on the way out, so the
/// next call made on a live runtime starts one there. The guard exists
/// from the moment the future is made, so a task dropped before its first
/// poll leaves too.
pub(crate) fn reaper<D: Dialer>(
    weak: Weak<Inner<D>>,
    wake: Arc<Notify>,
    runtime: runtime::Id,
) -> impl Future<Output = ()> {
    let leave = LeaveOnDrop(Some((weak.clone(), runtime)));
    async move {
        reap_until_gone(weak, wake).await;
        leave.disarm();
    }
}

/// Removes a reaper from its manager's list when dropped armed (see
/// [`reaper`]).
struct LeaveOnDrop<D: Dialer>(Option<(Weak<Inner<D>>, runtime::Id)>);

impl<D: Dialer> LeaveOnDrop<D> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<D: Dialer> Drop for LeaveOnDrop<D> {
    fn drop(&mut self) {
        let Some((weak, id)) = self.0.take() else {
            return;
        };
        if let Some(inner) = weak.upgrade() {
            let mut running = inner.reapers.running.lock();
            running.retain(|(r, _)| *r != id);
            inner
                .reapers
                .any
                .store(!running.is_empty(), Ordering::Release);
            inner.reapers.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Least time between two background trims of a manager.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

impl<D: Dialer> Inner<D> {
    /// The background trim, if one is due for the manager (by tokio time)
    /// and no other reaper trims now; returns when the next may run. A
    /// pass walks every record, so the wait after it is at least
    /// [`SWEEP_COST_FACTOR`] times what it cost, and at least
    /// [`TRIM_INTERVAL`]: while protected peers or connections in their
    /// grace period keep the manager above `high` with nothing to trim,
    /// the passes that find so take a bounded share of a worker.
    fn trim_if_due(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let Some(mut next) = self.reapers.next_trim.try_lock() else {
            return now + TRIM_INTERVAL; // another reaper trims now
        };
        if now < *next {
            return *next;
        }
        let start = Instant::now();
        close::swallowing(|| self.trim(true));
        *next = now + TRIM_INTERVAL.max(start.elapsed() * SWEEP_COST_FACTOR);
        *next
    }
}

async fn reap_until_gone<D: Dialer>(weak: Weak<Inner<D>>, wake: Arc<Notify>) {
    let mut next_sweep = tokio::time::Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.shut_down.load(Ordering::Acquire) {
            return;
        }
        // A destructor panic is caught and dropped (the hook reported
        // it): the reaper goes on.
        let expired = close::swallowing(|| inner.pool.reap());
        if expired > 0 {
            tracing::debug!(
                target: "connmgr",
                count = expired,
                reason = "pool_timeout",
                "idle connections expired"
            );
        }
        let now = tokio::time::Instant::now();
        if now >= next_sweep {
            next_sweep = now + inner.sweep_if_due();
        }
        // Above the high watermark: trim, at most once per interval; still
        // above it after (protected peers, connections in their grace
        // period), look again an interval later.
        let mut due = next_sweep;
        // Kept peers off Connected: redialed, or looked at again when due.
        if let Some(at) = inner.redial_kept() {
            due = due.min(at);
        }
        if inner.over_high() {
            let next_trim = inner.trim_if_due();
            if inner.over_high() {
                due = due.min(next_trim);
            }
        }
        // Leaves a wake-up request when nothing is idle; `Notify` keeps a
        // wake-up that comes before we wait.
        let wake_at = match inner.pool.watch_next_expiry() {
            Some(at) => tokio::time::Instant::from_std(at).min(due),
            None => due,
        };
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = wake.notified() => {}
        }
    }
}
