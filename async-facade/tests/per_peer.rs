#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)
//! The per-peer rule, one deterministic race per transition pair: while
//! one peer's transition is parked halfway (a `Failed` of `p` after its
//! locked step, in the close of `p`'s live connection, before it drains
//! `p`'s idle connections; or a `disconnect` in its status event), the
//! other calls run whole. What they do to `p` follows `p`'s own rule; what
//! they do to the other peers is as if `p` did nothing.
//!
//! The other peers are [`OTHERS`] of them, so that some share `p`'s shard
//! of the record map (it has at most 128 shards).
mod common;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, PeerId};

/// How many other peers run beside `p`.
const OTHERS: u32 = 64;

fn others() -> impl Iterator<Item = PeerId> {
    (100..100 + OTHERS).map(|i| peer(OK, i))
}

fn manager(dialer: &HookDialer) -> ConnectionManager<HookDialer> {
    ConnectionManager::builder()
        .max_connections(4 * OTHERS as usize)
        .dialer(dialer.clone())
        .build()
        .unwrap()
}

/// Leaves `p` with an idle connection (its lease dropped after a
/// disconnect) and a live one: two dials.
async fn idle_and_live(m: &ConnectionManager<HookDialer>, p: PeerId) {
    m.connect(p).await.unwrap();
    let lease = m.lease(&p).unwrap();
    m.disconnect(&p).await;
    m.connect(p).await.unwrap();
    drop(lease);
}

/// A Failed of `p` (Connected, with a live connection) parked in the close
/// of that connection: its locked step is done (status Failed, generation
/// moved on, slot taken out), its drain of `p`'s idle connections is not.
/// Returns the failing thread and the sender that lets it finish.
fn park_a_failed(
    m: &ConnectionManager<HookDialer>,
    dialer: &HookDialer,
    p: PeerId,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
    let (entered, go) = arm(&dialer.on_drop);
    let m2 = m.clone();
    let failer = std::thread::spawn(move || rt().block_on(m2.update_status(p, Failed)));
    entered.recv().unwrap();
    (failer, go)
}

/// connect vs Failed. `p` has an idle connection (pooled before the
/// Failed) and a live one; every other peer has an idle one. While `p`'s
/// Failed is parked, a connect of `p` refuses `p`'s stale idle connection
/// (closed, and a dial made), and a connect of every other peer reuses its
/// own (no dial, nothing closed).
#[test]
fn connect_during_a_failed_reuses_other_peers_pools_and_never_the_failed_peers() {
    let dialer = HookDialer::default();
    let m = manager(&dialer);
    let p = peer(OK, 1);
    let rt = rt();
    rt.block_on(async {
        for q in others() {
            m.connect(q).await.unwrap();
            m.disconnect(&q).await;
        }
        idle_and_live(&m, p).await;
    });
    let dials = OTHERS as usize + 2;
    assert_eq!((dialer.dials(), m.idle()), (dials, OTHERS as usize + 1));

    let (failer, go) = park_a_failed(&m, &dialer, p);
    rt.block_on(async {
        for q in others() {
            m.connect(q).await.unwrap();
        }
        assert_eq!(dialer.dials(), dials, "the other peers reused their pool");
        assert_eq!(dialer.closed(), 0);
        m.update_status(p, Disconnected).await;
        m.connect(p).await.unwrap();
    });
    assert_eq!(dialer.dials(), dials + 1, "p dialed afresh");
    assert_eq!(dialer.closed(), 1, "p's stale idle connection was closed");
    go.send(()).unwrap();
    failer.join().unwrap();

    assert_eq!(dialer.closed(), 2, "and p's old live connection");
    assert_eq!(m.count(Connected), OTHERS as usize + 1);
    assert_eq!((m.active(), m.idle()), (OTHERS as usize + 1, 0));
}

/// lease drop vs Failed. Every peer's connection is leased and then the
/// peer disconnected (so the lease will pool it); `p` is connected anew.
/// While `p`'s Failed is parked, every lease is dropped: the other peers'
/// connections idle in the pool and are reused later; `p`'s, leased before
/// the Failed, is closed.
#[test]
fn a_lease_dropped_during_a_failed_pools_for_other_peers_and_closes_for_the_failed_one() {
    let dialer = HookDialer::default();
    let m = manager(&dialer);
    let p = peer(OK, 1);
    let rt = rt();
    let leases: Vec<_> = rt.block_on(async {
        let mut leases = Vec::new();
        for q in others().chain([p]) {
            m.connect(q).await.unwrap();
            leases.push(m.lease(&q).unwrap());
            m.disconnect(&q).await;
        }
        m.connect(p).await.unwrap();
        leases
    });
    let dials = OTHERS as usize + 2;
    assert_eq!((dialer.dials(), m.idle()), (dials, 0));

    let (failer, go) = park_a_failed(&m, &dialer, p);
    drop(leases);
    assert_eq!(m.idle(), OTHERS as usize, "the other peers' leases pooled");
    assert_eq!(
        dialer.closed(),
        1,
        "p's lease, taken before the Failed, closed"
    );
    go.send(()).unwrap();
    failer.join().unwrap();

    rt.block_on(async {
        for q in others() {
            m.connect(q).await.unwrap();
        }
    });
    assert_eq!(
        dialer.dials(),
        dials,
        "every other peer reused its connection"
    );
    assert_eq!(dialer.closed(), 2, "p's two connections, no other");
}

/// put vs Failed. Every other peer is connected; while `p`'s Failed is
/// parked, each is disconnected (its connection put in the pool): nothing
/// of theirs is closed, and every later connect reuses. `p`'s Failed, once
/// let go, drains `p`'s idle connection, put before it.
#[test]
fn a_put_during_a_failed_keeps_other_peers_connections_pooled() {
    let dialer = HookDialer::default();
    let m = manager(&dialer);
    let p = peer(OK, 1);
    let rt = rt();
    rt.block_on(async {
        for q in others() {
            m.connect(q).await.unwrap();
        }
        idle_and_live(&m, p).await;
    });
    let dials = OTHERS as usize + 2;
    assert_eq!(m.idle(), 1);

    let (failer, go) = park_a_failed(&m, &dialer, p);
    rt.block_on(async {
        for q in others() {
            m.disconnect(&q).await;
        }
    });
    assert_eq!(m.idle(), OTHERS as usize + 1);
    assert_eq!(dialer.closed(), 0);
    go.send(()).unwrap();
    failer.join().unwrap();
    assert_eq!(dialer.closed(), 2, "p's live and idle connections");
    assert_eq!(m.idle(), OTHERS as usize, "the other peers' stay pooled");

    rt.block_on(async {
        for q in others() {
            m.connect(q).await.unwrap();
        }
    });
    assert_eq!(dialer.dials(), dials, "and are reused");
    assert_eq!(dialer.closed(), 2);
}

/// disconnect vs connect. A disconnect of `p` parked after its locked step
/// (in its status event: `p` is Disconnected, its connection pooled):
/// a connect of `p` reuses that connection at once (no dial), and keeps it
/// and its slot when the disconnect finishes; the other peers cycle
/// connect and disconnect meanwhile, reusing their own connections.
#[test]
fn a_connect_during_a_disconnect_reuses_and_keeps_its_connection() {
    let dialer = HookDialer::default();
    let m = manager(&dialer);
    let p = peer(OK, 1);
    let main_rt = rt();
    main_rt.block_on(async {
        for q in others().chain([p]) {
            m.connect(q).await.unwrap();
        }
        for q in others() {
            m.disconnect(&q).await;
        }
    });
    let dials = OTHERS as usize + 1;
    let (entered, go) = pause_next_event(&m);
    let m2 = m.clone();
    let disconnecter = std::thread::spawn(move || rt().block_on(m2.disconnect(&p)));
    entered.recv().unwrap();
    main_rt.block_on(async {
        assert_eq!(m.get_status(&p).await, Some(Disconnected));
        m.connect(p).await.unwrap();
        for q in others() {
            m.connect(q).await.unwrap();
            m.disconnect(&q).await;
        }
    });
    go.send(()).unwrap();
    disconnecter.join().unwrap();

    assert_eq!(
        dialer.dials(),
        dials,
        "every connect reused a pooled connection"
    );
    assert_eq!(dialer.closed(), 0);
    assert_eq!(main_rt.block_on(m.get_status(&p)), Some(Connected));
    assert_eq!((m.active(), m.idle()), (1, OTHERS as usize));
    assert!(m.lease(&p).is_ok(), "p's connection is live");
}
