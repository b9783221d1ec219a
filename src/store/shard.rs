//! A shard: the index partitions of one slice of the key space, owned by
//! exactly one poller (single writer, no locks). Keys never move between
//! shards; a poller owns whole shards.

use crate::format::Superblock;
use crate::index::{self, Checkpoint, Entry, Flush, KeyHash, Partition, Sweep};

/// One shard's state.
#[derive(Debug)]
pub struct Shard {
    pub id: u32,
    nshards: u32,
    /// Partitions `p` with `p % nshards == id`, at index `p / nshards`.
    parts: Vec<Partition>,
    /// Sequence number of the shard's next record.
    pub next_seq: u64,
    /// Where the expiry sweep is: partition, slot.
    sweep: (usize, u64),
    /// The shard's last flush mark (FLUSHDB): records below its sequence
    /// number are gone.
    pub flushed: crate::format::FlushMark,
    /// The key counts over the partitions, as of each partition's entry in
    /// `seen`; partitions changed since are in `touched` (so that a count
    /// after each write visits the partitions written, not all of them).
    counts: Counts,
    seen: Vec<Counts>,
    touched: Vec<u32>,
    is_touched: Vec<bool>,
}

/// A partition's or a shard's index entries, live keys and keys with a
/// TTL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub entries: u64,
    pub live: u64,
    pub expiring: u64,
}

impl Counts {
    fn of(p: &Partition) -> Counts {
        Counts {
            entries: p.entries(),
            live: p.live_keys(),
            expiring: p.expiring(),
        }
    }
}

/// The answer of the index to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No such key (never written, deleted, or expired and reaped).
    Miss,
    /// The key's record is at this place on the device.
    Hit(Entry),
    /// The key's expiry has passed, and nothing has reaped it yet: the
    /// caller reaps it (marks it gone) and answers as for a miss.
    Expired(Entry),
}

/// Splits the store's partitions into shards.
pub fn split(sb: &Superblock, parts: Vec<Partition>, cps: &[Option<Checkpoint>]) -> Vec<Shard> {
    let n = sb.shards;
    let mut shards: Vec<Shard> = (0..n)
        .map(|id| Shard {
            id,
            nshards: n,
            parts: Vec::new(),
            next_seq: 1,
            sweep: (0, 0),
            flushed: Default::default(),
            counts: Counts::default(),
            seen: Vec::new(),
            touched: Vec::new(),
            is_touched: Vec::new(),
        })
        .collect();
    for (p, cp) in parts.into_iter().zip(cps) {
        let s = &mut shards[(p.id() % n) as usize];
        if let Some(cp) = cp {
            s.next_seq = s.next_seq.max(cp.max_seq + 1);
        }
        s.seen.push(Counts::default());
        s.is_touched.push(false);
        s.parts.push(p);
    }
    for s in &mut shards {
        (0..s.parts.len()).for_each(|i| s.touch(i));
    }
    shards
}

/// The shard that owns partition `pid`.
pub fn shard_of(pid: u32, nshards: u32) -> u32 {
    pid % nshards
}

impl Shard {
    pub fn part(&self, pid: u32) -> &Partition {
        debug_assert_eq!(pid % self.nshards, self.id);
        &self.parts[(pid / self.nshards) as usize]
    }

    pub fn part_mut(&mut self, pid: u32) -> &mut Partition {
        debug_assert_eq!(pid % self.nshards, self.id);
        let i = (pid / self.nshards) as usize;
        self.touch(i);
        &mut self.parts[i]
    }

    /// Partition `i` (of `parts`) may change: counted again by
    /// [`Self::counts`].
    fn touch(&mut self, i: usize) {
        if !self.is_touched[i] {
            self.is_touched[i] = true;
            self.touched.push(i as u32);
        }
    }

    /// The shard's counts, the partitions changed since the last call
    /// counted again.
    pub fn counts(&mut self) -> Counts {
        for i in self.touched.drain(..) {
            let i = i as usize;
            self.is_touched[i] = false;
            let (old, new) = (self.seen[i], Counts::of(&self.parts[i]));
            let c = &mut self.counts;
            c.entries = c.entries - old.entries + new.entries;
            c.live = c.live - old.live + new.live;
            c.expiring = c.expiring - old.expiring + new.expiring;
            self.seen[i] = new;
        }
        self.counts
    }

    /// Looks a key up in partition `pid` of this shard.
    pub fn lookup(&self, pid: u32, h: &KeyHash, now_ms: u64) -> Lookup {
        self.lookup_skipping(pid, h, now_ms, &[])
    }

    /// Looks a key up among its tag's candidates but those pointing at
    /// `skip` (read already, and found to be other keys'): the first live
    /// one, else the first expired one. With tags that identify keys there
    /// is one candidate at most.
    pub fn lookup_skipping(&self, pid: u32, h: &KeyHash, now_ms: u64, skip: &[u64]) -> Lookup {
        let mut expired = None;
        for e in self.part(pid).candidate_entries(h.tag) {
            if skip.contains(&e.offset) {
                continue;
            }
            if e.live(now_ms) {
                return Lookup::Hit(e);
            }
            if expired.is_none() && e.expired(now_ms) {
                expired = Some(e);
            }
        }
        expired.map_or(Lookup::Miss, Lookup::Expired)
    }

    /// Visits up to `budget` index slots of tables that may hold keys with
    /// a TTL, marking expired keys gone and calling `reaped` with each.
    pub fn reap_expired(
        &mut self,
        budget: u64,
        now_ms: u64,
        reaped: &mut dyn FnMut(Entry),
    ) -> Sweep {
        let (mut p, mut cursor) = self.sweep;
        let (mut left, n) = (budget, self.parts.len());
        let mut sweep = Sweep::default();
        for _ in 0..n {
            if left == 0 {
                break;
            }
            if !self.parts[p % n].may_expire() {
                // Nothing to reap there: costs no budget.
                (p, cursor) = ((p + 1) % n, 0);
                continue;
            }
            self.touch(p % n);
            let part = &mut self.parts[p % n];
            let before = cursor;
            sweep += part.reap_expired(&mut cursor, left, now_ms, reaped);
            left -= cursor - before;
            if cursor >= part.slots() {
                (p, cursor) = ((p + 1) % n, 0);
            }
        }
        self.sweep = (p, cursor);
        sweep
    }

    /// Live keys with a TTL.
    pub fn expiring(&self) -> u64 {
        self.parts.iter().map(Partition::expiring).sum()
    }

    /// The partitions' ids, in the order [`Self::partitions`] lists them.
    /// Makes room in every partition's table for `entries` keys.
    pub fn reserve(&mut self, entries: u64) -> Result<(), crate::index::IndexError> {
        self.parts.iter_mut().try_for_each(|p| p.reserve(entries))
    }

    pub fn partition_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.parts.iter().map(Partition::id)
    }

    /// Keys that are not deleted.
    pub fn live_keys(&self) -> u64 {
        self.parts.iter().map(Partition::live_keys).sum()
    }

    /// Index entries of deleted keys, and of keys expired or evicted (whose
    /// records still shadow older versions on the device).
    pub fn tombstones(&self) -> u64 {
        self.parts.iter().map(|p| p.entries() - p.live_keys()).sum()
    }

    /// Bytes of index files and slots in use, for INFO.
    pub fn index_bytes(&self) -> (u64, u64) {
        self.parts
            .iter()
            .fold((0, 0), |(b, e), p| (b + p.bytes(), e + p.entries()))
    }

    pub fn partitions(&self) -> &[Partition] {
        &self.parts
    }

    /// Empties every partition (FLUSHDB).
    pub fn clear(&mut self) {
        self.parts.iter_mut().for_each(Partition::clear);
        (0..self.parts.len()).for_each(|i| self.touch(i));
        self.sweep = (0, 0);
    }

    /// Partition `pid` of this shard (key iteration reads it).
    pub fn partition(&self, pid: u32) -> &Partition {
        self.part(pid)
    }
}

/// Marks every partition of `shards` dirty before their first change: the
/// headers written, then flushed together.
pub fn mark_dirty<'a>(shards: impl Iterator<Item = &'a mut Shard>) -> std::io::Result<()> {
    let shards: Vec<&mut Shard> = shards.collect();
    let mut parts = Vec::new();
    for s in shards {
        s.parts.iter_mut().for_each(Partition::write_dirty);
        parts.extend(s.parts.iter());
    }
    index::flush_together(&parts, Flush::Headers)
}

/// Flushes every partition of `shards` and marks it clean: all the tables
/// flushed together, then all the headers written clean with the
/// checkpoint (`max_seq`, `max_gen`), then those flushed together (no
/// header says clean before every table is on disk).
pub fn mark_clean<'a>(
    shards: impl Iterator<Item = &'a mut Shard>,
    max_seq: u64,
    max_gen: u64,
) -> std::io::Result<()> {
    let mut shards: Vec<&mut Shard> = shards.collect();
    let parts: Vec<&Partition> = shards.iter().flat_map(|s| s.parts.iter()).collect();
    index::flush_together(&parts, Flush::Slots)?;
    let cp = Checkpoint { max_seq, max_gen };
    for s in shards.iter_mut() {
        s.parts.iter_mut().for_each(|p| p.write_clean(cp));
    }
    let parts: Vec<&Partition> = shards.iter().flat_map(|s| s.parts.iter()).collect();
    index::flush_together(&parts, Flush::Headers)
}
