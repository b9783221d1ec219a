//! Connection threads: each runs one epoll loop (mio) over many client
//! connections, parses pipelined RESP, answers what it can itself, sends
//! key-addressed requests to the owning poller, and writes replies back in
//! request order.
//!
//! Limits: a connection stops parsing new commands while the replies it has
//! not read pass [`OUTPUT_PAUSE`] (so a slow reader is throttled), and is
//! disconnected once they pass `--max-output-buffer`, sends a request over
//! `--max-query-buffer`, or stays idle past `--timeout`. `--max-clients`
//! and protected mode are checked when a connection arrives.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::{self, Relaxed};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Registry, Token};

use super::access;
use super::msg::{ConnRef, Reply, Request, Response};
use super::Shared;
use crate::resp::{self, Limits};

/// Token of the thread's waker.
pub(super) const WAKER: Token = Token(usize::MAX);
/// Unparsed input a connection may buffer before reading pauses.
const READ_AHEAD: usize = 256 << 10;
/// Bytes read per read call.
const READ_CHUNK: usize = 64 << 10;
/// How long shutdown waits for replies still owed to clients.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Reply bytes a connection may leave unread before its new commands wait
/// (at most half of `--max-output-buffer`).
const OUTPUT_PAUSE: usize = 1 << 20;
/// Request bytes (keys and values) a connection may have with the pollers
/// before its new commands wait for replies.
const INPUT_IN_FLIGHT: usize = 8 << 20;
/// Read-parse-write rounds one service of a connection may take when
/// its output keeps draining.
const RESUME_ROUNDS: u32 = 8;
/// How often idle connections are looked for (with `--timeout`).
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// A connection holding less than this is never evicted for
/// `--maxmemory-clients`.
const EVICT_MIN: u64 = 1 << 20;

/// A client socket: TCP, or the Unix-domain socket.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

impl mio::event::Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// Whether a client has left more reply bytes unread than `limit` (0: no
/// limit).
fn over_limit(limit: usize, c: &Conn) -> bool {
    limit > 0 && c.pending_output() > limit
}

/// Bytes the RESP form of `r` takes (for the output-buffer limit; an
/// integer is counted at its largest).
fn reply_len(r: &Reply) -> usize {
    match r {
        Reply::Encoded(b) => b.len(),
        Reply::Nil => 5,
        Reply::Int(_) => 22,
        Reply::Error(m) => m.len() + 3,
    }
}

/// How the parts of a multi-key reply combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Combine {
    /// An array of the parts (MGET).
    Array,
    /// The sum of integer parts (EXISTS, DEL).
    Sum,
    /// `+OK` when every part is (MSET); else the first other reply.
    AllOk,
}

/// A reply a connection owes, in request order.
#[derive(Debug)]
enum Slot {
    /// Ready, but an earlier reply is still outstanding.
    Ready(Vec<u8>),
    /// Waiting for one poller reply.
    Single(Option<Reply>),
    /// Waiting for `left` of the parts.
    Multi {
        combine: Combine,
        left: u32,
        parts: Vec<Option<Reply>>,
    },
    /// A reply awaited from the pollers that the client is not to get
    /// (`CLIENT REPLY OFF | SKIP`): kept for its place in the order.
    Silent(Box<Slot>),
}

impl Slot {
    fn complete(&self) -> bool {
        match self {
            Slot::Ready(_) => true,
            Slot::Single(r) => r.is_some(),
            Slot::Multi { left, .. } => *left == 0,
            Slot::Silent(s) => s.complete(),
        }
    }

    /// Reply bytes the slot holds already.
    fn held(&self) -> usize {
        match self {
            Slot::Ready(b) => b.len(),
            Slot::Single(r) => r.as_ref().map_or(0, reply_len),
            Slot::Multi { parts, .. } => parts.iter().flatten().map(reply_len).sum(),
            Slot::Silent(s) => s.held(),
        }
    }

    fn encode(self, out: &mut Vec<u8>) {
        match self {
            Slot::Ready(b) => out.extend_from_slice(&b),
            Slot::Silent(_) => {}
            Slot::Single(r) => r.expect("complete").encode(out),
            Slot::Multi {
                combine: Combine::Array,
                parts,
                ..
            } => {
                resp::array(out, parts.len());
                parts
                    .into_iter()
                    .for_each(|p| p.expect("complete").encode(out));
            }
            Slot::Multi {
                combine: Combine::Sum,
                parts,
                ..
            } => {
                let mut sum = 0;
                for p in parts {
                    match p.expect("complete") {
                        Reply::Int(n) => sum += n,
                        other => return other.encode(out),
                    }
                }
                resp::int(out, sum);
            }
            Slot::Multi {
                combine: Combine::AllOk,
                parts,
                ..
            } => {
                let ok = |r: &Reply| matches!(r, Reply::Encoded(b) if b == b"+OK\r\n");
                match parts.into_iter().flatten().find(|r| !ok(r)) {
                    Some(other) => other.encode(out),
                    None => resp::simple(out, "OK"),
                }
            }
        }
    }
}

/// Where a connection's replies stood before a command (see
/// [`Conn::command_done`]).
pub(super) struct ReplyMark {
    wbuf: usize,
    slots: usize,
}

/// One client connection.
pub(super) struct Conn {
    stream: Stream,
    pub(super) me: ConnRef,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    slots: VecDeque<Slot>,
    /// Id of `slots[0]`; ids are given to replies in request order.
    first_id: u64,
    /// The last parse needed more input than was buffered.
    need_more: bool,
    /// Where the parse of the incomplete command at `rpos` stopped, and
    /// the arguments of the command just parsed.
    parsed: resp::Resume,
    /// Close once every reply owed is written (QUIT, protocol error).
    pub(super) closing: bool,
    /// The socket failed or was reset: nothing more can be written.
    eof: bool,
    /// The client shut down its write side (or closed): nothing more
    /// comes in, but the replies to what it sent are still written.
    input_closed: bool,
    queued: bool,
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
    /// Reply bytes waiting in `slots` behind an earlier reply.
    held: usize,
    /// Parsing stopped because too many reply bytes were unread or owed.
    paused: bool,
    /// Moving average of this connection's reply sizes, to foresee the
    /// bytes of the replies still owed.
    reply_avg: usize,
    /// Request bytes of the commands awaiting replies, and per command its
    /// reply id and bytes, oldest first.
    in_flight: usize,
    costs: VecDeque<(u64, usize)>,
    /// Last time bytes came in or went out (for `--timeout`).
    last_active: Instant,
    /// The command being executed and when it was parsed; then, per owed
    /// reply (aligned with `slots`), the same for the reply's command.
    pub(super) timing: Option<(u16, Instant)>,
    timings: VecDeque<Option<(u16, Instant)>>,
    cmd_stats: std::sync::Arc<super::stats::CommandStats>,
    /// Bytes this connection has added to the server's client memory.
    charged: usize,
}

impl Conn {
    fn next_id(&self) -> u64 {
        self.first_id + self.slots.len() as u64
    }

    /// Emits a reply that is ready now.
    pub(super) fn reply(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let timing = self.timing.take();
        if self.slots.is_empty() {
            f(&mut self.wbuf);
            self.first_id += 1;
            if let Some((cmd, t)) = timing {
                self.cmd_stats.observe(cmd, t);
            }
        } else {
            let mut b = Vec::new();
            f(&mut b);
            self.held += b.len();
            self.slots.push_back(Slot::Ready(b));
            self.timings.push_back(timing);
        }
    }

    /// Reserves the place of a reply that pollers will fill: `parts` parts
    /// combined by `combine` (`None` for a single reply). Returns its id.
    pub(super) fn expect(&mut self, parts: usize, combine: Option<Combine>) -> u64 {
        let id = self.next_id();
        self.timings.push_back(self.timing.take());
        self.slots.push_back(match combine {
            None => Slot::Single(None),
            Some(combine) => Slot::Multi {
                combine,
                left: parts as u32,
                parts: vec![None; parts],
            },
        });
        id
    }

    /// Where the replies stand before a command is executed.
    pub(super) fn reply_mark(&self) -> ReplyMark {
        ReplyMark {
            wbuf: self.wbuf.len(),
            slots: self.slots.len(),
        }
    }

    /// After a command executed: drops the reply it left if the client
    /// is not to get it (`CLIENT REPLY OFF | SKIP`), keeping the order of
    /// the others, and moves `CLIENT REPLY SKIP` on to the next command.
    pub(super) fn command_done(&mut self, mark: ReplyMark) {
        if self.reply_off || self.reply_skip {
            if self.slots.len() > mark.slots {
                match self.slots.pop_back().expect("a slot was added") {
                    Slot::Ready(b) => {
                        self.held -= b.len();
                        self.timings.pop_back();
                    }
                    awaited => self.slots.push_back(Slot::Silent(Box::new(awaited))),
                }
            } else {
                // Nothing is written while a command executes: what is
                // past the mark is this command's reply.
                self.wbuf.truncate(mark.wbuf);
            }
        }
        self.reply_skip = std::mem::take(&mut self.reply_skip_next);
    }

    fn deliver(&mut self, r: Response) {
        let Some(slot) =
            r.id.checked_sub(self.first_id)
                .and_then(|i| self.slots.get_mut(i as usize))
        else {
            tracing::error!(id = r.id, "reply for an unknown request");
            return;
        };
        let len = reply_len(&r.reply);
        self.held += len;
        self.reply_avg = (self.reply_avg * 3 + len) / 4;
        let slot = match slot {
            Slot::Silent(inner) => inner,
            other => other,
        };
        match slot {
            Slot::Single(s) => *s = Some(r.reply),
            Slot::Multi { left, parts, .. } => {
                parts[r.part as usize] = Some(r.reply);
                *left -= 1;
            }
            Slot::Ready(_) | Slot::Silent(_) => {
                tracing::error!("reply for a request answered already")
            }
        }
        while self.slots.front().is_some_and(Slot::complete) {
            let s = self.slots.pop_front().expect("front");
            self.held = self.held.saturating_sub(s.held());
            s.encode(&mut self.wbuf);
            self.first_id += 1;
            if let Some(Some((cmd, t))) = self.timings.pop_front() {
                self.cmd_stats.observe(cmd, t);
            }
        }
        while let Some(&(_, n)) = self.costs.front().filter(|(id, _)| *id < self.first_id) {
            self.in_flight -= n;
            self.costs.pop_front();
        }
    }

    fn unparsed(&self) -> usize {
        self.rlen - self.rpos
    }

    /// Reply bytes the client has not read: unsent, and waiting in slots.
    fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos + self.held
    }
}

/// Sends requests to pollers, holding them when a ring is full.
///
/// Flow control is per connection and per poller: a request for a poller
/// whose ring is full waits in that poller's queue here (behind the others
/// held for it, so each poller still sees a connection's requests in
/// order), and only its connection stops parsing until it has gone out.
/// The other connections go on, and requests for the other pollers are
/// not held up.
pub(super) struct Router<'a> {
    pub(super) shared: &'a Shared,
    pub(super) thread: usize,
    /// Per poller, the requests its full ring could not take yet.
    stalled: Vec<VecDeque<Request>>,
    /// Requests held in `stalled`, in all.
    held: usize,
    /// Per connection slot, its requests held in `stalled`.
    held_by: Vec<u32>,
    /// Connections whose last held request went out: they parse again.
    released: Vec<u32>,
    touched: Vec<bool>,
    /// Requests sent to pollers and replies received, to know when to spin.
    sent: u64,
    answered: u64,
}

impl Router<'_> {
    pub(super) fn send(&mut self, poller: usize, req: Request) {
        self.touched[poller] = true;
        self.sent += 1;
        let req = if self.stalled[poller].is_empty() {
            match self.shared.pollers[poller].inbox.push(req) {
                Ok(()) => return,
                Err(req) => req,
            }
        } else {
            req
        };
        let slot = req.from.slot as usize;
        if self.held_by.len() <= slot {
            self.held_by.resize(slot + 1, 0);
        }
        self.held_by[slot] += 1;
        self.held += 1;
        self.shared.conn_stats[self.thread]
            .ring_full_waits
            .fetch_add(1, Relaxed);
        self.stalled[poller].push_back(req);
    }

    /// Whether connection `slot` has requests waiting for a full ring.
    fn holds(&self, slot: u32) -> bool {
        self.held_by.get(slot as usize).is_some_and(|&n| n > 0)
    }

    /// Hands the pollers what their rings can take now.
    fn retry(&mut self) {
        if self.held == 0 {
            return;
        }
        for (p, q) in self.stalled.iter_mut().enumerate() {
            while let Some(req) = q.pop_front() {
                let slot = req.from.slot as usize;
                if let Err(req) = self.shared.pollers[p].inbox.push(req) {
                    q.push_front(req);
                    break;
                }
                self.touched[p] = true;
                self.held -= 1;
                self.held_by[slot] -= 1;
                if self.held_by[slot] == 0 {
                    self.released.push(slot as u32);
                }
            }
        }
    }

    fn ring(&mut self) {
        for (p, t) in self.touched.iter_mut().enumerate() {
            if std::mem::take(t) {
                self.shared.pollers[p].ring();
            }
        }
    }
}

struct Thread<'a> {
    shared: &'a Shared,
    id: usize,
    poll: mio::Poll,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    to_service: Vec<u32>,
    router: Router<'a>,
    limits: Limits,
    /// The limits before AUTH, when a password is set.
    pre_auth: Limits,
    /// How long to poll without sleeping while replies are awaited.
    spin: Duration,
    /// `--max-output-buffer` (0: none), and the point where parsing pauses.
    output_limit: usize,
    output_pause: usize,
    /// `--timeout`, when set.
    idle_timeout: Option<Duration>,
}

/// Runs connection thread `id` until shutdown.
pub(super) fn run(id: usize, poll: mio::Poll, shared: &Shared) {
    let mut t = Thread {
        shared,
        id,
        poll,
        conns: Vec::new(),
        gens: Vec::new(),
        free: Vec::new(),
        to_service: Vec::new(),
        router: Router {
            shared,
            thread: id,
            stalled: (0..shared.pollers.len()).map(|_| VecDeque::new()).collect(),
            held: 0,
            held_by: Vec::new(),
            released: Vec::new(),
            touched: vec![false; shared.pollers.len()],
            sent: 0,
            answered: 0,
        },
        // Busy polling: spin for as long as replies are awaited, so that
        // pollers never have to wake this thread while it has work.
        spin: match shared.args.poll() {
            super::PollMode::Busy => Duration::MAX,
            super::PollMode::Adaptive => Duration::from_micros(shared.args.loaded_spin_us),
        },
        limits: Limits {
            max_bulk: shared.args.max_bulk as usize,
            max_args: shared.args.max_args,
            ..Limits::default()
        },
        pre_auth: Limits::pre_auth(),
        output_limit: shared.args.max_output_buffer as usize,
        output_pause: match shared.args.max_output_buffer as usize {
            0 => OUTPUT_PAUSE,
            limit => OUTPUT_PAUSE.min(limit / 2),
        },
        idle_timeout: (shared.args.timeout > 0).then(|| Duration::from_secs(shared.args.timeout)),
    };
    t.run();
}

impl Thread<'_> {
    fn handle(&self) -> &super::ConnHandle {
        &self.shared.conns[self.id]
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut drain_deadline = None;
        let mut spin_since: Option<Instant> = None;
        let mut contended = false;
        let mut last_sweep = Instant::now();
        loop {
            let stopping = self.shared.stopping.load(Relaxed);
            while let Some(s) = self.handle().incoming.pop() {
                if !stopping {
                    self.add_tcp(s);
                }
            }
            while let Some(s) = self.handle().incoming_unix.pop() {
                if !stopping {
                    self.add_unix(s);
                }
            }
            if last_sweep.elapsed() >= IDLE_SWEEP {
                last_sweep = Instant::now();
                self.close_idle();
            }
            while let Some(r) = self.handle().responses.pop() {
                self.router.answered += 1;
                spin_since = None;
                contended = false;
                self.deliver(r);
            }
            self.router.retry();
            for slot in std::mem::take(&mut self.router.released) {
                self.schedule(slot);
            }
            for slot in std::mem::take(&mut self.to_service) {
                self.service(slot);
            }
            self.router.ring();

            if stopping {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
                let owed = self.conns.iter().flatten().any(|c| !c.slots.is_empty());
                if !owed || Instant::now() >= deadline {
                    self.close_all();
                    return;
                }
            }

            let h = self.handle();
            let queued = |h: &super::ConnHandle| {
                !h.responses.is_empty() || !h.incoming.is_empty() || !h.incoming_unix.is_empty()
            };
            let busy = queued(h) || !self.to_service.is_empty();
            // Requests held for a full ring count as awaited: the thread
            // polls for room as it polls for replies, then sleeps a
            // millisecond at a time (no event says that a ring has room).
            let held = self.router.held > 0;
            let awaiting = self.router.sent > self.router.answered;
            if busy || !awaiting {
                spin_since = None;
                contended = false;
            }
            let spinning = awaiting
                && !contended
                && spin_since.get_or_insert_with(Instant::now).elapsed() < self.spin;
            if spinning && !busy {
                // A yield that others used at length: the CPU is contended,
                // sleep until the next event instead of polling on.
                contended = super::polite_yield() && self.spin < Duration::MAX;
            }
            let mut timeout = if busy || spinning {
                Duration::ZERO
            } else if held {
                Duration::from_millis(1)
            } else if stopping {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            if !timeout.is_zero() {
                // About to sleep: from here on pollers must ring the waker.
                // Announced only now, so that a poller answering a spinning
                // thread makes no system call.
                h.sleeping.store(true, Ordering::SeqCst);
                std::sync::atomic::fence(Ordering::SeqCst);
                if queued(h) {
                    timeout = Duration::ZERO;
                }
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("epoll: {e}");
                }
            }
            self.handle().sleeping.store(false, Ordering::SeqCst);
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.schedule(ev.token().0 as u32);
                }
            }
        }
    }

    /// Takes a TCP connection from the accept loop.
    fn add_tcp(&mut self, s: std::net::TcpStream) {
        let _ = s.set_nodelay(true);
        if s.set_nonblocking(true).is_err() {
            return;
        }
        let local = s.peer_addr().is_ok_and(|a| access::is_loopback(a.ip()));
        if let Err(msg) = self.admit(local) {
            return access::turn_away(&s, msg);
        }
        self.add(Stream::Tcp(TcpStream::from_std(s)));
    }

    /// Takes a Unix-socket connection from the accept loop (always local).
    fn add_unix(&mut self, s: std::os::unix::net::UnixStream) {
        if s.set_nonblocking(true).is_err() {
            return;
        }
        if let Err(msg) = self.admit(true) {
            return access::turn_away(&s, msg);
        }
        self.add(Stream::Unix(UnixStream::from_std(s)));
    }

    /// Counts a new connection in, unless that would pass `--max-clients`
    /// or protected mode turns it away; `Err` holds what to tell it. The
    /// count is taken before the check, so threads admitting at once can
    /// only err towards turning a client away, never past the limit.
    fn admit(&mut self, local: bool) -> Result<(), &'static [u8]> {
        let st = &self.shared.conn_stats[self.id];
        st.connections.fetch_add(1, Relaxed);
        let total: u64 = (self.shared.conn_stats.iter())
            .map(|c| c.connections.load(Relaxed))
            .sum();
        if total > self.shared.args.max_clients as u64 {
            st.connections.fetch_sub(1, Relaxed);
            st.rejected.fetch_add(1, Relaxed);
            return Err(access::MAX_CLIENTS);
        }
        if !access::protected_mode_allows(self.shared, local) {
            st.connections.fetch_sub(1, Relaxed);
            st.protected_mode_rejections.fetch_add(1, Relaxed);
            return Err(access::DENIED);
        }
        Ok(())
    }

    /// Registers an admitted connection with epoll and services it.
    fn add(&mut self, mut stream: Stream) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.gens.push(0);
                (self.conns.len() - 1) as u32
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("registering a connection: {e}");
            self.free.push(slot);
            self.shared.conn_stats[self.id]
                .connections
                .fetch_sub(1, Relaxed);
            return;
        }
        self.shared.conn_stats[self.id]
            .accepted
            .fetch_add(1, Relaxed);
        self.conns[slot as usize] = Some(Conn {
            stream,
            me: ConnRef {
                thread: self.id as u16,
                slot,
                gen: self.gens[slot as usize],
            },
            rbuf: Vec::new(),
            rpos: 0,
            rlen: 0,
            wbuf: Vec::new(),
            wpos: 0,
            slots: VecDeque::new(),
            first_id: 0,
            need_more: false,
            parsed: resp::Resume::default(),
            closing: false,
            eof: false,
            input_closed: false,
            queued: false,
            authed: self.shared.args.requirepass.is_none(),
            reply_off: false,
            reply_skip: false,
            reply_skip_next: false,
            held: 0,
            paused: false,
            // Pessimistic until replies show their size: a new connection
            // cannot have a burst of large replies in flight at once.
            reply_avg: self.shared.args.max_value_size as usize,
            in_flight: 0,
            costs: VecDeque::new(),
            last_active: Instant::now(),
            timing: None,
            timings: VecDeque::new(),
            charged: 0,
            cmd_stats: std::sync::Arc::clone(&self.shared.conn_stats[self.id].cmds),
        });
        self.schedule(slot);
    }

    fn schedule(&mut self, slot: u32) {
        if let Some(Some(c)) = self.conns.get_mut(slot as usize) {
            if !c.queued {
                c.queued = true;
                self.to_service.push(slot);
            }
        }
    }

    fn deliver(&mut self, r: Response) {
        let slot = r.to.slot;
        match self.conns.get_mut(slot as usize) {
            Some(Some(c)) if c.me.gen == r.to.gen => c.deliver(r),
            _ => return, // the connection closed meanwhile
        }
        // Checked at once: replies for a client that does not read must
        // not pile up until the connection is next serviced.
        let limit = self.output_limit;
        if let Some(c) = self.conns[slot as usize].take_if(|c| over_limit(limit, c)) {
            return self.drop_over_limit(slot, c);
        }
        self.schedule(slot);
    }

    /// Disconnects a client over `--max-output-buffer`.
    fn drop_over_limit(&mut self, slot: u32, c: Conn) {
        tracing::debug!(
            pending = c.pending_output(),
            limit = self.output_limit,
            "disconnecting a client over --max-output-buffer"
        );
        self.shared.conn_stats[self.id]
            .output_limit_disconnects
            .fetch_add(1, Relaxed);
        self.close(slot, c);
    }

    /// Brings the server's client memory up to date with what `c` holds now;
    /// returns whether `c` is to be evicted: the total is over
    /// `--maxmemory-clients` and `c` holds more than a fair share of it
    /// (and at least [`EVICT_MIN`]), so small clients are never the ones.
    fn charge(&mut self, c: &mut Conn) -> bool {
        let now = c.rbuf.capacity() + c.wbuf.capacity() + c.held + c.in_flight;
        let total = if now >= c.charged {
            let add = (now - c.charged) as u64;
            self.shared.client_memory.fetch_add(add, Relaxed) + add
        } else {
            let sub = (c.charged - now) as u64;
            self.shared.client_memory.fetch_sub(sub, Relaxed) - sub
        };
        c.charged = now;
        let budget = self.shared.args.maxmemory_clients;
        if budget == 0 || total <= budget {
            return false;
        }
        let clients: u64 = (self.shared.conn_stats.iter())
            .map(|s| s.connections.load(Relaxed))
            .sum();
        now as u64 >= (budget / clients.max(1)).max(EVICT_MIN)
    }

    fn evict(&mut self, slot: u32, c: Conn) {
        tracing::warn!(
            held = c.charged,
            total = self.shared.client_memory.load(Relaxed),
            budget = self.shared.args.maxmemory_clients,
            "client memory over --maxmemory-clients: closing the connection holding the most"
        );
        self.shared.conn_stats[self.id]
            .evicted_clients
            .fetch_add(1, Relaxed);
        self.close(slot, c);
    }

    /// Closes connections idle for longer than `--timeout` (those awaiting
    /// replies from the pollers are not idle).
    fn close_idle(&mut self) {
        let Some(limit) = self.idle_timeout else {
            return;
        };
        for slot in 0..self.conns.len() {
            let idle = |c: &mut Conn| c.slots.is_empty() && c.last_active.elapsed() > limit;
            if let Some(c) = self.conns[slot].take_if(idle) {
                self.shared.conn_stats[self.id]
                    .idle_disconnects
                    .fetch_add(1, Relaxed);
                self.close(slot as u32, c);
            }
        }
    }

    /// Reads, parses, dispatches and writes for one connection.
    fn service(&mut self, slot: u32) {
        let Some(mut c) = self.conns[slot as usize].take() else {
            return;
        };
        c.queued = false;
        let stopping = self.shared.stopping.load(Relaxed);
        let mut rounds = 0;
        let (flushed, resume) = loop {
            self.read_and_parse(&mut c, stopping);
            let flushed = self.flush(&mut c);
            // Parsing paused for unread output that has now gone out: go on
            // with the commands already buffered (no event will say so),
            // for a few rounds before the other connections get their turn.
            let resume = c.paused && !self.must_pause(&c);
            rounds += 1;
            if !resume || c.eof || c.closing || stopping || rounds == RESUME_ROUNDS {
                break (flushed, resume);
            }
        };
        if over_limit(self.output_limit, &c) {
            return self.drop_over_limit(slot, c);
        }
        if self.charge(&mut c) {
            return self.evict(slot, c);
        }
        // After a half-close: once every command that came in whole is
        // answered (an incomplete one never will be).
        let answered = c.slots.is_empty() && flushed;
        let all_in = c.input_closed && (c.unparsed() == 0 || c.need_more);
        let done = c.eof || (answered && (c.closing || all_in));
        if done {
            self.close(slot, c);
        } else {
            self.conns[slot as usize] = Some(c);
            if resume {
                self.schedule(slot);
            }
        }
    }

    /// Whether a connection must stop parsing for now: its unread replies
    /// pass [`OUTPUT_PAUSE`] (it resumes as they go out); its requests with
    /// the pollers pass [`INPUT_IN_FLIGHT`] bytes; or with the replies
    /// still owed, at its average reply size, its output could pass half of
    /// `--max-output-buffer` (it resumes as replies arrive).
    fn must_pause(&self, c: &Conn) -> bool {
        let pending = c.pending_output();
        let owed = c.slots.len().saturating_mul(c.reply_avg);
        pending >= self.output_pause
            || c.in_flight >= INPUT_IN_FLIGHT
            || (self.output_limit > 0 && pending.saturating_add(owed) >= self.output_limit / 2)
    }

    /// Reads what the socket has and parses and dispatches the commands.
    fn read_and_parse(&mut self, c: &mut Conn, stopping: bool) {
        loop {
            let drained = c.eof || c.input_closed || c.closing || stopping || self.read(c);
            if !stopping {
                self.parse(c);
            }
            // A command larger than the read-ahead needs more of the bytes
            // still waiting in the socket: epoll will not report them again.
            if drained || !c.need_more {
                break;
            }
        }
    }

    /// Reads what the socket has, up to the read-ahead; returns whether the
    /// socket was drained (or closed).
    fn read(&mut self, c: &mut Conn) -> bool {
        while c.unparsed() < READ_AHEAD || c.need_more {
            if c.rbuf.len() < c.rlen + READ_CHUNK {
                c.rbuf.resize(c.rlen + READ_CHUNK, 0);
            }
            let want = c.rbuf.len() - c.rlen;
            match c.stream.read(&mut c.rbuf[c.rlen..]) {
                Ok(0) => {
                    c.input_closed = true;
                    return true;
                }
                Ok(n) => {
                    c.rlen += n;
                    c.need_more = false;
                    c.last_active = Instant::now();
                    self.shared.conn_stats[self.id]
                        .net_in
                        .fetch_add(n as u64, Relaxed);
                    // A short read drained the socket: epoll (edge-triggered)
                    // reports the next arrival, so skip the EAGAIN read.
                    if n < want {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.eof = true;
                    return true;
                }
            }
        }
        false
    }

    fn parse(&mut self, c: &mut Conn) {
        let rbuf = std::mem::take(&mut c.rbuf);
        let mut commands = 0;
        loop {
            c.paused = self.must_pause(c);
            if c.closing
                || c.paused
                || c.slots.len() >= self.shared.args.max_pipeline
                || self.router.holds(c.me.slot)
            {
                break;
            }
            // Chosen per command: an AUTH earlier in the pipeline lifts them.
            let limits = if c.authed {
                &self.limits
            } else {
                &self.pre_auth
            };
            match resp::parse_resumable(&rbuf[c.rpos..c.rlen], limits, &mut c.parsed) {
                Ok(Some(n)) => {
                    let base = c.rpos;
                    c.rpos += n;
                    commands += 1;
                    let args: Vec<&[u8]> = (c.parsed.args.iter())
                        .map(|r| &rbuf[base + r.start..base + r.end])
                        .collect();
                    let id = c.next_id();
                    super::command::execute(c, &mut self.router, &args);
                    if c.next_id() > id && !c.slots.is_empty() {
                        // It awaits a reply (or waits behind one).
                        c.in_flight += n;
                        c.costs.push_back((id, n));
                    }
                }
                Ok(None) if c.unparsed() as u64 > self.shared.args.max_query_buffer => {
                    self.shared.conn_stats[self.id]
                        .query_limit_disconnects
                        .fetch_add(1, Relaxed);
                    let msg = "ERR Protocol error: request larger than --max-query-buffer";
                    c.reply(|o| resp::error(o, msg));
                    c.closing = true;
                    break;
                }
                Ok(None) => {
                    c.need_more = true;
                    break;
                }
                Err(e) => {
                    self.shared.conn_stats[self.id]
                        .protocol_errors
                        .fetch_add(1, Relaxed);
                    c.reply(|o| resp::error(o, &format!("ERR {e}")));
                    c.closing = true;
                    break;
                }
            }
        }
        c.rbuf = rbuf;
        self.shared.conn_stats[self.id]
            .commands
            .fetch_add(commands, Relaxed);
        if c.rpos == c.rlen {
            c.rpos = 0;
            c.rlen = 0;
            if c.rbuf.len() > 4 * READ_CHUNK {
                c.rbuf = Vec::new();
            }
            if c.parsed.args.capacity() > 1024 {
                c.parsed = resp::Resume::default();
            }
        } else if c.rpos > READ_AHEAD {
            c.rbuf.copy_within(c.rpos..c.rlen, 0);
            c.rlen -= c.rpos;
            c.rpos = 0;
        }
    }

    /// Writes what is buffered; returns whether everything went out.
    fn flush(&mut self, c: &mut Conn) -> bool {
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    c.eof = true;
                    return false;
                }
                Ok(n) => {
                    c.wpos += n;
                    c.last_active = Instant::now();
                    self.shared.conn_stats[self.id]
                        .net_out
                        .fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.eof = true;
                    return false;
                }
            }
        }
        c.wpos = 0;
        if c.wbuf.capacity() > 4 << 20 {
            c.wbuf = Vec::new();
        } else {
            c.wbuf.clear();
        }
        true
    }

    fn close(&mut self, slot: u32, mut c: Conn) {
        self.shared
            .client_memory
            .fetch_sub(c.charged as u64, Relaxed);
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.shared.conn_stats[self.id]
            .connections
            .fetch_sub(1, Relaxed);
    }

    /// Writes what each connection is owed (bounded) and closes them all.
    fn close_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        for slot in 0..self.conns.len() {
            if let Some(mut c) = self.conns[slot].take() {
                while !self.flush(&mut c) && !c.eof && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                self.close(slot as u32, c);
            }
        }
    }
}
