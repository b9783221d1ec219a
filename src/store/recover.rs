//! Rebuilding the index by scanning the device, after a crash or when the
//! index files are missing or damaged.
//!
//! Pass 1 reads every segment header (small reads, batched through
//! io_uring) and orders each shard's segments by their first sequence
//! number. Pass 2 reads those segments whole, in that order, with several
//! large reads in flight, and replays their records into the index: later
//! records win, tombstones stay as tombstone entries.
//!
//! Pass 1 also finds the piece segments of large values (their
//! [`PieceHeader`]s). The head of a large value is replayed only when each
//! of its pieces has the header it expects (value id, piece number,
//! length); otherwise (its write was cut short, or a piece was reused) it
//! becomes a marker, as an evicted key's entry is: it still shadows the
//! key's older versions. Piece segments no live head references are free.
//!
//! The tables are rebuilt in anonymous memory and written to their files
//! whole, each shard's once its last segment is scanned, while the scan
//! goes on ([`crate::index::WriteOut`]), with a dirty header: the files
//! are never written page by page as they fill, and a crash before the
//! end finds them as they were (dirty, or failing their checks) or
//! missing, so the next start rebuilds again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{shard, IndexState, LargeMap, OpenReport, Shard, StoreError};
use crate::format::{
    piece_capacity, FlushOf, LargeHead, PieceHeader, SegmentHeader, SegmentRecords, Superblock,
    FLAG_LARGE, FLAG_TOMBSTONE,
};
use crate::index::{Checkpoint, Entry, Inserter, KeyHash, Partition, WriteOut};
use crate::io::{open_engine, AnyEngine, Device, Engine, EngineKind, EventFd, IoBuf};

/// What a rebuild produces.
pub(super) struct Rebuilt {
    pub shards: Vec<Shard>,
    pub report: OpenReport,
    pub max_gen: u64,
    /// Smallest record sequence number per segment (`u64::MAX`: none).
    pub min_seq: Vec<u64>,
    /// The segments with a valid header, replayed.
    pub scanned: Vec<u32>,
    /// Records found in a segment of a shard their key does not belong
    /// to (skipped): keys with a hash tag in a store of format version 2.
    pub misplaced: u64,
    /// The heads of large values the index references.
    pub large: LargeMap,
    /// Per shard, the sequence number records below which were flushed:
    /// its flush mark's, or its latest flushing segment's, when later.
    pub flushed_below: Vec<u64>,
}

/// Bytes of segment reads kept in flight during the scan (16 segments of
/// the default 2 MiB: a rebuild's scan of 10 M keys here took 1.6 s with
/// 8 in flight, 1.2 s with 16).
const SCAN_BYTES: usize = 32 << 20;
/// Index inserts gathered before they are made in tag order (40 bytes
/// each).
const BATCH: usize = 1 << 20;
/// Bytes of each header read.
const HEADER_READ: usize = 4096;

pub(super) fn rebuild(
    dev: &Device,
    sb: &Superblock,
    old: Vec<Partition>,
    flushed_below: &[u64],
    t0: Instant,
) -> Result<Rebuilt, StoreError> {
    tracing::info!("index not clean: rebuilding it from the device");
    let parts = old
        .iter()
        .map(Partition::rebuild_in_memory)
        .collect::<Result<Vec<_>, _>>()?;
    drop(old);
    let io_err = |e| StoreError::Io(dev.path().to_owned(), e);
    let wake = EventFd::new().map_err(io_err)?;
    let mut eng = open_engine(EngineKind::default_for(dev), dev, 64, &wake).map_err(io_err)?;

    // Pass 1: segment headers.
    let mut by_shard: BTreeMap<u32, Vec<(u64, u32, SegmentHeader)>> = BTreeMap::new();
    let mut pieces: HashMap<u32, PieceHeader> = HashMap::new();
    let mut max_gen = 0;
    read_ordered(
        &mut eng,
        sb.segment_count as usize,
        64,
        |i| (sb.segment_offset(i as u32), HEADER_READ),
        |i, buf| {
            if let Some(h) = SegmentHeader::decode(buf, &sb.uuid) {
                if h.shard < sb.shards {
                    max_gen = max_gen.max(h.gen);
                    by_shard
                        .entry(h.shard)
                        .or_default()
                        .push((h.first_seq, i as u32, h));
                }
            } else if let Some(p) = PieceHeader::decode(buf, &sb.uuid) {
                // Value ids are generations: none is handed out twice.
                max_gen = max_gen.max(p.value_id);
                pieces.insert(i as u32, p);
            }
            true
        },
    )
    .map_err(io_err)?;

    // A flushing segment (opened by a FLUSHDB, written with the records
    // that followed it) flushes its shard's records below its first
    // sequence number, whether or not the mark that follows it landed:
    // once every shard of its flush has its own, or the marks say the
    // flush happened. Otherwise the commit that carried them was cut short
    // (by a crash, before any reply), and they are dropped whole, records
    // and all (their headers erased at the start, as unreferenced).
    let marks = flushed_below;
    let mut flushed_below = marks.to_vec();
    let mut siblings: HashMap<(u64, FlushOf), u32> = HashMap::new();
    for segs in by_shard.values() {
        for (_, _, h) in segs {
            if let Some(of) = h.flush {
                *siblings.entry((h.first_seq, of)).or_default() += 1;
            }
        }
    }
    let mut torn = Vec::new();
    for (&shard, segs) in by_shard.iter_mut() {
        segs.retain(|&(_, seg, h)| {
            let Some(of) = h.flush else { return true };
            let whole =
                siblings[&(h.first_seq, of)] >= of.shards || marks[shard as usize] >= h.first_seq;
            if whole {
                let below = &mut flushed_below[shard as usize];
                *below = (*below).max(h.first_seq);
            } else {
                torn.push(seg);
            }
            whole
        });
    }
    if !torn.is_empty() {
        tracing::warn!(
            segments = torn.len(),
            "a FLUSHDB's commit was cut short: its segments are dropped, the flush with them"
        );
    }

    // Pass 2: the segments of each shard, oldest first.
    let mut order: Vec<(u32, SegmentHeader)> = Vec::new();
    for segs in by_shard.values_mut() {
        // Oldest first. Two segments share a first sequence number when
        // the older one was filled by tombstones that compaction moved
        // (they keep their own numbers): the generation, handed out as
        // segments open, orders them.
        segs.sort_by_key(|s| (s.0, s.2.gen));
        order.extend(segs.iter().map(|&(_, seg, h)| (seg, h)));
    }
    let mut max_seq = vec![0u64; sb.shards as usize];
    let mut min_seq = vec![u64::MAX; sb.segment_count as usize];
    let (mut records, mut misplaced) = (0u64, 0u64);
    let seg_size = sb.segment_size as usize;
    let cap = piece_capacity(sb.segment_size, sb.block_size as u64);
    // Heads replayed with all their pieces: (partition, key, offset, head).
    let mut heads = Vec::new();
    // Those looked up already (each shard's once its log is scanned).
    let mut probed = 0;
    // The inserts are made on a thread of their own, fed each segment's
    // entries in log order: the scan's thread checks and decodes the
    // records meanwhile. The log comes shard by shard: once a shard's
    // last segment is scanned, its partitions are complete, and are
    // written to their files while the next shards are scanned.
    let out = WriteOut::start().map_err(io_err)?;
    let inserter =
        Inserter::start("rebuild-index", parts, BATCH, sb.shards, Some(&out)).map_err(io_err)?;
    let shard_ends: Vec<bool> = (0..order.len())
        .map(|i| {
            order
                .get(i + 1)
                .is_none_or(|next| next.1.shard != order[i].1.shard)
        })
        .collect();
    read_ordered(
        &mut eng,
        order.len(),
        (SCAN_BYTES / seg_size).clamp(4, 64),
        |i| (sb.segment_offset(order[i].0), seg_size),
        |i, buf| {
            let (seg, h) = order[i];
            let base = sb.segment_offset(seg);
            let mut entries = inserter.vec();
            for (at, rec) in SegmentRecords::new(&sb.uuid, buf, &h, sb.block_size) {
                let hash = KeyHash::full(rec.key);
                let pid = hash.partition(sb.partitions);
                if shard::shard_of(pid, sb.shards) != h.shard {
                    misplaced += 1;
                    continue;
                }
                records += 1;
                max_seq[h.shard as usize] = max_seq[h.shard as usize].max(rec.meta.seq);
                if rec.meta.seq < flushed_below[h.shard as usize] {
                    continue; // flushed (FLUSHDB)
                }
                min_seq[seg as usize] = min_seq[seg as usize].min(rec.meta.seq);
                let mut e = Entry {
                    offset: base + at as u64,
                    len: rec.len as u32,
                    tombstone: rec.meta.flags & FLAG_TOMBSTONE != 0,
                    expire_ms: rec.meta.expire_ms,
                };
                if rec.meta.flags & (FLAG_LARGE | FLAG_TOMBSTONE) == FLAG_LARGE {
                    let whole = LargeHead::decode(rec.value).filter(|head| {
                        head.pieces.iter().enumerate().all(|(i, seg)| {
                            pieces.get(seg).is_some_and(|p| {
                                p.value_id == head.value_id
                                    && p.piece == i as u32
                                    && p.len as u64 == head.piece_len(i, cap)
                            })
                        })
                    });
                    match whole {
                        Some(head) => heads.push((pid, hash, e.offset, head)),
                        None => {
                            // A marker: gone, and shadowing older versions.
                            e.tombstone = true;
                            e.expire_ms = e.expire_ms.max(1);
                        }
                    }
                }
                entries.push((pid, hash, e));
            }
            // Scanning on after the index failed would only fail again.
            let sent = inserter.send(entries);
            if shard_ends[i] {
                // The shard's heads are current if no later record of
                // their key replaced them.
                let probes = heads[probed..]
                    .iter()
                    .map(|&(pid, hash, at, _)| (pid, hash, at));
                let probes = probes.collect();
                probed = heads.len();
                let shard = h.shard;
                let pids =
                    (0..sb.partitions).filter(|&pid| shard::shard_of(pid, sb.shards) == shard);
                inserter.hand_over(pids.collect(), probes);
            }
            sent
        },
    )
    .map_err(io_err)?;
    let (rest, current) = inserter.finish()?;
    // Shards without a segment: their (empty) tables.
    for p in rest {
        out.send(p, None);
    }
    let scanned_secs = t0.elapsed().as_secs_f64();
    let parts = out.finish()?;
    let current: std::collections::HashSet<u64> = current.into_iter().collect();
    let mut large = LargeMap::new();
    for (_, _, offset, head) in heads {
        if current.contains(&offset) {
            large.insert(offset, Arc::new(head));
        }
    }
    tracing::info!(
        scan_secs = scanned_secs,
        write_secs = t0.elapsed().as_secs_f64() - scanned_secs,
        "index rebuilt in memory and written to its files, each shard's once it was scanned"
    );

    let cps: Vec<Option<Checkpoint>> = parts
        .iter()
        .map(|p| {
            Some(Checkpoint {
                max_seq: max_seq[(p.id() % sb.shards) as usize],
                max_gen,
            })
        })
        .collect();
    let shards = shard::split(sb, parts, &cps);
    let report = OpenReport {
        state: IndexState::Rebuilt,
        keys: shards.iter().map(Shard::live_keys).sum(),
        segments_scanned: order.len() as u64,
        bytes_scanned: order.len() as u64 * sb.segment_size as u64
            + sb.segment_count as u64 * HEADER_READ as u64,
        records_scanned: records,
        segments_erased: 0,
        secs: t0.elapsed().as_secs_f64(),
    };
    Ok(Rebuilt {
        shards,
        report,
        max_gen,
        min_seq,
        scanned: order.iter().map(|&(seg, _)| seg).chain(torn).collect(),
        misplaced,
        large,
        flushed_below,
    })
}

/// Reads `n` extents through `eng` with up to `depth` in flight and hands
/// each buffer to `each` in extent order, until `each` returns false (then
/// the reads in flight complete, and nothing more is read). A buffer
/// handed over is read into again at once, before the next one is handed
/// over: refilled only after every buffer ready was handed over, the
/// device sat idle while they were, and a rebuild's scan took as long as
/// its reads and its decoding together.
fn read_ordered(
    eng: &mut AnyEngine,
    n: usize,
    depth: usize,
    extent: impl Fn(usize) -> (u64, usize),
    mut each: impl FnMut(usize, &[u8]) -> bool,
) -> std::io::Result<()> {
    let mut reads = Reads {
        n,
        depth,
        next_issue: 0,
        next_done: 0,
        spare: Vec::new(),
    };
    let mut ready: BTreeMap<usize, IoBuf> = BTreeMap::new();
    let mut done = Vec::new();
    let mut stopped = false;
    while reads.next_done < reads.n {
        reads.fill(eng, &extent)?;
        eng.reap(&mut done);
        if done.is_empty() {
            eng.wait(Duration::from_millis(100));
            continue;
        }
        for c in done.drain(..) {
            let n = c.result?;
            let buf = c.buf.expect("read buffer");
            if n < buf.len() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("short read during scan: {n} of {} bytes", buf.len()),
                ));
            }
            ready.insert(c.tag as usize, buf);
        }
        while let Some(buf) = ready.remove(&reads.next_done) {
            if !stopped && !each(reads.next_done, &buf) {
                stopped = true;
                reads.n = reads.next_issue;
            }
            reads.spare.push(buf); // for the next read
            reads.next_done += 1;
            reads.fill(eng, &extent)?;
        }
    }
    Ok(())
}

/// Where [`read_ordered`] stands: extents to read, read, and handed over.
struct Reads {
    n: usize,
    depth: usize,
    next_issue: usize,
    next_done: usize,
    /// Buffers handed over, to read into again.
    spare: Vec<IoBuf>,
}

impl Reads {
    /// Issues reads up to the depth, and submits them.
    fn fill(
        &mut self,
        eng: &mut AnyEngine,
        extent: &impl Fn(usize) -> (u64, usize),
    ) -> std::io::Result<()> {
        while self.next_issue < self.n && self.next_issue - self.next_done < self.depth {
            let (off, len) = extent(self.next_issue);
            // A buffer of a read done is used again: a large one from the
            // engine is new memory each time, its pages faulted in and
            // zeroed by the kernel (a tenth of a rebuild's samples).
            let spare = self.spare.pop().filter(|b: &IoBuf| b.len() == len);
            let buf = match spare.map_or_else(|| eng.alloc(len), Ok) {
                Ok(buf) => buf,
                // The reads in flight give their buffers back.
                Err(_) if self.next_issue > self.next_done => break,
                Err(e) => return Err(e),
            };
            if eng.read(off, buf, self.next_issue as u64).is_err() {
                break;
            }
            self.next_issue += 1;
        }
        eng.submit()?;
        Ok(())
    }
}
