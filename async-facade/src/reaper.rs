//! Closing what the manager holds: the reaper task and the sweeps it runs
//! (expiry, forgetting), and shutdown.

use std::future::Future;
use std::time::{Duration, Instant};

use connmgr_core::ConnectionStatus;
use tokio::sync::Notify;

use crate::close;
use crate::dialer::Dialer;
use crate::inner::Inner;
use crate::sync::{Arc, Ordering, Weak};

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
                    watch,
                );
            }
        });
        // A put that lands after this clear takes its peer's record lock
        // afterwards, sees the flag and closes what it pooled.
        self.pool.clear();
        self.reaper_wake.notify_one();
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
    pub(crate) fn forget_stale(&self) {
        let now = Instant::now();
        let forget_after = self.config.forget_after;
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
                let busy = map
                    .get(peer)
                    .is_some_and(|r| r.live.is_some() || r.leases != 0 || r.dial.is_some());
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
                self.tidy(map, peer);
                Some(watch)
            });
            if let Some(watch) = forgotten {
                self.emit(*peer, Some(info.status), None, watch);
            }
        });
        // Records whose peer has no status left (a cancelled first
        // `connect`, a watch whose receivers are gone).
        self.peers.for_each_shard(|map| {
            let idle: Vec<_> = map.keys().copied().collect();
            for peer in idle {
                self.tidy(map, &peer);
            }
        });
    }
}

/// The reaper: sleeps until the next idle connection expires (or a new one
/// goes idle, or the forget sweep is due), closes what expired, and ends
/// when the manager is dropped or shut down. Holds the manager weakly, and
/// no strong reference across a sleep.
///
/// If the task is dropped before it ends by itself (the runtime that ran it
/// shut down), it clears `reaper_started` on the way out, so the next call
/// made inside a live runtime starts a new reaper. The guard exists from
/// the moment the future is made, so a task dropped before its first poll
/// clears the flag too.
pub(crate) fn reaper<D: Dialer>(
    weak: Weak<Inner<D>>,
    wake: Arc<Notify>,
) -> impl Future<Output = ()> {
    let restart = RestartOnDrop(Some(weak.clone()));
    async move {
        reap_until_gone(weak, wake).await;
        restart.disarm();
    }
}

/// Clears the manager's `reaper_started` when dropped armed (see
/// [`reaper`]).
struct RestartOnDrop<D: Dialer>(Option<Weak<Inner<D>>>);

impl<D: Dialer> RestartOnDrop<D> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<D: Dialer> Drop for RestartOnDrop<D> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take().and_then(|weak| weak.upgrade()) {
            inner.reaper_started.store(false, Ordering::Release);
        }
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
        close::swallowing(|| inner.pool.reap());
        let now = tokio::time::Instant::now();
        if now >= next_sweep {
            next_sweep = now + inner.config.forget_after.min(Duration::from_secs(60));
            if inner.table.count(ConnectionStatus::Disconnected) > 0
                || inner.table.count(ConnectionStatus::Failed) > 0
            {
                // O(peers): off the async workers. The strong reference
                // lives only as long as the sweep.
                let sweeper = Arc::clone(&inner);
                drop(inner);
                let _ = tokio::task::spawn_blocking(move || {
                    close::swallowing(|| sweeper.forget_stale())
                })
                .await;
                continue;
            }
        }
        // Leaves a wake-up request when nothing is idle; `Notify` keeps a
        // wake-up that comes before we wait.
        let wake_at = match inner.pool.watch_next_expiry() {
            Some(at) => tokio::time::Instant::from_std(at).min(next_sweep),
            None => next_sweep,
        };
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = wake.notified() => {}
        }
    }
}
