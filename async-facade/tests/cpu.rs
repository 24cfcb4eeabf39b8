//! CPU time an idle manager spends, measured with `getrusage` for the
//! whole process: a binary of its own, so no other test's work counts.

mod common;

use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// CPU time the process has used (every thread: the reaper's, and any
/// blocking-pool thread's).
#[cfg(target_os = "linux")]
fn process_cpu() -> Duration {
    // SAFETY: `getrusage` writes the struct it is given; zeroed is a valid
    // `rusage`.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
        u
    };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// A `forget_after` shorter than a second is refused, and at the shortest
/// accepted one, an idle manager tracking many peers (one of them pooled,
/// so sweeps are due) spends a small share of a core on its sweeps. The
/// bound is half the idle time, ten times what the pacing allows, so a
/// loaded machine cannot make it flake.
#[cfg(target_os = "linux")]
#[test]
fn a_tiny_forget_after_is_refused_and_idle_sweeps_cost_little() {
    let err = ConnectionManager::builder()
        .forget_after(Duration::from_millis(1))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("forget_after"), "{err}");
    let m = ConnectionManager::builder()
        .forget_after(connmgr::Config::MIN_FORGET_AFTER)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    runtime().block_on(async {
        for i in 0..100_000 {
            m.update_status(peer(OK, 1_000 + i), Connected).await;
        }
        let p = peer(OK, 1);
        m.connect(p).await.unwrap();
        m.disconnect(&p).await;
        let idle = Duration::from_secs(3);
        let before = process_cpu();
        tokio::time::sleep(idle).await;
        let used = process_cpu() - before;
        eprintln!(
            "{} peers tracked: {used:?} of CPU in {idle:?} idle",
            m.tracked_peers()
        );
        assert!(used < idle / 2, "{used:?} of CPU in {idle:?} idle");
        assert_eq!(m.idle(), 1, "still pooled");
    });
}
