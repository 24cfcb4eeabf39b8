// Fuzz body: the transport-less manager (`max_connections` and
// `pool_timeout` from the input) on a current-thread tokio runtime with
// paused time, against a model of the README's call-semantics table.
//
// Included (`include!`) by `fuzz/fuzz_targets/manager.rs` and by
// `async-facade/tests/fuzz_bodies.rs`; keep it free of inner attributes
// and crate-level items. Checked after every operation: each call's answer
// (`connect`'s `Ok`/`LimitReached`/`ShutDown` exactly when the model says,
// `get_status`, `lease`, `get_metrics().connections`, `reap_now`), the
// slots in use (`active() <= max` always, and equal to the model's live
// connections), `pending_dials() == 0`, per-status counts, tracked peers,
// idle connections (exact, except that expired ones may or may not have
// been closed by the reaper yet), dial outcome counters, message totals,
// and the status events broadcast (exactly the model's transitions, each
// with its reason, with the runtime's time). The model keeps each peer's state apart, as the
// manager's records do: a Failed moves only its own peer's failure
// generation, closes only its own peer's connections, and a lease taken
// before it closes its connection when dropped.
//
// Leases are held across operations (`Hold`), then returned (`Return`) or
// discarded (`Discard`), so every call above also meets peers whose
// connection is leased; what is still held at the end is returned, one
// checked step per lease, before the manager is dropped.
//
// The peer manager is driven too: `adopt` (inbound connections, counted
// in the same limit; `direction` checked for every peer after each op),
// tags and protection (`peer_score`, `is_protected` checked), and
// `trim_now` with watermarks `(max - 1, max)` and a grace period of 1 s:
// it must close exactly the excess of unprotected Connected peers past
// their grace period over `low`, only candidates (not leased), and never
// one with a higher score than a candidate it kept. (The background trim
// needs more than `max` such peers, which the limit rules out.)
//
// Resilience ops: `block`/`unblock` (toggled per peer: a blocked peer's
// live and idle connections close, `connect` and `adopt` answer
// `Blocked`, a lease it had is closed when returned) and `set_limits`
// (the connection limit, with the watermarks turned off: a lowered limit
// closes nothing and refuses while the live connections are at or above
// it). After every op `get_statuses` over every peer, `peers(s)`
// for each status, `is_blocked` and `state()` are checked too.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use connmgr::{
    ConnectionManager, ConnectionStatus, Direction, Error, Lease, Limit, NoTransport, PeerId,
    Reason, StatusEvent,
};
use tokio::sync::broadcast::error::TryRecvError;

/// Peers are `PeerId::from_bytes([k; 32])` for `k` in `0..PEERS`.
const PEERS: u8 = 6;

include!("status.rs");

#[derive(Arbitrary, Debug)]
pub struct Setup {
    max: u8,
    /// `Some(s)`: a pool timeout of `s % 600 + 1` seconds; `None`: the
    /// default 300 s.
    ttl_secs: Option<u16>,
}

/// Decoded by the derive, which picks a variant as `(u32 tag × 11) >> 32`
/// over the variants not skipped: the lease ops at the end are skipped, so
/// the count stays 11 and the corpus written before they existed decodes
/// to the same ops up to its first `Shutdown(b)` with `b != 0`, which was a
/// no-op and now stands for a lease op (see [`Op::lease_ops`]).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    Connect(u8),
    Disconnect(u8),
    UpdateStatus(u8, St),
    GetStatus(u8),
    GetMetrics,
    /// A message latency in microseconds.
    RecordMessage(u16),
    /// Lease twice (the second is `Busy`), then return it.
    Lease(u8),
    /// Paused time moves by this many tenths of a second.
    Advance(u16),
    /// Lets the reaper task run.
    Yield,
    ReapNow,
    /// Shuts down only when the byte is 0 (so it stays rare); any other
    /// byte is decoded as one of the ops below.
    Shutdown(u8),
    /// Lease and keep the lease (at most one held per peer: a lease of a
    /// newer connection replaces the held one, which is returned).
    #[arbitrary(skip)]
    Hold(u8),
    /// Drop the held lease: the connection goes back (or idles, or closes).
    #[arbitrary(skip)]
    Return(u8),
    /// `Lease::discard` the held lease: the connection is broken.
    #[arbitrary(skip)]
    Discard(u8),
    /// `adopt` a connection of the peer.
    #[arbitrary(skip)]
    Adopt(u8),
    /// Tag the peer (`tag_peer(k, "t", value)`) or, for odd values,
    /// toggle its protection under "p" instead.
    #[arbitrary(skip)]
    Tag(u8, i8),
    /// `trim_now`.
    #[arbitrary(skip)]
    Trim,
    /// `block` the peer, or `unblock` it if blocked.
    #[arbitrary(skip)]
    Block(u8),
    /// `set_limits` with this connection limit (1 to 4).
    #[arbitrary(skip)]
    SetMax(u8),
}

impl Op {
    /// `Shutdown(b)` with `b != 0` is a lease op on peer `b % PEERS`: `Hold`
    /// for half of the bytes, `Return` and `Discard` for a quarter each.
    fn lease_ops(self) -> Self {
        match self {
            Op::Shutdown(b) if b != 0 => match (b / PEERS) % 4 {
                0 | 1 => Op::Hold(b % PEERS),
                2 => Op::Return(b % PEERS),
                _ => Op::Discard(b % PEERS),
            },
            op => op,
        }
    }

    /// `GetStatus(b)` is a peer-manager op for three eighths of the bytes
    /// (by `(b / PEERS) % 8`): `Adopt`, `Tag` (its value from the byte's
    /// top bits) and `Trim`; the rest stay `GetStatus`.
    fn peer_ops(self) -> Self {
        match self {
            Op::GetStatus(b) => match (b / PEERS) % 8 {
                4 => Op::Block(b % PEERS),
                5 => Op::Adopt(b % PEERS),
                6 => Op::Tag(b % PEERS, (b / (PEERS * 8)) as i8 - 2),
                7 => Op::Trim,
                _ => Op::GetStatus(b),
            },
            op => op,
        }
    }

    /// `Advance(t)` for `t` at or above `0xF000` (a jump of over 100
    /// minutes, which the TTLs of at most 600 s make no different from a
    /// shorter one) is `SetMax(t % 4 + 1)`.
    fn resilience_ops(self) -> Self {
        match self {
            Op::Advance(t) if t >= 0xF000 => Op::SetMax((t % 4) as u8 + 1),
            op => op,
        }
    }
}

/// A lease held across operations, as the model sees it.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// The model's id of the live slot the connection came from.
    slot: u64,
    /// The peer's failure generation when the lease was taken: if the
    /// peer was set Failed while this lease held the connection, the
    /// peer's generation has moved on.
    generation: u64,
}

#[derive(Default)]
struct Model {
    max: usize,
    ttl: Duration,
    status: HashMap<u8, ConnectionStatus>,
    /// Peers holding a live connection (and a slot): the slot's id (new
    /// for each connection made live; a lease knows the slot it came from).
    live: HashMap<u8, u64>,
    /// Per live connection: who opened it and when it went live.
    opened: HashMap<u8, (Direction, Instant)>,
    /// The value of each peer's one tag ("t").
    tags: HashMap<u8, i64>,
    protected: HashSet<u8>,
    blocked: HashSet<u8>,
    /// After a `SetMax` lowered the limit below the live connections, how
    /// many are live (it only falls until the limit admits again).
    ceiling: usize,
    /// Whether watermarks are set (until the first `SetMax`).
    trimming: bool,
    /// Trimming's low watermark and grace period.
    low: usize,
    grace: Duration,
    next_slot: u64,
    /// The leases held, per peer.
    held: HashMap<u8, Held>,
    /// Per peer, how many times it was set Failed: its failure
    /// generation. Only a peer's own Failed moves it.
    generation: HashMap<u8, u64>,
    /// Idle pooled connection per peer (max_idle_per_peer is 1) and its
    /// deadline; an expired one may already have been reaped.
    pool: HashMap<u8, Instant>,
    shut: bool,
    pool_hits: u64,
    pool_misses: u64,
    dials_ok: u64,
    messages: u64,
    latency_ns: u128,
    time_moved: bool,
    events: Vec<(u8, Option<ConnectionStatus>, Option<ConnectionStatus>, Reason)>,
}

fn peer(k: u8) -> PeerId {
    PeerId::from_bytes([k; 32])
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Model {
    fn count(&self, s: ConnectionStatus) -> usize {
        self.status.values().filter(|&&v| v == s).count()
    }

    fn set(&mut self, k: u8, s: ConnectionStatus, reason: Reason) {
        let before = self.status.insert(k, s);
        if before != Some(s) {
            self.events.push((k, before, Some(s), reason));
        }
    }

    fn generation(&self, k: u8) -> u64 {
        self.generation.get(&k).copied().unwrap_or(0)
    }

    /// `k` fails: Failed, its generation moves on (a lease taken before
    /// closes its connection when dropped) and its idle connection is
    /// closed. No other peer is touched.
    fn fail(&mut self, k: u8, reason: Reason) {
        self.set(k, ConnectionStatus::Failed, reason);
        *self.generation.entry(k).or_default() += 1;
        self.pool.remove(&k);
    }

    fn unexpired_idle(&self) -> usize {
        let now = now();
        self.pool.values().filter(|&&d| now < d).count()
    }

    /// A connection of `k` is put in the idle pool: `IdlePool::put` refuses
    /// it (and it is closed) while an unexpired one idles for `k` (the
    /// per-peer cap is 1); an expired one there is reaped by that put first
    /// ("a put that finds a cap full while something is due reaps the pool
    /// and tries once more"). Nothing is pooled after shutdown. The other
    /// expired ones the put may reap stay "may or may not" in the model.
    fn put_idle(&mut self, k: u8) {
        let now = now();
        if self.shut || self.pool.get(&k).is_some_and(|&d| now < d) {
            return;
        }
        self.pool.insert(k, now + self.ttl);
    }

    /// The live connection of `k` goes to the pool (or is closed), and its
    /// slot is freed. A leased one stays with its lease, which disposes of
    /// it when dropped ("a leased one whose peer was disconnected" is
    /// outside the limit, README).
    fn retire(&mut self, k: u8, pool_it: bool) {
        if let Some(slot) = self.live.remove(&k) {
            let leased = self.held.get(&k).is_some_and(|h| h.slot == slot);
            if !leased && pool_it {
                self.put_idle(k);
            }
        }
    }

    /// What `lease(k)` answers.
    fn lease_answer(&self, k: u8) -> &'static str {
        if self.shut {
            return "ShutDown";
        }
        match self.live.get(&k) {
            None => "NotConnected",
            Some(&slot) if self.held.get(&k).is_some_and(|h| h.slot == slot) => "Busy",
            Some(_) => "Ok",
        }
    }

    /// A held lease of `k` is dropped. `lease` docs: "Exclusive use of a
    /// Connected peer's live connection until the lease is dropped, when it
    /// goes back; if the peer was disconnected meanwhile, it goes to the
    /// idle pool instead, unless the peer was set Failed while this lease
    /// held it (even if reconnected or set Disconnected since), is Failed
    /// or forgotten now, or the manager shut down: then it is closed."
    /// "Goes back" means into the slot it came from, still the peer's live
    /// slot (bookkeeping such as `update_status(p, Connecting)` keeps it);
    /// a newer connection's slot is not its own ("a returned lease never
    /// lands in another slot"): then it idles as after a disconnect.
    /// Forgetting needs `forget_after` (1 h of real time): never here.
    fn give_back(&mut self, k: u8, h: Held) {
        if self.shut || self.live.get(&k) == Some(&h.slot) {
            return;
        }
        let failed_now = matches!(self.status.get(&k), None | Some(ConnectionStatus::Failed));
        if h.generation == self.generation(k) && !failed_now && !self.blocked.contains(&k) {
            self.put_idle(k);
        }
    }

    /// A held lease of `k` is discarded. `Lease::discard` docs: "The
    /// connection is broken: close it and mark the peer Failed (if this
    /// connection is still the peer's: after a disconnect and a new
    /// connect, the newer connection and its status are left alone)";
    /// README: "`Lease::discard` | Connected | Failed, its connection
    /// closed; nothing if the peer has a newer connection by then". The
    /// model reads "still the peer's" as "its slot is still the peer's live
    /// slot" (as `fail_slot` does): after a disconnect (no longer Connected,
    /// the README row's "from") or a shutdown, nothing changes; Connecting
    /// by bookkeeping over it still holds the slot, so that becomes Failed.
    /// Failing frees the slot and closes the peer's idle connections, as
    /// `update_status(p, Failed)` does.
    fn discard(&mut self, k: u8, h: Held) {
        if !self.shut && self.live.get(&k) == Some(&h.slot) {
            self.live.remove(&k);
            self.fail(k, Reason::Discarded);
        }
    }

    fn connect(&mut self, k: u8) -> Result<(), &'static str> {
        if self.shut {
            return Err("ShutDown");
        }
        if self.status.get(&k) == Some(&ConnectionStatus::Connected) {
            return Ok(());
        }
        // A live connection left in place by bookkeeping (Connecting set
        // over Connected) is taken back: no dial, no new slot.
        if self.live.contains_key(&k) {
            self.set(k, ConnectionStatus::Connected, Reason::Pooled);
            return Ok(());
        }
        if self.blocked.contains(&k) {
            return Err("Blocked");
        }
        if self.live.len() >= self.max {
            return Err("LimitReached");
        }
        // `take_if` drops an expired idle connection and hands out a live
        // one; a Failed peer is always dialed (it has nothing pooled: its
        // idle connection was closed when it failed).
        let pooled = if self.status.get(&k) == Some(&ConnectionStatus::Failed) {
            None
        } else {
            self.pool.remove(&k)
        };
        let reason = match pooled {
            Some(deadline) if now() < deadline => {
                self.pool_hits += 1;
                Reason::Pooled
            }
            _ => {
                self.pool_misses += 1;
                self.set(k, ConnectionStatus::Connecting, Reason::Dialed);
                self.dials_ok += 1;
                Reason::Dialed
            }
        };
        self.install(k, Direction::Outbound, reason);
        Ok(())
    }

    /// A new live connection of `k`: a new slot, Connected.
    fn install(&mut self, k: u8, direction: Direction, reason: Reason) {
        self.live.insert(k, self.next_slot);
        self.next_slot += 1;
        self.opened.insert(k, (direction, now()));
        self.set(k, ConnectionStatus::Connected, reason);
    }

    /// `adopt(k)`: on a Connected peer with a live connection, the adopted
    /// one idles (as a disconnect's would) and that one stays; else it
    /// takes a slot (before the live connection bookkeeping moved off
    /// Connected, if any, is replaced and frees its own) and is installed.
    fn adopt(&mut self, k: u8) -> Result<(), &'static str> {
        if self.shut {
            return Err("ShutDown");
        }
        if self.blocked.contains(&k) {
            return Err("Blocked");
        }
        let connected = self.status.get(&k) == Some(&ConnectionStatus::Connected);
        if connected && self.live.contains_key(&k) {
            self.put_idle(k);
            return Ok(());
        }
        if self.live.len() >= self.max {
            return Err("LimitReached");
        }
        self.install(k, Direction::Inbound, Reason::Adopted);
        Ok(())
    }

    /// What `trim_now` may close: Connected peers with a live connection,
    /// unprotected, past their grace period (`counted`), of which those
    /// not leased (`candidates`).
    fn trimmable(&self) -> (usize, Vec<u8>) {
        let now = now();
        let mut counted = 0;
        let mut candidates = Vec::new();
        for (&k, &slot) in &self.live {
            if self.status.get(&k) != Some(&ConnectionStatus::Connected)
                || self.protected.contains(&k)
                || now.saturating_duration_since(self.opened[&k].1) < self.grace
            {
                continue;
            }
            counted += 1;
            if self.held.get(&k).is_none_or(|h| h.slot != slot) {
                candidates.push(k);
            }
        }
        candidates.sort_unstable();
        (counted, candidates)
    }
}

/// Runs one input; panics on the first answer that differs from the model.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let ops: Vec<Op> = decode_ops(&mut u)
        .into_iter()
        .map(Op::lease_ops)
        .map(Op::peer_ops)
        .map(Op::resilience_ops)
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(drive(setup, ops));
}

async fn drive(setup: Setup, ops: Vec<Op>) {
    let max = usize::from(setup.max % 4) + 1;
    let ttl = match setup.ttl_secs {
        Some(s) => Duration::from_secs(u64::from(s % 600) + 1),
        None => Duration::from_secs(300),
    };
    // The model has no socket budget (`async-facade/tests/limits.rs`
    // tests it): here it is set high enough never to close an idle
    // connection to make room.
    let grace = Duration::from_secs(1);
    let manager = ConnectionManager::builder()
        .max_connections(max)
        .pool_timeout(ttl)
        .max_sockets(1 << 20)
        .watermarks(max - 1, max)
        .grace_period(grace)
        .build()
        .expect("valid settings");
    assert_eq!(manager.config().max_connections, max);
    let mut events = manager.subscribe();
    let mut m = Model {
        max,
        ttl,
        low: max - 1,
        trimming: true,
        grace,
        ..Model::default()
    };
    let start = now();
    // The leases held (`m.held` has the model's view of each).
    let mut leases: HashMap<u8, Lease<NoTransport>> = HashMap::new();

    for (step, &op) in ops.iter().enumerate() {
        let at = now();
        apply(&manager, &mut m, &mut leases, op).await;
        check(&manager, &mut m, &mut events, at, step, op).await;
        if let Op::Advance(_) | Op::Yield = op {
            m.time_moved |= now() != start;
        }
    }
    // Return what is still held, each a checked step, so no lease keeps
    // the manager alive past its drop.
    let mut left: Vec<u8> = leases.keys().copied().collect();
    left.sort_unstable();
    for (i, k) in left.into_iter().enumerate() {
        let (at, op) = (now(), Op::Return(k));
        apply(&manager, &mut m, &mut leases, op).await;
        check(&manager, &mut m, &mut events, at, ops.len() + i, op).await;
    }
    assert!(leases.is_empty() && m.held.is_empty(), "every lease returned");
    // Dropping the manager ends the reaper; the runtime's drop then
    // finishes, so nothing outlives the manager.
    drop(manager);
}

/// `lease(k)` checked against the model; an `Ok` is checked exclusive (a
/// second `lease` is `Busy`) and handed back.
fn lease_checked(mgr: &ConnectionManager, m: &Model, k: u8) -> Option<Lease<NoTransport>> {
    let want = m.lease_answer(k);
    match (mgr.lease(&peer(k)), want) {
        (Ok(lease), "Ok") => {
            assert_eq!(*lease.peer(), peer(k));
            assert!(
                matches!(mgr.lease(&peer(k)), Err(Error::Busy { peer: p }) if p == peer(k)),
                "second lease({k})"
            );
            Some(lease)
        }
        (Err(Error::ShutDown), "ShutDown") => None,
        (Err(Error::NotConnected { peer: p }), "NotConnected")
        | (Err(Error::Busy { peer: p }), "Busy") => {
            assert_eq!(p, peer(k), "lease({k}) names the peer");
            None
        }
        (got, want) => panic!("lease({k}): manager {got:?}, model {want}"),
    }
}

async fn apply(
    mgr: &ConnectionManager,
    m: &mut Model,
    leases: &mut HashMap<u8, Lease<NoTransport>>,
    op: Op,
) {
    match op {
        Op::Connect(k) => {
            let k = k % PEERS;
            let want = m.connect(k);
            let got = mgr.connect(peer(k)).await;
            match (&got, want) {
                (Ok(()), Ok(())) => {}
                (Err(Error::LimitReached { limit, max }), Err("LimitReached")) => {
                    assert_eq!(*limit, Limit::Connections, "LimitReached names the limit");
                    assert_eq!(*max, m.max, "LimitReached names its value")
                }
                (Err(Error::ShutDown), Err("ShutDown")) => {}
                (Err(Error::Blocked { peer: p }), Err("Blocked")) => assert_eq!(*p, peer(k)),
                (got, want) => panic!("connect({k}): manager {got:?}, model {want:?}"),
            }
        }
        Op::Disconnect(k) => {
            let k = k % PEERS;
            if m.status.get(&k) == Some(&ConnectionStatus::Connected) {
                m.set(k, ConnectionStatus::Disconnected, Reason::Disconnected);
                m.retire(k, true);
            }
            mgr.disconnect(&peer(k)).await;
        }
        Op::UpdateStatus(k, s) => {
            let (k, s) = (k % PEERS, s.get());
            match s {
                ConnectionStatus::Disconnected => {
                    m.set(k, s, Reason::Set);
                    m.retire(k, true);
                }
                ConnectionStatus::Failed => {
                    // Closes the live connection and the idle one (if any);
                    // a leased one is closed when its lease is dropped
                    // (`lease` docs: "unless the peer was set Failed while
                    // this lease held it (even if reconnected or set
                    // Disconnected since)").
                    m.retire(k, false);
                    m.fail(k, Reason::Set);
                }
                ConnectionStatus::Connected | ConnectionStatus::Connecting => {
                    m.set(k, s, Reason::Set)
                }
            }
            mgr.update_status(peer(k), s).await;
        }
        Op::GetStatus(k) => {
            let k = k % PEERS;
            assert_eq!(
                mgr.get_status(&peer(k)).await,
                m.status.get(&k).copied(),
                "get_status({k})"
            );
        }
        Op::GetMetrics => {
            let metrics = mgr.get_metrics().await;
            assert_eq!(
                metrics.connections,
                m.count(ConnectionStatus::Connected),
                "connections"
            );
            assert!(metrics.memory_usage > 0);
            assert!(metrics.messages_per_second.is_finite() && metrics.messages_per_second >= 0.0);
            if !m.time_moved {
                // The window still starts at creation and has length zero.
                assert_eq!(metrics.messages_per_second, 0.0);
                let mean = m
                    .latency_ns
                    .checked_div(u128::from(m.messages))
                    .unwrap_or(0);
                assert_eq!(metrics.avg_latency.as_nanos(), mean, "avg_latency");
            }
        }
        Op::RecordMessage(us) => {
            mgr.record_message(Duration::from_micros(u64::from(us)));
            m.messages += 1;
            m.latency_ns += u128::from(us) * 1_000;
        }
        Op::Lease(k) => {
            // Returned at once: back into its slot, nothing changes.
            drop(lease_checked(mgr, m, k % PEERS));
        }
        Op::Hold(k) => {
            let k = k % PEERS;
            if let Some(lease) = lease_checked(mgr, m, k) {
                let h = Held {
                    slot: m.live[&k],
                    generation: m.generation(k),
                };
                // A lease held already is of an older connection (this
                // one was not Busy): it is returned after the new one is
                // taken, so it finds the new slot leased and not its own.
                if let Some(old) = leases.insert(k, lease) {
                    drop(old);
                    let old = m.held.insert(k, h).expect("model holds it too");
                    m.give_back(k, old);
                } else {
                    assert!(m.held.insert(k, h).is_none());
                }
            }
        }
        Op::Return(k) => {
            let k = k % PEERS;
            if let Some(lease) = leases.remove(&k) {
                drop(lease);
                let h = m.held.remove(&k).expect("model holds it too");
                m.give_back(k, h);
            }
        }
        Op::Discard(k) => {
            let k = k % PEERS;
            if let Some(lease) = leases.remove(&k) {
                lease.discard();
                let h = m.held.remove(&k).expect("model holds it too");
                m.discard(k, h);
            }
        }
        Op::Adopt(k) => {
            let k = k % PEERS;
            let want = m.adopt(k);
            match (mgr.adopt(peer(k), ()).await, want) {
                (Ok(()), Ok(())) => {}
                (Err(Error::LimitReached { limit, max }), Err("LimitReached")) => {
                    assert_eq!(limit, Limit::Connections, "adopt({k}) names the limit");
                    assert_eq!(max, m.max);
                }
                (Err(Error::ShutDown), Err("ShutDown")) => {}
                (Err(Error::Blocked { peer: p }), Err("Blocked")) => assert_eq!(p, peer(k)),
                (got, want) => panic!("adopt({k}): manager {got:?}, model {want:?}"),
            }
        }
        Op::Tag(k, v) => {
            let k = k % PEERS;
            if v % 2 == 0 {
                mgr.tag_peer(&peer(k), "t", i32::from(v));
                m.tags.insert(k, i64::from(v));
            } else if m.protected.remove(&k) {
                assert!(!mgr.unprotect(&peer(k), "p"), "one tag protected {k}");
            } else {
                mgr.protect(&peer(k), "p");
                m.protected.insert(k);
            }
        }
        Op::Trim => {
            let (counted, candidates) = if m.shut || !m.trimming {
                (0, Vec::new())
            } else {
                m.trimmable()
            };
            let want = counted.saturating_sub(m.low).min(candidates.len());
            let closed = mgr.trim_now().await;
            assert_eq!(closed, want, "trim_now over {candidates:?}");
            // Closed by the trim: Disconnected in the manager now.
            let (trimmed, kept): (Vec<u8>, Vec<u8>) = candidates.iter().partition(|&&k| {
                futures_ready(mgr.get_status(&peer(k))) == Some(ConnectionStatus::Disconnected)
            });
            assert_eq!(trimmed.len(), closed, "only candidates are trimmed");
            let score = |k: &u8| m.tags.get(k).copied().unwrap_or(0);
            let highest_trimmed = trimmed.iter().map(score).max();
            let lowest_kept = kept.iter().map(score).min();
            if let (Some(t), Some(k)) = (highest_trimmed, lowest_kept) {
                assert!(t <= k, "trimmed score {t} over kept {k}");
            }
            for k in trimmed {
                m.set(k, ConnectionStatus::Disconnected, Reason::Trimmed);
                m.live.remove(&k); // closed, not pooled
            }
        }
        Op::Block(k) => {
            let k = k % PEERS;
            if m.blocked.remove(&k) {
                mgr.unblock(&peer(k));
            } else {
                // Its live slot and idle connection are closed; a Connected
                // peer goes Disconnected. A leased connection stays with
                // its lease, which closes it when dropped.
                m.blocked.insert(k);
                m.live.remove(&k);
                m.pool.remove(&k);
                if m.status.get(&k) == Some(&ConnectionStatus::Connected) {
                    m.set(k, ConnectionStatus::Disconnected, Reason::Blocked);
                }
                mgr.block(peer(k));
            }
        }
        Op::SetMax(n) => {
            let n = usize::from(n);
            let mut limits = mgr.limits();
            limits.max_connections = n;
            limits.max_inbound = n;
            limits.max_outbound = n;
            limits.max_pending_dials = n;
            // Trimming off: with live connections above a lowered limit,
            // the background trim (which the model leaves out) could run.
            limits.watermarks = None;
            mgr.set_limits(limits).expect("valid limits");
            assert_eq!(mgr.limits(), limits);
            // Nothing closes; the limit moves, trimming stops.
            m.ceiling = m.live.len();
            m.max = n;
            m.trimming = false;
        }
        Op::Advance(tenths) => {
            tokio::time::advance(Duration::from_millis(u64::from(tenths) * 100)).await;
        }
        Op::Yield => tokio::task::yield_now().await,
        Op::ReapNow => {
            let now = now();
            let expired: Vec<u8> = m
                .pool
                .iter()
                .filter(|&(_, &d)| now >= d)
                .map(|(&k, _)| k)
                .collect();
            let closed = mgr.reap_now();
            assert!(
                closed <= expired.len(),
                "reap_now closed {closed} of {} expired",
                expired.len()
            );
            for k in expired {
                m.pool.remove(&k);
            }
        }
        Op::Shutdown(b) => {
            debug_assert_eq!(b, 0, "other bytes are lease ops (see `Op::lease_ops`)");
            if !m.shut {
                m.shut = true;
                m.live.clear();
                // Every Connected peer, live or marked so by bookkeeping.
                let mut connected: Vec<u8> = m
                    .status
                    .iter()
                    .filter(|&(_, &s)| s == ConnectionStatus::Connected)
                    .map(|(&k, _)| k)
                    .collect();
                connected.sort_unstable();
                for k in connected {
                    m.set(k, ConnectionStatus::Disconnected, Reason::ShutDown);
                }
                m.pool.clear();
            }
            mgr.shutdown().await;
            assert!(mgr.is_shut_down());
        }
    }
}

async fn check(
    mgr: &ConnectionManager,
    m: &mut Model,
    events: &mut tokio::sync::broadcast::Receiver<StatusEvent>,
    at: Instant,
    step: usize,
    op: Op,
) {
    let ctx = format!("after step {step} {op:?}");
    // The limit: slots in use are the live ones, and never exceed the
    // limit, or what was live when a lower one was set (a lowered limit
    // closes nothing: `ceiling` is the most live since).
    assert!(
        mgr.active() <= m.max.max(m.ceiling),
        "active {} > max {} {ctx}",
        mgr.active(),
        m.max
    );
    m.ceiling = m.live.len().min(m.ceiling);
    assert_eq!(mgr.active(), m.live.len(), "active {ctx}");
    assert_eq!(mgr.pending_dials(), 0, "pending dials {ctx}");
    for s in ConnectionStatus::ALL {
        assert_eq!(mgr.count(s), m.count(s), "count({s:?}) {ctx}");
    }
    assert_eq!(mgr.tracked_peers(), m.status.len(), "tracked peers {ctx}");
    for k in 0..PEERS {
        assert_eq!(
            mgr.get_status(&peer(k)).await,
            m.status.get(&k).copied(),
            "status of {k} {ctx}"
        );
    }
    for k in 0..PEERS {
        let direction = m.live.get(&k).map(|_| m.opened[&k].0);
        assert_eq!(mgr.direction(&peer(k)), direction, "direction of {k} {ctx}");
        let score = m.tags.get(&k).copied().unwrap_or(0);
        assert_eq!(mgr.peer_score(&peer(k)), score, "score of {k} {ctx}");
        assert_eq!(
            mgr.is_protected(&peer(k)),
            m.protected.contains(&k),
            "protection of {k} {ctx}"
        );
    }
    // The batch and listing calls agree with the model, as do the block
    // list and the one-snapshot state.
    let all: Vec<PeerId> = (0..PEERS).map(peer).collect();
    let want: Vec<_> = (0..PEERS).map(|k| m.status.get(&k).copied()).collect();
    assert_eq!(mgr.get_statuses(&all).await, want, "get_statuses {ctx}");
    for s in ConnectionStatus::ALL {
        let mut listed: Vec<PeerId> = mgr.peers(s);
        listed.sort_unstable();
        let mut want: Vec<PeerId> = m
            .status
            .iter()
            .filter(|&(_, &v)| v == s)
            .map(|(&k, _)| peer(k))
            .collect();
        want.sort_unstable();
        assert_eq!(listed, want, "peers({s:?}) {ctx}");
    }
    for k in 0..PEERS {
        assert_eq!(
            mgr.is_blocked(&peer(k)),
            m.blocked.contains(&k),
            "blocked {k} {ctx}"
        );
    }
    let state = mgr.state();
    assert_eq!(
        (state.connected, state.active, state.pending_dials),
        (m.count(ConnectionStatus::Connected), m.live.len(), 0),
        "state {ctx}"
    );
    assert_eq!(state.limits.max_connections, m.max, "state limits {ctx}");
    assert_eq!(state.shut_down, m.shut, "state {ctx}");
    // Idle: expired connections may or may not be closed yet.
    let idle = mgr.idle();
    let (lo, hi) = (m.unexpired_idle(), m.pool.len());
    assert!(
        lo <= idle && idle <= hi,
        "idle {idle} not in {lo}..={hi} {ctx}"
    );
    if idle == lo {
        // Everything expired is gone (reaped): forget it in the model.
        let now = now();
        m.pool.retain(|_, d| now < *d);
    }
    let gauges = mgr.gauges();
    assert_eq!(
        gauges.connections,
        m.count(ConnectionStatus::Connected),
        "gauges {ctx}"
    );
    assert_eq!(
        gauges.connecting,
        m.count(ConnectionStatus::Connecting),
        "gauges {ctx}"
    );
    assert_eq!(gauges.tracked_peers, m.status.len(), "gauges {ctx}");
    // Counters of the metrics.
    let snap = mgr.snapshot();
    assert_eq!(snap.messages, m.messages, "messages {ctx}");
    assert_eq!(
        snap.latency_sum.as_nanos(),
        m.latency_ns,
        "latency sum {ctx}"
    );
    assert_eq!(snap.dials.pool_hits, m.pool_hits, "pool hits {ctx}");
    assert_eq!(snap.dials.pool_misses, m.pool_misses, "pool misses {ctx}");
    assert_eq!(snap.dials.ok, m.dials_ok, "dials ok {ctx}");
    assert_eq!(
        (snap.dials.failed, snap.dials.timed_out),
        (0, 0),
        "no dial fails {ctx}"
    );
    // Events: exactly the model's transitions, stamped with the op's time.
    let mut got = Vec::new();
    loop {
        match events.try_recv() {
            Ok(e) => {
                assert_eq!(e.at, at, "event time {ctx}");
                got.push((e.peer, e.from, e.to, e.reason));
            }
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("events: {e:?} {ctx}"),
        }
    }
    let mut want: Vec<_> = m
        .events
        .drain(..)
        .map(|(k, f, t, r)| (peer(k), f, t, r))
        .collect();
    if let Op::Shutdown(_) = op {
        // Shutdown visits peers in table order.
        got.sort_by_key(|e| *e.0.as_bytes());
        want.sort_by_key(|e| *e.0.as_bytes());
    }
    assert_eq!(got, want, "events {ctx}");
}

/// Polls a future that never waits (`get_status`) to its answer.
fn futures_ready<T>(f: impl std::future::Future<Output = T>) -> T {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("get_status waited"),
    }
}

include!("decode.rs");
