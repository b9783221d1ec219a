//! FLUSHDB and FLUSHALL: every key of the keyspace's shards goes at once,
//! with no write per key.
//!
//! The index partitions are cleared, and each shard gets a flush mark
//! (`format::FlushMark`): "records below sequence number S are flushed",
//! S being the log's next number. The next commit writes the marks (one
//! block per shard, in alternating slots) and carries the flush's waiter,
//! so the flush is acknowledged once they are durable, whatever the
//! durability mode. A rebuild ignores records below a shard's mark. The
//! segments that held the flushed records keep their headers until the
//! marks are durable (a crash before then finds the store as it was
//! before the flush), then are erased and freed as emptied segments are.
//! The flush runs when the log is idle: no write is waiting for a commit,
//! so no rollback can bring back an entry the flush cleared.

use std::sync::atomic::Ordering::Relaxed;

use thiserror::Error;

use super::Keyspace;
use crate::format::FlushMark;
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
        debug_assert!(self.idle(), "a flush waits for the log to be idle");
        let sb = &self.sb;
        if FlushMark::offset(sb, sb.shards - 1, 1).is_none() {
            return Err((w, FlushError::NoRoom(sb.shards)));
        }
        let below = self.log.next_seq;
        let mut owned = Vec::new();
        for s in self.shards.iter_mut().flatten() {
            s.clear();
            s.flushed = FlushMark {
                epoch: s.flushed.epoch + 1,
                below,
            };
            // A later flush of the same shard before this one's commit
            // replaces its mark.
            self.log.marks.retain(|&(id, _)| id != s.id);
            self.log.marks.push((s.id, s.flushed));
            owned.push(s.id);
        }
        self.compactor.abandon();
        self.forget_heads(&owned);
        // Entries replaced unread are gone with the rest.
        self.unverified.clear();
        self.owners.clear();
        let space = &self.space;
        for g in 0..space.live.len() {
            let shard = space.shard[g].load(Relaxed);
            if !owned.contains(&shard) {
                continue;
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
        self.counters.avg_ttl_ms.store(0, Relaxed);
        self.log.wait(w);
        Ok(())
    }
}
