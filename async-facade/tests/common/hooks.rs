//! Parking points that make races deterministic: a broadcast subscriber
//! whose waker blocks the thread that sends the next status event (so a
//! call parks inside its `emit`, after its locked step), and hooks in a
//! dialer's `is_alive` and in a connection's drop.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use connmgr::{ConnectionManager, Dialer, PeerId};

/// Parks the thread that wakes it (the next `emit` of a status event)
/// until `go` is sent; reports through `entered` that it is parked.
pub struct Pause {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    go: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Wake for Pause {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(tx) = self.entered.lock().unwrap().take() {
            tx.send(()).unwrap();
            self.go.lock().unwrap().take().unwrap().recv().unwrap();
        }
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Arms a pause on the next status event `m` emits: returns the channel
/// that reports the emitting thread parked, and the one that lets it go.
pub fn pause_next_event<D: Dialer>(
    m: &ConnectionManager<D>,
) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let mut events = m.subscribe();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let waker = Waker::from(Arc::new(Pause {
        entered: Mutex::new(Some(entered_tx)),
        go: Mutex::new(Some(go_rx)),
    }));
    let mut recv = Box::pin(async move { events.recv().await });
    assert!(recv
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    // Keep the receiver and its registered waker alive for the test.
    std::mem::forget(recv);
    (entered_rx, go_tx)
}

/// A one-shot parking point: armed by [`arm`], it parks the first thread
/// that reaches it until the test lets it go.
pub type Hook = Arc<Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>>;

/// Arms `hook`: returns the channel that reports a thread parked there,
/// and the one that lets it go.
pub fn arm(hook: &Hook) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    *hook.lock().unwrap() = Some((entered_tx, go_rx));
    (entered_rx, go_tx)
}

pub fn park_if_armed(hook: &Hook) {
    let armed = hook.lock().unwrap().take();
    if let Some((entered, go)) = armed {
        entered.send(()).unwrap();
        go.recv().unwrap();
    }
}

/// A connection whose drop counts a close, after parking at the dialer's
/// `on_drop` hook if that is armed.
#[derive(Debug)]
pub struct HookConn {
    closed: Arc<AtomicUsize>,
    on_drop: Hook,
}

impl Drop for HookConn {
    fn drop(&mut self) {
        park_if_armed(&self.on_drop);
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Dials always succeed; `is_alive` parks at `in_is_alive` and a
/// connection's drop at `on_drop`, each while armed.
#[derive(Clone, Debug, Default)]
pub struct HookDialer {
    pub dials: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
    pub in_is_alive: Hook,
    pub on_drop: Hook,
}

impl HookDialer {
    pub fn dials(&self) -> usize {
        self.dials.load(Ordering::SeqCst)
    }
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Dialer for HookDialer {
    type Conn = HookConn;

    async fn dial(&self, _peer: &PeerId) -> std::io::Result<HookConn> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        Ok(HookConn {
            closed: self.closed.clone(),
            on_drop: self.on_drop.clone(),
        })
    }

    fn is_alive(&self, _conn: &mut HookConn) -> bool {
        park_if_armed(&self.in_is_alive);
        true
    }
}

pub fn hook_manager(dialer: &HookDialer) -> ConnectionManager<HookDialer> {
    ConnectionManager::builder()
        .max_connections(4)
        .dialer(dialer.clone())
        .build()
        .unwrap()
}
