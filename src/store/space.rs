//! Space accounting: which segments are free, and how many bytes of each
//! the index still references (live bytes, tombstones included), and of
//! those how many only as markers of keys that expired or were evicted
//! (gone bytes: reclaimable by compaction, which drops such records or
//! replaces them with small tombstones). Shared by
//! the pollers: a segment belongs to one shard, so only that shard's poller
//! changes its counters, but INFO reads them all.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crossbeam_queue::SegQueue;

use super::Shard;
use crate::format::{align_up, piece_capacity, LargeHead, Superblock};
use crate::index::Partition;

/// The heads of large values the index references, by device offset of
/// the head record: what their pieces are.
pub type LargeMap = HashMap<u64, Arc<LargeHead>>;

/// No shard: a free segment.
pub const NO_SHARD: u32 = u32::MAX;

#[derive(Debug)]
pub struct Space {
    /// Segments ready to be opened for appending. Take one with
    /// [`Space::take_free`], which falls back on `unzeroed`.
    pub free: SegQueue<u32>,
    /// Free segments of a data file still holding holes, in the order the
    /// background zeroing (`zero.rs`) fills them; each moves to `free`
    /// once written with zeros. Taken from the back only when `free` is
    /// empty: a commit into one allocates blocks, and is slower for it.
    unzeroed: Mutex<VecDeque<u32>>,
    /// Segments in `unzeroed` or being zeroed: free ones all the same.
    zeroing: AtomicUsize,
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
    /// Segments holding a piece of a large value (or about to): out of
    /// compaction's sight.
    pub piece: Vec<AtomicBool>,
    /// Heads referencing each piece segment (a COPY or an EXPIRE shares
    /// the pieces of the head it rewrites).
    pub piece_refs: Vec<AtomicU32>,
    /// The heads of large values, by head offset (changed by the poller
    /// owning the head's shard; saved at a clean shutdown).
    pub large: Mutex<LargeMap>,
    block: u64,
}

/// What one thread counted of the entries it walked: the referenced
/// bytes of each segment and the heads of large values among them
/// ([`Space::from_walked`]). A clean start counts while it checks the
/// tables (`store::open_partitions`); [`Space::from_index`] walks them.
pub struct Walked {
    /// Bytes referenced per segment.
    live: Vec<u32>,
    /// Of them, bytes of markers (expired or evicted keys) per segment.
    gone: Vec<u32>,
    /// The shard of each segment it saw an entry in ([`NO_SHARD`]: none).
    shard: Vec<u32>,
    /// Offsets of entries that are heads of large values.
    heads: Vec<u64>,
}

impl Walked {
    pub fn new(sb: &Superblock) -> Walked {
        let n = sb.segment_count as usize;
        Walked {
            live: vec![0; n],
            gone: vec![0; n],
            shard: vec![NO_SHARD; n],
            heads: Vec::new(),
        }
    }

    /// Counts the entries of partition `p` of shard `shard`; `large`: the
    /// heads of large values the store may hold, by offset.
    pub fn count(&mut self, sb: &Superblock, shard: u32, p: &Partition, large: &LargeMap) {
        for e in p.iter_entries() {
            if !e.tombstone && large.contains_key(&e.offset) {
                self.heads.push(e.offset);
            }
            let seg = sb.segment_of(e.offset) as usize;
            self.live[seg] += e.len;
            if e.is_marker() {
                self.gone[seg] += e.len;
            }
            self.shard[seg] = shard;
        }
    }
}

impl Space {
    /// Accounts for every entry of the index; segments nobody references
    /// are free.
    /// `min_seq` comes from the scan or the table saved at shutdown; when
    /// unknown, segments in use count as holding the oldest records.
    /// Of `large`, only the heads a live entry of the index points at
    /// count.
    /// `large` holds the heads of large values the index references.
    pub fn from_index(
        sb: &Superblock,
        shards: &[Shard],
        max_gen: u64,
        min_seq: Option<Vec<u64>>,
        large: LargeMap,
    ) -> Self {
        // Every entry of the index, on every CPU (a shard's partitions to
        // one thread), each thread into counts of its own (shared atomic
        // counters would bounce their cache lines between CPUs).
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, shards.len().max(1));
        let walked: Vec<Walked> = std::thread::scope(|scope| {
            let walkers: Vec<_> = (0..threads)
                .map(|t| {
                    let large = &large;
                    scope.spawn(move || {
                        let mut w = Walked::new(sb);
                        for s in shards.iter().skip(t).step_by(threads) {
                            for p in s.partitions() {
                                w.count(sb, s.id, p, large);
                            }
                        }
                        w
                    })
                })
                .collect();
            (walkers.into_iter())
                .map(|w| w.join().expect("index walk thread"))
                .collect()
        });
        Self::from_walked(sb, walked, max_gen, min_seq, large)
    }

    /// [`Space::from_index`] from the counts of threads that walked every
    /// entry of the index between them.
    pub fn from_walked(
        sb: &Superblock,
        walked: Vec<Walked>,
        max_gen: u64,
        min_seq: Option<Vec<u64>>,
        large: LargeMap,
    ) -> Self {
        let n = sb.segment_count as usize;
        let live: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let gone: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let shard: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(NO_SHARD)).collect();
        let mut referenced = Vec::new();
        for w in walked {
            for seg in 0..n {
                live[seg].fetch_add(w.live[seg], Relaxed);
                gone[seg].fetch_add(w.gone[seg], Relaxed);
                if w.shard[seg] != NO_SHARD {
                    shard[seg].store(w.shard[seg], Relaxed);
                }
            }
            referenced.extend(w.heads);
        }
        // Of `large`, the heads a live entry points at.
        let mut heads = LargeMap::with_capacity(referenced.len());
        let mut large = large;
        for off in referenced {
            if let Some(h) = large.remove_entry(&off) {
                heads.insert(h.0, h.1);
            }
        }
        let piece: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
        let piece_refs: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let block = sb.block_size as u64;
        let large = heads;
        for (&off, head) in &large {
            let owner = shard[sb.segment_of(off) as usize].load(Relaxed);
            for (i, &seg) in head.pieces.iter().enumerate() {
                if piece_refs[seg as usize].fetch_add(1, Relaxed) == 0 {
                    let bytes = piece_bytes(head, i, sb.segment_size, block);
                    live[seg as usize].fetch_add(bytes, Relaxed);
                }
                piece[seg as usize].store(true, Relaxed);
                shard[seg as usize].store(owner, Relaxed);
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
            unzeroed: Mutex::default(),
            zeroing: AtomicUsize::new(0),
            live,
            gone,
            shard,
            min_seq,
            gen: AtomicU64::new(max_gen),
            segment_size: sb.segment_size,
            piece,
            piece_refs,
            large: Mutex::new(large),
            block,
        }
    }

    /// Whether segment `seg` holds (or is about to hold) a piece.
    pub fn is_piece(&self, seg: usize) -> bool {
        self.piece.get(seg).is_some_and(|p| p.load(Relaxed))
    }

    /// Device bytes piece `i` of `head` takes, header block included.
    pub fn piece_bytes(&self, head: &LargeHead, i: usize) -> u32 {
        piece_bytes(head, i, self.segment_size, self.block)
    }

    /// Free segments, those still to be zeroed included.
    pub fn free_segments(&self) -> usize {
        self.free.len() + self.zeroing.load(Relaxed)
    }

    /// A free segment: a zeroed one if there is any, else the last of the
    /// segments still to be zeroed (away from where the zeroing works).
    pub fn take_free(&self) -> Option<u32> {
        if let Some(no) = self.free.pop() {
            return Some(no);
        }
        let no = self.unzeroed.lock().expect("unzeroed").pop_back()?;
        self.zeroing.fetch_sub(1, Relaxed);
        Some(no)
    }

    /// Takes `n` free segments out of the free list for a writer to hold
    /// (a part of a transaction across pollers, between its prepare and
    /// its commit: see `server/poller/cross.rs`), leaving at least `keep`
    /// free; `None`, taking none, when there are not that many. Each
    /// comes with whether it was zeroed, for [`Space::give_back`]. Other
    /// pollers take free segments meanwhile: the count is checked again
    /// once they are taken, so a race refuses rather than eats into
    /// `keep`.
    pub fn hold_free(&self, n: usize, keep: usize) -> Option<Vec<(u32, bool)>> {
        if self.free_segments() < keep + n {
            return None;
        }
        let mut held = Vec::with_capacity(n);
        while held.len() < n {
            let taken = match self.free.pop() {
                Some(no) => Some((no, true)),
                None => self.take_free().map(|no| (no, false)),
            };
            match taken {
                Some(seg) => held.push(seg),
                None => break,
            }
        }
        if held.len() < n || self.free_segments() < keep {
            self.give_back(held);
            return None;
        }
        Some(held)
    }

    /// Segments taken by [`Space::hold_free`] and not used go back: a
    /// zeroed one to `free`, one still to be zeroed among those (taken
    /// last, as before).
    pub fn give_back(&self, segs: impl IntoIterator<Item = (u32, bool)>) {
        for (no, zeroed) in segs {
            if zeroed {
                self.free.push(no);
            } else {
                self.unzeroed.lock().expect("unzeroed").push_back(no);
                self.zeroing.fetch_add(1, Relaxed);
            }
        }
    }

    /// Holds back the free segments `has_holes` names from `free` until
    /// [`Space::take_unzeroed`] hands them to the zeroing; returns how
    /// many.
    pub fn hold_unzeroed(&self, has_holes: impl Fn(u32) -> bool) -> usize {
        let mut free: Vec<u32> = std::iter::from_fn(|| self.free.pop()).collect();
        free.sort_unstable();
        let mut held = self.unzeroed.lock().expect("unzeroed");
        for no in free {
            if has_holes(no) {
                held.push_back(no);
            } else {
                self.free.push(no);
            }
        }
        self.zeroing.fetch_add(held.len(), Relaxed);
        held.len()
    }

    /// The next run of consecutive segments to zero, at most `max` long
    /// and at most half of those held (one if one is left), so that a
    /// writer finding no zeroed segment still finds one to take: they stay
    /// counted free, and the zeroing gives each back with
    /// [`Space::zeroed`].
    pub fn take_unzeroed(&self, max: usize) -> Vec<u32> {
        let mut held = self.unzeroed.lock().expect("unzeroed");
        let max = max.min((held.len() / 2).max(1));
        let mut run: Vec<u32> = Vec::with_capacity(max);
        while run.len() < max {
            match held.front() {
                Some(&no) if run.last().is_none_or(|&l| l + 1 == no) => {
                    run.push(no);
                    held.pop_front();
                }
                _ => break,
            }
        }
        run
    }

    /// Segment `no`, taken by [`Space::take_unzeroed`], is zeroed (or left
    /// as it is, the zeroing stopped): it joins the free segments.
    pub fn zeroed(&self, no: u32) {
        self.free.push(no);
        self.zeroing.fetch_sub(1, Relaxed);
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
            .filter(|&g| self.shard[g].load(Relaxed) != NO_SHARD && !self.is_piece(g))
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
            .filter(|&g| self.shard[g].load(Relaxed) != NO_SHARD && !self.is_piece(g))
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
        (self.live.len() - self.free_segments()) as u64 * self.segment_size as u64
    }

    /// A new segment generation.
    pub fn next_gen(&self) -> u64 {
        self.gen.fetch_add(1, Relaxed) + 1
    }
}

/// Device bytes piece `i` of `head` takes: its header's block and its
/// data, in whole blocks.
fn piece_bytes(head: &LargeHead, i: usize, segment_size: u32, block: u64) -> u32 {
    let cap = piece_capacity(segment_size, block);
    (block + align_up(head.piece_len(i, cap), block)) as u32
}

const TABLE: &str = "segments.tbl";
const TABLE_MAGIC: &[u8; 8] = b"NVKVSEGT";

/// Saves the per-segment smallest sequence numbers, and the heads of
/// large values ([`save_large_table`]), at a clean shutdown.
pub fn save_table(dir: &Path, sb: &Superblock, space: &Space) -> std::io::Result<()> {
    {
        let large = space.large.lock().expect("large value map");
        save_large_table(dir, sb, &large, space.gen.load(Relaxed))?;
    }
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

const LARGE_TABLE: &str = "large.tbl";
const LARGE_MAGIC: &[u8; 8] = b"NVKVLRGT";

/// Saves the heads of large values at a clean shutdown (and when a store
/// is created: empty), so that a clean open knows their pieces without
/// reading the heads.
///
/// ```text
/// magic "NVKVLRGT" | uuid [16] | count u32 | crc u32 (of the body) | body: max_gen u64 | (offset u64 | len u32 | head [len]) × count
/// ```
///
/// `max_gen` is the store's last generation, as the index's checkpoint
/// has it: a table left from an earlier run (a crash between marking the
/// index clean and saving the table) has another and is not used, since
/// every new head, and every record superseding one, bumps it (a new
/// segment or a new value id). A head the table has but the index no
/// longer points at (a flush) is left out by [`Space::from_index`].
pub fn save_large_table(
    dir: &Path,
    sb: &Superblock,
    large: &LargeMap,
    max_gen: u64,
) -> std::io::Result<()> {
    let mut body = max_gen.to_le_bytes().to_vec();
    for (&off, head) in large {
        let h = head.encode();
        body.extend_from_slice(&off.to_le_bytes());
        body.extend_from_slice(&(h.len() as u32).to_le_bytes());
        body.extend_from_slice(&h);
    }
    let mut b = Vec::with_capacity(32 + body.len());
    b.extend_from_slice(LARGE_MAGIC);
    b.extend_from_slice(&sb.uuid);
    b.extend_from_slice(&(large.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    b.extend_from_slice(&body);
    let tmp = dir.join("large.tbl.tmp");
    std::fs::write(&tmp, &b)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(tmp, dir.join(LARGE_TABLE))
}

/// The table [`save_large_table`] wrote, whole and of this store, with
/// the highest generation of the index it was saved with; `None` when
/// missing or damaged. A table of another generation than the index's
/// checkpoint is not the index's: the caller then rebuilds the index
/// (only a scan finds the heads).
pub fn read_large_table(dir: &Path, sb: &Superblock) -> Option<(u64, LargeMap)> {
    let b = std::fs::read(dir.join(LARGE_TABLE)).ok()?;
    if b.len() < 40 || &b[..8] != LARGE_MAGIC || b[8..24] != sb.uuid {
        return None;
    }
    let count = u32::from_le_bytes(b[24..28].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[28..32].try_into().ok()?);
    if crc32c::crc32c(&b[32..]) != crc {
        return None;
    }
    let gen = u64::from_le_bytes(b[32..40].try_into().ok()?);
    let mut map = LargeMap::with_capacity(count);
    let mut at = 40;
    for _ in 0..count {
        let off = u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?);
        let len = u32::from_le_bytes(b.get(at + 8..at + 12)?.try_into().ok()?) as usize;
        let head = LargeHead::decode(b.get(at + 12..at + 12 + len)?)?;
        if head.pieces.iter().any(|&p| p >= sb.segment_count) {
            return None;
        }
        map.insert(off, Arc::new(head));
        at += 12 + len;
    }
    (at == b.len()).then_some((gen, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(segments: u32) -> Space {
        let sb = Superblock {
            block_size: 4096,
            uuid: [7; 16],
            capacity: (1 << 20) + segments as u64 * (1 << 20),
            data_start: 1 << 20,
            segment_size: 1 << 20,
            segment_count: segments,
            shards: 1,
            partitions: 1,
            created_unix: 1,
        };
        Space::from_index(&sb, &[], 0, None, LargeMap::new())
    }

    #[test]
    fn segments_held_for_zeroing_count_free_and_are_taken_last() {
        let s = space(10);
        // Segments 4..10 still have holes.
        assert_eq!(s.hold_unzeroed(|no| no >= 4), 6);
        assert_eq!(s.free_segments(), 10);
        assert_eq!(s.used_bytes(), 0);
        // The zeroing takes runs from the front.
        assert_eq!(s.take_unzeroed(2), vec![4, 5]);
        assert_eq!(s.free_segments(), 10);
        // Writers take zeroed segments first, then held ones from the back.
        let taken: Vec<u32> = (0..4).map(|_| s.take_free().unwrap()).collect();
        assert_eq!(taken, vec![0, 1, 2, 3]);
        assert_eq!(s.take_free(), Some(9));
        assert_eq!(s.free_segments(), 5);
        s.zeroed(4);
        s.zeroed(5);
        assert_eq!(s.take_free(), Some(4));
        // A run takes at most half of the held segments, and stops where
        // they stop being consecutive.
        assert_eq!(s.take_unzeroed(8), vec![6]);
        assert_eq!(s.take_free(), Some(5));
        assert_eq!(s.take_free(), Some(8));
        assert_eq!(s.take_unzeroed(8), vec![7]);
        assert_eq!(s.take_unzeroed(8), Vec::<u32>::new());
        assert_eq!(s.take_free(), None);
        assert_eq!(s.free_segments(), 2);
        s.zeroed(6);
        s.zeroed(7);
        assert_eq!(s.take_free(), Some(6));
    }

    #[test]
    fn held_segments_leave_the_kept_ones_and_go_back_where_they_were() {
        let s = space(6);
        // Segments 3..6 still have holes.
        assert_eq!(s.hold_unzeroed(|no| no >= 3), 3);
        // Not enough beyond the two to keep: none is taken.
        assert_eq!(s.hold_free(5, 2), None);
        assert_eq!(s.free_segments(), 6);
        // Zeroed ones first, then those still to be zeroed, from the back.
        let held = s.hold_free(4, 2).unwrap();
        assert_eq!(held, vec![(0, true), (1, true), (2, true), (5, false)]);
        assert_eq!(s.free_segments(), 2);
        assert_eq!(s.hold_free(1, 2), None);
        s.give_back(held);
        assert_eq!(s.free_segments(), 6);
        let taken: Vec<u32> = (0..6).map(|_| s.take_free().unwrap()).collect();
        assert_eq!(taken, vec![0, 1, 2, 5, 4, 3]);
    }
}
