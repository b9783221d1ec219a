//! Active expiry: every few milliseconds a sweep visits part of the index
//! and marks expired keys gone, so DBSIZE and INFO follow and compaction
//! reclaims their bytes. Each sweep visits a bounded number of slots per
//! shard (tables without keys with a TTL cost nothing); as Redis's expire
//! cycle, it comes back sooner while a quarter or more of the keys with a
//! TTL it meets have expired.

use std::sync::atomic::Ordering::Relaxed;

use super::Keyspace;
use crate::index::{Entry, KeyHash, Sweep};
use crate::io::Engine;

/// Index slots per shard one sweep visits.
const SWEEP_SLOTS: u64 = 2048;

#[derive(Debug, Default)]
pub(super) struct Sweeper {
    next_ms: u64,
}

impl<E: Engine, W> Keyspace<E, W> {
    /// Sweeps for expired keys when a sweep is due; whether it found any.
    pub fn expire(&mut self) -> bool {
        self.read_gone();
        if self.now_ms < self.sweep.next_ms || self.gone.hold_expired {
            return false;
        }
        let now = self.now_ms;
        let (space, sb) = (&self.space, &self.sb);
        let mut went = Vec::new();
        let mut gone = |e: Entry| {
            space.gone[sb.segment_of(e.offset) as usize].fetch_add(e.len, Relaxed);
            went.push(e);
        };
        let mut sweep = Sweep::default();
        for s in self.shards.iter_mut().flatten() {
            sweep += s.reap_expired(SWEEP_SLOTS, now, &mut gone);
        }
        let report = self.gone.on();
        for e in went {
            // The pieces of a large value that expired are free to go.
            self.release_head(e.offset);
            if report {
                self.went(e);
            }
        }
        let stale = sweep.reaped * 4 >= (sweep.reaped + sweep.ttl_seen).max(1);
        self.sweep.next_ms = now + if stale && sweep.reaped > 0 { 1 } else { 5 };
        let st = &self.counters;
        if let Some(seen) = sweep.ttl_sum_ms.checked_div(sweep.ttl_seen) {
            // Redis's estimate: a slow moving average of the TTLs seen.
            let avg = st.avg_ttl_ms.load(Relaxed);
            let avg = if avg == 0 {
                seen
            } else {
                avg / 50 * 49 + seen / 50
            };
            st.avg_ttl_ms.store(avg, Relaxed);
        }
        if sweep.reaped > 0 {
            st.expired_keys.fetch_add(sweep.reaped, Relaxed);
            self.update_key_count();
        }
        sweep.reaped > 0
    }

    /// A key found expired by a request: marks it gone (its bytes become
    /// reclaimable), as the sweep would have.
    pub(super) fn reap_found(&mut self, pid: u32, hash: &KeyHash, offset: u64) {
        if let Some(e) = (self.shard_mut(pid).part_mut(pid)).mark_gone_at(hash.tag, offset) {
            self.mark_gone_bytes(e);
            self.went(e);
            self.counters.expired_keys.fetch_add(1, Relaxed);
            self.update_key_count();
        }
    }

    /// The bytes of `e`, just marked gone, are reclaimable (and, for the
    /// head of a large value, its pieces).
    pub(super) fn mark_gone_bytes(&mut self, e: Entry) {
        let seg = self.sb.segment_of(e.offset) as usize;
        self.space.gone[seg].fetch_add(e.len, Relaxed);
        self.release_head(e.offset);
    }
}
