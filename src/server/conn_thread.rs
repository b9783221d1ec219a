//! Connection threads: each runs one epoll loop (mio) over many client
//! connections. The loop takes new connections from the accept thread
//! (admission: `--max-clients`, protected mode), replies from the pollers,
//! and socket events; it services each connection that has something to
//! do (read, parse and execute, write: `conn.rs`; with `--socket-io
//! uring` the turn's reads go to the kernel in one io_uring submission and
//! its writes in another, `sockets.rs`), hands the requests
//! held for full rings to the pollers (`router.rs`), and closes the
//! connections that are done, idle past `--timeout`, over
//! `--max-output-buffer`, killed by CLIENT KILL, or evicted for
//! `--maxmemory-clients` (unless CLIENT NO-EVICT ON). While
//! replies are awaited it polls instead of sleeping (adaptive polling).

use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{self, Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Token};

use super::clients::{INTERNAL, MASTER, NO_EVICT};
use super::conn::{Conn, ConnLimits, SendEnd};
use super::msg::{ConnRef, Reply, Response};
use super::poller::Inline;
use super::router::Router;
use super::sockets::{Done, Ring};
use super::stream::Stream;
use super::{access, strings, Shared};

/// Token of the thread's waker.
pub(super) const WAKER: Token = Token(usize::MAX);
/// Token of the doorbell of the poller the thread runs (`--inline-io`).
const BELL: Token = Token(usize::MAX - 1);
/// How long shutdown waits for replies still owed to clients.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-parse-write rounds one service of a connection may take when
/// its output keeps draining.
const RESUME_ROUNDS: u32 = 8;
/// How often idle connections are looked for (with `--timeout`).
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// A connection holding less than this is never evicted for
/// `--maxmemory-clients`.
const EVICT_MIN: u64 = 1 << 20;

/// A yield while polling that took longer than this gave the CPU to other
/// threads for a while: the CPU is contended (as `super::polite_yield`).
const CONTENDED_TURN: Duration = Duration::from_micros(50);

/// A connection thread: its connections by slot, and what it shares
/// among them.
struct Thread<'a> {
    shared: &'a Shared,
    id: usize,
    poll: mio::Poll,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    to_service: Vec<u32>,
    /// The list `to_service` is swapped with for a turn's services.
    serviced: Vec<u32>,
    router: Router<'a>,
    limits: ConnLimits,
    /// How long to poll without sleeping while replies are awaited.
    spin: Duration,
    /// Replies awaited below which the thread sleeps at once.
    spin_depth: u64,
    /// CLIENT KILLs seen (`Clients::kills`).
    kills_seen: u64,
    /// The poller this thread runs between its own turns (`--inline-io`).
    inline: Option<Box<dyn Inline>>,
    /// Connections whose fed value waits for its poller to take a piece
    /// (`Conn::feed_waits`): serviced again once it has.
    feeding: Vec<u32>,
    /// The ring the turn's reads and replies go through (`--socket-io
    /// uring`), and the connections (slot, generation) whose output waits
    /// for it.
    ring: Option<Ring>,
    sending: Vec<(u32, u32)>,
    /// The vectors those reads and sends are listed in, kept from turn to
    /// turn.
    batch: Batch,
}

/// The lists a turn's batched reads and sends are made of (`read_batch`,
/// `send_batch`). The thread keeps them so that a turn allocates none:
/// each is emptied after use and keeps its room, and none holds a pointer
/// between uses.
#[derive(Default)]
struct Batch {
    /// The connection each read or send is for, and the room a read had.
    targets: Vec<(u32, usize)>,
    /// Reads: socket, buffer, room.
    reads: Vec<(i32, *mut u8, usize)>,
    /// Sends: socket, bytes, length.
    sends: Vec<(i32, *const u8, usize)>,
    /// Outcomes, by index into `targets`.
    ends: Vec<(usize, Done)>,
}

impl Batch {
    fn clear(&mut self) {
        self.targets.clear();
        self.reads.clear();
        self.sends.clear();
        self.ends.clear();
    }
}

/// The connection threads, each ending with its poller's result.
pub(super) type Threads = Vec<std::thread::JoinHandle<anyhow::Result<()>>>;

/// Starts a connection thread over each of `polls`, on `conn_cores` when
/// pinned; with `inline` (`--inline-io`), each also opens and runs its
/// poller, and this returns once every poller's engine has opened. The
/// count returned says how many threads have closed their connections.
pub(super) fn spawn_all(
    shared: &Arc<Shared>,
    polls: Vec<mio::Poll>,
    inline: Option<super::poller::PollerInputs>,
    conn_cores: &[usize],
    cores: &[usize],
) -> anyhow::Result<(Threads, Arc<AtomicUsize>)> {
    let pin = shared.cfg.pollers.pinned && !cores.is_empty();
    let core_at = |c: usize| pin.then_some(core_affinity::CoreId { id: c });
    let closed = Arc::new(AtomicUsize::new(0));
    let (opened_tx, opened) = std::sync::mpsc::channel::<Result<(), String>>();
    let n = polls.len();
    let next_seq = inline.as_ref().map_or(0, |i| i.next_seq);
    let mut parts: Vec<Option<_>> = match inline {
        None => (0..n).map(|_| None).collect(),
        Some(inputs) => {
            let dev = Arc::new(inputs.dev);
            // The directory lock stays held while any poller runs.
            let lock = Arc::new(inputs.lock);
            let owned = super::poller::deal(inputs.shards, shared.pollers.len(), shared.sb.shards);
            (owned.into_iter())
                .map(|shards| Some((shards, Arc::clone(&dev), Arc::clone(&lock))))
                .collect()
        }
    };
    let threads = polls
        .into_iter()
        .enumerate()
        .map(|(i, poll)| {
            let sh = Arc::clone(shared);
            let pin = core_at(conn_cores[i]);
            let mine = parts[i].take();
            let opened = opened_tx.clone();
            let closed = Arc::clone(&closed);
            std::thread::Builder::new()
                .name(format!("conn-{i}"))
                .spawn(move || -> anyhow::Result<()> {
                    if let Some(c) = pin {
                        core_affinity::set_for_current(c);
                    }
                    // The device and the directory lock outlive the poller: an engine
                    // may use the device's descriptor as it is (AIO does).
                    let (poller, _held) = match mine {
                        None => (None, None),
                        Some((shards, dev, lock)) => {
                            let p = super::poller::open_inline(
                                i,
                                Arc::clone(&sh),
                                &dev,
                                shards,
                                next_seq,
                            );
                            let _ = opened.send(p.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                            (Some(p?), Some((dev, lock)))
                        }
                    };
                    let back = run(i, poll, &sh, poller);
                    // The inline poller's shutdown turns read the clock.
                    super::turn::end();
                    closed.fetch_add(1, SeqCst);
                    back.map_or(Ok(()), |p| p.finish())
                })
                .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(opened_tx);
    if shared.cfg.pollers.inline {
        for _ in 0..n {
            let failed = match opened.recv() {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => "a connection thread exited before opening its poller's engine".into(),
            };
            shared.stopping.store(true, SeqCst);
            shared.pollers_stop.store(true, SeqCst);
            shared.conns.iter().for_each(|c| {
                c.sleeping.store(true, SeqCst);
                c.ring()
            });
            for t in threads {
                let _ = t.join();
            }
            anyhow::bail!("{failed}");
        }
    }
    Ok((threads, closed))
}

/// Runs connection thread `id` until shutdown, with the poller it runs
/// (`--inline-io`), which it hands back once its connections are closed.
pub(super) fn run(
    id: usize,
    poll: mio::Poll,
    shared: &Shared,
    inline: Option<Box<dyn Inline>>,
) -> Option<Box<dyn Inline>> {
    shared.conn_stats[id].cpu.set_current();
    if let Some(p) = &inline {
        let fd = p.bell_fd();
        let bell = &mut mio::unix::SourceFd(&fd);
        if let Err(e) = poll.registry().register(bell, BELL, Interest::READABLE) {
            tracing::error!("connection thread {id}: watching its poller's doorbell: {e}");
        }
    }
    let mut t = Thread {
        shared,
        id,
        poll,
        conns: Vec::new(),
        gens: Vec::new(),
        free: Vec::new(),
        to_service: Vec::new(),
        serviced: Vec::new(),
        router: Router::new(shared, id),
        // Busy polling: spin for as long as replies are awaited, so that
        // pollers never have to wake this thread while it has work.
        spin: shared.cfg.conns.loaded_spin,
        spin_depth: shared.cfg.conns.spin_depth,
        limits: shared.cfg.conns.limits.clone(),
        kills_seen: 0,
        inline,
        feeding: Vec::new(),
        ring: None,
        sending: Vec::new(),
        batch: Batch::default(),
    };
    if shared.cfg.conns.uring_sockets {
        match Ring::new() {
            Ok(r) => t.ring = Some(r),
            Err(e) => tracing::warn!(
                "connection thread {id}: io_uring for its sockets: {e}; a call per read and send"
            ),
        }
    }
    t.run();
    t.inline
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
        // When the last turn yielded the CPU while replies were awaited.
        let mut yielded_at: Option<Instant> = None;
        loop {
            let now = super::turn::start();
            // The yield took long: other threads used the CPU meanwhile, so
            // sleep until the next event instead of polling on.
            if let Some(t) = yielded_at.take() {
                if now - t >= CONTENDED_TURN && self.spin < Duration::MAX {
                    contended = true;
                }
            }
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
            while let Some((s, master)) = self.handle().incoming_local.pop() {
                if !stopping {
                    self.add_local(s, master);
                }
            }
            if now - last_sweep >= IDLE_SWEEP {
                last_sweep = now;
                self.close_idle();
                self.close_lingering();
            }
            self.close_killed();
            let mut worked = self.inline.as_mut().is_some_and(|p| p.turn());
            while let Some(r) = self.handle().responses.pop() {
                // A reply sent in parts answers its request with its last.
                if !matches!(r.reply, Reply::Part(..)) {
                    self.router.answered();
                }
                spin_since = None;
                contended = false;
                worked = true;
                self.deliver(r);
            }
            self.deliver_published();
            self.router.retry();
            for slot in self.router.take_released() {
                self.schedule(slot);
            }
            self.feed_room();
            worked |= !self.to_service.is_empty();
            self.read_batch();
            // Serviced from a list of their own: a service may schedule
            // its connection again, for the next turn. The two lists swap
            // and keep their room.
            let spare = std::mem::take(&mut self.serviced);
            let mut turn = std::mem::replace(&mut self.to_service, spare);
            for slot in turn.drain(..) {
                self.service(slot);
            }
            self.serviced = turn;
            self.send_batch();
            self.router.ring();
            if let Some(p) = self.inline.as_mut().filter(|p| p.has_requests()) {
                // What this turn parsed goes to the device now, before the
                // thread polls or sleeps (a turn of its own only then: the
                // one at the top of the loop did the rest).
                worked |= p.turn();
            }

            if stopping {
                let deadline = *drain_deadline.get_or_insert(now + DRAIN_TIMEOUT);
                let owed = self.conns.iter().flatten().any(Conn::owes_replies);
                if !owed || now >= deadline {
                    self.close_all();
                    return;
                }
            }

            let h = self.handle();
            let queued = |h: &super::ConnHandle| {
                !h.responses.is_empty()
                    || !h.incoming.is_empty()
                    || !h.incoming_local.is_empty()
                    || !h.incoming_unix.is_empty()
                    || !h.published.is_empty()
            };
            let busy = queued(h) || !self.to_service.is_empty() || worked && self.inline.is_some();
            // Requests held for a full ring count as awaited: the thread
            // polls for room as it polls for replies, then sleeps a
            // millisecond at a time (no event says that a ring has room).
            let held = self.router.holds_any();
            let inline_reads = self.inline.as_ref().map_or(0, |p| p.reads_in_flight());
            // A lone request or two (`--spin-depth`): their answers come
            // as a wake-up (a completion's task work, a poller's bell), and
            // polling for them would take the CPU from the other threads
            // and the clients at a light load.
            let awaited = self.router.outstanding() + inline_reads as u64;
            let awaiting = awaited > 0;
            let shallow = awaited < self.spin_depth;
            if busy || !awaiting {
                spin_since = None;
                contended = false;
            }
            // The inline poller's engine completes only when polled (the
            // spdk engine): nothing would wake the thread for its reads.
            let must_poll = self.inline.as_ref().is_some_and(|p| p.must_poll());
            let spinning = must_poll
                || awaiting
                    && !shallow
                    && !contended
                    && now - *spin_since.get_or_insert(now) < self.spin;
            if spinning && !busy {
                // Polling politely: the pollers and the clients may need
                // this CPU; the next turn's clock tells whether they took
                // it. A turn that did nothing began just now; one that did
                // work reads the clock once more, here.
                yielded_at = Some(if worked { Instant::now() } else { now });
                std::thread::yield_now();
            }
            let mut timeout = if busy || spinning {
                Duration::ZERO
            } else if held || !self.feeding.is_empty() {
                // No event says that a ring or a feed has room.
                Duration::from_millis(1)
            } else if stopping {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            let mut announced = false;
            if !timeout.is_zero() {
                // About to sleep: from here on pollers must ring the waker.
                // Announced only now, so that a poller answering a spinning
                // thread makes no system call.
                h.sleeping.store(true, Ordering::SeqCst);
                std::sync::atomic::fence(Ordering::SeqCst);
                if queued(h) {
                    timeout = Duration::ZERO;
                }
                if let Some(p) = &self.inline {
                    // And other threads must ring the poller's doorbell.
                    timeout = timeout.min(p.sleep_limit());
                    announced = true;
                    if !p.may_sleep() {
                        timeout = Duration::ZERO;
                    }
                }
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("epoll: {e}");
                }
            }
            self.handle().sleeping.store(false, Ordering::SeqCst);
            if announced {
                if let Some(p) = self.inline.as_mut() {
                    p.woke();
                }
            }
            for ev in events.iter() {
                if ev.token() != WAKER && ev.token() != BELL {
                    // Only an event that says nothing but "writable" leaves
                    // the socket unread: epoll reports every arrival of
                    // input again (edge-triggered, but on each wake-up).
                    let readable = ev.is_readable()
                        || ev.is_read_closed()
                        || ev.is_error()
                        || !ev.is_writable();
                    self.ready(ev.token().0 as u32, readable, ev.is_read_closed());
                }
            }
        }
    }

    /// Schedules the connections whose fed value has room again.
    fn feed_room(&mut self) {
        for slot in std::mem::take(&mut self.feeding) {
            match self.conns.get(slot as usize) {
                Some(Some(c)) if c.feed_waits() => self.feeding.push(slot),
                Some(Some(_)) => self.schedule(slot),
                _ => {}
            }
        }
    }

    /// A socket event for connection `slot`: it is serviced, and its
    /// socket read when the event says `readable`, to its end of stream
    /// when it says `closed`.
    fn ready(&mut self, slot: u32, readable: bool, closed: bool) {
        if let Some(Some(c)) = self.conns.get_mut(slot as usize) {
            c.readable |= readable;
            c.peer_closed |= closed;
        }
        self.schedule(slot);
    }

    /// Takes a TCP connection from the accept loop.
    fn add_tcp(&mut self, s: std::net::TcpStream) {
        let _ = s.set_nodelay(true);
        if s.set_nonblocking(true).is_err() {
            return;
        }
        let peer = s.peer_addr();
        let local = peer.as_ref().is_ok_and(|a| access::is_loopback(a.ip()));
        if let Err(msg) = self.admit(local) {
            return access::turn_away(&s, msg);
        }
        let show = |a: io::Result<std::net::SocketAddr>| {
            a.map_or_else(|_| "?:0".into(), |a| a.to_string())
        };
        let place = (
            show(peer),
            show(s.local_addr()),
            std::os::fd::AsRawFd::as_raw_fd(&s),
        );
        self.add(Stream::Tcp(TcpStream::from_std(s)), place);
    }

    /// Takes a Unix-socket connection from the accept loop (always local).
    fn add_unix(&mut self, s: std::os::unix::net::UnixStream) {
        if s.set_nonblocking(true).is_err() {
            return;
        }
        if let Err(msg) = self.admit(true) {
            return access::turn_away(&s, msg);
        }
        // As Redis shows a Unix-socket client.
        let unix = "/unixsocket:0".to_string();
        let place = (unix.clone(), unix, std::os::fd::AsRawFd::as_raw_fd(&s));
        self.add(Stream::Unix(UnixStream::from_std(s)), place);
    }

    /// Takes an in-process connection of replication's (not counted
    /// against `--max-clients`, authenticated); `master`: the primary's
    /// stream, whose writes pass on a read-only replica.
    fn add_local(&mut self, s: std::os::unix::net::UnixStream, master: bool) {
        if s.set_nonblocking(true).is_err() {
            return;
        }
        let st = &self.shared.conn_stats[self.id];
        st.connections.fetch_add(1, Relaxed);
        let unix = "/unixsocket:0".to_string();
        let place = (unix.clone(), unix, std::os::fd::AsRawFd::as_raw_fd(&s));
        if let Some(slot) = self.add(Stream::Unix(UnixStream::from_std(s)), place) {
            if let Some(c) = self.conns[slot as usize].as_mut() {
                c.authed = true;
                c.info.set_flag(INTERNAL, true);
                c.info.set_flag(MASTER, master);
            }
        }
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
        if total > self.shared.cfg.conns.max_clients.load(Relaxed) as u64 {
            st.connections.fetch_sub(1, Relaxed);
            st.rejected.fetch_add(1, Relaxed);
            return Err(strings::MAX_CLIENTS);
        }
        if !access::protected_mode_allows(self.shared, local) {
            st.connections.fetch_sub(1, Relaxed);
            st.protected_mode_rejections.fetch_add(1, Relaxed);
            return Err(strings::DENIED);
        }
        Ok(())
    }

    /// Registers an admitted connection with epoll and services it;
    /// `place` is its peer and local address and its descriptor.
    fn add(&mut self, mut stream: Stream, place: (String, String, i32)) -> Option<u32> {
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
            return None;
        }
        self.shared.conn_stats[self.id]
            .accepted
            .fetch_add(1, Relaxed);
        let me = ConnRef {
            thread: self.id as u16,
            slot,
            gen: self.gens[slot as usize],
        };
        let (addr, laddr, fd) = place;
        let info = self.shared.clients.register(self.id, addr, laddr, fd);
        self.conns[slot as usize] = Some(Conn::new(
            stream,
            me,
            !self.shared.cfg.conns.needs_password(),
            // Pessimistic until replies show their size: a new connection
            // cannot have a burst of large replies in flight at once. At
            // most 1 MiB (the largest value before values up to 512 MiB):
            // a value that large would have a new connection wait for
            // each reply before its next command.
            (self.shared.cfg.conns.max_value_size as usize).min(1 << 20),
            std::sync::Arc::clone(&self.shared.conn_stats[self.id].cmds),
            info,
        ));
        self.schedule(slot);
        Some(slot)
    }

    /// Closes the connections CLIENT KILL marked (no reply owed to them is
    /// written, as Redis closes a killed client at once).
    fn close_killed(&mut self) {
        let kills = self.shared.clients.kills();
        if kills == self.kills_seen {
            return;
        }
        self.kills_seen = kills;
        for slot in 0..self.conns.len() {
            let killed = |c: &mut Conn| c.info.killed.load(Relaxed);
            if let Some(c) = self.conns[slot].take_if(killed) {
                self.close(slot as u32, c);
            }
        }
    }

    fn schedule(&mut self, slot: u32) {
        if let Some(Some(c)) = self.conns.get_mut(slot as usize) {
            if !c.queued {
                c.queued = true;
                self.to_service.push(slot);
            }
        }
    }

    fn deliver(&mut self, mut r: Response) {
        let slot = r.to.slot;
        match self.conns.get_mut(slot as usize) {
            Some(Some(c)) if c.me.gen == r.to.gen => {
                // An EXEC's connection-level commands run once its
                // pollers have run its requests.
                super::command::verdict(c, &mut self.router, &mut r);
                c.deliver(r);
                // A command waiting for the replies before its own goes.
                super::command::barrier_due(c, &mut self.router);
                c.replies_done(&self.shared.slowlog);
                wake_pollers(self.shared, c);
            }
            _ => return, // the connection closed meanwhile
        }
        // Checked at once: replies for a client that does not read must
        // not pile up until the connection is next serviced.
        let limits = &self.limits;
        if let Some(c) = self.conns[slot as usize].take_if(|c| c.over_output_limit(limits)) {
            return self.drop_over_limit(slot, c);
        }
        self.schedule(slot);
    }

    /// Appends the pub/sub messages published to this thread's
    /// subscribers; a subscriber that lets them pile up past
    /// `--max-output-buffer` is disconnected (the publisher never waits).
    fn deliver_published(&mut self) {
        while let Some(d) = self.handle().published.pop() {
            let slot = d.to.slot;
            match self.conns.get_mut(slot as usize) {
                Some(Some(c)) if c.me.gen == d.to.gen => c.push_published(&d),
                _ => continue, // the connection closed meanwhile
            }
            let limits = &self.limits;
            if let Some(c) = self.conns[slot as usize].take_if(|c| c.over_output_limit(limits)) {
                self.drop_over_limit(slot, c);
            } else {
                self.schedule(slot);
            }
        }
    }

    /// Disconnects a client over `--max-output-buffer`.
    fn drop_over_limit(&mut self, slot: u32, c: Conn) {
        tracing::debug!(
            pending = c.pending_output(),
            limit = self.limits.output_limit(),
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
        let now = c.footprint();
        let total = if now >= c.charged {
            let add = (now - c.charged) as u64;
            self.shared.client_memory.fetch_add(add, Relaxed) + add
        } else {
            let sub = (c.charged - now) as u64;
            self.shared.client_memory.fetch_sub(sub, Relaxed) - sub
        };
        c.charged = now;
        c.info.mem.store(now as u64, Relaxed);
        let budget = self.shared.cfg.conns.maxmemory_clients;
        // CLIENT NO-EVICT ON exempts a connection, as in Redis.
        if budget == 0 || total <= budget || c.info.has(NO_EVICT) {
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
            budget = self.shared.cfg.conns.maxmemory_clients,
            "client memory over --maxmemory-clients: closing the connection holding the most"
        );
        self.shared.conn_stats[self.id]
            .evicted_clients
            .fetch_add(1, Relaxed);
        self.close(slot, c);
    }

    /// Closes the connections whose linger after a protocol error is over
    /// (a client that neither sends nor closes).
    fn close_lingering(&mut self) {
        for slot in 0..self.conns.len() {
            if let Some(c) = self.conns[slot].take_if(|c| c.linger_over()) {
                self.close(slot as u32, c);
            }
        }
    }

    /// Closes connections idle for longer than `--timeout` or what CONFIG
    /// SET timeout made it (those awaiting replies from the pollers are
    /// not idle).
    fn close_idle(&mut self) {
        let Some(limit) = self.shared.cfg.conns.idle_timeout() else {
            return;
        };
        for slot in 0..self.conns.len() {
            let idle = |c: &mut Conn| c.idle_longer_than(limit);
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
        let shared = self.shared;
        let stats = &shared.conn_stats[self.id];
        let mut rounds = 0;
        let (flushed, resume) = loop {
            // The router executes the commands (its `Executor` is in
            // command/) and sends their requests on to the pollers.
            c.read_and_parse(stopping, &self.limits, stats, &mut self.router);
            if self.ring.is_some() && c.batched_send(stopping).is_some() {
                // Written with the turn's other replies (`send_batch`).
                self.sending.push((slot, c.me.gen));
                break (false, false);
            }
            let flushed = c.flush(stats);
            wake_pollers(shared, &mut c);
            // Parsing paused for unread output that has now gone out: go on
            // with the commands already buffered (no event will say so),
            // for a few rounds before the other connections get their turn.
            let resume = c.paused && !c.must_pause(&self.limits);
            rounds += 1;
            if !resume || c.eof || c.closing || stopping || rounds == RESUME_ROUNDS {
                break (flushed, resume);
            }
        };
        if c.over_output_limit(&self.limits) {
            return self.drop_over_limit(slot, c);
        }
        if self.charge(&mut c) {
            return self.evict(slot, c);
        }
        let lingering = c.linger(flushed, stats);
        if flushed && c.repl.as_ref().is_some_and(|h| h.ready()) && !c.owes_replies() {
            self.hand_over(slot, c);
        } else if c.finished(flushed) {
            self.close(slot, c);
        } else {
            // Input left in the socket by a full read-ahead is read on the
            // next turn: no event will report it again.
            let again = resume || c.more_to_read(stopping) || lingering;
            if c.feed_waits() && !self.feeding.contains(&slot) {
                self.feeding.push(slot);
            }
            self.conns[slot as usize] = Some(c);
            if again {
                self.schedule(slot);
            }
        }
    }

    /// Reads the sockets of the connections about to be serviced this turn
    /// that may hold input, all in one submission (`sockets.rs`); each
    /// connection's service then parses what came, and reads again only
    /// if its read filled the room it had.
    fn read_batch(&mut self) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let stopping = self.shared.stopping.load(Relaxed);
        let b = &mut self.batch;
        for &slot in &self.to_service {
            let Some(c) = self.conns[slot as usize].as_mut() else {
                continue;
            };
            if let Some((fd, room)) = c.batched_read(stopping) {
                b.targets.push((slot, room.len()));
                b.reads.push((fd, room.as_mut_ptr(), room.len()));
            }
        }
        if !b.reads.is_empty() {
            let ends = &mut b.ends;
            // SAFETY: each pointer is into the read buffer of a different
            // connection (a slot is queued for service once), which nothing
            // touches, moves or resizes before `recv_all` returns.
            unsafe { ring.recv_all(&b.reads, |i, got| ends.push((i, got))) };
            let stats = &self.shared.conn_stats[self.id];
            for (i, got) in b.ends.drain(..) {
                let (slot, want) = b.targets[i];
                if let Some(c) = self.conns[slot as usize].as_mut() {
                    c.batch_read(got, want, stats);
                }
            }
        }
        b.clear();
    }

    /// Writes the output of the connections serviced this turn that left
    /// it to the ring, all in one submission (`sockets.rs`).
    fn send_batch(&mut self) {
        if self.sending.is_empty() {
            return;
        }
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let mut sending = std::mem::take(&mut self.sending);
        // Each connection at most once, and only one still open.
        sending.sort_unstable();
        sending.dedup();
        let conns = &self.conns;
        let open = |&(slot, gen): &(u32, u32)| {
            let c = conns[slot as usize].as_ref()?;
            (c.me.gen == gen).then_some(c)
        };
        let stopping = self.shared.stopping.load(Relaxed);
        let mut b = std::mem::take(&mut self.batch);
        for s in &sending {
            if let Some((fd, buf)) = open(s).and_then(|c| c.batched_send(stopping)) {
                b.targets.push((s.0, buf.len()));
                b.sends.push((fd, buf.as_ptr(), buf.len()));
            }
        }
        let ends = &mut b.ends;
        // SAFETY: each pointer is into the unsent output of an open
        // connection, which nothing touches before `send_all` returns.
        unsafe { ring.send_all(&b.sends, |i, sent| ends.push((i, sent))) };
        let stats = &self.shared.conn_stats[self.id];
        for (i, sent) in b.ends.drain(..) {
            let slot = b.targets[i].0;
            let Some(c) = self.conns[slot as usize].as_mut() else {
                continue;
            };
            let end = c.batch_sent(sent, stats);
            wake_pollers(self.shared, c);
            match end {
                SendEnd::Done | SendEnd::Full => {}
                // Serviced again: the next write, or the close.
                SendEnd::More | SendEnd::Failed => self.schedule(slot),
            }
        }
        b.clear();
        self.batch = b;
        sending.clear();
        self.sending = sending;
    }

    /// A replica's connection after its PSYNC: replication takes its
    /// socket over, and the connection is closed here.
    fn hand_over(&mut self, slot: u32, mut c: Conn) {
        let hello = c.repl.take().expect("PSYNC came");
        match c.duplicate_tcp() {
            Ok(sock) => super::repl::hand_over(self.shared, sock, &c.info.addr, hello),
            Err(e) => tracing::warn!("taking over a replica's connection: {e}"),
        }
        self.close(slot, c);
    }

    fn close(&mut self, slot: u32, mut c: Conn) {
        if !c.watching.is_empty() {
            super::command::forget_watches(&mut c, &mut self.router);
        }
        self.shared
            .client_memory
            .fetch_sub(c.charged as u64, Relaxed);
        c.deregister(self.poll.registry());
        self.shared.clients.unregister(&c.info);
        self.shared.pubsub.forget(c.me, &mut c.subs);
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.shared.conn_stats[self.id]
            .connections
            .fetch_sub(1, Relaxed);
    }

    /// Writes what each connection is owed (bounded) and closes them all.
    fn close_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        let stats = &self.shared.conn_stats[self.id];
        for slot in 0..self.conns.len() {
            if let Some(mut c) = self.conns[slot].take() {
                while !c.flush(stats) && !c.eof && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                self.close(slot as u32, c);
            }
        }
    }
}

/// Rings the pollers waiting for bytes `c` has taken of its replies sent
/// in parts (a large value's GET, read as the client reads it).
fn wake_pollers(shared: &Shared, c: &mut Conn) {
    for p in c.take_wakes() {
        shared.pollers[p].ring();
    }
}
