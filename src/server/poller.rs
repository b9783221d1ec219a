//! The I/O poller: owns shards and one engine, and runs the batching loop.
//!
//! Each turn of the loop reaps completions, takes every request waiting on
//! the ring (up to the depth limit), serves reads (from the device, or from
//! the segment buffers for records not yet written), appends writes to the
//! shards' open segments, starts a group commit when one is due, and submits
//! the whole batch in one call: a lone request goes to the device at once,
//! and under load many requests share one submission. An idle poller polls
//! for a short while, then parks in the engine until a completion or its
//! eventfd wakes it. The write path (segments, commits, compaction,
//! expiry, eviction) is the store's [`Keyspace`]: the poller turns requests
//! into its reads and writes, and replies.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::float::LongDouble;
use super::msg::{ConnRef, GetExpiry, Op, Reply, Request, Response, SetReply, NO_REPLY, TXN_PART};
use super::msg::{Mail, MoveKind, Moved, ObjectInfo, RestoreAccess};
use super::{PollMode, Shared};
use crate::format::{
    align_down, align_up, decode_record, encode_record, record_len, Enc, LargeHead, Record,
    RecordMeta,
};
use crate::index::{Entry, KeyHash};
use crate::io::{open_engine, Completion, Device, Engine, Faulty};
use crate::resp;
use crate::store::clock::SystemClock;
use crate::store::keyspace::{self, CommitFailed, Keyspace, Tag, WriteError};
use crate::store::Shard;

mod census;
mod cross;
mod inline;
mod large;
mod large_edit;
mod load;
mod scan;
mod whole;

pub(super) use inline::{open as open_inline, Inline};

/// Writes that may wait for compaction before the store answers OOM.
const MAX_DEFERRED: usize = 16 * 1024;
/// Longest a write waits for compaction before it is refused.
const MAX_DEFER: Duration = crate::store::keyspace::MAX_WAIT_FOR_ROOM;

/// A reply owed once the commit that holds the write completes.
struct Waiter {
    to: ConnRef,
    id: u64,
    part: u32,
    reply: Reply,
    /// A SAVE or BGSAVE (which has no reply: `id` is `NO_REPLY`).
    save: bool,
    /// The key (tag) whose requests wait for this write: a large value's.
    hold: Option<u64>,
    /// The pieces of the large value of key tag `k` of transaction `n`
    /// waiting for them, `(n, k)` ([`Poller::txn_pieces_durable`]): no
    /// reply.
    pieces_of: Option<(u64, u64)>,
    /// Batch `n` of a replica's full copy waiting to be durable
    /// ([`Poller::load_durable`]): no reply.
    load: Option<u64>,
    /// A part of a transaction across pollers, its commit or its undo
    /// (`cross.rs`): `reply` waits for the outcome.
    cross: bool,
    /// A rename whose destination, in another shard, this waits for: its
    /// source is deleted once the destination's write is on the device
    /// ([`Poller::unlink_renamed`]): no reply of its own.
    unlink: Option<Box<Unlink>>,
}

/// A rename across shards waiting for its destination's write to reach
/// the device before its source's tombstone is written: its request and
/// the reply it then owes. Both keys stay held meanwhile.
struct Unlink {
    req: Request,
    ok: Reply,
    /// Under short tags, the source's own entry as resolved (followed
    /// through compaction meanwhile, `Keyspace::follow`): the one its
    /// tombstone replaces.
    own: Option<u64>,
}

impl Waiter {
    /// `reply` to `req` once durable; `hold`: the key whose requests wait
    /// for it.
    fn new(req: &Request, reply: Reply, hold: Option<u64>) -> Self {
        Waiter {
            to: req.from,
            id: req.id,
            part: req.part,
            reply,
            save: false,
            hold,
            pieces_of: None,
            load: None,
            cross: false,
            unlink: None,
        }
    }

    /// `+OK` to `req` once durable; `save`: it is a SAVE's or BGSAVE's.
    fn ok(req: &Request, save: bool) -> Self {
        Waiter {
            save,
            ..Waiter::new(req, Reply::Encoded(b"+OK\r\n".to_vec()), None)
        }
    }
}

/// Why a record's read was not issued ([`Poller::read_record`]).
pub(super) enum NotRead {
    /// Every read slot is taken.
    NoSlot,
    /// No I/O buffer (SPDK's DMA memory ran out).
    NoBuffer(std::io::Error),
    /// The engine took no more.
    Full,
}

/// A device read waiting for its completion.
struct PendingRead {
    req: Request,
    entry: Entry,
    /// A read of a record to know whose it is, for the request's other
    /// key `i` ([`Poller::probe_keys`]).
    probe: Option<usize>,
    /// A read of the record of an entry a SET replaced unread, to know
    /// whose it was ([`Poller::set_unread`]; `req` carries the key).
    verify: bool,
    /// Whether the read holds its key's tag: requests of the tag arriving
    /// meanwhile wait ([`Poller::holds_while_read`]).
    holds: bool,
    /// Device offset where the aligned read starts.
    start: u64,
}

struct Poller<E: Engine> {
    id: usize,
    shared: Arc<Shared>,
    /// The keys this poller owns, their write path, and the engine.
    ks: Keyspace<E, Waiter>,
    reads: Vec<Option<PendingRead>>,
    free_tags: Vec<u32>,
    done: Vec<Completion>,
    /// Connection threads that got responses this turn.
    touched: Vec<bool>,
    /// Writers whose commits completed or failed.
    acks: Vec<(Waiter, Result<(), CommitFailed>)>,
    /// Writes on their way into the replication stream once durable.
    repl_out: super::repl::Outbox,
    /// Large values' SETs for the replication stream, by key tag: they go
    /// in once their head is durable (its writer's acknowledgement).
    large_stream: HashMap<u64, Vec<u8>>,
    /// SETs whose values arrive a piece at a time, by feed id.
    feeds: HashMap<u64, large::FedSet>,
    /// Requests taken from the ring this turn.
    batch: Vec<Request>,
    /// Keys with a read-modify-write in flight, and the requests for them
    /// that arrived meanwhile (served in order once it is done).
    busy: HashMap<u64, VecDeque<Request>>,
    /// The tag of the last read issued that holds its key ([`Poller::holds_key`]):
    /// a read found to be another key's is followed by the next one's,
    /// and the key stays held.
    key_read_issued: Option<u64>,
    /// What reading records told of the other keys of commands of several
    /// keys (a move's destination, MSETNX's keys) under short tags, by
    /// request ([`Poller::probe_keys`]).
    probes: HashMap<(ConnRef, u64, u32), Vec<KeyProbe>>,
    /// Writes waiting for compaction to free a segment, oldest first.
    deferred: VecDeque<(Instant, Request)>,
    /// While a deferred write is retried: when it was first deferred.
    retrying_since: Option<Instant>,
    /// Batches of a replica's full copy being written, oldest first.
    loads: load::Loads,
    /// Requests that found no free read slot, retried next turn.
    requeued: Vec<Request>,
    /// `--io-feed waves`: the longest a read waits for the wave ahead, and
    /// since when reads have been waiting.
    wave_hold: Option<Duration>,
    held_since: Option<Instant>,
    /// When a read last logged that it got no buffer (ms since the epoch).
    no_buffer_logged_ms: u64,
    /// The transaction running (EXEC), and those whose keys are all
    /// claimed, waiting for it, oldest first.
    txn: Option<Txn>,
    txns_waiting: VecDeque<Request>,
    /// What each connection watches here (WATCH), until its EXEC or
    /// UNWATCH.
    watches: HashMap<ConnRef, Vec<Watched>>,
    /// Commands of several keys waiting for their keys, by number.
    moves: HashMap<u64, MoveWait>,
    next_move: u64,
    /// Key iteration (SCAN, KEYS, RANDOMKEY) under way.
    scans: scan::Scans,
    /// A flush (FLUSHDB) waiting for the writes before it to finish, and
    /// the requests that came after it, with their numbers
    /// (`Poller::arrived`): they run once it has.
    flush_hold: VecDeque<(u64, Request)>,
    /// A transaction's reads of large values, whole, by number (see
    /// `large::Assembly`); the number of the next one or the next
    /// stream; the piece reads in flight (read slot: number, piece);
    /// assemblies and streams that found no read slot.
    assemblies: HashMap<u64, large::Assembly>,
    next_assembly: u64,
    piece_reads: HashMap<u32, (u64, usize)>,
    stalled_assemblies: Vec<u64>,
    /// SETRANGE and APPEND of large values under way.
    edits: large_edit::Edits,
    /// The sources' tags of renames across shards waiting for their
    /// destinations' writes ([`Unlink`]).
    unlinking: HashSet<u64>,
    /// Large values being sent as they are read, by number.
    streams: HashMap<u64, large::Stream>,
    /// Transactions whose large values' pieces are being written, by
    /// number: their writes go in once the pieces are durable.
    txn_pieces: HashMap<u64, PiecesWait>,
    next_txn_pieces: u64,
    /// Streams waiting for their command's write to be durable, by the
    /// reply it gets (see `large::gate_reply`).
    gates: HashMap<(ConnRef, u64, u32), u64>,
    /// The streams of transactions' reads of large values, by EXEC's reply
    /// (the first of each; the others follow it, see `large::Stream`):
    /// they start once that reply is sent.
    exec_gates: HashMap<(ConnRef, u64, u32), u64>,
    /// The parts of transactions across pollers (`cross.rs`).
    cross: cross::Crossing,
    /// The parts of censuses of the key space (`census.rs`).
    census: census::Censuses,
    /// A transaction of the whole key space running (`whole.rs`).
    whole: whole::Whole,
}

/// A finished transaction whose large values' pieces are on their way to
/// the device; its keys stay held.
struct PiecesWait {
    txn: Txn,
    /// By key tag: the heads of the large values, and those whose pieces
    /// are durable (held until their head is written).
    heads: HashMap<u64, LargeHead>,
    durable: Vec<u64>,
    /// The large values, taken from the view while their pieces are
    /// written (shared with the writes), put back for the stream.
    values: HashMap<u64, bytes::Bytes>,
    /// Pieces' writes not yet durable.
    left: usize,
    failed: Option<Reply>,
}

/// A move waiting for its keys (see [`Poller::move_when_free`]).
struct MoveWait {
    /// The key in whose queue it waits.
    queue: u64,
    /// Its fences not yet at the front of their queues.
    fences: u32,
    /// The move, once at the front of its queue while a fence is not.
    parked: Option<Request>,
}

/// A transaction running: its commands' requests run one after another
/// against `view` — the keys' values as the transaction has left them so
/// far, over the store's — and nothing is written to the store until the
/// last has run; then every change is appended at once, in this turn, so
/// that one commit carries them all.
struct Txn {
    /// The EXEC request (its reply goes to the connection).
    exec: Request,
    subs: VecDeque<Request>,
    /// Keys this transaction holds (requests for them wait).
    claimed: Vec<u64>,
    /// By key tag: the key's value and expiry as the transaction left it
    /// (`None`: deleted), in the order first written.
    view: HashMap<u64, Staged>,
    order: Vec<u64>,
    replies: Vec<(u64, u32, Reply)>,
    /// Its reads of large values, streamed in this order after EXEC's
    /// reply; the command whose reply stands for the read under way (id,
    /// part, the read: streamed, or whole in a part of an EXEC across
    /// pollers).
    streams: Vec<u64>,
    gated: Option<(u64, u32, large::Gated)>,
    /// A command waits for its record's read.
    waiting: bool,
    /// A command found no read slot: it runs again next turn.
    stalled: bool,
    /// Replicas were fed when it began: its large values' views then
    /// hold every edit for the stream.
    fed: bool,
    /// A part of a command of several keys across pollers (MSETNX, a
    /// move) refused by what it found (a key there, a source missing):
    /// the command's reply, and nothing of any part is written.
    veto: Option<Reply>,
    /// The source's part of moves across pollers (one alone, or an
    /// EXEC's, all one way, without `Cross::mail`): the values it has
    /// still to send, one per move.
    to_carry: usize,
    /// A part of an EXEC across pollers with `Cross::mail`: what it owes the other parts
    /// for its commands (by their requests' id: a move's value, a
    /// verdict), to the pollers named, sent as the command runs; a
    /// command answered without sending it (an error, a missing source)
    /// sends what is here (see `cross.rs`).
    owed: Vec<(u64, Vec<usize>, Mail)>,
    /// A command waiting for what other parts send it (`Op::Mail`), and
    /// for a RENAMENX's source its own entry (followed), to delete it
    /// once the destination's verdict comes.
    awaits: Option<(Request, Option<Option<u64>>)>,
    /// The move destinations (by id) whose values came and were put into
    /// their requests (a request put back for a read slot keeps it).
    delivered: Vec<u64>,
    /// A FLUSHDB or FLUSHALL emptied the view: keys it does not hold are
    /// absent, and its commit flushes the store first (`whole.rs`).
    flushed: bool,
}

/// A key as a transaction left it.
struct Staged {
    pid: u32,
    hash: KeyHash,
    key: Box<[u8]>,
    now: Option<(Vec<u8>, u64)>,
    /// The encoding mark of the value in `now`.
    enc: Enc,
    /// The value in `now` is the argument of a command of the transaction
    /// (SET, MSET, APPEND of a missing key, INCRBYFLOAT): Redis's object
    /// is referenced by the queued command too until EXEC ends, and
    /// OBJECT REFCOUNT counts 2.
    held: bool,
    /// A large value stored before, edited by the transaction in pieces
    /// (`large_edit::LargeView`): its bytes are not in `now`, whose
    /// expiry holds.
    large: Option<Box<large_edit::LargeView>>,
    /// The key's own index entry when it was staged (its offset then,
    /// followed through compaction, see `Keyspace::follow`), `None` when
    /// it had none: what the commit writes over. Short tags are shared
    /// by keys, so the tag's first entry need not be the key's.
    own: Option<u64>,
    /// The access bits the key takes when written (a renamed key keeps
    /// its source's, a copy is a new object); `None`: a write's.
    access: Option<u32>,
    /// The transaction deleted the key before the value it holds now:
    /// that value is a new object (fresh access bits, as Redis gives a
    /// key set again after DEL), not a write over the key that was there.
    deleted: bool,
}

/// A transaction's view of a key is found by the key's whole digest, not
/// by its index tag (short tags are shared by keys).
pub(super) fn view_id(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The view id of `req`'s key.
pub(super) fn view_id_of(req: &Request) -> u64 {
    view_id(req.op.key().unwrap_or_default())
}

/// What reading the records of a key's short tag told of it, for a key of
/// a command of several keys that is not the request's own: the records
/// found to be other keys', and once known its own entry (`Some(None)`:
/// it has none; an entry is followed through compaction).
#[derive(Debug, Default, Clone)]
struct KeyProbe {
    tried: Vec<u64>,
    own: Option<Option<u64>>,
}

/// The keys of `req` whose own entries [`Poller::probe_keys`] finds: a
/// move's destination, MSETNX's keys, the key WATCH watches.
fn other_keys(req: &Request) -> Vec<(u32, KeyHash, &[u8])> {
    match &req.op {
        Op::Move { to, .. } => vec![(to.pid, to.hash, &to.key[..])],
        Op::MsetNx { pairs, .. } => (pairs.iter())
            .map(|p| (p.pid, p.hash, &p.key[..]))
            .collect(),
        Op::Watch { key } => vec![(req.pid, req.hash, &key[..])],
        _ => Vec::new(),
    }
}

/// A key a connection watches, and its index entry when WATCH came.
struct Watched {
    pid: u32,
    hash: KeyHash,
    seen: Option<Entry>,
    live: bool,
    /// Under short tags: the key, and the entries of its tag that were
    /// other keys' when WATCH came (with `seen` `None`, a new entry of the
    /// tag may be the key's).
    key: Box<[u8]>,
    others: Vec<u64>,
    /// A flush found the key there, or changed since: changed whatever
    /// its entry is now (a key created, then flushed, is absent again).
    flushed: bool,
}

/// Where a staged value "is" for the read path: no device offset.
const STAGED: u64 = u64::MAX;

/// A flag of the records `staged_record` makes, never of one on the
/// device: the value is held by a queued command ([`Staged::held`]).
const STAGED_HELD: u8 = 0x80;

/// What the pollers take over from the opened store.
pub(super) struct PollerInputs {
    pub shards: Vec<Shard>,
    pub dev: Device,
    pub next_seq: u64,
    pub lock: crate::store::DirLock,
}

/// The store's shards dealt out to `m` pollers: shard `s` to poller
/// `s % m`, in a table of all `count` shards each.
pub(super) fn deal(shards: Vec<Shard>, m: usize, count: u32) -> Vec<Vec<Option<Shard>>> {
    let mut owned: Vec<Vec<Option<Shard>>> =
        (0..m).map(|_| (0..count).map(|_| None).collect()).collect();
    for s in shards {
        let id = s.id as usize;
        owned[id % m][id] = Some(s);
    }
    owned
}

/// Starts one poller thread per `--io-threads`, giving each its shards.
pub(super) fn spawn_all(
    shared: &Arc<Shared>,
    store: PollerInputs,
    core: &dyn Fn(usize) -> Option<core_affinity::CoreId>,
) -> Result<Vec<JoinHandle<Result<()>>>> {
    let m = shared.pollers.len();
    let owned = deal(store.shards, m, shared.sb.shards);
    let dev = Arc::new(store.dev);
    let next_seq = store.next_seq;
    // The directory lock stays held while any poller runs.
    let lock = Arc::new(store.lock);
    // Each poller reports whether its engine opened: a server whose poller
    // could not reach the device must not start listening.
    let (opened_tx, opened) = std::sync::mpsc::channel::<Result<(), String>>();
    let handles = owned
        .into_iter()
        .enumerate()
        .map(|(id, shards)| {
            let shared = Arc::clone(shared);
            let dev = Arc::clone(&dev);
            let pin = core(id);
            let lock = Arc::clone(&lock);
            let opened = opened_tx.clone();
            std::thread::Builder::new()
                .name(format!("poller-{id}"))
                .spawn(move || {
                    let _lock = lock;
                    if let Some(c) = pin {
                        core_affinity::set_for_current(c);
                    }
                    run(id, shared, &dev, shards, next_seq, opened)
                })
                .context("spawning a poller")
        })
        .collect::<Result<Vec<_>>>()?;
    drop(opened_tx);
    for _ in 0..m {
        match opened.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.pollers_stop.store(true, Relaxed);
                for h in handles {
                    let _ = h.join();
                }
                anyhow::bail!("{e}");
            }
            Err(_) => anyhow::bail!("a poller exited before opening its engine"),
        }
    }
    Ok(handles)
}

fn run(
    id: usize,
    shared: Arc<Shared>,
    dev: &Device,
    shards: Vec<Option<Shard>>,
    next_seq: u64,
    opened: std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<()> {
    let depth = shared.cfg.pollers.max_io_depth;
    let kind = shared.cfg.pollers.engine;
    let eng = match open_engine(kind, dev, depth, &shared.pollers[id].bell) {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("poller {id}: opening the {kind:?} engine: {e}");
            let _ = opened.send(Err(msg.clone()));
            anyhow::bail!(msg);
        }
    };
    let faults = shared.cfg.pollers.inject_faults.as_ref();
    match faults.map(|spec| spec.for_poller(id)) {
        Some(spec) => run_with(id, shared, Faulty::new(eng, spec), shards, next_seq, opened),
        None => run_with(id, shared, eng, shards, next_seq, opened),
    }
}

fn run_with<E: Engine>(
    id: usize,
    shared: Arc<Shared>,
    eng: E,
    shards: Vec<Option<Shard>>,
    next_seq: u64,
    opened: std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<()> {
    let mut p = build(id, shared, eng, shards, next_seq);
    // Reported once built: its keys are counted (DBSIZE, INFO) before the
    // server listens.
    let _ = opened.send(Ok(()));
    p.stats().cpu.set_current();
    p.run_loop();
    p.shutdown()
}

/// Poller `id` over `eng` and its `shards`, ready to run.
fn build<E: Engine>(
    id: usize,
    shared: Arc<Shared>,
    eng: E,
    shards: Vec<Option<Shard>>,
    next_seq: u64,
) -> Poller<E> {
    let depth = shared.cfg.pollers.max_io_depth;
    // Reads may not take the slots the log needs for a commit.
    let read_slots = depth
        .saturating_sub(Keyspace::<E, Waiter>::reserved_slots(shared.sb.shards))
        .max(1);
    let cfg = shared.cfg.write.clone();
    let common = keyspace::Common {
        sb: shared.sb.clone(),
        space: Arc::clone(&shared.space),
        eviction: Arc::clone(&shared.eviction),
    };
    let counters = Arc::clone(&shared.poller_stats[id].store);
    let clock = Arc::new(SystemClock);
    let ks = Keyspace::new(id, eng, &common, shards, next_seq, cfg, clock, counters);
    let wave_hold = shared.cfg.pollers.wave_hold;
    Poller {
        id,
        ks,
        touched: vec![false; shared.conns.len()],
        shared,
        reads: (0..read_slots).map(|_| None).collect(),
        free_tags: (0..read_slots as u32).rev().collect(),
        done: Vec::with_capacity(depth),
        acks: Vec::new(),
        repl_out: super::repl::Outbox::new(id),
        large_stream: HashMap::new(),
        feeds: HashMap::new(),
        batch: Vec::with_capacity(depth),
        busy: HashMap::new(),
        key_read_issued: None,
        probes: HashMap::new(),
        deferred: VecDeque::new(),
        retrying_since: None,
        loads: Default::default(),
        requeued: Vec::new(),
        wave_hold,
        held_since: None,
        no_buffer_logged_ms: 0,
        txn: None,
        txns_waiting: VecDeque::new(),
        watches: HashMap::new(),
        moves: HashMap::new(),
        next_move: 0,
        scans: scan::Scans::default(),
        flush_hold: VecDeque::new(),
        assemblies: HashMap::new(),
        next_assembly: 0,
        piece_reads: HashMap::new(),
        stalled_assemblies: Vec::new(),
        edits: Default::default(),
        unlinking: HashSet::new(),
        streams: HashMap::new(),
        txn_pieces: HashMap::new(),
        next_txn_pieces: 0,
        gates: HashMap::new(),
        exec_gates: HashMap::new(),
        cross: Default::default(),
        census: Default::default(),
        whole: Default::default(),
    }
}

impl<E: Engine> Poller<E> {
    fn stats(&self) -> &super::stats::PollerStats {
        &self.shared.poller_stats[self.id]
    }

    /// A read lookup of a key, counted in INFO's `keyspace_hits` or
    /// `keyspace_misses` as Redis counts its commands' (GET, EXISTS, TTL,
    /// TYPE, DUMP, COPY's source, …; not writes, MEMORY USAGE or RENAME).
    fn count_lookup(&self, hit: bool) {
        let st = self.stats();
        match hit {
            true => st.hits.fetch_add(1, Relaxed),
            false => st.misses.fetch_add(1, Relaxed),
        };
    }

    fn run_loop(&mut self) {
        let spin = self.shared.cfg.pollers.spin;
        let loaded_spin = self.shared.cfg.pollers.loaded_spin;
        let busy = self.shared.cfg.pollers.poll == PollMode::Busy;
        let mut idle_since: Option<Instant> = None;
        let mut contended = false;
        loop {
            if self.turn() {
                idle_since = None;
                contended = false;
                continue;
            }
            if self.shared.pollers_stop.load(Relaxed)
                && self.ks.engine_ref().in_flight() == 0
                && self.ks.idle()
            {
                return;
            }
            if busy {
                std::hint::spin_loop();
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            // With reads in flight a completion is due soon: keep polling
            // rather than pay a wake-up for it (waking a sleeping thread on
            // an idle CPU costs tens of microseconds on a virtual machine,
            // several times per request). Not for the log's writes and
            // flushes: a commit takes a millisecond or more, and the
            // kernel's workers that run it need the CPU meanwhile. Nor when
            // other threads want this CPU: then sleeping is cheaper than
            // the time polling takes from them.
            let reads_in_flight = self.free_tags.len() < self.reads.len();
            let limit = if reads_in_flight && !contended {
                loaded_spin
            } else {
                spin
            };
            if since.elapsed() >= limit {
                self.park();
                idle_since = None;
                contended = false;
            } else {
                // Polling politely: on a machine with fewer cores than busy
                // threads the connection threads need the CPU meanwhile.
                contended |= super::polite_yield();
            }
        }
    }

    /// One turn of the loop; returns whether anything happened.
    fn turn(&mut self) -> bool {
        // A poller inside a connection thread takes that thread's turn
        // time as its monotonic time (it reads the wall clock only).
        self.ks.tick_at(super::turn::now());
        if self.shared.pollers_stop.load(Relaxed) {
            self.ks.stop();
        }
        self.ks.engine().reap(&mut self.done);
        let completed = self.done.len();
        if completed > 0 && self.held_since.is_some() {
            // A wave came back, and the device waits for reads: those held
            // for it go out before its replies are built.
            self.submit();
        }
        let mut done = std::mem::take(&mut self.done);
        for mut c in done.drain(..) {
            match Tag::decode(c.tag) {
                Some(Tag::Read(slot)) => {
                    if !self.complete_piece_read(slot, &mut c)
                        && !self.complete_edit_read(slot, &mut c)
                        && !self.complete_before_read(slot, &mut c)
                    {
                        self.complete_read(slot, c)
                    }
                }
                Some(Tag::ScanRead(slot)) => self.complete_scan_read(slot, c),
                _ => self.ks.complete(c),
            }
        }
        self.done = done;
        self.answer_writers();

        let retried = self.cross_flush()
            | self.census_pump()
            | self.whole_pump()
            | self.retry_before_reads()
            | self.retry_requeued()
            | self.retry_assemblies()
            | self.retry_edits()
            | self.pump_streams()
            | self.pump_feeds();
        let mut batch = std::mem::take(&mut self.batch);
        let inbox = &self.shared.pollers[self.id].inbox;
        while batch.len() < self.free_tags.len() {
            let Some(req) = inbox.pop() else { break };
            batch.push(req);
        }
        let taken = batch.len();
        for req in batch.drain(..) {
            self.handle(req);
        }
        self.batch = batch;
        if self.watches.is_empty() {
            self.ks.name_writes(false);
        }
        let txns = self.drive_txns();
        let scanned = self.pump_scans();
        let flushed = self.flush_when_idle();
        let waiting = self.deferred.front().map(|&(since, _)| since);
        let waiting = waiting.or_else(|| self.feed_waiting());
        self.ks.set_waiting(waiting.or_else(|| self.load_waiting()));
        let log_work =
            self.ks.reclaim() | self.retry_deferred() | self.drive_loads() | self.ks.commit();
        self.follow_watched_moves();
        let expired = self.ks.expire();
        self.answer_writers();
        let sent = if self.hold_for_wave(completed) {
            0
        } else {
            self.submit()
        };
        self.notify_conns();
        let st = self.stats();
        st.loops.fetch_add(1, Relaxed);
        st.in_flight
            .store(self.ks.engine_ref().in_flight() as u64, Relaxed);
        completed > 0
            || taken > 0
            || sent > 0
            || log_work
            || retried
            || expired
            || txns
            || scanned
            || flushed
    }

    /// Sends what is queued to the device (see `--io-feed`), and counts
    /// the submissions, wherever in the turn they happen: one per call that
    /// sent anything, so a wave fed one operation per call counts one
    /// submission per operation.
    fn submit(&mut self) -> usize {
        self.held_since = None;
        // While the log writes, a poller feeds as `stream` does: its
        // commits go out in one submission.
        let each = self.wave_hold.is_some() && self.ks.idle();
        let sent = if each {
            self.ks.engine().submit_each()
        } else {
            self.ks.engine().submit()
        };
        let sent = sent.unwrap_or_else(|e| {
            tracing::error!(poller = self.id, "submit failed: {e}");
            0
        });
        if sent > 0 {
            let (calls, batch) = if each { (sent, 1) } else { (1, sent) };
            let st = self.stats();
            st.submits.fetch_add(calls as u64, Relaxed);
            st.submitted.fetch_add(sent as u64, Relaxed);
            st.max_batch.fetch_max(batch as u64, Relaxed);
        }
        sent
    }

    /// `--io-feed waves`: whether what is queued waits for the wave of
    /// reads at the device. A device that answers batches at a time sits
    /// idle from the moment a wave completes until the next reads reach
    /// it, and reads that join a wave in flight are answered only with it
    /// (docs/design.md). So new reads wait, and go out the moment the wave
    /// completes (at the top of the next turn), at most `--wave-hold-us`.
    /// Never while the log writes (its commits must not wait), nor when
    /// nothing is at the device: a lone request goes out at once.
    fn hold_for_wave(&mut self, completed: usize) -> bool {
        let Some(limit) = self.wave_hold else {
            return false;
        };
        let eng = self.ks.engine_ref();
        let queued = eng.queued();
        let at_device = eng.in_flight().saturating_sub(queued);
        if queued == 0 || completed > 0 || at_device == 0 || !self.ks.idle() {
            return false;
        }
        let since = *self.held_since.get_or_insert_with(Instant::now);
        since.elapsed() < limit
    }

    /// Sleeps until a completion or a doorbell (bounded, to see shutdown
    /// and commit deadlines).
    fn park(&mut self) {
        let handle = &self.shared.pollers[self.id];
        handle.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if handle.inbox.is_empty() && !self.shared.pollers_stop.load(Relaxed) {
            self.stats().parks.fetch_add(1, Relaxed);
            let timeout = self.ks.park_timeout().unwrap_or(Duration::from_millis(100));
            self.ks.engine().wait(timeout);
        }
        handle.sleeping.store(false, Ordering::SeqCst);
        handle.bell.drain();
        if let Some(us) = handle.woken_after() {
            self.stats().wakeups.record(us);
        }
    }

    pub(super) fn reply(&mut self, req: &Request, reply: Reply) {
        if !self.probes.is_empty() {
            self.drop_probes(req);
        }
        if is_sub(req) {
            return self.txn_reply(req, reply);
        }
        self.respond(req.from, req.id, req.part, reply);
    }

    /// Serves one request, after those before it for the same key.
    fn handle(&mut self, req: Request) {
        if matches!(req.op, Op::CensusStep(_)) {
            return self.census_step(req);
        }
        let Some(req) = self.census_holds(req) else {
            return;
        };
        let Some(req) = self.whole_holds(req) else {
            return;
        };
        let Some(req) = self.arrived(req) else {
            return;
        };
        self.handle_arrived(req);
    }

    /// Serves a request that came, in its connection's order.
    pub(super) fn handle_arrived(&mut self, req: Request) {
        if matches!(req.op, Op::Cross(_)) {
            return self.cross_step(req);
        }
        if matches!(req.op, Op::Carry(_)) {
            return self.cross_carried(req);
        }
        if matches!(req.op, Op::Mail { .. }) {
            return self.cross_mail(req);
        }
        if matches!(req.op, Op::Flush) || !self.flush_hold.is_empty() {
            self.flush_hold.push_back((self.cross_arriving(), req));
            self.flush_when_idle();
            return;
        }
        self.handle_accepted(req);
    }

    /// Serves a request taken before any flush still waiting (see
    /// `flush_when_idle`), after those before it for the same key.
    fn handle_accepted(&mut self, req: Request) {
        if matches!(
            req.op,
            Op::Scan { .. } | Op::Keys { .. } | Op::RandomKey { .. } | Op::CopyStep { .. }
        ) {
            return self.start_scan(req);
        }
        match req.op {
            Op::Census(_) => return self.census_arrived(req),
            Op::DbSize => {
                // Of the one poller (a census's on several).
                let keys = self.ks.live_keys();
                return self.reply(&req, Reply::Int(keys as i64));
            }
            Op::FeedBegin { .. } => return self.feed_begin(req),
            Op::MsetNx { .. } => return self.msetnx_when_free(req),
            Op::Save => return self.save(req),
            Op::Exec { cross: Some(_), .. } => return self.cross_arrived(req),
            Op::Exec { .. } => return self.exec_when_free(req),
            Op::Group { .. } => return self.group_when_free(req),
            Op::Unwatch => return self.unwatch(req),
            Op::Load(_) => return self.load(req),
            _ => {}
        }
        if matches!(req.op, Op::Move { .. }) {
            return self.move_when_free(req);
        }
        if matches!(req.op, Op::Fence { .. }) {
            return self.fence_reached(req);
        }
        if let Some(waiting) = self.busy.get_mut(&req.hash.tag) {
            waiting.push_back(req);
            return;
        }
        self.handle_now(req);
    }

    /// Serves one request now.
    pub(super) fn handle_now(&mut self, req: Request) {
        self.handle_looked_up(req);
        self.ks.clear_new();
    }

    /// Whether the entries of `req`'s key's index tag must be read to know
    /// which is the key's (a tag is short, see `index`): then a hit is the
    /// key's only once its record is read. Inside a
    /// transaction, a key it staged is known.
    fn verifies(&self, req: &Request) -> bool {
        let known = is_sub(req) && self.staged(req);
        !known
    }

    /// Whether the running transaction staged `req`'s key.
    fn staged(&self, req: &Request) -> bool {
        (self.txn.as_ref()).is_some_and(|t| t.view.contains_key(&view_id_of(req)))
    }

    /// Whether a read for `req` holds its key until it is done: requests
    /// for the key arriving meanwhile wait. A read-modify-write, and
    /// under short tags a SET or DEL reading the record to know the key.
    fn holds_key(req: &Request) -> bool {
        !is_sub(req)
            && (req.op.reads_then_writes()
                || matches!(req.op, Op::Set { .. } | Op::Del { .. } | Op::Restore { .. }))
    }

    /// Whether reading `entry`'s record for `req` holds the key's tag until
    /// the read is done: what [`Poller::holds_key`] says, and any read of a
    /// record the poller does not know to be the key's. Found to be
    /// another key's, the request looks again, and must not find the
    /// entry of a write that arrived after it (a SET behind a GET in a
    /// pipeline: the GET would answer the later value).
    fn holds_while_read(&self, req: &Request, entry: Entry) -> bool {
        if Self::holds_key(req) {
            return true;
        }
        let key = req.op.key();
        !is_sub(req) && key.is_some_and(|k| self.owner_of(entry, k) != Some(true))
    }

    fn handle_looked_up(&mut self, req: Request) {
        if matches!(req.op, Op::Watch { .. }) {
            // Short tags: which entry of its tag is the key's, first.
            if let Some(req) = self.probe_keys(req) {
                self.watch(req);
            }
            return;
        }
        let key = req.op.key().unwrap_or_default();
        let hit = self.lookup(&req, req.pid, &req.hash, key);
        // Whose the entry is needs no read when the poller wrote or read
        // its record lately (`keyspace/owners.rs`): another key's is
        // passed by; the key's own is known, for what reads the record
        // only to know that.
        let owner = hit.and_then(|e| self.owner_of(e, key));
        if owner == Some(false) {
            let mut req = req;
            req.tried.push(hit.expect("an entry").offset);
            return self.handle_now(req);
        }
        let to_know = matches!(
            req.op,
            Op::Exists { .. } | Op::Set { .. } | Op::Del { .. } | Op::MoveIn { .. }
        ) || reads_only_to_know(&req.op);
        let known = to_know && owner == Some(true);
        if known {
            self.known_own(&req, hit.expect("an entry"));
        }
        let verify = self.verifies(&req) && !known;
        if verify && hit.is_none() {
            // A write of a missing key replaces its own dead entry, if one
            // of the tag's is (the table keeps one entry per key): read,
            // unless the poller knows whose each is.
            let writes = matches!(
                req.op,
                Op::Set { .. }
                    | Op::Restore { .. }
                    | Op::IncrBy { .. }
                    | Op::IncrByFloat { .. }
                    | Op::Append { .. }
                    | Op::SetRange { .. }
                    | Op::MoveIn { .. }
            );
            let mut own_dead = false;
            if writes {
                let mut passed = req.tried.clone();
                while let Some(dead) = self.ks.dead_candidate(req.pid, &req.hash, &passed) {
                    match self.owner_of(dead, key) {
                        None => return self.fetch(req, dead),
                        Some(false) => passed.push(dead.offset),
                        Some(true) => {
                            self.known_own(&req, dead);
                            own_dead = true;
                            break;
                        }
                    }
                }
            }
            if !own_dead {
                // No entry of the tag is the key's: a write inserts one.
                self.ks.expect_new(req.pid, &req.hash);
            }
        }
        let read = reads_value(&req.op);
        // Short tags: the key's access bits once its record says which
        // entry is its own (`finish_fetch`).
        if hit.is_some() && read && req.touch && !verify {
            self.ks.touch(req.pid, &req.hash);
        }
        match (&req.op, hit) {
            // A plain SET writes at once, and reads the entry it replaced
            // afterwards.
            (Op::Set { .. }, Some(entry)) if verify && self.may_set_unread(&req, entry) => {
                self.set_unread(req, entry)
            }
            // Short tags: the entry found is the key's once its record
            // says so.
            (
                Op::Exists { .. } | Op::Set { .. } | Op::Del { .. } | Op::MoveIn { .. },
                Some(entry),
            ) if verify => self.fetch(req, entry),
            (Op::Exists { .. }, hit) => {
                self.count_lookup(hit.is_some());
                self.reply(&req, Reply::Int(hit.is_some() as i64))
            }
            // SET … GET needs the old value: read it first.
            (
                Op::Set {
                    reply: SetReply::Old,
                    ..
                },
                Some(entry),
            ) => self.fetch(req, entry),
            (Op::Set { .. }, _) => self.set(req, hit, None),
            (Op::IncrBy { .. }, None) => self.incr(req, None),
            (Op::IncrBy { .. }, Some(entry)) => self.fetch(req, entry),
            (Op::GetDel { .. }, None) => {
                self.stats().misses.fetch_add(1, Relaxed);
                self.reply(&req, Reply::Nil)
            }
            (Op::GetDel { .. }, Some(entry)) => self.fetch(req, entry),
            (Op::Del { .. }, None) => {
                if !is_sub(&req) {
                    // A replica's expired key, deleted by its primary.
                    self.ks.forget_expired(req.pid, &req.hash);
                }
                self.reply(&req, Reply::Int(0))
            }
            (Op::Del { .. }, Some(_)) => self.delete(req, Reply::Int(1)),
            (Op::Get { .. }, None) => {
                self.stats().misses.fetch_add(1, Relaxed);
                self.reply(&req, Reply::Nil)
            }
            (Op::Ttl { .. }, None) => {
                self.count_lookup(false);
                self.reply(&req, Reply::Int(-2))
            }
            (Op::Expire { .. }, None) => self.reply(&req, Reply::Int(0)),
            (Op::Get { .. } | Op::Ttl { .. } | Op::Expire { .. }, Some(entry)) => {
                self.fetch(req, entry)
            }
            (Op::MsetNx { .. }, _) => self.msetnx(req),
            (Op::MoveIn { .. }, hit) => self.move_in(req, hit.is_some()),
            // Short tags: what reads no record reads it to know the key.
            (op, Some(entry)) if verify && reads_only_to_know(op) => self.fetch(req, entry),
            (op, hit) if is_keys_op(op) => self.keys(req, hit),
            (_, None) => self.strings(req, None, 0),
            (_, Some(entry)) => self.fetch(req, entry),
        }
    }

    /// Gets the record of `entry` for `req`: from a segment buffer at once,
    /// or with one device read.
    fn fetch(&mut self, req: Request, entry: Entry) {
        if entry.offset == STAGED {
            if self.staged_large(&req) {
                return self.txn_large(req, entry);
            }
            let bytes = self.staged_record(&req);
            return self.finish_fetch(req, entry, Ok(&bytes));
        }
        if let Some(bytes) = self.ks.buffered(entry) {
            let bytes = bytes.to_vec();
            return self.finish_fetch(req, entry, Ok(&bytes));
        }
        match self.read_record(entry) {
            Ok((tag, start)) => {
                let holds = self.holds_while_read(&req, entry);
                if holds {
                    self.busy.entry(req.hash.tag).or_default();
                    self.key_read_issued = Some(req.hash.tag);
                }
                self.reads[tag as usize] = Some(PendingRead {
                    req,
                    entry,
                    start,
                    probe: None,
                    verify: false,
                    holds,
                });
            }
            Err(NotRead::NoBuffer(e)) => self.no_buffer(req, e),
            Err(NotRead::NoSlot | NotRead::Full) => self.requeue(req),
        }
    }

    /// Whether `entry`, found for `key`, is the key's own, if the poller
    /// knows its record's key (`keyspace/owners.rs`).
    fn owner_of(&self, entry: Entry, key: &[u8]) -> Option<bool> {
        (entry.offset != STAGED).then(|| self.ks.holds_key(entry, key))?
    }

    /// `entry` is known to be `req`'s key's own, with no read: it is made
    /// the first of its tag's, as a read makes it ([`Keyspace::resolved`]),
    /// and counted in INFO `index_known_owners`.
    fn known_own(&mut self, req: &Request, entry: Entry) {
        if !self.ks.resolved(req.pid, &req.hash, entry.offset) {
            unreachable!("an entry of the key's tag");
        }
        (self.ks.counters().index_known_owners).fetch_add(1, Relaxed);
    }

    /// Reads the blocks of `entry`'s record from the device into a free
    /// read slot (counted in INFO `device_reads`): the slot, and where the
    /// read starts.
    fn read_record(&mut self, entry: Entry) -> Result<(u32, u64), NotRead> {
        let slot = self.free_tags.pop().ok_or(NotRead::NoSlot)?;
        let block = self.ks.block();
        let start = align_down(entry.offset, block);
        let end = align_up(entry.offset + entry.len as u64, block);
        let eng = self.ks.engine();
        let issued = match eng.alloc((end - start) as usize) {
            Ok(buf) => {
                (eng.read(start, buf, Tag::Read(slot).encode())).map_err(|_buf| NotRead::Full)
            }
            Err(e) => Err(NotRead::NoBuffer(e)),
        };
        if let Err(why) = issued {
            self.free_tags.push(slot);
            return Err(why);
        }
        self.ks.count_read(end - start);
        Ok((slot, start))
    }

    /// Whether `req`, a SET over a key whose tag has the live entry
    /// `entry` found, may replace that entry before its record says it is
    /// the key's ([`Poller::set_unread`]): a plain SET (no condition, no
    /// old value or TTL kept, its value whole) outside a transaction,
    /// whose tag has no other entry, over a record not in a segment buffer
    /// (read from there, it is known at once).
    fn may_set_unread(&self, req: &Request, entry: Entry) -> bool {
        let plain = matches!(
            &req.op,
            Op::Set {
                keep_ttl: false,
                cond: super::msg::Cond::Always,
                reply: SetReply::Ok,
                fed: None,
                ..
            }
        );
        plain
            && !is_sub(req)
            && req.tried.is_empty()
            && entry.offset != STAGED
            && self.ks.buffered(entry).is_none()
            && (self.ks)
                .next_candidate(req.pid, &req.hash, &[entry.offset])
                .is_none()
    }

    /// A SET over a key whose tag has one entry, written over it at once,
    /// as if it were the key's own: a tag of 32 bits is another key's
    /// about once in 10^6 writes, and reading the record first put a
    /// device read before every overwrite's reply. The record is read
    /// afterwards, the key held meanwhile (requests of its tag wait, so no
    /// lookup sees the entry gone), its bytes kept live and its record
    /// kept in place ([`Keyspace::keep_replaced`]); another key's entry
    /// goes back beside the new one ([`Poller::verify_done`]).
    fn set_unread(&mut self, req: Request, entry: Entry) {
        let Ok((slot, start)) = self.read_record(entry) else {
            return self.fetch(req, entry);
        };
        let (pid, hash) = (req.pid, req.hash);
        let key: Box<[u8]> = req.op.key().unwrap_or_default().into();
        self.ks.keep_replaced(pid, &hash);
        self.set(req, Some(entry), None);
        // Not written (refused, or deferred for room: it looks again when
        // it runs), the read has nothing to say.
        if self.ks.kept_replaced(entry.offset) {
            (self.ks.counters().index_overwrites_unread).fetch_add(1, Relaxed);
        }
        self.busy.entry(hash.tag).or_default();
        self.key_read_issued = Some(hash.tag);
        self.reads[slot as usize] = Some(PendingRead {
            req: Request::internal(pid, hash, Op::Get { key }),
            entry,
            start,
            probe: None,
            verify: true,
            holds: true,
        });
    }

    /// The record of an entry a SET replaced unread ([`Poller::set_unread`])
    /// is read: the entry goes back unless it held the SET's key; the
    /// key's requests go on. A record that cannot be read or decoded is
    /// taken as the key's own (another key's is about once in 10^6): kept,
    /// it would bring the key's old value back once the key is deleted.
    fn verify_done(&mut self, req: &Request, entry: Entry, bytes: Result<&[u8], String>) {
        let own = match bytes.map(|b| decode_record(&self.shared.sb.uuid, b)) {
            Ok(Ok(rec)) => Some(rec.key) == req.op.key(),
            Ok(Err(e)) => {
                tracing::warn!(
                    poller = self.id,
                    offset = entry.offset,
                    "a replaced record does not decode ({e}): taken as the key's own"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    poller = self.id,
                    offset = entry.offset,
                    "a replaced record cannot be read ({e}): taken as the key's own"
                );
                true
            }
        };
        if !own {
            (self.ks.counters().index_extra_reads).fetch_add(1, Relaxed);
        }
        if let Err(e) = self.ks.replaced_verified(entry.offset, own) {
            tracing::error!(
                poller = self.id,
                "an entry replaced unread could not go back: {e}"
            );
        }
        // A write deferred for room, or a large value's edit, holds the
        // key until it is done.
        self.let_go(req.hash.tag);
    }

    /// A read that found no memory for its buffer (SPDK's DMA memory ran
    /// out) is an error reply; the next may find some.
    fn no_buffer(&mut self, req: Request, e: std::io::Error) {
        self.ks.counters().io_errors.fetch_add(1, Relaxed);
        let now = self.ks.now_ms();
        if now.saturating_sub(self.no_buffer_logged_ms) >= 1000 {
            self.no_buffer_logged_ms = now;
            tracing::warn!(poller = self.id, "a read got no I/O buffer: {e}");
        }
        self.reply(&req, Reply::Error(super::strings::NO_IO_BUFFER.into()));
        if let Op::Move { to, .. } = &req.op {
            if !is_sub(&req) {
                self.release_move([req.hash.tag, to.hash.tag]);
            }
        }
    }

    /// Puts a request that found no read slot aside for the next turn; the
    /// requests behind it for the same key wait for it.
    fn requeue(&mut self, req: Request) {
        if is_sub(&req) {
            let t = self.txn.as_mut().expect("a transaction runs");
            t.subs.push_front(req);
            t.waiting = false;
            t.stalled = true;
            return;
        }
        self.busy.entry(req.hash.tag).or_default();
        self.requeued.push(req);
    }

    /// Serves the requests put aside last turn, in order.
    fn retry_requeued(&mut self) -> bool {
        let reqs = std::mem::take(&mut self.requeued);
        let any = !reqs.is_empty();
        for req in reqs {
            let tag = req.hash.tag;
            let waiting = self.busy.remove(&tag).unwrap_or_default();
            self.handle_now(req);
            match self.busy.get_mut(&tag) {
                Some(q) => q.extend(waiting),
                None if waiting.is_empty() => {}
                None => {
                    self.busy.insert(tag, waiting);
                    self.release(tag);
                }
            }
        }
        any
    }

    fn complete_read(&mut self, tag: u32, c: Completion) {
        let Some(r) = self.reads[tag as usize].take() else {
            tracing::error!(poller = self.id, tag, "completion for an unknown read");
            return;
        };
        self.free_tags.push(tag);
        let buf = c.buf.expect("a read returns its buffer");
        let result = match c.result {
            Ok(n) if n == buf.len() => {
                let at = (r.entry.offset - r.start) as usize;
                Ok(&buf[at..at + r.entry.len as usize])
            }
            Ok(n) => Err(format!(
                "ERR I/O error: short read of {n} of {} bytes at offset {}",
                buf.len(),
                r.start
            )),
            Err(e) => Err(format!("ERR I/O error reading offset {}: {e}", r.start)),
        };
        if result.is_err() {
            self.ks.counters().io_errors.fetch_add(1, Relaxed);
        }
        let tag = r.req.hash.tag;
        let held = r.holds;
        self.key_read_issued = None;
        if r.verify {
            self.verify_done(&r.req, r.entry, result);
            return;
        }
        let requeued = self.requeued.len();
        match r.probe {
            Some(i) => self.probe_read(r.req, r.entry, i, result),
            None => self.finish_fetch(r.req, r.entry, result),
        }
        // Back to the engine's pool.
        drop(buf);
        // A large value's edit holds the key until its pieces are in; a
        // read found to be another key's was followed by another, or put
        // aside for a read slot (`retry_requeued` goes on with the key).
        let again = self.key_read_issued == Some(tag) || self.requeued.len() > requeued;
        if held && !again && !self.edits.holds(tag) {
            self.release(tag);
        }
    }

    /// Serves the requests that waited for a read-modify-write of `tag`.
    pub(super) fn release(&mut self, tag: u64) {
        let Some(mut waiting) = self.busy.remove(&tag) else {
            return;
        };
        while let Some(req) = waiting.pop_front() {
            self.handle_accepted(req);
            if let Some(q) = self.busy.get_mut(&tag) {
                // Another read-modify-write started: the rest waits for it.
                q.extend(waiting.drain(..));
                return;
            }
        }
    }

    /// Finishes a request once its record's bytes are at hand.
    fn finish_fetch(&mut self, req: Request, entry: Entry, bytes: Result<&[u8], String>) {
        if matches!(req.op, Op::Move { .. }) {
            return self.finish_move_fetch(req, entry, bytes);
        }
        let bytes = match bytes {
            Ok(b) => b,
            Err(msg) => return self.reply(&req, Reply::Error(msg)),
        };
        let rec = match decode_record(&self.shared.sb.uuid, bytes) {
            Ok(rec) if Some(rec.key) == req.op.key() => rec,
            Ok(_) if req.op.key().is_some() => {
                // Another key's record under the same short tag: the key's
                // lookup goes on past it (inside a group or a transaction
                // too, for what reads).
                if self.ks.buffered(entry).is_none() {
                    (self.ks.counters().index_extra_reads).fetch_add(1, Relaxed);
                }
                let mut req = req;
                req.tried.push(entry.offset);
                return self.handle_now(req);
            }
            Ok(_) => return self.corrupt(&req, entry, &"key does not match the index"),
            Err(e) => return self.corrupt(&req, entry, &e),
        };
        let resolve = entry.offset != STAGED;
        let own = !resolve || self.ks.resolved(req.pid, &req.hash, entry.offset);
        if resolve && own {
            self.ks.note_owner(entry.offset, rec.key);
        }
        if !own && (rec.is_large() || !answers_from_record(&req.op)) {
            // Moved by compaction, or written, while it was read: what
            // acts on the key must act on its entry as it is now. (What
            // only reads answers with the record: it was the key's when
            // the request looked it up, before a write that came after.)
            return self.handle_now(req);
        }
        // A dead entry (read under short tags to know whose it is) reads as
        // missing whatever its record holds (an evicted key's value).
        let dead = rec.is_tombstone() || rec.expired(self.ks.now_ms()) || entry.tombstone;
        if matches!(req.op, Op::MoveIn { .. }) {
            // A move's destination, read to know the key is there.
            return self.move_in(req, !dead);
        }
        if dead {
            if matches!(req.op, Op::Exists { .. } | Op::Del { .. }) {
                if matches!(req.op, Op::Exists { .. }) {
                    self.count_lookup(false);
                }
                return self.reply(&req, Reply::Int(0));
            }
            if matches!(req.op, Op::Set { .. }) {
                return self.set(req, None, None);
            }
            if matches!(req.op, Op::IncrBy { .. }) {
                return self.incr(req, None);
            }
            if is_strings_op(&req.op) {
                return self.strings(req, None, 0);
            }
            if is_keys_op(&req.op) {
                return self.keys(req, None);
            }
            self.stats().misses.fetch_add(1, Relaxed);
            let reply = match req.op {
                Op::Get { .. } => Reply::Nil,
                Op::Ttl { .. } => Reply::Int(-2),
                _ => Reply::Int(0),
            };
            return self.reply(&req, reply);
        }
        if resolve && own && req.touch && reads_value(&req.op) {
            self.ks.touch(req.pid, &req.hash);
        }
        if reads_only_to_know(&req.op) {
            return self.keys(req, Some(entry));
        }
        if rec.is_large() && large_edit::is_large_edit(&req) {
            return self.edit_large(req, entry, &rec);
        }
        // An EXPIRE of a large value writes a head sharing its pieces
        // (inside a transaction, the key's view takes the expiry).
        let expire = matches!(req.op, Op::Expire { .. });
        // What was read only to know the key (short tags) needs no pieces.
        let known = match &req.op {
            Op::Exists { .. } | Op::Del { .. } => true,
            Op::Set { reply, .. } => !matches!(reply, SetReply::Old),
            _ => false,
        };
        if rec.is_large() && !matches!(req.op, Op::Ttl { .. }) && !expire && !known {
            return self.large_read(req, entry, &rec);
        }
        self.finish_record(req, entry, &rec)
    }

    /// Finishes a request with its key's live record (a large value's
    /// whole, for what reads its value).
    fn finish_record(&mut self, req: Request, entry: Entry, rec: &Record<'_>) {
        match req.op {
            Op::Get { .. } => {
                let st = self.stats();
                st.reads.fetch_add(1, Relaxed);
                st.hits.fetch_add(1, Relaxed);
                let mut out = Vec::with_capacity(rec.value.len() + 16);
                resp::bulk(&mut out, rec.value);
                self.reply(&req, Reply::Encoded(out))
            }
            Op::Ttl { ms, .. } => {
                self.count_lookup(true);
                let reply = match rec.meta.expire_ms {
                    0 => -1,
                    at => {
                        let left = at.saturating_sub(self.ks.now_ms()) as i64;
                        if ms {
                            left
                        } else {
                            (left + 500) / 1000
                        }
                    }
                };
                self.reply(&req, Reply::Int(reply))
            }
            Op::Expire { at_ms, persist, .. } => self.expire(req, entry, rec, at_ms, persist),
            Op::Set { .. } => {
                let old = rec.value.to_vec();
                self.set(req, Some(entry), Some(old))
            }
            Op::IncrBy { .. } => {
                let old = (rec.value.to_vec(), rec.meta.expire_ms);
                self.incr(req, Some(old))
            }
            Op::GetDel { .. } => {
                let st = self.stats();
                st.reads.fetch_add(1, Relaxed);
                st.hits.fetch_add(1, Relaxed);
                let mut out = Vec::with_capacity(rec.value.len() + 16);
                resp::bulk(&mut out, rec.value);
                self.delete(req, Reply::Encoded(out))
            }
            // Read under short tags, to know the key is there.
            Op::Exists { .. } => {
                self.count_lookup(true);
                self.reply(&req, Reply::Int(1))
            }
            Op::Del { .. } => self.delete(req, Reply::Int(1)),
            Op::MsetNx { .. } => unreachable!("not fetched"),
            Op::Object { .. } | Op::Dump { .. } => self.keys_read(req, rec.value, rec.meta.flags),
            _ => self.strings(req, Some((rec.value, rec.meta.expire_ms)), rec.meta.flags),
        }
    }

    fn corrupt(&mut self, req: &Request, entry: Entry, what: &dyn std::fmt::Display) {
        self.stats().corrupt_records.fetch_add(1, Relaxed);
        tracing::error!(offset = entry.offset, "corrupted record: {what}");
        let msg = format!("ERR corrupted record at offset {}: {what}", entry.offset);
        self.reply(req, Reply::Error(msg));
    }

    /// SET: checks NX / XX, then appends the new version. `live` is the
    /// key's entry; `old` its value, when the reply needs it (SET … GET).
    fn set(&mut self, req: Request, live: Option<Entry>, old: Option<Vec<u8>>) {
        let Op::Set {
            key,
            value,
            expire_ms,
            keep_ttl,
            cond,
            reply,
            fed,
        } = &req.op
        else {
            unreachable!()
        };
        let value_len = fed.as_ref().map_or(value.len(), |f| f.feed.len as usize);
        let skip = match cond {
            super::msg::Cond::Always => false,
            super::msg::Cond::Nx => live.is_some(),
            super::msg::Cond::Xx => live.is_none(),
        };
        // SET … GET and GETSET read the key as GET does: a hit or a miss
        // in INFO, as Redis counts them. A large old value (`live` without
        // `old`: it is streamed) is counted where its stream starts; a SET
        // deferred for room and run again counts again.
        if matches!(reply, SetReply::Old) && (old.is_some() || live.is_none()) {
            let st = self.stats();
            match old {
                Some(_) => st.hits.fetch_add(1, Relaxed),
                None => st.misses.fetch_add(1, Relaxed),
            };
        }
        let old_reply = || match &old {
            Some(v) => {
                let mut out = Vec::with_capacity(v.len() + 16);
                resp::bulk(&mut out, v);
                Reply::Encoded(out)
            }
            None => Reply::Nil,
        };
        let (done, skipped) = match reply {
            SetReply::Ok => (Reply::Encoded(b"+OK\r\n".to_vec()), Reply::Nil),
            SetReply::Int => (Reply::Int(1), Reply::Int(0)),
            SetReply::Old => (old_reply(), old_reply()),
        };
        if skip {
            return self.reply(&req, skipped);
        }
        if self.refused_over_maxmemory(&req) {
            return;
        }
        let expire = match (keep_ttl, live) {
            (true, Some(e)) => e.expire_ms,
            (true, None) => 0,
            (false, _) => *expire_ms,
        };
        if fed.is_some() || !is_sub(&req) && self.ks.is_large(key.len(), value_len) {
            return self.set_large(req, expire, done);
        }
        let result = self.write(&req, req.pid, &req.hash, key, value, expire, false);
        if result.is_ok() {
            self.hold(&req, key);
        }
        self.acknowledge(req, result, done);
    }

    /// INCR and its kin: `old` is the key's value and expiry, `None` when it
    /// is missing (it counts as 0). Redis's errors for a value that is not
    /// an integer and for an overflow; the TTL stays.
    fn incr(&mut self, req: Request, old: Option<(Vec<u8>, u64)>) {
        let Op::IncrBy { key, by } = &req.op else {
            unreachable!()
        };
        let (now, expire) = match &old {
            None => (0, 0),
            Some((v, exp)) => match resp::parse_redis_int(v) {
                Some(n) => (n, *exp),
                None => {
                    let msg = super::strings::NOT_AN_INTEGER;
                    return self.reply(&req, Reply::Error(msg.into()));
                }
            },
        };
        let Some(new) = now.checked_add(*by) else {
            let msg = super::strings::INCR_OVERFLOW;
            return self.reply(&req, Reply::Error(msg.into()));
        };
        if self.refused_over_maxmemory(&req) {
            return;
        }
        let (key, value) = (key.clone(), new.to_string().into_bytes());
        let result = self.write(&req, req.pid, &req.hash, &key, &value, expire, false);
        self.acknowledge(req, result, Reply::Int(new));
    }

    /// Appends a tombstone for the key of `req`, replying `ok` once durable.
    fn delete(&mut self, req: Request, ok: Reply) {
        let key = req.op.key().expect("keyed op").to_vec();
        let result = self.write(&req, req.pid, &req.hash, &key, &[], 0, true);
        self.acknowledge(req, result, ok);
    }

    /// EXPIRE / PEXPIRE / PERSIST on a live record: rewrites it with the new
    /// expiry, or deletes it when the expiry is not in the future.
    fn expire(&mut self, req: Request, entry: Entry, rec: &Record<'_>, at_ms: u64, persist: bool) {
        if persist && rec.meta.expire_ms == 0 {
            return self.reply(&req, Reply::Int(0));
        }
        if expire_refused(&req.op, rec.meta.expire_ms, at_ms) {
            return self.reply(&req, Reply::Int(0));
        }
        let deletes = !persist && at_ms <= self.ks.now_ms();
        if rec.is_large() && !deletes {
            return self.expire_large(req, entry, rec, at_ms, persist);
        }
        let (key, value) = (rec.key.to_vec(), rec.value.to_vec());
        let result = if !persist && at_ms <= self.ks.now_ms() {
            self.write(&req, req.pid, &req.hash, &key, &[], 0, true)
        } else {
            let (at, enc) = (if persist { 0 } else { at_ms }, rec.enc());
            let r = self.write_marked(&req, req.pid, &req.hash, &key, &value, at, false, enc);
            if r.is_ok() && rec.meta.flags & STAGED_HELD != 0 {
                self.hold(&req, &key);
            }
            r
        };
        self.acknowledge(req, result, Reply::Int(1));
    }

    /// Replies to a write: at once when it failed or needs no commit,
    /// after its commit otherwise. A write that found no free segment
    /// while compaction or eviction can still make room waits for it.
    fn acknowledge(&mut self, req: Request, result: Result<(), WriteError>, ok: Reply) {
        if !is_sub(&req) && matches!(result, Err(WriteError::Full)) && self.may_defer() {
            return self.defer(req);
        }
        self.acknowledge_now(req, result, ok)
    }

    /// Whether a write refused for want of a free segment may wait for
    /// compaction or eviction to make room.
    fn may_defer(&self) -> bool {
        self.ks.may_make_room() && self.deferred.len() < MAX_DEFERRED
    }

    /// Puts a write that found no free segment aside until there is room
    /// (`retry_deferred`); its key's later requests wait for it. One
    /// deferred again keeps the time it first was.
    fn defer(&mut self, req: Request) {
        if self.retrying_since.is_none() {
            self.stats().writes_deferred.fetch_add(1, Relaxed);
        }
        self.busy.entry(req.hash.tag).or_default();
        let since = self.retrying_since.unwrap_or_else(|| self.ks.now());
        self.deferred.push_back((since, req));
    }

    /// Replies to a write without deferring it: at once when it failed or
    /// needs no commit, after its commit otherwise; inside a transaction
    /// the write is staged, and the transaction answers once all its
    /// writes are durable.
    fn acknowledge_now(&mut self, req: Request, result: Result<(), WriteError>, ok: Reply) {
        if is_sub(&req) {
            let reply = match result {
                Ok(()) => ok,
                Err(e) => self.refusal(e),
            };
            return self.txn_reply(&req, reply);
        }
        let reply = match result {
            Ok(()) => {
                let w = Waiter::new(&req, ok, None);
                match self.ks.acknowledge(w) {
                    Some(w) => w.reply,
                    None => return,
                }
            }
            Err(e) => self.refusal(e),
        };
        self.reply(&req, reply);
    }

    /// The reply to a write the keyspace refused.
    fn refusal(&self, e: WriteError) -> Reply {
        match e {
            WriteError::Full => {
                self.stats().writes_refused.fetch_add(1, Relaxed);
                Reply::Error(super::strings::STORE_FULL.into())
            }
            WriteError::TooLarge => Reply::Error(super::strings::RECORD_TOO_LARGE.into()),
            WriteError::NoBuffer(_) => {
                self.ks.counters().io_errors.fetch_add(1, Relaxed);
                Reply::Error(super::strings::NO_IO_BUFFER.into())
            }
            e @ WriteError::Index(_) => Reply::Error(format!("ERR {e}")),
        }
    }

    /// Replies to the writers whose commits completed or failed.
    fn answer_writers(&mut self) {
        self.ks.take_acks(&mut self.acks);
        let mut acks = std::mem::take(&mut self.acks);
        // A large value's SET enters the stream once its head is durable,
        // which its acknowledgement says; its key was held meanwhile, so it
        // keeps its place among the key's writes.
        for (w, result) in &acks {
            let Some(bytes) = w.hold.and_then(|tag| self.large_stream.remove(&tag)) else {
                continue;
            };
            if result.is_ok() {
                let seq = self.ks.durable_seq().saturating_sub(1);
                (self.repl_out).push(&self.shared.repl, seq, |out| out.extend_from_slice(&bytes));
            }
        }
        // The stream first: a WAIT after a write's reply finds it there.
        self.stream_durable();
        for (w, result) in acks.drain(..) {
            if let Some(n) = w.load {
                self.load_durable(n, result);
                continue;
            }
            if let Some((n, tag)) = w.pieces_of {
                let result = result.map_err(|e| super::strings::write_failed(&e));
                self.txn_pieces_durable(n, tag, result);
                continue;
            }
            if w.cross {
                self.cross_durable((w.to, w.id), w.reply, result);
                continue;
            }
            if let Some(u) = w.unlink {
                self.unlink_renamed(*u, result);
                continue;
            }
            if w.save {
                self.saved(w.id == NO_REPLY, result.is_ok());
                if w.id == NO_REPLY {
                    continue;
                }
            }
            let reply = match result {
                Ok(()) => w.reply,
                Err(e) => Reply::Error(super::strings::write_failed(&e)),
            };
            // A transaction's flush has none: its EXEC answers.
            if w.id != NO_REPLY {
                self.respond(w.to, w.id, w.part, reply);
            }
            if let Some(tag) = w.hold {
                self.edits.written(tag);
                self.release(tag);
            }
        }
        self.acks = acks;
    }

    /// Appends to the replication stream the writes now durable and the
    /// keys that expired or were evicted (a replica's store keeps expired
    /// keys until its primary deletes them).
    fn stream_durable(&mut self) {
        let repl = &self.shared.repl;
        self.ks.report_gone(repl.feeding());
        self.ks.hold_expired(repl.is_replica());
        self.ks.take_lost(&mut self.repl_out.lost);
        self.repl_out.unnamed += self.ks.take_gone(&mut self.repl_out.gone);
        let (durable, next) = (self.ks.durable_seq(), self.ks.next_seq());
        let unnamed = self.ks.gone_unnamed();
        self.repl_out.settle(repl, durable, next, unnamed);
    }

    /// SAVE or BGSAVE: everything this poller has acknowledged becomes
    /// durable with the next commit, which starts at once; the reply (none
    /// for BGSAVE, whose id is `NO_REPLY`) waits for it.
    fn save(&mut self, req: Request) {
        self.ks.save(Waiter::ok(&req, true));
    }

    /// This poller's part of a save is durable (`ok`) or failed: LASTSAVE
    /// moves once every poller's part of a successful one is in, BGSAVE's
    /// count of pollers still saving goes down.
    fn saved(&mut self, background: bool, ok: bool) {
        self.shared.saves.record(background, ok);
    }

    /// Redis's refusal of a command that adds data past `--maxmemory`
    /// when nothing can be evicted for it; whether it refused.
    fn refused_over_maxmemory(&mut self, req: &Request) -> bool {
        if !self.ks.refuses_over_maxmemory() {
            return false;
        }
        self.stats().writes_refused.fetch_add(1, Relaxed);
        self.reply(req, Reply::Error(super::strings::OVER_MAXMEMORY.into()));
        true
    }

    /// Retries deferred writes once there is room again; a write that
    /// waited too long is refused (compaction cannot keep up).
    fn retry_deferred(&mut self) -> bool {
        let mut any = false;
        let now = self.ks.now();
        while self
            .deferred
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > MAX_DEFER)
        {
            let (_, req) = self.deferred.pop_front().expect("front");
            let tag = req.hash.tag;
            self.stats().writes_refused.fetch_add(1, Relaxed);
            self.reply(&req, Reply::Error(super::strings::COMPACTION_BEHIND.into()));
            self.release(tag);
            any = true;
        }
        while self.ks.room_for_writes() {
            let Some((since, req)) = self.deferred.pop_front() else {
                break;
            };
            let tag = req.hash.tag;
            let before = self.deferred.len();
            let waiting = self.busy.remove(&tag).unwrap_or_default();
            self.retrying_since = Some(since);
            self.handle_now(req);
            self.retrying_since = None;
            any = true;
            // Deferred again, or holding its key (a large value's write
            // under way): the key's requests keep waiting.
            match self.busy.get_mut(&tag) {
                Some(q) => q.extend(waiting),
                None => {
                    self.busy.insert(tag, waiting);
                    self.release(tag);
                }
            }
            if self.deferred.len() > before {
                break; // deferred again
            }
        }
        any
    }

    pub(super) fn respond(&mut self, to: super::msg::ConnRef, id: u64, part: u32, reply: Reply) {
        if !self.gates.is_empty() {
            if let Some(stream) = self.gates.remove(&(to, id, part)) {
                return self.gate_reply(stream, reply);
            }
        }
        if !self.exec_gates.is_empty() {
            if let Some(first) = self.exec_gates.remove(&(to, id, part)) {
                // EXEC's reply, then its streamed reads (or none of them).
                let ran = matches!(reply, Reply::Txn(_));
                self.respond(to, id, part, reply);
                return self.exec_answered(first, ran);
            }
        }
        self.shared.conns[to.thread as usize]
            .responses
            .push(Response {
                to,
                id,
                part,
                reply,
            });
        self.touched[to.thread as usize] = true;
    }

    fn notify_conns(&mut self) {
        for (t, touched) in self.touched.iter_mut().enumerate() {
            if std::mem::take(touched) {
                self.shared.conns[t].ring();
            }
        }
    }

    // Strings and TTLs.

    /// The commands that read a value and may rewrite it: `cur` is the
    /// key's value and expiry, `None` when it is missing.
    fn strings(&mut self, req: Request, cur: Option<(&[u8], u64)>, cur_flags: u8) {
        use super::strings as text;
        let read = matches!(
            req.op,
            Op::GetRange { .. } | Op::Strlen { .. } | Op::GetEx { .. } | Op::ExpireTime { .. }
        );
        if read {
            self.count_lookup(cur.is_some());
        }
        let bulk = |v: &[u8]| {
            let mut out = Vec::with_capacity(v.len() + 16);
            resp::bulk(&mut out, v);
            Reply::Encoded(out)
        };
        let max_value = self.shared.cfg.conns.max_value_size;
        // The new value, its expiry, and the reply once it is written; the
        // new value's encoding, as Redis makes it.
        let enc = match (&req.op, cur) {
            (Op::GetEx { .. }, _) => Enc::of_flags(cur_flags),
            (Op::Append { .. }, Some(_)) | (Op::SetRange { .. }, _) => Enc::Raw,
            (Op::IncrByFloat { .. }, _) => Enc::Embstr,
            _ => Enc::Value,
        };
        let (value, expire, ok) = match (&req.op, cur) {
            (Op::Strlen { .. }, cur) => {
                let len = cur.map_or(0, |(v, _)| v.len());
                return self.reply(&req, Reply::Int(len as i64));
            }
            (Op::GetRange { start, end, .. }, cur) => {
                let v = cur.map_or(&[][..], |(v, _)| v);
                return self.reply(&req, bulk(range(v, *start, *end)));
            }
            (Op::ExpireTime { ms, .. }, cur) => {
                let reply = match cur {
                    None => -2,
                    Some((_, 0)) => -1,
                    Some((_, at)) if *ms => at as i64,
                    // Redis's rounding (unsigned, as its build computes it:
                    // no wrap at the top).
                    Some((_, at)) => (at.saturating_add(500) / 1000) as i64,
                };
                return self.reply(&req, Reply::Int(reply));
            }
            (Op::GetEx { .. }, None) => return self.reply(&req, Reply::Nil),
            (Op::GetEx { expiry, .. }, Some((v, exp))) => match expiry {
                GetExpiry::Keep => return self.reply(&req, bulk(v)),
                GetExpiry::Invalid(msg) => {
                    let msg = msg.clone();
                    return self.reply(&req, Reply::Error(msg));
                }
                GetExpiry::Persist if exp == 0 => return self.reply(&req, bulk(v)),
                GetExpiry::Persist => (v.to_vec(), 0, bulk(v)),
                &GetExpiry::At(at) if at <= self.ks.now_ms() => {
                    let reply = bulk(v);
                    return self.delete(req, reply);
                }
                &GetExpiry::At(at) => (v.to_vec(), at, bulk(v)),
            },
            (Op::Append { value, .. }, cur) => {
                let (old, exp) = cur.unwrap_or((&[], 0));
                let len = old.len() + value.len();
                if len as u64 > super::msg::PROTO_MAX_BULK_LEN {
                    return self.reply(&req, Reply::Error(text::STRING_TOO_LONG.into()));
                }
                if len as u64 > max_value {
                    let msg = text::value_too_large(len, max_value);
                    return self.reply(&req, Reply::Error(msg));
                }
                let new = [old, value].concat();
                (new, exp, Reply::Int(len as i64))
            }
            (Op::SetRange { offset, value, .. }, cur) => {
                let (old, exp) = cur.unwrap_or((&[], 0));
                if value.is_empty() {
                    // Nothing to write: a missing key stays missing.
                    return self.reply(&req, Reply::Int(old.len() as i64));
                }
                let at = *offset as usize;
                let mut new = old.to_vec();
                new.resize(new.len().max(at + value.len()), 0);
                new[at..at + value.len()].copy_from_slice(value);
                let len = new.len() as i64;
                (new, exp, Reply::Int(len))
            }
            (Op::IncrByFloat { by, .. }, cur) => {
                let (old, exp) = match cur {
                    None => (Some(LongDouble::from_i64(0)), 0),
                    Some((v, exp)) => (LongDouble::parse(v), exp),
                };
                let (Some(old), Some(by)) = (old, LongDouble::parse(by)) else {
                    return self.reply(&req, Reply::Error(text::NOT_A_FLOAT.into()));
                };
                let sum = old.add(by).filter(LongDouble::is_finite);
                let Some(sum) = sum else {
                    return self.reply(&req, Reply::Error(text::FLOAT_NAN_OR_INF.into()));
                };
                let new = sum.to_redis_string().into_bytes();
                let reply = bulk(&new);
                (new, exp, reply)
            }
            _ => unreachable!("not a strings op: {:?}", req.op),
        };
        // GETEX only changes an expiry: no new data for maxmemory.
        if !matches!(req.op, Op::GetEx { .. }) && self.refused_over_maxmemory(&req) {
            return;
        }
        let key = req.op.key().expect("keyed op").to_vec();
        if !is_sub(&req) && self.ks.is_large(key.len(), value.len()) {
            return self.write_large_value(&req, value.into(), expire, ok);
        }
        // What Redis stores as the command's own argument stays held by
        // it until EXEC ends; GETEX changes only the expiry.
        let held = match (&req.op, cur) {
            (Op::GetEx { .. }, _) => cur_flags & STAGED_HELD != 0,
            (Op::Append { .. }, None) | (Op::IncrByFloat { .. }, _) => true,
            _ => false,
        };
        let result = self.write_marked(&req, req.pid, &req.hash, &key, &value, expire, false, enc);
        if held && result.is_ok() {
            self.hold(&req, &key);
        }
        self.acknowledge(req, result, ok);
    }

    /// Inside a transaction, marks the value just staged for `key` as
    /// held by its queued command ([`Staged::held`]).
    fn hold(&mut self, req: &Request, key: &[u8]) {
        if !is_sub(req) {
            return;
        }
        let t = self.txn.as_mut().expect("a transaction runs");
        if let Some(s) = t.view.get_mut(&view_id(key)) {
            s.held = true;
        }
    }

    /// Under short tags, finds which entry of its tag is its own for each
    /// key of `req` besides the request's own ([`other_keys`]) that its
    /// transaction did not stage, reading the tag's records (live and dead)
    /// one by one, as a GET does: returns the request once every one is
    /// known, or `None` while a read is under way (it comes back through
    /// [`Poller::handle_now`]).
    fn probe_keys(&mut self, req: Request) -> Option<Request> {
        // A move's destination on another poller is resolved there
        // (`Op::MoveIn`).
        if self.moves_across(&req) {
            return Some(req);
        }
        let id = (req.from, req.id, req.part);
        let keys: Vec<(u32, KeyHash, Box<[u8]>)> = (other_keys(&req).into_iter())
            .map(|(pid, hash, key)| (pid, hash, key.into()))
            .collect();
        let mut state = self.probes.remove(&id).unwrap_or_default();
        state.resize(keys.len(), KeyProbe::default());
        for (i, (pid, hash, key)) in keys.iter().enumerate() {
            if is_sub(&req) && self.txn_staged(key) {
                // Its view in the transaction decides.
                state[i].own.get_or_insert(None);
            }
            while state[i].own.is_none() {
                let Some(e) = self.ks.next_candidate(*pid, hash, &state[i].tried) else {
                    state[i].own = Some(None);
                    break;
                };
                let Some(bytes) = self.ks.buffered(e) else {
                    self.probes.insert(id, state);
                    self.fetch_probe(req, e, i);
                    return None;
                };
                match decode_record(&self.shared.sb.uuid, bytes) {
                    Ok(rec) if rec.key == &key[..] => {
                        self.ks.follow(*pid, e.offset);
                        state[i].own = Some(Some(e.offset));
                    }
                    Ok(_) => state[i].tried.push(e.offset),
                    Err(err) => {
                        self.probes.insert(id, state);
                        self.corrupt(&req, e, &err);
                        return self.probe_failed(req);
                    }
                }
            }
        }
        self.probes.insert(id, state);
        Some(req)
    }

    /// Whether the running transaction's view decides `key`: it staged
    /// it, or flushed the store (then every key it did not stage since is
    /// absent to it, whatever the store holds).
    fn txn_staged(&self, key: &[u8]) -> bool {
        (self.txn.as_ref()).is_some_and(|t| t.flushed || t.view.contains_key(&view_id(key)))
    }

    /// Reads the record of `entry` to know whether it is `req`'s other key
    /// `i`'s ([`Poller::probe_keys`]).
    fn fetch_probe(&mut self, req: Request, entry: Entry, i: usize) {
        match self.read_record(entry) {
            Ok((tag, start)) => {
                // What a WATCH watches is the key as it is now: a write
                // that came after it (pipelined behind it, or another
                // client's) waits until it has looked.
                let watch = matches!(req.op, Op::Watch { .. });
                if watch {
                    self.busy.entry(req.hash.tag).or_default();
                    self.key_read_issued = Some(req.hash.tag);
                }
                self.reads[tag as usize] = Some(PendingRead {
                    holds: watch || Self::holds_key(&req),
                    req,
                    entry,
                    start,
                    probe: Some(i),
                    verify: false,
                });
            }
            Err(NotRead::NoBuffer(e)) => self.no_buffer(req, e),
            Err(NotRead::NoSlot | NotRead::Full) => self.requeue(req),
        }
    }

    /// A record read for [`Poller::probe_keys`] is at hand: the key is
    /// known, or passed by, and the request goes on.
    fn probe_read(&mut self, req: Request, entry: Entry, i: usize, bytes: Result<&[u8], String>) {
        let id = (req.from, req.id, req.part);
        let bytes = match bytes {
            Ok(b) => b,
            Err(msg) => {
                self.reply(&req, Reply::Error(msg));
                self.probe_failed(req);
                return;
            }
        };
        let (pid, key) = match other_keys(&req).get(i) {
            Some(&(pid, _, key)) => (pid, key.to_vec()),
            None => return self.handle_now(req),
        };
        match decode_record(&self.shared.sb.uuid, bytes) {
            Ok(rec) => {
                let state = self.probes.entry(id).or_default();
                state.resize(state.len().max(i + 1), KeyProbe::default());
                if rec.key == &key[..] {
                    state[i].own = Some(Some(entry.offset));
                    self.ks.follow(pid, entry.offset);
                } else {
                    state[i].tried.push(entry.offset);
                    (self.ks.counters().index_extra_reads).fetch_add(1, Relaxed);
                }
            }
            Err(err) => {
                self.corrupt(&req, entry, &err);
                self.probe_failed(req);
                return;
            }
        }
        self.handle_now(req)
    }

    /// A command of several keys answered (an error) while it learned its
    /// keys: they are free again.
    fn probe_failed(&mut self, req: Request) -> Option<Request> {
        self.drop_probes(&req);
        if !is_sub(&req) {
            match &req.op {
                Op::Move { to, .. } => self.release_move([req.hash.tag, to.hash.tag]),
                _ => {
                    for tag in claim_tags(&req.op) {
                        self.release(tag);
                    }
                }
            }
        }
        None
    }

    /// Forgets what [`Poller::probe_keys`] learned for `req`.
    fn drop_probes(&mut self, req: &Request) {
        if let Some(state) = self.probes.remove(&(req.from, req.id, req.part)) {
            let keys = other_keys(req);
            for (k, p) in state.iter().enumerate() {
                if let (Some(Some(at)), Some(&(pid, _, _))) = (p.own, keys.get(k)) {
                    self.ks.unfollow(pid, at);
                }
            }
        }
    }

    /// The entry other key `i` of `req` has now, as [`Poller::probe_keys`]
    /// found it (`None`: it has none).
    fn probed_own(&self, req: &Request, i: usize) -> Option<u64> {
        let state = self.probes.get(&(req.from, req.id, req.part))?;
        let at = state.get(i)?.own??;
        let pid = other_keys(req).get(i)?.0;
        self.ks.followed(pid, at)
    }

    /// Whether other key `i` of `req` (at `pid`, `hash`, `key`) is there:
    /// under short tags as [`Poller::probe_keys`] found it, unless its
    /// transaction staged it.
    fn other_exists(
        &mut self,
        req: &Request,
        i: usize,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
    ) -> bool {
        if is_sub(req) && self.txn_staged(key) {
            return self.lookup(req, pid, hash, key).is_some();
        }
        let own = self.probed_own(req, i);
        own.is_some() && self.ks.own_live(pid, hash, own).is_some()
    }

    /// Before a write of other key `i` of `req`: under short tags, the
    /// entry it replaces is the one [`Poller::probe_keys`] found its own.
    fn act_on_other(&mut self, req: &Request, i: usize, pid: u32, hash: &KeyHash, key: &[u8]) {
        if is_sub(req) && self.txn_staged(key) {
            return;
        }
        let own = self.probed_own(req, i);
        if !self.ks.act_on(pid, hash, own) {
            self.ks.act_on(pid, hash, None);
        }
    }

    /// MSETNX: runs once it holds its keys ([`Poller::claim`]), then
    /// frees them.
    fn msetnx_when_free(&mut self, req: Request) {
        let Some(req) = self.claim(req) else {
            return;
        };
        // `msetnx` frees the keys once answered.
        self.handle_now(req);
    }

    /// MSETNX once its keys are free: all set in this turn (one commit
    /// carries them) or none, when any exists. A write the store refuses
    /// is answered at once rather than deferred, and may leave the keys
    /// before it set.
    fn msetnx(&mut self, req: Request) {
        let Some(req) = self.probe_keys(req) else {
            return;
        };
        let tags = (!is_sub(&req)).then(|| claim_tags(&req.op));
        self.msetnx_probed(req);
        for tag in tags.into_iter().flatten() {
            self.let_go(tag);
        }
    }

    /// MSETNX once its keys' own entries are known.
    fn msetnx_probed(&mut self, req: Request) {
        let Op::MsetNx { pairs, others, .. } = &req.op else {
            unreachable!()
        };
        for (i, p) in pairs.iter().enumerate() {
            if self.other_exists(&req, i, p.pid, &p.hash, &p.key) {
                // A part of one across pollers refuses them all (inside
                // an EXEC, its answer sends the others its refusal).
                self.veto(&req, Reply::Int(0));
                return self.reply(&req, Reply::Int(0));
            }
        }
        if self.refused_over_maxmemory(&req) {
            return;
        }
        if !others.is_empty() {
            // Inside an EXEC across pollers: none of this part's keys is
            // there; the other parts' verdicts decide.
            self.settle(req.id, Some(Mail::Verdict(true)));
            return self.await_mail(req, None);
        }
        self.msetnx_write(req);
    }

    /// MSETNX sets its keys, none of them there (nor, across pollers,
    /// any of the other parts').
    pub(super) fn msetnx_write(&mut self, req: Request) {
        let Op::MsetNx { pairs, others, .. } = &req.op else {
            unreachable!()
        };
        for (i, p) in pairs.iter().enumerate() {
            // A key given twice: its first write made its entry the first.
            if !pairs[..i].iter().any(|q| q.key == p.key) {
                self.act_on_other(&req, i, p.pid, &p.hash, &p.key);
            }
            if let Err(e) = self.write(&req, p.pid, &p.hash, &p.key, &p.value, 0, false) {
                let reply = self.refusal(e);
                return self.reply(&req, reply);
            }
            self.hold(&req, &p.key);
        }
        self.drop_probes(&req);
        // Across pollers, the first part answers for all.
        let across = self.part_of_single(&req) || !others.is_empty();
        let ok = match across && req.part > 0 {
            true => simple(super::strings::OK),
            false => Reply::Int(1),
        };
        self.acknowledge(req, Ok(()), ok);
    }

    /// Whether `req` is a request of a part of a command of several keys
    /// run across pollers (MSET, MSETNX, a move), not of an EXEC.
    fn part_of_single(&self, req: &Request) -> bool {
        is_sub(req) && (self.txn.as_ref()).is_some_and(|t| cross::single_of(&t.exec).is_some())
    }

    /// A request of a part of a command of several keys run across
    /// pollers found what refuses the command (see `Txn::veto`): `reply`
    /// is its reply, and no part writes anything. Elsewhere, nothing.
    fn veto(&mut self, req: &Request, reply: Reply) {
        if self.part_of_single(req) {
            let t = self.txn.as_mut().expect("a transaction runs");
            t.veto.get_or_insert(reply);
        }
    }

    // -----------------------------------------------------------------
    // Transactions (EXEC) and WATCH.

    /// The live entry of a key: inside a transaction, as it left the key.
    fn lookup(&mut self, req: &Request, pid: u32, hash: &KeyHash, key: &[u8]) -> Option<Entry> {
        if is_sub(req) {
            let now_ms = self.ks.now_ms();
            let t = self.txn.as_ref().expect("a transaction runs");
            if let Some(s) = t.view.get(&view_id(key)) {
                return s.now.as_ref().and_then(|(v, exp)| {
                    let e = Entry {
                        offset: STAGED,
                        len: record_len(s.key.len(), v.len()) as u32,
                        tombstone: false,
                        expire_ms: *exp,
                    };
                    e.live(now_ms).then_some(e)
                });
            }
            if t.flushed {
                return None;
            }
        }
        let tried: &[u64] = if (pid, hash) == (req.pid, &req.hash) {
            &req.tried
        } else {
            &[]
        };
        self.ks.lookup_skipping(pid, hash, tried)
    }

    /// Writes a record for `req`; inside a transaction, stages it.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        req: &Request,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        value: &[u8],
        expire_ms: u64,
        tombstone: bool,
    ) -> Result<(), WriteError> {
        self.write_marked(req, pid, hash, key, value, expire_ms, tombstone, Enc::Value)
    }

    /// [`Poller::write`] of a value whose encoding its history decides
    /// (APPEND, SETRANGE, INCRBYFLOAT, COPY, and what rewrites a value as
    /// it is). A replica is sent the value alone: it reports the encoding
    /// by the bytes.
    #[allow(clippy::too_many_arguments)]
    fn write_marked(
        &mut self,
        req: &Request,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        value: &[u8],
        expire_ms: u64,
        tombstone: bool,
        enc: Enc,
    ) -> Result<(), WriteError> {
        if !is_sub(req) {
            (self.ks).write_marked(pid, hash, key, value, expire_ms, tombstone, enc)?;
            let seq = self.ks.next_seq() - 1;
            (self.repl_out).push(&self.shared.repl, seq, |out| {
                replicated(out, key, value, expire_ms, tombstone)
            });
            return Ok(());
        }
        // A value larger than a segment is written in pieces when the
        // transaction ends (`finish_txn`).
        let id = view_id(key);
        let own = self.stage_own(id, pid, hash);
        let t = self.txn.as_mut().expect("a transaction runs");
        let now = (!tombstone).then(|| (value.to_vec(), expire_ms));
        match t.view.entry(id) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.get_mut().now = now;
                e.get_mut().enc = enc;
                e.get_mut().held = false;
                e.get_mut().access = None;
                e.get_mut().deleted |= tombstone;
                // A large value edited in pieces is replaced: its pin goes.
                if let Some(l) = e.get_mut().large.take() {
                    self.ks.unpin_pieces(&l.base);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                t.order.push(id);
                e.insert(Staged {
                    pid,
                    hash: *hash,
                    key: key.into(),
                    now,
                    enc,
                    held: false,
                    large: None,
                    own,
                    access: None,
                    deleted: tombstone,
                });
            }
        }
        Ok(())
    }

    /// The key's own entry, as this turn's lookup resolved it, for a key
    /// the running transaction stages now (view `id`): followed through
    /// compaction until the transaction ends. `None` when the key has
    /// none, or is staged already.
    pub(super) fn stage_own(&mut self, id: u64, pid: u32, hash: &KeyHash) -> Option<u64> {
        let t = self.txn.as_ref().expect("a transaction runs");
        if t.view.contains_key(&id) {
            return None;
        }
        let own = self.ks.own_entry(pid, hash);
        if let Some(at) = own {
            self.ks.follow(pid, at);
        }
        own
    }

    /// Where the entries the transaction's keys had when staged are now
    /// (compaction may have moved them); they are followed no more.
    fn unfollow_owns(&mut self, t: &mut Txn) {
        for s in t.view.values_mut() {
            if let Some(at) = s.own {
                s.own = self.ks.unfollow(s.pid, at);
            }
        }
    }

    /// The record a transaction staged for `req`'s key, encoded as the
    /// read path expects it from the device.
    fn staged_record(&self, req: &Request) -> Vec<u8> {
        let t = self.txn.as_ref().expect("a transaction runs");
        let s = &t.view[&view_id_of(req)];
        let (value, expire_ms) = s.now.as_ref().expect("a staged value");
        let meta = RecordMeta {
            gen: 0,
            seq: 0,
            expire_ms: *expire_ms,
            flags: s.enc.flags() | if s.held { STAGED_HELD } else { 0 },
        };
        let mut b = vec![0; record_len(s.key.len(), value.len()) as usize];
        encode_record(&self.shared.sb.uuid, &meta, &s.key, value, &mut b);
        b
    }

    /// A command of the running transaction answered.
    fn txn_reply(&mut self, req: &Request, reply: Reply) {
        let t = self.txn.as_mut().expect("a transaction runs");
        let (id, part) = (req.id & !TXN_PART, req.part);
        let mut reply = reply;
        if let Some((_, _, read)) = t.gated.take_if(|g| (g.0, g.1) == (id, part)) {
            // A large value's read: its place in EXEC's reply, unless the
            // command failed.
            reply = self.gated_reply(read, reply);
        }
        let t = self.txn.as_mut().expect("a transaction runs");
        t.replies.push((id, part, reply));
        t.waiting = false;
        // Answered without sending what the other parts wait for: they
        // get the default (no value, a refusal).
        self.settle(req.id, None);
    }

    /// Holds every key of a command of several keys (EXEC, a group,
    /// MSETNX, RENAME and COPY) for it, in the order requests came:
    /// returns it once it holds them all (requests for them that come
    /// later wait behind it), or keeps it until then. A key is busy while
    /// a request holds it (a queue in `busy`): the command waits in the
    /// queue of its first busy key, holds its free keys at once, and puts
    /// a fence ([`Op::Fence`]) in the queue of each other busy key; it
    /// runs when it and its fences have all reached the front of their
    /// queues (whichever comes last runs it). Commands waiting so never
    /// deadlock: each holds only keys that were free, and every queue
    /// drains in order.
    fn claim(&mut self, mut req: Request) -> Option<Request> {
        let tags = claim_tags(&req.op);
        let wait = claim_wait(&mut req.op);
        if let Some(id) = *wait {
            // At the front of the queue it waited in.
            let w = self.moves.get_mut(&id).expect("a waiting request");
            self.busy.entry(w.queue).or_default();
            if w.fences > 0 {
                w.parked = Some(req);
                return None;
            }
            self.moves.remove(&id);
            *claim_wait(&mut req.op) = None;
            return Some(req);
        }
        let busy: Vec<u64> = (tags.iter().copied())
            .filter(|t| self.busy.contains_key(t))
            .collect();
        for &t in &tags {
            // A free key is held at once.
            self.busy.entry(t).or_default();
        }
        let Some((&queue, fenced)) = busy.split_first() else {
            return Some(req);
        };
        let (id, from, rid, part, pid) = (self.next_move, req.from, req.id, req.part, req.pid);
        self.next_move += 1;
        *wait = Some(id);
        for &t in fenced {
            let fence = Request {
                tried: Vec::new(),
                from,
                id: rid,
                part,
                hash: KeyHash { tag: t, ..req.hash },
                pid,
                op: Op::Fence { id },
                touch: false,
            };
            self.busy.get_mut(&t).expect("busy key").push_back(fence);
        }
        self.moves.insert(
            id,
            MoveWait {
                queue,
                fences: fenced.len() as u32,
                parked: None,
            },
        );
        self.busy.get_mut(&queue).expect("busy key").push_back(req);
        None
    }

    /// EXEC: once it holds its keys (and those its connection watches
    /// here), it waits its turn to run.
    fn exec_when_free(&mut self, mut req: Request) {
        if let Op::Exec {
            watched: true,
            wait: None,
            cross: None,
            watch_tags,
            ..
        } = &mut req.op
        {
            *watch_tags = watch_tags_of(self.watches.get(&req.from));
        }
        if let Some(req) = self.claim(req) {
            if cross::is_cross(&req) {
                // It runs once every part holds its keys.
                return self.cross_held(req);
            }
            self.txns_waiting.push_back(req);
        }
    }

    /// A command's requests for several keys: once they hold their keys,
    /// they run one after the other now (each looks its key up at once),
    /// and the keys are free again.
    fn group_when_free(&mut self, req: Request) {
        let Some(mut req) = self.claim(req) else {
            return;
        };
        let tags = claim_tags(&req.op);
        let Op::Group { reqs, .. } = &mut req.op else {
            unreachable!()
        };
        let held = self.run_held(std::mem::take(reqs));
        for tag in tags {
            // A read holding it releases it.
            if !held.contains(&tag) {
                self.let_go(tag);
            }
        }
    }

    /// A command of several keys that ran lets key `tag` go, unless one
    /// of its writes still holds it: one deferred for room
    /// (`retry_deferred` releases it), a large value's until its head is
    /// durable (a GET pipelined behind an MSET of one reads it whole).
    fn let_go(&mut self, tag: u64) {
        if !self.deferred.iter().any(|(_, d)| d.hash.tag == tag) && !self.edits.holds(tag) {
            self.release(tag);
        }
    }

    /// Runs the requests of a command that holds their keys, one after
    /// the other; returns the keys' tags that a read now holds
    /// ([`Poller::holds_while_read`]; a request put aside for a read slot
    /// too): that read, not the command, releases them. The later
    /// requests of such a tag go first in its queue, in order.
    pub(super) fn run_held(&mut self, reqs: Vec<Request>) -> Vec<u64> {
        let mut held: Vec<(u64, usize)> = Vec::new();
        for r in reqs {
            let tag = r.hash.tag;
            if let Some((_, n)) = held.iter_mut().find(|(t, _)| *t == tag) {
                self.busy.get_mut(&tag).expect("held").insert(*n, r);
                *n += 1;
                continue;
            }
            self.key_read_issued = None;
            let requeued = self.requeued.len();
            self.handle_now(r);
            if self.key_read_issued == Some(tag) || self.requeued.len() > requeued {
                held.push((tag, 0));
            }
        }
        self.key_read_issued = None;
        held.into_iter().map(|(t, _)| t).collect()
    }

    /// Runs transactions: the one running, as far as it can go, then those
    /// waiting. Returns whether any work was done.
    fn drive_txns(&mut self) -> bool {
        let mut any = false;
        if let Some(t) = &mut self.txn {
            t.stalled = false;
        }
        loop {
            if self.txn.is_none() {
                let Some(req) = self.txns_waiting.pop_front() else {
                    return any;
                };
                any = true;
                self.start_txn(req);
                continue;
            }
            if !self.run_txn() {
                return any;
            }
            any = true;
        }
    }

    /// Starts a transaction whose keys are claimed: it runs only if no key
    /// its connection watches changed since WATCH.
    fn start_txn(&mut self, mut req: Request) {
        let claimed = claim_tags(&req.op);
        let cross = cross::is_cross(&req);
        let mail = cross::mails(&req);
        let Op::Exec {
            reqs,
            watched,
            whole,
            ..
        } = &mut req.op
        else {
            unreachable!()
        };
        let subs = std::mem::take(reqs);
        let whole = *whole;
        let to_carry = (subs.iter())
            .filter(|r| matches!(&r.op, Op::Move { to, .. } if self.shared.poller_of(to.pid) != self.id))
            .count();
        let (to_carry, owed) = match mail {
            true => (0, subs.iter().filter_map(|r| self.owes(r)).collect()),
            false => (to_carry, Vec::new()),
        };
        // A part of a transaction across pollers checked them. The
        // connection may watch keys for its next one already: an EXEC of
        // no watched keys leaves them (an EXEC of some is answered before
        // the connection sends more, `conn.rs`'s `Barrier`).
        let changed = !cross && *watched && self.watched_changed(req.from);
        if changed {
            self.reply(&req, Reply::Nil);
            for tag in claimed {
                self.release(tag);
            }
            return;
        }
        if whole {
            self.whole_begin(&req);
        }
        self.txn = Some(Txn {
            exec: req,
            subs: subs.into(),
            claimed,
            view: HashMap::new(),
            order: Vec::new(),
            replies: Vec::new(),
            streams: Vec::new(),
            gated: None,
            waiting: false,
            stalled: false,
            fed: self.shared.repl.feeding(),
            veto: None,
            to_carry,
            owed,
            awaits: None,
            delivered: Vec::new(),
            flushed: false,
        });
    }

    /// Runs the transaction's commands until one waits for a read;
    /// returns whether the transaction finished.
    fn run_txn(&mut self) -> bool {
        loop {
            let t = self.txn.as_mut().expect("a transaction runs");
            if t.waiting || t.stalled {
                return false;
            }
            let Some(sub) = t.subs.pop_front() else {
                let t = self.txn.as_ref().expect("a transaction runs");
                if t.flushed && !self.whole_quiet() {
                    // Its flush waits for what is under way to finish.
                    self.txn.as_mut().expect("a transaction runs").stalled = true;
                    return false;
                }
                self.finish_txn();
                return true;
            };
            t.waiting = true;
            if self.awaits_value(&sub) {
                // A move's destination: its value first.
                self.await_mail(sub, None);
                continue;
            }
            if let Some(sub) = self.whole_sub(sub) {
                self.handle_now(sub);
            }
        }
    }

    /// Ends the transaction whose commands all ran: its large values'
    /// pieces are written first, and once they are durable its writes
    /// (the large values' heads with the others) are appended at once
    /// ([`Poller::commit_txn`]). Its keys stay held meanwhile.
    fn finish_txn(&mut self) {
        // What no command sent (none should be left).
        let owed: Vec<u64> = (self.txn.as_ref().expect("a transaction runs").owed)
            .iter()
            .map(|o| o.0)
            .collect();
        for id in owed {
            self.settle(id, None);
        }
        let mut t = self.txn.take().expect("a transaction runs");
        if let Some(to) = cross::carries_to(&t) {
            // The source's read failed: the destination's part runs on,
            // writing nothing, and the error is the move's reply (an
            // EXEC's: the first error among its replies).
            for _ in 0..t.to_carry {
                self.cross_carry(to, (t.exec.from, t.exec.id), None);
            }
            let error = (t.replies.iter()).find(|(_, _, r)| matches!(r, Reply::Error(_)));
            let error = error.map_or(Reply::Error(super::strings::NO_SUCH_KEY.into()), |e| {
                e.2.clone()
            });
            t.veto.get_or_insert(error);
        }
        if let Some(reply) = t.veto.take() {
            return self.end_txn(t, reply);
        }
        // A part of an EXEC across pollers reads its large values whole
        // (`Poller::txn_read_whole`): its reply is merged with the others'.
        debug_assert!(t.streams.is_empty() || !cross::is_cross(&t.exec));
        if !t.streams.is_empty() {
            let streams = std::mem::take(&mut t.streams);
            let first = self.chain_streams(&streams);
            let exec = (t.exec.from, t.exec.id, t.exec.part);
            self.exec_gates.insert(exec, first);
        }
        let large: Vec<u64> = (t.order.iter().copied())
            .filter(|tag| {
                let s = &t.view[tag];
                s.large.as_ref().is_some_and(|l| !l.changed.is_empty())
                    || (s.now.as_ref()).is_some_and(|(v, _)| self.ks.is_large(s.key.len(), v.len()))
            })
            .collect();
        if large.is_empty() {
            return self.commit_txn(t, HashMap::new());
        }
        let cap = self.ks.piece_capacity() as usize;
        let pieces: usize = (large.iter())
            .map(|tag| match &t.view[tag] {
                Staged { large: Some(l), .. } => l.changed.len(),
                s => s.now.as_ref().map_or(0, |(v, _)| v.len().div_ceil(cap)),
            })
            .sum();
        if !self.ks.room_for_pieces(pieces) {
            self.stats().writes_refused.fetch_add(1, Relaxed);
            let reply = Reply::Error(super::strings::STORE_FULL.into());
            return self.end_txn(t, reply);
        }
        let n = self.next_txn_pieces;
        self.next_txn_pieces += 1;
        let mut wait = PiecesWait {
            txn: t,
            heads: HashMap::new(),
            durable: Vec::new(),
            values: HashMap::new(),
            left: 0,
            failed: None,
        };
        for tag in large {
            let s = wait.txn.view.get_mut(&tag).expect("a staged key");
            let w = Waiter {
                pieces_of: Some((n, tag)),
                ..Waiter::new(&wait.txn.exec, Reply::Nil, None)
            };
            let written = match &s.large {
                // Edited in pieces: only the pieces it changed.
                Some(l) => (self.ks).write_edit_pieces_only(
                    s.pid,
                    &s.hash,
                    &s.key,
                    &l.base,
                    l.total_len,
                    &l.changed,
                    w,
                ),
                None => {
                    let value = std::mem::take(&mut s.now.as_mut().expect("a large value").0);
                    let value = bytes::Bytes::from(value);
                    wait.values.insert(tag, value.clone());
                    (self.ks).write_pieces_only(s.pid, &s.hash, &s.key, value, w)
                }
            };
            match written {
                Ok(head) => {
                    wait.heads.insert(tag, head);
                    wait.left += 1;
                }
                Err((_, e)) => {
                    wait.failed = Some(self.refusal(e));
                    break;
                }
            }
        }
        if wait.left == 0 {
            let reply = wait.failed.expect("a failure");
            return self.end_txn(wait.txn, reply);
        }
        self.txn_pieces.insert(n, wait);
    }

    /// The large values of a transaction whose pieces are written, back in
    /// its view (no copy once the writes have let go of them).
    fn restore_values(t: &mut Txn, values: HashMap<u64, bytes::Bytes>) {
        for (tag, value) in values {
            if let Some((v, _)) = t.view.get_mut(&tag).and_then(|s| s.now.as_mut()) {
                *v = Vec::from(value);
            }
        }
    }

    /// The pieces of the large value of key `tag` of transaction `n` are
    /// durable (or failed: the error EXEC answers): once all are, its
    /// writes are appended, or none of them when one failed.
    fn txn_pieces_durable(&mut self, n: u64, tag: u64, result: Result<(), String>) {
        let wait = self.txn_pieces.get_mut(&n).expect("a transaction");
        wait.left -= 1;
        match result {
            Ok(()) => wait.durable.push(tag),
            Err(msg) => {
                wait.failed.get_or_insert(Reply::Error(msg));
            }
        }
        if wait.left > 0 {
            return;
        }
        let mut wait = self.txn_pieces.remove(&n).expect("a transaction");
        Self::restore_values(&mut wait.txn, wait.values);
        let Some(reply) = wait.failed else {
            return self.commit_txn(wait.txn, wait.heads);
        };
        // The pieces written go back.
        for tag in wait.durable {
            let head = wait.heads.remove(&tag).expect("a head");
            self.ks.release_pieces(&head);
        }
        self.end_txn(wait.txn, reply);
    }

    /// Answers transaction `t` with `reply` and releases its keys; a part
    /// of one across pollers is refused: every part drops what it ran,
    /// and `reply` is EXEC's (see `cross.rs`).
    fn end_txn(&mut self, mut t: Txn, reply: Reply) {
        self.unfollow_owns(&mut t);
        for view in Self::take_views(&mut t).into_values() {
            self.ks.unpin_pieces(&view.base);
        }
        if cross::is_cross(&t.exec) {
            return self.cross_refused(t.exec, t.claimed, reply);
        }
        self.reply(&t.exec, reply);
        for tag in t.claimed {
            self.release(tag);
        }
    }

    /// The finished transaction's writes: appended at once, or, for a part
    /// of one across pollers, prepared (`cross.rs`): they wait for every
    /// other part's, holding the room they need.
    fn commit_txn(&mut self, t: Txn, heads: HashMap<u64, LargeHead>) {
        if cross::is_cross(&t.exec) {
            return self.cross_prepare(t, heads);
        }
        self.commit_txn_into(t, heads, None);
    }

    /// What the records of transaction `t`'s writes take: bytes, and the
    /// shards they go to. `heads`: its large values' heads, by key tag.
    fn txn_room(&self, t: &Txn, heads: &HashMap<u64, LargeHead>) -> (u64, usize) {
        let mut bytes = 0;
        let mut shards: Vec<u32> = Vec::new();
        for (tag, s) in &t.view {
            let value_len = match (heads.get(tag), &s.large, &s.now) {
                (Some(head), _, _) => head.encode().len(),
                // A head sharing the view's pieces.
                (None, Some(view), Some(_)) => view.base.encode().len(),
                (None, _, now) => now.as_ref().map_or(0, |(v, _)| v.len()),
            };
            bytes += record_len(s.key.len(), value_len);
            shards.push(crate::store::shard_of(s.pid, self.shared.sb.shards));
        }
        shards.sort_unstable();
        shards.dedup();
        (bytes, shards.len())
    }

    /// Appends every change of the finished transaction at once (or none,
    /// when the store cannot take them all), and answers EXEC once they
    /// are durable. `heads`: its large values' heads, by key tag, their
    /// pieces durable and held (let go here whatever happens). `room`: the
    /// free segments a part of a transaction across pollers holds for its
    /// writes (checked when taken, see [`Poller::cross_prepare`]).
    fn commit_txn_into(
        &mut self,
        mut t: Txn,
        mut heads: HashMap<u64, LargeHead>,
        room: Option<keyspace::Room>,
    ) {
        let (bytes, shards) = self.txn_room(&t, &heads);
        self.unfollow_owns(&mut t);
        // The edited views: their edits go into the stream, their pins go
        // once their heads are written.
        let views = Self::take_views(&mut t);
        if !t.fed && !views.is_empty() && self.shared.repl.feeding() {
            // A replica's feed began while the transaction ran: its views
            // kept no edits from before, which the stream cannot carry.
            (self.shared.repl)
                .restart_stream("a transaction edited large values while a replica's feed began");
        }
        // A part of a transaction across pollers: its writes for the stream.
        let cross = cross::is_cross(&t.exec);
        let mut cross_stream = Vec::new();
        let reply = if t.view.is_empty() && !t.flushed {
            if let Some(room) = room {
                self.ks.give_back_room(room);
            }
            Some(Reply::Txn(t.replies))
        } else if room.is_none() && !self.ks.room_for(bytes, shards) {
            self.stats().writes_refused.fetch_add(1, Relaxed);
            Some(Reply::Error(super::strings::STORE_FULL.into()))
        } else {
            if let Some(room) = room {
                self.ks.commit_into(room);
            }
            let (mut failed, mut wrote) = (None, false);
            // The writes go into the replication stream as one MULTI … EXEC.
            let mut stream = Vec::new();
            let now = self.ks.now_ms();
            if t.flushed {
                // The flush first, in the same commit (`whole.rs`).
                match self.whole_flush(&t.exec) {
                    Ok(()) => wrote = true,
                    Err(e) => failed = Some(e),
                }
            }
            for tag in t.order.iter().filter(|_| failed.is_none()) {
                let s = &t.view[tag];
                // The key's own entry is the one its write replaces (short
                // tags: not the tag's first, maybe).
                if !self.ks.act_on(s.pid, &s.hash, s.own) {
                    self.ks.act_on(s.pid, &s.hash, None);
                }
                let result = match (&s.now, heads.remove(tag)) {
                    (Some((_, exp)), Some(head)) => {
                        let r = (self.ks).write_new_head(s.pid, &s.hash, &s.key, &head, *exp);
                        if r.is_err() {
                            heads.insert(*tag, head);
                        }
                        r
                    }
                    // A view whose expiry alone changed: a head sharing
                    // the pieces.
                    (Some((_, exp)), None) if views.contains_key(tag) => {
                        let head = views[tag].base.encode();
                        (self.ks).write_head(s.pid, &s.hash, &s.key, &head, *exp)
                    }
                    (Some((v, exp)), None) => {
                        (self.ks).write_marked(s.pid, &s.hash, &s.key, v, *exp, false, s.enc)
                    }
                    // Deleting a key that was not there writes nothing.
                    (None, _)
                        if s.own.is_some()
                            && self.ks.entry(s.pid, &s.hash).is_some_and(|e| e.live(now)) =>
                    {
                        self.ks.write(s.pid, &s.hash, &s.key, &[], 0, true)
                    }
                    (None, _) => continue,
                };
                if cross && result.is_ok() {
                    self.cross_wrote(&t.exec, s.pid, &s.hash, &s.key);
                }
                if let (Ok(()), Some(word), Some(_)) = (&result, s.access, &s.now) {
                    // A renamed key's, or a copy's.
                    self.ks.set_access(s.pid, &s.hash, word);
                } else if result.is_ok() && s.deleted && s.now.is_some() {
                    self.ks.written_as_new(s.pid, &s.hash);
                }
                if result.is_ok() && self.shared.repl.feeding() {
                    match views.get(tag) {
                        // Its edits, as outside a transaction.
                        Some(view) => stream.extend_from_slice(&view.repl),
                        None => {
                            let now = s.now.as_ref();
                            let (v, exp) = now.map_or((&[][..], 0), |(v, e)| (&v[..], *e));
                            replicated(&mut stream, &s.key, v, exp, s.now.is_none());
                        }
                    }
                }
                wrote = true;
                if let Err(e) = result {
                    // Not for want of room (checked above): the index.
                    tracing::error!(poller = self.id, "a transaction's write failed: {e}");
                    failed = Some(self.refusal(e));
                    break;
                }
            }
            // What the writes left of the room goes back.
            self.ks.end_room();
            if !stream.is_empty() && !cross {
                let seq = self.ks.next_seq() - 1;
                (self.repl_out).push(&self.shared.repl, seq, |out| {
                    resp::encode::command(out, &[b"MULTI"]);
                    out.extend_from_slice(&stream);
                    resp::encode::command(out, &[b"EXEC"]);
                });
            }
            if cross {
                cross_stream = stream;
            }
            match failed {
                // A part of a transaction across pollers whose appends
                // stopped partway waits for what it wrote, to undo it.
                Some(reply) if !(cross && wrote) => Some(reply),
                None if !wrote => Some(Reply::Txn(t.replies)),
                failed => {
                    let reply = failed.unwrap_or(Reply::Txn(t.replies));
                    let w = Waiter {
                        cross,
                        ..Waiter::new(&t.exec, reply, None)
                    };
                    self.ks.acknowledge_durable(w);
                    None
                }
            }
        };
        // Heads not written: their pieces go back.
        for head in heads.into_values() {
            self.ks.release_pieces(&head);
        }
        for view in views.into_values() {
            self.ks.unpin_pieces(&view.base);
        }
        if cross {
            return self.cross_committed(t.exec, t.claimed, reply, cross_stream);
        }
        if let Some(reply) = reply {
            self.reply(&t.exec, reply);
        }
        for tag in t.claimed {
            self.release(tag);
        }
    }

    /// WATCH of one key: remembers its entry for the connection.
    fn watch(&mut self, req: Request) {
        let (mut seen, mut others) = (None, Vec::new());
        let own = self.probed_own(&req, 0);
        for e in self.ks.candidates(req.pid, &req.hash) {
            match own == Some(e.offset) {
                true => seen = Some(e),
                false => others.push(e.offset),
            }
        }
        let key: Box<[u8]> = req.op.key().unwrap_or_default().into();
        let live = seen.is_some_and(|e| e.live(self.ks.now_ms()));
        if seen.is_none() {
            // Until EXEC: which key each new entry of the tag holds.
            self.ks.name_writes(true);
        }
        // Until EXEC: where compaction moves the entries seen.
        self.ks.record_moves(true);
        self.watches.entry(req.from).or_default().push(Watched {
            pid: req.pid,
            hash: req.hash,
            seen,
            live,
            key,
            others,
            flushed: false,
        });
        self.reply(&req, Reply::Encoded(b"+OK\r\n".to_vec()));
    }

    /// Compaction moved records: the entries watched keys had when WATCH
    /// came (and the other keys' entries of their tags) are followed to
    /// where they went, so that a move alone never counts as a change at
    /// EXEC (Redis's EXEC fails only when a watched key changed).
    fn follow_watched_moves(&mut self) {
        if self.watches.is_empty() {
            self.ks.record_moves(false);
            return;
        }
        let moves = self.ks.take_moves();
        if moves.is_empty() {
            return;
        }
        let to: HashMap<(u32, u64), Option<u64>> = (moves.iter())
            .map(|&(pid, from, to)| ((pid, from), to))
            .collect();
        // Where the entry at `at` went, through moves one after another;
        // `None`: dropped.
        let follow = |pid: u32, mut at: u64| {
            for _ in 0..=moves.len() {
                match to.get(&(pid, at)) {
                    Some(Some(next)) => at = *next,
                    Some(None) => return None,
                    None => break,
                }
            }
            Some(at)
        };
        for w in self.watches.values_mut().flatten() {
            if let Some(seen) = w.seen.as_mut() {
                if let Some(at) = follow(w.pid, seen.offset).filter(|&at| at != seen.offset) {
                    // A tombstone's record rewritten smaller is the same
                    // state of the key.
                    let now = (self.ks.candidates(w.pid, &w.hash).into_iter())
                        .find(|e| e.offset == at)
                        .filter(|e| (e.tombstone, e.expire_ms) == (seen.tombstone, seen.expire_ms));
                    *seen = now.unwrap_or(Entry {
                        offset: at,
                        ..*seen
                    });
                }
            }
            for o in w.others.iter_mut() {
                if let Some(at) = follow(w.pid, *o) {
                    *o = at;
                }
            }
        }
    }

    /// A flush is about to empty the store: every watched key there, or
    /// changed since WATCH, counts as changed from now on, as Redis's
    /// flush touches the watched keys it empties.
    fn flush_touches_watches(&mut self) {
        for w in self.watches.values_mut().flatten() {
            let e = self.ks.entry(w.pid, &w.hash);
            if e != w.seen || e.is_some_and(|e| !e.tombstone) {
                w.flushed = true;
            }
        }
    }

    /// The store was flushed: the watched keys it did not touch (absent,
    /// as they were at WATCH, a tombstone's entry gone) are absent with no
    /// entry of their tag left, and change only by a write to come.
    fn watches_flushed(&mut self) {
        for w in self.watches.values_mut().flatten() {
            if !w.flushed {
                (w.seen, w.live) = (None, false);
                w.others.clear();
            }
        }
    }

    /// UNWATCH: forgets what the connection watches here.
    fn unwatch(&mut self, req: Request) {
        self.watches.remove(&req.from);
        if req.id != NO_REPLY {
            self.reply(&req, Reply::Encoded(b"+OK\r\n".to_vec()));
        }
    }

    /// Whether a key connection `from` watches changed since WATCH: its
    /// entry is another (a write, a deletion; not a move by compaction,
    /// see `follow_watched_moves`), or it was live then and has expired
    /// since.
    fn watched_changed(&mut self, from: ConnRef) -> bool {
        let Some(watched) = self.watches.remove(&from) else {
            return false;
        };
        self.changed(&watched)
    }

    // Key space: the per-key commands.

    /// TYPE, TOUCH, OBJECT, MEMORY USAGE, DUMP, RESTORE, and the start of
    /// RENAME and COPY: `hit` is the key's entry (`None`: missing).
    fn keys(&mut self, req: Request, hit: Option<Entry>) {
        use super::strings as text;
        // Read lookups count in INFO as Redis counts them: a hit of
        // OBJECT ENCODING or DUMP once its record is read (`keys_read`).
        let counted = match &req.op {
            Op::Type { .. } | Op::Touch { .. } => true,
            Op::Object { what, .. } => {
                hit.is_none() || matches!(what, ObjectInfo::Idletime | ObjectInfo::Freq)
            }
            Op::Dump { .. } => hit.is_none(),
            Op::Move {
                kind: MoveKind::Copy { .. },
                ..
            } => true,
            _ => false,
        };
        if counted {
            self.count_lookup(hit.is_some());
        }
        let Some(entry) = hit else {
            let reply = match &req.op {
                Op::Type { .. } => simple(text::TYPE_NONE),
                Op::Touch { .. } => Reply::Int(0),
                Op::Move { .. } => return self.move_start(req, None),
                Op::Restore { .. } => return self.restore(req, false),
                _ => Reply::Nil,
            };
            return self.reply(&req, reply);
        };
        let policy = self.shared.eviction.policy();
        let now = self.ks.now_ms();
        let access = || self.ks.access(req.pid, &req.hash).unwrap_or(0);
        let reply = match &req.op {
            Op::Type { .. } => simple(text::TYPE_STRING),
            Op::Touch { .. } => {
                self.ks.touch_always(req.pid, &req.hash);
                Reply::Int(1)
            }
            // What the key takes on the device and in the index: its
            // record (header, key and value, padded to 16 bytes) and its
            // index slot.
            Op::MemoryUsage { .. } => {
                Reply::Int(entry.len as i64 + self.ks.slot_bytes(req.pid) as i64)
            }
            Op::Object {
                what: ObjectInfo::Idletime,
                ..
            } => match policy.lfu() {
                true => Reply::Error(text::OBJECT_LFU_SELECTED.into()),
                false => Reply::Int(crate::store::evict::lru_idle(access(), now) as i64),
            },
            Op::Object {
                what: ObjectInfo::Freq,
                ..
            } => match policy.lfu() {
                true => Reply::Int(crate::store::evict::lfu_count(access(), now) as i64),
                false => Reply::Error(text::OBJECT_LFU_NOT_SELECTED.into()),
            },
            Op::Object { .. } | Op::Dump { .. } => return self.fetch(req, entry),
            Op::Move { .. } => return self.move_start(req, Some(entry)),
            Op::Restore { .. } => return self.restore(req, true),
            op => unreachable!("not a key space op: {op:?}"),
        };
        self.reply(&req, reply)
    }

    /// OBJECT ENCODING | REFCOUNT and DUMP, once the value (its record's
    /// `flags`) is read.
    fn keys_read(&mut self, req: Request, value: &[u8], flags: u8) {
        let enc = Enc::of_flags(flags);
        self.count_lookup(true);
        let reply = match &req.op {
            Op::Dump { .. } => {
                let payload = super::dump::encode(value);
                let mut out = Vec::with_capacity(payload.len() + 16);
                resp::bulk(&mut out, &payload);
                Reply::Encoded(out)
            }
            Op::Object {
                what: ObjectInfo::Refcount,
                ..
            } => {
                // Redis shares the objects of the integers 0 to 9999
                // (their count is `INT_MAX`), unless `maxmemory` is set
                // with an LRU or LFU policy, or the value was made
                // otherwise (a COPY's is its own; APPEND's, SETRANGE's
                // and INCRBYFLOAT's are no integers).
                let ev = &self.shared.eviction;
                let shares =
                    (ev.maxmemory() == 0 || !ev.policy().tracks_access()) && enc == Enc::Value;
                let small = as_redis_int(value).is_some_and(|n| (0..10_000).contains(&n));
                let held = flags & STAGED_HELD != 0;
                Reply::Int(if shares && small {
                    i32::MAX as i64
                } else {
                    1 + held as i64
                })
            }
            Op::Object { .. } => {
                let mut out = Vec::new();
                resp::bulk(&mut out, string_encoding(value, enc).as_bytes());
                Reply::Encoded(out)
            }
            op => unreachable!("not read by keys_read: {op:?}"),
        };
        self.reply(&req, reply)
    }

    /// RESTORE: `exists` whether the key does. Redis's order: a key that
    /// exists without REPLACE, then the TTL and the payload; a TTL
    /// already past creates nothing (and deletes the key it replaces).
    fn restore(&mut self, mut req: Request, exists: bool) {
        use super::strings as text;
        let Op::Restore {
            value,
            expire_ms,
            replace,
            access,
            ..
        } = &mut req.op
        else {
            unreachable!()
        };
        if exists && !*replace {
            return self.reply(&req, Reply::Error(text::BUSYKEY.into()));
        }
        let value = match value {
            Ok(v) => std::mem::take(v),
            Err(msg) => {
                let msg = std::mem::take(msg);
                return self.reply(&req, Reply::Error(msg));
            }
        };
        let ok = simple(text::OK);
        let (expire, access) = (*expire_ms, *access);
        if expire != 0 && expire <= self.ks.now_ms() {
            return match exists {
                true => self.delete(req, ok),
                false => self.reply(&req, ok),
            };
        }
        if self.refused_over_maxmemory(&req) {
            return;
        }
        let key = req.op.key().expect("keyed op").to_vec();
        if !is_sub(&req) && self.ks.is_large(key.len(), value.len()) {
            // A new object in pieces: its access bits are a new write's.
            return self.write_large_value(&req, value.into(), expire, ok);
        }
        let result = self.write(&req, req.pid, &req.hash, &key, &value, expire, false);
        if result.is_ok() && !is_sub(&req) {
            // A new object, as Redis's: IDLETIME counts under any policy
            // but LFU, FREQ under LFU only.
            let (policy, now) = (self.shared.eviction.policy(), self.ks.now_ms());
            let word = match access {
                Some(RestoreAccess::IdleSecs(s)) if !policy.lfu() => {
                    crate::store::evict::lru_word_idle(s, now)
                }
                Some(RestoreAccess::Freq(f)) if policy.lfu() => {
                    crate::store::evict::lfu_word(f, now)
                }
                _ => policy.on_write(0, true, now, 0.0),
            };
            self.ks.set_access(req.pid, &req.hash, word);
        }
        // Back in the request: a write deferred for want of space runs
        // again.
        if let Op::Restore { value: v, .. } = &mut req.op {
            *v = Ok(value);
        }
        self.acknowledge(req, result, ok);
    }

    /// RENAME, RENAMENX, COPY: runs once each of its keys is free of the
    /// requests before it, and the requests after it for either key wait
    /// for it. A key with requests in flight is a queue ([`Poller::busy`]):
    /// the move waits in the queue of the first such key, and a fence
    /// holds its place in the queue of the other; it runs when it and its
    /// fence have both reached the front ([`Poller::fence_reached`]).
    fn move_when_free(&mut self, req: Request) {
        if let Some(req) = self.claim(req) {
            self.handle_now(req);
        }
    }

    /// A move's fence at the front of its key's queue: the key is held
    /// for the move, which runs if it is at the front of its own queue.
    fn fence_reached(&mut self, req: Request) {
        let Op::Fence { id } = req.op else {
            unreachable!()
        };
        self.busy.entry(req.hash.tag).or_default();
        let w = self.moves.get_mut(&id).expect("a waiting request");
        w.fences -= 1;
        if w.fences == 0 {
            if let Some(parked) = w.parked.take() {
                // It comes back to its command's handler, which finds it
                // holding all its keys now.
                self.handle_accepted(parked);
            }
        }
    }

    /// Starts a move once its keys are free: both keys stay held, their
    /// requests waiting, until it is answered ([`Poller::release_move`]).
    /// The source's record is read (from a segment buffer, or the device).
    fn move_start(&mut self, req: Request, hit: Option<Entry>) {
        use super::strings as text;
        let Op::Move { to, .. } = &req.op else {
            unreachable!()
        };
        let tags = [req.hash.tag, to.hash.tag];
        // Inside a transaction, the transaction holds the keys.
        let sub = is_sub(&req);
        if !sub {
            for t in tags {
                self.busy.entry(t).or_default();
            }
        }
        // Short tags: which entry is the destination's, first.
        let Some(req) = self.probe_keys(req) else {
            return;
        };
        let Op::Move { key, to, kind, .. } = &req.op else {
            unreachable!()
        };
        let same = *key == to.key;
        if hit.is_none() && self.moves_across(&req) {
            return self.move_carry(req, None);
        }
        let reply = match (hit, kind) {
            (None, MoveKind::Copy { .. }) => Reply::Int(0),
            (None, _) => Reply::Error(text::NO_SUCH_KEY.into()),
            (Some(_), MoveKind::Rename) if same => simple(text::OK),
            (Some(_), MoveKind::RenameNx) if same => Reply::Int(0),
            (Some(entry), kind) => {
                // COPY reads its source as Redis does (its access time
                // follows); RENAME moves it.
                if matches!(kind, MoveKind::Copy { .. }) && req.touch {
                    self.ks.touch(req.pid, &req.hash);
                }
                return self.fetch(req, entry);
            }
        };
        self.reply(&req, reply);
        if !sub {
            self.release_move(tags);
        }
    }

    /// A move's source record read: under short tags, another key's sends
    /// the move on to the tag's next entry (its keys still held), and the
    /// source's own is made the one it acts on.
    fn finish_move_fetch(&mut self, req: Request, entry: Entry, bytes: Result<&[u8], String>) {
        let short = entry.offset != STAGED;
        if let (true, Ok(b)) = (short, &bytes) {
            if let Ok(rec) = decode_record(&self.shared.sb.uuid, b) {
                if Some(rec.key) != req.op.key() {
                    if self.ks.buffered(entry).is_none() {
                        (self.ks.counters().index_extra_reads).fetch_add(1, Relaxed);
                    }
                    let mut req = req;
                    req.tried.push(entry.offset);
                    return self.handle_now(req);
                }
                if !self.ks.resolved(req.pid, &req.hash, entry.offset) {
                    return self.handle_now(req);
                }
            }
        }
        self.finish_move(req, entry, bytes)
    }

    /// A move once the source's record is at hand: answered, and its keys
    /// released.
    fn finish_move(&mut self, req: Request, entry: Entry, bytes: Result<&[u8], String>) {
        let Op::Move { to, .. } = &req.op else {
            unreachable!()
        };
        let tags = [req.hash.tag, to.hash.tag];
        let sub = is_sub(&req);
        self.move_record(req, entry, bytes);
        // A large value moved while replicas are fed keeps its keys until
        // it is read for the stream; a rename across shards until its
        // source is deleted.
        if !sub && !self.edits.holds(tags[0]) && !self.unlinking.contains(&tags[0]) {
            self.release_move(tags);
        }
    }

    /// A rename across shards: its destination's write is on the device
    /// (or failed): the source's tombstone is written now, and the rename
    /// answered once that is acknowledged; its keys go free.
    fn unlink_renamed(&mut self, u: Unlink, result: Result<(), CommitFailed>) {
        let Unlink { req, ok, own } = u;
        let Op::Move { key, to, .. } = &req.op else {
            unreachable!()
        };
        let tags = [req.hash.tag, to.hash.tag];
        self.unlinking.remove(&tags[0]);
        let own = own.map(|o| self.ks.unfollow(req.pid, o));
        match result {
            Ok(()) => {
                if let Some(at) = own {
                    self.ks.act_on(req.pid, &req.hash, at);
                }
                let key = key.clone();
                let written = self.write(&req, req.pid, &req.hash, &key, &[], 0, true);
                self.acknowledge_now(req, written, ok);
            }
            Err(e) => {
                let reply = Reply::Error(super::strings::write_failed(&e));
                self.reply(&req, reply);
            }
        }
        self.release_move(tags);
    }

    /// Writes the source's value and expiry under the destination (and,
    /// for a rename, a tombstone for the source) in this turn, so one
    /// commit carries them. A write the store refuses is answered at once
    /// rather than deferred (as MSETNX's).
    fn move_record(&mut self, req: Request, entry: Entry, bytes: Result<&[u8], String>) {
        let bytes = match bytes {
            Ok(b) => b,
            Err(msg) => return self.reply(&req, Reply::Error(msg)),
        };
        let rec = match decode_record(&self.shared.sb.uuid, bytes) {
            Ok(rec) if Some(rec.key) == req.op.key() => rec,
            Ok(_) => return self.corrupt(&req, entry, &"key does not match the index"),
            Err(e) => return self.corrupt(&req, entry, &e),
        };
        let live = !rec.is_tombstone() && !rec.expired(self.ks.now_ms());
        if is_sub(&req) && rec.is_large() && live {
            // Inside a transaction, the destination's view takes the
            // value's head (its pieces pinned); while replicas are fed,
            // the value is read whole and moved as a value (written in
            // pieces when the transaction ends), for the stream.
            if !self.shared.repl.feeding() && !self.moves_across(&req) {
                return self.txn_move_stored(req, entry, &rec);
            }
            return self.large_read(req, entry, &rec);
        }
        self.move_found(req, &rec)
    }

    /// A move once the source's record, `rec`, is decoded (a large
    /// value's read whole, inside a transaction).
    fn move_found(&mut self, req: Request, rec: &Record<'_>) {
        use super::strings as text;
        let Op::Move { key, to, kind, .. } = &req.op else {
            unreachable!()
        };
        let copy = matches!(kind, MoveKind::Copy { .. });
        let dead = rec.is_tombstone() || rec.expired(self.ks.now_ms());
        if self.moves_across(&req) {
            let word = (!dead).then(|| self.moved_access(&req));
            let enc = if copy { rec.enc().copied() } else { rec.enc() };
            let found = word.map(|w| (rec.value.to_vec(), rec.meta.expire_ms, w, enc));
            return self.move_carry(req, found);
        }
        if dead {
            let reply = match copy {
                true => Reply::Int(0),
                false => Reply::Error(text::NO_SUCH_KEY.into()),
            };
            return self.reply(&req, reply);
        }
        let Some(ok) = self.move_allowed(&req) else {
            return;
        };
        let (src, dst) = (key.to_vec(), to.key.to_vec());
        let (to_pid, to_hash) = (to.pid, to.hash);
        if rec.is_large() {
            return self.move_large(req, rec, ok);
        }
        let (value, expire) = (rec.value.to_vec(), rec.meta.expire_ms);
        let enc = if copy { rec.enc().copied() } else { rec.enc() };
        let word = self.moved_access(&req);
        // Short tags: the source's own entry (made the first of its tag's
        // when its record was read) and the destination's are the ones
        // the writes replace.
        let src_own = (!is_sub(&req) || !self.txn_staged(&src))
            .then(|| self.ks.own_entry(req.pid, &req.hash));
        self.act_on_other(&req, 0, to_pid, &to_hash, &dst);
        let mut result =
            self.write_marked(&req, to_pid, &to_hash, &dst, &value, expire, false, enc);
        if result.is_ok() {
            self.set_moved_access(&req, to_pid, &to_hash, &dst, word);
            // A renamed value is the same object, still held.
            if !copy && rec.meta.flags & STAGED_HELD != 0 {
                self.hold(&req, &dst);
            }
        }
        let shards = self.shared.sb.shards;
        let across_shards =
            crate::store::shard_of(req.pid, shards) != crate::store::shard_of(to_pid, shards);
        // Two shards' logs commit independently: the source is deleted
        // only once the destination's write is on the device, so a crash
        // between them keeps the value under both names, never under
        // neither; the keys stay held.
        if result.is_ok() && across_shards && !copy && !is_sub(&req) {
            let own = src_own.flatten();
            if let Some(o) = own {
                self.ks.follow(req.pid, o);
            }
            self.drop_probes(&req);
            self.unlinking.insert(req.hash.tag);
            let mut w = Waiter::new(&req, Reply::Nil, None);
            w.unlink = Some(Box::new(Unlink { req, ok, own }));
            return self.ks.acknowledge_written_or_durable(w);
        }
        if result.is_ok() && !copy {
            if let Some(own) = src_own {
                self.ks.act_on(req.pid, &req.hash, own);
            }
            result = self.write(&req, req.pid, &req.hash, &src, &[], 0, true);
        }
        self.drop_probes(&req);
        self.acknowledge_now(req, result, ok)
    }

    /// The access bits the destination of move `req` takes, as in Redis:
    /// a renamed key is the same object, with the LRU clock or LFU
    /// counter its source has after the rename's own lookup of it (which
    /// counts as a read, unless the client is NO-TOUCH; inside a
    /// transaction that wrote the source, what that write left); a copy
    /// is a new object. Taken before the source is deleted.
    pub(super) fn moved_access(&mut self, req: &Request) -> u32 {
        let Op::Move { key, kind, .. } = &req.op else {
            unreachable!()
        };
        let (policy, now) = (self.shared.eviction.policy(), self.ks.now_ms());
        let fresh = policy.on_write(0, true, now, 0.0);
        if matches!(kind, MoveKind::Copy { .. }) {
            return fresh;
        }
        let staged = match is_sub(req) {
            true => (self.txn.as_ref()).and_then(|t| t.view.get(&view_id(key))),
            false => None,
        };
        let stored = self.ks.access(req.pid, &req.hash);
        let word = match (staged.map(|s| (s.access, s.deleted)), stored) {
            (Some((Some(word), _)), _) => word,
            // Deleted and set again by the transaction: a new object.
            (Some((None, true)), _) => fresh,
            // Written by the transaction over a key there: a write keeps
            // the key's bits, as one counted access (Redis keeps the old
            // object's LFU counter when a SET overwrites it).
            (Some((None, false)), Some(word)) => self.ks.touched(word),
            (_, stored) => stored.unwrap_or(fresh),
        };
        match req.touch {
            true => self.ks.touched(word),
            false => word,
        }
    }

    /// The destination `key` of move `req` is written: it takes the
    /// access bits `word` ([`Poller::moved_access`]); inside a
    /// transaction, once the transaction writes it.
    pub(super) fn set_moved_access(
        &mut self,
        req: &Request,
        pid: u32,
        hash: &KeyHash,
        key: &[u8],
        word: u32,
    ) {
        if !is_sub(req) {
            return self.ks.set_access(pid, hash, word);
        }
        let t = self.txn.as_mut().expect("a transaction runs");
        if let Some(s) = t.view.get_mut(&view_id(key)) {
            s.access = Some(word);
        }
    }

    /// Whether move `req` is the source's half of one across pollers
    /// (its destination is another poller's).
    fn moves_across(&self, req: &Request) -> bool {
        let Op::Move { to, .. } = &req.op else {
            return false;
        };
        is_sub(req) && self.shared.poller_of(to.pid) != self.id
    }

    /// The source's half of a move across pollers, its value read
    /// (`found`: the value and its expiry; `None`: missing): the value
    /// goes to the destination's part, a rename deletes the source, and a
    /// source missing refuses the move (RENAME's error, COPY's `:0`): the
    /// whole of a move run alone; inside an EXEC, that reply is the
    /// command's (the destination's half, given no value, writes
    /// nothing), and a RENAMENX deletes its source only once the
    /// destination's verdict comes (`Poller::resume_awaiting`).
    fn move_carry(&mut self, req: Request, found: Option<Moved>) {
        let Op::Move { key, to, kind, .. } = &req.op else {
            unreachable!()
        };
        let copy = matches!(kind, MoveKind::Copy { .. });
        let into = self.shared.poller_of(to.pid);
        let t = self.txn.as_mut().expect("a transaction runs");
        let xid = (t.exec.from, t.exec.id);
        let rename = found.is_some() && !copy;
        if cross::mails(&t.exec) {
            // Inside an EXEC across pollers: the value goes to the
            // destination's part now; a RENAMENX deletes its source only
            // once the destination's verdict says it was written there.
            let found_any = found.is_some();
            let nx = found_any && *kind == MoveKind::RenameNx;
            let key = key.clone();
            self.settle(req.id, Some(Mail::Value(found)));
            if nx {
                let own = (!self.txn_staged(&key)).then(|| self.ks.track_own(req.pid, &req.hash));
                return self.await_mail(req, own);
            }
            let ok = simple(super::strings::OK);
            if !rename {
                let reply = match (copy, found_any) {
                    (_, true) => ok,
                    (true, false) => Reply::Int(0),
                    (false, false) => Reply::Error(super::strings::NO_SUCH_KEY.into()),
                };
                return self.reply(&req, reply);
            }
            let written = self.write(&req, req.pid, &req.hash, &key, &[], 0, true);
            return self.acknowledge_now(req, written, ok);
        }
        t.to_carry = t.to_carry.saturating_sub(1);
        if found.is_none() {
            let reply = match copy {
                true => Reply::Int(0),
                false => Reply::Error(super::strings::NO_SUCH_KEY.into()),
            };
            if cross::single_of(&t.exec).is_none() {
                self.cross_carry(into, xid, None);
                return self.reply(&req, reply);
            }
            t.veto.get_or_insert(reply);
        }
        self.cross_carry(into, xid, found);
        let mut result = Ok(());
        if rename {
            let key = key.clone();
            result = self.write(&req, req.pid, &req.hash, &key, &[], 0, true);
        }
        self.acknowledge_now(req, result, simple(super::strings::OK));
    }

    /// The destination's half of a move across pollers (`exists`: the
    /// key is there), with the value the source's half sent: written
    /// with its expiry, unless RENAMENX or COPY without REPLACE finds the
    /// key there, which refuses the move (`:0`).
    fn move_in(&mut self, mut req: Request, exists: bool) {
        use super::strings as text;
        let Op::MoveIn {
            key, kind, value, ..
        } = &mut req.op
        else {
            unreachable!()
        };
        let (key, kind) = (key.clone(), *kind);
        let Some((value, expire, word, enc)) = value.take() else {
            // The source's part answers (and waits for no verdict).
            self.forgive(req.id);
            return self.reply(&req, simple(text::OK));
        };
        let (ok, refused) = match kind {
            MoveKind::Rename => (simple(text::OK), false),
            MoveKind::RenameNx => (Reply::Int(1), exists),
            MoveKind::Copy { replace } => (Reply::Int(1), exists && !replace),
        };
        if refused {
            // Inside an EXEC, RENAMENX's source hears of it as it is
            // answered (`Poller::settle`).
            self.veto(&req, Reply::Int(0));
            return self.reply(&req, Reply::Int(0));
        }
        if matches!(kind, MoveKind::Copy { .. }) && self.refused_over_maxmemory(&req) {
            return;
        }
        let result = self.write_marked(&req, req.pid, &req.hash, &key, &value, expire, false, enc);
        if result.is_ok() {
            // The source's part sent them (`moved_access`: a copy's new).
            self.set_moved_access(&req, req.pid, &req.hash, &key, word);
            self.settle(req.id, Some(Mail::Verdict(true)));
        }
        self.acknowledge_now(req, result, ok)
    }

    /// The reply of move `req` of a live source, when the destination
    /// lets it go on; else `None`, `req` answered (RENAMENX or COPY of a
    /// destination there, a COPY over maxmemory).
    fn move_allowed(&mut self, req: &Request) -> Option<Reply> {
        use super::strings as text;
        let Op::Move { to, kind, .. } = &req.op else {
            unreachable!()
        };
        let exists = self.other_exists(req, 0, to.pid, &to.hash, &to.key);
        let (ok, refused) = match kind {
            MoveKind::Rename => (simple(text::OK), false),
            MoveKind::RenameNx => (Reply::Int(1), exists),
            MoveKind::Copy { replace } => (Reply::Int(1), exists && !replace),
        };
        if refused {
            self.reply(req, Reply::Int(0));
            return None;
        }
        if matches!(kind, MoveKind::Copy { .. }) && self.refused_over_maxmemory(req) {
            return None;
        }
        Some(ok)
    }

    /// Serves the requests that waited for a move's keys.
    fn release_move(&mut self, tags: [u64; 2]) {
        self.release(tags[0]);
        if tags[1] != tags[0] {
            self.release(tags[1]);
        }
    }

    /// Finishes in-flight I/O, commits every write and erases the emptied
    /// segments, then flushes the index and marks it clean.
    fn shutdown(mut self) -> Result<()> {
        if !self.deferred.is_empty() {
            // Their clients are gone; nothing was written or acknowledged.
            tracing::warn!(
                poller = self.id,
                writes = self.deferred.len(),
                "dropping writes still waiting for space"
            );
            self.deferred.clear();
        }
        self.ks.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (self.ks.engine_ref().in_flight() > 0 || !self.ks.settled())
            && Instant::now() < deadline
        {
            if !self.turn() {
                self.ks.engine().wait(Duration::from_millis(10));
            }
        }
        if !self.ks.settled() {
            anyhow::bail!(
                "poller {}: the log did not finish committing; the index stays dirty",
                self.id
            );
        }
        self.ks.mark_clean().context("marking the index clean")
    }
}

/// Whether EXPIRE's NX | XX | GT | LT refuses expiry `at_ms` of a key
/// whose expiry is `cur` (0: none, an infinite one), in Redis's order.
fn expire_refused(op: &Op, cur: u64, at_ms: u64) -> bool {
    let Op::Expire { cond, .. } = op else {
        return false;
    };
    (cond.nx && cur != 0)
        || (cond.xx && cur == 0)
        || (cond.gt && (cur == 0 || at_ms <= cur))
        || (cond.lt && cur != 0 && at_ms >= cur)
}

/// The keys a command of several keys holds while it runs (each once).
fn claim_tags(op: &Op) -> Vec<u64> {
    let mut tags: Vec<u64> = match op {
        Op::Exec {
            reqs, watch_tags, ..
        } => {
            let mut tags = watch_tags.clone();
            tags.extend(claim_tags_of(reqs));
            tags
        }
        Op::Group { reqs, .. } => claim_tags_of(reqs),
        Op::MsetNx { pairs, .. } => pairs.iter().map(|p| p.hash.tag).collect(),
        Op::Move { key, to, .. } => vec![crate::index::KeyHash::of(key).tag, to.hash.tag],
        _ => unreachable!("not a command of several keys: {op:?}"),
    };
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// The keys of a transaction's or a group's requests.
fn claim_tags_of(reqs: &[Request]) -> Vec<u64> {
    let mut tags = Vec::new();
    for r in reqs {
        match &r.op {
            Op::MsetNx { pairs, .. } => tags.extend(pairs.iter().map(|p| p.hash.tag)),
            Op::Move { key, to, .. } => {
                tags.push(crate::index::KeyHash::of(key).tag);
                tags.push(to.hash.tag);
            }
            _ => tags.push(r.hash.tag),
        }
    }
    tags
}

/// The index tags of watched keys `w`.
fn watch_tags_of(w: Option<&Vec<Watched>>) -> Vec<u64> {
    w.map_or_else(Vec::new, |w| w.iter().map(|w| w.hash.tag).collect())
}

/// Where a command of several keys keeps its number while it waits.
fn claim_wait(op: &mut Op) -> &mut Option<u64> {
    match op {
        Op::Exec { wait, .. }
        | Op::Group { wait, .. }
        | Op::MsetNx { wait, .. }
        | Op::Move { wait, .. } => wait,
        _ => unreachable!("not a command of several keys"),
    }
}

/// Whether `req` is one of the running transaction's commands.
fn is_sub(req: &Request) -> bool {
    req.id != NO_REPLY && req.id & TXN_PART != 0
}

impl<E: Engine> Poller<E> {
    /// Runs the flush at the head of `flush_hold` once no write before it
    /// is under way (nothing waits for a commit, no read-modify-write is
    /// reading, no write waits for room), then the requests held behind
    /// it, up to the next flush. Whether it ran one.
    fn flush_when_idle(&mut self) -> bool {
        // Called every turn: the quiet test walks the log, so only when a
        // flush waits.
        let waiting = (self.flush_hold.front()).is_some_and(|(_, r)| matches!(r.op, Op::Flush));
        let quiet = || {
            self.ks.quiet_for_flush()
                && self.busy.is_empty()
                && self.requeued.is_empty()
                && self.deferred.is_empty()
                && self.loads.is_empty()
        };
        if !waiting || !quiet() {
            return false;
        }
        let (_, req) = self.flush_hold.pop_front().expect("front");
        self.flush_touches_watches();
        match self.ks.flush_all(Waiter::ok(&req, false)) {
            Ok(()) => self.watches_flushed(),
            Err((_, e)) => self.reply(&req, Reply::Error(super::strings::flush_refused(&e))),
        }
        self.repl_out.wiped(&self.shared.repl);
        // Each in its connection's order: behind a part across pollers
        // that came before it and took its place among them only now
        // (`Poller::wait_or_go`).
        while self
            .flush_hold
            .front()
            .is_some_and(|(_, r)| !matches!(r.op, Op::Flush))
        {
            let (came, r) = self.flush_hold.pop_front().expect("front");
            self.cross_replay(came, r, Self::handle_accepted);
        }
        true
    }
}

/// A client's write as the replication stream carries it: the key's new
/// state, `SET key value [PXAT ms]` or `DEL key`.
fn replicated(out: &mut Vec<u8>, key: &[u8], value: &[u8], expire_ms: u64, tombstone: bool) {
    if tombstone {
        resp::encode::command(out, &[b"DEL", key]);
    } else if expire_ms == 0 {
        resp::encode::command(out, &[b"SET", key, value]);
    } else {
        let at = expire_ms.to_string();
        resp::encode::command(out, &[b"SET", key, value, b"PXAT", at.as_bytes()]);
    }
}

/// The operations [`Poller::strings`] serves.
fn is_strings_op(op: &Op) -> bool {
    matches!(
        op,
        Op::IncrByFloat { .. }
            | Op::Append { .. }
            | Op::Strlen { .. }
            | Op::GetRange { .. }
            | Op::SetRange { .. }
            | Op::GetEx { .. }
            | Op::ExpireTime { .. }
    )
}

/// The reads of a key's value that count as an access for eviction.
fn reads_value(op: &Op) -> bool {
    matches!(
        op,
        Op::Get { .. }
            | Op::GetRange { .. }
            | Op::Strlen { .. }
            | Op::GetEx { .. }
            | Op::Dump { .. }
    )
}

/// The commands that answer from a record of the key without acting on
/// its entry: the record read answers them even if a later write replaced
/// the entry meanwhile.
fn answers_from_record(op: &Op) -> bool {
    matches!(
        op,
        Op::Get { .. }
            | Op::GetRange { .. }
            | Op::Strlen { .. }
            | Op::Dump { .. }
            | Op::Exists { .. }
            | Op::Ttl { .. }
            | Op::ExpireTime { .. }
    )
}

/// The key commands that need no record, but its key's under short tags
/// (which entry of the tag is the key's).
fn reads_only_to_know(op: &Op) -> bool {
    matches!(
        op,
        Op::Type { .. }
            | Op::Touch { .. }
            | Op::MemoryUsage { .. }
            | Op::Restore { .. }
            | Op::Object {
                what: ObjectInfo::Idletime | ObjectInfo::Freq,
                ..
            }
    )
}

/// The operations [`Poller::keys`] serves.
fn is_keys_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Type { .. }
            | Op::Touch { .. }
            | Op::Object { .. }
            | Op::MemoryUsage { .. }
            | Op::Dump { .. }
            | Op::Restore { .. }
            | Op::Move { .. }
    )
}

/// A simple-string reply (`+text`).
fn simple(text: &str) -> Reply {
    let mut out = Vec::with_capacity(text.len() + 3);
    resp::simple(&mut out, text);
    Reply::Encoded(out)
}

/// The integer Redis keeps a string as: one of at most 20 characters that
/// reads as a `long` and prints back the same (no sign but `-`, no
/// leading zero, no space).
fn as_redis_int(v: &[u8]) -> Option<i64> {
    if v.len() > 20 {
        return None;
    }
    let n: i64 = std::str::from_utf8(v).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == v).then_some(n)
}

/// OBJECT ENCODING of a string marked `enc`: by Redis's rule for a value
/// a client sets, `int` for an integer as above, `embstr` up to 44 bytes,
/// `raw` beyond; `raw` for a value built in place (APPEND, SETRANGE);
/// never `int` for INCRBYFLOAT's.
fn string_encoding(v: &[u8], enc: Enc) -> &'static str {
    use super::strings as text;
    if enc == Enc::Raw {
        text::ENCODING_RAW
    } else if enc != Enc::Embstr && as_redis_int(v).is_some() {
        text::ENCODING_INT
    } else if v.len() <= 44 {
        text::ENCODING_EMBSTR
    } else {
        text::ENCODING_RAW
    }
}

/// GETRANGE's bytes of `v`, from `start` to `end` included: negative
/// indexes count from the end, and the range is clamped to the value, as
/// Redis 7.0 does.
fn range(v: &[u8], start: i64, end: i64) -> &[u8] {
    match range_bounds(v.len() as u64, start, end) {
        Some((start, end)) => &v[start as usize..=end as usize],
        None => &[],
    }
}

/// The first and last byte (inclusive) GETRANGE `start` `end` takes of a
/// value of `len` bytes, as Redis counts them; `None`: none.
fn range_bounds(len: u64, start: i64, end: i64) -> Option<(u64, u64)> {
    let len = len as i64;
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let start = if start < 0 { len + start } else { start }.max(0);
    let end = if end < 0 { len + end } else { end }.max(0).min(len - 1);
    if start > end || len == 0 {
        return None;
    }
    Some((start as u64, end as u64))
}
