//! A replica's full copy, written without the command path: the link
//! thread parses the copy once and hands each poller batches of its keys'
//! records ([`Op::Load`]), which go into the log in the order they came.
//! A record that finds no free segment waits while eviction or compaction
//! can make room, as a deferred write does (at most [`MAX_DEFER`] each);
//! one refused is counted in the batch's answer, which fails the copy. A
//! batch is answered once its records' commit has written them (whatever
//! the durability mode), without a flush of its own: the copy goes at the
//! device's pace, a failed commit fails it, and the SAVE that ends the
//! copy makes it durable whole.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::{Poller, Waiter, MAX_DEFER};
use crate::io::Engine;
use crate::server::msg::{ConnRef, CopyBatch, CopyDone, Op, Reply, Request, NO_REPLY};
use crate::store::keyspace::{CommitFailed, WriteError};

/// How many records ahead of its write a record's index slot is brought
/// into the CPU's cache: the index is a table far larger than the cache,
/// which each new key's probe would otherwise wait for (a copy's records
/// come in no order of the table's).
const PREFETCH_AHEAD: usize = 8;

/// The batches of a copy a poller holds.
#[derive(Default)]
pub(super) struct Loads {
    /// Being written, oldest first.
    queue: VecDeque<LoadJob>,
    /// Written, waiting for their commits, by number.
    durable: HashMap<u64, LoadJob>,
    next: u64,
}

impl Loads {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.durable.is_empty()
    }
}

/// A batch being written.
pub(super) struct LoadJob {
    batch: Box<CopyBatch>,
    /// The next record.
    next: usize,
    written: u64,
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
        if batch.reserve > 0 {
            self.ks.reserve_keys(batch.reserve);
        }
        self.loads.queue.push_back(LoadJob {
            batch,
            next: 0,
            written: 0,
            failed: 0,
            first: None,
            since: None,
        });
        self.drive_loads();
    }

    /// Since when the oldest record of a copy has waited for room.
    pub(super) fn load_waiting(&self) -> Option<Instant> {
        self.loads.queue.front().and_then(|j| j.since)
    }

    /// Writes the batches' records, in order, until one waits for room.
    /// Returns whether any record went in.
    pub(super) fn drive_loads(&mut self) -> bool {
        let mut any = false;
        while let Some(mut job) = self.loads.queue.pop_front() {
            let mut wrote = false;
            if job.next == 0 {
                for r in job.batch.recs.iter().take(PREFETCH_AHEAD) {
                    self.ks.prefetch_entry(r.pid, &r.hash);
                }
            }
            while let Some(&r) = job.batch.recs.get(job.next) {
                if let Some(ahead) = job.batch.recs.get(job.next + PREFETCH_AHEAD) {
                    self.ks.prefetch_entry(ahead.pid, &ahead.hash);
                }
                let (kl, vl) = (r.key_len as usize, r.value_len as usize);
                let (ka, va) = (r.key_at as usize, r.value_at as usize);
                let key = &job.batch.data[ka..ka + kl];
                let value = &job.batch.data[va..va + vl];
                let result = if self.ks.refuses_over_maxmemory() {
                    Err(Reply::Error(crate::server::strings::OVER_MAXMEMORY.into()))
                } else {
                    // The copy goes into an emptied store, each key once:
                    // the entries of its tag are other keys'.
                    self.ks.expect_new(r.pid, &r.hash);
                    match self
                        .ks
                        .write(r.pid, &r.hash, key, value, r.expire_ms, false)
                    {
                        Ok(()) => Ok(()),
                        Err(WriteError::Full) if self.ks.may_make_room() => {
                            let now = self.ks.now();
                            let since = *job.since.get_or_insert(now);
                            if now.saturating_duration_since(since) <= MAX_DEFER {
                                self.loads.queue.push_front(job);
                                return any;
                            }
                            Err(self.refusal(WriteError::Full))
                        }
                        Err(e) => Err(self.refusal(e)),
                    }
                };
                match result {
                    Ok(()) => {
                        job.written += 1;
                        wrote = true;
                    }
                    Err(Reply::Error(e)) => {
                        job.failed += 1;
                        job.first.get_or_insert(e);
                    }
                    Err(_) => job.failed += 1,
                }
                job.since = None;
                job.next += 1;
                any = true;
            }
            self.await_durable(job, wrote);
        }
        any
    }

    /// A batch written: answered once its records' commit has written them
    /// (see `Keyspace::acknowledge_written`). `now`:
    /// some were appended this turn (the next commit carries them);
    /// otherwise they may be in a commit under way, and a forced one
    /// follows it.
    fn await_durable(&mut self, job: LoadJob, now: bool) {
        if job.written == 0 {
            return self.answer_load(job);
        }
        let n = self.loads.next;
        self.loads.next += 1;
        self.loads.durable.insert(n, job);
        let w = Waiter::loaded(n);
        if now {
            self.ks.acknowledge_written(w);
        } else {
            self.ks.save(w);
        }
    }

    /// Batch `n`'s commit completed, or failed (its records are lost: the
    /// copy fails).
    pub(super) fn load_durable(&mut self, n: u64, result: Result<(), CommitFailed>) {
        let Some(mut job) = self.loads.durable.remove(&n) else {
            return;
        };
        if let Err(e) = result {
            job.failed += job.written;
            job.first = Some(crate::server::strings::write_failed(&e));
        }
        self.answer_load(job);
    }

    fn answer_load(&mut self, job: LoadJob) {
        // DBSIZE and INFO count the batch's keys.
        self.ks.update_key_count();
        let CopyBatch {
            data,
            mut recs,
            done,
            ..
        } = *job.batch;
        recs.clear();
        let _ = done.send(CopyDone {
            poller: self.id,
            failed: job.failed,
            first: job.first,
            buffers: (data, recs),
        });
    }
}

impl Waiter {
    /// The waiter of copy batch `n`.
    fn loaded(n: u64) -> Waiter {
        Waiter {
            to: ConnRef::NONE,
            id: NO_REPLY,
            part: 0,
            reply: Reply::Nil,
            save: false,
            hold: None,
            pieces_of: None,
            load: Some(n),
            cross: false,
            unlink: None,
        }
    }
}
