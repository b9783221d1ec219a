//! A replica's full copy, written without the command path: the link
//! thread parses the copy once and hands each poller batches of its keys'
//! records ([`Op::Load`]), which go into the log in the order they came.
//! A record that finds no free segment waits while eviction or compaction
//! can make room, as a deferred write does (at most [`MAX_DEFER`] each);
//! one refused is counted in the batch's answer, which fails the copy.
//! Nothing here is durable yet: the copy ends with a SAVE.

use std::time::Instant;

use super::{Poller, MAX_DEFER};
use crate::io::Engine;
use crate::server::msg::{CopyBatch, CopyDone, Op, Reply, Request};
use crate::store::keyspace::WriteError;

/// A batch being written.
pub(super) struct LoadJob {
    batch: Box<CopyBatch>,
    /// The next record, and where its key starts in the batch's data.
    next: usize,
    at: usize,
    failed: u64,
    first: Option<String>,
    /// Since when the next record has waited for room.
    since: Option<Instant>,
}

impl<E: Engine> Poller<E> {
    /// Takes a batch of a full copy; writes what it can of it now.
    pub(super) fn load(&mut self, req: Request) {
        let Op::Load(batch) = req.op else {
            unreachable!()
        };
        self.loads.push_back(LoadJob {
            batch,
            next: 0,
            at: 0,
            failed: 0,
            first: None,
            since: None,
        });
        self.drive_loads();
    }

    /// Since when the oldest record of a copy has waited for room.
    pub(super) fn load_waiting(&self) -> Option<Instant> {
        self.loads.front().and_then(|j| j.since)
    }

    /// Writes the batches' records, in order, until one waits for room;
    /// answers each batch written. Returns whether any record went in.
    pub(super) fn drive_loads(&mut self) -> bool {
        let mut any = false;
        while let Some(mut job) = self.loads.pop_front() {
            while let Some(&r) = job.batch.recs.get(job.next) {
                let (kl, vl) = (r.key_len as usize, r.value_len as usize);
                let key = &job.batch.data[job.at..job.at + kl];
                let value = &job.batch.data[job.at + kl..job.at + kl + vl];
                let result = if self.ks.refuses_over_maxmemory() {
                    Err(Reply::Error(crate::server::strings::OVER_MAXMEMORY.into()))
                } else {
                    match self
                        .ks
                        .write(r.pid, &r.hash, key, value, r.expire_ms, false)
                    {
                        Ok(()) => Ok(()),
                        Err(WriteError::Full) if self.ks.may_make_room() => {
                            let now = self.ks.now();
                            let since = *job.since.get_or_insert(now);
                            if now.saturating_duration_since(since) <= MAX_DEFER {
                                self.loads.push_front(job);
                                return any;
                            }
                            Err(self.refusal(WriteError::Full))
                        }
                        Err(e) => Err(self.refusal(e)),
                    }
                };
                if let Err(Reply::Error(e)) = result {
                    job.failed += 1;
                    job.first.get_or_insert(e);
                }
                job.since = None;
                job.next += 1;
                job.at += kl + vl;
                any = true;
            }
            // DBSIZE and INFO count the batch's keys.
            self.ks.update_key_count();
            let _ = job.batch.done.send(CopyDone {
                poller: self.id,
                failed: job.failed,
                first: job.first,
            });
        }
        any
    }
}
