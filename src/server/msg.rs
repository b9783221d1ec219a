//! What travels over the rings between connection threads and pollers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use crate::format::Enc;
use crate::index::KeyHash;

/// A connection, as pollers address it: its thread, its slot there, and the
/// slot's generation (a reply for a closed connection is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub thread: u16,
    pub slot: u32,
    pub gen: u32,
}

impl ConnRef {
    /// No connection: the server's own requests (a full copy's steps and
    /// batches), whose replies go to no one.
    pub const NONE: ConnRef = ConnRef {
        thread: 0,
        slot: u32::MAX,
        gen: 0,
    };
}

/// A key-addressed operation for the poller that owns the key.
#[derive(Debug)]
pub struct Request {
    pub from: ConnRef,
    /// Position of the reply among the connection's replies.
    pub id: u64,
    /// Part of a multi-key command (MGET, EXISTS) this request answers.
    pub part: u32,
    pub hash: KeyHash,
    /// Index partition of the key.
    pub pid: u32,
    pub op: Op,
    /// Reads count as accesses for eviction (false under `CLIENT NO-TOUCH
    /// ON`).
    pub touch: bool,
    /// Records of the key's index tag read already and found to be other
    /// keys' (their offsets): the key's lookup passes them by.
    pub tried: Vec<u64>,
}

impl Request {
    /// A request of the server's own for partition `pid` (`hash`: its
    /// key's, if it has one), answered to no connection.
    pub fn internal(pid: u32, hash: KeyHash, op: Op) -> Request {
        Request {
            from: ConnRef::NONE,
            id: NO_REPLY,
            part: 0,
            hash,
            pid,
            op,
            touch: false,
            tried: Vec::new(),
        }
    }
}

/// A value moved to another poller (RENAME, COPY): its bytes, expiry,
/// the access bits its destination takes, and its encoding mark.
pub type Moved = (Vec<u8>, u64, u32, Enc);

/// The operations pollers perform.
#[derive(Debug)]
pub enum Op {
    /// Read the value of `key`.
    Get {
        key: Box<[u8]>,
    },
    /// Is the key present?
    Exists {
        key: Box<[u8]>,
    },
    /// Store a value; `expire_ms` is absolute (0 = no expiry), or the
    /// key's current expiry is kept (`keep_ttl`).
    Set {
        key: Box<[u8]>,
        /// Shared with the connection's read buffer when the command was
        /// large: a large value is never copied on its way in.
        value: bytes::Bytes,
        expire_ms: u64,
        keep_ttl: bool,
        cond: Cond,
        reply: SetReply,
        /// A value too large for a segment whose bytes went to the poller
        /// as they arrived (`value` is empty): its pieces are written
        /// already, or on their way ([`Feed`]).
        fed: Option<FedValue>,
    },
    /// The beginning of a SET whose value is still arriving: the poller
    /// takes the value's piece segments and writes each piece as the
    /// connection hands it over in `feed`. No key is touched (and no reply
    /// is owed: `id` is [`NO_REPLY`]); the SET itself follows, once the
    /// whole command has arrived, as an [`Op::Set`] with the feed.
    FeedBegin {
        feed: Arc<Feed>,
    },
    /// Read the value and delete the key (GETDEL).
    GetDel {
        key: Box<[u8]>,
    },
    /// Delete the key.
    Del {
        key: Box<[u8]>,
    },
    /// Set the expiry (absolute ms; at or before now deletes the key), or
    /// remove it with `persist`.
    Expire {
        key: Box<[u8]>,
        at_ms: u64,
        persist: bool,
        /// EXPIRE's NX | XX | GT | LT.
        cond: ExpireIf,
    },
    /// Time to live, in ms or in s.
    Ttl {
        key: Box<[u8]>,
        ms: bool,
    },
    /// Add `by` to the integer the key holds (a missing key holds 0),
    /// keeping its TTL: INCR, DECR, INCRBY, DECRBY.
    IncrBy {
        key: Box<[u8]>,
        by: i64,
    },

    // Strings and TTLs: the commands that read a value, or read and
    // rewrite it, to change part of it.
    /// Add the number `by` (as written by the client) to the number the
    /// key holds, as Redis's `long double` (INCRBYFLOAT); the TTL stays.
    IncrByFloat {
        key: Box<[u8]>,
        by: Box<[u8]>,
    },
    /// Append to the value (a missing key holds ""); the TTL stays.
    Append {
        key: Box<[u8]>,
        value: Box<[u8]>,
    },
    /// The length of the value (STRLEN).
    Strlen {
        key: Box<[u8]>,
    },
    /// The bytes of the value from `start` to `end`, both included, with
    /// Redis's negative indexes (GETRANGE, SUBSTR).
    GetRange {
        key: Box<[u8]>,
        start: i64,
        end: i64,
    },
    /// Overwrite the value from `offset`, padding with zero bytes
    /// (SETRANGE); the TTL stays.
    SetRange {
        key: Box<[u8]>,
        offset: u64,
        value: Box<[u8]>,
    },
    /// The value, and a change of its expiry (GETEX).
    GetEx {
        key: Box<[u8]>,
        expiry: GetExpiry,
    },
    /// Set every key, or none when any exists (MSETNX): the keys are all
    /// this poller's. `wait`: its number while it waits for its keys.
    /// `others`: inside an EXEC across pollers, the pollers of the
    /// command's other parts, whose verdicts (none of their keys is there)
    /// this part waits for, having sent its own (`Op::Mail`).
    MsetNx {
        pairs: Vec<KeyValue>,
        wait: Option<u64>,
        others: Vec<usize>,
    },
    /// The absolute expiry, in ms or in s (PEXPIRETIME, EXPIRETIME).
    ExpireTime {
        key: Box<[u8]>,
        ms: bool,
    },

    // Transactions.
    /// EXEC: the queued commands' requests (their ids carry [`TXN_PART`]),
    /// all for this poller, run at once and in order; nothing else touches
    /// their keys meanwhile. `watched`: the connection watches keys (WATCH),
    /// and the transaction runs only if none changed. The reply is
    /// [`Reply::Txn`], or nil when a watched key changed.
    Exec {
        reqs: Vec<Request>,
        watched: bool,
        /// The index tags of the keys its connection watches on this
        /// poller, set as it first claims its keys: held with them, so
        /// that it checks the watched keys after every write of them that
        /// came before it (a SET pipelined behind an MGET holding the
        /// key, say).
        watch_tags: Vec<u64>,
        /// Its number while it waits for its keys.
        wait: Option<u64>,
        /// One part of an EXEC whose keys are on several pollers (its
        /// request's `part` is the part's place in `pollers`).
        cross: Option<Box<Cross>>,
        /// The transaction holds a command of the whole key space (KEYS,
        /// SCAN, RANDOMKEY, DBSIZE, FLUSHDB, FLUSHALL): while it runs, the
        /// poller holds every other request (`poller/whole.rs`).
        whole: bool,
    },
    /// A step of an EXEC across pollers, from one of its pollers to
    /// another (`from` and `id` name the EXEC): see [`CrossStep`].
    Cross(CrossStep),
    /// From the source's part of a move across pollers to the
    /// destination's (`Cross::carry`; `from` and `id` name the
    /// transaction): the source's value, expiry and access bits (which a
    /// renamed key keeps; `None`: missing, or its read failed), and the
    /// destination's part runs.
    Carry(Option<Moved>),
    /// From one part of an EXEC across pollers to another (`from` and
    /// `id` name the EXEC), for the command whose requests' id is `sub`
    /// (a move's value, a verdict): kept until that part's command asks
    /// for it (see `poller/cross.rs`).
    Mail {
        sub: u64,
        mail: Mail,
    },
    /// Requests of one command for several keys of this poller (MGET,
    /// EXISTS, DEL, MSET): they run together, once none of their keys is
    /// held by a transaction or a read-modify-write, so that the command
    /// sees, or makes, one state of its keys, as in Redis.
    Group {
        reqs: Vec<Request>,
        wait: Option<u64>,
    },
    /// WATCH: remembers the key's current version for the connection.
    Watch {
        key: Box<[u8]>,
    },
    /// UNWATCH (and DISCARD, EXEC refused, a connection closing): forgets
    /// what the connection watches here. No reply when `id` is
    /// [`NO_REPLY`].
    Unwatch,
    // Key space: the per-key commands.
    /// `string` or `none` (TYPE).
    Type {
        key: Box<[u8]>,
    },
    /// Whether the key exists; its access time follows, whatever the
    /// eviction policy (TOUCH).
    Touch {
        key: Box<[u8]>,
    },
    /// What OBJECT says of the key.
    Object {
        key: Box<[u8]>,
        what: ObjectInfo,
    },
    /// The bytes the key takes (MEMORY USAGE).
    MemoryUsage {
        key: Box<[u8]>,
    },
    /// The value in Redis's serialized form (DUMP).
    Dump {
        key: Box<[u8]>,
    },
    /// Create the key from a serialized value (RESTORE).
    Restore {
        key: Box<[u8]>,
        /// The value, or the error to answer once the key is found
        /// missing (or REPLACE given): Redis checks the TTL and the
        /// payload after it refuses a key that exists.
        value: Result<Box<[u8]>, String>,
        /// Absolute, in ms; 0: none. At or before now, nothing is created.
        expire_ms: u64,
        replace: bool,
        access: Option<RestoreAccess>,
    },
    /// RENAME, RENAMENX, COPY: `key` to `to`, both this poller's. The
    /// value and its expiry are read and written in one turn. `wait`: its
    /// number while it waits for its keys.
    Move {
        key: Box<[u8]>,
        to: KeyAt,
        kind: MoveKind,
        wait: Option<u64>,
    },
    /// The destination's half of a RENAME, RENAMENX or COPY whose two
    /// keys are on two pollers (a request of the destination's part of a
    /// transaction across them, `Cross::carry`): the key is written with
    /// the source's value and expiry (and, for a rename, its access
    /// bits), which the source's part reads and sends (`Op::Carry`)
    /// before this part runs; `None` when the source is missing (that
    /// part answers).
    MoveIn {
        key: Box<[u8]>,
        kind: MoveKind,
        value: Option<Moved>,
        /// The source's poller (inside an EXEC, RENAMENX's verdict goes
        /// back to it).
        source: usize,
    },
    /// The place of waiting request `id` (a command of several keys) in
    /// the queue of a key it waits for (a poller's own: no client sends
    /// it).
    Fence {
        id: u64,
    },
    // Key space: iteration. The request's `pid` is the partition to
    // visit (its `hash` is unused).
    /// One SCAN step in partition `pid`: the keys whose tags lie from
    /// `from` on, about `count` of them, matching `pattern`; none at all
    /// with `no_keys` (a TYPE other than string): only the cursor moves.
    Scan {
        from: u64,
        count: usize,
        pattern: Option<Box<[u8]>>,
        no_keys: bool,
    },
    /// One step of a replica's full copy by the poller that owns
    /// partition `pid`, from a primary's feed (no connection sends it):
    /// answered on the step's own channel with the live keys of the next
    /// records as ready-made `SET key value [PXAT ms]` commands (see
    /// `poller/scan/copy.rs`).
    CopyStep(Box<CopyAsk>),
    /// A batch of a replica's full copy for this poller: its records go
    /// into the log as they are, without the command path
    /// (`repl/replica.rs`, `poller/load.rs`), and the batch is answered
    /// on its own channel once they are all durable (whatever the
    /// durability mode).
    Load(Box<CopyBatch>),
    /// Every key of the poller's partitions matching `pattern` (KEYS), as
    /// one part of the combined reply.
    Keys {
        pattern: Box<[u8]>,
    },
    /// One live key of the poller's, at random (`seed`), or nil.
    RandomKey {
        seed: u64,
    },
    /// The poller's live keys, as one part of DBSIZE's sum.
    DbSize,
    /// One part of a census of the key space (KEYS, DBSIZE, FLUSHDB, a SCAN step,
    /// RANDOMKEY) on a server with several pollers: the poller runs `op`
    /// once the census holds the gate and every poller of it looks at
    /// the same instant of the store (`poller/census.rs`).
    Census(Box<Census>),
    /// A step of a census, from one of its pollers to another (`from`
    /// and `id` name the census's request).
    CensusStep(CensusStep),
    /// Every key of the poller's shards goes (FLUSHDB, FLUSHALL): `+OK`
    /// once the flush is durable.
    /// SAVE / BGSAVE: every write this poller has acknowledged is made
    /// durable (a commit, with a device flush, even when nothing waits to
    /// be written); answered once it is.
    Save,
    Flush,
}

/// What one part of an EXEC across pollers sends another for one of its
/// commands ([`Op::Mail`]).
#[derive(Debug, Clone)]
pub enum Mail {
    /// A move's source's value, expiry and access bits (`None`: missing,
    /// or its read failed).
    Value(Option<Moved>),
    /// Whether the command goes on: RENAMENX's destination was free and
    /// is written; none of MSETNX's keys of the sender is there.
    Verdict(bool),
}

/// What a part of an EXEC across pollers knows of the others.
#[derive(Debug, Clone)]
pub struct Cross {
    /// The pollers of the EXEC's parts, lowest first: they hold their
    /// keys in this order, each once the one before holds its own.
    pub pollers: Vec<usize>,
    /// One command of several keys (MSET, MSETNX, a move, MGET), not an
    /// EXEC: no WATCH is checked.
    pub single: bool,
    /// Its requests run as a group's, each answering the connection
    /// itself, and the part has no reply of its own (MGET: its reads go
    /// to the device together, not one after another as a
    /// transaction's).
    pub group: bool,
    /// It passes the server's gate alone (one such transaction at a
    /// time, `gate.rs`): sent while replicas are fed (its parts' writes
    /// go into the stream as one `MULTI … EXEC`, `repl/outbox.rs`), or
    /// holding a command of the whole key space, or with `mail` on a
    /// server of more than two pollers.
    pub gated: bool,
    /// A move (RENAME, RENAMENX, COPY; inside an EXEC, moves all from one
    /// poller to one other) whose source and destination are on two
    /// pollers: the places of the source's part and of the destination's
    /// in `pollers`. The source's part commits last (`Left::source`).
    /// Without `mail`, the destination's part runs once the source's has
    /// read the values and sent them (`Op::Carry`, one per move, in
    /// order).
    pub carry: Option<(u32, u32)>,
    /// An EXEC with MSETNX, RENAMENX or moves across pollers other than
    /// RENAMEs and COPYs all one way: every part runs once all hold their
    /// keys, and they send each other what their commands need as they
    /// run (`Op::Mail`, `poller/cross.rs`).
    pub mail: bool,
}

/// A part of a census ([`Op::Census`]).
#[derive(Debug)]
pub struct Census {
    /// What the poller runs (KEYS, DBSIZE, FLUSHDB, a SCAN step, RANDOMKEY).
    pub op: Op,
    /// The census's pollers, lowest first: the first takes the gate.
    pub pollers: Vec<usize>,
}

/// The steps of a census ([`Op::CensusStep`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CensusStep {
    /// To the first poller: the census holds the gate.
    Gate,
    /// From the first poller: the census holds the gate; once no
    /// transaction across pollers is between its commit and its end
    /// here, stop (a lone poller runs its part at once).
    Go,
    /// To the first poller: one poller has stopped, holding every request
    /// that comes.
    Stopped,
    /// From the first poller: every poller has stopped: run the part, and
    /// go on.
    Run,
}

/// The steps of an EXEC across pollers ([`Op::Cross`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossStep {
    /// The poller before holds its part's keys: hold this part's.
    Claim,
    /// Every part holds its keys, and no watched key changed: run.
    Go,
    /// A watched key changed (EXEC answered nil): let the part go
    /// without running it.
    Abort,
    /// To the last poller: one part has run its commands and holds the
    /// room its writes need (or writes nothing); it waits for `Commit`.
    Prepared,
    /// To the last poller: one part has run its commands and is refused
    /// (no room for its writes, its large values' pieces failed): it
    /// waits for `Drop`, with the error EXEC answers.
    Refused,
    /// Every part is prepared: commit, into the room held.
    Commit,
    /// A part was refused: every part drops what it ran (its view, its
    /// large values' pieces, its room) and lets its keys go; the refused
    /// one's error is EXEC's reply.
    Drop,
    /// To the last poller: one part has committed, its writes durable;
    /// its keys stay held.
    Done,
    /// To the last poller: one part's commit failed (nothing of it is
    /// left in the store, or, its appends stopped partway, what it wrote
    /// is durable and undone with the others); its keys stay held.
    Failed,
    /// Every part's commit is durable: each answers, its writes go into
    /// the replication stream (`stream`: the last poller decided once,
    /// for every part, that the transaction goes into it; see
    /// [`Cross::gated`]), and its keys are free again.
    Release { stream: bool },
    /// A part's commit failed: every part whose writes are durable writes
    /// its keys' previous states back, and lets its keys go once that is
    /// durable; the failed part's error is EXEC's reply.
    Undo,
    /// To the first part's poller: the transaction holds the gate for
    /// transactions across pollers (see [`Cross::gated`]): claim.
    Gate,
}

/// Records of a replica's full copy, all for one poller ([`Op::Load`]).
#[derive(Debug)]
pub struct CopyBatch {
    /// A stretch of the copy as it came from the primary (its SET
    /// commands in RESP), where `recs` point at their keys and values:
    /// shared by the batches of every poller with keys in it, and handed
    /// back with the answers, so that its memory is used again.
    pub data: std::sync::Arc<Vec<u8>>,
    pub recs: Vec<CopyRecord>,
    /// Where the poller answers once the batch is durable.
    pub done: std::sync::mpsc::Sender<CopyDone>,
    /// The keys the whole copy holds, as its primary announced them: the
    /// poller makes room in its index for its share first (0: none).
    pub reserve: u64,
}

/// A step of a full copy a feed asks of a poller ([`Op::CopyStep`]).
#[derive(Debug)]
pub struct CopyAsk {
    /// The copy: a number the feed took (unique in the process).
    pub session: u64,
    /// This step starts the copy: the poller takes the index entries of
    /// every key of its partitions now.
    pub first: bool,
    /// Where the step's commands go: a buffer of an earlier step, so
    /// that its memory is used again.
    pub buf: Vec<u8>,
    /// Read buffers of earlier steps, sent: the copy reads into them
    /// again.
    pub reads: Vec<crate::io::IoBuf>,
    /// Where the poller answers.
    pub done: std::sync::mpsc::Sender<CopyAnswer>,
}

/// A poller's answer to a [`CopyAsk`]: the step's part of the copy, or
/// why the copy cannot go on.
#[derive(Debug)]
pub struct CopyAnswer {
    pub poller: usize,
    pub part: Result<CopyPart, &'static str>,
}

/// The keys of one copy step: `SET key value [PXAT ms]` commands in RESP,
/// back to back, whose values are partly in the device reads that
/// brought them (sent from there, not copied: [`CopyPart::slices`]).
#[derive(Debug, Default)]
pub struct CopyPart {
    /// The commands' bytes but for the values in `reads`.
    pub bytes: Vec<u8>,
    /// Where values in `reads` go between `bytes`, in order.
    pub cuts: Vec<CopyCut>,
    /// The device reads (spans of a segment) those values are in.
    pub reads: Vec<crate::io::IoBuf>,
    /// How many.
    pub keys: u64,
    /// Keys whose values are in pieces (larger than a segment), left to
    /// the feed to read through the command path.
    pub large: Vec<Box<[u8]>>,
    /// The copy has no records left after this step's (the steps asked
    /// after it answer empty).
    pub last: bool,
    /// In the answer to the copy's first step: the index entries it took
    /// (about the keys the poller's part of the copy holds).
    pub entries: Option<u64>,
}

/// A value of a copy step sent from a read buffer: after `bytes` up to
/// `at` (from the previous cut's), `len` bytes of `reads[read]` from
/// `start`.
#[derive(Debug, Clone, Copy)]
pub struct CopyCut {
    pub at: u32,
    pub read: u32,
    pub start: u32,
    pub len: u32,
}

impl CopyPart {
    /// The step's bytes, in order, as slices of `bytes` and `reads` (for
    /// a vectored write).
    pub fn slices(&self) -> Vec<std::io::IoSlice<'_>> {
        let mut out = Vec::with_capacity(2 * self.cuts.len() + 1);
        let mut own = 0;
        for c in &self.cuts {
            let at = c.at as usize;
            if at > own {
                out.push(std::io::IoSlice::new(&self.bytes[own..at]));
            }
            own = at;
            let start = c.start as usize;
            let value = &self.reads[c.read as usize][start..start + c.len as usize];
            out.push(std::io::IoSlice::new(value));
        }
        if self.bytes.len() > own {
            out.push(std::io::IoSlice::new(&self.bytes[own..]));
        }
        out
    }
}

/// One record of a [`CopyBatch`]: a key's value and absolute expiry (0:
/// none).
#[derive(Debug, Clone, Copy)]
pub struct CopyRecord {
    pub hash: KeyHash,
    pub pid: u32,
    /// Where the key and the value start in the batch's `data`.
    pub key_at: u32,
    pub value_at: u32,
    pub key_len: u32,
    pub value_len: u32,
    pub expire_ms: u64,
}

/// A poller's answer to a [`CopyBatch`]: the records it could not write,
/// and the first one's error.
#[derive(Debug)]
pub struct CopyDone {
    pub poller: usize,
    pub failed: u64,
    pub first: Option<String>,
    /// The batch's buffers (its records emptied), for a next batch to
    /// fill.
    pub buffers: (std::sync::Arc<Vec<u8>>, Vec<CopyRecord>),
}

/// A key, with where it lives.
#[derive(Debug)]
pub struct KeyAt {
    pub hash: KeyHash,
    pub pid: u32,
    pub key: Box<[u8]>,
}

/// OBJECT's subcommands that read a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectInfo {
    Encoding,
    Refcount,
    Idletime,
    Freq,
}

/// RESTORE's IDLETIME or FREQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreAccess {
    IdleSecs(u64),
    Freq(u8),
}

/// What [`Op::Move`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// RENAME: the destination is replaced, the source deleted.
    Rename,
    /// RENAMENX: only if the destination is missing.
    RenameNx,
    /// COPY, replacing the destination with REPLACE.
    Copy { replace: bool },
}

/// Redis's `proto-max-bulk-len`: APPEND and SETRANGE refuse a longer
/// string with Redis's error (nvkv's `--max-value-size`, lower, with its
/// own).
pub const PROTO_MAX_BULK_LEN: u64 = 512 * 1024 * 1024;

/// A large value handed from a connection to a poller as its bytes
/// arrive, a piece at a time (see `docs/design.md`, "Large values").
/// The connection pushes each piece's bytes as soon as it has them; the
/// poller takes them as the device keeps up, so that the connection reads
/// at most [`FEED_WINDOW`] bytes ahead of the writes.
#[derive(Debug)]
pub struct Feed {
    /// Unique among the server's feeds.
    pub id: u64,
    /// The value's length, and the bytes of one piece (the last may be
    /// shorter).
    pub len: u64,
    pub piece: usize,
    /// Pieces it may hold that the poller has not taken.
    window: usize,
    /// The connection thread of the connection feeding it, and the
    /// poller writing it.
    pub thread: u16,
    pub poller: usize,
    pieces: std::sync::Mutex<std::collections::VecDeque<bytes::Bytes>>,
    /// The poller refused the value (this is why): the connection reads
    /// the rest of it and drops it.
    refused: std::sync::OnceLock<String>,
    /// Nobody will complete the SET: the connection went, or the SET's
    /// request was dropped unwritten. The poller frees the pieces.
    abandoned: AtomicBool,
    /// The connection waits for room in the window.
    waiting: AtomicBool,
}

/// Bytes of pieces a feed may hold that its poller has not taken yet (at
/// least two pieces): the connection stops reading until the poller takes
/// one, which it does as the device writes those before.
pub const FEED_WINDOW: usize = 16 << 20;

impl Feed {
    pub fn new(len: u64, piece: usize, thread: u16, poller: usize) -> Arc<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Feed {
            id: NEXT.fetch_add(1, SeqCst),
            len,
            piece,
            window: (FEED_WINDOW / piece).max(2),
            thread,
            poller,
            pieces: Default::default(),
            refused: Default::default(),
            abandoned: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        })
    }

    /// The connection hands over the next piece's bytes (dropped if the
    /// value was refused).
    pub fn push(&self, piece: bytes::Bytes) {
        if self.refused.get().is_none() {
            self.pieces.lock().expect("feed").push_back(piece);
        }
    }

    /// Whether the connection may read another piece now; if not, it is
    /// marked waiting, and the poller wakes its thread once it may.
    pub fn has_room(&self) -> bool {
        let room = || self.pieces.lock().expect("feed").len() < self.window;
        if room() {
            return true;
        }
        self.waiting.store(true, SeqCst);
        // The poller may have taken one before it could see the mark.
        room()
    }

    /// The poller takes the next piece; returns it, and whether the
    /// connection waits for the room it leaves (its thread is to be rung).
    pub fn take(&self) -> Option<(bytes::Bytes, bool)> {
        let piece = self.pieces.lock().expect("feed").pop_front()?;
        Some((piece, self.waiting.swap(false, SeqCst)))
    }

    /// The poller refuses the value, replying `msg` to the SET; returns
    /// whether the connection waits for room (its thread is to be rung).
    pub fn refuse(&self, msg: String) -> bool {
        let _ = self.refused.set(msg);
        self.pieces.lock().expect("feed").clear();
        self.waiting.swap(false, SeqCst)
    }

    pub fn refusal(&self) -> Option<&str> {
        self.refused.get().map(String::as_str)
    }

    pub fn abandon(&self) {
        self.abandoned.store(true, SeqCst);
    }

    pub fn abandoned(&self) -> bool {
        self.abandoned.load(SeqCst)
    }
}

/// A connection's or a SET's hold on a [`Feed`]: dropped unconsumed (the
/// connection closed mid-value, the SET was not written: NX or XX, an
/// error), it abandons the feed, and the poller frees its pieces.
#[derive(Debug)]
pub struct FedValue {
    pub feed: Arc<Feed>,
    consumed: bool,
}

impl FedValue {
    pub fn new(feed: Arc<Feed>) -> Self {
        FedValue {
            feed,
            consumed: false,
        }
    }

    /// The value's pieces are the SET's now (or its refusal is answered).
    pub fn consume(mut self) {
        self.consumed = true;
    }
}

impl Drop for FedValue {
    fn drop(&mut self) {
        if !self.consumed {
            self.feed.abandon();
        }
    }
}

/// The id of a request that gets no reply.
pub const NO_REPLY: u64 = u64::MAX;

/// Marks the ids of the requests inside an EXEC: they answer the
/// transaction, not the connection.
pub const TXN_PART: u64 = 1 << 62;

/// One key of a multi-key write, with where it lives.
#[derive(Debug)]
pub struct KeyValue {
    pub hash: KeyHash,
    pub pid: u32,
    pub key: Box<[u8]>,
    pub value: Box<[u8]>,
}

/// EXPIRE's conditions (Redis allows XX with GT or LT; NX alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireIf {
    /// Only if the key has no expiry.
    pub nx: bool,
    /// Only if it has one.
    pub xx: bool,
    /// Only if the new expiry is later (no expiry counts as infinite).
    pub gt: bool,
    /// Only if the new expiry is earlier.
    pub lt: bool,
}

/// What GETEX does to the expiry of the key it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetExpiry {
    /// Nothing (no option).
    Keep,
    /// PERSIST.
    Persist,
    /// EX | PX | EXAT | PXAT: this absolute time in ms (at or before now
    /// deletes the key).
    At(u64),
    /// A time Redis refuses, but only once it has found the key: the
    /// error to answer then.
    Invalid(String),
}

impl Op {
    /// The key of the operation (`None` for EXISTS, which needs no key bytes).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Op::Get { key }
            | Op::Set { key, .. }
            | Op::GetDel { key }
            | Op::Del { key }
            | Op::Expire { key, .. }
            | Op::Ttl { key, .. }
            | Op::IncrBy { key, .. }
            | Op::IncrByFloat { key, .. }
            | Op::Append { key, .. }
            | Op::Strlen { key }
            | Op::GetRange { key, .. }
            | Op::SetRange { key, .. }
            | Op::GetEx { key, .. }
            | Op::ExpireTime { key, .. } => Some(key),
            Op::Type { key }
            | Op::Touch { key }
            | Op::Object { key, .. }
            | Op::MemoryUsage { key }
            | Op::Dump { key }
            | Op::Restore { key, .. }
            | Op::Move { key, .. }
            | Op::MoveIn { key, .. } => Some(key),
            Op::Fence { .. } | Op::FeedBegin { .. } => None,
            Op::MsetNx { pairs, .. } => pairs.first().map(|p| &*p.key),
            Op::Watch { key } => Some(key),
            Op::Exists { key } => Some(key),
            Op::Exec { .. } | Op::Group { .. } | Op::Unwatch => None,
            Op::Cross(_) | Op::Carry(_) | Op::Mail { .. } => None,
            Op::Census(_) | Op::CensusStep(_) | Op::DbSize => None,
            Op::Scan { .. } | Op::Keys { .. } | Op::RandomKey { .. } | Op::Flush | Op::Save => None,
            Op::CopyStep { .. } | Op::Load(_) => None,
        }
    }
}

impl Op {
    /// Whether the operation reads the current record before it writes:
    /// requests for the same key wait until it has written.
    pub fn reads_then_writes(&self) -> bool {
        matches!(
            self,
            Op::Expire { .. }
                | Op::GetDel { .. }
                | Op::IncrBy { .. }
                | Op::IncrByFloat { .. }
                | Op::Append { .. }
                | Op::SetRange { .. }
                | Op::GetEx {
                    expiry: GetExpiry::Persist | GetExpiry::At(_),
                    ..
                }
                | Op::Set {
                    reply: SetReply::Old,
                    ..
                }
        )
    }
}

/// What a SET answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetReply {
    /// `+OK`, or nil when NX / XX stopped it (SET).
    Ok,
    /// `:1`, or `:0` when NX stopped it (SETNX).
    Int,
    /// The old value, or nil (SET … GET, GETSET).
    Old,
}

/// Condition of a SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Always,
    /// Only if the key does not exist.
    Nx,
    /// Only if the key exists.
    Xx,
}

/// A poller's answer to one request.
#[derive(Debug)]
pub struct Response {
    pub to: ConnRef,
    pub id: u64,
    pub part: u32,
    pub reply: Reply,
}

/// A reply, or one part of a multi-key reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// RESP bytes, ready to send (a bulk string, `+OK`, …).
    Encoded(Vec<u8>),
    Nil,
    Int(i64),
    /// An error message, sent as `-<msg>`.
    Error(String),
    /// EXEC's replies to its commands' requests: (id without
    /// [`TXN_PART`], part, reply).
    Txn(Vec<(u64, u32, Reply)>),
    /// Bytes of a reply sent in parts as a poller reads it (a large
    /// value's GET, GETRANGE, DUMP …): more follow, the last as [`Reply::Encoded`] or
    /// [`Reply::Cut`].
    Part(Vec<u8>, FlowRef),
    /// A reply sent in parts broke off (a piece failed its read): the
    /// connection closes, as nothing can finish the reply.
    Cut,
}

/// The flow control of a reply sent in parts ([`Reply::Part`]): the
/// poller reads ahead of what the connection has taken by a window only.
/// Taken bytes are those written to the socket, or kept by the connection
/// whole anyway (a reply under `CLIENT REPLY OFF`). The poller holds one reference; each part in transit or held
/// by the connection holds another: when the poller's is the last one,
/// the connection has gone.
#[derive(Debug)]
pub struct Flow {
    taken: AtomicU64,
    /// The poller waits for bytes to be taken: the connection thread
    /// rings it.
    waiting: AtomicBool,
    /// The poller's number.
    pub poller: usize,
}

impl Flow {
    pub fn new(poller: usize) -> Arc<Flow> {
        Arc::new(Flow {
            taken: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            poller,
        })
    }

    /// Bytes the connection has taken.
    pub fn taken(&self) -> u64 {
        self.taken.load(SeqCst)
    }

    /// The connection took `n` more bytes; returns whether the poller
    /// waits for them (to be rung).
    pub fn take(&self, n: u64) -> bool {
        self.taken.fetch_add(n, SeqCst);
        self.waiting.load(SeqCst) && self.waiting.swap(false, SeqCst)
    }

    /// The poller is to wait for `want` taken bytes; returns whether they
    /// came meanwhile (then it need not wait).
    pub fn wait_for(&self, want: u64) -> bool {
        self.waiting.store(true, SeqCst);
        if self.taken() >= want {
            self.waiting.store(false, SeqCst);
            return true;
        }
        false
    }
}

/// A reference to a [`Flow`], carried by the parts of a reply; equal to
/// another when it is the same flow.
#[derive(Debug, Clone)]
pub struct FlowRef(pub Arc<Flow>);

impl PartialEq for FlowRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for FlowRef {}

impl Reply {
    /// Appends the RESP form of the reply to `out`, in the protocol the
    /// connection spoke when it sent the request (a nil is `_` in RESP3).
    pub fn encode(&self, out: &mut Vec<u8>, proto: crate::resp::Proto) {
        match self {
            Reply::Encoded(b) => out.extend_from_slice(b),
            Reply::Nil => crate::resp::null(out, proto),
            Reply::Int(n) => crate::resp::int(out, *n),
            Reply::Error(m) => crate::resp::error(out, m),
            Reply::Txn(_) => unreachable!("a transaction's replies are combined by its slot"),
            Reply::Part(b, _) => out.extend_from_slice(b),
            Reply::Cut => {}
        }
    }
}

/// Bits of a SCAN cursor that hold the position in a partition's tag
/// space; the bits above hold the partition. Position `p` stands for tag
/// `p << TAG_GRAIN`.
pub(in crate::server) const CURSOR_POS_BITS: u32 = 40;
/// Tags a cursor position step covers, as a power of two.
pub(in crate::server) const TAG_GRAIN: u32 = 64 - CURSOR_POS_BITS;
