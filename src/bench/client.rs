//! One client thread: a mio event loop over its share of the connections.
//!
//! Each connection keeps up to `inflight` requests outstanding. Whenever
//! replies come in, it parses them, tops the pipeline up again and sends
//! all new requests with one write. Buffers are reused, so a request in
//! steady state allocates nothing.
//!
//! With `--rate`, the thread issues operations on a fixed schedule instead
//! (open loop): operation k is due at `start + k / rate`, a timerfd wakes
//! the loop at that time (epoll's timeout counts whole milliseconds), and
//! the operation goes to the next connection with room, its latency
//! counted from the time it was due.
//!
//! Sockets are registered edge-triggered. A read that returns fewer bytes
//! than asked for, or a write that takes fewer than offered, has drained the
//! socket (epoll(7)), which saves the extra call that would only return
//! `WouldBlock`; the next edge will report any change.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::plan::{Plan, Verify};
use super::report::Stats;
use super::resp::{ProtocolError, Reply};
use crate::keys::{self, ValueGen};

/// Initial size of a connection's input buffer, and the size of its reads.
const READ_CHUNK: usize = 64 << 10;

/// A read is not attempted into less free space than this: the buffer is
/// compacted or grown first.
const MIN_READ: usize = 16 << 10;

/// One connection, ready to be handed to a [`Worker`].
pub struct Connection {
    /// Position in the run's connections, for messages.
    pub id: usize,
    /// A connected, non-blocking socket.
    pub stream: TcpStream,
    /// This connection's own random sequence of keys and operations.
    pub rng: Xoshiro256PlusPlus,
}

/// What a client thread saw, and when it stopped issuing requests.
pub struct Outcome {
    /// Counters and latencies.
    pub stats: Stats,
    /// When the issuing phase ended for this thread.
    pub stopped: Instant,
}

/// Token of a paced worker's timer.
const TIMER: Token = Token(usize::MAX);

/// A client thread's event loop.
pub struct Worker<'p> {
    poll: Poll,
    conns: Vec<Conn>,
    /// Connections not yet dropped.
    open: usize,
    driver: Driver<'p>,
    /// `--rate`: this thread's schedule.
    pacer: Option<Pacer>,
}

/// An open-loop schedule: operation k is due at `start + k / rate`.
struct Pacer {
    /// Operations per second this thread offers.
    rate: f64,
    start: Instant,
    /// Operations issued so far (the next one is due at `due(issued)`).
    issued: u64,
    /// The connection that gets the next operation, round robin.
    next_conn: usize,
    timer: Timer,
}

impl Pacer {
    /// When operation `k` is due.
    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }
}

/// A timerfd: epoll reports it readable once its time has come, with the
/// clock's precision rather than epoll's milliseconds.
struct Timer {
    fd: OwnedFd,
    /// `start` on the CLOCK_MONOTONIC scale, for absolute settings.
    base: libc::timespec,
    start: Instant,
}

impl Timer {
    fn new(start: Instant) -> io::Result<Timer> {
        // SAFETY: plain system call; a valid descriptor or -1 comes back.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut base = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the call only writes `base`. Read right after `start`,
        // as Instant reads the same clock.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut base) };
        Ok(Timer { fd, base, start })
    }

    /// Fires once at `at` (at once if it has passed).
    fn set(&self, at: Instant) -> io::Result<()> {
        let ns = self.base.tv_nsec as u128
            + at.saturating_duration_since(self.start).as_nanos()
            // Never 0, which would disarm the timer.
            + 1;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: self.base.tv_sec + (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Takes the expiry count, so that the next expiry is a new edge.
    fn clear(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `n`; a timer that has not
        // fired fails with EAGAIN, which is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    }
}

impl<'p> Worker<'p> {
    /// Registers `connections` with a new poller; `rate` is the operations
    /// per second this thread offers (`None`: as fast as replies come).
    pub fn new(
        plan: &'p Plan,
        connections: Vec<Connection>,
        rate: Option<f64>,
    ) -> Result<Worker<'p>> {
        let poll = Poll::new().context("creating a poller")?;
        let mut conns = Vec::with_capacity(connections.len());
        for (slot, connection) in connections.into_iter().enumerate() {
            let mut conn = Conn::new(connection, plan.inflight);
            poll.registry()
                .register(
                    &mut conn.stream,
                    Token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .context("registering a connection with the poller")?;
            conns.push(conn);
        }
        let pacer = match rate {
            None => None,
            Some(rate) => {
                let start = Instant::now();
                let timer = Timer::new(start).context("creating a timer")?;
                poll.registry()
                    .register(
                        &mut mio::unix::SourceFd(&timer.fd.as_raw_fd()),
                        TIMER,
                        Interest::READABLE,
                    )
                    .context("registering the timer")?;
                Some(Pacer {
                    rate,
                    start,
                    issued: 0,
                    next_conn: 0,
                    timer,
                })
            }
        };
        Ok(Worker {
            poll,
            open: conns.len(),
            conns,
            driver: Driver::new(plan)?,
            pacer,
        })
    }

    /// With `--rate`: issues every operation due by `now` to connections
    /// with room, in turn; those that find none wait for replies to make
    /// room, keeping their due time. Arms the timer for the next one.
    fn pace(&mut self, now: Instant) -> Result<()> {
        let inflight = self.driver.plan.inflight;
        let n = self.conns.len();
        loop {
            let Some(p) = self.pacer.as_mut() else {
                return Ok(());
            };
            let due = p.due(p.issued);
            if due > now {
                return p.timer.set(due).context("setting the timer");
            }
            let conns = &self.conns;
            let room = |&i: &usize| conns[i].open && conns[i].pending.len() < inflight;
            let Some(slot) = (0..n).map(|i| (p.next_conn + i) % n).find(room) else {
                // Replies will make room: their events bring the loop back.
                return Ok(());
            };
            p.next_conn = (slot + 1) % n;
            p.issued += 1;
            let conn = &mut self.conns[slot];
            if let Some(op) = self.driver.next_op(&mut conn.rng, due) {
                self.driver
                    .encode(&op, &mut conn.rng, &mut conn.output.queue);
                conn.pending.push_back(op);
            }
            if let Err(failure) = conn.output.send(&mut conn.stream) {
                self.drop_conn(slot, failure);
            }
        }
    }

    /// Issues requests until `deadline`, then waits at most the plan's drain
    /// time for the outstanding replies.
    pub fn run(mut self, deadline: Instant) -> Result<Outcome> {
        let drain_deadline = deadline + self.driver.plan.drain;
        let mut events = Events::with_capacity(self.conns.len().max(64));
        let mut stopped = None;
        for slot in 0..self.conns.len() {
            self.service(slot, false, true);
        }
        loop {
            let now = Instant::now();
            let issuing = now < deadline;
            if !issuing {
                stopped.get_or_insert(now);
                if self.quiet() || now >= drain_deadline {
                    break;
                }
            }
            if self.open == 0 || (self.driver.exhausted() && self.quiet()) {
                break;
            }
            if issuing {
                self.pace(now)?;
            }
            let until = if issuing { deadline } else { drain_deadline };
            self.poll_once(&mut events, until - now, issuing)?;
        }
        Ok(Outcome {
            stats: self.driver.stats,
            stopped: stopped.unwrap_or_else(Instant::now),
        })
    }

    /// Waits for readiness for at most `timeout` and serves what is ready.
    fn poll_once(&mut self, events: &mut Events, timeout: Duration, issuing: bool) -> Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e).context("waiting for the connections"),
        }
        for event in events.iter() {
            if event.token() == TIMER {
                if let Some(p) = &self.pacer {
                    p.timer.clear();
                }
                continue;
            }
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            self.service(event.token().0, readable, issuing);
        }
        Ok(())
    }

    /// Lets connection `slot` make progress; drops it on failure.
    fn service(&mut self, slot: usize, readable: bool, issuing: bool) {
        let conn = &mut self.conns[slot];
        if !conn.open {
            return;
        }
        let paced = self.pacer.is_some();
        let Err(failure) = conn.service(&mut self.driver, readable, issuing && !paced) else {
            return;
        };
        self.drop_conn(slot, failure);
    }

    /// Counts the failure of connection `slot` and stops serving it.
    fn drop_conn(&mut self, slot: usize, failure: ConnError) {
        let conn = &mut self.conns[slot];
        let addr = &self.driver.plan.addr;
        self.driver
            .stats
            .error(|| format!("connection {} to {addr}: {failure}", conn.id));
        // The socket is closed when the worker ends; until then it only has
        // to stop producing events.
        let _ = self.poll.registry().deregister(&mut conn.stream);
        conn.open = false;
        self.open -= 1;
    }

    /// Whether no open connection waits for a reply.
    fn quiet(&self) -> bool {
        self.conns
            .iter()
            .all(|conn| !conn.open || conn.pending.is_empty())
    }
}

/// Why a connection was dropped.
#[derive(Debug)]
enum ConnError {
    Closed { outstanding: usize },
    Io(io::Error),
    Protocol(ProtocolError),
    Unsolicited,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Closed { outstanding } => write!(
                f,
                "closed by the server with {outstanding} requests outstanding"
            ),
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Protocol(e) => write!(f, "protocol error: {}", e.message()),
            ConnError::Unsolicited => write!(f, "reply without a request"),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> Self {
        ConnError::Protocol(e)
    }
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    /// Index of the key in the data set.
    index: u64,
    kind: OpKind,
    /// When the operation's first request was queued.
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Get,
    Set,
    /// The GET of a read-modify-write.
    RmwGet,
    /// The SET of a read-modify-write, sent once its GET is answered.
    RmwSet,
    /// A SET of the key's loaded value (`--fill`).
    Fill,
}

/// A connection's socket, buffers and pipeline.
struct Conn {
    id: usize,
    stream: TcpStream,
    rng: Xoshiro256PlusPlus,
    input: InputBuf,
    output: OutputBuf,
    /// Requests sent, oldest first: the server answers in this order.
    pending: VecDeque<Pending>,
    open: bool,
}

impl Conn {
    fn new(connection: Connection, inflight: usize) -> Conn {
        Conn {
            id: connection.id,
            stream: connection.stream,
            rng: connection.rng,
            input: InputBuf::new(),
            output: OutputBuf::default(),
            pending: VecDeque::with_capacity(inflight),
            open: true,
        }
    }

    /// Reads and handles replies if `readable`, queues new requests if
    /// `issuing`, and sends what is queued.
    fn service(
        &mut self,
        driver: &mut Driver<'_>,
        readable: bool,
        issuing: bool,
    ) -> Result<(), ConnError> {
        if readable {
            self.receive(driver)?;
        }
        if issuing {
            self.top_up(driver);
        }
        self.output.send(&mut self.stream)
    }

    /// Reads until the socket is drained, handling replies as they complete.
    fn receive(&mut self, driver: &mut Driver<'_>) -> Result<(), ConnError> {
        loop {
            let space = self.input.space();
            let wanted = space.len();
            let got = match self.stream.read(space) {
                Ok(0) => {
                    return Err(ConnError::Closed {
                        outstanding: self.pending.len(),
                    })
                }
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.input.filled(got);
            self.handle_replies(driver, Instant::now())?;
            if got < wanted {
                return Ok(());
            }
        }
    }

    /// Handles every complete reply in the input buffer; `now` is when they
    /// arrived.
    fn handle_replies(&mut self, driver: &mut Driver<'_>, now: Instant) -> Result<(), ConnError> {
        let protocol = driver.plan.protocol;
        while let Some((reply, used)) = protocol.parse(self.input.unparsed())? {
            let op = self.pending.pop_front().ok_or(ConnError::Unsolicited)?;
            if let Some(follow_up) = driver.complete(op, reply, now) {
                driver.encode(&follow_up, &mut self.rng, &mut self.output.queue);
                self.pending.push_back(follow_up);
            }
            self.input.consume(used);
        }
        Ok(())
    }

    /// Queues new operations until `inflight` requests are outstanding.
    fn top_up(&mut self, driver: &mut Driver<'_>) {
        if self.pending.len() >= driver.plan.inflight {
            return;
        }
        let now = Instant::now();
        while self.pending.len() < driver.plan.inflight {
            let Some(op) = driver.next_op(&mut self.rng, now) else {
                break;
            };
            driver.encode(&op, &mut self.rng, &mut self.output.queue);
            self.pending.push_back(op);
        }
    }
}

/// Bytes received and not yet parsed.
struct InputBuf {
    buf: Vec<u8>,
    /// Start of the unparsed bytes.
    start: usize,
    /// End of the received bytes.
    end: usize,
}

impl InputBuf {
    fn new() -> InputBuf {
        InputBuf {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    fn unparsed(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, len: usize) {
        self.start += len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space to read into, at least [`MIN_READ`] bytes: the unparsed
    /// bytes move to the front, and the buffer doubles if a reply larger
    /// than it is arriving.
    fn space(&mut self) -> &mut [u8] {
        if self.buf.len() - self.end < MIN_READ && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < MIN_READ {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks `len` bytes after the received ones as received.
    fn filled(&mut self, len: usize) {
        self.end += len;
    }
}

/// Requests encoded and not yet written to the socket.
#[derive(Default)]
struct OutputBuf {
    queue: Vec<u8>,
    /// How much of `queue` the socket has taken.
    sent: usize,
}

impl OutputBuf {
    /// Writes as much as the socket takes.
    fn send(&mut self, stream: &mut TcpStream) -> Result<(), ConnError> {
        while self.sent < self.queue.len() {
            let unsent = &self.queue[self.sent..];
            match stream.write(unsent) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(written) => {
                    self.sent += written;
                    if written < unsent.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.queue.clear();
        self.sent = 0;
        Ok(())
    }
}

/// Chooses operations, encodes requests and judges replies, for all the
/// connections of a thread.
pub(super) struct Driver<'p> {
    pub(super) plan: &'p Plan,
    pub(super) stats: Stats,
    /// Scratch space for a key.
    key: Vec<u8>,
    /// Scratch space for the loaded value a GET should return.
    expected: Vec<u8>,
    /// Scratch space for a value `--fill` writes.
    value: Vec<u8>,
}

impl<'p> Driver<'p> {
    pub(super) fn new(plan: &'p Plan) -> Result<Driver<'p>> {
        let expected = match plan.verify {
            Verify::Full => vec![0; plan.max_size],
            Verify::Len | Verify::None => Vec::new(),
        };
        Ok(Driver {
            plan,
            stats: Stats::new()?,
            key: Vec::with_capacity(64),
            expected,
            value: Vec::new(),
        })
    }

    /// Whether `--fill` has handed out every key.
    pub(super) fn exhausted(&self) -> bool {
        self.plan
            .fill
            .as_ref()
            .is_some_and(|next| next.load(Relaxed) >= self.plan.key_count)
    }

    /// A new operation on a random key (with `--fill`, the next key, until
    /// there are none), starting `now`.
    pub(super) fn next_op(&self, rng: &mut Xoshiro256PlusPlus, now: Instant) -> Option<Pending> {
        if let Some(next) = &self.plan.fill {
            let index = next.fetch_add(1, Relaxed);
            return (index < self.plan.key_count).then_some(Pending {
                index,
                kind: OpKind::Fill,
                started: now,
            });
        }
        let index = self.plan.keys.next(rng);
        let mix = &self.plan.mix;
        let kind = match (rng.gen_bool(mix.write_fraction), mix.read_modify_write) {
            (false, _) => OpKind::Get,
            (true, false) => OpKind::Set,
            (true, true) => OpKind::RmwGet,
        };
        Some(Pending {
            index,
            kind,
            started: now,
        })
    }

    /// Appends the request of `op` to `out`. A SET carries random bytes, as
    /// many as the key's loaded value has.
    fn encode(&mut self, op: &Pending, rng: &mut Xoshiro256PlusPlus, out: &mut Vec<u8>) {
        let plan = self.plan;
        self.key.clear();
        keys::write_key(plan.seed, op.index, &mut self.key);
        let protocol = plan.protocol;
        match op.kind {
            OpKind::Get | OpKind::RmwGet => protocol.encode_get(out, &self.key),
            OpKind::Set | OpKind::RmwSet => {
                let len = ValueGen::new(plan.seed, op.index, plan.min_size, plan.max_size).len();
                let offset = rng.gen_range(0..=plan.write_data.len() - len);
                protocol.encode_set(out, &self.key, &plan.write_data[offset..offset + len]);
            }
            OpKind::Fill => {
                let loaded = ValueGen::new(plan.seed, op.index, plan.min_size, plan.max_size);
                self.value.resize(loaded.len(), 0);
                loaded.fill(&mut self.value);
                protocol.encode_set(out, &self.key, &self.value);
            }
        }
    }

    /// The key of `op` into `key`, and for a write the value it carries
    /// into `value` (as [`Driver::encode`] chooses them); returns whether
    /// `op` writes. For `bench --local`, which sends operations, not RESP.
    pub(super) fn request(
        &mut self,
        op: &Pending,
        rng: &mut Xoshiro256PlusPlus,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> bool {
        let plan = self.plan;
        key.clear();
        keys::write_key(plan.seed, op.index, key);
        value.clear();
        match op.kind {
            OpKind::Get | OpKind::RmwGet => false,
            OpKind::Set | OpKind::RmwSet => {
                let len = ValueGen::new(plan.seed, op.index, plan.min_size, plan.max_size).len();
                let offset = rng.gen_range(0..=plan.write_data.len() - len);
                value.extend_from_slice(&plan.write_data[offset..offset + len]);
                true
            }
            OpKind::Fill => {
                let loaded = ValueGen::new(plan.seed, op.index, plan.min_size, plan.max_size);
                value.resize(loaded.len(), 0);
                loaded.fill(value);
                true
            }
        }
    }

    /// Accounts for the reply to `op`, received `now`. Returns the SET to
    /// send next when `op` is the GET of a read-modify-write.
    pub(super) fn complete(
        &mut self,
        op: Pending,
        reply: Reply<'_>,
        now: Instant,
    ) -> Option<Pending> {
        match op.kind {
            OpKind::Get => {
                self.check_get(op.index, reply);
            }
            OpKind::RmwGet => {
                if self.check_get(op.index, reply) {
                    return Some(Pending {
                        kind: OpKind::RmwSet,
                        ..op
                    });
                }
            }
            OpKind::Set | OpKind::RmwSet | OpKind::Fill => self.check_set(op.index, reply),
        }
        self.stats
            .complete(now.saturating_duration_since(op.started));
        None
    }

    /// Checks a GET reply; returns whether the server answered it with a
    /// value or nil.
    fn check_get(&mut self, index: u64, reply: Reply<'_>) -> bool {
        self.stats.reads += 1;
        match reply {
            Reply::Bulk(value) => {
                self.verify(index, value);
                true
            }
            Reply::Nil => {
                self.stats.misses += 1;
                true
            }
            other => {
                self.unexpected("GET", index, other);
                false
            }
        }
    }

    fn check_set(&mut self, index: u64, reply: Reply<'_>) {
        self.stats.writes += 1;
        if reply != Reply::Simple(b"OK") {
            self.unexpected("SET", index, reply);
        }
    }

    /// Compares a GET's value with the loaded one, as far as the plan says.
    fn verify(&mut self, index: u64, value: &[u8]) {
        let plan = self.plan;
        if plan.verify == Verify::None {
            return;
        }
        let loaded = ValueGen::new(plan.seed, index, plan.min_size, plan.max_size);
        let expected_len = loaded.len();
        if value.len() != expected_len {
            let key = key_text(plan.seed, index);
            let got = value.len();
            self.stats
                .error(|| format!("key {key}: length {got}, expected {expected_len}"));
            return;
        }
        if plan.verify == Verify::Full {
            let expected = &mut self.expected[..expected_len];
            loaded.fill(expected);
            if value != expected {
                let key = key_text(plan.seed, index);
                self.stats.error(|| format!("key {key}: contents differ"));
            }
        }
    }

    /// Counts a reply of the wrong type or an error reply to `command`.
    fn unexpected(&mut self, command: &str, index: u64, reply: Reply<'_>) {
        let seed = self.plan.seed;
        self.stats
            .error(|| format!("{command} {}: {}", key_text(seed, index), describe(reply)));
    }
}

fn key_text(seed: u64, index: u64) -> String {
    String::from_utf8_lossy(&keys::key(seed, index)).into_owned()
}

/// A reply as `redis-cli` would show it, shortened.
fn describe(reply: Reply<'_>) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    match reply {
        Reply::Simple(s) => format!("unexpected reply +{}", text(s)),
        Reply::Error(e) => format!("error reply -{}", text(e)),
        Reply::Integer(n) => format!("unexpected reply :{n}"),
        Reply::Bulk(b) => format!("unexpected bulk reply of {} bytes", b.len()),
        Reply::Nil => "unexpected nil reply".to_owned(),
        Reply::Array(n) => format!("unexpected array reply of {n} elements"),
    }
}
