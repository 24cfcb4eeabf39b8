//! Persistent peers (`keep_connected`) over real loopback TCP: a kept peer
//! whose server goes away and comes back is Connected again, with its
//! dial backoff between tries, and stays disconnected once
//! `stop_keeping` is called.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connmgr::{ConnectionManager, ConnectionStatus, Dialer, PeerId, TcpDialer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// `TcpDialer`, noting when each dial starts.
struct Logged {
    tcp: TcpDialer,
    dials: Arc<Mutex<Vec<Instant>>>,
}

impl Dialer for Logged {
    type Conn = TcpStream;
    fn dial(
        &self,
        peer: &PeerId,
    ) -> impl std::future::Future<Output = io::Result<TcpStream>> + Send {
        self.dials.lock().unwrap().push(Instant::now());
        self.tcp.dial(peer)
    }
    fn is_alive(&self, conn: &mut TcpStream) -> bool {
        self.tcp.is_alive(conn)
    }
}

/// A server on `addr` (any port if `None`) handing accepted sockets to the
/// test; it stops accepting when the returned task is aborted.
async fn server(
    addr: Option<SocketAddr>,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<TcpStream>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind(addr.unwrap_or("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let _ = tx.send(sock);
        }
    });
    (addr, rx, task)
}

async fn until_status(m: &ConnectionManager<Logged>, p: &PeerId, want: ConnectionStatus) {
    let mut watch = m.watch(p);
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|s| *s == Some(want)),
    )
    .await
    .unwrap_or_else(|_| panic!("{p} never became {want:?}"))
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_peer_is_redialed_with_backoff_until_its_server_is_back() {
    const INITIAL: Duration = Duration::from_millis(100);
    let (addr, mut accepted, server_task) = server(None).await;
    let dials = Arc::new(Mutex::new(Vec::new()));
    let m = ConnectionManager::builder()
        .dial_backoff(INITIAL, Duration::from_millis(400))
        .dial_timeout(Duration::from_secs(2))
        .dialer(Logged {
            tcp: TcpDialer::new(move |_: &PeerId| Some(addr)),
            dials: dials.clone(),
        })
        .build()
        .unwrap();
    let p = PeerId::random();
    m.keep_connected(p);
    assert_eq!(m.state().kept, 1);
    until_status(&m, &p, ConnectionStatus::Connected).await;
    let first = accepted.recv().await.unwrap();

    // The server goes away: the listener closes and the accepted socket
    // with it. The user finds the connection dead and discards it.
    server_task.abort();
    let _ = server_task.await;
    drop(first);
    {
        let mut lease = m.lease(&p).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(lease.read(&mut buf).await.unwrap(), 0, "EOF");
        lease.discard();
    }
    // Redialed while the server is down: refused, then backed off.
    let down_since = Instant::now();
    while dials.lock().unwrap().len() < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(down_since.elapsed() < Duration::from_secs(10), "no redials");
    }
    assert_ne!(m.get_status(&p).await, Some(ConnectionStatus::Connected));

    // Back on the same port: Connected again, by the manager alone.
    let (_, mut accepted, _server) = server(Some(addr)).await;
    until_status(&m, &p, ConnectionStatus::Connected).await;
    let _second = accepted.recv().await.unwrap();
    let dials = dials.lock().unwrap().clone();
    // Between the failed tries, at least half the doubling delay each
    // (the jitter's lower bound): 50, 100, 200 ms.
    let gaps: Vec<Duration> = dials[1..].windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().take(3).enumerate() {
        let floor = INITIAL * (1 << i) / 2;
        assert!(*gap >= floor, "gap {i}: {gap:?} below {floor:?} ({gaps:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_no_longer_kept_stays_disconnected() {
    let (addr, _accepted, _server) = server(None).await;
    let dials = Arc::new(Mutex::new(Vec::new()));
    let m = ConnectionManager::builder()
        .dial_backoff(Duration::from_millis(50), Duration::from_millis(50))
        .dialer(Logged {
            tcp: TcpDialer::new(move |_: &PeerId| Some(addr)),
            dials: dials.clone(),
        })
        .build()
        .unwrap();
    let p = PeerId::random();
    m.keep_connected(p);
    until_status(&m, &p, ConnectionStatus::Connected).await;
    // Disconnected while kept: reconnected (from the pool; or by a dial,
    // if the redial ran between the status change and the pool put, as
    // any connect racing a disconnect may).
    m.disconnect(&p).await;
    until_status(&m, &p, ConnectionStatus::Connected).await;
    let before = dials.lock().unwrap().len();
    m.update_status(p, ConnectionStatus::Failed).await;
    until_status(&m, &p, ConnectionStatus::Connected).await;
    assert!(
        dials.lock().unwrap().len() > before,
        "a Failed peer is dialed"
    );

    m.stop_keeping(&p);
    assert_eq!(m.state().kept, 0);
    // A redial that was in flight at stop_keeping has ended by now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    m.disconnect(&p).await;
    let stopped = dials.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.get_status(&p).await, Some(ConnectionStatus::Disconnected));
    assert_eq!(dials.lock().unwrap().len(), stopped, "no redial");
}

#[tokio::test]
async fn a_blocked_kept_peer_is_not_redialed_until_unblocked() {
    let (addr, _accepted, _server) = server(None).await;
    let dials = Arc::new(Mutex::new(Vec::new()));
    let m = ConnectionManager::builder()
        .dialer(Logged {
            tcp: TcpDialer::new(move |_: &PeerId| Some(addr)),
            dials: dials.clone(),
        })
        .build()
        .unwrap();
    let p = PeerId::random();
    m.block(p);
    m.keep_connected(p);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dials.lock().unwrap().len(), 0);
    m.unblock(&p);
    until_status(&m, &p, ConnectionStatus::Connected).await;
}

/// With the dial backoff off, failed redials of a kept peer are still
/// spaced, doubling from 1 s: over 10 s, dials at 0, 1, 3 and 7 s (not a
/// tight loop against a refusing peer).
#[tokio::test(start_paused = true)]
async fn failed_redials_are_spaced_even_with_the_dial_backoff_off() {
    let dialer = common::TestDialer::default();
    let m = ConnectionManager::builder()
        .dial_backoff(Duration::ZERO, Duration::ZERO)
        .dialer(dialer.clone())
        .build()
        .unwrap();
    m.keep_connected(common::peer(common::FAIL, 0));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(dialer.dials(), 4);
}

/// A redial whose runtime shuts down mid-dial does not leave its peer
/// marked as being redialed: the reaper of another runtime dials it again.
#[test]
fn a_redial_dropped_with_its_runtime_is_made_again_on_another() {
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let dialer = common::TestDialer::default();
    let m = ConnectionManager::builder()
        .dialer(dialer.clone())
        .build()
        .unwrap();
    let first = rt();
    first.block_on(async {
        m.keep_connected(common::peer(common::HANG, 0));
        while dialer.dials() == 0 {
            tokio::task::yield_now().await;
        }
    });
    drop(first); // the hanging redial is dropped with its runtime
    rt().block_on(async {
        // A call on this runtime starts its reaper.
        m.connect(common::peer(common::OK, 0)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while dialer.dials() < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the kept peer is dialed again");
    });
}
