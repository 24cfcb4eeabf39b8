//! Per-thread-striped metrics for `connmgr`: message throughput and
//! latency, bytes, dial outcomes, with a sliding window, a log-bucket
//! latency histogram and Prometheus / `metrics`-crate export.
//!
//! # Guide
//!
//! One [`Metrics`] aggregator lives beside the connection manager. Hot
//! paths call [`record_message`](Metrics::record_message),
//! [`record_bytes`](Metrics::record_bytes) and
//! [`record_dial`](Metrics::record_dial); whoever wants figures calls
//! [`snapshot`](Metrics::snapshot) and reads a [`Snapshot`], turns it into
//! the documented [`NetworkMetrics`] with
//! [`Snapshot::network_metrics`], or exports it with [`prometheus_text`]
//! (and, with the `metrics` feature, `FacadeExporter`).
//!
//! ```
//! use connmgr_metrics::{prometheus_text, DialOutcome, Gauges, ManualClock, Metrics, MetricsConfig};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let metrics = Metrics::with_config(MetricsConfig::default(), clock.clone())?;
//!
//! for _ in 0..20 {
//!     metrics.record_message(Duration::from_millis(4));
//! }
//! metrics.record_bytes(1_500, 64_000);
//! metrics.record_dial(DialOutcome::Ok);
//!
//! clock.advance(Duration::from_secs(2));
//! let snapshot = metrics.snapshot();
//! assert_eq!(snapshot.messages, 20);
//! assert_eq!(snapshot.window, Duration::from_secs(2)); // younger than the 10 s window
//! assert_eq!(snapshot.messages_per_second, 10.0);
//! assert_eq!(snapshot.mean_latency, Duration::from_millis(4));
//! let p50 = snapshot.p50.unwrap().as_secs_f64();
//! assert!((p50 - 0.004).abs() <= 0.004 * connmgr_metrics::Histogram::RELATIVE_ERROR);
//!
//! let network = snapshot.network_metrics(3, 1 << 20); // owner's connection count and bytes
//! assert_eq!(network.connections, 3);
//!
//! let text = prometheus_text(&snapshot, &Gauges { connections: 3, ..Gauges::default() });
//! assert!(text.contains("connmgr_messages_total 20\n"));
//! # Ok::<(), connmgr_metrics::Error>(())
//! ```
//!
//! # Recording: stripes and thread slots
//!
//! Each thread gets a small **slot number** from
//! [`connmgr_core::thread_slot`] on its first recording (the lowest free
//! one, taken lock-free) and gives it back when it exits, through a
//! thread-local destructor. An
//! aggregator has [`MetricsConfig::stripes`] **owned stripes**: the thread
//! holding slot `i < stripes` is the only writer of stripe `i`, so it adds
//! with a relaxed load and store (no locked instruction). Threads without
//! an owned stripe (more live threads than stripes, more than 1024 live
//! threads in the process, or recording from a thread-local destructor)
//! hash their slot onto one of [`MetricsConfig::shared_stripes`] **shared
//! stripes** and add with relaxed `fetch_add`. Every stripe is
//! [`CachePadded`](crossbeam_utils::CachePadded) and holds only cumulative
//! counters (messages, latency sum in ns, histogram buckets, bytes, dial
//! outcomes): recording takes no lock, shares no cache line with another
//! thread's stripe, and never reads the clock.
//!
//! A recycled slot's new owner takes it with an `Acquire` read-modify-write
//! of the bit its previous owner cleared with `Release`, so it
//! happens-after every add the previous owner made: nothing is lost when
//! threads come and go.
//!
//! # Snapshots and the sliding window
//!
//! [`snapshot`](Metrics::snapshot) reads the clock once, sums the stripes
//! (O(stripes × buckets)) and widens the wrapping `u64` stripe counters
//! into saturating totals: exact while fewer than 2^64 units arrive between
//! two snapshots, and for the latency sum (where 2^24 clamped latencies make
//! 2^64 ns) while less than 2^68 ns arrives, the histogram telling how many
//! times its `u64` wrapped. It also keeps a small ring of at most
//! [`MetricsConfig::history`] samples `(instant, cumulative totals,
//! histogram)`, adding one at most every `window / (history - 1)` (rounded
//! up to a whole nanosecond, so that `history` samples span the window).
//!
//! **Window definition.** For a snapshot taken at `now` with configured
//! window `W`, the baseline is the newest stored sample taken at or before
//! `now - W`; if none is that old, the oldest sample (at worst the
//! aggregator's creation). The window fields are the deltas between the
//! current totals and the baseline, divided by the real elapsed time
//! `now - baseline`, which the snapshot reports as [`Snapshot::window`]:
//!
//! * `messages_per_second = window_messages / window`,
//! * `mean_latency = window latency sum / window_messages`,
//! * `p50`, `p90`, `p99` from the histogram delta.
//!
//! If snapshots are taken at least every `d`, then once the aggregator is
//! older than `W`: `W <= window < W + W / (history - 1) + d` (just over
//! 11 s for the default 10 s window and frequent scrapes). Snapshots further
//! apart stretch the window up to the gap, since nothing finer was
//! recorded. The clock may go backwards (a manual clock): "now" is clamped
//! to the newest instant seen, so nothing panics and spans never go
//! negative.
//!
//! # Latency histogram
//!
//! Log-linear buckets: 16 sub-buckets per power of two of nanoseconds, so
//! every reported quantile is within [`Histogram::RELATIVE_ERROR`] = 1/32
//! (≈ 3.1 %) of the true sample of that rank, for latencies below
//! [`Histogram::MAX_TRACKED`] (2^40 ns ≈ 18.3 min; longer ones are counted
//! as 2^40 - 1 ns). 592 buckets, 4.6 KiB per stripe.
//!
//! # Memory
//!
//! [`Metrics::memory_usage`] is computed from capacities: the struct, all
//! stripes and the sample ring. With the defaults on a 2-CPU machine (4
//! owned + 2 shared stripes, 11 samples) that is about 82 KiB.
//!
//! # Features
//!
//! * `metrics`: `FacadeExporter`, forwarding snapshots to the `metrics`
//!   crate's recorder.
#![warn(missing_docs, missing_debug_implementations)]

mod aggregator;
mod config;
mod error;
#[cfg(feature = "metrics")]
mod facade;
mod histogram;
mod prometheus;
mod raw;
mod snapshot;
mod sync;

pub use aggregator::{DialOutcome, Metrics};
pub use config::MetricsConfig;
/// The injectable clock, shared with the other connmgr crates.
pub use connmgr_core::{Clock, ManualClock, SystemClock};
pub use error::Error;
#[cfg(feature = "metrics")]
pub use facade::FacadeExporter;
pub use histogram::Histogram;
pub use prometheus::prometheus_text;
pub use snapshot::{DialCounts, Gauges, NetworkMetrics, Snapshot};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Hooks for the loom models only.
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_hooks {
    pub use connmgr_core::thread_slot::release_current as release_thread_slot;
}
