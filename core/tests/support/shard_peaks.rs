//! Per-shard populations for the churn tests, and the memory bound the
//! table's sizing and dead-entry budget imply for them.
//!
//! A rehash sizes a shard's array for the live keys it holds, at most half
//! full: `next_power_of_two(max(2 * live, min))` slots. Every rehash of a
//! shard happens while it holds at most `most` keys, the most it has held so
//! far, so its array has at most `C(most)` slots; and the dead-entry budget
//! (checked at each removal against the keys held then) keeps at most
//! `most / 8 + 1` dead entries. So a shard holds at most
//! `C(most) * slot + (most / 8 + 1) * entry` bytes besides its live entries.

use std::mem::size_of;

/// Keys each shard holds now and the most it has held, with the sum of the
/// shards' bounds kept up to date.
pub struct ShardPeaks {
    live: Vec<usize>,
    most: Vec<usize>,
    min_slots: usize,
    entry_bytes: usize,
    bound: usize,
}

impl ShardPeaks {
    /// `shards` empty shards whose arrays start at `min_slots` slots.
    pub fn new(shards: usize, min_slots: usize, entry_bytes: usize) -> Self {
        let mut peaks = Self {
            live: vec![0; shards],
            most: vec![0; shards],
            min_slots,
            entry_bytes,
            bound: 0,
        };
        peaks.bound = shards * peaks.shard_bound(0);
        peaks
    }

    /// Bytes besides its live entries a shard may hold once it has held
    /// `most` keys: its array and its dead entries.
    fn shard_bound(&self, most: usize) -> usize {
        (2 * most).max(self.min_slots).next_power_of_two() * size_of::<usize>()
            + (most / 8 + 1) * self.entry_bytes
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

    /// The sum over shards of what each may hold besides its live entries.
    pub fn bound(&self) -> usize {
        self.bound
    }
}
