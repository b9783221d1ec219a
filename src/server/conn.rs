//! One client connection: its socket, the input it has sent and the parse
//! of it, its replies in request order ([`Replies`]), its state (AUTH,
//! `CLIENT REPLY`, closing) and the limits it is held to.
//!
//! Limits: a connection stops parsing new commands while the replies it has
//! not read pass [`OUTPUT_PAUSE`] (so a slow reader is throttled), its
//! requests with the pollers pass [`INPUT_IN_FLIGHT`] bytes, or it has
//! `--max-pipeline` replies owed; it is to be disconnected once its unread
//! replies pass `--max-output-buffer`, and it is answered with an error and
//! closed once a request passes `--max-query-buffer`. The connection
//! thread (`conn_thread.rs`) applies the limits over all connections
//! (`--max-clients`, `--timeout`, `--maxmemory-clients`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::Registry;

use super::clients::{ClientInfo, NO_TOUCH};
use super::msg::{ConnRef, FedValue, Feed, Request, Response};
use super::replies::{Combine, Replies, ReplyMark, Timing};
use super::slowlog::{SlowLog, Watch};
use super::stats::{CommandStats, ConnStats};
use super::stream::Stream;
use super::strings;
use crate::resp::{self, Limits, Proto};

/// A command of at most this many arguments (its name included) has them
/// listed on the stack.
const FEW_ARGS: usize = 8;

/// Unparsed input a connection may buffer before reading pauses.
const READ_AHEAD: usize = 256 << 10;
/// Bytes read per read call.
const READ_CHUNK: usize = 64 << 10;

/// Commands at least this large are executed with their read buffer
/// handed over ([`Conn::hand_over`]), so that a large value reaches the
/// poller without a copy; the next reads start a new buffer.
const HAND_OVER: usize = 4 * READ_CHUNK;

/// How long, and for how many bytes, a connection closed for a protocol
/// error keeps reading (and dropping) the client's input after its error
/// reply went out: see [`Conn::linger`].
const LINGER: Duration = Duration::from_secs(10);
const LINGER_BYTES: u64 = 1 << 30;
/// Bytes dropped per service of a lingering connection, so that one
/// client sending fast cannot hold its thread.
const LINGER_TURN: usize = 4 << 20;
/// Reply bytes a connection may leave unread before its new commands wait
/// (at most half of `--max-output-buffer`).
const OUTPUT_PAUSE: usize = 1 << 20;
/// Request bytes (keys and values) a connection may have with the pollers
/// before its new commands wait for replies.
const INPUT_IN_FLIGHT: usize = 8 << 20;

/// The limits a connection is held to, from the flags.
#[derive(Debug, Clone)]
pub(super) struct ConnLimits {
    /// What a request may contain once authenticated (or with no password).
    requests: Limits,
    /// The same before AUTH, when a password is set.
    pre_auth: Limits,
    /// `--max-output-buffer` (0: none), and the point where parsing pauses.
    output_limit: usize,
    output_pause: usize,
    /// `--max-pipeline`: replies a connection may owe before parsing waits.
    max_pipeline: usize,
    /// `--max-query-buffer`: the longest request.
    max_query_buffer: u64,
}

impl ConnLimits {
    /// `--max-bulk`, `--max-args`, `--max-output-buffer` (0: none),
    /// `--max-pipeline` and `--max-query-buffer`.
    pub(super) fn new(
        max_bulk: u64,
        max_args: usize,
        max_output_buffer: u64,
        max_pipeline: usize,
        max_query_buffer: u64,
    ) -> Self {
        ConnLimits {
            requests: Limits {
                max_bulk: max_bulk as usize,
                max_args,
                ..Limits::default()
            },
            pre_auth: Limits::pre_auth(),
            output_limit: max_output_buffer as usize,
            output_pause: match max_output_buffer as usize {
                0 => OUTPUT_PAUSE,
                limit => OUTPUT_PAUSE.min(limit / 2),
            },
            max_pipeline,
            max_query_buffer,
        }
    }

    /// `--max-output-buffer`, 0 for none.
    pub(super) fn output_limit(&self) -> usize {
        self.output_limit
    }
}

/// What runs the commands a connection parses: the command handlers, with
/// the router to the pollers.
pub(super) trait Executor {
    /// Whether connection `slot` has requests waiting for a full ring (it
    /// parses no more commands until they have gone out).
    fn holds(&self, slot: u32) -> bool;
    /// Executes one command of `c`; its reply is dropped under `CLIENT
    /// REPLY OFF | SKIP`.
    fn execute(&mut self, c: &mut Conn, args: &[&[u8]]);
    /// A command of `count` arguments whose first ones (`args`) have
    /// arrived, and whose next is `len` bytes long, not yet: its feed, if
    /// that argument is to go to its poller as it arrives (a SET's large
    /// value, see [`Conn::feed`]).
    fn feed(&mut self, c: &mut Conn, args: &[&[u8]], count: usize, len: u64) -> Option<Arc<Feed>>;
    /// A piece was pushed to `feed`: its poller is rung.
    fn fed(&mut self, feed: &Feed);
}

/// A SET's value arriving, handed to its poller a piece at a time
/// ([`Conn::feed`]).
struct Feeding {
    value: FedValue,
    /// The command's name and key, and its argument count.
    name: Vec<u8>,
    key: Vec<u8>,
    count: usize,
    /// Bytes of the value still to come.
    left: u64,
    /// The piece being read, and its bytes read so far.
    piece: Vec<u8>,
    filled: usize,
}

impl Feeding {
    /// Takes `bytes` of the value; hands over the pieces they complete.
    fn take(&mut self, mut bytes: &[u8], exec: &mut impl Executor) {
        while !bytes.is_empty() {
            self.start_piece();
            let n = bytes.len().min(self.piece.len() - self.filled);
            self.piece[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.advance(n, exec);
            bytes = &bytes[n..];
        }
    }

    /// A buffer for the next piece, if none is being read.
    fn start_piece(&mut self) {
        if self.piece.is_empty() {
            let feed = &self.value.feed;
            let len = (feed.piece as u64).min(self.left) as usize;
            // Zeroed by the allocator, which knows memory fresh from the
            // kernel is zero: no pass over the bytes before they are read.
            self.piece = vec![0; len];
            self.filled = 0;
        }
    }

    /// `n` more bytes of the piece were read: a whole piece goes to the
    /// poller.
    fn advance(&mut self, n: usize, exec: &mut impl Executor) {
        self.filled += n;
        self.left -= n as u64;
        if self.filled == self.piece.len() {
            let piece = std::mem::take(&mut self.piece);
            self.value.feed.push(Bytes::from(piece));
            exec.fed(&self.value.feed);
        }
    }

    /// The command as it is to be parsed once its value is in: its
    /// arguments but the value, which is empty (the poller has it).
    fn command(&self) -> Vec<u8> {
        let mut out = format!("*{}\r\n", self.count).into_bytes();
        for arg in [&self.name, &self.key] {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"$0\r\n");
        out
    }
}

/// One client connection.
pub(super) struct Conn {
    stream: Stream,
    pub(super) me: ConnRef,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    /// The read buffer of the large command being executed, handed over
    /// whole: its value goes to the poller without a copy
    /// ([`Conn::value_bytes`]).
    frozen: Option<Bytes>,
    /// A SET's large value being read a piece at a time.
    feeding: Option<Feeding>,
    /// Its SET, once the value is in: for the next command parsed (the
    /// SET), whose handler takes it ([`Conn::fed`]).
    fed_next: Option<FedValue>,
    /// The fed value of the SET being executed, for its handler to take;
    /// dropped unused, the poller frees the value's pieces.
    pub(super) fed: Option<FedValue>,
    /// The replies owed and the bytes to write.
    out: Replies,
    /// The last parse needed more input than was buffered.
    need_more: bool,
    /// Where the parse of the incomplete command at `rpos` stopped, and
    /// the arguments of the command just parsed.
    parsed: resp::Resume,
    /// Close once every reply owed is written (QUIT, protocol error).
    pub(super) closing: bool,
    /// The socket failed or was reset: nothing more can be written.
    pub(super) eof: bool,
    /// Closing for a protocol error (or the query-buffer limit): once the
    /// error is written, until when, and for how many more bytes, the
    /// client's input is read and dropped ([`Conn::linger`]).
    linger: Option<(Instant, u64)>,
    /// The write side was shut down after the error went out.
    shut: bool,
    /// The client shut down its write side (or closed): nothing more
    /// comes in, but the replies to what it sent are still written.
    input_closed: bool,
    /// Queued for service by its connection thread.
    pub(super) queued: bool,
    /// The socket may hold input: an event said so, or the last read
    /// stopped at the read-ahead before draining it. Reads happen only
    /// then, so that servicing a connection for a reply or a writable
    /// socket makes no read that ends in EAGAIN.
    pub(super) readable: bool,
    /// An event said the client shut down its side: its end of stream is
    /// in the socket behind whatever input is left, and no later event
    /// will report it. A short read then proves nothing; reads go on
    /// until one returns the end.
    pub(super) peer_closed: bool,
    /// AUTH succeeded, or no password is required.
    pub(super) authed: bool,
    /// `CLIENT REPLY OFF`: no replies until `CLIENT REPLY ON`.
    pub(super) reply_off: bool,
    /// The command being executed gets no reply (it follows
    /// `CLIENT REPLY SKIP`).
    pub(super) reply_skip: bool,
    /// `CLIENT REPLY SKIP` was just executed: the next command gets no
    /// reply.
    pub(super) reply_skip_next: bool,
    /// Parsing stopped because too many reply bytes were unread or owed.
    pub(super) paused: bool,
    /// Request bytes of the commands awaiting replies, and per command its
    /// reply id and bytes, oldest first.
    in_flight: usize,
    costs: VecDeque<(u64, usize)>,
    /// Last time bytes came in or went out (for `--timeout`).
    last_active: Instant,
    /// The command being executed and when it was parsed.
    pub(super) timing: Timing,
    /// Bytes this connection has added to the server's client memory.
    pub(super) charged: usize,
    /// The protocol it speaks: RESP2 until `HELLO 3`.
    pub(super) proto: Proto,
    /// What CLIENT LIST and CLIENT KILL see of it, from any thread.
    pub(super) info: Arc<ClientInfo>,
    /// Between MULTI and EXEC: the commands queued.
    pub(super) multi: Option<Multi>,
    /// The keys WATCH registered with their pollers, until EXEC, DISCARD
    /// or UNWATCH.
    pub(super) watching: Vec<Box<[u8]>>,
    /// An EXEC's connection-level commands, waiting for its pollers'
    /// verdict: nothing more is parsed meanwhile (see `command/mod.rs`'s
    /// `exec`).
    pub(super) deferred: Option<Deferred>,
    /// A command the connection waits for before it parses more (a
    /// census of the key space, a WATCH, an EXEC of watched keys), from
    /// its parsing to its reply.
    barrier: Option<Barrier>,
    /// While EXEC builds its requests: whether they touch the keys as a
    /// `CLIENT NO-TOUCH` queued before them, which runs only later, will
    /// have it.
    pub(super) touch_as: Option<bool>,
    /// Its channels and patterns (pub/sub).
    pub(super) subs: super::pubsub::Subs,
    /// Its commands as the slow log watches them.
    pub(super) slow: Watch,
    /// A replica's REPLCONF and PSYNC: once PSYNC came, the connection is
    /// handed over to replication (`repl::hand_over`).
    pub(super) repl: Option<super::repl::hello::Hello>,
}

/// A command after which a connection parses nothing more until it is
/// answered whole, so that what the connection sends after it comes
/// after it on every poller, as in Redis: a census of the key space (KEYS,
/// DBSIZE, FLUSHDB, a SCAN step, RANDOMKEY on a server with several
/// pollers) or an EXEC holding such commands (`poller/whole.rs`), whose
/// requests also wait here until every reply
/// owed before their own is in, so that what the connection sent before
/// is done (a GET's read, an MSET across pollers' every part) when they
/// look; a WATCH, so that an UNWATCH or EXEC sent after it finds its
/// keys watched (a WATCH reading which entry is its key's answers only
/// then); and an EXEC of watched keys, so that the next EXEC's parts do
/// not take the keys it watched. The price: the depth of a pipeline
/// around such a command.
#[derive(Debug)]
struct Barrier {
    /// Its reply's id.
    id: u64,
    /// Its requests, with their pollers, until they go.
    unsent: Vec<(usize, Request)>,
}

/// A transaction being queued (MULTI).
#[derive(Debug, Default)]
pub(super) struct Multi {
    /// Each queued command's arguments.
    pub cmds: Vec<Vec<Box<[u8]>>>,
    /// A command was refused while queued: EXEC answers EXECABORT.
    pub aborted: bool,
}

/// The connection-level commands of an EXEC whose requests went to the
/// pollers (CLIENT, CONFIG, PUBLISH, …): they run, in order, once every
/// part has run its requests, and not at all when EXEC answers nil (a
/// watched key changed) or an error.
#[derive(Debug)]
pub(super) struct Deferred {
    /// EXEC's reply.
    pub exec: u64,
    /// The parts yet to answer.
    pub left: u32,
    /// Each command's place among EXEC's replies, and its arguments.
    pub cmds: Vec<(u64, Vec<Box<[u8]>>)>,
}

impl Conn {
    /// A new connection on `stream`, addressed as `me`. Until replies show
    /// their size, each owed one is foreseen at `reply_avg` bytes.
    pub(super) fn new(
        stream: Stream,
        me: ConnRef,
        authed: bool,
        reply_avg: usize,
        cmd_stats: Arc<CommandStats>,
        info: Arc<ClientInfo>,
    ) -> Self {
        Conn {
            stream,
            me,
            rbuf: Vec::new(),
            rpos: 0,
            rlen: 0,
            frozen: None,
            feeding: None,
            fed_next: None,
            fed: None,
            out: Replies::new(reply_avg, cmd_stats),
            need_more: false,
            parsed: resp::Resume::default(),
            closing: false,
            eof: false,
            linger: None,
            shut: false,
            input_closed: false,
            queued: false,
            // Input may have come before the socket was registered.
            readable: true,
            peer_closed: false,
            authed,
            reply_off: false,
            reply_skip: false,
            reply_skip_next: false,
            paused: false,
            in_flight: 0,
            costs: VecDeque::new(),
            last_active: super::turn::now(),
            timing: None,
            charged: 0,
            proto: Proto::Resp2,
            info,
            multi: None,
            watching: Vec::new(),
            deferred: None,
            barrier: None,
            touch_as: None,
            subs: Default::default(),
            slow: Default::default(),
            repl: None,
        }
    }

    /// Whether this client's reads count as accesses for eviction (not
    /// under `CLIENT NO-TOUCH ON`).
    pub(super) fn touches(&self) -> bool {
        self.touch_as.unwrap_or_else(|| !self.info.has(NO_TOUCH))
    }

    /// A command was refused: a transaction being queued is aborted.
    pub(super) fn refused_in_multi(&mut self) {
        if let Some(m) = &mut self.multi {
            m.aborted = true;
        }
    }

    /// The command being executed is refused before it runs: its reply
    /// counts as a rejected call (wrong arity, NOAUTH, …), not a call.
    pub(super) fn rejected(&mut self) {
        if let Some(t) = &mut self.timing {
            t.rejected = true;
        }
    }

    /// The command being executed names no command Redis knows (an
    /// unknown subcommand): its reply counts as an error only.
    pub(super) fn not_a_call(&mut self) {
        self.timing = None;
    }

    /// From now on, replies go to a new set of replies (EXEC running its
    /// commands); returns the connection's own.
    pub(super) fn begin_transaction(&mut self) -> Replies {
        let inner = self.out.for_transaction();
        std::mem::replace(&mut self.out, inner)
    }

    /// Puts the connection's own replies back; returns the transaction's.
    pub(super) fn end_transaction(&mut self, outer: Replies) -> Replies {
        std::mem::replace(&mut self.out, outer)
    }

    /// The replies given since [`Conn::begin_transaction`], all ready,
    /// taken out (a connection-level command's of an EXEC, see
    /// [`Deferred`]).
    pub(super) fn take_ready(&mut self) -> Vec<u8> {
        debug_assert_eq!(self.out.owed(), 0, "a connection-level reply awaits");
        self.out.take_output()
    }

    /// Reserves the place of EXEC's reply, whose commands' replies are in
    /// `inner`, answered by `parts` pollers; `single`: one command's
    /// reply, not EXEC's array (see `replies.rs`'s `Slot::Exec`).
    pub(super) fn expect_exec(
        &mut self,
        inner: Replies,
        count: usize,
        parts: u32,
        single: bool,
    ) -> u64 {
        let timing = self.timing.take();
        (self.out).expect_exec(timing, inner, count, self.proto, parts, single)
    }

    /// Emits a reply that is ready now.
    pub(super) fn reply(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let timing = self.timing.take();
        self.out.ready(timing, f);
    }

    /// Reserves the place of a reply that pollers will fill: `parts` parts
    /// combined by `combine` (`None` for a single reply). Returns its id.
    pub(super) fn expect(&mut self, parts: usize, combine: Option<Combine>) -> u64 {
        let timing = self.timing.take();
        self.out.expect(timing, parts, combine, self.proto)
    }

    /// Where the replies stand before a command is executed.
    pub(super) fn reply_mark(&self) -> ReplyMark {
        self.out.mark()
    }

    /// After a command (`args`) executed: the slow log measures or
    /// watches it; the reply it left is dropped if the client is not to
    /// get it (`CLIENT REPLY OFF | SKIP`), keeping the order of the
    /// others, and `CLIENT REPLY SKIP` moves on to the next command.
    pub(super) fn command_done(&mut self, log: &SlowLog, args: &[&[u8]], mark: ReplyMark) {
        (self.slow).command_done(log, args, &self.out, &mark, &self.info);
        if self.reply_off || self.reply_skip {
            self.out.drop_last(mark);
        }
        self.reply_skip = std::mem::take(&mut self.reply_skip_next);
    }

    /// Requests `reqs` of reply `id` wait here until every reply before
    /// theirs is in, and the connection parses nothing more until they are
    /// answered (see [`Barrier`]); the requests that can go now.
    pub(super) fn barrier(
        &mut self,
        id: u64,
        reqs: Vec<(usize, Request)>,
    ) -> Vec<(usize, Request)> {
        self.barrier = Some(Barrier { id, unsent: reqs });
        self.barrier_due()
    }

    /// The reply the connection expects next is waited for before it
    /// parses more (see [`Barrier`]).
    pub(super) fn barrier_after_next(&mut self) {
        let id = self.out.next_id();
        self.barrier = Some(Barrier {
            id,
            unsent: Vec::new(),
        });
    }

    /// The requests waiting at the barrier that can go: every reply owed
    /// before their own is in.
    pub(super) fn barrier_due(&mut self) -> Vec<(usize, Request)> {
        match &mut self.barrier {
            Some(b) if self.out.first_owed() == b.id => std::mem::take(&mut b.unsent),
            _ => Vec::new(),
        }
    }

    /// The connection parses again once the barrier's reply is answered
    /// whole (it left its slot).
    fn barrier_answered(&mut self) {
        if self
            .barrier
            .as_ref()
            .is_some_and(|b| self.out.first_owed() > b.id)
        {
            self.barrier = None;
        }
    }

    /// Takes a poller's reply.
    pub(super) fn deliver(&mut self, r: Response) {
        self.out.deliver(r);
        self.barrier_answered();
        if self.out.broken() {
            // A reply sent in parts broke off: nothing can follow it.
            self.eof = true;
        }
        let first = self.out.first_owed();
        while let Some(&(_, n)) = self.costs.front().filter(|(id, _)| *id < first) {
            self.in_flight -= n;
            self.costs.pop_front();
        }
    }

    /// The pollers that wait for bytes of a reply sent in parts that this
    /// connection has now taken (see `msg::Flow`): to be rung.
    pub(super) fn take_wakes(&mut self) -> Vec<usize> {
        self.out.take_wakes()
    }

    /// Whether replies are owed (awaited from the pollers, or behind one).
    pub(super) fn owes_replies(&self) -> bool {
        self.out.owed() > 0
    }

    fn unparsed(&self) -> usize {
        self.rlen - self.rpos
    }

    /// Reply bytes the client has not read: unsent, and waiting in slots.
    pub(super) fn pending_output(&self) -> usize {
        self.out.pending()
    }

    /// Whether the client has left more reply bytes unread than
    /// `--max-output-buffer` allows.
    pub(super) fn over_output_limit(&self, lim: &ConnLimits) -> bool {
        lim.output_limit > 0 && self.pending_output() > lim.output_limit
    }

    /// Whether the connection must stop parsing for now: its unread
    /// replies pass the pause point (it resumes as they go out); its
    /// requests with the pollers pass [`INPUT_IN_FLIGHT`] bytes; or with
    /// the replies still owed, at its average reply size, its output could
    /// pass half of `--max-output-buffer` (it resumes as replies arrive).
    pub(super) fn must_pause(&self, lim: &ConnLimits) -> bool {
        let pending = self.pending_output();
        let owed = self.out.foreseen();
        pending >= lim.output_pause
            || self.in_flight >= INPUT_IN_FLIGHT
            || (lim.output_limit > 0 && pending.saturating_add(owed) >= lim.output_limit / 2)
    }

    /// Bytes the connection holds: buffers, replies owed, requests with the
    /// pollers.
    pub(super) fn footprint(&self) -> usize {
        let piece = self.feeding.as_ref().map_or(0, |f| f.piece.capacity());
        self.rbuf.capacity() + self.out.footprint() + self.in_flight + piece
    }

    /// Whether it has been idle (no bytes in or out, no reply awaited)
    /// for longer than `limit`.
    pub(super) fn idle_longer_than(&self, limit: Duration) -> bool {
        let idle = super::turn::now().saturating_duration_since(self.last_active);
        self.out.owed() == 0 && idle > limit
    }

    /// Whether the connection is done, `flushed` being whether all its
    /// output went out: the socket failed, or every reply owed is written
    /// and it is closing or the client has sent all it will (after a
    /// half-close: once every command that came in whole is answered; an
    /// incomplete one never will be).
    pub(super) fn finished(&self, flushed: bool) -> bool {
        let answered = self.out.owed() == 0 && flushed;
        let all_in = self.input_closed && (self.unparsed() == 0 || self.need_more);
        let lingers = match self.linger {
            Some((until, left)) => !self.input_closed && left > 0 && super::turn::now() < until,
            None => false,
        };
        self.eof || (answered && ((self.closing && !lingers) || all_in))
    }

    /// Whether it lingers after a protocol error and its time is up.
    pub(super) fn linger_over(&self) -> bool {
        self.linger
            .is_some_and(|(until, _)| super::turn::now() >= until)
    }

    /// A connection closed for a protocol error, its error reply written
    /// (`flushed`): shuts the socket's write side, so the client reads
    /// the error and then the end of the stream, and reads and drops what
    /// the client still sends (at most [`LINGER_TURN`] bytes a call),
    /// until it closes, [`LINGER`] passes or [`LINGER_BYTES`] were
    /// dropped. Closing at once would make the kernel answer the rest of
    /// a large request with a reset, and a client still sending it (a
    /// `SET` of a value over the bulk limit) would see `Connection reset
    /// by peer` instead of the error. Returns whether input may remain.
    pub(super) fn linger(&mut self, flushed: bool, stats: &ConnStats) -> bool {
        let Some((until, mut left)) = self.linger else {
            return false;
        };
        if !flushed || self.out.owed() > 0 || self.eof || self.input_closed {
            return false;
        }
        if !self.shut {
            self.shut = true;
            let _ = self.stream.shutdown_write();
        }
        self.rpos = 0;
        self.rlen = 0;
        if self.rbuf.len() < READ_CHUNK {
            self.rbuf.resize(READ_CHUNK, 0);
        }
        let mut turn = 0;
        let more = loop {
            if left == 0 || turn >= LINGER_TURN {
                break left > 0;
            }
            let want = self.rbuf.len().min(left as usize);
            match self.stream.read(&mut self.rbuf[..want]) {
                Ok(0) => {
                    self.input_closed = true;
                    break false;
                }
                Ok(n) => {
                    turn += n;
                    left -= n as u64;
                    stats.net_in.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    break false;
                }
            }
        };
        self.linger = Some((until, left));
        self.readable = more;
        more
    }

    /// Whether the socket holds input that no event will report: the last
    /// read stopped at the read-ahead, and there is room to read it now.
    pub(super) fn more_to_read(&self, stopping: bool) -> bool {
        let reads = !(self.eof || self.input_closed || self.closing || stopping);
        reads && self.readable && self.unparsed() < READ_AHEAD && !self.feed_waits()
    }

    /// Whether a value being fed waits for its poller to take a piece
    /// (then the connection reads no more until it has).
    pub(super) fn feed_waits(&self) -> bool {
        let f = self.feeding.as_ref();
        f.is_some_and(|f| f.piece.is_empty() && !f.value.feed.has_room())
    }

    /// Takes the socket out of epoll's set, before the connection drops.
    /// A descriptor of its own for the TCP socket (the connection is
    /// closed as usual afterwards), for replication to take it over.
    pub(super) fn duplicate_tcp(&self) -> io::Result<std::net::TcpStream> {
        match &self.stream {
            Stream::Tcp(s) => {
                let fd = std::os::fd::AsFd::as_fd(s).try_clone_to_owned()?;
                Ok(std::net::TcpStream::from(fd))
            }
            Stream::Unix(_) => Err(io::Error::other("not a TCP connection")),
        }
    }

    pub(super) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Reads what the socket has and parses and executes the commands.
    pub(super) fn read_and_parse(
        &mut self,
        stopping: bool,
        lim: &ConnLimits,
        stats: &ConnStats,
        exec: &mut impl Executor,
    ) {
        loop {
            let open = !(self.eof || self.input_closed || self.closing || stopping);
            if self.feeding.is_some() && !(open && self.feed_read(stats, exec)) {
                break;
            }
            let drained = self.eof
                || self.input_closed
                || self.closing
                || stopping
                || !self.readable
                || self.read(stats);
            if !stopping {
                self.parse(lim, stats, exec);
            }
            // A command larger than the read-ahead needs more of the bytes
            // still waiting in the socket: epoll will not report them again.
            if drained || !self.need_more {
                break;
            }
        }
    }

    /// Reads what the socket has, up to the read-ahead; returns whether the
    /// socket was drained (or closed), and then it is not read again until
    /// an event says it is readable.
    fn read(&mut self, stats: &ConnStats) -> bool {
        let drained = self.read_socket(stats);
        self.readable = !drained;
        drained
    }

    /// [`Conn::read`]'s reads. A stream socket is drained when a read
    /// returns less than it asked for: the kernel copies all it holds up to
    /// the buffer's size (TCP and Unix stream sockets alike), and input that
    /// arrives after that copy wakes epoll again, which reports the socket
    /// once more (edge-triggered epoll reports each wake-up, not only the
    /// empty to non-empty change). A full read proves nothing: it reads on.
    fn read_socket(&mut self, stats: &ConnStats) -> bool {
        while self.unparsed() < READ_AHEAD || self.need_more {
            let want = self.read_room();
            let got = self.stream.read(&mut self.rbuf[self.rlen..]);
            if let Some(drained) = self.took(got, want, stats) {
                return drained;
            }
        }
        false
    }

    /// Makes room in the read buffer for the next read; returns its size.
    fn read_room(&mut self) -> usize {
        // A command whose size the parse knows (it stopped in a bulk past
        // its header) gets a buffer of exactly that size: growing by
        // doubling would hold (and charge to the client memory limit) up
        // to twice a large value's bytes.
        let exact = self.rpos + self.parsed.wants;
        if self.parsed.wants > 0 && exact > self.rlen + READ_CHUNK {
            if self.rbuf.len() < exact {
                // Zeroed by the allocator, which knows memory fresh from
                // the kernel is zero: no pass over a large value's bytes
                // before they are read.
                let mut grown = vec![0; exact];
                grown[..self.rlen].copy_from_slice(&self.rbuf[..self.rlen]);
                self.rbuf = grown;
            }
        } else if self.parsed.wants > 0 && exact > self.rlen && self.rbuf.len() >= exact {
            // The command's last bytes: its buffer has room for them.
        } else if self.rbuf.len() < self.rlen + READ_CHUNK {
            self.rbuf.resize(self.rlen + READ_CHUNK, 0);
        }
        self.rbuf.len() - self.rlen
    }

    /// Takes the outcome of a read of `want` bytes into the read buffer's
    /// room; `Some(drained)` once the reads are over for now (the socket
    /// drained, closed or failed), `None` to read on.
    fn took(&mut self, got: io::Result<usize>, want: usize, stats: &ConnStats) -> Option<bool> {
        match got {
            Ok(0) => {
                self.input_closed = true;
                Some(true)
            }
            Ok(n) => {
                self.rlen += n;
                self.need_more = false;
                self.last_active = super::turn::now();
                stats.net_in.fetch_add(n as u64, Relaxed);
                // A short read drained the socket: skip the read that
                // would end in EAGAIN (not the one that finds the end).
                (n < want && !self.peer_closed).then_some(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(_) => {
                self.eof = true;
                Some(true)
            }
        }
    }

    /// The socket and the room for a read the thread's ring makes with
    /// the turn's other reads (`sockets.rs`), if the connection would read
    /// now: plain (not feeding a value, not lingering, closing, half-closed
    /// or stopping), its socket may hold input and its read-ahead has room.
    /// The room stays this connection's until [`Conn::batch_read`].
    pub(super) fn batched_read(&mut self, stopping: bool) -> Option<(i32, &mut [u8])> {
        let plain = !(stopping
            || self.closing
            || self.eof
            || self.input_closed
            || self.feeding.is_some()
            || self.linger.is_some());
        if !(plain && self.readable && (self.unparsed() < READ_AHEAD || self.need_more)) {
            return None;
        }
        self.read_room();
        let fd = self.stream.fd();
        Some((fd, &mut self.rbuf[self.rlen..]))
    }

    /// Takes the outcome of the read [`Conn::batched_read`] gave, of
    /// `want` bytes: as [`Conn::read`] takes its reads, so that the
    /// service that follows reads again only if that read filled its room.
    pub(super) fn batch_read(&mut self, got: io::Result<usize>, want: usize, stats: &ConnStats) {
        if self.took(got, want, stats).is_some() {
            self.readable = false;
        }
    }

    /// Parses the buffered commands and has `exec` execute them, until the
    /// input runs out or a limit stops it.
    fn parse(&mut self, lim: &ConnLimits, stats: &ConnStats, exec: &mut impl Executor) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let mut commands = 0;
        loop {
            self.paused = self.must_pause(lim);
            if self.closing
                || self.paused
                || self.out.owed() >= lim.max_pipeline
                || exec.holds(self.me.slot)
                || self.deferred.is_some()
                || self.barrier.is_some()
            {
                break;
            }
            // Chosen per command: an AUTH earlier in the pipeline lifts them.
            let limits = if self.authed {
                &lim.requests
            } else {
                &lim.pre_auth
            };
            match resp::parse_resumable(&rbuf[self.rpos..self.rlen], limits, &mut self.parsed) {
                Ok(Some(n)) => {
                    let base = self.rpos;
                    self.rpos += n;
                    commands += 1;
                    // The SET of a value fed (its handler takes it).
                    self.fed = self.fed_next.take();
                    // An inline command with quotes comes unquoted, in
                    // bytes of its own.
                    let unquoted = std::mem::take(&mut self.parsed.unquoted);
                    if n >= HAND_OVER && unquoted.is_empty() {
                        rbuf = self.hand_over(rbuf, base, exec);
                        self.fed = None;
                        continue;
                    }
                    // Listed on the stack when they are few (a GET's
                    // two): a command allocates no list of its own.
                    let spans = &self.parsed.args;
                    let mut few: [&[u8]; FEW_ARGS] = [&[]; FEW_ARGS];
                    let many: Vec<&[u8]>;
                    let args: &[&[u8]] = if !unquoted.is_empty() {
                        many = unquoted.iter().map(Vec::as_slice).collect();
                        &many
                    } else if spans.len() <= FEW_ARGS {
                        for (arg, r) in few.iter_mut().zip(spans) {
                            *arg = &rbuf[base + r.start..base + r.end];
                        }
                        &few[..spans.len()]
                    } else {
                        many = (spans.iter())
                            .map(|r| &rbuf[base + r.start..base + r.end])
                            .collect();
                        &many
                    };
                    self.run_command(exec, args, n);
                    self.fed = None;
                }
                Ok(None) if self.feed(&mut rbuf, lim, exec) => {
                    // The value comes a piece at a time ([`Conn::feed_read`]).
                    break;
                }
                Ok(None) if self.unparsed() as u64 > lim.max_query_buffer => {
                    stats.query_limit_disconnects.fetch_add(1, Relaxed);
                    self.reply(|o| resp::error(o, strings::QUERY_BUFFER));
                    self.closing = true;
                    self.linger = Some((super::turn::now() + LINGER, LINGER_BYTES));
                    break;
                }
                Ok(None) => {
                    self.need_more = true;
                    break;
                }
                Err(e) => {
                    stats.protocol_errors.fetch_add(1, Relaxed);
                    self.reply(|o| resp::error(o, &strings::protocol_error(&e)));
                    self.closing = true;
                    self.linger = Some((super::turn::now() + LINGER, LINGER_BYTES));
                    break;
                }
            }
        }
        self.rbuf = rbuf;
        stats.commands.fetch_add(commands, Relaxed);
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
            if self.rbuf.len() > 4 * READ_CHUNK {
                self.rbuf = Vec::new();
            }
            if self.parsed.args.capacity() > 1024 {
                self.parsed = resp::Resume::default();
            }
        } else if self.rpos > READ_AHEAD {
            self.rbuf.copy_within(self.rpos..self.rlen, 0);
            self.rlen -= self.rpos;
            self.rpos = 0;
        }
    }

    /// The command at `rpos` of `rbuf` stopped in an argument whose length
    /// its header gave: if it is a SET's large value, and `exec` gives it
    /// a feed, the value goes to its poller a piece at a time as it
    /// arrives ([`Conn::feed_read`]) rather than into the read buffer,
    /// which keeps only the bytes after it. Returns whether it does.
    fn feed(&mut self, rbuf: &mut Vec<u8>, lim: &ConnLimits, exec: &mut impl Executor) -> bool {
        let Some((count, at, len)) = self.parsed.in_bulk() else {
            return false;
        };
        let whole = (self.parsed.wants as u64).saturating_add(64);
        if self.parsed.args.len() != 2 || whole > lim.max_query_buffer || self.fed_next.is_some() {
            return false;
        }
        let base = self.rpos;
        let arg = |i: usize| {
            let r = &self.parsed.args[i];
            rbuf[base + r.start..base + r.end].to_vec()
        };
        let (name, key) = (arg(0), arg(1));
        let Some(feed) = exec.feed(self, &[&name, &key], count, len as u64) else {
            return false;
        };
        let mut f = Feeding {
            value: FedValue::new(feed),
            name,
            key,
            count,
            left: len as u64,
            piece: Vec::new(),
            filled: 0,
        };
        let have = &rbuf[base + at..self.rlen];
        let n = have.len().min(len);
        f.take(&have[..n], exec);
        // What came after the value (part of its CRLF), for the parse
        // once the value is in.
        let after = have[n..].to_vec();
        rbuf.clear();
        rbuf.extend_from_slice(&after);
        (self.rpos, self.rlen) = (0, rbuf.len());
        self.parsed = resp::Resume::default();
        self.feeding = Some(f);
        true
    }

    /// Reads a fed value's bytes into its pieces, handing each to the
    /// poller as it is whole, while the feed has room; once the value is
    /// in, the command is parsed again without it. Returns whether the
    /// value is in.
    fn feed_read(&mut self, stats: &ConnStats, exec: &mut impl Executor) -> bool {
        let f = self.feeding.as_mut().expect("feeding");
        while f.left > 0 {
            if !self.readable || (f.piece.is_empty() && !f.value.feed.has_room()) {
                return false;
            }
            f.start_piece();
            let want = f.piece.len() - f.filled;
            match self.stream.read(&mut f.piece[f.filled..]) {
                Ok(0) => {
                    self.input_closed = true;
                    return false;
                }
                Ok(n) => {
                    self.last_active = super::turn::now();
                    stats.net_in.fetch_add(n as u64, Relaxed);
                    f.advance(n, exec);
                    // A short read drained the socket (of all but the
                    // end of stream, when an event said it came).
                    if n < want && !self.peer_closed {
                        self.readable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    return false;
                }
            }
        }
        let f = self.feeding.take().expect("feeding");
        // The command without its value, then what came after the value.
        let mut cmd = f.command();
        cmd.extend_from_slice(&self.rbuf[self.rpos..self.rlen]);
        (self.rpos, self.rlen) = (0, cmd.len());
        self.rbuf = cmd;
        self.fed_next = Some(f.value);
        // Parsing goes on: what is buffered may hold the rest.
        self.readable = true;
        true
    }

    /// Executes the large command just parsed at `base` of `rbuf` (up to
    /// `rpos`) with the buffer handed over whole ([`Conn::frozen`]) rather
    /// than kept for the next reads: what a handler keeps of it
    /// ([`Conn::value_bytes`]) is not copied. Returns the read buffer
    /// to go on with, holding the bytes read after the command.
    fn hand_over(&mut self, mut rbuf: Vec<u8>, base: usize, exec: &mut impl Executor) -> Vec<u8> {
        let n = self.rpos - base;
        rbuf.truncate(self.rlen);
        let whole = Bytes::from(rbuf);
        let rest = whole[self.rpos..].to_vec();
        (self.rpos, self.rlen) = (0, rest.len());
        let args: Vec<&[u8]> = (self.parsed.args.iter())
            .map(|r| &whole[base + r.start..base + r.end])
            .collect();
        self.frozen = Some(whole.clone());
        self.run_command(exec, &args, n);
        self.frozen = None;
        rest
    }

    /// Has `exec` execute one command of `n` bytes; a command that awaits
    /// a reply (or waits behind one) counts its bytes as in flight.
    fn run_command(&mut self, exec: &mut impl Executor, args: &[&[u8]], n: usize) {
        let id = self.out.next_id();
        exec.execute(self, args);
        if self.out.next_id() > id && self.out.owed() > 0 {
            self.in_flight += n;
            self.costs.push_back((id, n));
        }
    }

    /// `v`, an argument of the command being executed, as bytes of its
    /// own: shared with the read buffer of a large command, copied
    /// otherwise.
    pub(super) fn value_bytes(&self, v: &[u8]) -> Bytes {
        match &self.frozen {
            Some(whole) if whole.as_ptr_range().contains(&v.as_ptr()) => whole.slice_ref(v),
            _ => Bytes::copy_from_slice(v),
        }
    }

    /// Writes what is buffered; returns whether everything went out.
    pub(super) fn flush(&mut self, stats: &ConnStats) -> bool {
        while !self.out.unsent().is_empty() {
            match self.stream.write(self.out.unsent()) {
                Ok(0) => {
                    self.eof = true;
                    return false;
                }
                Ok(n) => {
                    self.out.sent(n);
                    self.last_active = super::turn::now();
                    stats.net_out.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    return false;
                }
            }
        }
        self.out.all_sent();
        true
    }
}

/// How a send through the turn's ring ended for a connection.
pub(super) enum SendEnd {
    /// Everything buffered went out.
    Done,
    /// Some went out, or none for a passing reason: more is to be tried.
    More,
    /// The socket is full: the writable event brings the connection back.
    Full,
    /// The socket failed: the connection is to be closed.
    Failed,
}

impl Conn {
    /// The socket and the bytes to write, if the write may go out with the
    /// thread's other sends at the end of its turn (`sends.rs`): the plain
    /// case of a connection answering commands, not one that is closing,
    /// lingering, paused for its output, half-closed or handing over to
    /// replication, whose next steps depend on the write at once.
    pub(super) fn batched_send(&self, stopping: bool) -> Option<(i32, &[u8])> {
        let plain = !(stopping
            || self.closing
            || self.eof
            || self.paused
            || self.input_closed
            || self.linger.is_some()
            || self.repl.is_some());
        let unsent = self.out.unsent();
        (plain && !unsent.is_empty()).then(|| (self.stream.fd(), unsent))
    }

    /// Takes the outcome of the send [`Conn::batched_send`] gave.
    pub(super) fn batch_sent(&mut self, sent: io::Result<usize>, stats: &ConnStats) -> SendEnd {
        match sent {
            Ok(0) => {
                self.eof = true;
                SendEnd::Failed
            }
            Ok(n) => {
                self.out.sent(n);
                self.last_active = super::turn::now();
                stats.net_out.fetch_add(n as u64, Relaxed);
                if self.out.unsent().is_empty() {
                    self.out.all_sent();
                    SendEnd::Done
                } else {
                    SendEnd::More
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => SendEnd::Full,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => SendEnd::More,
            Err(_) => {
                self.eof = true;
                SendEnd::Failed
            }
        }
    }
}

impl Conn {
    /// After a poller's reply reached the connection: the slow log takes
    /// the watched commands whose replies are now complete.
    pub(super) fn replies_done(&mut self, log: &SlowLog) {
        if self.slow.awaits() {
            let first = self.out.first_owed();
            self.slow.replies_done(log, first, &self.info);
        }
    }

    /// Appends a pub/sub message for this subscriber (in order after the
    /// replies owed), unless it has unsubscribed meanwhile or silenced
    /// its replies (CLIENT REPLY OFF, as Redis).
    pub(super) fn push_published(&mut self, d: &super::pubsub::Delivery) {
        if !self.subs.wants(d) || self.reply_off {
            return;
        }
        let p = self.proto;
        self.out
            .ready(None, |o| super::pubsub::write_message(o, &d.bytes, p));
    }
}
