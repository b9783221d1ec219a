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
//!
//! SETRANGE and APPEND of a large value ([`Keyspace::write_large_edit`])
//! write new piece segments for the pieces their range covers only, and
//! a new head listing those and the old head's other pieces, which it
//! shares (so sharing is counted per piece segment). The same two phases:
//! a crash before the new head is durable leaves the old value whole, and
//! the new pieces unreferenced. While the job waits, it holds the old
//! head's pieces itself, so that nothing (an expiry, an eviction) frees
//! one it is about to reference.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::log::{PieceFill, Queued};
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
    /// The piece segments this job writes (all of the head's, but for an
    /// edit).
    fresh: Vec<u32>,
    /// An edit's old head, whose pieces the job holds until its own head
    /// references those it shares.
    held: Option<Arc<LargeHead>>,
    /// The pieces only: once durable, the job holds them and its writer is
    /// acknowledged, and the head is written later
    /// ([`Keyspace::write_new_head`]).
    pieces_only: bool,
    /// The key's own index entry when the job was queued (short tags:
    /// followed through compaction), `None`: it had none. Its head
    /// replaces it, not the first entry of the tag's, maybe another key's.
    own: Option<u64>,
}

/// A large value whose pieces are written as its bytes arrive
/// ([`Keyspace::begin_feed`]): the piece segments of the pieces queued so
/// far, each taken as its piece came (so a client that stops sending
/// holds the segments of what it sent, not of the length it announced). It becomes a [`LargeJob`]
/// once they all are and its SET has come ([`Keyspace::finish_feed`]),
/// or its pieces are freed ([`Keyspace::abort_feed`]).
#[derive(Debug)]
pub struct LargeFeed {
    pid: u32,
    value_id: u64,
    total_len: u64,
    /// The value's pieces, and the segments of those queued.
    count: usize,
    segs: Vec<u32>,
    /// The log's failed commits when it began: one failing since may have
    /// lost a queued piece.
    failures: u64,
}

impl LargeFeed {
    /// Whether every piece is queued.
    pub fn complete(&self) -> bool {
        self.segs.len() == self.count
    }
}

/// Where the bytes of the pieces [`Keyspace::write_pieces`] writes come
/// from.
enum PieceSource<'a> {
    /// The whole value, in memory for as long as the pieces wait: each is
    /// copied into a buffer only when it goes to the device.
    Shared(bytes::Bytes),
    /// `fill(i, data)` gives piece `i`'s bytes at once.
    Fill(&'a mut dyn FnMut(usize, &mut [u8])),
}

impl<E: Engine, W> Keyspace<E, W> {
    /// Bytes of a buffer holding a whole piece.
    pub(super) fn piece_buffer_len(&self) -> usize {
        let block = self.block;
        (block + self.piece_capacity().next_multiple_of(block)) as usize
    }

    /// Bytes of value one piece segment holds.
    pub fn piece_capacity(&self) -> u64 {
        piece_capacity(self.sb.segment_size, self.block)
    }

    /// Whether a value of `value_len` bytes under a key of `key_len` is too
    /// large for one record: it goes in pieces ([`Keyspace::write_large`]).
    pub fn is_large(&self, key_len: usize, value_len: usize) -> bool {
        crate::format::is_large_record(self.sb.segment_size, self.block, key_len, value_len)
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
        value: bytes::Bytes,
        expire_ms: u64,
        writer: W,
    ) -> Result<(), (W, WriteError)> {
        self.queue_value(pid, hash, key, value, expire_ms, writer, false)
            .map(drop)
    }

    /// Writes the pieces of a large value, not its head: they go out with
    /// the next commit, and `writer` comes back from [`Keyspace::take_acks`]
    /// once they are durable. From then on they are held (nothing frees
    /// them) until [`Keyspace::write_new_head`] writes the returned head,
    /// which takes them, or [`Keyspace::release_pieces`] lets them go. A
    /// transaction writes its large values so: their heads go in the
    /// commit that carries its other writes. A crash before a head
    /// references them leaves them unreferenced: the rebuild frees them.
    pub fn write_pieces_only(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        value: bytes::Bytes,
        writer: W,
    ) -> Result<LargeHead, (W, WriteError)> {
        self.queue_value(pid, hash, key, value, 0, writer, true)
    }

    /// A new large value's pieces queued, and its job (which appends the
    /// head once they are durable, or with `pieces_only` holds them for
    /// [`Keyspace::write_new_head`]); returns the head.
    #[allow(clippy::too_many_arguments)]
    fn queue_value(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        value: bytes::Bytes,
        expire_ms: u64,
        writer: W,
        pieces_only: bool,
    ) -> Result<LargeHead, (W, WriteError)> {
        let cap = self.piece_capacity() as usize;
        let count = value.len().div_ceil(cap);
        let value_id = self.space.next_gen();
        let total_len = value.len() as u64;
        let source = PieceSource::Shared(value);
        let segs = match self.write_pieces(pid, value_id, total_len, 0..count, source) {
            Ok(segs) => segs,
            Err(e) => return Err((writer, e)),
        };
        let head = LargeHead {
            total_len,
            value_id,
            pieces: segs.clone(),
        };
        let own = self.track_own(pid, hash);
        self.log.jobs.push(LargeJob {
            pid,
            hash: *hash,
            key: key.into(),
            head: head.clone(),
            expire_ms,
            writer,
            fresh: segs,
            held: None,
            pieces_only,
            own,
        });
        Ok(head)
    }

    /// Begins a large value of `total_len` bytes whose bytes are still
    /// arriving: takes its piece segments now (refused with
    /// [`WriteError::Full`] as [`Keyspace::write_large`] is); each piece
    /// is queued by [`Keyspace::feed_piece`] as it arrives and goes out
    /// with the next commit. Nothing references the pieces until
    /// [`Keyspace::finish_feed`]'s head does: a crash leaves them to the
    /// rebuild, which frees them.
    pub fn begin_feed(&mut self, pid: u32, total_len: u64) -> Result<LargeFeed, WriteError> {
        let count = total_len.div_ceil(self.piece_capacity()) as usize;
        // Room, now, for the pieces and for the head in a new segment;
        // each piece's segment is taken only when its bytes have come.
        if !self.room_for_pieces(count) {
            return Err(WriteError::Full);
        }
        Ok(LargeFeed {
            pid,
            value_id: self.space.next_gen(),
            total_len,
            count,
            segs: Vec::with_capacity(count),
            failures: self.log.failures,
        })
    }

    /// Queues the next piece of `feed`, whose bytes are `data` (a whole
    /// piece, but for the last), in a segment taken now, on the next
    /// commit, which starts at once. Refused with `Full` when the store
    /// has no room left for it and the head (writes since the value began
    /// took it): the caller drops the value ([`Keyspace::abort_feed`]).
    pub fn feed_piece(
        &mut self,
        feed: &mut LargeFeed,
        data: bytes::Bytes,
    ) -> Result<(), WriteError> {
        let i = feed.segs.len();
        let cap = self.piece_capacity();
        let want = (feed.total_len - i as u64 * cap).min(cap) as usize;
        debug_assert_eq!(data.len(), want, "a fed piece is a whole piece");
        if !self.room_for_pieces(1) {
            return Err(WriteError::Full);
        }
        let no = self.space.take_free().ok_or(WriteError::Full)?;
        let g = no as usize;
        self.space.shard[g].store(crate::store::shard_of(feed.pid, self.sb.shards), Relaxed);
        self.space.piece[g].store(true, Relaxed);
        self.space.min_seq[g].store(u64::MAX, Relaxed);
        feed.segs.push(no);
        let block = self.block as usize;
        let h = PieceHeader {
            value_id: feed.value_id,
            piece: i as u32,
            len: data.len() as u32,
            data_crc: PieceHeader::data_crc(&self.sb.uuid, &data),
            shard: crate::store::shard_of(feed.pid, self.sb.shards),
        };
        let mut header = vec![0; block].into_boxed_slice();
        h.encode(&self.sb.uuid, &mut header);
        let len = data.len();
        let bytes = (block + len.next_multiple_of(block)) as u64;
        let fill = PieceFill {
            value: data,
            from: 0,
            len,
            header,
        };
        let at = self.sb.segment_offset(no);
        (self.log.piece_writes).push((at, Queued::Piece(Box::new(fill)), no));
        self.counters.piece_writes.fetch_add(1, Relaxed);
        self.counters.piece_bytes.fetch_add(bytes, Relaxed);
        Ok(())
    }

    /// Pieces of large values queued or at the device: a fed value's next
    /// piece is taken only while they are few ([`crate::server`]'s window).
    pub fn pieces_pending(&self) -> usize {
        self.log.pieces_pending()
    }

    /// The SET of `feed`, every piece of it queued: its head goes in once
    /// they are durable, and `writer` is acknowledged as
    /// [`Keyspace::write_large`]'s. When a commit failed since the value
    /// began (a piece may be lost), the pieces are freed and `writer`
    /// comes back from [`Keyspace::take_acks`] with the failure.
    ///
    /// `own` is the key's own entry when its SET came ([`Self::track_own`]
    /// then): the entry its head replaces.
    pub fn finish_feed(
        &mut self,
        feed: LargeFeed,
        hash: &KeyHash,
        key: &[u8],
        expire_ms: u64,
        writer: W,
        own: Option<u64>,
    ) {
        debug_assert!(feed.complete());
        if feed.failures != self.log.failures {
            if let Some(at) = own {
                self.unfollow(feed.pid, at);
            }
            self.abort_feed(feed);
            let err = "a commit failed while the value arrived";
            return self
                .acks
                .push((writer, Err(super::CommitFailed(err.into()))));
        }
        let head = LargeHead {
            total_len: feed.total_len,
            value_id: feed.value_id,
            pieces: feed.segs.clone(),
        };
        self.log.jobs.push(LargeJob {
            pid: feed.pid,
            hash: *hash,
            key: key.into(),
            head,
            expire_ms,
            writer,
            fresh: feed.segs,
            held: None,
            pieces_only: false,
            own,
        });
        // Its pieces may have gone out with earlier commits: one carries
        // the job.
        self.log.force = true;
    }

    /// Drops `feed`: the segments of its queued pieces are free once the
    /// commit that carries the last of them is done (erased first, as
    /// emptied segments are).
    pub fn abort_feed(&mut self, feed: LargeFeed) {
        if !feed.segs.is_empty() {
            let after = self.log.next_commit();
            for &no in &feed.segs {
                self.log.free_after_commit(no, after);
            }
            self.log.force = true;
        }
    }

    /// Writes `head`, whose pieces [`Keyspace::write_pieces_only`] wrote
    /// and are durable, as key `key`'s record, and lets go of the pieces'
    /// hold (the head references them now). Durable as
    /// [`Keyspace::write`]'s records are. Refused, the pieces stay held.
    pub fn write_new_head(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        head: &LargeHead,
        expire_ms: u64,
    ) -> Result<(), WriteError> {
        let bytes = head.encode();
        let seq = self.take_seq();
        let old = self.append_seq(pid, hash, key, &bytes, expire_ms, FLAG_LARGE, seq)?;
        self.release_pieces(head);
        let len = crate::format::record_len(key.len(), bytes.len());
        self.counters
            .user_bytes
            .fetch_add(len + head.total_len, Relaxed);
        self.touch_written(pid, hash, old.is_none_or(|o| o.tombstone));
        self.update_key_count();
        Ok(())
    }

    /// Whether the free segments, less the reserve, hold `pieces` new
    /// piece segments and a segment for a head.
    pub fn room_for_pieces(&self, pieces: usize) -> bool {
        self.space.free_segments() > self.reserve() + pieces
    }

    /// Rewrites part of large value `old` (SETRANGE, APPEND): the value
    /// becomes `total_len` bytes long, pieces `rewrite` of it are written
    /// anew into fresh piece segments (`fill(i, data)` gives piece `i`'s
    /// bytes, `data` as long as that piece is), and the new head lists
    /// them with the old head's other pieces, shared. Those must be whole
    /// pieces of the same length in both values: `rewrite` covers every
    /// piece past the old value's last whole one when the length changes.
    /// `own` is the key's own entry when the edit began
    /// ([`Self::track_own`] then): the entry the new head replaces. As
    /// [`Keyspace::write_large`] otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn write_large_edit(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        old: Arc<LargeHead>,
        total_len: u64,
        rewrite: std::ops::Range<usize>,
        mut fill: impl FnMut(usize, &mut [u8]),
        expire_ms: u64,
        writer: W,
        own: Option<u64>,
    ) -> Result<(), (W, WriteError)> {
        debug_assert!(
            rewrite.end == total_len.div_ceil(self.piece_capacity()) as usize
                || total_len == old.total_len
        );
        debug_assert!(rewrite.start <= old.pieces.len());
        let written = self.write_piece_runs(pid, &old, total_len, &[rewrite], &mut fill);
        let (head, fresh) = match written {
            Ok(w) => w,
            Err(e) => {
                if let Some(at) = own {
                    self.unfollow(pid, at);
                }
                return Err((writer, e));
            }
        };
        // Until the new head takes them, the job keeps the old pieces.
        self.hold_pieces(&old);
        self.log.jobs.push(LargeJob {
            pid,
            hash: *hash,
            key: key.into(),
            head,
            expire_ms,
            writer,
            fresh,
            held: Some(old),
            pieces_only: false,
            own,
        });
        Ok(())
    }

    /// Writes the pieces a transaction changed in large value `old`
    /// (SETRANGE, APPEND inside MULTI … EXEC), not its head: the value
    /// becomes `total_len` bytes long, and the pieces in `changed` (by
    /// number, each as long as that piece of the new value is) go into
    /// fresh piece segments; the others are `old`'s, shared, of the same
    /// length in both. As [`Keyspace::write_pieces_only`] otherwise: the
    /// returned head (listing the fresh pieces with the shared ones) is
    /// written by [`Keyspace::write_new_head`] once `writer` is back.
    #[allow(clippy::too_many_arguments)]
    pub fn write_edit_pieces_only(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        old: &LargeHead,
        total_len: u64,
        changed: &std::collections::BTreeMap<usize, Vec<u8>>,
        writer: W,
    ) -> Result<LargeHead, (W, WriteError)> {
        let idx: Vec<usize> = changed.keys().copied().collect();
        // One write per run of consecutive pieces.
        let runs: Vec<_> = (idx.chunk_by(|a, b| a + 1 == *b))
            .map(|run| run[0]..run[run.len() - 1] + 1)
            .collect();
        let mut fill = |i: usize, out: &mut [u8]| out.copy_from_slice(&changed[&i]);
        let written = self.write_piece_runs(pid, old, total_len, &runs, &mut fill);
        let (head, fresh) = match written {
            Ok(w) => w,
            Err(e) => return Err((writer, e)),
        };
        let own = self.track_own(pid, hash);
        self.log.jobs.push(LargeJob {
            pid,
            hash: *hash,
            key: key.into(),
            head: head.clone(),
            expire_ms: 0,
            writer,
            fresh,
            held: None,
            pieces_only: true,
            own,
        });
        Ok(head)
    }

    /// Queues the writes of pieces `runs` (each a range of consecutive
    /// piece numbers, `fill(i, data)` giving piece `i`'s bytes) of a value
    /// of `total_len` bytes whose other pieces are `old`'s, shared; returns
    /// the new head and the fresh segments. Refused before anything is
    /// queued when the store has no room for all of them; a run refused
    /// later takes the runs queued before back.
    fn write_piece_runs(
        &mut self,
        pid: u32,
        old: &LargeHead,
        total_len: u64,
        runs: &[std::ops::Range<usize>],
        fill: &mut dyn FnMut(usize, &mut [u8]),
    ) -> Result<(LargeHead, Vec<u32>), WriteError> {
        let count = total_len.div_ceil(self.piece_capacity()) as usize;
        if !self.room_for_pieces(runs.iter().map(|r| r.len()).sum()) {
            return Err(WriteError::Full);
        }
        let mut pieces = old.pieces.clone();
        pieces.resize(count, 0);
        let mut fresh = Vec::new();
        for run in runs {
            debug_assert!(run.end <= count);
            let source = PieceSource::Fill(&mut *fill);
            match self.write_pieces(pid, old.value_id, total_len, run.clone(), source) {
                Ok(segs) => {
                    pieces[run.clone()].copy_from_slice(&segs);
                    fresh.extend(segs);
                }
                Err(e) => {
                    (self.log.piece_writes).retain(|(_, _, no)| !fresh.contains(no));
                    self.drop_pieces(&fresh);
                    return Err(e);
                }
            }
        }
        let head = LargeHead {
            total_len,
            value_id: old.value_id,
            pieces,
        };
        Ok((head, fresh))
    }

    /// Takes a free segment for each piece `range` of a value of
    /// `total_len` bytes and id `value_id`, and queues the piece's write
    /// (its bytes from `source`) on the next commit; returns the segments.
    fn write_pieces(
        &mut self,
        pid: u32,
        value_id: u64,
        total_len: u64,
        range: std::ops::Range<usize>,
        mut source: PieceSource,
    ) -> Result<Vec<u32>, WriteError> {
        let cap = self.piece_capacity();
        let count = range.len();
        // Room for the pieces, and for the head in a new segment.
        if !self.room_for_pieces(count) {
            return Err(WriteError::Full);
        }
        let shard = crate::store::shard_of(pid, self.sb.shards);
        let block = self.block as usize;
        let mut writes = Vec::with_capacity(count);
        let mut segs = Vec::with_capacity(count);
        let mut bytes = 0;
        let mut failed = None;
        for i in range {
            let Some(no) = self.space.take_free() else {
                failed = Some(WriteError::Full);
                break;
            };
            segs.push(no);
            let data_len = (total_len - i as u64 * cap).min(cap) as usize;
            let len = block + data_len.next_multiple_of(block);
            let header = |data: &[u8], out: &mut [u8]| {
                let h = PieceHeader {
                    value_id,
                    piece: i as u32,
                    len: data_len as u32,
                    data_crc: PieceHeader::data_crc(&self.sb.uuid, data),
                    shard,
                };
                out.fill(0);
                h.encode(&self.sb.uuid, out);
            };
            let write = match &mut source {
                PieceSource::Shared(value) => {
                    let from = i * cap as usize;
                    let mut first = vec![0; block].into_boxed_slice();
                    header(&value[from..from + data_len], &mut first);
                    Queued::Piece(Box::new(PieceFill {
                        value: value.clone(),
                        from,
                        len: data_len,
                        header: first,
                    }))
                }
                PieceSource::Fill(fill) => {
                    let mut buf = match self.eng.alloc(len) {
                        Ok(buf) => buf,
                        Err(e) => {
                            failed = Some(WriteError::NoBuffer(e.to_string()));
                            break;
                        }
                    };
                    let (first, rest) = buf.split_at_mut(block);
                    fill(i, &mut rest[..data_len]);
                    header(&rest[..data_len], first);
                    rest[data_len..].fill(0);
                    Queued::Buf(buf)
                }
            };
            bytes += len as u64;
            writes.push((self.sb.segment_offset(no), write, no));
        }
        if let Some(e) = failed {
            for no in segs {
                self.space.free.push(no);
            }
            return Err(e);
        }
        for &no in &segs {
            let g = no as usize;
            self.space.shard[g].store(shard, Relaxed);
            self.space.piece[g].store(true, Relaxed);
            self.space.min_seq[g].store(u64::MAX, Relaxed);
        }
        self.counters.piece_writes.fetch_add(count as u64, Relaxed);
        self.counters.piece_bytes.fetch_add(bytes, Relaxed);
        self.log.piece_writes.extend(writes);
        Ok(segs)
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
        if job.pieces_only {
            // Its head is the transaction's to write.
            if let Some(at) = job.own {
                self.unfollow(job.pid, at);
            }
            self.hold_pieces(&job.head);
            return self.acks.push((job.writer, Ok(())));
        }
        // Short tags: the key's own entry is the one its head replaces.
        let own = job.own.and_then(|at| self.unfollow(job.pid, at));
        if !self.act_on(job.pid, &job.hash, own) {
            self.act_on(job.pid, &job.hash, None);
        }
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
                // The new head references the pieces now: the old ones
                // it does not share may go.
                if let Some(held) = &job.held {
                    self.release_pieces(held);
                }
                let len = crate::format::record_len(job.key.len(), head.len());
                let fresh = job.fresh.len() as u64 * self.piece_capacity();
                let bytes = len + fresh.min(job.head.total_len);
                self.counters.user_bytes.fetch_add(bytes, Relaxed);
                self.touch_written(job.pid, &job.hash, old.is_none_or(|o| o.tombstone));
                self.update_key_count();
                self.log.wait(job.writer);
                // The writer waits: its commit starts at once.
                self.log.force = true;
            }
            Err(e) => {
                // No room for the head after all: the pieces go back.
                let writer = self.drop_job(job);
                let err = super::CommitFailed(format!("{e}").into());
                self.acks.push((writer, Err(err)));
            }
        }
    }

    /// A job that failed: its pieces go back, and it lets go of the old
    /// pieces it held; returns its writer.
    pub(super) fn drop_job(&mut self, job: LargeJob<W>) -> W {
        if let Some(at) = job.own {
            self.unfollow(job.pid, at);
        }
        self.drop_pieces(&job.fresh);
        if let Some(held) = &job.held {
            self.release_pieces(held);
        }
        job.writer
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
        let owner = self.space.shard[self.sb.segment_of(offset) as usize].load(Relaxed);
        self.take_pieces(&head, owner);
        self.space
            .large
            .lock()
            .expect("large value map")
            .insert(offset, head);
    }

    /// One more reference to each piece of `head` (of shard `owner`).
    fn take_pieces(&self, head: &LargeHead, owner: u32) {
        let space = &self.space;
        for (i, &no) in head.pieces.iter().enumerate() {
            let g = no as usize;
            if space.piece_refs[g].fetch_add(1, Relaxed) == 0 {
                space.live[g].fetch_add(space.piece_bytes(head, i), Relaxed);
            }
            space.piece[g].store(true, Relaxed);
            if space.shard[g].load(Relaxed) == NO_SHARD {
                space.shard[g].store(owner, Relaxed);
            }
        }
    }

    /// Holds the pieces of `head`, the live head of a key, for an edit of
    /// it under way: none is freed until [`Keyspace::release_pieces`].
    pub fn hold_pieces(&mut self, head: &LargeHead) {
        self.take_pieces(head, NO_SHARD);
    }

    /// Lets go of pieces held with [`Keyspace::hold_pieces`] (or by a
    /// head): a piece segment no head references is freed as an emptied
    /// segment is.
    pub fn release_pieces(&mut self, head: &LargeHead) {
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

    /// The head of the large value at device offset `offset`, if the
    /// index references one there.
    pub fn large_head(&self, offset: u64) -> Option<Arc<LargeHead>> {
        let large = self.space.large.lock().expect("large value map");
        large.get(&offset).cloned()
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
        self.release_pieces(&head);
        Some(head)
    }

    /// Pins the pieces of the head at device offset `offset`, if it is
    /// still in the index as the value `value_id` (not superseded since
    /// it was read), for a read that outlasts the key's hold (a streamed
    /// GET): an overwrite, DEL, expiry or eviction of the key meanwhile
    /// leaves the piece segments as they are until
    /// [`Keyspace::unpin_pieces`]; so does a flush of the shard.
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
        self.release_pieces(head);
    }

    /// Forgets the heads of large values of `shards` (a flush): their
    /// piece segments are then flushed with the shards' other segments,
    /// but for those pinned ([`Keyspace::pin_pieces`]), freed once
    /// unpinned.
    pub(super) fn forget_heads(&mut self, shards: &[u32]) {
        let space = &self.space;
        let mut large = space.large.lock().expect("large value map");
        large.retain(|&offset, head| {
            let owner = space.shard[self.sb.segment_of(offset) as usize].load(Relaxed);
            if !shards.contains(&owner) {
                return true;
            }
            // What is left are pins: streams still reading the pieces.
            for &no in &head.pieces {
                space.piece_refs[no as usize].fetch_sub(1, Relaxed);
            }
            false
        });
    }
}
