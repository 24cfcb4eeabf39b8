//! Per-shard populations for the churn tests, and the memory bound the
//! table's sizing implies for them.
//!
//! Keys live inline in 3-slot buckets. A rebuild sizes a shard's array for
//! the live keys it holds: 7/10 full after a growth, half full after a
//! rebuild forced by tombstones, never below the minimum. Every rebuild of
//! a shard happens while it holds at most `most` keys, the most it has held
//! so far, so its array has at most `max(ceil(2 * most / 3), min)` buckets,
//! live keys and tombstones included.

/// Keys each shard holds now and the most it has held, with the sum of the
/// shards' bounds kept up to date.
pub struct ShardPeaks {
    live: Vec<usize>,
    most: Vec<usize>,
    min_buckets: usize,
    bucket_bytes: usize,
    bound: usize,
}

impl ShardPeaks {
    /// `shards` empty shards whose arrays start at `min_slots` slots, in
    /// buckets of 3 slots and `bucket_bytes` bytes.
    pub fn new(shards: usize, min_slots: usize, bucket_bytes: usize) -> Self {
        let mut peaks = Self {
            live: vec![0; shards],
            most: vec![0; shards],
            min_buckets: min_slots / 3,
            bucket_bytes,
            bound: 0,
        };
        peaks.bound = shards * peaks.shard_bound(0);
        peaks
    }

    /// Bytes of the largest array a shard may have once it has held `most`
    /// keys.
    pub fn shard_bound(&self, most: usize) -> usize {
        (2 * most).div_ceil(3).max(self.min_buckets) * self.bucket_bytes
    }

    /// The largest array any shard may have now.
    #[allow(dead_code)] // used by `heap_churn.rs`, not by `sizing.rs`
    pub fn largest(&self) -> usize {
        self.shard_bound(self.most.iter().copied().max().unwrap_or(0))
    }

    /// Counts a key inserted into shard `s`.
    pub fn inserted(&mut self, s: usize) {
        self.live[s] += 1;
        if self.live[s] > self.most[s] {
            self.bound =
                self.bound - self.shard_bound(self.most[s]) + self.shard_bound(self.live[s]);
            self.most[s] = self.live[s];
        }
    }

    /// Counts a key removed from shard `s`.
    pub fn removed(&mut self, s: usize) {
        self.live[s] -= 1;
    }

    /// The sum over shards of the largest array each may have.
    pub fn bound(&self) -> usize {
        self.bound
    }
}
