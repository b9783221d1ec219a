//! The I/O poller: owns shards and one engine, and runs the batching loop.
//!
//! Each turn of the loop reaps completions, takes every request waiting on
//! the ring (up to the depth limit), queues their device reads, and submits
//! the whole batch in one call: a lone request goes to the device at once,
//! and under load many requests share one submission. An idle poller spins
//! briefly, then parks in the engine until a completion or its eventfd
//! wakes it.

use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::msg::{ConnRef, Op, Reply, Request, Response};
use super::{resp, PollMode, Shared};
use crate::format::{align_down, align_up, decode_record};
use crate::index::Entry;
use crate::io::{open_engine, Completion, Device, Engine, IoBuf};
use crate::store::{Lookup, Shard, Store};

/// A device read waiting for its completion.
struct PendingRead {
    to: ConnRef,
    id: u64,
    part: u32,
    key: Box<[u8]>,
    entry: Entry,
    /// Device offset where the aligned read starts.
    start: u64,
}

struct Poller<E: Engine> {
    id: usize,
    eng: E,
    shared: Arc<Shared>,
    /// Indexed by shard id; `Some` for the shards this poller owns.
    shards: Vec<Option<Shard>>,
    reads: Vec<Option<PendingRead>>,
    free_tags: Vec<u32>,
    done: Vec<Completion>,
    /// Connection threads that got responses this turn.
    touched: Vec<bool>,
    block: u64,
    /// Requests taken from the ring this turn.
    batch: Vec<Request>,
    max_gen: u64,
}

/// Starts one poller thread per `--io-threads`, giving each its shards.
pub(super) fn spawn_all(
    shared: &Arc<Shared>,
    store: Store,
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
    let max_gen = store.max_gen;
    // The directory lock stays held while any poller runs.
    let lock = Arc::new(store.lock);
    owned
        .into_iter()
        .enumerate()
        .map(|(id, shards)| {
            let shared = Arc::clone(shared);
            let dev = Arc::clone(&dev);
            let pin = core(id);
            let lock = Arc::clone(&lock);
            std::thread::Builder::new()
                .name(format!("poller-{id}"))
                .spawn(move || {
                    let _lock = lock;
                    if let Some(c) = pin {
                        core_affinity::set_for_current(c);
                    }
                    run(id, shared, &dev, shards, max_gen)
                })
                .context("spawning a poller")
        })
        .collect()
}

fn run(
    id: usize,
    shared: Arc<Shared>,
    dev: &Device,
    shards: Vec<Option<Shard>>,
    max_gen: u64,
) -> Result<()> {
    let depth = shared.args.max_io_depth;
    let eng = open_engine(shared.args.engine, dev, depth, &shared.pollers[id].bell)
        .with_context(|| format!("poller {id}: opening the {:?} engine", shared.args.engine))?;
    let mut p = Poller {
        id,
        block: eng.block_size() as u64,
        eng,
        touched: vec![false; shared.conns.len()],
        shared,
        shards,
        reads: (0..depth).map(|_| None).collect(),
        free_tags: (0..depth as u32).rev().collect(),
        done: Vec::with_capacity(depth),
        batch: Vec::with_capacity(depth),
        max_gen,
    };
    let keys = p.shards.iter().flatten().map(Shard::live_keys).sum();
    p.stats().keys.store(keys, Relaxed);
    p.run_loop();
    p.shutdown()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<E: Engine> Poller<E> {
    fn stats(&self) -> &super::stats::PollerStats {
        &self.shared.poller_stats[self.id]
    }

    fn run_loop(&mut self) {
        let spin = Duration::from_micros(self.shared.args.spin_us);
        let busy = self.shared.args.poll == PollMode::Busy;
        let mut idle_since: Option<Instant> = None;
        loop {
            let worked = self.turn();
            if worked {
                idle_since = None;
                continue;
            }
            if self.shared.pollers_stop.load(Relaxed) && self.eng.in_flight() == 0 {
                return;
            }
            if busy {
                std::hint::spin_loop();
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= spin {
                self.park();
                idle_since = None;
            } else {
                // Spinning politely: on a machine with fewer cores than busy
                // threads the connection threads need the CPU meanwhile.
                std::thread::yield_now();
            }
        }
    }

    /// One turn of the loop; returns whether anything happened.
    fn turn(&mut self) -> bool {
        let now = now_ms();
        self.eng.reap(&mut self.done);
        let completed = self.done.len();
        let mut done = std::mem::take(&mut self.done);
        for c in done.drain(..) {
            self.complete(c, now);
        }
        self.done = done;

        let mut batch = std::mem::take(&mut self.batch);
        let inbox = &self.shared.pollers[self.id].inbox;
        while batch.len() < self.free_tags.len() {
            let Some(req) = inbox.pop() else { break };
            batch.push(req);
        }
        let taken = batch.len();
        for req in batch.drain(..) {
            self.handle(req, now);
        }
        self.batch = batch;
        let sent = match self.eng.submit() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(poller = self.id, "submit failed: {e}");
                0
            }
        };
        self.notify_conns();
        let st = self.stats();
        st.loops.fetch_add(1, Relaxed);
        if sent > 0 {
            st.submits.fetch_add(1, Relaxed);
            st.submitted.fetch_add(sent as u64, Relaxed);
            st.max_batch.fetch_max(sent as u64, Relaxed);
        }
        st.in_flight.store(self.eng.in_flight() as u64, Relaxed);
        completed > 0 || taken > 0 || sent > 0
    }

    /// Sleeps until a completion or a doorbell (bounded, to see shutdown).
    fn park(&mut self) {
        let handle = &self.shared.pollers[self.id];
        handle.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if handle.inbox.is_empty() && !self.shared.pollers_stop.load(Relaxed) {
            self.stats().parks.fetch_add(1, Relaxed);
            self.eng.wait(Duration::from_millis(100));
        }
        handle.sleeping.store(false, Ordering::SeqCst);
        handle.bell.drain();
    }

    fn shard(&self, pid: u32) -> &Shard {
        let s = crate::store::shard_of(pid, self.shared.sb.shards);
        self.shards[s as usize]
            .as_ref()
            .expect("request routed to the shard's poller")
    }

    fn handle(&mut self, req: Request, now: u64) {
        let hit = match self.shard(req.pid).lookup(req.pid, &req.hash, now) {
            Lookup::Hit(e) => Some(e),
            Lookup::Miss => None,
        };
        match (req.op, hit) {
            (Op::Exists, hit) => {
                self.respond(req.from, req.id, req.part, Reply::Int(hit.is_some() as i64))
            }
            (Op::Get { .. }, None) => {
                self.stats().misses.fetch_add(1, Relaxed);
                self.respond(req.from, req.id, req.part, Reply::Nil)
            }
            (Op::Get { key }, Some(entry)) => {
                let start = align_down(entry.offset, self.block);
                let end = align_up(entry.offset + entry.len as u64, self.block);
                let buf = self.eng.alloc((end - start) as usize);
                let tag = self.free_tags.pop().expect("caller checked a free tag");
                match self.eng.read(start, buf, tag as u64) {
                    Ok(()) => {
                        self.reads[tag as usize] = Some(PendingRead {
                            to: req.from,
                            id: req.id,
                            part: req.part,
                            key,
                            entry,
                            start,
                        });
                    }
                    Err(buf) => {
                        self.eng.free(buf);
                        self.free_tags.push(tag);
                        let msg = "ERR server busy: I/O queue full".to_string();
                        self.respond(req.from, req.id, req.part, Reply::Error(msg));
                    }
                }
            }
        }
    }

    fn complete(&mut self, c: Completion, now: u64) {
        let tag = c.tag as u32;
        let Some(r) = self.reads[tag as usize].take() else {
            tracing::error!(poller = self.id, tag, "completion for an unknown operation");
            return;
        };
        self.free_tags.push(tag);
        let buf = c.buf.expect("a read returns its buffer");
        let reply = match c.result {
            Ok(n) if n == buf.len() => self.verify(&r, &buf, now),
            Ok(n) => {
                self.stats().io_errors.fetch_add(1, Relaxed);
                Reply::Error(format!(
                    "ERR I/O error: short read of {n} of {} bytes at offset {}",
                    buf.len(),
                    r.start
                ))
            }
            Err(e) => {
                self.stats().io_errors.fetch_add(1, Relaxed);
                Reply::Error(format!("ERR I/O error reading offset {}: {e}", r.start))
            }
        };
        self.eng.free(buf);
        self.respond(r.to, r.id, r.part, reply);
    }

    /// Checks the record read for `r` and turns it into a reply.
    fn verify(&self, r: &PendingRead, buf: &IoBuf, now: u64) -> Reply {
        let at = (r.entry.offset - r.start) as usize;
        let bytes = &buf[at..at + r.entry.len as usize];
        let corrupt = |what: &dyn std::fmt::Display| {
            self.stats().corrupt_records.fetch_add(1, Relaxed);
            tracing::error!(offset = r.entry.offset, "corrupted record: {what}");
            Reply::Error(format!(
                "ERR corrupted record at offset {}: {what}",
                r.entry.offset
            ))
        };
        match decode_record(bytes) {
            Err(e) => corrupt(&e),
            Ok(rec) if rec.key != &*r.key => corrupt(&"key does not match the index"),
            Ok(rec) if rec.is_tombstone() || rec.expired(now) => {
                self.stats().misses.fetch_add(1, Relaxed);
                Reply::Nil
            }
            Ok(rec) => {
                let st = self.stats();
                st.reads.fetch_add(1, Relaxed);
                st.hits.fetch_add(1, Relaxed);
                let mut out = Vec::with_capacity(rec.value.len() + 16);
                resp::bulk(&mut out, rec.value);
                Reply::Encoded(out)
            }
        }
    }

    fn respond(&mut self, to: ConnRef, id: u64, part: u32, reply: Reply) {
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

    /// Finishes in-flight I/O, then flushes the index and marks it clean.
    fn shutdown(mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.eng.in_flight() > 0 && Instant::now() < deadline {
            if !self.turn() {
                self.eng.wait(Duration::from_millis(10));
            }
        }
        let max_gen = self.max_gen;
        for s in self.shards.iter_mut().flatten() {
            s.mark_clean(max_gen).context("marking the index clean")?;
        }
        Ok(())
    }
}
