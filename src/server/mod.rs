//! The TCP server: an accept thread, connection threads (each an epoll loop
//! over many connections, speaking RESP), and I/O pollers that own the
//! shards. Connection threads hand key-addressed requests to the owning
//! poller over a lock-free ring and get replies back the same way.

mod access;
mod admin;
mod clients;
mod command;
mod config;
mod conn;
mod conn_thread;
mod counters;
mod dump;
mod float;
mod gate;
mod info;
mod lcs;
pub mod local;
mod metrics;
pub mod msg;
mod pattern;
mod poller;
mod pubsub;
mod repl;
mod replies;
mod router;
mod settings;
mod slowlog;
mod sockets;
mod stats;
mod stream;
mod strings;
mod table;
mod turn;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_queue::{ArrayQueue, SegQueue};
use crossbeam_utils::CachePadded;

use crate::format::Superblock;
use crate::io::{EngineKind, EventFd};
use crate::store::{self, IndexState, OpenReport, Store};
use msg::{Request, Response};
use stats::{ConnStats, PollerStats, Sampler};

/// How an idle poller waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PollMode {
    /// Spin for `--spin-us`, then park on an eventfd (kernel engines).
    Adaptive,
    /// Never park: spin on a dedicated core.
    Busy,
}

/// Where the pollers run (`--inline-io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InlineIo {
    /// Inside the connection threads on a machine with fewer than
    /// [`INLINE_BELOW_CORES`] cores (as many pollers as connection
    /// threads, adaptive polling); threads of their own otherwise.
    Auto,
    /// Each poller inside a connection thread.
    On,
    /// Each poller in a thread of its own.
    Off,
}

/// `--inline-io auto` runs the pollers inside the connection threads on
/// machines with fewer cores than this: there a poller thread of its own
/// shares a core with the threads that feed it, and every request crosses
/// between threads twice.
pub const INLINE_BELOW_CORES: usize = 4;

/// How the connection threads read and write their sockets (`--socket-io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketIo {
    /// `uring` where the kernel has io_uring's send and recv and allows
    /// them, `epoll` otherwise.
    Auto,
    /// Each loop turn's reads go out in one io_uring submission, and its
    /// replies in another.
    Uring,
    /// A `recv` and a `send` call per connection.
    Epoll,
}

/// How a poller feeds reads to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoFeed {
    /// `waves` on a virtio disk (virtio_blk), `stream` on anything else.
    Auto,
    /// Everything gathered in a turn goes out in one submission.
    Stream,
    /// For devices that complete in waves (virtio backends answer whole
    /// batches at a time): new reads wait while a wave is at the device
    /// and go out the moment it completes, each in its own submission.
    Waves,
}

impl IoFeed {
    /// The flag's spelling, as INFO and the start-up log show it.
    pub fn name(self) -> &'static str {
        match self {
            IoFeed::Auto => "auto",
            IoFeed::Stream => "stream",
            IoFeed::Waves => "waves",
        }
    }
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// After its bytes are on stable media (written and flushed).
    Sync,
    /// Once buffered; committed within --commit-interval-ms.
    Async,
}

/// `--engine`: the engines' names, listed with what each is in the help.
fn engine_parser() -> impl clap::builder::TypedValueParser<Value = EngineKind> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values = EngineKind::ALL.map(|k| PossibleValue::new(k.name()).help(k.about()));
    PossibleValuesParser::new(values).map(|s| s.parse::<EngineKind>().expect("a listed engine"))
}

/// How the SPDK environment starts (used only by stores on an NVMe
/// namespace; see README, "Bare metal").
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SpdkArgs {
    /// Memory the SPDK environment reserves, in MiB (hugepages, or ordinary
    /// memory with --spdk-no-huge; default there: 512).
    #[arg(long, value_name = "MIB")]
    pub spdk_mem: Option<u64>,
    /// Run SPDK without hugepages (NVMe-oF transports only: PCIe needs
    /// DMA-safe hugepage memory). For development and tests.
    #[arg(long)]
    pub spdk_no_huge: bool,
}

impl SpdkArgs {
    /// The environment's settings, with `cores` (the pollers') for its
    /// core mask.
    pub fn env(&self, cores: Vec<usize>) -> crate::io::EnvOptions {
        crate::io::EnvOptions {
            mem_mb: self.spdk_mem,
            no_huge: self.spdk_no_huge,
            cores,
        }
    }
}

/// Arguments of `nvkv serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Store directory; an empty store is created there when it has none.
    #[arg(long, default_value = "nvkv-data")]
    pub path: PathBuf,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:12345")]
    pub listen: String,
    /// I/O engine of the pollers [default: uring, or spdk for a store on
    /// an NVMe namespace].
    #[arg(long, value_parser = engine_parser())]
    pub engine: Option<EngineKind>,
    /// Connection threads [default: chosen from the cores this process
    /// may use: 1 on up to 3 cores; beyond, the cores less one spare and
    /// less the pollers'].
    #[arg(long, value_name = "N")]
    pub tcp_threads: Option<usize>,
    /// I/O poller threads, at most the store's shard count [default:
    /// chosen from the cores this process may use: 1 on up to 4 cores;
    /// beyond, half the cores less one spare, rounded down].
    #[arg(long, value_name = "M")]
    pub io_threads: Option<usize>,
    /// The connection threads and pollers that run, and why: as given, or
    /// chosen from the cores and the store's shards; filled in at start.
    #[arg(skip)]
    pub threads: Option<Threads>,
    /// Most device operations in flight per poller.
    #[arg(long, default_value_t = 256)]
    pub max_io_depth: usize,
    /// How idle pollers wait [default: adaptive; busy with the spdk engine
    /// when the machine has a core for each poller, each connection thread
    /// and one more].
    #[arg(long, value_enum)]
    pub poll: Option<PollMode>,
    /// Microseconds an idle adaptive poller (nothing in flight) keeps
    /// polling (yielding the CPU between polls) before it sleeps: trades a
    /// little CPU for the wake-up latency of a lone request.
    #[arg(long, default_value_t = 100)]
    pub spin_us: u64,
    /// Microseconds an adaptive poller with device reads in flight, or a
    /// connection thread awaiting replies, keeps polling without progress
    /// before it sleeps. Under load progress comes far sooner, so a loaded
    /// server never pays a wake-up; 0 sleeps at once.
    #[arg(long, default_value_t = 2000)]
    pub loaded_spin_us: u64,
    /// A connection thread awaiting fewer than N replies (the device reads
    /// of a poller inside it counted) sleeps until they come instead of
    /// polling: a lone read's completion wakes it [default: 4 where the
    /// threads have no core to spare (2 cores or fewer), with adaptive
    /// polling; 0 (poll, up to --loaded-spin-us) beyond].
    #[arg(long, value_name = "N")]
    pub spin_depth: Option<u64>,
    /// The spin depth, and why; filled in at start.
    #[arg(skip)]
    pub spin: Option<(u64, String)>,
    /// How pollers feed reads to the device: `stream` submits all a turn
    /// gathered at once; `waves` holds new reads while a wave of reads is
    /// at the device, and sends them, one submission each, as soon as it
    /// completes (for virtual disks that complete whole queues at a time).
    #[arg(long, value_enum, default_value_t = IoFeed::Auto)]
    pub io_feed: IoFeed,
    /// With `--io-feed waves`: the longest a read waits for the wave ahead
    /// of it, in microseconds.
    #[arg(long, default_value_t = 500)]
    pub wave_hold_us: u64,
    /// Pin pollers and connection threads to cores (`--pin`, or `--pin
    /// false`) [default: no; yes where the spdk engine busy-polls].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub pin: Option<bool>,
    /// Cores for the pollers, in order (e.g. `2,3`), when pinning
    /// [default: from the last core down, leaving the first cores to the
    /// connection threads, the kernel, and an SPDK target's reactor].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub poller_cores: Vec<usize>,
    /// Why the poll mode and pinning are what they are (for the log and
    /// INFO); filled in at start.
    #[arg(skip)]
    pub poll_choice: String,
    /// Run each poller inside a connection thread (one per thread, so
    /// `--io-threads` must equal `--tcp-threads`): a request then goes
    /// from its socket to the device and its reply back on one thread,
    /// with no hand-over between threads. Not with the spdk engine.
    #[arg(long, value_enum, default_value_t = InlineIo::Auto)]
    pub inline_io: InlineIo,
    /// Whether the pollers run inside the connection threads, and why;
    /// filled in at start.
    #[arg(skip)]
    pub inline: Option<(bool, String)>,
    /// How the connection threads read and write their sockets: `uring`
    /// reads the sockets a loop turn services in one io_uring submission
    /// and sends their replies in another, `epoll` makes a `recv` and a
    /// `send` call per connection; `auto` takes io_uring where the kernel
    /// has it and allows it. Readiness comes from epoll either way.
    #[arg(long, value_enum, default_value_t = SocketIo::Auto)]
    pub socket_io: SocketIo,
    /// Whether sockets are read and written through io_uring, and why;
    /// filled in at start.
    #[arg(skip)]
    pub socket: Option<(bool, String)>,
    #[command(flatten)]
    pub spdk: SpdkArgs,
    /// Capacity of a store that `serve` creates (K/M/G/T suffixes).
    #[arg(long, value_parser = store::parse_size, default_value = "1G")]
    pub capacity: u64,
    /// Leave the data file of a store that `serve` creates sparse (see
    /// `nvkv load --sparse`): it is not zeroed when it is created, and
    /// the first sync writes into each segment are slower.
    #[arg(long)]
    pub sparse: bool,
    /// Largest request argument (key or value) in bytes: Redis's
    /// `proto-max-bulk-len`.
    #[arg(long, value_parser = store::parse_size, default_value = "512M")]
    pub max_bulk: u64,
    /// Most pipelined requests a connection may have waiting for replies.
    #[arg(long, default_value_t = 1024)]
    pub max_pipeline: usize,
    /// When writes are acknowledged: after they are durable, or once buffered.
    #[arg(long, value_enum, default_value_t = Durability::Sync)]
    pub durability: Durability,
    /// Longest time written data waits in memory before a commit (async).
    #[arg(long, default_value_t = 5)]
    pub commit_interval_ms: u64,
    /// Compact a segment once its live bytes fall below this fraction.
    #[arg(long, default_value_t = 0.5)]
    pub compact_below: f64,
    /// What a full store does when a write needs room, as Redis:
    /// noeviction (refuse with -OOM), allkeys-lru, allkeys-lfu,
    /// allkeys-random, volatile-lru, volatile-lfu, volatile-random,
    /// volatile-ttl (volatile-*: only keys with a TTL).
    #[arg(long, value_parser = parse_policy, default_value = "noeviction")]
    pub maxmemory_policy: store::evict::Policy,
    /// Cap on live data, below the device's capacity (K/M/G; 0 = none):
    /// past it, writes evict (or, under noeviction, get -OOM).
    #[arg(long, value_parser = store::parse_size, default_value = "0")]
    pub maxmemory: u64,
    /// Keys sampled to choose each one evicted.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub maxmemory_samples: u32,
    /// Largest key in bytes.
    #[arg(long, value_parser = store::parse_size, default_value = "65535")]
    pub max_key_size: u64,
    /// Fail device operations on purpose (tests): `write-eio@N`,
    /// `short-write@N`, `read-eio@N`, `flush-eio@N`, `alloc-fail@N`, or
    /// delay them (`read-late@N`: its completion held 40 ms), `+` for
    /// "and after", `:P` for poller P alone.
    #[arg(long, hide = true)]
    pub inject_faults: Option<crate::io::FaultSpec>,
    /// Largest value in bytes (Redis's `proto-max-bulk-len`). Values
    /// larger than a segment are stored in pieces, whole segments.
    #[arg(long, value_parser = store::parse_size, default_value = "512M")]
    pub max_value_size: u64,
    /// Most clients connected at once; the next one is sent an error and
    /// closed.
    #[arg(long, default_value_t = 10000)]
    pub max_clients: usize,
    /// Most arguments in one command (a protocol error above it).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_args: usize,
    /// Largest request (one command with all its arguments) a client may
    /// send; above it the client is sent an error and disconnected (Redis's
    /// `client-query-buffer-limit`).
    #[arg(long, value_parser = store::parse_size, default_value = "1G")]
    pub max_query_buffer: u64,
    /// Most reply bytes a client may leave unread (replies not yet sent
    /// included) before it is disconnected; 0 = no limit. The default
    /// leaves room for a GET of the largest value (`--max-value-size`):
    /// large values are sent whole, not streamed.
    #[arg(long, value_parser = store::parse_size, default_value = "1G")]
    pub max_output_buffer: u64,
    /// Most memory all clients together may hold in buffers, owed replies
    /// and requests in flight (K/M/G); past it, the connections holding the
    /// most are closed, as Redis's client eviction does. 0 = no limit.
    #[arg(long, value_parser = store::parse_size, default_value = "1G")]
    pub maxmemory_clients: u64,
    /// Close connections idle for longer than this many seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// Password clients must give with AUTH before any other command.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Read the password from this file instead (one line; it must not be
    /// readable by group or others). Keeps it out of `ps` and shell history.
    #[arg(long, value_name = "PATH", conflicts_with = "requirepass")]
    pub requirepass_file: Option<PathBuf>,
    /// Without --requirepass, turn away clients that are not on loopback or
    /// the Unix socket (yes / no).
    #[arg(long, value_parser = access::parse_yes_no, default_value = "yes", action = clap::ArgAction::Set)]
    pub protected_mode: bool,
    /// Also accept connections on this Unix-domain socket.
    #[arg(long)]
    pub unixsocket: Option<PathBuf>,
    /// Permission bits of the Unix socket file, in octal.
    #[arg(long, value_parser = access::parse_octal, default_value = "700")]
    pub unixsocketperm: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Commands that take at least this many µs are logged for SLOWLOG
    /// (-1: none; CONFIG SET slowlog-log-slower-than changes it).
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    pub slowlog_log_slower_than: i64,
    /// Entries SLOWLOG keeps.
    #[arg(long, default_value_t = 128)]
    pub slowlog_max_len: u64,
    /// Commands that take at least this many ms are LATENCY events (0: off).
    #[arg(long, default_value_t = 0)]
    pub latency_monitor_threshold: u64,
    /// The `--config` file the flags came from (CONFIG REWRITE writes it).
    #[arg(skip)]
    pub config_file: Option<PathBuf>,
    /// Start as a replica of this primary: "HOST PORT" (REPLICAOF).
    #[arg(long, value_name = "\"HOST PORT\"", value_parser = parse_replicaof)]
    pub replicaof: Option<ReplicaOf>,
    /// Bytes of the replication stream kept for replicas to resume from.
    #[arg(long, value_parser = store::parse_size, default_value = "1m")]
    pub repl_backlog_size: u64,
    /// A replica refuses clients' writes (yes / no).
    #[arg(long, value_parser = access::parse_yes_no, default_value = "yes", action = clap::ArgAction::Set)]
    pub replica_read_only: bool,
    /// A primary refuses writes while fewer replicas than this are online
    /// and acknowledged within --min-replicas-max-lag (0: never).
    #[arg(long, default_value_t = 0)]
    pub min_replicas_to_write: usize,
    /// Seconds since a replica's last acknowledgement for it to count
    /// towards --min-replicas-to-write.
    #[arg(long, default_value_t = 10)]
    pub min_replicas_max_lag: u64,
}

/// `--replicaof HOST PORT`.
#[derive(Debug, Clone)]
pub struct ReplicaOf {
    pub host: String,
    pub port: u16,
}

/// "HOST PORT"; an empty value (as CONFIG REWRITE writes it for a
/// primary) is none: a host of "".
fn parse_replicaof(s: &str) -> Result<ReplicaOf, String> {
    if s.trim().is_empty() {
        return Ok(ReplicaOf {
            host: String::new(),
            port: 0,
        });
    }
    let mut words = s.split_whitespace();
    match (
        words.next(),
        words.next().map(str::parse::<u16>),
        words.next(),
    ) {
        (Some(host), Some(Ok(port)), None) => Ok(ReplicaOf {
            host: host.to_string(),
            port,
        }),
        _ => Err(format!("expected \"HOST PORT\", got {s:?}")),
    }
}

/// A poller's doorbell: its request ring and the eventfd it parks on.
struct PollerHandle {
    inbox: ArrayQueue<Request>,
    bell: EventFd,
    sleeping: AtomicBool,
    /// When the doorbell last rang a parked poller: nanoseconds since
    /// `epoch`, plus one (0: not since the poller last woke).
    rung_at: AtomicU64,
    epoch: Instant,
}

impl PollerHandle {
    /// Wakes the poller if it is parked. Call after pushing requests.
    fn ring(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let at = self.epoch.elapsed().as_nanos() as u64 + 1;
            self.rung_at.store(at, Ordering::Relaxed);
            self.bell.notify();
        }
    }

    /// After the poller woke from a park: how long ago its doorbell rang,
    /// in µs, if it rang meanwhile.
    fn woken_after(&self) -> Option<u64> {
        let at = self.rung_at.swap(0, Ordering::Relaxed).checked_sub(1)?;
        Some((self.epoch.elapsed().as_nanos() as u64).saturating_sub(at) / 1_000)
    }
}

/// A connection thread's mailbox.
struct ConnHandle {
    responses: SegQueue<Response>,
    incoming: SegQueue<std::net::TcpStream>,
    /// Connections accepted on the Unix socket.
    incoming_unix: SegQueue<std::os::unix::net::UnixStream>,
    waker: mio::Waker,
    sleeping: AtomicBool,
    /// Pub/sub messages for this thread's subscribers.
    published: SegQueue<pubsub::Delivery>,
    /// In-process connections (replication's), and whether each carries
    /// the primary's stream.
    incoming_local: SegQueue<(std::os::unix::net::UnixStream, bool)>,
}

impl ConnHandle {
    /// Wakes the thread if it sleeps in epoll. Call after pushing to it.
    fn ring(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }
}

/// How many connection threads and pollers run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threads {
    pub conns: usize,
    pub pollers: usize,
    pub why: String,
}

/// Pollers `serve` chooses on `usable` cores (those left beside the spare
/// one): half of them, rounded down, at least one. Measured on the 2-core
/// development VM, a poller spends about as much CPU per GET as a
/// connection thread (docs/design.md, "Threads and cores"), and rounding
/// down leaves the odd core to the connection threads, whose system calls
/// per request do not batch as the pollers' device submissions do.
fn pollers_on(usable: usize) -> usize {
    (usable / 2).max(1)
}

/// The connection threads and pollers, and why, on `cores` CPUs this
/// process may use (its affinity mask) with a store of `shards` shards
/// (`None` before the store is open) and `spdk` its engine: `tcp` and `io`
/// when given (a flag always wins), otherwise chosen. On 1 or 2 cores, a
/// connection thread per core with a poller each (inside it: see
/// [`inline_for`]), or one of each for the spdk engine: more threads than
/// cores would only share them (measured best on 2 cores).
/// From 3 cores, one core stays spare for the kernel's network and block
/// work, the clients and an NVMe-oF target's reactor (the core a busy
/// spdk poller needs beside the connection threads, see [`polling_for`]),
/// and the others are split between pollers ([`pollers_on`], at most the
/// store's shards) and connection threads.
fn threads_for(
    cores: usize,
    shards: Option<usize>,
    tcp: Option<usize>,
    io: Option<usize>,
    spdk: bool,
) -> Threads {
    let n = cores.max(1);
    let spare = if n <= 2 { 0 } else { 1 };
    let usable = n - spare;
    // On 2 cores a connection thread each, with a poller inside it; with
    // the spdk engine one (an NVMe-oF target's reactor wants a core too).
    let small = if spdk { 1 } else { n };
    let wanted = if n <= 2 { small } else { pollers_on(usable) };
    let rule_pollers = shards.map_or(wanted, |s| wanted.min(s.max(1)));
    let capped = |p: usize| {
        if p == rule_pollers && rule_pollers < wanted {
            format!(" (the store's {p} shards)")
        } else {
            String::new()
        }
    };
    let (conns, pollers, why) = match (tcp, io) {
        (Some(c), Some(p)) => (c, p, "--tcp-threads and --io-threads as given".to_string()),
        (Some(c), None) => {
            let p = c.min(rule_pollers).max(1);
            let why = format!(
                "--tcp-threads as given; {p} poller(s): one per connection thread, at most \
                 the {rule_pollers} chosen on {n} cores{}",
                capped(p)
            );
            (c, p, why)
        }
        (None, Some(p)) => {
            let c = usable.saturating_sub(p).max(1);
            let why = if n <= 2 {
                format!(
                    "--io-threads as given; {n} cores this process may use: 1 connection thread"
                )
            } else {
                format!(
                    "--io-threads as given; {c} connection thread(s): the {n} cores this \
                     process may use less one spare and the pollers'"
                )
            };
            (c, p, why)
        }
        (None, None) if n <= 2 => {
            let p = rule_pollers;
            let engine = if spdk { ", the spdk engine" } else { "" };
            let why = format!(
                "{n} cores this process may use{engine}: {small} connection thread(s) and {p} \
                 poller(s){} (no core spare: more threads would share the cores)",
                capped(p)
            );
            (small, p, why)
        }
        (None, None) => {
            let p = rule_pollers;
            let c = usable - p;
            let why = format!(
                "{n} cores this process may use: one spare, {p} poller(s){} and {c} \
                 connection thread(s)",
                capped(p)
            );
            (c, p, why)
        }
    };
    Threads {
        conns,
        pollers,
        why,
    }
}

/// The default poll mode and pinning, and why, for `pollers` pollers on
/// `poller_cores` (CPU numbers, as [`ServeArgs::placement`] places them)
/// and `conns` connection threads, out of `cores`, the CPUs this process
/// may use (its affinity mask). A busy poller owns its core: it needs one
/// of its own, and the cores no poller takes must hold the connection
/// threads and one more for everything else (the clients, the kernel, an
/// NVMe-oF target's reactor). With fewer, a busy poller takes the CPU
/// from the threads that feed it, and the server collapses (on 2 cores,
/// to a hundredth of what the device does).
fn polling_for(
    spdk: bool,
    cores: &[usize],
    poller_cores: &[usize],
    pollers: usize,
    conns: usize,
) -> (PollMode, bool, String) {
    if !spdk {
        return (PollMode::Adaptive, false, "files and block devices".into());
    }
    let mut own: Vec<usize> = poller_cores.to_vec();
    own.sort_unstable();
    own.dedup();
    let left = cores.iter().filter(|c| !own.contains(c)).count();
    let n = cores.len();
    let adaptive = |why: String| {
        let why = format!("spdk: {why}: adaptive polling, unpinned");
        (PollMode::Adaptive, false, why)
    };
    if own.len() < pollers {
        adaptive(format!(
            "{pollers} pollers on {} cores ({own:?}) of the {n} this process may use: a busy \
             poller needs a core of its own",
            own.len()
        ))
    } else if left < conns + 1 {
        adaptive(format!(
            "{n} cores this process may use, {left} left beside the pollers' {own:?}, fewer \
             than {} (one per connection thread, and one more): too few to dedicate cores to \
             busy pollers",
            conns + 1
        ))
    } else {
        let why = format!("spdk: {n} cores this process may use, a dedicated core per poller");
        (PollMode::Busy, true, why)
    }
}

/// Whether the pollers run inside the connection threads, and why, for
/// `asked` and `poll` on `cores` cores with `pollers` pollers and `conns`
/// connection threads; `--inline-io on` where it cannot be is refused at
/// start.
fn inline_for(
    asked: InlineIo,
    poll: PollMode,
    cores: usize,
    pollers: usize,
    conns: usize,
) -> (bool, String) {
    let cannot = if pollers != conns {
        Some(format!(
            "{pollers} pollers and {conns} connection threads: one poller per connection thread"
        ))
    } else {
        None
    };
    match (asked, cannot) {
        (InlineIo::Off, _) => (false, "--inline-io off".into()),
        (_, Some(why)) => (false, why),
        (InlineIo::On, None) => (true, "--inline-io on".into()),
        (InlineIo::Auto, None) if poll == PollMode::Busy => (
            false,
            "busy polling: each poller in a thread of its own, on its core".into(),
        ),
        (InlineIo::Auto, None) if cores < INLINE_BELOW_CORES => (
            true,
            format!(
                "{cores} cores this process may use (fewer than {INLINE_BELOW_CORES}): \
                 a poller thread of its own would share a core with the threads feeding it"
            ),
        ),
        (InlineIo::Auto, None) => (
            false,
            format!("{cores} cores this process may use: a thread for each poller"),
        ),
    }
}

/// Replies awaited below which a connection thread sleeps rather than
/// polls, on a machine where this process may use `cores` CPUs (see
/// `--spin-depth`), and why. With no core to spare, a thread polling for
/// a lone read took the CPU from the other thread and the clients: on the
/// 2-core development VM, 50–56 µs of server CPU per GET at 20,000 GET/s
/// and a QD1 p50 of 144–150 µs, against 44 µs and 88–92 µs sleeping below
/// 4 awaited, while 32 × 1 rose from 0.67 to 0.77 of fio (docs/benchmarks.md,
/// session 31). With cores to spare, polling costs no other thread its CPU.
fn spin_depth_for(asked: Option<u64>, poll: PollMode, cores: usize) -> (u64, String) {
    match (asked, poll) {
        (Some(n), _) => (n, "--spin-depth as given".into()),
        (None, PollMode::Busy) => (0, "busy polling: never sleeps awaiting replies".into()),
        (None, PollMode::Adaptive) if cores <= 2 => (
            SPIN_DEPTH,
            format!(
                "{cores} cores this process may use, none to spare: a thread awaiting fewer \
                 than {SPIN_DEPTH} replies sleeps until they come"
            ),
        ),
        (None, PollMode::Adaptive) => (
            0,
            format!("{cores} cores this process may use: a thread awaiting replies polls"),
        ),
    }
}

/// The default `--spin-depth` where no core is spare.
const SPIN_DEPTH: u64 = 4;

/// Whether the connection threads use io_uring for their sockets, and why,
/// for `asked`; `unavailable` says why io_uring cannot be used, if it
/// cannot. `--socket-io uring` where it cannot be is refused at start.
fn socket_io_for(asked: SocketIo, unavailable: impl FnOnce() -> Option<String>) -> (bool, String) {
    match asked {
        SocketIo::Epoll => (false, "--socket-io epoll".into()),
        SocketIo::Uring => match unavailable() {
            None => (true, "--socket-io uring".into()),
            Some(why) => (false, why),
        },
        SocketIo::Auto => match unavailable() {
            None => (true, "io_uring with send and recv is available".into()),
            Some(why) => (false, format!("{why}: epoll")),
        },
    }
}

fn parse_policy(s: &str) -> Result<store::evict::Policy, String> {
    s.parse().map_err(str::to_owned)
}

/// What every server thread shares.
struct Shared {
    cfg: config::ServeConfig,
    /// The connections, for CLIENT LIST and CLIENT KILL.
    clients: clients::Clients,
    /// The store's directory.
    path: PathBuf,
    eviction: Arc<store::evict::Settings>,
    sb: Superblock,
    pollers: Vec<PollerHandle>,
    conns: Vec<ConnHandle>,
    poller_stats: Vec<CachePadded<PollerStats>>,
    conn_stats: Vec<CachePadded<ConnStats>>,
    sampler: Sampler,
    /// Bytes all connections hold (buffers, owed replies, requests in
    /// flight), against `--maxmemory-clients`.
    client_memory: AtomicU64,
    /// Stop accepting and reading new commands.
    stopping: AtomicBool,
    /// Connection threads are gone: pollers finish and exit.
    pollers_stop: AtomicBool,
    started: Instant,
    open_report: OpenReport,
    space: Arc<store::Space>,
    addr: SocketAddr,
    /// Channels and patterns, and who subscribes to them.
    pubsub: pubsub::PubSub,
    /// SLOWLOG's entries and settings, and LATENCY's events.
    slowlog: slowlog::SlowLog,
    /// SHUTDOWN asked for the clean stop a SIGTERM starts.
    shutdown: AtomicBool,
    /// `serve --config FILE`, for CONFIG REWRITE.
    config_file: Option<PathBuf>,
    /// INFO's counters as CONFIG RESETSTAT left them.
    baseline: counters::Baseline,
    /// SAVE and BGSAVE: LASTSAVE, saves under way.
    saves: admin::Saves,
    /// Replication: the stream, the role, the replicas.
    repl: repl::Repl,
    /// The gate of transactions across pollers and of censuses of the key
    /// space (`gate.rs`).
    gate: gate::Gate,
    /// The background zeroing of the data file's free part, while it runs.
    zeroer: Mutex<Option<store::zero::Zeroer>>,
}

impl Shared {
    /// The poller owning index partition `pid`.
    fn poller_of(&self, pid: u32) -> usize {
        (store::shard_of(pid, self.sb.shards) as usize) % self.pollers.len()
    }
}

impl ServeArgs {
    /// Fills in the engine, poll mode and pinning that depend on the
    /// store's device and the machine: an NVMe namespace is driven by SPDK,
    /// whose pollers busy-poll on pinned cores when there are cores to
    /// dedicate to them; files and block devices by io_uring.
    fn settle(&mut self, dev: &crate::io::Device, shards: u32, cores: &[usize]) {
        let engine = *self.engine.get_or_insert(EngineKind::default_for(dev));
        let spdk = engine == EngineKind::Spdk;
        self.choose_threads(cores, Some(shards));
        let threads = self.threads.as_ref().expect("chosen");
        tracing::info!(
            connection_threads = threads.conns,
            pollers = threads.pollers,
            "threads: {}",
            threads.why
        );
        let (poller_cores, _) = self.placement(cores);
        let (poll, pin, why) = polling_for(
            spdk,
            cores,
            &poller_cores,
            self.poller_threads(),
            self.conn_threads(),
        );
        let chose_poll = self.poll.is_none();
        let chose_pin = self.pin.is_none();
        self.poll.get_or_insert(poll);
        self.pin.get_or_insert(pin);
        self.poll_choice = match (chose_poll, chose_pin) {
            (false, false) => "--poll and --pin as given".into(),
            _ => why,
        };
        if spdk {
            tracing::info!(
                poll = ?self.poll(),
                pinned = self.pinned(),
                "polling: {}",
                self.poll_choice
            );
        }
        let inline = inline_for(
            self.inline_io,
            self.poll(),
            cores.len(),
            self.poller_threads(),
            self.conn_threads(),
        );
        tracing::info!(
            inline = inline.0,
            "pollers {}: {}",
            if inline.0 {
                "inside the connection threads"
            } else {
                "in threads of their own"
            },
            inline.1
        );
        self.inline = Some(inline);
        let socket = socket_io_for(self.socket_io, sockets::unavailable);
        tracing::info!(
            uring = socket.0,
            "sockets {}: {}",
            if socket.0 {
                "read and written through io_uring, a submission each per loop turn"
            } else {
                "read and written with a call per connection"
            },
            socket.1
        );
        self.socket = Some(socket);
        let spin = spin_depth_for(self.spin_depth, self.poll(), cores.len());
        tracing::info!(spin_depth = spin.0, "awaiting replies: {}", spin.1);
        self.spin = Some(spin);
        if self.io_feed == IoFeed::Auto {
            // A virtio disk's backend (QEMU, Firecracker, cloud hypervisors)
            // works through its queue and answers batches at a time (see
            // docs/design.md); NVMe, SCSI and SPDK complete command by
            // command.
            let driver = (!spdk).then(|| dev.disk_driver()).flatten();
            let virtio = driver.as_deref() == Some("virtio_blk");
            self.io_feed = if virtio {
                IoFeed::Waves
            } else {
                IoFeed::Stream
            };
            tracing::info!(
                disk_driver = driver.as_deref().unwrap_or("-"),
                "io feed: {}",
                self.io_feed.name()
            );
        }
    }

    /// Chooses the connection threads and pollers not given by a flag,
    /// from `cores`, the CPUs this process may use, and the store's
    /// `shards` once it is open (pollers chosen before are then capped).
    fn choose_threads(&mut self, cores: &[usize], shards: Option<u32>) {
        let shards = shards.map(|s| s as usize);
        let spdk = self.engine == Some(EngineKind::Spdk);
        let t = threads_for(cores.len(), shards, self.tcp_threads, self.io_threads, spdk);
        self.threads = Some(t);
    }

    /// Connection threads (chosen or given).
    pub fn conn_threads(&self) -> usize {
        (self.threads.as_ref()).map_or(self.tcp_threads.unwrap_or(1), |t| t.conns)
    }

    /// Pollers (chosen or given).
    pub fn poller_threads(&self) -> usize {
        (self.threads.as_ref()).map_or(self.io_threads.unwrap_or(1), |t| t.pollers)
    }

    pub fn engine(&self) -> EngineKind {
        self.engine.unwrap_or(EngineKind::Uring)
    }

    pub fn poll(&self) -> PollMode {
        self.poll.unwrap_or(PollMode::Adaptive)
    }

    pub fn pinned(&self) -> bool {
        self.pin.unwrap_or(false)
    }

    /// Whether sockets are read and written through io_uring (`--socket-io`).
    pub fn uring_sockets(&self) -> bool {
        self.socket.as_ref().is_some_and(|s| s.0)
    }

    /// Whether the pollers run inside the connection threads (settled).
    pub fn inline(&self) -> bool {
        self.inline.as_ref().is_some_and(|i| i.0)
    }

    /// The cores (CPU numbers) of the pollers and of the connection
    /// threads, out of `cores`, the CPUs this process may use: pollers on
    /// `--poller-cores` or from the last of them down, connection threads
    /// on the cores the pollers leave (all of them when the pollers take
    /// every core).
    fn placement(&self, cores: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let all: Vec<usize> = if cores.is_empty() {
            vec![0]
        } else {
            cores.to_vec()
        };
        let n = all.len();
        let pollers: Vec<usize> = (0..self.poller_threads())
            .map(|i| match self.poller_cores.as_slice() {
                [] => all[n - 1 - i % n],
                list => list[i % list.len()],
            })
            .collect();
        let mut rest: Vec<usize> = all
            .iter()
            .copied()
            .filter(|c| !pollers.contains(c))
            .collect();
        if rest.is_empty() {
            rest = all;
        }
        let conns = (0..self.conn_threads())
            .map(|i| rest[i % rest.len()])
            .collect();
        (pollers, conns)
    }
}

/// Checks `--path`: a directory, or nothing yet (an empty store is created
/// there). Anything else is named for what it is, instead of the "File
/// exists" creating the directory would say.
fn check_path(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.is_file() => bail!(
            "--path {}: is a regular file, not a directory",
            path.display()
        ),
        Ok(_) => bail!("--path {}: is not a directory", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--path {}", path.display())),
    }
}

/// Checks the flags that need no store.
fn check_flags(args: &ServeArgs) -> Result<()> {
    if args.max_key_size > u16::MAX as u64 {
        bail!("--max-key-size is at most 65535 bytes");
    }
    if args.tcp_threads == Some(0) || args.max_io_depth == 0 {
        bail!("--tcp-threads and --max-io-depth must be at least 1");
    }
    if args.io_threads == Some(0) {
        bail!("--io-threads must be at least 1");
    }
    Ok(())
}

/// Checks the flags that depend on the store's layout: `shards`, segments
/// of `segment_size` bytes, blocks of `block_size`.
fn check_layout(args: &ServeArgs, shards: u32, segment_size: u64, block_size: u64) -> Result<()> {
    if args.io_threads.is_some_and(|n| n > shards as usize) {
        bail!("--io-threads must be between 1 and the store's {shards} shards");
    }
    // Values larger than a segment go in pieces; a key, with the head of
    // the largest such value, must fit one.
    let pieces = args.max_value_size.div_ceil(crate::format::piece_capacity(
        segment_size as u32,
        block_size,
    ));
    let head = 20 + 4 * pieces as usize;
    let max_record = crate::format::record_len(args.max_key_size as usize, head);
    if max_record + crate::format::SEGMENT_HEADER as u64 + block_size > segment_size {
        bail!(
            "--max-key-size {} does not fit the store's {segment_size}-byte segments",
            args.max_key_size,
        );
    }
    Ok(())
}

/// Opens the store at `args.path`, creating an empty one when the
/// directory holds none, and checks the flags against its layout (those of
/// a store about to be created before it is).
/// The index is marked dirty only once everything that can refuse the
/// start has passed, and before the first request, so that a crash from
/// here on leads to a rebuild and a refused start leaves a clean store
/// clean.
fn open_or_create(args: &ServeArgs, env: &crate::io::EnvOptions) -> Result<Store> {
    let data = args.path.join(store::DATA_FILE);
    let empty_dir = std::fs::read_dir(&args.path).map_or(true, |mut d| d.next().is_none());
    if std::fs::symlink_metadata(&data).is_err() && empty_dir {
        let create = store::CreateArgs {
            capacity: Some(args.capacity),
            sparse: args.sparse,
            ..Default::default()
        };
        // The device's block size is not known yet: a file's is 4 KiB.
        check_layout(args, create.shards, create.segment_size, 4096)?;
        store::create_empty(&args.path, &create, env)
            .with_context(|| format!("creating a store in {}", args.path.display()))?;
        tracing::info!(path = %args.path.display(), capacity = args.capacity, "created an empty store");
    }
    let store = Store::open(&args.path, env)?;
    check_layout(
        args,
        store.sb.shards,
        store.sb.segment_size as u64,
        store.sb.block_size as u64,
    )?;
    Ok(store)
}

/// Runs the server until SIGTERM, SIGINT or SHUTDOWN; `ready` is called with the
/// bound address once clients can connect.
///
/// Everything that can refuse the start (flags, `--path`, the listen
/// addresses) is checked before the store is created or opened, so that a
/// refused start neither creates a store nor marks a clean one unclean.
pub fn serve(mut args: ServeArgs, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    check_flags(&args)?;
    if let Some(path) = &args.requirepass_file {
        args.requirepass = Some(access::read_password_file(path)?);
    }
    // The CPUs this process may run on (sched_getaffinity), by number.
    let cores: Vec<usize> = (core_affinity::get_core_ids().unwrap_or_default().iter())
        .map(|c| c.id)
        .collect();
    if let Some(c) = args.poller_cores.iter().find(|c| !cores.contains(c)) {
        bail!("--poller-cores: core {c} is not one this process may use ({cores:?})");
    }
    check_path(&args.path)?;
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let metrics_listener = (args.metrics_listen.as_deref())
        .map(|a| TcpListener::bind(a).with_context(|| format!("metrics on {a}")))
        .transpose()?;
    // The store's shards are not known yet: pollers chosen now are capped
    // at them once it is open (an SPDK core mask from more pollers' cores
    // than run does no harm).
    args.choose_threads(&cores, None);
    let (poller_cores, _) = args.placement(&cores);
    let store = open_or_create(&args, &args.spdk.env(poller_cores))?;
    args.settle(&store.dev, store.sb.shards, &cores);
    let (_, conn_cores) = args.placement(&cores);
    let spinners = args.poller_threads() + args.conn_threads();
    if args.poll() == PollMode::Busy && spinners >= cores.len().max(1) {
        tracing::warn!(
            pollers = args.poller_threads(),
            connection_threads = args.conn_threads(),
            cores = cores.len(),
            "busy polling with as many spinning threads as cores: they will share cores in time slices \
             (milliseconds of latency); give them dedicated cores, or use --poll adaptive --pin false"
        );
    }
    // Bound once the store's lock is held: a start refused because another
    // server has the store must not take over that server's socket file.
    let unix = (args.unixsocket.as_deref())
        .map(|p| access::UnixSocket::bind(p, args.unixsocketperm))
        .transpose()?;
    if args.inline_io == InlineIo::On && !args.inline() {
        let why = args
            .inline
            .as_ref()
            .map(|i| i.1.as_str())
            .unwrap_or_default();
        bail!("--inline-io on: {why}");
    }
    if args.socket_io == SocketIo::Uring && !args.uring_sockets() {
        let why = (args.socket.as_ref())
            .map(|s| s.1.as_str())
            .unwrap_or_default();
        bail!("--socket-io uring: {why}");
    }
    let Started {
        shared,
        polls,
        pollers: poller_threads,
        inline,
    } = start(&args, store, &cores, addr)?;
    let inlined = inline.is_some();
    let (conn_threads, closed) =
        conn_thread::spawn_all(&shared, polls, inline, &conn_cores, &cores)?;

    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let term = Arc::clone(&term);
        // SAFETY: the handler uses only atomics, clock_gettime and _exit,
        // which are async-signal-safe.
        unsafe { signal_hook::low_level::register(sig, move || on_signal(&term)) }?;
    }
    tracing::info!(%addr, engine = ?shared.cfg.pollers.engine, pollers = shared.cfg.pollers.count, "listening");
    repl::Repl::started(&shared);
    let replicaof = args.replicaof.as_ref().filter(|r| !r.host.is_empty());
    let saved = repl::saved_position(&args.path, replicaof.is_some());
    if let Some(to) = replicaof {
        repl::follow_from(&shared, to.host.clone(), to.port, saved);
    }
    ready(addr);
    let metrics = match metrics_listener {
        Some(l) => {
            let (maddr, handle) =
                metrics::start(&shared, l).context("starting the metrics endpoint")?;
            println!("nvkv metrics on {maddr}");
            tracing::info!(%maddr, "metrics at /metrics");
            Some(handle)
        }
        None => None,
    };
    accept_loop(&listener, unix.as_ref(), &shared, &term);
    drop(unix);

    tracing::info!("shutting down: finishing in-flight requests");
    shared.stopping.store(true, Ordering::SeqCst);
    shared.conns.iter().for_each(|c| {
        c.sleeping.store(true, Ordering::SeqCst);
        c.ring()
    });
    if let Some(m) = metrics {
        let _ = m.join();
    }
    if inlined {
        // Their pollers serve the other threads' last requests: they stop
        // once every thread has closed its connections.
        while closed.load(Ordering::SeqCst) < conn_threads.len()
            && !conn_threads.iter().all(|t| t.is_finished())
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop(&shared, conn_threads)?;
    } else {
        for t in conn_threads {
            let _ = t.join();
        }
        stop(&shared, poller_threads)?;
    }
    tracing::info!("clean shutdown: index flushed and marked clean");
    Ok(())
}

/// The store's pollers, running, and the mailboxes of the connection
/// threads (`--tcp-threads` of them) they answer.
struct Started {
    shared: Arc<Shared>,
    /// One per connection thread: its epoll instance, which its mailbox's
    /// waker rings.
    polls: Vec<mio::Poll>,
    pollers: Vec<std::thread::JoinHandle<Result<()>>>,
    /// With `--inline-io`: the store's parts, for the connection threads
    /// to run the pollers (`pollers` is then empty).
    inline: Option<poller::PollerInputs>,
}

/// Marks the opened `store` in use and starts its pollers, as `args`
/// (settled) say, on the CPUs `cores`; `addr` is what INFO reports as the
/// server's address. `serve` then starts connection threads over the
/// mailboxes, `bench --local` drives the pollers from its own threads.
fn start(args: &ServeArgs, mut store: Store, cores: &[usize], addr: SocketAddr) -> Result<Started> {
    crate::store::mark_dirty(store.shards.iter_mut()).context("marking the index dirty")?;
    let r = store.report;
    match r.state {
        IndexState::Clean => tracing::info!(
            keys = r.keys,
            secs = r.secs,
            "index clean: mapped without reading the data"
        ),
        IndexState::Rebuilt => tracing::info!(
            keys = r.keys,
            segments = r.segments_scanned,
            records = r.records_scanned,
            mb = r.bytes_scanned as f64 / 1e6,
            secs = r.secs,
            mb_per_sec = r.bytes_scanned as f64 / 1e6 / r.secs.max(1e-9),
            "index rebuilt by scanning the device"
        ),
    }
    if let Err(most) = access::raise_fd_limit(args.max_clients) {
        tracing::warn!(
            max_clients = args.max_clients,
            most,
            "the open-file limit is below --max-clients: raise it (ulimit -n, LimitNOFILE=)"
        );
    }

    let mut polls = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..args.conn_threads() {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), conn_thread::WAKER)?;
        conns.push(ConnHandle {
            responses: SegQueue::new(),
            incoming: SegQueue::new(),
            incoming_unix: SegQueue::new(),
            waker,
            sleeping: AtomicBool::new(false),
            published: SegQueue::new(),
            incoming_local: SegQueue::new(),
        });
        polls.push(poll);
    }
    let pollers = (0..args.poller_threads())
        .map(|_| {
            Ok(PollerHandle {
                inbox: ArrayQueue::new(args.max_io_depth.max(1024) * 4),
                bell: EventFd::new()?,
                sleeping: AtomicBool::new(false),
                rung_at: AtomicU64::new(0),
                epoch: Instant::now(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        poller_stats: (0..args.poller_threads())
            .map(|_| Default::default())
            .collect(),
        conn_stats: (0..args.conn_threads())
            .map(|_| CachePadded::new(ConnStats::new(table::StatSlots::get().len())))
            .collect(),
        sampler: Sampler::default(),
        sb: store.sb.clone(),
        pollers,
        conns,
        client_memory: std::sync::atomic::AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        pollers_stop: AtomicBool::new(false),
        started: Instant::now(),
        open_report: store.report,
        space: Arc::new(store.space),
        addr,
        eviction: Arc::new(store::evict::Settings::new(
            args.maxmemory_policy,
            args.maxmemory,
            args.maxmemory_samples,
        )),
        cfg: config::ServeConfig::new(args),
        clients: clients::Clients::default(),
        path: args.path.clone(),
        pubsub: pubsub::PubSub::default(),
        slowlog: slowlog::SlowLog::new(
            args.slowlog_log_slower_than,
            args.slowlog_max_len,
            args.latency_monitor_threshold,
        ),
        shutdown: AtomicBool::new(false),
        config_file: args.config_file.clone(),
        baseline: counters::Baseline::default(),
        saves: admin::Saves::new(),
        repl: repl::Repl::new(
            args.poller_threads(),
            args.repl_backlog_size as usize,
            args.replica_read_only,
            args.min_replicas_to_write,
            args.min_replicas_max_lag,
        ),
        gate: gate::Gate::default(),
        zeroer: Mutex::default(),
    });
    let zeroer = store::zero::Zeroer::start(&args.path, &store.dev, &shared.sb, &shared.space)
        .context("starting to zero the data file")?;
    *shared.zeroer.lock().expect("zeroer") = zeroer;

    let pin = shared.cfg.pollers.pinned && !cores.is_empty();
    let core_at = |c: usize| pin.then_some(core_affinity::CoreId { id: c });
    let (poller_cores, _) = args.placement(cores);
    let core = |i: usize| core_at(poller_cores[i]);
    let inputs = poller::PollerInputs {
        shards: store.shards,
        dev: store.dev,
        next_seq: store.next_seq,
        lock: store.lock,
    };
    if args.inline() {
        return Ok(Started {
            shared,
            polls,
            pollers: Vec::new(),
            inline: Some(inputs),
        });
    }
    let pollers = poller::spawn_all(&shared, inputs, &core)?;
    Ok(Started {
        shared,
        polls,
        pollers,
        inline: None,
    })
}

/// Stops the pollers after their last commit (once nothing sends them
/// requests), marks the index clean and saves the segment table.
fn stop(shared: &Shared, pollers: Vec<std::thread::JoinHandle<Result<()>>>) -> Result<()> {
    shared.pollers_stop.store(true, Ordering::SeqCst);
    drop(shared.zeroer.lock().expect("zeroer").take());
    for p in &shared.pollers {
        p.sleeping.store(true, Ordering::SeqCst);
        p.ring();
    }
    let mut result = Ok(());
    for t in pollers {
        match t.join() {
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(anyhow::anyhow!("a poller panicked")),
            Ok(Ok(())) => {}
        }
    }
    result?;
    store::save_table(&shared.path, &shared.sb, &shared.space).context("saving the segment table")
}

/// A yield that took longer than this gave the CPU to other threads for a
/// while: the CPU is contended, and polling on would take time from threads
/// that need it (a slow or overcommitted machine), so the poller or
/// connection thread sleeps instead until its next event.
pub const CONTENDED_YIELD: Duration = Duration::from_micros(50);

/// Yields the CPU once while polling; returns whether other threads were
/// waiting for it (the yield took at least [`CONTENDED_YIELD`]).
fn polite_yield() -> bool {
    let t = Instant::now();
    std::thread::yield_now();
    t.elapsed() >= CONTENDED_YIELD
}

/// When the first SIGTERM / SIGINT came (CLOCK_MONOTONIC ns; 0: none yet).
static FIRST_SIGNAL_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A signal closer than this to the first is the same one delivered twice
/// (`timeout` signals its child and then its process group), not a second.
const SAME_SIGNAL_NS: u64 = 500_000_000;

/// SIGTERM / SIGINT: the first starts the clean shutdown; a second one (at
/// least [`SAME_SIGNAL_NS`] later) exits at once, which recovery copes with.
/// Runs in a signal handler: atomics, clock_gettime and _exit only.
fn on_signal(term: &AtomicBool) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64).max(1);
    match FIRST_SIGNAL_NS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => term.store(true, Ordering::SeqCst),
        Err(first) if now.saturating_sub(first) >= SAME_SIGNAL_NS => {
            // SAFETY: _exit is async-signal-safe; the store stays
            // recoverable (the index is not marked clean).
            unsafe { libc::_exit(130) }
        }
        Err(_) => {}
    }
}

/// Accepts connections and deals them out to connection threads until a
/// signal arrives or a client sends SHUTDOWN; samples the pollers' rates
/// once a second.
fn accept_loop(
    listener: &TcpListener,
    unix: Option<&access::UnixSocket>,
    shared: &Shared,
    term: &AtomicBool,
) {
    let mut next = 0;
    let mut last_sample = Instant::now();
    shared.sampler.tick(&shared.poller_stats);
    while !term.load(Ordering::Relaxed) && !shared.shutdown.load(Ordering::Relaxed) {
        let pfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut pfds = [
            pfd(std::os::fd::AsRawFd::as_raw_fd(listener)),
            pfd(unix.map_or(-1, access::UnixSocket::fd)),
        ];
        // SAFETY: two valid pollfds (a negative fd is ignored); the timeout
        // bounds how late a signal is seen.
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, 100) };
        if let Some(u) = unix {
            u.accept_all(shared, &mut next);
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let c = &shared.conns[next % shared.conns.len()];
                    next += 1;
                    c.incoming.push(stream);
                    c.ring();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
            }
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            shared.sampler.tick(&shared.poller_stats);
            last_sample = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        inline_for, polling_for, socket_io_for, spin_depth_for, threads_for, InlineIo, PollMode,
        ServeArgs, SocketIo, SPIN_DEPTH,
    };

    /// `--socket-io`: `auto` and `uring` take io_uring where it can be
    /// used, and say why not where it cannot; `epoll` never asks.
    #[test]
    fn socket_io_choice() {
        let can = || None;
        let cannot = || Some("io_uring refused (Operation not permitted)".to_string());
        assert!(socket_io_for(SocketIo::Auto, can).0);
        assert_eq!(
            socket_io_for(SocketIo::Uring, can),
            (true, "--socket-io uring".into())
        );
        let (uring, why) = socket_io_for(SocketIo::Auto, cannot);
        assert!(!uring && why.contains("Operation not permitted") && why.ends_with(": epoll"));
        assert!(!socket_io_for(SocketIo::Uring, cannot).0);
        let asked = || -> Option<String> { panic!("--socket-io epoll must not probe io_uring") };
        assert_eq!(
            socket_io_for(SocketIo::Epoll, asked),
            (false, "--socket-io epoll".into())
        );
    }

    /// `--spin-depth`: a thread awaiting a lone reply sleeps where no core
    /// is spare; it polls where one is, or where pollers busy-poll; a
    /// flag given wins.
    #[test]
    fn spin_depth_choice() {
        for cores in [1, 2] {
            let (n, why) = spin_depth_for(None, PollMode::Adaptive, cores);
            assert_eq!(n, SPIN_DEPTH);
            assert!(why.starts_with(&format!("{cores} cores")), "{why}");
        }
        assert_eq!(spin_depth_for(None, PollMode::Adaptive, 3).0, 0);
        assert_eq!(spin_depth_for(None, PollMode::Busy, 2).0, 0);
        let given = spin_depth_for(Some(9), PollMode::Busy, 2);
        assert_eq!(given, (9, "--spin-depth as given".into()));
    }

    /// `--inline-io auto`: pollers inside the connection threads below 4
    /// cores, for every engine, unless they busy-poll (each then keeps a
    /// thread of its own on its core) or do not pair with the threads.
    #[test]
    fn inline_io_choice() {
        let auto =
            |poll, cores, pollers, conns| inline_for(InlineIo::Auto, poll, cores, pollers, conns);
        let (on, why) = auto(PollMode::Adaptive, 2, 1, 1);
        assert!(on && why.starts_with("2 cores"), "{why}");
        assert!(auto(PollMode::Adaptive, 2, 2, 2).0);
        let (on, why) = auto(PollMode::Busy, 2, 1, 1);
        assert!(!on && why.starts_with("busy polling"), "{why}");
        assert!(!auto(PollMode::Adaptive, 4, 2, 2).0);
        assert!(!auto(PollMode::Adaptive, 2, 1, 2).0);
        assert!(inline_for(InlineIo::On, PollMode::Busy, 2, 1, 1).0);
        assert!(!inline_for(InlineIo::Off, PollMode::Adaptive, 2, 1, 1).0);
    }

    /// `serve` with these threads and `--poller-cores`.
    fn args(pollers: usize, conns: usize, poller_cores: &[usize]) -> ServeArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut a = Cli::parse_from(["serve"]).serve;
        a.io_threads = Some(pollers);
        a.tcp_threads = Some(conns);
        a.poller_cores = poller_cores.to_vec();
        a
    }

    /// The poll mode and pinning `serve` chooses for the spdk engine on
    /// `cores` (the affinity mask).
    fn choice(cores: &[usize], a: &ServeArgs) -> (PollMode, bool, String) {
        let (pollers, _) = a.placement(cores);
        polling_for(true, cores, &pollers, a.poller_threads(), a.conn_threads())
    }

    #[test]
    fn spdk_busy_polls_only_with_a_core_for_every_spinning_thread_and_one_more() {
        // The development machine: 2 cores, 1 poller, 1 connection thread.
        let (poll, pin, why) = choice(&[0, 1], &args(1, 1, &[]));
        assert_eq!((poll, pin), (PollMode::Adaptive, false));
        assert!(why.contains("too few") && why.contains("adaptive"), "{why}");
        assert_eq!(choice(&[0, 1, 2], &args(1, 1, &[])).0, PollMode::Busy);
        let many: Vec<usize> = (0..32).collect();
        assert_eq!(choice(&many, &args(4, 4, &[])).0, PollMode::Busy);
        assert_eq!(choice(&many[..8], &args(4, 4, &[])).0, PollMode::Adaptive);
        assert_eq!(
            polling_for(false, &many, &[31], 1, 1),
            (PollMode::Adaptive, false, "files and block devices".into())
        );
    }

    #[test]
    fn the_affinity_mask_counts_not_the_machine() {
        // Allowed CPUs 4-7 of a larger machine: pollers go on the last of
        // them, connection threads on the others, by CPU number.
        let a = args(2, 1, &[]);
        assert_eq!(a.placement(&[4, 5, 6, 7]), (vec![7, 6], vec![4]));
        assert_eq!(choice(&[4, 5, 6, 7], &a).0, PollMode::Busy);
        // Two allowed CPUs on a 64-core machine are two cores.
        assert_eq!(choice(&[10, 11], &args(1, 1, &[])).0, PollMode::Adaptive);
        assert_eq!(choice(&[10, 11, 12], &args(1, 1, &[])).0, PollMode::Busy);
    }

    /// (connection threads, pollers) chosen on `cores` cores for a store
    /// of `shards` shards.
    fn counts(cores: usize, shards: usize) -> (usize, usize) {
        let t = threads_for(cores, Some(shards), None, None, false);
        (t.conns, t.pollers)
    }

    #[test]
    fn thread_counts_follow_the_cores() {
        // Measured best on the 2-core development machine: a connection
        // thread per core, each with its poller (one for the spdk engine,
        // whose NVMe-oF target's reactor wants a core too).
        assert_eq!(counts(1, 8), (1, 1));
        assert_eq!(counts(2, 8), (2, 2));
        assert_eq!(counts(2, 1), (2, 1));
        let t = threads_for(2, Some(8), None, None, true);
        assert_eq!((t.conns, t.pollers), (1, 1));
        assert!(t.why.contains("the spdk engine"), "{}", t.why);
        let why = threads_for(2, Some(8), None, None, false).why;
        assert!(why.starts_with("2 cores this process may use"), "{why}");
        // From 3 cores one stays spare, the rest go half to pollers
        // (rounded down), half to connection threads.
        assert_eq!(counts(3, 8), (1, 1));
        assert_eq!(counts(4, 8), (2, 1));
        assert_eq!(counts(5, 8), (2, 2));
        assert_eq!(counts(8, 8), (4, 3));
        assert_eq!(counts(32, 64), (16, 15));
        for n in 3..=256 {
            let (c, p) = counts(n, 1024);
            assert_eq!(c + p, n - 1, "{n} cores");
            assert!(p >= 1 && (c == p || c == p + 1), "{n} cores: {c} + {p}");
        }
        // 32 and 64 cores: more pollers by the rule than the store's 8
        // shards; the cores they leave go to connection threads.
        assert_eq!(counts(32, 8), (23, 8));
        assert_eq!(counts(64, 64), (32, 31));
        assert_eq!(counts(64, 8), (55, 8));
        let why = threads_for(64, Some(8), None, None, false).why;
        assert!(why.contains("the store's 8 shards"), "{why}");
        // A store with fewer shards than the rule wants.
        assert_eq!(counts(8, 1), (6, 1));
        assert_eq!(counts(32, 2), (29, 2));
        // Before the store is open the shards are unknown: nothing capped.
        let t = threads_for(64, None, None, None, false);
        assert_eq!((t.conns, t.pollers), (32, 31));
    }

    #[test]
    fn the_affinity_mask_of_a_big_machine_sets_the_counts() {
        // Four CPUs allowed out of 64: four cores, whatever their numbers.
        let mut a = args(1, 1, &[]);
        (a.tcp_threads, a.io_threads) = (None, None);
        a.engine = Some(crate::io::EngineKind::Spdk);
        a.choose_threads(&[60, 61, 62, 63], Some(8));
        assert_eq!((a.conn_threads(), a.poller_threads()), (2, 1));
        // The poller on the last allowed CPU, the connection threads on
        // the others, one of them spare for the rest of the machine.
        assert_eq!(a.placement(&[60, 61, 62, 63]), (vec![63], vec![60, 61]));
        // With the spdk engine that leaves the busy poller its core.
        let (poll, pin, _) = choice(&[60, 61, 62, 63], &a);
        assert_eq!((poll, pin), (PollMode::Busy, true));
        // Two CPUs of a big machine are two cores.
        a.choose_threads(&[10, 11], Some(8));
        assert_eq!((a.conn_threads(), a.poller_threads()), (1, 1));
        assert_eq!(choice(&[10, 11], &a).0, PollMode::Adaptive);
    }

    #[test]
    fn chosen_counts_never_put_a_busy_poller_where_connection_threads_run() {
        // With the spdk engine, every core count from 3 up gets busy
        // pinned pollers on cores of their own; 1 and 2 get adaptive.
        for n in 1..=128 {
            let cores: Vec<usize> = (0..n).collect();
            let mut a = args(1, 1, &[]);
            (a.tcp_threads, a.io_threads) = (None, None);
            a.engine = Some(crate::io::EngineKind::Spdk);
            a.choose_threads(&cores, Some(8));
            let (pollers, conns) = a.placement(&cores);
            assert!(
                conns.iter().all(|c| !pollers.contains(c)) || n < 2,
                "{n} cores"
            );
            let want = if n >= 3 {
                PollMode::Busy
            } else {
                PollMode::Adaptive
            };
            assert_eq!(choice(&cores, &a).0, want, "{n} cores");
        }
    }

    #[test]
    fn flags_given_win() {
        let t = threads_for(32, Some(8), Some(1), Some(1), false);
        assert_eq!((t.conns, t.pollers), (1, 1));
        assert_eq!(t.why, "--tcp-threads and --io-threads as given");
        // Connection threads given: a poller for each, no more than the
        // rule would choose on these cores.
        let t = threads_for(1, Some(8), Some(2), None, false);
        assert_eq!((t.conns, t.pollers), (2, 1));
        assert!(t.why.starts_with("--tcp-threads as given"), "{}", t.why);
        assert_eq!(threads_for(32, Some(64), Some(12), None, false).pollers, 12);
        assert_eq!(threads_for(32, Some(64), Some(20), None, false).pollers, 15);
        assert_eq!(threads_for(32, Some(8), Some(12), None, false).pollers, 8);
        // Pollers given: connection threads take the cores left.
        let t = threads_for(8, Some(8), None, Some(4), false);
        assert_eq!((t.conns, t.pollers), (3, 4));
        assert!(t.why.starts_with("--io-threads as given"), "{}", t.why);
        assert_eq!(threads_for(2, Some(8), None, Some(2), false).conns, 1);
        assert_eq!(threads_for(4, Some(8), None, Some(8), false).conns, 1);
    }

    #[test]
    fn busy_pollers_never_share_a_core() {
        let cores: Vec<usize> = (0..8).collect();
        // Two pollers given one core between them.
        let (poll, _, why) = choice(&cores, &args(2, 1, &[3]));
        assert_eq!(poll, PollMode::Adaptive);
        assert!(why.contains("a core of its own"), "{why}");
        // Given cores that leave too few for the connection threads.
        let (poll, _, why) = choice(&[0, 1, 2, 3], &args(2, 2, &[0, 1]));
        assert_eq!(poll, PollMode::Adaptive, "{why}");
        // The same with one more core for everything else.
        let a = args(2, 2, &[0, 1]);
        assert_eq!(choice(&[0, 1, 2, 3, 4], &a).0, PollMode::Busy);
        // Connection threads go where no poller is.
        let (pollers, conns) = a.placement(&[0, 1, 2, 3, 4]);
        assert_eq!(pollers, [0, 1]);
        assert!(conns.iter().all(|c| !pollers.contains(c)), "{conns:?}");
        // More pollers than cores: the placement wraps, and the choice is
        // adaptive polling.
        let a = args(3, 1, &[]);
        assert_eq!(a.placement(&[0, 1]).0, [1, 0, 1]);
        assert_eq!(choice(&[0, 1], &a).0, PollMode::Adaptive);
    }
}
