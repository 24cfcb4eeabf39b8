//! The manager at the process's descriptor limit (`RLIMIT_NOFILE`): a
//! binary of its own, as the limit is the whole process's.
#![cfg(target_os = "linux")]

mod common;

use std::error::Error as _;
use std::io;

use common::*;
use connmgr::{ConnectionManager, Error, TcpDialer};

/// Descriptors this process has open (one more while counting).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn set_fd_limit(soft: u64) -> u64 {
    // SAFETY: `getrlimit` and `setrlimit` read and write the struct given.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        let old = l.rlim_cur;
        l.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
        old
    }
}

fn is_emfile(e: &Error) -> bool {
    let io = e.source().and_then(|s| s.downcast_ref::<io::Error>());
    io.and_then(io::Error::raw_os_error) == Some(libc::EMFILE)
}

/// With the descriptors used up by connections that then go idle, a new
/// dial fails with EMFILE; the manager closes the oldest idle connections
/// and dials once more, and the dial succeeds (instead of failing until the
/// idle connections' TTL passes).
#[test]
fn a_dial_out_of_descriptors_closes_idle_connections_and_retries() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Never accepted: the kernel completes the handshakes into the backlog
    // (128), so the server side takes none of this process's descriptors.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let m = ConnectionManager::builder()
        .max_connections(1_000)
        .max_idle_total(1_000)
        .dialer(TcpDialer::new(move |_| Some(addr)))
        .build()
        .unwrap();
    rt.block_on(async {
        let old = set_fd_limit(open_fds() as u64 + 24);
        let mut connected = Vec::new();
        for i in 0..100 {
            let p = peer(OK, i);
            match m.connect(p).await {
                Ok(()) => connected.push(p),
                Err(e) => {
                    assert!(is_emfile(&e), "{e}: {:?}", e.source());
                    break;
                }
            }
        }
        assert!(connected.len() >= 8, "only {} connected", connected.len());
        assert!(connected.len() < 100, "the limit was never reached");
        for p in &connected {
            m.disconnect(p).await;
        }
        assert_eq!(m.idle(), connected.len());
        eprintln!("{} connections idle at the limit", connected.len());
        let result = m.connect(peer(OK, 1_000)).await;
        set_fd_limit(old);
        result.expect("idle connections closed to make room");
        // The oldest are closed, at most 16 (`SHED_ON_EMFILE`): the rest stay.
        let shed = connected.len().min(16);
        assert_eq!(m.idle(), connected.len() - shed, "idle connections closed");
    });
    drop(listener);
}
