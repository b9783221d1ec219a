//! The write path of a poller: log-structured appends, group commit,
//! rollback of writes that failed to reach the device, and segment reuse.
//!
//! Each shard appends to its own open segment, a segment-sized buffer that
//! reads see at once. A commit copies the blocks appended since the last one
//! into engine buffers, writes them, then issues a flush; replies to writes
//! in sync mode wait for that flush. A partly filled last block is written
//! again by the next commit, records and all, like a database log's last
//! page; so this relies on the device writing a block atomically. While a commit is in flight, new writes gather for the
//! next one, so one flush serves every write that arrived meanwhile. In
//! async mode writes are acknowledged once buffered and a commit runs every
//! `--commit-interval-ms`.
//!
//! Every index change not yet durable is remembered in an undo log; when a
//! write or flush fails, the changes are rolled back, the writers get an
//! error, and the segments are abandoned, so the index never points at
//! bytes that did not reach the device.
//!
//! A segment whose records are all superseded is freed in two steps: once
//! the commit holding what superseded them is durable, a later commit
//! erases its header (zeroes its first block); once that commit is durable
//! too, the segment is free. A free segment therefore never carries a valid
//! header, and a rebuild never replays its stale records: without this, a
//! key whose tombstone compaction dropped (nothing older was left in the
//! shard's live segments) would come back from a freed segment that still
//! held an old value of it, once the tombstone's own segment was reused.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::large::LargeJob;
use super::{CommitFailed, Config, Keyspace, Tag, WriteError};
use crate::format::{
    align_down, align_up, encode_record, place_record, record_len, Enc, FlushMark, LargeHead,
    RecordMeta, SegmentHeader, FLAG_LARGE, FLAG_TOMBSTONE, SEGMENT_HEADER,
};
use crate::index::{Entry, IndexError, KeyHash};
use crate::io::{Completion, Engine, IoBuf};

/// A segment being filled, or full but not yet entirely written.
pub(super) struct OpenSeg {
    shard: u32,
    no: u32,
    base: u64,
    gen: u64,
    buf: IoBuf,
    /// Bytes appended, header included.
    len: usize,
    /// Bytes covered by writes issued so far.
    written: usize,
    /// Writes of this segment in flight.
    in_flight: u32,
    /// No more appends: full, or abandoned after a failed write.
    closed: bool,
}

/// An index change that is not durable yet.
struct Undo {
    pid: u32,
    hash: KeyHash,
    old: Option<Entry>,
    new: Entry,
    /// The old entry's large value head, whose pieces it released.
    old_head: Option<Arc<LargeHead>>,
}

struct Commit<W> {
    n: u64,
    /// Writes not completed yet, queued ones included.
    writes_left: u32,
    /// Writes waiting for a free engine slot, in order: a commit may
    /// carry more writes than the engine takes at once (`--max-io-depth`).
    queued: std::collections::VecDeque<(u64, Queued, u32)>,
    /// Its flush is issued (all its writes completed).
    flushing: bool,
    flushed: bool,
    /// Its writers wait for its writes only, not for a flush (a full
    /// copy's batches, see [`Log::wait_written`]): it completes without one.
    unflushed: bool,
    failed: Option<String>,
    /// Writers owed an acknowledgement once this commit is durable.
    waiters: Vec<W>,
    /// Undo entries this commit makes durable.
    undo_upto: usize,
    /// Records of sequence numbers below this are durable once it is.
    seq_upto: u64,
    /// Emptied segments whose headers this commit erases: free once it is
    /// durable.
    erases: Vec<u32>,
    /// Flush marks this commit writes (FLUSHDB), and the segments of the
    /// flushed records, erased once this commit is durable.
    marks: Vec<(u32, FlushMark)>,
    flushed_segments: Vec<u32>,
    /// Flush marks of the shards whose flushing segments this commit opens
    /// ([`SegmentHeader::flush`]): written by the next commit, once the
    /// records that follow the flush are durable with it.
    later_marks: Vec<(u32, FlushMark)>,
    /// Large values whose pieces this commit writes: their heads are
    /// appended once it is durable.
    jobs: Vec<LargeJob<W>>,
}

/// Bytes of large values' pieces at the device at once, per poller: a
/// piece is copied into a buffer only when it goes, so that a large value
/// needs this much I/O memory, not its own size again (and the engine's
/// pool of large buffers serves them all).
const PIECE_BYTES_IN_FLIGHT: usize = 16 << 20;

/// Bytes of old segment buffers a poller keeps for new segments (at least
/// two buffers): a commit may close several segments at once, and a new
/// buffer costs fresh pages (the kernel zeroes them) where a kept one costs
/// nothing (a segment's buffer is not zeroed when it opens).
const SPARE_BYTES: usize = 16 << 20;

/// Piece writes at the device at once, with buffers of `full_piece` bytes.
fn pieces_in_flight(full_piece: usize) -> usize {
    (PIECE_BYTES_IN_FLIGHT / full_piece).max(2)
}

/// A write a commit queues.
pub(super) enum Queued {
    /// Its bytes, in a buffer.
    Buf(IoBuf),
    /// A piece of a large value, copied into a buffer when it goes to the
    /// device (see [`PIECE_BYTES_IN_FLIGHT`]).
    Piece(Box<PieceFill>),
}

/// A piece of a large value waiting for its write.
pub(super) struct PieceFill {
    /// The value (shared with the request that brought it), and where in
    /// it this piece's bytes are.
    pub(super) value: bytes::Bytes,
    pub(super) from: usize,
    pub(super) len: usize,
    /// The piece's first block: its header.
    pub(super) header: Box<[u8]>,
}

impl PieceFill {
    /// The piece's bytes in a buffer of the engine's: header, data, zeros
    /// to the end of its last block. The buffer is taken as for a whole
    /// piece (`full` bytes), so that the engine's pool of large buffers
    /// serves every piece of a value, its last one included.
    fn buffer(&self, eng: &mut impl Engine, full: usize) -> std::io::Result<IoBuf> {
        let block = self.header.len();
        let len = block + self.len.next_multiple_of(block);
        let mut buf = eng.alloc(full.max(len))?;
        buf.set_len(len);
        buf[..block].copy_from_slice(&self.header);
        let data = &self.value[self.from..self.from + self.len];
        buf[block..block + self.len].copy_from_slice(data);
        buf[block + self.len..].fill(0);
        Ok(buf)
    }
}

pub(super) struct Log<W> {
    sync: bool,
    interval: Duration,
    segs: Vec<OpenSeg>,
    undo: Vec<Undo>,
    waiters: Vec<W>,
    /// Of `waiters`, those that wait for a flush (all but
    /// [`Log::wait_written`]'s).
    flush_waiters: usize,
    /// Commits in flight, oldest first: at most two, the older one flushing
    /// while the newer one writes.
    commits: std::collections::VecDeque<Commit<W>>,
    commits_started: u64,
    last_commit: Instant,
    /// Emptied segments, to erase once commit `.1` has completed.
    pending_free: Vec<(u32, u64)>,
    /// Emptied segments whose records are superseded durably: the next
    /// commit erases their headers.
    to_erase: Vec<u32>,
    /// Segments with an erasure at the device (once per write): one left
    /// by a failed commit may still land, so the segment is not reused
    /// before it has.
    erasing: Vec<u32>,
    /// Erased segments that wait for such a stray erasure to complete
    /// before they are free.
    erased: Vec<u32>,
    pub(super) next_seq: u64,
    /// Old segment buffers, reused for new segments (up to
    /// [`SPARE_BYTES`]).
    spare: Vec<IoBuf>,
    /// Flush marks for the next commit to write, and the segments of the
    /// records they flush (see `keyspace/flush.rs`).
    pub(super) marks: Vec<(u32, FlushMark)>,
    pub(super) flushed_segments: Vec<u32>,
    /// Flush marks to write after the next commit (see `Commit`).
    pub(super) later_marks: Vec<(u32, FlushMark)>,
    /// SAVE: the next commit starts at once, with or without writes.
    pub(super) force: bool,
    /// Every record of a sequence number below this is durable, unless a
    /// range of `lost` holds it.
    pub(super) durable_seq: u64,
    /// Sequence numbers of records rolled back, not yet taken
    /// ([`Keyspace::take_lost`]).
    pub(super) lost: Vec<std::ops::Range<u64>>,
    /// Pieces of large values for the next commit to write, and the jobs
    /// they belong to (see `keyspace/large.rs`).
    pub(super) piece_writes: Vec<(u64, Queued, u32)>,
    pub(super) jobs: Vec<LargeJob<W>>,
    /// Piece segments with a write at the device (once per write), and
    /// those of failed jobs that wait for such a write before they are
    /// free.
    pub(super) piece_writing: Vec<u32>,
    pub(super) piece_dropped: Vec<u32>,
    /// Commits failed so far: a fed value whose pieces were queued before
    /// a failure lost them (see `keyspace/large.rs`, `LargeFeed`).
    pub(super) failures: u64,
    /// Free segments a transaction's commit appends into before it takes
    /// any other (see [`super::Keyspace::commit_into`]): empty but
    /// while a part of a transaction across pollers commits.
    pub(super) room: Vec<(u32, bool)>,
}

/// Engine slots kept for commit writes and flushes.
/// Two commits may be in flight, each writing every segment with new
/// bytes, plus their flushes and a compaction read. An engine with
/// fewer slots (`--max-io-depth`) still works: commit writes wait in
/// their commit for slots to free up.
pub(super) fn reserved_slots(shards: u32) -> usize {
    4 * shards as usize + 16
}

impl<W> Log<W> {
    pub(super) fn new(cfg: &Config, next_seq: u64, now: Instant) -> Self {
        Log {
            sync: cfg.sync,
            interval: cfg.commit_interval,
            segs: Vec::new(),
            undo: Vec::new(),
            waiters: Vec::new(),
            flush_waiters: 0,
            commits: std::collections::VecDeque::new(),
            commits_started: 0,
            last_commit: now,
            pending_free: Vec::new(),
            to_erase: Vec::new(),
            erasing: Vec::new(),
            erased: Vec::new(),
            next_seq,
            spare: Vec::new(),
            marks: Vec::new(),
            flushed_segments: Vec::new(),
            later_marks: Vec::new(),
            force: false,
            durable_seq: next_seq,
            lost: Vec::new(),
            piece_writes: Vec::new(),
            jobs: Vec::new(),
            piece_writing: Vec::new(),
            piece_dropped: Vec::new(),
            failures: 0,
            room: Vec::new(),
        }
    }

    /// Keeps a closed segment's buffer for a new segment, up to
    /// [`SPARE_BYTES`] of them.
    pub(super) fn spare_buffer(&mut self, buf: IoBuf) {
        let kept = self.spare.len() * buf.len();
        if self.spare.len() < 2 || kept + buf.len() <= SPARE_BYTES {
            self.spare.push(buf);
        }
    }

    /// See [`Keyspace::quiet_for_flush`]: with the undo log empty, the
    /// commits under way hold no write of a client's.
    pub(super) fn quiet_for_flush(&self) -> bool {
        self.undo.is_empty()
            && self.waiters.is_empty()
            && self.jobs.is_empty()
            && (self.commits.iter()).all(|c| c.waiters.is_empty() && c.jobs.is_empty())
            && self
                .segs
                .iter()
                .all(|s| s.in_flight == 0 && s.written >= s.len)
    }

    /// Nothing appended is waiting to be made durable.
    pub(super) fn idle(&self) -> bool {
        self.commits.is_empty()
            && self.undo.is_empty()
            && self.waiters.is_empty()
            && self.jobs.is_empty()
    }

    /// Idle, and every emptied segment erased and free: what a clean
    /// shutdown waits for, so that no free segment keeps a valid header.
    pub(super) fn settled(&self) -> bool {
        self.idle()
            && self.pending_free.is_empty()
            && self.to_erase.is_empty()
            && self.erasing.is_empty()
            && self.erased.is_empty()
            && self.marks.is_empty()
            && self.later_marks.is_empty()
            && self.flushed_segments.is_empty()
            && self.piece_writing.is_empty()
            && self.piece_dropped.is_empty()
    }

    /// How long a parked poller may sleep before a commit is due.
    pub(super) fn park_timeout(&self, now: Instant) -> Option<Duration> {
        (self.commits.is_empty() && !self.undo.is_empty()).then(|| {
            self.interval
                .saturating_sub(now.saturating_duration_since(self.last_commit))
                .max(Duration::from_micros(100))
        })
    }

    /// The bytes of a record still held in a segment buffer.
    pub(super) fn buffered(&self, e: Entry) -> Option<&[u8]> {
        let s = self
            .segs
            .iter()
            .find(|s| e.offset >= s.base && e.offset < s.base + s.buf.len() as u64)?;
        let at = (e.offset - s.base) as usize;
        Some(&s.buf[at..at + e.len as usize])
    }

    /// Pieces of large values queued for a commit or at the device.
    pub(super) fn pieces_pending(&self) -> usize {
        let queued = (self.commits.iter())
            .flat_map(|c| c.queued.iter())
            .filter(|(_, q, _)| matches!(q, Queued::Piece(_)))
            .count();
        self.piece_writes.len() + self.piece_writing.len() + queued
    }

    /// Segment `seg` is erased, then free, once commit `after` is done.
    pub(super) fn free_after_commit(&mut self, seg: u32, after: u64) {
        free_after(&mut self.pending_free, seg, after);
    }

    /// The number of the next commit to start.
    pub(super) fn next_commit(&self) -> u64 {
        self.commits_started + 1
    }

    /// A writer waits for the next commit.
    pub(super) fn wait(&mut self, w: W) {
        self.waiters.push(w);
        self.flush_waiters += 1;
    }

    /// A writer waits for the next commit's writes, not its flush: a full
    /// copy's batch, which a SAVE makes durable once the whole copy is
    /// written (a copy cut short is never used: the replica copies again).
    /// A commit whose writers all wait so goes without a flush.
    pub(super) fn wait_written(&mut self, w: W) {
        self.waiters.push(w);
    }
}

impl<E: Engine, W> Keyspace<E, W> {
    /// Writes a client's record: a value (`tombstone` false) or a
    /// deletion. The index points at it at once; it is durable once the
    /// commit carrying it completes (see [`Keyspace::acknowledge`]).
    pub fn write(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        value: &[u8],
        expire_ms: u64,
        tombstone: bool,
    ) -> Result<(), WriteError> {
        self.write_marked(pid, hash, key, value, expire_ms, tombstone, Enc::Value)
    }

    /// [`Keyspace::write`] of a value whose encoding its history decides
    /// (a tombstone's mark is nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn write_marked(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        value: &[u8],
        expire_ms: u64,
        tombstone: bool,
        enc: Enc,
    ) -> Result<(), WriteError> {
        let seq = self.take_seq();
        let flags = if tombstone {
            FLAG_TOMBSTONE
        } else {
            enc.flags()
        };
        let old = self.append_seq(pid, hash, key, value, expire_ms, flags, seq)?;
        let len = record_len(key.len(), value.len());
        self.counters.user_bytes.fetch_add(len, Relaxed);
        if !tombstone {
            let new = old.is_none_or(|o| o.tombstone);
            self.touch_written(pid, hash, new);
        }
        Ok(())
    }

    /// The next record sequence number.
    pub(super) fn take_seq(&mut self) -> u64 {
        self.log.next_seq += 1;
        self.log.next_seq - 1
    }

    /// Appends with a given sequence number (compaction keeps a tombstone's
    /// own, so that it can tell when nothing older remains); returns the
    /// entry it replaced.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append_seq(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        value: &[u8],
        expire_ms: u64,
        flags: u8,
        seq: u64,
    ) -> Result<Option<Entry>, WriteError> {
        let sb = &self.sb;
        let len = record_len(key.len(), value.len());
        if len as usize > sb.segment_size as usize - SEGMENT_HEADER - self.block as usize {
            return Err(WriteError::TooLarge);
        }
        let shard = crate::store::shard_of(pid, sb.shards);
        let privileged = self.compactor.moving() || flags & FLAG_TOMBSTONE != 0;
        let (i, at) = self.segment_for(shard, len, privileged)?;
        let s = &mut self.log.segs[i];
        // The buffer is not zeroed when a segment opens (it may be an old
        // segment's): the padding this record skips to a block boundary
        // is, as a scan reads it (see `format.rs`).
        s.buf[s.len..at].fill(0);
        self.space.min_seq[s.no as usize].fetch_min(seq, Relaxed);
        let meta = RecordMeta {
            gen: s.gen as u32,
            seq,
            expire_ms,
            flags,
        };
        encode_record(&self.sb.uuid, &meta, key, value, &mut s.buf[at..]);
        s.len = at + len as usize;
        let base = s.base;
        let new = Entry {
            offset: base + at as u64,
            len: len as u32,
            tombstone: flags & FLAG_TOMBSTONE != 0,
            expire_ms,
        };
        let fresh = self.new_key == Some((pid, hash.tag));
        if fresh {
            // Its entry is now the first of its tag's: a second write
            // replaces it.
            self.new_key = None;
        }
        let part = self.shard_mut(pid).part_mut(pid);
        let old = if fresh {
            part.insert_new(hash, new)?
        } else {
            part.insert(hash, new)?
        };
        self.owners.note(new.offset, key);
        if let Some(names) = self.names.as_mut().filter(|n| n.len() < super::NAMES_MAX) {
            names.insert((pid, new.offset), xxhash_rust::xxh3::xxh3_64(key));
        }
        if flags & (FLAG_LARGE | FLAG_TOMBSTONE) == FLAG_LARGE {
            // Held before the old head lets go: a head sharing its pieces
            // (a move, an EXPIRE) keeps them live throughout.
            let head = LargeHead::decode(value).expect("a large value's head");
            self.hold_head(new.offset, Arc::new(head));
        }
        let kept = old.filter(|_| self.keep_replaced == Some((pid, hash.tag)));
        let old_head = match kept {
            Some(o) => {
                // Replaced unread: its bytes stay live until its record
                // says whose it was (`replaced_verified`).
                self.keep_replaced = None;
                self.unverified.insert(o.offset, (pid, *hash, o));
                let seg = self.sb.segment_of(new.offset) as usize;
                self.space.live[seg].fetch_add(new.len, Relaxed);
                None
            }
            None => self.account(new, old),
        };
        self.log.undo.push(Undo {
            pid,
            hash: *hash,
            old,
            new,
            old_head,
        });
        Ok(old)
    }

    /// The next write of the key of `hash` in partition `pid` replaces the
    /// first entry of its tag, not known to be the key's own (its record
    /// is read afterwards): that entry's bytes stay live and its record
    /// where it is until [`Keyspace::replaced_verified`] says whose it
    /// was. Whether the write kept one, [`Keyspace::kept_replaced`] says.
    pub fn keep_replaced(&mut self, pid: u32, hash: &KeyHash) {
        self.keep_replaced = Some((pid, hash.tag));
    }

    /// Whether the write since [`Keyspace::keep_replaced`] replaced the
    /// entry at `offset` unread; the switch is off again.
    pub fn kept_replaced(&mut self, offset: u64) -> bool {
        self.keep_replaced = None;
        self.unverified.contains_key(&offset)
    }

    /// The record of the entry replaced unread at `offset` was read:
    /// `own`, it held the key written over it, and its bytes go as any
    /// replaced entry's; else it is another key's, whose entry goes back
    /// beside the new one (a lookup of the other key meets the new one's
    /// record first and passes it by). Nothing to do when a flush or a
    /// failed commit's undo came first.
    pub fn replaced_verified(&mut self, offset: u64, own: bool) -> Result<(), IndexError> {
        let Some((pid, hash, old)) = self.unverified.remove(&offset) else {
            return Ok(());
        };
        let part = self.shard_mut(pid).part_mut(pid);
        if part.get_at(hash.tag, offset).is_some() {
            return Ok(());
        }
        // The write's undo, while its commit is not durable, acts on what
        // the entry was found to be.
        let undo = (self.log.undo.iter())
            .rposition(|u| u.pid == pid && u.old.is_some_and(|o| o.offset == offset));
        if own {
            let head = self.drop_live(old);
            if let Some(i) = undo {
                self.log.undo[i].old_head = head;
            }
            return Ok(());
        }
        if let Some(i) = undo {
            self.log.undo[i].old = None;
        }
        let part = self.shard_mut(pid).part_mut(pid);
        part.insert_new(&hash, old)?;
        self.update_key_count();
        Ok(())
    }

    /// Moves live bytes from the `old` entry's segment to `new`'s; returns
    /// the old entry's large value head, if it was one.
    fn account(&mut self, new: Entry, old: Option<Entry>) -> Option<Arc<LargeHead>> {
        let space = &self.space;
        space.live[self.sb.segment_of(new.offset) as usize].fetch_add(new.len, Relaxed);
        old.and_then(|o| self.drop_live(o))
    }

    /// The index no longer references `old`'s bytes (nor, for the head of
    /// a large value, its pieces, whose head it returns).
    pub(super) fn drop_live(&mut self, old: Entry) -> Option<Arc<LargeHead>> {
        let seg = self.sb.segment_of(old.offset);
        if old.is_marker() {
            self.space.gone[seg as usize].fetch_sub(old.len, Relaxed);
        }
        let before = self.space.live[seg as usize].fetch_sub(old.len, Relaxed);
        if before == old.len && !self.is_open(seg) {
            self.free_emptied(seg);
        }
        self.release_head(old.offset)
    }

    /// Segment `seg` holds nothing the index references: reusable once
    /// what superseded its records, if still in memory, is durable.
    pub(super) fn free_emptied(&mut self, seg: u32) {
        let pending = !self.log.undo.is_empty() || !self.log.commits.is_empty();
        let after = self.log.commits_started + pending as u64;
        free_after(&mut self.log.pending_free, seg, after);
    }

    /// Whether emptied segments wait to be freed: once commits complete,
    /// and key iteration has read those it pins (`release_segments`).
    /// Every step counts, up to the last: a segment whose erasure was
    /// written waits in its commit for the flush, and a write refused
    /// meanwhile must wait for it too, not fail for want of room.
    pub(super) fn frees_pending(&self) -> bool {
        let log = &self.log;
        !log.pending_free.is_empty()
            || !log.to_erase.is_empty()
            || !log.erasing.is_empty()
            || !log.erased.is_empty()
            || !log.flushed_segments.is_empty()
            || !log.piece_dropped.is_empty()
            || (log.commits.iter()).any(|c| !c.erases.is_empty() || !c.flushed_segments.is_empty())
    }

    /// Whether segment `seg` is open or waiting for its last write here.
    pub(super) fn is_open(&self, seg: u32) -> bool {
        self.log.segs.iter().any(|s| s.no == seg)
    }

    /// Whether segment `seg` waits to be freed.
    pub(super) fn is_pending_free(&self, seg: u32) -> bool {
        self.log.pending_free.iter().any(|p| p.0 == seg)
    }

    /// The open segment of `shard` with room for `len` bytes, opening a new
    /// one when needed; returns its position in `segs` and the offset.
    /// `privileged` appends (compaction, tombstones: they make room) may use
    /// the reserve.
    fn segment_for(
        &mut self,
        shard: u32,
        len: u64,
        privileged: bool,
    ) -> Result<(usize, usize), WriteError> {
        let block = self.block;
        let seg_size = self.sb.segment_size as usize;
        let open = self
            .log
            .segs
            .iter()
            .position(|s| s.shard == shard && !s.closed);
        if let Some(i) = open {
            let s = &self.log.segs[i];
            let at = place_record(s.len as u64, len, block) as usize;
            if at + len as usize <= seg_size {
                return Ok((i, at));
            }
        }
        let space = &self.space;
        // Clients may not take the last free segments: compaction needs
        // them to make room. A transaction's commit takes those it holds
        // first (checked against the reserve when taken).
        let no = match self.log.room.pop() {
            Some((no, _)) => no,
            None => {
                let reserve = if privileged { 0 } else { self.reserve() };
                if space.free_segments() <= reserve {
                    // The open segment stays open: a smaller record (a
                    // tombstone, which frees space) may still fit in what
                    // is left of it.
                    return Err(WriteError::Full);
                }
                let Some(no) = space.take_free() else {
                    return Err(WriteError::Full);
                };
                no
            }
        };
        // Only now, with its successor taken, is the open segment closed. A
        // write refused above leaves it open: in a full store a tombstone
        // (some 50 bytes) still fits where a value did not, and DEL must
        // not need a free segment for it, of which the reserve may have
        // fewer than the shards (and those compaction frees come back only
        // after two more commits).
        if let Some(i) = open {
            self.log.segs[i].closed = true;
        }
        Ok((self.open_segment(shard, no, None), SEGMENT_HEADER))
    }

    /// Takes `shard`'s open segment, all of it on the device, out of the
    /// log (its buffer kept for a new one); returns its number.
    pub(super) fn take_open_segment(&mut self, shard: u32) -> Option<u32> {
        let i = (self.log.segs.iter()).position(|s| s.shard == shard && !s.closed)?;
        let s = self.log.segs.swap_remove(i);
        debug_assert!(s.in_flight == 0 && s.written >= s.len);
        self.log.spare_buffer(s.buf);
        Some(s.no)
    }

    /// Opens segment `no` (taken from the free ones) for `shard`'s appends,
    /// its header in its buffer (`flush`: opened by a FLUSHDB of those
    /// shards, see [`SegmentHeader::flush`]); returns its position in
    /// `segs`.
    pub(super) fn open_segment(
        &mut self,
        shard: u32,
        no: u32,
        flush: Option<crate::format::FlushOf>,
    ) -> usize {
        let space = &self.space;
        let seg_size = self.sb.segment_size as usize;
        space.shard[no as usize].store(shard, Relaxed);
        space.min_seq[no as usize].store(u64::MAX, Relaxed);
        let gen = space.next_gen();
        // Not zeroed: a spare buffer holds an old segment's bytes past the
        // header, which nothing reads. Only the bytes a commit writes count,
        // and `append_seq` zeroes the padding before a record while
        // `commit_buffers` zeroes the rest of the last block.
        let mut buf = self.log.spare.pop().unwrap_or_else(|| IoBuf::new(seg_size));
        buf.set_len(seg_size);
        let header = SegmentHeader {
            gen,
            first_seq: self.log.next_seq,
            shard,
            flush,
        };
        header.encode(&self.sb.uuid, &mut buf[..SEGMENT_HEADER]);
        self.log.segs.push(OpenSeg {
            shard,
            no,
            base: self.sb.segment_offset(no),
            gen,
            buf,
            len: SEGMENT_HEADER,
            written: 0,
            in_flight: 0,
            closed: false,
        });
        self.log.segs.len() - 1
    }

    /// Starts a commit when one is due; returns whether it did anything.
    pub(super) fn log_turn(&mut self) -> bool {
        // Slots freed by reads may take commit writes that wait for one.
        self.issue_commit_io();
        if self.log.commits.is_empty()
            && self.log.undo.is_empty()
            && (!self.log.pending_free.is_empty() || self.log.segs.iter().any(|s| s.closed))
        {
            // Everything appended is durable: whatever waited for that
            // may be erased, and closed segments whose last writes (of a
            // failed commit) have completed since are released.
            self.release_segments(u64::MAX);
        }
        // A new commit may start while the previous one flushes: its writes
        // overlap that flush. Everything appended since the last commit
        // started is what it carries.
        let busy = match self.log.commits.back() {
            None => false,
            Some(c) => !c.flushing || self.log.commits.len() >= 2,
        };
        let fresh = self.log.commits.back().map_or(0, |c| c.undo_upto);
        // Erasures ride on the next commit, or go in one of their own after
        // the commit interval (so a failing device is retried at that pace).
        let erase = !self.log.to_erase.is_empty()
            && (self.since_commit() >= self.log.interval || self.stopping);
        let marks = !self.log.marks.is_empty() || !self.log.later_marks.is_empty();
        let force = self.log.force || !self.log.piece_writes.is_empty();
        if busy || (self.log.undo.len() == fresh && !erase && !marks && !force) {
            return false;
        }
        let due = self.log.sync
            || erase
            || marks
            || force
            || self.since_commit() >= self.log.interval
            || self.log.segs.iter().any(|s| s.closed)
            || self.stopping;
        if due {
            self.start_commit();
        }
        due
    }

    fn since_commit(&self) -> Duration {
        self.now.saturating_duration_since(self.log.last_commit)
    }

    fn start_commit(&mut self) {
        let force = std::mem::take(&mut self.log.force);
        self.log.commits_started += 1;
        let n = self.log.commits_started;
        let queued = match self.commit_buffers() {
            Ok(mut queued) => {
                queued.extend(self.log.piece_writes.drain(..));
                queued
            }
            Err(e) => {
                // Out of DMA memory: the commit fails as a failed write
                // does, before anything of it reached the device.
                self.counters.io_errors.fetch_add(1, Relaxed);
                return self.fail_commit(format!("no I/O buffer for the commit: {e}"));
            }
        };
        for s in &mut self.log.segs {
            if s.len > s.written {
                // The next commit rewrites the partly filled last block
                // with the same bytes for the records already in it (as
                // database logs do), relying on the device writing a block
                // atomically. It starts only once this one's writes have
                // all completed, so the two never race for that block.
                s.written = s.len;
                s.in_flight += 1;
            }
        }
        // Headers of emptied segments: what superseded their records was
        // made durable by an earlier, completed commit.
        let erases = std::mem::take(&mut self.log.to_erase);
        let writes = queued.len() as u32;
        // No flush when every writer waits for the writes alone (only a
        // full copy's batches do, on a replica that takes no other writes
        // meanwhile) and nothing else needs one: no SAVE, flush marks or
        // large values' pieces.
        let unflushed = self.log.flush_waiters == 0
            && !self.log.waiters.is_empty()
            && !force
            && self.log.marks.is_empty()
            && self.log.later_marks.is_empty()
            && self.log.jobs.is_empty();
        self.log.flush_waiters = 0;
        self.log.commits.push_back(Commit {
            n,
            writes_left: writes,
            queued,
            flushing: false,
            flushed: false,
            unflushed,
            failed: None,
            waiters: std::mem::take(&mut self.log.waiters),
            undo_upto: self.log.undo.len(),
            seq_upto: self.log.next_seq,
            erases,
            marks: std::mem::take(&mut self.log.marks),
            flushed_segments: std::mem::take(&mut self.log.flushed_segments),
            later_marks: std::mem::take(&mut self.log.later_marks),
            jobs: std::mem::take(&mut self.log.jobs),
        });
        self.log.last_commit = self.now;
        self.issue_commit_io();
    }

    /// The writes of the next commit, in buffers: the blocks appended to
    /// each open segment since the last commit, then the erasure (a zeroed
    /// first block) of each segment on `to_erase`. Nothing is marked
    /// written here: a buffer the engine cannot give fails the commit.
    fn commit_buffers(
        &mut self,
    ) -> std::io::Result<std::collections::VecDeque<(u64, Queued, u32)>> {
        let block = self.block;
        let mut queued = std::collections::VecDeque::new();
        for s in &mut self.log.segs {
            if s.len <= s.written {
                continue;
            }
            let start = align_down(s.written as u64, block) as usize;
            let end = align_up(s.len as u64, block) as usize;
            // The last block's padding: zeros, not what the buffer held.
            s.buf[s.len..end].fill(0);
            let wb = self.eng.alloc_copy(&s.buf[start..end])?;
            queued.push_back((s.base + start as u64, Queued::Buf(wb), s.no));
        }
        let first_block = align_up(SEGMENT_HEADER as u64, block) as usize;
        for &no in &self.log.to_erase {
            let mut wb = self.eng.alloc(first_block)?;
            wb.fill(0);
            queued.push_back((self.sb.segment_offset(no), Queued::Buf(wb), no));
        }
        for &(shard, mark) in &self.log.marks {
            let at = FlushMark::offset(&self.sb, shard, mark.slot()).expect("checked at the flush");
            let mut wb = self.eng.alloc(block as usize)?;
            mark.encode(&self.sb.uuid, shard, &mut wb);
            queued.push_back((at, Queued::Buf(wb), MARK_WRITE));
        }
        Ok(queued)
    }

    /// Hands the engine the commits' queued writes, and the flush of each
    /// commit whose writes have all completed, as far as it has free slots;
    /// the rest goes out as slots free up. A commit is acknowledged only
    /// once all its writes and then its flush have completed.
    pub(super) fn issue_commit_io(&mut self) {
        let full_piece = self.piece_buffer_len();
        let most_pieces = pieces_in_flight(full_piece);
        for k in 0..self.log.commits.len() {
            let log = &mut self.log;
            let c = &mut log.commits[k];
            let n = c.n;
            if c.failed.is_some() {
                return;
            }
            while let Some((off, q, no)) = c.queued.pop_front() {
                let wb = match q {
                    Queued::Buf(wb) => wb,
                    Queued::Piece(p) if log.piece_writing.len() >= most_pieces => {
                        c.queued.push_front((off, Queued::Piece(p), no));
                        return; // issued when a piece write completes
                    }
                    Queued::Piece(p) => match p.buffer(&mut self.eng, full_piece) {
                        Ok(wb) => wb,
                        // Memory comes back as writes in flight complete.
                        Err(_) if !log.piece_writing.is_empty() => {
                            c.queued.push_front((off, Queued::Piece(p), no));
                            return;
                        }
                        Err(e) => {
                            c.queued.push_front((off, Queued::Piece(p), no));
                            let msg = format!("no I/O buffer for a piece: {e}");
                            if c.writes_left as usize == c.queued.len() {
                                self.counters.io_errors.fetch_add(1, Relaxed);
                                self.fail_commit(msg);
                            } else {
                                c.failed = Some(msg);
                            }
                            return;
                        }
                    },
                };
                let erase = c.erases.contains(&no);
                let tag = Tag::Write {
                    commit: n as u8,
                    segment: no,
                    erase,
                };
                if let Err(wb) = self.eng.write(off, wb, tag.encode()) {
                    c.queued.push_front((off, Queued::Buf(wb), no));
                    return; // no free slot: retried when one frees up
                }
                if erase {
                    log.erasing.push(no);
                } else if self.space.is_piece(no as usize) {
                    log.piece_writing.push(no);
                }
            }
            if c.writes_left == 0 && !c.flushing {
                if c.unflushed {
                    c.flushing = true;
                    // Completes as its flush would (later commits with
                    // it, in order); nothing more of this commit to issue.
                    self.flushed(n);
                    return self.issue_commit_io();
                }
                if !self.eng.flush(Tag::Flush { commit: n as u8 }.encode()) {
                    return;
                }
                c.flushing = true;
            }
        }
    }

    fn commit_mut(&mut self, n: u64) -> Option<&mut Commit<W>> {
        self.log.commits.iter_mut().find(|c| c.n & 0xFF == n & 0xFF)
    }

    /// A write or flush of the log completed.
    pub(super) fn log_completion(&mut self, c: Completion) {
        let st = Arc::clone(&self.counters);
        let (n, no, erase) = match Tag::decode(c.tag) {
            Some(Tag::Flush { commit }) => {
                st.flushes.fetch_add(1, Relaxed);
                return match c.result {
                    Ok(_) => self.flushed(commit as u64),
                    Err(e) => {
                        st.io_errors.fetch_add(1, Relaxed);
                        self.fail_commit(format!("flush failed: {e}"))
                    }
                };
            }
            Some(Tag::Write {
                commit,
                segment,
                erase,
            }) => (commit as u64, segment, erase),
            other => unreachable!("not a log completion: {other:?}"),
        };
        let buf = c.buf.expect("a write returns its buffer");
        let failed = match &c.result {
            Ok(n) if *n == buf.len() => None,
            Ok(n) => Some(format!("short write of {n} of {} bytes", buf.len())),
            Err(e) => Some(format!("write failed: {e}")),
        };
        if failed.is_none() {
            // A failed or short write is an I/O error, not bytes written.
            st.bytes_written.fetch_add(buf.len() as u64, Relaxed);
            st.device_writes.fetch_add(1, Relaxed);
        }
        drop(buf); // back to the engine's pool
        if let Some(s) = self.log.segs.iter_mut().find(|s| s.no == no) {
            s.in_flight -= 1;
        }
        if failed.is_some() {
            self.counters.io_errors.fetch_add(1, Relaxed);
        }
        if erase {
            self.erasure_landed(no);
        } else if self.log.piece_writing.contains(&no) {
            self.piece_write_landed(no);
        }
        let log = &mut self.log;
        let Some(commit) = log.commits.iter_mut().find(|c| c.n & 0xFF == n & 0xFF) else {
            return; // of a commit that failed meanwhile
        };
        if let (Some(msg), Some(k)) = (&failed, commit.erases.iter().position(|&e| e == no)) {
            // A failed erasure fails no client's write: it is retried.
            tracing::warn!(
                segment = no,
                "erasing an emptied segment failed: {msg}; will retry"
            );
            log.to_erase.push(commit.erases.swap_remove(k));
        } else if commit.failed.is_none() {
            commit.failed = failed;
        }
        commit.writes_left -= 1;
        // A failed commit issues no more writes; it fails once none of its
        // writes is at the device.
        if commit.writes_left as usize == commit.queued.len() {
            if let Some(msg) = commit.failed.take() {
                return self.fail_commit(msg);
            }
        }
        // A slot came free: queued writes, or this commit's flush, take it.
        self.issue_commit_io();
    }

    /// The flush of commit `n` (low 8 bits) completed: commits finish in
    /// order, so an earlier one still flushing holds the later back.
    fn flushed(&mut self, n: u64) {
        let Some(c) = self.commit_mut(n) else { return };
        c.flushed = true;
        while self.log.commits.front().is_some_and(|c| c.flushed) {
            let c = self.log.commits.pop_front().expect("front");
            self.finish_commit(c);
        }
    }

    fn finish_commit(&mut self, c: Commit<W>) {
        self.counters.commits.fetch_add(1, Relaxed);
        self.log.durable_seq = self.log.durable_seq.max(c.seq_upto);
        self.log.undo.drain(..c.undo_upto);
        for later in &mut self.log.commits {
            later.undo_upto -= c.undo_upto;
        }
        self.acks.extend(c.waiters.into_iter().map(|w| (w, Ok(()))));
        // Pieces durable: their heads go in the log.
        for job in c.jobs {
            self.append_head(job);
        }
        // The flush is durable (its marks, or its flushing segments): the
        // flushed records' segments may lose their headers now, and the
        // flushing segments' marks go in the next commit.
        self.log.marks.extend(c.later_marks);
        for no in c.flushed_segments {
            match self.pinned(no) {
                // Key iteration has records to read there.
                true => free_after(&mut self.log.pending_free, no, c.n),
                false => self.log.to_erase.push(no),
            }
        }
        for no in c.erases {
            // Nothing can point into an emptied segment again: its records
            // were superseded durably, so no rollback restores them.
            debug_assert_eq!(self.space.live[no as usize].load(Relaxed), 0);
            if self.log.erasing.contains(&no) {
                self.log.erased.push(no); // a failed commit's erasure may still land
            } else {
                self.free_segment(no);
            }
        }
        self.release_segments(c.n);
    }

    /// An erasure of segment `no` completed (or failed): the last one of a
    /// segment already erased frees it.
    fn erasure_landed(&mut self, no: u32) {
        if last_landed(&mut self.log.erasing, &mut self.log.erased, no) {
            self.free_segment(no);
        }
    }

    pub(super) fn free_segment(&self, no: u32) {
        let space = &self.space;
        space.shard[no as usize].store(crate::store::NO_SHARD, Relaxed);
        space.piece[no as usize].store(false, Relaxed);
        space.piece_refs[no as usize].store(0, Relaxed);
        space.free.push(no);
    }

    /// Queues for erasure what commit `done` made reusable (all of it for
    /// `u64::MAX`: everything appended is durable), and drops the buffers
    /// of closed segments that are entirely on the device.
    fn release_segments(&mut self, done: u64) {
        let space = &self.space;
        let mut i = 0;
        while i < self.log.segs.len() {
            let s = &self.log.segs[i];
            if s.closed && s.in_flight == 0 && s.written >= s.len {
                let s = self.log.segs.swap_remove(i);
                if space.live[s.no as usize].load(Relaxed) == 0 {
                    // Free once the records that emptied it, possibly still
                    // in memory, are durable.
                    let after = if self.log.undo.is_empty() {
                        done
                    } else {
                        self.log.commits_started + 1
                    };
                    free_after(&mut self.log.pending_free, s.no, after);
                }
                self.log.spare_buffer(s.buf);
            } else {
                i += 1;
            }
        }
        let to_erase = &mut self.log.to_erase;
        let pins = &self.pins;
        self.log.pending_free.retain(|&(seg, after)| {
            if after <= done && space.live[seg as usize].load(Relaxed) == 0 {
                if pins[seg as usize] > 0 {
                    // Key iteration has records to read there: erased
                    // (its first block zeroed) and freed once read.
                    return true;
                }
                to_erase.push(seg);
            }
            after > done
        });
    }

    /// Rolls back every index change not yet durable, answers the writers
    /// with an error and abandons the open segments.
    fn fail_commit(&mut self, msg: String) {
        tracing::error!(
            poller = self.id,
            "commit failed, rolling back unwritten writes: {msg}"
        );
        self.log.failures += 1;
        let mut c = std::mem::take(&mut self.log.commits);
        // Flush marks not durable go out again with the next commit, and
        // the flushed segments keep their headers until then.
        for commit in &mut c {
            self.log.marks.append(&mut commit.marks);
            self.log.marks.append(&mut commit.later_marks);
            self.log
                .flushed_segments
                .append(&mut commit.flushed_segments);
        }
        for (_, _wb, no) in c.iter_mut().flat_map(|c| c.queued.drain(..)) {
            if let Some(s) = self.log.segs.iter_mut().find(|s| s.no == no) {
                s.in_flight -= 1;
            }
        }
        let lost = self.log.durable_seq..self.log.next_seq;
        if !lost.is_empty() {
            self.log.lost.push(lost);
        }
        // Large values whose pieces may not be durable fail, and so do
        // those waiting for the next commit (their pieces are not written).
        let mut jobs: Vec<_> = c.iter_mut().flat_map(|c| c.jobs.drain(..)).collect();
        jobs.append(&mut self.log.jobs);
        self.log.piece_writes.clear();
        let failed_jobs: Vec<_> = jobs.into_iter().map(|j| self.drop_job(j)).collect();
        let undo = std::mem::take(&mut self.log.undo);
        for u in undo.into_iter().rev() {
            let part = self.shard_mut(u.pid).part_mut(u.pid);
            // Among keys sharing the tag, the entry undone is the one
            // pointing at the new record.
            part.promote(u.hash.tag, u.new.offset);
            // The new record may have expired or been evicted meanwhile.
            let marked = part
                .get(&u.hash)
                .is_some_and(|e| e.offset == u.new.offset && e.is_marker());
            let _ = match u.old {
                Some(old) => part.insert(&u.hash, old).map(|_| ()),
                None => {
                    part.remove(&u.hash);
                    Ok(())
                }
            };
            // The new head lets its pieces go, the old one takes them back.
            self.release_head(u.new.offset);
            if let (Some(o), Some(h)) = (u.old, u.old_head) {
                self.hold_head(o.offset, h);
            }
            // An entry replaced unread is back: its bytes were never let go.
            let kept = u
                .old
                .filter(|o| self.unverified.remove(&o.offset).is_some());
            let space = &self.space;
            let new_seg = self.sb.segment_of(u.new.offset) as usize;
            space.live[new_seg].fetch_sub(u.new.len, Relaxed);
            if marked {
                space.gone[new_seg].fetch_sub(u.new.len, Relaxed);
            }
            if let Some(o) = u.old.filter(|_| kept.is_none()) {
                let seg = self.sb.segment_of(o.offset) as usize;
                space.live[seg].fetch_add(o.len, Relaxed);
                if o.is_marker() {
                    space.gone[seg].fetch_add(o.len, Relaxed);
                }
            }
        }
        // Erasures that may not have reached the device are retried.
        for cm in &mut c {
            self.log.to_erase.append(&mut cm.erases);
        }
        let err = CommitFailed(msg.into());
        let waiters = c
            .into_iter()
            .flat_map(|c| c.waiters)
            .chain(std::mem::take(&mut self.log.waiters))
            .chain(failed_jobs);
        self.acks.extend(waiters.map(|w| (w, Err(err.clone()))));
        for s in &mut self.log.segs {
            s.closed = true;
            s.written = s.written.max(s.len);
        }
        self.update_key_count();
        let n = self.log.commits_started;
        self.release_segments(n);
    }
}

/// The "segment" of a flush mark's write in its tag and commit (no real
/// segment has this number).
const MARK_WRITE: u32 = u32::MAX;

/// Puts segment `seg` on the list of those freed once commit `after` is
/// done. A segment is on the list once: one emptied, refilled by a
/// rolled-back commit's undo and emptied again waits for the later commit,
/// and is not freed twice (two writers would then append to it).
fn free_after(pending: &mut Vec<(u32, u64)>, seg: u32, after: u64) {
    match pending.iter_mut().find(|p| p.0 == seg) {
        Some(p) => p.1 = p.1.max(after),
        None => pending.push((seg, after)),
    }
}

/// One write to segment `no` of those listed in `at_device` (once per
/// write) landed: whether it was the last, of a segment `waiting` held
/// for it — which it no longer holds then, and the segment may be freed.
pub(super) fn last_landed(at_device: &mut Vec<u32>, waiting: &mut Vec<u32>, no: u32) -> bool {
    if let Some(k) = at_device.iter().position(|&p| p == no) {
        at_device.swap_remove(k);
    }
    if at_device.contains(&no) {
        return false;
    }
    match waiting.iter().position(|&p| p == no) {
        Some(k) => {
            waiting.swap_remove(k);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::free_after;

    #[test]
    fn a_segment_emptied_twice_waits_once_for_the_later_commit() {
        let mut pending = Vec::new();
        free_after(&mut pending, 7, 3);
        free_after(&mut pending, 9, 4);
        // Refilled by a rolled-back commit's undo, emptied again.
        free_after(&mut pending, 7, 5);
        free_after(&mut pending, 9, 2);
        assert_eq!(pending, vec![(7, 5), (9, 4)]);
    }
}
