//! A model check of the write path: a random sequence of SETs, DELs,
//! EXPIREs, time moving on, compaction, eviction, injected device faults,
//! crashes and clean restarts runs against a real store (a file, io_uring,
//! the [`Faulty`] engine) through its [`Keyspace`], with no server, no
//! TCP and no sleeps (a [`ManualClock`]), and every GET is checked against
//! a map of what was acknowledged.
//!
//! The invariant, as the server promises it: a GET returns the latest
//! acknowledged value of its key, or nil when that expired or was deleted.
//! After a crash, a write that was in flight (never acknowledged) or whose
//! commit failed may also have reached the device and count; nothing older
//! than the latest acknowledged write ever does, nor anything expired.
//! Once eviction has taken a key, nil is right for it too.
//!
//! Some SETs write values larger than a segment (in pieces, see
//! `keyspace/large.rs`), and EXPIRE and PERSIST on those write a head
//! sharing the pieces, as the server does; a GET reads and checks the
//! pieces.
//!
//! The steps come from bytes, so the same runner serves a property test
//! (`tests/store_model.rs`) and a fuzz target (`fuzz_targets/store_model.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::clock::{unix_ms, ManualClock};
use super::evict::{Policy, Settings};
use super::keyspace::{self, Keyspace, Tag, WriteError};
use super::{create_empty, CreateArgs, DirLock, Space, Store};
use crate::format::{align_down, align_up, decode_record, LargeHead, PieceHeader, Superblock};
use crate::index::{Entry, KeyHash};
use crate::io::{Device, Engine, EnvOptions, EventFd, FaultSpec, Faulty, Uring};

/// Keys the steps write: few, so that they overwrite each other.
const KEYS: u8 = 64;
/// Segment and store sizes: small, so that compaction and eviction run.
const SEGMENT: u64 = 128 << 10;
const CAPACITY: u64 = 4 << 20;
/// Largest value written in a record, and in pieces (up to four).
const MAX_VALUE: usize = 24 << 10;
const MAX_LARGE: usize = 480 << 10;
/// Turns a step may take to finish before the run counts as stuck.
const MAX_TURNS: usize = 20_000;

/// What a run did, so that a test can tell it was not vacuous.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub steps: usize,
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub writes_refused: u64,
    pub gets_checked: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub compactions: u64,
    pub expired: u64,
    pub evicted: u64,
    /// Values larger than a segment written (in pieces).
    pub large_writes: u64,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Writes that go out together (one group commit, or a few).
    Batch(Vec<Write>),
    /// The same, and the process dies after `turns` loop turns, before the
    /// writes are all acknowledged.
    CrashDuring(Vec<Write>, u8),
    /// Time moves on.
    Advance(u32),
    /// Background work: expiry, compaction, eviction.
    Turns(u16),
    /// A clean shutdown and a restart.
    Restart,
    /// `maxmemory-policy` and `maxmemory` change.
    Evict(Policy, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Set {
        key: u8,
        len: usize,
        ttl_ms: u32,
    },
    Del {
        key: u8,
    },
    /// EXPIRE on the key's current value (nothing when it is missing).
    Expire {
        key: u8,
        ttl_ms: u32,
    },
    /// PERSIST (nothing when it has no TTL).
    Persist {
        key: u8,
    },
}

/// Reads steps from bytes; the first two bytes choose injected faults.
pub fn decode(bytes: &[u8]) -> (Option<FaultSpec>, Vec<Step>) {
    let mut b = bytes.iter().copied();
    let mut next = move || b.next();
    let faults = match (next(), next()) {
        (Some(k), Some(n)) if k % 4 != 0 => {
            let kind = ["write-eio", "flush-eio", "short-write"][(k % 4 - 1) as usize];
            let sticky = if k & 0x80 != 0 { "+" } else { "" };
            format!("{kind}@{}{sticky}", 2 + n as u32 * 3).parse().ok()
        }
        _ => None,
    };
    let mut steps = Vec::new();
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        let step = match op % 16 {
            0..=8 => {
                let n = 1 + arg as usize % 6;
                let writes = (0..n).map_while(|_| write(&mut next)).collect();
                Step::Batch(writes)
            }
            9 => {
                let n = 1 + arg as usize % 6;
                let writes = (0..n).map_while(|_| write(&mut next)).collect();
                Step::CrashDuring(writes, next().unwrap_or(0) % 8)
            }
            10 | 11 => Step::Advance(arg as u32 * 37),
            12 | 13 => Step::Turns(1 + arg as u16 * 4),
            14 => Step::Restart,
            _ => {
                let policy =
                    [Policy::NoEviction, Policy::AllkeysLru, Policy::VolatileTtl][arg as usize % 3];
                Step::Evict(policy, (256 << 10) * (1 + (arg as u64 >> 2) % 8))
            }
        };
        steps.push(step);
    }
    (faults, steps)
}

fn write(next: &mut impl FnMut() -> Option<u8>) -> Option<Write> {
    let (op, key, a, b) = (next()?, next()?, next()?, next()?);
    let key = key % KEYS;
    let ttl_ms = match a % 4 {
        0 => 0,
        _ => 1 + (a as u32 * 29 + b as u32) % 3000,
    };
    Some(match op % 8 {
        0..=3 => Write::Set {
            key,
            len: (a as usize * 256 + b as usize * 97) % MAX_VALUE,
            ttl_ms,
        },
        // Larger than a segment: one to four pieces.
        4 => Write::Set {
            key,
            len: SEGMENT as usize
                + (a as usize * 1031 + b as usize * 97) % (MAX_LARGE - SEGMENT as usize),
            ttl_ms,
        },
        5 => Write::Del { key },
        6 => Write::Expire {
            key,
            ttl_ms: ttl_ms.max(1),
        },
        _ => Write::Persist { key },
    })
}

/// A value with its expiry, as a GET sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Val {
    value: Vec<u8>,
    expire_ms: u64,
}

impl Val {
    fn visible(v: &Option<Val>, now: u64) -> Option<&Val> {
        v.as_ref().filter(|v| v.expire_ms == 0 || v.expire_ms > now)
    }
}

/// What the model knows of one key.
#[derive(Debug, Default)]
struct KeyState {
    /// The latest acknowledged write, and its number.
    acked: Option<Val>,
    acked_n: u64,
    /// Writes after it that were not acknowledged (in flight at a crash,
    /// or failed): after a crash any of them may be what the device has.
    maybe: Vec<Option<Val>>,
    /// The write numbers of `maybe`.
    numbers: Vec<u64>,
}

/// The store as the run has it open.
struct Open {
    ks: Keyspace<Faulty<Uring>, u64>,
    sb: Superblock,
    space: Arc<Space>,
    _lock: DirLock,
    _dev: Device,
    _bell: EventFd,
    uuid: [u8; 16],
    partitions: u32,
}

struct Runner<'a> {
    dir: &'a Path,
    faults: Option<FaultSpec>,
    clock: ManualClock,
    eviction: Arc<Settings>,
    keys: BTreeMap<u8, KeyState>,
    writes: u64,
    /// Every write answered so far, and whether it was acknowledged (or
    /// its commit failed): whichever turn took the answer, as the server
    /// replies to whatever a loop turn answers (a turn run while a later
    /// write waits for room answers earlier ones too).
    answers: BTreeMap<u64, bool>,
    report: Report,
    /// Eviction took a key at some point: nil is a right answer for any.
    evicted: bool,
    store: Option<Open>,
    /// The head record's value of the large value the last GET read.
    last_head: Option<Vec<u8>>,
}

/// Runs `bytes` as steps against a fresh store in `dir` (empty). `Err`
/// says which GET broke the invariant, or which step could not finish.
pub fn run(dir: &Path, bytes: &[u8]) -> Result<Report, String> {
    let (faults, steps) = decode(bytes);
    let mut r = Runner::create(dir, faults)?;
    r.open()?;
    for step in steps {
        r.report.steps += 1;
        r.step(step)?;
    }
    // No crash since the last step settled: memory must hold exactly what
    // was acknowledged (a failed commit's writes stay maybes: the next
    // crash may find them on the device).
    r.check_all(true)?;
    r.restart()?;
    r.check_all(true)?;
    Ok(r.report)
}

impl<'a> Runner<'a> {
    /// A runner on a fresh store in `dir` (empty), not opened yet.
    fn create(dir: &'a Path, faults: Option<FaultSpec>) -> Result<Self, String> {
        let args = CreateArgs {
            capacity: Some(CAPACITY),
            segment_size: SEGMENT,
            shards: 2,
            partitions: 4,
            ..CreateArgs::default()
        };
        create_empty(dir, &args, &EnvOptions::default())
            .map_err(|e| format!("creating the store: {e}"))?;
        Ok(Runner {
            dir,
            faults,
            // Far ahead of the system's clock, so that a rebuild (which
            // judges expiry by the system's clock) never drops a record the
            // run still counts as live.
            clock: ManualClock::at(unix_ms() + 365 * 86_400_000),
            eviction: Arc::new(Settings::new(Policy::NoEviction, 0, 5)),
            keys: BTreeMap::new(),
            writes: 0,
            answers: BTreeMap::new(),
            report: Report::default(),
            evicted: false,
            store: None,
            last_head: None,
        })
    }

    fn open(&mut self) -> Result<(), String> {
        let mut store = Store::open(self.dir, &EnvOptions::default())
            .map_err(|e| format!("opening the store: {e}"))?;
        // As the server does before its first write: a crash from here on
        // finds the index dirty and rebuilds it.
        super::shard::mark_dirty(store.shards.iter_mut())
            .map_err(|e| format!("marking the index dirty: {e}"))?;
        let bell = EventFd::new().map_err(|e| e.to_string())?;
        let eng = Uring::new(&store.dev, 64, &bell).map_err(|e| format!("io_uring: {e}"))?;
        let eng = Faulty::new(eng, self.faults.clone().unwrap_or_default());
        let mut shards: Vec<_> = (0..store.sb.shards).map(|_| None).collect();
        for s in store.shards {
            let id = s.id as usize;
            shards[id] = Some(s);
        }
        let space = Arc::new(store.space);
        let common = keyspace::Common {
            sb: store.sb.clone(),
            space: Arc::clone(&space),
            eviction: Arc::clone(&self.eviction),
        };
        let cfg = keyspace::Config {
            sync: true,
            commit_interval: Duration::from_millis(2),
            compact_below: 0.5,
            pollers: 1,
        };
        let clock = Arc::new(self.clock.clone());
        let counters = Arc::default();
        let ks = Keyspace::new(
            0,
            eng,
            &common,
            shards,
            store.next_seq,
            cfg,
            clock,
            counters,
        );
        self.store = Some(Open {
            ks,
            sb: store.sb.clone(),
            space,
            _lock: store.lock,
            _dev: store.dev,
            _bell: bell,
            uuid: store.sb.uuid,
            partitions: store.sb.partitions,
        });
        Ok(())
    }

    fn ks(&mut self) -> &mut Keyspace<Faulty<Uring>, u64> {
        &mut self.store.as_mut().expect("open").ks
    }

    fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Batch(writes) => {
                let pending = self.apply(&writes)?;
                self.settle(pending)?;
                for w in &writes {
                    self.check(key_of(w), true)?;
                }
            }
            Step::CrashDuring(writes, turns) => {
                self.apply(&writes)?;
                for _ in 0..turns {
                    self.turn();
                }
                self.crash()?;
            }
            Step::Advance(ms) => self.clock.advance(Duration::from_millis(ms as u64)),
            Step::Turns(n) => {
                for _ in 0..n {
                    self.clock.advance(Duration::from_millis(1));
                    self.turn();
                }
                self.settle(Vec::new())?;
            }
            Step::Restart => {
                self.restart()?;
                self.check_all(true)?;
            }
            Step::Evict(policy, maxmemory) => {
                let m = if policy.evicts() { maxmemory } else { 0 };
                self.eviction.policy.store(policy.code(), Relaxed);
                self.eviction.maxmemory.store(m, Relaxed);
            }
        }
        Ok(())
    }

    /// Appends `writes` as the server would; returns the numbers of those
    /// that wait for their commit.
    fn apply(&mut self, writes: &[Write]) -> Result<Vec<u64>, String> {
        let mut pending = Vec::new();
        // Keys with a large value on its way: as the server holds such a
        // key, a later write of it waits for the first to be answered.
        let mut large_keys = Vec::new();
        for w in writes {
            let key = key_of(w);
            if large_keys.contains(&key) {
                self.settle(std::mem::take(&mut pending))?;
                large_keys.clear();
            }
            let now = self.tick();
            let cur = self.get(key)?;
            let head = self.last_head.take();
            let new = match w {
                Write::Set { key, len, ttl_ms } => {
                    let n = self.writes + 1;
                    Some(Val {
                        value: value_of(*key, n, *len),
                        expire_ms: if *ttl_ms == 0 {
                            0
                        } else {
                            now + *ttl_ms as u64
                        },
                    })
                }
                Write::Del { .. } => None,
                Write::Expire { ttl_ms, .. } => match cur {
                    None => continue,
                    Some(v) => Some(Val {
                        expire_ms: now + *ttl_ms as u64,
                        ..v
                    }),
                },
                Write::Persist { .. } => match cur {
                    Some(v) if v.expire_ms != 0 => Some(Val { expire_ms: 0, ..v }),
                    _ => continue,
                },
            };
            // EXPIRE and PERSIST of a large value rewrite its head only.
            let head = head.filter(|_| matches!(w, Write::Expire { .. } | Write::Persist { .. }));
            let large = matches!(w, Write::Set { len, .. } if *len > MAX_VALUE);
            if let Some(n) = self.write(key, new, head)? {
                pending.push(n);
                if large {
                    large_keys.push(key);
                }
            }
        }
        Ok(pending)
    }

    /// Writes one record, retrying while the store makes room; returns
    /// its number, or `None` when the store refused it.
    fn write(
        &mut self,
        key: u8,
        new: Option<Val>,
        head: Option<Vec<u8>>,
    ) -> Result<Option<u64>, String> {
        let n = match head {
            Some(head) => {
                let expire_ms = new.as_ref().expect("a value").expire_ms;
                self.write_head(&key_bytes(key), &head, expire_ms)?
            }
            None => self.write_raw(&key_bytes(key), new.as_ref())?,
        };
        if let Some(n) = n {
            let st = self.keys.entry(key).or_default();
            st.maybe.push(new);
            st.numbers.push(n);
        }
        Ok(n)
    }

    /// Writes a head sharing the pieces of a large value (EXPIRE, PERSIST).
    fn write_head(
        &mut self,
        key: &[u8],
        head: &[u8],
        expire_ms: u64,
    ) -> Result<Option<u64>, String> {
        let hash = KeyHash::of(key);
        let pid = self.pid(&hash);
        self.resolve(key)?;
        let written = self.ks().write_head(pid, &hash, key, head, expire_ms);
        self.ks().clear_new();
        match written {
            Ok(()) => {
                self.writes += 1;
                let n = self.writes;
                let waits = self.ks().acknowledge(n).is_none();
                assert!(waits, "the model runs with synchronous commits");
                Ok(Some(n))
            }
            Err(WriteError::Full) => {
                self.report.writes_refused += 1;
                Ok(None)
            }
            Err(e) => Err(format!("head write failed: {e}")),
        }
    }

    /// Writes `key` as the server does, outside the model's keys.
    fn write_raw(&mut self, key: &[u8], new: Option<&Val>) -> Result<Option<u64>, String> {
        let hash = KeyHash::of(key);
        let pid = self.pid(&hash);
        let key_text = String::from_utf8_lossy(key).into_owned();
        if let Some(v) = new.filter(|v| self.ks().is_large(key.len(), v.value.len())) {
            // A value in pieces: the store does not wait for room for it.
            // Its head replaces the key's own entry (short tags).
            self.resolve(key)?;
            let n = self.writes + 1;
            let written =
                self.ks()
                    .write_large(pid, &hash, key, v.value.clone().into(), v.expire_ms, n);
            self.ks().clear_new();
            return match written {
                Ok(()) => {
                    self.writes = n;
                    self.report.large_writes += 1;
                    Ok(Some(n))
                }
                Err((_, WriteError::Full)) => {
                    self.report.writes_refused += 1;
                    Ok(None)
                }
                Err((_, e)) => Err(format!("large write of key {key_text} failed: {e}")),
            };
        }
        let mut waiting = None;
        for _ in 0..MAX_TURNS {
            self.resolve(key)?;
            let ks = self.ks();
            let result = match new {
                Some(v) => ks.write(pid, &hash, key, &v.value, v.expire_ms, false),
                None => ks.write(pid, &hash, key, &[], 0, true),
            };
            ks.clear_new();
            match result {
                Ok(()) => {
                    self.writes += 1;
                    let n = self.writes;
                    let waits = self.ks().acknowledge(n).is_none();
                    assert!(waits, "the model runs with synchronous commits");
                    return Ok(Some(n));
                }
                Err(WriteError::Full)
                    if self.ks().may_make_room()
                        && waiting.is_none_or(|since| {
                            self.ks().now().saturating_duration_since(since)
                                <= keyspace::MAX_WAIT_FOR_ROOM
                        }) =>
                {
                    // The server defers the write, for so long at most;
                    // time moves on meanwhile.
                    let since = *waiting.get_or_insert(self.ks().now());
                    self.ks().set_waiting(Some(since));
                    self.clock.advance(Duration::from_millis(1));
                    self.turn();
                    self.ks().set_waiting(None);
                }
                Err(WriteError::Full) => {
                    self.report.writes_refused += 1;
                    return Ok(None);
                }
                Err(e) => return Err(format!("write of key {key_text} failed: {e}")),
            }
        }
        Err(format!("write of key {key_text} waited for room forever"))
    }

    /// Runs turns until every write in `pending` is answered (by these
    /// turns or earlier ones), and the model knows what became of each.
    fn settle(&mut self, mut pending: Vec<u64>) -> Result<(), String> {
        for _ in 0..MAX_TURNS {
            self.turn();
            pending.retain(|p| !self.answers.contains_key(p));
            let ks = self.ks();
            if pending.is_empty() && ks.idle() && ks.engine_ref().in_flight() == 0 {
                return Ok(());
            }
            if ks.engine_ref().in_flight() > 0 {
                ks.engine().wait(Duration::from_millis(1));
            } else {
                // A commit due later, or a compaction that paused.
                self.clock.advance(Duration::from_millis(1));
            }
        }
        Err(format!("writes {pending:?} never answered"))
    }

    /// Write `n` was acknowledged (`ok`) or its commit failed.
    fn answered(&mut self, n: u64, ok: bool) {
        self.answers.insert(n, ok);
        if !ok {
            // It stays a maybe: a failed commit may have landed in part.
            self.report.writes_failed += 1;
            return;
        }
        self.report.writes_acked += 1;
        // Which key and value: the maybe list holds them in write order;
        // find the key whose writes include `n`.
        for st in self.keys.values_mut() {
            if let Some(pos) = st.pending_index(n) {
                if n > st.acked_n {
                    st.acked = st.maybe[pos].clone();
                    st.acked_n = n;
                    // Everything before it is superseded, durably.
                    st.maybe.drain(..=pos);
                    st.numbers.drain(..=pos);
                }
                return;
            }
        }
    }

    /// One loop turn, as the poller runs it; the writes it answers go to
    /// the model at once ([`Runner::answered`]).
    fn turn(&mut self) {
        let ks = self.ks();
        ks.tick();
        let mut done = Vec::new();
        ks.engine().reap(&mut done);
        for c in done {
            match Tag::decode(c.tag) {
                Some(Tag::Read(_)) => unreachable!("reads are waited for in get"),
                _ => ks.complete(c),
            }
        }
        ks.reclaim();
        ks.commit();
        ks.expire();
        let _ = ks.engine().submit();
        let mut acks = Vec::new();
        ks.take_acks(&mut acks);
        for (n, result) in acks {
            self.answered(n, result.is_ok());
        }
    }

    fn tick(&mut self) -> u64 {
        let ks = self.ks();
        ks.tick();
        ks.now_ms()
    }

    fn pid(&self, hash: &KeyHash) -> u32 {
        hash.partition(self.store.as_ref().expect("open").partitions)
    }

    /// The bytes of the record of `e`: from its segment buffer, or read.
    fn record(&mut self, e: Entry) -> Result<Vec<u8>, String> {
        let ks = self.ks();
        Ok(match ks.buffered(e) {
            Some(b) => b.to_vec(),
            None => {
                let block = ks.block();
                let start = align_down(e.offset, block);
                let end = align_up(e.offset + e.len as u64, block);
                let buf = read_at(ks, start, (end - start) as usize)?;
                let at = (e.offset - start) as usize;
                buf[at..at + e.len as usize].to_vec()
            }
        })
    }

    /// The live entry of `key` and its record, as the server finds them:
    /// with short index tags (`NVKV_TEST_TAG_BITS`) the records of other
    /// keys sharing its tag are read and passed by, and what follows acts
    /// on the key's own entry, or inserts one beside theirs.
    fn resolve(&mut self, key: &[u8]) -> Result<Option<(Entry, Vec<u8>)>, String> {
        let hash = KeyHash::of(key);
        let pid = self.pid(&hash);
        let uuid = self.store.as_ref().expect("open").uuid;
        let mut tried = Vec::new();
        loop {
            // A key with no live entry may have a dead one of its own (the
            // server's writes read those too): it is the one replaced.
            let found = match self.ks().lookup_skipping(pid, &hash, &tried) {
                Some(e) => Some(e),
                None => self.ks().dead_candidate(pid, &hash, &tried),
            };
            let Some(e) = found else {
                self.ks().expect_new(pid, &hash);
                return Ok(None);
            };
            let bytes = self.record(e)?;
            let rec = decode_record(&uuid, &bytes).map_err(|e| e.to_string())?;
            if rec.key == key {
                let found = self.ks().resolved(pid, &hash, e.offset);
                assert!(found, "the entry read is still there");
                return Ok(Some((e, bytes)));
            }
            tried.push(e.offset);
        }
    }

    /// GET, as the server serves it: the index, then the segment buffer
    /// or one device read.
    fn get(&mut self, key: u8) -> Result<Option<Val>, String> {
        self.last_head = None;
        let uuid = self.store.as_ref().expect("open").uuid;
        let found = self
            .resolve(&key_bytes(key))
            .map_err(|why| format!("key {key}: {why}"))?;
        self.ks().clear_new();
        let Some((entry, bytes)) = found else {
            return Ok(None);
        };
        let ks = self.ks();
        if !entry.live(ks.now_ms()) {
            return Ok(None);
        }
        let rec = decode_record(&uuid, &bytes).map_err(|e| format!("key {key}: {e}"))?;
        if rec.is_tombstone() || rec.expired(ks.now_ms()) {
            return Ok(None);
        }
        if rec.is_large() {
            let value = read_large(ks, &uuid, rec.value)
                .map_err(|why| format!("key {key}: large value: {why}"))?;
            self.last_head = Some(rec.value.to_vec());
            return Ok(Some(Val {
                value,
                expire_ms: rec.meta.expire_ms,
            }));
        }
        Ok(Some(Val {
            value: rec.value.to_vec(),
            expire_ms: rec.meta.expire_ms,
        }))
    }

    /// Checks one key. `strict`: no crash since the writes settled, so
    /// only the acknowledged value is right; otherwise a maybe may be, and
    /// the model takes what the store has from then on.
    fn check(&mut self, key: u8, strict: bool) -> Result<(), String> {
        let now = self.tick();
        // Evictions before the last restart count too (the keyspace's
        // counters start again at each open).
        self.evicted |=
            self.ks().counters().evicted_keys.load(Relaxed) > 0 || self.report.evicted > 0;
        let got = self.get(key)?;
        self.report.gets_checked += 1;
        let st = self.keys.entry(key).or_default();
        let acked = Val::visible(&st.acked, now);
        let mut ok = got.as_ref() == acked || (got.is_none() && self.evicted);
        if !strict && !ok {
            ok = st
                .maybe
                .iter()
                .any(|m| Val::visible(m, now) == got.as_ref());
        }
        if !ok {
            return Err(format!(
                "key {key} at {now}: GET gave {}, acknowledged {}, maybe {:?} (strict: {strict})",
                show(got.as_ref()),
                show(acked),
                st.maybe
                    .iter()
                    .map(|m| show(m.as_ref()))
                    .collect::<Vec<_>>(),
            ));
        }
        if !strict {
            st.acked = got;
            st.acked_n = self.writes;
            st.maybe.clear();
            st.numbers.clear();
        }
        Ok(())
    }

    fn check_all(&mut self, strict: bool) -> Result<(), String> {
        for key in 0..KEYS {
            self.check(key, strict)?;
        }
        if !self.ks().key_count_exact() {
            return Err("the key counts differ from a count over every partition".into());
        }
        Ok(())
    }

    /// The process dies: nothing is shut down, whatever is in flight may
    /// or may not land. Then the store opens again (a rebuild) and every
    /// key is checked.
    fn crash(&mut self) -> Result<(), String> {
        self.note_counters();
        self.store = None;
        self.report.crashes += 1;
        self.open()?;
        self.check_all(false)
    }

    /// A clean shutdown: every commit completes and emptied segments are
    /// erased, then the index is marked clean; then the store opens again.
    fn restart(&mut self) -> Result<(), String> {
        self.ks().stop();
        for _ in 0..10_000 {
            let ks = self.ks();
            if ks.settled() && ks.engine_ref().in_flight() == 0 {
                break;
            }
            if ks.engine_ref().in_flight() > 0 {
                ks.engine().wait(Duration::from_micros(200));
            }
            self.clock.advance(Duration::from_millis(1));
            self.turn();
        }
        let ks = self.ks();
        if !ks.settled() || ks.engine_ref().in_flight() > 0 {
            // Writes keep failing (a sticky fault): as the server, exit
            // with the index dirty; the next start rebuilds it.
            return self.crash();
        }
        self.ks()
            .mark_clean()
            .map_err(|e| format!("marking clean: {e}"))?;
        // The segment table and the table of large values, as the server
        // saves them after its pollers stopped.
        let open = self.store.as_ref().expect("open");
        let large = open.space.large.lock().expect("large value map").clone();
        let gen = open.space.gen.load(Relaxed);
        super::space::save_table(self.dir, &open.sb, &open.space)
            .map_err(|e| format!("saving the segment table: {e}"))?;
        super::space::save_large_table(self.dir, &open.sb, &large, gen)
            .map_err(|e| format!("saving the table of large values: {e}"))?;
        self.note_counters();
        self.store = None;
        self.report.restarts += 1;
        self.open()
    }

    fn note_counters(&mut self) {
        let c = self.ks().counters();
        let (compactions, expired, evicted) = (
            c.compactions.load(Relaxed),
            c.expired_keys.load(Relaxed),
            c.evicted_keys.load(Relaxed),
        );
        self.report.compactions += compactions;
        self.report.expired += expired;
        self.report.evicted += evicted;
    }
}

impl KeyState {
    fn pending_index(&self, n: u64) -> Option<usize> {
        self.numbers.iter().position(|&m| m == n)
    }
}

fn key_of(w: &Write) -> u8 {
    match *w {
        Write::Set { key, .. }
        | Write::Del { key }
        | Write::Expire { key, .. }
        | Write::Persist { key } => key,
    }
}

/// Reads `len` bytes at `off` (block-aligned) through the keyspace's
/// engine, handing it the completions of its own meanwhile.
fn read_at(ks: &mut Keyspace<Faulty<Uring>, u64>, off: u64, len: usize) -> Result<Vec<u8>, String> {
    let buf = ks
        .engine()
        .alloc(len)
        .map_err(|e| format!("no buffer for a read: {e}"))?;
    let tag = Tag::Read(0).encode();
    if ks.engine().read(off, buf, tag).is_err() {
        return Err("no engine slot for a read".into());
    }
    let _ = ks.engine().submit();
    loop {
        let mut done = Vec::new();
        ks.engine().reap(&mut done);
        let mut mine = None;
        for c in done {
            if c.tag == tag {
                mine = Some(c);
            } else {
                ks.complete(c);
            }
        }
        if let Some(c) = mine {
            let buf = c.buf.expect("a read returns its buffer");
            return match c.result {
                Ok(n) if n == buf.len() => Ok(buf.to_vec()),
                other => Err(format!("{other:?}")),
            };
        }
        ks.engine().wait(Duration::from_millis(1));
    }
}

/// A large value, read from its pieces as the server reads it: each
/// piece's header and data checksum checked.
fn read_large(
    ks: &mut Keyspace<Faulty<Uring>, u64>,
    uuid: &[u8; 16],
    head: &[u8],
) -> Result<Vec<u8>, String> {
    let head = LargeHead::decode(head).ok_or("head unreadable")?;
    let (block, cap) = (ks.block() as usize, ks.piece_capacity());
    let sb = ks.superblock().clone();
    let mut value = Vec::with_capacity(head.total_len as usize);
    for (i, &seg) in head.pieces.iter().enumerate() {
        let want = head.piece_len(i, cap) as usize;
        let buf = read_at(
            ks,
            sb.segment_offset(seg),
            block + want.next_multiple_of(block),
        )?;
        let h = PieceHeader::decode(&buf[..block], uuid).ok_or(format!("piece {i} missing"))?;
        let data = &buf[block..block + want];
        if h.value_id != head.value_id || h.piece != i as u32 || h.len as usize != want {
            return Err(format!("piece {i} belongs to another value: {h:?}"));
        }
        if PieceHeader::data_crc(uuid, data) != h.data_crc {
            return Err(format!("piece {i} fails its checksum"));
        }
        value.extend_from_slice(data);
    }
    Ok(value)
}

fn key_bytes(key: u8) -> Vec<u8> {
    format!("model:{key}").into_bytes()
}

/// A value that names its write, so that a GET tells which write it saw.
fn value_of(key: u8, n: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{key}:{n}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (n % 26) as u8);
    v
}

fn show(v: Option<&Val>) -> String {
    match v {
        None => "nil".into(),
        Some(v) => {
            let head = &v.value[..v.value.len().min(12)];
            format!(
                "{:?}..({} bytes, expire {})",
                String::from_utf8_lossy(head),
                v.value.len(),
                v.expire_ms
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys deleted once and never written again, in a store whose oldest
    /// segments hold long-lived keys that are never compacted: their
    /// tombstones must not stay in the index for good.
    /// Found by the fuzz target: with every write failing from the second
    /// on, a clean shutdown never settles (the emptied segments' erasures
    /// keep failing), and the run must end as the server does, with a
    /// dirty index, rather than wait for ever.
    #[test]
    fn a_shutdown_under_sticky_write_faults_ends_dirty() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = [185, 0, 130, 0, 5, 0, 0, 141, 129, 141, 129, 141, 129, 0];
        let r = run(dir.path(), &bytes).unwrap();
        assert!(r.crashes >= 1, "{r:?}");
    }

    /// Found by the fuzz target: a commit whose second write fails rolls
    /// both writes back, but the first reached the device; a crash later
    /// brings it back, which is allowed (the writer got an error, not an
    /// acknowledgement), so the model must keep it a maybe until a crash.
    #[test]
    fn a_failed_commit_whose_first_write_landed_may_come_back_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = [175, 0, 2, 175, 32, 1, 0, 0, 0, 0, 0, 0, 5, 9];
        let r = run(dir.path(), &bytes).unwrap();
        assert!(r.writes_failed >= 2 && r.crashes >= 1, "{r:?}");
    }

    /// A store at `dir` full of keys written once with `val` (nothing
    /// dead: neither compaction nor frees can make room) and DELs, not yet
    /// durable, of every key of one segment: it is free once their commit
    /// is durable and a later one has erased its header. Returns the
    /// runner, `val`, a key refused for want of room and the DELs.
    fn full_store_emptying_a_segment(dir: &Path) -> (Runner<'_>, Val, String, Vec<u64>) {
        let mut r = Runner::create(dir, None).unwrap();
        r.open().unwrap();
        let val = Val {
            value: vec![b'v'; MAX_VALUE],
            expire_ms: 0,
        };
        let (refused, dels) = fill_and_empty_a_segment(&mut r, &val);
        (r, val, refused, dels)
    }

    fn fill_and_empty_a_segment(r: &mut Runner, val: &Val) -> (String, Vec<u64>) {
        let mut keys = Vec::new();
        let refused = loop {
            let key = format!("fill:{}", keys.len());
            match r.write_raw(key.as_bytes(), Some(val)).unwrap() {
                Some(n) => r.settle(vec![n]).unwrap(),
                None => break key,
            }
            keys.push(key);
        };
        let segment_of = |r: &mut Runner, key: &str| {
            let hash = KeyHash::of(key.as_bytes());
            let pid = r.pid(&hash);
            let e = r.ks().lookup(pid, &hash).expect("a key written");
            r.store.as_ref().expect("open").sb.segment_of(e.offset)
        };
        let first = segment_of(r, &keys[0]);
        let mut dels = Vec::new();
        for key in &keys {
            if segment_of(r, key) == first {
                dels.extend(r.write_raw(key.as_bytes(), None).unwrap());
            }
        }
        assert!(dels.len() > 1, "{dels:?}");
        assert!(!r.ks().room_for_writes() && r.ks().may_make_room());
        (refused, dels)
    }

    /// A write waiting for a segment on its way to the free pool waits
    /// until it is free: it was refused (`-OOM` from the server) once the
    /// segment's erasure was written, while the commit carrying it
    /// flushed, as if no room were coming.
    #[test]
    fn a_write_waits_for_a_segment_whose_erasure_is_flushing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, val, refused, dels) = full_store_emptying_a_segment(dir.path());
        let refusals = r.report.writes_refused;
        let n = r.write_raw(refused.as_bytes(), Some(&val)).unwrap();
        assert!(n.is_some(), "refused again: {:?}", r.report);
        assert_eq!(r.report.writes_refused, refusals);
        r.settle(dels.into_iter().chain(n).collect()).unwrap();
    }

    /// Found by the property test: writes answered by the loop turns the
    /// model ran while a later write waited for room were never counted
    /// (those turns' answers were dropped), and the run ended with "writes
    /// [..] never answered" though the store had acknowledged them. The
    /// server replies to what any turn answers; so must the model. Here
    /// the room the later write waits for comes only after the DELs'
    /// commit is durable.
    #[test]
    fn writes_answered_while_a_later_write_waits_for_room_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, val, refused, dels) = full_store_emptying_a_segment(dir.path());
        let acked = r.report.writes_acked;
        let n = r.write_raw(refused.as_bytes(), Some(&val)).unwrap();
        for d in &dels {
            assert_eq!(r.answers.get(d), Some(&true), "DEL {d} while waiting");
        }
        let written: Vec<u64> = dels.into_iter().chain(n).collect();
        r.settle(written.clone()).unwrap();
        assert_eq!(r.report.writes_acked, acked + written.len() as u64);
    }

    #[test]
    fn tombstones_of_keys_never_written_again_do_not_pile_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Runner::create(dir.path(), None).unwrap();
        r.open().unwrap();
        let val = |len: usize| Val {
            value: vec![b'v'; len],
            expire_ms: 0,
        };
        // Long-lived keys fill the first segment of each shard.
        let mut pending = Vec::new();
        for i in 0..120 {
            let key = format!("keep:{i}");
            pending.extend(r.write_raw(key.as_bytes(), Some(&val(2000))).unwrap());
        }
        r.settle(pending).unwrap();
        // Keys written once, then deleted.
        for round in 0..2 {
            for chunk in (0..3000).collect::<Vec<_>>().chunks(100) {
                let mut pending = Vec::new();
                for i in chunk {
                    let key = format!("gone:{i}");
                    let new = (round == 0).then(|| val(100));
                    pending.extend(r.write_raw(key.as_bytes(), new.as_ref()).unwrap());
                }
                r.settle(pending).unwrap();
            }
        }
        let piled = r.ks().index_tombstones();
        assert!(piled >= 3000, "{piled}");
        // Churn on a few keys: the store fills several times over.
        for n in 0..2400u32 {
            let key = format!("churn:{}", n % 16);
            let p = r.write_raw(key.as_bytes(), Some(&val(16 << 10))).unwrap();
            r.settle(p.into_iter().collect()).unwrap();
            r.clock.advance(Duration::from_millis(5));
        }
        let left = r.ks().index_tombstones();
        assert!(
            left < PILED_TOMBSTONES_TEST,
            "{left} of {piled} tombstones left in the index"
        );
        // The long-lived keys are all still there.
        for i in 0..120 {
            let hash = KeyHash::of(format!("keep:{i}").as_bytes());
            let pid = r.pid(&hash);
            assert!(r.ks().lookup(pid, &hash).is_some(), "keep:{i} is gone");
        }
    }

    /// A full copy's batches: commits whose writers wait for the writes
    /// alone (`acknowledge_written`) go without a device flush; a SAVE
    /// then flushes once, and after a crash every key is there.
    #[test]
    fn batches_acknowledged_when_written_go_without_a_flush_until_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Runner::create(dir.path(), None).unwrap();
        r.open().unwrap();
        let count = |r: &mut Runner| {
            let c = r.ks().counters();
            (c.commits.load(Relaxed), c.flushes.load(Relaxed))
        };
        let (commits0, flushes0) = count(&mut r);
        let key = |b: u64, i: u64| format!("copy:{b}:{i}");
        for b in 0..20 {
            for i in 0..30 {
                let k = key(b, i);
                let hash = KeyHash::of(k.as_bytes());
                let pid = r.pid(&hash);
                // New keys (short tags: beside others of their tags).
                r.ks().expect_new(pid, &hash);
                r.ks()
                    .write(pid, &hash, k.as_bytes(), &[b'v'; 3000], 0, false)
                    .unwrap();
            }
            r.writes += 1;
            let n = r.writes;
            r.ks().acknowledge_written(n);
            r.settle(vec![n]).unwrap();
        }
        let (commits1, flushes1) = count(&mut r);
        assert!(commits1 >= commits0 + 20, "each batch's commit completed");
        assert_eq!(flushes1, flushes0, "no commit of the batches flushed");
        let token = 1 << 40;
        r.ks().save(token);
        r.settle(vec![token]).unwrap();
        assert_eq!(count(&mut r).1, flushes0 + 1, "the SAVE flushed once");
        r.crash().unwrap();
        for b in 0..20 {
            for i in 0..30 {
                let k = key(b, i);
                let hash = KeyHash::of(k.as_bytes());
                let pid = r.pid(&hash);
                assert!(r.ks().lookup(pid, &hash).is_some(), "{k} after the crash");
            }
        }
    }

    /// FLUSHDB at the store level: the flushed keys never come back, not
    /// after a crash nor a clean restart, the keys written after it stay,
    /// and the flushed records' segments come back as free space (the
    /// store is filled twice over after flushes).
    #[test]
    fn a_flush_is_durable_when_acknowledged_and_frees_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Runner::create(dir.path(), None).unwrap();
        r.open().unwrap();
        let val = |len: usize| Val {
            value: vec![b'v'; len],
            expire_ms: 0,
        };
        let has = |r: &mut Runner, key: &str| {
            let found = r.resolve(key.as_bytes()).unwrap().is_some();
            r.ks().clear_new();
            found
        };
        for round in 0..3u64 {
            // About 60% of the store, overwritten once.
            for pass in 0..2 {
                let mut pending = Vec::new();
                for i in 0..120 {
                    let key = format!("r{round}:{i}");
                    let len = if pass == 0 { 8000 } else { 12000 };
                    pending.extend(r.write_raw(key.as_bytes(), Some(&val(len))).unwrap());
                }
                r.settle(pending).unwrap();
            }
            let token = 1 << 40 | round;
            if let Err((_, e)) = r.ks().flush_all(token) {
                panic!("flush: {e}");
            }
            let mut flushed = false;
            for _ in 0..MAX_TURNS {
                r.turn();
                if r.answers.get(&token) == Some(&true) {
                    flushed = true;
                    break;
                }
                // As `settle`: wait for the device while it works.
                let ks = r.ks();
                if ks.engine_ref().in_flight() > 0 {
                    ks.engine().wait(Duration::from_millis(1));
                } else {
                    r.clock.advance(Duration::from_millis(1));
                }
            }
            assert!(flushed, "the flush was acknowledged");
            assert_eq!(r.ks().counters().keys.load(Relaxed), 0);
            assert!(!has(&mut r, &format!("r{round}:0")));
            let after = format!("after:{round}");
            let p = r.write_raw(after.as_bytes(), Some(&val(100))).unwrap();
            r.settle(p.into_iter().collect()).unwrap();
            if round < 2 {
                // No restart in between: the space the flush frees must
                // be what the next round writes into.
                continue;
            }
            // A crash right away: the flush holds, the later write too.
            r.crash().unwrap();
            for i in 0..120 {
                assert!(
                    !has(&mut r, &format!("r{round}:{i}")),
                    "r{round}:{i} came back"
                );
            }
            assert!(has(&mut r, &after), "{after} was lost");
        }
        // A clean restart: each flush took the keys written before it.
        r.restart().unwrap();
        for round in 0..3 {
            assert!(!has(&mut r, &format!("r{round}:5")));
            assert_eq!(has(&mut r, &format!("after:{round}")), round == 2);
        }
        assert_eq!(r.report.writes_refused, 0, "{:?}", r.report);
    }

    /// A kill -9 that drops one write of a FLUSHDB's commit (io_uring
    /// cancels the writes still queued in its workers while later ones
    /// land) leaves the store as it was before the flush, or as after it
    /// with the writes that followed in the same turn (a transaction's):
    /// never flushed without them; and one that drops a later write (the
    /// marks') keeps the acknowledged flush. The flush's marks are written only once
    /// that commit is durable, and a flushing segment counts only beside
    /// those of the flush's other shards.
    #[test]
    fn a_flush_cut_short_by_a_crash_keeps_one_state_whole() {
        let val = |s: &str| Val {
            value: s.as_bytes().to_vec(),
            expire_ms: 0,
        };
        let keys: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
        for lost in 1..=4u64 {
            let dir = tempfile::tempdir().unwrap();
            let mut r = Runner::create(dir.path(), None).unwrap();
            r.open().unwrap();
            let mut pending = Vec::new();
            for k in &keys {
                pending.extend(r.write_raw(k.as_bytes(), Some(&val("one"))).unwrap());
            }
            r.settle(pending).unwrap();
            r.faults = Some(format!("write-lost@{lost}").parse().unwrap());
            r.restart().unwrap();
            let token = 1 << 40;
            if let Err((_, e)) = r.ks().flush_all(token) {
                panic!("flush: {e}");
            }
            for k in &keys[..8] {
                r.write_raw(k.as_bytes(), Some(&val("two"))).unwrap();
            }
            for _ in 0..50 {
                r.turn();
                let ks = r.ks();
                if ks.engine_ref().in_flight() > 0 {
                    ks.engine().wait(Duration::from_millis(1));
                }
            }
            // A write after the flush's commit lost (its marks'): the
            // flush was acknowledged, and must hold.
            let acked = r.answers.contains_key(&token);
            r.faults = None;
            r.crash().unwrap();
            let uuid = r.store.as_ref().expect("open").sb.uuid;
            let mut found = Vec::new();
            for k in &keys {
                let bytes = r.resolve(k.as_bytes()).unwrap().map(|(_, b)| b);
                r.ks().clear_new();
                found.push(bytes.map(|b| {
                    let rec = decode_record(&uuid, &b).unwrap();
                    String::from_utf8(rec.value.to_vec()).unwrap()
                }));
            }
            let before: Vec<_> = keys.iter().map(|_| Some("one".to_string())).collect();
            let after: Vec<_> = (0..keys.len())
                .map(|i| (i < 8).then(|| "two".to_string()))
                .collect();
            assert!(
                found == after || (!acked && found == before),
                "write {lost} lost, the flush acknowledged: {acked}: {found:?}"
            );
        }
    }

    /// What the test above allows to stay: below the count at which
    /// compaction starts rewriting old segments, per shard.
    const PILED_TOMBSTONES_TEST: u64 = 2 * 1024;
}
