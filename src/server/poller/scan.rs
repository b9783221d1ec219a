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
//! out. The reply is sent once every record of the step is read.

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
    /// Entries whose records are still to read: partition, tag, entry,
    /// reads of it so far.
    todo: Vec<(u32, u64, Entry, u8)>,
    /// Reads at the device.
    reading: usize,
    keys: Vec<Box<[u8]>>,
}

/// A read of a job's record at the device.
#[derive(Debug)]
struct ScanRead {
    job: u64,
    pid: u32,
    tag: u64,
    entry: Entry,
    tries: u8,
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
}

impl<E: Engine> Poller<E> {
    /// Takes a SCAN, KEYS or RANDOMKEY request: the index entries it
    /// visits now, their records as read slots come free.
    pub(super) fn start_scan(&mut self, req: Request) {
        let mut todo = Vec::new();
        let mut entries = Vec::new();
        let partitions = self.shared.sb.partitions;
        let (kind, pattern) = match &req.op {
            Op::Scan {
                from,
                count,
                pattern,
                no_keys,
            } => {
                let pid = req.pid;
                let to = self
                    .ks
                    .scan_partition(pid, *from, *count, TAG_GRAIN, &mut entries);
                let next = match to {
                    Some(t) => (pid as u64) << CURSOR_POS_BITS | t >> TAG_GRAIN,
                    None if pid + 1 < partitions => ((pid + 1) as u64) << CURSOR_POS_BITS,
                    None => 0,
                };
                if !*no_keys {
                    todo.extend(entries.drain(..).map(|(t, e)| (pid, t, e, 0)));
                }
                (Kind::Scan { next }, pattern.clone())
            }
            Op::Keys { pattern } => {
                for pid in self.ks.partition_ids() {
                    self.ks
                        .scan_partition(pid, 0, usize::MAX, TAG_GRAIN, &mut entries);
                    todo.extend(entries.drain(..).map(|(t, e)| (pid, t, e, 0)));
                }
                (Kind::Keys, Some(pattern.clone()))
            }
            Op::RandomKey { seed } => {
                if let Some((pid, t, e)) = self.ks.random_entry(*seed) {
                    todo.push((pid, t, e, 0));
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
        todo.reverse(); // taken from the end, in index order
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
        let keep = self.reads.len() / 4;
        let mut n = self.scans.queued.len();
        while n > 0 {
            n -= 1;
            let Some(id) = self.scans.queued.pop_front() else {
                break;
            };
            while let Some(&(pid, tag, entry, tries)) =
                self.scans.jobs.get(&id).and_then(|j| j.todo.last())
            {
                if let Some(bytes) = self.ks.buffered(entry) {
                    let bytes = bytes.to_vec();
                    if let Some(j) = self.scans.jobs.get_mut(&id) {
                        j.todo.pop();
                    }
                    moved = true;
                    self.record_read(id, pid, tag, entry, tries, Ok(&bytes));
                    continue;
                }
                if self.free_tags.len() <= keep {
                    break;
                }
                let Some(slot) = self.free_tags.pop() else {
                    break;
                };
                let block = self.ks.block();
                let start = align_down(entry.offset, block);
                let end = align_up(entry.offset + entry.len as u64, block);
                let eng = self.ks.engine();
                let buf = match eng.alloc((end - start) as usize) {
                    Ok(buf) => buf,
                    Err(_) => {
                        self.free_tags.push(slot);
                        break; // no buffer this turn: the next may find one
                    }
                };
                if eng.read(start, buf, Tag::ScanRead(slot).encode()).is_err() {
                    self.free_tags.push(slot);
                    break;
                }
                self.ks.count_read(end - start);
                moved = true;
                let job = self.scans.jobs.get_mut(&id).expect("job under way");
                job.todo.pop();
                job.reading += 1;
                let read = ScanRead {
                    job: id,
                    pid,
                    tag,
                    entry,
                    tries,
                    start,
                };
                self.scans.reads.insert(slot, read);
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
        let result = match c.result {
            Ok(n) if n == buf.len() => {
                let at = (r.entry.offset - r.start) as usize;
                Ok(&buf[at..at + r.entry.len as usize])
            }
            _ => Err(()),
        };
        if result.is_err() {
            self.ks.counters().io_errors.fetch_add(1, Relaxed);
        }
        if let Some(job) = self.scans.jobs.get_mut(&r.job) {
            job.reading -= 1;
        }
        self.record_read(r.job, r.pid, r.tag, r.entry, r.tries, result);
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
    fn record_read(
        &mut self,
        id: u64,
        pid: u32,
        tag: u64,
        entry: Entry,
        tries: u8,
        bytes: Result<&[u8], ()>,
    ) {
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
                    .is_none_or(|p| pattern::glob(p, r.key));
                if wanted {
                    job.keys.push(r.key.into());
                }
            }
            None => {
                // The key was written again or moved while its record was
                // read: read it where the index points now, if it is live.
                match self.ks.live_entry(pid, tag) {
                    Some(e) if e != entry && tries + 1 < MAX_TRIES => {
                        job.todo.push((pid, tag, e, tries + 1));
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
                if let Some((pid, t, e)) = self.ks.random_entry(*seed) {
                    job.todo.push((pid, t, e, 0));
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

fn keys_array(out: &mut Vec<u8>, keys: &[Box<[u8]>]) {
    resp::array(out, keys.len());
    for k in keys {
        resp::bulk(out, k);
    }
}
