//! Eviction policies (Redis's `maxmemory-policy`) and what the index keeps
//! per key for them: 20 access bits in each slot (see `index`), read as an
//! LRU clock or as an LFU counter, as Redis reads its 24 bits per object.
//!
//! - LRU: seconds since the epoch, modulo 2^20 (a key idle for more than
//!   12 days looks recent again; Redis's 24-bit clock wraps in 194 days).
//! - LFU: minutes modulo 2^12 (the last decrement, wrapping in 68 hours)
//!   and an 8-bit logarithmic counter, with Redis's defaults: a new key
//!   starts at 5, `lfu-log-factor` 10, `lfu-decay-time` 1 minute.
//!
//! A victim is chosen among `maxmemory-samples` keys sampled at random:
//! the longest idle (LRU), the least frequently used (LFU), the nearest to
//! expiry (`volatile-ttl`), or the first (random), as Redis does.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use crate::index::{Entry, ACCESS_BITS};

const ACCESS_MASK: u32 = (1 << ACCESS_BITS) - 1;
const LFU_INIT: u32 = 5;
const LFU_LOG_FACTOR: u32 = 10;
const LFU_DECAY_MIN: u64 = 1;
const LFU_MINUTES_MASK: u64 = (1 << (ACCESS_BITS - 8)) - 1;

/// The eviction settings every poller reads, changed at run time by
/// CONFIG SET: the policy, `maxmemory` (0: none) and
/// `maxmemory-samples`.
#[derive(Debug)]
pub struct Settings {
    pub policy: AtomicU8,
    pub maxmemory: AtomicU64,
    pub samples: AtomicU32,
    /// `replica-ignore-maxmemory` (Redis's default: yes): a replica's
    /// store follows no `maxmemory` of its own, its keys go by its
    /// primary's DELs only.
    pub replica_ignore: AtomicBool,
    /// Per poller (by id, modulo [`POLLER_SLOTS`]): its keys, and its
    /// keys with a TTL, as last counted. A poller that finds nothing to
    /// evict refuses a write only when no other holds a key the policy may
    /// take either.
    pub keys: Box<[AtomicU64]>,
    pub expires: Box<[AtomicU64]>,
    /// Per poller likewise: the rank ([`Policy::rank`]) of the best
    /// candidate its eviction pool held when it last evicted, and when
    /// (see [`Settings::publish_best`]; 0: none). A poller evicts only
    /// while its best is as good as every other's, so keys go in the
    /// policy's order across pollers, as Redis's pool takes them across
    /// the whole key space.
    pub best: Box<[AtomicU64]>,
}

/// Pollers [`Settings::keys`] tells apart.
pub const POLLER_SLOTS: usize = 256;

impl Settings {
    pub fn new(policy: Policy, maxmemory: u64, samples: u32) -> Self {
        Settings {
            policy: policy.code().into(),
            maxmemory: maxmemory.into(),
            samples: samples.into(),
            replica_ignore: true.into(),
            keys: (0..POLLER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            expires: (0..POLLER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            best: (0..POLLER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn policy(&self) -> Policy {
        Policy::from_code(self.policy.load(Relaxed))
    }

    pub fn maxmemory(&self) -> u64 {
        self.maxmemory.load(Relaxed)
    }

    /// Poller `slot`'s best candidate has rank `rank`, as of `now_ms`.
    pub fn publish_best(&self, slot: usize, rank: u64, now_ms: u64) {
        let rank = rank.min(BEST_RANK - 1) + 1;
        self.best[slot].store(now_ms << BEST_BITS | rank, Relaxed);
    }

    /// Whether another poller than `slot` holds a candidate ranked above
    /// `rank`, published in the last [`BEST_FRESH_MS`] before `now_ms`. A
    /// poller that stopped evicting (the store under the limit as it last
    /// looked, or no turn since) holds nobody back for longer.
    pub fn better_elsewhere(&self, slot: usize, rank: u64, now_ms: u64) -> bool {
        let rank = rank.min(BEST_RANK - 1) + 1;
        self.best.iter().enumerate().any(|(i, b)| {
            let b = b.load(Relaxed);
            let (at, theirs) = (b >> BEST_BITS, b & ((1 << BEST_BITS) - 1));
            i != slot && theirs > rank && now_ms.saturating_sub(at) <= BEST_FRESH_MS
        })
    }
}

/// Bits of [`Settings::best`] that hold the rank plus one (the time in
/// milliseconds above them).
const BEST_BITS: u32 = 16;
/// Ranks told apart: an LFU counter's 256 values at most.
const BEST_RANK: u64 = 256;
/// How long a published best candidate holds another poller back.
const BEST_FRESH_MS: u64 = 20;

/// What a full store does when a write needs room: Redis's names and
/// meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Writes are refused (`-OOM`) once live data fills the store.
    #[default]
    NoEviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

/// Redis's order of the names in its error message.
const NAMES: [(&str, Policy); 8] = [
    ("volatile-lru", Policy::VolatileLru),
    ("volatile-lfu", Policy::VolatileLfu),
    ("volatile-random", Policy::VolatileRandom),
    ("volatile-ttl", Policy::VolatileTtl),
    ("allkeys-lru", Policy::AllkeysLru),
    ("allkeys-lfu", Policy::AllkeysLfu),
    ("allkeys-random", Policy::AllkeysRandom),
    ("noeviction", Policy::NoEviction),
];

/// Redis's text for a policy name it does not know.
pub const UNKNOWN_POLICY: &str = "argument(s) must be one of the following: volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction";

impl FromStr for Policy {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|&(_, p)| p)
            .ok_or(UNKNOWN_POLICY)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = NAMES
            .iter()
            .find(|(_, p)| p == self)
            .map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}

impl Policy {
    /// Its number, for an atomic setting.
    pub fn code(self) -> u8 {
        NAMES.iter().position(|(_, p)| *p == self).unwrap_or(7) as u8
    }

    pub fn from_code(c: u8) -> Self {
        NAMES
            .get(c as usize)
            .map_or(Policy::NoEviction, |&(_, p)| p)
    }

    /// Only keys with a TTL may be evicted.
    pub fn volatile(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    pub fn evicts(self) -> bool {
        self != Policy::NoEviction
    }

    pub fn lfu(self) -> bool {
        matches!(self, Policy::AllkeysLfu | Policy::VolatileLfu)
    }

    fn lru(self) -> bool {
        matches!(self, Policy::AllkeysLru | Policy::VolatileLru)
    }

    /// Whether reads and writes must update the access bits.
    pub fn tracks_access(self) -> bool {
        self.lfu() || self.lru()
    }

    /// Whether `e` may be evicted under this policy.
    pub fn may_evict(self, e: &Entry) -> bool {
        !self.volatile() || e.expire_ms != 0
    }

    /// The access bits after a read of the key.
    pub fn on_read(self, word: u32, now_ms: u64, rand: f64) -> u32 {
        if self.lfu() {
            lfu_touch(word, now_ms, rand)
        } else if self.lru() {
            lru_clock(now_ms)
        } else {
            word
        }
    }

    /// The access bits after a write of the key (`new`: it did not
    /// exist). Under a policy that does not track reads, a write still
    /// sets the LRU clock (OBJECT IDLETIME reads it; the slot is written
    /// anyway).
    pub fn on_write(self, word: u32, new: bool, now_ms: u64, rand: f64) -> u32 {
        if self.lfu() && new {
            lfu_pack(minutes(now_ms), LFU_INIT)
        } else {
            self.on_touch(word, now_ms, rand)
        }
    }

    /// The access bits after TOUCH, whatever the policy: the LFU counter
    /// under an LFU policy, the LRU clock under any other (as Redis keeps
    /// one of the two for every key).
    pub fn on_touch(self, word: u32, now_ms: u64, rand: f64) -> u32 {
        if self.lfu() {
            lfu_touch(word, now_ms, rand)
        } else {
            lru_clock(now_ms)
        }
    }

    /// How good a victim a key is: the higher, the sooner it goes.
    pub fn score(self, e: &Entry, word: u32, now_ms: u64) -> u64 {
        match self {
            Policy::AllkeysLru | Policy::VolatileLru => lru_idle(word, now_ms),
            Policy::AllkeysLfu | Policy::VolatileLfu => 255 - lfu_count(word, now_ms) as u64,
            Policy::VolatileTtl => u64::MAX - e.expire_ms,
            _ => 0,
        }
    }

    /// A victim's score as pollers compare theirs ([`Settings::best`]):
    /// coarse where the score is fine-grained, so that keys of about the
    /// same worth on two pollers go together rather than one at a time
    /// from each in turn. The remaining TTL (`volatile-ttl`) and the idle
    /// time (LRU) count by their power of two; an LFU counter is already
    /// logarithmic and counts as it is.
    pub fn rank(self, score: u64, now_ms: u64) -> u64 {
        let bits = |v: u64| (u64::BITS - v.leading_zeros()) as u64;
        match self {
            Policy::VolatileTtl => {
                let expire_ms = u64::MAX - score;
                64 - bits(expire_ms.saturating_sub(now_ms))
            }
            Policy::AllkeysLru | Policy::VolatileLru => bits(score),
            _ => score,
        }
    }
}

/// The LRU clock: seconds, modulo 2^20.
pub fn lru_clock(now_ms: u64) -> u32 {
    ((now_ms / 1000) as u32) & ACCESS_MASK
}

/// The LRU bits of a key last used `idle_s` seconds before `now_ms`
/// (RESTORE … IDLETIME).
pub fn lru_word_idle(idle_s: u64, now_ms: u64) -> u32 {
    lru_clock(now_ms.saturating_sub(idle_s.saturating_mul(1000)))
}

/// The LFU bits of a key with counter `freq`, decremented now (RESTORE …
/// FREQ).
pub fn lfu_word(freq: u8, now_ms: u64) -> u32 {
    lfu_pack(minutes(now_ms), freq as u32)
}

/// Seconds since a key with LRU bits `word` was used (OBJECT IDLETIME).
pub fn lru_idle(word: u32, now_ms: u64) -> u64 {
    (lru_clock(now_ms).wrapping_sub(word) & ACCESS_MASK) as u64
}

fn minutes(now_ms: u64) -> u64 {
    (now_ms / 60_000) & LFU_MINUTES_MASK
}

fn lfu_pack(minutes: u64, counter: u32) -> u32 {
    ((minutes as u32) << 8) | counter.min(255)
}

/// The counter after the decay due since its last decrement (OBJECT
/// FREQ).
pub fn lfu_count(word: u32, now_ms: u64) -> u32 {
    let (last, counter) = ((word >> 8) as u64, word & 0xFF);
    let elapsed = minutes(now_ms).wrapping_sub(last) & LFU_MINUTES_MASK;
    let periods = elapsed / LFU_DECAY_MIN;
    counter.saturating_sub(periods.min(255) as u32)
}

/// Redis's LFU update: decay, then a logarithmic increment (`rand` in
/// [0, 1)).
fn lfu_touch(word: u32, now_ms: u64, rand: f64) -> u32 {
    let mut c = lfu_count(word, now_ms);
    if c < 255 {
        let base = c.saturating_sub(LFU_INIT) as f64;
        if rand < 1.0 / (base * LFU_LOG_FACTOR as f64 + 1.0) {
            c += 1;
        }
    }
    lfu_pack(minutes(now_ms), c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expire_ms: u64) -> Entry {
        Entry {
            offset: 4096,
            len: 64,
            tombstone: false,
            expire_ms,
        }
    }

    #[test]
    fn ranks_tell_apart_what_matters_and_hold_others_back_while_fresh() {
        let p = Policy::VolatileTtl;
        let now = 1_000_000;
        let rank = |expire_ms| p.rank(p.score(&entry(expire_ms), 0, now), now);
        // A millisecond apart: the same rank; 100 s against 10,000 s: not.
        assert_eq!(rank(now + 100_000), rank(now + 100_001));
        assert!(rank(now + 100_000) > rank(now + 10_000_000));
        assert!(rank(now) > rank(now + 1));
        let lru = Policy::AllkeysLru;
        assert!(lru.rank(1000, now) > lru.rank(10, now));
        assert_eq!(lru.rank(1000, now), lru.rank(1001, now));

        let s = Settings::new(p, 1 << 20, 5);
        s.publish_best(1, rank(now + 100_000), now);
        let late = rank(now + 10_000_000);
        assert!(s.better_elsewhere(0, late, now));
        assert!(!s.better_elsewhere(1, late, now), "its own");
        assert!(!s.better_elsewhere(0, rank(now + 100_000), now), "as good");
        assert!(s.better_elsewhere(0, late, now + BEST_FRESH_MS));
        assert!(
            !s.better_elsewhere(0, late, now + BEST_FRESH_MS + 1),
            "stale"
        );
        s.best[1].store(0, Relaxed);
        assert!(!s.better_elsewhere(0, late, now), "none");
    }

    #[test]
    fn names_round_trip_and_unknown_names_get_redis_text() {
        for (n, p) in NAMES {
            assert_eq!(n.parse::<Policy>(), Ok(p));
            assert_eq!(p.to_string(), n);
            assert_eq!(Policy::from_code(p.code()), p);
        }
        assert_eq!("ALLKEYS-LRU".parse::<Policy>(), Ok(Policy::AllkeysLru));
        assert_eq!("lru".parse::<Policy>(), Err(UNKNOWN_POLICY));
    }

    /// OBJECT IDLETIME and FREQ read these: a write sets the LRU clock
    /// under every policy but LFU; TOUCH moves it (or the LFU counter)
    /// whatever the policy; RESTORE's IDLETIME and FREQ set them.
    #[test]
    fn writes_and_touches_keep_the_clock_under_every_policy() {
        let now = 1_000_000_000_000;
        for p in [
            Policy::NoEviction,
            Policy::AllkeysRandom,
            Policy::VolatileTtl,
        ] {
            assert_eq!(p.on_write(0, true, now, 0.0), lru_clock(now));
            assert_eq!(p.on_read(7, now, 0.0), 7, "reads leave it");
            assert_eq!(p.on_touch(7, now + 3_000, 0.0), lru_clock(now + 3_000));
        }
        assert_eq!(lru_idle(lru_word_idle(1000, now), now), 1000);
        let lfu = Policy::AllkeysLfu;
        let w = lfu.on_write(0, true, now, 0.5);
        assert_eq!(lfu_count(w, now), LFU_INIT);
        assert_eq!(lfu_count(lfu.on_touch(w, now, 0.5), now), LFU_INIT + 1);
        assert_eq!(lfu_count(lfu_word(100, now), now), 100);
    }

    #[test]
    fn lru_prefers_the_longest_idle_and_survives_the_clock_wrapping() {
        let p = Policy::AllkeysLru;
        let now = 1_000_000_000_000;
        let old = p.on_write(0, true, now - 50_000, 0.0);
        let young = p.on_read(old, now - 1_000, 0.0);
        assert!(p.score(&entry(0), old, now) > p.score(&entry(0), young, now));
        assert_eq!(p.score(&entry(0), old, now), 50);
        // Across the wrap of the 20-bit clock.
        let wrap = (1u64 << ACCESS_BITS) * 1000;
        let w = p.on_write(0, true, wrap - 3_000, 0.0);
        assert_eq!(p.score(&entry(0), w, wrap + 2_000), 5);
    }

    #[test]
    fn lfu_counts_logarithmically_and_decays_per_minute() {
        let p = Policy::AllkeysLfu;
        let now = 7_200_000;
        let mut w = p.on_write(0, true, now, 0.0);
        assert_eq!(lfu_count(w, now), LFU_INIT);
        for _ in 0..10 {
            w = p.on_read(w, now, 0.0); // rand 0: always counts
        }
        assert_eq!(lfu_count(w, now), LFU_INIT + 10);
        // With rand near 1 the counter above its start rarely grows.
        assert_eq!(lfu_count(p.on_read(w, now, 0.99), now), LFU_INIT + 10);
        assert_eq!(lfu_count(w, now + 3 * 60_000), LFU_INIT + 7);
        let cold = p.on_write(0, true, now, 0.0);
        assert!(p.score(&entry(0), cold, now) > p.score(&entry(0), w, now));
    }

    #[test]
    fn volatile_policies_only_take_keys_with_a_ttl_and_ttl_takes_the_nearest() {
        let p = Policy::VolatileTtl;
        assert!(!p.may_evict(&entry(0)));
        assert!(p.may_evict(&entry(5)));
        assert!(p.score(&entry(5), 0, 0) > p.score(&entry(9), 0, 0));
        assert!(Policy::AllkeysRandom.may_evict(&entry(0)));
        assert!(!Policy::NoEviction.evicts());
    }
}
