//! Replication: the stream of changes a primary sends its replicas, and a
//! replica's link to its primary (see docs/design.md, "Replication").
//!
//! Every client write a poller applies is appended to the process-wide
//! backlog ([`Repl::feed`]) as the key's new state: `SET key value [PXAT
//! ms]` or `DEL key` (an INCR, an APPEND, a RENAME's two keys: whatever
//! the poller wrote), a transaction's writes inside `MULTI` … `EXEC`, and
//! `FLUSHALL`. Replaying any suffix of that stream in order, over any
//! older state of the keys, ends at the primary's state: that is what
//! makes a full copy taken while writes go on, and a resume from an older
//! offset after a crash, converge. Keys are partitioned to pollers, so the
//! order of one key's writes in the backlog is the order the primary
//! applied them.
//!
//! `primary.rs` serves replicas (PSYNC, the full copy, the stream, their
//! acknowledgements); `replica.rs` is a replica's link; `local.rs` the
//! in-process client connection both use to read and write the store
//! through the normal command path.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::msg::{ConnRef, Reply, Response};
use super::router::Router;
use super::strings;
use super::Shared;
use crate::resp;

pub(super) mod hello;
mod local;
mod outbox;
mod primary;
mod reader;
mod replica;

pub(super) use outbox::{Outbox, Part};
pub(super) use primary::{hand_over, psync, replconf};

/// What a replica says in `REPLCONF capa` to be served nvkv's stream (of
/// this version): a primary answers PSYNC only from a replica that speaks
/// it.
pub(super) const STREAM_CAPA: &str = "nvkv-stream-1";
/// What a replica says in `REPLCONF capa` to be told a full copy's key
/// count, which it makes room for in its index at once: a primary sends
/// `REPLCONF COPY-KEYS n` before the copy's first key only to a replica
/// that said so (one that did not takes the copy as before).
pub(super) const COPY_KEYS_CAPA: &str = "nvkv-copy-keys";
/// What every version of the stream's capability starts with.
const STREAM_CAPA_PREFIX: &str = "nvkv-stream-";

/// The replication state every thread shares.
pub(super) struct Repl {
    backlog: Mutex<Backlog>,
    /// Feeders wait here for new bytes in the backlog.
    grew: Condvar,
    /// Pollers append their writes (a replica has asked for the stream
    /// since start): read without the lock on every write.
    feeding: AtomicBool,
    /// What each poller tells: flushes run (see [`Backlog::flushes`]),
    /// writes queued for the stream and settled, sequence numbers.
    pollers: Vec<outbox::PollerMarks>,
    /// Commits that failed and rolled writes back, on any poller: a full
    /// copy may have read such a write.
    rollbacks: AtomicU64,
    /// Times the stream started again under a new id because it could
    /// not tell its replicas everything ([`Repl::restart_stream`]): each
    /// ends every replica's link with a full copy to follow.
    restarts: AtomicU64,
    /// The role, and a replica's link.
    role: Mutex<Role>,
    /// A replica that refuses clients' writes (`--replica-read-only`).
    read_only: AtomicBool,
    /// The replicas connected to this server.
    replicas: Mutex<Vec<Arc<primary::Replica>>>,
    /// `--repl-backlog-size`.
    backlog_size: usize,
    /// Counts role changes: a link thread whose generation is past exits.
    generation: AtomicU64,
    /// A replica now (read without the role's lock).
    replica: AtomicBool,
    /// A replica loads a full copy: clients' commands that need the data
    /// set are refused with -LOADING, as Redis's.
    loading: AtomicBool,
    /// A replica's socket to its primary, shut down when the role changes
    /// (the link thread then stops at once).
    link_socket: Mutex<Option<std::net::TcpStream>>,
    /// The server's shared state, for the threads replication starts.
    server: OnceLock<Weak<Shared>>,
    /// WAITs not yet answered, and whether the thread that answers them
    /// runs.
    waits: Mutex<Vec<Wait>>,
    waiting: Condvar,
    waiter_started: std::sync::Once,
    /// `--min-replicas-to-write` and `--min-replicas-max-lag`.
    min_replicas: usize,
    min_replicas_max_lag: u64,
}

/// A WAIT to answer once `replicas` replicas acknowledged `offset`, or at
/// `deadline`. The offset is known once the writes the pollers had queued
/// for the stream when WAIT came (`queued`, see [`Repl::queued_marks`])
/// are in it.
struct Wait {
    to: ConnRef,
    id: u64,
    offset: Option<u64>,
    queued: Vec<u64>,
    replicas: usize,
    deadline: Option<Instant>,
}

/// The backlog: the last `size` bytes of the stream, and its offsets.
struct Backlog {
    /// The stream's identity: a replica resumes only a stream of the same
    /// id (Redis's `master_replid`).
    replid: String,
    /// Bytes appended since the stream began (`master_repl_offset`).
    end: u64,
    /// The stream this one continues, and the offset of its first byte
    /// not in this one (Redis's `master_replid2`, `second_repl_offset`):
    /// after a promotion, a replica of the same old primary resumes here
    /// if it had no byte past that offset.
    replid2: String,
    second_offset: i64,
    /// When bytes were last appended.
    last_append: Instant,
    /// The last bytes of the stream: `size` of them, and from where the
    /// replica being fed furthest behind stands (at most
    /// [`REPLICA_BUFFER_LIMIT`]).
    ring: VecDeque<u8>,
    size: usize,
    /// Where each replica being fed stands (the stream offset of its next
    /// byte to send), by feed.
    feeds: HashMap<u64, u64>,
    next_feed: u64,
    /// FLUSHALLs appended (or that would have been, while not feeding):
    /// a poller that has run fewer flushes than this has one coming, and
    /// its writes until then are wiped by it, so they are left out of the
    /// stream (on the replica, the FLUSHALL comes first).
    flushes: u64,
    /// Transactions across pollers some of whose parts are here, waiting
    /// for the others (`outbox.rs`), by transaction.
    joins: HashMap<(ConnRef, u64), outbox::Join>,
}

/// A primary appends a PING to the stream when it has been quiet this
/// long (Redis's `repl-ping-replica-period`), so that replicas hear from
/// it.
const PING_EVERY: Duration = Duration::from_secs(10);
/// A link silent this long is dead, on either side (Redis's
/// `repl-timeout`): the replica reconnects and resumes.
pub(super) const LINK_TIMEOUT: Duration = Duration::from_secs(60);

/// The role of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Role {
    Primary,
    Replica(Link),
}

/// A replica's link to its primary, as ROLE and INFO show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub host: String,
    pub port: u16,
    pub state: LinkState,
    /// Bytes of the primary's stream applied (acknowledged by the store).
    pub offset: u64,
    /// The stream id being followed ("?" before the first sync).
    pub replid: String,
    /// When the primary last sent anything.
    pub last_io: Option<Instant>,
    /// When the link last went down (`None`: never up).
    pub down_since: Option<Instant>,
    pub generation: u64,
}

/// Redis's names for the link's states (ROLE's fourth element).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    Connect,
    Connecting,
    Sync,
    Connected,
}

impl LinkState {
    pub(super) fn name(self) -> &'static str {
        match self {
            LinkState::Connect => "connect",
            LinkState::Connecting => "connecting",
            LinkState::Sync => "sync",
            LinkState::Connected => "connected",
        }
    }
}

/// No stream (`master_replid2` when none).
const NO_REPLID: &str = "0000000000000000000000000000000000000000";

/// A fresh stream id: 40 hex digits, as Redis's.
fn new_replid() -> String {
    let mut s = String::with_capacity(40);
    for _ in 0..5 {
        let _ = write!(s, "{:016x}", rand::random::<u64>());
    }
    s.truncate(40);
    s
}

/// This process's run id (INFO's `run_id`: Redis Sentinel tells
/// instances apart, and restarts, by it).
pub(super) fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(new_replid)
}

/// CONFIG GET replicaof: "host port", or empty on a primary.
pub(super) fn replicaof_setting(sh: &Shared) -> String {
    match &*sh.repl.role() {
        Role::Replica(l) => format!("{} {}", l.host, l.port),
        Role::Primary => String::new(),
    }
}

impl Repl {
    pub(super) fn new(
        pollers: usize,
        backlog_size: usize,
        read_only: bool,
        min_replicas: usize,
        min_replicas_max_lag: u64,
    ) -> Repl {
        Repl {
            backlog: Mutex::new(Backlog {
                replid: new_replid(),
                end: 0,
                replid2: NO_REPLID.into(),
                second_offset: -1,
                last_append: Instant::now(),
                ring: VecDeque::new(),
                size: backlog_size.max(1),
                feeds: HashMap::new(),
                next_feed: 0,
                flushes: 0,
                joins: HashMap::new(),
            }),
            grew: Condvar::new(),
            feeding: AtomicBool::new(false),
            pollers: (0..pollers).map(|_| Default::default()).collect(),
            rollbacks: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            role: Mutex::new(Role::Primary),
            read_only: AtomicBool::new(read_only),
            replicas: Mutex::new(Vec::new()),
            backlog_size: backlog_size.max(1),
            generation: AtomicU64::new(0),
            replica: AtomicBool::new(false),
            loading: AtomicBool::new(false),
            link_socket: Mutex::new(None),
            server: OnceLock::new(),
            waits: Mutex::new(Vec::new()),
            waiting: Condvar::new(),
            waiter_started: std::sync::Once::new(),
            min_replicas,
            min_replicas_max_lag,
        }
    }

    /// Tells replication the server's shared state (once, at start).
    pub(super) fn started(sh: &Arc<Shared>) {
        let _ = sh.repl.server.set(Arc::downgrade(sh));
    }

    /// The server's shared state, while it runs.
    fn server(&self) -> Option<Arc<Shared>> {
        self.server.get().and_then(Weak::upgrade)
    }

    fn backlog(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn role(&self) -> MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn replicas(&self) -> MutexGuard<'_, Vec<Arc<primary::Replica>>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether pollers append their writes to the stream.
    pub(super) fn feeding(&self) -> bool {
        self.feeding.load(Relaxed)
    }

    /// Whether a transaction across pollers whose parts are all durable
    /// goes into the stream, decided once for all its parts (a feed may
    /// begin between two parts' releases). Not feeding, it is read under
    /// the backlog's lock, which a first feed takes to begin: a full copy
    /// that begins after this says no reads every part's writes.
    pub(super) fn streams_now(&self) -> bool {
        let feeding = self.feeding() || {
            let _b = self.backlog();
            self.feeding()
        };
        feeding && !self.is_replica()
    }

    /// A FLUSHALL is about to go to every poller: counted, and appended
    /// to the stream when feeding.
    pub(super) fn flush_sent(&self) {
        let mut b = self.backlog();
        b.flushes += 1;
        // A replica's backlog holds its primary's stream (`mirror`).
        if self.feeding() && !self.is_replica() {
            let mut out = Vec::new();
            resp::encode::command(&mut out, &[b"FLUSHALL"]);
            b.append(&out);
            drop(b);
            self.grew.notify_all();
        }
    }

    /// Appends a PING when the stream has been quiet for
    /// [`PING_EVERY`] (the feeds call it; the first to find it due does
    /// it).
    fn ping_if_quiet(&self) {
        let mut b = self.backlog();
        if b.last_append.elapsed() < PING_EVERY {
            return;
        }
        let mut out = Vec::new();
        resp::encode::command(&mut out, &[b"PING"]);
        b.append(&out);
        drop(b);
        self.grew.notify_all();
    }

    /// The stream can no longer tell its replicas everything (`why`: a
    /// key went whose name could not be read, so no DEL can be sent for
    /// it): it goes on under a new id with an empty backlog, so that no
    /// replica resumes it from before, and every replica's link ends with
    /// an error that makes it sync again in full (`primary.rs`'s feed
    /// watches [`Repl::restarts`]).
    pub(super) fn restart_stream(&self, why: &str) {
        let mut b = self.backlog();
        b.replid = new_replid();
        b.replid2 = NO_REPLID.into();
        b.second_offset = -1;
        b.ring.clear();
        self.restarts.fetch_add(1, SeqCst);
        drop(b);
        self.grew.notify_all();
        tracing::warn!("{why}: the replicas sync again in full");
    }

    /// The stream's id and offset.
    pub(super) fn position(&self) -> (String, u64) {
        let b = self.backlog();
        (b.replid.clone(), b.end)
    }

    /// A replica's backlog follows its primary's stream, byte for byte:
    /// from `offset` of stream `replid` on (a full copy's start, or a
    /// resume's), its history kept when it is the same stream at the same
    /// offset.
    fn mirror_from(&self, replid: &str, offset: u64) {
        let mut b = self.backlog();
        if b.replid != replid || b.end != offset {
            b.replid = replid.to_string();
            b.end = offset;
            b.ring.clear();
            b.replid2 = NO_REPLID.into();
            b.second_offset = -1;
        }
    }

    /// A primary that resumed a replica under a new stream id (it was
    /// promoted): the replica's backlog takes it, the old one as its
    /// second, as Redis's.
    fn mirror_renamed(&self, replid: &str) {
        let mut b = self.backlog();
        if b.replid != replid {
            b.replid2 = std::mem::replace(&mut b.replid, replid.to_string());
            b.second_offset = b.end as i64 + 1;
        }
    }

    /// Stream bytes a replica received, kept as its primary's stream.
    fn mirror(&self, bytes: &[u8]) {
        self.backlog().append(bytes);
    }

    /// Whether this server is a replica now.
    pub(super) fn is_replica(&self) -> bool {
        self.replica.load(Relaxed)
    }

    /// Whether this server refuses clients' writes now.
    pub(super) fn refuses_writes(&self) -> bool {
        self.read_only.load(Relaxed) && self.replica.load(Relaxed)
    }
}

/// A replica being fed: the stream is held for it from where it stands
/// (see [`REPLICA_BUFFER_LIMIT`]) until this is dropped.
struct Feed<'a> {
    repl: &'a Repl,
    id: u64,
}

impl Feed<'_> {
    /// It has been sent the stream up to offset `at`.
    fn sent(&self, at: u64) {
        self.repl.backlog().fed(self.id, at);
    }
}

impl Drop for Feed<'_> {
    fn drop(&mut self) {
        self.repl.backlog().feeds.remove(&self.id);
    }
}

/// How far a replica being fed may trail the stream: the bytes not sent to
/// it yet stay held past the backlog's size, up to this many (Redis's
/// `client-output-buffer-limit replica` hard limit); a replica further
/// behind syncs again. A write larger than the backlog thus reaches the
/// replicas being fed instead of sending them back to a full copy, and so
/// does a burst of writes while a full copy is under way.
pub(super) const REPLICA_BUFFER_LIMIT: usize = 256 << 20;

impl Backlog {
    fn append(&mut self, bytes: &[u8]) {
        self.end += bytes.len() as u64;
        self.last_append = Instant::now();
        let behind = (self.feeds.values().min()).map_or(0, |&at| (self.end - at) as usize);
        let keep = self.size.max(behind.min(REPLICA_BUFFER_LIMIT));
        if bytes.len() >= keep {
            self.ring.clear();
            self.ring.extend(&bytes[bytes.len() - keep..]);
            return;
        }
        let over = (self.ring.len() + bytes.len()).saturating_sub(keep);
        self.ring.drain(..over);
        self.ring.extend(bytes);
    }

    /// A replica fed from stream offset `at` on: the bytes from there stay
    /// held for it (see [`REPLICA_BUFFER_LIMIT`]) until [`Backlog::fed`]
    /// says they were sent; returns the feed's number.
    fn hold(&mut self, at: u64) -> u64 {
        let id = self.next_feed;
        self.next_feed += 1;
        self.feeds.insert(id, at);
        id
    }

    /// Feed `id` has sent the stream up to offset `at`.
    fn fed(&mut self, id: u64, at: u64) {
        self.feeds.insert(id, at);
        // What it sent need not stay, beyond the backlog's own size.
        let behind = (self.feeds.values().min()).map_or(0, |&at| (self.end - at) as usize);
        let over = self.ring.len().saturating_sub(self.size.max(behind));
        self.ring.drain(..over);
    }

    /// The stream offset of the first byte held.
    fn start(&self) -> u64 {
        self.end - self.ring.len() as u64
    }

    /// The bytes from stream offset `from` on (at most `max`), if still
    /// held.
    fn since(&self, from: u64, max: usize) -> Option<Vec<u8>> {
        if from < self.start() || from > self.end {
            return None;
        }
        let at = (from - self.start()) as usize;
        let n = (self.ring.len() - at).min(max);
        Some(self.ring.range(at..at + n).copied().collect())
    }
}

// ---------------------------------------------------------------------
// Commands: REPLICAOF, ROLE, and INFO's section.

/// `REPLICAOF host port | NO ONE` (and SLAVEOF).
pub(super) fn replicaof(c: &mut Conn, sh: &Shared, args: &[&[u8]]) {
    let (host, port) = (args[1], args[2]);
    if host.eq_ignore_ascii_case(b"no") && port.eq_ignore_ascii_case(b"one") {
        promote(sh);
        return c.reply(|o| resp::simple(o, strings::OK));
    }
    let Some(port) = resp::parse_redis_int(port).and_then(|p| u16::try_from(p).ok()) else {
        return c.reply(|o| resp::error(o, strings::INVALID_MASTER_PORT));
    };
    let host = String::from_utf8_lossy(host).into_owned();
    {
        let role = sh.repl.role();
        if let Role::Replica(l) = &*role {
            if l.host.eq_ignore_ascii_case(&host) && l.port == port {
                return c.reply(|o| resp::simple(o, strings::ALREADY_CONNECTED));
            }
        }
    }
    follow(sh, host, port);
    c.reply(|o| resp::simple(o, strings::OK));
}

/// Where a replica keeps the stream id and offset it has applied, to
/// resume after a restart (`DIR/replication`: "REPLID OFFSET").
const STATE_FILE: &str = "replication";

/// At start: the stream position a replica left in the store's directory,
/// if it starts as a replica again (`--replicaof`). The file is removed
/// either way: a server that starts as a primary takes writes of its own,
/// after which that position no longer describes its data.
pub(super) fn saved_position(dir: &std::path::Path, replica: bool) -> Option<(String, u64)> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).ok();
    if !replica {
        let _ = std::fs::remove_file(&path);
    }
    let text = text?;
    let (id, off) = text.trim().split_once(' ')?;
    (id.len() == 40).then_some(())?;
    Some((id.to_string(), off.parse().ok()?))
}

/// Saves the stream position a replica has applied (written to a
/// temporary file, then renamed over the old one).
fn save_position(dir: &std::path::Path, replid: &str, offset: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    std::fs::write(&tmp, format!("{replid} {offset}\n"))?;
    std::fs::rename(&tmp, dir.join(STATE_FILE))
}

/// Ends the link to the primary, if there is one (the role changed).
fn cut_link(repl: &Repl) {
    let sock = repl
        .link_socket
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(s) = sock {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

/// Becomes a replica of `host:port` (from REPLICAOF or `--replicaof`):
/// the replicas of this server are dropped (they sync again), and a link
/// thread starts.
pub(super) fn follow(sh: &Shared, host: String, port: u16) {
    follow_from(sh, host, port, None)
}

/// [`follow`], resuming from `from` (the saved stream position) if the
/// primary still holds it.
pub(super) fn follow_from(sh: &Shared, host: String, port: u16, from: Option<(String, u64)>) {
    let Some(sh) = sh.repl.server() else {
        return;
    };
    tracing::info!(%host, port, "becoming a replica");
    let mut role = sh.repl.role();
    // A replica that changes primaries keeps its position: a primary
    // promoted from the same old one continues it (PSYNC2). A primary
    // that becomes a replica syncs in full: writes of its own may not be
    // in its stream yet.
    let from = from.or_else(|| match &*role {
        Role::Replica(l) if l.replid != "?" => Some((l.replid.clone(), l.offset)),
        _ => None,
    });
    // Under the role's lock, as a link thread checks it.
    let generation = sh.repl.generation.fetch_add(1, SeqCst) + 1;
    *role = Role::Replica(Link {
        host,
        port,
        state: LinkState::Connect,
        offset: from.as_ref().map_or(0, |f| f.1),
        replid: from.map_or_else(|| "?".into(), |f| f.0),
        last_io: None,
        down_since: None,
        generation,
    });
    sh.repl.replica.store(true, SeqCst);
    cut_link(&sh.repl);
    drop(role);
    primary::drop_all(&sh);
    let spawned = std::thread::Builder::new()
        .name("repl-link".into())
        .spawn(move || replica::run(sh, generation));
    if let Err(e) = spawned {
        tracing::error!("starting the replication link: {e}");
    }
}

/// `REPLICAOF NO ONE`: the link stops, and this server takes writes and
/// starts a stream of its own (a new id: its replicas sync in full).
fn promote(sh: &Shared) {
    let mut role = sh.repl.role();
    if *role == Role::Primary {
        return;
    }
    tracing::info!("promoted: a primary now");
    sh.repl.generation.fetch_add(1, SeqCst);
    cut_link(&sh.repl);
    *role = Role::Primary;
    sh.repl.replica.store(false, SeqCst);
    drop(role);
    let _ = std::fs::remove_file(sh.path.join(STATE_FILE));
    // PSYNC2: the stream followed goes on under a new id, so that the
    // other replicas of the old primary resume here.
    let mut b = sh.repl.backlog();
    b.replid2 = std::mem::replace(&mut b.replid, new_replid());
    b.second_offset = b.end as i64 + 1;
    if !b.ring.is_empty() {
        sh.repl.feeding.store(true, SeqCst);
    }
}

/// `ROLE`, as Redis answers it.
pub(super) fn role(c: &mut Conn, sh: &Shared) {
    let role = sh.repl.role().clone();
    match role {
        Role::Primary => {
            let (_, offset) = sh.repl.position();
            let replicas = sh.repl.replicas().clone();
            let online: Vec<_> = replicas.iter().filter(|r| r.online()).collect();
            c.reply(|o| {
                resp::array(o, 3);
                resp::bulk(o, b"master");
                resp::int(o, offset as i64);
                resp::array(o, online.len());
                for r in online {
                    resp::array(o, 3);
                    resp::bulk(o, r.ip.as_bytes());
                    resp::bulk(o, r.port.to_string().as_bytes());
                    resp::bulk(o, r.acked().to_string().as_bytes());
                }
            })
        }
        Role::Replica(l) => c.reply(|o| {
            resp::array(o, 5);
            resp::bulk(o, b"slave");
            resp::bulk(o, l.host.as_bytes());
            resp::int(o, l.port as i64);
            resp::bulk(o, l.state.name().as_bytes());
            let offset = if l.state == LinkState::Connected {
                l.offset as i64
            } else {
                -1
            };
            resp::int(o, offset);
        }),
    }
}

/// INFO's `# Replication`, with Redis 7's fields.
pub(super) fn info(sh: &Shared, s: &mut String) {
    let role = sh.repl.role().clone();
    let replicas = sh.repl.replicas().clone();
    let listed: Vec<_> = replicas.iter().filter(|r| !r.gone()).collect();
    let (replid, end, start, histlen, replid2, second) = {
        let b = sh.repl.backlog();
        let (id2, second) = (b.replid2.clone(), b.second_offset);
        (
            b.replid.clone(),
            b.end,
            b.start(),
            b.ring.len(),
            id2,
            second,
        )
    };
    s.push_str("# Replication\r\n");
    match &role {
        Role::Primary => s.push_str("role:master\r\n"),
        Role::Replica(l) => {
            let up = l.state == LinkState::Connected;
            let io = match l.last_io {
                Some(t) if up => t.elapsed().as_secs() as i64,
                _ => -1,
            };
            let _ = write!(
                s,
                "role:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\n\
                 master_last_io_seconds_ago:{io}\r\nmaster_sync_in_progress:{}\r\n\
                 slave_read_repl_offset:{}\r\nslave_repl_offset:{}\r\n",
                l.host,
                l.port,
                if up { "up" } else { "down" },
                u8::from(l.state == LinkState::Sync),
                l.offset,
                l.offset,
            );
            if !up {
                let down = l.down_since.map_or(-1, |t| t.elapsed().as_secs() as i64);
                let _ = write!(s, "master_link_down_since_seconds:{down}\r\n");
            }
            let _ = write!(
                s,
                "slave_priority:100\r\nslave_read_only:{}\r\nreplica_announced:1\r\n",
                u8::from(sh.repl.read_only.load(Relaxed)),
            );
        }
    }
    let _ = write!(s, "connected_slaves:{}\r\n", listed.len());
    for (i, r) in listed.iter().enumerate() {
        let _ = write!(
            s,
            "slave{i}:ip={},port={},state={},offset={},lag={}\r\n",
            r.ip,
            r.port,
            if r.online() { "online" } else { "send_bulk" },
            r.acked(),
            r.lag_secs()
        );
    }
    let (offset, replid) = match &role {
        // A replica shows the primary's stream, as Redis's does.
        Role::Replica(l) => (l.offset, l.replid.clone()),
        Role::Primary => (end, replid),
    };
    let feeding = sh.repl.feeding();
    let _ = write!(
        s,
        "master_failover_state:no-failover\r\nmaster_replid:{replid}\r\n\
         master_replid2:{replid2}\r\n\
         master_repl_offset:{offset}\r\nsecond_repl_offset:{second}\r\nrepl_backlog_active:{}\r\n\
         repl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{}\r\n\r\n",
        u8::from(feeding),
        sh.repl.backlog_size,
        if feeding { start + 1 } else { 0 },
        histlen,
    );
}

/// Waits on the backlog for bytes past `from`, at most `timeout`; the
/// stream's end.
fn wait_for_bytes(repl: &Repl, from: u64, timeout: Duration) -> u64 {
    let b = repl.backlog();
    if b.end > from {
        return b.end;
    }
    let (b, _) = (repl.grew)
        .wait_timeout_while(b, timeout, |b| b.end <= from)
        .unwrap_or_else(|e| e.into_inner());
    b.end
}

// ---------------------------------------------------------------------
// WAIT and min-replicas-to-write.

impl Repl {
    /// Whether this replica is loading a full copy (INFO's `loading`).
    pub(super) fn loading(&self) -> bool {
        self.loading.load(Relaxed)
    }
}

impl Repl {
    /// Replicas that acknowledged stream offset `offset`.
    fn acked(&self, offset: u64) -> usize {
        (self.replicas().iter())
            .filter(|r| r.online() && r.acked() >= offset)
            .count()
    }

    /// A write is refused for want of replicas (`--min-replicas-to-write`
    /// online replicas that acknowledged within `--min-replicas-max-lag`
    /// seconds).
    pub(super) fn too_few_replicas(&self) -> bool {
        if self.min_replicas == 0 || self.replica.load(Relaxed) {
            return false;
        }
        let good = (self.replicas().iter())
            .filter(|r| r.online() && r.lag_secs() <= self.min_replicas_max_lag)
            .count();
        good < self.min_replicas
    }

    fn waits(&self) -> MutexGuard<'_, Vec<Wait>> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `WAIT numreplicas timeout`: the number of replicas that acknowledged
/// the stream up to its current end (which holds every write this client
/// was answered), once `numreplicas` have or the timeout (ms, 0: none)
/// passes. The replicas are asked for their offset at once (`REPLCONF
/// GETACK *` in the stream).
pub(super) fn wait(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let sh = router.shared;
    if sh.repl.replica.load(Relaxed) {
        return c.reply(|o| resp::error(o, strings::WAIT_ON_REPLICA));
    }
    let Some(replicas) = resp::parse_redis_int(args[1]) else {
        return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER));
    };
    let Some(timeout) = resp::parse_redis_int(args[2]) else {
        return c.reply(|o| resp::error(o, strings::TIMEOUT_NOT_INTEGER));
    };
    if timeout < 0 {
        return c.reply(|o| resp::error(o, strings::TIMEOUT_NEGATIVE));
    }
    // The writes this client was answered may still wait for their commit
    // (under async durability) before they are in the stream.
    let queued = sh.repl.queued_marks();
    let offset = sh
        .repl
        .queued_settled(&queued)
        .then(|| sh.repl.position().1);
    let acked = offset.map_or(0, |o| sh.repl.acked(o));
    // Inside EXEC, as Redis: at once.
    if offset.is_some() && acked as i64 >= replicas || c.multi.is_some() || router.capturing() {
        return c.reply(|o| resp::int(o, acked as i64));
    }
    let Some(server) = sh.repl.server() else {
        return c.reply(|o| resp::int(o, acked as i64));
    };
    sh.repl.waiter_started.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("repl-wait".into())
            .spawn(move || answer_waits(&server));
        if let Err(e) = spawned {
            tracing::error!("starting WAIT's thread: {e}");
        }
    });
    let id = c.expect(1, None);
    router.awaits_elsewhere();
    sh.repl.waits().push(Wait {
        to: c.me,
        id,
        offset,
        queued,
        replicas: replicas as usize,
        deadline: (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout as u64)),
    });
    sh.repl.waiting.notify_all();
    if offset.is_some() {
        sh.repl.getack();
    }
}

impl Repl {
    /// Asks the replicas for their offset at once (`REPLCONF GETACK *` in
    /// the stream).
    fn getack(&self) {
        if self.feeding() {
            let mut getack = Vec::new();
            resp::encode::command(&mut getack, &[b"REPLCONF", b"GETACK", b"*"]);
            self.backlog().append(&getack);
            self.grew.notify_all();
        }
    }
}

/// How often pending WAITs are looked at.
const WAIT_TICK: Duration = Duration::from_millis(5);

/// Answers WAITs as replicas acknowledge, or at their deadlines.
fn answer_waits(sh: &Shared) {
    loop {
        let mut waits = sh.repl.waits();
        if waits.is_empty() {
            waits = (sh.repl.waiting)
                .wait_timeout(waits, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let now = Instant::now();
        let mut done = Vec::new();
        let mut ask = false;
        waits.retain_mut(|w| {
            if w.offset.is_none() && sh.repl.queued_settled(&w.queued) {
                w.offset = Some(sh.repl.position().1);
                ask = true;
            }
            let acked = w.offset.map_or(0, |o| sh.repl.acked(o));
            let over = w.deadline.is_some_and(|d| now >= d);
            if w.offset.is_some() && acked >= w.replicas || over {
                done.push((w.to, w.id, acked));
                return false;
            }
            true
        });
        drop(waits);
        if ask {
            sh.repl.getack();
        }
        for (to, id, acked) in done {
            let t = &sh.conns[to.thread as usize];
            t.responses.push(Response {
                to,
                id,
                part: 0,
                reply: Reply::Int(acked as i64),
            });
            t.ring();
        }
        std::thread::sleep(WAIT_TICK);
    }
}

/// Why a command is refused here, if it is: one that needs the data set
/// while a full copy loads, or a write on a read-only replica (but not
/// from its primary's link), or too few good replicas.
pub(super) fn refusal(
    sh: &Shared,
    c: &Conn,
    spec: &super::table::Spec,
    args: &[&[u8]],
) -> Option<&'static str> {
    if sh.repl.loading.load(Relaxed) && !c.info.has(super::clients::MASTER) {
        let meta = super::table::meta_of(spec.name.as_bytes())?;
        // A container's flags are its subcommands' (CONFIG REWRITE and
        // CLIENT KILL run while loading, as in Redis; Sentinel sends them
        // in one MULTI with REPLICAOF, which starts the loading).
        let meta = (args.get(1).filter(|_| !meta.subcommands.is_empty()))
            .and_then(|sub| super::table::subcommand(meta, sub))
            .unwrap_or(meta);
        if !meta.flags.contains(&"loading") {
            return Some(strings::LOADING);
        }
    }
    let replica_refuses = sh.repl.refuses_writes();
    let too_few = sh.repl.min_replicas > 0;
    if !replica_refuses && !too_few {
        return None;
    }
    let meta = super::table::meta_of(spec.name.as_bytes())?;
    if !meta.flags.contains(&"write") || c.info.has(super::clients::MASTER) {
        return None;
    }
    if replica_refuses {
        return Some(strings::READONLY);
    }
    sh.repl.too_few_replicas().then_some(strings::NOREPLICAS)
}
