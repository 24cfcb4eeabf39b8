//! The main job: a connection manager driving real TCP peers on loopback.
//!
//! Starts echo peers on 127.0.0.1, then walks the manager through fresh
//! dials, messages with measured latency, the connection limit, disconnects
//! into the idle pool, pooled reconnects, a peer that refuses, and idle
//! expiry with no API call. Then a second manager plays a node that
//! accepts as well as dials: inbound connections adopted (and refused past
//! `max_inbound`), protected peers, and a trim down to the low watermark
//! that closes the lowest-scored connections and spares the protected
//! ones. It prints the metrics and the Prometheus exposition, and ends
//! with a graceful drain: a lease handed back before the deadline, one
//! held past it. The refusing peer also shows its dial backoff. Run `cargo run --release --example loopback --
//! --help` for the flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connmgr::{
    ConnectionManager, ConnectionStatus, Direction, Error, Limit, PeerId, Reason, TcpDialer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HELP: &str = "\
loopback: drive connmgr against real TCP echo peers on 127.0.0.1

USAGE:
    cargo run --release --example loopback -- [FLAGS]

FLAGS:
    --peers N             echo peers to start (default 64, 1..=5000)
    --max-connections N   the manager's connection limit (default 48, >= 1)
    --messages N          echo round trips per connected peer (default 20)
    --pool-timeout-ms N   idle TTL in the pool, ms (default 1500, >= 1)
    --help                print this and exit
";

struct Args {
    peers: usize,
    max_connections: usize,
    messages: usize,
    pool_timeout: Duration,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        peers: 64,
        max_connections: 48,
        messages: 20,
        pool_timeout: Duration::from_millis(1500),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag} takes a whole number, got {value:?}"))?;
        match flag.as_str() {
            "--peers" if (1..=5000).contains(&n) => args.peers = n as usize,
            "--max-connections" if n >= 1 => args.max_connections = n as usize,
            "--messages" => args.messages = n as usize,
            "--pool-timeout-ms" if n >= 1 => args.pool_timeout = Duration::from_millis(n),
            "--peers" | "--max-connections" | "--pool-timeout-ms" => {
                return Err(format!("{flag} {n} is out of range (see --help)"))
            }
            _ => return Err(format!("unknown flag {flag} (see --help)")),
        }
    }
    Ok(Some(args))
}

/// An echo peer on a fresh loopback port.
async fn echo_peer() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn step(start: Instant, what: std::fmt::Arguments<'_>) {
    println!("[{:>6.2}s] {what}", start.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loopback: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loopback: {}", chain(&*e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, `: `-separated (connmgr's errors print only
/// themselves and hand their cause out as `source`).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut book = HashMap::new();
    let mut peers = Vec::with_capacity(args.peers);
    for _ in 0..args.peers {
        let id = PeerId::random();
        book.insert(id, echo_peer().await?);
        peers.push(id);
    }
    // A peer whose port refuses: bound, then closed again.
    let refusing = PeerId::random();
    book.insert(
        refusing,
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?,
    );
    step(
        start,
        format_args!("started {} echo peers on 127.0.0.1", args.peers),
    );

    let book = Arc::new(book);
    let resolver = {
        let book = Arc::clone(&book);
        move |p: &PeerId| book.get(p).copied()
    };
    let manager = ConnectionManager::builder()
        .max_connections(args.max_connections)
        .pool_timeout(args.pool_timeout)
        .dial_timeout(Duration::from_secs(2))
        .dialer(TcpDialer::new(resolver))
        .build()?;

    // 1. Fresh dials, all at once: the limit admits max_connections.
    let t = Instant::now();
    let results = connect_all(&manager, &peers).await;
    let fresh_time = t.elapsed();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(Error::LimitReached { .. })))
        .count();
    step(
        start,
        format_args!(
        "connect: {ok} connected by fresh dials, {limited} refused by the limit of {} (active {})",
        args.max_connections,
        manager.active()
    ),
    );

    // 2. Messages over the live connections, latency measured.
    let connected: Vec<PeerId> = peers
        .iter()
        .copied()
        .filter(|p| manager.lease(p).is_ok())
        .collect();
    let exchanged = exchange(&manager, &connected, args.messages).await?;
    let m = manager.get_metrics().await;
    step(
        start,
        format_args!(
            "messages: {exchanged} echo round trips, avg latency {:?}, {:.0} msg/s",
            m.avg_latency, m.messages_per_second
        ),
    );

    // 3. Disconnect: connections go idle in the pool; the rest get slots.
    for p in &connected {
        manager.disconnect(p).await;
    }
    step(
        start,
        format_args!(
            "disconnect: {} idle in the pool, active {}",
            manager.idle(),
            manager.active()
        ),
    );
    let rest: Vec<PeerId> = peers
        .iter()
        .copied()
        .filter(|p| !connected.contains(p))
        .collect();
    let rest_ok = connect_all(&manager, &rest)
        .await
        .iter()
        .filter(|r| r.is_ok())
        .count();
    for p in &rest {
        manager.disconnect(p).await;
    }
    step(
        start,
        format_args!(
            "connect the other {}: {rest_ok} connected, then disconnected (idle {})",
            rest.len(),
            manager.idle()
        ),
    );

    // 4. Pooled reconnects: no dial, the idle socket is checked and reused.
    let before = manager.snapshot().dials;
    let t = Instant::now();
    let again = connect_all(&manager, &connected).await;
    let pooled_time = t.elapsed();
    let hits = manager.snapshot().dials.pool_hits - before.pool_hits;
    step(start, format_args!(
        "reconnect {}: {} ok, {hits} from the pool; {:.1} us per pooled reconnect vs {:.1} us per fresh dial",
        connected.len(),
        again.iter().filter(|r| r.is_ok()).count(),
        pooled_time.as_secs_f64() * 1e6 / connected.len().max(1) as f64,
        fresh_time.as_secs_f64() * 1e6 / ok.max(1) as f64,
    ));
    exchange(&manager, &connected, 1).await?;
    for p in &connected {
        manager.disconnect(p).await;
    }

    // 5. A peer that refuses.
    match manager.connect(refusing).await {
        Err(e) => step(
            start,
            format_args!(
                "refusing peer: {} (status {:?})",
                chain(&e),
                manager.get_status(&refusing).await
            ),
        ),
        Ok(()) => return Err("the refusing peer accepted a connection".into()),
    }
    // Its dial backoff: the next connect is refused without a dial, for
    // the first delay (1 s by default, jittered over its upper half).
    let dials = manager.snapshot().dials.failed;
    match manager.connect(refusing).await {
        Err(Error::BackingOff { until, .. }) => {
            let wait = until.saturating_duration_since(tokio::time::Instant::now().into_std());
            // At most the first delay (1 s); how much of it is left
            // depends on how long the steps since took.
            if wait.is_zero() || wait > Duration::from_secs(1) {
                return Err(format!("backoff of {wait:?}, expected up to 1 s").into());
            }
            if manager.snapshot().dials.failed != dials {
                return Err("a backing-off peer was dialed".into());
            }
            step(
                start,
                format_args!("refusing peer again: backing off, no dial, for {wait:.2?}"),
            );
        }
        other => return Err(format!("expected BackingOff, got {other:?}").into()),
    }

    // 6. Expiry with no API call: the reaper closes idle connections.
    step(
        start,
        format_args!(
            "waiting for idle expiry ({:?} TTL), {} idle now",
            args.pool_timeout,
            manager.idle()
        ),
    );
    let deadline = Instant::now() + args.pool_timeout + Duration::from_secs(5);
    while manager.idle() > 0 && Instant::now() < deadline {
        tokio::time::sleep(args.pool_timeout / 4).await;
        step(start, format_args!("  idle {}", manager.idle()));
    }
    if manager.idle() > 0 {
        return Err("idle connections outlived their TTL".into());
    }

    // 7. The peer manager: a node that accepts as well as dials.
    peer_manager(start, &book, &peers).await?;

    let m = manager.get_metrics().await;
    println!();
    println!("NetworkMetrics {{");
    println!("    messages_per_second: {:.1},", m.messages_per_second);
    println!("    connections: {},", m.connections);
    println!("    avg_latency: {:?},", m.avg_latency);
    println!("    memory_usage: {} bytes,", m.memory_usage);
    println!("}}");
    println!(
        "statuses: {} disconnected, {} failed, {} connected",
        manager.count(ConnectionStatus::Disconnected),
        manager.count(ConnectionStatus::Failed),
        manager.count(ConnectionStatus::Connected)
    );
    println!();
    print!("{}", manager.prometheus());
    println!();

    // 8. A graceful drain: two peers leased, one handed back while the
    // drain waits (closed as it comes back), one held past the deadline
    // (counted as forced, its I/O cut off); nothing new accepted
    // meanwhile.
    let drained = &peers[..3];
    for p in drained {
        manager.connect(*p).await?;
    }
    let back_in_time = manager.lease(&drained[0])?;
    let mut held = manager.lease(&drained[1])?;
    let deadline = Duration::from_secs(1);
    let t = Instant::now();
    let drain = tokio::spawn({
        let manager = manager.clone();
        async move { manager.shutdown_gracefully(deadline).await }
    });
    // The drain has begun once the manager says it is shut down.
    while !manager.is_shut_down() {
        tokio::task::yield_now().await;
    }
    if !matches!(manager.connect(drained[2]).await, Err(Error::ShutDown)) {
        return Err("a connect was accepted during the drain".into());
    }
    drop(back_in_time); // handed back while the drain waits
    let forced = drain.await?;
    let took = t.elapsed();
    let cut = held.write_all(b"late").await.is_err();
    drop(held);
    step(
        start,
        format_args!(
            "graceful drain: 1 lease back in time, {forced} forced at the {deadline:?} deadline \
             (after {took:.2?}), late write refused: {cut}; sockets open {}",
            manager.in_use(Limit::Sockets)
        ),
    );
    if forced != 1 || !cut || took < deadline || manager.in_use(Limit::Sockets) != 0 {
        return Err("the drain did not end as expected".into());
    }
    step(start, format_args!("done"));
    Ok(())
}

/// Inbound connections the node accepts, of which `max_inbound` it keeps.
const CALLERS: usize = 10;
const MAX_INBOUND: usize = 8;
/// Outbound peers the node dials.
const DIALED: usize = 12;
const LOW: usize = 8;
const HIGH: usize = 16;

/// A remote peer that calls the node: connects, says who it is (its 32-byte
/// id), then echoes until the node closes. Returns how many bytes it
/// echoed (0: the node closed at once, refusing it).
async fn caller(node: SocketAddr, id: PeerId) -> std::io::Result<usize> {
    let mut sock = TcpStream::connect(node).await?;
    sock.write_all(id.as_bytes()).await?;
    let (mut echoed, mut buf) = (0, [0u8; 256]);
    loop {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(echoed),
            Ok(n) => {
                sock.write_all(&buf[..n]).await?;
                echoed += n;
            }
        }
    }
}

/// Step 7: a node with limits by kind and watermarks. Callers connect in
/// and are adopted (the inbound limit refuses the last two), the node
/// dials echo peers, two callers and two dialed peers are protected, and a
/// trim closes the lowest-scored unprotected connections down to `LOW`.
async fn peer_manager(
    start: Instant,
    book: &Arc<HashMap<PeerId, SocketAddr>>,
    peers: &[PeerId],
) -> Result<(), Box<dyn std::error::Error>> {
    let resolver = {
        let book = Arc::clone(book);
        move |p: &PeerId| book.get(p).copied()
    };
    let node = ConnectionManager::builder()
        .max_connections(32)
        .max_inbound(MAX_INBOUND)
        .watermarks(LOW, HIGH)
        .grace_period(Duration::ZERO)
        .dialer(TcpDialer::new(resolver))
        .build()?;
    let mut events = node.subscribe();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let here = listener.local_addr()?;

    // Protection belongs to the peer, connected or not: two of the peers
    // to dial are protected before any connection to them exists.
    let callers: Vec<PeerId> = (0..CALLERS).map(|_| PeerId::random()).collect();
    let dialed = &peers[..DIALED.min(peers.len())];
    for p in &dialed[..2] {
        node.protect(p, "bootstrap");
    }

    // Inbound: accept, read the caller's id, adopt the stream.
    let tasks: Vec<_> = callers
        .iter()
        .map(|&id| tokio::spawn(caller(here, id)))
        .collect();
    let (mut adopted, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..CALLERS {
        let (mut sock, _) = listener.accept().await?;
        let mut id = [0u8; 32];
        sock.read_exact(&mut id).await?;
        let id = PeerId::from_bytes(id);
        match node.adopt(id, sock).await {
            Ok(()) => adopted.push(id),
            Err(e @ Error::LimitReached { .. }) => refused.push((id, e)),
            Err(e) => return Err(e.into()),
        }
    }
    step(
        start,
        format_args!(
            "peer manager: accepted {CALLERS} inbound connections: {} adopted, {} refused ({})",
            adopted.len(),
            refused.len(),
            refused
                .first()
                .map_or(String::new(), |(_, e)| e.to_string()),
        ),
    );
    if adopted.len() != MAX_INBOUND || refused.len() != CALLERS - MAX_INBOUND {
        return Err("the inbound limit did not hold".into());
    }
    if !refused.iter().all(|(_, e)| {
        matches!(
            e,
            Error::LimitReached {
                limit: Limit::Inbound,
                ..
            }
        )
    }) {
        return Err("a refusal named the wrong limit".into());
    }
    // Adopted streams are leased like dialed ones: one echo each.
    let echoed = exchange(&node, &adopted, 1).await?;
    // Two of the callers are protected too.
    for p in &adopted[..2] {
        node.protect(p, "relay");
    }
    let protected = [adopted[0], adopted[1], dialed[0], dialed[1]];

    // Outbound: dial echo peers; score every peer (the lowest go first).
    let dials = connect_all(&node, dialed).await;
    if let Some(Err(e)) = dials.iter().find(|r| r.is_err()) {
        return Err(format!("dialing an echo peer failed: {}", chain(e)).into());
    }
    for (i, p) in adopted.iter().chain(dialed).enumerate() {
        node.tag_peer(p, "useful", (i as i32 * 37) % 100);
    }
    let inbound = adopted
        .iter()
        .filter(|p| node.direction(p) == Some(Direction::Inbound))
        .count();
    step(
        start,
        format_args!(
            "peer manager: {} connected ({inbound} inbound, echoed {echoed} messages; {} dialed), \
             {} protected; watermarks {LOW}/{HIGH} count the {} unprotected",
            node.count(ConnectionStatus::Connected),
            dialed.len(),
            protected.len(),
            node.count(ConnectionStatus::Connected) - protected.len(),
        ),
    );

    // Trim down to the low watermark: lowest scores first, never a
    // protected peer.
    let connected_before: Vec<PeerId> = adopted.iter().chain(dialed).copied().collect();
    let closed = node.trim_now().await;
    let mut trimmed = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.reason == Reason::Trimmed {
            trimmed.push(e.peer);
        }
    }
    let survivors: Vec<PeerId> = {
        let mut v = Vec::new();
        for p in &connected_before {
            if node.get_status(p).await == Some(ConnectionStatus::Connected) {
                v.push(*p);
            }
        }
        v
    };
    let max_trimmed = trimmed.iter().map(|p| node.peer_score(p)).max();
    let min_kept = survivors
        .iter()
        .filter(|p| !protected.contains(p))
        .map(|p| node.peer_score(p))
        .min();
    let mut scores: Vec<i64> = trimmed.iter().map(|p| node.peer_score(p)).collect();
    scores.sort_unstable();
    step(
        start,
        format_args!(
            "trim to the low watermark ({LOW}): closed {closed} unprotected connections, \
             lowest scores first {scores:?}; kept {} unprotected (scores {} and up) \
             and {}/{} protected",
            survivors.len() - protected.len(),
            min_kept.unwrap_or_default(),
            protected.iter().filter(|p| survivors.contains(p)).count(),
            protected.len(),
        ),
    );
    if closed != trimmed.len() || survivors.len() != LOW + protected.len() {
        return Err("the trim did not close down to the low watermark".into());
    }
    if !protected.iter().all(|p| survivors.contains(p)) {
        return Err("a protected peer was trimmed".into());
    }
    if max_trimmed > min_kept {
        return Err("a higher score was trimmed before a lower one".into());
    }
    // Closing every connection ends the callers: a refused one read EOF
    // at once (it echoed nothing), an adopted one echoed its message.
    node.shutdown().await;
    let mut eof_at_once = 0;
    for (id, t) in callers.iter().zip(tasks) {
        let echoed = t.await??;
        let was_refused = refused.iter().any(|(r, _)| r == id);
        if was_refused != (echoed == 0) {
            return Err("a caller saw the wrong end of its connection".into());
        }
        eof_at_once += usize::from(was_refused);
    }
    step(
        start,
        format_args!(
            "peer manager: the {eof_at_once} refused callers read EOF at once; node shut down"
        ),
    );
    Ok(())
}

async fn connect_all<D: connmgr::Dialer>(
    manager: &ConnectionManager<D>,
    peers: &[PeerId],
) -> Vec<connmgr::Result<()>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, p) in peers.iter().copied().enumerate() {
        let m = manager.clone();
        set.spawn(async move { (i, m.connect(p).await) });
    }
    let mut out: Vec<_> = (0..peers.len()).map(|_| Ok(())).collect();
    while let Some(r) = set.join_next().await {
        let (i, res) = r.expect("connect task panicked");
        out[i] = res;
    }
    out
}

/// `rounds` echo round trips with each peer, concurrently, recording each
/// latency in the manager's metrics.
async fn exchange(
    manager: &ConnectionManager<TcpDialer>,
    peers: &[PeerId],
    rounds: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut set = tokio::task::JoinSet::new();
    for &p in peers {
        let mut lease = manager.lease(&p)?;
        let m = manager.clone();
        set.spawn(async move {
            let mut buf = [0u8; 32];
            for _ in 0..rounds {
                let t = Instant::now();
                lease.write_all(p.as_bytes()).await?;
                lease.read_exact(&mut buf).await?;
                m.record_message(t.elapsed());
                m.record_bytes(32, 32);
                if &buf != p.as_bytes() {
                    return Err(std::io::Error::other("echo mismatch"));
                }
            }
            Ok::<usize, std::io::Error>(rounds)
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    Ok(total)
}
