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
//! A part of a transaction across pollers run while replicas are fed
//! (`Cross::gated`) waits here as the others do, tagged with its
//! transaction and its number of parts, even when it wrote nothing;
//! every part of it or none comes (the last poller decides for all,
//! `CrossStep::Release`): one without the others would hold its outbox
//! back for good. Where
//! the outboxes meet (under the backlog's lock) the parts are gathered:
//! the outbox whose part completes the transaction appends every part's
//! commands as one `MULTI … EXEC`; an outbox whose part waits for others
//! holds back what follows it until then (the others go on). Such
//! transactions run one at a time (the gate), so every poller commits
//! their parts in the same order, and no two outboxes wait for each other.
//!
//! [`Keyspace::take_gone`]: crate::store::keyspace::Keyspace::take_gone
//! [`Keyspace::durable_seq`]: crate::store::keyspace::Keyspace::durable_seq
//! [`Keyspace::take_lost`]: crate::store::keyspace::Keyspace::take_lost

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::Repl;
use crate::server::msg::ConnRef;
use crate::store::keyspace::GoneKey;

/// A transaction across pollers: its connection and its reply's id.
type TxnId = (ConnRef, u64);

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
    /// The transaction across pollers whose part this outbox handed over
    /// and which waits for other parts: nothing more goes until it is in
    /// the stream.
    joining: Option<TxnId>,
}

/// A part of a transaction across pollers: which, and how many parts it
/// has.
#[derive(Clone, Copy)]
pub(in crate::server) struct Part {
    pub txn: TxnId,
    pub index: usize,
    pub parts: usize,
}

/// The parts of a transaction across pollers handed over so far, and the
/// pollers that wait for it.
pub(super) struct Join {
    parts: usize,
    got: Vec<(usize, Vec<u8>)>,
    waiting: Vec<usize>,
}

/// A write or DEL waiting for its place in the stream.
struct Queued {
    /// Its place: `2 (s + 1)` for a write whose last record is `s`, `2 m`
    /// for a key that went at mark `m` (before the records from `m` on,
    /// after those before); it may go once this is at most `2 ×` the
    /// durable sequence number.
    order: u64,
    /// The record whose rollback drops it (a part's commands only: the
    /// part stays, empty).
    seq: u64,
    bytes: Vec<u8>,
    /// A part of a transaction across pollers: its commands, without
    /// `MULTI` and `EXEC`.
    part: Option<Part>,
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
            joining: None,
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
        self.enqueue(repl, 2 * (seq + 1), seq, bytes, None);
    }

    /// Part `part` of a transaction across pollers, its commands `bytes`
    /// (none when it wrote nothing, or failed), its last record `seq`
    /// (or the last record before it): it goes in even when it carries
    /// nothing, so that the other parts do not wait for it.
    pub(in crate::server) fn push_part(
        &mut self,
        repl: &Repl,
        seq: u64,
        part: Part,
        mut bytes: Vec<u8>,
    ) {
        if !repl.feeding() || repl.is_replica() {
            return;
        }
        if repl.flush_coming(self.poller) {
            bytes.clear();
        }
        self.enqueue(repl, 2 * (seq + 1), seq, bytes, Some(part));
    }

    /// Puts an entry in its place (after every entry not later).
    fn enqueue(&mut self, repl: &Repl, order: u64, seq: u64, bytes: Vec<u8>, part: Option<Part>) {
        let at = self.queue.partition_point(|q| q.order <= order);
        let q = Queued {
            order,
            seq,
            bytes,
            part,
        };
        self.queue.insert(at, q);
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
            self.enqueue(repl, 2 * g.mark, g.seq, bytes, None);
        }
        if !self.lost.is_empty() {
            let lost = std::mem::take(&mut self.lost);
            let before = self.queue.len();
            let rolled_back = |q: &Queued| lost.iter().any(|r| r.contains(&q.seq));
            for q in self.queue.iter_mut() {
                if q.part.is_some() && rolled_back(q) {
                    q.bytes.clear();
                }
            }
            self.queue.retain(|q| q.part.is_some() || !rolled_back(q));
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
        if repl.is_replica() {
            // Queued before it became one: its stream ended there.
            self.queue.drain(..n);
            self.joining = None;
            p.settled.fetch_add(n as u64, SeqCst);
            return;
        }
        let mut b = repl.backlog();
        if let Some(txn) = self.joining {
            if b.joins.contains_key(&txn) {
                return;
            }
            self.joining = None;
        }
        let (mut went, mut wake) = (0, Vec::new());
        while went < n {
            let q = self.queue.pop_front().expect("a ready write");
            went += 1;
            let Some(part) = q.part else {
                b.append(&q.bytes);
                continue;
            };
            let join = b.joins.entry(part.txn).or_insert_with(|| Join {
                parts: part.parts,
                got: Vec::new(),
                waiting: Vec::new(),
            });
            join.got.push((part.index, q.bytes));
            if join.got.len() < join.parts {
                join.waiting.push(self.poller);
                self.joining = Some(part.txn);
                break;
            }
            let mut join = b.joins.remove(&part.txn).expect("a transaction");
            join.got.sort_unstable_by_key(|(i, _)| *i);
            if join.got.iter().any(|(_, bytes)| !bytes.is_empty()) {
                let mut block = Vec::new();
                crate::resp::encode::command(&mut block, &[b"MULTI"]);
                for (_, bytes) in &join.got {
                    block.extend_from_slice(bytes);
                }
                crate::resp::encode::command(&mut block, &[b"EXEC"]);
                b.append(&block);
            }
            wake.extend(join.waiting);
        }
        drop(b);
        repl.grew.notify_all();
        p.settled.fetch_add(went as u64, SeqCst);
        // The outboxes that held back behind this transaction go on.
        if let Some(sh) = repl.server().filter(|_| !wake.is_empty()) {
            for w in wake {
                sh.pollers[w].ring();
            }
        }
    }

    /// This poller ran a flush: what waits here was wiped by it (the
    /// FLUSHALL is in the stream already).
    pub(in crate::server) fn wiped(&mut self, repl: &Repl) {
        // A part of a transaction across pollers stays, empty: the other
        // parts wait for it.
        let before = self.queue.len();
        self.queue.retain_mut(|q| {
            q.bytes.clear();
            q.part.is_some()
        });
        let n = (before - self.queue.len()) as u64;
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
    /// One more than the lowest last record of a part of a transaction
    /// across pollers committed here whose outcome is not known yet (an
    /// undo may still write it back); 0: none.
    pub undecided: std::sync::atomic::AtomicU64,
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
    /// durable or rolled back, and kept: no part of a transaction across
    /// pollers among them waits for its outcome (its undo counts as a
    /// rollback, [`Repl::undone`]).
    pub(super) fn settled(&self, marks: &[u64]) -> bool {
        (self.pollers.iter().zip(marks)).all(|(p, &m)| {
            p.durable_seq.load(Relaxed) >= m && p.undecided.load(SeqCst).wrapping_sub(1) >= m
        })
    }

    /// Poller `poller`'s parts of transactions across pollers whose
    /// outcome is not known: the lowest last record among them (`None`:
    /// none).
    pub(in crate::server) fn set_undecided(&self, poller: usize, lowest: Option<u64>) {
        let v = lowest.map_or(0, |s| s + 1);
        self.pollers[poller].undecided.store(v, SeqCst);
    }

    /// A part of a transaction across pollers, durable, is written back
    /// (undone): a full copy that read it is wrong, as one that read a
    /// write rolled back.
    pub(in crate::server) fn undone(&self) {
        self.rollbacks.fetch_add(1, SeqCst);
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
}
