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
//!
//! A SCAN step's keys are spread over the whole device, so a full
//! iteration would read one record per key; instead the poller fills a
//! cache of key names ([`names`]) with span reads of whole segments, and
//! the steps it covers take their keys from it (a name counts only while
//! the key's index entry points where it was read).

mod copy;
mod names;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;

use super::super::msg::{CopyAnswer, Op, Reply, Request};
use super::super::msg::{CURSOR_POS_BITS, TAG_GRAIN};
use super::super::pattern;
use super::{is_sub, Poller};
use crate::format::{align_down, align_up, decode_record};
use crate::index::{Entry, KeyHash};
use crate::io::{Completion, Engine};
use crate::resp;
use crate::store::keyspace::Tag;
use names::{KeyNames, Place};

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
/// Bytes a poller's cache of key names for SCAN may hold.
const NAMES_CAP: usize = 64 << 20;
/// The cache goes when no step used it for this long.
const NAMES_IDLE_MS: u64 = 10_000;
/// A step fills the cache when it would read at least this many records
/// from the device otherwise.
const FILL_MIN: usize = 32;
/// A fill reads a segment's span when it is at most this many times the
/// bytes of its records' single reads (sequential reads are much cheaper
/// per byte than random ones); records of sparser segments are left to
/// the steps.
const FILL_WASTE: u64 = 16;
/// Key length assumed before the first fill measures it.
const FIRST_KEY_GUESS: usize = 32;

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

impl Want {
    /// The records it reads.
    fn items(&self) -> &[Item] {
        match self {
            Want::Record(it) => std::slice::from_ref(it),
            Want::Span { items, .. } => items,
        }
    }
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
    /// A fill of the cache of key names: no request, the names read.
    Fill(KeyNames),
    /// A step of a replica's full copy `session`: the step's live keys as
    /// SET commands, whether the copy has no records left after them, and
    /// where they go.
    Copy {
        session: u64,
        sets: copy::Sets,
        last: bool,
        entries: Option<u64>,
        done: mpsc::Sender<CopyAnswer>,
    },
}

/// One request's iteration.
#[derive(Debug)]
struct Job {
    /// `None` for a fill.
    req: Option<Request>,
    kind: Kind,
    pattern: Option<Box<[u8]>>,
    /// Reads still to issue (taken from the end).
    todo: Vec<Want>,
    /// Reads at the device.
    reading: usize,
    keys: Vec<Box<[u8]>>,
    /// A SCAN step's records, kept while a fill of the cache that covers
    /// them is under way.
    waiting: Option<Vec<Item>>,
    /// When the job took its entries: a key is live if it was then (one
    /// instant for the whole reply, as Redis's).
    at_ms: u64,
    /// Its records to read are pinned ([`Keyspace::pin_record`]): a KEYS
    /// or a SCAN step, which answer what the index held at `at_ms`, reads
    /// them where they were then, even if their keys were deleted and
    /// their segments emptied since.
    ///
    /// [`Keyspace::pin_record`]: crate::store::keyspace::Keyspace::pin_record
    pins: bool,
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
    /// The cache of key names, once filled.
    names: Option<KeyNames>,
    /// The fill under way: its job.
    fill: Option<u64>,
    /// Mean key length the last fill found.
    key_len: Option<usize>,
    /// Full copies under way, by session.
    copies: HashMap<u64, copy::Session>,
}

impl<E: Engine> Poller<E> {
    /// Takes a SCAN, KEYS or RANDOMKEY request: the index entries it
    /// visits now, their records as read slots come free.
    pub(super) fn start_scan(&mut self, mut req: Request) {
        let mut todo: Vec<Item> = Vec::new();
        let mut entries = Vec::new();
        let item = |pid, (tag, entry)| Item {
            pid,
            tag,
            entry,
            tries: 0,
        };
        // Where a SCAN step that returns keys starts: its keys may come
        // from the cache of key names.
        let mut place: Option<Place> = None;
        let view = match req.op {
            Op::RandomKey { .. } => self.view_entries(&req),
            _ => HashSet::new(),
        };
        let (kind, pattern) = match &mut req.op {
            Op::CopyStep(ask) => {
                let done = ask.done.clone();
                let reads = std::mem::take(&mut ask.reads);
                let Some((last, entries)) =
                    self.copy_step(ask.session, ask.first, reads, &mut todo)
                else {
                    let part = Err(copy::NO_SESSION);
                    let _ = done.send(CopyAnswer {
                        poller: self.id,
                        part,
                    });
                    return;
                };
                let bytes = todo.iter().map(|it| it.entry.len as usize + 64).sum();
                let sets = copy::Sets::new(std::mem::take(&mut ask.buf), bytes);
                let kind = Kind::Copy {
                    session: ask.session,
                    sets,
                    last,
                    entries,
                    done,
                };
                (kind, None)
            }
            Op::Scan {
                from,
                count,
                pattern,
                no_keys,
            } => {
                if !*no_keys {
                    place = Some((req.pid, *from));
                }
                let next = self.step_entries(req.pid, *from, *count, &mut todo);
                if *no_keys {
                    todo.clear();
                }
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
                if let Some((pid, t, e)) = self.ks.random_entry(*seed, |o| view.contains(&o)) {
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
        if is_sub(&req) && self.txn_flushed() {
            // The transaction flushed: the store's keys are not its.
            todo.clear();
            place = None;
        }
        // Matched by glob only when the pattern is not `*`.
        let pattern = pattern.filter(|p| &**p != b"*");
        let id = self.scans.next_job;
        self.scans.next_job += 1;
        let copying = matches!(kind, Kind::Copy { .. });
        let pins = matches!(kind, Kind::Scan { .. } | Kind::Keys);
        let mut job = Job {
            req: Some(req),
            kind,
            pattern,
            todo: Vec::new(),
            reading: 0,
            keys: Vec::new(),
            waiting: None,
            at_ms: self.ks.now_ms(),
            pins,
        };
        match place {
            Some(place) => self.use_names(&mut job, place, todo),
            None if copying => job.todo = self.plan(todo, copy::SPAN_WASTE, true),
            None => job.todo = self.plan(todo, SPAN_WASTE, true),
        }
        if pins {
            // In this turn: no write came between the walk and the pins.
            for it in job.waiting.iter().flatten() {
                self.ks.pin_record(it.entry.offset);
            }
            for want in &job.todo {
                for it in want.items() {
                    self.ks.pin_record(it.entry.offset);
                }
            }
        }
        let waits = job.waiting.is_some();
        self.scans.jobs.insert(id, job);
        if !waits {
            self.scans.queued.push_back(id);
        }
        self.pump_scans();
    }

    /// The index entries of a SCAN step from `from` in partition `pid`,
    /// about `count` of them, into `todo`; the cursor to answer with. A
    /// step that ends its partition with fewer than `count` keys goes on
    /// into the next one while this poller owns it (with one poller, an
    /// empty store takes one step).
    fn step_entries(&mut self, pid: u32, from: u64, count: usize, todo: &mut Vec<Item>) -> u64 {
        let partitions = self.shared.sb.partitions;
        let mut entries = Vec::new();
        let (mut pid, mut from, mut found) = (pid, from, 0);
        loop {
            let to = self.ks.scan_partition(
                pid,
                from,
                count.saturating_sub(found),
                TAG_GRAIN,
                &mut entries,
            );
            found += entries.len();
            todo.extend(entries.drain(..).map(|(tag, entry)| Item {
                pid,
                tag,
                entry,
                tries: 0,
            }));
            match to {
                Some(t) => return (pid as u64) << CURSOR_POS_BITS | t >> TAG_GRAIN,
                None if pid + 1 == partitions => return 0,
                None if found >= count || self.shared.poller_of(pid + 1) != self.id => {
                    return ((pid + 1) as u64) << CURSOR_POS_BITS
                }
                None => (pid, from) = (pid + 1, 0),
            }
        }
    }

    /// The records of the next step of full copy `session` into `todo`
    /// (`first`: the copy starts, and takes every entry of the poller's
    /// partitions now), `reads` the read buffers the feed gives back;
    /// whether the copy has no records left after them
    /// (a finished copy stays, answering steps with none, until idle),
    /// and for a first step the entries the copy took; `None` for a
    /// session not (or no longer) under way.
    fn copy_step(
        &mut self,
        session: u64,
        first: bool,
        reads: Vec<crate::io::IoBuf>,
        todo: &mut Vec<Item>,
    ) -> Option<(bool, Option<u64>)> {
        let now = self.ks.now_ms();
        self.scans.copies.retain(|_, c| !c.idle(now));
        if first {
            // Sized at once: growing a vector of a million entries step by
            // step copies it over and over into fresh pages.
            let live = self.ks.live_keys() as usize;
            let mut items = Vec::with_capacity(live + live / 16);
            let mut entries = Vec::new();
            for pid in self.ks.partition_ids() {
                self.ks
                    .scan_partition(pid, 0, usize::MAX, TAG_GRAIN, &mut entries);
                items.extend(entries.drain(..).map(|(tag, entry)| Item {
                    pid,
                    tag,
                    entry,
                    tries: 0,
                }));
            }
            self.scans
                .copies
                .insert(session, copy::Session::new(items, now));
        }
        let c = self.scans.copies.get_mut(&session)?;
        c.give_back(reads);
        let entries = first.then(|| c.entries());
        c.take(copy::STEP_BYTES, todo, now);
        Some((c.done(), entries))
    }

    /// Takes the keys of a SCAN step's `items` from the cache of key
    /// names where it holds them, and plans reads for the rest; or, when
    /// the step would read many records from the device, has it wait for
    /// a fill of the cache that covers `place` (starting one if none is
    /// under way).
    fn use_names(&mut self, job: &mut Job, place: Place, items: Vec<Item>) {
        let now = self.ks.now_ms();
        let total = items.len();
        let mut fresh = false;
        let misses = match self.scans.names.as_mut().filter(|n| n.covers(place)) {
            Some(names) => {
                names.used_ms = now;
                fresh = now.saturating_sub(names.filled_ms) < NAMES_IDLE_MS / 10;
                named(names, job.pattern.as_deref(), items, &mut job.keys)
            }
            None => items,
        };
        let device = (misses.iter())
            .filter(|it| self.ks.buffered(it.entry).is_none())
            .count();
        if device >= FILL_MIN {
            let filling = (self.scans.fill)
                .and_then(|f| self.scans.jobs.get(&f))
                .map(|f| matches!(&f.kind, Kind::Fill(n) if n.covers(place)));
            let stale = self.scans.names.as_ref().is_none_or(|n| !n.covers(place))
                || (device * 2 > total && !fresh);
            if filling == Some(true) || (filling.is_none() && stale) {
                if filling.is_none() {
                    self.start_fill(place);
                }
                job.waiting = Some(misses);
                return;
            }
        }
        job.todo = self.plan(misses, SPAN_WASTE, true);
    }

    /// Starts a fill of the cache of key names: the records of this
    /// poller's key space from `place` on (all of it when it fits), as
    /// many as the cache's bytes allow, read in spans of their segments.
    fn start_fill(&mut self, place: Place) {
        let now = self.ks.now_ms();
        let key_len = self.scans.key_len.unwrap_or(FIRST_KEY_GUESS);
        let budget = NAMES_CAP / (names::ENTRY_BYTES + key_len);
        let lo = if self.ks.live_keys() <= budget as u64 {
            (0, 0)
        } else {
            place
        };
        let (mut items, mut entries, mut hi) = (Vec::new(), Vec::new(), None);
        for pid in self.ks.partition_ids().into_iter().filter(|&p| p >= lo.0) {
            let from = if pid == lo.0 { lo.1 } else { 0 };
            self.ks
                .scan_partition(pid, from, usize::MAX, TAG_GRAIN, &mut entries);
            if items.len() + entries.len() > budget {
                // The window ends inside this partition, at a tag.
                entries.sort_unstable_by_key(|&(tag, _)| tag);
                let keep = budget - items.len();
                hi = Some((pid, entries[keep].0));
                entries.truncate(keep);
            }
            items.extend(entries.drain(..).map(|(tag, entry)| Item {
                pid,
                tag,
                entry,
                tries: 0,
            }));
            if hi.is_some() {
                break;
            }
        }
        // The old names go first: one cache's bytes at a time.
        self.scans.names = None;
        let id = self.scans.next_job;
        self.scans.next_job += 1;
        let job = Job {
            req: None,
            kind: Kind::Fill(KeyNames::new(lo, hi, NAMES_CAP, now)),
            pattern: None,
            todo: self.plan(items, FILL_WASTE, false),
            reading: 0,
            keys: Vec::new(),
            waiting: None,
            at_ms: self.ks.now_ms(),
            pins: false,
        };
        self.scans.jobs.insert(id, job);
        self.scans.queued.push_back(id);
        self.scans.fill = Some(id);
    }

    /// A fill is done: its names become the cache, and the steps that
    /// waited for it take their keys from there and read the rest.
    fn finish_fill(&mut self, mut names: KeyNames) {
        self.scans.fill = None;
        names.seal();
        if names.len() > 0 {
            self.scans.key_len = Some(names.key_bytes() / names.len());
        }
        let waiting: Vec<u64> = (self.scans.jobs.iter())
            .filter(|(_, j)| j.waiting.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            let job = self.scans.jobs.get_mut(&id).expect("job under way");
            let items = job.waiting.take().expect("a waiting job");
            let pins = job.pins;
            let unpin: Vec<u64> = match pins {
                true => items.iter().map(|it| it.entry.offset).collect(),
                false => Vec::new(),
            };
            let misses = named(&names, job.pattern.as_deref(), items, &mut job.keys);
            // Those the cache named are not read: only the others stay
            // pinned.
            for offset in unpin {
                self.ks.unpin_record(offset);
            }
            if pins {
                for it in &misses {
                    self.ks.pin_record(it.entry.offset);
                }
            }
            let todo = self.plan(misses, SPAN_WASTE, true);
            self.scans.jobs.get_mut(&id).expect("job under way").todo = todo;
            self.scans.queued.push_back(id);
        }
        names.used_ms = self.ks.now_ms();
        self.scans.names = Some(names);
    }

    /// Reads the records the jobs still need, as read slots allow; answers
    /// the jobs that have all theirs. Whether anything moved.
    pub(super) fn pump_scans(&mut self) -> bool {
        let now = self.ks.now_ms();
        let idle = |n: &KeyNames| now.saturating_sub(n.used_ms) >= NAMES_IDLE_MS;
        if self.scans.names.as_ref().is_some_and(idle) {
            self.scans.names = None;
        }
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
            } else if (self.scans.jobs.get(&id)).is_none_or(|j| j.todo.is_empty()) {
                // Only reads at the device left: their completions finish
                // it (or it was queued twice, a RANDOMKEY picking again,
                // and is answered already).
            } else {
                self.scans.queued.push_back(id);
            }
        }
        moved
    }

    /// The reads for `items`: records of one segment that lie close
    /// enough together (a span at most `waste` times the bytes of their
    /// single reads) share a span read; the rest, and records still in a
    /// segment buffer, are read one by one, or left out unless `singles`.
    /// Taken from the end.
    fn plan(&self, mut items: Vec<Item>, waste: u64, singles: bool) -> Vec<Want> {
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
            if run.len() > 1 && end - start <= waste * single {
                let items = std::mem::take(run);
                wants.push(Want::Span { start, end, items });
            } else if singles {
                wants.extend(run.drain(..).map(Want::Record));
            } else {
                run.clear();
            }
        };
        for it in items {
            if self.ks.buffered(it.entry).is_some() {
                if singles {
                    wants.push(Want::Record(it));
                }
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
                    self.record_read(id, it, Ok(&bytes), None);
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
        let len = (end - start) as usize;
        // A copy's span reads go into buffers its feed sent and gave back
        // (the values are sent from them), of a segment's bytes so that
        // any span fits.
        let copy = match &self.scans.jobs[&id].kind {
            Kind::Copy { session, .. } if span => Some(*session),
            _ => None,
        };
        let reused = copy
            .and_then(|s| self.scans.copies.get_mut(&s))
            .and_then(|c| c.read_buf(len));
        let segment = self.shared.sb.segment_size as usize;
        let eng = self.ks.engine();
        let fresh = |eng: &mut E| match copy {
            Some(_) => eng.alloc(len.max(segment)).map(|mut b| {
                b.set_len(len);
                b
            }),
            None => eng.alloc(len),
        };
        let buf = match reused.map_or_else(|| fresh(eng), Ok) {
            Ok(buf) => buf,
            Err(_) if span => {
                // No large buffer (SPDK's DMA memory): one by one (a fill
                // leaves them to the steps).
                self.free_tags.push(slot);
                let job = self.scans.jobs.get_mut(&id).expect("job under way");
                if !matches!(job.kind, Kind::Fill(_)) {
                    job.todo.extend(items.into_iter().map(Want::Record));
                }
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
        // A copy's values stay in a span's buffer, sent from there.
        let copy = r.items.len() > 1
            && whole
            && (self.scans.jobs.get(&r.job)).is_some_and(|j| matches!(j.kind, Kind::Copy { .. }));
        for it in &r.items {
            let at = (it.entry.offset - r.start) as usize;
            let bytes = if whole {
                Ok(&buf[at..at + it.entry.len as usize])
            } else {
                Err(())
            };
            self.record_read(r.job, *it, bytes, copy.then_some(&buf[..]));
        }
        if copy {
            if let Some(Kind::Copy { sets, .. }) =
                self.scans.jobs.get_mut(&r.job).map(|j| &mut j.kind)
            {
                drop(sets.take_read(buf));
            }
        } else {
            drop(buf);
        }
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
    /// record again at its new place. `span`: the read buffer `bytes`
    /// lie in, which a copy's SET sends its value from (the buffer goes
    /// to [`copy::Sets::take_read`] next).
    fn record_read(&mut self, id: u64, it: Item, bytes: Result<&[u8], ()>, span: Option<&[u8]>) {
        let Item {
            pid,
            tag,
            entry,
            tries,
        } = it;
        let rec = bytes
            .ok()
            .and_then(|b| decode_record(&self.shared.sb.uuid, b).ok())
            .filter(|r| KeyHash::of(r.key).tag == tag);
        let Some(job) = self.scans.jobs.get_mut(&id) else {
            return;
        };
        let (now, pins) = (job.at_ms, job.pins);
        if pins {
            self.ks.unpin_record(entry.offset);
        }
        if let Kind::Fill(names) = &mut job.kind {
            // A record that does not hold its tag's key (written again or
            // moved meanwhile) is left to the steps.
            if let Some(r) = rec.filter(|r| !r.is_tombstone()) {
                names.insert((pid, tag), entry.offset, r.key);
            }
            return;
        }
        match rec {
            Some(r) if r.is_tombstone() || r.expired(now) => {}
            Some(r) if matches!(job.kind, Kind::Copy { .. }) => {
                if let Kind::Copy { sets, .. } = &mut job.kind {
                    if r.is_large() {
                        // Its value is in pieces: the feed reads it by GET.
                        sets.push_large(r.key);
                    } else if let Some(span) = span {
                        let start = r.value.as_ptr() as usize - span.as_ptr() as usize;
                        sets.push_read(r.key, start, r.value.len(), r.meta.expire_ms);
                    } else {
                        sets.push(r.key, r.value, r.meta.expire_ms);
                    }
                }
            }
            Some(r) => {
                let wanted = job
                    .pattern
                    .as_deref()
                    .is_none_or(|p| pattern::glob_exact(p, r.key));
                if wanted {
                    job.keys.push(r.key.into());
                }
            }
            None if !matches!(job.kind, Kind::Copy { .. }) => {
                // Short tags: which of the tag's entries is the key's now
                // is known only by their records: each live one is read
                // (keys listed twice are dropped when the step answers).
                if tries + 1 < MAX_TRIES {
                    for e in self.ks.live_entries(pid, tag) {
                        if e != entry {
                            if pins {
                                self.ks.pin_record(e.offset);
                            }
                            job.todo.push(Want::Record(Item {
                                pid,
                                tag,
                                entry: e,
                                tries: tries + 1,
                            }));
                        }
                    }
                }
            }
            None => {
                // The key was written again or moved while its record was
                // read: read it where the index points now, if it is live.
                match self.ks.live_entry(pid, tag) {
                    Some(e) if e != entry && tries + 1 < MAX_TRIES => {
                        if pins {
                            self.ks.pin_record(e.offset);
                        }
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
        // Inside a transaction that flushed, the store's keys are not its.
        let flushed = self.txn_flushed()
            && (self.scans.jobs.get(&id)).is_some_and(|j| j.req.as_ref().is_some_and(is_sub));
        // Inside a transaction, a key its view holds was deleted or
        // written by it: the store's value of it is not the answer.
        let view = match (&self.txn, self.scans.jobs.get(&id)) {
            (Some(t), Some(j)) if j.req.as_ref().is_some_and(is_sub) => Some(&t.view),
            _ => None,
        };
        let in_view = |keys: &[Box<[u8]>]| {
            view.is_some_and(|v| keys.iter().all(|k| v.contains_key(&super::view_id(k))))
        };
        let Some(job) = self.scans.jobs.get(&id) else {
            return false;
        };
        let repick = matches!(job.kind, Kind::Random { .. }) && in_view(&job.keys);
        let view = match (&job.kind, &job.req) {
            (Kind::Random { .. }, Some(req)) => self.view_entries(req),
            _ => HashSet::new(),
        };
        let Some(job) = self.scans.jobs.get_mut(&id) else {
            return false;
        };
        if job.waiting.is_some() || !job.todo.is_empty() || job.reading > 0 {
            return false;
        }
        if let Kind::Random { picks, seed } = &mut job.kind {
            if repick {
                // Another key, as for one gone; the view's own live keys
                // are added at the end.
                job.keys.clear();
            }
            if job.keys.is_empty() && *picks < RANDOM_PICKS && !flushed {
                // The key picked went meanwhile: pick another.
                *picks += 1;
                *seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
                if let Some((pid, tag, entry)) = self.ks.random_entry(*seed, |o| view.contains(&o))
                {
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
        let mut job = self.scans.jobs.remove(&id).expect("job under way");
        let Some(req) = job.req else {
            if let Kind::Fill(names) = job.kind {
                self.finish_fill(names);
            }
            return true;
        };
        // Records read again for a tag's entries may name a key twice.
        job.keys.sort_unstable();
        job.keys.dedup();
        if is_sub(&req) {
            // Inside EXEC: the keys as the transaction has left them.
            let (range, random) = match (&job.kind, &req.op) {
                (Kind::Scan { next }, Op::Scan { from, no_keys, .. }) if !*no_keys => {
                    let at = u64::from(req.pid) << CURSOR_POS_BITS | from >> TAG_GRAIN;
                    (Some((at, *next)), false)
                }
                (Kind::Scan { .. }, _) => (Some((1, 1)), false),
                (Kind::Random { .. }, _) => (None, true),
                _ => (None, false),
            };
            let mut keys = std::mem::take(&mut job.keys);
            self.view_names(&mut keys, job.pattern.as_deref(), range, random);
            job.keys = keys;
        }
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
            Kind::Copy {
                sets,
                last,
                entries,
                done,
                ..
            } => {
                let part = Ok(sets.part(last, entries));
                let _ = done.send(CopyAnswer {
                    poller: self.id,
                    part,
                });
                return true;
            }
            Kind::Fill(_) => unreachable!("a fill has no request"),
        };
        self.reply(&req, reply);
        true
    }
}

/// Takes the keys of `items` that `names` holds into `keys` (those that
/// match `pattern`); returns the others.
fn named(
    names: &KeyNames,
    pattern: Option<&[u8]>,
    mut items: Vec<Item>,
    keys: &mut Vec<Box<[u8]>>,
) -> Vec<Item> {
    // Nearly in order already (the index's slots follow their tags).
    items.sort_by_key(|it| (it.pid, it.tag));
    let mut misses = Vec::new();
    let wanted = items.iter().map(|it| ((it.pid, it.tag), it.entry.offset));
    for (it, key) in items.iter().zip(names.lookup(wanted)) {
        match key {
            Some(key) => {
                if pattern.is_none_or(|p| pattern::glob_exact(p, key)) {
                    keys.push(key.into());
                }
            }
            None => misses.push(*it),
        }
    }
    misses
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
