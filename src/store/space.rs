//! Space accounting: which segments are free, and how many bytes of each
//! the index still references (live bytes, tombstones included). Shared by
//! the pollers: a segment belongs to one shard, so only that shard's poller
//! changes its counters, but INFO reads them all.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crossbeam_queue::SegQueue;

use super::Shard;
use crate::format::Superblock;

/// No shard: a free segment.
pub const NO_SHARD: u32 = u32::MAX;

#[derive(Debug)]
pub struct Space {
    /// Segments ready to be opened for appending.
    pub free: SegQueue<u32>,
    /// Live bytes per segment.
    pub live: Vec<AtomicU32>,
    /// Owning shard per segment, `NO_SHARD` while free.
    pub shard: Vec<AtomicU32>,
    /// Last segment generation handed out.
    pub gen: AtomicU64,
    pub segment_size: u32,
}

impl Space {
    /// Accounts for every entry of the index; segments nobody references
    /// are free.
    pub fn from_index(sb: &Superblock, shards: &[Shard], max_gen: u64) -> Self {
        let n = sb.segment_count as usize;
        let live: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let shard: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(NO_SHARD)).collect();
        for s in shards {
            for p in s.partitions() {
                for (_, e) in p.iter() {
                    let seg = sb.segment_of(e.offset) as usize;
                    live[seg].fetch_add(e.len, Relaxed);
                    shard[seg].store(s.id, Relaxed);
                }
            }
        }
        let free = SegQueue::new();
        for (i, l) in live.iter().enumerate() {
            if l.load(Relaxed) == 0 {
                free.push(i as u32);
            }
        }
        Space {
            free,
            live,
            shard,
            gen: AtomicU64::new(max_gen),
            segment_size: sb.segment_size,
        }
    }

    pub fn free_segments(&self) -> usize {
        self.free.len()
    }

    /// Bytes referenced by the index.
    pub fn live_bytes(&self) -> u64 {
        self.live.iter().map(|l| l.load(Relaxed) as u64).sum()
    }

    /// Bytes of segments in use (not free).
    pub fn used_bytes(&self) -> u64 {
        (self.live.len() - self.free.len()) as u64 * self.segment_size as u64
    }

    /// A new segment generation.
    pub fn next_gen(&self) -> u64 {
        self.gen.fetch_add(1, Relaxed) + 1
    }
}
