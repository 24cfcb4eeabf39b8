//! The aggregator: recording into stripes, snapshots over a sliding window.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::raw::buckets::{self, BUCKETS};
use crate::raw::stripe::{Stripe, OUTCOMES};
use crate::sync::{Mutex, Ordering::Relaxed};
use crate::{Clock, DialCounts, Error, Histogram, MetricsConfig, Snapshot, SystemClock};
use connmgr_core::thread_slot;

/// How a dial (or a connect served from the pool) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DialOutcome {
    /// The dial connected.
    Ok,
    /// The dial failed.
    Failed,
    /// The dial hit its deadline.
    TimedOut,
    /// A live idle connection was reused; no dial.
    PoolHit,
    /// No usable idle connection; a dial follows.
    PoolMiss,
}

impl DialOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Ok,
        Self::Failed,
        Self::TimedOut,
        Self::PoolHit,
        Self::PoolMiss,
    ];

    /// A `snake_case` name, as used in exported labels (`"timed_out"`).
    ///
    /// **Progress:** wait-free.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::PoolHit => "pool_hit",
            Self::PoolMiss => "pool_miss",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Totals widened from the wrapping per-stripe counters.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    messages: u64,
    latency_nanos: u128,
    bytes_sent: u64,
    bytes_received: u64,
    dials: [u64; OUTCOMES],
}

/// The raw (wrapping) sums of the stripes at the previous snapshot.
#[derive(Clone, Copy, Debug, Default)]
struct Raw {
    messages: u64,
    latency_nanos: u64,
    /// The histogram's estimate of the latency sum (see [`widen_latency`]).
    latency_estimate: u128,
    bytes_sent: u64,
    bytes_received: u64,
    dials: [u64; OUTCOMES],
}

/// One stored reading of the cumulative totals.
#[derive(Debug)]
struct Sample {
    at: Instant,
    messages: u64,
    latency_nanos: u128,
    buckets: Box<[u64]>,
}

/// Snapshot-side state, behind a mutex recorders never touch.
#[derive(Debug)]
struct History {
    raw: Raw,
    totals: Totals,
    /// Newest effective "now" seen; never decreases.
    last_now: Instant,
    /// Samples, oldest first; the first is the current window baseline.
    samples: VecDeque<Sample>,
}

/// A per-thread-striped metrics aggregator.
///
/// Recording touches only the calling thread's cache-padded stripe; see the
/// [crate docs](crate) for the design and the window definition.
pub struct Metrics<Clk: Clock = SystemClock> {
    /// Owned stripes: stripe `i` is written only by the thread holding
    /// slot `i` (plain load + store).
    owned: Box<[CachePadded<Stripe>]>,
    /// Shared stripes, for threads owning none (`fetch_add`).
    shared: Box<[CachePadded<Stripe>]>,
    history: Mutex<History>,
    created: Instant,
    /// Minimum spacing of stored samples: `window / (history - 1)`, rounded
    /// up to a whole nanosecond.
    spacing: Duration,
    config: MetricsConfig,
    clock: Clk,
}

impl Metrics {
    /// An aggregator with the default [`MetricsConfig`] (10 s window) on the
    /// system clock.
    ///
    /// **Progress:** may block (allocates).
    pub fn new() -> Self {
        match Self::with_config(MetricsConfig::default(), SystemClock) {
            Ok(metrics) => metrics,
            Err(error) => unreachable!("the default configuration is valid: {error}"),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl<Clk: Clock> fmt::Debug for Metrics<Clk> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("config", &self.config)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

fn new_stripes(n: usize) -> Box<[CachePadded<Stripe>]> {
    (0..n).map(|_| Stripe::new()).collect()
}

impl<Clk: Clock> Metrics<Clk> {
    /// An aggregator laid out by `config`, reading time from `clock`: once
    /// here (the window starts now) and once per
    /// [`snapshot`](Self::snapshot), never while recording.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first setting out of range.
    ///
    /// **Progress:** may block (allocates).
    pub fn with_config(config: MetricsConfig, clock: Clk) -> Result<Self, Error> {
        config.validate()?;
        let created = clock.now();
        let mut samples = VecDeque::with_capacity(config.history);
        samples.push_back(Sample {
            at: created,
            messages: 0,
            latency_nanos: 0,
            buckets: vec![0; BUCKETS].into_boxed_slice(),
        });
        // Rounded up: `history - 1` spacings must cover the whole window, or
        // a full ring would hold back new samples (see `snapshot`).
        let gaps = u128::try_from(config.history - 1).unwrap_or(u128::MAX);
        let spacing = nanos_to_duration(config.window.as_nanos().div_ceil(gaps));
        Ok(Self {
            owned: new_stripes(config.stripes),
            shared: new_stripes(config.shared_stripes),
            history: Mutex::new(History {
                raw: Raw::default(),
                totals: Totals::default(),
                last_now: created,
                samples,
            }),
            created,
            spacing,
            config,
            clock,
        })
    }

    /// The configuration this aggregator was built with.
    ///
    /// **Progress:** wait-free.
    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// The calling thread's stripe, and whether it owns it.
    #[inline(always)]
    fn stripe(&self) -> (&Stripe, bool) {
        let slot = thread_slot::current();
        match self.owned.get(slot) {
            Some(stripe) => (stripe, true),
            None => (&self.shared[slot & (self.shared.len() - 1)], false),
        }
    }

    /// Records one message with its latency (one of
    /// [`Histogram::MAX_TRACKED`] or more counts as just below it).
    ///
    /// **Progress:** wait-free: three relaxed adds to the caller's stripe,
    /// no lock, no clock read. A thread's first recording (into any
    /// aggregator) takes its slot number, a lock-free step.
    #[inline]
    pub fn record_message(&self, latency: Duration) {
        let nanos = buckets::clamp_nanos(latency);
        let (stripe, exclusive) = self.stripe();
        stripe.record_message(nanos, exclusive);
    }

    /// Records bytes sent and received.
    ///
    /// **Progress:** wait-free, as [`record_message`](Self::record_message).
    #[inline]
    pub fn record_bytes(&self, sent: u64, received: u64) {
        let (stripe, exclusive) = self.stripe();
        stripe.record_bytes(sent, received, exclusive);
    }

    /// Records how a dial ended.
    ///
    /// **Progress:** wait-free, as [`record_message`](Self::record_message).
    #[inline]
    pub fn record_dial(&self, outcome: DialOutcome) {
        let (stripe, exclusive) = self.stripe();
        stripe.record_dial(outcome.index(), exclusive);
    }

    /// Sums the stripes and reads the clock: totals since creation, and the
    /// window figures (see [`Snapshot::window`]).
    ///
    /// **Progress:** blocking but short: O(stripes × buckets) relaxed loads
    /// under a mutex shared only with other `snapshot` calls (and
    /// [`memory_usage`](Self::memory_usage)); recorders are never blocked.
    /// Allocates the returned histograms.
    pub fn snapshot(&self) -> Snapshot {
        let mut history = self.history.lock();
        let history = &mut *history;
        let now = self.clock.now().max(history.last_now);
        history.last_now = now;

        // Sum the stripes. Reading under the mutex makes successive
        // snapshots see non-decreasing counters (a later load cannot read
        // an older value than one that happened-before it).
        let mut raw = Raw::default();
        let mut counts = vec![0u64; BUCKETS].into_boxed_slice();
        for stripe in self.owned.iter().chain(self.shared.iter()) {
            raw.messages = raw.messages.wrapping_add(stripe.messages.load(Relaxed));
            raw.latency_nanos = raw
                .latency_nanos
                .wrapping_add(stripe.latency_nanos.load(Relaxed));
            raw.bytes_sent = raw.bytes_sent.wrapping_add(stripe.bytes_sent.load(Relaxed));
            raw.bytes_received = raw
                .bytes_received
                .wrapping_add(stripe.bytes_received.load(Relaxed));
            for (sum, dial) in raw.dials.iter_mut().zip(&stripe.dials) {
                *sum = sum.wrapping_add(dial.load(Relaxed));
            }
            for (sum, bucket) in counts.iter_mut().zip(&stripe.buckets) {
                *sum = sum.saturating_add(bucket.load(Relaxed));
            }
        }
        raw.latency_estimate = latency_estimate(&counts);

        // Widen: the per-stripe counters wrap, so add the wrapping delta
        // since the previous snapshot to saturating totals.
        let prev = history.raw;
        let t = &mut history.totals;
        t.messages = t
            .messages
            .saturating_add(raw.messages.wrapping_sub(prev.messages));
        t.latency_nanos = t.latency_nanos.saturating_add(widen_latency(
            raw.latency_nanos.wrapping_sub(prev.latency_nanos),
            raw.latency_estimate.saturating_sub(prev.latency_estimate),
        ));
        t.bytes_sent = t
            .bytes_sent
            .saturating_add(raw.bytes_sent.wrapping_sub(prev.bytes_sent));
        t.bytes_received = t
            .bytes_received
            .saturating_add(raw.bytes_received.wrapping_sub(prev.bytes_received));
        for ((total, now), before) in t.dials.iter_mut().zip(raw.dials).zip(prev.dials) {
            *total = total.saturating_add(now.wrapping_sub(before));
        }
        history.raw = raw;
        let totals = history.totals;

        // Window baseline: the newest sample at or before `now - window`,
        // else the oldest. Older samples can never be a baseline again.
        let cutoff = now.checked_sub(self.config.window);
        if let Some(cutoff) = cutoff {
            while history.samples.len() > 1 && history.samples[1].at <= cutoff {
                history.samples.pop_front();
            }
        }
        let base = &history.samples[0];
        let window = now.saturating_duration_since(base.at);
        let window_messages = totals.messages.saturating_sub(base.messages);
        let window_latency_nanos = totals.latency_nanos.saturating_sub(base.latency_nanos);
        let messages_per_second = if window.is_zero() {
            0.0
        } else {
            window_messages as f64 / window.as_secs_f64()
        };
        let mean_latency = if window_messages == 0 {
            Duration::ZERO
        } else {
            nanos_to_duration(window_latency_nanos / u128::from(window_messages))
        };
        let window_counts: Box<[u64]> = counts
            .iter()
            .zip(base.buckets.iter())
            .map(|(&c, &b)| c.saturating_sub(b))
            .collect();

        // Keep a sample at most every `spacing`. With `history` samples that
        // far apart the ring spans the window (`(history - 1) * spacing >=
        // window`), so pruning above (not eviction) is what drops old
        // samples and the length check never holds a due sample back; it is
        // only a bound.
        let newest = history.samples.back().map_or(self.created, |s| s.at);
        if now.saturating_duration_since(newest) >= self.spacing
            && history.samples.len() < self.config.history
        {
            history.samples.push_back(Sample {
                at: now,
                messages: totals.messages,
                latency_nanos: totals.latency_nanos,
                buckets: counts.clone(),
            });
        }

        let window_latency = Histogram::from_counts(window_counts);
        Snapshot {
            taken_at: now,
            uptime: now.saturating_duration_since(self.created),
            messages: totals.messages,
            latency_sum: nanos_to_duration(totals.latency_nanos),
            bytes_sent: totals.bytes_sent,
            bytes_received: totals.bytes_received,
            dials: DialCounts::from_array(totals.dials),
            latency: Histogram::from_counts(counts),
            window,
            window_messages,
            messages_per_second,
            mean_latency,
            p50: window_latency.quantile(0.5),
            p90: window_latency.quantile(0.9),
            p99: window_latency.quantile(0.99),
            window_latency,
        }
    }

    /// Bytes this aggregator holds, from its capacities: the struct itself,
    /// every stripe (`stripes + shared_stripes` cache-padded stripes, each
    /// with its inline histogram), the sample ring's allocated capacity and
    /// the histogram copy each stored sample owns. A snapshot's own
    /// histograms belong to the caller and are not counted.
    ///
    /// **Progress:** takes the snapshot mutex briefly.
    pub fn memory_usage(&self) -> usize {
        let stripes = (self.owned.len() + self.shared.len()) * size_of::<CachePadded<Stripe>>();
        let history = self.history.lock();
        let ring = history.samples.capacity() * size_of::<Sample>()
            + history.samples.len() * BUCKETS * size_of::<u64>();
        size_of::<Self>() + stripes + ring
    }
}

/// `Σ count × representative` over the buckets: the latency sum as the
/// histogram sees it, within [`Histogram::RELATIVE_ERROR`] of the true sum.
fn latency_estimate(counts: &[u64]) -> u128 {
    counts
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c != 0)
        .fold(0u128, |sum, (i, &c)| {
            sum.saturating_add(u128::from(c) * u128::from(buckets::representative(i)))
        })
}

/// The latency added since the previous snapshot, from its wrapping `u64`
/// delta `low` and the histogram's estimate of it: of the values congruent
/// to `low` modulo 2^64, the one nearest the estimate.
///
/// A message's latency is clamped below 2^40 ns, so 2^24 of them wrap a `u64`
/// of nanoseconds; the bucket counts do not wrap in practice. The estimate
/// is within 1/32 of the true delta (plus the latencies of messages whose
/// bucket and sum were read at different moments, at most 2^40 ns each), so
/// the result is exact while the delta is below 2^68 ns (about 9,000 years of
/// latency between two snapshots) and within 1/16 of it beyond.
fn widen_latency(low: u64, estimate: u128) -> u128 {
    // `low - estimate` modulo 2^64, as an offset in [-2^63, 2^63).
    let offset = low.wrapping_sub(estimate as u64) as i64;
    estimate.saturating_add_signed(i128::from(offset))
}

fn nanos_to_duration(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::ManualClock;
    use std::sync::Barrier;

    fn tiny(stripes: usize, shared: usize) -> Metrics<ManualClock> {
        let config = MetricsConfig::default()
            .with_stripes(stripes)
            .with_shared_stripes(shared);
        Metrics::with_config(config, ManualClock::new()).unwrap()
    }

    fn stripe_messages(stripes: &[CachePadded<Stripe>]) -> u64 {
        stripes.iter().map(|s| s.messages.load(Relaxed)).sum()
    }

    #[test]
    fn more_threads_than_owned_stripes_use_the_shared_fallback_exactly() {
        const THREADS: usize = 12;
        const PER: u64 = 5_000;
        let metrics = tiny(1, 2);
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    metrics.record_bytes(0, 0); // take a slot (adds nothing)
                    barrier.wait(); // all hold distinct slots at once
                    for i in 0..PER {
                        metrics.record_message(Duration::from_nanos(i));
                    }
                });
            }
        });
        assert!(
            stripe_messages(&metrics.shared) > 0,
            "some thread fell back to a shared stripe"
        );
        assert_eq!(metrics.snapshot().messages, THREADS as u64 * PER);
    }

    #[test]
    fn widening_survives_wrapping_stripe_counters() {
        let metrics = tiny(1, 1);
        let stripe = &metrics.shared[0];
        stripe.bytes_sent.store(u64::MAX - 5, Relaxed);
        assert_eq!(metrics.snapshot().bytes_sent, u64::MAX - 5);
        stripe.bytes_sent.fetch_add(10, Relaxed); // wraps to 4
        assert_eq!(
            metrics.snapshot().bytes_sent,
            u64::MAX,
            "saturates instead of wrapping"
        );
    }

    #[test]
    fn widen_latency_picks_the_sum_nearest_the_histogram_estimate() {
        // No wrap: the exact delta, whichever side of it the estimate is
        // (a bucket read before or after its message's latency was added).
        assert_eq!(widen_latency(5, 0), 5);
        assert_eq!(widen_latency(3, 5), 3);
        assert_eq!(
            widen_latency(u64::MAX, u128::from(u64::MAX) - 9),
            u128::from(u64::MAX)
        );
        // Wrapped once or many times: exact while the estimate is within
        // 2^63 of the truth, i.e. at 1/32 error for sums below 2^68 ns.
        for truth in [
            1u128 << 64,
            (1 << 64) + 12_345,
            (1 << 67) + 99,
            (1 << 68) - 1,
        ] {
            let estimate = truth + truth / 32;
            assert_eq!(widen_latency(truth as u64, estimate), truth, "{truth}");
            let estimate = truth - truth / 32;
            assert_eq!(widen_latency(truth as u64, estimate), truth, "{truth}");
        }
        // Beyond that, still within 1/16 of the truth (never a wrapped
        // remainder).
        let truth = (1u128 << 75) + 7;
        let got = widen_latency(truth as u64, truth + truth / 32);
        assert!(got.abs_diff(truth) <= truth / 16, "{got} vs {truth}");
    }

    #[test]
    fn memory_usage_counts_stripes_and_ring() {
        let metrics = tiny(4, 2);
        let stripes = 6 * size_of::<CachePadded<Stripe>>();
        assert!(metrics.memory_usage() >= stripes + BUCKETS * 8);
        assert!(size_of::<CachePadded<Stripe>>() >= BUCKETS * 8);
    }
}
