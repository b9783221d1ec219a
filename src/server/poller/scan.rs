//! Key iteration on the poller: SCAN steps, KEYS and RANDOMKEY.
//!
//! The index knows a key by its 64-bit tag only, so a step first takes
//! the entries it visits from the index at once (one synchronous walk of
//! the partition: no write can come between), then reads each entry's
//! record to learn its key: from a segment buffer, or with a device read
//! in a read slot ([`Tag::ScanRead`]), as many at a time as slots allow
//! while leaving a quarter of them to clients' reads. A record that no
//! longer holds the key of its tag (the key was written again, or moved
//! by compaction, while the read was at the device) is looked up again
//! and read at its new place; a key deleted or expired meanwhile is left
//! out. The reply is sent once every record of the step is read. Where a
//! job needs many records of one segment (KEYS, a SCAN with a large
//! COUNT), it reads the span that holds them in one large read instead,
//! when that costs at most four times the bytes of the single reads.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;

use super::super::msg::{Op, Reply, Request};
use super::super::pattern;
use super::Poller;
use crate::format::{align_down, align_up, decode_record};
use crate::index::{Entry, KeyHash};
use crate::io::{Completion, Engine};
use crate::resp;
use crate::store::keyspace::Tag;

/// Bits of a SCAN cursor that hold the position in a partition's tag
/// space; the bits above hold the partition. Position `p` stands for tag
/// `p << TAG_GRAIN`.
pub(in crate::server) const CURSOR_POS_BITS: u32 = 40;
/// Tags a cursor position step covers, as a power of two.
pub(in crate::server) const TAG_GRAIN: u32 = 64 - CURSOR_POS_BITS;

/// Times a record is read again after its key moved under the read.
const MAX_TRIES: u8 = 4;
/// RANDOMKEY's picks before it answers nil (each pick's key may expire or
/// go while its record is read).
const RANDOM_PICKS: u8 = 8;
/// Span reads a poller keeps at the device (each up to a segment).
const MAX_SPANS: usize = 4;
/// A span is read whole when it is at most this many times the bytes of
/// its records' single reads.
const SPAN_WASTE: u64 = 4;

/// A record a job needs: its partition, tag and entry, and the reads of
/// it so far.
#[derive(Debug, Clone, Copy)]
struct Item {
    pid: u32,
    tag: u64,
    entry: Entry,
    tries: u8,
}

/// A read a job needs: one record, or a span of a segment with several.
#[derive(Debug)]
enum Want {
    Record(Item),
    Span {
        start: u64,
        end: u64,
        items: Vec<Item>,
    },
}

/// What a job answers.
#[derive(Debug)]
enum Kind {
    /// A SCAN step: the cursor to answer with.
    Scan { next: u64 },
    /// KEYS: the poller's matching keys, one part of the combined reply.
    Keys,
    /// RANDOMKEY: picks made so far.
    Random { picks: u8, seed: u64 },
}

/// One request's iteration.
#[derive(Debug)]
struct Job {
    req: Request,
    kind: Kind,
    pattern: Option<Box<[u8]>>,
    /// Reads still to issue (taken from the end).
    todo: Vec<Want>,
    /// Reads at the device.
    reading: usize,
    keys: Vec<Box<[u8]>>,
}

/// A read of a job's records at the device, from `start`.
#[derive(Debug)]
struct ScanRead {
    job: u64,
    items: Vec<Item>,
    start: u64,
}

/// The poller's jobs of key iteration.
#[derive(Debug, Default)]
pub(super) struct Scans {
    jobs: HashMap<u64, Job>,
    next_job: u64,
    /// Jobs with records still to read, in arrival order.
    queued: VecDeque<u64>,
    /// Reads at the device, by read slot.
    reads: HashMap<u32, ScanRead>,
    /// Span reads among them.
    spans: usize,
}

impl<E: Engine> Poller<E> {
    /// Takes a SCAN, KEYS or RANDOMKEY request: the index entries it
    /// visits now, their records as read slots come free.
    pub(super) fn start_scan(&mut self, req: Request) {
        let mut todo: Vec<Item> = Vec::new();
        let mut entries = Vec::new();
        let item = |pid, (tag, entry)| Item {
            pid,
            tag,
            entry,
            tries: 0,
        };
        let partitions = self.shared.sb.partitions;
        let (kind, pattern) = match &req.op {
            Op::Scan {
                from,
                count,
                pattern,
                no_keys,
            } => {
                // A step that ends its partition with fewer than `count`
                // keys goes on into the next one while this poller owns
                // it (with one poller, an empty store takes one step).
                let (mut pid, mut from, mut found) = (req.pid, *from, 0);
                let next = loop {
                    let to = self.ks.scan_partition(
                        pid,
                        from,
                        count.saturating_sub(found),
                        TAG_GRAIN,
                        &mut entries,
                    );
                    found += entries.len();
                    if !*no_keys {
                        todo.extend(entries.drain(..).map(|e| item(pid, e)));
                    }
                    entries.clear();
                    match to {
                        Some(t) => break (pid as u64) << CURSOR_POS_BITS | t >> TAG_GRAIN,
                        None if pid + 1 == partitions => break 0,
                        None if found >= *count || self.shared.poller_of(pid + 1) != self.id => {
                            break ((pid + 1) as u64) << CURSOR_POS_BITS
                        }
                        None => (pid, from) = (pid + 1, 0),
                    }
                };
                (Kind::Scan { next }, pattern.clone())
            }
            Op::Keys { pattern } => {
                for pid in self.ks.partition_ids() {
                    self.ks
                        .scan_partition(pid, 0, usize::MAX, TAG_GRAIN, &mut entries);
                    todo.extend(entries.drain(..).map(|e| item(pid, e)));
                }
                (Kind::Keys, Some(pattern.clone()))
            }
            Op::RandomKey { seed } => {
                if let Some((pid, t, e)) = self.ks.random_entry(*seed) {
                    todo.push(item(pid, (t, e)));
                }
                let kind = Kind::Random {
                    picks: 1,
                    seed: *seed,
                };
                (kind, None)
            }
            _ => unreachable!("not key iteration"),
        };
        // Matched by glob only when the pattern is not `*`.
        let pattern = pattern.filter(|p| &**p != b"*");
        let id = self.scans.next_job;
        self.scans.next_job += 1;
        let todo = self.plan(todo);
        let job = Job {
            req,
            kind,
            pattern,
            todo,
            reading: 0,
            keys: Vec::new(),
        };
        self.scans.jobs.insert(id, job);
        self.scans.queued.push_back(id);
        self.pump_scans();
    }

    /// Reads the records the jobs still need, as read slots allow; answers
    /// the jobs that have all theirs. Whether anything moved.
    pub(super) fn pump_scans(&mut self) -> bool {
        let mut moved = false;
        let mut n = self.scans.queued.len();
        while n > 0 {
            n -= 1;
            let Some(id) = self.scans.queued.pop_front() else {
                break;
            };
            while let Some(want) = self.scans.jobs.get_mut(&id).and_then(|j| j.todo.pop()) {
                match self.issue(id, want) {
                    Ok(()) => moved = true,
                    Err(want) => {
                        // No slot or buffer this turn: the next may have one.
                        let job = self.scans.jobs.get_mut(&id).expect("job under way");
                        job.todo.push(want);
                        break;
                    }
                }
            }
            if self.finish_scan_if_done(id) {
                moved = true;
            } else if self.scans.jobs[&id].todo.is_empty() {
                // Only reads at the device left: their completions finish it.
            } else {
                self.scans.queued.push_back(id);
            }
        }
        moved
    }

    /// The reads for `items`: records of one segment that lie close
    /// enough together share a span read; the rest, and records still in
    /// a segment buffer, are read one by one. Taken from the end.
    fn plan(&self, mut items: Vec<Item>) -> Vec<Want> {
        let sb = &self.shared.sb;
        let block = self.ks.block();
        items.sort_unstable_by_key(|it| it.entry.offset);
        let mut wants = Vec::new();
        let mut run: Vec<Item> = Vec::new();
        let close_run = |run: &mut Vec<Item>, wants: &mut Vec<Want>| {
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                return;
            };
            let start = align_down(first.entry.offset, block);
            let end = align_up(last.entry.offset + last.entry.len as u64, block);
            let single: u64 = (run.iter())
                .map(|it| align_up(it.entry.len as u64, block) + block)
                .sum();
            if run.len() > 1 && end - start <= SPAN_WASTE * single {
                let items = std::mem::take(run);
                wants.push(Want::Span { start, end, items });
            } else {
                wants.extend(run.drain(..).map(Want::Record));
            }
        };
        for it in items {
            if self.ks.buffered(it.entry).is_some() {
                wants.push(Want::Record(it));
                continue;
            }
            let seg = sb.segment_of(it.entry.offset);
            if run
                .first()
                .is_some_and(|r| sb.segment_of(r.entry.offset) != seg)
            {
                close_run(&mut run, &mut wants);
            }
            run.push(it);
        }
        close_run(&mut run, &mut wants);
        wants
    }

    /// Serves `want` from a segment buffer, or sends its read; gives it
    /// back when no read slot or buffer is free now.
    fn issue(&mut self, id: u64, want: Want) -> Result<(), Want> {
        let (start, end, items) = match want {
            Want::Record(it) => {
                if let Some(bytes) = self.ks.buffered(it.entry) {
                    let bytes = bytes.to_vec();
                    self.record_read(id, it, Ok(&bytes));
                    return Ok(());
                }
                let block = self.ks.block();
                let start = align_down(it.entry.offset, block);
                let end = align_up(it.entry.offset + it.entry.len as u64, block);
                (start, end, vec![it])
            }
            Want::Span { start, end, items } => (start, end, items),
        };
        let span = items.len() > 1;
        let keep = self.reads.len() / 4;
        if self.free_tags.len() <= keep || (span && self.scans.spans >= MAX_SPANS) {
            return Err(give_back(start, end, items));
        }
        let Some(slot) = self.free_tags.pop() else {
            return Err(give_back(start, end, items));
        };
        let eng = self.ks.engine();
        let buf = match eng.alloc((end - start) as usize) {
            Ok(buf) => buf,
            Err(_) if span => {
                // No large buffer (SPDK's DMA memory): one by one.
                self.free_tags.push(slot);
                let job = self.scans.jobs.get_mut(&id).expect("job under way");
                job.todo.extend(items.into_iter().map(Want::Record));
                return Ok(());
            }
            Err(_) => {
                self.free_tags.push(slot);
                return Err(give_back(start, end, items));
            }
        };
        if eng.read(start, buf, Tag::ScanRead(slot).encode()).is_err() {
            self.free_tags.push(slot);
            return Err(give_back(start, end, items));
        }
        self.ks.count_read(end - start);
        self.scans.spans += span as usize;
        let job = self.scans.jobs.get_mut(&id).expect("job under way");
        job.reading += 1;
        let read = ScanRead {
            job: id,
            items,
            start,
        };
        self.scans.reads.insert(slot, read);
        Ok(())
    }

    /// A completed read of key iteration.
    pub(super) fn complete_scan_read(&mut self, slot: u32, c: Completion) {
        let Some(r) = self.scans.reads.remove(&slot) else {
            tracing::error!(
                poller = self.id,
                slot,
                "completion for an unknown scan read"
            );
            return;
        };
        self.free_tags.push(slot);
        let buf = c.buf.expect("a read returns its buffer");
        let whole = matches!(c.result, Ok(n) if n == buf.len());
        if !whole {
            self.ks.counters().io_errors.fetch_add(1, Relaxed);
        }
        if r.items.len() > 1 {
            self.scans.spans -= 1;
        }
        if let Some(job) = self.scans.jobs.get_mut(&r.job) {
            job.reading -= 1;
        }
        for it in &r.items {
            let at = (it.entry.offset - r.start) as usize;
            let bytes = if whole {
                Ok(&buf[at..at + it.entry.len as usize])
            } else {
                Err(())
            };
            self.record_read(r.job, *it, bytes);
        }
        drop(buf);
        if !self.finish_scan_if_done(r.job) {
            let waiting = self
                .scans
                .jobs
                .get(&r.job)
                .is_some_and(|j| !j.todo.is_empty());
            if waiting && !self.scans.queued.contains(&r.job) {
                self.scans.queued.push_back(r.job);
            }
        }
    }

    /// Takes the key of a record read for job `id`, or reads the key's
    /// record again at its new place.
    fn record_read(&mut self, id: u64, it: Item, bytes: Result<&[u8], ()>) {
        let Item {
            pid,
            tag,
            entry,
            tries,
        } = it;
        let now = self.ks.now_ms();
        let rec = bytes
            .ok()
            .and_then(|b| decode_record(&self.shared.sb.uuid, b).ok())
            .filter(|r| KeyHash::of(r.key).tag == tag);
        let Some(job) = self.scans.jobs.get_mut(&id) else {
            return;
        };
        match rec {
            Some(r) if r.is_tombstone() || r.expired(now) => {}
            Some(r) => {
                let wanted = job
                    .pattern
                    .as_deref()
                    .is_none_or(|p| pattern::glob_exact(p, r.key));
                if wanted {
                    job.keys.push(r.key.into());
                }
            }
            None => {
                // The key was written again or moved while its record was
                // read: read it where the index points now, if it is live.
                match self.ks.live_entry(pid, tag) {
                    Some(e) if e != entry && tries + 1 < MAX_TRIES => {
                        job.todo.push(Want::Record(Item {
                            pid,
                            tag,
                            entry: e,
                            tries: tries + 1,
                        }));
                    }
                    Some(_) => {
                        self.ks.counters().io_errors.fetch_add(1, Relaxed);
                        tracing::warn!(
                            poller = self.id,
                            partition = pid,
                            offset = entry.offset,
                            "key iteration: the record does not match its index entry"
                        );
                    }
                    None => {}
                }
            }
        }
    }

    /// Answers job `id` if it has every record it needs; whether it did.
    fn finish_scan_if_done(&mut self, id: u64) -> bool {
        let Some(job) = self.scans.jobs.get_mut(&id) else {
            return false;
        };
        if !job.todo.is_empty() || job.reading > 0 {
            return false;
        }
        if let Kind::Random { picks, seed } = &mut job.kind {
            if job.keys.is_empty() && *picks < RANDOM_PICKS {
                // The key picked went meanwhile: pick another.
                *picks += 1;
                *seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
                if let Some((pid, tag, entry)) = self.ks.random_entry(*seed) {
                    job.todo.push(Want::Record(Item {
                        pid,
                        tag,
                        entry,
                        tries: 0,
                    }));
                    self.scans.queued.push_back(id);
                    return false;
                }
            }
        }
        let job = self.scans.jobs.remove(&id).expect("job under way");
        let reply = match job.kind {
            Kind::Scan { next } => {
                let mut out = Vec::new();
                resp::array(&mut out, 2);
                resp::bulk(&mut out, next.to_string().as_bytes());
                keys_array(&mut out, &job.keys);
                Reply::Encoded(out)
            }
            Kind::Keys => {
                let mut out = Vec::new();
                keys_array(&mut out, &job.keys);
                Reply::Encoded(out)
            }
            Kind::Random { .. } => match job.keys.first() {
                Some(k) => {
                    let mut out = Vec::new();
                    resp::bulk(&mut out, k);
                    Reply::Encoded(out)
                }
                None => Reply::Nil,
            },
        };
        self.reply(&job.req, reply);
        true
    }
}

/// A read not sent, as it was wanted.
fn give_back(start: u64, end: u64, mut items: Vec<Item>) -> Want {
    if items.len() == 1 {
        Want::Record(items.pop().expect("one item"))
    } else {
        Want::Span { start, end, items }
    }
}

fn keys_array(out: &mut Vec<u8>, keys: &[Box<[u8]>]) {
    resp::array(out, keys.len());
    for k in keys {
        resp::bulk(out, k);
    }
}
