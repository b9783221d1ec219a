//! `nvkv check`: verifies a store offline. A clean index partition's slots
//! must match their checksum and keep Robin Hood order; every index entry
//! must point at a record whose checksum holds, whose key hashes to the
//! entry, and that a recovery scan of its segment would reach; no two
//! entries may hold one key (entries share a tag when tags are short, and
//! their records tell them apart); every segment in use is scanned. Reports what it found; damage makes the command fail.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use super::{read_superblock, DirLock, StoreError};
use crate::format::{decode_record, SegmentHeader, SegmentRecords};
use crate::index::{Entry, KeyHash, Owner, Partition};

/// What `check` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub index_clean: bool,
    pub entries: u64,
    pub tombstones: u64,
    pub segments_in_use: u64,
    pub records_scanned: u64,
    pub bytes_read: u64,
    pub secs: f64,
    /// One line per problem (the first 100).
    pub damage: Vec<String>,
    pub damage_count: u64,
}

impl CheckReport {
    fn damaged(&mut self, what: String) {
        self.damage_count += 1;
        if self.damage.len() < 100 {
            self.damage.push(what);
        }
    }

    pub fn ok(&self) -> bool {
        self.damage_count == 0
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "index {}: {} entries ({} tombstones); {} segments in use, {} records scanned, {:.1} MiB read in {:.2} s",
            if self.index_clean { "clean" } else { "dirty (will be rebuilt at the next start)" },
            self.entries,
            self.tombstones,
            self.segments_in_use,
            self.records_scanned,
            self.bytes_read as f64 / 1048576.0,
            self.secs
        )?;
        for d in &self.damage {
            writeln!(f, "DAMAGE: {d}")?;
        }
        if self.damage_count > self.damage.len() as u64 {
            writeln!(
                f,
                "... and {} more",
                self.damage_count - self.damage.len() as u64
            )?;
        }
        write!(
            f,
            "{}",
            if self.ok() {
                "OK: no damage found"
            } else {
                "DAMAGED"
            }
        )
    }
}

/// A record's key, and the record's offset.
type KeyAt = (Box<[u8]>, u64);

/// An index entry, by segment.
struct Expect {
    offset: u64,
    entry: Entry,
    pid: u32,
    tag: u64,
}

/// Checks the store in `dir` (which must not be open elsewhere); `env`
/// starts SPDK for a store on an NVMe namespace.
pub fn check(dir: &Path, env: &crate::io::EnvOptions) -> Result<CheckReport, StoreError> {
    let t0 = Instant::now();
    let spec = super::store_device(dir)?;
    let _lock = DirLock::acquire(dir)?;
    let dev = super::open_device(&spec, env)?;
    let sb = read_superblock(&dev)?;
    let mut r = CheckReport {
        index_clean: true,
        ..Default::default()
    };

    let mut by_seg: HashMap<u32, Vec<Expect>> = HashMap::new();
    // Tags of several entries, and the keys their records hold.
    let mut shared: HashMap<(u32, u64), Vec<KeyAt>> = HashMap::new();
    for pid in 0..sb.partitions {
        match Partition::open(dir, pid, Owner::new(sb.uuid, sb.capacity)) {
            Ok((p, Some(_))) => {
                if !p.slots_intact() {
                    r.damaged(format!(
                        "partition {pid}: the checksum of its slots does not match"
                    ));
                }
                if let Err(what) = p.check_order() {
                    r.damaged(format!("partition {pid}: {what}"));
                }
                let mut tags: Vec<u64> = p.iter().map(|(tag, _)| tag).collect();
                tags.sort_unstable();
                for w in tags.windows(2).filter(|w| w[0] == w[1]) {
                    shared.entry((pid, w[0])).or_default();
                }
                for (tag, e) in p.iter() {
                    r.entries += 1;
                    r.tombstones += e.tombstone as u64;
                    if !sb.record_fits(e.offset, e.len) {
                        r.damaged(format!(
                            "partition {pid}: entry points at {} bytes at offset {}, where no record can be",
                            e.len, e.offset
                        ));
                        continue;
                    }
                    let seg = sb.segment_of(e.offset);
                    by_seg.entry(seg).or_default().push(Expect {
                        offset: e.offset,
                        entry: e,
                        pid,
                        tag,
                    });
                }
            }
            Ok((_, None)) => r.index_clean = false,
            Err(e) => r.damaged(format!("index: {e}")),
        }
    }

    let mut buf = crate::io::IoBuf::new(sb.segment_size as usize);
    for seg in 0..sb.segment_count {
        let expected = by_seg.remove(&seg).unwrap_or_default();
        let base = sb.segment_offset(seg);
        let io = |e| StoreError::Io(dev.path().to_owned(), e);
        // The first block tells whether the segment is in use at all.
        let block = sb.block_size as usize;
        dev.read_at(&mut buf[..block], base).map_err(io)?;
        let header = SegmentHeader::decode(&buf, &sb.uuid);
        if header.is_some() {
            dev.read_at(&mut buf[block..], base + block as u64)
                .map_err(io)?;
        }
        r.bytes_read += if header.is_some() { buf.len() } else { block } as u64;
        let Some(h) = header else {
            if !expected.is_empty() {
                r.damaged(format!(
                    "segment {seg}: header unreadable, but {} index entries point into it",
                    expected.len()
                ));
            }
            continue;
        };
        if expected.is_empty() && r.index_clean {
            continue; // free: what it holds is dead
        }
        r.segments_in_use += 1;
        let mut reached = std::collections::HashSet::new();
        for (at, _) in SegmentRecords::new(&sb.uuid, &buf, &h, sb.block_size) {
            r.records_scanned += 1;
            reached.insert(base + at as u64);
        }
        for x in expected {
            let at = (x.offset - base) as usize;
            let bytes = &buf[at..(at + x.entry.len as usize).min(buf.len())];
            match decode_record(&sb.uuid, bytes) {
                Err(e) => r.damaged(format!("record at {}: {e}", x.offset)),
                Ok(rec) => {
                    if let Some(keys) = shared.get_mut(&(x.pid, x.tag)) {
                        keys.push((rec.key.into(), x.offset));
                    }
                    let hash = KeyHash::of(rec.key);
                    if hash.tag != x.tag || hash.partition(sb.partitions) != x.pid {
                        r.damaged(format!(
                            "record at {}: its key does not hash to the index entry",
                            x.offset
                        ));
                    } else if rec.len != x.entry.len as u64
                        || rec.is_tombstone() != x.entry.tombstone && !x.entry.tombstone
                    {
                        r.damaged(format!(
                            "record at {}: length or kind differs from the index",
                            x.offset
                        ));
                    } else if !reached.contains(&x.offset) {
                        r.damaged(format!(
                            "record at {}: not reachable by a scan of segment {seg}",
                            x.offset
                        ));
                    }
                }
            }
        }
    }
    for ((pid, _), mut keys) in shared {
        keys.sort_unstable();
        for w in keys.windows(2).filter(|w| w[0].0 == w[1].0) {
            r.damaged(format!(
                "partition {pid}: two index entries hold key \"{}\" (records at {} and {})",
                w[0].0.escape_ascii(),
                w[0].1,
                w[1].1
            ));
        }
    }
    r.secs = t0.elapsed().as_secs_f64();
    Ok(r)
}
