//! Tags, protection and trimming (go-libp2p's connection manager, on the
//! peers' records).
//!
//! A peer's tags, their sum (its score) and its protections live in its
//! record, connected or not, and keep the record (and the peer's status)
//! from being forgotten. Trimming walks the records once, each shard under
//! its lock for the length of its walk, and collects the candidates; it
//! picks the lowest scores with a selection (no sort of the whole set, no
//! lock held), then closes each pick under its record lock after checking
//! again that it is still a candidate. One trim runs at a time, so two
//! concurrent trims never close below the low watermark together.

use std::time::Instant;

use connmgr_core::{ConnectionStatus, PeerId};

use crate::dialer::Dialer;
use crate::inner::Inner;
use crate::peers::Key;
use crate::Reason;

/// A connection trimming may close: its peer's score, the peer, and the
/// id of the live slot (so a newer connection is never closed in its
/// stead).
type Candidate = (i64, PeerId, u64);

impl<D: Dialer> Inner<D> {
    /// Runs `f` on `peer`'s record, made if it has none.
    pub(crate) fn with_record<R>(
        &self,
        peer: &PeerId,
        f: impl FnOnce(&mut crate::inner::Rec<D>) -> R,
    ) -> R {
        self.peers.with(peer, |map| f(self.record(map, *peer)))
    }

    /// Runs `f` on `peer`'s record if it has one (`None` if not), and frees
    /// the record if it is left holding nothing.
    pub(crate) fn with_existing<R>(
        &self,
        peer: &PeerId,
        f: impl FnOnce(&mut crate::inner::Rec<D>) -> R,
    ) -> Option<R> {
        self.peers.with(peer, |map| {
            let r = f(map.get_mut(peer)?);
            self.tidy(map, peer);
            Some(r)
        })
    }

    /// Whether more than `high` unprotected peers with a live connection
    /// are Connected, by the cheap bound first: Connected peers in all.
    pub(crate) fn over_high(&self) -> bool {
        self.admission
            .high()
            .is_some_and(|high| self.table.count(ConnectionStatus::Connected) > high)
    }

    /// Trims down to the low watermark: `only_over_high` (the background
    /// trim) does so only when more than `high` unprotected peers are
    /// Connected. Returns the connections closed.
    ///
    /// Counted toward the watermarks: Connected peers with a live
    /// connection and no protection. The excess is counted among those
    /// past their grace period (as go-libp2p does: a burst of new
    /// connections is not trimmed, nor does it make older ones trimmed in
    /// its stead); of these, those not leased right now are the
    /// candidates, lowest score first.
    pub(crate) fn trim(&self, only_over_high: bool) -> usize {
        let Some((low, high)) = self.admission.limits().watermarks else {
            return 0;
        };
        // The background trim skips a round while another trim runs (it
        // would find nothing left to close); `trim_now` waits for it.
        let _one_at_a_time = if only_over_high {
            match self.trimming.try_lock() {
                Some(guard) => guard,
                None => return 0,
            }
        } else {
            self.trimming.lock()
        };
        if self.shut_down.load(crate::sync::Ordering::Acquire) {
            return 0;
        }
        let now = tokio::time::Instant::now().into_std();
        let grace = self.config.grace_period;
        let (mut unprotected, mut past_grace) = (0, 0);
        let mut candidates: Vec<Candidate> = Vec::new();
        self.peers.for_each_shard(|map| {
            for (peer, r) in map.iter() {
                let Some(live) = &r.live else { continue };
                if !r.protections.is_empty()
                    || self.table.get(peer) != Some(ConnectionStatus::Connected)
                {
                    continue;
                }
                unprotected += 1;
                if in_grace(live.since, now, grace) {
                    continue;
                }
                past_grace += 1;
                if live.conn.is_some() {
                    candidates.push((r.score, *peer, live.id));
                }
            }
        });
        if only_over_high && unprotected <= high {
            return 0;
        }
        let excess = usize::saturating_sub(past_grace, low);
        if excess < candidates.len() {
            candidates.select_nth_unstable_by_key(excess, |c| c.0);
            candidates.truncate(excess);
        }
        let trimmed = candidates
            .into_iter()
            .filter(|&(_, peer, slot)| self.trim_one(self.peers.key(peer), slot, now))
            .count();
        if trimmed > 0 {
            tracing::info!(
                target: "connmgr",
                trimmed,
                low,
                high,
                unprotected,
                "trimmed"
            );
        }
        trimmed
    }

    /// Closes `key`'s live connection if it is still slot `slot`, idle in
    /// its slot (not leased), unprotected, past its grace period and
    /// Connected: the peer goes Disconnected, the connection is closed, not
    /// pooled. Whether it did.
    fn trim_one(&self, key: Key, slot: u64, now: Instant) -> bool {
        use ConnectionStatus::{Connected, Disconnected};
        let peer = key.peer;
        let grace = self.config.grace_period;
        let trimmed = self.peers.at(&key, |map| {
            let r = map.get_mut(&peer)?;
            let live = r.live.as_ref()?;
            if live.id != slot
                || live.conn.is_none()
                || !r.protections.is_empty()
                || in_grace(live.since, now, grace)
            {
                return None;
            }
            self.table
                .compare_and_set(&peer, Connected, Disconnected)
                .ok()?;
            Some((r.live.take(), Self::watch_in(r)))
        });
        let Some((slot, watch)) = trimmed else {
            return false;
        };
        tracing::debug!(
            target: "connmgr",
            peer = %peer,
            reason = %Reason::Trimmed,
            "trimming closes the connection"
        );
        // Closed here, after the lock; its units of the limits go back. A
        // destructor panic is dropped once the hook has reported it.
        crate::close::swallowing(|| drop(slot));
        // Disconnected now: forgotten in time by this runtime's reaper.
        self.ensure_reaper(false);
        self.emit(
            peer,
            Some(Connected),
            Some(Disconnected),
            Reason::Trimmed,
            watch,
        );
        true
    }
}

/// Whether a connection live since `since` is still in its grace period.
fn in_grace(since: Instant, now: Instant, grace: std::time::Duration) -> bool {
    now.saturating_duration_since(since) < grace
}
