//! Log-linear bucket arithmetic for the latency histogram.
//!
//! Values are nanoseconds. Below `SUB = 2^K` every value has its own bucket.
//! Each power of two `[2^p, 2^(p+1))` with `p >= K` is split into `SUB`
//! equal sub-buckets of width `2^(p-K)`. A bucket's representative is its
//! lower bound plus half its width, so it is within `w/2` of any value in
//! the bucket, and `w/2 <= 2^(p-K-1) <= value * 2^-(K+1)`: the relative
//! error of a reported quantile is at most `2^-(K+1)` (1/32 with `K = 4`).
//! Values at or above `2^MAX_POW` ns are clamped to `2^MAX_POW - 1`.

/// Sub-bucket bits per power of two (`2^K` sub-buckets).
pub(crate) const K: u32 = if cfg!(loom) { 1 } else { 4 };
/// Number of sub-buckets per power of two.
pub(crate) const SUB: u64 = 1 << K;
/// Values from `2^MAX_POW` ns up are clamped (2^40 ns is about 18.3 minutes).
pub(crate) const MAX_POW: u32 = if cfg!(loom) { 4 } else { 40 };
/// Largest value tracked exactly (in nanoseconds); larger ones are clamped.
pub(crate) const MAX_VALUE: u64 = (1 << MAX_POW) - 1;
/// Number of buckets.
pub(crate) const BUCKETS: usize = ((MAX_POW - K + 1) as usize) << K;

/// Clamps a latency to the tracked range, in nanoseconds.
#[inline]
pub(crate) fn clamp_nanos(latency: std::time::Duration) -> u64 {
    let nanos = latency.as_nanos();
    if nanos > u128::from(MAX_VALUE) {
        MAX_VALUE
    } else {
        nanos as u64
    }
}

/// The bucket holding `nanos` (which must be `<= MAX_VALUE`; larger values
/// land in the last bucket).
#[inline]
pub(crate) fn index(nanos: u64) -> usize {
    let v = nanos.min(MAX_VALUE);
    if v < SUB {
        v as usize
    } else {
        let p = 63 - v.leading_zeros(); // p >= K
        let sub = (v >> (p - K)) & (SUB - 1);
        (((p - K + 1) as usize) << K) + sub as usize
    }
}

/// `(lower bound, width)` of bucket `i`, in nanoseconds.
#[inline]
pub(crate) fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    let group = i >> K;
    if group == 0 {
        (i, 1)
    } else {
        let sub = i & (SUB - 1);
        let shift = group - 1;
        ((SUB + sub) << shift, 1 << shift)
    }
}

/// The value reported for bucket `i`: its lower bound plus half its width.
#[inline]
pub(crate) fn representative(i: usize) -> u64 {
    let (lower, width) = bounds(i);
    lower + width / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut next = 0;
        for i in 0..BUCKETS {
            let (lower, width) = bounds(i);
            assert_eq!(
                lower,
                next,
                "bucket {i} starts where {} ended",
                i.max(1) - 1
            );
            assert_eq!(index(lower), i);
            assert_eq!(index(lower + width - 1), i);
            next = lower + width;
        }
        assert_eq!(next, MAX_VALUE + 1);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn representative_is_within_the_stated_relative_error() {
        for i in 0..BUCKETS {
            let (lower, width) = bounds(i);
            let rep = representative(i);
            for v in [lower, lower + width - 1] {
                let err = rep.abs_diff(v) as f64;
                assert!(
                    err <= v as f64 / f64::from(1u32 << (K + 1)),
                    "bucket {i} value {v}"
                );
            }
        }
    }
}
