//! The I/O poller: owns shards and one engine, and runs the batching loop.
//!
//! Each turn of the loop reaps completions, takes every request waiting on
//! the ring (up to the depth limit), serves reads (from the device, or from
//! the segment buffers for records not yet written), appends writes to the
//! shards' open segments, starts a group commit when one is due, and submits
//! the whole batch in one call: a lone request goes to the device at once,
//! and under load many requests share one submission. An idle poller polls
//! for a short while, then parks in the engine until a completion or its
//! eventfd wakes it. The write path (segments, commits, compaction,
//! expiry, eviction) is the store's [`Keyspace`]: the poller turns requests
//! into its reads and writes, and replies.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::float::LongDouble;
use super::msg::{ConnRef, GetExpiry, Op, Reply, Request, Response, SetReply};
use super::{PollMode, Shared};
use crate::format::{align_down, align_up, decode_record, Record};
use crate::index::Entry;
use crate::io::{open_engine, Completion, Device, Engine, Faulty};
use crate::resp;
use crate::store::clock::SystemClock;
use crate::store::keyspace::{self, CommitFailed, Keyspace, Tag, WriteError};
use crate::store::Shard;

/// Writes that may wait for compaction before the store answers OOM.
const MAX_DEFERRED: usize = 16 * 1024;
/// Longest a write waits for compaction before it is refused.
const MAX_DEFER: Duration = Duration::from_secs(2);

/// A reply owed once the commit that holds the write completes.
struct Waiter {
    to: ConnRef,
    id: u64,
    part: u32,
    reply: Reply,
}

/// A device read waiting for its completion.
struct PendingRead {
    req: Request,
    entry: Entry,
    /// Device offset where the aligned read starts.
    start: u64,
}

struct Poller<E: Engine> {
    id: usize,
    shared: Arc<Shared>,
    /// The keys this poller owns, their write path, and the engine.
    ks: Keyspace<E, Waiter>,
    reads: Vec<Option<PendingRead>>,
    free_tags: Vec<u32>,
    done: Vec<Completion>,
    /// Connection threads that got responses this turn.
    touched: Vec<bool>,
    /// Writers whose commits completed or failed.
    acks: Vec<(Waiter, Result<(), CommitFailed>)>,
    /// Requests taken from the ring this turn.
    batch: Vec<Request>,
    /// Keys with a read-modify-write in flight, and the requests for them
    /// that arrived meanwhile (served in order once it is done).
    busy: HashMap<u64, VecDeque<Request>>,
    /// Writes waiting for compaction to free a segment, oldest first.
    deferred: VecDeque<(Instant, Request)>,
    /// Requests that found no free read slot, retried next turn.
    requeued: Vec<Request>,
    /// `--io-feed waves`: the longest a read waits for the wave ahead, and
    /// since when reads have been waiting.
    wave_hold: Option<Duration>,
    held_since: Option<Instant>,
    /// When a read last logged that it got no buffer (ms since the epoch).
    no_buffer_logged_ms: u64,
}

/// What the pollers take over from the opened store.
pub(super) struct PollerInputs {
    pub shards: Vec<Shard>,
    pub dev: Device,
    pub next_seq: u64,
    pub lock: crate::store::DirLock,
}

/// Starts one poller thread per `--io-threads`, giving each its shards.
pub(super) fn spawn_all(
    shared: &Arc<Shared>,
    store: PollerInputs,
    core: &dyn Fn(usize) -> Option<core_affinity::CoreId>,
) -> Result<Vec<JoinHandle<Result<()>>>> {
    let m = shared.pollers.len();
    let mut owned: Vec<Vec<Option<Shard>>> = (0..m)
        .map(|_| (0..shared.sb.shards).map(|_| None).collect())
        .collect();
    for s in store.shards {
        let p = s.id as usize % m;
        let id = s.id as usize;
        owned[p][id] = Some(s);
    }
    let dev = Arc::new(store.dev);
    let next_seq = store.next_seq;
    // The directory lock stays held while any poller runs.
    let lock = Arc::new(store.lock);
    // Each poller reports whether its engine opened: a server whose poller
    // could not reach the device must not start listening.
    let (opened_tx, opened) = std::sync::mpsc::channel::<Result<(), String>>();
    let handles = owned
        .into_iter()
        .enumerate()
        .map(|(id, shards)| {
            let shared = Arc::clone(shared);
            let dev = Arc::clone(&dev);
            let pin = core(id);
            let lock = Arc::clone(&lock);
            let opened = opened_tx.clone();
            std::thread::Builder::new()
                .name(format!("poller-{id}"))
                .spawn(move || {
                    let _lock = lock;
                    if let Some(c) = pin {
                        core_affinity::set_for_current(c);
                    }
                    run(id, shared, &dev, shards, next_seq, opened)
                })
                .context("spawning a poller")
        })
        .collect::<Result<Vec<_>>>()?;
    drop(opened_tx);
    for _ in 0..m {
        match opened.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.pollers_stop.store(true, Relaxed);
                for h in handles {
                    let _ = h.join();
                }
                anyhow::bail!("{e}");
            }
            Err(_) => anyhow::bail!("a poller exited before opening its engine"),
        }
    }
    Ok(handles)
}

fn run(
    id: usize,
    shared: Arc<Shared>,
    dev: &Device,
    shards: Vec<Option<Shard>>,
    next_seq: u64,
    opened: std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<()> {
    let depth = shared.cfg.pollers.max_io_depth;
    let kind = shared.cfg.pollers.engine;
    let eng = match open_engine(kind, dev, depth, &shared.pollers[id].bell) {
        Ok(e) => {
            let _ = opened.send(Ok(()));
            e
        }
        Err(e) => {
            let msg = format!("poller {id}: opening the {kind:?} engine: {e}");
            let _ = opened.send(Err(msg.clone()));
            anyhow::bail!(msg);
        }
    };
    match shared.cfg.pollers.inject_faults.clone() {
        Some(spec) => run_with(id, shared, Faulty::new(eng, spec), shards, next_seq),
        None => run_with(id, shared, eng, shards, next_seq),
    }
}

fn run_with<E: Engine>(
    id: usize,
    shared: Arc<Shared>,
    eng: E,
    shards: Vec<Option<Shard>>,
    next_seq: u64,
) -> Result<()> {
    let depth = shared.cfg.pollers.max_io_depth;
    // Reads may not take the slots the log needs for a commit.
    let read_slots = depth
        .saturating_sub(Keyspace::<E, Waiter>::reserved_slots(shared.sb.shards))
        .max(1);
    let cfg = shared.cfg.write.clone();
    let common = keyspace::Common {
        sb: shared.sb.clone(),
        space: Arc::clone(&shared.space),
        eviction: Arc::clone(&shared.eviction),
    };
    let counters = Arc::clone(&shared.poller_stats[id].store);
    let clock = Arc::new(SystemClock);
    let ks = Keyspace::new(id, eng, &common, shards, next_seq, cfg, clock, counters);
    let wave_hold = shared.cfg.pollers.wave_hold;
    let mut p = Poller {
        id,
        ks,
        touched: vec![false; shared.conns.len()],
        shared,
        reads: (0..read_slots).map(|_| None).collect(),
        free_tags: (0..read_slots as u32).rev().collect(),
        done: Vec::with_capacity(depth),
        acks: Vec::new(),
        batch: Vec::with_capacity(depth),
        busy: HashMap::new(),
        deferred: VecDeque::new(),
        requeued: Vec::new(),
        wave_hold,
        held_since: None,
        no_buffer_logged_ms: 0,
    };
    p.stats().cpu.set_current();
    p.run_loop();
    p.shutdown()
}

impl<E: Engine> Poller<E> {
    fn stats(&self) -> &super::stats::PollerStats {
        &self.shared.poller_stats[self.id]
    }

    fn run_loop(&mut self) {
        let spin = self.shared.cfg.pollers.spin;
        let loaded_spin = self.shared.cfg.pollers.loaded_spin;
        let busy = self.shared.cfg.pollers.poll == PollMode::Busy;
        let mut idle_since: Option<Instant> = None;
        let mut contended = false;
        loop {
            if self.turn() {
                idle_since = None;
                contended = false;
                continue;
            }
            if self.shared.pollers_stop.load(Relaxed)
                && self.ks.engine_ref().in_flight() == 0
                && self.ks.idle()
            {
                return;
            }
            if busy {
                std::hint::spin_loop();
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            // With reads in flight a completion is due soon: keep polling
            // rather than pay a wake-up for it (waking a sleeping thread on
            // an idle CPU costs tens of microseconds on a virtual machine,
            // several times per request). Not for the log's writes and
            // flushes: a commit takes a millisecond or more, and the
            // kernel's workers that run it need the CPU meanwhile. Nor when
            // other threads want this CPU: then sleeping is cheaper than
            // the time polling takes from them.
            let reads_in_flight = self.free_tags.len() < self.reads.len();
            let limit = if reads_in_flight && !contended {
                loaded_spin
            } else {
                spin
            };
            if since.elapsed() >= limit {
                self.park();
                idle_since = None;
                contended = false;
            } else {
                // Polling politely: on a machine with fewer cores than busy
                // threads the connection threads need the CPU meanwhile.
                contended |= super::polite_yield();
            }
        }
    }

    /// One turn of the loop; returns whether anything happened.
    fn turn(&mut self) -> bool {
        self.ks.tick();
        if self.shared.pollers_stop.load(Relaxed) {
            self.ks.stop();
        }
        self.ks.engine().reap(&mut self.done);
        let completed = self.done.len();
        if completed > 0 && self.held_since.is_some() {
            // A wave came back, and the device waits for reads: those held
            // for it go out before its replies are built.
            self.submit();
        }
        let mut done = std::mem::take(&mut self.done);
        for c in done.drain(..) {
            match Tag::decode(c.tag) {
                Some(Tag::Read(slot)) => self.complete_read(slot, c),
                _ => self.ks.complete(c),
            }
        }
        self.done = done;
        self.answer_writers();

        let retried = self.retry_requeued();
        let mut batch = std::mem::take(&mut self.batch);
        let inbox = &self.shared.pollers[self.id].inbox;
        while batch.len() < self.free_tags.len() {
            let Some(req) = inbox.pop() else { break };
            batch.push(req);
        }
        let taken = batch.len();
        for req in batch.drain(..) {
            self.handle(req);
        }
        self.batch = batch;
        self.ks
            .set_waiting(self.deferred.front().map(|&(since, _)| since));
        let log_work = self.ks.reclaim() | self.retry_deferred() | self.ks.commit();
        let expired = self.ks.expire();
        self.answer_writers();
        let sent = if self.hold_for_wave(completed) {
            0
        } else {
            self.submit()
        };
        self.notify_conns();
        let st = self.stats();
        st.loops.fetch_add(1, Relaxed);
        st.in_flight
            .store(self.ks.engine_ref().in_flight() as u64, Relaxed);
        completed > 0 || taken > 0 || sent > 0 || log_work || retried || expired
    }

    /// Sends what is queued to the device (see `--io-feed`), and counts
    /// the submissions, wherever in the turn they happen: one per call that
    /// sent anything, so a wave fed one operation per call counts one
    /// submission per operation.
    fn submit(&mut self) -> usize {
        self.held_since = None;
        // While the log writes, a poller feeds as `stream` does: its
        // commits go out in one submission.
        let each = self.wave_hold.is_some() && self.ks.idle();
        let sent = if each {
            self.ks.engine().submit_each()
        } else {
            self.ks.engine().submit()
        };
        let sent = sent.unwrap_or_else(|e| {
            tracing::error!(poller = self.id, "submit failed: {e}");
            0
        });
        if sent > 0 {
            let (calls, batch) = if each { (sent, 1) } else { (1, sent) };
            let st = self.stats();
            st.submits.fetch_add(calls as u64, Relaxed);
            st.submitted.fetch_add(sent as u64, Relaxed);
            st.max_batch.fetch_max(batch as u64, Relaxed);
        }
        sent
    }

    /// `--io-feed waves`: whether what is queued waits for the wave of
    /// reads at the device. A device that answers batches at a time sits
    /// idle from the moment a wave completes until the next reads reach
    /// it, and reads that join a wave in flight are answered only with it
    /// (docs/design.md). So new reads wait, and go out the moment the wave
    /// completes (at the top of the next turn), at most `--wave-hold-us`.
    /// Never while the log writes (its commits must not wait), nor when
    /// nothing is at the device: a lone request goes out at once.
    fn hold_for_wave(&mut self, completed: usize) -> bool {
        let Some(limit) = self.wave_hold else {
            return false;
        };
        let eng = self.ks.engine_ref();
        let queued = eng.queued();
        let at_device = eng.in_flight().saturating_sub(queued);
        if queued == 0 || completed > 0 || at_device == 0 || !self.ks.idle() {
            return false;
        }
        let since = *self.held_since.get_or_insert_with(Instant::now);
        since.elapsed() < limit
    }

    /// Sleeps until a completion or a doorbell (bounded, to see shutdown
    /// and commit deadlines).
    fn park(&mut self) {
        let handle = &self.shared.pollers[self.id];
        handle.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if handle.inbox.is_empty() && !self.shared.pollers_stop.load(Relaxed) {
            self.stats().parks.fetch_add(1, Relaxed);
            let timeout = self.ks.park_timeout().unwrap_or(Duration::from_millis(100));
            self.ks.engine().wait(timeout);
        }
        handle.sleeping.store(false, Ordering::SeqCst);
        handle.bell.drain();
    }

    pub(super) fn reply(&mut self, req: &Request, reply: Reply) {
        self.respond(req.from, req.id, req.part, reply);
    }

    /// Serves one request, after those before it for the same key.
    fn handle(&mut self, req: Request) {
        if matches!(req.op, Op::MsetNx { .. }) {
            return self.msetnx_when_free(req);
        }
        if let Some(waiting) = self.busy.get_mut(&req.hash.tag) {
            waiting.push_back(req);
            return;
        }
        self.handle_now(req);
    }

    /// Serves one request now.
    pub(super) fn handle_now(&mut self, req: Request) {
        let hit = self.ks.lookup(req.pid, &req.hash);
        let read = matches!(
            req.op,
            Op::Get { .. } | Op::GetRange { .. } | Op::Strlen { .. } | Op::GetEx { .. }
        );
        if hit.is_some() && read {
            self.ks.touch(req.pid, &req.hash);
        }
        match (&req.op, hit) {
            (Op::Exists, hit) => self.reply(&req, Reply::Int(hit.is_some() as i64)),
            // SET … GET needs the old value: read it first.
            (
                Op::Set {
                    reply: SetReply::Old,
                    ..
                },
                Some(entry),
            ) => self.fetch(req, entry),
            (Op::Set { .. }, _) => self.set(req, hit, None),
            (Op::IncrBy { .. }, None) => self.incr(req, None),
            (Op::IncrBy { .. }, Some(entry)) => self.fetch(req, entry),
            (Op::GetDel { .. }, None) => {
                self.stats().misses.fetch_add(1, Relaxed);
                self.reply(&req, Reply::Nil)
            }
            (Op::GetDel { .. }, Some(entry)) => self.fetch(req, entry),
            (Op::Del { .. }, None) => self.reply(&req, Reply::Int(0)),
            (Op::Del { .. }, Some(_)) => self.delete(req, Reply::Int(1)),
            (Op::Get { .. }, None) => {
                self.stats().misses.fetch_add(1, Relaxed);
                self.reply(&req, Reply::Nil)
            }
            (Op::Ttl { .. }, None) => self.reply(&req, Reply::Int(-2)),
            (Op::Expire { .. }, None) => self.reply(&req, Reply::Int(0)),
            (Op::Get { .. } | Op::Ttl { .. } | Op::Expire { .. }, Some(entry)) => {
                self.fetch(req, entry)
            }
            (Op::MsetNx { .. }, _) => self.msetnx(req),
            (_, None) => self.strings(req, None),
            (_, Some(entry)) => self.fetch(req, entry),
        }
    }

    /// Gets the record of `entry` for `req`: from a segment buffer at once,
    /// or with one device read.
    fn fetch(&mut self, req: Request, entry: Entry) {
        if let Some(bytes) = self.ks.buffered(entry) {
            let bytes = bytes.to_vec();
            return self.finish_fetch(req, entry, Ok(&bytes));
        }
        let Some(tag) = self.free_tags.pop() else {
            return self.requeue(req);
        };
        let block = self.ks.block();
        let start = align_down(entry.offset, block);
        let end = align_up(entry.offset + entry.len as u64, block);
        let eng = self.ks.engine();
        let buf = match eng.alloc((end - start) as usize) {
            Ok(buf) => buf,
            Err(e) => {
                self.free_tags.push(tag);
                return self.no_buffer(req, e);
            }
        };
        match eng.read(start, buf, Tag::Read(tag).encode()) {
            Ok(()) => {
                self.ks.count_read(end - start);
                if req.op.reads_then_writes() {
                    self.busy.entry(req.hash.tag).or_default();
                }
                self.reads[tag as usize] = Some(PendingRead { req, entry, start });
            }
            Err(_buf) => {
                self.free_tags.push(tag);
                self.requeue(req);
            }
        }
    }

    /// A read that found no memory for its buffer (SPDK's DMA memory ran
    /// out) is an error reply; the next may find some.
    fn no_buffer(&mut self, req: Request, e: std::io::Error) {
        self.ks.counters().io_errors.fetch_add(1, Relaxed);
        let now = self.ks.now_ms();
        if now.saturating_sub(self.no_buffer_logged_ms) >= 1000 {
            self.no_buffer_logged_ms = now;
            tracing::warn!(poller = self.id, "a read got no I/O buffer: {e}");
        }
        self.reply(&req, Reply::Error(super::strings::NO_IO_BUFFER.into()));
    }

    /// Puts a request that found no read slot aside for the next turn; the
    /// requests behind it for the same key wait for it.
    fn requeue(&mut self, req: Request) {
        self.busy.entry(req.hash.tag).or_default();
        self.requeued.push(req);
    }

    /// Serves the requests put aside last turn, in order.
    fn retry_requeued(&mut self) -> bool {
        let reqs = std::mem::take(&mut self.requeued);
        let any = !reqs.is_empty();
        for req in reqs {
            let tag = req.hash.tag;
            let waiting = self.busy.remove(&tag).unwrap_or_default();
            self.handle_now(req);
            match self.busy.get_mut(&tag) {
                Some(q) => q.extend(waiting),
                None if waiting.is_empty() => {}
                None => {
                    self.busy.insert(tag, waiting);
                    self.release(tag);
                }
            }
        }
        any
    }

    fn complete_read(&mut self, tag: u32, c: Completion) {
        let Some(r) = self.reads[tag as usize].take() else {
            tracing::error!(poller = self.id, tag, "completion for an unknown read");
            return;
        };
        self.free_tags.push(tag);
        let buf = c.buf.expect("a read returns its buffer");
        let result = match c.result {
            Ok(n) if n == buf.len() => {
                let at = (r.entry.offset - r.start) as usize;
                Ok(&buf[at..at + r.entry.len as usize])
            }
            Ok(n) => Err(format!(
                "ERR I/O error: short read of {n} of {} bytes at offset {}",
                buf.len(),
                r.start
            )),
            Err(e) => Err(format!("ERR I/O error reading offset {}: {e}", r.start)),
        };
        if result.is_err() {
            self.ks.counters().io_errors.fetch_add(1, Relaxed);
        }
        let tag = r.req.hash.tag;
        let was_rmw = r.req.op.reads_then_writes();
        self.finish_fetch(r.req, r.entry, result);
        drop(buf); // back to the engine's pool
        if was_rmw {
            self.release(tag);
        }
    }

    /// Serves the requests that waited for a read-modify-write of `tag`.
    pub(super) fn release(&mut self, tag: u64) {
        let Some(mut waiting) = self.busy.remove(&tag) else {
            return;
        };
        while let Some(req) = waiting.pop_front() {
            self.handle(req);
            if let Some(q) = self.busy.get_mut(&tag) {
                // Another read-modify-write started: the rest waits for it.
                q.extend(waiting.drain(..));
                return;
            }
        }
    }

    /// Finishes a request once its record's bytes are at hand.
    fn finish_fetch(&mut self, req: Request, entry: Entry, bytes: Result<&[u8], String>) {
        let bytes = match bytes {
            Ok(b) => b,
            Err(msg) => return self.reply(&req, Reply::Error(msg)),
        };
        let rec = match decode_record(&self.shared.sb.uuid, bytes) {
            Ok(rec) if Some(rec.key) == req.op.key() => rec,
            Ok(_) => return self.corrupt(&req, entry, &"key does not match the index"),
            Err(e) => return self.corrupt(&req, entry, &e),
        };
        if rec.is_tombstone() || rec.expired(self.ks.now_ms()) {
            if matches!(req.op, Op::Set { .. }) {
                return self.set(req, None, None);
            }
            if matches!(req.op, Op::IncrBy { .. }) {
                return self.incr(req, None);
            }
            if is_strings_op(&req.op) {
                return self.strings(req, None);
            }
            self.stats().misses.fetch_add(1, Relaxed);
            let reply = match req.op {
                Op::Get { .. } => Reply::Nil,
                Op::Ttl { .. } => Reply::Int(-2),
                _ => Reply::Int(0),
            };
            return self.reply(&req, reply);
        }
        match req.op {
            Op::Get { .. } => {
                let st = self.stats();
                st.reads.fetch_add(1, Relaxed);
                st.hits.fetch_add(1, Relaxed);
                let mut out = Vec::with_capacity(rec.value.len() + 16);
                resp::bulk(&mut out, rec.value);
                self.reply(&req, Reply::Encoded(out))
            }
            Op::Ttl { ms, .. } => {
                let reply = match rec.meta.expire_ms {
                    0 => -1,
                    at => {
                        let left = at.saturating_sub(self.ks.now_ms()) as i64;
                        if ms {
                            left
                        } else {
                            (left + 500) / 1000
                        }
                    }
                };
                self.reply(&req, Reply::Int(reply))
            }
            Op::Expire { at_ms, persist, .. } => self.expire(req, &rec, at_ms, persist),
            Op::Set { .. } => {
                let old = rec.value.to_vec();
                self.set(req, Some(entry), Some(old))
            }
            Op::IncrBy { .. } => {
                let old = (rec.value.to_vec(), rec.meta.expire_ms);
                self.incr(req, Some(old))
            }
            Op::GetDel { .. } => {
                let st = self.stats();
                st.reads.fetch_add(1, Relaxed);
                st.hits.fetch_add(1, Relaxed);
                let mut out = Vec::with_capacity(rec.value.len() + 16);
                resp::bulk(&mut out, rec.value);
                self.delete(req, Reply::Encoded(out))
            }
            Op::Del { .. } | Op::Exists | Op::MsetNx { .. } => unreachable!("not fetched"),
            _ => self.strings(req, Some((rec.value, rec.meta.expire_ms))),
        }
    }

    fn corrupt(&mut self, req: &Request, entry: Entry, what: &dyn std::fmt::Display) {
        self.stats().corrupt_records.fetch_add(1, Relaxed);
        tracing::error!(offset = entry.offset, "corrupted record: {what}");
        let msg = format!("ERR corrupted record at offset {}: {what}", entry.offset);
        self.reply(req, Reply::Error(msg));
    }

    /// SET: checks NX / XX, then appends the new version. `live` is the
    /// key's entry; `old` its value, when the reply needs it (SET … GET).
    fn set(&mut self, req: Request, live: Option<Entry>, old: Option<Vec<u8>>) {
        let Op::Set {
            key,
            value,
            expire_ms,
            keep_ttl,
            cond,
            reply,
        } = &req.op
        else {
            unreachable!()
        };
        let skip = match cond {
            super::msg::Cond::Always => false,
            super::msg::Cond::Nx => live.is_some(),
            super::msg::Cond::Xx => live.is_none(),
        };
        let old_reply = || match &old {
            Some(v) => {
                let mut out = Vec::with_capacity(v.len() + 16);
                resp::bulk(&mut out, v);
                Reply::Encoded(out)
            }
            None => Reply::Nil,
        };
        let (done, skipped) = match reply {
            SetReply::Ok => (Reply::Encoded(b"+OK\r\n".to_vec()), Reply::Nil),
            SetReply::Int => (Reply::Int(1), Reply::Int(0)),
            SetReply::Old => (old_reply(), old_reply()),
        };
        if skip {
            return self.reply(&req, skipped);
        }
        if self.refused_over_maxmemory(&req) {
            return;
        }
        let expire = match (keep_ttl, live) {
            (true, Some(e)) => e.expire_ms,
            (true, None) => 0,
            (false, _) => *expire_ms,
        };
        let result = self.ks.write(req.pid, &req.hash, key, value, expire, false);
        self.acknowledge(req, result, done);
    }

    /// INCR and its kin: `old` is the key's value and expiry, `None` when it
    /// is missing (it counts as 0). Redis's errors for a value that is not
    /// an integer and for an overflow; the TTL stays.
    fn incr(&mut self, req: Request, old: Option<(Vec<u8>, u64)>) {
        let Op::IncrBy { key, by } = &req.op else {
            unreachable!()
        };
        let (now, expire) = match &old {
            None => (0, 0),
            Some((v, exp)) => match resp::parse_redis_int(v) {
                Some(n) => (n, *exp),
                None => {
                    let msg = super::strings::NOT_AN_INTEGER;
                    return self.reply(&req, Reply::Error(msg.into()));
                }
            },
        };
        let Some(new) = now.checked_add(*by) else {
            let msg = super::strings::INCR_OVERFLOW;
            return self.reply(&req, Reply::Error(msg.into()));
        };
        if self.refused_over_maxmemory(&req) {
            return;
        }
        let (key, value) = (key.clone(), new.to_string().into_bytes());
        let result = self
            .ks
            .write(req.pid, &req.hash, &key, &value, expire, false);
        self.acknowledge(req, result, Reply::Int(new));
    }

    /// Appends a tombstone for the key of `req`, replying `ok` once durable.
    fn delete(&mut self, req: Request, ok: Reply) {
        let key = req.op.key().expect("keyed op").to_vec();
        let result = self.ks.write(req.pid, &req.hash, &key, &[], 0, true);
        self.acknowledge(req, result, ok);
    }

    /// EXPIRE / PEXPIRE / PERSIST on a live record: rewrites it with the new
    /// expiry, or deletes it when the expiry is not in the future.
    fn expire(&mut self, req: Request, rec: &Record<'_>, at_ms: u64, persist: bool) {
        if persist && rec.meta.expire_ms == 0 {
            return self.reply(&req, Reply::Int(0));
        }
        if let Op::Expire { cond, .. } = &req.op {
            // Redis's order; no expiry counts as an infinite one.
            let cur = rec.meta.expire_ms;
            let refused = (cond.nx && cur != 0)
                || (cond.xx && cur == 0)
                || (cond.gt && (cur == 0 || at_ms <= cur))
                || (cond.lt && cur != 0 && at_ms >= cur);
            if refused {
                return self.reply(&req, Reply::Int(0));
            }
        }
        let (key, value) = (rec.key.to_vec(), rec.value.to_vec());
        let result = if !persist && at_ms <= self.ks.now_ms() {
            self.ks.write(req.pid, &req.hash, &key, &[], 0, true)
        } else {
            let at = if persist { 0 } else { at_ms };
            self.ks.write(req.pid, &req.hash, &key, &value, at, false)
        };
        self.acknowledge(req, result, Reply::Int(1));
    }

    /// Replies to a write: at once when it failed or needs no commit,
    /// after its commit otherwise. A write that found no free segment
    /// while compaction or eviction can still make room waits for it.
    fn acknowledge(&mut self, req: Request, result: Result<(), WriteError>, ok: Reply) {
        if matches!(result, Err(WriteError::Full))
            && self.ks.may_make_room()
            && self.deferred.len() < MAX_DEFERRED
        {
            self.stats().writes_deferred.fetch_add(1, Relaxed);
            self.busy.entry(req.hash.tag).or_default();
            self.deferred.push_back((self.ks.now(), req));
            return;
        }
        let reply = match result {
            Ok(()) => {
                let w = Waiter {
                    to: req.from,
                    id: req.id,
                    part: req.part,
                    reply: ok,
                };
                match self.ks.acknowledge(w) {
                    Some(w) => w.reply,
                    None => return,
                }
            }
            Err(e) => self.refusal(e),
        };
        self.reply(&req, reply);
    }

    /// The reply to a write the keyspace refused.
    fn refusal(&self, e: WriteError) -> Reply {
        match e {
            WriteError::Full => {
                self.stats().writes_refused.fetch_add(1, Relaxed);
                Reply::Error(super::strings::STORE_FULL.into())
            }
            WriteError::TooLarge => Reply::Error(super::strings::RECORD_TOO_LARGE.into()),
            e @ WriteError::Index(_) => Reply::Error(format!("ERR {e}")),
        }
    }

    /// Replies to the writers whose commits completed or failed.
    fn answer_writers(&mut self) {
        self.ks.take_acks(&mut self.acks);
        let mut acks = std::mem::take(&mut self.acks);
        for (w, result) in acks.drain(..) {
            let reply = match result {
                Ok(()) => w.reply,
                Err(e) => Reply::Error(format!("ERR I/O error, {e}")),
            };
            self.respond(w.to, w.id, w.part, reply);
        }
        self.acks = acks;
    }

    /// Redis's refusal of a command that adds data past `--maxmemory`
    /// when nothing can be evicted for it; whether it refused.
    fn refused_over_maxmemory(&mut self, req: &Request) -> bool {
        if !self.ks.refuses_over_maxmemory() {
            return false;
        }
        self.stats().writes_refused.fetch_add(1, Relaxed);
        self.reply(req, Reply::Error(super::strings::OVER_MAXMEMORY.into()));
        true
    }

    /// Retries deferred writes once there is room again; a write that
    /// waited too long is refused (compaction cannot keep up).
    fn retry_deferred(&mut self) -> bool {
        let mut any = false;
        let now = self.ks.now();
        while self
            .deferred
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > MAX_DEFER)
        {
            let (_, req) = self.deferred.pop_front().expect("front");
            let tag = req.hash.tag;
            self.stats().writes_refused.fetch_add(1, Relaxed);
            self.reply(&req, Reply::Error(super::strings::COMPACTION_BEHIND.into()));
            self.release(tag);
            any = true;
        }
        while self.ks.room_for_writes() {
            let Some((_, req)) = self.deferred.pop_front() else {
                break;
            };
            let tag = req.hash.tag;
            let before = self.deferred.len();
            self.handle_now(req);
            any = true;
            if self.deferred.len() > before {
                break; // deferred again
            }
            self.release(tag);
        }
        any
    }

    pub(super) fn respond(&mut self, to: super::msg::ConnRef, id: u64, part: u32, reply: Reply) {
        self.shared.conns[to.thread as usize]
            .responses
            .push(Response {
                to,
                id,
                part,
                reply,
            });
        self.touched[to.thread as usize] = true;
    }

    fn notify_conns(&mut self) {
        for (t, touched) in self.touched.iter_mut().enumerate() {
            if std::mem::take(touched) {
                self.shared.conns[t].ring();
            }
        }
    }

    // Strings and TTLs.

    /// The commands that read a value and may rewrite it: `cur` is the
    /// key's value and expiry, `None` when it is missing.
    fn strings(&mut self, req: Request, cur: Option<(&[u8], u64)>) {
        use super::strings as text;
        let read = matches!(
            req.op,
            Op::GetRange { .. } | Op::Strlen { .. } | Op::GetEx { .. }
        );
        if read {
            let st = self.stats();
            match cur {
                Some(_) => st.hits.fetch_add(1, Relaxed),
                None => st.misses.fetch_add(1, Relaxed),
            };
        }
        let bulk = |v: &[u8]| {
            let mut out = Vec::with_capacity(v.len() + 16);
            resp::bulk(&mut out, v);
            Reply::Encoded(out)
        };
        let max_value = self.shared.cfg.conns.max_value_size;
        // The new value, its expiry, and the reply once it is written.
        let (value, expire, ok) = match (&req.op, cur) {
            (Op::Strlen { .. }, cur) => {
                let len = cur.map_or(0, |(v, _)| v.len());
                return self.reply(&req, Reply::Int(len as i64));
            }
            (Op::GetRange { start, end, .. }, cur) => {
                let v = cur.map_or(&[][..], |(v, _)| v);
                return self.reply(&req, bulk(range(v, *start, *end)));
            }
            (Op::ExpireTime { ms, .. }, cur) => {
                let reply = match cur {
                    None => -2,
                    Some((_, 0)) => -1,
                    Some((_, at)) if *ms => at as i64,
                    // Redis's rounding (unsigned, as its build computes it:
                    // no wrap at the top).
                    Some((_, at)) => (at.saturating_add(500) / 1000) as i64,
                };
                return self.reply(&req, Reply::Int(reply));
            }
            (Op::GetEx { .. }, None) => return self.reply(&req, Reply::Nil),
            (Op::GetEx { expiry, .. }, Some((v, exp))) => match expiry {
                GetExpiry::Keep => return self.reply(&req, bulk(v)),
                GetExpiry::Invalid(msg) => {
                    let msg = msg.clone();
                    return self.reply(&req, Reply::Error(msg));
                }
                GetExpiry::Persist if exp == 0 => return self.reply(&req, bulk(v)),
                GetExpiry::Persist => (v.to_vec(), 0, bulk(v)),
                &GetExpiry::At(at) if at <= self.ks.now_ms() => {
                    let reply = bulk(v);
                    return self.delete(req, reply);
                }
                &GetExpiry::At(at) => (v.to_vec(), at, bulk(v)),
            },
            (Op::Append { value, .. }, cur) => {
                let (old, exp) = cur.unwrap_or((&[], 0));
                let len = old.len() + value.len();
                if len as u64 > max_value {
                    let msg = text::value_too_large(len, max_value);
                    return self.reply(&req, Reply::Error(msg));
                }
                let new = [old, value].concat();
                (new, exp, Reply::Int(len as i64))
            }
            (Op::SetRange { offset, value, .. }, cur) => {
                let (old, exp) = cur.unwrap_or((&[], 0));
                if value.is_empty() {
                    // Nothing to write: a missing key stays missing.
                    return self.reply(&req, Reply::Int(old.len() as i64));
                }
                let at = *offset as usize;
                let mut new = old.to_vec();
                new.resize(new.len().max(at + value.len()), 0);
                new[at..at + value.len()].copy_from_slice(value);
                let len = new.len() as i64;
                (new, exp, Reply::Int(len))
            }
            (Op::IncrByFloat { by, .. }, cur) => {
                let (old, exp) = match cur {
                    None => (Some(LongDouble::from_i64(0)), 0),
                    Some((v, exp)) => (LongDouble::parse(v), exp),
                };
                let (Some(old), Some(by)) = (old, LongDouble::parse(by)) else {
                    return self.reply(&req, Reply::Error(text::NOT_A_FLOAT.into()));
                };
                let sum = old.add(by).filter(LongDouble::is_finite);
                let Some(sum) = sum else {
                    return self.reply(&req, Reply::Error(text::FLOAT_NAN_OR_INF.into()));
                };
                let new = sum.to_redis_string().into_bytes();
                let reply = bulk(&new);
                (new, exp, reply)
            }
            _ => unreachable!("not a strings op: {:?}", req.op),
        };
        // GETEX only changes an expiry: no new data for maxmemory.
        if !matches!(req.op, Op::GetEx { .. }) && self.refused_over_maxmemory(&req) {
            return;
        }
        let key = req.op.key().expect("keyed op").to_vec();
        let result = self
            .ks
            .write(req.pid, &req.hash, &key, &value, expire, false);
        self.acknowledge(req, result, ok);
    }

    /// MSETNX: waits until none of its keys has a read-modify-write in
    /// flight, holding back the requests for its other keys meanwhile (so
    /// that a request sent after it never runs before it), then runs.
    fn msetnx_when_free(&mut self, mut req: Request) {
        let Op::MsetNx { pairs, claimed } = &mut req.op else {
            unreachable!()
        };
        let blocked = (pairs.iter().map(|p| p.hash.tag))
            .find(|t| self.busy.contains_key(t) && !claimed.contains(t));
        let Some(blocked) = blocked else {
            let claimed = std::mem::take(claimed);
            self.handle_now(req);
            for tag in claimed {
                self.release(tag);
            }
            return;
        };
        for p in pairs.iter() {
            let tag = p.hash.tag;
            if let std::collections::hash_map::Entry::Vacant(e) = self.busy.entry(tag) {
                e.insert(VecDeque::new());
                claimed.push(tag);
            }
        }
        self.busy
            .get_mut(&blocked)
            .expect("busy key")
            .push_back(req);
    }

    /// MSETNX once its keys are free: all set in this turn (one commit
    /// carries them) or none, when any exists. A write the store refuses
    /// is answered at once rather than deferred, and may leave the keys
    /// before it set.
    fn msetnx(&mut self, req: Request) {
        let Op::MsetNx { pairs, .. } = &req.op else {
            unreachable!()
        };
        if pairs
            .iter()
            .any(|p| self.ks.lookup(p.pid, &p.hash).is_some())
        {
            return self.reply(&req, Reply::Int(0));
        }
        if self.refused_over_maxmemory(&req) {
            return;
        }
        for p in pairs {
            if let Err(e) = self.ks.write(p.pid, &p.hash, &p.key, &p.value, 0, false) {
                let reply = self.refusal(e);
                return self.reply(&req, reply);
            }
        }
        self.acknowledge(req, Ok(()), Reply::Int(1));
    }

    /// Finishes in-flight I/O, commits every write and erases the emptied
    /// segments, then flushes the index and marks it clean.
    fn shutdown(mut self) -> Result<()> {
        if !self.deferred.is_empty() {
            // Their clients are gone; nothing was written or acknowledged.
            tracing::warn!(
                poller = self.id,
                writes = self.deferred.len(),
                "dropping writes still waiting for space"
            );
            self.deferred.clear();
        }
        self.ks.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (self.ks.engine_ref().in_flight() > 0 || !self.ks.settled())
            && Instant::now() < deadline
        {
            if !self.turn() {
                self.ks.engine().wait(Duration::from_millis(10));
            }
        }
        if !self.ks.settled() {
            anyhow::bail!(
                "poller {}: the log did not finish committing; the index stays dirty",
                self.id
            );
        }
        self.ks.mark_clean().context("marking the index clean")
    }
}

/// The operations [`Poller::strings`] serves.
fn is_strings_op(op: &Op) -> bool {
    matches!(
        op,
        Op::IncrByFloat { .. }
            | Op::Append { .. }
            | Op::Strlen { .. }
            | Op::GetRange { .. }
            | Op::SetRange { .. }
            | Op::GetEx { .. }
            | Op::ExpireTime { .. }
    )
}

/// GETRANGE's bytes of `v`, from `start` to `end` included: negative
/// indexes count from the end, and the range is clamped to the value, as
/// Redis 7.0 does.
fn range(v: &[u8], start: i64, end: i64) -> &[u8] {
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    let start = if start < 0 { len + start } else { start }.max(0);
    let end = if end < 0 { len + end } else { end }.max(0).min(len - 1);
    if start > end || len == 0 {
        return &[];
    }
    &v[start as usize..=end as usize]
}
