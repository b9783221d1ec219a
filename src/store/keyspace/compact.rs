//! Space reclamation: a poller compacts its own shards' segments in the
//! background, in bounded steps between requests.
//!
//! Once fewer than a quarter of the segments are free, a segment whose live
//! bytes fall below `--compact-below` of its size (or below 95% while fewer
//! than a tenth of the segments are free) is read
//! whole with one large read; then, a few hundred records per loop turn,
//! every record the index still points at is appended again through the
//! normal write path. Markers of expired and evicted keys count as dead
//! when a victim is chosen. Tombstones, expired and evicted records are
//! dropped when no
//! segment of their shard can hold an older version of their key (every
//! other segment's smallest sequence number is above theirs); otherwise a
//! tombstone moves with its own sequence number. Once the copies are
//! durable, the emptied segment returns to the free pool. When a shard's
//! index holds many tombstones and markers (at least 1024, and a quarter
//! of its entries), its oldest segments are rewritten in turn, whatever
//! their live bytes: a segment of long-lived keys that is never compacted
//! would otherwise keep every later tombstone of its shard for good.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{Keyspace, Tag};
use crate::format::{SegmentHeader, SegmentRecords, FLAG_LARGE, FLAG_TOMBSTONE};
use crate::index::KeyHash;
use crate::io::{Completion, Engine, IoBuf};
use crate::store::NO_SHARD;

/// Records moved per loop turn at most, and their bytes (four times as
/// many while free segments are scarce): a turn that moved a whole 2 MiB
/// segment of large values held the reads behind it for a millisecond.
const STEP: usize = 256;
const STEP_BYTES: u64 = 256 << 10;
/// How long a compaction that found no room waits before it tries again.
const PAUSE: Duration = Duration::from_millis(1);
/// How often an idle compactor looks for a segment.
const PICK_EVERY: Duration = Duration::from_millis(10);
/// Tombstones and markers in a shard's index (and at least a quarter of
/// its entries) that make compaction rewrite its oldest segments.
const PILED_TOMBSTONES: u64 = 1024;

struct Job {
    seg: u32,
    shard: u32,
    buf: Option<IoBuf>,
    header: Option<SegmentHeader>,
    pos: usize,
    /// Tombstones older than this shadow nothing on the device.
    floor: u64,
}

pub(super) struct Compactor {
    below: f64,
    job: Option<Job>,
    last_pick: Instant,
    /// A record is being moved: its append may use the reserve.
    moving: bool,
    /// The job found no free segment to move into: it waits until then
    /// (segments emptied earlier become free as commits complete).
    blocked_until: Option<Instant>,
    /// Bytes of segments rewritten for their age (see `oldest_victim`).
    aged: u64,
}

impl Compactor {
    pub(super) fn new(below: f64, now: Instant) -> Self {
        Compactor {
            below,
            job: None,
            last_pick: now,
            moving: false,
            blocked_until: None,
            aged: 0,
        }
    }
}

impl Compactor {
    /// A record is being moved: its append may use the reserve (client
    /// writes may not, even while a compaction runs: the reserve is what
    /// lets compaction finish).
    pub(super) fn moving(&self) -> bool {
        self.moving
    }
}

impl Compactor {
    /// Forgets the segment being compacted (FLUSHDB emptied it); a read of
    /// it still at the device is dropped when it completes.
    pub(super) fn abandon(&mut self) {
        self.job = None;
        self.blocked_until = None;
    }
}

impl<E: Engine, W> Keyspace<E, W> {
    /// A segment is being compacted.
    pub(super) fn compacting(&self) -> bool {
        self.compactor.job.is_some()
    }

    /// Runs one bounded step of compaction; returns whether it did anything.
    pub(super) fn compact_turn(&mut self) -> bool {
        if let Some(t) = self.compactor.blocked_until {
            if self.now < t {
                return false;
            }
            self.compactor.blocked_until = None;
        }
        match &self.compactor.job {
            None => self.pick_victim(),
            Some(j) if j.buf.is_some() => self.compact_step(),
            Some(_) => false, // reading
        }
    }

    fn pick_victim(&mut self) -> bool {
        let hurry = self.space_low();
        let since_pick = self.now.saturating_duration_since(self.compactor.last_pick);
        if (!hurry && since_pick < PICK_EVERY) || self.stopping {
            return false;
        }
        self.compactor.last_pick = self.now;
        let seg = match self.oldest_victim(hurry) {
            Some(seg) => {
                self.compactor.aged += self.sb.segment_size as u64;
                seg
            }
            None => match self.emptiest_victim(hurry) {
                Some(seg) => seg,
                None => return false,
            },
        };
        let space = &self.space;
        let shard = space.shard[seg as usize].load(Relaxed);
        let floor = space
            .shard
            .iter()
            .enumerate()
            .filter(|&(g, s)| g as u32 != seg && s.load(Relaxed) == shard)
            .map(|(g, _)| space.min_seq[g].load(Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let size = self.sb.segment_size as usize;
        let buf = match self.eng.alloc(size) {
            Ok(buf) => buf,
            Err(e) => {
                // Out of DMA memory: compaction skips this turn.
                tracing::debug!(segment = seg, "compaction: no buffer for the victim: {e}");
                return false;
            }
        };
        let off = self.sb.segment_offset(seg);
        if self
            .eng
            .read(off, buf, Tag::CompactRead { segment: seg }.encode())
            .is_err()
        {
            return false;
        }
        self.count_read(size as u64);
        self.compactor.job = Some(Job {
            seg,
            shard,
            buf: None,
            header: None,
            pos: 0,
            floor,
        });
        true
    }

    /// The segment with the fewest live bytes, when space is needed: the
    /// cheapest to empty.
    fn emptiest_victim(&self, hurry: bool) -> Option<u32> {
        let space = &self.space;
        let evicting = self.evictor_pressure();
        if space.free_segments() * 4 > space.live.len()
            && !hurry
            && !evicting
            && self.waiting_since.is_none()
        {
            return None; // plenty of room: moving records would only churn
        }
        let seg_size = self.sb.segment_size as f64;
        let pressure = hurry || space.free_segments() * 10 < space.live.len();
        // Never a segment about as full as records pack: moving its records
        // would fill a new segment as much, and free nothing.
        let packed = space.packed_live() as f64 * 0.9;
        let limit = (if pressure { 0.95 } else { self.compactor.below } * seg_size).min(packed);
        let mut best: Option<(u32, u32)> = None;
        for (g, referenced) in space.live.iter().enumerate() {
            // Markers of expired and evicted keys are dead bytes here.
            let live = space.live_in(g);
            let shard = space.shard[g].load(Relaxed);
            if referenced.load(Relaxed) == 0
                || live as f64 >= limit
                || !self.owns(shard)
                || space.is_piece(g)
            {
                continue;
            }
            if best.is_none_or(|(_, l)| live < l)
                && !self.is_open(g as u32)
                && !self.is_pending_free(g as u32)
            {
                best = Some((g as u32, live));
            }
        }
        best.map(|(seg, _)| seg)
    }

    /// The oldest segment of a shard whose index holds many tombstones
    /// (and markers of expired or evicted keys). Compaction keeps a
    /// tombstone while any other segment of its shard has older records,
    /// which it may shadow; a segment of long-lived keys that is never
    /// emptied enough to be compacted would keep every later tombstone,
    /// and its index entry, forever. Rewriting the oldest segments in turn
    /// moves that floor on, so compaction can drop them (log-structured
    /// stores clean by age for the same reason). Not while space is short:
    /// then the emptiest segments come first. And at most an eighth of the
    /// bytes clients wrote: in a cache that evicts, markers of evicted keys
    /// are always plenty, and rewriting by age as fast as compaction goes
    /// took the write amplification of the soak run from 4.5 to 6.6.
    fn oldest_victim(&self, hurry: bool) -> Option<u32> {
        let budget = self.counters.user_bytes.load(Relaxed) / 8;
        if hurry || self.compactor.aged + self.sb.segment_size as u64 > budget {
            return None;
        }
        let space = &self.space;
        let piled = self.shards.iter().flatten().find(|s| {
            let t = s.tombstones();
            t >= PILED_TOMBSTONES && t * 4 >= s.live_keys() + t
        })?;
        let shard = piled.id;
        let mut oldest: Option<(u32, u64)> = None;
        for (g, referenced) in space.live.iter().enumerate() {
            if space.shard[g].load(Relaxed) != shard
                || referenced.load(Relaxed) == 0
                || space.is_piece(g)
            {
                continue;
            }
            let min_seq = space.min_seq[g].load(Relaxed);
            if oldest.is_none_or(|(_, m)| min_seq < m)
                && !self.is_open(g as u32)
                && !self.is_pending_free(g as u32)
            {
                oldest = Some((g as u32, min_seq));
            }
        }
        oldest.map(|(seg, _)| seg)
    }

    /// Whether this keyspace owns shard `shard`.
    fn owns(&self, shard: u32) -> bool {
        shard != NO_SHARD && self.shards.get(shard as usize).is_some_and(|s| s.is_some())
    }

    /// The victim's bytes arrived.
    pub(super) fn compact_read_done(&mut self, c: Completion) {
        let Some(job) = self.compactor.job.as_mut() else {
            return;
        };
        let buf = c.buf.expect("a read returns its buffer");
        match c.result {
            Ok(n) if n == buf.len() => {
                job.header = SegmentHeader::decode(&buf, &self.sb.uuid);
                if job.header.is_none() {
                    tracing::error!(
                        segment = job.seg,
                        "compaction: segment header unreadable; segment left alone"
                    );
                }
                job.pos = crate::format::SEGMENT_HEADER;
                job.buf = Some(buf);
            }
            other => {
                tracing::error!(segment = job.seg, "compaction read failed: {other:?}");
                self.counters.io_errors.fetch_add(1, Relaxed);
                self.compactor.job = None;
            }
        }
    }

    fn compact_step(&mut self) -> bool {
        let (buf, header) = {
            let job = self.compactor.job.as_mut().expect("a job");
            (job.buf.take().expect("job data"), job.header)
        };
        let done = match header {
            None => true,
            Some(h) => self.move_records(&buf, &h),
        };
        // Keys dropped, expired or evicted in this step.
        self.update_key_count();
        let mut job = self.compactor.job.take().expect("a job");
        if done {
            drop(buf); // back to the engine's pool
            let left = self.space.live[job.seg as usize].load(Relaxed);
            if left == 0 {
                self.counters.compactions.fetch_add(1, Relaxed);
            } else if job.header.is_some() {
                tracing::warn!(segment = job.seg, left, "compaction left live bytes behind");
            }
        } else {
            job.buf = Some(buf);
            self.compactor.job = Some(job);
        }
        true
    }

    /// Moves up to `STEP` records or `STEP_BYTES` of them; returns whether
    /// the segment is done.
    fn move_records(&mut self, buf: &[u8], h: &SegmentHeader) -> bool {
        let job = self.compactor.job.as_ref().expect("a job");
        let (seg, shard, floor, pos) = (job.seg, job.shard, job.floor, job.pos);
        let block = self.sb.block_size;
        let base = self.sb.segment_offset(seg);
        let uuid = self.sb.uuid;
        let mut it = SegmentRecords::resume(&uuid, buf, h, block, pos);
        let budget = if self.space_low() {
            4 * STEP_BYTES
        } else {
            STEP_BYTES
        };
        let mut bytes = 0;
        for _ in 0..STEP {
            if bytes >= budget {
                break;
            }
            let Some((at, rec)) = it.next() else {
                return true;
            };
            bytes += rec.len;
            self.compactor.job.as_mut().expect("a job").pos = it.end();
            let hash = KeyHash::of(rec.key);
            let pid = hash.partition(self.sb.partitions);
            if crate::store::shard_of(pid, self.sb.shards) != shard {
                continue;
            }
            if self.unverified.contains_key(&(base + at as u64)) {
                // Replaced unread: whose it was, a read under way says
                // (`replaced_verified`); until then it stays where it is.
                self.compactor.blocked_until = Some(self.now + PAUSE);
                self.compactor.job.as_mut().expect("a job").pos = at;
                return false;
            }
            // Live if an entry of its tag points at it; that entry is then
            // the one what follows acts on by tag (short tags: other keys
            // may share it).
            let part = self.shard_mut(pid).part_mut(pid);
            if !part.promote(hash.tag, base + at as u64) {
                continue; // superseded: dead
            }
            let Some(mut e) = part.get(&hash) else {
                continue;
            };
            // Under eviction, a live record of the victim that the policy
            // would take anyway goes here rather than being moved.
            if e.live(self.now_ms) && self.evict_in_place(pid, &hash, &e) {
                e = self
                    .shard_mut(pid)
                    .part_mut(pid)
                    .get(&hash)
                    .expect("marked");
            }
            // Deleted, expired, or evicted (a marker: the entry says
            // tombstone, the record holds a value).
            let found_expired = !e.tombstone && rec.expired(self.now_ms);
            if found_expired {
                self.went_named(e, rec.key, rec.meta.seq);
                self.counters.expired_keys.fetch_add(1, Relaxed);
            }
            let gone = e.tombstone || rec.is_tombstone() || found_expired;
            self.compactor.moving = true;
            let from = base + at as u64;
            let moved = if gone && rec.meta.seq < floor {
                self.shard_mut(pid).part_mut(pid).remove(&hash);
                let _ = self.drop_live(e);
                if self.follows_moves() {
                    self.entry_moved(pid, from, None);
                }
                Ok(())
            } else if gone {
                self.append_seq(pid, &hash, rec.key, &[], 0, FLAG_TOMBSTONE, rec.meta.seq)
                    .map(drop)
            } else {
                // A large value's head moves alone: its pieces stay. The
                // value's encoding mark moves with it.
                let flags = rec.meta.flags & FLAG_LARGE | rec.enc().flags();
                let seq = self.take_seq();
                self.append_seq(
                    pid,
                    &hash,
                    rec.key,
                    rec.value,
                    rec.meta.expire_ms,
                    flags,
                    seq,
                )
                .map(drop)
            };
            self.compactor.moving = false;
            if moved.is_err() {
                // No free segment even in the reserve: wait for segments
                // emptied earlier to become free, and go on from this
                // record (abandoning the victim would leave the copies
                // made so far as lost space).
                tracing::debug!(segment = seg, "compaction waits for a free segment");
                self.compactor.blocked_until = Some(self.now + PAUSE);
                self.compactor.job.as_mut().expect("a job").pos = at;
                return false;
            }
            if self.follows_moves() {
                // The first of the tag's entries is the one just written.
                let to = self.shard(pid).part(pid).get(&hash).map(|e| e.offset);
                if to != Some(from) {
                    self.entry_moved(pid, from, to);
                }
            }
            self.counters.compact_bytes.fetch_add(rec.len, Relaxed);
        }
        false
    }
}
