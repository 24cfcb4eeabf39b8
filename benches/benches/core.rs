#![allow(missing_docs)] // criterion_group! generates undocumented items
//! connmgr-core's `StatusTable` side by side with what a user would pick
//! instead: `DashMap` (what the reference implementation uses), the best
//! concurrent maps in Rust (papaya and scc) and `RwLock<HashMap>`, all with
//! std's keyed `RandomState`, on the same keys in the same random order.
//! Plus a single-threaded `HashMap::get` as the floor for lookups, the
//! keyed hash alone (a lower bound for every contender), batch lookups
//! (`get_many`, against the others' best per-key lookup), and bytes per
//! entry at 1M keys, as built and under churn. Churn is a never-seen peer
//! inserted and removed; reconnect is one of 65,536 recurring peers
//! inserted and removed.
//!
//! `cargo bench -p connmgr-benches --bench core`; times are per operation
//! as each thread sees it (see `run_threads`).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::Duration;

use connmgr_benches::{
    bench_op, bench_threads, bytes_per_entry, flush_epoch, peer_ids, shuffled_indices,
    CountingAlloc, Cursor, KeyWalk,
};
use connmgr_core::{ConnectionStatus, PeerId, StatusTable};
use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use dashmap::DashMap;
use parking_lot::RwLock;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const THREADS: [usize; 2] = [1, 2];
/// Keys per `get_many` call in `core/get_many`.
const BATCH: usize = 64;
const FLIP: [ConnectionStatus; 2] = [ConnectionStatus::Connected, ConnectionStatus::Disconnected];

struct Fixture {
    walk: KeyWalk<PeerId>,
    fresh: Vec<PeerId>,
    ours: StatusTable<PeerId>,
    dash: DashMap<PeerId, ConnectionStatus, RandomState>,
    pap: papaya::HashMap<PeerId, ConnectionStatus, RandomState>,
    scc: scc::HashMap<PeerId, ConnectionStatus, RandomState>,
    locked: RwLock<HashMap<PeerId, ConnectionStatus, RandomState>>,
    plain: HashMap<PeerId, ConnectionStatus, RandomState>,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let keys = peer_ids(n, 1);
        let ours = StatusTable::new();
        let dash = DashMap::with_hasher(RandomState::new());
        let pap = papaya::HashMap::with_hasher(RandomState::new());
        let scc = scc::HashMap::with_hasher(RandomState::new());
        let mut plain = HashMap::with_hasher(RandomState::new());
        for &k in &keys {
            ours.insert(k, ConnectionStatus::Connected);
            dash.insert(k, ConnectionStatus::Connected);
            pap.pin().insert(k, ConnectionStatus::Connected);
            let _ = scc.insert_sync(k, ConnectionStatus::Connected);
            plain.insert(k, ConnectionStatus::Connected);
        }
        Self {
            walk: KeyWalk::new(&keys, &shuffled_indices(n, 2)),
            fresh: peer_ids(1 << 16, 3),
            locked: RwLock::new(plain.clone()),
            ours,
            dash,
            pap,
            scc,
            plain,
        }
    }

    #[inline]
    fn fresh(&self, t: usize, i: u64) -> PeerId {
        self.fresh[(i as usize * 2 + t) & (self.fresh.len() - 1)]
    }
}

fn bench_size(c: &mut Criterion, n: usize) {
    let fx = Fixture::new(n);
    let fx = &fx;
    let w = &fx.walk;
    let flip = |odd: bool| FLIP[usize::from(odd)];

    let mut g = c.benchmark_group(format!("core/get/{n}"));
    g.throughput(Throughput::Elements(1));
    for threads in THREADS {
        let cur = Cursor::default();
        bench_threads(&mut g, "StatusTable", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, _| {
                black_box(fx.ours.get(k));
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "DashMap", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, _| {
                black_box(fx.dash.get(k).map(|r| *r));
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "papaya", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, _| {
                black_box(fx.pap.pin().get(k).copied());
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "scc", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, _| {
                black_box(fx.scc.read_sync(k, |_, v| *v));
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "RwLock<HashMap>", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, _| {
                black_box(fx.locked.read().get(k).copied());
            })
        });
    }
    let cur = Cursor::default();
    bench_threads(&mut g, "HashMap (floor)", 1, |t, iters| {
        w.walk(t, 1, &cur, iters, |k, _| {
            black_box(fx.plain.get(k).copied());
        })
    });
    // The keyed hash alone, on the same walk: every contender above hashes
    // the key once per call with std's SipHash, so no lookup or update of
    // any of them can take less than this (`report.py` sets it against the
    // time the 2x targets allow).
    let cur = Cursor::default();
    bench_threads(&mut g, "hash only", 1, |t, iters| {
        w.walk(t, 1, &cur, iters, |k, _| {
            black_box(fx.plain.hasher().hash_one(k));
        })
    });
    g.finish();

    // Every call is a real transition: the status alternates per pass.
    let mut g = c.benchmark_group(format!("core/update/{n}"));
    g.throughput(Throughput::Elements(1));
    for threads in THREADS {
        let cur = Cursor::default();
        bench_threads(&mut g, "StatusTable", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, odd| {
                black_box(fx.ours.set(k, flip(odd)));
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "DashMap", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, odd| {
                if let Some(mut v) = fx.dash.get_mut(k) {
                    *v = flip(odd);
                }
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "papaya", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, odd| {
                black_box(fx.pap.pin().update(*k, |_| flip(odd)));
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "scc", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, odd| {
                black_box(fx.scc.update_sync(k, |_, v| *v = flip(odd)));
            })
        });
        let cur = Cursor::default();
        bench_threads(&mut g, "RwLock<HashMap>", threads, |t, iters| {
            w.walk(t, threads, &cur, iters, |k, odd| {
                if let Some(v) = fx.locked.write().get_mut(k) {
                    *v = flip(odd);
                }
            })
        });
    }
    g.finish();

    // A peer that reconnects: 65,536 recurring ids, each inserted and
    // removed again (ours reuses the key's own removed entry).
    let mut g = c.benchmark_group(format!("core/reconnect/{n}"));
    g.throughput(Throughput::Elements(1));
    for threads in THREADS {
        bench_op(&mut g, "StatusTable", threads, |t, i| {
            let k = fx.fresh(t, i);
            fx.ours.insert(k, ConnectionStatus::Connecting);
            black_box(fx.ours.remove(&k));
        });
        bench_op(&mut g, "DashMap", threads, |t, i| {
            let k = fx.fresh(t, i);
            fx.dash.insert(k, ConnectionStatus::Connecting);
            black_box(fx.dash.remove(&k));
        });
        bench_op(&mut g, "papaya", threads, |t, i| {
            let k = fx.fresh(t, i);
            let m = fx.pap.pin();
            m.insert(k, ConnectionStatus::Connecting);
            black_box(m.remove(&k));
        });
        bench_op(&mut g, "scc", threads, |t, i| {
            let k = fx.fresh(t, i);
            let _ = fx.scc.insert_sync(k, ConnectionStatus::Connecting);
            black_box(fx.scc.remove_sync(&k));
        });
        bench_op(&mut g, "RwLock<HashMap>", threads, |t, i| {
            let k = fx.fresh(t, i);
            fx.locked.write().insert(k, ConnectionStatus::Connecting);
            black_box(fx.locked.write().remove(&k));
        });
    }
    g.finish();

    // Churn: a new peer connected,
    // then removed; every call uses a peer id never seen before (the
    // cursor keeps counting across samples), so removed entries pile up
    // and the tables' cleanup (our rebuild, hashbrown's tombstone reuse)
    // is part of the cost.
    let mut g = c.benchmark_group(format!("core/churn/{n}"));
    g.throughput(Throughput::Elements(1));
    for threads in THREADS {
        bench_new_peers(&mut g, "StatusTable", threads, |k| {
            fx.ours.insert(k, ConnectionStatus::Connecting);
            black_box(fx.ours.remove(&k));
        });
        bench_new_peers(&mut g, "DashMap", threads, |k| {
            fx.dash.insert(k, ConnectionStatus::Connecting);
            black_box(fx.dash.remove(&k));
        });
        bench_new_peers(&mut g, "papaya", threads, |k| {
            let m = fx.pap.pin();
            m.insert(k, ConnectionStatus::Connecting);
            black_box(m.remove(&k));
        });
        bench_new_peers(&mut g, "scc", threads, |k| {
            let _ = fx.scc.insert_sync(k, ConnectionStatus::Connecting);
            black_box(fx.scc.remove_sync(&k));
        });
        bench_new_peers(&mut g, "RwLock<HashMap>", threads, |k| {
            fx.locked.write().insert(k, ConnectionStatus::Connecting);
            black_box(fx.locked.write().remove(&k));
        });
    }
    g.finish();

    // Batch lookups, per key: ours answers `BATCH` keys per `get_many`
    // call; the others have no batch call, so each answers its keys one
    // `get` at a time, on the same walk (`report.py` compares ours with
    // the fastest of them).
    if n == 1_000_000 {
        let mut g = c.benchmark_group(format!("core/get_many/{n}"));
        g.throughput(Throughput::Elements(1));
        for threads in THREADS {
            let cur = Cursor::default();
            bench_threads(&mut g, "StatusTable", threads, |t, iters| {
                let mut out = Vec::with_capacity(BATCH);
                w.walk_batches(t, threads, &cur, iters, BATCH, |keys| {
                    fx.ours.get_many(keys, &mut out);
                    black_box(&out);
                })
            });
            let cur = Cursor::default();
            bench_threads(&mut g, "DashMap", threads, |t, iters| {
                w.walk(t, threads, &cur, iters, |k, _| {
                    black_box(fx.dash.get(k).map(|r| *r));
                })
            });
            let cur = Cursor::default();
            bench_threads(&mut g, "papaya", threads, |t, iters| {
                w.walk_batches(t, threads, &cur, iters, BATCH, |keys| {
                    let m = fx.pap.pin();
                    for k in keys {
                        black_box(m.get(k).copied());
                    }
                })
            });
            let cur = Cursor::default();
            bench_threads(&mut g, "scc", threads, |t, iters| {
                w.walk(t, threads, &cur, iters, |k, _| {
                    black_box(fx.scc.read_sync(k, |_, v| *v));
                })
            });
        }
        g.finish();
    }
}

/// Benchmarks `cycle(peer)` as contender `name`, each call with a peer id
/// never seen before: a cursor per contender keeps counting across
/// criterion's samples.
fn bench_new_peers<M: Measurement<Value = Duration>>(
    g: &mut BenchmarkGroup<'_, M>,
    name: &str,
    threads: usize,
    cycle: impl Fn(PeerId) + Sync,
) {
    let cur = Cursor::default();
    bench_threads(g, name, threads, |t, iters| {
        let start = cur.advance(t, iters);
        for i in start..start + iters {
            cycle(new_peer(t, i));
        }
    });
}

/// Peer id number `i` of thread `t`'s never-seen stream: distinct from
/// every other `(t, i)` and from the fixture's ids (`peer_ids` writes its
/// seed, a small number, where this writes a marker).
#[inline]
fn new_peer(t: usize, i: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[8..16].copy_from_slice(&(u64::MAX - t as u64).to_le_bytes());
    PeerId::from_bytes(b)
}

/// Bytes per live peer while new peers replace old ones, `n` live
/// throughout: the table is built with `n` peers, then `3n` times the
/// oldest peer is removed and a never-seen one inserted. Removed entries
/// stay allocated until their shard is next rebuilt, so the figure is a
/// sawtooth: returns `(peak, end)`, each `(requested, with overhead)`,
/// sampled every `n / 8` replacements (after flushing the epoch
/// collector, so garbage awaiting collection is not counted).
fn churned_bytes_per_peer<M>(
    n: usize,
    build: impl FnOnce() -> M,
    insert: impl Fn(&M, PeerId),
    remove: impl Fn(&M, &PeerId),
) -> ((f64, f64), (f64, f64)) {
    let mut live = std::collections::VecDeque::with_capacity(n + 1);
    flush_epoch();
    CountingAlloc::counting(true);
    let base = (CountingAlloc::live(), CountingAlloc::live_with_overhead());
    let map = build();
    for i in 0..n as u64 {
        let k = new_peer(0, i);
        insert(&map, k);
        live.push_back(k);
    }
    let mut peak = (0f64, 0f64);
    let mut now = (0f64, 0f64);
    for i in n as u64..4 * n as u64 {
        remove(&map, &live.pop_front().expect("n live peers"));
        let k = new_peer(0, i);
        insert(&map, k);
        live.push_back(k);
        if (i - n as u64 + 1) % (n as u64 / 8) == 0 {
            flush_epoch();
            now = (
                (CountingAlloc::live() - base.0) as f64 / n as f64,
                (CountingAlloc::live_with_overhead() - base.1) as f64 / n as f64,
            );
            peak = (peak.0.max(now.0), peak.1.max(now.1));
        }
    }
    CountingAlloc::counting(false);
    drop(map);
    (peak, now)
}

fn memory(n: usize) {
    let keys = peer_ids(n, 9);
    let ours = bytes_per_entry(n, || {
        let t = StatusTable::new();
        for &k in &keys {
            t.insert(k, ConnectionStatus::Connected);
        }
        t
    });
    let dash = bytes_per_entry(n, || {
        let m = DashMap::with_hasher(RandomState::new());
        for &k in &keys {
            m.insert(k, ConnectionStatus::Connected);
        }
        m
    });
    let pap = bytes_per_entry(n, || {
        let m = papaya::HashMap::with_hasher(RandomState::new());
        for &k in &keys {
            m.pin().insert(k, ConnectionStatus::Connected);
        }
        m
    });
    let scc = bytes_per_entry(n, || {
        let m = scc::HashMap::with_hasher(RandomState::new());
        for &k in &keys {
            let _ = m.insert_sync(k, ConnectionStatus::Connected);
        }
        m
    });
    let locked = bytes_per_entry(n, || {
        let mut m = HashMap::with_hasher(RandomState::new());
        for &k in &keys {
            m.insert(k, ConnectionStatus::Connected);
        }
        RwLock::new(m)
    });
    println!("core/memory/{n}: bytes per peer (requested / with malloc overhead):");
    println!("  StatusTable      {:6.1} / {:6.1}", ours.0, ours.1);
    println!(
        "  DashMap          {:6.1} / {:6.1}  (StatusTable/DashMap = {:.2} with overhead)",
        dash.0,
        dash.1,
        ours.1 / dash.1
    );
    println!("  papaya           {:6.1} / {:6.1}", pap.0, pap.1);
    println!("  scc              {:6.1} / {:6.1}", scc.0, scc.1);
    println!("  RwLock<HashMap>  {:6.1} / {:6.1}", locked.0, locked.1);
    let churned_ours = churned_bytes_per_peer(
        n,
        StatusTable::<PeerId>::new,
        |t, k| {
            t.insert(k, ConnectionStatus::Connected);
        },
        |t, k| {
            t.remove(k);
        },
    );
    let churned_dash = churned_bytes_per_peer(
        n,
        || DashMap::with_hasher(RandomState::new()),
        |m, k| {
            m.insert(k, ConnectionStatus::Connected);
        },
        |m, k| {
            m.remove(k);
        },
    );
    println!("core/memory/{n} under churn (3n new peers replace old ones), peak / end:");
    println!(
        "  StatusTable      {:6.1} / {:6.1} requested, {:6.1} / {:6.1} with overhead",
        churned_ours.0 .0, churned_ours.1 .0, churned_ours.0 .1, churned_ours.1 .1
    );
    println!(
        "  DashMap          {:6.1} / {:6.1} requested, {:6.1} / {:6.1} with overhead",
        churned_dash.0 .0, churned_dash.1 .0, churned_dash.0 .1, churned_dash.1 .1
    );
    save_json(
        &format!("core_memory_churn_{n}"),
        &format!(
            "{{\"peers\": {n}, \"ours_peak\": {:.2}, \"ours_peak_with_overhead\": {:.2}, \
             \"ours_end\": {:.2}, \"ours_end_with_overhead\": {:.2}, \
             \"dashmap_peak\": {:.2}, \"dashmap_peak_with_overhead\": {:.2}, \
             \"dashmap_end\": {:.2}, \"dashmap_end_with_overhead\": {:.2}}}\n",
            churned_ours.0 .0,
            churned_ours.0 .1,
            churned_ours.1 .0,
            churned_ours.1 .1,
            churned_dash.0 .0,
            churned_dash.0 .1,
            churned_dash.1 .0,
            churned_dash.1 .1,
        ),
    );
    save_memory(
        &format!("core_memory_{n}"),
        &[
            ("StatusTable", ours),
            ("DashMap", dash),
            ("papaya", pap),
            ("scc", scc),
            ("RwLock<HashMap>", locked),
        ],
    );
}

/// Writes bytes-per-peer figures to `<target>/criterion/<name>.json`
/// (`{"contender": [requested, with_overhead]}`) for `benches/report.py`;
/// the target dir is found from this executable's path
/// (`<target>/release/deps/core-*`).
fn save_memory(name: &str, figures: &[(&str, (f64, f64))]) {
    let body: Vec<String> = figures
        .iter()
        .map(|(k, (req, with))| format!("\"{k}\": [{req:.2}, {with:.2}]"))
        .collect();
    save_json(name, &format!("{{{}}}\n", body.join(", ")));
}

/// Writes `json` to `<target>/criterion/<name>.json`; the target dir is
/// found from this executable's path (`<target>/release/deps/core-*`).
fn save_json(name: &str, json: &str) {
    let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
    else {
        return;
    };
    let dir = target.join("criterion");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(format!("{name}.json")), json);
    }
}

fn benches(c: &mut Criterion) {
    memory(1_000_000);
    for n in SIZES {
        bench_size(c, n);
    }
}

criterion_group! {
    name = core;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(core);
