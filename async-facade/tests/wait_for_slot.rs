//! `Builder::wait_for_slot`: `connect` waits, first come first served, for
//! a free slot up to a deadline; cancelled waiters leave no trace
//! (`docs/failure-modes.md` #1, #5). On tokio's paused clock.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, Error, Limit, Limits};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

fn manager(max: usize) -> ConnectionManager<TestDialer> {
    ConnectionManager::builder()
        .max_connections(max)
        .wait_for_slot(WAIT)
        .dialer(TestDialer::default())
        .build()
        .unwrap()
}

/// Lets spawned tasks run until each is parked.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_order_as_slots_free() {
    let m = manager(1);
    m.connect(peer(OK, 0)).await.unwrap();
    let served = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 1..=6u32 {
        let (m, served) = (m.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            m.connect(peer(OK, n)).await.unwrap();
            served.lock().unwrap().push(n);
            // Hold the slot a moment, then free it for the next.
            tokio::time::sleep(Duration::from_millis(10)).await;
            m.disconnect(&peer(OK, n)).await;
        }));
        settle().await; // queued before the next one comes
    }
    assert_eq!(m.state().waiting_for_slot, 6);
    m.disconnect(&peer(OK, 0)).await;
    // A newcomer finding a slot free while others wait queues behind them.
    let late = tokio::spawn({
        let (m, served) = (m.clone(), served.clone());
        async move {
            m.connect(peer(OK, 99)).await.unwrap();
            served.lock().unwrap().push(99);
        }
    });
    for t in tasks {
        t.await.unwrap();
    }
    late.await.unwrap();
    assert_eq!(*served.lock().unwrap(), [1, 2, 3, 4, 5, 6, 99]);
    assert_eq!(m.state().waiting_for_slot, 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_at_its_deadline_with_limit_reached() {
    let m = manager(1);
    m.connect(peer(OK, 0)).await.unwrap();
    let start = Instant::now();
    let err = m.connect(peer(OK, 1)).await.unwrap_err();
    assert_eq!(start.elapsed(), WAIT);
    assert!(
        matches!(
            err,
            Error::LimitReached {
                limit: Limit::Connections,
                max: 1
            }
        ),
        "{err}"
    );
    assert_eq!((m.active(), m.state().waiting_for_slot), (1, 0));
    // Without wait_for_slot: at once.
    let fast = ConnectionManager::builder()
        .max_connections(1)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    fast.connect(peer(OK, 0)).await.unwrap();
    let start = Instant::now();
    assert!(fast.connect(peer(OK, 1)).await.is_err());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_raised_limit_and_a_shutdown_wake_the_waiters() {
    let m = manager(1);
    m.connect(peer(OK, 0)).await.unwrap();
    let waiter = tokio::spawn({
        let m = m.clone();
        async move { m.connect(peer(OK, 1)).await }
    });
    settle().await;
    m.set_limits(Limits::new(2)).unwrap();
    waiter.await.unwrap().unwrap();
    let waiters: Vec<_> = (2..5)
        .map(|n| {
            let m = m.clone();
            tokio::spawn(async move { m.connect(peer(OK, n)).await })
        })
        .collect();
    settle().await;
    m.shutdown().await;
    for w in waiters {
        assert!(matches!(w.await.unwrap(), Err(Error::ShutDown)));
    }
}

/// Many waiters, some cancelled (aborted) at random moments, some of them
/// while at the head of the queue: the others are all served, and
/// afterwards nothing is counted, queued or held.
#[tokio::test(start_paused = true)]
async fn cancelled_waiters_leave_no_trace() {
    const WAITERS: u32 = 200;
    let m = manager(2);
    m.connect(peer(OK, 0)).await.unwrap();
    m.connect(peer(OK, 1)).await.unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut tasks = Vec::new();
    for n in 0..WAITERS {
        let m = m.clone();
        tasks.push((
            n,
            tokio::spawn(async move {
                m.connect(peer(OK, 100 + n)).await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                m.disconnect(&peer(OK, 100 + n)).await;
                Ok::<_, Error>(())
            }),
        ));
    }
    settle().await;
    m.disconnect(&peer(OK, 0)).await;
    m.disconnect(&peer(OK, 1)).await;
    let mut cancelled = Vec::new();
    let mut kept = Vec::new();
    for (n, t) in tasks {
        if next() % 3 == 0 {
            // Let the queue move a random bit, then cancel this one.
            for _ in 0..next() % 4 {
                tokio::task::yield_now().await;
            }
            t.abort();
            cancelled.push((n, t));
        } else {
            kept.push((n, t));
        }
    }
    // A task aborted after its connect succeeded holds its connection:
    // that is no waiter's trace, so it is disconnected here.
    for (n, t) in cancelled {
        let _ = t.await; // aborted, or finished before the abort
        m.disconnect(&peer(OK, 100 + n)).await;
    }
    for (n, t) in kept {
        t.await
            .unwrap()
            .unwrap_or_else(|e| panic!("waiter {n}: {e}"));
    }
    let s = m.state();
    assert_eq!(
        (s.waiting_for_slot, s.active, s.outbound, s.pending_dials),
        (0, 0, 0, 0)
    );
    // The queue is free: two connects take both slots at once.
    let start = Instant::now();
    m.connect(peer(OK, 0)).await.unwrap();
    m.connect(peer(OK, 1)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// A waiter that finds `max_connections` free but `max_outbound` full
/// gives the connection unit it took back without waking itself: it
/// waits, and gives up at its deadline naming the outbound limit (a
/// self-wake would spin without ever seeing the deadline).
#[tokio::test(start_paused = true)]
async fn a_waiter_refused_by_a_later_limit_waits_and_meets_its_deadline() {
    let m = ConnectionManager::builder()
        .max_connections(4)
        .max_outbound(1)
        .wait_for_slot(WAIT)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    m.connect(peer(OK, 0)).await.unwrap();
    let start = Instant::now();
    let err = m.connect(peer(OK, 1)).await.unwrap_err();
    assert_eq!(start.elapsed(), WAIT);
    assert!(
        matches!(
            err,
            Error::LimitReached {
                limit: Limit::Outbound,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!((m.active(), m.state().waiting_for_slot), (1, 0));
}
