//! A poller's writes on their way into the stream: each waits here until
//! the commit that carries it is durable, and is dropped if that commit
//! fails and the write is rolled back, so a replica never applies a write
//! its primary did not keep.
//!
//! The keyspace numbers its records (sequence numbers) and tells which
//! are durable (every one below [`Keyspace::durable_seq`]) and which were
//! rolled back ([`Keyspace::take_lost`]); a write waits here under the
//! number of its (last) record.
//!
//! Keys that expired or were evicted go into the stream as `DEL key`
//! ([`Keyspace::take_gone`]), placed among the writes by the sequence
//! number the keyspace was at when they went, and dropped with the
//! record that went if that record is rolled back. A key that went whose
//! record fails its check when read back has no name to send: the stream
//! starts again under a new id and the replicas sync in full
//! ([`Repl::restart_stream`]).
//!
//! [`Keyspace::take_gone`]: crate::store::keyspace::Keyspace::take_gone
//! [`Keyspace::durable_seq`]: crate::store::keyspace::Keyspace::durable_seq
//! [`Keyspace::take_lost`]: crate::store::keyspace::Keyspace::take_lost

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::Repl;
use crate::store::keyspace::GoneKey;

/// One poller's writes not yet durable, in the order it applied them.
pub(in crate::server) struct Outbox {
    poller: usize,
    /// In stream order, by `Queued::order`.
    queue: VecDeque<Queued>,
    /// Ranges of sequence numbers rolled back, taken from the keyspace.
    pub(in crate::server) lost: Vec<Range<u64>>,
    /// The last few of them: a gone key's name may come after its record
    /// was rolled back.
    lost_before: VecDeque<Range<u64>>,
    /// Keys that went, taken from the keyspace.
    pub(in crate::server) gone: Vec<GoneKey>,
    /// Keys that went whose names could not be read (their records failed
    /// their checks), taken from the keyspace: no DEL can tell the
    /// replicas, so they sync again in full.
    pub(in crate::server) unnamed: u64,
}

/// A write or DEL waiting for its place in the stream.
struct Queued {
    /// Its place: `2 (s + 1)` for a write whose last record is `s`, `2 m`
    /// for a key that went at mark `m` (before the records from `m` on,
    /// after those before); it may go once this is at most `2 ×` the
    /// durable sequence number.
    order: u64,
    /// The record whose rollback drops it.
    seq: u64,
    bytes: Vec<u8>,
}

/// Rolled-back ranges remembered for gone keys named late.
const LOST_KEPT: usize = 16;

impl Outbox {
    pub(in crate::server) fn new(poller: usize) -> Outbox {
        Outbox {
            poller,
            queue: VecDeque::new(),
            lost: Vec::new(),
            lost_before: VecDeque::new(),
            gone: Vec::new(),
            unnamed: 0,
        }
    }

    /// A write whose last record has sequence number `seq`, encoded by
    /// `encode`, goes into the stream once durable: when the stream is on,
    /// and not when a flush is on its way to this poller (the write is
    /// wiped by it, and the FLUSHALL is already in the stream).
    pub(in crate::server) fn push(
        &mut self,
        repl: &Repl,
        seq: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) {
        // A replica's backlog holds its primary's stream, not its writes.
        if !repl.feeding() || repl.is_replica() || repl.flush_coming(self.poller) {
            return;
        }
        let mut bytes = Vec::new();
        encode(&mut bytes);
        self.enqueue(repl, 2 * (seq + 1), seq, bytes);
    }

    /// Puts an entry in its place (after every entry not later).
    fn enqueue(&mut self, repl: &Repl, order: u64, seq: u64, bytes: Vec<u8>) {
        let at = self.queue.partition_point(|q| q.order <= order);
        self.queue.insert(at, Queued { order, seq, bytes });
        repl.pollers[self.poller].queued.fetch_add(1, SeqCst);
    }

    /// Drops the writes of `lost` (rolled back), queues a DEL for each
    /// key of `gone`, and appends what may go to the stream: the writes
    /// below `durable`, and nothing from `unnamed` (the mark of a key that
    /// went whose name is still being read) on. `next` is the keyspace's
    /// next sequence number, published for a full copy's check
    /// ([`Repl::settled`]).
    pub(in crate::server) fn settle(
        &mut self,
        repl: &Repl,
        durable: u64,
        next: u64,
        unnamed: Option<u64>,
    ) {
        let p = &repl.pollers[self.poller];
        if std::mem::take(&mut self.unnamed) > 0 && repl.feeding() && !repl.is_replica() {
            repl.restart_stream(
                "a key expired or was evicted whose record failed its check when read \
                 back, so no DEL can name it",
            );
        }
        for g in std::mem::take(&mut self.gone) {
            let rolled_back = |r: &Range<u64>| r.contains(&g.seq);
            if self.lost.iter().chain(&self.lost_before).any(rolled_back)
                || !repl.feeding()
                || repl.is_replica()
                || repl.flush_coming(self.poller)
            {
                continue;
            }
            let mut bytes = Vec::new();
            crate::resp::encode::command(&mut bytes, &[b"DEL", &g.key]);
            self.enqueue(repl, 2 * g.mark, g.seq, bytes);
        }
        if !self.lost.is_empty() {
            let lost = std::mem::take(&mut self.lost);
            let before = self.queue.len();
            self.queue
                .retain(|q| !lost.iter().any(|r| r.contains(&q.seq)));
            let dropped = (before - self.queue.len()) as u64;
            p.settled.fetch_add(dropped, SeqCst);
            // Counted whether or not anything was queued: a full copy may
            // have read a write rolled back here.
            repl.rollbacks.fetch_add(1, SeqCst);
            if dropped > 0 {
                tracing::warn!(
                    poller = self.poller,
                    writes = dropped,
                    "rolled-back writes left out of the replication stream"
                );
            }
            self.lost_before.extend(lost);
            while self.lost_before.len() > LOST_KEPT {
                self.lost_before.pop_front();
            }
        }
        p.durable_seq.store(durable, Relaxed);
        p.next_seq.store(next, Relaxed);
        let limit = 2 * unnamed.map_or(durable, |m| m.min(durable));
        let n = self.queue.iter().take_while(|q| q.order <= limit).count();
        if n == 0 {
            return;
        }
        let ready = self.queue.drain(..n);
        if repl.is_replica() {
            // Queued before it became one: its stream ended there.
            drop(ready);
        } else {
            repl.append_all(ready.map(|q| q.bytes));
        }
        p.settled.fetch_add(n as u64, SeqCst);
    }

    /// This poller ran a flush: what waits here was wiped by it (the
    /// FLUSHALL is in the stream already).
    pub(in crate::server) fn wiped(&mut self, repl: &Repl) {
        let n = self.queue.len() as u64;
        self.queue.clear();
        repl.pollers[self.poller].settled.fetch_add(n, SeqCst);
        repl.pollers[self.poller].flushes_run.fetch_add(1, SeqCst);
    }
}

/// What a poller tells replication, read by other threads.
#[derive(Debug, Default)]
pub(super) struct PollerMarks {
    /// Flushes it has run (see `Backlog::flushes`).
    pub flushes_run: std::sync::atomic::AtomicU64,
    /// Writes queued in its outbox, and of those appended or dropped: a
    /// WAIT waits until those queued before it are settled.
    pub queued: std::sync::atomic::AtomicU64,
    pub settled: std::sync::atomic::AtomicU64,
    /// Its keyspace's durable and next sequence numbers.
    pub durable_seq: std::sync::atomic::AtomicU64,
    pub next_seq: std::sync::atomic::AtomicU64,
}

impl Repl {
    /// Whether a flush is on its way to poller `poller`.
    fn flush_coming(&self, poller: usize) -> bool {
        self.backlog().flushes > self.pollers[poller].flushes_run.load(SeqCst)
    }

    /// Every poller's next sequence number now.
    pub(super) fn seq_marks(&self) -> Vec<u64> {
        self.pollers
            .iter()
            .map(|p| p.next_seq.load(Relaxed))
            .collect()
    }

    /// Whether every record below `marks` (from [`Repl::seq_marks`]) is
    /// durable or rolled back.
    pub(super) fn settled(&self, marks: &[u64]) -> bool {
        (self.pollers.iter().zip(marks)).all(|(p, &m)| p.durable_seq.load(Relaxed) >= m)
    }

    /// Every poller's count of queued writes now.
    pub(super) fn queued_marks(&self) -> Vec<u64> {
        self.pollers.iter().map(|p| p.queued.load(SeqCst)).collect()
    }

    /// Whether the writes counted in `marks` (from
    /// [`Repl::queued_marks`]) are all appended or dropped.
    pub(super) fn queued_settled(&self, marks: &[u64]) -> bool {
        (self.pollers.iter().zip(marks)).all(|(p, &m)| p.settled.load(Relaxed) >= m)
    }

    /// Appends writes, in order, under one lock.
    fn append_all(&self, writes: impl Iterator<Item = Vec<u8>>) {
        let mut b = self.backlog();
        for w in writes {
            b.append(&w);
        }
        drop(b);
        self.grew.notify_all();
    }
}
