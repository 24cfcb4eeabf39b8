//! [`Peers`]: the one sharded map of peer records.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::mem::size_of;

use connmgr_core::PeerId;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::peer::{Parts, Record};

/// One shard: the records of the peers whose keyed hash picks it.
type Shard<P> = CachePadded<Mutex<Records<P>>>;

/// A shard's records, and how many status watches were made in it since
/// its last sweep of abandoned watches (see [`Peers::at_watching`]).
pub(crate) struct Records<P: Parts> {
    pub(crate) map: HashMap<PeerId, Record<P>>,
    /// Watches made since the last sweep.
    pub(crate) made: usize,
}

/// A peer and the shard of its record, found once per call (the keyed
/// hash is the costly part of a lookup).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    pub(crate) peer: PeerId,
    shard: usize,
}

/// The record of every peer that has one, behind short sharded locks.
///
/// A peer's record lock is its shard's lock: every write transition of the
/// peer runs under it, in a synchronous closure (never across an
/// `.await`), and drops nothing that runs user code there (closures hand
/// connections out to be closed after unlocking). Peers whose status is
/// all the manager holds (bookkeeping alone) have no record: their
/// transitions take the lock and find none.
pub(crate) struct Peers<P: Parts> {
    shards: Box<[Shard<P>]>,
    hasher: RandomState,
}

impl<P: Parts> Peers<P> {
    /// A power of two of shards, eight per available CPU, 8 to 128.
    pub(crate) fn new() -> Self {
        let n = (std::thread::available_parallelism().map_or(1, |n| n.get()) * 8)
            .next_power_of_two()
            .clamp(8, 128);
        Self {
            shards: (0..n)
                .map(|_| {
                    CachePadded::new(Mutex::new(Records {
                        map: HashMap::new(),
                        made: 0,
                    }))
                })
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// Where `peer`'s record lives.
    pub(crate) fn key(&self, peer: PeerId) -> Key {
        Key {
            peer,
            shard: self.hasher.hash_one(peer) as usize & (self.shards.len() - 1),
        }
    }

    /// Runs `f` under `peer`'s record lock, on the map holding its record.
    pub(crate) fn with<R>(
        &self,
        peer: &PeerId,
        f: impl FnOnce(&mut HashMap<PeerId, Record<P>>) -> R,
    ) -> R {
        self.at(&self.key(*peer), f)
    }

    /// As [`with`](Self::with), for a peer already located.
    pub(crate) fn at<R>(
        &self,
        key: &Key,
        f: impl FnOnce(&mut HashMap<PeerId, Record<P>>) -> R,
    ) -> R {
        f(&mut self.shards[key.shard].lock().map)
    }

    /// As [`at`](Self::at), with the shard's watch bookkeeping.
    pub(crate) fn at_watching<R>(&self, key: &Key, f: impl FnOnce(&mut Records<P>) -> R) -> R {
        f(&mut self.shards[key.shard].lock())
    }

    /// Runs `f` on each shard's map in turn, under its lock.
    pub(crate) fn for_each_shard(&self, mut f: impl FnMut(&mut HashMap<PeerId, Record<P>>)) {
        for shard in self.shards.iter() {
            f(&mut shard.lock().map);
        }
    }

    /// Bytes held: the shards, and hashbrown's buckets (one key-record
    /// pair and one control byte per slot of capacity); plus
    /// `per_record(record)` for what each record holds out of line.
    pub(crate) fn memory_usage(&self, per_record: impl Fn(&Record<P>) -> usize) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let map = &s.lock().map;
                size_of::<Shard<P>>()
                    + map.capacity() * (size_of::<(PeerId, Record<P>)>() + 1)
                    + map.values().map(&per_record).sum::<usize>()
            })
            .sum()
    }
}
