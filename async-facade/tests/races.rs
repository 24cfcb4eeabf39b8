#![cfg(not(loom))]
//! Races between calls on one peer, each made deterministic where it can
//! be: a broadcast subscriber whose waker blocks the thread that sends the
//! next status event parks that call inside its `emit`, at a known point,
//! while another call runs. Plus the reaper's restart after its runtime
//! goes away, and settings the builder must refuse.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use connmgr::{Config, ConnectionManager, ConnectionStatus::*, Error, PeerId};

/// A connect that completes while a disconnect of the same peer is
/// announcing itself keeps its connection and its slot; with a limit of 1
/// it is not refused either (the old slot is free by then).
#[test]
fn a_connect_during_a_disconnect_keeps_its_connection_and_slot() {
    for max in [1, 2] {
        let dialer = TestDialer::default();
        let m = ConnectionManager::builder()
            .max_connections(max)
            .dialer(dialer.clone())
            .build()
            .unwrap();
        let p = peer(OK, 1);
        let main_rt = rt();
        main_rt.block_on(m.connect(p)).unwrap();
        let (entered, go) = pause_next_event(&m);
        let m2 = m.clone();
        let disconnecter = std::thread::spawn(move || rt().block_on(m2.disconnect(&p)));
        entered.recv().unwrap(); // parked in disconnect's emit
        assert_eq!(main_rt.block_on(m.get_status(&p)), Some(Disconnected));
        main_rt
            .block_on(m.connect(p))
            .unwrap_or_else(|e| panic!("max {max}: connect in the window: {e}"));
        go.send(()).unwrap();
        disconnecter.join().unwrap();

        assert_eq!(main_rt.block_on(m.get_status(&p)), Some(Connected));
        assert_eq!(
            m.active(),
            1,
            "max {max}: the Connected peer holds one slot"
        );
        assert!(m.lease(&p).is_ok(), "max {max}: and its live connection");
        assert_eq!(m.count(Connected), 1);
        // The limit still holds.
        let more: Vec<_> = (2..5)
            .map(|i| main_rt.block_on(m.connect(peer(OK, i))))
            .collect();
        assert!(
            m.count(Connected) <= max,
            "{} Connected, max {max}",
            m.count(Connected)
        );
        assert_eq!(more.iter().filter(|r| r.is_ok()).count(), max - 1);
    }
}

/// `disconnect` and `connect` of one peer racing on two workers, many
/// times: at rest, the peer is Connected exactly when it has a live
/// connection, and every Connected peer holds exactly one slot.
#[test]
fn disconnect_racing_connect_leaves_status_slots_and_connections_agreeing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = ConnectionManager::builder()
            .max_connections(1000)
            .dialer(TestDialer::default())
            .build()
            .unwrap();
        for round in 0..500u32 {
            let p = peer(OK, round);
            m.connect(p).await.unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let connects = {
                let (m, stop) = (m.clone(), stop.clone());
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let _ = m.connect(p).await;
                        tokio::task::yield_now().await;
                    }
                    stop.store(true, Ordering::Release);
                })
            };
            let disconnects = {
                let (m, stop) = (m.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) {
                        m.disconnect(&p).await;
                        tokio::task::yield_now().await;
                    }
                })
            };
            connects.await.unwrap();
            disconnects.await.unwrap();
            let connected = m.get_status(&p).await == Some(Connected);
            assert_eq!(connected, m.lease(&p).is_ok(), "round {round}");
            assert_eq!(m.active(), m.count(Connected), "round {round}");
            m.disconnect(&p).await;
        }
    });
}

/// Two status changes of one peer on two threads, the first parked in its
/// `emit` while the second completes: the peer's watch ends on the status
/// the table holds, not on the change that announced itself last.
#[test]
fn a_watch_ends_on_the_current_status() {
    let m = ConnectionManager::new(4);
    let p = PeerId::random();
    let main_rt = rt();
    main_rt.block_on(m.update_status(p, Connected));
    let watch = m.watch(&p);
    let (entered, go) = pause_next_event(&m);
    let m2 = m.clone();
    let failer = std::thread::spawn(move || rt().block_on(m2.update_status(p, Failed)));
    entered.recv().unwrap(); // the table says Failed; its watch update is not out
    main_rt.block_on(m.update_status(p, Disconnected));
    go.send(()).unwrap();
    failer.join().unwrap();
    assert_eq!(main_rt.block_on(m.get_status(&p)), Some(Disconnected));
    assert_eq!(*watch.borrow(), Some(Disconnected));
}

/// The reaper runs on the runtime of the first call. When that runtime is
/// dropped (a setup runtime, one per test), the next call on a live one
/// starts a new reaper, so idle connections still expire by themselves.
#[test]
fn the_reaper_restarts_after_its_runtime_is_gone() {
    let dialer = TestDialer::default();
    let m = ConnectionManager::builder()
        .pool_timeout(Duration::from_secs(5))
        .dialer(dialer.clone())
        .build()
        .unwrap();
    let setup = rt();
    setup.block_on(m.connect(peer(OK, 0))).unwrap();
    drop(setup);

    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    paused.block_on(async {
        for i in 1..4 {
            m.connect(peer(OK, i)).await.unwrap();
            m.disconnect(&peer(OK, i)).await;
        }
        assert_eq!(m.idle(), 3);
        // Twelve TTLs with no call into the manager.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(m.idle(), 0, "expired connections were not reaped");
        assert_eq!(dialer.closed(), 3);
    });
}

/// Settings the pool or the event ring cannot hold are refused by `build`
/// with the setting's name, never by a panic or an abort later.
#[test]
fn out_of_range_settings_are_refused_by_build() {
    type Build = fn() -> Result<(), Error>;
    let cases: [(&str, Build); 4] = [
        ("max_idle_total", || {
            ConnectionManager::builder()
                .max_idle_total(usize::MAX)
                .build()
                .map(drop)
        }),
        ("max_idle_per_peer", || {
            ConnectionManager::builder()
                .max_idle_per_peer((1 << 30) + 1)
                .max_idle_total(usize::MAX)
                .build()
                .map(drop)
        }),
        ("event_capacity", || {
            ConnectionManager::builder()
                .event_capacity(1 << 40)
                .build()
                .map(drop)
        }),
        ("event_capacity", || {
            ConnectionManager::builder()
                .event_capacity(Config::MAX_EVENT_CAPACITY + 1)
                .build()
                .map(drop)
        }),
    ];
    for (setting, build) in cases {
        match build() {
            Err(Error::InvalidConfig { setting: s, .. }) => assert_eq!(s, setting),
            other => panic!("{setting}: expected InvalidConfig, got {other:?}"),
        }
    }
    // The largest accepted values build.
    ConnectionManager::builder()
        .max_idle_per_peer(1 << 30)
        .max_idle_total(1 << 30)
        .event_capacity(1)
        .build()
        .unwrap();
}

/// `memory_usage` counts the event ring, which is allocated up front.
#[test]
fn memory_usage_counts_the_event_ring() {
    let small = ConnectionManager::builder()
        .event_capacity(1)
        .build()
        .unwrap();
    let big = ConnectionManager::builder()
        .event_capacity(1 << 16)
        .build()
        .unwrap();
    let ring = big.memory_usage() - small.memory_usage();
    let per_event = std::mem::size_of::<connmgr::StatusEvent>();
    assert!(
        ring >= ((1 << 16) - 1) * per_event,
        "{ring} bytes for 65,536 events of {per_event} bytes"
    );
}

/// Bookkeeping that moves a Connected peer to Connecting leaves its live
/// connection in place; a `connect` then takes that connection back (no
/// second dial, no second slot, the first connection not closed).
#[test]
fn connect_after_bookkeeping_reuses_the_live_connection() {
    let dialer = TestDialer::default();
    let m = ConnectionManager::builder()
        .max_connections(1)
        .dialer(dialer.clone())
        .build()
        .unwrap();
    let p = peer(OK, 1);
    let rt = rt();
    rt.block_on(async {
        m.connect(p).await.unwrap();
        m.update_status(p, Connecting).await;
        m.connect(p).await.unwrap();
        assert_eq!(m.get_status(&p).await, Some(Connected));
    });
    assert_eq!(dialer.opened(), 1);
    assert_eq!(dialer.closed(), 0);
    assert_eq!(m.active(), 1);
    assert!(m.lease(&p).is_ok());
}

/// A lease of an old connection, discarded after the peer was disconnected
/// and connected anew, closes only its own connection: the newer one, its
/// slot and the peer's Connected status stay.
#[test]
fn discarding_an_old_lease_leaves_a_newer_connection_alone() {
    let dialer = TestDialer::default();
    let m = ConnectionManager::builder()
        .dialer(dialer.clone())
        .build()
        .unwrap();
    let p = peer(OK, 1);
    let rt = rt();
    rt.block_on(m.connect(p)).unwrap();
    let old = m.lease(&p).unwrap();
    rt.block_on(m.disconnect(&p));
    rt.block_on(m.connect(p)).unwrap();
    assert_eq!(
        dialer.opened(),
        2,
        "the leased connection could not be pooled"
    );
    old.discard();
    assert_eq!(dialer.closed(), 1, "only the old connection closed");
    assert_eq!(rt.block_on(m.get_status(&p)), Some(Connected));
    assert_eq!(m.active(), 1);
    let new = m.lease(&p).expect("the newer connection is live");
    drop(new);
    // Discarding a lease of the current connection still fails the peer.
    m.lease(&p).unwrap().discard();
    assert_eq!(rt.block_on(m.get_status(&p)), Some(Failed));
    assert_eq!(m.active(), 0);
    assert_eq!(dialer.closed(), 2);
}

/// `shutdown` leaves no peer Connected, including one marked Connected by
/// bookkeeping alone.
#[test]
fn shutdown_disconnects_bookkept_peers_too() {
    let m = ConnectionManager::builder()
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        m.connect(peer(OK, 1)).await.unwrap();
        m.update_status(peer(OK, 2), Connected).await;
        assert_eq!(m.count(Connected), 2);
        m.shutdown().await;
        assert_eq!(m.count(Connected), 0);
        assert_eq!(m.get_status(&peer(OK, 2)).await, Some(Disconnected));
        assert_eq!(m.active(), 0);
    });
}

/// The lease-drop stress races share one round: a fresh manager (max 4, a
/// `TestDialer`), `p` connected, its connection leased, `p` disconnected
/// and, with `reconnect`, connected anew; then the lease is dropped on this
/// thread while `other` runs on a second one, both let go by one barrier.
/// Calls are driven by a runtime with one worker (`rt`).
struct LeaseDropRace {
    rt: tokio::runtime::Runtime,
}

impl LeaseDropRace {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Self { rt }
    }

    /// Runs round `i` (peer `peer(OK, i)`); returns the manager, its
    /// dialer and the peer once both sides are done.
    fn round(
        &self,
        i: u32,
        reconnect: bool,
        other: impl FnOnce(&tokio::runtime::Handle, &ConnectionManager<TestDialer>, PeerId)
            + Send
            + 'static,
    ) -> (ConnectionManager<TestDialer>, TestDialer, PeerId) {
        let dialer = TestDialer::default();
        let m = ConnectionManager::builder()
            .max_connections(4)
            .dialer(dialer.clone())
            .build()
            .unwrap();
        let p = peer(OK, i);
        self.rt.block_on(m.connect(p)).unwrap();
        let lease = m.lease(&p).unwrap();
        self.rt.block_on(m.disconnect(&p));
        if reconnect {
            self.rt.block_on(m.connect(p)).unwrap();
        }
        let start = Arc::new(std::sync::Barrier::new(2));
        let racer = {
            let (m, start, rt) = (m.clone(), start.clone(), self.rt.handle().clone());
            std::thread::spawn(move || {
                start.wait();
                other(&rt, &m, p);
            })
        };
        start.wait();
        drop(lease);
        racer.join().unwrap();
        (m, dialer, p)
    }
}

/// A lease dropped after its peer's disconnect (so it pools its
/// connection) racing `update_status(p, Failed)` (which closes the peer's
/// pooled connections): whichever comes second, the Failed peer must not
/// keep a pooled connection. The lease decides under the record lock and
/// puts after it, then looks at the record again: either that look sees
/// the Failed's new generation and drains, or the Failed's drain comes
/// after the put and finds it. A stress test, not a proof (the loom model
/// in `src/peer.rs` is the proof).
#[test]
fn a_failed_peer_keeps_no_pooled_connection_when_a_lease_drop_races_it() {
    let race = LeaseDropRace::new();
    for i in 0..5_000 {
        let (m, _, p) = race.round(i, false, |rt, m, p| {
            rt.block_on(m.update_status(p, Failed));
        });
        assert_eq!(
            (race.rt.block_on(m.get_status(&p)), m.idle()),
            (Some(Failed), 0),
            "round {i}"
        );
    }
}

/// A `connect` that has taken a pooled connection out of the pool (and is
/// checking it alive) while `update_status(p, Failed)` runs whole: the
/// Failed found nothing pooled to close, so the connect must not make that
/// connection live (Failed closes the peer's pooled connections; `connect`
/// never revives one across a Failed). The connection carries the peer's
/// generation from before the Failed, which the record refuses: it is
/// closed and the peer dialed instead.
#[test]
fn a_pooled_connection_taken_while_its_peer_fails_is_not_revived() {
    let dialer = HookDialer::default();
    let m = hook_manager(&dialer);
    let p = peer(OK, 1);
    let main_rt = rt();
    main_rt.block_on(m.connect(p)).unwrap();
    main_rt.block_on(m.disconnect(&p));
    assert_eq!(m.idle(), 1);

    let (entered, go) = arm(&dialer.in_is_alive);
    let m2 = m.clone();
    let connecter = std::thread::spawn(move || rt().block_on(m2.connect(p)));
    entered.recv().unwrap(); // holding the pooled connection, in `is_alive`
    main_rt.block_on(m.update_status(p, Failed));
    assert_eq!(
        dialer.closed(),
        0,
        "nothing was pooled for the Failed to close"
    );
    go.send(()).unwrap();
    connecter.join().unwrap().unwrap();

    assert_eq!(dialer.dials(), 2, "the connect dialed anew");
    assert_eq!(dialer.closed(), 1, "the old connection was closed");
    assert_eq!(main_rt.block_on(m.get_status(&p)), Some(Connected));
    assert_eq!((m.active(), m.idle()), (1, 0));
}

/// While a Failed of `p` is between its locked step and its drain of the
/// pool (parked in the drop of `p`'s live connection), the status is set
/// Disconnected and `p` connected again: that connect must not reuse the
/// idle connection the Failed is about to close. It carries the
/// generation from before the Failed: it is refused and closed, and the
/// peer dialed.
#[test]
fn connect_skips_the_pool_while_a_failed_drains_it() {
    let dialer = HookDialer::default();
    let m = hook_manager(&dialer);
    let p = peer(OK, 2);
    let main_rt = rt();
    // `p` with a live connection (the second dial) and an idle one (the
    // first, pooled when its lease is dropped).
    main_rt.block_on(m.connect(p)).unwrap();
    let lease = m.lease(&p).unwrap();
    main_rt.block_on(m.disconnect(&p));
    main_rt.block_on(m.connect(p)).unwrap();
    drop(lease);
    assert_eq!((dialer.dials(), m.active(), m.idle()), (2, 1, 1));

    let (entered, go) = arm(&dialer.on_drop);
    let m2 = m.clone();
    let failer = std::thread::spawn(move || rt().block_on(m2.update_status(p, Failed)));
    entered.recv().unwrap(); // closing the live connection, pool not drained yet
    main_rt.block_on(m.update_status(p, Disconnected));
    main_rt.block_on(m.connect(p)).unwrap();
    assert_eq!(dialer.dials(), 3, "the connect dialed instead of reusing");
    go.send(()).unwrap();
    failer.join().unwrap();

    assert_eq!(
        dialer.closed(),
        2,
        "the live and the idle connection closed"
    );
    assert_eq!(main_rt.block_on(m.get_status(&p)), Some(Connected));
    assert_eq!((m.active(), m.idle()), (1, 0));
}

/// A lease dropped after its peer was disconnected and connected anew
/// (it pools its connection) racing a disconnect of the newer connection,
/// with one idle connection allowed per peer: whichever put lands second
/// is refused and closed, and one connection stays pooled. A status change
/// between a put and its second look at the record is not a Failed (the
/// generation is unchanged), so it closes nothing. A stress test, not a
/// proof.
#[test]
fn a_status_change_racing_a_lease_drop_leaves_its_connection_pooled() {
    let race = LeaseDropRace::new();
    let mut emptied = 0;
    let rounds = if cfg!(miri) { 10 } else { 3_000 };
    for i in 0..rounds {
        let (m, dialer, p) = race.round(i, true, |rt, m, p| {
            rt.block_on(m.disconnect(&p));
        });
        assert_eq!(race.rt.block_on(m.get_status(&p)), Some(Disconnected));
        if m.idle() != 1 {
            emptied += 1;
        }
        assert_eq!(dialer.closed(), 2 - m.idle(), "round {i}");
    }
    assert_eq!(emptied, 0, "rounds that left no connection pooled");
}

/// A lease dropped after its peer was disconnected racing
/// `update_status(p, Failed)` then `update_status(p, Disconnected)`:
/// whichever comes first, the connection must end closed (pooled before
/// the Failed, it is drained; dropped after, the lease carries the
/// generation from before the Failed, and its record closes it). A stress
/// test, not a proof.
#[test]
fn a_lease_dropped_across_failed_then_disconnected_keeps_nothing_pooled() {
    let race = LeaseDropRace::new();
    let rounds = if cfg!(miri) { 10 } else { 3_000 };
    for i in 0..rounds {
        let (m, dialer, _) = race.round(i, false, |rt, m, p| {
            rt.block_on(m.update_status(p, Failed));
            rt.block_on(m.update_status(p, Disconnected));
        });
        assert_eq!((m.idle(), dialer.closed()), (0, 1), "round {i}");
    }
}

/// While a manager holds no peer record, `update_status` writes the status
/// without the record lock; a record made meanwhile (a first `connect`, a
/// first `watch`) must still see the write or have it settled under its
/// lock. Raced many times on fresh managers: at rest the watch shows the
/// table's status, and the peer is Connected exactly when it has a live
/// connection, which holds the one slot in use. A stress test, not a
/// proof: its window is a few instructions wide, and it did not catch the
/// settling step removed in 2,000 rounds; the argument is on
/// `Inner::set_status`.
#[test]
fn a_status_written_without_records_settles_with_a_first_record() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let rounds = if cfg!(miri) { 10 } else { 2_000 };
    for i in 0..rounds {
        let m = ConnectionManager::new(4);
        let p = peer(OK, i);
        let start = Arc::new(std::sync::Barrier::new(2));
        let writer = {
            let (m, start, rt) = (m.clone(), start.clone(), rt.handle().clone());
            std::thread::spawn(move || {
                start.wait();
                rt.block_on(m.update_status(p, Disconnected));
            })
        };
        start.wait();
        let watch = m.watch(&p);
        rt.block_on(m.connect(p)).unwrap();
        writer.join().unwrap();
        let status = rt.block_on(m.get_status(&p));
        assert_eq!(*watch.borrow(), status, "round {i}: the watch");
        let live = m.lease(&p).is_ok();
        assert_eq!(status == Some(Connected), live, "round {i}: {status:?}");
        assert_eq!(m.active(), usize::from(live), "round {i}: slots");
    }
}

/// `memory_usage` counts what the peer records hold: a watch adds its
/// channel, and the channel is freed with its last receiver (at the peer's
/// next transition, or the reaper's sweep).
#[test]
fn memory_usage_counts_watches_and_frees_them_with_their_receivers() {
    let m = ConnectionManager::new(4);
    let rt = rt();
    let peers: Vec<_> = (0..100).map(|i| peer(OK, i)).collect();
    let before = m.memory_usage();
    let watches: Vec<_> = peers.iter().map(|p| m.watch(p)).collect();
    let watched = m.memory_usage();
    assert!(
        watched >= before + 100 * 100,
        "{before} bytes before 100 watches, {watched} with them"
    );
    drop(watches);
    for p in &peers {
        rt.block_on(m.update_status(*p, Connected));
    }
    let after = m.memory_usage();
    assert!(
        after + 100 * 100 <= watched,
        "{watched} bytes with 100 watches, {after} after their receivers left"
    );
}
