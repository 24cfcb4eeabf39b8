//! Persistent peers (`keep_connected`, as kaspad's permanent peers): the
//! reapers redial each kept peer whenever it is not Connected, with its
//! dial backoff between tries.
//!
//! The kept peers are listed in [`Kept`] (the reapers walk the list; the
//! peer's record carries the flag that keeps it from being forgotten).
//! A redial is a `connect` spawned on the reaper's runtime, one at a time
//! per peer: the list marks the peer as being redialed until the task
//! ends. Each status change of a kept peer away from Connected wakes the
//! reapers; so does the end of a redial, after which a reaper looks again:
//! at once, or when the peer's dial backoff (or, for a refusal that
//! carries no backoff, such as a full limit, the backoff's initial delay)
//! has passed.

use std::collections::HashMap;
use std::time::Duration;

use connmgr_core::{ConnectionStatus, PeerId};
use parking_lot::Mutex;

use crate::dialer::Dialer;
use crate::inner::Inner;
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::{ConnectionManager, Error};

/// What the reapers know of one kept peer.
#[derive(Clone, Copy, Debug, Default)]
struct Keeping {
    /// A redial task runs for it.
    redialing: bool,
    /// No redial before this (after a redial that failed).
    retry_at: Option<tokio::time::Instant>,
    /// Redials failed in a row, for the doubling of `retry_at`.
    failures: u32,
}

/// The kept peers.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    peers: Mutex<HashMap<PeerId, Keeping>>,
    /// How many: the cheap check on every status change.
    count: AtomicUsize,
}

impl Kept {
    /// Kept peers now.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether `peer` is listed (a short lock of the list, only while any
    /// peer is).
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.len() > 0 && self.peers.lock().contains_key(peer)
    }
}

/// The delay before a kept peer whose redial failed `failures` times in a
/// row is tried again: the dial backoff's schedule (1 s .. 5 min if it is
/// off), doubling, without jitter. With the dial backoff on, a failed dial
/// also sets the peer's own backoff, which the redial waits out as well.
fn retry_delay(config: &crate::Config, failures: u32) -> Duration {
    let (initial, max) = config
        .dial_backoff
        .unwrap_or((Duration::from_secs(1), Duration::from_secs(300)));
    let doublings = failures.saturating_sub(1).min(31);
    initial.saturating_mul(1 << doublings).min(max)
}

/// Ends a redial: clears the peer's `redialing` mark (and sets when it is
/// tried again, if the redial failed) and wakes the reapers, whether the
/// task ran to its end or was dropped with its runtime.
struct RedialDone<D: Dialer> {
    inner: Arc<Inner<D>>,
    peer: PeerId,
    /// The redial's outcome: `None` if it never got one.
    outcome: Option<Result<(), Error>>,
}

impl<D: Dialer> Drop for RedialDone<D> {
    fn drop(&mut self) {
        let inner = &self.inner;
        if let Some(k) = inner.kept.peers.lock().get_mut(&self.peer) {
            k.redialing = false;
            match &self.outcome {
                Some(Ok(())) => k.failures = 0,
                // Refusals that carry their own wait, or end keeping; or
                // no outcome (the task was dropped with its runtime): the
                // next reaper pass, on a live runtime, tries again.
                None
                | Some(Err(Error::BackingOff { .. } | Error::Blocked { .. } | Error::ShutDown)) => {
                }
                // Any other failure (a dial error or timeout, a full
                // limit): tried again later, the delay doubling.
                Some(Err(_)) => {
                    k.failures = k.failures.saturating_add(1);
                    k.retry_at =
                        Some(tokio::time::Instant::now() + retry_delay(&inner.config, k.failures));
                }
            }
        }
        inner.reapers.wake_all();
    }
}

impl<D: Dialer> Inner<D> {
    /// Starts keeping `peer` connected. The record's flag and the list
    /// change together, under the list's lock (then the record's: the
    /// order the reapers' pass takes them in), so they always agree.
    pub(crate) fn keep(&self, peer: PeerId) {
        {
            let mut peers = self.kept.peers.lock();
            self.with_record(&peer, |r| r.keep = true);
            peers.entry(peer).or_default();
            self.kept.count.store(peers.len(), Ordering::Release);
        }
        self.ensure_reaper(true);
        self.reapers.wake_all();
    }

    /// Stops keeping `peer` connected; a redial in flight still ends.
    pub(crate) fn stop_keeping(&self, peer: &PeerId) {
        let mut peers = self.kept.peers.lock();
        self.with_existing(peer, |r| r.keep = false);
        peers.remove(peer);
        self.kept.count.store(peers.len(), Ordering::Release);
    }

    /// Whether `peer` is kept, from its record (its own lock, no global
    /// one): for `emit`, after every record lock is released.
    pub(crate) fn is_kept_connected(&self, peer: &PeerId) -> bool {
        self.kept.len() > 0
            && self
                .peers
                .with(peer, |map| map.get(peer).is_some_and(|r| r.keep))
    }

    /// A reaper's pass over the kept peers: spawns a redial (on this
    /// runtime) for each one that is not Connected, not blocked, not being
    /// redialed and not waiting out a backoff; returns when the next one
    /// waiting is due. O(kept peers), each a lock-free status read and a
    /// short hold of its record lock.
    pub(crate) fn redial_kept(self: &Arc<Self>) -> Option<tokio::time::Instant> {
        if self.kept.len() == 0 || self.shut_down.load(Ordering::Acquire) {
            return None;
        }
        let now = tokio::time::Instant::now();
        let mut due: Option<tokio::time::Instant> = None;
        let mut later = |at| due = Some(due.map_or(at, |d: tokio::time::Instant| d.min(at)));
        let mut start = Vec::new();
        {
            let mut peers = self.kept.peers.lock();
            for (peer, k) in peers.iter_mut() {
                if k.redialing || self.table.get(peer) == Some(ConnectionStatus::Connected) {
                    continue;
                }
                if let Some(at) = k.retry_at.filter(|&at| at > now) {
                    later(at);
                    continue;
                }
                let (blocked, until) = self
                    .peers
                    .with(peer, |map| {
                        // Not redialed: blocked, or no longer flagged kept.
                        map.get(peer)
                            .map(|r| (r.blocked || !r.keep, r.backing_off(now.into_std())))
                    })
                    .unwrap_or((false, None));
                if blocked {
                    continue;
                }
                if let Some(until) = until {
                    later(tokio::time::Instant::from_std(until));
                    continue;
                }
                k.redialing = true;
                k.retry_at = None;
                start.push(*peer);
            }
        }
        for peer in start {
            let manager = ConnectionManager::from_inner(Arc::clone(self));
            let done = RedialDone {
                inner: Arc::clone(self),
                peer,
                outcome: None,
            };
            tokio::spawn(async move {
                // The whole guard moves in: dropped with the task, however
                // it ends.
                let mut done = done;
                done.outcome = Some(manager.connect(peer).await);
            });
        }
        due
    }
}

impl<D: Dialer> ConnectionManager<D> {
    /// Keeps `peer` connected, as kaspad's permanent peers: whenever it is
    /// not Connected (never connected yet, disconnected, failed, trimmed,
    /// its lease discarded), the manager redials it by itself, on a task
    /// of the runtime its reaper runs on, one dial at a time, with the
    /// peer's dial backoff ([`Builder::dial_backoff`](crate::Builder::dial_backoff))
    /// between failed tries; besides, each failed redial (a dial error or
    /// timeout, a full limit) waits before the next, doubling from the
    /// backoff's initial delay up to its max (1 s to 5 min if the backoff
    /// is off), so a kept peer is never redialed in a tight loop. A
    /// blocked peer is not redialed until unblocked. The manager
    /// learns that a live connection broke when its status leaves
    /// Connected (a discarded lease, a read or write through a lease cut
    /// short, `update_status`); it does not probe live connections. Kept
    /// peers are never forgotten. A redial holds the manager for the
    /// length of its `connect` (a wait for a slot, if
    /// [`wait_for_slot`](crate::Builder::wait_for_slot) is set, and the
    /// dial, at most the dial timeout) after the last handle is dropped. Keeping a kept peer again changes nothing.
    ///
    /// Needs a tokio runtime to have run a call of this manager (this one,
    /// if called inside one): redials run on the reapers' runtimes.
    ///
    /// **Progress:** a short hold of the peer's record lock and of the
    /// list of kept peers; wakes the reapers.
    pub fn keep_connected(&self, peer: PeerId) {
        self.inner.keep(peer);
    }

    /// Stops keeping `peer` connected: it is no longer redialed (a redial
    /// in flight still ends, connected or not), and it may be forgotten
    /// again. Its connection, if any, stays.
    ///
    /// **Progress:** a short hold of the list of kept peers and of the
    /// peer's record lock.
    pub fn stop_keeping(&self, peer: &PeerId) {
        self.inner.stop_keeping(peer);
    }
}
