//! Space accounting: which segments are free, and how many bytes of each
//! the index still references (live bytes, tombstones included), and of
//! those how many only as markers of keys that expired or were evicted
//! (gone bytes: reclaimable by compaction, which drops such records or
//! replaces them with small tombstones). Shared by
//! the pollers: a segment belongs to one shard, so only that shard's poller
//! changes its counters, but INFO reads them all.

use std::path::Path;
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
    /// Bytes per segment the index references (markers included).
    pub live: Vec<AtomicU32>,
    /// Of those, bytes the index references only as markers of keys that
    /// expired or were evicted: dead, but compaction must see them.
    pub gone: Vec<AtomicU32>,
    /// Owning shard per segment, `NO_SHARD` while free.
    pub shard: Vec<AtomicU32>,
    /// Smallest record sequence number per segment: a tombstone older than
    /// every segment of its shard shadows nothing and can go.
    pub min_seq: Vec<AtomicU64>,
    /// Last segment generation handed out.
    pub gen: AtomicU64,
    pub segment_size: u32,
}

impl Space {
    /// Accounts for every entry of the index; segments nobody references
    /// are free.
    /// `min_seq` comes from the scan or the table saved at shutdown; when
    /// unknown, segments in use count as holding the oldest records.
    pub fn from_index(
        sb: &Superblock,
        shards: &[Shard],
        max_gen: u64,
        min_seq: Option<Vec<u64>>,
    ) -> Self {
        let n = sb.segment_count as usize;
        let live: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let gone: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let shard: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(NO_SHARD)).collect();
        for s in shards {
            for p in s.partitions() {
                for (_, e) in p.iter() {
                    let seg = sb.segment_of(e.offset) as usize;
                    live[seg].fetch_add(e.len, Relaxed);
                    if e.is_marker() {
                        gone[seg].fetch_add(e.len, Relaxed);
                    }
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
        let min_seq = (0..n)
            .map(|i| {
                let known = min_seq.as_ref().map_or(0, |m| m[i]);
                let in_use = live[i].load(Relaxed) > 0;
                AtomicU64::new(if in_use { known } else { u64::MAX })
            })
            .collect();
        Space {
            free,
            live,
            gone,
            shard,
            min_seq,
            gen: AtomicU64::new(max_gen),
            segment_size: sb.segment_size,
        }
    }

    pub fn free_segments(&self) -> usize {
        self.free.len()
    }

    /// Bytes of live keys and tombstones: what the index references, less
    /// the markers of keys that expired or were evicted.
    pub fn live_bytes(&self) -> u64 {
        self.referenced_bytes() - self.gone_bytes()
    }

    /// Bytes the index references, markers included.
    pub fn referenced_bytes(&self) -> u64 {
        self.live.iter().map(|l| l.load(Relaxed) as u64).sum()
    }

    /// Bytes of records of keys that expired or were evicted, not yet
    /// reclaimed by compaction.
    pub fn gone_bytes(&self) -> u64 {
        self.gone.iter().map(|l| l.load(Relaxed) as u64).sum()
    }

    /// The live bytes of the fullest segment in use: what a segment holds
    /// once packed, padding and record alignment taken out.
    pub fn packed_live(&self) -> u32 {
        (0..self.live.len())
            .filter(|&g| self.shard[g].load(Relaxed) != NO_SHARD)
            .map(|g| self.live_in(g))
            .max()
            .unwrap_or(0)
    }

    /// Bytes compaction can win back: over the segments in use that hold
    /// less than nine tenths of a packed one, what they lack of it. Dead
    /// bytes that are only padding (every segment as full as records let
    /// it be) win nothing: moving those records fills new segments as much.
    pub fn compactable_bytes(&self) -> u64 {
        let packed = self.packed_live() as u64;
        (0..self.live.len())
            .filter(|&g| self.shard[g].load(Relaxed) != NO_SHARD)
            .map(|g| self.live_in(g) as u64)
            .filter(|&l| l * 10 < packed * 9)
            .map(|l| packed - l)
            .sum()
    }

    /// Live bytes of segment `seg`: referenced, less markers.
    pub fn live_in(&self, seg: usize) -> u32 {
        self.live[seg].load(Relaxed) - self.gone[seg].load(Relaxed)
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

const TABLE: &str = "segments.tbl";
const TABLE_MAGIC: &[u8; 8] = b"NVKVSEGT";

/// Saves the per-segment smallest sequence numbers at a clean shutdown.
pub fn save_table(dir: &Path, sb: &Superblock, space: &Space) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(32 + space.min_seq.len() * 8);
    b.extend_from_slice(TABLE_MAGIC);
    b.extend_from_slice(&sb.uuid);
    b.extend_from_slice(&(space.min_seq.len() as u32).to_le_bytes());
    let body: Vec<u8> = space
        .min_seq
        .iter()
        .flat_map(|m| m.load(Relaxed).to_le_bytes())
        .collect();
    b.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    b.extend_from_slice(&body);
    let tmp = dir.join("segments.tbl.tmp");
    std::fs::write(&tmp, &b)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(tmp, dir.join(TABLE))
}

/// Loads the table saved by [`save_table`]; `None` when missing or damaged.
/// The file is removed once read, so that a crash before the next clean
/// shutdown never leaves a stale table behind.
pub fn load_table(dir: &Path, sb: &Superblock) -> Option<Vec<u64>> {
    let b = std::fs::read(dir.join(TABLE)).ok()?;
    let _ = std::fs::remove_file(dir.join(TABLE));
    let n = sb.segment_count as usize;
    if b.len() != 32 + n * 8 || &b[..8] != TABLE_MAGIC || b[8..24] != sb.uuid {
        return None;
    }
    let count = u32::from_le_bytes(b[24..28].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[28..32].try_into().ok()?);
    if count != n || crc32c::crc32c(&b[32..]) != crc {
        return None;
    }
    Some(
        b[32..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    )
}
