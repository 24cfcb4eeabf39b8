//! One dial per peer: the protocol `connect` uses to share a dial between
//! concurrent callers, written against two small traits so that it builds
//! without tokio and its loom models (below) run this very `join` and
//! [`Leader`]. The loop around them is `connect`'s, restated in the models
//! in a few lines (status check, follow or lead, status re-check, dial,
//! publish); keep the two in step.
//!
//! The first caller for a peer registers a channel in the peer's record
//! and becomes the dial's [`Leader`]; later callers subscribe to that
//! channel and wait for its outcome. The leader takes the channel out of
//! the record *before* it publishes (so nobody subscribes after the outcome
//! is sent: such a waiter would see only the close, and go round again)
//! and, when it is cancelled instead, drops the channel on the spot, which
//! wakes every waiter with "closed": each goes round again, and one of them
//! leads the next attempt. A cancelled waiter only drops its own receiver,
//! which nobody else depends on. So no waiter is stranded and no wake-up is
//! lost (`docs/failure-modes.md` #5).

/// The sending half of a dial's outcome channel.
pub(crate) trait Channel: Sized {
    /// What the dial ends with.
    type Outcome;
    /// A waiter's receiving half. It must observe an outcome published after
    /// it subscribed, or the channel's closing (the sender dropped).
    type Rx;
    /// A fresh channel with no outcome yet.
    fn open() -> Self;
    /// A receiver for a waiter.
    fn subscribe(&self) -> Self::Rx;
    /// Sends the outcome to every receiver.
    fn publish(&self, outcome: Self::Outcome);
}

/// Where dials in flight are registered, by peer: a slot per peer behind
/// a lock (the manager's is the `dial` field of the peer's record).
pub(crate) trait DialMap {
    /// The channel type registered per peer.
    type Tx: Channel;
    /// How a peer is found: its id, or its id and where it lives.
    type Key: Copy + std::fmt::Debug;
    /// Runs `f` on `key`'s slot, under its lock.
    fn with<R>(&self, key: &Self::Key, f: impl FnOnce(&mut Option<Self::Tx>) -> R) -> R;
}

/// What a caller of [`join`] is to do.
pub(crate) enum Join<'a, M: DialMap> {
    /// Dial, then [`Leader::publish`] the outcome.
    Lead(Leader<'a, M>),
    /// Wait on this receiver for the leader's outcome; if the channel closes
    /// without one, call [`join`] again.
    Follow(<M::Tx as Channel>::Rx),
}

/// Joins the dial in flight to `peer`, or registers one and leads it. The
/// check, the registration and the subscription happen under the slot's
/// lock, as does the leader's removal, so a waiter always subscribes while
/// the channel is registered, hence before its outcome is published.
pub(crate) fn join<M: DialMap>(map: &M, peer: M::Key) -> Join<'_, M> {
    let follow = map.with(&peer, |dial| match dial {
        Some(tx) => Some(tx.subscribe()),
        None => {
            *dial = Some(M::Tx::open());
            None
        }
    });
    match follow {
        Some(rx) => Join::Follow(rx),
        None => Join::Lead(Leader { map, peer }),
    }
}

/// The leader of a shared dial. Dropped without [`publish`](Self::publish)
/// (its `connect` was cancelled), it removes and drops the dial's channel,
/// which wakes the waiters with "closed" so one of them takes over.
pub(crate) struct Leader<'a, M: DialMap> {
    map: &'a M,
    peer: M::Key,
}

impl<M: DialMap> Leader<'_, M> {
    /// Ends the dial: takes the channel out of its slot (later callers start
    /// a new dial), then sends `outcome` to everyone who joined.
    pub(crate) fn publish(self, outcome: <M::Tx as Channel>::Outcome) {
        if let Some(tx) = self.take() {
            tx.publish(outcome);
        }
        std::mem::forget(self);
    }

    fn take(&self) -> Option<M::Tx> {
        self.map.with(&self.peer, Option::take)
    }
}

impl<M: DialMap> Drop for Leader<'_, M> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

impl<M: DialMap> std::fmt::Debug for Leader<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader").field("peer", &self.peer).finish()
    }
}

/// Loom models of the protocol above (`docs/failure-modes.md` #5), run by `.ci/loom.sh`
/// (`--cfg loom`: the facade then builds only this module, without tokio).
/// A cancelled *follower* is not modelled: it only drops its own receiver,
/// which nobody waits on; the deterministic test in `tests/reliability.rs`
/// covers it.
/// The channel here is a small model of `tokio::sync::watch` on loom's
/// mutex and condvar with the two properties the protocol relies on: a
/// receiver sees an outcome published after it subscribed (not one
/// published before: like `watch::Sender::subscribe`, subscribing marks the
/// current value seen), and the sender's drop closes the channel.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use connmgr_core::PeerId;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    #[derive(Default)]
    struct State {
        version: u64,
        value: Option<u32>,
        closed: bool,
    }

    #[derive(Default)]
    struct Shared {
        state: Mutex<State>,
        changed: Condvar,
    }

    struct Tx(Arc<Shared>);

    struct Rx {
        shared: Arc<Shared>,
        seen: u64,
    }

    impl Rx {
        /// Blocks until an outcome newer than the subscription (`Some`) or
        /// the channel's closing (`None`).
        fn wait(self) -> Option<u32> {
            let mut st = self.shared.state.lock().unwrap();
            loop {
                if st.version != self.seen {
                    return st.value;
                }
                if st.closed {
                    return None;
                }
                st = self.shared.changed.wait(st).unwrap();
            }
        }
    }

    impl Channel for Tx {
        type Outcome = u32;
        type Rx = Rx;
        fn open() -> Self {
            Tx(Arc::new(Shared::default()))
        }
        fn subscribe(&self) -> Rx {
            let seen = self.0.state.lock().unwrap().version;
            Rx {
                shared: self.0.clone(),
                seen,
            }
        }
        fn publish(&self, outcome: u32) {
            let mut st = self.0.state.lock().unwrap();
            st.value = Some(outcome);
            st.version += 1;
            self.0.changed.notify_all();
        }
    }

    impl Drop for Tx {
        fn drop(&mut self) {
            self.0.state.lock().unwrap().closed = true;
            self.0.changed.notify_all();
        }
    }

    struct Map(Mutex<Option<Tx>>);

    impl DialMap for Map {
        type Tx = Tx;
        type Key = PeerId;
        fn with<R>(&self, _: &PeerId, f: impl FnOnce(&mut Option<Tx>) -> R) -> R {
            f(&mut self.0.lock().unwrap())
        }
    }

    const PEER: PeerId = PeerId::from_bytes([7; 32]);

    /// No dial has connected the peer yet.
    const NONE: usize = usize::MAX;

    /// `connect`'s loop over the protocol, with the peer's status reduced
    /// to `connected` (the number of the dial that connected it, or
    /// `NONE`): return at once if the peer is connected; else follow until
    /// an outcome arrives, or lead: check the status again (as
    /// `dial_as_leader` does), dial (numbered by `dials`), mark the peer
    /// connected and publish. A caller with `cancel` set drops its lead
    /// instead (its future was dropped mid-dial) and returns `None`.
    fn connect(
        map: &Map,
        dials: &AtomicUsize,
        connected: &AtomicUsize,
        cancel: bool,
    ) -> Option<u32> {
        loop {
            let c = connected.load(Ordering::Acquire);
            if c != NONE {
                return Some(c as u32);
            }
            match join(map, PEER) {
                Join::Follow(rx) => {
                    if let Some(outcome) = rx.wait() {
                        return Some(outcome);
                    }
                }
                Join::Lead(leader) => {
                    let c = connected.load(Ordering::Acquire);
                    if c != NONE {
                        leader.publish(c as u32);
                        return Some(c as u32);
                    }
                    let dial = dials.fetch_add(1, Ordering::Relaxed);
                    if cancel {
                        drop(leader);
                        return None;
                    }
                    connected.store(dial, Ordering::Release);
                    leader.publish(dial as u32);
                    return Some(dial as u32);
                }
            }
        }
    }

    /// `connect` (not cancelled) on a thread of its own.
    fn spawn_connect(
        map: &Arc<Map>,
        dials: &Arc<AtomicUsize>,
        connected: &Arc<AtomicUsize>,
    ) -> thread::JoinHandle<Option<u32>> {
        let (map, dials, connected) = (map.clone(), dials.clone(), connected.clone());
        thread::spawn(move || connect(&map, &dials, &connected, false))
    }

    /// Three callers race for one peer: exactly one dial is made, and every
    /// caller gets its outcome, whether it waited on the dial, arrived
    /// after it ended, or led and found the peer connected meanwhile.
    ///
    /// Broken once (locally, then reverted): the leader's second status
    /// check removed. Loom failed this model with two dials: a caller saw
    /// the peer not yet connected, then found no dial registered (the first
    /// had just ended) and dialed again.
    #[test]
    fn concurrent_connects_share_one_dial() {
        loom::model(|| {
            let map = Arc::new(Map(Mutex::new(None)));
            let dials = Arc::new(AtomicUsize::new(0));
            let connected = Arc::new(AtomicUsize::new(NONE));
            let others: Vec<_> = (0..2)
                .map(|_| spawn_connect(&map, &dials, &connected))
                .collect();
            let mine = connect(&map, &dials, &connected, false);
            for t in others {
                assert_eq!(t.join().unwrap(), mine);
            }
            assert_eq!(dials.load(Ordering::Relaxed), 1);
            assert!(map.0.lock().unwrap().is_none());
        });
    }

    /// The leader is cancelled while another caller waits on its dial: the
    /// waiter is woken (the channel closes), leads the next dial itself and
    /// finishes. Loom reports any execution in which it waits forever.
    ///
    /// Broken once (locally, then reverted): `Leader`'s drop leaving the
    /// channel registered (the `take` removed). Loom failed this model with
    /// a deadlock: the waiter blocked on a channel nobody would close.
    #[test]
    fn a_cancelled_leader_strands_no_waiter() {
        loom::model(|| {
            let map = Arc::new(Map(Mutex::new(None)));
            let dials = Arc::new(AtomicUsize::new(0));
            let connected = Arc::new(AtomicUsize::new(NONE));
            let waiter = spawn_connect(&map, &dials, &connected);
            let cancelled = connect(&map, &dials, &connected, true);
            let got = waiter.join().unwrap();
            // The waiter always ends with an outcome: it led from the start,
            // or it joined the cancelled lead and took over.
            assert!(got.is_some());
            match cancelled {
                // It led and was cancelled: the waiter dialed again.
                None => assert_eq!(dials.load(Ordering::Relaxed), 2),
                // The waiter led first and it followed: one dial, shared.
                Some(outcome) => {
                    assert_eq!(Some(outcome), got);
                    assert_eq!(dials.load(Ordering::Relaxed), 1);
                }
            }
            assert!(map.0.lock().unwrap().is_none());
        });
    }
}
