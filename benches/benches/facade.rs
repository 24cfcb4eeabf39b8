#![allow(missing_docs)] // criterion_group! generates undocumented items
//! The `connmgr` facade (`ConnectionManager`) through its documented async
//! API, side by side with the reference implementation's approach: a
//! `DashMap<PeerId, ConnectionStatus>` behind the same `async fn` shape
//! (what qudag-network 0.3.1 keeps its statuses in; its own `update_status`
//! additionally scans, which is not reproduced here: the baseline is the
//! best case of that design).
//!
//! `cargo bench -p connmgr-benches --bench facade`. Times are per
//! operation as each thread sees it (see `run_threads`).
//!
//! How the futures are driven: `get_status`, `update_status` and
//! `get_metrics` never wait on anything, so each call's future is polled
//! once with a no-op waker (`ready` below) and must complete in that poll:
//! the real code path with no runtime overhead, on any number of threads.
//! The manager is populated inside a current-thread tokio runtime, which
//! starts its reaper task there; that runtime is never driven again, so the
//! reaper (which would only sleep) stays out of the figures. The connect
//! groups run on a runtime, with `iter_custom` + `rt.block_on` around the
//! whole loop (criterion's `async_tokio` feature is not enabled).
//!
//! Groups:
//! - `facade/get_status/{n}`: `get_status` on a manager tracking `n`
//!   Connected peers, keys in random order, 1 and 2 threads (each thread
//!   on its own half of the keys). Baseline: `DashMap::get`.
//! - `facade/update_status/{n}`: `update_status` flipping existing peers
//!   Connected <-> Disconnected; every call is a real transition (each
//!   thread walks its keys in passes and alternates the status per pass),
//!   so it pays what a transition costs: the table CAS and the status event
//!   broadcast (the transport-less manager holds no peer record here, so
//!   a status write takes no record lock and pools nothing). Baseline:
//!   `DashMap::insert`.
//! - `facade/get_statuses/{n}` (n = 100k and 1M): the statuses of
//!   [`BATCH`] tracked peers in random order, by one `get_statuses` call
//!   (`get_statuses`) against one `get_status` call per peer
//!   (`get_status_each`); throughput per peer, so the ratio of the two is
//!   what the batch saves per lookup.
//! - `facade/get_metrics/{n}`: `get_metrics` (sums the metric stripes and
//!   computes `memory_usage`, which locks each shard of peer records
//!   briefly). No baseline: the reference returns numbers fed to it.
//! - `facade/connect_disconnect/tcp`: loopback TCP with `TcpDialer` on a
//!   current-thread runtime. `pooled`: `connect` + `disconnect` on one peer,
//!   every `connect` reusing the idle socket after `is_alive`. `fresh`:
//!   `connect` + `update_status(Failed)`, which closes the socket, so every
//!   `connect` dials. Four listeners for the fresh peers spread the
//!   ephemeral ports over four 4-tuples, and they close each accepted socket
//!   at once (the server closes first), so neither descriptors nor client
//!   TIME_WAITs pile up. The ratio fresh/pooled is what pooling buys.
//! - `facade/connect_disconnect/no_transport`: the default `new()`
//!   manager's `connect` + `disconnect` over 1k peers, every `connect`
//!   served from the pool (`()` connections), on a current-thread runtime
//!   and on a 2-worker multi-thread runtime (where the reaper task is live
//!   and is woken by every `disconnect`). `max_sockets` is set above
//!   the 1k connections, so the socket budget closes no idle one.
//! - `facade/adopt_vs_connect/1k_peers`: one fixture (transport-less,
//!   1k peers, a socket budget out of reach), two cycles. `connect`:
//!   `connect` + `disconnect`, every `connect` a pool hit. `adopt`:
//!   `adopt(p, ())` + `disconnect`, every `adopt` installing a connection
//!   handed to it (the `disconnect` then finds the peer's idle slot taken
//!   and closes it). The ratio adopt/connect is what taking over an
//!   accepted connection costs against reusing a pooled one.
//! - `facade/trim_now/100k`: `trim_now` on a manager with 100k Connected
//!   peers (watermarks 50k/100k, no grace period, scores spread over the
//!   peers), closing 50k: one pass over the records, a selection, and a
//!   close each. The manager is built anew, untimed, for every call.
//!
//! Before the groups it prints bytes per tracked peer at 1M peers, counted
//! by the allocator, against what `memory_usage()` reports and against the
//! `DashMap` baseline, and after the TCP group the dial counters, to show
//! that `pooled` really reused its socket.

use std::future::Future;
use std::hint::black_box;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::pin::pin;

use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use connmgr::{ConnectionManager, ConnectionStatus, Dialer, PeerId, TcpDialer};
use connmgr_benches::{
    bench_threads, bytes_per_entry, peer_ids, shuffled_indices, CountingAlloc, Cursor, KeyWalk,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use tokio::runtime::{Builder as RtBuilder, Runtime};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const THREADS: [usize; 2] = [1, 2];
const FLIP: [ConnectionStatus; 2] = [ConnectionStatus::Connected, ConnectionStatus::Disconnected];

/// Polls `f` once with a no-op waker; it must complete in that poll.
#[inline]
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("this future was expected to complete in its first poll"),
    }
}

fn current_thread_rt() -> Runtime {
    RtBuilder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The reference implementation's approach: a `DashMap` behind the
/// documented `async fn` shape.
struct DashStatus {
    map: DashMap<PeerId, ConnectionStatus>,
}

impl DashStatus {
    async fn get_status(&self, peer_id: &PeerId) -> Option<ConnectionStatus> {
        self.map.get(peer_id).map(|r| *r)
    }

    async fn update_status(&self, peer_id: PeerId, status: ConnectionStatus) {
        self.map.insert(peer_id, status);
    }
}

/// A manager and the baseline, both tracking the same `n` Connected peers.
struct Fixture {
    /// The tracked peers in a random order unrelated to their insertion,
    /// walked sequentially (so the walk itself costs no cache miss).
    walk: KeyWalk<PeerId>,
    ours: ConnectionManager,
    dash: DashStatus,
    /// The runtime the manager was populated in (its reaper task lives
    /// there, never polled again).
    _rt: Runtime,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let keys = peer_ids(n, 1);
        let rt = current_thread_rt();
        let ours = ConnectionManager::new(100);
        let dash = DashStatus {
            map: DashMap::new(),
        };
        rt.block_on(async {
            for &k in &keys {
                ours.update_status(k, ConnectionStatus::Connected).await;
                dash.update_status(k, ConnectionStatus::Connected).await;
            }
        });
        // A few messages, so the metrics window has something to sum.
        for i in 0..1_000u64 {
            ours.record_message(Duration::from_micros(100 + i));
        }
        Self {
            walk: KeyWalk::new(&keys, &shuffled_indices(n, 2)),
            ours,
            dash,
            _rt: rt,
        }
    }
}

fn bench_size(c: &mut Criterion, n: usize) {
    let fx = Fixture::new(n);
    let fx = &fx;

    let mut g = c.benchmark_group(format!("facade/get_status/{n}"));
    g.throughput(Throughput::Elements(1));
    for threads in THREADS {
        let cur = Cursor::default();
        bench_threads(&mut g, "ConnectionManager", threads, |t, iters| {
            fx.walk.walk(t, threads, &cur, iters, |k, _| {
                black_box(ready(fx.ours.get_status(k)));
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "DashMap", threads, |t, iters| {
            fx.walk.walk(t, threads, &cur, iters, |k, _| {
                black_box(ready(fx.dash.get_status(k)));
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("facade/update_status/{n}"));
    g.throughput(Throughput::Elements(1));
    for threads in THREADS {
        let cur = Cursor::default();
        bench_threads(&mut g, "ConnectionManager", threads, |t, iters| {
            fx.walk.walk(t, threads, &cur, iters, |k, odd| {
                let s = FLIP[usize::from(odd)];
                ready(fx.ours.update_status(*k, s));
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "DashMap", threads, |t, iters| {
            fx.walk.walk(t, threads, &cur, iters, |k, odd| {
                let s = FLIP[usize::from(odd)];
                ready(fx.dash.update_status(*k, s));
            })
        });
    }
    g.finish();

    if n >= 100_000 {
        bench_batch(c, fx, n);
    }

    let mut g = c.benchmark_group(format!("facade/get_metrics/{n}"));
    g.bench_function("ConnectionManager", |b| {
        b.iter(|| black_box(ready(fx.ours.get_metrics())))
    });
    g.finish();
}

/// Peers per `get_statuses` call in `facade/get_statuses/{n}`.
const BATCH: usize = 1024;

/// `facade/get_statuses/{n}`: one batch call against a call per peer, on
/// the same random chunks of the tracked peers.
fn bench_batch(c: &mut Criterion, fx: &Fixture, n: usize) {
    let keys = peer_ids(n, 1);
    let order = shuffled_indices(n, 3);
    let shuffled: Vec<PeerId> = order.iter().map(|&i| keys[i as usize]).collect();
    let chunks: Vec<&[PeerId]> = shuffled.chunks_exact(BATCH).collect();
    let mut g = c.benchmark_group(format!("facade/get_statuses/{n}"));
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut next = 0;
    g.bench_function("get_statuses", |b| {
        b.iter(|| {
            next = (next + 1) % chunks.len();
            black_box(ready(fx.ours.get_statuses(chunks[next])))
        })
    });
    let mut next = 0;
    g.bench_function("get_status_each", |b| {
        b.iter(|| {
            next = (next + 1) % chunks.len();
            for k in chunks[next] {
                black_box(ready(fx.ours.get_status(k)));
            }
        })
    });
    g.finish();
}

/// A listener on 127.0.0.1 whose accept thread either keeps every accepted
/// socket open (`keep`) or closes it at once (the server closes first).
fn listener(keep: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = l.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        loop {
            match l.accept() {
                Ok((s, _)) if keep => kept.push(s),
                Ok((s, _)) => drop(s),
                // Out of descriptors or similar: back off, keep serving.
                Err(e) if e.kind() != ErrorKind::Interrupted => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => {}
            }
        }
    });
    addr
}

fn bench_tcp(c: &mut Criterion) {
    let pooled_addr = listener(true);
    let fresh_addrs: Vec<SocketAddr> = (0..4).map(|_| listener(false)).collect();
    let pooled_peer = peer_ids(1, 11)[0];
    let fresh_peers = peer_ids(fresh_addrs.len(), 12);
    let book: Vec<(PeerId, SocketAddr)> = std::iter::once((pooled_peer, pooled_addr))
        .chain(fresh_peers.iter().copied().zip(fresh_addrs.iter().copied()))
        .collect();
    let dialer =
        TcpDialer::new(move |p: &PeerId| book.iter().find(|(q, _)| q == p).map(|&(_, a)| a));
    let rt = current_thread_rt();
    let m = ConnectionManager::builder()
        .max_connections(16)
        .dialer(dialer)
        .build()
        .expect("manager");

    let mut g = c.benchmark_group("facade/connect_disconnect/tcp");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("pooled", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    m.connect(pooled_peer).await.expect("pooled connect");
                    m.disconnect(&pooled_peer).await;
                }
                start.elapsed()
            })
        })
    });
    let pooled = m.snapshot().dials;
    g.bench_function("fresh", |b| {
        let mut i = 0usize;
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let p = fresh_peers[i % fresh_peers.len()];
                    i += 1;
                    m.connect(p).await.expect("fresh connect");
                    m.update_status(p, ConnectionStatus::Failed).await;
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    let all = m.snapshot().dials;
    println!(
        "facade/connect_disconnect/tcp: pooled ran {} connects from the pool, {} dials; \
         fresh ran {} dials, {} pool hits, {} failed",
        pooled.pool_hits,
        pooled.ok,
        all.ok - pooled.ok,
        all.pool_hits - pooled.pool_hits,
        all.failed + all.timed_out,
    );
}

/// `connect` + `disconnect` cycles over `peers`, every `connect` served
/// from the pool once each peer has been dialed once (in the set-up).
fn cycle<D: Dialer>(
    rt: &Runtime,
    m: &ConnectionManager<D>,
    peers: &[PeerId],
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters as usize {
            let p = peers[i % peers.len()];
            m.connect(p).await.expect("connect");
            m.disconnect(&p).await;
        }
        start.elapsed()
    })
}

fn bench_no_transport(c: &mut Criterion) {
    let peers = peer_ids(1_000, 21);
    let mut g = c.benchmark_group("facade/connect_disconnect/no_transport");
    g.throughput(Throughput::Elements(1));
    let runtimes = [
        ("current_thread", current_thread_rt()),
        (
            "multi_thread_2w",
            RtBuilder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime"),
        ),
    ];
    for (name, rt) in &runtimes {
        // The default socket budget (2 x max_connections) would close the
        // oldest idle connections of the 1k peers: out of reach here.
        let m = ConnectionManager::builder()
            .max_connections(100)
            .max_sockets(4_000)
            .build()
            .expect("valid settings");
        cycle(rt, &m, &peers, peers.len() as u64); // dial each once: pooled
        g.bench_function(BenchmarkId::new("1k_peers", name), |b| {
            b.iter_custom(|iters| cycle(rt, &m, &peers, iters))
        });
        let d = m.snapshot().dials;
        assert_eq!(
            d.ok,
            peers.len() as u64,
            "every cycle after the first is a pool hit"
        );
    }
    g.finish();
}

fn bench_adopt(c: &mut Criterion) {
    let peers = peer_ids(1_000, 23);
    let rt = current_thread_rt();
    let m = ConnectionManager::builder()
        .max_connections(100)
        .max_sockets(4_000)
        .build()
        .expect("valid settings");
    cycle(&rt, &m, &peers, peers.len() as u64); // dial each once: pooled
    let mut g = c.benchmark_group("facade/adopt_vs_connect/1k_peers");
    g.throughput(Throughput::Elements(1));
    g.bench_function("connect", |b| {
        b.iter_custom(|iters| cycle(&rt, &m, &peers, iters))
    });
    g.bench_function("adopt", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    let p = peers[i % peers.len()];
                    m.adopt(p, ()).await.expect("adopt");
                    m.disconnect(&p).await;
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// A manager with `n` Connected peers, tagged with scores spread over
/// them, ready to trim down to `n / 2`.
fn trim_fixture(rt: &Runtime, peers: &[PeerId]) -> ConnectionManager {
    let n = peers.len();
    let m = ConnectionManager::builder()
        .max_connections(n)
        .watermarks(n / 2, n)
        .grace_period(Duration::ZERO)
        .build()
        .expect("valid settings");
    rt.block_on(async {
        for (i, p) in peers.iter().enumerate() {
            m.connect(*p).await.expect("connect");
            m.tag_peer(p, "score", (i * 7919 % 1000) as i32);
        }
    });
    m
}

fn bench_trim(c: &mut Criterion) {
    const N: usize = 100_000;
    let peers = peer_ids(N, 29);
    let rt = current_thread_rt();
    let mut g = c.benchmark_group("facade/trim_now");
    g.sample_size(10);
    g.bench_function(BenchmarkId::from_parameter("100k"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = trim_fixture(&rt, &peers);
                let start = Instant::now();
                let closed = ready(m.trim_now());
                total += start.elapsed();
                assert_eq!(closed, N / 2, "trimmed down to low");
                drop(m);
            }
            total
        })
    });
    g.finish();
}

fn memory(n: usize) {
    let keys = peer_ids(n, 9);
    let rt = current_thread_rt();
    let mut reported = 0;
    let ours = bytes_per_entry(n, || {
        let m = ConnectionManager::new(100);
        rt.block_on(async {
            for &k in &keys {
                m.update_status(k, ConnectionStatus::Connected).await;
            }
        });
        reported = m.memory_usage();
        m
    });
    let dash = bytes_per_entry(n, || {
        let m = DashMap::new();
        for &k in &keys {
            m.insert(k, ConnectionStatus::Connected);
        }
        m
    });
    println!("facade/memory/{n}: bytes per tracked peer (requested / with malloc overhead):");
    println!(
        "  ConnectionManager {:6.1} / {:6.1}  (memory_usage() reports {:.1})",
        ours.0,
        ours.1,
        reported as f64 / n as f64
    );
    println!(
        "  DashMap           {:6.1} / {:6.1}  (ConnectionManager/DashMap = {:.2} with overhead)",
        dash.0,
        dash.1,
        ours.1 / dash.1
    );
}

fn benches(c: &mut Criterion) {
    memory(1_000_000);
    for n in SIZES {
        bench_size(c, n);
    }
    bench_no_transport(c);
    bench_adopt(c);
    bench_trim(c);
    bench_tcp(c);
}

criterion_group! {
    name = facade;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(facade);
