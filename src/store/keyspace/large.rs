//! Values larger than a segment: their bytes go in piece segments, whole
//! free segments each starting with a [`PieceHeader`]; the key's record is
//! a small head ([`FLAG_LARGE`]) holding the value's length, id and piece
//! segments, and the index points at the head as at any record.
//!
//! A write has two phases. The pieces ride on the next commit (written,
//! then flushed); once that commit is durable the head is appended like
//! any record, and the writer is acknowledged with the commit that carries
//! the head. A crash before the head is durable leaves the pieces
//! unreferenced: the rebuild frees them.
//!
//! A piece segment counts as live while some head in the index references
//! it (a COPY, an EXPIRE or a compaction move writes a head sharing the
//! pieces of the one it supersedes: the count never drops to zero in
//! between). When the last head goes (overwritten, deleted, expired,
//! evicted, flushed, or rolled back), the segment is freed as emptied
//! segments are: erased (its header zeroed) once what superseded the head
//! is durable, free once the erasure is.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{Keyspace, WriteError};
use crate::format::{piece_capacity, LargeHead, PieceHeader, FLAG_LARGE};
use crate::index::KeyHash;
use crate::io::Engine;
use crate::store::NO_SHARD;

/// A large value whose pieces are on their way to the device; its head is
/// appended once they are durable.
pub(super) struct LargeJob<W> {
    pid: u32,
    hash: KeyHash,
    key: Box<[u8]>,
    head: LargeHead,
    expire_ms: u64,
    writer: W,
}

impl<W> LargeJob<W> {
    pub(super) fn pieces(&self) -> &[u32] {
        &self.head.pieces
    }

    pub(super) fn into_writer(self) -> W {
        self.writer
    }
}

impl<E: Engine, W> Keyspace<E, W> {
    /// Bytes of value one piece segment holds.
    pub fn piece_capacity(&self) -> u64 {
        piece_capacity(self.sb.segment_size, self.block)
    }

    /// Whether a value of `value_len` bytes under a key of `key_len` is too
    /// large for one record: it goes in pieces ([`Keyspace::write_large`]).
    pub fn is_large(&self, key_len: usize, value_len: usize) -> bool {
        let room = self.sb.segment_size as u64 - crate::format::SEGMENT_HEADER as u64 - self.block;
        crate::format::record_len(key_len, value_len) > room
    }

    /// Whether the store could hold a large value of `value_len` bytes
    /// were all its segments free: a [`WriteError::Full`] refusal of
    /// [`Keyspace::write_large`] may then pass once eviction or compaction
    /// has made room.
    pub fn could_hold_large(&self, value_len: usize) -> bool {
        let count = (value_len as u64).div_ceil(self.piece_capacity()) as usize;
        // The pieces, the reserve, and a segment for the head.
        self.reserve() + count < self.space.live.len()
    }

    /// Writes a large value: its pieces go out with the next commit, its
    /// head once they are durable; `writer` comes back from
    /// [`Keyspace::take_acks`] once the head is durable too (whatever the
    /// durability mode). Refused with [`WriteError::Full`] when the free
    /// segments, less the reserve, cannot hold it: nothing is evicted for
    /// it.
    pub fn write_large(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        value: &[u8],
        expire_ms: u64,
        writer: W,
    ) -> Result<(), (W, WriteError)> {
        let cap = self.piece_capacity();
        let count = (value.len() as u64).div_ceil(cap) as usize;
        // Room for the pieces, and for the head in a new segment.
        if self.space.free_segments() < self.reserve() + count + 1 {
            return Err((writer, WriteError::Full));
        }
        let shard = crate::store::shard_of(pid, self.sb.shards);
        let value_id = self.space.next_gen();
        let block = self.block as usize;
        let mut writes = Vec::with_capacity(count);
        let mut segs = Vec::with_capacity(count);
        let mut failed = None;
        for (i, data) in value.chunks(cap as usize).enumerate() {
            let Some(no) = self.space.free.pop() else {
                failed = Some(WriteError::Full);
                break;
            };
            segs.push(no);
            let len = block + data.len().next_multiple_of(block);
            let mut buf = match self.eng.alloc(len) {
                Ok(buf) => buf,
                Err(e) => {
                    failed = Some(WriteError::NoBuffer(e.to_string()));
                    break;
                }
            };
            let header = PieceHeader {
                value_id,
                piece: i as u32,
                len: data.len() as u32,
                data_crc: PieceHeader::data_crc(&self.sb.uuid, data),
                shard,
            };
            buf[..block].fill(0);
            header.encode(&self.sb.uuid, &mut buf[..block]);
            buf[block..block + data.len()].copy_from_slice(data);
            buf[block + data.len()..].fill(0);
            writes.push((self.sb.segment_offset(no), buf, no));
        }
        if let Some(e) = failed {
            for no in segs {
                self.space.free.push(no);
            }
            return Err((writer, e));
        }
        for &no in &segs {
            let g = no as usize;
            self.space.shard[g].store(shard, Relaxed);
            self.space.piece[g].store(true, Relaxed);
            self.space.min_seq[g].store(u64::MAX, Relaxed);
        }
        self.log.piece_writes.extend(writes);
        self.log.jobs.push(LargeJob {
            pid,
            hash: *hash,
            key: key.into(),
            head: LargeHead {
                total_len: value.len() as u64,
                value_id,
                pieces: segs,
            },
            expire_ms,
            writer,
        });
        Ok(())
    }

    /// Writes the head of a large value that shares the pieces of the head
    /// it was read from (`head` is that record's value): EXPIRE, RENAME,
    /// COPY. Durable as [`Keyspace::write`]'s records are.
    pub fn write_head(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        head: &[u8],
        expire_ms: u64,
    ) -> Result<(), WriteError> {
        let seq = self.take_seq();
        let old = self.append_seq(pid, hash, key, head, expire_ms, FLAG_LARGE, seq)?;
        let len = crate::format::record_len(key.len(), head.len());
        self.counters.user_bytes.fetch_add(len, Relaxed);
        self.touch_written(pid, hash, old.is_none_or(|o| o.tombstone));
        Ok(())
    }

    /// The pieces of a job are durable: its head goes in the log, and its
    /// writer waits for the commit that carries it.
    pub(super) fn append_head(&mut self, job: LargeJob<W>) {
        let head = job.head.encode();
        let seq = self.take_seq();
        let appended = self.append_seq(
            job.pid,
            &job.hash,
            &job.key,
            &head,
            job.expire_ms,
            FLAG_LARGE,
            seq,
        );
        match appended {
            Ok(old) => {
                let len = crate::format::record_len(job.key.len(), head.len());
                let bytes = len + job.head.total_len;
                self.counters.user_bytes.fetch_add(bytes, Relaxed);
                self.touch_written(job.pid, &job.hash, old.is_none_or(|o| o.tombstone));
                self.update_key_count();
                self.log.wait(job.writer);
                // The writer waits: its commit starts at once.
                self.log.force = true;
            }
            Err(e) => {
                // No room for the head after all: the pieces go back.
                self.drop_pieces(&job.head.pieces);
                let err = super::CommitFailed(format!("{e}").into());
                self.acks.push((job.writer, Err(err)));
            }
        }
    }

    /// Piece segments that no head ever referenced (a job that failed) are
    /// free once no write of theirs is at the device.
    pub(super) fn drop_pieces(&mut self, pieces: &[u32]) {
        for &no in pieces {
            if self.log.piece_writing.contains(&no) {
                self.log.piece_dropped.push(no);
            } else {
                self.free_segment(no);
            }
        }
    }

    /// A piece write to segment `no` completed (or failed).
    pub(super) fn piece_write_landed(&mut self, no: u32) {
        let log = &mut self.log;
        if super::log::last_landed(&mut log.piece_writing, &mut log.piece_dropped, no) {
            self.free_segment(no);
        }
    }

    /// The head at device offset `offset` now references its pieces.
    pub(super) fn hold_head(&mut self, offset: u64, head: Arc<LargeHead>) {
        let space = &self.space;
        let owner = space.shard[self.sb.segment_of(offset) as usize].load(Relaxed);
        for (i, &no) in head.pieces.iter().enumerate() {
            let g = no as usize;
            if space.piece_refs[g].fetch_add(1, Relaxed) == 0 {
                space.live[g].fetch_add(space.piece_bytes(&head, i), Relaxed);
            }
            space.piece[g].store(true, Relaxed);
            if space.shard[g].load(Relaxed) == NO_SHARD {
                space.shard[g].store(owner, Relaxed);
            }
        }
        space
            .large
            .lock()
            .expect("large value map")
            .insert(offset, head);
    }

    /// The record at `offset`, if the head of a large value, references
    /// its pieces no more; a piece segment no head references is freed as
    /// an emptied segment is. Returns the head.
    pub(super) fn release_head(&mut self, offset: u64) -> Option<Arc<LargeHead>> {
        let head = self
            .space
            .large
            .lock()
            .expect("large value map")
            .remove(&offset)?;
        self.let_go(&head);
        Some(head)
    }

    /// One reference less to each piece of `head`; a piece segment no
    /// head (nor pin) references is freed as an emptied segment is.
    fn let_go(&mut self, head: &LargeHead) {
        for (i, &no) in head.pieces.iter().enumerate() {
            let g = no as usize;
            if self.space.piece_refs[g].fetch_sub(1, Relaxed) == 1 {
                let bytes = self.space.piece_bytes(head, i);
                self.space.live[g].fetch_sub(bytes, Relaxed);
                if self.space.live[g].load(Relaxed) == 0 {
                    self.free_emptied(no);
                }
            }
        }
    }

    /// Pins the pieces of the head at device offset `offset`, if it is
    /// still in the index as the value `value_id` (not superseded since
    /// it was read), for a read that outlasts the key's hold (a streamed
    /// GET): an overwrite, DEL, expiry or eviction of the key meanwhile
    /// leaves the piece segments as they are until
    /// [`Keyspace::unpin_pieces`]. A flush of the shard takes them all the
    /// same (their pins are then void: not to be unpinned).
    pub fn pin_pieces(&mut self, offset: u64, value_id: u64) -> Option<Arc<LargeHead>> {
        let head = (self.space.large.lock().expect("large value map"))
            .get(&offset)
            .filter(|h| h.value_id == value_id)
            .cloned()?;
        for &no in &head.pieces {
            // A head references them: the count is at least one.
            self.space.piece_refs[no as usize].fetch_add(1, Relaxed);
        }
        Some(head)
    }

    /// Ends a pin of [`Keyspace::pin_pieces`].
    pub fn unpin_pieces(&mut self, head: &LargeHead) {
        self.let_go(head);
    }

    /// Forgets the heads of large values of `shards` (a flush): their
    /// piece segments are then flushed with the shards' other segments.
    pub(super) fn forget_heads(&mut self, shards: &[u32]) {
        let space = &self.space;
        let mut large = space.large.lock().expect("large value map");
        large.retain(|&offset, head| {
            let owner = space.shard[self.sb.segment_of(offset) as usize].load(Relaxed);
            if !shards.contains(&owner) {
                return true;
            }
            for &no in &head.pieces {
                space.piece_refs[no as usize].store(0, Relaxed);
            }
            false
        });
    }
}
