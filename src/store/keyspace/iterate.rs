//! Key iteration over the index (SCAN, KEYS, RANDOMKEY): which entries a
//! step visits. The index holds no key names: the poller reads each
//! entry's record to learn its key. A KEYS or a SCAN step pins the
//! segments of the records it still has to read, so that what it took
//! at one instant stays readable: a segment emptied meanwhile (its keys
//! deleted, or moved by compaction) keeps its records until they are
//! read, and is erased and reused only then.

use super::Keyspace;
use crate::index::Entry;
use crate::io::Engine;

impl<E: Engine, W> Keyspace<E, W> {
    /// Key iteration will read the record at `offset`: its segment is not
    /// erased nor reused until [`Keyspace::unpin_record`].
    pub fn pin_record(&mut self, offset: u64) {
        let seg = self.sb.segment_of(offset) as usize;
        self.pins[seg] += 1;
    }

    /// The record at `offset`, pinned, is read (or no longer wanted); an
    /// emptied segment with no record left to read goes on to be erased
    /// and freed (`release_segments`).
    pub fn unpin_record(&mut self, offset: u64) {
        let seg = self.sb.segment_of(offset) as usize;
        debug_assert!(self.pins[seg] > 0, "a pinned record");
        self.pins[seg] = self.pins[seg].saturating_sub(1);
    }

    /// Whether key iteration still has records of segment `seg` to read.
    pub(super) fn pinned(&self, seg: u32) -> bool {
        self.pins[seg as usize] > 0
    }

    /// The entries of partition `pid` whose tags lie in `[from, to)`, at
    /// least `count` of them when the partition has that many there;
    /// returns `to`, `None` at the end of the tag space (see
    /// [`crate::index::Partition::scan_tags`]). Tombstones and markers are
    /// left out, and so are keys expired at this turn's time.
    pub fn scan_partition(
        &self,
        pid: u32,
        from: u64,
        count: usize,
        grain: u32,
        out: &mut Vec<(u64, Entry)>,
    ) -> Option<u64> {
        let first = out.len();
        let to = self
            .shard(pid)
            .partition(pid)
            .scan_tags(from, count, grain, out);
        let now = self.now_ms;
        let mut k = first;
        for n in first..out.len() {
            if out[n].1.live(now) {
                out[k] = out[n];
                k += 1;
            }
        }
        out.truncate(k);
        to
    }

    /// The partitions this keyspace owns, in id order.
    pub fn partition_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (self.shards.iter().flatten())
            .flat_map(|s| s.partition_ids())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Live keys in this keyspace's partitions (keys expired but not
    /// reaped yet count).
    pub fn live_keys(&self) -> u64 {
        (self.shards.iter().flatten())
            .flat_map(|s| s.partitions())
            .map(|p| p.live_keys())
            .sum()
    }

    /// The live entry of the key whose tag is `tag` in partition `pid`.
    pub fn live_entry(&self, pid: u32, tag: u64) -> Option<Entry> {
        let e = self.shard(pid).partition(pid).get_tag(tag)?;
        e.live(self.now_ms).then_some(e)
    }

    /// The live entries of `tag` (short tags: of every key sharing it).
    pub fn live_entries(&self, pid: u32, tag: u64) -> Vec<Entry> {
        let part = self.shard(pid).partition(pid);
        (part.candidate_entries(tag))
            .filter(|e| e.live(self.now_ms))
            .collect()
    }

    /// A live key's entry, picked at random (`seed`) among this keyspace's
    /// partitions in proportion to their live keys, then at a random slot
    /// of the partition: `(pid, tag, entry)`; `None` when no key is live.
    /// Entries whose offset `skip` names are passed by (a transaction's
    /// keys, which its view answers for).
    pub fn random_entry(&self, seed: u64, skip: impl Fn(u64) -> bool) -> Option<(u32, u64, Entry)> {
        let parts: Vec<_> = (self.shards.iter().flatten())
            .flat_map(|s| s.partitions())
            .collect();
        let total: u64 = parts.iter().map(|p| p.live_keys()).sum();
        if total == 0 {
            return None;
        }
        let now = self.now_ms;
        let mut pick = seed % total;
        let start = parts
            .iter()
            .position(|p| {
                let n = p.live_keys();
                if pick < n {
                    return true;
                }
                pick -= n;
                false
            })
            .unwrap_or(0);
        // Keys expired but not reaped yet count as live: the sample skips
        // them, and moves on to the next partitions when one has only those.
        for k in 0..parts.len() {
            let p = parts[(start + k) % parts.len()];
            let from = seed.rotate_left(17) % p.slots();
            if let Some((tag, e, _)) = p.sample(from, p.slots(), |e| e.live(now) && !skip(e.offset))
            {
                return Some((p.id(), tag, e));
            }
        }
        None
    }
}
