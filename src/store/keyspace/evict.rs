//! Eviction: a poller keeps its shards' live data under the limit by
//! marking keys gone, chosen by `--maxmemory-policy` among a few sampled
//! at random (`store::evict` says how they are compared). A marked key
//! reads as missing at once; its bytes are dead, and compaction reclaims
//! them as it does an expired key's. Nothing is written for it: after a
//! crash an evicted key may come back with its last acknowledged value
//! (never an older one: its record still shadows those), as a cache may.
//!
//! The limit is `--maxmemory` when set, else 85% of what the segments that
//! client writes may fill hold (as full as records pack), which leaves
//! compaction room to work. The limit is the whole store's, and each
//! poller evicts its own keys while the store is past it, as long as its
//! best candidate is as good as every other poller's (`Settings::best`),
//! so that keys go in the policy's order across pollers; a poller with
//! nothing left to evict refuses a write only when no other poller holds
//! a key the policy may take either (`Settings::keys`, `expires`): Redis
//! refuses only when nothing in the whole key space may go, and another
//! poller's eviction lagging behind its writes is no reason to. Eviction
//! runs a bounded number of keys per loop turn, so reads on the same
//! poller keep flowing; a write that finds no free segment while eviction
//! can still make room waits for it, as it waits for compaction.

use std::sync::atomic::Ordering::Relaxed;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::Keyspace;
use crate::index::KeyHash;
use crate::io::Engine;

/// Keys evicted per loop turn at most.
const STEP: usize = 64;
/// Slots scanned from a random place to find one sampled key.
const SCAN: u64 = 32;
/// Slots looked through in order when random samples found no key.
const THOROUGH: u64 = 1 << 20;
/// Fraction of the client-writable segments live data may fill under an
/// evicting policy without `--maxmemory`, in percent.
const FILL_PCT: u64 = 85;

pub(super) struct Evictor {
    rng: Xoshiro256PlusPlus,
    /// Live bytes of the store as last measured, and when.
    live: u64,
    measured_ms: u64,
    /// Live bytes of the fullest segment, as last measured.
    packed: u32,
    /// The last attempt found nothing the policy may evict.
    exhausted: bool,
    /// Redis's eviction pool: the best candidates sampled so far, best
    /// last, each checked again before it goes.
    pool: Vec<Candidate>,
    /// Scores of the last keys sampled at random, for the median score
    /// that decides which of a compaction victim's records go.
    recent: Vec<u64>,
    next_recent: usize,
    /// Their median, once there are enough of them.
    median: Option<u64>,
    /// The shards this poller owns (indices into its `shards`).
    owned: Vec<usize>,
    /// Live bytes are past the limit (or writes wait for space).
    pressure: bool,
}

/// Scores kept for the median.
const RECENT: usize = 64;

/// A sampled key: its score under the policy, partition, tag and the
/// record its entry pointed at.
#[derive(Clone, Copy)]
struct Candidate {
    score: u64,
    pid: u32,
    tag: u64,
    offset: u64,
}

/// Candidates the pool keeps.
const POOL: usize = 16;

/// What one eviction did.
enum Evicted {
    /// A key of this many bytes went.
    Key(u32),
    /// Another poller holds a better candidate: it evicts.
    Elsewhere,
    /// No key the policy may take was found.
    Nothing,
}

impl Evictor {
    pub(super) fn new(seed: u64) -> Self {
        Evictor {
            rng: Xoshiro256PlusPlus::seed_from_u64(0x6e766b76 ^ seed),
            live: 0,
            measured_ms: 0,
            packed: 0,
            exhausted: false,
            pool: Vec::with_capacity(POOL + 8),
            recent: Vec::with_capacity(RECENT),
            next_recent: 0,
            median: None,
            owned: Vec::new(),
            pressure: false,
        }
    }
}

impl<E: Engine, W> Keyspace<E, W> {
    /// Live bytes allowed under the policy: `--maxmemory`, or what the
    /// device holds with room for compaction: a share of the segments
    /// clients may fill, each counted as full as records pack (alignment
    /// leaves large records some padding).
    fn live_limit(&self) -> u64 {
        let sp = &self.space;
        let writable = sp.live.len().saturating_sub(2 * self.reserve()) as u64;
        // The fullest segment of records says how full one packs once
        // sealed; while none is (few small keys, the rest large values'
        // pieces, which fill segments of their own), it is the open one,
        // and would make the limit a few times its little content: a
        // segment is sealed only when a record does not fit, so half of
        // one is the least it holds then.
        let packed = self.evictor.packed.max(sp.segment_size / 2);
        let device = writable * packed as u64 / 100 * FILL_PCT;
        match self.maxmemory() {
            0 => device,
            m => m.min(device),
        }
    }

    /// The store's live bytes, measured at most once per millisecond (a
    /// sum over every segment).
    pub(super) fn live_bytes_now(&mut self) -> u64 {
        if self.evictor.measured_ms != self.now_ms {
            self.evictor.live = self.space.live_bytes();
            self.evictor.packed = self.space.packed_live();
            self.evictor.measured_ms = self.now_ms;
        }
        self.evictor.live
    }

    /// `--maxmemory` as this store follows it (0: none): none on a replica
    /// under `replica-ignore-maxmemory yes` (its store holds expired keys
    /// for its primary's DELs, [`Keyspace::hold_expired`]).
    fn maxmemory(&self) -> u64 {
        if self.gone.hold_expired && self.eviction.replica_ignore.load(Relaxed) {
            0
        } else {
            self.eviction.maxmemory()
        }
    }

    /// Whether `--maxmemory` is set and live data is past it (Redis's
    /// test before a command that adds data).
    pub(super) fn over_maxmemory(&mut self) -> bool {
        let max = self.maxmemory();
        max != 0 && self.live_bytes_now() > max
    }

    /// Live data is past the limit: compaction runs, and evicts from its
    /// victims.
    pub(super) fn evictor_pressure(&self) -> bool {
        self.evictor.pressure
    }

    /// Whether this poller's eviction can still make room for a write
    /// that found none.
    pub(super) fn may_evict(&self) -> bool {
        self.eviction.policy().evicts() && !self.evictor.exhausted
    }

    /// Whether a write past `--maxmemory` may go on for eviction to make
    /// room: some poller, this one or another, holds keys the policy may take
    /// (live keys, or live keys with a TTL under a `volatile-*` policy:
    /// this one's counted now, the others' as they published them). Not
    /// whether this poller's last attempt found one: that flag is reset
    /// whenever its last look saw the store under the limit, which with
    /// several pollers writing can be a moment before a write finds it
    /// past it.
    fn store_may_evict(&self) -> bool {
        let policy = self.eviction.policy();
        if !policy.evicts() {
            return false;
        }
        let shards = || self.shards.iter().flatten();
        let own = match policy.volatile() {
            true => shards().map(crate::store::Shard::expiring).sum::<u64>(),
            false => shards().map(crate::store::Shard::live_keys).sum::<u64>(),
        };
        let slot = self.evict_slot();
        let held = match policy.volatile() {
            true => &self.eviction.expires,
            false => &self.eviction.keys,
        };
        own > 0 || (0..held.len()).any(|i| i != slot && held[i].load(Relaxed) > 0)
    }

    /// One bounded step of eviction; returns whether it evicted anything.
    pub(super) fn evict_turn(&mut self) -> bool {
        let policy = self.eviction.policy();
        if !policy.evicts() {
            return false;
        }
        let live = self.live_bytes_now();
        let limit = self.live_limit();
        // Writes waiting for a segment that compaction cannot free soon:
        // evict whatever the limit says.
        let stuck = self.waiting_since.is_some_and(|since| {
            self.now.saturating_duration_since(since) > std::time::Duration::from_millis(50)
                || !self.reclaimable()
        });
        self.evictor.pressure = live > limit || stuck;
        if self.evictor.pressure {
            // What the other pollers read to know whether this one can
            // still evict (`Settings::keys`), published at each turn while
            // the store is past its limit.
            self.update_key_count();
        }
        if !self.evictor.pressure {
            self.evictor.exhausted = false;
            return false;
        }
        let mut over = live.saturating_sub(limit).max(stuck as u64);
        // A compaction under way evicts from its victim (see
        // `evict_in_place`), which costs no copies: random victims are
        // taken only while it cannot keep up (more than a segment over the
        // limit, or writes waiting). Sampling goes on for the median.
        let seg = self.sb.segment_size as u64;
        if self.compacting() && !stuck && over < seg {
            self.sample(policy);
            return false;
        }
        let (mut evicted, mut freed) = (0, 0);
        while over > 0 && evicted < STEP {
            let bytes = match self.evict_one(policy, stuck) {
                Evicted::Key(bytes) => bytes,
                Evicted::Elsewhere => {
                    self.evictor.exhausted = false;
                    break;
                }
                Evicted::Nothing => {
                    self.evictor.exhausted = true;
                    break;
                }
            };
            self.evictor.exhausted = false;
            over = over.saturating_sub(bytes as u64);
            freed += bytes as u64;
            evicted += 1;
        }
        if evicted > 0 {
            self.evictor.live = self.evictor.live.saturating_sub(freed);
            self.count_evicted(evicted as u64);
            self.update_key_count();
        }
        evicted > 0
    }

    /// Samples `maxmemory-samples` keys into the pool and evicts the best
    /// candidate there, unless another poller published a better one
    /// (`Settings::best`; a poller whose writes wait for room evicts its
    /// own anyway).
    fn evict_one(&mut self, policy: crate::store::evict::Policy, stuck: bool) -> Evicted {
        self.sample(policy);
        let slot = self.evict_slot();
        // The best candidate still as it was sampled goes.
        loop {
            let Some(c) = self.evictor.pool.last().copied() else {
                self.eviction.best[slot].store(0, Relaxed);
                return Evicted::Nothing;
            };
            let rank = policy.rank(c.score, self.now_ms);
            self.eviction.publish_best(slot, rank, self.now_ms);
            if !stuck && self.eviction.better_elsewhere(slot, rank, self.now_ms) {
                return Evicted::Elsewhere;
            }
            self.evictor.pool.pop();
            let part = self.shard_mut(c.pid).part_mut(c.pid);
            let same = part
                .get_at(c.tag, c.offset)
                .is_some_and(|e| !e.tombstone && policy.may_evict(&e));
            if !same {
                continue;
            }
            let Some(e) = part.mark_gone_at(c.tag, c.offset) else {
                continue;
            };
            self.mark_gone_bytes(e);
            self.went(e);
            return Evicted::Key(e.len);
        }
    }

    /// Samples `maxmemory-samples` keys at random into the pool and the
    /// recent scores.
    fn sample(&mut self, policy: crate::store::evict::Policy) {
        // CONFIG SET takes Redis's range; more than 64 samples buys nothing.
        let samples = self.eviction.samples.load(Relaxed).clamp(1, 64);
        if self.evictor.owned.is_empty() {
            self.evictor.owned = (0..self.shards.len())
                .filter(|&s| self.shards[s].is_some())
                .collect();
        }
        let now = self.now_ms;
        // Up to four tries per sample: a volatile policy may need to look
        // further to meet keys with a TTL.
        let (mut tries, mut found) = (0, 0);
        while found < samples && tries < 4 * samples {
            tries += 1;
            let owned = &self.evictor.owned;
            let s = owned[self.evictor.rng.gen_range(0..owned.len())];
            let shard = self.shards[s].as_ref().expect("owned");
            if policy.volatile() && shard.expiring() == 0 {
                continue;
            }
            let parts = shard.partitions();
            let part = &parts[self.evictor.rng.gen_range(0..parts.len())];
            let from = self.evictor.rng.gen_range(0..part.slots());
            let Some((tag, e, word)) = part.sample(from, SCAN, |e| policy.may_evict(e)) else {
                continue;
            };
            found += 1;
            let score = policy.score(&e, word, now);
            let ev = &mut self.evictor;
            if ev.recent.len() < RECENT {
                ev.recent.push(score);
            } else {
                ev.recent[ev.next_recent] = score;
                ev.next_recent = (ev.next_recent + 1) % RECENT;
            }
            let pool = &mut self.evictor.pool;
            if pool.iter().any(|c| c.tag == tag && c.pid == part.id()) {
                continue;
            }
            pool.push(Candidate {
                score,
                pid: part.id(),
                tag,
                offset: e.offset,
            });
        }
        if found == 0 && self.evictor.pool.is_empty() {
            self.sample_thoroughly(policy);
        }
        let ev = &mut self.evictor;
        ev.pool.sort_by_key(|c| c.score);
        if ev.pool.len() > POOL {
            ev.pool.drain(..ev.pool.len() - POOL);
        }
        // Below 8 scores there is no idea yet of what is typical.
        ev.median = (ev.recent.len() >= 8).then(|| {
            let mut sorted = ev.recent.clone();
            let mid = sorted.len() / 2;
            *sorted.select_nth_unstable(mid).1
        });
    }

    /// Random samples found nothing (few keys the policy may take among
    /// many others, or sparse tables): looks through the tables in order,
    /// [`THOROUGH`] slots at most, for one key to put in the pool, so that
    /// a poller holding such keys is not taken for one with none.
    fn sample_thoroughly(&mut self, policy: crate::store::evict::Policy) {
        let mut budget = THOROUGH;
        for s in self.shards.iter().flatten() {
            if policy.volatile() && s.expiring() == 0 {
                continue;
            }
            for part in s.partitions() {
                let n = part.slots().min(budget);
                budget -= n;
                if let Some((tag, e, word)) = part.sample(0, n, |e| policy.may_evict(e)) {
                    self.evictor.pool.push(Candidate {
                        score: policy.score(&e, word, self.now_ms),
                        pid: part.id(),
                        tag,
                        offset: e.offset,
                    });
                    return;
                }
                if budget == 0 {
                    return;
                }
            }
        }
    }

    /// Compaction met live record `e` of key `hash` in its victim: under
    /// eviction pressure, when the policy may take it and it scores at
    /// least the median of keys sampled at random, it is evicted (marked
    /// gone) instead of moved. Evicting from the segments being compacted
    /// spares the copies random victims would cost (CacheLib and Segcache
    /// evict by region or segment for the same reason).
    pub(super) fn evict_in_place(
        &mut self,
        pid: u32,
        hash: &KeyHash,
        e: &crate::index::Entry,
    ) -> bool {
        let policy = self.eviction.policy();
        if !policy.evicts() || !policy.may_evict(e) {
            return false;
        }
        // With some slack below the limit, so that eviction happens here
        // rather than at random victims later.
        let slack = 2 * self.sb.segment_size as u64;
        let near = self.evictor.live + slack > self.live_limit();
        let Some(median) = self
            .evictor
            .median
            .filter(|_| self.evictor.pressure || near)
        else {
            return false;
        };
        let now = self.now_ms;
        let part = self.shard_mut(pid).part_mut(pid);
        let Some(word) = part.access(hash.tag) else {
            return false;
        };
        if policy.score(e, word, now) < median {
            return false;
        }
        let Some(old) = part.mark_gone(hash.tag) else {
            return false;
        };
        self.mark_gone_bytes(old);
        self.went(old);
        self.evictor.live = self.evictor.live.saturating_sub(old.len as u64);
        self.evictor.pressure &=
            self.evictor.live + slack > self.live_limit() || self.waiting_since.is_some();
        self.count_evicted(1);
        true
    }

    /// Counts `n` keys evicted. A replica's own evictions (past its
    /// maxmemory when it follows one, else its device is full) are logged
    /// too, as the count passes 1, 2, 4, 8, ….
    fn count_evicted(&self, n: u64) {
        let before = self.counters.evicted_keys.fetch_add(n, Relaxed);
        let after = before + n;
        if self.gone.hold_expired && (before + 1).next_power_of_two() <= after {
            tracing::warn!(
                evicted_keys = after,
                "a replica evicted keys by its own policy: it no longer holds \
                 every key of its primary"
            );
        }
    }

    /// Whether a command that adds data must be refused, as Redis does:
    /// `--maxmemory` is set, live data is past it, and nothing can be
    /// evicted for it.
    pub fn refuses_over_maxmemory(&mut self) -> bool {
        self.over_maxmemory() && !self.store_may_evict()
    }

    /// A read of the key: its access bits follow (LRU and LFU policies).
    pub fn touch(&mut self, pid: u32, hash: &KeyHash) {
        let policy = self.eviction.policy();
        if policy.tracks_access() {
            let (now, r) = (self.now_ms, self.evictor.rng.gen::<f64>());
            self.shard_mut(pid)
                .part_mut(pid)
                .update_access(hash.tag, |w| policy.on_read(w, now, r));
        }
    }

    /// A client wrote the key (`new`: it did not exist before).
    pub(super) fn touch_written(&mut self, pid: u32, hash: &KeyHash, new: bool) {
        let policy = self.eviction.policy();
        let (now, r) = (self.now_ms, self.evictor.rng.gen::<f64>());
        self.shard_mut(pid)
            .part_mut(pid)
            .update_access(hash.tag, |w| policy.on_write(w, new, now, r));
    }

    /// The key just written is a new object (a transaction deleted it and
    /// set it again): its access bits start afresh.
    pub fn written_as_new(&mut self, pid: u32, hash: &KeyHash) {
        self.touch_written(pid, hash, true);
    }

    // Key space: the access bits as TOUCH, OBJECT and RESTORE see them.

    /// TOUCH: the access bits follow as for a read, under any policy.
    pub fn touch_always(&mut self, pid: u32, hash: &KeyHash) {
        let policy = self.eviction.policy();
        let (now, r) = (self.now_ms, self.evictor.rng.gen::<f64>());
        self.shard_mut(pid)
            .part_mut(pid)
            .update_access(hash.tag, |w| policy.on_touch(w, now, r));
    }

    /// Access bits `word` after a read of their key, under any policy (as
    /// TOUCH): a renamed key's, read before its move.
    pub fn touched(&mut self, word: u32) -> u32 {
        let policy = self.eviction.policy();
        let (now, r) = (self.now_ms, self.evictor.rng.gen::<f64>());
        policy.on_touch(word, now, r)
    }

    /// The access bits of a key: an LRU clock, or an LFU counter under an
    /// LFU policy (see `store::evict`).
    pub fn access(&self, pid: u32, hash: &KeyHash) -> Option<u32> {
        self.shard(pid).part(pid).access(hash.tag)
    }

    /// Replaces the access bits of a key (RESTORE … IDLETIME | FREQ).
    pub fn set_access(&mut self, pid: u32, hash: &KeyHash, word: u32) {
        self.shard_mut(pid)
            .part_mut(pid)
            .update_access(hash.tag, |_| word);
    }
}
