//! [`Backoff`]: the retry schedule of
//! [`connect_with_backoff`](crate::ConnectionManager::connect_with_backoff),
//! and the delays of the per-peer dial backoff
//! ([`Builder::dial_backoff`](crate::Builder::dial_backoff)).

use std::time::Duration;

/// Retry schedule of
/// [`ConnectionManager::connect_with_backoff`](crate::ConnectionManager::connect_with_backoff).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Each delay is the previous one times this (at least 1).
    pub multiplier: u32,
    /// Attempts in all, the first included; 0 counts as 1.
    pub max_attempts: u32,
    /// Randomize each delay within its upper half.
    pub jitter: bool,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 30 s, 8 attempts, with jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2,
            max_attempts: 8,
            jitter: true,
        }
    }
}

impl Backoff {
    /// A schedule starting at `initial`, doubling up to `max`, for at most
    /// `max_attempts` attempts, with jitter.
    pub fn new(initial: Duration, max: Duration, max_attempts: u32) -> Self {
        Self {
            initial,
            max,
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// The same schedule without jitter (exact delays, for tests).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The sleeps between attempts, in order, drawn from `seed` (any
    /// non-zero value; the manager derives one from the peer id).
    pub(crate) fn sleeps(self, seed: u64) -> Sleeps {
        Sleeps {
            backoff: self,
            delay: self.initial.min(self.max),
            rng: seed | 1,
        }
    }
}

/// The sleeps of one run of a [`Backoff`] schedule (endless: the caller
/// counts attempts).
#[derive(Debug)]
pub(crate) struct Sleeps {
    backoff: Backoff,
    delay: Duration,
    rng: u64,
}

impl Iterator for Sleeps {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.delay;
        let sleep = if self.backoff.jitter {
            // "Equal jitter": half the delay fixed, half random, so
            // retries of many peers spread out but never collapse to 0.
            // xorshift64: never 0 from a non-zero seed.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let half = delay / 2;
            half + half.mul_f64((self.rng >> 11) as f64 / (1u64 << 53) as f64)
        } else {
            delay
        };
        self.delay = delay
            .saturating_mul(self.backoff.multiplier.max(1))
            .min(self.backoff.max);
        Some(sleep)
    }
}

/// The delay after a peer's `failures`-th failed dial in a row (1 for the
/// first): `d = min(initial * 2^(failures - 1), max)`, jittered by `draw`
/// (any 64 random bits) uniformly over `[d / 2, d]`, so the dials of many
/// peers that failed together spread out, and none comes sooner than half
/// its delay.
pub(crate) fn dial_delay(initial: Duration, max: Duration, failures: u32, draw: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(63);
    let d = initial
        .saturating_mul(1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX))
        .min(max);
    let half = d / 2;
    half + (d - half).mul_f64((draw >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over many draws, every delay lies in `[d / 2, d]` for its `d`, the
    /// draws cover both ends of that range, and the delays double up to
    /// `max`.
    #[test]
    fn dial_delays_double_up_to_max_and_stay_within_their_jitter_bounds() {
        use std::hash::BuildHasher;
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let hasher = std::collections::hash_map::RandomState::new();
        for failures in 1..=40u32 {
            let d = (initial * 2u32.pow(failures.min(20) - 1)).min(max);
            let (mut lowest, mut highest) = (d, Duration::ZERO);
            for i in 0..5_000u64 {
                let delay = dial_delay(initial, max, failures, hasher.hash_one((failures, i)));
                assert!(
                    d / 2 <= delay && delay <= d,
                    "failure {failures}: {delay:?} outside [{:?}, {d:?}]",
                    d / 2
                );
                lowest = lowest.min(delay);
                highest = highest.max(delay);
            }
            // 5,000 uniform draws: the ends of the range are reached
            // within 1% of its width.
            assert!(
                lowest < d / 2 + d / 100,
                "failure {failures}: low {lowest:?}"
            );
            assert!(
                highest > d - d / 100,
                "failure {failures}: high {highest:?}"
            );
        }
        assert_eq!(dial_delay(initial, max, 1, 0), initial / 2);
        assert!(dial_delay(initial, max, 3, u64::MAX) >= Duration::from_millis(3999));
        assert!(dial_delay(initial, max, u32::MAX, u64::MAX) <= max);
    }

    #[test]
    fn without_jitter_the_delays_double_up_to_the_max() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500), 8)
            .without_jitter();
        let got: Vec<_> = b.sleeps(1).take(5).map(|d| d.as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
    }

    /// Over many draws, each jittered sleep lies in the upper half of its
    /// delay, and the draws spread over that half (not stuck at one end).
    #[test]
    fn jittered_sleeps_stay_within_the_upper_half_of_each_delay() {
        let delay = Duration::from_millis(1000);
        let b = Backoff::new(delay, delay, 8);
        let (lo, hi) = (delay / 2, delay);
        let mut low_quarter = 0;
        let mut high_quarter = 0;
        let mut sum = Duration::ZERO;
        const DRAWS: u32 = 100_000;
        for (seed, sleep) in (0..4u64).flat_map(|s| {
            b.sleeps(s * 7919)
                .take(DRAWS as usize / 4)
                .map(move |d| (s, d))
        }) {
            assert!(
                lo <= sleep && sleep <= hi,
                "seed {seed}: {sleep:?} outside {lo:?}..={hi:?}"
            );
            low_quarter += u32::from(sleep < lo + delay / 8);
            high_quarter += u32::from(sleep > hi - delay / 8);
            sum += sleep;
        }
        let mean = sum / DRAWS;
        assert!(
            (Duration::from_millis(730)..=Duration::from_millis(770)).contains(&mean),
            "mean {mean:?}, expected about 750 ms"
        );
        // Each eighth of the delay holds about a quarter of the draws.
        for (name, n) in [("low", low_quarter), ("high", high_quarter)] {
            assert!(
                (DRAWS / 5..DRAWS * 3 / 10).contains(&n),
                "{name} quarter of the range got {n} of {DRAWS} draws"
            );
        }
    }
}
