// Fuzz body: the transport-less `ConnectionManager::new(max)` (or
// `with_pool_timeout(max, ttl)`) on a current-thread tokio runtime with
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
// and the status events broadcast (exactly the model's transitions, with
// the runtime's time).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use connmgr::{ConnectionManager, ConnectionStatus, Error, PeerId, StatusEvent};
use tokio::sync::broadcast::error::TryRecvError;

/// Peers are `PeerId::from_bytes([k; 32])` for `k` in `0..PEERS`.
const PEERS: u8 = 6;

include!("status.rs");

#[derive(Arbitrary, Debug)]
pub struct Setup {
    max: u8,
    /// `Some(s)`: `with_pool_timeout(max, (s % 600 + 1) seconds)`; `None`:
    /// `new(max)` (300 s).
    ttl_secs: Option<u16>,
}

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
    /// Shuts down only when the byte is 0 (so it stays rare).
    Shutdown(u8),
}

#[derive(Default)]
struct Model {
    max: usize,
    ttl: Duration,
    status: HashMap<u8, ConnectionStatus>,
    /// Peers holding a live connection (and a slot).
    live: HashSet<u8>,
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
    events: Vec<(u8, Option<ConnectionStatus>, Option<ConnectionStatus>)>,
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

    fn set(&mut self, k: u8, s: ConnectionStatus) {
        let before = self.status.insert(k, s);
        if before != Some(s) {
            self.events.push((k, before, Some(s)));
        }
    }

    fn unexpired_idle(&self) -> usize {
        let now = now();
        self.pool.values().filter(|&&d| now < d).count()
    }

    /// The live connection of `k` goes to the pool (or is closed).
    fn retire(&mut self, k: u8, pool_it: bool) {
        if self.live.remove(&k) && pool_it && !self.shut {
            assert!(
                !self.pool.contains_key(&k),
                "model: a live peer never has an idle connection too"
            );
            self.pool.insert(k, now() + self.ttl);
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
        if self.live.contains(&k) {
            self.set(k, ConnectionStatus::Connected);
            return Ok(());
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
        match pooled {
            Some(deadline) if now() < deadline => self.pool_hits += 1,
            _ => {
                self.pool_misses += 1;
                self.set(k, ConnectionStatus::Connecting);
                self.dials_ok += 1;
            }
        }
        self.live.insert(k);
        self.set(k, ConnectionStatus::Connected);
        Ok(())
    }
}

/// Runs one input; panics on the first answer that differs from the model.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let ops = decode_ops(&mut u);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(drive(setup, ops));
}

async fn drive(setup: Setup, ops: Vec<Op>) {
    let max = usize::from(setup.max % 4) + 1;
    let (manager, ttl) = match setup.ttl_secs {
        Some(s) => {
            let ttl = Duration::from_secs(u64::from(s % 600) + 1);
            (ConnectionManager::with_pool_timeout(max, ttl), ttl)
        }
        None => (ConnectionManager::new(max), Duration::from_secs(300)),
    };
    assert_eq!(manager.config().max_connections, max);
    let mut events = manager.subscribe();
    let mut m = Model {
        max,
        ttl,
        ..Model::default()
    };
    let start = now();

    for (step, &op) in ops.iter().enumerate() {
        let at = now();
        apply(&manager, &mut m, op).await;
        check(&manager, &mut m, &mut events, at, step, op).await;
        if let Op::Advance(_) | Op::Yield = op {
            m.time_moved |= now() != start;
        }
    }
    // Dropping the manager ends the reaper; the runtime's drop then
    // finishes, so nothing outlives the manager.
    drop(manager);
}

async fn apply(mgr: &ConnectionManager, m: &mut Model, op: Op) {
    match op {
        Op::Connect(k) => {
            let k = k % PEERS;
            let want = m.connect(k);
            let got = mgr.connect(peer(k)).await;
            match (&got, want) {
                (Ok(()), Ok(())) => {}
                (Err(Error::LimitReached { max }), Err("LimitReached")) => {
                    assert_eq!(*max, m.max, "LimitReached names the limit")
                }
                (Err(Error::ShutDown), Err("ShutDown")) => {}
                (got, want) => panic!("connect({k}): manager {got:?}, model {want:?}"),
            }
        }
        Op::Disconnect(k) => {
            let k = k % PEERS;
            if m.status.get(&k) == Some(&ConnectionStatus::Connected) {
                m.set(k, ConnectionStatus::Disconnected);
                m.retire(k, true);
            }
            mgr.disconnect(&peer(k)).await;
        }
        Op::UpdateStatus(k, s) => {
            let (k, s) = (k % PEERS, s.get());
            m.set(k, s);
            match s {
                ConnectionStatus::Disconnected => m.retire(k, true),
                ConnectionStatus::Failed => {
                    // Closes the live connection and the idle one (if any).
                    m.retire(k, false);
                    m.pool.remove(&k);
                }
                ConnectionStatus::Connected | ConnectionStatus::Connecting => {}
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
            let k = k % PEERS;
            match mgr.lease(&peer(k)) {
                Ok(lease) => {
                    assert!(
                        !m.shut && m.live.contains(&k),
                        "lease({k}) of no live connection"
                    );
                    assert_eq!(*lease.peer(), peer(k));
                    assert!(
                        matches!(mgr.lease(&peer(k)), Err(Error::Busy { .. })),
                        "second lease"
                    );
                    drop(lease);
                }
                Err(Error::ShutDown) => assert!(m.shut, "lease: ShutDown before shutdown"),
                Err(Error::NotConnected { peer: p }) => {
                    assert!(!m.shut && !m.live.contains(&k), "lease({k}): NotConnected");
                    assert_eq!(p, peer(k));
                }
                Err(e) => panic!("lease({k}): {e:?}"),
            }
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
            if b != 0 {
                return;
            }
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
                    m.set(k, ConnectionStatus::Disconnected);
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
    // The limit: slots in use never exceed max, and are the live ones.
    assert!(
        mgr.active() <= m.max,
        "active {} > max {} {ctx}",
        mgr.active(),
        m.max
    );
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
                got.push((e.peer, e.from, e.to));
            }
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("events: {e:?} {ctx}"),
        }
    }
    let mut want: Vec<_> = m
        .events
        .drain(..)
        .map(|(k, f, t)| (peer(k), f, t))
        .collect();
    if let Op::Shutdown(_) = op {
        // Shutdown visits peers in table order.
        got.sort_by_key(|e| *e.0.as_bytes());
        want.sort_by_key(|e| *e.0.as_bytes());
    }
    assert_eq!(got, want, "events {ctx}");
}

include!("decode.rs");
