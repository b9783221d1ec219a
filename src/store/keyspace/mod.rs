//! The keys one poller owns, and the write path that keeps them: the log
//! (appends, group commit, rollback, segment erasure), compaction, active
//! expiry and eviction, over one engine.
//!
//! A [`Keyspace`] knows nothing of clients or RESP. The poller drives it:
//! it looks keys up and reads their records itself (the read path is the
//! poller's), writes through [`Keyspace::write`], hands it every engine
//! completion that is not one of its own reads ([`Keyspace::complete`]),
//! and gives it a turn of background work each loop ([`Keyspace::reclaim`],
//! [`Keyspace::commit`], [`Keyspace::expire`]). A writer that must wait for
//! its write to be durable leaves a token `W` ([`Keyspace::acknowledge`]),
//! and gets it back from [`Keyspace::take_acks`] once its commit completed
//! or failed. Time comes from a [`Clock`], read once per turn
//! ([`Keyspace::tick`]), so tests move it on without sleeping.

mod compact;
mod evict;
mod expire;
mod flush;
mod gone;
mod iterate;
mod large;
mod log;
mod owners;
mod tag;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

pub use self::flush::FlushError;
pub use self::gone::GoneKey;
pub use self::large::LargeFeed;
pub use self::tag::Tag;
use super::clock::Clock;
pub use super::evict::Settings as EvictionSettings;
use super::{shard_of, Lookup, Shard, Space};
use crate::format::Superblock;
use crate::index::{Entry, IndexError, KeyHash};
use crate::io::{Completion, Engine};

/// Longest a client write refused for want of a segment waits for room
/// (compaction, eviction, emptied segments on their way to the free pool)
/// before it is refused for good: the server's deferred writes, and the
/// model's (`store/model.rs`).
pub const MAX_WAIT_FOR_ROOM: Duration = Duration::from_secs(2);

/// Why a write was refused.
#[derive(Debug, Error)]
pub enum WriteError {
    /// No free segment for it, nor room compaction or eviction can make.
    #[error("the store is full: no free segment for writes")]
    Full,
    /// The record would not fit in a segment.
    #[error("record larger than a segment")]
    TooLarge,
    /// No I/O buffer for a large value's pieces.
    #[error("no I/O buffer: {0}")]
    NoBuffer(String),
    #[error("index: {0}")]
    Index(#[from] IndexError),
}

/// A commit failed: the writes it carried were rolled back.
#[derive(Debug, Clone, Error)]
#[error("write not durable: {0}")]
pub struct CommitFailed(pub Arc<str>);

/// How the write path runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// A write is acknowledged once its commit is durable (`false`: once
    /// buffered, with a commit every `commit_interval`).
    pub sync: bool,
    pub commit_interval: Duration,
    /// Live fraction below which a segment is compacted.
    pub compact_below: f64,
    /// Pollers of the store (each keeps a segment of the reserve).
    pub pollers: usize,
}

/// What the store shares among its keyspaces.
pub struct Common {
    pub sb: Superblock,
    pub space: Arc<Space>,
    pub eviction: Arc<EvictionSettings>,
}

/// Counters a keyspace keeps, for INFO and metrics: written by its poller
/// only, read by anyone.
#[derive(Debug, Default)]
pub struct Counters {
    /// Live keys, and of those keys with a TTL.
    pub keys: AtomicU64,
    pub expires: AtomicU64,
    /// Index entries of deleted, expired or evicted keys.
    pub tombstones: AtomicU64,
    /// Commits completed, flushes completed, log bytes written.
    pub commits: AtomicU64,
    pub flushes: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Device operations: reads (clients' and compaction's) and their
    /// bytes, and log writes.
    pub device_reads: AtomicU64,
    pub device_read_bytes: AtomicU64,
    /// Device reads of records that turned out to be other keys' (their
    /// index tags the same as the key's).
    pub index_extra_reads: AtomicU64,
    /// SETs that replaced the entry of their key's tag before its record
    /// said it was the key's (read after the write, off the reply's path).
    pub index_overwrites_unread: AtomicU64,
    /// Requests whose key's entry was known to be its own (its record
    /// written or read lately, `owners.rs`): no read to tell whose it is.
    pub index_known_owners: AtomicU64,
    pub device_writes: AtomicU64,
    pub io_errors: AtomicU64,
    /// Record bytes appended for clients, and moved by compaction.
    pub user_bytes: AtomicU64,
    /// Piece segments of large values queued for writing, and their
    /// bytes (header blocks included).
    pub piece_writes: AtomicU64,
    pub piece_bytes: AtomicU64,
    pub compact_bytes: AtomicU64,
    /// Segments emptied by compaction.
    pub compactions: AtomicU64,
    /// Keys found expired (by a read, the sweep or compaction), and keys
    /// evicted.
    pub expired_keys: AtomicU64,
    pub evicted_keys: AtomicU64,
    /// Mean TTL left of keys with one, in ms, as the sweep estimates it.
    pub avg_ttl_ms: AtomicU64,
}

/// Free segments taken out of the free list for one transaction's
/// writes ([`Keyspace::hold_room`]), each with whether it was zeroed.
#[derive(Debug)]
pub struct Room(Vec<(u32, bool)>);

/// One poller's keys and write path; see the module documentation.
pub struct Keyspace<E: Engine, W> {
    id: usize,
    eng: E,
    sb: Superblock,
    space: Arc<Space>,
    eviction: Arc<EvictionSettings>,
    counters: Arc<Counters>,
    cfg: Config,
    /// Indexed by shard id; `Some` for the shards this keyspace owns.
    shards: Vec<Option<Shard>>,
    block: u64,
    clock: Arc<dyn Clock>,
    now_ms: u64,
    now: Instant,
    /// While on ([`Keyspace::record_moves`]): compaction's moves of
    /// entries, (partition, from, to; `None`: dropped), for watchers.
    moves: Option<Vec<(u32, u64, Option<u64>)>>,
    log: log::Log<W>,
    compactor: compact::Compactor,
    evictor: evict::Evictor,
    sweep: expire::Sweeper,
    /// The store is shutting down: commit what is appended, start nothing.
    stopping: bool,
    /// Since when the oldest write waiting for room has waited.
    waiting_since: Option<Instant>,
    acks: Vec<(W, Result<(), CommitFailed>)>,
    /// Keys that expired or were evicted, for the replication stream.
    gone: gone::GoneKeys,
    /// A key known to have no entry while others share its tag
    /// ([`Keyspace::expect_new`]): its next write inserts beside them.
    new_key: Option<(u32, u64)>,
    /// Entries whose key a caller resolved and acts on later (a
    /// transaction's keys, written when it commits): (partition, offset
    /// when resolved) → where the entry points now, `None` once compaction
    /// dropped it ([`Keyspace::follow`]).
    follow: HashMap<(u32, u64), Option<u64>>,
    /// While on ([`Keyspace::name_writes`]): the key of each entry written
    /// since (the digest `xxh3_64` of its key), by (partition, offset), up
    /// to [`NAMES_MAX`] entries.
    names: Option<HashMap<(u32, u64), u64>>,
    /// Per segment, the records key iteration still has to read there
    /// ([`Keyspace::pin_record`]): an emptied segment is not erased nor
    /// reused while it has any.
    pins: Vec<u32>,
    /// The next write of this key (partition, tag) replaces the first
    /// entry of its tag without knowing it is the key's own
    /// ([`Keyspace::keep_replaced`]).
    keep_replaced: Option<(u32, u64)>,
    /// Entries replaced so, by offset, with the key's partition and hash:
    /// their bytes stay live, and compaction leaves their records where
    /// they are, until a read of the record says whose it was
    /// ([`Keyspace::replaced_verified`]).
    unverified: HashMap<u64, (u32, KeyHash, Entry)>,
    /// The keys of the records written or read lately, by offset
    /// ([`Keyspace::holds_key`]).
    owners: owners::Owners,
}

/// Entries [`Keyspace::name_writes`] keeps at most.
const NAMES_MAX: usize = 1 << 18;

impl<E: Engine, W> Keyspace<E, W> {
    /// The keyspace of poller `id`, owning `shards` (indexed by shard id),
    /// appending from sequence number `next_seq` on.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        eng: E,
        common: &Common,
        shards: Vec<Option<Shard>>,
        next_seq: u64,
        cfg: Config,
        clock: Arc<dyn Clock>,
        counters: Arc<Counters>,
    ) -> Self {
        let now = clock.now();
        let mut ks = Keyspace {
            id,
            block: eng.block_size() as u64,
            eng,
            sb: common.sb.clone(),
            space: Arc::clone(&common.space),
            eviction: Arc::clone(&common.eviction),
            counters,
            log: log::Log::new(&cfg, next_seq, now),
            compactor: compact::Compactor::new(cfg.compact_below, now),
            evictor: evict::Evictor::new(id as u64),
            sweep: expire::Sweeper::default(),
            cfg,
            shards,
            now_ms: clock.unix_ms(),
            now,
            moves: None,
            clock,
            stopping: false,
            waiting_since: None,
            acks: Vec::new(),
            gone: Default::default(),
            new_key: None,
            follow: HashMap::new(),
            names: None,
            pins: vec![0; common.sb.segment_count as usize],
            keep_replaced: None,
            unverified: HashMap::new(),
            owners: owners::Owners::default(),
        };
        ks.update_key_count();
        ks
    }

    /// Engine slots the write path keeps for itself: reads may use the
    /// rest.
    pub fn reserved_slots(shards: u32) -> usize {
        log::reserved_slots(shards)
    }

    /// Reads the clock: the time every decision of this turn uses.
    pub fn tick(&mut self) {
        self.now_ms = self.clock.unix_ms();
        self.now = self.clock.now();
    }

    /// As [`Keyspace::tick`], with `now` the monotonic instant the caller
    /// read for its loop turn: only the wall clock is read. (The wall
    /// clock is read here, not derived from `now`: a connection thread
    /// computes a command's expiry from the wall clock after its turn
    /// began, and the poller's time must not lie before that.)
    pub fn tick_at(&mut self, now: Instant) {
        self.now_ms = self.clock.unix_ms();
        self.now = now;
    }

    /// Milliseconds since the Unix epoch, as of the last [`Keyspace::tick`].
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn engine(&mut self) -> &mut E {
        &mut self.eng
    }

    pub fn engine_ref(&self) -> &E {
        &self.eng
    }

    pub fn block(&self) -> u64 {
        self.block
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The live entry of a key, `None` when it is missing or expired (an
    /// expired key found here is marked gone, as the sweep would).
    pub fn lookup(&mut self, pid: u32, hash: &KeyHash) -> Option<Entry> {
        self.lookup_skipping(pid, hash, &[])
    }

    /// The live entry of a key among its tag's candidates but those at
    /// `skip` (records read and found to be other keys'). The entry may
    /// be another key's (tags are short, see [`crate::index`]): the caller
    /// reads its record to know.
    pub fn lookup_skipping(&mut self, pid: u32, hash: &KeyHash, skip: &[u64]) -> Option<Entry> {
        let mut expired: Vec<u64> = Vec::new();
        loop {
            let found = if expired.is_empty() {
                self.shard(pid)
                    .lookup_skipping(pid, hash, self.now_ms, skip)
            } else {
                let seen = [skip, &expired].concat();
                self.shard(pid)
                    .lookup_skipping(pid, hash, self.now_ms, &seen)
            };
            match found {
                Lookup::Hit(e) => return Some(e),
                Lookup::Miss => return None,
                Lookup::Expired(e) => {
                    if !self.gone.hold_expired {
                        self.reap_found(pid, hash, e.offset);
                    }
                    // Another key may share the tag: the rest is looked at.
                    expired.push(e.offset);
                }
            }
        }
    }

    /// Bytes of an index slot in partition `pid` (MEMORY USAGE).
    pub fn slot_bytes(&self, pid: u32) -> usize {
        self.shard(pid).part(pid).slot_size()
    }

    /// The first entry of the key's tag that is not live (deleted, expired
    /// or evicted) and not at `skip`: maybe the key's own, which a write
    /// of the key replaces rather than leaving it beside a new one.
    pub fn dead_candidate(&self, pid: u32, hash: &KeyHash, skip: &[u64]) -> Option<Entry> {
        let now = self.now_ms;
        (self.shard(pid).part(pid).candidate_entries(hash.tag))
            .find(|e| !e.live(now) && !skip.contains(&e.offset))
    }

    /// The entry at `offset` is the key's own (its record was read and
    /// holds the key): what acts on the key by its tag in this turn acts
    /// on it. `false` when no entry of the tag points there any more (the
    /// record was moved by compaction, or the key written, while it was
    /// read): the caller looks the key up again.
    pub fn resolved(&mut self, pid: u32, hash: &KeyHash, offset: u64) -> bool {
        (self.shard_mut(pid).part_mut(pid)).promote(hash.tag, offset)
    }

    /// The key has no entry (none of its tag's candidates is its own): the
    /// next write of it in this turn inserts one beside theirs.
    pub fn expect_new(&mut self, pid: u32, hash: &KeyHash) {
        self.new_key = Some((pid, hash.tag));
    }

    /// The key's own entry as the lookup of this turn resolved it: `None`
    /// when it has none ([`Self::expect_new`]), else the first of its
    /// tag's ([`Self::resolved`] made its own the first). What a
    /// transaction stages, to write over when it commits.
    pub fn own_entry(&self, pid: u32, hash: &KeyHash) -> Option<u64> {
        if self.new_key == Some((pid, hash.tag)) {
            return None;
        }
        let part = self.shard(pid).part(pid);
        part.candidate_entries(hash.tag).next().map(|e| e.offset)
    }

    /// [`Self::own_entry`], followed through compaction under short tags
    /// (until [`Self::unfollow`]): for a write that acts later.
    pub fn track_own(&mut self, pid: u32, hash: &KeyHash) -> Option<u64> {
        let own = self.own_entry(pid, hash);
        if let Some(at) = own {
            self.follow(pid, at);
        }
        own
    }

    /// Keeps track of the entry at `offset` (a key's own, resolved) while
    /// compaction may move it, until [`Self::unfollow`].
    pub fn follow(&mut self, pid: u32, offset: u64) {
        self.follow.insert((pid, offset), Some(offset));
    }

    /// Stops tracking the entry resolved at `offset`; returns where it
    /// points now (`None`: compaction dropped it, the key has no entry).
    pub fn unfollow(&mut self, pid: u32, offset: u64) -> Option<u64> {
        self.follow.remove(&(pid, offset)).unwrap_or(Some(offset))
    }

    /// The live entry of a key whose own entry was resolved at `offset`
    /// (and followed since, see [`Self::follow`]); `None`: the key has no
    /// live entry.
    pub fn own_live(&mut self, pid: u32, hash: &KeyHash, offset: Option<u64>) -> Option<Entry> {
        let at = offset.and_then(|o| self.follow.get(&(pid, o)).copied().unwrap_or(Some(o)))?;
        let now = self.now_ms;
        (self.shard(pid).part(pid).get_at(hash.tag, at)).filter(|e| e.live(now))
    }

    /// Where the entry followed since it was at `offset` is now (`None`:
    /// dropped); an entry not followed is where it was.
    pub fn followed(&self, pid: u32, offset: u64) -> Option<u64> {
        self.follow
            .get(&(pid, offset))
            .copied()
            .unwrap_or(Some(offset))
    }

    /// The entries of the key's tag, live or dead (short tags: other
    /// keys' too).
    pub fn candidates(&self, pid: u32, hash: &KeyHash) -> Vec<Entry> {
        self.shard(pid)
            .part(pid)
            .candidate_entries(hash.tag)
            .collect()
    }

    /// Whether the record of `entry` holds `key` (`Some(false)`: another
    /// key's), if the poller knows: it wrote the record, or read it for a
    /// request of its key, lately (see `owners.rs`). The entry is then
    /// known to be the key's own, or not, without a read.
    pub fn holds_key(&self, entry: Entry, key: &[u8]) -> Option<bool> {
        self.owners.holds(entry.offset, key)
    }

    /// The record at `offset`, read, holds `key`.
    pub fn note_owner(&mut self, offset: u64, key: &[u8]) {
        self.owners.note(offset, key);
    }

    /// The first entry of the key's tag, live or dead, not at `skip`.
    pub fn next_candidate(&self, pid: u32, hash: &KeyHash, skip: &[u64]) -> Option<Entry> {
        (self.shard(pid).part(pid).candidate_entries(hash.tag)).find(|e| !skip.contains(&e.offset))
    }

    /// Compaction moved the record at `from` of partition `pid` to `to`
    /// (`None`: dropped it): followed entries point there now.
    pub(super) fn entry_moved(&mut self, pid: u32, from: u64, to: Option<u64>) {
        for ((p, _), at) in self.follow.iter_mut() {
            if *p == pid && *at == Some(from) {
                *at = to;
            }
        }
        if let Some(moves) = self.moves.as_mut() {
            moves.push((pid, from, to));
        }
    }

    /// Whether compaction's moves of entries are kept, for
    /// [`Keyspace::take_moves`] (while keys are watched).
    pub fn record_moves(&mut self, on: bool) {
        match on {
            true => drop(self.moves.get_or_insert_with(Vec::new)),
            false => self.moves = None,
        }
    }

    /// Compaction's moves of entries since the last call, in order:
    /// (partition, from, to; `None`: the entry was dropped).
    pub fn take_moves(&mut self) -> Vec<(u32, u64, Option<u64>)> {
        self.moves.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Whether something follows entries through compaction.
    pub(super) fn follows_moves(&self) -> bool {
        !self.follow.is_empty() || self.moves.is_some()
    }

    /// Makes `own` (a resolved entry's offset now, `None`: the key has
    /// none) what the next write of the key in this turn replaces.
    /// `false` when no entry of the tag points at `own`.
    pub fn act_on(&mut self, pid: u32, hash: &KeyHash, own: Option<u64>) -> bool {
        match own {
            Some(offset) => {
                if self.new_key == Some((pid, hash.tag)) {
                    self.new_key = None;
                }
                self.resolved(pid, hash, offset)
            }
            None => {
                self.expect_new(pid, hash);
                true
            }
        }
    }

    /// Whether to keep the key of every entry written from now on
    /// ([`Self::written_key`]); off forgets them. A watched key with no
    /// entry (WATCH, under short tags) tells a new entry of its tag apart
    /// by it once the record has left its segment buffer.
    pub fn name_writes(&mut self, on: bool) {
        match on {
            true => drop(self.names.get_or_insert_with(HashMap::new)),
            false => self.names = None,
        }
    }

    /// The digest (`xxh3_64`) of the key of the entry at `offset` of
    /// partition `pid`, if it was written while [`Self::name_writes`] was
    /// on.
    pub fn written_key(&self, pid: u32, offset: u64) -> Option<u64> {
        self.names.as_ref()?.get(&(pid, offset)).copied()
    }

    /// Forgets [`Self::expect_new`]: the turn that called it ended.
    pub fn clear_new(&mut self) {
        self.new_key = None;
    }

    /// The bytes of a record still held in a segment buffer, not yet (or
    /// not entirely) on the device.
    pub fn buffered(&self, e: Entry) -> Option<&[u8]> {
        self.log.buffered(e)
    }

    /// A writer whose write succeeded: with synchronous commits, `w` waits
    /// for the commit and comes back from [`Keyspace::take_acks`]
    /// (`None` here); otherwise the write is acknowledged now (`Some`).
    pub fn acknowledge(&mut self, w: W) -> Option<W> {
        self.update_key_count();
        if self.cfg.sync {
            self.log.wait(w);
            None
        } else {
            Some(w)
        }
    }

    /// A writer that waits for its writes to be durable whatever the
    /// durability mode (a transaction: after a crash, all of an
    /// acknowledged one's writes are there); `w` comes back from
    /// [`Keyspace::take_acks`].
    pub fn acknowledge_durable(&mut self, w: W) {
        self.update_key_count();
        self.log.wait(w);
    }

    /// A writer that waits for its writes to be on the device (sync
    /// durability: durable), before a write that must not reach the
    /// device without them (a rename's source tombstone, in another
    /// shard's log): `w` comes back from [`Keyspace::take_acks`].
    pub fn acknowledge_written_or_durable(&mut self, w: W) {
        match self.cfg.sync {
            true => self.acknowledge_durable(w),
            false => self.acknowledge_written(w),
        }
    }

    /// A full copy's batch: `w` comes back from [`Keyspace::take_acks`]
    /// once its writes are on the device, whatever the durability mode,
    /// without a flush of their own; a SAVE once the copy is whole makes
    /// it durable (see `Log::wait_written` in `log.rs`).
    pub fn acknowledge_written(&mut self, w: W) {
        self.update_key_count();
        self.log.wait_written(w);
    }

    /// SAVE: `w` comes back from [`Keyspace::take_acks`] once everything
    /// written so far is durable: the next commit starts at once (in
    /// either durability mode), and flushes the device even with nothing
    /// to write.
    pub fn save(&mut self, w: W) {
        self.log.wait(w);
        self.log.force = true;
    }

    /// The index entry of a key as it stands (deleted, expired or evicted
    /// keys' entries included), without looking at the clock: what WATCH
    /// compares.
    pub fn entry(&mut self, pid: u32, hash: &KeyHash) -> Option<Entry> {
        self.shard_mut(pid).part_mut(pid).get(hash)
    }

    /// Whether `bytes` of client records, in `shards` shards, can all be
    /// appended now: none would be refused for want of a segment.
    pub fn room_for(&self, bytes: u64, shards: usize) -> bool {
        let segments = shards as u64 + bytes.div_ceil(self.sb.segment_size as u64);
        self.space.free_segments() as u64 >= self.reserve() as u64 + segments
    }

    /// Takes out of the free list the segments that `bytes` of client
    /// records in `shards` shards may need (as [`Keyspace::room_for`]
    /// counts them), leaving the reserve: no other writer, of this poller
    /// or another, can take them until [`Keyspace::commit_into`] appends
    /// into them or [`Keyspace::give_back_room`] returns them. `None`:
    /// no room (nothing taken).
    pub fn hold_room(&self, bytes: u64, shards: usize) -> Option<Room> {
        let segments = shards + bytes.div_ceil(self.sb.segment_size as u64) as usize;
        self.space.hold_free(segments, self.reserve()).map(Room)
    }

    /// Segments held by [`Keyspace::hold_room`] go back, unused.
    pub fn give_back_room(&self, room: Room) {
        self.space.give_back(room.0);
    }

    /// The appends from now until [`Keyspace::end_room`] (one
    /// transaction's writes) open the segments of `room` before taking
    /// any other.
    pub fn commit_into(&mut self, room: Room) {
        debug_assert!(self.log.room.is_empty(), "one transaction's room at a time");
        // Taken from the back: the zeroed ones first.
        self.log.room = room.0;
        self.log.room.reverse();
    }

    /// What is left of the room [`Keyspace::commit_into`] gave goes back
    /// to the free list.
    pub fn end_room(&mut self) {
        self.space.give_back(std::mem::take(&mut self.log.room));
    }

    /// The sequence number the next record appended takes.
    pub fn next_seq(&self) -> u64 {
        self.log.next_seq
    }

    /// Records of sequence numbers below this are durable, except those
    /// rolled back ([`Keyspace::take_lost`]): what the replication stream
    /// may carry.
    pub fn durable_seq(&self) -> u64 {
        self.log.durable_seq
    }

    /// The sequence numbers of records rolled back by failed commits
    /// since the last call.
    pub fn take_lost(&mut self, out: &mut Vec<std::ops::Range<u64>>) {
        out.append(&mut self.log.lost);
    }

    /// Writers whose commits completed (`Ok`) or failed since the last
    /// call.
    pub fn take_acks(&mut self, out: &mut Vec<(W, Result<(), CommitFailed>)>) {
        out.append(&mut self.acks);
    }

    /// Whether a write refused for want of a segment may find one soon:
    /// compaction can still win space back, eviction can make some, or
    /// emptied segments are on their way to the free pool (after commits,
    /// and after key iteration has read those it pins).
    pub fn may_make_room(&self) -> bool {
        self.reclaimable() || self.may_evict() || self.frees_pending()
    }

    /// Whether client writes may take a free segment now.
    pub fn room_for_writes(&self) -> bool {
        self.space.free_segments() > self.reserve()
    }

    /// Since when the oldest write waiting for room has waited (`None`:
    /// none waits): eviction and compaction hurry for it.
    pub fn set_waiting(&mut self, since: Option<Instant>) {
        self.waiting_since = since;
    }

    /// The store shuts down: commits go out at once, no new compaction.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// A completion of the write path's (anything but [`Tag::Read`]).
    pub fn complete(&mut self, c: Completion) {
        match Tag::decode(c.tag) {
            Some(Tag::CompactRead { .. }) => self.compact_read_done(c),
            Some(Tag::GoneRead(_)) => self.gone_read_done(c),
            Some(Tag::Write { .. } | Tag::Flush { .. }) => self.log_completion(c),
            other => tracing::error!(poller = self.id, tag = ?other, "unexpected completion"),
        }
    }

    /// One bounded step of eviction and compaction; whether it did
    /// anything.
    pub fn reclaim(&mut self) -> bool {
        self.evict_turn() | self.compact_turn()
    }

    /// Starts a commit when one is due; whether it did anything.
    pub fn commit(&mut self) -> bool {
        self.log_turn()
    }

    /// Nothing appended is waiting to be made durable.
    pub fn idle(&self) -> bool {
        self.log.idle()
    }

    /// What a flush waits for: no write waits for a commit (so no
    /// rollback can bring back an entry the flush clears), and no open
    /// segment has a write at the device. Commits that carry only flush
    /// marks and erasures (an earlier flush's, which follow its commit at
    /// once) may be under way.
    pub fn quiet_for_flush(&self) -> bool {
        self.log.quiet_for_flush()
    }

    /// Idle, and every emptied segment erased and free: what a clean
    /// shutdown waits for.
    pub fn settled(&self) -> bool {
        self.log.settled()
    }

    /// How long the poller may sleep before a commit is due.
    pub fn park_timeout(&self) -> Option<Duration> {
        self.log.park_timeout(self.now)
    }

    /// Marks every shard's index clean: everything appended is durable.
    pub fn mark_clean(&mut self) -> std::io::Result<()> {
        let (max_seq, max_gen) = (self.log.next_seq - 1, self.space.gen.load(Relaxed));
        super::shard::mark_clean(self.shards.iter_mut().flatten(), max_seq, max_gen)
    }

    /// Makes room in the index for `keys` keys of the whole store (each
    /// partition's share), as a hint: a table that cannot grow now grows
    /// as keys come, and says so then.
    pub fn reserve_keys(&mut self, keys: u64) {
        let share = keys.div_ceil(u64::from(self.sb.partitions.max(1)));
        // Keys spread over the partitions by their hashes, not exactly.
        let per_partition = share + share / 16 + 64;
        for s in self.shards.iter_mut().flatten() {
            if let Err(e) = s.reserve(per_partition) {
                tracing::warn!("making room in the index for {keys} keys: {e}");
                return;
            }
        }
    }

    /// Brings the index slot where the key of `hash` in partition `pid`
    /// would be found into the CPU's cache, a few writes ahead of its own
    /// (a full copy's batch: see `Partition::prefetch`).
    pub fn prefetch_entry(&self, pid: u32, hash: &KeyHash) {
        self.shard(pid).partition(pid).prefetch(hash);
    }

    /// This poller's place in the eviction settings' per-poller counts
    /// (`Settings::keys`, `expires`, `best`).
    fn evict_slot(&self) -> usize {
        self.id % crate::store::evict::POLLER_SLOTS
    }

    /// Publishes the live keys, keys with a TTL and tombstones of the
    /// shards.
    pub fn update_key_count(&mut self) {
        let (mut keys, mut expires, mut tombstones) = (0, 0, 0);
        for c in self.shards.iter_mut().flatten().map(Shard::counts) {
            keys += c.live;
            expires += c.expiring;
            tombstones += c.entries - c.live;
        }
        self.counters.keys.store(keys, Relaxed);
        self.counters.expires.store(expires, Relaxed);
        let slot = self.evict_slot();
        self.eviction.keys[slot].store(keys, Relaxed);
        self.eviction.expires[slot].store(expires, Relaxed);
        self.counters.tombstones.store(tombstones, Relaxed);
    }

    /// Whether the published counts, brought up to date, are those of a
    /// count over every partition (the shards count the partitions
    /// changed since the last count only).
    pub(crate) fn key_count_exact(&mut self) -> bool {
        self.update_key_count();
        let shards = || self.shards.iter().flatten();
        let keys: u64 = shards().map(Shard::live_keys).sum();
        let expires: u64 = shards().map(Shard::expiring).sum();
        let tombstones: u64 = shards().map(Shard::tombstones).sum();
        let c = &self.counters;
        (keys, expires, tombstones)
            == (
                c.keys.load(Relaxed),
                c.expires.load(Relaxed),
                c.tombstones.load(Relaxed),
            )
    }

    /// Index entries that are tombstones (deleted keys) or markers
    /// (expired or evicted keys), over the shards.
    pub fn index_tombstones(&self) -> u64 {
        self.shards.iter().flatten().map(Shard::tombstones).sum()
    }

    /// Counts a device read of `bytes` issued.
    pub fn count_read(&self, bytes: u64) {
        self.counters.device_reads.fetch_add(1, Relaxed);
        self.counters.device_read_bytes.fetch_add(bytes, Relaxed);
    }

    fn shard_mut(&mut self, pid: u32) -> &mut Shard {
        let s = shard_of(pid, self.sb.shards);
        self.shards[s as usize]
            .as_mut()
            .expect("request routed to the shard's poller")
    }

    fn shard(&self, pid: u32) -> &Shard {
        let s = shard_of(pid, self.sb.shards);
        self.shards[s as usize]
            .as_ref()
            .expect("request routed to the shard's poller")
    }

    /// Free segments that client writes leave to compaction: one for each
    /// shard to move records into, and one per poller.
    ///
    /// Small stores keep a sixteenth of their segments instead, at least
    /// one more than the pollers.
    fn reserve(&self) -> usize {
        let full = self.sb.shards as usize + self.cfg.pollers;
        let small = (self.space.live.len() / 16).max(self.cfg.pollers + 1);
        full.min(small)
    }

    /// Whether compaction can still free space: bytes it can win back worth
    /// more (packed) segments than the reserve.
    fn reclaimable(&self) -> bool {
        let sp = &self.space;
        sp.compactable_bytes() > (self.reserve() as u64 + 2) * sp.packed_live() as u64
    }

    /// Whether free segments are scarce: compaction hurries.
    fn space_low(&self) -> bool {
        self.space.free_segments() <= 2 * self.reserve()
    }
}
