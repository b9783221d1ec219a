//! The primary's side: REPLCONF and PSYNC on a client connection, which
//! then leaves its connection thread for a thread of its own that sends
//! the full copy (when the replica cannot resume) and the stream, and
//! reads the replica's acknowledgements.

use std::io::{self, BufWriter, IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::super::conn::Conn;
use super::super::strings;
use super::super::Shared;
use super::hello::Hello;
use super::local::Local;
use super::reader::Reader;
use super::{wait_for_bytes, Feed, Role, COPY_KEYS_CAPA, STREAM_CAPA, STREAM_CAPA_PREFIX};
use crate::index::KeyHash;
use crate::io::IoBuf;
use crate::resp;
use crate::resp::Value;
use crate::server::msg::CopyPart;
use crate::server::msg::{CopyAnswer, CopyAsk, Op, Request};

/// A replica served by this server.
pub(super) struct Replica {
    pub ip: String,
    pub port: u16,
    /// The stream offset it acknowledged (REPLCONF ACK).
    acked: AtomicU64,
    /// When it last acknowledged, ms since `since`.
    ack_ms: AtomicU64,
    since: Instant,
    /// The full copy is done: it follows the stream.
    online: AtomicBool,
    /// The link is to end.
    gone: AtomicBool,
    sock: TcpStream,
}

impl Replica {
    pub(super) fn online(&self) -> bool {
        self.online.load(Relaxed) && !self.gone.load(Relaxed)
    }

    /// Its link has ended.
    pub(super) fn gone(&self) -> bool {
        self.gone.load(Relaxed)
    }

    pub(super) fn acked(&self) -> u64 {
        self.acked.load(Relaxed)
    }

    /// Seconds since its last acknowledgement.
    pub(super) fn lag_secs(&self) -> u64 {
        let now = self.since.elapsed().as_millis() as u64;
        now.saturating_sub(self.ack_ms.load(Relaxed)) / 1000
    }

    fn end(&self) {
        self.gone.store(true, Relaxed);
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// `REPLCONF option value …`: what a replica tells before PSYNC.
pub(in crate::server) fn replconf(c: &mut Conn, args: &[&[u8]]) {
    if args.len() % 2 == 0 {
        return c.reply(|o| resp::error(o, strings::SYNTAX));
    }
    let hello = c.repl.get_or_insert_with(Default::default);
    for pair in args[1..].chunks(2) {
        let (opt, val) = (pair[0], pair[1]);
        if opt.eq_ignore_ascii_case(b"listening-port") {
            match resp::parse_redis_int(val).and_then(|p| u16::try_from(p).ok()) {
                Some(p) => hello.port = p,
                None => return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
            }
        } else if opt.eq_ignore_ascii_case(b"ip-address") {
            hello.ip = Some(String::from_utf8_lossy(val).into_owned());
        } else if opt.eq_ignore_ascii_case(b"capa") {
            hello.nvkv |= val == STREAM_CAPA.as_bytes();
            hello.copy_keys |= val == COPY_KEYS_CAPA.as_bytes();
            if val.starts_with(STREAM_CAPA_PREFIX.as_bytes()) && val != STREAM_CAPA.as_bytes() {
                hello.other_stream = Some(val.to_vec());
            }
        } else if opt.eq_ignore_ascii_case(b"ack") || opt.eq_ignore_ascii_case(b"getack") {
            // Only on a replica's link, where no reply is given.
            return;
        } else {
            let msg = strings::unrecognized_replconf(opt);
            return c.reply(|o| resp::error(o, &msg));
        }
    }
    c.reply(|o| resp::simple(o, strings::OK));
}

/// `PSYNC replid offset`: from a replica that speaks nvkv's stream, the
/// connection is handed over to a thread of its own
/// ([`hand_over`]), which answers.
pub(in crate::server) fn psync(c: &mut Conn, sh: &Shared, args: &[&[u8]]) {
    let hello = c.repl.get_or_insert_with(Default::default);
    if !hello.nvkv {
        if let Some(theirs) = &hello.other_stream {
            let msg = strings::replica_other_stream(STREAM_CAPA, theirs);
            return c.reply(|o| resp::error(o, &msg));
        }
        return c.reply(|o| resp::error(o, strings::REPLICA_NOT_NVKV));
    }
    if let Role::Replica(l) = &*sh.repl.role() {
        if l.state != super::LinkState::Connected {
            return c.reply(|o| resp::error(o, strings::NOMASTERLINK));
        }
        // Chained replicas are not served yet.
        return c.reply(|o| resp::error(o, strings::REPLICA_NO_SUBREPLICAS));
    }
    let Some(offset) = resp::parse_redis_int(args[2]) else {
        return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER));
    };
    hello.psync = Some((String::from_utf8_lossy(args[1]).into_owned(), offset));
    c.closing = true;
}

/// Takes over a connection whose PSYNC came (`sock`, a duplicate of its
/// descriptor; `peer` its address) and serves the replica on a thread of
/// its own.
pub(in crate::server) fn hand_over(sh: &Shared, sock: TcpStream, peer: &str, hello: Hello) {
    let Some(sh) = sh.repl.server() else {
        return;
    };
    let sh = &sh;
    let ip = hello
        .ip
        .clone()
        .unwrap_or_else(|| match peer.rsplit_once(':') {
            Some((ip, _)) => ip.trim_matches(['[', ']']).to_string(),
            None => peer.to_string(),
        });
    let (sock, reader) = match sock
        .set_nonblocking(false)
        .and_then(|()| sock.try_clone())
        .and_then(|r| Ok((sock.try_clone()?, r)))
    {
        Ok(s) => s,
        Err(e) => return tracing::warn!("serving a replica: {e}"),
    };
    let r = Arc::new(Replica {
        ip,
        port: hello.port,
        acked: AtomicU64::new(0),
        ack_ms: AtomicU64::new(0),
        since: Instant::now(),
        online: AtomicBool::new(false),
        gone: AtomicBool::new(false),
        sock: reader,
    });
    sh.repl.replicas().push(Arc::clone(&r));
    let (sh2, r2) = (Arc::clone(sh), Arc::clone(&r));
    let spawned = std::thread::Builder::new()
        .name("repl-feed".into())
        .spawn(move || {
            let acks = r2.sock.try_clone().map(|s| {
                let r3 = Arc::clone(&r2);
                std::thread::Builder::new()
                    .name("repl-acks".into())
                    .spawn(move || read_acks(&r3, s))
            });
            if let Err(e) = feed(&sh2, &r2, sock, hello) {
                tracing::info!(replica = %format!("{}:{}", r2.ip, r2.port), "replica link ended: {e}");
            }
            r2.end();
            if let Ok(Ok(t)) = acks {
                let _ = t.join();
            }
            sh2.repl.replicas().retain(|x| !Arc::ptr_eq(x, &r2));
        });
    if let Err(e) = spawned {
        tracing::error!("starting a replica's feed: {e}");
        r.end();
        sh.repl.replicas().retain(|x| !Arc::ptr_eq(x, &r));
    }
}

/// Ends every replica's link (this server becomes a replica).
pub(super) fn drop_all(sh: &Shared) {
    for r in sh.repl.replicas().iter() {
        r.end();
    }
}

/// The error a primary puts in the stream to make its replica forget its
/// position and sync again in full.
pub(super) const RESYNC: &str = "FULLRESYNC-NEEDED";

/// Most stream bytes sent in one write.
const SEND_CHUNK: usize = 1 << 20;

/// Serves one replica: `+CONTINUE` and the backlog from where it is, or
/// `+FULLRESYNC`, a full copy and the stream from the copy's start.
fn feed(sh: &Shared, r: &Replica, sock: TcpStream, hello: Hello) -> io::Result<()> {
    let (want_id, want) = hello.psync.expect("PSYNC came");
    let mut out = BufWriter::with_capacity(256 << 10, sock);
    let repl = &sh.repl;
    // Where it resumes, if it can: the bytes it has are `want - 1`.
    let mut restarts;
    let (resume, replid, mut feed) = {
        let mut b = repl.backlog();
        restarts = repl.restarts.load(SeqCst);
        let have = want.saturating_sub(1) as u64;
        let held = repl.feeding() && want >= 1 && have >= b.start() && have <= b.end;
        // PSYNC2: the stream this one continues, up to where it did.
        let ours = want_id == b.replid || (want_id == b.replid2 && want <= b.second_offset);
        let resume = (ours && held).then_some(have);
        let feed = resume.map(|at| Feed {
            repl,
            id: b.hold(at),
        });
        (resume, b.replid.clone(), feed)
    };
    let mut rollbacks = 0;
    let mut unsettled = None;
    let mut sent = match resume {
        Some(have) => {
            tracing::info!(replica = %format!("{}:{}", r.ip, r.port), offset = have, "replica resumes");
            write!(out, "+CONTINUE {replid}\r\n")?;
            out.flush()?;
            have
        }
        None => {
            let (replid, start) = {
                let mut b = repl.backlog();
                restarts = repl.restarts.load(SeqCst);
                repl.feeding.store(true, SeqCst);
                // What is written during the copy waits for the replica.
                let end = b.end;
                feed = Some(Feed {
                    repl,
                    id: b.hold(end),
                });
                (b.replid.clone(), end)
            };
            tracing::info!(replica = %format!("{}:{}", r.ip, r.port), offset = start, "full copy to a replica");
            write!(out, "+FULLRESYNC {replid} {start}\r\n")?;
            rollbacks = repl.rollbacks.load(SeqCst);
            let keys = copy_keys(sh, &mut out, r, hello.copy_keys)?;
            // The copy may hold writes not durable yet: if one of them is
            // rolled back, the copy is wrong (see the loop below).
            unsettled = Some(repl.seq_marks());
            let mut end = Vec::new();
            resp::encode::command(&mut end, &[b"REPLCONF", b"SNAPSHOT-END"]);
            out.write_all(&end)?;
            out.flush()?;
            tracing::info!(replica = %format!("{}:{}", r.ip, r.port), keys, "full copy sent");
            start
        }
    };
    r.acked.store(sent, Relaxed);
    r.ack_ms
        .store(r.since.elapsed().as_millis() as u64, Relaxed);
    r.online.store(true, Relaxed);
    loop {
        if r.gone.load(Relaxed) {
            return Err(io::Error::other("link closed"));
        }
        if r.lag_secs() >= super::LINK_TIMEOUT.as_secs() {
            return Err(io::Error::other("the replica is silent: timeout"));
        }
        if repl.restarts.load(SeqCst) != restarts {
            // The stream went on under a new id (a key went that no DEL
            // can name): the replica drops what it has and syncs again.
            let why = "the stream cannot tell the replica every key that went";
            out.write_all(format!("-{RESYNC} {why}\r\n").as_bytes())?;
            out.flush()?;
            return Err(io::Error::other(format!("{why}: the replica syncs again")));
        }
        if let Some(marks) = &unsettled {
            let done = repl.settled(marks);
            if repl.rollbacks.load(SeqCst) != rollbacks {
                // The replica drops what it has and syncs again in full.
                let why = "a write the full copy read was rolled back";
                out.write_all(format!("-{RESYNC} {why}\r\n").as_bytes())?;
                out.flush()?;
                return Err(io::Error::other(format!("{why}: the replica syncs again")));
            }
            if done {
                unsettled = None;
            }
        }
        repl.ping_if_quiet();
        let end = wait_for_bytes(repl, sent, Duration::from_millis(200));
        if end <= sent {
            continue;
        }
        let bytes = repl.backlog().since(sent, SEND_CHUNK);
        let Some(bytes) = bytes else {
            return Err(io::Error::other(
                "the replica fell behind the stream by more than its output buffer may hold \
                 (256 MiB, client-output-buffer-limit replica): it syncs again",
            ));
        };
        out.write_all(&bytes)?;
        out.flush()?;
        sent += bytes.len() as u64;
        if let Some(f) = &feed {
            f.sent(sent);
        }
    }
}

/// Copy steps a feed keeps asked and unanswered per poller: the poller
/// reads the next steps' records while the feed sends a step's.
const STEPS_AHEAD: usize = 3;
/// Longest a feed waits for a copy step's answer.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// The last full copy's number ([`CopyAsk::session`]).
static COPIES: AtomicU64 = AtomicU64::new(0);

/// Sends every key of the store as `SET key value [PXAT ms]`, in copy
/// steps ([`Op::CopyStep`], `poller/scan/copy.rs`) handed to every poller
/// at once, straight over its ring: a poller answers a step with the next
/// records, read in device order, as ready-made commands, which go to the
/// replica as they are, and the buffer comes back with the next step
/// asked. [`STEPS_AHEAD`] steps per poller are asked ahead, so the
/// pollers' reads and the sending overlap. With `announce` (the replica
/// takes it), `REPLCONF COPY-KEYS n` goes first, `n` the index entries
/// the pollers' first steps took (tombstones and expired keys included):
/// the replica makes room in its index for them at once. The number of
/// keys sent.
fn copy_keys(sh: &Shared, out: &mut impl Write, r: &Replica, announce: bool) -> io::Result<u64> {
    /// A poller's part of the copy.
    struct Part {
        /// A partition of the poller's: its steps are sent there.
        pid: u32,
        started: bool,
        asked: usize,
        last: bool,
        /// The entries its copy took, once its first step answered.
        entries: Option<u64>,
    }
    let session = COPIES.fetch_add(1, Relaxed) + 1;
    let (done, answers) = mpsc::channel();
    let mut parts: Vec<Option<Part>> = (0..sh.pollers.len()).map(|_| None).collect();
    for pid in 0..sh.sb.partitions {
        parts[sh.poller_of(pid)].get_or_insert(Part {
            pid,
            started: false,
            asked: 0,
            last: false,
            entries: None,
        });
    }
    let mut spare = Spare::default();
    // Values in pieces are read through the command path.
    let mut local: Option<Local> = None;
    let mut sent = 0u64;
    // Steps answered before every poller's first (with `announce`).
    let mut held: Option<Vec<CopyPart>> = announce.then(Vec::new);
    loop {
        for (p, part) in parts.iter_mut().enumerate() {
            let Some(part) = part else { continue };
            while !part.last && part.asked < STEPS_AHEAD {
                let ask = CopyAsk {
                    session,
                    first: !part.started,
                    buf: spare.bytes.pop().unwrap_or_default(),
                    reads: spare.reads.pop().unwrap_or_default(),
                    done: done.clone(),
                };
                ask_step(sh, p, part.pid, ask);
                part.started = true;
                part.asked += 1;
            }
        }
        if parts.iter().flatten().all(|p| p.last && p.asked == 0) {
            break;
        }
        let answer = next_answer(&answers, r)?;
        let part = parts[answer.poller].as_mut().expect("a poller asked");
        part.asked -= 1;
        let step = answer
            .part
            .map_err(|e| io::Error::other(format!("a copy step failed: {e}")))?;
        part.last |= step.last;
        part.entries = part.entries.or(step.entries);
        match &mut held {
            Some(steps) => steps.push(step),
            None => {
                sent += send_step(sh, out, &mut local, &mut spare, step)?;
                continue;
            }
        }
        // Held until every poller's first step answered: the count first.
        let entries: Option<u64> = parts.iter().flatten().map(|p| p.entries).sum();
        let Some(entries) = entries else { continue };
        let n = entries.to_string();
        let mut count = Vec::new();
        resp::encode::command(&mut count, &[b"REPLCONF", b"COPY-KEYS", n.as_bytes()]);
        out.write_all(&count)?;
        for step in held.take().into_iter().flatten() {
            sent += send_step(sh, out, &mut local, &mut spare, step)?;
        }
    }
    Ok(sent)
}

/// A copy's buffers, sent, for the next steps to fill again: the
/// commands' bytes, and the read buffers their values were in (a step's
/// together, given back with one ask: any poller reads into them).
#[derive(Default)]
struct Spare {
    bytes: Vec<Vec<u8>>,
    reads: Vec<Vec<IoBuf>>,
}

/// Sends a copy step's keys (those whose values are in pieces read
/// through the command path, over `local`), and keeps its buffers in
/// `spare`. How many keys it sent.
fn send_step(
    sh: &Shared,
    out: &mut impl Write,
    local: &mut Option<Local>,
    spare: &mut Spare,
    mut step: CopyPart,
) -> io::Result<u64> {
    write_all_vectored(out, &mut step.slices())?;
    let mut sent = step.keys;
    if !step.large.is_empty() {
        let local = match local {
            Some(l) => l,
            None => local.insert(Local::open(sh, false)?),
        };
        sent += copy_large(local, out, &step.large)?;
    }
    spare.bytes.push(step.bytes);
    if !step.reads.is_empty() {
        spare.reads.push(std::mem::take(&mut step.reads));
    }
    Ok(sent)
}

/// Most slices in one vectored write (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Writes every byte of `slices`, in vectored writes.
fn write_all_vectored(out: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        let k = slices.len().min(IOV_MAX);
        match out.write_vectored(&slices[..k]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Hands poller `p` a copy step for its partition `pid`.
fn ask_step(sh: &Shared, p: usize, pid: u32, ask: CopyAsk) {
    let mut req = Request::internal(pid, KeyHash::of(b""), Op::CopyStep(Box::new(ask)));
    let poller = &sh.pollers[p];
    while let Err(back) = poller.inbox.push(req) {
        // The ring is full: the poller has work enough.
        req = back;
        poller.ring();
        std::thread::sleep(Duration::from_micros(100));
    }
    poller.ring();
}

/// The next copy step's answer, while the replica's link is up.
fn next_answer(answers: &mpsc::Receiver<CopyAnswer>, r: &Replica) -> io::Result<CopyAnswer> {
    let since = Instant::now();
    loop {
        if r.gone.load(Relaxed) {
            return Err(io::Error::other("link closed during the full copy"));
        }
        match answers.recv_timeout(Duration::from_millis(200)) {
            Ok(a) => return Ok(a),
            Err(mpsc::RecvTimeoutError::Timeout) if since.elapsed() < STEP_TIMEOUT => {}
            Err(_) => return Err(io::Error::other("the store's copy steps stopped")),
        }
    }
}

/// Sends the keys whose values are in pieces, read with GET and
/// PEXPIRETIME through the command path; how many were still there.
fn copy_large(local: &mut Local, out: &mut impl Write, keys: &[Box<[u8]>]) -> io::Result<u64> {
    let mut ask = Vec::new();
    for k in keys {
        resp::encode::command(&mut ask, &[b"GET", k]);
        resp::encode::command(&mut ask, &[b"PEXPIRETIME", k]);
    }
    local.send(&ask)?;
    let (mut sets, mut sent) = (Vec::new(), 0);
    for k in keys {
        let value = local.replies.next()?.0;
        let at = local.replies.next()?.0;
        if let (Value::Bulk(v), Value::Integer(at)) = (value, at) {
            set_command(&mut sets, k, &v, at);
            sent += 1;
        } // Gone meanwhile: the stream says so.
    }
    out.write_all(&sets)?;
    Ok(sent)
}

/// `SET key value [PXAT at]` (`at` as PEXPIRETIME answers: -1 for none).
fn set_command(out: &mut Vec<u8>, key: &[u8], value: &[u8], at: i64) {
    if at > 0 {
        let at = at.to_string();
        resp::encode::command(out, &[b"SET", key, value, b"PXAT", at.as_bytes()]);
    } else {
        resp::encode::command(out, &[b"SET", key, value]);
    }
}

/// Reads a replica's `REPLCONF ACK offset` until its link ends.
fn read_acks(r: &Replica, sock: TcpStream) {
    let mut reader = Reader::new(sock);
    while !r.gone.load(Relaxed) {
        let Ok((v, _)) = reader.next() else {
            break;
        };
        let Some(args) = v.into_args() else {
            break;
        };
        let is = |i: usize, w: &[u8]| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(w));
        if is(0, b"REPLCONF") && is(1, b"ACK") {
            if let Some(off) = args.get(2).and_then(|a| resp::parse_redis_int(a)) {
                r.acked.store(off.max(0) as u64, Relaxed);
                r.ack_ms
                    .store(r.since.elapsed().as_millis() as u64, Relaxed);
            }
        }
    }
    r.end();
}
