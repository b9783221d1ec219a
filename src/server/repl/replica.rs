//! A replica's link to its primary: Redis's handshake (PING, REPLCONF
//! listening-port and capa, PSYNC), then a full copy (its records handed
//! to the pollers in batches, without the command path) or a resume,
//! then the stream, applied through an in-process connection flagged as
//! the primary's. The offset acknowledged to the primary (REPLCONF ACK) is
//! that of the last command the store answered, so under sync durability
//! an acknowledged write is on this server's device.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::Shared;
use super::local::Local;
use super::reader::Reader;
use super::{LinkState, Role, COPY_KEYS_CAPA, STREAM_CAPA};
use crate::format::{record_len, SEGMENT_HEADER};
use crate::index::KeyHash;
use crate::resp;
use crate::resp::Value;
use crate::server::msg::{CopyBatch, CopyDone, CopyRecord, Op, Request};

/// Wait between attempts to reach the primary.
const RETRY: Duration = Duration::from_secs(1);
/// How long the handshake's replies may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the replica acknowledges its offset.
const ACK_EVERY: Duration = Duration::from_secs(1);

/// Runs the link of role generation `generation` until the role changes.
pub(super) fn run(sh: Arc<Shared>, generation: u64) {
    let current = || sh.repl.generation.load(SeqCst) == generation;
    while current() {
        set_state(&sh, generation, LinkState::Connecting);
        match sync(&sh, generation) {
            Ok(()) => return,
            Err(e) => {
                let (host, port) = match &*sh.repl.role() {
                    Role::Replica(l) => (l.host.clone(), l.port),
                    Role::Primary => return,
                };
                if e.kind() == io::ErrorKind::InvalidData && current() {
                    // What came is not the stream (corrupt, cut inside a
                    // value the length prefix promised, or the primary
                    // asked): nothing of it was applied, and the next sync
                    // is a full copy.
                    forget_position(&sh, generation);
                }
                if current() {
                    tracing::warn!(%host, port, "replication link: {e}; retrying in 1 s");
                }
            }
        }
        with_link(&sh, generation, |l| {
            if l.state == LinkState::Connected {
                l.down_since = Some(Instant::now());
            }
            l.state = LinkState::Connect;
        });
        std::thread::sleep(RETRY);
    }
}

/// The next sync is a full copy: the position followed is forgotten, here
/// and in the store's directory.
fn forget_position(sh: &Shared, generation: u64) {
    with_link(sh, generation, |l| {
        l.replid = "?".into();
        l.offset = 0;
    });
    let _ = std::fs::remove_file(sh.path.join(super::STATE_FILE));
}

/// An error that makes the next sync a full copy.
fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Whether `args` is a command the stream carries, in its shape: `SET key
/// value [PXAT ms]`, `DEL key`, `PEXPIREAT key ms` and `PERSIST key` (a
/// value too large to send again: its expiry alone changed; both set an
/// absolute state, so replaying them is safe), `SETRANGE key offset bytes`
/// (part of such a value changed: those bytes are set whatever the value
/// held, so replaying it is safe too), `MULTI`, `EXEC`,
/// `FLUSHALL`, `PING`, or `REPLCONF …` (`in_copy`: only SET). Anything else is not nvkv's stream,
/// and is not applied.
fn stream_command(args: &[Vec<u8>], in_copy: bool) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    let is = |w: &[u8]| name.eq_ignore_ascii_case(w);
    if is(b"SET") {
        return match args.len() {
            3 => true,
            5 => {
                args[3].eq_ignore_ascii_case(b"PXAT")
                    && resp::parse_redis_int(&args[4]).is_some_and(|t| t > 0)
            }
            _ => false,
        };
    }
    if in_copy {
        return false;
    }
    match args.len() {
        1 => is(b"MULTI") || is(b"EXEC") || is(b"FLUSHALL") || is(b"PING"),
        2 => is(b"DEL") || is(b"PERSIST"),
        3 if is(b"PEXPIREAT") => resp::parse_redis_int(&args[2]).is_some_and(|t| t > 0),
        4 if is(b"SETRANGE") => resp::parse_redis_int(&args[2]).is_some_and(|t| t >= 0),
        _ => is(b"REPLCONF"),
    }
}

/// A command of the stream, or why the stream is not one.
fn command_of(v: Value, in_copy: bool) -> io::Result<Vec<Vec<u8>>> {
    let args = match v {
        Value::Error(e) => {
            return Err(corrupt(format!(
                "the primary asks for a full copy: {}",
                String::from_utf8_lossy(&e)
            )))
        }
        v => v.into_args(),
    };
    match args {
        Some(args) if stream_command(&args, in_copy) => Ok(args),
        _ => Err(corrupt(
            "the stream holds something not nvkv's stream: dropped",
        )),
    }
}

/// Changes the link's state, if the role is still this link's.
fn set_state(sh: &Shared, generation: u64, state: LinkState) {
    if let Role::Replica(l) = &mut *sh.repl.role() {
        if l.generation == generation {
            l.state = state;
        }
    }
}

/// Updates the link under the role's lock, if still this link's.
fn with_link(sh: &Shared, generation: u64, f: impl FnOnce(&mut super::Link)) {
    if let Role::Replica(l) = &mut *sh.repl.role() {
        if l.generation == generation {
            f(l);
        }
    }
}

/// One connection to the primary: returns `Ok` when the role changed,
/// `Err` when the link failed.
fn sync(sh: &Shared, generation: u64) -> io::Result<()> {
    let (host, port, replid, offset) = match &*sh.repl.role() {
        Role::Replica(l) => (l.host.clone(), l.port, l.replid.clone(), l.offset),
        Role::Primary => return Ok(()),
    };
    let addr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let sock = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)?;
    sock.set_nodelay(true)?;
    {
        // Under the role's lock: a role change after this cuts it.
        let role = sh.repl.role();
        if sh.repl.generation.load(SeqCst) != generation {
            return Ok(());
        }
        *sh.repl
            .link_socket
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(sock.try_clone()?);
        drop(role);
    }
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut to_primary = sock.try_clone()?;
    let mut from = Reader::new(sock.try_clone()?);
    let mut ask = |args: &[&[u8]], from: &mut Reader<TcpStream>| -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        resp::encode::command(&mut out, args);
        to_primary.write_all(&out)?;
        from.line()
    };
    ask(&[b"PING"], &mut from)?;
    let me = sh.addr.port().to_string();
    ask(&[b"REPLCONF", b"listening-port", me.as_bytes()], &mut from)?;
    let capa = [b"REPLCONF" as &[u8], b"capa", b"eof", b"capa", b"psync2"];
    let ours = [b"capa" as &[u8], STREAM_CAPA.as_bytes()];
    let ours = [&ours[..], &[b"capa", COPY_KEYS_CAPA.as_bytes()]].concat();
    ask(&[&capa[..], &ours[..]].concat(), &mut from)?;
    let want = if replid == "?" {
        "-1".to_string()
    } else {
        (offset + 1).to_string()
    };
    let mut psync = Vec::new();
    resp::encode::command(&mut psync, &[b"PSYNC", replid.as_bytes(), want.as_bytes()]);
    to_primary.write_all(&psync)?;
    // A Redis primary sends newlines while it prepares its answer.
    from.peek_past_newlines()?;
    let answer = from.line()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    // A full copy's keys may come slower than the handshake's replies.
    sock.set_read_timeout(Some(super::LINK_TIMEOUT))?;
    let mut words = answer.split(' ');
    let mut local = Local::open(sh, true)?;
    let start = match (words.next(), words.next(), words.next()) {
        (Some("FULLRESYNC"), Some(id), Some(off)) => {
            let off: u64 = off
                .parse()
                .map_err(|_| io::Error::other(format!("PSYNC answered {answer}")))?;
            // An RDB payload (`$`): the primary is a Redis, not an nvkv.
            if from.peek_past_newlines()? == b'$' {
                return Err(io::Error::other(
                    "the primary sent an RDB file: it is not an nvkv server speaking \
                     the replication stream this replica reads",
                ));
            }
            set_state(sh, generation, LinkState::Sync);
            tracing::info!(%host, port, replid = id, offset = off, "full copy from the primary");
            // Until the copy is through, the store follows no stream.
            forget_position(sh, generation);
            let loading = Loading::start(&sh.repl);
            match local.call(&[b"FLUSHALL"])? {
                Value::Simple(_) => {}
                v => return Err(io::Error::other(format!("emptying the store: {v:?}"))),
            }
            let keys = load_copy(sh, &mut local, &mut from)?;
            drop(loading);
            sh.repl.mirror_from(id, off);
            tracing::info!(keys, "full copy applied");
            with_link(sh, generation, |l| {
                l.replid = id.to_string();
                l.offset = off;
            });
            off
        }
        (Some("CONTINUE"), id, _) => {
            tracing::info!(%host, port, offset, "resuming the primary's stream");
            sh.repl.mirror_from(&replid, offset);
            if let Some(id) = id.filter(|id| id.len() == 40 && *id != replid) {
                // A promoted primary continues our stream under its id.
                sh.repl.mirror_renamed(id);
                with_link(sh, generation, |l| l.replid = id.to_string());
            }
            offset
        }
        _ => return Err(io::Error::other(format!("PSYNC answered {answer}"))),
    };
    set_state(sh, generation, LinkState::Connected);
    stream(sh, generation, local, from, to_primary_ack(&sock)?, start)
}

fn to_primary_ack(sock: &TcpStream) -> io::Result<TcpStream> {
    sock.set_read_timeout(Some(ACK_EVERY / 4))?;
    sock.try_clone()
}

/// A full copy loads while this lives (clients get -LOADING).
struct Loading<'a>(&'a super::Repl);

impl<'a> Loading<'a> {
    fn start(repl: &'a super::Repl) -> Self {
        repl.loading.store(true, SeqCst);
        Loading(repl)
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.0.loading.store(false, SeqCst);
    }
}

/// Bytes of the copy's stream in one batch (shared by the pollers with
/// keys in it).
const BATCH_BYTES: usize = 256 << 10;
/// Batches a poller may hold unanswered (being written or waiting for
/// their commits) before the link waits for it: the link parses ahead
/// while the pollers write, their group commits are large, and the copy's
/// memory stays bounded.
const BATCHES_AHEAD: usize = 64;
/// Longest the link waits for a poller to answer a batch.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A buffer for a stretch of the stream: a batch's bytes, and what the
/// link reads after them until the batch is cut.
fn fresh_data() -> Vec<u8> {
    Vec::with_capacity(BATCH_BYTES + (256 << 10))
}

/// Room for a batch's records (of 1 KiB and more).
fn fresh_recs() -> Vec<CopyRecord> {
    Vec::with_capacity((BATCH_BYTES + (64 << 10)) >> 10)
}

/// The full copy on its way to the pollers: the records of the stretch
/// of the stream read since the last batch, per poller, and how many
/// batches each has not answered yet. The records point into the link's
/// buffer, which becomes the batches' data as it is (no copy of a key or
/// a value on the link).
struct CopyLoad<'a> {
    sh: &'a Shared,
    filling: Vec<Vec<CopyRecord>>,
    /// Answered batches' buffers, filled again (fresh memory costs the
    /// kernel's zeroing of its pages).
    spare_data: Vec<Vec<u8>>,
    spare_recs: Vec<Vec<CopyRecord>>,
    ahead: Vec<usize>,
    done: mpsc::Sender<CopyDone>,
    answers: mpsc::Receiver<CopyDone>,
    /// Records the pollers could not write, and the first one's error.
    failed: u64,
    first: Option<String>,
    /// Records longer than this are large values (written in pieces):
    /// they go through the command path.
    largest: u64,
}

impl<'a> CopyLoad<'a> {
    fn new(sh: &'a Shared) -> Self {
        let (done, answers) = mpsc::channel();
        let pollers = sh.pollers.len();
        // As the keyspace's `is_large`, with the largest block a device
        // may have: a value near the limit goes the slower, safe way.
        let block = (sh.sb.block_size as u64).max(4096);
        CopyLoad {
            sh,
            filling: (0..pollers).map(|_| fresh_recs()).collect(),
            spare_data: Vec::new(),
            spare_recs: Vec::new(),
            ahead: vec![0; pollers],
            done,
            answers,
            failed: 0,
            first: None,
            largest: sh.sb.segment_size as u64 - SEGMENT_HEADER as u64 - block,
        }
    }

    /// Whether a record of `key` and `value` is a large value's.
    fn is_large(&self, key: &[u8], value: &[u8]) -> bool {
        record_len(key.len(), value.len()) > self.largest
    }

    /// Adds a key, whose key and value start at `key_at` and `value_at`
    /// in the link's buffer, to its poller's records.
    fn add(&mut self, key: &[u8], key_at: usize, value: &[u8], value_at: usize, expire_ms: u64) {
        let hash = KeyHash::of(key);
        let pid = hash.partition(self.sh.sb.partitions);
        let p = self.sh.poller_of(pid);
        self.filling[p].push(CopyRecord {
            hash,
            pid,
            key_at: key_at as u32,
            value_at: value_at as u32,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            expire_ms,
        });
    }

    /// Cuts a batch: the bytes `from` has taken become its data, and each
    /// poller with records in them gets them, once it has fewer than
    /// [`BATCHES_AHEAD`] to write.
    fn cut(&mut self, from: &mut Reader<TcpStream>) -> io::Result<()> {
        let fresh = self.spare_data.pop().unwrap_or_else(fresh_data);
        let data = Arc::new(from.take_parsed(fresh));
        for p in 0..self.filling.len() {
            if self.filling[p].is_empty() {
                continue;
            }
            while self.ahead[p] >= BATCHES_AHEAD {
                self.answer()?;
            }
            let next = self.spare_recs.pop().unwrap_or_else(fresh_recs);
            let recs = std::mem::replace(&mut self.filling[p], next);
            let (hash, pid) = (recs[0].hash, recs[0].pid);
            self.push(p, hash, pid, Arc::clone(&data), recs, 0)?;
        }
        Ok(())
    }

    /// Has every poller make room in its index for its share of `keys`
    /// (the copy's key count, which its primary announced): a batch
    /// without records.
    fn reserve(&mut self, keys: u64) -> io::Result<()> {
        let partitions = self.sh.sb.partitions;
        for p in 0..self.sh.pollers.len() {
            let Some(pid) = (0..partitions).find(|&pid| self.sh.poller_of(pid) == p) else {
                continue;
            };
            while self.ahead[p] >= BATCHES_AHEAD {
                self.answer()?;
            }
            let hash = KeyHash::of(b"");
            self.push(p, hash, pid, Arc::default(), Vec::new(), keys)?;
        }
        Ok(())
    }

    /// Hands poller `p` a batch.
    fn push(
        &mut self,
        p: usize,
        hash: KeyHash,
        pid: u32,
        data: Arc<Vec<u8>>,
        recs: Vec<CopyRecord>,
        reserve: u64,
    ) -> io::Result<()> {
        let batch = CopyBatch {
            data,
            recs,
            done: self.done.clone(),
            reserve,
        };
        let mut req = Request::internal(pid, hash, Op::Load(Box::new(batch)));
        let poller = &self.sh.pollers[p];
        while let Err(r) = poller.inbox.push(req) {
            // The ring is full: the poller has work enough.
            req = r;
            poller.ring();
            std::thread::sleep(Duration::from_micros(100));
        }
        poller.ring();
        self.ahead[p] += 1;
        Ok(())
    }

    /// Waits for one batch's answer.
    fn answer(&mut self) -> io::Result<()> {
        let d = self
            .answers
            .recv_timeout(BATCH_TIMEOUT)
            .map_err(|_| io::Error::other("the store's answers stopped"))?;
        self.ahead[d.poller] -= 1;
        let (data, recs) = d.buffers;
        if recs.capacity() > 0 {
            self.spare_recs.push(recs);
        }
        // The last poller to answer a batch's data brings it back whole.
        if let Some(data) = Arc::into_inner(data).filter(|d| d.capacity() > 0) {
            self.spare_data.push(data);
        }
        self.failed += d.failed;
        if self.first.is_none() {
            self.first = d.first;
        }
        Ok(())
    }

    /// Sends what `from` holds and waits until every batch is written.
    fn finish(&mut self, from: &mut Reader<TcpStream>) -> io::Result<()> {
        self.cut(from)?;
        self.drain()
    }

    /// Waits until every batch sent is written.
    fn drain(&mut self) -> io::Result<()> {
        while self.ahead.iter().any(|&n| n > 0) {
            self.answer()?;
        }
        Ok(())
    }
}

/// A command of the copy.
enum CopyCommand {
    /// A SET of the copy's shape.
    Set,
    /// `REPLCONF COPY-KEYS n`: the keys the copy holds.
    Keys(u64),
    /// `REPLCONF SNAPSHOT-END`: the copy's end.
    End,
}

/// What a command of the copy, parsed in place (`args`: its arguments'
/// ranges in `cmd`), is; anything else is not nvkv's stream.
fn copy_set(cmd: &[u8], args: &[Range<usize>]) -> io::Result<CopyCommand> {
    let arg = |i: usize| &cmd[args[i].clone()];
    if args.len() == 2
        && arg(0).eq_ignore_ascii_case(b"REPLCONF")
        && arg(1).eq_ignore_ascii_case(b"SNAPSHOT-END")
    {
        return Ok(CopyCommand::End);
    }
    if args.len() == 3
        && arg(0).eq_ignore_ascii_case(b"REPLCONF")
        && arg(1).eq_ignore_ascii_case(b"COPY-KEYS")
    {
        return match resp::parse_redis_int(arg(2)) {
            Some(n) if n >= 0 => Ok(CopyCommand::Keys(n as u64)),
            _ => Err(corrupt("the copy's key count is not a count: dropped")),
        };
    }
    let set = match args.len() {
        3 => arg(0).eq_ignore_ascii_case(b"SET"),
        5 => {
            arg(0).eq_ignore_ascii_case(b"SET")
                && arg(3).eq_ignore_ascii_case(b"PXAT")
                && resp::parse_redis_int(arg(4)).is_some_and(|t| t > 0)
        }
        _ => false,
    };
    if set {
        Ok(CopyCommand::Set)
    } else {
        Err(corrupt(
            "the stream holds something not nvkv's stream: dropped",
        ))
    }
}

/// Applies the full copy (SETs until `REPLCONF SNAPSHOT-END`) without the
/// command path: each SET is checked and parsed once, in place in the
/// link's buffer, which becomes the data of batches for the pollers that
/// own its keys ([`CopyLoad`]); each poller appends its records to
/// its log (each key comes once in a copy, so the order of different
/// pollers' writes does not matter). A large value (written in pieces)
/// goes through the command path instead, over `local`. A poller answers
/// a batch once its records are durable; once every batch is answered, a
/// SAVE (for the large values, under async durability), so that the copy
/// is durable before the link reports it through. The number of keys.
fn load_copy(sh: &Shared, local: &mut Local, from: &mut Reader<TcpStream>) -> io::Result<u64> {
    let mut load = CopyLoad::new(sh);
    // The batches' keys and values stay where the link read them.
    from.hold(true);
    let copied = copy_into(&mut load, local, from);
    // A copy cut short still waits for its batches: nothing of it may be
    // written after the next copy's FLUSHALL.
    let drained = match &copied {
        Ok(_) => load.finish(from),
        Err(_) => load.drain(),
    };
    from.hold(false);
    let keys = copied?;
    drained?;
    if let Some(e) = load.first {
        return Err(io::Error::other(format!(
            "{} commands of the full copy failed (first: {e})",
            load.failed
        )));
    }
    match local.call(&[b"SAVE"])? {
        Value::Simple(_) => Ok(keys),
        v => Err(io::Error::other(format!("saving the full copy: {v:?}"))),
    }
}

/// Reads the copy into `load` until its end; the number of keys.
fn copy_into(
    load: &mut CopyLoad<'_>,
    local: &mut Local,
    from: &mut Reader<TcpStream>,
) -> io::Result<u64> {
    let mut args = Vec::new();
    let mut keys = 0u64;
    loop {
        let (mut end, mut counts) = (false, 0);
        let (_, n) = from.commands(&mut args, |at, cmd, args| {
            match copy_set(cmd, args)? {
                CopyCommand::Set => {}
                CopyCommand::Keys(n) => {
                    load.reserve(n)?;
                    counts += 1;
                    return Ok(true);
                }
                CopyCommand::End => {
                    end = true;
                    return Ok(false);
                }
            }
            let arg = |i: usize| &cmd[args[i].clone()];
            let (key, value) = (arg(1), arg(2));
            if load.is_large(key, value) {
                local.send(cmd)?;
                if let Value::Error(e) = local.replies.next()?.0 {
                    load.failed += 1;
                    load.first
                        .get_or_insert_with(|| String::from_utf8_lossy(&e).into_owned());
                }
            } else {
                // `copy_set` checked the expiry.
                let expire_ms = match args.len() {
                    5 => resp::parse_redis_int(arg(4)).unwrap_or_default() as u64,
                    _ => 0,
                };
                let (key_at, value_at) = (at + args[1].start, at + args[2].start);
                load.add(key, key_at, value, value_at, expire_ms);
            }
            Ok(true)
        })?;
        keys += n - counts;
        if from.taken() >= BATCH_BYTES {
            load.cut(from)?;
        }
        if end {
            from.next()?; // REPLCONF SNAPSHOT-END
            return Ok(keys);
        }
        if n == 0 {
            command_of(from.next()?.0, true)?;
            // A SET, but not as the copy sends them.
            return Err(corrupt(
                "the stream holds something not nvkv's stream: dropped",
            ));
        }
    }
}

/// Applies the stream from offset `start` until the link fails or the role
/// changes. A thread reads the store's answers: each command's end offset
/// becomes the applied offset when its answer comes (inside MULTI …
/// EXEC, only EXEC's).
fn stream(
    sh: &Shared,
    generation: u64,
    mut local: Local,
    mut from: Reader<TcpStream>,
    to_primary: TcpStream,
    start: u64,
) -> io::Result<()> {
    let applied = Arc::new(AtomicU64::new(start));
    let (tx, rx) = mpsc::channel::<Mark>();
    let to_primary = Arc::new(Mutex::new(to_primary));
    let answers = {
        let applied = Arc::clone(&applied);
        let to_primary = Arc::clone(&to_primary);
        let mut replies = Reader::new(local.writer()?);
        std::mem::swap(&mut replies, &mut local.replies);
        std::thread::Builder::new()
            .name("repl-apply".into())
            .spawn(move || {
                while let Ok(mark) = rx.recv() {
                    match replies.next() {
                        Ok((Value::Error(e), _)) => tracing::error!(
                            "applying the primary's stream: {}",
                            String::from_utf8_lossy(&e)
                        ),
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    match mark {
                        Mark::None => {}
                        Mark::Applied(at) => applied.store(at, Relaxed),
                        Mark::GetAck(at) => {
                            applied.store(at, Relaxed);
                            if ack(&to_primary, at).is_err() {
                                return;
                            }
                        }
                    }
                }
            })?
    };
    let result = apply(
        sh,
        generation,
        &mut local,
        &mut from,
        &to_primary,
        &tx,
        &applied,
        start,
    );
    drop(tx);
    let _ = local
        .writer()
        .map(|w| w.shutdown(std::net::Shutdown::Write));
    let _ = answers.join();
    let done = applied.load(Relaxed);
    let mut replid = None;
    with_link(sh, generation, |l| {
        l.offset = done;
        replid = Some(l.replid.clone());
    });
    if let Some(replid) = replid {
        if let Err(e) = super::save_position(&sh.path, &replid, done) {
            tracing::warn!("saving the replication position: {e}");
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn apply(
    sh: &Shared,
    generation: u64,
    local: &mut Local,
    from: &mut Reader<TcpStream>,
    to_primary: &Mutex<TcpStream>,
    tx: &mpsc::Sender<Mark>,
    applied: &AtomicU64,
    start: u64,
) -> io::Result<()> {
    let mut offset = start;
    let mut in_multi = false;
    let mut saved = u64::MAX;
    let mut last_ack = Instant::now() - ACK_EVERY;
    let mut last_heard = Instant::now();
    let mut out = Vec::new();
    loop {
        if sh.repl.generation.load(SeqCst) != generation {
            return Ok(());
        }
        if last_heard.elapsed() >= super::LINK_TIMEOUT {
            // The primary pings every PING_EVERY: the link is dead (a cut
            // that closed nothing).
            return Err(io::Error::other("the primary is silent: timeout"));
        }
        if last_ack.elapsed() >= ACK_EVERY {
            let done = applied.load(Relaxed);
            let mut replid = String::new();
            with_link(sh, generation, |l| {
                l.offset = done;
                replid = l.replid.clone();
            });
            if done != saved {
                if let Err(e) = super::save_position(&sh.path, &replid, done) {
                    tracing::warn!("saving the replication position: {e}");
                }
                saved = done;
            }
            ack(to_primary, done)?;
            last_ack = Instant::now();
        }
        let (v, n) = match from.next() {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        if sh.repl.generation.load(SeqCst) != generation {
            return Ok(());
        }
        last_heard = Instant::now();
        with_link(sh, generation, |l| l.last_io = Some(last_heard));
        offset += n as u64;
        let args = command_of(v, false)?;
        // Kept as the primary's stream: promoted, this server continues it.
        sh.repl.mirror(from.last(n));
        let name = args.first().map(Vec::as_slice).unwrap_or_default();
        out.clear();
        let mark = if name.eq_ignore_ascii_case(b"REPLCONF") {
            // Answered once every command before it is: a PING to the
            // store stands in its place.
            resp::encode::command(&mut out, &[b"PING"]);
            let getack = args
                .get(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"));
            match (in_multi, getack) {
                (true, _) => Mark::None,
                (false, true) => Mark::GetAck(offset),
                (false, false) => Mark::Applied(offset),
            }
        } else {
            let mark = if name.eq_ignore_ascii_case(b"MULTI") {
                in_multi = true;
                Mark::None
            } else if name.eq_ignore_ascii_case(b"EXEC") {
                in_multi = false;
                Mark::Applied(offset)
            } else if in_multi {
                Mark::None
            } else {
                Mark::Applied(offset)
            };
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            resp::encode::command(&mut out, &args);
            mark
        };
        tx.send(mark)
            .map_err(|_| io::Error::other("the store's answers stopped"))?;
        local.send(&out)?;
    }
}

/// What a command's answer from the store tells.
enum Mark {
    /// Nothing (a command inside MULTI … EXEC).
    None,
    /// The stream is applied up to this offset.
    Applied(u64),
    /// So is it, and the primary asked for an acknowledgement.
    GetAck(u64),
}

/// `REPLCONF ACK offset` to the primary.
fn ack(to_primary: &Mutex<TcpStream>, offset: u64) -> io::Result<()> {
    let mut out = Vec::new();
    let at = offset.to_string();
    resp::encode::command(&mut out, &[b"REPLCONF", b"ACK", at.as_bytes()]);
    to_primary
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .write_all(&out)
}
