//! The record of one peer: everything the manager knows about a peer
//! besides its status word, and the transitions that change it.
//!
//! A record lives in [`Peers`](crate::peers::Peers), behind the lock of
//! its shard, and every method here runs under that lock: short, sync,
//! never across an `.await`. The methods only move values around; what
//! they take out (a live slot, a connection) is returned, so that the
//! caller drops it (closing a connection) after unlocking. No connection
//! destructor runs under a record lock, and the only user code that does
//! is `Dialer::abort_handle`, asked for in the step that takes a lease
//! (documented to be quick and not to call the manager), so the handle is
//! registered with the lease atomically.
//!
//! The status itself is written through to the lock-free status table by
//! the same locked step that changes the record, so that readers
//! (`get_status`) take no lock and see every transition whole.
//!
//! # The failure generation
//!
//! A `Failed` bumps its peer's [`generation`](Record::generation), and
//! only its peer's. A connection pooled for the peer carries the
//! generation read, under the lock, when it was decided to pool it
//! ([`Pooled`]); a lease carries the generation of its peer when it was
//! taken. A connection whose generation is older than its record's was
//! the peer's before a `Failed`, and is never handed out again:
//! [`admits`](Record::admits) refuses it when it comes out of the pool,
//! and [`end_lease`](Record::end_lease) closes a leased one. So the rule
//! "a failed peer's connections are not reused" needs no fence and no
//! state shared between peers: one lock orders a peer's transitions.
//!
//! This module is free of tokio, so that the protocol's loom model (below)
//! runs it under `--cfg loom`.

use std::time::Instant;

/// The types a record holds, chosen by the manager (tokio's channels and
/// the dialer's connection) or by a model (plain values).
pub(crate) trait Parts {
    /// A live connection.
    type Conn;
    /// What holds the live connection's units of the limits (connections
    /// and its direction).
    type Permit;
    /// The sending half of a dial in flight's outcome channel.
    type Dial;
    /// The sending half of the peer's status watch.
    type Watch;
    /// What the graceful drain runs to shut a leased connection down.
    type Abort;
}

/// Who opened a peer's live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer did: the caller accepted it and handed it to
    /// [`adopt`](crate::ConnectionManager::adopt).
    Inbound,
    /// This side did: [`connect`](crate::ConnectionManager::connect) dialed
    /// it, or reused an idle one.
    Outbound,
}

/// The peer's live connection: the one `connect` or `adopt` made live,
/// until a disconnect, a `Failed`, a trim or a newer connection retires it.
pub(crate) struct Live<P: Parts> {
    /// Unique per connection made live, so a lease acts only on the slot
    /// its connection came from, never on a newer connection to the peer.
    pub(crate) id: u64,
    /// The connection; `None` while it is leased.
    pub(crate) conn: Option<P::Conn>,
    /// Who opened it.
    pub(crate) direction: Direction,
    /// When it went live (the runtime's clock): trimming spares it for
    /// the grace period.
    pub(crate) since: Instant,
    /// Its units of the connection limits, freed when the slot is dropped.
    pub(crate) _permit: P::Permit,
}

/// An idle connection in the pool, with the generation of its peer when it
/// was pooled.
#[derive(Debug)]
pub(crate) struct Pooled<C> {
    pub(crate) generation: u64,
    pub(crate) conn: C,
}

/// What becomes of a leased connection when its lease ends (see
/// [`Record::end_lease`]).
#[derive(Debug)]
pub(crate) enum LeaseEnd<C> {
    /// It went back into its live slot.
    Home,
    /// Its slot is gone: it is to idle in the pool, with this generation.
    Pool(C, u64),
    /// It is to be closed.
    Close(C),
}

/// A peer's dial backoff: its failed dials in a row, and the time before
/// which it is not dialed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DialBackoff {
    pub(crate) failures: u32,
    pub(crate) until: Instant,
}

/// Everything the manager holds for one peer besides its status word: one
/// owner, one lock, for every piece of per-peer state.
pub(crate) struct Record<P: Parts> {
    /// The live connection, if any.
    pub(crate) live: Option<Live<P>>,
    /// Bumped by every `Failed` of this peer (see the module docs).
    pub(crate) generation: u64,
    /// Leases of this peer's connections not yet ended, whether their
    /// connection still has its live slot or lost it.
    pub(crate) leases: u32,
    /// The abort handles of the leases out that have one (see
    /// `Dialer::abort_handle`), each shared with its lease, which removes
    /// it when it ends.
    pub(crate) aborts: Vec<P::Abort>,
    /// The dial in flight, shared by every `connect` of the peer.
    pub(crate) dial: Option<P::Dial>,
    /// The units of the limits a dial in flight holds for the connection
    /// it will make: kept here, not by the dial, so that an `adopt` during
    /// the dial takes them over (the peer is counted once) and the dial,
    /// finding them gone when it lands, pools its connection.
    pub(crate) dial_units: Option<P::Permit>,
    /// The peer's status watch, while anyone holds a receiver.
    pub(crate) watch: Option<P::Watch>,
    /// The peer's tags and their values (a handful at most, in practice).
    pub(crate) tags: Vec<(Box<str>, i32)>,
    /// The sum of the tags' values, kept with them.
    pub(crate) score: i64,
    /// The tags the peer is protected under: while there is one, trimming
    /// never closes its connection.
    pub(crate) protections: Vec<Box<str>>,
    /// Failed dials in a row, and when the next may be made; `None` after
    /// a successful dial.
    pub(crate) backoff: Option<DialBackoff>,
    /// Blocked: no connection of the peer goes live, pooled or leased
    /// back, and the record is never forgotten while the flag is set.
    pub(crate) blocked: bool,
    /// Kept connected (`keep_connected`): the reapers redial the peer
    /// whenever it is not Connected, and the record is never forgotten.
    pub(crate) keep: bool,
}

impl<P: Parts> Default for Record<P> {
    fn default() -> Self {
        Self {
            live: None,
            generation: 0,
            leases: 0,
            aborts: Vec::new(),
            dial: None,
            dial_units: None,
            watch: None,
            tags: Vec::new(),
            score: 0,
            protections: Vec::new(),
            backoff: None,
            blocked: false,
            keep: false,
        }
    }
}

impl<P: Parts> Record<P> {
    /// Holds nothing that needs it (no live slot, lease, dial, or watch
    /// that `watched` says has receivers): the record may go, unless its
    /// peer still has a status or pooled connections, whose generation it
    /// keeps.
    pub(crate) fn is_idle(&self, watched: impl FnOnce(&P::Watch) -> bool) -> bool {
        self.live.is_none()
            && self.leases == 0
            && !self.is_kept()
            && self.backoff.is_none()
            && self.dial.is_none()
            && self.watch.as_ref().is_none_or(|w| !watched(w))
    }

    /// Tagged, protected, blocked or kept connected: the user asked the
    /// manager to remember the peer, so it is never forgotten.
    pub(crate) fn is_kept(&self) -> bool {
        !self.tags.is_empty() || !self.protections.is_empty() || self.blocked || self.keep
    }

    /// Sets `tag` to `value`.
    pub(crate) fn tag(&mut self, tag: &str, value: i32) {
        self.upsert(tag, |_| value);
    }

    /// Sets `tag` to `f(its value)` (`f(0)` if it has none).
    pub(crate) fn upsert(&mut self, tag: &str, f: impl FnOnce(i32) -> i32) {
        match self.tags.iter_mut().find(|(t, _)| &**t == tag) {
            Some((_, v)) => {
                let new = f(*v);
                self.score += i64::from(new) - i64::from(*v);
                *v = new;
            }
            None => {
                let new = f(0);
                self.score += i64::from(new);
                self.tags.push((tag.into(), new));
            }
        }
    }

    /// Removes `tag`, if the peer has it.
    pub(crate) fn untag(&mut self, tag: &str) {
        if let Some(i) = self.tags.iter().position(|(t, _)| &**t == tag) {
            let (_, v) = self.tags.swap_remove(i);
            self.score -= i64::from(v);
        }
    }

    /// Protects the peer under `tag` (again: no change).
    pub(crate) fn protect(&mut self, tag: &str) {
        if !self.protections.iter().any(|t| &**t == tag) {
            self.protections.push(tag.into());
        }
    }

    /// Removes the protection under `tag`; whether another tag still
    /// protects the peer.
    pub(crate) fn unprotect(&mut self, tag: &str) -> bool {
        self.protections.retain(|t| &**t != tag);
        !self.protections.is_empty()
    }

    /// The peer failed: its generation moves on (every connection it had
    /// before, pooled or leased, is stale from now on) and its live slot
    /// is taken out, for the caller to drop after unlocking. With
    /// `only_slot`, only if the live slot is that one (a lease's discard:
    /// a newer connection is left alone); `None` then means nothing
    /// happened.
    /// `fresh` is the new generation: larger than any the manager gave
    /// before, to this record or to an earlier record of the same peer, so
    /// a connection pooled under a record since freed never matches it.
    pub(crate) fn fail(&mut self, only_slot: Option<u64>, fresh: u64) -> Option<Option<Live<P>>> {
        if let Some(id) = only_slot {
            if self.live.as_ref().is_none_or(|l| l.id != id) {
                return None;
            }
        }
        debug_assert!(fresh > self.generation, "generations only grow");
        self.generation = fresh;
        Some(self.live.take())
    }

    /// When the peer may be dialed again, if that is after `now`.
    pub(crate) fn backing_off(&self, now: Instant) -> Option<Instant> {
        self.backoff.map(|b| b.until).filter(|&until| until > now)
    }

    /// A dial failed at `now`: one more failure in a row, and no dial
    /// before `now + delay(failures)`.
    pub(crate) fn dial_failed(
        &mut self,
        now: Instant,
        delay: impl FnOnce(u32) -> std::time::Duration,
    ) {
        let failures = self.backoff.map_or(0, |b| b.failures).saturating_add(1);
        self.backoff = Some(DialBackoff {
            failures,
            until: now + delay(failures),
        });
    }

    /// Forgets an expired backoff (the failures in a row too), so the
    /// record may go; one still running stays.
    pub(crate) fn drop_expired_backoff(&mut self, now: Instant) {
        if self.backing_off(now).is_none() {
            self.backoff = None;
        }
    }

    /// Whether a connection pooled with `generation` may go live: only if
    /// the peer has not failed since it was pooled.
    pub(crate) fn admits(&self, generation: u64) -> bool {
        generation == self.generation
    }

    /// Installs a live slot; returns the one it replaces (a slot left by
    /// bookkeeping over a Connected peer), for the caller to drop.
    pub(crate) fn install(&mut self, live: Live<P>) -> Option<Live<P>> {
        self.live.replace(live)
    }

    /// Takes the live connection for a lease: its slot id, the connection
    /// and the generation the lease carries. `Err(true)`: the connection is
    /// leased already; `Err(false)`: there is none.
    pub(crate) fn lease(&mut self) -> Result<(u64, P::Conn, u64), bool> {
        let live = self.live.as_mut().ok_or(false)?;
        let conn = live.conn.take().ok_or(true)?;
        self.leases += 1;
        Ok((live.id, conn, self.generation))
    }

    /// A lease of slot `slot`, taken at `generation`, ends, handing `conn`
    /// back. It goes back into its slot if the slot is still the peer's.
    /// Otherwise (the peer was disconnected, or connected anew, meanwhile)
    /// it is pooled if `may_pool` (the peer has a status other than
    /// Failed, and the manager runs), the peer is not blocked and has not
    /// failed since the lease was taken; else closed.
    pub(crate) fn end_lease(
        &mut self,
        slot: u64,
        generation: u64,
        conn: P::Conn,
        may_pool: bool,
    ) -> LeaseEnd<P::Conn> {
        self.leases -= 1;
        if let Some(live) = self.live.as_mut().filter(|l| l.id == slot) {
            if live.conn.is_none() {
                live.conn = Some(conn);
                return LeaseEnd::Home;
            }
        }
        if may_pool && !self.blocked && generation == self.generation {
            LeaseEnd::Pool(conn, generation)
        } else {
            LeaseEnd::Close(conn)
        }
    }

    /// A lease of slot `slot` ends with an operation through it cut short:
    /// its connection is closed by the caller, nothing about the peer is
    /// known to be wrong. If the slot is still the peer's, it is taken out
    /// (to drop after unlocking: the peer has no live connection any more);
    /// the generation stays, so the peer's pooled connections stay usable.
    pub(crate) fn cut_lease(&mut self, slot: u64) -> Option<Live<P>> {
        self.leases -= 1;
        self.live.take_if(|l| l.id == slot)
    }

    /// A lease of slot `slot` ends with its connection broken (discarded,
    /// or dropped while its thread panics): if the slot is still the
    /// peer's, the peer fails ([`fail`](Self::fail)). Returns the slot
    /// taken out (to drop after unlocking), `None` if the peer was left
    /// alone.
    pub(crate) fn discard_lease(&mut self, slot: u64, fresh: u64) -> Option<Option<Live<P>>> {
        self.leases -= 1;
        self.fail(Some(slot), fresh)
    }
}

/// A loom model of the record protocol: a `Failed` racing a put and a take
/// of the same peer's pooled connection. The pool is a model (a locked
/// list of [`Pooled`] values, whose put and take happen outside the record
/// lock, as the real pool's do); the record and its methods are the real
/// ones. Run by `.ci/loom.sh` (`--cfg loom`, the facade's `--lib` tests).
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    struct Model;
    impl Parts for Model {
        type Conn = u32;
        type Permit = ();
        type Dial = ();
        type Watch = ();
        type Abort = ();
    }

    /// The connection pooled before the race.
    const OLD: u32 = 1;
    /// The connection the racing put pools.
    const PUT: u32 = 2;

    /// Generation 0: connection `OLD` idles in the pool and `PUT` is
    /// leased. Three threads: a take (from the pool, then made live under
    /// the record lock if [`Record::admits`] it), the end of `PUT`'s lease
    /// (decided under the lock, pooled after it, as `Lease::drop` does),
    /// and a `Failed` (under the lock, then a drain of the pool). Whatever
    /// the interleaving, no connection the peer had before the `Failed`
    /// goes live after it, and the `Failed`'s drain or the put's re-check
    /// leaves nothing stale pooled.
    ///
    /// Checked once with each fix removed (locally, then reverted), at
    /// `LOOM_MAX_PREEMPTIONS=2`: with `admits` answering `true` whatever
    /// the generation, loom failed the model with "a connection from
    /// before the Failed went live" (the take held `OLD` while the
    /// `Failed` ran whole, then made it live); with the put's second look
    /// at the record removed, with "a stale connection stayed pooled"
    /// (`PUT` landed after the `Failed`'s drain).
    #[test]
    fn a_failed_racing_a_put_and_a_take_revives_nothing() {
        loom::model(|| {
            let record = Arc::new(Mutex::new(Record::<Model> {
                leases: 1,
                live: Some(Live {
                    id: 7,
                    conn: None,
                    direction: Direction::Outbound,
                    since: Instant::now(),
                    _permit: (),
                }),
                ..Record::default()
            }));
            let pool = Arc::new(Mutex::new(vec![Pooled {
                generation: 0,
                conn: OLD,
            }]));

            let taker = {
                let (record, pool) = (record.clone(), pool.clone());
                thread::spawn(move || {
                    let taken = pool.lock().unwrap().pop();
                    let pooled = taken?;
                    let r = record.lock().unwrap();
                    // Made live only if admitted: report the generation
                    // it went live at.
                    r.admits(pooled.generation).then_some(r.generation)
                })
            };
            let putter = {
                let (record, pool) = (record.clone(), pool.clone());
                thread::spawn(move || {
                    // The peer was disconnected: the slot is gone.
                    let end = {
                        let mut r = record.lock().unwrap();
                        r.live = None;
                        r.end_lease(7, 0, PUT, true)
                    };
                    if let LeaseEnd::Pool(conn, generation) = end {
                        pool.lock().unwrap().push(Pooled { generation, conn });
                        // The re-check: a Failed since the decision drains.
                        let stale = record.lock().unwrap().generation != generation;
                        if stale {
                            pool.lock().unwrap().clear();
                        }
                    }
                })
            };
            // The Failed, on this thread: its generation.
            let failed = {
                let mut r = record.lock().unwrap();
                let _slot = r.fail(None, 1);
                r.generation
            };
            // The drain, after the lock (closing runs no user code under
            // it): every idle connection of the peer.
            pool.lock().unwrap().clear();
            let live_at = taker.join().unwrap();
            putter.join().unwrap();
            if let Some(at) = live_at {
                assert!(at < failed, "a connection from before the Failed went live");
            }
            assert!(
                pool.lock().unwrap().iter().all(|p| p.generation == failed),
                "a stale connection stayed pooled"
            );
        });
    }

    /// A `block` racing the end of a lease whose slot is gone (the put
    /// decided under the record lock, made after it, then a second look at
    /// the record, as `Lease::drop` and `pool_put` do) and a take from the
    /// pool made live only if the record is not blocked (`go_live`).
    /// Whatever the interleaving, nothing of the blocked peer stays pooled
    /// and nothing goes live after the block.
    ///
    /// Checked once with each fix removed (locally, then reverted), at
    /// `LOOM_MAX_PREEMPTIONS=2`: with the put's second look ignoring the
    /// flag, loom failed the model with "a blocked peer's connection stayed
    /// pooled" (the put landed after the block's drain); with the take not
    /// checking the flag, with "a connection went live after the block".
    #[test]
    fn a_block_racing_a_put_and_a_take_leaves_nothing_pooled_or_live() {
        loom::model(|| {
            let record = Arc::new(Mutex::new(Record::<Model> {
                leases: 1,
                ..Record::default()
            }));
            let pool = Arc::new(Mutex::new(vec![Pooled {
                generation: 0,
                conn: OLD,
            }]));
            let taker = {
                let (record, pool) = (record.clone(), pool.clone());
                thread::spawn(move || {
                    let Some(pooled) = pool.lock().unwrap().pop() else {
                        return;
                    };
                    let mut r = record.lock().unwrap();
                    // `go_live`: a blocked record installs nothing.
                    if !r.blocked && r.admits(pooled.generation) {
                        r.install(Live {
                            id: 8,
                            conn: Some(pooled.conn),
                            direction: Direction::Outbound,
                            since: Instant::now(),
                            _permit: (),
                        });
                    }
                })
            };
            let putter = {
                let (record, pool) = (record.clone(), pool.clone());
                thread::spawn(move || {
                    let end = record.lock().unwrap().end_lease(7, 0, PUT, true);
                    if let LeaseEnd::Pool(conn, generation) = end {
                        pool.lock().unwrap().push(Pooled { generation, conn });
                        let stale = {
                            let r = record.lock().unwrap();
                            r.generation != generation || r.blocked
                        };
                        if stale {
                            pool.lock().unwrap().clear();
                        }
                    }
                })
            };
            // The block (`Inner::block`): the flag set and the live slot
            // taken out under the lock, the idle ones drained after it.
            {
                let mut r = record.lock().unwrap();
                r.blocked = true;
                let _slot = r.live.take();
            }
            pool.lock().unwrap().clear();
            taker.join().unwrap();
            putter.join().unwrap();
            assert!(
                record.lock().unwrap().live.is_none(),
                "a connection went live after the block"
            );
            assert!(
                pool.lock().unwrap().is_empty(),
                "a blocked peer's connection stayed pooled"
            );
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Plain;
    impl Parts for Plain {
        type Conn = &'static str;
        type Permit = ();
        type Dial = ();
        type Watch = bool;
        type Abort = ();
    }

    fn live(id: u64, conn: &'static str) -> Live<Plain> {
        Live {
            id,
            conn: Some(conn),
            direction: Direction::Outbound,
            since: Instant::now(),
            _permit: (),
        }
    }

    #[test]
    fn a_failed_makes_earlier_connections_stale_and_takes_the_slot() {
        let mut r = Record::<Plain>::default();
        assert!(r.install(live(1, "a")).is_none());
        assert!(r.admits(0));
        let slot = r.fail(None, 1).unwrap().unwrap();
        assert_eq!(slot.conn, Some("a"));
        assert!(!r.admits(0), "pooled before the Failed");
        assert!(r.admits(1));
        assert!(r.is_idle(|_| false));
    }

    #[test]
    fn a_lease_goes_home_pools_or_closes() {
        let mut r = Record::<Plain>::default();
        r.install(live(1, "a"));
        let (slot, conn, generation) = r.lease().unwrap();
        assert!(r.lease().unwrap_err(), "busy");
        assert!(!r.is_idle(|_| false));
        assert!(matches!(
            r.end_lease(slot, generation, conn, true),
            LeaseEnd::Home
        ));
        // Slot gone (disconnected): pooled.
        let (slot, conn, generation) = r.lease().unwrap();
        r.live = None;
        assert!(matches!(
            r.end_lease(slot, generation, conn, true),
            LeaseEnd::Pool("a", 0)
        ));
        // Slot gone and the peer failed meanwhile: closed, even if it may
        // pool now.
        r.install(live(2, "b"));
        let (slot, conn, generation) = r.lease().unwrap();
        r.live = None;
        r.fail(None, 2);
        assert!(matches!(
            r.end_lease(slot, generation, conn, true),
            LeaseEnd::Close("b")
        ));
        assert_eq!(r.leases, 0);
    }

    #[test]
    fn discarding_an_old_lease_leaves_a_newer_slot_alone() {
        let mut r = Record::<Plain>::default();
        r.install(live(1, "a"));
        let (slot, _, _) = r.lease().unwrap();
        r.install(live(2, "b"));
        assert!(r.discard_lease(slot, 1).is_none());
        assert_eq!(r.generation, 0);
        assert_eq!(r.live.as_ref().map(|l| l.id), Some(2));
        let (slot, _, _) = r.lease().unwrap();
        assert!(r.discard_lease(slot, 1).is_some());
        assert_eq!(r.generation, 1);
        assert!(r.live.is_none());
    }

    #[test]
    fn tags_sum_into_the_score_and_keep_the_record() {
        let mut r = Record::<Plain>::default();
        r.tag("a", 5);
        r.tag("b", -2);
        r.tag("a", 7);
        assert_eq!(r.score, 5);
        r.upsert("c", |v| v + 1);
        r.upsert("c", |v| v + 1);
        assert_eq!(r.score, 7);
        assert!(!r.is_idle(|_| false), "tagged: kept");
        r.untag("a");
        r.untag("nope");
        assert_eq!(r.score, 0);
        r.untag("b");
        r.untag("c");
        assert!(r.is_idle(|_| false));
        r.protect("x");
        r.protect("x");
        r.protect("y");
        assert!(!r.is_idle(|_| false), "protected: kept");
        assert!(r.unprotect("x"), "still protected by y");
        assert!(r.unprotect("nope"));
        assert!(!r.unprotect("y"));
        assert!(r.is_idle(|_| false));
    }

    #[test]
    fn a_watch_keeps_the_record_while_it_has_receivers() {
        let mut r = Record::<Plain> {
            watch: Some(true),
            ..Record::default()
        };
        assert!(!r.is_idle(|&w| w));
        r.watch = Some(false);
        assert!(r.is_idle(|&w| w));
    }
}
