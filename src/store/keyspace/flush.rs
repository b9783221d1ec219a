//! FLUSHDB and FLUSHALL: every key of the keyspace's shards goes at once,
//! with no write per key.
//!
//! The index partitions are cleared, and each shard gets a flush mark
//! (`format::FlushMark`): "records below sequence number S are flushed",
//! S being the log's next number. Each shard that holds a segment has its
//! open one closed and a new one opened whose header says the same
//! (`SegmentHeader::flush`: its first sequence number is S, and it names
//! the flush's shards): the records that follow the flush (a
//! transaction's SETs after its FLUSHDB) go into it, the next commit
//! writes its header with them in one write and carries the flush's
//! waiter, so the flush is acknowledged once durable, whatever the
//! durability mode. The marks themselves (one block per shard, in
//! alternating slots) go in the commit after: written with the records
//! they would drop, a crash could keep a mark and lose the records after
//! it, and with them the previous, acknowledged state. A rebuild ignores
//! records below a shard's mark or below its flushing segment's S, the
//! latter only when every shard of that flush has its flushing segment
//! (or a mark says S): a commit cut short by a crash, some of them
//! written and some not, is dropped whole, its records with it. The
//! segments that held the flushed records keep their headers until the
//! flush is durable (a crash before then finds the store as it was before
//! the flush), then are erased and freed as emptied segments are. A shard
//! for which no segment is free writes its mark with the flush's commit,
//! as before. The flush runs when no write waits for a commit
//! (`Keyspace::quiet_for_flush`), so no rollback can bring back an entry
//! the flush cleared.

use std::sync::atomic::Ordering::Relaxed;

use thiserror::Error;

use super::Keyspace;
use crate::format::{FlushMark, FlushOf};
use crate::io::Engine;
use crate::store::NO_SHARD;

/// Why a flush could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The store's shards' marks do not fit between the superblock and
    /// the first segment.
    #[error("the store has too many shards ({0}) for flush marks")]
    NoRoom(u32),
}

impl<E: Engine, W> Keyspace<E, W> {
    /// Flushes every key of this keyspace's shards; `w` comes back from
    /// [`Keyspace::take_acks`] once the flush is durable. Only when the
    /// log is [`Keyspace::idle`].
    pub fn flush_all(&mut self, w: W) -> Result<(), (W, FlushError)> {
        self.flush_unpublished(w)?;
        self.update_key_count();
        Ok(())
    }

    /// [`Keyspace::flush_all`], leaving the key count others read as it
    /// was: the writes that follow the flush in the same turn (a
    /// transaction's) publish it, so no reader counts the store empty
    /// between the two.
    pub fn flush_unpublished(&mut self, w: W) -> Result<(), (W, FlushError)> {
        debug_assert!(
            self.quiet_for_flush(),
            "a flush waits for the log to be quiet"
        );
        let sb = &self.sb;
        if FlushMark::offset(sb, sb.shards - 1, 1).is_none() {
            return Err((w, FlushError::NoRoom(sb.shards)));
        }
        let below = self.log.next_seq;
        let mut owned = Vec::new();
        let mut marks = Vec::new();
        for s in self.shards.iter_mut().flatten() {
            s.clear();
            s.flushed = FlushMark {
                epoch: s.flushed.epoch + 1,
                below,
            };
            // An earlier flush's marks not written yet are written all the
            // same (its flushing segments may be all that says it happened
            // until they are); this one's, of a later epoch, follow.
            owned.push(s.id);
            marks.push((s.id, s.flushed));
        }
        self.compactor.abandon();
        self.forget_heads(&owned);
        // Entries replaced unread are gone with the rest.
        self.unverified.clear();
        self.owners.clear();
        let space = &self.space;
        // The shards with a segment in use: only they have anything to
        // flush.
        let mut holding = Vec::new();
        for g in 0..space.live.len() {
            let shard = space.shard[g].load(Relaxed);
            if !owned.contains(&shard) {
                continue;
            }
            if !holding.contains(&shard) {
                holding.push(shard);
            }
            if space.piece_refs[g].load(Relaxed) > 0 {
                // Pinned pieces: a stream still reads them. They stay
                // until it ends (`unpin_pieces`).
                continue;
            }
            let referenced = space.live[g].load(Relaxed) > 0;
            space.live[g].store(0, Relaxed);
            space.gone[g].store(0, Relaxed);
            let no = g as u32;
            if self.is_open(no) || !referenced || self.is_pending_free(no) {
                // Open: new records go on in it (a rebuild skips the old
                // ones by their numbers). Unreferenced: already on its way
                // to the free pool.
                continue;
            }
            // Out of compaction's sight until erased.
            space.shard[g].store(NO_SHARD, Relaxed);
            self.log.flushed_segments.push(no);
        }
        // A flushing segment for each shard that holds anything; a shard
        // for which none is free writes its mark with the flush's commit,
        // as before, and one that holds nothing after it.
        let mut flushing = Vec::new();
        for (shard, mark) in marks {
            if !holding.contains(&shard) {
                self.log.later_marks.push((shard, mark));
                continue;
            }
            match self.space.take_free() {
                Some(no) => flushing.push((shard, mark, no)),
                None => self.log.marks.push((shard, mark)),
            }
        }
        let of = FlushOf {
            first: flushing.iter().map(|f| f.0).min().unwrap_or(0),
            shards: flushing.len() as u32,
        };
        for (shard, mark, no) in flushing {
            self.open_flushing_segment(shard, mark, no, of);
        }
        self.counters.avg_ttl_ms.store(0, Relaxed);
        self.log.wait(w);
        Ok(())
    }

    /// Opens segment `no` as `shard`'s flushing segment (`of`: the shards
    /// given one by this flush), whose mark is `mark`, in place of its open
    /// one: that one holds only flushed records, all on the device (see
    /// `quiet_for_flush`), and is erased once the flush is durable, as the
    /// shard's other segments are. The mark is written after the next
    /// commit.
    fn open_flushing_segment(&mut self, shard: u32, mark: FlushMark, no: u32, of: FlushOf) {
        // Its live bytes were set to zero with the shard's other segments.
        if let Some(old) = self.take_open_segment(shard) {
            self.space.shard[old as usize].store(NO_SHARD, Relaxed);
            self.log.flushed_segments.push(old);
        }
        self.open_segment(shard, no, Some(of));
        self.log.later_marks.push((shard, mark));
    }
}
