//! Test dialers shared by the facade's integration tests.
#![allow(dead_code)]

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connmgr::{Dialer, PeerId};

mod hooks;
#[allow(unused_imports)] // not every test binary uses the hooks
pub use hooks::*;

/// A fake connection that counts when it is closed (dropped).
#[derive(Debug)]
pub struct Conn {
    pub closed: Arc<AtomicUsize>,
    pub alive: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a dial to a peer does, chosen by the peer id's first byte.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behavior {
    Ok,
    Fail,
    Hang,
    Slow(Duration),
    /// Answers after `Duration` from a detached task (a dial that completes
    /// after the manager gave up on it).
    Late(Duration),
    /// Connects, but the connection is dead by the time it is pooled.
    Dies,
}

pub fn peer(kind: u8, n: u32) -> PeerId {
    let mut b = [0u8; 32];
    b[0] = kind;
    b[1..5].copy_from_slice(&n.to_le_bytes());
    PeerId::from_bytes(b)
}

pub const OK: u8 = 0;
pub const FAIL: u8 = 1;
pub const HANG: u8 = 2;
pub const SLOW: u8 = 3;
pub const LATE: u8 = 4;
pub const DIES: u8 = 5;

pub fn behavior(p: &PeerId) -> Behavior {
    match p.as_bytes()[0] {
        FAIL => Behavior::Fail,
        HANG => Behavior::Hang,
        SLOW => Behavior::Slow(Duration::from_millis(u64::from(p.as_bytes()[1] % 20) + 1)),
        LATE => Behavior::Late(Duration::from_secs(20)),
        DIES => Behavior::Dies,
        _ => Behavior::Ok,
    }
}

/// Counts dials and closes; behaves per peer as [`behavior`] says.
#[derive(Clone, Debug, Default)]
pub struct TestDialer {
    pub dials: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
    pub opened: Arc<AtomicUsize>,
}

impl TestDialer {
    pub fn dials(&self) -> usize {
        self.dials.load(Ordering::SeqCst)
    }
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
    fn conn(&self, alive: bool) -> Conn {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Conn {
            closed: self.closed.clone(),
            alive,
        }
    }
}

impl Dialer for TestDialer {
    type Conn = Conn;

    async fn dial(&self, peer: &PeerId) -> io::Result<Conn> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        match behavior(peer) {
            Behavior::Ok => Ok(self.conn(true)),
            Behavior::Dies => Ok(self.conn(false)),
            Behavior::Fail => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused")),
            Behavior::Hang => std::future::pending().await,
            Behavior::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(self.conn(true))
            }
            Behavior::Late(d) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    // If the dial was abandoned, `send` hands the
                    // connection back and it is dropped (closed) here.
                    let _ = tx.send(me.conn(true));
                });
                rx.await.map_err(|_| io::Error::other("dialer task gone"))
            }
        }
    }

    fn is_alive(&self, conn: &mut Conn) -> bool {
        conn.alive
    }
}
