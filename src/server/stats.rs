//! Counters the threads keep and INFO reports. Each thread writes its own
//! cache-padded counters with relaxed atomics; readers sum them.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::store::keyspace::Counters;

/// One poller's counters; those of its keyspace (the write path, expiry,
/// eviction, device operations) are in `store`.
#[derive(Debug, Default)]
pub struct PollerStats {
    pub loops: AtomicU64,
    /// Submissions that sent at least one operation.
    pub submits: AtomicU64,
    /// Operations sent by those submissions.
    pub submitted: AtomicU64,
    /// Largest batch since the last sample.
    pub max_batch: AtomicU64,
    pub in_flight: AtomicU64,
    pub reads: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub corrupt_records: AtomicU64,
    pub parks: AtomicU64,
    /// How long a parked poller took to run after its doorbell rang.
    pub wakeups: Wakeups,
    /// Writes refused because the store was full.
    pub writes_refused: AtomicU64,
    /// Writes that waited for compaction to free a segment.
    pub writes_deferred: AtomicU64,
    pub store: Arc<Counters>,
    /// The poller thread's CPU clock, for its busy time.
    pub cpu: ThreadClock,
}

/// Doorbell wake-ups of a parked poller, by the time from the ring (a
/// connection thread handing it requests) to the poller running again, in
/// [`LATENCY_BOUNDS_US`] buckets: what polling saves, and what sleeping
/// costs a request that finds its poller asleep.
#[derive(Debug, Default)]
pub struct Wakeups {
    pub buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
}

impl Wakeups {
    /// Records one wake-up of `us` microseconds.
    pub fn record(&self, us: u64) {
        let b = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[b].fetch_add(1, Relaxed);
    }

    /// The bucket counts.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }
}

/// The value under which a fraction `q` of the samples in `buckets`
/// ([`LATENCY_BOUNDS_US`] buckets, not cumulative) lie, as the upper bound
/// of its bucket (the last bucket reports its lower bound); 0 without
/// samples.
pub fn percentile(buckets: &[u64], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    let want = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            return LATENCY_BOUNDS_US
                .get(i)
                .copied()
                .unwrap_or(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1]);
        }
    }
    0
}

/// A thread's CPU clock (user and system time), which any thread may
/// read: a server thread records its own at start, and INFO and
/// `/metrics` read it when asked (a system call each, never on a hot path).
#[derive(Debug)]
pub struct ThreadClock(AtomicI32);

impl Default for ThreadClock {
    fn default() -> Self {
        ThreadClock(AtomicI32::new(Self::NONE))
    }
}

impl ThreadClock {
    /// No thread recorded yet.
    const NONE: i32 = i32::MIN;

    /// Records the calling thread's clock.
    pub fn set_current(&self) {
        let mut id: libc::clockid_t = 0;
        // SAFETY: `pthread_self` is the calling thread, alive; the call
        // only writes `id`.
        if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) } == 0 {
            self.0.store(id, Relaxed);
        }
    }

    /// CPU time the thread has used, in microseconds (0 before it started
    /// or after it ended).
    pub fn micros(&self) -> u64 {
        let id = self.0.load(Relaxed);
        if id == Self::NONE {
            return 0;
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the call only writes `ts`; a clock whose thread ended
        // fails with EINVAL.
        if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
            return 0;
        }
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
    }
}

/// The process's CPU time from `getrusage`, in microseconds: user and
/// system, of the process itself (`RUSAGE_SELF`) or of its children that
/// ended and were waited for (`RUSAGE_CHILDREN`), as Redis's INFO shows.
pub fn rusage_micros(children: bool) -> (u64, u64) {
    let who = if children {
        libc::RUSAGE_CHILDREN
    } else {
        libc::RUSAGE_SELF
    };
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the call only writes `ru`.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// Upper bounds of the command latency buckets, in microseconds (a last
/// bucket takes everything slower).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000,
];

/// Calls and latency (from the parsed request to its reply, in order) of
/// each command and subcommand, kept by one connection thread; indexed
/// by statistics slot (`table::StatSlots`). And the error replies, by
/// error code, as Redis's INFO errorstats.
#[derive(Debug)]
pub struct CommandStats {
    pub calls: Vec<AtomicU64>,
    pub usec: Vec<AtomicU64>,
    /// Calls refused before they ran (wrong arity, NOAUTH, …).
    pub rejected: Vec<AtomicU64>,
    /// Calls that ran and answered an error.
    pub failed: Vec<AtomicU64>,
    /// Per command, `LATENCY_BOUNDS_US.len() + 1` buckets (not cumulative).
    pub buckets: Vec<[AtomicU64; LATENCY_BOUNDS_US.len() + 1]>,
    /// Error replies, of every kind.
    pub error_replies: AtomicU64,
    /// Error replies by code (`ERR`, `WRONGTYPE`, …): at most
    /// [`ERROR_CODES`] codes, as Redis, whose later new codes count only
    /// in `error_replies`.
    pub errors: Mutex<std::collections::HashMap<Box<[u8]>, u64>>,
}

/// Most distinct error codes kept (Redis's `ERROR_STATS_NUMBER`).
pub const ERROR_CODES: usize = 128;

impl CommandStats {
    /// Counters for `commands` commands.
    pub fn new(commands: usize) -> Self {
        CommandStats {
            calls: (0..commands).map(|_| AtomicU64::new(0)).collect(),
            usec: (0..commands).map(|_| AtomicU64::new(0)).collect(),
            rejected: (0..commands).map(|_| AtomicU64::new(0)).collect(),
            failed: (0..commands).map(|_| AtomicU64::new(0)).collect(),
            error_replies: AtomicU64::new(0),
            errors: Mutex::default(),
            buckets: (0..commands)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Counts a reply: its call, when it answers one (statistics slot,
    /// µs from parse to reply, refused before it ran), and its error
    /// code, when it is an error (a call that ran and answered one
    /// failed).
    pub fn count(&self, call: Option<(u16, u64, bool)>, error: Option<&[u8]>) {
        if let Some(code) = error {
            self.error_replies.fetch_add(1, Relaxed);
            if let Ok(mut errors) = self.errors.lock() {
                if let Some(n) = errors.get_mut(code) {
                    *n += 1;
                } else if errors.len() < ERROR_CODES {
                    errors.insert(code.into(), 1);
                }
            }
        }
        let Some((i, us, rejected)) = call else {
            return;
        };
        let i = i as usize;
        if i >= self.calls.len() {
            return;
        }
        if rejected {
            self.rejected[i].fetch_add(1, Relaxed);
            return;
        }
        if error.is_some() {
            self.failed[i].fetch_add(1, Relaxed);
        }
        self.calls[i].fetch_add(1, Relaxed);
        self.usec[i].fetch_add(us, Relaxed);
        let b = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[i][b].fetch_add(1, Relaxed);
    }
}

/// One connection thread's counters.
#[derive(Debug)]
pub struct ConnStats {
    pub connections: AtomicU64,
    pub accepted: AtomicU64,
    pub commands: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub net_in: AtomicU64,
    pub net_out: AtomicU64,
    /// Connections turned away by --max-clients.
    pub rejected: AtomicU64,
    /// Clients disconnected for a request over --max-query-buffer.
    pub query_limit_disconnects: AtomicU64,
    /// Clients disconnected for unread output over --max-output-buffer.
    pub output_limit_disconnects: AtomicU64,
    /// Clients disconnected after --timeout seconds idle.
    pub idle_disconnects: AtomicU64,
    /// Failed AUTH attempts.
    pub auth_failures: AtomicU64,
    /// Non-local clients turned away by protected mode.
    pub protected_mode_rejections: AtomicU64,
    /// Clients closed to keep client memory under --maxmemory-clients.
    pub evicted_clients: AtomicU64,
    /// Writes refused for a key or value over --max-key-size /
    /// --max-value-size.
    pub size_limit_rejections: AtomicU64,
    /// Requests that waited for room in a poller's full ring.
    pub ring_full_waits: AtomicU64,
    /// Calls and latency by command.
    pub cmds: std::sync::Arc<CommandStats>,
    /// The connection thread's CPU clock, for its busy time.
    pub cpu: ThreadClock,
}

impl ConnStats {
    /// Zeroed counters, with calls and latency for `commands` commands.
    pub fn new(commands: usize) -> Self {
        let zero = AtomicU64::new;
        ConnStats {
            connections: zero(0),
            accepted: zero(0),
            commands: zero(0),
            protocol_errors: zero(0),
            net_in: zero(0),
            net_out: zero(0),
            rejected: zero(0),
            query_limit_disconnects: zero(0),
            output_limit_disconnects: zero(0),
            idle_disconnects: zero(0),
            auth_failures: zero(0),
            protected_mode_rejections: zero(0),
            evicted_clients: zero(0),
            size_limit_rejections: zero(0),
            ring_full_waits: zero(0),
            cmds: std::sync::Arc::new(CommandStats::new(commands)),
            cpu: ThreadClock::default(),
        }
    }
}

/// A point-in-time copy of a poller's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollerSample {
    pub loops: u64,
    pub submits: u64,
    pub submitted: u64,
    pub reads: u64,
    pub max_batch: u64,
}

impl PollerStats {
    fn sample(&self) -> PollerSample {
        PollerSample {
            loops: self.loops.load(Relaxed),
            submits: self.submits.load(Relaxed),
            submitted: self.submitted.load(Relaxed),
            reads: self.reads.load(Relaxed),
            max_batch: self.max_batch.swap(0, Relaxed),
        }
    }
}

/// Per-second rates of one poller over the last sampling window.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollerRates {
    pub loops_per_sec: f64,
    pub submits_per_sec: f64,
    pub reads_per_sec: f64,
    pub mean_batch: f64,
    pub max_batch: u64,
}

/// Rates computed once a second by the accept thread.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Mutex<Option<(Instant, Vec<PollerSample>)>>,
    pub rates: Mutex<Vec<PollerRates>>,
}

impl Sampler {
    /// Takes a sample of every poller and updates the rates.
    pub fn tick(&self, pollers: &[CachePadded<PollerStats>]) {
        let now = Instant::now();
        let cur: Vec<PollerSample> = pollers.iter().map(|p| p.sample()).collect();
        let mut last = self.last.lock().expect("sampler lock");
        if let Some((t, prev)) = last.as_ref() {
            let dt = now.duration_since(*t).as_secs_f64().max(1e-3);
            let rates = cur
                .iter()
                .zip(prev)
                .map(|(c, p)| {
                    let submits = c.submits - p.submits;
                    PollerRates {
                        loops_per_sec: (c.loops - p.loops) as f64 / dt,
                        submits_per_sec: submits as f64 / dt,
                        reads_per_sec: (c.reads - p.reads) as f64 / dt,
                        mean_batch: if submits == 0 {
                            0.0
                        } else {
                            (c.submitted - p.submitted) as f64 / submits as f64
                        },
                        max_batch: c.max_batch,
                    }
                })
                .collect();
            *self.rates.lock().expect("rates lock") = rates;
        }
        *last = Some((now, cur));
    }
}
